"""The results tables: every method trained at CPU scale on Fashion-MNIST (default) or CIFAR-10, sampled and scored.

    python scripts/results.py                   # train what is missing (finished runs are reused), score, write docs/
    python scripts/results.py --reuse           # score the finished runs in --runs, train nothing
    python scripts/results.py --train-only      # train what is missing, score nothing
    python scripts/results.py --methods gan,dae --retrain   # train those again (their old runs are deleted)
    python scripts/results.py --jobs 2          # train two runs at a time, each on half the threads
    python scripts/results.py --smoke --data-root FIXTURE --out /tmp/r   # a test: its runs go to /tmp/r/runs
    python scripts/results.py --data cifar10 --data-root ../shared/datasets/cifar10-jpeg   # the CIFAR-10 table

For each CPU config of the data set (configs/fashion_mnist_*_cpu.yaml, configs/cifar10_*_cpu.yaml) it
trains a run in --runs/<name>/ (or reuses a finished one), draws samples from its EMA weights with each
sampler of its rows, and scores them with the evaluation machinery of scripts/evaluate.py
(engine/evaluation/) against the real test split, in the features of a classifier of that data set that
it trains itself, with fixed settings and seed, when --classifier is absent. It writes docs/results.md
(docs/results_cifar10.md), one sample grid per row in docs/results/ (docs/results_cifar10/), and the same
table and grids into README.md between the data set's results markers. Every number in them comes out of
this script. Rows train for equal minutes, so every run of a table trained on one machine (each run's
summary names it, and the header does): --train-only in one sitting and --reuse in another split a full run.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import _bootstrap  # noqa: F401
import torch
from tqdm import tqdm

from common.checkpoint import load_checkpoint
from common.config import DataConfig, load_config, read_yaml
from common.errors import ArgumentParser, ConfigError, DataError, cli
from common.paths import require_writable, write_text_atomic
from common.schema import parse
from engine import build_dataset, from_unit_range, load_method, mask, resolve_device, to_unit_range, train
from engine.evaluation.bits_per_dim import gaussian_bits_per_dim, model_bits_per_dim
from engine.evaluation.classifier import load_classifier, save_classifier
from engine.evaluation.classifier_training import fit_classifier
from engine.evaluation.evaluate import balanced_labels, class_reference, held_out_images, score
from engine.evaluation.inpainting import comparison_rows, complete, inpainting_scores
from engine.evaluation.features import build_extractor
from engine.evaluation.reference import reference_stats
from engine.images import save_grid
from engine.report import (MARKERS, class_spread_table, conditional_table, grids_markdown, inpainting_table, machine,
                           nfe_table, table, write_readme)

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER = {"width": 16, "epochs": 4, "batch_size": 256, "lr": 0.2, "weight_decay": 5e-4, "seed": 0}


@dataclass
class Run:
    """A training run: a CPU config and the overrides that make it this run."""
    config: str
    overrides: list[str] = field(default_factory=list)
    smoke: list[str] = field(default_factory=list)  # --smoke: tiny networks
    teacher: str | None = None  # the run whose checkpoint this one distils (dde.teacher), trained first


@dataclass
class Row:
    name: str
    method: str                 # what --methods selects
    run: str | None             # None: the real training split
    sampler: str                # as shown in the table
    overrides: list[str] = field(default_factory=list)  # sampling-time config overrides
    langevin: bool = False      # scored on --n-langevin samples
    guide: str | None = None    # the run whose checkpoint autoguides the samples (<method>.autoguide)


TINY_UNET = ["model.width=8", "model.mults=[1,2]", "model.blocks=1"]
SMALL_GAN = ["model.g_width=8", "model.d_width=8"]
# Every method gets the same wall-clock budget, not the same steps: what 12 minutes of training buy on
# the machine at hand (a step of the DAE took 158 ms on one 2-core machine and 310 ms on another).
def minutes_budget(minutes: float) -> list[str]:
    """A run's overrides for training `minutes` of wall-clock time (its steps unbounded)."""
    return ["train.steps=1000000", f"train.max_minutes={minutes:g}"]


BUDGET = minutes_budget(12)
# Each guide's minutes (autoguidance wants a guide well behind its model: Karras et al. 2024). The EBM's
# guide trains 1.5: on the 2026-12-06 table's EBM run (DPM-Solver++ 25 levels, w 2, evaluate.py n 1,000
# against the training images, KID ×10³) guides of 0.75, 1.5 and 3 minutes (329, 624 and 1,522 steps)
# gave 279 ± 46, 265 ± 49 and 398 ± 64, a second 1.5-minute guide (seed 1, 744 steps) 303 ± 51; at width
# 4 for 3 minutes 382 ± 53 (precision 0.41, recall 0.61). With the 1.5-minute guide w 1.5 and 2.5 gave 453
# and 270 (recall 0.67), 20 levels 317: w 2 at 25 levels stays. DAE and NCSN keep 3: their 1.5-minute
# guides (at AUTOGUIDE's w and levels) gave 69 ± 21 and 28 ± 11 against 30 ± 12 and 22 ± 10. (The EBM's
# sweeps were on its two-level net; the three-level one of its config since 2026-12-06 keeps w 2, 25 levels
# and 1.5 minutes, unswept: its header has what its guides gave.)
GUIDE_MINUTES = {"dae": 3, "ncsn": 3, "ebm": 1.5}
# A guide's settings beyond its width: the EBM's guide keeps the learning rate 1e-3 its config trained
# at before 2e-3 (a guide at 2e-3 guided worse: configs/fashion_mnist_ebm_cpu.yaml).
GUIDE_OVERRIDES = {"ebm": ["optim.lr=1e-3"]}


def guide_runs(data: str, minutes: dict[str, float]) -> dict:
    """Each method's guide run <method>_guide: its CPU config for `data` at half the width, trained
    `minutes[method]` minutes."""
    return {f"{m}_guide": Run(f"{data}_{m}_cpu.yaml", [*minutes_budget(t), "model.width=8",
                                                       *GUIDE_OVERRIDES.get(m, [])], [*TINY_UNET, "model.width=4"])
            for m, t in minutes.items()}


RUNS = {
    "gan_one_loss": Run("fashion_mnist_dcgan_cpu.yaml", [*BUDGET], SMALL_GAN),
    "gan_alternating": Run("fashion_mnist_dcgan_cpu.yaml", [*BUDGET, "gan.step=alternating"],
                           SMALL_GAN),
    "ncsn": Run("fashion_mnist_ncsn_cpu.yaml", [*BUDGET], TINY_UNET),
    "dae": Run("fashion_mnist_dae_cpu.yaml", [*BUDGET], TINY_UNET),
    "ebm": Run("fashion_mnist_ebm_cpu.yaml", [*BUDGET], TINY_UNET),
    # DDE distils the DAE rows' run (its config's dde.teacher): a one-step generator, trained after it
    "dde": Run("fashion_mnist_dde_cpu.yaml", [*BUDGET], TINY_UNET, teacher="dae"),
    # class-conditional: the same configs on the data's labels (conditional BatchNorm and a projection
    # critic; a class embedding with 10% label dropout), the same budget
    "gan_conditional": Run("fashion_mnist_dcgan_cpu.yaml", [*BUDGET, "model.num_classes=10"],
                           SMALL_GAN),
    "dae_conditional": Run("fashion_mnist_dae_cpu.yaml", [*BUDGET, "model.num_classes=10"], TINY_UNET),
    # autoguidance's guides (Karras et al. 2024): the same configs at half the width for at most a quarter
    # of the time (GUIDE_MINUTES), each the weaker model its method's autoguided rows extrapolate away from
    **guide_runs("fashion_mnist", GUIDE_MINUTES),
}


