# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. The focal loss
#
# - **Objectives.** After this lesson you can write the α-balanced focal loss from logits, say how much it down-weights
#   an example of a given p_t, explain what γ and α each do, and explain why it must be computed in log space.
# - **Prerequisites.** Lesson 01; binary cross entropy and the sigmoid; what a gradient is.
# - **Time.** 40 min in class
# - **Runs in.** 5 s on a 2-core laptop CPU
# - **Paper.** §3 (eq. 1-2), §3.1 (eq. 3), §3.2 (eq. 4-5), Figure 1, Appendix B (eq. 10).

# %% [markdown]
# A one-stage detector scores every (anchor, class) pair of an image, about 100,000 anchors at the paper's scale (§4.1),
# and all but a handful are background. With cross entropy, $\mathrm{CE}(p_t) = -\log(p_t)$, even an easy example
# (p_t ≫ 0.5) has a loss of "non-trivial magnitude" (§3), and summed over the many easy negatives these small losses
# overwhelm the few positives. The paper reshapes the loss (§3.2, eq. 4-5):
#
# $$\mathrm{FL}(p_t) = -\alpha_t (1 - p_t)^\gamma \log(p_t)$$
#
# * $p_t$ is the probability the model gives to the true answer: $p_t = p$ for a positive (y = 1) and $1 - p$ for a
#   negative (y = 0), with $p = \sigma(x)$ the sigmoid of the logit x (eq. 2).
# * The **modulating factor** $(1 - p_t)^\gamma$ is near 1 for a misclassified example (small p_t) and goes to 0 as
#   p_t → 1. γ = 0 gives cross entropy back; the paper uses γ = 2.
# * $\alpha_t$ is α for positives and 1 − α for negatives (eq. 3), a fixed weight per class; the paper uses α = 0.25.
#
# Module: `retinanet_lab/focal_loss.py`.

# %%
# NBVAL_CHECK_OUTPUT
from retinanet_lab.widgets.focal import focal_values

print("  p_t      CE        FL (γ = 2)    CE / FL")
for pt in (0.1, 0.5, 0.9, 0.968, 0.9684, 0.99):
    v = focal_values(pt, gamma=2.0)
    print(f"{pt:6.4f}   {v['CE']:.4f}   {v['FL']:.7f}   {v['down_weighting']:9,.1f}x")

# %% [markdown]
# The paper (§3.2): *"with γ = 2, an example classified with p_t = 0.9 would have 100× lower loss compared with CE
# and with p_t ≈ 0.968 it would have 1000× lower loss"*, while a misclassified example's loss "is scaled down by at
# most 4× for p_t ≤ .5". The table agrees: the factor is 1 / (1 − p_t)², 1.2× at p_t = 0.1, 4× at 0.5, 100× at 0.9,
# 977× at 0.968 and 1,001× at 0.9684 (exactly 1000× at p_t = 1 − 1/√1000 ≈ 0.96838, which the paper rounds to 0.968)
# and 10,000× at 0.99.
#
# ## Explore: Figure 1 for any γ and α
#
# Move γ and α, switch between the loss, the modulating factor and the gradient, and move the cursor along p_t.
# *(Static pictures in this notebook are what the widgets showed when it was saved; run the notebook in JupyterLab,
# or `voila` it, to move the sliders.)*

# %%
from retinanet_lab.widgets import FocalLossExplorer

FocalLossExplorer()

# %% [markdown]
# Things to try:
#
# * γ = 0 is cross entropy. Where does γ = 2 cut the loss by 100×? By 10,000×?
# * Turn on α-balancing and flip between foreground and background: α = 0.25 *down*-weights the rare positives. The
#   paper found that "lower α's are selected for higher γ's (as easy negatives are down-weighted, less emphasis needs
#   to be placed on the positives)" (§5.1, Table 1 (b)).
# * Look at the gradient dFL/dx with a log axis. For every γ it goes to 0 as p_t → 1, and more slowly the smaller γ is
#   (Appendix B, eq. 10: dFL/dx = y (1 − p_t)^γ (γ p_t log p_t + p_t − 1), where the paper's y is +1 for a positive and
#   −1 for a negative: 2y − 1 in this lesson's 0/1 labels). The gradient with respect to the logit is always finite.
#   What is infinite is the slope of the modulating factor with respect to **p_t**: d(1 − p_t)^γ / dp_t =
#   −γ (1 − p_t)^(γ−1), which goes to −∞ at p_t = 1 when 0 < γ < 1. The next section shows what that does to a
#   program.
#
# ## Why the loss is computed from logits, in log space
#
# `torchvision.ops.sigmoid_focal_loss` computes p = σ(x) first, then `(1 - p_t) ** γ`. At a confident logit such as
# x = 30, σ(30) rounds to exactly 1 in float32, so 1 − p_t = 0. Backpropagation multiplies the power's derivative
# γ · 0^(γ−1) = ∞ (for 0 < γ < 1) by the sigmoid's derivative p (1 − p) = 0, and ∞ · 0 = NaN: one such anchor turns
# every
# weight's gradient into NaN. The true gradient (eq. 10) is finite and nearly 0. The paper's own loss layer "combines
# the sigmoid operation for computing p with the loss computation, resulting in greater numerical stability" (§3.2);
# this lab goes one step further and computes log p_t and log(1 − p_t) with `logsigmoid`, and
# (1 − p_t)^γ = exp(γ log(1 − p_t)), which is finite with a finite gradient for every logit and every γ ≥ 0:

