"""FID, KID, Inception Score, precision and recall of a checkpoint's samples (EMA weights).

    python scripts/evaluate.py --checkpoint runs/x/checkpoints/last.pt [--features inception] [--n 10000]
    python scripts/evaluate.py --checkpoint ... --features classifier:classifiers/fashion_mnist.pt --json out.json
    python scripts/evaluate.py --real --checkpoint ...      # the floor: the real test split, not samples
    python scripts/evaluate.py --real --config configs/fashion_mnist_dcgan_cpu.yaml --features classifier:c.pt
    python scripts/evaluate.py --checkpoint ... ncsn.sampler=edm ncsn.sampler.steps=10   # under another sampler
    python scripts/evaluate.py --checkpoint ... dae.guidance=2          # a class-conditional model, guided
    python scripts/evaluate.py --checkpoint ... --inpaint right --n 500 # inpainting of the test split
    python scripts/evaluate.py --checkpoint ... --denoising-error       # the denoiser's error per σ

The reference is the data set the model was trained on (the checkpoint's data config: all its
images, statistics cached per data set and extractor). Prints one JSON object, writes it to --json,
and adds eval/<extractor>/<metric> scalars at the checkpoint's step to the run's tb/ directory.
Trailing key=value overrides change how a checkpoint samples (its sampler and the sampler's
settings, or precision=fp32 for a bf16 run's denoising net, as for sample.py); scores under
overrides are not added to TensorBoard, whose curves hold the run's own sampler.

A class-conditional model draws its samples with balanced classes and is also scored per class:
conditional accuracy (the agreement of a classifier of this data set, --features classifier:PATH,
with the requested class) and FID and KID per class, against the reference's images of that class.
--inpaint MASK scores a denoising model's completion of --n test images instead (denoising/guidance.py
masks): the PSNR of the missing pixels beside the mean-fill and nearest-training-image baselines, and
with a classifier, how often the completion keeps the original's class; --draws k completes each image
k times and adds the PSNR of the k completions' mean (engine/evaluation/inpainting.py says why).
--denoising-error measures a denoising model's D instead, at 10 levels log-spaced over its σ range, on
--n test images: its squared error per pixel beside the exact denoiser of the diagonal Gaussian fitted
to the training images, and their ratio (above 1: a level training did not reach;
engine/evaluation/denoising_error.py).
"""
import argparse
import math
import time
from pathlib import Path

import _bootstrap  # noqa: F401
import torch
from tqdm import tqdm

from common.config import load_config
from common.errors import ArgumentParser, ConfigError, UserError, cli
from common.paths import require_writable
from common.schema import check_seed
from engine import build_dataset, from_unit_range, load_method, mask, resolve_device, to_unit_range
from engine.logging import add_to_run, report_json
from engine.evaluation.evaluate import (METRICS, balanced_labels, class_reference, generated_batches,
                                       held_out_images, real_batches, score, test_split)
from engine.evaluation.denoising_error import denoising_errors, log_levels, pixel_moments
from engine.evaluation.inpainting import complete, inpainting_scores, require_denoiser
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
    p.add_argument("--inpaint", metavar="MASK", help="score inpainting of the test split with this mask instead")
    p.add_argument("--draws", type=int, default=1, help="--inpaint: completions per image; with k > 1 also the "
                   "PSNR of their mean (the conditional mean's estimate)")
    p.add_argument("--denoising-error", action="store_true",
                   help="the denoiser's error per noise level on the test split instead, beside a diagonal Gaussian's")
    p.add_argument("--device", default="auto")
    p.add_argument("overrides", nargs="*", help="dotted overrides: a checkpoint's sampler (ncsn.sampler=edm), or "
                                                "--config's settings (data.root=datasets)")
    args = p.parse_args(argv)
    if (args.checkpoint is None) == (args.config is None) or (args.config and not args.real):
        raise ConfigError("pass --checkpoint CKPT (or --real --config PATH to score the real test split)")
    if args.n is not None and args.n < 2 or args.batch_size <= 0:
        raise ConfigError("--n must be at least 2 and --batch-size positive")
    if args.draws < 1 or (args.draws > 1 and args.inpaint is None):
        raise ConfigError(f"--draws {args.draws}: give a count of at least 1, and more than 1 only with --inpaint")
    check_seed(args.seed, "--seed")
    if args.json:
        require_writable(args.json, "--json")
    if args.stats_dir:
        require_writable(args.stats_dir, "--stats-dir", folder=True)
    if args.inpaint is not None:
        if args.real or not args.checkpoint:
            raise ConfigError("--inpaint scores a checkpoint's completions: pass --checkpoint and drop --real")
        mask(args.inpaint, (1, 1, 4, 4))  # the name checked before anything loads
    if args.denoising_error and (args.real or not args.checkpoint or args.inpaint):
        raise ConfigError("--denoising-error measures a checkpoint's denoiser: pass --checkpoint, without --real "
                          "or --inpaint")
    return args


