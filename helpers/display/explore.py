"""Interactive explorers: a slider above a row of images, one per notebook, to learn by moving it.

Each function builds an `Explorer` (an ipywidgets VBox: slider, caption, picture) from what the notebook
already holds. Its callback ``explorer.view(value)`` is a pure function of the slider's value that returns
the images shown side by side, a tensor [K, C, H, W] on the CPU. It is memoised: a value is computed the
first time the slider reaches it (the initial value when the explorer is built) and read from the cache
afterwards. What each one shows:

    sigma_slider       notebook 01   x, z = x + sigma eps (eps drawn once) and the denoiser's D(z)
    trajectory_slider  notebook 02   x_t on one stored Euler trajectory, x <- x - v(x, t) / T, t from 1 to 0
    guidance_slider    notebook 03   samples from one fixed noise with
                                     v = v(x, t, null) + gamma (v(x, t, c) - v(x, t, null))
    sdedit_slider      notebook 04   x, its start x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps at
                                     t = timesteps[i_start], and the SDEdit denoised from it
    els_patch_slider   notebook 05   at one step t: x_t, the network's x0_hat = x_t - t v(x_t, t) and ELS's
                                     x0_hat(u) = sum softmax(-||q_u - (1 - t) phi||^2 / 2t^2) centre(phi), P x P patches

Most views cost well under a second on 2 CPU cores and are computed on a first visit; the guidance slider's
(ten images, 50 guided Euler steps, about 1.1 s a value) are all sampled when it is built, so that every
slider move answers from the cache (`benchmarks/widgets.py` times them).

A figure inside a widget is kept only as widget state, not in a rendered notebook: the graded figures are
drawn directly, and an explorer sits in a cell of its own (marked NBVAL_IGNORE_OUTPUT) after the figure it
explores. Pixels are shown as (x - low) / (high - low) clipped to [0, 1], as in `helpers.display.plotting`.
"""
import io
from functools import lru_cache
from typing import Callable

import ipywidgets as widgets
import torch
import torchvision
from PIL import Image

from helpers import denoise, diffusion, guidance, ideal, samplers
from helpers.display.plotting import _as_display
from helpers.foundation.validate import count, finite_number

ZOOM = 4  # screen pixels per image pixel


def png(panels: torch.Tensor, value_range=(-1.0, 1.0), zoom: int = ZOOM) -> bytes:
    """The images [K, C, H, W] side by side (2-pixel white gaps), each pixel a zoom x zoom block, as PNG bytes."""
    grid = torchvision.utils.make_grid(_as_display(panels, value_range), nrow=len(panels), padding=2, pad_value=1.0)
    picture = Image.fromarray(grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    buffer = io.BytesIO()
    picture.resize((picture.width * zoom, picture.height * zoom), Image.Resampling.NEAREST).save(buffer, "PNG")
    return buffer.getvalue()


class Explorer(widgets.VBox):
    """A slider, a caption and a picture: moving the slider shows ``view(value)``; the view, its caption line
    ``caption(value, panels)`` and its PNG are computed once per value and recalled on later visits."""

    def __init__(self, view: Callable, slider: widgets.ValueWidget, caption: Callable, value_range=(-1.0, 1.0)):
        self.view = lru_cache(maxsize=None)(view)
        self._rendered = lru_cache(maxsize=None)(
            lambda value: (caption(value, self.view(value)), png(self.view(value), value_range)))
        self.slider, self.caption, self.picture = slider, widgets.Label(), widgets.Image(format="png")
        super().__init__([slider, self.caption, self.picture])
        slider.observe(lambda change: self.show(change["new"]), names="value")
        self.show(slider.value)

    def show(self, value) -> None:
        """What a slider move does: compute (or recall) the view and put it on screen."""
        self.caption.value, self.picture.value = self._rendered(value)

    def precompute(self, values) -> "Explorer":
        """Compute the view, caption and PNG of every value now, so that no slider move computes anything."""
        for value in values:
            self._rendered(value)
        return self


def _one_image(image: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4) or (image.dim() == 4 and len(image) != 1):
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name} must be one image, [C, H, W] or [1, C, H, W], not {shape}: pass e.g. test_x[:1].")
    return image.reshape(1, *image.shape[-3:])


def _options(values, name: str) -> tuple:
    values = tuple(values)
    if not values:
        raise ValueError(f"{name} must list at least one value for the slider.")
    return values


def sigma_slider(denoiser, image: torch.Tensor, seed: int = 0, value_range=(0.0, 1.0)) -> Explorer:
    """Notebook 01: sigma from 0 to 1 for one digit; shows x, z = x + sigma eps (the same eps at every sigma,
    drawn with `seed`) and D(z). At sigma = 0, z is the clean digit."""
    x = _one_image(image, "image")

    def view(sigma):
        sigma = finite_number(sigma, "sigma", minimum=0.0)
        z = denoise.add_noise(x, sigma, torch.Generator(device=x.device).manual_seed(seed))
        with torch.no_grad():
            return torch.cat([x, z, denoiser(z)]).cpu()

    slider = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="σ")
    return Explorer(view, slider, lambda s, _: f"σ = {s:.2f}:  clean x  |  noisy z = x + σε  |  D(z)", value_range)


