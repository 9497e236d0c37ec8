"""The classroom model: the `classroom` preset trained on the shapes world, shipped inside the package
(retinanet_lab/assets/, with the precomputed ablations the lessons plot) so that the lessons and
`retinanet-lab demo` work offline on any laptop, from a clone or from a plain `pip install`.

    model = load_classroom_model()          # ready for eval, on the CPU
    info = classroom_model_info()           # how it was trained: command, time, AP on fresh images

Regenerate it (from scratch, about 5 minutes on a 2-core CPU):

    retinanet-lab train --preset classroom --out runs/classroom && \
        python assets/make_classroom_model.py runs/classroom/checkpoint.pt
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["assets_dir", "load_classroom_model", "classroom_model_info", "CLASSROOM_CHECKPOINT"]

CLASSROOM_CHECKPOINT = "classroom_model.pt"


def assets_dir() -> Path:
    """The folder of the files the package needs at run time: $RETINANET_LAB_ASSETS, else retinanet_lab/assets/."""
    env = os.environ.get("RETINANET_LAB_ASSETS")
    return Path(env) if env else Path(__file__).resolve().parent / "assets"


def _path(name: str) -> Path:
    path = assets_dir() / name
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found. The classroom files ship inside the package (retinanet_lab/assets/): reinstall it "
            f"(`pip install -e .` from a clone), or point RETINANET_LAB_ASSETS at a folder that has {name}.")
    return path


def load_classroom_model(device="cpu"):
    """The shipped classroom RetinaNet (5 shapes classes, 160 px input), in eval mode."""
    from .checkpoint import load_model

    return load_model(str(_path(CLASSROOM_CHECKPOINT)), map_location=device).to(device).eval()


def classroom_model_info() -> dict:
    """The training record written next to the checkpoint: command, seconds, steps, AP on fresh images."""
    with open(_path("classroom_model.json")) as f:
        return json.load(f)
