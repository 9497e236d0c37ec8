"""The `retinanet-lab` command line.

    retinanet-lab demo      the main job: the shipped classroom model detects shapes in fresh images,
                            scored with COCO mAP, drawn to demo.png (offline, CPU, seconds)
    retinanet-lab tour      build a paper-size RetinaNet, prove it equals torchvision's, show its anatomy,
                            what the prior bias does, and draw the anchor assignment
    retinanet-lab info      the anatomy tables of any configuration
    retinanet-lab train     train (shapes world, a COCO or VOC folder, Penn-Fudan) with a preset
    retinanet-lab eval      COCO mAP of a checkpoint on a dataset
    retinanet-lab predict   detections on image files: PNGs with boxes and a JSON
    retinanet-lab anchors   how well an anchor configuration covers a dataset's objects
    retinanet-lab lessons   a fresh copy of the lessons for a student (or, with --teacher, the teacher's edition)
    retinanet-lab voila     a lesson as an app without its code, for a projector (Voila, offline)

A mistake of the user's (a missing or wrong file, a file that is not a checkpoint, malformed annotations,
an empty dataset, an option out of range) is said in one or two lines on stderr, naming the file or
option, with exit status 2; `--debug` shows its traceback. Anything else is a bug and shows a traceback.
PyTorch is imported by the commands, not here, so that `--help` answers at once.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

from . import seeds
from .errors import PATH_ERRORS, UserError

BACKBONES = ("resnet_tiny", "resnet18", "resnet34", "resnet50", "resnet101")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


PRESET_NAMES = ("classroom", "classroom_fast", "paper")  # retinanet_lab.presets.PRESETS (not imported: help stays fast)


def _synthetic_scene(height: int, width: int, seed: int = 0):
    """A noisy image with a few filled rectangles and their boxes (labels 1..3)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    img = 0.4 + 0.1 * torch.rand(3, height, width, generator=g)
    boxes, labels = [], []
    for k, (x1, y1, x2, y2) in enumerate([(0.08, 0.1, 0.4, 0.55), (0.55, 0.2, 0.93, 0.45), (0.3, 0.65, 0.45, 0.9)]):
        box = torch.tensor([x1 * width, y1 * height, x2 * width, y2 * height])
        colour = torch.rand(3, generator=g)
        img[:, int(box[1]):int(box[3]), int(box[0]):int(box[2])] = colour[:, None, None]
        boxes.append(box)
        labels.append(k + 1)
    return img.clamp(0, 1), {"boxes": torch.stack(boxes), "labels": torch.tensor(labels)}


def cmd_info(args) -> int:
    from . import anatomy
    from .model import RetinaNet

    model = RetinaNet(args.num_classes, backbone=args.backbone, fpn_channels=args.fpn_channels,
                      head_channels=args.fpn_channels, min_size=args.size, max_size=args.size)
    print(f"RetinaNet, {args.backbone}, {args.num_classes} classes, input {args.size}x{args.size}\n")
    print(anatomy.format_table(anatomy.level_table(model, args.size, args.size)))
    print()
    print(anatomy.format_table(anatomy.parameter_table(model)))
    return 0


def cmd_demo(args) -> int:
    import time

    from .classroom import classroom_model_info, load_classroom_model
    from .data import ShapesDataset
    from .evaluate import coco_ground_truth, predict, score_detections
    from .presets import preset

    model = load_classroom_model()
    info = classroom_model_info()
    print(f"1. The classroom model (assets/{info['checkpoint']}): RetinaNet, {info['backbone']}, "
          f"{info['parameters'] / 1e6:.1f}M parameters, {model.num_classes} classes ({', '.join(model.class_names)}),\n"
          f"   trained from scratch on {info['train_images']} shapes images for {info['steps']} steps in "
          f"{info['train_seconds']:.0f} s on a {info['machine']} (regenerate: {info['command']})")
    data = ShapesDataset(args.num_images, seed=seeds.DEMO + args.seed, **preset("classroom")["data"])
    print(f"2. Detecting objects in {len(data)} freshly drawn shapes images (seed {seeds.DEMO + args.seed}, never seen in training)")
    for i in range(len(data)):  # draw them first (the dataset keeps them), so that the timing is the detector's alone
        data[i]
    t0 = time.perf_counter()
    detections = predict(model, data, batch_size=16, progress=False)
    seconds = time.perf_counter() - t0
    r = score_detections(coco_ground_truth(data), detections)
    print(f"   {len(data) / seconds:.0f} images/s on this CPU; COCO mAP: AP {r['AP']:.3f}  AP50 {r['AP50']:.3f}  "
          f"AP75 {r['AP75']:.3f}  (APs {r['APs']:.3f}  APm {r['APm']:.3f}  APl {r['APl']:.3f})")
    print("   per class: " + ", ".join(f"{n} {ap:.2f}" for n, ap in r["per_class_AP"].items()))
    if args.out:
        _draw_detections(data, detections, model.class_names, args.out)
        print(f"3. Picture of the first 8 images written to {args.out} (thick: detections above 0.5; thin dashed: ground truth)")
    print("\nNext: `retinanet-lab lessons ~/course && jupyter lab ~/course` for the lessons (in a clone, `jupyter lab "
          "notebooks/`), `retinanet-lab tour` for the paper-size model against torchvision.")
    return 0


