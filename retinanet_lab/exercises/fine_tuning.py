"""Check for the fine-tuning lesson (10): a new final classification layer for new classes (paper §4,
"Classification Subnet", and §4.1, "Initialization": the new layers get a Gaussian weight fill with σ = 0.01; the
final conv layer of the classification subnet gets the bias b = -log((1 - π) / π), π = 0.01).

The student writes `fn(old: nn.Conv2d, num_anchors, num_classes, prior=0.01) -> nn.Conv2d`: a new layer in place
of `old`, with the same input channels, kernel size, stride and padding (3x3, padding 1: the map keeps its size),
num_anchors · num_classes outputs (one sigmoid per anchor and class, no background class), weights N(0, 0.01²) and
bias -log((1 - π) / π).

The cases inspect the module one property at a time (its type, in_channels on a layer with 48 != 256 input
channels, out_channels, kernel and stride, the output of a forward pass on a (1, 48, 10, 13) input, the bias,
the weights' mean, standard deviation and Gaussian tails measured on 11,664 weights, trainable and new; dilation and
groups; not a copy of the old weights), then a second layer with another prior (π = 0.05: no hard-coded -4.595, and
its weights still σ = 0.01, not π), and one in float64 (the new layer follows the
old one's dtype and device). The package does the same in `retinanet_lab.heads.new_classifier`, which
`retinanet_lab.train.replace_classifier` calls.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..heads import prior_bias
from ._check import Checker, CheckResult, fmt, pair

__all__ = ["check_new_classifier"]

_SIGMOID = ("RetinaNet's classifier has one sigmoid per anchor and class: each output answers 'is there an object of "
            "class k at this anchor?', and background is the answer 'no' from every class. A softmax classifier needs a "
            "background output; K sigmoids do not")


def _old_layer(in_channels: int, out_channels: int, dtype=torch.float32, seed: int = 0) -> nn.Conv2d:
    """A trained-looking old layer (weights N(0, 0.05²), biases near -3: neither a new layer's fill nor PyTorch's
    default, so a copy of it is recognised), the same every time, without touching the student's random generator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.normal_(layer.weight, std=0.05)
        nn.init.normal_(layer.bias, mean=-3.0, std=0.5)
        return layer.to(dtype)


def _std_hint(std: float, fan_in: int) -> tuple[str, str | None]:
    default = 1 / math.sqrt(3 * fan_in)  # PyTorch's kaiming_uniform_(a=√5): U(±1/√fan_in)
    if std == 0:
        return ("all the weights are 0: fill them from a Gaussian with mean 0 and σ = 0.01 (nn.init.normal_(w, "
                "std=0.01)); with zero weights every output is the bias alone, whatever the image", "zero_weights")
    if abs(std - 1e-4) < 2e-5:
        return (f"the weights' standard deviation is {fmt(std)}: you passed the variance 0.01² as the std. "
                "N(0, 0.01²) means σ = 0.01: nn.init.normal_(w, mean=0.0, std=0.01)", "variance_as_std")
    if abs(std - 0.01 / math.sqrt(3)) < 0.0005:
        return (f"the weights' standard deviation is {fmt(std)}: that of a uniform distribution on ±0.01 "
                "(nn.init.uniform_(w, -0.01, 0.01)). Detectron and torchvision draw from a Gaussian with σ = 0.01: "
                "nn.init.normal_(w, std=0.01)", "uniform_init")
    if abs(std - default) < 0.1 * default:
        return (f"the weights' standard deviation is {fmt(std)}, PyTorch's default initialisation of a new "
                f"nn.Conv2d (uniform, ±1/√fan_in). Detectron and torchvision fill this layer from a Gaussian with σ = 0.01: "
                "nn.init.normal_(conv.weight, std=0.01)", "default_init")
    a, b = pair(std, 0.01)
    return (f"the weights' standard deviation is {a}, expected {b} (σ = 0.01): nn.init.normal_(conv.weight, std=0.01)",
            "weight_std")


