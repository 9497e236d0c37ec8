"""Checks for the lessons on where the training signal goes: hard examples (paper Table 1 (d), section 5.1) and
the prior initialisation of the classification subnet (sections 3.3 and 4.1, "Initialization").

`check_ohem`: online hard example mining as the paper compares it (OHEM 1:3, without its NMS step), for one
image: keep every positive and the ratio · max(1, P) negatives of largest loss, as
`retinanet_lab.hard_examples.ohem_keep` (which `anchor_losses(method="OHEM 1:3")` uses). Cases: the basic rule
with the positives' losses below every negative's (so that positives must be kept on their own), a positive
with the largest loss (it must not take a negative's place), another ratio, fewer negatives than the quota, an
image without positives (max(1, P)), then random losses. Losses are distinct: tie-breaking is not tested.

`check_prior_bias`: the bias b = -log((1 - π) / π) of the last classification layer, so that σ(b) = π at the
start (section 3.3), as `retinanet_lab.heads.prior_bias`: π = 0.01, 0.5 (b = 0), 0.2, 0.9 (b > 0), 0.001.

`check_first_loss`: the classification loss of the first iteration when every output has probability π (what
the prior does, section 4.1): P positives and N negatives, each example's (focal) loss summed and divided by P,
the number of anchors assigned to a box. Cases: cross entropy with one positive, then negatives, then P > 1,
then π = 0.01, the modulating factor at π = 0.5 and 0.01, α on its own, the paper's setting at realistic counts
(100 positives, 8 million negatives: about 1.19 under FL against about 800 under CE), π = 0.5 under FL, then
other γ, α. The reference is `retinanet_lab.focal_loss.focal_loss` at the logit `prior_bias(π)`;
tests/test_exercises_training_signal.py checks the formula against a freshly built classroom model's first loss.
"""

from __future__ import annotations

import math

import torch

from ..focal_loss import focal_loss
from ..hard_examples import ohem_keep
from ..heads import prior_bias
from ._check import Case, Checker, CheckResult, fmt

__all__ = ["check_ohem", "check_prior_bias", "check_first_loss"]


# ---- OHEM -----------------------------------------------------------------------------------------------
def _ohem(loss: torch.Tensor, pos: torch.Tensor, ratio: float, *, k=None, pool: str = "negatives", largest: bool = True,
          keep_pos: bool = True) -> torch.Tensor:
    """The keep mask with the variations students write: k negatives (default ratio · max(1, P)) of largest loss."""
    p = int(pos.sum())
    k = ratio * max(1, p) if k is None else k
    k = int(min(max(k, 0), loss.numel()))
    if pool == "negatives":
        score = torch.where(pos, torch.tensor(-math.inf if largest else math.inf, dtype=loss.dtype), loss)
        k = min(k, int((~pos).sum()))
    else:  # every example competes
        score = loss
    order = score.argsort(descending=largest)[:k]
    keep = torch.zeros_like(pos)
    keep[order] = True
    return keep | pos if keep_pos else keep


def _ohem_mistakes(loss: torch.Tensor, pos: torch.Tensor, ratio: float) -> dict:
    p, n = int(pos.sum()), loss.numel()
    right = _ohem(loss, pos, ratio)
    return {
        "positives_compete": (_ohem(loss, pos, ratio, pool="all"),
                              "you took the top ratio · P losses among *all* examples, so a positive with a large loss "
                              "took a negative's place: rank only the negatives (set the positives' loss to -inf first), "
                              "then add every positive"),
        "no_max_one": (_ohem(loss, pos, ratio, k=ratio * p),
                       "an image without positives keeps nothing: the quota is ratio · max(1, P), so that an image with "
                       "no object still trains on its hardest negatives"),
        "topk_all": (_ohem(loss, pos, ratio, k=(1 + ratio) * p, pool="all", keep_pos=False),
                     "you kept the (1 + ratio) · P largest losses of all examples, so positives with a small loss were "
                     "dropped: every positive is kept, and the negatives are ranked among themselves"),
        "smallest": (_ohem(loss, pos, ratio, largest=False),
                     "you kept the negatives with the *smallest* loss: OHEM keeps the hard ones, the largest losses "
                     "(descending order, or topk with largest=True)"),
        "ratio_inverted": (_ohem(loss, pos, ratio, k=int(max(1, p) / ratio)),
                           f"you kept P / {fmt(ratio)} negatives: OHEM 1:{fmt(ratio)} keeps {fmt(ratio)} negatives per "
                           f"positive, ratio · P"),
        "fixed_count": (_ohem(loss, pos, ratio, k=ratio),
                        f"you kept {fmt(ratio)} negatives whatever the number of positives: keep ratio · P of them "
                        f"(ratio · max(1, P) when an image has no positive)"),
        "ratio_times_all": (_ohem(loss, pos, ratio, k=ratio * n),
                            "you kept every negative (ratio · N with N all examples, or no selection at all): keep only "
                            "ratio · P negatives, P the number of positives"),
        "positives_dropped": (_ohem(loss, pos, ratio, keep_pos=False),
                              "the positives are missing: OHEM keeps every positive, plus the hardest negatives"),
        "positives_only": (pos.clone(), "you kept only the positives: add the ratio · max(1, P) negatives of largest loss"),
        "masked_losses": (loss * right, "you returned the kept losses; return the boolean keep mask itself"),
    }


