"""Fashion-MNIST from its original IDX files (gzipped or not).

Looked for under data.root (flat, or torchvision's FashionMNIST/raw/ layout) and the Debian package
`dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist/); downloaded by torchvision when
data.download is true.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from common.errors import DataError
from common.registry import register
from .base import DataInfo, TensorData, fit_size
from .download import download

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's format): magic 0x0000 <dtype 0x08=uint8> <ndim>, big-endian int32 dims."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # a truncated or corrupt .gz
        raise DataError(f"{path} cannot be read ({type(e).__name__}: {str(e)[:80]}): delete it and fetch "
                        f"the data set again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not a uint8 IDX file (bad magic number): delete it and fetch "
                        f"the data set again")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated ({data.size} of {int(np.prod(dims))} values): "
                        f"delete it and fetch the data set again")
    return data.reshape(tuple(int(d) for d in dims))


def candidate_dirs(root) -> list[Path]:
    root = Path(root)
    return [root, root / "FashionMNIST" / "raw", root / "fashion-mnist", SYSTEM_DIR]


def find(stem: str, dirs) -> Path | None:
    for d in dirs:
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                return d / name
    return None


# torchvision's FashionMNIST.classes: the names of labels 0 to 9
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")


@register("dataset", "fashion_mnist", classes=CLASSES)
def load(cfg, seed: int = 0) -> TensorData:
    images_stem, labels_stem = FILES[cfg.split]
    dirs = candidate_dirs(cfg.root)
    if find(images_stem, dirs) is None and cfg.download:
        from torchvision.datasets import FashionMNIST
        download("Fashion-MNIST", cfg.root, lambda: FashionMNIST(cfg.root, train=cfg.split == "train", download=True),
                 "install it with `sudo apt-get install dataset-fashion-mnist`")
    images_path, labels_path = find(images_stem, dirs), find(labels_stem, dirs)
    if images_path is None or labels_path is None:
        looked = ", ".join(str(d) for d in dirs)
        raise DataError(f"Fashion-MNIST not found (looked in {looked}): install it with "
                        f"`sudo apt-get install dataset-fashion-mnist`, or set data.download=true")
    images = torch.from_numpy(read_idx(images_path).copy()).unsqueeze(1)
    labels = torch.from_numpy(read_idx(labels_path).astype(np.int64))
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_path} and {labels_path} disagree on the number of examples")
    images = fit_size(images, cfg.image_size)
    dataset = TensorData(images, labels, DataInfo("fashion_mnist", tuple(images.shape[1:]), 10,
                                                   classes=CLASSES))
    dataset.found_in = images_path.parent.absolute()  # where the search found it: a run records it
    return dataset
