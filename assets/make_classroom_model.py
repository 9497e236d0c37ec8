"""Train the classroom model from scratch and ship it: retinanet_lab/assets/classroom_model.pt and classroom_model.json.

    python assets/make_classroom_model.py            # about 5 minutes on a 2-core CPU

It runs exactly `retinanet-lab train --preset classroom --out runs/classroom` (the preset's 2880 shapes
images x 8 epochs), times the whole command, keeps only the model and its config (no optimiser state),
and scores it with COCO mAP on 500 fresh images (seed 1,000,000, `seeds.VALIDATION`, never used in training). The
tests evaluate the shipped model again on other fresh seeds (`seeds.TEST`).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from retinanet_lab import seeds
from retinanet_lab.cli import main as cli_main
from retinanet_lab.data import ShapesDataset
from retinanet_lab.evaluate import evaluate
from retinanet_lab.presets import preset
from retinanet_lab.train import load_checkpoint, load_model

HERE = Path(__file__).resolve().parent.parent / "retinanet_lab" / "assets"  # shipped inside the package
COMMAND = ["train", "--preset", "classroom", "--out", "runs/classroom"]


def main() -> int:
    run = Path("runs/classroom")
    if (run / "checkpoint.pt").exists():
        (run / "checkpoint.pt").unlink()  # from scratch, never a resumed run
    if (run / "metrics.jsonl").exists():
        (run / "metrics.jsonl").unlink()
    t0 = time.perf_counter()
    cli_main(COMMAND)
    seconds = time.perf_counter() - t0
    ckpt = load_checkpoint(str(run / "checkpoint.pt"))
    tmp = HERE / ".classroom_model.pt.tmp"
    torch.save({"config": ckpt["config"], "model": ckpt["model"]}, tmp)
    os.replace(tmp, HERE / "classroom_model.pt")
    model = load_model(str(HERE / "classroom_model.pt"))
    cfg = preset("classroom")
    r = evaluate(model, ShapesDataset(500, seed=seeds.VALIDATION, **cfg["data"]), progress=False)
    info = {
        "checkpoint": "classroom_model.pt", "command": "retinanet-lab " + " ".join(COMMAND),
        "regenerate": "python assets/make_classroom_model.py", "backbone": ckpt["config"]["backbone"],
        "parameters": sum(v.numel() for k, v in ckpt["model"].items() if "running" not in k and "num_batches" not in k),
        "train_images": cfg["run"]["num_images"], "epochs": cfg["run"]["epochs"], "steps": ckpt["state"]["step"],
        "train_seconds": round(seconds, 1), "machine": f"{os.cpu_count()}-core {platform.machine()} CPU",
        "torch": torch.__version__, "date": datetime.date.today().isoformat(),
        "eval": {"images": 500, "seed": seeds.VALIDATION,
                 **{k: round(r[k], 4) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")},
                 "per_class_AP": {k: round(v, 4) for k, v in r["per_class_AP"].items()}},
    }
    with open(HERE / "classroom_model.json", "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
