"""Toy 2-D distributions for tests and demos: a mixture of eight Gaussians on a circle, rings, a
checkerboard, two spirals and a correlated Gaussian. The mixtures know their density (and
scripts/likelihood.py scores a model against it); their exact noised scores live beside the tests
(tests/oracles.py)."""
from __future__ import annotations

import math

import torch

from common.errors import DataError
from common.registry import register
from .base import DataInfo, TensorData


class GaussianMixture:
    """p(x) = Σ_k w_k N(x; μ_k, s² I)."""

    def __init__(self, means, std: float, weights=None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        k = self.means.shape[0]
        w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.weights = w / w.sum()
        self.std = float(std)

    @property
    def dim(self):
        return self.means.shape[1]

    def _log_terms(self, x, sigma):
        x = x.to(torch.float64)
        var = self.std ** 2 + float(sigma) ** 2
        d2 = (x[:, None, :] - self.means[None]).pow(2).sum(-1)
        return self.weights.log()[None] - 0.5 * d2 / var - 0.5 * self.dim * math.log(2 * math.pi * var), var

    def log_prob(self, x, sigma: float = 0.0):
        """log p_σ(x), p_σ = p ∗ N(0, σ² I): the mixture with variance s² + σ² (float64)."""
        terms, _ = self._log_terms(x, sigma)
        return terms.logsumexp(-1)

    def sample(self, n: int, generator=None):
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        x = self.means[comp] + self.std * torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return x, comp


def eight_gaussians(radius: float = 2.0, std: float = 0.1) -> GaussianMixture:
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return GaussianMixture(torch.stack([radius * angles.cos(), radius * angles.sin()], 1), std)


def rings(n, g):
    radius = (torch.randint(1, 5, (n,), generator=g) * 0.5).double()
    theta = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    x = torch.stack([radius * theta.cos(), radius * theta.sin()], 1)
    return x + 0.04 * torch.randn(n, 2, generator=g, dtype=torch.float64)


def checkerboard(n, g):
    x1 = torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2
    x2 = torch.rand(n, generator=g, dtype=torch.float64) - torch.randint(0, 2, (n,), generator=g) * 2
    x2 = x2 + (torch.floor(x1) % 2)
    return torch.stack([x1, x2], 1)


def spirals(n, g):
    t = torch.sqrt(torch.rand(n, generator=g, dtype=torch.float64)) * 3 * math.pi
    sign = torch.randint(0, 2, (n,), generator=g).double() * 2 - 1
    x = sign[:, None] * torch.stack([t * t.cos(), t * t.sin()], 1) / (1.5 * math.pi)
    return x + 0.05 * torch.randn(n, 2, generator=g, dtype=torch.float64)


GAUSSIAN_MEAN = (0.5, -0.5)
GAUSSIAN_COV = ((0.5, 0.3), (0.3, 0.4))


def gaussian(n, g):
    """A correlated 2-D Gaussian N(μ, Σ) with the constants above (a target with known moments)."""
    chol = torch.linalg.cholesky(torch.tensor(GAUSSIAN_COV, dtype=torch.float64))
    return torch.tensor(GAUSSIAN_MEAN, dtype=torch.float64) + torch.randn(n, 2, generator=g, dtype=torch.float64) @ chol.T


SAMPLERS = {"rings": rings, "checkerboard": checkerboard, "spirals": spirals, "gaussian": gaussian}
MIXTURES = {"8gaussians": eight_gaussians}


@register("dataset", "toy", points=True)
def load(cfg, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    if cfg.toy in MIXTURES:
        x, labels = MIXTURES[cfg.toy]().sample(cfg.toy_size, g)
        k = 8
    elif cfg.toy in SAMPLERS:
        x, labels, k = SAMPLERS[cfg.toy](cfg.toy_size, g), torch.zeros(cfg.toy_size, dtype=torch.int64), 1
    else:
        raise DataError(f"data.toy: unknown toy distribution {cfg.toy!r} "
                        f"(choose from {', '.join([*MIXTURES, *SAMPLERS])})")
    return TensorData(x.float(), labels, DataInfo(f"toy_{cfg.toy}", (2,), k, kind="points"))
