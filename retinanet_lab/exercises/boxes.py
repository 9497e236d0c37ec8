"""Checks for lesson 01: IoU, box encoding and box decoding (paper section 4; the box coding of R-CNN, as in
Faster R-CNN: dx = (x - x_a) / w_a, dy = (y - y_a) / h_a, dw = log(w / w_a), dh = log(h / h_a)).

Every hand-made case moves one thing at a time (a box shifted only sideways, only down, only wider, only taller;
for IoU: identical, apart in x, apart in x and y, touching, half overlap, inside, over a corner) on an anchor
that is not square, so that width and height, x and y cannot stand in for each other unnoticed. Then N > 1
boxes, N != M where the answer is a matrix, and random boxes against the package's functions (torchvision's
box_iou for IoU). Each case carries a catalogue of typical mistakes (`_iou_mistakes`, `_encode_mistakes`,
`_decode_mistakes`), narrowed case by case by `Checker.run_cases` (see `_check`). The mutation suite is
tests/test_exercises_boxes_focal.py.
"""

from __future__ import annotations

import math

import torch

from ..boxes import decode_boxes, encode_boxes
from ._check import Case, Checker, CheckResult

__all__ = ["check_iou", "check_encode_boxes", "check_decode_boxes"]

DELTAS = ("dx", "dy", "dw", "dh")
_DELTA_FORMULAS = ("(x - x_a) / w_a, the horizontal shift of the centre in anchor widths",
                   "(y - y_a) / h_a, the vertical shift of the centre in anchor heights",
                   "log(w / w_a), the log of the width ratio", "log(h / h_a), the log of the height ratio")
CORNERS = ("x1", "y1", "x2", "y2")


