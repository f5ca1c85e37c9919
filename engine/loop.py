"""The one training loop, shared by every method.

It owns, once for all methods: device and seeds, the data stream, EMA, logging (progress bar,
TensorBoard, metrics.jsonl), sample grids, atomic checkpoints with exact resume, the NaN/inf guard and
the step and wall-time budgets. A method only supplies training_step / sample / state_dict.
`train` reads top to bottom; each thing it does once per step or per period is a function below it.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from common.checkpoint import rng_state, save_checkpoint, set_rng_state
from common.config import Config, dataset_splits, save_config
from common.errors import ConfigError, DataError, Stopped, UserError
from common import lr_schedule
from common.graphs import GraphedStep
from common.registry import lookup
from common.signals import StopRequested, StopRequests
from data import build_dataset, build_stream
from . import distributed
from .build import build, resolve_device, seed_everything
from .images import save_grid, to_grid
from .logging import RunLogger
from .run_dir import RunDir, prepare_run_dir, resume_state, stop_message


class Diverged(UserError):
    """A loss became NaN or inf, or ran away (RUNAWAY); the run stops without writing a checkpoint."""


def train(cfg: Config, run_dir, resume: bool = False) -> dict:
    """Train `cfg` in `run_dir` (continuing its last checkpoint with `resume`); returns a summary.
    Under torchrun every process runs this; rank 0 alone writes logs, grids and checkpoints, and
    holds the run directory's lock (one writer) until the run ends."""
    device, ctx = devices(cfg)
    with prepare_run_dir(run_dir, resume, lock=ctx.main) as run:
        return run_training(cfg, run, resume, device, ctx)


