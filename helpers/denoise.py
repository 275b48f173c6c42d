"""One-step denoising (notebook 01): the noising process and the losses of the two denoisers.

Noising: ``z = x + sigma * eps`` with ``eps ~ N(0, I)``. The denoiser D minimises
``E || D(z) - x ||^2``; its optimum is the conditional mean ``E[x | z]``. With pure noise as input
(``z = eps``, independent of x) that conditional mean is the data mean: the average training image.
"""
import torch
import torch.nn.functional as F

SIGMAS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0)


def add_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``z = x + sigma * eps``, eps ~ N(0, I)."""
    # Exercise 1.1 hint: draw standard normal noise shaped like x from `generator` (x's device and dtype), scale, add.
    ### BEGIN SOLUTION
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + sigma * eps
    ### END SOLUTION


def denoising_loss(model, batch, sigma: float) -> torch.Tensor:
    """``|| D(x + sigma eps) - x ||^2`` averaged over pixels and batch; fresh noise every call."""
    x = batch[0]
    return F.mse_loss(model(add_noise(x, sigma)), x)


def pure_noise_loss(model, batch) -> torch.Tensor:
    """``|| D(eps) - x ||^2``: the input carries no information about x."""
    x = batch[0]
    return F.mse_loss(model(torch.randn_like(x)), x)


@torch.no_grad()
def test_mse(model, images: torch.Tensor, sigma: float, seed: int = 0, batch_size: int = 1000) -> float:
    """Mean squared error of the denoiser on `images` noised at `sigma` (seeded, so reproducible)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size]
        z = add_noise(x, sigma, generator).to(device)
        total += F.mse_loss(model(z), x.to(device), reduction="sum").item()
    return total / images.numel()
