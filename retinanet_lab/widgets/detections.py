"""Live detections, and the way from logits to detections step by step (paper section 4, "Inference").

    DetectionExplorer(model)       # pick or upload an image; score threshold, NMS IoU, per-level heat maps
    LogitsToDetections(model)      # threshold -> top-k per level -> decode -> NMS, each stage drawn

The network runs once per image (`forward_once`); the sliders only re-run the post-processing on its
stored outputs, so they respond at once. Derived state: `outputs`, `steps` (see
`retinanet_lab.postprocess.inference_steps`), `detections` (in the image's own pixels), `inference_ms`.
"""

from __future__ import annotations

import io
import time

import ipywidgets as W
import numpy as np
import torch

from ..postprocess import inference_steps
from ..transform import boxes_to_original
from ._view import WidgetView

__all__ = ["DetectionExplorer", "LogitsToDetections", "forward_once", "sample_images"]


@torch.no_grad()
def forward_once(model, image: torch.Tensor) -> dict:
    """The model's raw outputs for one (3, H, W) image, per level, flattened as post-processing reads them:
    "cls_logits" [(A_l, K)], "box_deltas" [(A_l, 4)], "anchors" [(A_l, 4)] in network-input pixels,
    "feature_sizes", "input_size" (the resized image's (h, w)), "original_size", "inference_ms" (this forward pass)."""
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    r = model.inspect([image])
    ms = (time.perf_counter() - t0) * 1000
    model.train(was_training)
    return {"cls_logits": [c[0].reshape(-1, c.shape[-1]) for c in r["cls_logits"]],
            "box_deltas": [d[0].reshape(-1, 4) for d in r["box_deltas"]],
            "anchors": [a.reshape(-1, 4) for a in r["anchors"]], "feature_sizes": r["feature_sizes"],
            "num_anchors": r["anchors"][0].shape[2], "input_size": tuple(r["image_sizes"][0]),
            "original_size": tuple(image.shape[-2:]), "inference_ms": ms}


def sample_images(n: int = 6, seed: int = 5_000_000, **data_kwargs) -> dict[str, torch.Tensor]:
    """Fresh classroom shapes images (seeds far from the training seeds), by name."""
    from ..data import ShapesDataset
    from ..presets import preset

    kw = {**preset("classroom")["data"], **data_kwargs}
    data = ShapesDataset(n, seed=seed, **kw)
    return {f"shapes #{i} (seed {seed})": data[i][0] for i in range(n)}


def _to_tensor(data: bytes) -> torch.Tensor:
    from PIL import Image

    from ..data import to_tensor

    return to_tensor(Image.open(io.BytesIO(data)).convert("RGB"))


class _ModelImages(WidgetView):
    """Shared by both explorers: a model, a choice of images (plus uploads), outputs computed once per image."""

    def __init__(self, model=None, images: dict | None = None):
        super().__init__()
        if model is None:
            from ..classroom import load_classroom_model

            model = load_classroom_model()
        self.model = model.eval()
        self.images = dict(images) if images is not None else sample_images()
        forward_once(self.model, next(iter(self.images.values())))  # warm-up: the first pass of a process pays one-time costs
        s = {"style": {"description_width": "110px"}, "layout": W.Layout(width="330px")}
        self.choice = W.Dropdown(options=list(self.images), description="image", **s)
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload an image")
        self.score_thresh = W.FloatSlider(0.3, min=0.05, max=0.95, step=0.05, description="score threshold", **s)
        self.nms_thresh = W.FloatSlider(0.5, min=0.1, max=0.9, step=0.05, description="NMS IoU", **s)
        self._cache: dict[str, dict] = {}
        self.upload.observe(lambda change: self._uploaded(), names="value")

    def _uploaded(self) -> None:
        try:
            for f in self.upload.value:
                self.add_image(f["name"], _to_tensor(bytes(f["content"])))
        except Exception as e:
            self.errors.append_stderr(f"could not read the uploaded file: {e}\n")

    def add_image(self, name: str, image: torch.Tensor) -> None:
        """Add an image (3, H, W) in [0, 1] and show it."""
        self.images[name] = image
        self.choice.options = list(self.images)
        self.choice.value = name

    @property
    def image(self) -> torch.Tensor:
        return self.images[self.choice.value]

    @property
    def outputs(self) -> dict:
        if self.choice.value not in self._cache:
            self._cache[self.choice.value] = forward_once(self.model, self.image)
        return self._cache[self.choice.value]

    def _steps(self, topk: int | None = None) -> dict:
        o = self.outputs
        return inference_steps(o["cls_logits"], o["box_deltas"], o["anchors"], o["input_size"], self.score_thresh.value,
                               topk or self.model.topk_candidates, self.nms_thresh.value, self.model.detections_per_img,
                               self.model.box_weights)

    def _original(self, boxes: torch.Tensor) -> torch.Tensor:
        return boxes_to_original(boxes, self.outputs["input_size"], self.outputs["original_size"])


