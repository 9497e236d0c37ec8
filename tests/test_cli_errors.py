"""The command line speaks like a tool: a mistake in its input is one or two lines naming the file or option,
with exit status 2 and no traceback (`--debug` shows it); a bug keeps its traceback; `predict` goes on past
an unreadable image, never overwrites one picture with another, and takes folders; `--help` loads no PyTorch."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

from retinanet_lab import cli
from retinanet_lab.checkpoint import load_checkpoint, load_model
from retinanet_lab.classroom import CLASSROOM_CHECKPOINT, assets_dir
from retinanet_lab.errors import CheckpointError, DataError, UserError

CHECKPOINT = str(assets_dir() / CLASSROOM_CHECKPOINT)


def _main(capsys, *args):
    """(exit status, stderr) of `retinanet-lab ARGS`, run in this process."""
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


def _visible_lines(err: str) -> list[str]:
    """The lines a terminal shows: a progress bar that rewrote itself with \\r and was erased shows nothing."""
    return [line.split("\r")[-1] for line in err.split("\n") if line.split("\r")[-1].strip()]


def _said_in_two_lines(code, err, *names):
    assert code == 2, err
    lines = _visible_lines(err)
    assert 1 <= len(lines) <= 2, err
    assert "Traceback" not in err
    for name in names:
        assert str(name) in err, (name, err)


def _image(path, size=(64, 48)):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    Image.new("RGB", size, (200, 40, 40)).save(path)
    return str(path)


def _coco(folder, data):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    path = folder / "ann.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


# ---- files that are not checkpoints ----

def _not_checkpoints(tmp_path):
    (tmp_path / "notes.txt").write_text("hello, not a checkpoint\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled_module.pt")  # a whole model: refused by weights_only
    torch.save({"weight": torch.zeros(2)}, tmp_path / "state_dict.pt")  # a bare state dict
    torch.save([1, 2, 3], tmp_path / "list.pt")
    (tmp_path / "truncated.pt").write_bytes(open(CHECKPOINT, "rb").read()[:4000])
    return ["notes.txt", "empty.pt", "pickled_module.pt", "state_dict.pt", "list.pt", "truncated.pt"]


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_a_file_that_is_not_a_checkpoint_is_one_sentence(tmp_path, capsys, command):
    for name in _not_checkpoints(tmp_path):
        path = tmp_path / name
        args = [command, path] + ([_image(tmp_path / "a.png"), "--out", tmp_path / "out"] if command == "predict" else [])
        code, err = _main(capsys, *args)
        _said_in_two_lines(code, err, path, "is not a retinanet_lab checkpoint")
        assert "weights_only" not in err and "Weights only load failed" not in err
    assert not (tmp_path / "out").exists()  # nothing written before the model was read


def test_load_checkpoint_raises_checkpoint_error_from_python(tmp_path):
    _not_checkpoints(tmp_path)
    with pytest.raises(CheckpointError, match=r"pickled_module\.pt is not a retinanet_lab checkpoint: .*pickled model"):
        load_checkpoint(tmp_path / "pickled_module.pt")
    with pytest.raises(ValueError, match=r"state_dict\.pt .*no 'config'"):  # still a ValueError for older code
        load_model(tmp_path / "state_dict.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    assert load_model(CHECKPOINT).num_classes == 5


def test_missing_checkpoint_and_a_folder_for_one(tmp_path, capsys):
    _said_in_two_lines(*_main(capsys, "eval", tmp_path / "nope.pt"), tmp_path / "nope.pt", "not found")
    _said_in_two_lines(*_main(capsys, "eval", tmp_path), tmp_path, "is a folder")
    (tmp_path / "notes.txt").write_text("x")
    _said_in_two_lines(*_main(capsys, "train", "--num-images", 2, "--val-images", 1, "--epochs", 1,
                              "--from-checkpoint", tmp_path / "notes.txt", "--out", tmp_path / "run"),
                       tmp_path / "notes.txt", "is not a retinanet_lab checkpoint")


# ---- bad data ----

GOOD_COCO = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
             "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 20, 10]}],
             "categories": [{"id": 1, "name": "cat"}]}


@pytest.mark.parametrize("case, data, said", [
    ("malformed JSON", '{"images": [', "malformed or truncated JSON"),
    ("not a COCO object", "[1, 2]", "expected a JSON object"),
    ("unknown class", {**GOOD_COCO, "annotations": [{"id": 7, "image_id": 1, "category_id": 42, "bbox": [1, 2, 3, 4]}]},
     "category_id 42"),
    ("empty dataset", {**GOOD_COCO, "images": [], "annotations": []}, "empty"),
    ("bad bbox", {**GOOD_COCO, "annotations": [{"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 2]}]}, "bbox"),
])
@pytest.mark.parametrize("command", ["eval", "anchors", "train"])
def test_bad_coco_annotations(tmp_path, capsys, case, data, said, command):
    path = _coco(tmp_path, data)
    args = [command] + ([CHECKPOINT] if command == "eval" else []) + [
        "--data", "coco", "--images", tmp_path / "images", "--annotations", path]
    if command == "train":
        args += ["--out", tmp_path / "run"]
    _said_in_two_lines(*_main(capsys, *args), path, said)


def test_coco_paths_and_options_missing(tmp_path, capsys):
    path = _coco(tmp_path, GOOD_COCO)
    _said_in_two_lines(*_main(capsys, "eval", CHECKPOINT, "--data", "coco", "--annotations", path), "--images")
    _said_in_two_lines(*_main(capsys, "train", "--data", "coco", "--images", tmp_path), "--annotations")
    _said_in_two_lines(*_main(capsys, "anchors", "--data", "coco", "--images", tmp_path / "nope", "--annotations", path),
                       tmp_path / "nope", "images folder not found")
    _said_in_two_lines(*_main(capsys, "anchors", "--data", "coco", "--images", tmp_path, "--annotations", tmp_path / "x.json"),
                       tmp_path / "x.json", "not found")


def test_bad_voc_folders(tmp_path, capsys):
    _said_in_two_lines(*_main(capsys, "anchors", "--data", "voc"), "--root")
    _said_in_two_lines(*_main(capsys, "eval", CHECKPOINT, "--data", "pennfudan"), "--root")
    _said_in_two_lines(*_main(capsys, "anchors", "--data", "voc", "--root", tmp_path / "nowhere"),
                       tmp_path / "nowhere", "Annotations")
    (tmp_path / "voc" / "Annotations").mkdir(parents=True)
    _said_in_two_lines(*_main(capsys, "anchors", "--data", "voc", "--root", tmp_path / "voc"), tmp_path / "voc", "empty")
    xml = tmp_path / "voc" / "Annotations" / "0001.xml"
    xml.write_text("<annotation><object><name>cat</name>")
    _said_in_two_lines(*_main(capsys, "eval", CHECKPOINT, "--data", "voc", "--root", tmp_path / "voc"), xml, "malformed XML")
    xml.write_text("<annotation><object><name>cat</name><bndbox><xmin>a</xmin></bndbox></object></annotation>")
    _said_in_two_lines(*_main(capsys, "anchors", "--data", "voc", "--root", tmp_path / "voc"), xml, "numeric")


def test_an_image_missing_from_a_dataset_is_named(tmp_path, capsys):
    shapes = [{"id": k, "name": name} for k, name in enumerate(("circle", "square", "triangle", "hexagon", "diamond"), 1)]
    path = _coco(tmp_path, {**GOOD_COCO, "categories": shapes})  # the classroom model's classes; a.png is listed, not there
    _said_in_two_lines(*_main(capsys, "eval", CHECKPOINT, "--data", "coco", "--images", tmp_path / "images", "--annotations", path),
                       tmp_path / "images" / "a.png", "not found")


# ---- bad option values: argparse's errors, in two lines ----

@pytest.mark.parametrize("args, option", [
    (["train", "--epochs", "-1"], "--epochs"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--batch", "many"], "--batch"),
    (["train", "--lr", "0"], "--lr"),
    (["train", "--val-fraction", "1"], "--val-fraction"),
    (["train", "--device", "gpu"], "--device"),
    (["predict", CHECKPOINT, "a.png", "--score-thresh", "1.5"], "--score-thresh"),
    (["predict", CHECKPOINT, "a.png", "--score-thresh", "-0.1"], "--score-thresh"),
    (["predict", CHECKPOINT, "a.png", "--score-thresh", "nan"], "--score-thresh"),
    (["eval", CHECKPOINT, "--num-images", "0"], "--num-images"),
    (["anchors", "--sizes", "-16", "32"], "--sizes"),
    (["demo", "--num-images", "3"], "--num-images"),
    (["info", "--num-classes", "0"], "--num-classes"),
    (["train", "--data", "imagenet"], "--data"),
    (["predict", CHECKPOINT], "images"),
    ([], "command"),
])
def test_bad_option_values(capsys, args, option):
    _said_in_two_lines(*_main(capsys, *args), option, "--help")


def test_device_that_is_not_here(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _said_in_two_lines(*_main(capsys, "eval", CHECKPOINT, "--device", "cuda", "--num-images", 1), "--device cuda", "--device cpu")


# ---- --debug, and bugs ----

def test_debug_raises_the_error_itself(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    for args in (["--debug", "eval", tmp_path / "notes.txt"], ["eval", tmp_path / "notes.txt", "--debug"]):
        with pytest.raises(CheckpointError):
            cli.main([str(a) for a in args])
    with pytest.raises(DataError):
        cli.main(["--debug", "anchors", "--data", "coco", "--images", str(tmp_path),
                  "--annotations", str(_coco(tmp_path, "{"))])


@pytest.mark.parametrize("bug", [ValueError("a bug, not the user's"), KeyError("boxes"), RuntimeError("shape mismatch")])
def test_a_bug_keeps_its_traceback(monkeypatch, bug):
    def broken(args):
        raise bug

    monkeypatch.setattr(cli, "cmd_info", broken)
    with pytest.raises(type(bug)):
        cli.main(["info"])


def test_error_message_of_a_dataloader_worker():
    wrapped = FileNotFoundError("Caught FileNotFoundError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                                "last):\n  File \"x.py\", line 1, in f\nFileNotFoundError: image file not found: data/a.png\n")
    assert cli._error_message(wrapped) == "image file not found: data/a.png"
    assert cli._error_message(PermissionError(13, "Permission denied", "out/x.png")) == "out/x.png: Permission denied"
    assert cli._error_message(UserError("two\nlines")) == "two lines"


def _console(*args, timeout=300):
    exe = shutil.which("retinanet-lab", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "retinanet_lab.cli"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


def test_console_script_status_and_traceback_only_with_debug(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    r = _console("eval", tmp_path / "notes.txt")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith(f"retinanet-lab eval: error: {tmp_path / 'notes.txt'} is not a retinanet_lab checkpoint: ")
    r = _console("--debug", "eval", tmp_path / "notes.txt")
    assert r.returncode != 0 and "Traceback (most recent call last)" in r.stderr and "CheckpointError" in r.stderr


# ---- predict ----

def _predictions(out):
    return json.loads((out / "detections.json").read_text())


def test_predict_never_overwrites_a_picture(tmp_path, capsys):
    inputs = [_image(tmp_path / "a.png"), _image(tmp_path / "a.jpg"), _image(tmp_path / "x" / "a.png"),
              _image(tmp_path / "y" / "a.png"), _image(tmp_path / "b.png")]
    out = tmp_path / "out"
    code, err = _main(capsys, "predict", CHECKPOINT, *inputs, "--out", out, "--score-thresh", 0)
    assert code == 0 and err == "", err
    result = _predictions(out)
    assert list(result) == inputs
    pictures = [result[p]["picture"] for p in inputs]
    assert len(set(pictures)) == 5 and all((out / p).stat().st_size > 1000 for p in pictures)
    # a name of its own stays plain; where names collide, more of the path tells them apart
    assert pictures == [f"{tmp_path.name}_a_png_detections.png", "a_jpg_detections.png", "x_a_png_detections.png",
                        "y_a_png_detections.png", "b_detections.png"]
    assert sorted(os.listdir(out)) == sorted(pictures + ["detections.json"])
    assert all(isinstance(result[p]["detections"], list) for p in inputs)


def test_picture_names():
    names = cli._picture_names(["a.png", "a.jpg", "b.png"])
    assert names == {"a.png": "a_png_detections.png", "a.jpg": "a_jpg_detections.png", "b.png": "b_detections.png"}
    names = cli._picture_names(["x/a.png", "y/a.png"])
    assert names == {"x/a.png": "x_a_png_detections.png", "y/a.png": "y_a_png_detections.png"}
    names = cli._picture_names(["p/A.png", "p/a.png"])  # the same but for case: numbered
    assert len({n.lower() for n in names.values()}) == 2


def test_predict_goes_on_past_unreadable_images(tmp_path, capsys):
    good = _image(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    out = tmp_path / "out"
    code, err = _main(capsys, "predict", CHECKPOINT, tmp_path / "bad.png", tmp_path / "missing.jpg", good, "--out", out)
    assert code == 0 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and str(tmp_path / "bad.png") in lines[0] and str(tmp_path / "missing.jpg") in lines[1]
    assert all("skipped" in line for line in lines)
    result = _predictions(out)
    assert "not a readable image" in result[str(tmp_path / "bad.png")]["error"]
    assert "no such file" in result[str(tmp_path / "missing.jpg")]["error"]
    assert (out / result[good]["picture"]).exists() and result[good]["detections"] is not None


def test_predict_with_nothing_readable_says_so_and_still_lists_why(tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"junk")
    out = tmp_path / "out"
    code, err = _main(capsys, "predict", CHECKPOINT, tmp_path / "bad.png", tmp_path / "missing.png", "--out", out)
    assert code == 2 and "Traceback" not in err and "none of the 2 input(s) could be read" in err
    assert set(_predictions(out)) == {str(tmp_path / "bad.png"), str(tmp_path / "missing.png")}
    (tmp_path / "file").write_text("x")
    _said_in_two_lines(*_main(capsys, "predict", CHECKPOINT, tmp_path / "bad.png", "--out", tmp_path / "file"), "--out")


def test_predict_takes_a_folder(tmp_path, capsys):
    folder = tmp_path / "photos"
    second, first = _image(folder / "2.png"), _image(folder / "1.JPG")
    (folder / "notes.txt").write_text("not an image, not read")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    code, err = _main(capsys, "predict", CHECKPOINT, folder, first, tmp_path / "empty", "--out", out)
    assert code == 0
    result = _predictions(out)
    assert list(result) == [first, second, str(tmp_path / "empty")]  # sorted by name; 1.JPG given twice, read once
    assert "no images" in result[str(tmp_path / "empty")]["error"] and "empty" in err
    assert sorted(os.listdir(out)) == ["1_detections.png", "2_detections.png", "detections.json"]


# ---- --help without PyTorch ----

def test_help_does_not_import_torch():
    script = ("import sys\nfrom retinanet_lab.cli import main\n"
              "for args in (['--help'], ['train', '--help'], ['predict', '--help'], ['eval', '--help'], ['demo', '--help']):\n"
              "    try:\n        main(args)\n    except SystemExit as e:\n        assert e.code == 0, args\n"
              "heavy = [m for m in ('torch', 'torchvision', 'numpy', 'matplotlib', 'PIL') if m in sys.modules]\n"
              "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "usage: retinanet-lab" in r.stdout and "--score-thresh" in r.stdout


def test_eval_on_data_of_other_classes_says_so(tmp_path, capsys):
    path = _coco(tmp_path, GOOD_COCO)  # a "cat" dataset for a model of shapes
    code, err = _main(capsys, "eval", CHECKPOINT, "--data", "coco", "--images", tmp_path / "images", "--annotations", path)
    _said_in_two_lines(code, err)
    assert "circle" in err and "cat" in err
