"""retinanet_lab.loss: the training loss of a batch (paper §4.1), against torchvision's RetinaNet head losses and
hand-computed values: the focal loss over the anchors that are not ignored, the box loss on foreground anchors only,
and the normaliser (the foreground anchors of the batch, Detectron, or of each image, torchvision)."""

import math

import pytest
import torch
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetRegressionHead

from retinanet_lab.anchors import AnchorConfig, make_anchors
from retinanet_lab.config import LossConfig
from retinanet_lab.loss import normalize_loss, retinanet_loss
from retinanet_lab.matching import BACKGROUND, IGNORE, match_anchors, pad_targets

LOG2 = math.log(2)


def loss(cls_logits, box_deltas, anchors, matched, gt_boxes, gt_labels, **settings):
    """`retinanet_loss` with every argument by name; `settings` are the loss's own (alpha, gamma, box_loss, beta,
    normalization)."""
    return retinanet_loss(cls_logits=cls_logits, box_deltas=box_deltas, anchors=anchors, matched=matched,
                          gt_boxes=gt_boxes, gt_labels=gt_labels, **settings)


# ---- hand-computed values --------------------------------------------------------------------------------------------

def _one_box_case():
    """One image, K = 2 classes, three anchors: a foreground one exactly on the box (label 2), a background one and
    an ignored one. The ignored and background anchors carry large logits and deltas that must not count."""
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 6]])
    gt_boxes, gt_labels = torch.tensor([[[0.0, 0, 10, 10]]]), torch.tensor([[2]])
    matched = torch.tensor([[0, BACKGROUND, IGNORE]])
    logits = torch.tensor([[[0.0, math.log(9.0)],  # the foreground anchor: class 2 at p = 0.9, class 1 at p = 0.5
                            [0.0, 0.0],  # background: p = 0.5 for both classes
                            [5.0, 5.0]]])  # ignored: would be a large loss
    deltas = torch.tensor([[[0.05, -1.0, 0.0, 0.0], [100.0, 100, 100, 100], [100.0, 100, 100, 100]]])
    return logits, deltas, anchors, matched, gt_boxes, gt_labels


def test_classification_hand_computed_one_hot_target_and_ignored_anchor():
    # FL = α_t (1 - p_t)^γ (-log p_t), α = 0.25, γ = 2. Label 2 is output 1 (no background output).
    fg_true = 0.25 * 0.1**2 * math.log(10 / 9)  # class 2 of the foreground anchor, p = 0.9, target 1
    negative_at_half = 0.75 * 0.5**2 * LOG2  # any target-0 output at p = 0.5
    expected = fg_true + negative_at_half + 2 * negative_at_half  # N_fg = 1; the ignored anchor adds nothing
    got = loss(*_one_box_case())["classification"]
    assert got.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("box_loss, beta, expected", [
    # target deltas are 0 (the anchor is the box); predicted (0.05, -1, 0, 0)
    ("smooth_l1", 0.11, 0.5 * 0.05**2 / 0.11 + (1.0 - 0.5 * 0.11)),  # |d| < β: 0.5 d²/β; else |d| - β/2
    ("smooth_l1", 1.0, 0.5 * 0.05**2 + 0.5 * 1.0**2),
    ("l1", 0.11, 0.05 + 1.0),
    # decoded: [0.5, -10, 10.5, 0], touching the box [0, 0, 10, 10]: IoU 0, enclosing box 10.5 x 20, union 200
    ("giou", 0.11, 1 - (0 - (210 - 200) / 210)),
])
def test_box_loss_hand_computed_on_foreground_only(box_loss, beta, expected):
    got = loss(*_one_box_case(), box_loss=box_loss, beta=beta)["bbox_regression"]
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_normaliser_per_batch_and_per_image_hand_case():
    """Image 0: 2 foreground and 2 background anchors; image 1: no box, 4 background anchors. All logits 0, K = 1."""
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [70, 70, 80, 80]])
    gt_boxes, gt_labels = torch.tensor([[[0.0, 0, 10, 10]], [[0.0, 0, 1, 1]]]), torch.tensor([[1], [1]])
    matched = torch.tensor([[0, 0, BACKGROUND, BACKGROUND], [BACKGROUND] * 4])
    logits, deltas = torch.zeros(2, 4, 1), torch.zeros(2, 4, 4)
    image0 = 2 * 0.25 * 0.25 * LOG2 + 2 * 0.75 * 0.25 * LOG2  # 0.5 log 2
    image1 = 4 * 0.75 * 0.25 * LOG2  # 0.75 log 2
    batch = loss(logits, deltas, anchors, matched, gt_boxes, gt_labels, normalization="batch")["classification"]
    image = loss(logits, deltas, anchors, matched, gt_boxes, gt_labels, normalization="image")["classification"]
    assert batch.item() == pytest.approx((image0 + image1) / 2, rel=1e-6)  # one count for the batch: 2
    assert image.item() == pytest.approx((image0 / 2 + image1 / 1) / 2, rel=1e-6)  # each its own; 0 counts as 1


