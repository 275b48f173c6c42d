"""The hidden checks: stronger variants of each visible check, kept here only (never mounted in a sandbox,
never in the student edition).

Each case is a function returning (plan, judge). The plan is plain data the runner executes in the sandbox: call
the student's function on these inputs (other shapes and dtypes, other seeds, the operating points the visible
check leaves out: timesteps 990 to 0, t = 1 and t near 0, [0, 1] and [-1, 1] images, learned variances, other
strides, masks, views, kernel sizes, patch sizes), or build the student's block or UNet, load the course's
weights into it and run it. The judge, called outside on what came back, compares with the grader's own
reference kernels (`helpers`, imported normally here) or, where the student's code draws random numbers, with
the distribution they must follow; it returns None or one sentence naming what is wrong. The inputs are seeded,
so every student meets the same cases and a re-run decides the same.
"""
import math

import torch
import torch.nn.functional as F

from helpers import course_unet, diffusion, guidance, ideal
from helpers.exercises import ExerciseMissing
from instructor.grade.inside import vocab, wire
from instructor.grade.replay import rebuild, said


class Fail(Exception):
    """A hidden case's verdict: one sentence."""


class V:
    """A vocabulary callable in a plan (built by the runner inside, by `instructor.grade.inside.vocab`)."""

    def __init__(self, kind: str, **parameters):
        self.name, self.parameters = kind, parameters

    def local(self):
        """The same callable, built here for the reference computation."""
        return vocab.build(self.name, self.parameters)


def _hook(value):
    if isinstance(value, V):
        return {"V": value.name, "p": wire.encode(value.parameters)}
    return None


def call(*args, then=(), **kwargs) -> dict:
    return {"args": wire.encode(list(args), _hook), "kwargs": wire.encode(kwargs, _hook),
            "then": [{"args": wire.encode(list(a), _hook), "kwargs": wire.encode(k, _hook)} for a, k in then]}


def calls(module: str, attr: str, *items) -> dict:
    return {"kind": "calls", "module": module, "attr": attr, "calls": list(items)}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(seed: int, *shape, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=seeded(seed), dtype=dtype)


def rand(seed: int, *shape, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(*shape, generator=seeded(seed), dtype=dtype)


def alphas_cumprod() -> torch.Tensor:
    """The course's DDPM schedule (diffusers' DDPMScheduler defaults: linear betas 1e-4 to 0.02, T = 1000)."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


# ---------------------------------------------------------------- reading what came back
class Events:
    """The events of a calls task, taken in the plan's order."""

    def __init__(self, result: dict):
        events = result.get("events")
        if not isinstance(events, list):
            raise Fail("the grading record of this case is missing")
        self.events, self.position = events, 0

    def next(self) -> dict:
        if self.position >= len(self.events):
            raise Fail("the grading record of this case is incomplete (the code ended the process, or a call "
                       "recorded nothing)")
        event = self.events[self.position]
        self.position += 1
        if not isinstance(event, dict):
            raise Fail("the grading record of this case is not of the grader's format")
        return event


def _opaque(tree):
    return wire.Opaque("student", "a function of yours") if "S" in tree or "C" in tree or "M" in tree else None


def returned(event: dict, what: str):
    """The decoded return value of an event, or Fail with the error the student's code raised."""
    if "raise" in event:
        error = rebuild(event["raise"])
        raise Fail(str(error) if isinstance(error, ExerciseMissing) else f"{what} raised {said(error)}")
    if "ret" not in event:
        raise Fail(f"{what} returned nothing the grader could read")
    return wire.decode(event["ret"], _opaque)


def callbacks(event: dict) -> list[tuple[list, dict]]:
    """The inputs the student's code gave the case's callables, in order."""
    found = []
    for entry in event.get("cb", []):
        args = wire.decode(entry.get("args"), _opaque) if isinstance(entry, dict) else None
        if not (isinstance(args, list) and len(args) == 2 and isinstance(args[0], list) and isinstance(args[1], dict)):
            raise Fail("the grading record of this case is not of the grader's format")
        found.append((args[0], args[1]))
    return found


def tensor(value, what: str, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(value, tuple) and value and isinstance(value[0], torch.Tensor) and like is None:
        value = value[0]
    if not isinstance(value, torch.Tensor):
        raise Fail(f"{what} returned a {type(value).__name__}, not a tensor")
    if like is not None and tuple(value.shape) != tuple(like.shape):
        raise Fail(f"{what} returned shape {list(value.shape)}, not {list(like.shape)}")
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise Fail(f"{what} returned NaN or infinite values")
    return value.detach()


def close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=tol, rtol=tol))


