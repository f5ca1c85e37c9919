"""Sampler and noise-schedule facts: driven by exact scores, annealed Langevin reproduces a
mixture's weights and means and the variance NCSNv2's step rule predicts, Heun is second order on a
Gaussian's probability-flow ODE and steps where the network was trained, EDM's stochastic sampler is
Heun without churn and samples a Gaussian's moments with it, Restart is Heun without restarts and
forgets Heun's start error with them, DPM-Solver++(2M) is second order on the ODE and ancestral
sampling when its estimate does not move, Euler–Maruyama and predictor–corrector
converge to a Gaussian as their steps grow; the schedule rules hold; sample.py picks the sampler by
override."""
import math

import pytest
import torch

from conftest import quick_config
from denoising.samplers import (ancestral, ancestral_step, annealed_langevin, dpmpp_2m_sde, edm_stochastic, heun,
                                noised_heun, predictor_corrector, restart_plan, reverse_sde, reverse_sde_step)
from denoising.schedule import edm_sigmas, geometric_sigmas, ncsnv2_ratio, ncsnv2_step_size
from engine import build, train
from oracles import GaussianMixture


def test_annealed_langevin_on_the_exact_score_reproduces_weights_and_means():
    mix = GaussianMixture([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]], std=0.4, weights=[0.5, 0.3, 0.2])
    g = torch.Generator().manual_seed(0)
    sigmas = geometric_sigmas(10.0, 0.01, 30)
    x0 = 10.0 * torch.randn(6000, 2, generator=g, dtype=torch.float64)
    x = annealed_langevin(lambda y, s: mix.score(y, s), x0, sigmas, 20, 2e-5, generator=g)
    comp = torch.cdist(x, mix.means).argmin(1)
    weights = torch.bincount(comp, minlength=3).double() / len(x)
    assert torch.allclose(weights, mix.weights, atol=0.03), weights
    for k in range(3):
        assert (x[comp == k].mean(0) - mix.means[k]).norm() < 0.05
        assert x[comp == k].std(0).mean().item() == pytest.approx(0.4, rel=0.1)


