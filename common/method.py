"""The one interface every generative family implements, and what they all share (EMA, optimizers).

A method owns its networks and optimizers and exposes
    training_step(batch) -> dict of 0-dim tensors (every loss term; never synced here)
    sample(n, generator, ema=True, latents=None) -> samples (images in [-1, 1] or points)
    state_dict() / load_state_dict()
The training loop (common/loop.py) does everything else, once, for every method.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .config import Config, OptimConfig, require
from .init import initialize


class EMA(AveragedModel):
    """torch's AveragedModel with an update that never syncs with the device.

    AveragedModel.update_parameters reads its step counter on the host every call, which stalls a
    CUDA stream each step; here the average starts as a copy of the network and every update is
    one foreach lerp, W_ema <- decay W_ema + (1 - decay) W (buffers averaged too, integer ones copied).
    """

    def __init__(self, module: nn.Module, decay: float):
        super().__init__(module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.decay = decay
        # AveragedModel makes its update counter on the CPU: keep it beside the weights, so that a
        # captured CUDA graph counts its replays too.
        self.n_averaged = self.n_averaged.to(next(module.parameters()).device)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module):
        pairs = zip(list(self.module.parameters()) + list(self.module.buffers()),
                    list(model.parameters()) + list(model.buffers()), strict=True)
        floats, sources = [], []
        for avg, cur in pairs:
            if avg.is_floating_point():
                floats.append(avg)
                sources.append(cur.detach())
            else:
                avg.copy_(cur)
        if floats:
            self.multi_avg_fn(floats, sources, None)
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

    def adam(self, groups: dict[str, float], names=None) -> torch.optim.Optimizer:
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

    # -- used by the loop ---------------------------------------------------------------------------
    def enable_ema(self, decay: float):
        self.ema = {n: EMA(self.nets[n], decay) for n in self.ema_networks}

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

    def load_state_dict(self, state: dict, weights_only: bool = False):
        """Load a checkpoint's method state; `weights_only` skips optimizers (for sampling)."""
        self.nets.load_state_dict(state["nets"])
        if not weights_only:
            for k, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][k])
        ema = state.get("ema", {})
        if ema and not self.ema:
            self.enable_ema(self.cfg.train.ema or 0.999)
        for k, avg in self.ema.items():
            if k in ema:
                avg.load_state_dict(ema[k])
            else:
                avg.module.load_state_dict(self.nets[k].state_dict())

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
               latents: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

