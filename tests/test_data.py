"""Datasets: the shapes world, COCO and VOC folders, Penn-Fudan, and the bad-input table."""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from retinanet_lab import RetinaNet
from retinanet_lab.data import (
    SHAPE_CLASSES,
    CocoDataset,
    ImageLoadError,
    PennFudanDataset,
    PhotometricJitter,
    RandomHorizontalFlip,
    ShapesDataset,
    VOCDataset,
    collate_fn,
    export_coco,
    load_image,
    make_loader,
    split_dataset,
    subset,
)

# ---- the shapes world ---------------------------------------------------------------------------------


def test_shapes_deterministic_and_seeded():
    a, b = ShapesDataset(20, seed=3), ShapesDataset(20, seed=3)
    for i in (0, 7, 19):
        (ia, ta), (ib, tb) = a[i], b[i]
        assert torch.equal(ia, ib) and torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])
    assert torch.equal(a[5][0], a[5][0])  # same index, same image, any order of access
    assert not torch.equal(ShapesDataset(20, seed=4)[0][0], a[0][0])


def test_shapes_content():
    ds = ShapesDataset(150, seed=0, image_size=256, difficulty=0.6)
    assert ds.class_names == list(SHAPE_CLASSES) and len(SHAPE_CLASSES) >= 5
    sides, ratios, labels, empty = [], [], [], 0
    for i in range(len(ds)):
        image, t = ds[i]
        assert image.shape == (3, 256, 256) and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1
        b = t["boxes"]
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()
        assert (b >= 0).all() and (b[:, 2:] <= 256).all()
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        sides += (w * h).sqrt().tolist()
        ratios += (h / w).tolist()
        labels += t["labels"].tolist()
        empty += len(b) == 0
    assert min(sides) < 16 and max(sides) > 150  # from about 12 px to most of the image
    assert min(ratios) < 0.7 and max(ratios) > 1.4  # elongated both ways
    assert set(labels) == set(range(1, 6))  # every class appears
    assert empty >= 1  # some negatives


def test_shapes_feed_every_pyramid_level():
    """At a 512 px network input, objects of the shapes world are assigned to anchors on all of P3-P7."""
    ds = ShapesDataset(48, seed=1, image_size=256)
    model = RetinaNet(5, backbone="resnet18", fpn_channels=32, head_channels=32, head_convs=1, min_size=512, max_size=512)
    images, targets = collate_fn([ds[i] for i in range(len(ds))])
    r = model.inspect(images, targets)
    positives = [int((m >= 0).sum()) for m in r["matched"]]
    assert all(p > 0 for p in positives), positives


def test_shapes_difficulty_and_errors():
    easy, hard = ShapesDataset(4, seed=0, difficulty=0.0), ShapesDataset(4, seed=0, difficulty=1.0)
    noise = lambda img: (img[:, 1:, :] - img[:, :-1, :]).abs().mean()  # noqa: E731
    assert noise(hard[0][0]) > noise(easy[0][0])
    with pytest.raises(ValueError, match="classes"):
        ShapesDataset(4, classes=("circle", "star"))
    with pytest.raises(ValueError, match="difficulty"):
        ShapesDataset(4, difficulty=2)
    with pytest.raises(IndexError, match="out of range"):
        ShapesDataset(4)[4]


def test_shapes_export_coco_round_trip(tmp_path):
    from pycocotools.coco import COCO

    ds = ShapesDataset(10, seed=5, image_size=128, empty_fraction=0.3)
    path = export_coco(ds, tmp_path, progress=False)
    coco = COCO(path)
    assert len(coco.getImgIds()) == 10
    assert len(coco.getAnnIds()) == sum(len(ds[i][1]["boxes"]) for i in range(10))
    back = CocoDataset(tmp_path / "images", path)
    assert back.class_names == ds.class_names
    for i in range(10):
        (img_a, ta), (img_b, tb) = ds[i], back[i]
        assert torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])
        assert torch.allclose(img_a, img_b, atol=1 / 255 + 1e-6)


# ---- COCO folders and the bad-input table --------------------------------------------------------------


