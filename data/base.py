"""What a data set is to the rest of the code: uint8 NCHW images (or float points) plus labels."""
from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

# What a broken image or zip member raises: PIL's UnidentifiedImageError/OSError/SyntaxError/ValueError,
# zipfile's BadZipFile (bad CRC), zlib's error and EOFError (truncated data).
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, zipfile.BadZipFile,
                 zlib.error, Image.DecompressionBombError)


@dataclass(frozen=True)
class DataInfo:
    name: str
    shape: tuple          # one sample: (C, H, W) for images, (D,) for points
    num_classes: int
    kind: str = "image"   # image | points
    classes: tuple = ()   # the class names in label order, where the data set names them

    def to_dict(self):
        return {"name": self.name, "shape": list(self.shape), "num_classes": self.num_classes,
                "kind": self.kind, "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d):  # checkpoints written before `classes` have none
        return cls(d["name"], tuple(d["shape"]), d["num_classes"], d.get("kind", "image"),
                   tuple(d.get("classes", ())))


@dataclass
class TensorData:
    """A data set held in memory: images as uint8 NCHW (or points as float N×D) and int64 labels."""
    data: torch.Tensor
    labels: torch.Tensor
    info: DataInfo

    def __len__(self):
        return self.data.shape[0]

    def __getitem__(self, i):
        return self.data[i], self.labels[i]


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [−1, 1]; float data (points) pass through."""
    if x.dtype == torch.uint8:
        return x.float().div_(127.5).sub_(1.0)
    return x.float()


def from_unit_range(x: torch.Tensor) -> torch.Tensor:
    """float [−1, 1] → uint8 [0, 255] (rounded, clamped): the inverse of to_unit_range."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def fit_size(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """uint8 NCHW images to size×size: zero-pad when a few pixels short (28 → 32, as is usual for
    MNIST-like sets), else an antialiased bilinear resize."""
    h, w = images.shape[-2:]
    if size is None or (h, w) == (size, size):
        return images
    if h == w and h < size <= h + 8 and (size - h) % 2 == 0:
        p = (size - h) // 2
        return F.pad(images, (p, p, p, p))
    out = []
    for chunk in images.split(4096):
        x = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)
