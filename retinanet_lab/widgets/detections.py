"""Live detections, and the way from logits to detections step by step (paper §4.1, "Inference").

    DetectionExplorer(model)       # pick or upload an image; score threshold, NMS IoU, per-level heat maps
    LogitsToDetections(model)      # threshold -> top-k per level -> decode -> NMS, each stage drawn

The network runs once per image (`forward_once`: the model's own forward pass, recorded); the sliders only re-run
the model's post-processing stages (`select`, `decode`, `nms` in postprocess.py) on its stored outputs, so they
respond at once. Derived state: `outputs`, `steps` (see
`retinanet_lab.postprocess.inference_steps`), `detections` (in the image's own pixels), `inference_ms`.

The paper's inference (§4.1): per level the top 1000 predictions with a score above 0.05, then NMS at 0.5 over the
merged levels. NMS per class and at most 100 detections per image are Detectron's practice (and torchvision's),
which this lab follows; the paper does not say either.
"""

from __future__ import annotations

import io
import time
import traceback
from dataclasses import replace

import ipywidgets as W
import numpy as np
import torch

from ..heads import class_heatmap
from ..postprocess import inference_steps
from ..transform import boxes_to_original
from ._view import WidgetView

__all__ = ["DetectionExplorer", "LogitsToDetections", "forward_once", "sample_images"]


@torch.no_grad()
def forward_once(model, image: torch.Tensor) -> dict:
    """The model's raw outputs for one (3, H, W) image, per level, flattened as post-processing reads them:
    "cls_logits" [(A_l, K)], "box_deltas" [(A_l, 4)], "anchors" [(A_l, 4)] in network-input pixels,
    "feature_sizes", "input_size" (the resized image's (h, w)), "original_size", "inference_ms" (this forward pass).
    They are read off the record of the model's own forward pass (`model([image], record=...)`), not recomputed."""
    was_training = model.training
    model.eval()
    record = {}
    t0 = time.perf_counter()
    model([image], record=record)
    ms = (time.perf_counter() - t0) * 1000
    model.train(was_training)
    heads = record["heads"]
    return {"cls_logits": [c[0] for c in heads["cls_logits"]], "box_deltas": [d[0] for d in heads["box_deltas"]],
            "anchors": record["anchors"], "feature_sizes": [tuple(f.shape[-2:]) for f in record["features"]],
            "num_anchors": model.anchor_config.num_anchors, "input_size": tuple(record["preprocess"]["image_sizes"][0]),
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


def not_an_image(name: str) -> str:
    """What a student reads when an upload is not a picture (not PIL's "cannot identify image file <_io.BytesIO ...>")."""
    return f"{name} is not an image this lab can read (PNG or JPEG): upload a .png or .jpg file."


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
        def s(width="330px"):  # labels as wide as their text: never cut off
            return {"style": {"description_width": "initial"}, "layout": W.Layout(width=width)}

        self.choice = W.Dropdown(options=list(self.images), description="image", **s("340px"))
        # no icon: Font Awesome is not there offline (the lab's Voilà pages load nothing from the internet)
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload an image", icon="",
                                   layout=W.Layout(width="auto"))
        self.upload_status = W.HTML()  # "x is not an image ..." in red; cleared by the next good upload
        self.score_thresh = W.FloatSlider(0.3, min=0.05, max=0.95, step=0.05, description="score threshold", **s())
        self.nms_thresh = W.FloatSlider(0.5, min=0.1, max=0.9, step=0.05, description="NMS IoU", **s())
        self._cache: dict[str, dict] = {}
        self.upload.observe(lambda change: self._uploaded(), names="value")

    def _uploaded(self) -> None:
        import html

        for f in self.upload.value:
            name = f.get("name", "the file")
            try:
                image = _to_tensor(bytes(f["content"]))
            except Exception:  # PIL.UnidentifiedImageError, a truncated file, ...
                self.upload_status.value = f"<span style='color:#b00020'>{html.escape(not_an_image(name))}</span>"
                continue
            self.upload_status.value = f"added {html.escape(name)} ({image.shape[-1]}x{image.shape[-2]})"
            try:
                self.add_image(name, image)
            except Exception:
                self.report(traceback.format_exc())

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
        """The model's own post-processing (select, decode, nms) on the stored outputs, at the sliders' settings."""
        o = self.outputs
        config = replace(self.model.cfg.inference, score_thresh=self.score_thresh.value, nms_thresh=self.nms_thresh.value,
                         topk_candidates=topk or self.model.topk_candidates)
        return inference_steps(o["cls_logits"], o["box_deltas"], o["anchors"], o["input_size"], config, self.model.box_weights)

    def _original(self, boxes: torch.Tensor) -> torch.Tensor:
        return boxes_to_original(boxes, self.outputs["input_size"], self.outputs["original_size"])


