"""The backbone: a torchvision ResNet cut after its last three stages, C3, C4, C5 (paper section 4).

C_l has stride 2^l: C3 = layer2 (stride 8), C4 = layer3 (16), C5 = layer4 (32). As in Detectron and
torchvision, BatchNorm is frozen by default (detection batches are too small to estimate its
statistics) and the stem and first stage are not trained (`trainable_layers=3`).
"""

from __future__ import annotations

import os
from urllib.error import URLError

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision import models
from torchvision.ops import misc

from .errors import DownloadError

__all__ = ["RESNETS", "ResNetBody", "FrozenBatchNorm2d"]


class FrozenBatchNorm2d(misc.FrozenBatchNorm2d):
    """BatchNorm with fixed statistics and affine parameters (buffers, never trained).

    Same parameters and state dict as torchvision's FrozenBatchNorm2d, but computed by PyTorch's fused
    batch-norm kernel in inference mode (one pass over the activations instead of two).
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

def resnet_tiny(weights=None, norm_layer=nn.BatchNorm2d, widths=(32, 64, 128, 256)) -> nn.Module:
    """A narrow ResNet for the classroom: torchvision's BasicBlock, one block per stage, widths 32-256
    (about 1.2M parameters instead of ResNet-18's 11M). It has no pretrained weights."""
    if weights is not None:
        raise ValueError("resnet_tiny has no pretrained weights: use backbone_weights=None")
    from torchvision.models.resnet import BasicBlock

    net = nn.Module()
    net.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
    net.bn1, net.relu, net.maxpool = norm_layer(widths[0]), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1)
    inplanes = widths[0]
    for i, planes in enumerate(widths):
        stride = 1 if i == 0 else 2
        down = None if stride == 1 and inplanes == planes else nn.Sequential(
            nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), norm_layer(planes))
        setattr(net, f"layer{i + 1}", nn.Sequential(BasicBlock(inplanes, planes, stride, down, norm_layer=norm_layer)))
        inplanes = planes
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net


class _NoWeights:  # stands in for a torchvision weights enum
    url = ""


# name -> (constructor, ImageNet weights, channels of C3, C4, C5)
RESNETS = {
    "resnet_tiny": (resnet_tiny, _NoWeights, (64, 128, 256)),
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1, (128, 256, 512)),
    "resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1, (128, 256, 512)),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1, (512, 1024, 2048)),
    "resnet101": (models.resnet101, models.ResNet101_Weights.IMAGENET1K_V1, (512, 1024, 2048)),
}


class ResNetBody(nn.Module):
    """A ResNet without its classifier, returning (C3, C4, C5).

    Args:
        name: "resnet18", "resnet34", "resnet50", "resnet101", or "resnet_tiny" (the classroom's).
        weights: None (random) or "imagenet" (torchvision's ImageNet weights; downloads when online).
        trainable_layers: how many stages, counted from C5 down, get gradients (0-5; 5 trains all).
        frozen_bn: use FrozenBatchNorm2d (fixed statistics and affine) instead of BatchNorm2d.
    """

    def __init__(self, name: str = "resnet50", weights: str | None = None, trainable_layers: int = 3, frozen_bn: bool = True):
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"backbone must be one of {sorted(RESNETS)}, got {name!r}")
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
        if weights not in (None, "imagenet"):
            raise ValueError(f"backbone weights must be None or 'imagenet', got {weights!r}")
        build, imagenet, channels = RESNETS[name]
        norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
        try:
            net = build(weights=imagenet if weights == "imagenet" else None, norm_layer=norm)
        except (URLError, OSError) as e:
            path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(imagenet.url))
            raise DownloadError(f"could not download the ImageNet weights of {name} ({e}). If this machine is offline, "
                               f"download {imagenet.url} elsewhere and put it at {path}") from e
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = channels
        trained = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
        if trainable_layers == 5:
            trained.append("bn1")
        for pname, param in self.named_parameters():
            if not any(pname.startswith(prefix) for prefix in trained):
                param.requires_grad_(False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        c2 = self.layer1(x)  # stride 4
        c3 = self.layer2(c2)  # (B, C3, H/8, W/8)
        c4 = self.layer3(c3)  # (B, C4, H/16, W/16)
        c5 = self.layer4(c4)  # (B, C5, H/32, W/32)
        return c3, c4, c5
