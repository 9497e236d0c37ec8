"""Training: the learning-rate rule, NaN stop, atomic checkpoints and an exact resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from retinanet_lab import RetinaNet
from retinanet_lab.data import ShapesDataset
from retinanet_lab.train import TrainingDiverged, fit, load_checkpoint, load_model, lr_factor, replace_classifier, scaled_lr


def tiny(num_classes=5, **kw):
    torch.manual_seed(0)
    return RetinaNet(num_classes, backbone="resnet18", fpn_channels=16, head_channels=16, head_convs=1,
                     min_size=64, max_size=64, **kw)


def test_linear_scaling_rule_and_schedule():
    assert scaled_lr(16) == pytest.approx(0.01) and scaled_lr(4) == pytest.approx(0.0025)
    assert lr_factor(0, 900, 100) == pytest.approx(0.001) and lr_factor(100, 900, 100) == 1.0
    assert lr_factor(50, 900, 100) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(600, 900, 100) == pytest.approx(0.1) and lr_factor(800, 900, 100) == pytest.approx(0.01)
    assert lr_factor(900, 900, 0, "cosine") == pytest.approx(0.0) and lr_factor(450, 900, 0, "cosine") == pytest.approx(0.5)


def test_fit_logs_checkpoints_and_evaluates(tmp_path, capsys):
    model = tiny()
    seen = []
    history = fit(model, ShapesDataset(16, seed=0, image_size=64), ShapesDataset(4, seed=99, image_size=64), epochs=2,
                  batch_size=4, out_dir=str(tmp_path), checkpoint_every=3, eval_every=1, progress=False, log_every=1,
                  callbacks=[lambda event, info: seen.append(event)], num_workers=0)
    assert "lr = 0.0025" in capsys.readouterr().out  # says which rate it used
    assert len(history["steps"]) == 8 and len(history["evals"]) == 2 and "AP50" in history["evals"][0]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 10 and lines[0]["step"] == 1
    assert seen.count("step") == 8 and seen.count("eval") == 2 and seen[-1] == "end"
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["state"]["step"] == 8 and not list(tmp_path.glob("*.tmp*"))
    again = load_model(tmp_path / "checkpoint.pt")
    for a, b in zip(again.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b.cpu())


class _NaNAt(torch.utils.data.Dataset):
    def __init__(self, base, bad):
        self.base, self.bad = base, bad

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, target = self.base[i]
        return (image * float("nan"), target) if i in self.bad else (image, target)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path):
    data = _NaNAt(ShapesDataset(8, seed=0, image_size=64), bad=set(range(8)))
    with pytest.raises(TrainingDiverged, match=r"step 0: the \w+ loss is nan.*no checkpoint.*linear scaling rule gives"):
        fit(tiny(), data, epochs=1, batch_size=4, progress=False, num_workers=0, verbose=False)
    # poison the data only in the second epoch: the first epoch's checkpoint survives
    clean = ShapesDataset(8, seed=0, image_size=64)
    model = tiny()
    fit(model, clean, epochs=1, batch_size=4, out_dir=str(tmp_path), checkpoint_every=1, progress=False, num_workers=0,
        verbose=False)
    with pytest.raises(TrainingDiverged, match=r"step 2: .*last good checkpoint .*\(step 2\)"):
        fit(model, _NaNAt(clean, set(range(8))), epochs=2, batch_size=4, out_dir=str(tmp_path), checkpoint_every=1,
            resume=True, progress=False, num_workers=0, verbose=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["state"]["step"] == 2


def test_replace_classifier_for_fine_tuning():
    model = tiny(num_classes=5)
    backbone_before = model.backbone.layer4[0].conv1.weight.clone()
    replace_classifier(model, 2, ["cat", "dog"])
    assert model.num_classes == 2 and model.class_names == ["cat", "dog"]
    assert model.class_subnet.logits.out_channels == 9 * 2
    assert torch.allclose(model.class_subnet.logits.bias, torch.tensor(-4.59512), atol=1e-4)
    assert torch.equal(model.backbone.layer4[0].conv1.weight, backbone_before)
    losses = model.train()([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[5.0, 5, 40, 40]]), "labels": torch.tensor([2])}])
    assert all(torch.isfinite(v) for v in losses.values())


SCRIPT = textwrap.dedent("""
    import sys, time, torch
    from retinanet_lab import RetinaNet
    from retinanet_lab.data import ShapesDataset, train_transforms
    from retinanet_lab.train import fit
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = RetinaNet(5, backbone="resnet18", fpn_channels=16, head_channels=16, head_convs=1, min_size=64, max_size=64)
    data = ShapesDataset(24, seed=1, image_size=64, transform=train_transforms(flip=True, photometric=True))
    slow = [lambda event, info: time.sleep(0.3) if sys.argv[2] == "slow" and event == "step" and info["step"] >= 6 else None]
    fit(model, data, epochs=3, batch_size=4, out_dir=sys.argv[1], checkpoint_every=2, resume=True, deterministic=True,
        progress=False, num_workers=0, callbacks=slow, verbose=False)
    print("finished")
