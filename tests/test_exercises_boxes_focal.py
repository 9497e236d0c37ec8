"""Mutation suite for the checks of lessons 01 and 02 (IoU, box encoding, box decoding, focal loss).

Every `wrong_*` function below is a typical student mistake, written the way a student would write it (its own
code, not the checks' catalogue). Each must be rejected with *that* mistake's id (`CheckResult.mistake`) and a
phrase of the hint that names it. Every `right_*` function is a correct solution written another way (a Python
loop, torchvision, numpy, another algebra, another dtype) and must be accepted, as must the reference solution that
the lessons teach (the same code as in the lessons' solution cells).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retinanet_lab.exercises.boxes import check_decode_boxes, check_encode_boxes, check_iou
from retinanet_lab.exercises.focal import check_focal_loss


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The checks work on a few numbers: one thread is enough, and on a loaded machine it is much faster (tiny
    float32 kernels that torch splits over threads otherwise wait for a free core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rejected(check, fn, mistake: str, phrase: str) -> None:
    r = check(fn)
    assert not r.passed, str(r)
    assert r.mistake == mistake, f"diagnosed as {r.mistake!r}, expected {mistake!r}\n{r}"
    assert phrase in r.hint, f"{phrase!r} not in the hint\n{r}"


def _accepted(check, fn) -> None:
    r = check(fn)
    assert r.passed, str(r)
    assert r.mistake is None and r.hint == ""


def _not_written(*args, **kwargs):
    raise NotImplementedError


# =====================================================================================================
# IoU
# =====================================================================================================
def reference_iou(boxes1, boxes2):
    """The lesson's solution (solution cell of lesson 01, exercise 1)."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])   # (N,)
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])   # (M,)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])      # (N, M, 2): the intersection's (x1, y1)
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2): its (x2, y2)
    wh = (bottom_right - top_left).clamp(min=0)                             # (N, M, 2): width, height; 0 if apart
    inter = wh[..., 0] * wh[..., 1]                                         # (N, M)
    union = area1[:, None] + area2[None, :] - inter                         # (N, M)
    return inter / union


def right_iou_loops(boxes1, boxes2):
    rows = []
    for a in boxes1.tolist():
        row = []
        for b in boxes2.tolist():
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = iw * ih
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            row.append(inter / union)
        rows.append(row)
    return torch.tensor(rows)


def right_iou_torchvision(boxes1, boxes2):
    from torchvision.ops import box_iou

    return box_iou(boxes1, boxes2)


def right_iou_numpy_float64(boxes1, boxes2):
    a = boxes1.numpy().astype(np.float64)[:, None, :]
    b = boxes2.numpy().astype(np.float64)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area = lambda z: (z[..., 2] - z[..., 0]) * (z[..., 3] - z[..., 1])
    return torch.from_numpy(inter / (area(a) + area(b) - inter))  # float64


def right_iou_relu_unbind(boxes1, boxes2):
    x1, y1, x2, y2 = boxes1.unsqueeze(1).unbind(-1)  # (N, 1) each
    u1, v1, u2, v2 = boxes2.unsqueeze(0).unbind(-1)  # (1, M) each
    inter = torch.relu(torch.min(x2, u2) - torch.max(x1, u1)) * torch.relu(torch.min(y2, v2) - torch.max(y1, v1))
    return inter / ((x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter)


@pytest.mark.parametrize("fn", [reference_iou, right_iou_loops, right_iou_torchvision, right_iou_numpy_float64,
                                right_iou_relu_unbind], ids=lambda f: f.__name__)
def test_iou_accepts_right_implementations(fn):
    _accepted(check_iou, fn)


def wrong_iou_no_clamp(boxes1, boxes2):
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (rb - lt).prod(dim=-1)
    return inter / (area1[:, None] + area2[None, :] - inter)


def wrong_iou_clamp_product(boxes1, boxes2):
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = ((rb - lt)[..., 0] * (rb - lt)[..., 1]).clamp(min=0)
    return inter / (area1[:, None] + area2[None, :] - inter)


def wrong_iou_union_no_minus(boxes1, boxes2):
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    wh = (torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:]) - torch.max(boxes1[:, None, :2], boxes2[None, :, :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :]
    return inter / union


def _inter_and_areas(boxes1, boxes2):
    """A student's helper: the intersection (N, M) and both areas, all correct."""
    wh = (torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:]) - torch.max(boxes1[:, None, :2], boxes2[None, :, :2])).clamp(min=0)
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    return wh[..., 0] * wh[..., 1], area1, area2


def wrong_iou_over_smaller(boxes1, boxes2):
    inter, area1, area2 = _inter_and_areas(boxes1, boxes2)
    return inter / torch.minimum(area1[:, None], area2[None, :])


def wrong_iou_over_area1(boxes1, boxes2):
    inter, area1, _ = _inter_and_areas(boxes1, boxes2)
    return inter / area1[:, None]


def wrong_iou_over_area2(boxes1, boxes2):
    inter, _, area2 = _inter_and_areas(boxes1, boxes2)
    return inter / area2[None, :]


def wrong_iou_intersection_only(boxes1, boxes2):
    inter, _, _ = _inter_and_areas(boxes1, boxes2)
    return inter


