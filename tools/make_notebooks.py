"""Write the classroom notebooks (notebooks/*.ipynb) from the cell texts below, then run them so they are
committed with their outputs:

    python tools/make_notebooks.py                      # write and execute all (about 5 minutes on 2 cores)
    python tools/make_notebooks.py --no-execute 02      # write one, without running it

Teachers may just as well edit the notebooks in JupyterLab; this script is how the first versions were made
and how to rebuild them all after an API change.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
NB = ROOT / "notebooks"

CHECK = "# NBVAL_CHECK_OUTPUT\n"
STATIC = ("*(Static pictures in this notebook are what the widgets showed when it was saved; run the notebook "
          "in JupyterLab, or `voila` it, to move the sliders.)*")


def md(text: str):
    return new_markdown_cell(text.strip())


def code(text: str):
    return new_code_cell(text.strip())


NOTEBOOKS: dict[str, tuple[str, list]] = {}


def notebook(name: str, title: str):
    def register(fn):
        NOTEBOOKS[name] = (title, fn())
        return fn
    return register


@notebook("00_welcome", "Welcome: check your setup")
def _():
    return [
        md("""
# RetinaNet and the focal loss: a classroom lab

Lin, Goyal, Girshick, He and Dollár, *Focal Loss for Dense Object Detection* (ICCV 2017), taught one idea per
notebook. Each lesson runs top to bottom on a laptop CPU in a few minutes, offline.

| # | lesson | what you move |
|---|---|---|
| [01](01_boxes_iou_coding.ipynb) | boxes, IoU and box coding | exercises with automatic checks |
| [02](02_focal_loss.ipynb) | the focal loss against cross entropy (Figure 1) | γ, α, p_t |
| [03](03_hard_examples.ipynb) | hard examples on real anchors (Figure 4), CE vs OHEM vs FL | γ, method |
| [04](04_anchors_matching.ipynb) | anchors and matching, the imbalance counted | sizes, ratios, IoU thresholds, a box |
| [05](05_architecture_prior.ipynb) | the architecture and the prior-probability bias | π |
| [06](06_logits_to_detections.ipynb) | from logits to detections, step by step | threshold, top-k, NMS |
| [07](07_training_ce_vs_fl.ipynb) | training with CE vs FL; the ablation next to the paper's Table 1 | Start / Stop |
| [08](08_live_detections.ipynb) | live detections | image, threshold, NMS |
| [09](09_evaluation.ipynb) | COCO mAP, PR curves, false positives and misses | |
| [10](10_fine_tuning.ipynb) | fine-tuning on your own COCO or VOC dataset | |

First, a check that everything this lab needs is here.
"""),
        code(CHECK + """
import sys
import torch, torchvision, ipywidgets, matplotlib, pycocotools
import retinanet_lab
from retinanet_lab.classroom import classroom_model_info, load_classroom_model

checks = {
    "Python >= 3.10": sys.version_info >= (3, 10),
    "PyTorch >= 2.2": tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 2),
    "ipywidgets 8": ipywidgets.__version__.startswith("8"),
    "the classroom model loads": load_classroom_model().num_classes == 5,
}
for name, ok in checks.items():
    print(("OK     " if ok else "MISSING"), name)
"""),
        code("""
info = classroom_model_info()
print(f"PyTorch {torch.__version__}, torchvision {torchvision.__version__}, retinanet_lab {retinanet_lab.__version__}")
print("GPU:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (everything here runs on the CPU)")
print(f"The classroom model: {info['parameters']:,} parameters, trained in {info['train_seconds']:.0f} s on a {info['machine']}, "
      f"AP {info['eval']['AP']:.3f} / AP50 {info['eval']['AP50']:.3f} on {info['eval']['images']} fresh images")
"""),
        md("""
## How the lessons work

* Logic lives in the `retinanet_lab` package (tested by pytest); a notebook only composes it. Read the module a
  lesson names next to the paper: each has the paper's equation in its docstring.
