"""The exercises' checks as a mutation suite: for every exercise of `helpers.exercises.EXERCISES`, the reference
and differently written correct versions pass, and plausible wrong answers (each the reference with one mistake)
fail with one sentence that names the mistake and prints no line of the solution.

`CORRECT[key]` and `MUTANTS[key]` hold them; `test_every_exercise_has_its_mutants` keeps the table complete, and
`test_replay_gives_the_same_verdict` runs the reference and a mutant of every exercise through the class grader's
record-and-replay (instructor.grade), which must reach the verdict the check reached on the code itself.
"""
import json
import re
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import checks, course_unet, denoise, diffusion, flow_matching, guidance, ideal, samplers
from helpers.course_unet import ConditionalCourseUNet, CourseUNet
from helpers.exercises import EXERCISES, CheckFailed
from helpers.foundation import validate

ROOT = Path(__file__).resolve().parent.parent
CORRECT: dict[str, list] = {}   # key -> [(name, candidate)], the reference first
MUTANTS: dict[str, list] = {}   # key -> [(name, candidate, phrase its failure must contain)]


def correct(key: str, name: str, candidate) -> None:
    CORRECT.setdefault(key, []).append((name, candidate))


def mutant(key: str, name: str, candidate, match: str) -> None:
    MUTANTS.setdefault(key, []).append((name, candidate, match))


def check_of(key: str):
    exercise = next(e for e in EXERCISES if e.key == key)
    return getattr(checks, re.match(r"checks\.(\w+)\(", exercise.check).group(1))


def solution_lines(key: str) -> list[str]:
    """The lines inside the solution markers of the exercise's file (long enough to be code, not a word)."""
    exercise = next(e for e in EXERCISES if e.key == key)
    lines, inside = [], False
    for line in (ROOT / exercise.file).read_text().splitlines():
        if line.strip() == "### BEGIN " + "SOLUTION":
            inside = True
        elif line.strip() == "### END " + "SOLUTION":
            inside = False
        elif inside and len(line.strip()) >= 12:
            lines.append(line.strip())
    return lines


def verdict(key: str, candidate) -> str | None:
    """None when the check passes, else its sentence."""
    try:
        check_of(key)(candidate)
    except CheckFailed as failed:
        return str(failed)
    return None


# ---- 1.1 noising --------------------------------------------------------------------------------------------
def randn(x, generator):
    return torch.randn(x.shape, generator=generator, dtype=x.dtype)


correct("1.1", "reference", denoise.add_noise)
correct("1.1", "torch.normal around x",
        lambda x, sigma, generator=None: torch.normal(x, torch.full_like(x, sigma), generator=generator))
correct("1.1", "normal_ on an empty tensor",
        lambda x, sigma, generator=None: x + sigma * torch.empty_like(x).normal_(generator=generator))
mutant("1.1", "uniform on [0, 1]", lambda x, s, generator=None: x + s * torch.rand(x.shape, generator=generator),
       "uniform on \\[0, 1\\]")
mutant("1.1", "uniform on [-1, 1]",
       lambda x, s, generator=None: x + s * (2 * torch.rand(x.shape, generator=generator) - 1), "uniform eps")
mutant("1.1", "sigma squared", lambda x, s, generator=None: x + s ** 2 * randn(x, generator), "sigma squared")
mutant("1.1", "square root of sigma", lambda x, s, generator=None: x + s ** 0.5 * randn(x, generator),
       "square root of sigma")
mutant("1.1", "unscaled noise", lambda x, s, generator=None: x + randn(x, generator), "without being multiplied")
mutant("1.1", "sigma added", lambda x, s, generator=None: x + s + randn(x, generator),
       "adds sigma to the noise instead of multiplying")
mutant("1.1", "x scaled by 1 - sigma", lambda x, s, generator=None: (1 - s) * x + s * randn(x, generator),
       "scaled by 1 - sigma")
mutant("1.1", "noise times x", lambda x, s, generator=None: x + x * s * randn(x, generator), "multiplies x")
mutant("1.1", "one noise for the batch",
       lambda x, s, generator=None: x + s * torch.randn(x.shape[1:], generator=generator), "every image of the batch")
mutant("1.1", "one noise for the channels",
       lambda x, s, generator=None: x + s * torch.randn(x.shape[0], 1, *x.shape[2:], generator=generator),
       "every channel")
mutant("1.1", "x changed in place", lambda x, s, generator=None: x.add_(s * randn(x, generator)), "in place")
mutant("1.1", "global random state", lambda x, s, generator=None: x + s * torch.randn(x.shape),
       "same generator seed gave different noise")


def seeds_itself(x, sigma, generator=None):
    return x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))


mutant("1.1", "seeds its own generator", seeds_itself, "different seeds gave the same noise")
mutant("1.1", "no noise", lambda x, s, generator=None: x.clone(), "standard deviation 0.00")
mutant("1.1", "float64 noise", lambda x, s, generator=None: x + s * torch.randn(x.shape, generator=generator,
                                                                                 dtype=torch.float64), "dtype")


# ---- 1.2 the UNet operations (the candidate is a module namespace) ---------------------------------------------
def operations(**changes):
    ops = dict(conv=course_unet.conv, down_conv=course_unet.down_conv, up_conv=course_unet.up_conv)
    ops.update(changes)
    return types.SimpleNamespace(**ops)


def block(*layers):
    return lambda i, o: nn.Sequential(*[layer(i, o) for layer in layers])


