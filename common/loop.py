"""The one training loop, shared by every method.

It owns, once for all methods: device and seeds, the data stream, EMA, logging (progress bar,
TensorBoard, metrics.jsonl), sample grids, atomic checkpoints with exact resume, the NaN/inf guard and
the step and wall-time budgets. A method only supplies training_step / sample / state_dict.
"""
from __future__ import annotations

import random
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data import build_dataset, build_stream
from . import distributed
from .checkpoint import (config_differences, load_checkpoint, remove_stale_temporaries, require_same_model,
                         rng_state, save_checkpoint, set_rng_state)
from .config import Config, save_config
from .errors import ConfigError, Stopped, UserError
from .graphs import GraphedStep
from .images import save_grid, to_grid
from .logging import RunLogger
from .paths import require_writable
from .registry import get_method
from .signals import StopRequests


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


def check_fast_paths(cfg: Config, device: torch.device, ctx):
    if cfg.train.cuda_graph and device.type != "cuda":
        raise ConfigError("train.cuda_graph: CUDA graphs need a CUDA device; set train.cuda_graph=false")
    if cfg.train.cuda_graph and ctx.enabled:
        raise ConfigError("train.cuda_graph: not supported with several processes (DDP); "
                          "set train.cuda_graph=false or train.compile=true instead")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels


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


def build(cfg: Config, device, info=None, dataset=None):
    """The method of a config, on `device`, with EMA when the config asks for it."""
    info = info if info is not None else dataset.info
    check_data = getattr(cfg.model, "check_data", None)
    if check_data is not None:  # the data's shape against the architecture, before torch sees it
        check_data(info)
    method = get_method(cfg.method)(cfg, info, device)
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

    def read(self, ctx=None) -> dict[str, float]:
        """Means since the last read, averaged over ranks when distributed (one small all-reduce)."""
        if self.total is None:
            return {}
        total = self.total if ctx is None else distributed.all_mean(self.total, ctx)
        means = (total / self.count).tolist()
        self.total, self.count = None, 0
        return dict(zip(self.keys, means))


