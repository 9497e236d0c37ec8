"""retinanet_lab.transform: from images of any size to one normalised, resized, padded batch and back, against
torchvision's GeneralizedRCNNTransform and hand-computed sizes: the short side to min_size unless the long side
would pass max_size, the aspect ratio kept, padding to a multiple of 32, boxes scaled and restored."""

import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from retinanet_lab.config import InputConfig
from retinanet_lab.transform import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    boxes_to_original,
    check_images,
    padded_size,
    preprocess,
    resize_scale,
    resized_size,
)


def prep(images, boxes=None, min_size=320, max_size=480, size_divisible=32, training=False):
    """`preprocess` as the model calls it: the settings in one InputConfig (ImageNet mean and std)."""
    config = InputConfig(min_size=min_size, max_size=max_size, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
                         size_divisible=size_divisible)
    return preprocess(images=images, boxes=boxes, config=config, training=training)


def _images_and_boxes(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, h, w, generator=g) for h, w in shapes]
    boxes = []
    for h, w in shapes:
        xy = torch.rand(4, 2, generator=g) * torch.tensor([w / 2, h / 2])
        wh = 2 + torch.rand(4, 2, generator=g) * torch.tensor([w / 2 - 2, h / 2 - 2])
        boxes.append(torch.cat([xy, xy + wh], dim=1))
    return images, boxes


@pytest.mark.parametrize("h, w, min_size, max_size, scale", [
    (480, 640, 800, 1333, 800 / 480),  # the short side decides
    (300, 1000, 800, 1333, 1333 / 1000),  # 800 / 300 would make the long side 2667: capped by max_size
    (1000, 300, 800, 1333, 1333 / 1000),  # the same, standing up
    (160, 160, 160, 160, 1.0),  # already the size
    (600, 1200, 320, 480, 480 / 1200),  # shrinking, capped: 320 / 600 would make the long side 640
])
def test_resize_scale_hand_values(h, w, min_size, max_size, scale):
    assert resize_scale(height=h, width=w, min_size=min_size, max_size=max_size) == pytest.approx(scale, rel=1e-12)


def test_sizes_keep_the_aspect_ratio_and_the_batch_is_padded_to_a_multiple_of_32():
    images, _ = _images_and_boxes([(300, 400), (100, 400), (250, 250)])
    batch, sizes, _ = prep(images, min_size=320, max_size=480)
    # by hand: 300x400 -> x 320/300 -> 320x426; 100x400 -> x min(3.2, 1.2) -> 120x480; 250x250 -> x 1.28 -> 320x320
    assert sizes == [(320, 426), (120, 480), (320, 320)]
    assert batch.shape == (3, 3, 320, 480)  # 320 and 480 are already multiples of 32
    for (h, w), (h0, w0) in zip(sizes, [(300, 400), (100, 400), (250, 250)]):
        assert abs(h / w - h0 / w0) < 1 / min(h, w)  # the aspect ratio, to a pixel's rounding
    batch, sizes, _ = prep(images[:1], min_size=300, max_size=1000)
    assert sizes == [(300, 400)] and batch.shape[-2:] == (320, 416)  # padded up to the next multiple of 32
    batch, _, _ = prep(images[:1], min_size=300, max_size=1000, size_divisible=1)
    assert batch.shape[-2:] == (300, 400)


def test_padding_is_zero_at_the_bottom_and_right_and_the_image_is_unchanged_by_it():
    images, _ = _images_and_boxes([(200, 300), (260, 180)])
    batch, sizes, _ = prep(images, min_size=200, max_size=400)
    for i, (h, w) in enumerate(sizes):
        alone, _, _ = prep(images[i:i + 1], min_size=200, max_size=400, size_divisible=1)
        torch.testing.assert_close(batch[i, :, :h, :w], alone[0])
        assert (batch[i, :, h:, :] == 0).all() and (batch[i, :, :, w:] == 0).all()


@pytest.mark.parametrize("shapes, min_size, max_size", [
    ([(300, 400), (100, 400), (250, 250)], 320, 480),
    ([(333, 517), (517, 333), (97, 601)], 224, 448),  # sizes whose products land near an integer
    ([(480, 640)], 800, 1333),
])
def test_size_arithmetic_without_images_is_what_preprocess_does(shapes, min_size, max_size):
    """resized_size and padded_size (anchor coverage uses them on whole datasets) against a real resize."""
    images, _ = _images_and_boxes(shapes)
    batch, sizes, _ = prep(images, min_size=min_size, max_size=max_size)
    assert sizes == [resized_size(height=h, width=w, min_size=min_size, max_size=max_size) for h, w in shapes]
    assert tuple(batch.shape[-2:]) == padded_size(sizes=sizes, size_divisible=32)


