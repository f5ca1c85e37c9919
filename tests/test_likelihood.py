"""Likelihood facts: the probability-flow ODE with the integrated trace gives Gaussian data its
closed-form log-density (every parametrisation, both solvers; Hutchinson within its stated error);
the integrated trace of a linear field is log det exp(tA) = t tr A; Hutchinson's estimator is
unbiased with its textbook variance; uniform dequantisation of uniform 8-bit data is 8 bits/dim;
an exact denoiser of a toy mixture scores its true density; the CLI reports bits/dim with the
Gaussian baselines (nats against the truth on a toy) and refuses what has no likelihood."""
import json
import math

import pytest
import torch
from torch import nn

from engine.evaluation import bits_per_dim as bpd_lib
from conftest import quick_config
from denoising.denoiser import Denoiser
from denoising.likelihood import draw_probes, jacobian_trace, log_likelihood


class GaussianNet(nn.Module):
    """The raw network F that makes Denoiser(F, parametrization) exact for data N(μ, Σ): the noised
    density is N(μ, C), C = Σ + σ²I, so s = −C⁻¹(x − μ) and D* = x + σ²s; for the energy
    parametrisation D̂ = x − σC^(−1/2)(x − μ) gives E = ½(x − μ)ᵀC⁻¹(x − μ)."""

    def __init__(self, mu, cov, parametrization, sigma_data=0.5):
        super().__init__()
        self.lam, self.q = torch.linalg.eigh(cov)
        self.mu, self.p, self.sd = mu, parametrization, sigma_data

    def forward(self, x_in, sigma):
        s = sigma[:, None]
        v = s ** 2 + self.sd ** 2
        x = x_in * v.sqrt()  # undo c_in
        r = (x - self.mu) @ self.q  # eigen-coordinates
        c = self.lam + s ** 2
        if self.p == "score":
            return s * (-(r / c) @ self.q.T)  # F = σ s
        if self.p == "direct":
            target = x - s ** 2 * ((r / c) @ self.q.T)
        else:
            target = x - s * ((r / c.sqrt()) @ self.q.T)
        return (target - self.sd ** 2 / v * x) / (s * self.sd / v.sqrt())


def gaussian_problem(d=6, n=48, seed=0):
    """A correlated Gaussian (eigenvalues 0.1 … 2, random rotation) and points drawn from it."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    cov = q @ torch.diag(torch.linspace(0.1, 2.0, d, dtype=torch.float64)) @ q.T
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    x = mu + torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    exact = torch.distributions.MultivariateNormal(mu, cov).log_prob(x)
    return mu, cov, x, exact


SIGMA_MIN, SIGMA_MAX = 1e-2, 1000.0


@pytest.mark.parametrize("parametrization", ["score", "direct", "energy"])
def test_ode_log_likelihood_of_gaussian_data_is_the_closed_form(parametrization):
    """With the exact noised score and the exact trace, log p from the ODE is log N(x; μ, Σ) within
    1% (RK45, and Heun on 200 EDM levels: its O(h²) error is still 0.3 nats, 4%, at 32 levels);
    the energy model's trace is a double backward."""
    mu, cov, x, exact = gaussian_problem()
    D = Denoiser(GaussianNet(mu, cov, parametrization), parametrization)
    ll = log_likelihood(D, x, SIGMA_MIN, SIGMA_MAX, "rk45", rtol=1e-6, atol=1e-6)
    assert (ll.log_p - exact).abs().max() < 0.01 * exact.abs().mean()
    assert torch.all(ll.stderr == 0) and ll.nfe > 7
    from denoising.schedule import edm_sigmas
    levels = edm_sigmas(200, SIGMA_MIN, SIGMA_MAX)[:-1].flip(0)
    heun = log_likelihood(D, x, SIGMA_MIN, SIGMA_MAX, "heun", levels)
    assert (heun.log_p - exact).abs().max() < 0.01 * exact.abs().mean() and heun.nfe == 2 * 199


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_log_likelihood_is_within_its_stated_error(probe):
    """Hutchinson with 16 probes per point, fixed along the path: the error of each point's log p
    over its stated standard error behaves like a t statistic (|z| < 4.5, mean z² near 1), the
    points' mean error is within 3 standard errors, and the error is not zero (Σ is not diagonal,
    so the probes do add noise)."""
    mu, cov, x, exact = gaussian_problem(n=64, seed=1)
    D = Denoiser(GaussianNet(mu, cov, "score"), "score")
    probes = draw_probes(x.shape, 16, probe, torch.Generator().manual_seed(2), dtype=x.dtype)
    ll = log_likelihood(D, x, SIGMA_MIN, SIGMA_MAX, "rk45", probes=probes, rtol=1e-6, atol=1e-6)
    z = (ll.log_p - exact) / ll.stderr
    assert z.abs().max() < 4.5 and 0.4 < z.pow(2).mean() < 2.5
    assert (ll.log_p - exact).mean().abs() < 3 * ll.stderr.pow(2).mean().sqrt() / math.sqrt(len(x))
    assert ll.stderr.min() > 1e-3