* Widgets update when you release a slider. If something goes wrong, the error shows under the widget.
* Every widget is a plain Python object: `w = FocalLossExplorer(); w.gamma.value = 1; w.values` works in code too.
* Projector view for a class: `voila notebooks/02_focal_loss.ipynb` shows the lesson as an app, without code.
"""),
    ]


@notebook("01_boxes_iou_coding", "Boxes, IoU and box coding")
def _():
    return [
        md("""
# 1. Boxes, IoU and box coding

A box is `(x1, y1, x2, y2)` in pixels. Two ideas carry all of RetinaNet's geometry:

* **IoU**, intersection over union, says how well two boxes agree: 1 for the same box, 0 for boxes that do not touch.
  Anchors are matched to objects by IoU (lesson 4), and detections are judged by it (lesson 9).
* **Box coding** (section 4 of the paper, from R-CNN): the box subnet does not predict boxes, it predicts how to
  move and stretch an anchor onto the object: `dx = (x - x_a) / w_a`, `dy = (y - y_a) / h_a`, `dw = log(w / w_a)`,
  `dh = log(h / h_a)`. Small numbers around 0 whatever the object's size: easy to regress.

Module: `retinanet_lab/boxes.py`.
"""),
        code(CHECK + """
import torch
from retinanet_lab import box_iou, encode_boxes, decode_boxes

a = torch.tensor([[0., 0., 10., 10.]])
b = torch.tensor([[5., 0., 15., 10.], [20., 20., 30., 30.], [0., 0., 10., 10.]])
print("IoU of a with each box of b:", [f"{v:.4f}" for v in box_iou(a, b)[0].tolist()])
"""),
        code("""
import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

anchor = torch.tensor([[40., 40., 104., 104.]])     # a 64 x 64 anchor
gt = torch.tensor([[52., 30., 140., 96.]])          # the object
deltas = encode_boxes(gt, anchor)
print("deltas (dx, dy, dw, dh):", [round(v, 3) for v in deltas[0].tolist()])
fig, ax = plt.subplots(figsize=(4, 4))
for box, style, label in ((anchor[0], ":", "anchor"), (gt[0], "-", "object"), (decode_boxes(deltas, anchor)[0], "--", "decoded")):
    x1, y1, x2, y2 = box.tolist()
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ls=style, lw=2, label=label,
                           ec={"anchor": "grey", "object": "green", "decoded": "red"}[label]))
ax.set_xlim(0, 160); ax.set_ylim(160, 0); ax.legend(); ax.set_title("decode(encode(box)) = box");
"""),
        md("""
## Exercise 1: IoU

Write `my_iou(boxes1, boxes2)` for boxes1 `(N, 4)` and boxes2 `(M, 4)`, returning the `(N, M)` IoU of every pair,
without a Python loop (broadcast with `[:, None]` and `[None, :]`). Then run the check: it tells you what is wrong.
"""),
        code("""
from retinanet_lab.exercises import check_iou, check_encode_boxes, show_solution, SOLUTIONS

def my_iou(boxes1, boxes2):
    # your code here
    raise NotImplementedError

print(check_iou(my_iou))
"""),
        md("Stuck? Reveal a solution (and see it pass the same check):"),
        code(CHECK + """
print(show_solution("iou"))
print(check_iou(SOLUTIONS["iou"]))
"""),
        md("""
## Exercise 2: box encoding

Write `my_encode(gt_boxes, anchors)` returning `(dx, dy, dw, dh)` for each row (both `(N, 4)`).
"""),
        code("""
def my_encode(gt_boxes, anchors):
    # your code here
    raise NotImplementedError

print(check_encode_boxes(my_encode))
"""),
        code(CHECK + """
print(check_encode_boxes(SOLUTIONS["encode_boxes"]))
"""),
    ]


@notebook("02_focal_loss", "The focal loss")
def _():
    return [
        md("""
# 2. The focal loss

A one-stage detector scores ~100,000 anchors per image, and all but a handful are easy background. With cross
entropy, `CE(p_t) = -log(p_t)`, each easy example has a small loss, but there are so many that together they
swamp the few hard ones. The paper's answer (section 3, eq. 4-5) reshapes the loss:

$$\\mathrm{FL}(p_t) = -\\alpha_t (1 - p_t)^\\gamma \\log(p_t)$$

where `p_t` is the probability the model gives to the true class. The *modulating factor* `(1 - p_t)^γ` is near 1
for a misclassified example and near 0 for a well-classified one. Module: `retinanet_lab/focal_loss.py`.
"""),
        code(CHECK + """
from retinanet_lab.widgets.focal import focal_values

print(" p_t    CE       FL (γ=2)    CE / FL")
for pt in (0.1, 0.5, 0.9, 0.968, 0.99):
    v = focal_values(pt, gamma=2.0)
    print(f"{pt:5.3f}  {v['CE']:.4f}   {v['FL']:.6f}   {v['down_weighting']:9,.0f}x")
"""),
        md("""
The paper: *"with γ = 2, an example classified with p_t = 0.9 would have 100× lower loss compared with CE and with
p_t ≈ 0.968 it would have 1000× lower loss."* The table says the same.

## Explore: Figure 1 for any γ and α

Move γ and α, switch to the modulating factor or the gradient, move the cursor along p_t. """ + STATIC),
        code("""
from retinanet_lab.widgets import FocalLossExplorer

FocalLossExplorer()
"""),
        md("""
Things to try:
* γ = 0 is cross entropy. Where does γ = 2 cut the loss by 100×? By 10,000×?
* Turn on α-balancing and flip between foreground and background: α = 0.25 *down*-weights the rare positives. The
  paper found that once γ removes the easy negatives, the positives need less weight (Table 1 (b)).
* Look at the gradient with a log axis: for γ < 1 the modulating factor has an infinite slope at p_t = 1.

## Why the loss is computed from logits

`torchvision.ops.sigmoid_focal_loss` computes `(1 - p_t) ** γ` from probabilities; for γ < 1 its gradient at a
saturated logit is NaN. This lab computes everything in log space from the logits:
"""),
        code(CHECK + """
import torch
from torchvision.ops import sigmoid_focal_loss
from retinanet_lab import focal_loss

x = torch.tensor([30.0, -30.0], requires_grad=True)   # confident, correct predictions
y = torch.tensor([1.0, 0.0])
for name, fn in (("torchvision", sigmoid_focal_loss), ("retinanet_lab", focal_loss)):
    x.grad = None
    fn(x, y, alpha=0.25, gamma=0.5).sum().backward()
    print(f"{name:14s} gradient at γ = 0.5: finite = {bool(torch.isfinite(x.grad).all())}")
"""),
        md("""
## Exercise: write the focal loss

`my_focal_loss(logits, targets, alpha, gamma)` returns the loss of every element (no sum). `alpha=None` means no
balancing. The check tests cross entropy, the modulating factor, α, the paper's 100× and saturated logits.
"""),
        code("""
from retinanet_lab.exercises import check_focal_loss, show_solution, SOLUTIONS

def my_focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    # your code here
    raise NotImplementedError

print(check_focal_loss(my_focal_loss))
"""),
        code(CHECK + """
print(show_solution("focal_loss"))
print(check_focal_loss(SOLUTIONS["focal_loss"]))
"""),
    ]


@notebook("03_hard_examples", "Hard examples")
def _():
    return [
        md("""
# 3. Where the loss goes: hard examples on real anchors

Here the classroom model (trained with the focal loss) looks at fresh shapes images. Every (anchor, class) pair
is one binary example: tens of thousands of negatives for a few dozen positives. The paper's Figure 4 sorts the
examples by loss and plots the cumulative share of the total: with γ = 0 (CE) a large part of the negatives'
loss comes from the many easy ones; with γ = 2 nearly all of it comes from a small fraction of hard negatives,
while the positives hardly change.

The image view paints each anchor by its share of the image's loss under four methods: CE, α-balanced CE,
OHEM 1:3 (train on all positives and the 3× as many negatives with the largest loss, as the paper's Table 1 (d)
compares; without its NMS step) and FL. Module: `retinanet_lab/hard_examples.py`. """ + STATIC),
        code("""
