"""COCO-format datasets: what CVAT, Label Studio and Roboflow export, and `export_coco` writes.

`CocoDataset(images_dir, annotation_file)` reads `{"images": [...], "annotations": [...],
"categories": [...]}` with bbox = [x, y, width, height] and returns items like the model's train mode
takes: (image (3, H, W) in [0, 1], {"boxes" xyxy, "labels" 1..K, "image_id", "crowd_boxes"}).

- categories, sorted by id, become labels 1..K; `class_names` and `category_ids` keep the mapping;
- crowd annotations (iscrowd=1) are kept out of "boxes" (they are not objects to find one by one) and
  returned as "crowd_boxes"; COCO evaluation ignores detections on them, as pycocotools does;
- images without annotations stay in the dataset, as negatives;
- bad files give errors naming the file and the annotation or image at fault; boxes with zero or
  negative size are dropped with one warning that counts them; boxes partly outside the image are
  clipped to it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict

import torch

from ..errors import DataError
from .images import load_image, to_tensor
from .transforms import clip_targets

__all__ = ["CocoDataset", "export_coco", "read_coco_json"]


def read_coco_json(path: str | os.PathLike) -> dict:
    """Load and check the structure of a COCO annotation file; errors name the file and the entry."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed or truncated JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with 'images', 'annotations' and 'categories'")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing or invalid '{key}' list")
    data.setdefault("annotations", [])
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise DataError(f"{path}: images[{i}] needs 'id' and 'file_name'")
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat:
            raise DataError(f"{path}: categories[{i}] needs an 'id'")
    image_ids = {img["id"] for img in data["images"]}
    category_ids = {cat["id"] for cat in data["categories"]}
    for i, ann in enumerate(data["annotations"]):
        name = f"annotation {ann.get('id', f'#{i}')}" if isinstance(ann, dict) else f"annotations[{i}]"
        if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann or "bbox" not in ann:
            raise DataError(f"{path}: {name} needs 'image_id', 'category_id' and 'bbox'")
        if ann["image_id"] not in image_ids:
            raise DataError(f"{path}: {name} refers to image_id {ann['image_id']}, which is not in 'images'")
        if ann["category_id"] not in category_ids:
            raise DataError(f"{path}: {name} refers to category_id {ann['category_id']}, which is not in 'categories'")
        bbox = ann["bbox"]
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
            raise DataError(f"{path}: {name} has bbox {bbox!r}; expected [x, y, width, height]")
    return data


class CocoDataset(torch.utils.data.Dataset):
    """A folder of images and a COCO annotation file (see the module docstring)."""

    def __init__(self, images_dir: str | os.PathLike, annotation_file: str | os.PathLike, transform=None):
        self.images_dir, self.annotation_file = os.fspath(images_dir), os.fspath(annotation_file)
        self.coco = read_coco_json(self.annotation_file)
        if not self.coco["images"]:
            raise DataError(f"{self.annotation_file}: the dataset is empty (no images)")
        if not self.coco["categories"]:
            raise DataError(f"{self.annotation_file}: no categories")
        if not os.path.isdir(self.images_dir):
            raise FileNotFoundError(f"images folder not found: {self.images_dir} (the folder of the files that "
                                    f"{self.annotation_file} names)")
        cats = sorted(self.coco["categories"], key=lambda c: c["id"])
        self.category_ids = [c["id"] for c in cats]
        self.class_names = [str(c.get("name", c["id"])) for c in cats]
        self._label_of = {cid: k + 1 for k, cid in enumerate(self.category_ids)}
        self.images = sorted(self.coco["images"], key=lambda im: im["id"])
        self.transform = transform
        self._objects, self._crowds = defaultdict(list), defaultdict(list)
        degenerate, outside, first_bad = 0, 0, None
        sizes = {im["id"]: (im.get("width"), im.get("height")) for im in self.images}
        for ann in self.coco["annotations"]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            if w <= 0 or h <= 0:
                degenerate += 1
                first_bad = first_bad if first_bad is not None else ann.get("id")
                continue
            iw, ih = sizes[ann["image_id"]]
            if iw and ih and (x < 0 or y < 0 or x + w > iw or y + h > ih):
                outside += 1
            entry = ([x, y, x + w, y + h], self._label_of[ann["category_id"]])
            (self._crowds if ann.get("iscrowd", 0) else self._objects)[ann["image_id"]].append(entry)
        if degenerate:
            warnings.warn(f"{self.annotation_file}: dropped {degenerate} annotation(s) with zero or negative width or "
                          f"height (first: annotation id {first_bad})", stacklevel=2)
        if outside:
            warnings.warn(f"{self.annotation_file}: {outside} box(es) reach outside their image; they are clipped to it",
                          stacklevel=2)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, index: int) -> str:
        return os.path.join(self.images_dir, self.images[index]["file_name"])

    def annotation(self, index: int) -> dict:
        """Boxes (clipped to the image only at loading), labels and crowd boxes of an image, without reading it."""
        image_id = self.images[index]["id"]
        objs, crowds = self._objects.get(image_id, []), self._crowds.get(image_id, [])
        return {
            "boxes": torch.tensor([b for b, _ in objs], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([lab for _, lab in objs], dtype=torch.int64),
            "crowd_boxes": torch.tensor([b for b, _ in crowds], dtype=torch.float32).reshape(-1, 4),
            "crowd_labels": torch.tensor([lab for _, lab in crowds], dtype=torch.int64),
            "image_id": image_id,
        }

    def __getitem__(self, index: int):
        image = to_tensor(load_image(self.image_path(index)))
        target = clip_targets(self.annotation(index), image.shape[-2:])  # boxes wholly outside are dropped
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


def _atomic_write_json(data, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def export_coco(dataset, folder: str | os.PathLike, progress: bool = True) -> str:
    """Write every image of `dataset` as PNG to `folder/images/` and its boxes to `folder/instances.json`
    (COCO format, categories 1..K named by dataset.class_names). Returns the JSON's path."""
    from PIL import Image
    from tqdm.auto import tqdm

    folder = os.fspath(folder)
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    images, annotations = [], []
    for index in tqdm(range(len(dataset)), desc="export_coco", disable=not progress):
        image, target = dataset[index]
        h, w = image.shape[-2:]
        name = f"{index:06d}.png"
        pixels = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(os.path.join(folder, "images", name))
        image_id = index + 1
        images.append({"id": image_id, "file_name": name, "width": int(w), "height": int(h)})
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            x1, y1, x2, y2 = box
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(dataset.class_names)]
    path = os.path.join(folder, "instances.json")
    _atomic_write_json({"images": images, "annotations": annotations, "categories": categories}, path)
    return path