def wrong_iou_plus_one(boxes1, boxes2):
    area1 = (boxes1[:, 2] - boxes1[:, 0] + 1) * (boxes1[:, 3] - boxes1[:, 1] + 1)
    area2 = (boxes2[:, 2] - boxes2[:, 0] + 1) * (boxes2[:, 3] - boxes2[:, 1] + 1)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt + 1).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


def wrong_iou_xywh(boxes1, boxes2):
    x1, y1, w1, h1 = boxes1[:, None].unbind(-1)
    x2, y2, w2, h2 = boxes2[None].unbind(-1)
    iw = (torch.min(x1 + w1, x2 + w2) - torch.max(x1, x2)).clamp(min=0)
    ih = (torch.min(y1 + h1, y2 + h2) - torch.max(y1, y2)).clamp(min=0)
    inter = iw * ih
    return inter / (w1 * h1 + w2 * h2 - inter)


def wrong_iou_enclosing(boxes1, boxes2):
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])  # min and max the wrong way round
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


def wrong_iou_elementwise(boxes1, boxes2):
    lt = torch.max(boxes1[:, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, 2:], boxes2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    return inter / (area1 + area2 - inter)  # (N,) when N == M, an error otherwise


def wrong_iou_elementwise_reshaped(boxes1, boxes2):
    lt = torch.max(boxes1[:, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, 2:], boxes2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    return (inter / (area1 + area2 - inter))[:, None]  # "the answer must be 2-D": (N, 1), and N != M raises


def wrong_iou_transposed(boxes1, boxes2):
    inter, area1, area2 = _inter_and_areas(boxes2, boxes1)  # boxes2 indexes the rows
    return inter / (area1[:, None] + area2[None, :] - inter)


def wrong_iou_python_list(boxes1, boxes2):
    out = []
    for a in boxes1:
        row = []
        for b in boxes2:
            iw = (torch.min(a[2], b[2]) - torch.max(a[0], b[0])).clamp(min=0)
            ih = (torch.min(a[3], b[3]) - torch.max(a[1], b[1])).clamp(min=0)
            inter = iw * ih
            row.append(float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)))
        out.append(row)
    return out


def wrong_iou_union_over_inter(boxes1, boxes2):
    inter, area1, area2 = _inter_and_areas(boxes1, boxes2)
    return (area1[:, None] + area2[None, :] - inter) / inter


IOU_MISTAKES = [
    (wrong_iou_no_clamp, "no_clamp", "Clamp each of them at 0"),
    (wrong_iou_clamp_product, "clamp_product", "not their product"),
    (wrong_iou_union_no_minus, "union_no_minus", "count the intersection twice"),
    (wrong_iou_over_smaller, "over_smaller", "smaller box's area"),
    (wrong_iou_over_area1, "over_area1", "boxes1 only"),
    (wrong_iou_over_area2, "over_area2", "boxes2 only"),
    (wrong_iou_intersection_only, "intersection_only", "divide it by the union"),
    (wrong_iou_plus_one, "plus_one", "+1 pixel"),
    (wrong_iou_xywh, "xywh", "(x, y, width, height)"),
    (wrong_iou_enclosing, "enclosing", "encloses both"),
    (wrong_iou_elementwise, "not_pairwise", "one value per box, not one per pair"),
    (wrong_iou_elementwise_reshaped, "not_broadcast", "boxes1[:, None, :]"),
    (wrong_iou_transposed, "transposed", "rows"),
    (wrong_iou_python_list, "not_a_tensor", "returned a list"),
    (wrong_iou_union_over_inter, "union_over_inter", "not union / intersection"),
]


@pytest.mark.parametrize("fn,mistake,phrase", IOU_MISTAKES, ids=[m[1] for m in IOU_MISTAKES])
def test_iou_names_the_mistake(fn, mistake, phrase):
    _rejected(check_iou, fn, mistake, phrase)


def test_iou_not_written_and_no_return():
    _rejected(check_iou, _not_written, "not_implemented", "not written yet")
    _rejected(check_iou, lambda b1, b2: None, "returned_none", "forget `return`")


def test_iou_shows_the_line_of_an_error():
    def typo(boxes1, boxes2):
        area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
        return area1[:, None] / boxes2[:, 5]

    r = check_iou(typo)
    assert r.mistake == "raised" and "IndexError" in r.hint and "line 3 of your function: `return area1" in r.hint, str(r)


# =====================================================================================================
# box encoding
# =====================================================================================================
def reference_encode(gt_boxes, anchors):
    """The lesson's solution (solution cell of lesson 01, exercise 2)."""
    aw = anchors[:, 2] - anchors[:, 0]           # (N,) anchor widths
    ah = anchors[:, 3] - anchors[:, 1]           # (N,) anchor heights
    ax = anchors[:, 0] + 0.5 * aw                # (N,) anchor centres
    ay = anchors[:, 1] + 0.5 * ah
    gw = gt_boxes[:, 2] - gt_boxes[:, 0]         # (N,) object widths, heights and centres
    gh = gt_boxes[:, 3] - gt_boxes[:, 1]
    gx = gt_boxes[:, 0] + 0.5 * gw
    gy = gt_boxes[:, 1] + 0.5 * gh
    dx = (gx - ax) / aw                          # the centre's shift in anchor widths ...
    dy = (gy - ay) / ah                          # ... and in anchor heights
    dw = torch.log(gw / aw)                      # the log of the size ratios
    dh = torch.log(gh / ah)
    return torch.stack([dx, dy, dw, dh], dim=1)  # (N, 4): one row per anchor


