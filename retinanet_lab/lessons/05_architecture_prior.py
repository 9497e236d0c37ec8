# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. The architecture and the prior-probability bias
#
# - **Objectives.** After this lesson you can trace an image through the backbone, the pyramid and the two subnets with
#   the shape of every tensor, set the bias of the last classification layer for a prior π, predict the first loss
#   from π, and explain what the prior protects training from, and which ingredients of a training recipe can hide it.
# - **Prerequisites.** Lesson 02 (the focal loss), lesson 03 (anchors per location); convolutions and strides.
# - **Time.** 40 min in class
# - **Runs in.** 10 s on a 2-core laptop CPU
# - **Paper.** Figure 3; §4 "Feature Pyramid Network Backbone", "Classification Subnet", "Box Regression Subnet";
#   §3.3 "Class Imbalance and Model Initialization"; §4.1 "Initialization", "Optimization"; §5.1 "Network
#   Initialization".

# %% [markdown]
# ## The network (Figure 3)
#
# A ResNet gives feature maps C3, C4 and C5 (strides 8, 16, 32). The feature pyramid turns them into P3 to P5 by a
# top-down path with lateral connections, and adds P6 (a 3×3 stride-2 convolution on C5) and P7 (ReLU, then another on
# P6); every level has the same C channels (256 in the paper). On each level the **same two small subnets** run:
#
# * the **classification subnet**: four 3×3 convolutions with C filters and ReLU, then a 3×3 convolution with K·A
#   filters and a sigmoid: for each of the A anchors at a location, one probability per class (no background class);
# * the **box subnet**: the same, ending in 4·A linear outputs: (dx, dy, dw, dh) per anchor, the same for every class
#   ("class-agnostic").
#
# The classroom model is a small version of this: a narrow ResNet, a 64-channel pyramid, and two 64-channel
# convolutions with GroupNorm per subnet instead of four 256-channel convolutions without normalisation:

# %%
# NBVAL_CHECK_OUTPUT
from retinanet_lab.anatomy import format_table, parameter_table
from retinanet_lab.classroom import load_classroom_model
from retinanet_lab.viz import classroom_style

classroom_style()  # sharp figures, readable text

model = load_classroom_model()
print(format_table(parameter_table(model)))

# %% [markdown]
# ## The prior (§3.3, §4.1)
#
# At initialisation a binary classifier says "yes" and "no" with about equal probability: p ≈ 0.5 for every output. In
# a detector almost every output should say "no", so at p = 0.5 every background output of an image (about 24,000 in a
# 160 px classroom image, about 8 million at the paper's scale) is on the wrong side and pays a loss, small alone but
# huge summed: under CE, log 2 ≈ 0.69 each; under the focal loss (γ = 2, α = 0.25), 0.75 × 0.5² × log 2 ≈ 0.13 each.
# The sum is divided by the few dozen positive anchors (the normaliser of lesson 08). The paper's fix changes the
# initialisation, not the loss: the bias of the last classification layer starts at
#
# $$b = -\log\frac{1 - \pi}{\pi}$$
#
# so that σ(b) = π and every output starts at p ≈ π = 0.01 ("every anchor should be labeled as foreground with
# confidence of ∼π"). The subnets' other convolutions start with Gaussian weights (σ = 0.01) and bias 0 (the pyramid's
# new layers as in the FPN paper, §4.1). The paper gives only the *bias* of the last layer; its weights are Gaussian
# with σ = 0.01 in Detectron and torchvision. With weights that small, the logit of every output starts close to b.

# %% [markdown]
# ### Exercise: the prior bias
#
# Without a prior, the classification subnet would start by giving every output a probability of about 0.5, and the
# background outputs (about 24,000 per classroom image, about 8 million at the paper's scale), all on the wrong side at
# p = 0.5, would dominate the loss of the first
# iterations. The paper instead sets the bias of the last classification layer so that every output starts at
# probability π = 0.01 (§3.3, "Class Imbalance and Model Initialization", and §4.1, "Initialization"):
# b = -log((1 - π) / π), the logit of π, so that σ(b) = π. Write `my_prior_bias(pi)` returning b (a Python float
# or a 0-d tensor).

