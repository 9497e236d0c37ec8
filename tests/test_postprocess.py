"""Batched post-processing against torchvision's per-image loop, including the top-k and per-image caps."""

from types import SimpleNamespace

import pytest
import torch
from conftest import canonical
from torchvision.models.detection import RetinaNet as TVRetinaNet
from torchvision.models.detection._utils import BoxCoder

from retinanet_lab import AnchorConfig, make_anchors, postprocess_detections


def _inputs(seed, num_images=3, num_classes=4, image=(128, 160)):
    g = torch.Generator().manual_seed(seed)
    feature_sizes = [(-(-image[0] // 2**lvl), -(-image[1] // 2**lvl)) for lvl in range(3, 8)]
    anchors = make_anchors(AnchorConfig(), image, feature_sizes)
    logits = [torch.randn(num_images, a.shape[0], num_classes, generator=g) * 2 - 2 for a in anchors]
    deltas = [torch.randn(num_images, a.shape[0], 4, generator=g) * 0.3 for a in anchors]
    return logits, deltas, anchors


def _reference(logits, deltas, anchors, sizes, **settings):
    fake = SimpleNamespace(box_coder=BoxCoder((1.0, 1.0, 1.0, 1.0)), **settings)
    out = TVRetinaNet.postprocess_detections(fake, {"cls_logits": logits, "bbox_regression": deltas},
                                             [anchors] * len(sizes), sizes)
    for d in out:
        d["labels"] = d["labels"] + 1  # torchvision's labels index the outputs; ours are 1-based
    return out


@pytest.mark.parametrize("settings", [
    dict(score_thresh=0.05, topk_candidates=1000, nms_thresh=0.5, detections_per_img=100),
    dict(score_thresh=0.2, topk_candidates=20, nms_thresh=0.3, detections_per_img=15),  # caps bind
    dict(score_thresh=0.5, topk_candidates=1000, nms_thresh=0.7, detections_per_img=300),
])
def test_equals_torchvision_loop(settings):
    logits, deltas, anchors = _inputs(0)
    sizes = [(128, 160), (100, 160), (128, 90)]
    ours = postprocess_detections(logits, deltas, anchors, sizes, **settings)
    ref = _reference(logits, deltas, anchors, sizes, **settings)
    for i, (a, b) in enumerate(zip(ref, ours)):
        assert len(a["scores"]) == len(b["scores"]) > 0, f"image {i}"
        a, b = canonical(a), canonical(b)
        torch.testing.assert_close(b["scores"], a["scores"])
        torch.testing.assert_close(b["boxes"], a["boxes"], rtol=1e-5, atol=1e-4)
        assert torch.equal(b["labels"], a["labels"])
        assert (b["boxes"][:, 2] <= sizes[i][1]).all() and (b["boxes"][:, 3] <= sizes[i][0]).all()
    if settings["detections_per_img"] == 15:
        assert all(len(d["scores"]) == 15 for d in ours)


def test_nothing_above_threshold():
    logits, deltas, anchors = _inputs(1)
    logits = [lg - 100 for lg in logits]
    out = postprocess_detections(logits, deltas, anchors, [(128, 160)] * 3)
    assert [len(d["scores"]) for d in out] == [0, 0, 0]
    assert out[0]["boxes"].shape == (0, 4)


def test_nms_is_per_class():
    """Two identical boxes of different classes both survive; of the same class, only the better one."""
    anchors = [torch.tensor([[0.0, 0, 32, 32], [0, 0, 32, 32]])]
    deltas = [torch.zeros(1, 2, 4)]
    logits = [torch.tensor([[[5.0, -9.0], [-9.0, 4.0]]])]  # anchor 0 -> class 1, anchor 1 -> class 2
    out = postprocess_detections(logits, deltas, anchors, [(64, 64)])[0]
    assert out["labels"].tolist() == [1, 2]
    logits = [torch.tensor([[[5.0, -9.0], [4.0, -9.0]]])]  # both class 1
    out = postprocess_detections(logits, deltas, anchors, [(64, 64)])[0]
    assert out["labels"].tolist() == [1] and out["scores"].item() == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())


def test_inference_steps_equal_the_batched_postprocessing():
    from retinanet_lab.postprocess import inference_steps, postprocess_detections

    g = torch.Generator().manual_seed(3)
    sizes = [400, 100, 25]
    logits = [torch.randn(1, n, 4, generator=g) * 2 - 2 for n in sizes]
    deltas = [torch.randn(1, n, 4, generator=g) * 0.1 for n in sizes]
    anchors = []
    for n in sizes:
        xy = torch.rand(n, 2, generator=g) * 100
        anchors.append(torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 40], 1))
    settings = dict(score_thresh=0.1, topk_candidates=50, nms_thresh=0.5, detections_per_img=30)
    ref = postprocess_detections(logits, deltas, anchors, [(128, 128)], **settings)[0]
    s = inference_steps([lg[0] for lg in logits], [d[0] for d in deltas], anchors, (128, 128), **settings)
    d = s["detections"]
    assert torch.allclose(d["boxes"], ref["boxes"]) and torch.equal(d["labels"], ref["labels"])
    assert torch.allclose(d["scores"], ref["scores"])
    assert [lv["kept_topk"] for lv in s["levels"]] == [min(50, lv["above_thresh"]) for lv in s["levels"]]
    assert len(s["kept"]) + len(s["suppressed"]) == len(s["candidates"]["scores"])
    assert s["levels"][0]["above_thresh"] == int((torch.sigmoid(logits[0]) > 0.1).sum())


