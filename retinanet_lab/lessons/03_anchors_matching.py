# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Anchors and matching
#
# - **Objectives.** After this lesson you can list the anchors RetinaNet places on each pyramid level, compute their
#   widths and heights, label every anchor foreground, background or ignored from an IoU matrix, count the imbalance
#   this creates, and check whether a dataset's objects are covered by the anchors.
# - **Prerequisites.** Lesson 01 (IoU); lesson 02 (why the imbalance matters).
# - **Time.** 40 min in class
# - **Runs in.** 15 s on a 2-core laptop CPU
# - **Paper.** §4 "Anchors" and "Feature Pyramid Network Backbone"; §5.2 "Anchor Density" (Table 1 (c)); the RPN rule
#   it builds on
#   (Faster R-CNN §3.1.2).

# %% [markdown]
# RetinaNet places **A = 9 anchors at every location of every pyramid level** P3 to P7 (§4, "Anchors"). Level P_l has a
# stride of 2^l pixels (P3: 8 px, ..., P7: 128 px), and its anchors have an area of 32² on P3 up to 512² on P7, each at
# three scales {2^0, 2^(1/3), 2^(2/3)} and three aspect ratios {1:2, 1:1, 2:1}: "across levels they cover the scale
# range 32 - 813 pixels with respect to the network's input image". Here is every level for a 512 × 512 input:

# %%
# NBVAL_CHECK_OUTPUT
from retinanet_lab import RetinaNet
from retinanet_lab.anatomy import format_table, level_table

paper = RetinaNet(num_classes=80, backbone="resnet18", min_size=512, max_size=512)  # the paper's anchors, a light backbone
print(format_table(level_table(paper, 512, 512)))

# %% [markdown]
# 49,104 anchors for a 512 px square image; at the paper's ablation scale (600 px, a 600 × 800 image) about 90,000, the
# "∼100k anchors" of §4.1. The sizes printed are torchvision's, truncated to whole pixels (40, 50, 101, ...); the paper
# uses the exact 32 · 2^(1/3) = 40.3 and so on. Aspect ratio here means **height / width**: 0.5 is a wide anchor.

# %% [markdown]
# ### Exercise: the anchors of one pyramid level
#
# On each pyramid level the paper places anchors of one base size (32 px on P3 ... 512 px on P7), at three
# scales {2^0, 2^(1/3), 2^(2/3)} and three aspect ratios {1:2, 1:1, 2:1}: A = 9 anchors per location (section 4,
# "Anchors"). Write `my_anchor_shapes(size, scales, aspect_ratios)` that returns the **width and height** of every
# anchor of one location, as a tensor of shape `(len(aspect_ratios) * len(scales), 2)` with columns `(w, h)`:
#
# - one anchor for **every combination** of a scale and an aspect ratio;
# - the anchor at scale `s` has **area (size · s)²** (the scale multiplies the side, not the area);
# - the aspect ratio is **height / width** (torchvision's convention and this package's): ratio 2 is a tall anchor;
# - no rounding and no truncation (32 · 2^(1/3) = 40.32, not 40). Rows may come in any order.
#
# `size` is a float, `scales` and `aspect_ratios` are tuples of floats; return a float tensor.
#
# Hint: with area a² and h / w = r, w = a / √r and h = a · √r.

# %% tags=["exercise"]
import torch

from retinanet_lab.exercises import check_anchor_shapes

def my_anchor_shapes(size, scales, aspect_ratios):
    """(width, height) of the len(aspect_ratios) * len(scales) anchors of one level: tensor (A, 2)"""
    ### BEGIN SOLUTION
    sides = size * torch.tensor(scales, dtype=torch.float32)    # (S,) each anchor's side: sqrt of its area
    ratios = torch.tensor(aspect_ratios, dtype=torch.float32)  # (R,) height / width
    w = sides[None, :] / ratios.sqrt()[:, None]                 # (R, S): w * h = side², h / w = ratio
    h = sides[None, :] * ratios.sqrt()[:, None]                 # (R, S)
    return torch.stack([w.reshape(-1), h.reshape(-1)], dim=1)   # (R * S, 2), ratio-major as torchvision
    ### END SOLUTION

