# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 10. Fine-tuning on your own dataset
#
# - **Objectives.** After this lesson you can load a dataset in COCO or Pascal VOC format, fit a trained detector's
#   input size and anchors to its objects, give it new classes by replacing its last classification layer (with the
#   prior of lesson 05), freeze its backbone properly, run a short fine-tuning on real photographs and measure AP
#   before and after.
# - **Prerequisites.** Lesson 03 (anchors and coverage), lesson 05 (the prior bias), lesson 07 (AP), lesson 08 (training).
# - **Time.** 30 min in class
# - **Runs in.** 35 s on a 2-core laptop CPU (the fine-tuning run: 16 steps at 384 px)
# - **Paper.** §4.1 "Initialization" (the new layer's initialisation), "Optimization".

# %% [markdown]
# Your data as a COCO folder (an `images/` folder and an annotation JSON, as CVAT, Label Studio or Roboflow export it)
# or a Pascal VOC folder (`Annotations/*.xml` and `JPEGImages/`, as LabelImg writes it). The worked example uses **real
# photographs** that ship with this package (`photo_dataset`): Greek coins photographed for the Brooklyn Museum, cut
# into 400 px collages with other photos (a cat, an astronaut, a cup of coffee, a rocket, a cameraman; all from
# scikit-image, free to use). 40 images to train and 16 to evaluate, whose six coins never appear in training; one
# class; small objects (16 to 58 px across). That is the shape of a first dataset of one's own. The classroom model has never
# seen a photograph: it learned on drawn shapes of 160 px. The steps:
#
# 1. **the input size**: the classroom model shrinks every image to 160 px, where a 20 px coin of a 400 px image becomes
#    8 px, half the smallest anchor (16 px on P3). At the images' own size the objects keep theirs;
# 2. **the anchors**: do they cover the objects at IoU ≥ 0.5 at that size (lesson 03)? If not, scale them;
# 3. a **new classification layer** for the new classes replaces the old one (its bias set by the prior π, as in §4.1);
#    everything else keeps its trained weights;
# 4. **freeze the backbone**: a small dataset cannot train it well. Freezing means its weights *and* its BatchNorm
#    statistics: `requires_grad_(False)` alone would still let BatchNorm layers normalise with each batch's statistics
#    and update their running averages. `freeze_backbone` turns them into fixed (FrozenBatchNorm) layers, as torchvision
#    and Detectron freeze pretrained backbones;
# 5. a short `fit` with **augmentation for a small dataset** (random zoom with crops that keep the boxes right, flips,
#    photometric jitter: with 40 images, every step repeats images) and AdamW, the classroom's recipe (with SGD, `fit`
#    would take the paper's 0.01 per 16 images and scale it to the batch by the linear rule of Goyal et al. 2017);
# 6. evaluate before and after, and look.
#
# First, the new classification layer, the heart of it:

# %% [markdown]
# ### Exercise: a new classification layer for new classes
#
# To fine-tune a trained RetinaNet on new classes, keep everything but the last layer of the classification subnet
# and put a new one in its place (`replace_classifier` does this). Write `my_new_classifier(old, num_anchors,
# num_classes, prior=0.01)` that returns that **new** `nn.Conv2d`:
#
# - the same `in_channels`, kernel size, stride and padding as `old` (3x3, padding 1: the map keeps its size;
#   the classroom model's subnet has 64 channels, the paper's 256: read them from `old`);
# - `num_anchors * num_classes` output channels: one sigmoid per anchor and class, **no background class**
#   (background is "no" from every class's sigmoid);
# - weights from a Gaussian with mean 0 and **σ = 0.01** (Detectron's and torchvision's choice for this layer; the
#   paper gives σ = 0.01 for the subnets' other layers), and the bias **b = -log((1 - π) / π)** with π = `prior`, so
#   that σ(b) = π: at the start every anchor says "object" with probability π (paper §4.1, "Initialization");
# - on the old layer's device and dtype; return the convolution alone (its outputs are logits: the loss and the
#   post-processing apply the sigmoid), trainable, and leave `old` unchanged.

# %% tags=["exercise"]
import math

import torch
from torch import nn

from retinanet_lab.exercises import check_new_classifier

