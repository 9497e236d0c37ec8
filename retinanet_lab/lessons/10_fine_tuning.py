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
# - **Objectives.** After this lesson you can load a dataset in COCO or Pascal VOC format, give a trained detector new
#   classes by replacing its last classification layer (with the prior of lesson 05), freeze its backbone properly, run
#   a short fine-tuning and measure AP before and after.
# - **Prerequisites.** Lesson 05 (the prior bias), lesson 07 (AP), lesson 08 (training).
# - **Time.** 30 min in class
# - **Runs in.** 30 s on a 2-core laptop CPU (the fine-tuning run)
# - **Paper.** §4.1 "Initialization" (the new layer's initialisation), "Optimization".

# %% [markdown]
# Your data as a COCO folder (an `images/` folder and an annotation JSON, as CVAT, Label Studio or Roboflow export it)
# or
# a Pascal VOC folder (`Annotations/*.xml` and `JPEGImages/`, as LabelImg writes it). The worked example below *makes*
# such a dataset from the shapes world, with two of the five classes the classroom model already knows (triangle and
# diamond) on harder images, then fine-tunes it with a brand-new output layer. The features for these shapes are
# already in the network, so a few dozen steps suffice; classes unlike anything in the training world need more data
# and more steps:
#
# 1. load the dataset; a **new classification layer** for the new classes replaces the old one (its bias set by the
#    prior π, as in §4.1); everything else keeps its trained weights;
# 2. **freeze the backbone**: a small dataset cannot train it well. Freezing means its weights *and* its BatchNorm
#    statistics: `requires_grad_(False)` alone would still let BatchNorm layers normalise with each batch's statistics
#    and update their running averages. `freeze_backbone` turns them into fixed (FrozenBatchNorm) layers, as torchvision
#    and Detectron freeze pretrained backbones;
# 3. a short `fit`: AdamW at 2e-3 with a cosine schedule, the classroom's recipe (with SGD, `fit` would take the
#    paper's 0.01 per 16 images and scale it to the batch by the linear rule of Goyal et al. 2017; the paper itself
#    always used 16 images);
# 4. evaluate before and after.
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
# ## The worked example

# %%
import tempfile
from pathlib import Path

from retinanet_lab.data import CocoDataset, ShapesDataset, export_coco, split_dataset, train_transforms

folder = Path(tempfile.mkdtemp()) / "my_dataset"
mine = ShapesDataset(240, seed=9_000_000, image_size=160, classes=("triangle", "diamond"), difficulty=0.6, cache=True)
annotations = export_coco(mine, folder, progress=False)  # the COCO folder a labelling tool would give you
data = CocoDataset(folder / "images", annotations, transform=train_transforms())
train, val = split_dataset(data, val_fraction=0.25, seed=0)
print(f"{len(data)} images, classes {data.class_names}: {len(train)} to train, {len(val)} to validate")

# %%
from retinanet_lab.classroom import load_classroom_model
from retinanet_lab.evaluate import evaluate
from retinanet_lab.train import fit, freeze_backbone, replace_classifier

model = load_classroom_model()
replace_classifier(model, num_classes=len(data.class_names), class_names=data.class_names)
freeze_backbone(model)  # weights and BatchNorm statistics
val_plain = split_dataset(CocoDataset(folder / "images", annotations), val_fraction=0.25, seed=0)[1]  # no augmentation
before = evaluate(model, val_plain, progress=False)
history = fit(model, train, epochs=4, batch_size=16, optimizer="adamw", lr=2e-3, warmup_steps=5, schedule="cosine",
              num_workers=0, out_dir=str(folder.parent / "run"), progress=True)
after = evaluate(model, val_plain, progress=False)
print(f"AP50 before fine-tuning {before['AP50']:.3f} (a new, untrained output layer), after {after['AP50']:.3f}")

# %% [markdown]
# The run folder has `checkpoint.pt` (written atomically every few steps and at the end; `fit(..., resume=True)`
# continues exactly where an interrupted run stopped) and `metrics.jsonl`. From a terminal:
#
# ```bash
# retinanet-lab train --data coco --images my_dataset/images --annotations my_dataset/instances.json \
#     --from-checkpoint path/to/classroom_model.pt --epochs 10 --out runs/mine
# retinanet-lab eval runs/mine/checkpoint.pt --data coco --images my_dataset/images --annotations
# my_dataset/instances.json
# ```
#
# **Penn-Fudan pedestrians (online).** `PennFudanDataset(root, download=True)` fetches the 170-image dataset once;
# offline it says where to put the zip file.

# %%
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
# * Measure AP on held-out images before and after: the new layer starts at AP 0; here 44 steps bring AP50 to about
#   0.86, because the backbone and subnets already see these shapes.

# %% [markdown] tags=["questions"]
# ### Questions to think about
#
# 1. Why does the new layer's bias start at the prior, and what would happen to the first steps of fine-tuning with bias
#    0?
# 2. Your dataset has 30 images. Which parts of the network would you train, and which would you freeze? What if it had
#    30,000?
# 3. Could you keep the old classes and add new ones, instead of replacing them? What would the new layer need, and
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
# 3. Yes: a layer with A·(K_old + K_new) outputs whose old part copies the old weights and biases, and whose new part
#    starts with the prior. The data must then label both old and new classes in every image: an old-class object left
#    unlabelled would be trained as background.
#
# ### Teacher's notes: lesson 10
#
# **Before class.** The fine-tuning cell trains 44 steps, about 30 s on a 2-core laptop: run the notebook once before
# class on a slow machine; the saved notebook shows the result. Students' own datasets: ask for a COCO or VOC export
# from any labelling tool; `retinanet-lab anchors` on it (lesson 03) tells whether the anchors fit their objects.
#
# **The exercise** (10 min). The check builds the old layer with fewer than 256 input channels (the classroom model has
# 64) and runs the new layer on an input: hard-coded channels, a 1×1 kernel or a missing padding are named, and so are a
# background class (A·(K+1) outputs, a softmax habit), bias 0 and PyTorch's default weight init.
#
# **Misconceptions.** "Freezing = requires_grad False": not for BatchNorm in training mode. "The new layer needs a
# background class": RetinaNet has K sigmoids; background is all of them low.
