"""A σ-conditional U-Net for 28–64 px images (DDPM-style residual blocks, GroupNorm, SiLU): the
light option beside NCSNv2 at CPU widths, DDPM's and EDM's CIFAR-10 net at GPU ones.

`attention` names the feature-map resolutions (pixels a side, after any patch folding) at which every
residual block is followed by multi-head self-attention over the positions, the middle's first
block too when the lowest resolution is named (DDPM and EDM attend at 16×16 on CIFAR-10). `dropout`
drops the features before each block's second convolution while training (DDPM 0.1, EDM 0.13 on
CIFAR-10). Neither adds to a net without them: its parameters and checkpoints are as before.

`patch` > 1 folds each patch×patch block of pixels into channels first (pixel unshuffle) and unfolds
the output at the end, so that every convolution runs at 1/patch of the resolution: about patch²
times less work at the same width, as in "simple diffusion" (Hoogeboom et al. 2023).

`num_classes` > 0 makes it class-conditional as EDM's and ADM's nets are: a class embedding (with a
"null" class for no label) added to the σ embedding that every block reads. The blocks read it as a
scale and shift of their normalised features (`adaptive_norm`, the default); `adaptive_norm=False` is
the form of checkpoints written before, which added it before a GroupNorm that erased it below 64
channels (ResBlock)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .conditioning import LabelEmbedding
from .embedding import SigmaEmbedding


def norm(c: int, group_channels: int = 1) -> nn.GroupNorm:
    """GroupNorm over c channels in the most groups (a power of two, up to 32) that divides c and holds
    at least `group_channels` channels each: EDM's rule at 4 (min_channels_per_group); at 1, gcd(32, c)
    groups, one channel each below 32 channels: an instance norm, which takes every channel's spatial
    mean (at large σ, the image's colour and layout) out of what the block computes from."""
    groups = math.gcd(32, c)
    while groups > 1 and c // groups < group_channels:
        groups //= 2
    return nn.GroupNorm(groups, c)


class SelfAttention(nn.Module):
    """x + proj(softmax(q·kᵀ/√d)·v) over the H·W positions, in heads of about 64 channels as EDM's
    (one below 128 channels); the projection starts at zero, so the block starts as the identity.
    `double_backward`: the product written out rather than torch's fused kernel, whose CUDA
    backward has no derivative of its own (a net trained through its input gradient, as the EBM is)."""

    double_backward = False

    def __init__(self, c: int, group_channels: int = 1):
        super().__init__()
        self.heads = max(h for h in range(1, max(1, c // 64) + 1) if c % h == 0)
        self.norm, self.qkv, self.proj = norm(c, group_channels), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        if self.double_backward:
            out = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, h·w, c/heads)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a skip; the embedding (σ, and the class) enters between the
    convolutions, either as a per-channel scale and shift of the normalised features (`adaptive`:
    ADM's and EDM's scale-shift norm) or added before the normalisation (DDPM's form). Added, it is
    erased wherever a group holds one channel (the group's mean is subtracted): with fewer than 64
    channels (32 groups) the net then ignores σ and the class entirely. `dropout` before the second
    convolution and self-attention after the block (`attention`), as DDPM's."""

    def __init__(self, cin: int, cout: int, emb_dim: int | None, adaptive: bool = True, attention: bool = False,
                 dropout: float = 0.0, group_channels: int = 1):
        super().__init__()
        self.dropout = dropout
        self.norm1, self.conv1 = norm(cin, group_channels), nn.Conv2d(cin, cout, 3, padding=1)
        self.adaptive = adaptive
        self.emb = nn.Linear(emb_dim, 2 * cout if adaptive else cout) if emb_dim else None
        self.norm2, self.conv2 = norm(cout, group_channels), nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (EDM, DDPM)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        # after the others, so that their keys are unchanged
        self.attn = SelfAttention(cout, group_channels) if attention else None

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb is None:
            h = self.norm2(h)
        elif self.adaptive:
            scale, shift = self.emb(emb).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
            h = torch.addcmul(shift, self.norm2(h), scale + 1)
        else:
            h = self.norm2(h + self.emb(emb).to(h.dtype)[:, :, None, None])
        h = self.skip(x) + self.conv2(F.dropout(F.silu(h), self.dropout, self.training))
        return h if self.attn is None else self.attn(h)


class UNet(nn.Module):
    def __init__(self, channels: int = 1, width: int = 64, mults=(1, 2, 2), blocks: int = 2,
                 sigma_conditional: bool = True, patch: int = 1, num_classes: int = 0, adaptive_norm: bool = True,
                 attention=(), dropout: float = 0.0, resolution: int | None = None, group_channels: int = 1):
        """`attention`: resolutions of the feature maps to attend at, which needs the input's
        `resolution` (pixels a side, before patch folding); `group_channels`: the fewest channels in a
        GroupNorm group (norm)."""
        super().__init__()
        if num_classes and not sigma_conditional:
            raise ValueError("a class-conditional U-Net adds its class embedding to the σ embedding: "
                             "it must be σ-conditional")
        emb = 4 * width if sigma_conditional else None
        self.embed = SigmaEmbedding(emb) if sigma_conditional else None
        self.num_classes = num_classes
        self.label_embed = LabelEmbedding(num_classes, emb) if num_classes else None
        self.patch = patch
        attend = set(attention)
        if attend and resolution is None:
            raise ValueError("attention at resolutions needs the input's resolution")
        sizes = [resolution // patch if resolution else 0]  # each level's side: stride 2 rounds up
        for _ in mults[1:]:
            sizes.append((sizes[-1] + 1) // 2)
        self.resolutions = tuple(sizes) if resolution else None  # the feature maps' sides, level by level

        def block(cin, cout, level):
            return ResBlock(cin, cout, emb, adaptive_norm, sizes[level] in attend, dropout, group_channels)

        self.conv_in = nn.Conv2d(channels * patch ** 2, width, 3, padding=1)
        self.down, skips, c = nn.ModuleList(), [width], width
        for level, m in enumerate(mults):
            for _ in range(blocks):
                self.down.append(block(c, width * m, level))
                c = width * m
                skips.append(c)
            if level < len(mults) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        bottom = len(mults) - 1  # the middle's first block attends there (DDPM's res-attention-res)
        self.mid = nn.ModuleList([block(c, c, bottom),
                                  ResBlock(c, c, emb, adaptive_norm, dropout=dropout, group_channels=group_channels)])
        self.up = nn.ModuleList()
        for level, m in reversed(list(enumerate(mults))):
            for _ in range(blocks + 1):
                self.up.append(block(c + skips.pop(), width * m, level))
                c = width * m
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.out = nn.Sequential(norm(c, group_channels), nn.SiLU(), nn.Conv2d(c, channels * patch ** 2, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """F(x, σ) of a batch, for classes `labels` (class-conditional net; None: the null class)."""
        emb = self.embed(sigma) if self.embed is not None else None
        if self.label_embed is not None:
            emb = emb + self.label_embed(labels, x.shape[0], x.device).to(emb.dtype)
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
