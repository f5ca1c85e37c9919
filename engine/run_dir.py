"""A run directory: its layout, the checks before a run writes there, and the checkpoint a resumed
run continues from, checked against the config."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.checkpoint import config_differences, load_checkpoint, remove_stale_temporaries, require_same_model
from common.config import Config
from common.errors import ConfigError
from common.paths import require_writable


@dataclass
class RunDir:
    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    def sample_path(self, step: int) -> Path:
        return self.root / "samples" / f"step_{step:07d}.png"


RUN_FILES = ("config.yaml", "metrics.jsonl", "tb", "samples", "checkpoints")


def prepare_run_dir(root, resume: bool) -> RunDir:
    """The run directory, checked before any work: writable, and holding a checkpoint exactly when
    resuming. A new run never mixes its metrics.jsonl and TensorBoard events with those of a run
    that died before its first checkpoint."""
    run = RunDir(Path(root))
    require_writable(run.root, "run directory", folder=True)
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
    for name in ("config.yaml", "metrics.jsonl", "checkpoints"):
        if (run.root / name).exists():
            require_writable(run.root / name, "run directory", folder=name == "checkpoints")
    run.root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run.checkpoints)  # left by a run killed mid-write; last.pt is intact
    return run


def resume_state(run: RunDir, cfg: Config, dataset, method, device) -> dict:
    """The checkpoint to continue, checked against the config: same method, same networks (every
    model.* setting), same optimizers, same data shape, and steps left to train."""
    ckpt = load_checkpoint(run.last, map_location=device)
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
    if int(ckpt["step"]) >= cfg.train.steps:
        raise ConfigError(f"train.steps={cfg.train.steps}: the run is already at step {ckpt['step']}; pass "
                          f"train.steps=N with N > {ckpt['step']} to train longer")
    return ckpt


def stop_message(signal_name: str, step: int, run: RunDir) -> str:
    return (f"stopped by {signal_name} at step {step}; checkpoint saved ({run.last}): continue with "
            f"--run-dir {run.root} --resume")