print(check_anchor_shapes(my_anchor_shapes))

# %% [markdown]
# ## Matching: which anchor learns which object
#
# Each anchor is compared with every object box by IoU and takes the box it overlaps most (§4, "Anchors"):
#
# * best IoU **≥ 0.5**: **foreground**. It learns that box's class (a one-hot target) and regresses onto that box.
# * best IoU **< 0.4**: **background**. Its targets are 0 for every class, and it has no box to regress.
# * **in between**: **ignored**. No loss at all: an anchor half on an object is neither a clear yes nor a clear no.
#
# A fourth rule, on by default in this lab as in torchvision and Detectron: every object also **claims the anchor(s) it
# overlaps most** (ties included), even below 0.5, so that (almost) no object is left without a positive anchor. Such
# a "low-quality match" becomes foreground, matched to *its own* best box: where two objects overlap heavily and claim
# the same anchor, it goes to the one it overlaps more, and the other can still end up with none (rare in the shapes
# world: 0 of 942 objects in 300 images; 12 of 400 pairs of boxes drawn almost on top of each other). The paper's text
# states only the 0.5 / 0.4 thresholds; it says it uses "the assignment rule from RPN [28] but modified for multiclass
# detection and with adjusted thresholds", and that RPN rule has this condition. Detectron keeps such a match only if
# its IoU is at least 0.4 (background is assigned after it). torchvision keeps it at any IoU, even 0: a box that
# overlaps no anchor at all then claims every anchor. This lab keeps it at any IoU above 0.
#
# Modules: `retinanet_lab/anchors.py`, `retinanet_lab/matching.py`.

# %% [markdown]
# ### Exercise: foreground, background or ignored
#
# Each anchor is assigned to the ground-truth box it overlaps most (section 4, "Anchors"): it is **foreground**
# if that IoU is ≥ 0.5, **background** if it is < 0.4, and **ignored** in between (no loss at all: neither a
# positive nor a negative). With `allow_low_quality=True`, the fourth rule above: every box also claims the
# anchor(s) it overlaps most (ties included), even below 0.5, provided that IoU is > 0; a claimed anchor becomes
# foreground, matched to **its own best box** (as torchvision's `Matcher` does).
#
# Write `my_assign_anchors(iou, fg_iou=0.5, bg_iou=0.4, allow_low_quality=True)`: `iou` is the `(G, A)` IoU of
# every box (rows) with every anchor (columns); return an int64 tensor `(A,)` holding, for each anchor, the index
# of its box (0..G-1) if it is foreground, `-1` (background) or `-2` (ignored). An image without boxes (G = 0):
# every anchor is background.

# %% tags=["exercise"]
import torch

from retinanet_lab.exercises import check_assign_anchors

def my_assign_anchors(iou, fg_iou=0.5, bg_iou=0.4, allow_low_quality=True):
    """Each anchor's box index, -1 (background) or -2 (ignored), from the (G, A) IoU: int64 tensor (A,)"""
    ### BEGIN SOLUTION
    num_boxes, num_anchors = iou.shape
    if num_boxes == 0:                                            # no box: every anchor is background
        return torch.full((num_anchors,), -1, dtype=torch.int64)
    best_iou, best_box = iou.max(dim=0)                           # (A,) each: every anchor's best box
    index = torch.full((num_anchors,), -2, dtype=torch.int64)     # ignored unless decided otherwise
    index[best_iou >= fg_iou] = best_box[best_iou >= fg_iou]      # foreground: its best box's index
    index[best_iou < bg_iou] = -1                                 # background
    if allow_low_quality:
        best_per_box = iou.max(dim=1, keepdim=True).values        # (G, 1): each box's highest IoU
        claims = (iou == best_per_box) & (best_per_box > 0)       # (G, A): each box's best anchor(s), ties included
        claimed = claims.any(dim=0)                               # (A,)
        index[claimed] = best_box[claimed]                        # matched to the anchor's own best box
    return index
    ### END SOLUTION

