"""Build the photo dataset: a small, real, single-class ("coin") detection dataset made offline from the
photographs that ship inside scikit-image, shaped like a student's first own dataset (a few dozen 400 px
images, small objects of 15-60 px), with a held-out evaluation split that shares no pixel with training.

    pip install scikit-image==0.26.*          # only to regenerate; the dataset itself is committed
    python assets/make_photo_dataset.py       # about 5 seconds on a 2-core CPU

writes retinanet_lab/assets/photos/{train,eval}/images/*.jpg and instances.json (COCO, as CocoDataset reads
it), retinanet_lab/assets/photos/README.md (sources, licences, split, counts) and assets/photos_boxes.png (every
image of both splits with its boxes, and the source photo with its coins and the split). `--sheets DIR`
also writes every image at full size with its boxes, a dozen to a sheet, for checking the boxes by eye.

How it is made (deterministic: numpy's default_rng with fixed seeds; same scikit-image and Pillow, same bytes):

1. The coins. `skimage.data.coins()` (303 x 384, grayscale, 24 Greek coins) is segmented as in
   scikit-image's coins tutorial: Sobel elevation map, watershed from markers (background < 30, coin > 150),
   holes filled, connected components. Each coin's box is the bounding box of its region (the coin's edge is
   where the gradient peaks); the script checks that it finds exactly 24 coins, 30-70 px across (they are 35-65).
2. The split is by region of each source photo, so no evaluation pixel is ever in a training image: for the
   coins, the right third of the top three rows (x >= 243, y < 225: 6 coins) is evaluation-only, the rest
   (18 coins) training-only; for every other photo, the right third is evaluation-only. The script checks
   that no coin reaches across the line.
3. Every image is 400 x 400 and a mosaic of rectangular tiles of 48-240 px (a guillotine cut of the square); each
   tile is a crop of one source photo, taken only from that photo's region of the split, rescaled to the tile.
   Coin tiles are rescaled by 0.45-0.9, so coins are 16-59 px across in the images; tiles of the other photos
   (astronaut, coffee, chelsea, rocket, camera) carry no object. Negative images are mosaics of those only.
   The crop is cut from the array before it is resampled, so a tile holds no pixel from outside its crop.
4. Cut coins: a tile may cut a coin only if at least 3/4 of the coin's pixels stay in it (its box is then the
   bounding box of the visible part); a crop that would leave a smaller piece of any coin, down to a sliver
   of its rim, is drawn again. So every piece of coin in an image is boxed, and every box holds at least
   3/4 of a coin.
5. All images are grayscale (the coins photo is a grayscale scan; the other photos are converted with
   skimage.color.rgb2gray so colour cannot tell a coin tile from the rest), saved as 8-bit grayscale JPEG,
   quality 90. CocoDataset reads them as RGB.
6. Each image's COCO entry records its tiles ("tiles": source photo, crop rectangle in that photo's pixels
   [x0, y0, x1, y1), and the tile's rectangle in the image); each annotation records which of the 24 coins
   it is ("coin") and the fraction of it that is visible ("visible"). tests/test_photo_dataset.py checks from
   these that no training crop overlaps an evaluation crop of the same photo.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = ROOT / "retinanet_lab" / "assets" / "photos"
PICTURE = HERE / "photos_boxes.png"

SIZE = 400  # every image is SIZE x SIZE
COUNTS = {"train": (36, 4), "eval": (13, 3)}  # (positive images, negative images)
SEEDS = {"train": 0, "eval": 1}
COIN_SCALE = (0.45, 0.9)  # coins are 35-65 px in the photo: 16-59 px in the images
OTHER_SCALE = (0.4, 1.5)
MIN_TILE, MAX_TILE = 48, 240
BAND_PROB = 0.25
MAX_COINS_PER_TILE = 6  # as many as the evaluation region holds: train and eval tiles look alike
COIN_TILE_PROB = 0.4  # in a positive image, the chance that a tile is a coin tile
MIN_VISIBLE = 0.75  # a tile may cut a coin only if at least this fraction of its pixels stays in
JPEG_QUALITY = 90

# the evaluation-only region of the coins photo: the right third of the top three rows. The line x = 243 runs
# between the 4th and 5th columns (coins end at x = 239, start at 245), y = 225 between the 3rd and 4th rows
# (218 and 233); in the bottom row, a coin straddles x = 243, so the bottom row stays whole in training.
COIN_EVAL_RECTS = [(243, 0, 384, 225)]
COIN_TRAIN_RECTS = [(0, 0, 243, 303), (0, 225, 384, 303)]
OTHER_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")

SOURCES = {  # from the docstrings of skimage.data (scikit-image 0.26), which ships these files in skimage/data/
    "coins": ("coins.png", "Greek coins from Pompeii, Brooklyn Museum Collection "
              "(https://www.brooklynmuseum.org/opencollection/archives/image/51611)", "no known copyright restrictions"),
    "astronaut": ("astronaut.png", "Eileen Collins, NASA Great Images database (https://flic.kr/p/r9qvLn)",
                  "no known copyright restrictions, released into the public domain"),
    "coffee": ("coffee.png", "coffee cup, courtesy of Pikolo Espresso Bar, photographed by Rachel Michetti",
               "no copyright restrictions, CC0 by the photographer"),
    "chelsea": ("chelsea.png", "Chelsea the cat, photographed by Stefan van der Walt",
                "no copyright restrictions, CC0 by the photographer"),
    "rocket": ("rocket.jpg", "launch of DSCOVR on Falcon 9, SpaceX Photos "
               "(https://www.flickr.com/photos/spacexphotos/16511594820/)", "released into the public domain by SpaceX"),
    "camera": ("camera.png", "man with a camera, photographed by Lav Varshney",
               "no copyright restrictions, CC0 by the photographer"),
}


# ---------------------------------------------------------------------------------------------- sources and coins

def load_photos() -> dict[str, np.ndarray]:
    """Every source photo as a 2-D uint8 grayscale array."""
    from skimage import color, data

    photos = {}
    for name in SOURCES:
        img = getattr(data, name)()
        if img.ndim == 3:
            img = np.round(color.rgb2gray(img[..., :3]) * 255).astype(np.uint8)
        photos[name] = img
    return photos


def segment_coins(coins: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """scikit-image's coins tutorial: Sobel elevation, watershed from markers, holes filled, components.
    Returns the label image (coins numbered 1..24 in reading order: by row, then left to right) and, per coin,
    its box [x0, y0, x1, y1) in the photo's pixel edges and its area."""
    from scipy import ndimage as ndi
    from skimage import filters, measure, segmentation

    markers = np.zeros_like(coins)
    markers[coins < 30] = 1
    markers[coins > 150] = 2
    mask = ndi.binary_fill_holes(segmentation.watershed(filters.sobel(coins), markers) == 2)
    labels, _ = ndi.label(mask)
    regions = [r for r in measure.regionprops(labels) if r.area >= 200]  # specks of a few pixels are not coins
    rows = sorted(regions, key=lambda r: r.centroid[0])
    ordered, row = [], []
    for r in rows:  # group into rows by centroid (rows are ~70 px apart), then sort each row left to right
        if row and r.centroid[0] - row[0].centroid[0] > 35:
            ordered += sorted(row, key=lambda q: q.centroid[1])
            row = []
        row.append(r)
    ordered += sorted(row, key=lambda q: q.centroid[1])
    out = np.zeros_like(labels)
    coins_info = []
    for k, r in enumerate(ordered, start=1):
        out[labels == r.label] = k
        y0, x0, y1, x1 = r.bbox
        coins_info.append({"coin": k, "box": [int(x0), int(y0), int(x1), int(y1)], "area": int(r.area)})
    sizes = [max(c["box"][2] - c["box"][0], c["box"][3] - c["box"][1]) for c in coins_info]
    if len(coins_info) != 24 or min(sizes) < 30 or max(sizes) > 70:
        raise RuntimeError(f"expected the photo's 24 coins of 35-65 px, segmented {len(coins_info)} of {sizes}")
    return out, coins_info