def unchanged(event: dict, what: str) -> None:
    if event.get("mut"):
        raise Fail(f"{what} changed one of its inputs in place: return a new tensor")


def t_of(args: list, kwargs: dict, position: int = 1):
    value = args[position] if len(args) > position else kwargs.get("t")
    return torch.as_tensor(value, dtype=torch.float64)


# ---------------------------------------------------------------- 1.1 add_noise
def noise_identity_float64():
    x = randn(11, 3, 2, 5, 7, dtype=torch.float64)
    plan = calls("helpers.denoise", "add_noise", call(x, 0.0, V("generator", seed=11)))

    def judge(result):
        event = Events(result).next()
        z = tensor(returned(event, "add_noise(x, 0.0, generator)"), "add_noise on a [3, 2, 5, 7] float64 batch", x)
        if z.dtype != torch.float64:
            raise Fail(f"add_noise returned {z.dtype} for a float64 batch: draw the noise in x's dtype")
        if not close(z, x, 1e-12):
            raise Fail("with sigma = 0 a [3, 2, 5, 7] float64 batch must come back unchanged")
        unchanged(event, "add_noise")
    return plan, judge


def noise_standard_normal():
    x = torch.zeros(8, 3, 16, 16)
    plan = calls("helpers.denoise", "add_noise", call(x, 0.3, V("generator", seed=7)))

    def judge(result):
        eps = tensor(returned(Events(result).next(), "add_noise"), "add_noise", x) / 0.3
        if abs(eps.mean()) > 0.065 or abs(eps.std() - 1) > 0.05:
            raise Fail(f"over 6,144 draws at sigma = 0.3 the noise has mean {eps.mean():.3f} and standard deviation "
                       f"{eps.std():.3f}: eps must be standard normal, scaled by sigma")
    return plan, judge


def noise_linear_in_sigma():
    x = randn(5, 4, 1, 9, 9)
    plan = calls("helpers.denoise", "add_noise", call(x, 0.3, V("generator", seed=5)),
                 call(x, 2.0, V("generator", seed=5)))

    def judge(result):
        events = Events(result)
        small = tensor(returned(events.next(), "add_noise"), "add_noise", x)
        large = tensor(returned(events.next(), "add_noise"), "add_noise", x)
        if (small - x).std() < 0.1:
            raise Fail("at sigma = 0.3 add_noise added (almost) no noise")
        if not close(large - x, (2.0 / 0.3) * (small - x), 1e-4):
            raise Fail("with the same generator seed, sigma = 2.0 must add 2.0 / 0.3 times the noise of sigma = 0.3")
    return plan, judge


# ---------------------------------------------------------------- modules: 1.2, 1.3, 2.1, 3.1
def _randomise_norms(module: torch.nn.Module, seed: int) -> None:
    g = seeded(seed)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, torch.nn.BatchNorm2d):
                sub.weight.copy_(1 + 0.3 * torch.randn(sub.weight.shape, generator=g))
                sub.bias.copy_(0.3 * torch.randn(sub.bias.shape, generator=g))
                sub.running_mean.copy_(0.2 * torch.randn(sub.running_mean.shape, generator=g))
                sub.running_var.copy_(0.5 + torch.rand(sub.running_var.shape, generator=g))