def right_encode_box_convert(gt_boxes, anchors):
    from torchvision.ops import box_convert

    g = box_convert(gt_boxes, "xyxy", "cxcywh")
    a = box_convert(anchors, "xyxy", "cxcywh")
    return torch.cat([(g[:, :2] - a[:, :2]) / a[:, 2:], torch.log(g[:, 2:] / a[:, 2:])], dim=1)


def right_encode_loop(gt_boxes, anchors):
    rows = []
    for (x1, y1, x2, y2), (a1, b1, a2, b2) in zip(gt_boxes.tolist(), anchors.tolist()):
        w, h, wa, ha = x2 - x1, y2 - y1, a2 - a1, b2 - b1
        rows.append([((x1 + x2) / 2 - (a1 + a2) / 2) / wa, ((y1 + y2) / 2 - (b1 + b2) / 2) / ha,
                     math.log(w / wa), math.log(h / ha)])
    return torch.tensor(rows, dtype=torch.float64)


def right_encode_numpy(gt_boxes, anchors):
    g, a = gt_boxes.numpy(), anchors.numpy()
    g_ctr, a_ctr = (g[:, :2] + g[:, 2:]) / 2, (a[:, :2] + a[:, 2:]) / 2
    g_size, a_size = g[:, 2:] - g[:, :2], a[:, 2:] - a[:, :2]
    return torch.from_numpy(np.concatenate([(g_ctr - a_ctr) / a_size, np.log(g_size) - np.log(a_size)], axis=1))


@pytest.mark.parametrize("fn", [reference_encode, right_encode_box_convert, right_encode_loop, right_encode_numpy],
                         ids=lambda f: f.__name__)
def test_encode_accepts_right_implementations(fn):
    _accepted(check_encode_boxes, fn)


def _centres(b):
    """A student's helper: centre x, centre y, width, height of (N, 4) boxes (correct)."""
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    return b[:, 0] + w / 2, b[:, 1] + h / 2, w, h


def wrong_encode_dy_by_width(gt, an):
    gx, gy, gw, gh = _centres(gt)
    ax, ay, aw, ah = _centres(an)
    return torch.stack([(gx - ax) / aw, (gy - ay) / aw, torch.log(gw / aw), torch.log(gh / ah)], dim=1)


def wrong_encode_dx_by_height(gt, an):
    gx, gy, gw, gh = _centres(gt)
    ax, ay, aw, ah = _centres(an)
    return torch.stack([(gx - ax) / ah, (gy - ay) / ah, torch.log(gw / aw), torch.log(gh / ah)], dim=1)


def wrong_encode_no_divide(gt, an):
    gx, gy, gw, gh = _centres(gt)
    ax, ay, aw, ah = _centres(an)
    return torch.stack([gx - ax, gy - ay, torch.log(gw / aw), torch.log(gh / ah)], dim=1)


def wrong_encode_no_log(gt, an):
    gx, gy, gw, gh = _centres(gt)
    ax, ay, aw, ah = _centres(an)
    return torch.stack([(gx - ax) / aw, (gy - ay) / ah, gw / aw, gh / ah], dim=1)


def wrong_encode_ratio_minus_one(gt, an):
    gx, gy, gw, gh = _centres(gt)
    ax, ay, aw, ah = _centres(an)
    return torch.stack([(gx - ax) / aw, (gy - ay) / ah, gw / aw - 1, gh / ah - 1], dim=1)


def wrong_encode_inverted_ratio(gt, an):
    gx, gy, gw, gh = _centres(gt)
    ax, ay, aw, ah = _centres(an)
    return torch.stack([(gx - ax) / aw, (gy - ay) / ah, torch.log(aw / gw), torch.log(ah / gh)], dim=1)


def wrong_encode_corners(gt, an):
    aw, ah = an[:, 2] - an[:, 0], an[:, 3] - an[:, 1]
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    return torch.stack([(gt[:, 0] - an[:, 0]) / aw, (gt[:, 1] - an[:, 1]) / ah, torch.log(gw / aw), torch.log(gh / ah)], 1)


def wrong_encode_divide_by_gt(gt, an):
    gx, gy, gw, gh = _centres(gt)
    ax, ay, aw, ah = _centres(an)
    return torch.stack([(gx - ax) / gw, (gy - ay) / gh, torch.log(gw / aw), torch.log(gh / ah)], dim=1)


def wrong_encode_plus_one(gt, an):
    aw, ah = an[:, 2] - an[:, 0] + 1, an[:, 3] - an[:, 1] + 1
    gw, gh = gt[:, 2] - gt[:, 0] + 1, gt[:, 3] - gt[:, 1] + 1
    ax, ay = an[:, 0] + 0.5 * aw, an[:, 1] + 0.5 * ah
    gx, gy = gt[:, 0] + 0.5 * gw, gt[:, 1] + 0.5 * gh
    return torch.stack([(gx - ax) / aw, (gy - ay) / ah, torch.log(gw / aw), torch.log(gh / ah)], dim=1)


def wrong_encode_xy_order(gt, an):
    gx, gy, gw, gh = _centres(gt)
    ax, ay, aw, ah = _centres(an)
    return torch.stack([(gy - ay) / ah, (gx - ax) / aw, torch.log(gh / ah), torch.log(gw / aw)], dim=1)