def run_training(cfg: Config, run: RunDir, resume: bool, device, ctx) -> dict:
    seed_everything(cfg.seed)  # identical initial weights on every rank
    dataset = build_dataset(cfg.data, cfg.seed)
    cfg = lookup("method", cfg.method).resolve_config(cfg, dataset)  # deterministic, so resumes agree
    cfg = record_used(cfg, dataset, device, ctx)
    method = build(cfg, device, dataset=dataset)
    t = cfg.train
    per_process = process_batch(t, ctx.world)
    require_batches(dataset, per_process, method, ctx.world)
    stream = build_stream(dataset, cfg.data, per_process * method.batches_per_step, device, cfg.seed,
                          ctx.rank, ctx.world)
    if ctx.enabled:
        seed_everything(cfg.seed + ctx.rank)  # but each rank its own noise
    if resume:
        step, trained_s = resume_from(run, cfg, dataset, method, stream, ctx)
        warm_s = 0.0
    else:
        step, trained_s, started = 0, 0.0, time.monotonic()
        method.warm_start()  # weights from another run, where the method takes any (DDE's dde.teacher)
        # its time is training time (train.max_minutes): DDE's regression pairs are drawn there
        warm_s = time.monotonic() - started
    if ctx.enabled:
        method.distribute()
    if ctx.main:
        save_config(cfg, run.root / "config.yaml")

    step_fn = functools.partial(train_step, method)
    if t.cuda_graph:
        step_fn = GraphedStep(step_fn)
    logger = RunLogger(run.root, start_step=step, enabled=ctx.main)
    shown = cfg.to_dict()  # with `precision: auto` as what it is here (config.yaml keeps "auto")
    if cfg.precision == "auto":
        shown["precision"] = f"auto: {method.runtime.precision} on this {device.type}"
        if ctx.main:
            print(f"precision: {shown['precision']}")
    logger.config(step, shown)
    probe = probe_batches(cfg, dataset, method) if ctx.main else None
    evaluate = None
    if cfg.eval.every and ctx.main:
        from .evaluation.evaluate import TrainingEvaluator  # torchmetrics is imported only when used
        evaluate = TrainingEvaluator(cfg, dataset, device)
    meter, last, scale = Meter(), {}, {}
    over_minutes = cfg.optim.schedule_over == "minutes"
    clock = Clock(trained_s, whole_run=over_minutes, spent=warm_s)
    tick = clock.start + warm_s  # images/s: of the steps only
    tick_step, saved_step, checked_step = step, step, step
    images_per_step = t.batch_size * method.batches_per_step
    bar = tqdm(total=t.steps, initial=step, dynamic_ncols=True, mininterval=1.0, desc=cfg.method,
               disable=not ctx.main)
    stop = StopRequests()  # SIGTERM/SIGINT: checkpoint at the next step boundary, then exit
    scheduled, spent = lr_schedule.scheduled(cfg.optim), None
    guard = functools.partial(checked_means, meter, ctx, run=run, precision=method.runtime.precision,
                              scale=scale)

    method.train()
    with stop:
        try:
            while step < t.steps:
                x, y = next(stream)
                if scheduled:
                    if over_minutes and (spent is None or not ctx.enabled or step % t.log_every == 0):
                        spent = budget_spent(clock, t, ctx, device)  # distributed: at log steps, as stops
                    method.set_lr_factor(lr_schedule.lr_factor(cfg.optim, step, t.steps, spent))
                if t.channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                meter.add(step_fn(x, y) if method.num_classes else step_fn(x))
                step += 1
                bar.update(1)
                reason = stop_reason(step, stop, cfg, ctx, device, clock)
                if reason in (None, "time"):  # grids and evaluation; they give way to a stop request
                    began = time.monotonic()
                    try:
                        periodic_phases(step, step == t.steps or reason == "time", run, cfg, method, logger,
                                        evaluate, probe, device, ctx)
                    except StopRequested as e:
                        if not ctx.enabled:  # distributed: rank 0 stops all at the next decision
                            reason = signal.Signals(e.signum).name
                    tick += time.monotonic() - began  # keep grids and evaluation out of images/s
                finishing = step == t.steps or reason is not None
                signalled = reason not in (None, "time")  # keep to the checkpoint: a grace period is short
                if step % t.log_every == 0 or finishing:
                    now = time.monotonic()
                    last = guard(checked_step, step, saved_step)
                    checked_step = step
                    rate = (step - tick_step) * images_per_step / max(now - tick, 1e-9)
                    values = {f"loss/{k}": v for k, v in last.items()}
                    values.update({f"lr/{k}": v for k, v in method.learning_rates().items()})
                    values["perf/images_per_s"] = rate
                    logger.scalars(step, values)
                    bar.set_postfix({**{k: f"{v:.3g}" for k, v in last.items()}, "img/s": f"{rate:.0f}"})
                    tick, tick_step = now, step
                if step % t.ckpt_every == 0 or finishing:
                    if meter.count:
                        guard(checked_step, step, saved_step)
                        checked_step = step
                    save_state(step, run, cfg, dataset, method, stream, ctx, clock.total())
                    saved_step = step
                if signalled:
                    raise Stopped(stop_message(reason, step, run), 128 + signal.Signals[reason].value)
                if reason == "time":
                    bar.write(f"wall-time budget of {t.max_minutes} min spent at step {step}; checkpoint saved")
                    break
            if stop.signum:  # arrived during the last step's grid or checkpoint: saved, but say so
                raise Stopped(stop_message(stop.name, step, run), 128 + stop.signum)
        finally:
            bar.close()
            logger.finish(step, shown, sys.exc_info()[1])  # however it ends; never hiding why it did
    distributed.barrier(ctx)
    return {"step": step, "run_dir": str(run.root), "metrics": last, "main": ctx.main,
            "seconds": clock.session(), "precision": method.runtime.precision}


