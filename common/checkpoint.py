"""Checkpoints: written atomically (temp file + rename), read with torch.load(weights_only=True).

Every file the project writes with torch.save (training checkpoints, classifiers, cached reference
statistics) goes through `save_tagged` under its own format tag and version, and is read back by
`load_tagged`, which checks them. A training checkpoint holds everything a resumed run needs to continue the exact same run: the method's
networks, optimizers and EMA, the step, the data order, and every RNG state (Python, NumPy, torch,
CUDA). RNG states are stored as tensors and plain lists so the safe unpickler accepts them.
"""
from __future__ import annotations

import dataclasses
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

from .errors import CheckpointError
from .paths import TEMPORARY, atomic_file

FORMAT = "genmodels-checkpoint"
VERSION = 1


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": _listify(random.getstate()),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    random.setstate(_tupleify(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:  # a different number of GPUs than when saved: each device gets device 0's state
            for i in range(torch.cuda.device_count()):
                torch.cuda.set_rng_state(cuda[0], i)


def _listify(x):
    return [_listify(v) for v in x] if isinstance(x, tuple) else x


def _tupleify(x):
    return tuple(_tupleify(v) for v in x) if isinstance(x, list) else x


# What torch.load(weights_only=True) raises on a truncated, foreign or hostile file.
LOAD_ERRORS = (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError, OSError,
               AttributeError, TypeError)


def save_tagged(path, fmt: str, version: int, payload: dict,
                advice: str = "free space there (or fix its permissions) and try again"):
    """torch.save({"format": fmt, "version": version, **payload}) atomically (common/paths.py
    atomic_file): a crash (even SIGKILL) leaves either the old file or the new one. A failed write
    (a full disk) is one CheckpointError line, ending with `advice`, with the previous file intact
    and no partial file left."""
    path = Path(path)
    try:
        with atomic_file(path) as f:
            torch.save({"format": fmt, "version": version, **payload}, f)
    except (OSError, RuntimeError) as e:
        # torch's zip writer reports a failed write (ENOSPC) as "[enforce fail at inline_container.cc]
        # unexpected pos ..." raised while handling the file's OSError: the OSError is the reason.
        cause = e if isinstance(e, OSError) else e.__context__
        if not isinstance(cause, OSError) and "write" not in str(e).lower():
            raise
        cause = cause if isinstance(cause, OSError) else e
        reason = getattr(cause, "strerror", None) or str(cause).strip().splitlines()[0][:120]
        kept = "the previous file is intact" if path.exists() else "nothing was written"
        raise CheckpointError(f"could not write {path} ({reason}); {kept}: {advice}") from None


def save_checkpoint(path, payload: dict):
    """A training checkpoint (module docstring), written atomically."""
    save_tagged(path, FORMAT, VERSION, payload, "free space there (or fix its permissions) and resume with --resume")


def remove_stale_temporaries(folder) -> list[Path]:
    """Delete the temporary files a killed save_checkpoint left in `folder` (a SIGKILL between
    mkstemp and rename); returns what was removed. Call before a run writes there again."""
    folder = Path(folder)
    stale = sorted(folder.glob(TEMPORARY.format(name="*.pt"))) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_tagged(path, fmt: str, version: int, what: str, missing: str, foreign: str,
                map_location="cpu") -> dict:
    """torch.load(weights_only=True) of a file save_tagged wrote with header `fmt`; any problem
    is one CheckpointError line. `what` names the kind of file; `missing` and `foreign` say what to
    do when it is absent or not of that kind."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found: {missing}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except LOAD_ERRORS as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{what} {path} is corrupt or not a PyTorch file ({first}): {foreign}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        raise CheckpointError(f"{path} is not a {what} written by this project (no '{fmt}' header): {foreign}")
    if ckpt.get("version") != version:
        raise CheckpointError(f"{path} has {what} version {ckpt.get('version')}, this code reads "
                              f"version {version}: {foreign}")
    return ckpt


def load_checkpoint(path, map_location="cpu", missing: str = "pass a checkpoints/*.pt file of a run") -> dict:
    """A training checkpoint, validated; any problem is one CheckpointError line (`missing`: what to
    do when there is no such file)."""
    ckpt = load_tagged(path, FORMAT, VERSION, "checkpoint", missing,
                       "use another checkpoint (checkpoints/step_*.pt) or start a new run", map_location)
    for key in ("config", "step", "method", "data_info"):
        if key not in ckpt:
            raise CheckpointError(f"{path} is incomplete (no '{key}'): use another checkpoint")
    from .config import upgrade_saved  # config imports the registry's users; keep this module light
    ckpt["config"] = upgrade_saved(ckpt["config"])
    return ckpt


def state_dict_mismatch(error: Exception) -> str:
    """What a load_state_dict error says does not fit: its first detail line (missing, unexpected or
    mis-shaped keys), else its message."""
    lines = str(error).strip().splitlines()
    return next((line.strip() for line in lines[1:] if line.strip()), lines[0] if lines else "")


def config_differences(ckpt: dict, cfg, section: str) -> list[tuple[str, object, object]]:
    """(dotted key, the checkpoint's value, the config's) for each setting of one section that differs.
    A setting newer than the checkpoint (absent from it) had its default's meaning then."""
    saved, current = ckpt["config"].get(section) or {}, cfg.to_dict().get(section) or {}
    defaults = section_defaults(getattr(cfg, section, None))
    saved = {**{k: v for k, v in defaults.items() if k in current}, **saved}
    return [(f"{section}.{k}", saved.get(k), current.get(k)) for k in sorted(set(saved) | set(current))
            if saved.get(k) != current.get(k)]


def section_defaults(section) -> dict:
    """The plain defaults of a config section's dataclass fields (those with one; tuples as the lists a
    saved config holds)."""
    if not dataclasses.is_dataclass(section):
        return {}
    plain = (int, float, str, bool, type(None))
    return {f.name: list(f.default) if isinstance(f.default, tuple) else f.default for f in dataclasses.fields(section)
            if isinstance(f.default, plain) or isinstance(f.default, tuple) and all(isinstance(v, plain) for v in f.default)}


def require_same_training(ckpt: dict, cfg, patterns):
    """Settings that say what the trained network's output means (e.g. a denoiser's σ_d and its
    preconditioning): changed after training, the same weights would be read as another function.
    `patterns` are the method's dotted keys with "{method}" for its section's name (a Method's
    `fixed_by_training`); names the first one that differs."""
    keys = {p.format(method=cfg.method) for p in patterns}
    for key, saved, current in config_differences(ckpt, cfg, cfg.method):
        if key in keys:
            raise CheckpointError(f"{key}: the checkpoint's network was trained with {saved!r}, the override says "
                                  f"{current!r}, and it decides how the network's output is read: drop the override")


def require_same_model(ckpt: dict, cfg, fix: str):
    """Every model.* setting shapes the networks: one that differs from the checkpoint's would
    fail inside load_state_dict (a size-mismatch traceback) or load the wrong network. Names the
    first one that differs."""
    for key, saved, current in config_differences(ckpt, cfg, "model")[:1]:
        raise CheckpointError(f"{key}: the checkpoint has {saved!r}, the config says {current!r}: {fix}")
