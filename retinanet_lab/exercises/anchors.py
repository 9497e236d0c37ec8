"""Checks for the anchors & matching lesson (paper section 4, "Anchors"): the shapes of one level's anchors,
and the rule that makes each anchor foreground, background or ignored.

`check_anchor_shapes`: (width, height) of every (scale, aspect ratio) pair for one base size, area
(size · scale)², ratio = height / width. The cases add one thing at a time (a tall ratio, a wide ratio, a
scale, two ratios, every combination of scales and ratios), on asymmetric ratio sets so that an inverted ratio
shows, and scales other than 1 so that a scale applied to the area shows; then the paper's 9 anchors on P3 (no
rounding: 40.32, not 40) and random sizes against `retinanet_lab.anchors.anchor_shapes`. Rows may come in any
order: they are compared sorted by (width, height).

`check_assign_anchors`: the matching rule on an IoU matrix (G boxes, A anchors), as
`retinanet_lab.matching.assign_from_iou` (itself tested against torchvision's `Matcher`): IoU >= 0.5
foreground (the best box's index), < 0.4 background (-1), in between ignored (-2); with `allow_low_quality`
every box also claims its best anchor(s), ties included, if that IoU > 0, and the claimed anchor is matched to
its *own* best box (torchvision's `Matcher` and Detectron do so). One case per rule: IoU exactly 0.5, exactly
0.4, 0.45, an anchor whose best box is box 1, the thresholds as arguments, a low-quality claim with the flag
on and off, ties, a box with IoU 0 everywhere, a claimed anchor whose best box is another box, an image
without boxes (G = 0); then random IoU matrices with G != A.
"""

from __future__ import annotations

import math

import torch

from ..anchors import anchor_shapes
from ..matching import BACKGROUND, IGNORE, assign_from_iou
from ._check import Case, Checker, CheckResult, fmt

__all__ = ["check_anchor_shapes", "check_assign_anchors"]

WH = ("w", "h")


# ---- anchor shapes --------------------------------------------------------------------------------------
def _sorted_rows(t: torch.Tensor) -> torch.Tensor:
    """Rows of an (n, 2) tensor sorted by (w, h), rounded to 1e-3 for the order only (float32 noise can't reorder)."""
    t = t.detach().double()
    if t.dim() != 2 or t.shape[1] != 2 or t.shape[0] < 2:
        return t
    rows = t.tolist()
    order = sorted(range(len(rows)), key=lambda i: (round(rows[i][0], 3), round(rows[i][1], 3)))
    return t[order]


def _shapes(pairs, side=lambda size, s: size * s, wh=None) -> torch.Tensor:
    """(n, 2) (w, h) for (size, scale, ratio) triples, with a student's side length and (w, h) formulas."""
    wh = wh or (lambda a, r: (a / math.sqrt(r), a * math.sqrt(r)))
    return torch.tensor([list(wh(side(size, s), r)) for size, s, r in pairs], dtype=torch.float64).reshape(-1, 2)