# %% tags=["exercise"]
import math

from retinanet_lab.exercises import check_prior_bias

def my_prior_bias(pi):
    """The bias b with sigmoid(b) = pi: a float"""
    ### BEGIN SOLUTION
    return -math.log((1 - pi) / pi)                               # the logit of pi: log(pi) - log(1 - pi)
    ### END SOLUTION

print(check_prior_bias(my_prior_bias))

# %% [markdown]
# ### Exercise: the first loss, with and without the prior
#
# With the prior bias, every classification output starts at probability p = π. The first iteration's
# classification loss is then a formula: each of the P positive examples (an anchor's true class) has
# p_t = π, each of the N negative examples (every other class of an anchor, every class of a background anchor)
# has p_t = 1 - π, each example's focal loss is FL = α_t (1 - p_t)^γ (-log p_t) (eq. 5, α_t = α for positives,
# 1 - α for negatives), and the total is **normalized by the number of anchors assigned to a ground-truth box**,
# P (section 4.1). Write `my_first_loss(pi, num_positives, num_negatives, gamma=2.0, alpha=0.25)` returning that
# number (P ≥ 1); `alpha=None` means no α-balancing (α_t = 1), and `gamma=0, alpha=None` is plain cross entropy.
# (This formula is the real first loss: a test of the package checks it against a freshly built classroom model, within
# a few percent. The check compares your function with the package's own focal loss at the logit b(π).)

# %% tags=["exercise"]
import math

from retinanet_lab.exercises import check_first_loss

def my_first_loss(pi, num_positives, num_negatives, gamma=2.0, alpha=0.25):
    """The classification loss when every output has probability pi, normalized by num_positives: a float"""
    ### BEGIN SOLUTION
    a_pos, a_neg = (1.0, 1.0) if alpha is None else (alpha, 1 - alpha)
    positive = a_pos * (1 - pi) ** gamma * -math.log(pi)         # one positive: p_t = pi
    negative = a_neg * pi ** gamma * -math.log(1 - pi)           # one negative: p_t = 1 - pi
    return (num_positives * positive + num_negatives * negative) / num_positives
    ### END SOLUTION

print(check_first_loss(my_first_loss))

# %% [markdown]
# Once your `my_first_loss` passes, try it at the paper's scale: 100 positives and 8 million negatives per image (∼100k
# anchors × 80 classes). The answers, to compare with yours:
#
# | | cross entropy | focal loss (γ = 2, α = 0.25) |
# | --- | --- | --- |
# | π = 0.01 | 808.6 | 1.19 |
# | π = 0.5 | 55,452 | 10,397 |
#
# With the prior, the focal loss starts near 1; without it, four orders of magnitude higher. Cross entropy with the
# prior still starts at about 800, nearly all of it from the 8 million negatives at −log(0.99) ≈ 0.01 each; yet it
# trains: the paper's CE with π = 0.01 reaches 30.2 AP (§5.1). What the prior removes is the destabilising first
# steps; what remains with CE is the steady weight of the many easy negatives during training, which the focal loss
# turns down (lesson 02).

# %% [markdown]
# ## Explore: the first loss for any π, and the first 100 steps
#
# The left plot is the loss a freshly built classroom model gives at step 0 for each π; the right one, precomputed,
# trains the classroom model from π = 0.01 and from π = 0.5 with the **classroom recipe**: GroupNorm in the subnets
# (it normalises each group of channels of an image), the focal loss, AdamW at 5e-3 (which scales each parameter's step
# by a running estimate of its gradient's size) and gradient clipping at norm 10 (which rescales the whole gradient when
# its norm exceeds 10), with no warm-up and a constant learning rate. *(Static pictures in this notebook are what the
# widgets showed when it was saved.)*

