"""Network facts: each architecture gives the shapes its callers rely on at every size it takes,
NCSNv2 has the paper's parameter count and computes what the official network does, spectral norm is torch's (same checkpoint keys, same
numbers) with an explicit power iteration that finds the top singular value, and the U-Net's attention, dropout and GroupNorm
groups are what they say."""
import copy
import math

import pytest
import torch
from torch import nn

from networks.spectral import power_iteration
from conftest import ROOT
from common.ema import EMA
from networks import DCGANDiscriminator, DCGANGenerator, NCSNv2, ResNetDiscriminator, ResNetGenerator, UNet
from networks.unet import ResBlock, SelfAttention


@pytest.mark.parametrize("size", [28, 32, 64])
def test_dcgan_shapes(size):
    G, D = DCGANGenerator(16, size, 3, 8), DCGANDiscriminator(size, 3, 8, spectral_norm=True)
    x = G(torch.randn(5, 16))
    assert x.shape == (5, 3, size, size) and x.abs().max() <= 1 and D(x).shape == (5,)


@pytest.mark.parametrize("size", [32, 64])
def test_resnet_shapes(size):
    G, D = ResNetGenerator(16, size, 3, 8), ResNetDiscriminator(size, 3, 8)
    x = G(torch.randn(2, 16))
    assert x.shape == (2, 3, size, size) and D(x).shape == (2,)


@pytest.mark.parametrize("layer", [lambda: nn.Conv2d(3, 8, 3), lambda: nn.ConvTranspose2d(8, 4, 4, 2, 1),
                                   lambda: nn.Linear(6, 5)])
def test_spectral_norm_matches_torch_and_its_power_iteration_finds_the_top_singular_value(layer):
    from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm
    from networks.spectral import spectral_norm
    torch.manual_seed(0)
    base = layer()
    torch.manual_seed(1)
    ours = spectral_norm(copy.deepcopy(base))
    torch.manual_seed(1)  # the same initial u, v
    ref = torch_spectral_norm(copy.deepcopy(base))
    assert ours.state_dict().keys() == ref.state_dict().keys()  # checkpoints stay interchangeable
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    ours_sn = ours.parametrizations.weight[0]
    u = ours_sn._u.clone()
    for _ in range(3):  # a training-mode forward never iterates...
        w = ours.weight
    assert torch.equal(ours_sn._u, u)
    power_iteration(ours)  # ...the explicit call gives torch's first training-mode forward
    assert torch.allclose(ours.weight, ref.weight, rtol=1e-5, atol=1e-6)
    for _ in range(200):
        power_iteration(ours)
    mat = ours.parametrizations.weight.original.detach()
    if isinstance(base, nn.ConvTranspose2d):
        mat = mat.transpose(0, 1)
    sigma = torch.linalg.matrix_norm(mat.reshape(mat.shape[0], -1), 2)
    w = ours.weight.detach()
    w = (w.transpose(0, 1) if isinstance(base, nn.ConvTranspose2d) else w).reshape(mat.shape[0], -1)
    assert torch.linalg.matrix_norm(w, 2) == pytest.approx(1.0, abs=1e-4)
    assert (mat.reshape(mat.shape[0], -1) / w).mean() == pytest.approx(sigma.item(), rel=1e-4)


