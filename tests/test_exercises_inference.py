"""Mutation suite of the inference lesson's checks (check_nms, check_select_candidates): right answers written
in several ways pass; typical student mistakes, each written as a student would write it, are rejected with the
id of that mistake and a hint that names it."""

import math

import pytest
import torch
from torchvision.ops import box_iou, nms

from retinanet_lab.exercises.inference import check_nms, check_select_candidates


def rejected(r, mistake: str, phrase: str) -> None:
    assert not r.passed, str(r)
    assert r.mistake == mistake, str(r)
    assert phrase in r.hint, str(r)


def accepted(r) -> None:
    assert r.passed, str(r)


# ---- NMS: the lesson's solution and other right answers --------------------------------------------------
def solution_nms(boxes, scores, iou_threshold):
    """The lesson's solution (as in /tmp/solutions/check_nms.md)."""
    order = scores.argsort(descending=True)  # (N,) best first
    b = boxes[order]  # (N, 4) sorted by score
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # (N,)
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])  # (N, N, 2)
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])  # (N, N, 2)
    inter = (rb - lt).clamp(min=0).prod(dim=2)  # (N, N)
    iou = inter / (area[:, None] + area[None, :] - inter)  # (N, N)
    keep = torch.ones(len(b), dtype=torch.bool)  # (N,)
    for i in range(len(b)):
        if keep[i]:  # box i is kept: it removes the lower-scoring boxes it overlaps
            keep[i + 1:] &= iou[i, i + 1:] <= iou_threshold
    return order[keep]


def loop_nms(boxes, scores, iou_threshold):
    """The textbook while-loop, one box at a time, with torchvision's box_iou."""
    order = torch.argsort(scores, descending=True)
    keep = []
    while len(order) > 0:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        ious = box_iou(boxes[i][None], boxes[rest])[0]
        order = rest[ious <= iou_threshold]
    return torch.tensor(keep, dtype=torch.long)


