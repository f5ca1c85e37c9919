"""DDP facts (2 CPU processes, gloo): gradients after one distributed step equal the single-process
gradients on the concatenated batch; a torchrun run resumed from its checkpoint is the same run."""
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from engine import build
from conftest import ROOT, assert_same_state, quick_config
from data import DataInfo

WORLD, B = 2, 8
OVERRIDES = ["model.d_batchnorm=false", "model.g_batchnorm=false", "train.ema=null"]  # per-sample nets


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gradients_after_step(step: str, x: torch.Tensor, z: torch.Tensor, rank: int = 0, world: int = 1,
                         micro_batch: int | None = None):
    """One training step of the quick GAN on this rank's slice of (x, z), in parts of micro_batch
    (gradient accumulation); returns all gradients."""
    extra = [f"train.micro_batch={micro_batch}"] if micro_batch else []
    cfg = quick_config("gan_fashion.yaml", f"gan.step={step}", *OVERRIDES, *extra)
    torch.manual_seed(0)
    method = build(cfg, "cpu", info=DataInfo("fashion_mnist", (1, 28, 28), 10))
    if world > 1:
        method.distribute()
    rows = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
    latents = iter(z[rows].split(micro_batch or len(x)))  # the rank's latents, part by part
    method.sample_latents = lambda n, generator=None: next(latents)
    method.training_step(x[rows])
    return {n: [p.grad.clone() for p in net.parameters()] for n, net in method.nets.items()}


def worker(rank, port, step, x, z, out, micro_batch):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        grads = gradients_after_step(step, x, z, rank, WORLD, micro_batch)
        if rank == 0:
            torch.save(grads, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("step, micro_batch", [("one_loss", None), ("alternating", None), ("one_loss", B // 2),
                                               ("alternating", B // 2)])
def test_ddp_gradients_equal_the_single_process_gradients_on_the_whole_batch(step, micro_batch, tmp_path):
    """Also with gradient accumulation: two micro-batches per process, all-reduced on the last only
    (DDP's no_sync), give the whole batch's gradients."""
    torch.manual_seed(1)
    x, z = torch.rand(WORLD * B, 1, 28, 28) * 2 - 1, torch.randn(WORLD * B, 8)
    out = tmp_path / "grads.pt"
    mp.spawn(worker, args=(free_port(), step, x, z, str(out), micro_batch), nprocs=WORLD, join=True)
    ddp = torch.load(out, weights_only=True)
    single = gradients_after_step(step, x, z)
    for name in single:
        for a, b in zip(ddp[name], single[name]):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name


def test_torchrun_resume_reproduces_the_straight_distributed_run(fashion_root, tmp_path):
    base = [str(ROOT / "scripts/train.py"), "--config", str(ROOT / "configs/quick/gan_fashion.yaml"),
            f"data.root={fashion_root}", "train.ckpt_every=3", "train.log_every=3"]

    def torchrun(*args):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *base, *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    r = torchrun("--run-dir", str(tmp_path / "straight"), "train.steps=6")
    assert r.stdout.count("done:") == 1  # rank 0 reports, the other rank stays quiet
    torchrun("--run-dir", str(tmp_path / "split"), "train.steps=3")
    torchrun("--run-dir", str(tmp_path / "split"), "--resume", "train.steps=6")
    step, state = assert_same_state(tmp_path / "straight", tmp_path / "split")
    assert step == 6 and any(k.startswith(".rng_ranks.1") for k in state)
    ckpt = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)
    assert len(ckpt["rng_ranks"]) == 2 and not torch.equal(ckpt["rng_ranks"][0]["torch"], ckpt["rng_ranks"][1]["torch"])