# EDM's stochastic sampler with its largest churn, γ = √2 − 1, at every level down to σ_min: on the
# three-level DAE and NCSN of the CPU configs, KID ×10³ 830 → 694 and 866 → 759 at 18 levels against
# the sampler's defaults (churn 5 from σ 0.05; configs/fashion_mnist_dae_cpu.yaml says more). Not for
# CIFAR-10 (CIFAR10_SAMPLER_ROWS), where it measured worse.
FULL_CHURN = {"churn": 40, "tmin": 0}


def dpm(levels: int) -> tuple[str, dict]:
    """The (label, settings) of DPM-Solver++(2M) SDE at `levels` levels, one evaluation a level."""
    return f"DPM-Solver++(2M) SDE, {levels} levels", {"name": "dpmpp_2m_sde", "steps": levels}


# Each fast sampler at two budgets, ≤ 50 and ≤ 20 network evaluations: (row suffix, label, settings).
SAMPLER_ROWS = [
    ("heun35", "Heun, 18 levels", {"name": "heun", "steps": 18}),
    ("heun19", "Heun, 10 levels", {"name": "heun", "steps": 10}),
    ("edm35", "EDM stochastic, 18 levels, γ = √2 − 1 at every level", {"name": "edm", "steps": 18, **FULL_CHURN}),
    ("edm19", "EDM stochastic, 10 levels, γ = √2 − 1 at every level", {"name": "edm", "steps": 10, **FULL_CHURN}),
    ("em50", "Euler–Maruyama, 50 levels", {"name": "euler_maruyama", "steps": 50}),
    ("em20", "Euler–Maruyama, 20 levels", {"name": "euler_maruyama", "steps": 20}),
    ("pc50", "predictor–corrector, 25 levels", {"name": "pc", "steps": 25}),
    ("pc20", "predictor–corrector, 10 levels", {"name": "pc", "steps": 10}),
    ("anc50", "ancestral, 50 levels", {"name": "ancestral", "steps": 50}),
    ("anc20", "ancestral, 20 levels", {"name": "ancestral", "steps": 20}),
    ("dpm50", *dpm(50)),
    ("dpm20", *dpm(20)),
    # Xu et al.'s CIFAR-10 EDM setting: two restarts from σ 0.14 to 0.30, 3 levels back down each
    ("rs43", "Restart, 18 levels + 2 restarts on [0.14, 0.30]", {"name": "restart", "steps": 18}),
    ("rs19", "Restart, 6 levels + 2 restarts on [0.14, 0.30]", {"name": "restart", "steps": 6}),
]


def sampler_row(suffix: str) -> tuple[str, dict]:
    """The (label, settings) of SAMPLER_ROWS' row `suffix`, for rows that sample as it does."""
    return next((label, settings) for s, label, settings in SAMPLER_ROWS if s == suffix)


def sampler_overrides(method: str, settings: dict) -> list[str]:
    return [f"{method}.sampler={settings['name']}"] + [f"{method}.sampler.{k}={v}" for k, v in settings.items()
                                                       if k != "name"]


def denoising_rows(method: str) -> list[Row]:
    return [Row(f"{method}_langevin", method, method, "annealed Langevin", [f"{method}.sampler=langevin"], True),
            *(Row(f"{method}_{suffix}", method, method, label, sampler_overrides(method, settings))
              for suffix, label, settings in SAMPLER_ROWS)]


# Autoguided rows: each denoiser's 12-minute run guided by its guide run (width 8, GUIDE_MINUTES) at the
# weight w and the levels L (2L network evaluations a sample, ≤ 50) that a sweep picked, and at 10
# levels (20 evaluations). The sweeps, against the training images, n 1,000, DPM-Solver++, KID ×10³:
# at 20 levels DAE w 1.5, 1.75, 2, 2.5, 3 gave 73, 54, 46, 76, 119; NCSN w 1.5, 2, 2.5 gave 34, 85, 100;
# the EBM's run of the table of 2026-12-06, w 1.5, 2, 2.5, 3, 4 gave 618, 473, 480, 615, 1443, and
# guided at σ in (0.28, 5.42] only, w 2.5 and 3 gave 571 and 683. On that table's runs, 20 → 25 levels
# (40 → 50 evaluations), with the 3-minute guides: the EBM at w 2 473 → 398 (w 1.75 and 2.5 at 25: 481,
# 402), the DAE at w 2 30 → 38, NCSN at w 1.5 22 → 65; so the EBM takes 25 levels, the others 20.
AUTOGUIDE = {"dae": (2.0, 20), "ncsn": (1.5, 20), "ebm": (2.0, 25)}  # method → (w, levels)


def in_interval(method: str, interval: tuple[float, float] | None) -> tuple[str, str, list[str]]:
    """A guided row's name suffix, label suffix and override for guidance at σ in `interval` only
    (<method>.guidance_interval; Kynkäänniemi et al. 2024); nothing for guidance at every level."""
    if interval is None:
        return "", "", []
    lo, hi = interval
    return "_interval", f" at σ in ({lo:g}, {hi:g}]", [f"{method}.guidance_interval=[{lo},{hi}]"]


def autoguided_row(method: str, w: float, suffix: str, label: str, settings: dict,
                   interval: tuple[float, float] | None = None) -> Row:
    """`method`'s run under a sampler, autoguided by its guide run <method>_guide at weight w (at σ in
    `interval` only, when given)."""
    name, at, override = in_interval(method, interval)
    return Row(f"{method}_ag_{suffix}{name}", f"{method}_autoguided", method,
               f"{label}, autoguided by {method}_guide, w = {w:g}{at}",
               [f"{method}.autoguide_weight={w}", *override, *sampler_overrides(method, settings)],
               guide=f"{method}_guide")


def autoguided_rows(method: str) -> list[Row]:
    w, levels = AUTOGUIDE[method]
    return [autoguided_row(method, w, f"dpm{steps}", *dpm(steps)) for steps in (levels, 10)]


GUIDANCE = (0, 0.5, 1, 1.5, 2, 3, 4)  # classifier-free guidance weights of the conditional DAE's rows
# The conditional DAE's sampler: DPM-Solver++(2M) SDE at 20 levels, the unconditional DAE's best fast one
# (its config's), 40 passes a guided sample against Heun 18's 70. On one 12-minute run (5,959 steps,
# 2026-12-06; the table's protocol), Heun 18 → DPM 20, KID ×10³: w 1 286 ± 50 → 82 ± 26, w 1.5 52 ± 21 →
# 6 ± 12, w 2 8 ± 12 → 40 ± 22, w 4 164 → 304; the seven rows' sampling 381 → 225 s. The best weight moves
# from 2 to 1.5 (precision 0.843 → 0.888, recall 0.662 → 0.669, conditional accuracy 0.971 → 0.962).
CONDITIONAL_SAMPLER = sampler_row("dpm20")


