"""A config's method on a device, fresh or from a checkpoint: what the loop, the scripts and the
tests build methods with."""
from __future__ import annotations

import random
import re

import numpy as np
import torch

from common.checkpoint import load_checkpoint, require_same_model, require_same_training
from common.config import Config, load_config
from common.errors import ConfigError, UserError
from common.registry import lookup
from data import DataInfo
from .runtime import Runtime


def resolve_device(name: str) -> torch.device:
    if not (name in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", name)):
        raise ConfigError(f"device: must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {name} asked for but no CUDA GPU is visible: use device=auto or device=cpu")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"device: {name} asked for but only {torch.cuda.device_count()} GPU(s) are visible")
    return torch.device(name)


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build(cfg: Config, device, info=None, dataset=None, guide: bool = True):
    """The method of a config, on `device`, with EMA when the config asks for it, and the guide its
    samples are autoguided by when the config names one (<method>.autoguide; `guide` False skips
    it). The networks' builders check the data's shape (`info`, or the data set's) before torch
    sees it."""
    info = info if info is not None else dataset.info
    method = lookup("method", cfg.method)(cfg, info, device, Runtime(cfg, device))
    if cfg.train.ema or cfg.train.ema_halflife_kimg:
        method.enable_ema()
    if guide:
        attach_guide(method, cfg, device)
    return method


def attach_guide(method, cfg: Config, device):
    """<method>.autoguide: the guide checkpoint's method (its EMA weights, on `device`), given to
    the method as its autoguidance guide; a bad path or checkpoint is one line naming the key."""
    key, path = f"{cfg.method}.autoguide", getattr(getattr(cfg, cfg.method, None), "autoguide", None)
    if not path:
        return
    try:
        guide, _ = load_method(path, str(device), guide=False)
    except UserError as e:
        raise type(e)(f"{key}: {e}") from None
    method.set_guide(guide)


def load_method(path, device="auto", overrides=(), guide: bool = True):
    """The method of a checkpoint, with its trained (and EMA) weights, ready to sample; returns
    (method, checkpoint). Overrides may change how it samples, never the networks' shapes (model.*)
    nor how their output is read (the method's `fixed_by_training`)."""
    ckpt = load_checkpoint(path)
    cfg = load_config(raw=ckpt["config"], overrides=[*overrides, f"device={device}"])
    require_same_model(ckpt, cfg, "the networks' shapes come from the checkpoint; drop the override")
    require_same_training(ckpt, cfg, lookup("method", cfg.method).fixed_by_training)
    method = build(cfg, resolve_device(cfg.device), info=DataInfo.from_dict(ckpt["data_info"]), guide=guide)
    method.load_state_dict(ckpt["state"], weights_only=True)
    method.train(False)
    method.require_used([o.split("=", 1)[0].strip() for o in overrides])
    return method, ckpt
