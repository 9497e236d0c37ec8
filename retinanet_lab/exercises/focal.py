"""Check for lesson 02: the α-balanced focal loss FL(p_t) = -α_t (1 - p_t)^γ log(p_t) (paper eq. 5), elementwise.

The cases take the loss apart: cross entropy alone (γ = 0, eq. 1-2), the modulating factor (γ = 2, eq. 4, then
a fractional γ = 0.5), α on its own (γ = 0, eq. 3), with γ (eq. 5) and α = 0, any shape (a (2, 3, 5) batch), the
paper's "100x" at p_t = 0.9 (section 3.2), easy examples by ratio (10^4 ... 10^8 below cross entropy: a floor or a
cut-off hides under an absolute tolerance), the *values* at saturated logits (±30 and ±200: log(sigmoid(x)) is
-inf there in float32, and a clamped log is finite but far too small), and the *gradient* at saturated logits
for γ = 0.5, where `(1 - p_t) ** γ` computed from `sigmoid` gives NaN (inf · 0 in autograd) and a detached
modulating factor gives finite but wrong values. The catalogue (`_mistakes`) holds the typical mistakes
(modulating factor, p_t, α_t, signs, softmax, sum or mean instead of elementwise); it is narrowed case by case
by `Checker.run_cases` (see `_check`). The mutation suite is tests/test_exercises_boxes_focal.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..focal_loss import alpha_t, focal_loss, focal_loss_from_terms, focal_loss_grad, focal_loss_terms
from ._check import Case, Checker, CheckResult, fmt, pair

__all__ = ["check_focal_loss"]

_LOG_SPACE = ("compute it in log space from the logits: log p = F.logsigmoid(x), log(1 - p) = F.logsigmoid(-x), "
              "and (1 - p_t)^γ = exp(γ · log(1 - p_t)); never torch.log(torch.sigmoid(x)) or 1 - torch.sigmoid(x)")


def _parts(x: torch.Tensor, y: torch.Tensor):
    """p, p_t, CE = -log p_t, log(1 - p_t) in float64 (exact enough for the mistakes' answers)."""
    x, y = x.double(), y.double()
    p = torch.sigmoid(x)
    ce, log_1m_pt = focal_loss_terms(x, y)  # the terms of the package's focal loss (eq. 1, 5)
    return p, p * y + (1 - p) * (1 - y), ce, log_1m_pt


def _mistakes(x: torch.Tensor, y: torch.Tensor, alpha, gamma) -> dict:
    p, pt, ce, log_1m_pt = _parts(x, y)
    y = y.double()
    mod = torch.exp(gamma * log_1m_pt)
    at = alpha_t(y, alpha)
    a = 1.0 if alpha is None else alpha
    right = focal_loss_from_terms(ce, log_1m_pt, at, gamma)  # = focal_loss(x, y, alpha, gamma)
    ps = torch.softmax(x.double(), dim=-1)
    ps_t = ps * y + (1 - ps) * (1 - y)
    out = {
        "no_modulating_factor": (at * ce, "the loss is cross entropy times the modulating factor (1 - p_t)^γ (eq. 4): "
                                 "you left the factor out"),
        "p_instead_of_pt": (at * (1 - p) ** gamma * ce, "you used (1 - p)^γ for every example; for a negative (y = 0) "
                            "p_t = 1 - p, so its factor is p^γ: use p_t = p·y + (1 - p)·(1 - y)"),
        "pt_power": (at * pt ** gamma * ce, "the factor is (1 - p_t)^γ, small for well-classified examples; "
                     "p_t^γ does the opposite"),
        "gamma_times": (at * (1 - pt) * gamma * ce, "γ is an exponent: (1 - p_t) ** γ, not (1 - p_t) * γ"),
        "ce_of_p": (at * mod * -torch.log(p.clamp(min=1e-300)), "cross entropy is -log(p_t): -log(p) for a positive, "
                    "-log(1 - p) for a negative; you used -log(p) for every example"),
        "no_minus": (-at * mod * ce, "the loss must be positive: FL = -α_t (1 - p_t)^γ log(p_t), and log(p_t) < 0"),
        "log10": (at * mod * ce / math.log(10), "use the natural logarithm (torch.log, F.logsigmoid), not log10"),
        "softmax": (at * (1 - ps_t) ** gamma * -torch.log(ps_t), "each logit is its own yes/no classifier (one per class "
                    "and anchor): p = sigmoid(x), not a softmax across the logits (the paper uses the sigmoid, section 3)"),
        "summed": (right.sum(), "your answer is one number, the sum of the losses: return the loss of every element (no "
                   "sum). The training loop sums it and divides by the number of positive anchors (section 4.1)"),
        "mean": (right.mean(), "your answer is one number, the mean of the losses: return the loss of every element (no "
                 "mean). RetinaNet divides the sum by the number of positive anchors, not by the number of elements"),
    }
    if alpha is not None:
        out.update({
            "alpha_everywhere": (a * mod * ce, "α_t is α for positives (y = 1) and 1 - α for negatives (y = 0) (eq. 3); "
                                 "you multiplied every example by α"),
            "alpha_swapped": (((1 - a) * y + a * (1 - y)) * mod * ce, "α and 1 - α are swapped: α weighs the positives "
                              "(y = 1), 1 - α the negatives"),
            "alpha_positives_only": ((a * y + (1 - y)) * mod * ce, "the negatives are weighted too, by 1 - α (eq. 3)"),
            "no_alpha": (mod * ce, "you left α out: multiply by α_t (α for positives, 1 - α for negatives)"),
        })
    if alpha == 0:
        out["alpha_zero_falsy"] = (mod * ce, "α = 0 was taken for 'no α': `if alpha:` is False for 0 as for None; "
                                   "test `if alpha is not None:`")
    return out


def check_focal_loss(fn) -> CheckResult:
    """Check `fn(logits, targets, alpha=0.25, gamma=2.0) -> loss of every element` (eq. 5); alpha=None: no α."""

    def body(c: Checker):
        c.run_cases(fn, _value_cases())
        _check_100x(c, fn)
        _check_easy_examples(c, fn)
        _check_saturated_values(c, fn)
        _check_saturated_gradient(c, fn)

    return Checker.run("focal loss", body)


_NONE_HINT = {"NoneType": ("alpha_none", "alpha=None means 'no α-balancing': handle it with `if alpha is not None:`")}


def _value_cases() -> list[Case]:
    """The loss taken apart (CE, the factor, a fractional γ, α, both), then a (2, 3, 5) batch; reference: `focal_loss`."""
    x = torch.tensor([-3.0, -0.5, 0.0, 0.7, 2.5, 1.2])
    y = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    cases = [
        ("γ = 0, no α: cross entropy", None, 0.0, "γ = 0 and no α is plain cross entropy -log(p_t), with p_t = p for "
         "y = 1 and 1 - p for y = 0 (eq. 1-2)"),
        ("γ = 2: the modulating factor", None, 2.0, "multiply cross entropy by (1 - p_t)^γ (eq. 4)"),
        ("γ = 0.5: a fractional γ", None, 0.5, "(1 - p_t)^γ for any γ >= 0, fractional too"),
        ("α = 0.75, γ = 0: α-balanced cross entropy", 0.75, 0.0, "α_t = α for positives (y = 1), 1 - α for negatives (eq. 3)"),
        ("α = 0.25, γ = 2: the paper's setting", 0.25, 2.0, "α_t multiplies the whole loss: α_t (1 - p_t)^γ CE (eq. 5)"),
        ("α = 0, γ = 2: the positives weigh nothing", 0.0, 2.0, "α = 0 is a weight like any other: α_t = 0 for positives, "
         "1 for negatives (test `alpha is not None`, not `if alpha:`, which is False for 0)"),
    ]
    runs = [Case(name, (x, y, alpha, gamma), focal_loss(x.double(), y.double(), alpha, gamma), hint,
                 _mistakes(x, y, alpha, gamma), error_hints=_NONE_HINT) for name, alpha, gamma, hint in cases]
    g = torch.Generator().manual_seed(0)
    xb = torch.randn(2, 3, 5, generator=g) * 3
    yb = (torch.rand(2, 3, 5, generator=g) > 0.7).float()
    runs.append(Case("a (2, 3, 5) batch: one loss per element, any shape", (xb, yb, 0.25, 2.0),
                     focal_loss(xb.double(), yb.double(), 0.25, 2.0),
                     "return the loss of every element, with the shape of the logits: no sum, no mean, no flattening",
                     _mistakes(xb, yb, 0.25, 2.0), error_hints=_NONE_HINT))
    return runs


def _check_100x(c: Checker, fn) -> None:
    """Section 3.2: with γ = 2 an example at p_t = 0.9 has 100x less loss than under cross entropy."""
    x9 = torch.tensor([math.log(9.0)])  # p = 0.9 for a positive
    name = "p_t = 0.9, γ = 2: 100x less than cross entropy (section 3.2)"
    got = c.call(name, fn, x9, torch.ones(1), None, 2.0)
    ratio = float(F.binary_cross_entropy_with_logits(x9, torch.ones(1)) / got.detach().double().sum()) \
        if float(got.detach().sum()) > 0 else math.inf
    c.require(name, abs(ratio - 100) < 0.5, f"at p_t = 0.9 with γ = 2 the focal loss should be 100x below cross entropy; "
              f"yours is {fmt(ratio)}x below it", "not_100x")


def _check_easy_examples(c: Checker, fn) -> None:
    """Section 3.2's point to the last digit: easy examples keep a small loss, they are not dropped. At p_t = 0.99,
    0.999 and 0.9999 (positives and negatives) with γ = 2 the focal loss is 10^4, 10^6 and 10^8 times below cross
    entropy. Compared as ratios: values of 1e-6 to 1e-12 hide under any absolute tolerance, and so would a floor on
    (1 - p_t) or a cut-off that zeroes the easy examples (OHEM's way, or the hinge loss the paper tried, §5.1)."""
    pt = torch.tensor([0.99, 0.999, 0.9999], dtype=torch.float64)
    x = torch.cat([torch.log(pt / (1 - pt)), -torch.log(pt / (1 - pt))]).float()
    y = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    name = "easy examples (p_t = 0.99, 0.999, 0.9999), γ = 2: 10^4, 10^6, 10^8 times below cross entropy"
    got = c.call(name, fn, x, y, None, 2.0)
    want = focal_loss(x.double(), y.double(), None, 2.0)
    t = torch.as_tensor(got).detach().double()
    if t.shape == want.shape and bool(torch.isfinite(t).all()):
        off = ((t - want).abs() / want) > 1e-2  # 1%: float32 cross entropy near 0 is good to about 0.1%
        if bool(off.any()):
            i = int(torch.nonzero(off)[0])
            ce = float(F.binary_cross_entropy_with_logits(x[i].double(), y[i].double()))
            yours = f"{fmt(ce / float(t[i]))}x" if float(t[i]) > 0 else "infinitely far (0)"
            c.fail(f"{name}: at p_t = {fmt(float(pt[i % 3]))} (target {fmt(float(y[i]))}) your loss is {yours} below cross "
                   f"entropy, expected {fmt(ce / float(want[i]))}x. The focal loss down-weights easy examples, it does not "
                   f"drop or floor them: each keeps (1 - p_t)^γ of its cross entropy, however small", "easy_examples")
    c.compare(name, got, want, hint="(1 - p_t)^γ · CE for every example, easy ones included",
              mistakes=_mistakes(x, y, None, 2.0))


def _check_saturated_values(c: Checker, fn) -> None:
    """Values at ±30 and ±200: -inf or NaN from log(sigmoid(x)) and a clamped log's far too small value are named."""
    xs = torch.tensor([30.0, -30.0, 200.0, -200.0, -30.0, 200.0])
    ys = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])  # four confident and right, two confident and wrong
    name = "saturated logits (±30, ±200): the values"
    got = c.call(name, fn, xs, ys, 0.25, 2.0)
    want = focal_loss(xs.double(), ys.double(), 0.25, 2.0)  # e.g. 0.75 · 200 = 150 for logit 200, target 0
    t = torch.as_tensor(got).detach().double()
    bad = ~torch.isfinite(t) & torch.isfinite(want) if t.shape == want.shape else torch.zeros(1, dtype=torch.bool)
    if bad.any():
        i = int(torch.nonzero(bad)[0])
        yours, expected = pair(float(t[i]), float(want[i]))
        side = "1" if float(xs[i]) > 0 else "0"
        c.fail(f"{name}: your loss is {yours} at logit {fmt(float(xs[i]))} with target {fmt(float(ys[i]))}, where "
               f"{expected} is expected: in float32 sigmoid({fmt(float(xs[i]))}) is exactly {side}, so the log of "
               f"p_t (or of 1 - p) is log(0) = -inf (and 0 · inf = nan). Instead, {_LOG_SPACE}", "log_of_sigmoid")
    if t.shape == want.shape and bool(torch.isfinite(t).all()) and float(t[5]) < 0.9 * float(want[5]):
        c.fail(f"{name}: at logit 200 with target 0 the loss is 0.75 · 1 · 200 = 150, yours is {fmt(float(t[5]))}: a clamp "
               f"(p.clamp(eps) or log(p + eps)) keeps the loss finite but caps it far below the true value. Instead, "
               f"{_LOG_SPACE}", "clamped")
    c.compare(name, got, want, hint=f"confident and wrong predictions have large, finite losses: {_LOG_SPACE}",
              mistakes=_mistakes(xs, ys, 0.25, 2.0))


