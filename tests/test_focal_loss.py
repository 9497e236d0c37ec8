"""The focal loss against torchvision, BCE and hand-computed values; finite everywhere."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import sigmoid_focal_loss

from retinanet_lab import alpha_t, cross_entropy, focal_loss, focal_loss_grad, modulating_factor, p_t
from retinanet_lab.focal_loss import focal_loss_from_terms, focal_loss_sparse_sum, focal_loss_terms


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


# ---- one definition: the training form, the terms and every user against `focal_loss` -----------------------------
def _sparse_case(seed: int, b: int, a: int, k: int):
    """Logits (B, A, K) float64 with saturated entries (±50, ±200) among random ones, one-hot positives on ~20% of
    the anchors, ~15% of the other anchors ignored, and the dense targets and 0/1 weights that describe the same."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, a, k, generator=g, dtype=torch.float64) * 6
    saturated = torch.tensor([50.0, -50.0, 200.0, -200.0], dtype=torch.float64)
    where = torch.rand(b, a, k, generator=g) < 0.3
    x[where] = saturated[torch.randint(0, 4, (int(where.sum()),), generator=g)]
    fg = torch.rand(b, a, generator=g) < 0.2
    img, anchor = torch.nonzero(fg, as_tuple=True)
    cls = torch.randint(0, k, img.shape, generator=g)
    targets = torch.zeros(b, a, k, dtype=torch.float64)
    targets[img, anchor, cls] = 1
    ignored = (torch.rand(b, a, generator=g) < 0.15) & ~fg
    return x, targets, (img, anchor, cls), (~ignored).double()


