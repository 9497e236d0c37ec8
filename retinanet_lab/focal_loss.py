"""The α-balanced sigmoid focal loss (paper section 3, equations 1-5), defined once.

For a binary target y ∈ {0, 1} and a predicted probability p = σ(x):

    p_t = p       if y = 1
          1 - p   otherwise                                       (eq. 2)

    CE(p_t)  = -log(p_t)                                          (eq. 1)
    FL(p_t)  = -α_t (1 - p_t)^γ log(p_t)                          (eq. 5)

with α_t = α for y = 1 and 1 - α for y = 0 (eq. 3). γ = 0 gives (α-balanced) cross entropy.

Everything here works from the logits x, in log space: log(p_t) and log(1 - p_t) come from
`logsigmoid`, never from `log(sigmoid(x))` or `1 - sigmoid(x)`, so the loss and its gradient stay
finite for |x| up to 1e4 in float32, float16 and bfloat16, and for any γ >= 0. (A plain
`(1 - p_t) ** γ` has an infinite derivative at p_t = 1 when γ < 1, which is why
`torchvision.ops.sigmoid_focal_loss` returns NaN gradients for saturated logits.)

Targets may also be soft (any value in [0, 1]); the formulas above are then read with
p_t = p y + (1 - p)(1 - y), exactly as torchvision does.

One definition, every user: eq. 5 is written once, in `focal_loss_from_terms` (α_t, the two terms CE and
log(1 - p_t), and γ); `focal_loss` is that formula applied to `focal_loss_terms(logits, targets)`. The training
loss (`loss.py`) calls `focal_loss_sparse_sum`, an exact re-arrangement of the same sum for one-hot targets
(a speed-up, tested for equal values and gradients); the hard-example explorer keeps the terms and calls
`focal_loss_from_terms` for each γ; anatomy, the widgets and the exercises' references call these functions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "focal_loss",
    "focal_loss_terms",
    "focal_loss_from_terms",
    "cross_entropy",
    "p_t",
    "modulating_factor",
    "alpha_t",
    "focal_loss_grad",
    "focal_loss_sparse_sum",
]


def _as_float(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Compute in float32 at least: half precision has too few bits for log-space arithmetic."""
    if not torch.is_tensor(logits) or not torch.is_tensor(targets):
        raise TypeError("logits and targets must be tensors")
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return logits.to(dtype), targets.to(dtype)