def guided_row(sampler: tuple[str, dict], w: float, interval: tuple[float, float] | None = None) -> Row:
    """The conditional DAE under `sampler` (its label, its settings), uniform classes, classifier-free
    guidance weight w (at σ in `interval` only, when given: Kynkäänniemi et al. 2024)."""
    name, at, override = in_interval("dae", interval)
    label, settings = sampler
    return Row(f"dae_conditional_w{w:g}{name}", "dae_conditional", "dae_conditional",
               f"{label}, uniform classes, guidance w = {w:g}{at}",
               [f"dae.guidance={w}", *override, *sampler_overrides("dae", settings)])


def conditional_rows(sampler: tuple[str, dict], weights) -> list[Row]:
    """The class-conditional runs' rows: the GAN's, and the DAE's under `sampler` at each classifier-free
    guidance weight, both drawing each class equally often."""
    return [Row("gan_conditional", "gan_conditional", "gan_conditional", "generator, uniform classes"),
            *(guided_row(sampler, w) for w in weights)]


# Inpainting with the unconditional DAE (the best denoiser of the table): (run, mask, weight λ of the
# reconstruction guidance; 0 = replacement only, the method of NCSNv2's and score_sde's code) per row.
INPAINTING = [("dae", "right", 1.0), ("dae", "right", 0.0), ("dae", "centre", 1.0)]
ROWS = [Row("real_train", "real", None, "the training split"),
        Row("gan_one_loss", "gan", "gan_one_loss", "generator"),
        Row("gan_alternating", "gan", "gan_alternating", "generator"),
        *(row for m in ("ncsn", "dae", "ebm") for row in (*denoising_rows(m), *autoguided_rows(m))),
        Row("dde", "dde", "dde", "generator"),
        *conditional_rows(CONDITIONAL_SAMPLER, GUIDANCE)]


# CIFAR-10 (configs/cifar10_*_cpu.yaml): the two GAN trainers at the config's equal number of steps,
# each with its own wall time; the denoisers 15 minutes each (and their guides 4), sampled as
# cifar10_denoising_rows says.
CIFAR10_BUDGET = minutes_budget(15)
CIFAR10_GUIDE_MINUTES = {"dae": 4, "ncsn": 4}
CIFAR10_RUNS = {
    "gan_one_loss": Run("cifar10_dcgan_cpu.yaml", [], SMALL_GAN),
    "gan_alternating": Run("cifar10_dcgan_cpu.yaml", ["gan.step=alternating"], SMALL_GAN),
    "dae": Run("cifar10_dae_cpu.yaml", [*CIFAR10_BUDGET], TINY_UNET),
    "ncsn": Run("cifar10_ncsn_cpu.yaml", [*CIFAR10_BUDGET], TINY_UNET),
    # autoguidance's guides, as Fashion-MNIST's: half the width for about a quarter of the time
    **guide_runs("cifar10", CIFAR10_GUIDE_MINUTES),
    # class-conditional, as Fashion-MNIST's: the same configs and budgets on the folders' labels; the GAN's
    # learning rate decays linearly to 0 over its steps, for a KID that varies less from seed to seed
    # (configs/cifar10_dcgan_cpu.yaml's header has the measurement)
    "gan_conditional": Run("cifar10_dcgan_cpu.yaml", ["model.num_classes=10", "optim.schedule=linear"], SMALL_GAN),
    "dae_conditional": Run("cifar10_dae_cpu.yaml", [*CIFAR10_BUDGET, "model.num_classes=10"], TINY_UNET),
}


# The denoisers' rows: Heun at 35 evaluations, and Heun at 10 levels autoguided by the method's guide run
# (19 evaluations of the model and of the guide: 38 passes a sample). No annealed Langevin row: at 2 steps
# per level (439 evaluations; the 219-level ladder's 5 steps would cost 1,096) it was the worst row of
# each denoiser in the 2026-12-03 table (KID ×10³ 530 ± 56 DAE, 807 ± 72 NCSN, n 300; smallest class
# 0.3% and 1.3%) and took 4 minutes of sampling each on the Xeon with AMX. On the DAE
# (15 minutes, 6,446 steps; guide width 8, 4 minutes, 2,238 steps; KID ×10³ against the training images,
# CIFAR-10 classifier, n 1,000): Heun 35 383 ± 49; DPM-Solver++(2M) SDE 20 levels (40) 513 ± 63, and
# autoguided (80 passes) at w 1.25, 1.5, 2: 483, 697, 1525 (w 2 draws half its samples as airplanes); a
# width-16 guide of 4 minutes at w 1.5, 2: 510, 825; autoguided Heun 10 levels at w 1.25: 270 ± 33 (IS
# 3.28, recall 0.33 against Heun 35's 3.08, 0.23), with the width-16 guide at w 1.5: 315 ± 37. EDM's
# stochastic sampler was worse than Heun in every CIFAR-10 measurement (the last table: 581 against 484
# on the DAE, 787 against 587 on NCSN; full churn 609 against defaults 585), so it has no row here.
CIFAR10_AUTOGUIDE_WEIGHT = 1.25
# The sampler of CIFAR-10's guided rows, autoguided and class-conditional: Heun at 10 levels
CIFAR10_HEUN10 = sampler_row("heun19")
# Classifier-free guidance weights of the conditional DAE's rows, at the autoguided rows' budget (Heun at 10
# levels: 19 evaluations a sample, 38 where w is neither 0 nor 1 and both the conditional and the
# unconditional net run). w 4 added after a check on the 2026-12-05 table's run (evaluate.py, training
# images, n 1,000): w 3 KID ×10³ 274 ± 36, IS 5.20, recall 0.197, conditional accuracy 0.726, smallest class
# 3.2%; w 4 270 ± 34, 5.88, 0.162, 0.805, 4.6%: level in KID, fewer modes per class, every class at ≥ 4%.
# w 1.5 (KID ×10³ 383 ± 53 in the 2026-12-05 table, between w 1's and w 2's) dropped for the interval rows'
# time: a full run stays near two hours here.
CIFAR10_GUIDANCE = (0, 1, 2, 3, 4)
# The same net guided at σ in (0.28, 5.42] only (EDM2-S's interval, Kynkäänniemi et al. 2024), w = 1 at the
# other levels: 3 of Heun's 10 levels, 25 passes a sample instead of 38. Swept on the 2026-12-05 table's run
# (evaluate.py, training images, n 2,000, seed 0; KID ×10³, IS, recall, conditional accuracy, smallest class,
# passes): w 4 at every level 276 ± 39, 5.87, 0.147, 0.803, 4.4%, 38; in (0.28, 5.42] w 4 272 ± 40, 5.23,
# 0.186, 0.740, 3.4%, 25 and w 6 275 ± 37, 6.02, 0.131, 0.808, 5.2%, 25; in (0.28, 16] w 4 277 ± 40, 5.53,
# 0.156, 0.767, 3.8%, 29 and w 3 292 ± 43, 4.92, 0.204, 0.698, 3.0%, 29. The same KID at two thirds of the
# passes, and w trades recall for IS as at every level. The table's row is w 6, the one at w 4's KID, IS and
# class spread (w 4 in the interval, scored in the table the same day: 272 ± 44, IS 5.23, recall 0.203,
# smallest class 3.4%; dropped for the run's time).
CIFAR10_GUIDANCE_INTERVAL, CIFAR10_INTERVAL_WEIGHTS = (0.28, 5.42), (6,)


