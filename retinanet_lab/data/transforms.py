"""Augmentations on (image, target) pairs that move the boxes with the pixels.

Each transform is a callable `(image (3, H, W) in [0, 1], target) -> (image, target)`; `Compose` chains
them. The paper trains with horizontal flipping only (section 4.1); light photometric jitter is a
common addition for small datasets. Random numbers come from torch's generator, so `torch.manual_seed`
(and DataLoader's per-worker seeding) makes runs repeatable.
"""

from __future__ import annotations

import torch

__all__ = ["Compose", "RandomHorizontalFlip", "PhotometricJitter", "clip_targets", "train_transforms"]


def clip_targets(target: dict, size) -> dict:
    """Clip "boxes" (and "crowd_boxes") to an image of size (h, w); drop boxes left with no area."""
    h, w = int(size[0]), int(size[1])
    target = dict(target)
    for key, labels in (("boxes", "labels"), ("crowd_boxes", "crowd_labels")):
        if key not in target:
            continue
        b = target[key].clone()
        b[:, 0::2] = b[:, 0::2].clamp(0, w)
        b[:, 1::2] = b[:, 1::2].clamp(0, h)
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        target[key], target[labels] = b[keep], target[labels][keep]
    return target


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self):
        return f"Compose({self.transforms})"


def _flip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


class RandomHorizontalFlip:
    """Mirror the image left-right with probability p; x1' = W - x2, x2' = W - x1."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image, target):
        if torch.rand(()) >= self.p:
            return image, target
        width = image.shape[-1]
        target = dict(target)
        for key in ("boxes", "crowd_boxes"):
            if key in target:
                target[key] = _flip_boxes(target[key], width)
        return image.flip(-1), target

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class PhotometricJitter:
    """Random brightness, contrast and saturation changes (boxes unchanged)."""

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, p: float = 0.8):
        self.brightness, self.contrast, self.saturation, self.p = brightness, contrast, saturation, p

    def __call__(self, image, target):
        if torch.rand(()) >= self.p:
            return image, target
        def factor(amount):
            return 1.0 + (torch.rand(()).item() * 2 - 1) * amount
        image = image * factor(self.brightness)
        mean = image.mean()
        image = (image - mean) * factor(self.contrast) + mean
        gray = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]
        image = (image - gray) * factor(self.saturation) + gray
        return image.clamp(0, 1), target

    def __repr__(self):
        return f"PhotometricJitter({self.brightness}, {self.contrast}, {self.saturation}, p={self.p})"


def train_transforms(flip: bool = True, photometric: bool = False) -> Compose:
    """The paper's augmentation (flip), optionally with photometric jitter."""
    return Compose(([RandomHorizontalFlip(0.5)] if flip else []) + ([PhotometricJitter()] if photometric else []))
