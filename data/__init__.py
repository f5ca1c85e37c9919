"""Data sets (real on-disk formats) and the streams that feed training batches to the device."""
from __future__ import annotations

import torch

from common.errors import DataError
from .base import DataInfo, TensorData, from_unit_range, to_unit_range
from .stream import DeviceStream, LoaderStream

DEVICE_RESIDENT_MAX_BYTES = 8 << 30  # "auto" keeps sets up to this size on the device


def build_dataset(cfg, seed: int = 0):
    """The data set named by a DataConfig: TensorData (in memory) or a file-backed torch Dataset."""
    if cfg.name == "fashion_mnist":
        from . import fashion_mnist as mod
    elif cfg.name == "cifar10":
        from . import cifar10 as mod
    elif cfg.name == "celeba":
        from . import celeba as mod
    elif cfg.name == "image_folder":
        from . import image_folder as mod
    elif cfg.name == "toy":
        from . import toy
        return toy.load(cfg, seed)
    else:
        raise DataError(f"data.name: unknown data set {cfg.name!r}")
    return mod.load(cfg)


def materialize(dataset, num_workers: int = 4) -> TensorData:
    """Decode a file-backed data set once into memory (to hold it on the device)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, num_workers=num_workers)
    xs, ys = zip(*loader)
    return TensorData(torch.cat(xs), torch.cat([torch.as_tensor(y) for y in ys]), dataset.info)


def build_stream(dataset, cfg, batch_size: int, device, seed: int = 0, rank: int = 0, world: int = 1):
    in_memory = isinstance(dataset, TensorData)
    mode = cfg.loader
    if mode == "auto":
        fits = in_memory and dataset.data.numel() * dataset.data.element_size() <= DEVICE_RESIDENT_MAX_BYTES
        mode = "device" if fits else "workers"
    if mode == "device":
        if not in_memory:
            dataset = materialize(dataset, cfg.num_workers)
        return DeviceStream(dataset, batch_size, device, cfg.flip, seed, rank, world)
    return LoaderStream(dataset, batch_size, device, cfg.flip, seed, rank, world, cfg.num_workers)


__all__ = ["DataInfo", "TensorData", "build_dataset", "build_stream", "to_unit_range", "from_unit_range"]
