"""The model's behaviour: train/eval API, images without boxes, clear errors, inspect, AMP, training."""

import math

import pytest
import torch

from retinanet_lab import RetinaNet, prior_bias
from retinanet_lab.matching import BACKGROUND


def small(**kw):
    torch.manual_seed(0)
    args = dict(num_classes=3, backbone="resnet18", fpn_channels=64, head_channels=64, head_convs=2, min_size=128, max_size=192)
    args.update(kw)
    return RetinaNet(**args)


def scene():
    img = torch.full((3, 120, 160), 0.3)
    img[:, 20:80, 10:70] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    img[:, 40:100, 100:150] = torch.tensor([0.1, 0.2, 0.9])[:, None, None]
    return img, {"boxes": torch.tensor([[10.0, 20, 70, 80], [100, 40, 150, 100]]), "labels": torch.tensor([1, 2])}


def test_train_and_eval_outputs():
    model = small()
    img, tgt = scene()
    losses = model.train()(([img, img[:, :100]]), [tgt, {"boxes": tgt["boxes"][:1], "labels": tgt["labels"][:1]}])
    assert set(losses) == {"classification", "bbox_regression"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    model.eval()
    with torch.no_grad():
        dets = model([img, torch.rand(3, 64, 300)])
    assert len(dets) == 2
    for d, (h, w) in zip(dets, [(120, 160), (64, 300)]):
        assert set(d) == {"boxes", "scores", "labels"}
        if len(d["boxes"]):  # in the input image's own coordinates
            assert d["boxes"][:, 2].max() <= w + 1e-3 and d["boxes"][:, 3].max() <= h + 1e-3
            assert d["labels"].min() >= 1 and d["labels"].max() <= 3


def test_prior_bias_initialisation():
    model = small(prior_prob=0.01)
    assert model.class_subnet.logits.bias.detach().allclose(torch.tensor(prior_bias(0.01)))
    assert prior_bias(0.01) == pytest.approx(-math.log(99))
    with torch.no_grad():
        r = model.eval().inspect([scene()[0]])
    p = torch.sigmoid(torch.cat([c.flatten() for c in r["cls_logits"]]))
    assert p.mean().item() == pytest.approx(0.01, rel=0.1)  # every anchor starts at about pi
    assert model([scene()[0]])[0]["boxes"].shape[0] == 0  # and so, below 0.05, nothing is detected


def test_image_without_boxes():
    model = small().train()
    img, _ = scene()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model([img], [empty])
    assert torch.isfinite(losses["classification"]) and losses["classification"] > 0
    assert losses["bbox_regression"].item() == 0.0
    r = model.inspect([img], [empty])
    assert all((m == BACKGROUND).all() for m in r["matched"])
    losses["classification"].backward()  # gradients flow from negatives alone
    assert model.class_subnet.logits.weight.grad.abs().sum() > 0


def test_loss_is_normalised_by_batch_foreground_count():
    model = small().train()
    img, tgt = scene()
    r = model.inspect([img, img], [tgt, {"boxes": tgt["boxes"][:1], "labels": tgt["labels"][:1]}])
    fg = sum(int((m >= 0).sum()) for m in r["matched"])
    assert fg > 0
    # the same sum over both images divided by the count of both: equals the mean of the per-image
    # sums weighted by their counts, not their plain mean
    per_image = [model.inspect([img], [t])["losses"]["classification"] for t in
                 (tgt, {"boxes": tgt["boxes"][:1], "labels": tgt["labels"][:1]})]
    fg_each = [sum(int((m >= 0).sum()) for m in model.inspect([img], [t])["matched"]) for t in
               (tgt, {"boxes": tgt["boxes"][:1], "labels": tgt["labels"][:1]})]
    expected = (per_image[0] * fg_each[0] + per_image[1] * fg_each[1]) / sum(fg_each)
    torch.testing.assert_close(r["losses"]["classification"], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("box_loss", ["smooth_l1", "l1", "giou"])
def test_a_few_steps_reduce_the_loss(box_loss):
    model = small(box_loss=box_loss).train()
    img, tgt = scene()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    first = None
    for _ in range(8):
        losses = model([img], [tgt])
        total = sum(losses.values())
        first = first if first is not None else total.item()
        opt.zero_grad()
        total.backward()
        opt.step()
    assert total.item() < first


def test_inspect_shapes():
    model = small()
    img, tgt = scene()
    r = model.inspect([img], [tgt])
    assert r["levels"] == [3, 4, 5, 6, 7]
    for logits, deltas, anchors, matched, (h, w) in zip(r["cls_logits"], r["box_deltas"], r["anchors"], r["matched"], r["feature_sizes"]):
        assert logits.shape == (1, h, w, 9, 3) and deltas.shape == (1, h, w, 9, 4)
        assert anchors.shape == (h, w, 9, 4) and matched.shape == (1, h, w, 9)
    assert r["batch"].shape[-1] % 32 == 0 and r["batch"].shape[-2] % 32 == 0
    # regression targets decode back onto the matched box from the anchor
    from retinanet_lab import decode_boxes

    level = 0
    fg = r["matched"][level][0] >= 0
    assert fg.any()
    decoded = decode_boxes(r["target_deltas"][level][0][fg], r["anchors"][level][fg])
    torch.testing.assert_close(decoded, r["matched_boxes"][level][0][fg], rtol=1e-5, atol=1e-3)
    assert (r["target_deltas"][level][0][~fg] == 0).all()


@pytest.mark.parametrize(
    "images, targets, error, match",
    [
        ([torch.rand(1, 64, 64)], None, ValueError, r"images\[0\].*\(3, H, W\)"),
        ([torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)], None, TypeError, r"images\[0\].*uint8"),
        ([torch.rand(3, 64, 64) * 255], None, ValueError, r"images\[0\].*divide by 255"),
        (torch.rand(2, 3, 64, 64), None, TypeError, "list"),
        ([], None, TypeError, "non-empty list"),
        ([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[10.0, 10, 5, 20]]), "labels": torch.tensor([1])}],
         ValueError, r"targets\[0\]\['boxes'\]\[0\].*degenerate"),
        ([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[1.0, 1, 5, 5]]), "labels": torch.tensor([0])}],
         ValueError, r"label 0.*1\.\.3"),
        ([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[1.0, 1, 5, 5]]), "labels": torch.tensor([4])}],
         ValueError, r"label 4.*1\.\.3"),
        ([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[1.0, 1, 5, 5]]), "labels": torch.tensor([1.0])}],
         TypeError, r"labels'\] must be a 1-D integer"),
        ([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[1.0, 1, 5, 5]]), "labels": torch.tensor([1, 2])}],
         ValueError, "1 boxes but 2 labels"),
        ([torch.rand(3, 64, 64)], None, ValueError, "needs targets"),
        ([torch.rand(3, 64, 64)], [], ValueError, "list of 1 dicts"),
    ],
)
def test_clear_errors(images, targets, error, match):
    model = small().train()
    with pytest.raises(error, match=match):
        model(images, targets)


