"""Denoising facts: the project's DSM loss recovers the analytic optimal denoiser; trained score
and energy models match the analytic score of a noised mixture; −∇E is the energy's gradient; DDE
matches moments; the DDE one-loss step gives every network exactly its own gradient. (The samplers
on exact scores and the schedules: test_samplers.py.)"""
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import CheckpointError
from common.registry import names
from conftest import assert_same_state, attending_denoiser, quick_config, train_straight_and_resumed
from denoising.denoiser import Denoiser
from denoising.losses import dsm_loss
from engine import build, load_method, train
from networks import MLP, UNet
from oracles import GAUSSIAN_COV, GAUSSIAN_MEAN, eight_gaussians


class Linear(nn.Module):
    """F(x) = Wx + b, ignoring σ: with any of the three parametrisations, D is affine in x."""

    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, x, sigma):
        return self.lin(x)


@pytest.mark.parametrize("parametrization", ["direct", "score", "energy", "energy_confined"])
def test_dsm_recovers_the_optimal_denoiser_of_gaussian_data(parametrization):
    """For x ~ N(μ, s²I) and x̃ = x + σε the optimal denoiser is D*(x̃) = μ + s²/(s² + σ²)(x̃ − μ)."""
    torch.manual_seed(0)
    d, s, sigma = 4, 0.7, 0.5
    mu = torch.tensor([0.5, -1.0, 0.25, 2.0])
    D = Denoiser(Linear(d), parametrization.split("_")[0], sigma_data=0.5, confined="confined" in parametrization)
    opt = torch.optim.Adam(D.parameters(), lr=2e-2)
    for step in range(1500):
        if step == 1000:
            opt.param_groups[0]["lr"] = 2e-3
        x = mu + s * torch.randn(4096, d)
        loss = dsm_loss(D, x, torch.full((4096,), sigma), "reconstruction").mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x_noisy = mu + math.sqrt(s ** 2 + sigma ** 2) * torch.randn(1000, d)
    optimal = mu + s ** 2 / (s ** 2 + sigma ** 2) * (x_noisy - mu)
    assert (D(x_noisy, sigma) - optimal).abs().max() < 0.03


class Nonlinear(nn.Module):
    """A σ-dependent nonlinear F(x, σ): no parametrisation constant can be absorbed into it."""

    def __init__(self, d):
        super().__init__()
        self.a, self.b = nn.Linear(d + 1, 16), nn.Linear(16, d)

    def forward(self, x, sigma):
        return self.b(torch.tanh(self.a(torch.cat([x, sigma.log()[:, None]], 1))))


