"""Feature extractors: uint8 NCHW images → (features, logits), everything the metrics need.

    inception         the standard FID network: Inception-v3 pool3 features (2048) and the unbiased
                      logits (1008) of the Inception Score, torch-fidelity's port of the TF graph
                      (TF1-compatible bilinear resize to 299 px), so scores compare with the literature
    classifier:PATH   a classifier trained by scripts/train_classifier.py: its penultimate layer and
                      logits; needs no download and sees what matters for the data set at hand

Images enter as uint8, the format of both data sets and saved samples, so real and generated images
are quantised alike. Grayscale images are repeated to RGB for RGB networks.
"""
from __future__ import annotations

import hashlib
import urllib.error
from pathlib import Path

import torch
from torch import nn

from common.checkpoint import LOAD_ERRORS
from common.errors import ConfigError, UserError
from common.registry import lookup, names
from data import to_unit_range
from data.base import fit_size
from .classifier import load_classifier

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


def inception_url() -> str:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    return URL_INCEPTION_V3


def inception_weights_path() -> Path:
    """Where torch-fidelity looks for the weights (through torch.hub): $TORCH_HOME/hub/checkpoints/,
    with TORCH_HOME defaulting to $XDG_CACHE_HOME/torch, i.e. ~/.cache/torch."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def fetch_inception_weights(download: bool) -> Path:
    path = inception_weights_path()
    how = (f"download {inception_url()} on a connected machine and place it at {path} (the folder "
           f"follows $TORCH_HOME)")
    if not path.is_file():
        if not download:
            raise UserError(f"Inception-v3 weights not found at {path}: {how}, or allow the download "
                            f"with --download (eval.download=true)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(inception_url(), str(path))
        except (urllib.error.URLError, OSError) as e:
            raise UserError(f"could not download the Inception-v3 weights ({e}): {how}") from None
    try:
        torch.load(path, map_location="cpu", weights_only=True)  # a plain state dict, nothing else
    except LOAD_ERRORS as e:
        raise UserError(f"{path} is not the Inception-v3 weight file ({type(e).__name__}): delete it "
                        f"and {how}") from None
    return path


class InceptionFeatures(nn.Module):
    def __init__(self, download: bool = False):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        path = fetch_inception_weights(download)
        self.id, self.num_features, self.num_classes = "inception-v3-compat", 2048, 1008
        self.net = FeatureExtractorInceptionV3(self.id, ["2048", "logits_unbiased"],
                                               feature_extractor_weights_path=str(path))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        features, logits = self.net(images)
        return features, logits


class ClassifierFeatures(nn.Module):
    def __init__(self, path, device="cpu"):
        super().__init__()
        self.model, ckpt = load_classifier(path, device)
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
        self.id = f"classifier-{digest}"  # the weights, not the file name, key the cached statistics
        self.num_features, self.num_classes = ckpt["feature_dim"], ckpt["num_classes"]
        self.image_shape = tuple(ckpt["image_shape"])
        self.path, self.data = Path(path), str(ckpt.get("data", ""))  # e.g. fashion_mnist, image_folder:x.zip
        # its classes in label order; a file written before they were recorded: its data set's own, if
        # that data set has fixed ones (fashion_mnist, cifar10)
        self.classes = tuple(ckpt.get("classes") or known_classes(self.data.split(":", 1)[0]))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        channels, size = self.image_shape[0], self.image_shape[-1]
        if images.shape[1] != channels:
            if not (images.shape[1] == 1 and channels == 3):
                raise UserError(f"the classifier takes {channels}-channel images, these have "
                                f"{images.shape[1]}: train one on this data set")
            images = images.expand(-1, 3, -1, -1)
        x = to_unit_range(fit_size(images, size))
        features = self.model.features(x)
        return features, self.model.fc(features)


def build_extractor(spec: str, device, download: bool = False) -> nn.Module:
    """`inception` or `classifier:PATH` → an eval-mode module, images → (features, logits)."""
    if spec == "inception":
        extractor = InceptionFeatures(download)
    elif spec.startswith("classifier:") and len(spec) > len("classifier:"):
        extractor = ClassifierFeatures(spec[len("classifier:"):], device)
    else:
        raise ConfigError(f"unknown feature extractor {spec!r}: use 'inception' or "
                          f"'classifier:PATH' (a file from scripts/train_classifier.py)")
    return extractor.to(device).eval().requires_grad_(False)


def known_classes(data_name: str) -> tuple:
    """The class names a registered data set always has (`@register("dataset", ..., classes=...)`)."""
    return getattr(lookup("dataset", data_name), "classes", ()) if data_name in names("dataset") else ()


def describe_classes(classes) -> str:
    shown = ", ".join(classes[:3]) + (", …" if len(classes) > 3 else "")
    return f"{len(classes)} classes: {shown}"


def require_fits(extractor, info, what: str):
    """A data-set classifier's features, and its labels, mean something only on the data it was trained
    on: the same classes in the same label order (CIFAR-10 from torchvision's batches or from a zip of
    its class folders alike), or, where the classifier or the data (`info`, a DataInfo) names none,
    the same data set. Refuse other data, naming the option `what`."""
    trained_on = getattr(extractor, "data", None)
    if not trained_on:  # Inception: any images
        return
    theirs, ours = tuple(getattr(extractor, "classes", ())), tuple(info.classes)
    if theirs and ours:
        if theirs == ours:
            return
        trained_on, data = f"{trained_on} ({describe_classes(theirs)})", f"{info.name} ({describe_classes(ours)})"
    elif trained_on.split(":", 1)[0] == info.name:
        return
    else:
        data = info.name
    raise ConfigError(f"{what}: the classifier {extractor.path} was trained on {trained_on}, these samples "
                      f"are {data}: train one with scripts/train_classifier.py --data {info.name}")
