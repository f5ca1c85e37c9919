"""An MLP F(x, σ) for 2-D toy data."""
import torch
from torch import nn

from .embedding import SigmaEmbedding


class MLP(nn.Module):
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
