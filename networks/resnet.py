"""SNGAN ResNets (Miyato et al. 2018, appendix B): 32 px (CIFAR-10) and 64 px variants.

Generator blocks: BN-ReLU-up-conv3-BN-ReLU-conv3 plus an up-conv1 shortcut.
Critic blocks: ReLU-conv3-ReLU-conv3-avgpool plus a conv1-avgpool shortcut; the first block skips
the leading ReLU ("optimized block"); global sum pooling; spectral norm on every layer.
With num_classes > 0: conditional BatchNorm in the generator's blocks and a projection head on the
critic's pooled features (Miyato & Koyama 2018; networks/conditioning.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conditioning import ClassInput, ConditionalBatchNorm2d, Projection, require_labels
from .layers import sn

# Per image size: generator channel multipliers from the 4×4 map up; critic multipliers per block,
# and which critic blocks halve the resolution.
LAYOUTS = {32: ((1, 1, 1, 1), (1, 1, 1, 1), (True, True, False, False)),
           64: ((16, 8, 4, 2, 1), (1, 2, 4, 8, 16), (True, True, True, True, False))}


class GBlock(nn.Module):
    def __init__(self, cin, cout, batchnorm=True, num_classes: int = 0):
        super().__init__()
        if not batchnorm:
            norm = lambda c: nn.Identity()  # noqa: E731
        elif num_classes:
            norm = lambda c: ConditionalBatchNorm2d(c, num_classes)  # noqa: E731
        else:
            norm = nn.BatchNorm2d
        self.bn1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.bn2, self.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def norm(self, bn, x, labels):
        return bn(x, labels) if isinstance(bn, ConditionalBatchNorm2d) else bn(x)

    def forward(self, x, labels=None):
        h = F.interpolate(F.relu(self.norm(self.bn1, x, labels)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.norm(self.bn2, self.conv1(h), labels)))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    def __init__(self, cin, cout, down=True, first=False, spectral_norm=True):
        super().__init__()
        self.conv1 = sn(nn.Conv2d(cin, cout, 3, 1, 1), spectral_norm)
        self.conv2 = sn(nn.Conv2d(cout, cout, 3, 1, 1), spectral_norm)
        self.skip = sn(nn.Conv2d(cin, cout, 1), spectral_norm) if (cin != cout or down) else None
        self.down, self.first = down, first

    def forward(self, x):
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.first:  # optimized block: pool, then project
            s = self.skip(F.avg_pool2d(s, 2))
        elif self.skip is not None:
            s = self.skip(s)
            if self.down:
                s = F.avg_pool2d(s, 2)
        return h + s


class ResNetGenerator(nn.Module):
    def __init__(self, z_dim: int = 128, image_size: int = 32, channels: int = 3, width: int = 256,
                 batchnorm: bool = True, num_classes: int = 0, class_input: bool = False):
        super().__init__()
        mult = LAYOUTS[image_size][0]
        self.z_dim, self.c0, self.num_classes = z_dim, width * mult[0], num_classes
        self.class_input = ClassInput(num_classes, z_dim) if num_classes and class_input else None
        self.fc = nn.Linear(2 * z_dim if self.class_input is not None else z_dim, 4 * 4 * self.c0)
        self.blocks = nn.Sequential(*[GBlock(width * a, width * b, batchnorm, num_classes)
                                      for a, b in zip(mult, mult[1:])])
        self.bn = nn.BatchNorm2d(width * mult[-1]) if batchnorm else nn.Identity()
        self.out = nn.Conv2d(width * mult[-1], channels, 3, 1, 1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        require_labels(labels, self.num_classes, "this generator")
        if self.class_input is not None:
            z = self.class_input(z, labels)
        h = self.fc(z).view(z.shape[0], self.c0, 4, 4)
        for block in self.blocks:
            h = block(h, labels)
        return torch.tanh(self.out(F.relu(self.bn(h))))


class ResNetDiscriminator(nn.Module):
    def __init__(self, image_size: int = 32, channels: int = 3, width: int = 128, spectral_norm: bool = True,
                 num_classes: int = 0):
        super().__init__()
        _, mult, downs = LAYOUTS[image_size]
        blocks = [DBlock(channels, width * mult[0], True, first=True, spectral_norm=spectral_norm)]
        blocks += [DBlock(width * a, width * b, d, spectral_norm=spectral_norm)
                   for a, b, d in zip(mult, mult[1:], downs[1:])]
        self.blocks = nn.Sequential(*blocks)
        self.fc = sn(nn.Linear(width * mult[-1], 1), spectral_norm)
        self.num_classes = num_classes
        self.projection = Projection(num_classes, width * mult[-1], spectral_norm) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        logit = self.fc(h).flatten()
        if self.projection is None:
            return logit
        require_labels(labels, self.num_classes, "this critic")
        return logit + self.projection(h, labels)