def conv_layer(kernel=3, stride=1, padding=1):
    return lambda i, o: nn.Conv2d(i, o, kernel, stride, padding)


def norm(i, o):
    return nn.BatchNorm2d(o)


def gelu(i, o):
    return nn.GELU()


class FunctionalConv(nn.Module):
    """A hand-written block: bias-free convolution, BatchNorm, functional GELU."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=(3, 3), stride=stride, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return F.gelu(self.norm(self.conv(x)))


correct("1.2", "reference", course_unet)
correct("1.2", "hand-written modules, functional GELU",
        operations(conv=lambda i, o: FunctionalConv(i, o, 1), down_conv=lambda i, o: FunctionalConv(i, o, 2)))
correct("1.2", "upsample then convolve", operations(
    conv=lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding="same"), nn.BatchNorm2d(o), nn.GELU("tanh")),
    up_conv=lambda i, o: nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(i, o, 3, 1, 1), nn.BatchNorm2d(o),
                                       nn.GELU())))
mutant("1.2", "ReLU", operations(conv=block(conv_layer(), norm, lambda i, o: nn.ReLU())), "ReLU")
mutant("1.2", "SiLU", operations(up_conv=block(lambda i, o: nn.ConvTranspose2d(i, o, 4, 2, 1), norm,
                                               lambda i, o: nn.SiLU())), "SiLU")
mutant("1.2", "LeakyReLU", operations(down_conv=block(conv_layer(stride=2), norm, lambda i, o: nn.LeakyReLU())),
       "not GELU")
mutant("1.2", "no BatchNorm", operations(conv=block(conv_layer(), gelu)), "BatchNorm2d is missing")
mutant("1.2", "BatchNorm before the convolution",
       operations(conv=block(lambda i, o: nn.BatchNorm2d(i), conv_layer(), gelu)), "normalises the input before")
mutant("1.2", "GELU before BatchNorm", operations(conv=block(conv_layer(), gelu, norm)), "ends with BatchNorm")
mutant("1.2", "down_conv with stride 1", operations(down_conv=block(conv_layer(), norm, gelu)), "stride 1")
mutant("1.2", "conv without padding", operations(conv=block(conv_layer(padding=0), norm, gelu)), "no padding")
mutant("1.2", "1 x 1 conv", operations(conv=block(conv_layer(1, 1, 0), norm, gelu)), "reaches 1 x 1")
mutant("1.2", "1 x 1 down_conv", operations(down_conv=block(conv_layer(1, 2, 0), norm, gelu)), "3 x 3 kernel")
mutant("1.2", "3 x 3 up_conv", operations(up_conv=block(lambda i, o: nn.ConvTranspose2d(i, o, 3, 2, 1), norm, gelu)),
       "2H - 1")
mutant("1.2", "2 x 2 up_conv", operations(up_conv=block(lambda i, o: nn.ConvTranspose2d(i, o, 2, 2, 0), norm, gelu)),
       "4 x 4 transposed kernel")


# ---- 1.3 Flatten, Unflatten, Concat (the candidate is a CourseUNet class) --------------------------------------
def unet(flatten=None, unflatten=None, decode=None):
    """CourseUNet with Flatten or Unflatten built by `flatten(s, channels)` / `unflatten(s, channels)`, or decode
    replaced by `decode(self, skips, bottleneck, modulate_up1)`."""
    class Variant(CourseUNet):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            s, channels = self.image_size // 4, 2 * self.config["hidden"]
            if flatten:
                self.flatten = flatten(s, channels)
            if unflatten:
                self.unflatten = unflatten(s, channels)

        def decode(self, skips, bottleneck, modulate_up1=None):
            if decode is None:
                return super().decode(skips, bottleneck, modulate_up1)
            return decode(self, skips, bottleneck, modulate_up1)
    return Variant


class Lambda(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function(x)


def decoded(self, skips, bottleneck, modulate_up1, first=None, order=None, modulate=True):
    """The course's decode, with the skips fed in `order`, the first skip replaced, or modulate_up1 ignored."""
    h0, h1, h2 = skips
    h0 = h0 if first is None else first(h0)
    u1 = self.up1(torch.cat([h2, bottleneck] if order == "skip first" else [bottleneck, h2], dim=1))
    if modulate_up1 is not None and modulate:
        u1 = modulate_up1(u1)
    u2 = self.up2(torch.cat([u1, h1], dim=1))
    return self.head(self.conv_out(torch.cat([u2, h0], dim=1)))


correct("1.3", "reference", CourseUNet)
correct("1.3", "adaptive pooling, skip first in every concatenation",
        unet(flatten=lambda s, c: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.GELU()),
             decode=lambda self, *a: decoded(self, *a, order="skip first")))
correct("1.3", "mean in a lambda module", unet(flatten=lambda s, c: Lambda(lambda h: F.gelu(h.mean((2, 3), True)))))
mutant("1.3", "max pooling", unet(flatten=lambda s, c: nn.Sequential(nn.MaxPool2d(s), nn.GELU())), "maximum")
mutant("1.3", "no GELU in Flatten", unet(flatten=lambda s, c: nn.AvgPool2d(s)), "missing its GELU")
mutant("1.3", "GELU before pooling", unet(flatten=lambda s, c: nn.Sequential(nn.GELU(), nn.AvgPool2d(s))),
       "GELU before averaging")
mutant("1.3", "pooling size fixed at 7", unet(flatten=lambda s, c: nn.Sequential(nn.AvgPool2d(7), nn.GELU())),
       "not a fixed 7")
