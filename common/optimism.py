"""Optimistic updates (optim.optimistic): Adam's step, extrapolated from the one before it.

A step of the wrapped optimizer moves each parameter by Δ_t (Adam's -lr·m̂/(√v̂ + eps), its weight
decay included); the optimistic one moves it by 2·Δ_t − Δ_{t−1}:

    θ_{t+1} = θ_t + 2·Δ_t − Δ_{t−1}          (Δ_{−1} = 0)

Optimistic mirror descent (Daskalakis et al. 2018, "Training GANs with Optimism": Optimistic Adam)
and, for constant steps, extrapolation from the past (Gidel et al. 2019, "A Variational Inequality
Perspective on Generative Adversarial Networks"): each gradient acts as if taken at the point the
last one predicts, a look-ahead at no extra gradient evaluation. It is meant for *simultaneous* games,
where both players step from the same weights, as the one-loss GAN step does: there plain gradient
steps rotate around an equilibrium of a bilinear game and spiral out, where optimistic ones converge.

Δ_{t−1} is kept in the optimizer's state (`last_update`, one tensor per parameter), so that a
checkpoint's optimizer state resumes the same trajectory.
"""
from __future__ import annotations

import torch


def optimistic(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """`cls` (Adam, AdamW...) with its steps made optimistic (module docstring)."""

    class Optimistic(cls):
        @torch.no_grad()
        def step(self, closure=None):
            params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
            before = [p.detach().clone() for p in params]
            loss = super().step(closure)
            for p, start in zip(params, before):
                update = p.detach() - start                     # Δ_t
                last = self.state[p].get("last_update")         # Δ_{t−1}
                p.add_(update if last is None else update - last)  # θ_t + 2Δ_t − Δ_{t−1}
                self.state[p]["last_update"] = update
            return loss

    Optimistic.__name__ = Optimistic.__qualname__ = f"Optimistic{cls.__name__}"
    return Optimistic
