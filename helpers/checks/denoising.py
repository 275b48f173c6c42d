"""Check of notebook 01's noising (exercise 1.1), by its statistics and invariants."""
import torch

from helpers.checks.core import close, fail, generator, grades


@grades("1.1")
def add_noise(add_noise):
    """z = x + sigma * eps: sigma = 0 gives x, the generator fixes eps, eps ~ N(0, I), z - x scales with sigma."""
    x = torch.linspace(-1, 1, 4 * 32 * 32).reshape(4, 1, 32, 32)
    original = x.clone()
    z = add_noise(x, 0.0, generator(0))
    if not isinstance(z, torch.Tensor) or z.shape != x.shape or z.dtype != x.dtype:
        fail("add_noise must return a tensor of x's shape and dtype")
    if not close(z, x):
        fail("with sigma = 0 the output must be x itself: only sigma * eps may be added")
    half = add_noise(x, 0.5, generator(1))
    if not torch.equal(x, original):
        fail("add_noise changed x in place: return a new tensor")
    if not torch.equal(half, add_noise(x, 0.5, generator(1))):
        fail("the same generator seed gave different noise: draw eps from the `generator` argument")
    eps = (half - x) / 0.5
    if abs(eps.mean()) > 0.1:
        fail(f"the noise has mean {eps.mean():.2f}, not 0: eps must be standard normal (torch.randn), not uniform")
    if abs((half - x).std() - 0.5) > 0.05:
        fail(f"at sigma = 0.5 the added noise has standard deviation {(half - x).std():.2f}: scale eps by sigma "
             f"itself, not by its square or square root")
    if not close(add_noise(x, 1.0, generator(1)) - x, 2 * (half - x), 1e-4):
        fail("doubling sigma must double the added noise: z - x = sigma * eps")
