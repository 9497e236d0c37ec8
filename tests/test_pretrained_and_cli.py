"""torchvision's COCO weights through a file we generate (no network), the command line, and the
project's standing promises (README commands, lint)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision.models._api as tv_api
from conftest import canonical
from torchvision.models.detection import retinanet_resnet50_fpn

from retinanet_lab import RetinaNet
from retinanet_lab.torchvision_compat import weights_path

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def offline(*args, **kwargs):
        raise URLError("no network in this test")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    return tmp_path


def test_pretrained_from_cached_file(torch_home):
    torch.manual_seed(0)
    tv = retinanet_resnet50_fpn(weights=None, weights_backbone=None, min_size=256, max_size=320).eval()
    path = Path(weights_path("coco"))
    assert path.parent == torch_home / "hub" / "checkpoints"
    path.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), path)
    model = RetinaNet.pretrained("coco", min_size=256, max_size=320)
    assert model.num_classes == 90 and model.class_names[0] == "person" and not model.training
    assert model.config["detections_per_img"] == 300  # torchvision's, not this lab's default of 100
    assert model.box_loss == "l1" and model.fpn.p6_from == "p5"
    # eps of the frozen BatchNorm is 0 for these weights, as in torchvision: set it there too to compare
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 0.0
    with torch.no_grad():
        head = tv.head.classification_head
        bias = head.cls_logits.bias.view(-1, head.num_classes)
        bias.normal_(-2.5, 1.0)
        bias[:, 0] = -30
        model.class_subnet.logits.bias.copy_(bias[:, 1:].reshape(-1))
        image = torch.rand(3, 240, 300)
        a, b = canonical(tv([image])[0]), canonical(model([image])[0])
    assert len(a["scores"]) > 10 and len(a["scores"]) == len(b["scores"])
    torch.testing.assert_close(b["boxes"], a["boxes"], rtol=1e-4, atol=1e-2)


def test_pretrained_offline_says_where_to_put_the_file(torch_home):
    with pytest.raises(RuntimeError) as e:
        RetinaNet.pretrained("coco_v2")
    message = str(e.value)
    assert "retinanet_resnet50_fpn_v2_coco" in message and str(torch_home / "hub" / "checkpoints") in message
    with pytest.raises(ValueError, match="unknown pretrained"):
        RetinaNet.pretrained("imagenet")


def test_imagenet_backbone_offline_fails_clearly(torch_home):
    with pytest.raises(RuntimeError, match=r"(?s)no network.*resnet18-.*\.pth"):
        RetinaNet(3, backbone="resnet18", backbone_weights="imagenet")


def _cli(*args, timeout=300):
    exe = shutil.which("retinanet-lab", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "retinanet_lab.cli"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout)


def test_cli_help():
    out = _cli("--help")
    assert out.returncode == 0 and all(c in out.stdout for c in ("demo", "tour", "info", "train", "eval", "predict", "anchors"))
    out = _cli("tour", "--help")
    assert out.returncode == 0 and "--size" in out.stdout
    out = _cli("demo", "--help")
    assert out.returncode == 0 and "offline" in out.stdout and "--num-images" in out.stdout


def test_cli_tour(tmp_path):
    png = tmp_path / "tour.png"
    out = _cli("tour", "--size", "256", "--out", str(png))
    assert out.returncode == 0, out.stderr
    assert "same scores and labels: True" in out.stdout
    assert re.search(r"pi = 0.01: classification loss +\d", out.stdout)
    assert png.stat().st_size > 10_000


def test_cli_info():
    out = _cli("info", "--backbone", "resnet18", "--num-classes", "5", "--size", "256")
    assert out.returncode == 0, out.stderr
    assert "P7" in out.stdout and "class_subnet" in out.stdout


def test_readme_commands_match_ci():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = re.search(r'^TEST_COMMAND=\'(.*)\'$', ci, re.M).group(1)
    assert test_cmd in readme.split("\n\n", 3)[1] + readme.split("\n\n", 3)[2], "README must open with the test command CI runs"
    assert "retinanet-lab demo" in readme.split("```")[1]


def test_ruff_clean():
    ruff = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
    assert ruff, "ruff is part of the [dev] extra"
    out = subprocess.run([ruff, "check", "retinanet_lab", "tests", "benchmarks", "assets", "tools"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