def record_used(cfg: Config, dataset, device, ctx) -> Config:
    """The config as run, for config.yaml and the checkpoints: the device used rather than `auto`
    (its type under torchrun, where each process has its own), and where the data was read from
    as an absolute path (the folder a search found, e.g. the system's Fashion-MNIST, rather than
    the default data.root)."""
    data = cfg.data
    if not getattr(lookup("dataset", data.name), "points", False):
        root = getattr(dataset, "found_in", None) or Path(data.root).absolute()
        path = str(Path(data.path).absolute()) if data.path else None
        data = dataclasses.replace(data, root=str(root), path=path)
    return dataclasses.replace(cfg, device=device.type if ctx.enabled else str(device), data=data)


def process_batch(t, world: int) -> int:
    """Each process's share of train.batch_size (the global batch), which train.micro_batch must
    divide; one line naming the setting otherwise."""
    if t.batch_size % world:
        raise ConfigError(f"train.batch_size: {t.batch_size} examples per step cannot be shared equally by "
                          f"{world} processes; use a multiple of {world}")
    per_process = t.batch_size // world
    if t.micro_batch is not None and per_process % t.micro_batch:
        raise ConfigError(f"train.micro_batch: must divide each process's {per_process} examples (train.batch_size "
                          f"{t.batch_size} over {world} processes), got {t.micro_batch}")
    return per_process


def require_batches(dataset, batch_size: int, method, world: int):
    """A step reads batch_size × batches_per_step examples per process (n_critic batches for a
    GAN): one line naming the setting when the data set (per process) holds fewer."""
    need, have = batch_size * method.batches_per_step, len(dataset) // world
    if method.batches_per_step > 1 and need > have:
        key = method.batches_per_step_key
        raise DataError(f"{key}={method.batches_per_step}: a step reads train.batch_size × {key} = {need} "
                        f"examples, more than the data set's {have} per process: lower {key} (or train.batch_size)")


def periodic_phases(at: int, finishing: bool, run: RunDir, cfg: Config, method, logger: RunLogger, evaluate,
                    probe, device, ctx):
    """The sample grid and a denoiser's DSM probe (every train.sample_every steps and at the end)
    and the evaluation (every eval.every steps); they raise StopRequested between their steps once
    a stop is requested."""
    if (at % cfg.train.sample_every == 0 or finishing) and ctx.main:
        write_samples(at, run, cfg, method, logger, device)
        if probe:
            logger.scalars(at, method.probe(probe))
    if evaluate is not None and at % cfg.eval.every == 0:
        logger.scalars(at, evaluate(method))  # own RNG: the run is unchanged by it


PROBE_IMAGES = 64  # fixed training and test images of a denoiser's DSM-by-σ curves


def probe_batches(cfg: Config, dataset, method) -> dict | None:
    """Fixed images for a method's `probe` (a denoiser's DSM loss by noise band): PROBE_IMAGES of
    the training set and as many of its test split when the data set has one that can be read
    (else the training curves alone, with a note). Chosen by their own generator."""
    if getattr(method, "probe", None) is None:
        return None
    from denoising.method import data_sample  # the one helper that draws fixed examples of any data set
    batches = {"train": data_sample(dataset, PROBE_IMAGES, cfg.seed)}
    if "test" in dataset_splits(cfg.data.name) and cfg.data.split != "test":
        try:
            test = build_dataset(dataclasses.replace(cfg.data, split="test"), cfg.seed)
            batches["test"] = data_sample(test, PROBE_IMAGES, cfg.seed)
        except DataError as e:
            print(f"note: no held-out DSM curves ({str(e).splitlines()[0][:160]})")
    return batches