def _draw_detections(data, detections, class_names, path: str, n: int = 8, score_thresh: float = 0.5) -> None:
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .viz import draw_boxes

    fig, axes = plt.subplots(2, n // 2, figsize=(2.6 * n // 2, 5.4))
    for i, ax in enumerate(axes.flat):
        image, target = data[i]
        det = detections[i]
        keep = det["scores"] > score_thresh
        draw_boxes(ax, image, det["boxes"][keep], det["labels"][keep], det["scores"][keep], class_names, fontsize=6)
        for box in target["boxes"].tolist():
            ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ec="white", lw=0.8, ls="--"))
    fig.suptitle("the classroom model on fresh shapes images", fontsize=10)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


def cmd_tour(args) -> int:
    import torch
    from torchvision.models.detection import retinanet_resnet50_fpn

    from . import anatomy
    from .matching import BACKGROUND, IGNORE
    from .model import RetinaNet

    torch.manual_seed(args.seed)
    size = args.size
    print("1. torchvision's RetinaNet (random weights, nothing downloaded) loaded into ours")
    tv = retinanet_resnet50_fpn(weights=None, weights_backbone=None, min_size=size, max_size=size).eval()
    with torch.no_grad():
        bias = tv.head.classification_head.cls_logits.bias.view(-1, tv.head.classification_head.num_classes)
        bias.normal_(-2.0, 1.0)  # untrained scores varied enough to give detections
        bias[:, 0] = -30.0  # output 0 is torchvision's background class, never a target: trained, it says "no"
    ours = RetinaNet.from_torchvision(tv).eval()
    image, target = _synthetic_scene(size, size, args.seed)
    with torch.no_grad():
        ref = tv([image])[0]
        det = ours([image])[0]
    same = len(ref["scores"]) == len(det["scores"]) and torch.allclose(ref["scores"], det["scores"], atol=1e-5) \
        and torch.equal(ref["labels"], det["labels"])
    print(f"   detections: torchvision {len(ref['scores'])}, ours {len(det['scores'])}; same scores and labels: {same}")
    print("   (speed: see benchmarks/RESULTS.md; one cold call is not a measurement)\n")

    print(f"2. Anatomy for a {size}x{size} input")
    print(anatomy.format_table(anatomy.level_table(ours, size, size)))
    print(anatomy.format_table(anatomy.parameter_table(ours)) + "\n")

    print("3. The prior-probability bias (section 4.1): the first loss on this image")
    for prior in (0.01, 0.5):
        losses = anatomy.initial_loss(ours, [image], [target], prior)
        print(f"   pi = {prior:<4}: classification loss {losses['classification']:10.2f}")
    print("   (with pi = 0.5 every output of the ~50k background anchors starts at p = 0.5, wrong and costly:\n"
          "    0.75 * 0.5^2 * log 2 = 0.13 each under this focal loss, log 2 = 0.69 under cross entropy)\n")

    r = ours.inspect([image], [target])
    matched = torch.cat([m.flatten() for m in r["matched"]])
    fg, bg, ig = int((matched >= 0).sum()), int((matched == BACKGROUND).sum()), int((matched == IGNORE).sum())
    print(f"4. Anchor assignment: {matched.numel():,} anchors, {fg} foreground, {ig} ignored, {bg:,} background "
          f"({bg / max(fg, 1):,.0f} negatives per positive: the imbalance the focal loss is for)")
    if args.out:
        _draw_assignment(image, target, r, args.out)
        print(f"   picture written to {args.out}")
    return 0


