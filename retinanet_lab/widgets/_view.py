"""What every classroom widget shares: a matplotlib figure shown as a PNG, errors shown, a static picture.

A widget here is a plain Python object: its controls are ipywidgets (set `w.gamma.value = 1` in a test
as a student would with the mouse), its derived state is plain attributes, and `w.ui` is the box that
Jupyter shows. Figures are drawn off-screen (matplotlib's Agg canvas, no pyplot state) and sent as PNG
bytes to an `ipywidgets.Image`, which works the same in JupyterLab, Notebook 7 and Voilà with no
JavaScript beyond ipywidgets' own.

Displaying a widget returns two representations in one output: the live widget and a PNG of its current
figure. A running kernel shows the widget; GitHub and nbviewer, which cannot run it, show the picture.
"""

from __future__ import annotations

import base64
import io
import threading
import time
import traceback

import ipywidgets as W
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["WidgetView", "new_figure", "figure_png"]


def new_figure(width: float = 8.0, height: float = 3.6, dpi: int = 80) -> Figure:
    """A figure that belongs to no pyplot window (so notebooks never show it twice)."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


class WidgetView:
    """Base of the explorers: subclasses build `self.controls` and implement `draw(fig)`.

    `refresh()` recomputes and redraws; an exception in it (or in any control's callback) goes to the
    visible `self.errors` output, not to the kernel log where a student would never see it.
    `last_refresh_s` is how long the last refresh took (the latency benchmark reads it).
    """

    figsize = (8.0, 3.6)

    def __init__(self):
        self.fig = new_figure(*self.figsize)
        self.picture = W.Image(format="png", layout=W.Layout(width="auto", max_width="100%"))
        self.errors = W.Output()
        self.status = W.HTML()
        self.last_refresh_s = 0.0
        self.png = b""
        self._lock = threading.RLock()  # the training monitor refreshes from its thread

    def _box(self, *controls) -> W.VBox:
        return W.VBox([*controls, self.picture, self.status, self.errors])

    def observe(self, *controls, names: str = "value") -> None:
        """Refresh when any of `controls` changes."""
        for c in controls:
            c.observe(lambda change: self.refresh(), names=names)

    def update(self) -> None:
        """Recompute derived state from the controls (subclasses)."""

    def draw(self, fig: Figure) -> None:  # pragma: no cover - every subclass draws
        raise NotImplementedError

    def refresh(self) -> None:
        with self._lock:
            t0 = time.perf_counter()
            try:
                self.update()
                self.fig.clear()
                self.draw(self.fig)
                self.png = figure_png(self.fig)
                self.picture.value = self.png
            except Exception:
                self.errors.append_stderr(traceback.format_exc())
            self.last_refresh_s = time.perf_counter() - t0

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.ui._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if self.png:
            data["image/png"] = base64.b64encode(self.png).decode("ascii")
        return bundle
