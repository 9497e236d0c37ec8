"""On the GPU: the same numbers as the CPU, AMP without NaN, and the training safeguards. Marked `cuda`.

Run on a machine with a CUDA GPU (`python benchmarks/gpu_check.py` runs this file there, with the rest of the GPU
check). Without one these tests are skipped, except when RETINANET_LAB_TEST_DEVICE=cpu makes the CPU stand in for the
GPU, which `python benchmarks/gpu_check.py --smoke` (run by tests/test_gpu_check.py) does, so that this code runs on
every machine: there "CPU and GPU agree" compares the CPU with itself and only proves the code path works.
"""

import os

import pytest
import torch

from retinanet_lab import RetinaNet
from retinanet_lab.data import ShapesDataset
from retinanet_lab.train import StopTraining, TrainingDiverged, fit, load_checkpoint

pytestmark = pytest.mark.cuda

DEVICE = torch.device(os.environ.get("RETINANET_LAB_TEST_DEVICE", "cuda"))
if DEVICE.type == "cuda" and not torch.cuda.is_available():
    pytest.skip("no CUDA GPU (RETINANET_LAB_TEST_DEVICE=cpu runs these tests with the CPU standing in)",
                allow_module_level=True)


def small(num_classes=5, **kw):
    torch.manual_seed(0)
    kw = {"backbone": "resnet_tiny", "fpn_channels": 32, "head_convs": 2, "head_channels": 32, "min_size": 128,
          "max_size": 128, "frozen_bn": False, "trainable_backbone_layers": 5, **kw}
    return RetinaNet(num_classes, **kw)


def batch(n=2, size=128, seed=0):
    data = ShapesDataset(n, seed=seed, image_size=size)
    images, targets = zip(*(data[i] for i in range(n)))
    return list(images), list(targets)


def to(device, images, targets):
    return [i.to(device) for i in images], [{k: v.to(device) for k, v in t.items() if torch.is_tensor(v)} for t in targets]


def test_the_gpu_and_the_cpu_agree_on_losses_gradients_and_detections():
    cpu_model = small().train()
    gpu_model = small().to(DEVICE).train()
    gpu_model.load_state_dict(cpu_model.state_dict())
    images, targets = batch()
    cpu_losses = cpu_model(images, targets)
    gpu_losses = gpu_model(*to(DEVICE, images, targets))
    for k in cpu_losses:  # TF32 and other kernels: agreement to about 1e-3, not bit for bit
        torch.testing.assert_close(gpu_losses[k].cpu(), cpu_losses[k], rtol=2e-3, atol=1e-4)
    sum(cpu_losses.values()).backward()
    sum(gpu_losses.values()).backward()
    cpu_grads = {n: p.grad for n, p in cpu_model.named_parameters() if p.grad is not None}
    gpu_grads = {n: p.grad.cpu() for n, p in gpu_model.named_parameters() if p.grad is not None}
    assert cpu_grads.keys() == gpu_grads.keys() and cpu_grads
    for name in ("class_subnet", "box_subnet"):  # the heads' gradients (the backbone's pass through more kernels)
        for n in (n for n in cpu_grads if n.startswith(name)):
            torch.testing.assert_close(gpu_grads[n], cpu_grads[n], rtol=1e-2, atol=1e-5, msg=n)
    cpu_model.eval().score_thresh = gpu_model.eval().score_thresh = 0.0
    with torch.no_grad():
        cpu_det = cpu_model(images)[0]
        gpu_det = gpu_model(to(DEVICE, images, targets)[0])[0]
    k = min(10, len(cpu_det["scores"]))
    assert k > 0
    torch.testing.assert_close(gpu_det["scores"][:k].cpu(), cpu_det["scores"][:k], rtol=2e-3, atol=1e-4)
    torch.testing.assert_close(gpu_det["boxes"][:k].cpu(), cpu_det["boxes"][:k], rtol=1e-3, atol=0.05)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_amp_gives_finite_losses_and_gradients(dtype):
    model = small().to(DEVICE).train()
    images, targets = to(DEVICE, *batch(2))
    with torch.autocast(DEVICE.type, dtype=dtype):
        losses = model(images, targets)
    total = sum(losses.values())
    assert all(torch.isfinite(v) for v in losses.values()), losses
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_a_training_run_with_amp_and_the_nan_guard(tmp_path):
    class Poisoned(torch.utils.data.Dataset):
        def __init__(self, base):
            self.base, self.class_names = base, base.class_names

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            image, target = self.base[i]
            return image * float("nan"), target

    data = ShapesDataset(8, seed=0, image_size=128)
    with pytest.raises(TrainingDiverged, match="step 0"):
        fit(small(), Poisoned(data), steps=2, batch_size=4, device=DEVICE, amp=True, progress=False, num_workers=0,
            verbose=False)
    history = fit(small(), data, steps=4, batch_size=4, device=DEVICE, amp=True, progress=False, num_workers=0,
                  verbose=False, log_every=1)
    assert len(history["steps"]) == 4 and all(torch.isfinite(torch.tensor(r["classification"])) for r in history["steps"])


def test_resume_on_the_device_continues_where_the_run_stopped(tmp_path):
    data = ShapesDataset(16, seed=0, image_size=128)
    kw = dict(epochs=2, batch_size=4, device=DEVICE, progress=False, num_workers=0, verbose=False, deterministic=True, seed=3)

    def stop_at_4(event, info):
        if event == "step" and info["step"] == 4:
            raise StopTraining

    straight = small()
    fit(straight, data, **kw)
    interrupted = small()
    history = fit(interrupted, data, out_dir=str(tmp_path), checkpoint_every=1, callbacks=[stop_at_4], **kw)
    assert history["stopped"] and load_checkpoint(tmp_path / "checkpoint.pt")["state"]["step"] == 4
    resumed = small()
    fit(resumed, data, out_dir=str(tmp_path), checkpoint_every=1, resume=True, **kw)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["state"]["step"] == 8
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        if a.is_floating_point():  # the device's kernels may differ in the last bits between two runs
            torch.testing.assert_close(b.cpu(), a.cpu(), rtol=1e-3, atol=1e-5, msg=name)