def module_case(attr: str, args: tuple, kwargs: dict, train: bool, inputs: list, what: str, seed: int,
                tol: float = 1e-4):
    """Build the course's module, give its weights to the student's, run both on `inputs` (each a tuple of
    forward's arguments), compare."""
    torch.manual_seed(seed)
    reference = getattr(course_unet, attr)(*args, **kwargs)
    _randomise_norms(reference, seed + 1)
    reference.train(train)
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    with torch.no_grad():
        wants = [reference(*given) for given in inputs]
    plan = {"kind": "module", "module": "helpers.course_unet", "attr": attr, "args": wire.encode(list(args)),
            "kwargs": wire.encode(kwargs), "state": wire.encode(state), "train": train,
            "calls": [{"method": "", "args": wire.encode(list(i))} for i in inputs]}

    def judge(result):
        structure = result.get("structure")
        if structure is not None:
            if isinstance(structure, str):
                raise Fail(structure[:300])
            parts = []
            if structure.get("missing"):
                parts.append(f"lacks {', '.join(map(str, structure['missing'][:3]))}")
            if structure.get("extra"):
                parts.append(f"has {', '.join(map(str, structure['extra'][:3]))} that the course's has not")
            if structure.get("shapes"):
                k = structure["shapes"][0]
                parts.append(f"shapes {k[0]} as {k[1]}, not {k[2]}")
            raise Fail(f"{what} {' and '.join(parts) or 'differs from the course'}s: build it from the course's "
                       "layers in the course's order, so that the course's weights load into it")
        outputs = result.get("outputs")
        if not isinstance(outputs, list) or len(outputs) != len(inputs):
            raise Fail("the grading record of this case is incomplete")
        for item, given, want in zip(outputs, inputs, wants):
            got = tensor(returned(item, what), what)
            if got.shape != want.shape:
                raise Fail(f"{what} maps {[list(g.shape) for g in given if isinstance(g, torch.Tensor)][0]} to "
                           f"{list(got.shape)}, not {list(want.shape)}")
            if not close(got, want, tol):
                raise Fail(f"with the course's weights loaded, {what} differs from the course's by up to "
                           f"{(got.double() - want.double()).abs().max():.3g}")
    return plan, judge


def conv_train():
    return module_case("conv", (2, 6), {}, True, [(randn(21, 5, 2, 10, 10),)], "conv(2, 6) in training mode", 21)


def down_conv_eval():
    return module_case("down_conv", (4, 3), {}, False, [(randn(22, 2, 4, 9, 9),)],
                       "down_conv(4, 3) on a 9 x 9 input in eval mode", 22)


def up_conv_train():
    return module_case("up_conv", (3, 2), {}, True, [(randn(23, 2, 3, 7, 7),)], "up_conv(3, 2) in training mode", 23)


def unet_course_size():
    return module_case("CourseUNet", (), {"in_channels": 1, "hidden": 6, "image_size": 28}, False,
                       [(randn(31, 2, 1, 28, 28),)], "CourseUNet(1, hidden=6, image_size=28) in eval mode", 31)


def unet_colour_train():
    return module_case("CourseUNet", (), {"in_channels": 3, "hidden": 4, "image_size": 16}, True,
                       [(randn(32, 3, 3, 16, 16),)], "CourseUNet(3, hidden=4, image_size=16) in training mode", 32)


def time_per_sample():
    x, t = randn(41, 3, 1, 28, 28), torch.tensor([1.0, 0.5, 0.02])
    return module_case("ConditionalCourseUNet", (), {"hidden": 6, "image_size": 28}, False, [(x, t)],
                       "the time-conditioned UNet at t = [1.0, 0.5, 0.02]", 41)


def time_single_and_add():
    x = randn(42, 2, 1, 16, 16)
    return module_case("ConditionalCourseUNet", (), {"hidden": 4, "image_size": 16, "time_modulation": "add"}, True,
                       [(x, torch.tensor(0.7)), (x, 0.25)],
                       "the time-conditioned UNet with additive modulation and one time for the batch", 42)


def class_with_null():
    x, t = randn(51, 4, 1, 28, 28), torch.tensor([0.9, 0.4, 0.1, 0.6])
    return module_case("ConditionalCourseUNet", (), {"hidden": 6, "image_size": 28, "num_classes": 10}, False,
                       [(x, t, torch.tensor([0, 9, 10, 3]))], "the class-conditioned UNet on labels [0, 9, 10, 3]", 51)


def class_all_null():
    x = randn(52, 2, 1, 16, 16)
    return module_case("ConditionalCourseUNet", (), {"hidden": 4, "image_size": 16, "num_classes": 4}, True,
                       [(x, torch.tensor([0.3, 0.8]), torch.tensor([4, 4]))],
                       "the class-conditioned UNet on null labels only (num_classes = 4)", 52)


# ---------------------------------------------------------------- 2.2 flow-matching loss
def _model_calls(event, what):
    found = callbacks(event)
    if not found:
        raise Fail(f"{what} never called the model")
    return found


