"""Checks for the lesson "from logits to detections" (paper section 4.1, "Inference"): on each pyramid level
keep at most the 1000 top-scoring predictions whose score σ(logit) exceeds 0.05, decode their boxes, merge
the levels and apply non-maximum suppression at IoU 0.5.

`check_select_candidates`: one image, one level, logits (A, K) -> the (anchor, class) pairs scoring above the
threshold, best first, at most top-k. The cases move one thing at a time on A = 3 anchors and K = 4 classes
(A != K, so that dividing the flat index by A instead of K, or swapping quotient and remainder, shows): one
logit above the threshold; a negative logit whose *score* passes (the threshold is on σ(x), not x); a score
exactly at the threshold (σ(0) = 0.5, exact in floating point: not kept, the test is >); two classes of one
anchor (both are detections); the order (best first); the top-k cap; nothing above the threshold; the
defaults, called as fn(logits) (0.05 between a logit of -2.5 and one of -3.5; then 1000 of 1200 outputs);
random logits against `retinanet_lab.postprocess.top_candidates`, which the package's post-processing uses.
Taking the top-k before thresholding gives the same answer and is accepted. Anchor and class indices must
have an integer dtype.

`check_nms`: greedy NMS exactly as `torchvision.ops.nms`: indices of the kept boxes by decreasing score; a box
is removed when its IoU with an already *kept* higher-scoring box is > the threshold. Cases: two boxes above
the threshold (one removed), two below (both kept), a small box inside a big one (IoU, not intersection over
the smaller box), small boxes (width = x2 - x1, no "+1"), IoU exactly equal to the threshold (kept: strict >),
boxes not given in score order, a chain A-B-C where C overlaps B above the threshold but A below it (C survives
because B was removed), two separate clusters, N = 0, N = 1, random boxes against torchvision. Indices may have
any integer dtype (torchvision returns int64; int32 indexes as well); floats are refused (they cannot index), and
so are boolean masks (they lose the order by score).

Both run their cases through `Checker.run_cases` (see `_check`): a mistake that a passed case told apart from the
right answer is never named afterwards, and a wrong number of candidates or of kept boxes is said as such.
"""

from __future__ import annotations

import torch

from ..postprocess import top_candidates
from ._check import Case, Checker, CheckResult

__all__ = ["check_nms", "check_select_candidates"]


# ---- candidates -------------------------------------------------------------------------------------------
SELECT_COLUMNS = ("score", "anchor_index", "class_index")


def _reference_candidates(logits: torch.Tensor, score_thresh: float, topk: int) -> torch.Tensor:
    """The package's selection, as an (N, 3) table: score, anchor index, class index (0-based)."""
    _, anchor, cls, x = top_candidates(logits.double()[None], topk, score_thresh)
    return torch.stack([torch.sigmoid(x), anchor.double(), cls.double()], 1)


def _table(score, anchor, cls) -> torch.Tensor:
    return torch.stack([torch.as_tensor(score).double(), torch.as_tensor(anchor).double(),
                        torch.as_tensor(cls).double()], 1) if len(score) else torch.zeros(0, 3, dtype=torch.float64)


