"""Check for the evaluation lesson: COCO's average precision of one class at one IoU threshold (the AP of the
paper's tables, section 5: "AP" averages it over the 10 IoU thresholds 0.5:0.95 and the 80 classes).

Given the detections of one class ranked by decreasing score, each marked true or false positive (matched to an
object at the IoU threshold), and the number of objects G: precision p_i = TP_i / i and recall r_i = TP_i / G after
the i best detections; the precision envelope replaces p_i by the best precision at rank i or any later rank (at
equal or higher recall); it is sampled at the 101 recall thresholds 0, 0.01, ..., 1: for each threshold, the
envelope at the first rank whose recall >= the threshold (0 if recall never reaches it); AP is the mean of the 101
samples. That is what pycocotools' `COCOeval.accumulate` computes (`eval["precision"][t, :, k, area, maxdet]`,
averaged by `summarize`); the reference below follows it line for line (tests/test_exercises_evaluation.py
compares it with COCOeval on small ground-truth and detection sets built to give a known ranking).

Cases: every detection correct (AP 1); a ranking where the envelope matters (precision rises again after two false
positives); a false positive ranked first; misses (2 of 3 objects found: recall never passes 2/3); no detections
(AP 0); recall landing exactly on a threshold (0.5: the first rank with recall >= t, not > t); more detections
than objects (recall is divided by G, not by D); two random rankings. G is never 0 here: COCO leaves a class
without objects out of the mean (its precision is -1).

G is chosen so that recall never lands on a threshold that numpy's `linspace` stores inexactly (0.07 is
0.07000000000000001 there, and 7/100 < that: COCO then samples the next rank), except on 0.5, which every way of
writing the thresholds stores exactly. A student's `torch.linspace(0, 1, 101)` in float32 passes too.
"""

from __future__ import annotations

import numpy as np
import torch

from ._check import Case, Checker, CheckResult

__all__ = ["check_average_precision", "coco_average_precision"]

RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)  # as COCOeval


def _curve(is_tp, num_gt: int, cumulative: bool = True, recall_den=None, precision_den=None):
    """Recall and precision after each rank, as COCOeval: rc = TP / G, pr = TP / (TP + FP + eps), TP + FP = rank."""
    tp = np.asarray(is_tp, dtype=bool)
    tps = np.cumsum(tp).astype(float) if cumulative else tp.astype(float)
    ranks = np.arange(1, len(tp) + 1, dtype=float)
    rc = tps / (num_gt if recall_den is None else recall_den)
    pr = tps / (ranks + np.spacing(1)) if precision_den is None else tps / precision_den
    return rc, pr


def _envelope(pr, direction: str = "backward"):
    pr = list(pr)
    if direction == "backward":  # as COCOeval: pr[i-1] = max(pr[i-1], pr[i]), from the last rank up
        for i in range(len(pr) - 1, 0, -1):
            if pr[i] > pr[i - 1]:
                pr[i - 1] = pr[i]
    elif direction == "forward":
        for i in range(1, len(pr)):
            pr[i] = max(pr[i], pr[i - 1])
    return np.asarray(pr, dtype=float)


def _sample(rc, env, thresholds=RECALL_THRESHOLDS, side: str = "left"):
    q = np.zeros(len(thresholds))
    inds = np.searchsorted(rc, thresholds, side=side)
    for ri, pi in enumerate(inds):
        if pi >= len(env):
            break
        q[ri] = env[pi]
    return q


def coco_average_precision(is_true_positive, num_ground_truth: int) -> float:
    """COCO's AP of one class at one IoU threshold, as COCOeval.accumulate computes it (see the module docstring)."""
    rc, pr = _curve(torch.as_tensor(is_true_positive).bool().numpy(), num_ground_truth)
    return float(_sample(rc, _envelope(pr)).mean())


