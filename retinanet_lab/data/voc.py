"""Pascal VOC folders (what LabelImg writes) and the Penn-Fudan pedestrians, the usual first
fine-tuning exercise.

VOC layout: `root/Annotations/*.xml` and `root/JPEGImages/*` (an optional `root/ImageSets/Main/<split>.txt`
lists the ids of a split). Each <object> has a <name> and a <bndbox> in 1-based, inclusive pixel
coordinates; as Detectron2 does, x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax. Objects marked
<difficult>1</difficult> are kept out of training, like COCO's crowd boxes.

Penn-Fudan (170 images, 345 pedestrians): `root/PennFudanPed/PNGImages/*.png` with instance masks
`PedMasks/*_mask.png` (0 background, 1..N one pedestrian each); boxes are the masks' extents.
`PennFudanDataset(root, download=True)` fetches it when online; offline, its error says what to put where.
"""

from __future__ import annotations

import os
import warnings
import xml.etree.ElementTree as ET

import numpy as np
import torch

from ..errors import DataError, DownloadError
from .images import load_image, to_tensor
from .transforms import clip_targets

__all__ = ["VOCDataset", "PennFudanDataset", "PENNFUDAN_URL"]

PENNFUDAN_URL = "https://www.cis.upenn.edu/~jshi/ped_html/PennFudanPed.zip"


def _parse_voc_xml(path: str) -> tuple[str | None, list[tuple[str, list[float], bool]]]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DataError(f"{path}: malformed XML: {e}") from e
    objects = []
    for i, obj in enumerate(root.findall("object")):
        name = obj.findtext("name")
        box = obj.find("bndbox")
        if not name or box is None:
            raise DataError(f"{path}: object {i} needs <name> and <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}: object {i} ({name}) has a <bndbox> without numeric xmin/ymin/xmax/ymax") from e
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        objects.append((name.strip(), [xmin - 1, ymin - 1, xmax, ymax], difficult))
    return root.findtext("filename"), objects


class VOCDataset(torch.utils.data.Dataset):
    """A Pascal VOC / LabelImg folder. `classes` fixes the label order (default: sorted names found)."""

    def __init__(self, root: str | os.PathLike, split: str | None = None, classes: list[str] | None = None,
                 image_dir: str = "JPEGImages", transform=None):
        self.root = os.fspath(root)
        ann_dir = os.path.join(self.root, "Annotations")
        if not os.path.isdir(ann_dir):
            raise FileNotFoundError(f"{self.root}: no Annotations/ folder (expected a Pascal VOC layout)")
        if split is not None:
            split_file = os.path.join(self.root, "ImageSets", "Main", f"{split}.txt")
            if not os.path.exists(split_file):
                raise FileNotFoundError(f"split file not found: {split_file}")
            ids = [line.strip() for line in open(split_file) if line.strip()]
        else:
            ids = sorted(os.path.splitext(f)[0] for f in os.listdir(ann_dir) if f.endswith(".xml"))
        if not ids:
            raise DataError(f"{self.root}: the dataset is empty (no annotation files)")
        self.records = []
        degenerate = 0
        for image_id in ids:
            xml = os.path.join(ann_dir, f"{image_id}.xml")
            if not os.path.exists(xml):
                raise FileNotFoundError(f"annotation file not found: {xml}")
            filename, objects = _parse_voc_xml(xml)
            kept = []
            for name, box, difficult in objects:
                if box[2] <= box[0] or box[3] <= box[1]:
                    degenerate += 1
                else:
                    kept.append((name, box, difficult))
            image = os.path.join(self.root, image_dir, filename or f"{image_id}.jpg")
            if filename and not os.path.exists(image) and os.path.exists(os.path.join(self.root, image_dir, f"{image_id}.jpg")):
                image = os.path.join(self.root, image_dir, f"{image_id}.jpg")
            self.records.append((image_id, image, kept))
        if degenerate:
            warnings.warn(f"{self.root}: dropped {degenerate} box(es) with zero or negative width or height", stacklevel=2)
        found = sorted({name for _, _, objs in self.records for name, _, _ in objs})
        self.class_names = list(classes) if classes is not None else found
        unknown = sorted(set(found) - set(self.class_names))
        if unknown:
            raise DataError(f"{self.root}: objects of classes {unknown} are not in classes={self.class_names}")
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    def annotation(self, index: int) -> dict:
        image_id, _, objects = self.records[index]
        def pick(difficult):
            sel = [(b, self.class_names.index(n) + 1) for n, b, d in objects if d == difficult]
            return (torch.tensor([b for b, _ in sel], dtype=torch.float32).reshape(-1, 4),
                    torch.tensor([lab for _, lab in sel], dtype=torch.int64))
        boxes, labels = pick(False)
        crowd_boxes, crowd_labels = pick(True)
        return {"boxes": boxes, "labels": labels, "crowd_boxes": crowd_boxes, "crowd_labels": crowd_labels,
                "image_id": index}

    def __getitem__(self, index: int):
        image = to_tensor(load_image(self.records[index][1]))
        target = clip_targets(self.annotation(index), image.shape[-2:])
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


