"""RetinaNet (paper section 4, Figure 3): ResNet + FPN (P3-P7), a classification and a box subnet
on every level, 9 anchors per location, focal loss in training, top-k + NMS at inference.

Usage follows torchvision's detection models:

    model = RetinaNet(num_classes=3)
    model.train(); losses = model(images, targets)   # {"classification", "bbox_regression"}
    model.eval();  detections = model(images)         # [{"boxes", "scores", "labels"}, ...]

`images` is a list of (3, H, W) float tensors in [0, 1], of any sizes; `targets` a list of dicts with
"boxes" (N, 4) float (x1, y1, x2, y2) in the image's pixels and "labels" (N,) int in 1..num_classes
(0 is not a class: background is the absence of every class). Boxes come back in the same coordinates.
`model.inspect(images, targets)` returns everything in between, level by level, for teaching.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import Tensor, nn

from .anchors import AnchorConfig, make_anchors
from .backbone import ResNetBody
from .boxes import check_boxes, encode_boxes
from .fpn import FeaturePyramid
from .heads import BoxSubnet, ClassificationSubnet
from .loss import BOX_LOSSES, retinanet_loss
from .matching import match_anchors, pad_targets
from .postprocess import postprocess_detections
from .transform import IMAGENET_MEAN, IMAGENET_STD, boxes_to_original, check_images, preprocess

__all__ = ["RetinaNet"]


class RetinaNet(nn.Module):
    """A RetinaNet detector.

    Architecture: num_classes (K, not counting background), backbone ("resnet18" | "resnet34" |
    "resnet50" | "resnet101"), backbone_weights (None | "imagenet"), trainable_backbone_layers (0-5),
    frozen_bn, fpn_channels, p6_from ("c5" paper | "p5" torchvision v1), head_convs, head_channels,
    norm (None | "group"), prior_prob (π of section 4.1), anchors (an AnchorConfig).
    Input: min_size (int, or a tuple for multi-scale training), max_size, image_mean, image_std,
    size_divisible. Training: fg_iou, bg_iou, allow_low_quality_matches, focal_alpha, focal_gamma,
    box_loss ("smooth_l1" | "l1" | "giou"), smooth_l1_beta, loss_normalization ("batch" | "image").
    Inference: score_thresh, topk_candidates, nms_thresh, detections_per_img.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        backbone_weights: str | None = None,
        trainable_backbone_layers: int = 3,
        frozen_bn: bool = True,
        fpn_channels: int = 256,
        p6_from: str = "c5",
        head_convs: int = 4,
        head_channels: int = 256,
        norm: str | None = None,
        prior_prob: float = 0.01,
        anchors: AnchorConfig | dict | None = None,
        min_size: int | tuple[int, ...] = 800,
        max_size: int = 1333,
        image_mean: tuple[float, float, float] = IMAGENET_MEAN,
        image_std: tuple[float, float, float] = IMAGENET_STD,
        size_divisible: int = 32,
        fg_iou: float = 0.5,
        bg_iou: float = 0.4,
        allow_low_quality_matches: bool = True,
        focal_alpha: float | None = 0.25,
        focal_gamma: float = 2.0,
        box_loss: str = "smooth_l1",
        smooth_l1_beta: float = 0.11,
        loss_normalization: str = "batch",
        box_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
        score_thresh: float = 0.05,
        topk_candidates: int = 1000,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        class_names: list[str] | None = None,
    ):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int (not counting background), got {num_classes!r}")
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
        if not 0 <= bg_iou <= fg_iou <= 1:
            raise ValueError(f"need 0 <= bg_iou <= fg_iou <= 1, got bg_iou={bg_iou}, fg_iou={fg_iou}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for num_classes={num_classes}")
        if isinstance(anchors, dict):
            anchors = AnchorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in anchors.items()})
        self.anchor_config = anchors or AnchorConfig()
        self._architecture = dict(
            num_classes=num_classes, backbone=backbone, trainable_backbone_layers=trainable_backbone_layers,
            frozen_bn=frozen_bn, fpn_channels=fpn_channels, p6_from=p6_from, head_convs=head_convs, head_channels=head_channels,
            norm=norm, prior_prob=prior_prob, anchors=asdict(self.anchor_config),
            class_names=list(class_names) if class_names else None,
        )
        # Settings that may change after construction (model.score_thresh = 0.3): plain attributes.
        self.min_size, self.max_size, self.size_divisible = min_size, max_size, size_divisible
        self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)
        self.fg_iou, self.bg_iou, self.allow_low_quality_matches = fg_iou, bg_iou, allow_low_quality_matches
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.box_loss, self.smooth_l1_beta, self.loss_normalization = box_loss, smooth_l1_beta, loss_normalization
        self.box_weights = tuple(box_weights)
        self.score_thresh, self.topk_candidates = score_thresh, topk_candidates
        self.nms_thresh, self.detections_per_img = nms_thresh, detections_per_img
        num_anchors = self.anchor_config.num_anchors
        self.backbone = ResNetBody(backbone, backbone_weights, trainable_backbone_layers, frozen_bn)
        self.fpn = FeaturePyramid(self.backbone.out_channels, fpn_channels, p6_from)
        self.class_subnet = ClassificationSubnet(fpn_channels, num_anchors, num_classes, head_convs, head_channels, norm, prior_prob)
        self.box_subnet = BoxSubnet(fpn_channels, num_anchors, head_convs, head_channels, norm)

    # ---- conveniences -------------------------------------------------------------------------
    SETTINGS = ("min_size", "max_size", "image_mean", "image_std", "size_divisible", "fg_iou", "bg_iou",
                "allow_low_quality_matches", "focal_alpha", "focal_gamma", "box_loss", "smooth_l1_beta",
                "loss_normalization", "box_weights", "score_thresh", "topk_candidates", "nms_thresh", "detections_per_img")

    @property
    def config(self) -> dict:
        """Every constructor argument, enough to rebuild this model: RetinaNet(**model.config)."""
        return {**self._architecture, **{k: getattr(self, k) for k in self.SETTINGS}}

    @property
    def num_classes(self) -> int:
        return self._architecture["num_classes"]

    @property
    def class_names(self) -> list[str]:
        return self._architecture["class_names"] or [str(k) for k in range(1, self.num_classes + 1)]

    # ---- the forward pass, in steps ------------------------------------------------------------
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

    def _features(self, batch: Tensor) -> list[Tensor]:
        return self.fpn(*self.backbone(batch))  # [P3, ..., P7]

    def _anchors(self, batch: Tensor, features: list[Tensor]) -> list[Tensor]:
        sizes = [tuple(f.shape[-2:]) for f in features]
        return make_anchors(self.anchor_config, tuple(batch.shape[-2:]), sizes, dtype=features[0].dtype, device=batch.device)

    def _prepare(self, images, targets):
        check_images(images)
        if self.training:
            self._check_targets(targets, len(images))
        boxes = [t["boxes"] for t in targets] if targets is not None else None
        return preprocess(images, boxes, self.min_size, self.max_size, self.image_mean, self.image_std,
                          self.size_divisible, self.training)

    def _match_and_loss(self, cls_logits: list[Tensor], box_deltas: list[Tensor], anchors: list[Tensor], boxes, targets):
        """Match the anchors of all levels to the (resized) boxes, then the batch's losses."""
        all_anchors = torch.cat(anchors)  # (A, 4)
        gt_boxes, gt_labels, gt_valid = pad_targets([b.to(all_anchors.dtype) for b in boxes],
                                                    [t["labels"].to(all_anchors.device) for t in targets])
        matched = match_anchors(all_anchors, gt_boxes, gt_valid, self.fg_iou, self.bg_iou, self.allow_low_quality_matches)
        losses = retinanet_loss(
            torch.cat(cls_logits, dim=1), torch.cat(box_deltas, dim=1), all_anchors, matched.index, gt_boxes, gt_labels,
            self.focal_alpha, self.focal_gamma, self.box_loss, self.smooth_l1_beta, self.box_weights, self.loss_normalization,
        )
        return all_anchors, matched, gt_boxes, gt_labels, losses

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        original_sizes = [tuple(img.shape[-2:]) for img in images] if isinstance(images, (list, tuple)) else None
        batch, sizes, boxes = self._prepare(images, targets)
        features = self._features(batch)
        cls_logits, box_deltas = self.class_subnet(features), self.box_subnet(features)
        anchors = self._anchors(batch, features)
        if self.training:
            return self._match_and_loss(cls_logits, box_deltas, anchors, boxes, targets)[-1]
        detections = postprocess_detections(cls_logits, box_deltas, anchors, sizes, self.score_thresh, self.topk_candidates,
                                            self.nms_thresh, self.detections_per_img, self.box_weights)
        for det, size, original in zip(detections, sizes, original_sizes):
            det["boxes"] = boxes_to_original(det["boxes"], size, original)
        return detections

    @torch.no_grad()
    def inspect(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> dict:
        """One forward pass, level by level, for teaching. No gradients; works in train or eval mode.

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
        and "losses" (the training losses of this pass).
        """
        if targets is not None:
            self._check_targets(targets, len(images))
        check_images(images)
        boxes = [t["boxes"] for t in targets] if targets is not None else None
        batch, sizes, boxes = preprocess(images, boxes, self.min_size, self.max_size, self.image_mean, self.image_std,
                                         self.size_divisible, training=False)
        features = self._features(batch)
        cls_logits, box_deltas = self.class_subnet(features), self.box_subnet(features)
        anchors = self._anchors(batch, features)
        shapes = [(f.shape[-2], f.shape[-1], self.anchor_config.num_anchors) for f in features]
        b = batch.shape[0]
        out = {
            "batch": batch, "image_sizes": sizes, "levels": list(self.anchor_config.levels),
            "feature_sizes": [tuple(f.shape[-2:]) for f in features],
            "strides": [(batch.shape[-2] // f.shape[-2], batch.shape[-1] // f.shape[-1]) for f in features],
            "features": features,
            "cls_logits": [c.view(b, *s, -1) for c, s in zip(cls_logits, shapes)],
            "box_deltas": [d.view(b, *s, 4) for d, s in zip(box_deltas, shapes)],
            "anchors": [a.view(*s, 4) for a, s in zip(anchors, shapes)],
        }
        if targets is not None:
            all_anchors, matched, gt_boxes, gt_labels, losses = self._match_and_loss(cls_logits, box_deltas, anchors, boxes, targets)
            counts = [a.shape[0] for a in anchors]
            fg = matched.index >= 0  # (B, A)
            safe = matched.index.clamp(min=0)
            matched_boxes = torch.gather(gt_boxes, 1, safe.unsqueeze(-1).expand(-1, -1, 4)) if gt_boxes.shape[1] \
                else torch.zeros(b, all_anchors.shape[0], 4, device=batch.device)  # (B, A, 4)
            target_deltas = torch.where(fg.unsqueeze(-1), encode_boxes(matched_boxes, all_anchors.expand_as(matched_boxes),
                                                                     self.box_weights), torch.zeros(()))
            out.update(
                gt_boxes=gt_boxes, gt_labels=gt_labels,
                matched_boxes=[m.view(b, *s, 4) for m, s in zip(matched_boxes.split(counts, dim=1), shapes)],
                target_deltas=[t.view(b, *s, 4) for t, s in zip(target_deltas.split(counts, dim=1), shapes)],
                matched=[m.view(b, *s) for m, s in zip(matched.index.split(counts, dim=1), shapes)],
                matched_iou=[m.view(b, *s) for m, s in zip(matched.iou.split(counts, dim=1), shapes)],
                losses=losses,
            )
        return out

    # ---- torchvision -----------------------------------------------------------------------------
    @classmethod
    def from_torchvision(cls, model_or_state_dict, drop_background: bool = True, **overrides) -> RetinaNet:
        """A RetinaNet with the weights (and, given a model, the settings) of a torchvision RetinaNet."""
        from .torchvision_compat import from_torchvision

        return from_torchvision(model_or_state_dict, drop_background=drop_background, **overrides)

    @classmethod
    def pretrained(cls, name: str = "coco", progress: bool = True, **overrides) -> RetinaNet:
        """torchvision's COCO-trained weights ("coco": v1, 36.4 AP; "coco_v2": v2, 41.5 AP) in our model."""
        from .torchvision_compat import pretrained

        return pretrained(name, progress=progress, **overrides)