def _read_keep(c: Checker, case: Case, got: torch.Tensor) -> torch.Tensor:
    """Indices of the kept examples instead of a mask are named before the comparison."""
    t, want = got.detach(), case.want
    if t.dtype == torch.bool or t.is_floating_point() or t.dim() != 1:
        return got
    kept = set(torch.nonzero(want).flatten().tolist())
    values = t.tolist()
    if (t.shape != want.shape or any(v not in (0, 1) for v in values)) and set(values) == kept:
        c.fail(f"{case.name}: you returned the indices of the kept examples, shape {tuple(t.shape)}; return a boolean mask "
               f"of shape {tuple(want.shape)} (keep = torch.zeros_like(positive); keep[indices] = True)", "indices")
    return got


def check_ohem(fn) -> CheckResult:
    """Check `fn(losses (N,), positive (N,) bool, ratio=3) -> keep (N,) bool`: OHEM 1:ratio for one image."""

    def body(c: Checker):
        t = torch.tensor
        cases = [
            ("3 positives (the smallest losses) and 16 negatives, ratio 3",  # 16: no wrong quota (12, 4) hits a count
             t([0.11, 2.3, 0.9, 0.12, 1.7, 0.5, 3.1, 0.13, 0.7, 1.2, 0.3, 2.8, 0.6, 1.5, 0.4, 1.9, 0.8, 2.1, 0.35]),
             t([1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 3,
             "keep every positive (whatever its loss) and the 3 · 3 = 9 negatives of largest loss"),
            ("1 positive with the largest loss, 6 negatives, ratio 3", t([0.2, 0.9, 4.0, 0.5, 0.1, 0.7, 0.3]),
             t([0, 0, 1, 0, 0, 0, 0]), 3,
             "the positive is kept on its own; the 3 negatives are the 3 largest *negative* losses (0.9, 0.7, 0.5)"),
            ("ratio 1: one negative per positive", t([0.4, 1.1, 0.2, 0.8, 0.05, 0.6, 0.9, 0.3]),
             t([1, 0, 0, 0, 1, 0, 0, 0]), 1, "ratio = 1 keeps 1 · 2 = 2 negatives: the two largest (1.1, 0.9)"),
            ("fewer negatives than ratio · P: keep them all", t([0.4, 1.1, 0.2, 0.8, 0.6, 0.9]), t([1, 0, 0, 0, 1, 0]), 3,
             "3 · 2 = 6 negatives wanted, only 4 exist: keep all of them (topk with k larger than the count fails: "
             "k = min(quota, number of negatives))"),
            ("an image without positives", t([0.4, 1.1, 0.2, 0.8, 0.6, 0.9, 0.15]), t([0, 0, 0, 0, 0, 0, 0]), 3,
             "P = 0: the quota is ratio · max(1, P) = 3, so the image still trains on its 3 hardest negatives"),
        ]
        g = torch.Generator().manual_seed(0)
        for n, p, ratio in ((40, 4, 3), (60, 7, 2), (30, 12, 3)):
            loss = torch.randperm(n, generator=g).double() / n + torch.rand(n, generator=g, dtype=torch.float64) / (2 * n)
            pos = torch.zeros(n, dtype=torch.bool)
            pos[torch.randperm(n, generator=g)[:p]] = True
            cases.append((f"{n} examples, {p} positives, ratio {ratio}, random losses", loss, pos, ratio,
                          f"every positive, and the {ratio} · max(1, P) negatives of largest loss (all if fewer)"))
        c.run_cases(fn, [Case(name, (loss.float(), pos.bool(), ratio), ohem_keep(loss.float()[None], pos.bool()[None], None, ratio)[0],
                              hint, _ohem_mistakes(loss.float().double(), pos.bool(), ratio),
                              dict(exact_dtype="bool", row_name="example"), _TOPK)
                         for name, loss, pos, ratio, hint in cases], read=_read_keep)

    return Checker.run("OHEM", body)


_TOPK = {"selected index k out of range": ("k_too_large", "topk was asked for more negatives than there are: use "
                                                          "k = min(ratio · max(1, P), number of negatives)")}


# ---- the prior bias -------------------------------------------------------------------------------------
def _bias_mistakes(pi: float) -> dict:
    odds = (1 - pi) / pi
    return {
        "sign_flipped": (math.log(odds), "the sign is flipped: b = -log((1 - π) / π), negative for π < 0.5, so that "
                                         "σ(b) = π (log((1 - π) / π) is the logit of 1 - π: σ of it gives 1 - π)"),
        "log_pi": (math.log(pi), "log(π) is close but not it: σ(log π) = π / (1 + π). b = -log((1 - π) / π) = "
                                 "log(π) - log(1 - π)"),
        "minus_log_pi": (-math.log(pi), "b = -log((1 - π) / π): the log of the *odds* (1 - π) / π, not of π"),
        "pi_itself": (pi, "the bias is not π itself but the logit b with σ(b) = π: b = -log((1 - π) / π)"),
        "inverse_odds": (1 / odds, "π / (1 - π) are the odds: take their log, b = -log((1 - π) / π) = log(π / (1 - π))"),
        "odds_no_log": (odds, "(1 - π) / π needs a log and a minus: b = -log((1 - π) / π)"),
        "precedence": (-math.log(1 - pi) / pi, "operator precedence: -log(1 - π) / π divides the log by π; the whole "
                                               "ratio goes inside the log: -log((1 - π) / π)"),
        "log10": (-math.log10(odds), "use the natural logarithm (math.log, torch.log): σ is built on e, not 10"),
        "sigmoid_of_pi": (1 / (1 + math.exp(-pi)), "σ(π) is the other direction: the bias is the b with σ(b) = π, the "
                                                   "inverse of the sigmoid (the logit), b = -log((1 - π) / π)"),
        "log_one_minus_pi": (math.log(1 - pi), "log(1 - π) is only half of it: b = log(π) - log(1 - π) = -log((1 - π) / π)"),
    }


_FLOAT_TO_TORCH = {"must be Tensor, not float": ("float_input",
                                                 "π is a Python float: use math.log, or torch.log(torch.tensor(pi))")}


def check_prior_bias(fn) -> CheckResult:
    """Check `fn(pi: float) -> b` (a float or a 0-d tensor) with σ(b) = π: b = -log((1 - π) / π)."""

    def body(c: Checker):
        cases = [
            (0.01, "the paper's π = 0.01: b = -log(0.99 / 0.01) = -log 99 ≈ -4.595, and σ(-4.595) = 0.01"),
            (0.5, "π = 0.5: (1 - π) / π = 1 and b = -log 1 = 0 (σ(0) = 0.5)"),
            (0.2, "π = 0.2: b = -log(0.8 / 0.2) = -log 4 ≈ -1.386"),
            (0.9, "π = 0.9 > 0.5 gives a positive bias: b = -log(0.1 / 0.9) = log 9 ≈ 2.197"),
            (0.001, "π = 0.001: b = -log 999 ≈ -6.907"),
        ]
        c.run_cases(fn, [Case(f"π = {fmt(pi)}", (pi,), torch.tensor(prior_bias(pi), dtype=torch.float64), hint,
                              _bias_mistakes(pi), dict(tol=1e-6), _FLOAT_TO_TORCH) for pi, hint in cases], expect="number")
        name = "σ(b) gives π back, for π = 0.03, 0.37, 0.75"
        pis = torch.tensor([0.03, 0.37, 0.75], dtype=torch.float64)
        bs = torch.stack([c.call(name, fn, float(p), expect="number") for p in pis])
        c.compare(name, torch.sigmoid(bs), pis, hint="b is the logit of π: σ(b) = 1 / (1 + exp(-b)) = π", tol=1e-6)

    return Checker.run("prior bias", body)


# ---- the first loss -------------------------------------------------------------------------------------
def _first(pi: float, p: int, n: int, gamma: float, alpha, *, pos_weight=None, neg_weight=None, neg_pt_is_pi=False,
           swap_powers=False, log=math.log, norm=None, terms="both") -> float:
    """Σ over P positives and N negatives of the focal loss at probability π, / norm (default P), with variations."""
    a = 1.0 if alpha is None else alpha
    wp = (a if alpha is not None else 1.0) if pos_weight is None else pos_weight
    wn = (1 - a if alpha is not None else 1.0) if neg_weight is None else neg_weight
    mod_pos, mod_neg = ((pi ** gamma, (1 - pi) ** gamma) if swap_powers else ((1 - pi) ** gamma, pi ** gamma))
    pos = p * wp * mod_pos * -log(pi)
    neg = n * wn * ((1 - pi) ** gamma * -log(pi) if neg_pt_is_pi else mod_neg * -log(1 - pi))
    total = (pos if terms != "negatives" else 0.0) + (neg if terms != "positives" else 0.0)
    return total / (p if norm is None else norm)


def _first_mistakes(pi: float, p: int, n: int, gamma: float, alpha) -> dict:
    a = 0.25 if alpha is None else alpha
    m = {
        "ce_not_fl": (_first(pi, p, n, 0.0, alpha), "that is (α-balanced) cross entropy: the focal loss multiplies each "
                                                    "example by (1 - p_t)^γ, (1 - π)^γ for a positive and π^γ for a negative"),
        "neg_pt_is_pi": (_first(pi, p, n, gamma, alpha, neg_pt_is_pi=True),
                         "for a negative p_t = 1 - p = 1 - π: its loss is (1 - α) π^γ (-log(1 - π)), not the positive's "
                         "-log(π)"),
        "powers_swapped": (_first(pi, p, n, gamma, alpha, swap_powers=True),
                           "the modulating factors are swapped: (1 - p_t)^γ is (1 - π)^γ for a positive (p_t = π) and π^γ "
                           "for a negative (p_t = 1 - π)"),
        "norm_all": (_first(pi, p, n, gamma, alpha, norm=p + n),
                     "you divided by all P + N examples: the paper normalizes by the number of anchors assigned to a "
                     "box, P (section 4.1)"),
        "not_normalized": (_first(pi, p, n, gamma, alpha, norm=1),
                           "that is the total loss: divide it by P, the number of positives (anchors assigned to a box)"),
        "norm_negatives": (_first(pi, p, n, gamma, alpha, norm=max(n, 1)),
                           "you divided by the number of negatives: normalize by P, the number of positives"),
        "negatives_only": (_first(pi, p, n, gamma, alpha, terms="negatives"),
                           "only the negatives' term: add the P positives' loss α (1 - π)^γ (-log π) each"),
        "positives_only": (_first(pi, p, n, gamma, alpha, terms="positives"),
                           "only the positives' term: the N negatives contribute (1 - α) π^γ (-log(1 - π)) each, and at "
                           "the start they are most of the loss"),
        "log10": (_first(pi, p, n, gamma, alpha, log=math.log10), "use the natural logarithm (math.log), not log10"),
    }
    if alpha is not None:
        m.update({
            "alpha_swapped": (_first(pi, p, n, gamma, alpha, pos_weight=1 - a, neg_weight=a),
                              "α and 1 - α are swapped: α weighs the positives, 1 - α the negatives (eq. 3)"),
            "no_alpha": (_first(pi, p, n, gamma, None), "you left α out: α for the positives, 1 - α for the negatives"),
            "alpha_everywhere": (_first(pi, p, n, gamma, alpha, neg_weight=a),
                                 "the negatives are weighted by 1 - α, not α"),
        })
    return m


_FIRST_ERRORS = {"NoneType": ("alpha_none", "alpha=None means no α-balancing (every example weighs 1): handle it with "
                                            "`if alpha is None:`"),
                 "division by zero": ("norm_negatives", "this case has no negatives (N = 0): did you divide by N? The loss "
                                                        "is normalized by P, the number of positives (section 4.1)")}


def _reference_first_loss(pi: float, p: int, n: int, gamma: float, alpha) -> torch.Tensor:
    """The package's focal loss of one positive and one negative at the logit b(π), times the counts, / P."""
    x = torch.full((2,), prior_bias(pi), dtype=torch.float64)
    per = focal_loss(x, torch.tensor([1.0, 0.0], dtype=torch.float64), alpha, gamma)  # (2,)
    return (p * per[0] + n * per[1]) / p


def check_first_loss(fn) -> CheckResult:
    """Check `fn(pi, num_positives, num_negatives, gamma=2.0, alpha=0.25) -> float`: the first iteration's loss."""

    def body(c: Checker):
        cases = [
            ("cross entropy (γ = 0, α = None), π = 0.5, 1 positive, no negative", 0.5, 1, 0, 0.0, None,
             "one positive at p = π = 0.5: -log 0.5 = log 2 ≈ 0.693, divided by P = 1"),
            ("cross entropy, π = 0.01, 1 positive and 100 negatives", 0.01, 1, 100, 0.0, None,
             "the positive: -log 0.01 ≈ 4.605; each negative: -log 0.99 ≈ 0.01005; total ≈ 5.61"),
            ("cross entropy, π = 0.5, 1 positive and 10 negatives", 0.5, 1, 10, 0.0, None,
             "each negative adds -log(1 - π) = log 2 too: 11 log 2 ≈ 7.62, divided by P = 1"),
            ("cross entropy, π = 0.5, 4 positives and 100 negatives", 0.5, 4, 100, 0.0, None,
             "104 examples of log 2 each, divided by P = 4 (the number of positives): 26 log 2 ≈ 18.02"),
            ("focal loss γ = 2 (α = None), π = 0.5, 1 positive and 10 negatives", 0.5, 1, 10, 2.0, None,
             "each example is multiplied by (1 - p_t)^2 = 0.25 at p_t = 0.5: 11 · 0.25 · log 2 ≈ 1.906"),
            ("focal loss γ = 2 (α = None), π = 0.01, 1 positive and 100000 negatives", 0.01, 1, 100_000, 2.0, None,
             "positive: (1 - π)^2 (-log π) ≈ 4.51; each negative: π^2 (-log(1 - π)) ≈ 1.0e-6, 100000 of them ≈ 0.10"),
            ("α = 0.25 with γ = 0 (α-balanced CE), π = 0.01, 10 positives and 10000 negatives", 0.01, 10, 10_000, 0.0, 0.25,
             "α = 0.25 weighs each positive, 1 - α = 0.75 each negative: (10 · 0.25 · 4.605 + 10000 · 0.75 · 0.01005) / 10"),
            ("the paper's setting γ = 2, α = 0.25, π = 0.01: 100 positives, 8 million negatives", 0.01, 100, 8_000_000, 2.0,
             0.25, "FL = α_t (1 - p_t)^γ (-log p_t) for each example, summed, divided by P = 100: about 1.19 (cross "
             "entropy would give about 800)"),
            ("γ = 2, α = 0.25, π = 0.5: 1 positive and 10 negatives", 0.5, 1, 10, 2.0, 0.25,
             "each negative: 0.75 · 0.5^2 · log 2 ≈ 0.13; the positive: 0.25 · 0.5^2 · log 2 ≈ 0.043"),
            ("γ = 1.5, α = 0.4, π = 0.07, 37 positives and 5000 negatives", 0.07, 37, 5000, 1.5, 0.4,
             "(P α (1-π)^γ (-log π) + N (1-α) π^γ (-log(1-π))) / P"),
            ("γ = 0.5, α = None, π = 0.2, 3 positives and 250 negatives", 0.2, 3, 250, 0.5, None,
             "(P (1-π)^γ (-log π) + N π^γ (-log(1-π))) / P, no α"),
        ]
        c.run_cases(fn, [Case(name, (pi, p, n, gamma, alpha), _reference_first_loss(pi, p, n, gamma, alpha), hint,
                              _first_mistakes(pi, p, n, gamma, alpha), dict(tol=1e-5), _FIRST_ERRORS)
                         for name, pi, p, n, gamma, alpha, hint in cases], expect="number")

    return Checker.run("first loss", body)
