"""The GPU check cannot rot on machines without a GPU: its --smoke size runs the same code on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_part_on_the_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] and report["device"].startswith("CPU")
    assert report["tests"]["returncode"] == 0 and "passed" in report["tests"]["summary"]
    assert "failed" not in report["tests"]["summary"] and "skipped" not in report["tests"]["summary"]
    for key in ("small64/fp32", "small64/amp"):
        for task in ("train_step", "inference"):
            assert report["bench"][key][task]["ours_s"] > 0 and report["bench"][key][task]["torchvision_s"] > 0
    assert report["paper"]["steps"] == 4 and report["paper"]["loss_first"] > 0
    assert len(report["classroom"]["timeline"]) == 2
    assert report["flops"]["forward_GFLOPs_per_image"] > 0 and report["flops"]["bf16"]["images_per_s"] > 0
    for label in ("ours", "torchvision"):
        assert report["profile"][label]["step_s"] > 0 and (tmp_path / report["profile"][label]["table"]).stat().st_size > 0
        assert report["layout"][f"{label}/train_step"]["channels_last_s"] > 0
    assert report["compile"]["train_step"]["compiled_s"] > 0 and report["compile"]["inference"]["eager_s"] > 0
    assert not report["skipped"] and set(report["part_seconds"]) == {"tests", "bench", "flops", "profile", "layout",
                                                                     "paper", "classroom", "compile"}
    assert "Device: CPU" in r.stdout and "throughput bf16" in r.stdout
