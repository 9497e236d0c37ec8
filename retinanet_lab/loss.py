"""The RetinaNet training loss (paper section 4.1), for a whole batch at once.

    L = (1 / N_fg) [ Σ_{anchors not ignored} Σ_classes FL(p, y)  +  Σ_{foreground anchors} L_box ]

- Classification: the focal loss summed over all anchors and classes, except anchors whose IoU with
  every box falls between the thresholds (ignored). Targets are one-hot: an anchor matched to a box
  of label k (1..K) has target 1 for class k and 0 for the others; background anchors 0 everywhere.
  The sum is `focal_loss.focal_loss_sparse_sum`: the package's one focal loss, re-arranged for such targets.
- Box regression: only foreground anchors; smooth L1 (the paper's "standard smooth L1 loss", §4.1; β = 0.11
  is Detectron's, the paper gives none), L1 (torchvision v1) or GIoU (torchvision v2) between the predicted
  and the target box.
- Normalisation (`normalize_loss`): the paper normalises "by the number of anchors assigned to a
  ground-truth box". `normalization="batch"` (the default) divides the batch's sum by max(1, the
  foreground anchors of the whole batch): Detectron's idea (it divides the sum over one GPU's images by
  their count plus one per image); `normalization="image"` divides each image by its own count and
  averages over images, as the paper's text (the loss "of an image") and torchvision do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss

from .boxes import decode_boxes, encode_boxes
from .config import BOX_LOSSES, NORMALIZATIONS, ArchitectureConfig, LossConfig
from .focal_loss import focal_loss_sparse_sum
from .matching import IGNORE

__all__ = ["retinanet_loss", "classification_loss_per_image", "box_loss_per_image", "normalize_loss", "BOX_LOSSES"]

_DEFAULT = LossConfig()  # the defaults, written once in config.py


def retinanet_loss(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Tensor,
    matched: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    alpha: float | None = _DEFAULT.focal_alpha,
    gamma: float = _DEFAULT.focal_gamma,
    box_loss: str = _DEFAULT.box_loss,
    beta: float = _DEFAULT.smooth_l1_beta,
    box_weights: tuple[float, float, float, float] = ArchitectureConfig.box_weights,
    normalization: str = _DEFAULT.normalization,
    *,
    config: LossConfig | None = None,
) -> dict[str, Tensor]:
    """Losses of a batch.

    Args:
        cls_logits: (B, A, K) classification logits, all levels concatenated.
        box_deltas: (B, A, 4) predicted deltas.
        anchors: (A, 4), shared by the images of the batch.
        matched: (B, A) from `match_anchors`: box index, BACKGROUND (-1) or IGNORE (-2).
        gt_boxes: (B, G, 4) padded boxes; gt_labels: (B, G) labels in 1..K.
        alpha, gamma: the focal loss's α and γ; box_loss, beta, box_weights: see `box_loss_per_image`;
        normalization: see `normalize_loss`.
        config: the same settings (but box_weights, the architecture's) as one `LossConfig`, instead of the
            separate arguments: retinanet_loss(..., config=cfg.loss, box_weights=cfg.arch.box_weights).
    Returns:
        {"classification": scalar, "bbox_regression": scalar}
    """
    cfg = _loss_config(config, alpha, gamma, box_loss, beta, normalization)
    foreground = matched >= 0  # (B, A)
    num_fg = foreground.sum(dim=1)  # (B,)
    fg = torch.nonzero(foreground, as_tuple=True)  # (N_fg,) image and anchor indices, found once for both terms
    cls_per_image = classification_loss_per_image(cls_logits, matched, gt_labels, cfg.focal_alpha, cfg.focal_gamma, fg=fg)
    box_per_image = box_loss_per_image(box_deltas, anchors, matched, gt_boxes, cfg.box_loss, cfg.smooth_l1_beta, box_weights,
                                       fg=fg)  # (B,) each
    return {"classification": normalize_loss(cls_per_image, num_fg, cfg.normalization),
            "bbox_regression": normalize_loss(box_per_image, num_fg, cfg.normalization)}


def _loss_config(config: LossConfig | None, alpha, gamma, box_loss, beta, normalization) -> LossConfig:
    """The settings as one validated LossConfig: `config`, or one made of the separate arguments (not both)."""
    given = LossConfig(focal_alpha=alpha, focal_gamma=gamma, box_loss=box_loss, smooth_l1_beta=beta,
                       normalization=normalization)
    if config is None:
        return given
    if given != _DEFAULT:
        raise ValueError("give the loss settings either as config=LossConfig(...) or as separate arguments, not both")
    return config


def classification_loss_per_image(cls_logits: Tensor, matched: Tensor, gt_labels: Tensor,
                                  alpha: float | None = _DEFAULT.focal_alpha, gamma: float = _DEFAULT.focal_gamma,
                                  *, fg: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Each image's focal loss Σ_{anchors not ignored} Σ_classes FL(p, y), (B,) float32, not yet normalised.

    Targets are all 0 except class k of each foreground anchor (matched to a box of label k); ignored anchors
    weigh 0. Computed by `focal_loss_sparse_sum`, which equals `focal_loss` on the one-hot targets without
    building them. fg: `torch.nonzero(matched >= 0, as_tuple=True)` when the caller has it already.
    """
    img_idx, anchor_idx = torch.nonzero(matched >= 0, as_tuple=True) if fg is None else fg  # (N_fg,) each
    labels = gt_labels[img_idx, matched[img_idx, anchor_idx]]  # (N_fg,) in 1..K
    valid = (matched != IGNORE).float()  # (B, A)
    return focal_loss_sparse_sum(cls_logits, (img_idx, anchor_idx, labels - 1), valid, alpha, gamma)


def box_loss_per_image(box_deltas: Tensor, anchors: Tensor, matched: Tensor, gt_boxes: Tensor,
                       box_loss: str = _DEFAULT.box_loss, beta: float = _DEFAULT.smooth_l1_beta,
                       box_weights: tuple[float, float, float, float] = ArchitectureConfig.box_weights,
                       *, fg: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Each image's box regression loss summed over its foreground anchors, (B,), not yet normalised.

    box_loss: "smooth_l1" with `beta` (the paper's, §4.1) or "l1" (torchvision v1) on the encoded deltas
    (`box_weights`), or "giou" (torchvision v2) on the decoded boxes. fg: as in `classification_loss_per_image`.
    """
    if box_loss not in BOX_LOSSES:
        raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
    img_idx, anchor_idx = torch.nonzero(matched >= 0, as_tuple=True) if fg is None else fg  # (N_fg,) each
    fg_anchors = anchors[anchor_idx]  # (N_fg, 4)
    fg_gt = gt_boxes[img_idx, matched[img_idx, anchor_idx]]  # (N_fg, 4)
    fg_deltas = box_deltas[img_idx, anchor_idx].float()  # (N_fg, 4)
    if box_loss == "giou":
        per_anchor = generalized_box_iou_loss(decode_boxes(fg_deltas, fg_anchors, box_weights), fg_gt, reduction="none", eps=1e-7)
    else:
        target_deltas = encode_boxes(fg_gt, fg_anchors, box_weights)
        if box_loss == "l1":
            per_anchor = F.l1_loss(fg_deltas, target_deltas, reduction="none").sum(dim=1)
        else:
            per_anchor = F.smooth_l1_loss(fg_deltas, target_deltas, reduction="none", beta=beta).sum(dim=1)
    num_images = box_deltas.shape[0]
    return torch.zeros(num_images, dtype=per_anchor.dtype, device=per_anchor.device).index_add_(0, img_idx, per_anchor)


def normalize_loss(per_image: Tensor, num_foreground: Tensor, normalization: str = _DEFAULT.normalization) -> Tensor:
    """The batch's loss from each image's summed loss (B,) and its number of foreground anchors (B,).

    "batch" (Detectron): Σ_images loss / max(1, Σ_images N_fg), one normaliser for the whole batch.
    "image" (the paper's text, torchvision): mean over images of loss_i / max(1, N_fg,i); an image without
    any box (N_fg,i = 0) is divided by 1, so it adds its background loss and no NaN.
    """
    _check_normalization(normalization)
    if normalization == "batch":
        return per_image.sum() / num_foreground.sum().clamp(min=1).to(per_image.dtype)
    return (per_image / num_foreground.clamp(min=1).to(per_image.dtype)).mean()


def _check_normalization(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be 'batch' (Detectron) or 'image' (the paper's text, torchvision), "
                         f"got {normalization!r}")
