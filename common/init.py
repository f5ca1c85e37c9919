"""Parameter initialisation schemes, and a diagnostic of what they do to signal norms.

The geometric view: a layer maps x to Wx. With W_ij ~ N(0, 1/fan_in) and fan_in = n large,
E‖Wx‖² = ‖x‖² and the rows of W are nearly orthonormal (‖WᵀW − I‖ shrinks like 1/√n), so the
layer is close to an orthogonal, norm-preserving map; `orthogonal` makes this exact. Kaiming's
factor √2 compensates ReLU halving the second moment, which keeps deep stacks in a bounded band.

Fans are counted as the number of inputs that reach one output: for a transposed convolution that
is in_channels·k²/stride², not torch's count on the transposed weight layout.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

from .registry import lookup, register

TRANSPOSED_CONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
            nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm,
         nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def fans(m: nn.Module) -> tuple[int, int]:
    """(fan_in, fan_out): inputs that feed one output unit, outputs that one input unit feeds."""
    w = _weight(m)
    if isinstance(m, nn.Linear):
        return w.shape[1], w.shape[0]
    k = math.prod(w.shape[2:])
    if isinstance(m, TRANSPOSED_CONVS):
        stride = math.prod(m.stride)
        return max(1, w.shape[0] * k // stride), w.shape[1] * k // m.groups
    return w.shape[1] * k, max(1, w.shape[0] * k // math.prod(m.stride))


def _weight(m: nn.Module) -> torch.Tensor:
    if parametrize.is_parametrized(m, "weight"):
        return m.parametrizations.weight.original
    return m.weight


def init_weight_(w: torch.Tensor, fan_in: int, fan_out: int, cfg) -> None:
    """Fill one weight tensor in place with the scheme `cfg` (an InitConfig) names."""
    lookup("init_scheme", cfg.scheme, "init.scheme")(w, fan_in, fan_out, cfg)


# The schemes, by init.<net>.scheme: fill a weight in place from its fans and the InitConfig
# (`@register("init_scheme", NAME)`). `default` keeps torch's own initialisation.
@register("init_scheme", "default")
def default(w, fan_in, fan_out, cfg):
    pass


@register("init_scheme", "normal")
def normal(w, fan_in, fan_out, cfg):
    nn.init.normal_(w, 0.0, cfg.std)


@register("init_scheme", "xavier_uniform")
def xavier_uniform(w, fan_in, fan_out, cfg):
    bound = cfg.gain * math.sqrt(6.0 / (fan_in + fan_out))
    nn.init.uniform_(w, -bound, bound)


@register("init_scheme", "xavier_normal")
def xavier_normal(w, fan_in, fan_out, cfg):
    nn.init.normal_(w, 0.0, cfg.gain * math.sqrt(2.0 / (fan_in + fan_out)))


@register("init_scheme", "kaiming_uniform")
def kaiming_uniform(w, fan_in, fan_out, cfg):
    bound = nn.init.calculate_gain(cfg.nonlinearity, cfg.negative_slope) * math.sqrt(3.0 / fan_in)
    nn.init.uniform_(w, -bound, bound)


@register("init_scheme", "kaiming_normal")
def kaiming_normal(w, fan_in, fan_out, cfg):
    nn.init.normal_(w, 0.0, nn.init.calculate_gain(cfg.nonlinearity, cfg.negative_slope) / math.sqrt(fan_in))


@register("init_scheme", "orthogonal")
def orthogonal(w, fan_in, fan_out, cfg):
    nn.init.orthogonal_(w, gain=cfg.gain)


@register("init_scheme", "fan_in_normal")
def fan_in_normal(w, fan_in, fan_out, cfg):
    nn.init.normal_(w, 0.0, cfg.gain / math.sqrt(fan_in))


@torch.no_grad()
def initialize(module: nn.Module, cfg) -> nn.Module:
    """Initialise every linear/conv layer of `module` (biases to zero) and its norm layers
    (scale 1, or N(1, std) for the `normal` scheme as in DCGAN). `default` keeps torch's own."""
    if cfg.scheme == "default":
        return module
    for m in module.modules():
        if isinstance(m, WEIGHTED):
            fan_in, fan_out = fans(m)
            sn = _spectral_norm_settings(m)
            if sn is not None:  # re-register so the power iteration starts from the new weight
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
            init_weight_(m.weight, fan_in, fan_out, cfg)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            if sn is not None:
                reregister, settings = sn
                reregister(m, **settings)
        elif isinstance(m, NORMS) and getattr(m, "weight", None) is not None:
            if cfg.scheme == "normal":
                nn.init.normal_(m.weight, 1.0, cfg.std)
            else:
                nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def _spectral_norm_settings(m: nn.Module):
    """(function that registers it, its settings) for a spectrally normalised weight: ours
    (networks/spectral.py, whose parametrisation names its `register`) or torch's, whose
    parametrisation has the same u, v, n_power_iterations, eps and dim."""
    if not parametrize.is_parametrized(m, "weight"):
        return None
    for p in m.parametrizations.weight:
        if hasattr(p, "_u") and hasattr(p, "n_power_iterations"):
            register = getattr(type(p), "register", torch_spectral_norm)
            return register, {"n_power_iterations": p.n_power_iterations, "eps": p.eps, "dim": p.dim}
    return None


# ---------------------------------------------------------------------------------------------------
# Diagnostics

def weight_matrix(m: nn.Module) -> torch.Tensor:
    """The layer's weight as a (fan_out_channels, fan_in) matrix: one row per output unit."""
    w = _weight(m).detach()
    if isinstance(m, TRANSPOSED_CONVS):
        w = w.transpose(0, 1)
    return w.reshape(w.shape[0], -1)


@torch.no_grad()
def layer_report(module: nn.Module, probes: int = 256, generator=None) -> list[dict]:
    """Per linear/conv layer: mean gain ‖Wx‖/‖x‖ over random Gaussian x, and the distance from
    orthogonality ‖WᵀW − I‖_F / d, the RMS entry of the smaller d×d Gram matrix minus I: 0 for an
    orthogonal map, about 1/√n for a square Gaussian N(0, 1/n) map."""
    rows = []
    for name, m in module.named_modules():
        if not isinstance(m, WEIGHTED):
            continue
        w = weight_matrix(m).double()
        x = torch.randn(w.shape[1], probes, generator=generator, dtype=torch.float64)
        gain = ((w @ x).norm(dim=0) / x.norm(dim=0)).mean().item()
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        eye = torch.eye(gram.shape[0], dtype=gram.dtype)
        orth = ((gram - eye).norm() / gram.shape[0]).item()
        rows.append({"layer": name or type(m).__name__, "shape": tuple(w.shape), "gain": gain,
                     "orthogonality_error": orth})
    return rows


@torch.no_grad()
def activation_profile(module: nn.Module, *inputs) -> list[dict]:
    """RMS of every leaf module's output for `module(*inputs)`: how signal norms evolve with depth."""
    rows, hooks = [], []

    def hook(name):
        def record(_, __, out):
            if torch.is_tensor(out):
                rows.append({"layer": name, "rms": out.float().pow(2).mean().sqrt().item()})
        return record

    for name, m in module.named_modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(hook(name)))
    try:
        module(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return rows
