"""RetinaNet (paper section 4, Figure 3): ResNet + FPN (P3-P7), a classification and a box subnet
on every level, 9 anchors per location, focal loss in training, top-k + NMS at inference.

Usage follows torchvision's detection models:

    model = RetinaNet(num_classes=3)
    model.train(); losses = model(images, targets)   # {"classification", "bbox_regression"}
    model.eval();  detections = model(images)         # [{"boxes", "scores", "labels"}, ...]

`images` is a list of (3, H, W) float tensors in [0, 1], of any sizes; `targets` a list of dicts with
"boxes" (N, 4) float (x1, y1, x2, y2) in the image's pixels and "labels" (N,) int in 1..num_classes
(0 is not a class: background is the absence of every class). Boxes come back in the same coordinates.

One pass is a walk through named stages, each a method here or a function of its own module:

    preprocess           transform.py         images -> one normalised, padded batch (B, 3, H, W)
    features             backbone.py, fpn.py  -> P3 ... P7, (B, C, H_l, W_l) each
    heads                heads.py             -> per level logits (B, H_l*W_l*A, K) and deltas (B, H_l*W_l*A, 4)
    anchors              anchors.py           -> per level (H_l*W_l*A, 4), in the batch's pixels
    match                matching.py          training: each anchor's box, background or ignored
    loss                 loss.py              training: focal loss + box loss, normalised
    select, decode, nms  postprocess.py       inference: candidates, their boxes, the survivors of NMS

`model(images, targets, record=r)` stores each stage's output in the dict `r` under the stage's name, as the pass
computes it; `model.inspect(images, targets)` shapes that record level by level for teaching, and the lessons'
widgets read it. What they show is what `model(images)` computes: the same calls, recorded. Without `record`
nothing is kept and nothing extra is computed.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from . import torchvision_compat
from .anchors import AnchorConfig, make_anchors
from .backbone import ResNetBody
from .boxes import check_boxes, encode_boxes
from .config import FLAT_KEYS, RetinaNetConfig
from .fpn import FeaturePyramid
from .heads import BoxSubnet, ClassificationSubnet
from .loss import retinanet_loss
from .matching import Matches, match_anchors, pad_targets
from .postprocess import postprocess_detections
from .transform import boxes_to_original, check_images
from .transform import preprocess as preprocess_images

__all__ = ["RetinaNet", "RetinaNetConfig"]


def _setting(key: str) -> property:
    """model.<key>: the setting of that name in the model's config; assigning it replaces the (frozen) config."""
    section, name = FLAT_KEYS[key]

    def get(self):
        return getattr(getattr(self.cfg, section), name)

    def set_(self, value):
        self.cfg = self.cfg.replace(**{key: value})

    return property(get, set_, doc=f"cfg.{section}.{name} (assigning it replaces the config, validated)")