def inside(box, rect, margin: int = 0) -> bool:
    return box[0] >= rect[0] + margin and box[1] >= rect[1] + margin and box[2] <= rect[2] - margin and box[3] <= rect[3] - margin


def overlaps(a, b, margin: int = 0) -> bool:
    return a[0] < b[2] + margin and b[0] < a[2] + margin and a[1] < b[3] + margin and b[1] < a[3] + margin


def split_rects(photos) -> dict[str, dict[str, list[tuple[int, int, int, int]]]]:
    """Per split, per source photo, the rectangles [x0, y0, x1, y1) its crops come from."""
    rects = {"train": {"coins": COIN_TRAIN_RECTS}, "eval": {"coins": COIN_EVAL_RECTS}}
    for name in OTHER_PHOTOS:
        h, w = photos[name].shape
        cut = (2 * w) // 3
        rects["train"][name], rects["eval"][name] = [(0, 0, cut, h)], [(cut, 0, w, h)]
    for name in SOURCES:  # the two splits' regions never overlap
        assert not any(overlaps(a, b) for a in rects["train"][name] for b in rects["eval"][name]), name
    return rects


def check_coin_split(coins_info) -> dict[str, list[int]]:
    """Which coins each split holds; every coin is 2 px or more away from the other split's regions."""
    held = {"train": [], "eval": []}
    for c in coins_info:
        in_eval = any(overlaps(c["box"], r, margin=2) for r in COIN_EVAL_RECTS)
        in_train = any(overlaps(c["box"], r, margin=2) for r in COIN_TRAIN_RECTS)
        if in_eval == in_train or (in_eval and not any(inside(c["box"], r) for r in COIN_EVAL_RECTS)):
            raise RuntimeError(f"coin {c['coin']} at {c['box']} is not clear of the split line")
        held["eval" if in_eval else "train"].append(c["coin"])
    return held


