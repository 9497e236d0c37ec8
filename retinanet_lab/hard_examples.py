"""Where the training signal goes: the loss of each anchor under cross entropy, α-balanced CE, OHEM and
the focal loss (paper section 3, Figure 4, and Table 1 (d)).

    s = anchor_samples(model, images, targets)        # the binary examples of a batch, from real outputs
    fraction, cumulative = loss_cdf(s["neg_logits"], 0, gamma=2.0)   # the paper's Figure 4 (right)
    easy_negative_share(s, gamma=2.0)                 # share of the loss from negatives with p_t > 0.5
    maps = anchor_loss_shares(s, method="ohem")       # each anchor's share of the loss, for an image view

Every (anchor, class) pair is one binary example: the true class of a foreground anchor is a positive,
every other class of a foreground anchor and every class of a background anchor is a negative, and
ignored anchors (IoU in [0.4, 0.5)) are not examples at all.
"""

from __future__ import annotations

import torch

from .focal_loss import focal_loss

__all__ = ["anchor_samples", "sample_losses", "loss_cdf", "easy_negative_share", "anchor_losses", "anchor_loss_shares",
           "METHODS"]

METHODS = ("CE", "α-balanced CE", "OHEM 1:3", "FL")


@torch.no_grad()
def anchor_samples(model, images, targets) -> dict:
    """The logits of every anchor of `images` (one forward pass of `model`) with their targets.

    Returns "logits" (B, A, K), "onehot" (B, A, K) 0/1 targets, "valid" (B, A) not ignored, "foreground" (B, A),
    "pos_logits" (N_pos,) and "neg_logits" (N_neg,) (the logits of the positive and negative examples, with
    target 1 and 0), plus the per-level "anchors", "feature_sizes", "image_sizes", "batch" of `model.inspect`.
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
    return {"logits": logits, "onehot": onehot, "valid": valid, "foreground": fg,
            "pos_logits": logits[examples & (onehot == 1)], "neg_logits": logits[examples & (onehot == 0)],
            "anchors": r["anchors"], "feature_sizes": r["feature_sizes"], "image_sizes": r["image_sizes"], "batch": r["batch"],
            "matched": r["matched"]}


def sample_losses(logits: torch.Tensor, target: float, gamma: float = 2.0, alpha: float | None = None) -> torch.Tensor:
    """The (focal) loss of examples that all have the same target (1: positives, 0: negatives)."""
    return focal_loss(logits, torch.full_like(logits, float(target)), alpha, gamma)


def loss_cdf(logits: torch.Tensor, target: float, gamma: float = 2.0, points: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's Figure 4: sort the examples by loss (smallest first), normalise the loss to sum to one,
    and return (fraction of examples, cumulative share of the loss) at `points` places."""
    loss = sample_losses(logits, target, gamma).double().sort().values
    if loss.numel() == 0 or loss.sum() == 0:
        raise ValueError("no examples (or all have zero loss): nothing to plot")
    cum = torch.cat([loss.new_zeros(1), loss.cumsum(0) / loss.sum()])
    fraction = torch.linspace(0, 1, points, dtype=torch.float64)
    index = (fraction * loss.numel()).round().long()
    return fraction, cum[index]


def easy_negative_share(samples: dict, gamma: float = 2.0, alpha: float | None = None) -> dict:
    """Shares of the total loss from positives, hard negatives and easy negatives (p_t > 0.5, i.e. p < 0.5)."""
    pos = sample_losses(samples["pos_logits"], 1, gamma, alpha).sum()
    neg_logits = samples["neg_logits"]
    neg = sample_losses(neg_logits, 0, gamma, alpha)
    easy = neg[neg_logits < 0].sum()
    total = pos + neg.sum()
    return {"positives": float(pos / total), "hard_negatives": float((neg.sum() - easy) / total),
            "easy_negatives": float(easy / total), "num_easy_negatives": int((neg_logits < 0).sum()),
            "num_negatives": int(neg_logits.numel()), "num_positives": int(samples["pos_logits"].numel())}


def anchor_losses(samples: dict, method: str = "FL", gamma: float = 2.0, alpha: float = 0.25, ohem_ratio: int = 3) -> torch.Tensor:
    """Each anchor's loss (summed over its K classes) under one of METHODS, (B, A); 0 for ignored anchors.

    OHEM (as the paper's Table 1 (d) compares, without its NMS step): all positive anchors, and the
    `ohem_ratio` x N_pos background anchors of largest cross entropy in each image, count; the rest do not.
    """
    x, y, valid = samples["logits"], samples["onehot"], samples["valid"]
    if method == "CE":
        per = focal_loss(x, y, None, 0.0)
    elif method == "α-balanced CE":
        per = focal_loss(x, y, alpha, 0.0)
    elif method == "FL":
        per = focal_loss(x, y, alpha, gamma)
    elif method == "OHEM 1:3":
        per = focal_loss(x, y, None, 0.0)
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    loss = per.sum(-1) * valid  # (B, A)
    if method == "OHEM 1:3":
        fg = samples["foreground"]
        neg_loss = torch.where(fg | ~valid, torch.full_like(loss, -1.0), loss)
        keep = torch.zeros_like(fg)
        order = neg_loss.argsort(dim=1, descending=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
        quota = (fg.sum(1, keepdim=True) * ohem_ratio).clamp(min=ohem_ratio)  # at least a few negatives in empty images
        keep = fg | ((rank < quota) & (neg_loss >= 0))
        loss = loss * keep
    return loss


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
