"""Mutation suite for check_new_classifier (the fine-tuning lesson): typical mistakes are rejected with their own
id and hint, right answers written differently are accepted."""

import copy
import math

import pytest
import torch
from torch import nn

from retinanet_lab.exercises.fine_tuning import check_new_classifier
from retinanet_lab.heads import new_classifier


def solution(old, num_anchors, num_classes, prior=0.01):
    """The lesson's solution."""
    new = nn.Conv2d(old.in_channels, num_anchors * num_classes, kernel_size=old.kernel_size, stride=old.stride,
                    padding=old.padding, device=old.weight.device, dtype=old.weight.dtype)
    nn.init.normal_(new.weight, mean=0.0, std=0.01)  # Gaussian, σ = 0.01
    nn.init.constant_(new.bias, -math.log((1 - prior) / prior))  # σ(b) = π
    return new


def by_hand(old, num_anchors, num_classes, prior=0.01):
    """padding='same', and the parameters filled by hand with torch.randn and the logit of π."""
    new = nn.Conv2d(old.in_channels, num_anchors * num_classes, 3, padding="same").to(old.weight)
    with torch.no_grad():
        new.weight.copy_(torch.randn_like(new.weight) * 0.01)
        new.bias.fill_(math.log(prior / (1 - prior)))
    return new


def deep_copy(old, num_anchors, num_classes, prior=0.01):
    """A copy of the old layer with fresh parameters of the new size."""
    new = copy.deepcopy(old)
    new.out_channels = num_anchors * num_classes
    new.weight = nn.Parameter(torch.empty(new.out_channels, *old.weight.shape[1:], dtype=old.weight.dtype).normal_(0, 0.01))
    new.bias = nn.Parameter(torch.full((new.out_channels,), torch.logit(torch.tensor(prior, dtype=torch.float64)).item(),
                                       dtype=old.weight.dtype))
    return new


@pytest.mark.parametrize("fn", [solution, by_hand, deep_copy, new_classifier])
def test_right_answers_pass(fn):
    r = check_new_classifier(fn)
    assert r.passed, str(r)


def reject(fn, mistake, phrase, passed=None):
    r = check_new_classifier(fn)
    assert not r.passed, str(r)
    assert r.mistake == mistake, str(r)
    assert phrase in r.hint, str(r)
    if passed is not None:
        assert str(r).count("✔") == passed, str(r)
    return r


def student(out=None, cin=None, kernel=3, padding=1, std=0.01, init="normal", bias="prior", sigmoid=False,
            frozen=False, follow_dtype=True):
    """A student's function with one thing changed (each test writes out what the student would have written)."""

    def fn(old, num_anchors, num_classes, prior=0.01):
        o = num_anchors * num_classes if out is None else out(num_anchors, num_classes)
        conv = nn.Conv2d(cin or old.in_channels, o, kernel, padding=padding)
        if follow_dtype:
            conv = conv.to(old.weight.dtype)
        if init == "normal":
            nn.init.normal_(conv.weight, std=std)
        elif init == "zeros":
            nn.init.zeros_(conv.weight)
        elif init == "uniform":
            nn.init.uniform_(conv.weight, -0.01, 0.01)
        b = {"prior": -math.log((1 - prior) / prior), "zero": 0.0, "pi": prior, "flipped": math.log((1 - prior) / prior),
             "log_pi": math.log(prior), "hard": -4.59512, "default": None}[bias]
        if b is not None:
            nn.init.constant_(conv.bias, b)
        if frozen:
            conv.requires_grad_(False)
        return nn.Sequential(conv, nn.Sigmoid()) if sigmoid else conv

    return fn


def test_student_helper_is_right_by_default():
    assert check_new_classifier(student()).passed


def test_forgot_the_anchors():
    reject(student(out=lambda A, K: K), "out_channels_K", "one output per class *and anchor*", passed=2)


def test_background_class():
    r = reject(student(out=lambda A, K: A * (K + 1)), "background_class", "you added a background class")
    assert "K sigmoids do not" in r.hint


def test_in_channels_hard_coded_256():
    reject(student(cin=256), "in_channels_256", "old.in_channels", passed=1)


def test_kernel_1():
    reject(student(kernel=1, padding=0), "kernel_1", "3x3 convolution")


def test_no_padding():
    reject(student(padding=0), "no_padding", "a 3x3 kernel without padding shrinks it by 2", passed=5)


def test_bias_zero():
    reject(student(bias="zero"), "zero_bias", "the bias is 0", passed=6)


def test_bias_left_at_pytorch_default():
    reject(student(bias="default"), "default_bias", "PyTorch's default initialisation")


def test_bias_is_pi():
    reject(student(bias="pi"), "bias_is_prior", "π is the probability, the bias is its logit")


def test_bias_sign_flipped():
    reject(student(bias="flipped"), "bias_sign", "wrong sign")


def test_bias_log_pi():
    reject(student(bias="log_pi"), "log_prior", "log(π / (1 - π))")


def test_bias_hard_coded_for_pi_001():
    r = reject(student(bias="hard"), "prior_hardcoded", "compute it from `prior`")
    assert "π = 0.05" in r.hint


