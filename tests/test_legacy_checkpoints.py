"""Checkpoints written by earlier code keep working: tiny ones saved before the layering change
(tests/fixtures/*.pt, with the samples they gave then) load, sample the same, and resume."""
import shutil

import pytest
import torch
import yaml

from common.config import load_config
from conftest import ROOT
from engine import load_method, train

FIXTURES = ROOT / "tests" / "fixtures"
NAMES = ["gan_dcgan", "ncsn_unet", "dde_mlp"]


@pytest.mark.parametrize("name", NAMES)
def test_an_old_checkpoint_samples_what_it_sampled_then(name):
    method, ckpt = load_method(FIXTURES / f"{name}.pt", "cpu")
    expected = torch.load(FIXTURES / f"{name}.samples.pt", weights_only=True)["samples"]
    assert ckpt["step"] == 2
    assert torch.allclose(method.sample(4, torch.Generator().manual_seed(0)), expected, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_an_old_checkpoint_resumes(name, fashion_root, tmp_path):
    from common.checkpoint import load_checkpoint
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(FIXTURES / f"{name}.pt", run / "checkpoints" / "last.pt")
    raw = load_checkpoint(run / "checkpoints" / "last.pt")["config"]
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(run / "config.yaml", [f"data.root={fashion_root}", "train.steps=3"])
    assert train(cfg, run, resume=True)["step"] == 3
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
