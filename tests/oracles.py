"""Analytic facts the tests hold the code to: the exact scores of the toy mixtures' noised versions,
∇ log (p * N(0, σ²I)) (their densities are data/toy.py's), and the toy Gaussian's moments."""
from __future__ import annotations

import torch

from data import toy
from data.toy import GAUSSIAN_COV, GAUSSIAN_MEAN  # noqa: F401  (the toy Gaussian's moments)


class GaussianMixture(toy.GaussianMixture):
    """p(x) = Σ_k w_k N(x; μ_k, s² I). Convolved with N(0, σ² I) it stays a mixture with variance
    s² + σ², so the noised density (data/toy.py) and its score are exact."""

    def score(self, x, sigma: float = 0.0):
        """∇ₓ log p_σ(x) = Σ_k r_k(x) (μ_k − x)/(s² + σ²), r the posterior over components."""
        terms, var = self._log_terms(x, sigma)
        r = terms.softmax(-1)
        return (r[..., None] * (self.means[None] - x.to(torch.float64)[:, None, :])).sum(1) / var


def eight_gaussians(**kwargs) -> GaussianMixture:
    """The `8gaussians` toy data set's mixture, with its oracles."""
    mix = toy.eight_gaussians(**kwargs)
    return GaussianMixture(mix.means, mix.std, mix.weights)
