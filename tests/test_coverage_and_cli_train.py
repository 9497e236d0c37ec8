"""Anchor coverage report, and the train / eval / predict / anchors commands end to end on tiny data."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from retinanet_lab import AnchorConfig
from retinanet_lab.coverage import anchor_coverage, format_coverage


class Boxes(torch.utils.data.Dataset):
    """Blank 256 x 256 images with the given boxes."""

    def __init__(self, boxes_per_image):
        self.items = boxes_per_image

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        boxes = torch.tensor(self.items[i], dtype=torch.float32).reshape(-1, 4)
        return torch.zeros(3, 256, 256), {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64)}


def test_coverage_of_objects_that_are_anchors():
    # a 64 x 64 box centred on a P4 location (stride 16): exactly an anchor of size 64, ratio 1
    data = Boxes([[[96.0, 96, 160, 160]], [[32.0, 32, 96, 96]]])
    r = anchor_coverage(data, AnchorConfig(), min_size=256, max_size=256)
    assert r["objects"] == 2 and r["coverage"] == 1.0 and r["best_iou"].min() == pytest.approx(1.0)
    assert r["suggestions"] == []


def test_small_objects_are_reported_and_a_fix_suggested():
    # 20 px squares: IoU with the smallest (32 px) anchor is at most 400/1024 < 0.5
    data = Boxes([[[x, y, x + 20, y + 20] for x in (4.0, 60, 120) for y in (8.0, 100)]])
    r = anchor_coverage(data, AnchorConfig(), min_size=256, max_size=256)
    assert r["coverage"] == 0.0
    small = next(row for row in r["by_size"] if row["bin"].startswith("small"))
    assert small["objects"] == 6 and small["covered"] == 0.0
    assert r["best_iou_histogram"][4] + r["best_iou_histogram"][3] == 6  # all between 0.3 and 0.5
    best = r["suggestions"][0]
    assert best["coverage"] > 0.5 and "halved" in best["change"]
    text = format_coverage(r)
    assert "0.0% have an anchor" in text and "try sizes halved" in text


def _cli(*args, cwd=None, timeout=600):
    exe = shutil.which("retinanet-lab", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "retinanet_lab.cli"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.mark.slow
def test_train_eval_predict_anchors_commands(tmp_path):
    out = tmp_path / "run"
    r = _cli("train", "--num-images", 16, "--val-images", 4, "--epochs", 1, "--batch", 8, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "lr = " in r.stdout and (out / "checkpoint.pt").exists() and (out / "metrics.jsonl").exists()
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "AP" in line]
    assert len(evals) == 1
    r = _cli("eval", out / "checkpoint.pt", "--num-images", 4)
    assert r.returncode == 0, r.stderr
    assert "AP50" in r.stdout and "circle" in r.stdout
    from PIL import Image

    from retinanet_lab.data import ShapesDataset

    image = ShapesDataset(1, seed=5, image_size=160)[0][0]
    Image.fromarray((image * 255).byte().permute(1, 2, 0).numpy()).save(tmp_path / "x.png")
    r = _cli("predict", out / "checkpoint.pt", tmp_path / "x.png", "--out", tmp_path / "pred", "--score-thresh", 0.0)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "pred" / "x_detections.png").exists()
    assert str(tmp_path / "x.png") in json.loads((tmp_path / "pred" / "detections.json").read_text())
    r = _cli("anchors", "--num-images", 20, "--preset", "paper", "--min-size", 160, "--max-size", 160)
    assert r.returncode == 0, r.stderr
    assert "have an anchor at IoU >= 0.5" in r.stdout and "small (<32 px)" in r.stdout


@pytest.mark.slow
def test_train_under_torchrun_speaks_once(tmp_path):
    # two processes on the CPU: each draws and trains, but only the first prints its lines and writes the checkpoint
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "retinanet_lab.cli",
           "train", "--num-images", "16", "--val-images", "4", "--steps", "2", "--batch", "2", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    lines = r.stdout.splitlines()
    for start in ("drew ", "data: ", "training on 2 processes on cpu", "after 2 steps", "checkpoint: "):
        assert sum(line.startswith(start) for line in lines) == 1, (start, r.stdout[-3000:])
    assert (out / "checkpoint.pt").exists()


def test_commands_explain_themselves():
    for command in ("train", "eval", "predict", "anchors"):
        r = _cli(command, "--help")
        assert r.returncode == 0 and len(r.stdout) > 300, command
    r = _cli("train", "--data", "coco")
    assert r.returncode != 0 and "--images DIR and --annotations FILE" in (r.stderr + r.stdout)


def test_a_preset_that_trains_small_keeps_its_ratio_at_another_input_size(tmp_path):
    # classroom_fast trains at 96 then 128 px a model used at 160; asked for 320 px it must train at 192 then 256
    r = _cli("train", "--preset", "classroom_fast", "--size", 320, "--num-images", 4, "--val-images", 2, "--steps", 1,
             "--batch", 2, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert "steps at 192 then 256 px, evaluated and saved at 320 px" in r.stdout


def test_a_size_schedule_keeps_its_ratios_at_another_input_size():
    from argparse import Namespace
    from types import SimpleNamespace

    from retinanet_lab.cli import _fit_kwargs
    from retinanet_lab.presets import preset

    cfg = preset("classroom_fast")
    cfg["train"]["train_size"] = (96, 128)  # a schedule of a model used at 160 px
    args = Namespace(epochs=8, batch=None, lr=None)
    assert _fit_kwargs(args, cfg, SimpleNamespace(min_size=320))["train_size"] == (192, 256)
    cfg["train"]["train_size"] = (96, 128)
    assert _fit_kwargs(args, cfg, SimpleNamespace(min_size=160))["train_size"] == (96, 128)