mutant("1.3", "Unflatten by upsampling", unet(unflatten=lambda s, c: nn.Sequential(
    nn.Upsample(scale_factor=s), nn.BatchNorm2d(c), nn.GELU())), "same value at every pixel")
mutant("1.3", "Unflatten without BatchNorm and GELU", unet(unflatten=lambda s, c: nn.ConvTranspose2d(c, c, s, s)),
       "GELU")
mutant("1.3", "Unflatten's size fixed at 7", unet(unflatten=lambda s, c: nn.Sequential(
    nn.ConvTranspose2d(c, c, 7, 7), nn.BatchNorm2d(c), nn.GELU())), "not \\[3, 8, 8, 8\\]|stride s")
mutant("1.3", "first skip dropped", unet(decode=lambda self, *a: decoded(self, *a, first=torch.zeros_like)),
       "first .* skip")
mutant("1.3", "modulate_up1 ignored", unet(decode=lambda self, *a: decoded(self, *a, modulate=False)),
       "modulate_up1 to nothing")


def bottleneck_lost(self, skips, bottleneck, modulate_up1):
    return decoded(self, skips, skips[2], modulate_up1)


mutant("1.3", "the bottleneck replaced by the skip", unet(decode=bottleneck_lost), "bottleneck does not reach")


# ---- 2.1, 3.1 conditioning (the candidate is a ConditionalCourseUNet class) ------------------------------------
def reference_time(model, t):
    t = t.view(-1, 1)
    return model.fc1_t(t)[:, :, None, None], model.fc2_t(t)[:, :, None, None]


def reference_class(model, labels, dtype):
    one_hot = F.one_hot(labels, model.num_classes + 1)[:, :model.num_classes].to(dtype)
    return model.fc1_c(one_hot)[:, :, None, None], model.fc2_c(one_hot)[:, :, None, None]


def conditional(time=reference_time, classes=reference_class):
    """ConditionalCourseUNet whose exercise lines are `time(model, t [B])` -> (t1, t2) and
    `classes(model, labels [B], dtype)` -> (c1, c2); the rest as the course's."""
    class Variant(ConditionalCourseUNet):
        def forward(self, x, t, labels=None):
            x, t, labels = validate.network_inputs(type(self).__name__, x, t, labels, self.in_channels,
                                                   self.image_size, self.num_classes)
            skips, bottleneck = self.encode(x)
            t1, t2 = time(self, t)
            if self.num_classes:
                c1, c2 = classes(self, labels, x.dtype)
                return self.decode(skips, c1 * bottleneck + t1, modulate_up1=lambda up1: c2 * up1 + t2)
            if self.time_modulation == "multiply":
                return self.decode(skips, bottleneck * t1, modulate_up1=lambda up1: up1 * t2)
            return self.decode(skips, bottleneck + t1, modulate_up1=lambda up1: up1 + t2)
    return Variant


def unsqueezed_time(model, t):
    t = t[:, None]
    return model.fc1_t(t).unsqueeze(-1).unsqueeze(-1), model.fc2_t(t).reshape(len(t), -1, 1, 1)


correct("2.1", "reference", ConditionalCourseUNet)
correct("2.1", "indexing and reshape", conditional(time=unsqueezed_time))
mutant("2.1", "no time", conditional(time=lambda m, t: (1.0, 1.0) if m.time_modulation == "multiply" else (0, 0)),
       "does not change with t")
mutant("2.1", "1 - t", conditional(time=lambda m, t: reference_time(m, 1 - t)), "1 - t")
mutant("2.1", "the first sample's time", conditional(time=lambda m, t: reference_time(m, t[:1].expand(len(t)))),
       "first sample.s time instead")
mutant("2.1", "t in [0, 1000]", conditional(time=lambda m, t: reference_time(m, 1000 * t)), "scaled by 1000")
mutant("2.1", "fc2_t left out", conditional(time=lambda m, t: (reference_time(m, t)[0], 1.0)), "fc2_t")
mutant("2.1", "t as a row", conditional(time=lambda m, t: (m.fc1_t(t.view(1, -1)), m.fc2_t(t.view(1, -1)))),
       "fails on t of shape")


def one_hot_by_eye(model, labels, dtype):
    vectors = torch.cat([torch.eye(model.num_classes), torch.zeros(1, model.num_classes)]).to(dtype)[labels]
    return model.fc1_c(vectors).view(len(labels), -1, 1, 1), model.fc2_c(vectors).view(len(labels), -1, 1, 1)


def null_as_class_zero(model, labels, dtype):
    return reference_class(model, labels % model.num_classes, dtype)


def ten_classes(model, labels, dtype):
    one_hot = F.one_hot(labels, 11)[:, :10].to(dtype)
    return model.fc1_c(one_hot)[:, :, None, None], model.fc2_c(one_hot)[:, :, None, None]


def without_null(model, labels, dtype):
    one_hot = F.one_hot(labels, model.num_classes).to(dtype)
    return model.fc1_c(one_hot)[:, :, None, None], model.fc2_c(one_hot)[:, :, None, None]


def long_one_hot(model, labels, dtype):
    one_hot = F.one_hot(labels, model.num_classes + 1)[:, :model.num_classes]
    return model.fc1_c(one_hot)[:, :, None, None], model.fc2_c(one_hot)[:, :, None, None]