def train(cfg: Config, run_dir, resume: bool = False) -> dict:
    """Train `cfg` in `run_dir` (continuing its last checkpoint with `resume`); returns a summary.
    Under torchrun every process runs this; rank 0 alone writes logs, grids and checkpoints."""
    device = resolve_device(cfg.device)
    ctx = distributed.init(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    check_fast_paths(cfg, device, ctx)
    run = prepare_run_dir(run_dir, resume)
    seed_everything(cfg.seed)  # identical initial weights on every rank
    dataset = build_dataset(cfg.data, cfg.seed)
    cfg = get_method(cfg.method).resolve_config(cfg, dataset)  # deterministic, so resumes agree
    method = build(cfg, device, dataset=dataset)
    t = cfg.train
    stream = build_stream(dataset, cfg.data, t.batch_size * method.batches_per_step, device, cfg.seed,
                          ctx.rank, ctx.world)
    if ctx.enabled:
        seed_everything(cfg.seed + ctx.rank)  # but each rank its own noise

    step = 0
    if resume:
        ckpt = resume_state(run, cfg, dataset, method, device)
        for change in method.load_state_dict(ckpt["state"]):
            if ctx.main:
                print(f"resume: {change} (the config's optimizer settings replace the checkpoint's)")
        stream.load_state_dict(ckpt["data"])
        states = ckpt.get("rng_ranks") or [ckpt["rng"]]
        set_rng_state(states[ctx.rank % len(states)])  # exact when the number of ranks is unchanged
        step = int(ckpt["step"])
    if ctx.enabled:
        method.distribute(device)
    if ctx.main:
        save_config(cfg, run.root / "config.yaml")

    def checkpoint(at: int):
        states = distributed.gather_objects(rng_state(), ctx)  # a collective: every rank calls it
        if not ctx.main:
            return
        payload = {"method": cfg.method, "config": cfg.to_dict(), "data_info": dataset.info.to_dict(),
                   "step": at, "state": method.state_dict(), "data": stream.state_dict(),
                   "rng": states[0], **({"rng_ranks": states} if ctx.enabled else {})}
        save_checkpoint(run.last, payload)
        if t.keep_every and at % t.keep_every == 0:
            save_checkpoint(run.checkpoints / f"step_{at:07d}.pt", payload)

    def sample_grid(at: int):
        if not ctx.main:
            return
        gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # same noise every time
        samples = method.sample(t.n_samples, generator=gen)
        save_grid(samples, run.sample_path(at))
        logger.image("samples", at, to_grid(samples))

    def train_step(x):
        stats = method.training_step(x)
        method.update_ema()
        return stats

    step_fn = GraphedStep(train_step) if t.cuda_graph else train_step
    logger = RunLogger(run.root, start_step=step, enabled=ctx.main)
    evaluate = None
    if cfg.eval.every and ctx.main:
        from .metrics.evaluate import TrainingEvaluator  # torchmetrics is imported only when used
        evaluate = TrainingEvaluator(cfg, dataset, device)
    meter, last = Meter(), {}
    start_time = tick = time.monotonic()
    tick_step, saved_step, checked_step = step, step, step
    images_per_step = t.batch_size * method.batches_per_step * ctx.world
    bar = tqdm(total=t.steps, initial=step, dynamic_ncols=True, mininterval=1.0, desc=cfg.method,
               disable=not ctx.main)
    stop = StopRequests()  # SIGTERM/SIGINT: checkpoint at the next step boundary, then exit

    def read_meter(at: int) -> dict:
        nonlocal checked_step
        values = meter.read(ctx)
        bad = {k: v for k, v in values.items() if not np.isfinite(v)}
        if bad:
            kept = (f"the last good checkpoint is kept ({run.last}, step {saved_step})" if run.last.is_file()
                    else f"no checkpoint was written yet (delete {run.root} to start again)")
            advice = "lower the learning rates (optim.lr*)" + (
                " or use precision=fp32" if cfg.precision != "fp32" else "")
            raise Diverged(f"non-finite loss ({', '.join(f'{k}={v}' for k, v in bad.items())}) between "
                           f"steps {checked_step + 1} and {at}; {kept}: {advice}")
        checked_step = at
        return values

    def stop_reason(at: int) -> str | None:
        """None, "time" (the wall-time budget is spent) or a signal's name. Distributed: decided at
        log steps, by rank 0, for all."""
        if ctx.enabled and at % t.log_every:
            return None
        code = stop.signum or 0
        if not code and t.max_minutes is not None and time.monotonic() - start_time > 60 * t.max_minutes:
            code = -1
        code = distributed.broadcast_int(code, ctx, device)
        return None if code == 0 else "time" if code < 0 else signal.Signals(code).name

    method.train()
    with stop:
        try:
            while step < t.steps:
                x, _ = next(stream)
                if t.channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                meter.add(step_fn(x))
                step += 1
                bar.update(1)
                reason = stop_reason(step)
                finishing = step == t.steps or reason is not None
                signalled = reason not in (None, "time")  # keep to the checkpoint: a grace period is short
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
                if (step % t.sample_every == 0 or finishing) and not signalled:
                    sample_grid(step)
                if evaluate is not None and step % cfg.eval.every == 0 and not signalled:
                    began = time.monotonic()
                    logger.scalars(step, evaluate(method))  # own RNG: the run is unchanged by it
                    tick += time.monotonic() - began  # keep evaluation time out of images/s
                if step % t.ckpt_every == 0 or finishing:
                    if meter.count:
                        read_meter(step)
                    checkpoint(step)
                    saved_step = step
                if signalled:
                    raise Stopped(stop_message(reason, step, run), 128 + signal.Signals[reason].value)
                if reason == "time":
                    bar.write(f"wall-time budget of {t.max_minutes} min spent at step {step}; checkpoint saved")
                    break
        finally:
            bar.close()
            logger.close()
    distributed.barrier(ctx)
    return {"step": step, "run_dir": str(run.root), "metrics": last, "main": ctx.main,
            "seconds": time.monotonic() - start_time}