# Autoguidance at σ ≤ 1 only (3 of Heun's 10 levels: 25 passes a sample), swept on the 2026-12-05 table's
# runs (evaluate.py, training images, n 2,000, seed 0; KID ×10³, recall, smallest class, passes). DAE: every
# level w 1.25 312 ± 45, 0.242, 3.6%, 38; σ ≤ 1 w 1.5 295 ± 42, 0.244, 3.4%, 25; w 2 305 ± 36, 0.249, 3.1%
# (airplanes 26%); σ ≤ 3 w 1.5 296 ± 41, 27 passes; σ ≤ 0.5 w 3 453 ± 28. In the middle, (0.28, 5.42], w 2
# 503 ± 47 and w 3 1349 ± 56 (airplanes 29% and 30%; trucks 38% at w 3); at σ > 5.42 only, w 2 382 ± 51.
# So autoguidance's work here is at small σ, and larger weights in the middle draw skies. NCSN: every level
# w 1.25 489 ± 63, 0.172, 2.6%, 38; σ ≤ 1 w 1.5 443 ± 59, 0.153, 3.5%, 25.
CIFAR10_AUTOGUIDE_INTERVAL, CIFAR10_AUTOGUIDE_INTERVAL_WEIGHT = (0, 1), 1.5


def cifar10_denoising_rows(method: str) -> list[Row]:
    (label35, heun35), (label10, heun10) = sampler_row("heun35"), CIFAR10_HEUN10
    return [Row(f"{method}_heun35", method, method, label35, sampler_overrides(method, heun35)),
            autoguided_row(method, CIFAR10_AUTOGUIDE_WEIGHT, "heun19", label10, heun10),
            autoguided_row(method, CIFAR10_AUTOGUIDE_INTERVAL_WEIGHT, "heun19", label10, heun10,
                           CIFAR10_AUTOGUIDE_INTERVAL)]


CIFAR10_ROWS = [Row("real_train", "real", None, "the training split"),
                Row("gan_one_loss", "gan", "gan_one_loss", "generator"),
                Row("gan_alternating", "gan", "gan_alternating", "generator"),
                *cifar10_denoising_rows("dae"), *cifar10_denoising_rows("ncsn"),
                *conditional_rows(CIFAR10_HEUN10, CIFAR10_GUIDANCE),
                *(guided_row(CIFAR10_HEUN10, w, CIFAR10_GUIDANCE_INTERVAL) for w in CIFAR10_INTERVAL_WEIGHTS)]
CIFAR10_INPAINTING = [("dae", "right", 1.0), ("dae", "centre", 1.0)]  # as INPAINTING, with guidance only


def fashion_mnist_data(root: str, split: str) -> dict:
    return {"name": "fashion_mnist", "root": root, "split": split}


def cifar10_data(root: str, split: str) -> dict:
    """CIFAR-10 under `root`: torchvision's release (cifar-10-batches-py/) or the JPEG zips of class
    folders (train.zip, test.zip; the shared copy), whichever is there."""
    folder = Path(root)
    if (folder / "cifar-10-batches-py").is_dir():
        return {"name": "cifar10", "root": root, "split": split, "path": None}
    if not (folder / f"{split}.zip").is_file():
        raise DataError(f"--data-root {root}: no CIFAR-10 there (neither {split}.zip of class folders nor "
                        f"cifar-10-batches-py/): pass the folder holding one of them")
    return {"name": "image_folder", "path": str(folder / f"{split}.zip"), "image_size": 32}


@dataclass(frozen=True)
class DataSet:
    """One results table: its data, runs, rows, classifier and where it is written."""
    name: str                   # the data set the classifier is trained on and checked against
    title: str
    runs: dict
    rows: list
    inpainting: list
    classifier: dict            # fixed settings of its evaluation classifier
    flip: bool                  # the classifier's flip augmentation (not for Fashion-MNIST's asymmetric items)
    stem: str                   # OUT/<stem>.md, OUT/<stem>.json, OUT/<stem>/<row>.png
    markers: tuple              # the README's markers around its table
    data: object                # (root, split) → the data config of a split
    root: str                   # --data-root's default
    n: int                      # --n's default
    n_bpd: int                  # --n-bpd's default

    @property
    def methods(self) -> list[str]:
        return sorted({r.method for r in self.rows} | ({"inpaint"} if self.inpainting else set()))


# Fashion-MNIST's 63 rows (58 from multi-step samplers) take 1,000 samples each (300 for 496-evaluation
# Langevin), for the time on 2 cores; CIFAR-10's 16 rows take 2,000 (the class histogram's n) and skip
# bits/dim (RK45 on 3,072 dimensions; --n-bpd to ask for it).
DATASETS = {
    "fashion_mnist": DataSet("fashion_mnist", "Fashion-MNIST", RUNS, ROWS, INPAINTING, CLASSIFIER, False, "results",
                             MARKERS, fashion_mnist_data, "datasets", 1000, 200),
    "cifar10": DataSet("cifar10", "CIFAR-10", CIFAR10_RUNS, CIFAR10_ROWS, CIFAR10_INPAINTING,
                       dict(CLASSIFIER, epochs=5), True, "results_cifar10",
                       ("<!-- results_cifar10:begin (written by scripts/results.py --data cifar10) -->",
                        "<!-- results_cifar10:end -->"), cifar10_data, "datasets/cifar10-jpeg", 2000, 0),
}
METHODS = DATASETS["fashion_mnist"].methods


def progress(text: str):
    tqdm.write(text)


def data_config(args, split: str = "train") -> DataConfig:
    """The data config of a split of the table's data set under --data-root."""
    return parse(DataConfig, args.dataset.data(args.data_root, split), "data")


def run_config(name: str, args):
    run = args.dataset.runs[name]
    data = {k: v for k, v in args.dataset.data(args.data_root, "train").items() if k != "split"}
    overrides = [*run.overrides, *(f"data.{k}={'null' if v is None else v}" for k, v in data.items()),
                 f"device={args.device}"]
    if run.teacher:
        overrides.append(f"dde.teacher={last_checkpoint(run.teacher, args)}")
    if args.smoke:
        overrides += [*run.smoke, "train.steps=3", "train.max_minutes=null", "optim.schedule_over=steps",
                      "train.log_every=1", "train.compile=false", "train.sample_every=3",
                      "train.ckpt_every=3", "train.n_samples=4", "train.batch_size=8"]
    return load_config(ROOT / "configs" / run.config, overrides)


def teacher_of(run: str | None, args) -> str | None:
    """The run that `run` distils (Run.teacher), if any."""
    return args.dataset.runs[run].teacher if run else None


def last_checkpoint(run: str, args) -> Path:
    """The checkpoint a run's rows are drawn from: --runs/<run>/checkpoints/last.pt."""
    return Path(args.runs) / run / "checkpoints" / "last.pt"