def trajectory_slider(velocity, noise: torch.Tensor, steps: int, labels=None, method: str = "euler") -> Explorer:
    """Notebook 02: t from 1 (the noise) to 0 (the sample) along one trajectory of `steps` steps, integrated
    once when the explorer is built; t is rounded to the nearest step, t = 1 - i / steps."""
    steps = count(steps, "steps")
    _, trajectory = samplers.integrate(velocity, noise, steps, labels, method, return_trajectory=True)

    def view(t):
        t = finite_number(t, "t", minimum=0.0, maximum=1.0)
        return trajectory[round((1.0 - t) * steps)]

    slider = widgets.FloatSlider(value=1.0, min=0.0, max=1.0, step=1.0 / steps, description="t",
                                 readout_format=".2f")
    return Explorer(view, slider, lambda t, _: f"x_t at t = {t:.2f} ({method}, {steps} steps; 1 = noise, 0 = sample)")


def guidance_slider(model, noise: torch.Tensor, labels: torch.Tensor, steps: int,
                    gammas=(0.0, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0)) -> Explorer:
    """Notebook 03: the classifier-free guidance scale gamma, the samples of one fixed noise and labels
    (`steps` Euler steps), computed for every gamma when the explorer is built."""
    gammas = tuple(finite_number(g, "every guidance scale gamma") for g in _options(gammas, "gammas"))

    def view(gamma):
        return samplers.integrate(guidance.classifier_free(model, gamma), noise, steps, labels).cpu()

    slider = widgets.SelectionSlider(options=gammas, value=guidance.CFG_SCALE if guidance.CFG_SCALE in gammas
                                     else gammas[0], description="γ")
    digits = " ".join(str(int(c)) for c in torch.as_tensor(labels).reshape(-1).tolist())
    explorer = Explorer(view, slider, lambda g, _: f"γ = {g:g}, {steps} Euler steps, asked for: {digits}")
    return explorer.precompute(gammas)


def sdedit_slider(estimate, image: torch.Tensor, timesteps: list[int], alphas_cumprod: torch.Tensor,
                  seed: int = 0, start: int = 5) -> Explorer:
    """Notebook 04: SDEdit's i_start; shows the image, its forward-noised start at t = timesteps[i_start]
    and the SDEdit result, both from one generator seeded with `seed` (so the start shown is the one used)."""
    x = _one_image(image, "image")
    last = len(timesteps) - 2  # the last start that still takes a denoising step

    def view(i_start):
        i_start = count(i_start, f"i_start (an index into the {len(timesteps)} timesteps)", 0, last)
        noised = diffusion.forward(x, timesteps[i_start], alphas_cumprod, generator=torch.Generator().manual_seed(seed))
        edit = diffusion.sdedit(estimate, x, i_start, timesteps, alphas_cumprod, torch.Generator().manual_seed(seed))
        return torch.cat([x, noised, edit]).clamp(-1, 1).cpu()

    slider = widgets.IntSlider(value=min(count(start, "start", 0), last), min=0, max=last, description="i_start")
    return Explorer(view, slider,
                    lambda i, _: f"i_start = {i} (t = {timesteps[i]}):  original  |  noised start  |  SDEdit")


def els_patch_slider(network, noise: torch.Tensor, steps: int, train: torch.Tensor, sizes,
                     step: int | None = None) -> Explorer:
    """Notebook 05: ELS's patch size P at one step of the network's own trajectory from `noise` (by default
    the middle step, t = 1 - (steps // 2) / steps); shows x_t, the network's x0_hat = x_t - t v(x_t, t)
    and ELS's x0_hat with P x P patches, and prints their mean squared difference."""
    steps = count(steps, "steps")
    step = steps // 2 if step is None else count(step, f"step (of {steps}, before the last)", 0, steps - 1)
    x_t = _one_image(noise, "noise")
    size = min(x_t.shape[-2:])
    sizes = _options(sizes, "sizes")
    if any(not isinstance(p, int) or p < 1 or p % 2 == 0 or p > size for p in sizes):
        raise ValueError(f"sizes must be odd whole numbers from 1 to {size} (the image size), not {sizes}.")
    t = 1.0 - step / steps
    x_t = samplers.integrate(network, x_t, steps, return_trajectory=True)[1][step].to(train.device)
    with torch.no_grad():
        network_x0 = x_t - t * network(x_t, t, None)

    def view(p):
        return torch.cat([x_t, network_x0, ideal.els_denoiser(x_t, t, train, p, deduplicate=True)]).cpu()

    def caption(p, panels):
        mse = (panels[2] - panels[1]).pow(2).mean()
        return f"P = {p} at t = {t:.2f}:  x_t  |  network's x0_hat  |  ELS x0_hat  (MSE between the two: {mse:.4f})"

    slider = widgets.SelectionSlider(options=sizes, value=sizes[len(sizes) // 2], description="P")
    return Explorer(view, slider, caption)