def test_normalisation_with_the_imagenet_mean_and_std():
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    grey = mean.expand(3, 64, 64).clone()
    batch, _, _ = prep([grey, grey + std], min_size=64, max_size=64)
    torch.testing.assert_close(batch[0], torch.zeros(3, 64, 64))  # the mean colour is 0: the same as the padding
    torch.testing.assert_close(batch[1], torch.ones(3, 64, 64))


@pytest.mark.parametrize("shapes, min_size, max_size, size_divisible", [
    ([(300, 400), (100, 400), (350, 260)], 320, 480, 32),  # different sizes (one capped): one resize each
    ([(240, 320), (240, 320)], 320, 480, 32),  # one size: one batched resize
    ([(123, 77)], 200, 1333, 64),
])
def test_equal_torchvision_generalized_rcnn_transform(shapes, min_size, max_size, size_divisible):
    images, boxes = _images_and_boxes(shapes)
    tv = GeneralizedRCNNTransform(min_size, max_size, list(IMAGENET_MEAN), list(IMAGENET_STD), size_divisible=size_divisible)
    tv.eval()
    targets = [{"boxes": b.clone(), "labels": torch.ones(len(b), dtype=torch.int64)} for b in boxes]
    image_list, tv_targets = tv([img.clone() for img in images], targets)
    batch, sizes, scaled = prep(images, boxes, min_size=min_size, max_size=max_size, size_divisible=size_divisible)
    assert sizes == [tuple(s) for s in image_list.image_sizes]
    assert batch.shape == image_list.tensors.shape
    torch.testing.assert_close(batch, image_list.tensors)
    for ours, ref in zip(scaled, tv_targets):
        torch.testing.assert_close(ours, ref["boxes"])


def test_boxes_scale_with_the_image_and_come_back():
    images, boxes = _images_and_boxes([(300, 400), (100, 400)])
    _, sizes, scaled = prep(images, boxes, min_size=320, max_size=480)
    # x by w'/w and y by h'/h, each its own ratio (426 / 400 is not 320 / 300)
    ratios = torch.tensor([[426 / 400, 320 / 300] * 2, [480 / 400, 120 / 100] * 2])
    for b, s, r in zip(boxes, scaled, ratios):
        torch.testing.assert_close(s, b * r)
    tv = GeneralizedRCNNTransform(320, 480, list(IMAGENET_MEAN), list(IMAGENET_STD)).eval()
    originals = [tuple(img.shape[-2:]) for img in images]
    ref = tv.postprocess([{"boxes": s.clone()} for s in scaled], sizes, originals)
    for s, size, original, b, r in zip(scaled, sizes, originals, boxes, ref):
        back = boxes_to_original(boxes=s, resized=size, original=original)
        torch.testing.assert_close(back, r["boxes"])
        torch.testing.assert_close(back, b, rtol=1e-5, atol=1e-4)


def test_multi_scale_min_size_random_in_training_last_in_eval():
    images, _ = _images_and_boxes([(40, 40)])
    _, sizes, _ = prep(images, min_size=(32, 48, 64), max_size=1000)
    assert sizes == [(64, 64)]  # eval: the last, as torchvision
    # training: one at random per batch (60 draws miss one of three with probability 3 (2/3)^60, about 1e-10)
    seen = {prep(images, min_size=(32, 48, 64), max_size=1000, training=True)[1][0] for _ in range(60)}
    assert seen == {(32, 32), (48, 48), (64, 64)}


def test_settings_by_keyword_replace_the_configs_fields():
    images, boxes = _images_and_boxes([(300, 400), (100, 400)])
    base = InputConfig(min_size=800, max_size=1333, size_divisible=64)
    by_keyword = preprocess(images, boxes, base, min_size=320, max_size=480, size_divisible=32)
    by_config = prep(images, boxes, min_size=320, max_size=480, size_divisible=32)
    assert by_keyword[1] == by_config[1] == [(320, 426), (120, 480)]
    torch.testing.assert_close(by_keyword[0], by_config[0])
    by_default = preprocess(images, None)  # InputConfig(): 800 / 1333, the paper's sizes
    assert by_default[1] == [(800, 1066), (333, 1333)] and by_default[2] is None


def test_check_images_names_the_image_at_fault():
    good = torch.rand(3, 8, 8)
    check_images((good, good))  # a tuple is a list of images too
    with pytest.raises(TypeError, match=r"images\[1\] must be a tensor"):
        check_images([good, good.numpy()])
    with pytest.raises(ValueError, match=r"images\[0\] is empty"):
        check_images([torch.rand(3, 0, 8)])
    with pytest.raises(ValueError, match=r"images\[1\] has values up to 2\.0"):
        check_images([good, torch.full((3, 4, 4), 2.0)])