def _random_boxes(n: int, seed: int, spread: float = 50.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * spread
    wh = 4 + torch.rand(n, 2, generator=g, dtype=torch.float64) * 40
    return torch.cat([xy, xy + wh], dim=1)


def _transposed(want: torch.Tensor, what: str) -> tuple:
    """The catalogue entry of an answer that is the transpose of the right one."""
    return want.transpose(0, 1), what


# ---- IoU ------------------------------------------------------------------------------------------------
def _iou_parts(b1, b2, plus_one: float = 0.0, enclosing: bool = False, xywh: bool = False, clamp: str = "sides"):
    """Intersection (N, M), area1 (N,), area2 (M,) with the variations students write."""
    if xywh:  # boxes read as (x, y, w, h)
        b1 = torch.cat([b1[:, :2], b1[:, :2] + b1[:, 2:]], 1)
        b2 = torch.cat([b2[:, :2], b2[:, :2] + b2[:, 2:]], 1)
    area1 = (b1[:, 2] - b1[:, 0] + plus_one) * (b1[:, 3] - b1[:, 1] + plus_one)
    area2 = (b2[:, 2] - b2[:, 0] + plus_one) * (b2[:, 3] - b2[:, 1] + plus_one)
    if enclosing:
        lt = torch.minimum(b1[:, None, :2], b2[None, :, :2])
        rb = torch.maximum(b1[:, None, 2:], b2[None, :, 2:])
    else:
        lt = torch.maximum(b1[:, None, :2], b2[None, :, :2])
        rb = torch.minimum(b1[:, None, 2:], b2[None, :, 2:])
    wh = rb - lt + plus_one
    if clamp == "sides":
        wh = wh.clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    if clamp == "product":
        inter = inter.clamp(min=0)
    return inter, area1[:, None], area2[None, :]


def _iou_mistakes(b1: torch.Tensor, b2: torch.Tensor) -> dict:
    inter, a1, a2 = _iou_parts(b1, b2)
    union = a1 + a2 - inter
    m = {
        "no_clamp": ((lambda i, u: i / u)(*(lambda i, a, b: (i, a + b - i))(*_iou_parts(b1, b2, clamp="none"))),
                     "boxes that do not overlap must have IoU 0, but you get a non-zero value: the intersection's width "
                     "and height are negative there. Clamp each of them at 0 before multiplying"),
        "clamp_product": ((lambda i, a, b: i / (a + b - i))(*_iou_parts(b1, b2, clamp="product")),
                          "boxes apart in both x and y get a positive intersection: (-w) * (-h) > 0. Clamp the width and "
                          "the height at 0 each, not their product"),
        "union_no_minus": (inter / (a1 + a2),
                           "the union is area1 + area2 - intersection: you count the intersection twice (a box with "
                           "itself has IoU 1, not 0.5)"),
        "intersection_only": (inter, "that is the intersection's area: divide it by the union's area"),
        "over_smaller": (inter / torch.minimum(a1, a2),
                         "you divided the intersection by the smaller box's area (that is 'intersection over minimum', "
                         "1 for any box inside another): IoU divides by the union"),
        "over_area1": (inter / a1.expand_as(inter), "you divided by the area of the box from boxes1 only: IoU divides by the union"),
        "over_area2": (inter / a2.expand_as(inter), "you divided by the area of the box from boxes2 only: IoU divides by the union"),
        "union_over_inter": (union / inter, "IoU is intersection / union, not union / intersection (which is "
                             "infinite for boxes that do not overlap)"),
        "plus_one": ((lambda i, a, b: i / (a + b - i))(*_iou_parts(b1, b2, plus_one=1.0)),
                     "you added 1 to widths and heights (the old '+1 pixel' convention of VOC and Detectron). Here "
                     "coordinates are continuous: width = x2 - x1"),
        "xywh": ((lambda i, a, b: i / (a + b - i))(*_iou_parts(b1, b2, xywh=True)),
                 "you read the boxes as (x, y, width, height); they are corners (x1, y1, x2, y2)"),
        "enclosing": ((lambda i, a, b: i / (a + b - i))(*_iou_parts(b1, b2, enclosing=True)),
                      "you took the smallest box that encloses both (min of the top-left corners, max of the bottom-right); "
                      "the intersection is max of the top-left corners and min of the bottom-right"),
        "transposed": _transposed(inter / union, "your answer is (M, N), boxes2 along the rows: the rows must be the boxes "
                                  "of boxes1 and the columns those of boxes2 (boxes1[:, None, :] against boxes2[None, :, :])"),
    }
    return m


def check_iou(fn) -> CheckResult:
    """Check `fn(boxes1 (N, 4), boxes2 (M, 4)) -> (N, M)`, the IoU of every pair, boxes as (x1, y1, x2, y2)."""

    def body(c: Checker):
        square = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
        hand_made = [
            ("a box with itself", square, square, "the IoU of a box with itself is 1: intersection = union = its area"),
            ("two boxes side by side, not touching", square, torch.tensor([[20.0, 0.0, 30.0, 10.0]]),
             "boxes that do not overlap have IoU 0"),
            ("two boxes apart in x and in y", square, torch.tensor([[20.0, 20.0, 30.0, 30.0]]), "boxes that do not overlap have IoU 0"),
            ("two boxes that share only an edge", square, torch.tensor([[10.0, 0.0, 20.0, 10.0]]),
             "boxes that touch along an edge overlap in an area of 0: IoU 0"),
            ("half overlap", square, torch.tensor([[5.0, 0.0, 15.0, 10.0]]),
             "[0,0,10,10] and [5,0,15,10] overlap in 5 x 10 = 50 px² of a union of 100 + 100 - 50 = 150 px²: IoU = 1/3"),
            ("a small box inside a big one", torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.tensor([[5.0, 5.0, 15.0, 15.0]]),
             "a 10 x 10 box inside a 20 x 20 box: intersection 100, union 400, IoU 0.25"),
            ("a small box over a corner of a big one", torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[5.0, 5.0, 25.0, 25.0]]),
             "[0,0,10,10] and [5,5,25,25]: intersection 5 x 5 = 25, union 100 + 400 - 25 = 475"),
        ]
        cases = [Case(name, (b1, b2), _reference_iou(b1, b2), hint, _iou_mistakes(b1, b2), dict(pairwise=True), _BROADCAST)
                 for name, b1, b2, hint in hand_made]
        matrix = dict(pairwise=True, row_name="boxes1 box", col_name="boxes2 box")
        # N != M, hand-made: every row and column means something
        b1 = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 20.0, 20.0], [30.0, 5.0, 40.0, 45.0], [2.0, 3.0, 8.0, 9.0]])
        b2 = torch.tensor([[5.0, 5.0, 25.0, 25.0], [0.0, 0.0, 10.0, 10.0], [35.0, 0.0, 45.0, 10.0]])
        cases.append(Case("4 boxes against 3 (the answer is 4 x 3)", (b1, b2), _reference_iou(b1, b2),
                           "row i is boxes1[i] against every box of boxes2", _iou_mistakes(b1, b2), matrix, _BROADCAST))
        b1, b2 = _random_boxes(7, 0), _random_boxes(5, 1)
        cases.append(Case("7 random boxes against 5", (b1.float(), b2.float()), _reference_iou(b1, b2),
                           "check the order x1, y1, x2, y2 and the union", _iou_mistakes(b1, b2), matrix, _BROADCAST))
        c.run_cases(fn, cases)

    return Checker.run("IoU", body)


