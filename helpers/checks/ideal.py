"""Checks of the ideal flow machines (exercises 5.1, 5.2) against brute force over every candidate.

Operating points: t = 1 (pure noise: every weight equal), 0.9, 0.5, 0.2 and 0.05 (nearly the nearest
neighbour); training sets of 5 and 7 images in [-1, 1] and in [0, 1]; grey and colour, square and non-square
images; for ELS patch sizes 3, 5 and 7 (up to the image's side). A mistake that only shows at one end of the
time range (the plain mean at t = 1, the nearest image at small t) is caught at the other."""
import torch
import torch.nn.functional as F

from helpers.checks.core import close, fail, first_line, grades, name_the_mistake, shape_of, where


def _posterior_mean(query, candidates, centres, t, temperature, signal=None):
    """sum_k softmax_k(-|| q - signal phi_k ||^2 / temperature) centre_k, one query at a time."""
    signal = 1 - t if signal is None else signal
    logits = -((query - signal * candidates) ** 2).sum(-1) / temperature
    return torch.softmax(logits, 0) @ centres


def brute_is(x_t, t, train, temperature=None, signal=None):
    temperature = 2 * t ** 2 if temperature is None else temperature
    keys = train.flatten(1).double()
    return torch.stack([_posterior_mean(q, keys, keys, t, temperature, signal)
                        for q in x_t.flatten(1).double()]).view_as(x_t)


