"""A small σ-conditional U-Net for 28–64 px images (DDPM-style residual blocks, GroupNorm, SiLU,
no attention): the light option beside NCSNv2.

`patch` > 1 folds each patch×patch block of pixels into channels first (pixel unshuffle) and unfolds
the output at the end, so that every convolution runs at 1/patch of the resolution: about patch²
times less work at the same width, as in "simple diffusion" (Hoogeboom et al. 2023)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .embedding import SigmaEmbedding


def norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, c), c)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int | None):
        super().__init__()
        self.norm1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout) if emb_dim else None
        self.norm2, self.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (EDM, DDPM)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb is not None:
            h = h + self.emb(emb).to(h.dtype)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class UNet(nn.Module):
    def __init__(self, channels: int = 1, width: int = 64, mults=(1, 2, 2), blocks: int = 2,
                 sigma_conditional: bool = True, patch: int = 1):
        super().__init__()
        emb = 4 * width if sigma_conditional else None
        self.embed = SigmaEmbedding(emb) if sigma_conditional else None
        self.patch = patch
        self.conv_in = nn.Conv2d(channels * patch ** 2, width, 3, padding=1)
        self.down, skips, c = nn.ModuleList(), [width], width
        for level, m in enumerate(mults):
            for _ in range(blocks):
                self.down.append(ResBlock(c, width * m, emb))
                c = width * m
                skips.append(c)
            if level < len(mults) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, emb), ResBlock(c, c, emb)])
        self.up = nn.ModuleList()
        for level, m in reversed(list(enumerate(mults))):
            for _ in range(blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), width * m, emb))
                c = width * m
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.out = nn.Sequential(norm(c), nn.SiLU(), nn.Conv2d(c, channels * patch ** 2, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        emb = self.embed(sigma) if self.embed is not None else None
        if self.patch > 1:
            x = F.pixel_unshuffle(x, self.patch)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                skip = hs.pop()
                if skip.shape[-2:] != h.shape[-2:]:  # odd sizes (7 → 14 → 28) round trip exactly
                    h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
                h = layer(torch.cat([h, skip], 1), emb)
            else:
                h = layer(h)
        h = self.out(h)
        return F.pixel_shuffle(h, self.patch) if self.patch > 1 else h