correct("3.1", "reference", ConditionalCourseUNet)
correct("3.1", "rows of an identity matrix", conditional(classes=one_hot_by_eye))
mutant("3.1", "no class", conditional(classes=lambda m, labels, dtype: (1.0, 1.0)), "does not change with the labels")
mutant("3.1", "null label as class 0", conditional(classes=null_as_class_zero), "class 0's one-hot vector")
mutant("3.1", "the first sample's label",
       conditional(classes=lambda m, labels, dtype: reference_class(m, labels[:1].expand(len(labels)), dtype)),
       "first sample.s label instead")
mutant("3.1", "fc1_c left out", conditional(classes=lambda m, labels, dtype: (1.0, reference_class(m, labels, dtype)[1])),
       "fc1_c")
mutant("3.1", "ten classes hard-coded", conditional(classes=ten_classes), "4-class UNet .* fails")
mutant("3.1", "no room for the null label", conditional(classes=without_null), "null label 10 all zeros")
mutant("3.1", "integer one-hot vectors", conditional(classes=long_one_hot), "float one-hot")


# ---- 2.2 the flow-matching loss (written from the exercise's statement, one change each) ----------------------
def fm_loss(model, x0, labels=None, p_uncond=0.1, time_sampling="uniform", x1=None, change=None):
    n = x0.shape[0]
    if x1 is None or change == "ignores x1":
        x1 = torch.rand_like(x0) if change == "uniform noise" else torch.randn_like(x0)
    if time_sampling == "logit_normal" and change != "ignores time_sampling":
        t = torch.sigmoid(torch.rand(n) if change == "sigmoid of uniform" else torch.randn(n))
    else:
        t = torch.randn(n).abs() if change == "normal times" else torch.rand(n)
    t = t[:1].expand(n) if change == "one time" else t
    tb = t.view(-1, 1, 1, 1)
    x_t = tb * x0 + (1 - tb) * x1 if change == "swapped" else (1 - tb) * x0 + tb * x1
    if change == "unscaled data":
        x_t = x0 + tb * x1
    target = {"sign": x0 - x1, "noise only": x1, "data": x0, "second noise": torch.randn_like(x0) - x0}.get(change,
                                                                                                        x1 - x0)
    time_input = tb if change == "t as a column" else t
    if labels is None:
        prediction = model(x_t, time_input)
    else:
        null = 0 if change == "null is 0" else model.config["num_classes"]
        p = 1 - p_uncond if change == "1 - p" else p_uncond
        drop = torch.rand(n) < p if change != "one coin" else (torch.rand(1) < p).expand(n)
        prediction = model(x_t, time_input, torch.where(drop, torch.full_like(labels, null), labels))
    if change == "sum":
        return (prediction - target).pow(2).sum()
    if change == "per image sum":
        return (prediction - target).pow(2).flatten(1).sum(1).mean()
    return F.mse_loss(prediction, target)


def fm_changed(change):
    return lambda *args, **kwargs: fm_loss(*args, **kwargs, change=change)


def fm_loss_written_otherwise(model, x0, labels=None, p_uncond=0.1, time_sampling="uniform", x1=None):
    noise = torch.randn(x0.shape, dtype=x0.dtype) if x1 is None else x1
    t = flow_matching.training_times(len(x0), x0.device, x0.dtype, time_sampling)
    x_t = x0 + t[:, None, None, None] * (noise - x0)
    if labels is not None:
        labels = flow_matching.drop_labels(labels, p_uncond, model.config["num_classes"])
        return ((model(x_t, t, labels) - (noise - x0)) ** 2).mean()
    return ((noise - x0 - model(x_t, t)) ** 2).mean()


correct("2.2", "reference", flow_matching.loss)
correct("2.2", "written otherwise", fm_loss_written_otherwise)
correct("2.2", "from the statement", fm_loss)
for change, match in (("sign", "wrong sign"), ("noise only", "misses the data term"), ("data", "regresses the data"),
                      ("swapped", "swapped"), ("unscaled data", "without scaling the data down"),
                      ("ignores x1", "ignores the x1 it is given"), ("one time", "independently for each sample"),
                      ("normal times", "from 0|\\[0, 1\\]"), ("uniform noise", "standard normal"),
                      ("second noise", "other noise than x_t"), ("t as a column", "shape \\[64\\]"),
                      ("sum", "sums the squared errors: take their mean"), ("per image sum", "mean over pixels"),
                      ("ignores time_sampling", "ignores time_sampling"), ("sigmoid of uniform", "sigmoid"),
                      ("null is 0", "null label .* not 0"), ("1 - p", "1 - p_uncond instead"),
                      ("one coin", "drop each label on its own|no label was dropped")):
    mutant("2.2", change, fm_changed(change), match)


def fm_labels_in_place(model, x0, labels=None, p_uncond=0.1, time_sampling="uniform", x1=None):
    if labels is not None:
        labels[torch.rand(len(labels)) < p_uncond] = model.config["num_classes"]
    return fm_loss(model, x0, labels, 0.0, time_sampling, x1)


mutant("2.2", "labels dropped in place", fm_labels_in_place, "in place")
mutant("2.2", "labels not passed", lambda model, x0, labels=None, **kw: fm_loss(model, x0, **kw), "must be given labels")


# ---- 2.3 the Euler step ---------------------------------------------------------------------------------------
def euler(velocity, x, t, h, labels=None, at=lambda t, h: t, step=lambda x, h, v: x - h * v):
    return step(x, h, velocity(x, at(t, h), labels))


