"""Diffusion sampling tricks (discrete-time DDPM), written once against a small backend interface.

A backend has ``alphas_cumprod`` (abar_t for t = 0 .. T - 1) and ``eps(x_t, t, embedding)`` returning the
predicted noise and, when the model learns it, a variance value v in [-1, 1] per pixel (else None).

    forward process      x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
    one-step estimate    x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)
    DDPM step t -> t'    (t' < t the previous strided timestep; alpha = abar_t / abar_t', beta = 1 - alpha)
        mean  = sqrt(abar_t') beta / (1 - abar_t) x0_hat + sqrt(alpha) (1 - abar_t') / (1 - abar_t) x_t
        variance: beta_tilde = (1 - abar_t') / (1 - abar_t) beta (posterior), or with a learned range
        log var = f log beta + (1 - f) log beta_tilde, f = (v + 1) / 2 (DeepFloyd IF, diffusers)
    classifier-free guidance   eps = eps(null) + gamma (eps(c) - eps(null)), the conditional variance kept

Every trick is a *noise estimate* ``estimate(x_t, t) -> (eps, v or None)`` fed to `iterative_denoise`:
CFG, visual anagrams (average of each view's estimate mapped back by the view's inverse) and hybrid
images (low-pass of one estimate plus high-pass of another); SDEdit starts from a forward-noised image,
and inpainting resets the known pixels to the forward-noised original after every step.

The public samplers check their inputs once (timesteps: whole numbers in [0, T - 1], strictly decreasing;
`i_start` a valid index; an inpainting mask of 0s and 1s that fits the image) and their result for NaN or
infinity before returning it.
"""
from typing import Callable, Protocol

import torch
import torchvision.transforms.functional as TF

from helpers.foundation.validate import all_finite, count, finite_number

Estimate = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor | None]]


class Backend(Protocol):
    alphas_cumprod: torch.Tensor

    def eps(self, x_t: torch.Tensor, t: int, embedding) -> tuple[torch.Tensor, torch.Tensor | None]:
        ...


def randn(shape, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """N(0, I) drawn on the generator's device (a CPU generator works for GPU images), then moved to `like`'s."""
    device = generator.device if generator is not None else like.device
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=like.dtype).to(like.device)


def strided_timesteps(start: int = 990, stride: int = 30) -> list[int]:
    """[990, 960, ..., 30, 0]: the course's schedule; `i_start` indexes it."""
    return list(range(count(start, "start", minimum=0), -1, -count(stride, "stride")))


def _timestep(t, alphas_cumprod: torch.Tensor, name: str = "t") -> int:
    """t as an index into the schedule: a whole number in [0, T - 1]."""
    return count(t, f"{name} (a timestep of this {len(alphas_cumprod)}-step schedule)", minimum=0,
                 maximum=len(alphas_cumprod) - 1)


def _timesteps(timesteps, alphas_cumprod: torch.Tensor) -> list[int]:
    """A non-empty, strictly decreasing list of valid timesteps (such as `strided_timesteps()`)."""
    steps = [_timestep(t, alphas_cumprod, "every entry of timesteps") for t in timesteps]
    if not steps or any(later >= earlier for earlier, later in zip(steps, steps[1:])):
        raise ValueError(f"timesteps must be a non-empty, strictly decreasing list such as strided_timesteps(), "
                         f"not {steps[:5]}{' ...' if len(steps) > 5 else ''}.")
    return steps


def _start_index(i_start, timesteps: list[int]) -> int:
    return count(i_start, f"i_start (an index into the {len(timesteps)} timesteps)", minimum=0,
                 maximum=len(timesteps) - 1)


def _abar(alphas_cumprod: torch.Tensor, t: int, like: torch.Tensor) -> torch.Tensor:
    return alphas_cumprod[t].to(device=like.device, dtype=like.dtype)


