"""Named configurations: the paper's detector, and the small classroom one that trains on a laptop CPU.

    model = RetinaNet(**PRESETS["classroom"]["model"])
    data = ShapesDataset(**PRESETS["classroom"]["data"])
    fit(model, data, **PRESETS["classroom"]["train"])
"""

from __future__ import annotations

from .anchors import AnchorConfig

__all__ = ["PRESETS", "preset"]

PRESETS = {
    # Lin et al. 2017: ResNet-50-FPN, 800 px, SGD 0.01 for batch 16 (scaled linearly), 90k iterations.
    "paper": {
        "model": dict(backbone="resnet50", fpn_channels=256, head_convs=4, head_channels=256, min_size=800, max_size=1333),
        "data": dict(image_size=512, difficulty=0.5),
        "train": dict(batch_size=16, optimizer="sgd", base_lr=0.01, schedule="step"),
    },
    # Small enough to train from scratch on a 2-core CPU in minutes: a narrow ResNet, a 64-channel pyramid, two
    # 64-channel convolutions per subnet with GroupNorm, 160 px images, anchors halved to fit them (16 ... 256 px),
    # trained BatchNorm (no pretrained statistics to freeze), AdamW. Measured on the 2-core CPU, 2880 shapes images
    # x 5 epochs (306 s): AP 0.59, AP50 0.82 on 200 fresh images (without GroupNorm, lr 2e-3: AP 0.38, AP50 0.61).
    "classroom": {
        "model": dict(backbone="resnet_tiny", frozen_bn=False, trainable_backbone_layers=5, fpn_channels=64, head_convs=2,
                      head_channels=64, norm="group", min_size=160, max_size=160,
                      anchors=AnchorConfig(sizes=(16, 32, 64, 128, 256))),
        "data": dict(image_size=160, difficulty=0.3, min_size=12),
        "train": dict(batch_size=16, optimizer="adamw", lr=3e-3, weight_decay=1e-4, schedule="cosine", warmup_steps=50,
                      clip_grad_norm=10.0),
    },
}


def preset(name: str) -> dict:
    """A copy of a preset, with a clear error for an unknown name."""
    import copy

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
