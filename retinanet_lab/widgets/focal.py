"""The focal loss explorer: the paper's Figure 1 for any γ and α, the modulating factor, the gradient.

    FocalLossExplorer()        # in a notebook cell: sliders, curves, and the numbers at a chosen p_t

Derived state a test (or a curious student) can read: `values` (CE, FL and the down-weighting factor
CE / FL at the chosen p_t), `curves` (the plotted arrays, by γ).
"""

from __future__ import annotations

import math

import ipywidgets as W
import numpy as np
import torch

from ..focal_loss import cross_entropy, focal_loss, focal_loss_grad, modulating_factor
from ._view import WidgetView, encode_png

__all__ = ["FocalLossExplorer", "focal_values", "focal_curves", "PAPER_GAMMAS"]

PAPER_GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)  # the curves of the paper's Figure 1
WELL_CLASSIFIED = 0.5  # Figure 1's caption: "well-classified examples (p_t > .5)"


def _logits(pt: np.ndarray, positive: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits x and targets y for which p_t takes the given values (y = 1: p = p_t; y = 0: p = 1 - p_t)."""
    pt = torch.as_tensor(np.clip(pt, 1e-12, 1 - 1e-12), dtype=torch.float64)
    x = torch.log(pt) - torch.log1p(-pt)  # logit(p_t)
    y = torch.ones_like(x)
    if not positive:
        x, y = -x, torch.zeros_like(x)
    return x, y


def focal_values(pt: float, gamma: float, alpha: float | None = None, positive: bool = True) -> dict:
    """CE, (α-balanced) FL, the modulating factor and how many times FL is below CE, at one p_t."""
    if not 0 < pt < 1:
        raise ValueError(f"p_t must be in (0, 1), got {pt}")
    x, y = _logits(np.array([pt]), positive)
    ce = float(cross_entropy(x, y))
    fl = float(focal_loss(x, y, alpha, gamma))
    return {"p_t": pt, "CE": ce, "FL": fl, "modulating_factor": float(modulating_factor(x, y, gamma)),
            "down_weighting": ce / fl if fl > 0 else math.inf}


def focal_curves(gammas, alpha: float | None = None, positive: bool = True, quantity: str = "loss",
                 pt: np.ndarray | None = None) -> dict:
    """p_t grid and, per γ, the loss, the modulating factor (1 - p_t)^γ, or the gradient |dFL/dx|."""
    pt = np.linspace(0.001, 0.999, 300) if pt is None else np.asarray(pt)
    x, y = _logits(pt, positive)
    out = {"p_t": pt, "curves": {}}
    for g in gammas:
        if quantity == "loss":
            v = focal_loss(x, y, alpha, g)
        elif quantity == "modulating factor":
            v = modulating_factor(x, y, g)
        elif quantity == "gradient":
            v = focal_loss_grad(x, y, alpha, g).abs()
        else:
            raise ValueError(f"quantity must be 'loss', 'modulating factor' or 'gradient', got {quantity!r}")
        out["curves"][float(g)] = v.numpy()
    return out


class FocalLossExplorer(WidgetView):
    """FL(p_t) = -α_t (1 - p_t)^γ log(p_t) against cross entropy (γ = 0), as in the paper's Figure 1."""

    figsize = (9.0, 3.6)

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25, pt: float = 0.9):
        super().__init__()

        def s(width="300px"):  # labels as wide as their text: never cut off
            return {"style": {"description_width": "initial"}, "layout": W.Layout(width=width)}

        self.gamma = W.FloatSlider(gamma, min=0, max=5, step=0.1, description="γ", **s())
        self.alpha = W.FloatSlider(alpha, min=0.05, max=0.95, step=0.05, description="α", **s())
        self.use_alpha = W.Checkbox(False, description="α-balanced", indent=False, layout=W.Layout(width="auto"))
        auto = {"button_width": "auto"}
        self.positive = W.ToggleButtons(options=[("foreground (y = 1)", True), ("background (y = 0)", False)], value=True,
                                        style=auto)
        self.compare = W.Checkbox(True, description="the paper's γ = 0, 0.5, 1, 2, 5", indent=False, layout=W.Layout(width="auto"))
        self.quantity = W.ToggleButtons(options=["loss", "modulating factor", "gradient"], value="loss", style=auto)
        self.log_scale = W.Checkbox(False, description="log y axis", indent=False, layout=W.Layout(width="auto"))
        self.pt = W.FloatSlider(pt, min=0.01, max=0.99, step=0.01, description="cursor at p_t", **s("340px"))
        self.readout = W.HTML(layout=W.Layout(max_width="900px"))
        self.observe(self.gamma, self.alpha, self.use_alpha, self.positive, self.compare, self.quantity, self.log_scale, self.pt)
        self.ui = self._box(
            self._row(self.gamma, self.alpha, self.use_alpha), self._row(self.pt, self.log_scale, self.compare),
            self._row(self.quantity, self.positive), self.readout)
        self.refresh()

    @property
    def alpha_value(self) -> float | None:
        return self.alpha.value if self.use_alpha.value else None

    @property
    def alpha_weight(self) -> float:
        """α_t of the chosen example: α for foreground, 1 - α for background, 1 without balancing (eq. 3)."""
        a = self.alpha_value
        return 1.0 if a is None else (a if self.positive.value else 1 - a)

    def update(self) -> None:
        gammas = sorted({*(PAPER_GAMMAS if self.compare.value else (0.0,)), round(self.gamma.value, 3)})
        key = (tuple(gammas), self.alpha_value, self.positive.value, self.quantity.value)
        if getattr(self, "_curves_key", None) != key:  # moving only the cursor recomputes nothing
            self.curves, self._curves_key = focal_curves(gammas, *key[1:]), key
        self.values = focal_values(self.pt.value, self.gamma.value, self.alpha_value, self.positive.value)
        v = self.values
        self.readout.value = (f"at p_t = {v['p_t']:.2f}: CE = {v['CE']:.4f}, FL = {v['FL']:.5f}, (1 - p_t)^γ = "
                              f"{v['modulating_factor']:.4f}: the focal loss weights this example "
                              f"<b>{v['down_weighting']:,.1f}×</b> less than cross entropy")

    def render(self) -> bytes:
        """The full drawing when anything but the cursor changed; for the cursor alone (the p_t slider, dragged
        continuously) the stored picture without it, and the cursor on top: a fraction of the time."""
        canvas = self.fig.canvas
        key = (self._curves_key, round(self.gamma.value, 3), self.alpha.value, self.log_scale.value)
        if key != getattr(self, "_drawn_key", None):
            self.fig.clear()
            self.draw(self.fig)
            canvas.draw()  # everything but the cursor
            self._background, self._drawn_key = canvas.copy_from_bbox(self.fig.bbox), key
        else:
            canvas.restore_region(self._background)
            self._cursor.set_xdata([self.pt.value, self.pt.value])
        self._cursor.axes.draw_artist(self._cursor)
        return encode_png(canvas.buffer_rgba())

    def draw(self, fig) -> None:
        ax = fig.add_subplot(1, 1, 1)
        pt, current = self.curves["p_t"], round(self.gamma.value, 3)
        for g, v in self.curves["curves"].items():
            bold = g == current
            ax.plot(pt, v, lw=2.5 if bold else 1.2, alpha=1 if bold else 0.7, label=f"γ = {g:g}" + (" (CE)" if g == 0 else ""),
                    color="C3" if bold else None, zorder=3 if bold else 2)
        # the cursor is drawn apart (animated): moving only it redraws it on the stored rest of the picture
        self._cursor = ax.axvline(self.pt.value, color="grey", ls=":", lw=1, animated=True)
        ax.axvspan(WELL_CLASSIFIED, 1.0, color="green", alpha=0.06)
        ax.text(WELL_CLASSIFIED + 0.02, 0.97, f"well-classified examples\n(p_t > {WELL_CLASSIFIED:g})",
                transform=ax.get_xaxis_transform(), ha="left", va="top", fontsize=10)  # left of the legend
        ax.set_xlabel("probability of ground truth class, p_t")
        q = self.quantity.value
        ax.set_ylabel({"loss": "loss", "modulating factor": "(1 - p_t)^γ", "gradient": "|dFL/dx|"}[q])
        if self.log_scale.value:
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, 1.05 if q == "modulating factor" else {"loss": 5, "gradient": 1.05}[q] * self.alpha_weight)
        ax.set_xlim(0, 1)
        ax.legend(fontsize=10, loc="upper right" if q == "loss" else "best")
        title = {"loss": "FL(p_t) = -α_t (1 - p_t)^γ log(p_t)", "modulating factor": "the modulating factor (1 - p_t)^γ",
                 "gradient": "gradient of the loss with respect to the logit x"}[q]
        ax.set_title(title + (f", α = {self.alpha.value:g}" if self.alpha_value is not None and q != "modulating factor" else ""),
                     fontsize=11)
        fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.15)  # tight_layout draws twice
