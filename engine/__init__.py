"""The engine: what runs a method, above the packages that define methods (gan/, denoising/) and
data sets (data/), below the scripts. Importing it registers every part they define (common/registry.py).

    loop.py        the one training loop (train)
    build.py       a config's method, fresh (build) or from a checkpoint (load_method); devices, seeds
    runtime.py     how its networks run: device, channels_last, compile, autocast, fp16 scaling, DDP wrappers
    run_dir.py     a run directory's layout, its checks, and the checkpoint a resume continues
    logging.py     TensorBoard and metrics.jsonl;  images.py: sample grids;  distributed.py: DDP
    evaluation/    FID, KID, IS, precision/recall, their features and cached statistics, the classifier
    benchmark.py   the timed rows of scripts/benchmark.py

The names below are what the scripts use of the layers under the engine.
"""
import data  # noqa: F401  (registers the data sets)
import gan  # noqa: F401, I001  (registers gan and its parts, first)
import denoising  # noqa: F401  (registers dae, ncsn, ebm, dde and their parts)
from data import DataInfo, TensorData, build_dataset, from_unit_range, materialize, to_unit_range
from denoising.guidance import MASKS, mask
from .build import build, load_method, resolve_device, seed_everything
from .loop import Diverged, train

__all__ = ["DataInfo", "TensorData", "build_dataset", "from_unit_range", "to_unit_range", "materialize", "MASKS",
           "mask", "build", "load_method",
           "resolve_device", "seed_everything", "Diverged", "train"]
