"""The two subnets applied to every pyramid level (paper section 4, "Classification Subnet" and
"Box Regression Subnet", and Figure 3 (c), (d)).

Each is a small FCN: `num_convs` 3x3 convolutions with ReLU (4 x 256 channels in the paper;
optionally GroupNorm, as in torchvision's v2 model), then a 3x3 convolution with
- K*A outputs, one sigmoid per class and anchor, for classification;
- 4*A outputs, the box deltas (dx, dy, dw, dh) of each anchor, for box regression.
The two subnets share no parameters with each other, but each is shared across all levels.

Initialisation (section 4.1): all convolutions normal(std=0.01) with zero bias, except the last
classification bias b = -log((1 - π) / π), so that at the start every anchor says "object" with
probability π = 0.01: it "prevents the large number of background anchors from generating a large,
destabilizing loss value in the first iteration of training" (§4.1, see §3.3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ClassificationSubnet", "BoxSubnet", "prior_bias", "tower", "init_classifier", "new_classifier", "class_heatmap"]


def prior_bias(prior_prob: float) -> float:
    """The bias b with σ(b) = π: b = -log((1 - π) / π); -4.595 for π = 0.01."""
    if not 0 < prior_prob < 1:
        raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
    return -math.log((1 - prior_prob) / prior_prob)


def init_classifier(conv: nn.Conv2d, prior_prob: float = 0.01) -> nn.Conv2d:
    """The final classification layer's initialisation (section 4.1): weights normal(std=0.01), bias
    b = -log((1 - π) / π), so that every output starts at probability π."""
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.constant_(conv.bias, prior_bias(prior_prob))
    return conv


def new_classifier(old: nn.Conv2d, num_anchors: int, num_classes: int, prior_prob: float = 0.01) -> nn.Conv2d:
    """A fresh final classification layer for `num_classes` classes in place of `old` (fine-tuning): the same
    input channels, kernel, stride and padding, num_anchors * num_classes outputs (no background class: one
    sigmoid per class), initialised by `init_classifier`."""
    conv = nn.Conv2d(old.in_channels, num_anchors * num_classes, old.kernel_size, stride=old.stride, padding=old.padding)
    return init_classifier(conv.to(device=old.weight.device, dtype=old.weight.dtype), prior_prob)


def class_heatmap(logits: Tensor, height: int, width: int, num_anchors: int) -> Tensor:
    """(H*W*A, K) logits of one level of one image, flattened as the subnet returns them (location-major, then
    anchor) -> (K, H, W): for each class and location, the highest probability σ(logit) over its A anchors."""
    probs = torch.sigmoid(logits).reshape(height, width, num_anchors, -1)  # (H, W, A, K)
    return probs.amax(dim=2).permute(2, 0, 1)  # (K, H, W)


def tower(in_channels: int, channels: int, num_convs: int, norm: str | None) -> nn.Sequential:
    """num_convs x (3x3 conv [+ GroupNorm(32)] + ReLU); torchvision's Conv2dNormActivation layout."""
    if norm not in (None, "group"):
        raise ValueError(f"norm must be None or 'group', got {norm!r}")
    blocks = []
    for i in range(num_convs):
        conv = nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1, bias=norm is None)
        layers = [conv] + ([nn.GroupNorm(32, channels)] if norm == "group" else []) + [nn.ReLU(inplace=True)]
        blocks.append(nn.Sequential(*layers))
    return nn.Sequential(*blocks)


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _flatten(x: Tensor, per_anchor: int) -> Tensor:
    """(B, A*P, H, W) -> (B, H*W*A, P): location-major, then anchor, the order of the anchors."""
    b, _, h, w = x.shape
    return x.view(b, -1, per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, per_anchor)


class ClassificationSubnet(nn.Module):
    """Predicts, for each anchor and class, the logit of "an object of this class is here"."""

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, num_convs: int = 4,
                 channels: int = 256, norm: str | None = None, prior_prob: float = 0.01):
        super().__init__()
        self.num_classes, self.num_anchors = num_classes, num_anchors
        self.tower = tower(in_channels, channels, num_convs, norm)
        self.logits = nn.Conv2d(channels if num_convs else in_channels, num_anchors * num_classes, 3, padding=1)
        _init(self.tower)
        init_classifier(self.logits, prior_prob)

    def reset_classifier(self, num_classes: int, prior_prob: float = 0.01) -> None:
        """A fresh final layer for `num_classes` classes (fine-tuning on other classes); the tower keeps its weights."""
        self.logits = new_classifier(self.logits, self.num_anchors, num_classes, prior_prob)
        self.num_classes = num_classes

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """[(B, C, H_l, W_l)] -> [(B, H_l*W_l*A, K)] logits, one per level."""
        return [_flatten(self.logits(self.tower(f)), self.num_classes) for f in features]


class BoxSubnet(nn.Module):
    """Predicts, for each anchor, the deltas (dx, dy, dw, dh) to its object's box (class-agnostic)."""

    def __init__(self, in_channels: int, num_anchors: int, num_convs: int = 4, channels: int = 256, norm: str | None = None):
        super().__init__()
        self.num_anchors = num_anchors
        self.tower = tower(in_channels, channels, num_convs, norm)
        self.deltas = nn.Conv2d(channels if num_convs else in_channels, num_anchors * 4, 3, padding=1)
        _init(self)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """[(B, C, H_l, W_l)] -> [(B, H_l*W_l*A, 4)] deltas, one per level."""
        return [_flatten(self.deltas(self.tower(f)), 4) for f in features]
