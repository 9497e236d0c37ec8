"""COCO-style evaluation with pycocotools' COCOeval: AP over IoU 0.50:0.95, AP50, AP75, by object size,
AR@100, per-class AP, and the precision/recall curves behind them.

    result = evaluate(model, dataset)           # runs inference batched, then scores it
    result["AP"], result["AP50"], result["per_class_AP"]["circle"]

Any dataset of `retinanet_lab.data` works: its ground truth is converted to COCO form (crowd boxes of
COCO and difficult objects of VOC become iscrowd=1, which COCOeval ignores rather than counts as
misses). `score_detections(ground_truth, detections)` is the scoring alone.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import torch

__all__ = ["coco_ground_truth", "predict", "score_detections", "evaluate", "find_errors", "SUMMARY_KEYS"]

SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _target(dataset, index: int) -> dict:
    """Ground truth of one image, without decoding the image when the dataset can say it directly."""
    if hasattr(dataset, "annotation"):
        return dataset.annotation(index)
    return dataset[index][1]


def coco_ground_truth(dataset, class_names: list[str] | None = None) -> dict:
    """The ground truth of `dataset` as a COCO dict: image ids 1..N in dataset order, category ids = labels."""
    names = class_names or getattr(dataset, "class_names", None)
    if names is None:
        raise ValueError("the dataset has no class_names: pass class_names=[...]")
    images, annotations = [], []
    for index in range(len(dataset)):
        target = _target(dataset, index)
        images.append({"id": index + 1})
        for key, crowd in (("boxes", 0), ("crowd_boxes", 1)):
            labels = target["labels" if key == "boxes" else "crowd_labels"] if key in target else []
            for box, label in zip(target.get(key, torch.zeros(0, 4)).tolist(), torch.as_tensor(labels).tolist()):
                x1, y1, x2, y2 = box
                annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": int(label),
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": crowd})
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    return {"images": images, "annotations": annotations, "categories": categories}


@torch.no_grad()
def predict(model, dataset, batch_size: int = 8, device=None, progress: bool = True, num_workers: int = 0) -> list[dict]:
    """Detections for every image of `dataset`, in order, on the CPU."""
    from tqdm.auto import tqdm

    from .data.loader import make_loader

    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for images, _ in tqdm(loader, desc="predict", disable=not progress, leave=False):
        for det in model([img.to(device) for img in images]):
            out.append({k: v.detach().cpu() for k, v in det.items()})
    model.train(was_training)
    return out


def score_detections(ground_truth: dict, detections: list[dict], max_dets: int = 100) -> dict:
    """COCOeval (bbox) of `detections` (one dict of boxes xyxy, scores, labels per image, in the order of
    ground_truth["images"]) against a COCO ground-truth dict. Metrics with no ground truth are NaN."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(detections) != len(ground_truth["images"]):
        raise ValueError(f"{len(detections)} detection dicts for {len(ground_truth['images'])} images")
    gt = COCO()
    gt.dataset = {"images": ground_truth["images"], "annotations": ground_truth["annotations"],
                  "categories": ground_truth["categories"]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    results = []
    for image, det in zip(ground_truth["images"], detections):
        for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
            x1, y1, x2, y2 = box
            results.append({"image_id": image["id"], "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": float(score)})
    names = [c["name"] for c in ground_truth["categories"]]
    has_gt = any(not a.get("iscrowd", 0) for a in ground_truth["annotations"])
    if not results:  # nothing detected: every metric is 0 where there is something to find
        zero = 0.0 if has_gt else math.nan
        return {**{k: zero for k in SUMMARY_KEYS}, "per_class_AP": {n: zero for n in names}, "precision": None,
                "recall_thresholds": None, "iou_thresholds": None, "num_detections": 0}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(s) if s > -1 else math.nan for s in ev.stats]
    precision = ev.eval["precision"]  # (T IoU, R recall, K classes, A areas, M maxDets), -1 where undefined
    per_class = {}
    for k, name in enumerate(names):
        p = precision[:, :, k, 0, -1]
        per_class[name] = float(p[p > -1].mean()) if (p > -1).any() else math.nan
    return {**dict(zip(SUMMARY_KEYS, stats)), "per_class_AP": per_class, "precision": precision[:, :, :, 0, -1],
            "recall_thresholds": np.asarray(ev.params.recThrs), "iou_thresholds": np.asarray(ev.params.iouThrs),
            "num_detections": len(results)}


