"""Network facts: each architecture gives the shapes its callers rely on at every size it takes,
NCSNv2 has the paper's parameter count and computes what the official network does, and spectral norm is torch's (same checkpoint keys, same
numbers) with an explicit power iteration that finds the top singular value."""
import copy

import pytest
import torch
from torch import nn

from networks.spectral import power_iteration
from conftest import ROOT
from networks import DCGANDiscriminator, DCGANGenerator, NCSNv2, ResNetDiscriminator, ResNetGenerator


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