def linear_denoiser(A):
    """D(x) = x − Ax, so the flow in u = ln σ is dx/du = Ax with constant trace tr A."""
    return lambda x, sigma: x - x @ A.T


@pytest.mark.parametrize("solver", ["rk45", "heun"])
def test_integrated_trace_of_a_linear_field_is_log_det_exp(solver):
    """det exp(tA) = exp(t tr A): for dx/du = Ax over t = ln(σ_max/σ_min), the solver carries x to
    exp(tA)x and the integrated trace equals slogdet(matrix_exp(tA)) = t tr A."""
    g = torch.Generator().manual_seed(0)
    A = 0.3 * torch.randn(5, 5, generator=g, dtype=torch.float64)
    x = torch.randn(3, 5, generator=g, dtype=torch.float64)
    sigma_min, sigma_max = 0.1, 1.0
    t = math.log(sigma_max / sigma_min)
    from denoising.likelihood import Flow, heun_flow, rk45_flow
    flow = Flow(linear_denoiser(A))
    if solver == "rk45":
        x_end, ell = rk45_flow(flow, x, sigma_min, sigma_max, 1e-9, 1e-9)
    else:  # in σ the field is Ax/σ; on 400 geometric levels Heun's O(h²) error in x is 2e-5
        x_end, ell = heun_flow(flow, x, torch.logspace(math.log10(sigma_min), math.log10(sigma_max), 400,
                                                      dtype=torch.float64))
    expm = torch.linalg.matrix_exp(t * A)
    sign, logdet = torch.linalg.slogdet(expm)
    assert sign == 1 and logdet.item() == pytest.approx(t * A.trace().item(), abs=1e-9)
    assert torch.allclose(ell[:, 0], logdet.expand(3), atol=1e-7)
    assert torch.allclose(x_end, x @ expm.T, atol=1e-6 if solver == "rk45" else 1e-4)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_with_the_textbook_variance(probe):
    """E[εᵀJε] = tr J for a random Jacobian J; the variance is 2‖J_s‖_F² for Gaussian probes and
    2Σ_{i≠j}(J_s)_ij² for Rademacher ones (J_s = (J + Jᵀ)/2); the exact trace is tr J."""
    g = torch.Generator().manual_seed(0)
    d, k = 8, 20000
    J = torch.randn(d, d, generator=g, dtype=torch.float64)
    x = torch.randn(1, d, dtype=torch.float64, requires_grad=True)
    y = x @ J.T
    assert jacobian_trace(y, x).item() == pytest.approx(J.trace().item(), abs=1e-12)
    est = jacobian_trace(y, x, draw_probes(x.shape, k, probe, g, dtype=x.dtype))[0]
    assert abs(est.mean().item() - J.trace().item()) < 4 * est.std().item() / math.sqrt(k)
    sym = (J + J.T) / 2
    var = 2 * (sym.pow(2).sum() - (sym.diagonal().pow(2).sum() if probe == "rademacher" else 0))
    assert est.var().item() == pytest.approx(var.item(), rel=0.05)