def _shape_mistakes(size: float, scales, ratios) -> dict:
    every = [(size, s, r) for r in ratios for s in scales]
    right = _shapes(every)
    m = {
        "ratio_inverted": (_shapes(every, wh=lambda a, r: (a * math.sqrt(r), a / math.sqrt(r))),
                           "width and height are swapped: the aspect ratio is height / width, so a ratio of 4 is a tall "
                           "anchor, w = size / √ratio and h = size · √ratio (or your columns are (h, w): return (w, h))"),
        "no_sqrt": (_shapes(every, wh=lambda a, r: (a / r, a * r)),
                    "w = size / ratio and h = size · ratio give h / w = ratio², not the ratio: split the ratio between "
                    "the two sides, w = size / √ratio and h = size · √ratio"),
        "area_not_preserved": (_shapes(every, wh=lambda a, r: (a, a * r)),
                               "you kept the width and stretched the height: h / w is right, but the area is no longer "
                               "size². Split the ratio between both sides: w = size / √ratio, h = size · √ratio"),
        "area_not_preserved_w": (_shapes(every, wh=lambda a, r: (a / r, a)),
                                 "you kept the height and shrank the width: h / w is right, but the area is no longer "
                                 "size². Split the ratio between both sides: w = size / √ratio, h = size · √ratio"),
        "scale_on_area": (_shapes(every, side=lambda size, s: size * math.sqrt(s)),
                          "a scale multiplies the anchor's side (its area by scale²): side = size · scale, not "
                          "size · √scale"),
        "size_as_area": (_shapes(every, side=lambda size, s: math.sqrt(size * s)),
                         "size is the anchor's side, the square root of its area: area = (size · scale)², so the "
                         "side is size · scale (you took √(size · scale))"),
        "truncated": (right.trunc(), "no rounding: return the exact width and height (e.g. 18.48, not 18); drop int() "
                                     "or .long()"),
        "truncated_sizes": (_shapes(every, side=lambda size, s: float(int(size * s))),
                            "you truncated size · scale to an int (torchvision does that: 40 instead of 40.32); here "
                            "keep the exact side size · scale"),
        "rounded": (right.round(), "no rounding: return the exact width and height (e.g. 18.48, not 18); drop round()"),
        "zip": (_shapes([(size, s, r) for s, r in zip(scales, ratios)]),
                "you paired the i-th scale with the i-th ratio (zip): there is one anchor for *every* combination, "
                "len(aspect_ratios) · len(scales) of them (two nested loops, or broadcast ratios[:, None] with "
                "scales[None, :])"),
        "ratios_only": (_shapes([(size, 1.0, r) for r in ratios]),
                        "one anchor per aspect ratio only: the scales are missing. Make one anchor for every (scale, "
                        "ratio) pair"),
        "scales_only": (_shapes([(size, s, 1.0) for s in scales]),
                        "one square anchor per scale only: the aspect ratios are missing. Make one anchor for every "
                        "(scale, ratio) pair"),
        "half": (right / 2, "those are half-widths and half-heights (what the corners are built from): return the full "
                            "width and height"),
    }
    return {k: (_sorted_rows(v), text) for k, (v, text) in m.items()}


def _read_shapes(c: Checker, case: Case, got: torch.Tensor) -> torch.Tensor:
    """The rows sorted; first, corners instead of (w, h), the areas, and the (2, A) transpose are named."""
    t, want = got.detach(), case.want
    a = want.shape[0]

    def same(x):
        return x.shape == want.shape and bool(torch.allclose(_sorted_rows(x), want, rtol=1e-4, atol=1e-4))

    if t.dim() == 2 and t.shape == (a, 4) and same(t[:, 2:] - t[:, :2]):
        c.fail(f"{case.name}: you returned corners (x1, y1, x2, y2), shape {tuple(t.shape)}; return each anchor's (width, "
               f"height), shape ({a}, 2)", "corners")
    if t.dim() == 1 and t.numel() == a and t.is_floating_point() and bool(torch.allclose(
            t.double().sort().values, (want[:, 0] * want[:, 1]).sort().values, rtol=1e-4, atol=1e-4)):
        c.fail(f"{case.name}: you returned each anchor's area w · h, shape {tuple(t.shape)}; return the width and the height "
               f"as two columns, shape ({a}, 2)", "areas")
    if t.dim() == 2 and t.shape == (2, a) and not same(t) and same(t.T):
        c.fail(f"{case.name}: your answer has shape {tuple(t.shape)}: one row of widths and one of heights. Return one row per "
               f"anchor, ({a}, 2): stack along dim=1 (torch.stack([w, h], dim=1))", "transposed")
    return _sorted_rows(t)