""")


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_same_weights(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # an uninterrupted run
    whole = subprocess.run([sys.executable, str(script), str(tmp_path / "whole"), "fast"], capture_output=True, text=True,
                           env=env, timeout=300)
    assert whole.returncode == 0 and "finished" in whole.stdout, whole.stderr
    # a run killed with SIGKILL mid-way ...
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "killed"), "slow"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 240
    while time.time() < deadline:
        if ckpt.exists() and load_checkpoint(ckpt)["state"]["step"] >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    killed_at = load_checkpoint(ckpt)["state"]["step"]
    assert "finished" not in out and 6 <= killed_at < 18
    # ... and resumed
    resumed = subprocess.run([sys.executable, str(script), str(tmp_path / "killed"), "fast"], capture_output=True,
                             text=True, env=env, timeout=300)
    assert resumed.returncode == 0 and "finished" in resumed.stdout, resumed.stderr
    a = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    b = load_checkpoint(ckpt)
    assert a["state"]["step"] == b["state"]["step"] == 18
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    from retinanet_lab import RetinaNet
    from retinanet_lab.data import ShapesDataset
    from retinanet_lab.train import fit
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same initial weights in every process
    model = RetinaNet(5, backbone="resnet18", fpn_channels=16, head_channels=16, head_convs=1, min_size=64, max_size=64)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, ShapesDataset(16, seed=0, image_size=64), epochs=2, batch_size=2, out_dir=sys.argv[1], checkpoint_every=2,
        progress=False, num_workers=0, log_every=1)
    changed = any(not torch.equal(initial[k], v) for k, v in model.state_dict().items())
    torch.save({"state": model.state_dict(), "changed": changed}, os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.pt"))
""")


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu_train_and_agree(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "2 processes on cpu" in r.stdout and "lr = 0.0025" in r.stdout  # global batch 2 x 2 = 4 -> 0.01 x 4/16
    a, b = torch.load(out / "rank0.pt", weights_only=True), torch.load(out / "rank1.pt", weights_only=True)
    assert a["changed"] and b["changed"]
    for key in a["state"]:
        assert torch.equal(a["state"][key], b["state"][key]), key  # DDP kept the replicas identical
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 8  # 16 images / (2 x 2) = 4 steps x 2 epochs, logged once (by rank 0 only)
    assert load_checkpoint(out / "checkpoint.pt")["state"]["step"] == 8


@pytest.mark.parametrize("where", ["callback", "forward"])
def test_an_interrupt_keeps_the_last_finished_step_and_resume_continues(tmp_path, where):
    # Ctrl-C after step 3 (in a callback), or in the middle of step 4's forward pass: the checkpoint holds step 3,
    # and resuming from it ends with the weights of a run never interrupted (no random transform: nothing drawn)
    kw = dict(epochs=2, batch_size=4, progress=False, num_workers=0, checkpoint_every=100, verbose=False)
    data = ShapesDataset(16, seed=0, image_size=64)
    whole = tiny()
    fit(whole, data, **kw)
    model, calls = tiny(), {"forward": 0}

    def at_step_3(event, info):
        if where == "callback" and event == "step" and info["step"] == 3:
            raise KeyboardInterrupt

    def in_forward(module, args):
        calls["forward"] += 1
        if where == "forward" and calls["forward"] == 4:
            raise KeyboardInterrupt

    hook = model.backbone.register_forward_pre_hook(in_forward)
    with pytest.raises(KeyboardInterrupt):
        fit(model, data, out_dir=str(tmp_path), callbacks=[at_step_3], **kw)
    hook.remove()
    assert load_checkpoint(str(tmp_path / "checkpoint.pt"))["state"]["step"] == 3
    resumed = tiny()
    fit(resumed, data, out_dir=str(tmp_path), resume=True, **kw)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_a_callback_can_stop_the_run_cleanly(tmp_path):
    from retinanet_lab.train import StopTraining

    def stop_at_3(event, info):
        if event == "step" and info["step"] == 3:
            raise StopTraining()

    history = fit(tiny(), ShapesDataset(16, seed=0, image_size=64), epochs=4, batch_size=2, out_dir=str(tmp_path),
                  progress=False, log_every=1, callbacks=[stop_at_3], num_workers=0)
    assert history["stopped"] and len(history["steps"]) == 3
    assert load_checkpoint(str(tmp_path / "checkpoint.pt"))["state"]["step"] == 3  # nothing lost


def test_freeze_backbone_freezes_weights_and_batchnorm_statistics(tmp_path):
    from retinanet_lab.presets import preset
    from retinanet_lab.train import freeze_backbone

    cfg = preset("classroom")
    torch.manual_seed(0)
    model = RetinaNet(5, **cfg["model"])  # the classroom backbone has trainable BatchNorm2d
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())
    x = torch.rand(2, 3, 160, 160)
    model.eval()
    with torch.no_grad():
        before_eval = model.backbone(x)[2]
    freeze_backbone(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())
    assert not any(p.requires_grad for p in model.backbone.parameters())
    state = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.train()  # in training mode a frozen backbone computes what it computed in eval mode, with the same statistics
    with torch.no_grad():
        after_train_mode = model.backbone(x)[2]
    torch.testing.assert_close(after_train_mode, before_eval)
    data = ShapesDataset(8, seed=3, **cfg["data"])
    fit(model, data, epochs=1, batch_size=4, optimizer="adamw", lr=1e-3, progress=False, verbose=False, num_workers=0,
        out_dir=str(tmp_path))
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, state[k]), f"backbone {k} changed during training"
    again = load_model(str(tmp_path / "checkpoint.pt"))  # the checkpoint rebuilds a frozen backbone
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in again.backbone.modules())
    model.eval(), again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(list(x))[0]["scores"], model(list(x))[0]["scores"])


