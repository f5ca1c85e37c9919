"""CelebA in its standard aligned layout: `img_align_celeba/` (or `img_align_celeba.zip`) beside
`list_eval_partition.txt`, under data.root or data.root/celeba (torchvision's layout).

Too large to decode up front (202,599 images), so it is a file-backed torch Dataset read through a
DataLoader with workers; each image is centre-cropped (data.crop, 140 by default as in NCSN and
score_sde) and resized with antialiasing to data.image_size (64 by default).
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from common.errors import DataError
from common.registry import register
from .base import DECODE_ERRORS, DataInfo
from .download import download

SPLITS = {"train": "0", "valid": "1", "test": "2"}


def _find_root(root: Path) -> Path | None:
    for d in (root / "celeba", root):
        if (d / "list_eval_partition.txt").is_file() and (
                (d / "img_align_celeba").is_dir() or (d / "img_align_celeba.zip").is_file()):
            return d
    return None


class CelebA(torch.utils.data.Dataset):
    def __init__(self, root, split="train", image_size=64, crop=140):
        folder = _find_root(Path(root))
        if folder is None:
            raise DataError(f"CelebA not found under {root} or {Path(root) / 'celeba'}: download "
                            f"img_align_celeba.zip and list_eval_partition.txt from the CelebA site "
                            f"(or set data.download=true) and put them in {Path(root) / 'celeba'}")
        self.folder, self.size, self.crop = folder, image_size, crop
        self.files = read_partition(folder / "list_eval_partition.txt",
                                    set(SPLITS.values()) if split == "all" else {SPLITS[split]})
        if not self.files:
            raise DataError(f"{folder / 'list_eval_partition.txt'} lists no images for split {split!r}")
        self.zip_path = None if (folder / "img_align_celeba").is_dir() else folder / "img_align_celeba.zip"
        self._zip = None
        self.info = DataInfo("celeba", (3, image_size, image_size), 0)

    def __len__(self):
        return len(self.files)

    def _open(self, name):
        if self.zip_path is None:
            return Image.open(self.folder / "img_align_celeba" / name)
        if self._zip is None:  # one handle per worker process
            self._zip = zipfile.ZipFile(self.zip_path)
        return Image.open(io.BytesIO(self._zip.read(f"img_align_celeba/{name}")))

    def __getitem__(self, i):
        name = self.files[i]
        try:
            with self._open(name) as img:
                x = TF.pil_to_tensor(img.convert("RGB"))
        except (KeyError, *DECODE_ERRORS) as e:
            where = f"member img_align_celeba/{name} of {self.zip_path}" if self.zip_path else \
                str(self.folder / "img_align_celeba" / name)
            raise DataError(f"cannot read {where} ({type(e).__name__}): delete or replace that image, "
                            f"or download CelebA again") from None
        x = TF.center_crop(x, [self.crop, self.crop])
        x = TF.resize(x, [self.size, self.size], antialias=True)
        return x, 0

    def __getstate__(self):  # zip handles don't pickle into workers
        return {**self.__dict__, "_zip": None}


def read_partition(path: Path, wanted: set[str]) -> list[str]:
    """The image names of list_eval_partition.txt (`<name> <0|1|2>` lines) in the wanted splits."""
    try:
        rows = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path} cannot be read ({type(e).__name__}): download it again") from None
    bad = next((i for i, row in enumerate(rows) if len(row) != 2), None)
    if bad is not None:
        raise DataError(f"{path}: line {bad + 1} is not '<image> <split>': download it again")
    return [name for name, part in rows if part in wanted]


@register("dataset", "celeba", splits=("train", "valid", "test", "all"))
def load(cfg, seed: int = 0) -> CelebA:
    if cfg.download and _find_root(Path(cfg.root)) is None:
        from torchvision.datasets import CelebA as TVCelebA
        download("CelebA", cfg.root, lambda: TVCelebA(cfg.root, split="train", download=True),
                 f"put img_align_celeba.zip and list_eval_partition.txt in {Path(cfg.root) / 'celeba'}")
    return CelebA(cfg.root, cfg.split, cfg.image_size or 64, cfg.crop)
