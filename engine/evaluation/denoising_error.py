"""A denoiser's error at each noise level on held-out images, beside a diagonal Gaussian's.

For each σ: the mean squared error per pixel of D(x + σε; σ) against the clean x, over test images,
and of the exact denoiser of the diagonal Gaussian fitted to the training images (per-pixel mean μ
and variance v),

    D_G(x̃; σ) = μ + v/(v + σ²)·(x̃ − μ),    E‖D_G − x‖²/d = mean over pixels of vσ²/(v + σ²)

on data with those moments. Both see the same noise, so their ratio is precise. The posterior mean
E[x | x̃], the best denoiser, is at or below the Gaussian's at every σ (which is one estimator among
all); a ratio above 1 marks levels that training did not reach: at large σ, where a sampler's first
steps set an image's layout and colours, and so its class. (During training, DenoisingMethod.probe
logs the loss itself by band of σ, train against test; this puts any checkpoint beside a reference.)
"""
from __future__ import annotations

import math

import torch

from data import to_unit_range


def pixel_moments(train: torch.Tensor, chunk: int = 5_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean and variance of the training images (stored as the data set stores them) in
    [−1, 1], accumulated in float64 a chunk at a time."""
    total = total_sq = 0
    for i in range(0, len(train), chunk):
        x = to_unit_range(train[i:i + chunk]).double()
        total, total_sq = total + x.sum(0), total_sq + x.pow(2).sum(0)
    mean = total / len(train)
    return mean.float(), (total_sq / len(train) - mean.pow(2)).clamp_min(0).float()


def log_levels(sigma_min: float, sigma_max: float, k: int) -> list[float]:
    """k noise levels evenly spaced in log σ from sigma_min to sigma_max."""
    step = math.log(sigma_max / sigma_min) / (k - 1)
    return [sigma_min * math.exp(i * step) for i in range(k)]


@torch.no_grad()
def denoising_errors(denoise, images: torch.Tensor, sigmas, mean: torch.Tensor, var: torch.Tensor,
                     batch_size: int, generator: torch.Generator, device) -> list[dict]:
    """[{sigma, model, gaussian, ratio}] for `denoise`(x̃, σ) → D on `images` in [−1, 1] (CPU),
    the Gaussian's D_G from the training moments `mean`, `var`; one noise draw per image and level."""
    rows = []
    for sigma in sigmas:
        model = gaussian = 0.0
        shrink = var / (var + sigma ** 2)
        for x in images.split(batch_size):
            noisy = x + sigma * torch.randn(x.shape, generator=generator)
            d = denoise(noisy.to(device), torch.full((len(x),), sigma, device=device)).float().cpu()
            model += (d - x).pow(2).sum().item()
            gaussian += (mean + shrink * (noisy - mean) - x).pow(2).sum().item()
        rows.append({"sigma": sigma, "model": model / images.numel(), "gaussian": gaussian / images.numel(),
                     "ratio": model / gaussian})
    return rows
