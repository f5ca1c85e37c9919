"""The ways to train a GAN, as objectives the method turns into optimizer steps.

One loss (synchronous training): one scalar whose single backward pass gives each player its own
gradient. The generator's term goes through the critic with its *parameters* stopped:

    L = d_loss(D(x), D(sg(G(z)))) + g_loss(D_sg(G(z))),     sg = detach,  D_sg = D with detached weights

G reaches L only through g_loss, so its gradient is ∇g_loss; D's weights reach L only through
d_loss, so D's gradient is exactly ∇d_loss (and the pass D_sg(G(z)) computes no weight gradient).
D(sg(G(z))) and D_sg(G(z)) have the same value, so they share one forward pass. Both players then
step together from the same (pre-update) weights: one backward, one optimizer step.

The seed's bracket form (`one_loss_bracket`, kept for comparison and teaching) reaches the same
gradients in exact arithmetic by adding and subtracting the generator's term:

    L = d_loss(D(x), D(sg(G(z)))) + [g_loss(D(G(z))) − g_loss(D(sg(G(z))))]

The bracket is numerically zero and its two terms give D opposite gradients, ∇_D g_loss(D(G(z)))
and −∇_D g_loss(D(sg(G(z)))). In floating point D's gradient is then assembled as ∇d_loss plus a
difference of two terms that can be much larger than it (|∂g_loss/∂f| ≫ |∂d_loss/∂f| for a confident
critic under the logistic loss), so it carries their rounding error: 0.35 relative error in bf16 at
logits +7/−5 where ∇d_loss alone has 0.007 (tests/test_gan.py). It also computes D's weight gradient
twice on the live pass only to cancel it.

Alternating: n_critic critic steps, then one generator step on the last critic step's fakes.

With `augment` (gan.augment, gan/augment.py) the critic sees T(x) for every image x, real or
generated, in every step: the objectives above with D(·) read as D(T(·)), T differentiable so that
G's gradient passes through it. Each player draws its own T for a fake, D(T₁(sg G(z))) in d_loss and
D_sg(T₂(G(z))) in g_loss, as the alternating step draws anew for its generator part, so that the
generator's gradient is independent of the draw the critic's update follows. One shared T measured
worse at one seed of two and level at the other (cifar10_dcgan_cpu.yaml's header), at less cost:
its two views are one critic forward on the fakes (split_gradients), where two draws take two
(cifar10_dcgan_cpu.yaml on a 2-core AMD EPYC, bf16, interleaved: 50.8 → 55.5 ms a step compiled,
51.0 → 54.1 eager; alternating 57.2 and 55.8). The bracket form keeps one T (its two terms must
cancel) and so does the fused step (one critic pass by construction).

Each step is registered by its gan.step name (`@register("gan_step", NAME)`): a one-loss objective
(G, D, loss, x_real, z, reg, reg_weight) → (L, stats), or, with `alternating=True`, the critic part of
an alternating step; `fused=True` marks a step exact only for fusable losses and per-sample critics.
A class-conditional GAN passes the real batch's labels and the fakes' (`y_real`, `y_fake`, keywords):
G(z, y_fake), D(x, y_real), D(G(z), y_fake); an unconditional one passes none, and its networks are
called with their input alone. Every step also takes `augment` (None, or T above), which it applies
(critic_view) to every batch it shows the critic.
"""
from __future__ import annotations

import torch

from common.registry import lookup, register
from common.stopgrad import frozen, split_gradients
from common.smooth import smooth_step


def critic_accuracy(real, fake, temperature: float = 1.0, threshold: float = 0.0) -> dict:
    """How often the critic tells real from fake (D(x) > t, D(G(z)) < t at the loss's decision
    threshold t), exact and smoothed: sigmoid(K·(logit − t)) = softmax(K·[logit − t, 0])₀ is the smooth
    accuracy of the two-way decision (common/smooth.py), with K the loss's temperature (1 for the
    losses that have none)."""
    real, fake = real.detach().float() - threshold, fake.detach().float() - threshold
    return {"acc_real": (real > 0).float().mean(), "acc_fake": (fake < 0).float().mean(),
            "sacc_real": smooth_step(real, temperature).mean(),
            "sacc_fake": smooth_step(-fake, temperature).mean()}


def call(net, x, labels=None):
    """net(x), or net(x, labels) for a class-conditional network."""
    return net(x) if labels is None else net(x, labels)


def critic_view(x, augment=None):
    """What the critic is shown of x: x itself, or its augmentation T(x) (gan.augment)."""
    return x if augment is None else augment(x)


