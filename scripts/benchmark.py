"""Speed and memory of the training steps, the samplers and the data pipeline (in-memory stream, DataLoader
workers, and the JPEG decoding of an image folder's first read).

    python scripts/benchmark.py [--sizes cpu|gpu|tiny] [--json OUT] [--compile] [--repeats 50] [--only gan,ncsn,...]

Sizes default to the device: on a GPU the paper-sized rows (the seed's DCGAN at 64 px batch 64 with
BatchNorm in D, the SN-ResNet at 32 px batch 128, NCSNv2 at 32 px batch 128, sampling at batch 1000);
on a CPU the rows of the CPU configs (the 28 px DCGAN of configs/fashion_mnist_dcgan_cpu.yaml at
batch 64, the U-Net of configs/fashion_mnist_ncsn_cpu.yaml); `--sizes gpu` forces the large rows
anywhere, `--sizes tiny` is a smoke test, not a measurement (49 s on 2 CPU cores with `--repeats 2
--warmup 1`, as tests/test_benchmark.py runs it; longer with the default repeats).

Every row is timed after warm-up, with the device synchronised, as the median of many repeats (CUDA
events on a GPU), in the fp32 eager baseline and with the fast paths on (bf16 autocast, fused Adam
and, on CUDA, channels_last and the whole step captured as one CUDA graph; --compile adds
torch.compile, in place of channels_last). The GAN trainers of one model are timed interleaved, step
by step, so that they share the machine's state: alternating, one-loss and the bracket form with the
config's critic, and alternating, one-loss and the fused step with a critic without BatchNorm
(logistic loss). Their speedup is against the alternating fp32 eager step of the same critic.
"""
from __future__ import annotations

import argparse
import json

import _bootstrap  # noqa: F401
import torch

from common.errors import ArgumentParser, ConfigError, cli
from common.paths import require_writable, write_text_atomic
from engine import resolve_device
from engine.benchmark import SECTIONS, add_speedups, progress


def print_table(rows):
    print(f"{'row':<42} {'variant':<11} {'ms':>9} {'img/s':>10} {'nfe/s':>9} {'peak MiB':>9} {'speedup':>8}")
    for r in rows:
        fmt = lambda k, f: (f.format(r[k]) if r.get(k) is not None else "-")  # noqa: E731
        print(f"{r['row']:<42} {r['variant']:<11} {r['ms']:9.3f} {fmt('images_per_s', '{:10.0f}'):>10} "
              f"{fmt('nfe_per_s', '{:9.1f}'):>9} {fmt('peak_mib', '{:9.0f}'):>9} {fmt('speedup', '{:7.2f}x'):>8}")


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", choices=("cpu", "gpu", "tiny"),
                   help="row sizes (default: gpu on a CUDA device, cpu elsewhere)")
    p.add_argument("--tiny", action="store_true", help="the same as --sizes tiny")
    p.add_argument("--json", help="also write the rows as JSON here")
    p.add_argument("--compile", action="store_true", help="add torch.compile to the fast path")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--only", default=",".join(SECTIONS), help=f"sections: {','.join(SECTIONS)}")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        raise ConfigError("--repeats must be at least 1 and --warmup at least 0")
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.only if s not in SECTIONS]
    if unknown or not args.only:
        raise ConfigError(f"--only: unknown section {unknown[0] if unknown else '(none)'!r}; "
                          f"choose from {','.join(SECTIONS)}")
    if args.device != "auto" and args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise ConfigError(f"--device: must be auto, cpu, cuda or cuda:N, got {args.device!r}")
    if args.json:
        require_writable(args.json, "--json")
    return args


@cli
def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    args.sizes = "tiny" if args.tiny else args.sizes or ("gpu" if device.type == "cuda" else "cpu")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    progress(f"benchmark: {args.sizes} sizes on {where}; sections {','.join(args.only)}"
             + ("" if args.sizes == "gpu" else " (--sizes gpu for the paper-sized rows)"))
    rows = []
    for section in args.only:
        rows += SECTIONS[section](device, args)
    rows = add_speedups(rows)
    meta = {"device": where, "torch": torch.__version__, "sizes": args.sizes, "compile": args.compile,
            "repeats": args.repeats, "warmup": args.warmup}
    print_table(rows)
    if args.json:
        write_text_atomic(args.json, json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
