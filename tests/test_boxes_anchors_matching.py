"""Box coding, IoU, anchors and matching: properties, torchvision references, and edge cases."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder, Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

from retinanet_lab import (
    BACKGROUND,
    IGNORE,
    AnchorConfig,
    batched_box_iou,
    cell_anchors,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    make_anchors,
    match_anchors,
)
from retinanet_lab.boxes import BBOX_CLIP, check_boxes
from retinanet_lab.matching import pad_targets


def box_strategy(max_size=1000.0):
    coord = st.floats(0, max_size, allow_nan=False)
    size = st.floats(1.0, max_size, allow_nan=False)
    return st.tuples(coord, coord, size, size).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@settings(max_examples=200, deadline=None)
@given(st.lists(box_strategy(), min_size=1, max_size=20), st.lists(box_strategy(), min_size=1, max_size=20),
       st.sampled_from([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]))
def test_encode_decode_round_trip(gt, anchors, weights):
    n = min(len(gt), len(anchors))
    gt, anchors = torch.tensor(gt[:n], dtype=torch.float64), torch.tensor(anchors[:n], dtype=torch.float64)
    deltas = encode_boxes(gt, anchors, weights)
    ok = (deltas[:, 2:] / torch.tensor(weights[2:], dtype=torch.float64)).abs().amax(dim=1) < BBOX_CLIP  # not clamped
    torch.testing.assert_close(decode_boxes(deltas, anchors, weights)[ok], gt[ok], rtol=1e-9, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.lists(box_strategy(), min_size=1, max_size=10), st.lists(box_strategy(), min_size=1, max_size=10))
def test_encode_decode_equal_torchvision_box_coder(gt, anchors):
    n = min(len(gt), len(anchors))
    gt, anchors = torch.tensor(gt[:n]), torch.tensor(anchors[:n])
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    torch.testing.assert_close(encode_boxes(gt, anchors), coder.encode_single(gt, anchors))
    deltas = torch.randn(n, 4) * 3
    torch.testing.assert_close(decode_boxes(deltas, anchors), coder.decode_single(deltas, anchors))


@settings(max_examples=200, deadline=None)
@given(st.lists(box_strategy(), min_size=1, max_size=15), st.lists(box_strategy(), min_size=1, max_size=15))
def test_iou_properties_and_torchvision(a, b):
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    iou = batched_box_iou(a[None], b)[0]
    torch.testing.assert_close(iou, box_iou(a, b))
    assert ((iou >= 0) & (iou <= 1 + 1e-12)).all()
    torch.testing.assert_close(batched_box_iou(b[None], a)[0], iou.T)  # symmetric
    torch.testing.assert_close(torch.diagonal(batched_box_iou(a[None], a)[0]), torch.ones(len(a), dtype=torch.float64))


def test_iou_hand_computed():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    torch.testing.assert_close(batched_box_iou(a[None], b)[0, 0], torch.tensor([50 / 150, 0.0, 1.0]))


def test_clip_boxes():
    boxes = torch.tensor([[[-5.0, -3, 50, 60]], [[10, 10, 200, 20]]])  # (2, 1, 4)
    out = clip_boxes(boxes, torch.tensor([[40.0], [100.0]]), torch.tensor([[30.0], [150.0]]))
    assert out.tolist() == [[[0, 0, 30, 40]], [[10, 10, 150, 20]]]


def test_check_boxes_errors():
    with pytest.raises(ValueError, match=r"boxes\[1\].*degenerate"):
        check_boxes(torch.tensor([[0.0, 0, 10, 10], [5, 5, 5, 9]]))
    with pytest.raises(ValueError, match="shape"):
        check_boxes(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="not finite"):
        check_boxes(torch.tensor([[0.0, 0, float("nan"), 10]]))
    with pytest.raises(TypeError, match="float"):
        check_boxes(torch.tensor([[0, 0, 10, 10]]))
    check_boxes(torch.zeros(0, 4))  # no box is fine


# ---- anchors ---------------------------------------------------------------------------------------

def test_anchor_sizes_as_torchvision_and_paper():
    config = AnchorConfig()
    assert config.num_anchors == 9
    assert config.level_sizes(0) == [32, 40, 50] and config.level_sizes(1) == [64, 80, 101]
    exact = AnchorConfig(truncate_sizes=False)
    assert exact.level_sizes(0) == pytest.approx([32, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)])
    a = cell_anchors([32.0], (0.5, 1.0, 2.0))
    h = a[:, 3] - a[:, 1]
    w = a[:, 2] - a[:, 0]
    assert (h / w).tolist() == pytest.approx([0.5, 1.0, 2.0], rel=0.05)  # ratio = height / width
    assert (h * w).tolist() == pytest.approx([32 * 32] * 3, rel=0.05)  # same area


@pytest.mark.parametrize("image_size", [(512, 512), (448, 640), (800, 1216), (96, 160)])
def test_anchors_equal_torchvision(image_size):
    config = AnchorConfig()
    sizes = tuple(tuple(int(s) for s in config.level_sizes(i)) for i in range(5))
    gen = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    feature_sizes = [(math.ceil(image_size[0] / 2**lvl), math.ceil(image_size[1] / 2**lvl)) for lvl in range(3, 8)]
    feats = [torch.zeros(1, 1, h, w) for h, w in feature_sizes]
    ref = gen(ImageList(torch.zeros(1, 3, *image_size), [image_size]), feats)[0]
    ours = torch.cat(make_anchors(config, image_size, feature_sizes))
    assert torch.equal(ours, ref)


def test_anchor_layout_location_major():
    anchors = make_anchors(AnchorConfig(sizes=(32,), levels=(3,)), (64, 64), [(8, 8)])[0]
    assert anchors.shape == (8 * 8 * 9, 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert torch.equal(centres[:9], centres[:1].expand(9, 2))  # first 9 share location (0, 0)
    assert centres[9, 0] - centres[0, 0] == 8  # then one stride to the right


def test_anchor_config_errors():
    with pytest.raises(ValueError, match="levels"):
        AnchorConfig(sizes=(32, 64))
    with pytest.raises(ValueError, match="aspect_ratios"):
        AnchorConfig(aspect_ratios=(0.5, -1.0))


# ---- matching --------------------------------------------------------------------------------------

def _iou_exact_anchors():
    """Anchors whose IoU with the box [0, 0, 10, 10] is exactly 0.5, 0.4 and just below each."""
    # a box [0, 0, 10, h] with h <= 10 has IoU h / 10 with the gt
    return torch.tensor([[0.0, 0, 10, 5], [0, 0, 10, 4], [0, 0, 10, 4.999], [0, 0, 10, 3.999], [0, 0, 10, 10], [50, 50, 60, 60]])


def test_matching_thresholds_exactly():
    anchors = _iou_exact_anchors()
    gt = torch.tensor([[[0.0, 0, 10, 10]]])
    m = match_anchors(anchors, gt, torch.ones(1, 1, dtype=torch.bool), allow_low_quality=False)
    torch.testing.assert_close(m.iou[0, :5], torch.tensor([0.5, 0.4, 0.4999, 0.3999, 1.0]))
    # 0.5 -> foreground, 0.4 -> ignored (0.4 <= IoU < 0.5), just below 0.4 -> background
    assert m.index[0].tolist() == [0, IGNORE, IGNORE, BACKGROUND, 0, BACKGROUND]


def test_low_quality_match_and_equal_torchvision_matcher():
    g = torch.Generator().manual_seed(0)
    anchors = make_anchors(AnchorConfig(), (256, 256), [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)])
    anchors = torch.cat(anchors)
    xy = torch.rand(3, 6, 2, generator=g) * 200
    wh = 8 + torch.rand(3, 6, 2, generator=g) * 120
    gt = torch.cat([xy, xy + wh], dim=-1)
    counts = [6, 2, 0]
    boxes, labels, valid = pad_targets([gt[i, :c] for i, c in enumerate(counts)], [torch.ones(c) for c in counts])
    ours = match_anchors(anchors, boxes, valid)
    matcher = Matcher(0.5, 0.4, allow_low_quality_matches=True)
    for i, c in enumerate(counts):
        ref = matcher(box_iou(gt[i, :c], anchors)) if c else torch.full((len(anchors),), -1)
        assert torch.equal(ours.index[i], ref), f"image {i}"


def test_tiny_box_still_gets_an_anchor_but_box_with_no_overlap_claims_nothing():
    anchors = torch.tensor([[0.0, 0, 32, 32], [32, 0, 64, 32]])
    gt = torch.tensor([[[2.0, 2, 6, 6], [100, 100, 110, 110]]])  # IoU 16/1024 with anchor 0; the other overlaps nothing
    m = match_anchors(anchors, gt, torch.ones(1, 2, dtype=torch.bool))
    assert m.index[0].tolist() == [0, BACKGROUND]  # torchvision's Matcher would mark anchor 1 foreground here


def test_no_boxes_means_all_background():
    anchors = torch.rand(10, 2).repeat(1, 2) + torch.tensor([0, 0, 5.0, 5])
    m = match_anchors(anchors, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool))
    assert (m.index == BACKGROUND).all()
    with pytest.raises(ValueError, match="bg_iou"):
        match_anchors(anchors, torch.zeros(1, 0, 4), torch.zeros(1, 0, dtype=torch.bool), fg_iou=0.3, bg_iou=0.4)