def wrong_encode_order_dw_dy(gt, an):
    gx, gy, gw, gh = _centres(gt)
    ax, ay, aw, ah = _centres(an)
    return torch.stack([(gx - ax) / aw, torch.log(gw / aw), (gy - ay) / ah, torch.log(gh / ah)], dim=1)


def wrong_encode_dy_zero(gt, an):
    gx, gy, gw, gh = _centres(gt)
    ax, ay, aw, ah = _centres(an)
    dy = (ay - ay) / ah  # a copy-paste slip
    return torch.stack([(gx - ax) / aw, dy, torch.log(gw / aw), torch.log(gh / ah)], dim=1)


def wrong_encode_transposed(gt, an):
    gx, gy, gw, gh = _centres(gt)
    ax, ay, aw, ah = _centres(an)
    return torch.stack([(gx - ax) / aw, (gy - ay) / ah, torch.log(gw / aw), torch.log(gh / ah)])  # (4, N)


def wrong_encode_concatenated(gt, an):
    gx, gy, gw, gh = _centres(gt)
    ax, ay, aw, ah = _centres(an)
    return torch.cat([(gx - ax) / aw, (gy - ay) / ah, torch.log(gw / aw), torch.log(gh / ah)])  # (4 N,)


def wrong_encode_swap_wh(gt, an):
    gx, gy, gw, gh = _centres(gt)
    ax, ay = (an[:, 0] + an[:, 2]) / 2, (an[:, 1] + an[:, 3]) / 2
    ah, aw = an[:, 2] - an[:, 0], an[:, 3] - an[:, 1]  # width and height the wrong way round
    return torch.stack([(gx - ax) / aw, (gy - ay) / ah, torch.log(gw / aw), torch.log(gh / ah)], dim=1)


def wrong_encode_wrong_sign_shift(gt, an):
    gx, gy, gw, gh = _centres(gt)
    ax, ay, aw, ah = _centres(an)
    return torch.stack([(ax - gx) / aw, (ay - gy) / ah, torch.log(gw / aw), torch.log(gh / ah)], dim=1)


def wrong_encode_log10(gt, an):
    gx, gy, gw, gh = _centres(gt)
    ax, ay, aw, ah = _centres(an)
    return torch.stack([(gx - ax) / aw, (gy - ay) / ah, torch.log10(gw / aw), torch.log10(gh / ah)], dim=1)


ENCODE_MISTAKES = [
    (wrong_encode_dy_by_width, "dy_by_width", "anchor's *height*"),
    (wrong_encode_dx_by_height, "dx_by_height", "anchor's *width*"),
    (wrong_encode_no_divide, "no_divide", "*divided* by the anchor's width"),
    (wrong_encode_no_log, "no_log", "*log* of the size ratio"),
    (wrong_encode_ratio_minus_one, "ratio_minus_one", "not w / w_a - 1"),
    (wrong_encode_inverted_ratio, "inverted_ratio", "wrong sign"),
    (wrong_encode_corners, "corners", "*centres*"),
    (wrong_encode_divide_by_gt, "divide_by_gt", "*anchor's*"),
    (wrong_encode_plus_one, "plus_one", "+1 pixel"),
    (wrong_encode_xy_order, "xy_order", "x before y"),
    (wrong_encode_order_dw_dy, "order_dw_dy", "(dx, dy, dw, dh)"),
    (wrong_encode_dy_zero, "dy_zero", "dy is 0"),
    (wrong_encode_transposed, "transposed", "dim=1"),
    (wrong_encode_concatenated, "concatenated", "torch.stack([dx, dy, dw, dh], dim=1)"),
    (wrong_encode_swap_wh, "swap_wh", "swapped"),
    (wrong_encode_wrong_sign_shift, "wrong_sign_shift", "box centre minus anchor centre"),
    (wrong_encode_log10, "log10", "natural log"),
]


@pytest.mark.parametrize("fn,mistake,phrase", ENCODE_MISTAKES, ids=[m[1] for m in ENCODE_MISTAKES])
def test_encode_names_the_mistake(fn, mistake, phrase):
    _rejected(check_encode_boxes, fn, mistake, phrase)


def test_encode_not_written_and_errors():
    _rejected(check_encode_boxes, _not_written, "not_implemented", "not written yet")
    r = check_encode_boxes(lambda gt, an: 1 / 0)
    assert r.mistake == "raised" and "ZeroDivisionError" in r.hint, str(r)


# =====================================================================================================
# box decoding
# =====================================================================================================
def reference_decode(deltas, anchors):
    """The lesson's solution (solution cell of lesson 01, exercise 3)."""
    aw = anchors[:, 2] - anchors[:, 0]          # (N,) anchor widths and heights
    ah = anchors[:, 3] - anchors[:, 1]
    ax = anchors[:, 0] + 0.5 * aw               # (N,) anchor centres
    ay = anchors[:, 1] + 0.5 * ah
    dx, dy, dw, dh = deltas.unbind(dim=1)       # (N,) each
    x = ax + dx * aw                            # the centre moves in anchor units
    y = ay + dy * ah
    w = aw * torch.exp(dw)                      # dw and dh are logs of the size ratios
    h = ah * torch.exp(dh)
    return torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], dim=1)  # (N, 4)