# ---------------------------------------------------------------------------------------------- images

def guillotine(rng, rect, depth: int = 0) -> list[tuple[int, int, int, int]]:
    """Cut `rect` into tiles: always while a side is over MAX_TILE, else with probability 1/2 down to depth 3."""
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    vertical = w > h or (w == h and rng.random() < 0.5)
    side = w if vertical else h
    if side >= 2 * MIN_TILE and (max(w, h) > MAX_TILE or (depth < 2 and rng.random() < 0.5)):
        if rng.random() < BAND_PROB:  # a band 48-70 px wide along one edge (the bottom row of coins fits only in those)
            band = int(rng.integers(MIN_TILE, 71))
            cut = band if rng.random() < 0.5 else side - band
        else:
            cut = int(round(side * rng.uniform(0.35, 0.65)))
        cut = min(max(cut, MIN_TILE), side - MIN_TILE)
        if vertical:
            return guillotine(rng, (x0, y0, x0 + cut, y1), depth + 1) + guillotine(rng, (x0 + cut, y0, x1, y1), depth + 1)
        return guillotine(rng, (x0, y0, x1, y0 + cut), depth + 1) + guillotine(rng, (x0, y0 + cut, x1, y1), depth + 1)
    return [rect]


def index_coins(labels: np.ndarray, coins_info) -> tuple:
    """What `visible_coins` needs: the label image, each coin's box and area, and per label (0 = background) the
    summed-area tables of its mask and of its mask grown by 2 px, so that a crop's pixel count of every coin
    takes four look-ups instead of a pass over the crop (tens of thousands of crops are tried)."""
    from scipy import ndimage as ndi

    dilated = ndi.grey_dilation(labels, size=(5, 5))  # each coin's mask grown by 2 px (coins are farther apart)
    ks = np.arange(len(coins_info) + 1)[:, None, None]
    tables = []
    for lab in (labels, dilated):
        t = np.zeros((len(ks), lab.shape[0] + 1, lab.shape[1] + 1), np.int32)
        t[:, 1:, 1:] = (lab[None] == ks).cumsum(1).cumsum(2)
        tables.append(t)
    boxes = [None] + [c["box"] for c in coins_info]
    areas = np.array([0] + [c["area"] for c in coins_info], dtype=np.float64)
    return labels, boxes, areas, tables[0], tables[1]


def visible_coins(coins, crop):
    """For a crop [x0, y0, x1, y1): None if it cuts a coin leaving less than MIN_VISIBLE of it (or a sliver of a
    coin's rim, seen with the masks dilated by 2 px), else [(coin, fraction visible, box of the visible part)]."""
    labels, boxes, areas, table, dilated_table = coins
    x0, y0, x1, y1 = crop
    window = lambda t: t[:, y1, x1] - t[:, y0, x1] - t[:, y1, x0] + t[:, y0, x0]  # pixels of each label in the crop
    present = np.flatnonzero(window(dilated_table)[1:]) + 1
    fracs = window(table)[present] / areas[present]
    if (fracs < MIN_VISIBLE).any():
        return None
    out = []
    for k, frac in zip(present, fracs):
        bx0, by0, bx1, by1 = boxes[k]
        ox, oy = max(x0, bx0), max(y0, by0)  # the coin's pixels in the crop lie in its box
        ys, xs = np.nonzero(labels[oy:min(y1, by1), ox:min(x1, bx1)] == k)
        out.append((int(k), float(frac), (ox + xs.min(), oy + ys.min(), ox + xs.max() + 1, oy + ys.max() + 1)))
    return out