def check_anchor_shapes(fn) -> CheckResult:
    """Check `fn(size, scales, aspect_ratios) -> (len(aspect_ratios) * len(scales), 2)` of (width, height)."""

    def body(c: Checker):
        p3 = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
        cases = [
            ("size 32, scale 1, ratio 1: one square anchor", 32.0, (1.0,), (1.0,),
             "a square anchor of size 32 is 32 x 32: area (size · scale)² = 1024"),
            ("size 32, ratio 4: a tall anchor", 32.0, (1.0,), (4.0,),
             "ratio = height / width = 4 at area 32² = 1024: w = 32 / √4 = 16, h = 32 · √4 = 64"),
            ("size 32, ratio 0.25: a wide anchor", 32.0, (1.0,), (0.25,),
             "ratio = height / width = 0.25 at area 1024: w = 32 / √0.25 = 64, h = 32 · √0.25 = 16"),
            ("size 32, scale 3: a bigger square", 32.0, (3.0,), (1.0,),
             "a scale multiplies the side: 32 · 3 = 96, a 96 x 96 anchor (area 9216)"),
            ("size 32, ratios (1, 4): one anchor per ratio", 32.0, (1.0,), (1.0, 4.0),
             "one anchor per aspect ratio: 32 x 32 and 16 x 64"),
            ("size 32, scales (1, 2) x ratios (0.25, 1, 3): every combination", 32.0, (1.0, 2.0), (0.25, 1.0, 3.0),
             "6 anchors, one for each (scale, ratio) pair: w = 32 · scale / √ratio, h = 32 · scale · √ratio"),
            ("the paper's 9 anchors on P3: size 32, scales 2^(0, 1/3, 2/3), ratios (0.5, 1, 2)", 32.0, p3, (0.5, 1.0, 2.0),
             "sides 32, 40.32 and 50.80 (32 · 2^(1/3) = 40.32: no rounding), each at ratios 1:2, 1:1, 2:1"),
            ("size 57.3, 4 scales x 2 ratios (random-looking numbers)", 57.3, (0.7, 1.3, 1.9, 2.2), (0.3, 1.7),
             "w = size · scale / √ratio, h = size · scale · √ratio for all 8 (scale, ratio) pairs"),
        ]
        sorted_note = " (rows compared sorted by (w, h): any order is fine)"
        c.run_cases(fn, [Case(name + (sorted_note if len(scales) * len(ratios) > 1 else ""), (size, scales, ratios),
                              _sorted_rows(anchor_shapes([size * s for s in scales], ratios, dtype=torch.float64)), hint,
                              _shape_mistakes(size, scales, ratios), dict(columns=WH, row_name="anchor"))
                         for name, size, scales, ratios, hint in cases], read=_read_shapes)

    return Checker.run("anchor shapes", body)


# ---- assigning anchors --------------------------------------------------------------------------------
def _assign(iou: torch.Tensor, fg: float, bg: float, allow: bool, *, ge: bool = True, lt: bool = True,
            ignored: str = "ignore", ties: bool = True, guard: bool = True, own_best: bool = True) -> torch.Tensor:
    """The matching rule with the variations students write; iou (G, A) -> (A,) int64."""
    g, a = iou.shape
    if g == 0 or a == 0:
        return torch.full((a,), BACKGROUND, dtype=torch.int64)
    best, arg = iou.amax(dim=0), iou.argmax(dim=0)  # (amax + argmax: max(dim=) can be slow on a busy CPU)
    is_fg = best >= fg if ge else best > fg
    is_bg = best < bg if lt else best <= bg
    other = {"ignore": torch.full_like(arg, IGNORE), "background": torch.full_like(arg, BACKGROUND), "foreground": arg}[ignored]
    index = torch.where(is_fg, arg, other)
    index = torch.where(is_bg, torch.full_like(arg, BACKGROUND), index)
    if allow:
        per_box = iou.amax(dim=1, keepdim=True)  # (G, 1)
        if ties:
            claims = iou == per_box
        else:
            claims = torch.zeros_like(iou, dtype=torch.bool)
            claims[torch.arange(g), iou.argmax(dim=1)] = True
        if guard:
            claims &= per_box > 0
        for box in range(g):  # the claiming box (the last one wins), or the anchor's own best box
            index = torch.where(claims[box], arg if own_best else torch.full_like(arg, box), index)
    return index


