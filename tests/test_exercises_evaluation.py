"""Mutation suite of the evaluation lesson's check (check_average_precision), and its reference against
pycocotools: COCOeval run on tiny ground-truth and detection sets built to give a known ranking of true and
false positives must give the same 101 sampled precisions and the same AP."""

import contextlib
import io

import numpy as np
import pytest
import torch

from retinanet_lab.exercises.evaluation import check_average_precision, coco_average_precision


def rejected(r, mistake: str, phrase: str) -> None:
    assert not r.passed, str(r)
    assert r.mistake == mistake, str(r)
    assert phrase in r.hint, str(r)


# ---- the reference against COCOeval ------------------------------------------------------------------------
def cocoeval_precision(is_tp: list[bool], num_gt: int) -> np.ndarray:
    """COCOeval's 101 sampled precisions (IoU 0.5, area "all", 100 detections) of one class on one image whose
    detections, by decreasing score, are true or false positives as `is_tp` says: a true positive lies exactly
    on the next unmatched object; a false positive lies far from every object or (every other one) duplicates
    an object already matched."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "thing"}],
                  "annotations": [{"id": j + 1, "image_id": 1, "category_id": 1, "bbox": [100.0 * j, 0.0, 50.0, 50.0],
                                   "area": 2500.0, "iscrowd": 0} for j in range(num_gt)]}
    results, matched = [], 0
    for i, tp in enumerate(is_tp):
        if tp:
            box = [100.0 * matched, 0.0, 50.0, 50.0]
            matched += 1
        elif matched and i % 2:
            box = [0.0, 0.0, 50.0, 50.0]  # a duplicate of object 0, already matched
        else:
            box = [100.0 * i, 500.0, 50.0, 50.0]  # nowhere near an object
        results.append({"image_id": 1, "category_id": 1, "bbox": box, "score": 1.0 - i / (len(is_tp) + 1)})
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"][0, :, 0, 0, -1]  # (101,) IoU 0.5, class 0, area "all", maxDets 100


def _random_ranking(seed: int) -> tuple[list[bool], int]:
    g = torch.Generator().manual_seed(seed)
    num_gt = int(torch.randint(1, 45, (1,), generator=g))
    d = int(torch.randint(1, 80, (1,), generator=g))
    tp = (torch.rand(d, generator=g) < torch.rand(1, generator=g)).tolist()
    seen = 0
    for i, t in enumerate(tp):  # at most num_gt true positives
        if t and seen == num_gt:
            tp[i] = False
        seen += tp[i]
    return tp, num_gt


T, F = True, False
HAND = [([T, T, T], 3), ([T, F, F, T, T], 7), ([F, T, T], 3), ([T, T], 3), ([T, F, T], 2), ([T, F, T, F, F, F, T], 3),
        ([F, F, F], 4),
        ([T] * 7 + [F, T], 10),  # recall 0.7 is below numpy's 0.7000000000000001: COCO samples the next rank
        ([T, F] * 20, 20)]


@pytest.mark.parametrize("tp, num_gt", HAND + [_random_ranking(s) for s in range(8)])
def test_reference_equals_cocoeval(tp, num_gt):
    from retinanet_lab.exercises.evaluation import _curve, _envelope, _sample

    coco = cocoeval_precision(tp, num_gt)
    rc, pr = _curve(tp, num_gt)
    np.testing.assert_array_equal(_sample(rc, _envelope(pr)), coco)
    assert coco_average_precision(torch.tensor(tp, dtype=torch.bool), num_gt) == pytest.approx(float(coco.mean()), abs=1e-12)


def test_the_quirk_of_numpy_thresholds_is_coco_s():
    """At recall exactly 0.7, COCO (and the reference) sample the next rank; the envelope there is lower."""
    tp, num_gt = [T] * 7 + [F, T], 10
    exact = torch.linspace(0, 1, 101, dtype=torch.float64)  # torch computes 0.7 as 0.7 (numpy: 0.7000000000000001)
    assert float(exact[70]) == 0.7 and float(np.linspace(0, 1, 101)[70]) > 0.7
    assert coco_average_precision(torch.tensor(tp), num_gt) == pytest.approx(float(cocoeval_precision(tp, num_gt).mean()))


# ---- right answers -------------------------------------------------------------------------------------------
def solution_ap(is_true_positive, num_ground_truth):
    """The lesson's solution (as in /tmp/solutions/check_average_precision.md)."""
    tp = torch.cumsum(is_true_positive.double(), dim=0)  # (D,) TP_i
    rank = torch.arange(1, len(tp) + 1, dtype=torch.float64)  # (D,) i
    precision, recall = tp / rank, tp / num_ground_truth  # (D,) each
    envelope = precision.flip(0).cummax(dim=0).values.flip(0)  # (D,) best precision at rank >= i
    thresholds = torch.linspace(0, 1, 101, dtype=torch.float64)  # (101,)
    first = torch.searchsorted(recall, thresholds)  # (101,) first rank with recall >= t (D: never)
    sampled = torch.cat([envelope, envelope.new_zeros(1)])[first]  # (101,) 0 where recall never reaches t
    return sampled.mean().item()


