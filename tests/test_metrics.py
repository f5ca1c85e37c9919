"""Evaluation facts: the streaming FID equals the closed-form Fréchet distance of Gaussians whose
moments are known; FID(x, x) = 0; KID(x, x) is the O(1/m) value the unbiased estimator must give;
IS is 1 for constant and C for confident balanced predictions; precision/recall are 1 for identical
sets and recall collapses with the generator; the metrics never touch the global RNG."""
import math

import pytest
import torch

from engine.evaluation.scores import (frechet_metric, inception_score, kernel_inception_distance,
                                   precision_recall)


def gaussian_with_exact_moments(n, mean, cov_sqrt, generator):
    """n points whose sample mean and (n − 1)-normalised covariance are exactly `mean` and
    cov_sqrt·cov_sqrtᵀ: whitened noise (centred, orthonormal columns, scaled by √(n − 1))."""
    z = torch.randn(n, len(mean), generator=generator, dtype=torch.float64)
    q, _ = torch.linalg.qr(z - z.mean(0))
    return mean + math.sqrt(n - 1) * q @ cov_sqrt.T


def fid_of(real, fake, chunk=97):
    fid = frechet_metric(real.shape[1])
    for r in real.split(chunk):  # streamed in uneven batches: the sums do not care
        fid.update(r, real=True)
    for f in fake.split(chunk):
        fid.update(f, real=False)
    return fid.compute().item()


def test_frechet_distance_matches_its_closed_form_for_commuting_gaussians():
    g = torch.Generator().manual_seed(0)
    d = 6
    u, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))  # a shared eigenbasis
    a, b = torch.rand(d, generator=g, dtype=torch.float64) + 0.1, 2 * torch.rand(d, generator=g, dtype=torch.float64) + 0.1
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    x = gaussian_with_exact_moments(500, mu1, u @ torch.diag(a.sqrt()), g)
    y = gaussian_with_exact_moments(700, mu2, u @ torch.diag(b.sqrt()), g)
    # Σ1 = U diag(a) Uᵀ, Σ2 = U diag(b) Uᵀ commute, so tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) = Σᵢ (√aᵢ − √bᵢ)².
    closed_form = ((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()
    assert math.isclose(fid_of(x, y), closed_form.item(), rel_tol=1e-8)
    assert math.isclose(fid_of(y, x), closed_form.item(), rel_tol=1e-8)


def test_fid_of_a_set_with_itself_is_zero():
    x = torch.rand(400, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64) ** 3
    trace = torch.cov(x.T).trace().item()
    assert abs(fid_of(x, x)) < 1e-8 * trace
    assert fid_of(x, x + 0.1) == pytest.approx(32 * 0.01, rel=1e-6)  # a shift costs ‖δ‖² exactly


def test_kid_of_identical_sets_is_the_unbiased_estimators_O_one_over_m_value():
    g = torch.Generator().manual_seed(2)
    m, d = 300, 16
    x = torch.randn(m, d, generator=g, dtype=torch.float64)
    state = torch.get_rng_state()
    kid, _ = kernel_inception_distance(x, x, subsets=3, subset_size=m)
    assert torch.equal(torch.get_rng_state(), state)  # subsets come from a forked, seeded RNG
    # With both subsets the whole set, the unbiased MMD² is (2/m)(mean off-diagonal k − mean diagonal k).
    k = (x @ x.T / d + 1) ** 3
    off = (k.sum() - k.diag().sum()) / (m * (m - 1))
    assert kid == pytest.approx((2 / m * (off - k.diag().mean())).item(), rel=1e-9)
    shifted, _ = kernel_inception_distance(x, x + 1.0, subsets=3, subset_size=m)
    assert abs(kid) < 0.01 * shifted


def test_inception_score_is_one_for_constant_and_C_for_confident_balanced_predictions():
    constant = torch.randn(1, 10).expand(200, 10)
    assert inception_score(constant, splits=4)[0] == pytest.approx(1.0, abs=1e-9)
    confident = 100 * torch.nn.functional.one_hot(torch.arange(200) % 10, 10).float()
    assert inception_score(confident, splits=1)[0] == pytest.approx(10.0, rel=1e-9)


def test_precision_recall_are_one_for_identical_sets_and_recall_drops_for_a_collapsed_set():
    g = torch.Generator().manual_seed(3)
    real = torch.randn(600, 8, generator=g)
    assert precision_recall(real, real) == (1.0, 1.0)
    collapsed = real[:1].expand(600, 8) + 1e-4 * torch.randn(600, 8, generator=g)  # one mode
    precision, recall = precision_recall(real, collapsed)
    assert precision == 1.0 and recall < 0.01
    half = real[real[:, 0] > 0]  # mode dropping: half the space is never generated
    precision, recall = precision_recall(real[: len(half)], half)
    assert precision > 0.9 and recall < 0.8
    far = real + 100.0  # realistic-looking nowhere near the data
    assert precision_recall(real, far) == (0.0, 0.0)