def right_decode_box_convert(deltas, anchors):
    from torchvision.ops import box_convert

    a = box_convert(anchors, "xyxy", "cxcywh")
    centre = a[:, :2] + deltas[:, :2] * a[:, 2:]
    size = a[:, 2:] * deltas[:, 2:].exp()
    return box_convert(torch.cat([centre, size], dim=1), "cxcywh", "xyxy")


def right_decode_loop(deltas, anchors):
    out = []
    for (dx, dy, dw, dh), (x1, y1, x2, y2) in zip(deltas.tolist(), anchors.tolist()):
        w, h = x2 - x1, y2 - y1
        cx, cy = x1 + w / 2 + dx * w, y1 + h / 2 + dy * h
        nw, nh = w * math.exp(dw), h * math.exp(dh)
        out.append([cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2])
    return torch.tensor(out, dtype=torch.float64)


def right_decode_corner_algebra(deltas, anchors):
    # x1' = cx - w'/2 = x1 + w (1/2 + dx - exp(dw)/2): the same thing written from the corners
    size = anchors[:, 2:] - anchors[:, :2]
    centre = (anchors[:, :2] + anchors[:, 2:]) / 2 + deltas[:, :2] * size
    half = size * torch.exp(deltas[:, 2:]) / 2
    return torch.cat([centre - half, centre + half], dim=1)


@pytest.mark.parametrize("fn", [reference_decode, right_decode_box_convert, right_decode_loop, right_decode_corner_algebra],
                         ids=lambda f: f.__name__)
def test_decode_accepts_right_implementations(fn):
    _accepted(check_decode_boxes, fn)


def wrong_decode_no_exp(deltas, anchors):
    ax, ay, aw, ah = _centres(anchors)
    cx, cy = ax + deltas[:, 0] * aw, ay + deltas[:, 1] * ah
    w, h = aw * deltas[:, 2], ah * deltas[:, 3]
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


def wrong_decode_exp_centre(deltas, anchors):
    ax, ay, aw, ah = _centres(anchors)
    cx, cy = ax + torch.exp(deltas[:, 0]) * aw, ay + torch.exp(deltas[:, 1]) * ah
    w, h = aw * torch.exp(deltas[:, 2]), ah * torch.exp(deltas[:, 3])
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


def wrong_decode_centre_size(deltas, anchors):
    ax, ay, aw, ah = _centres(anchors)
    cx, cy = ax + deltas[:, 0] * aw, ay + deltas[:, 1] * ah
    w, h = aw * torch.exp(deltas[:, 2]), ah * torch.exp(deltas[:, 3])
    return torch.stack([cx, cy, w, h], dim=1)


def wrong_decode_full_width(deltas, anchors):
    ax, ay, aw, ah = _centres(anchors)
    cx, cy = ax + deltas[:, 0] * aw, ay + deltas[:, 1] * ah
    w, h = aw * torch.exp(deltas[:, 2]), ah * torch.exp(deltas[:, 3])
    return torch.stack([cx - w, cy - h, cx + w, cy + h], dim=1)


def wrong_decode_dy_by_width(deltas, anchors):
    ax, ay, aw, ah = _centres(anchors)
    cx, cy = ax + deltas[:, 0] * aw, ay + deltas[:, 1] * aw
    w, h = aw * torch.exp(deltas[:, 2]), ah * torch.exp(deltas[:, 3])
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


def wrong_decode_add_deltas(deltas, anchors):
    return anchors + deltas


def wrong_decode_from_corner(deltas, anchors):
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    x1 = anchors[:, 0] + deltas[:, 0] * aw
    y1 = anchors[:, 1] + deltas[:, 1] * ah
    w, h = aw * torch.exp(deltas[:, 2]), ah * torch.exp(deltas[:, 3])
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)


def wrong_decode_plus_one(deltas, anchors):
    aw, ah = anchors[:, 2] - anchors[:, 0] + 1, anchors[:, 3] - anchors[:, 1] + 1
    ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
    cx, cy = ax + deltas[:, 0] * aw, ay + deltas[:, 1] * ah
    w, h = aw * torch.exp(deltas[:, 2]), ah * torch.exp(deltas[:, 3])
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w - 1, cy + 0.5 * h - 1], dim=1)


def wrong_decode_xy_swapped(deltas, anchors):
    ax, ay, aw, ah = _centres(anchors)
    dy, dx, dh, dw = deltas.unbind(1)  # columns read in the wrong order
    cx, cy = ax + dx * aw, ay + dy * ah
    w, h = aw * torch.exp(dw), ah * torch.exp(dh)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


def wrong_decode_corner_order(deltas, anchors):
    ax, ay, aw, ah = _centres(anchors)
    cx, cy = ax + deltas[:, 0] * aw, ay + deltas[:, 1] * ah
    w, h = aw * torch.exp(deltas[:, 2]), ah * torch.exp(deltas[:, 3])
    return torch.stack([cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2], dim=1)


def wrong_decode_exp_plus(deltas, anchors):
    ax, ay, aw, ah = _centres(anchors)
    cx, cy = ax + deltas[:, 0] * aw, ay + deltas[:, 1] * ah
    w, h = aw + torch.exp(deltas[:, 2]), ah + torch.exp(deltas[:, 3])
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


def wrong_decode_transposed(deltas, anchors):
    ax, ay, aw, ah = _centres(anchors)
    cx, cy = ax + deltas[:, 0] * aw, ay + deltas[:, 1] * ah
    w, h = aw * torch.exp(deltas[:, 2]), ah * torch.exp(deltas[:, 3])
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])  # (4, N)