_BROADCAST = {"must match the size": ("not_broadcast",
                                      "boxes1 has N boxes and boxes2 has M: compare every box with every box by indexing "
                                      "boxes1[:, None, :] and boxes2[None, :, :], which broadcast to (N, M, ...)")}


def _reference_iou(b1, b2):
    from torchvision.ops import box_iou

    return box_iou(b1.double(), b2.double())


# ---- encoding -----------------------------------------------------------------------------------------
def _centre_size(b):
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return b[:, 0] + w / 2, b[:, 1] + h / 2, w, h


def _encode_mistakes(gt: torch.Tensor, an: torch.Tensor) -> dict:
    gx, gy, gw, gh = _centre_size(gt)
    ax, ay, aw, ah = _centre_size(an)
    lw, lh = torch.log(gw / aw), torch.log(gh / ah)
    s = lambda *cols: torch.stack(cols, dim=1)
    p1 = lambda b: (b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1)
    (gw1, gh1), (aw1, ah1) = p1(gt), p1(an)
    right = s((gx - ax) / aw, (gy - ay) / ah, lw, lh)
    out = {
        "no_divide": (s(gx - ax, gy - ay, lw, lh), "dx and dy are the shift of the centre *divided* by the anchor's width "
                      "and height: a move in units of the anchor's size"),
        "dy_by_width": (s((gx - ax) / aw, (gy - ay) / aw, lw, lh), "dy is divided by the anchor's width; it is the vertical "
                        "shift, so divide it by the anchor's *height*"),
        "dx_by_height": (s((gx - ax) / ah, (gy - ay) / ah, lw, lh), "dx is divided by the anchor's height; divide the "
                         "horizontal shift by the anchor's *width*"),
        "swap_wh": (s((gx - ax) / ah, (gy - ay) / aw, torch.log(gw / ah), torch.log(gh / aw)),
                    "width and height are swapped: dx and dw use the anchor's width (x2 - x1), dy and dh its height (y2 - y1)"),
        "no_log": (s((gx - ax) / aw, (gy - ay) / ah, gw / aw, gh / ah), "dw and dh are the *log* of the size ratio: "
                   "log(w / w_a), so that 0 means the same size"),
        "ratio_minus_one": (s((gx - ax) / aw, (gy - ay) / ah, gw / aw - 1, gh / ah - 1),
                            "dw and dh are log(w / w_a), not w / w_a - 1"),
        "inverted_ratio": (s((gx - ax) / aw, (gy - ay) / ah, -lw, -lh), "dw and dh have the wrong sign: log(box width / "
                           "anchor width), the box over the anchor"),
        "wrong_sign_shift": (s((ax - gx) / aw, (ay - gy) / ah, lw, lh), "dx and dy have the wrong sign: box centre minus "
                             "anchor centre (a box to the right has dx > 0)"),
        "corners": (s((gt[:, 0] - an[:, 0]) / aw, (gt[:, 1] - an[:, 1]) / ah, lw, lh),
                    "you used the top-left corners (x1, y1); dx and dy move the *centres*: x = (x1 + x2) / 2"),
        "divide_by_gt": (s((gx - ax) / gw, (gy - ay) / gh, lw, lh), "you divided by the box's width and height; divide "
                         "by the *anchor's*: the anchor is what the subnet knows"),
        "plus_one": (s((gx - ax) / aw1, (gy - ay) / ah1, torch.log(gw1 / aw1), torch.log(gh1 / ah1)),
                     "you added 1 to widths and heights (the old '+1 pixel' convention); here width = x2 - x1"),
        "xy_order": (s((gy - ay) / ah, (gx - ax) / aw, lh, lw), "the columns are in the wrong order: (dx, dy, dw, dh), "
                     "x before y"),
        "order_dw_dy": (s((gx - ax) / aw, lw, (gy - ay) / ah, lh), "the columns are in the wrong order: (dx, dy, dw, dh)"),
        "log10": (s((gx - ax) / aw, (gy - ay) / ah, lw / math.log(10), lh / math.log(10)),
                  "dw and dh use the natural log (torch.log), not log10"),
        "transposed": _transposed(right, "you stacked dx, dy, dw, dh along dim=0, which gives (4, N): stack them along "
                                  "dim=1 (torch.stack([dx, dy, dw, dh], dim=1)) so that each row is one box"),
        "concatenated": (right.t().reshape(-1), "your answer is one flat vector of 4·N numbers: torch.cat put the columns dx, "
                         "dy, dw, dh end to end. Use torch.stack([dx, dy, dw, dh], dim=1): one row per box"),
    }
    for j, (name, formula) in enumerate(zip(DELTAS, _DELTA_FORMULAS)):  # one column always 0 (a copy-paste slip)
        zero = right.clone()
        zero[:, j] = 0
        out[f"{name}_zero"] = (zero, f"{name} is 0 for every box, even where the box moved: {name} = {formula}. Look for "
                                     "a slip in that line (the same variable on both sides of the minus, or a 0 left in)")
    return out


