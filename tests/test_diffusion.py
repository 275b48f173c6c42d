"""The DDPM sampling tricks against their formulas, on a cosine schedule like DeepFloyd IF's."""
import math

import pytest
import torch

from helpers import diffusion


def cosine_alphas_cumprod(steps=1000, s=0.008):
    """squaredcos_cap_v2 (beta capped at 0.999), float64."""
    f = lambda t: math.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(steps)], dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


AC = cosine_alphas_cumprod()


@pytest.fixture
def image():
    return torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1


def test_strided_timesteps():
    ts = diffusion.strided_timesteps()
    assert ts[:3] == [990, 960, 930] and ts[-2:] == [30, 0] and len(ts) == 34


def test_forward_and_one_step_denoising_with_the_true_noise(image):
    noise = torch.randn_like(image)
    x_t = diffusion.forward(image, 500, AC, noise)
    assert torch.allclose(x_t, AC[500].sqrt() * image + (1 - AC[500]).sqrt() * noise)
    assert torch.allclose(diffusion.estimate_x0(x_t, 500, noise, AC), image, atol=1e-10)


def test_posterior_is_the_gaussian_conditional(image):
    t, t_prev = 690, 660
    x_t = diffusion.forward(image, t, AC)
    alpha = AC[t] / AC[t_prev]
    beta = 1 - alpha
    precision = 1 / (1 - AC[t_prev]) + alpha / beta      # x_t' | x0 and x_t | x_t', multiplied
    mean = (AC[t_prev].sqrt() * image / (1 - AC[t_prev]) + alpha.sqrt() * x_t / beta) / precision
    assert torch.allclose(diffusion.posterior_mean(x_t, image, t, t_prev, AC), mean)
    assert torch.allclose(diffusion.posterior_log_variance(t, t_prev, AC).exp(), 1 / precision)
    ones = torch.ones(1, dtype=torch.float64)
    assert torch.allclose(diffusion.posterior_log_variance(t, t_prev, AC, ones), beta.log())
    assert torch.allclose(diffusion.posterior_log_variance(t, t_prev, AC, -ones), (1 / precision).log())


@pytest.mark.parametrize("view", [diffusion.FLIP, diffusion.NEGATIVE, diffusion.SKEW])
def test_views_are_exact_inverses(view, image):
    assert torch.equal(view.inverse(view.apply(image)), image)
    assert torch.equal(view.apply(view.inverse(image)), image)
    assert not torch.equal(view.apply(image), image)


def test_hybrid_parts_sum_to_the_original_estimate():
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = torch.randn_like(image)
    same = lambda x, t: (noise, None)
    eps, _ = diffusion.hybrid(same, same)(image, 500)
    assert torch.allclose(eps, noise, atol=1e-12)
    low = diffusion.low_pass(noise)
    assert not torch.allclose(low, noise, atol=0.1)
    with pytest.raises(ValueError, match="use a smaller kernel_size"):
        diffusion.low_pass(noise[..., :16, :16])


def test_anagram_of_one_view_is_that_estimate_mapped_back(image):
    estimate = lambda x, t: (x * 0.5, torch.zeros_like(x))
    eps, var = diffusion.anagram([estimate, estimate], [diffusion.IDENTITY, diffusion.FLIP])(image, 10)
    assert torch.allclose(eps, image * 0.5) and torch.equal(var, torch.zeros_like(image))
    with pytest.raises(ValueError, match="one view per prompt"):
        diffusion.anagram([estimate], [diffusion.IDENTITY, diffusion.FLIP])


def test_inpainting_keeps_the_known_pixels_whatever_the_model(image):
    mask = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    mask[..., 4:12, 4:12] = 1
    timesteps = diffusion.strided_timesteps(990, 90)
    runs = []
    for estimate in (lambda x, t: (torch.zeros_like(x), None), lambda x, t: (0.3 * x, None)):
        _, trajectory = diffusion.inpaint(estimate, image, mask, timesteps, AC,
                                          torch.Generator().manual_seed(1), return_trajectory=True)
        runs.append(trajectory)
    known = 1 - mask
    for a, b in zip(*runs):
        assert torch.equal(a * known, b * known)
    assert not torch.allclose(runs[0][-1] * mask, runs[1][-1] * mask)
    for x, t in zip(runs[0], timesteps):
        z = (x - AC[t].sqrt() * image) / (1 - AC[t]).sqrt()   # the known pixels are the noised original
        assert 0.7 < z[known.expand_as(z).bool()].std() < 1.3
    assert torch.allclose(runs[0][-1] * known, image * known, atol=0.05)


def test_sdedit_and_guidance_shapes(image):
    class Backend:
        alphas_cumprod = AC

        def eps(self, x, t, embedding):
            return x * embedding, None

    estimate = diffusion.guided(Backend(), 0.2, 0.1, gamma=7)
    eps, _ = estimate(image, 100)
    assert torch.allclose(eps, image * (0.1 + 7 * 0.1))
    out = diffusion.sdedit(estimate, image, 20, diffusion.strided_timesteps(), AC, torch.Generator().manual_seed(0))
    assert out.shape == image.shape and torch.isfinite(out).all()


def test_ddpm_step_agrees_with_diffusers_scheduler():
    from diffusers import DDPMScheduler

    # DeepFloyd IF stage 1's scheduler, without the clipping and thresholding the course's loop leaves out.
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                              variance_type="learned_range", prediction_type="epsilon",
                              clip_sample=False, thresholding=False)
    timesteps = diffusion.strided_timesteps()
    scheduler.set_timesteps(timesteps=timesteps)
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(2, 3, 8, 8, generator=g)
    eps, v = torch.randn(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    for t, t_prev in ((990, 960), (690, 660), (30, 0)):
        expected = scheduler.step(torch.cat([eps, v], 1), t, x_t, generator=torch.Generator().manual_seed(t)).prev_sample
        ours = diffusion.ddpm_step(x_t, t, t_prev, eps, scheduler.alphas_cumprod, v, torch.Generator().manual_seed(t))
        assert torch.allclose(ours, expected, atol=1e-5), (t, (ours - expected).abs().max())
    assert torch.allclose(AC.float(), scheduler.alphas_cumprod, atol=1e-6)


def test_far_and_near_views_of_a_hybrid():
    """A flat image is all far (its near view is black); a fine checkerboard is all near (its far view is grey)."""
    flat = torch.full((1, 1, 64, 64), 0.3)
    far, near = diffusion.far_and_near(flat, 33, 2.0)
    assert torch.allclose(far, flat, atol=1e-6) and torch.allclose(near, torch.full_like(flat, -1.0), atol=1e-6)
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None, :]).remainder(2).float().mul(2).sub(1)[None, None]
    far, near = diffusion.far_and_near(checker, 33, 2.0)
    assert far.abs().max() < 0.05 and torch.allclose(near, (checker - 1).clamp(-1, 1), atol=0.05)