def python_nms(boxes, scores, iou_threshold):
    """Plain Python numbers, returning int32 indices (any integer dtype is accepted)."""
    b, s = boxes.tolist(), scores.tolist()

    def iou(p, q):
        w = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
        h = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
        inter = w * h
        return inter / ((p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter)

    kept = []
    for i in sorted(range(len(s)), key=lambda i: -s[i]):
        if all(iou(b[i], b[j]) <= iou_threshold for j in kept):
            kept.append(i)
    return torch.tensor(kept, dtype=torch.int32)


@pytest.mark.parametrize("fn", [solution_nms, loop_nms, python_nms, lambda b, s, t: nms(b, s, t)],
                         ids=["solution", "while_loop", "python_int32", "torchvision"])
def test_nms_right_answers_pass(fn):
    accepted(check_nms(fn))


# ---- NMS: mistakes ------------------------------------------------------------------------------------------
def _iou(b):
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    return inter / (area[:, None] + area[None, :] - inter)


def nms_ge(boxes, scores, t):
    order = scores.argsort(descending=True)
    iou = _iou(boxes[order])
    keep = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= iou[i, i + 1:] < t  # removes IoU == t too
    return order[keep]


def nms_not_sorted(boxes, scores, t):
    iou = _iou(boxes)
    keep = torch.ones(len(boxes), dtype=torch.bool)
    for i in range(len(boxes)):  # in the order given
        if keep[i]:
            keep[i + 1:] &= iou[i, i + 1:] <= t
    return torch.nonzero(keep).squeeze(1)


def nms_ascending(boxes, scores, t):
    order = scores.argsort()  # forgot descending=True
    iou = _iou(boxes[order])
    keep = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= iou[i, i + 1:] <= t
    return order[keep]


def nms_mask(boxes, scores, t):
    order = scores.argsort(descending=True)
    iou = _iou(boxes[order])
    keep = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= iou[i, i + 1:] <= t
    mask = torch.zeros(len(boxes), dtype=torch.bool)
    mask[order[keep]] = True
    return mask


def nms_input_order(boxes, scores, t):
    return solution_nms(boxes, scores, t).sort().values


def nms_removed_suppress(boxes, scores, t):
    """The 'vectorised NMS' shortcut: a box goes if any higher-scoring box overlaps it, kept or not."""
    order = scores.argsort(descending=True)
    over = torch.triu(_iou(boxes[order]) > t, diagonal=1)
    return order[~over.any(dim=0)]


def nms_inverted(boxes, scores, t):
    order = scores.argsort(descending=True)
    keep = []
    while len(order) > 0:
        keep.append(int(order[0]))
        ious = box_iou(boxes[order[0]][None], boxes[order[1:]])[0]
        order = order[1:][ious > t]  # kept the overlapping ones
    return torch.tensor(keep, dtype=torch.long)


def nms_one_pass(boxes, scores, t):
    order = scores.argsort(descending=True)
    if len(order) == 0:
        return order
    ious = box_iou(boxes[order[0]][None], boxes[order])[0]
    ious[0] = 0
    return order[ious <= t]


def nms_self(boxes, scores, t):
    order = scores.argsort(descending=True)
    iou = _iou(boxes[order])
    keep = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if keep[i]:
            keep &= iou[i] <= t  # iou[i, i] = 1: box i removes itself
    return order[keep]


def nms_plus_one(boxes, scores, t):
    order = scores.argsort(descending=True)
    b = boxes[order]
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    wh = (torch.minimum(b[:, None, 2:], b[None, :, 2:]) - torch.maximum(b[:, None, :2], b[None, :, :2]) + 1).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    iou = inter / (area[:, None] + area[None, :] - inter)
    keep = torch.ones(len(b), dtype=torch.bool)
    for i in range(len(b)):
        if keep[i]:
            keep[i + 1:] &= iou[i, i + 1:] <= t
    return order[keep]


def nms_over_smaller(boxes, scores, t):
    order = scores.argsort(descending=True)
    b = boxes[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = (torch.minimum(b[:, None, 2:], b[None, :, 2:]) - torch.maximum(b[:, None, :2], b[None, :, :2])).clamp(min=0)
    inter = wh.prod(dim=2)
    iou = inter / torch.minimum(area[:, None], area[None, :])
    keep = torch.ones(len(b), dtype=torch.bool)
    for i in range(len(b)):
        if keep[i]:
            keep[i + 1:] &= iou[i, i + 1:] <= t
    return order[keep]


@pytest.mark.parametrize("fn, mistake, phrase", [
    (nms_ge, "ge", "not >="),
    (nms_not_sorted, "not_sorted", "in the order they were given"),
    (nms_ascending, "ascending", "lowest score"),
    (nms_mask, "mask", "returned a mask"),
    (nms_input_order, "input_order", "in input order"),
    (nms_removed_suppress, "removed_suppress", "Only *kept* boxes suppress"),
    (nms_inverted, "inverted", "inverted"),
    (nms_one_pass, "one_pass", "only removed the boxes that overlap the best box"),
    (nms_self, "self_suppress", "IoU with itself is 1"),
    (nms_plus_one, "plus_one", "'+1 pixel'"),
    (nms_over_smaller, "over_smaller", "smaller box's area"),
    (lambda b, s, t: b[solution_nms(b, s, t)], "boxes", "returned the kept boxes"),
    (lambda b, s, t: s[solution_nms(b, s, t)], "kept_scores", "kept boxes' scores"),
    (lambda b, s, t: solution_nms(b, s, t).float(), "float_indices", "must be integers"),
])
def test_nms_mistakes_are_named(fn, mistake, phrase):
    rejected(check_nms(fn), mistake, phrase)


def test_nms_not_written_wrong_type_and_crash_on_empty():
    def not_written(boxes, scores, t):
        raise NotImplementedError

    rejected(check_nms(not_written), "not_implemented", "not written yet")
    rejected(check_nms(lambda b, s, t: solution_nms(b, s, t).tolist()), "not_a_tensor", "returned a list")
    rejected(check_nms(lambda b, s, t: solution_nms(b, s, t)[:, None]), "shape", ".squeeze(1)")

    def float_when_empty(boxes, scores, t):  # torch.tensor([]) is float32
        keep = loop_nms(boxes, scores, t).tolist()
        return torch.tensor(keep)

    r = check_nms(float_when_empty)
    rejected(r, "float_indices", "dtype=torch.long")
    assert "no boxes (N = 0)" in r.hint and r.lines[-2].startswith("✔ two separate pairs")

    def crashes_when_empty(boxes, scores, t):
        top = scores.argmax()  # no argmax of nothing
        return loop_nms(boxes, scores, t) if top >= 0 else None

    rejected(check_nms(crashes_when_empty), "empty_input", "torch.zeros(0, dtype=torch.long)")


# ---- candidates: the lesson's solution and other right answers -------------------------------------------
def solution_select(logits, score_thresh=0.05, topk=1000):
    """The lesson's solution (as in /tmp/solutions/check_select_candidates.md)."""
    num_classes = logits.shape[1]
    scores = torch.sigmoid(logits).flatten()  # (A*K,): anchor a, class k at a*K + k
    idx = torch.nonzero(scores > score_thresh).squeeze(1)  # (M,) above the threshold
    idx = idx[scores[idx].argsort(descending=True)[:topk]]  # (N,) best first, at most topk
    return scores[idx], idx // num_classes, idx % num_classes


def topk_first(logits, score_thresh=0.05, topk=1000):
    """Top-k of all scores first, then the threshold: the same answer."""
    scores = logits.sigmoid().reshape(-1)
    top, idx = scores.topk(min(topk, scores.numel()))
    keep = top > score_thresh
    return top[keep], torch.div(idx[keep], logits.shape[1], rounding_mode="floor"), idx[keep] % logits.shape[1]


def python_select(logits, score_thresh=0.05, topk=1000):
    rows = [(1 / (1 + math.exp(-v)), a, k) for a, row in enumerate(logits.tolist()) for k, v in enumerate(row)]
    rows = sorted((r for r in rows if r[0] > score_thresh), reverse=True)[:topk]
    return (torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows], dtype=torch.long),
            torch.tensor([r[2] for r in rows], dtype=torch.long))


