"""COCO evaluation against values computed by hand."""

import math

import pytest
import torch

from retinanet_lab import RetinaNet
from retinanet_lab.data import ShapesDataset, export_coco
from retinanet_lab.evaluate import coco_ground_truth, evaluate, score_detections


def _gt(boxes_per_image, labels_per_image, crowd=None, names=("a", "b")):
    images, anns = [], []
    for i, (boxes, labels) in enumerate(zip(boxes_per_image, labels_per_image)):
        images.append({"id": i + 1})
        for b, lab in zip(boxes, labels):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": lab, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                         "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": 0})
    for i, b in crowd or []:
        anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                     "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": 1})
    return {"images": images, "annotations": anns, "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}


def _det(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels)}


BOXES = [[[10, 10, 110, 110], [200, 50, 260, 90]], [[30, 40, 90, 200]]]
LABELS = [[1, 2], [1]]


def test_perfect_detections_score_one():
    gt = _gt(BOXES, LABELS)
    dets = [_det(b, [0.9] * len(b), lab) for b, lab in zip(BOXES, LABELS)]
    r = score_detections(gt, dets)
    assert r["AP"] == pytest.approx(1.0) and r["AP50"] == pytest.approx(1.0) and r["AR100"] == pytest.approx(1.0)
    assert r["per_class_AP"] == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}


def test_no_detections_score_zero():
    r = score_detections(_gt(BOXES, LABELS), [_det([], [], []), _det([], [], [])])
    assert r["AP"] == 0.0 and r["AP50"] == 0.0 and r["per_class_AP"]["a"] == 0.0


def test_shifted_boxes_known_value():
    """Every detection overlaps its object at IoU 0.62: a hit at thresholds 0.50, 0.55, 0.60 and a miss at
    the seven above, so AP = 3/10, AP50 = 1, AP75 = 0."""
    gt = _gt([[[0, 0, 100, 100]], [[50, 50, 150, 150]]], [[1], [1]], names=("a",))
    dets = [_det([[0, 0, 100, 62]], [0.8], [1]), _det([[50, 50, 150, 112]], [0.7], [1])]
    r = score_detections(gt, dets)
    assert r["AP"] == pytest.approx(0.3) and r["AP50"] == pytest.approx(1.0) and r["AP75"] == pytest.approx(0.0)
    assert math.isnan(r["APs"])  # no small objects: undefined, not 0


def test_half_found_with_a_false_positive():
    """Two objects; the best-scored detection hits one, a lower-scored one misses: precision 1 up to recall
    0.5, then nothing: 101-point interpolated AP = 51/101."""
    gt = _gt([[[0, 0, 50, 50], [100, 100, 150, 150]]], [[1, 1]], names=("a",))
    dets = [_det([[0, 0, 50, 50], [300, 300, 350, 350]], [0.9, 0.5], [1, 1])]
    r = score_detections(gt, dets)
    assert r["AP50"] == pytest.approx(51 / 101)
    assert r["precision"].shape == (10, 101, 1)


def test_crowd_regions_are_ignored_not_missed():
    gt = _gt([[[0, 0, 50, 50]]], [[1]], crowd=[(0, [100, 100, 200, 200])], names=("a",))
    dets = [_det([[0, 0, 50, 50], [110, 110, 190, 190]], [0.9, 0.8], [1, 1])]  # the second lies in the crowd
    assert score_detections(gt, dets)["AP50"] == pytest.approx(1.0)


def test_ground_truth_from_datasets_round_trips(tmp_path):
    ds = ShapesDataset(6, seed=3, image_size=96)
    gt = coco_ground_truth(ds)
    assert len(gt["images"]) == 6 and len(gt["annotations"]) == sum(len(ds[i][1]["boxes"]) for i in range(6))
    dets = [ds[i][1] | {"scores": torch.ones(len(ds[i][1]["labels"]))} for i in range(6)]
    assert score_detections(gt, dets)["AP"] == pytest.approx(1.0)
    from retinanet_lab.data import CocoDataset

    path = export_coco(ds, tmp_path, progress=False)
    assert score_detections(coco_ground_truth(CocoDataset(tmp_path / "images", path)), dets)["AP"] == pytest.approx(1.0)


def test_evaluate_runs_a_model_end_to_end():
    ds = ShapesDataset(4, seed=0, image_size=96)
    model = RetinaNet(5, backbone="resnet18", fpn_channels=32, head_channels=32, head_convs=1, min_size=96, max_size=96,
                      prior_prob=0.2)  # untrained but above the score threshold: some detections to score
    r = evaluate(model, ds, batch_size=2, progress=False)
    assert r["num_detections"] > 0 and 0 <= r["AP"] < 0.2 and set(r["per_class_AP"]) == set(ds.class_names)


def test_find_errors_hand_case():
    from retinanet_lab.evaluate import find_errors

    class Two:
        def __getitem__(self, i):
            boxes = [torch.tensor([[0.0, 0, 20, 20], [50, 50, 150, 150]]), torch.zeros(0, 4)][i]
            return torch.zeros(3, 200, 200), {"boxes": boxes, "labels": torch.tensor([1, 2][: len(boxes)])}

        def __len__(self):
            return 2

    dets = [_det([[0, 0, 20, 20], [0, 0, 21, 20], [52, 50, 150, 150]], [0.9, 0.8, 0.7], [1, 1, 1]),  # hit, duplicate, wrong class
            _det([[10, 10, 110, 110], [0, 0, 5, 5]], [0.95, 0.2], [2, 2])]  # hallucination; one below the score threshold
    e = find_errors(Two(), dets, score_thresh=0.5)
    assert e["true_positives"] == 1
    assert [(f["image"], f["size"]) for f in e["false_positives"]] == [(0, "small"), (0, "large"), (1, "large")]
    assert e["false_positives"][1]["iou"] > 0.9  # the right place, the wrong class
    assert [(m["image"], m["label"], m["size"]) for m in e["misses"]] == [(0, 2, "large")]
    assert e["by_size"]["large"] == {"misses": 1, "false_positives": 2}
    # the class on the other side: a confusion names it, a hallucination has none; lists are sorted by area
    assert [f["other_label"] for f in e["false_positives"]] == [1, 2, None]
    assert e["misses"][0]["other_label"] == 1 and e["misses"][0]["area"] == 100 * 100
    assert [f["area"] for f in e["false_positives"]] == sorted(f["area"] for f in e["false_positives"])
    # the second detection of the found object is a duplicate (IoU 0.95 with it); the others are not
    assert [f["duplicate"] for f in e["false_positives"]] == [True, False, False]
    # and the gallery captions them so: a duplicate, a confusion, a hallucination
    import matplotlib
    import matplotlib.pyplot as plt

    from retinanet_lab.viz import error_gallery

    matplotlib.use("Agg")
    fig = error_gallery(Two(), e["false_positives"], ["a", "b"], "false positives")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert "a duplicate" in titles[0] and "is a b?" in titles[1] and "no object near" in titles[2], titles
    plt.close(fig)
