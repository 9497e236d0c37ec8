"""From logits and deltas to detections (paper section 4.1, "Inference"), for a whole batch at once.

Per pyramid level: keep at most `topk_candidates` (1000) predictions whose score σ(logit) exceeds
`score_thresh` (0.05), and decode their boxes from their anchors (the paper). Then, per image, merge the
levels, apply non-maximum suppression at IoU `nms_thresh` (0.5, the paper), per class (Detectron's choice,
which the paper does not state), and keep the best `detections_per_img` (100, Detectron's: COCO's limit;
torchvision keeps 300).

torchvision loops over images and levels in Python; here every step runs on the batch: the
candidates of all images at once, one NMS call for all images and classes (boxes of different image or class are moved
apart so they never overlap, computed in float64 so the shift costs no precision).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import nms

from .boxes import clip_boxes, decode_boxes

__all__ = ["postprocess_detections", "select_candidates", "top_candidates", "best_per_image", "batched_nms", "inference_steps"]


def select_candidates(logits: Tensor, deltas: Tensor, anchors: Tensor, image_sizes: Tensor, topk: int, score_thresh: float,
                      box_weights=(1.0, 1.0, 1.0, 1.0)) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One level: per image, the (at most) top-k (anchor, class) pairs scoring above the threshold.

    logits (B, A_l, K), deltas (B, A_l, 4), anchors (A_l, 4), image_sizes (B, 2) as (h, w) ->
    image index (N,), scores (N,), labels (N,) in 1..K, boxes (N, 4) decoded and clipped.
    The selection is `top_candidates`; the decoding only touches the candidates, not all B * A_l outputs.
    """
    img, anchor_idx, class_idx, cand = top_candidates(logits, topk, score_thresh)
    boxes = decode_boxes(deltas[img, anchor_idx], anchors[anchor_idx], box_weights)  # (N, 4)
    boxes = clip_boxes(boxes, image_sizes[img, 0], image_sizes[img, 1])
    return img, torch.sigmoid(cand), class_idx + 1, boxes


