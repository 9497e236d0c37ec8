"""The configs (retinanet_lab/config.py): each default written once, validation naming the field, frozen values,
the flat checkpoint dict both ways (old checkpoints included), and the model's settings as views of its config."""

import dataclasses
import inspect

import pytest
import torch

from retinanet_lab import RetinaNet
from retinanet_lab.classroom import assets_dir
from retinanet_lab.config import (
    FLAT_KEYS,
    AnchorConfig,
    ArchitectureConfig,
    InferenceConfig,
    InputConfig,
    LossConfig,
    MatchingConfig,
    RetinaNetConfig,
)


def tiny(**kw):
    args = dict(backbone="resnet_tiny", fpn_channels=16, head_channels=16, head_convs=1, min_size=64, max_size=64)
    return RetinaNet(3, **{**args, **kw})


def _defaults(fn) -> dict:
    return {name: p.default for name, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty}


# ---- each default lives once ------------------------------------------------------------------------------------
def test_the_loss_function_defaults_are_the_loss_configs():
    from retinanet_lab.loss import retinanet_loss

    names = {"alpha": "focal_alpha", "gamma": "focal_gamma", "box_loss": "box_loss", "beta": "smooth_l1_beta",
             "normalization": "normalization"}
    defaults = _defaults(retinanet_loss)
    config = LossConfig()
    for arg, field in names.items():
        if arg in defaults:
            assert defaults[arg] == getattr(config, field), arg
    if "box_weights" in defaults:
        assert tuple(defaults["box_weights"]) == ArchitectureConfig.box_weights


def test_the_plain_tensor_functions_take_their_defaults_from_the_configs():
    from retinanet_lab.heads import ClassificationSubnet, new_classifier
    from retinanet_lab.matching import assign_from_iou
    from retinanet_lab.postprocess import BOX_WEIGHTS

    m = _defaults(assign_from_iou)
    assert (m["fg_iou"], m["bg_iou"], m["allow_low_quality"]) == dataclasses.astuple(MatchingConfig())
    assert BOX_WEIGHTS == ArchitectureConfig.box_weights
    heads = _defaults(ClassificationSubnet)
    arch = ArchitectureConfig(num_classes=1)
    assert (heads["num_convs"], heads["channels"], heads["norm"], heads["prior_prob"]) == (
        arch.head_convs, arch.head_channels, arch.norm, arch.prior_prob)
    assert _defaults(new_classifier)["prior_prob"] == arch.prior_prob


def test_functions_given_no_config_use_the_config_defaults():
    """preprocess / match_anchors / postprocess_detections with config=None equal the same with the default config."""
    from retinanet_lab.anchors import make_anchors
    from retinanet_lab.matching import match_anchors
    from retinanet_lab.postprocess import postprocess_detections
    from retinanet_lab.transform import preprocess

    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 50, 70, generator=g)]
    a, b = preprocess(images, None, min_size=64, max_size=96), preprocess(images, None, InputConfig(min_size=64, max_size=96))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[1][0][0] == 64
    anchors = make_anchors(AnchorConfig(sizes=(16,), levels=(3,)), (64, 64), [(8, 8)])
    gt = torch.tensor([[[4.0, 4, 30, 24]]])
    valid = torch.ones(1, 1, dtype=torch.bool)
    assert torch.equal(match_anchors(anchors[0], gt, valid).index, match_anchors(anchors[0], gt, valid, MatchingConfig()).index)
    strict = match_anchors(anchors[0], gt, valid, fg_iou=0.9, allow_low_quality=False)
    assert torch.equal(strict.index, match_anchors(anchors[0], gt, valid, MatchingConfig(0.9, 0.4, False)).index)
    logits, deltas = [torch.randn(1, anchors[0].shape[0], 2, generator=g)], [torch.zeros(1, anchors[0].shape[0], 4)]
    x = postprocess_detections(logits, deltas, anchors, [(64, 64)])[0]
    y = postprocess_detections(logits, deltas, anchors, [(64, 64)], InferenceConfig())[0]
    assert torch.equal(x["scores"], y["scores"]) and len(x["scores"]) > 0
    with pytest.raises(TypeError, match="InferenceConfig"):
        postprocess_detections(logits, deltas, anchors, [(64, 64)], 0.3)


# ---- validation ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, kwargs, field", [
    (ArchitectureConfig, dict(num_classes=0), "num_classes"),
    (ArchitectureConfig, dict(num_classes=True), "num_classes"),
    (ArchitectureConfig, dict(num_classes=2, class_names=("a",)), "class_names"),
    (ArchitectureConfig, dict(num_classes=2, trainable_backbone_layers=6), "trainable_backbone_layers"),
    (ArchitectureConfig, dict(num_classes=2, norm="batch"), "norm"),
    (ArchitectureConfig, dict(num_classes=2, p6_from="c4"), "p6_from"),
    (ArchitectureConfig, dict(num_classes=2, prior_prob=1.0), "prior_prob"),
    (ArchitectureConfig, dict(num_classes=2, backbone_weights="coco"), "backbone_weights"),
    (ArchitectureConfig, dict(num_classes=2, box_weights=(1.0, 1.0, 0.0, 1.0)), "box_weights"),
    (InputConfig, dict(min_size=0), "min_size"),
    (InputConfig, dict(min_size=()), "min_size"),
    (InputConfig, dict(max_size=12.5), "max_size"),
    (InputConfig, dict(image_std=(0.2, 0.0, 0.2)), "image_std"),
    (InputConfig, dict(image_mean=(0.5, 0.5)), "image_mean"),
    (InputConfig, dict(size_divisible=0), "size_divisible"),
    (MatchingConfig, dict(fg_iou=0.3, bg_iou=0.4), "bg_iou"),
    (MatchingConfig, dict(fg_iou=1.5), "fg_iou"),
    (LossConfig, dict(focal_alpha=1.5), "focal_alpha"),
    (LossConfig, dict(focal_gamma=-1), "focal_gamma"),
    (LossConfig, dict(box_loss="iou"), "box_loss"),
    (LossConfig, dict(smooth_l1_beta=-0.1), "smooth_l1_beta"),
    (LossConfig, dict(normalization="anchor"), "normalization"),
    (InferenceConfig, dict(score_thresh=1.0), "score_thresh"),
    (InferenceConfig, dict(nms_thresh=-0.1), "nms_thresh"),
    (InferenceConfig, dict(topk_candidates=0), "topk_candidates"),
    (InferenceConfig, dict(detections_per_img=2.5), "detections_per_img"),
])
def test_a_bad_value_names_its_field(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)


