"""Hard-example weighting on real anchors: the paper's Figure 4 for any γ, the share of the loss that comes
from easy negatives under CE and FL, and an image painted by each anchor's share of the loss under CE,
α-balanced CE (α = 0.75, the paper's best α for CE in Table 1 (a)), OHEM 1:3 and FL (α = 0.25) (paper sections
3.2, 5.1 and Table 1 (d)).

    HardExampleExplorer()          # the classroom model's outputs on fresh shapes images

Derived state: `samples` (see `retinanet_lab.hard_examples.anchor_samples`), `shares` {"CE": ..., "FL": ...}
(from `easy_negative_share`), `cdf` {"positives": (x, y), "negatives": (x, y)} at the chosen γ, `loss_map` (H, W).
"""

from __future__ import annotations

import ipywidgets as W
import torch
import torch.nn.functional as F

from ..hard_examples import (
    ALPHA_CE,
    ALPHA_FL,
    METHODS,
    anchor_loss_shares,
    anchor_samples,
    easy_negative_share,
    example_losses,
    loss_cdf,
)
from ._view import WidgetView

__all__ = ["HardExampleExplorer", "loss_share_image"]


def loss_share_image(shares: list[torch.Tensor], image_index: int, size: tuple[int, int]) -> torch.Tensor:
    """Per-level shares [(B, H_l, W_l)] of one image, each spread over its cells at the image's size and summed
    over levels, (H, W); the total of the map is the image's total share (1) spread over pixels."""
    h, w = size
    out = torch.zeros(h, w)
    for s in shares:
        cell = s[image_index][None, None]  # (1, 1, H_l, W_l)
        up = F.interpolate(cell, size=(h, w), mode="nearest")[0, 0]
        out += up * (cell.shape[-2] * cell.shape[-1]) / (h * w)  # keep the level's total
    return out


# what each method's button says: the α it uses (the paper's best for it, Table 1 (a) and (b))
METHOD_LABELS = {"CE": "CE", "α-balanced CE": f"α-balanced CE (α = {ALPHA_CE:g})", "OHEM 1:3": "OHEM 1:3",
                 "FL": f"FL (α = {ALPHA_FL:g})"}


class HardExampleExplorer(WidgetView):
    figsize = (10.0, 3.8)

    def __init__(self, model=None, images=None, targets=None, gamma: float = 2.0):
        super().__init__()
        if model is None:
            from ..classroom import load_classroom_model

            model = load_classroom_model()
        if images is None:
            from ..data import ShapesDataset
            from ..presets import preset

            data = ShapesDataset(24, seed=6_000_000, **preset("classroom")["data"])
            images, targets = zip(*(data[i] for i in range(len(data))))
        self.images, self.targets = list(images), list(targets)
        self.samples = anchor_samples(model.eval(), self.images, self.targets)
        self._ce = {"share": easy_negative_share(self.samples, 0.0),  # γ = 0 never changes: once
                    "positives": loss_cdf(example_losses(self.samples, "positives", 0.0)),
                    "negatives": loss_cdf(example_losses(self.samples, "negatives", 0.0))}
        def s():  # labels as wide as their text: never cut off
            return {"style": {"description_width": "initial"}, "layout": W.Layout(width="320px")}

        self.gamma = W.FloatSlider(gamma, min=0, max=5, step=0.25, description="γ", continuous_update=False, **s())
        self.method = W.ToggleButtons(options=[(METHOD_LABELS[m], m) for m in METHODS], value="FL", style={"button_width": "auto"},
                                      tooltips=["cross entropy, every anchor", f"α = {ALPHA_CE:g}: the paper's best α for CE "
                                                "(Table 1 (a): 31.1 AP; α = 0.25 gives 10.8)", "all positives and the 3 hardest "
                                                "negatives per positive", f"focal loss, γ from the slider, α = {ALPHA_FL:g}"])
        self.image_index = W.IntSlider(0, min=0, max=len(self.images) - 1, description="image", continuous_update=False, **s())
        self.observe(self.gamma, self.method, self.image_index)
        self.ui = self._box(self._row(self.gamma, self.image_index), self._row(self.method))
        self.refresh()

    def update(self) -> None:
        g, s = self.gamma.value, self.samples
        self.shares = {"CE": self._ce["share"], "FL": easy_negative_share(s, g)}
        self.cdf = {"positives": loss_cdf(example_losses(s, "positives", g)), "negatives": loss_cdf(example_losses(s, "negatives", g)),
                    "positives_CE": self._ce["positives"], "negatives_CE": self._ce["negatives"]}
        kw = {"gamma": g} if self.method.value == "FL" else {}
        shares = anchor_loss_shares(s, self.method.value, **kw)
        self.loss_map = loss_share_image(shares, self.image_index.value, self.images[self.image_index.value].shape[-2:])
        ce, fl = self.shares["CE"], self.shares["FL"]
        self.status.value = (f"{ce['num_positives']:,} positive and {ce['num_negatives']:,} negative examples in {len(self.images)} "
                             f"images. Easy negatives (p_t > 0.5) carry <b>{ce['easy_negatives']:.0%}</b> of the loss under CE "
                             f"and <b>{fl['easy_negatives']:.1%}</b> under FL with γ = {g:g}; positives carry "
                             f"{ce['positives']:.1%} and {fl['positives']:.1%}.")

    def draw(self, fig) -> None:
        g = self.gamma.value
        axes = fig.subplots(1, 3)
        for ax, key in zip(axes[:2], ("positives", "negatives")):
            x, y = self.cdf[key + "_CE"]
            ax.plot(x, y, color="grey", lw=1, label="γ = 0 (CE)")
            x, y = self.cdf[key]
            ax.plot(x, y, color="C3", lw=2, label=f"γ = {g:g}")
            ax.set_xlabel(f"fraction of {key}")
            ax.set_ylabel("cumulative normalized loss")
            ax.set_title(f"{key}: where the loss is (Fig. 4)", fontsize=10)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.legend(fontsize=10, loc="upper left")
        ax = axes[2]
        image = self.images[self.image_index.value]
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
        m = self.loss_map
        heat = ax.imshow((m / m.max().clamp(min=1e-12)).sqrt().numpy(), cmap="inferno", alpha=0.65, vmin=0, vmax=1)
        from matplotlib.patches import Rectangle

        for box in self.targets[self.image_index.value]["boxes"].tolist():
            ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ec="cyan", lw=1))
        ax.set_title(f"each anchor's share of the loss,\n{METHOD_LABELS[self.method.value]}", fontsize=10)
        ax.axis("off")
        bar = fig.colorbar(heat, ax=ax, fraction=0.046, pad=0.03)
        bar.set_label("√(share / largest)", fontsize=10)
        bar.ax.tick_params(labelsize=10)
        fig.subplots_adjust(left=0.07, right=0.93, top=0.86, bottom=0.15, wspace=0.35)  # tight_layout draws twice