def class_major_select(logits, score_thresh=0.05, topk=1000):
    """Flattened class by class (the transpose), thresholded on the logits, as the package does."""
    A = logits.shape[0]
    flat = logits.t().flatten()  # (K*A,): class k, anchor a at k*A + a
    x_thresh = math.log(score_thresh / (1 - score_thresh))
    idx = torch.nonzero(flat > x_thresh).squeeze(1)
    idx = idx[torch.sort(flat[idx], descending=True).indices][:topk]
    return flat[idx].sigmoid(), idx % A, idx // A


@pytest.mark.parametrize("fn", [solution_select, topk_first, python_select, class_major_select],
                         ids=["solution", "topk_before_threshold", "python", "class_major_logit_threshold"])
def test_select_right_answers_pass(fn):
    accepted(check_select_candidates(fn))


# ---- candidates: mistakes ----------------------------------------------------------------------------------
def select_logit_thresh(logits, score_thresh=0.05, topk=1000):
    K = logits.shape[1]
    flat = logits.flatten()
    idx = torch.nonzero(flat > score_thresh).squeeze(1)  # compared the logits
    idx = idx[flat[idx].argsort(descending=True)[:topk]]
    return flat[idx].sigmoid(), idx // K, idx % K


def select_ge(logits, score_thresh=0.05, topk=1000):
    K = logits.shape[1]
    s = logits.sigmoid().flatten()
    idx = torch.where(s >= score_thresh)[0]
    idx = idx[s[idx].argsort(descending=True)[:topk]]
    return s[idx], idx // K, idx % K


def select_max_over_classes(logits, score_thresh=0.05, topk=1000):
    best, cls = logits.sigmoid().max(dim=1)  # one class per anchor
    anchors = torch.nonzero(best > score_thresh).squeeze(1)
    anchors = anchors[best[anchors].argsort(descending=True)[:topk]]
    return best[anchors], anchors, cls[anchors]


def select_swapped(logits, score_thresh=0.05, topk=1000):
    s, a, k = solution_select(logits, score_thresh, topk)
    idx = a * logits.shape[1] + k
    return s, idx % logits.shape[1], idx // logits.shape[1]


def select_divmod_A(logits, score_thresh=0.05, topk=1000):
    A = logits.shape[0]
    s = logits.sigmoid().flatten()
    idx = torch.nonzero(s > score_thresh).squeeze(1)
    idx = idx[s[idx].argsort(descending=True)[:topk]]
    return s[idx], idx // A, idx % A


def select_true_division(logits, score_thresh=0.05, topk=1000):
    K = logits.shape[1]
    s = logits.sigmoid().flatten()
    idx = torch.nonzero(s > score_thresh).squeeze(1)
    idx = idx[s[idx].argsort(descending=True)[:topk]]
    return s[idx], idx / K, idx % K


def select_flat(logits, score_thresh=0.05, topk=1000):
    K = logits.shape[1]
    s = logits.sigmoid().flatten()
    idx = torch.nonzero(s > score_thresh).squeeze(1)
    idx = idx[s[idx].argsort(descending=True)[:topk]]
    return s[idx], idx, idx % K


