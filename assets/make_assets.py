"""Regenerate the pictures in assets/ (all offline, CPU, under a minute):

    python assets/make_assets.py

- assets/demo.png             `retinanet-lab demo --out assets/demo.png` (the classroom model on fresh images)
- assets/tour.png             `retinanet-lab tour --out assets/tour.png` (anchors assigned to boxes)
- assets/shapes_grid.png      samples of the shapes world (ShapesDataset(seed=0), difficulty 0.5)
- assets/shapes_hard_grid.png the same seeds at difficulty 1.0
- assets/coco_export_grid.png the shapes world exported with export_coco and read back by CocoDataset
- assets/voc_grid.png         a LabelImg-style Pascal VOC folder made from shapes images, read by VOCDataset
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from retinanet_lab.cli import main as cli_main  # noqa: E402
from retinanet_lab.data import CocoDataset, ShapesDataset, VOCDataset, export_coco  # noqa: E402
from retinanet_lab.viz import show_sample_grid  # noqa: E402

HERE = Path(__file__).resolve().parent


def save(fig, name: str) -> None:
    tmp = HERE / f".{name}.tmp.png"
    fig.savefig(tmp, dpi=70)
    plt.close(fig)
    os.replace(tmp, HERE / name)
    print("wrote", HERE / name)


def write_voc(dataset, root: Path) -> None:
    """A Pascal VOC folder as LabelImg writes it (1-based inclusive pixel coordinates)."""
    from PIL import Image

    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for i in range(len(dataset)):
        image, target = dataset[i]
        name = f"{i:04d}"
        Image.fromarray((image * 255).round().byte().permute(1, 2, 0).numpy()).save(root / "JPEGImages" / f"{name}.jpg", quality=92)
        objects = "".join(
            f"<object><name>{dataset.class_names[int(lab) - 1]}</name><difficult>0</difficult><bndbox>"
            f"<xmin>{int(b[0]) + 1}</xmin><ymin>{int(b[1]) + 1}</ymin><xmax>{int(b[2])}</xmax><ymax>{int(b[3])}</ymax>"
            f"</bndbox></object>"
            for b, lab in zip(target["boxes"].tolist(), target["labels"].tolist()))
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>{image.shape[2]}</width>"
            f"<height>{image.shape[1]}</height><depth>3</depth></size>{objects}</annotation>")


def main() -> int:
    cli_main(["demo", "--out", str(HERE / "demo.png")])
    cli_main(["tour", "--out", str(HERE / "tour.png")])
    save(show_sample_grid(ShapesDataset(8, seed=0), n=8, cols=4, title="ShapesDataset(seed=0), difficulty 0.5"), "shapes_grid.png")
    save(show_sample_grid(ShapesDataset(8, seed=0, difficulty=1.0), n=8, cols=4, title="difficulty 1.0"), "shapes_hard_grid.png")
    with tempfile.TemporaryDirectory() as tmp:
        path = export_coco(ShapesDataset(4, seed=7, image_size=192), Path(tmp) / "coco", progress=False)
        save(show_sample_grid(CocoDataset(Path(tmp) / "coco" / "images", path), n=4, cols=4,
                              title="export_coco -> CocoDataset"), "coco_export_grid.png")
        write_voc(ShapesDataset(4, seed=8, image_size=192), Path(tmp) / "voc")
        save(show_sample_grid(VOCDataset(Path(tmp) / "voc"), n=4, cols=4, title="a LabelImg VOC folder -> VOCDataset"),
             "voc_grid.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
