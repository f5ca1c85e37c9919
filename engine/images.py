"""Turning samples into pictures: image grids, and 2-D point clouds rendered as scatter images."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid, save_image

from common.errors import UserError
from common.paths import atomic_file, require_writable


def scatter_image(points: torch.Tensor, size: int = 256, bound: float = 3.0) -> torch.Tensor:
    """2-D points → a (3, size, size) float image in [0, 1]: dark where points are dense."""
    p = points.detach().float().cpu()
    ij = ((p + bound) / (2 * bound) * (size - 1)).round().long()
    keep = ((ij >= 0) & (ij < size)).all(1)
    ij = ij[keep]
    counts = torch.zeros(size * size)
    counts.index_add_(0, (size - 1 - ij[:, 1]) * size + ij[:, 0], torch.ones(len(ij)))
    ink = (counts.view(size, size) / counts.max().clamp(min=1)).sqrt()
    return (1 - ink).expand(3, size, size).clone()


def to_grid(samples: torch.Tensor, nrow: int | None = None) -> torch.Tensor:
    """Samples in [−1, 1] (NCHW images, or N×2 points) → one (3, H, W) float image in [0, 1]."""
    if samples.dim() == 2:
        return scatter_image(samples)
    x = samples.detach().float().cpu().clamp(-1, 1).add(1).div(2)
    nrow = nrow or max(1, int(len(x) ** 0.5))
    grid = make_grid(x, nrow=nrow, padding=2, pad_value=1.0)
    return grid


def save_grid(samples: torch.Tensor, path, nrow: int | None = None):
    """The grid of `samples` as an image file, written atomically (a full disk leaves no 0-byte PNG);
    the format follows the extension."""
    path = Path(path)
    with atomic_file(path) as f:
        save_image(to_grid(samples, nrow), f, format=Image.registered_extensions()[path.suffix.lower()])


def require_image_path(path, what: str) -> Path:
    """An image file PIL can write (known extension) in a writable place; else one UserError."""
    path = Path(path)
    extensions = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}
    if path.suffix.lower() not in extensions:
        raise UserError(f"{what}: {path} has {'no' if not path.suffix else 'an unknown'} image extension "
                        f"{path.suffix!r}; use .png (or .jpg, .webp)")
    return require_writable(path, what)
