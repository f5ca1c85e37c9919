"""Bits per dimension of 8-bit images: dequantisation, the change of scale, the interval, and the
Gaussian baselines a model must beat.

An image k ∈ {0, …, 255}^d is dequantised with u ~ U[0, 1)^d onto the models' scale [−1, 1):

    x = 2(k + u)/256 − 1.

For any density p on R^d, P(k) = ∫_{[0,1)^d} p(2(k + u)/256 − 1)·(2/256)^d du is a probability mass
function on the 256^d images (the bins tile [−1, 1)^d; mass outside them is lost), and by Jensen
log P(k) ≥ E_u[log p(x)] + d·log(2/256) (Theis, van den Oord & Bethge 2016, §3.1; Ho et al. 2019,
§3.1, "uniform dequantization"). So the reported figure, an upper bound on −log₂ P(k)/d, is

    bpd = −log p(x)/(d ln 2) − log₂(2/256) = −log p(x)/(d ln 2) + 7,

averaged over the test images, each with its own u: the change-of-scale term of data in [0, 256)
mapped to [−1, 1) (Papamakarios et al. 2017, app. E.2; Song et al. 2021, whose code adds the same
offset 7). The uniform density 2^(−d) on [−1, 1)^d gives 1 + 7 = 8 bits/dim.

The models are trained on 2k/255 − 1 (data/base.py); each bin's centre differs from that point by at
most 1/256, a fraction of any σ_min used here (Song et al. 2021 evaluate the same way).

The 95% interval is over the n test images, mean ± 1.96·std/√n. Dequantisation noise and, with
Hutchinson's trace, the probe noise (probes drawn independently per image, fixed along its path)
are part of each image's value, so the per-image spread, and the interval, include them.
"""
from __future__ import annotations

import math
import time

import torch
from tqdm import tqdm

LOG2_SCALE = 7.0  # −log₂(2/256): [0, 256) onto [−1, 1)


def dequantize(images: torch.Tensor, generator=None) -> torch.Tensor:
    """uint8 images → x = 2(k + u)/256 − 1, u ~ U[0, 1) (float32, in [−1, 1))."""
    u = torch.rand(images.shape, generator=generator)
    return (images.cpu().float() + u) / 128 - 1


