"""From logits and deltas to detections (paper section 4.1, "Inference"), for a whole batch at once.

Per pyramid level: keep at most `topk_candidates` (1000) predictions whose score σ(logit) exceeds
`score_thresh` (0.05), and decode their boxes from their anchors (the paper). Then, per image, merge the
levels, apply non-maximum suppression at IoU `nms_thresh` (0.5, the paper), per class (Detectron's choice,
which the paper does not state), and keep the best `detections_per_img` (100, Detectron's: COCO's limit;
torchvision keeps 300).

Three stages, each a function: `select` (threshold and top-k per level), `decode` (the candidates' boxes) and `nms`;
`postprocess_detections` runs them, for `RetinaNet.forward` and for `inference_steps`, which shows one image's
pass stage by stage (what the lessons' detection explorers draw): a `record` dict, when given, receives each
stage's output; None records nothing.

torchvision loops over images and levels in Python; here every step runs on the batch: the
candidates of all images at once, one NMS call for all images and classes (boxes of different image or class are moved
apart so they never overlap, computed in float64 so the shift costs no precision).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple

import torch
from torch import Tensor
from torchvision import ops

from .boxes import clip_boxes, decode_boxes
from .config import ArchitectureConfig, InferenceConfig

__all__ = ["postprocess_detections", "select", "decode", "nms", "Candidates", "top_candidates", "best_per_image",
           "batched_nms", "inference_steps", "InferenceConfig"]

BOX_WEIGHTS = ArchitectureConfig.box_weights  # the box coding's default weights, (1, 1, 1, 1)


class Candidates(NamedTuple):
    """One level's selected (anchor, class) pairs, grouped by image, best first within each image."""

    image: Tensor  # (N_l,) image index
    anchor: Tensor  # (N_l,) anchor index within the level
    label: Tensor  # (N_l,) class, 1..K
    logit: Tensor  # (N_l,)