def test_normalize_loss_hand_values():
    per_image, num_fg = torch.tensor([6.0, 1.0, 4.0]), torch.tensor([3, 0, 1])
    assert normalize_loss(per_image=per_image, num_foreground=num_fg, normalization="batch").item() == pytest.approx(11 / 4)
    assert normalize_loss(per_image=per_image, num_foreground=num_fg, normalization="image").item() == pytest.approx((2 + 1 + 4) / 3)
    no_box = normalize_loss(per_image=torch.tensor([5.0]), num_foreground=torch.tensor([0]), normalization="batch")
    assert no_box.item() == 5.0  # divided by max(1, 0): no NaN
    with pytest.raises(ValueError, match="normalization"):
        normalize_loss(per_image=per_image, num_foreground=num_fg, normalization="anchors")


def test_no_foreground_anywhere_gives_zero_box_loss_and_finite_gradients():
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    logits = torch.randn(2, 2, 3, requires_grad=True)
    deltas = torch.randn(2, 2, 4, requires_grad=True)
    losses = loss(logits, deltas, anchors, torch.full((2, 2), BACKGROUND), torch.zeros(2, 0, 4),
                  torch.zeros(2, 0, dtype=torch.long))
    assert losses["bbox_regression"].item() == 0.0 and losses["classification"].item() > 0
    sum(losses.values()).backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad != 0).any()


def test_bad_settings_name_the_argument():
    case = _one_box_case()
    with pytest.raises(ValueError, match="box_loss"):
        loss(*case, box_loss="iou")
    with pytest.raises(ValueError, match="normalization"):
        loss(*case, normalization="anchors")


def test_a_loss_config_means_the_same_settings_as_by_name():
    """What the model passes (config=cfg.loss) gives what the same settings by name give, and not the defaults."""
    logits, deltas, anchors, matched, gt_boxes, gt_labels, _ = _batch()
    args = dict(cls_logits=logits, box_deltas=deltas, anchors=anchors, matched=matched, gt_boxes=gt_boxes, gt_labels=gt_labels)
    config = LossConfig(focal_alpha=0.5, focal_gamma=1.0, box_loss="giou", smooth_l1_beta=0.2, normalization="image")
    by_config = retinanet_loss(**args, config=config)
    by_name = loss(*args.values(), alpha=0.5, gamma=1.0, box_loss="giou", beta=0.2, normalization="image")
    default = loss(*args.values())
    for key in ("classification", "bbox_regression"):
        torch.testing.assert_close(by_config[key], by_name[key])
        assert not torch.allclose(by_config[key], default[key])


# ---- torchvision's RetinaNet head losses as the reference ------------------------------------------------------------