def _ap_mistakes(is_tp: torch.Tensor, G: int) -> dict:
    tp = is_tp.bool().numpy()
    D = len(tp)
    rc, pr = _curve(tp, G)
    env = _envelope(pr)
    q = _sample(rc, env)
    flip = tp[::-1].copy()

    def coco(rc_, pr_, env_dir="backward", thresholds=RECALL_THRESHOLDS, side="left"):
        return float(_sample(rc_, _envelope(pr_, env_dir), thresholds, side).mean()) if D else 0.0

    def area(rc_, p_):  # sum over ranks of (r_i - r_{i-1}) p_i
        return float(np.sum(np.diff(np.concatenate([[0.0], rc_])) * p_)) if D else 0.0

    voc11 = float(np.mean([env[rc >= t].max() if (rc >= t).any() else 0.0 for t in np.linspace(0, 1, 11)])) if D else 0.0
    out = {
        "no_envelope": (coco(rc, pr, env_dir="none"), "you sampled the raw precision; COCO samples the precision "
                        "*envelope*: replace each precision by the best precision at that rank or any later one "
                        "(flip, torch.cummax, flip back) before sampling"),
        "envelope_forward": (coco(rc, pr, env_dir="forward"), "your envelope runs the wrong way: each precision is "
                             "replaced by the best precision at equal or *higher* recall (later ranks), so take the "
                             "running max from the end: flip, cummax, flip back"),
        "voc11": (voc11, "that is PASCAL VOC 2007's 11-point AP (recall 0, 0.1, ..., 1); COCO samples 101 recall "
                  "thresholds 0, 0.01, ..., 1"),
        "voc_all_point": (area(rc, env), "that is the area under the precision envelope (PASCAL VOC 2010's all-point "
                          "AP); COCO averages the envelope sampled at the 101 recall thresholds 0, 0.01, ..., 1"),
        "raw_area": (area(rc, pr), "that is the area under the raw precision-recall curve (the non-interpolated AP of "
                     "information retrieval and sklearn's average_precision_score); COCO averages the precision "
                     "*envelope* sampled at the 101 recall thresholds 0, 0.01, ..., 1"),
        "recall_over_D": (coco(*_curve(tp, G, recall_den=D)) if D else 0.0,
                          "recall is TP / (number of objects), num_ground_truth, not TP / (number of detections)"),
        "precision_over_gt": (coco(*_curve(tp, G, precision_den=G)) if D else 0.0,
                              "precision after i detections is TP_i / i (the fraction of those i that are right), "
                              "not TP_i / num_ground_truth"),
        "non_cumulative": (coco(*_curve(tp, G, cumulative=False)) if D else 0.0,
                           "TP_i counts the true positives among the i best detections: a cumulative sum "
                           "(torch.cumsum), not is_true_positive[i] alone"),
        "side_right": (coco(rc, pr, side="right"), "for each recall threshold t take the first rank whose recall is "
                       ">= t; you took the first with recall > t, so recall 1 never counts for t = 1 (searchsorted's "
                       "default side='left' gives >=, right=True gives >)"),
        "linspace100": (coco(rc, pr, thresholds=np.linspace(0, 1, 100)), "there are 101 recall thresholds 0, 0.01, "
                        "..., 1: torch.linspace(0, 1, 101) (or torch.arange(101) / 100); linspace(0, 1, 100) steps "
                        "by 1/99"),
        "mean_over_detections": (float(np.mean(pr)) if D else 0.0, "you averaged the precision over the detections; "
                                 "AP averages the envelope over the 101 recall thresholds 0, 0.01, ..., 1"),
        "reversed": (coco(*_curve(flip, G)), "the detections come best first (by decreasing score); you read them in "
                     "reverse"),
        "sum_not_mean": (float(q.sum()), "AP is the *mean* of the 101 sampled precisions, not their sum"),
        "not_mean": (q, "you returned the 101 sampled precisions; AP is their mean, one number"),
    }
    if not D:
        out["not_mean"] = (np.zeros(101), out["not_mean"][1])
    return {k: (torch.as_tensor(v, dtype=torch.float64), h) for k, (v, h) in out.items()}


