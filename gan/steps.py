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
    total, stats = critic_loss(D, loss, real, fake_sg, x_real, x_fake_sg, reg, reg_weight)
    return total, fake_sg, stats


def critic_loss(D, loss, real, fake, x_real, x_fake_sg, reg: str = "none", reg_weight: float = 10.0):
    """d_loss on given logits, plus R1 (on real, reusing its forward) or the gradient penalty."""
    d_loss = loss.d_loss(real, fake)
    stats = {"d_loss": d_loss.detach(), "d_real": real.detach().float().mean(),
             "d_fake": fake.detach().float().mean(),
             **critic_accuracy(real, fake, getattr(loss, "temperature", 1.0))}
    total = d_loss
    if reg == "r1":
        penalty = r1_penalty(real, x_real)
        total = total + 0.5 * reg_weight * penalty
        stats["r1"] = penalty.detach()
    elif reg == "gp":
        penalty = gradient_penalty(D, x_real, x_fake_sg)
        total = total + reg_weight * penalty
        stats["gp"] = penalty.detach()
    return total, stats


def one_loss_objective(G, D, loss, x_real, z, reg: str = "none", reg_weight: float = 10.0):
    """The single scalar of synchronous training and its terms (see the module docstring)."""
    x_fake = G(z)
    x_sg = x_fake.detach()
    d_total, fake_sg, stats = critic_objective(D, loss, x_real, x_sg, reg, reg_weight)
    g_loss = loss.g_loss(D(x_fake))
    bracket = g_loss - loss.g_loss(fake_sg)
    stats.update(g_loss=g_loss.detach(), bracket=bracket.detach())
    return d_total + bracket, stats


def generator_objective(D, loss, x_fake):
    """The alternating step's generator part: g_loss on the critic's view of the fakes."""
    return loss.g_loss(D(x_fake))


class _RescaleGrad(torch.autograd.Function):
    """Identity forward; the backward multiplies sample i's gradient by ratio[i], a tensor that is
    only known after the critic's forward pass (so it arrives through a list)."""

    @staticmethod
    def forward(ctx, x, ratio: list):
        ctx.ratio = ratio
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        r = ctx.ratio[0]
        return grad * r.view(-1, *([1] * (grad.dim() - 1))).to(grad.dtype), None


def fused_one_loss_objective(G, D, loss, x_real, z, reg: str = "none", reg_weight: float = 10.0):
    """The one-loss step with a single critic pass on the fakes, f = D(G(z)) (2 critic forwards
    and backwards instead of 3).

    D's parameters get ∇d_loss through f as usual. The gradient reaching G(z) is the one d_loss
    sends, ∂d_loss/∂f_i · ∂f_i/∂x_i, rescaled per sample by r_i = (∂g_loss/∂f_i)/(∂d_loss/∂f_i), which
    turns it into ∂g_loss/∂f_i · ∂f_i/∂x_i = ∇_x g_loss. That is exact when f_i depends on x_i alone
    (no BatchNorm in D) and ∂d_loss/∂f_i never vanishes: r = −1 for the Wasserstein loss (gradient
    reversal) and r = −exp(−f) for the logistic loss. GAN.check_config refuses the other cases.
    """
    x_fake = G(z)
    if reg == "r1":
        x_real = x_real.detach().requires_grad_(True)
    ratio = []
    real = D(x_real)
    fake = D(_RescaleGrad.apply(x_fake, ratio))
    ratio.append(loss.fused_ratio(fake.detach().float()))
    total, stats = critic_loss(D, loss, real, fake, x_real, x_fake.detach(), reg, reg_weight)
    stats["g_loss"] = loss.g_loss(fake.detach())
    return total, stats