print(check_assign_anchors(my_assign_anchors))

# %% [markdown]
# ## Explore: which anchors does each box claim?
#
# Move a box, change the sizes or ratios, raise the thresholds. *(Static pictures in this notebook are what the widgets
# showed when it was saved; run the notebook in JupyterLab, or `voila` it, to move the sliders.)*

# %%
from retinanet_lab.widgets import AnchorExplorer

AnchorExplorer()

# %% [markdown]
# ## The imbalance, counted
#
# Over 50 images of the classroom's shapes world, how many negatives are there per positive? The classroom setting is
# smaller than the paper's: 160 px images, and anchors halved to fit them (16 to 256 px on P3 to P7, the same scales
# and ratios).

# %%
# NBVAL_CHECK_OUTPUT
from retinanet_lab.data import ShapesDataset
from retinanet_lab.presets import preset
from retinanet_lab.widgets.anchors import assign_anchors

cfg = preset("classroom")
data = ShapesDataset(50, seed=4_000_000, **cfg["data"])
fg = ig = bg = 0
for i in range(len(data)):
    a = assign_anchors((160, 160), data[i][1]["boxes"], cfg["model"]["anchors"])
    fg, ig, bg = fg + a["foreground"], ig + a["ignored"], bg + a["background"]
print(f"per image: {fg / 50:.1f} positive, {ig / 50:.1f} ignored, {bg / 50:,.1f} negative anchors: "
      f"{bg / fg:,.0f} negatives per positive (and each anchor has 5 class outputs)")

# %% [markdown]
# Every anchor has one output per class, each a binary example: with 5 classes a foreground anchor gives 1 positive and
# 4 negatives, and a background anchor 5 negatives, so about 900 negative examples per positive here. At the paper's
# scale it is far more: ∼100k anchors × 80 COCO classes per image for a few dozen positives, the "1:1000" of §3
# and beyond. That is the imbalance the focal loss (lesson 02) and the prior (lesson 05) are for.
#
# ## Do the anchors fit the objects?
#
# An object that no anchor overlaps at IoU ≥ 0.5 is learned only through its low-quality match, from an anchor that
# fits it poorly. `anchor_coverage` (also `retinanet-lab anchors` on a dataset) reports the share of objects covered,
# by size and aspect ratio, and suggests anchors that fit better. Below: 150 shapes images (objects stretched at most
# from 1:2 to 2:1) against the classroom anchors.

# %%
from retinanet_lab.coverage import anchor_coverage, format_coverage

report = anchor_coverage(ShapesDataset(150, seed=1, **cfg["data"]), cfg["model"]["anchors"], min_size=160, max_size=160)
print(format_coverage(report))

# %% [markdown]
# Nearly every shape is covered: the shapes world was drawn to fit. Tall objects (people, bottles, poles) are another
# matter. Below, 300 boxes five times taller than wide (h : w = 5 : 1) against the paper's three ratios (h / w = 0.5, 1
# and 2) and against ratios that add h / w = 4:

# %%
# NBVAL_CHECK_OUTPUT
import math

import torch

from retinanet_lab.anchors import AnchorConfig
from retinanet_lab.coverage import object_best_ious

g = torch.Generator().manual_seed(0)
w = torch.exp(torch.empty(300).uniform_(math.log(16), math.log(100), generator=g))
x, y = torch.rand(300, generator=g) * 300, torch.rand(300, generator=g) * 10
tall = torch.stack([x, y, x + w, y + 5 * w], dim=1)
for ratios in ((0.5, 1.0, 2.0), (0.5, 1.0, 2.0, 4.0)):
    best = object_best_ious([(tall, (512, 512))], AnchorConfig(aspect_ratios=ratios))
    print(f"ratios h/w {ratios}: {(best >= 0.5).float().mean():.0%} of the 5:1 objects have an anchor at IoU >= 0.5")

