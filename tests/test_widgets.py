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
    assert "broken.png is not an image this lab can read (PNG or JPEG)" in w.upload_status.value
    assert "BytesIO" not in w.upload_status.value and no_errors(w) and w.choice.value == "blank"


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


def _upload(w, name: str, content: bytes) -> None:
    import datetime

    w.upload.set_trait("value", ({"name": name, "type": "image/png", "size": len(content), "content": memoryview(content),
                                  "last_modified": datetime.datetime(2026, 1, 1)},))


def test_upload_error_says_what_is_wrong_and_a_good_upload_clears_it(classroom, images):
    import io

    from PIL import Image

    w = DetectionExplorer(classroom, images=images)
    _upload(w, "notes.txt", b"these are not pixels")
    assert w.upload_status.value.count("notes.txt is not an image this lab can read (PNG or JPEG)") == 1
    buf = io.BytesIO()
    Image.new("RGB", (90, 60), (200, 30, 30)).save(buf, format="PNG")
    _upload(w, "red.png", buf.getvalue())
    assert w.choice.value == "red.png" and w.image.shape == (3, 60, 90)
    assert "not an image" not in w.upload_status.value and no_errors(w)


# --- the training monitor: interrupts, failing widget updates, the saved picture ---------------------------------


def _wait_for_steps(m, n: int, limit_s: float = 120) -> None:
    import time

    t0 = time.monotonic()
    while len(m.records) < n and m.running and time.monotonic() - t0 < limit_s:
        time.sleep(0.05)
    assert len(m.records) >= n, "the run did not get going"


def _assert_idle_after_interrupt(m) -> None:
    assert not m.running and m.interrupted and m.result is not None and m.result["stopped"]
    step = m.records[-1]["step"]
    assert m.status.value.startswith(f"interrupted at step {step}: press Start to train again"), m.status.value
    assert m.start_button.disabled is False and m.stop_button.disabled is True and no_errors(m)


def test_training_monitor_interrupt_during_join_stops_the_run_and_start_works_again(capsys):
    m = _small_monitor()
    m.epochs.value = 20  # 80 steps: far more than the test waits for
    m.start()
    _wait_for_steps(m, 2)
    done, real_wait = m._done, m._done.wait
    calls = []

    def interrupted_wait(timeout=None):  # what Kernel > Interrupt does to the cell waiting in join()
        calls.append(timeout)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real_wait(timeout)

    done.wait = interrupted_wait
    m.join()  # no KeyboardInterrupt escapes: the cell ends cleanly
    m._thread.join(timeout=60)
    assert done.is_set() and not m._thread.is_alive() and len(m.records) < 80
    _assert_idle_after_interrupt(m)
    assert "interrupted at step" in capsys.readouterr().out  # said in the interrupted cell too
    m.epochs.value = 1
    m.start_button.click()  # Start trains again, from a fresh model
    assert m.running or m.result is None
    m.join(timeout=300)
    assert not m.running and not m.interrupted and not m.result["stopped"] and len(m.records) == 4
    assert "finished after 4 steps" in m.status.value and m.start_button.disabled is False


def test_training_monitor_real_keyboard_interrupt_in_join():
    import _thread
    import signal
    import threading

    m = _small_monitor()
    m.epochs.value = 20
    m.start()
    _wait_for_steps(m, 1)
    # Python turns SIGINT into KeyboardInterrupt, as a Jupyter kernel does, unless its parent ignored SIGINT (a job
    # started with `&` by a shell without job control): then interrupt_main does nothing. Set it as a kernel has it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.3, _thread.interrupt_main).start()  # a SIGINT-like KeyboardInterrupt in the main thread
        m.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    _assert_idle_after_interrupt(m)
    m._thread.join(timeout=60)
    assert not m._thread.is_alive()  # the thread itself has ended, not only been marked so