def top_candidates(logits: Tensor, topk: int, score_thresh: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per image, the (at most) top-k (anchor, class) pairs whose score σ(logit) exceeds `score_thresh`, taken
    from the flattened A_l * K scores (every class of every anchor competes), grouped by image, best first.

    logits (B, A_l, K) -> image index (N,), anchor index (N,), class index (N,) in 0..K-1, logit (N,).
    The threshold is applied to the logits (σ(x) > t <=> x > log(t / (1 - t))), so that the sigmoid and the
    sort only touch the candidates, not all B * A_l * K outputs.
    """
    num_images, num_classes = logits.shape[0], logits.shape[-1]
    flat = logits.flatten(1)  # (B, A_l*K)
    logit_thresh = math.log(score_thresh / (1 - score_thresh)) if 0 < score_thresh < 1 else -math.inf
    img, idx = torch.nonzero(flat > logit_thresh, as_tuple=True)  # (N,) each
    cand = flat[img, idx]
    keep = best_per_image(img, torch.argsort(cand, descending=True, stable=True), num_images, topk)
    img, idx, cand = img[keep], idx[keep], cand[keep]
    return img, torch.div(idx, num_classes, rounding_mode="floor"), idx % num_classes, cand


def best_per_image(image_index: Tensor, ranked: Tensor, num_images: int, k: int) -> Tensor:
    """`ranked` indexes items by decreasing score; returns them grouped by image (in image order), best
    first within each image, at most k per image. image_index gives each item's image."""
    ranked = ranked[torch.sort(image_index[ranked], stable=True).indices]
    counts = torch.bincount(image_index[ranked], minlength=num_images)  # (B,)
    rank = torch.arange(ranked.numel(), device=ranked.device) - (torch.cumsum(counts, 0) - counts)[image_index[ranked]]
    return ranked[rank < k]


def batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each group (image x class) in one call; indices sorted by decreasing score."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    boxes64 = boxes.double()
    offsets = groups.double() * (boxes64.max() - boxes64.min() + 1)  # groups never overlap
    return nms(boxes64 + offsets[:, None], scores.double(), iou_threshold)


def postprocess_detections(
    cls_logits: list[Tensor],
    box_deltas: list[Tensor],
    anchors: list[Tensor],
    image_sizes: list[tuple[int, int]],
    score_thresh: float = 0.05,
    topk_candidates: int = 1000,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    box_weights=(1.0, 1.0, 1.0, 1.0),
) -> list[dict[str, Tensor]]:
    """Per-level logits (B, A_l, K), deltas (B, A_l, 4) and anchors (A_l, 4) -> one dict per image
    with "boxes" (N, 4) in the (resized) image's pixels, "scores" (N,) and "labels" (N,) in 1..K."""
    num_images, num_classes = cls_logits[0].shape[0], cls_logits[0].shape[-1]
    device = cls_logits[0].device
    sizes = torch.tensor(image_sizes, dtype=box_deltas[0].dtype, device=device)  # (B, 2)
    parts = [select_candidates(lg, dl, an, sizes, topk_candidates, score_thresh, box_weights)
             for lg, dl, an in zip(cls_logits, box_deltas, anchors)]
    img_idx, scores, labels, boxes = (torch.cat(p) for p in zip(*parts))  # all levels' candidates
    kept = batched_nms(boxes, scores, img_idx * (num_classes + 1) + labels, nms_thresh)  # by score
    kept = best_per_image(img_idx, kept, num_images, detections_per_img)
    counts = torch.bincount(img_idx[kept], minlength=num_images).tolist()
    return [
        {"boxes": b, "scores": s, "labels": lab}
        for b, s, lab in zip(boxes[kept].split(counts), scores[kept].split(counts), labels[kept].split(counts))
    ]


def inference_steps(cls_logits: list[Tensor], box_deltas: list[Tensor], anchors: list[Tensor], image_size: tuple[int, int],
                    score_thresh: float = 0.05, topk_candidates: int = 1000, nms_thresh: float = 0.5,
                    detections_per_img: int = 100, box_weights=(1.0, 1.0, 1.0, 1.0)) -> dict:
    """`postprocess_detections` for one image, stage by stage, for teaching (the batched function is the fast path;
    a test checks that both give the same detections).

    cls_logits per level (A_l, K), box_deltas per level (A_l, 4), anchors per level (A_l, 4) ->
        "levels": per level {"outputs": A_l * K, "above_thresh": how many scores exceed score_thresh, "kept_topk"},
        "candidates": the top-k of every level, merged: "scores", "labels", "level", "anchors" (their anchors) and
            "boxes" (decoded and clipped),
        "kept": indices into the candidates that survive NMS (best first, at most detections_per_img),
        "suppressed": the other candidates' indices,
        "detections": {"boxes", "scores", "labels"}, as postprocess_detections returns them.
    """
    h, w = image_size
    num_classes = cls_logits[0].shape[-1]
    levels, parts = [], []
    for i, (lg, dl, an) in enumerate(zip(cls_logits, box_deltas, anchors)):
        scores = torch.sigmoid(lg.flatten())  # (A_l * K,)
        above = torch.nonzero(scores > score_thresh).squeeze(1)
        order = torch.argsort(scores[above], descending=True, stable=True)[:topk_candidates]
        idx = above[order]
        anchor_idx = torch.div(idx, num_classes, rounding_mode="floor")
        boxes = clip_boxes(decode_boxes(dl[anchor_idx], an[anchor_idx], box_weights), h, w)
        levels.append({"outputs": scores.numel(), "above_thresh": above.numel(), "kept_topk": idx.numel()})
        parts.append((scores[idx], idx % num_classes + 1, torch.full_like(idx, i), an[anchor_idx], boxes))
    scores, labels, level, cand_anchors, boxes = (torch.cat(p) for p in zip(*parts))
    kept = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
    suppressed = torch.ones(len(scores), dtype=torch.bool, device=scores.device)
    suppressed[kept] = False
    return {"levels": levels,
            "candidates": {"scores": scores, "labels": labels, "level": level, "anchors": cand_anchors, "boxes": boxes},
            "kept": kept, "suppressed": torch.nonzero(suppressed).squeeze(1),
            "detections": {"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept]}}