def check_encode_boxes(fn) -> CheckResult:
    """Check `fn(gt_boxes (N, 4), anchors (N, 4)) -> deltas (N, 4)` = (dx, dy, dw, dh), one row per pair."""

    def body(c: Checker):
        anchor = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # centre (20, 40), 20 wide, 40 tall: not square
        cases = [
            ("the anchor itself", anchor.clone(), "a box equal to its anchor needs no move: all four deltas are 0"),
            ("a box moved 5 px right", torch.tensor([[15.0, 20.0, 35.0, 60.0]]),
             "dx = (x - x_a) / w_a = 5 / 20 = 0.25; nothing else moved, so dy = dw = dh = 0"),
            ("a box moved 10 px down", torch.tensor([[10.0, 30.0, 30.0, 70.0]]),
             "dy = (y - y_a) / h_a = 10 / 40 = 0.25 (the anchor is 40 px tall); dx = dw = dh = 0"),
            ("a box twice as wide, same centre", torch.tensor([[0.0, 20.0, 40.0, 60.0]]),
             "dw = log(w / w_a) = log(40 / 20) = log 2 ≈ 0.693; the centre did not move, so dx = 0"),
            ("a box half as tall, same centre", torch.tensor([[10.0, 30.0, 30.0, 50.0]]),
             "dh = log(h / h_a) = log(20 / 40) = -log 2 ≈ -0.693"),
        ]
        cols = dict(columns=DELTAS)
        cases = [Case(name, (gt, anchor), encode_boxes(gt.double(), anchor.double()), hint, _encode_mistakes(gt, anchor), cols)
                 for name, gt, hint in cases]
        gt, an = _random_boxes(6, 2), _random_boxes(6, 3)
        cases.append(Case("6 random boxes, each with its own anchor", (gt.float(), an.float()), encode_boxes(gt, an),
                           "row i encodes gt_boxes[i] against anchors[i]", _encode_mistakes(gt, an), cols))
        c.run_cases(fn, cases)

    return Checker.run("box encoding", body)


