"""Fixtures in the real on-disk formats (IDX gz, CIFAR pickles, CelebA folder, class-folder zip)."""
import gzip
import io
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import engine  # noqa: E402, F401  (registers every method, architecture, loss, sampler and data set)


def write_idx(path: Path, array: np.ndarray):
    """LeCun's IDX: 0x00 0x00, dtype 0x08 (uint8), ndim, big-endian int32 dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_garments(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28×28 images whose brightness encodes the label, so label/image pairing is checkable."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = (labels[:, None, None] * 25 + rng.integers(0, 5, (n, 28, 28))).astype(np.uint8)
    return images, labels


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fashion")
    for split, n, seed in (("train", 256, 0), ("t10k", 64, 1)):
        images, labels = fake_garments(n, seed)
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, 20).tolist()
        data = np.stack([np.full(3072, 20 * l, np.uint8) for l in labels])
        data[:, :1024] = 7  # red plane differs from green/blue: checks the CHW layout
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data,
                         "filenames": [f"{i}.png" for i in range(20)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return root


@pytest.fixture(scope="session")
def celeba_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("celeba_root")
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    rows = []
    for i in range(1, 13):
        img = np.zeros((218, 178, 3), np.uint8)
        img[39:179, 19:159] = 200  # the central 140×140 crop is bright, the border black
        Image.fromarray(img).save(folder / f"{i:06d}.jpg", quality=95)
        rows.append(f"{i:06d}.jpg {0 if i <= 8 else (1 if i <= 10 else 2)}")
    (root / "celeba" / "list_eval_partition.txt").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="session")
def class_zip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("zips") / "train.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for c, cls in enumerate(["airplane", "bird", "cat"]):
            for i in range(4):
                buf = io.BytesIO()
                Image.fromarray(np.full((32, 32, 3), 60 * c + 10, np.uint8)).save(buf, format="PNG")
                zf.writestr(f"{cls}/{i:04d}.png", buf.getvalue())
    return path


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_class_zip(path: Path, per_class: int, seed: int, classes=CIFAR10_CLASSES, mode: str = "RGB",
                    size: int = 32, fmt: str = "JPEG"):
    """A zip of <class>/<nnnn>.jpg members, as the shared CIFAR-10 copy is laid out: each class a
    colour of its own plus noise, so samples and classes are tellable apart."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for c, cls in enumerate(classes):
            for i in range(per_class):
                colour = np.array([25 * c, 255 - 25 * c, 120 + 10 * c])
                pixels = np.clip(colour + rng.integers(-20, 21, (size, size, 3)), 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels).convert(mode)
                buf = io.BytesIO()
                image.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
                name = f"{i:04d}.{fmt.lower().replace('jpeg', 'jpg')}"
                zf.writestr(f"{cls}/{name}" if cls else name, buf.getvalue())  # no class: at the top
    return path


@pytest.fixture(scope="session")
def cifar_jpeg_root(tmp_path_factory) -> Path:
    """CIFAR-10 as the shared JPEG copy: train.zip and test.zip of ten class folders (small)."""
    root = tmp_path_factory.mktemp("cifar10-jpeg")
    write_class_zip(root / "train.zip", 12, 0)
    write_class_zip(root / "test.zip", 4, 1)
    return root


def flat_tree(ckpt) -> dict:
    """Every tensor and value a checkpoint holds for resuming, keyed by its path."""
    out = {}

    def walk(prefix, x):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(f"{prefix}.{i}", v)
        else:
            out[prefix] = x
    walk("", {"state": ckpt["state"], "data": ckpt["data"], "rng": ckpt["rng"],
              "rng_ranks": ckpt.get("rng_ranks", [])})
    return out


def flat_state(run_dir):
    """A run's checkpoint as flat keys, but for the wall time it has trained, which no two runs share."""
    from common.checkpoint import load_checkpoint
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert ckpt.pop("seconds") > 0
    return ckpt["step"], flat_tree(ckpt)


def assert_same_state(run_a: Path, run_b: Path) -> tuple[int, dict]:
    """Two runs' last checkpoints are at the same step and hold bitwise the same state (weights,
    optimizers, EMA, data order, every RNG); returns (that step, the flat state)."""
    (step_a, a), (step_b, b) = flat_state(run_a), flat_state(run_b)
    assert step_a == step_b and a.keys() == b.keys(), (step_a, step_b, a.keys() ^ b.keys())
    for key in a:
        assert torch.equal(a[key], b[key]) if torch.is_tensor(a[key]) else a[key] == b[key], key
    return step_a, a


def quick_config(name: str, *overrides: str):
    from common.config import load_config
    return load_config(ROOT / "configs" / "quick" / name, overrides)


def attending_denoiser(method: str, device: str = "cpu", width: int = 8, batch_size: int = 4,
                       precision: str = "fp32", sampler: dict | None = None):
    """A `method` (dae, ncsn or ebm) of Fashion-MNIST's shape whose two-level U-Net attends at 14×14
    (4 layers: one block down, two up, none in the 7×7 middle), built without data; `sampler`: its
    <method>.sampler section (the method's default when None)."""
    from common.config import load_config
    from data import DataInfo
    from engine import build
    raw = {"method": method, "seed": 0, "device": device, "data": {"name": "fashion_mnist"},
           "model": {"arch": "unet", "width": width, "mults": [1, 2], "blocks": 1, "attention": [14]},
           "train": {"batch_size": batch_size}, "precision": precision,
           method: {"sigma_max": 1.0, "num_scales": 2, **({"sampler": sampler} if sampler else {})}}
    return build(load_config(raw=raw), device, info=DataInfo("fashion_mnist", (1, 28, 28), 10))


def train_straight_and_resumed(name: str, overrides: list[str], root: Path, k: int):
    """A quick config trained 2k steps straight (root/straight) and k steps, stopped, resumed for k more
    (root/split): the resume contract's two runs."""
    from engine import train
    train(quick_config(name, *overrides, f"train.steps={2 * k}"), root / "straight")
    train(quick_config(name, *overrides, f"train.steps={k}"), root / "split")
    train(quick_config(name, *overrides, f"train.steps={2 * k}"), root / "split", resume=True)
