"""retinanet_lab: RetinaNet and the focal loss (Lin et al., ICCV 2017), one small module per idea.

    focal_loss.py   FL(p_t) = -α_t (1 - p_t)^γ log(p_t)            (section 3)
    boxes.py        IoU, (dx, dy, dw, dh) box coding                  (section 4)
    anchors.py      9 anchors per location on P3-P7                    (section 4, Anchors)
    matching.py     IoU >= 0.5 foreground, < 0.4 background            (section 4, Anchors)
    backbone.py     ResNet C3-C5
    fpn.py          the feature pyramid P3-P7                          (section 4, FPN)
    heads.py        classification and box subnets, the prior bias     (section 4, 4.1)
    loss.py         focal + box loss, normalised by foreground anchors (section 4.1)
    postprocess.py  top-k, decode, NMS                                 (section 4.1, Inference)
    transform.py    resize, normalise, pad
    model.py        RetinaNet, tying it together
    classroom.py    load_classroom_model(): the shipped model of the `classroom` preset, offline
    exercises/      the lessons' exercise checks, which name the mistake
    lessons/        the lessons' sources; `retinanet-lab lessons DIR` writes a student (or teacher) edition
    widgets/        the classroom's interactive explorers (ipywidgets)
"""

import importlib
import sys
import types
from typing import TYPE_CHECKING

# What `from retinanet_lab import X` gives, and where X lives. Loaded on first use (PEP 562), so that
# `import retinanet_lab.cli` and `retinanet-lab --help` do not load PyTorch.
_EXPORTS = {
    "AnchorConfig": "anchors", "cell_anchors": "anchors", "grid_anchors": "anchors", "make_anchors": "anchors",
    "batched_box_iou": "boxes", "box_iou": "boxes", "clip_boxes": "boxes", "decode_boxes": "boxes", "encode_boxes": "boxes",
    "load_classroom_model": "classroom",
    "alpha_t": "focal_loss", "cross_entropy": "focal_loss", "focal_loss": "focal_loss", "focal_loss_grad": "focal_loss",
    "modulating_factor": "focal_loss", "p_t": "focal_loss", "focal_loss_terms": "focal_loss", "focal_loss_from_terms": "focal_loss",
    "prior_bias": "heads",
    "retinanet_loss": "loss",
    "BACKGROUND": "matching", "IGNORE": "matching", "match_anchors": "matching",
    "RetinaNet": "model",
    "postprocess_detections": "postprocess",
}

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports on demand
    from .anchors import AnchorConfig, cell_anchors, grid_anchors, make_anchors
    from .boxes import batched_box_iou, box_iou, clip_boxes, decode_boxes, encode_boxes
    from .classroom import load_classroom_model
    from .focal_loss import (
        alpha_t,
        cross_entropy,
        focal_loss,
        focal_loss_from_terms,
        focal_loss_grad,
        focal_loss_terms,
        modulating_factor,
        p_t,
    )
    from .heads import prior_bias
    from .loss import retinanet_loss
    from .matching import BACKGROUND, IGNORE, match_anchors
    from .model import RetinaNet
    from .postprocess import postprocess_detections


def __getattr__(name: str):
    if name not in _EXPORTS:  # a submodule, as `import retinanet_lab; retinanet_lab.model` found them before
        if not name.startswith("_"):
            try:
                return importlib.import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as e:
                if e.name != f"{__name__}.{name}":
                    raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """This package's module: importing a submodule sets it as an attribute of the package, and for
    `focal_loss` (a module and a function) that would hide the function. The function wins, as it did
    when this file imported everything at once."""

    def __setattr__(self, name, value):
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__version__ = "0.1.0"

__all__ = [
    "AnchorConfig", "BACKGROUND", "IGNORE", "RetinaNet", "alpha_t", "batched_box_iou", "box_iou", "cell_anchors",
    "clip_boxes", "cross_entropy", "decode_boxes", "encode_boxes", "focal_loss", "focal_loss_from_terms",
    "focal_loss_grad", "focal_loss_terms", "grid_anchors", "load_classroom_model", "make_anchors", "match_anchors",
    "modulating_factor", "p_t", "postprocess_detections", "prior_bias", "retinanet_loss",
]
