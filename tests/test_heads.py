"""retinanet_lab.heads: the classification and box subnets (paper §4, Figure 3 (c), (d)) against torchvision's
RetinaNet heads, their output layout (B, ΣHWA, K), the initialisation of §4.1 and the prior bias -log((1 - π) / π),
the fine-tuning layer and the class heat map."""

import math
from functools import partial

import pytest
import torch
from torch import nn
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetRegressionHead

from retinanet_lab.heads import BoxSubnet, ClassificationSubnet, class_heatmap, new_classifier, prior_bias

LEVEL_SIZES = [(8, 10), (4, 5), (2, 3), (1, 2), (1, 1)]  # H != W on every level but the last


def _features(channels, batch=2, seed=0, levels=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, h, w, generator=g) for h, w in LEVEL_SIZES[:levels]]


def test_prior_bias_is_the_logit_of_pi():
    assert prior_bias(0.5) == 0.0
    assert prior_bias(0.1) == pytest.approx(-math.log(9))
    for pi in (0.001, 0.1, 0.3, 0.9):
        assert torch.sigmoid(torch.tensor(prior_bias(pi), dtype=torch.float64)).item() == pytest.approx(pi, rel=1e-12)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="prior_prob"):
            prior_bias(bad)


@pytest.mark.parametrize("num_anchors, num_classes", [(9, 3), (2, 5)])
def test_output_shapes_per_level_and_concatenated(num_anchors, num_classes):
    feats = _features(16)
    cls = ClassificationSubnet(in_channels=16, num_anchors=num_anchors, num_classes=num_classes, num_convs=2, channels=32)
    box = BoxSubnet(in_channels=16, num_anchors=num_anchors, num_convs=2, channels=32)
    logits, deltas = cls(feats), box(feats)
    for lg, dl, (h, w) in zip(logits, deltas, LEVEL_SIZES):
        assert lg.shape == (2, h * w * num_anchors, num_classes) and dl.shape == (2, h * w * num_anchors, 4)
    total = sum(h * w for h, w in LEVEL_SIZES) * num_anchors
    assert torch.cat(logits, dim=1).shape == (2, total, num_classes)  # (B, ΣHWA, K)
    assert torch.cat(deltas, dim=1).shape == (2, total, 4)


def test_layout_is_location_major_then_anchor_channel_a_times_k_plus_k():
    """Output row (y·W + x)·A + a, column k is the last convolution's channel a·K + k at (y, x): the anchors' order."""
    a, k = 3, 4  # A != K, so that reading the channels as (K, A) would show
    subnet = ClassificationSubnet(in_channels=8, num_anchors=a, num_classes=k, num_convs=1, channels=8)
    f = torch.randn(2, 8, 3, 5)
    out = subnet([f])[0]  # (2, 3*5*3, 4)
    raw = subnet.logits(subnet.tower(f))  # (2, A*K, 3, 5)
    for b in range(2):
        for y in range(3):
            for x in range(5):
                for anchor in range(a):
                    row = (y * 5 + x) * a + anchor
                    assert torch.equal(out[b, row], raw[b, anchor * k:(anchor + 1) * k, y, x])
    deltas = BoxSubnet(in_channels=8, num_anchors=a, num_convs=0)
    out, raw = deltas([f])[0], deltas.deltas(f)
    assert torch.equal(out[1, (2 * 5 + 4) * a + 1], raw[1, 4:8, 2, 4])  # anchor 1 at (y=2, x=4): channels 4..7


@pytest.mark.parametrize("norm", [None, "group"])
def test_equal_torchvision_heads_given_the_same_weights(norm):
    torch.manual_seed(0)
    channels, a, k = 32, 9, 3
    norm_layer = partial(nn.GroupNorm, 32) if norm == "group" else None
    tv_cls = RetinaNetClassificationHead(channels, a, k, prior_probability=0.01, norm_layer=norm_layer)
    tv_box = RetinaNetRegressionHead(channels, a, norm_layer=norm_layer)
    cls = ClassificationSubnet(in_channels=channels, num_anchors=a, num_classes=k, num_convs=4, channels=channels, norm=norm)
    box = BoxSubnet(in_channels=channels, num_anchors=a, num_convs=4, channels=channels, norm=norm)
    # the same parameter layout: torchvision's conv.{i}.{j} is our tower.{i}.{j}
    cls.load_state_dict({k_.replace("conv.", "tower.").replace("cls_logits.", "logits."): v for k_, v in tv_cls.state_dict().items()})
    box.load_state_dict({k_.replace("conv.", "tower.").replace("bbox_reg.", "deltas."): v for k_, v in tv_box.state_dict().items()})
    feats = _features(channels, levels=3)
    with torch.no_grad():
        torch.testing.assert_close(torch.cat(cls(feats), dim=1), tv_cls(feats))
        torch.testing.assert_close(torch.cat(box(feats), dim=1), tv_box(feats))


