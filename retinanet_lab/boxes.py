"""Boxes: IoU, the (dx, dy, dw, dh) box coding of the box subnet, and input checks.

Boxes are (x1, y1, x2, y2) in pixels. The box subnet predicts, for each anchor a, four numbers
(paper section 4, "Box Regression Subnet": "the standard box parameterization from R-CNN"):

    dx = wx (x_gt - x_a) / w_a        dy = wy (y_gt - y_a) / h_a
    dw = ww log(w_gt / w_a)           dh = wh log(h_gt / h_a)

where (x, y) are box centres and (wx, wy, ww, wh) the coder weights, (1, 1, 1, 1) in RetinaNet.
`decode_boxes` inverts it, clamping dw and dh to log(1000/16) so that exp() cannot overflow (Detectron's
and torchvision's guard, not the paper's).
Both work on any leading shape (..., 4), so a whole batch is coded at once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import box_iou  # noqa: F401  (re-exported: IoU of two (N, 4), (M, 4) sets)

__all__ = ["box_iou", "batched_box_iou", "encode_boxes", "decode_boxes", "clip_boxes", "check_boxes", "BBOX_CLIP"]

BBOX_CLIP = math.log(1000.0 / 16)  # the largest dw, dh that decode_boxes lets through


def batched_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every pair, batched: boxes1 (B, N, 4) and boxes2 (B, M, 4) or (M, 4) -> (B, N, M).

    Same arithmetic as `torchvision.ops.box_iou`, over a leading batch dimension.
    """
    if boxes2.dim() == 2:
        boxes2 = boxes2.unsqueeze(0)
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])  # (B, N)
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])  # (B|1, M)
    lt = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])  # (B, N, M, 2)
    rb = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])  # (B, N, M, 2)
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]  # (B, N, M)
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter / union


def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode_boxes(gt_boxes: Tensor, anchors: Tensor, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)) -> Tensor:
    """Regression targets (dx, dy, dw, dh) that move `anchors` onto `gt_boxes`; shapes (..., 4)."""
    wx, wy, ww, wh = weights
    ax, ay, aw, ah = _centre_size(anchors)
    gx, gy, gw, gh = _centre_size(gt_boxes)
    return torch.stack(
        (wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)), dim=-1
    )


def decode_boxes(
    deltas: Tensor,
    anchors: Tensor,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    clip: float = BBOX_CLIP,
) -> Tensor:
    """Boxes (x1, y1, x2, y2) from predicted `deltas` relative to `anchors`; shapes (..., 4)."""
    anchors = anchors.to(deltas.dtype)
    wx, wy, ww, wh = weights
    ax, ay, aw, ah = _centre_size(anchors)
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw = torch.clamp(deltas[..., 2] / ww, max=clip)
    dh = torch.clamp(deltas[..., 3] / wh, max=clip)
    cx, cy = dx * aw + ax, dy * ah + ay
    half_w, half_h = 0.5 * torch.exp(dw) * aw, 0.5 * torch.exp(dh) * ah
    return torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), dim=-1)


def clip_boxes(boxes: Tensor, height: Tensor | float, width: Tensor | float) -> Tensor:
    """Clip boxes (..., 4) to [0, width] x [0, height]; height and width are numbers or tensors that
    broadcast against boxes.shape[:-1] (one size per box, or per image with a trailing 1)."""
    h = torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device).unsqueeze(-1)  # (..., 1)
    w = torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device).unsqueeze(-1)
    x = torch.minimum(boxes[..., 0::2].clamp(min=0), w)  # (..., 2): x1, x2
    y = torch.minimum(boxes[..., 1::2].clamp(min=0), h)  # (..., 2): y1, y2
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def check_boxes(boxes: Tensor, where: str = "boxes") -> None:
    """Raise a clear error for boxes that are not a finite (N, 4) float tensor with x2 > x1 and y2 > y1."""
    if not torch.is_tensor(boxes):
        raise TypeError(f"{where} must be a tensor of shape (N, 4), got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{where} must have shape (N, 4) in (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise TypeError(f"{where} must be a float tensor, got {boxes.dtype}")
    if boxes.numel() == 0:
        return
    if not torch.isfinite(boxes).all():
        bad = int(torch.nonzero(~torch.isfinite(boxes).all(dim=1))[0])
        raise ValueError(f"{where}[{bad}] = {boxes[bad].tolist()} is not finite")
    degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if degenerate.any():
        bad = int(torch.nonzero(degenerate)[0])
        raise ValueError(
            f"{where}[{bad}] = {boxes[bad].tolist()} is degenerate: boxes are (x1, y1, x2, y2) "
            f"with x2 > x1 and y2 > y1 ({int(degenerate.sum())} such box(es) in all)"
        )