from retinanet_lab.widgets import HardExampleExplorer

hard = HardExampleExplorer()
hard
"""),
        code(CHECK + """
s = hard.samples
print(f"{len(hard.images)} images: {s['pos_logits'].numel()} positive and {s['neg_logits'].numel():,} negative examples "
      f"({s['neg_logits'].numel() / s['pos_logits'].numel():,.0f} negatives per positive)")
"""),
        code("""
from retinanet_lab.hard_examples import easy_negative_share

print(" γ     positives  hard negatives  easy negatives (p_t > 0.5)")
for g in (0, 0.5, 1, 2, 5):
    sh = easy_negative_share(hard.samples, gamma=g)
    print(f"{g:3}   {sh['positives']:8.1%}   {sh['hard_negatives']:12.1%}   {sh['easy_negatives']:12.1%}")
"""),
        md("""
Read the last table with the paper's section 3.2 in mind: the focal loss does not remove the easy negatives, it
turns their loss down so the hard ones and the positives carry the training. OHEM goes further and discards all
but the hardest; the paper found FL better by 3.2 AP (Table 1 (d)): it keeps a little of everything.
"""),
    ]


@notebook("04_anchors_matching", "Anchors and matching")
def _():
    return [
        md("""
# 4. Anchors and matching

RetinaNet places **9 anchors at every location of every pyramid level** P3-P7 (section 4, "Anchors"): areas
32² to 512², three scales 2^0, 2^1/3, 2^2/3 and three aspect ratios 1:2, 1:1, 2:1. Each anchor is then matched:

* IoU ≥ 0.5 with some object: **foreground**, it learns that object's class and box;
* IoU < 0.4 with every object: **background**;
* in between: **ignored**, no loss at all.

Modules: `retinanet_lab/anchors.py`, `retinanet_lab/matching.py`.
"""),
        code(CHECK + """
from retinanet_lab import RetinaNet
from retinanet_lab.anatomy import level_table, format_table

paper = RetinaNet(num_classes=80, backbone="resnet18", min_size=512, max_size=512)   # the paper's anchors, a light backbone
print(format_table(level_table(paper, 512, 512)))
"""),
        md("## Explore: which anchors does each box claim?\n\nMove a box, change the sizes or ratios, raise the thresholds. " + STATIC),
        code("""
from retinanet_lab.widgets import AnchorExplorer

AnchorExplorer()
"""),
        md("""
## The imbalance, counted

Over 50 classroom images, how many negatives are there per positive? This is the imbalance the focal loss is for.
"""),
        code(CHECK + """
import torch
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
"""),
        md("""
## Do the anchors fit the objects?

Objects no anchor covers at IoU ≥ 0.5 only get the low-quality match and are learned poorly. `anchor_coverage`
(also `retinanet-lab anchors`) reports the share covered by size and aspect ratio and suggests better anchors.
Below, the shapes world with elongated objects (aspect ratios up to 1:5), first with the paper's three ratios.
"""),
        code("""
from retinanet_lab.coverage import anchor_coverage, format_coverage

report = anchor_coverage(ShapesDataset(150, seed=1, **cfg["data"]), cfg["model"]["anchors"], min_size=160, max_size=160)
print(format_coverage(report))
"""),
        md("""
The shapes world's objects are at most 1:2 or 2:1, which the paper's ratios cover. Tall objects (people,
bottles, poles) are another matter: below, 300 boxes five times taller than wide, against the paper's ratios
and against ratios that add 1:4 (h/w = 4).
"""),
        code(CHECK + """
import math
from retinanet_lab.anchors import AnchorConfig
from retinanet_lab.coverage import object_best_ious

