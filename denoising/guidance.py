"""Classifier-free guidance and inpainting: denoisers built from a denoiser, so that every registered
sampler gets both without a change (a sampler sees only D(x; σ) and s(x; σ)).

    Guided      D_w(x; σ) = D(x; σ, ∅) + w·(D(x; σ, c) − D(x; σ, ∅))        (Ho & Salimans 2022)
                w = 0 is the unconditional denoiser and w = 1 the conditional one, exactly (one
                network pass each); other w evaluate both in one batch (two evaluations per call).
    AutoGuided  D_w(x; σ) = D_g(x; σ) + w·(D(x; σ) − D_g(x; σ))               (Karras et al. 2024)
                autoguidance: D_g is a weaker model of the same data (a smaller net trained for less
                time), whose errors point the same way as D's but further, so extrapolating away from
                it removes them, with no class labels. w = 0 is the guide and w = 1 the model, exactly.
    Either in an interval (Kynkäänniemi et al. 2024): the weight w at levels σ_lo < σ ≤ σ_hi only, w = 1
                elsewhere (the model alone, one pass). They found classifier-free guidance at large σ
                drew every sample of a class toward a few of its modes and at small σ changed little, and
                limited EDM2's to the middle. Where it pays depends on the model: on this project's CIFAR-10
                nets classifier-free guidance held its KID in EDM2-S's (0.28, 5.42], while autoguidance
                worked at σ ≤ 1 and drew skies in the middle (scripts/results.py has the sweeps).
    Inpainting  D(x̂; σ) with x̂ = x on the unknown pixels and y + σz on the known ones: the real
                image noised to the level being sampled, as NCSNv2's and score_sde's inpainting do
                after each step (NCSNv2's anneal_Langevin_dynamics_inpainting, score_sde's
                controllable_generation.py). Replacing the known pixels where the net reads them is the
                same thing for every sampler: a step's update of the unknown pixels depends on the
                known ones only through the net. One noise draw is kept while σ stays the same (a level
                of Langevin steps, as NCSNv2), and `complete` puts the known pixels back exactly at the end.
                With weight λ > 0, reconstruction guidance as well (ΠGDM, Song et al. 2023, with a noiseless
                observation; Ho et al. 2022's reconstruction guidance): the missing pixels' estimate
                    D(x̂; σ) + λ·(σ²/r²)·J_Dᵀ M (y − D(x̂; σ)),   r² = σ²/(1 + σ²),
                the Tweedie step σ²∇ log p(y | x̂) for p(y | x̂) ≈ N(y; M·D(x̂; σ), r²), r² the posterior
                variance of a unit Gaussian. Replacement alone lets the missing pixels ignore the known
                ones wherever the net's receptive field or an ODE sampler's determinism does; the
                gradient term makes them agree. One backward pass through the net per call (about
                three forward passes' cost).

Masks (`mask(name, shape)`): left, right, top, bottom (the half that is *missing*), centre (a box of
half the side), random:F (a fraction F of pixels missing, the same pixels in every channel).
"""
from __future__ import annotations

import torch
from torch import nn

from common.errors import ConfigError
from .denoiser import per_example


def evaluations(weight: float) -> int:
    """Network passes per guided call at weight w: one at w = 0 or 1, both passes otherwise."""
    return 1 if weight in (0.0, 1.0) else 2


def weight_at(weight: float, interval: tuple[float, float] | None, sigma: float) -> float:
    """The guidance weight in effect at level σ: w inside the interval (σ_lo, σ_hi] (None: everywhere),
    1 outside it."""
    return weight if interval is None or interval[0] < sigma <= interval[1] else 1.0


def blend(weight: float, interval, x, sigma, one, zero, both):
    """b + w·(a − b), a the w = 1 denoiser (`one()`), b the w = 0 one (`zero()`), `both()` = (a, b) in
    one go, at the examples whose σ lies in `interval`, and a at the others; only the passes needed run."""
    on = None
    if interval is not None:  # σ as given, in float64 (as weight_at and the pass count read it)
        s = torch.as_tensor(sigma).detach().to("cpu", torch.float64).expand(len(x))
        on = ((s > interval[0]) & (s <= interval[1])).view(-1, *[1] * (x.dim() - 1))
        if not bool(on.any()):
            return one()
        on = None if bool(on.all()) else on.to(x.device)
    if weight == 1.0:
        return one()
    if weight == 0.0 and on is None:
        return zero()
    a, b = both()
    out = b + weight * (a - b)
    return out if on is None else torch.where(on, out, a)


class Guided(nn.Module):
    """The classifier-free-guided denoiser of class-conditional `denoiser` at classes `labels`
    (None: unconditional) and weight w, in `interval` of σ (None: at every level); `null` is the net's
    null-class index (model.num_classes)."""

    def __init__(self, denoiser: nn.Module, labels: torch.Tensor | None, weight: float, null: int,
                 interval: tuple[float, float] | None = None):
        super().__init__()
        self.denoiser, self.labels, self.weight, self.null = denoiser, labels, float(weight), null
        self.interval = interval

    def passes(self, sigma: float) -> int:
        """Network passes per call at level σ: 2 when both the conditional and unconditional are needed."""
        return 1 if self.labels is None else evaluations(weight_at(self.weight, self.interval, sigma))

    def _both(self, fn, x, sigma):
        """fn on the batch twice, conditional and unconditional, in one call: (conditional, unconditional)."""
        s = per_example(sigma, x).flatten()
        null = torch.full_like(self.labels, self.null)
        out = fn(torch.cat([x, x]), torch.cat([s, s]), torch.cat([self.labels, null]))
        return out.chunk(2)

    def _guided(self, fn, x, sigma):
        if self.labels is None:
            return fn(x, sigma, None)
        return blend(self.weight, self.interval, x, sigma, lambda: fn(x, sigma, self.labels),
                     lambda: fn(x, sigma, None), lambda: self._both(fn, x, sigma))

    def forward(self, x, sigma):
        return self._guided(lambda y, s, c: self.denoiser(y, s, c), x, sigma)

    def score(self, x, sigma, create_graph: bool = False):
        """s_w = s_∅ + w·(s_c − s_∅), the same combination (D = x + σ²s is affine in s)."""
        return self._guided(lambda y, s, c: self.denoiser.score(y, s, create_graph, labels=c), x, sigma)


