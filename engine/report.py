"""The results table as Markdown: the table, its header paragraphs, the grid of sample images, and
the README block between its results markers (scripts/results.py computes every number)."""
from __future__ import annotations

import platform
from pathlib import Path

import torch

from common.errors import ConfigError
from common.paths import write_text_atomic

MARKERS = ("<!-- results:begin (written by scripts/results.py) -->", "<!-- results:end -->")


# The widest matrix instructions a CPU may have, widest first (flags as /proc/cpuinfo spells them).
# Two CPUs of one name can differ here, and a table's rows train for equal minutes, not steps: in
# 12 minutes the DDE's CPU config made 3,840 steps on a 2-core "Intel(R) Xeon(R) Processor" with
# AMX, 1,757 on one without.
MATRIX_UNITS = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def cpu_name(cpuinfo: str) -> str:
    """A CPU's model name with the widest of its MATRIX_UNITS, from the text of /proc/cpuinfo."""
    fields = dict(line.split(":", 1) for line in reversed(cpuinfo.splitlines()) if ":" in line)  # the first CPU's
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    unit = next((name for flag, name in MATRIX_UNITS if flag in flags), None)
    return fields.get("model name", platform.machine()) + " CPU" + (f" with {unit}" if unit else "")


def machine(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        name = cpu_name(Path("/proc/cpuinfo").read_text())
    except OSError:
        name = f"{platform.machine()} CPU"
    return f"{name}, {torch.get_num_threads()} threads"


def fmt(value, spec):
    return "–" if value is None else format(value, spec)


def minutes(seconds):
    return None if seconds is None else seconds / 60


def table(results: list[dict], header: dict) -> str:
    lines = [
        f"{header.get('data', 'Fashion-MNIST')}, every method at CPU scale: trained on {header['machine']}"
        + (f" (sampled and scored on {header['scored_on']})" if header.get("scored_on") else "") + ", scored against the "
        f"{header['n_ref']:,} test images in the features of a ResNet-9 classifier (width "
        f"{header['classifier']['width']}, {header['classifier']['epochs']} epochs, seed 0; test accuracy "
        f"{header['classifier']['accuracy']:.2%}) that `scripts/results.py` trains itself. FID and KID are "
        f"in those 8·{header['classifier']['width']} = {8 * header['classifier']['width']} features "
        f"(not comparable with Inception FIDs); precision and recall are Kynkäänniemi et al.'s (k = 3). "
        f"FID depends on n: compare rows at equal n, or by KID (unbiased). Samples from the EMA weights, "
        f"seed {header['seed']}; a denoising net samples in its run's precision, fp32 unless the sampler "
        f"column names another. torch {header['torch']}, {header['date']}.{dates_note(results, header)}",
        "",
        likelihood_sentence(header, results),
        "",
        "| row | method | config | train min | steps | images seen | sampler | NFE/sample | sampling s "
        "| n | FID | KID ×10³ | precision | recall | bits/dim |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['row']} | {r['method']} | {r['config']} | {fmt(minutes(r['train_seconds']), '.1f')} "
            f"| {fmt(r['steps'], ',')} | {fmt(r['images'], ',')} | {r['sampler']} | {fmt(r['nfe'], ',')} "
            f"| {fmt(r['sample_seconds'], '.1f')} | {r['n']:,} | {r['fid']:.2f} "
            f"| {1e3 * r['kid']:.2f} ± {1e3 * r['kid_std']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} "
            f"| {bpd_text(r.get('likelihood'))} |")
    return "\n".join(lines) + "\n"


def dates_note(results: list[dict], header: dict) -> str:
    """A sentence naming the rows scored on another day than the header's (results.py --methods
    scores some rows and keeps the others), or nothing."""
    older = {}
    for r in results:
        if r.get("scored", header["date"]) != header["date"]:
            older.setdefault(r["scored"], []).append(r["row"])
    if not older:
        return ""
    return " Rows kept from earlier scorings (same machine, classifier, reference and seed): " + "; ".join(
        f"{', '.join(rows)} on {day}" for day, rows in sorted(older.items())) + "."


def nfe_table(results: list[dict]) -> str:
    """KID ×10³ against network evaluations per sample: one row per denoising method and sampler,
    one column per budget the table's rows sampled at (each sampler's cost-quality curve)."""
    rows = [r for r in results if r["method"].removesuffix("_autoguided") in ("dae", "ncsn", "ebm")]
    if not rows:
        return ""
    budgets = sorted({r["nfe"] for r in rows})
    cells = {}
    for r in rows:
        family = r["sampler"].split(",")[0]
        cells.setdefault((r["method"], family), {})[r["nfe"]] = f"{1e3 * r['kid']:.0f} ± {1e3 * r['kid_std']:.0f}"
    lines = ["KID ×10³ against network evaluations per sample (NFE), each sampler at the budgets of the rows "
             "above:", "", "| method | sampler | " + " | ".join(f"{b} NFE" for b in budgets) + " |",
             "|---|---|" + "---|" * len(budgets)]
    for (method, family), by_nfe in cells.items():
        lines.append(f"| {method} | {family} | " + " | ".join(by_nfe.get(b, "") for b in budgets) + " |")
    return "\n".join(lines) + "\n"


def class_spread_table(results: list[dict]) -> str:
    """How each row's samples spread over the classes: the classifier's predicted-class shares (class
    by class, after the smallest of them) and the Inception-style score in its logits, for the rows
    that were scored by a classifier; nothing for a table without those figures (older scorings)."""
    rows = [r for r in results if r.get("class_histogram")]
    if not rows:
        return ""
    k = len(rows[0]["class_histogram"])
    lines = ["Spread over the classes: the share of each row's samples the classifier puts in each class "
             f"(uniform: {100 / k:.0f}%), the smallest share, and the classifier's Inception score (IS, ± over "
             "10 splits; the real split's is the ceiling).", "",
             "| row | n | IS | smallest class share | " + " | ".join(f"class {c}" for c in range(k)) + " |",
             "|" + "---|" * (4 + k)]
    for r in rows:
        counts = r["class_histogram"]
        total = sum(counts)
        shares = [100 * c / total for c in counts]
        lines.append(f"| {r['row']} | {total:,} | {r['is']:.2f} ± {r['is_std']:.2f} | {min(shares):.1f}% | "
                     + " | ".join(f"{s:.1f}" for s in shares) + " |")
    return "\n".join(lines) + "\n"


def conditional_table(results: list[dict]) -> str:
    """The class-conditional rows' class scores: the classifier's agreement with the requested class,
    FID and KID per class (each class's samples against its test images), beside recall."""
    rows = [r for r in results if "class_accuracy" in r]
    if not rows:
        return ""
    lines = ["Class-conditional rows (balanced classes; the classifier itself scores the real test images at "
             "the accuracy above): conditional accuracy is how often it gives a sample the requested class; "
             "FID and KID per class compare each class's n/10 samples with that class's 1,000 test images "
             "(per-class FID is biased upward at small n, so compare rows at equal n).", "",
             "| row | sampler | NFE/sample | conditional accuracy | per-class FID (mean) | per-class KID ×10³ (mean) "
             "| FID | KID ×10³ | precision | recall |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['row']} | {r['sampler']} | {fmt(r['nfe'], ',')} | {r['class_accuracy']:.3f} "
                     f"| {r['class_fid']:.2f} | {1e3 * r['class_kid']:.1f} | {r['fid']:.2f} "
                     f"| {1e3 * r['kid']:.2f} ± {1e3 * r['kid_std']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} |")
    return "\n".join(lines) + "\n"


def inpainting_table(rows: list[dict]) -> str:
    """Inpainting rows: PSNR of the missing pixels for the model (one draw, and the mean of k draws
    where there are k > 1) and the two baselines, and how often the classifier gives each completion
    the original's class."""
    if not rows:
        return ""
    lines = ["Inpainting of n test images, the same for every row (`scripts/evaluate.py --inpaint MASK`): the "
             "model fills the missing pixels by replacing the known ones with the test image noised to each level "
             "sampled, and with λ > 0 pulls its estimate of the missing pixels toward agreement with the known "
             "ones through the net's Jacobian (ΠGDM's reconstruction guidance, one backward pass per evaluation; "
             "denoising/guidance.py). PSNR (dB) of the missing pixels against the truth, beside filling them with "
             "the training mean or from the training image nearest on the visible pixels; and the share of "
             "completions the classifier gives the original's class. A completion is one draw of the missing "
             "pixels, whose expected squared error is twice their conditional variance; the mean of k draws "
             "(`--draws k`) estimates the conditional mean, the PSNR-optimal fill, at (1 + 1/k) times it, and is "
             "blurrier for it (the perception–distortion trade-off).", "",
             "| row | mask | missing | sampler | n | PSNR: one draw | mean of k draws | mean fill | nearest "
             "| class kept: one draw | mean of k | mean fill | nearest | sampling s (one draw) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        k = r.get("draws", 1)
        mean_psnr = f"{r['psnr_posterior_mean']:.2f} (k {k})" if "psnr_posterior_mean" in r else "–"
        lines.append(f"| {r['row']} | {r['mask']} | {r['missing_fraction']:.0%} | {r['sampler']} | {r['n']:,} "
                     f"| {r['psnr_model']:.2f} | {mean_psnr} | {r['psnr_mean_fill']:.2f} | {r['psnr_nearest']:.2f} "
                     f"| {fmt(r.get('class_agreement_model'), '.3f')} "
                     f"| {fmt(r.get('class_agreement_posterior_mean'), '.3f')} "
                     f"| {fmt(r.get('class_agreement_mean_fill'), '.3f')} "
                     f"| {fmt(r.get('class_agreement_nearest'), '.3f')} | {fmt(r['sample_seconds'], '.1f')} |")
    return "\n".join(lines) + "\n"


def bpd_text(result: dict | None) -> str:
    if not result:
        return "–"
    return f"{result['bpd']:.3f} ± {result['ci95']:.3f}" if result.get("ci95") is not None else f"{result['bpd']:.3f}"


def likelihood_sentence(header: dict, results: list[dict] = ()) -> str:
    b = header.get("baselines")
    if not b:
        return "Bits/dim: not measured in this run."
    n = b["diagonal"]["n"]
    other = {r["method"]: r["likelihood"]["n"] for r in results  # rows kept from a scoring with another --n-bpd
             if r.get("likelihood") and r["likelihood"].get("n", n) != n}
    others = "".join(f"; {method}'s on the first {k:,} of them" for method, k in other.items())
    return (f"Bits/dim (the runs named by --bpd-methods; one value for a run's sampler rows) is the test "
            f"log-likelihood by the probability-flow ODE (RK45, rtol = atol = 1e-5, one Rademacher probe "
            f"per image; uniform dequantisation, `scripts/likelihood.py`) on {n:,} test images (the first "
            f"of a fixed random order){others}, with its 95% interval. On those {n:,} the best diagonal "
            f"Gaussian fitted to the training set gives {bpd_text(b['diagonal'])} bits/dim and the best "
            f"full-covariance Gaussian {bpd_text(b['full'])}.")


def grids_markdown(results, prefix: str) -> str:
    cells = [f"<td align=center><img src=\"{prefix}/{r['row']}.png\" width=200><br>{r['row']}</td>"
             for r in results]
    rows = ["<tr>" + "".join(cells[i:i + 4]) + "</tr>" for i in range(0, len(cells), 4)]
    return "<table>\n" + "\n".join(rows) + "\n</table>\n"


def write_readme(path: Path, body: str, markers: tuple[str, str] = MARKERS):
    text = path.read_text()
    begin, end = markers
    if begin not in text or end not in text:
        raise ConfigError(f"{path} has no results markers ({begin} ... {end}): add them where the table goes")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    write_text_atomic(path, head + begin + "\n" + body + end + tail)
