"""Autoguidance (Karras et al. 2024): a weaker model of the same data guides a denoising model's samples,
D_w = D_g + w·(D − D_g) (denoising/guidance.py AutoGuided, <method>.autoguide)."""
from __future__ import annotations

import pytest
import torch

from conftest import quick_config
from denoising.denoiser import Denoiser
from denoising.guidance import AutoGuided
from denoising.samplers import langevin
from engine import load_method, train
from networks import UNet
from test_conditional import GaussianDenoiser, sample_refuses


@pytest.mark.parametrize("parametrization", ["direct", "score", "energy"])
def test_autoguidance_at_w0_and_w1_is_the_guide_and_the_model_exactly(parametrization):
    torch.manual_seed(0)
    model, guide = (Denoiser(UNet(1, 8, (1, 2), 1).double(), parametrization, 0.5) for _ in range(2))
    for p in [*model.net.parameters(), *guide.net.parameters()]:  # zero-initialised outputs would agree
        p.data.add_(0.2 * torch.randn_like(p))
    x, sigma = torch.randn(4, 1, 28, 28, dtype=torch.float64), torch.tensor([0.1, 0.5, 2.0, 5.0]).double()
    d, g = model(x, sigma), guide(x, sigma)
    assert (d - g).abs().max() > 1e-3  # two different nets
    assert torch.equal(AutoGuided(model, guide, 1.0)(x, sigma), d)
    assert torch.equal(AutoGuided(model, guide, 0.0)(x, sigma), g)
    w = 2.5
    assert torch.allclose(AutoGuided(model, guide, w)(x, sigma), g + w * (d - g), rtol=1e-9, atol=1e-9)
    s_d, s_g = model.score(x, sigma), guide.score(x, sigma)
    assert torch.equal(AutoGuided(model, guide, 1.0).score(x, sigma), s_d)
    assert torch.equal(AutoGuided(model, guide, 0.0).score(x, sigma), s_g)
    assert torch.allclose(AutoGuided(model, guide, w).score(x, sigma), s_g + w * (s_d - s_g), rtol=1e-9, atol=1e-9)
    assert [AutoGuided(model, guide, v).passes(1.0) for v in (0.0, 1.0, 2.5)] == [1, 1, 2]


def test_autoguidance_in_an_interval_is_the_model_alone_outside_it():
    torch.manual_seed(0)
    model, guide = (Denoiser(UNet(1, 8, (1, 2), 1).double(), "direct", 0.5) for _ in range(2))
    for p in [*model.net.parameters(), *guide.net.parameters()]:
        p.data.add_(0.2 * torch.randn_like(p))
    x, sigma = torch.randn(4, 1, 28, 28, dtype=torch.float64), torch.tensor([0.1, 0.5, 2.0, 5.0], dtype=torch.float64)
    d, g, w = model(x, sigma), guide(x, sigma), 2.5
    inside = torch.tensor([False, True, True, False]).view(-1, 1, 1, 1)  # (0.1, 2.0]
    guided = AutoGuided(model, guide, w, (0.1, 2.0))
    assert torch.allclose(guided(x, sigma), torch.where(inside, g + w * (d - g), d), rtol=1e-9, atol=1e-9)
    calls = []
    guide.net.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    assert torch.equal(guided(x, torch.tensor(5.0).double()), model(x, torch.tensor(5.0).double())) and not calls
    assert [guided.passes(level) for level in (0.1, 2.0, 5.0)] == [1, 2, 1]


