"""log p(x) of a denoising model: the probability-flow ODE and the instantaneous change of variables.

A denoiser D(x; σ) defines the probability-flow ODE (Song et al. 2021, eq. 13; Karras et al. 2022,
eq. 4 with σ(t) = t)

    dx/dσ = f(x, σ) = (x − D(x; σ))/σ = −σ s(x; σ),

which carries p_σmin (the data noised at σ_min) to p_σmax ≈ N(0, σ_max² I). Along any flow
dx/dt = f(x, t) the log-density changes by d log p_t(x(t))/dt = −tr ∂f/∂x (Chen et al. 2018, thm. 1).
That is det exp(A) = exp(tr A) in continuous form: a step x ← x + hAx has Jacobian determinant
det(I + hA) = exp(h tr A) + O(h²), so log-determinants integrate as traces. Hence

    log p_σmin(x) = log N(x(σ_max); 0, σ_max² I) + ∫_{σ_min}^{σ_max} tr ∂f/∂x (x(σ), σ) dσ,   x(σ_min) = x.

The data point is treated as if noised at σ_min: the density is the model's at its smallest level
(a proper density on R^d, so the bound of engine/evaluation/bits_per_dim.py holds). The prior stands in
for p_σmax = p_data ∗ N(0, σ_max² I); for data of mean μ the flow's end point is about μ + σ_max z,
and log N(·; 0, σ_max² I) is off by about −‖μ‖²/(2σ_max²) − zᵀμ/σ_max nats (Fashion-MNIST: ‖μ‖ = 16,
σ_max = 44 by NCSNv2's technique 1, so −0.07 ± 0.37 nats, 1e-4 ± 7e-4 bits/dim at d = 784). In u = ln σ the
flow is dx/du = x − D(x; σ) and the integrand σ·tr ∂f/∂x = d − tr ∂D/∂x; the adaptive solver works
in u, Heun in σ on EDM's ρ-spaced levels, as the sampler does.

tr ∂D/∂x is exact (d vector-Jacobian products) or Hutchinson's (1990) estimate εᵀ(∂D/∂x)ε, unbiased
for E[εεᵀ] = I (Rademacher or Gaussian ε), one VJP per probe. As in FFJORD (Grathwohl et al. 2019)
each example keeps its probes along the whole path, so each probe gives one unbiased estimate of the
integral and their spread is the estimate's standard error. An energy model's D = x + σ²(−∇E)
is itself a gradient, so its VJP is a double backward (create_graph).

One network evaluation (NFE) is one D(x; σ) with its trace: a forward pass and, with Hutchinson,
one VJP per probe (the exact trace costs d VJPs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from common.signals import check_stop
from .denoiser import per_example


def differentiable(denoiser):
    """D(x; σ) whose value stays differentiable in x. An energy model's score is −∇ₓE, which
    Denoiser computes without a graph unless asked (create_graph)."""
    if getattr(denoiser, "parametrization", None) != "energy":
        return denoiser
    return lambda x, sigma: x + per_example(sigma, x) ** 2 * denoiser.score(x, sigma, create_graph=True)


def draw_probes(shape, k: int, kind: str = "rademacher", generator=None, device=None, dtype=None):
    """k probes per example, (k, *shape), with E[εεᵀ] = I: Rademacher (±1) or standard Gaussian."""
    if kind == "gaussian":
        return torch.randn((k, *shape), generator=generator).to(device, dtype)
    if kind == "rademacher":
        return (torch.randint(0, 2, (k, *shape), generator=generator) * 2 - 1).to(device, dtype)
    raise ValueError(f"probe must be 'rademacher' or 'gaussian', not {kind!r}")


def jacobian_trace(D, x, probes=None):
    """(B, K): tr ∂D/∂x per example, exact (probes None: K = 1, one VJP per coordinate) or
    Hutchinson's εᵀ(∂D/∂x)ε for each of the K probes (K, B, …)."""
    flat = x.flatten(1)
    vjps = range(flat.shape[1]) if probes is None else range(len(probes))
    out = []
    for i in vjps:
        if probes is None:
            basis = torch.zeros_like(flat)
            basis[:, i] = 1
            (g,) = torch.autograd.grad(D, x, basis.view_as(x), retain_graph=True)
            out.append(g.flatten(1)[:, i])
        else:
            (g,) = torch.autograd.grad(D, x, probes[i], retain_graph=True)
            out.append((g * probes[i]).flatten(1).sum(1))
    tr = torch.stack(out, 1)
    return tr.sum(1, keepdim=True) if probes is None else tr


class Flow:
    """The ODE in u = ln σ: dx/du = x − D(x; σ) and dℓ/du = d − tr ∂D/∂x (one column per probe);
    counts its evaluations."""

    def __init__(self, denoise_fn, probes=None):
        self.D, self.probes, self.nfe = differentiable(denoise_fn), probes, 0

    def __call__(self, x, sigma: float):
        self.nfe += 1
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            D = self.D(x, sigma)
            tr = jacobian_trace(D, x, self.probes)
        return (x - D).detach(), (x[0].numel() - tr.double()).detach()


