"""Conditional generation facts: classifier-free guidance at w = 0 and 1 is the unconditional and the
conditional denoiser exactly; label dropout drops at its rate; inpainting holds the known pixels exactly
and, with annealed Langevin on a Gaussian's exact denoiser, samples the closed-form conditional of the
unknown ones; a projection critic is its unconditional logit plus ⟨embed(y), φ(x)⟩; a conditional
generator starts as the unconditional one; the one-loss step's gradient identities hold with labels;
conditional runs resume bitwise and sample from the command line; bad class requests get one line."""
import copy
import math

import pytest
import torch

from common.errors import ConfigError
from common.registry import lookup, names
from networks.spectral import power_iteration
from conftest import assert_same_state, quick_config, train_straight_and_resumed
from data import DataInfo
from data.fashion_mnist import CLASSES as FASHION_NAMES
from denoising.denoiser import Denoiser
from denoising.guidance import Guided, Inpainting, mask
from denoising.samplers import annealed_langevin, heun
from denoising.schedule import edm_sigmas, geometric_sigmas
from engine import build, load_method, train
from engine.evaluation.inpainting import inpainting_scores, nearest_fill, psnr_missing
from gan.steps import critic_objective, fused_one_loss_objective, one_loss_objective
from networks import DCGANDiscriminator, DCGANGenerator, ResNetDiscriminator, ResNetGenerator, UNet

FASHION = DataInfo("fashion_mnist", (1, 28, 28), 10)


def grads(params):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


# -- classifier-free guidance ------------------------------------------------------------------------

@pytest.mark.parametrize("parametrization", ["direct", "score", "energy"])
def test_guidance_at_w0_and_w1_is_the_unconditional_and_the_conditional_denoiser_exactly(parametrization):
    torch.manual_seed(0)
    net = UNet(1, 8, (1, 2), 1, num_classes=10).double()
    for p in net.parameters():  # zero-initialised output layers would make every class the same
        p.data.add_(0.2 * torch.randn_like(p))
    D = Denoiser(net, parametrization, 0.5)
    x, sigma = torch.randn(6, 1, 28, 28, dtype=torch.float64), torch.tensor([0.1, 0.5, 1.0, 2.0, 5.0, 0.3]).double()
    labels = torch.tensor([0, 3, 9, 1, 1, 7])
    uncond, cond = D(x, sigma), D(x, sigma, labels)
    assert (uncond - cond).abs().max() > 1e-3  # the classes matter
    assert torch.equal(D(x, sigma, torch.full_like(labels, 10)), uncond)  # no label = the null class
    assert torch.equal(Guided(D, labels, 0.0, 10)(x, sigma), uncond)
    assert torch.equal(Guided(D, labels, 1.0, 10)(x, sigma), cond)
    assert torch.equal(Guided(D, None, 3.0, 10)(x, sigma), uncond)  # no classes asked: unconditional
    w = 2.5
    assert torch.allclose(Guided(D, labels, w, 10)(x, sigma), uncond + w * (cond - uncond), rtol=1e-9, atol=1e-9)
    s_u, s_c = D.score(x, sigma), D.score(x, sigma, labels=labels)
    assert torch.equal(Guided(D, labels, 0.0, 10).score(x, sigma), s_u)
    assert torch.equal(Guided(D, labels, 1.0, 10).score(x, sigma), s_c)
    assert torch.allclose(Guided(D, labels, w, 10).score(x, sigma), s_u + w * (s_c - s_u), rtol=1e-9, atol=1e-9)