def test_configs_are_frozen_and_replace_validates():
    config = InferenceConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.score_thresh = 0.3
    assert dataclasses.replace(config, score_thresh=0.3).score_thresh == 0.3 and config.score_thresh == 0.05
    with pytest.raises(ValueError, match="score_thresh"):
        dataclasses.replace(config, score_thresh=-1.0)
    assert InputConfig(min_size=[480, 512]).min_size == (480, 512)  # lists (JSON) become tuples


# ---- the flat dict of checkpoints ------------------------------------------------------------------------------------
def test_a_config_round_trips_through_a_checkpoint(tmp_path):
    config = RetinaNetConfig(
        arch=ArchitectureConfig(num_classes=2, class_names=("cat", "dog"), backbone="resnet18", norm="group"),
        anchors=AnchorConfig(sizes=(16, 32, 64, 128, 256), truncate_sizes=False),
        input=InputConfig(min_size=(224, 256), max_size=400), matching=MatchingConfig(0.6, 0.3, False),
        loss=LossConfig(focal_alpha=None, box_loss="giou", normalization="image"),
        inference=InferenceConfig(score_thresh=0.2, detections_per_img=300))
    flat = config.to_dict()
    assert set(flat) == set(FLAT_KEYS) - {"backbone_weights"}  # where the first weights came from is not stored
    torch.save({"config": flat}, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)["config"]
    assert RetinaNetConfig.from_dict(loaded) == config
    assert loaded["loss_normalization"] == "image" and loaded["class_names"] == ["cat", "dog"]


def test_the_shipped_checkpoint_config_loads_and_is_written_back_unchanged():
    ckpt = torch.load(assets_dir() / "classroom_model.pt", weights_only=True)
    config = RetinaNetConfig.from_dict(ckpt["config"])
    assert config.to_dict() == ckpt["config"]
    assert config.arch.backbone == "resnet_tiny" and config.anchors.sizes == (16, 32, 64, 128, 256)


def test_an_older_flat_config_loads_with_defaults_and_an_unknown_key_is_named():
    old = {"num_classes": 3, "backbone": "resnet18", "anchors": {"sizes": [32, 64, 128, 256, 512]}, "min_size": 600}
    config = RetinaNetConfig.from_dict(old)
    assert config.input.min_size == 600 and config.loss == LossConfig() and config.anchors == AnchorConfig()
    with pytest.raises(TypeError, match="score_threshold"):
        RetinaNetConfig.from_dict({**old, "score_threshold": 0.1})
    with pytest.raises(TypeError, match="num_classes"):
        RetinaNetConfig.from_dict({"backbone": "resnet18"})


# ---- the model and its config -----------------------------------------------------------------------------------------
def test_the_model_is_built_from_a_config_or_by_keyword():
    config = RetinaNetConfig(ArchitectureConfig(num_classes=3, backbone="resnet_tiny", fpn_channels=16, head_channels=16,
                                                head_convs=1), input=InputConfig(min_size=64, max_size=64))
    torch.manual_seed(0)
    a = RetinaNet(config)
    torch.manual_seed(0)
    b = tiny()
    torch.manual_seed(0)
    c = RetinaNet(**b.config)
    assert a.cfg == b.cfg == c.cfg and a.config == b.config
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name  # the same modules, built in the same order
    assert RetinaNet(config, score_thresh=0.3).score_thresh == 0.3
    with pytest.raises(TypeError, match="num_classes"):
        RetinaNet(3, num_classes=3)
    with pytest.raises(TypeError, match="min_sizes"):
        RetinaNet(3, min_sizes=64)


def test_assigning_a_setting_replaces_the_config():
    model = tiny()
    before = model.cfg
    model.score_thresh = 0.3
    assert model.cfg.inference.score_thresh == 0.3 and model.config["score_thresh"] == 0.3
    assert before.inference.score_thresh == 0.05  # a new config, the old one untouched
    model.loss_normalization = "image"
    model.focal_gamma, model.focal_alpha = 0.0, None
    model.min_size, model.max_size = 96, 160
    assert model.cfg.loss == LossConfig(focal_alpha=None, focal_gamma=0.0, normalization="image")
    assert (model.cfg.input.min_size, model.cfg.input.max_size) == (96, 160)
    with pytest.raises(ValueError, match="nms_thresh"):
        model.nms_thresh = 2.0
    assert model.nms_thresh == 0.5  # a rejected value changes nothing
    with pytest.raises(ValueError, match="anchors per location"):
        model.anchor_config = AnchorConfig(aspect_ratios=(1.0,))
    model.anchor_config = AnchorConfig(sizes=(8, 16, 32, 64, 128))
    assert model.config["anchors"]["sizes"] == (8, 16, 32, 64, 128)
    assert RetinaNet(**model.config).cfg == model.cfg
