"""scripts/benchmark.py runs at tiny sizes on a CPU and reports every row consistently, and refuses
bad options with one line. (Speed targets are measured with the script, never asserted in tests.)"""
import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT

BENCH = [sys.executable, str(ROOT / "scripts/benchmark.py")]


def test_benchmark_tiny_reports_every_row(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run(BENCH + ["--sizes", "tiny", "--repeats", "2", "--warmup", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["meta"]["sizes"] == "tiny"
    rows = {(row["row"], row["variant"]): row for row in result["rows"]}
    groups = {"gan/dcgan32/b8": ("alternating", "one_loss", "one_loss_bracket"),
              "gan/dcgan32/b8/no_bn_d": ("alternating", "one_loss", "one_loss_fused"),
              "gan/sngan32/b8": ("alternating", "one_loss", "one_loss_bracket"),
              **{f"gan/{net}/b8/diffaugment": ("alternating", "one_loss") for net in ("dcgan32", "sngan32")}}
    for group, steps in groups.items():
        for step in steps:
            for variant in ("fp32 eager", "fast"):
                row = rows[(f"{group}/{step}", variant)]
                assert math.isclose(row["images_per_s"], 8 * 1e3 / row["ms"], rel_tol=1e-9)
                base = rows[(f"{group}/alternating", "fp32 eager")]["ms"]
                assert math.isclose(row["speedup"], base / row["ms"], rel_tol=1e-9)
        assert rows[(f"{group}/alternating", "fp32 eager")]["speedup"] == 1.0
    for name in ("ncsn/ncsnv2_32/b4", "sampling/ncsnv2_32/nfe_b16", "sampling/ncsnv2_32/langevin_16",
                 "sampling/ncsnv2_32/heun_16"):
        assert {v for (n, v) in rows if n == name} == {"fp32 eager", "fast"}
    assert rows[("sampling/ncsnv2_32/langevin_16", "fast")]["nfe"] == 4 * 2 + 1
    assert rows[("sampling/ncsnv2_32/heun_16", "fast")]["nfe"] == 2 * 4 - 1
    assert all(row["ms"] > 0 and math.isfinite(row["ms"]) for row in result["rows"])
    assert ("data/device/b64", "device") in rows and ("data/workers/b64", "workers") in rows
    decode = rows[("data/jpeg_decode/b64", "first read")]
    assert math.isclose(decode["images_per_s"], 64 * 1e3 / decode["ms"], rel_tol=1e-9)
    assert "speedup" in r.stdout.splitlines()[0]
    assert "benchmark: tiny sizes on cpu" in r.stderr


@pytest.mark.parametrize("args,message", [
    (["--only", "bogus"], "--only: unknown section 'bogus'"),
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--device", "bogus"], "--device: must be auto, cpu, cuda or cuda:N"),
])
def test_benchmark_refuses_bad_options_in_one_line(args, message, capsys):
    from benchmark import main
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
