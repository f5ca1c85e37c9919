"""The rows scripts/benchmark.py times: speed and memory of the training steps, the samplers and the
data pipeline, each as the median of many repeats after warm-up (module docstring of the script).
"""
from __future__ import annotations

import functools
import statistics
import sys
import time
from pathlib import Path

import torch

from common.config import DataConfig, load_config
from common.graphs import Graphed, GraphedStep
from common.registry import lookup
from common.schema import Chosen
from data import DataInfo, TensorData, build_stream
from data.image_folder import decode
from denoising.samplers import SamplerSettings
from .build import build

ROOT = Path(__file__).resolve().parents[1]  # the checkout: configs/ is read from there

# (name, config, data shape, batch, overrides) of the GAN models per size.
GAN_MODELS = {
    "gpu": [("dcgan64", "celeba64_dcgan.yaml", (3, 64, 64), 64, []),
            ("sngan32", "cifar10_sngan.yaml", (3, 32, 32), 128, ["gan.n_critic=1"])],
    "cpu": [("dcgan28", "fashion_mnist_dcgan_cpu.yaml", (1, 28, 28), 64, [])],
    "tiny": [("dcgan32", "celeba64_dcgan.yaml", (3, 32, 32), 8, ["model.g_width=8", "model.d_width=8"]),
             ("sngan32", "cifar10_sngan.yaml", (3, 32, 32), 8, ["model.g_width=16", "model.d_width=16",
                                                                 "gan.n_critic=1"])],
}
# The score network rows: (name, config, data shape, training batch, sampling batch, overrides). The
# ladder is fixed so that no data set is needed.
SCORE_MODELS = {
    "gpu": ("ncsnv2_32", "cifar10_ncsn.yaml", (3, 32, 32), 128, 1000,
            ["ncsn.sigma_max=100", "ncsn.num_scales=232"]),
    "cpu": ("unet28", "fashion_mnist_ncsn_cpu.yaml", (1, 28, 28), 64, 64,
            ["ncsn.sigma_max=40", "ncsn.num_scales=97"]),
    "tiny": ("ncsnv2_32", "cifar10_ncsn.yaml", (3, 32, 32), 4, 16,
             ["ncsn.sigma_max=100", "ncsn.num_scales=4", "model.width=8"]),
}
# The samplers timed per score model: (name, settings); Langevin with T = 5 steps per level (2 on tiny)
# and ε = 1.25e-5, Heun on 18 EDM levels (4 on tiny).
SAMPLERS = {
    "gpu": {"langevin": {"steps": 5, "step_lr": 1.25e-5}, "heun": {"steps": 18}},
    "cpu": {"langevin": {"steps": 5, "step_lr": 1e-5}, "heun": {"steps": 18}},
    "tiny": {"langevin": {"steps": 2, "step_lr": 1.25e-5}, "heun": {"steps": 4}},
}
# The data stream rows: (data shape, set size, batch, DataLoader workers).
DATA_SIZES = {"gpu": ((3, 32, 32), 50_000, 128, 8), "cpu": ((1, 28, 28), 60_000, 64, 2),
              "tiny": ((3, 32, 32), 2048, 64, 0)}


def progress(text: str):
    print(text, file=sys.stderr, flush=True)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn, device) -> float:
    """Wall time of fn() in ms: between synced CUDA events on a GPU, the host clock elsewhere."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - t0)


def interleaved_ms(fns: dict, device, warmup: int, repeats: int) -> dict[str, float]:
    """Median ms of each fn: warm-up calls first, then the fns timed in turn, once per round, so
    that drift (clocks, caches, other load) falls on all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(time_once(fn, device))
    return {k: statistics.median(v) for k, v in times.items()}


def median_ms(fn, device, warmup: int, repeats: int) -> float:
    return interleaved_ms({"": fn}, device, warmup, repeats)[""]


def peak_mib(device):
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def fast_overrides(device, compile_: bool) -> list[str]:
    """bf16, fused Adam and, on CUDA, the CUDA graph and channels_last unless compiled (compile
    chooses the layouts itself; on a CPU channels_last slowed the U-Net's step 1.35× and 2× with
    bf16: oneDNN's NCHW kernels are the fast ones there)."""
    fast = ["precision=bf16", "optim.fused=true"]
    if device.type == "cuda":
        fast += ["train.cuda_graph=true"] + ([] if compile_ else ["train.channels_last=true"])
    fast.append(f"train.compile={str(compile_).lower()}")
    return fast



