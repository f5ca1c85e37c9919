"""Data sets (real on-disk formats) and the streams that feed training batches to the device.

Each data set is one module here that registers a loader, `@register("dataset", name)`: a function
(data config, seed) → TensorData (in memory) or a file-backed torch Dataset; `data.name` names one.
Registration options: `splits` (default train and test), `check_config(data_cfg, path)` for what it
needs of the other keys, `points=True` for 2-D point sets. Every module of the package is imported
below, so a new data set needs no line anywhere else.
"""
from __future__ import annotations

import importlib
import pkgutil

import torch

from common.registry import lookup
from .base import DataInfo, TensorData, from_unit_range, to_unit_range
from .stream import DeviceStream, LoaderStream

for _module in pkgutil.iter_modules(__path__):  # registers every data set, in alphabetical order
    importlib.import_module(f"{__name__}.{_module.name}")

DEVICE_RESIDENT_MAX_BYTES = 8 << 30  # "auto" keeps sets up to this size on the device


def build_dataset(cfg, seed: int = 0):
    """The data set named by a DataConfig: TensorData (in memory) or a file-backed torch Dataset."""
    return lookup("dataset", cfg.name, "data.name")(cfg, seed)


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
