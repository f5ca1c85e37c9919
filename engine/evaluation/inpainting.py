"""Inpainting scored: the PSNR of the filled pixels against the truth, beside two baselines, and how
often the evaluation classifier gives the completed image the original's class.

    mean fill  the training images' per-pixel mean in the missing pixels
    nearest    the training image closest to the test image on its visible pixels (L2), its
               missing pixels pasted in: what memorising the training set would give

A completion is one draw from the model's conditional distribution of the missing pixels, and its
expected squared error is twice that distribution's variance (plus the model's bias). PSNR, a
distortion, is best served by that distribution's mean (Blau & Michaeli 2018: the perception-distortion
trade-off), estimated by averaging k draws: its expected squared error is (1 + 1/k) times the variance.
With k > 1 draws, the scores give both: the single draw's (averaged over the k) and the k-draw mean's.
"""
from __future__ import annotations

import math

import torch
from tqdm import tqdm

from common.errors import ConfigError
from data import to_unit_range


def require_denoiser(method, what: str = "--inpaint"):
    """`what` (--inpaint, --denoising-error) needs a denoiser (a dae, ncsn or ebm model): one line otherwise."""
    if not hasattr(method, "noise"):
        raise ConfigError(f"{what}: {method.name} has no denoiser; use a dae, ncsn or ebm checkpoint")


def complete(method, images: torch.Tensor, known: torch.Tensor, batch_size: int, generator, ema: bool = True,
             labels: torch.Tensor | None = None, bar: bool = False, draws: int | None = None) -> torch.Tensor:
    """`method`'s completions (on the CPU) of `images` in [−1, 1] whose `known` pixels are given,
    drawn batch_size at a time with `generator`; `labels`: a class-conditional model's classes.
    With `draws` = k, k independent completions of every image, stacked (k, N, ...) as
    inpainting_scores takes them (the generator runs on from one draw to the next)."""
    require_denoiser(method)
    if draws is not None:
        return torch.stack([complete(method, images, known, batch_size, generator, ema, labels, bar)
                            for _ in range(draws)])
    parts = range(0, len(images), batch_size)
    return torch.cat([method.sample(len(images[i:i + batch_size]), generator=generator, ema=ema, progress=True,
                                    labels=None if labels is None else labels[i:i + batch_size],
                                    inpaint=(images[i:i + batch_size], known[i:i + batch_size])).cpu()
                      for i in tqdm(parts, desc="inpainting", disable=not bar)])


def comparison_rows(images: torch.Tensor, known: torch.Tensor, completed: torch.Tensor) -> torch.Tensor:
    """The masked inputs (missing pixels grey), the completions and the originals, one after another."""
    return torch.cat([torch.where(known, images, torch.zeros_like(images)), completed, images])


def psnr_missing(completed: torch.Tensor, truth: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Per image, the PSNR (dB) of the missing pixels (known false), images in [−1, 1]: peak-to-peak 2."""
    missing = (~known).flatten(1).float()
    err = ((completed.float() - truth.float()).flatten(1) ** 2 * missing).sum(1) / missing.sum(1).clamp_min(1)
    return 10 * torch.log10(4.0 / err.clamp_min(1e-12))


def mean_fill(images: torch.Tensor, known: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """The missing pixels filled with the training images' per-pixel mean (all in [−1, 1])."""
    return torch.where(known, images, train.float().mean(0, keepdim=True).expand_as(images))


def nearest_fill(images: torch.Tensor, known: torch.Tensor, train: torch.Tensor, chunk: int = 10_000) -> torch.Tensor:
    """The missing pixels copied from the training image nearest on the visible pixels (L2)."""
    x, m = images.flatten(1).double(), known.flatten(1).double()
    best, arg = torch.full((len(x),), math.inf, dtype=torch.float64), torch.zeros(len(x), dtype=torch.long)
    for start in range(0, len(train), chunk):
        t = train[start:start + chunk].flatten(1).double()
        # Σ m(x − t)² = Σ m x² − 2 (m x)·t + m·t²  for each test image (its mask m) and training image t
        d = (m * x * x).sum(1, keepdim=True) - 2 * (m * x) @ t.T + m @ (t * t).T
        value, index = d.min(1)
        better = value < best
        best, arg = torch.where(better, value, best), torch.where(better, index + start, arg)
    return torch.where(known, images, train[arg].to(images.dtype))


def inpainting_scores(completed: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, known: torch.Tensor,
                      train: torch.Tensor, classify=None) -> dict:
    """PSNR of the filled pixels for the model's completions and the two baselines, and with
    `classify` (images in [−1, 1] → logits of this data set's classes) the share of completions,
    and of each baseline's, given the original's class. Images float in [−1, 1] (train: uint8 or float).
    `completed`: one completion per image (N, ...) or k of them (k, N, ...), drawn independently; then
    the model's scores are the mean over the k draws, and "posterior_mean" scores their average."""
    train = to_unit_range(train)
    draws = completed if completed.dim() == images.dim() + 1 else completed.unsqueeze(0)
    fills = {"mean_fill": mean_fill(images, known, train), "nearest": nearest_fill(images, known, train)}
    out = {"n": len(images), "missing_fraction": (~known).float().mean().item(), "draws": len(draws)}
    out["psnr_model"] = torch.stack([psnr_missing(d, images, known) for d in draws]).mean().item()
    if classify is not None:
        out["class_agreement_model"] = torch.stack([agreement(classify, d, labels) for d in draws]).mean().item()
    if len(draws) > 1:
        fills["posterior_mean"] = draws.float().mean(0)
    for name, filled in fills.items():
        out[f"psnr_{name}"] = psnr_missing(filled, images, known).mean().item()
        if classify is not None:
            out[f"class_agreement_{name}"] = agreement(classify, filled, labels).item()
    return out


def agreement(classify, filled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The share of `filled` images the classifier gives their label."""
    return (classify(filled).argmax(1).cpu() == labels.cpu()).float().mean()
