"""Smoothed functions: each stays within its stated bound of the exact function and converges to it
as K → ∞; gradients are finite everywhere; smooth F1 lies in [0, 1] and is exact on one-hot
predictions; smooth_hinge is the margin-shifted logistic loss at K = 1 and the hinge as K → ∞; the
critic's smoothed accuracies tend to the exact ones."""
import math

import pytest
import torch
import torch.nn.functional as F

from common import smooth
from conftest import quick_config
from common.registry import names
from gan.losses import Hinge, Logistic, SmoothHinge
from gan.steps import critic_accuracy, critic_loss

KS = [1.0, 10.0, 100.0, 1000.0]


def test_smooth_max_and_min_are_within_log_n_over_K():
    x = torch.randn(50, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = []
    for K in KS:
        gap = smooth.smooth_max(x, K) - x.max(-1).values
        assert (gap >= -1e-12).all() and (gap <= math.log(7) / K + 1e-12).all()
        low = x.min(-1).values - smooth.smooth_min(x, K)
        assert (low >= -1e-12).all() and (low <= math.log(7) / K + 1e-12).all()
        errors.append(gap.max().item())
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-2
    ties = torch.zeros(1, 7, dtype=torch.float64)  # equal entries: the bound is attained
    assert torch.allclose(smooth.smooth_max(ties, 10.0), torch.tensor([math.log(7) / 10], dtype=torch.float64))


def test_smooth_relu_and_abs_are_within_their_bounds_with_the_worst_case_at_zero():
    x = torch.arange(-500, 501, dtype=torch.float64) / 100  # x[500] = 0 exactly
    for K in KS:
        relu_err = smooth.smooth_relu(x, K) - F.relu(x)
        abs_err = smooth.smooth_abs(x, K) - x.abs()
        assert (relu_err >= -1e-12).all() and relu_err.max() <= math.log(2) / K + 1e-12
        assert (abs_err > 0).all() and abs_err.max() <= 1 / K + 1e-12
        assert relu_err.argmax() == abs_err.argmax() == 500
        assert math.isclose(relu_err[500].item(), math.log(2) / K, rel_tol=1e-9)


def test_soft_onehot_argmax_and_step_converge_at_the_stated_rate():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64)
    top2 = x.topk(2, dim=-1).values
    gap = (top2[:, 0] - top2[:, 1])[:, None]
    onehot = F.one_hot(x.argmax(-1), 6).double()
    for K in KS:
        l1 = (smooth.soft_onehot(x, K) - onehot).abs().sum(-1, keepdim=True)
        assert (l1 <= 2 * 5 * torch.exp(-K * gap) + 1e-12).all()
        err = (smooth.soft_argmax(x, K) - x.argmax(-1)).abs()[:, None]
        assert (err <= 25 * torch.exp(-K * gap) + 1e-12).all()
        step_err = (smooth.smooth_step(x, K) - (x > 0).double()).abs()
        assert (step_err <= torch.exp(-K * x.abs()) + 1e-12).all()
    assert torch.equal(smooth.soft_argmax(x, 1e6).round().long(), x.argmax(-1))


def test_smooth_accuracy_converges_to_accuracy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(500, 10, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 10, (500,), generator=g)
    top2 = logits.topk(2, dim=-1).values
    gap = (top2[:, 0] - top2[:, 1]).min()
    exact = smooth.accuracy(logits, labels)
    assert exact.item() == pytest.approx((logits.argmax(-1) == labels).sum().item() / 500)
    for K in KS + [1e5]:
        assert (smooth.smooth_accuracy(logits, labels, K) - exact).abs() <= 9 * torch.exp(-K * gap) + 1e-12
    assert torch.isclose(smooth.smooth_accuracy(logits, labels, 1e7), exact.float())


def macro_f1_by_counting(pred, labels, num_classes):
    """Reference: per-class counts in plain Python, 0 where a class is neither present nor predicted."""
    scores = []
    for c in range(num_classes):
        tp = sum(int(p == c and y == c) for p, y in zip(pred, labels))
        fp = sum(int(p == c and y != c) for p, y in zip(pred, labels))
        fn = sum(int(p != c and y == c) for p, y in zip(pred, labels))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(scores) / num_classes


