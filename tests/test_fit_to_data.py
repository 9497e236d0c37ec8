"""Fitting a detector to a small dataset: its input size and anchors (retinanet_lab/fit_to_data.py)."""

import pytest
import torch

from retinanet_lab.anchors import AnchorConfig
from retinanet_lab.fit_to_data import anchors_for, input_size_for, set_anchors, set_input_size


class Squares(torch.utils.data.Dataset):
    """Images of h x w with a few squares of side `side` px: objects whose size we know."""

    def __init__(self, n=6, h=300, w=400, side=24):
        self.n, self.h, self.w, self.side = n, h, w, side
        self.class_names = ["square"]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        xy = torch.rand(3, 2, generator=g) * torch.tensor([self.w - self.side, self.h - self.side])
        boxes = torch.cat([xy, xy + self.side], 1)
        return torch.rand(3, self.h, self.w, generator=g), {"boxes": boxes, "labels": torch.ones(3, dtype=torch.int64)}


def test_input_size_is_the_typical_short_side_in_multiples_of_32():
    assert input_size_for(Squares(h=300, w=400)) == 288  # 300 -> 9.4 x 32 -> 288
    assert input_size_for(Squares(h=1200, w=1600)) == 640  # capped for a CPU
    assert input_size_for(Squares(h=60, w=80)) == 128


def test_anchors_that_miss_the_objects_are_scaled_and_anchors_that_fit_are_kept():
    far = AnchorConfig(sizes=(128, 256, 512, 1024, 2048))  # every anchor far larger than 24 px squares
    chosen, why = anchors_for(Squares(side=24), far, size=288)
    assert "using them" in why and chosen.sizes[0] < 64 and chosen.scales == far.scales
    assert chosen.aspect_ratios == far.aspect_ratios  # same number per location: the subnets keep their shape
    kept, why = anchors_for(Squares(side=24), AnchorConfig(sizes=(16, 32, 64, 128, 256)), size=288)
    assert "kept" in why and kept.sizes == (16, 32, 64, 128, 256)


def test_set_input_size_and_anchors_change_the_model_and_its_saved_config():
    from retinanet_lab import RetinaNet

    model = RetinaNet(1, backbone="resnet_tiny", fpn_channels=16, head_channels=16, head_convs=1, min_size=160, max_size=160)
    set_input_size(model, 288)
    assert (model.min_size, model.max_size) == (288, 480) and model.config["min_size"] == 288
    new = AnchorConfig(sizes=(8, 16, 32, 64, 128))
    set_anchors(model, new)
    assert model.config["anchors"]["sizes"] == (8, 16, 32, 64, 128)
    again = RetinaNet(**model.config)
    assert again.anchor_config == new
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 300, 400)])[0]
    assert set(out) == {"boxes", "scores", "labels"}
    with pytest.raises(ValueError, match="anchors per location"):
        set_anchors(model, AnchorConfig(aspect_ratios=(0.5, 1.0)))
