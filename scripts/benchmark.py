"""Speed and memory of the training steps, the samplers and the data pipeline.

    python scripts/benchmark.py [--json OUT] [--tiny] [--compile] [--repeats 50] [--only gan,ncsn,...]

Every row is timed after warm-up, with the device synchronised, as the median of many repeats (CUDA
events on a GPU), in the fp32 eager baseline and with the fast paths on (bf16 autocast,
channels_last, fused Adam, the whole step captured as one CUDA graph; --compile adds torch.compile).
Rows: GAN steps (one-loss vs alternating, the seed's DCGAN at 64 px batch 64 with BatchNorm in D, and
the SN-ResNet at 32 px batch 128), NCSNv2 training at 32 px batch 128, sampling (network evaluations
per second at batch 1000; wall time for 1,000 samples with annealed Langevin and with Heun), the
data streams (device-resident and DataLoader), and peak GPU memory. --tiny shrinks every size for a
CPU smoke test.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import _bootstrap  # noqa: F401
import torch

from common.config import DataConfig, load_config
from common.errors import cli
from common.graphs import Graphed, GraphedStep
from common.loop import build
from data import DataInfo, TensorData, build_stream
from denoising.samplers import annealed_langevin, heun

ROOT = Path(__file__).resolve().parents[1]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device, warmup: int, repeats: int) -> float:
    """Median wall time of fn() in ms: warm-up calls first, then each call timed between synced
    CUDA events (host clock on CPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def peak_mib(device):
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def fast_overrides(device, compile_: bool) -> list[str]:
    fast = ["precision=bf16", "train.channels_last=true", "optim.fused=true"]
    if device.type == "cuda":
        fast.append("train.cuda_graph=true")
    if compile_:
        fast.append("train.compile=true")
    return fast


def step_row(name, config, overrides, info, batch, device, args, extra=None):
    """Time one training step (with the EMA update, as in the loop) of a config on a fixed batch."""
    cfg = load_config(ROOT / "configs" / config, [*overrides, f"train.batch_size={batch}",
                                                   f"device={device.type}", "train.ema=0.999"])
    torch.manual_seed(0)
    reset_peak(device)
    method = build(cfg, device, info=info)
    x = torch.rand(batch * method.batches_per_step, *info.shape, device=device) * 2 - 1
    if cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def train_step(batch_x):
        stats = method.training_step(batch_x)
        method.update_ema()
        return stats

    step = GraphedStep(train_step) if cfg.train.cuda_graph else train_step
    ms = median_ms(lambda: step(x), device, args.warmup, args.repeats)
    return {"row": name, "variant": extra or "", "ms": ms, "images_per_s": batch * 1e3 / ms,
            "peak_mib": peak_mib(device)}


def gan_rows(device, args):
    t = args.tiny
    rows = []
    seeds = [("gan/dcgan64", "celeba64_dcgan.yaml", DataInfo("celeba", (3, 32 if t else 64, 32 if t else 64), 0),
              8 if t else 64, ["model.g_width=8", "model.d_width=8"] if t else []),
             ("gan/sngan32", "cifar10_sngan.yaml", DataInfo("cifar10", (3, 32, 32), 10), 8 if t else 128,
              (["model.g_width=16", "model.d_width=16"] if t else []) + ["gan.n_critic=1"])]
    for name, config, info, batch, size in seeds:
        for step in ("alternating", "one_loss"):
            for variant, over in (("fp32 eager", []), ("fast", fast_overrides(device, args.compile))):
                rows.append(step_row(f"{name}/b{batch}/{step}", config, [*size, f"gan.step={step}", *over],
                                     info, batch, device, args, variant))
    return rows


def ncsn_overrides(tiny):
    """CIFAR-10 NCSNv2 with its ladder fixed (no data needed): 232 levels × 5 Langevin steps."""
    if tiny:
        return ["ncsn.sigma_max=100", "ncsn.num_scales=4", "ncsn.langevin_steps=2", "ncsn.step_lr=2.5e-5",
                "ncsn.heun_steps=4", "model.width=8"]
    return ["ncsn.sigma_max=100", "ncsn.num_scales=232", "ncsn.step_lr=2.5e-5"]


def ncsn_rows(device, args):
    batch = 4 if args.tiny else 128
    info = DataInfo("cifar10", (3, 32, 32), 10)
    return [step_row(f"ncsn/ncsnv2_32/b{batch}", "cifar10_ncsn.yaml", [*ncsn_overrides(args.tiny), *over],
                     info, batch, device, args, variant)
            for variant, over in (("fp32 eager", []), ("fast", fast_overrides(device, args.compile)))]


def sampling_rows(device, args):
    """Network evaluations per second at batch 1000, and 1,000 samples with each sampler."""
    n = 16 if args.tiny else 1000
    info = DataInfo("cifar10", (3, 32, 32), 10)
    rows = []
    for variant, over in (("fp32 eager", []), ("fast", fast_overrides(device, False))):
        cfg = load_config(ROOT / "configs/cifar10_ncsn.yaml", [*ncsn_overrides(args.tiny), *over, f"device={device.type}"])
        torch.manual_seed(0)
        reset_peak(device)
        method = build(cfg, device, info=info)
        method.train(False)
        D = method.denoiser(ema=True)
        x = torch.randn(n, 3, 32, 32, device=device)
        if cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        sigma = torch.tensor(1.0, device=device)

        def evaluate():
            with torch.no_grad(), method.autocast():
                return D.score(x, sigma)

        if cfg.train.cuda_graph:
            evaluate = Graphed(evaluate)
        ms = median_ms(evaluate, device, args.warmup, args.repeats)
        rows.append({"row": f"sampling/ncsnv2_32/nfe_b{n}", "variant": variant, "ms": ms,
                     "nfe_per_s": 1e3 / ms, "images_nfe_per_s": n * 1e3 / ms, "peak_mib": peak_mib(device)})
        s, gen, heun_sigmas = cfg.ncsn, torch.Generator(device=device), method.heun_sigmas()
        x0 = s.sigma_max * torch.randn(n, 3, 32, 32, device=device)
        samplers = {  # the pure sampler functions on the (EMA) denoiser, as method.sample runs them
            "langevin": (s.num_scales * s.langevin_steps + 1, lambda: annealed_langevin(
                D.score, x0, method.sigmas, s.langevin_steps, s.step_lr, True, gen.manual_seed(0),
                cfg.train.cuda_graph)),
            "heun": (2 * len(heun_sigmas) - 3, lambda: heun(D, x0, heun_sigmas))}
        for sampler, (nfe, run) in samplers.items():
            reset_peak(device)
            with torch.no_grad(), method.autocast():
                ms = median_ms(run, device, 0 if sampler == "langevin" else 1, 1 if sampler == "langevin" else 3)
            rows.append({"row": f"sampling/ncsnv2_32/{sampler}_{n}", "variant": variant, "ms": ms, "nfe": nfe,
                         "seconds": ms / 1e3, "nfe_per_s": nfe * 1e3 / ms, "peak_mib": peak_mib(device)})
    return rows


def data_rows(device, args):
    n, batch = (2048, 64) if args.tiny else (50_000, 128)
    data = TensorData(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8),
                      torch.zeros(n, dtype=torch.int64), DataInfo("synthetic", (3, 32, 32), 1))
    rows = []
    for loader in ("device", "workers"):
        cfg = DataConfig(name="cifar10", flip=True, loader=loader, num_workers=0 if args.tiny else 8)
        reset_peak(device)
        stream = build_stream(data, cfg, batch, device, seed=0)
        ms = median_ms(lambda: next(stream), device, args.warmup, args.repeats)
        rows.append({"row": f"data/{loader}/b{batch}", "variant": loader, "ms": ms,
                     "images_per_s": batch * 1e3 / ms, "peak_mib": peak_mib(device)})
    return rows