def variants(device, args):
    # The baseline is set outright: a CPU config may ask for precision auto and compile itself.
    return (("fp32 eager", ["precision=fp32", "train.compile=false"]),
            ("fast", fast_overrides(device, args.compile)))


def step_fn(config, overrides, shape, batch, device):
    """One training step (with the EMA update, as in the loop) of a config on a fixed batch."""
    cfg = load_config(ROOT / "configs" / config, [*overrides, f"train.batch_size={batch}",
                                                   f"device={device.type}", "train.ema=0.999"])
    torch.manual_seed(0)
    method = build(cfg, device, info=DataInfo(cfg.data.name, shape, 10))
    x = torch.rand(batch * method.batches_per_step, *shape, device=device) * 2 - 1
    if cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def train_step(batch_x):
        stats = method.training_step(batch_x)
        method.update_ema()
        return stats

    step = GraphedStep(train_step) if cfg.train.cuda_graph else train_step
    return lambda: step(x)


def images_row(row: str, variant: str, ms: float, batch: int, device) -> dict:
    """A timed row of `batch` images per call."""
    return {"row": row, "variant": variant, "ms": ms, "images_per_s": batch * 1e3 / ms, "peak_mib": peak_mib(device)}


def gan_rows(device, args):
    rows = []
    for name, config, shape, batch, size in GAN_MODELS[args.sizes]:
        critic_bn = load_config(ROOT / "configs" / config, size).model.critic_batchnorm
        groups = [("", [], ("alternating", "one_loss", "one_loss_bracket")),
                  # DiffAugment's cost: the critic's inputs augmented (gan/augment.py)
                  ("/diffaugment", ["gan.augment=[color,translation,cutout]"], ("alternating", "one_loss"))]
        if critic_bn:  # the fused step needs a critic without BatchNorm (and a fusable loss)
            groups.append(("/no_bn_d", ["model.d_batchnorm=false", "gan.loss=logistic"],
                           ("alternating", "one_loss", "one_loss_fused")))
        for tag, extra, steps in groups:
            for variant, over in variants(device, args):
                progress(f"gan/{name}{tag} ({variant}): {', '.join(steps)} interleaved")
                reset_peak(device)
                fns = {s: step_fn(config, [*size, *extra, f"gan.step={s}", *over], shape, batch, device)
                       for s in steps}
                for s, ms in interleaved_ms(fns, device, args.warmup, args.repeats).items():
                    rows.append(images_row(f"gan/{name}/b{batch}{tag}/{s}", variant, ms, batch, device))
    return rows


def timed(what: str, make_fn, device, args) -> float:
    """Median ms of the function make_fn() builds, announced, with the peak-memory counter reset first."""
    progress(what)
    reset_peak(device)
    return median_ms(make_fn(), device, args.warmup, args.repeats)


def score_rows(device, args):
    """The score network's training step, fp32 eager and with the fast paths."""
    name, config, shape, batch, _, ladder = SCORE_MODELS[args.sizes]
    return [images_row(f"ncsn/{name}/b{batch}", variant, batch=batch, device=device,
                       ms=timed(f"ncsn/{name} training ({variant})",
                                lambda: step_fn(config, [*ladder, *over], shape, batch, device), device, args))
            for variant, over in variants(device, args)]


