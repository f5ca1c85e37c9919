"""CIFAR-10 in its real release format: torchvision's `cifar-10-batches-py/` pickled batches.

Read directly (torchvision's class insists on the release's MD5 sums); downloaded through torchvision
when data.download is true. For the JPEG re-encoding in class-folder zips use `image_folder`.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from common.errors import DataError
from common.registry import register
from .base import DataInfo, TensorData, fit_size
from .download import download

FOLDER = "cifar-10-batches-py"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

# What a batch file may reference: NumPy's array reconstruction (numpy.core before NumPy 2, numpy._core
# after; _frombuffer for protocol-5 pickles) and codecs' encode (Python 2 byte strings). Anything
# else, os.system say, is refused before it runs.
ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
           ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.numeric", "_frombuffer"),
           ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}


class BatchUnpickler(pickle.Unpickler):
    """pickle.load for CIFAR-10 batches: dicts, lists, bytes, strings and NumPy arrays only, so a
    malicious data folder cannot run code."""

    def find_class(self, module, name):
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def read_batch(path: Path) -> dict:
    with open(path, "rb") as f:
        entry = BatchUnpickler(f, encoding="latin1").load()
    if not isinstance(entry, dict):
        raise pickle.UnpicklingError(f"a {type(entry).__name__}, not a dict")
    return entry


# torchvision's CIFAR10.classes (batches.meta's label_names): the names of labels 0 to 9, which are
# also the class folders of a JPEG copy in image_folder's sorted order
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@register("dataset", "cifar10", classes=CLASSES)
def load(cfg, seed: int = 0) -> TensorData:
    folder = Path(cfg.root) / FOLDER
    paths = [folder / b for b in BATCHES[cfg.split]]
    if not all(p.is_file() for p in paths) and cfg.download:
        from torchvision.datasets import CIFAR10
        download("CIFAR-10", cfg.root, lambda: CIFAR10(cfg.root, train=cfg.split == "train", download=True),
                 f"unpack cifar-10-python.tar.gz into {cfg.root} (a {FOLDER}/ folder)")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"CIFAR-10 not found ({missing[0]} is missing): set data.download=true to "
                        f"fetch it into {cfg.root}, or data.root=<folder holding {FOLDER}/>")
    images, labels = [], []
    for p in paths:
        try:
            entry = read_batch(p)
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(int(label) for label in entry["labels"])
        except Exception as e:  # truncated, foreign or malicious file
            detail = f": {e}" if isinstance(e, pickle.UnpicklingError) else ""
            raise DataError(f"{p} is not a CIFAR-10 batch ({type(e).__name__}{detail}): delete "
                            f"{folder} and download it again") from None
    x = fit_size(torch.from_numpy(np.concatenate(images)), cfg.image_size)
    info = DataInfo("cifar10", tuple(x.shape[1:]), 10, classes=CLASSES)
    return TensorData(x, torch.tensor(labels, dtype=torch.int64), info)
