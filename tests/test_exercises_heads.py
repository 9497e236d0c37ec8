"""Mutation suite for check_class_heatmap (the live-detections lesson): typical mistakes are rejected with their
own id and hint, right answers written differently are accepted."""

import pytest
import torch
import torch.nn.functional as F

from retinanet_lab.exercises.heads import check_class_heatmap


def solution(cls_logits, num_anchors, num_classes):
    """The lesson's solution."""
    _, h, w = cls_logits.shape
    probs = torch.sigmoid(cls_logits).reshape(num_anchors, num_classes, h, w)  # channel a·K + k = anchor a, class k
    return probs.amax(dim=0)  # (K, H, W): the best anchor of each class and location


def loop(cls_logits, num_anchors, num_classes):
    """A Python loop over classes and anchors."""
    _, h, w = cls_logits.shape
    out = torch.zeros(num_classes, h, w)
    for k in range(num_classes):
        best = torch.full((h, w), -float("inf"))
        for a in range(num_anchors):
            best = torch.maximum(best, cls_logits[a * num_classes + k])
        out[k] = 1 / (1 + torch.exp(-best))
    return out


def sigmoid_after_max(cls_logits, num_anchors, num_classes):
    """The max over anchors of the logits, then the sigmoid: σ is increasing, so this is right too."""
    return torch.sigmoid(cls_logits.unflatten(0, (num_anchors, num_classes)).max(dim=0).values)


def strided(cls_logits, num_anchors, num_classes):
    """Class k's channels are k, k + K, k + 2K, ...: a strided slice per class, max-pooled over the anchors."""
    return torch.stack([torch.sigmoid(cls_logits[k::num_classes]).max(dim=0).values for k in range(num_classes)])


def via_flatten(cls_logits, num_anchors, num_classes):
    """Through the (H·W·A, K) layout the loss sees, as torchvision's permute_to_N_HWA_K."""
    _, h, w = cls_logits.shape
    flat = cls_logits.view(num_anchors, num_classes, h, w).permute(2, 3, 0, 1).reshape(-1, num_classes)
    return torch.sigmoid(flat).reshape(h, w, num_anchors, num_classes).amax(2).permute(2, 0, 1)


@pytest.mark.parametrize("fn", [solution, loop, sigmoid_after_max, strided, via_flatten])
def test_right_answers_pass(fn):
    r = check_class_heatmap(fn)
    assert r.passed, str(r)


def test_sigmoid_after_max_is_not_a_mistake():
    # max_a σ(x_a) = σ(max_a x_a) because σ is increasing: the check must not call this a mistake
    r = check_class_heatmap(sigmoid_after_max)
    assert r.passed and r.mistake is None, str(r)


def reject(fn, mistake, phrase, passed=None):
    r = check_class_heatmap(fn)
    assert not r.passed, str(r)
    assert r.mistake == mistake, str(r)
    assert phrase in r.hint, str(r)
    if passed is not None:
        assert str(r).count("✔") == passed, str(r)
    return r


def test_class_major_reshape():
    def class_major(x, A, K):
        return torch.sigmoid(x).reshape(K, A, *x.shape[1:]).max(dim=1).values

    r = reject(class_major, "reshape_KA", "(K, A, H, W), class-major", passed=0)
    assert "one hot channel: anchor 2, class 1" in r.hint


def test_softmax_over_classes():
    def softmax(x, A, K):
        return F.softmax(x.reshape(A, K, *x.shape[1:]), dim=1).amax(0)

    reject(softmax, "softmax_classes", "torch.sigmoid, not softmax")


def test_softmax_over_anchors():
    reject(lambda x, A, K: x.reshape(A, K, *x.shape[1:]).softmax(0).amax(0), "softmax_anchors", "its own binary classifier")


def test_logits_instead_of_probabilities():
    reject(lambda x, A, K: x.reshape(A, K, *x.shape[1:]).amax(0), "no_sigmoid", "torch.sigmoid (before or after")


def test_max_over_classes():
    reject(lambda x, A, K: torch.sigmoid(x).reshape(A, K, *x.shape[1:]).amax(1), "max_over_classes", "max over the anchors")


def test_mean_over_anchors():
    reject(lambda x, A, K: torch.sigmoid(x).reshape(A, K, *x.shape[1:]).mean(0), "mean_over_anchors", ".amax(dim=0)")


def test_sum_of_probabilities():
    reject(lambda x, A, K: torch.sigmoid(x).reshape(A, K, *x.shape[1:]).sum(0), "sum_over_anchors", "summed the probabilities")


def test_max_over_anchors_and_classes():
    reject(lambda x, A, K: torch.sigmoid(x).amax(0), "max_over_all", "one map per class")


def test_first_anchor_only():
    reject(lambda x, A, K: torch.sigmoid(x[:K]), "first_anchor_only", "first anchor only")


def test_height_and_width_swapped():
    def transposed(x, A, K):
        return torch.sigmoid(x).reshape(A, K, x.shape[1], x.shape[2]).amax(0).transpose(-1, -2)

    reject(transposed, "transposed", "rows and columns swapped")


def test_unstable_sigmoid():
    def by_hand(x, A, K):
        e = torch.exp(x)
        return (e / (1 + e)).reshape(A, K, *x.shape[1:]).amax(0)

    reject(by_hand, "unstable_sigmoid", "torch.sigmoid, which is stable", passed=2)


def test_view_on_a_permuted_tensor():
    def permuted_view(x, A, K):
        _, h, w = x.shape
        flat = torch.sigmoid(x).permute(1, 2, 0).view(-1, K)  # (H·W·A, K)? .view cannot merge permuted dims
        return flat.view(h, w, A, K).amax(2).permute(2, 0, 1)

    r = reject(permuted_view, "view_not_contiguous", "use `.reshape`")
    assert "line 3 of your function" in r.hint


def test_wrong_reshape_sizes():
    reject(lambda x, A, K: torch.sigmoid(x).reshape(A, K, x.shape[1], x.shape[1]).amax(0), "wrong_reshape",
           "do not multiply to A·K·H·W")


def test_not_written_yet_and_wrong_types():
    def todo(x, A, K):
        raise NotImplementedError

    r = check_class_heatmap(todo)
    assert r.mistake == "not_implemented" and "not written yet" in r.hint
    r = check_class_heatmap(lambda x, A, K: solution(x, A, K).tolist())
    assert r.mistake == "not_a_tensor" and "torch.stack" in r.hint
    r = check_class_heatmap(lambda x, A, K: solution(x, A, K).flatten())
    assert r.mistake == "shape" and "flattened" in r.hint
    r = check_class_heatmap(lambda x, A, K: solution(x, A, K).permute(1, 2, 0))  # (H, W, K)
    assert r.mistake == "shape" and "the same sizes in another order" in r.hint
    r = check_class_heatmap(lambda x, A, K: solution(x, A, K).max())
    assert r.mistake == "shape" and "a single number" in r.hint


def test_the_check_is_fast():
    import time

    t = time.perf_counter()
    check_class_heatmap(solution)
    assert time.perf_counter() - t < 0.5