# %%
# NBVAL_CHECK_OUTPUT
import torch
from torchvision.ops import sigmoid_focal_loss

from retinanet_lab import focal_loss

x = torch.tensor([30.0, -30.0], requires_grad=True)  # confident, correct predictions
y = torch.tensor([1.0, 0.0])
for name, fn in (("torchvision", sigmoid_focal_loss), ("retinanet_lab", focal_loss)):
    x.grad = None
    fn(x, y, alpha=0.25, gamma=0.5).sum().backward()
    print(f"{name:14s} gradient at γ = 0.5, float32:", ", ".join(f"{g:.3g}" for g in x.grad.tolist()))

# eq. 10 times α_t, in float64, with the paper's s = ±1 for y, p_t = σ(s x) and 1 − p_t = σ(−s x) (no 1 − 0.99999...)
x64, s = x.detach().double(), 2 * y.double() - 1
pt, one_minus_pt = torch.sigmoid(s * x64), torch.sigmoid(-s * x64)
eq10 = torch.where(y == 1, 0.25, 0.75) * s * one_minus_pt**0.5 * (0.5 * pt * torch.log(pt) - one_minus_pt)
x64.requires_grad_(True)
focal_loss(x64, y.double(), alpha=0.25, gamma=0.5).sum().backward()
for name, grad in (("retinanet_lab", x64.grad), ("eq. 10", eq10)):
    print(f"{name:14s} gradient at γ = 0.5, float64:", ", ".join(f"{g:.3g}" for g in grad.tolist()))

# %% [markdown]
# In float64 the lab's gradient (autograd through its loss) is eq. 10's to within 0.3% (3.21e-20 against 3.22e-20:
# float64 rounds 1 + 1e-13 inside the cross entropy). In float32 it is finite and of the same tiny size but not equal:
# σ(30) rounds to exactly 1, so the p_t − 1 term of eq. 10 (about −1e-13 inside the bracket) is lost, an error of about
# 1e-20 that no update can notice. torchvision's NaN, on the other hand, spreads to every weight it reaches.

# %% [markdown]
# ## Exercise: write the focal loss
#
# Write `my_focal_loss(logits, targets, alpha=0.25, gamma=2.0)`. `logits` are the raw scores `x` of the classification
# subnet and `targets` the labels `y` (1 for the object's class, 0 otherwise), both of any shape, the same for both.
# Return the loss of **every element**, with the shape of `logits` (no sum, no mean: the training loop sums and divides
# by the number of positive anchors). The α-balanced focal loss (eq. 5) is
#
# $$\mathrm{FL}(p_t) = -\alpha_t\,(1 - p_t)^\gamma \log(p_t)$$
#
# with `p = sigmoid(x)`, `p_t = p` for `y = 1` and `1 - p` for `y = 0` (eq. 2), `α_t = α` for `y = 1` and `1 - α` for
# `y = 0` (eq. 3). `alpha=None` means no balancing (`α_t = 1`); `gamma=0` is cross entropy.
#
# Compute it **in log space from the logits**, as above: `log p = F.logsigmoid(x)`, `log(1 - p) = F.logsigmoid(-x)`, and
# `(1 - p_t)^γ = exp(γ · log(1 - p_t))`. Never `torch.log(torch.sigmoid(x))` or `1 - torch.sigmoid(x)`: for a confident
# prediction, `sigmoid` rounds to exactly 0 or 1, the log becomes `-inf`, and for 0 < γ < 1 the gradient of `(1 - p_t)
# ** γ`
# becomes NaN, as torchvision's showed. The check tests cross entropy, the modulating factor, α (α = 0 too), the
# paper's 100×, easy examples down-weighted but not dropped (10^4 ... 10^8 times below cross entropy), and the values
# and gradients at logits of ±200.

# %% tags=["exercise"]
import torch
import torch.nn.functional as F

from retinanet_lab.exercises import check_focal_loss

