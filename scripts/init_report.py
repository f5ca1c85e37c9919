"""What a config's initialisation does to signal norms, per network, before any training.

    python scripts/init_report.py --config configs/fashion_mnist_dcgan.yaml [init.D.scheme=orthogonal ...]

Prints, per layer, the gain ‖Wx‖/‖x‖ on random inputs and the distance from orthogonality
(RMS entry of WᵀW − I), then the RMS of every layer's output on a random batch.
"""
import argparse

import _bootstrap  # noqa: F401
import torch

from common.config import load_config
from common.errors import ArgumentParser, ConfigError, cli
from common.init import activation_profile, layer_report
from engine import DataInfo, build, seed_everything


def parse_shape(text: str, points: bool) -> tuple[int, ...]:
    """`--shape 1,32,32` (images: C,H,W) or `--shape 2` (toy points: D), positive integers."""
    want = "D (toy points, e.g. 2)" if points else "C,H,W (e.g. 1,32,32)"
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ConfigError(f"--shape: expected {want}, got {text!r}") from None
    if len(shape) != (1 if points else 3) or min(shape) <= 0:
        raise ConfigError(f"--shape: expected {want} with positive sizes, got {text!r}")
    return shape


@cli
def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--shape", help="data shape, e.g. 1,32,32 (default: from data.image_size)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_intermixed_args(argv)
    cfg = load_config(args.config, [*args.overrides, "device=cpu"])
    if args.shape:
        shape = parse_shape(args.shape, points=cfg.data.name == "toy")
    elif cfg.data.name == "toy":
        shape = (2,)
    else:
        channels = 1 if cfg.data.name == "fashion_mnist" or cfg.data.channels == 1 else 3
        shape = (channels, cfg.data.image_size or 32, cfg.data.image_size or 32)
    seed_everything(cfg.seed)
    info = DataInfo(cfg.data.name, shape, 10, "points" if len(shape) == 1 else "image")
    try:
        method = build(cfg, "cpu", info=info)
    except ConfigError as e:
        raise ConfigError(f"--shape {args.shape}: {e}" if args.shape else str(e)) from None
    for name, net in method.nets.items():
        scheme = cfg.init[name].scheme if name in cfg.init else "default"
        print(f"\n== {name} ({scheme}) ==")
        print(f"{'layer':<32} {'weight':>14} {'gain':>8} {'orth.err':>9}")
        for r in layer_report(net, generator=torch.Generator().manual_seed(0)):
            print(f"{r['layer']:<32} {'x'.join(map(str, r['shape'])):>14} {r['gain']:8.3f} "
                  f"{r['orthogonality_error']:9.4f}")
        print(f"{'output of':<32} {'rms':>14}")
        with torch.no_grad():
            for r in activation_profile(net, *method.example_inputs(name, 64)):
                print(f"{r['layer']:<32} {r['rms']:14.4g}")


if __name__ == "__main__":
    main()