def forward(x0: torch.Tensor, t: int, alphas_cumprod: torch.Tensor, noise: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, eps ~ N(0, I) unless `noise` is given; t in [0, T - 1]."""
    t = _timestep(t, alphas_cumprod)
    if noise is None:
        noise = randn(x0.shape, x0, generator)
    # Exercise 4.1 hint: scale the clean image and the noise by the square roots of abar_t and of what is left of the unit variance.
    ### BEGIN SOLUTION
    abar = _abar(alphas_cumprod, t, x0)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    ### END SOLUTION


def estimate_x0(x_t: torch.Tensor, t: int, eps: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """One-step denoising: x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
    # Exercise 4.2 hint: invert the forward process for x0, with the noise estimate in place of the true noise.
    ### BEGIN SOLUTION
    abar = _abar(alphas_cumprod, t, x_t)
    return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
    ### END SOLUTION


def posterior_mean(x_t, x0_hat, t: int, t_prev: int, alphas_cumprod) -> torch.Tensor:
    """Mean of q(x_t' | x_t, x0_hat) for the strided step t -> t'."""
    # Exercise 4.3 hint: the strided step's alpha is abar_t / abar_t'; the mean weighs x0_hat and x_t as in the DDPM posterior (equation 7 of Ho et al.).
    ### BEGIN SOLUTION
    abar_t, abar_prev = _abar(alphas_cumprod, t, x_t), _abar(alphas_cumprod, t_prev, x_t)
    alpha = abar_t / abar_prev
    beta = 1 - alpha
    return (abar_prev.sqrt() * beta / (1 - abar_t)) * x0_hat + (alpha.sqrt() * (1 - abar_prev) / (1 - abar_t)) * x_t
    ### END SOLUTION


def posterior_log_variance(t: int, t_prev: int, alphas_cumprod,
                           predicted: torch.Tensor | None = None) -> torch.Tensor:
    """log beta_tilde, or with a predicted v in [-1, 1]: f log beta + (1 - f) log beta_tilde, f = (v + 1) / 2.

    beta_tilde is floored at 1e-20 before the log, as diffusers does."""
    abar_t, abar_prev = alphas_cumprod[t], alphas_cumprod[t_prev]
    beta = 1 - abar_t / abar_prev
    log_beta_tilde = torch.log(((1 - abar_prev) / (1 - abar_t) * beta).clamp_min(1e-20))
    if predicted is None:
        return log_beta_tilde
    frac = (predicted + 1) / 2
    return frac * torch.log(beta).to(predicted) + (1 - frac) * log_beta_tilde.to(predicted)


def add_variance(mean: torch.Tensor, t: int, t_prev: int, alphas_cumprod, predicted: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """mean + exp(log var / 2) z, z ~ N(0, I): the stochastic half of the DDPM step."""
    log_var = posterior_log_variance(t, t_prev, alphas_cumprod, predicted).to(device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * log_var) * randn(mean.shape, mean, generator)


def ddpm_step(x_t, t: int, t_prev: int, eps, alphas_cumprod, predicted=None, generator=None) -> torch.Tensor:
    """x_t' from x_t and a noise estimate: the posterior mean around x0_hat, plus `add_variance`."""
    # Exercise 4.3 hint: estimate x0, take the posterior mean around it, then add the step's noise.
    ### BEGIN SOLUTION
    mean = posterior_mean(x_t, estimate_x0(x_t, t, eps, alphas_cumprod), t, t_prev, alphas_cumprod)
    return add_variance(mean, t, t_prev, alphas_cumprod, predicted, generator)
    ### END SOLUTION


@torch.no_grad()
def _denoise(estimate: Estimate, x: torch.Tensor, i_start: int, timesteps: list[int], alphas_cumprod,
             generator: torch.Generator | None = None,
             after_step: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
             return_trajectory: bool = False):
    """`iterative_denoise` on checked inputs, its result checked finite (NaN and infinity propagate through
    every later step, so the final x being finite vouches for the trajectory)."""
    trajectory = [x]
    # Exercise 4.4 hint: walk the timesteps from i_start to the end, one DDPM step per pair (t, t'), and let after_step edit each result.
    ### BEGIN SOLUTION
    for i in range(i_start, len(timesteps) - 1):
        t, t_prev = timesteps[i], timesteps[i + 1]
        eps, predicted = estimate(x, t)
        x = ddpm_step(x, t, t_prev, eps, alphas_cumprod, predicted, generator)
        if after_step is not None:
            x = after_step(x, t_prev)
        trajectory.append(x)
    ### END SOLUTION
    all_finite(x, "the denoised image")
    return (x, trajectory) if return_trajectory else x


def iterative_denoise(estimate: Estimate, x: torch.Tensor, i_start: int, timesteps: list[int], alphas_cumprod,
                      generator: torch.Generator | None = None,
                      after_step: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
                      return_trajectory: bool = False):
    """DDPM steps from timesteps[i_start] down to timesteps[-1]; `after_step(x, t')` may edit each result.

    Returns x at timesteps[-1], or (x, [x at every visited timestep])."""
    timesteps = _timesteps(timesteps, alphas_cumprod)
    all_finite(x, "the starting image x")
    return _denoise(estimate, x, _start_index(i_start, timesteps), timesteps, alphas_cumprod, generator,
                    after_step, return_trajectory)


def sample(estimate: Estimate, n: int, shape, timesteps: list[int], alphas_cumprod, device="cpu",
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Sampling from scratch: pure noise at timesteps[0], denoised all the way, clipped to [-1, 1]."""
    n, timesteps = count(n, "n (the number of samples)"), _timesteps(timesteps, alphas_cumprod)
    x = randn((n, *shape), torch.empty(0, device=device), generator)
    return _denoise(estimate, x, 0, timesteps, alphas_cumprod, generator).clamp(-1, 1)


def conditional(backend: Backend, embedding) -> Estimate:
    """The backend's own estimate for one prompt embedding."""
    return lambda x, t: backend.eps(x, t, embedding)


def guided(backend: Backend, embedding, null_embedding, gamma: float) -> Estimate:
    """Classifier-free guidance: eps(null) + gamma (eps(c) - eps(null)), with the conditional variance."""
    gamma = finite_number(gamma, "gamma (the guidance scale)")

    def estimate(x, t):
        eps_c, predicted = backend.eps(x, t, embedding)
        eps_u, _ = backend.eps(x, t, null_embedding)
        return eps_u + gamma * (eps_c - eps_u), predicted
    return estimate


def sdedit(estimate: Estimate, image: torch.Tensor, i_start: int, timesteps: list[int], alphas_cumprod,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Image-to-image: noise `image` to timesteps[i_start] with the forward process, then denoise it."""
    timesteps = _timesteps(timesteps, alphas_cumprod)
    i_start = _start_index(i_start, timesteps)
    # Exercise 4.5 hint: noise the image to the timestep i_start points at, then denoise from there.
    ### BEGIN SOLUTION
    x = forward(all_finite(image, "the image to edit"), timesteps[i_start], alphas_cumprod, generator=generator)
    return _denoise(estimate, x, i_start, timesteps, alphas_cumprod, generator)
    ### END SOLUTION


def _inpainting_mask(mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """`mask` as 0.0 / 1.0 in the image's dtype, after checking it holds only 0 and 1 (or False and True) and
    broadcasts to the image's shape without changing it."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a tensor of 0s and 1s, not {type(mask).__name__}.")
    try:
        fits = torch.broadcast_shapes(mask.shape, image.shape) == image.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"the mask's shape {list(mask.shape)} does not fit the image's {list(image.shape)}: give "
                         f"the mask the image's height and width and 1 or {image.shape[1]} channels, e.g. "
                         f"{[1, *image.shape[-2:]]}.")
    if mask.dtype != torch.bool:
        values = mask.unique()
        if not bool(((values == 0) | (values == 1)).all()):
            raise ValueError(f"the mask must hold only 0 (keep) and 1 (paint), or False and True, but it holds "
                             f"{values[:4].tolist()}: for a 0/255 mask pass mask > 0.")
    return mask.to(device=image.device, dtype=image.dtype)


def inpaint(estimate: Estimate, image: torch.Tensor, mask: torch.Tensor, timesteps: list[int], alphas_cumprod,
            generator: torch.Generator | None = None, return_trajectory: bool = False):
    """RePaint-style: where mask = 1 the model paints; where mask = 0 every step is reset to the original
    forward-noised to that step's timestep: x_t' <- m x_t' + (1 - m) forward(image, t').

    `mask` holds 0s and 1s (float, integer or bool) and broadcasts to the image, e.g. [C, H, W] or [1, H, W]."""
    timesteps = _timesteps(timesteps, alphas_cumprod)
    mask = _inpainting_mask(mask, all_finite(image, "the image to inpaint"))

    # Exercise 4.6 hint: after every step, put back the known region (mask 0) as the original noised to that step's timestep.
    ### BEGIN SOLUTION
    def keep_known(x, t):
        return mask * x + (1 - mask) * forward(image, t, alphas_cumprod, generator=generator)

    start = keep_known(randn(image.shape, image, generator), timesteps[0])
    return _denoise(estimate, start, 0, timesteps, alphas_cumprod, generator, keep_known, return_trajectory)
    ### END SOLUTION


class View:
    """An invertible image transform for visual anagrams: `apply`, its exact `inverse`, and the inverse
    for a predicted variance (a sign flip of the image leaves the variance as it is)."""

    def __init__(self, name: str, apply: Callable, inverse: Callable, inverse_variance: Callable | None = None):
        self.name, self.apply, self.inverse = name, apply, inverse
        self.inverse_variance = inverse_variance or inverse

    def __repr__(self):
        return f"View({self.name})"


def _roll_columns(x: torch.Tensor, sign: int) -> torch.Tensor:
    """Column j rolled down by sign * j pixels."""
    h, w = x.shape[-2:]
    rows = (torch.arange(h, device=x.device)[:, None] - sign * torch.arange(w, device=x.device)[None, :]) % h
    return x.gather(-2, rows.expand(*x.shape[:-2], h, w))


IDENTITY = View("identity", lambda x: x, lambda x: x)
FLIP = View("flip (rotate 180)", lambda x: torch.flip(x, dims=(-2, -1)), lambda x: torch.flip(x, dims=(-2, -1)))
NEGATIVE = View("negative", lambda x: -x, lambda x: -x, inverse_variance=lambda v: v)
SKEW = View("column roll (skew)", lambda x: _roll_columns(x, 1), lambda x: _roll_columns(x, -1))


def anagram(estimates: list[Estimate], views: list[View]) -> Estimate:
    """Visual anagrams: eps = mean_k inverse_k(eps_k(apply_k(x))), each prompt seen through its own view;
    predicted variances are mapped back and averaged likewise; the averaged estimate is checked finite."""
    if not estimates or len(estimates) != len(views):
        raise ValueError(f"one view per prompt: got {len(estimates)} estimates and {len(views)} views")

    def estimate(x, t):
        # Exercise 4.7 hint: each prompt sees the image through its view; map each noise estimate back with the view's inverse, then average.
        ### BEGIN SOLUTION
        results = [est(view.apply(x), t) for est, view in zip(estimates, views)]
        eps = all_finite(torch.stack([view.inverse(e) for (e, _), view in zip(results, views)]).mean(0),
                         "the anagram's noise estimate")
        ### END SOLUTION
        if results[0][1] is None:
            return eps, None
        return eps, torch.stack([view.inverse_variance(v) for (_, v), view in zip(results, views)]).mean(0)
    return estimate


def low_pass(x: torch.Tensor, kernel_size: int = 33, sigma: float = 2.0) -> torch.Tensor:
    """Gaussian blur (torchvision), the hybrid images' low-pass filter."""
    kernel_size, sigma = _blur(kernel_size, sigma)
    if min(x.shape[-2:]) <= kernel_size // 2:
        raise ValueError(f"a {kernel_size}-pixel blur kernel needs images larger than {kernel_size // 2} pixels "
                         f"a side (reflect padding); got {list(x.shape[-2:])}: use a smaller kernel_size")
    return TF.gaussian_blur(x, [kernel_size, kernel_size], [sigma, sigma])


def far_and_near(images: torch.Tensor, kernel_size: int = 33, sigma: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A hybrid image's two views: far = low_pass(x), what is seen from afar, and
    near = clamp(x - low_pass(x) - 1, -1, 1), its high frequencies drawn on black (-1), what is seen up close."""
    far = low_pass(images, kernel_size, sigma)
    return far, (images - far - 1).clamp(-1, 1)


def _blur(kernel_size, sigma) -> tuple[int, float]:
    """A Gaussian blur's odd positive kernel size and positive sigma."""
    kernel_size = count(kernel_size, "kernel_size")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (the blur is centred on each pixel), not {kernel_size}.")
    return kernel_size, finite_number(sigma, "sigma", minimum=1e-6)


def hybrid(low: Estimate, high: Estimate, kernel_size: int = 33, sigma: float = 2.0) -> Estimate:
    """Factorized diffusion: eps = low_pass(eps_low) + (eps_high - low_pass(eps_high)); variances averaged.
    The combined estimate is checked finite."""
    kernel_size, sigma = _blur(kernel_size, sigma)

    def estimate(x, t):
        eps_low, var_low = low(x, t)
        eps_high, var_high = high(x, t)
        # Exercise 4.8 hint: keep the low frequencies of one estimate and the high frequencies (what a blur removes) of the other.
        ### BEGIN SOLUTION
        eps = low_pass(eps_low, kernel_size, sigma) + eps_high - low_pass(eps_high, kernel_size, sigma)
        ### END SOLUTION
        return all_finite(eps, "the hybrid noise estimate"), None if var_low is None else (var_low + var_high) / 2
    return estimate
