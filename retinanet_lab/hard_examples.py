"""Where the training signal goes: the loss of each anchor under cross entropy, α-balanced CE, OHEM and
the focal loss (paper section 3, Figure 4, and Table 1 (d)).

    s = anchor_samples(model, images, targets)        # the binary examples of a batch, from real outputs
    fraction, cumulative = loss_cdf(example_losses(s, "negatives", gamma=2.0))   # the paper's Figure 4 (right)
    easy_negative_share(s, gamma=2.0)                 # share of the loss from negatives with p_t > 0.5
    maps = anchor_loss_shares(s, method="ohem")       # each anchor's share of the loss, for an image view

Every (anchor, class) pair is one binary example: the true class of a foreground anchor is a positive,
every other class of a foreground anchor and every class of a background anchor is a negative, and
ignored anchors (IoU in [0.4, 0.5)) are not examples at all.

`anchor_samples` computes each example's cross entropy CE = -log(p_t) and log(1 - p_t) once
(`focal_loss.focal_loss_terms`); the focal loss for any γ is then `focal_loss.focal_loss_from_terms`,
FL = α_t exp(γ log(1 - p_t)) CE (eq. 5), the formula `focal_loss` itself uses, one multiplication away: that
is what lets the explorer redraw Figure 4 for a new γ at once.
"""

from __future__ import annotations

import torch

from .focal_loss import alpha_t, focal_loss_from_terms, focal_loss_terms

__all__ = ["anchor_samples", "example_losses", "loss_cdf", "easy_negative_share", "anchor_losses", "anchor_loss_shares",
           "ohem_keep", "METHODS", "ALPHA_CE", "ALPHA_FL"]

METHODS = ("CE", "α-balanced CE", "OHEM 1:3", "FL")
ALPHA_CE, ALPHA_FL = 0.75, 0.25  # the paper's best α for α-balanced CE (Table 1 (a)) and for FL with γ = 2 (Table 1 (b))


@torch.no_grad()
def anchor_samples(model, images, targets) -> dict:
    """The logits of every anchor of `images` (one forward pass of `model`) with their targets.

    Returns "logits" (B, A, K), "onehot" (B, A, K) 0/1 targets, "valid" (B, A) not ignored, "foreground" (B, A),
    "ce" and "log_1m_pt" (B, A, K) for every output, "pos_logits" (N_pos,) and "neg_logits" (N_neg,) (the logits of
    the positive and negative examples, with target 1 and 0), plus the per-level "anchors", "feature_sizes",
    "image_sizes", "batch" and "matched" of `model.inspect`.
    """
    r = model.inspect(images, targets)
    b = len(images)
    logits = torch.cat([c.reshape(b, -1, c.shape[-1]) for c in r["cls_logits"]], dim=1).float()  # (B, A, K)
    matched = torch.cat([m.reshape(b, -1) for m in r["matched"]], dim=1)  # (B, A)
    fg, valid = matched >= 0, matched != -2
    labels = torch.gather(r["gt_labels"], 1, matched.clamp(min=0))  # (B, A) label of each anchor's box
    onehot = torch.zeros_like(logits)
    onehot[fg] = torch.nn.functional.one_hot(labels[fg] - 1, logits.shape[-1]).float()
    examples = valid[..., None].expand_as(logits)
    pos, neg = examples & (onehot == 1), examples & (onehot == 0)
    ce, log_1m_pt = focal_loss_terms(logits, onehot)  # (B, A, K) each
    return {"logits": logits, "onehot": onehot, "valid": valid, "foreground": fg, "ce": ce, "log_1m_pt": log_1m_pt,
            "pos_logits": logits[pos], "neg_logits": logits[neg], "pos": (ce[pos], log_1m_pt[pos]), "neg": (ce[neg], log_1m_pt[neg]),
            "anchors": r["anchors"], "feature_sizes": r["feature_sizes"], "image_sizes": r["image_sizes"], "batch": r["batch"],
            "matched": r["matched"]}


def example_losses(samples: dict, kind: str, gamma: float = 2.0, alpha: float | None = None) -> torch.Tensor:
    """The (focal) loss of every positive (kind="positives") or negative ("negatives") example."""
    if kind not in ("positives", "negatives"):
        raise ValueError(f"kind must be 'positives' or 'negatives', got {kind!r}")
    ce, log_1m_pt = samples["pos" if kind == "positives" else "neg"]
    weight = 1.0 if alpha is None else (alpha if kind == "positives" else 1 - alpha)  # α_t (eq. 3)
    return focal_loss_from_terms(ce, log_1m_pt, weight, gamma)