def heun(velocity, x, t, h, labels=None):
    return samplers.heun_step(velocity, x, t, h, labels)


def euler_in_place(velocity, x, t, h, labels=None):
    return x.sub_(h * velocity(x, t, labels))


correct("2.3", "reference", samplers.euler_step)
correct("2.3", "keyword labels, h as a negative dt",
        lambda velocity, x, t, h, labels=None: x + (-h) * velocity(x, t, labels=labels))
mutant("2.3", "at t - h", lambda v, x, t, h, labels=None: euler(v, x, t, h, labels, at=lambda t, h: t - h), "t - h")
mutant("2.3", "at 1 - t", lambda v, x, t, h, labels=None: euler(v, x, t, h, labels, at=lambda t, h: 1 - t), "1 - t")
mutant("2.3", "wrong way", lambda v, x, t, h, labels=None: euler(v, x, t, h, labels, step=lambda x, h, v: x + h * v),
       "wrong way")
mutant("2.3", "no step size", lambda v, x, t, h, labels=None: euler(v, x, t, h, labels, step=lambda x, h, v: x - v),
       "scale it by the step size")
mutant("2.3", "the change alone", lambda v, x, t, h, labels=None: euler(v, x, t, h, labels,
                                                                        step=lambda x, h, v: -h * v), "change alone")
mutant("2.3", "labels dropped", lambda v, x, t, h, labels=None: v(x, t) * -h + x, "pass the labels")
mutant("2.3", "a Heun step", heun, "evaluated 2 times")
mutant("2.3", "x changed in place", euler_in_place, "in place")


# ---- 3.2 classifier-free guidance -----------------------------------------------------------------------------
def cfg(model, gamma=5.0, combine=lambda c, u, g: u + g * (c - u), null=None, batched=True, no_labels=False):
    def velocity(x, t, labels):
        empty = torch.full_like(labels, model.config["num_classes"] if null is None else null)
        if batched:
            c, u = model(torch.cat([x, x]), t, torch.cat([labels, empty])).chunk(2)
        else:
            c, u = model(x, t, labels), model(x, t, None if no_labels else empty)
        return combine(c, u, gamma)
    return velocity


def cfg_in_place(model, gamma=5.0):
    def velocity(x, t, labels):
        c = model(x, t, labels)
        labels.fill_(model.config["num_classes"])
        return c + (gamma - 1) * (c - model(x, t, labels))
    return velocity


correct("3.2", "reference", guidance.classifier_free)
correct("3.2", "two calls, weights gamma and 1 - gamma",
        lambda m, g=5.0: cfg(m, g, combine=lambda c, u, g: g * c + (1 - g) * u, batched=False))
correct("3.2", "one batched call", cfg)
mutant("3.2", "starts from the conditional", lambda m, g=5.0: cfg(m, g, lambda c, u, g: c + g * (u - c)),
       "unconditional velocity with weight gamma instead of 1 - gamma")
mutant("3.2", "1 + gamma", lambda m, g=5.0: cfg(m, g, lambda c, u, g: (1 + g) * c - g * u), "1 \\+ gamma")
mutant("3.2", "no base term", lambda m, g=5.0: cfg(m, g, lambda c, u, g: g * (c - u)), "misses its base term")
mutant("3.2", "gamma times the conditional", lambda m, g=5.0: cfg(m, g, lambda c, u, g: g * c),
       "leaves the unconditional one out")
mutant("3.2", "null label 0", lambda m, g=5.0: cfg(m, g, null=0), "null label .* not 0")
mutant("3.2", "null label 10 hard-coded", lambda m, g=5.0: cfg(m, g, null=10), "\\(4\\), not 10")
mutant("3.2", "no labels for the unconditional", lambda m, g=5.0: cfg(m, g, batched=False, no_labels=True),
       "without labels")
mutant("3.2", "labels changed in place", cfg_in_place, "in place")


# ---- 4.1-4.8 diffusion ----------------------------------------------------------------------------------------
def forward_with(change=None):
    def forward(x0, t, alphas_cumprod, noise=None, generator=None):
        if noise is None or change == "ignores noise":
            noise = torch.randn(x0.shape) if change == "global RNG" else torch.randn(x0.shape, generator=generator)
        a = alphas_cumprod[t - 1 if change == "t - 1" else t]
        weights = {"no roots": (a, 1 - a), "swapped": ((1 - a).sqrt(), a.sqrt()), "noise root": (a.sqrt(), 1 - a),
                   "x0 unscaled": (1.0, (1 - a).sqrt()), "no noise": (a.sqrt(), 0.0)}
        x_weight, noise_weight = weights.get(change, (a.sqrt(), (1 - a).sqrt()))
        return x_weight * x0 + noise_weight * noise
    return forward


def forward_otherwise(x0, t, alphas_cumprod, noise=None, generator=None):
    eps = noise if noise is not None else torch.empty_like(x0).normal_(generator=generator)
    signal = alphas_cumprod[t] ** 0.5
    return torch.lerp(eps, x0, signal) + (torch.sqrt(1 - alphas_cumprod[t]) - (1 - signal)) * eps


correct("4.1", "reference", diffusion.forward)
correct("4.1", "written otherwise", forward_otherwise)
for change, match in (("no roots", "each weight needs its square root"), ("t - 1", "t - 1 instead of t"),
                      ("swapped", "swaps the weights"), ("noise root", "noise's weight is missing its square root"),
                      ("x0 unscaled", "x0 is not scaled down"), ("no noise", "noise term is missing"),
                      ("ignores noise", "ignores the noise it is given"), ("global RNG", "from the `generator`")):
    mutant("4.1", change, forward_with(change), match)


