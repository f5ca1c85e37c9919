"""Fast paths: each switch leaves the numerics of the fp32 eager baseline unchanged within float
tolerance; the fused one-loss step is exact where it claims to be and refused elsewhere."""
import copy

import pytest
import torch

from common.errors import ConfigError
from common.loop import build, train
from conftest import quick_config
from data import DataInfo
from gan.losses import LOSSES
from gan.models import DCGANDiscriminator, DCGANGenerator, ResNetDiscriminator
from gan.steps import critic_objective, fused_one_loss_objective, one_loss_objective

INFO = DataInfo("fashion_mnist", (1, 28, 28), 10)


def grads(net):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in net.parameters()]


@pytest.mark.parametrize("loss_name", ["wasserstein", "logistic"])
@pytest.mark.parametrize("reg", ["none", "r1", "gp"])
@pytest.mark.parametrize("critic", ["dcgan_sn", "resnet"])
def test_fused_one_loss_gives_the_same_gradients_as_the_reference(loss_name, reg, critic):
    torch.manual_seed(0)
    G = DCGANGenerator(8, 32, 3, 8)
    D = (DCGANDiscriminator(32, 3, 8, batchnorm=False, spectral_norm=True) if critic == "dcgan_sn"
         else ResNetDiscriminator(32, 3, 8))
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    loss = LOSSES[loss_name]()
    x, z = torch.rand(12, 3, 32, 32) * 2 - 1, torch.randn(12, 8)
    torch.manual_seed(1)
    ref, _ = one_loss_objective(G, D, loss, x, z, reg)
    ref.backward()
    torch.manual_seed(1)
    fused, stats = fused_one_loss_objective(G2, D2, loss, x, z, reg)
    fused.backward()
    for a, b in zip(grads(G) + grads(D), grads(G2) + grads(D2)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in grads(G2))


def test_fused_one_loss_is_refused_where_it_would_be_wrong():
    with pytest.raises(ConfigError, match="wasserstein, logistic.*not hinge"):
        quick_config("gan_fashion.yaml", "gan.step=one_loss_fused", "gan.loss=hinge", "model.d_batchnorm=false")
    with pytest.raises(ConfigError, match="treats samples independently.*model.d_batchnorm=false"):
        quick_config("gan_fashion.yaml", "gan.step=one_loss_fused")


def one_step_params(*overrides, steps=2):
    cfg = quick_config("gan_fashion.yaml", "train.ema=null", "gan.step=one_loss", *overrides)
    torch.manual_seed(0)
    m = build(cfg, "cpu", info=INFO)
    x = torch.rand(16, 1, 28, 28) * 2 - 1
    if cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(steps):
        m.training_step(x)
    return [p.detach().clone() for p in m.nets.parameters()]


@pytest.mark.parametrize("switch", [["train.channels_last=true"], ["optim.fused=true"],
                                    ["gan.step=one_loss_fused", "gan.loss=logistic", "model.d_batchnorm=false"]])
def test_switches_keep_the_baseline_numerics(switch):
    baseline = one_step_params(*[s for s in switch if s.startswith("model.")])
    fast = one_step_params(*switch)
    for a, b in zip(baseline, fast):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("critic", ["batchnorm", "spectral_norm"])
def test_training_objectives_trace_to_one_graph(critic):
    """What train.compile compiles is each method's whole objective: every network's forward and
    the loss as one graph (so AOTAutograd's backward is one graph too), with no graph break. The
    spectral-norm critic qualifies because its power iteration runs outside the forward."""
    from denoising.denoiser import Denoiser
    from denoising.losses import dsm_objective
    from denoising.models import UNet
    torch.manual_seed(0)
    G = DCGANGenerator(8, 32, 3, 8)
    D = DCGANDiscriminator(32, 3, 8, batchnorm=critic == "batchnorm", spectral_norm=critic == "spectral_norm")
    x, z, loss = torch.rand(4, 3, 32, 32) * 2 - 1, torch.randn(4, 8), LOSSES["logistic"]()
    denoiser = Denoiser(UNet(3, 8, (1, 2), 1), "direct")
    cases = [(one_loss_objective, (G, D, loss, x, z)), (critic_objective, (D, loss, x, G(z).detach())),
             (dsm_objective, (denoiser, x, torch.rand(4) + 0.1))]
    for fn, args in cases:
        torch._dynamo.reset()
        explained = torch._dynamo.explain(fn)(*args)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), (fn.__name__, explained.break_reasons)


@pytest.mark.parametrize("overrides", [["gan.step=one_loss", "model.d_batchnorm=false", "model.d_spectral_norm=true"],
                                       ["gan.step=alternating"]])
def test_compiled_gan_steps_keep_the_baseline_numerics(overrides):
    baseline = one_step_params(*overrides, steps=2)
    compiled = one_step_params(*overrides, "train.compile=true", steps=2)
    for a, b in zip(baseline, compiled):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_compiled_denoising_step_keeps_the_baseline_numerics(monkeypatch):
    """The DSM objective draws its noise inside the compiled graph: with inductor's fallback_random
    it draws what eager draws, so the two runs can be compared."""
    import torch._inductor.config
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    info = DataInfo("toy", (2,), 1, "points")
    x = torch.randn(64, 2)

    def params(*overrides):
        torch.manual_seed(0)
        m = build(quick_config("ncsn_toy.yaml", "ncsn.step_lr=1e-4", "train.ema=null", *overrides), "cpu", info=info)
        for _ in range(2):
            m.training_step(x)
        return [p.detach().clone() for p in m.nets.parameters()]

    for a, b in zip(params(), params("train.compile=true")):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_unsupported_fast_path_combinations_are_one_line_errors(fashion_root, tmp_path):
    with pytest.raises(ConfigError, match="train.compile: ebm differentiates through gradients"):
        quick_config("ebm_toy.yaml", "train.compile=true")
    with pytest.raises(ConfigError, match="train.compile: gan differentiates"):
        quick_config("gan_fashion.yaml", "train.compile=true", "gan.reg=r1")
    with pytest.raises(ConfigError, match="train.cuda_graph: CUDA graphs need a CUDA device"):
        train(quick_config("gan_fashion.yaml", f"data.root={fashion_root}", "train.cuda_graph=true"), tmp_path)
    assert not (tmp_path / "checkpoints").exists()