def loss_given_noise():
    x0, x1 = rand(61, 64, 1, 6, 6) * 2 - 1, randn(62, 64, 1, 6, 6)
    model = V("label_model", num_classes=10)
    plan = calls("helpers.flow_matching", "loss", call(model, x0, x1=x1))

    def judge(result):
        event = Events(result).next()
        value = returned(event, "loss(model, x0, x1=x1)")
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            raise Fail("the loss must be a scalar tensor")
        args, kwargs = _model_calls(event, "the loss")[-1]
        x_t, t = args[0], t_of(args, kwargs)
        if not isinstance(x_t, torch.Tensor) or t.shape != (64,):
            raise Fail("with 64 images the model must get x_t [64, 1, 6, 6] and one t per image, shape [64]")
        tb = t.view(-1, 1, 1, 1)
        if not close(x_t.double(), (1 - tb) * x0.double() + tb * x1.double(), 1e-5):
            raise Fail("with the noise x1 given, x_t is not (1 - t) x0 + t x1 (use the x1 passed in)")
        prediction = model.local()(x_t, t.float())
        want = F.mse_loss(prediction, x1 - x0)
        if not close(value.detach(), want.detach(), 1e-4):
            raise Fail("with the noise x1 given, the loss is not the mean squared error of model(x_t, t) against "
                       "x1 - x0")
    return plan, judge


def loss_time_sampling():
    x0 = torch.zeros(4000, 1, 1, 1)
    model = V("label_model", num_classes=10)
    plan = calls("helpers.flow_matching", "loss", call(model, x0, x1=x0.clone()),
                 call(model, x0, x1=x0.clone(), time_sampling="logit_normal"))

    def judge(result):
        events = Events(result)
        first, second = events.next(), events.next()
        returned(first, "loss")
        returned(second, "loss(..., time_sampling='logit_normal')")
        t = t_of(*_model_calls(first, "the loss")[-1])
        if t.shape != (4000,) or t.min() < 0 or t.max() > 1 or abs(t.mean() - 0.5) > 0.03 \
                or abs((t < 0.1).double().mean() - 0.1) > 0.025:
            raise Fail("over 4,000 samples t is not uniform on [0, 1], one per sample")
        t = t_of(*_model_calls(second, "the loss")[-1]).clamp(1e-7, 1 - 1e-7)
        n = torch.log(t / (1 - t))
        if abs(n.mean()) > 0.08 or abs(n.std() - 1) > 0.06:
            raise Fail("over 4,000 samples time_sampling='logit_normal' does not give t = sigmoid(n), n ~ N(0, 1)")
    return plan, judge


def loss_label_dropout():
    x0, labels = torch.zeros(4000, 1, 1, 1), torch.randint(0, 10, (4000,), generator=seeded(63))
    model = V("label_model", num_classes=10)
    plan = calls("helpers.flow_matching", "loss", call(model, x0, labels, p_uncond=0.3))

    def judge(result):
        event = Events(result).next()
        returned(event, "loss(model, x0, labels, p_uncond=0.3)")
        unchanged(event, "the loss")
        args, kwargs = _model_calls(event, "the loss")[-1]
        got = args[2] if len(args) > 2 else kwargs.get("labels")
        if not isinstance(got, torch.Tensor) or got.shape != labels.shape:
            raise Fail("the model must get one label per image (model(x_t, t, labels))")
        dropped = got == 10
        if not torch.equal(got[~dropped], labels[~dropped]):
            raise Fail("labels that are not dropped must reach the model unchanged")
        if abs(dropped.double().mean() - 0.3) > 0.03:
            raise Fail(f"{dropped.double().mean():.1%} of 4,000 labels became the null label at p_uncond = 0.3")
    return plan, judge


# ---------------------------------------------------------------- 2.3 Euler step
def euler_at_one():
    x, velocity = randn(71, 5, 1, 6, 6, dtype=torch.float64), V("affine_velocity", a=0.7, b=-1.3)
    plan = calls("helpers.samplers", "euler_step", call(velocity, x, 1.0, 0.01))

    def judge(result):
        event = Events(result).next()
        got = tensor(returned(event, "euler_step at t = 1"), "euler_step at t = 1", x)
        if not close(got, x - 0.01 * velocity.local()(x, 1.0), 1e-9):
            raise Fail("at t = 1 with h = 0.01 on a float64 batch the step is not x - h v(x, t)")
    return plan, judge


def euler_per_sample():
    x, velocity = randn(72, 5, 1, 4, 4), V("affine_velocity", a=-0.4, b=2.0)
    t, labels = torch.tensor([0.9, 0.5, 0.25, 0.05, 1.0]), torch.tensor([1, 2, 3, 4, 5])
    plan = calls("helpers.samplers", "euler_step", call(velocity, x, t, 0.05, labels))

    def judge(result):
        event = Events(result).next()
        got = tensor(returned(event, "euler_step"), "euler_step with one t per sample", x)
        if not close(got, x - 0.05 * velocity.local()(x, t, labels), 1e-5):
            raise Fail("with one t per sample and labels, the step is not x - h v(x, t, labels)")
    return plan, judge


