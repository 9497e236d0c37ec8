"""`retinanet-lab train` on a dataset of one's own: the input size, anchors, augmentation and length fit the data by
default and can be set; the run ends with its AP and checkpoint path; eval and predict use the checkpoint's size."""

import json

import pytest

from retinanet_lab import cli
from retinanet_lab.checkpoint import load_model
from retinanet_lab.data import RandomZoom, photo_dataset
from retinanet_lab.data.transforms import RandomHorizontalFlip


def _run(capsys, *args):
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def captured_fit(monkeypatch):
    """fit replaced by a recorder: what the command would train, and with what."""
    import retinanet_lab.train as train

    calls = []

    def fake_fit(model, train_data, val_data=None, **kw):
        calls.append({"model": model, "train": train_data, "val": val_data, **kw})
        return {"steps": [], "evals": []}

    monkeypatch.setattr(train, "fit", fake_fit)
    return calls


def _transforms(dataset):
    base = getattr(dataset, "dataset", dataset)
    t = base.transform
    return list(getattr(t, "transforms", [t] if t else []))


def test_defaults_on_a_small_dataset_of_ones_own(capsys, captured_fit, tmp_path):
    code, out, err = _run(capsys, "train", "--data", "photos", "--from-checkpoint", "classroom", "--out", tmp_path)
    assert code == 0, err
    call = captured_fit[0]
    # a time budget, not the preset's 8 epochs (which on 40 images would be 20 steps)
    assert call["minutes"] == 5.0 and call["steps"] is None
    # the images' size (400 px, to a multiple of 32), not the classroom's 160 px; said on the way
    assert call["model"].min_size == 384 and "input size: 384 px" in out
    assert "anchors:" in out
    # small-dataset augmentation for training, none for validation (the eval split)
    assert any(isinstance(t, RandomZoom) for t in _transforms(call["train"]))
    assert _transforms(call["val"]) == [] and len(call["val"]) == len(photo_dataset("eval"))
    # new classes, a new layer: the model detects coins
    assert call["model"].class_names == ["coin"] and "a new classification layer" in out
    assert f"checkpoint: {tmp_path}" in out


def test_options_override_the_defaults(capsys, captured_fit, tmp_path):
    code, out, err = _run(capsys, "train", "--data", "photos", "--size", 256, "--steps", 30, "--augment", "off",
                          "--keep-anchors", "--out", tmp_path)
    assert code == 0, err
    call = captured_fit[0]
    assert call["steps"] == 30 and call["minutes"] is None
    assert call["model"].min_size == 256 and "input size" not in out and "anchors:" not in out
    assert not any(isinstance(t, RandomZoom) for t in _transforms(call["train"]))
    assert any(isinstance(t, RandomHorizontalFlip) for t in _transforms(call["train"]))


def test_shapes_keep_the_presets_epochs(capsys, captured_fit, tmp_path):
    code, out, err = _run(capsys, "train", "--num-images", 8, "--val-images", 2, "--out", tmp_path)
    assert code == 0, err
    call = captured_fit[0]
    assert call["epochs"] == 8 and call["steps"] is None and call["minutes"] is None
    assert call["model"].min_size == 160 and "input size" not in out


def test_a_split_folder_validates_without_augmentation(capsys, captured_fit, tmp_path):
    folder = photo_dataset("train")
    code, out, err = _run(capsys, "train", "--data", "coco", "--images", folder.images_dir, "--annotations",
                          folder.annotation_file, "--steps", 1, "--out", tmp_path)
    assert code == 0, err
    call = captured_fit[0]
    assert any(isinstance(t, RandomZoom) for t in _transforms(call["train"])) and _transforms(call["val"]) == []
    assert not set(call["train"].indices) & set(call["val"].indices)
    assert len(call["train"]) + len(call["val"]) == len(folder)


@pytest.mark.parametrize("args, named", [
    (("--epochs", 2, "--minutes", 1), "--epochs, --steps and --minutes"),
    (("--size", 100), "--size"),
    (("--minutes", 0), "--minutes"),
])
def test_conflicting_or_bad_lengths_and_sizes(capsys, captured_fit, tmp_path, args, named):
    code, out, err = _run(capsys, "train", "--data", "photos", *args, "--out", tmp_path)
    assert code == 2 and named in err and not captured_fit


@pytest.mark.slow
def test_a_short_fine_tune_prints_its_ap_and_eval_uses_its_size(capsys, tmp_path):
    code, out, err = _run(capsys, "train", "--data", "photos", "--from-checkpoint", "classroom", "--size", 192,
                          "--steps", 3, "--batch", 4, "--out", tmp_path)
    assert code == 0, err
    assert "after 3 steps (" in out and "s, evaluations included): AP " in out and "AP50 " in out
    assert f"checkpoint: {tmp_path / 'checkpoint.pt'}" in out
    model = load_model(tmp_path / "checkpoint.pt")
    assert model.min_size == 192 and model.class_names == ["coin"]
    code, out, err = _run(capsys, "eval", tmp_path / "checkpoint.pt", "--data", "photos")
    assert code == 0, err
    assert "16 images at 192 px" in out and "coin" in out
    code, out, err = _run(capsys, "eval", tmp_path / "checkpoint.pt", "--data", "photos", "--size", 256)
    assert code == 0 and "at 256 px" in out
    # the classroom model on coins: its classes are not the data's, said in a line
    code, out, err = _run(capsys, "eval", "classroom", "--data", "photos")
    assert code == 2 and "circle" in err and "coin" in err
    image = photo_dataset("eval").images_dir + "/eval_000.jpg"
    code, out, err = _run(capsys, "predict", tmp_path / "checkpoint.pt", image, "--out", tmp_path / "pred")
    assert code == 0, err
    assert "eval_000.jpg" in next(iter(json.loads((tmp_path / "pred" / "detections.json").read_text())))
