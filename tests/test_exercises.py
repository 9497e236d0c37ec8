"""The exercises' checks: the solutions pass, and typical mistakes fail with the hint that fits them."""

import torch
import torch.nn.functional as F

from retinanet_lab.exercises import SOLUTIONS, check_decode_boxes, check_encode_boxes, check_focal_loss, check_iou, show_solution


def test_solutions_pass_and_agree_with_the_package():
    from torchvision.ops import box_iou

    from retinanet_lab import encode_boxes, focal_loss

    for check, name in ((check_iou, "iou"), (check_focal_loss, "focal_loss"), (check_encode_boxes, "encode_boxes"),
                        (check_decode_boxes, "decode_boxes")):
        result = check(SOLUTIONS[name])
        assert result.passed, str(result)
        assert "def " in show_solution(name)
    b = torch.tensor([[0.0, 0, 10, 10], [2, 3, 9, 12]])
    assert torch.allclose(SOLUTIONS["iou"](b, b.flip(0)), box_iou(b, b.flip(0)))
    x, y = torch.randn(50), (torch.rand(50) > 0.5).float()
    assert torch.allclose(SOLUTIONS["focal_loss"](x, y, 0.25, 2.0), focal_loss(x, y, 0.25, 2.0), atol=1e-6)
    a = torch.tensor([[0.0, 0, 10, 20]])
    g = torch.tensor([[1.0, 2, 13, 19]])
    assert torch.allclose(SOLUTIONS["encode_boxes"](g, a), encode_boxes(g, a))


def test_iou_without_clamp_gets_the_disjoint_hint():
    def unclamped(b1, b2):
        lt = torch.maximum(b1[:, None, :2], b2[None, :, :2])
        rb = torch.minimum(b1[:, None, 2:], b2[None, :, 2:])
        inter = (rb - lt).prod(-1)  # negative x negative = positive for disjoint boxes
        a1 = (b1[:, 2:] - b1[:, :2]).prod(-1)
        a2 = (b2[:, 2:] - b2[:, :2]).prod(-1)
        return inter / (a1[:, None] + a2[None] - inter)

    r = check_iou(unclamped)
    assert not r.passed and "clamp" in str(r)


def test_iou_not_broadcast_gets_the_shape_hint():
    r = check_iou(lambda b1, b2: SOLUTIONS["iou"](b1, b2).diagonal() if len(b1) == len(b2) else SOLUTIONS["iou"](b1, b2)[:, 0])
    assert not r.passed and "shape" in str(r)


def test_focal_loss_mistakes():
    r = check_focal_loss(lambda x, y, a, g: F.binary_cross_entropy_with_logits(x, y, reduction="none"))
    assert not r.passed and "(1 - p_t)^γ" in str(r)

    def unstable(x, y, alpha, gamma):
        p = torch.sigmoid(x)
        pt = p * y + (1 - p) * (1 - y)
        w = 1.0 if alpha is None else alpha * y + (1 - alpha) * (1 - y)
        return -w * (1 - pt) ** gamma * torch.log(pt)

    r = check_focal_loss(unstable)
    assert not r.passed and "logsigmoid" in str(r) and str(r).count("✔") == 4

    def alpha_everywhere(x, y, alpha, gamma):
        return (alpha or 1.0) * SOLUTIONS["focal_loss"](x, y, None, gamma)

    r = check_focal_loss(alpha_everywhere)
    assert not r.passed and "1 - α for negatives" in str(r)
    r = check_focal_loss(lambda x, y, a, g: SOLUTIONS["focal_loss"](x, y, a, g).sum())
    assert not r.passed and "no sum" in str(r)


def test_encode_and_decode_mistakes():
    def no_divide(gt, an):
        d = SOLUTIONS["encode_boxes"](gt, an)
        w = an[:, 2] - an[:, 0]
        return torch.stack([d[:, 0] * w, d[:, 1], d[:, 2], d[:, 3]], 1)

    r = check_encode_boxes(no_divide)
    assert not r.passed and "divided by the anchor's width" in str(r)
    r = check_encode_boxes(lambda gt, an: 1 / 0)
    assert not r.passed and "ZeroDivisionError" in str(r)
    r = check_decode_boxes(lambda d, an: an + d)
    assert not r.passed and "exp(dw)" in str(r)
    r = check_iou(lambda b1, b2: [[1.0]])
    assert not r.passed and "torch.Tensor" in str(r)
