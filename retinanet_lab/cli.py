"""The `retinanet-lab` command line.

    retinanet-lab demo      the main job: build RetinaNet, show its anatomy, prove it equals
                            torchvision's, show what the prior bias does, draw the anchor assignment
    retinanet-lab info      the anatomy tables of any configuration
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from . import anatomy

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")


def _synthetic_scene(height: int, width: int, seed: int = 0):
    """A noisy image with a few filled rectangles and their boxes (labels 1..3)."""
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
    from .model import RetinaNet

    model = RetinaNet(args.num_classes, backbone=args.backbone, fpn_channels=args.fpn_channels,
                      head_channels=args.fpn_channels, min_size=args.size, max_size=args.size)
    print(f"RetinaNet, {args.backbone}, {args.num_classes} classes, input {args.size}x{args.size}\n")
    print(anatomy.format_table(anatomy.level_table(model, args.size, args.size)))
    print()
    print(anatomy.format_table(anatomy.parameter_table(model)))
    return 0


def cmd_demo(args) -> int:
    from torchvision.models.detection import retinanet_resnet50_fpn

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
        t0 = time.perf_counter()
        ref = tv([image])[0]
        t1 = time.perf_counter()
        det = ours([image])[0]
        t2 = time.perf_counter()
    same = len(ref["scores"]) == len(det["scores"]) and torch.allclose(ref["scores"], det["scores"], atol=1e-5) \
        and torch.equal(ref["labels"], det["labels"])
    print(f"   detections: torchvision {len(ref['scores'])}, ours {len(det['scores'])}; same scores and labels: {same}")
    print(f"   inference on one {size}x{size} image: torchvision {t1 - t0:.2f} s, ours {t2 - t1:.2f} s\n")

    print(f"2. Anatomy for a {size}x{size} input")
    print(anatomy.format_table(anatomy.level_table(ours, size, size)))
    print(anatomy.format_table(anatomy.parameter_table(ours)) + "\n")

    print("3. The prior-probability bias (section 4.1): the first loss on this image")
    for prior in (0.01, 0.5):
        losses = anatomy.initial_loss(ours, [image], [target], prior)
        print(f"   pi = {prior:<4}: classification loss {losses['classification']:10.2f}")
    print("   (with pi = 0.5 every one of the ~50k easy background anchors starts with a large loss)\n")

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retinanet-lab", description="RetinaNet and the focal loss, a teaching lab.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="build RetinaNet, show its anatomy, check it against torchvision, draw the anchor assignment")
    d.add_argument("--size", type=int, default=512, help="input image size in pixels (default 512)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.add_argument("--out", default="demo.png", help="where to write the picture (default demo.png; '' for none)")
    d.set_defaults(func=cmd_demo)
    i = sub.add_parser("info", help="tables of levels, anchors and parameters for a configuration")
    i.add_argument("--backbone", choices=BACKBONES, default="resnet50")
    i.add_argument("--num-classes", type=int, default=80)
    i.add_argument("--fpn-channels", type=int, default=256)
    i.add_argument("--size", type=int, default=512, help="input image size in pixels (default 512)")
    i.set_defaults(func=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