# ---------------------------------------------------------------- 3.2 classifier-free guidance
def _guided(gamma, t, seed, labels=None):
    x = randn(seed, 4, 1, 5, 5)
    labels = torch.tensor([0, 3, 9, 5]) if labels is None else labels
    model = V("label_model", num_classes=10)
    plan = calls("helpers.guidance", "classifier_free", call(model, gamma, then=[((x, t, labels), {})]))

    def judge(result):
        events = Events(result)
        returned(events.next(), f"classifier_free(model, {gamma})")
        got = tensor(returned(events.next(), "the guided velocity"), "the guided velocity", x)
        want = guidance.classifier_free(model.local(), gamma)(x, t, labels)
        if not close(got, want, 1e-5):
            raise Fail(f"at gamma = {gamma:g} the guided velocity is not v(null) + gamma (v(c) - v(null))")
    return plan, judge


def guidance_strong():
    return _guided(7.5, 0.3, 81)


def guidance_one_label():
    return _guided(3.0, 0.55, 82, labels=torch.tensor([7]))


def guidance_negative():
    return _guided(-0.5, 0.8, 83)


# ---------------------------------------------------------------- 4.1 - 4.8 DDPM sampling tricks
AC = alphas_cumprod()
STRIDED = list(range(990, -1, -30))


def forward_operating_points():
    x0, noise = rand(91, 2, 3, 8, 8), randn(92, 2, 3, 8, 8)
    points = (990, 750, 510, 270, 30, 0)
    plan = calls("helpers.diffusion", "forward", *[call(x0, t, AC, noise=noise) for t in points])

    def judge(result):
        events = Events(result)
        for t in points:
            got = tensor(returned(events.next(), f"forward at t = {t}"), f"forward at t = {t}", x0)
            if not close(got, diffusion.forward(x0, t, AC, noise=noise), 1e-5):
                raise Fail(f"on [0, 1] images at t = {t} x_t is not sqrt(abar_t) x0 + sqrt(1 - abar_t) eps")
    return plan, judge


def forward_float64_last():
    x0, noise = rand(93, 3, 1, 6, 6, dtype=torch.float64) * 2 - 1, randn(94, 3, 1, 6, 6, dtype=torch.float64)
    plan = calls("helpers.diffusion", "forward", call(x0, 999, AC, noise=noise))

    def judge(result):
        got = tensor(returned(Events(result).next(), "forward at t = 999"), "forward at t = 999", x0)
        if not close(got, diffusion.forward(x0, 999, AC, noise=noise), 1e-6):
            raise Fail("on float64 [-1, 1] images at t = 999 (the last timestep) x_t is not sqrt(abar_t) x0 + "
                       "sqrt(1 - abar_t) eps")
    return plan, judge


def forward_drawn_noise():
    x0 = torch.zeros(20000, 1, 1, 1)
    plan = calls("helpers.diffusion", "forward", call(x0, 500, AC, generator=V("generator", seed=95)),
                 call(x0, 500, AC, generator=V("generator", seed=95)))

    def judge(result):
        events = Events(result)
        first = tensor(returned(events.next(), "forward"), "forward", x0)
        second = tensor(returned(events.next(), "forward"), "forward", x0)
        if not torch.equal(first, second):
            raise Fail("without `noise`, the same generator seed must give the same x_t: draw from `generator`")
        eps = first / (1 - AC[500]).sqrt()
        if abs(eps.mean()) > 0.04 or abs(eps.std() - 1) > 0.03:
            raise Fail("without `noise`, over 20,000 draws eps is not standard normal")
    return plan, judge


def estimate_operating_points():
    x_t, eps = randn(101, 2, 3, 8, 8), randn(102, 2, 3, 8, 8)
    points = (990, 600, 30, 1)
    plan = calls("helpers.diffusion", "estimate_x0", *[call(x_t, t, eps, AC) for t in points])

    def judge(result):
        events = Events(result)
        for t in points:
            got = tensor(returned(events.next(), f"estimate_x0 at t = {t}"), f"estimate_x0 at t = {t}", x_t)
            if not close(got, diffusion.estimate_x0(x_t, t, eps, AC), 1e-4):
                raise Fail(f"at t = {t} the estimate is not (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)")
    return plan, judge


