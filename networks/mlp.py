"""MLPs for 2-D toy data: a GAN generator and critic, and a denoiser's raw network F(x, σ)."""
import torch
from torch import nn

from .embedding import SigmaEmbedding
from .layers import sn


class MLPGenerator(nn.Module):
    def __init__(self, z_dim: int = 16, out_dim: int = 2, width: int = 128, depth: int = 3):
        super().__init__()
        self.z_dim = z_dim
        layers, d = [], z_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU(True)]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(d, out_dim))

    def forward(self, z):
        return self.net(z)


class MLPDiscriminator(nn.Module):
    def __init__(self, in_dim: int = 2, width: int = 128, depth: int = 3, spectral_norm: bool = False):
        super().__init__()
        layers, d = [], in_dim
        for _ in range(depth):
            layers += [sn(nn.Linear(d, width), spectral_norm), nn.LeakyReLU(0.2, True)]
            d = width
        self.net = nn.Sequential(*layers, sn(nn.Linear(d, 1), spectral_norm))

    def forward(self, x):
        return self.net(x).flatten()


class MLP(nn.Module):
    """F(x, σ) → same shape as x; σ enters through a Fourier embedding when sigma_conditional."""

    def __init__(self, dim: int = 2, width: int = 128, depth: int = 3, sigma_conditional: bool = True):
        super().__init__()
        self.embed = SigmaEmbedding(width) if sigma_conditional else None
        layers, d = [], dim + (width if sigma_conditional else 0)
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.SiLU()]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(d, dim))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        h = x if self.embed is None else torch.cat([x, self.embed(sigma).to(x.dtype)], 1)
        return self.net(h)