def brute_els(x_t, t, train, p, mode="circular", centre=True, temperature=None, padded_keys=False):
    """Every pixel's P x P patch (circular padding) against every P x P patch inside every training image."""
    r, (b, _, h, w) = p // 2, x_t.shape
    temperature = 2 * t ** 2 if temperature is None else temperature
    padded = F.pad(x_t.double(), [r] * 4, mode=mode)
    source = F.pad(train.double(), [r] * 4, mode="circular") if padded_keys else train.double()
    keys = torch.stack([image[0, i:i + p, j:j + p].flatten() for image in source
                        for i in range(source.shape[-2] - p + 1) for j in range(source.shape[-1] - p + 1)])
    values = keys[:, (p * p) // 2] if centre else keys.mean(1)
    out = torch.empty(b, 1, h, w, dtype=torch.float64)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                out[n, 0, i, j] = _posterior_mean(padded[n, 0, i:i + p, j:j + p].flatten(), keys, values, t,
                                                  temperature)
    return out


def _over_batch(x_t, t, train):
    """The IS average with the softmax taken over the queries instead of the training images."""
    keys = train.flatten(1).double()
    logits = -torch.cdist(x_t.flatten(1).double(), (1 - t) * keys).pow(2) / (2 * t ** 2)
    return (torch.softmax(logits, 0) @ keys).view_as(x_t)


def _data(n: int, shape: tuple, scale: str, seed: int):
    generator = torch.Generator().manual_seed(seed)
    train = torch.rand(n, *shape, generator=generator)
    train = train * 2 - 1 if scale == "[-1, 1]" else train
    return train, torch.randn(2, *shape, generator=generator)


def _run(machine, what: str, *args):
    try:
        return machine(*args)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        fail(f"{what} fails ({first_line(error)})")


IS_POINTS = ((0.9, 5, (1, 6, 6), "[-1, 1]"), (0.5, 7, (3, 4, 5), "[0, 1]"), (1.0, 5, (1, 6, 6), "[-1, 1]"),
             (0.2, 5, (1, 6, 6), "[-1, 1]"), (0.05, 7, (3, 4, 5), "[0, 1]"))


@grades("5.1")
def ideal_denoiser(ideal_denoiser):
    """IS: x0_hat = sum_n softmax_n(-|| x_t - (1 - t) x0_n ||^2 / (2 t^2)) x0_n, by brute force, at t from 1 to
    0.05 on grey and colour training sets in [-1, 1] and [0, 1]."""
    for k, (t, n, shape, scale) in enumerate(IS_POINTS):
        train, x_t = _data(n, shape, scale, 130 + k)
        what = f"at t = {t:g} ({n} training images {list(shape)} in {scale})"
        got = _run(ideal_denoiser, f"the IS denoiser {what}", x_t, t, train)
        want = brute_is(x_t, t, train)
        if close(got, want, 1e-4):
            continue
        if not isinstance(got, torch.Tensor) or got.shape != x_t.shape:
            fail(f"the IS denoiser returned {shape_of(got)} for x_t of shape {list(x_t.shape)}")
        nearest = train[torch.cdist(x_t.flatten(1), (1 - t) * train.flatten(1)).argmin(1)]
        named = (
            (train.mean(0, keepdim=True).expand_as(x_t), "the output is the plain training mean: weigh each "
                                                         "training image by the softmax of its logit"),
            (nearest, "the output is the nearest training image: weigh every image by its softmax weight instead "
                      "of taking the best"),
            (brute_is(x_t, t, train, temperature=2 * t), "the softmax divides by 2 t, not by twice the noise "
                                                         "variance"),
            (brute_is(x_t, t, train, temperature=t ** 2), "the softmax divides by t^2, not by twice the noise "
                                                          "variance"),
            (brute_is(x_t, t, train, temperature=1.0), "the softmax has no temperature: divide the squared distance "
                                                       "by twice the noise variance"),
            (brute_is(x_t, t, train, signal=1.0), "it compares x_t with x0_n instead of with x0_n scaled by 1 - t"),
            (brute_is(x_t, t, train, signal=t), "it scales x0_n by t instead of 1 - t (the data is at t = 0 here)"),
            (brute_is(x_t, t, train, temperature=-2 * t ** 2), "the logits have the wrong sign: a closer training "
                                                               "image must weigh more"),
            ((x_t - want) / t, "it returns the velocity (x_t - x0_hat) / t instead of x0_hat"),
            (_over_batch(x_t, t, train), "the softmax runs over the batch of queries: it runs over the training "
                                         "images, for each query on its own"),
        )
        name_the_mistake(got, named, what, 1e-4)
        fail(f"{what}, the output differs from the posterior mean over the training images (brute force), "
             f"{where(got, want)}")


ELS_POINTS = ((0.7, 3, (6, 8), "[0, 1]"), (1.0, 3, (6, 6), "[-1, 1]"), (0.3, 5, (6, 6), "[-1, 1]"),
              (0.05, 5, (7, 5), "[0, 1]"))


@grades("5.2")
def els_denoiser(els_denoiser):
    """ELS: each pixel's patch (circular padding) against every patch inside every training image, by brute force,
    at t from 1 to 0.05, P = 3 and 5, square and non-square images in [-1, 1] and [0, 1]."""
    for k, (t, p, size, scale) in enumerate(ELS_POINTS):
        train, x_t = _data(5, (1, *size), scale, 140 + k)
        what = f"at t = {t:g}, P = {p} ({size[0]} x {size[1]} images in {scale})"
        got = _run(els_denoiser, f"the ELS denoiser {what}", x_t, t, train, p)
        want = brute_els(x_t, t, train, p)
        if close(got, want, 1e-4):
            continue
        if not isinstance(got, torch.Tensor) or got.shape != x_t.shape:
            fail(f"the ELS denoiser returned {shape_of(got)} for x_t of shape {list(x_t.shape)}")
        r = p // 2
        inner = (slice(None), slice(None), slice(r, -r), slice(r, -r))
        if close(got[inner], want[inner], 1e-4):
            fail(f"{what}, pixels near the border differ: pad the query patch circularly (as the paper's code does)")
        from helpers.ideal import local_denoiser
        named = (
            (local_denoiser(x_t, t, train, p), "each pixel only compares with the patch at its own location in "
                                               "every training image (that is LS): candidates are patches at every "
                                               "location"),
            (brute_els(x_t, t, train, p, centre=False), "it averages the candidates' whole patches: take each "
                                                        "patch's centre pixel"),
            (brute_els(x_t, t, train, p, temperature=2 * t), "the softmax divides by 2 t, not by twice the noise "
                                                             "variance"),
            (brute_els(x_t, t, train, p, padded_keys=True), "the candidates include patches that wrap around a "
                                                            "training image's border: take only patches lying "
                                                            "inside it"),
        )
        name_the_mistake(got, named, what, 1e-4)
        fail(f"{what}, the output differs from the posterior mean over every {p} x {p} patch of every training "
             f"image (brute force), {where(got, want)}")