def test_guidance_in_an_interval_guides_inside_it_and_is_the_conditional_denoiser_outside():
    """Kynkäänniemi et al. 2024: the weight w at σ_lo < σ ≤ σ_hi, w = 1 elsewhere, per example, and
    outside the interval the unconditional pass is not run at all."""
    torch.manual_seed(0)
    net = UNet(1, 8, (1, 2), 1, num_classes=10).double()
    for p in net.parameters():
        p.data.add_(0.2 * torch.randn_like(p))
    D = Denoiser(net, "direct", 0.5)
    x = torch.randn(6, 1, 28, 28, dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 5.0, 0.3], dtype=torch.float64)
    labels, w, interval = torch.tensor([0, 3, 9, 1, 1, 7]), 2.5, (0.3, 2.0)
    uncond, cond = D(x, sigma), D(x, sigma, labels)
    inside = torch.tensor([False, True, True, True, False, False]).view(-1, 1, 1, 1)  # (0.3, 2.0]: 0.3 is out
    guided = Guided(D, labels, w, 10, interval)
    assert torch.allclose(guided(x, sigma), torch.where(inside, uncond + w * (cond - uncond), cond),
                          rtol=1e-9, atol=1e-9)
    s_u, s_c = D.score(x, sigma), D.score(x, sigma, labels=labels)
    assert torch.allclose(guided.score(x, sigma), torch.where(inside, s_u + w * (s_c - s_u), s_c), rtol=1e-9, atol=1e-9)
    rows = []
    hook = net.register_forward_hook(lambda m, args, out: rows.append(len(args[0])))
    for level in (0.3, 2.0, 5.0):  # one level for the batch, as the samplers call it
        rows.clear()
        guided(x, torch.tensor(level, dtype=torch.float32))  # 0.3 in float32 is 0.30000001: inside
        level = float(torch.tensor(level, dtype=torch.float32))
        assert sum(rows) // len(x) == guided.passes(level) == (1 if level == 5.0 else 2)
    hook.remove()
    assert Guided(D, labels, 0.0, 10, interval).passes(1.0) == 1 and Guided(D, None, w, 10, interval).passes(1.0) == 1


def test_label_dropout_replaces_labels_by_the_null_class_at_its_rate(fashion_root):
    for rate in (0.0, 0.3, 1.0):
        cfg = quick_config("ncsn_fashion.yaml", f"data.root={fashion_root}", "model.num_classes=10",
                           "ncsn.sigma_max=5", f"ncsn.label_dropout={rate}")
        method = build(cfg, "cpu", info=FASHION)
        labels = torch.arange(200_000) % 10
        dropped = method.drop_labels(labels)
        null = dropped == 10
        assert torch.equal(dropped[~null], labels[~null])  # kept labels are unchanged
        assert null.float().mean().item() == pytest.approx(rate, abs=0.005)


# -- inpainting ----------------------------------------------------------------------------------------

class GaussianDenoiser(torch.nn.Module):
    """N(μ, Σ)'s exact denoiser D(x; σ) = μ + Σ(Σ + σ²I)⁻¹(x − μ) and score, σ one level for the batch."""

    def __init__(self, mu, cov):
        super().__init__()
        self.mu, self.cov = mu, cov

    def forward(self, x, sigma):
        s = float(torch.as_tensor(sigma).reshape(-1)[0])
        eye = torch.eye(len(self.mu), dtype=x.dtype)
        return self.mu + (x - self.mu) @ (self.cov @ torch.linalg.inv(self.cov + s ** 2 * eye)).T

    def score(self, x, sigma, create_graph=False):
        s = float(torch.as_tensor(sigma).reshape(-1)[0])
        return (self(x, s) - x) / s ** 2


GAUSSIAN_KNOWN, GAUSSIAN_UNKNOWN = slice(0, 2), slice(2, 4)


