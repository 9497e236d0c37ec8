"""Our RetinaNet, loaded with the weights of torchvision's (random init, nothing downloaded), computes
the same anchors, head outputs, detections and losses."""

import pytest
import torch
from conftest import canonical
from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2

from retinanet_lab import RetinaNet

SIZES = dict(min_size=320, max_size=480)


def _torchvision(version: str, detections_per_img=300):
    torch.manual_seed(0)
    build = retinanet_resnet50_fpn if version == "v1" else retinanet_resnet50_fpn_v2
    tv = build(weights=None, weights_backbone=None, detections_per_img=detections_per_img, **SIZES)
    head = tv.head.classification_head
    with torch.no_grad():  # an untrained head scores everything ~0.01: spread the scores out to get detections
        head.cls_logits.weight.normal_(0, 0.05)
        bias = head.cls_logits.bias.view(-1, head.num_classes)
        bias.normal_(-2.5, 1.0)
        bias[:, 0] = -30.0  # output 0, torchvision's never-trained background class (dropped in ours)
        head.cls_logits.weight.view(-1, head.num_classes, *head.cls_logits.weight.shape[1:])[:, 0] = 0
    return tv.eval()


def _images():
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, 300, 400, generator=g), torch.rand(3, 350, 260, generator=g), torch.rand(3, 200, 200, generator=g)]


def _targets():
    return [
        {"boxes": torch.tensor([[10.0, 20, 100, 150], [200, 100, 390, 290], [50, 50, 70, 60]]), "labels": torch.tensor([3, 7, 1])},
        {"boxes": torch.tensor([[30.0, 40, 200, 330]]), "labels": torch.tensor([90])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]


@pytest.fixture(scope="module", params=["v1", "v2"])
def pair(request):
    tv = _torchvision(request.param)
    return request.param, tv, RetinaNet.from_torchvision(tv).eval()


def test_settings_carry_over(pair):
    version, tv, ours = pair
    assert ours.num_classes == 90
    assert ours.fpn.p6_from == ("p5" if version == "v1" else "c5")
    assert ours.box_loss == ("l1" if version == "v1" else "giou")
    assert (ours.class_subnet.tower[0][1].__class__.__name__ == "GroupNorm") == (version == "v2")
    assert ours.detections_per_img == 300 and ours.min_size == 320 and ours.max_size == 480


def test_anchors_and_head_outputs(pair):
    _, tv, ours = pair
    images = _images()
    with torch.no_grad():
        image_list, _ = tv.transform(images)
        features = list(tv.backbone(image_list.tensors).values())
        ref_head = tv.head(features)
        ref_anchors = tv.anchor_generator(image_list, features)[0]
        r = ours.inspect(images)
    torch.testing.assert_close(r["batch"], image_list.tensors)
    assert torch.equal(torch.cat([a.reshape(-1, 4) for a in r["anchors"]]), ref_anchors)
    for ours_f, ref_f in zip(r["features"], features):
        torch.testing.assert_close(ours_f, ref_f, rtol=1e-4, atol=1e-4)
    logits = torch.cat([c.flatten(1, 3) for c in r["cls_logits"]], dim=1)
    torch.testing.assert_close(logits, ref_head["cls_logits"][..., 1:], rtol=1e-4, atol=1e-4)
    deltas = torch.cat([d.flatten(1, 3) for d in r["box_deltas"]], dim=1)
    torch.testing.assert_close(deltas, ref_head["bbox_regression"], rtol=1e-4, atol=1e-4)


def test_detections(pair):
    _, tv, ours = pair
    images = _images()
    with torch.no_grad():
        ref, det = tv(images), ours(images)
    assert len(ref) == len(det) == 3
    for i, (a, b) in enumerate(zip(ref, det)):
        assert len(a["scores"]) > 50, "the test needs detections to compare"
        assert len(a["scores"]) == len(b["scores"]), f"image {i}"
        a, b = canonical(a), canonical(b)
        torch.testing.assert_close(b["scores"], a["scores"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b["boxes"], a["boxes"], rtol=1e-4, atol=1e-2)
        assert torch.equal(b["labels"], a["labels"]), f"image {i}"


def _train_mode(tv):
    tv.train()
    for m in tv.modules():  # torchvision builds plain BatchNorm without backbone weights: freeze it like ours
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    return tv


def test_loss_one_image(pair):
    version, tv, ours = pair
    images, targets = _images()[:1], _targets()[:1]
    ref = _train_mode(tv)(images, targets)
    got = ours.train()(images, targets)
    for key in ("classification", "bbox_regression"):
        torch.testing.assert_close(got[key], ref[key], rtol=1e-4, atol=1e-5)
    tv.eval(), ours.eval()


def test_loss_batch_with_torchvision_normalisation(pair):
    """torchvision divides each image by its own foreground count; `loss_normalization="image"` does too."""
    _, tv, ours = pair
    images, targets = _images(), _targets()
    ref = _train_mode(tv)(images, targets)
    ours.loss_normalization = "image"
    got = ours.train()(images, targets)
    ours.loss_normalization = "batch"
    batch = ours(images, targets)
    for key in ("classification", "bbox_regression"):
        torch.testing.assert_close(got[key], ref[key], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(batch["classification"], got["classification"])  # the paper's normalisation differs
    tv.eval(), ours.eval()


def test_from_state_dict_reads_architecture():
    tv = _torchvision("v2")
    ours = RetinaNet.from_torchvision(tv.state_dict(), detections_per_img=300, box_loss="giou", **SIZES).eval()
    assert ours.fpn.p6_from == "c5" and ours.num_classes == 90
    images = _images()[:1]
    with torch.no_grad():
        a, b = canonical(tv(images)[0]), canonical(ours(images)[0])
    torch.testing.assert_close(b["scores"], a["scores"], rtol=1e-4, atol=1e-5)


def test_keep_background_channel():
    tv = _torchvision("v1")
    ours = RetinaNet.from_torchvision(tv, drop_background=False)
    assert ours.num_classes == 91


def test_a_recorded_pass_gives_torchvisions_detections_too(pair):
    """Recording the stages (what inspect and the lessons show) changes nothing in what the model computes."""
    _, tv, ours = pair
    images = _images()[:2]
    record = {}
    with torch.no_grad():
        ref, det = tv(images), ours(images, record=record)
    for a, b in zip(ref, det):
        a, b = canonical(a), canonical(b)
        torch.testing.assert_close(b["scores"], a["scores"], rtol=1e-4, atol=1e-5)
        assert torch.equal(b["labels"], a["labels"])
    assert len(record["nms"]) == sum(len(d["scores"]) for d in det)
