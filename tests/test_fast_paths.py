"""Fast paths: each switch leaves the numerics of the fp32 eager baseline unchanged within float
tolerance; the fused one-loss step is exact where it claims to be and refused elsewhere."""
import copy
import traceback
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from common.errors import ConfigError
from engine import build, train
from conftest import ROOT, quick_config
from data import DataInfo
from common.registry import lookup
from networks import DCGANDiscriminator, DCGANGenerator, ResNetDiscriminator
from gan.steps import critic_objective, fused_one_loss_objective, one_loss_objective
from gan.augment import Augment

INFO = DataInfo("fashion_mnist", (1, 28, 28), 10)
TOY = DataInfo("toy", (2,), 1, "points")


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
    loss = lookup("gan_loss", loss_name)()
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("logit", [-100.0, -1000.0])
def test_fused_logistic_step_is_finite_and_exact_for_a_critic_sure_of_its_fakes(logit, dtype):
    """σ(f) underflows (fp32 below f ≈ −88, any precision at −1000) where ∂g_loss/∂f = −σ(−f) ≈ −1:
    the ratio −exp(−f) overflowed and G's gradient was 0·∞ = NaN. With the critic derivative floored
    before D's backward, G gets exactly the reference gradient and D's differs by < 2⁻⁶⁴ per sample."""
    torch.manual_seed(0)
    G = DCGANGenerator(8, 32, 3, 8).to(dtype)
    D = DCGANDiscriminator(32, 3, 8, batchnorm=False).to(dtype)
    with torch.no_grad():
        D.net[-1].bias.fill_(logit)  # every logit ≈ f: the fakes' critic derivative σ(f)/B underflows
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    x, z = (torch.rand(12, 3, 32, 32) * 2 - 1).to(dtype), torch.randn(12, 8).to(dtype)
    ref, _ = one_loss_objective(G, D, lookup("gan_loss", "logistic")(), x, z)
    ref.backward()
    fused, stats = fused_one_loss_objective(G2, D2, lookup("gan_loss", "logistic")(), x, z)
    fused.backward()
    assert stats["d_fake"] == pytest.approx(logit, abs=1.0)
    for a, b in zip(grads(G), grads(G2)):
        assert torch.isfinite(b).all() and torch.allclose(a, b, rtol=1e-5, atol=1e-8)
    for a, b in zip(grads(D), grads(D2)):
        assert torch.isfinite(b).all() and torch.allclose(a, b, rtol=1e-5, atol=1e-12)
    assert sum(g.abs().sum() for g in grads(G2)) > 0


def test_fused_one_loss_is_refused_where_it_would_be_wrong():
    with pytest.raises(ConfigError, match="logistic, wasserstein.*not hinge"):
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
    from networks import UNet
    torch.manual_seed(0)
    G = DCGANGenerator(8, 32, 3, 8)
    D = DCGANDiscriminator(32, 3, 8, batchnorm=critic == "batchnorm", spectral_norm=critic == "spectral_norm")
    x, z, loss = torch.rand(4, 3, 32, 32) * 2 - 1, torch.randn(4, 8), lookup("gan_loss", "logistic")()
    denoiser = Denoiser(UNet(3, 8, (1, 2), 1), "direct")
    augment = {"augment": Augment(["color", "translation", "cutout"])}  # DiffAugment traces with the step
    cases = [(one_loss_objective, (G, D, loss, x, z), {}), (critic_objective, (D, loss, x, G(z).detach()), {}),
             (one_loss_objective, (G, D, loss, x, z), augment), (dsm_objective, (denoiser, x, torch.rand(4) + 0.1), {})]
    for fn, args, kwargs in cases:
        torch._dynamo.reset()
        explained = torch._dynamo.explain(fn)(*args, **kwargs)
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
    x = torch.randn(64, 2)

    def params(*overrides):
        torch.manual_seed(0)
        m = build(quick_config("ncsn_toy.yaml", "ncsn.sampler.step_lr=1e-4", "train.ema=null", *overrides), "cpu", info=TOY)
        for _ in range(2):
            m.training_step(x)
        return [p.detach().clone() for p in m.nets.parameters()]

    for a, b in zip(params(), params("train.compile=true")):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_unsupported_fast_path_combinations_are_one_line_errors(fashion_root, tmp_path):
    with pytest.raises(ConfigError, match="train.compile: ebm differentiates through gradients"):
        quick_config("ebm_toy.yaml", "train.compile=true")
    with pytest.raises(ConfigError, match="train.compile: gan differentiates"):
        quick_config("gan_fashion.yaml", "train.compile=true", "gan.reg=r1", "model.d_batchnorm=false")
    with pytest.raises(ConfigError, match="train.channels_last: not with train.compile"):
        quick_config("gan_fashion.yaml", "train.compile=true", "train.channels_last=true")
    with pytest.raises(ConfigError, match="train.cuda_graph: CUDA graphs need a CUDA device"):
        train(quick_config("gan_fashion.yaml", f"data.root={fashion_root}", "train.cuda_graph=true"), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


class HostSyncs(TorchDispatchMode):
    """Records every op that makes the host wait for the device: reading a value back (item, bool,
    float: aten._local_scalar_dense) or making an output whose shape depends on values. A step with
    none can be captured as a CUDA graph and never stalls the launch queue. Set `paused` around
    code that is not ours to check (torch's optimizers, which are capturable on CUDA)."""

    SYNCING = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
               torch.ops.aten.masked_select.default, torch.ops.aten._unique2.default}

    def __init__(self):
        super().__init__()
        self.found, self.paused = [], False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.SYNCING and not self.paused:
            ours = [f"{Path(f.filename).name}:{f.lineno}" for f in traceback.extract_stack()
                    if str(ROOT) in f.filename and "/tests/" not in f.filename
                    and "site-packages" not in f.filename]
            self.found.append(f"{func} at {' < '.join(reversed(ours[-3:]))}")
        return func(*args, **(kwargs or {}))

    def outside(self, fn):
        def run(*args, **kwargs):
            self.paused = True
            try:
                return fn(*args, **kwargs)
            finally:
                self.paused = False
        return run


