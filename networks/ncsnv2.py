"""The NCSNv2 score network (Song & Ermon 2020): a RefineNet with InstanceNorm++, ELU and dilated
residual stages, unconditional on σ (the Denoiser scales its output by 1/σ, NCSNv2's technique 3).

28/32 px: stages ngf, 2ngf↓, 2ngf (dilation 2), 2ngf (dilation 4); ngf = 128 for CIFAR-10.
64 px ("NCSNv2Deeper", CelebA): ngf, 2ngf↓, 2ngf↓, 4ngf (dilation 2), 4ngf (dilation 4).
A stage that is asked to downsample with dilation > 1 keeps its resolution and widens its receptive
field instead, as in the paper's code. Four (five) RefineBlocks fuse the stages from coarse to fine.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (channel multiplier, downsample, dilation) per stage.
STAGES = {"small": ((1, False, 1), (2, True, 1), (2, True, 2), (2, True, 4)),
          "deep": ((1, False, 1), (2, True, 1), (2, True, 1), (4, True, 2), (4, True, 4))}


class InstanceNormPlus(nn.Module):
    """InstanceNorm++ (Song & Ermon 2019): instance norm, plus the per-channel means it removes,
    re-normalised across channels and added back with a learned scale α (so colour shifts survive)."""

    def __init__(self, c: int):
        super().__init__()
        self.alpha = nn.Parameter(1 + 0.02 * torch.randn(c))
        self.gamma = nn.Parameter(1 + 0.02 * torch.randn(c))
        self.beta = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        means = x.mean(dim=(2, 3))
        m, v = means.mean(-1, keepdim=True), means.var(-1, keepdim=True)
        h = F.instance_norm(x) + ((means - m) / (v + 1e-5).sqrt() * self.alpha)[..., None, None]
        return self.gamma[:, None, None] * h + self.beta[:, None, None]


def conv3(cin, cout, dilation=1, bias=True):
    return nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=bias)


class ConvMeanPool(nn.Module):
    def __init__(self, cin, cout, k):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2)

    def forward(self, x):
        return F.avg_pool2d(self.conv(x), 2)


class ResidualBlock(nn.Module):
    """norm-ELU-conv-norm-ELU-conv with a shortcut; downsampling (mean pool) only without dilation."""

    def __init__(self, cin, cout, down=False, dilation=1):
        super().__init__()
        pool = down and dilation == 1
        mid = cin if down else cout
        self.norm1, self.conv1 = InstanceNormPlus(cin), conv3(cin, mid, dilation)
        self.norm2 = InstanceNormPlus(mid)
        self.conv2 = ConvMeanPool(mid, cout, 3) if pool else conv3(mid, cout, dilation)
        if cin != cout or down:
            self.shortcut = ConvMeanPool(cin, cout, 1) if pool else conv3(cin, cout, dilation)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        h = self.conv1(F.elu(self.norm1(x)))
        return self.shortcut(x) + self.conv2(F.elu(self.norm2(h)))


class RCU(nn.Module):
    """Residual conv units: `blocks` × (ELU-conv ×2 + skip)."""

    def __init__(self, c, blocks):
        super().__init__()
        self.convs = nn.ModuleList(nn.ModuleList([conv3(c, c, bias=False), conv3(c, c, bias=False)])
                                   for _ in range(blocks))

    def forward(self, x):
        for pair in self.convs:
            h = x
            for conv in pair:
                h = conv(F.elu(h))
            x = x + h
        return x


class CRP(nn.Module):
    """Chained residual pooling: repeated 5×5 max-pool + conv, each result added to the output."""

    def __init__(self, c, stages=2):
        super().__init__()
        self.convs = nn.ModuleList(conv3(c, c, bias=False) for _ in range(stages))

    def forward(self, x):
        x = F.elu(x)
        path = x
        for conv in self.convs:
            path = conv(F.max_pool2d(path, 5, stride=1, padding=2))
            x = x + path
        return x


class RefineBlock(nn.Module):
    """Adapt each input with RCUs, fuse them at the finest size (multi-resolution fusion), then
    chained residual pooling and an output RCU (3 units in the last block)."""

    def __init__(self, cins, cout, end=False):
        super().__init__()
        self.adapt = nn.ModuleList(RCU(c, 2) for c in cins)
        self.fuse = nn.ModuleList(conv3(c, cout) for c in cins) if len(cins) > 1 else None
        self.crp = CRP(cout)
        self.out = RCU(cout, 3 if end else 1)

    def forward(self, xs, size):
        hs = [a(x) for a, x in zip(self.adapt, xs)]
        if self.fuse is None:
            h = hs[0]
        else:
            h = sum(F.interpolate(f(x), size=size, mode="bilinear", align_corners=True)
                    for f, x in zip(self.fuse, hs))
        return self.out(self.crp(h))


class NCSNv2(nn.Module):
    def __init__(self, channels: int = 3, ngf: int = 128, image_size: int = 32):
        super().__init__()
        layout = STAGES["deep" if image_size >= 64 else "small"]
        self.begin = conv3(channels, ngf)
        self.stages, c = nn.ModuleList(), ngf
        for mult, down, dilation in layout:
            cout = ngf * mult
            self.stages.append(nn.Sequential(ResidualBlock(c, cout, down, dilation),
                                             ResidualBlock(cout, cout, False, dilation)))
            c = cout
        widths = [ngf * m for m, _, _ in layout]
        # Coarse to fine: each RefineBlock fuses a stage with the refinement below it and outputs
        # the width of the next finer stage (ngf for the last).
        self.refine = nn.ModuleList([RefineBlock([widths[-1]], widths[-1])])
        prev, finer = widths[-1], widths[-3::-1] + [ngf]
        for i, (w, out) in enumerate(zip(reversed(widths[:-1]), finer)):
            self.refine.append(RefineBlock([w, prev], out, end=(i == len(widths) - 2)))
            prev = out
        self.norm, self.end = InstanceNormPlus(prev), conv3(prev, channels)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor = None) -> torch.Tensor:
        feats, h = [], self.begin(x)
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        h = self.refine[0]([feats[-1]], feats[-1].shape[-2:])
        for block, skip in zip(self.refine[1:], reversed(feats[:-1])):
            h = block([skip, h], skip.shape[-2:])
        return self.end(F.elu(self.norm(h)))