@pytest.mark.parametrize("gamma,steps", [(1.2, 5), (1.3, 3)])
def test_langevin_at_the_last_level_reaches_technique_4s_variance(gamma, steps):
    """NCSNv2 technique 4 derives ε for x ← x + α s + √(2α) z: from N(0, γ²σ_L²) (a data point
    seen at the previous level), T steps on the exact score −x/σ_L² leave the variance ratio
    (1 − s)^{2T}(γ² − 2/(2 − s)) + 2/(2 − s), s = ε/σ_L². The sampler must run the step the rule
    assumes (NCSN's (α/2)s + √α z halves the effective step: 1.196 instead of 1.146 at γ = 1.2)."""
    from denoising.samplers import langevin
    from denoising.schedule import ncsnv2_step_size
    sigma_l = 0.01
    eps = ncsnv2_step_size(sigma_l, gamma, steps)
    s = eps / sigma_l ** 2
    b = 2 / (2 - s)
    predicted = (1 - s) ** (2 * steps) * (gamma ** 2 - b) + b
    x = gamma * sigma_l * torch.randn(400_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = langevin(lambda y, sigma: -y / sigma ** 2, x, sigma_l, steps, eps, torch.Generator().manual_seed(1))
    assert x.var().item() / sigma_l ** 2 == pytest.approx(predicted, rel=0.01)
    assert predicted < gamma ** 2 - 0.1  # the chain moved: the check is not vacuous


def test_heun_on_a_gaussian_score_maps_sigma_max_noise_to_the_data_variance():
    """For data N(0, s²I) the probability-flow ODE is exactly x(σ) = x(σ₀)·√((s² + σ²)/(s² + σ₀²)),
    so N(0, σ_max²I) at σ_max lands on variance s²σ_max²/(s² + σ_max²) ≈ s². Heun with 25 EDM levels
    (49 evaluations) tracks it within 3% (measured 2.7%, i.e. 5.4% in variance; s = 0.5 against
    σ_max = 80 is a stiff case),
    and the error falls 4× when the levels double: a second-order method."""
    s, calls = 0.5, {"n": 0}

    def denoise(x, sigma):  # D = x + σ²·score, score = −x/(s² + σ²)
        calls["n"] += 1
        return x * s ** 2 / (s ** 2 + sigma ** 2)

    x0 = 80.0 * torch.randn(20000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = heun(denoise, x0, edm_sigmas(25, 0.002, 80.0))
    assert calls["n"] == 49 <= 50
    assert x.var().item() == pytest.approx(s ** 2 * 80 ** 2 / (s ** 2 + 80 ** 2), rel=0.08)
    exact = x0 * math.sqrt(0.002 ** 2 + s ** 2) / math.sqrt(s ** 2 + 80 ** 2)
    errors = [((heun(denoise, x0, edm_sigmas(n, 0.002, 80.0)) - exact).norm() / exact.norm()).item()
              for n in (25, 50)]
    assert errors[0] < 0.03
    assert 0.15 < errors[1] / errors[0] < 0.35


@pytest.mark.parametrize("sampling", ["discrete", "log_uniform"])
def test_heun_evaluates_a_conditional_net_only_where_it_was_trained(sampling):
    """Trained on the ladder's levels alone, a σ-conditional net is arbitrary between them (cosine
    0.1 with the exact score at σ = 0.07 on the toy), so Heun steps on the ladder; trained on
    continuous σ, it takes EDM's levels. The count of evaluations a sample costs, which evaluate.py
    reports, is the count of the net's passes either way (not 2·steps − 1 on the ladder)."""
    from data import DataInfo
    cfg = quick_config("ncsn_toy.yaml", "ncsn.sampler=heun", "ncsn.sampler.steps=6", f"ncsn.sigma_sampling={sampling}")
    method = build(cfg, "cpu", info=DataInfo("toy", (2,), 1, "points"))
    seen = []
    method.nets["net"].register_forward_hook(lambda m, args, out: seen.append(args[1].unique()))
    method.sample(16, torch.Generator().manual_seed(0), ema=False)
    assert method.evaluations_per_sample() == len(seen)  # one batch: one pass per evaluation
    seen = torch.cat(seen).unique().sort(descending=True).values
    s = cfg.ncsn
    trained = method.sigmas if sampling == "discrete" else edm_sigmas(6, s.sigma_min, s.sigma_max, s.sampler.rho)[:-1]
    assert len(seen) == len(trained) and torch.allclose(seen, trained.float())
    assert len(s.sampler.levels(method.schedule())) == (9 if sampling == "discrete" else 7)  # 8 levels + 0; 6 + 0


@pytest.mark.parametrize("on_ladder", [False, True])
def test_the_recorded_levels_of_every_sampler_are_as_many_as_its_evaluations(on_ladder):
    """evaluation_sigmas runs a sampler on a stand-in denoiser: it must see each of the sampler's
    evaluations once (as many as its nfe, with its default settings), each at its level (Heun: each
    level, then the next one for the second-order correction, but never σ = 0)."""
    from common.registry import lookup, names
    from common.schema import Chosen
    from denoising.samplers import HeunSettings, SamplerSettings, Schedule, evaluation_sigmas
    schedule = Schedule(geometric_sigmas(5.0, 0.05, 8), on_ladder)
    for name in names("sampler"):
        settings = Chosen("sampler", SamplerSettings).parse(name, "sampler")
        assert len(evaluation_sigmas(lookup("sampler", name), settings, schedule, (2,))) == settings.nfe(schedule), name
    levels = [float(s) for s in HeunSettings(steps=6).levels(schedule)]
    heun_levels = [s for i in range(len(levels) - 1) for s in (levels[i], levels[i + 1]) if s > 0]
    assert evaluation_sigmas(lookup("sampler", "heun"), HeunSettings(steps=6), schedule, (2,)) == pytest.approx(heun_levels)


def test_guidance_in_an_interval_costs_the_passes_the_net_makes(fashion_root):
    """A conditional net guided at w 2 in an interval of σ: one pass a level outside it, two inside,
    and evaluations_per_sample (what evaluate.py reports) counts exactly the net's passes."""
    from data import DataInfo
    counts = {}
    for interval in ("null", "[0.3,2.0]"):
        cfg = quick_config("ncsn_fashion.yaml", f"data.root={fashion_root}", "model.num_classes=10", "ncsn.sigma_max=5",
                           "ncsn.sigma_sampling=log_uniform", "ncsn.guidance=2", f"ncsn.guidance_interval={interval}",
                           "ncsn.sampler=heun", "ncsn.sampler.steps=6")
        method = build(cfg, "cpu", info=DataInfo("fashion_mnist", (1, 28, 28), 10))
        rows = []
        method.nets["net"].register_forward_hook(lambda m, args, out: rows.append(len(args[0])))
        method.sample(2, torch.Generator().manual_seed(0), ema=False)
        counts[interval] = sum(rows) // 2
        assert method.evaluations_per_sample() == counts[interval]
    nfe = 2 * 6 - 1
    assert counts["null"] == 2 * nfe and nfe < counts["[0.3,2.0]"] < 2 * nfe


def test_ncsnv2_schedule_rules():
    # Technique 2: consecutive levels overlap by one half (the defining equation holds at γ).
    phi = lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2)))
    g, r = ncsnv2_ratio(3072), math.sqrt(2 * 3072)
    assert phi(r * (g - 1) + 3 * g) - phi(r * (g - 1) - 3 * g) == pytest.approx(0.5, abs=1e-9)
    # Technique 4 with the paper's CIFAR-10 ladder (γ = 1.0376, T = 5, σ_L = 0.01) gives its ε = 6.2e-6.
    assert ncsnv2_step_size(0.01, 1.0376, 5) == pytest.approx(6.2e-6, rel=0.01)
    s = geometric_sigmas(50, 0.01, 232)
    assert s[0] == pytest.approx(50) and s[-1] == pytest.approx(0.01)
    assert torch.allclose(s[:-1] / s[1:], (s[0] / s[1]).expand(231))
    e = edm_sigmas(18, 0.002, 80.0)
    assert e[0] == pytest.approx(80) and e[-2] == pytest.approx(0.002) and e[-1] == 0
    # EDM's levels are evenly spaced in σ^(1/ρ) (eq. 5), interior ones included.
    for rho in (3.0, 7.0):
        spacing = edm_sigmas(18, 0.002, 80.0, rho)[:-1].pow(1 / rho).diff()
        assert torch.allclose(spacing, spacing[0].expand(17), rtol=1e-9)


