# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 7. Evaluation: COCO AP, PR curves, and what goes wrong
#
# - **Objectives.** After this lesson you can compute COCO's average precision from a ranked list of detections, read
#   precision-recall curves, say what AP, AP50, AP75 and APs/APm/APl measure, and find a detector's false positives and
#   misses by object size.
# - **Prerequisites.** Lesson 01 (IoU), lesson 06 (detections with scores).
# - **Time.** 35 min in class
# - **Runs in.** 15 s on a 2-core laptop CPU
# - **Paper.** §5 "Experiments" (COCO, AP), Table 1, Table 2 (AP, AP50, AP75, APS, APM, APL).

# %% [markdown]
# The paper reports COCO's metrics, computed by the official code (pycocotools), and so does this lab. For one class and
# one IoU threshold:
#
# 1. Sort the class's detections over all images by score, best first.
# 2. Walk down the list: a detection is a **true positive** if it overlaps a not-yet-matched object of its class with
#    IoU ≥ the threshold (each object can be matched once), else a **false positive**.
# 3. After the first i detections, **precision** = TP / i and **recall** = TP / (number of objects).
# 4. Make precision monotone: at each rank, the best precision at that recall or any higher one (the "envelope").
# 5. **AP** = the mean of that envelope at the 101 recall values 0, 0.01, ..., 1 (0 where the recall is never reached).
#
# **COCO AP** averages this over the 10 IoU thresholds 0.50, 0.55, ..., 0.95 and over the classes; **AP50** and **AP75**
# use one threshold; **APs, APm, APl** count only small (< 32² px), medium and large (> 96² px) objects. AP50 uses the
# PASCAL VOC criterion (IoU ≥ 0.5) but COCO's 101-point averaging. Module: `retinanet_lab/evaluate.py` (it calls
# pycocotools' `COCOeval`).

# %%
# NBVAL_CHECK_OUTPUT
from retinanet_lab.classroom import load_classroom_model
from retinanet_lab.data import ShapesDataset
from retinanet_lab.evaluate import coco_ground_truth, find_errors, predict, score_detections
from retinanet_lab.presets import preset
from retinanet_lab.viz import classroom_style

classroom_style()  # sharp figures, readable text

model = load_classroom_model()
data = ShapesDataset(200, seed=8_000_000, **preset("classroom")["data"])
detections = predict(model, data, progress=False)
r = score_detections(coco_ground_truth(data), detections)
print("  ".join(f"{k} {r[k]:.3f}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")))
print("per class:", {k: round(v, 3) for k, v in r["per_class_AP"].items()})

# %% [markdown]
# ### Exercise: COCO's average precision
#
# The paper reports COCO's AP (section 5). For one class at one IoU threshold, the detections of the whole test
# set are ranked by decreasing score and each is marked a **true positive** (it matched an object not matched by
# a better detection) or a **false positive**. Write `my_average_precision(is_true_positive, num_ground_truth)`:
#
# - `is_true_positive` is a bool tensor `(D,)`, best detection first; `num_ground_truth` (≥ 1) is the number of
#   objects G of that class;
# - after the i best detections: precision p_i = TP_i / i, recall r_i = TP_i / G (TP_i: true positives among them);
# - the **precision envelope** replaces p_i by the best precision at rank i or any later rank (at that recall or a
#   higher one), which makes the curve non-increasing;
# - sample it at the **101 recall thresholds** 0, 0.01, ..., 1: for each threshold t, the envelope at the **first**
#   rank whose recall is ≥ t, or 0 if recall never reaches t;
# - AP is the **mean** of the 101 samples: return one number (a float or a 0-d tensor). No detections: AP = 0.
#
# This is exactly what pycocotools' `COCOeval.accumulate` computes; "AP" in the paper's tables is its mean over the
# 10 IoU thresholds 0.5:0.95 and the 80 classes. (PASCAL VOC uses 11 thresholds, or since 2010 the area under the
# envelope: other numbers.)
#
# Hint: `torch.cumsum`, `torch.cummax` on the flipped precision, `torch.searchsorted(recall, thresholds)` (it returns
# D where recall never reaches t: append a 0 to the envelope before indexing it).

# %% tags=["exercise"]
import torch

from retinanet_lab.exercises import check_average_precision

def my_average_precision(is_true_positive, num_ground_truth):
    """COCO's AP (one number) of one class at one IoU threshold; detections best first"""
    ### BEGIN SOLUTION
    tp = torch.cumsum(is_true_positive.double(), dim=0)              # (D,) TP_i
    rank = torch.arange(1, len(tp) + 1, dtype=torch.float64)         # (D,) i
    precision, recall = tp / rank, tp / num_ground_truth             # (D,) each
    envelope = precision.flip(0).cummax(dim=0).values.flip(0)        # (D,) best precision at rank >= i
    thresholds = torch.linspace(0, 1, 101, dtype=torch.float64)      # (101,)
    first = torch.searchsorted(recall, thresholds)                   # (101,) first rank with recall >= t (D: never)
    sampled = torch.cat([envelope, envelope.new_zeros(1)])[first]    # (101,) 0 where recall never reaches t
    return sampled.mean().item()
    ### END SOLUTION

