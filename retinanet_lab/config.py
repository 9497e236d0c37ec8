"""A RetinaNet's settings: one small frozen dataclass per stage, each the one place of its defaults.

    RetinaNetConfig(
        arch=ArchitectureConfig(num_classes=3),  # model.py, backbone.py, fpn.py, heads.py: the network   (section 4)
        anchors=AnchorConfig(),                  # anchors.py: 9 anchors per location on P3-P7             (section 4)
        input=InputConfig(),                     # transform.py: normalise, resize, pad
        matching=MatchingConfig(),               # matching.py: IoU >= 0.5 foreground, < 0.4 background    (section 4)
        loss=LossConfig(),                       # loss.py: focal loss + box loss                          (section 4.1)
        inference=InferenceConfig(),             # postprocess.py: threshold, top-k, decode, NMS           (section 4.1)
    )

Each is handed whole to the function of its stage: `preprocess(images, boxes, cfg.input)`,
`match_anchors(anchors, gt_boxes, gt_valid, cfg.matching)`, `retinanet_loss(..., config=cfg.loss, box_weights=cfg.arch.box_weights)`,
`postprocess_detections(..., cfg.inference, cfg.arch.box_weights)`. The box coding's weights belong to the
architecture: they fix what the box subnet's four outputs mean, for the loss (encoding the targets) and for
inference (decoding the boxes) alike.

Frozen: a change is a new config, `dataclasses.replace(cfg.inference, score_thresh=0.3)`, validated like the first.
On a model, `model.score_thresh = 0.3` does exactly that.

Checkpoints and `RetinaNet(**kwargs)` speak one flat dict of keyword arguments (`to_dict` / `from_dict`):
each field under its own name, except `loss_normalization` (LossConfig.normalization) and `anchors` (the
AnchorConfig as a dict). `backbone_weights` is where the first weights came from, not a property of a trained
model, and is not stored (a checkpoint reloads without downloading anything).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from .anchors import AnchorConfig

__all__ = ["ArchitectureConfig", "InputConfig", "MatchingConfig", "LossConfig", "InferenceConfig", "RetinaNetConfig",
           "AnchorConfig", "BOX_LOSSES", "NORMALIZATIONS", "IMAGENET_MEAN", "IMAGENET_STD", "FLAT_KEYS"]

BOX_LOSSES = ("smooth_l1", "l1", "giou")
NORMALIZATIONS = ("batch", "image")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _fail(config, name: str, must: str, value) -> None:
    raise ValueError(f"{type(config).__name__}.{name} must be {must}, got {value!r}")


def _is_int(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_prob(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1


def _as_tuple(config, *names: str) -> None:
    """Lists (from JSON, or a user) become tuples, so that configs compare and hash alike."""
    for name in names:
        if isinstance(getattr(config, name), list):
            object.__setattr__(config, name, tuple(getattr(config, name)))


@dataclass(frozen=True)
class ArchitectureConfig:
    """What the network is (paper section 4, Figure 3). Changing one of these means building a new model."""

    num_classes: int  # K, not counting background
    class_names: tuple[str, ...] | None = None  # K names; None: "1" .. "K"
    backbone: str = "resnet50"  # "resnet18" | "resnet34" | "resnet50" | "resnet101" | "resnet_tiny"
    backbone_weights: str | None = None  # None | "imagenet": the first weights (never stored in a checkpoint)
    trainable_backbone_layers: int = 3  # stages trained, counted from C5 down (0-5)
    frozen_bn: bool = True
    fpn_channels: int = 256
    p6_from: str = "c5"  # "c5" (the paper) | "p5" (torchvision v1)
    head_convs: int = 4
    head_channels: int = 256
    norm: str | None = None  # None | "group" (torchvision v2)
    prior_prob: float = 0.01  # π of section 4.1: the classification bias starts every output at σ(b) = π
    box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # box coding (dx, dy, dw, dh) weights

    def __post_init__(self):
        _as_tuple(self, "class_names", "box_weights")
        if not _is_int(self.num_classes, 1):
            _fail(self, "num_classes", "a positive int (not counting background)", self.num_classes)
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"ArchitectureConfig.class_names has {len(self.class_names)} names for num_classes={self.num_classes}")
        if self.backbone_weights not in (None, "imagenet"):
            _fail(self, "backbone_weights", "None or 'imagenet'", self.backbone_weights)
        if not _is_int(self.trainable_backbone_layers, 0) or self.trainable_backbone_layers > 5:
            _fail(self, "trainable_backbone_layers", "an int in 0..5", self.trainable_backbone_layers)
        for name in ("fpn_channels", "head_channels"):
            if not _is_int(getattr(self, name), 1):
                _fail(self, name, "a positive int", getattr(self, name))
        if not _is_int(self.head_convs, 0):
            _fail(self, "head_convs", "an int >= 0", self.head_convs)
        if self.p6_from not in ("c5", "p5"):
            _fail(self, "p6_from", "'c5' (paper) or 'p5' (torchvision v1)", self.p6_from)
        if self.norm not in (None, "group"):
            _fail(self, "norm", "None or 'group'", self.norm)
        if not (isinstance(self.prior_prob, (int, float)) and 0 < self.prior_prob < 1):
            _fail(self, "prior_prob", "in (0, 1)", self.prior_prob)
        if len(self.box_weights) != 4 or not all(w > 0 for w in self.box_weights):
            _fail(self, "box_weights", "four positive numbers", self.box_weights)


@dataclass(frozen=True)
class InputConfig:
    """From images of any size to one batch (transform.py): normalise, resize the short side, pad."""

    min_size: int | tuple[int, ...] = 800  # short side; a tuple: one picked at random per training batch
    max_size: int = 1333  # long side at most (Detectron's; the paper gives none)
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    size_divisible: int = 32

    def __post_init__(self):
        _as_tuple(self, "min_size", "image_mean", "image_std")
        sizes = self.min_size if isinstance(self.min_size, tuple) else (self.min_size,)
        if not sizes or not all(_is_int(s, 1) for s in sizes):
            _fail(self, "min_size", "a positive int, or a tuple of them", self.min_size)
        if not _is_int(self.max_size, 1):
            _fail(self, "max_size", "a positive int", self.max_size)
        if not _is_int(self.size_divisible, 1):
            _fail(self, "size_divisible", "a positive int", self.size_divisible)
        for name in ("image_mean", "image_std"):
            values = getattr(self, name)
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                _fail(self, name, "three numbers (R, G, B)", values)
        if not all(s > 0 for s in self.image_std):
            _fail(self, "image_std", "positive", self.image_std)


@dataclass(frozen=True)
class MatchingConfig:
    """Anchors to boxes (matching.py, section 4): foreground at IoU >= fg_iou, background below bg_iou, ignored between."""

    fg_iou: float = 0.5
    bg_iou: float = 0.4
    allow_low_quality_matches: bool = True  # every box also claims its best anchor(s) (RPN's rule (i))

    def __post_init__(self):
        if not (_is_prob(self.fg_iou) and _is_prob(self.bg_iou) and self.bg_iou <= self.fg_iou):
            raise ValueError(f"MatchingConfig: need 0 <= bg_iou <= fg_iou <= 1, got bg_iou={self.bg_iou}, fg_iou={self.fg_iou}")


@dataclass(frozen=True)
class LossConfig:
    """The training loss (loss.py, section 4.1): focal loss on every anchor not ignored, box loss on the foreground."""

    focal_alpha: float | None = 0.25  # α of the positives (1 - α for the negatives); None: no weighting
    focal_gamma: float = 2.0  # γ; 0 is (α-balanced) cross entropy
    box_loss: str = "smooth_l1"  # "smooth_l1" (the paper) | "l1" (torchvision v1) | "giou" (torchvision v2)
    smooth_l1_beta: float = 0.11  # Detectron's; the paper gives none
    normalization: str = "batch"  # by the batch's foreground anchors (Detectron) | "image" (each its own, torchvision)

    def __post_init__(self):
        if self.focal_alpha is not None and not _is_prob(self.focal_alpha):
            _fail(self, "focal_alpha", "None or in [0, 1]", self.focal_alpha)
        if not (isinstance(self.focal_gamma, (int, float)) and self.focal_gamma >= 0):
            _fail(self, "focal_gamma", ">= 0", self.focal_gamma)
        if self.box_loss not in BOX_LOSSES:
            _fail(self, "box_loss", f"one of {BOX_LOSSES}", self.box_loss)
        if not (isinstance(self.smooth_l1_beta, (int, float)) and self.smooth_l1_beta >= 0):
            _fail(self, "smooth_l1_beta", ">= 0", self.smooth_l1_beta)
        if self.normalization not in NORMALIZATIONS:
            _fail(self, "normalization", "'batch' (Detectron) or 'image' (the paper's text, torchvision)", self.normalization)


@dataclass(frozen=True)
class InferenceConfig:
    """From outputs to detections (postprocess.py, section 4.1, "Inference")."""

    score_thresh: float = 0.05  # keep scores above this (the paper)
    topk_candidates: int = 1000  # per level (the paper)
    nms_thresh: float = 0.5  # the paper; per class, Detectron's choice
    detections_per_img: int = 100  # Detectron's (COCO's limit); torchvision keeps 300

    def __post_init__(self):
        if not (_is_prob(self.score_thresh) and self.score_thresh < 1):
            _fail(self, "score_thresh", "in [0, 1)", self.score_thresh)
        if not _is_prob(self.nms_thresh):
            _fail(self, "nms_thresh", "in [0, 1]", self.nms_thresh)
        for name in ("topk_candidates", "detections_per_img"):
            if not _is_int(getattr(self, name), 1):
                _fail(self, name, "a positive int", getattr(self, name))


_SECTIONS = {"arch": ArchitectureConfig, "input": InputConfig, "matching": MatchingConfig, "loss": LossConfig,
             "inference": InferenceConfig}


def _flat_keys() -> dict[str, tuple[str, str | None]]:
    keys = {f.name: (section, f.name) for section, cls in _SECTIONS.items() for f in fields(cls)}
    keys["loss_normalization"] = keys.pop("normalization")
    keys["anchors"] = ("anchors", None)
    return keys


FLAT_KEYS = _flat_keys()  # RetinaNet keyword argument -> (section, field): "score_thresh" -> ("inference", "score_thresh")


def _anchor_config(value) -> AnchorConfig:
    if value is None or isinstance(value, AnchorConfig):
        return value or AnchorConfig()
    if isinstance(value, dict):  # as a checkpoint stores it
        return AnchorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
    raise TypeError(f"anchors must be an AnchorConfig or a dict of its fields, got {type(value).__name__}")


@dataclass(frozen=True)
class RetinaNetConfig:
    """Every setting of a RetinaNet, by stage. `from_dict` / `to_dict`: the flat keyword dict of checkpoints."""

    arch: ArchitectureConfig
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    input: InputConfig = field(default_factory=InputConfig)
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    @classmethod
    def from_dict(cls, flat: dict) -> RetinaNetConfig:
        """From RetinaNet's keyword arguments (a checkpoint's "config"); missing keys take their defaults."""
        unknown = sorted(set(flat) - set(FLAT_KEYS))
        if unknown:
            raise TypeError(f"unknown RetinaNet setting(s) {unknown}; the settings are {sorted(FLAT_KEYS)}")
        parts = {section: {} for section in _SECTIONS}
        for key, value in flat.items():
            section, name = FLAT_KEYS[key]
            if section != "anchors":
                parts[section][name] = value
        if "num_classes" not in parts["arch"]:
            raise TypeError("a RetinaNet config needs num_classes (K, not counting background)")
        return cls(anchors=_anchor_config(flat.get("anchors")), **{s: _SECTIONS[s](**kw) for s, kw in parts.items()})

    def to_dict(self) -> dict:
        """The flat keyword dict: RetinaNet(**config.to_dict()) rebuilds the model; plain values only (weights_only loads it)."""
        flat = {key: getattr(getattr(self, section), name) for key, (section, name) in FLAT_KEYS.items()
                if section != "anchors" and key != "backbone_weights"}
        flat["class_names"] = list(self.arch.class_names) if self.arch.class_names else None
        flat["anchors"] = asdict(self.anchors)
        return flat

    def replace(self, **flat) -> RetinaNetConfig:
        """A copy with some settings changed, named as RetinaNet's keyword arguments: cfg.replace(score_thresh=0.3)."""
        unknown = sorted(set(flat) - set(FLAT_KEYS))
        if unknown:
            raise TypeError(f"unknown RetinaNet setting(s) {unknown}; the settings are {sorted(FLAT_KEYS)}")
        changes: dict[str, dict] = {}
        for key, value in flat.items():
            section, name = FLAT_KEYS[key]
            changes.setdefault(section, {})[name] = value
        new = {section: _anchor_config(kw[None]) if section == "anchors" else replace(getattr(self, section), **kw)
               for section, kw in changes.items()}
        return replace(self, **new)
