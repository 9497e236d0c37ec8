"""Pictures of images, boxes, class names and scores (matplotlib)."""

from __future__ import annotations

import math

import torch

__all__ = ["draw_boxes", "show_sample_grid", "class_colour"]

_PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4",
            "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000", "#ffd8b1", "#000075"]


def class_colour(label: int) -> str:
    return _PALETTE[(int(label) - 1) % len(_PALETTE)]


def _as_hwc(image):
    if torch.is_tensor(image):
        image = image.detach().cpu()
        if image.dim() == 3 and image.shape[0] in (1, 3):
            image = image.permute(1, 2, 0)
        return image.clamp(0, 1).numpy()
    return image


def draw_boxes(ax, image, boxes=None, labels=None, scores=None, class_names=None, score_thresh: float = 0.0,
               linestyle: str = "-", title: str | None = None, fontsize: int = 7):
    """Show `image` on `ax` with boxes (N, 4) xyxy, coloured by label, captioned with name and score."""
    from matplotlib.patches import Rectangle

    ax.imshow(_as_hwc(image))
    if boxes is not None and len(boxes):
        boxes = torch.as_tensor(boxes).detach().cpu()
        labels = torch.as_tensor(labels).cpu() if labels is not None else torch.ones(len(boxes), dtype=torch.int64)
        scores_t = torch.as_tensor(scores).detach().cpu() if scores is not None else None
        for i, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist())):
            if scores_t is not None and scores_t[i] < score_thresh:
                continue
            colour = class_colour(label)
            x1, y1, x2, y2 = box
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=colour, lw=1.5, ls=linestyle))
            name = class_names[label - 1] if class_names is not None and 0 < label <= len(class_names) else str(label)
            text = name if scores_t is None else f"{name} {float(scores_t[i]):.2f}"
            ax.text(x1, y1, text, fontsize=fontsize, color="white", va="bottom",
                    bbox=dict(facecolor=colour, edgecolor="none", pad=1, alpha=0.8))
    if title:
        ax.set_title(title, fontsize=fontsize + 2)
    ax.axis("off")
    return ax


def show_sample_grid(dataset, n: int = 8, cols: int = 4, indices=None, title: str | None = None, size: float = 3.0):
    """A figure with n samples of a dataset and their ground-truth boxes and class names."""
    import matplotlib.pyplot as plt

    indices = list(indices) if indices is not None else list(range(min(n, len(dataset))))
    rows = max(1, math.ceil(len(indices) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    names = getattr(dataset, "class_names", None)
    for ax, index in zip(axes.flat, indices):
        image, target = dataset[index]
        draw_boxes(ax, image, target["boxes"], target["labels"], class_names=names, title=f"#{index}")
        for box in target.get("crowd_boxes", torch.zeros(0, 4)).tolist():  # crowd/difficult: dashed grey
            from matplotlib.patches import Rectangle
            ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ec="grey", lw=1, ls="--"))
    for ax in list(axes.flat)[len(indices):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