def my_new_classifier(old, num_anchors, num_classes, prior=0.01):
    """a fresh nn.Conv2d: old.in_channels -> num_anchors * num_classes logits, N(0, 0.01²) weights, prior bias"""
    ### BEGIN SOLUTION
    new = nn.Conv2d(old.in_channels, num_anchors * num_classes,       # A*K outputs per location, no background
                    kernel_size=old.kernel_size, stride=old.stride, padding=old.padding,
                    device=old.weight.device, dtype=old.weight.dtype)
    nn.init.normal_(new.weight, mean=0.0, std=0.01)                    # Gaussian fill, σ = 0.01
    nn.init.constant_(new.bias, -math.log((1 - prior) / prior))        # σ(b) = π: -4.595 for π = 0.01
    return new
    ### END SOLUTION

print(check_new_classifier(my_new_classifier))

# %% [markdown]
# ## The worked example: coins in real photographs

# %%
from retinanet_lab.data import photo_dataset, small_dataset_transforms
from retinanet_lab.viz import classroom_style, show_sample_grid

classroom_style()
train = photo_dataset("train", small_dataset_transforms())  # zoom, flip, photometric jitter: a new variant each time
val = photo_dataset("eval")                                  # as they are, never trained on
boxes = [b for i in range(len(val)) for b in val[i][1]["boxes"].tolist()]
sides = sorted(min(x2 - x1, y2 - y1) for x1, y1, x2, y2 in boxes)
print(f"{len(train)} training and {len(val)} evaluation images, classes {val.class_names}; {len(boxes)} coins to "
      f"find in evaluation, short sides {sides[0]:.0f} to {sides[-1]:.0f} px")
show_sample_grid(val, indices=[0, 3, 7, 12], cols=4, size=2.6, title="evaluation images and their boxes");

# %% [markdown]
# **Size and anchors.** `input_size_for` takes the images' median short side to a multiple of 32; `anchors_for` measures,
# as `retinanet-lab anchors` does, which share of the objects has an anchor at IoU ≥ 0.5 after resizing, and scales the
# anchors' sizes when that share is low. At 160 px (the classroom model's size) and at the images' own size:

# %%
from retinanet_lab.classroom import load_classroom_model
from retinanet_lab.fit_to_data import anchors_for, input_size_for, set_anchors, set_input_size

model = load_classroom_model()
size = input_size_for(train)
for s in (160, size):
    print(f"at {s} px:", anchors_for(train, model.anchor_config, s)[1])
set_input_size(model, size)
anchors, why = anchors_for(train, model.anchor_config, size)
set_anchors(model, anchors)

# %% [markdown]
# At 160 px the coins are 6 to 23 px: the classroom's anchors give only two thirds of them an anchor at IoU ≥ 0.5
# (lesson 03: the others get only low-quality matches), and smaller anchors would help a little, but a coin would
# still be a few pixels of the stride-8 map P3. At 384 px every coin has an anchor, and the anchors stay as they are.
# Now the new layer, the frozen backbone, AP before any training (the new layer knows nothing yet), then a few
# steps (`STEPS`: more steps, a better AP, a longer wait):

# %%
import tempfile

import torch

from retinanet_lab.evaluate import evaluate, predict
from retinanet_lab.train import fit, freeze_backbone, replace_classifier

torch.manual_seed(0)  # the new layer's random weights: the same run, the same AP, every time
replace_classifier(model, num_classes=1, class_names=val.class_names)
freeze_backbone(model)  # weights and BatchNorm statistics
before = evaluate(model, val, progress=False)
shown = [0, 3, 7]
detections_before = predict(model, [val[i] for i in shown], progress=False)
STEPS = 16  # about half a minute on a 2-core laptop
history = fit(model, train, val, steps=STEPS, batch_size=8, optimizer="adamw", lr=2e-3, warmup_steps=3, schedule="cosine",
              num_workers=0, out_dir=tempfile.mkdtemp(), progress=True)
after = history["evals"][-1]  # a run of a given number of steps ends with an evaluation on `val`
print(f"AP50 before {before['AP50']:.3f}, after {after['step']} steps {after['AP50']:.3f} "
      f"(AP {before['AP']:.3f} -> {after['AP']:.3f})")

# %%
import matplotlib.pyplot as plt