def test_training_monitor_survives_failing_widget_updates(capsys):
    import threading

    m = _small_monitor()

    def broken_channel(change):  # a widget update that fails in the training thread (ZMQError in a classroom)
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("Socket operation on non-socket")

    for widget, name in ((m.status, "value"), (m.picture, "value"), (m.start_button, "disabled"), (m.stop_button, "disabled")):
        widget.observe(broken_channel, names=name)
    m.start()
    m.join(timeout=300)
    assert not m.running and m.result is not None and not m.result["stopped"] and len(m.records) == 4  # training went on
    assert m.start_button.disabled is False and m.stop_button.disabled is True  # the buttons are not stuck
    assert "finished after 4 steps" in m.status.value and "widget update(s) failed" in m.status.value
    assert any("Socket operation on non-socket" in e for e in m.error_log)
    assert "Socket operation on non-socket" in str(m.errors.outputs)  # visible in the widget
    assert "failed in the training thread" in capsys.readouterr().err  # and in the cell that waited
    m.start()  # and it trains again
    m.join(timeout=300)
    assert len(m.records) == 4 and not m.running


def test_training_monitor_shows_the_best_detections_when_none_passes_the_threshold():
    m = _small_monitor()
    m.records = [{"step": 7, "classification": 1.0, "bbox_regression": 1.0}]
    m.detections = {"boxes": torch.tensor([[10.0, 10, 40, 40], [50, 50, 90, 90], [5, 5, 20, 20], [0, 0, 8, 8]]),
                    "scores": torch.tensor([0.05, 0.21, 0.12, 0.01]), "labels": torch.tensor([1, 2, 3, 4])}
    d, title = m.shown_detections()
    assert d["scores"].tolist() == pytest.approx([0.21, 0.12, 0.05]) and "none > 0.3" in title and "best 3" in title
    m.refresh()
    assert "none > 0.3" in m.fig.axes[2].get_title() and len(m.fig.axes[2].patches) == 3 and no_errors(m)
    m.detections["scores"][0] = 0.9
    d, title = m.shown_detections()
    assert d["scores"].tolist() == pytest.approx([0.9]) and title.startswith("detections > 0.3")


def test_snapshot_is_the_current_figure_at_its_display_size():
    from IPython.display import Image

    from retinanet_lab.widgets._view import PIXEL_DENSITY

    w = FocalLossExplorer()
    w.gamma.value = 0.5
    snap = w.snapshot()
    assert isinstance(snap, Image)
    data, metadata = snap._repr_mimebundle_()
    assert data["image/png"] and metadata["image/png"] == {"width": 900, "height": 360}  # shown at its display size
    assert _png_size(w.png) == _png_size(snap.data) == (900 * PIXEL_DENSITY, 360 * PIXEL_DENSITY)  # twice the pixels
    assert len(snap.data) < len(w.png) / 2 and _mean_difference(snap.data, w.png) < 1.0  # compact, the same picture


def _mean_difference(a: bytes, b: bytes) -> float:
    import io

    import numpy as np
    from PIL import Image

    def pixels(png):
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)

    return float(np.abs(pixels(a) - pixels(b)).mean())


def test_training_monitor_losses_use_the_papers_alpha_for_ce():
    from retinanet_lab.widgets.training import LOSSES

    (label, value), = [(k, v) for k, v in LOSSES.items() if k.startswith("α-balanced")]
    assert value == (0.0, 0.75) and "α = 0.75" in label
    assert LOSSES[next(k for k in LOSSES if k.startswith("focal"))] == (2.0, 0.25)


# --- pictures: sharp, readable, with colour bars ---------------------------------------------------------------------


def _png_size(png: bytes) -> tuple[int, int]:
    import struct

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def _small_texts(fig, smallest: float) -> list[str]:
    from matplotlib.text import Text

    return [f"{t.get_text()!r} at {t.get_fontsize():g} pt" for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and t.get_fontsize() < smallest]


def _all_widgets(classroom, images) -> list:
    w = LogitsToDetections(classroom, images=images)
    w.stage.value = w.stage.options[0]  # the stage with a heat map
    return [FocalLossExplorer(), AnchorExplorer(), ArchitectureView(), HardExampleExplorer(classroom),
            DetectionExplorer(classroom, images=images), w, _small_monitor()]


