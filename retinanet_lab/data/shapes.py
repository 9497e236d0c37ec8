"""The shapes world: a procedural detection dataset that needs no download and trains on a CPU.

`ShapesDataset(num_images, seed)[i]` draws image i on demand, the same on every call and machine
(given the same numpy and Pillow): a noisy, sometimes textured background, some clutter that belongs
to no class, and 0..max_objects objects of five classes

    circle, square, triangle   the easy ones (any colour, stretched to aspect ratios 1:2 .. 2:1)
    hexagon                    differs from a circle only by its corners
    diamond                    a square turned by 45°: differs from a square only by orientation

so the detector must look at shape, not colour. Object sizes run from `min_size` (12 px) to most of
the image, log-uniformly, so every pyramid level P3-P7 gets objects. Objects may overlap; one hides
at most `max_occlusion` of any earlier one, and each box is the box of the object's *visible* pixels.
`difficulty` (0..1) turns up noise, texture, clutter, contrast loss and occlusion together.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from .loader import usable_cores

__all__ = ["ShapesDataset", "SHAPE_CLASSES"]

SHAPE_CLASSES = ("circle", "square", "triangle", "hexagon", "diamond")


def _polygon(kind: str, cx: float, cy: float, w: float, h: float, angle: float) -> list[tuple[float, float]] | None:
    """Vertices of a shape of bounding size (w, h) centred at (cx, cy); None for the ellipse."""
    if kind == "circle":
        return None
    if kind == "square":
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    elif kind == "diamond":
        pts = [(0, -1), (1, 0), (0, 1), (-1, 0)]
    elif kind == "triangle":
        pts = [(0, -1), (1, 1), (-1, 1)]
    elif kind == "hexagon":
        pts = [(math.cos(a), math.sin(a)) for a in (math.pi / 3 * k + math.pi / 6 for k in range(6))]
    else:
        raise ValueError(f"unknown shape {kind!r}")
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + w / 2 * (x * c - y * s), cy + h / 2 * (x * s + y * c)) for x, y in pts]


class ShapesDataset(torch.utils.data.Dataset):
    """A deterministic, procedural detection dataset (see the module docstring).

    Args:
        num_images: length of the dataset.
        seed: images of different seeds are different; (seed, index) fixes an image.
        image_size: (height, width) or an int for square images (default 256).
        classes: a subset of SHAPE_CLASSES, in label order (labels 1..len(classes)).
        difficulty: 0 (clean, flat background) .. 1 (noisy, textured, cluttered, low contrast, occluded).
        max_objects: most objects per image; min_size: smallest object side in pixels.
        empty_fraction: share of images with no object (negatives).
        max_occlusion: largest share of an object that later objects may hide.
        transform: optional callable (image, target) -> (image, target), e.g. augmentation.
        cache: keep each image once drawn (uint8, 77 KB at 160 px) so later epochs skip the drawing. The cache
            lives in the process that reads the dataset: use it with num_workers=0 (as the classroom preset does).
    Items are (image (3, H, W) float in [0, 1], {"boxes" (N, 4) float xyxy, "labels" (N,) int64 in 1..K,
    "image_id" int}).
    """

    def __init__(self, num_images: int = 1000, seed: int = 0, image_size: int | tuple[int, int] = 256,
                 classes: tuple[str, ...] = SHAPE_CLASSES, difficulty: float = 0.5, max_objects: int = 6,
                 min_size: int = 12, empty_fraction: float = 0.05, max_occlusion: float | None = None, transform=None,
                 cache: bool = False):
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        unknown = [c for c in classes if c not in SHAPE_CLASSES]
        if unknown or not classes:
            raise ValueError(f"classes must be a non-empty subset of {SHAPE_CLASSES}, got unknown {unknown}")
        if not 0 <= difficulty <= 1:
            raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
        self.num_images, self.seed = num_images, seed
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if min(self.image_size) < 2 * min_size:
            raise ValueError(f"image_size {self.image_size} is too small for objects of min_size {min_size}")
        self.classes, self.difficulty = tuple(classes), difficulty
        self.max_objects, self.min_size, self.empty_fraction = max_objects, min_size, empty_fraction
        self.max_occlusion = 0.15 + 0.35 * difficulty if max_occlusion is None else max_occlusion
        self.transform = transform
        self.cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = {} if cache else None

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int):
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"index {index} out of range for a ShapesDataset of {self.num_images} images")
        index = index % self.num_images
        if self.cache is None:
            image, boxes, labels = self.render(index)
        else:
            if index not in self.cache:
                self.cache[index] = self.render(index)
            image, boxes, labels = self.cache[index]
        target = {"boxes": torch.tensor(boxes), "labels": torch.tensor(labels), "image_id": index}  # copies: the cache stays intact
        image = torch.from_numpy(image).permute(2, 0, 1).float().div_(255)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target

    def draw_all(self, num_workers: int | None = None) -> ShapesDataset:
        """Draw every image not yet cached now, in `num_workers` processes (default: one per core), and keep them.

        The same images as drawing them one by one (image i depends only on (seed, i)), in less time: on a 2-core CPU
        the classroom's 2880 training and 200 validation images took 16 s instead of about 28 s (9 ms an image).
        Needs cache=True. Returns the dataset.
        """
        if self.cache is None:
            raise ValueError("draw_all() keeps the images in the cache: make the dataset with cache=True")
        if num_workers is None:
            num_workers = usable_cores()
        missing = [i for i in range(self.num_images) if i not in self.cache]
        if num_workers <= 1 or len(missing) < 64:  # a process start costs more than drawing a few images
            self.cache.update((i, self.render(i)) for i in missing)
            return self
        drawer = _Drawer(self, missing)
        loader = torch.utils.data.DataLoader(drawer, batch_size=None, num_workers=num_workers, collate_fn=_keep)
        for i, drawn in zip(missing, loader):  # in order: the loader keeps the order of the indices
            self.cache[i] = drawn
        return self

    # ---- drawing ------------------------------------------------------------------------------------
    def render(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image `index` as uint8 (H, W, 3), boxes (N, 4) float32 and labels (N,) int64."""
        rng = np.random.default_rng([self.seed, index])
        h, w = self.image_size
        d = self.difficulty
        image = self._background(rng, h, w)
        canvas = Image.fromarray(image)
        self._clutter(rng, canvas, n=int(rng.integers(0, 1 + round(8 * d))))
        owner = np.zeros((h, w), dtype=np.int32)  # which object each pixel shows (0: none)
        kinds, n = [], 0
        if rng.random() >= self.empty_fraction:
            n = int(rng.integers(1, self.max_objects + 1))
        pixels = np.array(canvas)
        bg_mean = pixels.reshape(-1, 3).mean(axis=0)
        sizes = sorted((self._size(rng, h, w) for _ in range(n)), reverse=True)  # large first, small on top
        for size in sizes:
            placed = self._place(rng, owner, h, w, size)
            if placed is None:
                continue
            mask, kind = placed
            kinds.append(kind)
            owner[mask] = len(kinds)
            colour = self._colour(rng, bg_mean)
            shade = 1 + (rng.random() - 0.5) * 0.3 * d * np.linspace(-1, 1, w)[None, :, None]  # a light gradient
            obj = np.clip(colour[None, None, :] * shade, 0, 255)  # (1, W, 3)
            pixels[mask] = np.broadcast_to(obj, (h, w, 3))[mask]
        noise = rng.normal(0, 4 + 22 * d, size=pixels.shape)
        pixels = np.clip(pixels + noise, 0, 255).astype(np.uint8)
        boxes, labels = [], []
        for k, kind in enumerate(kinds, start=1):
            ys, xs = np.nonzero(owner == k)
            if len(xs) < 16:  # hidden (almost) entirely: not an object any more
                continue
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            labels.append(self.classes.index(kind) + 1)
        return pixels, np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64)

    def _background(self, rng, h, w) -> np.ndarray:
        d = self.difficulty
        base = rng.uniform(40, 215, size=3)
        tilt = rng.uniform(-40, 40, size=3) * (0.3 + d)
        ramp = np.linspace(-0.5, 0.5, w)[None, :, None] * tilt + np.linspace(-0.5, 0.5, h)[:, None, None] * tilt[::-1]
        img = base + ramp
        if rng.random() < 0.3 + 0.6 * d:  # texture: low-contrast stripes or checks
            period = rng.uniform(6, 40)
            angle = rng.uniform(0, math.pi)
            yy, xx = np.mgrid[0:h, 0:w]
            wave = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
            if rng.random() < 0.5:
                wave = np.sign(wave * np.sin((xx * math.sin(angle) - yy * math.cos(angle)) * 2 * math.pi / period))
            img = img + wave[:, :, None] * rng.uniform(5, 10 + 30 * d)
        return np.clip(img, 0, 255).astype(np.uint8)

    def _clutter(self, rng, canvas: Image.Image, n: int) -> None:
        """Lines, arcs and dots that belong to no class."""
        draw = ImageDraw.Draw(canvas)
        w, h = canvas.size
        for _ in range(n):
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
            x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
            x1, y1 = x0 + rng.uniform(-w / 3, w / 3), y0 + rng.uniform(-h / 3, h / 3)
            r = rng.random()
            if r < 0.5:
                draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, 3)))
            elif r < 0.8:
                box = [min(x0, x1), min(y0, y1), max(x0, x1) + 1, max(y0, y1) + 1]
                draw.arc(box, start=float(rng.uniform(0, 360)), end=float(rng.uniform(0, 360)), fill=colour, width=1)
            else:
                rad = rng.uniform(1, 3)
                draw.ellipse([x0 - rad, y0 - rad, x0 + rad, y0 + rad], fill=colour)

    def _size(self, rng, h: int, w: int) -> float:
        """Object size (sqrt of its box area), log-uniform from min_size to 95% of the image."""
        return math.exp(rng.uniform(math.log(self.min_size), math.log(0.95 * min(h, w))))

    def _place(self, rng, owner: np.ndarray, h: int, w: int, size: float, tries: int = 10):
        """Choose a shape of about `size` and where it goes, hiding at most max_occlusion of any earlier object."""
        max_side = 0.95 * min(h, w)
        for attempt in range(tries):
            kind = self.classes[int(rng.integers(len(self.classes)))]
            size = size * (0.85 if attempt else 1.0)  # shrink a little when it does not fit
            ratio = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))  # height / width
            bw, bh = size / math.sqrt(ratio), size * math.sqrt(ratio)
            scale = min(1.0, max_side / max(bw, bh))  # keep it inside the image
            bw, bh = bw * scale, bh * scale
            if min(bw, bh) < self.min_size:
                continue
            cx, cy = rng.uniform(bw / 2, w - bw / 2), rng.uniform(bh / 2, h - bh / 2)
            angle = 0.0 if kind in ("square", "diamond") else rng.uniform(-0.25, 0.25)
            layer = Image.new("L", (w, h), 0)
            pts = _polygon(kind, cx, cy, bw, bh, angle)
            if pts is None:
                ImageDraw.Draw(layer).ellipse([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], fill=1)
            else:
                ImageDraw.Draw(layer).polygon(pts, fill=1)
            mask = np.array(layer, dtype=bool)
            if mask.sum() < 16:
                continue
            hidden = np.bincount(owner[mask], minlength=owner.max() + 1)[1:]
            visible = np.bincount(owner.ravel(), minlength=owner.max() + 1)[1:]
            if np.all(hidden <= self.max_occlusion * np.maximum(visible, 1)):
                return mask, kind
        return None

    def _colour(self, rng, background: np.ndarray) -> np.ndarray:
        """A colour that stands out from the background by at least some contrast (less when difficult)."""
        min_distance = 120 - 80 * self.difficulty
        for _ in range(20):
            colour = rng.uniform(0, 255, size=3)
            if np.linalg.norm(colour - background) >= min_distance:
                return colour
        return 255 - background


class _Drawer(torch.utils.data.Dataset):
    """Item k: image indices[k] of a ShapesDataset, rendered (for draw_all's worker processes)."""

    def __init__(self, shapes: ShapesDataset, indices: list[int]):
        self.render, self.indices = shapes.render, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        return self.render(self.indices[k])


def _keep(item):
    return item
