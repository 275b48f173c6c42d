"""Each exercise's check, tested both ways: the reference passes, and the usual wrong answers fail with a
sentence that names the mistake (and never contains the solution)."""
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import checks, course_unet, denoise, diffusion, ideal
from helpers.course_unet import ConditionalCourseUNet, CourseUNet
from helpers.exercises import CheckFailed


def fails(check_fn, candidate, match):
    with pytest.raises(CheckFailed, match=match) as failure:
        check_fn(candidate)
    message = str(failure.value)
    assert message.count(". ") == 0 and "\n" not in message, f"not one sentence: {message}"


# ---- 1.1 noising --------------------------------------------------------------------------------------------
def test_add_noise():
    checks.add_noise(denoise.add_noise)
    fails(checks.add_noise, lambda x, s, g=None: x + s * torch.rand(x.shape, generator=g), "not uniform")
    fails(checks.add_noise, lambda x, s, g=None: x + s ** 2 * torch.randn(x.shape, generator=g), "square")
    fails(checks.add_noise, lambda x, s, g=None: x + s * torch.randn(x.shape), "generator")


# ---- 1.2, 1.3 the course UNet's operations -----------------------------------------------------------------
def _ops(**changes):
    ops = dict(conv=course_unet.conv, down_conv=course_unet.down_conv, up_conv=course_unet.up_conv)
    ops.update(changes)
    return types.SimpleNamespace(**ops)


def test_unet_operations():
    checks.unet_operations(course_unet)
    relu = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, 1, 1), nn.BatchNorm2d(o), nn.ReLU())  # noqa: E731
    fails(checks.unet_operations, _ops(conv=relu), "not ReLU")
    no_norm = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, 1, 1), nn.GELU())  # noqa: E731
    fails(checks.unet_operations, _ops(conv=no_norm), "BatchNorm2d is missing")
    stride_one = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, 1, 1), nn.BatchNorm2d(o), nn.GELU())  # noqa: E731
    fails(checks.unet_operations, _ops(down_conv=stride_one), "stride")