def _check_saturated_gradient(c: Checker, fn) -> None:
    """The gradient for γ = 0.5 at saturated logits: NaN from `(1 - p_t) ** γ`, wrong from a detached factor."""
    xg = torch.tensor([30.0, -30.0, 200.0, -200.0, 0.3, -2.0, -30.0])
    yg = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    name = "the gradient for γ = 0.5 at saturated logits"
    detached = _detached_grad(xg, yg, 0.25, 0.5)
    c.gradient(name, fn, xg, (yg, 0.25, 0.5), focal_loss_grad(xg.double(), yg.double(), 0.25, 0.5),
               hint="For γ < 1 the derivative of u^γ is infinite at u = 1 - p_t = 0, and autograd multiplies it by "
                    f"du/dx = 0: inf · 0 = NaN (torchvision's sigmoid_focal_loss has this bug). Instead, {_LOG_SPACE}",
               mistakes={"detached_factor": (detached, "the gradient is wrong although the values are right: the "
                                             "modulating factor was detached from autograd's graph (.detach(), .item() "
                                             "or numpy); the paper's gradient includes its derivative")})


def _detached_grad(x, y, alpha, gamma):
    """The gradient a student gets when (1 - p_t)^γ is treated as a constant."""
    x = x.double().detach().requires_grad_(True)
    _, _, ce, log_1m_pt = _parts(x, y)
    at = alpha_t(y.double(), alpha)
    (g,) = torch.autograd.grad((at * torch.exp(gamma * log_1m_pt).detach() * ce).sum(), x)
    return g
