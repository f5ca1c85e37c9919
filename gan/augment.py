"""Differentiable augmentation of everything the critic sees (DiffAugment, Zhao et al. 2020).

With `gan.augment: [color, translation, cutout]` the critic is trained and queried on T(x) for
every image it sees, real or generated, with T drawn afresh per image and per call: d_loss on
D(T(x)) and D(T(G(z))), g_loss on D(T(G(z))). T is differentiable in its input, so the generator's
gradient passes through it; augmenting the reals alone would teach the critic that augmented images
are real, and the generator to draw them (the paper's Fig. 2). A critic regulariser (R1, the
gradient penalty) is then taken where the critic looks, at the augmented images, as StyleGAN2-ADA does.

Each operation is registered under its name (`@register("gan_augment", NAME)`), a function of a
batch of images in [−1, 1], (B, C, H, W), drawing from torch's global generator on the batch's
device (saved in checkpoints, so a resumed run draws the same), each image its own parameters:
  color        brightness + U(−½, ½), saturation × U(0, 2) about the pixel's channel mean,
               contrast × U(½, 3/2) about the image's mean (the paper's ranges);
  translation  a shift by up to ⅛ of the side in each direction, whole pixels, zeros (grey) let in;
  cutout       a square of half the side (clipped at the border) set to zero (grey).
All three act on each image alone, so a per-sample critic stays per-sample (gan.step=one_loss_fused).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from common.registry import lookup, register


def _uniform(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """One value per image in [low, high), shaped to broadcast over (C, H, W)."""
    return low + (high - low) * torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)


def brightness(x: torch.Tensor) -> torch.Tensor:
    return x + _uniform(x, -0.5, 0.5)


def saturation(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _uniform(x, 0.0, 2.0) + mean


def contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(x, 0.5, 1.5) + mean


@register("gan_augment", "color")
def color(x: torch.Tensor) -> torch.Tensor:
    return contrast(saturation(brightness(x)))


def _offsets(n: int, reach: int, device) -> torch.Tensor:
    return torch.randint(-reach, reach + 1, (n, 1, 1), device=device)


@register("gan_augment", "translation")
def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """out[b, :, i, j] = x[b, :, i − dy_b, j − dx_b], zero where that falls outside the image; dy_b,
    dx_b uniform integers in [−r, r], r = round(ratio · side). One gather from the zero-padded batch:
    a source index outside the image is clamped onto the padding."""
    B, _, H, W = x.shape
    dy = _offsets(B, int(H * ratio + 0.5), x.device)
    dx = _offsets(B, int(W * ratio + 0.5), x.device)
    rows = (torch.arange(H, device=x.device).view(1, H, 1) - dy + 1).clamp(0, H + 1)
    cols = (torch.arange(W, device=x.device).view(1, 1, W) - dx + 1).clamp(0, W + 1)
    padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (B, H + 2, W + 2, C)
    batch = torch.arange(B, device=x.device).view(B, 1, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


@register("gan_augment", "cutout")
def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """A (ratio·H) × (ratio·W) square per image, centred on a uniformly drawn pixel and clipped at
    the border, set to zero."""
    B, _, H, W = x.shape
    h, w = int(H * ratio + 0.5), int(W * ratio + 0.5)
    top = torch.randint(0, H, (B, 1, 1), device=x.device) - h // 2
    left = torch.randint(0, W, (B, 1, 1), device=x.device) - w // 2
    rows = torch.arange(H, device=x.device).view(1, H, 1) - top
    cols = torch.arange(W, device=x.device).view(1, 1, W) - left
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    return x * (~inside).unsqueeze(1).to(x.dtype)


class Augment:
    """x ↦ the named operations applied in order (gan.augment)."""

    def __init__(self, policy: Sequence[str]):
        self.operations = [lookup("gan_augment", name, "gan.augment") for name in policy]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for operation in self.operations:
            x = operation(x)
        return x
