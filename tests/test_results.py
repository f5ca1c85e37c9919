"""The CPU configs and scripts/results.py: every CPU config trains and samples; the results table is
written whole from a smoke run; finished runs are reused, never retrained unasked; bad input is one
line."""
import gzip
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine import train
from conftest import ROOT, assert_same_state, quick_config  # noqa: F401
from engine import load_method

CPU_CONFIGS = sorted(p.name for p in (ROOT / "configs").glob("fashion_mnist_*_cpu.yaml"))


def test_there_is_a_cpu_config_for_every_method():
    from common.config import read_yaml
    methods = {read_yaml(ROOT / "configs" / name)["method"] for name in CPU_CONFIGS}
    assert methods == {"gan", "ncsn", "dae", "ebm", "dde"}


@pytest.mark.parametrize("name", CPU_CONFIGS)
def test_every_cpu_config_trains_five_steps_and_samples(name, fashion_root, tmp_path):
    from common.config import load_config
    # Eager: compiling (tests/test_fast_paths.py checks it) would cost each 5-step run half a minute.
    quick = [f"data.root={fashion_root}", "device=cpu", "train.steps=5", "train.compile=false", "train.batch_size=16",
             "train.sample_every=5", "train.n_samples=4", "train.ckpt_every=5"]
    cfg = load_config(ROOT / "configs" / name, quick)
    if getattr(cfg, "dde", None) is not None and cfg.dde.teacher:  # distils its DAE config: train that first
        train(load_config(ROOT / "configs" / "fashion_mnist_dae_cpu.yaml", quick), tmp_path / "teacher")
        cfg = load_config(ROOT / "configs" / name, [*quick, f"dde.teacher={tmp_path / 'teacher/checkpoints/last.pt'}"])
    summary = train(cfg, tmp_path / "run")
    assert summary["step"] == 5 and (tmp_path / "run" / "samples" / "step_0000005.png").is_file()
    method, _ = load_method(tmp_path / "run" / "checkpoints" / "last.pt", "cpu")
    x = method.sample(3, torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 28, 28) and torch.isfinite(x).all()


CIFAR10_CPU_CONFIGS = sorted(p.name for p in (ROOT / "configs").glob("cifar10_*_cpu.yaml"))


def test_the_cifar10_table_has_a_cpu_config_for_each_of_its_methods():
    from common.config import read_yaml
    methods = {read_yaml(ROOT / "configs" / name)["method"] for name in CIFAR10_CPU_CONFIGS}
    assert methods == {"gan", "ncsn", "dae"}


@pytest.mark.parametrize("name", CIFAR10_CPU_CONFIGS)
def test_every_cifar10_cpu_config_trains_five_steps_and_samples(name, cifar_jpeg_root, tmp_path):
    """On a zip in the real layout (class folders of JPEGs): colour in, colour out, every label read."""
    from common.config import load_config
    cfg = load_config(ROOT / "configs" / name, [f"data.path={cifar_jpeg_root / 'train.zip'}", "device=cpu",
                                                "train.steps=5", "train.batch_size=16", "train.sample_every=5",
                                                "train.n_samples=4", "train.ckpt_every=5",
                                                "train.compile=false"])  # compiling: tests/test_fast_paths.py
    summary = train(cfg, tmp_path / "run")
    assert summary["step"] == 5 and (tmp_path / "run" / "samples" / "step_0000005.png").is_file()
    method, _ = load_method(tmp_path / "run" / "checkpoints" / "last.pt", "cpu")
    x = method.sample(3, torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, 32, 32) and torch.isfinite(x).all()


def results(argv):
    from results import main
    return main(argv)