def test_initialisation_of_section_4_1():
    """Every convolution normal(std 0.01) with zero bias, except the last classification bias: -log((1 - π) / π);
    GroupNorm's convolutions have no bias (the norm has one), as torchvision's."""
    torch.manual_seed(0)
    cls = ClassificationSubnet(in_channels=64, num_anchors=9, num_classes=5, num_convs=2, channels=64, prior_prob=0.02)
    box = BoxSubnet(in_channels=64, num_anchors=9, num_convs=2, channels=64)
    convs = [m for m in [*cls.modules(), *box.modules()] if isinstance(m, nn.Conv2d)]
    assert len(convs) == 6
    for conv in convs:
        assert conv.weight.std().item() == pytest.approx(0.01, rel=0.05) and abs(conv.weight.mean().item()) < 1e-3
    assert torch.equal(cls.logits.bias, torch.full_like(cls.logits.bias, prior_bias(0.02)))
    for conv in [*cls.tower.modules(), *box.modules()]:
        if isinstance(conv, nn.Conv2d):
            assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
    grouped = ClassificationSubnet(in_channels=64, num_anchors=9, num_classes=5, num_convs=2, channels=64, norm="group")
    assert [type(m).__name__ for m in grouped.tower[0]] == ["Conv2d", "GroupNorm", "ReLU"]
    assert grouped.tower[0][0].bias is None and grouped.tower[0][1].num_groups == 32


def test_without_tower_the_last_layer_reads_the_features():
    cls = ClassificationSubnet(in_channels=16, num_anchors=9, num_classes=2, num_convs=0)
    assert len(cls.tower) == 0 and cls.logits.in_channels == 16
    assert cls(_features(16))[0].shape == (2, 8 * 10 * 9, 2)


def test_new_classifier_keeps_the_geometry_and_starts_at_pi():
    old = nn.Conv2d(32, 9 * 3, 3, padding=1).double()
    torch.manual_seed(0)
    new = new_classifier(old=old, num_anchors=9, num_classes=5, prior_prob=0.05)
    assert (new.in_channels, new.out_channels) == (32, 9 * 5)
    assert (new.kernel_size, new.stride, new.padding) == (old.kernel_size, old.stride, old.padding)
    assert new.weight.dtype == torch.float64 and new.weight.device == old.weight.device
    torch.testing.assert_close(new.bias, torch.full_like(new.bias, -math.log(19)))  # -log((1 - 0.05) / 0.05)
    assert new.weight.std().item() == pytest.approx(0.01, rel=0.05)
    x = torch.zeros(1, 32, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(torch.sigmoid(new(x)), torch.full((1, 45, 6, 7), 0.05, dtype=torch.float64))


def test_reset_classifier_for_other_classes_keeps_the_tower():
    torch.manual_seed(0)
    subnet = ClassificationSubnet(in_channels=16, num_anchors=9, num_classes=3, num_convs=2, channels=32)
    tower = {k: v.clone() for k, v in subnet.tower.state_dict().items()}
    subnet.reset_classifier(num_classes=5, prior_prob=0.1)
    assert subnet.num_classes == 5 and subnet.logits.out_channels == 9 * 5
    assert all(torch.equal(v, tower[k]) for k, v in subnet.tower.state_dict().items())
    torch.testing.assert_close(subnet.logits.bias, torch.full((45,), prior_bias(0.1)))
    out = subnet(_features(16))
    assert [o.shape for o in out] == [(2, h * w * 9, 5) for h, w in LEVEL_SIZES]


def test_class_heatmap_hand_case():
    """H = 2, W = 3, A = 2, K = 2; all logits 0 (p = 0.5) but two: the map is the best anchor's probability."""
    h, w, a, k = 2, 3, 2, 2
    logits = torch.zeros(h, w, a, k)
    logits[1, 2, 1, 0] = math.log(9.0)  # p = 0.9 for class 0 at (1, 2), anchor 1
    logits[0, 1, 0, 1] = -math.log(9.0)  # p = 0.1 for class 1 at (0, 1), anchor 0: anchor 1 there is still 0.5
    heat = class_heatmap(logits=logits.reshape(h * w * a, k), height=h, width=w, num_anchors=a)
    expected = torch.full((k, h, w), 0.5)
    expected[0, 1, 2] = 0.9
    assert heat.shape == (k, h, w)
    torch.testing.assert_close(heat, expected)


def test_class_heatmap_of_a_subnet_output_reads_the_conv_channels():
    """From the flattened subnet output back to the last convolution's channels, viewed (A, K, H, W)."""
    a, k = 3, 4
    subnet = ClassificationSubnet(in_channels=8, num_anchors=a, num_classes=k, num_convs=1, channels=8)
    nn.init.normal_(subnet.logits.weight, std=1.0)  # spread the probabilities out
    f = torch.randn(1, 8, 5, 6)
    with torch.no_grad():
        flat = subnet([f])[0][0]  # (5*6*A, K)
        raw = subnet.logits(subnet.tower(f))[0]  # (A*K, 5, 6)
    ref = torch.sigmoid(raw).view(a, k, 5, 6).amax(dim=0)  # (K, H, W)
    torch.testing.assert_close(class_heatmap(logits=flat, height=5, width=6, num_anchors=a), ref)
