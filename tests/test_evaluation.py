"""Evaluation end to end, with no download: the project's classifier trains on a fixture, loads as a
feature extractor of the stated size; reference statistics are the data's exact moments and are
cached per data set and extractor; evaluate.py scores a checkpoint (and the real floor, which beats
an 8-step GAN) to JSON and TensorBoard; the training loop's periodic evaluation leaves the run
bitwise unchanged; missing Inception weights and bad extractor specs are one line each."""
import dataclasses
import json
import math
import re

import pytest
import torch

import evaluate as evaluate_cli
import train_classifier
from common.errors import ConfigError, UserError
from engine import train
from engine.build import load_method
from engine.evaluation import reference as reference_module
from engine.evaluation.denoising_error import denoising_errors, log_levels, pixel_moments
from engine.evaluation.evaluate import METRICS, held_out_images, real_batches
from engine.evaluation import evaluate as evaluation
from engine.evaluation.classifier import Classifier, save_classifier
from engine.evaluation.features import INCEPTION_FILE, build_extractor, inception_weights_path, require_fits
from engine.evaluation.reference import image_batches, reference_stats
from conftest import CIFAR10_CLASSES, ROOT, assert_same_state, quick_config
from common.config import DataConfig, load_config
from data import DataInfo, build_dataset

WIDTH = 4