def config_digest(path: Path) -> str:
    """A config file's settings, comments and layout aside: what a finished run was trained with."""
    return hashlib.sha256(json.dumps(read_yaml(path), sort_keys=True).encode()).hexdigest()[:16]


def teacher_summary(done: dict | None) -> dict | None:
    """What identifies a finished teacher run (its training summary's steps and seconds)."""
    return None if done is None else {"run": done["run"], "steps": done["steps"], "seconds": done["seconds"]}


def finished(run_dir: Path, run: Run, smoke: bool, teacher: dict | None = None) -> dict | None:
    """The training summary results.py wrote when the run ended, if it did; a --smoke run is never
    taken for a real one, nor the reverse, nor a run trained with other settings than `run`'s: other
    overrides, another config, its config's settings edited since (summaries written before the
    digest was kept are taken as they are), or another run of its teacher."""
    path = run_dir / "results_training.json"
    if not (path.is_file() and (run_dir / "checkpoints/last.pt").is_file()):
        return None
    done = json.loads(path.read_text())
    if done.get("smoke", False) != smoke:
        kind = "--smoke" if done.get("smoke", False) else "full"
        raise ConfigError(f"{run_dir} holds a {kind} run: pass --runs DIR of {'full' if not smoke else '--smoke'} runs, "
                          f"or --retrain to replace it")
    if done.get("overrides") != run.overrides or done.get("config", run.config) != run.config:
        then = f"{done.get('config', run.config)} {' '.join(done.get('overrides') or [])}".strip()
        now = f"{run.config} {' '.join(run.overrides)}".strip()
        raise ConfigError(f"{run_dir} was trained with {then}, this table's {run_dir.name} with {now}: pass "
                          f"--retrain to train it again")
    digest = config_digest(ROOT / "configs" / run.config)
    if done.get("config_digest", digest) != digest:
        raise ConfigError(f"{run_dir} was trained before configs/{run.config}'s settings were last edited: pass "
                          f"--retrain (with --methods, for only the rows it trains) to train it again")
    if done.get("teacher") != teacher_summary(teacher):
        raise ConfigError(f"{run_dir} distils another run of its teacher {run.teacher} than the one in "
                          f"{run_dir.parent}: pass --retrain to train it again")
    return done


def train_run(name: str, cfg, args, teacher: dict | None = None) -> dict:
    """A finished run of the table's runs[name] in --runs: reused, or trained (from `cfg`, checked up
    front; from its teacher run's checkpoint, whose summary is `teacher`, when it distils one)."""
    run_dir, run = Path(args.runs) / name, args.dataset.runs[name]
    done = None if name in args.to_retrain else finished(run_dir, run, args.smoke, teacher)
    if args.reuse:
        if done is None:
            raise ConfigError(f"--reuse: no finished run {name} in {run_dir} (no results_training.json "
                              f"and checkpoints/last.pt); drop --reuse to train it")
        return done
    if done is not None:
        again = "a teacher: select its rows to train it again" if args.retrain else "--retrain trains it again"
        progress(f"reusing the finished run {run_dir} ({again})")
        return done
    if run_dir.exists():
        if not args.retrain:
            raise ConfigError(f"{run_dir} holds an unfinished run (no results_training.json): pass --retrain "
                              f"to delete it and train again, or delete it yourself")
        shutil.rmtree(run_dir)  # last: the configs and the data were checked before anything was deleted
    how = (f"--smoke: {cfg.train.steps} steps of batch {cfg.train.batch_size}, tiny networks" if args.smoke
           else ' '.join(run.overrides) or f"{cfg.train.steps} steps")  # what it does, not what a full run would
    progress(f"training {name} ({run.config} {how}) in {run_dir}")
    summary = train(cfg, run_dir)
    images = summary["step"] * cfg.train.batch_size * (cfg.gan.n_critic if cfg.method == "gan" else 1)
    done = {"run": name, "config": run.config, "config_digest": config_digest(ROOT / "configs" / run.config),
            "overrides": run.overrides,
            "seconds": summary["seconds"], "steps": summary["step"], "images": images,
            "threads": torch.get_num_threads(), "precision": summary["precision"], "machine": args.trains_on,
            **({"smoke": True} if args.smoke else {}), **({"teacher": teacher_summary(teacher)} if run.teacher else {})}
    write_text_atomic(run_dir / "results_training.json", json.dumps(done, indent=1) + "\n")
    return done


def train_runs(configs: dict, args) -> dict:
    """Every run of `configs` (name → config) finished by train_run, a teacher before the runs that distil
    it: one at a time on all the threads, or --jobs at a time, each in a process of its own on its share
    of them (torch's intra-op threads; the machine's summary string says how they trained)."""
    trained = {}
    if args.jobs == 1:
        for name, cfg in configs.items():
            trained[name] = train_run(name, cfg, args, trained.get(teacher_of(name, args)))
        return trained
    teachers = {name: teacher_of(name, args) for name in configs}
    waiting, running = list(configs), {}  # names only: a config is checked here and built again there
    # spawn, not fork: a forked child inherits the parent's OpenMP pool and torch state half-made
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(args.job_threads,)) as pool:
        while waiting or running:  # a free process takes the first run whose teacher has finished
            ready = [n for n in waiting if teachers[n] in (None, *trained)]
            for name in ready[:args.jobs - len(running)]:
                waiting.remove(name)  # (a config's classes are made at run time and do not pickle)
                running[pool.submit(train_in_worker, name, args, trained.get(teachers[name]))] = name
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:  # a run that failed fails the table, after the runs beside it finish
                trained[running.pop(future)] = future.result()
    return {name: trained[name] for name in configs}


def train_in_worker(name: str, args, teacher: dict | None) -> dict:
    """train_run in a --jobs process, from the run's config built again there."""
    return train_run(name, run_config(name, args), args, teacher)


def ensure_classifier(args, device) -> dict:
    """The classifier whose features every row is scored in; trained here when absent."""
    path, dataset = Path(args.classifier), args.dataset
    if not path.is_file():
        settings = dict(dataset.classifier, epochs=1, width=4) if args.smoke else dataset.classifier
        progress(f"training the evaluation classifier ({settings}, flip {dataset.flip}) into {path}")
        splits = [build_dataset(data_config(args, s)) for s in ("train", "test")]
        start = time.monotonic()
        model, acc = fit_classifier(*splits, device, flip=dataset.flip, log=progress, **settings)
        arch = {"in_channels": splits[0].info.shape[0], "num_classes": splits[0].info.num_classes,
                "width": settings["width"]}
        save_classifier(path, model, arch, splits[0].info.shape, dataset.name, acc, splits[0].info.classes,
                        loss="ce", epochs=settings["epochs"], seconds=time.monotonic() - start)
    _, ckpt = load_classifier(path)
    if ckpt.get("data") != dataset.name:
        raise ConfigError(f"--classifier {path} was trained on {ckpt.get('data')}, not {dataset.name}: "
                          f"pass a {dataset.title} classifier or a path where one can be trained")
    return ckpt


