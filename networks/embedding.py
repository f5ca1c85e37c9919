"""Noise-level conditioning: random Fourier features of log σ (Tancik et al. 2020; score_sde's
GaussianFourierProjection), then an MLP."""
import math

import torch
from torch import nn


class SigmaEmbedding(nn.Module):
    def __init__(self, dim: int, scale: float = 16.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(dim // 2) * scale, persistent=True)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        # c_noise = ln(σ)/4 as in EDM keeps the features' argument O(1) over σ ∈ [0.002, 80].
        angle = 2 * math.pi * (sigma.float().log() / 4)[:, None] * self.freqs[None]
        return self.mlp(torch.cat([angle.sin(), angle.cos()], 1))