class RetinaNet(nn.Module):
    """A RetinaNet detector, built from a RetinaNetConfig (config.py) or its fields by keyword:

        RetinaNet(RetinaNetConfig(ArchitectureConfig(num_classes=3)))
        RetinaNet(3, backbone="resnet18", min_size=256)   # num_classes, then any setting by name
        RetinaNet(**model.config)                          # a checkpoint's flat config

    `model.cfg` is the structured config (frozen); `model.config` its flat dict, as checkpoints store it.
    The stages' settings may change after construction: `model.score_thresh = 0.3` replaces `model.cfg` with a
    new, validated config. The architecture's cannot (build a new model), except its classes: `replace_classes`.
    """

    def __init__(self, config: RetinaNetConfig | int | None = None, /, **settings):
        super().__init__()
        if isinstance(config, RetinaNetConfig):
            config = config.replace(**settings) if settings else config
        else:
            if config is not None and "num_classes" in settings:
                raise TypeError("RetinaNet got num_classes twice (positionally and by keyword)")
            config = RetinaNetConfig.from_dict(settings if config is None else {"num_classes": config, **settings})
        self.cfg = config
        arch, num_anchors = config.arch, config.anchors.num_anchors
        self.backbone = ResNetBody(arch.backbone, arch.backbone_weights, arch.trainable_backbone_layers, arch.frozen_bn)
        self.fpn = FeaturePyramid(self.backbone.out_channels, arch.fpn_channels, arch.p6_from)
        head = dict(num_convs=arch.head_convs, channels=arch.head_channels, norm=arch.norm)
        self.class_subnet = ClassificationSubnet(arch.fpn_channels, num_anchors, arch.num_classes, prior_prob=arch.prior_prob, **head)
        self.box_subnet = BoxSubnet(arch.fpn_channels, num_anchors, **head)

    # ---- settings ---------------------------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """Every setting as one flat dict of keyword arguments (what checkpoints store): RetinaNet(**model.config)."""
        return self.cfg.to_dict()

    @property
    def num_classes(self) -> int:
        return self.cfg.arch.num_classes

    @property
    def class_names(self) -> list[str]:
        names = self.cfg.arch.class_names
        return list(names) if names else [str(k) for k in range(1, self.num_classes + 1)]

    @property
    def anchor_config(self) -> AnchorConfig:
        return self.cfg.anchors

    @anchor_config.setter
    def anchor_config(self, anchors: AnchorConfig) -> None:
        """Other anchors for the same subnets: as many per location, on as many levels."""
        old = self.cfg.anchors
        if anchors.num_anchors != old.num_anchors or len(anchors.sizes) != len(old.sizes):
            raise ValueError(f"the new anchors must keep {old.num_anchors} anchors per location on {len(old.sizes)} levels")
        self.cfg = replace(self.cfg, anchors=anchors)

    # model.score_thresh, model.min_size, ...: read from the config, and assigning one replaces the config
    min_size, max_size, image_mean, image_std, size_divisible = map(
        _setting, ("min_size", "max_size", "image_mean", "image_std", "size_divisible"))  # cfg.input
    fg_iou, bg_iou, allow_low_quality_matches = map(_setting, ("fg_iou", "bg_iou", "allow_low_quality_matches"))  # cfg.matching
    focal_alpha, focal_gamma, box_loss, smooth_l1_beta, loss_normalization = map(
        _setting, ("focal_alpha", "focal_gamma", "box_loss", "smooth_l1_beta", "loss_normalization"))  # cfg.loss
    score_thresh, topk_candidates, nms_thresh, detections_per_img = map(
        _setting, ("score_thresh", "topk_candidates", "nms_thresh", "detections_per_img"))  # cfg.inference
    box_weights = _setting("box_weights")  # cfg.arch: what the box subnet's outputs mean

    def replace_classes(self, names: list[str] | int, prior_prob: float | None = None) -> RetinaNet:
        """Fine-tuning on other classes: a fresh final classification layer for len(names) classes (an int: that
        many unnamed ones), initialised to the prior π (section 4.1; default the config's); every other weight is
        kept, and the config records the classes."""
        num_classes, class_names = (names, None) if isinstance(names, int) else (len(names), tuple(names))
        prior = self.cfg.arch.prior_prob if prior_prob is None else prior_prob
        arch = replace(self.cfg.arch, num_classes=num_classes, class_names=class_names, prior_prob=prior)  # validates
        self.class_subnet.reset_classifier(num_classes, prior)
        self.cfg = replace(self.cfg, arch=arch)
        return self

    # ---- the forward pass -------------------------------------------------------------------------------------
    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None, record: dict | None = None):
        """Train mode: the losses {"classification", "bbox_regression"} of `images` against `targets`.
        Eval mode: the detections, one {"boxes", "scores", "labels"} per image in its own pixels (targets unused).

        record: a dict that receives each stage's output under the stage's name, as this pass computes it
        (`inspect` shapes it for teaching). When recording, targets given in eval mode are matched and scored too,
        and train mode may go without targets (it then returns None). None, the default, records nothing."""
        use_targets = targets is not None and (self.training or record is not None)
        batch, sizes, boxes = self.preprocess(images, targets if use_targets else None, record)
        features = self.features(batch, record)
        cls_logits, box_deltas = self.heads(features, record)
        anchors = self.anchors(batch, features, record)
        losses = None
        if use_targets:
            all_anchors = torch.cat(anchors)  # (A, 4): matching and the loss see every level at once
            matches, gt_boxes, gt_labels = self.match(all_anchors, boxes, targets, record)
            losses = self.loss(cls_logits, box_deltas, all_anchors, matches, gt_boxes, gt_labels, record)
        if self.training:
            return losses
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        return self.detect(cls_logits, box_deltas, anchors, sizes, original_sizes, record)

    def preprocess(self, images, targets=None, record=None):
        """Stage "preprocess" (transform.py): check the inputs; normalise, resize and pad the images into one batch
        (B, 3, H, W); scale the targets' boxes alike. Returns the batch, each image's resized (h, w), the boxes."""
        check_images(images)
        if targets is not None or (self.training and record is None):
            self._check_targets(targets, len(images))
        boxes = [t["boxes"] for t in targets] if targets is not None else None
        batch, sizes, boxes = preprocess_images(images, boxes, self.cfg.input, training=self.training)
        if record is not None:
            record["preprocess"] = {"batch": batch, "image_sizes": sizes, "boxes": boxes}
        return batch, sizes, boxes

    def features(self, batch: Tensor, record=None) -> list[Tensor]:
        """Stage "features" (backbone.py, fpn.py): C3-C5, then the pyramid [P3, ..., P7], (B, C, H_l, W_l) each."""
        features = self.fpn(*self.backbone(batch))
        if record is not None:
            record["features"] = features
        return features

    def heads(self, features: list[Tensor], record=None) -> tuple[list[Tensor], list[Tensor]]:
        """Stage "heads" (heads.py): per level, logits (B, H_l*W_l*A, K) and box deltas (B, H_l*W_l*A, 4)."""
        cls_logits, box_deltas = self.class_subnet(features), self.box_subnet(features)
        if record is not None:
            record["heads"] = {"cls_logits": cls_logits, "box_deltas": box_deltas}
        return cls_logits, box_deltas

    def anchors(self, batch: Tensor, features: list[Tensor], record=None) -> list[Tensor]:
        """Stage "anchors" (anchors.py): per level (H_l*W_l*A, 4) in the batch's pixels, in the heads' order."""
        sizes = [tuple(f.shape[-2:]) for f in features]
        anchors = make_anchors(self.cfg.anchors, tuple(batch.shape[-2:]), sizes, dtype=features[0].dtype, device=batch.device)
        if record is not None:
            record["anchors"] = anchors
        return anchors

    def match(self, anchors: Tensor, boxes: list[Tensor], targets, record=None) -> tuple[Matches, Tensor, Tensor]:
        """Stage "match" (matching.py): all anchors (A, 4) to the (resized) boxes of each image. Returns the Matches
        (B, A) (box index, BACKGROUND or IGNORE; best IoU), the padded boxes (B, G, 4) and labels (B, G)."""
        gt_boxes, gt_labels, gt_valid = pad_targets([b.to(anchors.dtype) for b in boxes],
                                                    [t["labels"].to(anchors.device) for t in targets])
        matches = match_anchors(anchors, gt_boxes, gt_valid, self.cfg.matching)
        if record is not None:
            record["match"] = {"matches": matches, "gt_boxes": gt_boxes, "gt_labels": gt_labels, "anchors": anchors}
        return matches, gt_boxes, gt_labels

    def loss(self, cls_logits: list[Tensor], box_deltas: list[Tensor], anchors: Tensor, matches: Matches,
             gt_boxes: Tensor, gt_labels: Tensor, record=None) -> dict[str, Tensor]:
        """Stage "loss" (loss.py, section 4.1): the batch's focal loss and box loss, normalised by foreground anchors."""
        losses = retinanet_loss(torch.cat(cls_logits, dim=1), torch.cat(box_deltas, dim=1), anchors, matches.index,
                                gt_boxes, gt_labels, box_weights=self.cfg.arch.box_weights, config=self.cfg.loss)
        if record is not None:
            record["loss"] = losses
        return losses

    def detect(self, cls_logits: list[Tensor], box_deltas: list[Tensor], anchors: list[Tensor], image_sizes, original_sizes,
               record=None) -> list[dict[str, Tensor]]:
        """Stages "select", "decode", "nms" (postprocess.py, section 4.1); then the boxes in each input image's pixels."""
        detections = postprocess_detections(cls_logits, box_deltas, anchors, image_sizes, self.cfg.inference,
                                            self.cfg.arch.box_weights, record)
        for det, size, original in zip(detections, image_sizes, original_sizes):
            det["boxes"] = boxes_to_original(det["boxes"], size, original)
        return detections

    def _check_targets(self, targets, num_images: int) -> None:
        if targets is None:
            raise ValueError("in train mode the model needs targets: model(images, targets), or call model.eval()")
        if not isinstance(targets, (list, tuple)) or len(targets) != num_images:
            raise ValueError(f"targets must be a list of {num_images} dicts (one per image), got {type(targets).__name__}"
                             + (f" of length {len(targets)}" if isinstance(targets, (list, tuple)) else ""))
        for i, t in enumerate(targets):  # types and shapes: Python only, no device sync
            if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
                raise ValueError(f"targets[{i}] must be a dict with 'boxes' and 'labels'")
            boxes, labels = t["boxes"], t["labels"]
            if not torch.is_tensor(boxes) or boxes.dim() != 2 or boxes.shape[-1] != 4 or not boxes.is_floating_point():
                check_boxes(boxes, f"targets[{i}]['boxes']")  # raises, naming what is wrong
            if not torch.is_tensor(labels) or labels.dtype.is_floating_point or labels.dim() != 1:
                raise TypeError(f"targets[{i}]['labels'] must be a 1-D integer tensor, got "
                                f"{labels.dtype if torch.is_tensor(labels) else type(labels).__name__}")
            if labels.shape[0] != boxes.shape[0]:
                raise ValueError(f"targets[{i}] has {boxes.shape[0]} boxes but {labels.shape[0]} labels")
        # values: one check over the whole batch (one sync per step); per image only to word an error
        boxes = torch.cat([t["boxes"].detach().reshape(-1, 4) for t in targets])
        labels = torch.cat([t["labels"].reshape(-1) for t in targets])
        bad_boxes = ~torch.isfinite(boxes).all(dim=1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        bad_labels = (labels < 1) | (labels > self.num_classes)
        if not bool(bad_boxes.any() | bad_labels.any()):
            return
        for i, t in enumerate(targets):
            check_boxes(t["boxes"], f"targets[{i}]['boxes']")
            wrong = (t["labels"] < 1) | (t["labels"] > self.num_classes)
            if wrong.any():
                raise ValueError(f"targets[{i}]['labels'] has label {t['labels'][wrong][0].item()}: labels must be in "
                                 f"1..{self.num_classes} (num_classes={self.num_classes}; 0 is background and is never a label)")

    # ---- the pass, level by level, for teaching ------------------------------------------------------------------
    @torch.no_grad()
    def inspect(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> dict:
        """One forward pass, recorded and laid out level by level, for teaching. No gradients; works in train or
        eval mode (train mode: multi-scale training picks its size, as in training).

        Returns a dict with
            "batch": the (B, 3, H, W) network input; "image_sizes": each image's resized (h, w);
            "levels": [3, ..., 7]; "strides", "feature_sizes": per level;
            "features": per level (B, C, H_l, W_l);
            "cls_logits": per level (B, H_l, W_l, A, K); "box_deltas": per level (B, H_l, W_l, A, 4);
            "anchors": per level (H_l, W_l, A, 4), in the network input's pixels;
        and, when targets are given: "gt_boxes" (B, G, 4) scaled to the network input, "gt_labels" (B, G),
        "matched": per level (B, H_l, W_l, A) (box index, -1 background, -2 ignored), "matched_iou" alike,
        "matched_boxes": per level (B, H_l, W_l, A, 4) each anchor's best box (meaningful where matched >= 0),
        "target_deltas": per level (B, H_l, W_l, A, 4) the box subnet's regression targets (0 where not foreground),
        and "losses" (the training losses of this pass). The tensors are those the pass computed (views of them).
        """
        record = {}
        self(images, targets, record=record)
        return self.levels_of(record)

    def levels_of(self, record: dict) -> dict:
        """`inspect`'s dict from the record of a pass: the per-level outputs reshaped to (B, H_l, W_l, A, ...)."""
        batch, features = record["preprocess"]["batch"], record["features"]
        b, shapes = batch.shape[0], [(f.shape[-2], f.shape[-1], self.cfg.anchors.num_anchors) for f in features]
        out = {
            "batch": batch, "image_sizes": record["preprocess"]["image_sizes"], "levels": list(self.cfg.anchors.levels),
            "feature_sizes": [tuple(f.shape[-2:]) for f in features],
            "strides": [(batch.shape[-2] // f.shape[-2], batch.shape[-1] // f.shape[-1]) for f in features],
            "features": features,
            "cls_logits": [c.view(b, *s, -1) for c, s in zip(record["heads"]["cls_logits"], shapes)],
            "box_deltas": [d.view(b, *s, 4) for d, s in zip(record["heads"]["box_deltas"], shapes)],
            "anchors": [a.view(*s, 4) for a, s in zip(record["anchors"], shapes)],
        }
        if "match" in record:
            out.update(self._targets_by_level(record["match"], shapes, b), losses=record["loss"])
        return out

    def _targets_by_level(self, match: dict, shapes: list[tuple[int, int, int]], b: int) -> dict:
        """The match stage's record per level, with each anchor's box and its regression targets (encode_boxes, as the loss)."""
        matches, gt_boxes, anchors = match["matches"], match["gt_boxes"], match["anchors"]
        counts = [h * w * a for h, w, a in shapes]
        fg = matches.index >= 0  # (B, A)
        if gt_boxes.shape[1]:
            matched_boxes = torch.gather(gt_boxes, 1, matches.index.clamp(min=0).unsqueeze(-1).expand(-1, -1, 4))  # (B, A, 4)
        else:
            matched_boxes = anchors.new_zeros(b, anchors.shape[0], 4)
        targets = encode_boxes(matched_boxes, anchors.expand_as(matched_boxes), self.cfg.arch.box_weights)
        target_deltas = torch.where(fg.unsqueeze(-1), targets, torch.zeros((), device=targets.device))  # (B, A, 4)

        def per_level(x: Tensor, *tail: int) -> list[Tensor]:
            return [part.view(b, *s, *tail) for part, s in zip(x.split(counts, dim=1), shapes)]

        return {"gt_boxes": gt_boxes, "gt_labels": match["gt_labels"], "matched": per_level(matches.index),
                "matched_iou": per_level(matches.iou), "matched_boxes": per_level(matched_boxes, 4),
                "target_deltas": per_level(target_deltas, 4)}

    # ---- torchvision ------------------------------------------------------------------------------------------------
    @classmethod
    def from_torchvision(cls, model_or_state_dict, drop_background: bool = True, **overrides) -> RetinaNet:
        """A RetinaNet with the weights (and, given a model, the settings) of a torchvision RetinaNet
        (torchvision_compat.py; torchvision's output 0, its never-trained background class, dropped by default)."""
        kwargs, state_dict, bn_eps = torchvision_compat.torchvision_settings(model_or_state_dict, drop_background, **overrides)
        return torchvision_compat.load_converted(cls(**kwargs), state_dict, bn_eps)

    @classmethod
    def pretrained(cls, name: str = "coco", progress: bool = True, **overrides) -> RetinaNet:
        """torchvision's COCO-trained weights ("coco": v1, 36.4 AP; "coco_v2": v2, 41.5 AP) in our model, for eval.
        Read from torch hub's cache, or downloaded once; offline, the error says where to put the file."""
        state_dict, kwargs, bn_eps = torchvision_compat.pretrained_weights(name, progress)
        model = cls.from_torchvision(state_dict, drop_background=True, **{**kwargs, **overrides})
        return torchvision_compat.set_bn_eps(model, bn_eps).eval()