def _save(path, mode="RGB", size=(64, 48), colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        arr = (np.arange(size[0] * size[1], dtype=np.uint16).reshape(size[1], size[0]) * 7)
        Image.fromarray(arr).save(path)
    elif mode == "P":
        Image.new("RGB", size, colour).convert("P", palette=Image.ADAPTIVE).save(path)
    else:
        fill = colour[0] if mode == "L" else colour + ((128,) if mode == "RGBA" else ())
        Image.new(mode, size, fill).save(path)


def _coco(tmp_path, annotations=None, images=None, categories=None, name="ann.json"):
    images = images if images is not None else [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                                                {"id": 2, "file_name": "b.png", "width": 64, "height": 48}]
    for im in images:
        if not (tmp_path / "img" / im["file_name"]).exists():
            _save(tmp_path / "img" / im["file_name"])
    data = {"images": images,
            "annotations": annotations if annotations is not None else [
                {"id": 10, "image_id": 1, "category_id": 7, "bbox": [5, 6, 20, 10], "iscrowd": 0},
                {"id": 11, "image_id": 1, "category_id": 3, "bbox": [30, 10, 10, 20], "iscrowd": 0},
                {"id": 12, "image_id": 1, "category_id": 3, "bbox": [0, 0, 64, 48], "iscrowd": 1}],
            "categories": categories if categories is not None else [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}]}
    (tmp_path / name).write_text(json.dumps(data))
    return CocoDataset(tmp_path / "img", tmp_path / name)


def test_coco_loader_mapping_crowd_and_negatives(tmp_path):
    ds = _coco(tmp_path)
    assert ds.class_names == ["dog", "cat"] and ds.category_ids == [3, 7]  # sorted by id, labels 1..K
    image, t = ds[0]
    assert image.shape == (3, 48, 64)
    assert t["boxes"].tolist() == [[5, 6, 25, 16], [30, 10, 40, 30]]
    assert t["labels"].tolist() == [2, 1]
    assert t["crowd_boxes"].tolist() == [[0, 0, 64, 48]]  # kept out of training
    _, t2 = ds[1]  # an image without annotations stays, as a negative
    assert t2["boxes"].shape == (0, 4) and t2["labels"].shape == (0,)


def test_coco_bad_json(tmp_path):
    (tmp_path / "bad.json").write_text('{"images": [1, 2,')
    with pytest.raises(ValueError, match=r"bad\.json.*(malformed|truncated).*line 1"):
        CocoDataset(tmp_path, tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text('{"images": []] }')
    with pytest.raises(ValueError, match=r"bad2\.json"):
        CocoDataset(tmp_path, tmp_path / "bad2.json")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        CocoDataset(tmp_path, tmp_path / "nope.json")


def test_coco_unknown_image_or_category(tmp_path):
    with pytest.raises(ValueError, match=r"annotation 5 refers to image_id 99"):
        _coco(tmp_path, annotations=[{"id": 5, "image_id": 99, "category_id": 7, "bbox": [1, 1, 5, 5]}])
    with pytest.raises(ValueError, match=r"annotation 6 refers to category_id 42"):
        _coco(tmp_path, annotations=[{"id": 6, "image_id": 1, "category_id": 42, "bbox": [1, 1, 5, 5]}])
    with pytest.raises(ValueError, match=r"annotation 7 has bbox"):
        _coco(tmp_path, annotations=[{"id": 7, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5]}])


def test_coco_degenerate_boxes_dropped_with_count(tmp_path):
    anns = [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [1, 1, 0, 5]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, -2]},
            {"id": 3, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5]}]
    with pytest.warns(UserWarning, match=r"dropped 2 annotation\(s\).*first: annotation id 1"):
        ds = _coco(tmp_path, annotations=anns)
    assert len(ds[0][1]["boxes"]) == 1


def test_coco_boxes_outside_are_clipped(tmp_path):
    anns = [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [50, 40, 30, 30]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [-10, -5, 20, 20]}]
    with pytest.warns(UserWarning, match=r"2 box\(es\) reach outside"):
        ds = _coco(tmp_path, annotations=anns)
    assert ds[0][1]["boxes"].tolist() == [[50, 40, 64, 48], [0, 0, 10, 15]]


def test_missing_and_corrupt_image_files(tmp_path):
    ds = _coco(tmp_path)
    (tmp_path / "img" / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"a\.png"):
        ds[0]
    (tmp_path / "img" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ImageLoadError, match=r"b\.png.*corrupt"):
        ds[1]
    good = tmp_path / "t.jpg"
    Image.new("RGB", (64, 64), (10, 200, 10)).save(good)
    (tmp_path / "trunc.jpg").write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageLoadError, match=r"trunc\.jpg"):
        load_image(tmp_path / "trunc.jpg")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK"])