def _batch(num_classes=4):
    """Three images on one anchor grid: six boxes, two boxes, none. Random logits and deltas."""
    g = torch.Generator().manual_seed(0)
    anchors = torch.cat(make_anchors(AnchorConfig(), (128, 128), [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]))
    counts = [6, 2, 0]
    boxes, labels = [], []
    for c in counts:
        xy = torch.rand(c, 2, generator=g) * 90
        boxes.append(torch.cat([xy, xy + 8 + torch.rand(c, 2, generator=g) * 60], dim=1))
        labels.append(torch.randint(1, num_classes + 1, (c,), generator=g))
    gt_boxes, gt_labels, gt_valid = pad_targets(boxes, labels)
    matched = match_anchors(anchors, gt_boxes, gt_valid).index  # (B, A)
    assert (matched >= 0).any() and (matched == IGNORE).any()
    logits = torch.randn(3, anchors.shape[0], num_classes, generator=g) * 3
    deltas = torch.randn(3, anchors.shape[0], 4, generator=g) * 0.5
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]
    return logits, deltas, anchors, matched, gt_boxes, gt_labels, targets


def _torchvision_losses(logits, deltas, anchors, matched, targets, box_loss):
    """torchvision's head losses; its classification has an extra output 0 (background, never a target): given a
    logit of -100, its focal loss is 0 to float precision."""
    k = logits.shape[-1]
    cls_head = RetinaNetClassificationHead(in_channels=8, num_anchors=1, num_classes=k + 1)
    box_head = RetinaNetRegressionHead(in_channels=8, num_anchors=1)
    box_head._loss_type = box_loss
    with_background = torch.cat([torch.full_like(logits[..., :1], -100.0), logits], dim=-1)
    outputs = {"cls_logits": with_background, "bbox_regression": deltas}
    per_image = [anchors] * len(targets)
    return {"classification": cls_head.compute_loss(targets, outputs, list(matched)),
            "bbox_regression": box_head.compute_loss(targets, outputs, per_image, list(matched))}


@pytest.mark.parametrize("box_loss", ["l1", "smooth_l1", "giou"])
def test_per_image_normalisation_equals_torchvision_heads(box_loss):
    logits, deltas, anchors, matched, gt_boxes, gt_labels, targets = _batch()
    logits.requires_grad_()
    ref_logits = logits.detach().clone().requires_grad_()
    # torchvision's regression head calls smooth L1 with torch's default β = 1
    ours = loss(logits, deltas, anchors, matched, gt_boxes, gt_labels, box_loss=box_loss, beta=1.0, normalization="image")
    ref = _torchvision_losses(ref_logits, deltas, anchors, matched, targets, box_loss)
    for key in ("classification", "bbox_regression"):
        torch.testing.assert_close(ours[key], ref[key], rtol=1e-5, atol=1e-6)
    (g_ours,) = torch.autograd.grad(ours["classification"], logits)
    (g_ref,) = torch.autograd.grad(ref["classification"], ref_logits)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-7)


def test_per_batch_normalisation_is_torchvision_reweighted_by_foreground_counts():
    """Detectron's normaliser: Σ_i loss_i / Σ_i N_i = Σ_i (N_i / Σ N) · (loss_i / N_i), from torchvision's per-image losses."""
    logits, deltas, anchors, matched, gt_boxes, gt_labels, targets = _batch()
    ours = loss(logits, deltas, anchors, matched, gt_boxes, gt_labels, box_loss="l1", normalization="batch")
    num_fg = (matched >= 0).sum(dim=1)  # (B,)
    assert num_fg.tolist()[2] == 0 and num_fg[0] != num_fg[1]
    each = [_torchvision_losses(logits[i:i + 1], deltas[i:i + 1], anchors, matched[i:i + 1], targets[i:i + 1], "l1")
            for i in range(3)]
    for key in ("classification", "bbox_regression"):
        per_image = torch.stack([e[key] for e in each]) * num_fg.clamp(min=1)  # back to each image's sum
        torch.testing.assert_close(ours[key], per_image.sum() / num_fg.sum(), rtol=1e-5, atol=1e-6)
