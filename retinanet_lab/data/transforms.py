"""Augmentations on (image, target) pairs that move the boxes with the pixels.

Each transform is a callable `(image (3, H, W) in [0, 1], target) -> (image, target)`; `Compose` chains
them. The paper trains with horizontal flipping only (section 4.1); light photometric jitter is a
common addition for small datasets. Random numbers come from torch's generator, so `torch.manual_seed`
(and DataLoader's per-worker seeding) makes runs repeatable.
"""

from __future__ import annotations

import torch

__all__ = ["Compose", "RandomHorizontalFlip", "PhotometricJitter", "RandomZoom", "clip_targets", "train_transforms",
           "small_dataset_transforms"]


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


class RandomZoom:
    """Scale jitter for small datasets: zoom in (crop a random window) or out (place the image on a larger canvas of
    its mean colour), by a factor drawn log-uniformly from `zoom` = (lo, hi), with probability p.

    The model resizes every image to its input size afterwards, so cropping a window of 1/z of each side shows the
    objects z times larger, and a canvas z times larger shows them z times smaller: the same objects at new scales
    and places. Boxes move with the pixels; a box cut by the crop keeps its visible part if at least `min_visible`
    of its area is still in the image, and is dropped otherwise (so no object is trained as half there).
    """

    def __init__(self, zoom: tuple[float, float] = (0.75, 1.5), min_visible: float = 0.5, p: float = 0.8):
        lo, hi = zoom
        if not 0 < lo <= hi:
            raise ValueError(f"zoom must be (lo, hi) with 0 < lo <= hi, got {zoom}")
        self.zoom, self.min_visible, self.p = (float(lo), float(hi)), min_visible, p

    def __call__(self, image, target):
        if torch.rand(()) >= self.p:
            return image, target
        lo, hi = self.zoom
        z = float(torch.exp(torch.empty(()).uniform_(float(torch.tensor(lo).log()), float(torch.tensor(hi).log()))))
        _, h, w = image.shape
        if z >= 1:  # zoom in: a window of (h / z, w / z) at a random place
            ch, cw = max(1, round(h / z)), max(1, round(w / z))
            y0, x0 = int(torch.randint(0, h - ch + 1, ())), int(torch.randint(0, w - cw + 1, ()))
            image = image[:, y0:y0 + ch, x0:x0 + cw]
            shift = torch.tensor([-x0, -y0, -x0, -y0], dtype=torch.float32)
            size = (ch, cw)
        else:  # zoom out: the image at a random place on a canvas (h / z, w / z) of its mean colour
            ch, cw = round(h / z), round(w / z)
            y0, x0 = int(torch.randint(0, ch - h + 1, ())), int(torch.randint(0, cw - w + 1, ()))
            canvas = image.mean(dim=(1, 2), keepdim=True).expand(3, ch, cw).clone()
            canvas[:, y0:y0 + h, x0:x0 + w] = image
            image = canvas
            shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
            size = (ch, cw)
        target = dict(target)
        for key, labels in (("boxes", "labels"), ("crowd_boxes", "crowd_labels")):
            if key not in target or len(target[key]) == 0:
                continue
            moved = target[key].float() + shift
            area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
            clipped = clip_targets({key: moved, labels: torch.arange(len(moved))}, size)
            kept = clipped[labels]  # indices of the boxes with some area left
            b = clipped[key]
            visible = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / area[kept].clamp(min=1e-9)
            ok = visible >= self.min_visible
            target[key], target[labels] = b[ok], target[labels][kept[ok]]
        return image, target

    def __repr__(self):
        return f"RandomZoom(zoom={self.zoom}, min_visible={self.min_visible}, p={self.p})"


def small_dataset_transforms(zoom: tuple[float, float] = (0.75, 1.5)) -> Compose:
    """What a short fine-tuning run on a few dozen images needs: scale jitter with random crops (RandomZoom), flips
    and photometric jitter. The paper used flips only (section 4.1), with 118k COCO images."""
    return Compose([RandomZoom(zoom), RandomHorizontalFlip(0.5), PhotometricJitter()])


def train_transforms(flip: bool = True, photometric: bool = False) -> Compose:
    """The paper's augmentation (flip), optionally with photometric jitter."""
    return Compose(([RandomHorizontalFlip(0.5)] if flip else []) + ([PhotometricJitter()] if photometric else []))