# ---- decoding -----------------------------------------------------------------------------------------
def _decode_mistakes(d: torch.Tensor, an: torch.Tensor) -> dict:
    ax, ay, aw, ah = _centre_size(an)
    dx, dy, dw, dh = d.unbind(1)
    s = lambda *cols: torch.stack(cols, dim=1)
    corners = lambda cx, cy, w, h: s(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    cx, cy, w, h = ax + dx * aw, ay + dy * ah, aw * torch.exp(dw), ah * torch.exp(dh)
    aw1, ah1 = aw + 1, ah + 1
    cx1, cy1, w1, h1 = an[:, 0] + aw1 / 2 + dx * aw1, an[:, 1] + ah1 / 2 + dy * ah1, aw1 * torch.exp(dw), ah1 * torch.exp(dh)
    return {
        "no_exp": (corners(cx, cy, aw * dw, ah * dh), "the width is w_a · exp(dw) (dw is a log), not w_a · dw"),
        "exp_plus": (corners(cx, cy, aw + torch.exp(dw), ah + torch.exp(dh)), "the width is w_a · exp(dw), a product"),
        "exp_centre": (corners(ax + torch.exp(dx) * aw, ay + torch.exp(dy) * ah, w, h),
                       "only dw and dh are logs: the centre moves by dx · w_a, without exp"),
        "centre_size": (s(cx, cy, w, h), "you returned (centre x, centre y, width, height): return the corners (x1, y1, x2, y2)"),
        "full_width": (s(cx - w, cy - h, cx + w, cy + h), "x1 and x2 are half a width from the centre: cx ∓ w / 2"),
        "dy_by_width": (corners(cx, ay + dy * aw, w, h), "dy moves the centre in units of the anchor's *height*: y = y_a + dy · h_a"),
        "swap_wh": (corners(ax + dx * ah, ay + dy * aw, ah * torch.exp(dw), aw * torch.exp(dh)),
                    "width and height are swapped: x and w use the anchor's width, y and h its height"),
        "add_deltas": (an + d, "the deltas are not added to the corners: they move the centre (in anchor units) and scale the size"),
        "from_corner": (s(an[:, 0] + dx * aw, an[:, 1] + dy * ah, an[:, 0] + dx * aw + w, an[:, 1] + dy * ah + h),
                        "dx and dy move the anchor's *centre*, not its top-left corner"),
        "plus_one": (s(cx1 - w1 / 2, cy1 - h1 / 2, cx1 + w1 / 2 - 1, cy1 + h1 / 2 - 1),
                     "you used the old '+1 pixel' convention (width = x2 - x1 + 1); here width = x2 - x1"),
        "xy_order": (corners(ax + dy * aw, ay + dx * ah, aw * torch.exp(dh), ah * torch.exp(dw)),
                     "the deltas are (dx, dy, dw, dh): column 0 moves x, column 1 moves y"),
        "corner_order": (s(cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2), "the corners go (x1, y1, x2, y2)"),
        "transposed": _transposed(corners(cx, cy, w, h), "you stacked x1, y1, x2, y2 along dim=0, which gives (4, N): stack "
                                  "them along dim=1 (torch.stack([x1, y1, x2, y2], dim=1)) so that each row is one box"),
        "concatenated": (corners(cx, cy, w, h).t().reshape(-1), "your answer is one flat vector of 4·N numbers: torch.cat put "
                         "the columns x1, y1, x2, y2 end to end. Use torch.stack([x1, y1, x2, y2], dim=1): one row per box"),
    }


def check_decode_boxes(fn) -> CheckResult:
    """Check `fn(deltas (N, 4), anchors (N, 4)) -> boxes (N, 4)` as (x1, y1, x2, y2): the inverse of encoding."""

    def body(c: Checker):
        anchor = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # centre (20, 40), 20 x 40
        cases = [
            ("zero deltas", torch.zeros(1, 4), "zero deltas leave the anchor as it is"),
            ("dx = 0.5", torch.tensor([[0.5, 0.0, 0.0, 0.0]]), "the centre moves by dx · w_a = 0.5 · 20 = 10 px right: [20, 20, 40, 60]"),
            ("dy = 0.5", torch.tensor([[0.0, 0.5, 0.0, 0.0]]), "the centre moves by dy · h_a = 0.5 · 40 = 20 px down: [10, 40, 30, 80]"),
            ("dw = log 2", torch.tensor([[0.0, 0.0, math.log(2.0), 0.0]]),
             "the width becomes w_a · exp(dw) = 40 around the same centre: [0, 20, 40, 60]"),
            ("dh = -log 2", torch.tensor([[0.0, 0.0, 0.0, -math.log(2.0)]]),
             "the height becomes h_a · exp(dh) = 20 around the same centre: [10, 30, 30, 50]"),
        ]
        cols = dict(columns=CORNERS)
        cases = [Case(name, (d, anchor), decode_boxes(d.double(), anchor.double()), hint, _decode_mistakes(d, anchor), cols)
                 for name, d, hint in cases]
        an = _random_boxes(6, 4)
        d = (torch.rand(6, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64) - 0.5) * 1.5
        cases.append(Case("6 random deltas, each with its own anchor", (d.float(), an.float()), decode_boxes(d, an),
                           "row i applies deltas[i] to anchors[i]", _decode_mistakes(d, an), cols))
        got = c.run_cases(fn, cases)
        name = "encoding your boxes gives the deltas back"
        c.compare(name, encode_boxes(torch.as_tensor(got).double(), an), d, hint="decoding must invert encoding",
                  columns=DELTAS)

    return Checker.run("box decoding", body)