print(check_average_precision(my_average_precision))

# %% [markdown]
# ## Precision-recall curves
#
# The curve of each class at IoU 0.50 and at 0.75 (COCO's envelope, at the 101 recall values). A curve that stays high
# and drops at the end is a detector that finds most
# objects confidently; the recall where it drops to 0 is the share of objects found at all. Up to the 101-point
# sampling, the area under a curve is that class's AP at that threshold.

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for t, ax in zip((0, 5), axes):  # IoU 0.50 and 0.75
    for k, name in enumerate(model.class_names):
        ax.plot(r["recall_thresholds"], r["precision"][t, :, k].clip(min=0), label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"PR curves at IoU {r['iou_thresholds'][t]:.2f}")
    ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## A gallery of errors, by object size
#
# At one operating point (score ≥ 0.5, IoU ≥ 0.5): false positives (a detection that matches no object of its class)
# and misses (an object no detection of its class found), smallest first. Each crop outlines the box (solid: a false
# detection, dashed: a missed object) and says what overlaps it from the other side: an object of another class (a
# confusion), the same class with a poor box (a localisation error), an object already found by a better-scoring
# detection (a duplicate, which NMS left), or nothing (a hallucination, or an object the detector never looked at).

# %%
# NBVAL_CHECK_OUTPUT
from retinanet_lab.viz import error_gallery

err = find_errors(data, detections)
fps, duplicates = len(err["false_positives"]), sum(f["duplicate"] for f in err["false_positives"])
print(f"{err['true_positives']} correct, {fps} false positives ({duplicates} of them duplicates), "
      f"{len(err['misses'])} misses")
for size, counts in err["by_size"].items():
    print(f"  {size:6s}  {counts['misses']:3d} misses  {counts['false_positives']:3d} false positives")

# %%
error_gallery(data, err["misses"], model.class_names, "misses, smallest first")
error_gallery(data, err["false_positives"], model.class_names, "false positives, smallest first");

# %% [markdown]
# ## Recap
#
# * AP for one class and IoU: rank by score, precision and recall along the ranking, the precision envelope, the mean
#   at 101 recall values. COCO AP averages over IoU 0.50-0.95 and the classes; AP50 is the IoU ≥ 0.5 version.
# * AP rewards good ranking: a correct detection with a low score, below many false ones, adds little.
# * Errors come in kinds (confusion, localisation, duplicate, hallucination, miss) and sizes: look at them before
#   changing the detector.

# %% [markdown] tags=["questions"]
# ### Questions to think about
#
# 1. A detector finds every object, but gives its 20 false positives higher scores than all its true ones. Is its AP50
#    high or low? Is its recall high or low?
# 2. Why does COCO AP (IoU 0.50-0.95) punish a detector whose boxes are always 3 pixels too big more than AP50 does, and
#    more for small objects than for large ones?
# 3. Adding more detections with very low scores to the list: can it lower AP? Can it raise it?

# %% [markdown] tags=["teacher"]
# ### Answers (lesson 07)
#
# 1. Recall reaches 1, but the precision envelope is low everywhere before the true ones appear: with N objects and 20
#    false positives ranked first, precision at recall r is at best rN / (20 + rN). AP50 is well below 1, and lower the
#    fewer objects there are. Ranking matters, not only finding.
# 2. A 3 px error is a large part of a small box: its IoU with the truth can drop below 0.75 or 0.9 while staying above
#    0.5 (lesson 01, question 2). The high thresholds of COCO AP count it as a false positive *and* a miss.
# 3. Low-scored detections come last in the ranking: they can only add true positives at the end (raising recall, and
#    the precision envelope at those recalls), never lower the precision at earlier ranks. So they cannot lower AP; they
#    raise it if some are correct. That is why the inference threshold is as low as 0.05.
#
# ### Teacher's notes: lesson 07
#
# **Before class.** Nothing to run ahead (about 10 s: the classroom model on 200 images). Open Table 1 and Table 2
# for the metrics the paper reports.
#
# **The live demo.** Read the PR curves together: where does each class's curve fall to 0 (its maximum recall), and
# which class is worst at IoU 0.75 (a localisation problem) but fine at 0.5? Then the galleries: the smallest objects
# come first; ask whether each error is a confusion, a poor box or a miss.
#
# **The exercise** (15 min). The check compares with a line-by-line copy of pycocotools' `COCOeval.accumulate` (itself
# tested against COCOeval) and names the typical mistakes: no envelope, VOC 2007's 11 points, VOC 2010's all-point AP
# (the area under the envelope), the area under the raw curve (sklearn's average_precision_score), recall divided by
# the number of detections instead of objects, 100 points instead of 101.
#
# **Misconceptions.** "AP is the precision at some threshold": it averages over all recall levels. "AP50 is the old VOC
# AP": same IoU criterion, but COCO's interpolation. "More detections lower AP": not at the end of the ranking.
