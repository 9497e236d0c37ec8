# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 9. Live detections
#
# - **Objectives.** After this lesson you can run the detector on new images, choose a score threshold and an NMS IoU
#   for
#   a picture, read the per-level heat maps (which pyramid level sees which object), and compute a class heat map from
#   the classification subnet's raw output.
# - **Prerequisites.** Lesson 03 (anchors on P3-P7), lesson 05 (the K·A outputs per location), lesson 06 (thresholds,
#   NMS).
# - **Time.** 25 min in class
# - **Runs in.** 10 s on a 2-core laptop CPU
# - **Paper.** §4 "Feature Pyramid Network Backbone", "Anchors", "Classification Subnet"; §4.1 "Inference".

# %% [markdown]
# The classroom model on fresh shapes images, or on a picture you upload. Move the score threshold and the NMS IoU. The
# heat maps show, for each pyramid level, the highest class probability at each location. Which level lights up for
# which object follows from the anchors (lesson 03): each level's anchors have one base size, so an object is matched,
# and learned, on the level whose anchors fit it. The classroom model's anchors are 16 to 256 px on P3 to P7 (the
# paper's 32 to 512 halved for 160 px images): small shapes light up P3 and P4, large ones P5 and P6. **P7 stays dark**:
# its anchors (256 to 406 px) are larger than the 160 px image, so in practice no object matches one (0 foreground
# anchors on P7 over 400 images; the largest shapes are about 160 px), and the model learned to say "no object" there
# everywhere. *(Static pictures in this notebook are what the widgets showed
# when it was saved; run the notebook in JupyterLab, or `voila` it, to move the sliders.)*

# %%
from retinanet_lab.widgets import DetectionExplorer

DetectionExplorer()

# %% [markdown]
# ### Exercise: a heat map per class from the classification subnet
#
# The last convolution of the classification subnet has K·A outputs at each location: one sigmoid per anchor and
# class (paper §4, "Classification Subnet"). In this package, as in torchvision, channel `a·K + k` is anchor `a`,
# class `k`: the channels read as `(A, K)`, anchor-major. Write `my_class_heatmap(cls_logits, num_anchors,
# num_classes)` that returns, for each class and location, the **highest probability σ(logit) over the A anchors**
# of that location:
#
# - `cls_logits`: `(A*K, H, W)`, the raw output of one pyramid level for one image (logits, not probabilities);
# - return `(K, H, W)`: one map per class, with the input's H and W (no transpose);
# - a sigmoid per output, not a softmax: RetinaNet has K independent binary classifiers and no background class.
#
# The live-detections widget draws the max of these maps over the classes, one map per level.

# %% tags=["exercise"]
import torch

from retinanet_lab.exercises import check_class_heatmap

def my_class_heatmap(cls_logits, num_anchors, num_classes):
    """max over the A anchors of σ(logit), per class and location: (A*K, H, W) -> (K, H, W)"""
    ### BEGIN SOLUTION
    _, h, w = cls_logits.shape
    probs = torch.sigmoid(cls_logits)                          # (A*K, H, W): one sigmoid per anchor and class
    probs = probs.reshape(num_anchors, num_classes, h, w)      # (A, K, H, W): channel a*K + k = anchor a, class k
    return probs.amax(dim=0)                                   # (K, H, W): the best anchor at each location
    ### END SOLUTION

print(check_class_heatmap(my_class_heatmap))

# %% [markdown]
# ## Real photos with torchvision's COCO weights (online only)
#
# `RetinaNet.pretrained("coco")` loads torchvision's ResNet-50-FPN COCO weights into this lab's model (torchvision's
# variant: P6 from P5, an L1 box loss, 300 detections per image). Offline it says which file to fetch and where to put
# it; once the file is there, the same explorer shows real detections.

# %%
from retinanet_lab import RetinaNet

try:
    coco = RetinaNet.pretrained("coco", progress=False)
    print("loaded torchvision's COCO weights:", coco.num_classes, "classes")
    # DetectionExplorer(coco, images={"your photo": ...})   # e.g. retinanet_lab.data.to_tensor(PIL.Image.open(path))
except (RuntimeError, OSError) as e:
    print("offline:", e)  # which file to fetch, and where to put it

# %% [markdown]
# ## Recap
#
# * Each pyramid level detects the objects its anchors fit: small on P3, large on P6 here; a level whose anchors are
#   larger than the image never gets a positive.
# * The classification output has K·A channels per location, anchor-major: channel a·K + k is class k of anchor a.
# * The score threshold trades false positives for misses; NMS's IoU trades duplicates for missed neighbours.

# %% [markdown] tags=["questions"]
# ### Questions to think about
#
# 1. The classroom model never uses P7. Would removing P7 change its detections? Its speed? What would you need to
#    change to make P7 useful?
# 2. Upload a photo of your own. Why does a model trained on coloured shapes on noise still fire on some objects, and
#    what does its heat map tell you?
# 3. In the heat map of a large object, several neighbouring locations light up on the same level. Which stage of
#    inference removes the duplicates, and what would go wrong without it?

# %% [markdown] tags=["teacher"]
# ### Answers (lesson 09)
#
# 1. Its detections would not change (P7's outputs are all below the threshold); it would be slightly faster (P7 has
#    only a few locations, so very little). To use P7: larger images (P7's 256 px anchors fit objects of 256 px and up),
#    or smaller anchors on every level.
# 2. It learned colour blobs with sharp edges on a noisy background; real objects with such regions (a red sign, a
#    round clock) look similar at the level of the features it has. The heat map shows which level and where: usually
#    P3 or P4 on edges and corners. A detector knows only its training world.
# 3. NMS (lesson 06): without it each object would be reported several times, once per anchor that fits it, and each
#    duplicate would count as a false positive in AP.
#
# ### Teacher's notes: lesson 09
#
# **Before class.** Nothing to run ahead (about 10 s). Have a few photos (PNG or JPEG) ready to upload.
#
# **The live demo.** Pick an image with a small and a large shape and point at the heat maps: the small one on P3, the
# large one on P5 or P6, P7 dark. Lower the score threshold to 0.05: many weak boxes appear around real objects (what
# AP's ranking sees). Ask a student for a photo to upload (PNG or JPEG); a file that is not an image gets a clear
# message.
#
# **The exercise** (10 min). The layout of the classification output: (A·K, H, W) viewed as (A, K, H, W), anchor-major
# as torchvision's heads; the check catches the (K, A) order, a softmax over classes (RetinaNet uses one sigmoid per
# class) and a max over classes instead of anchors.
#
# **Misconceptions.** "The model has a background class": no, K sigmoids, and background is all of them low. "Large
# objects are found on P7": only when P7's anchors fit objects in the image.
