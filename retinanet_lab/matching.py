"""Assigning anchors to ground-truth boxes (paper section 4, "Anchors").

Each anchor takes the ground-truth box it overlaps most. It is

    foreground  (matched index >= 0)   if that IoU >= 0.5,
    background  (BACKGROUND = -1)      if that IoU <  0.4,
    ignored     (IGNORE = -2)          in between: it gets no classification loss.

With `allow_low_quality=True` (the default) every box also claims the anchor(s) it overlaps most,
ties included, even below 0.5, so that almost no object goes without a positive anchor (a claimed anchor
goes to its own best box, so of two boxes that overlap heavily one can still get none). The paper's text gives
only the thresholds; it builds on "the assignment rule from RPN", whose condition (i) is this rule.
torchvision keeps such a match at any IoU, as here; Detectron only at IoU >= 0.4 (it assigns background
after it). Such an anchor is then matched to its own best box, exactly as torchvision's
`Matcher` does. One guard torchvision lacks: a box that overlaps no anchor at all (IoU 0
everywhere) claims nothing, instead of turning every non-overlapping anchor into foreground.

The whole batch is matched at once: ground truth is padded to (B, G, 4) with a (B, G) mask.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from .boxes import batched_box_iou
from .config import MatchingConfig

__all__ = ["BACKGROUND", "IGNORE", "Matches", "MatchingConfig", "assign_from_iou", "match_anchors", "pad_targets"]

BACKGROUND = -1
IGNORE = -2


class Matches(NamedTuple):
    index: Tensor  # (B, A) int64: matched box index, BACKGROUND or IGNORE
    iou: Tensor  # (B, A): IoU with the best box (-1 where the image has no box)


def pad_targets(boxes: list[Tensor], labels: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack per-image boxes (G_i, 4) and labels (G_i,) into (B, G, 4), (B, G) and a (B, G) mask."""
    counts = torch.tensor([b.shape[0] for b in boxes], device=boxes[0].device)  # (B,)
    padded_boxes = pad_sequence(boxes, batch_first=True)  # (B, G, 4)
    padded_labels = pad_sequence([lab.to(torch.int64) for lab in labels], batch_first=True)  # (B, G)
    valid = torch.arange(padded_boxes.shape[1], device=counts.device)[None, :] < counts[:, None]  # (B, G)
    return padded_boxes, padded_labels, valid


def assign_from_iou(
    iou: Tensor,
    valid: Tensor | None = None,
    fg_iou: float = MatchingConfig.fg_iou,
    bg_iou: float = MatchingConfig.bg_iou,
    allow_low_quality: bool = MatchingConfig.allow_low_quality_matches,
) -> Matches:
    """The matching rule on an IoU matrix: iou (B, G, A) of every box with every anchor, valid (B, G) the real
    (not padded) boxes, or None when all are real. Returns each anchor's box index, BACKGROUND or IGNORE (B, A),
    and its best IoU (B, A), -1 where the image has no box."""
    if not bg_iou <= fg_iou:
        raise ValueError(f"bg_iou ({bg_iou}) must be <= fg_iou ({fg_iou})")
    num_images, num_boxes, num_anchors = iou.shape
    if num_boxes == 0:  # no box in any image: everything is background
        index = torch.full((num_images, num_anchors), BACKGROUND, dtype=torch.int64, device=iou.device)
        return Matches(index, torch.full(index.shape, -1.0, dtype=iou.dtype, device=iou.device))
    if valid is not None:
        iou = iou.masked_fill(~valid[:, :, None], -1.0)  # padding never wins
    best_iou, best_gt = iou.max(dim=1)  # (B, A) each: every anchor's best box

    index = torch.where(best_iou >= fg_iou, best_gt, torch.full_like(best_gt, IGNORE))
    index = torch.where(best_iou < bg_iou, torch.full_like(best_gt, BACKGROUND), index)

    if allow_low_quality:
        best_per_gt = iou.max(dim=2, keepdim=True).values  # (B, G, 1)
        claims = (iou == best_per_gt) & (best_per_gt > 0)  # (B, G, A): a box's best anchor(s)
        index = torch.where(claims.any(dim=1), best_gt, index)  # matched to its own best box, as torchvision
    return Matches(index, best_iou)


def match_anchors(
    anchors: Tensor,
    gt_boxes: Tensor,
    gt_valid: Tensor,
    config: MatchingConfig | None = None,
    **overrides,
) -> Matches:
    """Match anchors (A, 4) to padded boxes gt_boxes (B, G, 4) with mask gt_valid (B, G), by the rule of `config`
    (None: MatchingConfig(), the paper's).

    Keyword `overrides` replace its fields: match_anchors(anchors, gt, valid, fg_iou=0.6, allow_low_quality=False)
    (`allow_low_quality` names allow_low_quality_matches)."""
    if config is not None and not isinstance(config, MatchingConfig):
        raise TypeError(f"config must be a MatchingConfig (or pass fg_iou=..., bg_iou=... by keyword), got {type(config).__name__}")
    config = MatchingConfig() if config is None else config
    if overrides:
        alias = {"allow_low_quality": "allow_low_quality_matches"}
        config = replace(config, **{alias.get(k, k): v for k, v in overrides.items()})
    if gt_boxes.shape[1] == 0:
        iou = anchors.new_zeros(gt_boxes.shape[0], 0, anchors.shape[0])
    else:
        iou = batched_box_iou(gt_boxes, anchors)  # (B, G, A)
    return assign_from_iou(iou, gt_valid, config.fg_iou, config.bg_iou, config.allow_low_quality_matches)
