"""Spectral normalisation (Miyato et al. 2018) whose power iteration is an explicit call.

torch's parametrisation refreshes its estimates u, v of the top singular vectors on every
training-mode forward. A GAN update calls the critic several times (reals, stopped fakes, fakes),
so each call would see another σ estimate and the one-loss bracket would no longer be exactly
zero; switching the iteration off between calls means flipping module modes inside the step,
which splits a compiled step into several graphs. Here forward never iterates: W / uᵀWv with
the stored u, v. The trainer calls power_iteration(net) once per critic update, before its first
forward, which gives the numerics of torch's version on that first call.

The parametrisation is registered through torch's public `parametrize` API with the buffers torch's
own uses (`_u`, `_v`), so a checkpoint's keys are the same: parametrizations.weight.original,
parametrizations.weight.0._u and ..._v.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from common.init import TRANSPOSED_CONVS



class SpectralNorm(nn.Module):
    """W ↦ W/σ̂(W) with σ̂ = uᵀWv for the stored estimates u, v of W's top singular vectors, W seen
    as a matrix with dimension `dim` first (1 for transposed convolutions)."""

    def __init__(self, weight: torch.Tensor, n_power_iterations: int = 1, dim: int = 0, eps: float = 1e-12):
        super().__init__()
        if weight.ndim < 2:
            raise ValueError("spectral_norm here takes matrices and convolution kernels (ndim >= 2)")
        if n_power_iterations <= 0:
            raise ValueError(f"n_power_iterations must be positive, got {n_power_iterations}")
        self.dim, self.eps, self.n_power_iterations = dim % weight.ndim, eps, n_power_iterations
        matrix = self.matrix(weight)
        u = matrix.new_empty(matrix.shape[0]).normal_(0, 1)  # torch's draws, in torch's order
        v = matrix.new_empty(matrix.shape[1]).normal_(0, 1)
        self.register_buffer("_u", F.normalize(u, dim=0, eps=eps))
        self.register_buffer("_v", F.normalize(v, dim=0, eps=eps))
        self.iterate(matrix, 15)  # a reasonable start, as torch's version makes

    def matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """The weight as a matrix: dimension `dim` first, the rest flattened."""
        if self.dim != 0:
            weight = weight.permute(self.dim, *(d for d in range(weight.dim()) if d != self.dim))
        return weight.flatten(1)

    @torch.no_grad()
    def iterate(self, matrix: torch.Tensor, steps: int):
        """Power iteration u ← Wv/‖Wv‖, v ← Wᵀu/‖Wᵀu‖, in place (the buffers keep their storage)."""
        for _ in range(steps):
            F.normalize(torch.mv(matrix, self._v), dim=0, eps=self.eps, out=self._u)
            F.normalize(torch.mv(matrix.H, self._u), dim=0, eps=self.eps, out=self._v)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # Clones: a backward through an earlier forward must not see u, v changed in place since.
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        return weight / torch.vdot(u, torch.mv(self.matrix(weight), v))

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value  # assigning module.weight sets the raw weight (as in torch's version)


def spectral_norm(module: nn.Module, n_power_iterations: int = 1, eps: float = 1e-12, dim: int | None = None):
    """Parametrise module.weight as W/σ(W) (dim 1 for transposed convolutions, as torch does)."""
    if dim is None:
        dim = 1 if isinstance(module, TRANSPOSED_CONVS) else 0
    parametrize.register_parametrization(module, "weight", SpectralNorm(module.weight, n_power_iterations, dim, eps))
    power_iteration(module)  # registering torch's version runs its forward once, which iterates: same u, v
    return module


SpectralNorm.register = staticmethod(spectral_norm)  # how common/init.py re-registers it after re-initialising


def spectral_norms(net: nn.Module):
    """(parametrisation, raw weight) for every spectrally normalised weight in `net`."""
    for m in net.modules():
        if parametrize.is_parametrized(m, "weight"):
            for p in m.parametrizations.weight:
                if isinstance(p, SpectralNorm):
                    yield p, m.parametrizations.weight.original


@torch.no_grad()
def power_iteration(net: nn.Module):
    """Refresh every u, v estimate of `net` from its current weights (n_power_iterations steps)."""
    for p, weight in spectral_norms(net):
        p.iterate(p.matrix(weight), p.n_power_iterations)