def my_focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    """FL = -α_t (1 - p_t)^γ log(p_t) of every element; logits and targets of the same shape -> that shape"""
    ### BEGIN SOLUTION
    log_p = F.logsigmoid(logits)                            # log p        (same shape as logits)
    log_1mp = F.logsigmoid(-logits)                         # log(1 - p)
    log_pt = targets * log_p + (1 - targets) * log_1mp      # log p_t      (eq. 2)
    log_1m_pt = targets * log_1mp + (1 - targets) * log_p   # log(1 - p_t)
    loss = -torch.exp(gamma * log_1m_pt) * log_pt           # (1 - p_t)^γ · CE, with CE = -log p_t  (eq. 1, 4)
    if alpha is not None:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)  # α for positives, 1 - α for negatives (eq. 3)
        loss = alpha_t * loss                               # eq. 5
    return loss
    ### END SOLUTION

print(check_focal_loss(my_focal_loss))

# %% [markdown]
# ## Recap
#
# * FL(p_t) = −α_t (1 − p_t)^γ log(p_t): cross entropy, times a factor that fades out the examples the model already
#   gets right, times a fixed per-class weight.
# * With γ = 2 an example at p_t = 0.9 weighs 100× less than under CE; a misclassified one (p_t ≤ 0.5) at most 4× less.
# * Compute it from logits, in log space: `logsigmoid` for log p and log(1 − p), `exp(γ · log(1 − p_t))` for the factor.
#   `log(sigmoid(x))` gives −∞, a clamp gives a finite but wrong value, and `(1 - p_t) ** γ` gives NaN gradients at
#   saturated logits when
#   0 < γ < 1.

# %% [markdown] tags=["questions"]
# ### Questions to think about
#
# 1. A background anchor scores p = 0.1 for some class. By how much does the focal loss (γ = 2, α = 0.25) reduce its
#    loss
#    compared with plain cross entropy? Which part of that is γ's and which α's?
# 2. Positives are rare, yet the best α for γ = 2 is 0.25, which gives the positives *less* weight than the negatives.
#    Why does that make sense once γ is there?
# 3. If every easy negative's loss is 1000× smaller, why not simply drop the easy negatives from the loss altogether?

# %% [markdown] tags=["teacher"]
# ### Answers (lesson 02)
#
# 1. For a negative, p_t = 1 − p = 0.9. CE = −log 0.9 = 0.105. FL = (1 − α)(1 − p_t)^γ CE = 0.75 × 0.01 × 0.105 =
#    0.00079: 133× less. γ's factor (1 − 0.9)² = 0.01 gives 100×; α's weight 0.75 gives the other 1.33×.
# 2. α and γ interact (§4.1, §5.1): γ already turns down most of the negatives' loss, so they no longer swamp the
#    positives;
#    what is left of the negatives is the hard ones, and a larger weight on the positives would now over-correct.
#    Table 1 (b): the best α falls from 0.75 at γ = 0 to 0.25 at γ ≥ 1.
# 3. That is what hard example mining does (OHEM, lesson 04), and the paper's Table 1 (d) finds FL better than the best
#    OHEM by 3.2 AP. FL keeps every example, with a weight that changes smoothly as the model learns; which examples
#    are "easy" is not fixed in advance, and an example that becomes hard again gets its weight back.
#
# ### Teacher's notes: lesson 02
#
# **Before class.** Nothing to run ahead (seconds). Open Figure 1 of the paper; on a projector, `voila
# notebooks/02_focal_loss.ipynb` shows the explorer without code.
#
# **The live demo.** In the explorer, start at γ = 0, then raise γ slowly while the cursor sits at p_t = 0.9: the
# numbers under the plot show the ratio to CE. Then switch to "gradient" with a log axis and point out that the
# gradient of a well-classified example goes to 0 for every γ, faster for larger γ. The torchvision cell prints
# `nan`: ask the class where a NaN can come from in a product of a power and a sigmoid (∞ · 0).
#
# **The exercise** (15 min). Students who compute cross entropy from the logits but the factor as `(1 - p_t) ** gamma`
# from `torch.sigmoid` pass the value cases and fail the gradient case at γ = 0.5 with the ∞ · 0 explanation; those who
# also take `torch.log(torch.sigmoid(x))` fail earlier, on the saturated values (−inf); students who clamp
# (`p.clamp(1e-7)`) fail the saturated
# values case (the loss of a confidently wrong example, logit 200, is 150, not 12). That failure is the point of the
# lesson: the fix is log space, not a smaller epsilon.
#
# **Misconceptions.** "FL ignores easy examples": it down-weights them smoothly; nothing is removed. "α is the inverse
# class frequency": with γ = 2 the best α (0.25) weighs the rare class *less*. "The gradient of FL is infinite for
# γ < 1": only the factor's slope with respect to p_t is; the loss's gradient with respect to the logit is finite.