def test_figures_are_sharp_at_their_display_size_and_readable(classroom, images):
    from retinanet_lab.widgets._view import MIN_FONT_PT, PIXEL_DENSITY

    for w in _all_widgets(classroom, images):
        name = type(w).__name__
        width_px, height_px = (round(v * 100) for v in w.fig.get_size_inches())
        assert w.picture.layout.width == f"{width_px}px" and w.picture.layout.max_width == "100%", name  # never stretched
        assert _png_size(w.png) == (width_px * PIXEL_DENSITY, height_px * PIXEL_DENSITY), name  # 2 PNG pixels per CSS pixel
        assert width_px <= 1000, name  # fits a JupyterLab notebook at 1366 px without shrinking much
        assert not _small_texts(w.fig, MIN_FONT_PT), (name, _small_texts(w.fig, MIN_FONT_PT))
        data, metadata = w._repr_mimebundle_()
        assert metadata["image/png"] == {"width": width_px, "height": height_px}, name  # the saved picture too
        assert no_errors(w), name


def test_heat_maps_have_colour_bars(classroom, images):
    def colour_bars(fig):
        return [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]

    w = DetectionExplorer(classroom, images=images)
    assert len(colour_bars(w.fig)) == 1
    w.heatmaps.value = False
    assert not colour_bars(w.fig)
    assert len(colour_bars(HardExampleExplorer(classroom).fig)) == 1
    steps = LogitsToDetections(classroom, images=images)
    steps.stage.value = steps.stage.options[0]
    assert len(colour_bars(steps.fig)) == 1


def test_a_level_with_no_detection_is_not_drawn_as_one(classroom, images):
    w = LogitsToDetections(classroom, images=images)
    w.score_thresh.value = 0.6  # few survive: some levels keep nothing
    counts = w.nms_per_level
    assert 0 in counts and sum(counts) == w.counts["after_nms"] > 0
    bx = w.fig.axes[-1]
    (stars,) = [line for line in bx.get_lines() if line.get_gid() == "after NMS"]
    assert list(stars.get_xdata()) == [i for i, n in enumerate(counts) if n > 0]
    assert list(stars.get_ydata()) == [n for n in counts if n > 0]  # no placeholder marker for a zero
    assert [t.get_text() for t in bx.get_xticklabels()] == [f"P{3 + i}\n{n} kept" for i, n in enumerate(counts)]
    d = DetectionExplorer(classroom, images=images)
    d.score_thresh.value = 0.6
    titles = [ax.get_title() for ax in d.fig.axes[1:6]]
    assert all(("no det." in t) == (n == 0) for t, n in zip(titles, d.per_level)) and sum(d.per_level) == len(d.detections["scores"])


def test_anchor_explorer_gives_each_box_its_own_colour():
    w = AnchorExplorer()
    labels = w.labels_t.tolist()
    assert len(set(labels)) < len(labels)  # two boxes of one class: a colour per class would draw them alike
    boxes = [p for p in w.fig.axes[0].patches if (p.get_gid() or "").startswith("box ")]
    colours = [tuple(p.get_edgecolor()) for p in boxes]
    assert len(boxes) == len(labels) and len(set(colours)) == len(colours)
    bars = {b.get_label(): tuple(b.patches[0].get_facecolor()[:3]) for b in w.fig.axes[1].containers}
    assert len(set(bars.values())) == len(labels)


# --- controls: nothing cut off, nothing from the internet -----------------------------------------------------------


