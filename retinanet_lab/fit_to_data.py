"""Fitting a detector to a small dataset of one's own: its input size and its anchor sizes.

    size = input_size_for(dataset)                                  # the images' typical short side, a multiple of 32
    anchors, why = anchors_for(dataset, model.anchor_config, size)  # scaled when the current ones miss the objects
    set_input_size(model, size)
    set_anchors(model, anchors)

A model trained on one world (the classroom model: 160 px shapes, anchors of 16 to 256 px) meets another: photos of
400 px with objects of 15 to 60 px. Shrunk to 160 px those objects become a few pixels, and anchors sized for other
objects cover few of them at IoU 0.5 (lesson 03: such objects get only low-quality matches). This is what
`retinanet-lab train` does by default on a COCO or VOC folder, and prints. The anchors keep their number per
location (scales and ratios), so the trained subnets keep their shape; only the base sizes are scaled.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

from .anchors import AnchorConfig
from .coverage import network_boxes, object_best_ious

__all__ = ["input_size_for", "anchors_for", "set_input_size", "set_anchors", "ANCHOR_FACTORS"]

ANCHOR_FACTORS = tuple(2 ** (k / 4) for k in range(-8, 9))  # quarter octaves from 1/4 to 4


def _image_sizes(dataset, max_images: int):
    n = min(len(dataset), max_images)
    for i in range(n):
        info = dataset.images[i] if hasattr(dataset, "images") and hasattr(dataset, "annotation") else None
        if info and info.get("height") and info.get("width"):
            yield info["height"], info["width"]
        else:
            h, w = dataset[i][0].shape[-2:]
            yield int(h), int(w)


def input_size_for(dataset, lo: int = 128, hi: int = 640, max_images: int = 200) -> int:
    """The median short side of the dataset's images, rounded to a multiple of 32 and kept within [lo, hi]:
    objects are seen at about their own size, and a CPU still trains at a few steps per second."""
    sides = [min(h, w) for h, w in _image_sizes(dataset, max_images)]
    if not sides:
        raise ValueError("the dataset has no images")
    return int(min(hi, max(lo, 32 * round(statistics.median(sides) / 32))))


def set_input_size(model, size: int) -> None:
    """Resize every image so that its short side is `size` (long side at most 5/3 of it, as 800 / 1333): the model's
    input config (model.cfg.input) is replaced, and its checkpoints record it."""
    model.min_size, model.max_size = int(size), int(math.ceil(size * 5 / 3))


def coverage_of(items, config: AnchorConfig, fg_iou: float = 0.5) -> float:
    best = object_best_ious(items, config)
    return float((best >= fg_iou).float().mean()) if len(best) else 1.0


def anchors_for(dataset, anchors: AnchorConfig, size: int, enough: float = 0.9, max_images: int = 300,
                fg_iou: float = 0.5) -> tuple[AnchorConfig, str]:
    """The anchors to train with at input size `size`, and one line saying why.

    Kept when they already cover `enough` of the objects at IoU >= fg_iou; otherwise the base sizes are scaled by
    the factor (quarter octaves from 1/4 to 4) that covers the most objects, if that gains at least 5 points.
    """
    items = network_boxes(dataset, size, int(math.ceil(size * 5 / 3)), 32, max_images)
    if not items:
        return anchors, "anchors: the dataset has no boxes to measure them on; kept"
    now = coverage_of(items, anchors, fg_iou)
    sizes = ", ".join(f"{s:g}" for s in anchors.sizes)
    if now >= enough:
        return anchors, f"anchors: sizes ({sizes}) give {now:.0%} of the objects an anchor at IoU >= {fg_iou}: kept"
    tried = [(coverage_of(items, replace(anchors, sizes=tuple(s * f for s in anchors.sizes)), fg_iou), f)
             for f in ANCHOR_FACTORS]
    best, factor = max(tried, key=lambda t: (t[0], -abs(math.log(t[1]))))
    if best < now + 0.05:
        return anchors, (f"anchors: sizes ({sizes}) cover {now:.0%} of the objects at IoU >= {fg_iou}; no scaling does "
                         f"clearly better ({best:.0%}): kept (see `retinanet-lab anchors` for other shapes)")
    chosen = replace(anchors, sizes=tuple(round(s * factor, 1) for s in anchors.sizes))
    return chosen, (f"anchors: sizes ({sizes}) cover only {now:.0%} of the objects at IoU >= {fg_iou} at {size} px; "
                    f"sizes x {factor:.2f} = ({', '.join(f'{s:g}' for s in chosen.sizes)}) cover {best:.0%}: using them")


def set_anchors(model, anchors: AnchorConfig) -> None:
    """Give `model` other anchors with the same number per location on as many levels (the subnets' outputs keep
    their shape); its config, and so its checkpoints, record them. A ValueError says when they do not fit."""
    model.anchor_config = anchors
