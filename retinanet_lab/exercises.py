"""Exercises with automatic checks: write the lesson's function yourself, then `check_...` it.

    def my_iou(boxes1, boxes2): ...
    check_iou(my_iou)                  # specific feedback: what is wrong, and on which case
    show_solution("iou")               # a reference solution to read

Each check runs the student's function on hand-made cases first (each with its own hint) and then on
random ones against the package's reference (itself checked against torchvision by the test suite).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch

__all__ = ["CheckResult", "check_iou", "check_focal_loss", "check_encode_boxes", "check_decode_boxes", "show_solution",
           "SOLUTIONS"]


@dataclass
class CheckResult:
    """What a check found: `passed`, and one line per case (✔ or ✘ with a hint)."""

    name: str
    passed: bool = True
    lines: list[str] = field(default_factory=list)

    def ok(self, text: str) -> None:
        self.lines.append(f"✔ {text}")

    def fail(self, text: str) -> None:
        self.passed = False
        self.lines.append(f"✘ {text}")

    def __str__(self) -> str:
        verdict = "all checks passed, well done!" if self.passed else "not yet: see the first ✘ below"
        return f"{self.name}: {verdict}\n" + "\n".join("  " + line for line in self.lines)

    def __repr__(self) -> str:
        return str(self)


def _call(result: CheckResult, fn, *args):
    try:
        out = fn(*args)
    except NotImplementedError:
        result.fail("your function is not written yet (it raises NotImplementedError): replace that line with your code")
        return None
    except Exception as e:  # the student's code raised: say so, with the case
        result.fail(f"your function raised {type(e).__name__}: {e}")
        return None
    if not torch.is_tensor(out):
        result.fail(f"your function returned {type(out).__name__}; it should return a torch.Tensor")
        return None
    return out


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=tol, rtol=tol))


# ---- IoU ----------------------------------------------------------------------------------------------
def _iou_solution(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of every box of boxes1 (N, 4) with every box of boxes2 (M, 4), boxes as (x1, y1, x2, y2) -> (N, M)."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])  # (N,)
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])  # (M,)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2)
    wh = (bottom_right - top_left).clamp(min=0)  # no overlap -> 0, not negative
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


def check_iou(fn) -> CheckResult:
    """Check `fn(boxes1 (N, 4), boxes2 (M, 4)) -> (N, M)` IoU."""
    r = CheckResult("IoU")
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    cases = [
        ("a box with itself", a, a, torch.ones(1, 1), "the IoU of a box with itself is 1: intersection = union = its area"),
        ("two boxes that do not touch", a, torch.tensor([[20.0, 20.0, 30.0, 30.0]]), torch.zeros(1, 1),
         "boxes that do not overlap have IoU 0: clamp the intersection's width and height at 0 (they are negative here)"),
        ("half overlap", a, torch.tensor([[5.0, 0.0, 15.0, 10.0]]), torch.tensor([[50 / 150]]),
         "[0,0,10,10] and [5,0,15,10] overlap in 50 px² of a union of 150 px²: IoU = 1/3. Union = area1 + area2 - intersection"),
        ("a box inside another", torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.tensor([[5.0, 5.0, 15.0, 15.0]]),
         torch.tensor([[0.25]]), "a 10x10 box inside a 20x20 box: IoU = 100 / 400"),
    ]
    for name, b1, b2, want, hint in cases:
        got = _call(r, fn, b1, b2)
        if got is None:
            return r
        if got.shape != want.shape:
            r.fail(f"{name}: shape {tuple(got.shape)}, expected {tuple(want.shape)} "
                   "(one row per box of boxes1, one column per box of boxes2)")
            return r
        if not _close(got, want):
            r.fail(f"{name}: got {got.flatten()[0].item():.4f}, expected {want.item():.4f}. Hint: {hint}")
            return r
        r.ok(name)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(7, 2, generator=g) * 50
    b1 = torch.cat([xy, xy + 1 + torch.rand(7, 2, generator=g) * 40], 1)
    xy = torch.rand(5, 2, generator=g) * 50
    b2 = torch.cat([xy, xy + 1 + torch.rand(5, 2, generator=g) * 40], 1)
    got = _call(r, fn, b1, b2)
    if got is None:
        return r
    if got.shape != (7, 5):
        r.fail(f"7 boxes against 5: shape {tuple(got.shape)}, expected (7, 5): compare every pair (broadcast with [:, None] and [None, :])")
    elif not _close(got, _iou_solution(b1, b2)):
        r.fail("random boxes: some values differ from the reference (check the order x1, y1, x2, y2 and the union)")
    else:
        r.ok("35 random pairs of boxes")
    return r


# ---- focal loss -------------------------------------------------------------------------------------
def _focal_loss_solution(logits: torch.Tensor, targets: torch.Tensor, alpha: float | None = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Elementwise FL(p_t) = -α_t (1 - p_t)^γ log(p_t), stable for large logits."""
    import torch.nn.functional as F

    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # -log(p_t), without log(0)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = (1 - p_t) ** gamma * ce
    if alpha is not None:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def check_focal_loss(fn) -> CheckResult:
    """Check `fn(logits, targets, alpha, gamma) -> elementwise loss` (the paper's eq. 5)."""
    from .focal_loss import focal_loss

    r = CheckResult("focal loss")
    x = torch.tensor([-3.0, -0.5, 0.0, 0.7, 2.5])
    y = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    ce = torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none")
    checks = [
        ((x, y, None, 0.0), ce, "γ = 0 and no α is plain cross entropy: -log(p_t) with p_t = p for y = 1 and 1 - p for y = 0"),
        ((x, y, None, 2.0), focal_loss(x, y, None, 2.0), "multiply cross entropy by (1 - p_t)^γ (eq. 4)"),
        ((x, y, 0.25, 2.0), focal_loss(x, y, 0.25, 2.0),
         "α_t is α for positives (y = 1) and 1 - α for negatives (y = 0) (eq. 3); it multiplies the whole loss"),
    ]
    names = ["γ = 0, no α: cross entropy", "γ = 2: the modulating factor", "α = 0.25: the balance"]
    for name, (args, want, hint) in zip(names, checks):
        got = _call(r, fn, *args)
        if got is None:
            return r
        if got.shape != want.shape:
            r.fail(f"{name}: shape {tuple(got.shape)}, expected {tuple(want.shape)}: return the loss of every element (no sum or mean)")
            return r
        if not _close(got, want):
            r.fail(f"{name}: got {[round(v, 4) for v in got.tolist()]}, expected {[round(v, 4) for v in want.tolist()]}. Hint: {hint}")
            return r
        r.ok(name)
    pt9 = torch.tensor([math.log(9.0)])  # p = 0.9 for a positive
    got = _call(r, fn, pt9, torch.ones(1), None, 2.0)
    if got is None:
        return r
    ratio = float(_ce_at(pt9) / got) if float(got) > 0 else math.inf
    if abs(ratio - 100) > 0.5:
        r.fail(f"at p_t = 0.9 with γ = 2 the focal loss should be 100x below cross entropy (section 3.2); yours is {ratio:.1f}x")
        return r
    r.ok("p_t = 0.9, γ = 2: 100x less than cross entropy, as the paper says")
    big = torch.tensor([-200.0, 200.0])
    got = _call(r, fn, big, torch.tensor([1.0, 0.0]), 0.25, 2.0)
    if got is None:
        return r
    if not torch.isfinite(got).all():
        r.fail("logits of ±200 give inf or NaN: compute -log(p_t) from the logits (F.binary_cross_entropy_with_logits or "
               "F.logsigmoid), not as torch.log(torch.sigmoid(x)), which is log(0) there")
        return r
    r.ok("stable for saturated logits (±200)")
    return r


