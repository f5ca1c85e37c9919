"""Sampler and noise-schedule facts: driven by exact scores, annealed Langevin reproduces a
mixture's weights and means and the variance NCSNv2's step rule predicts, Heun is second order on a
Gaussian's probability-flow ODE and steps where the network was trained; the schedule rules hold;
sample.py picks the sampler by override."""
import math

import pytest
import torch

from conftest import quick_config
from denoising.samplers import annealed_langevin, heun
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
    continuous σ, it takes EDM's levels."""
    from data import DataInfo
    cfg = quick_config("ncsn_toy.yaml", "ncsn.step_lr=1e-4", "ncsn.sampler=heun", "ncsn.heun_steps=6",
                       f"ncsn.sigma_sampling={sampling}")
    method = build(cfg, "cpu", info=DataInfo("toy", (2,), 1, "points"))
    seen = []
    method.nets["net"].register_forward_hook(lambda m, args, out: seen.append(args[1].unique()))
    method.sample(16, torch.Generator().manual_seed(0), ema=False)
    seen = torch.cat(seen).unique().sort(descending=True).values
    s = cfg.ncsn
    trained = method.sigmas if sampling == "discrete" else edm_sigmas(6, s.sigma_min, s.sigma_max, s.rho)[:-1]
    assert len(seen) == len(trained) and torch.allclose(seen, trained.float())
    assert len(method.heun_sigmas()) == (9 if sampling == "discrete" else 7)  # 8 levels + 0; 6 + 0


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


def test_sample_cli_picks_the_sampler_by_override(fashion_root, tmp_path):
    import subprocess
    import sys
    from conftest import ROOT
    train(quick_config("ncsn_fashion.yaml", f"data.root={fashion_root}"), tmp_path)
    for sampler in ("langevin", "heun"):
        r = subprocess.run([sys.executable, str(ROOT / "scripts/sample.py"), "--checkpoint",
                            str(tmp_path / "checkpoints/last.pt"), "--out", str(tmp_path / f"{sampler}.png"),
                            "--n", "4", f"ncsn.sampler={sampler}"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / f"{sampler}.png").is_file()
    r = subprocess.run([sys.executable, str(ROOT / "scripts/sample.py"), "--checkpoint",
                        str(tmp_path / "checkpoints/last.pt"), "--out", str(tmp_path / "x.png"), "ncsn.sampler=ode"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "ncsn.sampler: must be one of 'langevin', 'heun'" in r.stderr
