"""What every classroom widget shares: a matplotlib figure shown as a PNG, errors shown, a static picture.

A widget here is a plain Python object: its controls are ipywidgets (set `w.gamma.value = 1` in a test
as a student would with the mouse), its derived state is plain attributes, and `w.ui` is the box that
Jupyter shows. Figures are drawn off-screen (matplotlib's Agg canvas, no pyplot state) and sent as PNG
bytes to an `ipywidgets.Image`, which works the same in JupyterLab, Notebook 7 and Voilà with no
JavaScript beyond ipywidgets' own.

Displaying a widget returns two representations in one output: the live widget and a PNG of its current
figure. A running kernel shows the widget; GitHub and nbviewer, which cannot run it, show the picture.
`w.snapshot()` returns the current figure alone as a static picture output (what a saved notebook shows
after, say, a training run finished in a later cell).

Sharp on a projector: a figure of W x H inches is shown at W x H x DISPLAY_DPI CSS pixels (never stretched,
only shrunk when the page is narrower) and encoded at PIXEL_DENSITY times that many pixels, so a 2x screen or a
browser zoom of up to 2x still maps one PNG pixel to one screen pixel. Text in the figures is at least
MIN_FONT_PT points at that displayed size.
"""

from __future__ import annotations

import base64
import io
import struct
import sys
import threading
import time
import traceback
import zlib

import ipywidgets as W
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["WidgetView", "new_figure", "figure_png", "encode_png", "compact_png", "display_size", "DISPLAY_DPI",
           "PIXEL_DENSITY", "MIN_FONT_PT"]

DISPLAY_DPI = 100  # CSS pixels per figure inch: a 9-inch figure is shown 900 px wide
PIXEL_DENSITY = 2  # PNG pixels per CSS pixel
MIN_FONT_PT = 10  # the smallest font in a figure (10 pt at 100 px per inch reads as 10.4 pt on a 96 px-per-inch page)


def new_figure(width: float = 8.0, height: float = 3.6, dpi: int = DISPLAY_DPI * PIXEL_DENSITY) -> Figure:
    """A figure that belongs to no pyplot window (so notebooks never show it twice), rendered at the PNG's
    resolution (DISPLAY_DPI x PIXEL_DENSITY): its canvas is the picture, with no second rendering by savefig."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode_png(rgba) -> bytes:
    """An (H, W, 4) RGBA buffer (an Agg canvas's) as an RGB PNG, written here for speed: a 2x picture has four
    times the pixels, and encoding dominated a refresh. The figures are opaque (no alpha channel); every row
    uses PNG's "Up" filter (the difference with the row above: zero wherever the picture repeats vertically, as
    plots and upscaled images do) and zlib's run-length strategy at level 1. About half of PIL's time at level 1
    for a file of the same size."""
    import numpy as np

    pixels = np.asarray(rgba)
    h, w = pixels.shape[:2]
    rgb = pixels[..., :3].reshape(h, w * 3)
    rows = np.empty((h, w * 3 + 1), np.uint8)
    rows[:, 0] = 2  # filter type Up
    rows[0, 1:] = rgb[0]
    np.subtract(rgb[1:], rgb[:-1], out=rows[1:, 1:])  # modulo 256, as PNG's filters are
    z = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    data = z.compress(rows.tobytes()) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b""))


def compact_png(png: bytes) -> bytes:
    """The same picture in a third to a fifth of the bytes, for what is stored rather than sent live (the picture in
    a saved notebook, `snapshot()`, the README's): 256 colours chosen by median cut, no dithering (a plot has far
    fewer colours; the mean error is about 1 level in 255), zlib at its best. 0.1-0.7 s, so never on a slider move."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        buf = io.BytesIO()
        image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            buf, format="png", optimize=True)
    return buf.getvalue()


def figure_png(fig: Figure) -> bytes:
    """The figure as a PNG at its own resolution (PIXEL_DENSITY pixels per displayed pixel for `new_figure`'s)."""
    fig.canvas.draw()
    return encode_png(fig.canvas.buffer_rgba())