def test_sample_cli_picks_the_sampler_by_override(fashion_root, tmp_path, capsys):
    """sample.py's overrides choose the sampler and its settings (in process: tests/test_scripts.py
    runs sample.py as a process)."""
    from sample import main
    train(quick_config("ncsn_fashion.yaml", f"data.root={fashion_root}"), tmp_path)
    ckpt = str(tmp_path / "checkpoints/last.pt")
    for sampler in ("langevin", "heun", "edm"):
        main(["--checkpoint", ckpt, "--out", str(tmp_path / f"{sampler}.png"), "--n", "4", f"ncsn.sampler={sampler}"])
        assert (tmp_path / f"{sampler}.png").is_file()
    assert "from step" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--checkpoint", ckpt, "--out", str(tmp_path / "x.png"), "ncsn.sampler=ode"])
    assert e.value.code == 2 and "ncsn.sampler: must be one of 'langevin', 'heun', 'edm'" in capsys.readouterr().err


def gaussian(d: int = 3, seed: int = 0):
    """Data N(μ, Σ) and its exact denoiser D(x; σ) = μ + Σ(Σ + σ²I)⁻¹(x − μ) (fp64)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=g, dtype=torch.float64) * 0.5
    a = torch.randn(d, d, generator=g, dtype=torch.float64) * 0.3
    cov = a @ a.T + 0.05 * torch.eye(d, dtype=torch.float64)

    def denoise(x, sigma):
        return mu + (x - mu) @ (cov @ torch.linalg.inv(cov + sigma ** 2 * torch.eye(d, dtype=torch.float64))).T
    return mu, cov, denoise


def moment_errors(x, mu, cov) -> tuple[float, float]:
    """max |mean − μ| and ‖cov − Σ‖/‖Σ‖ of samples x."""
    return (x.mean(0) - mu).abs().max().item(), ((torch.cov(x.T) - cov).norm() / cov.norm()).item()


def start(n=100_000, d=3, sigma_max=10.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    return sigma_max * torch.randn(n, d, generator=g, dtype=torch.float64), g


def test_the_final_denoising_step_is_tweedies_posterior_mean():
    """With no Langevin step, annealed Langevin is its last step alone: x + σ_L² s(x; σ_L) = D(x; σ_L)."""
    mu, cov, denoise = gaussian()
    x, _ = start(1000)
    sigmas = geometric_sigmas(10.0, 0.3, 5)
    out = annealed_langevin(lambda y, s: (denoise(y, s) - y) / s ** 2, x, sigmas, 0, 1e-3)
    assert torch.allclose(out, denoise(x, 0.3), atol=1e-12)


def test_edm_sampler_without_churn_is_heun_exactly():
    mu, cov, denoise = gaussian()
    x, g = start(2000)
    levels = edm_sigmas(12, 0.002, 10.0)
    ref = heun(denoise, x, levels)
    assert torch.equal(edm_stochastic(denoise, x, levels, churn=0.0, generator=g), ref)
    assert torch.equal(edm_stochastic(denoise, x, levels, churn=30.0, tmin=20.0, tmax=50.0, generator=g), ref)  # no level churned
    assert not torch.equal(edm_stochastic(denoise, x, levels, churn=30.0, generator=g), ref)


def test_edm_sampler_with_churn_samples_a_gaussian_with_its_moments():
    """Algorithm 2 on N(μ, Σ)'s exact denoiser, 160 levels from σ = 10, churn on [0.01, 5]: the
    samples' mean within 0.005 and covariance within 2% (measured 0.0011 and 0.9%; 100,000 samples
    give about 0.5% of sampling error). Heun from the same start stays 2.1% off: its deterministic
    map keeps the error of starting from N(0, σ_max²I) rather than p_σmax; the churn's fresh noise
    forgets it."""
    mu, cov, denoise = gaussian()
    x, g = start()
    out = edm_stochastic(denoise, x, edm_sigmas(160, 0.002, 10.0), churn=48.0, tmin=0.01, tmax=5.0, generator=g)
    mean_err, cov_err = moment_errors(out, mu, cov)
    assert mean_err < 0.005 and cov_err < 0.02


def restart(denoise, x, levels, intervals, g, s_noise=1.0):
    return noised_heun(denoise, x, restart_plan(levels, intervals), s_noise, g)


def test_restart_without_restarts_is_heun_exactly_and_its_plan_jumps_where_asked():
    mu, cov, denoise = gaussian()
    x, g = start(2000)
    levels = edm_sigmas(12, 0.002, 10.0)
    ref = heun(denoise, x, levels)
    assert torch.equal(restart(denoise, x, levels, [], g), ref)
    assert torch.equal(restart(denoise, x, levels, [(3, 0, 0.1, 1.0)], g), ref)  # K = 0
    plan = restart_plan(levels, [(3, 2, 0.1, 1.0)])
    at = min(range(1, 12), key=lambda i: abs(float(levels[i]) - 0.1))  # the level nearest t_min
    jumps = [step for step in plan if step[1] > step[0]]
    assert jumps == [(float(levels[at]), 1.0, pytest.approx(float(edm_sigmas(3, float(levels[at]), 1.0)[1])))] * 2
    assert len(plan) == 12 + 2 * 2  # 12 main steps, two restarts of 2 steps each
    i = plan.index(jumps[0])
    assert plan[i - 1][2] == plan[i + 1][2] == plan[i + 3][2] == float(levels[at])  # each comes back to it
    assert plan[i + 4] == (float(levels[at]), float(levels[at]), float(levels[at + 1]))  # then goes on


def test_restart_forgets_heuns_start_error_on_a_gaussian():
    """Restart (Xu et al. 2023) on N(μ, Σ)'s exact denoiser: Heun's 160 levels from N(0, σ_max²I)
    keep the error of that start (mean 0.041 and covariance 1.5% off), and restarts, jumps from
    σ 0.05 to 5 with fresh noise, contract it: 4 of them leave 0.0006 and 0.4% (the sampling error
    of 100,000 samples is about 0.5%)."""
    mu, cov, denoise = gaussian()
    x, g = start()
    levels = edm_sigmas(160, 0.002, 10.0)
    heun_err = moment_errors(heun(denoise, x, levels), mu, cov)
    mean_err, cov_err = moment_errors(restart(denoise, x, levels, [(40, 4, 0.05, 5.0)], g), mu, cov)
    assert heun_err[0] > 0.03 and heun_err[1] > 0.01, heun_err
    assert mean_err < 0.003 and cov_err < 0.006, (mean_err, cov_err)


@pytest.mark.parametrize("solver", ["midpoint", "heun"])
def test_dpmpp_2m_on_the_ode_is_second_order(solver):
    """η = 0 is DPM-Solver++(2M) on the probability-flow ODE of N(0, s²I) (exact: x·s/√(s² + σ_max²)
    at σ = 0): 25 levels within 5% (measured 3.0% midpoint, 4.6% heun), and the error falls about 4×
    when the levels double (measured 0.22 and 0.20): second order, from one evaluation a level."""
    s = 0.5
    x0 = 80.0 * torch.randn(20000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = x0 * s / math.sqrt(s ** 2 + 80 ** 2)
    errors = [((dpmpp_2m_sde(lambda x, sigma: x * s ** 2 / (s ** 2 + sigma ** 2), x0, edm_sigmas(n, 0.002, 80.0),
                             0.0, 1.0, solver) - exact).norm() / exact.norm()).item() for n in (25, 50)]
    assert errors[0] < 0.05 and 0.15 < errors[1] / errors[0] < 0.3, errors


def test_dpmpp_2m_sde_is_ancestral_sampling_when_the_estimate_does_not_move():
    """With η = 1 a step without its multistep term is the ancestral step (the VE posterior): on data
    at one point (D ≡ μ, so D_i − D_{i−1} = 0) the two samplers agree to rounding on the same noise;
    on a Gaussian, whose D moves, they do not."""
    mu = torch.tensor([0.3, -0.2], dtype=torch.float64)
    levels = edm_sigmas(20, 0.002, 10.0)
    x = 10.0 * torch.randn(1000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    point = lambda y, sigma: mu.expand_as(y) + 0 * y
    a = dpmpp_2m_sde(point, x, levels, 1.0, 1.0, "midpoint", torch.Generator().manual_seed(1))
    b = ancestral(point, x, levels, torch.Generator().manual_seed(1))
    assert torch.allclose(a, b, rtol=0, atol=1e-12)
    _, _, denoise = gaussian(d=2)
    a = dpmpp_2m_sde(denoise, x, levels, 1.0, 1.0, "midpoint", torch.Generator().manual_seed(1))
    assert not torch.allclose(a, ancestral(denoise, x, levels, torch.Generator().manual_seed(1)), atol=1e-3)


def test_an_ancestral_step_lands_on_the_next_noise_level_whatever_its_size():
    """Data at one point μ (exact denoiser D = μ), x ~ N(μ, σ_i²): an ancestral step to σ_next gives
    N(μ, σ_next²) exactly, for a step from 10 to 1 as for one from 10 to 9.9; Euler–Maruyama's
    √(σ_i² − σ_next²) z leaves about σ_i of noise after the large step."""
    mu = torch.tensor([0.3, -0.2], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    for s_next in (1.0, 9.9):
        x = mu + 10.0 * torch.randn(200_000, 2, generator=g, dtype=torch.float64)
        out = ancestral_step(lambda y, s: mu.expand_as(y), x, 10.0, s_next, g)
        assert torch.allclose(out.std(0), torch.full((2,), s_next, dtype=torch.float64), rtol=0.01)
        assert (out.mean(0) - mu).abs().max() < 0.05
    euler = reverse_sde_step(lambda y, s: mu.expand_as(y), mu + 10.0 * torch.randn(200_000, 2, generator=g,
                                                                                dtype=torch.float64), 10.0, 1.0, g)
    assert torch.allclose(euler.std(0), torch.full((2,), math.sqrt(0.01 ** 2 * 100 + 99), dtype=torch.float64),
                          rtol=0.01)  # ≈ 9.95, not 1


@pytest.mark.parametrize("sampler", ["euler_maruyama", "ancestral", "pc", "dpmpp_2m_sde"])
def test_sde_samplers_converge_to_the_data_distribution_as_steps_grow(sampler):
    """On N(μ, Σ)'s exact denoiser, Euler–Maruyama (first order: the covariance error halves when
    the steps double, measured 0.19, 0.09, 0.04), ancestral sampling and predictor–corrector (snr
    0.16) approach the data's moments as the levels go from 40 to 160."""
    mu, cov, denoise = gaussian()
    errors = []
    for steps in (40, 80, 160):
        x, g = start()
        levels = edm_sigmas(steps, 0.002, 10.0)
        out = {"euler_maruyama": lambda: reverse_sde(denoise, x, levels, g),
               "ancestral": lambda: ancestral(denoise, x, levels, g),
               "dpmpp_2m_sde": lambda: dpmpp_2m_sde(denoise, x, levels, 1.0, 1.0, "midpoint", g),
               "pc": lambda: predictor_corrector(denoise, x, levels, 0.16, 1, g)}[sampler]()
        errors.append(moment_errors(out, mu, cov))
    cov_errors = [c for _, c in errors]
    assert cov_errors[0] > cov_errors[1] > cov_errors[2], cov_errors
    assert errors[-1][0] < 0.01 and cov_errors[-1] < 0.05, errors
