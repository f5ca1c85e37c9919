"""Adding a part is one file: a GAN loss, a sampler and a data set registered here, inside the test,
are chosen by name through the normal config path (with the registry's checks and did-you-mean),
trained with and sampled from; nothing else in the project knows their names."""
import copy
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
import yaml

from common.config import load_config
from common.errors import ConfigError
from common.registry import register, unregister
from networks.spectral import power_iteration
from conftest import quick_config
from denoising.samplers import SamplerSettings
from engine import DataInfo, TensorData, build, load_method, train


@pytest.fixture
def minimax():
    @register("gan_loss", "minimax")
    class Minimax:
        """Goodfellow et al. 2014's saturating game: d = E[softplus(−D(x))] + E[softplus(D(G(z)))],
        g = E[log(1 − σ(D(G(z))))] = −E[softplus(D(G(z)))]."""

        def d_loss(self, real, fake):
            return F.softplus(-real).mean() + F.softplus(fake).mean()

        def g_loss(self, fake):
            return -F.softplus(fake).mean()

    yield Minimax
    unregister("gan_loss", "minimax")


@pytest.fixture
def two_points():
    @register("dataset", "two_points", points=True)
    def load(cfg, seed=0):
        """Half the points at (1, 0), half at (−1, 0)."""
        x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]]).repeat(cfg.toy_size // 2, 1)
        return TensorData(x, torch.zeros(len(x), dtype=torch.int64), DataInfo("two_points", (2,), 1, "points"))

    yield load
    unregister("dataset", "two_points")


@pytest.fixture
def tweedie():
    @register("sampler", "tweedie")
    def sample(denoiser, x, settings, schedule, generator=None, progress=False):
        """One step from x at σ_1 to the posterior mean E[x₀ | x] = D(x; σ_1) (Tweedie's formula)."""
        return denoiser(x, schedule.sigmas[0])

    yield sample
    unregister("sampler", "tweedie")


@pytest.fixture
def euler():
    @dataclass
    class EulerSettings(SamplerSettings):
        steps: int = 10                     # levels; one evaluation each

    @register("sampler", "euler", settings=EulerSettings, needs_range=True)
    def sample(denoiser, x, settings, schedule, generator=None, progress=False):
        """Euler's method on the probability-flow ODE dx/dσ = (x − D(x; σ))/σ, on EDM's levels."""
        levels = schedule.levels(settings.steps, 7.0).tolist()
        for s, t in zip(levels[:-1], levels[1:]):
            x = x + (t - s) * (x - denoiser(x, s)) / s
        return x

    yield sample
    unregister("sampler", "euler")


def test_a_registered_loss_gives_each_player_its_own_gradient_through_the_config(minimax):
    """The one-loss step with the new loss: D gets exactly ∇d_loss, G exactly ∇g_loss."""
    cfg = quick_config("gan_toy.yaml", "gan.loss=minimax", "model.d_spectral_norm=true")
    torch.manual_seed(0)
    method = build(cfg, "cpu", info=DataInfo("toy", (2,), 8, "points"))
    G, D = copy.deepcopy(method.nets["G"]), copy.deepcopy(method.nets["D"])
    x = torch.randn(32, 2)
    state = torch.get_rng_state()
    method.training_step(x)
    torch.set_rng_state(state)  # the same latents for the reference
    z = torch.randn(32, cfg.model.z_dim)
    power_iteration(D)
    loss = minimax()
    d_grads = torch.autograd.grad(loss.d_loss(D(x), D(G(z).detach())), list(D.parameters()))
    g_grads = torch.autograd.grad(loss.g_loss(D(G(z))), list(G.parameters()))
    for p, ref in zip([*method.nets["D"].parameters(), *method.nets["G"].parameters()], [*d_grads, *g_grads]):
        assert torch.allclose(p.grad, ref, atol=1e-6)


def test_a_registered_loss_and_data_set_train_and_sample_by_name(minimax, two_points, tmp_path):
    with pytest.raises(ConfigError, match="gan.loss: must be one of .*'minimax', got 'minimaks'; "
                                          "did you mean 'minimax'"):
        quick_config("gan_toy.yaml", "gan.loss=minimaks")
    with pytest.raises(ConfigError, match="did you mean 'two_points'"):
        quick_config("gan_toy.yaml", "data.name=two_pionts")
    cfg = quick_config("gan_toy.yaml", "gan.loss=minimax", "data.name=two_points", "train.steps=4",
                       "train.log_every=2", "train.sample_every=4", "train.ckpt_every=4", "train.n_samples=16")
    summary = train(cfg, tmp_path)
    assert summary["step"] == 4 and all(torch.isfinite(torch.tensor(v)) for v in summary["metrics"].values())
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["gan"]["loss"] == "minimax" and saved["data"]["name"] == "two_points"
    method, _ = load_method(tmp_path / "checkpoints" / "last.pt", "cpu")
    assert method.sample(8, torch.Generator().manual_seed(0)).shape == (8, 2)


def test_a_registered_sampler_samples_through_the_config(tweedie, tmp_path):
    """The sampler gets x = σ_1·z and the method's ladder: here it returns D(σ_1 z; σ_1)."""
    with pytest.raises(ConfigError, match="ncsn.sampler: must be one of 'langevin', 'heun', .*'tweedie'.*"
                                          "did you mean 'tweedie'"):
        quick_config("ncsn_toy.yaml", "ncsn.sampler=tweedy")
    cfg = quick_config("ncsn_toy.yaml", "ncsn.sampler=tweedie", "train.steps=2", "train.log_every=1",
                       "train.sample_every=2", "train.ckpt_every=2", "train.n_samples=8", "data.toy_size=512")
    train(cfg, tmp_path)  # its sample grids are drawn by the new sampler
    assert (tmp_path / "samples" / "step_0000002.png").is_file()
    method, ckpt = load_method(tmp_path / "checkpoints" / "last.pt", "cpu")
    assert method.noise.sampler.name == "tweedie"
    z = torch.randn(16, 2)
    sigma = method.sigmas[0]
    with torch.no_grad():
        assert torch.equal(method.sample(16, latents=z), method.denoiser(ema=True)(sigma * z, sigma))
    other = load_config(raw=ckpt["config"], overrides=["ncsn.sampler=langevin"])  # and back, by name
    assert other.ncsn.sampler.name == "langevin"


def test_a_registered_sampler_brings_its_own_settings(euler, tmp_path):
    """A sampler's settings are declared where it is registered: the config's sampler section is
    checked against them, and sampling-time overrides set them, with nothing else edited."""
    with pytest.raises(ConfigError, match=r"unknown key 'ncsn.sampler.stepz' for euler; did you mean 'ncsn.sampler.steps'"):
        quick_config("ncsn_toy.yaml", "ncsn.sampler=euler", "ncsn.sampler.stepz=3")
    cfg = quick_config("ncsn_toy.yaml", "ncsn.sigma_sampling=log_uniform", "ncsn.sampler=euler", "ncsn.sampler.steps=3",
                       "train.steps=2", "train.log_every=1", "train.sample_every=2", "train.ckpt_every=2",
                       "train.n_samples=8", "data.toy_size=512")
    train(cfg, tmp_path)
    method, _ = load_method(tmp_path / "checkpoints" / "last.pt", "cpu", ["ncsn.sampler.steps=5"])
    calls = []
    method.ema["net"].module.register_forward_hook(lambda *args: calls.append(1))
    x = method.sample(8, torch.Generator().manual_seed(0))
    assert method.noise.sampler.steps == 5 and len(calls) == 5 and torch.isfinite(x).all()


# Every setting that names a part, and the registry kind it names: each kind is in this list, so a
# new kind gets its test here. A list of names is given one wrong name.
LISTS = {"gan.augment"}
NAMED_PARTS = [
    ("dae_toy.yaml", "method", "method"),
    ("gan_toy.yaml", "model.arch", "gan_arch"),
    ("dae_toy.yaml", "model.arch", "denoiser_arch"),
    ("gan_toy.yaml", "gan.loss", "gan_loss"),
    ("dae_toy.yaml", "dae.sampler", "sampler"),
    ("dae_toy.yaml", "dae.sigma_sampling", "sigma_sampling"),
    ("dae_toy.yaml", "data.name", "dataset"),
    ("dae_toy.yaml", "optim.schedule", "lr_schedule"),
    ("gan_toy.yaml", "gan.step", "gan_step"),
    ("gan_toy.yaml", "gan.reg", "gan_reg"),
    ("gan_fashion.yaml", "gan.augment", "gan_augment"),
    ("dae_toy.yaml", "dae.weighting", "dsm_weighting"),
    ("gan_toy.yaml", "init.G.scheme", "init_scheme"),
    ("dde_toy.yaml", "model.g_arch", "generator_arch"),
]


def test_every_registry_kind_is_named_by_a_setting():
    from common.registry import KINDS
    assert sorted(kind for _, _, kind in NAMED_PARTS) == sorted(KINDS)


@pytest.mark.parametrize("config, key, kind", NAMED_PARTS)
def test_a_wrong_name_lists_every_registered_part_of_its_kind(config, key, kind):
    from common.registry import names
    with pytest.raises(ConfigError) as e:
        quick_config(config, f"{key}=[no_such_part]" if key in LISTS else f"{key}=no_such_part")
    message = str(e.value)
    assert "\n" not in message and key in message, message
    missing = [name for name in names(kind) if repr(name) not in message and name not in message]
    assert not missing, f"{message} lacks {missing}"