def draw_crop(rng, rects, tile_w, tile_h, scale_range):
    """A random crop of one of `rects` that rescales to tile_w x tile_h by a factor in scale_range, or None."""
    lo, hi = scale_range
    options = []
    for r in rects:
        need = max(tile_w / (r[2] - r[0]), tile_h / (r[3] - r[1]))
        if max(lo, need) <= hi:
            options.append((r, max(lo, need)))
    if not options:
        return None
    rect, s_lo = options[rng.integers(len(options))]
    s = float(np.exp(rng.uniform(np.log(s_lo), np.log(hi))))
    cw, ch = min(int(round(tile_w / s)), rect[2] - rect[0]), min(int(round(tile_h / s)), rect[3] - rect[1])
    x0 = int(rng.integers(rect[0], rect[2] - cw + 1))
    y0 = int(rng.integers(rect[1], rect[3] - ch + 1))
    return (x0, y0, x0 + cw, y0 + ch)


def coin_crop(rng, rects, coins, tw, th):
    """A crop of the coins photo for a tw x th tile that cuts no coin below MIN_VISIBLE and holds 1 to
    MAX_COINS_PER_TILE coins: (crop, visible coins), or None."""
    for _try in range(300):
        crop = draw_crop(rng, rects["coins"], tw, th, COIN_SCALE)
        if crop is None:  # the tile is too large for the split's coin regions at any allowed scale
            return None
        vis = visible_coins(coins, crop)
        if vis and len(vis) <= MAX_COINS_PER_TILE:
            return crop, vis
    return None


def other_crop(rng, rects, tw, th):
    for _try in range(300):
        name = OTHER_PHOTOS[int(rng.integers(len(OTHER_PHOTOS)))]
        crop = draw_crop(rng, rects[name], tw, th, OTHER_SCALE)
        if crop is not None:
            return name, crop
    raise RuntimeError(f"no crop of the other photos fits a {tw} x {th} tile")


def fill(rng, rects, coins, tile, kind: str) -> tuple:
    """(tile, source, crop, visible coins) for one tile of the layout. A coin tile that cannot take a coin crop
    (too large for the split's coin regions at any allowed scale, or no crop that keeps the rules in 300 tries)
    becomes a tile of another photo."""
    tw, th = tile[2] - tile[0], tile[3] - tile[1]
    if kind == "coins":
        found = coin_crop(rng, rects, coins, tw, th)
        if found is not None:
            return tile, "coins", found[0], found[1]
    name, crop = other_crop(rng, rects, tw, th)
    return tile, name, crop, []


def make_image(rng, photos, rects, coins, positive: bool):
    """One SIZE x SIZE mosaic: (pixels, tiles, objects)."""
    for _attempt in range(100):
        layout = guillotine(rng, (0, 0, SIZE, SIZE))
        kinds = ["coins" if positive and rng.random() < COIN_TILE_PROB else "other" for _ in layout]
        if positive and "coins" not in kinds:
            kinds[int(rng.integers(len(kinds)))] = "coins"
        pieces = [fill(rng, rects, coins, tile, kind) for tile, kind in zip(layout, kinds)]
        if positive and not any(vis for *_, vis in pieces):
            continue
        canvas = np.zeros((SIZE, SIZE), np.uint8)
        tiles, objects = [], []
        for (tx0, ty0, tx1, ty1), name, (cx0, cy0, cx1, cy1), vis in pieces:
            tw, th = tx1 - tx0, ty1 - ty0
            piece = Image.fromarray(photos[name][cy0:cy1, cx0:cx1])  # cut first: no pixel from outside the crop
            canvas[ty0:ty1, tx0:tx1] = np.asarray(piece.resize((tw, th), Image.Resampling.LANCZOS))
            sx, sy = tw / (cx1 - cx0), th / (cy1 - cy0)
            tiles.append({"source": name, "crop": [cx0, cy0, cx1, cy1], "tile": [tx0, ty0, tx1, ty1]})
            for coin, frac, (bx0, by0, bx1, by1) in vis:
                box = [tx0 + (bx0 - cx0) * sx, ty0 + (by0 - cy0) * sy, tx0 + (bx1 - cx0) * sx, ty0 + (by1 - cy0) * sy]
                objects.append({"coin": coin, "visible": round(frac, 3), "box": [round(v, 2) for v in box]})
        return canvas, tiles, objects
    raise RuntimeError("could not lay out an image with coins")


