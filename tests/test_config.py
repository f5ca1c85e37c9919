"""Config facts: every shipped config is valid, overrides are typed, bad input is one clear line."""
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from common.config import build_config, load_config
from common.errors import ConfigError
from common.registry import lookup
from networks.unet import SelfAttention
from conftest import ROOT

CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "configs")) for p in CONFIGS])
def test_every_shipped_config_is_valid_and_round_trips(path):
    cfg = load_config(path)
    again = build_config(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()


CHANNELS = {"fashion_mnist": 1, "cifar10": 3, "celeba": 3}
DENOISER_CONFIGS = [p for p in CONFIGS if p.parent.name == "configs"
                    and (cfg := load_config(p)).method in ("dae", "ncsn", "ebm") and cfg.data.name in CHANNELS]


@pytest.mark.parametrize("path", DENOISER_CONFIGS, ids=[p.name for p in DENOISER_CONFIGS])
def test_every_shipped_denoiser_config_builds_its_network_at_its_data_size(path):
    """What only the network's builder can check (the U-Net's attention resolutions among its levels,
    patch folding dividing the size), on the meta device: no memory, no data."""
    cfg = load_config(path)
    info = SimpleNamespace(shape=(CHANNELS[cfg.data.name], cfg.data.image_size, cfg.data.image_size))
    with torch.device("meta"):
        net = lookup("denoiser_arch", cfg.model.arch)(cfg.model, info)
    assert sum(isinstance(m, SelfAttention) for m in net.modules()) >= len(cfg.model.attention)


def test_overrides_are_parsed_as_typed_yaml():
    cfg = load_config(ROOT / "configs/fashion_mnist_dcgan.yaml",
                      ["optim.lr_d=4e-4", "train.steps=1e3", "optim.betas=[0.0, 0.9]", "gan.loss=hinge",
                       "train.max_minutes=2.5", "data.flip=true"])
    assert cfg.optim.lr_d == 4e-4 and isinstance(cfg.optim.lr_d, float)
    assert cfg.train.steps == 1000 and isinstance(cfg.train.steps, int)
    assert cfg.optim.betas == (0.0, 0.9)
    assert cfg.gan.loss == "hinge" and cfg.train.max_minutes == 2.5 and cfg.data.flip is True


@pytest.mark.parametrize("override, expected", [
    ("optim.lr_gg=1e-4", "unknown key 'optim.lr_gg'; did you mean 'optim.lr_g'?"),
    ("train.stepz=5", "unknown key 'train.stepz'; did you mean 'train.steps'?"),
    ("train.steps=abc", "train.steps: expected int, got 'abc'"),
    ("train.steps=2.5", "train.steps: expected int, got 2.5"),
    ("data.flip=3", "data.flip: expected bool, got 3"),
    ("gan.loss=hinj", "gan.loss: must be one of 'hinge', 'logistic', 'wasserstein', 'least_squares', 'smooth_hinge', got 'hinj'; did you mean 'hinge'?"),
    ("optim.betas=[0.5]", "optim.betas: expected 2 values, got 1"),
    ("init.Q.scheme=normal", "unknown key 'init.Q'"),
    ("init.G.scheme=kaiming", "init.G.scheme: must be one of"),
    ("method=gann", "method: unknown method 'gann'; did you mean 'gan'?"),
    ("train.batch_size=0", "train.batch_size: must be positive"),
    ("device=tpu", "device: must be auto, cpu, cuda or cuda:N"),
    ("gan.n_critic=0", "gan.n_critic: must be >= 1"),
])
def test_bad_values_name_the_key_and_the_fix(override, expected):
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "configs/fashion_mnist_dcgan.yaml", [override])
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_top_level_key_and_missing_file():
    with pytest.raises(ConfigError, match="unknown top-level key 'trian'; did you mean 'train'"):
        load_config(raw={"method": "gan", "trian": {}})
    with pytest.raises(ConfigError, match="config file nope.yaml not found"):
        load_config("nope.yaml")
    with pytest.raises(ConfigError, match="missing key 'method'"):
        load_config(raw={"train": {}})


def test_cross_section_checks():
    with pytest.raises(ConfigError, match="model.arch: use mlp for toy"):
        load_config(ROOT / "configs/toy_gan.yaml", ["model.arch=dcgan"])
    with pytest.raises(ConfigError, match="model.d_batchnorm: only the dcgan critic"):
        load_config(ROOT / "configs/cifar10_sngan.yaml", ["model.d_batchnorm=true"])


def test_cli_config_error_is_one_line_and_nonzero(tmp_path, capsys):
    """One real process (the exit status as a shell sees it), the other cases through main(argv)."""
    import train as train_cli
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: gan\ntrain: {steps: [1, 2}\n")  # broken YAML
    run = ["--run-dir", str(tmp_path / "r")]
    r = subprocess.run([sys.executable, str(ROOT / "scripts/train.py"), "--config",
                        str(ROOT / "configs/quick/gan_fashion.yaml"), "optim.lr_gg=1", *run],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: "), r.stderr
    for args in (["--config", str(bad)], ["--config", str(tmp_path / "missing.yaml")]):
        with pytest.raises(SystemExit) as e:
            train_cli.main([*args, *run])
        lines = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not (tmp_path / "r" / "checkpoints").exists()
