"""Draw a sample grid from a checkpoint (EMA weights unless --no-ema).

    python scripts/sample.py --checkpoint runs/x/checkpoints/last.pt --out grid.png [--n 64] [--seed 0]
    python scripts/sample.py --checkpoint ... --out interp.png --interpolate 8   # latent interpolation rows
    python scripts/sample.py --checkpoint ... --out edm.png ncsn.sampler=edm ncsn.sampler.steps=25 ncsn.sampler.churn=10

Trailing key=value overrides change the checkpoint's config for sampling (e.g. the sampler).
"""
import argparse
import sys

import _bootstrap  # noqa: F401
import torch

from common.errors import ArgumentParser, ConfigError, cli
from common.schema import check_seed
from engine import load_method
from engine.images import require_image_path, save_grid


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latent batches (Gaussian latents live near a sphere)."""
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((an * bn).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def interpolation_latents(method, rows: int, cols: int, generator) -> torch.Tensor:
    ends = method.sample_latents(2 * rows, generator)
    a, b = ends[:rows], ends[rows:]
    t = torch.linspace(0, 1, cols, device=a.device).view(1, cols, *([1] * (a.dim() - 1)))
    return slerp(a[:, None], b[:, None], t).reshape(rows * cols, *a.shape[1:])


MAX_N = 10_000  # one grid; more is unreadable and may not fit in memory


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="image file to write (.png, .jpg, ...)")
    p.add_argument("--n", type=int, default=64, help=f"number of samples (at most {MAX_N})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not their EMA")
    p.add_argument("--interpolate", type=int, metavar="COLS",
                   help="rows of COLS latent interpolations (--n // COLS rows)")
    p.add_argument("--device", default="auto")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. ncsn.sampler=heun")
    args = p.parse_intermixed_args(argv)
    if not 0 < args.n <= MAX_N:
        raise ConfigError(f"--n: must be in 1..{MAX_N} (one grid), got {args.n}; draw several grids with "
                          f"different --seed")
    check_seed(args.seed, "--seed")
    if args.interpolate is not None:
        if args.interpolate < 2:
            raise ConfigError(f"--interpolate: needs at least 2 columns (the two end points), got {args.interpolate}")
        if args.n < args.interpolate:
            raise ConfigError(f"--interpolate {args.interpolate} draws rows of {args.interpolate} samples: "
                              f"pass --n {args.interpolate} or more (got --n {args.n})")
    require_image_path(args.out, "--out")
    return args


@cli
def main(argv=None):
    args = parse_args(argv)
    method, ckpt = load_method(args.checkpoint, args.device, args.overrides)
    gen = torch.Generator(device=method.device).manual_seed(args.seed)
    latents, nrow = None, None
    if args.interpolate:
        rows = args.n // args.interpolate
        if rows * args.interpolate != args.n:
            print(f"note: --n {args.n} with --interpolate {args.interpolate}: {rows} rows, "
                  f"{rows * args.interpolate} samples", file=sys.stderr)
        latents, nrow = interpolation_latents(method, rows, args.interpolate, gen), args.interpolate
    samples = method.sample(args.n if latents is None else len(latents), generator=gen,
                            ema=not args.no_ema, latents=latents, progress=True)
    save_grid(samples, args.out, nrow=nrow)
    print(f"wrote {args.out}: {len(samples)} samples from step {ckpt['step']} "
          f"({'raw' if args.no_ema or not method.ema else 'EMA'} weights)")


if __name__ == "__main__":
    main()
