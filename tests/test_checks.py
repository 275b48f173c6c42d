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
correct("1.1", "torch.normal around x", lambda x, sigma, generator=None: torch.normal(x, float(sigma) + 0 * x,
                                                                                    generator=generator))
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