def check_average_precision(fn) -> CheckResult:
    """Check `fn(is_true_positive: bool (D,), best first, num_ground_truth: int) -> AP` (a float or 0-d tensor)."""

    def body(c: Checker):
        T, F = True, False
        cases = [
            ("every detection correct", [T, T, T], 3, "3 detections, 3 objects, all found: precision 1 at every "
             "recall, AP = 1"),
            ("the envelope: precision rises again after two false positives", [T, F, F, T, T], 7,
             "precision 1, 1/2, 1/3, 1/2, 3/5 at recall 1/7, 1/7, 1/7, 2/7, 3/7. The envelope after rank 1 is 3/5 (the "
             "best precision at that or a higher recall), not the 1/2 of rank 4. The 15 thresholds 0, ..., 0.14 get 1, "
             "the 28 up to 0.42 get 3/5, the rest 0: AP = (15 + 28 · 3/5) / 101"),
            ("a false positive ranked first", [F, T, T], 3, "precision 0, 1/2, 2/3 at recall 0, 1/3, 2/3. The envelope "
             "is 2/3 up to recall 2/3 (the 67 thresholds 0, ..., 0.66), 0 beyond: AP = 67 · (2/3) / 101"),
            ("misses: 2 of 3 objects found", [T, T], 3, "precision 1 at recall 1/3 and 2/3; the 34 thresholds above 2/3 "
             "are never reached and count 0: AP = 67/101"),
            ("no detections", [], 3, "no detections: there is no rank to sample at any recall threshold, so all 101 "
             "samples are 0: AP = 0"),
            ("recall exactly on a threshold (0.5): the first rank with recall >= 0.5", [T, F, T], 2,
             "recall 0.5, 0.5, 1 and precision 1, 1/2, 2/3: the 51 thresholds 0, ..., 0.5 take rank 1 (envelope 1), "
             "the other 50 take rank 3 (2/3)"),
            ("more detections than objects", [T, F, T, F, F, F, T], 3, "recall is TP / num_ground_truth (3), not "
             "TP / number of detections; precision TP / rank"),
        ]
        g = torch.Generator().manual_seed(0)
        long_tp = torch.rand(60, generator=g) < torch.linspace(0.9, 0.2, 60)  # good detections rank higher: 38 TPs
        cases.append(("60 random detections, 41 objects", long_tp.tolist(), 41,
                      "precision TP_i / i, recall TP_i / 41, envelope, 101 thresholds, mean"))
        short_tp = torch.rand(25, generator=g) < 0.4  # 7 TPs
        cases.append(("25 random detections, 13 objects", short_tp.tolist(), 13,
                      "precision TP_i / i, recall TP_i / 13, envelope, 101 thresholds, mean"))
        runs = []
        for name, tp, G, hint in cases:
            is_tp = torch.tensor(tp, dtype=torch.bool)
            assert int(is_tp.sum()) <= G
            want = torch.tensor(coco_average_precision(is_tp, G), dtype=torch.float64)
            runs.append(Case(name, (is_tp, G), want, hint, _ap_mistakes(is_tp, G), dict(tol=1e-6, what="AP"), _ERRORS))
        c.run_cases(fn, runs, expect="number")

    return Checker.run("average precision (COCO)", body)


_PAST_END = ("index_past_end", "where recall never reaches a threshold (objects missed, or no detections at all), "
             "searchsorted gives D, one past the last rank: that threshold's precision is 0. Append a 0 to the envelope "
             "before indexing it (torch.cat([envelope, envelope.new_zeros(1)]))")
_ERRORS = {
    "out of bounds": _PAST_END,
    "out of range": _PAST_END,
    "numel() == 0": ("empty", "with no detections there is nothing to reduce: AP is 0"),
    "no elements": ("empty", "with no detections there is nothing to reduce: AP is 0"),
}

