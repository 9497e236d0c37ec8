"""From logits and deltas to detections (paper section 4, "Inference"), for a whole batch at once.

Per pyramid level: keep at most `topk_candidates` (1000) predictions whose score σ(logit) exceeds
`score_thresh` (0.05), and decode their boxes from their anchors. Then, per image, merge the levels,
apply non-maximum suppression per class at IoU `nms_thresh` (0.5) and keep the best
`detections_per_img` (100 in the paper and here; torchvision keeps 300).

torchvision loops over images and levels in Python; here every step runs on the batch: top-k on
(B, A_l*K), one NMS call for all images and classes (boxes of different image or class are moved
apart so they never overlap, computed in float64 so the shift costs no precision).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import nms

from .boxes import clip_boxes, decode_boxes

__all__ = ["postprocess_detections", "select_candidates", "batched_nms"]


def select_candidates(logits: Tensor, deltas: Tensor, anchors: Tensor, topk: int, score_thresh: float,
                      box_weights=(1.0, 1.0, 1.0, 1.0)) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One level: the top-k scoring (anchor, class) pairs of each image and their decoded boxes.

    logits (B, A_l, K), deltas (B, A_l, 4), anchors (A_l, 4) ->
    scores (B, k), labels (B, k) in 1..K, boxes (B, k, 4), keep (B, k) = score > score_thresh.
    """
    num_classes = logits.shape[-1]
    scores = torch.sigmoid(logits.flatten(1))  # (B, A_l*K)
    k = min(topk, scores.shape[1])
    top_scores, top_idx = scores.topk(k, dim=1)  # (B, k), sorted
    anchor_idx = torch.div(top_idx, num_classes, rounding_mode="floor")  # (B, k)
    labels = top_idx % num_classes + 1  # (B, k), 1-based
    top_deltas = torch.gather(deltas, 1, anchor_idx.unsqueeze(-1).expand(-1, -1, 4))  # (B, k, 4)
    boxes = decode_boxes(top_deltas, anchors[anchor_idx], box_weights)  # (B, k, 4)
    return top_scores, labels, boxes, top_scores > score_thresh


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
    parts = [select_candidates(lg, dl, an, topk_candidates, score_thresh, box_weights)
             for lg, dl, an in zip(cls_logits, box_deltas, anchors)]
    scores, labels, boxes, keep = (torch.cat(p, dim=1) for p in zip(*parts))  # (B, L*k[, 4])
    hw = torch.tensor(image_sizes, dtype=boxes.dtype, device=device)  # (B, 2)
    boxes = clip_boxes(boxes, hw[:, 0:1], hw[:, 1:2])

    img_idx, cand_idx = torch.nonzero(keep, as_tuple=True)  # candidates above the threshold
    boxes, scores, labels = boxes[img_idx, cand_idx], scores[img_idx, cand_idx], labels[img_idx, cand_idx]
    kept = batched_nms(boxes, scores, img_idx * (num_classes + 1) + labels, nms_thresh)  # by score
    kept = kept[torch.sort(img_idx[kept], stable=True).indices]  # grouped by image, by score within
    counts = torch.bincount(img_idx[kept], minlength=num_images)  # (B,)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(kept.numel(), device=device) - starts[img_idx[kept]]
    kept = kept[rank < detections_per_img]
    counts = counts.clamp(max=detections_per_img).tolist()
    return [
        {"boxes": b, "scores": s, "labels": lab}
        for b, s, lab in zip(boxes[kept].split(counts), scores[kept].split(counts), labels[kept].split(counts))
    ]
