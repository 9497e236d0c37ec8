"""The architecture view: tensor shapes and parameters per pyramid level and subnet (paper Figure 3), and
the prior-probability bias of section 4.1: the first loss for any π, and the first iterations with
π = 0.01 against π = 0.5 (from the precomputed runs in assets/ablation_prior.json). With π = 0.5 every
negative output starts at p_t = 0.5, where the focal loss (γ = 2, α = 0.25) is 0.75 · 0.25 · log 2 ≈ 0.13
(log 2 ≈ 0.69 is cross entropy's); summed over thousands of anchors that is the huge first loss. The
precomputed runs train with the classroom recipe, AdamW and gradient clipping, which is why π = 0.5 recovers.

    ArchitectureView()

Derived state: `levels` and `parameters` (rows of `retinanet_lab.anatomy`), `initial_losses` {π: loss},
`prior_runs` (the precomputed curves, or None when the file is missing).
"""

from __future__ import annotations

import html
import json

import ipywidgets as W
import numpy as np

from .. import anatomy
from ..config import LossConfig
from ._view import WidgetView

__all__ = ["ArchitectureView", "load_prior_runs", "negative_output_loss", "PRIORS"]

PRIORS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


def negative_output_loss(prior: float, gamma: float = LossConfig.focal_gamma, alpha: float | None = LossConfig.focal_alpha) -> dict:
    """The first loss of one negative output (anchor, class) when the bias starts every probability at π:
    p_t = 1 - π, CE = -log(1 - π), FL = (1 - α) π^γ CE. For π = 0.5: CE = log 2 ≈ 0.69, FL ≈ 0.13."""
    import math

    ce = -math.log1p(-prior)
    weight = 1.0 if alpha is None else 1 - alpha
    fl = weight * prior**gamma * ce
    formula = (f"{weight:g} · {prior:.3g}^{gamma:g} · {ce:.3g}" if gamma else f"{weight:g} · {ce:.3g}")
    return {"p_t": 1 - prior, "CE": ce, "FL": fl, "formula": formula}


def load_prior_runs() -> dict | None:
    """The precomputed first iterations with π = 0.01 and π = 0.5, or None if assets/ has no such file."""
    from ..classroom import assets_dir

    path = assets_dir() / "ablation_prior.json"
    if not path.exists():
        return None
    with open(path) as f:
        return json.load(f)


def _html_table(rows: list[dict]) -> str:
    head = "".join(f"<th style='padding:0 8px'>{html.escape(str(c))}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td style='padding:0 8px;text-align:right'>{v:,}</td>" if isinstance(v, int)
                                    else f"<td style='padding:0 8px;text-align:right'>{html.escape(str(v))}</td>"
                                    for v in r.values()) + "</tr>" for r in rows)
    return f"<table style='font-size:13px'><tr>{head}</tr>{body}</table>"


class ArchitectureView(WidgetView):
    figsize = (10.0, 3.4)

    def __init__(self, model=None, images=None, targets=None, size: int | None = None):
        super().__init__()
        from ..data import ShapesDataset
        from ..model import RetinaNet
        from ..presets import preset

        cfg = preset("classroom")
        self.model = model if model is not None else RetinaNet(5, **cfg["model"])
        self.size = size or (self.model.min_size if isinstance(self.model.min_size, int) else 512)
        if images is None:
            data = ShapesDataset(4, seed=4_000_000, **cfg["data"])
            images, targets = zip(*(data[i] for i in range(len(data))))
        self.images, self.targets = list(images), list(targets)
        self.levels = anatomy.level_table(self.model, self.size, self.size)
        self.parameters = anatomy.parameter_table(self.model)
        self.initial_losses = anatomy.initial_losses(self.model, self.images, self.targets, PRIORS)
        self.prior_runs = load_prior_runs()
        self._seen = dict(self.initial_losses)
        self.prior = W.FloatLogSlider(0.01, base=10, min=-3, max=np.log10(0.9), step=0.05, description="prior π",
                                      continuous_update=False, style={"description_width": "initial"}, layout=W.Layout(width="360px"))
        self.observe(self.prior)
        self.tables = W.HTML(f"<b>Levels for a {self.size}x{self.size} input</b>{_html_table(self.levels)}"
                             f"<b>Parameters</b>{_html_table(self.parameters)}")
        self.ui = W.VBox([self.tables, self.prior, self.picture, self.status, self.errors])
        self.refresh()

    def update(self) -> None:
        p = self.prior.value
        if p not in self._seen:
            self._seen[p] = anatomy.initial_losses(self.model, self.images, self.targets, [p])[p]
        self.current_loss = self._seen[p]
        from ..heads import prior_bias

        self.negative_loss = negative_output_loss(p, self.model.focal_gamma, self.model.focal_alpha)
        n = self.negative_loss
        self.status.value = (f"π = {p:.3g}: classification bias b = -log((1 - π) / π) = {prior_bias(p):.2f}; the first "
                             f"classification loss on {len(self.images)} images is <b>{self.current_loss:,.2f}</b> "
                             f"(π = 0.01 gives {self.initial_losses[0.01]:,.2f}). Each negative output starts at p_t = 1 - π = "
                             f"{1 - p:.3g}: its focal loss is {n['formula']} = <b>{n['FL']:.3g}</b> (cross entropy: "
                             f"-log(1 - π) = {n['CE']:.3g}), times thousands of anchors and classes.")

    def draw(self, fig) -> None:
        ax, bx = fig.subplots(1, 2)
        ps = list(self.initial_losses)
        ax.plot(ps, list(self.initial_losses.values()), "o-", ms=3)
        ax.plot([self.prior.value], [self.current_loss], "r*", ms=12)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("prior π (initial probability of 'object')")
        ax.set_ylabel("first classification loss")
        ax.set_title("section 4.1: the initial loss against π", fontsize=11)
        runs = self.prior_runs
        if runs:
            for r in runs["runs"]:
                steps, loss = zip(*[(x[0], x[1]) for x in r["loss"]])
                bx.plot(steps, loss, color="C0" if r["prior"] == 0.01 else "C3", lw=1, alpha=0.8,
                        label=f"π = {r['prior']:g}" if r["seed"] == runs["runs"][0]["seed"] else None)
            bx.set_yscale("log")
            bx.set_xlabel("step")
            bx.set_ylabel("classification loss")
            bx.legend(fontsize=10)
            bx.set_title(f"first {runs['steps']} iterations, {len(runs['seeds'])} seeds each; AdamW +\n"
                         "gradient clipping (classroom recipe): π = 0.5 recovers", fontsize=10)
        else:
            bx.text(0.5, 0.5, "assets/ablation_prior.json not found:\npython assets/make_ablations.py --only prior",
                    ha="center", va="center", transform=bx.transAxes, fontsize=10)
            bx.axis("off")
        fig.subplots_adjust(left=0.08, right=0.98, top=0.84, bottom=0.16, wspace=0.3)  # tight_layout draws twice
