"""GAN objectives on critic logits, as (d_loss, g_loss) pairs, and the critic's regularisers.

Each loss is minimised by its player: D minimises d_loss(D(x), D(G(z))), G minimises g_loss(D(G(z))).
A loss is a class registered under the name `gan.loss` gives it; its constructor's arguments are
filled from the gan: section by name (smooth_hinge's `temperature`). `fusable = True` with a
`g_grad` admits it to gan.step=one_loss_fused (gan/steps.py). `threshold` is the logit at which the
critic's decision flips between fake and real (0 for the losses symmetric about 0; the least-squares
loss's targets 0 and 1 put it at ½), which loss/acc_* and loss/sacc_* measure against.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from common.registry import register
from common.smooth import smooth_relu


@register("gan_loss", "hinge")
class Hinge:
    """Lim & Ye 2017; Miyato et al. 2018: d = E[relu(1 − D(x))] + E[relu(1 + D(G(z)))], g = −E[D(G(z))]."""

    def d_loss(self, real, fake):
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()

    def g_loss(self, fake):
        return -fake.mean()


@register("gan_loss", "logistic")
class Logistic:
    """Goodfellow et al. 2014 with the non-saturating generator loss:
    d = E[softplus(−D(x))] + E[softplus(D(G(z)))] (= −log σ(D(x)) − log(1 − σ(D(G(z))))),
    g = E[softplus(−D(G(z)))] (= −log σ(D(G(z))))."""

    def d_loss(self, real, fake):
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def g_loss(self, fake):
        return F.softplus(-fake).mean()

    fusable = True  # ∂d_loss/∂f = σ(f)/B > 0 for every fake

    def g_grad(self, fake):
        """∂g_loss/∂f per sample, −σ(−f)/B (stable at any f; gan/steps.py fused step)."""
        return -torch.sigmoid(-fake) / fake.numel()


@register("gan_loss", "wasserstein")
class Wasserstein:
    """Arjovsky et al. 2017: d = E[D(G(z))] − E[D(x)], g = −E[D(G(z))] (pair with gp)."""

    def d_loss(self, real, fake):
        return fake.mean() - real.mean()

    def g_loss(self, fake):
        return -fake.mean()

    fusable = True  # ∂d_loss/∂f = 1/B for every fake

    def g_grad(self, fake):
        """∂g_loss/∂f per sample, −1/B: the generator's gradient is the critic's, reversed."""
        return torch.full_like(fake, -1.0 / fake.numel())


@register("gan_loss", "least_squares")
class LeastSquares:
    """Mao et al. 2017 (LSGAN, targets a = 0 for fakes, b = c = 1): d = ½E[(D(x) − 1)²] + ½E[D(G(z))²],
    g = ½E[(D(G(z)) − 1)²]. The optimal critic is p/(p + q), so it decides at ½."""

    threshold = 0.5

    def d_loss(self, real, fake):
        return 0.5 * (real - 1).pow(2).mean() + 0.5 * fake.pow(2).mean()

    def g_loss(self, fake):
        return 0.5 * (fake - 1).pow(2).mean()


@register("gan_loss", "smooth_hinge")
class SmoothHinge:
    """The hinge loss with its ReLU smoothed at temperature K (common/smooth.py):
    d = E[smooth_relu_K(1 − D(x))] + E[smooth_relu_K(1 + D(G(z)))],  smooth_relu_K(u) = softplus(K·u)/K,
    g = −E[D(G(z))], the hinge generator loss: it is linear in D, so there is nothing to smooth, and
    keeping it makes K change the critic's objective only.
    K → ∞: d decreases to the hinge d_loss, with 0 ≤ d − d_hinge ≤ 2·log(2)/K.
    K = 1: the logistic d_loss with a margin of 1, since softplus(1 − t) = softplus(−(t − 1)):
    d(r, f) = d_logistic(r − 1, f + 1); for any K, d(r, f) = d_logistic(K(r − 1), K(f + 1))/K."""

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def d_loss(self, real, fake):
        K = self.temperature
        return smooth_relu(1 - real, K).mean() + smooth_relu(1 + fake, K).mean()

    def g_loss(self, fake):
        return -fake.mean()


# Critic regularisers, by gan.reg: `penalty(D, real_logits, x_real, x_fake)` (None: none), added to
# d_loss as factor × gan.reg_weight × penalty and logged under the regulariser's name; `needs_real_grad`
# makes the real batch require its gradient before D's forward, so that the penalty reuses it.
@register("gan_reg", "none", penalty=None, factor=0.0)
class NoPenalty:
    """d_loss alone."""


@register("gan_reg", "r1", factor=0.5, needs_real_grad=True)
class R1:
    """R1 (Mescheder et al. 2018): γ/2·E‖∇ₓD(x)‖² on real data."""

    @staticmethod
    def penalty(D, real_logits, x_real, x_fake):
        return r1_penalty(real_logits, x_real)


@register("gan_reg", "gp", factor=1.0)
class GradientPenalty:
    """WGAN-GP (Gulrajani et al. 2017): λ·E(‖∇D(x̂)‖ − 1)² on real–fake segments."""

    @staticmethod
    def penalty(D, real_logits, x_real, x_fake):
        return gradient_penalty(D, x_real, x_fake)


def r1_penalty(real_logits: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E‖∇ₓD(x)‖² on real data; x_real must require grad and
    real_logits = D(x_real) is reused, so no extra forward pass. Weighted by γ/2."""
    (grad,) = torch.autograd.grad(real_logits.sum(), x_real, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


def gradient_penalty(D, x_real: torch.Tensor, x_fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E(‖∇D(x̂)‖ − 1)² at x̂ uniform on real–fake segments."""
    eps = torch.rand(x_real.shape[0], *([1] * (x_real.dim() - 1)), device=x_real.device, dtype=x_real.dtype)
    x_hat = (eps * x_real.detach() + (1 - eps) * x_fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
    return (grad.float().flatten(1).norm(dim=1) - 1).pow(2).mean()