@pytest.mark.parametrize("config,info,overrides", [
    ("gan_fashion.yaml", INFO, ["gan.step=one_loss"]),
    ("gan_fashion.yaml", INFO, ["gan.step=one_loss", "gan.n_critic=2", "model.d_batchnorm=false",
                                "model.d_spectral_norm=true", "optim.grad_clip=1.0",
                                "gan.augment=[color,translation,cutout]"]),
    ("gan_fashion.yaml", INFO, ["gan.step=one_loss_fused", "gan.loss=logistic", "model.d_batchnorm=false",
                                "gan.reg=r1"]),
    ("gan_fashion.yaml", INFO, ["gan.step=alternating", "gan.n_critic=2", "gan.reg=gp", "model.d_batchnorm=false",
                                "gan.augment=[translation,cutout]"]),
    ("ncsn_toy.yaml", TOY, ["ncsn.sampler.step_lr=1e-4", "precision=bf16"]),
    ("dae_toy.yaml", TOY, ["dae.sampler.step_lr=1e-4", "dae.sigma_sampling=log_uniform"]),
    ("ebm_toy.yaml", TOY, ["ebm.sampler.step_lr=1e-4"]),
    ("dde_toy.yaml", TOY, ["dde.q_steps=2", "optim.grad_clip=1.0"]),
], ids=["one_loss_bn", "one_loss_sn_ncritic2", "fused_r1", "alternating_gp", "ncsn_bf16", "dae", "ebm", "dde"])
def test_training_steps_never_wait_for_the_device(config, info, overrides):
    """What train.cuda_graph captures (training_step and the EMA update) reads nothing back to the
    host, so capture cannot fail on a sync and the eager step never stalls the GPU either."""
    torch.manual_seed(0)
    m = build(quick_config(config, "train.ema=0.99", *overrides), "cpu", info=info)
    x = torch.rand(2 * m.batches_per_step * 8, *info.shape) * 2 - 1
    syncs = HostSyncs()
    for opt in m.optimizers.values():
        opt.step = syncs.outside(opt.step)
    with syncs:
        for _ in range(2):  # the first step also creates the optimizer state
            stats = m.training_step(x)
            m.update_ema()
    assert not syncs.found, syncs.found
    assert all(torch.isfinite(v) for v in stats.values())


@pytest.mark.parametrize("parametrization", ["direct", "score", "energy"])
def test_graphed_langevin_path_matches_the_eager_sampler(parametrization):
    """With cuda_graph, annealed Langevin runs one step whose σ and α are device scalars filled
    before each replay. Off CUDA the same parametrised step runs eagerly: it must draw the samples
    the float path draws, and read nothing back to the host (or capture would fail)."""
    from denoising.denoiser import Denoiser
    from networks import MLP
    from denoising.samplers import annealed_langevin
    torch.manual_seed(0)
    D = Denoiser(MLP(2, 32, 2, True), parametrization)
    sigmas, x0 = [3.0, 1.0, 0.3, 0.1], 3.0 * torch.randn(64, 2)  # host floats: read once, before the loop
    run = lambda graphed: annealed_langevin(D.score, x0, sigmas, 5, 1e-2, True,
                                            torch.Generator().manual_seed(1), graphed)
    with torch.no_grad():
        eager = run(False)
        syncs = HostSyncs()
        with syncs:
            graphed = run(True)
    assert not syncs.found, syncs.found
    assert torch.allclose(eager, graphed, rtol=1e-4, atol=1e-5)
    assert (eager - x0).abs().mean() > 0.1  # the sampler moved the points