SECTIONS = {"gan": gan_rows, "ncsn": ncsn_rows, "sampling": sampling_rows, "data": data_rows}


def add_speedups(rows):
    """speedup = baseline ms / this row's ms, the baseline being the same row in fp32 eager (for GAN
    steps: the alternating fp32 eager step of the same model, the issue's reference)."""
    base = {}
    for r in rows:
        if r["variant"] == "fp32 eager":
            base[r["row"]] = r["ms"]
    for r in rows:
        ref_row = r["row"].rsplit("/", 1)[0] + "/alternating" if r["row"].startswith("gan/") else r["row"]
        if ref_row in base:
            r["speedup"] = base[ref_row] / r["ms"]
    return rows


def print_table(rows):
    print(f"{'row':<38} {'variant':<11} {'ms':>9} {'img/s':>10} {'nfe/s':>9} {'peak MiB':>9} {'speedup':>8}")
    for r in rows:
        fmt = lambda k, f: (f.format(r[k]) if r.get(k) is not None else "-")  # noqa: E731
        print(f"{r['row']:<38} {r['variant']:<11} {r['ms']:9.3f} {fmt('images_per_s', '{:10.0f}'):>10} "
              f"{fmt('nfe_per_s', '{:9.1f}'):>9} {fmt('peak_mib', '{:9.0f}'):>9} {fmt('speedup', '{:7.2f}x'):>8}")


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="also write the rows as JSON here")
    p.add_argument("--tiny", action="store_true", help="tiny sizes: a smoke test that runs on a CPU")
    p.add_argument("--compile", action="store_true", help="add torch.compile to the fast path")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--only", default=",".join(SECTIONS), help=f"sections: {','.join(SECTIONS)}")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    rows = []
    for section in args.only.split(","):
        rows += SECTIONS[section](device, args)
    rows = add_speedups(rows)
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "tiny": args.tiny, "compile": args.compile, "repeats": args.repeats}
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