def loop_ap(is_true_positive, num_ground_truth):
    """Python loops, VOC-style: at each threshold, the best precision at any rank with recall >= t."""
    tp, precision, recall = 0, [], []
    for i, hit in enumerate(is_true_positive.tolist(), start=1):
        tp += hit
        precision.append(tp / i)
        recall.append(tp / num_ground_truth)
    total = 0.0
    for k in range(101):
        t = k / 100
        total += max([p for p, r in zip(precision, recall) if r >= t], default=0.0)
    return total / 101


def numpy_ap(is_true_positive, num_ground_truth):
    tp = np.cumsum(is_true_positive.numpy())
    precision = tp / np.arange(1, len(tp) + 1)
    recall = tp / num_ground_truth
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return np.mean(np.append(envelope, 0.0)[idx])


def float32_ap(is_true_positive, num_ground_truth):
    """In float32, thresholds as arange / 100, returning a 0-d tensor."""
    tp = is_true_positive.float().cumsum(0)
    precision = tp / torch.arange(1, len(tp) + 1)
    recall = tp / num_ground_truth
    envelope = torch.flip(torch.cummax(torch.flip(precision, [0]), 0).values, [0])
    first = torch.searchsorted(recall, torch.arange(101) / 100)
    return torch.cat([envelope, torch.zeros(1)])[first].mean()


@pytest.mark.parametrize("fn", [solution_ap, loop_ap, numpy_ap, float32_ap], ids=["solution", "loops", "numpy", "float32"])
def test_right_answers_pass(fn):
    r = check_average_precision(fn)
    assert r.passed, str(r)


# ---- mistakes ---------------------------------------------------------------------------------------------
def _pr(is_tp, G):
    tp = torch.cumsum(is_tp.double(), 0)
    return tp / torch.arange(1, len(tp) + 1), tp / G


def _sampled(precision, recall, thresholds=None, right=False):
    thresholds = torch.linspace(0, 1, 101, dtype=torch.float64) if thresholds is None else thresholds
    first = torch.searchsorted(recall, thresholds, right=right)
    return torch.cat([precision, precision.new_zeros(1)])[first]


def _env(p):
    return p.flip(0).cummax(0).values.flip(0)


def ap_no_envelope(is_tp, G):
    p, r = _pr(is_tp, G)
    return _sampled(p, r).mean().item()


def ap_envelope_forward(is_tp, G):
    p, r = _pr(is_tp, G)
    return _sampled(torch.cummax(p, 0).values, r).mean().item()


def ap_voc11(is_tp, G):
    p, r = _pr(is_tp, G)
    return sum(float(p[r >= t].max()) if (r >= t).any() else 0.0 for t in np.arange(0, 1.1, 0.1)) / 11


def ap_voc_all_point(is_tp, G):
    p, r = _pr(is_tp, G)
    steps = torch.diff(r, prepend=torch.zeros(1, dtype=r.dtype))
    return float((steps * _env(p)).sum())


def ap_raw_area(is_tp, G):
    p, r = _pr(is_tp, G)
    return float((torch.diff(r, prepend=torch.zeros(1, dtype=r.dtype)) * p).sum())


