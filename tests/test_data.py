"""Data facts: each real on-disk format loads with the right shapes, ranges, labels and splits;
streams visit every example once per epoch, resume exactly and shard disjointly."""
import io
import shutil
import zipfile

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from common.config import DataConfig
from conftest import ROOT
from common.errors import DataError
from data import build_dataset, build_stream, cifar10, fashion_mnist, from_unit_range, to_unit_range
from data.stream import DeviceStream, LoaderStream
from oracles import eight_gaussians


def cfg(**kw):
    return DataConfig(**kw)


def test_fashion_mnist_idx_gz(fashion_root):
    train = build_dataset(cfg(name="fashion_mnist", root=str(fashion_root)))
    assert train.info.classes == fashion_mnist.CLASSES == tuple(torchvision.datasets.FashionMNIST.classes)
    assert train.data.shape == (256, 1, 28, 28) and train.data.dtype == torch.uint8
    assert train.info.shape == (1, 28, 28) and train.info.num_classes == 10
    # fixture brightness encodes the label: the pairing survived parsing
    assert torch.equal(train.data.float().mean((1, 2, 3)).floor().long() // 25, train.labels)
    test = build_dataset(cfg(name="fashion_mnist", root=str(fashion_root), split="test"))
    assert len(test) == 64


def test_fashion_mnist_pads_to_32_and_reads_torchvision_layout(fashion_root, tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for p in fashion_root.iterdir():  # torchvision keeps them extracted: read uncompressed too
        import gzip
        (raw / p.name.removesuffix(".gz")).write_bytes(gzip.decompress(p.read_bytes()))
    ds = build_dataset(cfg(name="fashion_mnist", root=str(tmp_path), image_size=32))
    ref = build_dataset(cfg(name="fashion_mnist", root=str(fashion_root)))
    assert ds.data.shape == (256, 1, 32, 32)
    assert torch.equal(ds.data[:, :, 2:30, 2:30], ref.data)
    assert ds.data[:, :, :2].sum() == 0 and ds.data[:, :, :, 30:].sum() == 0


def test_fashion_mnist_errors(tmp_path, monkeypatch):
    import data.fashion_mnist as fm
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "none")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        build_dataset(cfg(name="fashion_mnist", root=str(tmp_path)))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04garbage")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05ab")
    with pytest.raises(DataError, match="not a uint8 IDX file"):
        build_dataset(cfg(name="fashion_mnist", root=str(tmp_path)))


