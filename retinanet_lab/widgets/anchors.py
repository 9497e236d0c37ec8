"""The anchor explorer: which anchors become positive, ignored or negative for each object, and how
well a configuration of sizes, scales and ratios covers the objects (paper section 4, "Anchors").

    AnchorExplorer()               # a shapes image; move the sliders, or move/resize a box

Derived state: `assignment` (see `assign_anchors`), the anchors of the chosen location `location_anchors`.
"""

from __future__ import annotations

import math

import ipywidgets as W
import torch

from ..anchors import AnchorConfig, feature_sizes, make_anchors
from ..boxes import box_iou
from ..matching import BACKGROUND, IGNORE, match_anchors
from ..viz import class_colour
from ._view import WidgetView

__all__ = ["AnchorExplorer", "assign_anchors", "SCALE_CHOICES", "RATIO_CHOICES"]

SCALE_CHOICES = {"2^0, 2^1/3, 2^2/3 (paper)": (1.0, 2 ** (1 / 3), 2 ** (2 / 3)), "2^0 only": (1.0,),
                 "2^0, 2^1/2": (1.0, 2 ** 0.5)}
RATIO_CHOICES = {"1:2, 1:1, 2:1 (paper)": (0.5, 1.0, 2.0), "1:1 only": (1.0,),
                 "1:3, 1:2, 1:1, 2:1, 3:1": (1 / 3, 0.5, 1.0, 2.0, 3.0)}


def assign_anchors(image_size: tuple[int, int], boxes: torch.Tensor, config: AnchorConfig, fg_iou: float = 0.5,
                   bg_iou: float = 0.4, allow_low_quality: bool = True) -> dict:
    """Anchors of an image of `image_size` (h, w), matched to `boxes` (G, 4), counted.

    Returns "anchors" per level (H_l * W_l * A, 4), "matched" per level (index of the box, BACKGROUND = -1 or IGNORE = -2),
    "feature_sizes", counts "foreground", "ignored", "background", "negatives_per_positive", "positives_per_object"
    (G,), "best_iou" (G, L) each object's best anchor IoU on each level, "coverage" {level: share of objects with
    an anchor at IoU >= fg_iou there} and "covered" (share with such an anchor on any level).
    """
    sizes = feature_sizes(image_size, config.levels)  # (H_l, W_l) per level, as the model's feature maps
    anchors = make_anchors(config, tuple(image_size), sizes)
    all_anchors = torch.cat(anchors)
    boxes = boxes.reshape(-1, 4).float()
    m = match_anchors(all_anchors, boxes[None], torch.ones(1, len(boxes), dtype=torch.bool), fg_iou=fg_iou, bg_iou=bg_iou,
                      allow_low_quality=allow_low_quality)
    index = m.index[0]
    counts = [len(a) for a in anchors]
    fg, ig, bg = int((index >= 0).sum()), int((index == IGNORE).sum()), int((index == BACKGROUND).sum())
    best = torch.stack([box_iou(boxes, a).max(dim=1).values for a in anchors], dim=1) if len(boxes) else torch.zeros(0, len(anchors))
    covered = best >= fg_iou  # (G, L)
    levels = [f"P{lvl}" for lvl in config.levels]
    return {
        "anchors": anchors, "matched": list(index.split(counts)), "feature_sizes": sizes, "levels": levels,
        "foreground": fg, "ignored": ig, "background": bg, "negatives_per_positive": bg / max(fg, 1),
        "positives_per_object": torch.bincount(index[index >= 0], minlength=len(boxes)),
        "best_iou": best,
        "coverage": {lv: float(covered[:, i].float().mean()) if len(boxes) else math.nan for i, lv in enumerate(levels)},
        "covered": float(covered.any(dim=1).float().mean()) if len(boxes) else math.nan,
    }


