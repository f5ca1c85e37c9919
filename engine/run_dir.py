"""A run directory: its layout, its one writer (an exclusive lock), the checks before a run writes
there, and the checkpoint a resumed run continues from, checked against the config."""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not locked
    fcntl = None

from common.checkpoint import config_differences, load_checkpoint, remove_stale_temporaries, require_same_model
from common.config import Config
from common.errors import ConfigError
from common.paths import require_writable


@dataclass
class RunDir:
    """A run directory; as a context manager, the lock its one writer holds (released on exit)."""
    root: Path
    lock: IO | None = field(default=None, repr=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.lock is not None:
            self.lock.close()  # closing the file releases its flock
            self.lock = None
        return False

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    def sample_path(self, step: int) -> Path:
        return self.root / "samples" / f"step_{step:07d}.png"


RUN_FILES = ("config.yaml", "metrics.jsonl", "tb", "samples", "checkpoints")
LOCK = ".lock"  # holds the writer's PID; locked (flock) while it runs, unlocked by the OS when it dies


def lock_run_dir(root: Path) -> IO | None:
    """An exclusive, non-blocking flock on root/.lock, written with this process's PID; a second
    process is refused in one line naming the holder. The OS drops the lock when its holder dies
    (even by SIGKILL), so a lock is never stale; the file itself stays (removing it would let two
    processes lock two different files)."""
    if fcntl is None:
        return None
    f = open(root / LOCK, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        raise ConfigError(f"{root} is in use by another training process ({f'PID {holder}' if holder else 'starting'}): "
                          f"wait for it to end or stop it, or pass --run-dir NEW") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def prepare_run_dir(root, resume: bool, lock: bool = True) -> RunDir:
    """The run directory, locked for this process (`lock`: the main process's) and checked before
    any work: writable, and holding a checkpoint exactly when resuming. A new run never mixes its
    metrics.jsonl and TensorBoard events with those of a run that died before its first checkpoint.
    Use as `with prepare_run_dir(...) as run:`, which releases the lock."""
    run = RunDir(Path(root))
    require_writable(run.root, "run directory", folder=True)
    run.root.mkdir(parents=True, exist_ok=True)
    run.lock = lock_run_dir(run.root) if lock else None
    try:
        check_run_dir(run, resume)
    except BaseException:
        run.__exit__()
        raise
    return run


def check_run_dir(run: RunDir, resume: bool):
    if resume and not run.last.is_file():
        raise ConfigError(f"nothing to resume in {run.root} (no checkpoints/last.pt): drop --resume "
                          f"to start a new run there")
    if not resume and run.last.is_file():
        raise ConfigError(f"{run.root} already holds a run (checkpoints/last.pt): pass --resume to "
                          f"continue it, or --run-dir NEW to start another")
    leftovers = [name for name in RUN_FILES if (run.root / name).exists()]
    if not resume and leftovers:
        raise ConfigError(f"{run.root} holds files of a run that stopped before its first checkpoint "
                          f"({', '.join(leftovers)}): delete them, or pass --run-dir NEW to start another")
    for name in RUN_FILES:
        if (run.root / name).exists():
            require_writable(run.root / name, "run directory", folder=name in ("tb", "samples", "checkpoints"))
    remove_stale_temporaries(run.checkpoints)  # left by a run killed mid-write; last.pt is intact


def resume_state(run: RunDir, cfg: Config, dataset, method) -> dict:
    """The checkpoint to continue, checked against the config: same method, same networks (every
    model.* setting), same optimizers, same data shape, and steps left to train. Loaded on the CPU:
    load_state_dict copies each tensor to its parameter's device, and the RNG states must stay there."""
    ckpt = load_checkpoint(run.last)
    if ckpt["method"] != cfg.method:
        raise ConfigError(f"{run.last} is a '{ckpt['method']}' run, the config says "
                          f"'{cfg.method}': resume with the run's own config.yaml")
    require_same_model(ckpt, cfg, "drop the override or resume with the run's own config.yaml")
    saved = sorted(ckpt["state"].get("optimizers", {}))
    if saved != sorted(method.optimizers):
        changed = [f"{key} ({old!r} → {new!r})" for key, old, new in config_differences(ckpt, cfg, cfg.method)]
        changed = changed or [f"the {cfg.method} settings"]
        raise ConfigError(f"{', '.join(changed)}: the checkpoint has optimizers {', '.join(saved)}, this "
                          f"config builds {', '.join(sorted(method.optimizers))}; resume with the run's "
                          f"own settings or start a new run")
    shape = tuple(ckpt["data_info"]["shape"])
    if shape != tuple(dataset.info.shape):
        fmt = lambda s: "x".join(map(str, s))  # noqa: E731
        raise ConfigError(f"data.image_size: the checkpoint was trained on {fmt(shape)} data, the config's "
                          f"is {fmt(dataset.info.shape)}: resume with the run's data settings")
    require_same_run(ckpt, cfg, method)
    if int(ckpt["step"]) >= cfg.train.steps:
        raise ConfigError(f"train.steps={cfg.train.steps}: the run is already at step {ckpt['step']}; pass "
                          f"train.steps=N with N > {ckpt['step']} to train longer")
    minutes = float(ckpt.get("seconds", 0.0)) / 60
    if cfg.optim.schedule_over == "minutes" and minutes >= cfg.train.max_minutes:
        raise ConfigError(f"train.max_minutes={cfg.train.max_minutes}: the run has trained {minutes:.1f} minutes "
                          f"and its schedule runs over the whole run's minutes (optim.schedule_over); pass "
                          f"train.max_minutes=M with M > {minutes:.1f} to train longer")
    return ckpt


# What a resumed run may set differently from the run it continues: how long it trains and logs, the
# optimizer's settings, evaluation, where it runs and finds its data, the fast paths (numerically the
# fp32 eager baseline's), and the initialisation (the weights come from the checkpoint). Anything
# else (the seed, the batch, the loss, the data's treatment, ...) would make it another run.
RESUME_MAY_CHANGE = (
    "train.steps", "train.log_every", "train.sample_every", "train.n_samples", "train.ckpt_every",
    "train.keep_every", "train.max_minutes", "train.compile", "train.cuda_graph", "train.channels_last",
    "train.deterministic",
    "optim.*", "eval.*", "init.*", "device", "precision",
    "data.root", "data.path", "data.download", "data.loader", "data.num_workers",
)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} → {"a.b": 1}: a config as dotted keys."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def require_same_run(ckpt: dict, cfg: Config, method):
    """Every setting the checkpoint's run was trained with is the config's too, except those a
    resume may change (RESUME_MAY_CHANGE and the method's own `resume_may_change`, e.g. its sampler).
    Settings the checkpoint's code did not have yet are not compared."""
    allowed = RESUME_MAY_CHANGE + tuple(p.format(method=cfg.method) for p in method.resume_may_change)
    saved, current = flatten(ckpt["config"]), flatten(cfg.to_dict())
    for key in saved.keys() & current.keys():
        if saved[key] != current[key] and not any(fnmatch.fnmatchcase(key, p) for p in allowed):
            raise ConfigError(f"{key}: the run was trained with {saved[key]!r}, the config says {current[key]!r}, "
                              f"and it cannot change on resume (train.steps, logging, optim.*, eval.*, the device "
                              f"and the data's location can): restore it, or start a new run with --run-dir NEW")


def stop_message(signal_name: str, step: int, run: RunDir) -> str:
    return (f"stopped by {signal_name} at step {step}; checkpoint saved ({run.last}): continue with "
            f"--run-dir {run.root} --resume")