def test_autoguidance_of_an_overdispersed_model_by_a_worse_one_recovers_the_data_variance():
    """The guided score w·s + (1 − w)·s_g is that of p^w·g^(1−w): for a model N(0, a²) whose error
    inflated the data's unit variance and a guide N(0, b²) inflated further (b > a), the product's
    variance 1/(w/a² + (1 − w)/b²) is 1 at w* = (1 − 1/b²)/(1/a² − 1/b²) > 1: extrapolating away
    from the worse model undoes the model's error. Langevin dynamics on the guided score at a small σ
    (4,000 chains, 1,000 steps) has variance 1/(w/(a² + σ²) + (1 − w)/(b² + σ²)) within 4%; at
    w = 1 it is the model's a² + σ²."""
    a2, b2, sigma, dim = 1.2 ** 2, 1.4 ** 2, 0.05, 2
    w_star = (1 - 1 / b2) / (1 / a2 - 1 / b2)
    model = GaussianDenoiser(torch.zeros(dim, dtype=torch.float64), a2 * torch.eye(dim, dtype=torch.float64))
    guide = GaussianDenoiser(torch.zeros(dim, dtype=torch.float64), b2 * torch.eye(dim, dtype=torch.float64))
    for w in (1.0, w_star):
        gen = torch.Generator().manual_seed(0)
        x = langevin(AutoGuided(model, guide, w).score, torch.randn(4000, dim, generator=gen, dtype=torch.float64),
                     sigma, 1000, 0.02, gen)
        expected = 1 / (w / (a2 + sigma ** 2) + (1 - w) / (b2 + sigma ** 2))
        assert abs(x.var(0).mean().item() / expected - 1) < 0.04, (w, x.var(0).mean().item(), expected)
    assert abs(1 / (w_star / a2 + (1 - w_star) / b2) - 1) < 1e-12 and w_star > 2


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    """Two short runs of the toy DAE config: a model and its guide (fewer steps, half the width), and
    one whose σ range does not cover the model's."""
    root = tmp_path_factory.mktemp("autoguide")
    train(quick_config("dae_toy.yaml", "train.steps=40", "train.ckpt_every=40"), root / "model")
    train(quick_config("dae_toy.yaml", "train.steps=10", "train.ckpt_every=10", "model.width=64"), root / "guide")
    train(quick_config("dae_toy.yaml", "train.steps=2", "train.ckpt_every=2", "dae.sigma_max=1.0"), root / "narrow")
    train(quick_config("gan_toy.yaml", "train.steps=2", "train.ckpt_every=2"), root / "gan")
    return {name: str(root / name / "checkpoints" / "last.pt") for name in ("model", "guide", "narrow", "gan")}


def samples(ckpt, *overrides, n=200):
    method, _ = load_method(ckpt, "cpu", list(overrides))
    return method, method.sample(n, generator=torch.Generator().manual_seed(7))


def test_a_checkpoint_autoguided_at_w1_samples_as_itself_and_at_w0_as_its_guide(toy_runs):
    guide_key = f"dae.autoguide={toy_runs['guide']}"
    _, own = samples(toy_runs["model"])
    _, guide_own = samples(toy_runs["guide"])
    assert (own - guide_own).abs().max() > 1e-2  # the two nets sample differently
    m1, at1 = samples(toy_runs["model"], guide_key, "dae.autoguide_weight=1")
    _, at0 = samples(toy_runs["model"], guide_key, "dae.autoguide_weight=0")
    m2, at2 = samples(toy_runs["model"], guide_key, "dae.autoguide_weight=2")
    assert torch.equal(at1, own) and torch.equal(at0, guide_own)
    assert (at2 - own).abs().max() > 1e-2  # guidance moves the samples
    assert m1.guide is not None and m1.passes_per_evaluation(1.0) == 1 and m2.passes_per_evaluation(1.0) == 2
    m3, at3 = samples(toy_runs["model"], guide_key, "dae.autoguide_weight=2", "dae.guidance_interval=[0,0.5]")
    assert (at3 - at2).abs().max() > 1e-3 and m3.passes_per_evaluation(1.0) == 1 and m3.passes_per_evaluation(0.5) == 2


def test_bad_autoguidance_settings_are_one_line(toy_runs, tmp_path, capsys):
    from sample import main  # noqa: F401  (sample_refuses runs it)
    cases = [([f"dae.autoguide={tmp_path / 'missing.pt'}"], "dae.autoguide: "),
             ([f"dae.autoguide={toy_runs['narrow']}"], "dae.autoguide: the guide was trained on σ in"),
             ([f"dae.autoguide={toy_runs['gan']}"], "dae.autoguide: the guide is a gan checkpoint"),
             ([f"dae.autoguide={toy_runs['guide']}", "dae.autoguide_weight=-1"], "dae.autoguide_weight: must be >= 0"),
             (["dae.guidance_interval=[0.1,1]"], "dae.guidance_interval: this model has no guidance to limit"),
             (["dae.guidance=2"], "dae.guidance: classifier-free guidance needs a class-conditional net"),
             (["dae.autoguide_weight=2"], "dae.autoguide_weight: there is no guide to weight")]
    sample_refuses(toy_runs["model"], tmp_path, capsys, *[(["--n", "4", *bad], msg) for bad, msg in cases])
    assert not (tmp_path / "x.png").exists()