def estimate_with(change=None):
    def estimate_x0(x_t, t, eps, alphas_cumprod):
        a = alphas_cumprod[t - 1 if change == "t - 1" else t]
        if change == "plus":
            return (x_t + (1 - a).sqrt() * eps) / a.sqrt()
        if change == "no root":
            return (x_t - (1 - a).sqrt() * eps) / a
        if change == "noise root":
            return (x_t - (1 - a) * eps) / a.sqrt()
        if change == "no division":
            return x_t - (1 - a).sqrt() * eps
        return (x_t - (1 - a).sqrt() * eps) / a.sqrt()
    return estimate_x0


correct("4.2", "reference", diffusion.estimate_x0)
correct("4.2", "written otherwise", lambda x_t, t, eps, ac: ac[t].rsqrt() * x_t - ((1 - ac[t]) / ac[t]).sqrt() * eps)
for change, match in (("plus", "subtract it"), ("no root", "instead of its square root"), ("t - 1", "t - 1 instead"),
                      ("noise root", "missing its square root"), ("no division", "does not divide")):
    mutant("4.2", change, estimate_with(change), match)


def step_with(change=None):
    """ddpm_step written from the course's formulas, with one change."""
    def ddpm_step(x_t, t, t_prev, eps, alphas_cumprod, predicted=None, generator=None):
        t_prev = t - 1 if change == "t - 1" else t_prev
        a_t, a_p = alphas_cumprod[t], alphas_cumprod[t_prev]
        alpha = a_t / alphas_cumprod[t - 1] if change == "one-step alpha" else a_t / a_p
        beta = 1 - alpha
        x0 = diffusion.estimate_x0(x_t, t, eps, alphas_cumprod)
        x0 = {"clipped": x0.clamp(-1, 1), "eps as x0": eps}.get(change, x0)
        p, q = a_p.sqrt() * beta / (1 - a_t), alpha.sqrt() * (1 - a_p) / (1 - a_t)
        p, q = (q, p) if change == "swapped" else (p, q)
        mean = p * x0 + q * x_t
        if change == "no noise":
            return mean
        if change == "beta variance":
            return mean + beta.sqrt() * torch.randn(x_t.shape, generator=generator)
        if change == "variance as std":
            return mean + torch.exp(diffusion.posterior_log_variance(t, t_prev, alphas_cumprod, predicted)) * \
                torch.randn(x_t.shape, generator=generator)
        return diffusion.add_variance(mean, t, t_prev, alphas_cumprod, None if change == "ignores predicted" else
                                      predicted, None if change == "global RNG" else generator)
    return ddpm_step


correct("4.3", "reference", diffusion.ddpm_step)
correct("4.3", "from the course's formulas", step_with())
for change, match in (("t - 1", "went to t - 1"), ("one-step alpha", "one-step alpha"),
                      ("clipped", "clips x0_hat"), ("eps as x0", "in place of x0_hat"), ("swapped", "swaps the weights"),
                      ("no noise", "adds no noise"), ("beta variance", "beta as its variance"),
                      ("variance as std", "scaled by the variance itself"), ("ignores predicted", "ignores the predicted"),
                      ("global RNG", "from `generator`")):
    mutant("4.3", change, step_with(change), match)


def denoise_with(change=None):
    """iterative_denoise written from the exercise's statement, with one change."""
    def iterative_denoise(estimate, x, i_start, timesteps, alphas_cumprod, generator=None, after_step=None,
                          return_trajectory=False):
        start = {"late": i_start + 1, "from 0": 0}.get(change, i_start)
        stop = len(timesteps) - (2 if change == "early" else 1)
        trajectory = [] if change == "no start" else [x]
        for i in range(start, stop):
            t = timesteps[i]
            t_prev = t - 30 if change == "stride 30" else timesteps[i + 1]
            eps, predicted = estimate(x, t)
            x = diffusion.ddpm_step(x, t, t_prev, eps, alphas_cumprod, None if change == "drops predicted" else
                                    predicted, None if change == "no generator" else generator)
            if after_step is not None and change != "no after_step":
                edited = after_step(x, t if change == "after at t" else t_prev)
                x = x if change == "edit ignored" else edited
            trajectory.append(x)
        return (x, trajectory) if return_trajectory or change == "always pairs" else x
    return iterative_denoise


correct("4.4", "reference", diffusion.iterative_denoise)
correct("4.4", "from the statement", denoise_with())
for change, match in (("late", "one step late"), ("from 0", "ignores i_start"), ("early", "one step early"),
                      ("no after_step", "never called"), ("after at t", "the step started from"),
                      ("edit ignored", "what after_step returned"), ("no start", "entries|first entry"),
                      ("stride 30", "after_step was called at"), ("drops predicted", "predicted variance on"),
                      ("no generator", "pass the generator on"), ("always pairs", "return x alone")):
    mutant("4.4", change, denoise_with(change), match)


def sdedit_with(change=None):
    def sdedit(estimate, image, i_start, timesteps, alphas_cumprod, generator=None):
        t = {"index as t": i_start, "from the top": timesteps[0]}.get(change, timesteps[i_start])
        noise = torch.randn(image.shape, generator=None if change == "global RNG" else generator)
        x = image + (1 - alphas_cumprod[t]).sqrt() * noise if change == "unscaled" else \
            diffusion.forward(image, t, alphas_cumprod, noise=noise)
        x = image if change == "not noised" else x
        return diffusion.iterative_denoise(estimate, x, 0 if change == "starts at 0" else i_start, timesteps,
                                           alphas_cumprod, generator)
    return sdedit


