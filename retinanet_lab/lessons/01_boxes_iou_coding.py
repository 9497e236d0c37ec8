# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Boxes, IoU and box coding
#
# - **Objectives.** After this lesson you can compute the IoU of every pair of boxes of two sets without a loop,
#   encode a
#   box relative to an anchor as (dx, dy, dw, dh), decode it back, and say why the box subnet predicts these four
#   numbers rather than corners.
# - **Prerequisites.** Lesson 00; PyTorch tensors, slicing and broadcasting (`a[:, None] - b[None, :]`).
# - **Time.** 35 min in class
# - **Runs in.** 5 s on a 2-core laptop CPU
# - **Paper.** §4, "Anchors" (IoU thresholds) and "Box Regression Subnet" ("the standard box parameterization from
#   R-CNN [11]").

# %% [markdown]
# A box is `(x1, y1, x2, y2)` in pixels: its top-left and bottom-right corners, with x to the right and y *down*. Two
# ideas carry all of RetinaNet's geometry:
#
# * **IoU**, intersection over union, says how well two boxes agree: the area they share divided by the area they
#   cover together; 1 for the same box, 0 for boxes that do not overlap. Anchors are matched to objects by IoU
#   (lesson 03), and detections are judged by it (lesson 07).
# * **Box coding.** The box subnet does not predict boxes: for each anchor it predicts how to move and stretch the
#   anchor onto the object,
#
#   $$d_x = \frac{x - x_a}{w_a}, \quad d_y = \frac{y - y_a}{h_a}, \quad d_w = \log\frac{w}{w_a}, \quad d_h =
#   \log\frac{h}{h_a}$$
#
#   where $(x, y)$ and $(x_a, y_a)$ are the **centres** of the box and of the anchor, and $w, h$ and $w_a, h_a$ their
#   widths and heights. A shift is measured in units of the anchor's size and a change of size as a log ratio, so the
#   targets are small numbers around 0 for a 16 px anchor as for a 512 px one: easy to regress with one set of
#   weights shared by all pyramid levels (the feature maps at several resolutions on which anchors sit, lesson 03).
#   The paper takes this parameterization from R-CNN (§4).
#
# Module: `retinanet_lab/boxes.py`.

# %%
# NBVAL_CHECK_OUTPUT
import torch

from retinanet_lab import box_iou, decode_boxes, encode_boxes
from retinanet_lab.viz import classroom_style

classroom_style()  # sharp figures, readable text

a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
b = torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
print("IoU of a with each box of b:", [f"{v:.4f}" for v in box_iou(a, b)[0].tolist()])

# %% [markdown]
# The first pair overlaps in a 5 × 10 strip: 50 px² shared, 100 + 100 − 50 = 150 px² covered, IoU = 1/3. Now an anchor
# and an object, their deltas, and the box the deltas decode to:

# %%
import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

anchor = torch.tensor([[40.0, 40.0, 104.0, 104.0]])  # a 64 x 64 anchor, centre (72, 72)
gt = torch.tensor([[52.0, 30.0, 140.0, 96.0]])  # the object: 88 x 66, centre (96, 63)
deltas = encode_boxes(gt, anchor)
print("deltas (dx, dy, dw, dh):", [round(v, 3) for v in deltas[0].tolist()])
fig, ax = plt.subplots(figsize=(4, 4))
for box, style, label, colour in ((anchor[0], ":", "anchor", "grey"), (gt[0], "-", "object", "green"),
                                  (decode_boxes(deltas, anchor)[0], "--", "decoded", "red")):
    x1, y1, x2, y2 = box.tolist()
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ls=style, lw=2, label=label, ec=colour))
ax.set_xlim(0, 160)
ax.set_ylim(160, 0)
ax.legend()
ax.set_title("decode(encode(box)) = box");

# %% [markdown]
# Read the deltas: the object's centre is 24 px right of the anchor's, 24 / 64 = 0.375 anchor widths (dx); 9 px up,
# −9 / 64 = −0.141 (dy is negative: y grows downwards); it is 88 / 64 = 1.375 times as wide, log 1.375 = 0.318 (dw); and
# 66 / 64 times as tall, log 1.031 = 0.031 (dh).

# %% [markdown]
# ## Exercise: IoU
#
# Write `my_iou(boxes1, boxes2)`. `boxes1` is an `(N, 4)` tensor and `boxes2` an `(M, 4)` tensor of boxes given by their
# corners `(x1, y1, x2, y2)` in pixels (width = `x2 - x1`, height = `y2 - y1`, no "+1"). Return the `(N, M)` tensor
# whose
# entry `[i, j]` is the IoU of `boxes1[i]` and `boxes2[j]`:
#
# $$\mathrm{IoU} = \frac{\text{area of the intersection}}{\text{area of the union}}, \qquad
# \text{union} = \text{area}_1 + \text{area}_2 - \text{intersection}$$
#
# Boxes that do not overlap have IoU 0. Write it without a Python loop: index `boxes1[:, None, :]` and
# `boxes2[None, :, :]` so that they broadcast to `(N, M, ...)`. This is how RetinaNet labels its anchors (section 4):
# an anchor is assigned to an object when their IoU is at least 0.5, to the background below 0.4, and ignored in
# between.

