"""SNGAN ResNets (Miyato et al. 2018, appendix B): 32 px (CIFAR-10) and 64 px variants.

Generator blocks: BN-ReLU-up-conv3-BN-ReLU-conv3 plus an up-conv1 shortcut.
Critic blocks: ReLU-conv3-ReLU-conv3-avgpool plus a conv1-avgpool shortcut; the first block skips
the leading ReLU ("optimized block"); global sum pooling; spectral norm on every layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import sn

# Per image size: generator channel multipliers from the 4×4 map up; critic multipliers per block,
# and which critic blocks halve the resolution.
LAYOUTS = {32: ((1, 1, 1, 1), (1, 1, 1, 1), (True, True, False, False)),
           64: ((16, 8, 4, 2, 1), (1, 2, 4, 8, 16), (True, True, True, True, False))}


class GBlock(nn.Module):
    def __init__(self, cin, cout, batchnorm=True):
        super().__init__()
        norm = nn.BatchNorm2d if batchnorm else (lambda c: nn.Identity())
        self.bn1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.bn2, self.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
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
                 batchnorm: bool = True):
        super().__init__()
        mult = LAYOUTS[image_size][0]
        self.z_dim, self.c0 = z_dim, width * mult[0]
        self.fc = nn.Linear(z_dim, 4 * 4 * self.c0)
        self.blocks = nn.Sequential(*[GBlock(width * a, width * b, batchnorm) for a, b in zip(mult, mult[1:])])
        self.bn = nn.BatchNorm2d(width * mult[-1]) if batchnorm else nn.Identity()
        self.out = nn.Conv2d(width * mult[-1], channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], self.c0, 4, 4)
        return torch.tanh(self.out(F.relu(self.bn(self.blocks(h)))))


class ResNetDiscriminator(nn.Module):
    def __init__(self, image_size: int = 32, channels: int = 3, width: int = 128, spectral_norm: bool = True):
        super().__init__()
        _, mult, downs = LAYOUTS[image_size]
        blocks = [DBlock(channels, width * mult[0], True, first=True, spectral_norm=spectral_norm)]
        blocks += [DBlock(width * a, width * b, d, spectral_norm=spectral_norm)
                   for a, b, d in zip(mult, mult[1:], downs[1:])]
        self.blocks = nn.Sequential(*blocks)
        self.fc = sn(nn.Linear(width * mult[-1], 1), spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.fc(h).flatten()
