"""What a RetinaNet is made of, as tables: per-level shapes and anchor counts, parameter counts per
part, and the effect of the prior-probability bias on the first loss (paper section 4.1)."""

from __future__ import annotations

import torch

from .model import RetinaNet

__all__ = ["level_table", "parameter_table", "initial_loss", "initial_losses", "format_table"]


def level_table(model: RetinaNet, height: int = 512, width: int = 512) -> list[dict]:
    """One row per pyramid level for an input of the given size: stride, feature map, anchors, outputs."""
    was_training = model.training
    model.eval()
    r = model.inspect([torch.zeros(3, height, width, device=next(model.parameters()).device)])
    model.train(was_training)
    rows = []
    for level, (h, w), (sy, sx), anchors in zip(r["levels"], r["feature_sizes"], r["strides"], r["anchors"]):
        sizes = model.anchor_config.level_sizes(r["levels"].index(level))
        rows.append(dict(level=f"P{level}", stride=f"{sy}x{sx}" if sy != sx else sy, feature=f"{h}x{w}",
                         anchor_sizes="/".join(f"{s:g}" for s in sizes), anchors=anchors.shape[0] * anchors.shape[1] * anchors.shape[2],
                         cls_outputs=h * w * model.anchor_config.num_anchors * model.num_classes))
    return rows


def parameter_table(model: RetinaNet) -> list[dict]:
    """Parameter counts of backbone, FPN and the two subnets (trainable and total)."""
    rows = []
    for name in ("backbone", "fpn", "class_subnet", "box_subnet"):
        params = list(getattr(model, name).parameters())
        rows.append(dict(part=name, parameters=sum(p.numel() for p in params),
                         trainable=sum(p.numel() for p in params if p.requires_grad)))
    rows.append(dict(part="total", parameters=sum(r["parameters"] for r in rows), trainable=sum(r["trainable"] for r in rows)))
    return rows


def initial_loss(model: RetinaNet, images, targets, prior_prob: float) -> dict[str, float]:
    """The loss of the model's first step if its classification bias were set for prior π."""
    from .heads import prior_bias

    bias = model.class_subnet.logits.bias
    saved = bias.detach().clone()
    with torch.no_grad():
        bias.fill_(prior_bias(prior_prob))
        losses = model.inspect(images, targets)["losses"]
        bias.copy_(saved)
    return {k: float(v) for k, v in losses.items()}


def initial_losses(model: RetinaNet, images, targets, priors) -> dict[float, float]:
    """`initial_loss`'s classification term for many π from one forward pass: the bias is added after the last
    convolution, so setting it to b(π) shifts every logit by b(π) - (its current bias), and only the focal loss
    has to be recomputed, by the function training uses (`loss.classification_loss_per_image`, normalised as
    the model's loss is)."""
    from .heads import prior_bias
    from .loss import classification_loss_per_image, normalize_loss

    r = model.inspect(images, targets)
    b, a, k = len(images), model.anchor_config.num_anchors, model.num_classes
    logits = torch.cat([c.reshape(b, -1, a, k) for c in r["cls_logits"]], dim=1).float()  # (B, L, A, K) all levels
    base = logits - model.class_subnet.logits.bias.detach().float().view(a, k)  # (B, L, A, K) without the bias
    matched = torch.cat([m.reshape(b, -1) for m in r["matched"]], dim=1)  # (B, L·A)
    num_fg = (matched >= 0).sum(dim=1)  # (B,)
    alpha, gamma, normalization = model.focal_alpha, model.focal_gamma, model.loss_normalization
    out = {}
    with torch.no_grad():
        for p in priors:
            x = (base + prior_bias(p)).view(b, -1, k)  # (B, L·A, K)
            per_image = classification_loss_per_image(x, matched, r["gt_labels"], alpha, gamma)  # (B,)
            out[p] = float(normalize_loss(per_image, num_fg, normalization))
    return out


def format_table(rows: list[dict]) -> str:
    """Plain-text table of dict rows (for terminals and notebooks)."""
    if not rows:
        return ""
    cols = list(rows[0])
    cells = [[f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