g = torch.Generator().manual_seed(0)
w = torch.exp(torch.empty(300).uniform_(math.log(16), math.log(100), generator=g))
x, y = torch.rand(300, generator=g) * 300, torch.rand(300, generator=g) * 10
tall = torch.stack([x, y, x + w, y + 5 * w], dim=1)
for ratios in ((0.5, 1.0, 2.0), (0.5, 1.0, 2.0, 4.0)):
    best = object_best_ious([(tall, (512, 512))], AnchorConfig(aspect_ratios=ratios))
    print(f"ratios h/w {ratios}: {(best >= 0.5).float().mean():.0%} of the 1:5 objects have an anchor at IoU >= 0.5")
"""),
    ]


@notebook("05_architecture_prior", "Architecture and the prior")
def _():
    return [
        md("""
# 5. The architecture and the prior-probability bias

Figure 3 of the paper: a ResNet gives C3-C5; the FPN turns them into P3-P7, all with the same number of
channels; on every level the same two small subnets run, one scoring K classes for each of the A = 9 anchors, one
predicting 4 box deltas per anchor.

Section 4.1: the last classification layer's bias starts at `b = -log((1 - π) / π)` so that every anchor starts
saying "object" with probability π = 0.01. With π = 0.5 (an unbiased start) each of the ~tens of thousands of
easy negatives has loss log 2 from the start, and the first iterations are spent unlearning that. Modules:
`retinanet_lab/fpn.py`, `retinanet_lab/heads.py`, `retinanet_lab/anatomy.py`. """ + STATIC),
        code(CHECK + """
from retinanet_lab import prior_bias
from retinanet_lab.anatomy import parameter_table, format_table
from retinanet_lab.classroom import load_classroom_model

print(f"b = {prior_bias(0.01):.4f} for π = 0.01, {prior_bias(0.5) + 0.0:.4f} for π = 0.5")
print(format_table(parameter_table(load_classroom_model())))
"""),
        code("""
from retinanet_lab.widgets import ArchitectureView

ArchitectureView()
"""),
        md("""
The right plot comes from `assets/ablation_prior.json` (made by `python assets/make_ablations.py --only prior`):
the same model and data, trained with the focal loss, from π = 0.01 and from π = 0.5, no warm-up.
"""),
    ]


@notebook("06_logits_to_detections", "From logits to detections")
def _():
    return [
        md("""
# 6. From logits to detections, step by step

Inference (section 4, "Inference"): on each level keep the predictions whose score σ(logit) exceeds 0.05, at most
the 1000 best; decode their boxes from their anchors; merge the levels and run non-maximum suppression per class
at IoU 0.5; keep the best 100. The widget runs the classroom model once and then replays each stage.
Module: `retinanet_lab/postprocess.py`. """ + STATIC),
        code("""
from retinanet_lab.widgets import LogitsToDetections

steps = LogitsToDetections()
steps
"""),
        md("The same stages as numbers, and a check that the step-by-step version gives the model's own detections:"),
        code("""
print(steps.counts)
"""),
        code(CHECK + """
import torch

model, image = steps.model, steps.image
model.score_thresh = steps.score_thresh.value
with torch.no_grad():
    fast = model([image])[0]
mine = steps.steps["detections"]
same = torch.allclose(steps._original(mine["boxes"]), fast["boxes"], atol=1e-4) and torch.equal(mine["labels"], fast["labels"])
print("step by step == model(image):", same)
"""),
    ]


@notebook("07_training_ce_vs_fl", "Training: CE vs FL")
def _():
    return [
        md("""
# 7. Training with cross entropy and with the focal loss

First a short live run (a fresh classroom model, 640 images, 120 steps): choose the loss, press Start, and watch the
two loss terms, the AP after each epoch and the detections on a fixed image. Stop works at any time. In a class,
run the focal loss first, then cross entropy. """ + STATIC),
        code("""
from retinanet_lab.widgets import TrainingMonitor

monitor = TrainingMonitor(epochs=3)
monitor
"""),
        md("The next cell does what the Start button does and waits for it (so that this saved notebook shows a finished run):"),
        code("""
monitor.start(); monitor.join()
print(monitor.status.value)
"""),
        md("""
## The ablation: the paper's Table 1 in miniature