def _assign_mistakes(iou: torch.Tensor, fg: float, bg: float, allow: bool) -> dict:
    """iou in the dtype the student gets (float32): thresholds compare in that precision, as the student's code does."""
    right = _assign(iou, fg, bg, allow)
    m = {
        "gt_at_fg": (_assign(iou, fg, bg, allow, ge=False),
                     f"an anchor at IoU exactly {fmt(fg)} is foreground: the rule is IoU >= fg_iou, not >"),
        "le_at_bg": (_assign(iou, fg, bg, allow, lt=False),
                     f"an anchor at IoU exactly {fmt(bg)} is ignored, not background: background is IoU < bg_iou "
                     f"(strictly), not <="),
        "ignored_as_background": (_assign(iou, fg, bg, allow, ignored="background"),
                                  f"anchors with IoU in [{fmt(bg)}, {fmt(fg)}) are *ignored* (IGNORE = -2: no loss at "
                                  f"all), not background (-1)"),
        "ignored_as_foreground": (_assign(iou, fg, bg, allow, ignored="foreground"),
                                  f"anchors with IoU in [{fmt(bg)}, {fmt(fg)}) are ignored (-2), not foreground: "
                                  f"foreground needs IoU >= fg_iou = {fmt(fg)}"),
        "wrong_axis": (_assign(iou.T, fg, bg, allow),
                       "you took the max over the wrong axis: iou is (G boxes, A anchors), and each *anchor* needs its "
                       "best box: iou.max(dim=0) gives (A,) values and box indices"),
        "hardcoded_thresholds": (_assign(iou, 0.5, 0.4, allow),
                                 f"use the thresholds you are given (here fg_iou = {fmt(fg)}, bg_iou = {fmt(bg)}), not "
                                 f"0.5 and 0.4 written in the code"),
        "no_low_quality": (_assign(iou, fg, bg, False),
                           "with allow_low_quality=True every box also claims the anchor(s) it overlaps most, even "
                           "below fg_iou (matched to its own best box), so that an object rarely goes without a positive anchor"),
        "low_quality_always": (_assign(iou, fg, bg, True),
                               "allow_low_quality=False: no low-quality matches; only IoU >= fg_iou makes foreground"),
        "zero_iou_claims": (_assign(iou, fg, bg, allow, guard=False),
                            "a box whose best IoU is 0 overlaps no anchor at all: it claims nothing (otherwise its "
                            "'best' anchors are all the anchors, at IoU 0). Keep only claims with IoU > 0"),
        "no_ties": (_assign(iou, fg, bg, allow, ties=False),
                    "a box claims *every* anchor where its IoU equals its maximum (ties included): compare iou with the "
                    "per-box max (iou == iou.max(dim=1, keepdim=True).values) instead of taking one argmax"),
        "claimer_box": (_assign(iou, fg, bg, allow, own_best=False),
                        "a claimed anchor is matched to its *own* best box (iou.max(dim=0)'s index), not to the box "
                        "that claimed it: torchvision's Matcher and Detectron do so"),
        "labels_01": ((right >= 0).long(), "return the matched box's index for foreground anchors (0..G-1), -1 for "
                                           "background and -2 for ignored, not 1 / 0 labels"),
        "detectron_labels": (torch.where(right >= 0, 1, torch.where(right == IGNORE, -1, 0)),
                             "those are labels 1 / 0 / -1 (foreground / background / ignored, Detectron2's match_labels): "
                             "return the box index for foreground, BACKGROUND = -1, IGNORE = -2"),
    }
    return m


def _read_assignment(c: Checker, case: Case, got: torch.Tensor) -> torch.Tensor:
    """A boolean mask, float indices and an empty answer for an image without boxes are named before the comparison."""
    t, want, iou = got.detach(), case.want, case.args[0]
    if t.dtype == torch.bool:
        c.fail(f"{case.name}: you returned a boolean mask{' (foreground)' if torch.equal(t, want >= 0) else ''}: return "
               "int64 box indices for foreground anchors, -1 for background and -2 for ignored", "bool_mask")
    if t.is_floating_point() and t.shape == want.shape and bool((t.double() == want.double()).all()):
        c.fail(f"{case.name}: the right values with dtype {t.dtype}: return int64 (torch.long) box indices; the training "
               "step indexes the boxes with them (gt_boxes[matched]), and float indices cannot index", "float_indices")
    if iou.shape[0] == 0 and t.shape != want.shape and t.numel() == 0:
        c.fail(f"{case.name}: your answer is empty, shape {tuple(t.shape)}; return one value per anchor, ({iou.shape[1]},), "
               "even without boxes: every anchor is background (-1)", "empty_image")
    return got


_EMPTY = {"Expected reduction dim": ("empty_image",
                                     "an image without boxes: iou is (0, A), and a max over the boxes' dimension has "
                                     "nothing to reduce. Handle it first: if iou.shape[0] == 0, every anchor is "
                                     "background (-1)")}