def test_a_step_budget_crosses_epochs_and_ends_with_an_evaluation():
    model = tiny()
    history = fit(model, ShapesDataset(10, seed=0, image_size=64), ShapesDataset(3, seed=99, image_size=64), steps=7,
                  batch_size=4, progress=False, verbose=False, log_every=1, num_workers=0)
    assert [r["step"] for r in history["steps"]] == list(range(1, 8))
    assert len({r["epoch"] for r in history["steps"]}) >= 3  # 10 images in batches of 4: 7 steps span several epochs
    assert len(history["evals"]) == 1 and history["evals"][0]["step"] == 7
    assert history["steps"][-1]["lr"] < history["steps"][3]["lr"]  # the schedule follows the 7 steps, not the epochs


def test_a_time_budget_times_the_first_steps_and_fits_the_schedule_to_it(capsys, monkeypatch):
    import retinanet_lab.train as train

    clock = iter(range(0, 10**6))  # every perf_counter() call advances one fake second
    monkeypatch.setattr(train.time, "perf_counter", lambda: float(next(clock)))
    model = tiny()
    history = fit(model, ShapesDataset(8, seed=0, image_size=64), ShapesDataset(2, seed=99, image_size=64), minutes=1.0,
                  batch_size=4, progress=False, log_every=1, num_workers=0)
    out = capsys.readouterr().out
    per_step = float(out.split(" s per step")[0].split()[-1])
    want = train.fit_steps_to_budget(60.0, per_step, train.PROBE_STEPS + 1)
    assert f"{want} steps fit 1 minutes" in out and len(history["steps"]) == want
    assert history["evals"] and history["evals"][-1]["step"] == want
    assert train.fit_steps_to_budget(60, 1.0, 6) == 57 and train.fit_steps_to_budget(1, 1.0, 6) == 7
    with pytest.raises(ValueError, match="not both"):
        fit(model, ShapesDataset(4, seed=0, image_size=64), steps=3, minutes=1.0, progress=False)


def test_fit_stores_convolution_weights_channels_last_and_the_same_weights_train_alike_in_both_layouts(tmp_path):
    data = ShapesDataset(8, seed=0, image_size=64)
    nhwc, nchw = tiny(), tiny()
    fit(nhwc, data, steps=2, batch_size=4, progress=False, verbose=False, num_workers=0)
    fit(nchw, data, steps=2, batch_size=4, progress=False, verbose=False, num_workers=0, channels_last=False)
    convs = [(n, p) for n, p in nhwc.named_parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for _, p in convs)
    assert all(p.is_contiguous() for p in nchw.parameters())
    for (n, a), b in zip(nhwc.state_dict().items(), nchw.state_dict().values()):  # a layout, not another computation
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=n)
    path = tmp_path / "w.pt"  # a checkpoint of channels_last weights loads into a fresh (NCHW) model
    torch.save(nhwc.state_dict(), path)
    fresh = tiny()
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), nhwc.state_dict().values()))