def build_split(split: str, photos, rects, coins, out_dir: Path) -> dict:
    rng = np.random.default_rng(SEEDS[split])
    n_pos, n_neg = COUNTS[split]
    positive = np.array([True] * n_pos + [False] * n_neg)
    positive = positive[rng.permutation(len(positive))]
    images, annotations = [], []
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    for old in (out_dir / "images").glob("*.jpg"):
        old.unlink()
    for i, pos in enumerate(positive):
        pixels, tiles, objects = make_image(rng, photos, rects[split], coins, bool(pos))
        name = f"{split}_{i:03d}.jpg"
        Image.fromarray(pixels).save(out_dir / "images" / name, quality=JPEG_QUALITY)
        image_id = i + 1
        images.append({"id": image_id, "file_name": name, "width": SIZE, "height": SIZE, "tiles": tiles})
        for obj in objects:
            x0, y0, x1, y1 = obj["box"]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                                "area": round((x1 - x0) * (y1 - y0), 2), "iscrowd": 0,
                                "coin": obj["coin"], "visible": obj["visible"]})
    data = {"info": {"description": f"retinanet_lab photo dataset, {split} split: coins (scikit-image's coins.png) in "
                                    "mosaics of crops of scikit-image's bundled photos; see README.md",
                     "made_by": "python assets/make_photo_dataset.py"},
            "images": images, "annotations": annotations, "categories": [{"id": 1, "name": "coin"}]}
    with open(out_dir / "instances.json", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=None, separators=(",", ":"))
        f.write("\n")
    return data


# ---------------------------------------------------------------------------------------------- pictures, README

def draw_image(path: Path, anns, scale: float = 1.0) -> Image.Image:
    img = Image.open(path).convert("RGB")
    if scale != 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
    d = ImageDraw.Draw(img)
    for a in anns:  # the box's outline is drawn on the pixels just outside it, so the coin's edge stays visible
        x, y, w, h = (v * scale for v in a["bbox"])
        d.rectangle([round(x) - 1, round(y) - 1, round(x + w), round(y + h)], outline=(255, 40, 40))
    return img


def source_panel(photos, coins_info, held, zoom: int = 2) -> Image.Image:
    img = Image.fromarray(photos["coins"]).convert("RGB").resize((384 * zoom, 303 * zoom), Image.Resampling.NEAREST)
    d = ImageDraw.Draw(img)
    for r in COIN_EVAL_RECTS:
        d.rectangle([r[0] * zoom, r[1] * zoom, r[2] * zoom - 1, r[3] * zoom - 1], outline=(60, 140, 255), width=3)
    for c in coins_info:
        x0, y0, x1, y1 = c["box"]
        color = (60, 140, 255) if c["coin"] in held["eval"] else (255, 40, 40)
        d.rectangle([x0 * zoom - 1, y0 * zoom - 1, x1 * zoom, y1 * zoom], outline=color)
        d.text((x0 * zoom + 2, y0 * zoom + 1), str(c["coin"]), fill=(255, 255, 0))
    return img


