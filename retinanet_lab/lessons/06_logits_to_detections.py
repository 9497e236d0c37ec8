# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. From logits to detections, step by step
#
# - **Objectives.** After this lesson you can turn a detector's raw outputs into detections: threshold the scores,
#   keep the top candidates of each level, decode their boxes and remove duplicates with non-maximum suppression; and
#   you can write the candidate selection and NMS yourself.
# - **Prerequisites.** Lesson 01 (IoU, decoding), lesson 03 (anchors per level), lesson 05 (K·A sigmoid outputs).
# - **Time.** 35 min in class
# - **Runs in.** 10 s on a 2-core laptop CPU
# - **Paper.** §4.1 "Inference".

# %% [markdown]
# The paper's inference, in full (§4.1): *"To improve speed, we only decode box predictions from at most 1k top-scoring
# predictions per FPN level, after thresholding detector confidence at 0.05. The top predictions from all levels are
# merged and non-maximum suppression with a threshold of 0.5 is applied to yield the final detections."*
#
# 1. **Threshold**: every (anchor, class) output is a candidate with score σ(logit); keep those above 0.05.
# 2. **Top-k per level**: keep at most the 1000 best of each level.
# 3. **Decode** their boxes from their anchors (lesson 01) and clip them to the image (the clipping is Detectron's and
#    torchvision's; the paper does not mention it).
# 4. **Non-maximum suppression (NMS)**: neighbouring anchors often detect the same object. NMS is greedy: take the
#    highest-scoring box, remove every remaining box that overlaps it with IoU above 0.5, take the next highest box
#    still there, and so on.
#
# Two choices the paper does not state are Detectron's (the paper's own code), and this lab follows them: NMS runs
# **per class** (a circle does not suppress an overlapping square), and at most the **100** best detections per image
# are kept (COCO's limit; torchvision keeps 300). The widget runs the classroom model once and replays each stage.
# Module: `retinanet_lab/postprocess.py`. *(Static pictures in this notebook are what the widgets showed when it was
# saved; run the notebook in JupyterLab, or `voila` it, to move the sliders.)*

# %%
from retinanet_lab.widgets import LogitsToDetections

steps = LogitsToDetections()
steps

# %% [markdown]
# The same stages as numbers: the outputs of one image (4,842 anchors × 5 classes), those above the threshold, after the
# top-k cap and after NMS:

# %%
print(steps.counts)

# %% [markdown]
# On a 160 px image with 5 classes the 1000-per-level cap never binds: the threshold leaves a few hundred candidates.
# It matters at the paper's scale, where ∼100k anchors × 80 classes give millions of outputs per image. Last, a check
# that the step-by-step version gives exactly the model's own detections:

# %%
# NBVAL_CHECK_OUTPUT
import torch

model, image = steps.model, steps.image
model.score_thresh = steps.score_thresh.value
with torch.no_grad():
    fast = model([image])[0]
mine = steps.steps["detections"]
same = torch.allclose(steps._original(mine["boxes"]), fast["boxes"], atol=1e-4) and torch.equal(mine["labels"], fast["labels"])
print("step by step == model(image):", same)

# %% [markdown]
# ### Exercise: from logits to candidates
#
# The classification subnet gives one logit per anchor and class. At inference, on each pyramid level, RetinaNet
# keeps "at most 1000 top-scoring predictions per FPN level, after thresholding detector confidence at 0.05"
# (section 4.1, "Inference"); only these are decoded into boxes. Write
# `my_select_candidates(logits, score_thresh=0.05, topk=1000)` for one image and one level:
#
# - `logits` is `(A, K)`: A anchors, K classes; the **score** of (anchor a, class k) is σ(logits[a, k]);
# - every (anchor, class) pair competes: flatten the `A·K` scores (one anchor may give two detections of two
#   classes); keep those with score **> score_thresh**, the best first, at most `topk` of them;
# - return a tuple `(scores, anchor_index, class_index)` of three `(N,)` tensors: the scores (probabilities, not
#   logits), and the anchor and the **0-based** class of each candidate (integer tensors).
#
# Hint: in the flattened `(A·K,)` scores, anchor a's class k sits at index `a·K + k`.

# %% tags=["exercise"]
import torch

from retinanet_lab.exercises import check_select_candidates

def my_select_candidates(logits, score_thresh=0.05, topk=1000):
    """(scores, anchor_index, class_index), each (N,): the best (anchor, class) pairs scoring above score_thresh"""
    ### BEGIN SOLUTION
    num_classes = logits.shape[1]
    scores = torch.sigmoid(logits).flatten()                       # (A*K,): anchor a, class k at a*K + k
    idx = torch.nonzero(scores > score_thresh).squeeze(1)          # (M,) flat indices above the threshold
    idx = idx[scores[idx].argsort(descending=True)[:topk]]         # (N,) best first, at most topk
    return scores[idx], idx // num_classes, idx % num_classes      # (N,) each
    ### END SOLUTION

print(check_select_candidates(my_select_candidates))