def display_size(fig: Figure) -> tuple[int, int]:
    """(width, height) in CSS pixels at which the widget shows `fig`: DISPLAY_DPI pixels per inch."""
    w, h = fig.get_size_inches()
    return round(w * DISPLAY_DPI), round(h * DISPLAY_DPI)


class WidgetView:
    """Base of the explorers: subclasses build `self.controls` and implement `draw(fig)`.

    `refresh()` recomputes and redraws; an exception in it (or in any control's callback) goes to the
    visible `self.errors` output, not to the kernel log where a student would never see it; `error_log` keeps
    the same texts as a list (still there when the Output itself could not be updated).
    `last_refresh_s` is how long the last refresh took (the latency benchmark reads it), `last_refresh_cpu_s`
    the CPU time of the refreshing thread (the same, minus waiting for a busy machine).
    """

    figsize = (8.0, 3.6)

    def __init__(self):
        self.fig = new_figure(*self.figsize)
        w, h = display_size(self.fig)
        # shown at its own size (a width in px, shrunk by max_width on a narrow page), never stretched
        self.picture = W.Image(format="png", layout=W.Layout(width=f"{w}px", max_width="100%", height="auto"))
        self.errors = W.Output()
        self.status = W.HTML(layout=W.Layout(max_width=f"{max(w, 600)}px"))
        self.last_refresh_s = self.last_refresh_cpu_s = 0.0
        self.png = b""
        self.error_log: list[str] = []
        self._lock = threading.RLock()  # the training monitor refreshes from its thread

    def _box(self, *controls) -> W.VBox:
        return W.VBox([*controls, self.picture, self.status, self.errors])

    @staticmethod
    def _row(*controls, **layout) -> W.HBox:
        """Controls side by side that wrap onto the next line on a narrow page instead of being cut."""
        return W.HBox(list(controls), layout=W.Layout(**{"flex_flow": "row wrap", "align_items": "center", **layout}))

    def report(self, text: str) -> None:
        """Show an error where the student sees it; never raises (it is what the guards call)."""
        self.error_log.append(text)
        try:
            self.errors.append_stderr(text if text.endswith("\n") else text + "\n")
        except Exception:  # the widget channel itself is broken: the kernel's terminal at least, and error_log
            try:
                sys.__stderr__.write(text)
            except Exception:
                pass

    def _set(self, widget, name: str, value) -> bool:
        """`widget.name = value`, guarded: a failing widget update (a closed channel, a ZMQ error in a thread) is
        reported, never raised, so a training thread or a callback goes on."""
        try:
            setattr(widget, name, value)
            return True
        except Exception:
            self.report(f"could not update the {type(widget).__name__}'s {name}:\n{traceback.format_exc()}")
            return False

    def observe(self, *controls, names: str = "value") -> None:
        """Refresh when any of `controls` changes."""
        for c in controls:
            c.observe(lambda change: self.refresh(), names=names)

    def update(self) -> None:
        """Recompute derived state from the controls (subclasses)."""

    def draw(self, fig: Figure) -> None:  # pragma: no cover - every subclass draws
        raise NotImplementedError

    def render(self) -> bytes:
        """The PNG of the current state: the figure drawn afresh (a subclass may redraw less)."""
        self.fig.clear()
        self.draw(self.fig)
        return figure_png(self.fig)

    def refresh(self) -> None:
        with self._lock:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                self.update()
                self.png = self.render()
            except Exception:
                self.report(traceback.format_exc())
            else:
                self._set(self.picture, "value", self.png)
            self.last_refresh_s, self.last_refresh_cpu_s = time.perf_counter() - t0, time.thread_time() - c0

    def snapshot(self):
        """The current figure as a static picture output (IPython.display.Image, shown at its display size):
        end a cell with `w.snapshot()` to keep in the saved notebook what the widget shows now."""
        from IPython.display import Image

        w, h = display_size(self.fig)
        return Image(data=compact_png(self.png), format="png", width=w, height=h)

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.ui._repr_mimebundle_(**kwargs)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        if self.png:
            data["image/png"] = base64.b64encode(compact_png(self.png)).decode("ascii")
            w, h = display_size(self.fig)
            metadata = {**metadata, "image/png": {"width": w, "height": h}}  # the 2x PNG shown at its display size
        return data, metadata