def test_ncsnv2_network_shapes_and_size():
    assert NCSNv2(1, 8, 28)(torch.randn(2, 1, 28, 28)).shape == (2, 1, 28, 28)
    assert NCSNv2(3, 8, 64)(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    # ngf = 128 at 32 px is the paper's CIFAR-10 model: 29.7M parameters.
    n = sum(p.numel() for p in NCSNv2(3, 128, 32).parameters())
    assert 29.5e6 < n < 29.9e6


@pytest.mark.parametrize("size, channels", [(28, 1), (32, 3)])
def test_ncsnv2_network_computes_what_the_official_one_does(size, channels):
    """tests/fixtures/ncsnv2_official.pt holds weights of this network (ngf 4, InstanceNorm++'s α, γ,
    β drawn away from their initial values), an input, and what the official NCSNv2 network
    (ermongroup/ncsnv2 models/ncsnv2.py, the same weights under its key names, fp64) output for it,
    times σ_y to undo its 1/σ_y. Every layer counts: chained residual pooling's max pools,
    InstanceNorm++'s re-normalised means, the dilations, the RefineBlocks' fusion."""
    case = torch.load(ROOT / "tests" / "fixtures" / "ncsnv2_official.pt", weights_only=True)["cases"][size]
    net = NCSNv2(channels=channels, ngf=4, image_size=size).double()
    net.load_state_dict({k: v.double() for k, v in case["state"].items()})
    with torch.no_grad():
        out = net(case["x"].double())
    assert torch.allclose(out, case["output"], rtol=0, atol=1e-12), (out - case["output"]).abs().max()


@pytest.mark.parametrize("double_backward", [False, True], ids=["fused", "written_out"])
def test_unet_self_attention_computes_softmax_attention_per_head(double_backward):
    """The block against the formula written out: x + proj(concat_h softmax(q_h·k_hᵀ/√d)·v_h) over the
    positions, q, k, v from a 1×1 convolution of the group-normalised x; 192 channels: 3 heads of 64.
    Torch's fused kernel and the product the EBM uses (twice differentiable on CUDA) alike."""
    torch.manual_seed(0)
    block = SelfAttention(192).double()
    block.double_backward = double_backward
    nn.init.normal_(block.proj.weight, std=0.1)  # starts at zero: give it weights to check
    x = torch.randn(2, 192, 5, 6, dtype=torch.float64)
    q, k, v = block.qkv(block.norm(x)).flatten(2).chunk(3, dim=1)  # (b, c, positions) each
    heads = []
    for h in range(3):
        part = slice(64 * h, 64 * (h + 1))
        weights = torch.softmax(torch.einsum("bcp,bcq->bpq", q[:, part], k[:, part]) / 8.0, dim=-1)
        heads.append(torch.einsum("bpq,bcq->bcp", weights, v[:, part]))
    expected = x + block.proj(torch.cat(heads, 1).reshape(x.shape))
    assert block.heads == 3
    torch.testing.assert_close(block(x), expected)


def test_unet_attends_at_the_named_resolutions_and_starts_as_the_net_without_attention():
    """Self-attention follows every block at the named feature-map sizes (28 px: levels 28, 14, 7; the
    middle's first block at the lowest), adds parameters without renaming any, and starts as the
    identity: loaded with a net's weights, the net with attention computes what it does."""
    torch.manual_seed(0)
    plain = UNet(1, 8, (1, 2, 2), 1)
    attending = UNet(1, 8, (1, 2, 2), 1, attention=(14, 7), resolution=28)
    assert attending.resolutions == (28, 14, 7)
    assert set(plain.state_dict()) < set(attending.state_dict())
    missing, unexpected = attending.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(".attn." in key for key in missing)
    sizes = []
    for layer in attending.modules():
        if isinstance(layer, SelfAttention):
            layer.register_forward_hook(lambda _, inputs, out: sizes.append(tuple(inputs[0].shape[-2:])))
    x, sigma = torch.randn(3, 1, 28, 28), torch.tensor([0.1, 1.0, 10.0])
    torch.testing.assert_close(attending(x, sigma), plain(x, sigma), rtol=0, atol=0)
    # 1 block down and 2 up at each of the two levels, and the middle's: 7, none at 28
    assert sorted(sizes) == [(7, 7)] * 4 + [(14, 14)] * 3


def test_unet_dropout_acts_while_training_only_and_never_in_the_average():
    """Dropout changes each training pass and none in evaluation; the EMA copy (what samples and
    autoguidance's guide run through) evaluates with it off, whatever mode its owner is in."""
    torch.manual_seed(0)
    net = UNet(1, 8, (1, 2), 1, dropout=0.5)
    for block in net.modules():  # zero-initialised second convolutions would hide the dropped features
        if hasattr(block, "conv2"):
            nn.init.normal_(block.conv2.weight, std=0.1)
    nn.init.normal_(net.out[-1].weight, std=0.1)
    x, sigma = torch.randn(2, 1, 28, 28), torch.tensor([0.5, 2.0])
    assert not torch.equal(net(x, sigma), net(x, sigma))
    average = EMA(net, 0.999)
    net.eval()
    torch.testing.assert_close(net(x, sigma), net(x, sigma), rtol=0, atol=0)
    net.train()
    torch.testing.assert_close(average.module(x, sigma), net.eval()(x, sigma), rtol=0, atol=0)


def test_unet_group_norm_holds_the_named_fewest_channels_and_one_channel_groups_erase_channel_means():
    """model.group_channels k: every norm of the net has the most groups g (a power of two up to 32)
    that divide its C channels with at least k each: EDM's min(32, C/k) where C/k is a power of two;
    at 1, gcd(32, C), one channel a group below 32 channels, where a block's residual branch is blind
    to a constant added to each input channel (its mean is subtracted), which it reads at 4."""
    for width in (16, 32, 64, 128):
        for k in (1, 4):
            net = UNet(3, width, (1, 2), 1, attention=(8,), resolution=16, group_channels=k)
            norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
            assert len(norms) == 2 * 8 + 1 + 4  # 8 blocks, the output, attention after the 4 blocks at 8 px
            for m in norms:
                c, g = m.num_channels, m.num_groups
                assert c % g == 0 and c // g >= k and (2 * g > 32 or c % (2 * g) or c // (2 * g) < k), (c, g, k)
                if k == 1:
                    assert g == math.gcd(32, c), (c, g)  # the groups of checkpoints written before
                elif c & (c - 1) == 0:
                    assert g == min(32, c // k), (c, g)
    torch.manual_seed(0)
    x, shift = torch.randn(2, 16, 8, 8, dtype=torch.float64), torch.randn(1, 16, 1, 1, dtype=torch.float64)
    changes = {}
    for group_channels in (1, 4):
        block = ResBlock(16, 16, None, group_channels=group_channels).double()
        nn.init.normal_(block.conv2.weight, std=0.1)  # zero-initialised: the branch would be 0
        branch = lambda x: block(x, None) - x  # noqa: E731  (the skip is the identity)
        changes[group_channels] = (branch(x + shift) - branch(x)).abs().max().item()
    assert changes[1] < 1e-12 and changes[4] > 1e-3, changes