# %% [markdown]
# No 5:1 box reaches IoU 0.5 with a 2:1 anchor of any size: a 2:1 box centred on a 5:1 box overlaps it at IoU 0.46 at
# best (0.47 with torchvision's rounded anchors: still below 0.5). Adding one ratio fixes it (at the cost of 3 more
# anchors per location, one per scale: A = 12). The paper's Table 1 (c) (§5.2) shows what anchor density buys on COCO:
# 30.3 AP with one square anchor, 34.0 with 3 scales and 3
# ratios.

# %% [markdown]
# ## Recap
#
# * 9 anchors per location (3 scales × 3 aspect ratios) on P3 to P7, 32 to 813 px; about 90k per image at the
#   ablations' 600 px (the paper's "∼100k").
# * Best IoU ≥ 0.5: foreground; < 0.4: background; between: ignored. Each object also claims its best anchor(s)
#   (the RPN rule, on by default here).
# * Hundreds to thousands of negative examples per positive: the imbalance of §3. Objects whose shape no anchor fits
#   get only low-quality matches: check coverage before training on a new dataset.

# %% [markdown] tags=["questions"]
# ### Questions to think about
#
# 1. Why does RetinaNet ignore anchors with IoU between 0.4 and 0.5 instead of calling them background?
# 2. An image has no objects at all. What are its anchors' labels, and what does that image contribute to the loss?
# 3. With low-quality matches turned off, which objects of the shapes world would have no positive anchor, and what
#    would
#    the detector learn about them?

# %% [markdown] tags=["teacher"]
# ### Answers (lesson 03)
#
# 1. An anchor at IoU 0.45 covers a good part of an object: training it to say "background" would punish the model for
#    a reasonable answer and blur the boundary between classes of anchors. The gap gives a clear yes (≥ 0.5) and a clear
#    no (< 0.4); the ambiguous ones are left out of the classification loss.
# 2. All background. Its classification loss is the sum over all its anchors' negatives, and no box loss. With the
#    per-image rule of the paper's text and torchvision that sum is divided by max(1, 0) = 1; with this lab's default
#    per-batch rule (Detectron's) it joins the batch's sum, divided by the whole batch's foreground count (lesson 08).
#    Such images teach the model what background looks like; they are
#    not an error (a dataset of your own may have many).
# 3. Objects whose best anchor has IoU < 0.5: in the coverage report, the few with best IoU 0.4-0.5 (and, with tall
#    objects, all of them). They would have no positive anchor; anchors near them would be ignored or background, so
#    the model would learn to call them background.
#
# ### Teacher's notes: lesson 03
#
# **Before class.** Nothing to run ahead (about 15 s). Open §4 "Anchors" and Table 1 (c).
#
# **The live demo.** In the anchor explorer, drag the box slowly across a level's stride: foreground anchors jump from
# one location to the next, and a box between two anchor sizes gets few positives. Raise the foreground threshold to
# 0.7 (RPN's) and watch positives disappear; the low-quality match keeps at least one (unless another box overlapping
# the same anchor more takes it).
#
# **The exercises** (20 min). Anchor shapes: the check uses asymmetric ratio sets (1 and 4, 0.25, 1 and 3), so
# inverting the ratio (w / h instead of h / w) fails. Matching: the cases test exactly 0.5 (foreground: ≥), exactly
# 0.4 (ignored: 0.4 is not < 0.4), argmax over the right axis, ties, an image without boxes, and a box that overlaps
# nothing (it claims no anchor).
#
# **Misconceptions.** "An anchor matches every object it overlaps": one object at most, its best. "Ignored means
# background": ignored anchors get no classification loss at all. "Aspect ratio 2 is a wide anchor": here ratio =
# height / width, so 2 is tall (torchvision's convention). "Anchor sizes are in pixels of the original photo": they are
# in pixels of the network's input, after resizing.
