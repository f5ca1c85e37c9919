"""Draw a sample grid from a checkpoint (EMA weights unless --no-ema).

    python scripts/sample.py --checkpoint runs/x/checkpoints/last.pt --out grid.png [--n 64] [--seed 0]
    python scripts/sample.py --checkpoint ... --out interp.png --interpolate 8   # latent interpolation rows
    python scripts/sample.py --checkpoint ... --out edm.png ncsn.sampler=edm ncsn.sampler.steps=25 ncsn.sampler.churn=10
    python scripts/sample.py --checkpoint ... --out shirts.png --class 6 --guidance 2   # a class-conditional model
    python scripts/sample.py --checkpoint ... --out classes.png --class all             # one row per class
    python scripts/sample.py --checkpoint ... --out fill.png --inpaint right --n 8      # complete test images

Trailing key=value overrides change the checkpoint's config for sampling (e.g. the sampler; a
denoising net samples in its run's precision, and precision=fp32 samples a bf16 run in fp32).
--class takes a class (its index or, for data that names them, its name: --class Sneaker), a
comma-separated list (one row each) or "all"; --guidance is classifier-free
guidance's w (0 unconditional, 1 conditional; a denoising model's). --inpaint MASK completes the first
--n test images of the checkpoint's data set with any denoising model, the missing part named by MASK
(left, right, top, bottom: that half; centre; random:F, a fraction F of the pixels), and writes three
rows: the masked input, the completion and the original. Its reconstruction guidance λ is the
override <method>.inpaint_guidance (1; 0 = replacement of the known pixels only, as NCSNv2's code).
"""
import argparse
import dataclasses
import sys

import _bootstrap  # noqa: F401
import torch

from common.checkpoint import load_checkpoint
from common.errors import ArgumentParser, ConfigError, cli
from common.registry import lookup
from common.schema import check_seed
from engine import MASKS, load_method, mask, to_unit_range
from engine.images import require_image_path, save_grid


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latent batches (Gaussian latents live near a sphere)."""
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((an * bn).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def interpolation_latents(method, rows: int, cols: int, generator) -> torch.Tensor:
    """rows × cols latents, each row a slerp between two draws over all of a latent's numbers (an
    image-shaped latent, as DDE's denoiser generator takes, as one vector)."""
    ends = method.sample_latents(2 * rows, generator)
    shape = ends.shape[1:]
    a, b = ends.flatten(1)[:rows], ends.flatten(1)[rows:]
    t = torch.linspace(0, 1, cols, device=a.device).view(1, cols, 1)
    return slerp(a[:, None], b[:, None], t).reshape(rows * cols, *shape)


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
    p.add_argument("--class", dest="classes", metavar="C",
                   help="class-conditional models: a class (index or name), a list (1,4,7 or bag,coat: a row "
                        "each) or all (a row per class)")
    p.add_argument("--guidance", type=float, metavar="W", help="classifier-free guidance weight (denoising models)")
    p.add_argument("--inpaint", metavar="MASK", help=f"complete --n test images: {', '.join(MASKS)}")
    p.add_argument("--real-path", help="--inpaint with image_folder data: the test folder or .zip")
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
    if args.guidance is not None and not (args.guidance >= 0 and args.guidance < float("inf")):
        raise ConfigError(f"--guidance: a finite weight >= 0 (0 unconditional, 1 conditional), got {args.guidance}")
    if args.inpaint is not None:
        mask(args.inpaint, (1, 1, 4, 4))  # the name checked before anything loads
        if args.interpolate:
            raise ConfigError("--inpaint and --interpolate exclude each other: pick one")
    require_image_path(args.out, "--out")
    return args


def guidance_override(ckpt: dict, weight: float) -> str:
    """--guidance as the override of the checkpoint's method: its <method>.guidance."""
    if not (ckpt["config"].get("model") or {}).get("num_classes"):
        raise ConfigError("--guidance: this model is not class-conditional (model.num_classes: 0); drop --guidance")
    name = ckpt["method"]
    section = lookup("method", name).Config
    if "guidance" not in {f.name for f in dataclasses.fields(section)}:
        raise ConfigError(f"--guidance: classifier-free guidance steers a denoiser; a {name} model samples "
                          f"the classes of --class directly: drop --guidance")
    return f"{name}.guidance={weight}"