@pytest.fixture(scope="module")
def classifier(fashion_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("classifier") / "fashion.pt"
    fit(fashion_root, out, "ce")
    return out


def fit(fashion_root, out, loss):
    train_classifier.main(["--data", "fashion_mnist", "--root", str(fashion_root), "--out", str(out),
                           "--epochs", "10", "--width", str(WIDTH), "--batch-size", "32", "--lr", "0.05",
                           "--loss", loss, "--device", "cpu"])
    return torch.load(out, weights_only=True)["test_accuracy"]


@pytest.fixture(scope="module")
def checkpoint(fashion_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("gan_run")
    train(quick_config("gan_fashion.yaml", f"data.root={fashion_root}"), run)
    return run / "checkpoints" / "last.pt"


def images(n, size=28, seed=0):
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def test_classifier_learns_the_fixture_and_gives_features_of_the_stated_size(classifier):
    ckpt = torch.load(classifier, weights_only=True)
    assert ckpt["format"] == "genmodels-classifier" and ckpt["feature_dim"] == 8 * WIDTH
    assert ckpt["test_accuracy"] > 0.9  # brightness encodes the label; chance is 0.1
    extractor = build_extractor(f"classifier:{classifier}", "cpu")
    assert extractor.num_features == 8 * WIDTH and not extractor.training
    for size in (28, 32):  # 32 px samples are fitted to the classifier's 28 px
        features, logits = extractor(images(5, size))
        assert features.shape == (5, 8 * WIDTH) and logits.shape == (5, 10)
    assert extractor.id == build_extractor(f"classifier:{classifier}", "cpu").id


@pytest.mark.parametrize("loss", ["smooth_acc", "smooth_f1"])
def test_classifier_trains_on_smoothed_accuracy_and_f1(fashion_root, tmp_path, loss):
    assert fit(fashion_root, tmp_path / "c.pt", loss) > 0.3  # chance is 0.1


def test_reference_statistics_are_the_datas_moments_and_are_cached(fashion_root, classifier, tmp_path,
                                                                   monkeypatch):
    cfg = quick_config("gan_fashion.yaml", f"data.root={fashion_root}").data
    dataset = build_dataset(cfg)
    extractor = build_extractor(f"classifier:{classifier}", "cpu")
    ref = reference_stats(dataset, cfg, extractor, "cpu", 100, tmp_path)
    with torch.no_grad():
        features = torch.cat([extractor(x)[0] for x in image_batches(dataset, 64)]).double()
    assert ref.n == len(dataset) == 256 and len(ref.features) == 256
    assert torch.allclose(ref.feature_sum / ref.n, features.mean(0), rtol=1e-5, atol=1e-6)
    centred = ref.outer_sum - ref.n * torch.outer(ref.feature_sum / ref.n, ref.feature_sum / ref.n)
    assert torch.allclose(centred / (ref.n - 1), torch.cov(features.T), rtol=1e-4, atol=1e-5)
    (entry,) = tmp_path.glob("*.pt")
    assert entry.name.startswith("fashion_mnist-train-1x28x28-" + extractor.id)

    def recompute(*args):
        raise AssertionError("the cached statistics should have been used")
    monkeypatch.setattr(reference_module, "compute_reference", recompute)
    again = reference_stats(dataset, cfg, extractor, "cpu", 100, tmp_path)
    assert torch.equal(again.outer_sum, ref.outer_sum) and torch.equal(again.features, ref.features)
    monkeypatch.undo()
    test_cfg = quick_config("gan_fashion.yaml", f"data.root={fashion_root}", "data.split=test").data
    reference_stats(build_dataset(test_cfg), test_cfg, extractor, "cpu", 100, tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 2  # another data set, another entry


def test_evaluate_cli_writes_every_metric_to_json_and_tensorboard(checkpoint, classifier, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    common = ["--checkpoint", str(checkpoint), "--features", f"classifier:{classifier}",
              "--stats-dir", str(tmp_path / "stats"), "--batch-size", "32", "--device", "cpu"]
    evaluate_cli.main(common + ["--n", "64", "--json", str(tmp_path / "gan.json")])
    gan = json.loads((tmp_path / "gan.json").read_text())
    assert all(math.isfinite(gan[k]) for k in METRICS)
    assert gan["n"] == 64 and gan["n_ref"] == 256 and gan["step"] == 8 and gan["fid"] > 0
    assert gan["evaluations_per_sample"] == 1  # one pass of G
    assert 0 <= gan["precision"] <= 1 and 0 <= gan["recall"] <= 1
    events = EventAccumulator(str(checkpoint.parent.parent / "tb"))
    events.Reload()
    extractor_id = build_extractor(f"classifier:{classifier}", "cpu").id  # the extractor is in the tag
    (point,) = events.Scalars(f"eval/{extractor_id}/fid")
    assert point.step == 8 and point.value == pytest.approx(gan["fid"], rel=1e-5)
    evaluate_cli.main(common + ["--real", "--json", str(tmp_path / "floor.json")])
    floor = json.loads((tmp_path / "floor.json").read_text())
    assert floor["n"] == 64 and floor["samples"] == "real fashion_mnist/test" and "evaluations_per_sample" not in floor
    # recall, not precision: a collapsed generator whose one point lies among the reals has precision 1
    assert floor["fid"] < gan["fid"] and floor["recall"] > gan["recall"]


def test_periodic_evaluation_logs_scores_and_leaves_the_run_unchanged(fashion_root, classifier, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("GENMODELS_CACHE", str(tmp_path / "cache"))
    base = ["train.steps=8", f"data.root={fashion_root}"]
    train(quick_config("gan_fashion.yaml", *base), tmp_path / "plain")
    evaluated = quick_config("gan_fashion.yaml", *base, "eval.every=4", "eval.n=40", "eval.batch_size=16",
                             f"eval.features=classifier:{classifier}")
    train(evaluated, tmp_path / "evaluated")
    assert_same_state(tmp_path / "plain", tmp_path / "evaluated")  # weights, optimizer, EMA, data order, RNGs
    lines = [json.loads(l) for l in (tmp_path / "evaluated" / "metrics.jsonl").read_text().splitlines()]
    tag = f"eval/{build_extractor(f'classifier:{classifier}', 'cpu').id}"  # evaluate.py's tags
    evals = [l for l in lines if f"{tag}/fid" in l]
    assert [l["step"] for l in evals] == [4, 8]
    assert all(math.isfinite(l[f"{tag}/{k}"]) for l in evals for k in METRICS)


def test_missing_inception_weights_is_one_line_naming_where_to_put_them(checkpoint, tmp_path, monkeypatch,
                                                                        capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache, as on an offline machine

    def no_network(*args, **kwargs):
        raise AssertionError("no download may be attempted without --download")
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    expected = tmp_path / "torch" / "hub" / "checkpoints" / INCEPTION_FILE
    assert inception_weights_path() == expected
    with pytest.raises(SystemExit) as e:
        evaluate_cli.main(["--checkpoint", str(checkpoint), "--features", "inception", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: Inception-v3 weights not found at") and str(expected) in err
    assert "--download" in err and "https://" in err


def test_inception_extractor_uses_weights_placed_at_the_documented_path(tmp_path, monkeypatch):
    """With (random) weights in the documented file, `inception` gives 2048 pool features and the
    1008 logits of the Inception Score, from grayscale images of any size."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.save({}, tmp_path / "empty.pth")
    with monkeypatch.context() as m:
        m.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        random_net = FeatureExtractorInceptionV3("x", ["2048"], str(tmp_path / "empty.pth"))
    inception_weights_path().parent.mkdir(parents=True)
    torch.save(random_net.state_dict(), inception_weights_path())
    extractor = build_extractor("inception", "cpu")
    with torch.no_grad():
        features, logits = extractor(images(2, 28))
    assert features.shape == (2, 2048) and logits.shape == (2, 1008) and extractor.num_features == 2048


@pytest.mark.parametrize("spec, message", [
    ("incepton", "unknown feature extractor 'incepton': use 'inception' or 'classifier:PATH'"),
    ("classifier:{tmp}/missing.pt", "missing.pt not found: train one with"),
    ("classifier:{tmp}/garbage.pt", "is corrupt or not a PyTorch file"),
    ("classifier:{ckpt}", "is not a classifier written by this project"),
])
def test_bad_extractors_are_one_line(spec, message, checkpoint, tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError) as e:
        build_extractor(spec.format(tmp=tmp_path, ckpt=checkpoint), "cpu")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_eval_config_is_checked():
    cfg = quick_config("gan_fashion.yaml", "eval.every=100", "eval.features=classifier:c.pt")
    assert cfg.eval.every == 100 and cfg.to_dict()["eval"]["features"] == "classifier:c.pt"
    with pytest.raises(ConfigError, match="eval.features: must be 'inception' or 'classifier:PATH'"):
        quick_config("gan_fashion.yaml", "eval.features=vgg")
    with pytest.raises(ConfigError, match="unknown key 'eval.evry'; did you mean 'eval.every'"):
        quick_config("gan_fashion.yaml", "eval.evry=5")


def tiny_classifier(path, data: str, classes=()):
    """An untrained 3-channel classifier file as results.py (`data` cifar10) or train_classifier.py
    (`image_folder:PATH`) writes one; `classes` empty: a file from before class names were recorded."""
    save_classifier(path, Classifier(3, 10, 2), {"in_channels": 3, "num_classes": 10, "width": 2}, (3, 32, 32),
                    data, 0.1, classes)
    return build_extractor(f"classifier:{path}", "cpu")


def test_a_classifier_scores_the_data_of_its_classes_whichever_loader_reads_them(
        cifar_root, cifar_jpeg_root, fashion_root, class_zip, tmp_path):
    batches = build_dataset(DataConfig(name="cifar10", root=str(cifar_root))).info
    zipped = build_dataset(DataConfig(name="image_folder", path=str(cifar_jpeg_root / "train.zip"))).info
    assert batches.classes == zipped.classes == tuple(CIFAR10_CLASSES)  # the same names in the same label order
    fashion = build_dataset(DataConfig(name="fashion_mnist", root=str(fashion_root))).info
    three = build_dataset(DataConfig(name="image_folder", path=str(class_zip))).info  # airplane, bird, cat
    assert DataInfo.from_dict(zipped.to_dict()) == zipped  # what a training checkpoint records
    assert DataInfo.from_dict({k: v for k, v in zipped.to_dict().items() if k != "classes"}).classes == ()
    extractors = (tiny_classifier(tmp_path / "r.pt", "cifar10", batches.classes),  # results.py's
                  tiny_classifier(tmp_path / "old.pt", "cifar10"),  # one from before: cifar10's own names
                  tiny_classifier(tmp_path / "z.pt", "image_folder:train.zip", zipped.classes))  # train_classifier.py's
    for extractor in extractors:
        for info in (batches, zipped):
            require_fits(extractor, info, "eval.features")  # no error
        for info, named in ((fashion, "fashion_mnist (10 classes: T-shirt/top, Trouser, Pullover, …)"),
                            (three, "image_folder (3 classes: airplane, bird, cat)")):
            with pytest.raises(ConfigError, match=re.escape(f"these samples are {named}")):
                require_fits(extractor, info, "eval.features")
    legacy = tiny_classifier(tmp_path / "legacy.pt", "image_folder:train.zip")  # no names: any image_folder
    require_fits(legacy, three, "eval.features")
    with pytest.raises(ConfigError, match="trained on image_folder:train.zip, these samples are cifar10:"):
        require_fits(legacy, batches, "eval.features")


def test_evaluate_scores_cifar10_zips_in_a_cifar10_classifier(cifar_jpeg_root, tmp_path):
    """evaluate.py once refused results.py's CIFAR-10 classifier for the CPU configs' image_folder data."""
    tiny_classifier(tmp_path / "c.pt", "cifar10", CIFAR10_CLASSES)
    out = tmp_path / "e.json"
    evaluate_cli.main(["--real", "--config", str(ROOT / "configs" / "cifar10_dae_cpu.yaml"),
                       f"data.path={cifar_jpeg_root / 'train.zip'}", "--real-path", str(cifar_jpeg_root / "test.zip"),
                       "--features", f"classifier:{tmp_path / 'c.pt'}", "--device", "cpu", "--json", str(out)])
    result = json.loads(out.read_text())
    assert all(math.isfinite(result[k]) for k in METRICS)


def test_n_test_images_of_a_class_sorted_folder_cover_its_classes(cifar_jpeg_root):
    """The fixture's test.zip lists 10 classes × 4 images one class after another (each class its own
    red level, 25 per class): its first 10 files are 3 classes. The scripts' n test images (evaluate.py
    --real --n, likelihood.py, inpainting, --denoising-error) are a fixed random 10 of the 40, every
    image once when n is all, the same on every call."""
    import likelihood as likelihood_cli
    cfg = quick_config("gan_fashion.yaml")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(
        load_config(ROOT / "configs" / "cifar10_dae_cpu.yaml").data, path=str(cifar_jpeg_root / "train.zip")))
    test_path = str(cifar_jpeg_root / "test.zip")
    red_class = lambda images: (images[:, 0].float().mean((1, 2)) / 25).round().long()
    classes = lambda images: set(red_class(images).tolist())
    every, labels = held_out_images(evaluation.test_split(cfg.data, test_path))
    assert len(every) == 40 and sorted(labels.tolist()) == sorted([*range(10)] * 4)
    assert torch.equal(labels, red_class(every))  # each image with its own label
    real = torch.cat(list(real_batches(cfg.data, 10, 4, test_path)[0]))
    scored, _ = likelihood_cli.split_images(cfg, 10, test_path)
    assert torch.equal(real, scored) and torch.equal(scored, every[:10]) and len(classes(scored)) >= 6
    assert classes(torch.cat(list(real_batches(cfg.data, None, 16, test_path)[0]))) == set(range(10))


# -- a denoiser's error per noise level ----------------------------------------------------------------

def test_a_gaussians_exact_denoiser_has_its_analytic_error_and_the_fitted_gaussians():
    """On diagonal Gaussian data, the exact denoiser's error at σ is the mean over pixels of
    vσ²/(v + σ²), the Gaussian fitted to training samples errs as much (ratio 1), and a denoiser blind
    to x̃ (the mean) errs by the variance: above the Gaussian at every σ, by v/(vσ²/(v + σ²)) → ∞ as
    σ → 0."""
    g = torch.Generator().manual_seed(0)
    mu, var = torch.linspace(-0.5, 0.5, 16).reshape(1, 4, 4), torch.linspace(0.05, 0.3, 16).reshape(1, 4, 4)
    train_set, test_set = (mu + var.sqrt() * torch.randn((n, 1, 4, 4), generator=g) for n in (40_000, 4_000))
    mean, v = pixel_moments(train_set, chunk=7_000)
    assert torch.allclose(mean, mu, atol=0.01) and torch.allclose(v, var, rtol=0.03)
    levels = log_levels(0.05, 5.0, 5)
    assert levels[0] == 0.05 and levels[-1] == pytest.approx(5.0) and levels[2] == pytest.approx(0.5)

    def exact(x, sigma):
        return mu + var / (var + sigma[:, None, None, None] ** 2) * (x - mu)

    rows = denoising_errors(exact, test_set, levels, mean, v, 1_000, torch.Generator().manual_seed(1), "cpu")
    for row, sigma in zip(rows, levels):
        assert row["sigma"] == sigma
        assert row["model"] == pytest.approx((var * sigma ** 2 / (var + sigma ** 2)).mean().item(), rel=0.03)
        assert row["ratio"] == pytest.approx(1, abs=0.01)
    blind = denoising_errors(lambda x, sigma: mu.expand_as(x), test_set, levels, mean, v, 1_000,
                             torch.Generator().manual_seed(1), "cpu")
    assert all(r["model"] == pytest.approx(var.mean().item(), rel=0.03) for r in blind)
    assert blind[0]["ratio"] > 20 and all(r["ratio"] > 1 for r in blind)


def test_evaluate_measures_a_denoisers_error_over_its_sigma_range(fashion_root, tmp_path):
    run = tmp_path / "ncsn"
    train(quick_config("ncsn_fashion.yaml", f"data.root={fashion_root}"), run)
    evaluate_cli.main(["--checkpoint", str(run / "checkpoints" / "last.pt"), "--denoising-error", "--n", "40",
                       "--batch-size", "16", "--device", "cpu", "--json", str(tmp_path / "d.json")])
    result = json.loads((tmp_path / "d.json").read_text())
    sigmas = [r["sigma"] for r in result["denoising_error"]]
    method, _ = load_method(run / "checkpoints" / "last.pt", "cpu")
    assert result["n"] == 40 and len(sigmas) == 10 and result["step"] == 6
    assert sigmas[0] == pytest.approx(method.sigmas.min().item())
    assert sigmas[-1] == pytest.approx(method.sigmas.max().item())
    assert sigmas == sorted(sigmas) and all(r["ratio"] == pytest.approx(r["model"] / r["gaussian"])
                                            for r in result["denoising_error"])
    # the Gaussian's error grows with σ, from about σ² where σ² ≪ the pixels' variance
    gaussian = [r["gaussian"] for r in result["denoising_error"]]
    assert gaussian == sorted(gaussian) and gaussian[0] == pytest.approx(sigmas[0] ** 2, rel=0.05)
