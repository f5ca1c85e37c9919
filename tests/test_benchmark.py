"""scripts/benchmark.py runs at tiny sizes on a CPU and reports every row consistently. (Speed
targets are measured on a GPU with the script, never asserted in tests.)"""
import json
import math
import subprocess
import sys

from conftest import ROOT


def test_benchmark_tiny_reports_every_row(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts/benchmark.py"), "--tiny", "--repeats", "2",
                        "--warmup", "1", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {(row["row"], row["variant"]): row for row in result["rows"]}
    for model in ("gan/dcgan64/b8", "gan/sngan32/b8"):
        for step in ("alternating", "one_loss"):
            for variant in ("fp32 eager", "fast"):
                row = rows[(f"{model}/{step}", variant)]
                assert math.isclose(row["images_per_s"], 8 * 1e3 / row["ms"], rel_tol=1e-9)
        assert rows[(f"{model}/alternating", "fp32 eager")]["speedup"] == 1.0
    for name in ("ncsn/ncsnv2_32/b4", "sampling/ncsnv2_32/nfe_b16", "sampling/ncsnv2_32/langevin_16",
                 "sampling/ncsnv2_32/heun_16"):
        assert {v for (n, v) in rows if n == name} == {"fp32 eager", "fast"}
    assert rows[("sampling/ncsnv2_32/langevin_16", "fast")]["nfe"] == 4 * 2 + 1
    assert rows[("sampling/ncsnv2_32/heun_16", "fast")]["nfe"] == 2 * 4 - 1
    assert all(row["ms"] > 0 and math.isfinite(row["ms"]) for row in result["rows"])
    assert ("data/device/b64", "device") in rows and ("data/workers/b64", "workers") in rows
    assert "speedup" in r.stdout.splitlines()[0]
