"""How a method's networks run here: the runtime policy a config's `train:` and `precision:` settings
choose, applied by the engine to any method (common/method.py's Method asks its runtime; it decides
nothing of this itself).

    place(module)        to the device; channels_last (NHWC weights); torch.compile for sampling
    optimizer_options()  fused Adam; capturable step counters for a captured CUDA graph
    compiled(fn)         a training objective under torch.compile, whole (one graph, one backward)
    precision            the config's precision, `auto` resolved for this device (resolve_precision)
    autocast()           bf16 or fp16 autocast of forward passes (backward stays outside)
    grad_scaler()        fp16's loss scaling (torch.amp.GradScaler); bf16 has fp32's range and needs none
    distribute(nets)     DistributedDataParallel wrappers of the trained networks (torchrun)
"""
from __future__ import annotations

import contextlib
import os
import shutil

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from common.errors import ConfigError
from common.method import PlainRuntime

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up on `device`: a CUDA GPU with bf16 (Ampere or newer),
    or a CPU with native bf16 dot products (AVX512-BF16, or AMX's bf16 tiles) that oneDNN may use.
    Measured, ms a DAE CPU-config step, fp32 → bf16: a 2-core Xeon with AMX 129 → 83, the same with
    oneDNN limited to AVX512-BF16 (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16) 146 → 139, to AVX-512 without
    bf16 138 → 261, to AVX2 169 → 1193; a 2-core AMD EPYC with AVX512-BF16 and no AMX (Zen 4,
    2026-12-03) 235 → 137, and its EBM step 503 → 344 (interleaved). So a CPU gains only with native bf16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).upper()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    # oneDNN's ISA names past AVX-512 without bf16: AVX512_CORE_BF16, AVX512_CORE_FP16 (= AVX10_1_512),
    # AVX512_CORE_AMX(_FP16) (= AVX10_1_512_AMX(_FP16)); ALL and DEFAULT are no limit
    allows_bf16 = limit in ("ALL", "DEFAULT") or any(k in limit for k in ("BF16", "FP16", "AMX", "AVX10"))
    return (amx or avx512_bf16) and allows_bf16


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would build CPU kernels with, if any (it asks $CXX, then these)."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "clang++", "c++"]
    return next((path for path in map(shutil.which, names) if path), None)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run uses: the config's, with `auto` made bf16 where fast_bf16 says so, else fp32."""
    if precision != "auto":
        return precision
    return "bf16" if fast_bf16(torch.device(device)) else "fp32"


class Runtime(PlainRuntime):
    """The runtime of a config (engine/build.py gives it to every method it builds)."""

    def __init__(self, cfg, device):
        super().__init__(device)
        self.train, self.optim = cfg.train, cfg.optim
        self.precision = resolve_precision(cfg.precision, self.device)  # never "auto"
        if self.train.compile and self.device.type == "cpu" and not cpp_compiler():
            raise ConfigError("train.compile: torch.compile on a CPU builds C++ kernels and no C++ compiler "
                              "was found (g++, clang++ or $CXX): install one or set train.compile=false")
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