def _bias_hint(b: torch.Tensor, prior: float, fan_in: int) -> tuple[str, str | None]:
    want = prior_bias(prior)
    v = float(b[0])
    same = bool((b == b[0]).all())
    formula = (f"b = -log((1 - π) / π) = {fmt(want)} for π = {fmt(prior)}, so that σ(b) = π: at the start every anchor "
               "says 'object' with probability π, and the easy negatives' loss does not swamp the first iterations")
    if not same and float(b.abs().max()) <= 1 / math.sqrt(fan_in) + 1e-6:
        return f"the bias is PyTorch's default initialisation (small random values): set it to the prior, {formula}", "default_bias"
    if not same:
        return f"the bias must be the same for every output: {formula}", "bias_not_constant"
    for value, mid, text in (
        (0.0, "zero_bias", "the bias is 0 (σ(0) = 0.5: every anchor starts at 'object, 50%')"),
        (prior, "bias_is_prior", f"the bias is π = {fmt(prior)} itself; π is the probability, the bias is its logit"),
        (-want, "bias_sign", "the bias has the wrong sign (σ(b) = 1 - π: every anchor starts sure there is an object)"),
        (math.log(prior), "log_prior", f"the bias is log π = {fmt(math.log(prior))}; σ(log π) is not π. The logit of π is "
                                       "log(π / (1 - π))"),
        (prior_bias(0.01), "prior_hardcoded", f"the bias is -log(99) = {fmt(prior_bias(0.01))}, the value for π = 0.01, "
                                              "but this layer asked for another prior: compute it from `prior`"),
    ):
        if abs(v - value) < 1e-5 and abs(value - want) > 1e-4:
            return f"{text}. {formula}", mid
    g, w = pair(v, want)
    return f"the bias is {g}, expected {w}: {formula}", "bias_value"


def check_new_classifier(fn) -> CheckResult:
    """Check `fn(old: nn.Conv2d, num_anchors, num_classes, prior=0.01) -> nn.Conv2d`, a fresh last classification layer."""

    def body(c: Checker):
        a, k, cin = 9, 3, 48
        old = _old_layer(cin, a * 5)  # a classifier for 5 old classes, 48 input channels (the paper has 256)
        name = "returns a new nn.Conv2d (old layer: 48 -> 9·5 channels, 3x3, padding 1; new: A = 9, K = 3)"
        new = _new_layer(c, fn, name, old, a, k, None)
        c.ok(name)
        _check_shape(c, new, old, a, k, cin)
        _check_init(c, new, old, cin)
        _check_other_layers(c, fn)

    return Checker.run("new classification layer", body)


def _new_layer(c: Checker, fn, name: str, old: nn.Conv2d, a: int, k: int, prior: float | None) -> nn.Conv2d:
    """The student's layer for `old`, after the checks that it is a new nn.Conv2d and that `old` is untouched."""
    before = {n: p.detach().clone() for n, p in old.named_parameters()}
    args = (old, a, k) if prior is None else (old, a, k, prior)
    new = c.call(name, fn, *args, expect=None, error_hints=_ERRORS)
    if new is old:
        c.fail(f"{name}: you returned the old layer: build a new one, nn.Conv2d(old.in_channels, A · K, ...); the old "
               "one has the old classes' outputs", "returned_old")
    changed = [n for n, p in old.named_parameters() if p.shape != before[n].shape or not torch.equal(p.detach(), before[n])]
    if changed or old.out_channels != before["weight"].shape[0]:
        c.fail(f"{name}: the old layer was changed ({', '.join(changed) or 'out_channels'}): leave it as it is and "
               "return a new nn.Conv2d", "modified_old")
    if isinstance(new, nn.Module) and any(isinstance(m, nn.Sigmoid) for m in new.modules()):
        c.fail(f"{name}: you returned a {type(new).__name__} with a Sigmoid. Return the convolution alone: its outputs "
               "are logits, and the focal loss (computed from logits, stable in log space) and the post-processing "
               "apply the sigmoid themselves", "sigmoid_added")
    if not isinstance(new, nn.Conv2d):
        c.fail(f"{name}: your function returned {type(new).__name__}; return a torch.nn.Conv2d", "not_a_conv")
    return new


