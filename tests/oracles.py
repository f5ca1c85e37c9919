"""Analytic facts the tests hold the code to: the toy mixtures' densities and the exact scores of
their noised versions, ∇ log (p * N(0, σ²I)), and the toy Gaussian's moments."""
from __future__ import annotations

import math

import torch

from data import toy
from data.toy import GAUSSIAN_COV, GAUSSIAN_MEAN  # noqa: F401  (the toy Gaussian's moments)


class GaussianMixture(toy.GaussianMixture):
    """p(x) = Σ_k w_k N(x; μ_k, s² I). Convolved with N(0, σ² I) it stays a mixture with variance
    s² + σ², so the noised density and its score are exact."""

    def _log_terms(self, x, sigma):
        x = x.to(torch.float64)
        var = self.std ** 2 + float(sigma) ** 2
        d2 = (x[:, None, :] - self.means[None]).pow(2).sum(-1)
        return self.weights.log()[None] - 0.5 * d2 / var - 0.5 * self.dim * math.log(2 * math.pi * var), var

    def log_prob(self, x, sigma: float = 0.0):
        terms, _ = self._log_terms(x, sigma)
        return terms.logsumexp(-1)

    def score(self, x, sigma: float = 0.0):
        """∇ₓ log p_σ(x) = Σ_k r_k(x) (μ_k − x)/(s² + σ²), r the posterior over components."""
        terms, var = self._log_terms(x, sigma)
        r = terms.softmax(-1)
        return (r[..., None] * (self.means[None] - x.to(torch.float64)[:, None, :])).sum(1) / var


def eight_gaussians(**kwargs) -> GaussianMixture:
    """The `8gaussians` toy data set's mixture, with its oracles."""
    mix = toy.eight_gaussians(**kwargs)
    return GaussianMixture(mix.means, mix.std, mix.weights)