# %% tags=["exercise"]
import torch

from retinanet_lab.exercises import check_iou

def my_iou(boxes1, boxes2):
    """IoU of every box of boxes1 (N, 4) with every box of boxes2 (M, 4), boxes as (x1, y1, x2, y2) -> (N, M)"""
    ### BEGIN SOLUTION
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])   # (N,)
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])   # (M,)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])      # (N, M, 2): the intersection's (x1, y1)
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2): its (x2, y2)
    wh = (bottom_right - top_left).clamp(min=0)                             # (N, M, 2): width, height; 0 if apart
    inter = wh[..., 0] * wh[..., 1]                                         # (N, M)
    union = area1[:, None] + area2[None, :] - inter                         # (N, M)
    return inter / union
    ### END SOLUTION

print(check_iou(my_iou))

# %% [markdown]
# ## Exercise: box encoding
#
# The box subnet does not predict boxes: for each anchor it predicts four numbers that move the anchor onto the object,
# the box parameterization of R-CNN that RetinaNet uses (section 4). With `(x, y)` a box's centre, `(w, h)` its width
# and height, and the subscript `a` for the anchor:
#
# $$d_x = \frac{x - x_a}{w_a}, \qquad d_y = \frac{y - y_a}{h_a}, \qquad d_w = \log\frac{w}{w_a}, \qquad d_h = \log\frac{h}{h_a}$$
#
# Write `my_encode_boxes(gt_boxes, anchors)`: both are `(N, 4)` tensors of corners `(x1, y1, x2, y2)` (width = `x2 -
# x1`,
# no "+1"), row `i` of `gt_boxes` being the object assigned to anchor `i`. Return the `(N, 4)` tensor of
# `(dx, dy, dw, dh)`, one row per anchor. Dividing by the anchor's size makes the targets scale-free (a shift of a
# quarter of the anchor's width is dx = 0.25 on a 16 px anchor as on a 512 px one); the log makes "twice as wide"
# (+0.69) and "half as wide" (-0.69) symmetric.

# %% tags=["exercise"]
import torch

from retinanet_lab.exercises import check_encode_boxes

def my_encode_boxes(gt_boxes, anchors):
    """(dx, dy, dw, dh) moving anchors[i] onto gt_boxes[i]; both (N, 4) as (x1, y1, x2, y2) -> (N, 4)"""
    ### BEGIN SOLUTION
    aw = anchors[:, 2] - anchors[:, 0]           # (N,) anchor widths
    ah = anchors[:, 3] - anchors[:, 1]           # (N,) anchor heights
    ax = anchors[:, 0] + 0.5 * aw                # (N,) anchor centres
    ay = anchors[:, 1] + 0.5 * ah
    gw = gt_boxes[:, 2] - gt_boxes[:, 0]         # (N,) object widths, heights and centres
    gh = gt_boxes[:, 3] - gt_boxes[:, 1]
    gx = gt_boxes[:, 0] + 0.5 * gw
    gy = gt_boxes[:, 1] + 0.5 * gh
    dx = (gx - ax) / aw                          # the centre's shift in anchor widths ...
    dy = (gy - ay) / ah                          # ... and in anchor heights
    dw = torch.log(gw / aw)                      # the log of the size ratios
    dh = torch.log(gh / ah)
    return torch.stack([dx, dy, dw, dh], dim=1)  # (N, 4): one row per anchor
    ### END SOLUTION

print(check_encode_boxes(my_encode_boxes))

# %% [markdown]
# ## Exercise: box decoding
#
# At inference the box subnet's four numbers are applied to their anchor to give the predicted box (section 4.1):
# decoding inverts encoding. With `(x_a, y_a)` the anchor's centre and `(w_a, h_a)` its width and height:
#
# $$x = x_a + d_x\, w_a, \qquad y = y_a + d_y\, h_a, \qquad w = w_a\, e^{d_w}, \qquad h = h_a\, e^{d_h}$$
#
# and the box's corners are `(x - w/2, y - h/2, x + w/2, y + h/2)`.
#
# Write `my_decode_boxes(deltas, anchors)`: `deltas` is `(N, 4)` as `(dx, dy, dw, dh)`, `anchors` is `(N, 4)` as corners
# `(x1, y1, x2, y2)`; row `i` of `deltas` applies to anchor `i`. Return the `(N, 4)` boxes as corners `(x1, y1, x2,
# y2)`.
# (The package's `decode_boxes` also clamps `dw` and `dh` at log(1000/16) so that `exp` cannot overflow on a wild
# prediction; you may leave that out here.)