def estimate_float64():
    x_t, eps = randn(103, 5, 3, 4, 4, dtype=torch.float64), randn(104, 5, 3, 4, 4, dtype=torch.float64)
    plan = calls("helpers.diffusion", "estimate_x0", call(x_t, 250, eps, AC))

    def judge(result):
        got = tensor(returned(Events(result).next(), "estimate_x0"), "estimate_x0 on float64", x_t)
        if not close(got, diffusion.estimate_x0(x_t, 250, eps, AC), 1e-6):
            raise Fail("on a float64 batch at t = 250 the estimate is not (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)")
    return plan, judge


def _ddpm_case(t, t_prev, seed, predicted=None):
    n = 20000
    x_t, eps = torch.full((n, 1, 1, 1), 0.3), torch.full((n, 1, 1, 1), -0.2)
    given = None if predicted is None else torch.full((n, 1, 1, 1), predicted)
    plan = calls("helpers.diffusion", "ddpm_step",
                 call(x_t, t, t_prev, eps, AC, given, V("generator", seed=seed)))
    where = f"the step {t} -> {t_prev}" + ("" if predicted is None else f" with a predicted variance v = {predicted}")

    def judge(result):
        got = tensor(returned(Events(result).next(), "ddpm_step"), "ddpm_step", x_t).double()
        mean = diffusion.posterior_mean(x_t[:1], diffusion.estimate_x0(x_t[:1], t, eps[:1], AC), t, t_prev, AC)
        std = torch.exp(0.5 * diffusion.posterior_log_variance(t, t_prev, AC, None if given is None else given[:1]))
        mean, std = float(mean.reshape(-1)[0]), float(std.reshape(-1)[0])
        if abs(got.mean().item() - mean) > 5 * std / math.sqrt(n) + 1e-6:
            raise Fail(f"at {where} the mean over 20,000 draws is {got.mean():.5f}, not the posterior mean {mean:.5f}")
        if abs(got.std().item() / std - 1) > 0.04:
            raise Fail(f"at {where} the noise's standard deviation is {got.std():.5f}, not {std:.5f}")
    return plan, judge


def ddpm_first():
    return _ddpm_case(990, 960, 111)


def ddpm_last():
    return _ddpm_case(30, 0, 112)


def ddpm_learned_variance():
    return _ddpm_case(510, 480, 113, predicted=0.5)


def _oracle_run(c, timesteps, i_start, predicted=None, seed=121):
    start = timesteps[i_start]
    x = AC[start].sqrt() * c + (1 - AC[start]).sqrt() * randn(seed, *c.shape)
    estimate = V("oracle", c=c, alphas_cumprod=AC, predicted=predicted)
    plan = calls("helpers.diffusion", "iterative_denoise",
                 call(estimate, x, i_start, timesteps, AC, V("generator", seed=seed), V("keep"), True))

    def judge(result):
        event = Events(result).next()
        out = returned(event, "iterative_denoise")
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], list)):
            raise Fail("with return_trajectory=True iterative_denoise must return (x, trajectory)")
        final = tensor(out[0], "iterative_denoise", c)
        asked = [int(t_of(a, k).reshape(-1)[0]) for a, k in callbacks(event) if len(a) == 2 and isinstance(a[0], torch.Tensor)
                 and a[0].shape == c.shape]
        steps = timesteps[i_start:]
        estimates, edits = asked[0::2], asked[1::2]
        if estimates != steps[:-1] or edits != steps[1:]:
            raise Fail(f"on the timesteps {timesteps[:3]}...{timesteps[-2:]} from i_start = {i_start} the estimate "
                       f"and after_step are not called at each visited timestep in turn")
        if len(out[1]) != len(steps):
            raise Fail(f"the trajectory has {len(out[1])} entries, not {len(steps)} (one per visited timestep)")
        if not close(final, c, 0.05):
            raise Fail(f"on the timesteps {timesteps[:3]}...{timesteps[-2:]} from i_start = {i_start}, denoising with "
                       "the exact estimate of a one-point data set does not end on it")
    return plan, judge


def denoise_other_stride():
    return _oracle_run(rand(131, 1, 1, 6, 6) * 2 - 1, list(range(990, -1, -90)), 3)


def denoise_learned_variance():
    c = rand(132, 1, 1, 5, 5) * 2 - 1
    return _oracle_run(c, STRIDED, 0, predicted=torch.full((1, 1, 5, 5), -0.5), seed=133)


