"""Images → every metric against a reference; and the evaluation the training loop runs every
eval.every steps (logged as eval/<extractor>/fid, eval/<extractor>/kid, ..., as scripts/evaluate.py
logs a checkpoint's)."""
from __future__ import annotations

import dataclasses
import math
import time

import torch
from tqdm import tqdm

from common.errors import ConfigError
from data import build_dataset, from_unit_range
from .features import ClassifierFeatures, build_extractor, require_fits
from .reference import Reference, extract, image_batches, reference_stats
from .scores import class_scores, inception_score, kernel_inception_distance, precision_recall

METRICS = ("fid", "kid", "kid_std", "is", "is_std", "precision", "recall")


def generated_batches(method, n: int, batch_size: int, seed: int, ema: bool = True, labels=None):
    """uint8 samples in batches, drawn with their own generator: never from the global RNG, so
    evaluating inside a training run leaves the run (and its exact resume) unchanged. `labels`: the
    classes of a class-conditional model's samples, n of them."""
    gen = torch.Generator(device=method.device).manual_seed(seed)
    for start in range(0, n, batch_size):
        part = None if labels is None else labels[start:start + batch_size]
        yield from_unit_range(method.sample(min(batch_size, n - start), generator=gen, ema=ema, labels=part))


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """0, 1, …, K − 1, 0, 1, …: n classes, each as often as n allows (the per-class scores' samples)."""
    return torch.arange(n) % num_classes


def class_reference(dataset, extractor, device, batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of every image of `dataset`: the real side of the per-class scores."""
    feats = [f.cpu() for f, _ in extract(extractor, image_batches(dataset, batch_size), device)]
    return torch.cat(feats), torch.as_tensor(dataset.labels)[:sum(len(f) for f in feats)]


def test_split(data_cfg, real_path=None, what: str = "--real"):
    """The test split of the training data; image_folder data takes the test folder `real_path`."""
    changes = {"split": "test"}
    if data_cfg.name == "image_folder":
        if not real_path:
            raise ConfigError(f"{what} with image_folder data needs --real-path <test folder or .zip>")
        changes = {"path": real_path}
    return build_dataset(dataclasses.replace(data_cfg, **changes))


def real_batches(data_cfg, n: int | None, batch_size: int, real_path=None):
    """(batches of n images (held_out_images), or all, of the training data's test split; a description):
    the floor a perfect generator would reach. image_folder data takes the test folder `real_path`."""
    dataset = test_split(data_cfg, real_path)
    batches = image_batches(dataset, batch_size) if n is None or n >= len(dataset) else \
        held_out_images(dataset, n)[0].split(batch_size)
    return batches, f"real {data_cfg.name}/test"


def held_out_images(dataset, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (uint8) of a test split and their labels: the first n of one fixed random order of
    the split (seed 0; n None: all of it), so that any n cover its classes as the whole split does.
    An image folder lists its classes one after another (CIFAR-10's test.zip: its first 1,000 images
    are airplanes), and its first n are one class or two."""
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n]
    if hasattr(dataset, "data"):  # held in memory
        return dataset.data[idx], torch.as_tensor(dataset.labels)[idx]
    items = [dataset[i] for i in idx.tolist()]
    return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


def score(batches, extractor, reference: Reference, device, seed: int = 0, k: int = 3, labels=None,
          classes: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """FID of every image against the reference's full moments; KID and IS over random subsets and
    splits drawn with `seed`; precision/recall on equal numbers of generated and reference points.
    With the samples' requested `labels` and `classes` = class_reference(...): also the class
    scores (scores.class_scores: conditional accuracy when the extractor is a classifier of as many
    classes, per-class FID and KID)."""
    fid, features, logits = reference.frechet(device), [], []
    for f, l in extract(extractor, batches, device):
        fid.update(f.double(), real=False)
        features.append(f)
        logits.append(l)
    fake, logits = torch.cat(features), torch.cat(logits)
    real = reference.features.to(device)
    m = min(len(fake), len(real))
    kid, kid_std = kernel_inception_distance(real, fake, seed=seed)
    is_mean, is_std = inception_score(logits, seed=seed)
    precision, recall = precision_recall(real[:m], fake[:m], k)
    out = {"fid": fid.compute().item(), "kid": kid, "kid_std": kid_std, "is": is_mean,
           "is_std": is_std, "precision": precision, "recall": recall, "n": len(fake),
           "n_ref": reference.n}
    if isinstance(extractor, ClassifierFeatures):  # how the samples spread over the data's classes
        out["class_histogram"] = logits.argmax(1).bincount(minlength=logits.shape[1]).tolist()
    if labels is not None and classes is not None:
        is_classifier = getattr(extractor, "num_classes", None) == int(classes[1].max()) + 1
        out.update(class_scores(fake, logits, labels[:len(fake)], classes[0].to(device), classes[1],
                                is_classifier, seed))
    return out


def untouched_rng(device: torch.device):
    """Run the enclosed code on a forked copy of the global RNGs (CPU, and `device` if CUDA)."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


class TrainingEvaluator:
    """The loop's `eval:` hook: eval.n samples (the same latents every time) against the training
    data. The extractor is built at once (a missing file stops the run before it starts), the
    reference statistics on the first call. Both run on forked RNGs: building a network draws its
    initial weights, and a method's sampler may draw noise; neither may advance the run's random
    streams, or evaluating would change the run and its exact resume."""

    def __init__(self, cfg, dataset, device):
        self.cfg, self.dataset, self.device = cfg, dataset, torch.device(device)
        if dataset.info.kind != "image":
            raise ConfigError(f"eval.every: sample-quality metrics need images, {dataset.info.name} "
                              f"holds {dataset.info.kind}: set eval.every=0")
        with untouched_rng(self.device):
            self.extractor = build_extractor(cfg.eval.features, self.device, cfg.eval.download)
        require_fits(self.extractor, dataset.info, "eval.features")
        self.reference = None

    def __call__(self, method) -> dict[str, float]:
        e = self.cfg.eval
        start = time.monotonic()
        with untouched_rng(self.device):
            if self.reference is None:
                self.reference = reference_stats(self.dataset, self.cfg.data, self.extractor,
                                                 self.device, e.batch_size)
            batches = tqdm(generated_batches(method, e.n, e.batch_size, seed=self.cfg.seed + 2),
                           total=math.ceil(e.n / e.batch_size), desc=f"evaluation: {e.n} samples and their features",
                           unit="batch", leave=False, mininterval=1.0)
            scores = score(batches, self.extractor, self.reference, self.device, seed=self.cfg.seed)
        # One tag scheme with scripts/evaluate.py: scores in different features never share a chart.
        out = {f"eval/{self.extractor.id}/{k}": scores[k] for k in METRICS}
        out["perf/eval_seconds"] = time.monotonic() - start
        return out