def sample_row(row: Row, args, device, n: int):
    """(uint8 samples, sampling seconds, nfe, the precision its nets ran in, classes) of a row, drawn in
    batches with a fixed seed; a class-conditional model's with balanced classes (None otherwise)."""
    section = row.overrides[0].split(".", 1)[0] if row.overrides else None  # the model's method: dae, ncsn, ebm
    smoke = [f"{section}.num_scales=3"] if args.smoke and section else []
    smoke += [f"{section}.sampler.steps=1"] if smoke and row.langevin else []
    guide = [f"{section}.autoguide={last_checkpoint(row.guide, args)}"] if row.guide else []
    method, _ = load_method(last_checkpoint(row.run, args), args.device,
                            [*row.overrides, *guide, *smoke])
    gen = torch.Generator(device=device).manual_seed(args.seed)
    labels = balanced_labels(n, method.num_classes) if method.num_classes else None
    out, start = [], time.monotonic()
    for i in tqdm(range(0, n, args.batch_size), desc=f"sampling {row.name}", leave=False):
        part = labels[i:i + args.batch_size] if labels is not None else None
        out.append(from_unit_range(method.sample(min(args.batch_size, n - i), generator=gen, progress=True,
                                                 labels=part)).cpu())
    return torch.cat(out), time.monotonic() - start, method.evaluations_per_sample(), method.sampling_precision, labels


def inpainting_row(run: str, cfg, mask_name: str, weight: float, args, test, train_images, extractor,
                   device) -> dict:
    """A denoising run's (config `cfg`) completions (--inpaint-draws of each) of --n-inpaint test
    images (held_out_images: the same for every row) under a mask, with reconstruction guidance of
    weight λ, scored (engine/evaluation/inpainting.py), and a grid of masked input, its first completion
    and original. The sampler is the config's as it is now (a run reused from
    before a config changed its sampler samples with the new one), given as one mapping: the config's
    own settings, never refused as a step count its net would ignore."""
    sampler = json.dumps(dataclasses.asdict(getattr(cfg, cfg.method).sampler))
    method, _ = load_method(last_checkpoint(run, args), args.device,
                            [f"{cfg.method}.inpaint_guidance={weight}", f"{cfg.method}.sampler={sampler}"])
    images, labels = held_out_images(test, min(args.n_inpaint, len(test)))
    images = to_unit_range(images)
    known = mask(mask_name, tuple(images.shape), torch.Generator().manual_seed(args.seed))
    gen = torch.Generator(device=device).manual_seed(args.seed)
    start = time.monotonic()
    completed = complete(method, images, known, args.batch_size, gen, draws=args.inpaint_draws)
    seconds = (time.monotonic() - start) / args.inpaint_draws  # one draw's, as every other row's
    with torch.no_grad():
        scores = inpainting_scores(completed, images, labels, known, train_images,
                                   lambda x: extractor(from_unit_range(x).to(device))[1])
    name = f"inpaint_{run}_{mask_name.replace(':', '')}" + ("" if weight else "_replacement")
    grid = comparison_rows(images[:8], known[:8], completed[0, :8])
    save_grid(grid, Path(args.out) / args.dataset.stem / f"{name}.png", nrow=8)
    guide = f"reconstruction guidance λ = {weight:g}" if weight else "replacement only"
    return {"row": name, "run": run, "mask": mask_name, "sampler": f"{method.noise.sampler.name}, {guide}",
            "sample_seconds": seconds, **scores}


def model_likelihood(run: str, args, images: torch.Tensor) -> dict:
    """Bits/dim of the test images under a denoising run's EMA model (RK45 on the probability-flow
    ODE, one Rademacher probe per image; engine/evaluation/bits_per_dim.py), the same dequantisation
    for every model and baseline."""
    method, _ = load_method(last_checkpoint(run, args), args.device)
    progress(f"bits/dim of {run} on {len(images)} test images")
    return model_bits_per_dim(method, images, generator=torch.Generator().manual_seed(args.seed), progress=True)


def baseline_likelihoods(args, images: torch.Tensor, train_images: torch.Tensor) -> dict:
    return {name: gaussian_bits_per_dim(train_images, images, full, torch.Generator().manual_seed(args.seed))
            for name, full in (("diagonal", False), ("full", True))}


def real_rows(args, train_images: torch.Tensor, n: int):
    """The training split's first n images in a fixed random order (the floor row)."""
    idx = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(args.seed))[:n]
    return train_images[idx]


def describe_run(name: str, args) -> str:
    """A run's config and overrides as the table shows them, with how its checkpoint says it ran where
    that is not plain fp32 eager or differs from the config now (a U-Net saved before
    model.adaptive_norm; a run trained before its config asked for `precision: auto` and compile)."""
    run = args.dataset.runs[name]
    text = f"{run.config} {' '.join(run.overrides)}".strip()
    path = last_checkpoint(name, args)
    if not path.is_file():
        return text
    saved = saved_config(path, path.stat().st_mtime_ns)
    if (saved.get("model") or {}).get("adaptive_norm") is False:
        text += " (trained with model.adaptive_norm=false)"
    done = Path(args.runs) / name / "results_training.json"
    precision = json.loads(done.read_text()).get("precision") if done.is_file() else None
    precision = precision or saved.get("precision", "fp32")
    compiled = bool((saved.get("train") or {}).get("compile"))
    now = read_yaml(ROOT / "configs" / run.config)
    fast_now = now.get("precision", "fp32") != "fp32" or (now.get("train") or {}).get("compile")
    if precision != "fp32" or compiled or fast_now:
        text += f" (trained in {precision}, {'compiled' if compiled else 'eager'})"
    return text


@functools.cache
def saved_config(path: Path, mtime_ns: int) -> dict:
    """A checkpoint's config, read once per file version (every row of a run asks)."""
    return load_checkpoint(path)["config"]


def redescribed(row: dict, run: str | None, args) -> str:
    """A kept row's config column, its run's part described again from the checkpoint (how it ran
    against the config now); as it was when the run is gone. Its guide's or teacher's part is kept as
    scored."""
    if not run or not last_checkpoint(run, args).is_file():
        return row["config"]
    _, *others = row["config"].split("; ")
    kept = [part for part in others if part.startswith(("guide ", "teacher "))]
    return "; ".join([describe_run(run, args), *kept])


def partial(args) -> bool:
    """Whether --methods chose only some of the table's rows (the others then come from its last run)."""
    return not set(args.methods) >= set(args.dataset.methods)


def training_machine(names, args) -> str:
    """The one machine every run of the table trained on: a finished run's from its summary (one written
    before summaries named it: this machine), a run still to train this one. Rows train for equal minutes,
    so runs of two machines would compare machines, not methods (checked before anything is trained)."""
    where = {}
    for name in names:
        path = Path(args.runs) / name / "results_training.json"
        done = json.loads(path.read_text()) if path.is_file() and name not in args.to_retrain else {}
        where[name] = done.get("machine", args.trains_on)
    first = next(iter(where), None)
    other = next((name for name in where if where[name] != where[first]), None)
    if other:
        raise ConfigError(f"{Path(args.runs) / first} trained on {where[first]}, {Path(args.runs) / other} on "
                          f"{where[other]}: rows trained for equal minutes on different machines do not compare; "
                          f"pass --retrain (with --methods for the rows of the runs to train again) on one machine")
    return where[first] if first else args.trains_on