def test_uniform_dequantisation_of_uniform_8bit_data_is_8_bits_per_dim():
    """k uniform over the 256 levels, x = 2(k + u)/256 − 1 is uniform on [−1, 1)^d, density 2^(−d):
    exactly 8 bits/dim. The maximum-likelihood Gaussians of the same data lose the entropy gap
    log₂√(2πe/12) = 0.2546 bits (per-pixel and full covariance alike), and so they do on images that
    never change, where only the dequantisation noise (variance (1/128)²/12) is left to fit."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4000, 1, 4, 4), generator=g, dtype=torch.uint8)
    x = bpd_lib.dequantize(images, g)
    assert x.min() >= -1 and x.max() < 1
    k = ((x + 1) * 128).floor()  # each point stays in its own bin
    assert torch.equal(k, images.float())
    d = x[0].numel()
    uniform_log_p = torch.full((len(x),), -d * math.log(2.0))
    bpd = bpd_lib.bits_per_dim(uniform_log_p, d)
    assert torch.allclose(bpd, torch.full_like(bpd, 8.0), atol=1e-12)
    gap = 0.5 * math.log2(2 * math.pi * math.e / 12)
    for full in (False, True):
        r = bpd_lib.gaussian_bits_per_dim(images[:3000], images[3000:], full, g)
        assert abs(r["bpd"] - (8 + gap)) < max(r["ci95"], 0.01)
        constant = torch.full((500, 1, 4, 4), 37, dtype=torch.uint8)
        r = bpd_lib.gaussian_bits_per_dim(constant[:400], constant[400:], full, g)
        assert abs(r["bpd"] - gap) < max(r["ci95"], 0.02)


def test_mean_ci95_is_the_normal_interval():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mean, half = bpd_lib.mean_ci95(values)
    assert mean == 2.5 and half == pytest.approx(1.96 * values.std().item() / 2)


@pytest.fixture(scope="module")
def ncsn_checkpoint(fashion_root, tmp_path_factory):
    from engine import train
    run = tmp_path_factory.mktemp("run")
    train(quick_config("ncsn_fashion.yaml", f"data.root={fashion_root}", "train.steps=3"), run)
    return run / "checkpoints" / "last.pt"


def run_cli(argv, capsys):
    """scripts/likelihood.py in-process: (exit status, stdout, stderr)."""
    import likelihood as script
    try:
        script.main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_reports_bits_per_dim_with_baselines_and_logs_tensorboard(ncsn_checkpoint, fashion_root, tmp_path,
                                                                      capsys):
    out = tmp_path / "bpd.json"
    code, stdout, stderr = run_cli(["--checkpoint", str(ncsn_checkpoint), "--n", "6", "--batch-size", "4",
                                    "--solver", "heun", "--steps", "4", "--probes", "2", "--json", str(out),
                                    f"data.root={fashion_root}"], capsys)
    assert code == 0, stderr
    result = json.loads(out.read_text())
    assert json.loads(stdout) == result
    model, diag, full = result["model"], result["gaussian_diagonal"], result["gaussian_full"]
    assert model["n"] == diag["n"] == full["n"] == 6 and model["nfe"] == 2 * 3
    for r in (model, diag, full):
        assert math.isfinite(r["bpd"]) and r["ci95"] > 0
    from common.config import DataConfig, parse
    from data import build_dataset
    from engine.evaluation.evaluate import held_out_images
    data = lambda split: build_dataset(parse(DataConfig, {"root": str(fashion_root), "split": split}, "data"))
    for r, full in ((diag, False), (full, True)):  # the same test points as the model's, the training set's fit
        points = held_out_images(data("test"), 6)[0]  # likelihood.py's test images
        again = bpd_lib.gaussian_bits_per_dim(data("train").data, points, full, torch.Generator().manual_seed(0))
        assert r["bpd"] == pytest.approx(again["bpd"], rel=1e-12)
    tb = ncsn_checkpoint.parent.parent / "tb"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tb))
    acc.Reload()
    (event,) = acc.Scalars("eval/bpd")
    assert event.value == pytest.approx(model["bpd"], rel=1e-6) and event.step == 3


def test_model_bits_per_dim_is_seeded_and_exact_trace_agrees_with_hutchinson(ncsn_checkpoint):
    """The same generator seed gives the same figure; the exact trace lies within 4 of Hutchinson's
    stated standard errors of it (same dequantisation, same path)."""
    from engine import load_method
    method, _ = load_method(ncsn_checkpoint, "cpu")
    images = torch.randint(0, 256, (1, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    run = lambda **kw: bpd_lib.model_bits_per_dim(method, images, solver="heun", steps=2,
                                                  generator=torch.Generator().manual_seed(5), **kw)
    a, b = run(probes=8), run(probes=8)
    assert a["bpd"] == b["bpd"] and a["nfe"] == 2
    exact = run(exact_trace=True)  # 784 VJPs per evaluation
    assert abs(exact["bpd"] - a["bpd"]) < 4 * a["hutchinson_se"]
    assert exact["bpd"] != a["bpd"] and exact["nfe"] == 2


def test_cli_refuses_what_has_no_likelihood_in_one_line(ncsn_checkpoint, fashion_root, tmp_path, capsys):
    from engine import train
    runs = {name: tmp_path / name for name in ("gan_fashion", "dde_toy", "ncsn_toy")}
    for name, run in runs.items():
        train(quick_config(f"{name}.yaml", f"data.root={fashion_root}", "train.steps=1"), run)
    (tmp_path / "file").write_text("")
    capsys.readouterr()
    last = lambda name: str(runs[name] / "checkpoints" / "last.pt")
    cases = [
        (["--checkpoint", last("gan_fashion")], "gan checkpoint: no tractable likelihood"),
        (["--checkpoint", last("dde_toy")], "dde checkpoint: no tractable likelihood"),
        (["--checkpoint", last("ncsn_toy"), "data.toy=rings"], "no known density"),
        (["--checkpoint", str(ncsn_checkpoint), "--n", "0"], "--n"),
        (["--checkpoint", str(tmp_path / "missing.pt")], "missing.pt"),
        (["--checkpoint", str(ncsn_checkpoint), "--json", str(tmp_path / "file" / "x.json")], "--json"),
        (["--checkpoint", str(ncsn_checkpoint), "--probes", "0"], "--probes"),
    ]
    for argv, words in cases:
        code, stdout, stderr = run_cli(argv + [f"data.root={fashion_root}"], capsys)
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], (argv, stderr)


class ExactMixtureMethod:
    """A stand-in for a trained method whose denoiser is exact for the 8-Gaussians toy:
    D(x; σ) = x + σ² ∇log p_σ(x) (Tweedie), the oracle's noised score."""

    def __init__(self, sigma_min=0.01, sigma_max=20.0):
        from types import SimpleNamespace
        from oracles import eight_gaussians
        mix = eight_gaussians()
        self.cfg = SimpleNamespace(data=SimpleNamespace(name="toy", toy="8gaussians"), method="oracle")
        self.noise = SimpleNamespace(sigma_min=sigma_min, sigma_max=sigma_max)
        self.device = torch.device("cpu")

        class D:
            net = nn.Identity()

            def __call__(self, x, sigma):
                return (x.double() + float(sigma) ** 2 * mix.score(x, float(sigma))).to(x.dtype)
        self.D = D()

    def denoiser(self, ema=True):
        return self.D