def wrong_decode_concatenated(deltas, anchors):
    ax, ay, aw, ah = _centres(anchors)
    cx, cy = ax + deltas[:, 0] * aw, ay + deltas[:, 1] * ah
    w, h = aw * torch.exp(deltas[:, 2]), ah * torch.exp(deltas[:, 3])
    return torch.cat([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])  # (4 N,)


def wrong_decode_swap_wh(deltas, anchors):
    ax, ay = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    ah, aw = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]  # the wrong way round
    cx, cy = ax + deltas[:, 0] * aw, ay + deltas[:, 1] * ah
    w, h = aw * torch.exp(deltas[:, 2]), ah * torch.exp(deltas[:, 3])
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


DECODE_MISTAKES = [
    (wrong_decode_no_exp, "no_exp", "exp(dw)"),
    (wrong_decode_exp_centre, "exp_centre", "without exp"),
    (wrong_decode_centre_size, "centre_size", "return the corners"),
    (wrong_decode_full_width, "full_width", "half a width"),
    (wrong_decode_dy_by_width, "dy_by_width", "anchor's *height*"),
    (wrong_decode_add_deltas, "add_deltas", "not added to the corners"),
    (wrong_decode_from_corner, "from_corner", "*centre*"),
    (wrong_decode_plus_one, "plus_one", "+1 pixel"),
    (wrong_decode_xy_swapped, "xy_order", "column 0 moves x"),
    (wrong_decode_corner_order, "corner_order", "(x1, y1, x2, y2)"),
    (wrong_decode_exp_plus, "exp_plus", "a product"),
    (wrong_decode_transposed, "transposed", "dim=1"),
    (wrong_decode_concatenated, "concatenated", "torch.stack([x1, y1, x2, y2], dim=1)"),
    (wrong_decode_swap_wh, "swap_wh", "swapped"),
]


@pytest.mark.parametrize("fn,mistake,phrase", DECODE_MISTAKES, ids=[m[1] for m in DECODE_MISTAKES])
def test_decode_names_the_mistake(fn, mistake, phrase):
    _rejected(check_decode_boxes, fn, mistake, phrase)


def test_decode_not_written():
    _rejected(check_decode_boxes, _not_written, "not_implemented", "not written yet")


# =====================================================================================================
# focal loss
# =====================================================================================================
def reference_focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    """The lesson's solution (solution cell of lesson 02), in log space from the logits."""
    log_p = F.logsigmoid(logits)                            # log p        (same shape as logits)
    log_1mp = F.logsigmoid(-logits)                         # log(1 - p)
    log_pt = targets * log_p + (1 - targets) * log_1mp      # log p_t      (eq. 2)
    log_1m_pt = targets * log_1mp + (1 - targets) * log_p   # log(1 - p_t)
    loss = -torch.exp(gamma * log_1m_pt) * log_pt           # (1 - p_t)^γ · CE, with CE = -log p_t  (eq. 1, 4)
    if alpha is not None:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)  # α for positives, 1 - α for negatives (eq. 3)
        loss = alpha_t * loss                               # eq. 5
    return loss


def right_focal_bce_where(logits, targets, alpha=0.25, gamma=2.0):
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    log_1m_pt = torch.where(targets == 1, F.logsigmoid(-logits), F.logsigmoid(logits))
    loss = torch.exp(gamma * log_1m_pt) * ce
    if alpha is not None:
        loss = torch.where(targets == 1, alpha, 1 - alpha) * loss
    return loss


def right_focal_softplus_float64(logits, targets, alpha=0.25, gamma=2.0):
    x, y = logits.double(), targets.double()
    s = 2 * y - 1  # +1 for positives, -1 for negatives: p_t = sigmoid(s x)
    ce = F.softplus(-s * x)  # -log sigmoid(s x)
    loss = torch.exp(-gamma * F.softplus(s * x)) * ce  # 1 - p_t = sigmoid(-s x)
    weight = 1.0 if alpha is None else torch.where(y > 0.5, torch.tensor(alpha, dtype=torch.float64),
                                                   torch.tensor(1 - alpha, dtype=torch.float64))
    return weight * loss  # float64


def right_focal_loop(logits, targets, alpha=0.25, gamma=2.0):
    out = []
    for x, y in zip(logits.flatten(), targets.flatten()):
        if y == 1:
            log_pt, log_1m_pt, a = F.logsigmoid(x), F.logsigmoid(-x), (1.0 if alpha is None else alpha)
        else:
            log_pt, log_1m_pt, a = F.logsigmoid(-x), F.logsigmoid(x), (1.0 if alpha is None else 1 - alpha)
        out.append(-a * torch.exp(gamma * log_1m_pt) * log_pt)
    return torch.stack(out).reshape(logits.shape)


@pytest.mark.parametrize("fn", [reference_focal_loss, right_focal_bce_where, right_focal_softplus_float64, right_focal_loop],
                         ids=lambda f: f.__name__)
def test_focal_loss_accepts_right_implementations(fn):
    _accepted(check_focal_loss, fn)


def wrong_focal_no_modulating_factor(logits, targets, alpha=0.25, gamma=2.0):
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if alpha is not None:
        ce = (alpha * targets + (1 - alpha) * (1 - targets)) * ce
    return ce