@pytest.mark.parametrize("parametrization", ["direct", "score", "energy"])
def test_denoiser_parametrisations_are_the_papers_formulas(parametrization):
    """EDM's preconditioning (Karras et al. 2022, table 1) with c_skip = σ_d²/(σ² + σ_d²),
    c_out = σσ_d/√(σ² + σ_d²), c_in = 1/√(σ² + σ_d²): direct D = c_skip·x + c_out·F(c_in·x, σ);
    score s = F(c_in·x, σ)/σ (NCSNv2); energy E = ½‖x − c_skip·x − c_out·F‖²/σ² (Salimans & Ho
    2021), s = −∇ₓE; and D = x + σ²s for every one."""
    torch.manual_seed(0)
    sd, net = 0.5, Nonlinear(3).double()
    den = Denoiser(net, parametrization, sigma_data=sd)
    x = torch.randn(5, 3, dtype=torch.float64)
    sigma = torch.tensor([0.02, 0.3, 1.0, 4.0, 40.0], dtype=torch.float64)
    s = sigma[:, None]
    c_skip, c_out, c_in = sd ** 2 / (s ** 2 + sd ** 2), s * sd / (s ** 2 + sd ** 2).sqrt(), 1 / (s ** 2 + sd ** 2).sqrt()
    F_ = net(c_in * x, sigma)
    if parametrization == "direct":
        D = c_skip * x + c_out * F_
        score = (D - x) / s ** 2
    elif parametrization == "score":
        score = F_ / s
        D = x + s ** 2 * score
    else:
        xg = x.clone().requires_grad_(True)
        E = 0.5 * (xg - c_skip * xg - c_out * net(c_in * xg, sigma)).pow(2).sum(1) / sigma ** 2
        assert torch.allclose(den.energy(x, sigma), E.detach(), rtol=1e-10)
        score = -torch.autograd.grad(E.sum(), xg)[0]
        D = x + s ** 2 * score
    assert torch.allclose(den.score(x, sigma), score, rtol=1e-9, atol=1e-12)
    assert torch.allclose(den(x, sigma), D, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("preconditioning", ["ncsnv2", "edm"])
def test_ncsn_preconditioning_chooses_the_score_formula(preconditioning):
    """ncsn.preconditioning: ncsnv2 gives NCSNv2's s = F/σ (D = x + σF: F's error times σ); edm gives
    EDM's preconditioned score s = (c_skip·x + c_out·F − x)/σ² (F's error times c_out < σ_d), on the
    same net with the same input scaling. Old configs (no key) keep NCSNv2's."""
    from data import DataInfo
    cfg = quick_config("ncsn_toy.yaml", f"ncsn.preconditioning={preconditioning}")
    assert quick_config("ncsn_toy.yaml").ncsn.preconditioning == "ncsnv2"
    torch.manual_seed(0)
    m = build(cfg, "cpu", info=DataInfo("toy", (2,), 1, "points"))
    den, net, sd = m.denoiser(), m.nets["net"], cfg.ncsn.sigma_data
    x = torch.randn(4, 2)
    sigma = torch.tensor([0.05, 0.5, 3.0, 40.0])
    s = sigma[:, None]
    v = s ** 2 + sd ** 2
    with torch.no_grad():
        F_ = net(x * v.rsqrt(), sigma)
        expected = F_ / s if preconditioning == "ncsnv2" else (sd ** 2 / v * x + s * sd * v.rsqrt() * F_ - x) / s ** 2
        assert torch.allclose(den.score(x, sigma), expected, rtol=1e-5, atol=1e-6)
        assert torch.allclose(den(x, sigma), x + s ** 2 * expected, rtol=1e-5, atol=1e-4)


def test_dae_reconstruction_weighting_is_the_plain_squared_error_at_every_sigma():
    """dsm_loss per example: "reconstruction" ½‖D(x̃; σ) − x‖², "score" the same divided by σ²
    (½‖σs + ε‖²), "edm" multiplied by EDM's λ(σ) = (σ² + σ_d²)/(σσ_d)², for a batch of different σ."""
    torch.manual_seed(0)
    den = Denoiser(Nonlinear(3).double(), "direct", 0.5)
    x = torch.randn(4, 3, dtype=torch.float64)
    sigma = torch.tensor([0.05, 0.5, 2.0, 10.0], dtype=torch.float64)
    losses = {}
    for weighting in ("reconstruction", "score", "edm"):
        torch.manual_seed(1)
        losses[weighting] = dsm_loss(den, x, sigma, weighting)
    torch.manual_seed(1)
    x_noisy = x + sigma[:, None] * torch.randn_like(x)  # the noise dsm_loss draws
    with torch.no_grad():
        expected = 0.5 * (den(x_noisy, sigma) - x).pow(2).sum(1)
    assert torch.allclose(losses["reconstruction"].detach(), expected, rtol=1e-10)
    assert torch.allclose(losses["score"].detach(), expected / sigma ** 2, rtol=1e-10)
    assert torch.allclose(losses["edm"].detach(), expected * (sigma ** 2 + 0.25) / (sigma * 0.5) ** 2, rtol=1e-10)


def test_log_normal_sigma_sampling_draws_edms_distribution():
    """sigma_sampling: log_normal draws ln σ ~ N(p_mean, p_std²), unclipped (EDM's training σ)."""
    from data import DataInfo
    cfg = quick_config("dae_toy.yaml", "dae.sigma_sampling=log_normal", "dae.p_mean=-0.5", "dae.p_std=0.8",
                       "dae.sampler.step_lr=1e-4")
    torch.manual_seed(0)
    m = build(cfg, "cpu", info=DataInfo("toy", (2,), 1, "points"))
    log_sigma = m.draw_sigmas(200_000).log()
    assert log_sigma.mean().item() == pytest.approx(-0.5, abs=0.01)
    assert log_sigma.std().item() == pytest.approx(0.8, abs=0.01)
    assert log_sigma.min().item() < math.log(cfg.dae.sigma_min)  # not clipped to the ladder


def test_tweedie_identity_between_score_and_denoiser():
    """s = (D − x)/σ² holds for every parametrisation (energy: s = −∇E by autograd)."""
    torch.manual_seed(0)
    x = torch.randn(6, 2, dtype=torch.float64)
    for p, confined in (("direct", False), ("score", False), ("energy", False), ("energy", True)):
        D = Denoiser(MLP(2, 16, 2).double(), p, 0.5, confined=confined)
        for sigma in (0.03, 1.0, 20.0):
            assert torch.allclose(D.score(x, sigma), (D(x, sigma) - x) / sigma ** 2, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("confined", [False, True])
def test_energy_score_matches_finite_differences(confined):
    torch.manual_seed(0)
    D = Denoiser(MLP(2, 32, 2).double(), "energy", 0.5, confined=confined)
    x = torch.randn(5, 2, dtype=torch.float64)
    h = 1e-5
    for sigma in (0.1, 2.0):
        fd = torch.stack([(D.energy(x + h * e, sigma) - D.energy(x - h * e, sigma)) / (2 * h)
                          for e in torch.eye(2, dtype=torch.float64)], 1)
        assert torch.allclose(D.score(x, sigma), -fd, rtol=1e-6, atol=1e-8)
    img = Denoiser(UNet(1, 8, (1, 2), 1).double(), "energy", 0.5, confined=confined)
    for p in img.parameters():  # a non-trivial output head (it starts at zero)
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    e = torch.zeros_like(x)
    e[0, 0, 3, 4] = 1
    fd = (img.energy(x + h * e, 0.3) - img.energy(x - h * e, 0.3)) / (2 * h)
    assert img.score(x, 0.3)[0, 0, 3, 4].item() == pytest.approx(-fd.item(), rel=1e-5)


class Zero(nn.Module):
    def forward(self, x, sigma):
        return torch.zeros_like(x)


def test_confined_energy_pulls_as_the_direct_denoiser_does_where_the_net_is_flat():
    """Where F is flat (F = 0 here; far from the data a normalised net's output stops growing), the
    confined energy is ½‖x‖²/(σ² + σ_d²): the exact model of data N(0, σ_d²I), whose D = c_skip·x is
    the direct denoiser's with the same F. The plain energy's pull, −σ²x/(σ² + σ_d²)², is weaker by
    σ²/(σ² + σ_d²): D = (1 − σ⁴/(σ² + σ_d²)²)·x, near the identity at small σ."""
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    sd = 0.7
    confined, plain, direct = (Denoiser(Zero(), p, sd, confined=c)
                               for p, c in (("energy", True), ("energy", False), ("direct", False)))
    for sigma in (0.03, 0.7, 5.0):
        v = sigma ** 2 + sd ** 2
        assert torch.allclose(confined.energy(x, sigma), 0.5 * x.pow(2).flatten(1).sum(1) / v, rtol=1e-12)
        assert torch.allclose(confined(x, sigma), direct(x, sigma), rtol=1e-12, atol=1e-14)
        assert torch.allclose(confined(x, sigma), sd ** 2 / v * x, rtol=1e-12, atol=1e-14)
        assert torch.allclose(plain(x, sigma), (1 - sigma ** 4 / v ** 2) * x, rtol=1e-12, atol=1e-14)


def test_the_ebm_energy_form_is_fixed_by_training_and_old_runs_keep_theirs(tmp_path):
    """A run saved before ebm.energy existed was trained with the plain energy and loads as such; a
    checkpoint cannot be read with the other form (the same weights would be another model)."""
    from common.config import load_config, upgrade_saved
    raw = {"method": "ebm", "data": {"name": "fashion_mnist"}, "ebm": {"sigma_max": 1.0, "num_scales": 2}}
    assert load_config(raw=raw).ebm.energy == "confined"
    assert load_config(raw=upgrade_saved(raw)).ebm.energy == "denoiser"
    cfg = quick_config("ebm_toy.yaml", "train.steps=1", "data.toy_size=64", "train.batch_size=8")
    train(cfg, tmp_path)
    method, _ = load_method(tmp_path / "checkpoints" / "last.pt", "cpu")
    assert method.denoiser().confined
    with pytest.raises(CheckpointError, match="^ebm.energy: the checkpoint's network was trained with 'confined'"):
        load_method(tmp_path / "checkpoints" / "last.pt", "cpu", ["ebm.energy=denoiser"])


def score_errors(method, mix):
    """Per level: mean cosine and relative error ‖s − s*‖/‖s*‖ (means over samples of p_σ) between
    the learned and the analytic score; the cosine alone misses a score of the wrong magnitude."""
    D = method.denoiser(ema=True)
    g = torch.Generator().manual_seed(1)
    cosines, errors = [], []
    for sigma in method.sigmas.tolist():
        x, _ = mix.sample(2000, g)
        x = (x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)).float()
        est, exact = D.score(x, sigma).detach().double(), mix.score(x, sigma)
        cosines.append(F.cosine_similarity(est, exact, dim=1).mean().item())
        errors.append(((est - exact).norm(dim=1).mean() / exact.norm(dim=1).mean()).item())
    return cosines, errors


@pytest.mark.parametrize("name", ["ncsn_toy.yaml", "ebm_toy.yaml", "dae_toy.yaml"])
def test_trained_score_matches_the_noised_mixture_score(name, tmp_path):
    """The learned ∇log p_σ against the analytic one, over samples of p_σ, at each of the 8 levels.
    Measured: cosine 0.95–1.00 and relative error 0.02–0.22 for all three models. The DAE with
    weighting: reconstruction has cosine > 0.94 but relative error up to 0.68 (0.53 of the exact
    magnitude at σ_min), which is why the magnitude is checked too."""
    train(quick_config(name), tmp_path)
    method, _ = load_method(tmp_path / "checkpoints" / "last.pt", "cpu")
    cosines, errors = score_errors(method, eight_gaussians())
    assert min(cosines) > 0.9 and max(errors) < 0.3, (cosines, errors)


def test_dde_generator_matches_the_data_moments(tmp_path):
    """Target N(μ, Σ) with ‖μ‖ = 0.71, ‖Σ‖_F = 0.79. Measured after 1,500 steps (EMA generator):
    ‖mean − μ‖ ≈ 0.03, ‖cov − Σ‖_F ≈ 0.03; the initial generator is far off in both."""
    mu, cov = torch.tensor(GAUSSIAN_MEAN), torch.tensor(GAUSSIAN_COV)
    cfg = quick_config("dde_toy.yaml")
    torch.manual_seed(cfg.seed)
    x0 = build(cfg, "cpu", info=__import__("data").DataInfo("toy", (2,), 1, "points")).sample(5000)
    assert (x0.mean(0) - mu).norm() > 0.3 or (torch.cov(x0.T) - cov).norm() > 0.3
    train(cfg, tmp_path)
    method, _ = load_method(tmp_path / "checkpoints" / "last.pt", "cpu")
    x = method.sample(5000, torch.Generator().manual_seed(0))
    assert (x.mean(0) - mu).norm() < 0.1
    assert (torch.cov(x.T) - cov).norm() < 0.1


@pytest.mark.parametrize("smoothing", [[], ["dde.sigma_max=2.0"], ["dde.sigma_max=2.0", "dde.parametrization=direct"]],
                         ids=["one_level", "range", "range_direct"])
def test_dde_one_loss_gives_each_network_its_own_gradient(smoothing):
    from data import DataInfo
    cfg = quick_config("dde_toy.yaml", "dde.same_init=false", *smoothing)
    torch.manual_seed(0)
    m = build(cfg, "cpu", info=DataInfo("toy", (2,), 1, "points"))
    P, Q = m.density("p"), m.density("q")
    x = torch.randn(64, 2)
    torch.manual_seed(1)
    total, stats = m.objective(x, P, Q)
    total.backward()
    got = {n: [p.grad.clone() for p in m.nets[n].parameters()] for n in ("G", "p", "q")}
    torch.manual_seed(1)  # same draws, same order: z, then each term's levels and noise
    fake = m.training_net("G")(m.sample_latents(64))
    refs = {"p": dsm_loss(P, x, m.smoothing(64)).mean(), "q": dsm_loss(Q, fake.detach(), m.smoothing(64)).mean()}
    sigma = m.smoothing(64)
    assert (sigma == cfg.dde.sigma).all() != bool(smoothing)  # one level, or a spread of them
    y = fake + sigma[:, None] * torch.randn_like(fake)
    if P.parametrization == "energy":
        refs["G"] = ((sigma / cfg.dde.sigma) ** 2 * (P.energy(y, sigma) - Q.energy(y, sigma))).mean()
    else:  # ∇ₓ(log q̃ − log p̃) = s_q − s_p, weighted as the energy's
        push = (sigma[:, None] / cfg.dde.sigma) ** 2 * (Q.score(y, sigma) - P.score(y, sigma))
        refs["G"] = (push.detach() * y).sum(1).mean()
    for name, loss in refs.items():
        ref = torch.autograd.grad(loss, list(m.nets[name].parameters()), allow_unused=True)
        for a, b in zip(got[name], ref):
            assert torch.allclose(a, b if b is not None else torch.zeros_like(a), rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("parametrization", ["energy", "direct"])
def test_dde_kl_gradient_is_the_difference_of_the_two_denoisers(parametrization):
    """At every level the generator's push on a smoothed sample is (D_q − D_p)(x̃; σ)/(n σ_lo²): the
    (σ/σ_lo)² weight turns each level's score difference, (D_q − D_p)/σ², into a bounded one. Energy
    densities get it by differentiating log q̃ − log p̃, direct ones from the two denoisers."""
    from data import DataInfo
    cfg = quick_config("dde_toy.yaml", "dde.sigma_max=3.0", "dde.same_init=false",
                       f"dde.parametrization={parametrization}")
    torch.manual_seed(0)
    m = build(cfg, "cpu", info=DataInfo("toy", (2,), 1, "points"))
    P, Q = m.density("p"), m.density("q")
    y = torch.randn(32, 2, dtype=torch.float64, requires_grad=True)
    for net in m.nets.values():
        net.double()
    sigma = torch.logspace(math.log10(0.3), math.log10(3.0), 32, dtype=torch.float64)
    (grad,) = torch.autograd.grad(m.kl(y, sigma, P, Q)[0], y)
    s = sigma[:, None]
    want = (Q(y, s) - P(y, s)) / (32 * cfg.dde.sigma ** 2)
    assert torch.allclose(grad, want, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(P(y, s), P(y, 2 * s))  # the densities read σ
    assert (grad.abs() > 1e-6).float().mean() > 0.9   # and differ


@pytest.mark.parametrize("g_loss", ["dmd", "sid"])
def test_dde_dmd_and_sid_generator_gradients(g_loss):
    """dde.g_loss: with r = D_p − G(z), g = D_p − D_q at x̃ = G(z) + σε and w = mean|r| per example
    (stopped), DMD's gradient in G(z) is −g/(n w); SiD's loss g·(r − αg)/w is differentiated through
    both denoisers' inputs too, ((J_p − J_q)ᵀ(r − 2αg) + (J_p − I)ᵀg)/(n w), built here from each
    denoiser's own vector-Jacobian product."""
    from data import DataInfo
    cfg = quick_config("dde_toy.yaml", "dde.sigma_max=3.0", "dde.same_init=false", "dde.parametrization=direct",
                       f"dde.g_loss={g_loss}", "dde.sid_alpha=1.2")
    torch.manual_seed(0)
    m = build(cfg, "cpu", info=DataInfo("toy", (2,), 1, "points"))
    for net in m.nets.values():
        net.double()
    P, Q = m.density("p"), m.density("q")
    x = torch.randn(32, 2, dtype=torch.float64, requires_grad=True)
    sigma = torch.logspace(math.log10(0.3), math.log10(3.0), 32, dtype=torch.float64)
    y = x + sigma[:, None] * torch.randn_like(x)
    (grad,) = torch.autograd.grad(m.kl(y, sigma, P, Q, x)[0], x)
    s, y = sigma[:, None], y.detach()
    d_p, vjp_p = torch.func.vjp(lambda u: P(u, s), y)
    d_q, vjp_q = torch.func.vjp(lambda u: Q(u, s), y)
    r, g = d_p - x.detach(), d_p - d_q
    w = 32 * r.abs().mean(1, keepdim=True)
    if g_loss == "dmd":
        want = -g / w
    else:
        u = r - 2 * 1.2 * g
        want = (vjp_p(u)[0] - vjp_q(u)[0] + vjp_p(g)[0] - g) / w
    assert torch.allclose(grad, want, rtol=1e-9, atol=1e-12)
    assert (grad.abs() > 1e-6).float().mean() > 0.9


def test_dde_densities_start_equal_so_the_generator_starts_still():
    """q̃ starts as a copy of p̃ (dde.same_init): the generator's first gradient is 0 (to rounding: the
    two energies' input gradients cancel), not the difference of two random networks."""
    from data import DataInfo
    largest = {}
    for same in (True, False):
        cfg = quick_config("dde_toy.yaml", f"dde.same_init={str(same).lower()}")
        torch.manual_seed(0)
        m = build(cfg, "cpu", info=DataInfo("toy", (2,), 1, "points"))
        total, stats = m.objective(torch.randn(64, 2), m.density("p"), m.density("q"))
        total.backward()
        largest[same] = max(p.grad.abs().max().item() for p in m.nets["G"].parameters())
        assert (stats["g_loss"] == 0) == same  # log q̃ − log p̃
    assert largest[True] < 1e-7 * largest[False], largest
    from common.config import load_config, upgrade_saved  # a run saved before the key: as it was trained
    raw = {"method": "dde", "data": {"name": "fashion_mnist"}, "dde": {"sigma": 2.0}}
    assert load_config(raw=raw).dde.same_init and not load_config(raw=upgrade_saved(raw)).dde.same_init


QUICK = [("dae_toy.yaml", []), ("ncsn_toy.yaml", []), ("ebm_toy.yaml", []), ("dde_toy.yaml", []),
         ("ncsn_fashion.yaml", []), ("ncsn_fashion.yaml", ["model.arch=ncsnv2", "ncsn.sampler=heun"])]


@pytest.mark.parametrize("name, extra", QUICK, ids=[f"{n}{'+' + ','.join(e) if e else ''}" for n, e in QUICK])
def test_every_method_trains_checkpoints_resumes_exactly_and_samples(name, extra, fashion_root, tmp_path):
    base = [f"data.root={fashion_root}", "train.ckpt_every=3", "train.log_every=2", "train.sample_every=6",
            "train.n_samples=8", *extra]
    if "toy" in name:
        base += ["data.toy_size=1024", "train.batch_size=32"]
    train_straight_and_resumed(name, base, tmp_path, 3)
    assert assert_same_state(tmp_path / "straight", tmp_path / "split")[0] == 6
    ckpt = tmp_path / "straight" / "checkpoints" / "last.pt"
    method, saved = load_method(ckpt, "cpu")
    if saved["method"] != "dde":  # the data-dependent schedule was resolved into the saved config
        section = saved["config"][saved["method"]]
        assert section["sigma_max"] is not None and section["num_scales"] is not None
        assert section["sampler"]["name"] != "langevin" or section["sampler"]["step_lr"] is not None
    if saved["method"] in ("ncsn", "dae"):  # what the net's output means stays as trained
        key = "ncsn.preconditioning=edm" if saved["method"] == "ncsn" else "dae.sigma_data=0.9"
        with pytest.raises(CheckpointError, match=f"^{key.split('=')[0]}: the checkpoint's network was trained with"):
            load_method(ckpt, "cpu", [key])
    for sampler in ([] if saved["method"] == "dde" else names("sampler")) or [None]:
        over = [f"{saved['method']}.sampler={sampler}"] if sampler else []
        m, _ = load_method(ckpt, "cpu", over)
        settings = getattr(m.noise, "sampler", None) if sampler else None
        if sampler != "langevin" and hasattr(settings, "steps") and "steps" not in settings.unused(m.schedule()):
            m, _ = load_method(ckpt, "cpu", [*over, f"{saved['method']}.sampler.steps=3"])  # 3 levels suffice here
        x = m.sample(4, torch.Generator().manual_seed(0))
        assert x.shape == (4, *m.info.shape) and torch.isfinite(x).all()
        assert torch.equal(x, m.sample(4, torch.Generator().manual_seed(0)))  # seeded


@pytest.mark.parametrize("method", ["dae", "ebm"])
def test_only_the_ebm_writes_its_attention_out_and_it_trains_through_the_input_gradient(method):
    """The EBM's loss differentiates the net's input gradient, which torch's fused attention kernels
    cannot on CUDA: its attention layers compute the product written out (the same numbers,
    tests/test_networks.py), the DAE's keep the fused kernel; an attending EBM then trains."""
    from networks.unet import SelfAttention
    m = attending_denoiser(method)
    layers = [layer for layer in m.nets["net"].modules() if isinstance(layer, SelfAttention)]
    assert len(layers) == 4 and all(layer.double_backward == (method == "ebm") for layer in layers)
    for weight in m.nets["net"].parameters():  # the zero-initialised layers would stop q, k, v's gradient
        if weight.dim() > 1 and not weight.any():
            torch.nn.init.normal_(weight, std=0.1)
    before = layers[0].qkv.weight.detach().clone()
    stats = m.training_step(torch.rand(4, 1, 28, 28) * 2 - 1)
    assert all(torch.isfinite(v) for v in stats.values())
    assert not torch.equal(layers[0].qkv.weight, before)


def train_dae_teacher(fashion_root, root, *overrides):
    """A U-Net DAE of configs/quick/dde_fashion.yaml's densities' shape, trained 3 steps on the fixture
    garments (EMA 0.5, so its average differs from its weights): a teacher for dde.teacher."""
    from common.config import load_config
    raw = {"method": "dae", "seed": 1, "device": "cpu", "data": {"name": "fashion_mnist", "root": str(fashion_root)},
           "model": {"arch": "unet", "width": 8, "mults": [1, 2], "blocks": 1},
           "train": {"steps": 3, "batch_size": 8, "log_every": 3, "sample_every": 3, "n_samples": 4, "ckpt_every": 3,
                     "ema": 0.5},
           "dae": {"sigma_min": 0.02, "sigma_data": 0.5, "sampler": {"name": "heun", "steps": 2}}}
    train(load_config(raw=raw, overrides=list(overrides)), root)
    return root / "checkpoints" / "last.pt"


def test_dde_teacher_starts_every_network_from_the_dae_and_keeps_p_fixed(fashion_root, tmp_path):
    """dde.teacher: at a fresh run's step 0 p̃ and q̃ are the teacher's EMA denoiser and the denoiser
    generator is its one-step denoising of noise at g_sigma, G(z) = D(σ_g z; σ_g); training moves q̃ and
    G (from its second step: q̃ = p̃ at the first), never p̃ (no gradient, no optimizer group); a resumed
    run does not start over from the teacher."""
    teacher_path = train_dae_teacher(fashion_root, tmp_path / "teacher")
    teacher, _ = load_method(teacher_path, "cpu")
    T = teacher.denoiser(ema=True)
    assert not all(torch.equal(a, b) for a, b in zip(teacher.nets["net"].parameters(),
                                                     teacher.sampling_net("net").parameters()))  # EMA ≠ weights
    cfg = quick_config("dde_fashion.yaml", f"data.root={fashion_root}", f"dde.teacher={teacher_path}")
    m = build(cfg, "cpu", info=teacher.info)
    m.warm_start()
    z = m.sample_latents(6, torch.Generator().manual_seed(0))
    x, s = torch.randn(6, 1, 28, 28), torch.full((6,), 0.7)
    with torch.no_grad():
        assert z.shape == (6, 1, 28, 28)
        assert torch.equal(m.nets["G"](z), T(2.5 * z, torch.full((6,), 2.5)))
        assert torch.equal(m.ema["G"](z), m.nets["G"](z))  # the average starts there too
        for name in ("p", "q"):
            assert torch.equal(m.density(name)(x, s), T(x, s)), name
    before = {n: [p.detach().clone() for p in m.nets[n].parameters()] for n in ("G", "p", "q")}

    def moved(name):
        return any(not torch.equal(a, b) for a, b in zip(before[name], m.nets[name].parameters()))
    batch = torch.rand(8, 1, 28, 28) * 2 - 1
    m.training_step(batch)  # q̃ = p̃ so far: G's gradient is 0, and Adam leaves it
    assert [moved(n) for n in ("G", "p", "q")] == [False, False, True]
    m.training_step(batch)
    assert [moved(n) for n in ("G", "p", "q")] == [True, False, True]
    assert all(p.grad is None for p in m.nets["p"].parameters())
    assert "p" not in m.learning_rates()
    over = [f"data.root={fashion_root}", f"dde.teacher={teacher_path}"]
    train_straight_and_resumed("dde_fashion.yaml", over, tmp_path, 2)
    assert assert_same_state(tmp_path / "straight", tmp_path / "split")[0] == 4


def test_dde_teacher_must_fit_the_densities(fashion_root, tmp_path):
    """A teacher whose net is not model.*'s, or whose σ_d is not dde.sigma_data, is one line naming the fix."""
    from common.errors import ConfigError
    from data import DataInfo
    teacher_path = train_dae_teacher(fashion_root, tmp_path / "teacher", "model.width=16")
    info = DataInfo("fashion_mnist", (1, 28, 28), 10)
    for over, message in ((["model.width=8"], "set model.arch=unet model.width=16 model.mults=[1,2] model.blocks=1"),
                          (["model.width=16", "dde.sigma_data=0.7"], "has sigma_data 0.5; set dde.sigma_data=0.5")):
        m = build(quick_config("dde_fashion.yaml", f"dde.teacher={teacher_path}", *over), "cpu", info=info)
        with pytest.raises(ConfigError, match=re.escape(message)):
            m.warm_start()


def test_dde_regression_pairs_are_the_teachers_ode_and_its_loss_is_dmds(fashion_root, tmp_path):
    """dde.regression (DMD's regression loss): warm_start draws z from the run's seed and y(z) by
    DPM-Solver++(2M) on the teacher's ODE from σ_max·z, the images the teacher DAE's own sampler gives for
    those z at η 0; the loss is λ·½‖G(z) − y(z)‖² on a batch of pairs: pairs G already maps exactly cost
    nothing, and on one pair the generator's gradient moves by Δλ times that pair's ∇½‖G(z) − y‖²; a run
    with pairs saves them and resumes to the same state."""
    teacher_path = train_dae_teacher(fashion_root, tmp_path / "teacher", "dae.sigma_sampling=log_normal")
    teacher, _ = load_method(teacher_path, "cpu", ["dae.sampler=dpmpp_2m_sde", "dae.sampler.steps=3",
                                                   "dae.sampler.eta=0"])
    over = [f"data.root={fashion_root}", f"dde.teacher={teacher_path}", "dde.regression_steps=3"]

    def dde(weight, pairs=5):
        m = build(quick_config("dde_fashion.yaml", *over, f"dde.regression={weight}",
                               f"dde.regression_pairs={pairs}"), "cpu", info=teacher.info)
        m.warm_start()
        for w in m.nets["q"].parameters():  # q̃ ≠ p̃, so that the KL moves G too
            w.data += 0.01 * torch.randn(w.shape, generator=torch.Generator().manual_seed(w.numel()))
        return m

    m = dde(2.0)
    z, y = m.pairs
    assert torch.equal(z, torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(y, teacher.sample(5, latents=z), atol=1e-5) and y.std() > 0.1

    def step(m):
        torch.manual_seed(1)
        total, stats = m.objective(torch.rand(8, 1, 28, 28) * 2 - 1, m.density("p"), m.density("q"))
        return torch.autograd.grad(total, list(m.nets["G"].parameters())), stats

    with torch.no_grad():
        m.pairs = z, m.nets["G"](z)
    assert step(m)[1]["regression"] < 1e-8  # each z with its own image: nothing to regress
    (low, stats), (high, _) = step(dde(0.5, pairs=1)), step(m := dde(2.0, pairs=1))
    z, y = m.pairs
    want = torch.autograd.grad(0.5 * (m.nets["G"](z) - y).pow(2).sum(), list(m.nets["G"].parameters()))
    assert stats["regression"] > 1
    moved, want = torch.cat([(a - b).flatten() for a, b in zip(high, low)]), torch.cat([w.flatten() for w in want])
    assert (moved - 1.5 * want).norm() < 1e-3 * (1.5 * want).norm()  # to float32's rounding of the KL terms
    train_straight_and_resumed("dde_fashion.yaml", [*over, "dde.regression=1", "dde.regression_pairs=5"], tmp_path, 2)
    at, state = assert_same_state(tmp_path / "straight", tmp_path / "split")
    targets = next(v for k, v in state.items() if k.endswith("state.regression_targets"))
    assert at == 4 and torch.allclose(targets, dde(1.0).pairs[1])
    resumed, _ = load_method(tmp_path / "split" / "checkpoints" / "last.pt", "cpu")
    assert resumed.pairs is None  # loaded to sample: no targets held
    m = dde(1.0)  # a run saved without targets cannot be resumed with the regression on
    with pytest.raises(CheckpointError, match="^dde.regression: the checkpoint has no regression targets"):
        m.load_state_dict({k: v for k, v in m.state_dict().items() if k != "regression_targets"})


@pytest.mark.parametrize("method", ["dae", "ncsn", "ebm"])
def test_a_bf16_run_samples_with_its_net_in_bf16_and_its_sampler_in_fp32(method):
    """Sampling runs the net in the precision the run trained in (under its autocast, as
    scripts/benchmark.py times it), the sampler's arithmetic in fp32: the net's outputs are bf16,
    and the samples differ from the same weights' fp32 samples by bf16's rounding only."""
    def built(precision):
        torch.manual_seed(0)
        m = attending_denoiser(method, precision=precision, sampler={"name": "heun", "steps": 4})
        g = torch.Generator().manual_seed(2)  # the same weights in both, none at 0 (the output layer starts there)
        with torch.no_grad():
            for p in m.denoiser(ema=True).net.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        return m

    fp32, bf16 = built("fp32"), built("bf16")
    seen = []
    bf16.denoiser(ema=True).net.register_forward_hook(lambda mod, args, out: seen.append((args[0].dtype, out.dtype)))
    z = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    a, b = fp32.sample(6, latents=z), bf16.sample(6, latents=z)
    assert seen and set(seen) == {(torch.float32, torch.bfloat16)}  # the sampler's state stays fp32
    err = (a - b).abs().max().item()
    assert 0 < err < 0.05, err