def select_unsorted(logits, score_thresh=0.05, topk=1000):
    K = logits.shape[1]
    s = logits.sigmoid().flatten()
    idx = torch.nonzero(s > score_thresh).squeeze(1)[:topk]
    return s[idx], idx // K, idx % K


def select_ascending(logits, score_thresh=0.05, topk=1000):
    K = logits.shape[1]
    s = logits.sigmoid().flatten()
    idx = torch.nonzero(s > score_thresh).squeeze(1)
    idx = idx[torch.sort(s[idx]).indices[:topk]]
    return s[idx], idx // K, idx % K


def select_topk_per_class(logits, score_thresh=0.05, topk=1000):
    s = logits.sigmoid()
    rows = []
    for k in range(s.shape[1]):
        a = torch.nonzero(s[:, k] > score_thresh).squeeze(1)
        a = a[s[a, k].argsort(descending=True)[:topk]]
        rows += [(float(s[i, k]), int(i), k) for i in a]
    rows.sort(reverse=True)
    return (torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows], dtype=torch.long),
            torch.tensor([r[2] for r in rows], dtype=torch.long))


def select_no_topk(logits, score_thresh=0.05, topk=1000):
    return solution_select(logits, score_thresh, 10**9)


def select_logits_returned(logits, score_thresh=0.05, topk=1000):
    s, a, k = solution_select(logits, score_thresh, topk)
    return logits[a, k], a, k


def select_one_based(logits, score_thresh=0.05, topk=1000):
    s, a, k = solution_select(logits, score_thresh, topk)
    return s, a, k + 1


def select_topk_too_big(logits, score_thresh=0.05, topk=1000):
    K = logits.shape[1]
    s, idx = logits.sigmoid().flatten().topk(topk)
    keep = s > score_thresh
    return s[keep], idx[keep] // K, idx[keep] % K


@pytest.mark.parametrize("fn, mistake, phrase", [
    (select_logit_thresh, "logit_thresh", "compared the *logits*"),
    (select_ge, "ge", "(> score_thresh, not >=)"),
    (select_max_over_classes, "max_over_classes", "one class per anchor"),
    (select_swapped, "swapped", "anchor and class are swapped"),
    (select_divmod_A, "divmod_A", "divided the flat index by A"),
    (select_true_division, "true_division", "floor division"),
    (select_flat, "flat_as_anchor", "anchor_index is the flat index"),
    (select_unsorted, "unsorted", "best first"),
    (select_ascending, "ascending", "increasing order"),
    (select_topk_per_class, "topk_per_class", "top-k of each class"),
    (select_no_topk, "no_topk", "keep at most topk"),
    (select_logits_returned, "logits_returned", "returned the logits"),
    (select_one_based, "one_based", "0-based"),
    (select_topk_too_big, "topk_too_big", "min(topk, x.numel())"),
])
def test_select_mistakes_are_named(fn, mistake, phrase):
    rejected(check_select_candidates(fn), mistake, phrase)


def test_select_not_written_wrong_type_and_wrong_defaults():
    def not_written(logits, score_thresh=0.05, topk=1000):
        raise NotImplementedError

    rejected(check_select_candidates(not_written), "not_implemented", "not written yet")
    rejected(check_select_candidates(lambda x, t=0.05, k=1000: torch.stack(
        [v.float() for v in solution_select(x, t, k)], 1)), "not_a_tuple", "one (N, 3) table")
    rejected(check_select_candidates(lambda x, t=0.05, k=1000: solution_select(x, t, k)[:2]), "not_a_tuple",
             "a tuple of 2")
    rejected(check_select_candidates(lambda x, t=0.05, k=1000: tuple(v[:, None] for v in solution_select(x, t, k))),
             "shape", "squeeze")

    r = check_select_candidates(lambda x, t=0.5, k=1000: solution_select(x, t, k))  # wrong default threshold
    assert not r.passed and "the default score_thresh" in r.hint and "0.076" in r.hint, str(r)
    r = check_select_candidates(lambda x, t=0.05, k=100: solution_select(x, t, k))  # wrong default topk
    rejected(r, "count", "returned 100 candidates, expected 1000")
    assert "the default topk" in r.hint

    def float_when_empty(logits, score_thresh=0.05, topk=1000):  # torch.tensor([]) is float32
        s, a, k = python_select(logits, score_thresh, topk)
        return s, torch.tensor(a.tolist()), torch.tensor(k.tolist())

    r = check_select_candidates(float_when_empty)
    rejected(r, "float_indices", "dtype=torch.long")
    assert "nothing above the threshold" in r.hint
