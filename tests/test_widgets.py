"""The classroom widgets, driven without a browser: set a control as a student would, read the derived state."""

import math

import pytest
import torch

from retinanet_lab.data import ShapesDataset
from retinanet_lab.presets import preset
from retinanet_lab.widgets import (
    AnchorExplorer,
    ArchitectureView,
    DetectionExplorer,
    FocalLossExplorer,
    HardExampleExplorer,
    LogitsToDetections,
    TrainingMonitor,
)
from retinanet_lab.widgets.anchors import assign_anchors
from retinanet_lab.widgets.focal import PAPER_GAMMAS, focal_values
from retinanet_lab.widgets.hard_examples import loss_share_image


def no_errors(w) -> bool:
    return len(w.errors.outputs) == 0


@pytest.fixture(scope="module")
def classroom():
    from retinanet_lab.classroom import load_classroom_model

    return load_classroom_model()


@pytest.fixture(scope="module")
def images():
    data = ShapesDataset(3, seed=123_456, **preset("classroom")["data"])
    return {f"#{i}": data[i][0] for i in range(3)}


def test_focal_explorer_numbers_follow_the_sliders():
    w = FocalLossExplorer()
    assert no_errors(w) and w.png.startswith(b"\x89PNG")
    assert w.values["down_weighting"] == pytest.approx(100, rel=1e-3)  # the paper's 100x at p_t = 0.9, γ = 2
    assert set(PAPER_GAMMAS) <= set(w.curves["curves"])
    before = w.png
    w.gamma.value = 0.0
    assert w.values["down_weighting"] == pytest.approx(1.0) and w.png != before  # γ = 0 is cross entropy, redrawn
    w.gamma.value, w.pt.value = 2.0, 0.968
    assert w.values["down_weighting"] == pytest.approx(1 / 0.032**2) == pytest.approx(1000, rel=0.03)  # "p_t ≈ 0.968: 1000x"
    w.use_alpha.value = True
    assert w.values["FL"] == pytest.approx(0.25 * (1 - 0.968) ** 2 * -math.log(0.968), rel=1e-4)
    w.positive.value = False  # a negative example weighs 1 - α
    assert w.values["FL"] == pytest.approx(0.75 * (1 - 0.968) ** 2 * -math.log(0.968), rel=1e-4)
    assert w.alpha_weight == pytest.approx(0.75)  # and the plot's scale follows it
    for q in ("modulating factor", "gradient"):
        w.quantity.value = q
        assert all(torch.isfinite(torch.as_tensor(v)).all() for v in w.curves["curves"].values())
    w.log_scale.value = True
    w.compare.value = False
    assert set(w.curves["curves"]) == {0.0, 2.0} and no_errors(w)


def test_focal_values_match_hand_computation():
    v = focal_values(0.5, gamma=2.0)
    assert v["CE"] == pytest.approx(math.log(2)) and v["FL"] == pytest.approx(0.25 * math.log(2))
    with pytest.raises(ValueError, match="p_t"):
        focal_values(1.0, 2.0)


def test_widget_output_has_live_view_and_static_picture():
    bundle = FocalLossExplorer()._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data and data["image/png"]


def test_assign_anchors_hand_case():
    from retinanet_lab.anchors import AnchorConfig

    cfg = AnchorConfig(sizes=(32, 64, 128, 256, 512), scales=(1.0,), aspect_ratios=(1.0,))
    # a 32 x 32 box at the corner: a square P3 anchor (32 px) overlaps it well
    a = assign_anchors((256, 256), torch.tensor([[0.0, 0.0, 32.0, 32.0]]), cfg)
    total = sum(len(x) for x in a["anchors"])
    assert a["foreground"] + a["ignored"] + a["background"] == total
    assert a["positives_per_object"].tolist() == [a["foreground"]] and a["foreground"] >= 1
    assert a["coverage"]["P3"] == 1.0 and a["covered"] == 1.0
    strict = assign_anchors((256, 256), torch.tensor([[0.0, 0.0, 32.0, 32.0]]), cfg, fg_iou=0.9, bg_iou=0.1)
    assert strict["foreground"] <= a["foreground"] and strict["background"] < a["background"]


def test_anchor_explorer_moving_a_box_changes_the_assignment():
    w = AnchorExplorer()
    assert no_errors(w)
    before = w.assignment["positives_per_object"].clone()
    w.bw.value, w.bh.value = 200, 30  # a long thin box: fewer anchors fit it at IoU 0.5
    assert not torch.equal(w.assignment["positives_per_object"], before)
    assert w.assignment["positives_per_object"][w.box.value] >= 1  # the low-quality rule keeps one
    w.ratios.value = "1:3, 1:2, 1:1, 2:1, 3:1"
    assert len(w.location_anchors) == 3 * 5 and no_errors(w)
    w.fg_iou.value, w.bg_iou.value = 0.3, 0.8  # background above foreground: clamped, not an error
    assert no_errors(w) and w.assignment["ignored"] == 0


def test_hard_examples_shares_and_cdf(classroom):
    w = HardExampleExplorer(classroom)
    s = w.shares
    assert s["CE"]["easy_negatives"] > s["FL"]["easy_negatives"]  # the focal loss turns the easy negatives down
    assert sum(v for k, v in s["FL"].items() if not k.startswith("num")) == pytest.approx(1.0)
    _, y = w.cdf["negatives"]
    assert y[0] == 0 and y[-1] == pytest.approx(1.0) and bool((y[1:] >= y[:-1]).all())
    assert float(w.loss_map.sum()) == pytest.approx(1.0, rel=0.03)
    for method in ("CE", "α-balanced CE", "OHEM 1:3"):
        w.method.value = method
        assert no_errors(w)
    w.gamma.value = 0.0
    assert w.shares["FL"]["easy_negatives"] == pytest.approx(w.shares["CE"]["easy_negatives"])