from retinanet_lab.viz import draw_boxes

detections_after = predict(model, [val[i] for i in shown], progress=False)
fig, axes = plt.subplots(2, len(shown), figsize=(3.2 * len(shown), 6.6))
for col, i in enumerate(shown):
    image, target = val[i]
    for row, (dets, when) in enumerate(((detections_before, "before"), (detections_after, f"after {STEPS} steps"))):
        d = dets[col]
        keep = d["scores"] >= 0.3
        draw_boxes(axes[row, col], image, d["boxes"][keep], d["labels"][keep], d["scores"][keep], val.class_names,
                   title=f"#{i} {when}: {int(keep.sum())} found, {len(target['boxes'])} coins")
fig.tight_layout();

# %% [markdown]
# **Longer, from a terminal.** The command line does all of the above by default on a folder of one's own: it chooses
# the input size and the anchors (and says so), turns the small-dataset augmentation on, and trains for a time budget
# (5 minutes unless `--minutes`, `--steps` or `--epochs` say otherwise: the first steps are timed and the schedule is
# fitted to the steps that fit), then prints AP, AP50 and the checkpoint's path:
#
# ```bash
# retinanet-lab train --data photos --from-checkpoint classroom --out runs/coins          # the coins, 5 minutes
# retinanet-lab train --data coco --images my_dataset/images --annotations my_dataset/instances.json \
#     --from-checkpoint classroom --out runs/mine                                        # your own COCO folder
# retinanet-lab eval runs/mine/checkpoint.pt --data coco --images ... --annotations held_out.json  # images not trained on
# retinanet-lab predict runs/mine/checkpoint.pt my_photos/ --out predictions
# ```
#
# Measured on a 2-core CPU (`python benchmarks/photos_finetune.py`; `benchmarks/RESULTS.md` has the table):
#
# | run | steps | seconds | input | AP | AP50 | AP75 |
# | --- | ---: | ---: | --- | ---: | ---: | ---: |
# | before: the classroom model as shipped, its "circle" read as "coin" | 0 | | 160 px | 0.188 | 0.322 | 0.183 |
# | before: the same at the images' size | 0 | | 384 px | 0.479 | 0.694 | 0.618 |
# | old path: from the classroom model, 160 px, its anchors, flips, 40 epochs | 80 | 44 | 160 px | 0.594 | 0.908 | 0.766 |
# | old settings for 5 minutes | 516 | 311 | 160 px | 0.427 | 0.898 | 0.286 |
# | **new path: from the classroom model, defaults (`--minutes 5`)** | 71 | 248 | 384 px | **0.809** | **0.993** | **0.938** |
# | new path: from scratch (the classroom preset), defaults | 98 | 275 | 384 px | 0.166 | 0.536 | 0.043 |
#
# The input size and the augmentation make the difference, not the time: the old settings given 5 minutes take 516
# steps and end *worse* in AP (40 images without augmentation, each seen about 200 times, at 160 px). From scratch, 5 minutes
# give AP50 0.54 but AP 0.17: the classroom model brings features that already see round things (it finds some coins
# as "circles" before any training). The evaluation set is 71 boxes of 6 coins: read differences of a few points as
# noise.
#
# The run folder has `checkpoint.pt` (written atomically every 200 steps, at the end, and when you interrupt the run
# with Ctrl-C or the kernel's ■; `--resume` continues from it) and `metrics.jsonl`. `train` scores the images it held
# out (`--val-fraction`, 10% of a folder of your own); `eval` scores every image of the folder it is given, so give it
# images the model did not train on.

# %% [markdown]
# **Penn-Fudan pedestrians (online).** `PennFudanDataset(root, download=True)` fetches the 170-image dataset once;
# offline it says where to put the zip file.

# %%
from pathlib import Path

from retinanet_lab.data import PennFudanDataset

try:
    people = PennFudanDataset(Path(tempfile.gettempdir()) / "PennFudanPed", download=True)
    print(len(people), "images of pedestrians")
except (RuntimeError, OSError) as e:
    print("offline:", str(e).split("\n")[0])