def test_the_likelihood_of_an_autoguided_checkpoint_is_its_guided_flows(toy_runs):
    """bits/dim follows the autoguided flow: at w = 0 it is the guide's likelihood, at w = 1 the model's,
    and the two nets' differ."""
    from engine.evaluation.bits_per_dim import model_log_likelihood
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(0))

    def log_p(ckpt, *overrides):
        method, _ = load_method(ckpt, "cpu", list(overrides))
        return model_log_likelihood(method, x, exact_trace=True)[0]

    guide_key = f"dae.autoguide={toy_runs['guide']}"
    own, guide_own = log_p(toy_runs["model"]), log_p(toy_runs["guide"])
    assert (own - guide_own).abs().max() > 1e-2
    assert torch.allclose(log_p(toy_runs["model"], guide_key, "dae.autoguide_weight=0"), guide_own, atol=1e-6)
    assert torch.allclose(log_p(toy_runs["model"], guide_key, "dae.autoguide_weight=1"), own, atol=1e-6)


def test_a_class_conditional_model_is_autoguided_by_a_conditional_guide_at_the_same_classes(fashion_root, tmp_path,
                                                                                              capsys):
    """A conditional net's guide is conditional too, called at the same classes with the same
    classifier-free weight: at autoguide w = 1 the samples are the model's own, at w = 0 the guide's
    own at those classes, and in between the extrapolation moves them. A guide of another kind is one line."""
    common = [f"data.root={fashion_root}", "train.ckpt_every=3"]
    for name, extra in (("model", ["model.num_classes=10", "train.steps=3"]),
                        ("guide", ["model.num_classes=10", "train.steps=1", "train.ckpt_every=1", "seed=1"]),
                        ("plain", ["train.steps=1", "train.ckpt_every=1"])):
        train(quick_config("ncsn_fashion.yaml", *common, *extra), tmp_path / name)
    ckpt = {name: str(tmp_path / name / "checkpoints" / "last.pt") for name in ("model", "guide", "plain")}
    labels = torch.tensor([0, 3, 7, 9])

    def draw(path, *overrides):
        method, _ = load_method(path, "cpu", ["ncsn.guidance=1.5", *overrides])
        return method, method.sample(4, generator=torch.Generator().manual_seed(3), labels=labels)

    _, own = draw(ckpt["model"])
    _, guide_own = draw(ckpt["guide"])
    assert (own - guide_own).abs().max() > 1e-3
    key = f"ncsn.autoguide={ckpt['guide']}"
    _, at1 = draw(ckpt["model"], key, "ncsn.autoguide_weight=1")
    _, at0 = draw(ckpt["model"], key, "ncsn.autoguide_weight=0")
    m2, at2 = draw(ckpt["model"], key, "ncsn.autoguide_weight=2")
    assert torch.equal(at1, own) and torch.equal(at0, guide_own)
    assert (at2 - own).abs().max() > 1e-3 and m2.passes_per_evaluation(1.0) == 4  # 2 classifier-free × 2 nets
    sample_refuses(ckpt["model"], tmp_path, capsys,
                   ([f"ncsn.autoguide={ckpt['plain']}"], "ncsn.autoguide: the guide is unconditional, this model "
                                                          "10-class: train the guide with model.num_classes=10"))
    sample_refuses(ckpt["plain"], tmp_path, capsys,
                   ([f"ncsn.autoguide={ckpt['guide']}"], "ncsn.autoguide: the guide is 10-class, this model "
                                                          "unconditional: train the guide with model.num_classes=0"))
