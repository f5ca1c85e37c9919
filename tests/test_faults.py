"""Faults and what used to go silently wrong: SIGTERM and SIGINT checkpoint at the next step boundary
and exit 143/130; Ctrl-C during the imports is one line; a resumed run trains with the config's
optimizer settings, not the checkpoint's; a torn metrics.jsonl line does not block resume; the
divergence message names only what exists; checkpoints are readable by the group (umask)."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import train as train_cli
from common.checkpoint import load_checkpoint
from common.errors import DataError
from engine import Diverged, train
from conftest import ROOT, quick_config

TRAIN = [sys.executable, str(ROOT / "scripts" / "train.py")]


def fashion(fashion_root, *overrides):
    return quick_config("gan_fashion.yaml", f"data.root={fashion_root}", *overrides)


@contextlib.contextmanager
def killed_at_exit(argv, **kwargs):
    """subprocess.Popen(argv) that is killed when the block ends, so a failed test leaves no run behind."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def metrics(run) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_sigterm_checkpoints_the_step_reached_and_exits_143(fashion_root, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(TRAIN + ["--config", str(ROOT / "configs/quick/gan_fashion.yaml"), "--run-dir", str(run),
                                     f"data.root={fashion_root}", "train.steps=100000", "train.ckpt_every=100000",
                                     "train.log_every=2", "train.sample_every=100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics(run) and metrics(run)[-1]["step"] >= 4):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert step >= 4 and metrics(run)[-1]["step"] == step  # the step reached, logged and saved
    assert err.strip().splitlines()[-1].startswith(f"stopped by SIGTERM at step {step}; checkpoint saved")
    assert "Traceback" not in err


