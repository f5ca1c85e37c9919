"""FID, KID, Inception Score, precision and recall of a checkpoint's samples (EMA weights).

    python scripts/evaluate.py --checkpoint runs/x/checkpoints/last.pt [--features inception] [--n 10000]
    python scripts/evaluate.py --checkpoint ... --features classifier:classifiers/fashion_mnist.pt --json out.json
    python scripts/evaluate.py --real --checkpoint ...      # the floor: the real test split, not samples
    python scripts/evaluate.py --real --config configs/fashion_mnist_dcgan_cpu.yaml --features classifier:c.pt
    python scripts/evaluate.py --checkpoint ... ncsn.sampler=edm ncsn.sampler.steps=10   # under another sampler

The reference is the data set the model was trained on (the checkpoint's data config: all its
images, statistics cached per data set and extractor). Prints one JSON object, writes it to --json,
and adds eval/<extractor>/<metric> scalars at the checkpoint's step to the run's tb/ directory.
Trailing key=value overrides change how a checkpoint samples (its sampler and the sampler's
settings, as for sample.py); scores under overrides are not added to TensorBoard, whose curves hold
the run's own sampler.
"""
import argparse
import math
import time
from pathlib import Path

import _bootstrap  # noqa: F401
from tqdm import tqdm

from common.config import load_config
from common.errors import ArgumentParser, ConfigError, UserError, cli
from common.paths import require_writable
from common.schema import check_seed
from engine import build_dataset, load_method, resolve_device
from engine.logging import add_to_run, report_json
from engine.evaluation.evaluate import METRICS, generated_batches, real_batches, score
from engine.evaluation.features import build_extractor, require_fits
from engine.evaluation.reference import reference_stats

DEFAULT_N = 10_000


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a run's checkpoints/*.pt")
    p.add_argument("--config", help="with --real and no checkpoint: the config whose data to use")
    p.add_argument("--features", help="inception | classifier:PATH (default: the run's eval.features)")
    p.add_argument("--n", type=int, help=f"samples to draw (default {DEFAULT_N}; --real: the whole test split)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0, help="latents, and KID/IS subsets")
    p.add_argument("--json", help="also write the result to this file")
    p.add_argument("--real", action="store_true", help="score the real test split instead of samples")
    p.add_argument("--real-path", help="--real with image_folder data: the test folder or .zip")
    p.add_argument("--no-ema", action="store_true", help="sample with the raw weights")
    p.add_argument("--download", action="store_true", help="let torch-fidelity fetch the Inception weights")
    p.add_argument("--stats-dir", help="reference statistics cache (default $GENMODELS_CACHE/stats)")
    p.add_argument("--device", default="auto")
    p.add_argument("overrides", nargs="*", help="dotted overrides: a checkpoint's sampler (ncsn.sampler=edm), or "
                                                "--config's settings (data.root=datasets)")
    args = p.parse_args(argv)
    if (args.checkpoint is None) == (args.config is None) or (args.config and not args.real):
        raise ConfigError("pass --checkpoint CKPT (or --real --config PATH to score the real test split)")
    if args.n is not None and args.n < 2 or args.batch_size <= 0:
        raise ConfigError("--n must be at least 2 and --batch-size positive")
    check_seed(args.seed, "--seed")
    if args.json:
        require_writable(args.json, "--json")
    if args.stats_dir:
        require_writable(args.stats_dir, "--stats-dir", folder=True)
    return args


def require_finite(result: dict):
    """NaN is no score (and not JSON): a diverged checkpoint or classifier gives it."""
    bad = [k for k in METRICS if not math.isfinite(result[k])]
    if bad:
        raise UserError(f"{', '.join(f'{k}={result[k]}' for k in bad)}: the samples or their features are "
                        f"not finite (a diverged checkpoint or classifier?); nothing was written")


@cli
def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    method = ckpt = None
    if args.checkpoint:
        method, ckpt = load_method(args.checkpoint, args.device, args.overrides)
        cfg = method.cfg
    else:
        cfg = load_config(args.config, args.overrides)
    features = args.features or cfg.eval.features
    extractor = build_extractor(features, device, args.download or cfg.eval.download)
    require_fits(extractor, cfg.data.name, "--features" if args.features else "eval.features")
    start = time.monotonic()
    dataset = build_dataset(cfg.data, cfg.seed)
    reference = reference_stats(dataset, cfg.data, extractor, device, args.batch_size,
                                Path(args.stats_dir) if args.stats_dir else None)
    if args.real:
        batches, samples = real_batches(cfg.data, args.n, args.batch_size, args.real_path)
    else:
        batches = generated_batches(method, args.n or DEFAULT_N, args.batch_size, args.seed, not args.no_ema)
        samples = f"{cfg.method} step {ckpt['step']} ({'raw' if args.no_ema else 'EMA'} weights)"
    n = args.n or (DEFAULT_N if not args.real else None)
    total = math.ceil(n / args.batch_size) if n else None
    batches = tqdm(batches, total=total, desc="sampling and features" if not args.real else "features",
                   unit="batch")
    result = {"samples": samples, "reference": reference.name, "features": features,
              **score(batches, extractor, reference, device, seed=args.seed),
              "seconds": round(time.monotonic() - start, 1)}
    require_finite(result)
    if args.checkpoint:
        result.update(checkpoint=str(args.checkpoint), step=ckpt["step"], overrides=args.overrides)
    if args.checkpoint and not args.real and not args.overrides:
        # eval/<extractor>/<metric>: scores in different features never share a chart
        tb = add_to_run(args.checkpoint, ckpt["step"], {f"eval/{extractor.id}/{k}": result[k] for k in METRICS})
        result["tensorboard"] = str(tb) if tb else None
    report_json(result, args.json)


if __name__ == "__main__":
    main()