def gaussian_inpainting(n: int = 20_000):
    """N(μ, Σ) in 4 dimensions with the first two known (y) for n draws: (μ, Σ, known values, known
    mask, and the closed-form conditional N(μ_u + Σ_uk Σ_kk⁻¹(y − μ_k), Σ_uu − Σ_uk Σ_kk⁻¹ Σ_ku) of the
    unknown two: its mean and covariance)."""
    g = torch.Generator().manual_seed(0)
    d, k, u = 4, GAUSSIAN_KNOWN, GAUSSIAN_UNKNOWN
    mu = torch.randn(d, generator=g, dtype=torch.float64) * 0.5
    a = torch.randn(d, d, generator=g, dtype=torch.float64) * 0.4
    cov = a @ a.T + 0.3 * torch.eye(d, dtype=torch.float64)
    y = torch.tensor([0.9, -0.6], dtype=torch.float64)
    cond_mean = mu[u] + cov[u, k] @ torch.linalg.solve(cov[k, k], y - mu[k])
    cond_cov = cov[u, u] - cov[u, k] @ torch.linalg.solve(cov[k, k], cov[k, u])
    known = torch.zeros(n, d, dtype=torch.float64)
    known[:, k] = y
    return mu, cov, known, torch.tensor([True, True, False, False]).expand(n, d), cond_mean, cond_cov


def test_inpainting_with_langevin_samples_the_exact_conditional_gaussian():
    """Data N(μ, Σ) in 4 dimensions, the first two known (y): annealed Langevin through the Inpainting
    wrapper gives the unknown two the closed-form conditional, mean within 0.02 and covariance within
    5% (20,000 samples: about 1% sampling error; σ_L = 0.05 adds O(σ_L²)), and the known two come out
    exactly y. Without the projection
    (the known pixels left to the sampler) the unknown ones follow their marginal instead."""
    mu, cov, known, known_mask, cond_mean, cond_cov = gaussian_inpainting()
    (n, d), k, u = known.shape, GAUSSIAN_KNOWN, GAUSSIAN_UNKNOWN
    sigmas = geometric_sigmas(10.0, 0.05, 8)

    def run(inpaint: bool):
        gen = torch.Generator().manual_seed(1)
        x = 10.0 * torch.randn(n, d, generator=gen, dtype=torch.float64)
        D = GaussianDenoiser(mu, cov)
        fn = Inpainting(D, known, known_mask, gen) if inpaint else D
        out = annealed_langevin(fn.score, x, sigmas, 400, 2.5e-3, True, gen)
        return fn.complete(out) if inpaint else out

    out = run(True)
    assert torch.equal(out[:, k], known[:, k])
    assert (out[:, u].mean(0) - cond_mean).abs().max() < 0.02
    assert (torch.cov(out[:, u].T) - cond_cov).norm() / cond_cov.norm() < 0.05
    free = run(False)
    assert (free[:, u].mean(0) - cond_mean).abs().max() > 0.1  # the marginal's mean is not the conditional's


def test_reconstruction_guidance_on_a_gaussian_brings_heun_to_the_exact_conditional():
    """The same Gaussian and known pair, sampled with Heun on 50 EDM levels: replacing the known pixels
    alone leaves the deterministic sampler's conditional mean off by > 0.05 (the ODE never lets the
    unknown pixels react to the known ones' noise); with ΠGDM's reconstruction guidance at λ = 1 the
    mean is within 0.03 and the covariance within 5% (the isotropic r² is the approximation left)."""
    mu, cov, known, known_mask, cond_mean, cond_cov = gaussian_inpainting()
    (n, d), k, u = known.shape, GAUSSIAN_KNOWN, GAUSSIAN_UNKNOWN

    def errors(weight):
        gen = torch.Generator().manual_seed(1)
        fn = Inpainting(GaussianDenoiser(mu, cov), known, known_mask, gen, weight)
        out = fn.complete(heun(fn, 10.0 * torch.randn(n, d, generator=gen, dtype=torch.float64),
                               edm_sigmas(50, 0.002, 10.0)))
        assert torch.equal(out[:, k], known[:, k])
        return ((out[:, u].mean(0) - cond_mean).abs().max().item(),
                ((torch.cov(out[:, u].T) - cond_cov).norm() / cond_cov.norm()).item())

    assert errors(0.0)[0] > 0.05
    mean_error, cov_error = errors(1.0)
    assert mean_error < 0.03 and cov_error < 0.05