# %%
from retinanet_lab.widgets import ArchitectureView

ArchitectureView()

# %% [markdown]
# With the classroom recipe, π = 0.5 starts far higher and then recovers within a few steps. Does the prior not matter
# then? The paper's experience is the opposite: "Our first attempt to train RetinaNet uses standard cross entropy (CE)
# loss without any modifications to the initialization or learning strategy. This fails quickly, with the network
# diverging during training. However, simply initializing the last layer of our model such that the prior probability
# of detecting an object is π = .01 (see §4.1) enables effective learning" (§5.1). The paper trains with SGD
# (learning rate 0.01, momentum 0.9, weight decay 0.0001, 16 images per batch) and mentions neither gradient clipping
# nor warm-up. The runs below take the ingredients
# one at a time, on the classroom model with cross entropy, from π = 0.01 and from π = 0.5
# (precomputed by `python assets/make_ablations.py --only recipes`):

# %%
# NBVAL_CHECK_OUTPUT
import json
import textwrap

import matplotlib.pyplot as plt

from retinanet_lab.classroom import assets_dir

recipes = json.load(open(assets_dir() / "ablation_prior.json"))["recipes"]
labels = list(dict.fromkeys(r["label"] for r in recipes))
print(f"{'cross entropy, 100 steps from':64s} π = 0.01           π = 0.5")
for label in labels:
    cells = []
    for r in (r for r in recipes if r["label"] == label):
        first, last = r["loss"][0][1], r["loss"][-1][1]
        cells.append(f"{first:6.1f} → NaN (diverged)" if r["diverged"] else f"{first:6.1f} → {last:4.2f}")
    print(f"{label:64s} {cells[0]:18s} {cells[1]}")

# %%
fig, axes = plt.subplots(1, len(labels), figsize=(12, 3.3), sharey=True)
for ax, label in zip(axes, labels):
    for r in (r for r in recipes if r["label"] == label):
        steps, loss = [s for s, _, _ in r["loss"]], [c for _, c, _ in r["loss"]]
        line, = ax.plot(steps, loss, label=f"π = {r['prior']}")
        if r["diverged"]:
            ax.plot(steps[-1], loss[-1], "X", color=line.get_color(), ms=10, label="then NaN: diverged")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title("\n".join(textwrap.wrap(label, 30)), fontsize=9)
    ax.legend(fontsize=8)
axes[0].set_ylabel("classification loss (CE)")
fig.tight_layout()

# %% [markdown]
# With the subnets left unnormalised, as the paper's are (the classroom's two 64-channel convolutions each, not the
# paper's four of 256), and the paper's plain SGD, **π = 0.5 diverges within five steps**: the
# loss goes from 724 to 523, 59,792, 1.6 million, 10^18, and then NaN, while π = 0.01 trains. This is the paper's "fails
# quickly, with the network diverging", reproduced on the classroom model. Each of three ingredients, alone, hides it:
#
# * **GroupNorm in the subnets** (the classroom model has it): normalisation keeps the activations in range after the
#   first, huge update;
# * **gradient clipping** (norm 10): the first gradient, hundreds of times too large, becomes an ordinary step;
# * **AdamW**: each parameter's step is divided by a running estimate of its gradient's size, so a huge gradient gives
#   an ordinary step.
#
# With any of them π = 0.5 survives, but after 100 steps it is still behind π = 0.01 (6.7 to 7.2 against 5.5 to 6.4).
# These are single runs (one seed each): the divergence is a clear-cut event, the final values are not a ranking. The
# lesson is not "the prior does not matter because my recipe survives without it": the recipe is hiding an
# instability that the prior removes at its source, and a recipe that survives does not learn as well.