def evaluate(model, dataset, batch_size: int = 8, device=None, progress: bool = True, max_dets: int = 100) -> dict:
    """Run `model` on every image of `dataset` and score it with COCOeval (see `score_detections`).

    The result's "precision" is (10 IoU thresholds, 101 recall points, K classes): the PR curve of class k
    at IoU 0.5 is result["precision"][0, :, k] against result["recall_thresholds"].
    """
    detections = predict(model, dataset, batch_size, device, progress)
    names = getattr(dataset, "class_names", None) or getattr(model, "class_names", None)
    return score_detections(coco_ground_truth(dataset, names), detections, max_dets)


SIZE_NAMES = (("small", 0, 32**2), ("medium", 32**2, 96**2), ("large", 96**2, float("inf")))  # COCO's areas


def _area(box) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


def _size_name(box) -> str:
    area = _area(box)
    return next(name for name, lo, hi in SIZE_NAMES if lo <= area < hi)


def find_errors(dataset, detections: list[dict], iou_thresh: float = 0.5, score_thresh: float = 0.5) -> dict:
    """False positives and missed objects at one operating point, grouped by COCO object size.

    Detections above `score_thresh` are matched greedily, best score first, to the unmatched ground-truth box
    of the same class with the highest IoU >= `iou_thresh` (as COCOeval does at one IoU). Returns
    {"false_positives": [...], "misses": [...], "true_positives": int, "by_size": {size: {"misses", "false_positives"}}}
    where each error is {"image": index, "box", "label", "score" (false positives), "size", "area" (px²), "iou" (best
    IoU with a box of the other side, of any class: high for a confused class or a poorly placed box, near 0 for a
    hallucination or an object nothing looked at), "other_label" (the class of that best-overlapping box, None if none)}.
    A false positive also says whether it is a "duplicate": IoU >= `iou_thresh` with an object of its class that a
    better-scoring detection had already matched (a second detection NMS left, not a poor box).
    Both lists are sorted by area, smallest first.
    """
    from .boxes import box_iou

    fps, misses, tp = [], [], 0
    for index, det in enumerate(detections):
        target = _target(dataset, index)
        gt, gl = target["boxes"].float(), target["labels"]
        keep = det["scores"] >= score_thresh
        boxes, scores, labels = det["boxes"][keep], det["scores"][keep], det["labels"][keep]
        iou = box_iou(boxes, gt) if len(gt) and len(boxes) else torch.zeros(len(boxes), len(gt))
        same = (labels[:, None] == gl[None, :]) if len(gt) else torch.zeros(len(boxes), 0, dtype=torch.bool)
        taken = torch.zeros(len(gt), dtype=torch.bool)
        for i in torch.argsort(scores, descending=True).tolist():
            cand = torch.where(same[i] & ~taken, iou[i], torch.full_like(iou[i], -1.0)) if len(gt) else iou[i]
            if len(gt) and cand.max() >= iou_thresh:
                taken[int(cand.argmax())] = True
                tp += 1
            else:
                best = float(iou[i].max()) if len(gt) else 0.0
                other = int(gl[int(iou[i].argmax())]) if len(gt) and best > 0 else None
                duplicate = bool(len(gt) and ((same[i] & taken) & (iou[i] >= iou_thresh)).any())
                fps.append({"image": index, "box": boxes[i].tolist(), "label": int(labels[i]), "score": float(scores[i]),
                            "size": _size_name(boxes[i]), "area": _area(boxes[i]), "iou": best, "other_label": other,
                            "duplicate": duplicate})
        for j in torch.nonzero(~taken).flatten().tolist():
            best = float(iou[:, j].max()) if len(boxes) else 0.0
            other = int(labels[int(iou[:, j].argmax())]) if len(boxes) and best > 0 else None
            misses.append({"image": index, "box": gt[j].tolist(), "label": int(gl[j]), "size": _size_name(gt[j]),
                           "area": _area(gt[j]), "iou": best, "other_label": other})
    fps.sort(key=lambda e: e["area"])
    misses.sort(key=lambda e: e["area"])
    by_size = {name: {"misses": sum(m["size"] == name for m in misses), "false_positives": sum(f["size"] == name for f in fps)}
               for name, _, _ in SIZE_NAMES}
    return {"false_positives": fps, "misses": misses, "true_positives": tp, "by_size": by_size}
