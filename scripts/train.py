"""Train a model from a YAML config.

    python scripts/train.py --config configs/fashion_mnist_dcgan.yaml [--run-dir DIR] [key.sub=value ...]
    python scripts/train.py --run-dir runs/x --resume [train.steps=40000]
"""
import argparse
from pathlib import Path

import _bootstrap  # noqa: F401

from common.config import load_config, read_yaml
from common.errors import ConfigError, cli
from common.loop import train


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (with --resume: defaults to the run's config.yaml)")
    p.add_argument("--run-dir", help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run dir's checkpoints/last.pt")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr_d=4e-4 train.steps=1000")
    return p.parse_intermixed_args(argv)


@cli
def main(argv=None):
    args = parse_args(argv)
    if args.config is None and not (args.resume and args.run_dir):
        raise ConfigError("pass --config PATH (or --run-dir DIR --resume to continue a run)")
    run_dir = Path(args.run_dir or Path("runs") / Path(args.config).stem)
    if args.resume and (run_dir / "config.yaml").is_file():
        raw = read_yaml(run_dir / "config.yaml")  # the run's resolved config, not a since-edited file
    else:
        raw = read_yaml(args.config)
    cfg = load_config(raw=raw, overrides=args.overrides)
    summary = train(cfg, run_dir, resume=args.resume)
    if not summary["main"]:
        return
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in summary["metrics"].items())
    print(f"done: step {summary['step']} in {summary['seconds']:.0f}s, {metrics}; run dir {run_dir}")


if __name__ == "__main__":
    main()
