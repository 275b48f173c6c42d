"""Checks of flow matching (exercises 2.2, 2.3, 3.2) with small models whose answers are known: a model that
records what it is given and answers a fixed function of it, and the exact velocity of a one-point data set
x0 = c, v(x, t) = (x - c) / t.

Operating points: 2.2 with the noise given (exact path and target, images in [-1, 1] and in [0, 1], grey and
colour) and drawn (512 times: uniform, logit-normal), label dropout at p_uncond 0.1, 0.3 and 0 with 10 and 4
classes; 2.3 at (t, h) = (1, 0.25), (0.75, 0.25), (0.3, 0.1), (0.05, 0.02) with a velocity that depends on x
and t; 3.2 at gamma 5, 2, 0.5 and 7.5, t from 1 to 0.05, with 10 and 4 classes."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from helpers.checks.core import close, fail, generator, grades, name_the_mistake, shape_of, where


class Recorder(nn.Module):
    """model(x_t, t[, labels]) -> respond(x_t, t, labels), remembering every call's inputs."""

    def __init__(self, respond, num_classes: int = 0):
        super().__init__()
        self.config, self.respond, self.calls = {"num_classes": num_classes}, respond, []
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x_t, t, labels=None):
        self.calls.append((x_t.detach().clone(), t.detach().clone() if isinstance(t, torch.Tensor) else t,
                           None if labels is None else labels.detach().clone()))
        return self.respond(x_t, t, labels) + self.weight


def _answer(x_t, t, labels):
    """The recording model's answer: depends on x_t, so that every target gives another loss."""
    return 0.5 * x_t + 0.1


def _last_call(model, what: str):
    if not model.calls:
        fail(f"the loss never calls the model ({what}): the prediction is model(x_t, t)")
    return model.calls[-1]