def _controls(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _controls(child)


def test_no_control_label_has_a_fixed_width_that_can_cut_it(classroom, images):
    import ipywidgets as W

    for w in _all_widgets(classroom, images):
        for c in _controls(w.ui):
            name = f"{type(w).__name__}: {type(c).__name__} {getattr(c, 'description', '')!r}"
            if isinstance(c, (W.Button, W.FileUpload)):
                assert c.icon == "" and c.layout.width == "auto", name  # no Font Awesome (offline), as wide as its text
            elif isinstance(c, W.ToggleButtons):
                assert c.style.button_width == "auto", name
            elif getattr(c, "description", "") and hasattr(c.style, "description_width") and not isinstance(c, W.Checkbox):
                assert c.style.description_width == "initial", name
            if isinstance(c, W.Box) and len(c.children) > 1 and not isinstance(c, W.VBox):
                assert c.layout.flex_flow == "row wrap", name  # a row wraps on a narrow page instead of cutting


# --- what the widgets say -------------------------------------------------------------------------------------------


def test_focal_explorer_well_classified_band_starts_at_half():
    from matplotlib.patches import Polygon, Rectangle

    w = FocalLossExplorer()
    ax = w.fig.axes[0]
    spans = [p for p in ax.patches if isinstance(p, (Rectangle, Polygon))]
    assert len(spans) == 1
    x0 = spans[0].get_x() if isinstance(spans[0], Rectangle) else spans[0].get_xy()[:, 0].min()
    assert x0 == pytest.approx(0.5)  # Figure 1: "well-classified examples (p_t > .5)"
    assert any("p_t > 0.5" in t.get_text() for t in ax.texts)


def test_hard_examples_alpha_balanced_ce_uses_the_papers_best_alpha(classroom):
    from retinanet_lab.hard_examples import anchor_losses, anchor_samples

    data = ShapesDataset(2, seed=42, **preset("classroom")["data"])
    images, targets = zip(*(data[i] for i in range(2)))
    s = anchor_samples(classroom, list(images), list(targets))
    y = s["onehot"]
    expected = ((0.75 * y + 0.25 * (1 - y)) * s["ce"]).sum(-1) * s["valid"]
    assert torch.allclose(anchor_losses(s, "α-balanced CE"), expected, rtol=1e-5)
    fl25 = anchor_losses(s, "FL", gamma=2.0, alpha=0.25)
    assert torch.allclose(anchor_losses(s, "FL", gamma=2.0), fl25)  # the focal loss keeps α = 0.25
    w = HardExampleExplorer(classroom)
    labels = dict((v, k) for k, v in w.method.options)
    assert labels["α-balanced CE"] == "α-balanced CE (α = 0.75)" and labels["FL"] == "FL (α = 0.25)"


def test_architecture_view_explains_the_first_loss_and_the_recipe():
    from retinanet_lab.widgets.architecture import negative_output_loss

    n = negative_output_loss(0.5)
    assert n["CE"] == pytest.approx(math.log(2)) and n["FL"] == pytest.approx(0.75 * 0.25 * math.log(2)) == pytest.approx(0.13, abs=0.005)
    w = ArchitectureView()
    w.prior.value = 0.5
    assert "0.13" in w.status.value and "0.693" in w.status.value
    assert "AdamW" in w.fig.axes[1].get_title() and "clipping" in w.fig.axes[1].get_title()


def test_detection_texts_cite_the_paper_right(classroom, images):
    steps = LogitsToDetections(classroom, images=images)
    assert "§4.1" in steps.status.value and "Detectron" in steps.status.value
    d = DetectionExplorer(classroom, images=images)
    assert "P7 gets no positive" in d.status.value and "P5-P6" in d.status.value and "P5-P7" not in d.status.value


def test_focal_explorer_cursor_redraw_equals_a_full_drawing():
    import io

    import numpy as np
    from PIL import Image

    w = FocalLossExplorer()
    w.gamma.value = 1.0  # a full drawing
    w.pt.value = 0.3  # the cursor alone: drawn on the stored picture
    fast = w.png
    w._drawn_key = None  # forget the stored picture: draw everything
    w.refresh()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(fast))), np.asarray(Image.open(io.BytesIO(w.png))))
    w.pt.value = 0.6
    assert w.png != fast and no_errors(w)


def test_encode_png_is_a_lossless_png():
    import io

    import numpy as np
    from PIL import Image

    from retinanet_lab.widgets._view import encode_png

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(37, 53, 4), dtype=np.uint8)
    rgba[10:20] = 255  # flat rows, as in a plot
    png = encode_png(rgba)
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.mode == "RGB" and image.size == (53, 37)
    assert np.array_equal(np.asarray(image), rgba[..., :3])
