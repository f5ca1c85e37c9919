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
from .base import DataInfo, TensorData, fit_size

FOLDER = "cifar-10-batches-py"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def load(cfg) -> TensorData:
    folder = Path(cfg.root) / FOLDER
    paths = [folder / b for b in BATCHES[cfg.split]]
    if not all(p.is_file() for p in paths) and cfg.download:
        from torchvision.datasets import CIFAR10
        CIFAR10(cfg.root, train=cfg.split == "train", download=True)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"CIFAR-10 not found ({missing[0]} is missing): set data.download=true to "
                        f"fetch it into {cfg.root}, or data.root=<folder holding {FOLDER}/>")
    images, labels = [], []
    for p in paths:
        try:
            with open(p, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(entry["labels"])
        except Exception as e:  # truncated or foreign file
            raise DataError(f"{p} is not a CIFAR-10 batch ({type(e).__name__}): delete "
                            f"{folder} and download it again") from None
    x = fit_size(torch.from_numpy(np.concatenate(images)), cfg.image_size)
    return TensorData(x, torch.tensor(labels, dtype=torch.int64), DataInfo("cifar10", tuple(x.shape[1:]), 10))
