"""The photo dataset: coins, one class, in 400 x 400 collages of real photographs (scikit-image's bundled photos).

    train, val = photo_dataset("train"), photo_dataset("eval")      # CocoDataset objects, class_names ["coin"]

A small real dataset shaped like a student's first own one: 40 training and 16 evaluation images of 18-58 px
coins, the evaluation coins never seen in training. It ships inside the package (retinanet_lab/assets/photos/,
or $RETINANET_LAB_ASSETS/photos/); its README.md there tells how it is made, the counts, sources and licences.
Regenerate it with `python assets/make_photo_dataset.py`.
"""

from __future__ import annotations

from pathlib import Path

from ..classroom import assets_dir
from .coco import CocoDataset

__all__ = ["PHOTOS_DIR", "SPLITS", "photo_dataset", "photos_dir"]

SPLITS = ("train", "eval")


def photos_dir() -> Path:
    """retinanet_lab/assets/photos/, or $RETINANET_LAB_ASSETS/photos/ where that variable is set."""
    return assets_dir() / "photos"


PHOTOS_DIR = photos_dir()  # as found at import; photo_dataset looks again, so a later $RETINANET_LAB_ASSETS counts


def photo_dataset(split: str = "train", transforms=None) -> CocoDataset:
    """The coins dataset's `split` ("train" or "eval") as a CocoDataset; `transforms(image, target)` as CocoDataset's."""
    if split not in SPLITS:
        raise ValueError(f"photo_dataset: split must be 'train' or 'eval', not {split!r}")
    folder = photos_dir() / split
    annotation_file = folder / "instances.json"
    if not annotation_file.is_file():
        raise FileNotFoundError(
            f"the photo dataset is not at {folder} ({annotation_file.name} is missing). It ships inside the package "
            f"(retinanet_lab/assets/photos/): reinstall it, point RETINANET_LAB_ASSETS at a folder with photos/, or "
            f"regenerate it from a clone with `python assets/make_photo_dataset.py` (needs scikit-image).")
    return CocoDataset(folder / "images", annotation_file, transform=transforms)