def loss_cdf(losses: torch.Tensor, points: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's Figure 4: sort the examples by loss (smallest first), normalise the loss to sum to one,
    and return (fraction of examples, cumulative share of the loss) at `points` places."""
    loss = losses.double().sort().values
    if loss.numel() == 0 or loss.sum() == 0:
        raise ValueError("no examples (or all have zero loss): nothing to plot")
    cum = torch.cat([loss.new_zeros(1), loss.cumsum(0) / loss.sum()])
    fraction = torch.linspace(0, 1, points, dtype=torch.float64)
    index = (fraction * loss.numel()).round().long()
    return fraction, cum[index]


def easy_negative_share(samples: dict, gamma: float = 2.0, alpha: float | None = None) -> dict:
    """Shares of the total loss from positives, hard negatives and easy negatives (p_t > 0.5, i.e. p < 0.5)."""
    pos = example_losses(samples, "positives", gamma, alpha).sum()
    neg_logits = samples["neg_logits"]
    neg = example_losses(samples, "negatives", gamma, alpha)
    easy = neg[neg_logits < 0].sum()
    total = pos + neg.sum()
    return {"positives": float(pos / total), "hard_negatives": float((neg.sum() - easy) / total),
            "easy_negatives": float(easy / total), "num_easy_negatives": int((neg_logits < 0).sum()),
            "num_negatives": int(neg_logits.numel()), "num_positives": int(samples["pos_logits"].numel())}


def anchor_losses(samples: dict, method: str = "FL", gamma: float = 2.0, alpha: float | None = None,
                  ohem_ratio: int = 3) -> torch.Tensor:
    """Each anchor's loss (summed over its K classes) under one of METHODS, (B, A); 0 for ignored anchors.

    α (weight of the foreground term; background gets 1 - α): by default each method's best in the paper's
    Table 1, ALPHA_CE = 0.75 for α-balanced CE (Table 1 (a): 31.1 AP; α = 0.25 gives 10.8) and ALPHA_FL = 0.25
    for the focal loss with γ = 2 (Table 1 (b)).

    OHEM (as the paper's Table 1 (d) compares, without its NMS step): all positive anchors, and the
    `ohem_ratio` x N_pos background anchors of largest cross entropy in each image, count; the rest do not.
    """
    y, valid, ce, log_1m_pt = samples["onehot"], samples["valid"], samples["ce"], samples["log_1m_pt"]
    if alpha is None:
        alpha = ALPHA_CE if method == "α-balanced CE" else ALPHA_FL
    if method in ("CE", "OHEM 1:3"):
        per = focal_loss_from_terms(ce, log_1m_pt, 1.0, 0.0)  # CE: γ = 0, no α
    elif method == "α-balanced CE":
        per = focal_loss_from_terms(ce, log_1m_pt, alpha_t(y, alpha), 0.0)
    elif method == "FL":
        per = focal_loss_from_terms(ce, log_1m_pt, alpha_t(y, alpha), gamma)
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    loss = per.sum(-1) * valid  # (B, A)
    if method == "OHEM 1:3":
        loss = loss * ohem_keep(loss, samples["foreground"], valid, ohem_ratio)
    return loss


def ohem_keep(loss: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor | None = None, ratio: float = 3) -> torch.Tensor:
    """OHEM's selection (Table 1 (d), without its NMS step), per image: every positive, plus the
    ratio * max(1, P) negatives of largest loss (all of them if there are fewer). loss (B, A), positive (B, A) bool,
    valid (B, A) bool (False: not an example, never kept; None: all are). Returns the (B, A) bool mask of kept anchors."""
    if valid is None:
        valid = torch.ones_like(positive)
    neg_loss = torch.where(positive | ~valid, torch.full_like(loss, -1.0), loss)  # (B, A), -1: not a negative
    order = neg_loss.argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))  # 0 = largest loss
    quota = (positive.sum(1, keepdim=True) * ratio).clamp(min=ratio)  # at least a few negatives in empty images
    return positive | ((rank < quota) & (neg_loss >= 0))


def anchor_loss_shares(samples: dict, method: str = "FL", **kwargs) -> list[torch.Tensor]:
    """Each anchor's share of its image's total loss, painted per level: [(B, H_l, W_l)] summed over the A
    anchors of a location, so `sum over levels and locations = 1` for every image with any loss."""
    loss = anchor_losses(samples, method, **kwargs)
    share = loss / loss.sum(1, keepdim=True).clamp(min=1e-12)
    b, a_per = share.shape[0], samples["anchors"][0].shape[2]
    out, start = [], 0
    for h, w in samples["feature_sizes"]:
        n = h * w * a_per
        out.append(share[:, start:start + n].reshape(b, h, w, a_per).sum(-1))
        start += n
    return out
