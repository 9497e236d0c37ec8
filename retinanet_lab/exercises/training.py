"""Check for the training lesson (08): how the classification loss of a batch is normalised (paper §4.1, "Focal
Loss": "the total focal loss of an image is computed as the sum of the focal loss over all ~100k anchors,
normalized by the number of anchors assigned to a ground-truth box").

The student writes `fn(loss (B, A), matched (B, A)) -> 0-d tensor`: for each image the sum of the loss over its
anchors that are not ignored (matched != -2), divided by max(1, its number of foreground anchors, matched >= 0);
then the mean over the images (the paper's text normalises each image; torchvision does exactly this, while
Detectron divides the whole batch's sum by the batch's foreground count: `normalize_loss(..., "batch")`).

The cases move one thing at a time: one image without ignored anchors (sum, then divide by the foreground
count, not by all anchors nor by the boxes), an ignored anchor with a large loss (it must not count), two
images with different foreground counts (per image, not per batch; mean, not sum), an image without any box
(max(1, 0) = 1: no division by zero), three random images of 11 anchors against the package's
`retinanet_lab.loss.normalize_loss`, and the gradient (the loss must stay in autograd's graph).
"""

from __future__ import annotations

import torch

from ..loss import normalize_loss
from ..matching import IGNORE
from ._check import Case, Checker, CheckResult, fmt

__all__ = ["check_normalized_loss"]


def _parts(loss: torch.Tensor, matched: torch.Tensor):
    """float64 loss, the not-ignored mask, the foreground mask, the background mask."""
    return loss.double(), matched != IGNORE, matched >= 0, matched == -1


def _reference(loss: torch.Tensor, matched: torch.Tensor) -> torch.Tensor:
    x, valid, fg, _ = _parts(loss, matched)
    return normalize_loss((x * valid).sum(dim=1), fg.sum(dim=1), "image")


def _mistakes(loss: torch.Tensor, matched: torch.Tensor) -> dict:
    x, valid, fg, bg = _parts(loss, matched)
    b, a = x.shape
    n_fg = fg.sum(dim=1).clamp(min=1).double()  # (B,)
    valid_sum = (x * valid).sum(dim=1)  # (B,)
    boxes = torch.tensor([max(1, len(set(m[m >= 0].tolist()))) for m in matched], dtype=torch.float64)
    has_box = fg.any(dim=1)
    empty_skipped = (valid_sum / n_fg)[has_box].mean() if bool(has_box.any()) else torch.tensor(0.0, dtype=torch.float64)
    return {
        "per_batch": (normalize_loss(valid_sum, fg.sum(dim=1), "batch"),
                      "you divided the batch's total loss by the batch's total number of foreground anchors: that is "
                      "Detectron's per-batch normaliser (loss_normalization=\"batch\" in this lab). The paper's text "
                      "normalises the loss *of each image* by that image's foreground anchors: divide each image's sum by "
                      "max(1, its own count), then take the mean over the images (as torchvision does)"),
        "divided_by_anchors": ((valid_sum / a).mean(),
                               "you divided by the number of anchors (a mean over the anchors). Divide by the number of "
                               "*foreground* anchors (matched >= 0): the ~100k easy negatives would otherwise dilute "
                               "the loss of the few objects"),
        "ignored_counted": ((x.sum(dim=1) / n_fg).mean(),
                            "you summed the loss of the ignored anchors too (matched == -2, IoU between the two "
                            "thresholds): they get no loss. Keep the anchors with matched != -2"),
        "ignored_as_foreground": ((valid_sum / (matched != -1).sum(dim=1).clamp(min=1)).mean(),
                                  "you counted the ignored anchors (matched == -2) as foreground: the foreground anchors "
                                  "are those with matched >= 0 (a box index); -1 is background, -2 ignored"),
        "ignored_counted_as_foreground": ((x.sum(dim=1) / (matched != -1).sum(dim=1).clamp(min=1)).mean(),
                                          "you treated the ignored anchors (matched == -2) as foreground: their loss is "
                                          "summed and they are counted. Foreground is matched >= 0; ignored anchors "
                                          "add nothing, neither to the sum nor to the count"),
        "divided_by_boxes": ((valid_sum / boxes).mean(),
                             "you divided by the number of boxes (distinct box indices). The paper divides by the "
                             "number of *anchors* assigned to a box: count matched >= 0, (matched >= 0).sum(dim=1)"),
        "sum_over_images": ((valid_sum / n_fg).sum(),
                            "you summed the images' normalised losses; take their mean over the images (.mean()), so "
                            "that the loss does not grow with the batch size"),
        "divided_by_background": ((valid_sum / bg.sum(dim=1).clamp(min=1)).mean(),
                                  "you divided by the number of background anchors (matched == -1); divide by the "
                                  "foreground anchors (matched >= 0)"),
        "foreground_only": (((x * fg).sum(dim=1) / n_fg).mean(),
                            "you summed the loss of the foreground anchors only: the background anchors (matched == -1) "
                            "have a classification loss too (all their targets are 0), and it is the largest part. Sum "
                            "over every anchor that is not ignored (matched != -2)"),
        "no_normalizer": (valid_sum.mean(), "you did not divide by the number of foreground anchors: divide each "
                          "image's sum by max(1, (matched >= 0).sum())"),
        "empty_image_skipped": (empty_skipped,
                                "you left the image without any box out of the mean. It still has a loss (its background "
                                "anchors'): divide it by max(1, 0) = 1 and average over all the images"),
        "per_image_values": (valid_sum / n_fg,
                             "you returned one value per image; return one number, the mean over the images of the "
                             "per-image values (.mean())"),
    }


