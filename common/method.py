"""The one interface every generative family implements, and what they all share (EMA, optimizers).

A method owns its networks and optimizers and exposes
    training_step(batch) -> dict of 0-dim tensors (every loss term; never synced here)
    sample(n, generator, ema=True, latents=None, progress=False) -> samples (images in [-1, 1] or
        points; `progress` shows a bar over a long sampler's steps)
    state_dict() / load_state_dict()
The training loop (engine/loop.py) does everything else, once, for every method. A method class
registers itself: `@register("method", "gan")` (common/registry.py).

Its networks live in `self.nets` (parameters, state, optimizers); a forward pass reaches them one of
two ways: `training_net(name)` to train through (the DistributedDataParallel wrapper when distributed)
and `sampling_net(name, ema)` to sample with (the EMA copy).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from .config import Config, OptimConfig
from .ema import EMA, STANDING_SAMPLES
from .errors import CheckpointError, ConfigError
from .init import initialize
from .registry import lookup, names

OPTIMIZER_SETTINGS = ("lr", "betas", "eps", "weight_decay")  # from the config, even on resume
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


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

    def __init__(self, cfg: Config, info, device):
        self.cfg, self.info, self.device = cfg, info, torch.device(device)
        self.nets = nn.ModuleDict()
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.ema: dict[str, EMA] = {}
        self.wrapped: dict[str, nn.Module] = {}  # DDP wrappers used for training forwards
        # fp16's loss scaling (bf16 has fp32's range and needs none)
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.precision == "fp16" else None

    # -- building blocks for subclasses -------------------------------------------------------------
    def add_network(self, name: str, module: nn.Module) -> nn.Module:
        init = self.cfg.init.get(name)
        if init is not None:
            initialize(module, init)
        module = module.to(self.device)
        if self.cfg.train.channels_last:
            module = module.to(memory_format=torch.channels_last)  # 4-D weights become NHWC
        if self.cfg.train.compile:
            module.compile()  # for sampling; a compiled training objective inlines it (Method.compiled)
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
        # A captured CUDA graph needs the optimizer's step counters on the device (capturable).
        extra = {"fused": True} if o.fused else {}
        if self.cfg.train.cuda_graph:
            extra["capturable"] = True
        return cls(param_groups, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay, **extra)

    def compiled(self, fn):
        """`fn` under torch.compile when train.compile is set, else `fn`. Methods pass their whole
        training objective (every network's forward and the loss), which compiles to one graph:
        AOTAutograd then makes its backward one graph too. Cached per function."""
        if not self.cfg.train.compile:
            return fn
        cache = self.__dict__.setdefault("_compiled", {})
        if fn not in cache:
            cache[fn] = torch.compile(fn)
        return cache[fn]

    def clip_gradients(self, *names):
        if self.cfg.optim.grad_clip is not None:
            for n in names:
                nn.utils.clip_grad_norm_(self.nets[n].parameters(), self.cfg.optim.grad_clip)

    def micro_batches(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`batch` in parts of train.micro_batch examples (gradient accumulation), or whole."""
        m = self.cfg.train.micro_batch
        return batch.split(m) if m is not None and m < batch.shape[0] else (batch,)

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
        """bf16 or fp16 autocast for forward passes when precision says so (backward stays outside)."""
        if self.cfg.precision in AUTOCAST:
            # Autocast's cache of cast weights must be off when the step is captured as a CUDA graph.
            return torch.autocast(self.device.type, dtype=AUTOCAST[self.cfg.precision],
                                  cache_enabled=not self.cfg.train.cuda_graph)
        return contextlib.nullcontext()

    def training_net(self, name: str) -> nn.Module:
        """The network to train through: its DistributedDataParallel wrapper when distributed (so
        gradients are averaged across ranks in the backward pass), else the network itself."""
        return self.wrapped.get(name, self.nets[name])

    def sampling_net(self, name: str, ema: bool = True) -> nn.Module:
        """The network to sample with: its EMA copy when there is one and `ema` is asked for."""
        if ema and name in self.ema:
            return self.ema[name].module
        return self.nets[name]

    def distribute(self, device):
        """Wrap every trained network in DDP (torchrun); call after loading any checkpoint.

        Buffers (BatchNorm running statistics) are not broadcast: a GAN step calls D several times
        within one backward, and DDP's broadcast before each forward overwrites, in place, buffers
        that the earlier calls' backward still holds (an autograd error on torch 2.11). Each rank
        keeps its own statistics, which training-mode forwards never read; rank 0's are saved."""
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [device.index] if device.type == "cuda" else None
        self.wrapped = {n: DDP(m, device_ids=ids, broadcast_buffers=False) for n, m in self.nets.items()
                        if any(p.requires_grad for p in m.parameters())}

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
            first = str(e).strip().splitlines()
            detail = next((line.strip() for line in first[1:] if line.strip()), first[0] if first else "")
            raise CheckpointError(f"the checkpoint's networks do not fit this config's ({detail[:200]}): use "
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
    def training_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, ema: bool = True,
               latents: torch.Tensor | None = None, progress: bool = False) -> torch.Tensor:
        raise NotImplementedError


class GeneratorMethod(Method):
    """A method whose samples are one pass of a generator network G: z → x, z ~ N(0, I) of size
    model.z_dim (the GANs, DDE)."""

    def sample_latents(self, n, generator=None):
        return torch.randn(n, self.cfg.model.z_dim, device=self.device, generator=generator)

    def example_inputs(self, name, n):
        return (self.sample_latents(n),) if name == "G" else super().example_inputs(name, n)

    @torch.no_grad()
    def sample(self, n, generator=None, ema=True, latents=None, progress=False, chunk: int = 500):
        """n samples of G (one network pass: no progress to show) in eval mode, from `latents` or
        fresh ones; the EMA copy's BatchNorm statistics are first recomputed for its weights."""
        if ema and "G" in self.ema:
            stats_gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 2)
            self.ema["G"].standing_statistics(
                lambda: (self.sample_latents(chunk, stats_gen) for _ in range(STANDING_SAMPLES // chunk)))
        G = self.sampling_net("G", ema)
        z = self.sample_latents(n, generator) if latents is None else latents.to(self.device)
        was_training = G.training
        G.eval()  # BatchNorm uses its running statistics
        try:
            return torch.cat([G(part).float() for part in z.split(chunk)])
        finally:
            G.train(was_training)