def test_constructor_errors():
    with pytest.raises(ValueError, match="num_classes"):
        small(num_classes=0)
    with pytest.raises(ValueError, match="backbone"):
        small(backbone="vgg16")
    with pytest.raises(ValueError, match="norm"):
        small(norm="batch")
    with pytest.raises(ValueError, match="prior_prob"):
        small(prior_prob=1.0)
    with pytest.raises(ValueError, match="box_loss"):
        small(box_loss="iou")
    with pytest.raises(ValueError, match="p6_from"):
        small(p6_from="c4")


def test_config_rebuilds_the_same_model(tmp_path):
    model = small(norm="group", box_loss="giou", score_thresh=0.2)
    model.nms_thresh = 0.6
    path = tmp_path / "m.pt"
    torch.save({"config": model.config, "model": model.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    clone = RetinaNet(**ckpt["config"])
    clone.load_state_dict(ckpt["model"])
    assert clone.config == model.config and clone.nms_thresh == 0.6
    img = scene()[0]
    with torch.no_grad():
        torch.testing.assert_close(clone.eval().inspect([img])["cls_logits"][0], model.eval().inspect([img])["cls_logits"][0])


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_autocast_cpu_loss_finite(dtype):
    model = small().train()
    img, tgt = scene()
    with torch.autocast("cpu", dtype=dtype):
        losses = model([img], [tgt])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_cuda_train_and_eval_when_available(device):
    model = small().to(device)
    img, tgt = scene()
    img, tgt = img.to(device), {k: v.to(device) for k, v in tgt.items()}
    with torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16):
        losses = model.train()([img], [tgt])
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        det = model.eval()([img])[0]
    assert det["boxes"].device.type == device.type


def test_freezing_backbone_stages():
    frozen = small(trainable_backbone_layers=0)
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    assert all(p.requires_grad for p in frozen.fpn.parameters())
    default = small()
    assert not default.backbone.conv1.weight.requires_grad and default.backbone.layer4[0].conv1.weight.requires_grad


def test_tiny_backbone_and_presets():
    from retinanet_lab.backbone import ResNetBody
    from retinanet_lab.presets import PRESETS, preset

    body = ResNetBody("resnet_tiny", frozen_bn=False, trainable_layers=5)
    c3, c4, c5 = body(torch.zeros(1, 3, 160, 160))
    assert [c.shape[1] for c in (c3, c4, c5)] == [64, 128, 256] and [c.shape[-1] for c in (c3, c4, c5)] == [20, 10, 5]
    with pytest.raises(ValueError, match="no pretrained weights"):
        ResNetBody("resnet_tiny", weights="imagenet")
    model = RetinaNet(5, **preset("classroom")["model"])
    assert sum(p.numel() for p in model.parameters()) < 2_500_000  # a checkpoint under 10 MB
    assert model.anchor_config.level_sizes(0) == [16, 20, 25]
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    assert set(PRESETS) == {"paper", "classroom", "classroom_fast"}
    from retinanet_lab.cli import PRESET_NAMES

    assert set(PRESET_NAMES) == set(PRESETS)  # the command line offers every preset


# ---- one forward path, recorded ---------------------------------------------------------------------------------------
def test_inspect_shows_the_tensors_of_the_one_pass_forward_computes():
    """inspect runs forward once with a record: the subnets run once, and what it returns are views of their outputs."""
    model = small().eval()
    img, tgt = scene()
    seen = []
    model.class_subnet.register_forward_hook(lambda module, args, out: seen.append(out))
    r = model.inspect([img], [tgt])
    assert len(seen) == 1  # one pass
    for shown, computed in zip(r["cls_logits"], seen[0]):
        assert shown.data_ptr() == computed.data_ptr() and torch.equal(shown.reshape(computed.shape), computed)
    record = {}
    with torch.no_grad():
        detections = model([img], [tgt], record=record)
        plain = model([img])
    assert list(record) == ["preprocess", "features", "heads", "anchors", "match", "loss", "select", "above_thresh",
                            "decode", "nms", "candidates"]  # the stages, in the order forward calls them
    for d, p in zip(detections, plain):  # recording changes nothing
        assert all(torch.equal(d[k], p[k]) for k in ("boxes", "scores", "labels"))
    again = model.levels_of(record)
    assert set(again) == set(r) and all(torch.equal(a, b) for a, b in zip(again["cls_logits"], r["cls_logits"]))
    torch.testing.assert_close(again["losses"], r["losses"])


def test_a_recorded_training_pass_returns_the_losses_it_records():
    model = small().train()
    img, tgt = scene()
    record = {}
    losses = model([img], [tgt], record=record)
    assert record["loss"] is losses and losses["classification"].requires_grad
    assert "select" not in record  # training does not post-process
    plain = model([img], [tgt])
    for key in losses:
        torch.testing.assert_close(losses[key], plain[key])
    matched = record["match"]["matches"].index  # (B, A), what the loss was computed from
    assert matched.shape == (1, sum(a.shape[0] for a in record["anchors"])) and (matched >= 0).any()
    only_record = {}
    assert model([img], record=only_record) is None and "heads" in only_record  # train mode, recording without targets


def test_replace_classes_gives_a_fresh_classifier_and_keeps_the_rest():
    model = small(num_classes=3, prior_prob=0.01)
    tower = model.class_subnet.tower[0][0].weight.clone()
    box = model.box_subnet.deltas.weight.clone()
    model.replace_classes(["cat", "dog"], prior_prob=0.05)
    assert model.num_classes == 2 and model.class_names == ["cat", "dog"] and model.class_subnet.num_classes == 2
    assert model.class_subnet.logits.out_channels == 9 * 2
    assert torch.allclose(model.class_subnet.logits.bias, torch.tensor(prior_bias(0.05)))
    assert 0.005 < model.class_subnet.logits.weight.std().item() < 0.015  # normal(std=0.01), section 4.1
    assert torch.equal(model.class_subnet.tower[0][0].weight, tower) and torch.equal(model.box_subnet.deltas.weight, box)
    assert model.config["num_classes"] == 2 and model.config["class_names"] == ["cat", "dog"]
    clone = RetinaNet(**model.config)
    clone.load_state_dict(model.state_dict())  # a checkpoint of the new model reloads
    model.replace_classes(4)
    assert model.class_names == ["1", "2", "3", "4"] and model.config["class_names"] is None
    assert torch.allclose(model.class_subnet.logits.bias, torch.tensor(prior_bias(0.05)))  # the config's prior
    with pytest.raises(ValueError, match="num_classes"):
        model.replace_classes([])
    losses = model.train()([scene()[0]], [{"boxes": torch.tensor([[5.0, 5, 60, 60]]), "labels": torch.tensor([4])}])
    assert all(torch.isfinite(v) for v in losses.values())