@pytest.fixture(scope="module")
def smoke(fashion_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    argv = ["--smoke", "--data-root", str(fashion_root), "--out", str(out / "docs"), "--runs", str(out / "runs"),
            "--device", "cpu", "--bpd-methods", "ncsn,dae,ebm"]
    results(argv)
    return out, argv


def table_rows(path: Path) -> list[list[str]]:
    """The cells of the first table in a Markdown file."""
    return markdown_rows(path.read_text())


def markdown_rows(text: str) -> list[list[str]]:
    """The cells of the first table in Markdown text."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[start:end]
            if line.startswith("| ")]


def test_results_smoke_writes_a_well_formed_table_and_a_grid_per_row(smoke):
    from results import AUTOGUIDE, CONDITIONAL_SAMPLER, GUIDANCE, GUIDE_MINUTES, ROWS
    out, _ = smoke
    rows = table_rows(out / "docs" / "results.md")
    header, body = rows[0], rows[1:]
    assert header == ["row", "method", "config", "train min", "steps", "images seen", "sampler", "NFE/sample",
                      "sampling s", "n", "FID", "KID ×10³", "precision", "recall", "bits/dim"]
    assert [r[0] for r in body] == [r.name for r in ROWS]
    number = re.compile(r"^-?\d[\d,]*(\.\d+)?$")
    for r in body:
        assert number.match(r[10]) and re.match(r"^-?\d+\.\d+ ± \d+\.\d+$", r[11]), r
        assert 0 <= float(r[12]) <= 1 and 0 <= float(r[13]) <= 1
        with Image.open(out / "docs" / "results" / f"{r[0]}.png") as image:
            assert image.size[0] > 28
    by_name = {r[0]: r for r in body}
    assert by_name["gan_one_loss"][4] == "3" and by_name["real_train"][4] == "–"
    assert by_name["ncsn_heun19"][7] == "19" and by_name["ncsn_heun35"][7] == "35"
    nfe = {suffix: by_name[f"ebm_{suffix}"][7] for suffix in ("edm35", "edm19", "em50", "em20", "pc50", "pc20", "anc20",
                                                               "dpm50", "dpm20", "rs43", "rs19")}
    assert nfe == {"edm35": "35", "edm19": "19", "em50": "50", "em20": "20", "pc50": "50", "pc20": "20", "anc20": "20",
                   "dpm50": "50", "dpm20": "20", "rs43": "43", "rs19": "19"}
    assert by_name["dae_langevin"][7] == "4"  # 3 levels × 1 step + the final denoising step (smoke ladder)
    for r in body:  # the model's bits/dim in its three sampler rows, none for generators
        assert (re.match(r"^\d+\.\d+ ± \d+\.\d+$", r[14]) is not None) == (r[1] in ("ncsn", "dae", "ebm")), r
    assert by_name["dae_heun35"][14] == by_name["dae_langevin"][14]
    # autoguided, at each method's levels: the guide's pass doubles the NFE (≤ 50); its training counts
    for method, (_, levels) in AUTOGUIDE.items():
        guided = by_name[f"{method}_ag_dpm{levels}"]
        assert guided[7] == str(2 * levels) and by_name[f"{method}_ag_dpm10"][7] == "20"
        assert f"guide {method}_guide: fashion_mnist_{method}_cpu.yaml" in guided[2]
        assert f"train.max_minutes={GUIDE_MINUTES[method]:g} model.width=8" in guided[2]  # its own guide's time
        assert guided[4] == by_name[f"{method}_dpm20"][4]  # the same run's steps
        assert guided[14] == "–"  # not the unguided model's density
    assert "; teacher dae: fashion_mnist_dae_cpu.yaml" in by_name["dde"][2]  # distils the DAE rows' run
    for row in ROWS:  # a denoising net samples in its run's precision, and its sampler's label says so
        if row.run is None:
            continue
        trained = json.loads((out / "runs" / row.run / "results_training.json").read_text())["precision"]
        denoiser = not row.method.startswith(("gan", "dde"))
        said = re.search(r", net in (\w+)$", by_name[row.name][6])
        assert (said.group(1) if said else "fp32") == (trained if denoiser else "fp32"), row.name
    text = (out / "docs" / "results.md").read_text()
    assert "test accuracy" in text and "best diagonal Gaussian" in text
    conditional = [line for line in text.split("Class-conditional rows")[1].splitlines()
                   if line.startswith("| dae_conditional_w")]
    assert [line.split(" | ")[0][2:] for line in conditional] == [f"dae_conditional_w{w:g}" for w in GUIDANCE]
    # the conditional DAE under its sampler: the unconditional DAE's NFE there, twice it where guided (w ∉ {0, 1})
    label = CONDITIONAL_SAMPLER[0]
    unguided = next(r[7] for r in body if r[1] == "dae" and r[6].startswith(label))
    for w, line in zip(GUIDANCE, conditional):  # accuracy in [0, 1]
        cells = line.strip("|").split("|")
        assert 0 <= float(cells[3]) <= 1
        assert cells[2].strip() == (unguided if w in (0, 1) else str(2 * int(unguided)))
        assert by_name[f"dae_conditional_w{w:g}"][6].startswith(f"{label}, uniform classes, guidance w = {w:g}")
    inpainting = [line for line in text.splitlines() if line.startswith("| inpaint_dae_")]
    assert len(inpainting) == 3 and all(re.search(r"\| \d+\.\d\d \| \d+\.\d\d \(k 4\) \| \d+\.\d\d \| \d+\.\d\d \|", line)
                                             for line in inpainting)
    assert [line.split(" | ")[3] for line in inpainting] == [  # the config's sampler and the guidance
        "dpmpp_2m_sde, reconstruction guidance λ = 1", "dpmpp_2m_sde, replacement only",
        "dpmpp_2m_sde, reconstruction guidance λ = 1"]
    for name in ("inpaint_dae_right", "inpaint_dae_right_replacement", "inpaint_dae_centre", "gan_conditional"):
        assert (out / "docs" / "results" / f"{name}.png").is_file()
    curves = [line for line in text.splitlines() if line.startswith("| ncsn | ")]  # KID against NFE
    assert {line.split(" | ")[1] for line in curves} == {"annealed Langevin", "Heun", "EDM stochastic",
                                                         "Euler–Maruyama", "predictor–corrector", "ancestral",
                                                         "DPM-Solver++(2M) SDE", "Restart"}


def test_results_never_retrains_a_finished_run_unasked(smoke, capsys):
    out, argv = smoke
    last = out / "runs" / "gan_one_loss" / "checkpoints" / "last.pt"
    before = last.stat().st_mtime_ns
    saved = out / "docs" / "results.json"  # a row the table no longer defines (a sampler since dropped)
    table = json.loads(saved.read_text())
    saved.write_text(json.dumps(dict(table, rows=[*table["rows"], dict(table["rows"][-1], row="dropped_row")])))
    results([*argv, "--methods", "gan"])  # finished: reused, scored again
    results([*argv, "--methods", "gan", "--reuse"])  # scores again, trains nothing
    assert last.stat().st_mtime_ns == before
    from results import ROWS  # the other rows are kept from the full scoring, not dropped; stale ones are
    assert [r[0] for r in table_rows(out / "docs" / "results.md")[1:]] == [r.name for r in ROWS]
    described = {r["row"]: r["config"] for r in json.loads(saved.read_text())["rows"]}
    assert all(described[r.name].count("; guide ") == 1 for r in ROWS if r.guide)  # a kept row keeps its guide
    assert described["dde"].count("; teacher dae: ") == 1  # and its teacher
    summary = out / "runs" / "gan_one_loss" / "results_training.json"
    kept = summary.read_text()
    summary.unlink()  # as if training had been killed: an unfinished run is neither reused nor deleted
    with pytest.raises(SystemExit) as e:
        results([*argv, "--methods", "gan"])
    assert e.value.code == 2 and last.stat().st_mtime_ns == before
    summary.write_text(kept.replace("train.max_minutes=12", "train.max_minutes=5"))  # another budget's run
    with pytest.raises(SystemExit) as e:
        results([*argv, "--methods", "gan", "--reuse"])
    summary.write_text(kept)
    assert e.value.code == 2 and last.stat().st_mtime_ns == before
    digest = json.loads(kept)["config_digest"]  # trained before its config's settings were edited
    summary.write_text(kept.replace(digest, "0" * len(digest)))
    with pytest.raises(SystemExit) as e:
        results([*argv, "--methods", "gan", "--reuse"])
    summary.write_text(kept)
    assert e.value.code == 2 and last.stat().st_mtime_ns == before
    assert "configs/fashion_mnist_dcgan_cpu.yaml's settings were last edited" in capsys.readouterr().err


def test_runs_trained_at_once_are_the_runs_trained_one_by_one(fashion_root, tmp_path, capsys):
    """--jobs 2 trains two runs at a time, each in its own process on one thread, a teacher before the run
    that distils it: bitwise the state (weights, optimisers, EMA, RNGs) of --jobs 1 on one thread. Each
    summary names how its run trained, so a run trained one at a time cannot join runs trained two at a
    time."""
    threads = torch.get_num_threads()
    argv = ["--smoke", "--data-root", str(fashion_root), "--device", "cpu", "--methods", "gan,dde", "--train-only"]
    try:
        torch.set_num_threads(2)
        results([*argv, "--out", str(tmp_path / "two"), "--runs", str(tmp_path / "two" / "runs"), "--jobs", "2"])
        torch.set_num_threads(1)
        results([*argv, "--out", str(tmp_path / "one"), "--runs", str(tmp_path / "one" / "runs"), "--jobs", "1"])
    finally:
        torch.set_num_threads(threads)
    runs = ["gan_one_loss", "gan_alternating", "dae", "dde"]  # the DDE distils the DAE's run
    summaries = {}
    for jobs in ("one", "two"):
        summaries[jobs] = {r: json.loads((tmp_path / jobs / "runs" / r / "results_training.json").read_text())
                           for r in runs}
    for run in runs:
        assert_same_state(tmp_path / "one" / "runs" / run, tmp_path / "two" / "runs" / run)
        assert summaries["two"][run]["threads"] == summaries["one"][run]["threads"] == 1
        host = summaries["one"][run]["machine"].replace(", 1 threads", ", 2 threads")  # the same machine
        assert summaries["two"][run]["machine"] == f"{host}, 2 runs at a time on 1 thread each"
    dae = summaries["two"]["dae"]  # the DDE started from the DAE's finished run
    assert summaries["two"]["dde"]["teacher"] == {k: dae[k] for k in ("run", "steps", "seconds")}
    shutil.rmtree(tmp_path / "two" / "runs" / "gan_alternating")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # trained one at a time beside runs trained two at a time: refused
        results([*argv, "--out", str(tmp_path / "two"), "--runs", str(tmp_path / "two" / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "2 runs at a time on 1 thread each" in err[0], err
    assert not (tmp_path / "two" / "runs" / "gan_alternating").exists()


def test_a_distilled_run_is_reused_only_beside_the_teacher_run_it_distilled(tmp_path):
    from common.errors import ConfigError
    from results import RUNS, config_digest, finished, teacher_summary
    run = RUNS["dde"]
    assert run.teacher == "dae"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    teacher = {"run": "dae", "steps": 5930, "seconds": 722.0, "images": 379520}
    done = {"run": "dde", "config": run.config, "config_digest": config_digest(ROOT / "configs" / run.config),
            "overrides": run.overrides, "steps": 3, "seconds": 1.0, "teacher": teacher_summary(teacher)}
    (tmp_path / "results_training.json").write_text(json.dumps(done))
    assert finished(tmp_path, run, False, teacher) == done
    for other in (dict(teacher, steps=5931), dict(teacher, seconds=700.0)):  # the DAE trained again since
        with pytest.raises(ConfigError, match="distils another run of its teacher dae"):
            finished(tmp_path, run, False, other)


def test_retraining_a_distilled_run_keeps_its_teacher_run_and_the_teachers_rows(smoke):
    """--methods dde --retrain trains the DDE again from the DAE rows' run, which the table still shows:
    retraining the teacher too would leave those rows describing a deleted run."""
    out, argv = smoke
    teacher, dde = out / "runs" / "dae", out / "runs" / "dde"
    before = (teacher / "checkpoints" / "last.pt").stat().st_mtime_ns, (teacher / "results_training.json").read_text()
    dde_before = (dde / "checkpoints" / "last.pt").stat().st_mtime_ns
    rows = {r["row"]: r for r in json.loads((out / "docs" / "results.json").read_text())["rows"]}
    results([*argv, "--methods", "dde", "--retrain"])
    assert ((teacher / "checkpoints" / "last.pt").stat().st_mtime_ns, (teacher / "results_training.json").read_text()) \
        == before
    assert (dde / "checkpoints" / "last.pt").stat().st_mtime_ns != dde_before  # the DDE itself trained again
    summary = json.loads((dde / "results_training.json").read_text())
    assert summary["teacher"] == {k: json.loads(before[1])[k] for k in ("run", "steps", "seconds")}
    after = {r["row"]: r for r in json.loads((out / "docs" / "results.json").read_text())["rows"]}
    assert all(after[name] == rows[name] for name in rows if name.startswith("dae_"))  # kept, and still true


def test_a_config_digest_reads_the_settings_not_the_comments(tmp_path):
    from results import config_digest
    a, b, c = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    a.write_text("method: gan\ntrain: {steps: 10, batch_size: 64}\n")
    b.write_text("# why 10 steps\nmethod: gan\ntrain:\n  batch_size: 64   # the DCGAN's\n  steps: 10\n")
    c.write_text("method: gan\ntrain: {steps: 11, batch_size: 64}\n")
    assert config_digest(a) == config_digest(b) != config_digest(c)


ANOTHER_MACHINE = "Intel(R) Xeon(R) Processor CPU with AMX, 2 threads"


@pytest.mark.parametrize("spoil,message", [
    # made on another machine: its 12 minutes bought other step counts than this one's would
    (lambda table: json.dumps(dict(table, header=dict(table["header"], machine=ANOTHER_MACHINE))),
     "{saved} was made on " + ANOTHER_MACHINE + ", this is {here}: rows trained for equal minutes on different "
     "machines do not compare; run every method here (no --methods), or pass --out DIR for a table of its own"),
    # cut short (a hand edit, a bad merge)
    (lambda table: json.dumps(table)[:100],
     "{saved} is not a results table (no header's machine: JSONDecodeError): restore it or pass --out DIR for a "
     "table of its own"),
], ids=["another_machine", "cut_short"])
def test_a_partial_run_that_cannot_join_the_table_is_one_line_before_anything_runs(spoil, message, smoke, capsys):
    from engine.report import machine
    out, argv = smoke
    saved, markdown = out / "docs" / "results.json", out / "docs" / "results.md"
    last = out / "runs" / "gan_one_loss" / "checkpoints" / "last.pt"
    table, text, before = saved.read_text(), markdown.read_text(), last.stat().st_mtime_ns
    saved.write_text(spoil(json.loads(table)))
    try:
        with pytest.raises(SystemExit) as e:
            results([*argv, "--methods", "gan", "--retrain"])
    finally:
        saved.write_text(table)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err == ["error: " + message.format(saved=saved, here=machine(torch.device("cpu")))], err
    assert markdown.read_text() == text and last.stat().st_mtime_ns == before


def test_a_cpu_is_named_with_its_widest_matrix_unit():
    from engine.report import cpu_name
    info = ("processor\t: {i}\nmodel name\t: Intel(R) Xeon(R) Processor\n"
            "flags\t\t: fpu sse2 avx2 avx512f {extra}\n\n")
    assert cpu_name(info.format(i=0, extra="avx512_bf16 amx_tile amx_bf16") + info.format(i=1, extra="")) == \
        "Intel(R) Xeon(R) Processor CPU with AMX"  # the first CPU's
    assert cpu_name(info.format(i=0, extra="avx512_bf16")) == "Intel(R) Xeon(R) Processor CPU with AVX512-BF16"
    assert cpu_name(info.format(i=0, extra="")) == "Intel(R) Xeon(R) Processor CPU with AVX-512"
    assert cpu_name("processor\t: 0\nmodel name\t: Some ARM core\n") == "Some ARM core CPU"


@pytest.mark.parametrize("extra,message", [
    (["--methods", "gan,bogus"], "--methods: unknown method 'bogus'"),
    (["--reuse", "--methods", "ncsn"], "--reuse: no finished run ncsn"),
    (["--out", "FILE/docs"], "--out: FILE is a file, so FILE/docs cannot be created under it"),
    (["--jobs", "0"], "--jobs 0: torch runs on"),
    (["--jobs", "65536"], "each run trained at once needs one"),
])
def test_results_bad_input_is_one_line(extra, message, fashion_root, tmp_path, capsys):
    (tmp_path / "FILE").write_text("a file where a folder should be")
    extra = [e.replace("FILE", str(tmp_path / "FILE")) for e in extra]
    message = message.replace("FILE", str(tmp_path / "FILE"))
    with pytest.raises(SystemExit) as e:
        results(["--smoke", "--data-root", str(fashion_root), "--runs", str(tmp_path / "runs"),
                 "--out", str(tmp_path / "docs"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "docs" / "results.md").exists()


@pytest.mark.parametrize("extra,message", [
    (["--data-root", "EMPTY"], "--data-root EMPTY: no CIFAR-10 there (neither train.zip of class folders nor "
                               "cifar-10-batches-py/)"),
    (["--methods", "ebm"], "--methods: unknown method 'ebm' for --data cifar10; choose from dae,dae_autoguided,dae_conditional,"
                          "gan,gan_conditional,inpaint,ncsn,ncsn_autoguided,real"),
])
def test_results_cifar10_bad_input_is_one_line(extra, message, cifar_jpeg_root, tmp_path, capsys):
    (tmp_path / "EMPTY").mkdir()
    extra = [e.replace("EMPTY", str(tmp_path / "EMPTY")) for e in extra]
    with pytest.raises(SystemExit) as e:
        results(["--smoke", "--data", "cifar10", "--data-root", str(cifar_jpeg_root), "--runs", str(tmp_path / "runs"),
                 "--out", str(tmp_path / "docs"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and message.replace("EMPTY", str(tmp_path / "EMPTY")) in err[0], err
    assert not (tmp_path / "docs" / "results_cifar10.md").exists()


def test_results_retrain_checks_the_data_before_deleting_a_finished_run(smoke, fashion_root, tmp_path):
    out, argv = smoke
    truncated = tmp_path / "truncated"
    shutil.copytree(fashion_root, truncated)
    images = truncated / "train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:5000]))
    argv = [str(truncated) if a == str(fashion_root) else a for a in argv]
    with pytest.raises(SystemExit) as e:
        results([*argv, "--methods", "gan", "--retrain"])
    assert e.value.code == 2
    run = out / "runs" / "gan_one_loss"
    assert (run / "results_training.json").is_file() and (run / "checkpoints" / "last.pt").is_file()


def test_smoke_runs_are_never_taken_for_full_ones(smoke, fashion_root, capsys):
    out, _ = smoke
    with pytest.raises(SystemExit) as e:
        results(["--data-root", str(fashion_root), "--runs", str(out / "runs"), "--out", str(out / "full"),
                 "--methods", "gan", "--reuse", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1] == (f"error: {out / 'runs' / 'gan_one_loss'} holds a --smoke run: pass --runs "
                                             f"DIR of full runs, or --retrain to replace it")


def test_results_cifar10_smoke_writes_its_own_table_grids_and_class_spread(cifar_jpeg_root, smoke, tmp_path):
    """--data cifar10 on the JPEG zips: its own table (docs/results_cifar10.md), a grid per row in colour,
    a classifier trained on its classes, and the class-spread table whose shares sum to 100%; the
    Fashion-MNIST table beside it is left as it was."""
    from results import CIFAR10_ROWS
    out, _ = smoke
    docs = out / "docs"
    before = (docs / "results.md").read_text()
    results(["--smoke", "--data", "cifar10", "--data-root", str(cifar_jpeg_root), "--out", str(docs),
             "--runs", str(tmp_path / "runs"), "--device", "cpu"])
    assert (docs / "results.md").read_text() == before
    rows = table_rows(docs / "results_cifar10.md")
    assert [r[0] for r in rows[1:]] == [r.name for r in CIFAR10_ROWS]
    for name in [r.name for r in CIFAR10_ROWS] + ["inpaint_dae_right", "inpaint_dae_centre"]:
        with Image.open(docs / "results_cifar10" / f"{name}.png") as image:
            assert image.mode == "RGB" and image.size[0] > 32
    assert [r["row"] for r in json.loads((docs / "results_cifar10.json").read_text())["inpainting"]] == [
        "inpaint_dae_right", "inpaint_dae_centre"]
    saved = json.loads((docs / "results_cifar10.json").read_text())
    assert saved["header"]["data"] == "CIFAR-10"
    for r in saved["rows"]:
        assert len(r["class_histogram"]) == 10 and sum(r["class_histogram"]) == r["n"]
    # the class-conditional runs' rows are drawn class by class and scored against the requested classes
    conditional = [r.name for r in CIFAR10_ROWS if r.method.endswith("_conditional")]
    assert len(conditional) > 1 and [r["row"] for r in saved["rows"] if "class_accuracy" in r] == conditional
    text = (docs / "results_cifar10.md").read_text()
    assert "Class-conditional rows" in text
    spread = text[text.index("Spread over the classes"):]
    first = markdown_rows(spread)[1]
    assert abs(sum(float(c) for c in first[4:]) - 100) < 0.5
    from engine.evaluation.classifier import load_classifier
    _, ckpt = load_classifier(tmp_path / "runs" / "classifier.pt")
    assert ckpt["data"] == "cifar10" and ckpt["arch"]["in_channels"] == 3 and ckpt["num_classes"] == 10


def test_bits_per_dim_sentence_names_the_points_of_rows_kept_from_another_scoring():
    """A table merged from two scorings with different --n-bpd says on how many images each method's
    bits/dim was measured, not only the latest scoring's count."""
    from engine.report import likelihood_sentence
    gauss = {"bpd": 7.9, "ci95": 0.1, "n": 200}
    header = {"baselines": {"diagonal": gauss, "full": dict(gauss, bpd=6.3)}}
    rows = [{"method": "ncsn", "likelihood": {"bpd": 3.5, "ci95": 0.1, "n": 200}},
            {"method": "dae", "likelihood": {"bpd": 3.4, "ci95": 0.2, "n": 100}}, {"method": "gan", "likelihood": None}]
    text = likelihood_sentence(header, rows)
    assert "on 200 test images (the first of a fixed random order); dae's on the first 100 of them," in text
    assert "; dae's" not in likelihood_sentence(header, rows[:1])
    assert likelihood_sentence({}, rows) == "Bits/dim: not measured in this run."


def spoil_machines(runs: Path, names, machine: str) -> dict:
    """Rewrites the training summaries of `names` as if trained on `machine`; returns their texts to restore."""
    saved = {}
    for name in names:
        path = runs / name / "results_training.json"
        saved[path] = path.read_text()
        path.write_text(json.dumps(dict(json.loads(saved[path]), machine=machine)))
    return saved


def test_runs_trained_on_two_machines_are_one_line_before_anything_is_scored(smoke, capsys):
    out, argv = smoke
    markdown = out / "docs" / "results.md"
    text = markdown.read_text()
    saved = spoil_machines(out / "runs", ["gan_alternating"], ANOTHER_MACHINE)
    try:
        with pytest.raises(SystemExit) as e:
            results([*argv, "--reuse"])
    finally:
        for path, before in saved.items():
            path.write_text(before)
    from engine.report import machine
    err = capsys.readouterr().err.strip().splitlines()
    runs = out / "runs"
    assert e.value.code == 2 and err == [
        f"error: {runs / 'gan_one_loss'} trained on {machine(torch.device('cpu'))}, {runs / 'gan_alternating'} on "
        f"{ANOTHER_MACHINE}: rows trained for equal minutes on different machines do not compare; pass --retrain "
        "(with --methods for the rows of the runs to train again) on one machine"], err
    assert markdown.read_text() == text


def test_a_table_scored_elsewhere_names_the_machine_its_runs_trained_on(smoke, tmp_path, capsys):
    """Trained on one machine, scored on another (--reuse): the header names both, and a partial run
    trained here cannot join it."""
    out, argv = smoke
    from engine.report import machine
    from results import RUNS
    here = machine(torch.device("cpu"))
    saved = spoil_machines(out / "runs", RUNS, ANOTHER_MACHINE)
    docs = [*argv[:argv.index("--out")], "--out", str(tmp_path / "docs"), *argv[argv.index("--out") + 2:]]
    try:
        results([*docs, "--reuse", "--n-bpd", "0", "--n-inpaint", "4"])
        table = json.loads((tmp_path / "docs" / "results.json").read_text())
        assert table["header"]["machine"] == ANOTHER_MACHINE and table["header"]["scored_on"] == here
        assert f"trained on {ANOTHER_MACHINE} (sampled and scored on {here}), scored against" in \
            (tmp_path / "docs" / "results.md").read_text()
    finally:
        for path, before in saved.items():
            path.write_text(before)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        results([*docs, "--methods", "gan", "--retrain"])
    saved_table = tmp_path / "docs" / "results.json"
    assert e.value.code == 2 and capsys.readouterr().err.strip().splitlines() == [
        f"error: {saved_table} was made on {ANOTHER_MACHINE}, this is {here}: rows trained for equal minutes on "
        "different machines do not compare; run every method here (no --methods), or pass --out DIR for a table of "
        "its own"]