correct("4.5", "reference", diffusion.sdedit)
correct("4.5", "from the statement", sdedit_with())
for change, match in (("index as t", "an index"), ("from the top", "noised to timesteps\\[0\\] = 990 instead"),
                      ("not noised", "as it is"), ("starts at 0", "timesteps\\[0\\]"),
                      ("unscaled", "without scaling the image down"), ("global RNG", "same seed differ")):
    mutant("4.5", change, sdedit_with(change), match)


def inpaint_with(change=None):
    def inpaint(estimate, image, mask, timesteps, alphas_cumprod, generator=None, return_trajectory=False):
        mask = mask.to(image.dtype)
        mask = 1 - mask if change == "inverted" else mask
        rng = None if change == "global RNG" else generator

        def keep(x, t):
            known = image if change == "clean" else diffusion.forward(image, t, alphas_cumprod, generator=rng)
            return mask * x + (1 - mask) * known

        def late(x, t):
            previous = timesteps[timesteps.index(t) - 1]
            return keep(x, previous)
        start = image.clone() if change == "from the image" else torch.randn(image.shape, generator=generator)
        start = keep(start, timesteps[0])
        after = {"late": late, "once": None}.get(change, keep)
        return diffusion.iterative_denoise(estimate, start, 0, timesteps, alphas_cumprod, generator, after,
                                           return_trajectory)
    return inpaint


correct("4.6", "reference", diffusion.inpaint)
correct("4.6", "from the statement", inpaint_with())
for change, match in (("inverted", "mask = 1 marks what the model paints"), ("clean", "pasted clean"),
                      ("late", "the step's start"), ("from the image", "start from pure noise"),
                      ("once", "only at the start"), ("global RNG", "same seed differ")):
    mutant("4.6", change, inpaint_with(change), match)


def anagram_with(change=None):
    def anagram(estimates, views):
        def estimate(x, t):
            pairs = [(e, views[0] if change == "first view" else v) for e, v in zip(estimates, views)]
            if change == "apply back":
                found = [v.apply(e(v.inverse(x), t)[0]) for e, v in pairs]
            elif change == "no inverse":
                found = [e(v.apply(x), t)[0] for e, v in pairs]
            else:
                found = [v.inverse(e(v.apply(x), t + (1 if change == "t + 1" else 0))[0]) for e, v in pairs]
            total = torch.stack(found).sum(0)
            return {"sum": total, "halves": total / 2}.get(change, total / len(found)), None
        return estimate
    return anagram


correct("4.7", "reference", diffusion.anagram)
correct("4.7", "summed in a loop", anagram_with())
for change, match in (("no inverse", "mapped back by the view's inverse"), ("sum", "average them"),
                      ("apply back", "looks through each view's inverse"), ("halves", "instead of the number of views"),
                      ("first view", "first view"), ("t + 1", "pass t on unchanged")):
    mutant("4.7", change, anagram_with(change), match)


def hybrid_with(change=None):
    def hybrid(low, high, kernel_size=33, sigma=2.0):
        k, s = (33, 2.0) if change == "fixed blur" else (kernel_size, sigma)

        def estimate(x, t):
            e_low, e_high = low(x, t)[0], high(x, t)[0]
            e_low, e_high = (e_high, e_low) if change == "swapped" else (e_low, e_high)
            low_part = e_low if change == "low unblurred" else diffusion.low_pass(e_low, k, s)
            high_part = {"no high pass": e_high, "wrong blur": e_high - diffusion.low_pass(e_low, k, s)}.get(
                change, e_high - diffusion.low_pass(e_high, k, s))
            total = low_part + high_part
            return (total / 2 if change == "halved" else total), None
        return estimate
    return hybrid


correct("4.8", "reference", diffusion.hybrid)
correct("4.8", "one blur of the difference", lambda low, high, kernel_size=33, sigma=2.0: (
    lambda x, t: (high(x, t)[0] + diffusion.low_pass(low(x, t)[0] - high(x, t)[0], kernel_size, sigma), None)))
for change, match in (("swapped", "swapped"), ("no high pass", "own low frequencies"),
                      ("wrong blur", "instead of the high estimate's own"), ("low unblurred", "not blurred"),
                      ("halved", "halves the sum"), ("fixed blur", "ignores kernel_size and sigma")):
    mutant("4.8", change, hybrid_with(change), match)


# ---- 5.1, 5.2 ideal machines ---------------------------------------------------------------------------------
def is_with(change=None):
    def ideal_denoiser(x_t, t, train, chunk=None):
        keys = train.flatten(1)
        distance = torch.cdist(x_t.flatten(1), (1 - t) * keys).pow(2)
        temperature = {"2 t": 2 * t, "no temperature": 1.0}.get(change, 2 * t ** 2)
        if change == "unscaled data":
            distance = torch.cdist(x_t.flatten(1), keys).pow(2)
        if change == "t as signal":
            distance = torch.cdist(x_t.flatten(1), t * keys).pow(2)
        weights = torch.softmax(-distance / temperature, dim=0 if change == "wrong axis" else 1)
        if change == "nearest":
            weights = F.one_hot(distance.argmin(1), len(train)).to(x_t.dtype)
        out = (weights @ keys).view_as(x_t)
        return {"mean": train.mean(0, keepdim=True).expand_as(x_t), "velocity": (x_t - out) / t}.get(change, out)
    return ideal_denoiser