def requested_classes(spec: str, num_classes: int, n: int, names=()):
    """(labels, row length) for --class: one class (n samples), a list or "all" (a row of about
    n/rows samples each). A class is its index or, where the training data named its classes (`names`,
    DataInfo.classes), its name in any case."""
    if not num_classes:
        raise ConfigError("--class: this model is not class-conditional (model.num_classes: 0); drop --class")
    by_name = {name.lower(): i for i, name in enumerate(names)}

    def index(c: str) -> int:
        c = c.strip()
        if c.lower() in by_name:
            return by_name[c.lower()]
        return int(c) if c.lstrip("-").isdigit() else -1
    classes = list(range(num_classes)) if spec == "all" else [index(c) for c in spec.split(",")]
    if not classes or min(classes) < 0 or max(classes) >= num_classes:
        named = f" or their names ({', '.join(names[:4])}{', …' if len(names) > 4 else ''})" if names else ""
        raise ConfigError(f"--class {spec}: classes are 0..{num_classes - 1}{named} (a list: 1,4,7; or all)")
    if len(classes) == 1:
        return torch.full((n,), classes[0], dtype=torch.long), None
    cols = max(1, n // len(classes))
    return torch.tensor(classes).repeat_interleave(cols), cols


def inpainting_grid(method, args, labels, gen):
    """Three rows of --n test images: masked (missing pixels grey), completed and original."""
    from engine.evaluation.evaluate import test_split  # torchmetrics only when needed
    from engine.evaluation.inpainting import comparison_rows, complete, require_denoiser
    require_denoiser(method)
    test = test_split(method.cfg.data, args.real_path, "--inpaint")
    images = to_unit_range(test.data[:args.n] if hasattr(test, "data")
                           else torch.stack([torch.as_tensor(test[i][0]) for i in range(min(args.n, len(test)))]))
    known = mask(args.inpaint, tuple(images.shape), torch.Generator().manual_seed(args.seed))
    completed = complete(method, images, known, len(images), gen, not args.no_ema, labels)
    return comparison_rows(images, known, completed), len(images)


@cli
def main(argv=None):
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.guidance is not None:
        overrides.append(guidance_override(load_checkpoint(args.checkpoint), args.guidance))
    method, ckpt = load_method(args.checkpoint, args.device, overrides)
    gen = torch.Generator(device=method.device).manual_seed(args.seed)
    latents, nrow, labels = None, None, None
    if args.classes is not None:
        labels, nrow = requested_classes(args.classes, method.num_classes, args.n, method.info.classes)
    if args.inpaint:
        samples, nrow = inpainting_grid(method, args, labels[:args.n] if labels is not None else None, gen)
        save_grid(samples, args.out, nrow=nrow)
        print(f"wrote {args.out}: {nrow} test images with the {args.inpaint} mask (masked, completed, original) "
              f"from step {ckpt['step']}")
        return
    if args.interpolate:
        rows = args.n // args.interpolate
        if rows * args.interpolate != args.n:
            print(f"note: --n {args.n} with --interpolate {args.interpolate}: {rows} rows, "
                  f"{rows * args.interpolate} samples", file=sys.stderr)
        latents, nrow = interpolation_latents(method, rows, args.interpolate, gen), args.interpolate
    n = args.n if latents is None else len(latents)
    if labels is not None and len(labels) != n:  # interpolation rows or a class list: cycle the classes
        labels = labels.repeat(n // len(labels) + 1)[:n]
    samples = method.sample(n, generator=gen, ema=not args.no_ema, latents=latents, progress=True,
                            labels=labels)
    save_grid(samples, args.out, nrow=nrow)
    nfe = method.evaluations_per_sample()
    print(f"wrote {args.out}: {len(samples)} samples from step {ckpt['step']} "
          f"({'raw' if args.no_ema or not method.ema else 'EMA'} weights"
          f"{f', {nfe} network evaluations each' if nfe else ''})")


if __name__ == "__main__":
    main()