@pytest.mark.parametrize("parametrization", ["direct", "score", "energy"])
def test_reconstruction_guidance_is_the_tweedie_step_through_the_nets_jacobian(parametrization):
    """Inpainting with weight λ: D on the known pixels, and on the missing ones
    D + λ(1 + σ²)·J_Dᵀ M(y − D) at the projected x̂, J_D the full Jacobian of the net's denoiser
    (computed here by torch.autograd.functional.jacobian; an energy model's D is itself a gradient),
    and the score (D_λ − x̂)/σ²."""
    torch.manual_seed(0)
    net = UNet(1, 8, (1, 2), 1).double()
    for p in net.parameters():  # zero-initialised output layers would make J_D trivial
        p.data.add_(0.2 * torch.randn_like(p))
    D = Denoiser(net, parametrization, 0.5)
    shape, weight = (1, 1, 8, 8), 0.7
    x, y = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    known_mask = mask("right", shape)
    for sigma in (0.05, 0.8, 6.0):
        fn = Inpainting(D, y, known_mask, torch.Generator().manual_seed(0), weight)
        x_hat = fn.project(x, torch.tensor([sigma], dtype=torch.float64))
        d = D(x_hat, sigma)
        jac = torch.autograd.functional.jacobian(lambda v: D.score(v.view(shape), sigma, create_graph=True)
                                                 .flatten() * sigma ** 2 + v, x_hat.flatten())
        pull = (jac.T @ torch.where(known_mask, y - d, 0).flatten()).view(shape)
        expected = torch.where(known_mask, d, d + weight * (1 + sigma ** 2) * pull)
        out = fn(x, torch.tensor([sigma], dtype=torch.float64))
        assert torch.allclose(out, expected, rtol=1e-7, atol=1e-9)
        assert (out - d)[~known_mask].abs().max() > 1e-4  # the guidance moved the missing pixels
        assert torch.allclose(fn.score(x, torch.tensor([sigma], dtype=torch.float64)),
                              (expected - x_hat) / sigma ** 2, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("sampler", sorted(names("sampler")))
@pytest.mark.parametrize("guidance", [0, 1])
def test_every_sampler_inpaints_keeping_the_known_pixels_exactly(fashion_root, sampler, guidance):
    settings = {"steps": 3} if sampler != "langevin" else {"steps": 1}
    cfg = quick_config("ncsn_fashion.yaml", f"data.root={fashion_root}", "ncsn.sigma_max=5",
                       "ncsn.sigma_sampling=log_uniform", f"ncsn.sampler={sampler}", f"ncsn.inpaint_guidance={guidance}",
                       *(f"ncsn.sampler.{key}={v}" for key, v in settings.items()))
    method = build(cfg, "cpu", info=FASHION)
    images = torch.rand(3, 1, 28, 28) * 2 - 1
    known = mask("right", images.shape)
    out = method.sample(3, generator=torch.Generator().manual_seed(0), inpaint=(images, known))
    assert torch.equal(out[known], images[known])
    assert not torch.equal(out[~known], images[~known])


def test_masks_hide_what_they_name():
    shape = (2, 3, 8, 8)
    hidden = {name: (~mask(name, shape))[0, 0] for name in ("left", "right", "top", "bottom", "centre")}
    assert hidden["right"][:, 4:].all() and not hidden["right"][:, :4].any()
    assert hidden["left"][:, :4].all() and not hidden["left"][:, 4:].any()
    assert hidden["top"][:4].all() and not hidden["top"][4:].any()
    assert hidden["bottom"][4:].all() and not hidden["bottom"][:4].any()
    assert hidden["centre"].sum() == 16 and hidden["centre"][2:6, 2:6].all()
    random = ~mask("random:0.25", (64, 3, 32, 32), torch.Generator().manual_seed(0))
    assert random.float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert torch.equal(random[:, 0], random[:, 2])  # the same pixels in every channel
    for bad in ("random:1.5", "random:x", "diagonal"):
        with pytest.raises(ConfigError, match="mask"):
            mask(bad, shape)


def test_the_nearest_neighbour_baseline_finds_a_training_image_from_its_visible_half():
    g = torch.Generator().manual_seed(0)
    train_set = torch.rand(500, 1, 8, 8, generator=g) * 2 - 1
    images = train_set[[7, 123, 456]]
    known = mask("right", images.shape)
    filled = nearest_fill(images, known, train_set, chunk=128)  # across chunk boundaries
    assert torch.equal(filled, images)
    assert psnr_missing(filled, images, known).min() > 100  # exact: the PSNR's floor at 1e-12
    noisy = torch.where(known, images, images + 0.1)
    assert psnr_missing(noisy, images, known) == pytest.approx(torch.full((3,), 10 * torch.log10(torch.tensor(400.0))),
                                                               rel=1e-5)


def test_the_mean_of_k_draws_gains_the_psnr_the_conditional_variance_predicts():
    """Missing pixels drawn from their exact conditional (here independent N(0, s²)): one draw's squared
    error is 2s² χ², the mean of k draws' (1 + 1/k)s² χ², so their PSNRs, averaged per image, differ by
    10 log10(2 / (1 + 1/k)) dB in expectation (2.04 dB at k = 4); the draws' own score is one draw's."""
    g, n, k, s = torch.Generator().manual_seed(0), 20_000, 4, 0.3
    images = s * torch.randn(n, 1, 2, 2, generator=g)
    known = mask("right", images.shape)
    draws = torch.where(known, images, s * torch.randn(k, n, 1, 2, 2, generator=g))
    train_set = s * torch.randn(64, 1, 2, 2, generator=g)
    labels = torch.zeros(n, dtype=torch.long)
    many = inpainting_scores(draws, images, labels, known, train_set)
    one = inpainting_scores(draws[0], images, labels, known, train_set)
    assert many["draws"] == k and one["draws"] == 1 and "psnr_posterior_mean" not in one
    assert many["psnr_model"] == pytest.approx(torch.stack([psnr_missing(d, images, known) for d in draws]).mean().item())
    assert many["psnr_model"] == pytest.approx(one["psnr_model"], abs=0.2)  # any draw is one draw
    gain = many["psnr_posterior_mean"] - many["psnr_model"]
    assert gain == pytest.approx(10 * math.log10(2 / (1 + 1 / k)), abs=0.15)


# -- conditional GANs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_a_projection_critic_is_the_unconditional_logit_plus_the_class_projection(arch):
    torch.manual_seed(0)
    if arch == "dcgan":
        D = DCGANDiscriminator(28, 1, 8, batchnorm=False, num_classes=10)
        plain = DCGANDiscriminator(28, 1, 8, batchnorm=False)
        features = lambda x: plain.net[:-1](x).flatten(1)  # noqa: E731
        x = torch.randn(5, 1, 28, 28)
    else:
        D = ResNetDiscriminator(32, 3, 8, num_classes=10)
        plain = ResNetDiscriminator(32, 3, 8)
        features = lambda x: torch.relu(plain.blocks(x)).sum(dim=(2, 3))  # noqa: E731
        x = torch.randn(5, 3, 32, 32)
    missing, unexpected = plain.load_state_dict(D.state_dict(), strict=False)
    assert not missing and all(k.startswith("projection.") for k in unexpected)
    D.eval(), plain.eval()
    y = torch.tensor([0, 4, 9, 4, 2])
    embed = D.projection.embed.weight  # spectrally normalised (ResNet) as the critic uses it
    expected = plain(x) + (embed[y] * features(x)).sum(1)
    assert torch.allclose(D(x, y), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(D(x, y), D(x, (y + 1) % 10))


@pytest.mark.parametrize("class_input", [False, True])
@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_a_new_conditional_generator_computes_what_the_unconditional_one_does(arch, class_input):
    """Conditional BatchNorm starts at γ = 1, β = 0 for every class: the same function as plain
    BatchNorm's initial affine map, whatever the class; the class embedding read beside z starts at
    zero, so the first layer's extra inputs add nothing (its weights for z are the plain net's)."""
    torch.manual_seed(0)
    if arch == "dcgan":
        G, plain = DCGANGenerator(8, 28, 1, 8, num_classes=10, class_input=class_input), DCGANGenerator(8, 28, 1, 8)
        first = "net.0.weight"  # ConvTranspose2d: (in, out, k, k)
    else:
        G, plain = (ResNetGenerator(8, 32, 3, 8, num_classes=10, class_input=class_input),
                    ResNetGenerator(8, 32, 3, 8))
        first = "fc.weight"  # Linear: (out, in)
    z = torch.randn(6, 8)
    plain_state = {k: v for k, v in plain.state_dict().items()}
    shared = {k: v for k, v in G.state_dict().items() if k in plain_state and v.shape == plain_state[k].shape}
    if class_input:  # the first layer reads z ⊕ embed(y): z's part is the plain net's weight
        weight = G.state_dict()[first]
        assert first not in shared and weight.abs().sum() > 0
        shared[first] = weight[:8] if arch == "dcgan" else weight[:, :8]
    plain.load_state_dict(shared, strict=False)
    for m in plain.modules():  # plain BatchNorm's γ, β at their initial 1, 0
        if isinstance(m, torch.nn.BatchNorm2d) and m.affine:
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))
    y = torch.tensor([0, 1, 2, 7, 8, 9])
    assert torch.allclose(G(z, y), plain(z), atol=1e-6)
    with pytest.raises(ValueError, match="class-conditional"):
        G(z)
    if class_input:  # the embedding learns: a loss on G's output reaches it
        G(z, y).square().sum().backward()
        assert G.class_input.embed.weight.grad[y].abs().sum(1).min() > 0