# %% tags=["exercise"]
import torch

from retinanet_lab.exercises import check_decode_boxes

def my_decode_boxes(deltas, anchors):
    """boxes (N, 4) as (x1, y1, x2, y2): anchors (N, 4) moved by deltas (N, 4) = (dx, dy, dw, dh)"""
    ### BEGIN SOLUTION
    aw = anchors[:, 2] - anchors[:, 0]          # (N,) anchor widths and heights
    ah = anchors[:, 3] - anchors[:, 1]
    ax = anchors[:, 0] + 0.5 * aw               # (N,) anchor centres
    ay = anchors[:, 1] + 0.5 * ah
    dx, dy, dw, dh = deltas.unbind(dim=1)       # (N,) each
    x = ax + dx * aw                            # the centre moves in anchor units
    y = ay + dy * ah
    w = aw * torch.exp(dw)                      # dw and dh are logs of the size ratios
    h = ah * torch.exp(dh)
    return torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], dim=1)  # (N, 4)
    ### END SOLUTION

print(check_decode_boxes(my_decode_boxes))

# %% [markdown]
# ## Recap
#
# * Boxes are corners `(x1, y1, x2, y2)`; IoU = intersection / union, computed for every pair at once by broadcasting
#   an `(N, 1, 2)` against a `(1, M, 2)` tensor, with the intersection's width and height clamped at 0.
# * The box subnet predicts (dx, dy, dw, dh): centre shifts in units of the anchor's width and height, size changes as
#   log ratios. Decoding inverts it: centre + d·size, size · exp(d).

# %% [markdown] tags=["questions"]
# ### Questions to think about
#
# 1. Why is dw a log ratio, `log(w / w_a)`, rather than the plain difference `w - w_a` or the ratio `w / w_a`?
# 2. Shift a 10 × 10 box and a 100 × 100 box each by 2 pixels to the right. What is the IoU with the unshifted box in
#    each case? What does that say about detecting small objects with an IoU threshold of 0.5?
# 3. Why are dx and dy divided by the *anchor's* width and height, and not by the object's?

# %% [markdown] tags=["teacher"]
# ### Answers (lesson 01)
#
# 1. A ratio is what matters for size (an anchor 10% too small is as wrong at 32 px as at 512 px), and the log makes
#    the target symmetric and unbounded: twice as big is +log 2, half as big is −log 2, the same size is 0, and any
#    real number the subnet outputs decodes to a positive width (exp is always > 0). A difference in pixels would be
#    tiny on P3 and huge on P7 for the same relative error.
# 2. 10 × 10 shifted by 2: intersection 8 × 10 = 80, union 120, IoU 0.667. 100 × 100 shifted by 2: 98 × 100 = 9800,
#    union 10200, IoU 0.961. A few pixels cost a small object a large part of its IoU: anchors and predicted boxes must
#    be far more precise, in pixels, for small objects. On COCO APs is by far the lowest of the three (Table 1 (e),
#    ResNet-50 at 800 px: APS 18.9, APM 38.9, APL 46.3).
# 3. At inference only the anchor is known: the subnet sees the anchor's location and must output numbers from which
#    the box can be computed. Dividing by the object's size would make decoding need the answer first.
#
# ### Teacher's notes: lesson 01
#
# **Before class.** Nothing to run ahead: the lesson runs in seconds. Have the paper open at §4 ("Anchors", "Box
# Regression Subnet") and a sheet of squared paper for drawing two boxes and their intersection.
#
# **In class.** Let students write IoU first (15 min). The check's hand-made cases go one idea at a time: a box with
# itself, boxes that do not overlap, boxes apart in both directions (the clamp must be on each side, not on the
# product), boxes touching along an edge, half overlap, a box inside another, a box over a corner; then 4 × 3 boxes
# (every pair: broadcasting) and 7 × 5 random boxes. Then encoding (10 min) and decoding (10 min). The decoding
# check also encodes the student's boxes and compares them with the deltas: decode must invert encode.
#
# **Misconceptions.** (x, y) in the formulas are *centres*, not corners. Width is `x2 - x1`, without the "+1 pixel"
# that old VOC code and Detectron used for integer pixel boxes. dy is divided by the anchor's *height*. "IoU is not
# symmetric": it is; the intersection over the smaller box (sometimes used for occlusion) is not IoU.
#
# **Worth saying.** torchvision and Detectron clamp dw and dh at log(1000 / 16) ≈ 4.1 before the exp when decoding
# (`BBOX_CLIP` in `boxes.py`); that guard is theirs, not the paper's.
