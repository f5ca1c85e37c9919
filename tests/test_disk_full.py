"""A full disk while a run or a script writes: one line, exit status 1 or 2, the previous file intact,
no partial or 0-byte file left (common/paths.py atomic_file). The disk fills either for real (a
small tmpfs, where this machine may mount one) or by a file object that refuses writes past a
budget with ENOSPC, as the kernel does; torch's zip writer then fails as it does on a full disk."""
import errno
import os
import subprocess
import sys

import pytest

import common.paths
import sample as sample_cli
from common.checkpoint import load_checkpoint
from common.errors import CheckpointError
from engine import train
from conftest import ROOT, quick_config

TRAIN = [sys.executable, str(ROOT / "scripts" / "train.py")]


class FullDisk:
    """A file that takes `room` more bytes, then fails every write with ENOSPC."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.f.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.f.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.fixture
def disk(monkeypatch):
    """disk["room"]: bytes every file atomic_file opens may take from now on (None: unlimited)."""
    state = {"room": None}
    real = os.fdopen

    def fdopen(fd, *args, **kwargs):
        f = real(fd, *args, **kwargs)
        return f if state["room"] is None else FullDisk(f, state["room"])
    monkeypatch.setattr(common.paths.os, "fdopen", fdopen)
    return state


def leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or (p.is_file() and not p.stat().st_size))


def fill_after_step(monkeypatch, disk, step: int, room: int):
    from gan.method import GAN
    real, seen = GAN.training_step, {"n": 0}

    def training_step(self, batch):
        seen["n"] += 1
        if seen["n"] == step + 1:
            disk["room"] = room
        return real(self, batch)
    monkeypatch.setattr(GAN, "training_step", training_step)


def test_a_full_disk_at_a_checkpoint_keeps_the_last_one(fashion_root, tmp_path, monkeypatch, disk):
    fill_after_step(monkeypatch, disk, 4, room=1000)  # torch's writer gets 1000 bytes into the next one
    cfg = quick_config("gan_fashion.yaml", f"data.root={fashion_root}", "train.steps=12", "train.ckpt_every=4",
                       "train.sample_every=100")
    with pytest.raises(CheckpointError) as e:
        train(cfg, tmp_path)
    last = tmp_path / "checkpoints" / "last.pt"
    assert str(e.value) == (f"could not write {last} (No space left on device); the previous file is intact: free "
                            f"space there (or fix its permissions) and resume with --resume")
    assert load_checkpoint(last)["step"] == 4 and not leftovers(tmp_path)


def test_a_checkpoint_error_is_not_hidden_by_tensorboard_failing_on_the_same_full_disk(fashion_root, tmp_path,
                                                                                      monkeypatch, disk, capsys):
    """The disk fills during a checkpoint, and TensorBoard's writer, on the same disk, raises its own
    ENOSPC when the run closes its logs: train.py still ends with the checkpoint's line and status 2."""
    from engine.logging import RunLogger
    from train import main
    fill_after_step(monkeypatch, disk, 4, room=1000)

    def hparams(self, step, config):  # where TensorBoard re-raises its writer thread's error
        if disk["room"] is not None:
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(RunLogger, "hparams", hparams)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["--config", str(ROOT / "configs/quick/gan_fashion.yaml"), "--run-dir", str(tmp_path / "run"),
              f"data.root={fashion_root}", "train.steps=12", "train.ckpt_every=4", "train.sample_every=100"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert e.value.code == 2 and err[-1].startswith(f"error: could not write {tmp_path / 'run' / 'checkpoints'}"), err
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 4


def test_tensorboards_writer_thread_dying_of_a_full_disk_prints_no_traceback(tmp_path, monkeypatch, capsys):
    """engine.logging's threading.excepthook (pytest swaps in its own during a test: set here) keeps
    TensorBoard's worker from printing a traceback; its error comes back once, as an OSError where the
    run writes next (one line from the CLI). Another thread's exception still prints one."""
    import threading
    from tensorboard.summary.writer import record_writer
    from engine.logging import RunLogger, _quiet_tensorboard_worker

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(threading, "excepthook", _quiet_tensorboard_worker)
    logger = RunLogger(tmp_path)
    monkeypatch.setattr(record_writer.RecordWriter, "write", full)
    capsys.readouterr()
    logger.scalars(1, {"x": 1.0})
    with pytest.raises(OSError):
        logger.writer.flush()
    for thread in threading.enumerate():
        if type(thread).__name__ == "_AsyncWriterThread":
            thread.join(timeout=10)
    assert "Traceback" not in capsys.readouterr().err
    other = threading.Thread(target=full, args=(None, b""))
    other.start()
    other.join()
    assert "OSError: [Errno 28]" in capsys.readouterr().err


def test_a_full_disk_at_a_grid_leaves_no_empty_image(fashion_root, tmp_path, disk, capsys):
    train(quick_config("gan_fashion.yaml", f"data.root={fashion_root}"), tmp_path / "run")
    capsys.readouterr()
    disk["room"] = 100
    out = tmp_path / "grid.png"
    with pytest.raises(SystemExit) as e:
        sample_cli.main(["--checkpoint", str(tmp_path / "run" / "checkpoints" / "last.pt"), "--out", str(out),
                         "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and err == [f"error: No space left on device: {out} (check free space and permissions there)"]
    assert not out.exists() and not leftovers(tmp_path)


def test_a_full_disk_at_the_start_leaves_a_run_directory_that_can_start_again(fashion_root, tmp_path, disk):
    cfg = quick_config("gan_fashion.yaml", f"data.root={fashion_root}")
    disk["room"] = 0
    with pytest.raises(OSError):
        train(cfg, tmp_path)
    assert not (tmp_path / "config.yaml").exists() and not leftovers(tmp_path)
    disk["room"] = None
    assert train(cfg, tmp_path)["step"] == 8  # not refused as a run that stopped before its first checkpoint


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 360 KiB tmpfs: room for the quick GAN's first checkpoint (213 KB), not for its next one
    beside it (an atomic write needs both)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=360k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_real_full_disk_is_one_line_and_keeps_the_last_checkpoint(fashion_root, small_tmpfs):
    run = small_tmpfs / "run"
    r = subprocess.run(TRAIN + ["--config", str(ROOT / "configs/quick/gan_fashion.yaml"), "--run-dir", str(run),
                                f"data.root={fashion_root}", "train.steps=12", "train.ckpt_every=4",
                                "train.sample_every=100"], capture_output=True, text=True)
    lines = [line for line in r.stderr.splitlines() if line.strip() and "it/s" not in line and "s/it" not in line]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert lines[-1].startswith(f"error: could not write {run / 'checkpoints' / 'last.pt'} (No space left on "
                                f"device); the previous file is intact"), lines
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4 and not leftovers(run)


@pytest.mark.parametrize("failing", [None, RuntimeError("the run's own error")])
def test_the_logs_close_when_their_last_write_fails(tmp_path, monkeypatch, failing):
    """RunLogger.finish closes TensorBoard's writer even when writing the hyperparameters fails (a full
    disk): the error is raised when the run itself succeeded, dropped when the run ends by another."""
    from engine.logging import RunLogger

    def hparams(self, step, config):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(RunLogger, "hparams", hparams)
    logger = RunLogger(tmp_path)
    logger.scalars(1, {"x": 1.0})
    if failing is None:
        with pytest.raises(OSError):
            logger.finish(1, {}, failing)
    else:
        logger.finish(1, {}, failing)
    assert logger.writer.all_writers is None  # SummaryWriter.close() drops its file writers
