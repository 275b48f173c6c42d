"""Check of notebook 01's noising (exercise 1.1), by the statistics and invariants of the noise it adds.

Operating points: sigma 0.5, 0.2 and 1.0 (the course's sweep runs from 0 to 1) on a batch of 4 non-square
grey images in [-1, 1] and a batch of 3 colour images in [0, 1]; sigma = 0; the generator (same seed, other
seed, none). The added noise z - x is judged by its mean, its spread, its normality, its independence of x
and across the batch and the channels."""
import math

import torch

from helpers.checks.core import fail, generator, grades, shape_of

SIGMAS = (0.5, 0.2, 1.0)
WITHIN_ONE_SD = math.erf(1 / math.sqrt(2))   # 0.683: the share of a normal sample within one standard deviation


def _images():
    """(name, x): grey [-1, 1] images [4, 1, 32, 28] and colour [0, 1] images [3, 3, 24, 20]."""
    grey = torch.rand(4, 1, 32, 28, generator=generator(10)) * 2 - 1
    colour = torch.rand(3, 3, 24, 20, generator=generator(11))
    return (("4 grey images in [-1, 1]", grey), ("3 colour images in [0, 1]", colour))


def _spread(noise: torch.Tensor, sigma: float, at: str) -> None:
    """Mean, standard deviation and shape of the distribution of `noise` = z - x, with the mistake named."""
    n = noise.numel()
    mean, sd = float(noise.mean()), float(noise.std())
    if abs(mean) > 6 * max(sd, sigma) / math.sqrt(n):
        if abs(mean - sigma) < 0.1 * sigma and abs(sd - 1) < 0.1:
            fail(f"at sigma = {sigma:g} the noise has mean {mean:.2f} and standard deviation {sd:.2f}: it adds sigma "
                 f"to the noise instead of multiplying the noise by sigma")
        if abs(mean - sigma / 2) < 0.1 * sigma:
            fail(f"at sigma = {sigma:g} the noise has mean {mean:.2f}, about sigma / 2: it is uniform on [0, 1] "
                 f"(torch.rand), but eps must be standard normal (torch.randn)")
        fail(f"at sigma = {sigma:g} the added noise has mean {mean:.2f} on {at}, not 0: eps must be standard normal")
    ratio = sd / sigma
    if abs(ratio - 1) > 0.06:
        if abs(sd - 1) < 0.06:
            fail(f"at sigma = {sigma:g} the added noise has standard deviation {sd:.2f}: eps is added without being "
                 f"multiplied by sigma")
        for name, expected in (("sigma squared", sigma), ("the square root of sigma", 1 / math.sqrt(sigma))):
            if abs(ratio / expected - 1) < 0.06:
                fail(f"at sigma = {sigma:g} the added noise has standard deviation {sd:.2f}: it scales eps by "
                     f"{name} instead of by sigma itself")
        if abs(ratio - 1 / math.sqrt(3)) < 0.04:
            fail(f"at sigma = {sigma:g} the added noise has standard deviation {sd:.2f}, that of a uniform eps "
                 f"on [-1, 1]: eps must be standard normal (torch.randn)")
        fail(f"at sigma = {sigma:g} the added noise has standard deviation {sd:.2f} on {at}, not sigma")
    share = float(((noise - mean).abs() < sd).float().mean())
    if abs(share - WITHIN_ONE_SD) > 0.035:
        fail(f"at sigma = {sigma:g}, {share:.0%} of the noise lies within one standard deviation (a normal sample: "
             f"68%): eps must be drawn from a standard normal (torch.randn), not a uniform or other distribution")


def _independent_of_x(x: torch.Tensor, noise: torch.Tensor, sigma: float, at: str) -> None:
    """The noise must not scale with x or grow with |x|: z = x + (something independent of x)."""
    centred, residual = x - x.mean(), noise - noise.mean()
    correlation = float((centred * residual).mean() / (centred.std() * residual.std()))
    if abs(correlation) > 0.08:
        slope = float((centred * residual).mean() / centred.pow(2).mean())
        if abs(slope + sigma) < 0.05:
            fail(f"at sigma = {sigma:g} the image is scaled by 1 - sigma (z - x falls with x with slope {slope:.2f}): "
                 f"noising adds sigma eps to x and leaves x as it is")
        fail(f"at sigma = {sigma:g}, z - x changes with x (slope {slope:.2f} on {at}): noising adds sigma eps to x "
             f"and leaves x itself unscaled")
    low, high = x.abs() < x.abs().quantile(0.25), x.abs() > x.abs().quantile(0.75)
    small, large = float(noise[low].std()), float(noise[high].std())
    if large > 1.5 * small or small > 1.5 * large:
        fail(f"at sigma = {sigma:g} the noise is {large / max(small, 1e-12):.1f} times larger on the pixels of large "
             f"|x| than on the others: it multiplies x, but it must be added to x, the same size everywhere")


def _per_image(noise: torch.Tensor, sigma: float, at: str) -> None:
    if noise.shape[0] > 1 and torch.allclose(noise[0], noise[1], atol=1e-5):
        fail(f"at sigma = {sigma:g} every image of the batch ({at}) gets the same noise: draw eps with x's full "
             f"shape, batch included")
    if noise.shape[1] > 1 and torch.allclose(noise[:, 0], noise[:, 1], atol=1e-5):
        fail(f"at sigma = {sigma:g} every channel ({at}) gets the same noise: draw eps with x's full shape, "
             f"channels included")


@grades("1.1")
def add_noise(add_noise):
    """z = x + sigma * eps: eps standard normal, independent of x, of the batch item and of the channel, drawn
    from `generator`; sigma = 0 gives x; x is left unchanged."""
    for at, x in _images():
        original = x.clone()
        for sigma in SIGMAS:
            z = add_noise(x, sigma, generator(1))
            if not isinstance(z, torch.Tensor) or z.shape != x.shape:
                fail(f"add_noise returned {shape_of(z)} for x of shape {list(x.shape)}: return a tensor of x's shape")
            if z.dtype != x.dtype:
                fail(f"add_noise returned {z.dtype} for {x.dtype} images: draw eps in x's dtype")
            if not torch.equal(x, original):
                fail("add_noise changed x in place: return a new tensor")
            noise = z - x
            if float(noise.std()) < 0.1 * sigma:
                fail(f"at sigma = {sigma:g} the added noise has standard deviation {float(noise.std()):.2f} on {at}: "
                     f"no noise is added")
            _independent_of_x(x, noise, sigma, at)
            _per_image(noise, sigma, at)
            _spread(noise, sigma, at)
            if not torch.equal(z, add_noise(x, sigma, generator(1))):
                fail("the same generator seed gave different noise: draw eps from the `generator` argument")
            if torch.equal(z, add_noise(x, sigma, generator(2))):
                fail("two generators with different seeds gave the same noise: draw eps from the `generator` "
                     "argument, without seeding anything yourself")
        zero = add_noise(x, 0.0, generator(3))
        if not torch.equal(zero, x):
            size = float((zero - x).abs().max()) if isinstance(zero, torch.Tensor) else float("nan")
            fail(f"with sigma = 0 the output differs from x by up to {size:.2f} ({at}): all the noise must be "
                 f"multiplied by sigma")
    unseeded = add_noise(x, 0.5)
    if not isinstance(unseeded, torch.Tensor) or unseeded.shape != x.shape:
        fail("add_noise(x, sigma) without a generator must work too (generator=None: torch's own random state)")