class AutoGuided(nn.Module):
    """`denoiser` guided away from the weaker `guide` with weight w, in `interval` of σ (None: at every
    level; autoguidance, module docstring)."""

    def __init__(self, denoiser: nn.Module, guide: nn.Module, weight: float,
                 interval: tuple[float, float] | None = None):
        super().__init__()
        self.denoiser, self.guide, self.weight, self.interval = denoiser, guide, float(weight), interval

    def passes(self, sigma: float) -> int:
        """Network passes per call at level σ: the model's and the guide's, or one of them at w = 1 or 0."""
        return evaluations(weight_at(self.weight, self.interval, sigma))

    def _guided(self, x, sigma, model, guide):
        return blend(self.weight, self.interval, x, sigma, model, guide, lambda: (model(), guide()))

    def forward(self, x, sigma):
        return self._guided(x, sigma, lambda: self.denoiser(x, sigma), lambda: self.guide(x, sigma))

    def score(self, x, sigma, create_graph: bool = False):
        """s_w = s_g + w·(s − s_g): D = x + σ²s is affine in s."""
        return self._guided(x, sigma, lambda: self.denoiser.score(x, sigma, create_graph),
                            lambda: self.guide.score(x, sigma, create_graph))


class Inpainting(nn.Module):
    """`denoiser` with the pixels where `known_mask` is true held at `known` (noised to the level), and
    with `weight` > 0 the missing pixels' estimate guided toward agreement with them."""

    def __init__(self, denoiser: nn.Module, known: torch.Tensor, known_mask: torch.Tensor,
                 generator: torch.Generator | None = None, weight: float = 0.0):
        super().__init__()
        self.denoiser, self.known, self.mask, self.generator = denoiser, known, known_mask.bool(), generator
        self.weight = float(weight)
        self._level = self._noise = None

    def project(self, x, sigma):
        """x with its known pixels replaced by the known image plus noise of std σ."""
        s = per_example(sigma, x)
        if self._level is None or not torch.equal(self._level, s):
            self._level = s.clone()
            self._noise = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return torch.where(self.mask, self.known.to(x.dtype) + s * self._noise, x)

    def guided(self, x, sigma):
        """(x̂, D) for the projected x̂: D(x̂; σ) plus reconstruction guidance on the missing pixels."""
        x = self.project(x, sigma)
        s = per_example(sigma, x)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            # D = x + σ²s from the score, so that an energy model's D keeps its graph to x too
            d = xg + s ** 2 * self.denoiser.score(xg, sigma, create_graph=True)
            residual = torch.where(self.mask, self.known.to(d.dtype) - d, torch.zeros_like(d))
            (pull,) = torch.autograd.grad(d, xg, grad_outputs=residual)  # J_Dᵀ M (y − D)
        step = self.weight * (1 + s ** 2)  # λ·σ²/r²
        return x, torch.where(self.mask, d, d + step * pull).detach()

    def forward(self, x, sigma):
        if self.weight:
            return self.guided(x, sigma)[1]
        return self.denoiser(self.project(x, sigma), sigma)

    def score(self, x, sigma, create_graph: bool = False):
        if self.weight:
            x, d = self.guided(x, sigma)
            return (d - x) / per_example(sigma, x) ** 2
        return self.denoiser.score(self.project(x, sigma), sigma, create_graph)

    def complete(self, x):
        """The sampler's result with the known pixels exactly as given."""
        return torch.where(self.mask, self.known.to(x.dtype), x)


MASKS = ("left", "right", "top", "bottom", "centre", "random:F")


def mask(name: str, shape: tuple, generator: torch.Generator | None = None) -> torch.Tensor:
    """The *known* pixels (True) of images of `shape` (N, C, H, W) under the named mask, whose
    name says what is missing; random:F draws each image's missing pixels with `generator`."""
    n, c, h, w = shape
    known = torch.ones(n, 1, h, w, dtype=torch.bool)
    if name == "left":
        known[..., :, : w // 2] = False
    elif name == "right":
        known[..., :, w // 2:] = False
    elif name == "top":
        known[..., : h // 2, :] = False
    elif name == "bottom":
        known[..., h // 2:, :] = False
    elif name in ("centre", "center"):
        known[..., h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2] = False
    elif name.startswith("random:"):
        try:
            fraction = float(name.split(":", 1)[1])
        except ValueError:
            fraction = -1.0
        if not 0 < fraction < 1:
            raise ConfigError(f"mask {name!r}: random:F takes the missing fraction F in (0, 1), e.g. random:0.5")
        known = torch.rand(n, 1, h, w, generator=generator) >= fraction
    else:
        raise ConfigError(f"mask {name!r}: expected one of {', '.join(MASKS)}")
    return known.expand(n, c, h, w)
