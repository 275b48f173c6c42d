"""Checks of the ideal flow machines (exercises 5.1, 5.2) against brute force over every candidate."""
import torch
import torch.nn.functional as F

from helpers.checks.core import close, fail, grades


def _posterior_mean(query, candidates, centres, t, temperature):
    """sum_k softmax_k(-|| q - (1 - t) phi_k ||^2 / temperature) centre_k, one query at a time."""
    logits = -((query - (1 - t) * candidates) ** 2).sum(-1) / temperature
    return torch.softmax(logits, 0) @ centres


def brute_is(x_t, t, train, temperature=None):
    temperature = 2 * t ** 2 if temperature is None else temperature
    keys = train.flatten(1)
    return torch.stack([_posterior_mean(q, keys, keys, t, temperature) for q in x_t.flatten(1)]).view_as(x_t)


def brute_els(x_t, t, train, p, mode="circular"):
    """Every pixel's P x P patch (circular padding) against every P x P patch inside every training image."""
    r, (b, _, h, w) = p // 2, x_t.shape
    padded = F.pad(x_t, [r] * 4, mode=mode)
    keys = torch.stack([image[0, i:i + p, j:j + p].flatten() for image in train
                        for i in range(h - p + 1) for j in range(w - p + 1)])
    out = torch.empty(b, 1, h, w)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                out[n, 0, i, j] = _posterior_mean(padded[n, 0, i:i + p, j:j + p].flatten(), keys,
                                                  keys[:, (p * p) // 2], t, 2 * t ** 2)
    return out


def _data():
    torch.manual_seed(0)
    return torch.rand(5, 1, 6, 6) * 2 - 1, torch.randn(2, 1, 6, 6)


@grades("5.1")
def ideal_denoiser(ideal_denoiser):
    """IS: x0_hat = sum_n softmax_n(-|| x_t - (1 - t) x0_n ||^2 / (2 t^2)) x0_n, by brute force."""
    train, x_t = _data()
    for t in (0.9, 0.5, 0.2):
        got = ideal_denoiser(x_t, t, train)
        if close(got, brute_is(x_t, t, train), 1e-4):
            continue
        if close(got, train.mean(0, keepdim=True).expand_as(x_t), 1e-4):
            fail("the output is the plain training mean: weigh each training image by the softmax of its logit")
        if close(got, brute_is(x_t, t, train, 2 * t), 1e-4) or close(got, brute_is(x_t, t, train, t ** 2), 1e-4):
            fail("the softmax temperature must be the noise variance: divide the squared distance by 2 t^2")
        fail(f"at t = {t} the output differs from the posterior mean over the training images (brute force): "
             f"compare x_t with (1 - t) x0_n")


@grades("5.2")
def els_denoiser(els_denoiser):
    """ELS: each pixel's patch (circular padding) against every patch inside every training image, by brute force."""
    train, x_t = _data()
    for t, p in ((0.7, 3), (0.3, 5)):
        got = els_denoiser(x_t, t, train, p)
        want = brute_els(x_t, t, train, p)
        if close(got, want, 1e-4):
            continue
        inner = (slice(None), slice(None), slice(p // 2, -(p // 2)), slice(p // 2, -(p // 2)))
        if close(got[inner], want[inner], 1e-4):
            fail("pixels near the border differ: pad the query patch circularly (as the paper's code does)")
        fail(f"at t = {t}, P = {p} the output differs from the posterior mean over every {p} x {p} patch of every "
             f"training image (brute force): candidates are patches at every location, not only the pixel's own")
