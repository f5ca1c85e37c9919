"""The one training loop, shared by every method.

It owns, once for all methods: device and seeds, the data stream, EMA, logging (progress bar,
TensorBoard, metrics.jsonl), sample grids, atomic checkpoints with exact resume, the NaN/inf guard and
the step and wall-time budgets. A method only supplies training_step / sample / state_dict.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data import build_dataset, build_stream
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import Config, save_config
from .errors import ConfigError, UserError
from .images import save_grid, to_grid
from .logging import RunLogger
from .registry import get_method


class Diverged(UserError):
    """A loss became NaN or inf; the run stops without writing a checkpoint."""


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {name} asked for but no CUDA GPU is visible: use device=auto or device=cpu")
    return torch.device(name)


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_run_dir(root, cfg: Config, resume: bool) -> RunDir:
    run = RunDir(Path(root))
    if resume and not run.last.is_file():
        raise ConfigError(f"nothing to resume in {run.root} (no checkpoints/last.pt): drop --resume "
                          f"to start a new run there")
    if not resume and run.last.is_file():
        raise ConfigError(f"{run.root} already holds a run (checkpoints/last.pt): pass --resume to "
                          f"continue it, or --run-dir NEW to start another")
    run.root.mkdir(parents=True, exist_ok=True)
    return run


def build(cfg: Config, device, info=None, dataset=None):
    """The method of a config, on `device`, with EMA when the config asks for it."""
    method = get_method(cfg.method)(cfg, info if info is not None else dataset.info, device)
    if cfg.train.ema:
        method.enable_ema(cfg.train.ema)
    return method


class Meter:
    """Running sums of a step's scalars, kept on the device: no host sync until they are read.
    Non-finite values are sticky in a sum, so reading it also checks every step since the last read."""

    def __init__(self):
        self.keys, self.total, self.count = None, None, 0

    def add(self, stats: dict):
        values = torch.stack([v.detach().float() for v in stats.values()])
        if self.total is None:
            self.keys, self.total = list(stats), values
        else:
            self.total = self.total + values
        self.count += 1

    def read(self) -> dict[str, float]:
        if self.total is None:
            return {}
        means = (self.total / self.count).tolist()
        self.total, self.count = None, 0
        return dict(zip(self.keys, means))


def train(cfg: Config, run_dir, resume: bool = False) -> dict:
    """Train `cfg` in `run_dir` (continuing its last checkpoint with `resume`); returns a summary."""
    run = prepare_run_dir(run_dir, cfg, resume)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    dataset = build_dataset(cfg.data, cfg.seed)
    cfg = get_method(cfg.method).resolve_config(cfg, dataset)  # deterministic, so resumes agree
    method = build(cfg, device, dataset=dataset)
    t = cfg.train
    stream = build_stream(dataset, cfg.data, t.batch_size * method.batches_per_step, device, cfg.seed)

    step = 0
    if resume:
        ckpt = load_checkpoint(run.last, map_location=device)
        if ckpt["method"] != cfg.method:
            raise ConfigError(f"{run.last} is a '{ckpt['method']}' run, the config says "
                              f"'{cfg.method}': resume with the run's own config.yaml")
        method.load_state_dict(ckpt["state"])
        stream.load_state_dict(ckpt["data"])
        set_rng_state(ckpt["rng"])
        step = int(ckpt["step"])
    save_config(cfg, run.root / "config.yaml")

    def checkpoint(at: int):
        payload = {"method": cfg.method, "config": cfg.to_dict(), "data_info": dataset.info.to_dict(),
                   "step": at, "state": method.state_dict(), "data": stream.state_dict(),
                   "rng": rng_state()}
        save_checkpoint(run.last, payload)
        if t.keep_every and at % t.keep_every == 0:
            save_checkpoint(run.checkpoints / f"step_{at:07d}.pt", payload)

    def sample_grid(at: int):
        gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # same noise every time
        samples = method.sample(t.n_samples, generator=gen)
        save_grid(samples, run.sample_path(at))
        logger.image("samples", at, to_grid(samples))

    logger = RunLogger(run.root, start_step=step)
    evaluate = None
    if cfg.eval.every:
        from .metrics.evaluate import TrainingEvaluator  # torchmetrics is imported only when used
        evaluate = TrainingEvaluator(cfg, dataset, device)
    meter, last = Meter(), {}
    start_time = tick = time.monotonic()
    tick_step, saved_step, checked_step = step, step, step
    images_per_step = t.batch_size * method.batches_per_step
    bar = tqdm(total=t.steps, initial=step, dynamic_ncols=True, mininterval=1.0, desc=cfg.method)

    def read_meter(at: int) -> dict:
        nonlocal checked_step
        values = meter.read()
        bad = {k: v for k, v in values.items() if not np.isfinite(v)}
        if bad:
            raise Diverged(f"non-finite loss ({', '.join(f'{k}={v}' for k, v in bad.items())}) between "
                           f"steps {checked_step + 1} and {at}; the last good checkpoint is kept "
                           f"({run.last}, step {saved_step}): lower the learning rates or use precision=fp32")
        checked_step = at
        return values

    method.train()
    try:
        while step < t.steps:
            x, _ = next(stream)
            meter.add(method.training_step(x))
            method.update_ema()
            step += 1
            bar.update(1)
            out_of_time = t.max_minutes is not None and time.monotonic() - start_time > 60 * t.max_minutes
            finishing = step == t.steps or out_of_time
            if step % t.log_every == 0 or finishing:
                now = time.monotonic()
                last = read_meter(step)
                rate = (step - tick_step) * images_per_step / max(now - tick, 1e-9)
                values = {f"loss/{k}": v for k, v in last.items()}
                values.update({f"lr/{k}": v for k, v in method.learning_rates().items()})
                values["perf/images_per_s"] = rate
                logger.scalars(step, values)
                bar.set_postfix({**{k: f"{v:.3g}" for k, v in last.items()}, "img/s": f"{rate:.0f}"})
                tick, tick_step = now, step
            if step % t.sample_every == 0 or finishing:
                sample_grid(step)
            if evaluate is not None and step % cfg.eval.every == 0:
                began = time.monotonic()
                logger.scalars(step, evaluate(method))  # own RNG: the run is unchanged by it
                tick += time.monotonic() - began  # keep evaluation time out of images/s
            if step % t.ckpt_every == 0 or finishing:
                if meter.count:
                    read_meter(step)
                checkpoint(step)
                saved_step = step
            if out_of_time:
                bar.write(f"wall-time budget of {t.max_minutes} min spent at step {step}; checkpoint saved")
                break
    finally:
        bar.close()
        logger.close()
    return {"step": step, "run_dir": str(run.root), "metrics": last,
            "seconds": time.monotonic() - start_time}