def splits_in_memory(method, args, what: str):
    """(test, train) splits of a denoising checkpoint's data for `what` (--inpaint, --denoising-error),
    which reads both whole: one line unless the method has a denoiser and the data set is held in memory."""
    require_denoiser(method, what)
    test, train = test_split(method.cfg.data, args.real_path, what), build_dataset(method.cfg.data)
    if not (hasattr(test, "data") and hasattr(train, "data")):
        raise ConfigError(f"{what} needs a data set held in memory (fashion_mnist, cifar10, image_folder)")
    return test, train


def inpainting(method, extractor, args, device) -> dict:
    """--inpaint: the checkpoint's completions (--draws of each) of --n test images (held_out_images), scored."""
    test, train = splits_in_memory(method, args, "--inpaint")
    images, labels = held_out_images(test, min(args.n or 500, len(test)))
    images = to_unit_range(images)
    known = mask(args.inpaint, tuple(images.shape), torch.Generator().manual_seed(args.seed))
    gen = torch.Generator(device=method.device).manual_seed(args.seed)
    completed = complete(method, images, known, args.batch_size, gen, not args.no_ema,
                         labels if method.num_classes else None, bar=True, draws=args.draws)
    is_classifier = getattr(extractor, "num_classes", None) == method.info.num_classes
    classify = (lambda x: extractor(from_unit_range(x).to(device))[1]) if is_classifier else None
    with torch.no_grad():
        return inpainting_scores(completed, images, labels, known, train.data, classify)


def denoising_error(method, args, device) -> dict:
    """--denoising-error: the denoiser's error at 10 levels over its σ range on --n test images
    (held_out_images), beside the diagonal Gaussian of the training images."""
    test, train = splits_in_memory(method, args, "--denoising-error")
    images = to_unit_range(held_out_images(test, min(args.n or 1000, len(test)))[0])
    low, high = method.sigmas.min().item(), method.sigmas.max().item()
    levels = log_levels(low, high, 10) if high > low else [high]
    gen = torch.Generator().manual_seed(args.seed)
    rows = denoising_errors(method.denoiser(ema=not args.no_ema), images, levels, *pixel_moments(train.data),
                            args.batch_size, gen, device)
    return {"n": len(images), "denoising_error": rows}


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
    if args.denoising_error:
        weights = "raw" if args.no_ema else "EMA"
        report_json({"samples": f"{cfg.method} step {ckpt['step']} denoiser ({weights} weights)",
                     **denoising_error(method, args, device), "checkpoint": str(args.checkpoint),
                     "step": ckpt["step"]}, args.json)
        return
    features = args.features or cfg.eval.features
    extractor = build_extractor(features, device, args.download or cfg.eval.download)
    start = time.monotonic()
    dataset = build_dataset(cfg.data, cfg.seed)
    require_fits(extractor, dataset.info, "--features" if args.features else "eval.features")
    reference = reference_stats(dataset, cfg.data, extractor, device, args.batch_size,
                                Path(args.stats_dir) if args.stats_dir else None)
    if args.inpaint:
        result = {"samples": f"{cfg.method} step {ckpt['step']} inpainting, mask {args.inpaint}",
                  "features": features, **inpainting(method, extractor, args, device),
                  "seconds": round(time.monotonic() - start, 1), "checkpoint": str(args.checkpoint),
                  "step": ckpt["step"], "overrides": args.overrides}
        report_json(result, args.json)
        return
    labels = classes = nfe = None
    if args.real:
        batches, samples = real_batches(cfg.data, args.n, args.batch_size, args.real_path)
    else:
        if method.num_classes:  # balanced classes, scored per class too
            labels = balanced_labels(args.n or DEFAULT_N, method.num_classes)
            classes = class_reference(dataset, extractor, device, args.batch_size)
        batches = generated_batches(method, args.n or DEFAULT_N, args.batch_size, args.seed, not args.no_ema,
                                    labels)
        samples = f"{cfg.method} step {ckpt['step']} ({'raw' if args.no_ema else 'EMA'} weights)"
        nfe = method.evaluations_per_sample()  # a net trained on a ladder steps on all its levels
    n = args.n or (DEFAULT_N if not args.real else None)
    total = math.ceil(n / args.batch_size) if n else None
    batches = tqdm(batches, total=total, desc="sampling and features" if not args.real else "features",
                   unit="batch")
    result = {"samples": samples, "reference": reference.name, "features": features,
              **score(batches, extractor, reference, device, seed=args.seed, labels=labels, classes=classes),
              "seconds": round(time.monotonic() - start, 1)}
    require_finite(result)
    if args.checkpoint:
        result.update(checkpoint=str(args.checkpoint), step=ckpt["step"], overrides=args.overrides)
    if nfe is not None:
        result["evaluations_per_sample"] = nfe
    if args.checkpoint and not args.real and not args.overrides:
        # eval/<extractor>/<metric>: scores in different features never share a chart
        tb = add_to_run(args.checkpoint, ckpt["step"], {f"eval/{extractor.id}/{k}": result[k] for k in METRICS})
        result["tensorboard"] = str(tb) if tb else None
    report_json(result, args.json)


if __name__ == "__main__":
    main()
