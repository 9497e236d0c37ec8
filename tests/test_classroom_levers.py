"""benchmarks/classroom_levers.py and classroom_step_time.py cannot rot: their smoke runs take the whole path."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import classroom_levers  # noqa: E402


def _run(recipe: str, tmp_path) -> dict:
    """The script run as a user runs it, on one recipe: the JSON line it writes."""
    out = tmp_path / "levers.jsonl"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "classroom_levers.py"), "--only", recipe, "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(out.read_text().splitlines()[0])


def test_the_smoke_recipe_trains_scores_and_counts_flops(tmp_path):
    row = _run("smoke", tmp_path)
    assert row["recipe"] == "smoke" and row["steps"] == 3 and row["images_seen"] == 12
    assert 0 <= row["AP"] <= 1 and row["bar"] is False
    # batch 4 of the classroom model at 160 px: a quarter of the preset's 23.66 GFLOPs a step (batch 16)
    assert abs(row["GFLOPs_per_step"] - 23.66 / 4) < 0.05


@pytest.mark.parametrize("recipe, gflops_batch16", [
    ("smoke_fast", 12.64),  # classroom_fast's step (one conv per subnet, 128 px) is 12.64 GFLOPs at batch 16
    ("smoke_schedule", (7.16 + 12.64) / 2),  # half the steps at 96 px (7.16), half at 128: their mean
])
def test_a_recipe_that_trains_small_counts_the_flops_of_its_steps_not_of_its_scoring(tmp_path, recipe, gflops_batch16):
    row = _run(recipe, tmp_path)  # scored at 160 px all the same
    assert row["recipe"] == recipe and row["steps"] == 2 and abs(row["GFLOPs_per_step"] - gflops_batch16 / 4) < 0.05


def test_flops_follow_the_input_size_and_the_subnets():
    from retinanet_lab.presets import preset

    model = preset("classroom")["model"]
    full = classroom_levers.gflops_per_step(model, 16)
    small = classroom_levers.gflops_per_step({**model, "min_size": 128, "max_size": 128}, 16)
    padded = classroom_levers.gflops_per_step({**model, "min_size": 144, "max_size": 144}, 16)
    one_conv = classroom_levers.gflops_per_step({**model, "head_convs": 1}, 16)
    assert abs(full - 23.66) < 0.05
    assert abs(small / full - 0.64) < 0.02  # (128 / 160)^2
    assert padded == full  # 144 px is padded to a multiple of 32: 160, no saving (RESULTS.md)
    assert 0.8 < one_conv / full < 0.88


def test_the_step_time_script_times_each_size_with_both_optimisers(capsys):
    import classroom_step_time

    assert classroom_step_time.main(["--sizes", "64", "96", "--repeats", "1", "--batch", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[1:]]
    assert [(r[0], r[2]) for r in rows] == [("64", "for-loop"), ("64", "fused"), ("96", "for-loop"), ("96", "fused")]
    assert all(float(r[3]) > 0 for r in rows)