class DetectionExplorer(_ModelImages):
    """Boxes, scores and the per-level classification heat maps of a trained model on any image."""

    figsize = (11.0, 4.2)

    def __init__(self, model=None, images: dict | None = None):
        super().__init__(model, images)
        self.heatmaps = W.Checkbox(True, description="per-level heat maps", indent=False)
        for c in (self.score_thresh, self.nms_thresh):
            c.continuous_update = False
        self.observe(self.choice, self.score_thresh, self.nms_thresh, self.heatmaps)
        self.ui = self._box(W.HBox([W.VBox([self.choice, self.upload]), W.VBox([self.score_thresh, self.nms_thresh]),
                                    self.heatmaps]))
        self.refresh()

    def update(self) -> None:
        self.steps = self._steps()
        det = self.steps["detections"]
        self.detections = {"boxes": self._original(det["boxes"]), "scores": det["scores"], "labels": det["labels"]}
        names = self.model.class_names
        found = ", ".join(f"{names[int(lab) - 1]} {float(s):.2f}" for s, lab in zip(det["scores"][:8], det["labels"][:8]))
        more = f" and {len(det['scores']) - 8} more" if len(det["scores"]) > 8 else ""
        device = next(self.model.parameters()).device.type.upper()
        self.status.value = (f"{len(det['scores'])} detection(s) above {self.score_thresh.value:.2f}: {found or 'none'}{more}. "
                             f"The network's forward pass on this image took {self.outputs['inference_ms']:.0f} ms on the {device} "
                             f"(the sliders only re-run the post-processing).")

    def level_heatmaps(self) -> list[np.ndarray]:
        """Per level, the highest class probability of any anchor at each location, (H_l, W_l)."""
        o = self.outputs
        return [torch.sigmoid(c).reshape(h, w, o["num_anchors"], -1).amax(dim=(2, 3)).numpy()
                for c, (h, w) in zip(o["cls_logits"], o["feature_sizes"])]

    def draw(self, fig) -> None:
        from ..viz import draw_boxes

        maps = self.level_heatmaps() if self.heatmaps.value else []
        cols = (len(maps) + 1) // 2
        grid = fig.add_gridspec(2, 1 + cols, width_ratios=[2.4] + [1] * cols) if maps else fig.add_gridspec(1, 1)
        ax = fig.add_subplot(grid[:, 0])
        d = self.detections
        draw_boxes(ax, self.image, d["boxes"], d["labels"], d["scores"], self.model.class_names,
                   title=f"{len(d['scores'])} detections (score > {self.score_thresh.value:.2f}, NMS {self.nms_thresh.value:.2f})")
        for i, m in enumerate(maps):
            hx = fig.add_subplot(grid[i % 2, 1 + i // 2])
            hx.imshow(m, vmin=0, vmax=1, cmap="magma")
            hx.set_title(f"P{3 + i}  {m.shape[0]}x{m.shape[1]}", fontsize=8)
            hx.axis("off")
        fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.03, wspace=0.1, hspace=0.2)  # tight_layout draws twice


STAGES = ("1. score threshold", "2. top-k per level", "3. decode boxes", "4. NMS")


class LogitsToDetections(_ModelImages):
    """The post-processing of section 4 on a trained model's real outputs, one stage at a time."""

    figsize = (10.0, 4.4)

    def __init__(self, model=None, images: dict | None = None, stage: str = STAGES[-1]):
        super().__init__(model, images)
        self.score_thresh.value = 0.05
        self.stage = W.ToggleButtons(options=STAGES, value=stage, style={"button_width": "150px"})
        self.topk = W.IntSlider(1000, min=1, max=1000, description="top-k per level", continuous_update=False,
                                style={"description_width": "110px"}, layout=W.Layout(width="330px"))
        for c in (self.score_thresh, self.nms_thresh):
            c.continuous_update = False
        self.observe(self.choice, self.stage, self.score_thresh, self.topk, self.nms_thresh)
        self.ui = self._box(self.stage, W.HBox([self.choice, self.score_thresh]), W.HBox([self.topk, self.nms_thresh]))
        self.refresh()

    def update(self) -> None:
        self.steps = s = self._steps(self.topk.value)
        lv = s["levels"]
        self.counts = {"outputs": sum(x["outputs"] for x in lv), "above_thresh": sum(x["above_thresh"] for x in lv),
                       "after_topk": sum(x["kept_topk"] for x in lv), "after_nms": len(s["kept"])}
        c = self.counts
        self.status.value = (f"{c['outputs']:,} (anchor, class) outputs → {c['above_thresh']:,} above "
                             f"{self.score_thresh.value:.2f} → {c['after_topk']:,} after top-{self.topk.value} per level → "
                             f"<b>{c['after_nms']}</b> after NMS at IoU {self.nms_thresh.value:.2f}")

    def draw(self, fig) -> None:
        from matplotlib.patches import Rectangle

        from ..viz import class_colour, draw_boxes

        s, stage = self.steps, STAGES.index(self.stage.value)
        cand = s["candidates"]
        ax = fig.add_subplot(1, 2, 1)
        draw_boxes(ax, self.image)
        show = torch.argsort(cand["scores"], descending=True)[:60]  # the best 60 candidates, so the picture stays readable

        def rect(box, **kw):
            x1, y1, x2, y2 = self._original(box[None])[0].tolist()
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, **kw))

        if stage == 0:
            o = self.outputs
            h, w = o["feature_sizes"][0]
            p3 = torch.sigmoid(o["cls_logits"][0]).reshape(h, w, -1).amax(-1)
            H, W_ = self.image.shape[-2:]
            ax.imshow((p3 > self.score_thresh.value).float().numpy(), extent=(0, W_, H, 0), alpha=0.45, cmap="Reds")
            ax.set_title("P3 locations with a score above the threshold", fontsize=9)
        elif stage in (1, 2):
            for i in show.tolist():
                rect(cand["anchors"][i], ec=f"C{int(cand['level'][i])}", ls=":", lw=0.9)
                if stage == 2:
                    rect(cand["boxes"][i], ec=class_colour(int(cand["labels"][i])), lw=1.2)
            ax.set_title("candidate anchors (dotted, colour = level)" + (" and their decoded boxes (solid)" if stage == 2 else ""),
                         fontsize=9)
        else:
            kept = set(s["kept"].tolist())
            for i in show.tolist():
                if i not in kept:
                    rect(cand["boxes"][i], ec="grey", ls="--", lw=0.7)
            d = s["detections"]
            keep = d["scores"] >= max(self.score_thresh.value, 0.05)
            draw_boxes(ax, self.image, self._original(d["boxes"][keep]), d["labels"][keep], d["scores"][keep], self.model.class_names)
            ax.set_title("kept by NMS (solid) and suppressed (dashed grey)", fontsize=9)
        bx = fig.add_subplot(1, 2, 2)
        names = [f"P{3 + i}" for i in range(len(s["levels"]))]
        x = np.arange(len(names))
        bx.bar(x - 0.27, [v["outputs"] for v in s["levels"]], 0.27, label="outputs (anchors x classes)", color="lightgrey")
        bx.bar(x, [v["above_thresh"] for v in s["levels"]], 0.27, label=f"score > {self.score_thresh.value:.2f}", color="C1")
        bx.bar(x + 0.27, [v["kept_topk"] for v in s["levels"]], 0.27, label=f"top-{self.topk.value}", color="C2")
        nms_levels = torch.bincount(cand["level"][s["kept"]], minlength=len(names)).tolist() if len(s["kept"]) else [0] * len(names)
        bx.plot(x, [max(v, 0.8) for v in nms_levels], "k*", ms=9, label="after NMS")
        bx.set_yscale("log")
        bx.set_xticks(x, names)
        bx.set_title("how many survive each stage, per level", fontsize=9)
        bx.legend(fontsize=7)
        fig.subplots_adjust(left=0.02, right=0.98, top=0.9, bottom=0.08, wspace=0.15)  # tight_layout draws twice