# %% [markdown]
# ## Recap
#
# * New classes: a new last classification layer with A·K outputs (no background class), Gaussian weights (σ = 0.01)
#   and the prior bias; the rest of the network keeps what it learned.
# * Freeze a backbone's weights *and* its BatchNorm statistics on a small dataset.
# * Fit the input to the objects: at the images' own size small objects keep their pixels and the anchors reach
#   them; check the anchors' coverage at that size (scale them if they miss).
# * A small dataset needs augmentation (zoom with box-preserving crops, flips, colour) and a budget of steps, not of
#   epochs; `retinanet-lab train` does both by default on a folder of one's own.
# * Measure AP on held-out images before and after: the new layer starts at AP 0; here 16 steps (about half a minute)
#   bring AP50 from 0 to 0.82 and AP to 0.56 on coins the model has never seen (0.83-0.86 and 0.58-0.61 with other
#   random starts of the new layer); 5 minutes bring AP to 0.81.

# %% [markdown] tags=["questions"]
# ### Questions to think about
#
# 1. Why does the new layer's bias start at the prior, and what would happen to the first steps of fine-tuning with bias
#    0?
# 2. Your dataset has 30 images. Which parts of the network would you train, and which would you freeze? What if it had
#    30,000?
# 3. The coins are 16 to 58 px in 400 px images. Why is AP75 so much lower after fine-tuning at 160 px than at 384 px
#    (the table above)? Would anchors scaled to fit the coins at 160 px be enough to close the gap?
# 4. Could you keep the old classes and add new ones, instead of replacing them? What would the new layer need, and
#    what data?

# %% [markdown] tags=["teacher"]
# ### Answers (lesson 10)
#
# 1. For the same reason as in lesson 05: every output of the new layer would start at p = 0.5, so every background
#    anchor would pay a large loss and the first, large gradients would flow into the (trained) subnets and pyramid,
#    damaging the features the fine-tuning relies on. With the prior the new layer starts quietly at p ≈ 0.01.
# 2. With 30 images: freeze the backbone (weights and BatchNorm statistics), train the last layer, possibly the subnets
#    and the pyramid with a small learning rate, with augmentation; hold out a few images to measure. With 30,000:
#    train everything (maybe still with frozen BatchNorm at small batch sizes), longer.
# 3. At 160 px a 20 px coin is 8 px: its box edges fall between pixels of P3 (stride 8), so the box subnet's offsets
#    are a fraction of a cell and any error of one input pixel is 2.5 original pixels; AP75 asks IoU ≥ 0.75, which a
#    box off by 2 px on an 8 px object misses (8 x 8 boxes shifted by 2 px: IoU = 48 / 80 = 0.6). Scaled anchors
#    would give more coins a foreground anchor (the matching), not more pixels (the resolution). Measure it rather than
#    guess: `retinanet-lab train --data photos --from-checkpoint classroom --size 160 --augment off --epochs 40` (anchors scaled, as
#    it will say) against the table's row with `--keep-anchors`.
# 4. Yes: a layer with A·(K_old + K_new) outputs whose old part copies the old weights and biases, and whose new part
#    starts with the prior. The data must then label both old and new classes in every image: an old-class object left
#    unlabelled would be trained as background.
#
# ### Teacher's notes: lesson 10
#
# **Before class.** The fine-tuning cell trains 16 steps at 384 px, about half a minute on a 2-core laptop: run the
# notebook once before class on a slow machine; the saved notebook shows the result. For the 5-minute run of the
# table, start `retinanet-lab train --data photos --from-checkpoint classroom --out runs/coins` at the start of the
# lesson and look at its AP at the end. Students' own datasets: ask for a COCO or VOC export
# from any labelling tool; `retinanet-lab anchors` on it (lesson 03) tells whether the anchors fit their objects.
#
# **The exercise** (10 min). The check builds the old layer with fewer than 256 input channels (the classroom model has
# 64) and runs the new layer on an input: hard-coded channels, a 1×1 kernel or a missing padding are named, and so are a
# background class (A·(K+1) outputs, a softmax habit), bias 0, PyTorch's default weight init, a copy of the old
# weights, and σ = π (the paper uses 0.01 for both: the check's second layer has π = 0.05).
#
# **Misconceptions.** "Freezing = requires_grad False": not for BatchNorm in training mode. "The new layer needs a
# background class": RetinaNet has K sigmoids; background is all of them low.