def devices(cfg: Config) -> tuple[torch.device, distributed.Context]:
    """The training device (this rank's GPU under torchrun) and the process group, with the fast
    paths checked against them."""
    device = resolve_device(cfg.device)
    ctx = distributed.init(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    if cfg.train.cuda_graph and device.type != "cuda":
        raise ConfigError("train.cuda_graph: CUDA graphs need a CUDA device; set train.cuda_graph=false")
    if cfg.train.cuda_graph and ctx.enabled:
        raise ConfigError("train.cuda_graph: not supported with several processes (DDP); "
                          "set train.cuda_graph=false or train.compile=true instead")
    set_determinism(cfg.train.deterministic)
    return device, ctx


def set_determinism(deterministic: bool):
    """Deterministic kernels, or cuDNN's autotuner (fixed shapes: let it pick its fastest kernels, at
    the cost of bitwise repeatability on a GPU). Set both ways, so that one run's choice never leaks
    into the next one in the same process."""
    if deterministic:  # cuBLAS's reductions repeat only with a fixed workspace (read at its first use)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def resume_from(run: RunDir, cfg: Config, dataset, method, stream, ctx) -> tuple[int, float]:
    """Load the run's last checkpoint into the method, the data stream and the RNGs; its step and
    the seconds it has trained (0 for a checkpoint written before they were kept)."""
    ckpt = resume_state(run, cfg, dataset, method)
    for change in method.load_state_dict(ckpt["state"]):
        if ctx.main:
            print(f"resume: {change} (the config's optimizer settings replace the checkpoint's)")
    stream.load_state_dict(ckpt["data"])
    states = ckpt.get("rng_ranks") or [ckpt["rng"]]
    set_rng_state(states[ctx.rank % len(states)])  # exact when the number of ranks is unchanged
    return int(ckpt["step"]), float(ckpt.get("seconds", 0.0))


def train_step(method, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
    """One optimizer step and the EMA update: the unit a CUDA graph captures."""
    stats = method.training_step(x) if labels is None else method.training_step(x, labels)
    method.update_ema()
    return stats


class Meter:
    """Running sums of a step's scalars, kept on the device: no host sync until they are read.
    Non-finite values are sticky in a sum, so reading it also checks every step since the last read."""

    def __init__(self):
        self.keys, self.total, self.count = None, None, 0
        self.first = None  # the first step's values: the losses at the weights the run started from

    def add(self, stats: dict):
        values = torch.stack([v.detach().float() for v in stats.values()])
        if self.first is None:
            self.first = values
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


# A logged loss this many times its size at the run's first step (taken as at least 1) has run away:
# with learning rates of 1e6, d_real went from 0.01 to 3.7e14 within 10 steps and stayed there,
# finite, to the end of the run.
RUNAWAY = 1e6


def checked_means(meter: Meter, ctx, checked_step: int, at: int, saved_step: int, *, run: RunDir, precision: str,
                  scale: dict) -> dict[str, float]:
    """The meter's means over steps checked_step + 1 .. at; Diverged if any is NaN or inf, or has
    grown RUNAWAY-fold over its size at the first step (kept in `scale`)."""
    if not scale and meter.first is not None:
        first = dict(zip(meter.keys, distributed.all_mean(meter.first, ctx).tolist()))  # ranks agree
        scale.update({k: max(1.0, abs(v)) if np.isfinite(v) else 1.0 for k, v in first.items()})
    values = meter.read(ctx)
    bad = {k: v for k, v in values.items() if not np.isfinite(v)}
    runaway = {k: v for k, v in values.items() if k not in bad and abs(v) > RUNAWAY * scale.get(k, 1.0)}
    if not bad and not runaway:
        return values
    kept = (f"the last good checkpoint is kept ({run.last}, step {saved_step})" if run.last.is_file()
            else f"no checkpoint was written yet (delete {run.root} to start again)")
    advice = "lower the learning rates (optim.lr*)" + (" or use precision=fp32" if precision != "fp32" else "")
    if bad:
        what = f"non-finite loss ({', '.join(f'{k}={v}' for k, v in bad.items())})"
    else:
        k = max(runaway, key=lambda key: abs(runaway[key]) / scale.get(key, 1.0))
        what = (f"runaway loss ({k}={runaway[k]:.3g}, {abs(runaway[k]) / scale.get(k, 1.0):.2g}× its size at "
                f"the first step{f'; {len(runaway) - 1} more' if len(runaway) > 1 else ''})")
    raise Diverged(f"{what} between steps {checked_step + 1} and {at}; {kept}: {advice}")


class Clock:
    """Seconds of training: this session's, and the run's (the sessions before it, from the
    checkpoint, plus this one). train.max_minutes budgets each session, or the whole run when the
    learning-rate schedule runs over it (optim.schedule_over: minutes), as train.steps does."""

    def __init__(self, before: float = 0.0, whole_run: bool = False, spent: float = 0.0):
        """`before`: the run's earlier sessions; `spent`: seconds of this session already trained."""
        self.before, self.whole_run, self.start = before, whole_run, time.monotonic() - spent

    def session(self) -> float:
        return time.monotonic() - self.start

    def total(self) -> float:
        return self.before + self.session()

    def budgeted(self) -> float:
        """The seconds train.max_minutes counts: the whole run's or this session's."""
        return self.total() if self.whole_run else self.session()


def budget_spent(clock: Clock, t, ctx, device) -> float:
    """The fraction of train.max_minutes the run has trained, on rank 0's clock for every rank (their
    learning rates must agree)."""
    return distributed.broadcast_float(clock.budgeted(), ctx, device) / (60 * t.max_minutes)


def stop_reason(at: int, stop: StopRequests, cfg: Config, ctx, device, clock: Clock) -> str | None:
    """None, "time" (the wall-time budget is spent) or a signal's name. Distributed: decided at
    log steps, by rank 0, for all."""
    t = cfg.train
    if ctx.enabled and at % t.log_every:
        return None
    code = stop.signum or 0
    if not code and t.max_minutes is not None and clock.budgeted() > 60 * t.max_minutes:
        code = -1
    code = distributed.broadcast_int(code, ctx, device)
    return None if code == 0 else "time" if code < 0 else signal.Signals(code).name


def write_samples(at: int, run: RunDir, cfg: Config, method, logger: RunLogger, device):
    """A grid of train.n_samples samples, from the same noise every time, to samples/ and TensorBoard;
    a class-conditional model's with one row per class."""
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    labels, nrow = class_rows(method.num_classes, cfg.train.n_samples, device)
    samples = method.sample(len(labels) if labels is not None else cfg.train.n_samples, generator=gen,
                            progress=True, labels=labels)  # a bar if it takes > 2 s
    save_grid(samples, run.sample_path(at), nrow=nrow)
    logger.image("samples", at, to_grid(samples, nrow))


def class_rows(num_classes: int, n: int, device) -> tuple[torch.Tensor | None, int | None]:
    """Labels for a grid with one row per class, about n samples in all (at least one column), and
    its row length; (None, None) for an unconditional model."""
    if not num_classes:
        return None, None
    cols = max(1, n // num_classes)
    return torch.arange(num_classes, device=device).repeat_interleave(cols), cols


def save_state(at: int, run: RunDir, cfg: Config, dataset, method, stream, ctx, seconds: float):
    """checkpoints/last.pt (and step_XXXXXXX.pt every train.keep_every steps): everything a resumed
    run needs, with every rank's RNG state and the seconds trained. A collective: every rank calls
    it, rank 0 writes."""
    states = distributed.gather_objects(rng_state(), ctx)
    if not ctx.main:
        return
    payload = {"method": cfg.method, "config": cfg.to_dict(), "data_info": dataset.info.to_dict(),
               "step": at, "seconds": seconds, "state": method.state_dict(), "data": stream.state_dict(),
               "rng": states[0], **({"rng_ranks": states} if ctx.enabled else {})}
    save_checkpoint(run.last, payload)
    if cfg.train.keep_every and at % cfg.train.keep_every == 0:
        save_checkpoint(run.checkpoints / f"step_{at:07d}.pt", payload)
