"""The classroom model's levers, measured: AP after a fixed number of steps for recipes that cost fewer FLOPs to the bar.

    python benchmarks/classroom_levers.py                          # every recipe, one after another, on the CPU
    python benchmarks/classroom_levers.py --device cuda --jobs 8   # in 8 processes at once on one GPU (float32)
    python benchmarks/classroom_levers.py --only base_900 b8_1800  # some recipes only

Each recipe trains the classroom preset from scratch (its model, data and optimiser, with the overrides below) for a
fixed number of steps, cosine schedule fitted to them, and scores it on 200 fresh images at 160 px (seed
VALIDATION): AP, AP50, the images it saw and the GFLOPs it took (forward + backward, counted with
torch.utils.flop_counter at the recipe's input size). The bar is AP50 >= 0.90 and AP >= 0.60. Seconds depend on the
machine; GFLOPs and steps do not, so a recipe found on a GPU carries to the 2-core CPU at that CPU's GFLOP/s
(`python benchmarks/gpu_check.py --smoke` and RESULTS.md give it). Writes one JSON line per run to --out.
A recipe with flip=True sees its images through random flips, as `retinanet-lab train` does; one with train_size
(fit's) trains at that size and is scored at 160 px, as the classroom_fast preset is. The seconds count drawing the
images (ShapesDataset.draw_all, on every core) and training, not scoring.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# name -> overrides of the classroom preset: model, data, train, steps, images (distinct images drawn), seed
RECIPES = {
    "base_1440": dict(steps=1440, images=2880),  # the shipped recipe (8 epochs of 2880)
    "base_900": dict(steps=900, images=1800),
    "base_600": dict(steps=600, images=1600),
    "base_600_lr2.5e-3": dict(steps=600, images=1600, train=dict(lr=2.5e-3)),
    "base_600_lr8e-3_warm100": dict(steps=600, images=1600, train=dict(lr=8e-3, warmup_steps=100)),
    "b8_1200": dict(steps=1200, images=1600, train=dict(batch_size=8)),
    "b32_300_lr1e-2": dict(steps=300, images=1600, train=dict(batch_size=32, lr=1e-2)),
    "px128_900": dict(steps=900, images=1800, model=dict(min_size=128, max_size=128)),
    "px128_600": dict(steps=600, images=1600, model=dict(min_size=128, max_size=128)),
    "head1_900": dict(steps=900, images=1800, model=dict(head_convs=1)),
    "px144_900": dict(steps=900, images=1800, model=dict(min_size=144, max_size=144)),
    "b8_900": dict(steps=900, images=1600, train=dict(batch_size=8)),
    "images800_900": dict(steps=900, images=800),
    "head1_px128_1440": dict(steps=1440, images=2880, model=dict(head_convs=1, min_size=128, max_size=128)),
    # 2026-11-26, the 2-core CPU: the cheap variant at fewer steps, and what moves it (GIoU: the classroom_fast preset)
    "head1_px128_960": dict(steps=960, images=2880, model=dict(head_convs=1, min_size=128, max_size=128)),
    "head1_px128_lr1e-2_960": dict(steps=960, images=2880, model=dict(head_convs=1, min_size=128, max_size=128),
                                   train=dict(lr=1e-2, warmup_steps=100)),
    "head1_px128_giou_960": dict(steps=960, images=2880, model=dict(head_convs=1, min_size=128, max_size=128, box_loss="giou")),
    "head1_px128_giou_lr1e-2_960": dict(steps=960, images=2880, train=dict(lr=1e-2, warmup_steps=100),
                                        model=dict(head_convs=1, min_size=128, max_size=128, box_loss="giou")),
    "head1_px128_giou_1200": dict(steps=1200, images=2880, model=dict(head_convs=1, min_size=128, max_size=128, box_loss="giou")),
    # with the command line's flips (flip=True), GIoU, trained at train_size and scored at 160 px (classroom_fast's way)
    "fast_1440": dict(steps=1440, images=2880, flip=True, model=dict(head_convs=1, box_loss="giou"), train=dict(train_size=128)),
    "fast_1080": dict(steps=1080, images=2880, flip=True, model=dict(head_convs=1, box_loss="giou"), train=dict(train_size=128)),
    "fast_b8_2160": dict(steps=2160, images=2880, flip=True, model=dict(head_convs=1, box_loss="giou"),
                         train=dict(train_size=128, batch_size=8)),
    "fast_b8_2400": dict(steps=2400, images=2880, flip=True, model=dict(head_convs=1, box_loss="giou"),
                         train=dict(train_size=128, batch_size=8)),
    "fast_b8_2880": dict(steps=2880, images=2880, flip=True, model=dict(head_convs=1, box_loss="giou"),
                         train=dict(train_size=128, batch_size=8)),
    "fast_5760img_1080": dict(steps=1080, images=5760, flip=True, model=dict(head_convs=1, box_loss="giou"),
                              train=dict(train_size=128)),
    "fast_px96_1440": dict(steps=1440, images=2880, flip=True, model=dict(head_convs=1, box_loss="giou"), train=dict(train_size=96)),
    # small images first (fit's train_size schedule): equal shares of the steps at each size, in order
    "fast_96_128_1440": dict(steps=1440, images=2880, flip=True, model=dict(head_convs=1, box_loss="giou"),
                             train=dict(train_size=(96, 128))),
    "fast_96_96_128_1440": dict(steps=1440, images=2880, flip=True, model=dict(head_convs=1, box_loss="giou"),
                                train=dict(train_size=(96, 96, 128))),
    "fast_64_96_128_1440": dict(steps=1440, images=2880, flip=True, model=dict(head_convs=1, box_loss="giou"),
                                train=dict(train_size=(64, 96, 128))),
    "fast_64_96_128_128_1440": dict(steps=1440, images=2880, flip=True, model=dict(head_convs=1, box_loss="giou"),
                                    train=dict(train_size=(64, 96, 128, 128))),
    "fast_64_96_128_128_1200": dict(steps=1200, images=2880, flip=True, model=dict(head_convs=1, box_loss="giou"),
                                    train=dict(train_size=(64, 96, 128, 128))),
    # 2026-11-26, second session, on the H100 (AP against FLOPs; steps and FLOPs carry to the CPU): cheaper than 14.3 TFLOP?
    "fast_96_128_1200": dict(steps=1200, images=2880, flip=True, model=dict(head_convs=1, box_loss="giou"),
                             train=dict(train_size=(96, 128))),
    "fast_96_128_1080": dict(steps=1080, images=2880, flip=True, model=dict(head_convs=1, box_loss="giou"),
                             train=dict(train_size=(96, 128))),
    "fast_64_128_1440": dict(steps=1440, images=2880, flip=True, model=dict(head_convs=1, box_loss="giou"),
                             train=dict(train_size=(64, 128))),
    "fast_h32_96_128_1440": dict(steps=1440, images=2880, flip=True, train=dict(train_size=(96, 128)),
                                 model=dict(head_convs=1, box_loss="giou", head_channels=32)),
    "fast_h32_96_128_1200": dict(steps=1200, images=2880, flip=True, train=dict(train_size=(96, 128)),
                                 model=dict(head_convs=1, box_loss="giou", head_channels=32)),
    "fast_b8_96_128_2160": dict(steps=2160, images=2880, flip=True, model=dict(head_convs=1, box_loss="giou"),
                                train=dict(train_size=(96, 128), batch_size=8)),
    "fast_b8_96_128_2400": dict(steps=2400, images=2880, flip=True, model=dict(head_convs=1, box_loss="giou"),
                                train=dict(train_size=(96, 128), batch_size=8)),
    "smoke": dict(steps=3, images=16, train=dict(batch_size=4)),  # the code path in seconds (tests)
    "smoke_fast": dict(steps=2, images=16, flip=True, model=dict(head_convs=1, box_loss="giou"),
                       train=dict(batch_size=4, train_size=128)),  # the flips and train_size path in seconds (tests)
    "smoke_schedule": dict(steps=2, images=16, flip=True, model=dict(head_convs=1, box_loss="giou"),
                           train=dict(batch_size=4, train_size=(96, 128))),  # a size schedule's FLOPs (tests)
}


def _merge(preset: dict, recipe: dict) -> tuple[dict, dict, dict]:
    model = {**preset["model"], **recipe.get("model", {})}
    data = {**preset["data"], **recipe.get("data", {})}
    train = {**preset["train"], **recipe.get("train", {})}
    return model, data, train


def gflops_per_step(model_kw: dict, batch: int) -> float:
    """Forward + backward GFLOPs of one training step at the recipe's input size (a batch of `batch` shapes images)."""
    from torch.utils.flop_counter import FlopCounterMode

    from retinanet_lab import RetinaNet
    from retinanet_lab.data import ShapesDataset

    model = RetinaNet(5, **model_kw).train()
    data = ShapesDataset(2, seed=0, image_size=160, difficulty=0.3, min_size=12)
    images, targets = zip(*(data[i] for i in range(2)))
    with FlopCounterMode(display=False) as counter:
        sum(model(list(images), list(targets)).values()).backward()
    return counter.get_total_flops() / 2 * batch / 1e9


