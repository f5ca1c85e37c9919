"""Draw a sample grid from a checkpoint (EMA weights unless --no-ema).

    python scripts/sample.py --checkpoint runs/x/checkpoints/last.pt --out grid.png [--n 64] [--seed 0]
    python scripts/sample.py --checkpoint ... --out interp.png --interpolate 8   # latent interpolation rows
    python scripts/sample.py --checkpoint ... --out heun.png ncsn.sampler=heun ncsn.heun_steps=25

Trailing key=value overrides change the checkpoint's config for sampling (e.g. the sampler).
"""
import argparse

import _bootstrap  # noqa: F401
import torch

from common.checkpoint import load_checkpoint
from common.config import load_config
from common.errors import ConfigError, cli
from common.images import save_grid
from common.loop import build, resolve_device
from data import DataInfo


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latent batches (Gaussian latents live near a sphere)."""
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((an * bn).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def load_method(path, device="auto", overrides=()):
    """The method of a checkpoint, with its trained (and EMA) weights, ready to sample."""
    ckpt = load_checkpoint(path)
    cfg = load_config(raw=ckpt["config"], overrides=[*overrides, f"device={device}"])
    method = build(cfg, resolve_device(cfg.device), info=DataInfo.from_dict(ckpt["data_info"]))
    method.load_state_dict(ckpt["state"], weights_only=True)
    method.train(False)
    return method, ckpt


def interpolation_latents(method, rows: int, cols: int, generator) -> torch.Tensor:
    ends = method.sample_latents(2 * rows, generator)
    a, b = ends[:rows], ends[rows:]
    t = torch.linspace(0, 1, cols, device=a.device).view(1, cols, *([1] * (a.dim() - 1)))
    return slerp(a[:, None], b[:, None], t).reshape(rows * cols, *a.shape[1:])


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--n", type=int, default=64, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not their EMA")
    p.add_argument("--interpolate", type=int, metavar="COLS", help="rows of COLS latent interpolations")
    p.add_argument("--device", default="auto")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. ncsn.sampler=heun")
    args = p.parse_intermixed_args(argv)
    if args.n <= 0:
        raise ConfigError("--n must be positive")
    method, ckpt = load_method(args.checkpoint, args.device, args.overrides)
    gen = torch.Generator(device=method.device).manual_seed(args.seed)
    latents, nrow = None, None
    if args.interpolate:
        rows = max(1, args.n // args.interpolate)
        latents, nrow = interpolation_latents(method, rows, args.interpolate, gen), args.interpolate
    samples = method.sample(args.n if latents is None else len(latents), generator=gen,
                            ema=not args.no_ema, latents=latents, progress=True)
    save_grid(samples, args.out, nrow=nrow)
    print(f"wrote {args.out}: {len(samples)} samples from step {ckpt['step']} "
          f"({'raw' if args.no_ema or not method.ema else 'EMA'} weights)")


if __name__ == "__main__":
    main()