def test_cifar10_pickled_batches(cifar_root, tmp_path):
    train = build_dataset(cfg(name="cifar10", root=str(cifar_root)))
    assert train.data.shape == (100, 3, 32, 32) and train.info.shape == (3, 32, 32)
    assert (train.data[:, 0] == 7).all()  # the red plane is the first 1024 bytes of a row
    assert torch.equal(train.data[:, 1, 0, 0].long(), 20 * train.labels)
    assert len(build_dataset(cfg(name="cifar10", root=str(cifar_root), split="test"))) == 20
    with pytest.raises(DataError, match="CIFAR-10 not found .* data.download=true"):
        build_dataset(cfg(name="cifar10", root=str(tmp_path)))
    broken = tmp_path / "cifar-10-batches-py"
    shutil.copytree(cifar_root / "cifar-10-batches-py", broken)
    (broken / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3 is not a CIFAR-10 batch"):
        build_dataset(cfg(name="cifar10", root=str(tmp_path)))


def test_celeba_layout_splits_and_centre_crop(celeba_root, tmp_path):
    sizes = {s: len(build_dataset(cfg(name="celeba", root=str(celeba_root), split=s)))
             for s in ("train", "valid", "test", "all")}
    assert sizes == {"train": 8, "valid": 2, "test": 2, "all": 12}
    ds = build_dataset(cfg(name="celeba", root=str(celeba_root), image_size=32))
    x, _ = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8 and ds.info.shape == (3, 32, 32)
    assert x.float().mean() > 190  # the crop keeps exactly the bright 140×140 centre
    wide = build_dataset(cfg(name="celeba", root=str(celeba_root), image_size=32, crop=178))[0][0]
    assert wide.float().mean() < 170  # a wider crop lets the black border in
    # the zipped download works without extracting it
    zroot = tmp_path / "celeba"
    zroot.mkdir()
    shutil.copy(celeba_root / "celeba" / "list_eval_partition.txt", zroot)
    with zipfile.ZipFile(zroot / "img_align_celeba.zip", "w") as zf:
        for p in sorted((celeba_root / "celeba" / "img_align_celeba").iterdir()):
            zf.write(p, f"img_align_celeba/{p.name}")
    zipped = build_dataset(cfg(name="celeba", root=str(tmp_path), image_size=32))
    assert torch.equal(zipped[3][0], ds[3][0])
    with pytest.raises(DataError, match="CelebA not found"):
        build_dataset(cfg(name="celeba", root=str(tmp_path / "nowhere")))


def test_celeba_stream_through_workers(celeba_root):
    c = cfg(name="celeba", root=str(celeba_root), image_size=16, num_workers=2, flip=True)
    ds = build_dataset(c)
    stream = build_stream(ds, c, batch_size=4, device="cpu")
    assert isinstance(stream, LoaderStream)
    x, _ = next(stream)
    assert x.shape == (4, 3, 16, 16) and x.min() >= -1 and x.max() <= 1


def test_image_folder_zip_and_folder(class_zip, tmp_path):
    ds = build_dataset(cfg(name="image_folder", path=str(class_zip)))
    assert ds.data.shape == (12, 3, 32, 32) and ds.info.num_classes == 3
    assert ds.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # sorted class folders
    assert torch.equal(ds.data[:, 0, 0, 0].long(), 60 * ds.labels + 10)
    with zipfile.ZipFile(class_zip) as zf:
        zf.extractall(tmp_path / "folder")
    folder = build_dataset(cfg(name="image_folder", path=str(tmp_path / "folder"), image_size=16, channels=1))
    assert folder.data.shape == (12, 1, 16, 16)
    with pytest.raises(DataError, match="not found"):
        build_dataset(cfg(name="image_folder", path=str(tmp_path / "missing.zip")))


SHARED_TEST_ZIP = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg" / "test.zip"  # shared/ beside the checkout


@pytest.mark.skipif(not SHARED_TEST_ZIP.is_file(),
                    reason="the shared CIFAR-10 JPEG zips (../shared/datasets beside the checkout) are absent")
def test_shared_cifar10_jpeg_zip_reads_as_cifar10():
    ds = build_dataset(cfg(name="image_folder", path=str(SHARED_TEST_ZIP)))
    assert ds.data.shape == (10000, 3, 32, 32) and ds.info.num_classes == 10
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
    assert ds.info.classes == cifar10.CLASSES  # its folders in sorted order are torchvision's labels


def test_toy_sets_and_the_mixture_score_identity():
    for name in ("8gaussians", "rings", "checkerboard", "spirals"):
        ds = build_dataset(cfg(name="toy", toy=name, toy_size=1000))
        assert ds.data.shape == (1000, 2) and ds.data.dtype == torch.float32 and ds.info.kind == "points"
        assert ds.data.abs().max() < 4
    mix = eight_gaussians()
    x = (torch.randn(64, 2, dtype=torch.float64) * 2).requires_grad_(True)
    for sigma in (0.0, 0.5):  # closed-form score = autograd of the closed-form log density
        (auto,) = torch.autograd.grad(mix.log_prob(x, sigma).sum(), x)
        assert torch.allclose(mix.score(x.detach(), sigma), auto, atol=1e-10)
    with pytest.raises(DataError, match="unknown toy distribution"):
        build_dataset(cfg(name="toy", toy="moons"))


def test_unit_range_round_trip_is_exact():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    y = to_unit_range(x)
    assert y.min() == -1 and y.max() == 1
    assert torch.equal(from_unit_range(y), x)


def test_device_stream_epochs_flips_and_resume(fashion_root):
    c = cfg(name="fashion_mnist", root=str(fashion_root), flip=True)
    ds = build_dataset(c)
    stream = DeviceStream(ds, 32, "cpu", flip=True, seed=3)
    seen = torch.cat([next(stream)[1] for _ in range(8)])  # one epoch = 256 / 32 batches
    assert sorted(seen.tolist()) == sorted(ds.labels.tolist())
    # each image is the data set's image at its index, flipped or not
    idx, flips = stream.sampler.order(1)
    x, _ = next(stream)
    ref = to_unit_range(ds.data[idx[:32]])
    expect = torch.where(flips[:32].view(-1, 1, 1, 1), ref.flip(-1), ref)
    assert torch.equal(x, expect) and 0 < flips[:32].sum() < 32
    # resume: a fresh stream loaded with the state continues with the same batches
    state = stream.state_dict()
    ahead = [next(stream)[0] for _ in range(10)]
    resumed = DeviceStream(ds, 32, "cpu", flip=True, seed=3)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, next(resumed)[0]) for a in ahead)


