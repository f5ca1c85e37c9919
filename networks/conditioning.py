"""Class conditioning for the networks: conditional BatchNorm for generators, the projection head
for critics, and a label embedding with a reserved "null" class for denoisers.

Every network takes its labels as an optional last input (`net(x, labels)`); a network built
with num_classes = 0 is unconditional and ignores them.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import sn


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift are looked up per class (de Vries et al. 2017; Miyato &
    Koyama 2018): γ_y·BN(x) + β_y, with γ starting at 1 and β at 0 for every class, so that a new
    conditional generator computes what the unconditional one does."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain, self.bias = nn.Embedding(num_classes, channels), nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)
        return h * self.gain(labels)[:, :, None, None].to(h.dtype) + self.bias(labels)[:, :, None, None].to(h.dtype)


class ClassInput(nn.Module):
    """A generator's input z ⊕ embed(y): a learnt class vector of z's size beside z (Mirza & Osindero
    2014), so that the first layer lays the class out in space. The embedding starts at zero: a new
    generator computes what the unconditional one with the same other weights does."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, dim)
        nn.init.zeros_(self.embed.weight)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, self.embed(labels).to(z.dtype)], 1)


class Projection(nn.Module):
    """The projection discriminator's class term (Miyato & Koyama 2018, eq. 3): ⟨embed(y), φ(x)⟩ for
    the critic's features φ(x), added to its unconditional logit ψ(φ(x)). Spectrally normalised with
    the rest of the critic when it is."""

    def __init__(self, num_classes: int, features: int, spectral_norm: bool = False):
        super().__init__()
        embed = nn.Embedding(num_classes, features)
        nn.init.normal_(embed.weight, std=0.02)  # DCGAN's scale; spectral norm rescales it anyway
        self.embed = sn(embed, spectral_norm)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (self.embed(labels).to(features.dtype) * features.flatten(1)).sum(1)


class LabelEmbedding(nn.Module):
    """Class labels → vectors added to the σ embedding of a denoiser. Index num_classes is the null
    class ("no label"): training drops labels to it at random (classifier-free guidance, Ho &
    Salimans 2022), so one network is both conditional and unconditional; `labels=None` means null."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes + 1, dim)

    def forward(self, labels: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        if labels is None:
            labels = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        return self.embed(labels)


def require_labels(labels, num_classes: int, what: str):
    """A conditional network called without labels is a bug in the caller: say so plainly."""
    if num_classes and labels is None:
        raise ValueError(f"{what} is class-conditional ({num_classes} classes): pass the labels")