def _draw_assignment(image, target, r, path: str) -> None:
    import matplotlib
    import torch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    scale = torch.tensor([r["image_sizes"][0][1] / image.shape[2], r["image_sizes"][0][0] / image.shape[1]] * 2)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(image.permute(1, 2, 0).numpy())
    for level_anchors, level_matched in zip(r["anchors"], r["matched"]):
        a, m = level_anchors.reshape(-1, 4), level_matched[0].reshape(-1)
        for box in a[m >= 0] / scale:
            ax.add_patch(Rectangle(box[:2].tolist(), *(box[2:] - box[:2]).tolist(), fill=False, ec="yellow", lw=0.6, ls=":"))
    for box in target["boxes"]:
        ax.add_patch(Rectangle(box[:2].tolist(), *(box[2:] - box[:2]).tolist(), fill=False, ec="lime", lw=2))
    ax.set_title("ground truth (green) and the anchors assigned to it (yellow)")
    ax.axis("off")
    fig.tight_layout()
    import os

    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _dataset(args, train: bool, transform=None):
    """The dataset named on the command line (`transform` for training images)."""
    from .data import CocoDataset, PennFudanDataset, ShapesDataset, VOCDataset

    if args.data == "shapes":
        from .presets import preset

        kw = preset(args.preset)["data"] if getattr(args, "preset", None) else {}
        seed = args.seed if train else args.seed + seeds.VALIDATION  # validation images are never training images
        return ShapesDataset(args.num_images, seed=seed, transform=transform, **kw)
    if args.data == "photos":
        from .data import photo_dataset

        return photo_dataset("train" if train else "eval", transform)
    if args.data == "coco":
        if not args.images or not args.annotations:
            missing = " and ".join(o for o, v in (("--images", args.images), ("--annotations", args.annotations)) if not v)
            raise UserError(f"{missing} missing: --data coco needs --images DIR and --annotations FILE "
                            f"(the image folder and its COCO JSON)")
        return CocoDataset(args.images, args.annotations, transform=transform)
    if args.data == "voc":
        if not args.root:
            raise UserError("--root missing: --data voc needs --root DIR (the folder with Annotations/ and JPEGImages/)")
        return VOCDataset(args.root, transform=transform)
    if not args.root:
        raise UserError("--root missing: --data pennfudan needs --root DIR (it is downloaded there when online)")
    return PennFudanDataset(args.root, download=True, transform=transform)


def _train_val(args, transform):
    """(train as it is, train through `transform`, val) for `train`, each file read once: shapes and photos have
    their own validation images; a COCO, VOC or Penn-Fudan folder is split (--val-fraction), its validation part
    read without the training augmentation."""
    import copy

    from .data import split_dataset, subset

    plain = _dataset(args, True)
    augmented = copy.copy(plain)  # the same images and annotations, seen through the training augmentation
    augmented.transform = transform
    if args.data == "shapes":
        from .data import ShapesDataset
        from .presets import preset

        val = ShapesDataset(args.val_images, seed=args.seed + seeds.VALIDATION, **preset(args.preset)["data"])
        if plain.cache is not None:  # a preset that keeps its images draws them now, on every core (the copy shares them)
            start = time.perf_counter()
            plain.draw_all()
            val.draw_all()
            print(f"drew {len(plain)} training and {len(val)} validation images in {time.perf_counter() - start:.1f} s")
        return plain, augmented, val
    if args.data == "photos":
        return plain, augmented, _dataset(args, False)
    plain_train, val = split_dataset(plain, args.val_fraction, seed=args.seed)
    return plain_train, subset(augmented, plain_train.indices), val