_NAN = ("an image without any box has 0 foreground anchors: divide by max(1, count), e.g. "
        "count.clamp(min=1), so that its loss (its background anchors') is divided by 1, not by 0")


def _read_loss(c: Checker, case: Case, got: torch.Tensor) -> torch.Tensor:
    """A loss that is not finite (an image without boxes divided by 0) is named before the comparison."""
    t = got.detach()
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        c.fail(f"{case.name}: your loss is {fmt(float(t.flatten()[0]))}: {_NAN}", "no_max1")
    return got


def check_normalized_loss(fn) -> CheckResult:
    """Check `fn(loss (B, A), matched (B, A) int64) -> 0-d tensor`: per image Σ_{matched != -2} loss / max(1, N_fg),
    then the mean over the images."""

    def body(c: Checker):
        cases = []
        # counts chosen so that no wrong divisor (n + 1 = 5, matched > 0: 3) equals another count (2 boxes, 6, 10)
        loss = torch.tensor([[2.0, 0.5, 0.25, 3.0, 0.75, 1.5, 1.0, 1.5, 2.5, 1.0]])
        matched = torch.tensor([[0, -1, -1, 1, -1, 1, -1, -1, 1, -1]])
        cases.append(("one image: 4 foreground anchors (2 boxes), 6 background, none ignored", loss, matched,
                      "sum the loss of every anchor (foreground and background): 14, and divide by the number of "
                      "foreground anchors (matched >= 0): 4"))

        loss = torch.tensor([[2.0, 0.5, 50.0, 3.0, 0.75, 40.0, 1.5]])
        matched = torch.tensor([[0, -1, -2, 1, -1, -2, 0]])
        cases.append(("one image with two ignored anchors of loss 50 and 40", loss, matched,
                      "anchors with matched == -2 are ignored: they add nothing to the sum and are not foreground; here "
                      "(2 + 0.5 + 3 + 0.75 + 1.5) / 3"))

        loss = torch.tensor([[1.0, 2.0, 0.5, 0.5, 1.0, 0.0], [3.0, 1.0, 2.0, 2.0, 0.5, 1.5]])
        matched = torch.tensor([[0, -1, -1, -1, -1, -2], [0, 0, 1, -1, 1, -1]])
        cases.append(("two images, 1 and 4 foreground anchors", loss, matched,
                      "each image is divided by its own number of foreground anchors (5 / 1 and 10 / 4), then the mean "
                      "over the images: (5 + 2.5) / 2"))

        loss = torch.tensor([[1.0, 2.0, 0.5, 1.0, 1.0], [0.25, 0.5, 9.0, 0.25, 1.0]])
        matched = torch.tensor([[0, 0, -1, -1, 1], [-1, -1, -2, -1, -1]])
        cases.append(("two images, the second without any box (no foreground anchor)", loss, matched,
                      f"the second image has no box: its loss is its background anchors' sum divided by max(1, 0) = 1. {_NAN}"))

        g = torch.Generator().manual_seed(7)
        loss = torch.rand(3, 11, generator=g) * 4
        matched = torch.randint(-2, 3, (3, 11), generator=g)
        matched[0, :2] = torch.tensor([-2, 1])  # every kind in the first image
        cases.append(("3 random images of 11 anchors", loss, matched,
                      "per image: Σ loss over matched != -2, divided by max(1, number of matched >= 0); then the mean over "
                      "images"))
        c.run_cases(fn, [Case(name, (x, m), _reference(x, m), hint, _mistakes(x, m), error_hints=_ERRORS)
                         for name, x, m, hint in cases], read=_read_loss)

        name = "the gradient: d loss / d loss[b, a] = 1 / (B · max(1, N_fg of image b)), 0 for ignored anchors"
        _, valid, fg, _ = _parts(loss, matched)
        want = valid.double() / fg.sum(dim=1, keepdim=True).clamp(min=1).double() / loss.shape[0]
        c.gradient(name, fn, loss, (matched,), want, error_hints=_ERRORS,  # in-place edits of `loss` named
                   hint="each anchor that is not ignored weighs 1 / max(1, N_fg) of its image, divided by B for the mean")

    return Checker.run("normalised classification loss", body)


_ERRORS = {
    "leaf Variable that requires grad": ("in_place", "you changed `loss` in place (e.g. loss[matched == -2] = 0), which "
                                         "autograd forbids on its input: multiply by a mask, use torch.where, or work "
                                         "on loss.clone()"),
    "division by zero": ("no_max1", _NAN),
    "must match the size": ("not_broadcast", "count the foreground anchors per image with .sum(dim=1) (shape (B,)), "
                            "and divide each image's sum (B,) by its count (B,)"),
}