def refuse_another_machine(path: Path, here: str, args):
    """Rows train for equal minutes, so a partial run may only join a table whose runs trained on the
    machine its own runs train on (`here`): checked before anything is trained."""
    if not (partial(args) and path.is_file()):
        return
    try:
        there = json.loads(path.read_text())["header"]["machine"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path} is not a results table (no header's machine: {type(e).__name__}): restore it "
                          f"or pass --out DIR for a table of its own") from None
    if there != here:
        raise ConfigError(f"{path} was made on {there}, this is {here}: rows trained for equal minutes on "
                          f"different machines do not compare; run every method here (no --methods), or "
                          f"pass --out DIR for a table of its own")


def merge_with_previous(path: Path, header: dict, results: list, inpainted: list, args):
    """The rows just scored, with the previous table's other rows when --methods chose only some:
    kept only if they were scored in the same features against the same reference (the same
    classifier and test split), each still carrying the date it was scored (`scored`); the machine
    is the same (refuse_another_machine)."""
    today = header["date"]
    for r in [*results, *inpainted]:
        r.setdefault("scored", today)
    if not (partial(args) and path.is_file()):
        return results, inpainted
    previous = json.loads(path.read_text())
    old = previous.get("header", {})
    same = (old.get("classifier") == header["classifier"] and old.get("n_ref") == header["n_ref"]
            and old.get("seed") == header["seed"])
    if not same:
        progress(f"note: {path} was scored against another classifier or reference: its other rows are dropped")
        return results, inpainted
    new = {r["row"] for r in [*results, *inpainted]}
    order = {r.name: i for i, r in enumerate(args.dataset.rows)}
    run_of = {r.name: r.run for r in args.dataset.rows}
    kept = [dict(r, scored=r.get("scored", old.get("date")), config=redescribed(r, run_of.get(r["row"]), args))
            for r in previous.get("rows", []) if r["row"] not in new and r["row"] in order]
    merged = sorted(kept + results, key=lambda r: order.get(r["row"], len(order)))
    kept_inpaint = [dict(r, scored=r.get("scored", old.get("date"))) for r in previous.get("inpainting", [])
                    if r["row"] not in new]
    if "baselines" in old and not header.get("baselines"):
        header["baselines"] = old["baselines"]
    return merged, kept_inpaint + inpainted


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=sorted(DATASETS), default="fashion_mnist",
                   help="the table's data set (its configs: configs/<data>_*_cpu.yaml)")
    p.add_argument("--methods", help="rows to produce (default all): for fashion_mnist "
                                     f"{','.join(METHODS)}; for cifar10 {','.join(DATASETS['cifar10'].methods)}")
    p.add_argument("--reuse", action="store_true", help="score finished runs only; train nothing")
    p.add_argument("--retrain", action="store_true", help="delete the selected rows' runs and train them again (a teacher "
                   "they distil is reused when finished: select its rows too to retrain it)")
    p.add_argument("--train-only", action="store_true", help="train the runs that are missing, then stop")
    p.add_argument("--runs", help="where the runs live (default runs/results; with --smoke, OUT/runs)")
    p.add_argument("--out", help="writes OUT/results.md and OUT/results/*.png (default docs, and the README's "
                                 "table; --smoke needs it)")
    p.add_argument("--classifier", help="evaluation classifier (default RUNS/classifier.pt; trained if absent)")
    p.add_argument("--data-root", help="the data set's folder (default datasets for Fashion-MNIST, "
                                       "datasets/cifar10-jpeg for CIFAR-10: train.zip and test.zip, or "
                                       "torchvision's cifar-10-batches-py/)")
    p.add_argument("--n", type=int, help="samples scored per row (default 1,000; CIFAR-10 2,000)")
    p.add_argument("--n-langevin", type=int, default=300, help="samples scored per annealed-Langevin row")
    p.add_argument("--n-bpd", type=int, help="test images for bits/dim (0: skip; default 200, CIFAR-10 0)")
    p.add_argument("--n-inpaint", type=int, default=500, help="test images completed per inpainting row")
    p.add_argument("--inpaint-draws", type=int, default=4, help="completions of each image per inpainting row "
                   "(its PSNR column is one draw's; another gives their mean's)")
    p.add_argument("--bpd-methods", default="ncsn,dae", help="runs given a bits/dim (ebm: slow on a CPU)")
    p.add_argument("--batch-size", type=int, default=500, help="samples drawn at once")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in a process of its own on "
                   "1/JOBS of the threads (default 1: one at a time on all of them). Runs that share the machine "
                   "make fewer steps in their minutes, so the runs of one table all train with the same --jobs: "
                   "their summaries and the table's header name it with the machine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--smoke", action="store_true", help="3 training steps, tiny networks, --n 16: a test")
    args = p.parse_args(argv)
    dataset = args.dataset = DATASETS[args.data]
    args.data_root = args.data_root or dataset.root
    args.n = dataset.n if args.n is None else args.n
    args.n_bpd = dataset.n_bpd if args.n_bpd is None else args.n_bpd
    methods = dataset.methods
    args.methods = [m.strip() for m in (args.methods or ",".join(methods)).split(",") if m.strip()]
    bad = [m for m in args.methods if m not in methods]
    if bad or not args.methods:
        raise ConfigError(f"--methods: unknown method {bad[0] if bad else '(none)'!r} for --data {args.data}; "
                          f"choose from {','.join(methods)}")
    if args.reuse and (args.retrain or args.train_only):
        raise ConfigError(f"--reuse and {'--retrain' if args.retrain else '--train-only'} exclude each other: pick one")
    if args.smoke:
        if args.out is None:
            raise ConfigError("--smoke: pass --out DIR for its numbers and grids (they never go to docs/ unless "
                              "--out says so)")
        args.n, args.n_langevin, args.batch_size, args.n_bpd, args.n_inpaint = 16, 8, 8, min(args.n_bpd, 4), 8
    args.out = args.out or str(ROOT / "docs")
    args.runs = args.runs or str(Path(args.out) / "runs" if args.smoke else ROOT / "runs" / dataset.stem)
    if min(args.n, args.n_langevin, args.n_inpaint) < 4 or args.batch_size < 1 or args.n_bpd < 0 \
            or args.inpaint_draws < 1:
        raise ConfigError("--n, --n-langevin and --n-inpaint must be at least 4, --batch-size and --inpaint-draws "
                          "positive and --n-bpd >= 0")
    if not 1 <= args.jobs <= torch.get_num_threads():
        raise ConfigError(f"--jobs {args.jobs}: torch runs on {torch.get_num_threads()} threads here, and each run "
                          f"trained at once needs one: pass 1 to {torch.get_num_threads()}")
    args.job_threads = torch.get_num_threads() // args.jobs
    args.bpd_methods = [m.strip() for m in args.bpd_methods.split(",") if m.strip()]
    if set(args.bpd_methods) - {"ncsn", "dae", "ebm"}:
        raise ConfigError(f"--bpd-methods: choose from ncsn,dae,ebm, not {','.join(args.bpd_methods)}")
    args.classifier = args.classifier or str(Path(args.runs) / "classifier.pt")
    return args