@pytest.mark.parametrize("shape", [(3, 60, 4), (40, 1, 1)], ids=["BxAxK", "per-element"])
@pytest.mark.parametrize("weighted", [False, True], ids=["no-weight", "ignored-anchors"])
@pytest.mark.parametrize("alpha", [None, 0.25, 0.75])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
def test_sparse_training_form_is_the_focal_loss(shape, weighted, alpha, gamma):
    """`focal_loss_sparse_sum` (what training calls) is an exact re-arrangement of `focal_loss`: the same per-image
    sums and the same gradients, at saturated logits too; with (40, 1, 1) logits each "image" is one element."""
    x, targets, positives, w = _sparse_case(int(gamma * 10 + (alpha or 0) * 100) + weighted, *shape)
    x.requires_grad_(True)
    weight = w if weighted else None
    w = w if weighted else torch.ones_like(w)
    ref = (focal_loss(x, targets, alpha, gamma) * w[..., None]).sum(dim=(1, 2))  # (B,) float64
    got = focal_loss_sparse_sum(x, positives, weight, alpha, gamma)  # (B,) float32
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), ref.detach(), rtol=1e-5, atol=1e-5)
    upstream = torch.rand(shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.5
    (g_ref,) = torch.autograd.grad((ref * upstream).sum(), x)
    (g_got,) = torch.autograd.grad((got * upstream.float()).sum(), x)
    assert g_got.dtype == x.dtype and torch.isfinite(g_got).all()
    torch.testing.assert_close(g_got, g_ref, rtol=1e-4, atol=1e-6)
    if weighted:  # an ignored anchor gets neither loss nor gradient
        assert (g_got[w == 0] == 0).all()
    assert float(g_ref.abs().max()) > 0.1  # the comparison is not between two zeros


def test_saturated_entries_have_their_exact_loss_in_the_training_form():
    """A confidently wrong negative at logit 200 costs (1 - α) · 200 in both forms; its gradient is 1 - α."""
    x = torch.tensor([[[200.0], [-200.0], [50.0], [-50.0]]], requires_grad=True)  # (1, 4, 1), all negatives
    loss = focal_loss_sparse_sum(x, (torch.zeros(0, dtype=torch.long),) * 3, None, 0.25, 0.5)
    assert float(loss.detach()) == pytest.approx(0.75 * (200 + 50), rel=1e-6)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    assert grad.flatten().tolist() == pytest.approx([0.75, 0.0, 0.75, 0.0], abs=1e-6)


@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_loss_is_its_terms_put_together(alpha, gamma):
    """`focal_loss` = `focal_loss_from_terms(*focal_loss_terms(x, y), α_t, γ)`, values and gradients; the terms are
    CE (BCE with logits) and log(1 - p_t) computed independently here."""
    g = torch.Generator().manual_seed(5)
    x = torch.cat([torch.randn(200, generator=g, dtype=torch.float64) * 5, torch.tensor([50.0, -50.0, 200.0, -200.0] * 2,
                                                                                          dtype=torch.float64)])
    y = (torch.rand(x.shape, generator=g) < 0.5).double()
    ce, log_1m_pt = focal_loss_terms(x, y)
    torch.testing.assert_close(ce, F.binary_cross_entropy_with_logits(x, y, reduction="none"))
    torch.testing.assert_close(log_1m_pt, torch.where(y == 1, F.logsigmoid(-x), F.logsigmoid(x)))
    x.requires_grad_(True)
    whole = focal_loss(x, y, alpha, gamma)
    parts = focal_loss_from_terms(*focal_loss_terms(x, y), alpha_t(y, alpha), gamma)
    torch.testing.assert_close(parts, whole, rtol=0, atol=0)
    torch.testing.assert_close(torch.autograd.grad(parts.sum(), x)[0], torch.autograd.grad(whole.sum(), x)[0])


class _StubModel:
    """Stands in for a RetinaNet in `anchor_samples`: `inspect` returns fixed logits and matches (one level)."""

    def __init__(self, logits, matched, gt_labels):
        self.r = {"cls_logits": [logits], "matched": [matched], "gt_labels": gt_labels, "anchors": [torch.zeros(2, 3, 1, 4)],
                  "feature_sizes": [(2, 3)], "image_sizes": [(8, 12)] * logits.shape[0], "batch": None}

    def inspect(self, images, targets):
        return self.r


def test_hard_examples_and_anatomy_compute_the_focal_loss():
    """The explorer's per-example and per-anchor losses (from stored terms) equal `focal_loss` on one-hot targets
    built here; ignored anchors count nowhere; the training form gives the same per-image sums."""
    from retinanet_lab.hard_examples import anchor_losses, anchor_samples, example_losses
    from retinanet_lab.loss import classification_loss_per_image

    g = torch.Generator().manual_seed(9)
    logits = torch.randn(2, 2, 3, 1, 4, generator=g) * 4  # (B, H, W, A, K)
    logits[0, 0, 0, 0] = torch.tensor([200.0, -200.0, 50.0, -50.0])
    matched = torch.tensor([[0, -1, -2, 1, -1, 0], [-1, 0, -1, -2, -1, -1]]).view(2, 2, 3, 1)  # box index, -1, -2 (ignored)
    gt_labels = torch.tensor([[3, 1], [4, 0]])  # (B, G), labels 1..K
    s = anchor_samples(_StubModel(logits, matched, gt_labels), [None, None], [None, None])
    x, m = logits.view(2, 6, 4), matched.view(2, 6)
    onehot = torch.zeros(2, 6, 4)
    for b, a in zip(*torch.nonzero(m >= 0, as_tuple=True)):
        onehot[b, a, gt_labels[b, m[b, a]] - 1] = 1
    valid = m != -2
    for gamma, alpha in ((0.0, None), (2.0, 0.25), (0.5, 0.75)):
        want = focal_loss(x, onehot, alpha, gamma)  # (B, A, K)
        torch.testing.assert_close(example_losses(s, "positives", gamma, alpha), want[valid[..., None] & (onehot == 1)])
        torch.testing.assert_close(example_losses(s, "negatives", gamma, alpha), want[valid[..., None] & (onehot == 0)])
        if alpha is not None:
            torch.testing.assert_close(anchor_losses(s, "FL", gamma, alpha), want.sum(-1) * valid)
            per_image = classification_loss_per_image(x, m, gt_labels, alpha, gamma)
            torch.testing.assert_close(per_image, (want.sum(-1) * valid).sum(1))
    torch.testing.assert_close(anchor_losses(s, "CE"), cross_entropy(x, onehot).sum(-1) * valid)


def test_the_focal_loss_is_written_once():
    """No module outside focal_loss.py computes the focal loss's pieces from logits itself or imports its private
    helpers (the lessons' student solutions and the exercises' catalogue of mistakes are exempt from the first)."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "retinanet_lab"
    private = re.compile(r"from \.+focal_loss import[^\n]*\b_\w")
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not private.search(text), f"{path} imports a private name of focal_loss.py"
        if path.name == "focal_loss.py" or {"lessons", "exercises"} & set(path.parts):
            continue
        for piece in ("logsigmoid(", "binary_cross_entropy_with_logits(", "sigmoid_focal_loss("):
            assert piece not in text, f"{path} computes {piece[:-1]} itself: call retinanet_lab.focal_loss instead"