def test_smooth_f1_is_in_the_unit_interval_and_exact_on_one_hot_predictions():
    g = torch.Generator().manual_seed(2)
    logits = 3 * torch.randn(300, 5, generator=g)
    labels = torch.randint(0, 4, (300,), generator=g)  # class 4 never present: a 0/0 class
    exact = macro_f1_by_counting(logits.argmax(-1).tolist(), labels.tolist(), 5)
    assert math.isclose(smooth.macro_f1(logits, labels).item(), exact, rel_tol=1e-6)
    for K in [1e-3] + KS:
        value = smooth.smooth_macro_f1(logits, labels, K).item()
        assert 0.0 <= value <= 1.0
    onehot = F.one_hot(logits.argmax(-1), 5).float()
    assert math.isclose(smooth.f1_from_probs(onehot, labels).item(), exact, rel_tol=1e-6)
    assert math.isclose(smooth.smooth_macro_f1(logits, labels, 1e4).item(), exact, rel_tol=1e-4)
    perfect = 50 * F.one_hot(labels, 5).float()
    assert math.isclose(smooth.smooth_macro_f1(perfect, labels, 1.0).item(), 4 / 5, rel_tol=1e-6)


@pytest.mark.parametrize("K", [1e-2, 1.0, 1e4])
def test_gradients_are_finite_everywhere(K):
    x = torch.tensor([[0.0, 0.0, -1e3, 1e3, 1e-8, -1e-8, 3.0, 3.0]], requires_grad=True)
    labels = torch.tensor([1])
    values = [smooth.smooth_max(x, K).sum(), smooth.smooth_min(x, K).sum(),
              smooth.soft_onehot(x, K)[:, 0].sum(), smooth.soft_argmax(x, K).sum(),
              smooth.smooth_step(x, K).sum(), smooth.smooth_relu(x, K).sum(), smooth.smooth_abs(x, K).sum(),
              smooth.smooth_accuracy(x, labels, K), smooth.smooth_macro_f1(x, labels, K)]
    for value in values:
        (grad,) = torch.autograd.grad(value, x)
        assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_smooth_hinge_is_the_margin_shifted_logistic_loss_and_tends_to_the_hinge():
    g = torch.Generator().manual_seed(3)
    real, fake = 3 * torch.randn(1000, generator=g, dtype=torch.float64), 3 * torch.randn(1000, generator=g, dtype=torch.float64)
    # K = 1: softplus(1 − t) = softplus(−(t − 1)), the logistic loss with the logits moved by the margin.
    assert torch.isclose(SmoothHinge(1.0).d_loss(real, fake), Logistic().d_loss(real - 1, fake + 1))
    for K in KS:
        d = SmoothHinge(K).d_loss(real, fake)
        assert torch.isclose(d, Logistic().d_loss(K * (real - 1), K * (fake + 1)) / K)
        excess = d - Hinge().d_loss(real, fake)
        assert 0 < excess <= 2 * math.log(2) / K
    assert SmoothHinge(5.0).g_loss(fake) == Hinge().g_loss(fake)
    assert "smooth_hinge" in names("gan_loss")


def test_gan_config_temperature_reaches_the_loss():
    from common.errors import ConfigError
    from engine import build
    from data import DataInfo
    cfg = quick_config("gan_fashion.yaml", "gan.loss=smooth_hinge", "gan.temperature=4")
    method = build(cfg, "cpu", info=DataInfo("fashion_mnist", (1, 28, 28), 10))
    assert isinstance(method.loss, SmoothHinge) and method.loss.temperature == 4.0
    with pytest.raises(ConfigError, match="gan.temperature: must be positive"):
        quick_config("gan_fashion.yaml", "gan.temperature=0")


def test_critic_accuracy_exact_and_smoothed():
    real = torch.tensor([2.0, 0.5, -1.0, 3.0])   # 3 of 4 called real
    fake = torch.tensor([-2.0, 1.0, -0.1, -4.0])  # 3 of 4 called fake
    exact = critic_accuracy(real, fake, 1.0)
    assert exact["acc_real"] == 0.75 and exact["acc_fake"] == 0.75
    assert torch.isclose(exact["sacc_real"], torch.sigmoid(real).mean())  # D's mean P(real) at K = 1
    sharp = critic_accuracy(real, fake, 1e4)
    assert torch.isclose(sharp["sacc_real"], sharp["acc_real"]) and torch.isclose(sharp["sacc_fake"], sharp["acc_fake"])


def test_least_squares_decides_at_its_optimal_critics_midpoint():
    """LSGAN's critic optimum is D* = p/(p + q) (its gradient vanishes there), ½ where the data and
    the generator agree: its accuracies count against ½, not 0."""
    from gan.losses import LeastSquares
    loss = LeastSquares()
    for p, q in ((0.7, 0.3), (0.5, 0.5), (0.1, 0.9)):
        d = torch.tensor(p / (p + q), dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(p * loss.d_loss(d, torch.zeros(())) + q * 0.5 * d ** 2, d)
        assert abs(grad.item()) < 1e-12
    stats = critic_loss(None, loss, torch.tensor([0.6, 0.9]), torch.tensor([0.4, 0.2]), None, None)[1]
    assert stats["acc_real"] == 1.0 and stats["acc_fake"] == 1.0  # at threshold 0 acc_fake would read 0
