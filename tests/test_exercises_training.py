"""Mutation suite for check_normalized_loss (the training lesson): typical mistakes are rejected with their own
id and hint, right answers written differently are accepted."""

import pytest
import torch

from retinanet_lab.exercises.training import check_normalized_loss
from retinanet_lab.loss import normalize_loss


def solution(loss, matched):
    """The lesson's solution."""
    valid = matched != -2  # (B, A): foreground and background anchors
    num_fg = (matched >= 0).sum(dim=1).clamp(min=1)  # (B,): at least 1
    return ((loss * valid).sum(dim=1) / num_fg).mean()  # per image, then the mean over images


def loop(loss, matched):
    """A Python loop over images and anchors."""
    total = 0
    for b in range(loss.shape[0]):
        s, n = 0, 0
        for a in range(loss.shape[1]):
            if matched[b, a] != -2:
                s = s + loss[b, a]
            if matched[b, a] >= 0:
                n += 1
        total = total + s / max(1, n)
    return total / loss.shape[0]


def with_where(loss, matched):
    """torch.where and a float count."""
    kept = torch.where(matched == -2, torch.zeros_like(loss), loss)
    n = torch.maximum((matched > -1).float().sum(1), torch.ones(len(loss)))
    return torch.mean(kept.sum(1) / n)


def with_package(loss, matched):
    return normalize_loss(loss.masked_fill(matched == -2, 0).sum(1), (matched >= 0).sum(1), "image")


@pytest.mark.parametrize("fn", [solution, loop, with_where, with_package])
def test_right_answers_pass(fn):
    r = check_normalized_loss(fn)
    assert r.passed, str(r)
    assert r.mistake is None and r.hint == ""


def reject(fn, mistake, phrase):
    r = check_normalized_loss(fn)
    assert not r.passed, str(r)
    assert r.mistake == mistake, str(r)
    assert phrase in r.hint, str(r)
    return r


def test_per_batch_normalisation_names_detectron_and_the_paper():
    def per_batch(loss, matched):
        return (loss * (matched != -2)).sum() / (matched >= 0).sum().clamp(min=1)

    r = reject(per_batch, "per_batch", "Detectron's per-batch normaliser")
    assert "The paper's text normalises the loss *of each image*" in r.hint
    assert str(r).count("✔") == 2  # the two one-image cases pass: with one image both rules agree


def test_mean_over_anchors():
    reject(lambda loss, matched: (loss * (matched != -2)).mean(dim=1).mean(), "divided_by_anchors", "number of anchors")


def test_mean_over_the_anchors_not_ignored():
    def mean_valid(loss, matched):
        return torch.stack([loss[b][matched[b] != -2].mean() for b in range(len(loss))]).mean()

    reject(mean_valid, "divided_by_anchors", "*foreground* anchors")


def test_ignored_anchors_counted():
    reject(lambda loss, matched: (loss.sum(1) / (matched >= 0).sum(1).clamp(min=1)).mean(), "ignored_counted", "matched != -2")


def test_ignored_anchors_counted_as_foreground():
    def not_background(loss, matched):
        fg = matched != -1  # "everything that is not background"
        return ((loss * (matched != -2)).sum(1) / fg.sum(1).clamp(min=1)).mean()

    reject(not_background, "ignored_as_foreground", "matched >= 0")


def test_ignored_anchors_summed_and_counted_as_foreground():
    reject(lambda loss, matched: (loss.sum(1) / (matched != -1).sum(1).clamp(min=1)).mean(),
           "ignored_counted_as_foreground", "add nothing")


def test_no_max1_gives_a_specific_hint_not_nan():
    def no_clamp(loss, matched):
        return ((loss * (matched != -2)).sum(1) / (matched >= 0).sum(1)).mean()

    r = reject(no_clamp, "no_max1", "max(1, count)")
    assert "second without any box" in r.hint and str(r).count("✔") == 3


def test_python_count_without_max1():
    def python_loop(loss, matched):
        out = []
        for row, m in zip(loss, matched):
            out.append(row[m != -2].sum() / int((m >= 0).sum()))
        return torch.stack(out).mean()

    r = check_normalized_loss(python_loop)
    # float tensor / int 0 is inf, not an exception: it is the same mistake
    assert not r.passed and r.mistake == "no_max1", str(r)


def test_divided_by_boxes():
    def boxes(loss, matched):
        n = torch.stack([torch.unique(m[m >= 0]).numel() * torch.ones(()) for m in matched]).clamp(min=1)
        return ((loss * (matched != -2)).sum(1) / n).mean()

    reject(boxes, "divided_by_boxes", "number of *anchors* assigned to a box")


def test_sum_over_images():
    reject(lambda loss, matched: ((loss * (matched != -2)).sum(1) / (matched >= 0).sum(1).clamp(min=1)).sum(),
           "sum_over_images", ".mean()")


def test_divided_by_background():
    reject(lambda loss, matched: ((loss * (matched != -2)).sum(1) / (matched == -1).sum(1).clamp(min=1)).mean(),
           "divided_by_background", "background anchors")


def test_foreground_only():
    reject(lambda loss, matched: ((loss * (matched >= 0)).sum(1) / (matched >= 0).sum(1).clamp(min=1)).mean(),
           "foreground_only", "background anchors (matched == -1) have a classification loss too")


def test_no_normaliser():
    reject(lambda loss, matched: (loss * (matched != -2)).sum(1).mean(), "no_normalizer", "did not divide")


def test_empty_image_skipped():
    def skip_empty(loss, matched):
        per = [(row * (m != -2)).sum() / (m >= 0).sum() for row, m in zip(loss, matched) if (m >= 0).any()]
        return torch.stack(per).mean()

    reject(skip_empty, "empty_image_skipped", "left the image without any box out")


def test_per_image_values_instead_of_a_scalar():
    r = reject(lambda loss, matched: (loss * (matched != -2)).sum(1) / (matched >= 0).sum(1).clamp(min=1),
               "per_image_values", "one value per image")
    assert str(r).count("✔") == 0


def test_in_place_on_the_input_is_named():
    def in_place(loss, matched):
        loss[matched == -2] = 0
        return (loss.sum(1) / (matched >= 0).sum(1).clamp(min=1)).mean()

    r = reject(in_place, "in_place", "loss.clone()")
    assert "line 2 of your function" in r.hint and str(r).count("✔") == 5


def test_detached_result_loses_the_gradient():
    r = check_normalized_loss(lambda loss, matched: solution(loss, matched).detach())
    assert not r.passed and r.mistake == "no_grad", str(r)
    assert str(r).count("✔") == 5


def test_not_written_yet_and_wrong_types():
    def todo(loss, matched):
        raise NotImplementedError

    r = check_normalized_loss(todo)
    assert r.mistake == "not_implemented" and "not written yet" in r.hint
    r = check_normalized_loss(lambda loss, matched: float(solution(loss, matched)))
    assert r.mistake == "not_a_tensor" and "torch.Tensor" in r.hint
    r = check_normalized_loss(lambda loss, matched: [solution(loss, matched)])
    assert r.mistake == "not_a_tensor" and "torch.stack" in r.hint
    r = check_normalized_loss(lambda loss, matched: solution(loss, matched).reshape(1, 1))
    assert r.mistake == "shape" and "shape (1, 1), expected ()" in r.hint


def test_the_check_is_fast():
    import time

    t = time.perf_counter()
    check_normalized_loss(solution)
    assert time.perf_counter() - t < 0.5
