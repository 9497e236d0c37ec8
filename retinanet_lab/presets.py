"""Named configurations: the paper's detector, and the small classroom one that trains on a laptop CPU.

    model = RetinaNet(**PRESETS["classroom"]["model"])
    data = ShapesDataset(PRESETS["classroom"]["run"]["num_images"], **PRESETS["classroom"]["data"])
    fit(model, data, epochs=PRESETS["classroom"]["run"]["epochs"], **PRESETS["classroom"]["train"])

"model" goes to RetinaNet, "data" to ShapesDataset, "train" to fit, and "run" holds the command line's
defaults (how many shapes images, epochs, how often to evaluate).
"""

from __future__ import annotations

from .anchors import AnchorConfig

__all__ = ["PRESETS", "preset"]

PRESETS = {
    # Lin et al. 2017: ResNet-50-FPN, 800 px (the final results; Table 1's ablations use 600), SGD 0.01 for batch 16
    # (scaled linearly to other batches, Goyal et al.), 90k iterations. max_size 1333 is Detectron's, not the paper's.
    "paper": {
        "model": dict(backbone="resnet50", fpn_channels=256, head_convs=4, head_channels=256, min_size=800, max_size=1333),
        "data": dict(image_size=512, difficulty=0.5),
        "train": dict(batch_size=16, optimizer="sgd", base_lr=0.01, schedule="step"),
        "run": dict(num_images=2000, epochs=4, eval_every=1),
    },
    # Small enough to train from scratch on a 2-core CPU in minutes: a narrow ResNet, a 64-channel pyramid, two
    # 64-channel convolutions per subnet with GroupNorm, 160 px images, anchors halved to fit them (16 ... 256 px),
    # trained BatchNorm (no pretrained statistics to freeze), AdamW. The images are drawn once and kept in memory
    # (cache=True, read in the training process: num_workers=0), which halves the time of a step on 2 cores.
    # Measured on the 2-core CPU, 2880 images x 8 epochs = 1440 steps in 266 s: AP 0.70, AP50 0.93 on 200 fresh
    # images with lr 5e-3 (AP 0.71 / AP50 0.92 with 3e-3); retinanet_lab/assets/classroom_model.json has the shipped run. Earlier
    # tries: 5 epochs with a drawing worker, 306 s, AP 0.59 / AP50 0.82; without GroupNorm, lr 2e-3: AP 0.38 / 0.61.
    "classroom": {
        "model": dict(backbone="resnet_tiny", frozen_bn=False, trainable_backbone_layers=5, fpn_channels=64, head_convs=2,
                      head_channels=64, norm="group", min_size=160, max_size=160,
                      anchors=AnchorConfig(sizes=(16, 32, 64, 128, 256))),
        "data": dict(image_size=160, difficulty=0.3, min_size=12, cache=True),
        "train": dict(batch_size=16, optimizer="adamw", lr=5e-3, weight_decay=1e-4, schedule="cosine", warmup_steps=50,
                      clip_grad_norm=10.0, num_workers=0),
        "run": dict(num_images=2880, epochs=8, eval_every=8),
    },
}
# The classroom model's cheaper sibling: one convolution per subnet instead of two, small images first (fit's
# train_size schedule: the first half of the steps at 96 px, the second at 128) while the model is evaluated, saved
# and used at 160, and the GIoU box loss (torchvision v2's) instead of the paper's smooth L1: 9.90 GFLOPs a step on
# average instead of 23.66, 14.3 TFLOP for its 1440 steps instead of 34.1. Four seeds (benchmarks/RESULTS.md, "Later
# still"): AP 0.682 / 0.673 / 0.689 / 0.674, AP50 0.905 / 0.915 / 0.920 / 0.919 on 200 fresh images, as good as all
# its steps at 128 px (18.2 TFLOP: AP50 0.916-0.923). Nothing cheaper clears the bar on every seed: starting at 64 px,
# fewer steps, batch 8 or 32-channel subnets (10-12.8 TFLOP) each missed on at least half the seeds tried (RESULTS.md,
# "Below 14.3 TFLOP?"). GIoU gains 0.04 AP at equal steps ("The classroom model in two minutes?").
PRESETS["classroom_fast"] = {
    "model": {**PRESETS["classroom"]["model"], "head_convs": 1, "box_loss": "giou"},
    "data": dict(PRESETS["classroom"]["data"]),
    "train": {**PRESETS["classroom"]["train"], "train_size": (96, 128)},
    "run": dict(PRESETS["classroom"]["run"]),
}


def preset(name: str) -> dict:
    """A copy of a preset, with a clear error for an unknown name."""
    import copy

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