# %% [markdown]
# ### Exercise: non-maximum suppression
#
# One object is detected by many anchors, on several pyramid levels: after merging the levels, RetinaNet keeps
# the best of each group of overlapping boxes with **greedy non-maximum suppression** at IoU 0.5 (section 4.1,
# "Inference"). Write `my_nms(boxes, scores, iou_threshold)`, exactly as `torchvision.ops.nms`:
#
# - `boxes` is `(N, 4)` as `(x1, y1, x2, y2)`, `scores` is `(N,)`; return an integer tensor `(K,)`: the **indices**
#   of the kept boxes, **by decreasing score**;
# - go down the boxes from the highest score: a box is **kept** unless its IoU with a box **kept before it** is
#   **> iou_threshold** (strictly: IoU equal to the threshold is kept);
# - a box that was removed removes nothing: only kept boxes suppress;
# - N = 0 gives an empty `int64` tensor. IoU as in lesson 01: width = x2 - x1, no "+1".
#
# Hint: compute the `(N, N)` IoU of the boxes sorted by score once; then one Python loop over the boxes suffices.
# (The post-processing applies NMS per class: boxes of different classes never suppress each other.)

# %% tags=["exercise"]
import torch

from retinanet_lab.exercises import check_nms

def my_nms(boxes, scores, iou_threshold):
    """Indices (K,) of the boxes kept by greedy NMS, by decreasing score"""
    ### BEGIN SOLUTION
    order = scores.argsort(descending=True)                     # (N,) best first
    b = boxes[order]                                            # (N, 4) sorted by score
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])            # (N,)
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])          # (N, N, 2) top-left of each intersection
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])          # (N, N, 2) bottom-right
    inter = (rb - lt).clamp(min=0).prod(dim=2)                  # (N, N)
    iou = inter / (area[:, None] + area[None, :] - inter)       # (N, N)
    keep = torch.ones(len(b), dtype=torch.bool)                 # (N,) still in the running
    for i in range(len(b)):                                     # best first
        if keep[i]:                                             # box i is kept: it removes the lower-scoring
            keep[i + 1:] &= iou[i, i + 1:] <= iou_threshold     # boxes that overlap it by more than the threshold
    return order[keep]                                          # (K,) int64, by decreasing score
    ### END SOLUTION

print(check_nms(my_nms))

# %% [markdown]
# ## Recap
#
# * Score every (anchor, class) pair with a sigmoid; keep the ones above 0.05, at most 1000 per level; decode only
#   those boxes.
# * Greedy NMS at IoU 0.5 removes duplicates: a box goes when it overlaps an already *kept*, higher-scoring box.
# * Per-class NMS and 100 detections per image are Detectron's choices, not stated in the paper.

# %% [markdown] tags=["questions"]
# ### Questions to think about
#
# 1. Why threshold and take the top-k *before* decoding the boxes?
# 2. Two overlapping objects of the same class (IoU 0.6 between their true boxes). What does NMS at 0.5 do to their
#    detections? What would you change for a dataset of crowded objects?
# 3. An anchor scores 0.3 for "circle" and 0.2 for "hexagon". How many candidates does it give, and why not just the
#    best class?

# %% [markdown] tags=["teacher"]
# ### Answers (lesson 06)
#
# 1. Decoding (and NMS) cost time for every candidate, while the threshold and top-k are one comparison and one sort
#    on the scores. At the paper's scale millions of outputs become a few thousand candidates before any box is decoded
#    ("to improve speed", §4.1).
# 2. The lower-scoring detection is removed if it overlaps the kept one by more than 0.5, so one of the two objects is
#    missed. For crowds: a higher NMS threshold (0.6-0.7), or Soft-NMS (lower the score of overlapping boxes instead
#    of removing them).
# 3. Two candidates, one per class: every class has its own sigmoid (no softmax), and the detector may be unsure which
#    class an object is. Keeping both lets evaluation (and per-class NMS) decide; the weaker one costs little in AP.
#
# ### Teacher's notes: lesson 06
#
# **Before class.** Nothing to run ahead (about 10 s). Open §4.1 "Inference".
#
# **The live demo.** Raise the score threshold from 0.05 to 0.5: candidates drop from hundreds to a few dozen (396 → 59
# on the default image) and the detections from 55 to 5: the confident ones stay, the weak ones go. Those weak ones are
# what AP's ranking uses to reach more recall (lesson 07), which is why the inference threshold is only 0.05. Then
# lower NMS's IoU to 0.2 and raise it to 0.9: too low
# and neighbouring objects suppress each other, too high and duplicates survive.
#
# **The exercises** (20 min). Candidate selection: every class of every anchor competes (do not take the max over
# classes), the threshold is on probabilities, and the flat index splits into (anchor, class) with
# `divmod(index, num_classes)`. NMS: the classic mistake is letting removed boxes suppress others; the check has a
# chain A-B-C where C survives only if B, removed by A, suppresses nothing.
#
# **Misconceptions.** "NMS keeps the box with the best IoU": it keeps the best *score*. "The threshold of 0.05 is the
# operating point": it only prunes work; AP is computed over all kept detections, whatever their score.
