"""Test-set bits/dim of a denoising model (dae, ncsn, ebm) by the probability-flow ODE, beside the
best per-pixel and full-covariance Gaussians of the training set.

    python scripts/likelihood.py --checkpoint runs/x/checkpoints/last.pt [--n 1000] [--json OUT]
    python scripts/likelihood.py --checkpoint ... --solver heun --steps 18 --probes 4
    python scripts/likelihood.py --checkpoint ... --exact-trace --n 100     # d VJPs per evaluation
    python scripts/likelihood.py --checkpoint runs/toy/checkpoints/last.pt --n 10000   # a 2-D mixture toy

--n images of the real test split (the first of a fixed random order of it) are dequantised
(x = 2(k + u)/256 − 1) and scored with bpd = −log p(x)/(d ln 2) + 7 (engine/evaluation/bits_per_dim.py);
the interval is mean ± 1.96·std/√n over the images. Prints one JSON object (also written to --json)
and adds eval/bpd and eval/bpd_ci95 at the checkpoint's step to the run's tb/. Trailing key=value
overrides change the checkpoint's config (e.g. data.root=...).

A run on a toy mixture (data.toy: 8gaussians) has a known density instead of a test split: --n fresh
points are drawn from it and scored with the exact trace (d = 2) in nats, beside the true density's
own average log p(x) and the gap KL(p ‖ model) (engine/evaluation/toy_likelihood.py).
"""
import argparse
import math

import _bootstrap  # noqa: F401
import torch

from common.checkpoint import load_checkpoint
from common.errors import ArgumentParser, ConfigError, UserError, cli
from common.paths import require_writable
from engine import TensorData, build_dataset, load_method, materialize
from engine.logging import add_to_run, report_json
from engine.evaluation.bits_per_dim import gaussian_bits_per_dim, model_bits_per_dim
from engine.evaluation.evaluate import held_out_images, test_split
from engine.evaluation.toy_likelihood import mixture_log_likelihood

NO_LIKELIHOOD = {"gan": "a GAN defines no density", "dde": "DDE's densities are unnormalised"}


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a denoising run's checkpoints/*.pt")
    p.add_argument("--n", type=int, default=1000, help="test images (the first n of a fixed random order of the split)")
    p.add_argument("--exact-trace", action="store_true", help="exact tr ∂D/∂x (d VJPs) instead of Hutchinson")
    p.add_argument("--probes", type=int, default=1, help="Hutchinson probes per image (≥ 2 adds their standard error)")
    p.add_argument("--probe", choices=("rademacher", "gaussian"), default="rademacher")
    p.add_argument("--solver", choices=("rk45", "heun"), default="rk45")
    p.add_argument("--steps", type=int, help="heun: EDM levels (default: the sampler's own levels)")
    p.add_argument("--rtol", type=float, default=1e-5, help="rk45 relative tolerance")
    p.add_argument("--atol", type=float, default=1e-5, help="rk45 absolute tolerance")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="dequantisation noise and probes")
    p.add_argument("--no-baselines", action="store_true", help="skip the two Gaussian baselines")
    p.add_argument("--real-path", help="image_folder data: the test folder or .zip")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not their EMA")
    p.add_argument("--json", help="also write the result to this file")
    p.add_argument("--device", default="auto")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. data.root=datasets")
    args = p.parse_intermixed_args(argv)
    for name in ("n", "probes", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if args.steps is not None and args.steps < 2:
        raise ConfigError("--steps must be at least 2 (Heun needs σ_min and σ_max)")
    for name in ("rtol", "atol"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"--{name} must be a finite positive number, got {value}")
    if args.json:
        require_writable(args.json, "--json")  # now, not after the integration
    return args


def split_images(cfg, n: int, real_path=None) -> tuple[torch.Tensor, str]:
    """n uint8 images of the test split of the run's data set (held_out_images: the first n of a fixed
    random order, which any n of a class-sorted image folder needs)."""
    dataset = test_split(cfg.data, real_path, "likelihood.py")
    if n > len(dataset):
        raise ConfigError(f"--n {n}: the test split holds only {len(dataset)} images")
    return held_out_images(dataset, n)[0], f"{cfg.data.name}/test"


def train_images(cfg) -> torch.Tensor:
    dataset = build_dataset(cfg.data, cfg.seed)
    if isinstance(dataset, TensorData):
        return dataset.data
    return materialize(dataset).data


@cli
def main(argv=None):
    args = parse_args(argv)
    method_name = load_checkpoint(args.checkpoint)["config"].get("method")
    if method_name in NO_LIKELIHOOD:
        raise UserError(f"{args.checkpoint} is a {method_name} checkpoint: no tractable likelihood "
                        f"({NO_LIKELIHOOD[method_name]}); use a denoising model (dae, ncsn or ebm)")
    method, ckpt = load_method(args.checkpoint, args.device, args.overrides)
    if method.cfg.data.name == "toy":
        return finish(args, ckpt, toy_result(method, ckpt, args))
    images, split = split_images(method.cfg, args.n, args.real_path)
    train = None if args.no_baselines else train_images(method.cfg)  # every input read before the integration
    seeded = lambda: torch.Generator().manual_seed(args.seed)
    result = {"checkpoint": str(args.checkpoint), "step": ckpt["step"], "method": method_name, "data": split,
              "model": model_bits_per_dim(method, images, solver=args.solver, steps=args.steps, rtol=args.rtol,
                                          atol=args.atol, exact_trace=args.exact_trace, probes=args.probes,
                                          probe=args.probe, batch_size=args.batch_size, ema=not args.no_ema,
                                          generator=seeded(), progress=True)}
    if train is not None:
        for key, full in (("gaussian_diagonal", False), ("gaussian_full", True)):
            result[key] = gaussian_bits_per_dim(train, images, full, seeded())
    finish(args, ckpt, result)


def toy_result(method, ckpt, args) -> dict:
    """A toy mixture's run: average log p(x) in nats of fresh points, the model's against the truth."""
    scores = mixture_log_likelihood(method, args.n, args.seed, solver=args.solver, steps=args.steps,
                                    rtol=args.rtol, atol=args.atol, batch_size=args.batch_size,
                                    ema=not args.no_ema, progress=True)
    return {"checkpoint": str(args.checkpoint), "step": ckpt["step"], "method": method.cfg.method,
            "data": f"toy/{method.cfg.data.toy}", **scores}


def finish(args, ckpt, result: dict):
    """Log to the run's TensorBoard (images: eval/bpd; toys: eval/nats), print and write the JSON."""
    model = result["model"]
    key = "bpd" if "bpd" in model else "nats"
    scalars = {f"eval/{key}": model[key], **({f"eval/{key}_ci95": model["ci95"]} if model["ci95"] is not None else {})}
    tb = add_to_run(args.checkpoint, ckpt["step"], scalars)
    result["tensorboard"] = str(tb) if tb else None
    report_json(result, args.json, allow_nan=True)


if __name__ == "__main__":
    main()
