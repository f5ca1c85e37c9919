"""The data-set classifier behind `classifier:PATH` features, and its checkpoint format.

A ResNet-9 in the style of Page's DAWNBench CIFAR-10 entry ("How to train your ResNet", 2018):
conv-BN-ReLU blocks, three max-pooled stages and two residual blocks, ~94% on CIFAR-10 in a few dozen
epochs at width 64. Global max pooling makes it size-agnostic (28 px Fashion-MNIST works as is); the
pooled vector (8·width numbers) is the feature vector, the linear layer on top gives the logits.
"""
from __future__ import annotations

import torch
from torch import nn

from common.checkpoint import load_tagged, save_tagged
from common.errors import CheckpointError

FORMAT = "genmodels-classifier"  # distinct from training checkpoints ("genmodels-checkpoint")
VERSION = 1


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x):
        return x + self.body(x)


class Classifier(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 64):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            conv_bn(in_channels, w),
            conv_bn(w, 2 * w), nn.MaxPool2d(2), Residual(2 * w),
            conv_bn(2 * w, 4 * w), nn.MaxPool2d(2),
            conv_bn(4 * w, 8 * w), nn.MaxPool2d(2), Residual(8 * w),
            nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8 * w, num_classes)
        self.feature_dim = 8 * w

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer: (N, feature_dim)."""
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def finite_weights(model: nn.Module) -> bool:
    """No NaN or inf in any floating-point parameter or buffer (a diverged training leaves them)."""
    return all(bool(torch.isfinite(v).all()) for v in model.state_dict().values() if v.is_floating_point())


def save_classifier(path, model: Classifier, arch: dict, image_shape, data: str, test_accuracy: float,
                    classes=(), **extra):
    """Atomic write (common/checkpoint.py) under this module's own format tag. `classes`: the training
    data's class names in label order (DataInfo.classes), what decides which data its features fit."""
    save_tagged(path, FORMAT, VERSION, {"arch": arch, "state": {k: v.cpu() for k, v in model.state_dict().items()},
                                        "num_classes": arch["num_classes"], "feature_dim": model.feature_dim,
                                        "image_shape": list(image_shape), "data": data,
                                        "classes": list(classes), "test_accuracy": float(test_accuracy),
                                        **extra})


def load_classifier(path, device="cpu") -> tuple[Classifier, dict]:
    """(classifier in eval mode, its checkpoint); every problem is one CheckpointError line."""
    ckpt = load_tagged(path, FORMAT, VERSION, "classifier",
                       f"train one with `python scripts/train_classifier.py --data fashion_mnist --out {path}`",
                       "train it with scripts/train_classifier.py and pass classifier:<its --out file>")
    try:
        model = Classifier(**ckpt["arch"])
        model.load_state_dict(ckpt["state"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"classifier {path} is incomplete or does not match its architecture "
                              f"({type(e).__name__}): train it again") from None
    if not finite_weights(model):
        raise CheckpointError(f"classifier {path} has NaN or inf weights (its training diverged): train it "
                              f"again with a lower --lr")
    return model.to(device).eval(), ckpt
