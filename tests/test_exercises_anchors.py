"""Mutation suite for retinanet_lab/exercises/anchors.py: typical student mistakes, each written as a student would,
are rejected with that mistake's id and hint; right implementations written differently are accepted."""

import math

import pytest
import torch

from retinanet_lab.exercises.anchors import check_anchor_shapes, check_assign_anchors


def rejected(r, mistake: str, phrase: str):
    assert not r.passed, str(r)
    assert r.mistake == mistake, str(r)
    assert phrase in r.hint, r.hint


# ---- anchor shapes --------------------------------------------------------------------------------------
def lesson_anchor_shapes(size, scales, aspect_ratios):
    """The solution the lesson teaches (/tmp/solutions/check_anchor_shapes.md)."""
    sides = size * torch.tensor(scales, dtype=torch.float32)
    ratios = torch.tensor(aspect_ratios, dtype=torch.float32)
    w = sides[None, :] / ratios.sqrt()[:, None]
    h = sides[None, :] * ratios.sqrt()[:, None]
    return torch.stack([w.reshape(-1), h.reshape(-1)], dim=1)


def loop_anchor_shapes(size, scales, aspect_ratios):
    rows = []
    for s in scales:  # scale-major: another order than the lesson's
        for r in aspect_ratios:
            area = (size * s) ** 2
            w = math.sqrt(area / r)
            rows.append([w, w * r])
    return torch.tensor(rows)


def meshgrid_anchor_shapes(size, scales, aspect_ratios):
    s, r = torch.meshgrid(torch.tensor(scales, dtype=torch.float64), torch.tensor(aspect_ratios, dtype=torch.float64),
                          indexing="xy")
    side = size * s.flatten()
    log_r = torch.log(r.flatten())
    return torch.stack([side * torch.exp(-log_r / 2), side * torch.exp(log_r / 2)], dim=-1)


@pytest.mark.parametrize("fn", [lesson_anchor_shapes, loop_anchor_shapes, meshgrid_anchor_shapes])
def test_anchor_shapes_right_answers_pass(fn):
    r = check_anchor_shapes(fn)
    assert r.passed, str(r)
    assert r.mistake is None and "✘" not in str(r)


def _each(size, scales, ratios, side, wh):
    return torch.tensor([list(wh(side(size, s), r)) for r in ratios for s in scales], dtype=torch.float32)


def ratio_inverted(size, scales, ratios):  # ratio read as width / height
    return _each(size, scales, ratios, lambda a, s: a * s, lambda a, r: (a * math.sqrt(r), a / math.sqrt(r)))


def columns_h_w(size, scales, ratios):  # right numbers, columns (h, w)
    return lesson_anchor_shapes(size, scales, ratios)[:, [1, 0]]


def no_sqrt(size, scales, ratios):
    return _each(size, scales, ratios, lambda a, s: a * s, lambda a, r: (a / r, a * r))


def area_not_preserved(size, scales, ratios):
    return _each(size, scales, ratios, lambda a, s: a * s, lambda a, r: (a, a * r))


def scale_on_area(size, scales, ratios):
    out = []
    for r in ratios:
        for s in scales:
            area = size ** 2 * s  # the scale multiplies the area
            out.append([math.sqrt(area / r), math.sqrt(area * r)])
    return torch.tensor(out)


def size_as_area(size, scales, ratios):
    out = []
    for r in ratios:
        for s in scales:
            area = size * s  # size taken as the area
            out.append([math.sqrt(area / r), math.sqrt(area * r)])
    return torch.tensor(out)


def zipped(size, scales, ratios):
    return torch.tensor([[size * s / math.sqrt(r), size * s * math.sqrt(r)] for s, r in zip(scales, ratios)])


def ratios_only(size, scales, ratios):
    r = torch.tensor(ratios)
    return torch.stack([size / r.sqrt(), size * r.sqrt()], dim=1)


def scales_only(size, scales, ratios):
    s = size * torch.tensor(scales)
    return torch.stack([s, s], dim=1)


def truncated(size, scales, ratios):
    return torch.tensor([[int(size * s / math.sqrt(r)), int(size * s * math.sqrt(r))] for r in ratios for s in scales])