@pytest.mark.parametrize("step", ["one_loss", "one_loss_fused"])
@pytest.mark.parametrize("reg", ["none", "gp"])
def test_one_loss_gives_each_player_its_own_gradient_with_labels(step, reg):
    """The conditional one-loss step: D gets exactly ∇d_loss (reals at their labels, fakes at
    theirs) and G exactly ∇g_loss through D at the fakes' labels, as without labels
    (test_gan.py); the gradient penalty evaluates D at the real labels."""
    torch.manual_seed(0)
    G = DCGANGenerator(8, 28, 1, 8, num_classes=10)
    D = DCGANDiscriminator(28, 1, 8, batchnorm=False, spectral_norm=True, num_classes=10)
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    loss = lookup("gan_loss", "logistic")()
    x, z = torch.rand(16, 1, 28, 28) * 2 - 1, torch.randn(16, 8)
    y_real, y_fake = torch.randint(10, (16,)), torch.randint(10, (16,))
    power_iteration(D), power_iteration(D2)
    objective = one_loss_objective if step == "one_loss" else fused_one_loss_objective
    torch.manual_seed(1)
    total, _ = objective(G, D, loss, x, z, reg, 10.0, y_real=y_real, y_fake=y_fake)
    total.backward()
    torch.manual_seed(1)
    d_total, _, _ = critic_objective(D2, loss, x, G2(z, y_fake).detach(), reg, 10.0, y_real, y_fake)
    d_ref = torch.autograd.grad(d_total, list(D2.parameters()))
    g_ref = torch.autograd.grad(loss.g_loss(D2(G2(z, y_fake), y_fake)), list(G2.parameters()))
    for got, ref in zip(grads(D.parameters()), d_ref):
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-6)
    for got, ref in zip(grads(G.parameters()), g_ref):
        assert torch.allclose(got, ref, rtol=1e-4, atol=1e-6)
    assert D.projection.embed.parametrizations.weight.original.grad.abs().sum() > 0  # the classes are learnt


