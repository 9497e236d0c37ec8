"""Weights from torchvision's RetinaNet in our model, and torchvision's COCO weights.

What torchvision knows lives here; `RetinaNet.from_torchvision(...)` and `RetinaNet.pretrained(...)` (model.py)
build the model from what these functions read (this module does not import the model: model -> compat, one way):

    kwargs, state_dict, bn_eps = torchvision_settings(torchvision_model_or_state_dict)  # ours, converted
    state_dict, kwargs, bn_eps = pretrained_weights("coco")                           # torchvision's file

torchvision's classification subnet has one output per class *including* a "__background__" class
0 that is never a target (its labels index the logits directly). Ours has one output per real
class, label k <-> output k-1. `from_torchvision(..., drop_background=True)` therefore drops
torchvision's output 0, so that labels (COCO category ids for the COCO weights) stay the same.

Mapping of parameter names (both layouts of torchvision's heads are accepted: the current
`conv.{i}.0` and the old `conv.{2i}` of checkpoints saved before torchvision 0.13):

    backbone.body.*                       -> backbone.*
    backbone.fpn.inner_blocks.{i}.0.*     -> fpn.lateral.{i}.*
    backbone.fpn.layer_blocks.{i}.0.*     -> fpn.output.{i}.*
    backbone.fpn.extra_blocks.p6|p7.*     -> fpn.p6|p7.*
    head.classification_head.conv.*       -> class_subnet.tower.*
    head.classification_head.cls_logits.* -> class_subnet.logits.*
    head.regression_head.conv.*           -> box_subnet.tower.*
    head.regression_head.bbox_reg.*       -> box_subnet.deltas.*
"""

from __future__ import annotations

import os
import re
from urllib.error import URLError

import torch
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d  # ours subclasses it

from .anchors import AnchorConfig
from .errors import DownloadError

__all__ = ["torchvision_settings", "pretrained_weights", "load_converted", "set_bn_eps", "convert_state_dict", "infer_architecture",
           "weights_path", "PRETRAINED"]

_PREFIXES = [
    ("backbone.body.", "backbone."),
    ("head.classification_head.cls_logits.", "class_subnet.logits."),
    ("head.regression_head.bbox_reg.", "box_subnet.deltas."),
    ("backbone.fpn.extra_blocks.", "fpn."),
]