def _select_mistakes(logits: torch.Tensor, t: float, k: int) -> dict:
    x = logits.double()
    A, K = x.shape
    flat = x.flatten()
    s = torch.sigmoid(flat)
    idx = torch.arange(flat.numel())

    def pick(mask, order="desc", cap=True):
        i = idx[mask]
        if order == "desc":
            i = i[torch.argsort(s[i], descending=True, stable=True)]
        elif order == "asc":
            i = i[torch.argsort(s[i], stable=True)]
        return i[:k] if cap else i

    def table(i, anchor=None, cls=None, score=None):
        return _table(s[i] if score is None else score, i // K if anchor is None else anchor, i % K if cls is None else cls)

    right = pick(s > t)
    per_class = torch.cat([pick((s > t) & (idx % K == j)) for j in range(K)])
    per_class = per_class[torch.argsort(s[per_class], descending=True, stable=True)]
    best_cls = x.argmax(dim=1)  # one class per anchor (x.max(dim=1) is oddly slow on the CPU)
    best = x.gather(1, best_cls[:, None]).squeeze(1)
    anchors = torch.arange(A)[torch.sigmoid(best) > t]
    anchors = anchors[torch.argsort(best[anchors], descending=True, stable=True)][:k]
    return {
        "logit_thresh": (table(pick(flat > t)), "you compared the *logits* with score_thresh; the threshold is on the "
                         "score σ(logit): a logit of -1 has score 0.27 > 0.05. Threshold torch.sigmoid(logits)"),
        "ge": (table(pick(s >= t)), "a score exactly equal to score_thresh is kept; keep only scores *above* it "
               "(> score_thresh, not >=)"),
        "max_over_classes": (_table(torch.sigmoid(best[anchors]), anchors, best_cls[anchors]),
                             "you kept one class per anchor (the max over classes); every (anchor, class) pair is a "
                             "candidate: flatten the (A, K) scores and threshold all A·K of them, so one anchor can give "
                             "two detections of different classes"),
        "swapped": (table(right, anchor=right % K, cls=right // K),
                    "anchor and class are swapped: in the flattened (A·K) scores, index i is anchor i // K, class i % K"),
        "divmod_A": (table(right, anchor=right // A, cls=right % A),
                     "you divided the flat index by A (the number of anchors); the flattened row of anchor a holds its K "
                     "classes, so anchor = i // K and class = i % K (K = number of classes)"),
        "true_division": (table(right, anchor=right / K),
                          "the anchor index is a whole number: i // K (floor division), not i / K"),
        "flat_as_anchor": (table(right, anchor=right), "anchor_index is the flat index i of the A·K scores; the anchor "
                           "is i // K (and the class i % K)"),
        "unsorted": (table(pick(s > t, order=None)), "the candidates are in the order of the flattened scores; return "
                     "them best first (sort by score, descending) and keep the top-k of that order"),
        "ascending": (table(pick(s > t, order="asc")), "you sorted in increasing order (the worst first); sort by "
                      "decreasing score: torch.sort(..., descending=True) or torch.topk"),
        "topk_per_class": (table(per_class), "you kept the top-k of each class; the top-k is over all A·K scores "
                           "together (at most topk candidates in all)"),
        "no_topk": (table(pick(s > t, cap=False)), "you kept every candidate above the threshold; keep at most topk of "
                    "them (the best ones)"),
        "logits_returned": (table(right, score=flat[right]), "you returned the logits; return the scores σ(logit), "
                            "probabilities in (0, 1)"),
        "one_based": (table(right, cls=right % K + 1), "class_index is 0-based here (0..K-1): the column of the logits; "
                      "you added 1"),
    }


def _read_candidates(c: Checker, case: Case, out) -> torch.Tensor:
    """The student's (scores, anchor_index, class_index) as an (N, 3) float64 table, or fail with why not; float
    indices (on an otherwise right answer) and no candidate at all are named before the comparison."""
    name, want = case.name, case.want
    if torch.is_tensor(out):
        what = " (one (N, 3) table)" if out.dim() == 2 and out.shape[-1] == 3 else ""
        c.fail(f"{name}: your function returned one tensor{what}; return a tuple of three 1-D tensors "
               "(scores, anchor_index, class_index)", "not_a_tuple")
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        n = f" of {len(out)}" if isinstance(out, (tuple, list)) else ""
        c.fail(f"{name}: your function returned a {type(out).__name__}{n}; return a tuple of three 1-D tensors "
               "(scores, anchor_index, class_index)", "not_a_tuple")
    for column, p in zip(SELECT_COLUMNS, out):
        if not torch.is_tensor(p):
            c.fail(f"{name}: {column} is a {type(p).__name__}; return torch tensors", "not_a_tensor")
        if p.dim() != 1:
            c.fail(f"{name}: {column} has shape {tuple(p.shape)}; each of the three is 1-D, one value per candidate "
                   f"(expected ({len(want)},)){' (squeeze the extra dimension)' if p.dim() == 2 and 1 in p.shape else ''}",
                   "shape")
    if len({len(p) for p in out}) > 1:
        c.fail(f"{name}: scores, anchor_index and class_index have {', '.join(str(len(p)) for p in out)} entries; "
               "they describe the same candidates, one entry each", "shape")
    table = torch.stack([p.detach().double() for p in out], 1) if len(out[0]) else torch.zeros(0, 3, dtype=torch.float64)
    if table.shape == want.shape and bool(torch.allclose(table, want, rtol=1e-4, atol=1e-4)):
        _int_dtype(c, name, "anchor_index", out[1].detach())
        _int_dtype(c, name, "class_index", out[2].detach())
    if table.numel() == 0 and want.numel() > 0:
        c.fail(f"{name}: you returned no candidate, expected {len(want)}. Hint: {case.hint}", "empty")
    return table


def _int_dtype(c: Checker, case: str, what: str, t: torch.Tensor) -> None:
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        extra = " (torch.tensor([]) of an empty list is float32: give dtype=torch.long)" if t.numel() == 0 else ""
        c.fail(f"{case}: {what} has dtype {t.dtype}; indices must be integers (torch.long) to index tensors{extra}",
               "float_indices")


def check_select_candidates(fn) -> CheckResult:
    """Check `fn(logits (A, K), score_thresh=0.05, topk=1000) -> (scores (N,), anchor_index (N,), class_index (N,))`."""

    def body(c: Checker):
        A, K = 3, 4

        def logits_with(values: dict) -> torch.Tensor:
            x = torch.full((A, K), -10.0)  # score 4.5e-5: far below any threshold
            for (a, k), v in values.items():
                x[a, k] = v
            return x

        cases = [
            ("one logit above the threshold (A = 3 anchors, K = 4 classes)", logits_with({(1, 2): 2.0}), 0.05, 1000,
             "only anchor 1, class 2 has a score above 0.05: σ(2) ≈ 0.881. In the flattened (A·K) scores it is index "
             "1·4 + 2 = 6: anchor 6 // K = 1, class 6 % K = 2"),
            ("the threshold is on the score: a logit of -1 has score 0.27 > 0.05", logits_with({(0, 1): 1.5, (2, 3): -1.0}),
             0.05, 1000, "σ(1.5) ≈ 0.818 and σ(-1) ≈ 0.269 are both above 0.05: two candidates, best first"),
            ("a score exactly at the threshold is not kept (σ(0) = 0.5, score_thresh = 0.5)",
             logits_with({(1, 0): 0.0, (0, 2): 1.0}), 0.5, 1000,
             "σ(0) is exactly 0.5: not above score_thresh = 0.5. Only σ(1) ≈ 0.731 (anchor 0, class 2) is kept"),
            ("two classes of the same anchor: two candidates", logits_with({(2, 0): 2.0, (2, 3): 1.0}), 0.05, 1000,
             "anchor 2 scores σ(2) ≈ 0.881 for class 0 and σ(1) ≈ 0.731 for class 3: both are candidates"),
            ("best first", logits_with({(0, 0): 0.5, (1, 1): 2.5, (2, 2): -0.5}), 0.05, 1000,
             "three candidates: σ(2.5) (anchor 1), σ(0.5) (anchor 0), σ(-0.5) (anchor 2), in that order"),
            ("at most topk = 2 of the 4 above the threshold", logits_with({(0, 0): 3.0, (1, 0): 1.0, (2, 0): 2.0, (1, 1): 2.5}),
             0.05, 2, "the best 2 of all A·K scores: σ(3) (anchor 0, class 0) and σ(2.5) (anchor 1, class 1)"),
            ("nothing above the threshold", logits_with({}), 0.05, 1000,
             "no score exceeds 0.05: return three empty tensors (the indices still of an integer dtype)"),
        ]
        errors = {"selected index k out of range": (
            "topk_too_big", "torch.topk(x, k) needs k <= x.numel(), and there may be fewer than topk candidates: use "
                            "min(topk, x.numel())")}
        cases = [(name, (x, t, k), hint) for name, x, t, k, hint in cases]
        x = logits_with({(0, 3): -2.5, (1, 1): -3.5, (2, 0): 1.0})
        cases.append(("the default score_thresh = 0.05, called as fn(logits)", (x,),
                      "the default score_thresh is the paper's 0.05: σ(-2.5) ≈ 0.076 is above it, σ(-3.5) ≈ 0.029 is not"))
        g = torch.Generator().manual_seed(0)  # 1200 evenly spaced logits in a random order, 1200 above 0.05
        x = torch.linspace(-2.0, 4.0, 1200)[torch.randperm(1200, generator=g)].reshape(400, 3)
        cases.append(("the default topk = 1000, on 400 anchors x 3 classes, called as fn(logits)", (x,),
                      "all 1200 scores are above 0.05; the default topk is the paper's 1000: keep the best 1000"))
        for seed, (a, k_, t, k) in enumerate([(50, 7, 0.05, 30), (20, 9, 0.3, 500)], start=1):
            x = torch.randn(a, k_, generator=torch.Generator().manual_seed(seed)) * 2 - 3
            cases.append((f"random logits, {a} anchors x {k_} classes, score_thresh = {t}, topk = {k}", (x, t, k),
                          "threshold σ(logits) at score_thresh, sort, keep the top-k"))
        table = dict(columns=SELECT_COLUMNS, row_name="candidate", items="candidates")
        c.run_cases(fn, [Case(name, args, _reference_candidates(*_defaults(*args)), hint, _select_mistakes(*_defaults(*args)),
                              table, errors) for name, args, hint in cases], expect=None, read=_read_candidates)

    return Checker.run("candidate selection", body)


def _defaults(logits: torch.Tensor, score_thresh: float = 0.05, topk: int = 1000) -> tuple:
    return logits, score_thresh, topk


# ---- NMS --------------------------------------------------------------------------------------------------
def _iou_matrix(b: torch.Tensor, kind: str = "iou") -> torch.Tensor:
    b = b.double()
    p = 1.0 if kind == "plus_one" else 0.0
    area = (b[:, 2] - b[:, 0] + p) * (b[:, 3] - b[:, 1] + p)
    wh = (torch.minimum(b[:, None, 2:], b[None, :, 2:]) - torch.maximum(b[:, None, :2], b[None, :, :2]) + p).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    if kind == "over_smaller":
        return inter / torch.minimum(area[:, None], area[None, :])
    return inter / (area[:, None] + area[None, :] - inter)


def _greedy(boxes, scores, thr, order="desc", kind="iou", removes=lambda v, t: v > t, removed_suppress=False,
            one_pass=False) -> list[int]:
    """Greedy NMS with the variations students write; the kept indices in the order they were kept."""
    s = scores.double()
    if order == "desc":
        idx = torch.argsort(s, descending=True, stable=True).tolist()
    elif order == "asc":
        idx = torch.argsort(s, stable=True).tolist()
    else:
        idx = list(range(len(s)))
    m = _iou_matrix(boxes, kind).tolist()
    if removed_suppress:  # a box is dropped if *any* higher-scoring box overlaps it, kept or not
        return [i for p, i in enumerate(idx) if not any(removes(m[j][i], thr) for j in idx[:p])]
    keep, removed = [], set()
    for p, i in enumerate(idx):
        if i in removed:
            continue
        keep.append(i)
        if one_pass and p > 0:
            continue
        removed.update(j for j in idx[p + 1:] if removes(m[i][j], thr))
    return keep


def _nms_mistakes(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> dict:
    right = _greedy(boxes, scores, thr)
    long = lambda i: torch.tensor(i, dtype=torch.long)
    mask = torch.zeros(len(scores), dtype=torch.bool)
    mask[right] = True
    return {
        "mask": (mask, "you returned a mask (True = kept box); return the *indices* of the kept boxes, best first "
                 "(e.g. torch.tensor(keep) with keep a list of indices)"),
        "boxes": (boxes.double()[right], "you returned the kept boxes; return their *indices* (K,), best first"),
        "kept_scores": (scores.double()[right], "you returned the kept boxes' scores; return their *indices*, best first"),
        "inverted": (long(_greedy(boxes, scores, thr, removes=lambda v, t: v <= t)),
                     "the test is inverted: you kept the boxes that overlap a kept box and removed the others. A box is "
                     "*removed* when its IoU with a kept box is > iou_threshold"),
        "ascending": (long(_greedy(boxes, scores, thr, order="asc")),
                      "you went through the boxes from the lowest score up; NMS starts from the highest score: "
                      "scores.argsort(descending=True)"),
        "not_sorted": (long(_greedy(boxes, scores, thr, order=None)),
                       "you went through the boxes in the order they were given; sort them by decreasing score first "
                       "(scores.argsort(descending=True)): a box can only be removed by a *higher-scoring* one"),
        "input_order": (long(sorted(right)), "the right boxes, but in input order; return them by decreasing score "
                        "(the order in which NMS keeps them)"),
        "over_smaller": (long(_greedy(boxes, scores, thr, kind="over_smaller")),
                         "you divided the intersection by the smaller box's area (1 for a box inside another); IoU "
                         "divides by the union: area1 + area2 - intersection"),
        "plus_one": (long(_greedy(boxes, scores, thr, kind="plus_one")),
                     "you added 1 to widths and heights (the old '+1 pixel' convention); here width = x2 - x1, as in "
                     "torchvision"),
        "ge": (long(_greedy(boxes, scores, thr, removes=lambda v, t: v >= t)),
               "a box whose IoU with a kept box *equals* iou_threshold is kept: remove only IoU > iou_threshold, not >="),
        "removed_suppress": (long(_greedy(boxes, scores, thr, removed_suppress=True)),
                             "a box was removed by a box that had itself been removed. Only *kept* boxes suppress: "
                             "go down the boxes by score, keep one, remove what overlaps it, then go on with the "
                             "boxes that are left"),
        "one_pass": (long(_greedy(boxes, scores, thr, one_pass=True)),
                     "you only removed the boxes that overlap the best box; repeat: the next box still left is kept "
                     "and removes the boxes that overlap *it*, and so on"),
    }


_SELF = ("you kept no box at all, though the best box is always kept. Did you compare a box with itself? Its IoU "
         "with itself is 1 > iou_threshold: compare each box only with the boxes kept before it")


def _read_indices(c: Checker, case: Case, got: torch.Tensor) -> torch.Tensor:
    """A mask, no box kept, a (K, 1) column and float indices are named before the comparison."""
    t, want = got.detach(), case.want
    if t.dtype == torch.bool:
        c.fail(f"{case.name}: {case.mistakes['mask'][1]}", "mask")
    if t.numel() == 0 and want.numel() > 0:
        c.fail(f"{case.name}: {_SELF}", "self_suppress")
    if t.dim() == 2 and t.shape[1] == 1:
        c.fail(f"{case.name}: your answer has shape {tuple(t.shape)}, expected ({len(want)},): one index per kept box. "
               "torch.nonzero(mask) returns a column (K, 1): take .squeeze(1)", "shape")
    if t.is_floating_point() and t.shape == want.shape and bool((t.double() == want.double()).all()):
        _int_dtype(c, case.name, "your answer", t)
    return got


def check_nms(fn) -> CheckResult:
    """Check `fn(boxes (N, 4), scores (N,), iou_threshold) -> indices (K,)` of the kept boxes, best first."""
    from torchvision.ops import nms

    def body(c: Checker):
        B = lambda *rows: torch.tensor(rows, dtype=torch.float32)
        S = lambda *v: torch.tensor(v, dtype=torch.float32)
        cases = [
            ("two boxes with IoU 0.6 > 0.5: the lower-scoring one is removed", B([0, 0, 10, 10], [2.5, 0, 12.5, 10]),
             S(0.9, 0.8), 0.5, "[0,0,10,10] and [2.5,0,12.5,10] overlap in 75 of 125 px²: IoU 0.6 > 0.5, so box 1 (score "
             "0.8) is removed by box 0 (score 0.9): the answer is [0]"),
            ("two boxes with IoU 0.25 < 0.5: both kept", B([0, 0, 10, 10], [6, 0, 16, 10]), S(0.9, 0.8), 0.5,
             "IoU = 40 / 160 = 0.25 is not above 0.5: both boxes are kept, [0, 1]"),
            ("a small box inside a big one: IoU 0.25, both kept", B([0, 0, 20, 20], [5, 5, 15, 15]), S(0.9, 0.8), 0.5,
             "the 10 x 10 box lies inside the 20 x 20 one, but their IoU is 100 / 400 = 0.25 < 0.5: both kept"),
            ("small boxes: IoU 0.4545 < 0.5, both kept", B([0, 0, 2, 2], [0.75, 0, 2.75, 2]), S(0.9, 0.8), 0.5,
             "[0,0,2,2] and [0.75,0,2.75,2] overlap in 1.25 x 2 = 2.5 of 5.5: IoU 0.4545 < 0.5 (widths are x2 - x1)"),
            ("IoU exactly 0.5 = iou_threshold: both kept", B([0, 0, 20, 10], [0, 0, 10, 10]), S(0.9, 0.8), 0.5,
             "IoU = 100 / 200 = 0.5 exactly: a box is removed only when IoU > iou_threshold, so both are kept"),
            ("3 boxes not in score order: the kept ones best first", B([0, 0, 10, 10], [30, 0, 40, 10], [32, 0, 42, 10]),
             S(0.6, 0.3, 0.9), 0.5, "box 2 (0.9) is kept and removes box 1 (IoU 0.67); box 0 (0.6) overlaps nothing: "
             "kept. By decreasing score: [2, 0]"),
            ("a chain: B overlaps A and C, C overlaps A only a little", B([0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]),
             S(0.9, 0.8, 0.7), 0.5, "A (0.9) is kept and removes B (IoU 0.54); C overlaps only B (IoU 0.54), which was "
             "removed, and A by 0.25: C is kept, [0, 2]"),
            ("two separate pairs of overlapping boxes", B([0, 0, 10, 10], [50, 0, 60, 10], [2, 0, 12, 10], [52, 0, 62, 10]),
             S(0.9, 0.8, 0.6, 0.7), 0.5, "box 0 removes box 2, and box 1 (the best box left) removes box 3: [0, 1]"),
            ("no boxes (N = 0)", torch.zeros(0, 4), torch.zeros(0), 0.5,
             "no boxes: return an empty tensor of indices, torch.zeros(0, dtype=torch.long)"),
            ("one box (N = 1)", B([5, 5, 15, 25]), S(0.3), 0.5, "a single box is always kept: [0]"),
        ]
        empty = {text: ("empty_input", "with no boxes (N = 0) there is nothing to keep: return torch.zeros(0, "
                                       "dtype=torch.long) before reducing or indexing")
                 for text in ("numel() == 0", "no elements", "out of bounds", "out of range", "empty")}
        indices = dict(exact_dtype="int", items="kept boxes")
        cases = [Case(name, (boxes, scores, thr), torch.tensor(_greedy(boxes, scores, thr), dtype=torch.long), hint,
                      _nms_mistakes(boxes, scores, thr), indices, empty if len(boxes) == 0 else None)
                 for name, boxes, scores, thr, hint in cases]
        for seed, (n, thr) in enumerate([(40, 0.5), (60, 0.3), (30, 0.7)]):
            g = torch.Generator().manual_seed(100 + seed)
            xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 40
            boxes = torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=g, dtype=torch.float64) * 30], 1)
            scores = torch.rand(n, generator=g, dtype=torch.float64)
            cases.append(Case(f"{n} random boxes, iou_threshold = {thr}, against torchvision.ops.nms",
                              (boxes.float(), scores.float(), thr), nms(boxes, scores, thr),
                              "go down the boxes by decreasing score; keep a box unless its IoU with a box kept before "
                              "is > iou_threshold", _nms_mistakes(boxes, scores, thr), indices))
        c.run_cases(fn, cases, read=_read_indices)

    return Checker.run("non-maximum suppression", body)
