"""The focal loss against torchvision, BCE and hand-computed values; finite everywhere."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import sigmoid_focal_loss

from retinanet_lab import alpha_t, cross_entropy, focal_loss, focal_loss_grad, modulating_factor, p_t
from retinanet_lab.focal_loss import focal_loss_sparse_sum


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75, None])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
def test_equals_torchvision(alpha, gamma):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, generator=g, dtype=torch.float64) * 6
    t = (torch.rand(1000, generator=g) < 0.3).double()
    ours = focal_loss(x, t, alpha, gamma)
    ref = sigmoid_focal_loss(x, t, alpha if alpha is not None else -1, gamma)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    for red in ("sum", "mean"):
        torch.testing.assert_close(focal_loss(x, t, alpha, gamma, red), sigmoid_focal_loss(x, t, alpha or -1, gamma, red))


def test_gradient_equals_torchvision_where_torchvision_is_finite():
    x = (torch.randn(500, dtype=torch.float64) * 4).requires_grad_()
    t = (torch.rand(500) < 0.5).double()
    (g1,) = torch.autograd.grad(focal_loss(x, t, 0.25, 2.0, "sum"), x)
    (g2,) = torch.autograd.grad(sigmoid_focal_loss(x, t, 0.25, 2.0, "sum"), x)
    torch.testing.assert_close(g1, g2)
    torch.testing.assert_close(focal_loss_grad(x, t, 0.25, 2.0), g1)


def test_soft_targets_equal_torchvision():
    x, t = torch.randn(200, dtype=torch.float64) * 3, torch.rand(200, dtype=torch.float64)
    torch.testing.assert_close(focal_loss(x, t, 0.25, 1.5), sigmoid_focal_loss(x, t, 0.25, 1.5))


def test_gamma_zero_no_alpha_is_bce():
    x, t = torch.randn(300) * 5, (torch.rand(300) < 0.5).float()
    torch.testing.assert_close(focal_loss(x, t, alpha=None, gamma=0.0), F.binary_cross_entropy_with_logits(x, t, reduction="none"))
    torch.testing.assert_close(cross_entropy(x, t), F.binary_cross_entropy_with_logits(x, t, reduction="none"))


def test_hand_computed_values():
    # x = 0: p = 0.5, CE = log 2; t = 1, gamma 2, alpha 0.25: 0.25 * 0.5^2 * log 2
    assert focal_loss(torch.tensor([0.0]), torch.tensor([1.0])).item() == pytest.approx(0.25 * 0.25 * math.log(2))
    # t = 0 gets 1 - alpha
    assert focal_loss(torch.tensor([0.0]), torch.tensor([0.0])).item() == pytest.approx(0.75 * 0.25 * math.log(2))
    # p_t = 0.9 (an easy example): FL / CE = (1 - 0.9)^2 = 0.01, the paper's "100x lower loss"
    x = torch.tensor([math.log(9.0)])  # sigmoid = 0.9
    one = torch.tensor([1.0])
    assert p_t(x, one).item() == pytest.approx(0.9)
    assert modulating_factor(x, one, 2.0).item() == pytest.approx(0.01)
    assert (focal_loss(x, one, None, 2.0) / cross_entropy(x, one)).item() == pytest.approx(0.01)
    # p_t ≈ 0.968: about 1000x lower, as the paper says
    x = torch.tensor([math.log(0.968 / 0.032)])
    assert (cross_entropy(x, one) / focal_loss(x, one, None, 2.0)).item() == pytest.approx(1 / 0.032**2, rel=1e-4)
    assert alpha_t(torch.tensor([1.0, 0.0]), 0.25).tolist() == [0.25, 0.75]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gamma", [0.0, 0.2, 0.5, 1.0, 2.0, 5.0])
def test_finite_values_and_gradients_at_saturation(dtype, gamma):
    x = torch.tensor([-1e4, -100.0, -20.0, -1.0, 0.0, 1.0, 20.0, 100.0, 1e4] * 2, dtype=dtype, requires_grad=True)
    t = torch.tensor([0.0] * 9 + [1.0] * 9, dtype=dtype)
    loss = focal_loss(x, t, 0.25, gamma, "sum")
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(x.grad).all()
    # a confidently right logit has (almost) no loss and no gradient; a confidently wrong one the largest
    assert x.grad[0].abs() < 1e-3 and x.grad[17].abs() < 1e-3
    assert x.grad[8] > 0 and x.grad[9] < 0


def test_torchvision_is_nan_where_ours_is_not():
    """The reason for our own implementation: (1 - p_t)^γ with γ < 1 at p_t = 1."""
    x = torch.tensor([50.0], requires_grad=True)
    sigmoid_focal_loss(x, torch.tensor([1.0]), gamma=0.5, reduction="sum").backward()
    assert torch.isnan(x.grad).all()
    x.grad = None
    focal_loss(x, torch.tensor([1.0]), gamma=0.5, reduction="sum").backward()
    assert torch.isfinite(x.grad).all()


@settings(max_examples=200, deadline=None)
@given(st.floats(-60, 60), st.sampled_from([0.0, 1.0]), st.floats(0, 5), st.one_of(st.none(), st.floats(0, 1)))
def test_focal_never_exceeds_balanced_ce(x, t, gamma, alpha):
    x, t = torch.tensor([x], dtype=torch.float64), torch.tensor([t], dtype=torch.float64)
    fl = focal_loss(x, t, alpha, gamma)
    ce = alpha_t(t, alpha) * cross_entropy(x, t)
    assert (fl <= ce * (1 + 1e-12) + 1e-300).all() and (fl >= 0).all()


def test_bad_arguments():
    x, t = torch.zeros(3), torch.zeros(3)
    with pytest.raises(ValueError, match="gamma"):
        focal_loss(x, t, gamma=-1)
    with pytest.raises(ValueError, match="alpha"):
        focal_loss(x, t, alpha=1.5)
    with pytest.raises(ValueError, match="reduction"):
        focal_loss(x, t, reduction="avg")
    with pytest.raises(ValueError, match="same shape"):
        focal_loss(torch.zeros(3), torch.zeros(4))


@pytest.mark.parametrize("alpha", [0.25, None])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_sparse_target_loss_equals_focal_loss(alpha, gamma):
    """The training path's loss: same per-image sums and gradients as focal_loss on the dense one-hot targets."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(3, 50, 4, generator=g, dtype=torch.float64) * 8).requires_grad_()
    fg = torch.rand(3, 50, generator=g) < 0.2
    img, anchor = torch.nonzero(fg, as_tuple=True)
    cls = torch.randint(0, 4, img.shape, generator=g)
    targets = torch.zeros(3, 50, 4, dtype=torch.float64)
    targets[img, anchor, cls] = 1
    w = (torch.rand(3, 50, generator=g) < 0.8).double()
    w[img, anchor] = 1
    ref = (focal_loss(x, targets, alpha, gamma) * w[..., None]).sum(dim=(1, 2))
    got = focal_loss_sparse_sum(x, (img, anchor, cls), w, alpha, gamma)
    torch.testing.assert_close(got, ref.float(), rtol=1e-5, atol=1e-6)
    upstream = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    (g_ref,) = torch.autograd.grad((ref * upstream).sum(), x)
    (g_got,) = torch.autograd.grad((got * upstream.float()).sum(), x)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_sparse_target_loss_finite_at_saturation(dtype):
    x = torch.tensor([[[-1e4], [-50.0], [0.0], [50.0], [1e4]] * 2], dtype=dtype, requires_grad=True)  # (1, 10, 1)
    positives = (torch.zeros(5, dtype=torch.long), torch.arange(5), torch.zeros(5, dtype=torch.long))
    for gamma in (0.0, 0.3, 2.0):
        loss = focal_loss_sparse_sum(x, positives, None, 0.25, gamma)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all() and grad.dtype == dtype
        assert grad[0, 0, 0] < 0 and grad[0, 9, 0] > 0  # confidently wrong: pushed the right way