def test_the_record_holds_the_stages_outputs_that_make_the_detections():
    """postprocess_detections is select -> decode -> nms; its record holds those calls' outputs, and the detections
    are exactly the kept candidates (no second computation)."""
    from retinanet_lab.config import InferenceConfig
    from retinanet_lab.postprocess import decode, nms, select

    logits, deltas, anchors = _inputs(4)
    sizes = [(128, 160), (100, 160), (128, 90)]
    config = InferenceConfig(score_thresh=0.2, topk_candidates=30, detections_per_img=12)
    record = {}
    out = postprocess_detections(logits, deltas, anchors, sizes, config, record=record)
    assert set(record) >= {"select", "above_thresh", "decode", "nms", "candidates"}
    cand, kept = record["candidates"], record["nms"]
    image = cand["image"][kept]
    for i, d in enumerate(out):
        assert torch.equal(d["boxes"], cand["boxes"][kept][image == i]) and torch.equal(d["scores"], cand["scores"][kept][image == i])
    # the stages called one by one give the same
    sel = select(logits, config)
    boxes = decode(deltas, anchors, sel, torch.tensor(sizes, dtype=torch.float32))
    assert all(torch.equal(a, b) for a, b in zip(boxes, record["decode"]))
    labels = torch.cat([c.label for c in sel])
    scores, img = torch.sigmoid(torch.cat([c.logit for c in sel])), torch.cat([c.image for c in sel])
    assert torch.equal(nms(torch.cat(boxes), scores, img, labels, 3, 4, config), kept)
    # what select counted above the threshold, per level and image
    for lg, above in zip(logits, record["above_thresh"]):
        assert above.tolist() == (torch.sigmoid(lg) > 0.2).flatten(1).sum(1).tolist()
    assert all(len(c.logit) <= 30 * 3 for c in record["select"])


def test_keyword_settings_and_a_config_give_the_same_detections():
    from retinanet_lab.config import InferenceConfig

    logits, deltas, anchors = _inputs(5)
    sizes = [(128, 160)] * 3
    a = postprocess_detections(logits, deltas, anchors, sizes, nms_thresh=0.3, detections_per_img=7)
    b = postprocess_detections(logits, deltas, anchors, sizes, InferenceConfig(nms_thresh=0.3, detections_per_img=7))
    assert all(torch.equal(x["boxes"], y["boxes"]) and len(x["boxes"]) == 7 for x, y in zip(a, b))