def _rename(key: str) -> str | None:
    for old, new in _PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
    m = re.match(r"backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.(?:0\.)?(weight|bias)$", key)
    if m:
        return f"fpn.{'lateral' if m[1] == 'inner' else 'output'}.{m[2]}.{m[3]}"
    m = re.match(r"head\.(classification|regression)_head\.conv\.(\d+)\.(?:(\d+)\.)?(\w+)$", key)
    if m:
        subnet = "class_subnet" if m[1] == "classification" else "box_subnet"
        block, layer = (int(m[2]), int(m[3])) if m[3] is not None else (int(m[2]) // 2, 0)  # old: conv.{2i}
        return f"{subnet}.tower.{block}.{layer}.{m[4]}"
    return None


def infer_architecture(state_dict: dict[str, Tensor]) -> dict:
    """Read backbone, FPN and head shapes off a torchvision RetinaNet state dict."""
    keys = state_dict.keys()
    blocks = tuple(len({k.split(".")[3] for k in keys if k.startswith(f"backbone.body.layer{i}.")}) for i in range(1, 5))
    bottleneck = any(".conv3." in k for k in keys if k.startswith("backbone.body.layer1."))
    names = {((3, 4, 6, 3), True): "resnet50", ((3, 4, 23, 3), True): "resnet101",
             ((2, 2, 2, 2), False): "resnet18", ((3, 4, 6, 3), False): "resnet34"}
    if (blocks, bottleneck) not in names:
        raise ValueError(f"unsupported torchvision backbone: stages of {blocks} {'bottleneck' if bottleneck else 'basic'} blocks")
    backbone = names[(blocks, bottleneck)]
    lateral = state_dict.get("backbone.fpn.inner_blocks.0.0.weight", state_dict.get("backbone.fpn.inner_blocks.0.weight"))
    fpn_channels = lateral.shape[0]
    c5_channels = 2048 if bottleneck else 512
    p6_in = state_dict["backbone.fpn.extra_blocks.p6.weight"].shape[1]
    p6_from = "c5" if p6_in == c5_channels and p6_in != fpn_channels else "p5"
    tower = {_rename(k) for k in keys if k.startswith("head.classification_head.conv.")}
    head_convs = len({k.split(".")[2] for k in tower})
    norm = "group" if any(k.endswith(".1.weight") for k in tower) else None
    head_channels = state_dict["head.classification_head.cls_logits.weight"].shape[1]
    num_anchors = state_dict["head.regression_head.bbox_reg.weight"].shape[0] // 4
    num_outputs = state_dict["head.classification_head.cls_logits.weight"].shape[0] // num_anchors
    return dict(backbone=backbone, fpn_channels=fpn_channels, p6_from=p6_from, head_convs=head_convs, norm=norm,
                head_channels=head_channels, num_anchors=num_anchors, num_outputs=num_outputs)


def convert_state_dict(state_dict: dict[str, Tensor], drop_background: bool = True) -> dict[str, Tensor]:
    """torchvision RetinaNet parameter names and layout -> ours."""
    arch = infer_architecture(state_dict)
    out = {}
    for key, value in state_dict.items():
        new = _rename(key)
        if new is None or key.endswith("num_batches_tracked"):
            continue
        if drop_background and new.startswith("class_subnet.logits."):
            value = value.reshape(arch["num_anchors"], arch["num_outputs"], *value.shape[1:])[:, 1:]
            value = value.reshape(-1, *value.shape[2:])
        out[new] = value
    return out


def _settings_of(model: nn.Module) -> dict:
    """The settings of a torchvision RetinaNet module that change what it computes."""
    gen = model.anchor_generator
    base = tuple(float(s[0]) for s in gen.sizes)
    ratios = tuple(gen.aspect_ratios[0])
    wanted = [[float(s) for s in sizes] for sizes in gen.sizes]
    candidates = [AnchorConfig().scales, tuple(s / gen.sizes[0][0] for s in gen.sizes[0])]  # paper's, then as given
    for scales in candidates:
        config = AnchorConfig(sizes=base, scales=scales, aspect_ratios=ratios, truncate_sizes=True)
        if [config.level_sizes(i) for i in range(len(base))] == wanted and all(tuple(r) == ratios for r in gen.aspect_ratios):
            break
    else:
        raise NotImplementedError(f"torchvision anchor sizes {gen.sizes} / ratios {gen.aspect_ratios} are not of the "
                                  "form base size per level x shared scales and ratios")
    t, m = model.transform, model.proposal_matcher
    return dict(
        anchors=config, min_size=tuple(t.min_size) if len(t.min_size) > 1 else t.min_size[0], max_size=t.max_size,
        image_mean=tuple(t.image_mean), image_std=tuple(t.image_std), size_divisible=t.size_divisible,
        fg_iou=m.high_threshold, bg_iou=m.low_threshold, allow_low_quality_matches=m.allow_low_quality_matches,
        box_loss=getattr(model.head.regression_head, "_loss_type", "l1"), score_thresh=model.score_thresh,
        topk_candidates=model.topk_candidates, nms_thresh=model.nms_thresh, detections_per_img=model.detections_per_img,
    )


def torchvision_settings(model_or_state_dict, drop_background: bool = True, **overrides) -> tuple[dict, dict, float | None]:
    """What our RetinaNet needs to compute what a torchvision RetinaNet (`retinanet_resnet50_fpn` (v1), `..._v2`,
    or any on a ResNet-FPN backbone) computes: its keyword arguments, the state dict converted to our names,
    and the eps of torchvision's BatchNorm (None when given a state dict).

    Given a module, its settings (input size, anchors, thresholds, box loss, BatchNorm eps) carry over
    too, so the two compute the same detections; given a state dict, the architecture is read from
    the tensor shapes and the settings are ours (paper defaults) unless passed in `overrides`.
    """
    settings = {}
    eps = None
    if isinstance(model_or_state_dict, nn.Module):
        settings = _settings_of(model_or_state_dict)
        bns = [m for m in model_or_state_dict.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
        eps = bns[0].eps if bns else None
        state_dict = model_or_state_dict.state_dict()
    elif isinstance(model_or_state_dict, dict):
        state_dict = model_or_state_dict
    else:
        raise TypeError(f"expected a torchvision RetinaNet or its state dict, got {type(model_or_state_dict).__name__}")
    arch = infer_architecture(state_dict)
    num_classes = arch["num_outputs"] - (1 if drop_background else 0)
    if num_classes < 1:
        raise ValueError("the torchvision model has a single output: nothing is left after dropping background")
    if arch["num_anchors"] != (settings.get("anchors") or AnchorConfig()).num_anchors:
        raise ValueError(f"the torchvision head predicts {arch['num_anchors']} anchors per location")
    kwargs = dict(num_classes=num_classes, backbone=arch["backbone"], fpn_channels=arch["fpn_channels"], p6_from=arch["p6_from"],
                  head_convs=arch["head_convs"], head_channels=arch["head_channels"], norm=arch["norm"])
    kwargs.update(settings)
    kwargs.update(overrides)
    return kwargs, convert_state_dict(state_dict, drop_background), eps


def load_converted(model: nn.Module, state_dict: dict[str, Tensor], bn_eps: float | None = None) -> nn.Module:
    """Load a converted torchvision state dict into our model (every tensor must fit); set the frozen BatchNorms' eps."""
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(f"torchvision weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return set_bn_eps(model, bn_eps)


def set_bn_eps(model: nn.Module, eps: float | None) -> nn.Module:
    """torchvision's BatchNorm eps (0.0 in its v1 COCO model, 1e-5 in v2) in every frozen BatchNorm; None: unchanged."""
    if eps is not None:
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.eps = eps
    return model


def _pretrained_table():
    from torchvision.models.detection import RetinaNet_ResNet50_FPN_V2_Weights, RetinaNet_ResNet50_FPN_Weights

    # name -> (weights, settings torchvision uses with them)
    return {
        "coco": (RetinaNet_ResNet50_FPN_Weights.COCO_V1, dict(box_loss="l1", bn_eps=0.0)),
        "coco_v2": (RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1, dict(box_loss="giou", bn_eps=1e-5)),
    }


PRETRAINED = ("coco", "coco_v2")


def weights_path(name: str) -> str:
    """Where the weights file of `name` is looked for (torch hub's cache; TORCH_HOME moves it)."""
    weights, _ = _pretrained_table()[name]
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))


def pretrained_weights(name: str = "coco", progress: bool = True) -> tuple[dict, dict, float]:
    """torchvision's COCO RetinaNet weights (80 classes under their COCO category ids 1..90): its state dict, our
    keyword arguments that go with it (box loss, class names, 300 detections an image) and its BatchNorm eps.

    The file is read from torch hub's cache when it is there (no network); otherwise it is downloaded
    through torchvision's weights API. Offline, the error says where to put the file.
    """
    table = _pretrained_table()
    if name not in table:
        raise ValueError(f"unknown pretrained weights {name!r}; choose from {sorted(table)}")
    weights, settings = table[name]
    path = weights_path(name)
    if os.path.exists(path):
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    else:
        try:
            state_dict = weights.get_state_dict(progress=progress, check_hash=True)
        except (URLError, OSError, RuntimeError) as e:
            raise DownloadError(
                f"could not download torchvision's '{name}' RetinaNet weights ({e}).\n"
                f"If this machine is offline, download\n    {weights.url}\non a machine that is online and put it at\n"
                f"    {path}\n(the file is read from $TORCH_HOME/hub/checkpoints/: set TORCH_HOME to a folder holding "
                f"hub/checkpoints/{os.path.basename(weights.url)} to read it from there)."
            ) from e
    categories = list(weights.meta["categories"])[1:]  # drop "__background__"
    # torchvision's retinanet_resnet50_fpn(_v2) keep 300 detections an image (this lab's default is COCO's 100)
    return state_dict, dict(box_loss=settings["box_loss"], class_names=categories, detections_per_img=300), settings["bn_eps"]
