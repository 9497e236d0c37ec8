"""The shipped classroom model: it loads offline, meets its bar on fresh images, and `retinanet-lab demo` uses it."""

import json
import os
import subprocess
import sys

import pytest

from retinanet_lab import load_classroom_model
from retinanet_lab.classroom import assets_dir, classroom_model_info
from retinanet_lab.data import ShapesDataset
from retinanet_lab.evaluate import evaluate
from retinanet_lab.presets import preset


def test_classroom_model_meets_its_bar_on_fresh_images():
    model = load_classroom_model()
    assert not model.training and model.num_classes == 5 and model.class_names == list(ShapesDataset(1).class_names)
    # seeds never used in training (0) nor by the script's own evaluation (1,000,000)
    r = evaluate(model, ShapesDataset(300, seed=7_000_000, **preset("classroom")["data"]), progress=False)
    assert r["AP"] >= 0.60 and r["AP50"] >= 0.90, r


def test_checkpoint_is_small_and_its_record_is_true():
    path = assets_dir() / "classroom_model.pt"
    assert path.stat().st_size <= 10 * 2**20
    info = classroom_model_info()
    assert info["train_seconds"] <= 300 and info["eval"]["AP"] >= 0.6 and info["eval"]["AP50"] >= 0.9
    assert info["command"] == "retinanet-lab train --preset classroom --out runs/classroom"
    cfg = preset("classroom")
    assert info["steps"] == cfg["run"]["num_images"] // cfg["train"]["batch_size"] * cfg["run"]["epochs"]
    assert info["parameters"] == sum(p.numel() for p in load_classroom_model().parameters())


def test_missing_assets_say_where_to_look(tmp_path, monkeypatch):
    monkeypatch.setenv("RETINANET_LAB_ASSETS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="RETINANET_LAB_ASSETS"):
        load_classroom_model()


def test_cli_demo_scores_and_draws(tmp_path):
    png = tmp_path / "demo.png"
    out = subprocess.run([sys.executable, "-m", "retinanet_lab.cli", "demo", "--num-images", "40", "--out", str(png)],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "MPLBACKEND": "Agg"})
    assert out.returncode == 0, out.stderr
    assert "AP50" in out.stdout and "never seen in training" in out.stdout
    ap50 = float(out.stdout.split("AP50 ")[1].split()[0])
    assert ap50 >= 0.8
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_ablation_files_are_complete():
    loss = json.loads((assets_dir() / "ablation_loss.json").read_text())
    names = {r["name"] for r in loss["runs"]}
    assert "CE" in names and {f"α-CE α={a:g}" for a in (0.25, 0.5, 0.75)} <= names
    assert {f"FL γ={g:g} α={a:g}" for g in (0.5, 1, 2, 5) for a in (0.25, 0.5, 0.75)} <= names
    assert all(len({r["seed"] for r in loss["runs"] if r["name"] == n}) >= 2 for n in names)
    assert all(0 <= r["AP"] <= 1 and r["loss"] for r in loss["runs"])
    prior = json.loads((assets_dir() / "ablation_prior.json").read_text())
    first = {r["prior"]: r["loss"][0][1] for r in prior["runs"]}
    assert first[0.5] > 10 * first[0.01]  # section 4.1: the unbiased start has a much larger first loss
