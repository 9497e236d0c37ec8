"""The feature pyramid P3-P7 on top of C3-C5 (paper section 4, "Feature Pyramid Network Backbone").

    P5 = out5(lat5(C5))
    P4 = out4(lat4(C4) + up(lat5(C5)))                 top-down pathway with lateral connections
    P3 = out3(lat3(C3) + up(lat4(C4) + up(lat5(C5))))
    P6 = conv3x3/2(C5)                                 the paper: P6 from C5 ...
    P7 = conv3x3/2(ReLU(P6))

All levels have the same number of channels (256 in the paper). torchvision's v1 RetinaNet builds P6
from P5 instead (`p6_from="p5"`); its v2 model and the paper use C5. lat* are 1x1 convolutions, out*
3x3, up is nearest-neighbour upsampling to the lateral's size.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FeaturePyramid"]


class FeaturePyramid(nn.Module):
    def __init__(self, in_channels: tuple[int, int, int], out_channels: int = 256, p6_from: str = "c5"):
        super().__init__()
        if p6_from not in ("c5", "p5"):
            raise ValueError(f"p6_from must be 'c5' (paper) or 'p5' (torchvision v1), got {p6_from!r}")
        self.p6_from = p6_from
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        self.p6 = nn.Conv2d(in_channels[-1] if p6_from == "c5" else out_channels, out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, c3: Tensor, c4: Tensor, c5: Tensor) -> list[Tensor]:
        """(C3, C4, C5) -> [P3, P4, P5, P6, P7], each (B, out_channels, H/2^l, W/2^l)."""
        inner = self.lateral[2](c5)
        pyramid = [self.output[2](inner)]
        for i, c in ((1, c4), (0, c3)):  # top-down: C4 then C3
            lateral = self.lateral[i](c)
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            pyramid.insert(0, self.output[i](inner))
        p6 = self.p6(c5 if self.p6_from == "c5" else pyramid[-1])
        p7 = self.p7(F.relu(p6))
        return pyramid + [p6, p7]
