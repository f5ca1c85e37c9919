"""The average log-likelihood of a denoising model on a 2-D toy mixture, against its true density.

A toy mixture (data/toy.py: 8gaussians) knows log p(x), so a model's log-likelihood can be checked
against the truth instead of a baseline: on n fresh points x ~ p (drawn with seed 10,000 + seed, never
the training set's), E[log p(x) − log q(x)] = KL(p ‖ q) ≥ 0 is the gap in nats. The model's log q is
log q_σmin by the probability-flow ODE (denoising/likelihood.py) with the exact trace (d = 2), so a
perfect denoiser still sits KL(p ‖ p ∗ N(0, σ_min² I)) below the truth: `true_density_at_sigma_min`
is that floor's density, for reference.
"""
from __future__ import annotations

import time

import torch

from common.errors import ConfigError
from data.toy import MIXTURES
from .bits_per_dim import mean_ci95, model_log_likelihood


def mixture_log_likelihood(method, n: int, seed: int = 0, **kwargs) -> dict:
    """{model, true_density, true_density_at_sigma_min, gap_nats} for a run on a toy mixture; kwargs
    go to model_log_likelihood (solver, steps, rtol, atol, batch_size, ema, progress)."""
    cfg = method.cfg
    if cfg.data.name != "toy" or cfg.data.toy not in MIXTURES:
        raise ConfigError(f"data {cfg.data.name}/{getattr(cfg.data, 'toy', '')} has no known density to score "
                          f"against; train on a toy mixture: {', '.join(MIXTURES)}")
    mixture = MIXTURES[cfg.data.toy]()
    x, _ = mixture.sample(n, torch.Generator().manual_seed(10_000 + seed))
    start = time.monotonic()
    log_q, _, nfe = model_log_likelihood(method, x.float(), exact_trace=True, **kwargs)
    seconds = time.monotonic() - start
    log_p = mixture.log_prob(x)
    (model, ci), (gap, gap_ci) = mean_ci95(log_q), mean_ci95(log_p - log_q)
    return {"model": {"nats": model, "ci95": ci, "n": n, "nfe": sum(nfe) / len(nfe), "trace": "exact",
                      "solver": kwargs.get("solver", "rk45"), "seconds": round(seconds, 2)},
            "true_density": {"nats": log_p.mean().item()},
            "true_density_at_sigma_min": {"nats": mixture.log_prob(x, method.noise.sigma_min).mean().item(),
                                          "sigma_min": method.noise.sigma_min},
            "gap_nats": {"mean": gap, "ci95": gap_ci}}