def test_sigint_checkpoints_at_the_next_step_boundary_and_exits_130(fashion_root, tmp_path, monkeypatch, capsys):
    from gan.method import GAN
    real_step, calls = GAN.training_step, {"n": 0}

    def interrupted(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of step 3
        return real_step(self, batch)

    monkeypatch.setattr(GAN, "training_step", interrupted)
    # A suite started in the background of a script inherits SIGINT ignored, which the loop rightly
    # keeps; this test is about an interactive Ctrl-C, so it starts from Python's own handler.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(SystemExit) as e:
            train_cli.main(["--config", str(ROOT / "configs/quick/gan_fashion.yaml"), "--run-dir", str(tmp_path),
                            f"data.root={fashion_root}", "train.ckpt_every=100"])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the loop's handler is gone again
    finally:
        signal.signal(signal.SIGINT, previous)
    assert e.value.code == 130
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 3
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("stopped by SIGINT at step 3")


@pytest.mark.parametrize("after", ["numpy.version", "numpy._typing", "torch.cuda", "torchvision"])
def test_ctrl_c_during_the_imports_is_one_line(tmp_path, after):
    # -X importtime writes a line as each module finishes importing: Ctrl-C right after `after` lands
    # at a known point of the imports, whatever the machine's speed (numpy is imported inside torch's C
    # extension, which swallowed an exception raised there and went on training half imported).
    proc = subprocess.Popen([sys.executable, "-X", "importtime"] + TRAIN[1:] + [
        "--config", str(ROOT / "configs/quick/gan_fashion.yaml"), "--run-dir", str(tmp_path / "r")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    for line in proc.stderr:
        if line.startswith("import time:") and line.rsplit("|", 1)[-1].strip() == after:
            break
    else:
        pytest.fail(f"{after} was never imported")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    said = [line for line in err.splitlines() if line.strip() and not line.startswith("import time:")]
    assert proc.returncode == 130 and said == ["interrupted"], err[-2000:]
    assert not (tmp_path / "r").exists()


def test_after_the_imports_ctrl_c_is_a_keyboard_interrupt_again(capsys):
    from common.errors import cli

    def during_imports(signum, frame):
        raise AssertionError("the imports' handler outlived them")
    during_imports.during_imports = True

    @cli
    def main():
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the KeyboardInterrupt arrives first

    previous = signal.signal(signal.SIGINT, during_imports)
    try:
        with pytest.raises(SystemExit) as e:
            main()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert e.value.code == 130 and capsys.readouterr().err == "interrupted\n"


def test_resume_trains_with_the_configs_optimizer_settings(fashion_root, tmp_path, capsys):
    train(fashion(fashion_root, "train.steps=4"), tmp_path)
    capsys.readouterr()
    train(fashion(fashion_root, "train.steps=8", "optim.lr_g=1e-4", "optim.betas=[0.0, 0.9]", "optim.eps=1e-6"),
          tmp_path, resume=True)
    out = capsys.readouterr().out
    assert "resume: G lr 0.0002 → 0.0001" in out and "D betas (0.5, 0.999) → (0, 0.9)" in out
    groups = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["state"]["optimizers"]["GD"]["param_groups"]
    settings = {g["name"]: (g["lr"], tuple(g["betas"]), g["eps"]) for g in groups}
    assert settings == {"G": (1e-4, (0.0, 0.9), 1e-6), "D": (2e-4, (0.0, 0.9), 1e-6)}
    lrs = {line["step"]: line["lr/G"] for line in metrics(tmp_path)}
    assert lrs == {2: 2e-4, 4: 2e-4, 6: 1e-4, 8: 1e-4}  # logged as the run went


def test_a_torn_metrics_line_does_not_block_resume(fashion_root, tmp_path):
    train(fashion(fashion_root, "train.steps=4"), tmp_path)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss/d_lo')  # killed mid-write
    train(fashion(fashion_root, "train.steps=8"), tmp_path, resume=True)
    assert [line["step"] for line in metrics(tmp_path)] == [2, 4, 6, 8]


def test_divergence_before_any_checkpoint_says_so(fashion_root, tmp_path, monkeypatch):
    from gan.method import GAN
    real_step = GAN.training_step

    def poisoned(self, batch):
        stats = real_step(self, batch)
        stats["g_loss"] = torch.tensor(float("inf"))
        return stats

    monkeypatch.setattr(GAN, "training_step", poisoned)
    with pytest.raises(Diverged) as e:
        train(fashion(fashion_root), tmp_path)
    message = str(e.value)
    assert "no checkpoint was written yet" in message and "last.pt" not in message
    assert "precision=fp32" not in message  # it is fp32 already
    with pytest.raises(Diverged, match="or use precision=fp32"):
        train(fashion(fashion_root, "precision=bf16"), tmp_path / "bf16")


def test_checkpoints_take_the_umask_not_0600(fashion_root, tmp_path):
    old = os.umask(0o022)
    try:
        train(fashion(fashion_root, "train.steps=4"), tmp_path)
    finally:
        os.umask(old)
    assert (tmp_path / "checkpoints" / "last.pt").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("fault, code, line", [
    (OSError(28, "No space left on device", "/runs/x/samples/a.png"), 1,
     "error: No space left on device: /runs/x/samples/a.png (check free space and permissions there)"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried"), 1,
     "error: out of memory ([enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
    (DataError(  # as a DataLoader worker re-raises it
        "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\ncommon.errors.DataError: cannot read member img_align_celeba/1.jpg'), 2,
     "error: cannot read member img_align_celeba/1.jpg"),
])
def test_faults_no_check_foresaw_are_one_line(fault, code, line, capsys):
    from common.errors import cli

    @cli
    def main():
        raise fault

    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == code and len(err) == 1 and err[0].startswith(line), err


def test_one_writer_per_run_directory(fashion_root, tmp_path):
    """A second process on a run directory in use, whether a new run or a --resume, is refused in one
    line naming the holder's PID, and the holder's run goes on untouched."""
    run = tmp_path / "run"
    config = ["--config", str(ROOT / "configs/quick/gan_fashion.yaml"), f"data.root={fashion_root}"]
    with killed_at_exit(TRAIN + config + ["--run-dir", str(run), "train.steps=100000", "train.ckpt_every=2",
                                          "train.log_every=2", "train.sample_every=100000"],
                        stderr=subprocess.PIPE, text=True) as holder:
        deadline = time.time() + 120
        while time.time() < deadline and not (run / "checkpoints" / "last.pt").is_file():
            time.sleep(0.1)
        others = [subprocess.Popen(TRAIN + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for argv in (config + ["--run-dir", str(run)], ["--run-dir", str(run), "--resume"])]
        for other in others:
            _, err = other.communicate(timeout=120)
            lines = err.strip().splitlines()
            assert other.returncode == 2 and len(lines) == 1, err
            assert lines[0] == (f"error: {run} is in use by another training process (PID {holder.pid}): wait for "
                                f"it to end or stop it, or pass --run-dir NEW")
        holder.send_signal(signal.SIGTERM)
        _, err = holder.communicate(timeout=120)
        assert holder.returncode == 143, err[-2000:]
    steps = [line["step"] for line in metrics(run)]
    assert steps == sorted(set(steps))  # one writer: every step logged once, in order


def test_sigterm_during_a_sample_grid_stops_between_its_steps(fashion_root, tmp_path):
    """The grid after step 1 has a million Langevin levels (hours): SIGTERM inside it stops the run
    at that step, with a checkpoint and exit 143, without waiting for the grid."""
    run = tmp_path / "run"
    with killed_at_exit(TRAIN + ["--config", str(ROOT / "configs/quick/ncsn_fashion.yaml"), "--run-dir", str(run),
                                 f"data.root={fashion_root}", "ncsn.num_scales=1000000", "train.steps=6",
                                 "train.sample_every=1", "ncsn.sampler=langevin"], stderr=subprocess.PIPE) as proc:
        err = b""
        os.set_blocking(proc.stderr.fileno(), False)
        deadline = time.time() + 120
        while time.time() < deadline and b"Langevin levels" not in err:  # the grid's bar (shown after 2 s)
            err += proc.stderr.read() or b""
            time.sleep(0.1)
        assert b"Langevin levels" in err, err[-2000:]
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        proc.wait(timeout=120)
        err += proc.stderr.read() or b""
    assert proc.returncode == 143, err[-2000:]
    assert time.monotonic() - sent < 60  # not the hours the grid would take
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 1
    assert err.decode().strip().splitlines()[-1].startswith("stopped by SIGTERM at step 1; checkpoint saved")
    assert not (run / "samples").exists()  # the grid was abandoned, not written half-drawn


def test_a_runaway_loss_stops_the_run(fashion_root, tmp_path):
    """Learning rates of 1e6 send the critic's logits to ~1e14 within ten steps, finite but absurd:
    the run stops with the divergence message, as for NaN."""
    with pytest.raises(Diverged, match=r"^runaway loss \((d_loss|d_real|d_fake|g_loss)=.*× its size at the first step"):
        train(fashion(fashion_root, "optim.lr_g=1e6", "optim.lr_d=1e6", "train.steps=40", "train.log_every=10"),
              tmp_path)