def test_ohem_keeps_three_negatives_per_positive(classroom):
    from retinanet_lab.hard_examples import anchor_losses, anchor_samples

    data = ShapesDataset(4, seed=42, **preset("classroom")["data"])
    images, targets = zip(*(data[i] for i in range(4)))
    s = anchor_samples(classroom, list(images), list(targets))
    kept = anchor_losses(s, "OHEM 1:3") > 0
    negatives = (kept & ~s["foreground"]).sum(1)
    assert bool((negatives <= 3 * s["foreground"].sum(1).clamp(min=1)).all())
    assert bool((anchor_losses(s, "CE") > 0).sum() > kept.sum())


def test_loss_share_image_keeps_the_total():
    shares = [torch.rand(1, n, n) for n in (20, 10, 5, 3, 2)]
    total = sum(float(s.sum()) for s in shares)
    assert float(loss_share_image(shares, 0, (160, 160)).sum()) == pytest.approx(total, rel=0.03)


def test_detection_explorer(classroom, images):
    w = DetectionExplorer(classroom, images=images)
    n = len(w.detections["scores"])
    with torch.no_grad():
        classroom.score_thresh = w.score_thresh.value
        ref = classroom([w.image])[0]
        classroom.score_thresh = 0.05
    assert torch.allclose(w.detections["boxes"], ref["boxes"], atol=1e-4) and torch.equal(w.detections["labels"], ref["labels"])
    w.score_thresh.value = 0.9
    assert len(w.detections["scores"]) <= n and bool((w.detections["scores"] > 0.9).all())
    maps = w.level_heatmaps()
    assert [m.shape for m in maps] == [tuple(s) for s in w.outputs["feature_sizes"]]
    w.add_image("blank", torch.zeros(3, 100, 140))
    assert w.choice.value == "blank" and no_errors(w)
    import datetime

    w.upload.set_trait("value", ({"name": "broken.png", "type": "image/png", "size": 3, "content": memoryview(b"abc"),
                                  "last_modified": datetime.datetime(2026, 1, 1)},))
    assert "could not read" in str(w.errors.outputs)


def test_logits_to_detections_stages(classroom, images):
    w = LogitsToDetections(classroom, images=images)
    c = w.counts
    assert c["outputs"] >= c["above_thresh"] >= c["after_topk"] >= c["after_nms"] > 0
    w.topk.value = 5
    assert w.counts["after_topk"] <= 5 * 5
    for stage in w.stage.options:
        w.stage.value = stage
        assert no_errors(w)


def test_architecture_view_prior(classroom):
    from retinanet_lab.anatomy import initial_loss

    w = ArchitectureView()
    assert w.initial_losses[0.5] > 10 * w.initial_losses[0.01]
    for p in (0.01, 0.5):  # the one-pass shortcut equals a forward pass with the bias really set to b(π)
        assert w.initial_losses[p] == pytest.approx(initial_loss(w.model, w.images, w.targets, p)["classification"], rel=1e-4)
    assert w.parameters[-1]["parameters"] == sum(p.numel() for p in w.model.parameters())
    w.prior.value = 0.2
    assert w.current_loss == pytest.approx(initial_loss(w.model, w.images, w.targets, 0.2)["classification"], rel=1e-4)
    assert no_errors(w)


def _small_monitor(**kw):
    cfg = preset("classroom")
    return TrainingMonitor(train_data=ShapesDataset(32, seed=0, **cfg["data"]), val_data=ShapesDataset(4, seed=1, **cfg["data"]),
                           epochs=1, redraw_every=1, detect_every=1, batch_size=8, **kw)


def test_training_monitor_runs_in_a_thread_and_draws():
    m = _small_monitor()
    m.start()
    m.join(timeout=120)
    assert not m.running and m.result is not None and not m.result["stopped"]
    assert len(m.records) == 4 and len(m.evals) == 1 and m.detections is not None and no_errors(m)
    assert m.start_button.disabled is False and "finished" in m.status.value


def test_training_monitor_stop_button():
    m = _small_monitor()
    m.epochs.value = 20
    m.start()
    for _ in range(600):
        if len(m.records) >= 2:
            break
        import time

        time.sleep(0.1)
    m.stop_button.click()
    m.join(timeout=120)
    assert m.result["stopped"] and 2 <= len(m.records) < 80 and "stopped" in m.status.value


def test_example_losses_equal_the_focal_loss(classroom):
    from retinanet_lab import focal_loss
    from retinanet_lab.hard_examples import anchor_samples, example_losses

    data = ShapesDataset(2, seed=77, **preset("classroom")["data"])
    images, targets = zip(*(data[i] for i in range(2)))
    s = anchor_samples(classroom, list(images), list(targets))
    for gamma, alpha in ((0.0, None), (2.0, 0.25), (0.5, 0.75)):
        neg = example_losses(s, "negatives", gamma, alpha)
        assert torch.allclose(neg, focal_loss(s["neg_logits"], torch.zeros_like(s["neg_logits"]), alpha, gamma), rtol=1e-5)
        pos = example_losses(s, "positives", gamma, alpha)
        assert torch.allclose(pos, focal_loss(s["pos_logits"], torch.ones_like(s["pos_logits"]), alpha, gamma), rtol=1e-5)