# -- runs and the command line ------------------------------------------------------------------------

def test_configs_refuse_class_conditioning_where_it_does_not_fit(fashion_root):
    with pytest.raises(ConfigError, match="model.num_classes: 7, but the data set fashion_mnist has 10"):
        build(quick_config("gan_fashion.yaml", "model.num_classes=7"), "cpu", info=FASHION)
    with pytest.raises(ConfigError, match="the mlp networks are unconditional"):
        quick_config("gan_toy.yaml", "model.num_classes=8")
    with pytest.raises(ConfigError, match="ncsnv2 network cannot be class-conditional"):
        quick_config("ncsn_fashion.yaml", "model.arch=ncsnv2", "model.num_classes=10")
    with pytest.raises(ConfigError, match="model.num_classes"):  # DDE has no classes
        quick_config("dde_toy.yaml", "model.num_classes=8")


@pytest.mark.parametrize("config", ["gan_fashion.yaml", "ncsn_fashion.yaml"])
def test_a_conditional_run_resumes_bitwise_and_samples_by_class(fashion_root, tmp_path, config, capsys):
    from sample import main, requested_classes
    common = [f"data.root={fashion_root}", "model.num_classes=10", "train.ckpt_every=3", "train.n_samples=20"]
    train_straight_and_resumed(config, common, tmp_path, 3)
    assert assert_same_state(tmp_path / "straight", tmp_path / "split")[0] == 6
    assert (tmp_path / "straight" / "samples" / "step_0000006.png").is_file()  # a row per class
    ckpt = str(tmp_path / "straight" / "checkpoints" / "last.pt")
    main(["--checkpoint", ckpt, "--out", str(tmp_path / "all.png"), "--n", "20", "--class", "all"])
    main(["--checkpoint", ckpt, "--out", str(tmp_path / "three.png"), "--n", "4", "--class", "3"])
    assert torch.equal(requested_classes("Sneaker, ankle BOOT,3", 10, 6, FASHION_NAMES)[0],
                       torch.tensor([7, 7, 9, 9, 3, 3]))  # by name, in any case, or by index
    assert requested_classes("dress", 10, 4, FASHION_NAMES)[0].tolist() == [3] * 4
    main(["--checkpoint", ckpt, "--out", str(tmp_path / "named.png"), "--n", "4", "--class", "trouser,bag"])
    if config.startswith("ncsn"):
        main(["--checkpoint", ckpt, "--out", str(tmp_path / "guided.png"), "--n", "4", "--class", "1,2",
              "--guidance", "2"])
        main(["--checkpoint", ckpt, "--out", str(tmp_path / "fill.png"), "--n", "4", "--inpaint", "centre"])
        assert (tmp_path / "guided.png").is_file() and (tmp_path / "fill.png").is_file()
    assert (tmp_path / "all.png").is_file() and (tmp_path / "three.png").is_file()
    sample_refuses(ckpt, tmp_path, capsys, (["--class", "10"], "--class 10: classes are 0..9"),
                   (["--class", "x"], "--class x: classes are 0..9 or their names (T-shirt/top, Trouser, "
                                      "Pullover, Dress, …)"),
                   (["--class", "-1"], "--class -1: classes are 0..9"),
                   (["--guidance", "-1"], "--guidance: a finite weight >= 0"))


