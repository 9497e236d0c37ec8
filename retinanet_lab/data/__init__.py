"""Data for retinanet_lab: the procedural shapes world and loaders for small real datasets.

    ShapesDataset       procedural, deterministic, no download     (shapes.py)
    CocoDataset         any COCO-format folder; export_coco        (coco.py)
    VOCDataset          Pascal VOC / LabelImg folders               (voc.py)
    PennFudanDataset    the Penn-Fudan pedestrians                  (voc.py)
    photo_dataset       coins in collages of real photos, shipped   (photos.py)
    load_image          robust image reading (EXIF, modes, bombs)   (images.py)
    transforms          flip, photometric jitter, zoom (scale jitter + crops) (transforms.py)
    collate_fn, make_loader, split_dataset, subset                  (loader.py)
"""

from .coco import CocoDataset, export_coco, read_coco_json
from .images import ImageLoadError, load_image, to_tensor
from .loader import collate_fn, default_num_workers, make_loader, split_dataset, subset
from .photos import photo_dataset
from .shapes import SHAPE_CLASSES, ShapesDataset
from .transforms import (
    Compose,
    PhotometricJitter,
    RandomHorizontalFlip,
    RandomZoom,
    clip_targets,
    small_dataset_transforms,
    train_transforms,
)
from .voc import PENNFUDAN_URL, PennFudanDataset, VOCDataset

__all__ = [
    "CocoDataset", "Compose", "ImageLoadError", "PENNFUDAN_URL", "PennFudanDataset", "PhotometricJitter",
    "RandomHorizontalFlip", "RandomZoom", "SHAPE_CLASSES", "ShapesDataset", "VOCDataset", "clip_targets", "collate_fn",
    "default_num_workers", "export_coco", "load_image", "make_loader", "photo_dataset", "read_coco_json", "split_dataset", "subset",
    "small_dataset_transforms", "to_tensor", "train_transforms",
]
