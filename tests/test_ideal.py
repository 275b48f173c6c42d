"""Ideal flow machines against brute-force pixel-by-pixel references on tiny data (float64, 1e-5)."""
import math

import pytest
import torch

from helpers import ideal
from helpers.foundation import patch_attention

H = W = 8


@pytest.fixture(scope="module")
def tiny():
    g = torch.Generator().manual_seed(0)
    train = (torch.rand(5, 1, H, W, generator=g, dtype=torch.float64) > 0.6).double() * 2 - 1
    x_t = torch.randn(2, 1, H, W, generator=g, dtype=torch.float64)
    return x_t, train


def softmax_average(logits, values):
    weights = torch.softmax(torch.tensor(logits, dtype=torch.float64), 0)
    return float((weights * torch.tensor(values, dtype=torch.float64)).sum())


def patch(image, i, j, r, mode):
    """The (2r+1)^2 patch of a [H, W] image around (i, j), with zero or circular padding."""
    out = torch.zeros(2 * r + 1, 2 * r + 1, dtype=image.dtype)
    for di in range(-r, r + 1):
        for dj in range(-r, r + 1):
            y, x = i + di, j + dj
            if mode == "circular":
                out[di + r, dj + r] = image[y % H, x % W]
            elif 0 <= y < H and 0 <= x < W:
                out[di + r, dj + r] = image[y, x]
    return out


def brute(x_t, t, train, p, candidates, mode):
    """Reference: for each pixel, explicit logits over the candidate (image, i', j') list."""
    r, a = p // 2, 1 - t
    out = torch.zeros_like(x_t)
    for b in range(x_t.shape[0]):
        for i in range(H):
            for j in range(W):
                q = patch(x_t[b, 0], i, j, r, mode)
                logits, values = [], []
                for n, y, x in candidates(i, j):
                    phi = patch(train[n, 0], y, x, r, "zero")
                    logits.append(float(-((q - a * phi) ** 2).sum() / (2 * t * t)))
                    values.append(float(train[n, 0, y, x]))
                out[b, 0, i, j] = softmax_average(logits, values)
    return out


@pytest.mark.parametrize("t", [0.3, 0.8])
def test_ideal_score_matches_brute_force(tiny, t):
    x_t, train = tiny
    logits = -((x_t[:, None] - (1 - t) * train[None]) ** 2).flatten(2).sum(-1) / (2 * t * t)
    expected = torch.einsum("bn,nchw->bchw", torch.softmax(logits, 1), train)
    assert torch.allclose(ideal.ideal_denoiser(x_t, t, train, chunk=2), expected, atol=1e-5)
    assert torch.allclose(ideal.ideal_velocity(x_t, t, train), (x_t - expected) / t, atol=1e-5)


def test_ideal_score_at_small_t_returns_the_nearest_training_image(tiny):
    _, train = tiny
    x_t = (1 - 0.02) * train[3:4] + 0.02 * torch.randn(1, 1, H, W, dtype=torch.float64)
    assert torch.allclose(ideal.ideal_denoiser(x_t, 0.02, train), train[3:4], atol=1e-6)


@pytest.mark.parametrize("p", [1, 3, 5])
def test_local_score_matches_brute_force(tiny, p):
    x_t, train = tiny
    expected = brute(x_t, 0.5, train, p, lambda i, j: [(n, i, j) for n in range(len(train))], "zero")
    assert torch.allclose(ideal.local_denoiser(x_t, 0.5, train, p, group=2), expected, atol=1e-5)