# %% [markdown]
# ## Recap
#
# * Backbone (C3-C5) → pyramid (P3-P7, C channels each) → two subnets shared by all levels: K·A sigmoid outputs and 4·A
#   box deltas per location.
# * The prior sets the last classification bias to b = −log((1 − π)/π), so that every output starts at p ≈ π = 0.01
#   and the background's loss starts small.
# * Without it, the first loss is far larger: about 70× under CE and 8,700× under FL at the paper's scale, over 100× in
#   the classroom's FL runs. With unnormalised subnets and SGD, cross entropy from π = 0.5 diverged within five steps,
#   as in the paper (§5.1); GroupNorm, gradient clipping or AdamW each hide the instability, they do not remove it.

# %% [markdown] tags=["questions"]
# ### Questions to think about
#
# 1. Why is the prior applied to the bias of the *last* classification layer only, and not to the box subnet?
# 2. The prior π = 0.01 makes every output start at p ≈ 0.01, positives included. What does that cost the positives at
#    the first step, and why is it worth it?
# 3. The classroom recipe trains π = 0.5 without diverging. Name two ingredients of that recipe that absorb the large
#    first loss, and say how each one does it.

# %% [markdown] tags=["teacher"]
# ### Answers (lesson 05)
#
# 1. The bias of the last layer sets the starting probability of every output directly (its weights are small and
#    zero-mean, σ = 0.01, so W·x ≈ 0 and the logit ≈ b). The box subnet's outputs are deltas, whose ideal starting
#    value is 0 (the anchor itself): there is no imbalance to correct there.
# 2. Each positive starts with CE = −log 0.01 = 4.6 (under FL: 0.25 × 0.99² × 4.6 = 1.13): a large loss, but only a few
#    dozen of them, against tens of thousands of negatives that now cost almost nothing (FL: 0.75 × 0.01² × 0.01 ≈ 8e-7
#    each). The total is dominated by the positives, which is what training should learn from.
# 3. Any two of three. Gradient clipping caps the norm of the whole gradient (10 here), so the first huge gradient
#    becomes a normal-sized step. Adam(W) divides each parameter's step by a running estimate of its gradient's size, so
#    a gradient 100× larger gives about the same step. GroupNorm in the subnets renormalises the activations after the
#    first large update, so they stay in range. The recipe plot shows each one alone is enough to survive π = 0.5.
#
# ### Teacher's notes: lesson 05
#
# **Before class.** Nothing to run ahead (about 10 s): the training curves are precomputed
# (`python assets/make_ablations.py --only prior` makes them again, about 15 minutes on 2 cores). Open Figure 3,
# §3.3, §4.1 and §5.1 "Network Initialization".
#
# **The live demo.** In the architecture view, drag π from 0.001 to 0.9 and read the first loss on the left plot
# (log scale): it rises by orders of magnitude past π ≈ 0.1. Then compare the two precomputed curves on the right, and
# then the recipe plot below, which is the point of the lesson: the same π = 0.5 that looks harmless with the classroom
# recipe diverges with unnormalised subnets and SGD, as the paper trains; each of GroupNorm, clipping and AdamW alone
# hides it.
#
# **The exercises** (15 min). The prior bias: the check names a flipped sign and log(π) (which is close to b for small
# π but wrong). The first loss: students must use p_t = 1 − π for the negatives, α for positives and 1 − α for
# negatives, and divide by the number of positives, not by all examples. The check's cases are counts chosen to isolate
# each term (then the paper's scale, 100 positives and 8 million negatives); a unit test confirms that the formula
# matches a fresh classroom model's loss at step 0.
#
# **Misconceptions.** "The prior changes the loss": it changes only the initialisation (§3.3). "π = 0.01 means 1% of
# anchors are positive": it is the starting probability of every output. "It does not matter since training
# recovers": the paper's first attempt, CE with SGD and no prior, "fails quickly, with the network diverging during
# training" (§5.1), and the recipe plot reproduces it; for both CE and FL the prior "improve[s] training stability"
# (§3.3). With AdamW, clipping or GroupNorm the classroom model survives, which hides the problem rather than removing
# it, and it still ends behind.