class PennFudanDataset(torch.utils.data.Dataset):
    """The Penn-Fudan pedestrian dataset: one class, "pedestrian"; boxes from the instance masks."""

    class_names = ["pedestrian"]

    def __init__(self, root: str | os.PathLike, download: bool = False, transform=None):
        self.root = os.path.join(os.fspath(root), "PennFudanPed")
        if download and not os.path.isdir(self.root):
            self._download(os.fspath(root))
        images_dir = os.path.join(self.root, "PNGImages")
        if not os.path.isdir(images_dir):
            raise FileNotFoundError(
                f"Penn-Fudan not found at {self.root}. Pass download=True when online, or download {PENNFUDAN_URL} "
                f"and unzip it into {os.fspath(root)} (giving {images_dir})")
        self.images = sorted(f for f in os.listdir(images_dir) if f.lower().endswith(".png"))
        if not self.images:
            raise DataError(f"{images_dir}: the dataset is empty (no PNG images)")
        self.transform = transform

    @staticmethod
    def _download(root: str) -> None:
        import urllib.request
        import zipfile

        os.makedirs(root, exist_ok=True)
        archive = os.path.join(root, "PennFudanPed.zip")
        try:
            urllib.request.urlretrieve(PENNFUDAN_URL, archive + ".part")
        except OSError as e:
            raise DownloadError(f"could not download Penn-Fudan from {PENNFUDAN_URL} ({e}). Offline? Download it "
                               f"elsewhere and unzip it into {root}") from e
        os.replace(archive + ".part", archive)
        with zipfile.ZipFile(archive) as z:
            z.extractall(root)

    @property
    def num_classes(self) -> int:
        return 1

    def __len__(self) -> int:
        return len(self.images)

    def mask_path(self, index: int) -> str:
        stem = os.path.splitext(self.images[index])[0]
        return os.path.join(self.root, "PedMasks", f"{stem}_mask.png")

    def __getitem__(self, index: int):
        from PIL import Image

        image = to_tensor(load_image(os.path.join(self.root, "PNGImages", self.images[index])))
        path = self.mask_path(index)
        if not os.path.exists(path):
            raise FileNotFoundError(f"mask file not found: {path}")
        mask = np.asarray(Image.open(path))
        if mask.shape[:2] != tuple(image.shape[-2:]):
            raise DataError(f"{path}: mask size {mask.shape[:2]} differs from its image's {tuple(image.shape[-2:])}")
        ids = [i for i in np.unique(mask) if i != 0]
        boxes = []
        for i in ids:
            ys, xs = np.nonzero(mask == i)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        target = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.ones(len(boxes), dtype=torch.int64), "image_id": index}
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target