def _sdedit_case(i_start, seed):
    image = rand(seed, 1, 1, 24, 24) * 2 - 1
    plan = calls("helpers.diffusion", "sdedit",
                 call(V("oracle", c=image, alphas_cumprod=AC), image, i_start, STRIDED, AC, V("generator", seed=seed)))

    def judge(result):
        event = Events(result).next()
        out = tensor(returned(event, "sdedit"), "sdedit", image)
        first = callbacks(event)
        if not first:
            raise Fail("sdedit never asked the noise estimate")
        x, t = first[0][0][0], int(t_of(*first[0]).reshape(-1)[0])
        if t != STRIDED[i_start]:
            raise Fail(f"with i_start = {i_start} the first step must be at timesteps[i_start] = {STRIDED[i_start]}, "
                       f"not {t}")
        residual = (x - AC[t].sqrt() * image) / (1 - AC[t]).sqrt()
        if abs(residual.mean()) > 0.3 or abs(residual.std() - 1) > 0.3:
            raise Fail(f"with i_start = {i_start} the start is not the image forward-noised to t = {t}")
        if not close(out, image, 0.05):
            raise Fail(f"with i_start = {i_start}, SDEdit with the image's own exact estimate must return the image")
    return plan, judge


def sdedit_high_noise():
    return _sdedit_case(1, 141)


def sdedit_low_noise():
    return _sdedit_case(25, 142)


def _inpaint_case(image, mask, seed):
    painted = torch.full_like(image, 0.7)
    plan = calls("helpers.diffusion", "inpaint",
                 call(V("oracle", c=painted, alphas_cumprod=AC), image, mask, STRIDED, AC, V("generator", seed=seed)))

    def judge(result):
        out = tensor(returned(Events(result).next(), "inpaint"), "inpaint", image)
        keep = (mask.to(image.dtype) == 0).expand_as(image)
        if not close(out[keep], image[keep], 0.05):
            raise Fail("pixels where the mask is 0 must end as the original image")
        if not close(out[~keep], painted[~keep], 0.05):
            raise Fail("pixels where the mask is 1 must be left to the model")
    return plan, judge


def inpaint_blob():
    mask = (rand(151, 1, 16, 16) > 0.6).float()
    return _inpaint_case(rand(152, 1, 1, 16, 16) * 2 - 1, mask, 153)


def inpaint_bool_colour():
    mask = torch.zeros(1, 12, 12, dtype=torch.bool)
    mask[:, 3:9, 2:7] = True
    return _inpaint_case(rand(154, 1, 3, 12, 12) * 2 - 1, mask, 155)


def _anagram_case(estimates, views, seed, what):
    x = randn(seed, 1, 1, 8, 8)
    plan = calls("helpers.diffusion", "anagram", call(estimates, [V("view", name=v) for v in views],
                                                      then=[((x, 500), {})]))

    def judge(result):
        events = Events(result)
        returned(events.next(), "anagram")
        got = returned(events.next(), "the anagram's estimate")
        want = diffusion.anagram([e.local() for e in estimates], [getattr(diffusion, v) for v in views])(x, 500)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise Fail("the anagram's estimate must return (eps, variance)")
        if not close(tensor(got[0], "the anagram's estimate", x), want[0], 1e-5):
            raise Fail(f"with {what} the estimate is not the mean of each view's estimate mapped back by its inverse")
        if (want[1] is None) != (got[1] is None) or (want[1] is not None and not close(got[1], want[1], 1e-5)):
            raise Fail(f"with {what} the variance is not each view's variance mapped back and averaged")
    return plan, judge


def anagram_three_views():
    return _anagram_case([V("mapped", operation=o) for o in ("scale2", "cumsum", "square")],
                         ["IDENTITY", "FLIP", "SKEW"], 161, "three prompts (identity, flip, skew)")


def anagram_variances():
    return _anagram_case([V("mapped", operation="sin", variance=0.5), V("mapped", operation="shift", variance=0.2)],
                         ["NEGATIVE", "FLIP"], 162, "predicted variances and the negative view")


def _hybrid_case(kernel, sigma, size, seed, variance):
    x = randn(seed, 1, 1, size, size)
    low, high = V("mapped", operation="sin", variance=variance), V("mapped", operation="square", variance=variance)
    plan = calls("helpers.diffusion", "hybrid", call(low, high, kernel, sigma, then=[((x, 500), {})]))

    def judge(result):
        events = Events(result)
        returned(events.next(), "hybrid")
        got = returned(events.next(), "the hybrid estimate")
        want = diffusion.hybrid(low.local(), high.local(), kernel, sigma)(x, 500)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise Fail("the hybrid estimate must return (eps, variance)")
        if not close(tensor(got[0], "the hybrid estimate", x), want[0], 1e-4):
            raise Fail(f"with a {kernel}-pixel blur of sigma {sigma:g} on {size} x {size} images the estimate is not "
                       "low_pass(eps_low) + eps_high - low_pass(eps_high)")
    return plan, judge


