"""FID, KID and Inception Score (torchmetrics, in float64) and improved precision and recall
(torch-fidelity).

Every metric compares features, not images: the extractor runs once per batch (features.py) and its
outputs feed all of them, so torchmetrics' metrics are given an identity "extractor". FID streams:
its state is the float64 sums Σφ and Σφφᵀ, so a reference set's state is computed once and cached
(reference.py). The random subsets of KID and the splits of IS are drawn from a seeded, forked RNG:
scores are reproducible and the caller's random stream (a training run's) is left untouched.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn
from torch_fidelity.metric_prc import prc_features_to_metric
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance


class Given(nn.Module):
    """Identity: the features handed to torchmetrics are already extracted."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features):
        return features


def frechet_metric(num_features: int, device="cpu") -> FrechetInceptionDistance:
    """Streaming FID, FID = ‖μ_r − μ_g‖² + tr(Σ_r + Σ_g − 2(Σ_r Σ_g)^½) (Heusel et al. 2017),
    from float64 sums; update(features.double(), real=...)."""
    return FrechetInceptionDistance(feature=Given(num_features), reset_real_features=False).to(device)


def _quietly(metric_cls, **kwargs):
    with warnings.catch_warnings():  # "will save all extracted features in buffer": that is the point
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        return metric_cls(**kwargs)


def kernel_inception_distance(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): the unbiased MMD² with the cubic kernel (φ·ψ/d + 1)³, averaged
    over random subsets of min(subset_size, n_real, n_fake) points; (mean, std over subsets)."""
    size = min(subset_size, len(real), len(fake))
    kid = _quietly(KernelInceptionDistance, feature=Given(real.shape[1]), subsets=subsets,
                   subset_size=size)
    kid.update(real.double(), real=True)
    kid.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = kid.compute()
    return mean.item(), std.item()


def inception_score(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """IS (Salimans et al. 2016) = exp E_x KL(p(y|x) ‖ p(y)), per split of the samples; (mean, std)."""
    score = _quietly(InceptionScore, feature=Given(logits.shape[1]), splits=min(splits, len(logits)))
    score.update(logits.double())
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*degrees of freedom.*")  # one split: no std
        torch.manual_seed(seed)
        mean, std = score.compute()
    return mean.item(), (std.item() if score.splits > 1 else 0.0)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, block: int = 2048) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of
    balls reaching each point's k-th nearest neighbour; precision is the fraction of fakes on the
    real manifold (quality), recall the fraction of reals on the fake manifold (coverage).
    torch-fidelity's implementation, on distance blocks of `block` rows (save_cpu_ram)."""
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set")
    out = prc_features_to_metric(fake.float(), real.float(), prc_neighborhood=k, prc_batch_size=block,
                                 save_cpu_ram=True, verbose=False)
    return out["precision"], out["recall"]


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two sets of features (float64)."""
    fid = frechet_metric(real.shape[1], real.device)
    fid.update(real.double(), real=True)
    fid.update(fake.double(), real=False)
    return fid.compute().item()


def class_scores(fake: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, real: torch.Tensor,
                 real_labels: torch.Tensor, classifier: bool = True, seed: int = 0) -> dict:
    """A class-conditional model's scores: the evaluation classifier's agreement with the requested
    classes (`classifier`: the logits are this data set's classes), and FID and KID per class, each
    class's samples against the real images of that class, with their means. Per-class FID is biased
    upward at small n (n/K samples a class), so it compares runs at equal n only."""
    out = {}
    if classifier:
        out["class_accuracy"] = (logits.argmax(1).cpu() == labels.cpu()).float().mean().item()
    fids, kids = {}, {}
    labels, real_labels = labels.cpu(), real_labels.cpu()
    for c in sorted(set(labels.tolist())):
        f, r = fake[(labels == c).to(fake.device)], real[(real_labels == c).to(real.device)]
        if len(f) >= 2 and len(r) >= 2:
            fids[c] = frechet_distance(r, f)
            kids[c] = kernel_inception_distance(r, f, seed=seed)[0]
    out.update(class_fid=sum(fids.values()) / max(len(fids), 1), class_kid=sum(kids.values()) / max(len(kids), 1),
               class_fids={str(c): v for c, v in fids.items()})
    return out
