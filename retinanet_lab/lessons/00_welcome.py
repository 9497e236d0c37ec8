# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 0. Welcome: how this lab works
#
# - **Objectives.** After this lesson you can run a lesson, use its widgets and exercises, and read the two numbers
#   every lesson reports (AP and AP50).
# - **Prerequisites.** None. The later lessons expect Python and a little PyTorch (tensors, indexing, broadcasting).
# - **Time.** 10 min in class
# - **Runs in.** 5 s on a 2-core laptop CPU
# - **Paper.** Lin, Goyal, Girshick, He and Dollár, *Focal Loss for Dense Object Detection*, ICCV 2017
#   ([arXiv:1708.02002](https://arxiv.org/abs/1708.02002)). Keep it open beside the lessons: each one names the sections
#   it covers (§3.2, Table 1 (b), ...).

# %% [markdown]
# ## Running a lesson
#
# A lesson is a Jupyter notebook: text cells like this one and code cells with a `[ ]:` beside them.
#
# * **Run a cell**: click it and press **Shift+Enter** (run, then go to the next cell). *Run > Run All Cells* runs the
#   whole lesson from the top.
# * **Stop a cell** that takes too long: the ■ button in the toolbar (*Kernel > Interrupt*). Nothing is lost; run the
#   cell again when you are ready. *Kernel > Restart* starts from a clean slate (then run the cells from the top).
# * Cells build on each other: run them in order. If a cell says a name is not defined, run the cells above it.
#
# First, a check that everything this lab needs is here:

# %%
# NBVAL_CHECK_OUTPUT
import sys

import ipywidgets
import matplotlib
import pycocotools
import torch
import torchvision

import retinanet_lab
from retinanet_lab.classroom import classroom_model_info, load_classroom_model

checks = {
    "Python >= 3.10": lambda: sys.version_info >= (3, 10),
    "PyTorch >= 2.2": lambda: tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 2),
    "ipywidgets 8": lambda: ipywidgets.__version__.startswith("8"),
    "the classroom model loads": lambda: load_classroom_model().num_classes == 5,
}
for name, check in checks.items():
    try:
        ok, why = check(), ""
    except Exception as e:  # a missing file says MISSING and why, not a traceback
        ok, why = False, f" ({type(e).__name__}: {e})"
    print(("OK     " if ok else "MISSING"), name + why)

# %%
info = classroom_model_info()
print(f"PyTorch {torch.__version__}, torchvision {torchvision.__version__}, retinanet_lab {retinanet_lab.__version__}")
print("GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (everything here runs on the CPU)")
print(f"The classroom model: {info['parameters']:,} parameters, trained in {info['train_seconds']:.0f} s on a {info['machine']}, "
      f"AP {info['eval']['AP']:.3f} / AP50 {info['eval']['AP50']:.3f} on {info['eval']['images']} fresh images")

