"""Speed of our RetinaNet against torchvision's, same configuration and weights, in one process.

For each setting, a training step (forward + backward) and inference on a batch are timed for both
models, interleaved (A B B A ...) so that drift of the machine's speed hits both alike; the median of
the repetitions and the ratio torchvision / ours (> 1: ours is faster) are printed, and with --json
written to a file.

    python benchmarks/bench_vs_torchvision.py                       # all settings, CPU and CUDA if present
    python benchmarks/bench_vs_torchvision.py --settings small --reps 5 --device cpu

Settings:
    paper:      ResNet-50-FPN, 256 channels, 4-conv heads, 80 classes, batch 8 at 512 px (torchvision v1)
    small:      ResNet-18-FPN, 64 channels, 2-conv heads, 5 classes, batch 8 at 256 px
torchvision's heads get one output more (its never-trained background class); ours drops it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch
from torchvision.models import resnet18, resnet50
from torchvision.models.detection import RetinaNet as TVRetinaNet
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from retinanet_lab import RetinaNet

SETTINGS = {
    "paper": dict(batch=8, size=512, classes=80, boxes=8),
    "small": dict(batch=8, size=256, classes=5, boxes=6),
}


def build_pair(name: str, device: torch.device):
    """torchvision's RetinaNet exactly as its builder makes it for training from ImageNet weights
    (FrozenBatchNorm2d, stem and layer1 frozen), without downloading them; ours from its weights."""
    s = SETTINGS[name]
    torch.manual_seed(0)
    if name == "paper":
        body = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(256, 256))
        tv = TVRetinaNet(body, s["classes"] + 1, min_size=s["size"], max_size=s["size"])
    else:
        net = resnet18(norm_layer=FrozenBatchNorm2d)
        for pname, param in net.named_parameters():  # trainable_layers=3, as _resnet_fpn_extractor does
            param.requires_grad_(pname.startswith(("layer2", "layer3", "layer4")))
        body = BackboneWithFPN(net, {"layer2": "0", "layer3": "1", "layer4": "2"}, [128, 256, 512], 64,
                               extra_blocks=LastLevelP6P7(64, 64))
        head = RetinaNetHead(64, 9, s["classes"] + 1)
        for sub in (head.classification_head, head.regression_head):  # 2 convs
            sub.conv = sub.conv[:2]
        tv = TVRetinaNet(body, s["classes"] + 1, min_size=s["size"], max_size=s["size"], head=head)
    ours = RetinaNet.from_torchvision(tv)
    ours.loss_normalization = "image"  # torchvision's per-image normalisation (same work, same numbers)
    return tv.to(device), ours.to(device)


def make_batch(name: str, device: torch.device, seed: int = 0):
    s = SETTINGS[name]
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(s["batch"]):
        images.append(torch.rand(3, s["size"], s["size"], generator=g).to(device))
        xy = torch.rand(s["boxes"], 2, generator=g) * s["size"] * 0.7
        wh = 12 + torch.rand(s["boxes"], 2, generator=g) * s["size"] * 0.3
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                        "labels": torch.randint(1, s["classes"] + 1, (s["boxes"],), generator=g).to(device)})
    return images, targets


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_train_step(model, images, targets, device, amp: bool):
    model.train()
    _sync(device)
    t = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        losses = model(images, targets)
    sum(losses.values()).backward()
    _sync(device)
    elapsed = time.perf_counter() - t
    model.zero_grad(set_to_none=True)
    return elapsed


@torch.no_grad()
def time_inference(model, images, device, amp: bool):
    model.eval()
    _sync(device)
    t = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        model(images)
    _sync(device)
    return time.perf_counter() - t


def bench(name: str, device: torch.device, reps: int, warmup: int, amp: bool) -> dict:
    tv, ours = build_pair(name, device)
    images, targets = make_batch(name, device)
    results = {}
    for task in ("train_step", "inference"):
        timer = (lambda m: time_train_step(m, images, targets, device, amp)) if task == "train_step" else \
            (lambda m: time_inference(m, images, device, amp))
        for _ in range(warmup):
            timer(tv), timer(ours)
        times = {"torchvision": [], "ours": []}
        for r in range(reps):  # interleaved, alternating who goes first
            order = (("torchvision", tv), ("ours", ours)) if r % 2 == 0 else (("ours", ours), ("torchvision", tv))
            for label, model in order:
                times[label].append(timer(model))
        tv_med, ours_med = statistics.median(times["torchvision"]), statistics.median(times["ours"])
        results[task] = dict(torchvision_s=tv_med, ours_s=ours_med, speedup=tv_med / ours_med)
        print(f"{name:10s} {device.type:5s} {'amp' if amp else 'fp32':4s} {task:11s} torchvision {tv_med * 1000:9.1f} ms  "
              f"ours {ours_med * 1000:9.1f} ms  speed-up x{tv_med / ours_med:.2f}", flush=True)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=["small", "paper"])
    p.add_argument("--device", nargs="+", default=None, help="cpu and/or cuda (default: cpu, plus cuda if present)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    env = dict(torch=torch.__version__, python=platform.python_version(), threads=torch.get_num_threads(),
               cpu=platform.processor() or platform.machine(),
               gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None)
    print(json.dumps(env))
    out = {"env": env, "results": {}}
    for dev in devices:
        for name in args.settings:
            out["results"][f"{name}/{dev}"] = bench(name, torch.device(dev), args.reps, args.warmup, args.amp and dev == "cuda")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
