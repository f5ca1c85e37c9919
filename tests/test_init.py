"""Initialisation facts: Gaussian 1/fan_in is nearly norm-preserving in high dimension, orthogonal
is exactly so, and through 20 ReLU layers Kaiming keeps activations in a band while std=1 explodes
and std=0.01 vanishes."""
import pytest
import torch
from torch import nn

from common.config import InitConfig
from common.init import activation_profile, fans, initialize, layer_report


def test_fan_in_gaussian_preserves_norms_within_a_few_percent():
    torch.manual_seed(0)
    layer = initialize(nn.Linear(1024, 1024), InitConfig(scheme="fan_in_normal"))
    x = torch.randn(1024, 1000)
    ratio = (layer.weight @ x).norm(dim=0) / x.norm(dim=0)
    assert (ratio - 1).abs().max() < 0.12          # every vector within ~12%
    assert abs(ratio.mean().item() - 1) < 0.02      # on average within 2%
    report = layer_report(layer, generator=torch.Generator().manual_seed(0))[0]
    assert abs(report["gain"] - 1) < 0.02
    # nearly orthogonal, increasingly so with dimension: the RMS entry of WᵀW − I is about 1/√n
    small = layer_report(initialize(nn.Linear(64, 64), InitConfig(scheme="fan_in_normal")))[0]
    assert report["orthogonality_error"] < 1.2 / 1024 ** 0.5
    assert report["orthogonality_error"] < small["orthogonality_error"] / 3


def test_orthogonal_init_is_exactly_norm_preserving():
    layer = initialize(nn.Linear(256, 256), InitConfig(scheme="orthogonal"))
    x = torch.randn(256, 100, dtype=torch.float64)
    ratio = (layer.weight.double() @ x).norm(dim=0) / x.norm(dim=0)
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5)
    assert layer_report(layer)[0]["orthogonality_error"] < 1e-5


def deep_relu(scheme: str, **kw) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(*[m for _ in range(20) for m in (nn.Linear(512, 512), nn.ReLU())])
    return initialize(net, InitConfig(scheme=scheme, **kw))


def relu_rms(net):
    x = torch.randn(256, 512)
    return [r["rms"] for r in activation_profile(net, x) if r["layer"].endswith(tuple("13579"))][-20:]


def test_depth_20_relu_kaiming_bounded_std1_explodes_std001_vanishes():
    kaiming = relu_rms(deep_relu("kaiming_normal"))
    assert len(kaiming) == 20
    assert 0.3 < min(kaiming) and max(kaiming) < 3.0   # a bounded band around the input's RMS 1
    assert relu_rms(deep_relu("normal", std=1.0))[-1] > 1e15   # ×√(512/2) = 16 per layer
    assert relu_rms(deep_relu("normal", std=0.01))[-1] < 1e-10  # ×0.16 per layer


def test_every_scheme_sets_biases_and_norms_and_keeps_spectral_norm():
    from torch.nn.utils.parametrizations import spectral_norm
    for scheme in ("normal", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
                   "orthogonal", "fan_in_normal"):
        net = nn.Sequential(spectral_norm(nn.Conv2d(3, 8, 3)), nn.BatchNorm2d(8), nn.ConvTranspose2d(8, 4, 4, 2, 1))
        initialize(net, InitConfig(scheme=scheme))
        assert net[0].bias.abs().sum() == 0 and net[2].bias.abs().sum() == 0
        assert net[1].bias.abs().sum() == 0
        w = net[0].weight  # still spectrally normalised after re-initialisation
        assert torch.linalg.matrix_norm(w.detach().reshape(8, -1), ord=2).item() == pytest.approx(1.0, rel=0.02)


def test_fans_count_inputs_reaching_one_output():
    assert fans(nn.Linear(10, 20)) == (10, 20)
    assert fans(nn.Conv2d(3, 8, 3)) == (27, 72)
    # a stride-2 4×4 transposed conv: each output pixel sees in_channels · 16 / 4 taps
    assert fans(nn.ConvTranspose2d(64, 32, 4, 2, 1))[0] == 64 * 4


def test_kaiming_keeps_the_unit_second_moment_through_a_relu_conv():
    torch.manual_seed(0)
    conv = initialize(nn.Conv2d(64, 64, 3, padding=1), InitConfig(scheme="kaiming_normal"))
    x = torch.randn(16, 64, 32, 32)
    y = torch.relu(conv(x))
    # Var(conv(x)) = 2 (He gain²) and ReLU halves the second moment: E[y²] ≈ 1
    assert y.pow(2).mean().item() == pytest.approx(1.0, rel=0.1)
