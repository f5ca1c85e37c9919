"""The one interface every generative family implements, and what they all share (EMA, optimizers).

A method owns its networks and optimizers and exposes
    training_step(batch) -> dict of 0-dim tensors (every loss term; never synced here)
    sample(n, generator, ema=True, latents=None, progress=False) -> samples (images in [-1, 1] or
        points; `progress` shows a bar over a long sampler's steps)
    state_dict() / load_state_dict()
The training loop (common/loop.py) does everything else, once, for every method.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from .config import Config, OptimConfig, require
from .errors import CheckpointError
from .init import initialize


def ema_decay(decay: float, updates: torch.Tensor, warmup: bool = True) -> torch.Tensor:
    """The decay of update number `updates` (0, 1, ...): min(decay, (1 + t)/(10 + t)) with warm-up
    (TensorFlow's ExponentialMovingAverage with num_updates), else `decay`. Early averages then
    forget the random initialisation: at t = 0 the average is 90% the trained weights, and the
    warm-up ends when (1 + t)/(10 + t) reaches `decay` (t = 890 for 0.99, 8990 for 0.999)."""
    t = updates.to(torch.float32)
    ramp = (1 + t) / (10 + t) if warmup else torch.ones_like(t)
    return torch.clamp(ramp, max=decay)


OPTIMIZER_SETTINGS = ("lr", "betas", "eps", "weight_decay")  # from the config, even on resume


def _fmt(value) -> str:
    return str(tuple(_fmt(v) for v in value)).replace("'", "") if isinstance(value, (tuple, list)) else f"{value:g}"


STANDING_SAMPLES = 4000  # latents whose activations give an averaged generator's BatchNorm statistics


class EMA(AveragedModel):
    """torch's AveragedModel (same state: module.*, n_averaged) with an update that never syncs
    with the device, a warm-up, and buffers copied rather than averaged.

    W_ema <- d_t W_ema + (1 − d_t) W with d_t = ema_decay(decay, t): one foreach lerp whose weight
    is a device tensor, so a captured CUDA graph replays the schedule too. AveragedModel.update_parameters
    reads its step counter on the host every call, which would stall the stream each step.
    Buffers (BatchNorm running statistics) are copied, as EDM, StyleGAN and StudioGAN do: an
    average would carry d^t of the initial running_var (1.0, against true variances ~0.005 for
    a DCGAN generator at N(0, 0.02) init) for thousands of steps.
    """

    def __init__(self, module: nn.Module, decay: float, warmup: bool = True):
        super().__init__(module, use_buffers=True)
        self.decay, self.warmup = decay, warmup
        # AveragedModel makes its update counter on the CPU: keep it beside the weights, so that a
        # captured CUDA graph counts its replays too.
        self.n_averaged = self.n_averaged.to(next(module.parameters()).device)

    def current_decay(self) -> torch.Tensor:
        return ema_decay(self.decay, self.n_averaged, self.warmup)

    @torch.no_grad()
    def standing_statistics(self, batches) -> bool:
        """Recompute the average's BatchNorm statistics for its own weights (BigGAN's standing
        statistics; torch's update_bn: one pass in training mode, exact averages) from `batches`
        of inputs, once per set of weights. The copied statistics belong to the trained weights,
        which the average lags behind: after 2,000 DCGAN steps at decay 0.999 they were 107% off in
        variance. Returns whether it recomputed."""
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.module.modules()):
            return False
        version = int(self.n_averaged)
        if getattr(self, "_statistics_of", None) == version:
            return False
        update_bn(batches(), self.module)
        self._statistics_of = version
        return True

    @torch.no_grad()
    def update_parameters(self, model: nn.Module):
        params = list(self.module.parameters())
        if params:
            weight = 1 - self.current_decay().to(params[0].dtype)
            torch._foreach_lerp_(params, [p.detach() for p in model.parameters()], [weight] * len(params))
        for avg, cur in zip(self.module.buffers(), model.buffers(), strict=True):
            avg.copy_(cur)
        self.n_averaged += 1


def require_arch_fits_data(cfg: Config, **archs: tuple[str, str]):
    """Toy 2-D data takes MLPs and images take conv nets: model.<key> = (arch, its image choices)."""
    points = cfg.data.name == "toy"
    for key, (arch, image_archs) in archs.items():
        require(points == (arch == "mlp"),
                f"model.{key}: use mlp for toy 2-D data and {image_archs} for images")


class Method:
    """Base class: subclasses set the class attributes and fill `self.nets` and `self.optimizers`."""

    name: str = ""
    ModelConfig = None          # dataclass of the `model:` section
    OptimConfig = OptimConfig   # dataclass of the `optim:` section
    Config = None               # dataclass of the method's own section
    networks: tuple = ()        # names that `init:` may configure
    ema_networks: tuple = ()    # networks that samples come from, averaged when train.ema is set
    batches_per_step = 1        # real batches consumed by one training_step (n_critic for GANs)

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
        param_groups = [{"params": list(self.nets[n].parameters()), "lr": lr, "name": n}
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

    def autocast(self):
        """bf16 autocast for forward passes when precision: bf16 (backward stays outside)."""
        if self.cfg.precision == "bf16":
            # Autocast's cache of cast weights must be off when the step is captured as a CUDA graph.
            return torch.autocast(self.device.type, dtype=torch.bfloat16,
                                  cache_enabled=not self.cfg.train.cuda_graph)
        return contextlib.nullcontext()

    def module(self, name: str) -> nn.Module:
        """The network to train through: its DistributedDataParallel wrapper when distributed (so
        gradients are averaged across ranks in the backward pass), else the network itself."""
        return self.wrapped.get(name, self.nets[name])

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

    def net(self, name: str, ema: bool = True) -> nn.Module:
        """The network to sample with: its EMA copy when there is one and `ema` is asked for."""
        if ema and name in self.ema:
            return self.ema[name].module
        return self.nets[name]

    @torch.no_grad()
    def generate(self, name: str, n: int, generator=None, ema: bool = True, latents=None,
                 chunk: int = 500) -> torch.Tensor:
        """n samples of generator network `name` (z → x) in eval mode, from `latents` or fresh
        ones; the EMA copy's BatchNorm statistics are first recomputed for its weights."""
        if ema and name in self.ema:
            stats_gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 2)
            self.ema[name].standing_statistics(
                lambda: (self.sample_latents(chunk, stats_gen) for _ in range(STANDING_SAMPLES // chunk)))
        G = self.net(name, ema)
        z = self.sample_latents(n, generator) if latents is None else latents.to(self.device)
        was_training = G.training
        G.eval()  # BatchNorm uses its running statistics
        try:
            return torch.cat([G(part).float() for part in z.split(chunk)])
        finally:
            G.train(was_training)

    # -- used by the loop ---------------------------------------------------------------------------
    def enable_ema(self, decay: float):
        self.ema = {n: EMA(self.nets[n], decay, self.cfg.train.ema_warmup) for n in self.ema_networks}

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
                "ema": {k: e.state_dict() for k, e in self.ema.items()}}

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
        ema = state.get("ema", {})
        if ema and not self.ema:
            self.enable_ema(self.cfg.train.ema or 0.999)
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
                    if h in group and group[h] != settings.get(h):
                        changes.append(f"{group.get('name', k)} {h} {_fmt(group[h])} → {_fmt(settings.get(h))}")
                group.update(settings)
        return changes

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