def bits_per_dim(log_p: torch.Tensor, dim: int) -> torch.Tensor:
    """Per image: −log p(x)/(d ln 2) + 7 for log p on the [−1, 1) scale (module docstring)."""
    return -log_p.double() / (dim * math.log(2)) + LOG2_SCALE


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width 1.96·std/√n of its 95% interval (nan for a single value)."""
    values = values.double()
    half = 1.96 * values.std().item() / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return values.mean().item(), half


def summary(bpd: torch.Tensor, seconds: float, **extra) -> dict:
    mean, half = mean_ci95(bpd)
    return {"bpd": mean, "ci95": half if math.isfinite(half) else None, "n": len(bpd), **extra,
            "seconds": round(seconds, 2)}


# -- the model ---------------------------------------------------------------------------------------
def heun_levels(method, steps: int | None = None) -> torch.Tensor:
    """Heun's increasing levels σ_min … σ_max: the configured sampler's own (its ladder for a net
    trained on discrete levels; 18 EDM levels for a sampler without levels), or `steps` EDM levels."""
    from denoising.schedule import edm_sigmas
    n, sampler = method.noise, method.noise.sampler
    if steps is None:
        levels = method.schedule().levels(getattr(sampler, "steps", 18), getattr(sampler, "rho", 7.0))
    else:
        levels = edm_sigmas(steps, n.sigma_min, n.sigma_max, getattr(sampler, "rho", 7.0))
    return levels[:-1].flip(0)  # drop the final 0; from σ_min up


def model_log_likelihood(method, x_all: torch.Tensor, *, solver: str = "rk45", steps: int | None = None,
                         rtol: float = 1e-5, atol: float = 1e-5, exact_trace: bool = False, probes: int = 1,
                         probe: str = "rademacher", batch_size: int = 100, ema: bool = True, generator=None,
                         progress: bool = False, unit=None) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """log p_σmin(x) in nats of points x_all (N, …) on the model's scale under a denoising method
    (dae, ncsn, ebm), by the probability-flow ODE (denoising/likelihood.py), batch by batch; the
    probes are drawn from `generator`. Returns (log_p, Hutchinson standard error, NFE per batch);
    `unit(log_p)` is what the progress bar shows (default: nats). An autoguided method's
    (<method>.autoguide) is the likelihood of its guided flow, the density its ODE samples have."""
    from denoising.likelihood import draw_probes, log_likelihood
    n = method.noise
    D = method.denoiser(ema)
    field = method.autoguided(D) if hasattr(method, "autoguided") else D  # any object with a denoiser
    levels = heun_levels(method, steps) if solver == "heun" else None
    unit = unit or (lambda log_p: log_p)
    was_training = D.net.training
    D.net.eval()
    log_p, se, nfe = [], [], []
    try:
        bar = tqdm(total=len(x_all), desc=f"log-likelihood ({solver})", unit="pt", disable=not progress)
        for x in x_all.split(batch_size):
            x = x.to(method.device)
            eps = None if exact_trace else draw_probes(x.shape, probes, probe, generator, x.device, x.dtype)
            ll = log_likelihood(field, x, n.sigma_min, n.sigma_max, solver, levels, eps, rtol, atol)
            log_p.append(ll.log_p.cpu())
            se.append(ll.stderr.cpu())
            nfe.append(ll.nfe)
            bar.update(len(x))
            bar.set_postfix(mean=f"{unit(torch.cat(log_p)).mean():.4f}", nfe=ll.nfe)
        bar.close()
    finally:
        D.net.train(was_training)
    return torch.cat(log_p), torch.cat(se), nfe


def model_bits_per_dim(method, images: torch.Tensor, *, solver: str = "rk45", steps: int | None = None,
                       rtol: float = 1e-5, atol: float = 1e-5, exact_trace: bool = False, probes: int = 1,
                       probe: str = "rademacher", batch_size: int = 100, ema: bool = True, generator=None,
                       progress: bool = False) -> dict:
    """Bits/dim of uint8 test images (N, C, H, W) under a denoising method (dae, ncsn, ebm), by the
    probability-flow ODE (denoising/likelihood.py). The dequantisation noise is drawn first from
    `generator` (so baselines given an equally seeded generator see the same points), then the
    probes. Returns bpd, ci95, n, nfe (mean per batch), hutchinson_se (the RMS per-image standard
    error of the trace estimate in bits/dim, with probes ≥ 2) and seconds."""
    start = time.monotonic()
    x_all, dim = dequantize(images, generator), images[0].numel()
    log_p, se, nfe = model_log_likelihood(
        method, x_all, solver=solver, steps=steps, rtol=rtol, atol=atol, exact_trace=exact_trace, probes=probes,
        probe=probe, batch_size=batch_size, ema=ema, generator=generator, progress=progress,
        unit=lambda lp: bits_per_dim(lp, dim))
    se = se / (dim * math.log(2))
    return summary(bits_per_dim(log_p, dim), time.monotonic() - start, nfe=sum(nfe) / len(nfe),
                   hutchinson_se=se.pow(2).mean().sqrt().item() if not exact_trace and probes > 1 else None,
                   solver=solver, trace="exact" if exact_trace else f"hutchinson ({probes} {probe})")


# -- the baselines -----------------------------------------------------------------------------------
class Gaussian:
    """The Gaussian of largest expected log-likelihood E_u Σᵢ log N(xᵢ) over the dequantised training
    set: per-pixel (diagonal) or with the full covariance (d × d). Its mean is that of the bin
    centres c = 2(k + ½)/256 − 1 and its covariance theirs plus the uniform noise's (1/128)²/12·I
    (u is independent of k), computed exactly in float64 and positive definite even when the
    training images are fewer than the pixels or a pixel never changes."""

    def __init__(self, train_images: torch.Tensor, full: bool, chunk: int = 4096):
        total, second, n = 0.0, 0.0, 0
        for part in train_images.split(chunk):
            c = (part.flatten(1).double() + 0.5) / 128 - 1
            total, n = total + c.sum(0), n + len(c)
            second = second + (c.T @ c if full else c.pow(2).sum(0))
        self.mean, self.full = total / n, full
        noise = (1 / 128) ** 2 / 12
        if full:
            cov = second / n - torch.outer(self.mean, self.mean) + noise * torch.eye(len(self.mean), dtype=torch.float64)
            self.scale = torch.linalg.cholesky(cov)  # L with LLᵀ = Σ
        else:
            self.scale = (second / n - self.mean.pow(2) + noise).sqrt()  # σ per pixel

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        r = x.flatten(1).double() - self.mean
        if self.full:
            z = torch.linalg.solve_triangular(self.scale, r.T, upper=False).T
            log_det = self.scale.diagonal().log().sum()
        else:
            z, log_det = r / self.scale, self.scale.log().sum()
        return -0.5 * z.pow(2).sum(1) - log_det - 0.5 * r.shape[1] * math.log(2 * math.pi)


def gaussian_bits_per_dim(train_images: torch.Tensor, test_images: torch.Tensor, full: bool,
                          generator=None) -> dict:
    """Bits/dim of uint8 test images under the Gaussian fitted to the training images; the test
    dequantisation is drawn first from `generator`, as in model_bits_per_dim."""
    start = time.monotonic()
    x = dequantize(test_images, generator)
    gaussian = Gaussian(train_images, full)
    return summary(bits_per_dim(gaussian.log_prob(x), test_images[0].numel()), time.monotonic() - start)
