"""Training controls against their formulas: the learning-rate warm-up and schedules (and the rates
the loop really trains with), EDM's EMA half-life against the per-step decay it implies, fp16's
gradient scaler skipping an overflowing step and recovering, and what a run records for
TensorBoard (config text, hparams) and in config.yaml (the device and data actually used)."""
import json
import math
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch import nn

from common.ema import EMA, halflife_decay
from common.errors import ConfigError
from common.lr_schedule import lr_factor
from engine import build, train
from conftest import assert_same_state, quick_config
from data import DataInfo

TOY = DataInfo("toy", (2,), 1, "points")


def optim(schedule="constant", warmup=0, decay_to=0.0, over="steps"):
    return SimpleNamespace(schedule=schedule, warmup=warmup, decay_to=decay_to, schedule_over=over)


@pytest.mark.parametrize("schedule, shape", [
    ("constant", lambda p: 1.0),
    ("cosine", lambda p: 0.5 * (1 + math.cos(math.pi * p))),
    ("linear", lambda p: 1 - p),
])
def test_warmup_then_schedule_follow_their_formulas(schedule, shape):
    steps, warmup, floor = 110, 10, 0.1
    o = optim(schedule, warmup, floor)
    for s in (0, 4, 9):  # warm-up: linear from 1/warmup, reaching 1 at its last step
        assert lr_factor(o, s, steps) == pytest.approx((s + 1) / warmup)
    for s in (10, 35, 60, 109):
        p = (s - warmup) / (steps - warmup)
        assert lr_factor(o, s, steps) == pytest.approx(floor + (1 - floor) * shape(p))
    assert lr_factor(o, 10, steps) == pytest.approx(1.0)  # the peak right after the warm-up
    assert lr_factor(o, 500, steps) == pytest.approx(floor + (1 - floor) * shape(1.0))  # past the end: held
    assert lr_factor(optim(schedule), 0, steps) == 1.0  # no warm-up: the peak from the first step
    by_time = optim(schedule, warmup, floor, over="minutes")  # p: the budget's fraction, not the step's
    assert lr_factor(by_time, 4, steps, spent=0.9) == pytest.approx(0.5)  # still warming up
    for s, spent in ((10, 0.0), (12, 0.3), (100, 0.55), (30, 1.0), (30, 1.7)):
        assert lr_factor(by_time, s, steps, spent) == pytest.approx(floor + (1 - floor) * shape(min(spent, 1.0)))


