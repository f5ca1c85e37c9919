"""The two ways to train a GAN, as objectives the method turns into optimizer steps.

One loss (synchronous): one scalar whose single backward pass gives each player its own gradient,
    L = d_loss(D(x), D(sg(G(z)))) + [g_loss(D(G(z))) − g_loss(D(sg(G(z))))],   sg = detach.
The bracket is numerically zero. G only reaches L through the first g_loss term, so G's gradient is
∇g_loss. D's gradient from the bracket is ∇_D g_loss(D(G(z))) − ∇_D g_loss(D(sg(G(z)))) = 0 because
both terms see the same values, so D's gradient is exactly ∇d_loss. Both players then step together
from the same (pre-update) weights: one backward, one optimizer step.

Alternating: n_critic critic steps, then one generator step on the last critic step's fakes.
"""
from __future__ import annotations

import torch

from common.smooth import smooth_step
from .losses import gradient_penalty, r1_penalty


def critic_accuracy(real, fake, temperature: float = 1.0) -> dict:
    """How often the critic tells real from fake (D(x) > 0, D(G(z)) < 0), exact and smoothed:
    sigmoid(K·logit) = softmax(K·[logit, 0])₀ is the smooth accuracy of the two-way decision
    (common/smooth.py), with K the loss's temperature (1 for the losses that have none)."""
    real, fake = real.detach().float(), fake.detach().float()
    return {"acc_real": (real > 0).float().mean(), "acc_fake": (fake < 0).float().mean(),
            "sacc_real": smooth_step(real, temperature).mean(),
            "sacc_fake": smooth_step(-fake, temperature).mean()}


def critic_objective(D, loss, x_real, x_fake_sg, reg: str = "none", reg_weight: float = 10.0):
    """d_loss (+ regulariser) and the critic's logits on the stopped fakes (reused by the bracket)."""
    if reg == "r1":
        x_real = x_real.detach().requires_grad_(True)
    real, fake_sg = D(x_real), D(x_fake_sg)
    d_loss = loss.d_loss(real, fake_sg)
    stats = {"d_loss": d_loss.detach(), "d_real": real.detach().float().mean(),
             "d_fake": fake_sg.detach().float().mean(),
             **critic_accuracy(real, fake_sg, getattr(loss, "temperature", 1.0))}
    total = d_loss
    if reg == "r1":
        penalty = r1_penalty(real, x_real)
        total = total + 0.5 * reg_weight * penalty
        stats["r1"] = penalty.detach()
    elif reg == "gp":
        penalty = gradient_penalty(D, x_real, x_fake_sg)
        total = total + reg_weight * penalty
        stats["gp"] = penalty.detach()
    return total, fake_sg, stats


def one_loss_objective(G, D, loss, x_real, z, reg: str = "none", reg_weight: float = 10.0):
    """The single scalar of synchronous training and its terms (see the module docstring)."""
    x_fake = G(z)
    x_sg = x_fake.detach()
    d_total, fake_sg, stats = critic_objective(D, loss, x_real, x_sg, reg, reg_weight)
    g_loss = loss.g_loss(D(x_fake))
    bracket = g_loss - loss.g_loss(fake_sg)
    stats.update(g_loss=g_loss.detach(), bracket=bracket.detach())
    return d_total + bracket, stats
