"""Samplers: pure functions of a score (or denoiser) function, an initial x and a noise schedule.

    score_fn(x, sigma) -> s(x; σ)          denoise_fn(x, sigma) -> D(x; σ)

The config's `sampler` names one of the registered samplers at the end of this file, which call them
with one signature: (denoiser, x, settings, generator, progress) -> x, where x starts at σ_1·z
and `settings` (SamplerSettings) carries the method's noise section and its σ ladder.

Langevin steps follow NCSNv2's convention (Song & Ermon 2020, and its code), x ← x + α s + √(2α) z,
the one its step-size rule (technique 4, denoising/schedule.py) is derived for. NCSN's paper writes
the same dynamics as x ← x + (α/2) s + √α z, i.e. with α twice as large: an ε taken from NCSN
(e.g. 2e-5 for CIFAR-10) is ε/2 here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from common.graphs import GraphedInPlace
from common.registry import lookup, register
from common.signals import stoppable
from .schedule import edm_sigmas


def _noise(x, generator):
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def langevin(score_fn, x, sigma: float, steps: int, step_size: float, generator=None):
    """Unadjusted Langevin dynamics at one noise level: x ← x + α s(x; σ) + √(2α) z."""
    for _ in range(steps):
        x = langevin_step(score_fn, x, sigma, step_size, generator)
    return x


def langevin_step(score_fn, x, sigma, step_size, generator=None):
    return x + step_size * score_fn(x, sigma) + (2 * step_size) ** 0.5 * _noise(x, generator)


def annealed_langevin(score_fn, x, sigmas, steps_per_level: int, step_lr: float, final_denoise: bool = True,
                      generator=None, cuda_graph: bool = False, progress: bool = False):
    """Annealed Langevin dynamics (Song & Ermon 2019, algorithm 1): T steps at each σ_i, from the
    largest to the smallest, with step α_i = ε·σ_i²/σ_L²; then, as NCSNv2 recommends, one
    denoising step x ← x + σ_L² s(x; σ_L) (= D(x; σ_L), Tweedie) to remove the last noise.
    With cuda_graph, the thousands of identical steps replay one captured step (σ and α as
    device scalars) instead of launching every kernel again. `progress` shows a bar over the levels."""
    sigmas = [float(s) for s in sigmas]
    levels = [(sigma, step_lr * (sigma / sigmas[-1]) ** 2) for sigma in sigmas]
    levels = stoppable(levels, "Langevin levels", progress)
    if cuda_graph:  # captured on CUDA; elsewhere the same parametrised step, run eagerly
        step = GraphedInPlace(lambda y, s, a: langevin_step(score_fn, y, s, a, generator),
                              x.clone(), x.new_tensor(sigmas[0]), x.new_tensor(step_lr), generator=generator)
        for sigma, alpha in levels:
            for _ in range(steps_per_level):
                x = step(sigma, alpha)
        x = x.clone()
    else:
        for sigma, alpha in levels:
            x = langevin(score_fn, x, sigma, steps_per_level, alpha, generator)
    if final_denoise:
        x = x + sigmas[-1] ** 2 * score_fn(x, sigmas[-1])
    return x


def heun(denoise_fn, x, sigmas, progress: bool = False):
    """Deterministic sampling of the probability-flow ODE dx/dσ = (x − D(x; σ))/σ with Heun's
    2nd-order method (Karras et al. 2022, algorithm 1). `sigmas` decreases to a final 0 and x
    starts at σ_0·N(0, I); n levels cost 2n − 1 network evaluations."""
    sigmas = [float(s) for s in sigmas]
    steps = stoppable(list(zip(sigmas[:-1], sigmas[1:])), "Heun steps", progress)
    for s_cur, s_next in steps:
        d = (x - denoise_fn(x, s_cur)) / s_cur
        x_next = x + (s_next - s_cur) * d
        if s_next > 0:  # second-order correction, skipped on the last step to σ = 0
            d_next = (x_next - denoise_fn(x_next, s_next)) / s_next
            x_next = x + (s_next - s_cur) * 0.5 * (d + d_next)
        x = x_next
    return x


# ---------------------------------------------------------------------------------------------------
# The samplers a config can name.

@dataclass(frozen=True)
class SamplerSettings:
    noise: Any                 # the method's section (dae:, ncsn:, ebm:): steps, ε, ρ, ...
    sigmas: torch.Tensor       # the trained ladder σ_1 > … > σ_L, on the device
    conditional: bool          # the network takes σ (model.sigma_conditional)
    cuda_graph: bool = False   # capture repeated steps as one CUDA graph (train.cuda_graph)


@register("sampler", "langevin")
def langevin_sampler(denoiser, x, settings: SamplerSettings, generator=None, progress: bool = False):
    """Annealed Langevin dynamics on the trained ladder, langevin_steps per level, ε = step_lr."""
    n = settings.noise
    return annealed_langevin(denoiser.score, x, settings.sigmas, n.langevin_steps, n.step_lr, n.final_denoise,
                             generator, settings.cuda_graph, progress)


def heun_sigmas(settings: SamplerSettings) -> torch.Tensor:
    """Heun's time steps, from σ_max down to a final 0. A σ-conditional network trained on the
    discrete ladder has seen those levels only, and between them its output is arbitrary (on the
    8-Gaussians toy: cosine 0.1 with the exact score at σ = 0.07, between levels 0.05 and 0.09),
    so it steps on its own ladder (2L − 1 evaluations). A network trained on continuous σ, or
    NCSNv2's unconditional one (s = F(x)/σ), takes EDM's `heun_steps` ρ-spaced levels."""
    n, sigmas = settings.noise, settings.sigmas
    if getattr(lookup("sigma_sampling", n.sigma_sampling), "on_ladder", False) and settings.conditional:
        return torch.cat([sigmas.cpu(), sigmas.new_zeros(1, device="cpu")])
    return edm_sigmas(n.heun_steps, n.sigma_min, n.sigma_max, n.rho)


@register("sampler", "heun", needs_range=True)
def heun_sampler(denoiser, x, settings: SamplerSettings, generator=None, progress: bool = False):
    """Heun's method on the probability-flow ODE, on heun_sigmas (deterministic: no generator)."""
    return heun(denoiser, x, heun_sigmas(settings), progress)