def sample_refuses(ckpt, tmp_path, capsys, *cases):
    """sample.py stops each (arguments, message) case with that one line and exit status 2."""
    from sample import main
    capsys.readouterr()
    for bad, message in cases:
        with pytest.raises(SystemExit) as e:
            main(["--checkpoint", ckpt, "--out", str(tmp_path / "x.png"), *bad])
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_an_unconditional_checkpoint_refuses_classes_and_guidance_in_one_line(fashion_root, tmp_path, capsys):
    train(quick_config("gan_fashion.yaml", f"data.root={fashion_root}", "train.steps=2", "train.ckpt_every=2"),
          tmp_path)
    sample_refuses(str(tmp_path / "checkpoints" / "last.pt"), tmp_path, capsys,
                   (["--class", "3"], "--class: this model is not class-conditional"),
                   (["--guidance", "2"], "not class-conditional"),
                   (["--inpaint", "right"], "--inpaint: gan has no denoiser"))


def test_the_unet_reads_sigma_and_the_class_at_every_width():
    """Added before a GroupNorm of one channel per group (below 64 channels), an embedding is
    subtracted again with the group's mean: the CPU configs' width-16 U-Net ignored σ entirely
    (relative change 2e-15 from σ = 0.05 to 5). The scale-shift form reads both at any width."""
    torch.manual_seed(0)
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    small, large = torch.full((2,), 0.05, dtype=torch.float64), torch.full((2,), 5.0, dtype=torch.float64)
    for width in (8, 16, 64):
        for adaptive in (True, False):
            net = UNet(1, width, (1, 2), 1, num_classes=10, adaptive_norm=adaptive).double()
            for p in net.parameters():
                p.data.add_(0.1 * torch.randn_like(p))
            a = net(x, small, torch.tensor([1, 2]))
            change_sigma = ((a - net(x, large, torch.tensor([1, 2]))).abs().max() / a.abs().max()).item()
            change_class = ((a - net(x, small, torch.tensor([5, 7]))).abs().max() / a.abs().max()).item()
            if adaptive or width >= 64:
                assert change_sigma > 0.01 and change_class > 1e-3, (width, adaptive)
            else:
                assert change_sigma < 1e-12 and change_class < 1e-12, (width, adaptive)