`assets/ablation_loss.json` (made by `python assets/make_ablations.py`) trains the classroom model from scratch
with CE, α-balanced CE and FL for γ in {0.5, 1, 2, 5} and α in {0.25, 0.5, 0.75}, several seeds each, and scores
each run on 200 fresh images. Next to it: the paper's numbers (ResNet-50, COCO; AP in %).
"""),
        code("""
import json
import matplotlib.pyplot as plt
import numpy as np
from retinanet_lab.classroom import assets_dir

abl = json.load(open(assets_dir() / "ablation_loss.json"))
runs = abl["runs"]
names = list(dict.fromkeys(r["name"] for r in runs))
print(f"{len(runs)} runs of {abl['steps']} steps on a {abl['machine']}, seeds {abl['seeds']}")
print(f"{'loss':18s}  AP (mean ± spread)   AP50")
for n in names:
    ap = [r["AP"] for r in runs if r["name"] == n]; ap50 = [r["AP50"] for r in runs if r["name"] == n]
    print(f"{n:18s}  {np.mean(ap):.3f} ± {np.ptp(ap) / 2:.3f}        {np.mean(ap50):.3f}")
"""),
        code("""
fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.6))
gammas = sorted({r["gamma"] for r in runs})
for k, a in enumerate((0.25, 0.5, 0.75)):
    ys = [np.mean([r["AP"] for r in runs if r["gamma"] == g and r["alpha"] == a]) for g in gammas]
    ax.plot(gammas, ys, "o-", label=f"α = {a}")
ce = np.mean([r["AP"] for r in runs if r["alpha"] is None])
ax.axhline(ce, color="grey", ls="--", label="CE (no α)")
ax.set_xlabel("γ"); ax.set_ylabel("AP on fresh shapes images")
ax.set_title("this lab: classroom model, shapes world"); ax.legend(fontsize=8)
p = abl["paper_table1"]["b_gamma_for_FL"]
bx.plot(p["gamma"], p["AP"], "s-", color="k")
for g, a, v in zip(p["gamma"], p["alpha"], p["AP"]):
    bx.annotate(f"α={a}", (g, v), fontsize=7, xytext=(3, -10), textcoords="offset points")
bx.set_xlabel("γ"); bx.set_ylabel("AP (%) on COCO minival"); bx.set_title("the paper, Table 1 (b): best α for each γ")
fig.tight_layout()
"""),
        md("""
Read it with care: the shapes world has five classes and about 5,000 anchors per image (COCO at 800 px: ~100,000),
the runs are 240 steps from scratch, and the paper trains ResNet-50 for 90k iterations. What this sweep found
(2 seeds each, measured when `assets/ablation_loss.json` was made):

* **α matters for cross entropy as in Table 1 (a)**: α = 0.25 is the worst (AP 0.03) and α = 0.75 the best (0.12),
  above plain CE (0.09).
* **The best α falls as γ rises, as in Table 1 (b)**: with γ = 0.5 the best α is 0.5; with γ = 1, 2 and 5 it is 0.25.
* **The best γ is 0.5 here, not 2**: FL γ = 0.5, α = 0.5 gives AP 0.16 against 0.08 for γ = 2, α = 0.25. In a run
  this short, a large γ turns the loss (and its gradient) down for every example the model already gets half right,
  and learning is slower; the paper's γ = 2 pays off over long training on a far more imbalanced problem. Try it:
  `python assets/make_ablations.py --only loss --epochs 8` runs each configuration 4x longer.
"""),
        code("""
fig, ax = plt.subplots(figsize=(6, 3.4))
for n in ("CE", "α-CE α=0.25", "FL γ=2 α=0.25"):
    r = next(r for r in runs if r["name"] == n)
    steps, cls, box = zip(*r["loss"])
    ax.plot(steps, cls, label=n)
ax.set_yscale("log"); ax.set_xlabel("step"); ax.set_ylabel("classification loss"); ax.legend(); ax.set_title("loss curves (seed 0)");
"""),
    ]


@notebook("08_live_detections", "Live detections")
def _():
    return [
        md("""
# 8. Live detections