def _log_p_t(logits: Tensor, targets: Tensor, complement: bool = False) -> Tensor:
    """log(p_t), or log(1 - p_t) with complement=True; finite for any finite logit.

    p_t = p y + (1 - p)(1 - y) is computed as a log-sum-exp of log-probabilities, and 1 - p_t likewise with
    y and 1 - y swapped; for hard labels one of the two terms is log(0) = -inf and drops out exactly (with a
    zero gradient).
    """
    log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)  # log σ(x), log σ(-x) = log(1 - σ(x))
    log_y, log_1my = torch.log(targets), torch.log1p(-targets)
    if complement:
        log_y, log_1my = log_1my, log_y
    return torch.logaddexp(log_p + log_y, log_1mp + log_1my)


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Binary cross entropy CE(p_t) = -log(p_t) (eq. 1), elementwise, from logits."""
    logits, targets = _as_float(logits, targets)
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")


def p_t(logits: Tensor, targets: Tensor) -> Tensor:
    """The probability the model gives to the true class, p_t (eq. 2)."""
    logits, targets = _as_float(logits, targets)
    return torch.exp(_log_p_t(logits, targets))


def modulating_factor(logits: Tensor, targets: Tensor, gamma: float = 2.0) -> Tensor:
    """(1 - p_t)^γ: how much the focal loss scales down cross entropy for each example (section 3.2)."""
    _check_gamma(gamma)
    logits, targets = _as_float(logits, targets)
    return torch.exp(gamma * _log_p_t(logits, targets, complement=True))


def alpha_t(targets: Tensor, alpha: float | None = 0.25) -> Tensor:
    """α_t = α for positives and 1 - α for negatives (eq. 3); all ones when alpha is None."""
    targets = targets.to(torch.promote_types(targets.dtype, torch.float32))
    if alpha is None:
        return torch.ones_like(targets)
    _check_alpha(alpha)
    return alpha * targets + (1 - alpha) * (1 - targets)


def focal_loss_terms(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """The two terms of eq. 5 that depend on the logits, elementwise: CE = -log(p_t) (eq. 1) and log(1 - p_t).

    Computed once, they give the focal loss for any α and γ through `focal_loss_from_terms` (the hard-example
    explorer redraws Figure 4 for a new γ that way). CE is binary cross entropy with logits (for soft targets
    -[y log p + (1 - y) log(1 - p)], as torchvision); log(1 - p_t) is finite for any finite logit.
    """
    logits, targets = _as_float(logits, targets)
    return cross_entropy(logits, targets), _log_p_t(logits, targets, complement=True)


def focal_loss_from_terms(ce: Tensor, log_1m_pt: Tensor, alpha_t: Tensor | float = 1.0, gamma: float = 2.0) -> Tensor:
    """FL = α_t (1 - p_t)^γ CE (eq. 5) from CE = -log(p_t) and log(1 - p_t): the one place eq. 5 is written.

    alpha_t: the weight of each example (a tensor like `alpha_t(targets, α)`, or one number for all of them).
    The modulating factor is exp(γ log(1 - p_t)), whose derivative γ (1 - p_t)^γ d log(1 - p_t) is finite for
    every γ > 0 even where p_t = 1; γ = 0 gives α_t CE exactly.
    """
    _check_gamma(gamma)
    if gamma == 0:
        return alpha_t * ce
    return alpha_t * torch.exp(gamma * log_1m_pt) * ce


def focal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    """α-balanced focal loss FL(p_t) = -α_t (1 - p_t)^γ log(p_t) (paper eq. 5), from logits.

    Args:
        logits: raw scores x of any shape (any float dtype; computed in float32 or wider).
        targets: same shape, 1 for the positive class and 0 for the negative (soft values allowed).
        alpha: weight α of the positives (negatives get 1 - α); None turns balancing off.
        gamma: focusing parameter γ >= 0; γ = 0 is cross entropy.
        reduction: "none" (elementwise), "sum" or "mean".

    Equals `torchvision.ops.sigmoid_focal_loss(logits, targets, alpha, gamma)` (alpha=None there is
    alpha=-1), but its values and gradients stay finite for saturated logits and any γ >= 0.
    The result is float32 (or float64 for float64 input), as autocast does for losses.
    """
    _check_gamma(gamma)
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")
    logits, targets = _as_float(logits, targets)
    ce, log_1m_pt = focal_loss_terms(logits, targets)
    loss = focal_loss_from_terms(ce, log_1m_pt, 1.0 if alpha is None else alpha_t(targets, alpha), gamma)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    return loss


def focal_loss_grad(logits: Tensor, targets: Tensor, alpha: float | None = 0.25, gamma: float = 2.0) -> Tensor:
    """dFL/dx, elementwise, by autograd (what the widgets plot next to the loss itself)."""
    x = logits.detach().to(torch.promote_types(logits.dtype, torch.float32)).requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(focal_loss(x, targets, alpha, gamma, reduction="sum"), x)
    return grad


def _check_gamma(gamma: float) -> None:
    if not (gamma >= 0):
        raise ValueError(f"gamma must be >= 0, got {gamma}")


def _check_alpha(alpha: float) -> None:
    if not (0 <= alpha <= 1):
        raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")


class _SparseTargetFocalLossSum(torch.autograd.Function):
    """Per-image Σ_{a,k} w_a · FL(x_ak, y_ak) for one-hot y (all 0 except at `positives`): see `focal_loss_sparse_sum`.

    Forward. Every output is first read as a negative (y = 0: p_t = 1 - p, α_t = 1 - α), whose two terms come
    from one `logsigmoid` and no targets: log(1 - p_t) = log p and CE = -log(1 - p) = x - log p. Its focal loss
    (1 - α) p^γ CE has a constant α_t, so the sum over classes is a dot product of p^γ and CE, and (1 - α) and
    w_a come out of it:
        Σ = (1 - α) Σ_a w_a Σ_k p^γ CE  +  Σ_{positives} w_a [FL(x, 1) - FL(x, 0)]
    where the positives' two FL are `focal_loss_from_terms`, FL(x, 1) with CE = -log p and log(1 - p_t) = log p - x.
    Backward, by hand (autograd would keep several (B, A, K) intermediates), with p^γ = exp(γ log p):
        negatives  dFL/dx = (1 - α) p^γ (p + γ (1 - p) CE)
        positives  dFL/dx = α (1 - p)^γ (γ p log p - (1 - p)),   (1 - p)^γ = exp(-γ CE of the negative)
    Powers are exp(γ log ·) of finite logs: finite for every γ >= 0 and logit.
    """

    @staticmethod
    def forward(ctx, logits, weight, img, anchor, cls, alpha, gamma):
        x = logits.float()  # (B, A, K)
        b, a, k = x.shape
        a_pos, a_neg = (alpha, 1 - alpha) if alpha is not None else (1.0, 1.0)
        log_p = F.logsigmoid(x)  # log p = log(1 - p_t) of a negative
        ce = x - log_p  # -log(1 - p) = CE of a negative
        mod = torch.exp(gamma * log_p)  # p^γ = (1 - p_t)^γ of a negative
        per_anchor = torch.bmm(mod.view(b * a, 1, k), ce.view(b * a, k, 1)).view(b, a)  # Σ_k p^γ CE
        loss = a_neg * (per_anchor * weight).sum(dim=1)  # (B,) every output read as a negative
        # positives: their own term replaces the negative one
        xi, lpi, cei = x[img, anchor, cls], log_p[img, anchor, cls], ce[img, anchor, cls]  # (N_pos,)
        positive = focal_loss_from_terms(-lpi, lpi - xi, a_pos, gamma)  # CE = -log p, log(1 - p) = log p - x
        negative = focal_loss_from_terms(cei, lpi, a_neg, gamma)
        loss = loss.index_add(0, img, (positive - negative) * weight[img, anchor])
        ctx.save_for_backward(weight, img, anchor, cls, log_p, mod, ce)
        ctx.alpha, ctx.gamma, ctx.dtype = (a_pos, a_neg), gamma, logits.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        weight, img, anchor, cls, log_p, mod, ce = ctx.saved_tensors
        (a_pos, a_neg), gamma = ctx.alpha, ctx.gamma
        p = torch.exp(log_p)
        grad = torch.addcmul(p, torch.exp(-ce), ce, value=gamma)  # p + γ (1 - p) CE
        grad = grad * mod * (a_neg * weight * grad_out[:, None]).unsqueeze(-1)
        lpi, cei = log_p[img, anchor, cls], ce[img, anchor, cls]  # log p, -log(1 - p)
        pi, qi = torch.exp(lpi), torch.exp(-cei)  # p, 1 - p
        pos_grad = a_pos * torch.exp(-gamma * cei) * (gamma * pi * lpi - qi)  # (1 - p)^γ = exp(-γ CE)
        grad[img, anchor, cls] = pos_grad * weight[img, anchor] * grad_out[img]
        return grad.to(ctx.dtype), None, None, None, None, None, None


def focal_loss_sparse_sum(logits: Tensor, positives: tuple[Tensor, Tensor, Tensor], weight: Tensor | None = None,
                          alpha: float | None = 0.25, gamma: float = 2.0) -> Tensor:
    """Per-image sum of `weight * focal_loss(logits, targets)` where targets are one-hot and sparse: the training form.

    An exact re-arrangement of `focal_loss` (the same terms summed in another order, so equal up to float rounding;
    tests check equal values and gradients), faster because it exploits
    what the training targets look like: of the B·A·K outputs, all but one per foreground anchor are negatives
    with target 0. So every output is first read as a negative, whose terms need one `logsigmoid` and no
    targets tensor (no (B, A, K) one-hot is built), its constant α_t = 1 - α comes out of the sum over classes
    (a dot product), and only the few positives are corrected by index, through `focal_loss_from_terms`; the
    gradient is written out by hand rather than recorded by autograd.

    logits (B, A, K) of any float dtype; positives: (image, anchor, class) index tensors of the entries
    whose target is 1 (each at most once); weight (B, A), e.g. 0 for ignored anchors (None: all 1) -> (B,) float32.
    """
    _check_gamma(gamma)
    if alpha is not None:
        _check_alpha(alpha)
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, A, K), got {tuple(logits.shape)}")
    w = torch.ones(logits.shape[:2], device=logits.device) if weight is None else weight.float()
    img, anchor, cls = (t.long() for t in positives)
    return _SparseTargetFocalLossSum.apply(logits, w, img, anchor, cls, alpha, float(gamma))
