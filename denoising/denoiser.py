"""One object for DAEs, score networks and energy models: a denoiser D(x; σ) with score
s(x; σ) = (D(x; σ) − x)/σ² ≈ ∇ₓ log p_σ(x)  (Tweedie / Miyasawa; Alain & Bengio 2014; Vincent 2011).

A raw network F(x, σ) becomes a denoiser through one of three parametrisations:
    direct  (DAE):  D = c_skip·x + c_out·F                       a reconstruction network with EDM's
                                                                 preconditioning (Karras et al. 2022)
    score   (NCSN): s = F/σ,  D = x + σ²s                        NCSNv2's 1/σ output scaling (NCSN
                                                                 with preconditioning: edm reads F as
                                                                 "direct" does: EDM's score)
    energy  (EBM):  E = ½‖x − (c_skip·x + c_out·F)‖²/σ²,  s = −∇ₓE,  D = x + σ²s
                    (confined: + ½·c_skip‖x‖²/(σ² + σ_d²), so that far from the data s → −x/(σ² + σ_d²)
                    as the direct form's does, not the −σ²x/(σ² + σ_d²)² of the plain energy)
with c_skip = σ_d²/(σ² + σ_d²), c_out = σσ_d/√(σ² + σ_d²). Without c_skip the network would have to
copy x to within σ at small σ (F ≈ identity), which a plain net does poorly; with it, F's target has
unit scale at every σ. The energy is Salimans & Ho's (2021) "energy of a denoiser", ½‖x − D̂‖²/σ².
F sees c_in·x with c_in = 1/√(σ² + σ_d²) (unit-scale inputs) unless scale_input is off, as for
NCSNv2's own network. Every sampler only needs D or s, so every sampler works with every method.

A class-conditional net takes the classes as `labels` (None: its null class, i.e. unconditional);
samplers see D(x; σ) alone, so the labels are bound by a wrapper (denoising/guidance.py).
"""
from __future__ import annotations

import torch
from torch import nn

PARAMETRIZATIONS = ("direct", "score", "energy")


def per_example(sigma, x: torch.Tensor) -> torch.Tensor:
    """σ as a float, 0-dim or (B,) tensor → shape (B, 1, …, 1) broadcastable against x."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.dim() == 0:
        sigma = sigma.expand(x.shape[0])
    return sigma.reshape(-1, *([1] * (x.dim() - 1)))


class Denoiser(nn.Module):
    def __init__(self, net: nn.Module, parametrization: str, sigma_data: float = 0.5, scale_input: bool = True,
                 confined: bool = False):
        super().__init__()
        if parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}")
        self.net, self.parametrization = net, parametrization
        self.sigma_data, self.scale_input, self.confined = sigma_data, scale_input, confined

    def _F(self, x, sigma, labels=None):
        c_in = (sigma ** 2 + self.sigma_data ** 2).rsqrt() if self.scale_input else 1.0
        if labels is None:
            return self.net(c_in * x, sigma.flatten())
        return self.net(c_in * x, sigma.flatten(), labels)

    def energy(self, x, sigma, labels=None) -> torch.Tensor:
        """E(x; σ) per example (energy parametrisation); log p_σ(x) = −E + const.
        Written as ½‖σx/v − (σ_d/√v)F‖² (v = σ² + σ_d²), the same value without cancellation; a
        confined energy adds ½(σ_d²/v²)‖x‖² (= ½·c_skip‖x‖²/v)."""
        s = per_example(sigma, x)
        v = s ** 2 + self.sigma_data ** 2
        r = s * x / v - self.sigma_data * v.rsqrt() * self._F(x, s, labels)
        r = r.to(torch.promote_types(r.dtype, torch.float32))  # bf16 forward, fp32 (or fp64) energy
        e = 0.5 * r.pow(2).flatten(1).sum(1)
        if self.confined:
            x = x.to(r.dtype)
            e = e + 0.5 * (self.sigma_data / v.to(r.dtype)).pow(2).flatten() * x.pow(2).flatten(1).sum(1)
        return e

    def score(self, x, sigma, create_graph: bool = False, labels=None) -> torch.Tensor:
        """s(x; σ) ≈ ∇ₓ log p_σ(x). For an energy model, −∇ₓE by autograd (create_graph=True keeps
        the graph for double backpropagation when training)."""
        s = per_example(sigma, x)
        if self.parametrization == "score":
            return self._F(x, s, labels) / s
        if self.parametrization == "direct":  # (D − x)/σ², expanded so nothing cancels
            v = s ** 2 + self.sigma_data ** 2
            return -x / v + self.sigma_data * (s * v.sqrt()).reciprocal() * self._F(x, s, labels)
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(xg, s, labels).sum(), xg, create_graph=create_graph)
        return -grad.to(x.dtype)

    def forward(self, x, sigma, labels=None) -> torch.Tensor:
        """D(x; σ), the denoised estimate of the clean data (Tweedie: E[x | x̃])."""
        s = per_example(sigma, x)
        if self.parametrization == "direct":
            v = s ** 2 + self.sigma_data ** 2
            return self.sigma_data ** 2 / v * x + s * self.sigma_data * v.rsqrt() * self._F(x, s, labels)
        return x + s ** 2 * self.score(x, s, labels=labels)