def hybrid_small_kernel():
    return _hybrid_case(5, 1.0, 20, 171, None)


def hybrid_default_kernel():
    return _hybrid_case(33, 2.0, 40, 172, 0.3)


# ---------------------------------------------------------------- 5.1, 5.2 ideal machines
def _machine(name, what, x_t, t, train, *extra, tol=1e-4, **kwargs):
    plan = calls("helpers.ideal", name, call(x_t, t, train, *extra, **kwargs))

    def judge(result):
        got = tensor(returned(Events(result).next(), name), name, x_t)
        want = getattr(ideal, name)(x_t, t, train, *extra, **kwargs)
        if not close(got, want, tol):
            raise Fail(f"{what}: the output differs from the posterior mean by up to "
                       f"{(got.double() - want.double()).abs().max():.3g}")
    return plan, judge


def is_pure_noise():
    train = rand(181, 6, 1, 6, 6) * 2 - 1
    return _machine("ideal_denoiser", "at t = 1 (pure noise, every training image equally likely)",
                    randn(182, 3, 1, 6, 6), 1.0, train)


def is_sharp_unit_scale():
    train = rand(183, 5, 1, 7, 7)
    x_t = 0.95 * train[[2, 4]] + 0.05 * randn(184, 2, 1, 7, 7)
    return _machine("ideal_denoiser", "on [0, 1] images at t = 0.05 (a sharp softmax)", x_t, 0.05, train)


def is_colour_chunks():
    train = rand(185, 7, 3, 4, 4) * 2 - 1
    return _machine("ideal_denoiser", "on 3-channel images with chunk = 2", randn(186, 2, 3, 4, 4), 0.4, train,
                    chunk=2)


def els_single_pixel():
    train = rand(191, 4, 1, 6, 6) * 2 - 1
    return _machine("els_denoiser", "with P = 1 (each pixel alone)", randn(192, 2, 1, 6, 6), 0.5, train, 1)


def els_large_patch():
    train = rand(193, 3, 1, 8, 8)
    return _machine("els_denoiser", "on [0, 1] images with P = 7 at t = 0.2", randn(194, 2, 1, 8, 8), 0.2, train, 7)


def els_groups():
    train = rand(195, 5, 1, 6, 6) * 2 - 1
    return _machine("els_denoiser", "with group = 2 and chunk = 5", randn(196, 2, 1, 6, 6), 0.7, train, 3,
                    chunk=5, group=2)


CASES = {
    "1.1": (noise_identity_float64, noise_standard_normal, noise_linear_in_sigma),
    "1.2": (conv_train, down_conv_eval, up_conv_train),
    "1.3": (unet_course_size, unet_colour_train),
    "2.1": (time_per_sample, time_single_and_add),
    "2.2": (loss_given_noise, loss_time_sampling, loss_label_dropout),
    "2.3": (euler_at_one, euler_per_sample),
    "3.1": (class_with_null, class_all_null),
    "3.2": (guidance_strong, guidance_one_label, guidance_negative),
    "4.1": (forward_operating_points, forward_float64_last, forward_drawn_noise),
    "4.2": (estimate_operating_points, estimate_float64),
    "4.3": (ddpm_first, ddpm_last, ddpm_learned_variance),
    "4.4": (denoise_other_stride, denoise_learned_variance),
    "4.5": (sdedit_high_noise, sdedit_low_noise),
    "4.6": (inpaint_blob, inpaint_bool_colour),
    "4.7": (anagram_three_views, anagram_variances),
    "4.8": (hybrid_small_kernel, hybrid_default_kernel),
    "5.1": (is_pure_noise, is_sharp_unit_scale, is_colour_chunks),
    "5.2": (els_single_pixel, els_large_patch, els_groups),
}


def names(key: str) -> list[str]:
    return [case.__name__ for case in CASES.get(key, ())]


def judge(judge_fn, result: dict) -> tuple[bool, str]:
    """(passed, sentence) of one hidden case on what its task returned."""
    try:
        judge_fn(result)
    except Fail as failed:
        return False, str(failed)
    except wire.WireError as error:
        return False, f"the grading record of this case is not of the grader's format ({error})"
    return True, "passes"