def test_image_modes_become_rgb(tmp_path, mode):
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    _save(path, mode=mode) if mode != "CMYK" else Image.new("CMYK", (64, 48), (0, 200, 200, 0)).save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (64, 48)
    if mode == "I;16":  # 16-bit range scaled to 8 bits, not clipped to white
        arr = np.asarray(img)
        assert arr.min() == 0 and arr.max() == 255


def test_exif_rotated_jpeg_keeps_boxes_right(tmp_path):
    """A phone photo: pixels stored sideways plus EXIF orientation 6. Labelled upright (as tools show it),
    the box must land on the object after loading."""
    upright = np.full((40, 80, 3), 30, dtype=np.uint8)  # 80 wide, 40 high when viewed
    upright[5:15, 60:75] = (250, 20, 20)  # a red object at x 60..75, y 5..15
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    stored.save(tmp_path / "img.jpg", exif=exif.tobytes(), quality=95)
    images = [{"id": 1, "file_name": "img.jpg", "width": 80, "height": 40}]
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "img.jpg").write_bytes((tmp_path / "img.jpg").read_bytes())
    ds = _coco(tmp_path, images=images, annotations=[{"id": 1, "image_id": 1, "category_id": 7, "bbox": [60, 5, 15, 10]}])
    image, t = ds[0]
    assert image.shape == (3, 40, 80)
    x1, y1, x2, y2 = (int(v) for v in t["boxes"][0])
    inside = image[:, y1 + 2:y2 - 2, x1 + 2:x2 - 2].mean(dim=(1, 2))
    assert inside[0] > 0.8 and inside[1] < 0.3  # red where the box is