def ap_recall_over_D(is_tp, G):
    tp = torch.cumsum(is_tp.double(), 0)
    p, r = tp / torch.arange(1, len(tp) + 1), tp / len(is_tp)
    return _sampled(_env(p), r).mean().item()


def ap_precision_over_gt(is_tp, G):
    tp = torch.cumsum(is_tp.double(), 0)
    return _sampled(_env(tp / G), tp / G).mean().item()


def ap_non_cumulative(is_tp, G):
    tp = is_tp.double()  # forgot cumsum
    p, r = tp / torch.arange(1, len(tp) + 1), tp / G
    return _sampled(_env(p), r).mean().item()


def ap_side_right(is_tp, G):
    p, r = _pr(is_tp, G)
    return _sampled(_env(p), r, right=True).mean().item()


def ap_linspace100(is_tp, G):
    p, r = _pr(is_tp, G)
    return _sampled(_env(p), r, torch.linspace(0, 1, 100, dtype=torch.float64)).mean().item()


def ap_mean_over_detections(is_tp, G):
    p, _ = _pr(is_tp, G)
    return p.mean().item() if len(p) else 0.0


def ap_reversed(is_tp, G):
    return solution_ap(is_tp.flip(0), G)


def ap_sum(is_tp, G):
    p, r = _pr(is_tp, G)
    return _sampled(_env(p), r).sum().item()


def ap_not_mean(is_tp, G):
    p, r = _pr(is_tp, G)
    return _sampled(_env(p), r)


def ap_past_end(is_tp, G):
    p, r = _pr(is_tp, G)
    first = torch.searchsorted(r, torch.linspace(0, 1, 101, dtype=torch.float64))
    return _env(p)[first].mean().item()  # no 0 for the thresholds recall never reaches


@pytest.mark.parametrize("fn, mistake, phrase", [
    (ap_no_envelope, "no_envelope", "precision *envelope*"),
    (ap_envelope_forward, "envelope_forward", "runs the wrong way"),
    (ap_voc11, "voc11", "11-point"),
    (ap_voc_all_point, "voc_all_point", "VOC 2010's all-point"),
    (ap_raw_area, "raw_area", "area under the raw precision-recall curve"),
    (ap_recall_over_D, "recall_over_D", "not TP / (number of detections)"),
    (ap_precision_over_gt, "precision_over_gt", "not TP_i / num_ground_truth"),
    (ap_non_cumulative, "non_cumulative", "cumulative sum"),
    (ap_side_right, "side_right", "first with recall > t"),
    (ap_linspace100, "linspace100", "101 recall thresholds"),
    (ap_mean_over_detections, "mean_over_detections", "averaged the precision over the detections"),
    (ap_reversed, "reversed", "in reverse"),
    (ap_sum, "sum_not_mean", "*mean*"),
    (ap_not_mean, "not_mean", "returned the 101 sampled precisions"),
    (ap_past_end, "index_past_end", "Append a 0"),
])
def test_mistakes_are_named(fn, mistake, phrase):
    rejected(check_average_precision(fn), mistake, phrase)


def test_not_written_and_wrong_types():
    def not_written(is_tp, num_gt):
        raise NotImplementedError

    rejected(check_average_precision(not_written), "not_implemented", "not written yet")
    rejected(check_average_precision(lambda tp, G: [solution_ap(tp, G)]), "not_a_number", "return one number")
    assert check_average_precision(lambda tp, G: torch.tensor([solution_ap(tp, G)])).passed  # one value, shape (1,)
    assert check_average_precision(lambda tp, G: np.float32(solution_ap(tp, G))).passed

    def crashes_without_detections(is_tp, num_gt):
        p, r = _pr(is_tp, num_gt)
        if p.max() < 0:  # max of nothing raises
            return 0.0
        return solution_ap(is_tp, num_gt)

    r = check_average_precision(crashes_without_detections)
    rejected(r, "empty", "AP is 0")
    assert "no detections" in r.hint

    def nan_without_detections(is_tp, num_gt):
        p, _ = _pr(is_tp, num_gt)
        return solution_ap(is_tp, num_gt) if len(p) else p.mean().item()  # the mean of nothing is nan

    rejected(check_average_precision(nan_without_detections), "not_finite", "your AP is nan, expected 0")