def check_assign_anchors(fn) -> CheckResult:
    """Check `fn(iou (G, A), fg_iou=0.5, bg_iou=0.4, allow_low_quality=True) -> (A,) int64`: box index, -1 or -2."""

    def body(c: Checker):
        t = torch.tensor
        cases = [
            ("one box, IoU 0.9, 0.1, 0.45, 0.6: the three outcomes (allow_low_quality=False)", t([[0.9, 0.1, 0.45, 0.6]]),
             0.5, 0.4, False, "IoU >= 0.5: foreground, matched to box 0 (its index); IoU < 0.4: background (-1); "
             "0.4 <= 0.45 < 0.5: ignored (-2, no loss at all)"),
            ("an anchor at IoU exactly 0.5 (allow_low_quality=False)", t([[0.5, 0.1]]), 0.5, 0.4, False,
             "foreground is IoU >= 0.5: 0.5 itself is foreground"),
            ("an anchor at IoU exactly 0.4 (allow_low_quality=False)", t([[0.4, 0.9]]), 0.5, 0.4, False,
             "background is IoU < 0.4: 0.4 itself is ignored (-2)"),
            ("two boxes: anchor 0's best box is box 1 (allow_low_quality=False)", t([[0.1, 0.7, 0.0], [0.8, 0.2, 0.0]]),
             0.5, 0.4, False, "iou[g, a] is box g with anchor a: anchor 0 overlaps box 1 most (0.8), anchor 1 box 0 (0.7); "
             "return the index of each anchor's best box"),
            ("fg_iou = 0.6, bg_iou = 0.3 (allow_low_quality=False)", t([[0.55, 0.35, 0.25, 0.65]]), 0.6, 0.3, False,
             "use the thresholds passed in: 0.65 >= 0.6 foreground, 0.35 and 0.55 ignored, 0.25 < 0.3 background"),
            ("a box whose best IoU is 0.3 (allow_low_quality=True)", t([[0.3, 0.1, 0.2]]), 0.5, 0.4, True,
             "the box overlaps no anchor by 0.5, so it claims its best anchor (IoU 0.3): that anchor is foreground"),
            ("the same box with allow_low_quality=False", t([[0.3, 0.1, 0.2]]), 0.5, 0.4, False,
             "without low-quality matches, IoU 0.3 < 0.4 is background"),
            ("a box with IoU 0.3 at two anchors: ties (allow_low_quality=True)", t([[0.3, 0.1, 0.3]]), 0.5, 0.4, True,
             "a box claims every anchor where its IoU equals its maximum: both anchors at 0.3"),
            ("a box with IoU 0 at every anchor (allow_low_quality=True)", t([[0.0, 0.0, 0.0]]), 0.5, 0.4, True,
             "a box that overlaps no anchor claims nothing: every anchor stays background"),
            ("a claimed anchor whose best box is another box (allow_low_quality=True)", t([[0.3, 0.0], [0.35, 0.6]]),
             0.5, 0.4, True, "box 0 claims anchor 0 (its best, IoU 0.3), but anchor 0 overlaps box 1 more (0.35): it "
             "becomes foreground matched to box 1, its own best box (torchvision's Matcher, Detectron)"),
            ("an image without boxes: iou is (0, 4)", torch.zeros(0, 4), 0.5, 0.4, True,
             "no box: every anchor is background (-1)"),
        ]
        g = torch.Generator().manual_seed(0)
        for nb, na, allow in [(3, 7, True), (5, 4, False), (4, 9, True)]:
            iou = torch.rand(nb, na, generator=g, dtype=torch.float64) ** 1.5 * (torch.rand(nb, na, generator=g) > 0.2)
            cases.append((f"{nb} boxes, {na} anchors, random IoU (allow_low_quality={allow})", iou.float(),
                          0.5, 0.4, allow, "each anchor: its best box's index if IoU >= 0.5, -1 below 0.4, -2 in between; "
                          "then each box's best anchor(s) if allow_low_quality"))
        c.run_cases(fn, [Case(name, (iou.float(), fg, bg, allow), assign_from_iou(iou.float()[None], None, fg, bg, allow).index[0],
                              hint, _assign_mistakes(iou.float(), fg, bg, allow), dict(exact_dtype="int", row_name="anchor"),
                              _EMPTY) for name, iou, fg, bg, allow, hint in cases], read=_read_assignment)

    return Checker.run("assigning anchors", body)