def wrong_focal_p_instead_of_pt(logits, targets, alpha=0.25, gamma=2.0):
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    loss = torch.exp(gamma * F.logsigmoid(-logits)) * ce  # (1 - p)^γ for every example
    if alpha is not None:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def wrong_focal_pt_power(logits, targets, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = p_t ** gamma * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if alpha is not None:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def wrong_focal_gamma_times(logits, targets, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = (1 - p_t) * gamma * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if alpha is not None:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def wrong_focal_alpha_everywhere(logits, targets, alpha=0.25, gamma=2.0):
    loss = reference_focal_loss(logits, targets, None, gamma)
    return loss * alpha if alpha is not None else loss


def wrong_focal_alpha_swapped(logits, targets, alpha=0.25, gamma=2.0):
    loss = reference_focal_loss(logits, targets, None, gamma)
    if alpha is not None:
        loss = ((1 - alpha) * targets + alpha * (1 - targets)) * loss
    return loss


def wrong_focal_alpha_positives_only(logits, targets, alpha=0.25, gamma=2.0):
    loss = reference_focal_loss(logits, targets, None, gamma)
    if alpha is not None:
        loss = torch.where(targets == 1, alpha * loss, loss)
    return loss


def wrong_focal_no_alpha(logits, targets, alpha=0.25, gamma=2.0):
    return reference_focal_loss(logits, targets, None, gamma)


def wrong_focal_ce_of_p(logits, targets, alpha=0.25, gamma=2.0):
    log_1m_pt = torch.where(targets == 1, F.logsigmoid(-logits), F.logsigmoid(logits))
    loss = -torch.exp(gamma * log_1m_pt) * F.logsigmoid(logits)  # -log(p) for every example
    if alpha is not None:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def wrong_focal_no_minus(logits, targets, alpha=0.25, gamma=2.0):
    log_pt = torch.where(targets == 1, F.logsigmoid(logits), F.logsigmoid(-logits))
    log_1m_pt = torch.where(targets == 1, F.logsigmoid(-logits), F.logsigmoid(logits))
    loss = torch.exp(gamma * log_1m_pt) * log_pt
    if alpha is not None:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def wrong_focal_summed(logits, targets, alpha=0.25, gamma=2.0):
    return reference_focal_loss(logits, targets, alpha, gamma).sum()


def wrong_focal_mean(logits, targets, alpha=0.25, gamma=2.0):
    return reference_focal_loss(logits, targets, alpha, gamma).mean()


def wrong_focal_flattened(logits, targets, alpha=0.25, gamma=2.0):
    return reference_focal_loss(logits.flatten(), targets.flatten(), alpha, gamma)


def _wrong_focal_clamped(eps):
    def wrong_focal_clamped(logits, targets, alpha=0.25, gamma=2.0):
        p = torch.sigmoid(logits)
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = -(1 - p_t) ** gamma * torch.log(p_t.clamp(min=eps))
        if alpha is not None:
            loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
        return loss

    return wrong_focal_clamped


def wrong_focal_log_plus_eps(logits, targets, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(logits)
    loss = -targets * (1 - p) ** gamma * torch.log(p + 1e-8) - (1 - targets) * p ** gamma * torch.log(1 - p + 1e-8)
    if alpha is not None:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def wrong_focal_log_of_sigmoid(logits, targets, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = -(1 - p_t) ** gamma * torch.log(p_t)
    if alpha is not None:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def wrong_focal_power_from_sigmoid(logits, targets, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # stable CE ...
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma  # ... but the factor from probabilities
    if alpha is not None:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def wrong_focal_torchvision(logits, targets, alpha=0.25, gamma=2.0):
    from torchvision.ops import sigmoid_focal_loss

    return sigmoid_focal_loss(logits, targets, alpha=-1 if alpha is None else alpha, gamma=gamma)


def wrong_focal_detached(logits, targets, alpha=0.25, gamma=2.0):
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    log_1m_pt = torch.where(targets == 1, F.logsigmoid(-logits), F.logsigmoid(logits))
    loss = torch.exp(gamma * log_1m_pt).detach() * ce  # "the factor is only a weight"
    if alpha is not None:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def wrong_focal_alpha_none(logits, targets, alpha=0.25, gamma=2.0):
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * reference_focal_loss(logits, targets, None, gamma)


def wrong_focal_softmax(logits, targets, alpha=0.25, gamma=2.0):
    p = torch.softmax(logits, dim=-1)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = -(1 - p_t) ** gamma * torch.log(p_t)
    if alpha is not None:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def wrong_focal_log10(logits, targets, alpha=0.25, gamma=2.0):
    return reference_focal_loss(logits, targets, alpha, gamma) / math.log(10)


def _wrong_focal_floored(eps):
    """(1 - p_t) floored at eps, in log space: finite and right for hard examples, far too large for easy ones."""
    def fn(logits, targets, alpha=0.25, gamma=2.0):
        log_1m_pt = torch.where(targets == 1, F.logsigmoid(-logits), F.logsigmoid(logits)).clamp(min=math.log(eps))
        loss = torch.exp(gamma * log_1m_pt) * F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return loss if alpha is None else (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return fn


def _wrong_focal_cut_off(threshold):
    """Easy examples (p_t above the threshold) dropped: the 'FL ignores easy examples' misreading."""
    def fn(logits, targets, alpha=0.25, gamma=2.0):
        p_t = torch.where(targets == 1, torch.sigmoid(logits), torch.sigmoid(-logits))
        return torch.where(p_t > threshold, torch.zeros_like(logits), reference_focal_loss(logits, targets, alpha, gamma))
    return fn


def wrong_focal_alpha_truthy(logits, targets, alpha=0.25, gamma=2.0):
    return reference_focal_loss(logits, targets, alpha if alpha else None, gamma)  # `if alpha:` skips α = 0


FOCAL_MISTAKES = [
    (wrong_focal_no_modulating_factor, "no_modulating_factor", "(1 - p_t)^γ"),
    (wrong_focal_p_instead_of_pt, "p_instead_of_pt", "p_t = p·y + (1 - p)·(1 - y)"),
    (wrong_focal_pt_power, "pt_power", "p_t^γ does the opposite"),
    (wrong_focal_gamma_times, "gamma_times", "γ is an exponent"),
    (wrong_focal_alpha_everywhere, "alpha_everywhere", "multiplied every example by α"),
    (wrong_focal_alpha_swapped, "alpha_swapped", "swapped"),
    (wrong_focal_alpha_positives_only, "alpha_positives_only", "negatives are weighted too"),
    (wrong_focal_no_alpha, "no_alpha", "left α out"),
    (wrong_focal_ce_of_p, "ce_of_p", "-log(p) for every example"),
    (wrong_focal_no_minus, "no_minus", "must be positive"),
    (wrong_focal_summed, "summed", "no sum"),
    (wrong_focal_mean, "mean", "no mean"),
    (wrong_focal_flattened, "shape", "flattened"),
    (_wrong_focal_clamped(1e-6), "clamped", "caps it far below"),
    (_wrong_focal_clamped(1e-12), "clamped", "caps it far below"),
    (_wrong_focal_clamped(1e-30), "clamped", "caps it far below"),
    (wrong_focal_log_plus_eps, "clamped", "caps it far below"),
    (wrong_focal_log_of_sigmoid, "log_of_sigmoid", "F.logsigmoid"),
    (wrong_focal_power_from_sigmoid, "grad_not_finite", "inf · 0"),
    (wrong_focal_torchvision, "grad_not_finite", "inf · 0"),
    (wrong_focal_detached, "detached_factor", "detached"),
    (wrong_focal_alpha_none, "alpha_none", "if alpha is not None"),
    (wrong_focal_softmax, "softmax", "sigmoid"),
    (wrong_focal_log10, "log10", "natural logarithm"),
    (_wrong_focal_floored(0.08), "easy_examples", "does not drop or floor them"),
    (_wrong_focal_floored(0.03), "easy_examples", "does not drop or floor them"),
    (_wrong_focal_cut_off(0.95), "easy_examples", "does not drop or floor them"),
    (_wrong_focal_cut_off(0.99), "easy_examples", "infinitely far"),
    (wrong_focal_alpha_truthy, "alpha_zero_falsy", "if alpha is not None"),
]


@pytest.mark.parametrize("fn,mistake,phrase", FOCAL_MISTAKES,
                         ids=[f"{m[1]}-{i}" for i, m in enumerate(FOCAL_MISTAKES)])
def test_focal_loss_names_the_mistake(fn, mistake, phrase):
    _rejected(check_focal_loss, fn, mistake, phrase)


def test_focal_loss_not_written_and_no_grad():
    _rejected(check_focal_loss, _not_written, "not_implemented", "not written yet")

    def via_numpy(logits, targets, alpha=0.25, gamma=2.0):  # right values, but the graph is cut
        return torch.from_numpy(reference_focal_loss(logits.detach().double(), targets.double(), alpha, gamma).numpy())

    _rejected(check_focal_loss, via_numpy, "no_grad", "no gradient")


def test_checks_are_fast():
    """Each check well under a second (on one thread, see `_one_thread`), for a right answer and a wrong one."""
    import time

    for check, fn in ((check_iou, reference_iou), (check_encode_boxes, reference_encode),
                      (check_decode_boxes, reference_decode), (check_focal_loss, reference_focal_loss),
                      (check_iou, wrong_iou_over_area2), (check_focal_loss, wrong_focal_detached)):
        check(fn)  # warm up (imports)
        t = time.perf_counter()
        check(fn)
        assert time.perf_counter() - t < 0.5, (check.__name__, fn.__name__)


@pytest.mark.parametrize("gamma", [0.1, 0.5, 1.0, 2.0, 5.0])
def test_reference_focal_loss_is_finite_at_saturated_logits(gamma):
    """The lesson's solution keeps values and gradients finite (and right) where torchvision's gives NaN."""
    from retinanet_lab.focal_loss import focal_loss, focal_loss_grad

    x = torch.tensor([1e4, -1e4, 200.0, -200.0, 30.0, -30.0, 0.5, -2.0] * 2, requires_grad=True)
    y = torch.tensor([1.0] * 8 + [0.0] * 8)
    loss = reference_focal_loss(x, y, 0.25, gamma)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert torch.allclose(loss.double(), focal_loss(x.detach().double(), y.double(), 0.25, gamma), rtol=1e-5, atol=1e-6)
    assert torch.allclose(grad.double(), focal_loss_grad(x.detach().double(), y.double(), 0.25, gamma), rtol=1e-5, atol=1e-6)
