"""Noise levels: NCSN's geometric ladder with NCSNv2's rules for choosing it, EDM's time steps, and
the distributions of training σ (`sigma_sampling`), registered by name.

NCSNv2 (Song & Ermon 2020) techniques, for data of dimension D:
 1. σ_max ≈ the largest Euclidean distance between two training examples.
 2. the ratio γ = σ_{i−1}/σ_i satisfies Φ(√(2D)(γ−1) + 3γ) − Φ(√(2D)(γ−1) − 3γ) ≈ 0.5.
 4. the Langevin step ε brings T steps at σ_L as close as possible to the right variance.
"""
from __future__ import annotations

import math

import torch

from common.registry import register


def geometric_sigmas(sigma_max: float, sigma_min: float, n: int) -> torch.Tensor:
    """σ_1 = σ_max > … > σ_n = σ_min, a constant ratio apart (float64)."""
    if n == 1:
        return torch.tensor([sigma_min], dtype=torch.float64)
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64))


def max_pairwise_distance(x: torch.Tensor, n: int = 5000, seed: int = 0) -> float:
    """Technique 1's σ_max: the largest distance between two of (up to n random) examples."""
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[0] > n:
        flat = flat[torch.randperm(flat.shape[0], generator=torch.Generator().manual_seed(seed))[:n]]
    flat = flat.double()
    return max(torch.cdist(chunk, flat).max().item() for chunk in flat.split(1024))


def _phi(t: float) -> float:
    return 0.5 * (1 + math.erf(t / math.sqrt(2)))


def _bisect(f, lo: float, hi: float, iters: int = 200) -> float:
    """Root of f between lo and hi, where f changes sign."""
    flo = f(lo)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if (f(mid) > 0) == (flo > 0):
            lo, flo = mid, f(mid)
        else:
            hi = mid
    return 0.5 * (lo + hi)


def ncsnv2_ratio(dim: int) -> float:
    """Technique 2's γ: consecutive noise levels overlap enough for Langevin to move between them."""
    root = math.sqrt(2 * dim)
    overlap = lambda g: _phi(root * (g - 1) + 3 * g) - _phi(root * (g - 1) - 3 * g) - 0.5
    return _bisect(overlap, 1.0 + 1e-9, 100.0)


def ncsnv2_num_scales(sigma_max: float, sigma_min: float, dim: int) -> int:
    return max(2, math.ceil(math.log(sigma_max / sigma_min) / math.log(ncsnv2_ratio(dim))) + 1)


def ncsnv2_step_size(sigma_min: float, gamma: float, steps: int) -> float:
    """Technique 4's ε for T = `steps` Langevin steps per level, for the step x ← x + α s + √(2α) z
    (denoising/samplers.py). Started from the previous level, N(0, γ²σ_L²) about a data point, with
    the score −x/σ_L² of N(0, σ_L²): each step maps the variance v to (1 − s)²v + 2sσ_L², s = ε/σ_L²,
    so after T steps v/σ_L² = (1 − s)^{2T} (γ² − 2/(2 − s)) + 2/(2 − s) ≥ 1; ε makes it closest to 1
    (a golden-section search over s ∈ (0, 1); the ratio is unimodal there)."""
    def ratio(s):
        b = 2 / (2 - s)
        return (1 - s) ** (2 * steps) * (gamma ** 2 - b) + b
    lo, hi = 1e-9, 1 - 1e-9
    golden = (math.sqrt(5) - 1) / 2
    for _ in range(200):
        a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
        if ratio(a) < ratio(b):
            hi = b
        else:
            lo = a
    return 0.5 * (lo + hi) * sigma_min ** 2


def langevin_step_size(sigmas: torch.Tensor, steps: int, dim: int) -> float:
    """Technique 4's ε for annealed Langevin with T = `steps` on the ladder `sigmas` (γ its ratio, or
    technique 2's for data of dimension `dim` when it has one level), to 4 significant digits."""
    gamma = float(sigmas[0] / sigmas[1]) if len(sigmas) > 1 else ncsnv2_ratio(dim)
    return float(f"{ncsnv2_step_size(float(sigmas[-1]), gamma, steps):.4g}")


def edm_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM's time steps (Karras et al. 2022, eq. 5): n levels from σ_max to σ_min spaced evenly in
    σ^{1/ρ}, then a final 0 (float64, n + 1 values)."""
    i = torch.arange(n, dtype=torch.float64)
    s = (sigma_max ** (1 / rho) + i / max(n - 1, 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


# ---------------------------------------------------------------------------------------------------
# Training σ: `sigma_sampling` names one of these, (n, ladder σ_1 > … > σ_L, the noise section,
# device) → n levels. `on_ladder`: the net sees the ladder's levels only (Heun then steps on them).

@register("sigma_sampling", "discrete", on_ladder=True)
def discrete(n: int, sigmas: torch.Tensor, noise, device) -> torch.Tensor:
    """The ladder's levels, uniformly (NCSN)."""
    return sigmas[torch.randint(len(sigmas), (n,), device=device)]


@register("sigma_sampling", "log_uniform")
def log_uniform(n: int, sigmas: torch.Tensor, noise, device) -> torch.Tensor:
    """Log-uniform over [σ_L, σ_1]: every σ of the ladder's range, so any schedule can sample it."""
    lo, hi = sigmas[-1].log(), sigmas[0].log()
    return (lo + (hi - lo) * torch.rand(n, device=device)).exp()


@register("sigma_sampling", "log_normal")
def log_normal(n: int, sigmas: torch.Tensor, noise, device) -> torch.Tensor:
    """EDM's ln σ ~ N(p_mean, p_std²), unclipped (Karras et al. 2022, table 1)."""
    return (noise.p_mean + noise.p_std * torch.randn(n, device=device)).exp()
