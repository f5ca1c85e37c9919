"""Learning-rate schedules: a linear warm-up, then a registered shape over the rest of train.steps.

Every parameter group's learning rate at step s (0-based: s steps are done before it) is its
configured rate (optim.lr, lr_g, lr_d...) times one factor, so per-group rates (TTUR) keep their ratio:

    warm-up   (s + 1) / optim.warmup                                  for s < warmup
    then      decay_to + (1 − decay_to) · shape(p),   p = (s − warmup) / (train.steps − warmup)

or, with optim.schedule_over: minutes, p = the fraction of train.max_minutes trained so far (over all
the run's sessions; the warm-up's time included), so that a run budgeted in wall time, whose step count
depends on the machine, still ends its decay as its budget ends (budgeted training: Li et al. 2020);

with shape(0) = 1 and shape(1) = 0, registered by name (`@register("lr_schedule", NAME)`):
constant (shape ≡ 1), cosine (½(1 + cos πp), Loshchilov & Hutter 2017) and linear (1 − p). The
warm-up is EDM's `lr_rampup_kimg` and NCSNv2's/score_sde's `warmup`, counted in steps; it starts at
1/warmup rather than 0, so no step is spent at a learning rate of zero.

Over steps the factor is a function of the step alone, so a resumed run continues the schedule exactly
(and a changed train.steps on resume stretches the rest of it). Over minutes it follows the wall clock,
so two runs differ (use steps for a reproducible run); a resumed run continues from the time its
checkpoint has trained.
"""
from __future__ import annotations

import math

from .registry import lookup, register


@register("lr_schedule", "constant")
def constant(p: float) -> float:
    return 1.0


@register("lr_schedule", "cosine")
def cosine(p: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * p))


@register("lr_schedule", "linear")
def linear(p: float) -> float:
    return 1.0 - p


def lr_factor(optim, step: int, total_steps: int, spent: float | None = None) -> float:
    """The factor of every learning rate for step `step` (0-based) of a `total_steps` run, from the
    optim: section's schedule, warmup, decay_to and schedule_over; `spent` is the fraction of the
    wall-time budget trained so far, which schedule_over: minutes reads (module docstring)."""
    if step < optim.warmup:
        return (step + 1) / optim.warmup
    if optim.schedule_over == "minutes":
        p = spent
    else:
        p = (step - optim.warmup) / max(total_steps - optim.warmup, 1)
    p = min(max(p, 0.0), 1.0)
    return optim.decay_to + (1.0 - optim.decay_to) * lookup("lr_schedule", optim.schedule)(p)


def scheduled(optim) -> bool:
    """Whether the learning rates change during the run."""
    return optim.warmup > 0 or optim.schedule != "constant"