def watch_reals(x_real, reg: str):
    """The real batch, made to require its gradient when the regulariser differentiates D there (R1)."""
    if getattr(lookup("gan_reg", reg), "needs_real_grad", False):
        return x_real.detach().requires_grad_(True)
    return x_real


def critic_objective(D, loss, x_real, x_fake_sg, reg: str = "none", reg_weight: float = 10.0,
                     y_real=None, y_fake=None, augment=None):
    """d_loss (+ regulariser) and the critic's logits on the stopped fakes (reused by the bracket),
    both batches augmented first when `augment` is given."""
    x_real = watch_reals(critic_view(x_real, augment), reg)
    x_fake_sg = critic_view(x_fake_sg, augment)
    real, fake_sg = call(D, x_real, y_real), call(D, x_fake_sg, y_fake)
    total, stats = critic_loss(D, loss, real, fake_sg, x_real, x_fake_sg, reg, reg_weight, y_real)
    return total, fake_sg, stats


def critic_loss(D, loss, real, fake, x_real, x_fake_sg, reg: str = "none", reg_weight: float = 10.0,
                y_real=None):
    """d_loss on given logits, plus the regulariser gan.reg names (gan/losses.py: R1, γ/2·E‖∇D(x)‖²
    on real, reusing its forward; or the gradient penalty, λ·E(‖∇D(x̂)‖ − 1)², at the real labels),
    logged under its name."""
    d_loss = loss.d_loss(real, fake)
    stats = {"d_loss": d_loss.detach(), "d_real": real.detach().float().mean(),
             "d_fake": fake.detach().float().mean(),
             **critic_accuracy(real, fake, getattr(loss, "temperature", 1.0), getattr(loss, "threshold", 0.0))}
    total = d_loss
    regulariser = lookup("gan_reg", reg)
    if regulariser.penalty is not None:
        critic = D if y_real is None else (lambda x: D(x, y_real))
        penalty = regulariser.penalty(critic, real, x_real, x_fake_sg)
        total = total + regulariser.factor * reg_weight * penalty
        stats[reg] = penalty.detach()
    return total, stats


@register("gan_step", "one_loss")
def one_loss_objective(G, D, loss, x_real, z, reg: str = "none", reg_weight: float = 10.0,
                       y_real=None, y_fake=None, augment=None):
    """L = d_loss(D(x), D(sg(G(z)))) + g_loss(D_sg(G(z))) and its terms (module docstring). The
    critic's two views of the fakes share one forward pass (common/stopgrad.py), or under DiffAugment
    take two, one for each player's own draw of T."""
    x_fake = call(G, z, y_fake)
    x_fake_sg = critic_view(x_fake.detach(), augment)  # the critic's view, T₁(sg G(z))
    x_real = watch_reals(critic_view(x_real, augment), reg)
    real = call(D, x_real, y_real)
    if augment is None:
        fake_sg, fake = split_gradients(D, x_fake, y_fake)
        g_loss = loss.g_loss(fake)
    else:  # G's term on its own draw T₂(G(z)): the alternating step's generator part, at the same weights
        fake_sg = call(D, x_fake_sg, y_fake)
        g_loss = generator_objective(D, loss, x_fake, y_fake, augment)
    d_total, stats = critic_loss(D, loss, real, fake_sg, x_real, x_fake_sg, reg, reg_weight, y_real)
    stats["g_loss"] = g_loss.detach()
    return d_total + g_loss, stats


@register("gan_step", "one_loss_bracket")
def bracket_one_loss_objective(G, D, loss, x_real, z, reg: str = "none", reg_weight: float = 10.0,
                               y_real=None, y_fake=None, augment=None):
    """The seed's form, L = d_loss(D(x), D(sg(G(z)))) + [g_loss(D(G(z))) − g_loss(D(sg(G(z))))]:
    the same gradients in exact arithmetic, D's assembled by cancellation (module docstring)."""
    x_fake = critic_view(call(G, z, y_fake), augment)  # one T for the bracket's two terms
    x_sg = x_fake.detach()
    d_total, fake_sg, stats = critic_objective(D, loss, critic_view(x_real, augment), x_sg, reg, reg_weight,
                                               y_real, y_fake)
    g_loss = loss.g_loss(call(D, x_fake, y_fake))
    bracket = g_loss - loss.g_loss(fake_sg)
    stats.update(g_loss=g_loss.detach(), bracket=bracket.detach())
    return d_total + bracket, stats


