"""On a CUDA device (skipped elsewhere): the captured paths of train.cuda_graph reproduce the eager
numerics. A captured graph draws its random numbers from the same Philox stream positions as the
eager kernels it recorded, so a run that warms up, captures and replays reaches the weights of a
run that never captured (with train.deterministic, so that the two runs' eager steps agree bitwise:
cuDNN's autotuner may pick other kernels in another run). Run on a GPU with `pytest tests/test_cuda.py`."""
import pytest
import torch

from common.checkpoint import load_checkpoint
from engine import train
from conftest import attending_denoiser, quick_config, train_straight_and_resumed

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def determinism_restored():
    """train.deterministic sets process-wide flags: leave the next test the defaults."""
    yield
    from engine.loop import set_determinism
    set_determinism(False)
    torch.backends.cudnn.benchmark = False


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


def trained_state(run_dir, name: str = "last.pt") -> tuple[int, dict]:
    ckpt = load_checkpoint(run_dir / "checkpoints" / name)
    state = ckpt["state"]
    out = {f"nets.{k}": v for k, v in state["nets"].items()}
    out.update({f"ema.{n}.{k}": v for n, e in state["ema"].items() for k, v in e.items()})
    return ckpt["step"], out


@pytest.mark.parametrize("config,overrides", [
    ("gan_fashion.yaml", ["gan.step=one_loss", "optim.lr_g=1e-3", "optim.lr_d=1e-3"]),
    ("gan_fashion.yaml", ["gan.step=alternating", "gan.n_critic=2", "model.d_batchnorm=false",
                          "model.d_spectral_norm=true", "optim.lr_g=1e-3", "optim.lr_d=1e-3",
                          "gan.augment=[color,translation,cutout]"]),  # DiffAugment's draws captured too
    ("ncsn_fashion.yaml", ["optim.lr=1e-3"]),
], ids=["one_loss", "alternating_sn", "ncsn"])
def test_captured_training_reaches_the_eager_weights(fashion_root, tmp_path, replays, config, overrides):
    """12 steps: 3 eager warm-ups, a capture and 9 replays, with sample grids and checkpoints in
    between, against 12 eager steps from the same seed. The two agree to rounding, not bitwise (the
    warm-ups run on a side stream, where cuBLAS has another workspace; capturable Adam's bias
    correction runs on the device), and Adam at its default eps turns rounding into a sign: its first
    updates are about lr × sign(g), so a gradient component near zero that rounds the other way moves
    its weight 2 lr the other way. Measured on an H200 at eps 1e-8, that put the two runs 1.5% of a
    step's movement apart after two steps (NCSN) and 5-9% after ten, with no jump at the first
    replay. With eps = 1 the update is Lipschitz in the gradient, so rounding stays rounding;
    each tensor's difference is then measured against how far the eager run moved it over steps 6 to
    12 (one replay missing would make it about a sixth)."""
    common = [f"data.root={fashion_root}", "device=cuda", "train.steps=12", "train.ckpt_every=6",
              "train.keep_every=6", "train.deterministic=true", "optim.eps=1", *overrides]
    train(quick_config(config, *common), tmp_path / "eager")
    assert replays[0] == 0
    train(quick_config(config, *common, "train.cuda_graph=true"), tmp_path / "graphed")
    assert replays[0] >= 9
    (step_a, a), (step_b, b) = trained_state(tmp_path / "eager"), trained_state(tmp_path / "graphed")
    _, half = trained_state(tmp_path / "eager", "step_0000006.pt")
    assert step_a == step_b == 12 and a.keys() == b.keys()
    worst = {}
    for key in a:
        if not a[key].is_floating_point():
            assert torch.equal(a[key], b[key]), key  # step counters, EMA's n_averaged
        elif (a[key] - half[key]).norm() > 0:  # spectral norm's u, v and BatchNorm's counters may rest
            worst[key] = ((a[key] - b[key]).norm() / (a[key] - half[key]).norm()).item()
    print("largest relative differences:", sorted(worst.items(), key=lambda kv: -kv[1])[:3])
    assert max(worst.values()) < 0.02, max(worst.items(), key=lambda kv: kv[1])


