"""Spectral normalisation (Miyato et al. 2018) whose power iteration is an explicit call.

torch's parametrisation refreshes its estimates u, v of the top singular vectors on every
training-mode forward. A GAN update calls the critic several times (reals, stopped fakes, fakes),
so each call would see another σ estimate and the one-loss bracket would no longer be exactly
zero; switching the iteration off between calls means flipping module modes inside the step,
which splits a compiled step into several graphs. Here forward never iterates: W / uᵀWv with
the stored u, v. The trainer calls power_iteration(net) once per critic update, before its first
forward, which gives the numerics of torch's version on that first call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm


class SpectralNorm(_SpectralNorm):
    """torch's parametrisation (same buffers, so the same state_dict keys) without the iteration
    in forward."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        weight_mat = self._reshape_weight_to_matrix(weight)
        u = self._u.clone(memory_format=torch.contiguous_format)  # clones: see torch's version
        v = self._v.clone(memory_format=torch.contiguous_format)
        return weight / torch.vdot(u, torch.mv(weight_mat, v))


def spectral_norm(module: nn.Module, n_power_iterations: int = 1, eps: float = 1e-12, dim: int | None = None):
    """Parametrise module.weight as W/σ(W) (dim 1 for transposed convolutions, as torch does)."""
    if dim is None:
        dim = 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0
    parametrize.register_parametrization(module, "weight", SpectralNorm(module.weight, n_power_iterations, dim, eps))
    power_iteration(module)  # registering torch's version runs its forward once, which iterates: same u, v
    return module


def spectral_norms(net: nn.Module):
    """(parametrisation, raw weight) for every spectrally normalised matrix in `net`."""
    for m in net.modules():
        if parametrize.is_parametrized(m, "weight"):
            weight = m.parametrizations.weight.original
            for p in m.parametrizations.weight:
                if isinstance(p, SpectralNorm) and weight.ndim > 1:
                    yield p, weight


@torch.no_grad()
def power_iteration(net: nn.Module):
    """Refresh every u, v estimate of `net` from its current weights (n_power_iterations steps)."""
    for p, weight in spectral_norms(net):
        p._power_method(p._reshape_weight_to_matrix(weight), p.n_power_iterations)