class AnchorExplorer(WidgetView):
    """An image, its boxes and the anchors: choose the level, sizes, scales, ratios, IoU thresholds and a
    location; move or resize a box and watch which anchors it claims."""

    figsize = (10.0, 4.4)

    def __init__(self, image=None, boxes=None, labels=None, class_names=None, level: int = 4):
        super().__init__()
        if image is None:
            from ..data import ShapesDataset

            data = ShapesDataset(1, seed=7, image_size=256, difficulty=0.2, max_objects=4)
            image, target = data[0]
            boxes, labels, class_names = target["boxes"], target["labels"], data.class_names
        self.image_t = image
        self.boxes_t = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).clone()
        self.labels_t = torch.as_tensor(labels if labels is not None else torch.ones(len(self.boxes_t)), dtype=torch.int64)
        self.class_names = list(class_names) if class_names else None
        h, w = image.shape[-2:]
        # each box its own colour (two boxes of one class must not look like one): the palette in box order
        self.box_colours = [class_colour(i + 1) for i in range(len(self.boxes_t))]

        def s(width="320px"):  # labels as wide as their text: never cut off
            return {"style": {"description_width": "initial"}, "layout": W.Layout(width=width)}

        self.level = W.Dropdown(options=[(f"P{lv} (stride {2**lv})", lv) for lv in range(3, 8)], value=level,
                                description="pyramid level", **s())
        self.base_size = W.FloatLogSlider(32, base=2, min=3, max=6, step=0.5, description="P3 anchor size", **s())
        self.scales = W.Dropdown(options=list(SCALE_CHOICES), description="scales", **s())
        self.ratios = W.Dropdown(options=list(RATIO_CHOICES), description="ratios (h:w)", **s())
        self.fg_iou = W.FloatSlider(0.5, min=0.1, max=0.9, step=0.05, description="foreground IoU ≥", **s())
        self.bg_iou = W.FloatSlider(0.4, min=0.0, max=0.9, step=0.05, description="background IoU <", **s())
        self.x = W.IntSlider(w // 2, min=0, max=w - 1, description="location x", **s())
        self.y = W.IntSlider(h // 2, min=0, max=h - 1, description="location y", **s())
        names = self.class_names
        self.box = W.Dropdown(options=[(f"box {i + 1}" + (f" ({names[lab - 1]})" if names and 0 < lab <= len(names) else ""), i)
                                       for i, lab in enumerate(self.labels_t.tolist())], description="move box", **s())
        self.bx = W.IntSlider(0, min=0, max=w, description="box centre x", continuous_update=False, **s())
        self.by = W.IntSlider(0, min=0, max=h, description="box centre y", continuous_update=False, **s())
        self.bw = W.IntSlider(1, min=4, max=w, description="box width", continuous_update=False, **s())
        self.bh = W.IntSlider(1, min=4, max=h, description="box height", continuous_update=False, **s())
        self._syncing = False
        self._load_box()
        self.box.observe(lambda c: self._load_box(), names="value")
        for c in (self.bx, self.by, self.bw, self.bh):
            c.observe(lambda change: self._move_box(), names="value")
        for c in (self.x, self.y):
            c.continuous_update = False
        self.observe(self.level, self.base_size, self.scales, self.ratios, self.fg_iou, self.bg_iou, self.x, self.y)
        self.ui = self._box(self._row(W.VBox([self.level, self.base_size, self.scales, self.ratios]),
                                      W.VBox([self.fg_iou, self.bg_iou, self.x, self.y]),
                                      W.VBox([self.box, self.bx, self.by, self.bw, self.bh]), align_items="flex-start"))
        self.refresh()

    @property
    def config(self) -> AnchorConfig:
        base = self.base_size.value
        return AnchorConfig(sizes=tuple(base * 2**i for i in range(5)), scales=SCALE_CHOICES[self.scales.value],
                            aspect_ratios=RATIO_CHOICES[self.ratios.value])

    def _load_box(self) -> None:
        if not len(self.boxes_t):
            return
        x1, y1, x2, y2 = self.boxes_t[self.box.value].tolist()
        self._syncing = True
        self.bx.value, self.by.value = round((x1 + x2) / 2), round((y1 + y2) / 2)
        self.bw.value, self.bh.value = max(4, round(x2 - x1)), max(4, round(y2 - y1))
        self._syncing = False

    def _move_box(self) -> None:
        if self._syncing or not len(self.boxes_t):
            return
        h, w = self.image_t.shape[-2:]
        cx, cy, bw, bh = self.bx.value, self.by.value, self.bw.value, self.bh.value
        box = torch.tensor([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
        box[0::2], box[1::2] = box[0::2].clamp(0, w), box[1::2].clamp(0, h)
        if box[2] - box[0] >= 1 and box[3] - box[1] >= 1:
            self.boxes_t[self.box.value] = box
        self.refresh()

    def update(self) -> None:
        h, w = self.image_t.shape[-2:]
        bg = min(self.bg_iou.value, self.fg_iou.value)  # a background threshold above the foreground one means it
        self.assignment = a = assign_anchors((h, w), self.boxes_t, self.config, self.fg_iou.value, bg)
        li = self.level.value - 3
        stride = 2 ** self.level.value
        fh, fw = a["feature_sizes"][li]
        gx, gy = min(self.x.value // stride, fw - 1), min(self.y.value // stride, fh - 1)
        per = self.config.num_anchors
        start = (gy * fw + gx) * per
        self.location_anchors = a["anchors"][li][start:start + per]
        self.location_matched = a["matched"][li][start:start + per]
        cov = ", ".join(f"{lv} {v:.0%}" for lv, v in a["coverage"].items())
        self.status.value = (f"{sum(len(x) for x in a['anchors']):,} anchors: <b>{a['foreground']}</b> positive, {a['ignored']} ignored, "
                             f"{a['background']:,} negative (<b>{a['negatives_per_positive']:,.0f} negatives per positive</b>). "
                             f"Positives per box: {a['positives_per_object'].tolist()}. "
                             f"Objects with an anchor at IoU ≥ {self.fg_iou.value:g}: {a['covered']:.0%} (by level: {cov}).")

    def draw(self, fig) -> None:
        from matplotlib.patches import Rectangle

        a, li = self.assignment, self.level.value - 3
        ax = fig.add_subplot(1, 2, 1)
        ax.imshow(self.image_t.permute(1, 2, 0).clamp(0, 1).numpy())
        anchors, matched = a["anchors"][li], a["matched"][li]
        for box, m in zip(anchors[matched >= 0].tolist(), matched[matched >= 0].tolist()):
            ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ec=self.box_colours[m], lw=0.8, alpha=0.8))
        for box in anchors[matched == IGNORE].tolist():
            ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ec="orange", lw=0.5, ls=":", alpha=0.7))
        for box in self.location_anchors.tolist():
            ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ec="white", lw=1.0, ls="--"))
        ax.plot([self.x.value], [self.y.value], "w+", ms=10)
        for i, box in enumerate(self.boxes_t.tolist()):
            ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ec=self.box_colours[i], lw=2.5,
                                   gid=f"box {i + 1}"))
            top = box[1] < 16  # at the image's top edge the tag goes inside the box, clear of the title
            ax.text(box[0], box[1], f"box {i + 1}", fontsize=10, color="white", va="top" if top else "bottom",
                    bbox=dict(facecolor=self.box_colours[i], edgecolor="none", pad=1))
        ax.set_title(f"P{self.level.value}: positives (solid, box colour), ignored (dotted\norange), the "
                     f"{len(self.location_anchors)} anchors at the + (dashed white)", fontsize=10)
        ax.axis("off")
        ax.set_xlim(0, self.image_t.shape[-1])
        ax.set_ylim(self.image_t.shape[-2], 0)
        bx = fig.add_subplot(1, 2, 2)
        best = a["best_iou"]
        if len(best):
            width = 0.8 / len(best)
            for i in range(len(best)):
                bx.bar([j + i * width for j in range(len(a["levels"]))], best[i].tolist(), width, label=f"box {i + 1}",
                       color=self.box_colours[i], alpha=0.85)
            bx.set_xticks([j + 0.4 - width / 2 for j in range(len(a["levels"]))], a["levels"])
        bx.axhline(self.fg_iou.value, color="green", ls="--", lw=1, label="foreground")
        bx.axhline(min(self.bg_iou.value, self.fg_iou.value), color="red", ls=":", lw=1, label="background")
        bx.set_ylim(0, 1)
        bx.set_ylabel("best IoU of any anchor on the level")
        bx.set_title("each box's best anchor, per level", fontsize=10)
        bx.legend(fontsize=10, ncol=2)
        fig.subplots_adjust(left=0.02, right=0.98, top=0.86, bottom=0.08, wspace=0.15)  # tight_layout draws twice
