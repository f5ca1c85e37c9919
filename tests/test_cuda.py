"""On a CUDA device (skipped elsewhere): the captured paths of train.cuda_graph reproduce the eager
numerics. A captured graph draws its random numbers from the same Philox stream positions as the
eager kernels it recorded, so a run that warms up, captures and replays reaches the weights of a
run that never captured. Run on a GPU with `pytest tests/test_cuda.py`."""
import pytest
import torch

from common.checkpoint import load_checkpoint
from engine import train
from conftest import quick_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def replays(monkeypatch):
    """Counts CUDA-graph replays, so a test knows the captured path really ran."""
    count = [0]
    replay = torch.cuda.CUDAGraph.replay

    def counted(self):
        count[0] += 1
        return replay(self)
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", counted)
    return count


def trained_state(run_dir) -> dict:
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    state = ckpt["state"]
    out = {f"nets.{k}": v for k, v in state["nets"].items()}
    out.update({f"ema.{n}.{k}": v for n, e in state["ema"].items() for k, v in e.items()})
    return ckpt["step"], out


@pytest.mark.parametrize("config,overrides", [
    ("gan_fashion.yaml", ["gan.step=one_loss", "optim.lr_g=1e-2", "optim.lr_d=1e-2"]),
    ("gan_fashion.yaml", ["gan.step=alternating", "gan.n_critic=2", "model.d_batchnorm=false",
                          "model.d_spectral_norm=true", "optim.lr_g=1e-2", "optim.lr_d=1e-2"]),
    ("ncsn_fashion.yaml", ["optim.lr=1e-2"]),
], ids=["one_loss", "alternating_sn", "ncsn"])
def test_captured_training_reaches_the_eager_weights(fashion_root, tmp_path, replays, config, overrides):
    """12 steps: 3 eager warm-ups, a capture and 9 replays, with sample grids and checkpoints in
    between, against 12 eager steps from the same seed. The high learning rate moves the weights far
    beyond the tolerance at every step."""
    common = [f"data.root={fashion_root}", "device=cuda", "train.steps=12", "train.ckpt_every=6", *overrides]
    train(quick_config(config, *common), tmp_path / "eager")
    assert replays[0] == 0
    train(quick_config(config, *common, "train.cuda_graph=true"), tmp_path / "graphed")
    assert replays[0] >= 9
    (step_a, a), (step_b, b) = trained_state(tmp_path / "eager"), trained_state(tmp_path / "graphed")
    assert step_a == step_b == 12 and a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            assert torch.allclose(a[key], b[key], rtol=1e-3, atol=1e-4), key
        else:
            assert torch.equal(a[key], b[key]), key  # step counters, EMA's n_averaged


@pytest.mark.parametrize("own_generator", [True, False], ids=["generator", "default_generator"])
def test_captured_langevin_draws_the_eager_samples(replays, own_generator):
    from denoising.denoiser import Denoiser
    from networks import UNet
    from denoising.samplers import annealed_langevin
    torch.manual_seed(0)
    D = Denoiser(UNet(1, 8, (1, 2), 1).cuda(), "score")
    sigmas = [1.0, 0.5, 0.25, 0.1]
    x0 = sigmas[0] * torch.randn(16, 1, 28, 28, device="cuda")

    def run(graphed):
        torch.cuda.manual_seed(3)
        gen = torch.Generator("cuda").manual_seed(1) if own_generator else None
        with torch.no_grad():
            return annealed_langevin(D.score, x0, sigmas, 5, 1e-4, True, gen, graphed)

    eager, graphed = run(False), run(True)
    assert replays[0] == len(sigmas) * 5
    assert (eager - x0).abs().mean() > 0.05  # the chain moved
    assert torch.allclose(eager, graphed, rtol=1e-3, atol=1e-4)
