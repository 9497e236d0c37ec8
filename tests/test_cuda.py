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


@pytest.fixture(params=[False, True], ids=["fp32", "tf32"])
def tf32(request):
    """The GPU in strict float32, then with TF32 (PyTorch's default for cuDNN convolutions: a 10-bit mantissa)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = request.param
    yield request.param
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_the_gpu_and_the_cpu_agree_on_losses_gradients_and_detections(tf32):
    cpu_model = small().train()
    gpu_model = small().to(DEVICE).train()
    gpu_model.load_state_dict(cpu_model.state_dict())
    images, targets = batch()
    cpu_losses = cpu_model(images, targets)
    gpu_losses = gpu_model(*to(DEVICE, images, targets))
    for k in cpu_losses:  # other kernels, another order of summation: agreement to about 1e-3, not bit for bit
        torch.testing.assert_close(gpu_losses[k].cpu(), cpu_losses[k], rtol=2e-3, atol=1e-4)
    sum(cpu_losses.values()).backward()
    sum(gpu_losses.values()).backward()
    cpu_grads = {n: p.grad for n, p in cpu_model.named_parameters() if p.grad is not None}
    gpu_grads = {n: p.grad.cpu() for n, p in gpu_model.named_parameters() if p.grad is not None}
    assert cpu_grads.keys() == gpu_grads.keys() and cpu_grads
    for n, g in cpu_grads.items():
        error = (gpu_grads[n] - g).norm() / g.norm().clamp_min(1e-12)
        if not tf32:  # strict float32: every gradient, as a whole and entry by entry (to 1e-5 of its largest entry)
            assert error < 1e-3, f"{n}: relative error {error:.2e}"
            torch.testing.assert_close(gpu_grads[n], g, rtol=1e-3, atol=1e-5 * g.abs().max().item(), msg=n)
        else:  # TF32 rounds every product to a 10-bit mantissa (about 5e-4) and the error grows with each layer the
            # gradient goes back through: measured on an H100 (2026-11-26), at most 2.6e-2 in the subnets, 5.4e-2 in
            # the pyramid, 6.9e-2 in the backbone, against 2.4e-6 everywhere in strict float32. A wrong gradient is O(1).
            assert error < 0.2, f"{n}: relative error {error:.2e} with TF32"
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
