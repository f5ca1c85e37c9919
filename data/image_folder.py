"""A generic labelled image set: `<class>/<image>` files in a folder or inside a .zip.

The CIFAR-10 JPEG zips in shared/datasets are read this way (zip members are read without
extracting). Class indices follow the sorted class-folder names. Images are decoded once into memory
as uint8 NCHW; all images must share one size unless data.image_size is set.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePosixPath

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2.functional import pil_to_tensor

from common.errors import DataError
from common.registry import register
from common.schema import require
from .base import DECODE_ERRORS, DataInfo, TensorData, fit_size

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _members(path: Path):
    """(class name, where (for messages), reader of the file's bytes) for every image under path."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in EXTENSIONS)
        return [(p.parent.name, str(p), p.read_bytes) for p in files], None
    zf = zipfile.ZipFile(path)
    names = sorted(n for n in zf.namelist() if PurePosixPath(n).suffix.lower() in EXTENSIONS)
    return [(PurePosixPath(n).parent.name, f"member {n} of {path}", (lambda n=n: zf.read(n)))
            for n in names], zf


def decode(read, where: str, mode: str, size: int | None) -> torch.Tensor:
    """One image as uint8 CHW; a corrupt one is a DataError naming the file or zip member."""
    try:
        with Image.open(io.BytesIO(read())) as im:
            img = pil_to_tensor(im.convert(mode))
    except DECODE_ERRORS as e:
        reason = ("not an image PIL can read" if isinstance(e, UnidentifiedImageError)
                  else str(e).strip().splitlines()[0][:100] if str(e).strip() else type(e).__name__)
        raise DataError(f"cannot decode {where} ({reason}): delete or replace that image") from None
    return fit_size(img.unsqueeze(0), size)[0] if size is not None else img


def check_config(cfg, path: str):
    require(cfg.path, f"{path}.path: image_folder needs data.path=<folder or .zip of class folders>")


@register("dataset", "image_folder", check_config=check_config)
def load(cfg, seed: int = 0) -> TensorData:
    path = Path(cfg.path)
    if not path.exists():
        raise DataError(f"image folder {path} not found: set data.path to a folder or .zip of "
                        f"<class>/<image> files")
    try:
        members, zf = _members(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable zip file ({type(e).__name__}): check the download") from None
    if not members:
        if zf is not None:
            zf.close()
        raise DataError(f"no images ({', '.join(EXTENSIONS)}) under {path}: expected <class>/<image> files")
    classes = sorted({c for c, _, _ in members})
    index = {c: i for i, c in enumerate(classes)}
    mode = "L" if cfg.channels == 1 else "RGB"
    images, labels = [], []
    try:
        for cls, where, read in members:
            images.append(decode(read, where, mode, cfg.image_size))
            labels.append(index[cls])
    finally:
        if zf is not None:
            zf.close()
    if len({tuple(i.shape) for i in images}) > 1:
        raise DataError(f"images under {path} differ in size: set data.image_size to resize them")
    x = torch.stack(images)
    return TensorData(x, torch.tensor(labels, dtype=torch.int64), DataInfo("image_folder", tuple(x.shape[1:]), len(classes)))