@pytest.mark.parametrize("config,overrides", [
    ("gan_fashion.yaml", ["gan.step=one_loss", "model.d_batchnorm=false", "gan.reg=r1",
                          "gan.augment=[translation,cutout]"]),
    ("ncsn_fashion.yaml", ["train.cuda_graph=true"]),
], ids=["one_loss_r1", "ncsn_graphed"])
def test_deterministic_resume_on_a_gpu_reproduces_the_straight_run_bitwise(fashion_root, tmp_path, config,
                                                                           overrides):
    """README's resume contract on a GPU: k steps, stop, resume, k more gives the weights of 2k steps
    straight, bitwise, with train.deterministic."""
    common = [f"data.root={fashion_root}", "device=cuda", "train.ckpt_every=3", "train.deterministic=true",
              *overrides]
    train_straight_and_resumed(config, common, tmp_path, 6)
    (step_a, a), (step_b, b) = trained_state(tmp_path / "straight"), trained_state(tmp_path / "split")
    assert step_a == step_b == 12 and a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


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


def test_an_attending_ebm_trains_on_cuda():
    """The EBM's loss differentiates its net's input gradient; torch's fused CUDA attention kernels
    have no derivative of their backward, so its attention layers write the product out."""
    m = attending_denoiser("ebm", "cuda", width=64, batch_size=8)
    stats = m.training_step(torch.rand(8, 1, 28, 28, device="cuda") * 2 - 1)
    assert all(torch.isfinite(v) for v in stats.values())


def test_guidance_in_an_interval_samples_eagerly_where_capture_is_asked(fashion_root, replays):
    """train.cuda_graph makes Langevin replay one captured step with σ as a device scalar, which cannot
    branch on σ: with <method>.guidance_interval the sampler runs eagerly, and the net's passes are the
    count evaluate.py reports."""
    from data import DataInfo
    from engine import build
    cfg = quick_config("ncsn_fashion.yaml", f"data.root={fashion_root}", "model.num_classes=10", "ncsn.sigma_max=5",
                       "ncsn.guidance=2", "ncsn.guidance_interval=[0.3,2.0]", "ncsn.sampler=langevin",
                       "ncsn.sampler.steps=2", "train.cuda_graph=true")
    method = build(cfg, "cuda", info=DataInfo("fashion_mnist", (1, 28, 28), 10))
    rows = []
    method.nets["net"].register_forward_hook(lambda m, args, out: rows.append(len(args[0])))
    x = method.sample(2, torch.Generator("cuda").manual_seed(0), ema=False)
    assert replays[0] == 0 and bool(torch.isfinite(x).all())
    nfe = method.noise.sampler.nfe(method.schedule())
    assert sum(rows) // 2 == method.evaluations_per_sample() and nfe < sum(rows) // 2 < 2 * nfe


def test_a_bf16_net_samples_captured_as_it_samples_eagerly(fashion_root, replays):
    """A bf16 run's net samples under bf16 autocast, whose cache of cast weights is off while steps
    are captured (engine/runtime.py): captured Langevin draws eager Langevin's samples, up to bf16's
    rounding of σ given as a device scalar rather than a number."""
    from data import DataInfo
    from engine import build

    def sampled(graphed: bool):
        torch.manual_seed(0)
        cfg = quick_config("ncsn_fashion.yaml", f"data.root={fashion_root}", "ncsn.sigma_max=5", "precision=bf16",
                           "ncsn.sampler.steps=2", f"train.cuda_graph={str(graphed).lower()}")
        method = build(cfg, "cuda", info=DataInfo("fashion_mnist", (1, 28, 28), 10))
        dtypes = set()
        method.nets["net"].register_forward_hook(lambda m, args, out: dtypes.add(out.dtype))
        return method.sample(8, torch.Generator("cuda").manual_seed(0), ema=False), dtypes

    (eager, eager_dtypes), (graphed, graphed_dtypes) = sampled(False), sampled(True)
    assert replays[0] > 0 and eager_dtypes == graphed_dtypes == {torch.bfloat16}
    assert torch.isfinite(graphed).all() and (eager - graphed).abs().max() < 0.05
