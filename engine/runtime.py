"""How a method's networks run here: the runtime policy a config's `train:` and `precision:` settings
choose, applied by the engine to any method (common/method.py's Method asks its runtime; it decides
nothing of this itself).

    place(module)        to the device; channels_last (NHWC weights); torch.compile for sampling
    optimizer_options()  fused Adam; capturable step counters for a captured CUDA graph
    compiled(fn)         a training objective under torch.compile, whole (one graph, one backward)
    autocast()           bf16 or fp16 autocast of forward passes (backward stays outside)
    grad_scaler()        fp16's loss scaling (torch.amp.GradScaler); bf16 has fp32's range and needs none
    distribute(nets)     DistributedDataParallel wrappers of the trained networks (torchrun)
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from common.method import PlainRuntime

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Runtime(PlainRuntime):
    """The runtime of a config (engine/build.py gives it to every method it builds)."""

    def __init__(self, cfg, device):
        super().__init__(device)
        self.train, self.optim, self.precision = cfg.train, cfg.optim, cfg.precision
        self._compiled = {}

    def place(self, module: nn.Module) -> nn.Module:
        module = module.to(self.device)
        if self.train.channels_last:
            module = module.to(memory_format=torch.channels_last)  # 4-D weights become NHWC
        if self.train.compile:
            module.compile()  # for sampling; a compiled training objective inlines it (compiled())
        return module

    def optimizer_options(self) -> dict:
        extra = {"fused": True} if self.optim.fused else {}
        if self.train.cuda_graph:  # a captured graph needs the step counters on the device
            extra["capturable"] = True
        return extra

    def compiled(self, fn):
        """`fn` under torch.compile when train.compile is set, else `fn`. Methods pass their whole
        training objective (every network's forward and the loss), which compiles to one graph:
        AOTAutograd then makes its backward one graph too. Cached per function."""
        if not self.train.compile:
            return fn
        if fn not in self._compiled:
            self._compiled[fn] = torch.compile(fn)
        return self._compiled[fn]

    def autocast(self):
        if self.precision in AUTOCAST:
            # Autocast's cache of cast weights must be off when the step is captured as a CUDA graph.
            return torch.autocast(self.device.type, dtype=AUTOCAST[self.precision],
                                  cache_enabled=not self.train.cuda_graph)
        return contextlib.nullcontext()

    def grad_scaler(self):
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    def distribute(self, nets: nn.ModuleDict) -> dict[str, nn.Module]:
        """DDP wrappers of every trained network (call after loading any checkpoint).

        Buffers (BatchNorm running statistics) are not broadcast: a GAN step calls D several times
        within one backward, and DDP's broadcast before each forward overwrites, in place, buffers
        that the earlier calls' backward still holds (an autograd error on torch 2.11). Each rank
        keeps its own statistics, which training-mode forwards never read; rank 0's are saved."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        return {n: DDP(m, device_ids=ids, broadcast_buffers=False) for n, m in nets.items()
                if any(p.requires_grad for p in m.parameters())}
