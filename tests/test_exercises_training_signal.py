"""Mutation suite for retinanet_lab/exercises/training_signal.py (OHEM, the prior bias, the first loss): typical
student mistakes, each written as a student would, are rejected with that mistake's id and hint; right
implementations written differently are accepted; the first-loss formula is checked against a real model."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retinanet_lab.exercises.training_signal import check_first_loss, check_ohem, check_prior_bias


def rejected(r, mistake: str, phrase: str):
    assert not r.passed, str(r)
    assert r.mistake == mistake, str(r)
    assert phrase in r.hint, r.hint


# ---- OHEM -----------------------------------------------------------------------------------------------
def lesson_ohem(losses, positive, ratio=3):
    """The solution the lesson teaches (/tmp/solutions/check_ohem.md)."""
    num_pos = int(positive.sum())
    num_neg = int((~positive).sum())
    k = min(ratio * max(1, num_pos), num_neg)
    neg_losses = losses.masked_fill(positive, float("-inf"))
    hardest = neg_losses.topk(k).indices
    keep = positive.clone()
    keep[hardest] = True
    return keep


def loop_ohem(losses, positive, ratio=3):
    values, pos = losses.tolist(), positive.tolist()
    negatives = sorted((i for i in range(len(values)) if not pos[i]), key=lambda i: -values[i])
    quota = ratio * max(1, sum(pos))
    kept = set(negatives[:quota]) | {i for i in range(len(values)) if pos[i]}
    return torch.tensor([i in kept for i in range(len(values))])


def rank_ohem(losses, positive, ratio=3):
    """Rank of each negative among the negatives (0 = hardest), compared with the quota; returns 0/1 floats."""
    neg = ~positive
    bigger = (losses[None, :] > losses[:, None]) & neg[None, :]  # (N, N): j is a harder negative than i
    rank = bigger.sum(dim=1)
    quota = ratio * positive.sum().clamp(min=1)
    return (positive | (neg & (rank < quota))).float()


@pytest.mark.parametrize("fn", [lesson_ohem, loop_ohem, rank_ohem])
def test_ohem_right_answers_pass(fn):
    r = check_ohem(fn)
    assert r.passed, str(r)


def positives_compete(losses, positive, ratio=3):
    k = min(ratio * max(1, int(positive.sum())), len(losses))
    keep = torch.zeros_like(positive)
    keep[losses.topk(k).indices] = True  # positives take part in the ranking
    return keep | positive


def topk_all(losses, positive, ratio=3):
    k = min((1 + ratio) * int(positive.sum()), len(losses))
    keep = torch.zeros_like(positive)
    keep[losses.topk(k).indices] = True
    return keep


def smallest(losses, positive, ratio=3):
    k = min(ratio * max(1, int(positive.sum())), int((~positive).sum()))
    idx = losses.masked_fill(positive, float("inf")).topk(k, largest=False).indices
    keep = positive.clone()
    keep[idx] = True
    return keep


def ratio_inverted(losses, positive, ratio=3):
    k = max(1, int(positive.sum())) // ratio
    order = torch.argsort(torch.where(positive, -1.0, losses), descending=True)
    keep = positive.clone()
    keep[order[:k]] = True
    return keep


def fixed_three(losses, positive, ratio=3):
    order = torch.argsort(torch.where(positive, -1.0, losses), descending=True)
    keep = positive.clone()
    keep[order[:min(3, int((~positive).sum()))]] = True
    return keep


def three_n(losses, positive, ratio=3):
    k = min(ratio * len(losses), int((~positive).sum()))
    order = torch.argsort(torch.where(positive, -1.0, losses), descending=True)
    keep = positive.clone()
    keep[order[:k]] = True
    return keep


def positives_dropped(losses, positive, ratio=3):
    k = min(ratio * max(1, int(positive.sum())), int((~positive).sum()))
    keep = torch.zeros_like(positive)
    keep[losses.masked_fill(positive, float("-inf")).topk(k).indices] = True
    return keep


def no_max_one(losses, positive, ratio=3):
    k = min(ratio * int(positive.sum()), int((~positive).sum()))
    keep = positive.clone()
    keep[losses.masked_fill(positive, float("-inf")).topk(k).indices] = True
    return keep


def no_min(losses, positive, ratio=3):
    k = ratio * max(1, int(positive.sum()))
    keep = positive.clone()
    keep[losses.masked_fill(positive, float("-inf")).topk(k).indices] = True  # k may exceed the negatives
    return keep


@pytest.mark.parametrize("fn, mistake, phrase", [
    (positives_compete, "positives_compete", "rank only the negatives"),
    (topk_all, "topk_all", "every positive is kept"),
    (smallest, "smallest", "*smallest* loss"),
    (ratio_inverted, "ratio_inverted", "kept P / 3 negatives"),
    (fixed_three, "fixed_count", "whatever the number of positives"),
    (three_n, "ratio_times_all", "you kept every negative"),
    (positives_dropped, "positives_dropped", "the positives are missing"),
    (lambda losses, positive, ratio=3: positive.clone(), "positives_only", "only the positives"),
    (no_max_one, "no_max_one", "ratio · max(1, P)"),
    (no_min, "k_too_large", "k = min("),
    (lambda losses, positive, ratio=3: losses * lesson_ohem(losses, positive, ratio), "masked_losses", "the kept losses"),
    (lambda losses, positive, ratio=3: lesson_ohem(losses, positive, ratio).nonzero().flatten(), "indices",
     "indices of the kept examples"),
])
def test_ohem_mistakes_are_named(fn, mistake, phrase):
    rejected(check_ohem(fn), mistake, phrase)


def test_ohem_not_written_wrong_type_and_shape():
    def todo(losses, positive, ratio=3):
        raise NotImplementedError

    r = check_ohem(todo)
    assert not r.passed and r.mistake == "not_implemented" and "not written yet" in r.hint
    r = check_ohem(lambda losses, positive, ratio=3: lesson_ohem(losses, positive, ratio).tolist())
    assert not r.passed and r.mistake == "not_a_tensor"
    r = check_ohem(lambda losses, positive, ratio=3: (losses * lesson_ohem(losses, positive, ratio)).sum())
    assert not r.passed and r.mistake == "shape" and "a single number" in r.hint


# ---- the prior bias -------------------------------------------------------------------------------------
def lesson_prior_bias(pi):
    return -math.log((1 - pi) / pi)


@pytest.mark.parametrize("fn", [
    lesson_prior_bias,
    lambda pi: torch.logit(torch.tensor(pi, dtype=torch.float64)),  # a 0-d tensor
    lambda pi: torch.log(torch.tensor([pi])) - torch.log1p(torch.tensor([-pi])),  # float32, one element
    lambda pi: np.log(pi) - np.log(1 - pi),  # a numpy scalar
])
def test_prior_bias_right_answers_pass(fn):
    r = check_prior_bias(fn)
    assert r.passed, str(r)


def logit_of_one_minus_pi(pi):
    q = 1 - pi
    return math.log(q / (1 - q))


@pytest.mark.parametrize("fn, mistake, phrase", [
    (lambda pi: math.log((1 - pi) / pi), "sign_flipped", "the sign is flipped"),
    (logit_of_one_minus_pi, "sign_flipped", "logit of 1 - π"),
    (lambda pi: math.log(pi), "log_pi", "σ(log π) = π / (1 + π)"),
    (lambda pi: -math.log(pi), "minus_log_pi", "the log of the *odds*"),
    (lambda pi: pi, "pi_itself", "not π itself"),
    (lambda pi: pi / (1 - pi), "inverse_odds", "are the odds"),
    (lambda pi: (1 - pi) / pi, "odds_no_log", "needs a log and a minus"),
    (lambda pi: -math.log(1 - pi) / pi, "precedence", "operator precedence"),
    (lambda pi: -math.log10((1 - pi) / pi), "log10", "natural logarithm"),
    (lambda pi: 1 / (1 + math.exp(-pi)), "sigmoid_of_pi", "the inverse of the sigmoid"),
    (lambda pi: math.log(1 - pi), "log_one_minus_pi", "only half of it"),
    (lambda pi: torch.log(pi / (1 - pi)), "float_input", "torch.log(torch.tensor(pi))"),
])
def test_prior_bias_mistakes_are_named(fn, mistake, phrase):
    rejected(check_prior_bias(fn), mistake, phrase)


def test_prior_bias_not_written_wrong_type_and_shape():
    def todo(pi):
        raise NotImplementedError

    r = check_prior_bias(todo)
    assert not r.passed and r.mistake == "not_implemented" and "not written yet" in r.hint
    r = check_prior_bias(lambda pi: [lesson_prior_bias(pi)])
    assert not r.passed and r.mistake == "not_a_number" and "return one number" in r.hint
    r = check_prior_bias(lambda pi: torch.logit(torch.tensor([pi, 1 - pi])))  # both logits
    assert not r.passed and r.mistake == "shape" and "2 values" in r.hint
    r = check_prior_bias(lambda pi: None)
    assert not r.passed and r.mistake == "returned_none"


# ---- the first loss -------------------------------------------------------------------------------------
def lesson_first_loss(pi, num_positives, num_negatives, gamma=2.0, alpha=0.25):
    """The solution the lesson teaches (/tmp/solutions/check_first_loss.md)."""
    a_pos, a_neg = (1.0, 1.0) if alpha is None else (alpha, 1 - alpha)
    positive = a_pos * (1 - pi) ** gamma * -math.log(pi)
    negative = a_neg * pi ** gamma * -math.log(1 - pi)
    return (num_positives * positive + num_negatives * negative) / num_positives


def logits_first_loss(pi, num_positives, num_negatives, gamma=2.0, alpha=0.25):
    """From the logit b(π), in log space, as a tensor."""
    x = torch.full((2,), math.log(pi / (1 - pi)), dtype=torch.float64)
    y = torch.tensor([1.0, 0.0], dtype=torch.float64)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    log_1m_pt = torch.where(y == 1, F.logsigmoid(-x), F.logsigmoid(x))
    a = torch.ones(2, dtype=torch.float64) if alpha is None else torch.tensor([alpha, 1 - alpha], dtype=torch.float64)
    per = a * torch.exp(gamma * log_1m_pt) * ce
    return (per * torch.tensor([num_positives, num_negatives], dtype=torch.float64)).sum() / num_positives


def torchvision_first_loss(pi, num_positives, num_negatives, gamma=2.0, alpha=0.25):
    from torchvision.ops import sigmoid_focal_loss

    x = torch.full((2,), math.log(pi) - math.log1p(-pi), dtype=torch.float64)
    per = sigmoid_focal_loss(x, torch.tensor([1.0, 0.0], dtype=torch.float64), alpha=-1 if alpha is None else alpha,
                             gamma=gamma)
    return float(per[0] + per[1] * num_negatives / num_positives)


@pytest.mark.parametrize("fn", [lesson_first_loss, logits_first_loss, torchvision_first_loss])
def test_first_loss_right_answers_pass(fn):
    r = check_first_loss(fn)
    assert r.passed, str(r)


def _student(pos_w=None, neg_w=None, gamma_used=True, neg_log=None, swap=False, log=math.log, norm="P", terms="both"):
    def fn(pi, P, N, gamma=2.0, alpha=0.25):
        g = gamma if gamma_used else 0.0
        a = 1.0 if alpha is None else alpha
        wp = (a if alpha is not None else 1.0) if pos_w is None else pos_w(alpha)
        wn = ((1 - a) if alpha is not None else 1.0) if neg_w is None else neg_w(alpha)
        fp, fn_ = ((pi ** g, (1 - pi) ** g) if swap else ((1 - pi) ** g, pi ** g))
        pos = P * wp * fp * -log(pi)
        neg = N * wn * (fn_ * -log(1 - pi) if neg_log is None else neg_log(pi, g))
        total = {"both": pos + neg, "negatives": neg, "positives": pos}[terms]
        return total / {"P": P, "all": P + N, "none": 1, "N": N}[norm]

    return fn


@pytest.mark.parametrize("fn, mistake, phrase", [
    (_student(gamma_used=False), "ce_not_fl", "multiplies each example by (1 - p_t)^γ"),
    (_student(neg_log=lambda pi, g: (1 - pi) ** g * -math.log(pi)), "neg_pt_is_pi", "p_t = 1 - p = 1 - π"),
    (_student(swap=True), "powers_swapped", "modulating factors are swapped"),
    (_student(norm="all"), "norm_all", "all P + N examples"),
    (_student(norm="none"), "not_normalized", "that is the total loss"),
    (_student(norm="N"), "norm_negatives", "did you divide by N?"),  # raises at N = 0, the first case
    (_student(terms="negatives"), "negatives_only", "only the negatives' term"),
    (_student(terms="positives"), "positives_only", "only the positives' term"),
    (_student(log=math.log10), "log10", "natural logarithm"),
    (_student(pos_w=lambda a: 1.0 if a is None else 1 - a, neg_w=lambda a: 1.0 if a is None else a), "alpha_swapped",
     "α and 1 - α are swapped"),
    (_student(pos_w=lambda a: 1.0, neg_w=lambda a: 1.0), "no_alpha", "you left α out"),
    (_student(neg_w=lambda a: 1.0 if a is None else a), "alpha_everywhere", "weighted by 1 - α, not α"),
    (lambda pi, P, N, gamma=2.0, alpha=0.25: (P * alpha * (1 - pi) ** gamma * -math.log(pi)
                                              + N * (1 - alpha) * pi ** gamma * -math.log(1 - pi)) / P,
     "alpha_none", "alpha=None means no α-balancing"),
])
def test_first_loss_mistakes_are_named(fn, mistake, phrase):
    rejected(check_first_loss(fn), mistake, phrase)


def test_first_loss_not_written_wrong_type_and_shape():
    def todo(pi, P, N, gamma=2.0, alpha=0.25):
        raise NotImplementedError

    r = check_first_loss(todo)
    assert not r.passed and r.mistake == "not_implemented" and "not written yet" in r.hint
    r = check_first_loss(lambda pi, P, N, gamma=2.0, alpha=0.25: (lesson_first_loss(pi, P, 0, gamma, alpha),
                                                                  lesson_first_loss(pi, P, N, gamma, alpha)))
    assert not r.passed and r.mistake == "not_a_number" and "return one number" in r.hint
    r = check_first_loss(lambda pi, P, N, gamma=2.0, alpha=0.25: torch.tensor([0.5, 0.5]) * lesson_first_loss(pi, P, N, gamma, alpha))
    assert not r.passed and r.mistake == "shape" and "2 values" in r.hint


def test_first_loss_formula_matches_a_fresh_classroom_model():
    """The formula is the real first loss: a freshly built classroom model (logits = b(π) + a small perturbation,
    the head's weights being normal(0.01)) on one shapes batch is within a few percent of it, and the typical
    mistakes (CE for FL, the wrong normalization) are far off. Measured (16 images, 387 positives, 383,823
    negatives): FL π=0.01 1.119 vs 1.129, CE π=0.01 14.89 vs 14.57, FL π=0.5 137.9 vs 128.9, CE π=0.5 702.4 vs 688.2."""
    from retinanet_lab.data import ShapesDataset
    from retinanet_lab.model import RetinaNet
    from retinanet_lab.presets import preset

    p = preset("classroom")
    data = ShapesDataset(4, seed=0, **p["data"])
    images, targets = map(list, zip(*(data[i] for i in range(4))))
    for prior, tol in ((0.01, 0.05), (0.5, 0.12)):  # at π = 0.5 the convex FL feels the logits' spread more
        torch.manual_seed(0)
        model = RetinaNet(5, **{**p["model"], "prior_prob": prior})
        bias = model.class_subnet.logits.bias.detach()
        assert torch.allclose(bias, torch.full_like(bias, math.log(prior / (1 - prior))), atol=1e-6)
        for gamma, alpha in ((2.0, 0.25), (0.0, None)):
            model.focal_gamma, model.focal_alpha = gamma, alpha
            r = model.inspect(images, targets)
            matched = torch.cat([m.flatten() for m in r["matched"]])
            num_pos = int((matched >= 0).sum())
            num_neg = int((matched != -2).sum()) * model.num_classes - num_pos
            got = float(r["losses"]["classification"])
            want = lesson_first_loss(prior, num_pos, num_neg, gamma, alpha)
            assert num_pos > 0 and got == pytest.approx(want, rel=tol), (prior, gamma, got, want)
            if gamma:
                assert abs(got - want) < abs(got - lesson_first_loss(prior, num_pos, num_neg, 0.0, alpha)) / 5
            assert abs(got - want) < abs(got - want * num_pos / (num_pos + num_neg)) / 5  # not "normalized by all"


def test_checks_are_fast():
    import time

    t = time.perf_counter()
    for check, fn in ((check_ohem, lesson_ohem), (check_prior_bias, lesson_prior_bias), (check_first_loss, lesson_first_loss)):
        assert check(fn).passed
    assert time.perf_counter() - t < 1.0
