"""A data set's features under one extractor: computed once, cached, reused by every evaluation.

The reference of a run is the data it was trained on (its data config: name, split, image size;
all of its images). Files live in $GENMODELS_CACHE/stats/ (default ~/.cache/genmodels/stats/), one per
(data set, split, image shape, extractor, fingerprint of the images), written atomically and read
with torch.load(weights_only=True); a stale or corrupt file is recomputed.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from common.checkpoint import load_tagged, save_tagged
from common.errors import CheckpointError, UserError
from common.signals import check_stop
from data import TensorData
from .scores import frechet_metric

FORMAT, VERSION = "genmodels-reference", 1
MAX_FEATURES = 50_000  # KID and precision/recall use at most this many reference features


@dataclass
class Reference:
    name: str                   # e.g. "fashion_mnist/train 1x28x28"
    n: int                      # images in the set; all of them enter the FID moments
    feature_sum: torch.Tensor   # Σφ (float64)
    outer_sum: torch.Tensor     # Σφφᵀ (float64)
    features: torch.Tensor      # a fixed random subset of ≤ MAX_FEATURES features (float32)

    def frechet(self, device="cpu"):
        """A streaming FID metric whose real side already holds this set."""
        fid = frechet_metric(self.features.shape[1], device)
        fid.real_features_sum = self.feature_sum.to(device)
        fid.real_features_cov_sum = self.outer_sum.to(device)
        fid.real_features_num_samples = torch.tensor(self.n, device=device)
        return fid


def image_batches(dataset, batch_size: int):
    """uint8 NCHW batches of an in-memory or file-backed image data set, in order."""
    if dataset.info.kind != "image":
        raise UserError(f"sample-quality metrics need images; {dataset.info.name} holds "
                        f"{dataset.info.kind}")
    if isinstance(dataset, TensorData):
        yield from dataset.data.split(batch_size)
    else:
        for x, _ in torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=2):
            yield x


@torch.no_grad()
def extract(extractor, batches, device):
    """(features, logits) per batch of uint8 images."""
    for x in batches:
        check_stop()
        features, logits = extractor(x.to(device))
        yield features.float(), logits.float()


def compute_reference(name: str, batches, extractor, device) -> Reference:
    fid, kept = frechet_metric(extractor.num_features, device), []
    for features, _ in extract(extractor, batches, device):
        fid.update(features.double(), real=True)
        kept.append(features.cpu())
    features = torch.cat(kept)
    subset = torch.randperm(len(features), generator=torch.Generator().manual_seed(0))[:MAX_FEATURES]
    return Reference(name, len(features), fid.real_features_sum.cpu(), fid.real_features_cov_sum.cpu(),
                     features[subset])


def fingerprint(dataset, data_cfg) -> str:
    """Content hash of an in-memory set (a fixture and the real set never share a cache entry);
    the data config's hash for file-backed sets."""
    h = hashlib.sha256()
    if isinstance(dataset, TensorData):
        h.update(dataset.data.cpu().contiguous().numpy().tobytes())
    else:
        h.update(json.dumps(vars(data_cfg), sort_keys=True, default=str).encode())
    return h.hexdigest()[:12]


def cache_dir() -> Path:
    root = os.environ.get("GENMODELS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or
                                                     Path.home() / ".cache") / "genmodels"
    return Path(root) / "stats"


def load_reference(path: Path) -> Reference | None:
    """The cached statistics in `path`; None when they are stale, foreign, corrupt or incomplete."""
    try:
        raw = load_tagged(path, FORMAT, VERSION, "reference statistics", "", "")
        return Reference(raw["name"], raw["n"], raw["feature_sum"], raw["outer_sum"], raw["features"])
    except (CheckpointError, KeyError):
        return None


def reference_stats(dataset, data_cfg, extractor, device, batch_size: int = 250,
                    cache: Path | None = None) -> Reference:
    """The cached reference of `dataset` (a data set built from `data_cfg`), computing it if needed."""
    shape = "x".join(str(s) for s in dataset.info.shape)
    name = f"{data_cfg.name}/{data_cfg.split} {shape}"
    key = f"{data_cfg.name}-{data_cfg.split}-{shape}-{extractor.id}-{fingerprint(dataset, data_cfg)}"
    path = (cache or cache_dir()) / f"{key}.pt"
    reference = load_reference(path) if path.is_file() else None
    if reference is None:  # the first time for this data and these features: say so, with a bar
        batches = tqdm(image_batches(dataset, batch_size), total=math.ceil(len(dataset) / batch_size),
                       desc=f"reference statistics of {name} (once; cached in {path.parent})", unit="batch",
                       leave=False, mininterval=1.0)
        reference = compute_reference(name, batches, extractor, device)
        save_tagged(path, FORMAT, VERSION, vars(reference))
    return reference