def _check_shape(c: Checker, new: nn.Conv2d, old: nn.Conv2d, a: int, k: int, cin: int) -> None:
    """in_channels, out_channels (A · K, no background), kernel and stride, and a forward pass keeping the map's size."""
    name = "in_channels: the old layer's (48 here)"
    msg = (f"in_channels is {new.in_channels}, expected {cin}: take it from the old layer, old.in_channels (the "
           "classroom model's subnet has 64 channels, the paper's 256)")
    c.require(name, new.in_channels == cin, msg, "in_channels_256" if new.in_channels == 256 else "in_channels")

    name = "out_channels: num_anchors · num_classes = 9 · 3 = 27"
    oc = new.out_channels
    wrong = {k: ("out_channels_K", f"out_channels is {oc} = K: one output per class *and anchor*: num_anchors · num_classes"),
             a * (k + 1): ("background_class", f"out_channels is {oc} = A · (K + 1): you added a background class. {_SIGMOID}"),
             old.out_channels: ("old_out_channels", f"out_channels is {oc}, the old layer's (its old 5 classes): "
                                "the new layer has num_anchors · num_classes outputs"),
             256: ("out_channels_256", f"out_channels is {oc}: the output has num_anchors · num_classes channels")}
    mid, msg = wrong.get(oc, ("out_channels", f"out_channels is {oc}, expected num_anchors · num_classes = {a * k}"))
    c.require(name, oc == a * k, msg, mid)

    name = "kernel size and stride: the old layer's (3x3, stride 1)"
    ks, st = tuple(new.kernel_size), tuple(new.stride)
    c.require(name, ks == tuple(old.kernel_size) and st == tuple(old.stride),
              f"kernel {ks[0]}x{ks[1]}, stride {st[0]}, expected {old.kernel_size[0]}x{old.kernel_size[1]}, stride "
              f"{old.stride[0]}: the paper's last layer is a 3x3 convolution like the others (old.kernel_size, "
              "old.stride)", "kernel_1" if ks == (1, 1) else "kernel")

    name = "dilation and groups: the old layer's (1 and 1: a plain 3x3 convolution over all the input channels)"
    dil, groups = tuple(new.dilation), new.groups
    c.require(name, dil == tuple(old.dilation) and groups == old.groups,
              f"dilation {dil[0]}, groups {groups}, expected {old.dilation[0]} and {old.groups}: the paper's last layer "
              "is a plain 3x3 convolution like the subnet's others, each output seeing every input channel; make it "
              "like `old` (old.dilation, old.groups)", "groups" if groups != old.groups else "dilation")

    name = "a forward pass: (1, 48, 10, 13) in, (1, 27, 10, 13) out"
    x = torch.randn(1, cin, 10, 13, generator=torch.Generator().manual_seed(1))
    try:
        with torch.no_grad():
            y = new(x)
    except Exception as e:
        c.fail(f"{name}: running your layer raised {type(e).__name__}: {e}", "forward_error")
    msg = (f"the output has shape {tuple(y.shape)}: the map must keep its 10 x 13 size, so pad by 1 on each side "
           "(padding=old.padding; a 3x3 kernel without padding shrinks it by 2)")
    c.require(name, tuple(y.shape) == (1, a * k, 10, 13), msg,
              "no_padding" if tuple(y.shape[-2:]) == (8, 11) else "output_shape")


def _check_init(c: Checker, new: nn.Conv2d, old: nn.Conv2d, cin: int) -> None:
    """The prior bias, the weights N(0, 0.01²) (mean, σ, Gaussian tails), trainable and not shared with `old`."""
    rows = old.weight[: new.weight.shape[0]].detach()
    if new.weight.shape == rows.shape and torch.equal(new.weight.detach(), rows):
        c.fail("weights: you copied the old layer's weights (its first outputs). They were trained to answer for the "
               "old classes; the new classes start afresh: weights N(0, 0.01²) (nn.init.normal_(w, std=0.01)) and the "
               "prior bias (§4.1)", "copied_old")
    name = f"bias: -log((1 - π) / π) = {fmt(prior_bias(0.01))} for the default π = 0.01"
    if new.bias is None:
        c.fail(f"{name}: your layer has no bias (bias=False): the prior π lives in the bias", "no_bias")
    msg, mid = _bias_hint(new.bias.detach().double(), 0.01, cin * 9)
    c.require(name, bool(torch.allclose(new.bias.detach().double(), torch.tensor(prior_bias(0.01), dtype=torch.float64),
                                        atol=1e-5)), msg, mid)

    w = new.weight.detach().double().flatten()
    std, mean = float(w.std()), float(w.mean())
    name = f"weights: mean 0, σ = 0.01 (measured on {w.numel():,} weights)"
    msg, mid = _std_hint(float(w.std()) if w.numel() > 1 else 0.0, cin * 9)
    c.require(name, abs(std - 0.01) < 0.001 and abs(mean) < 0.001,
              msg if abs(std - 0.01) >= 0.001 else f"the weights' mean is {fmt(mean)}: a Gaussian with mean 0",
              mid if abs(std - 0.01) >= 0.001 else "weight_mean")
    tails = float((w.abs() > 0.02).double().mean())
    name = "weights: Gaussian (about 4.6% beyond 2σ)"
    c.require(name, 0.03 < tails < 0.065,
              f"{100 * tails:.1f}% of the weights are beyond 2σ = 0.02, where a Gaussian has 4.6%: "
              + ("they look uniform; " if tails < 0.03 else "") + "use nn.init.normal_(w, std=0.01)", "not_gaussian")

    name = "a new, trainable layer"
    frozen = [n for n, p in new.named_parameters() if not p.requires_grad]
    c.require(name, not frozen, f"{' and '.join(frozen)} {'has' if len(frozen) == 1 else 'have'} requires_grad=False: "
              "the new layer is what fine-tuning trains; freeze the backbone, not the classifier", "frozen")
    c.require("shares no parameter with the old layer", new.weight is not old.weight and new.weight.data_ptr() != old.weight.data_ptr(),
              "the new layer shares its weight with the old one: create fresh parameters", "shared_weight")