def truncated_sizes(size, scales, ratios):  # torchvision's int(size * scale)
    return torch.tensor([[int(size * s) / math.sqrt(r), int(size * s) * math.sqrt(r)] for r in ratios for s in scales])


def rounded(size, scales, ratios):
    return lesson_anchor_shapes(size, scales, ratios).round()


def half_sizes(size, scales, ratios):
    return lesson_anchor_shapes(size, scales, ratios) / 2


def corners(size, scales, ratios):
    wh = lesson_anchor_shapes(size, scales, ratios)
    return torch.cat([-wh / 2, wh / 2], dim=1)


def transposed(size, scales, ratios):
    s = size * torch.tensor(scales)
    r = torch.tensor(ratios)
    return torch.stack([(s[None] / r.sqrt()[:, None]).flatten(), (s[None] * r.sqrt()[:, None]).flatten()])


@pytest.mark.parametrize("fn, mistake, phrase", [
    (ratio_inverted, "ratio_inverted", "height / width"),
    (columns_h_w, "ratio_inverted", "return (w, h)"),
    (no_sqrt, "no_sqrt", "ratio²"),
    (area_not_preserved, "area_not_preserved", "area is no longer"),
    (scale_on_area, "scale_on_area", "size · √scale"),
    (size_as_area, "size_as_area", "square root of its area"),
    (zipped, "zip", "*every* combination"),
    (ratios_only, "ratios_only", "scales are missing"),
    (scales_only, "scales_only", "aspect ratios are missing"),
    (truncated, "truncated", "no rounding"),
    (truncated_sizes, "truncated_sizes", "40 instead of 40.32"),
    (rounded, "rounded", "drop round()"),
    (half_sizes, "half", "half-widths"),
    (corners, "corners", "corners (x1, y1, x2, y2)"),
    (transposed, "transposed", "one row per anchor"),
])
def test_anchor_shapes_mistakes_are_named(fn, mistake, phrase):
    rejected(check_anchor_shapes(fn), mistake, phrase)


def test_anchor_shapes_not_written_wrong_type_and_shape():
    def todo(size, scales, ratios):
        raise NotImplementedError

    r = check_anchor_shapes(todo)
    assert not r.passed and r.mistake == "not_implemented" and "not written yet" in r.hint
    r = check_anchor_shapes(lambda size, scales, ratios: lesson_anchor_shapes(size, scales, ratios).tolist())
    assert not r.passed and r.mistake == "not_a_tensor" and "torch.stack or torch.tensor" in r.hint
    r = check_anchor_shapes(lambda size, scales, ratios: lesson_anchor_shapes(size, scales, ratios).flatten())
    assert not r.passed and r.mistake == "shape" and "shape (2,), expected (1, 2)" in r.hint
    r = check_anchor_shapes(lambda size, scales, ratios: lesson_anchor_shapes(size, scales, ratios).prod(dim=1))  # areas
    assert not r.passed and r.mistake == "areas" and "two columns" in r.hint


def test_anchor_shapes_unknown_mistake_names_the_column():
    def height_off(size, scales, ratios):
        wh = lesson_anchor_shapes(size, scales, ratios)
        return torch.stack([wh[:, 0], wh[:, 1] + 1], dim=1)

    r = check_anchor_shapes(height_off)
    assert not r.passed and r.mistake is None
    assert "h is wrong (w is right)" in r.hint and "expected 32" in r.hint


# ---- assigning anchors --------------------------------------------------------------------------------
def lesson_assign(iou, fg_iou=0.5, bg_iou=0.4, allow_low_quality=True):
    """The solution the lesson teaches (/tmp/solutions/check_assign_anchors.md)."""
    num_boxes, num_anchors = iou.shape
    if num_boxes == 0:
        return torch.full((num_anchors,), -1, dtype=torch.int64)
    best_iou, best_box = iou.max(dim=0)
    index = torch.full((num_anchors,), -2, dtype=torch.int64)
    index[best_iou >= fg_iou] = best_box[best_iou >= fg_iou]
    index[best_iou < bg_iou] = -1
    if allow_low_quality:
        best_per_box = iou.max(dim=1, keepdim=True).values
        claims = (iou == best_per_box) & (best_per_box > 0)
        claimed = claims.any(dim=0)
        index[claimed] = best_box[claimed]
    return index