def heun_flow(flow: Flow, x, sigmas):
    """Heun's 2nd-order method in σ on increasing levels (dx/dσ = (x − D)/σ, dℓ/dσ = (d − tr ∂D/∂x)/σ),
    2 evaluations per step. Returns x(σ_max) and ℓ = ∫ tr ∂f/∂x dσ."""
    sigmas = [float(s) for s in sigmas]
    ell = 0.0
    for s_cur, s_next in zip(sigmas[:-1], sigmas[1:]):
        check_stop()
        h = s_next - s_cur
        v, t = flow(x, s_cur)
        x_euler = x + h * v / s_cur
        v_next, t_next = flow(x_euler, s_next)
        x = x + 0.5 * h * (v / s_cur + v_next / s_next)
        ell = ell + 0.5 * h * (t / s_cur + t_next / s_next)
    return x, ell


# Dormand & Prince (1980) 5(4): nodes, stages, 5th-order weights and the embedded error weights.
DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
DP_A = ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
DP_B = DP_A[6] + (0.0,)
DP_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)  # b5 − b4


def _combine(y, h, ks, weights):
    """y + h Σ w_i k_i on the state (x, ℓ)."""
    return tuple(yi + h * sum(w * k[j] for w, k in zip(weights, ks) if w) for j, yi in enumerate(y))


def _error_norm(err, y0, y1, rtol, atol):
    """Per example, the RMS of err/(atol + rtol·max(|y0|, |y1|)) over the whole state; the largest."""
    sq, n = 0.0, 0
    for e, a, b in zip(err, y0, y1):
        scale = atol + rtol * torch.maximum(a.abs(), b.abs())
        sq = sq + (e / scale).double().pow(2).flatten(1).sum(1)
        n += e[0].numel()
    return (sq / n).sqrt().max().item()


def rk45_flow(flow: Flow, x, sigma_min: float, sigma_max: float, rtol: float = 1e-5, atol: float = 1e-5):
    """Adaptive Dormand–Prince 5(4) in u = ln σ (steps taken with the 5th-order solution, the
    standard controller h ← h·clip(0.9·err^(−1/5), 0.2, 10); Hairer et al. 1993, II.4). Returns
    x(σ_max) and ℓ."""
    u, u_end = math.log(sigma_min), math.log(sigma_max)
    y = (x, torch.zeros(x.shape[0], flow.probes.shape[0] if flow.probes is not None else 1,
                        dtype=torch.float64, device=x.device))
    h = (u_end - u) / 20
    k_first = flow(y[0], sigma_min)
    while u < u_end:
        check_stop()
        h = min(h, u_end - u)
        ks = [k_first]
        for c, a in zip(DP_C[1:], DP_A[1:]):
            y_stage = _combine(y, h, ks, a)
            ks.append(flow(y_stage[0], math.exp(u + c * h)))
        y_new = y_stage  # the last stage is the 5th-order solution (FSAL)
        err = _combine(tuple(torch.zeros_like(t) for t in y), h, ks, DP_E)
        e = _error_norm(err, y, y_new, rtol, atol)
        if not math.isfinite(e):
            raise FloatingPointError(f"the probability-flow ODE diverged at σ = {math.exp(u):.4g}")
        if e <= 1:
            u, y, k_first = u + h, y_new, ks[-1]
        h *= min(10.0, max(0.2, 0.9 * max(e, 1e-10) ** -0.2))
    return y


@dataclass
class LogLikelihood:
    log_p: torch.Tensor     # (B,) float64: log p_σmin(x), averaged over the probes
    stderr: torch.Tensor    # (B,) Hutchinson standard error of log_p (0: exact trace; nan: one probe)
    nfe: int                # network evaluations (each with its trace) for the batch


def gaussian_log_prob(z, sigma: float):
    """log N(z; 0, σ² I) per example."""
    d = z[0].numel()
    return -0.5 * z.double().flatten(1).pow(2).sum(1) / sigma ** 2 - 0.5 * d * math.log(2 * math.pi * sigma ** 2)


def log_likelihood(denoise_fn, x, sigma_min: float, sigma_max: float, solver: str = "rk45", sigmas=None,
                   probes=None, rtol: float = 1e-5, atol: float = 1e-5) -> LogLikelihood:
    """log p_σmin(x) of a batch: the ODE from σ_min up to σ_max, then the prior N(0, σ_max² I).
    `probes` (K, B, …) for Hutchinson, None for the exact trace; `sigmas`: Heun's increasing levels
    (σ_min … σ_max)."""
    flow = Flow(denoise_fn, probes)
    if solver == "heun":
        x_end, ell = heun_flow(flow, x, sigmas)
    elif solver == "rk45":
        x_end, ell = rk45_flow(flow, x, sigma_min, sigma_max, rtol, atol)
    else:
        raise ValueError(f"solver must be 'heun' or 'rk45', not {solver!r}")
    log_p = gaussian_log_prob(x_end, sigma_max)[:, None] + ell  # (B, K): one estimate per probe
    k = log_p.shape[1]
    if probes is None:
        stderr = torch.zeros_like(log_p[:, 0])
    else:
        stderr = log_p.std(1) / math.sqrt(k) if k > 1 else torch.full_like(log_p[:, 0], math.nan)
    return LogLikelihood(log_p.mean(1), stderr, flow.nfe)
