"""retinanet_lab.fpn: the feature pyramid P3-P7 (paper §4, "Feature Pyramid Network Backbone") against
torchvision.ops.FeaturePyramidNetwork with LastLevelP6P7, and its levels' sizes and strides on real backbone maps."""

import math
from collections import OrderedDict

import pytest
import torch
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from retinanet_lab.anchors import feature_sizes
from retinanet_lab.backbone import ResNetBody
from retinanet_lab.fpn import FeaturePyramid

IN_CHANNELS = (64, 128, 256)  # the classroom backbone's C3, C4, C5


@pytest.fixture(scope="module")
def body():
    torch.manual_seed(0)
    return ResNetBody("resnet_tiny").eval()


@pytest.mark.parametrize("height, width, sizes", [
    (512, 512, [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]),
    # not a multiple of 128: every level rounds up, ceil(H / 2^l), as the anchors assume
    (300, 500, [(38, 63), (19, 32), (10, 16), (5, 8), (3, 4)]),
])
def test_levels_p3_to_p7_sizes_and_strides(body, height, width, sizes):
    fpn = FeaturePyramid(in_channels=body.out_channels, out_channels=32)
    with torch.no_grad():
        pyramid = fpn(*body(torch.zeros(1, 3, height, width)))
    assert len(pyramid) == 5
    assert [tuple(p.shape[-2:]) for p in pyramid] == sizes
    assert sizes == [(math.ceil(height / 2**lvl), math.ceil(width / 2**lvl)) for lvl in range(3, 8)]
    assert feature_sizes(image_size=(height, width), levels=(3, 4, 5, 6, 7)) == sizes  # the anchors' arithmetic
    assert all(p.shape[:2] == (1, 32) for p in pyramid)  # every level has the same channels
    if height == width == 512:
        assert [512 // p.shape[-1] for p in pyramid] == [8, 16, 32, 64, 128]  # stride 2^l on P_l


def _torchvision_fpn(ours: FeaturePyramid, in_channels, out_channels):
    """torchvision's FPN with our weights. Its LastLevelP6P7 takes P5 exactly when in_channels == out_channels."""
    p6_in = in_channels[-1] if ours.p6_from == "c5" else out_channels
    tv = FeaturePyramidNetwork(list(in_channels), out_channels, extra_blocks=LastLevelP6P7(p6_in, out_channels))
    assert tv.extra_blocks.use_P5 == (ours.p6_from == "p5")
    with torch.no_grad():
        for i in range(3):
            tv.inner_blocks[i][0].weight.copy_(ours.lateral[i].weight)
            tv.inner_blocks[i][0].bias.copy_(ours.lateral[i].bias)
            tv.layer_blocks[i][0].weight.copy_(ours.output[i].weight)
            tv.layer_blocks[i][0].bias.copy_(ours.output[i].bias)
        for name in ("p6", "p7"):
            getattr(tv.extra_blocks, name).weight.copy_(getattr(ours, name).weight)
            getattr(tv.extra_blocks, name).bias.copy_(getattr(ours, name).bias)
    return tv


@pytest.mark.parametrize("p6_from", ["c5", "p5"])
def test_equal_torchvision_fpn_with_last_level_p6p7(p6_from):
    """On maps of odd sizes (a 300 x 500 input), where the top-down upsampling must go to the lateral's size."""
    torch.manual_seed(0)
    ours = FeaturePyramid(in_channels=IN_CHANNELS, out_channels=32, p6_from=p6_from)
    for conv in [*ours.lateral, *ours.output, ours.p6, ours.p7]:  # non-zero biases, so that a dropped one shows
        torch.nn.init.normal_(conv.bias)
    tv = _torchvision_fpn(ours, IN_CHANNELS, 32)
    c3, c4, c5 = (torch.randn(2, c, h, w) for c, (h, w) in zip(IN_CHANNELS, [(38, 63), (19, 32), (10, 16)]))
    with torch.no_grad():
        got = ours(c3, c4, c5)
        ref = tv(OrderedDict([("0", c3), ("1", c4), ("2", c5)]))
    assert list(ref) == ["0", "1", "2", "p6", "p7"]
    for level, (g, r) in enumerate(zip(got, ref.values()), start=3):
        torch.testing.assert_close(g, r, msg=lambda m, level=level: f"P{level}: {m}")


@pytest.mark.parametrize("p6_from", ["c5", "p5"])
def test_p6_from_c5_or_p5_p7_from_relu_p6_and_a_top_down_pathway(p6_from):
    ours = FeaturePyramid(in_channels=IN_CHANNELS, out_channels=32, p6_from=p6_from)
    c3, c4, c5 = (torch.randn(1, c, s, s) for c, s in zip(IN_CHANNELS, (16, 8, 4)))
    with torch.no_grad():
        p3, p4, p5, p6, p7 = ours(c3, c4, c5)
        torch.testing.assert_close(p6, ours.p6(c5 if p6_from == "c5" else p5))
        torch.testing.assert_close(p7, ours.p7(torch.relu(p6)))
        moved = ours(c3 + 1.0, c4, c5)  # C3 reaches P3 only: information flows top-down
    assert not torch.allclose(moved[0], p3)
    assert all(torch.equal(m, p) for m, p in zip(moved[1:], (p4, p5, p6, p7)))


def test_initialisation_as_torchvision():
    """kaiming_uniform(a=1): weights in ±sqrt(3 / fan_in), filling the range; biases zero."""
    torch.manual_seed(0)
    ours = FeaturePyramid(in_channels=IN_CHANNELS, out_channels=32)
    for conv in [*ours.lateral, *ours.output, ours.p6, ours.p7]:
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        bound = math.sqrt(3 / fan_in)
        assert conv.weight.abs().max().item() <= bound and conv.weight.abs().max().item() > 0.95 * bound
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