class MaxFlatten(CourseUNet):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.flatten = nn.Sequential(nn.MaxPool2d(self.image_size // 4), nn.GELU())


class NoFirstSkip(CourseUNet):
    def decode(self, skips, bottleneck, modulate_up1=None):
        h0, h1, h2 = skips
        return super().decode((torch.zeros_like(h0), h1, h2), bottleneck, modulate_up1)


def test_course_unet():
    checks.course_unet(CourseUNet)
    fails(checks.course_unet, MaxFlatten, "average")
    fails(checks.course_unet, NoFirstSkip, "first .* skip")


# ---- 2.1, 3.1 conditioning ----------------------------------------------------------------------------------
def _time(model, x, t):
    t = t.reshape(-1, 1).to(x.dtype).expand(x.shape[0], 1)
    return model.fc1_t(t)[:, :, None, None], model.fc2_t(t)[:, :, None, None]


def _class(model, x, labels):
    one_hot = F.one_hot(labels, model.num_classes + 1)[:, :model.num_classes].to(x.dtype)
    return model.fc1_c(one_hot)[:, :, None, None], model.fc2_c(one_hot)[:, :, None, None]


def conditioned(embed_t=_time, embed_c=_class):
    class Variant(ConditionalCourseUNet):
        def forward(self, x, t, labels=None):
            skips, bottleneck = self.encode(x)
            t1, t2 = embed_t(self, x, t)
            if not self.num_classes:  # the course's time-only form: unflatten * t1, up1 * t2
                return self.decode(skips, bottleneck * t1, modulate_up1=lambda u: u * t2)
            c1, c2 = embed_c(self, x, labels)
            return self.decode(skips, c1 * bottleneck + t1, modulate_up1=lambda u: c2 * u + t2)
    return Variant


def test_time_conditioning():
    checks.time_conditioning(ConditionalCourseUNet)
    checks.time_conditioning(conditioned())
    # time-only, the course multiplies: a missing embedding is a factor of 1
    fails(checks.time_conditioning, conditioned(lambda m, x, t: (1.0, 1.0)), "does not change with t")
    fails(checks.time_conditioning, conditioned(lambda m, x, t: _time(m, x, t.reshape(-1)[:1])), "its own time")
    fails(checks.time_conditioning, conditioned(lambda m, x, t: (_time(m, x, t)[0], 1.0)), "fc2_t")


def test_class_conditioning():
    checks.class_conditioning(ConditionalCourseUNet)
    fails(checks.class_conditioning, conditioned(embed_c=lambda m, x, c: (1.0, 1.0)), "does not change with the label")
    fails(checks.class_conditioning, conditioned(embed_c=lambda m, x, c: _class(m, x, c % m.num_classes)), "all-zero")
    one_hot_10 = lambda m, x, c: tuple(f(F.one_hot(c, m.num_classes).to(x.dtype))[:, :, None, None]  # noqa: E731
                                       for f in (m.fc1_c, m.fc2_c))
    fails(checks.class_conditioning, conditioned(embed_c=one_hot_10), "null label 10 needs")


# ---- 2.2, 2.3, 3.2 flow matching (references written from the exercise's statement) ------------------------
def fm_loss(model, x0, labels=None, p_uncond=0.1, time_sampling="uniform", sign=1, swap=False, drop_to=None,
            data_term=True, one_time=False):
    n = x0.shape[0]
    x1 = torch.randn_like(x0)
    t = torch.sigmoid(torch.randn(n)) if time_sampling == "logit_normal" else torch.rand(n)
    t = t[:1].expand(n) if one_time else t
    tb = t.view(-1, 1, 1, 1)
    x_t = tb * x0 + (1 - tb) * x1 if swap else (1 - tb) * x0 + tb * x1
    target = sign * (x1 - x0) if data_term else x1
    if labels is None:
        return F.mse_loss(model(x_t, t), target)
    null = model.config["num_classes"] if drop_to is None else drop_to
    labels = torch.where(torch.rand(n) < p_uncond, torch.full_like(labels, null), labels)
    return F.mse_loss(model(x_t, t, labels), target)


def with_(fn, **fixed):
    return lambda *args, **kwargs: fn(*args, **{**kwargs, **fixed})


def test_flow_matching_loss():
    checks.flow_matching_loss(fm_loss)
    fails(checks.flow_matching_loss, with_(fm_loss, sign=-1), "wrong sign")
    fails(checks.flow_matching_loss, with_(fm_loss, swap=True), "swapped")
    fails(checks.flow_matching_loss, with_(fm_loss, data_term=False), "misses the data term")
    fails(checks.flow_matching_loss, with_(fm_loss, one_time=True), "independently for each sample")
    fails(checks.flow_matching_loss, with_(fm_loss, drop_to=0), "null label .* not 0")
    fails(checks.flow_matching_loss, with_(fm_loss, p_uncond=0.0), "no label was dropped")


def euler(velocity, x, t, h, labels=None, at=0.0, sign=-1):
    v = velocity(x, t - at) if labels is None else velocity(x, t - at, labels)
    return x + sign * h * v


def test_euler_step():
    checks.euler_step(euler)
    fails(checks.euler_step, lambda v, x, t, h, labels=None: euler(v, x, t, h, labels, at=h), "not at t - h")
    fails(checks.euler_step, lambda v, x, t, h, labels=None: euler(v, x, t, h, labels, sign=1), "wrong way")
    fails(checks.euler_step, lambda v, x, t, h, labels=None: euler(v, x, t, h), "pass the labels")


def cfg(model, gamma, null=None, swap=False, base=True):
    def velocity(x, t, labels):
        empty = torch.full_like(labels, model.config["num_classes"] if null is None else null)
        cond, uncond = model(x, t, labels), model(x, t, empty)
        if swap:
            cond, uncond = uncond, cond
        return (uncond if base else 0) + gamma * (cond - uncond)
    return velocity


def test_classifier_free_guidance():
    checks.classifier_free_guidance(cfg)
    fails(checks.classifier_free_guidance, lambda m, g: cfg(m, g, swap=True), "wrong end")
    fails(checks.classifier_free_guidance, lambda m, g: cfg(m, g, null=0), r"null label .*\(10\), not 0")
    fails(checks.classifier_free_guidance, lambda m, g: cfg(m, g, base=False), "misses its base term")


# ---- 4.x diffusion ------------------------------------------------------------------------------------------
def test_forward_process():
    checks.forward_process(diffusion.forward)

    def wrong(scale=False, shift=0, noise_term=True):
        def forward(x0, t, ac, noise=None, generator=None):
            noise = torch.randn(x0.shape, generator=generator) if noise is None else noise
            a = ac[t - shift] if scale else ac[t - shift].sqrt()
            b = (1 - ac[t - shift]) if scale else (1 - ac[t - shift]).sqrt()
            return a * x0 + (b * noise if noise_term else 0)
        return forward
    checks.forward_process(wrong())
    fails(checks.forward_process, wrong(scale=True), "square roots")
    fails(checks.forward_process, wrong(shift=1), "off by one")
    fails(checks.forward_process, wrong(noise_term=False), "noise term .* is missing")


def test_one_step_estimate():
    checks.one_step_estimate(diffusion.estimate_x0)
    fails(checks.one_step_estimate, lambda x, t, e, ac: (x + (1 - ac[t]).sqrt() * e) / ac[t].sqrt(), "subtract")
    fails(checks.one_step_estimate, lambda x, t, e, ac: (x - (1 - ac[t]).sqrt() * e) / ac[t], "invert")


def test_ddpm_step():
    checks.ddpm_step(diffusion.ddpm_step)

    def mean_only(x, t, t_prev, eps, ac, predicted=None, generator=None):
        return diffusion.posterior_mean(x, diffusion.estimate_x0(x, t, eps, ac), t, t_prev, ac)

    def beta_variance(x, t, t_prev, eps, ac, predicted=None, generator=None):
        beta = 1 - ac[t] / ac[t_prev]
        return mean_only(x, t, t_prev, eps, ac) + beta.sqrt() * torch.randn(x.shape, generator=generator)
    fails(checks.ddpm_step, mean_only, "adds no noise")
    fails(checks.ddpm_step, lambda x, t, tp, *rest: diffusion.ddpm_step(x, t, t - 1, *rest), "went to t - 1")
    fails(checks.ddpm_step, beta_variance, "standard deviation")


def test_iterative_denoise():
    checks.iterative_denoise(diffusion.iterative_denoise)
    late = lambda est, x, i, ts, *rest, **kw: diffusion.iterative_denoise(est, x, i + 1, ts, *rest, **kw)  # noqa
    fails(checks.iterative_denoise, late, "start at timesteps")
    forgets = lambda est, x, i, ts, ac, g=None, after=None, traj=False: diffusion.iterative_denoise(  # noqa
        est, x, i, ts, ac, g, None, traj)
    fails(checks.iterative_denoise, forgets, "after_step")


def test_sdedit():
    checks.sdedit(diffusion.sdedit)
    fails(checks.sdedit, lambda est, im, i, ts, ac, g=None: diffusion.iterative_denoise(est, im, i, ts, ac, g),
          "noised with the forward process")
    fails(checks.sdedit, lambda est, im, i, ts, ac, g=None: diffusion.sdedit(est, im, 0, ts, ac, g), "timesteps")


def test_inpaint():
    checks.inpaint(diffusion.inpaint)
    fails(checks.inpaint, lambda est, im, m, *rest, **kw: diffusion.inpaint(est, im, 1 - m, *rest, **kw), "mask = 0")

    def pasted(est, image, mask, ts, ac, generator=None):
        start = mask * torch.randn(image.shape, generator=generator) + (1 - mask) * image
        return diffusion.iterative_denoise(est, start, 0, ts, ac, generator,
                                           lambda x, t: mask * x + (1 - mask) * image)
    fails(checks.inpaint, pasted, "not pasted clean")


def test_anagram():
    checks.anagram(diffusion.anagram)

    def no_inverse(estimates, views):
        return lambda x, t: (torch.stack([e(v.apply(x), t)[0] for e, v in zip(estimates, views)]).mean(0), None)

    def summed(estimates, views):
        est = diffusion.anagram(estimates, views)
        return lambda x, t: (2 * est(x, t)[0], None)
    fails(checks.anagram, no_inverse, "inverse")
    fails(checks.anagram, summed, "do not add")


def test_hybrid():
    checks.hybrid(diffusion.hybrid)
    fails(checks.hybrid, lambda lo, hi, k=33, s=2.0: diffusion.hybrid(hi, lo, k, s), "swapped")

    def no_high_pass(low, high, k=33, s=2.0):
        return lambda x, t: (diffusion.low_pass(low(x, t)[0], k, s) + high(x, t)[0], None)
    fails(checks.hybrid, no_high_pass, "own low frequencies")


# ---- 5.x ideal machines ---------------------------------------------------------------------------------------
def test_ideal_denoiser():
    checks.ideal_denoiser(ideal.ideal_denoiser)
    fails(checks.ideal_denoiser, lambda x, t, train: train.mean(0, keepdim=True).expand_as(x), "plain training mean")
    from helpers.checks.ideal import brute_is
    fails(checks.ideal_denoiser, lambda x, t, train: brute_is(x, t, train, temperature=2 * t), "2 t\\^2")
    fails(checks.ideal_denoiser, lambda x, t, train: brute_is(x / (1 - t), t, train), "compare x_t with")


def test_els_denoiser():
    from helpers.checks.ideal import brute_els
    checks.els_denoiser(ideal.els_denoiser)
    fails(checks.els_denoiser, lambda x, t, train, p: brute_els(x, t, train, p, mode="constant"), "circularly")
    fails(checks.els_denoiser, lambda x, t, train, p: ideal.local_denoiser(x, t, train, p), "every location")
