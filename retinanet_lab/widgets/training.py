"""The training monitor: a short `fit` in a background thread, with live loss curves, AP after each epoch,
and the detections on a fixed image every few steps; Start and Stop work while it trains.

    m = TrainingMonitor()          # a fresh classroom model on a small shapes set
    m                              # click Start (or call m.start(); m.join() in a script)
    m.snapshot()                   # after the run: the finished figure as a static picture (kept in a saved notebook)

Training runs in a thread so that the kernel stays free for widget messages; the thread only sets widget
values and appends to the Output (never a `with output:` block, which is not thread-safe). Every widget update
from the thread is guarded: one that fails (the kernel's channel closed, a ZMQ error) is reported in `errors` /
`error_log` and training goes on. Interrupting the kernel while `join()` waits (the stop button of a notebook, or
Ctrl-C) stops the run at its next step, waits for it, resets the buttons and says so; Start trains again.
Derived state: `records` (one dict per step), `evals` (AP after each epoch), `detections` (on the fixed image),
`result` (what `fit` returned), `running`, `interrupted`.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback

import ipywidgets as W
import torch
from matplotlib.ticker import MaxNLocator

from .. import seeds
from ..train import StopTraining, fit
from ._view import WidgetView

__all__ = ["TrainingMonitor", "LOSSES"]

# α-balanced CE with α = 0.75: the paper's best α for CE (Table 1 (a): 31.1 AP; α = 0.25 gives 10.8 AP)
LOSSES = {"focal loss (γ = 2, α = 0.25)": (2.0, 0.25),
          "α-balanced CE (γ = 0, α = 0.75: the paper's best for CE)": (0.0, 0.75),
          "cross entropy (γ = 0, no α)": (0.0, None)}
SHOW_SCORE = 0.3  # detections above this score are drawn; with none yet, the best TOP_FEW whatever their score
TOP_FEW = 3


class TrainingMonitor(WidgetView):
    figsize = (10.0, 3.8)

    def __init__(self, model=None, train_data=None, val_data=None, epochs: int = 3, num_images: int = 640,
                 redraw_every: int = 5, detect_every: int = 10, **fit_kwargs):
        super().__init__()
        from ..data import ShapesDataset, train_transforms
        from ..data.shapes import SHAPE_CLASSES
        from ..model import RetinaNet
        from ..presets import preset

        cfg = preset("classroom")
        self._make_model = (lambda: RetinaNet(len(SHAPE_CLASSES), class_names=list(SHAPE_CLASSES), **cfg["model"])) \
            if model is None else None
        self.model = model if model is not None else self._make_model()
        self.train_data = train_data if train_data is not None else ShapesDataset(  # num_images / 16 steps per epoch
            num_images, seed=seeds.TRAIN, transform=train_transforms(), **cfg["data"])
        self.val_data = val_data if val_data is not None else ShapesDataset(48, seed=seeds.VALIDATION, **cfg["data"])
        self.fixed_image = self.val_data[0][0]
        self.fit_kwargs = {**cfg["train"], "progress": False, "verbose": False, **fit_kwargs}
        self.redraw_every, self.detect_every = redraw_every, detect_every
        s = {"style": {"description_width": "initial"}}
        self.loss = W.Dropdown(options=list(LOSSES), description="loss", layout=W.Layout(width="470px"), **s)
        self.epochs = W.IntSlider(epochs, min=1, max=20, description="epochs", layout=W.Layout(width="220px"), **s)
        # no icons: Font Awesome is not there offline (the lab's Voilà pages load nothing from the internet)
        self.start_button = W.Button(description="▶ Start", button_style="success", layout=W.Layout(width="auto"))
        self.stop_button = W.Button(description="■ Stop", button_style="danger", disabled=True, layout=W.Layout(width="auto"))
        self.start_button.on_click(lambda b: self._guard(self.start))
        self.stop_button.on_click(lambda b: self._guard(self.stop))
        self.ui = self._box(self._row(self.loss, self.epochs, self.start_button, self.stop_button))
        self.records, self.evals, self.detections, self.result = [], [], None, None
        self.interrupted = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._done = threading.Event()  # set when the run's thread has finished everything, buttons and picture included
        self._done.set()
        self._thread_errors = 0
        self.status.value = "Press Start: a fresh model trains on the shapes world; the curves update as it learns."
        self.refresh()

    def _guard(self, fn) -> None:
        try:
            fn()
        except Exception:
            self.report(traceback.format_exc())

    @property
    def running(self) -> bool:
        # not Thread.is_alive(): in Python 3.11 a KeyboardInterrupt inside Thread.join() can mark a thread that is
        # still running as stopped (the bpo-45274 handling); an Event is safe to wait on and interrupt
        return not self._done.is_set()

    def _buttons(self, running: bool) -> None:
        self._set(self.start_button, "disabled", running)
        self._set(self.stop_button, "disabled", not running)

    def _say(self, text: str) -> None:
        self._set(self.status, "value", text)

    def report(self, text: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            self._thread_errors += 1
        super().report(text)

    def start(self) -> None:
        """Train a fresh model (when the monitor made it) with the chosen loss, in a background thread."""
        if self.running:
            return
        if self._make_model is not None:
            self.model = self._make_model()
        gamma, alpha = LOSSES[self.loss.value]
        self.model.focal_gamma, self.model.focal_alpha = gamma, alpha
        self.records, self.evals, self.detections, self.result = [], [], None, None
        self.interrupted, self._thread_errors = False, 0
        self._stop.clear()
        self._done = threading.Event()
        self._buttons(running=True)
        self._say("starting: the first step builds the model's caches …")
        self._thread = threading.Thread(target=self._train, args=(self._done,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the run to stop after the current step (its checkpoint, if any, is written)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the run (at most `timeout` seconds). An interrupt while waiting (Kernel > Interrupt, Ctrl-C) does
        not leave the run half alive: it stops the run at its next step, waits for it, resets the buttons and says
        "interrupted at step N: press Start to train again" (no traceback; Start works again)."""
        if self._thread is None:
            return
        done = self._done
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not done.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return
                done.wait(0.2 if left is None else min(0.2, left))  # short waits: an interrupt is handled at once
        except KeyboardInterrupt:
            self.interrupt()
        else:
            self._sync()
        print(self.status.value)  # in the cell that waited, where the student is looking

    def interrupt(self) -> None:
        """Stop the run at its next step and wait for it (what an interrupt during `join` does)."""
        self.interrupted = True
        self._stop.set()
        done = self._done
        while not done.is_set():
            try:
                done.wait(0.2)
            except KeyboardInterrupt:  # a second interrupt: the run still ends at its next step; keep waiting
                continue
        self._say(self._final_message())
        self._sync()

    def _final_message(self) -> str:
        step = self.records[-1]["step"] if self.records else 0
        if self.interrupted:
            text = f"interrupted at step {step}: press Start to train again"
        elif self.result is None:
            text = f"the run failed at step {step} (the error is below): press Start to train again"
        else:
            how = "stopped" if self.result.get("stopped") else "finished"
            text = f"{how} after {len(self.records)} steps" + (
                f"; AP {self.evals[-1]['AP']:.3f}, AP50 {self.evals[-1]['AP50']:.3f}" if self.evals else "")
        if self._thread_errors:
            text += f" ({self._thread_errors} widget update(s) failed during the run and training went on: see below)"
        return text

    def _sync(self) -> None:
        """From the main thread, after the run: send the final state again, in case an update from the training
        thread was lost (its value is set even when sending it failed), and show the thread's errors here too."""
        self._say(self._final_message())
        self._buttons(running=False)
        for widget, names in ((self.status, ["value"]), (self.start_button, ["disabled"]), (self.stop_button, ["disabled"]),
                              (self.picture, ["value"]), (self.errors, ["outputs"])):
            try:
                widget.send_state(names)
            except Exception:
                pass
        if self._thread_errors:
            print(f"{self._thread_errors} widget update(s) failed in the training thread (training went on); the first:\n"
                  f"{self.error_log[-self._thread_errors]}", file=sys.stderr)

    def _train(self, done: threading.Event) -> None:
        try:
            self.result = fit(self.model, self.train_data, self.val_data, epochs=self.epochs.value, eval_every=1,
                              callbacks=[self._on_event], **self.fit_kwargs)
        except Exception:
            self.report(traceback.format_exc())
        finally:
            try:
                if self.records:  # the panel shows the detections of the model as the run left it
                    try:
                        self._detect()
                    except Exception:
                        self.report(traceback.format_exc())
                self._say(self._final_message())
                self._buttons(running=False)
                self.refresh()
            finally:
                done.set()

    def _on_event(self, event: str, info: dict) -> None:
        if event == "step":
            self.records.append(info)
            step = info["step"]
            if step % self.detect_every == 0:
                self._detect()
            if step % self.redraw_every == 0:
                self._say(f"step {step}: classification {info['classification']:.3f}, box {info['bbox_regression']:.3f}, "
                          f"{info['images_per_s']:.0f} images/s")
                self.refresh()
        elif event == "eval":
            self.evals.append(info)
            self.refresh()
        if event in ("step", "eval") and self._stop.is_set():
            raise StopTraining()

    @torch.no_grad()
    def _detect(self) -> None:
        """Detections on the fixed image with no score threshold (the panel picks what to show)."""
        self.model.eval()
        thresh, self.model.score_thresh = self.model.score_thresh, 0.0
        try:
            self.detections = self.model([self.fixed_image])[0]
        finally:
            self.model.score_thresh = thresh
            self.model.train()

    def shown_detections(self) -> tuple[dict, str]:
        """What the detections panel draws and its title: those above SHOW_SCORE, or, when none is (early in a
        run), the best TOP_FEW whatever their score, and the title says so."""
        d = self.detections
        step = self.records[-1]["step"] if self.records else 0
        keep = d["scores"] > SHOW_SCORE
        if bool(keep.any()):
            return {k: v[keep] for k, v in d.items()}, f"detections > {SHOW_SCORE:g} at step {step}"
        top = d["scores"].argsort(descending=True)[:TOP_FEW]
        return ({k: v[top] for k, v in d.items()},
                f"step {step}: none > {SHOW_SCORE:g} yet;\nthe best {len(top)}, whatever their score")

    def draw(self, fig) -> None:
        from matplotlib.ticker import NullFormatter

        from ..viz import draw_boxes

        ax, bx, cx = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.4, 1, 1]})
        if self.records:
            steps = [r["step"] for r in self.records]
            ax.plot(steps, [r["classification"] for r in self.records], label="classification", lw=1)
            ax.plot(steps, [r["bbox_regression"] for r in self.records], label="box regression", lw=1)
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())  # "6 x 10^-1" on every minor tick: unreadable, and cut
            ax.legend(fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss (log scale)")
        ax.set_title("training loss (" + self.loss.value.split(" (")[0] + ")", fontsize=10)
        if self.evals:
            bx.plot([e["epoch"] for e in self.evals], [e["AP"] for e in self.evals], "o-", label="AP")
            bx.plot([e["epoch"] for e in self.evals], [e["AP50"] for e in self.evals], "s--", label="AP50")
            bx.legend(fontsize=10)
        bx.set_ylim(0, 1)
        bx.set_xlabel("epoch")
        bx.xaxis.set_major_locator(MaxNLocator(integer=True))
        bx.set_title(f"COCO AP on {len(self.val_data)} fresh images", fontsize=10)
        if self.detections is not None:
            d, title = self.shown_detections()
            draw_boxes(cx, self.fixed_image, d["boxes"], d["labels"], d["scores"], self.model.class_names, title=title, fontsize=10)
        else:
            draw_boxes(cx, self.fixed_image, title="detections appear here", fontsize=10)
        cx.title.set_fontsize(10)
        fig.subplots_adjust(left=0.07, right=0.98, top=0.86, bottom=0.14, wspace=0.3)  # tight_layout draws twice
