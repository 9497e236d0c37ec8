"""The pictures of the classroom widgets in the README: each widget's own figure, as a notebook shows it (a PNG
of twice the pixels the widget shows it at, so sharp on any screen).

    python assets/make_widget_pictures.py          # about a minute on a 2-core CPU (the monitor trains 120 steps)

The screenshot of a lesson served by Voilà in Chromium (assets/widgets/voila_focal_loss.png) comes from the
browser test: `pytest tests/test_browser.py` writes artifacts/browser/*.png; copy focal_loss_before.png.
"""

from __future__ import annotations

import os
from pathlib import Path

from retinanet_lab.classroom import load_classroom_model
from retinanet_lab.widgets import (
    AnchorExplorer,
    ArchitectureView,
    DetectionExplorer,
    FocalLossExplorer,
    HardExampleExplorer,
    LogitsToDetections,
    TrainingMonitor,
)
from retinanet_lab.widgets._view import compact_png

OUT = Path(__file__).resolve().parent / "widgets"


def save(name: str, widget) -> None:
    assert not widget.errors.outputs, widget.errors.outputs
    tmp = OUT / f".{name}.tmp"
    tmp.write_bytes(compact_png(widget.png))  # 256 colours: a third of the bytes, the same picture to the eye
    os.replace(tmp, OUT / f"{name}.png")
    print("wrote", OUT / f"{name}.png")


def main() -> None:
    OUT.mkdir(exist_ok=True)
    model = load_classroom_model()
    save("focal_loss", FocalLossExplorer())
    save("hard_examples", HardExampleExplorer(model))
    save("anchors", AnchorExplorer())
    save("architecture", ArchitectureView())
    save("detections", DetectionExplorer(model))
    steps = LogitsToDetections(model)
    steps.stage.value = "3. decode boxes"
    save("logits_to_detections", steps)
    monitor = TrainingMonitor(epochs=3)
    monitor.start()
    monitor.join()
    save("training_monitor", monitor)


if __name__ == "__main__":
    main()