# %% [markdown]
# ## AP and AP50, in one paragraph
#
# The numbers above score a detector the way COCO does (lesson 07 computes them step by step). A detection counts as
# correct when its box overlaps an object of the same class with an IoU of at least a threshold (IoU: lesson 01).
# Rank a class's detections by score and walk down the list: *precision* is the share of the detections so far that
# are correct, *recall* the share of the objects found so far. **AP50** is the average precision over recall for the
# threshold IoU ≥ 0.5; **AP** averages it over the thresholds 0.50, 0.55, ..., 0.95, so it also rewards tight boxes.
# Both go from 0 to 1 (the paper writes them in percent: 34.0 AP = 0.340); both are averaged over the classes.
#
# ## The lessons
#
# | # | lesson | you write | you move |
# |---|---|---|---|
# | [01](01_boxes_iou_coding.ipynb) | boxes, IoU and box coding | IoU, encode, decode | |
# | [02](02_focal_loss.ipynb) | the focal loss against cross entropy (Figure 1) | the focal loss, in log space | γ, α, p_t |
# | [03](03_anchors_matching.ipynb) | anchors and matching; the imbalance counted | anchor shapes, 0.5 / 0.4 | sizes, ratios, a box |
# | [04](04_hard_examples.ipynb) | where the loss goes (Figure 4); CE, α-CE, OHEM 1:3 and FL | OHEM 1:3 | γ, method |
# | [05](05_architecture_prior.ipynb) | the architecture; the prior-probability bias | the prior bias, the first loss | π |
# | [06](06_logits_to_detections.ipynb) | from logits to detections, step by step | candidate selection, NMS | threshold, top-k, NMS |
# | [07](07_evaluation.ipynb) | COCO AP, PR curves, false positives and misses | AP from a ranking | |
# | [08](08_training_ce_vs_fl.ipynb) | training with CE and FL; the ablation next to Table 1 | the loss normaliser | Start / Stop |
# | [09](09_live_detections.ipynb) | live detections, per-level heat maps; your own picture | a class heat map | image, threshold, NMS |
# | [10](10_fine_tuning.ipynb) | fine-tuning on real photos (the coins), and on your own dataset | a new classification layer | |
#
# ## How the lessons work
#
# * **Widgets** are the sliders and buttons under some cells. The cheap ones redraw while you drag; the costly ones
#   when you let go. If something goes wrong, the error shows in red under the widget. In a notebook opened without a
#   running kernel (on GitHub, say) you see a picture of the widget as it was when the lesson was saved.
# * **Exercises**: a cell defines a function for you to write (`my_iou`, ...) and then *checks* it. The check runs
#   your function on small cases, each testing one thing, and says which case fails and what the likely mistake
#   is. Replace `raise NotImplementedError` with your code and run the cell again until every line has a ✔.
#   Here is what a check says about a function that is wrong on purpose (it claims no two boxes ever overlap):

# %%
# NBVAL_CHECK_OUTPUT
from retinanet_lab.exercises import check_iou


def never_overlap(boxes1, boxes2):
    return torch.zeros(len(boxes1), len(boxes2))


print(check_iou(never_overlap))

# %% [markdown]
# * Logic lives in the `retinanet_lab` package (tested by pytest); a lesson only composes it. Each lesson names the
#   modules to read next to the paper: each has the paper's equation in its docstring.
# * Every widget is also a plain Python object: `w = FocalLossExplorer(); w.gamma.value = 1; w.values` works in code.
# * For a projector, `retinanet-lab voila 02_focal_loss.ipynb`, typed in a terminal in the lessons' folder, shows a
#   lesson as an app, without its code (offline).
#
# **Recap.** Shift+Enter runs a cell, ■ stops it; exercises are checked case by case; AP and AP50 score detectors from
# 0 to 1, AP50 at IoU ≥ 0.5, AP over IoU 0.5 to 0.95.

# %% [markdown] tags=["teacher"]
# ### Teacher's notes: lesson 00
#
# **Before class.** Install once per machine (README's first command), then give each student a fresh copy of the
# lessons: `retinanet-lab lessons ~/retinanet-course` (student edition: no solutions anywhere). Keep the teacher's
# edition (`retinanet-lab lessons ~/teacher --teacher`) for yourself. Nothing is downloaded while the lessons run,
# except in the two optional cells marked online (lesson 09's COCO weights, lesson 10's Penn-Fudan pedestrians).
#
# **In class.** Run the setup check together: every line must say OK. A `MISSING` line for the classroom model means
# the package was installed without its data; reinstall with `pip install -e .` from the repository or
# `pip install retinanet_lab`. Show the wrong-on-purpose check above: students should see that a ✘ names the case and
# the expected value, and that the hint says what to do.
#
# **Misconceptions.** "AP is accuracy": it is a ranking measure, it rewards good scores as much as good boxes.
# "AP 0.71 is 71% of objects found": recall at a given score is another number (lesson 07).