def loop_assign(iou, fg_iou=0.5, bg_iou=0.4, allow_low_quality=True):
    rows = iou.tolist()
    g = len(rows)
    a = iou.shape[1]
    out = []
    best_box = []
    for j in range(a):
        b = max(range(g), key=lambda i: rows[i][j]) if g else -1
        best_box.append(b)
        v = rows[b][j] if g else 0.0
        out.append(b if v >= fg_iou else (-1 if v < bg_iou else -2))
    if allow_low_quality:
        for i in range(g):
            m = max(rows[i])
            if m > 0:
                for j in range(a):
                    if rows[i][j] == m:
                        out[j] = best_box[j]
    return torch.tensor(out, dtype=torch.int64)


def matcher_assign(iou, fg_iou=0.5, bg_iou=0.4, allow_low_quality=True):
    """torchvision's Matcher for the thresholds, its own low-quality step with the IoU > 0 guard."""
    from torchvision.models.detection._utils import Matcher

    if iou.shape[0] == 0:
        return torch.full((iou.shape[1],), -1, dtype=torch.int64)
    index = Matcher(fg_iou, bg_iou, allow_low_quality_matches=False)(iou)
    if allow_low_quality:
        best = iou.amax(dim=1, keepdim=True)
        claimed = ((iou == best) & (best > 0)).any(dim=0)
        index = torch.where(claimed, iou.argmax(dim=0), index)
    return index


@pytest.mark.parametrize("fn", [lesson_assign, loop_assign, matcher_assign])
def test_assign_right_answers_pass(fn):
    r = check_assign_anchors(fn)
    assert r.passed, str(r)


def _variant(gt_fg=False, le_bg=False, ignore_value=-2, low_quality="flag", guard=True, ties=True, own_best=True,
             fg=None, bg=None):
    """A student's assignment with one thing changed."""

    def fn(iou, fg_iou=0.5, bg_iou=0.4, allow_low_quality=True):
        fg_t = fg_iou if fg is None else fg
        bg_t = bg_iou if bg is None else bg
        g, a = iou.shape
        if g == 0:
            return torch.full((a,), -1, dtype=torch.int64)
        best_iou, best_box = iou.max(dim=0)
        out = torch.full((a,), ignore_value, dtype=torch.int64) if ignore_value is not None else best_box.clone()
        is_fg = best_iou > fg_t if gt_fg else best_iou >= fg_t
        out[is_fg] = best_box[is_fg]
        out[best_iou <= bg_t if le_bg else best_iou < bg_t] = -1
        on = {"flag": allow_low_quality, "never": False, "always": True}[low_quality]
        if on:
            for i in range(g):
                m = iou[i].max()
                if guard and m <= 0:
                    continue
                hits = (iou[i] == m).nonzero().flatten() if ties else iou[i].argmax().reshape(1)
                out[hits] = best_box[hits] if own_best else i
        return out

    return fn


def wrong_axis(iou, fg_iou=0.5, bg_iou=0.4, allow_low_quality=True):
    if iou.shape[0] == 0:
        return torch.full((iou.shape[1],), -1, dtype=torch.int64)
    best_iou, best = iou.max(dim=1)  # the max over the anchors
    out = torch.full_like(best, -2)
    out[best_iou >= fg_iou] = best[best_iou >= fg_iou]
    out[best_iou < bg_iou] = -1
    if allow_low_quality:
        m = iou.max(dim=0, keepdim=True).values
        claimed = ((iou == m) & (m > 0)).any(dim=1)
        out[claimed] = best[claimed]
    return out


def no_empty_check(iou, fg_iou=0.5, bg_iou=0.4, allow_low_quality=True):
    best_iou, best_box = iou.max(dim=0)
    out = torch.where(best_iou >= fg_iou, best_box, torch.full_like(best_box, -2))
    out[best_iou < bg_iou] = -1
    if allow_low_quality:
        m = iou.max(dim=1, keepdim=True).values
        claimed = ((iou == m) & (m > 0)).any(dim=0)
        out[claimed] = best_box[claimed]
    return out