@register("gan_step", "alternating", alternating=True)
def critic_step_objective(G, D, loss, x_real, z, reg: str = "none", reg_weight: float = 10.0,
                          critic=critic_objective, keep_graph: bool = True, y_real=None, y_fake=None,
                          augment=None):
    """The alternating step's critic part on fresh fakes G(z), and the fakes for its generator part
    (generator_objective): (d_loss + regulariser, stats, G(z)), G(z) with its graph when
    `keep_graph`. G's forward stays outside `critic` (critic_objective, which the method compiles
    alone): a compiled function is one autograd node, and the critic's backward would free what
    the generator's needs."""
    with torch.set_grad_enabled(keep_graph and torch.is_grad_enabled()):
        x_fake = call(G, z, y_fake)
    total, _, stats = critic(D, loss, x_real, x_fake.detach(), reg, reg_weight, y_real, y_fake, augment=augment)
    return total, stats, x_fake


def generator_objective(D, loss, x_fake, y_fake=None, augment=None):
    """The alternating step's generator part: g_loss on the critic's view of the fakes, through
    the critic's stopped weights (its gradient is not needed)."""
    return loss.g_loss(call(frozen(D), critic_view(x_fake, augment), y_fake))


# The critic derivative a fused pass carries for a fake is floored here: below it, the sample's
# contribution to D's weights is lost in rounding anyway, and G's gradient must not underflow with it.
COTANGENT_FLOOR = 2.0 ** -64


class _SharedIdentity(torch.autograd.Function):
    """Identity in the forward pass, with a dict its backward shares with another's."""

    @staticmethod
    def forward(ctx, x, shared: dict):
        ctx.shared = shared
        return x.view_as(x)


class _FakeLogits(_SharedIdentity):
    """Identity on the fake logits f. Backward: the cotangent c = ∂d_loss/∂f that D's backward is
    about to carry, floored at COTANGENT_FLOOR/B (both fused losses have c > 0), and recorded so
    that the input side can turn it into ∂g_loss/∂f."""

    @staticmethod
    def backward(ctx, cotangent):
        cotangent = cotangent.clamp(min=COTANGENT_FLOOR / cotangent.numel())
        ctx.shared["d_grad"] = cotangent
        return cotangent, None


class _RescaleGrad(_SharedIdentity):
    """Identity on the fakes G(z). Backward: sample i's gradient c_i·∂f_i/∂x_i, rescaled by
    g_i/c_i with g_i = ∂g_loss/∂f_i, becomes ∂g_loss/∂x_i (g and c arrive through `shared`)."""

    @staticmethod
    def backward(ctx, grad):
        g, c = ctx.shared["g_grad"], ctx.shared["d_grad"]
        dtype = torch.promote_types(c.dtype, torch.float32)
        ratio = g.to(dtype) / c.to(dtype)
        return grad * ratio.view(-1, *([1] * (grad.dim() - 1))).to(grad.dtype), None


@register("gan_step", "one_loss_fused", fused=True)
def fused_one_loss_objective(G, D, loss, x_real, z, reg: str = "none", reg_weight: float = 10.0,
                             y_real=None, y_fake=None, augment=None):
    """The one-loss step with a single critic pass on the fakes, f = D(G(z)) (2 critic forwards
    and backwards instead of 3).

    D's parameters get ∇d_loss through f as usual. The gradient reaching G(z) is the one d_loss
    sends, c_i·∂f_i/∂x_i with c_i = ∂d_loss/∂f_i, rescaled per sample by g_i/c_i (g_i = ∂g_loss/∂f_i),
    which turns it into ∇_x g_loss: gradient reversal for the Wasserstein loss (g/c = −1), −exp(−f)
    for the logistic one. That is exact when f_i depends on x_i alone (no BatchNorm in D) and c_i
    never vanishes; GAN.check_config refuses the other cases. The ratio is taken of the computed
    c and g, never as exp(−f) (which overflows below f ≈ −88), and c is floored at
    COTANGENT_FLOOR/B before D's backward: for a fake the critic is sure of (logistic f = −100 in
    fp32, −1000 in any precision), σ(f) underflows, and G's gradient, c·(g/c), would be 0·∞.
    With the floor G's gradient stays exact, and D's weights get at most 2⁻⁶⁴·|∂f_i/∂θ|/B more.
    """
    x_fake = critic_view(call(G, z, y_fake), augment)  # T acts per image: D∘T stays per-sample
    x_real = watch_reals(critic_view(x_real, augment), reg)
    shared = {}
    real = call(D, x_real, y_real)
    fake = _FakeLogits.apply(call(D, _RescaleGrad.apply(x_fake, shared), y_fake), shared)
    shared["g_grad"] = loss.g_grad(fake.detach().to(torch.promote_types(fake.dtype, torch.float32)))
    total, stats = critic_loss(D, loss, real, fake, x_real, x_fake.detach(), reg, reg_weight, y_real)
    stats["g_loss"] = loss.g_loss(fake.detach())
    return total, stats
