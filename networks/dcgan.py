"""DCGAN (Radford et al. 2016) for 28, 32 and 64 px: transposed-conv generator, strided-conv critic.
With num_classes > 0 both are class-conditional: conditional BatchNorm in the generator, a projection
head on the critic's last feature map (networks/conditioning.py)."""
from __future__ import annotations

import math

import torch
from torch import nn

from common.errors import ConfigError
from .conditioning import ClassInput, ConditionalBatchNorm2d, Projection, require_labels
from .layers import sn


def base_size(image_size: int) -> int:
    """DCGAN nets grow from a base×base map by stride-2 steps: 7 for 28 px, 4 for 32 and 64 px."""
    for base in (4, 7):
        size = base * 2  # at least one stride-2 step
        while size < image_size:
            size *= 2
        if size == image_size:
            return base
    raise ValueError(f"image size {image_size} is not 7·2^k or 4·2^k with k >= 1 (use 28, 32 or 64)")


def require_dcgan_size(size: int, what: str):
    """`size` px is one a DCGAN net grows to (base_size); else one line naming data.image_size."""
    try:
        base_size(size)
    except ValueError:
        raise ConfigError(f"data.image_size: DCGAN {what} take 7·2^k or 4·2^k px (28, 32, 64...), "
                          f"the data is {size} px; set data.image_size=32") from None


class DCGANGenerator(nn.Module):
    """z → base×base×(width·2^(n−1)) → n × [ConvT 4×4 stride 2, BN, ReLU] → tanh image; the BNs are
    conditional on the class with num_classes > 0, and with class_input z is read beside a class
    embedding (networks/conditioning.py ClassInput)."""

    def __init__(self, z_dim: int = 100, image_size: int = 64, channels: int = 3, width: int = 64,
                 batchnorm: bool = True, num_classes: int = 0, class_input: bool = False):
        super().__init__()
        base = base_size(image_size)
        n_up = int(math.log2(image_size // base))
        ch = width * 2 ** (n_up - 1)
        self.z_dim, self.num_classes = z_dim, num_classes
        self.class_input = ClassInput(num_classes, z_dim) if num_classes and class_input else None

        def norm(c):
            if not batchnorm:
                return nn.Identity()
            return ConditionalBatchNorm2d(c, num_classes) if num_classes else nn.BatchNorm2d(c)
        inputs = 2 * z_dim if self.class_input is not None else z_dim
        layers = [nn.ConvTranspose2d(inputs, ch, base, 1, 0, bias=not batchnorm), norm(ch), nn.ReLU(True)]
        for _ in range(n_up - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=not batchnorm), norm(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if not self.num_classes:
            return self.net(z.view(z.shape[0], -1, 1, 1))
        require_labels(labels, self.num_classes, "this generator")
        h = (self.class_input(z, labels) if self.class_input is not None else z).view(z.shape[0], -1, 1, 1)
        for layer in self.net:
            h = layer(h, labels) if isinstance(layer, ConditionalBatchNorm2d) else layer(h)
        return h


class DCGANDiscriminator(nn.Module):
    """image → n × [Conv 4×4 stride 2, (BN), LeakyReLU 0.2] → base×base conv → one logit per image;
    with num_classes > 0, plus the projection ⟨embed(y), φ(x)⟩ of the last feature map φ(x)."""

    def __init__(self, image_size: int = 64, channels: int = 3, width: int = 64, batchnorm: bool = True,
                 spectral_norm: bool = False, num_classes: int = 0):
        super().__init__()
        base = base_size(image_size)
        n_down = int(math.log2(image_size // base))
        ch = width
        layers = [sn(nn.Conv2d(channels, ch, 4, 2, 1), spectral_norm), nn.LeakyReLU(0.2, True)]
        for _ in range(n_down - 1):
            layers += [sn(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=not batchnorm), spectral_norm)]
            layers += [nn.BatchNorm2d(ch * 2)] if batchnorm else []
            layers += [nn.LeakyReLU(0.2, True)]
            ch *= 2
        layers += [sn(nn.Conv2d(ch, 1, base, 1, 0), spectral_norm)]
        self.net = nn.Sequential(*layers)  # the last layer is ψ, the features φ(x) the rest's output
        self.num_classes = num_classes
        self.projection = Projection(num_classes, ch * base * base, spectral_norm) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.projection is None:
            return self.net(x).flatten()
        require_labels(labels, self.num_classes, "this critic")
        h = self.net[:-1](x)
        return self.net[-1](h).flatten() + self.projection(h, labels)
