"""The thin CLIs: sample.py draws seeded grids from checkpoints (EMA by default, interpolations),
init_report.py prints the diagnostic, and a missing data set is one clear line."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from engine import train
from conftest import ROOT, quick_config

SAMPLE = [sys.executable, str(ROOT / "scripts/sample.py")]


@pytest.fixture(scope="module")
def checkpoint(fashion_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train(quick_config("gan_fashion.yaml", f"data.root={fashion_root}", "train.ema=0.5"), run)
    return run / "checkpoints" / "last.pt"


def test_sample_grids_are_seeded_and_use_ema_weights(checkpoint, tmp_path):
    from engine import load_method
    method, ckpt = load_method(checkpoint, "cpu")
    assert ckpt["step"] == 8
    gen = lambda: torch.Generator().manual_seed(0)
    assert torch.equal(method.sample(4, gen()), method.sample(4, gen()))
    assert not torch.equal(method.sample(4, gen()), method.sample(4, torch.Generator().manual_seed(1)))
    assert not torch.equal(method.sample(4, gen(), ema=True), method.sample(4, gen(), ema=False))
    # the EMA network is the one whose weights the checkpoint stored under 'ema'
    ema_w = ckpt["state"]["ema"]["G"]["module.net.0.weight"]
    assert torch.equal(method.sampling_net("G", ema=True).net[0].weight, ema_w)


def test_sample_cli_writes_grid_and_interpolation(checkpoint, tmp_path):
    r = subprocess.run(SAMPLE + ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "a.png"), "--n", "16",
                                 "--seed", "3"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    subprocess.run(SAMPLE + ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "b.png"), "--n", "16",
                             "--seed", "3"], check=True, capture_output=True)
    a, b = (np.asarray(Image.open(tmp_path / f)) for f in ("a.png", "b.png"))
    assert a.shape[:2] == (4 * 30 + 2, 4 * 30 + 2) and np.array_equal(a, b)  # 4×4 of 28 px + padding
    r = subprocess.run(SAMPLE + ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "i.png"), "--n", "12",
                                 "--interpolate", "6"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert np.asarray(Image.open(tmp_path / "i.png")).shape[:2] == (2 * 30 + 2, 6 * 30 + 2)


def test_slerp_endpoints_and_norm():
    from sample import slerp
    a, b = torch.randn(3, 16), torch.randn(3, 16)
    assert torch.allclose(slerp(a, b, torch.tensor(0.0)), a, atol=1e-5)
    assert torch.allclose(slerp(a, b, torch.tensor(1.0)), b, atol=1e-5)
    a, b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    mid = slerp(a, b, torch.tensor(0.5))
    assert torch.allclose(mid.norm(dim=1), torch.ones(3), atol=1e-5)  # stays on the sphere


def test_interpolation_slerps_an_image_shaped_latent_as_one_vector():
    """DDE's denoiser generator takes image-shaped latents: each row of the interpolation grid is the
    slerp between two draws taken as whole vectors (one angle between them), not a slerp per pixel row."""
    from sample import interpolation_latents, slerp

    class Method:
        def sample_latents(self, n, generator):
            return torch.randn(n, 1, 4, 4, generator=generator)
    z = interpolation_latents(Method(), 2, 5, torch.Generator().manual_seed(0))
    ends = Method().sample_latents(4, torch.Generator().manual_seed(0)).flatten(1)
    assert z.shape == (10, 1, 4, 4)
    for row in range(2):
        for col, t in enumerate(torch.linspace(0, 1, 5)):
            want = slerp(ends[row], ends[2 + row], t)
            assert torch.allclose(z[5 * row + col].flatten(), want, atol=1e-5), (row, col)


def test_missing_data_set_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts/train.py"), "--config",
                        str(ROOT / "configs/cifar10_sngan.yaml"), "--run-dir", str(tmp_path / "r"),
                        f"data.root={tmp_path}"], capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "CIFAR-10 not found" in lines[0] and "data.download=true" in lines[0]
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_init_report_cli():
    r = subprocess.run([sys.executable, str(ROOT / "scripts/init_report.py"), "--config",
                        str(ROOT / "configs/quick/gan_fashion.yaml"), "init.D.scheme=orthogonal"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "== G (normal) ==" in r.stdout and "== D (orthogonal) ==" in r.stdout
