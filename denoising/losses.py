"""Denoising score matching (Vincent 2011), the one loss of every denoising method here."""
from __future__ import annotations

import torch

from common.registry import lookup, register
from .denoiser import Denoiser, per_example


def dsm_loss(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor, weighting: str = "score",
             eps: torch.Tensor | None = None, create_graph: bool = True, labels=None) -> torch.Tensor:
    """Per-example loss for x̃ = x + σε, ε ~ N(0, I) (or the given `eps`: fixed noise for a probe),
    of the class-conditional denoiser at `labels` when given:

        score           ½‖σ s(x̃; σ) + ε‖²  = ½‖D(x̃; σ) − x‖²/σ²   NCSN's λ(σ) = σ² weighting
        reconstruction  ½‖D(x̃; σ) − x‖²                           a plain denoising autoencoder
        edm             ½‖D(x̃; σ) − x‖²·(σ² + σ_d²)/(σσ_d)²        EDM's λ(σ) (Karras et al. 2022,
                        eq. 8 and table 1): with the preconditioning, the network's target has unit
                        variance at every σ, so every level weighs the same

    Both have their minimum at the optimal denoiser D*(x̃) = E[x | x̃], whose residual is the score
    of the noised data. An energy model's score is −∇E, so its loss backpropagates twice.
    """
    s = per_example(sigma, x)
    eps = torch.randn_like(x) if eps is None else eps
    x_noisy = x + s * eps
    residual = s * denoiser.score(x_noisy, s, create_graph=create_graph, labels=labels) + eps  # = (D(x̃) − x)/σ
    dtype = torch.promote_types(residual.dtype, torch.float32)  # bf16 forward, fp32 (or fp64) loss
    per = 0.5 * residual.to(dtype).pow(2).flatten(1).sum(1)
    return lookup("dsm_weighting", weighting)(per, s.flatten().to(dtype), denoiser.sigma_data)


# The weightings, by the config's `weighting`: the score-weighted per-example loss ½‖D − x‖²/σ², σ per
# example and σ_d → the loss minimised (`@register("dsm_weighting", NAME)`).
@register("dsm_weighting", "score")
def score_weighting(per, sigma, sigma_data):
    return per


@register("dsm_weighting", "reconstruction")
def reconstruction_weighting(per, sigma, sigma_data):
    return per * sigma ** 2


@register("dsm_weighting", "edm")
def edm_weighting(per, sigma, sigma_data):
    return per * (1 + (sigma / sigma_data) ** 2)


def dsm_objective(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor, weighting: str = "score",
                  labels=None) -> torch.Tensor:
    """The batch mean of dsm_loss: a method's whole training objective (compiled whole with
    train.compile)."""
    return dsm_loss(denoiser, x, sigma, weighting, labels=labels).mean()
