"""The photo dataset (retinanet_lab/assets/photos/, `photo_dataset`): the counts its README states, boxes that
lie in their images and in coin tiles, the split by region of each source photo, loading through CocoDataset,
and that assets/make_photo_dataset.py makes exactly what is committed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import retinanet_lab
from retinanet_lab.data import CocoDataset, photo_dataset
from retinanet_lab.data.photos import PHOTOS_DIR, photos_dir

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "assets" / "make_photo_dataset.py"
SIZE = 400
EXPECTED = {"train": (40, 297), "eval": (16, 71)}  # (images, boxes): what the lessons and the README were written for


def load(split: str, folder: Path = PHOTOS_DIR) -> dict:
    return json.loads((folder / split / "instances.json").read_text(encoding="utf-8"))


def readme_rows() -> dict[str, list[str]]:
    """The README's table, by split: [images, without any coin, boxes, distinct coins, cut coins, long side]."""
    rows = {}
    for line in (PHOTOS_DIR / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in ("train", "eval"):
            rows[cells[0]] = cells[1:]
    assert set(rows) == {"train", "eval"}, "the README's table of counts is missing"
    return rows


def overlap(a, b) -> bool:
    """Rectangles [x0, y0, x1, y1), end-exclusive, share a pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_photos_dir_is_the_packages_assets_folder(monkeypatch):
    monkeypatch.delenv("RETINANET_LAB_ASSETS", raising=False)
    assert photos_dir() == Path(retinanet_lab.__file__).resolve().parent / "assets" / "photos"


@pytest.mark.parametrize("split", ["train", "eval"])
def test_counts_match_the_readme(split):
    data, row = load(split), readme_rows()[split]
    anns = data["annotations"]
    with_coins = {a["image_id"] for a in anns}
    coins = sorted({a["coin"] for a in anns})
    long_sides = [max(a["bbox"][2:]) for a in anns]
    assert (len(data["images"]), len(anns)) == EXPECTED[split]
    assert int(row[0]) == len(data["images"])
    assert int(row[1]) == len(data["images"]) - len(with_coins)
    assert int(row[2]) == len(anns)
    assert row[3] == f"{len(coins)} (coins {', '.join(map(str, coins))})"
    assert int(row[4]) == sum(a["visible"] < 1 for a in anns)
    assert row[5] == f"{min(long_sides):.1f}-{max(long_sides):.1f} px"
    per_image = [sum(a["image_id"] == i for a in anns) for i in with_coins]
    text = (PHOTOS_DIR / "README.md").read_text(encoding="utf-8")
    assert f"{min(per_image)}-{max(per_image)} ({split})" in re.sub(r"\s+", " ", text)


@pytest.mark.parametrize("split", ["train", "eval"])
def test_annotations_are_sound(split):
    data = load(split)
    assert data["categories"] == [{"id": 1, "name": "coin"}]
    assert len({im["id"] for im in data["images"]}) == len(data["images"])
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    files = sorted(p.name for p in (PHOTOS_DIR / split / "images").iterdir())
    assert files == sorted(im["file_name"] for im in data["images"]), "images/ holds other files than instances.json names"
    tiles = {im["id"]: im["tiles"] for im in data["images"]}
    for im in data["images"]:
        assert (im["width"], im["height"]) == (SIZE, SIZE)
        cover = np.zeros((SIZE, SIZE), np.int32)  # the tiles cut the square into pieces, each pixel in one
        for t in im["tiles"]:
            x0, y0, x1, y1 = t["tile"]
            cover[y0:y1, x0:x1] += 1
        assert (cover == 1).all(), im["file_name"]
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        assert a["category_id"] == 1 and a["iscrowd"] == 0
        assert 0 <= x and 0 <= y and x + w <= SIZE and y + h <= SIZE, a
        assert w >= 15 and h >= 15, a
        assert 0.75 <= a["visible"] <= 1
        # every box lies in one tile cut from the coins photo (boxes are rounded to 0.01 px)
        assert any(t["source"] == "coins" and t["tile"][0] - 0.01 <= x and t["tile"][1] - 0.01 <= y
                   and x + w <= t["tile"][2] + 0.01 and y + h <= t["tile"][3] + 0.01 for t in tiles[a["image_id"]]), a


def test_no_training_crop_overlaps_an_evaluation_crop():
    crops = {split: [(t["source"], t["crop"]) for im in load(split)["images"] for t in im["tiles"]] for split in ("train", "eval")}
    assert {s for s, _ in crops["train"]} == {s for s, _ in crops["eval"]}  # both splits use every photo
    for source, a in crops["train"]:
        for other, b in crops["eval"]:
            assert source != other or not overlap(a, b), (source, a, b)
    coins = {split: {a["coin"] for a in load(split)["annotations"]} for split in ("train", "eval")}
    assert not coins["train"] & coins["eval"] and len(coins["train"]) + len(coins["eval"]) == 24


@pytest.mark.parametrize("split", ["train", "eval"])
def test_photo_dataset_loads_every_image(split):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # CocoDataset warns about degenerate or outside boxes: there must be none
        ds = photo_dataset(split)
    assert isinstance(ds, CocoDataset) and ds.class_names == ["coin"] and len(ds) == EXPECTED[split][0]
    boxes = 0
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, SIZE, SIZE) and image.dtype.is_floating_point
        assert 0 <= image.min() and image.max() <= 1 and image.std() > 0.05
        assert (image[0] == image[1]).all() and (image[1] == image[2]).all()  # grayscale, read as RGB
        assert (target["labels"] == 1).all()
        boxes += len(target["boxes"])
    assert boxes == EXPECTED[split][1]


def test_photo_dataset_arguments(tmp_path, monkeypatch):
    seen = []
    ds = photo_dataset("eval", transforms=lambda image, target: seen.append(target["image_id"]) or (image, target))
    ds[3]
    assert seen == [ds.images[3]["id"]]
    with pytest.raises(ValueError, match="split.*'val'"):
        photo_dataset("val")
    monkeypatch.setenv("RETINANET_LAB_ASSETS", str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        photo_dataset("train")
    assert str(tmp_path / "photos" / "train") in str(e.value) and "python assets/make_photo_dataset.py" in str(e.value)
    shutil.copytree(PHOTOS_DIR / "eval", tmp_path / "photos" / "eval")  # $RETINANET_LAB_ASSETS is where it looks
    assert photo_dataset("eval").images_dir == str(tmp_path / "photos" / "eval" / "images")


def test_the_script_makes_what_is_committed(tmp_path):
    skimage = pytest.importorskip("skimage")  # only to regenerate; not a dependency of the package ([dev] has it)
    if not skimage.__version__.startswith("0.26."):
        pytest.skip(f"the dataset was made with scikit-image 0.26 (its segmentation may differ in {skimage.__version__})")
    out = tmp_path / "photos"
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--picture", str(tmp_path / "boxes.png")],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    assert (out / "README.md").read_text(encoding="utf-8") == (PHOTOS_DIR / "README.md").read_text(encoding="utf-8")
    for split in ("train", "eval"):
        made, committed = load(split, out), load(split)
        assert made == committed, f"{split}/instances.json: the script no longer makes what is committed"
        assert sorted(p.name for p in (out / split / "images").iterdir()) == sorted(im["file_name"] for im in committed["images"])
        for im in committed["images"]:  # same pixels, up to JPEG coding in another Pillow
            a, b = (np.asarray(Image.open(folder / split / "images" / im["file_name"]), np.float32) for folder in (out, PHOTOS_DIR))
            assert a.shape == b.shape == (SIZE, SIZE) and np.abs(a - b).mean() < 1, im["file_name"]
    assert (tmp_path / "boxes.png").stat().st_size > 0
