"""Training-loop facts: the run directory's layout; k steps + resume + k steps is bitwise the same
run as 2k straight; a SIGKILLed run leaves a loadable checkpoint; bad checkpoints, NaN losses and
re-used run directories each stop with one clear line and lose nothing."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from common.checkpoint import load_checkpoint
from common.errors import CheckpointError, ConfigError
from engine import Diverged, train
from conftest import ROOT, assert_same_state, quick_config

TRAIN = [sys.executable, str(ROOT / "scripts" / "train.py")]


def fashion(fashion_root, *overrides):
    return quick_config("gan_fashion.yaml", f"data.root={fashion_root}", *overrides)


def test_run_directory_layout(fashion_root, tmp_path):
    summary = train(fashion(fashion_root), tmp_path)
    assert summary["step"] == 8
    for rel in ("config.yaml", "checkpoints/last.pt", "samples/step_0000004.png", "samples/step_0000008.png"):
        assert (tmp_path / rel).is_file(), rel
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [2, 4, 6, 8]
    assert {"loss/d_loss", "loss/g_loss", "lr/G", "lr/D", "perf/images_per_s"} <= set(lines[0])
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["step"] == 8 and "G" in ckpt["state"]["ema"]


@pytest.mark.parametrize("variant", [
    ["gan.step=one_loss"],
    # a warm-up spanning the resume, fp16's loss scale and an EMA by half-life, all resumed exactly
    ["optim.warmup=9", "precision=fp16", "train.ema_halflife_kimg=1", "train.ema_rampup=0.5"],
    # DiffAugment's draws come from the generator the checkpoint saves
    ["gan.step=alternating", "gan.n_critic=2", "data.flip=true", "gan.reg=r1", "gan.loss=hinge",
     "model.d_batchnorm=false", "gan.augment=[color,translation,cutout]"],
])
def test_resume_reproduces_the_straight_run_bitwise(fashion_root, tmp_path, variant):
    k = 6
    straight = fashion(fashion_root, *variant, f"train.steps={2 * k}", "train.ckpt_every=3")
    train(straight, tmp_path / "straight")
    first = fashion(fashion_root, *variant, f"train.steps={k}", "train.ckpt_every=3")
    train(first, tmp_path / "split")
    more = fashion(fashion_root, *variant, f"train.steps={2 * k}", "train.ckpt_every=3")
    train(more, tmp_path / "split", resume=True)
    assert assert_same_state(tmp_path / "straight", tmp_path / "split")[0] == 2 * k
    losses = lambda d: [{k: v for k, v in json.loads(l).items() if not k.startswith("perf/")}
                        for l in (d / "metrics.jsonl").read_text().splitlines()]
    assert losses(tmp_path / "straight") == losses(tmp_path / "split")


def test_sigkill_mid_run_leaves_a_loadable_checkpoint_that_resumes(fashion_root, tmp_path):
    run = tmp_path / "run"
    args = ["--config", str(ROOT / "configs/quick/gan_fashion.yaml"), "--run-dir", str(run),
            f"data.root={fashion_root}", "train.steps=100000", "train.ckpt_every=5", "train.log_every=5"]
    proc = subprocess.Popen(TRAIN + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if last.exists() and load_checkpoint(last)["step"] >= 15:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step = load_checkpoint(last)["step"]  # loadable after the kill, whatever it interrupted
    assert step >= 15
    (last.parent / ".last.pt.killed.tmp").write_bytes(b"half a checkpoint")  # as a kill mid-write leaves
    r = subprocess.run(TRAIN + ["--run-dir", str(run), "--resume", f"train.steps={step + 4}"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_checkpoint(last)["step"] == step + 4
    assert not list(last.parent.glob("*.tmp"))  # the resumed run removed what the killed one left


def test_corrupt_and_foreign_checkpoints_are_one_clear_line(fashion_root, tmp_path):
    train(fashion(fashion_root), tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    good = last.read_bytes()
    last.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt or not a PyTorch file"):
        load_checkpoint(last)
    torch.save({"G": torch.zeros(3)}, last)
    with pytest.raises(CheckpointError, match="not a checkpoint written by this project"):
        load_checkpoint(last)
    for argv in (TRAIN + ["--run-dir", str(tmp_path / "run"), "--resume"],
                 [sys.executable, str(ROOT / "scripts/sample.py"), "--checkpoint", str(last), "--out",
                  str(tmp_path / "g.png")]):
        r = subprocess.run(argv, capture_output=True, text=True)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "not a checkpoint written by this project" in lines[0]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(fashion_root, tmp_path, monkeypatch):
    from gan.method import GAN
    real_step = GAN.training_step
    calls = {"n": 0}

    def poisoned(self, batch):
        calls["n"] += 1
        stats = real_step(self, batch)
        if calls["n"] == 6:
            stats["d_loss"] = torch.tensor(float("nan"))
        return stats

    monkeypatch.setattr(GAN, "training_step", poisoned)
    with pytest.raises(Diverged, match=r"non-finite loss \(d_loss=nan\) between steps 5 and 6.*step 4"):
        train(fashion(fashion_root, "train.log_every=3", "train.ckpt_every=4"), tmp_path)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 4


def test_an_existing_run_is_never_overwritten(fashion_root, tmp_path):
    train(fashion(fashion_root), tmp_path)
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run .* --resume"):
        train(fashion(fashion_root), tmp_path)
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(fashion(fashion_root), tmp_path / "empty", resume=True)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before


def test_wall_time_budget_checkpoints_and_stops(fashion_root, tmp_path):
    summary = train(fashion(fashion_root, "train.max_minutes=1e-9", "train.steps=1000"), tmp_path)
    assert summary["step"] == 1
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 1
    assert (tmp_path / "samples" / "step_0000001.png").is_file()


def test_the_warm_start_is_training_time(fashion_root, tmp_path, monkeypatch):
    """A fresh run's warm start (where DDE draws its regression pairs from the teacher) counts as training:
    in the run's seconds, and so in train.max_minutes; a resumed run has none."""
    from common.method import Method
    monkeypatch.setattr(Method, "warm_start", lambda self: time.sleep(0.5))
    summary = train(fashion(fashion_root, "train.steps=2"), tmp_path)
    assert summary["seconds"] >= 0.5 and load_checkpoint(tmp_path / "checkpoints" / "last.pt")["seconds"] >= 0.5
    summary = train(fashion(fashion_root, "train.steps=4"), tmp_path, resume=True)
    assert summary["seconds"] < 0.5


def test_periodic_checkpoints_are_kept(fashion_root, tmp_path):
    train(fashion(fashion_root, "train.keep_every=4"), tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "last.pt", "step_0000004.pt", "step_0000008.pt"]