def _add_data_args(p, num_images: int | None) -> None:
    p.add_argument("--data", choices=("shapes", "photos", "coco", "voc", "pennfudan"), default="shapes",
                   help="which data: the built-in shapes world (default), the built-in coin photos (train and eval "
                        "splits, offline), a COCO folder, a VOC folder, or Penn-Fudan")
    p.add_argument("--images", help="COCO: the folder of images")
    p.add_argument("--annotations", help="COCO: the annotation JSON file")
    p.add_argument("--root", help="VOC or Penn-Fudan: the dataset folder")
    p.add_argument("--num-images", type=_int_at_least(1), default=num_images,
                   help=f"shapes: how many images (default {num_images or 'the preset’s: 2880 for classroom'})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _int_at_least(low: int):
    """An argparse type: a whole number >= low, or an error naming the value."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def _float_in(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False):
    """An argparse type: a number in [low, high] ("(" where open), or an error naming the value and the range."""
    range_text = (("(" if low_open else "[") + f"{low:g}, " + (f"{high:g}" if high is not None else "inf")
                  + (")" if high_open or high is None else "]"))

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = value == value and (value > low if low_open else value >= low)
        if high is not None:
            ok = ok and (value < high if high_open else value <= high)
        elif value == float("inf"):
            ok = False
        if not ok:
            raise argparse.ArgumentTypeError(f"must be in {range_text}, got {text}")
        return value
    return parse


_positive = _float_in(0, low_open=True)


def _device_arg(text: str) -> str:
    if re.fullmatch(r"cpu|cuda(:\d+)?|mps", text):
        return text
    raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")


def _check_device(device: str | None) -> None:
    """A --device this machine has, or a UserError that says so."""
    if device is None or device == "cpu":
        return
    import torch

    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            raise UserError(f"--device {device}: this machine has {count or 'no'} CUDA GPU{'s' if count != 1 else ''}; "
                            f"use --device cpu, or leave --device out")
    elif device == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: Apple's MPS is not available on this machine; use --device cpu, or leave --device out")


def _size_arg(text: str) -> int:
    value = _int_at_least(32)(text)
    if value % 32:
        raise argparse.ArgumentTypeError(f"must be a multiple of 32 (the stride of P5), got {value}")
    return value


def _starting_model(args, names: list[str]):
    """A new model of the preset, or the one of --from-checkpoint ('classroom': the shipped classroom model),
    with a new classification layer when the classes differ."""
    from .model import RetinaNet
    from .presets import preset

    if not args.from_checkpoint:
        return RetinaNet(len(names), class_names=names, **preset(args.preset)["model"])
    if args.from_checkpoint == "classroom":
        from .classroom import load_classroom_model

        model = load_classroom_model().train()
    else:
        from .checkpoint import load_model

        model = load_model(args.from_checkpoint).train()
    if model.num_classes != len(names) or model.class_names != names:
        print(f"classes: {', '.join(names)} (the checkpoint's were {', '.join(model.class_names)}): "
              f"a new classification layer")
        model.replace_classes(names)
    return model


def _fit_to_data(args, model, train_data) -> None:
    """Input size and anchors for a dataset of one's own (--size; --keep-anchors), said in a line each."""
    from .fit_to_data import anchors_for, input_size_for, set_anchors, set_input_size

    real = args.data != "shapes"
    if args.size is None and real:
        args.size = input_size_for(train_data)
        print(f"input size: {args.size} px (the median short side of the images, to a multiple of 32; --size to change)")
    if args.size is not None:
        set_input_size(model, args.size)
    if real and not args.keep_anchors and not args.resume:
        anchors, why = anchors_for(train_data, model.anchor_config, model.min_size)
        print(why + ("" if anchors is model.anchor_config else " (--keep-anchors to keep them)"))
        set_anchors(model, anchors)


def _train_length(args, cfg: dict, real: bool) -> None:
    """One of --epochs, --steps, --minutes: the preset's epochs on shapes, 5 minutes on a dataset of one's own."""
    if args.steps is None and args.minutes is None and args.epochs is None:
        if real:  # a few dozen images are a handful of steps per epoch: a time budget is what a lesson plans
            args.minutes = 5.0
        else:
            args.epochs = cfg["run"]["epochs"]
    if sum(x is not None for x in (args.steps, args.minutes, args.epochs)) > 1:
        raise UserError("give one of --epochs, --steps and --minutes")
    if args.eval_every is None and args.epochs is not None:  # the preset's, and at least once, at the end
        args.eval_every = min(cfg["run"]["eval_every"], args.epochs)


def _train_data(args, real: bool):
    """(train as it is, train augmented, val, class names), with the augmentation --augment asks for (auto: zoom on a
    small dataset of one's own)."""
    from .data import small_dataset_transforms, train_transforms

    plain, train_data, val_data = _train_val(args, None)
    augment = args.augment if args.augment != "auto" else ("on" if real and len(plain) < 1000 else "off")
    transform = small_dataset_transforms() if augment == "on" else train_transforms(flip=True)
    getattr(train_data, "dataset", train_data).transform = transform  # the augmented view (a Subset of it, split)
    names = plain.class_names
    print(f"data: {args.data}, {len(train_data)} training and {len(val_data)} validation images, classes "
          f"{', '.join(names)}; augmentation: " + ("zoom (scale jitter and crops), flips, photometric jitter" if augment == "on"
                                                    else "flips") + (" (--augment to change)" if real else ""))
    return plain, train_data, val_data, names


def _fit_kwargs(args, cfg: dict, model) -> dict:
    """The preset's training recipe, with --batch and --lr; a budget of steps or minutes fits its own warm-up. A preset
    that trains smaller than it tests (train_size) keeps that ratio at the model's input size (--size, own data)."""
    train_kw = cfg["train"]
    sizes = train_kw.get("train_size")
    if sizes and model.min_size != cfg["model"]["min_size"]:
        ratio = model.min_size / cfg["model"]["min_size"]  # fit reads a tuple of one size as that size
        train_kw["train_size"] = tuple(max(32, round(s * ratio)) for s in ((sizes,) if isinstance(sizes, int) else sizes))
    if args.epochs is None:  # a budget of steps or minutes: warm-up is a tenth of the steps, not the preset's count
        train_kw.pop("warmup_steps", None)
    if args.batch:
        train_kw["batch_size"] = args.batch
    if args.lr:
        train_kw["lr"] = args.lr
    return train_kw


def cmd_train(args) -> int:
    """Under torchrun only the first process speaks: the others would repeat every line (fit's own output is rank 0's
    already), and only it writes the checkpoint it names."""
    import contextlib

    if int(os.environ.get("RANK", "0")) > 0:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            return _train_command(args)
    return _train_command(args)


def _train_command(args) -> int:
    import torch

    from .presets import preset
    from .train import fit

    cfg = preset(args.preset)
    real = args.data != "shapes"
    if args.num_images is None:
        args.num_images = cfg["run"]["num_images"]
    _train_length(args, cfg, real)
    _check_device(args.device)
    plain_train, train_data, val_data, names = _train_data(args, real)
    torch.manual_seed(args.seed)
    model = _starting_model(args, names)
    _fit_to_data(args, model, plain_train)  # sizes as they are, not zoomed
    start = time.perf_counter()
    history = fit(model, train_data, val_data, epochs=args.epochs or 1, steps=args.steps, minutes=args.minutes,
                  device=args.device, seed=args.seed, out_dir=args.out, resume=args.resume or None,
                  eval_every=args.eval_every, **_fit_kwargs(args, cfg, model))
    path = os.path.join(args.out, "checkpoint.pt")
    if history["evals"]:
        last = history["evals"][-1]
        seconds = time.perf_counter() - start
        print(f"after {last['step']} steps ({seconds:.0f} s, evaluations included): AP {last['AP']:.3f}  "
              f"AP50 {last['AP50']:.3f}  AP75 {last['AP75']:.3f} on {len(val_data)} validation images")
    print(f"checkpoint: {path}  (retinanet-lab eval {path} ...; retinanet-lab predict {path} IMAGES)")
    return 0


def cmd_eval(args) -> int:
    from .evaluate import evaluate

    _check_device(args.device)
    model = _checkpoint_model(args)
    if args.data == "shapes":
        from .data import ShapesDataset
        from .presets import preset

        data = ShapesDataset(args.num_images, seed=args.seed + seeds.EVALUATION, **preset(args.preset)["data"])
    else:
        data = _dataset(args, train=False)
    if list(data.class_names) != list(model.class_names):
        raise UserError(f"{args.checkpoint} detects {', '.join(model.class_names)}; the data's classes are "
                        f"{', '.join(data.class_names)}: evaluate on data with the classes it was trained for")
    r = evaluate(model, data, device=args.device)
    print(f"{len(data)} images at {model.min_size} px: AP {r['AP']:.3f}  AP50 {r['AP50']:.3f}  AP75 {r['AP75']:.3f}  "
          f"APs {r['APs']:.3f}  APm {r['APm']:.3f}  APl {r['APl']:.3f}  AR100 {r['AR100']:.3f}")
    for name, ap in r["per_class_AP"].items():
        print(f"  {name:20s} AP {ap:.3f}")
    return 0


def _classroom():
    from .classroom import load_classroom_model

    return load_classroom_model()


def _predict_inputs(paths: list[str]) -> list[tuple[str, str | None]]:
    """(path, None) for each image to read: files as given, a folder's images sorted by name, each file once;
    (folder, why) for a folder with no images."""
    entries, seen = [], set()
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, f) for f in os.listdir(path)
                           if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, f)))
            if not found:
                entries.append((path, f"{path}: a folder with no images in it ({' '.join(IMAGE_EXTENSIONS)})"))
        else:
            found = [path]
        for f in found:
            key = os.path.normcase(os.path.abspath(f))
            if key not in seen:
                seen.add(key)
                entries.append((f, None))
    return entries