def _check_other_layers(c: Checker, fn) -> None:
    """Another layer with another prior (π = 0.05: no hard-coded -4.595), and one in float64 (dtype and device follow)."""
    a2, k2, prior = 3, 2, 0.05
    old2 = _old_layer(20, 3 * 4, seed=1)
    name = "another layer: 20 input channels, A = 3, K = 2 (6 outputs), prior π = 0.05"
    new2 = _new_layer(c, fn, name, old2, a2, k2, prior)
    c.require(name, new2.out_channels == a2 * k2 and new2.in_channels == 20,
              f"in_channels {new2.in_channels} and out_channels {new2.out_channels}, expected 20 and {a2 * k2}",
              "out_channels")
    name = f"its bias for π = 0.05: -log(0.95 / 0.05) = -log(19) = {fmt(prior_bias(prior))}"
    if new2.bias is None:
        c.fail(f"{name}: your layer has no bias", "no_bias")
    msg, mid = _bias_hint(new2.bias.detach().double(), prior, 20 * 9)
    c.require(name, bool(torch.allclose(new2.bias.detach().double(), torch.tensor(prior_bias(prior), dtype=torch.float64),
                                        atol=1e-5)), msg, mid)
    w2 = new2.weight.detach().double().flatten()
    std2 = float(w2.std()) if w2.numel() > 1 else 0.0
    name = f"its weights: σ = 0.01 whatever the prior (measured on {w2.numel():,} weights)"
    msg, mid = (f"the weights' σ is {fmt(std2)}, the prior π = {fmt(prior)}: σ = 0.01 is the weights' fill for every "
                "new layer (§4.1, 'Gaussian weight fill with σ = 0.01'), π only sets the bias", "std_is_prior") \
        if abs(std2 - prior) < 0.1 * prior else _std_hint(std2, 20 * 9)
    c.require(name, abs(std2 - 0.01) < 0.0015, msg, mid)

    old3 = _old_layer(16, 9 * 2, dtype=torch.float64, seed=2)
    name = "an old layer in float64: the new one follows its dtype (and device)"
    new3 = _new_layer(c, fn, name, old3, 9, 2, None)
    c.require(name, new3.weight.dtype == torch.float64 and new3.weight.device == old3.weight.device,
              f"the new layer's weights are {new3.weight.dtype} on {new3.weight.device}, the old layer's "
              f"{old3.weight.dtype} on {old3.weight.device}: create it like the old one, "
              ".to(device=old.weight.device, dtype=old.weight.dtype), or the model fails on a GPU", "dtype_device")


_ERRORS = {
    "unexpected keyword argument 'prior'": ("no_prior_argument", "your function must take `prior` (default 0.01): "
                                            "def my_new_classifier(old, num_anchors, num_classes, prior=0.01)"),
    "takes 3 positional arguments but 4 were given": ("no_prior_argument", "your function must take a fourth argument, "
                                                      "`prior` (default 0.01)"),
}