def test_prior_ignored_by_the_student():
    def ignores_prior(old, num_anchors, num_classes, prior=0.01):
        return solution(old, num_anchors, num_classes)  # always the default π

    reject(ignores_prior, "prior_hardcoded", "-log(99)")


def test_weights_left_at_pytorch_default():
    reject(student(init="default"), "default_init", "PyTorch's default initialisation", passed=7)


def test_weights_all_zero():
    reject(student(init="zeros"), "zero_weights", "all the weights are 0")


def test_variance_passed_as_std():
    reject(student(std=0.01 ** 2), "variance_as_std", "you passed the variance")


def test_uniform_weights():
    reject(student(init="uniform"), "uniform_init", "uniform distribution on ±0.01")


def test_uniform_with_the_right_std_is_not_gaussian():
    def uniform_std(old, num_anchors, num_classes, prior=0.01):
        new = solution(old, num_anchors, num_classes, prior)
        nn.init.uniform_(new.weight, -0.01 * math.sqrt(3), 0.01 * math.sqrt(3))
        return new

    reject(uniform_std, "not_gaussian", "they look uniform", passed=8)


def test_returned_the_old_layer():
    def modified_old(old, num_anchors, num_classes, prior=0.01):
        nn.init.constant_(old.bias, -math.log((1 - prior) / prior))
        return old

    reject(modified_old, "returned_old", "you returned the old layer", passed=0)
    reject(lambda old, A, K, prior=0.01: old, "returned_old", "build a new one")


def test_old_layer_changed_in_place():
    def reinit_old_too(old, num_anchors, num_classes, prior=0.01):
        nn.init.normal_(old.weight, std=0.01)
        return solution(old, num_anchors, num_classes, prior)

    reject(reinit_old_too, "modified_old", "leave it as it is")


def test_frozen():
    reject(student(frozen=True), "frozen", "requires_grad=False")


def test_sequential_with_sigmoid():
    reject(student(sigmoid=True), "sigmoid_added", "outputs are logits", passed=0)


def test_ignores_the_old_layers_dtype():
    reject(student(follow_dtype=False), "dtype_device", "old.weight.dtype", passed=14)


def test_no_bias():
    def no_bias(old, num_anchors, num_classes, prior=0.01):
        conv = nn.Conv2d(old.in_channels, num_anchors * num_classes, 3, padding=1, bias=False)
        nn.init.normal_(conv.weight, std=0.01)
        return conv

    reject(no_bias, "no_bias", "the prior π lives in the bias")


def test_forgot_the_prior_argument():
    reject(lambda old, A, K: solution(old, A, K), "no_prior_argument", "`prior` (default 0.01)", passed=11)


def test_not_written_yet_and_wrong_types():
    def todo(old, num_anchors, num_classes, prior=0.01):
        raise NotImplementedError

    r = check_new_classifier(todo)
    assert r.mistake == "not_implemented" and "not written yet" in r.hint
    r = check_new_classifier(lambda old, A, K, prior=0.01: solution(old, A, K, prior).weight)
    assert r.mistake == "not_a_conv" and "returned Parameter" in r.hint
    r = check_new_classifier(lambda old, A, K, prior=0.01: None)
    assert r.mistake == "returned_none" and "return" in r.hint


def test_the_student_rng_is_not_reset():
    torch.manual_seed(123)
    a = torch.rand(3)
    torch.manual_seed(123)
    check_new_classifier(lambda old, A, K, prior=0.01: old)  # fails at once, before the student draws anything
    assert torch.equal(torch.rand(3), a)


def test_the_check_is_fast():
    import time

    t = time.perf_counter()
    check_new_classifier(solution)
    assert time.perf_counter() - t < 0.5


def test_the_prior_used_as_the_weights_sigma():
    # the paper uses 0.01 for both σ and π: with π = 0.01 the mix-up is invisible, with π = 0.05 it is not
    def std_is_prior(old, num_anchors, num_classes, prior=0.01):
        new = solution(old, num_anchors, num_classes, prior)
        nn.init.normal_(new.weight, std=prior)
        return new

    reject(std_is_prior, "std_is_prior", "π only sets the bias", passed=13)


@pytest.mark.parametrize("settings, mistake", [(dict(dilation=2, padding=2), "dilation"), (dict(groups=3), "groups")])
def test_not_a_plain_convolution(settings, mistake):
    def fancy(old, num_anchors, num_classes, prior=0.01):
        new = nn.Conv2d(old.in_channels, num_anchors * num_classes, 3, **{"padding": 1, **settings}).to(old.weight)
        nn.init.normal_(new.weight, std=0.01)
        nn.init.constant_(new.bias, -math.log((1 - prior) / prior))
        return new

    reject(fancy, mistake, "a plain 3x3 convolution", passed=4)


def test_copied_the_old_weights():
    def copy_old(old, num_anchors, num_classes, prior=0.01):
        new = solution(old, num_anchors, num_classes, prior)
        with torch.no_grad():
            new.weight.copy_(old.weight[: num_anchors * num_classes])
        return new

    reject(copy_old, "copied_old", "you copied the old layer's weights", passed=6)