The classroom model on fresh shapes images, or on a picture you upload. Move the score threshold and the NMS
IoU; the heat maps show, per pyramid level, the highest class probability at each location: small objects light
up P3, large ones P5-P7. """ + STATIC),
        code("""
from retinanet_lab.widgets import DetectionExplorer

DetectionExplorer()
"""),
        md("""
## Real photos with torchvision's COCO weights (online only)

`RetinaNet.pretrained("coco")` loads torchvision's ResNet-50-FPN COCO weights into this lab's model. Offline it
says which file to fetch and where to put it; once the file is there, the same explorer shows real detections.
"""),
        code("""
from retinanet_lab import RetinaNet

try:
    coco = RetinaNet.pretrained("coco")
    print("loaded torchvision's COCO weights:", coco.num_classes, "classes")
    # DetectionExplorer(coco, images={"your photo": ...})   # e.g. retinanet_lab.data.to_tensor(PIL.Image.open(path))
except (RuntimeError, OSError) as e:
    print("offline:", e)
"""),
    ]


@notebook("09_evaluation", "Evaluation")
def _():
    return [
        md("""
# 9. Evaluation: COCO mAP, PR curves, and what goes wrong

COCO's AP averages the area under the precision-recall curve over IoU thresholds 0.50, 0.55, …, 0.95 and over
classes; AP50 is the old PASCAL measure at IoU 0.5. `retinanet_lab.evaluate` runs the model batched and scores it
with pycocotools' COCOeval, the reference implementation.
"""),
        code("""
from retinanet_lab.classroom import load_classroom_model
from retinanet_lab.data import ShapesDataset
from retinanet_lab.evaluate import coco_ground_truth, find_errors, predict, score_detections
from retinanet_lab.presets import preset

model = load_classroom_model()
data = ShapesDataset(200, seed=8_000_000, **preset("classroom")["data"])
detections = predict(model, data, progress=False)
r = score_detections(coco_ground_truth(data), detections)
print("  ".join(f"{k} {r[k]:.3f}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")))
print("per class:", {k: round(v, 3) for k, v in r["per_class_AP"].items()})
assert r["AP50"] >= 0.9, "the classroom model should reach AP50 0.9 on fresh images"
"""),
        code("""
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for t, ax in zip((0, 5), axes):       # IoU 0.50 and 0.75
    for k, name in enumerate(model.class_names):
        ax.plot(r["recall_thresholds"], r["precision"][t, :, k].clip(min=0), label=name)
    ax.set_xlabel("recall"); ax.set_ylabel("precision"); ax.set_title(f"PR curves at IoU {r['iou_thresholds'][t]:.2f}")
    ax.legend(fontsize=8)
fig.tight_layout()
"""),
        md("""
## A gallery of errors, by object size

At score 0.5 and IoU 0.5: false positives (a detection that matches no object of its class) and misses (an object
no detection found). `iou` is the best overlap with any box of any class: high for a confused class or a poorly
placed box, near 0 for a hallucination.
"""),
        code("""
from retinanet_lab.viz import class_colour

err = find_errors(data, detections)
print(f"{err['true_positives']} correct, {len(err['false_positives'])} false positives, {len(err['misses'])} misses")
print("by size:", err["by_size"])

def gallery(errors, title, n=8):
    fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 2.0))
    for ax, e in zip(axes, sorted(errors, key=lambda e: e["size"])[:n]):
        image = data[e["image"]][0]
        x1, y1, x2, y2 = [int(v) for v in e["box"]]
        pad = 6
        crop = image[:, max(0, y1 - pad):y2 + pad, max(0, x1 - pad):x2 + pad]
        ax.imshow(crop.permute(1, 2, 0).numpy())
        ax.set_title(f"{model.class_names[e['label'] - 1]}\\n{e['size']}, IoU {e['iou']:.2f}", fontsize=7, color=class_colour(e["label"]))
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)

gallery(err["false_positives"], "false positives")
gallery(err["misses"], "misses")
"""),
    ]


@notebook("10_fine_tuning", "Fine-tuning on your own data")
def _():
    return [
        md("""