def test_a_schedule_over_minutes_follows_the_clock_and_resumes_from_the_time_trained(tmp_path, monkeypatch):
    """optim.schedule_over: minutes, on a clock that advances 1 s per training step: step s (0-based)
    runs at p = s / 10 of a 10-second budget, the run stops when 10 s are spent, and one stopped after 4
    steps and resumed continues from its 4 s (the checkpoint's), logging the straight run's rates; a
    resume whose budget its checkpoint has spent is refused in one line."""
    from engine import loop
    now = [0.0]
    step = loop.train_step

    def timed_step(*args):
        now[0] += 1.0
        return step(*args)
    monkeypatch.setattr(loop.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(loop, "train_step", timed_step)
    overrides = ("train.log_every=1", "optim.lr_g=1e-3", "optim.lr_d=4e-3", "optim.schedule=linear",
                 "optim.schedule_over=minutes", f"train.max_minutes={10 / 60}")
    logs = {}
    for name, sessions in (("straight", [1000]), ("resumed", [4, 1000])):
        now[0] = 0.0
        for i, steps in enumerate(sessions):
            train(quick_config("gan_toy.yaml", *overrides, f"train.steps={steps}"), tmp_path / name, resume=i > 0)
        logs[name] = [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    straight = logs["straight"]
    assert [l["step"] for l in straight] == list(range(1, 12))  # stopped once 11 s > 10 s were spent
    for line in straight:
        factor = max(1 - (line["step"] - 1) / 10, 0.0)
        assert line["lr/G"] == pytest.approx(1e-3 * factor) and line["lr/D"] == pytest.approx(4e-3 * factor)
    assert [(l["step"], l["lr/G"]) for l in logs["resumed"]] == [(l["step"], l["lr/G"]) for l in straight]
    with pytest.raises(ConfigError, match="train.max_minutes=.*has trained 0.2 minutes"):
        train(quick_config("gan_toy.yaml", *overrides, "train.steps=1000"), tmp_path / "straight", resume=True)


def test_the_loop_trains_at_the_scheduled_rates_and_keeps_ttur(tmp_path):
    """lr/G and lr/D logged after each step are the configured rates times the factor of that step."""
    cfg = quick_config("gan_toy.yaml", "train.steps=12", "train.log_every=1", "optim.lr_g=1e-3",
                       "optim.lr_d=4e-3", "optim.warmup=4", "optim.schedule=cosine", "optim.decay_to=0.2")
    train(cfg, tmp_path)
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == list(range(1, 13))
    for line in lines:
        factor = lr_factor(cfg.optim, line["step"] - 1, 12)
        assert line["lr/G"] == pytest.approx(1e-3 * factor) and line["lr/D"] == pytest.approx(4e-3 * factor)
    assert lines[0]["lr/G"] == pytest.approx(1e-3 / 4) and lines[-1]["lr/D"] > 4e-3 * 0.2


def test_ema_halflife_is_the_per_step_decay_it_implies():
    """β = 0.5^(B/h): after h/B updates a weight's share has halved, whatever the batch size; an
    EMA run by half-life equals one run by that fixed per-step decay."""
    for batch, halflife in ((64, 10_000), (512, 10_000), (128, 500_000)):
        beta = halflife_decay(torch.tensor(1000), batch, halflife).double()
        assert beta ** (halflife / batch) == pytest.approx(0.5, rel=1e-5)
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    by_halflife = EMA(net, decay=0.0, halflife=(64, 640, None))
    by_decay = EMA(net, decay=0.5 ** 0.1, warmup=False)
    for _ in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        by_halflife.update_parameters(net)
        by_decay.update_parameters(net)
    for a, b in zip(by_halflife.module.parameters(), by_decay.module.parameters()):
        torch.testing.assert_close(a, b)


def test_ema_rampup_is_edms():
    """EDM: h = min(halflife, rampup × images seen before the update), β = 0.5^(B / max(h, 1e-8))."""
    batch, halflife, rampup = 256, 500_000, 0.05
    for t in (0, 1, 10, 1000, 100_000):
        h = min(halflife, t * batch * rampup)
        expected = 0.5 ** (batch / max(h, 1e-8))
        assert halflife_decay(torch.tensor(t), batch, halflife, rampup).item() == pytest.approx(expected, abs=1e-7)
    assert halflife_decay(torch.tensor(0), batch, halflife, rampup).item() == 0.0  # the average starts as the weights


def test_ema_halflife_turns_ema_on_with_the_global_batch():
    cfg = quick_config("dae_toy.yaml", "train.ema=null", "train.ema_halflife_kimg=2", "train.ema_rampup=0.1",
                       "train.batch_size=100")
    method = build(cfg, "cpu", info=TOY)
    assert method.ema["net"].halflife == (100, 2000.0, 0.1)


def test_fp16_scaler_skips_an_overflowing_step_and_recovers():
    method = build(quick_config("dae_toy.yaml", "precision=fp16", "train.ema=null"), "cpu", info=TOY)
    net, opt = method.nets["net"], method.optimizers["net"]
    before = [p.detach().clone() for p in net.parameters()]
    scale = method.scaler.get_scale()
    x = torch.randn(16, 2)
    overflow = lambda x: ((net(x, torch.ones(16)).float() * 1e38).sum(), {})  # × 65536: inf gradients
    method.optimizer_step(opt, overflow, [x], "net")
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # skipped
    assert method.scaler.get_scale() == scale / 2
    method.optimizer_step(opt, lambda x: (net(x, torch.ones(16)).float().pow(2).mean(), {}), [x], "net")
    assert not all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # stepped
    assert method.scaler.get_scale() == scale / 2  # unchanged until 2,000 clean steps
    assert "scaler" in method.state_dict()


def test_fp16_training_runs_under_autocast_and_resumes_its_scale(tmp_path):
    cfg = quick_config("dae_toy.yaml", "precision=fp16", "train.steps=6", "train.log_every=3",
                       "train.sample_every=6", "train.n_samples=16", "train.ckpt_every=3")
    train(cfg, tmp_path)
    from common.checkpoint import load_checkpoint
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["state"]
    assert state["scaler"]["scale"] > 0
    method = build(cfg, "cpu", info=TOY)
    method.load_state_dict(state)
    assert method.scaler.get_scale() == state["scaler"]["scale"]


@pytest.mark.parametrize("amx, avx512_bf16, isa, expected", [
    (True, True, None, "bf16"), (True, True, "AVX512_CORE_AMX", "bf16"), (True, True, "AVX2", "fp32"),
    (True, True, "AVX512_CORE_BF16", "bf16"), (True, True, "AVX512_CORE_VNNI", "fp32"),
    (False, True, None, "bf16"), (False, True, "avx10_1_512", "bf16"), (False, True, "DEFAULT", "bf16"),
    (False, True, "AVX512_CORE", "fp32"),
    (False, False, None, "fp32"), (False, False, "AVX512_CORE_BF16", "fp32")])
def test_auto_precision_is_bf16_only_on_a_cpu_whose_onednn_may_use_native_bf16(monkeypatch, amx, avx512_bf16,
                                                                             isa, expected):
    from engine.runtime import resolve_precision
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if isa is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert [resolve_precision(p, torch.device("cpu")) for p in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    method = build(quick_config("dae_toy.yaml", "precision=auto", "train.ema=null"), "cpu", info=TOY)
    assert method.runtime.precision == expected and (method.scaler is None)
    with method.runtime.autocast():
        y = torch.nn.functional.linear(torch.randn(3, 4), torch.randn(5, 4))
    assert y.dtype == (torch.bfloat16 if expected == "bf16" else torch.float32)


@pytest.mark.parametrize("bf16", [True, False])
def test_auto_precision_on_cuda_follows_the_gpus_native_bf16(monkeypatch, bf16):
    from engine.runtime import resolve_precision
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16 and not including_emulation)
    assert resolve_precision("auto", torch.device("cuda", 0)) == ("bf16" if bf16 else "fp32")


def test_an_auto_precision_run_keeps_auto_in_its_config_and_reports_what_it_used(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    summary = train(quick_config("dae_toy.yaml", "precision=auto", "train.steps=2", "train.sample_every=2",
                                 "train.n_samples=4", "train.ckpt_every=2"), tmp_path)
    assert summary["precision"] == "fp32"
    from common.config import read_yaml
    assert read_yaml(tmp_path / "config.yaml")["precision"] == "auto"  # resolved again wherever it resumes


def test_compiling_on_a_cpu_without_a_cpp_compiler_is_one_line(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ConfigError) as e:
        build(quick_config("dae_toy.yaml", "train.compile=true"), "cpu", info=TOY)
    assert str(e.value).startswith("train.compile") and "train.compile=false" in str(e.value)
    build(quick_config("dae_toy.yaml", "train.compile=false"), "cpu", info=TOY)  # eager needs none


@pytest.mark.parametrize("overrides, named", [
    (["optim.schedule=cosinus"], "optim.schedule"),
    (["optim.warmup=-1"], "optim.warmup"),
    (["optim.decay_to=1.5"], "optim.decay_to"),
    (["train.ema_rampup=0.05"], "train.ema_rampup"),
    (["train.ema_halflife_kimg=0"], "train.ema_halflife_kimg"),
    (["train.cuda_graph=true", "optim.warmup=10"], "train.cuda_graph"),
    (["train.cuda_graph=true", "precision=fp16"], "train.cuda_graph"),
    (["precision=fp8"], "precision"),
])
def test_bad_training_controls_are_one_line_naming_the_setting(overrides, named):
    with pytest.raises(ConfigError) as e:
        quick_config("dae_toy.yaml", *overrides)
    assert str(e.value).startswith(named) and "\n" not in str(e.value)


def test_tensorboard_holds_the_config_text_and_hparams(fashion_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    train(quick_config("gan_fashion.yaml", f"data.root={fashion_root}", "train.steps=5"), tmp_path)
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    acc.Reload()
    (text,) = acc.Tensors("config/text_summary")
    assert "method: gan" in text.tensor_proto.string_val[0].decode()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["method"].string_value == "gan" and hparams["train.steps"].number_value == 5
    assert hparams["optim.lr_g"].number_value == pytest.approx(2e-4)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metrics = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"loss/d_loss", "loss/g_loss", "lr/G", "perf/images_per_s"} <= metrics


def test_config_yaml_records_the_device_and_the_data_folder_found(fashion_root, tmp_path, monkeypatch):
    monkeypatch.chdir(fashion_root.parent)
    train(quick_config("gan_fashion.yaml", f"data.root={fashion_root.name}", "device=auto", "train.steps=2"),
          tmp_path / "run")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["device"] == "cpu"
    assert saved["data"]["root"] == str(fashion_root)  # absolute: the run resumes from anywhere


class Draws:
    """Random draws handed out in order of consumption (so one batch and its micro-batches get the
    same values for the same examples), and noise that is a function of the example it noises."""

    def __init__(self, values: torch.Tensor):
        self.values, self.used = values, 0

    def __call__(self, n, generator=None):
        out = self.values[self.used:self.used + n]
        self.used += n
        return out


def accumulated_grads(config: str, overrides, x: torch.Tensor, monkeypatch, micro_batch=None) -> dict:
    """Every gradient one training step leaves, in float64, with the same draws for each example."""
    extra = [f"train.micro_batch={micro_batch}"] if micro_batch else []
    cfg = quick_config(config, "train.ema=null", f"train.batch_size={len(x)}", *overrides, *extra)
    torch.manual_seed(0)
    method = build(cfg, "cpu", info=TOY)
    method.nets.double()
    gen = torch.Generator().manual_seed(1)
    if hasattr(method, "draw_sigmas"):
        method.draw_sigmas = Draws(method.sigmas.double()[torch.randint(len(method.sigmas), (len(x),), generator=gen)])
    else:
        method.sample_latents = Draws(torch.randn(4 * len(x), cfg.model.z_dim, generator=gen, dtype=torch.float64))
    monkeypatch.setattr(torch, "randn_like", lambda t, **kwargs: torch.sin(997.0 * t + 0.5))
    method.training_step(x)
    return {f"{n}.{k}": p.grad.clone() for n, net in method.nets.items() for k, p in net.named_parameters()
            if p.grad is not None}


@pytest.mark.parametrize("config, overrides", [
    ("gan_toy.yaml", ["gan.step=one_loss", "model.g_batchnorm=false"]),
    ("gan_toy.yaml", ["gan.step=alternating", "model.g_batchnorm=false", "gan.reg=r1"]),
    ("gan_toy.yaml", ["gan.step=one_loss", "model.g_batchnorm=false", "gan.n_critic=2"]),
    ("dae_toy.yaml", []),
    ("dde_toy.yaml", ["dde.q_steps=2"]),
])
def test_an_accumulated_step_equals_the_big_batch_step(config, overrides, monkeypatch):
    """Four micro-batches of 8 give the gradients of one batch of 32 (fp64, each example with the
    same latent, noise level and noise either way)."""
    x = torch.randn(32 * (2 if "gan.n_critic=2" in overrides else 1), 2, dtype=torch.float64)
    whole = accumulated_grads(config, overrides, x, monkeypatch)
    parts = accumulated_grads(config, overrides, x, monkeypatch, micro_batch=8)
    assert whole.keys() == parts.keys() and len(whole) > 2
    for key in whole:
        torch.testing.assert_close(parts[key], whole[key], rtol=1e-9, atol=1e-12, msg=key)


def test_micro_batch_must_divide_the_batch():
    with pytest.raises(ConfigError, match=r"^train.micro_batch: must divide train.batch_size \(256\)"):
        quick_config("dae_toy.yaml", "train.micro_batch=100")


def test_the_dsm_probe_is_the_loss_at_each_bands_centre_with_fixed_noise():
    from denoising.losses import dsm_loss
    cfg = quick_config("dae_toy.yaml", "train.ema=null")
    method = build(cfg, "cpu", info=TOY)
    x = torch.randn(16, 2)
    first, again = method.probe({"train": x}), method.probe({"train": x})
    assert first == again and len(first) == 5  # fixed noise: the same curve point for the same weights
    n = cfg.dae
    edges = torch.logspace(math.log10(n.sigma_min), math.log10(n.sigma_max), 6).tolist()
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(cfg.seed + 3))
    D = method.denoiser()
    for (lo, hi), (key, value) in zip(zip(edges[:-1], edges[1:]), first.items()):
        assert key == f"dsm_train/sigma_{lo:.3g}-{hi:.3g}"
        expected = dsm_loss(D, x, torch.full((16,), math.sqrt(lo * hi)), n.weighting, eps=eps).mean()
        assert value == pytest.approx(expected.item(), rel=1e-6)


def test_a_denoiser_run_logs_held_out_dsm_curves_and_is_unchanged_by_them(fashion_root, tmp_path, monkeypatch):
    from denoising.method import DenoisingMethod
    overrides = [f"data.root={fashion_root}", "train.steps=4", "train.sample_every=2", "train.ckpt_every=4"]
    train(quick_config("ncsn_fashion.yaml", *overrides), tmp_path / "probed")
    lines = [json.loads(l) for l in (tmp_path / "probed" / "metrics.jsonl").read_text().splitlines()]
    probed = [l for l in lines if any(k.startswith("dsm_test/") for k in l)]
    assert [l["step"] for l in probed] == [2, 4]
    assert all(sum(k.startswith(f"dsm_{s}/") for k in probed[0]) == 5 for s in ("train", "test"))
    monkeypatch.setattr(DenoisingMethod, "probe", None)
    train(quick_config("ncsn_fashion.yaml", *overrides), tmp_path / "plain")
    assert_same_state(tmp_path / "probed", tmp_path / "plain")