def empty_returns_nothing(iou, fg_iou=0.5, bg_iou=0.4, allow_low_quality=True):
    if iou.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64)
    return lesson_assign(iou, fg_iou, bg_iou, allow_low_quality)


def torchvision_matcher(iou, fg_iou=0.5, bg_iou=0.4, allow_low_quality=True):
    from torchvision.models.detection._utils import Matcher

    if iou.shape[0] == 0:
        return torch.full((iou.shape[1],), -1, dtype=torch.int64)
    return Matcher(fg_iou, bg_iou, allow_low_quality_matches=allow_low_quality)(iou)


@pytest.mark.parametrize("fn, mistake, phrase", [
    (_variant(gt_fg=True), "gt_at_fg", "IoU >= fg_iou, not >"),
    (_variant(le_bg=True), "le_at_bg", "(strictly), not <="),
    (_variant(ignore_value=-1), "ignored_as_background", "not background (-1)"),
    (_variant(ignore_value=None), "ignored_as_foreground", "not foreground"),
    (wrong_axis, "wrong_axis", "the wrong axis"),
    (_variant(fg=0.5, bg=0.4), "hardcoded_thresholds", "not 0.5 and 0.4 written in the code"),
    (_variant(low_quality="never"), "no_low_quality", "claims the anchor(s) it overlaps most"),
    (_variant(low_quality="always"), "low_quality_always", "allow_low_quality=False"),
    (_variant(guard=False), "zero_iou_claims", "claims nothing"),
    (torchvision_matcher, "zero_iou_claims", "claims nothing"),  # torchvision's Matcher has no IoU > 0 guard
    (_variant(ties=False), "no_ties", "ties included"),
    (_variant(own_best=False), "claimer_box", "its *own* best box"),
    (no_empty_check, "empty_image", "if iou.shape[0] == 0"),
    (empty_returns_nothing, "empty_image", "one value per anchor"),
    (lambda iou, fg=0.5, bg=0.4, allow=True: (lesson_assign(iou, fg, bg, allow) >= 0).long(), "labels_01",
     "not 1 / 0 labels"),
    (lambda iou, fg=0.5, bg=0.4, allow=True: lesson_assign(iou, fg, bg, allow) >= 0, "bool_mask", "boolean mask (foreground)"),
    (lambda iou, fg=0.5, bg=0.4, allow=True: torch.tensor([{-2: -1, -1: 0}.get(v, 1) for v in
                                                            lesson_assign(iou, fg, bg, allow).tolist()], dtype=torch.int64),
     "detectron_labels", "Detectron2's match_labels"),
    (lambda iou, fg=0.5, bg=0.4, allow=True: lesson_assign(iou, fg, bg, allow).float(), "float_indices", "int64"),
])
def test_assign_mistakes_are_named(fn, mistake, phrase):
    rejected(check_assign_anchors(fn), mistake, phrase)


def test_assign_not_written_wrong_type_and_shape():
    def todo(iou, fg_iou=0.5, bg_iou=0.4, allow_low_quality=True):
        raise NotImplementedError

    r = check_assign_anchors(todo)
    assert not r.passed and r.mistake == "not_implemented" and "not written yet" in r.hint
    r = check_assign_anchors(lambda iou, *args: lesson_assign(iou, *args).tolist())
    assert not r.passed and r.mistake == "not_a_tensor" and "torch.Tensor" in r.hint
    r = check_assign_anchors(lambda iou, *args: lesson_assign(iou, *args)[None])  # (1, A)
    assert not r.passed and r.mistake == "shape" and "(1, 4), expected (4,)" in r.hint
    r = check_assign_anchors(lambda iou, *args: iou.max(dim=0).values)  # the best IoU, not an index
    assert not r.passed and r.mistake == "dtype" and "whole numbers" in r.hint


def test_assign_checks_are_fast():
    import time

    t = time.perf_counter()
    assert check_assign_anchors(lesson_assign).passed and check_anchor_shapes(lesson_anchor_shapes).passed
    assert time.perf_counter() - t < 1.0
