"""The one interface every generative family implements, and what they all share (EMA, optimizers).

A method owns its networks and optimizers and exposes
    training_step(batch, labels=None) -> dict of 0-dim tensors (every loss term; never synced here);
        `labels` are the batch's class labels, which a method that is not conditional ignores
    sample(n, generator, ema=True, latents=None, progress=False, labels=None) -> samples (images in
        [-1, 1] or points; `progress` shows a bar over a long sampler's steps; `labels` the classes
        of a class-conditional model's samples, drawn uniformly when not given)
    state_dict() / load_state_dict()
The training loop (engine/loop.py) does everything else, once, for every method. A method class
registers itself: `@register("method", "gan")` (common/registry.py).

Its networks live in `self.nets` (parameters, state, optimizers); a forward pass reaches them one of
two ways: `training_net(name)` to train through (the DistributedDataParallel wrapper when distributed)
and `sampling_net(name, ema)` to sample with (the EMA copy).

How the networks run (device, channels_last, torch.compile, autocast, fp16's scaler, CUDA-graph-safe
optimizers, DDP) is not the method's to decide: it asks its `runtime`, which the engine builds from the
config (engine/runtime.py). A method built without one runs plainly: eager, fp32, one process.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from .checkpoint import state_dict_mismatch
from .config import Config, OptimConfig
from .ema import EMA, STANDING_SAMPLES
from .errors import CheckpointError, ConfigError
from .init import initialize
from .optimism import optimistic
from .registry import lookup, names

OPTIMIZER_SETTINGS = ("lr", "betas", "eps", "weight_decay")  # from the config, even on resume


def _fmt(value) -> str:
    return str(tuple(_fmt(v) for v in value)).replace("'", "") if isinstance(value, (tuple, list)) else f"{value:g}"


def points_data(cfg: Config) -> bool:
    """Whether the config's data set holds 2-D points (registered with points=True), not images."""
    return getattr(lookup("dataset", cfg.data.name), "points", False)


def require_arch_fits_data(cfg: Config, kind: str, key: str = "arch"):
    """model.<key> names an architecture of `kind`: one registered with points=True for toy 2-D
    data, one without for images."""
    if getattr(lookup(kind, getattr(cfg.model, key)), "points", False) != points_data(cfg):
        for_points = [n for n in names(kind) if getattr(lookup(kind, n), "points", False)]
        for_images = [n for n in names(kind) if n not in for_points]
        raise ConfigError(f"model.{key}: use {'/'.join(for_points)} for toy 2-D data and "
                          f"{'/'.join(for_images)} for images")


class PlainRuntime:
    """The runtime of a method built outside the engine: its device, eager fp32 forwards, one process
    (engine/runtime.py's Runtime applies a config's fast paths, precision and DDP)."""

    precision = "fp32"

    def __init__(self, device):
        self.device = torch.device(device)

    def place(self, module: nn.Module) -> nn.Module:
        return module.to(self.device)

    def optimizer_options(self) -> dict:
        return {}

    def compiled(self, fn):
        return fn

    def autocast(self):
        return contextlib.nullcontext()

    def grad_scaler(self):
        return None

    def distribute(self, nets: nn.ModuleDict) -> dict[str, nn.Module]:
        raise RuntimeError("distributed training needs the engine's runtime (engine/runtime.py)")