def _picture_names(paths: list[str], suffix: str = "_detections.png") -> dict[str, str]:
    """A distinct output name for each input: its stem, with more of its path only where stems collide,
    ignoring case (a.png and a.jpg give a_png and a_jpg; x/a.png and y/a.png give x_a_png and y_a_png)."""
    def label(path: str, depth: int) -> str:
        parts = os.path.abspath(path).split(os.sep)
        if depth == 0:
            return os.path.splitext(parts[-1])[0]
        return "_".join([p for p in parts[-depth:-1] if p] + [parts[-1].replace(".", "_")])

    depth = dict.fromkeys(paths, 0)
    while True:
        groups: dict[str, list[str]] = {}
        for path in paths:
            groups.setdefault(label(path, depth[path]).lower(), []).append(path)
        # more of the path, where it can tell them apart (a.png and A.png, the same but for case, are numbered below)
        longer = [p for g in groups.values() if len(g) > 1 for p in g
                  if depth[p] < len(os.path.abspath(p).split(os.sep))
                  and any(os.path.abspath(p).lower() != os.path.abspath(q).lower() for q in g)]
        if not longer:
            break
        for path in longer:
            depth[path] += 1
    names, used = {}, set()
    for path in paths:  # whatever still collides (the same file under two spellings) is numbered
        base = name = label(path, depth[path])
        k = 1
        while name.lower() in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name.lower())
        names[path] = name + suffix
    return names


def _checkpoint_model(args):
    """The model of `predict` and `eval`: a checkpoint, or 'classroom', at --size if given."""
    from .checkpoint import load_model

    model = load_model(args.checkpoint) if args.checkpoint != "classroom" else _classroom()
    if args.size is not None:
        from .fit_to_data import set_input_size

        set_input_size(model, args.size)
    return model


