"""The RetinaNet training loss (paper section 4.1), for a whole batch at once.

    L = (1 / N_fg) [ Σ_{anchors not ignored} Σ_classes FL(p, y)  +  Σ_{foreground anchors} L_box ]

- Classification: the focal loss summed over all anchors and classes, except anchors whose IoU with
  every box falls between the thresholds (ignored). Targets are one-hot: an anchor matched to a box
  of label k (1..K) has target 1 for class k and 0 for the others; background anchors 0 everywhere.
- Box regression: only foreground anchors; smooth L1 (the paper's "standard smooth L1 loss", §4.1; β = 0.11
  is Detectron's, the paper gives none), L1 (torchvision v1) or GIoU (torchvision v2) between the predicted
  and the target box.
- Normalisation (`normalize_loss`): the paper normalises "by the number of anchors assigned to a
  ground-truth box". `normalization="batch"` (the default, as Detectron) divides the batch's sum by the
  foreground anchors of the whole batch; `normalization="image"` divides each image by its own count
  and averages over images, as the paper's text (the loss "of an image") and torchvision do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss

from .boxes import decode_boxes, encode_boxes
from .focal_loss import focal_loss_sparse_sum
from .matching import IGNORE

__all__ = ["retinanet_loss", "normalize_loss", "BOX_LOSSES"]

BOX_LOSSES = ("smooth_l1", "l1", "giou")


def retinanet_loss(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Tensor,
    matched: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    box_loss: str = "smooth_l1",
    beta: float = 0.11,
    box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    normalization: str = "batch",
) -> dict[str, Tensor]:
    """Losses of a batch.

    Args:
        cls_logits: (B, A, K) classification logits, all levels concatenated.
        box_deltas: (B, A, 4) predicted deltas.
        anchors: (A, 4), shared by the images of the batch.
        matched: (B, A) from `match_anchors`: box index, BACKGROUND (-1) or IGNORE (-2).
        gt_boxes: (B, G, 4) padded boxes; gt_labels: (B, G) labels in 1..K.
    Returns:
        {"classification": scalar, "bbox_regression": scalar}
    """
    if box_loss not in BOX_LOSSES:
        raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
    if normalization not in ("batch", "image"):
        raise ValueError(f"normalization must be 'batch' (Detectron) or 'image' (the paper's text, torchvision), got {normalization!r}")
    num_images = cls_logits.shape[0]
    foreground = matched >= 0  # (B, A)
    gt_index = matched.clamp(min=0)  # (B, A), safe to gather with

    # Classification: all-zero targets except class k of each foreground anchor; ignored anchors weigh 0.
    img_idx, anchor_idx = torch.nonzero(foreground, as_tuple=True)  # (N_fg,) each
    labels = gt_labels[img_idx, gt_index[img_idx, anchor_idx]]  # (N_fg,) in 1..K
    valid = (matched != IGNORE).float()  # (B, A)
    cls_per_image = focal_loss_sparse_sum(cls_logits, (img_idx, anchor_idx, labels - 1), valid, alpha, gamma)  # (B,)

    # Box regression: foreground anchors only.
    fg_anchors = anchors[anchor_idx]  # (N_fg, 4)
    fg_gt = gt_boxes[img_idx, gt_index[img_idx, anchor_idx]]  # (N_fg, 4)
    fg_deltas = box_deltas[img_idx, anchor_idx].float()  # (N_fg, 4)
    if box_loss == "giou":
        per_anchor = generalized_box_iou_loss(decode_boxes(fg_deltas, fg_anchors, box_weights), fg_gt, reduction="none", eps=1e-7)
    else:
        target_deltas = encode_boxes(fg_gt, fg_anchors, box_weights)
        if box_loss == "l1":
            per_anchor = F.l1_loss(fg_deltas, target_deltas, reduction="none").sum(dim=1)
        else:
            per_anchor = F.smooth_l1_loss(fg_deltas, target_deltas, reduction="none", beta=beta).sum(dim=1)
    box_per_image = torch.zeros(num_images, dtype=per_anchor.dtype, device=per_anchor.device).index_add_(0, img_idx, per_anchor)

    num_fg = foreground.sum(dim=1)  # (B,)
    return {"classification": normalize_loss(cls_per_image, num_fg, normalization),
            "bbox_regression": normalize_loss(box_per_image, num_fg, normalization)}


def normalize_loss(per_image: Tensor, num_foreground: Tensor, normalization: str = "batch") -> Tensor:
    """The batch's loss from each image's summed loss (B,) and its number of foreground anchors (B,).

    "batch" (Detectron): Σ_images loss / max(1, Σ_images N_fg), one normaliser for the whole batch.
    "image" (the paper's text, torchvision): mean over images of loss_i / max(1, N_fg,i); an image without
    any box (N_fg,i = 0) is divided by 1, so it adds its background loss and no NaN.
    """
    if normalization == "batch":
        return per_image.sum() / num_foreground.sum().clamp(min=1).to(per_image.dtype)
    if normalization == "image":
        return (per_image / num_foreground.clamp(min=1).to(per_image.dtype)).mean()
    raise ValueError(f"normalization must be 'batch' (Detectron) or 'image' (the paper's text, torchvision), got {normalization!r}")