correct("5.1", "reference", ideal.ideal_denoiser)
correct("5.1", "softmax over cdist", is_with())
for change, match in (("mean", "plain training mean"), ("nearest", "nearest training image"), ("2 t", "divides by 2 t"),
                      ("no temperature", "no temperature"), ("unscaled data", "instead of with x0_n scaled"),
                      ("t as signal", "by t instead of 1 - t"), ("velocity", "returns the velocity"),
                      ("wrong axis", "runs over the batch")):
    mutant("5.1", change, is_with(change), match)


def els_with(change=None):
    def els_denoiser(x_t, t, train, patch_size, chunk=None, group=64, deduplicate=False):
        p = patch_size
        mode = "constant" if change == "zero padding" else "circular"
        queries = F.unfold(F.pad(x_t, [p // 2] * 4, mode=mode), p).transpose(1, 2)             # [B, HW, P*P]
        source = F.pad(train, [p // 2] * 4, mode="circular") if change == "padded keys" else train
        keys = F.unfold(source, p).transpose(1, 2).reshape(-1, p * p)                            # [K, P*P]
        values = keys.mean(1) if change == "whole patch" else keys[:, (p * p) // 2]
        temperature = 2 * t if change == "2 t" else 2 * t ** 2
        logits = -torch.cdist(queries, (1 - t) * keys.expand(len(x_t), -1, -1)).pow(2) / temperature
        return (torch.softmax(logits, -1) @ values).view_as(x_t)
    return els_denoiser


correct("5.2", "reference", ideal.els_denoiser)
correct("5.2", "one softmax over unfolded patches", els_with())
for change, match in (("zero padding", "circularly"), ("whole patch", "centre pixel"), ("2 t", "divides by 2 t"),
                      ("padded keys", "wrap around")):
    mutant("5.2", change, els_with(change), match)
mutant("5.2", "LS instead of ELS", lambda x, t, train, p, **kw: ideal.local_denoiser(x, t, train, p), "every location")


# ---- the suite ----------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The checks run on one thread themselves; the mutants' own set-up (building UNets) too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_exercise_has_its_mutants():
    for exercise in EXERCISES:
        assert len(CORRECT.get(exercise.key, [])) >= 2, f"exercise {exercise.key}: the reference and another version"
        assert len(MUTANTS.get(exercise.key, [])) >= 3, f"exercise {exercise.key}: at least 3 wrong answers"
    assert set(CORRECT) | set(MUTANTS) <= {e.key for e in EXERCISES}


@pytest.mark.parametrize("key, name, candidate", [(k, n, c) for k, pairs in CORRECT.items() for n, c in pairs],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_correct_version_passes(key, name, candidate, capsys):
    assert verdict(key, candidate) is None, f"{key} {name}: {verdict(key, candidate)}"
    assert capsys.readouterr().out.strip().startswith(f"✓ exercise {key} ")


@pytest.mark.parametrize("key, name, candidate, match",
                         [(k, n, c, m) for k, found in MUTANTS.items() for n, c, m in found],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_mutant_fails_naming_its_mistake(key, name, candidate, match):
    sentence = verdict(key, candidate)
    assert sentence is not None, f"{key} {name}: the check passes a wrong answer"
    assert re.search(match, sentence), f"{key} {name}: {sentence!r} does not say {match!r}"
    assert "\n" not in sentence and ". " not in sentence.rstrip("."), f"not one sentence: {sentence}"
    for line in solution_lines(key):
        assert line not in sentence, f"{key} {name} prints the solution's line {line!r}"


REPLAYED = {"1.2": "ReLU", "1.3": "first skip dropped", "2.1": "1 - t", "3.1": "null label as class 0"}


def replayed(key: str, candidate) -> tuple[str | None, tuple[bool, str]]:
    """(the check's sentence on the recorded candidate, the class grader's verdict on replaying that record
    against the reference, instructor.grade.replay)."""
    from instructor.grade import replay
    from instructor.grade.inside import record, runner
    reference = CORRECT[key][0][1]
    recorder = record.Recorder()
    if isinstance(candidate, (types.ModuleType, types.SimpleNamespace)):
        wrapped = runner.Namespace(candidate, recorder)
    else:
        wrapped = recorder.student(candidate, "K" if isinstance(candidate, type) else "F")
    inside = verdict(key, wrapped)
    events = json.loads(json.dumps(recorder.events))
    return inside, replay.verdict(check_of(key), reference, events)


@pytest.mark.parametrize("key", [e.key for e in EXERCISES])
def test_replay_gives_the_same_verdict(key, capsys):
    """The class grader replays a check from the record of the student's code: every check must drive that code
    by calls only, so that the replay reaches the same verdict, for the reference and for a wrong answer."""
    inside, (passed, sentence) = replayed(key, CORRECT[key][0][1])
    assert inside is None and passed, f"{key} reference: {inside} / {sentence}"
    name = REPLAYED.get(key, MUTANTS[key][0][0])
    candidate = next(c for n, c, _ in MUTANTS[key] if n == name)
    inside, (passed, sentence) = replayed(key, candidate)
    assert inside is not None and not passed and sentence == inside, f"{key} {name}: {inside!r} / {sentence!r}"