def _read_image(path: str):
    """(image, None), or (None, why it could not be read)."""
    from .data import ImageLoadError, load_image, to_tensor

    try:
        return to_tensor(load_image(path)), None
    except FileNotFoundError:
        return None, f"{path}: no such file"
    except ImageLoadError as e:  # its message starts with the path
        return None, str(e)


def _predict_one(model, image, score_thresh: float, picture: str) -> list[dict]:
    """Detections on one image above `score_thresh`, drawn to `picture`; returned as JSON-ready dicts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from .viz import draw_boxes

    with torch.no_grad():
        det = model([image])[0]
    keep = det["scores"] >= score_thresh
    found = [{"box": b, "score": s, "label": int(lab), "class": model.class_names[int(lab) - 1]}
             for b, s, lab in zip(det["boxes"][keep].tolist(), det["scores"][keep].tolist(), det["labels"][keep])]
    fig, ax = plt.subplots(figsize=(6, 6 * image.shape[1] / image.shape[2]))
    draw_boxes(ax, image, det["boxes"][keep], det["labels"][keep], det["scores"][keep], model.class_names)
    fig.savefig(picture, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return found


def cmd_predict(args) -> int:
    import json

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out {args.out} is a file: give a folder for the pictures and detections.json")
    model = _checkpoint_model(args)
    model.score_thresh = args.score_thresh
    entries = _predict_inputs(args.images)
    names = _picture_names([path for path, error in entries if error is None])
    os.makedirs(args.out, exist_ok=True)
    results, done = {}, 0
    try:
        for path, error in entries:
            image, error = _read_image(path) if error is None else (None, error)
            if error is not None:
                results[path] = {"error": error}
                print(f"retinanet-lab predict: skipped {error}", file=sys.stderr)
                continue
            picture = os.path.join(args.out, names[path])
            found = _predict_one(model, image, args.score_thresh, picture)
            results[path] = {"picture": names[path], "detections": found}
            done += 1
            print(f"{path}: {len(found)} detection(s) -> {picture}")
    finally:  # what was done, and why the rest was not, even if something unforeseen stops the loop
        listing = os.path.join(args.out, "detections.json")
        with open(listing + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(listing + ".tmp", listing)
    skipped = len(results) - done
    if not done:
        print(f"retinanet-lab predict: error: none of the {skipped} input(s) could be read; {listing} lists why", file=sys.stderr)
        return 2
    print(f"{done} image(s) done" + (f", {skipped} skipped" if skipped else "") + f"; detections and errors in {listing}")
    return 0


def cmd_anchors(args) -> int:
    from .anchors import AnchorConfig
    from .coverage import anchor_coverage, format_coverage
    from .presets import preset

    cfg = preset(args.preset)["model"]
    anchors = cfg.get("anchors") or AnchorConfig()
    if args.sizes:
        anchors = AnchorConfig(sizes=tuple(args.sizes), scales=anchors.scales, aspect_ratios=anchors.aspect_ratios)
    if args.ratios:
        anchors = AnchorConfig(sizes=anchors.sizes, scales=anchors.scales, aspect_ratios=tuple(args.ratios))
    data = _dataset(args, train=False)
    report = anchor_coverage(data, anchors, min_size=args.min_size or cfg["min_size"], max_size=args.max_size or cfg["max_size"],
                             max_images=args.max_images)
    print(format_coverage(report))
    return 0


def cmd_lessons(args) -> int:
    from .lessons import LESSONS, write_edition

    try:
        written = write_edition(args.directory, teacher=args.teacher, overwrite=args.force)
    except (FileExistsError, OSError) as e:
        print(f"retinanet-lab lessons: {e}", file=sys.stderr)
        return 2
    edition = "teacher's edition (with solutions, answers and notes)" if args.teacher else "student edition (no solutions)"
    print(f"wrote {len(LESSONS)} lessons, {edition}, to {args.directory}")
    if args.teacher:
        print(f"and the teacher's guide: {written[-1]}")
    print(f"open them with:  jupyter lab {args.directory}")
    return 0


def cmd_voila(args) -> int:
    import os
    import subprocess

    from .lessons import voila_command

    if not os.path.exists(args.target):
        print(f"retinanet-lab voila: {args.target} not found: give a lesson (.ipynb) or a folder of lessons", file=sys.stderr)
        return 2
    try:
        argv, env = voila_command(args.target, *args.voila_args)
    except FileNotFoundError as e:
        print(f"retinanet-lab voila: {e}", file=sys.stderr)
        return 2
    return subprocess.call(argv, env=env)


class _Parser(argparse.ArgumentParser):
    """argparse with its errors in two lines, as command-line tools say them: what is wrong, and where the
    options are explained (instead of the whole usage, which for `train` is longer than the error)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\nsee `{self.prog} --help`\n")