def write_picture(photos, coins_info, held, datasets, path: Path, scale: float = 0.5, cols: int = 8) -> None:
    """The source photo with its 24 coins (blue: evaluation-only region and coins) above every image of both
    splits at `scale` with its boxes."""
    cell = round(SIZE * scale)
    pad, label_h = 6, 14
    panel = source_panel(photos, coins_info, held)
    blocks = []
    for split, (data, folder) in datasets.items():
        by_image = {}
        for a in data["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        rows = (len(data["images"]) + cols - 1) // cols
        block = Image.new("RGB", (cols * (cell + pad) + pad, label_h + 4 + rows * (cell + label_h + pad)), (255, 255, 255))
        d = ImageDraw.Draw(block)
        d.text((pad, 2), f"{split}: {len(data['images'])} images, {len(data['annotations'])} coins", fill=(0, 0, 0))
        for i, im in enumerate(data["images"]):
            x = pad + (i % cols) * (cell + pad)
            y = label_h + 4 + (i // cols) * (cell + label_h + pad)
            anns = by_image.get(im["id"], [])
            d.text((x, y), f"{im['file_name']}  ({len(anns)})", fill=(0, 0, 0))
            block.paste(draw_image(folder / "images" / im["file_name"], anns, scale), (x, y + label_h))
        blocks.append(block)
    width = max(panel.width + 2 * pad, *(b.width for b in blocks))
    head_h = panel.height + 2 * pad + label_h
    out = Image.new("RGB", (width, head_h + sum(b.height for b in blocks)), (255, 255, 255))
    ImageDraw.Draw(out).text((pad, 2), "coins.png (2x): the 24 coins and their boxes; blue = evaluation-only region "
                                       "and its 6 coins, red = training coins", fill=(0, 0, 0))
    out.paste(panel, (pad, label_h + pad))
    y = head_h
    for b in blocks:
        out.paste(b, (0, y))
        y += b.height
    tmp = path.with_suffix(".tmp.png")
    out.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(tmp, optimize=True)
    os.replace(tmp, path)


def write_sheets(datasets, folder: Path, per_sheet: int = 12, cols: int = 4) -> None:
    """Every image at full size with its boxes, `per_sheet` to a sheet: for checking boxes by eye."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, (data, root) in datasets.items():
        by_image = {}
        for a in data["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        for s in range(0, len(data["images"]), per_sheet):
            chunk = data["images"][s:s + per_sheet]
            rows = (len(chunk) + cols - 1) // cols
            sheet = Image.new("RGB", (cols * (SIZE + 8), rows * (SIZE + 22)), (255, 255, 255))
            d = ImageDraw.Draw(sheet)
            for i, im in enumerate(chunk):
                x, y = (i % cols) * (SIZE + 8), (i // cols) * (SIZE + 22)
                d.text((x + 2, y + 4), f"{im['file_name']} ({len(by_image.get(im['id'], []))})", fill=(0, 0, 0))
                sheet.paste(draw_image(root / "images" / im["file_name"], by_image.get(im["id"], [])), (x, y + 20))
            sheet.save(folder / f"{split}_{s // per_sheet}.png")


def stats(data) -> dict:
    sizes = [max(a["bbox"][2], a["bbox"][3]) for a in data["annotations"]]
    shortest = [min(a["bbox"][2], a["bbox"][3]) for a in data["annotations"]]
    with_objects = {a["image_id"] for a in data["annotations"]}
    return {"images": len(data["images"]), "negatives": len(data["images"]) - len(with_objects),
            "objects": len(data["annotations"]), "coins": sorted({a["coin"] for a in data["annotations"]}),
            "cut": sum(a["visible"] < 1 for a in data["annotations"]),
            "per_image": (min(sum(a["image_id"] == i for a in data["annotations"]) for i in with_objects),
                          max(sum(a["image_id"] == i for a in data["annotations"]) for i in with_objects)),
            "long_side": (min(sizes), max(sizes)), "short_side": (min(shortest), max(shortest)),
            "tiles": (min(len(im["tiles"]) for im in data["images"]), max(len(im["tiles"]) for im in data["images"])),
            "tile_side": (min(min(t["tile"][2] - t["tile"][0], t["tile"][3] - t["tile"][1]) for im in data["images"] for t in im["tiles"]),
                          max(max(t["tile"][2] - t["tile"][0], t["tile"][3] - t["tile"][1]) for im in data["images"] for t in im["tiles"]))}


README = """# The photo dataset: coins

A small, real, single-class detection dataset, shaped like a student's first dataset of their own: a few dozen
400 x 400 px images, one class (`coin`), small objects ({lo:.0f}-{hi:.0f} px across), and an evaluation split
that shares no pixel with training. It is made offline from photographs that ship inside scikit-image.

    from retinanet_lab.data import photo_dataset
    train, val = photo_dataset("train"), photo_dataset("eval")     # CocoDataset objects

{table}

Boxes per image with coins: {tr[per_image][0]}-{tr[per_image][1]} (train), {ev[per_image][0]}-{ev[per_image][1]} (eval). The short
side of a box is {smin:.1f} px or more (the smallest coins at the smallest scale, or a coin cut by a tile edge).
The evaluation coins are 6 physical coins,
each seen many times at different scales and crops: evaluation numbers measure how well the model finds
*unseen coins* on seen kinds of background, not a large test set; read differences of a few AP points as noise.

## Layout

    retinanet_lab/assets/photos/            (inside the package: it comes with `pip install`)
        README.md                           this file
        train/images/train_000.jpg ...      400 x 400, 8-bit grayscale JPEG, quality 90
        train/instances.json                COCO: images, annotations (bbox = [x, y, w, h]), categories [{{id 1, coin}}]
        eval/images/eval_000.jpg ...
        eval/instances.json
    assets/photos_boxes.png                 every image of both splits with its boxes, and the source photo
    assets/make_photo_dataset.py            the script that makes all of it

Extra fields, which CocoDataset and pycocotools ignore: each image has `"tiles"`, a list of
`{{"source": photo, "crop": [x0, y0, x1, y1], "tile": [x0, y0, x1, y1]}}` (the crop in the source photo's pixels,
end-exclusive, and where it went in the image); each annotation has `"coin"` (which of the photo's 24 coins,
numbered by row, then left to right, as in photos_boxes.png) and `"visible"` (the fraction of that coin's
pixels in the image).

## How it is made

1. **Coins and their boxes.** `skimage.data.coins()` (303 x 384 px, grayscale, 24 Greek coins) is segmented as in
   scikit-image's coins tutorial: a Sobel elevation map, a watershed from markers (background where the photo is
   darker than 30, coin where it is brighter than 150), holes filled, connected components. Each coin's box is
   the bounding box of its region: 35-65 px across in the photo. No box was drawn or moved by hand; they were
   checked by eye (below).
2. **The split is by region of each photo**, so that no pixel of an evaluation image is in a training image:
   in the coins photo, the right third of the top three rows (x >= 243, y < 225, 6 coins: {evheld} in the
   picture's numbering) is evaluation-only; everything else (18 coins) is training-only. The lines run through
   the background between coins (x = 243 between the 4th and 5th columns, which end at x = 239 and start at 245;
   y = 225 between the 3rd and 4th rows); the bottom row stays whole in training because one of its coins
   straddles x = 243. In every other photo, the right third (x >= 2/3 of the width) is evaluation-only.
3. **Images are mosaics of crops.** The coins photo is smaller than one 400 px image, so an image with 15-60 px
   coins cannot be a single crop of it: every image is a 400 x 400 mosaic of {tiles_lo} to {tiles_hi} rectangular tiles (a
   guillotine cut of the square, tiles {side_lo}-{side_hi} px). Each tile is a crop of one photo, taken only from that
   photo's region of the split, cut out of the array and then resized to the tile (Lanczos), so a tile holds no pixel
   from outside its crop. Coin tiles are scaled by 0.45-0.9, so the coins are 16-59 px across, and hold 1 to
   {max_per_tile} coins; in an image with coins, each tile is meant to be a coin tile with probability {coin_tile_prob}
   (at least one per image), and one too large for the split's coin region at those scales, or with no crop that
   keeps rule 4, becomes a tile of another photo. Tiles of the other photos carry no object; the images
   without any coin are mosaics of those only. The tile edges are visible seams: this is a collage of real
   photographs with exact boxes, not a photograph of a scene.
4. **Coins cut by a tile edge.** A crop may cut a coin only if at least {min_visible} of the coin's pixels stay in the
   tile; its box is then the bounding box of the visible part (clipped, never extrapolated). A crop that would
   leave less than {min_visible} of any coin (down to a sliver of its rim: the check uses the coin masks dilated by
   2 px) is drawn again. So every piece of coin in an image is boxed and every box holds at least {min_visible} of a
   coin (the least visible: {vis_min:.0%}).
5. **Grayscale.** The coins photo is a grayscale scan; the other photos are converted with
   `skimage.color.rgb2gray`, so that colour cannot tell a coin tile from the rest.

Deterministic: numpy `default_rng` seeds 0 (train) and 1 (eval); with the same scikit-image (0.26) and Pillow,
the script writes the same files.

## How the boxes were checked

`assets/photos_boxes.png` shows the coins photo at 2x with its 24 boxes (blue: the evaluation-only region and its
coins) and every image of both splits with its boxes. The segmentation was checked coin by coin at 5x and 10x
(every coin found, one box per coin, nothing else boxed, each box on the coin's edge to about 1 px: the edge is
where the brightness gradient peaks), and every image of both splits at full size
(`python assets/make_photo_dataset.py --sheets DIR`): every coin and every piece of a coin boxed, boxes on
the coins, none on the other photos' tiles.

## Sources and licences

All from the docstrings of `skimage.data` in scikit-image 0.26, which ships these files in `skimage/data/`
(scikit-image itself is BSD-3-Clause):

| photo | file | what, from where | licence |
| --- | --- | --- | --- |
{sources}

## Regenerate

    pip install scikit-image==0.26.*       # only to regenerate (not a dependency of the package)
    python assets/make_photo_dataset.py    # seconds; add --sheets DIR for the full-size check sheets

It rewrites `retinanet_lab/assets/photos/` (images, instances.json, this README) and `assets/photos_boxes.png`;
tests/test_photo_dataset.py checks the counts and sizes above, that every box lies in its image, and, from
the `tiles` fields, that no training crop overlaps an evaluation crop of the same photo.
"""


def write_readme(datasets, held, path: Path) -> None:
    both = {split: stats(data) for split, (data, _) in datasets.items()}
    tr, ev = both["train"], both["eval"]
    table = ["| split | images | of which without any coin | coins (boxes) | distinct coins of the photo | coins cut by a tile edge "
             "| box size (long side) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for split, s in both.items():
        coins = f"{len(s['coins'])} (coins {', '.join(map(str, s['coins']))})"
        table.append(f"| {split} | {s['images']} | {s['negatives']} | {s['objects']} | {coins} | {s['cut']} "
                     f"| {s['long_side'][0]:.1f}-{s['long_side'][1]:.1f} px |")
    sources = "\n".join(f"| {name} | `{f}` | {what} | {lic} |" for name, (f, what, lic) in SOURCES.items())
    annotations = [a for data, _ in datasets.values() for a in data["annotations"]]
    text = README.format(
        lo=min(tr["long_side"][0], ev["long_side"][0]), hi=max(tr["long_side"][1], ev["long_side"][1]), table="\n".join(table),
        tr=tr, ev=ev, evheld=", ".join(map(str, held["eval"])), smin=min(tr["short_side"][0], ev["short_side"][0]),
        tiles_lo=min(tr["tiles"][0], ev["tiles"][0]), tiles_hi=max(tr["tiles"][1], ev["tiles"][1]),
        side_lo=min(tr["tile_side"][0], ev["tile_side"][0]), side_hi=max(tr["tile_side"][1], ev["tile_side"][1]),
        max_per_tile=MAX_COINS_PER_TILE, coin_tile_prob=COIN_TILE_PROB, min_visible=f"{MIN_VISIBLE:.0%}",
        vis_min=min(a["visible"] for a in annotations), sources=sources)
    path.write_text(text, encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(OUT), help="dataset folder (default: retinanet_lab/assets/photos)")
    parser.add_argument("--picture", default=str(PICTURE), help="the picture of every image with its boxes")
    parser.add_argument("--sheets", default=None, help="also write full-size sheets of every image with its boxes here")
    args = parser.parse_args(argv)
    photos = load_photos()
    labels, coins_info = segment_coins(photos["coins"])
    held = check_coin_split(coins_info)
    rects = split_rects(photos)
    coins = index_coins(labels, coins_info)
    out = Path(args.out)
    datasets = {}
    for split in ("train", "eval"):
        datasets[split] = (build_split(split, photos, rects, coins, out / split), out / split)
        s = stats(datasets[split][0])
        print(f"{split}: {s['images']} images ({s['negatives']} without coins), {s['objects']} boxes of coins {s['coins']}, "
              f"long side {s['long_side'][0]:.1f}-{s['long_side'][1]:.1f} px, {s['per_image']} per image")
    assert set(stats(datasets["train"][0])["coins"]) <= set(held["train"])
    assert set(stats(datasets["eval"][0])["coins"]) <= set(held["eval"])
    write_readme(datasets, held, out / "README.md")
    write_picture(photos, coins_info, held, datasets, Path(args.picture))
    print("wrote", out, "and", args.picture)
    if args.sheets:
        write_sheets(datasets, Path(args.sheets))
        print("wrote check sheets to", args.sheets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