def test_local_score_with_a_whole_image_patch_equals_ideal_score(tiny):
    x_t, train = tiny
    for t in (0.2, 0.7):
        assert torch.allclose(ideal.local_denoiser(x_t, t, train, 2 * H - 1), ideal.ideal_denoiser(x_t, t, train),
                              atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("p", [3, 5])
def test_els_matches_brute_force(tiny, p):
    x_t, train = tiny
    r = p // 2
    inside = [(n, y, x) for n in range(len(train)) for y in range(r, H - r) for x in range(r, W - r)]
    expected = brute(x_t, 0.6, train, p, lambda i, j: inside, "circular")
    assert torch.allclose(ideal.els_denoiser(x_t, 0.6, train, p, chunk=7, group=2), expected, atol=1e-5)
    assert torch.allclose(ideal.els_denoiser(x_t, 0.6, train, p, group=3, deduplicate=True), expected, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("p", [1, 3, 5, 7])
def test_bbels_matches_brute_force(tiny, p):
    x_t, train = tiny
    r = p // 2

    def same_class(i, size):
        if i < r or i >= size - r:
            return [i]
        return list(range(r, size - r))

    def candidates(i, j):
        return [(n, y, x) for n in range(len(train)) for y in same_class(i, H) for x in same_class(j, W)]

    expected = brute(x_t, 0.6, train, p, candidates, "zero")
    assert torch.allclose(ideal.bbels_denoiser(x_t, 0.6, train, p, chunk=5, group=2), expected, atol=1e-5)
    assert torch.allclose(ideal.bbels_denoiser(x_t, 0.6, train, p, group=3, deduplicate=True), expected, atol=1e-5)


def test_the_tiny_training_set_repeats_patches_so_deduplication_is_tested(tiny):
    _, train = tiny
    keys = ideal._patches(train, 3)
    assert len(patch_attention.unique_patches(keys)[0]) < len(keys)


def test_batched_key_sets_cannot_be_deduplicated():
    state = patch_attention.OnlineSoftmax((2, 3), (1,), torch.zeros(1))
    with pytest.raises(ValueError, match="one key set"):
        patch_attention.attend_patches(state, torch.zeros(2, 3, 9), torch.zeros(2, 4, 9), 0.5, deduplicate=True)


def test_bbels_with_a_patch_as_large_as_the_image_is_local_score(tiny):
    x_t, train = tiny
    assert torch.allclose(ideal.bbels_denoiser(x_t, 0.5, train, 9), ideal.local_denoiser(x_t, 0.5, train, 9),
                          atol=1e-6)


def test_patch_size_schedule_and_errors(tiny):
    x_t, train = tiny
    by_schedule = ideal.els_denoiser(x_t, 0.6, train, lambda t: 3 if t < 0.7 else 5)
    assert torch.allclose(by_schedule, ideal.els_denoiser(x_t, 0.6, train, 3))
    with pytest.raises(ValueError, match="odd"):
        ideal.local_denoiser(x_t, 0.5, train, 4)
    with pytest.raises(ValueError, match="undefined at t = 0"):
        ideal.ideal_velocity(x_t, 0.0, train)
    with pytest.raises(ValueError, match="must share C, H, W"):
        ideal.els_velocity(x_t[:, :, :4], 0.5, train, 3)


def test_online_softmax_is_stable_where_a_plain_softmax_overflows():
    q = torch.tensor([[[30.0, 30.0]]])
    keys = torch.tensor([[30.0, 30.0], [-30.0, -30.0]])
    state = patch_attention.OnlineSoftmax((1, 1), (1,), q)
    patch_attention.attend(state, q, keys, torch.tensor([[1.0], [-1.0]]), t=0.01, chunk=1)
    value = state.result()
    assert math.isfinite(value.item()) and value.item() == pytest.approx(1.0)


def test_nearest_training_images(tiny):
    _, train = tiny
    noisy = train[[4, 1]] + 0.01
    assert torch.equal(ideal.nearest_training_images(noisy, train), train[[4, 1]])


def test_machine_sampler_ends_on_the_denoiser_output_and_is_is_a_training_image(tiny):
    x_t, train = tiny
    samples, trajectory = ideal.sample(lambda x, t: ideal.ideal_denoiser(x, t, train), x_t, steps=20,
                                       return_trajectory=True)
    assert trajectory.shape == (21, *x_t.shape) and torch.equal(trajectory[-1], samples)
    assert torch.allclose(samples, ideal.nearest_training_images(samples, train), atol=1e-4)