class Method:
    """Base class: subclasses set the class attributes and fill `self.nets` and `self.optimizers`."""

    name: str = ""              # set by @register("method", name)
    ModelConfig = None          # dataclass of the `model:` section
    OptimConfig = OptimConfig   # dataclass of the `optim:` section
    Config = None               # dataclass of the method's own section
    networks: tuple = ()        # names that `init:` may configure
    ema_networks: tuple = ()    # networks that samples come from, averaged when train.ema is set
    batches_per_step = 1        # real batches consumed by one training_step (n_critic for GANs)
    batches_per_step_key = None  # the setting that makes it more than 1 (for messages)
    resume_may_change: tuple = ()  # own settings a resumed run may change (fnmatch; "{method}" is the name)
    fixed_by_training: tuple = ()  # own settings no loaded checkpoint may change: they say what its nets compute

    # Settings added since configs were first saved whose default is not what a saved config without
    # them meant: {section: {key: the value it had}}, filled into saved configs (checkpoints, a run's
    # config.yaml) that lack the key, by common.config.upgrade_saved. A config file takes the default.
    saved_defaults: dict = {}

    @classmethod
    def upgrade_config(cls, raw: dict) -> dict:
        """A raw config (a YAML mapping, after overrides) written by older code in today's form, so
        that old configs and checkpoints still load; the identity unless a method changed its keys."""
        return raw

    @classmethod
    def check_config(cls, cfg: Config):
        """Cross-section checks (raise ConfigError); sections are already type-checked."""

    @classmethod
    def needs_double_backward(cls, cfg: Config) -> bool:
        """Whether training differentiates through a gradient (energy scores, R1, GP)."""
        return False

    @classmethod
    def resolve_config(cls, cfg: Config, dataset) -> Config:
        """Fill values the config leaves to the data (e.g. σ_max: null → from the data set), so
        that config.yaml and checkpoints hold the numbers actually used. Must be deterministic:
        it runs again on resume (where the run's config already holds the values)."""
        return cfg

    def __init__(self, cfg: Config, info, device, runtime: PlainRuntime | None = None):
        classes = getattr(cfg.model, "num_classes", 0)
        if classes and classes != info.num_classes:
            raise ConfigError(f"model.num_classes: {classes}, but the data set {info.name} has {info.num_classes} "
                              f"classes; set model.num_classes={info.num_classes} (or 0: unconditional)")
        self.cfg, self.info, self.device = cfg, info, torch.device(device)
        self.runtime = runtime if runtime is not None else PlainRuntime(device)
        self.nets = nn.ModuleDict()
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.ema: dict[str, EMA] = {}
        self.wrapped: dict[str, nn.Module] = {}  # DDP wrappers used for training forwards
        self.scaler = self.runtime.grad_scaler()  # fp16's loss scaling, or None

    # -- building blocks for subclasses -------------------------------------------------------------
    def add_network(self, name: str, module: nn.Module) -> nn.Module:
        init = self.cfg.init.get(name)
        if init is not None:
            initialize(module, init)
        module = self.runtime.place(module)  # device, and the runtime's memory format and compilation
        self.nets[name] = module
        return module

    def adam(self, groups: dict[str, float]) -> torch.optim.Optimizer:
        """One Adam over the named networks, one parameter group each with its own learning rate
        (TTUR is per-group learning rates in one optimizer)."""
        o = self.cfg.optim
        # base_lr: the configured rate, which the schedule (set_lr_factor) scales into lr.
        param_groups = [{"params": list(self.nets[n].parameters()), "lr": lr, "base_lr": lr, "name": n}
                        for n, lr in groups.items()]
        cls = torch.optim.AdamW if o.weight_decay else torch.optim.Adam
        if o.optimistic:
            cls = optimistic(cls)
        return cls(param_groups, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay,
                   **self.runtime.optimizer_options())

    def compiled(self, fn):
        """`fn` as the runtime runs it: methods pass their whole training objective (every network's
        forward and the loss), which train.compile compiles to one graph (engine/runtime.py)."""
        return self.runtime.compiled(fn)

    def clip_gradients(self, *names):
        if self.cfg.optim.grad_clip is not None:
            for n in names:
                nn.utils.clip_grad_norm_(self.nets[n].parameters(), self.cfg.optim.grad_clip)

    def micro_batches(self, batch: torch.Tensor, labels: torch.Tensor | None = None) -> list[tuple]:
        """(images, labels) parts of train.micro_batch examples (gradient accumulation), or the
        whole batch as one part; labels None stay None."""
        m = self.cfg.train.micro_batch
        if m is None or m >= batch.shape[0]:
            return [(batch, labels)]
        return list(zip(batch.split(m), labels.split(m) if labels is not None else [None] * batch.shape[0]))

    @property
    def num_classes(self) -> int:
        """Classes of a class-conditional model (model.num_classes); 0 when unconditional."""
        return getattr(self.cfg.model, "num_classes", 0)

    def sample_labels(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """n classes drawn uniformly for a class-conditional model's samples; None when unconditional."""
        if not self.num_classes:
            return None
        return torch.randint(self.num_classes, (n,), device=self.device, generator=generator)

    def conditional_labels(self, labels, n: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """The classes of n samples: `labels` checked against the model (n of them, classes it
        knows), on the device; when not given, uniform ones for a class-conditional model (drawn
        with `generator`), None for an unconditional one."""
        if labels is None:
            return self.sample_labels(n, generator)
        if not self.num_classes:
            raise ConfigError("this model is not class-conditional (model.num_classes: 0): sample without classes")
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.device)
        if labels.shape != (n,) or labels.min() < 0 or labels.max() >= self.num_classes:
            raise ConfigError(f"labels: expected {n} classes in 0..{self.num_classes - 1}, got "
                              f"{labels.tolist() if labels.numel() <= 10 else tuple(labels.shape)}")
        return labels

    def optimizer_step(self, opt: torch.optim.Optimizer, objective, parts, *names: str) -> dict:
        """One update of `opt`: zero the gradients; for each part (a micro-batch, micro_batches),
        `objective(part)` → (loss, stats) and the backward of loss / len(parts), so that equal
        parts accumulate the whole batch's mean gradient (DDP averages across processes on the
        last part only); clip the named networks' gradients (optim.grad_clip); step. Under
        precision: fp16 each loss is scaled first and the gradients unscaled before clipping
        (torch.amp.GradScaler): a step whose gradients overflowed is skipped and the scale halved;
        it grows again after 2,000 clean steps. Returns the stats averaged over the parts."""
        parts = list(parts)
        opt.zero_grad(set_to_none=True)
        total = {}
        for i, part in enumerate(parts):
            with self.no_sync(i < len(parts) - 1):
                loss, stats = objective(part)
                if len(parts) > 1:
                    loss = loss / len(parts)
                (loss if self.scaler is None else self.scaler.scale(loss)).backward()
            total = {k: total[k] + v for k, v in stats.items()} if total else dict(stats)
        if self.scaler is None:
            self.clip_gradients(*names)
            opt.step()
        else:
            if self.cfg.optim.grad_clip is not None:
                self.scaler.unscale_(opt)
            self.clip_gradients(*names)
            self.scaler.step(opt)
            self.scaler.update()  # after every step: a training step may use one optimizer several times
        return {k: v / len(parts) for k, v in total.items()} if len(parts) > 1 else total

    def no_sync(self, skip: bool):
        """DDP's no_sync on every wrapped network when `skip` (a micro-batch before the last: its
        gradients are kept locally and all-reduced with the last one's)."""
        if not skip or not self.wrapped:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for module in self.wrapped.values():
            stack.enter_context(module.no_sync())
        return stack

    def set_lr_factor(self, factor: float):
        """Every parameter group's learning rate becomes its configured one times `factor`
        (common/lr_schedule.py)."""
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * factor

    def autocast(self):
        """The runtime's autocast for forward passes (bf16/fp16 when precision says so)."""
        return self.runtime.autocast()

    def training_net(self, name: str) -> nn.Module:
        """The network to train through: its DistributedDataParallel wrapper when distributed (so
        gradients are averaged across ranks in the backward pass), else the network itself."""
        return self.wrapped.get(name, self.nets[name])

    def sampling_net(self, name: str, ema: bool = True) -> nn.Module:
        """The network to sample with: its EMA copy when there is one and `ema` is asked for."""
        if ema and name in self.ema:
            return self.ema[name].module
        return self.nets[name]

    def warm_start(self):
        """A fresh run's step 0, before any training: where the config names another run's weights
        to start from (DDE's dde.teacher), load them. Resumed runs skip it (their checkpoint has all)."""

    def distribute(self):
        """Train through the runtime's DDP wrappers of the trained networks (torchrun); call after
        loading any checkpoint."""
        self.wrapped = self.runtime.distribute(self.nets)

    # -- used by the loop ---------------------------------------------------------------------------
    def enable_ema(self):
        """Average the sampled networks: with train.ema_halflife_kimg, EDM's half-life in images
        (a step being train.batch_size images, over all processes), else the per-step decay
        train.ema (0.999 when a checkpoint has an average and the config turns it off)."""
        t = self.cfg.train
        halflife = None
        if t.ema_halflife_kimg is not None:
            halflife = (t.batch_size, 1000 * t.ema_halflife_kimg, t.ema_rampup)
        self.ema = {n: EMA(self.nets[n], t.ema or 0.999, t.ema_warmup, halflife) for n in self.ema_networks}

    def update_ema(self):
        for n, avg in self.ema.items():
            avg.update_parameters(self.nets[n])

    def learning_rates(self) -> dict[str, float]:
        return {g.get("name", f"{k}{i}"): g["lr"] for k, opt in self.optimizers.items()
                for i, g in enumerate(opt.param_groups)}

    def train(self, mode: bool = True):
        self.nets.train(mode)
        return self

    def state_dict(self) -> dict:
        return {"nets": self.nets.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "ema": {k: e.state_dict() for k, e in self.ema.items()},
                **({"scaler": self.scaler.state_dict()} if self.scaler is not None else {})}

    def load_state_dict(self, state: dict, weights_only: bool = False) -> list[str]:
        """Load a checkpoint's method state; `weights_only` skips optimizers (for sampling). The
        optimizers keep the config's settings (lr, betas, eps, weight decay) and take only their
        state (moments, step counts) from the checkpoint, so that overrides on resume apply;
        returns the settings that changed, e.g. "G lr 0.0002 → 0.0001"."""
        try:
            self.nets.load_state_dict(state["nets"])
        except (RuntimeError, KeyError) as e:
            detail = state_dict_mismatch(e)[:200]
            raise CheckpointError(f"the checkpoint's networks do not fit this config's ({detail}): use "
                                  f"the checkpoint's own model settings") from None
        changes = [] if weights_only else self._load_optimizers(state.get("optimizers", {}))
        if self.scaler is not None and not weights_only and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])  # else (fp32/bf16 until now) a fresh scale
        ema = state.get("ema", {})
        if ema and not self.ema:
            self.enable_ema()
        for k, avg in self.ema.items():
            avg._statistics_of = None  # new weights: recompute standing statistics before sampling
            if k in ema:
                avg.load_state_dict(ema[k])
            else:
                avg.module.load_state_dict(self.nets[k].state_dict())
        return changes

    def _load_optimizers(self, saved: dict) -> list[str]:
        changes = []
        for k, opt in self.optimizers.items():
            if k not in saved:
                raise CheckpointError(f"the checkpoint has no optimizer {k!r} (it has {', '.join(saved)}): "
                                      f"resume with the run's own settings")
            wanted = [{h: v for h, v in g.items() if h != "params"} for g in opt.param_groups]
            try:
                opt.load_state_dict(saved[k])
            except (ValueError, KeyError, RuntimeError) as e:
                raise CheckpointError(f"the checkpoint's optimizer {k!r} does not fit this config's "
                                      f"({str(e).splitlines()[0][:160]}): resume with the run's own settings") from None
            for group, settings in zip(opt.param_groups, wanted):
                for h in OPTIMIZER_SETTINGS:
                    key = "base_lr" if h == "lr" else h  # the configured rate, not the scheduled one
                    saved_value = group.get(key, group.get(h))  # checkpoints before schedules: lr
                    if saved_value is not None and saved_value != settings.get(key):
                        changes.append(f"{group.get('name', k)} {h} {_fmt(saved_value)} → {_fmt(settings.get(key))}")
                group.update(settings)
        return changes

    def require_used(self, keys):
        """Raise ConfigError for a setting overridden at sampling time (dotted `keys`) that changes
        nothing for this model, e.g. a step count it ignores."""

    def example_inputs(self, name: str, n: int) -> tuple:
        """Inputs for network `name` at init, for diagnostics (scripts/init_report.py)."""
        return (torch.randn(n, *self.info.shape, device=self.device),)

    # -- what each method defines -------------------------------------------------------------------
    def training_step(self, batch: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, ema: bool = True,
               latents: torch.Tensor | None = None, progress: bool = False,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    @property
    def sampling_precision(self) -> str:
        """The precision `sample` runs the networks in: fp32 (a denoising method's nets run in the
        run's own precision, under its autocast)."""
        return "fp32"

    def evaluations_per_sample(self) -> int | None:
        """Network passes one sample costs under the configured sampler (None: it cannot say)."""
        return None


class GeneratorMethod(Method):
    """A method whose samples are one pass of a generator network G: z → x, z ~ N(0, I) of size
    model.z_dim (the GANs, DDE)."""

    def sample_latents(self, n, generator=None):
        return torch.randn(n, self.cfg.model.z_dim, device=self.device, generator=generator)

    def example_inputs(self, name, n):
        return (self.sample_latents(n),) if name == "G" else super().example_inputs(name, n)

    def evaluations_per_sample(self) -> int:
        return 1

    @torch.no_grad()
    def sample(self, n, generator=None, ema=True, latents=None, progress=False, labels=None, chunk: int = 500):
        """n samples of G (one network pass: no progress to show) in eval mode, from `latents` or
        fresh ones, of the classes `labels` (class-conditional G; uniform when not given); the EMA
        copy's BatchNorm statistics are first recomputed for its weights (on uniform classes)."""
        if ema and "G" in self.ema:
            stats_gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 2)
            self.ema["G"].standing_statistics(
                lambda: ((self.sample_latents(chunk, stats_gen), *self._label_args(chunk, stats_gen))
                         for _ in range(STANDING_SAMPLES // chunk)))
        G = self.sampling_net("G", ema)
        z = self.sample_latents(n, generator) if latents is None else latents.to(self.device)
        labels = self.conditional_labels(labels, len(z), generator)
        was_training = G.training
        G.eval()  # BatchNorm uses its running statistics
        try:
            if labels is None:
                return torch.cat([G(part).float() for part in z.split(chunk)])
            return torch.cat([G(part, y).float() for part, y in zip(z.split(chunk), labels.split(chunk))])
        finally:
            G.train(was_training)

    def _label_args(self, n, generator):
        labels = self.sample_labels(n, generator)
        return () if labels is None else (labels,)
