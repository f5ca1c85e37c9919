"""Train a model from a YAML config.

    python scripts/train.py --config configs/fashion_mnist_dcgan.yaml [--run-dir DIR] [key.sub=value ...]
    python scripts/train.py --run-dir runs/x --resume [train.steps=40000]
"""
import argparse
from pathlib import Path

import _bootstrap  # noqa: F401

from common.config import load_config, read_yaml, upgrade_saved
from common.errors import ArgumentParser, ConfigError, cli, did_you_mean
from engine import train


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (with --resume: the run's config.yaml unless given)")
    p.add_argument("--run-dir", help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run dir's checkpoints/last.pt")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr_d=4e-4 train.steps=1000")
    return p.parse_intermixed_args(argv)


def resume_config(run_dir: Path, config) -> dict:
    """The raw config a resumed run continues with: --config when given, else the run's own
    resolved config.yaml (not a since-edited file)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir {run_dir} is a file, not a run directory")
    if not run_dir.is_dir():
        siblings = [p.name for p in run_dir.parent.iterdir() if p.is_dir()] if run_dir.parent.is_dir() else []
        raise ConfigError(f"--run-dir {run_dir}: no such run directory{did_you_mean(run_dir.name, siblings)}"
                          f" (--resume continues an existing run)")
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise ConfigError(f"nothing to resume in {run_dir} (no checkpoints/last.pt): drop --resume "
                          f"to start a new run there")
    if config is None and not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} has no config.yaml: pass the run's config with --config PATH")
    if config is not None:
        return read_yaml(config)
    return upgrade_saved(read_yaml(run_dir / "config.yaml"))  # the run's own: as it was saved


@cli
def main(argv=None):
    args = parse_args(argv)
    if args.config is None and not (args.resume and args.run_dir):
        raise ConfigError("pass --config PATH (or --run-dir DIR --resume to continue a run)")
    run_dir = Path(args.run_dir or Path("runs") / Path(args.config).stem)
    raw = resume_config(run_dir, args.config) if args.resume else read_yaml(args.config)
    cfg = load_config(raw=raw, overrides=args.overrides)
    summary = train(cfg, run_dir, resume=args.resume)
    if not summary["main"]:
        return
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in summary["metrics"].items())
    print(f"done: step {summary['step']} in {summary['seconds']:.0f}s, {metrics}; run dir {run_dir}")


if __name__ == "__main__":
    main()