def top_candidates(logits: Tensor, topk: int, score_thresh: float, record: dict | None = None
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per image, the (at most) top-k (anchor, class) pairs whose score σ(logit) exceeds `score_thresh`, taken
    from the flattened A_l * K scores (every class of every anchor competes), grouped by image, best first.

    logits (B, A_l, K) -> image index (N,), anchor index (N,), class index (N,) in 0..K-1, logit (N,).
    The threshold is applied to the logits (σ(x) > t <=> x > log(t / (1 - t))), so that the sigmoid and the
    sort only touch the candidates, not all B * A_l * K outputs. `record`, if given, receives "above_thresh":
    each image's count of scores above the threshold, (B,).
    """
    num_images, num_classes = logits.shape[0], logits.shape[-1]
    flat = logits.flatten(1)  # (B, A_l*K)
    logit_thresh = math.log(score_thresh / (1 - score_thresh)) if 0 < score_thresh < 1 else -math.inf
    img, idx = torch.nonzero(flat > logit_thresh, as_tuple=True)  # (N,) each
    if record is not None:
        record["above_thresh"] = torch.bincount(img, minlength=num_images)
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
    return ops.nms(boxes64 + offsets[:, None], scores.double(), iou_threshold)


# ---- the three stages ----------------------------------------------------------------------------------------------
def select(cls_logits: list[Tensor], config: InferenceConfig, record: dict | None = None) -> list[Candidates]:
    """Stage "select": on each level, per image, the top `topk_candidates` (anchor, class) pairs scoring above
    `score_thresh` (section 4.1). cls_logits per level (B, A_l, K) -> Candidates per level. `record` receives
    "select" (the Candidates) and "above_thresh" (per level, each image's count of scores above the threshold)."""
    levels, above = [], []
    for logits in cls_logits:
        counts = {} if record is not None else None
        img, anchor, cls, logit = top_candidates(logits, config.topk_candidates, config.score_thresh, counts)
        levels.append(Candidates(img, anchor, cls + 1, logit))
        above.append(counts["above_thresh"] if counts is not None else None)
    if record is not None:
        record.update(select=levels, above_thresh=above)
    return levels


def decode(box_deltas: list[Tensor], anchors: list[Tensor], candidates: list[Candidates], image_sizes: Tensor,
           box_weights=BOX_WEIGHTS, record: dict | None = None) -> list[Tensor]:
    """Stage "decode": each candidate's box from its anchor and predicted deltas, clipped to its image; per level
    (N_l, 4). Only the candidates are decoded, not all B * A_l outputs. box_deltas per level (B, A_l, 4), anchors
    per level (A_l, 4), image_sizes (B, 2) as (h, w)."""
    boxes = []
    for deltas, level_anchors, c in zip(box_deltas, anchors, candidates):
        decoded = decode_boxes(deltas[c.image, c.anchor], level_anchors[c.anchor], box_weights)  # (N_l, 4)
        boxes.append(clip_boxes(decoded, image_sizes[c.image, 0], image_sizes[c.image, 1]))
    if record is not None:
        record["decode"] = boxes
    return boxes


def nms(boxes: Tensor, scores: Tensor, image: Tensor, labels: Tensor, num_images: int, num_classes: int,
        config: InferenceConfig, record: dict | None = None) -> Tensor:
    """Stage "nms": non-maximum suppression at `nms_thresh` within each image and class (one call for all), then
    each image's best `detections_per_img`. The candidates of all levels (N,) -> the kept ones' indices, grouped by
    image, best first."""
    by_score = batched_nms(boxes, scores, image * (num_classes + 1) + labels, config.nms_thresh)
    kept = best_per_image(image, by_score, num_images, config.detections_per_img)
    if record is not None:
        record["nms"] = kept
    return kept


def _config(config: InferenceConfig | None, overrides: dict) -> InferenceConfig:
    if config is not None and not isinstance(config, InferenceConfig):
        raise TypeError(f"config must be an InferenceConfig (or pass score_thresh=..., nms_thresh=... by keyword), "
                        f"got {type(config).__name__}")
    config = InferenceConfig() if config is None else config
    return replace(config, **overrides) if overrides else config


def postprocess_detections(
    cls_logits: list[Tensor],
    box_deltas: list[Tensor],
    anchors: list[Tensor],
    image_sizes: list[tuple[int, int]],
    config: InferenceConfig | None = None,
    box_weights=BOX_WEIGHTS,
    record: dict | None = None,
    **overrides,
) -> list[dict[str, Tensor]]:
    """Per-level logits (B, A_l, K), deltas (B, A_l, 4) and anchors (A_l, 4) -> one dict per image
    with "boxes" (N, 4) in the (resized) image's pixels, "scores" (N,) and "labels" (N,) in 1..K.

    `select`, `decode`, `nms`, with the settings of `config` (None: InferenceConfig(); keyword `overrides` replace its fields:
    score_thresh=0.3). `record`, if given, receives each stage's output, and "candidates": all levels'
    candidates merged, {"image", "scores", "labels", "boxes"}, which the kept indices ("nms") index."""
    config = _config(config, overrides)
    num_images, num_classes = cls_logits[0].shape[0], cls_logits[0].shape[-1]
    sizes = torch.tensor(image_sizes, dtype=box_deltas[0].dtype, device=cls_logits[0].device)  # (B, 2)
    candidates = select(cls_logits, config, record)  # per level
    boxes = torch.cat(decode(box_deltas, anchors, candidates, sizes, box_weights, record))  # (N, 4), all levels
    image, labels, logits = (torch.cat(x) for x in zip(*[(c.image, c.label, c.logit) for c in candidates]))  # (N,) each
    scores = torch.sigmoid(logits)
    kept = nms(boxes, scores, image, labels, num_images, num_classes, config, record)
    if record is not None:
        record["candidates"] = {"image": image, "scores": scores, "labels": labels, "boxes": boxes}
    counts = torch.bincount(image[kept], minlength=num_images).tolist()
    return [
        {"boxes": b, "scores": s, "labels": lab}
        for b, s, lab in zip(boxes[kept].split(counts), scores[kept].split(counts), labels[kept].split(counts))
    ]


def inference_steps(cls_logits: list[Tensor], box_deltas: list[Tensor], anchors: list[Tensor], image_size: tuple[int, int],
                    config: InferenceConfig | None = None, box_weights=BOX_WEIGHTS, **overrides) -> dict:
    """`postprocess_detections` on one image, stage by stage, for teaching: the same calls, recorded.

    cls_logits per level (A_l, K), box_deltas per level (A_l, 4), anchors per level (A_l, 4) ->
        "levels": per level {"outputs": A_l * K, "above_thresh": how many scores exceed score_thresh, "kept_topk"},
        "candidates": the top-k of every level, merged: "scores", "labels", "level", "anchors" (their anchors) and
            "boxes" (decoded and clipped),
        "kept": indices into the candidates that survive NMS (best first, at most detections_per_img),
        "suppressed": the other candidates' indices,
        "detections": {"boxes", "scores", "labels"}, as postprocess_detections returns them.
    """
    record = {}
    detections = postprocess_detections([lg[None] for lg in cls_logits], [d[None] for d in box_deltas], anchors,
                                        [tuple(image_size)], _config(config, overrides), box_weights, record)[0]
    return steps_of(record, cls_logits, anchors, detections)


def steps_of(record: dict, cls_logits: list[Tensor], anchors: list[Tensor], detections: dict) -> dict:
    """`inference_steps`'s dict from the record of one image's post-processing (cls_logits per level (A_l, K))."""
    selected, merged, kept = record["select"], record["candidates"], record["nms"]
    levels = [{"outputs": lg.numel(), "above_thresh": int(above[0]),
               "kept_topk": c.logit.numel()} for lg, above, c in zip(cls_logits, record["above_thresh"], selected)]
    suppressed = torch.ones(len(merged["scores"]), dtype=torch.bool, device=kept.device)
    suppressed[kept] = False
    candidates = {"scores": merged["scores"], "labels": merged["labels"],
                  "level": torch.cat([torch.full_like(c.anchor, i) for i, c in enumerate(selected)]),
                  "anchors": torch.cat([a[c.anchor] for a, c in zip(anchors, selected)]), "boxes": merged["boxes"]}
    return {"levels": levels, "candidates": candidates, "kept": kept, "suppressed": torch.nonzero(suppressed).squeeze(1),
            "detections": detections}
