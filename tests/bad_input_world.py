"""The world the bad-input cases (test_bad_input.py) point at: finished runs and checkpoints,
classifiers, and broken files of every kind a user could hand the scripts."""
import errno
import gzip
import io
import os
import pickle
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, quick_config, write_class_zip
from engine import train

QUICK = ROOT / "configs" / "quick"


def _poison_classifier(path: Path):
    from engine.evaluation.classifier import Classifier, save_classifier
    model = Classifier(1, 10, 2)
    with torch.no_grad():
        model.fc.weight.fill_(float("nan"))
    save_classifier(path, model, {"in_channels": 1, "num_classes": 10, "width": 2}, (1, 28, 28),
                    "fashion_mnist", 0.1)


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _zips(world: Path):
    with zipfile.ZipFile(world / "bad_crc.zip", "w", compression=zipfile.ZIP_STORED) as zf:
        for cls in ("cat", "dog"):
            for i in range(2):
                zf.writestr(f"{cls}/{i:04d}.png", _png(40 * i + 10))
    raw = bytearray((world / "bad_crc.zip").read_bytes())
    start = raw.index(b"\x89PNG", raw.index(b"dog/0001.png"))  # flip a byte inside that member's data
    raw[start + 40] ^= 0xFF
    (world / "bad_crc.zip").write_bytes(bytes(raw))
    with zipfile.ZipFile(world / "undecodable.zip", "w") as zf:
        zf.writestr("cat/0000.png", _png(10))
        zf.writestr("dog/0000.png", b"not a png at all")
    (world / "not_a.zip").write_bytes(b"PK but not really a zip")
    write_class_zip(world / "no_classes.zip", 2, 0, classes=[""])  # CIFAR-like JPEGs, but at the zip's top
    write_class_zip(world / "grey.zip", 2, 0, classes=["cat", "dog"], mode="L")
    write_class_zip(world / "size30.zip", 2, 0, classes=["cat", "dog"], size=30)
    write_class_zip(world / "cat_dog_frog.zip", 2, 0, classes=["cat", "dog", "frog"])
    write_class_zip(world / "cat_frog.zip", 2, 1, classes=["cat", "frog"])
    for cls, data in (("cat", _png(10)), ("dog", b"\x89PNG but truncated")):
        (world / "broken_folder" / cls).mkdir(parents=True)
        (world / "broken_folder" / cls / "0000.png").write_bytes(data)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo the data folder ran code",))


@pytest.fixture(scope="module")
def world(tmp_path_factory, fashion_root, cifar_root):
    """Runs, checkpoints, classifiers and broken files that the cases point at."""
    w = tmp_path_factory.mktemp("world")
    train(quick_config("gan_fashion.yaml", f"data.root={fashion_root}"), w / "gan_run")
    train(quick_config("ncsn_toy.yaml", "train.steps=2", "train.n_samples=4", "ncsn.sampler.steps=1",
                       "data.toy_size=512"), w / "ncsn_run")
    train(quick_config("ncsn_fashion.yaml", f"data.root={fashion_root}", "train.steps=2", "train.n_samples=4",
                       "ncsn.num_scales=3", "ncsn.sampler.steps=1"), w / "ncsn_fashion_run")
    train(quick_config("dae_toy.yaml", "dae.num_scales=1", "dae.sampler.steps=1", "train.steps=2",
                       "train.n_samples=4", "data.toy_size=512"), w / "single_sigma_run")
    shutil.copytree(w / "gan_run", w / "edited_run")  # its config.yaml's seed edited after the run
    edited = w / "edited_run" / "config.yaml"
    edited.write_text(edited.read_text().replace("seed: 0", "seed: 1"))
    shutil.copytree(fashion_root, w / "truncated_fashion")
    images = w / "truncated_fashion" / "train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:5000]))
    (w / "no_config").mkdir()
    shutil.copytree(w / "gan_run" / "checkpoints", w / "no_config" / "checkpoints")
    (w / "empty_run").mkdir()
    (w / "leftovers").mkdir()
    (w / "leftovers" / "metrics.jsonl").write_text('{"step": 2}\n')
    (w / "leftovers" / "tb").mkdir()
    shutil.copytree(w / "gan_run", w / "corrupt_run")
    last = w / "corrupt_run" / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    (w / "afile").write_text("a file, not a folder\n")
    (w / "list.yaml").write_text("- method: gan\n- train: {}\n")
    (w / "scalar.yaml").write_text("42\n")
    (w / "latin1.yaml").write_bytes("method: gan\n# réglages\n".encode("latin-1"))
    (w / "broken.yaml").write_text("method: gan\ntrain: {steps: [1, 2}\n")
    (w / "a_folder.yaml").mkdir()
    (w / "method_list.yaml").write_text("method: [gan]\n")
    (w / "twice.yaml").write_text((QUICK / "gan_fashion.yaml").read_text() + "train: {steps: 3}\n")
    _zips(w)
    evil = w / "evil" / "cifar-10-batches-py"
    evil.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        shutil.copy(cifar_root / "cifar-10-batches-py" / name, evil / name)
    with open(evil / "data_batch_3", "wb") as f:
        pickle.dump({"data": Evil(), "labels": [0]}, f)
    import train_classifier
    for data, root in (("cifar10", cifar_root), ("fashion_mnist", fashion_root)):
        train_classifier.main(["--data", data, "--root", str(root), "--out", str(w / f"{data}_clf.pt"),
                               "--epochs", "1", "--width", "2", "--batch-size", "20", "--device", "cpu"])
    _poison_classifier(w / "nan_clf.pt")
    (w / "offline").mkdir()
    (w / "ro").mkdir()
    return {"w": w, "fashion": fashion_root, "cifar": cifar_root, "gan": w / "gan_run",
            "ckpt": w / "gan_run" / "checkpoints" / "last.pt",
            "ncsn_ckpt": w / "ncsn_run" / "checkpoints" / "last.pt",
            "ncsn_fashion_ckpt": w / "ncsn_fashion_run" / "checkpoints" / "last.pt",
            "single_sigma_ckpt": w / "single_sigma_run" / "checkpoints" / "last.pt"}