def test_a_saved_config_keeps_the_embedding_form_it_was_trained_with(tmp_path):
    """A checkpoint's or run's config saved before model.adaptive_norm existed means the additive
    form (common.config.upgrade_saved); a config file without the key takes the new default."""
    from common.config import load_config, upgrade_saved
    raw = {"method": "dae", "data": {"name": "fashion_mnist"}, "model": {"arch": "unet", "width": 16}}
    assert load_config(raw=raw).model.adaptive_norm is True
    assert load_config(raw=upgrade_saved(raw)).model.adaptive_norm is False
    saved_now = load_config(raw=raw).to_dict()  # a config saved today names the key: kept as saved
    assert load_config(raw=upgrade_saved(saved_now)).model.adaptive_norm is True


def test_a_saved_gan_config_keeps_the_generator_input_it_was_trained_with(fashion_root, tmp_path):
    """A conditional GAN saved before model.g_class_input existed means conditional BatchNorm only: its
    checkpoint still loads into a generator without the class embedding; a new config reads it."""
    from common.config import load_config, upgrade_saved
    from common.checkpoint import load_checkpoint
    raw = {"method": "gan", "data": {"name": "fashion_mnist"}, "model": {"arch": "dcgan", "num_classes": 10}}
    assert load_config(raw=raw).model.g_class_input is True
    assert load_config(raw=upgrade_saved(raw)).model.g_class_input is False
    train(quick_config("gan_fashion.yaml", f"data.root={fashion_root}", "model.num_classes=10",
                       "model.g_class_input=false", "train.steps=2", "train.ckpt_every=2", "train.n_samples=4"),
          tmp_path / "old")
    path = tmp_path / "old" / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(path)
    del ckpt["config"]["model"]["g_class_input"]  # as a checkpoint of before the key was written
    torch.save(ckpt, path)
    method, _ = load_method(path, "cpu")
    assert method.nets["G"].class_input is None
    assert method.sample(4, generator=torch.Generator().manual_seed(0), labels=torch.arange(4)).shape == (4, 1, 28, 28)