def _times(t, n: int, what: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dim() == 0:
        fail(f"the model got t = {t!r} ({what}): give it one time per sample, a tensor of shape [{n}]")
    if t.shape != (n,):
        fail(f"the model got t of shape {list(t.shape)} ({what}): give it one time per sample, shape [{n}]")
    if t.min() < 0 or t.max() > 1:
        fail(f"the model got times from {float(t.min()):.3g} to {float(t.max()):.3g} ({what}): t lies in [0, 1]")
    if n > 1 and float(t.std()) == 0:
        fail(f"every sample got the same time ({what}): draw t independently for each sample")
    return t


def _value(value, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        fail(f"the loss returned {shape_of(value)} ({what}): return a scalar tensor, the mean squared error")
    return value.detach()


def _judge_value(value, prediction, x0, x1, what: str) -> None:
    """The loss against the mean squared error to the path's velocity, with the usual mistakes named."""
    velocity = x1 - x0
    if close(value, F.mse_loss(prediction, velocity), 1e-4):
        return
    named = (
        ((prediction - (x0 - x1)).pow(2).mean(), "the velocity target has the wrong sign: along the path from the "
                                                 "data (t = 0) to the noise (t = 1) it points towards the noise"),
        ((prediction - x1).pow(2).mean(), "the velocity target misses the data term: it is not the noise alone"),
        ((prediction - x0).pow(2).mean(), "the loss regresses the data x0: the model predicts the velocity of the "
                                          "path, not the clean image"),
        ((prediction - velocity).pow(2).sum(), "the loss sums the squared errors: take their mean (F.mse_loss)"),
        ((prediction - velocity).pow(2).flatten(1).sum(1).mean(), "the loss sums the squared errors over each "
                                                                  "image's pixels: take the mean over pixels too"),
        ((prediction - velocity).abs().mean(), "the loss takes the absolute error: it is the mean squared error"),
    )
    for expected, sentence in named:
        if close(value, expected, 1e-4):
            fail(f"{sentence} ({what})")
    other_noise = (prediction + x0).pow(2).mean() + 1   # the expected loss when the target's noise is another draw
    if abs(float(value - other_noise)) < 0.1:
        fail(f"the loss is {float(value):.4g} ({what}), what a target with other noise than x_t's gives: draw the "
             f"noise once (or take the x1 given) and use it in both x_t and the target")
    fail(f"the loss is {float(value):.4g} ({what}), but the mean squared error between the model's output and "
         f"the path's velocity is {float(F.mse_loss(prediction, velocity)):.4g}")


def _given_noise(loss) -> None:
    """With x1 given, the path and the target are exact: x_t on the straight path, MSE to its velocity."""
    points = (("64 grey images in [-1, 1], x1 given", torch.rand(64, 1, 4, 6, generator=generator(20)) * 2 - 1),
              ("16 colour images in [0, 1], x1 given", torch.rand(16, 3, 8, 8, generator=generator(21))))
    for what, x0 in points:
        x1 = torch.randn(x0.shape, generator=generator(22))
        model = Recorder(_answer)
        value = _value(loss(model, x0, x1=x1), what)
        x_t, t, labels = _last_call(model, what)
        if labels is not None:
            fail(f"the model got labels {shape_of(labels)} although the loss got none ({what}): call model(x_t, t)")
        t = _times(t, len(x0), what)
        tb = t.view(-1, *[1] * (x0.dim() - 1))
        want = (1 - tb) * x0 + tb * x1
        if not close(x_t, want, 1e-5):
            if close(x_t, tb * x0 + (1 - tb) * x1, 1e-5):
                fail(f"x_t has the weights of data and noise swapped ({what}): the path starts at the data (t = 0) "
                     f"and ends at the noise (t = 1)")
            if close(x_t, x0 + tb * x1, 1e-5):
                fail(f"x_t adds t x1 to the data without scaling the data down by 1 - t ({what})")
            implied = (x_t - (1 - tb) * x0) / tb
            if abs(float(implied.mean())) < 0.2 and abs(float(implied.std()) - 1) < 0.2 and not close(implied, x1, 1e-3):
                fail(f"the loss ignores the x1 it is given ({what}): when the caller passes x1, the path and the "
                     f"target use it")
            fail(f"x_t is not on the straight path from x0 at t = 0 to x1 at t = 1 ({what}), {where(x_t, want)}")
        _judge_value(value, _answer(x_t, t, None), x0, x1, what)


def _drawn_noise(loss) -> None:
    """Without x1 the loss draws it: standard normal, one per pixel, and t uniform on [0, 1]."""
    n, what = 512, "512 images in [0, 1], x1 drawn by the loss"
    x0 = torch.rand(n, 1, 2, 2, generator=generator(23))
    model = Recorder(_answer)
    value = _value(loss(model, x0), what)
    x_t, t, _ = _last_call(model, what)
    t = _times(t, n, what)
    spread = float((torch.sort(t).values - (torch.arange(n) + 0.5) / n).abs().max())
    if spread > 0.09:
        fail(f"the times are not uniform on [0, 1] ({what}: their distribution is {spread:.2f} away from the "
             f"uniform, mean {float(t.mean()):.2f}): draw t with torch.rand")
    keep = t > 0.05
    tb = t.view(-1, 1, 1, 1)
    x1 = (x_t - (1 - tb) * x0) / tb
    noise = x1[keep]
    if abs(float(noise.mean())) > 0.15 or abs(float(noise.std()) - 1) > 0.15:
        fail(f"the noise x1 that x_t implies has mean {float(noise.mean()):.2f} and standard deviation "
             f"{float(noise.std()):.2f} ({what}): draw x1 standard normal (torch.randn_like)")
    if torch.allclose(noise[0], noise[1], atol=1e-4):
        fail(f"every image got the same noise ({what}): draw x1 with x0's full shape")
    if not close(value, F.mse_loss(_answer(x_t, t, None), x1 - x0), 1e-3):
        fail(f"the loss is {float(value):.4g} ({what}), but the mean squared error to the velocity of the x1 inside "
             f"x_t is {float(F.mse_loss(_answer(x_t, t, None), x1 - x0)):.4g}: draw the noise once and use it in "
             f"both x_t and the target")


def _logit_normal(loss) -> None:
    n, what = 512, "time_sampling='logit_normal'"
    model = Recorder(_answer)
    loss(model, torch.rand(n, 1, 2, 2, generator=generator(24)), time_sampling="logit_normal")
    t = _times(_last_call(model, what)[1], n, what)
    logit = torch.logit(t.double().clamp(1e-12, 1 - 1e-12))
    spread = float((torch.sort(t).values - (torch.arange(n) + 0.5) / n).abs().max())
    if spread < 0.09:
        fail(f"with {what} the times are uniform: the loss ignores time_sampling")
    if abs(float(logit.mean())) > 0.15 or abs(float(logit.std()) - 1) > 0.15:
        fail(f"with {what} the times' logits log(t / (1 - t)) have mean {float(logit.mean()):.2f} and standard "
             f"deviation {float(logit.std()):.2f}, not 0 and 1: t is the sigmoid of a standard normal number")


def _label_dropout(loss) -> None:
    n = 2000
    for classes, p in ((10, 0.1), (4, 0.3), (10, 0.0)):
        what = f"p_uncond = {p:g}, {classes} classes"
        model = Recorder(lambda x_t, t, labels: torch.zeros_like(x_t), num_classes=classes)
        labels = torch.arange(n) % classes
        loss(model, torch.zeros(n, 1, 2, 2), labels, p_uncond=p)
        got = _last_call(model, what)[2]
        if got is None:
            fail("a class-conditioned model must be given labels: call model(x_t, t, labels) when the loss has labels")
        if not torch.equal(labels, torch.arange(n) % classes):
            fail("the loss changed the caller's labels in place: drop labels in a new tensor")
        if not isinstance(got, torch.Tensor) or got.shape != labels.shape:
            fail(f"the model got labels {shape_of(got)} ({what}), not one per sample [{n}]")
        dropped = got != labels
        others = got[dropped & (got != classes)]
        if len(others):
            fail(f"dropped labels must become the null label model.config['num_classes'] (here {classes}), not "
                 f"{int(others[0])}")
        share = float(dropped.float().mean())
        if p == 0 and share > 0:
            fail(f"{share:.0%} of the labels were dropped at p_uncond = 0: drop with probability p_uncond")
        if p == 0:
            continue
        if share == 0:
            fail(f"no label was dropped at p_uncond = {p:g}: replace each label by the null label with probability "
                 f"p_uncond")
        if share == 1:
            fail(f"every label was dropped at p_uncond = {p:g}: drop each label on its own, with probability p_uncond")
        if abs(share - (1 - p)) < 0.05:
            fail(f"{share:.0%} of the labels were dropped at p_uncond = {p:g}: it drops with probability 1 - p_uncond "
                 f"instead of p_uncond")
        if abs(share - p) > 4 * math.sqrt(p * (1 - p) / n) + 0.01:
            fail(f"{share:.0%} of the labels were dropped at p_uncond = {p:g}: drop each label independently with "
                 f"probability p_uncond")


@grades("2.2")
def flow_matching_loss(loss):
    """loss(model, x0, labels=None, p_uncond=0.1, time_sampling="uniform", x1=None): x_t on the straight path from
    the data (t = 0) to the noise x1 (t = 1), one uniform t per sample, the MSE of model(x_t, t) against the
    path's velocity; logit-normal times on request; labels dropped to the null label with probability p_uncond."""
    _given_noise(loss)
    _drawn_noise(loss)
    _logit_normal(loss)
    _label_dropout(loss)


# ---- 2.3 ------------------------------------------------------------------------------------------------------
STEPS = ((1.0, 0.25), (0.75, 0.25), (0.3, 0.1), (0.05, 0.02))   # (t, h): from pure noise to the data end


@grades("2.3")
def euler_step(euler_step):
    """euler_step(velocity, x, t, h, labels=None): one evaluation of the velocity at (x, t), one step of size h
    from t towards 0; labels passed on; the exact velocity of a one-point data set lands on it."""
    for i, (t, h) in enumerate(STEPS):
        shape = (3, 1, 4, 6) if i % 2 == 0 else (2, 3, 5, 5)
        x, slope = torch.randn(shape), torch.randn(shape)
        original, calls = x.clone(), []

        def velocity(y, s, labels=None):
            calls.append((y.clone(), s, labels))
            return 0.5 * y + float(s) * slope + 0.1
        out = euler_step(velocity, x, t, h)
        what = f"at t = {t:g} with h = {h:g},"
        if not torch.equal(x, original):
            fail("euler_step changed x in place: return a new tensor")
        if len(calls) != 1:
            fail(f"{what} the velocity was evaluated {len(calls)} times: an Euler step evaluates it once, at (x, t)")
        y, s, _ = calls[0]
        s = float(s)
        if abs(s - t) > 1e-6:
            named = {t - h: "at t - h, the end of the step: evaluate it at the current time t",
                     1 - t: "at 1 - t: time runs from the noise at t = 1 to the data at t = 0, so use t itself",
                     t + h: "at t + h: evaluate it at the current time t"}
            for value, sentence in named.items():
                if abs(s - value) < 1e-6:
                    fail(f"{what} the velocity was evaluated {sentence}")
            fail(f"{what} the velocity was evaluated at t = {s:g}, not at the current time {t:g}")
        if not torch.equal(y, x):
            fail(f"{what} the velocity was evaluated at another x than the current one")
        v = velocity(x, t)
        if not close(out, x - h * v, 1e-6):
            named = ((x + h * v, "the step goes the wrong way: integration runs from t = 1 to t = 0, towards "
                                 "smaller t"),
                     (x - v, "the step moves x by the whole velocity: scale it by the step size h"),
                     (x - h * h * v, "the step scales the velocity by h squared: by h itself"),
                     (x - v / h, "the step divides the velocity by h: multiply it by h"),
                     (-h * v, "the step returns the change alone: add it to x"))
            for expected, sentence in named:
                if close(out, expected, 1e-6):
                    fail(f"{what} {sentence}")
            fail(f"{what} the step differs from one Euler step of size h towards t = 0, {where(out, x - h * v)}")
    labels, calls = torch.tensor([1, 2, 3]), []
    euler_step(lambda y, s, labels=None: calls.append(labels) or torch.zeros_like(y), torch.randn(3, 1, 2, 2), 0.5,
               0.5, labels)
    if not calls or calls[-1] is None or not torch.equal(torch.as_tensor(calls[-1]), labels):
        fail("pass the labels on to the velocity: velocity(x, t, labels)")
    for steps in (4, 10):
        c, x = torch.randn(1, 1, 4, 4), torch.randn(3, 1, 4, 4)
        for i in range(steps):
            x = euler_step(lambda y, s, labels=None: (y - c) / s, x, 1.0 - i / steps, 1.0 / steps)
        if not close(x, c.expand_as(x), 1e-4):
            fail(f"{steps} Euler steps from t = 1 to 0 with the exact velocity of a one-point data set do not land on it")


# ---- 3.2 ------------------------------------------------------------------------------------------------------
class _LabelEcho(nn.Module):
    """A class-conditioned velocity whose value is its label (plus a part that depends on x and t), so that
    guidance's arithmetic is visible; labels=None is remembered, and answered as label -5."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.config, self.num_classes, self.seen = {"num_classes": num_classes, "name": "echo"}, num_classes, []

    def forward(self, x, t, labels=None):
        self.seen.append((t, None if labels is None else torch.as_tensor(labels).clone()))
        value = torch.full((x.shape[0],), -5.0) if labels is None else torch.as_tensor(labels).to(x.dtype)
        time = torch.as_tensor(t, dtype=x.dtype)
        time = time.view(-1, *[1] * (x.dim() - 1)) if time.numel() == x.shape[0] else time.reshape(-1)[0]
        return value.view(-1, *[1] * (x.dim() - 1)) + 0.25 * x + time


GUIDANCE = (   # (gamma, t, classes, labels, x shape)
    (5.0, 0.5, 10, [3, 7, 1, 9], (4, 1, 5, 7)),
    (2.0, 1.0, 4, [1, 3], (2, 3, 4, 4)),
    (0.5, 0.05, 10, [2, 2, 8], (3, 1, 6, 6)),
    (7.5, 0.75, 10, [5], (1, 1, 4, 4)),
)


@grades("3.2")
def classifier_free_guidance(classifier_free):
    """classifier_free(model, gamma)(x, t, labels): the unconditional velocity (null label
    model.config['num_classes']) extrapolated towards the conditional one by gamma."""
    for gamma, t, classes, label_list, shape in GUIDANCE:
        model, x = _LabelEcho(classes), torch.randn(shape)
        labels = torch.tensor(label_list)
        out = classifier_free(model, gamma)(x, t, labels)
        what = f"at gamma = {gamma:g} and t = {t:g} ({classes} classes)"
        if not torch.equal(labels, torch.tensor(label_list)):
            fail("guidance changed the caller's labels in place: build the null labels in a new tensor")
        if any(seen is None for _, seen in model.seen):
            fail(f"the unconditional velocity was asked without labels ({what}): give the model the null label "
                 f"model.config['num_classes'] ({classes}) for it")
        seen = torch.cat([s.reshape(-1) for _, s in model.seen]) if model.seen else torch.tensor([])
        if not (seen == classes).any():
            wrong = sorted(set(seen.tolist()) - set(label_list))
            fail(f"the unconditional velocity must use the null label model.config['num_classes'] ({classes})"
                 + (f", not {wrong[0]:g}" if wrong else "") + f" ({what})")
        if any(not torch.allclose(torch.as_tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64))
               for s, _ in model.seen):
            fail(f"pass t on to the model unchanged ({what})")
        conditional = torch.tensor(label_list, dtype=x.dtype).view(-1, 1, 1, 1) + 0.25 * x + t
        unconditional = classes + 0.25 * x + t
        want = unconditional + gamma * (conditional - unconditional)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            fail(f"the guided velocity has shape {shape_of(out)}, not x's {list(x.shape)} ({what})")
        if close(out, want, 1e-5):
            continue
        named = (
            (conditional + gamma * (unconditional - conditional), "it uses the unconditional velocity with weight "
                                                                  "gamma instead of 1 - gamma (it starts from the "
                                                                  "conditional velocity)"),
            ((1 + gamma) * conditional - gamma * unconditional, "it weighs the conditional velocity by 1 + gamma "
                                                                "instead of gamma (the other paper's convention, "
                                                                "where gamma = 0 is plain conditioning)"),
            (gamma * (conditional - unconditional), "the guided velocity misses its base term, the unconditional "
                                                    "velocity"),
            (gamma * conditional, "it scales the conditional velocity by gamma and leaves the unconditional one out"),
        )
        name_the_mistake(out, named, what, 1e-5)
        fail(f"{what}, the guided velocity differs from the unconditional velocity moved gamma times its difference "
             f"to the conditional one, {where(out, want)}")
    x, labels = torch.randn(2, 1, 3, 3), torch.tensor([3, 7])
    if not close(classifier_free(_LabelEcho(10), 1.0)(x, 0.5, labels), labels.view(2, 1, 1, 1) + 0.25 * x + 0.5):
        fail("gamma = 1 must give the conditional velocity")