# 10. Fine-tuning on your own dataset

Your data as a COCO folder (an `images/` folder and an annotation JSON, as CVAT, Label Studio or Roboflow export
it) or a Pascal VOC folder (`Annotations/*.xml` and `JPEGImages/`, as LabelImg writes it). The worked example
below *makes* such a dataset from the shapes world, with only two classes and harder images, then fine-tunes the
classroom model on it:

1. load the dataset; the new classes replace the old output layer (its bias re-initialised with the prior π);
2. freeze the backbone (a small dataset cannot train it well);
3. a short `fit`, with the learning rate scaled to the batch by the linear rule;
4. evaluate before and after.
"""),
        code("""
import tempfile
from pathlib import Path
from retinanet_lab.data import CocoDataset, ShapesDataset, export_coco, split_dataset, train_transforms

folder = Path(tempfile.mkdtemp()) / "my_dataset"
mine = ShapesDataset(240, seed=9_000_000, image_size=160, classes=("triangle", "diamond"), difficulty=0.6, cache=True)
annotations = export_coco(mine, folder, progress=False)          # the COCO folder a labelling tool would give you
data = CocoDataset(folder / "images", annotations, transform=train_transforms())
train, val = split_dataset(data, val_fraction=0.25, seed=0)
print(f"{len(data)} images, classes {data.class_names}: {len(train)} to train, {len(val)} to validate")
"""),
        code("""
from retinanet_lab.classroom import load_classroom_model
from retinanet_lab.evaluate import evaluate
from retinanet_lab.train import fit, replace_classifier

model = load_classroom_model()
replace_classifier(model, num_classes=len(data.class_names), class_names=data.class_names)
for p in model.backbone.parameters():
    p.requires_grad_(False)                                      # freeze the backbone
val_plain = CocoDataset(folder / "images", annotations)          # validation without augmentation
val_plain = split_dataset(val_plain, val_fraction=0.25, seed=0)[1]
before = evaluate(model, val_plain, progress=False)
history = fit(model, train, epochs=4, batch_size=16, optimizer="adamw", lr=2e-3, warmup_steps=5, schedule="cosine",
              num_workers=0, out_dir=str(folder.parent / "run"), progress=False)
after = evaluate(model, val_plain, progress=False)
print(f"AP50 before fine-tuning {before['AP50']:.3f} (a new, untrained output layer), after {after['AP50']:.3f}")
"""),
        md("""
The run folder has `checkpoint.pt` (written atomically every few steps and at the end; `fit(..., resume=True)`
continues exactly where an interrupted run stopped) and `metrics.jsonl`. From a terminal:

```bash
retinanet-lab train --data coco --images my_dataset/images --annotations my_dataset/instances.json \\
    --from-checkpoint assets/classroom_model.pt --epochs 10 --out runs/mine
retinanet-lab eval runs/mine/checkpoint.pt --data coco --images my_dataset/images --annotations my_dataset/instances.json
```

**Penn-Fudan pedestrians (online).** `PennFudanDataset(root, download=True)` fetches the 170-image dataset once;
offline it says where to put the zip file.
"""),
        code("""
from retinanet_lab.data import PennFudanDataset

try:
    people = PennFudanDataset(Path(tempfile.gettempdir()) / "PennFudanPed", download=True)
    print(len(people), "images of pedestrians")
except (RuntimeError, OSError) as e:
    print("offline:", e)
"""),
    ]


def build(name: str) -> Path:
    title, cells = NOTEBOOKS[name]
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}, "title": title})
    path = NB / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("only", nargs="*", help="notebook number prefixes, e.g. 02 07 (default: all)")
    p.add_argument("--no-execute", action="store_true")
    args = p.parse_args(argv)
    NB.mkdir(exist_ok=True)
    names = [n for n in NOTEBOOKS if not args.only or any(n.startswith(o) for o in args.only)]
    for name in names:
        path = build(name)
        if not args.no_execute:
            subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace",
                            "--ExecutePreprocessor.timeout=600", str(path)], check=True, cwd=NB)
        print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