@cli
def main(argv=None):
    args = parse_args(argv)
    start = time.monotonic()
    device = resolve_device(args.device)
    out = Path(args.out)
    for folder, what in ((out, "--out"), (Path(args.runs), "--runs")):
        require_writable(folder, what, folder=True)
        folder.mkdir(parents=True, exist_ok=True)
    dataset, args.machine = args.dataset, machine(device)
    args.trains_on = args.machine if args.jobs == 1 else \
        f"{args.machine}, {args.jobs} runs at a time on {args.job_threads} thread{'s' * (args.job_threads > 1)} each"
    rows = [r for r in dataset.rows if r.method in args.methods]
    inpaint = dataset.inpainting if "inpaint" in args.methods else []
    # Every input is checked before any run is trained or deleted (--retrain): machines, configs, then data.
    own = [*(name for r in rows for name in (r.run, r.guide) if name), *(run for run, _, _ in inpaint)]
    # a teacher that one of them distils is another row's run: trained first when missing, but not retrained
    # by --retrain unless its rows are selected (they would be left describing a deleted run)
    runs = [name for run in own for name in (teacher_of(run, args), run) if name]
    args.to_retrain = set(own) if args.retrain else set()
    trained_on = training_machine(dict.fromkeys(runs), args)
    refuse_another_machine(out / f"{dataset.stem}.json", trained_on, args)
    configs = {name: run_config(name, args) for name in dict.fromkeys(runs)}
    test_cfg = data_config(args, "test")
    test = build_dataset(test_cfg)
    train_images = build_dataset(data_config(args)).data
    trained = train_runs(configs, args)
    classifier = ensure_classifier(args, device)
    trained_at = time.monotonic()
    if args.train_only:
        progress(f"trained: {', '.join(trained) or 'nothing'} and the classifier {args.classifier} in {args.runs} "
                 f"({(trained_at - start) / 60:.1f} minutes)")
        return
    extractor = build_extractor(f"classifier:{args.classifier}", device, False)
    reference = reference_stats(test, test_cfg, extractor, device, cache=Path(args.runs) / "stats")
    likelihoods, baselines = {}, None
    if args.n_bpd:
        images = held_out_images(test, args.n_bpd)[0]  # the points every bits/dim figure is measured on
        baselines = baseline_likelihoods(args, images, train_images)
        for run in dict.fromkeys(r.run for r in rows if r.method in args.bpd_methods):
            likelihoods[run] = model_likelihood(run, args, images)
    results, test_classes = [], None
    for row in tqdm(rows, desc="rows"):
        n = args.n_langevin if row.langevin else args.n
        labels, sampler = None, row.sampler
        if row.run is None:
            images, seconds, nfe, run = real_rows(args, train_images, n), None, None, {}
            config = "–"
        else:
            images, seconds, nfe, precision, labels = sample_row(row, args, device, n)
            sampler += "" if precision == "fp32" else f", net in {precision}"
            run, config = trained[row.run], describe_run(row.run, args)
            for kind, other in (("guide", row.guide), ("teacher", teacher_of(row.run, args))):
                if other:  # a guide's or a teacher's training counts toward the row's
                    run = dict(run, seconds=run["seconds"] + trained[other]["seconds"])
                    config += f"; {kind} {other}: {describe_run(other, args)}, {trained[other]['steps']:,} steps"
        if labels is not None:  # a conditional model's grid: a row per class, its first 6 samples
            order = torch.cat([torch.nonzero(labels == c).flatten()[:6] for c in range(int(labels.max()) + 1)])
            save_grid(images[order].float() / 127.5 - 1, out / dataset.stem / f"{row.name}.png", nrow=6)
            if test_classes is None:
                test_classes = class_reference(test, extractor, device, args.batch_size)
        else:
            save_grid(images[:64].float() / 127.5 - 1, out / dataset.stem / f"{row.name}.png", nrow=8)
        batches = tqdm(images.split(args.batch_size), desc=f"features {row.name}", leave=False)
        scores = score(batches, extractor, reference, device, seed=args.seed, labels=labels,
                       classes=test_classes if labels is not None else None)
        results.append({"row": row.name, "method": row.method, "config": config, "sampler": sampler,
                        "train_seconds": run.get("seconds"), "steps": run.get("steps"),
                        "images": run.get("images"), "nfe": nfe, "sample_seconds": seconds, **scores,
                        "likelihood": None if row.guide else likelihoods.get(row.run)})  # guided: another density
        progress(f"{row.name}: FID {scores['fid']:.2f}, KID {scores['kid']:.4f}, precision "
                 f"{scores['precision']:.3f}, recall {scores['recall']:.3f} (n {scores['n']})"
                 + (f", class accuracy {scores['class_accuracy']:.3f}" if "class_accuracy" in scores else ""))
    inpainted = []
    for run, mask_name, weight in inpaint:
        inpainted.append(inpainting_row(run, configs[run], mask_name, weight, args, test, train_images, extractor,
                                        device))
        progress(f"{inpainted[-1]['row']}: PSNR {inpainted[-1]['psnr_model']:.2f} dB (mean fill "
                 f"{inpainted[-1]['psnr_mean_fill']:.2f}, nearest {inpainted[-1]['psnr_nearest']:.2f}), class kept "
                 f"{inpainted[-1]['class_agreement_model']:.3f}")
    header = {"data": dataset.title, "machine": trained_on,
              **({"scored_on": args.machine} if args.machine != trained_on else {}),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "seed": args.seed,
              "n_ref": reference.n, "baselines": baselines, "classifier": {"width": classifier["arch"]["width"],
                                                   "epochs": classifier.get("epochs"),
                                                   "accuracy": classifier["test_accuracy"]}}
    results, inpainted = merge_with_previous(out / f"{dataset.stem}.json", header, results, inpainted, args)
    write_tables(dataset, out, header, results, inpainted)
    end = time.monotonic()
    progress(f"{(end - start) / 60:.1f} minutes in all: {(trained_at - start) / 60:.1f} reading the data and "
             f"training (the runs and the classifier that were missing), {(end - trained_at) / 60:.1f} scoring")


def write_tables(dataset: DataSet, out: Path, header: dict, results: list, inpainted: list):
    """OUT/<stem>.md, OUT/<stem>.json and, when OUT is docs/, the README's block: all from the rows."""
    stem = dataset.stem
    body = table(results, header) + "\n" + nfe_table(results)
    extra = "\n".join(t for t in (class_spread_table(results), conditional_table(results), inpainting_table(inpainted)) if t)
    grid_rows = results + inpainted
    title = "# Results" + ("" if dataset.name == "fashion_mnist" else f": {dataset.title}")
    write_text_atomic(out / f"{stem}.md", f"{title}\n\n" + body + "\n" + extra + "\n" + grids_markdown(grid_rows, stem))
    write_text_atomic(out / f"{stem}.json", json.dumps({"header": header, "rows": results, "inpainting": inpainted},
                                                       indent=1) + "\n")
    if out.resolve() == (ROOT / "docs").resolve():
        write_readme(ROOT / "README.md", body + "\n" + extra + "\n" + grids_markdown(grid_rows, f"docs/{stem}"),
                     dataset.markers)
    progress(f"wrote {out / f'{stem}.md'} ({len(results)} rows) and {len(results)} grids in {out / stem}")


if __name__ == "__main__":
    main()