def test_train_size_trains_small_and_evaluates_and_saves_at_the_models_own_size(tmp_path):
    model = tiny()  # 64 px
    seen = []
    model.backbone.register_forward_hook(lambda module, args, out: seen.append((module.training, args[0].shape[-1])))
    data = ShapesDataset(8, seed=0, image_size=64)
    history = fit(model, data, ShapesDataset(2, seed=9, image_size=64), steps=2, batch_size=4, progress=False,
                  verbose=False, num_workers=0, out_dir=str(tmp_path), train_size=32)
    assert [w for training, w in seen if training] == [32, 32]  # the steps at 32 px
    assert [w for training, w in seen if not training] == [64]  # the evaluation (2 images, one batch) at 64 px
    assert model.min_size == model.max_size == 64 and history["evals"]
    assert load_model(str(tmp_path / "checkpoint.pt")).min_size == 64  # saved at its own size
    with pytest.raises(ValueError, match="train_size"):
        fit(tiny(), data, steps=1, batch_size=4, progress=False, verbose=False, train_size=0)


def test_a_train_size_schedule_trains_small_images_first_in_equal_shares_of_the_steps(capsys):
    model = tiny()  # 64 px
    sizes = []  # the input size the model resizes each batch to, read as it is called
    model.register_forward_pre_hook(lambda module, args: sizes.append((module.training, module.min_size)))
    data = ShapesDataset(12, seed=0, image_size=64)
    fit(model, data, ShapesDataset(2, seed=9, image_size=64), steps=6, batch_size=4, progress=False, num_workers=0,
        train_size=(32, 48, 64))
    assert [s for training, s in sizes if training] == [32, 32, 48, 48, 64, 64]
    assert [s for training, s in sizes if not training] == [64]  # evaluated at its own size
    assert "steps at 32 then 48 then 64 px, evaluated and saved at 64 px" in capsys.readouterr().out
    for bad in ((), (32, 16), (32, 48.0), "64", (True,)):
        with pytest.raises(ValueError, match="train_size must be an int >= 32"):
            fit(tiny(), data, steps=1, batch_size=4, progress=False, verbose=False, train_size=bad)


def test_the_classroom_fast_preset_is_the_classroom_model_with_one_conv_per_subnet_small_images_first_and_giou():
    from retinanet_lab.presets import preset

    fast, slow = preset("classroom_fast"), preset("classroom")
    assert fast["model"] == {**slow["model"], "head_convs": 1, "box_loss": "giou"} and fast["data"] == slow["data"]
    assert fast["train"] == {**slow["train"], "train_size": (96, 128)} and fast["run"] == slow["run"]
    model = RetinaNet(5, **fast["model"])
    assert model.min_size == 160 and len(model.class_subnet.tower) == 1 and model.cfg.loss.box_loss == "giou"


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_the_fused_optimiser_makes_the_same_update_as_torchs_for_loop_one(name):
    from retinanet_lab.train import _optimizer

    torch.manual_seed(0)
    fused_model = tiny()
    loop_model = tiny()
    loop_model.load_state_dict(fused_model.state_dict())
    fused, params = _optimizer(fused_model, name, 0.01, 0.9, 1e-4)
    trainable = [p for p in loop_model.parameters() if p.requires_grad]
    mature = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 8)
    assert fused.defaults["fused"] is (True if mature else None) and len(params) == len(trainable)
    loop = (torch.optim.SGD(trainable, lr=0.01, momentum=0.9, weight_decay=1e-4, foreach=False) if name == "sgd"
            else torch.optim.AdamW(trainable, lr=0.01, weight_decay=1e-4, foreach=False))
    data = ShapesDataset(2, seed=0, image_size=64)
    images, targets = map(list, zip(*(data[i] for i in range(2))))
    for model, optimiser in ((fused_model, fused), (loop_model, loop)):
        for _ in range(2):  # the second step reads the momentum (and Adam's moments) the first one stored
            optimiser.zero_grad()
            sum(model(images, targets).values()).backward()
            optimiser.step()
    for (n, a), b in zip(fused_model.named_parameters(), loop_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=n)
