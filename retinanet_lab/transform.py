"""From a list of images of any size to one padded, normalised batch, and back.

As torchvision's `GeneralizedRCNNTransform` (so that detections agree to float tolerance):
1. normalise each image with the ImageNet mean and std the backbone was trained with;
2. resize it so that its short side is `min_size`, unless its long side would then pass `max_size`
   (bilinear; boxes scale with it);
3. pad every image with zeros (after normalisation: the mean colour) at the bottom and right to
   the largest size in the batch, rounded up to a multiple of `size_divisible`.
Detections are mapped back to each input image's own pixel coordinates by `boxes_to_original`.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import IMAGENET_MEAN, IMAGENET_STD, InputConfig

__all__ = ["check_images", "preprocess", "boxes_to_original", "resize_scale", "resized_size", "padded_size",
           "IMAGENET_MEAN", "IMAGENET_STD"]  # the last two: InputConfig's defaults (config.py)


def check_images(images) -> None:
    """Raise a clear error unless `images` is a non-empty list of (3, H, W) float tensors in [0, 1]."""
    if torch.is_tensor(images) and images.dim() == 4:
        raise TypeError("images must be a list of (3, H, W) tensors, not one (B, 3, H, W) tensor: pass list(batch)")
    if not isinstance(images, (list, tuple)) or len(images) == 0:
        raise TypeError(f"images must be a non-empty list of (3, H, W) float tensors, got {type(images).__name__}")
    for i, img in enumerate(images):
        if not torch.is_tensor(img):
            raise TypeError(f"images[{i}] must be a tensor, got {type(img).__name__}")
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"images[{i}] must have shape (3, H, W) (RGB, channels first), got {tuple(img.shape)}")
        if not img.is_floating_point():
            raise TypeError(f"images[{i}] has dtype {img.dtype}: expected floats in [0, 1] (e.g. img.float() / 255)")
        if img.shape[1] < 1 or img.shape[2] < 1:
            raise ValueError(f"images[{i}] is empty: shape {tuple(img.shape)}")
    hi = torch.stack([img.detach().amax() for img in images])  # one sync for the whole batch
    if (hi > 1.0 + 1e-3).any():
        i = int(torch.nonzero(hi > 1.0 + 1e-3)[0])
        raise ValueError(f"images[{i}] has values up to {float(hi[i]):.1f}: expected floats in [0, 1] (divide by 255)")


def resize_scale(height: int, width: int, min_size: int, max_size: int) -> float:
    """The factor that brings the short side to min_size without the long side passing max_size."""
    return min(min_size / min(height, width), max_size / max(height, width))


def resized_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """The (h, w) that `preprocess` resizes an image of (height, width) to: floor(side x scale), as F.interpolate
    computes it. For arithmetic without images (e.g. anchor coverage of a dataset)."""
    scale = resize_scale(height, width, min_size, max_size)
    return math.floor(height * scale), math.floor(width * scale)


def padded_size(sizes: list[tuple[int, int]], size_divisible: int = 32) -> tuple[int, int]:
    """The (H, W) of the batch `preprocess` pads resized images of `sizes` to: the largest height and width, each
    rounded up to a multiple of size_divisible."""
    h = int(math.ceil(max(s[0] for s in sizes) / size_divisible) * size_divisible)
    w = int(math.ceil(max(s[1] for s in sizes) / size_divisible) * size_divisible)
    return h, w


def _resize(batch: Tensor, min_size: int, max_size: int) -> Tensor:
    """Bilinear resize of (N, 3, H, W) images that share one size, as torchvision does it."""
    scale = resize_scale(batch.shape[-2], batch.shape[-1], min_size, max_size)
    return F.interpolate(batch, scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False)


def _scale_boxes(boxes: Tensor, old: tuple[int, int], new: tuple[int, int]) -> Tensor:
    """Scale (..., 4) boxes from an image of size `old` (h, w) to `new` (same float32 ratios as torchvision)."""
    ry = torch.tensor(new[0], dtype=torch.float32) / torch.tensor(old[0], dtype=torch.float32)
    rx = torch.tensor(new[1], dtype=torch.float32) / torch.tensor(old[1], dtype=torch.float32)
    ratios = torch.stack([rx, ry, rx, ry]).to(device=boxes.device, dtype=boxes.dtype)
    return boxes * ratios


def _input_config(config: InputConfig | None, overrides: dict) -> InputConfig:
    if config is not None and not isinstance(config, InputConfig):
        raise TypeError(f"config must be an InputConfig (or pass min_size=..., max_size=... by keyword), got {type(config).__name__}")
    config = InputConfig() if config is None else config
    return replace(config, **overrides) if overrides else config


def preprocess(
    images: list[Tensor],
    boxes: list[Tensor] | None,
    config: InputConfig | None = None,
    training: bool = False,
    **overrides,
) -> tuple[Tensor, list[tuple[int, int]], list[Tensor] | None]:
    """Normalise, resize and pad: returns the batch (B, 3, H, W), each image's resized (h, w), and the
    boxes scaled to it. `config` (None: InputConfig()) gives the sizes, mean and std; keyword `overrides` replace its fields
    (preprocess(images, None, min_size=256); `mean` and `std` name image_mean and image_std). A tuple `min_size`
    picks one at random per batch in training (multi-scale training) and uses the last one in eval, as torchvision."""
    config = _input_config(config, {{"mean": "image_mean", "std": "image_std"}.get(k, k): v for k, v in overrides.items()})
    min_size, max_size = config.min_size, config.max_size
    if isinstance(min_size, tuple):
        min_size = random.choice(min_size) if training else min_size[-1]
    dev = images[0].device
    mean_t = torch.as_tensor(config.image_mean, dtype=images[0].dtype, device=dev)[:, None, None]
    std_t = torch.as_tensor(config.image_std, dtype=images[0].dtype, device=dev)[:, None, None]
    same_size = all(img.shape == images[0].shape for img in images)
    if same_size:  # the common case: one batched resize
        resized = list(_resize((torch.stack(images) - mean_t) / std_t, min_size, max_size))
    else:  # images of different sizes: each has its own output size
        resized = [_resize(((img - mean_t) / std_t)[None], min_size, max_size)[0] for img in images]
    sizes = [(int(r.shape[-2]), int(r.shape[-1])) for r in resized]
    if boxes is not None:
        boxes = [_scale_boxes(b, tuple(img.shape[-2:]), s) for b, img, s in zip(boxes, images, sizes)]
    h, w = padded_size(sizes, config.size_divisible)
    if same_size and sizes[0] == (h, w):
        batch = torch.stack(resized)
    else:
        batch = torch.stack([F.pad(r, (0, w - r.shape[-1], 0, h - r.shape[-2])) for r in resized])
    return batch, sizes, boxes


def boxes_to_original(boxes: Tensor, resized: tuple[int, int], original: tuple[int, int]) -> Tensor:
    """Map boxes from the resized image back to the input image's pixel coordinates."""
    return _scale_boxes(boxes, resized, original)
