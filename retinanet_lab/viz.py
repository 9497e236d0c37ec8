"""Pictures of images, boxes, class names and scores (matplotlib)."""

from __future__ import annotations

import math

import torch

__all__ = ["draw_boxes", "show_sample_grid", "class_colour", "error_gallery", "classroom_style"]

_PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4",
            "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000", "#ffd8b1", "#000075"]


def classroom_style() -> None:
    """Figures for a classroom: text a back row can read (11 pt), and, in Jupyter, drawn at twice the pixel density
    ("retina") so that they stay sharp when a projector scales them up."""
    import matplotlib as mpl

    mpl.rcParams.update({"font.size": 11, "axes.titlesize": 11, "axes.labelsize": 11, "legend.fontsize": 10,
                         "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.titlesize": 12})
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:
        return
    if get_ipython() is not None:
        set_matplotlib_formats("retina")


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


def error_gallery(dataset, errors: list[dict], class_names, title: str, n: int = 8, pad: int = 8, size: float = 1.7):
    """A row of crops around errors of `find_errors` (in the order given: smallest first), each with the box outlined
    in its class's colour (dashed: a missed object; solid: a false detection) and a caption: class, size, and the
    best-overlapping box of the other side (its class when it differs: a confusion), or "a duplicate" for a second
    detection of an object a better-scoring one already found."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    shown = errors[:n]
    fig, axes = plt.subplots(1, max(1, n), figsize=(size * n, size * 1.35), squeeze=False)
    axes = axes[0]
    for ax, e in zip(axes, shown):
        image = dataset[e["image"]][0]
        h, w = image.shape[-2:]
        x1, y1, x2, y2 = e["box"]
        cx1, cy1 = max(0, int(x1) - pad), max(0, int(y1) - pad)
        cx2, cy2 = min(w, int(math.ceil(x2)) + pad), min(h, int(math.ceil(y2)) + pad)
        ax.imshow(_as_hwc(image[:, cy1:cy2, cx1:cx2]), extent=(cx1, cx2, cy2, cy1))
        miss = "score" not in e
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=class_colour(e["label"]), lw=2,
                               ls="--" if miss else "-"))
        name = class_names[e["label"] - 1]
        other = e.get("other_label")
        if e.get("duplicate"):
            note = "a duplicate: already found"
        elif other is None or e["iou"] < 0.1:
            note = "nothing near" if miss else "no object near"
        elif other != e["label"]:
            note = f"{'detected as' if miss else 'is a'} {class_names[other - 1]}? IoU {e['iou']:.2f}"
        else:
            note = f"best IoU {e['iou']:.2f}"
        score = "" if miss else f" {e['score']:.2f}"
        ax.set_title(f"{name}{score}\n{e['size']} {int(round(e['area']))} px²\n{note}", fontsize=8, color=class_colour(e["label"]))
        ax.axis("off")
    for ax in axes[len(shown):]:
        ax.axis("off")
    if not shown:
        axes[0].text(0.5, 0.5, "none", ha="center", va="center", transform=axes[0].transAxes)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.72, bottom=0.02, wspace=0.15)
    return fig