def run_recipe(name: str, device: str, seed: int = 0, threads: int | None = None) -> dict:
    import torch

    from retinanet_lab import RetinaNet
    from retinanet_lab.data import ShapesDataset
    from retinanet_lab.evaluate import evaluate
    from retinanet_lab.presets import preset
    from retinanet_lab.seeds import VALIDATION
    from retinanet_lab.train import fit

    if threads:
        torch.set_num_threads(threads)
    recipe = RECIPES[name]
    model_kw, data_kw, train_kw = _merge(preset("classroom"), recipe)
    torch.manual_seed(seed)
    model = RetinaNet(5, **model_kw)
    start = time.perf_counter()  # the seconds count drawing the images (in worker processes) and training
    data = ShapesDataset(recipe["images"], seed=seed, **data_kw).draw_all(threads or None)
    if recipe.get("flip"):  # as `retinanet-lab train` does on the shapes world
        from retinanet_lab.data import train_transforms

        data.transform = train_transforms(flip=True)
    fit(model, data, steps=recipe["steps"], device=device, amp=False, seed=seed, progress=False, verbose=False,
        checkpoint_every=0, **train_kw)
    seconds = time.perf_counter() - start
    model.min_size = model.max_size = 160  # scored as the classroom model is used: 160 px
    val = ShapesDataset(200, seed=VALIDATION, **{**data_kw, "cache": False})
    r = evaluate(model, val, device=device, progress=False)
    batch = train_kw["batch_size"]
    sizes = train_kw.get("train_size") or model_kw["min_size"]
    sizes = (sizes,) if isinstance(sizes, int) else sizes  # a schedule: its sizes take equal shares of the steps
    step_gflops = sum(gflops_per_step({**model_kw, "min_size": s, "max_size": s}, batch) for s in sizes) / len(sizes)
    return {"recipe": name, "seed": seed, "device": device, "steps": recipe["steps"], "batch": batch,
            "images_seen": recipe["steps"] * batch, "distinct_images": recipe["images"],
            "GFLOPs_per_step": round(step_gflops, 2), "TFLOPs": round(step_gflops * recipe["steps"] / 1e3, 2),
            "seconds": round(seconds, 1), "AP": round(r["AP"], 4), "AP50": round(r["AP50"], 4),
            "bar": r["AP50"] >= 0.90 and r["AP"] >= 0.60}


def _worker(args):
    name, device, seed, threads = args
    return run_recipe(name, device, seed, threads)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=sorted(RECIPES), help="these recipes only")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int, default=1, help="recipes run at once, each in its own process")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "classroom_levers.jsonl"))
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    names = args.only or [n for n in RECIPES if not n.startswith("smoke")]
    tasks = [(name, args.device, seed, 1 if args.jobs > 1 else None) for name in names for seed in args.seeds]
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.imap_unordered(_worker, tasks)
            for r in results:
                _record(r, args.out)
    else:
        for task in tasks:
            _record(_worker(task), args.out)
    return 0


def _record(r: dict, path: str) -> None:
    print(json.dumps(r), flush=True)
    with open(path, "a") as f:
        f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