def test_ranks_get_disjoint_shards_and_the_loader_path_matches(fashion_root):
    c = cfg(name="fashion_mnist", root=str(fashion_root))
    ds = build_dataset(c)
    shards = [DeviceStream(ds, 16, "cpu", seed=1, rank=r, world=2).sampler.order(0)[0] for r in range(2)]
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert len(shards[0]) + len(shards[1]) == 256
    dev = DeviceStream(ds, 16, "cpu", flip=True, seed=1)
    loader = LoaderStream(ds, 16, "cpu", flip=True, seed=1, num_workers=0)
    for _ in range(20):  # crosses an epoch boundary
        (a, ya), (b, yb) = next(dev), next(loader)
        assert torch.equal(a, b) and torch.equal(ya, yb)


def test_batch_larger_than_data_is_a_clear_error(fashion_root):
    ds = build_dataset(cfg(name="fashion_mnist", root=str(fashion_root), split="test"))
    with pytest.raises(DataError, match="lower train.batch_size"):
        DeviceStream(ds, 128, "cpu")


def smooth_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """n smooth random 32×32 colour images (upsampled 4×4 noise), as baseline JPEGs (quality 90)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
        buf = io.BytesIO()
        small.resize((32, 32), Image.BILINEAR).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def damaged(jpeg: bytes) -> bytes:
    """A copy with 20 bytes of its scan data changed that PIL still decodes, without a word, to other
    pixels; the first such of a fixed sequence of tries."""
    rng = np.random.default_rng(1)
    scan = jpeg.index(b"\xff\xda") + 14
    for _ in range(100):
        b = bytearray(jpeg)
        for p in rng.choice(np.arange(scan, len(jpeg) - 2), 20, replace=False):
            b[p] ^= int(rng.integers(1, 256))
        try:
            with Image.open(io.BytesIO(bytes(b))) as im, Image.open(io.BytesIO(jpeg)) as clean:
                if not np.array_equal(np.asarray(im), np.asarray(clean)):
                    return bytes(b)
        except OSError:
            continue
    raise AssertionError("no silently decodable corruption found")


def test_image_folder_leaves_out_corrupt_jpegs_and_says_so(tmp_path, capsys):
    jpegs = smooth_jpegs(120)
    for bad, name in ((1, "one.zip"), (2, "two.zip")):
        with zipfile.ZipFile(tmp_path / name, "w") as zf:
            for i, data in enumerate(jpegs):
                zf.writestr(f"{'ab'[i % 2]}/{i:04d}.jpg", damaged(data) if i < bad else data)
    ds = build_dataset(cfg(name="image_folder", path=str(tmp_path / "one.zip")))  # 1 of 120: left out
    assert len(ds) == 119 and ds.info.num_classes == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: left out 1 corrupt image(s) of 120 under {tmp_path / 'one.zip'}: member a/0000.jpg "
                   f"of {tmp_path / 'one.zip'} (scan data the decoder never reads (the coded data lost its alignment))"]
    with pytest.raises(DataError, match=r"^2 of 120 images under .* are corrupt: member a/0000.jpg .* and 1 more"):
        build_dataset(cfg(name="image_folder", path=str(tmp_path / "two.zip")))  # more than 1%: refused