def test_an_exact_toy_denoiser_scores_the_true_density_at_sigma_min():
    """KL(p ‖ q) = 0 when q is the model's own p_σmin: the gap the script reports is then the
    mixture's KL(p ‖ p ∗ N(0, σ_min²)), and the model's log q matches log p_σmin point by point
    (up to the prior's mismatch at σ_max, ‖μ‖²/2σ_max² = 0.005 nats at σ_max = 20)."""
    from engine.evaluation.toy_likelihood import mixture_log_likelihood
    from data.toy import eight_gaussians
    method = ExactMixtureMethod()
    out = mixture_log_likelihood(method, 64, seed=3, rtol=1e-6, atol=1e-6)
    assert out["model"]["n"] == 64 and out["model"]["trace"] == "exact"
    assert out["model"]["nats"] == pytest.approx(out["true_density_at_sigma_min"]["nats"], abs=0.02)
    gap = out["true_density"]["nats"] - out["model"]["nats"]
    assert out["gap_nats"]["mean"] == pytest.approx(gap, abs=1e-9)
    x, _ = eight_gaussians().sample(64, torch.Generator().manual_seed(10_003))
    assert out["true_density"]["nats"] == pytest.approx(eight_gaussians().log_prob(x).mean().item(), rel=1e-12)
    worse = mixture_log_likelihood(ExactMixtureMethod(sigma_min=0.1), 64, seed=3, rtol=1e-6, atol=1e-6)
    assert worse["model"]["nats"] == pytest.approx(worse["true_density_at_sigma_min"]["nats"], abs=0.02)
    # σ_min = 0.1 doubles each component's variance: KL = ln 2 − ½ = 0.19 nats in expectation
    assert worse["gap_nats"]["mean"] > out["gap_nats"]["mean"] + 0.1


def test_cli_scores_a_toy_run_in_nats_against_its_true_density(tmp_path, capsys):
    from engine import train
    run = tmp_path / "ncsn_toy"
    train(quick_config("ncsn_toy.yaml", "train.steps=2"), run)
    code, stdout, stderr = run_cli(["--checkpoint", str(run / "checkpoints" / "last.pt"), "--n", "32",
                                    "--batch-size", "16"], capsys)
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["data"] == "toy/8gaussians" and result["model"]["n"] == 32
    assert result["gap_nats"]["mean"] == pytest.approx(result["true_density"]["nats"] - result["model"]["nats"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    (event,) = acc.Scalars("eval/nats")
    assert event.value == pytest.approx(result["model"]["nats"], rel=1e-6) and event.step == 2