def _add_demo(sub) -> None:
    """The `demo` command and its options."""
    d = sub.add_parser("demo", help="the classroom model detects shapes in fresh images: COCO mAP and a picture (offline)",
                       description="Load the shipped classroom model, detect objects in freshly drawn shapes images, print their "
                                   "COCO mAP and write a picture of the detections. Works offline, with no GPU.")
    d.add_argument("--num-images", type=_int_at_least(8), default=100, help="how many fresh images to score (default 100, at least 8)")
    d.add_argument("--seed", type=int, default=0, help="which fresh images (default 0; training never used these seeds)")
    d.add_argument("--out", default="demo.png", help="where to write the picture (default demo.png; '' for none)")
    d.set_defaults(func=cmd_demo)


def _add_tour(sub) -> None:
    """The `tour` command and its options."""
    d = sub.add_parser("tour", help="build a paper-size RetinaNet, check it against torchvision, show its anatomy and anchors")
    d.add_argument("--size", type=_int_at_least(32), default=512, help="input image size in pixels (default 512)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.add_argument("--out", default="tour.png", help="where to write the anchor picture (default tour.png; '' for none)")
    d.set_defaults(func=cmd_tour)


def _add_info(sub) -> None:
    """The `info` command and its options."""
    i = sub.add_parser("info", help="tables of levels, anchors and parameters for a configuration")
    i.add_argument("--backbone", choices=BACKBONES, default="resnet50")
    i.add_argument("--num-classes", type=_int_at_least(1), default=80)
    i.add_argument("--fpn-channels", type=_int_at_least(1), default=256)
    i.add_argument("--size", type=_int_at_least(32), default=512, help="input image size in pixels (default 512)")
    i.set_defaults(func=cmd_info)


def _add_train(sub) -> None:
    """`retinanet-lab train`: what to train on and for how long (the recipe's options: `_add_train_recipe`)."""
    t = sub.add_parser("train", help="train a detector; prints the learning rate it uses, checkpoints to --out",
                       description="Train RetinaNet. With no options: the classroom preset on the shapes world.")
    _add_data_args(t, num_images=None)
    t.add_argument("--preset", choices=PRESET_NAMES, default="classroom", help="model and recipe (default classroom)")
    t.add_argument("--epochs", type=_int_at_least(1), default=None,
                   help="passes over the training data (default: the preset's, 8 for classroom; on your own data: --minutes 5)")
    t.add_argument("--steps", type=_int_at_least(1), default=None, help="train for this many steps instead of epochs")
    t.add_argument("--minutes", type=_positive, default=None,
                   help="train for what fits in this many minutes: the first steps are timed and the schedule fitted to "
                        "the steps that fit (default on COCO/VOC/photos data: 5)")
    t.add_argument("--size", type=_size_arg, default=None,
                   help="input size: images are resized to this short side (a multiple of 32; default: the preset's for "
                        "shapes, the images' median short side for your own data)")
    t.add_argument("--keep-anchors", action="store_true",
                   help="keep the model's anchor sizes (default on your own data: scaled when they miss the objects)")
    t.add_argument("--augment", choices=("auto", "on", "off"), default="auto",
                   help="zoom (scale jitter and crops), flips and photometric jitter; auto (default): on for datasets of "
                        "your own under 1000 images, flips only otherwise")
    _add_train_recipe(t)
    t.set_defaults(func=cmd_train)


def _add_train_recipe(t) -> None:
    """`retinanet-lab train`: batch, learning rate, device, output, resume, fine-tuning and validation."""
    t.add_argument("--batch", type=_int_at_least(1), default=None, help="images per step (default: the preset's)")
    t.add_argument("--lr", type=_positive, default=None,
                   help="learning rate (default: the preset's; SGD presets scale it to the batch, AdamW's is not scaled)")
    t.add_argument("--device", type=_device_arg, default=None, help="cpu or cuda (default: cuda when present)")
    t.add_argument("--out", default="runs/train", help="folder for checkpoint.pt and metrics.jsonl (default runs/train)")
    t.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    t.add_argument("--from-checkpoint", default=None,
                   help="fine-tune from this checkpoint, or 'classroom' for the shipped classroom model (new classes get a "
                        "new output layer)")
    t.add_argument("--val-fraction", type=_float_in(0, 1, low_open=True, high_open=True), default=0.1,
                   help="COCO/VOC/Penn-Fudan: share held out (default 0.1)")
    t.add_argument("--val-images", type=_int_at_least(1), default=200, help="shapes: fresh validation images (default 200)")
    t.add_argument("--eval-every", type=_int_at_least(1), default=None,
                   help="evaluate every N epochs (default: the preset's; classroom: at the end); runs with --steps or "
                        "--minutes always end with an evaluation")


def _add_eval(sub) -> None:
    """The `eval` command and its options."""
    e = sub.add_parser("eval", help="COCO mAP of a checkpoint on a dataset")
    e.add_argument("checkpoint", help="a checkpoint.pt written by train, or 'classroom' for the shipped classroom model")
    _add_data_args(e, num_images=200)
    e.add_argument("--preset", choices=PRESET_NAMES, default="classroom", help="shapes: the preset's image size")
    e.add_argument("--device", type=_device_arg, default=None, help="cpu or cuda (default: cuda when present)")
    e.add_argument("--size", type=_size_arg, default=None, help="input size (default: the checkpoint's, as trained)")
    e.set_defaults(func=cmd_eval)


def _add_predict(sub) -> None:
    """The `predict` command and its options."""
    pr = sub.add_parser("predict", help="detect objects in image files; writes PNGs with boxes and detections.json")
    pr.add_argument("checkpoint", help="a checkpoint.pt written by train, or 'classroom' for the shipped classroom model")
    pr.add_argument("--size", type=_size_arg, default=None, help="input size (default: the checkpoint's, as trained)")
    pr.add_argument("images", nargs="+", help="image files, or folders (all their images, sorted by name)")
    pr.add_argument("--out", default="predictions",
                    help="output folder (default predictions): a <name>_detections.png per image and detections.json")
    pr.add_argument("--score-thresh", type=_float_in(0, 1), default=0.3,
                    help="draw and keep detections with at least this score, in [0, 1] (default 0.3)")
    pr.set_defaults(func=cmd_predict)


def _add_anchors(sub) -> None:
    """The `anchors` command and its options."""
    a = sub.add_parser("anchors", help="share of a dataset's objects that some anchor covers at IoU >= 0.5, with suggestions")
    _add_data_args(a, num_images=300)
    a.add_argument("--preset", choices=PRESET_NAMES, default="classroom", help="anchors and input size (default classroom)")
    a.add_argument("--sizes", type=_positive, nargs="+", help="anchor base sizes on P3..P7, e.g. 16 32 64 128 256")
    a.add_argument("--ratios", type=_positive, nargs="+", help="aspect ratios h/w, e.g. 0.5 1 2")
    a.add_argument("--min-size", type=_int_at_least(1), default=None, help="network input short side (default: the preset's)")
    a.add_argument("--max-size", type=_int_at_least(1), default=None, help="network input long side cap (default: the preset's)")
    a.add_argument("--max-images", type=_int_at_least(1), default=500, help="look at most at this many images (default 500)")
    a.set_defaults(func=cmd_anchors)


def _add_lessons(sub) -> None:
    """The `lessons` command and its options."""
    le = sub.add_parser("lessons", help="write a fresh copy of the lessons (student edition; --teacher for the teacher's)",
                        description="Write the lessons as notebooks into DIRECTORY, so that a student edits a copy and the "
                                    "originals stay clean. The student edition has no solutions; the teacher's edition has "
                                    "the solutions, the answers to the questions, notes for the teacher and the guide.")
    le.add_argument("directory", help="where to write the notebooks (created if needed)")
    le.add_argument("--teacher", action="store_true", help="the teacher's edition: solutions, answers, notes, teacher_guide.md")
    le.add_argument("--force", action="store_true", help="overwrite lessons already in DIRECTORY")
    le.set_defaults(func=cmd_lessons)


def _add_voila(sub) -> None:
    """The `voila` command and its options."""
    vo = sub.add_parser("voila", help="show a lesson as an app without its code (a projector view), offline",
                        description="Run Voila on a lesson (or a folder of lessons) with this package's template, which "
                                    "needs no internet (Voila's own page template asks a CDN for its icons).")
    vo.add_argument("target", help="a lesson notebook, e.g. 02_focal_loss.ipynb, or a folder of them")
    vo.add_argument("voila_args", nargs=argparse.REMAINDER, help="passed on to voila, e.g. --port=8866")
    vo.set_defaults(func=cmd_voila)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="retinanet-lab", description="RetinaNet and the focal loss, a teaching lab.",
                epilog="Errors in what you give (files, data, options) are said in one line, with exit status 2.")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error (also after the command)")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_demo, _add_tour, _add_info, _add_train, _add_eval, _add_predict, _add_anchors, _add_lessons,
                _add_voila):
        add(sub)
    for command in sub.choices.values():  # --debug after the command too; SUPPRESS: absent, it leaves the global one be
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback of an error")
    return p


def _error_message(e: BaseException) -> str:
    """One line: the error's message, naming the file or option."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:  # Python's own: "[Errno 2] ... 'x'"
        return f"{e.filename}: {e.strerror}"
    text = str(e).strip()
    if "Original Traceback" in text:  # raised in a DataLoader worker: the last line is the error itself
        text = re.sub(r"^[\w.]*(Error|Exception)\w*: ", "", text.splitlines()[-1].strip())
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, *PATH_ERRORS) as e:  # the user's to fix: one line, status 2; anything else is a bug: traceback
        if args.debug:
            raise
        print(f"retinanet-lab {args.command}: error: {_error_message(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
