"""Anchors: 9 boxes at every location of every pyramid level (paper section 4, "Anchors").

On level P_l (l = 3..7, stride 2^l) the anchors have base area (2^(l+2))^2, i.e. sizes 32 ... 512,
each at three scales {2^0, 2^(1/3), 2^(2/3)} and three aspect ratios {1:2, 1:1, 2:1}: A = 9 anchors
per location, covering 32 to 813 pixels across levels.

The layout is torchvision's, so that weights trained there carry over:
- cell anchors: ratio-major, then scale; aspect ratio means height / width;
- corners are rounded to whole pixels, and by default each size is truncated to an int first
  (32, 40, 50, 64, 80, 101, ...), as `torchvision.models.detection.retinanet` does;
- all anchors of a level: location-major (row by row), then the A cell anchors, i.e. the same order
  as the head outputs reshaped from (B, A*K, H, W) to (B, H*W*A, K);
- the stride of a level is (padded image size) // (feature map size), as in torchvision's
  `AnchorGenerator`. It is exactly 2^l when the padded size is a multiple of 128.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["AnchorConfig", "anchor_shapes", "cell_anchors", "feature_sizes", "grid_anchors", "level_strides", "make_anchors"]


@dataclass(frozen=True)
class AnchorConfig:
    """Which anchors to place: one base size per pyramid level, and scales and ratios shared by all."""

    sizes: tuple[float, ...] = (32, 64, 128, 256, 512)  # base size on P3 ... P7
    scales: tuple[float, ...] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # height / width
    truncate_sizes: bool = True  # int(size * scale), as torchvision; False keeps 40.3, 50.8, ...
    levels: tuple[int, ...] = field(default=(3, 4, 5, 6, 7))

    def __post_init__(self):
        if len(self.sizes) != len(self.levels):
            raise ValueError(f"AnchorConfig: {len(self.sizes)} sizes for {len(self.levels)} levels {self.levels}")
        for name in ("sizes", "scales", "aspect_ratios"):
            values = getattr(self, name)
            if len(values) == 0 or any(not (v > 0 and math.isfinite(v)) for v in values):
                raise ValueError(f"AnchorConfig.{name} must be positive numbers, got {values}")

    @property
    def num_anchors(self) -> int:
        """Anchors per location, A."""
        return len(self.scales) * len(self.aspect_ratios)

    def level_sizes(self, level_index: int) -> list[float]:
        """The anchor sizes (sqrt of area) on one level, e.g. [32, 40, 50] on P3."""
        sizes = [self.sizes[level_index] * s for s in self.scales]
        return [float(int(s)) for s in sizes] if self.truncate_sizes else sizes


def anchor_shapes(sizes: list[float], aspect_ratios: tuple[float, ...], dtype=torch.float32, device=None) -> Tensor:
    """(width, height) of the A anchors of one location, (A, 2), ratio-major then size: every anchor has
    area size² and height / width = ratio, i.e. w = size / sqrt(ratio), h = size * sqrt(ratio). Not rounded."""
    sizes_t = torch.as_tensor(sizes, dtype=dtype, device=device)
    ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
    h_ratios = torch.sqrt(ratios)  # h / sqrt(area)
    w_ratios = 1 / h_ratios  # w / sqrt(area)
    ws = (w_ratios[:, None] * sizes_t[None, :]).reshape(-1)  # (A,)
    hs = (h_ratios[:, None] * sizes_t[None, :]).reshape(-1)  # (A,)
    return torch.stack([ws, hs], dim=1)


def cell_anchors(sizes: list[float], aspect_ratios: tuple[float, ...], dtype=torch.float32, device=None) -> Tensor:
    """The A anchors of one location, centred on (0, 0): (A, 4), ratio-major then size, corners rounded."""
    wh = anchor_shapes(sizes, aspect_ratios, dtype, device)  # (A, 2)
    return (torch.cat([-wh, wh], dim=1) / 2).round()


def grid_anchors(feature_size: tuple[int, int], stride: tuple[int, int], cells: Tensor) -> Tensor:
    """Every anchor of one level: the cell anchors shifted to each location; (H*W*A, 4)."""
    (h, w), (sy, sx) = feature_size, stride
    shift_x = torch.arange(w, dtype=cells.dtype, device=cells.device) * sx  # (W,)
    shift_y = torch.arange(h, dtype=cells.dtype, device=cells.device) * sy  # (H,)
    yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
    shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)  # (H*W, 1, 4)
    return (shifts + cells.reshape(1, -1, 4)).reshape(-1, 4)


def feature_sizes(image_size: tuple[int, int], levels: tuple[int, ...] = (3, 4, 5, 6, 7)) -> list[tuple[int, int]]:
    """(H_l, W_l) of each pyramid level P_l for a (padded) input of `image_size`: ceil(size / 2^l), what the
    backbone's and the FPN's stride-2 convolutions (and the stem's max-pool) produce. The model itself reads the
    sizes off its feature maps; this is the same arithmetic without running it (anchor coverage, the explorers)."""
    h, w = image_size
    return [(math.ceil(h / 2**lvl), math.ceil(w / 2**lvl)) for lvl in levels]


def level_strides(image_size: tuple[int, int], feature_sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Stride of each level as torchvision computes it: padded image size // feature size."""
    return [(image_size[0] // h, image_size[1] // w) for h, w in feature_sizes]


def make_anchors(
    config: AnchorConfig,
    image_size: tuple[int, int],
    feature_sizes: list[tuple[int, int]],
    dtype=torch.float32,
    device=None,
) -> list[Tensor]:
    """All anchors of a (padded) image, one (H_l*W_l*A, 4) tensor per pyramid level."""
    if len(feature_sizes) != len(config.sizes):
        raise ValueError(f"{len(feature_sizes)} feature maps but the anchor config has {len(config.sizes)} levels")
    strides = level_strides(image_size, feature_sizes)
    return [
        grid_anchors(fs, st, cell_anchors(config.level_sizes(i), config.aspect_ratios, dtype, device))
        for i, (fs, st) in enumerate(zip(feature_sizes, strides))
    ]