def test_decompression_bomb_guard(tmp_path, monkeypatch):
    _save(tmp_path / "big.png", size=(100, 100))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # 10,000 pixels: over the limit, under twice it
    with pytest.raises(ImageLoadError, match=r"big\.png.*too large"):
        load_image(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # over twice: Pillow's hard error
    with pytest.raises(ImageLoadError, match=r"big\.png.*too large"):
        load_image(tmp_path / "big.png")


def test_empty_datasets(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        _coco(tmp_path, images=[], annotations=[])
    with pytest.raises(ValueError, match="empty"):
        make_loader(ShapesDataset(0))
    (tmp_path / "voc" / "Annotations").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty"):
        VOCDataset(tmp_path / "voc")


# ---- VOC and Penn-Fudan ----------------------------------------------------------------------------------

VOC_XML = """<annotation><filename>{name}.jpg</filename><size><width>64</width><height>48</height><depth>3</depth></size>
{objects}</annotation>"""
VOC_OBJ = ("<object><name>{cls}</name><difficult>{d}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
           "<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")


def _voc(root, objects_per_image):
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for name, objs in objects_per_image.items():
        Image.new("RGB", (64, 48), (90, 90, 90)).save(root / "JPEGImages" / f"{name}.jpg")
        xml = VOC_XML.format(name=name, objects="".join(VOC_OBJ.format(cls=c, d=d, x1=a, y1=b, x2=e, y2=f)
                                                            for c, d, (a, b, e, f) in objs))
        (root / "Annotations" / f"{name}.xml").write_text(xml)


def test_voc_loader(tmp_path):
    _voc(tmp_path, {"0001": [("person", 0, (11, 6, 30, 40)), ("dog", 1, (40, 10, 60, 30))],
                    "0002": [("dog", 0, (1, 1, 64, 48))]})
    ds = VOCDataset(tmp_path)
    assert ds.class_names == ["dog", "person"]
    image, t = ds[0]
    assert t["boxes"].tolist() == [[10, 5, 30, 40]] and t["labels"].tolist() == [2]  # 1-based inclusive -> xyxy
    assert t["crowd_boxes"].tolist() == [[39, 9, 60, 30]]  # difficult: kept out of training
    with pytest.raises(ValueError, match=r"classes \['person'\] are not in"):
        VOCDataset(tmp_path, classes=["dog"])
    (tmp_path / "Annotations" / "0002.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match=r"0002\.xml: malformed XML"):
        VOCDataset(tmp_path)


def test_pennfudan_layout_and_offline_download(tmp_path, monkeypatch):
    root = tmp_path / "PennFudanPed"
    (root / "PNGImages").mkdir(parents=True)
    (root / "PedMasks").mkdir()
    Image.new("RGB", (60, 40), (120, 120, 120)).save(root / "PNGImages" / "FudanPed00001.png")
    mask = np.zeros((40, 60), dtype=np.uint8)
    mask[5:30, 4:20] = 1
    mask[10:38, 30:55] = 2
    Image.fromarray(mask).save(root / "PedMasks" / "FudanPed00001_mask.png")
    ds = PennFudanDataset(tmp_path)
    image, t = ds[0]
    assert t["boxes"].tolist() == [[4, 5, 20, 30], [30, 10, 55, 38]] and t["labels"].tolist() == [1, 1]
    import urllib.request

    def offline(*a, **k):
        raise OSError("no network here")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    with pytest.raises(RuntimeError, match=r"could not download Penn-Fudan.*no network"):
        PennFudanDataset(tmp_path / "elsewhere", download=True)
    with pytest.raises(FileNotFoundError, match="PennFudanPed.zip"):
        PennFudanDataset(tmp_path / "elsewhere")


# ---- transforms, loaders, the model accepts every loader's batches -------------------------------------


def test_flip_moves_boxes_with_pixels():
    image = torch.zeros(3, 20, 40)
    image[0, 5:10, 2:8] = 1.0
    target = {"boxes": torch.tensor([[2.0, 5, 8, 10]]), "labels": torch.tensor([1])}
    flipped, t = RandomHorizontalFlip(p=1.0)(image, target)
    assert t["boxes"].tolist() == [[32, 5, 38, 10]]
    assert flipped[0, 5:10, 32:38].min() == 1.0 and flipped[0].sum() == image[0].sum()
    assert target["boxes"].tolist() == [[2, 5, 8, 10]]  # the input is not modified


def _painted(boxes, h=60, w=80):
    """An image with each box painted in its own channel value, so a transform's boxes can be checked against pixels."""
    image = torch.zeros(3, h, w)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        image[k % 3, int(y1):int(y2), int(x1):int(x2)] = 1.0
    return image, {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.arange(1, len(boxes) + 1)}


def _tight(image, box, channel):
    """The painted pixels of `channel` fill `box` exactly (to a pixel)."""
    ys, xs = torch.nonzero(image[channel] > 0.5, as_tuple=True)
    x1, y1, x2, y2 = box.tolist()
    return abs(xs.min() - x1) <= 1 and abs(ys.min() - y1) <= 1 and abs(xs.max() + 1 - x2) <= 1 and abs(ys.max() + 1 - y2) <= 1


def test_random_zoom_moves_boxes_with_pixels_in_and_out():
    from retinanet_lab.data import RandomZoom

    image, target = _painted([[30.0, 20, 50, 40]])
    for seed in range(20):
        torch.manual_seed(seed)
        out, t = RandomZoom((0.6, 1.6), min_visible=0.0, p=1.0)(image, target)
        assert out.shape[0] == 3 and len(t["boxes"]) == len(t["labels"])
        if len(t["boxes"]):  # the box still encloses exactly the painted pixels that are left
            assert _tight(out, t["boxes"][0], 0)
    assert target["boxes"].tolist() == [[30, 20, 50, 40]]  # the input is not modified
    zoom_out = RandomZoom((0.5, 0.5), p=1.0)
    torch.manual_seed(0)
    out, t = zoom_out(image, target)
    assert out.shape[1:] == (120, 160) and _tight(out, t["boxes"][0], 0)  # twice the canvas, same object


def test_random_zoom_drops_boxes_mostly_cut_away():
    from retinanet_lab.data import RandomZoom

    image, target = _painted([[0.0, 0, 20, 20], [60.0, 40, 80, 60]])
    kept_partial = dropped = 0
    for seed in range(40):
        torch.manual_seed(seed)
        out, t = RandomZoom((2.0, 2.0), min_visible=0.5, p=1.0)(image, target)  # a 30 x 40 window: boxes get cut
        for box, label in zip(t["boxes"], t["labels"]):
            original = target["boxes"][label - 1]
            visible = (box[2] - box[0]) * (box[3] - box[1]) / ((original[2] - original[0]) * (original[3] - original[1]))
            assert visible >= 0.5 - 1e-6
            kept_partial += bool(visible < 1)
        dropped += 2 - len(t["boxes"])
    assert kept_partial and dropped  # both happen: partly visible kept, mostly cut away dropped


def test_small_dataset_transforms_keep_valid_targets():
    from retinanet_lab.data import small_dataset_transforms

    torch.manual_seed(0)
    data = ShapesDataset(6, seed=0, image_size=96)
    tf = small_dataset_transforms()
    for i in range(6):
        image, target = tf(*data[i])
        assert image.min() >= 0 and image.max() <= 1
        b = target["boxes"]
        assert len(b) == len(target["labels"]) and ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= image.shape[-1]).all() and (b[:, 3] <= image.shape[-2]).all()


def test_photometric_keeps_boxes_and_range():
    torch.manual_seed(0)
    image, target = ShapesDataset(1, seed=0)[0]
    out, t = PhotometricJitter(0.5, 0.5, 0.5, p=1.0)(image, target)
    assert torch.equal(t["boxes"], target["boxes"]) and not torch.equal(out, image)
    assert out.min() >= 0 and out.max() <= 1


def test_split_subset_and_loader():
    ds = ShapesDataset(20, seed=0)
    train, val = split_dataset(ds, 0.25, seed=1)
    assert len(train) == 15 and len(val) == 5 and not set(train.indices) & set(val.indices)
    assert split_dataset(ds, 0.25, seed=1)[1].indices == val.indices
    assert train.class_names == ds.class_names
    assert len(subset(ds, 4)) == 4 and subset(ds, [3, 1]).indices == [3, 1]
    images, targets = next(iter(make_loader(val, batch_size=2, num_workers=0)))
    assert len(images) == 2 and images[0].shape == (3, 256, 256) and "boxes" in targets[0]


def test_every_loader_feeds_the_model(tmp_path):
    export_coco(ShapesDataset(3, seed=2, image_size=96), tmp_path / "coco", progress=False)
    _voc(tmp_path / "voc", {"a": [("cat", 0, (3, 3, 30, 30))], "b": []})
    datasets = [ShapesDataset(3, seed=2, image_size=96), CocoDataset(tmp_path / "coco" / "images", tmp_path / "coco" / "instances.json"),
                VOCDataset(tmp_path / "voc")]
    for ds in datasets:
        model = RetinaNet(ds.num_classes, backbone="resnet18", fpn_channels=32, head_channels=32, head_convs=1,
                          min_size=96, max_size=96).train()
        images, targets = next(iter(make_loader(ds, batch_size=2, num_workers=0)))
        losses = model(images, targets)
        assert all(torch.isfinite(v) for v in losses.values()), type(ds).__name__


def test_sample_grid_draws():
    import matplotlib

    matplotlib.use("Agg")
    from retinanet_lab.viz import show_sample_grid

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = show_sample_grid(ShapesDataset(6, seed=0), n=6, cols=3)
    assert len(fig.axes) == 6 and len(fig.axes[0].patches) == len(ShapesDataset(6, seed=0)[0][1]["boxes"])


def test_shapes_cache_gives_the_same_items_and_stays_intact():
    plain, cached = ShapesDataset(4, seed=8, image_size=96), ShapesDataset(4, seed=8, image_size=96, cache=True)
    for i in range(4):
        (a, ta), (b, tb) = plain[i], cached[i]
        assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])
    assert len(cached.cache) == 4
    _, t = cached[0]
    t["boxes"] += 1000  # a caller that edits its target in place must not change the dataset
    assert torch.equal(cached[0][1]["boxes"], plain[0][1]["boxes"])


@pytest.mark.parametrize("workers", [0, 2])
def test_draw_all_draws_in_worker_processes_the_images_drawn_one_by_one(workers):
    plain = ShapesDataset(70, seed=4, image_size=96)
    drawn = ShapesDataset(70, seed=4, image_size=96, cache=True)
    drawn[5]  # one already cached: drawn again by nobody
    kept = drawn.cache[5]
    assert drawn.draw_all(num_workers=workers) is drawn and sorted(drawn.cache) == list(range(70))
    assert drawn.cache[5] is kept
    for i in (0, 5, 33, 69):  # 70 images > 64: the workers draw them
        (a, ta), (b, tb) = plain[i], drawn[i]
        assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])
    with pytest.raises(ValueError, match="cache=True"):
        plain.draw_all()