def sampling_rows(device, args):
    """Network evaluations per second at the sampling batch, and that many samples with each sampler."""
    name, config, shape, _, n, ladder = SCORE_MODELS[args.sizes]
    rows = []
    for variant, over in variants(device, args):
        over = [o for o in over if o != "train.compile=true"]
        cfg = load_config(ROOT / "configs" / config, [*ladder, *over, f"device={device.type}"])
        torch.manual_seed(0)
        reset_peak(device)
        method = build(cfg, device, info=DataInfo(cfg.data.name, shape, 10))
        method.train(False)
        D = method.denoiser(ema=True)
        x = torch.randn(n, *shape, device=device)
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        sigma = torch.tensor(1.0, device=device)

        def evaluate():
            with torch.no_grad(), method.autocast():
                return D.score(x, sigma)

        if cfg.train.cuda_graph:
            evaluate = Graphed(evaluate)
        progress(f"sampling/{name} network evaluations at batch {n} ({variant})")
        ms = median_ms(evaluate, device, args.warmup, args.repeats)
        rows.append({"row": f"sampling/{name}/nfe_b{n}", "variant": variant, "ms": ms,
                     "nfe_per_s": 1e3 / ms, "images_nfe_per_s": n * 1e3 / ms, "peak_mib": peak_mib(device)})
        gen = torch.Generator(device=device)
        x0 = cfg.ncsn.sigma_max * torch.randn(n, *shape, device=device)
        samplers = {}  # each sampler as method.sample runs it, on the (EMA) denoiser
        for sampler_name, values in SAMPLERS[args.sizes].items():
            settings = Chosen("sampler", SamplerSettings).parse({"name": sampler_name, **values}, "sampler")
            sampler, schedule = lookup("sampler", sampler_name), method.schedule()
            samplers[sampler_name] = (settings.nfe(schedule), functools.partial(
                sampler, D, x0, settings, schedule, gen.manual_seed(0)))
        for sampler, (nfe, run) in samplers.items():
            progress(f"sampling/{name} {n} samples with {sampler}, {nfe} evaluations ({variant})")
            reset_peak(device)
            with torch.no_grad(), method.autocast():
                ms = median_ms(run, device, 0 if sampler == "langevin" else 1, 1 if sampler == "langevin" else 3)
            rows.append({"row": f"sampling/{name}/{sampler}_{n}", "variant": variant, "ms": ms, "nfe": nfe,
                         "seconds": ms / 1e3, "nfe_per_s": nfe * 1e3 / ms, "peak_mib": peak_mib(device)})
    return rows


def data_rows(device, args):
    shape, n, batch, workers = DATA_SIZES[args.sizes]
    data = TensorData(torch.randint(0, 256, (n, *shape), dtype=torch.uint8),
                      torch.zeros(n, dtype=torch.int64), DataInfo("synthetic", shape, 1))
    rows = []
    for loader in ("device", "workers"):
        cfg = DataConfig(name="cifar10", flip=True, loader=loader, num_workers=workers)

        def next_batch(cfg=cfg):
            stream = build_stream(data, cfg, batch, device, seed=0)
            return lambda: next(stream)

        ms = timed(f"data/{loader} at batch {batch}", next_batch, device, args)
        rows.append(images_row(f"data/{loader}/b{batch}", loader, ms, batch, device))
    jpegs = cifar_like_jpegs(batch)
    ms = timed(f"data/jpeg_decode: {batch} CIFAR-like 32 px JPEGs (image_folder's first read)",
               lambda: lambda: [decode(j, "RGB", 32) for j in jpegs], torch.device("cpu"), args)
    rows.append(images_row(f"data/jpeg_decode/b{batch}", "first read", ms, batch, torch.device("cpu")))
    return rows


def cifar_like_jpegs(n: int) -> list[bytes]:
    """n 32×32 colour JPEGs (quality 90, smooth content: upsampled 8×8 noise), the size of the shared
    CIFAR-10 copy's members (~900 bytes)."""
    import io
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        small = torch.randint(0, 256, (8, 8, 3), dtype=torch.uint8, generator=g).numpy()
        buf = io.BytesIO()
        Image.fromarray(small).resize((32, 32), Image.BILINEAR).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


SECTIONS = {"gan": gan_rows, "ncsn": score_rows, "sampling": sampling_rows, "data": data_rows}


def add_speedups(rows):
    """speedup = baseline ms / this row's ms, the baseline being the same row in fp32 eager (for GAN
    steps: the alternating fp32 eager step of the same model and critic)."""
    base = {r["row"]: r["ms"] for r in rows if r["variant"] == "fp32 eager"}
    for r in rows:
        ref_row = r["row"].rsplit("/", 1)[0] + "/alternating" if r["row"].startswith("gan/") else r["row"]
        if ref_row in base:
            r["speedup"] = base[ref_row] / r["ms"]
    return rows
