"""Do the anchors fit the objects? The question keras-retinanet users most often had to answer by hand.

`anchor_coverage(dataset, anchors, min_size, max_size)` resizes each image's boxes as the model would,
places the anchors, and records for every object its best IoU with any anchor. An object whose best
IoU is below the foreground threshold (0.5) never gets a positive anchor except through the
low-quality rule: the detector will learn it poorly. The report gives the share covered overall, by
object size and aspect ratio, the histogram of best IoU, and, when coverage is poor, the best of a few
alternative anchor configurations tried on the same objects.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from .anchors import AnchorConfig, feature_sizes, make_anchors
from .boxes import box_iou
from .transform import padded_size, resized_size

__all__ = ["network_boxes", "object_best_ious", "anchor_coverage", "format_coverage"]

SIZE_BINS = ((0, 32, "small (<32 px)"), (32, 96, "medium (32-96 px)"), (96, math.inf, "large (>96 px)"))
RATIO_BINS = ((0, 1 / 3, "wide (h/w < 1/3)"), (1 / 3, 3, "1/3 <= h/w <= 3"), (3, math.inf, "tall (h/w > 3)"))


def network_boxes(dataset, min_size: int, max_size: int, size_divisible: int, max_images: int | None):
    """Each image's boxes in network-input pixels, with the padded input size."""
    out = []
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    for i in range(n):
        if hasattr(dataset, "annotation") and hasattr(dataset, "images"):  # COCO: sizes without decoding
            info = dataset.images[i]
            h, w = info.get("height"), info.get("width")
            boxes = dataset.annotation(i)["boxes"]
            if not (h and w):
                image, target = dataset[i]
                (h, w), boxes = image.shape[-2:], target["boxes"]
        else:
            image, target = dataset[i]
            (h, w), boxes = image.shape[-2:], target["boxes"]
        if len(boxes) == 0:
            continue
        nh, nw = resized_size(h, w, min_size, max_size)  # as the model resizes and pads it
        out.append((boxes.float() * torch.tensor([nw / w, nh / h, nw / w, nh / h]), padded_size([(nh, nw)], size_divisible)))
    return out


def object_best_ious(items, config: AnchorConfig) -> torch.Tensor:
    """Best IoU with any anchor for every object of `items` ([(boxes, padded size)]), (N,)."""
    cache, best = {}, []
    for boxes, size in items:
        if size not in cache:
            cache[size] = torch.cat(make_anchors(config, size, feature_sizes(size, config.levels)))
        best.append(box_iou(boxes, cache[size]).max(dim=1).values)
    return torch.cat(best) if best else torch.zeros(0)


def _candidates(config: AnchorConfig, boxes: torch.Tensor) -> dict[str, AnchorConfig]:
    wh = boxes[:, 2:] - boxes[:, :2]
    ratios = (wh[:, 1] / wh[:, 0]).clamp(1e-3, 1e3)
    lo, hi = float(ratios.quantile(0.05)), float(ratios.quantile(0.95))
    sizes = tuple(s / 2 for s in config.sizes)
    return {
        "sizes halved": replace(config, sizes=sizes),
        "more aspect ratios": replace(config, aspect_ratios=tuple(sorted({*config.aspect_ratios, round(lo, 2), round(hi, 2)}))),
        "4 scales per octave": replace(config, scales=tuple(2 ** (k / 4) for k in range(4))),
        "sizes halved + more ratios": replace(config, sizes=sizes,
                                              aspect_ratios=tuple(sorted({*config.aspect_ratios, round(lo, 2), round(hi, 2)}))),
    }


def anchor_coverage(dataset, anchors: AnchorConfig | None = None, min_size: int = 800, max_size: int = 1333,
                    size_divisible: int = 32, fg_iou: float = 0.5, max_images: int | None = 500, suggest: bool = True) -> dict:
    """Coverage of `dataset`'s objects by the anchors (see the module docstring)."""
    config = anchors or AnchorConfig()
    items = network_boxes(dataset, min_size, max_size, size_divisible, max_images)
    if not items:
        raise ValueError("the dataset has no boxes to cover")
    boxes = torch.cat([b for b, _ in items])
    best = object_best_ious(items, config)
    wh = boxes[:, 2:] - boxes[:, :2]
    side, ratio = (wh[:, 0] * wh[:, 1]).sqrt(), wh[:, 1] / wh[:, 0]
    covered = best >= fg_iou

    def by(bins, values):
        rows = []
        for lo, hi, name in bins:
            sel = (values >= lo) & (values < hi)
            rows.append({"bin": name, "objects": int(sel.sum()),
                         "covered": float(covered[sel].float().mean()) if sel.any() else math.nan})
        return rows

    report = {
        "objects": int(len(best)), "coverage": float(covered.float().mean()), "fg_iou": fg_iou,
        "by_size": by(SIZE_BINS, side), "by_aspect_ratio": by(RATIO_BINS, ratio),
        "best_iou_histogram": torch.histc(best, bins=10, min=0, max=1).long().tolist(), "best_iou": best,
        "config": config, "suggestions": [],
    }
    if suggest and report["coverage"] < 0.95:
        for name, cand in _candidates(config, boxes).items():
            cov = float((object_best_ious(items, cand) >= fg_iou).float().mean())
            report["suggestions"].append({"change": name, "coverage": cov, "config": cand})
        report["suggestions"].sort(key=lambda s: -s["coverage"])
    return report


def format_coverage(report: dict) -> str:
    lines = [f"{report['objects']} objects; {report['coverage']:.1%} have an anchor at IoU >= {report['fg_iou']}"]
    for key, title in (("by_size", "by size (in network-input pixels)"), ("by_aspect_ratio", "by aspect ratio")):
        lines.append(f"  {title}:")
        for row in report[key]:
            cov = "   -  " if math.isnan(row["covered"]) else f"{row['covered']:6.1%}"
            lines.append(f"    {row['bin']:22s} {row['objects']:6d} objects  {cov} covered")
    hist = report["best_iou_histogram"]
    top = max(hist) or 1
    lines.append("  best IoU of each object:")
    for k, count in enumerate(hist):
        lines.append(f"    {k / 10:.1f}-{(k + 1) / 10:.1f} {'#' * round(40 * count / top):40s} {count}")
    for s in report["suggestions"][:3]:
        c = s["config"]
        lines.append(f"  try {s['change']}: coverage {s['coverage']:.1%} with sizes={tuple(round(x, 1) for x in c.sizes)}, "
                     f"scales={tuple(round(x, 3) for x in c.scales)}, aspect_ratios={c.aspect_ratios}")
    return "\n".join(lines)
