"""Check for the live-detections lesson (09): a class heat map from the classification subnet's raw output (paper
§4, "Classification Subnet": the last convolution has K·A outputs per location, with sigmoid activations).

The student writes `fn(cls_logits (A*K, H, W), num_anchors, num_classes) -> (K, H, W)`: for each class and
location, the highest probability σ(logit) over the A anchors there. The layout is the package's (and
torchvision's): channel a·K + k is anchor a, class k, i.e. `view(A, K, H, W)`.

The cases isolate the layout: one hot channel (anchor 2, class 1, at one location) with A = 3 != K = 4 and
H = 4 != W = 5, so that reading the channels as (K, A), mixing H and W, or reducing over the wrong axis lights
the wrong map or pixel; two hot channels of the same class at one location (max, not mean nor sum); saturated
logits (±30, ±200); then random logits with A = 9, K = 5 against the package's `retinanet_lab.heads.class_heatmap`
(the function the detection widget draws its heat maps with). Taking the max over the anchors of the *logits*
and the sigmoid after it is right too: σ is increasing, so max σ(x) = σ(max x).
"""

from __future__ import annotations

import torch

from ..heads import _flatten, class_heatmap
from ._check import Case, Checker, CheckResult

__all__ = ["check_class_heatmap"]

_LAYOUT = ("Channel a·K + k is anchor a, class k: cls_logits.reshape(A, K, H, W) (torchvision's view(N, A, K, H, W)), "
           "then the max over dim 0, the anchors")


def _reference(x: torch.Tensor, a: int, k: int) -> torch.Tensor:
    """Through the package's own flattening (the order the subnet hands to the loss and to post-processing)."""
    _, h, w = x.shape
    return class_heatmap(_flatten(x.double()[None], k)[0], h, w, a)


def _mistakes(x: torch.Tensor, a: int, k: int) -> dict:
    x = x.double()
    _, h, w = x.shape
    p = torch.sigmoid(x).reshape(a, k, h, w)  # (A, K, H, W)
    return {
        "reshape_KA": (torch.sigmoid(x).reshape(k, a, h, w).amax(dim=1),
                       f"you read the channels as (K, A, H, W), class-major. {_LAYOUT}"),
        "softmax_classes": (torch.softmax(x.reshape(a, k, h, w), dim=1).amax(dim=0),
                            "you used a softmax over the classes. RetinaNet has one independent sigmoid per class and "
                            "anchor (binary classifiers, no background class): torch.sigmoid, not softmax"),
        "softmax_anchors": (torch.softmax(x.reshape(a, k, h, w), dim=0).amax(dim=0),
                            "you used a softmax over the anchors. Each output is its own binary classifier: torch.sigmoid"),
        "no_sigmoid": (x.reshape(a, k, h, w).amax(dim=0),
                       "these are logits, not probabilities: apply torch.sigmoid (before or after the max, the same)"),
        "max_over_classes": (p.amax(dim=1),
                             "you took the max over the classes: the answer is one map per *class*, (K, H, W); take the "
                             "max over the anchors, dim 0 of the (A, K, H, W) view"),
        "mean_over_anchors": (p.mean(dim=0), "you averaged over the anchors: take the highest probability, .amax(dim=0) "
                              "(one anchor that sees the object is enough)"),
        "sum_over_anchors": (p.sum(dim=0), "you summed the probabilities over the anchors (that can exceed 1): take "
                             "their max, .amax(dim=0)"),
        "max_over_all": (p.amax(dim=(0, 1)), "you took the max over the classes too, (H, W): that is the widget's "
                         "one-map-per-level picture. Return one map per class: the max over the anchors only"),
        "first_anchor_only": (p[0], "you kept the first anchor only (the first K channels): take the max over all A "
                              "anchors of each location"),
        "transposed": (p.amax(dim=0).transpose(1, 2), "the answer is (K, W, H): rows and columns swapped. Keep the "
                       "(H, W) order of the input: reshape(A, K, H, W), no transpose"),
    }


_ERRORS = {
    "view size is not compatible": ("view_not_contiguous",
                                    "`.view` needs a contiguous tensor, and a permuted one is not: use `.reshape` (or "
                                    "`.contiguous().view`). Here no permute is needed: cls_logits.reshape(A, K, H, W)"),
    "is invalid for input of size": ("wrong_reshape", f"the sizes you reshaped to do not multiply to A·K·H·W. {_LAYOUT}"),
}


def _read_map(c: Checker, case: Case, got: torch.Tensor) -> torch.Tensor:
    """NaN from a sigmoid written by hand is named before the comparison."""
    t = got.detach()
    if t.is_floating_point() and t.shape == case.want.shape and bool(torch.isnan(t).any()):
        c.fail(f"{case.name}: your map has NaN where the logits are large (±30, ±200): exp(x) / (1 + exp(x)) overflows "
               "to inf / inf. Use torch.sigmoid, which is stable", "unstable_sigmoid")
    return got


def check_class_heatmap(fn) -> CheckResult:
    """Check `fn(cls_logits (A*K, H, W), num_anchors, num_classes) -> (K, H, W)`: max over anchors of σ(logit)."""

    def body(c: Checker):
        cases = []
        a, k, h, w = 3, 4, 4, 5
        x = torch.full((a * k, h, w), -6.0)
        x[2 * k + 1, 2, 3] = 4.0  # anchor 2, class 1, at row 2, column 3
        cases.append(("one hot channel: anchor 2, class 1 (channel 2·4 + 1 = 9) at row 2, column 3; A = 3, K = 4, 4 x 5 map",
                      x, a, k, f"only class 1's map lights up, at [2, 3], with σ(4) = 0.982; everything else is σ(-6). {_LAYOUT}"))

        x = torch.full((a * k, h, w), -6.0)
        x[0 * k + 3, 2, 0], x[1 * k + 3, 2, 0], x[2 * k + 3, 2, 0] = 2.0, -1.0, 0.5  # class 3, three anchors
        x[1 * k + 0, 3, 4] = 1.0  # class 0, anchor 1, the last pixel
        cases.append(("class 3 seen by all three anchors at [2, 0] (logits 2, -1, 0.5) and class 0 at the last pixel", x, a, k,
                      "the map of class 3 at [2, 0] is the highest of the three probabilities, σ(2) = 0.881: max, not mean "
                      "or sum"))

        x = torch.full((a * k, h, w), -200.0)
        x[1 * k + 2, 0, 1], x[0 * k + 2, 0, 1], x[2 * k + 0, 3, 2], x[1 * k + 1] = 200.0, -30.0, 30.0, -30.0
        cases.append(("saturated logits (±30, ±200)", x, a, k, "σ(200) = 1 and σ(-200) = 0: torch.sigmoid handles any logit"))

        a, k, h, w = 9, 5, 6, 7
        x = torch.randn(a * k, h, w, generator=torch.Generator().manual_seed(3)) * 3
        cases.append(("random logits, A = 9 anchors, K = 5 classes, a 6 x 7 map", x, a, k,
                      f"the max over the 9 anchors of σ(logit), for each class and location. {_LAYOUT}"))
        grid = dict(row_name="row", col_name="column")
        c.run_cases(fn, [Case(name, (x, a, k), _reference(x, a, k), hint, _mistakes(x, a, k), grid, _ERRORS)
                         for name, x, a, k, hint in cases], read=_read_map)

    return Checker.run("class heat map", body)