class DetectionExplorer(_ModelImages):
    """Boxes, scores and the per-level classification heat maps of a trained model on any image."""

    figsize = (10.0, 4.4)

    def __init__(self, model=None, images: dict | None = None):
        super().__init__(model, images)
        self.heatmaps = W.Checkbox(True, description="per-level heat maps", indent=False, layout=W.Layout(width="auto"))
        for c in (self.score_thresh, self.nms_thresh):
            c.continuous_update = False
        self.observe(self.choice, self.score_thresh, self.nms_thresh, self.heatmaps)
        self.ui = self._box(self._row(W.VBox([self.choice, self.upload]), W.VBox([self.score_thresh, self.nms_thresh]),
                                      self.heatmaps, align_items="flex-start"),
                            self.upload_status)  # its own line: a message never moves the controls
        self.refresh()

    def update(self) -> None:
        self.steps = self._steps()
        det = self.steps["detections"]
        self.detections = {"boxes": self._original(det["boxes"]), "scores": det["scores"], "labels": det["labels"]}
        cand, kept = self.steps["candidates"], self.steps["kept"]
        levels = len(self.outputs["feature_sizes"])
        self.per_level = torch.bincount(cand["level"][kept], minlength=levels).tolist() if len(kept) else [0] * levels
        names = self.model.class_names
        found = ", ".join(f"{names[int(lab) - 1]} {float(s):.2f}" for s, lab in zip(det["scores"][:8], det["labels"][:8]))
        more = f" and {len(det['scores']) - 8} more" if len(det["scores"]) > 8 else ""
        device = next(self.model.parameters()).device.type.upper()
        self.status.value = (f"{len(det['scores'])} detection(s) above {self.score_thresh.value:.2f}: {found or 'none'}{more}. "
                             f"The network's forward pass on this image took {self.outputs['inference_ms']:.0f} ms on the {device} "
                             f"(the sliders only re-run the post-processing).{self._too_large_note()}")

    def _too_large_note(self) -> str:
        """Levels whose every anchor is larger than the network's input: no object can reach IoU 0.5 with one, so the
        level never gets a positive in training (the classroom model's P7: anchors 256-406 px, images 160 px)."""
        o, notes = self.outputs, []
        h, w = o["input_size"]
        for i, a in enumerate(o["anchors"]):
            side = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])).sqrt()
            if len(side) and h * w / float(side.min()) ** 2 < 0.5:
                notes.append(f" P{3 + i}'s anchors ({int(side.min())}-{int(side.max())} px) are larger than the "
                             f"{max(h, w)} px input: no object reaches IoU 0.5 with one, so P{3 + i} gets no positive in "
                             f"training (large objects light up P5-P6).")
        return "".join(notes)

    def level_heatmaps(self) -> list[np.ndarray]:
        """Per level, the highest class probability of any anchor at each location, (H_l, W_l)."""
        o = self.outputs
        return [class_heatmap(c, h, w, o["num_anchors"]).amax(dim=0).numpy()
                for c, (h, w) in zip(o["cls_logits"], o["feature_sizes"])]

    def draw(self, fig) -> None:
        from ..viz import draw_boxes

        maps = self.level_heatmaps() if self.heatmaps.value else []
        cols = (len(maps) + 1) // 2
        # the image, the maps two per column, and a narrow column for the maps' shared colour bar
        grid = fig.add_gridspec(2, 2 + cols, width_ratios=[2.4] + [1] * cols + [0.08]) if maps else fig.add_gridspec(1, 1)
        ax = fig.add_subplot(grid[:, 0])
        d = self.detections
        draw_boxes(ax, self.image, d["boxes"], d["labels"], d["scores"], self.model.class_names, fontsize=10,
                   title=f"{len(d['scores'])} detections (score > {self.score_thresh.value:.2f},\nNMS IoU {self.nms_thresh.value:.2f})")
        heat = None
        for i, m in enumerate(maps):
            hx = fig.add_subplot(grid[i % 2, 1 + i // 2])
            heat = hx.imshow(m, vmin=0, vmax=1, cmap="magma")
            n = self.per_level[i]
            hx.set_title(f"P{3 + i} {m.shape[0]}x{m.shape[1]}: {n if n else 'no'} det.", fontsize=10)
            hx.axis("off")
        if heat is not None:
            bar = fig.colorbar(heat, cax=fig.add_subplot(grid[:, -1]))
            bar.set_label("highest class probability at each location", fontsize=10)
            bar.ax.tick_params(labelsize=10)
        fig.subplots_adjust(left=0.01, right=0.93, top=0.88, bottom=0.04, wspace=0.12, hspace=0.3)  # tight_layout draws twice


STAGES = ("1. score threshold", "2. top-k per level", "3. decode boxes", "4. NMS")
NAMED_SCORE = 0.3  # the NMS stage names the kept boxes above this score (the others are drawn, unnamed)


class LogitsToDetections(_ModelImages):
    """The post-processing of §4.1 on a trained model's real outputs, one stage at a time (NMS per class and the
    100-detection cap are Detectron's practice, not the paper's)."""

    figsize = (10.0, 4.4)

    def __init__(self, model=None, images: dict | None = None, stage: str = STAGES[-1]):
        super().__init__(model, images)
        self.score_thresh.value = 0.05
        self.stage = W.ToggleButtons(options=STAGES, value=stage, style={"button_width": "auto"})
        self.topk = W.IntSlider(1000, min=1, max=1000, description="top-k per level", continuous_update=False,
                                style={"description_width": "initial"}, layout=W.Layout(width="330px"))
        for c in (self.score_thresh, self.nms_thresh):
            c.continuous_update = False
        self.observe(self.choice, self.stage, self.score_thresh, self.topk, self.nms_thresh)
        self.ui = self._box(self._row(self.stage), self._row(self.choice, self.score_thresh), self._row(self.topk, self.nms_thresh))
        self.refresh()

    def update(self) -> None:
        self.steps = s = self._steps(self.topk.value)
        lv = s["levels"]
        self.counts = {"outputs": sum(x["outputs"] for x in lv), "above_thresh": sum(x["above_thresh"] for x in lv),
                       "after_topk": sum(x["kept_topk"] for x in lv), "after_nms": len(s["kept"])}
        n = len(lv)
        self.nms_per_level = torch.bincount(s["candidates"]["level"][s["kept"]], minlength=n).tolist() if len(s["kept"]) else [0] * n
        c = self.counts
        self.status.value = (f"{c['outputs']:,} (anchor, class) outputs → {c['above_thresh']:,} above "
                             f"{self.score_thresh.value:.2f} → {c['after_topk']:,} after top-{self.topk.value} per level → "
                             f"<b>{c['after_nms']}</b> after NMS at IoU {self.nms_thresh.value:.2f}. The paper (§4.1): top 1000 "
                             f"per level above 0.05, then NMS at 0.5; NMS per class and at most {self.model.detections_per_img} "
                             f"detections are Detectron's practice, which this lab follows.")

    def draw(self, fig) -> None:
        self._draw_stage(fig, fig.add_subplot(1, 2, 1))
        s, bx = self.steps, fig.add_subplot(1, 2, 2)
        nms_levels = self.nms_per_level
        # each level's count after NMS under its name; a star only where something survived (no "0" that reads as 1)
        names = [f"P{3 + i}\n{n} kept" for i, n in enumerate(nms_levels)]
        x = np.arange(len(names))
        bx.bar(x - 0.27, [v["outputs"] for v in s["levels"]], 0.27, label="outputs (anchors x classes)", color="lightgrey")
        bx.bar(x, [v["above_thresh"] for v in s["levels"]], 0.27, label=f"score > {self.score_thresh.value:.2f}", color="C1")
        bx.bar(x + 0.27, [v["kept_topk"] for v in s["levels"]], 0.27, label=f"top-{self.topk.value}", color="C2")
        survived = [i for i, v in enumerate(nms_levels) if v > 0]
        bx.plot(x[survived], [nms_levels[i] for i in survived], "k*", ms=10, label="after NMS", gid="after NMS")
        bx.set_yscale("log")
        bx.set_ylim(0.5, 100 * max(v["outputs"] for v in s["levels"]))  # room for the legend above the bars
        bx.set_xticks(x, names)
        bx.tick_params(labelsize=10)
        bx.set_title("how many survive each stage, per level", fontsize=10)
        bx.legend(fontsize=10, loc="upper right")
        fig.subplots_adjust(left=0.02, right=0.98, top=0.88, bottom=0.14, wspace=0.3)  # tight_layout draws twice

    def _draw_stage(self, fig, ax) -> None:
        """The left panel: the image with what the chosen stage has left."""
        from matplotlib.patches import Rectangle

        from ..viz import class_colour, draw_boxes

        s, stage = self.steps, STAGES.index(self.stage.value)
        cand = s["candidates"]
        draw_boxes(ax, self.image)
        show = torch.argsort(cand["scores"], descending=True)[:60]  # the best 60 candidates, so the picture stays readable

        def rect(box, **kw):
            x1, y1, x2, y2 = self._original(box[None])[0].tolist()
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, **kw))

        if stage == 0:
            o = self.outputs
            h, w = o["feature_sizes"][0]
            p3 = class_heatmap(o["cls_logits"][0], h, w, o["num_anchors"]).amax(dim=0).numpy()  # (H, W)
            H, W_ = self.image.shape[-2:]
            above = np.ma.masked_less_equal(p3, self.score_thresh.value)  # the cells below the threshold stay clear
            heat = ax.imshow(above, extent=(0, W_, H, 0), alpha=0.7, cmap="magma", vmin=0, vmax=1)
            bar = fig.colorbar(heat, ax=ax, fraction=0.046, pad=0.02)
            bar.set_label("highest class probability", fontsize=10)
            bar.ax.tick_params(labelsize=10)
            ax.set_title("P3 locations with a score above the threshold", fontsize=10)
        elif stage in (1, 2):
            for i in show.tolist():
                rect(cand["anchors"][i], ec=f"C{int(cand['level'][i])}", ls=":", lw=0.9)
                if stage == 2:
                    rect(cand["boxes"][i], ec=class_colour(int(cand["labels"][i])), lw=1.2)
            ax.set_title("candidate anchors (dotted, colour = level)" + ("\nand their decoded boxes (solid)" if stage == 2 else ""),
                         fontsize=10)
        else:
            kept = set(s["kept"].tolist())
            for i in show.tolist():
                if i not in kept:
                    rect(cand["boxes"][i], ec="grey", ls="--", lw=0.7)
            d = s["detections"]
            keep = d["scores"] >= max(self.score_thresh.value, 0.05)
            named = keep & (d["scores"] >= NAMED_SCORE)  # a name on every kept box would hide the picture
            for box, label in zip(d["boxes"][keep & ~named], d["labels"][keep & ~named]):
                rect(box, ec=class_colour(int(label)), lw=1.0)
            draw_boxes(ax, self.image, self._original(d["boxes"][named]), d["labels"][named], d["scores"][named],
                       self.model.class_names, fontsize=10)
            ax.set_title(f"kept by NMS (solid, named when > {NAMED_SCORE:g}),\nsuppressed (dashed grey)", fontsize=10)
