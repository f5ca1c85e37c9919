"""Bad input and faults, as an adversarial user would try them, through the CLIs' main(argv) in
process: each ends with a non-zero exit and exactly one `error: ...` line naming the setting or file,
never a traceback, and every file that existed before is unchanged."""
import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from bad_input_world import world  # noqa: F401  (the fixture: runs, checkpoints and broken files)
from bad_input_world import (QUICK, _cifar, _clf, _config, _disk_full, _evaluate, _folder_clf, _gan, _likelihood,
                             _nan_scores, _offline, _read_only, _report, _results, _resume, _sample,
                             never_integrated)


@dataclass
class Case:
    id: str
    kind: str
    script: str
    argv: Callable[[dict], list]      # the world's paths → argv
    expect: str                       # a fragment of the error line (the setting or file it names)
    patch: Callable = None            # (monkeypatch, world) → None: a fault to inject
    code: int = 2                     # exit status: 2 for bad input (common/errors.py cli)


CASES = [
    # -- numeric settings: the config sections' check() ------------------------------------------
    Case("lr_negative", "config", "train", lambda w: _gan(w, "optim.lr_g=-1"), "optim.lr_g: must be positive"),
    Case("lr_nan", "config", "train", lambda w: _gan(w, "optim.lr_d=nan"), "optim.lr_d: must be a finite number"),
    Case("lr_inf", "config", "train", lambda w: _gan(w, "optim.lr_g=.inf"), "optim.lr_g: must be a finite number"),
    Case("beta_one", "config", "train", lambda w: _gan(w, "optim.betas=[1.0, 0.999]"),
         "optim.betas: each must be in [0, 1)"),
    Case("beta_negative", "config", "train", lambda w: _gan(w, "optim.betas=[-0.1, 0.9]"), "optim.betas"),
    Case("eps_zero", "config", "train", lambda w: _gan(w, "optim.eps=0"), "optim.eps: must be positive"),
    Case("grad_clip_negative", "config", "train", lambda w: _gan(w, "optim.grad_clip=-1"), "optim.grad_clip"),
    Case("weight_decay_negative", "config", "train", lambda w: _gan(w, "optim.weight_decay=-1"), "optim.weight_decay"),
    Case("max_minutes_negative", "config", "train", lambda w: _gan(w, "train.max_minutes=-1"), "train.max_minutes"),
    Case("schedule_over_minutes_unbudgeted", "config", "train",
         lambda w: _gan(w, "optim.schedule=linear", "optim.schedule_over=minutes"), "optim.schedule_over: minutes"),
    Case("init_std_negative", "config", "train", lambda w: _gan(w, "init.G.std=-0.02"), "init.G.std: must be >= 0"),
    Case("init_gain_nan", "config", "train", lambda w: _gan(w, "init.D.gain=nan"), "init.D.gain: must be a finite"),
    Case("seed_65_bits", "config", "train", lambda w: _gan(w, f"seed={2**64}"), "seed: must be in [0, 2^63)"),
    Case("seed_negative", "config", "train", lambda w: _gan(w, "seed=-1"), "seed: must be in [0, 2^63)"),
    Case("toy_size_zero", "config", "train", lambda w: _gan(w, "data.toy_size=0", config="gan_toy.yaml"),
         "data.toy_size"),
    Case("workers_negative", "config", "train", lambda w: _gan(w, "data.num_workers=-1"), "data.num_workers"),
    Case("ema_above_one", "config", "train", lambda w: _gan(w, "train.ema=1.5"), "train.ema"),
    Case("dcgan_size", "config", "train", lambda w: _gan(w, "data.image_size=30"), "data.image_size: DCGAN networks"),
    Case("dde_size", "config", "train",
         lambda w: _gan(w, "data.image_size=30", "model.g_arch=dcgan", "dde.teacher=null",
                        config="../fashion_mnist_dde_cpu.yaml"), "data.image_size: DCGAN generators"),
    Case("dde_sigma_range", "config", "train", lambda w: _gan(w, "dde.sigma_max=0.05", config="dde_toy.yaml"),
         "dde.sigma_max: must exceed sigma (0.3)"),
    Case("dde_parametrization", "config", "train",
         lambda w: _gan(w, "dde.parametrization=score", config="dde_toy.yaml"), "dde.parametrization"),
    Case("dde_teacher_gan", "config", "train",
         lambda w: _gan(w, f"dde.teacher={w['ckpt']}", config="dde_fashion.yaml"),
         "is a gan checkpoint; name a DAE checkpoint"),
    Case("dde_teacher_points", "config", "train",
         lambda w: _gan(w, f"dde.teacher={w['single_sigma_ckpt']}", config="dde_fashion.yaml"),
         "was trained on (2,) images, this data is (1, 28, 28)"),
    Case("dde_teacher_missing", "config", "train",
         lambda w: _gan(w, f"dde.teacher={w['w'] / 'nope.pt'}", config="dde_fashion.yaml"),
         "nope.pt not found: train the teacher first"),
    Case("dde_teacher_corrupt", "config", "train",
         lambda w: _gan(w, f"dde.teacher={w['w'] / 'corrupt_run' / 'checkpoints' / 'last.pt'}",
                        config="dde_fashion.yaml"), "is corrupt"),
    Case("dde_teacher_energy", "config", "train",
         lambda w: _gan(w, f"dde.teacher={w['ckpt']}", "dde.parametrization=energy", config="dde_fashion.yaml"),
         "dde.teacher: a DAE teacher is a σ-conditional direct denoiser"),
    Case("dde_g_loss_energy", "config", "train",
         lambda w: _gan(w, "dde.g_loss=sid", config="dde_toy.yaml"), "dde.g_loss: sid is written in the two denoisers"),
    Case("dde_regression_no_teacher", "config", "train",
         lambda w: _gan(w, "dde.regression=1", config="dde_fashion.yaml"),
         "dde.regression: regresses a denoiser generator's G(z) on the teacher's ODE"),
    Case("dde_regression_negative", "config", "train",
         lambda w: _gan(w, "dde.regression=-1", config="dde_fashion.yaml"), "dde.regression: must be >= 0"),
    Case("dde_regression_pairs_zero", "config", "train",
         lambda w: _gan(w, "dde.regression_pairs=0", config="dde_fashion.yaml"), "dde.regression_pairs: must be >= 1"),
    Case("unet_patch", "config", "train", lambda w: _gan(w, "model.patch=3", config="ncsn_fashion.yaml"),
         "model.patch"),
    Case("unet_attention_resolution", "config", "train",
         lambda w: _gan(w, "model.attention=[5]", config="ncsn_fashion.yaml"),
         "model.attention: 5 px is not a resolution of this U-Net on 28 px data (its levels: 28, 14)"),
    Case("attention_without_layers", "config", "train",
         lambda w: _gan(w, "model.arch=ncsnv2", "model.attention=[14]", config="ncsn_fashion.yaml"),
         "model.attention: the ncsnv2 network has no attention layers"),
    Case("group_channels_zero", "config", "train",
         lambda w: _gan(w, "model.group_channels=0", config="ncsn_fashion.yaml"),
         "model.group_channels: must be positive"),
    Case("dropout_one", "config", "train", lambda w: _gan(w, "model.dropout=1", config="ncsn_fashion.yaml"),
         "model.dropout: a probability in [0, 1), got 1"),
    Case("device_bogus", "config", "train", lambda w: _gan(w, "device=tpu"), "device: must be"),
    Case("unknown_key", "config", "train", lambda w: _gan(w, "optim.lr_gg=1"), "unknown key 'optim.lr_gg'"),
    Case("override_no_equals", "config", "train", lambda w: _gan(w, "train.steps"), "is not key=value"),
    Case("lr_beyond_float32", "config", "train", lambda w: _gan(w, "optim.lr_g=1e308"),
         "optim.lr_g: must be a finite number within float32's range"),
    Case("num_classes_not_the_datas", "config", "train", lambda w: _gan(w, "model.num_classes=7"),
         "model.num_classes: 7, but the data set fashion_mnist has 10 classes; set model.num_classes=10"),
    Case("num_classes_negative", "config", "train", lambda w: _gan(w, "model.num_classes=-1"),
         "model.num_classes: must be >= 0"),
    Case("inpaint_guidance_negative", "config", "train",
         lambda w: _gan(w, "ncsn.inpaint_guidance=-1", config="ncsn_fashion.yaml"),
         "ncsn.inpaint_guidance: a finite weight >= 0"),
    Case("guidance_interval_reversed", "config", "train",
         lambda w: _gan(w, "ncsn.guidance_interval=[5,0.3]", config="ncsn_fashion.yaml"),
         "ncsn.guidance_interval: [σ_lo, σ_hi] with 0 <= σ_lo < σ_hi, got [5.0, 0.3]"),
    Case("guidance_unconditional", "config", "train",
         lambda w: _gan(w, "ncsn.guidance=3", config="ncsn_fashion.yaml"),
         "ncsn.guidance: classifier-free guidance needs a class-conditional net (model.num_classes=0 here)"),
    Case("guidance_interval_one_value", "config", "train",
         lambda w: _gan(w, "ncsn.guidance_interval=[5]", config="ncsn_fashion.yaml"),
         "ncsn.guidance_interval: expected tuple[float, float] or null, got [5]"),
    Case("n_critic_beyond_data", "config", "train", lambda w: _gan(w, "gan.n_critic=1e9"),
         "gan.n_critic=1000000000: a step reads train.batch_size × gan.n_critic"),
    # -- config files -----------------------------------------------------------------------------
    Case("config_list", "config file", "train", lambda w: _config(w, "list.yaml", "train.steps=3"),
         "list.yaml holds a list"),
    Case("config_scalar", "config file", "train", lambda w: _config(w, "scalar.yaml", "train.steps=3"),
         "scalar.yaml holds a number"),
    Case("config_latin1", "config file", "train", lambda w: _config(w, "latin1.yaml"), "is not UTF-8"),
    Case("config_broken", "config file", "train", lambda w: _config(w, "broken.yaml"), "not valid YAML"),
    Case("config_folder", "config file", "train", lambda w: _config(w, "a_folder.yaml"), "is a folder"),
    Case("config_missing", "config file", "train", lambda w: _config(w, "nope.yaml"), "nope.yaml not found"),
    Case("config_method_list", "config file", "train", lambda w: _config(w, "method_list.yaml"),
         "method: expected str, got ['gan']"),
    Case("config_key_twice", "config file", "train", lambda w: _config(w, "twice.yaml"),
         "key 'train' appears twice (first at line"),
    Case("option_unknown", "config file", "train", lambda w: _gan(w, "--bogus"), "unrecognized arguments: --bogus"),
    # -- run directories and resume -----------------------------------------------------------------
    Case("resume_missing", "resume", "train", lambda w: _resume(w, run="gone"), "no such run directory"),
    Case("resume_mistyped", "resume", "train", lambda w: _resume(w, run="gan_rnu"), "did you mean 'gan_run'"),
    Case("resume_no_config", "resume", "train", lambda w: _resume(w, run="no_config"), "has no config.yaml"),
    Case("resume_empty", "resume", "train", lambda w: _resume(w, run="empty_run"), "nothing to resume"),
    Case("resume_a_file", "resume", "train", lambda w: _resume(w, run="afile"), "is a file"),
    Case("resume_corrupt", "resume", "train", lambda w: _resume(w, run="corrupt_run"), "corrupt or not a PyTorch file"),
    Case("resume_width", "shape", "train", lambda w: _resume(w, "model.g_width=16"),
         "model.g_width: the checkpoint has 8, the config says 16"),
    Case("resume_step_kind", "shape", "train", lambda w: _resume(w, "gan.step=alternating"),
         "gan.step ('one_loss' → 'alternating'): the checkpoint has optimizers GD"),
    Case("resume_other_method", "shape", "train", lambda w: _resume(w, "--config", str(QUICK / "ncsn_fashion.yaml")),
         "is a 'gan' run, the config says 'ncsn'"),
    Case("resume_image_size", "shape", "train", lambda w: _resume(w, "data.image_size=32"),
         "data.image_size: the checkpoint was trained on 1x28x28"),
    Case("resume_seed_edited", "shape", "train", lambda w: _resume(w, "train.steps=12", run="edited_run"),
         "seed: the run was trained with 0, the config says 1, and it cannot change on resume"),
    Case("resume_loss_changed", "shape", "train", lambda w: _resume(w, "train.steps=12", "gan.loss=hinge"),
         "gan.loss: the run was trained with 'logistic', the config says 'hinge'"),
    Case("resume_tb_read_only", "files", "train", lambda w: _resume(w, "train.steps=12"), "tb is not writable",
         patch=_read_only("gan_run/tb")),
    Case("resume_steps_done", "resume", "train", lambda w: _resume(w, "train.steps=8"),
         "train.steps=8: the run is already at step 8"),
    Case("run_dir_taken", "resume", "train", lambda w: _gan(w, run="gan_run"), "already holds a run"),
    Case("run_dir_leftovers", "resume", "train", lambda w: _gan(w, run="leftovers"),
         "stopped before its first checkpoint (metrics.jsonl, tb)"),
    Case("run_dir_is_file", "files", "train", lambda w: _gan(w, run="afile"), "afile is a file"),
    Case("run_dir_under_file", "files", "train", lambda w: _gan(w, run="afile/run"), "afile is a file, so"),
    Case("run_dir_read_only", "files", "train", lambda w: _gan(w, run="ro/run"), "ro is not writable",
         patch=_read_only("ro")),
    Case("resume_read_only", "files", "train", lambda w: _resume(w, "train.steps=12"), "gan_run is not writable",
         patch=_read_only("gan_run")),
    Case("disk_full", "files", "train", lambda w: _gan(w, run="full"), "No space left on device", patch=_disk_full),
    # -- data ---------------------------------------------------------------------------------------
    Case("download_offline", "data", "train",
         lambda w: _gan(w, f"data.root={w['w'] / 'offline'}", "data.download=true"),
         "could not download Fashion-MNIST", patch=_offline),
    Case("zip_bad_crc", "data", "train_classifier", lambda w: _folder_clf(w, "bad_crc.zip"), "member dog/0001.png"),
    Case("zip_undecodable", "data", "train_classifier", lambda w: _folder_clf(w, "undecodable.zip"),
         "member dog/0000.png"),
    Case("folder_undecodable", "data", "train_classifier", lambda w: _folder_clf(w, "broken_folder"),
         "broken_folder/dog/0000.png"),
    Case("zip_no_class_folders", "data", "train", lambda w: _cifar(w, "no_classes.zip"),
         "no_classes.zip is not in a class folder"),
    Case("zip_greyscale_for_colour", "data", "train", lambda w: _cifar(w, "grey.zip"),
         "grey.zip is greyscale and the config reads colour"),
    Case("zip_size_for_the_net", "data", "train", lambda w: _cifar(w, "size30.zip", "data.image_size=null"),
         "DCGAN networks take 7·2^k or 4·2^k px (28, 32, 64...), the data is 30 px"),
    Case("zip_not_a_zip", "data", "train_classifier", lambda w: _folder_clf(w, "not_a.zip"),
         "not_a.zip is not a readable zip"),
    Case("zip_test_classes_differ", "data", "train_classifier",
         lambda w: _folder_clf(w, "cat_dog_frog.zip", "cat_frog.zip"),
         "the train images have 3 classes: cat, dog, frog, the test images 2 classes: cat, frog: their labels"),
    Case("cifar_malicious", "data", "train_classifier", lambda w: _clf(w, data="cifar10", root=w["w"] / "evil"),
         "refused global posix.system"),
    Case("cifar_missing", "data", "train_classifier", lambda w: _clf(w, data="cifar10", root=w["w"] / "nothing"),
         "CIFAR-10 not found"),
    # -- sample.py ----------------------------------------------------------------------------------
    Case("interpolate_negative", "sample", "sample", lambda w: _sample(w, "--interpolate", "-3"), "--interpolate"),
    Case("interpolate_wider_than_n", "sample", "sample", lambda w: _sample(w, "--interpolate", "100", "--n", "16"),
         "--interpolate 100 draws rows of 100"),
    Case("n_zero", "sample", "sample", lambda w: _sample(w, "--n", "0"), "--n: must be in 1..10000"),
    Case("n_beyond_memory", "sample", "sample", lambda w: _sample(w, "--n", "1000000000"), "--n: must be in 1..10000"),
    Case("n_not_int", "sample", "sample", lambda w: _sample(w, "--n", "many"), "argument --n: invalid int value"),
    Case("sample_seed_65_bits", "sample", "sample", lambda w: _sample(w, "--seed", str(2**64)), "--seed: must be in"),
    Case("sample_width", "shape", "sample", lambda w: _sample(w, "model.g_width=16"),
         "model.g_width: the checkpoint has 8, the config says 16"),
    Case("sample_method", "shape", "sample", lambda w: _sample(w, "method=ncsn"),
         "section 'gan' belongs to method 'gan'"),
    Case("out_extension", "files", "sample", lambda w: _sample(w, out="grid.xyz"), "unknown image extension '.xyz'"),
    Case("out_under_file", "files", "sample", lambda w: _sample(w, out="afile/grid.png"), "afile is a file, so"),
    Case("checkpoint_missing", "files", "sample", lambda w: _sample(w)[:0] + [
        "--checkpoint", str(w["w"] / "nope.pt"), "--out", str(w["w"] / "g.png")], "nope.pt not found"),
    Case("heun_steps_discrete", "sample", "sample",
         lambda w: _sample(w, "ncsn.sampler=heun", "ncsn.sampler.steps=25", ckpt="ncsn_ckpt"),
         "ncsn.sampler.steps: not used by this network: it was trained on discrete levels"),
    Case("sampler_setting_of_another", "sample", "sample", lambda w: _sample(w, "ncsn.sampler.rho=5", ckpt="ncsn_ckpt"),
         "unknown key 'ncsn.sampler.rho' for langevin; rho is a setting of heun and edm"),
    Case("sampler_setting_mistyped", "sample", "sample",
         lambda w: _sample(w, "ncsn.sampler=edm", "ncsn.sampler.chrun=5", ckpt="ncsn_ckpt"),
         "unknown key 'ncsn.sampler.chrun' for edm; did you mean 'ncsn.sampler.churn'?"),
    Case("sampler_tmin_above_tmax", "sample", "sample",
         lambda w: _sample(w, "ncsn.sampler=edm", "ncsn.sampler.tmin=60", ckpt="ncsn_ckpt"),
         "ncsn.sampler.tmin: must be in [0, tmax = 50.0], got 60.0"),
    Case("sampler_churn_negative", "sample", "sample",
         lambda w: _sample(w, "ncsn.sampler=edm", "ncsn.sampler.churn=-1", ckpt="ncsn_ckpt"),
         "ncsn.sampler.churn: must be >= 0"),
    Case("sampler_snr_negative", "sample", "sample",
         lambda w: _sample(w, "ncsn.sampler=pc", "ncsn.sampler.snr=-0.1", ckpt="ncsn_ckpt"),
         "ncsn.sampler.snr: must be positive"),
    Case("sampler_restart_interval_reversed", "sample", "sample",
         lambda w: _sample(w, "ncsn.sampler=restart", "ncsn.sampler.restarts=[[3,2,0.5,0.1]]", ckpt="ncsn_ckpt"),
         "ncsn.sampler.restarts[0]: must be [steps >= 2, K >= 0, t_min, t_max] with 0 < t_min < t_max, got [3, 2, 0.5, 0.1]"),
    Case("sampler_dpm_eta_negative", "sample", "sample",
         lambda w: _sample(w, "ncsn.sampler=dpmpp_2m_sde", "ncsn.sampler.eta=-1", ckpt="ncsn_ckpt"),
         "ncsn.sampler.eta: must be >= 0 (0: the ODE), got -1.0"),
    Case("sampler_needs_a_range", "sample", "sample", lambda w: _sample(w, "dae.sampler=edm", ckpt="single_sigma_ckpt"),
         "dae.sampler: edm needs a range of noise levels; use num_scales > 1 or sampler: langevin"),
    Case("sample_device", "sample", "sample", lambda w: _sample(w, "--device", "gpu0"), "device: must be"),
    # -- evaluate.py --------------------------------------------------------------------------------
    Case("classifier_other_data", "evaluate", "evaluate", lambda w: _evaluate(w, features="cifar10_clf.pt"),
         "was trained on cifar10"),
    Case("classifier_nan", "evaluate", "evaluate", lambda w: _evaluate(w, features="nan_clf.pt"),
         "has NaN or inf weights"),
    Case("fid_nan", "evaluate", "evaluate", lambda w: _evaluate(w, "--json", w["w"] / "e.json",
                                                                features="fashion_mnist_clf.pt"),
         "fid=nan", patch=_nan_scores),
    Case("json_under_file", "files", "evaluate", lambda w: _evaluate(w, "--json", w["w"] / "afile" / "e.json"),
         "--json"),
    Case("stats_dir_under_file", "files", "evaluate", lambda w: _evaluate(w, "--stats-dir", w["w"] / "afile" / "s"),
         "--stats-dir"),
    Case("evaluate_n_one", "evaluate", "evaluate", lambda w: _evaluate(w, "--n", "1"), "--n must be at least 2"),
    Case("evaluate_seed", "evaluate", "evaluate", lambda w: _evaluate(w, "--seed", "-1"), "--seed: must be in"),
    Case("evaluate_draws_zero", "evaluate", "evaluate", lambda w: _evaluate(w, "--inpaint", "right", "--draws", "0"),
         "--draws 0: give a count of at least 1"),
    Case("evaluate_draws_without_inpaint", "evaluate", "evaluate", lambda w: _evaluate(w, "--draws", "4"),
         "more than 1 only with --inpaint"),
    Case("evaluate_denoising_error_gan", "evaluate", "evaluate", lambda w: _evaluate(w, "--denoising-error"),
         "--denoising-error: gan has no denoiser; use a dae, ncsn or ebm checkpoint"),
    Case("evaluate_denoising_error_real", "evaluate", "evaluate",
         lambda w: _evaluate(w, "--denoising-error", "--real"), "--denoising-error measures a checkpoint's denoiser"),
    Case("evaluate_sampler_setting", "evaluate", "evaluate",
         lambda w: _evaluate(w, "ncsn.sampler.churn=3", ckpt="ncsn_fashion_ckpt"),
         "unknown key 'ncsn.sampler.churn' for langevin; churn is a setting of edm"),
    Case("features_bogus", "evaluate", "evaluate", lambda w: _evaluate(w, "--features", "vgg"),
         "unknown feature extractor 'vgg'"),
    # -- likelihood.py and results.py --------------------------------------------------------------
    Case("likelihood_atol_inf", "likelihood", "likelihood", lambda w: _likelihood(w, "--atol", "inf"),
         "--atol must be a finite positive number"),
    Case("likelihood_rtol_nan", "likelihood", "likelihood", lambda w: _likelihood(w, "--rtol", "nan"),
         "--rtol must be a finite positive number"),
    Case("likelihood_truncated_train", "data", "likelihood",
         lambda w: _likelihood(w, f"data.root={w['w'] / 'truncated_fashion'}"), "train-images-idx3-ubyte.gz",
         patch=never_integrated),
    Case("results_smoke_without_out", "results", "results", lambda w: _results(w, "--smoke"),
         "--smoke: pass --out DIR"),
    # -- train_classifier.py ------------------------------------------------------------------------
    Case("classifier_lr_nan", "classifier", "train_classifier", lambda w: _clf(w, "--lr", "nan"),
         "--lr must be a positive number"),
    Case("classifier_out_under_file", "files", "train_classifier", lambda w: _clf(w, out="afile/c.pt"), "--out: "),
    Case("classifier_epochs_zero", "classifier", "train_classifier", lambda w: _clf(w, "--epochs", "0"), "--epochs"),
    Case("classifier_weight_decay", "classifier", "train_classifier", lambda w: _clf(w, "--weight-decay", "-1"),
         "--weight-decay"),
    Case("classifier_seed", "classifier", "train_classifier", lambda w: _clf(w, "--seed", str(2**64)),
         "--seed: must be in"),
    # -- init_report.py -----------------------------------------------------------------------------
    Case("shape_letters", "init_report", "init_report", lambda w: _report("--shape", "a,b"), "--shape: expected C,H,W"),
    Case("shape_zero", "init_report", "init_report", lambda w: _report("--shape", "0,28,28"),
         "--shape: expected C,H,W"),
    Case("shape_for_dcgan", "init_report", "init_report", lambda w: _report("--shape", "1,30,30"),
         "--shape 1,30,30: data.image_size"),
    Case("init_report_config", "init_report", "init_report", lambda w: _config(w, "list.yaml"), "holds a list"),
    # -- benchmark.py -------------------------------------------------------------------------------
    Case("bench_only", "benchmark", "benchmark", lambda w: ["--only", "bogus"], "--only: unknown section 'bogus'"),
    Case("bench_repeats", "benchmark", "benchmark", lambda w: ["--repeats", "0"], "--repeats must be at least 1"),
    Case("bench_device", "benchmark", "benchmark", lambda w: ["--device", "bogus"],
         "--device: must be auto, cpu, cuda"),
    Case("bench_json", "files", "benchmark", lambda w: ["--json", w["w"] / "afile" / "b.json"], "--json: "),
]


def snapshot(*roots) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for root in roots for p in Path(root).rglob("*")
            if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, world, monkeypatch, capsys):
    monkeypatch.chdir(world["w"])
    argv = [str(a) for a in case.argv(world)]
    before = snapshot(world["w"], world["fashion"], world["cifar"])
    capsys.readouterr()
    if case.patch is not None:
        case.patch(monkeypatch, world)
    main = importlib.import_module(case.script).main
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    monkeypatch.undo()
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert exit_.value.code == case.code, err
    assert len(errors) == 1, err
    assert case.expect in errors[0], errors[0]
    assert "Traceback" not in err, err
    after = snapshot(world["w"], world["fashion"], world["cifar"])
    assert {p: h for p, h in after.items() if p in before} == before, "a file that existed before changed"
    if case.id == "download_offline":
        assert not any((world["w"] / "offline").iterdir()), "the failed download left files behind"
    if case.id == "fid_nan":
        assert not (world["w"] / "e.json").exists()


def test_the_table_covers_every_script_and_enough_cases():
    assert len(CASES) >= 60
    assert {c.script for c in CASES} == {"train", "sample", "evaluate", "train_classifier", "init_report", "benchmark",
                                         "likelihood", "results"}
