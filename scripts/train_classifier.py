"""Train the data-set classifier whose features `--features classifier:PATH` evaluates with.

    python scripts/train_classifier.py --data fashion_mnist --out classifiers/fashion_mnist.pt
    python scripts/train_classifier.py --data image_folder --path datasets/cifar10-jpeg/train.zip \\
        --test-path datasets/cifar10-jpeg/test.zip --out classifiers/cifar10.pt
    python scripts/train_classifier.py --data fashion_mnist --out c.pt --loss smooth_f1 --temperature 4

Trains a ResNet-9 (engine/evaluation/classifier.py) with random crops (and flips for colour images),
reports the test-set accuracy and saves it, with the accuracy, in one checkpoint file.
"""
import argparse
import json
import math
import time

import _bootstrap  # noqa: F401

from common.config import DataConfig
from common.errors import ArgumentParser, ConfigError, UserError, cli
from common.paths import require_writable
from common.schema import check_seed, parse
from engine import TensorData, build_dataset, materialize, resolve_device
from engine.evaluation.classifier import finite_weights, save_classifier
from engine.evaluation.classifier_training import fit_classifier
from engine.evaluation.features import describe_classes


def load_split(args, split: str) -> TensorData:
    raw = {"name": args.data, "root": args.root, "split": split, "image_size": args.image_size,
           "channels": args.channels, "download": args.download}
    if args.data == "image_folder":
        raw.update(split="train", path=args.path if split == "train" else args.test_path)
        if raw["path"] is None:
            raise ConfigError("--data image_folder needs --path (train) and --test-path (test)")
    dataset = build_dataset(parse(DataConfig, raw, "data"))
    return dataset if isinstance(dataset, TensorData) else materialize(dataset)


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, choices=["fashion_mnist", "cifar10", "image_folder"])
    p.add_argument("--out", required=True, help="checkpoint file to write")
    p.add_argument("--root", default="datasets", help="data.root of the data set")
    p.add_argument("--path", help="image_folder: training folder or .zip of <class>/<image> files")
    p.add_argument("--test-path", help="image_folder: test folder or .zip")
    p.add_argument("--image-size", type=int, help="resize/pad to this size (default: native)")
    p.add_argument("--channels", type=int, choices=[1, 3], help="image_folder: 1 or 3 (default 3)")
    p.add_argument("--download", action="store_true", help="let torchvision download the data set")
    p.add_argument("--loss", default="ce", choices=["ce", "smooth_acc", "smooth_f1"])
    p.add_argument("--temperature", type=float, default=1.0, help="K of the smooth losses")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--width", type=int, default=64, help="channels of the first layer (ResNet-9: 64)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.2, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (default: on for colour images)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for key in ("epochs", "width", "batch_size", "lr", "temperature", "image_size"):
        value = getattr(args, key)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"--{key.replace('_', '-')} must be a positive number, got {value}")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise ConfigError(f"--weight-decay must be a finite number >= 0, got {args.weight_decay}")
    check_seed(args.seed, "--seed")
    require_writable(args.out, "--out")  # before the training, not after it
    return args


def require_trained(model, acc: float):
    """A diverged training (NaN weights) must not become a classifier file that evaluations use."""
    if not finite_weights(model) or not math.isfinite(acc):
        raise UserError("the classifier's training diverged (NaN or inf weights); nothing was written: "
                        "lower --lr")


@cli
def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    train, test = load_split(args, "train"), load_split(args, "test")
    if train.info.shape != test.info.shape:
        raise ConfigError(f"train images are {train.info.shape}, test images {test.info.shape}: "
                          f"pass --image-size")
    if train.info.classes != test.info.classes:  # image_folder: labels are indices of sorted folder names
        raise ConfigError(f"the train images have {describe_classes(train.info.classes)}, the test images "
                          f"{describe_classes(test.info.classes)}: their labels would not agree; pass a "
                          f"--test-path with the same class folders")
    flip = train.info.shape[0] == 3 if args.flip is None else args.flip
    start = time.monotonic()
    model, acc = fit_classifier(train, test, device, width=args.width, epochs=args.epochs,
                                batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                                loss=args.loss, temperature=args.temperature, flip=flip, seed=args.seed)
    seconds = time.monotonic() - start
    require_trained(model, acc)
    arch = {"in_channels": train.info.shape[0], "num_classes": train.info.num_classes, "width": args.width}
    data = args.data if args.data != "image_folder" else f"image_folder:{args.path}"
    save_classifier(args.out, model, arch, train.info.shape, data, acc, train.info.classes,
                    loss=args.loss, epochs=args.epochs, seconds=seconds)
    print(json.dumps({"out": args.out, "data": data, "test_accuracy": round(acc, 4),
                      "n_train": len(train), "n_test": len(test), "epochs": args.epochs,
                      "loss": args.loss, "seconds": round(seconds, 1), "device": str(device)}))


if __name__ == "__main__":
    main()
