"""The EMA of the weights: its decay schedule (with warm-up) and its BatchNorm statistics."""
import copy

import pytest
import torch
from torch import nn

from engine import build
from common.ema import EMA, ema_decay
from conftest import quick_config
from data import DataInfo


@pytest.mark.parametrize("decay,warmup", [(0.9, True), (0.99, True), (0.9, False)])
def test_ema_follows_its_decay_schedule(decay, warmup):
    """W_ema ← d_t·W_ema + (1 − d_t)·W at update t = 0, 1, …, with d_t = min(decay, (1 + t)/(10 + t))
    under warm-up (else d_t = decay), starting from a copy of the network."""
    net = nn.Linear(3, 2).double()
    ema = EMA(net, decay, warmup)
    expected = [p.detach().clone() for p in net.parameters()]
    g = torch.Generator().manual_seed(0)
    for t in range(40):
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
        d = min(decay, (1 + t) / (10 + t)) if warmup else decay
        assert ema.current_decay().item() == pytest.approx(d, rel=1e-6)
        ema.update_parameters(net)
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, net.parameters())]
    for got, want in zip(ema.module.parameters(), expected):
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-7)
    assert int(ema.n_averaged) == 40


def test_ema_warmup_ends_where_the_ramp_reaches_the_decay():
    t = torch.arange(0, 20000)
    d = ema_decay(0.999, t)
    assert d[0].item() == pytest.approx(0.1) and d.max().item() == pytest.approx(0.999)
    # (1 + t)/(10 + t) ≥ 0.999 ⟺ t ≥ 8990 (float32 may round the boundary itself either way)
    assert (d[:8990].diff() > 0).all() and (d[8991:] == d[-1]).all()


def recomputed_statistics(G, z_dim, seed):
    """BatchNorm statistics of G's own weights: exact averages over 16k fresh latents."""
    G = copy.deepcopy(G)
    torch.optim.swa_utils.update_bn(
        torch.randn(16384, z_dim, generator=torch.Generator().manual_seed(seed)).split(1024), G)
    return [m for m in G.modules() if isinstance(m, nn.BatchNorm2d)]


def test_the_averaged_generator_samples_with_the_batchnorm_statistics_of_its_own_weights():
    """The average lags the trained weights, so neither the trained net's statistics nor their
    average fit it (averaged: running_var 8× too large after 400 steps at decay 0.99, starting from
    the initial 1.0). Before sampling, its statistics are recomputed for its weights."""
    cfg = quick_config("gan_fashion.yaml", "train.ema=0.99")
    torch.manual_seed(0)
    m = build(cfg, "cpu", info=DataInfo("fashion_mnist", (1, 28, 28), 10))
    x = torch.rand(16, 1, 28, 28) * 2 - 1
    for _ in range(300):
        m.training_step(x)
        m.update_ema()
    m.sample(4, torch.Generator().manual_seed(0))
    ema = m.ema["G"].module
    used = [mod for mod in ema.modules() if isinstance(mod, nn.BatchNorm2d)]
    truth = recomputed_statistics(ema, cfg.model.z_dim, seed=123)
    assert len(used) == 2
    for a, b in zip(used, truth):
        assert torch.allclose(a.running_var, b.running_var, rtol=0.05)
        assert ((a.running_mean - b.running_mean).abs() / b.running_var.sqrt()).max() < 0.05
    # ...and they are what a sample uses: the same samples as with the true statistics.
    z = torch.randn(64, cfg.model.z_dim, generator=torch.Generator().manual_seed(1))
    exact = copy.deepcopy(ema)
    for a, b in zip([mod for mod in exact.modules() if isinstance(mod, nn.BatchNorm2d)], truth):
        a.load_state_dict(b.state_dict())
    with torch.no_grad():
        assert (m.sample(64, latents=z) - exact.eval()(z)).abs().max() < 0.02


def test_sampling_leaves_the_training_random_stream_alone():
    cfg = quick_config("gan_fashion.yaml", "train.ema=0.99")
    torch.manual_seed(0)
    m = build(cfg, "cpu", info=DataInfo("fashion_mnist", (1, 28, 28), 10))
    m.training_step(torch.rand(16, 1, 28, 28))
    m.update_ema()
    state = torch.get_rng_state()
    m.sample(8, torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.get_rng_state())