# -- argv builders and injected faults for the cases of test_bad_input.py ---------------------------


def _gan(w, *overrides, config="gan_fashion.yaml", run="new_run"):
    """train.py on a quick config (fixture data) into a fresh run directory of the world."""
    return ["--config", str(QUICK / config), "--run-dir", str(w["w"] / run), f"data.root={w['fashion']}",
            *overrides]


def _cifar(w, zip_name, *overrides):
    """train.py on the CIFAR-10 DCGAN CPU config, reading a zip of the world."""
    return ["--config", str(ROOT / "configs" / "cifar10_dcgan_cpu.yaml"), "--run-dir", str(w["w"] / "new_run"),
            f"data.path={w['w'] / zip_name}", "train.steps=1", "train.batch_size=2", *overrides]


def _config(w, name, *overrides):
    return ["--config", str(w["w"] / name), *overrides]


def _resume(w, *overrides, run="gan"):
    return ["--run-dir", str(w[run] if run in w else w["w"] / run), "--resume", *overrides]


def _sample(w, *args, out="grid.png", ckpt="ckpt"):
    return ["--checkpoint", str(w[ckpt]), "--out", str(w["w"] / out), "--device", "cpu", *args]


def _evaluate(w, *args, features=None, ckpt="ckpt"):
    extra = ["--features", f"classifier:{w['w'] / features}"] if features else []
    return ["--checkpoint", str(w[ckpt]), "--device", "cpu", "--n", "8", "--batch-size", "8",
            "--stats-dir", str(w["w"] / "stats"), *extra, *args]


def _clf(w, *args, out="clf.pt", data="fashion_mnist", root=None):
    return ["--data", data, "--root", str(root or w["fashion"]), "--out", str(w["w"] / out),
            "--epochs", "1", "--width", "2", "--device", "cpu", *args]


def _folder_clf(w, path, test_path=None):
    return ["--data", "image_folder", "--path", str(w["w"] / path), "--test-path", str(w["w"] / (test_path or path)),
            "--out", str(w["w"] / "folder_clf.pt"), "--epochs", "1", "--width", "2", "--device", "cpu"]


def _report(*args):
    return ["--config", str(QUICK / "gan_fashion.yaml"), *args]


def _read_only(target: str):
    """os.access reports the folder `target` of the world (and what is under it) as read-only, as it
    is for a non-root user on a read-only folder (the tests run as root, for whom chmod is no bar)."""
    def patch(mp, w):
        real, top = os.access, str(w["w"] / target)

        def access(path, mode, *args, **kwargs):
            if str(path).startswith(top) and mode & os.W_OK:
                return False
            return real(path, mode, *args, **kwargs)
        mp.setattr(os, "access", access)
    return patch


def _disk_full(mp, w):
    def save(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    mp.setattr(torch, "save", save)


def _offline(mp, w):
    import data.fashion_mnist as fm

    def urlopen(*args, **kwargs):
        raise urllib.error.URLError("offline")
    mp.setattr(urllib.request, "urlopen", urlopen)
    mp.setattr(fm, "SYSTEM_DIR", w["w"] / "no_system_copy")


def _nan_scores(mp, w):
    import evaluate
    real = evaluate.score
    mp.setattr(evaluate, "score", lambda *a, **k: {**real(*a, **k), "fid": float("nan")})




def _likelihood(w, *args, ckpt="ncsn_fashion_ckpt"):
    return ["--checkpoint", str(w[ckpt]), "--device", "cpu", "--n", "4", *args]


def _results(w, *args):
    return ["--data-root", str(w["fashion"]), "--device", "cpu", *args]


def never_integrated(mp, w):
    """likelihood.py must find every input before it integrates: integrating fails the test."""
    import likelihood

    def integrate(*args, **kwargs):
        raise AssertionError("the model was integrated before the inputs were checked")
    mp.setattr(likelihood, "model_bits_per_dim", integrate)
