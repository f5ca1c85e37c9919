"""DiffAugment (gan/augment.py, gan.augment): each operation does what it says to each image on its
own, is differentiable, and every GAN step shows the critic T(x) for reals and fakes alike, with
each player's gradient that of the augmented objective."""
import copy

import pytest
import torch

from common.errors import ConfigError
from common.registry import lookup
from conftest import quick_config
from gan.augment import Augment, brightness, contrast, cutout, saturation, translation
from gan.steps import (bracket_one_loss_objective, critic_objective, critic_step_objective,
                       fused_one_loss_objective, generator_objective, one_loss_objective)
from networks import DCGANDiscriminator, DCGANGenerator


def images(n=32, c=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g, dtype=torch.float64) + 0.5  # no pixel is 0


def shifted(x, dy, dx):
    """x[:, i − dy, j − dx], zero outside (one image, (C, H, W))."""
    out = torch.zeros_like(x)
    H, W = x.shape[-2:]
    out[:, max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
        x[:, max(-dy, 0):H - max(dy, 0), max(-dx, 0):W - max(dx, 0)]
    return out


def test_translation_shifts_each_image_by_its_own_whole_pixels_letting_in_zeros():
    x = images()
    torch.manual_seed(0)
    out = translation(x)
    reach = 2  # ⅛ of 16
    found = []
    for b in range(len(x)):
        shifts = [(dy, dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)
                  if torch.equal(out[b], shifted(x[b], dy, dx))]
        assert len(shifts) == 1, b
        found += shifts
    assert len(set(found)) > 5  # drawn per image, over the whole range
    assert {abs(dy) for dy, _ in found} == {0, 1, 2}


def test_cutout_zeroes_one_square_per_image_clipped_at_the_border():
    x = images(n=64)
    torch.manual_seed(0)
    out = cutout(x)
    full = 0
    for b in range(len(x)):
        hole = out[b] == 0
        assert torch.equal(hole, hole[:1].expand_as(hole))  # every channel
        assert torch.equal(out[b][~hole], x[b][~hole])
        rows, cols = hole[0].any(1).nonzero().flatten(), hole[0].any(0).nonzero().flatten()
        assert len(rows) and len(cols)
        assert torch.equal(rows, torch.arange(rows[0], rows[-1] + 1))  # one contiguous block
        assert torch.equal(cols, torch.arange(cols[0], cols[-1] + 1))
        assert hole[0].sum() == len(rows) * len(cols)  # a rectangle
        assert len(rows) <= 8 and len(cols) <= 8  # half of 16
        inside = 0 < rows[0] and rows[-1] < 15 and 0 < cols[0] and cols[-1] < 15
        full += inside
        if inside:
            assert len(rows) == len(cols) == 8  # unclipped: the whole square
    assert 0 < full < len(x)


def test_colour_operations_keep_what_they_should_and_scale_per_image():
    x = images()
    torch.manual_seed(0)
    shift = brightness(x) - x
    assert torch.allclose(shift, shift[:, :1, :1, :1].expand_as(shift))
    assert shift.abs().max() <= 0.5 and shift.flatten(1)[:, 0].std() > 0.1

    pixel_mean = x.mean(1, keepdim=True)
    out = saturation(x)
    assert torch.allclose(out.mean(1, keepdim=True), pixel_mean)
    scale = (out - pixel_mean) / (x - pixel_mean)
    assert torch.allclose(scale, scale.flatten(1)[:, :1, None, None].expand_as(scale))
    assert 0 <= scale.min() and scale.max() <= 2

    image_mean = x.mean((1, 2, 3), keepdim=True)
    out = contrast(x)
    assert torch.allclose(out.mean((1, 2, 3), keepdim=True), image_mean)
    scale = (out - image_mean) / (x - image_mean)
    assert torch.allclose(scale, scale.flatten(1)[:, :1, None, None].expand_as(scale))
    assert 0.5 <= scale.min() and scale.max() <= 1.5


@pytest.mark.parametrize("policy", [["color"], ["translation"], ["cutout"], ["color", "translation", "cutout"]])
def test_every_augmentation_is_differentiable_in_its_input(policy):
    """The generator learns through T: autograd's derivative of T (its draws fixed) matches finite
    differences, and is not zero."""
    augment = Augment(policy)

    def fixed_draws(x):
        torch.manual_seed(3)
        return augment(x)
    x = images(n=4, size=8).requires_grad_(True)
    assert torch.autograd.gradcheck(fixed_draws, (x,))
    fixed_draws(x).square().sum().backward()
    assert x.grad.abs().sum() > 0


def flipped_and_scaled(x):
    """A deterministic stand-in for T: the step tests compare against references that apply it by hand."""
    return 0.5 * x.flip(-1) + 0.25


STEPS = ["one_loss", "one_loss_bracket", "one_loss_fused", "alternating"]


def players(loss_name: str):
    """A float64 DCGAN pair (critic without BatchNorm), its copy for the reference, the loss, reals and latents."""
    torch.manual_seed(0)
    G = DCGANGenerator(8, 28, 1, 8).double()
    D = DCGANDiscriminator(28, 1, 8, batchnorm=False).double()
    x, z = (torch.rand(8, 1, 28, 28) * 2 - 1).double(), torch.randn(8, 8).double()
    return G, D, copy.deepcopy(G), copy.deepcopy(D), lookup("gan_loss", loss_name)(), x, z


def assert_gradients(D, G, d_ref, g_ref):
    for p, ref in zip([*D.parameters(), *G.parameters()], [*d_ref, *g_ref]):
        assert torch.allclose(p.grad, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("reg", ["none", "r1"])
def test_every_step_gives_the_gradients_of_the_augmented_objective(step, reg):
    """D gets ∇ of d_loss(D(T(x)), D(T(sg G(z)))) (+ R1 at the augmented reals), G gets ∇ of
    g_loss(D(T(G(z)))): T on both batches, and G's gradient through T."""
    G, D, G2, D2, loss, x, z = players("logistic")
    T = flipped_and_scaled

    if step == "alternating":
        d_total, _, x_fake = critic_step_objective(G, D, loss, x, z, reg, 10.0, augment=T)
        d_total.backward()
        generator_objective(D, loss, x_fake, augment=T).backward()
    else:
        objective = {"one_loss": one_loss_objective, "one_loss_bracket": bracket_one_loss_objective,
                     "one_loss_fused": fused_one_loss_objective}[step]
        objective(G, D, loss, x, z, reg, 10.0, augment=T)[0].backward()

    d_ref, _, _ = critic_objective(D2, loss, T(x), T(G2(z)).detach(), reg, 10.0)
    d_ref = torch.autograd.grad(d_ref, list(D2.parameters()))
    g_ref = torch.autograd.grad(loss.g_loss(D2(T(G2(z)))), list(G2.parameters()))
    assert_gradients(D, G, d_ref, g_ref)


def test_the_one_loss_generator_sees_its_own_draw_of_the_augmentation():
    """The one-loss step's critic is trained on T₁(sg G(z)) and its generator on T₂(G(z)), T₂ drawn
    apart (as the alternating step's generator part draws anew): with T_k(x) = x + k/2 at the k-th
    draw (the fakes for the critic, the reals, then the fakes for the generator), D gets ∇ of
    d_loss(D(x + ½), D(sg G(z))) and G gets ∇ of g_loss(D(G(z) + 1)), not of g_loss(D(G(z)))."""
    G, D, G2, D2, loss, x, z = players("hinge")
    draws = []

    def T(images):
        draws.append(len(draws))
        return images + 0.5 * draws[-1]

    one_loss_objective(G, D, loss, x, z, augment=T)[0].backward()
    assert draws == [0, 1, 2]
    d_ref = torch.autograd.grad(loss.d_loss(D2(x + 0.5), D2(G2(z).detach())), list(D2.parameters()))
    g_ref = torch.autograd.grad(loss.g_loss(D2(G2(z) + 1.0)), list(G2.parameters()))
    assert_gradients(D, G, d_ref, g_ref)


def test_gan_augment_names_its_operations_and_images_only():
    cfg = quick_config("gan_fashion.yaml", "gan.augment=[color,translation,cutout]")
    assert cfg.gan.augment == ["color", "translation", "cutout"]
    with pytest.raises(ConfigError, match=r"gan.augment\[0\]: must be one of .*did you mean 'color'"):
        quick_config("gan_fashion.yaml", "gan.augment=[colour]")
    from engine import build
    with pytest.raises(ConfigError, match="gan.augment: translation transforms images"):
        build(quick_config("gan_toy.yaml", "gan.augment=[translation]"), "cpu")


@pytest.mark.parametrize("step, reals, fakes", [("one_loss", 2, 3), ("one_loss_fused", 2, 2),
                                                ("alternating", 2, 3)])
def test_the_method_augments_every_batch_the_critic_sees(step, reals, fakes):
    """gan.n_critic = 2: one critic-only update (reals and fakes), then the last update's (reals
    and fakes; the generator's view of the fakes drawn anew, but in the fused step's single pass)."""
    from data import DataInfo
    from engine import build
    cfg = quick_config("gan_fashion.yaml", "gan.augment=[cutout]", f"gan.step={step}", "gan.n_critic=2",
                       "model.d_batchnorm=false")
    method = build(cfg, "cpu", info=DataInfo("fashion_mnist", (1, 28, 28), 10))
    seen = []
    method.augment.operations = [lambda x: seen.append("real" if bool((x == 0.125).all()) else "fake") or x]
    method.training_step(torch.full((2 * cfg.train.batch_size, 1, 28, 28), 0.125))
    assert sorted(seen) == ["fake"] * fakes + ["real"] * reals
