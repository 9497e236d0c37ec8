"""The training monitor: a short `fit` in a background thread, with live loss curves, AP after each epoch,
and the detections on a fixed image every few steps; Start and Stop work while it trains.

    m = TrainingMonitor()          # a fresh classroom model on a small shapes set
    m                              # click Start (or call m.start(); m.join() in a script)

Training runs in a thread so that the kernel stays free for widget messages; the thread only sets widget
values and appends to the Output (never a `with output:` block, which is not thread-safe). Derived state:
`records` (one dict per step), `evals` (AP after each epoch), `detections` (on the fixed image), `result`
(what `fit` returned), `running`.
"""

from __future__ import annotations

import threading
import traceback

import ipywidgets as W
import torch

from ..train import StopTraining, fit
from ._view import WidgetView

__all__ = ["TrainingMonitor", "LOSSES"]

LOSSES = {"focal loss (γ = 2, α = 0.25)": (2.0, 0.25), "α-balanced cross entropy (γ = 0, α = 0.25)": (0.0, 0.25),
          "cross entropy (γ = 0, no α)": (0.0, None)}


class TrainingMonitor(WidgetView):
    figsize = (11.0, 3.4)

    def __init__(self, model=None, train_data=None, val_data=None, epochs: int = 3, redraw_every: int = 5,
                 detect_every: int = 10, **fit_kwargs):
        super().__init__()
        from ..data import ShapesDataset, train_transforms
        from ..data.shapes import SHAPE_CLASSES
        from ..model import RetinaNet
        from ..presets import preset

        cfg = preset("classroom")
        self._make_model = (lambda: RetinaNet(len(SHAPE_CLASSES), class_names=list(SHAPE_CLASSES), **cfg["model"])) \
            if model is None else None
        self.model = model if model is not None else self._make_model()
        self.train_data = train_data if train_data is not None else ShapesDataset(
            640, seed=0, transform=train_transforms(), **cfg["data"])
        self.val_data = val_data if val_data is not None else ShapesDataset(48, seed=1_000_000, **cfg["data"])
        self.fixed_image = self.val_data[0][0]
        self.fit_kwargs = {**cfg["train"], "progress": False, "verbose": False, **fit_kwargs}
        self.redraw_every, self.detect_every = redraw_every, detect_every
        s = {"style": {"description_width": "80px"}}
        self.loss = W.Dropdown(options=list(LOSSES), description="loss", layout=W.Layout(width="400px"), **s)
        self.epochs = W.IntSlider(epochs, min=1, max=20, description="epochs", layout=W.Layout(width="300px"), **s)
        self.start_button = W.Button(description="Start", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.start_button.on_click(lambda b: self._guard(self.start))
        self.stop_button.on_click(lambda b: self._guard(self.stop))
        self.ui = self._box(W.HBox([self.loss, self.epochs, self.start_button, self.stop_button]))
        self.records, self.evals, self.detections, self.result = [], [], None, None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.status.value = "Press Start: a fresh model trains on the shapes world; the curves update as it learns."
        self.refresh()

    def _guard(self, fn) -> None:
        try:
            fn()
        except Exception:
            self.errors.append_stderr(traceback.format_exc())

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Train a fresh model (when the monitor made it) with the chosen loss, in a background thread."""
        if self.running:
            return
        if self._make_model is not None:
            self.model = self._make_model()
        gamma, alpha = LOSSES[self.loss.value]
        self.model.focal_gamma, self.model.focal_alpha = gamma, alpha
        self.records, self.evals, self.detections, self.result = [], [], None, None
        self._stop.clear()
        self.start_button.disabled, self.stop_button.disabled = True, False
        self._thread = threading.Thread(target=self._train, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the run to stop after the current step (its checkpoint, if any, is written)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _train(self) -> None:
        try:
            self.result = fit(self.model, self.train_data, self.val_data, epochs=self.epochs.value, eval_every=1,
                              callbacks=[self._on_event], **self.fit_kwargs)
            how = "stopped" if self.result.get("stopped") else "finished"
            self.status.value = f"{how} after {len(self.records)} steps" + (
                f"; AP {self.evals[-1]['AP']:.3f}, AP50 {self.evals[-1]['AP50']:.3f}" if self.evals else "")
        except Exception:
            self.errors.append_stderr(traceback.format_exc())
        finally:
            self.start_button.disabled, self.stop_button.disabled = False, True
            self.refresh()

    def _on_event(self, event: str, info: dict) -> None:
        if event == "step":
            self.records.append(info)
            step = info["step"]
            if step % self.detect_every == 0:
                self._detect()
            if step % self.redraw_every == 0:
                self.status.value = (f"step {step}: classification {info['classification']:.3f}, box {info['bbox_regression']:.3f}, "
                                     f"{info['images_per_s']:.0f} images/s")
                self.refresh()
            if self._stop.is_set():
                raise StopTraining()
        elif event == "eval":
            self.evals.append(info)
            self.refresh()

    @torch.no_grad()
    def _detect(self) -> None:
        self.model.eval()
        self.detections = self.model([self.fixed_image])[0]
        self.model.train()

    def draw(self, fig) -> None:
        from ..viz import draw_boxes

        ax, bx, cx = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.4, 1, 1]})
        if self.records:
            steps = [r["step"] for r in self.records]
            ax.plot(steps, [r["classification"] for r in self.records], label="classification", lw=1)
            ax.plot(steps, [r["bbox_regression"] for r in self.records], label="box regression", lw=1)
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        ax.set_xlabel("step")
        ax.set_title("training loss (" + self.loss.value.split(" (")[0] + ")", fontsize=9)
        if self.evals:
            bx.plot([e["epoch"] for e in self.evals], [e["AP"] for e in self.evals], "o-", label="AP")
            bx.plot([e["epoch"] for e in self.evals], [e["AP50"] for e in self.evals], "s--", label="AP50")
            bx.legend(fontsize=8)
        bx.set_ylim(0, 1)
        bx.set_xlabel("epoch")
        bx.set_title(f"COCO AP on {len(self.val_data)} fresh images", fontsize=9)
        d = self.detections
        if d is not None:
            keep = d["scores"] > 0.3
            draw_boxes(cx, self.fixed_image, d["boxes"][keep], d["labels"][keep], d["scores"][keep], self.model.class_names,
                       title=f"detections > 0.3 at step {self.records[-1]['step'] if self.records else 0}", fontsize=6)
        else:
            draw_boxes(cx, self.fixed_image, title="detections appear here", fontsize=6)
        fig.subplots_adjust(left=0.06, right=0.98, top=0.9, bottom=0.15, wspace=0.3)  # tight_layout draws twice