def _ce_at(logit: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))


# ---- box coding -------------------------------------------------------------------------------------
def _encode_solution(gt_boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Deltas (dx, dy, dw, dh) that move each anchor (N, 4) onto its box (N, 4)."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    gw, gh = gt_boxes[:, 2] - gt_boxes[:, 0], gt_boxes[:, 3] - gt_boxes[:, 1]
    gx, gy = gt_boxes[:, 0] + gw / 2, gt_boxes[:, 1] + gh / 2
    return torch.stack([(gx - ax) / aw, (gy - ay) / ah, torch.log(gw / aw), torch.log(gh / ah)], dim=1)


def _decode_solution(deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Boxes (N, 4) from deltas (N, 4) applied to anchors (N, 4): the inverse of encoding."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    cx, cy = ax + deltas[:, 0] * aw, ay + deltas[:, 1] * ah
    w, h = aw * torch.exp(deltas[:, 2]), ah * torch.exp(deltas[:, 3])
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


def check_encode_boxes(fn) -> CheckResult:
    """Check `fn(gt_boxes (N, 4), anchors (N, 4)) -> deltas (N, 4)` = (dx, dy, dw, dh)."""
    r = CheckResult("box encoding")
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), 10 x 20
    cases = [
        ("the anchor itself", anchor, torch.zeros(1, 4), "a box equal to its anchor needs no move: all four deltas are 0"),
        ("a shifted box", torch.tensor([[5.0, 0.0, 15.0, 20.0]]), torch.tensor([[0.5, 0.0, 0.0, 0.0]]),
         "dx is the shift of the centre divided by the anchor's width: 5 / 10 = 0.5"),
        ("a box twice as wide", torch.tensor([[-5.0, 0.0, 15.0, 20.0]]), torch.tensor([[0.0, 0.0, math.log(2.0), 0.0]]),
         "dw = log(box width / anchor width) = log 2; the centre has not moved"),
        ("a taller box", torch.tensor([[0.0, -10.0, 10.0, 30.0]]), torch.tensor([[0.0, 0.0, 0.0, math.log(2.0)]]),
         "dh = log(box height / anchor height)"),
    ]
    for name, gt, want, hint in cases:
        got = _call(r, fn, gt, anchor)
        if got is None:
            return r
        if not _close(got, want):
            r.fail(f"{name}: got {[round(v, 4) for v in got.flatten().tolist()]}, expected {want.flatten().tolist()}. Hint: {hint}")
            return r
        r.ok(name)
    return r


def check_decode_boxes(fn) -> CheckResult:
    """Check `fn(deltas (N, 4), anchors (N, 4)) -> boxes (N, 4)`, the inverse of encoding."""
    r = CheckResult("box decoding")
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(6, 2, generator=g) * 50
    anchors = torch.cat([xy, xy + 4 + torch.rand(6, 2, generator=g) * 30], 1)
    deltas = (torch.rand(6, 4, generator=g) - 0.5)
    got = _call(r, fn, torch.zeros(6, 4), anchors)
    if got is None:
        return r
    if not _close(got, anchors):
        r.fail("zero deltas must give back the anchors themselves")
        return r
    r.ok("zero deltas give the anchors")
    got = _call(r, fn, deltas, anchors)
    if got is None:
        return r
    if not _close(got, _decode_solution(deltas, anchors)):
        r.fail("random deltas: wrong boxes. Hint: width = anchor width · exp(dw); centre x = anchor centre x + dx · anchor width")
        return r
    if not _close(_encode_solution(got, anchors), deltas):
        r.fail("encoding your boxes does not give back the deltas: decoding must invert encoding")
        return r
    r.ok("random deltas; encoding your boxes gives the deltas back")
    return r


SOLUTIONS = {"iou": _iou_solution, "focal_loss": _focal_loss_solution, "encode_boxes": _encode_solution,
             "decode_boxes": _decode_solution}


def show_solution(name: str) -> str:
    """The source of a reference solution (print it, or let the notebook show it as code)."""
    if name not in SOLUTIONS:
        raise ValueError(f"no solution named {name!r}; choose from {sorted(SOLUTIONS)}")
    return inspect.getsource(SOLUTIONS[name])
