"""Fine-tuning on real photos (the built-in coins, retinanet_lab/assets/photos), the old way and the new, on this CPU.

    python benchmarks/photos_finetune.py                 # about 25 minutes on 2 cores; writes photos_finetune.json
    python benchmarks/photos_finetune.py --minutes 1     # a quick look

Every run is the command a user types (`retinanet_lab.cli.main`), scored on the 16 evaluation images, whose coins
no training image shows:

    before       the classroom model as shipped, its "circle" class read as "coin" (no training), at 160 and 384 px
    old path     what the README offered before: 160 px, the classroom's anchors, flips only, 40 epochs
                 (`--size 160 --keep-anchors --augment off --epochs 40`), and the same settings for 5 minutes
    new path     the defaults: input size and anchors from the data, zoom/flip/photometric augmentation, a
                 5-minute budget (`--minutes 5`), from the classroom model and from scratch

One seed each: the evaluation set is 6 physical coins seen 71 times, so read differences of a few AP points as noise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time

import torch

from retinanet_lab.checkpoint import load_model
from retinanet_lab.classroom import load_classroom_model
from retinanet_lab.cli import main as cli
from retinanet_lab.data import photo_dataset
from retinanet_lab.evaluate import coco_ground_truth, evaluate, predict, score_detections
from retinanet_lab.fit_to_data import set_input_size


def _score(model, data) -> dict:
    r = evaluate(model, data, progress=False)
    return {k: round(float(r[k]), 3) for k in ("AP", "AP50", "AP75", "APs", "APm")}


def zero_shot(size: int) -> dict:
    """The classroom model's circles, read as coins: what it knows before any training on the photos."""
    model = load_classroom_model()
    set_input_size(model, size)
    data = photo_dataset("eval")
    circle = model.class_names.index("circle") + 1
    coins = []
    for d in predict(model, data, progress=False):
        keep = d["labels"] == circle
        coins.append({"boxes": d["boxes"][keep], "scores": d["scores"][keep], "labels": torch.ones_like(d["labels"][keep])})
    r = score_detections(coco_ground_truth(data), coins)
    return {k: round(float(r[k]), 3) for k in ("AP", "AP50", "AP75", "APs", "APm")}


def train(name: str, args: list[str], out_root: str) -> dict:
    out = os.path.join(out_root, name)
    argv = ["train", "--data", "photos", "--out", out, *args]
    said = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(said):
        code = cli(argv)
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"{name}: retinanet-lab {' '.join(argv)} exited with {code}:\n{said.getvalue()}")
    model = load_model(os.path.join(out, "checkpoint.pt"))
    steps = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)["state"]["step"]
    lines = [line for line in said.getvalue().splitlines() if line.startswith(("input size", "anchors", "after"))]
    return {"command": "retinanet-lab " + " ".join(argv[:3] + argv[5:]), "seconds": round(seconds, 1), "steps": steps,
            "size": model.min_size, "said": lines, **_score(model, photo_dataset("eval"))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=5.0, help="the new path's budget (default 5)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "photos_finetune.json"))
    a = p.parse_args()
    results = {"machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads",
               "before": {"classroom model at 160 px (circle = coin)": zero_shot(160),
                          "classroom model at 384 px (circle = coin)": zero_shot(384)}}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            "old path: from the classroom model, 160 px, its anchors, flips, 40 epochs":
                ["--from-checkpoint", "classroom", "--size", "160", "--keep-anchors", "--augment", "off", "--epochs", "40"],
            f"old settings for {a.minutes:g} minutes: from the classroom model, 160 px, its anchors, flips":
                ["--from-checkpoint", "classroom", "--size", "160", "--keep-anchors", "--augment", "off", "--minutes",
                 f"{a.minutes:g}"],
            f"new path: from the classroom model, defaults, {a.minutes:g} minutes":
                ["--from-checkpoint", "classroom", "--minutes", f"{a.minutes:g}"],
            f"new path: from scratch (classroom preset), defaults, {a.minutes:g} minutes": ["--minutes", f"{a.minutes:g}"],
        }
        results["runs"] = {}
        for name, args in runs.items():
            print(f"{name} ...", file=sys.stderr, flush=True)
            results["runs"][name] = train(name.split(":")[0].replace(" ", "_") + str(len(results["runs"])), args, tmp)
            print(json.dumps(results["runs"][name]), file=sys.stderr, flush=True)
    with open(a.out + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(a.out + ".tmp", a.out)
    print("| run | steps | seconds | input | AP | AP50 | AP75 |\n| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results["before"].items():
        print(f"| before: {name} | 0 | - | {name.split(' at ')[1].split(' ')[0]} px | {r['AP']:.3f} | {r['AP50']:.3f} | {r['AP75']:.3f} |")
    for name, r in results["runs"].items():
        print(f"| {name} | {r['steps']} | {r['seconds']:.0f} | {r['size']} px | {r['AP']:.3f} | {r['AP50']:.3f} | {r['AP75']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
