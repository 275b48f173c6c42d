"""Ideal flow machines (Kamb and Ganguli, arXiv:2412.20292) in this workbook's convention.

With x_t = (1 - t) x0 + t x1, a candidate clean patch phi (from the training set) explains the query patch
q of x_t with Gaussian log-likelihood

    logit(phi) = -|| q - (1 - t) phi ||^2 / (2 t^2),

and the machine's denoised pixel is the softmax-weighted average of the candidates' centre pixels,

    x0_hat(u) = sum_phi softmax(logit)(phi) * centre(phi),     velocity  v(u) = (x_t(u) - x0_hat(u)) / t.

The machines differ only in which candidates each pixel u may use:

- IS    (ideal score): the patch is the whole image; candidates are the N training images.
- LS    (local score): the P x P patch around u (zero padding) against the co-located patch of every
        training image (zero padding too).
- ELS   (equivariant local score): the P x P patch around u against every P x P patch at every location
        of every training image. As in the paper's released code, the query is padded circularly and the
        candidates are the N (H - P + 1)(W - P + 1) patches that lie fully inside a training image.
- bbELS (boundary-broken ELS): zero padding; a pixel at distance d < P // 2 from a border only matches
        patches at the same distance from that border (anywhere along it), a corner pixel only the same
        location, and an interior pixel every interior patch. With P >= the image size it reduces to LS.

The temperature is the noise variance t^2 (the 2 t^2 above): the machines are exact Bayes denoisers for
their candidate sets, with no free temperature. P (a whole, odd, positive number) may be a number or a
function of t (the calibrated locality schedule, `helpers.locality`). Nothing is evaluated at t = 0, where
the velocity is undefined.

Patch sizes larger than the image: LS and bbELS pad with zeros, so any P is defined (bbELS with P >= the
image size puts every pixel in a boundary class of its own, which is LS). ELS's candidates are the patches
lying fully inside a training image, and none do when P exceeds the image's height or width: refused.

Inputs are checked once, at each public function: a non-empty training set of x_t's shape (converted to
x_t's dtype), t in (0, 1], whole odd positive P and counts; every denoiser's result is checked finite.

Memory: the training set is read in groups of `group` images and the candidates of a group in chunks of
`chunk` keys (by default sized so that a chunk holds LOGITS_PER_CHUNK logits); an online softmax (running maximum
and sum, log-sum-exp) accumulates over them, so the working memory does not grow with N.
"""
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from .validate import all_finite, count, finite_number

PatchSize = int | Callable[[float], int]


def _training_set(images: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """`train` [N, C, H, W] (N >= 1, the images' C, H, W and device) in the images' floating dtype."""
    if not (isinstance(images, torch.Tensor) and images.is_floating_point() and images.dim() == 4):
        what = (f"{images.dtype} tensor of shape {list(images.shape)}" if isinstance(images, torch.Tensor)
                else type(images).__name__)
        raise TypeError(f"x_t must be a floating-point tensor [B, C, H, W], not a {what}.")
    if not isinstance(train, torch.Tensor) or train.dim() != 4 or images.shape[1:] != train.shape[1:]:
        raise ValueError(f"x_t [B, C, H, W] and train [N, C, H, W] must share C, H, W; got {list(images.shape)} "
                         f"and {list(getattr(train, 'shape', []))}.")
    if train.shape[0] == 0:
        raise ValueError("the training set is empty: the machines average over training images, so pass at least one.")
    if train.device != images.device:
        raise ValueError(f"train is on {train.device} and x_t on {images.device}: move the training set to x_t's "
                         "device once, with train.to(device).")
    return train.to(images.dtype)


def _check(x_t: torch.Tensor, t: float, train: torch.Tensor, single_channel: bool = False) -> tuple[float, torch.Tensor]:
    """(t, train) after checking t in (0, 1] and the training set against x_t (see `_training_set`)."""
    train = _training_set(x_t, train)
    t = finite_number(t, "t")
    if t <= 0.0:
        raise ValueError(f"t must be in (0, 1], not {t:g}: the velocity is undefined at t = 0 (the data end).")
    if t > 1.0:
        raise ValueError(f"t must be in (0, 1], not {t:g}: t = 1 is pure noise, the start of sampling.")
    if single_channel and x_t.shape[1] != 1:
        raise ValueError(f"this machine works on single-channel images, not {x_t.shape[1]} channels: pass grey images.")
    return t, train


def _resolve(patch_size: PatchSize, t: float) -> int:
    p = count(patch_size(t) if callable(patch_size) else patch_size, "the patch size P")
    if p % 2 == 0:
        raise ValueError(f"the patch size P must be odd (a patch is centred on its pixel), not {p}.")
    return p


def _optional_count(value: int | None, name: str) -> int | None:
    return None if value is None else count(value, name)


class OnlineSoftmax:
    """sum_k softmax_k(logit_k) value_k, accumulated chunk by chunk of keys.

    Keeps, per query, the running maximum m, the sum s = sum_k exp(logit_k - m) and the weighted sum
    w = sum_k exp(logit_k - m) value_k; a new chunk rescales both by exp(m_old - m_new). The result w / s
    is the exact softmax average, without ever holding all logits.
    """

    def __init__(self, shape, value_shape, like: torch.Tensor):
        self.max = torch.full(shape, float("-inf"), dtype=like.dtype, device=like.device)
        self.sum = torch.zeros(shape, dtype=like.dtype, device=like.device)
        self.weighted = torch.zeros(*shape, *value_shape, dtype=like.dtype, device=like.device)

    def update(self, logits: torch.Tensor, weigh: Callable[[torch.Tensor], torch.Tensor], summed: bool = False) -> None:
        """logits [*shape, M] (overwritten); weigh(p) returns sum_k p_k value_k [*shape, *value_shape], and
        with `summed` also sum_k p_k as one more entry of the last value dimension (values with a column of ones:
        one matrix product instead of a second pass over p)."""
        new_max = torch.maximum(self.max, logits.amax(-1))
        correction = torch.exp(self.max - new_max)
        # Floor at -80: exp(-80) ~ 1e-35 is below float32's resolution next to the maximum's weight 1, and
        # keeps exp out of denormal numbers, which are about 3x slower on CPU. In place: p is the logits' memory.
        p = logits.sub_(new_max.unsqueeze(-1)).clamp_min_(-80.0).exp_()
        weighted = weigh(p)
        total = weighted[..., -1] if summed else p.sum(-1)
        weighted = weighted[..., :-1] if summed else weighted
        extra = self.weighted.dim() - correction.dim()
        self.sum = self.sum * correction + total
        self.weighted = self.weighted * correction.view(*correction.shape, *[1] * extra) + weighted
        self.max = new_max

    def result(self) -> torch.Tensor:
        extra = self.weighted.dim() - self.sum.dim()
        return self.weighted / self.sum.view(*self.sum.shape, *[1] * extra)


def patch_logits(queries: torch.Tensor, keys: torch.Tensor, t: float,
                 log_counts: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """-|| q - (1 - t) k ||^2 / (2 t^2) + log count_k, up to the per-query constant -||q||^2 / (2 t^2).

    queries [..., Q, D], keys [M, D] -> [..., Q, M], as the dot product 2 a q.k - a^2 ||k||^2 (a = 1 - t)
    scaled by 1 / (2 t^2): attention with the squared distance folded into a matrix product. `out`, a
    buffer of at least Q' x M elements (Q' all queries), is written instead of new memory.
    """
    a, scale = 1.0 - float(t), 1.0 / (2.0 * float(t) ** 2)
    bias = -(a * a * scale) * (keys * keys).sum(-1)
    if log_counts is not None:
        bias = bias + log_counts
    flat_queries = queries.reshape(-1, queries.shape[-1])
    if out is not None:
        out = out[:flat_queries.shape[0] * keys.shape[0]].view(flat_queries.shape[0], keys.shape[0])
    flat = torch.addmm(bias, flat_queries, keys.T, alpha=2 * a * scale, out=out)  # one pass
    return flat.view(*queries.shape[:-1], keys.shape[0])


LOGITS_PER_CHUNK = 2 ** 24  # 64 MB of fp32 logits per chunk: 3x faster than 16 MB with 21 noises (small chunks are overhead)


def attend(state: OnlineSoftmax, queries, keys, values, t, log_counts=None, chunk: int | None = None) -> None:
    """Feed keys [M, D] with values [M, V] (and optional log counts) to `state` in chunks of `chunk` keys
    (by default as many as keep the chunk's logits under LOGITS_PER_CHUNK)."""
    chunk = chunk or max(16, LOGITS_PER_CHUNK // max(1, queries[..., 0].numel()))
    queries = queries.contiguous()
    values = torch.cat([values, torch.ones_like(values[:, :1])], 1)  # the last column sums the weights
    buffer = queries.new_empty(queries[..., 0].numel() * min(chunk, keys.shape[0]))  # every chunk's logits
    for start in range(0, keys.shape[0], chunk):
        end = start + chunk
        counts = None if log_counts is None else log_counts[start:end]
        v = values[start:end]
        state.update(patch_logits(queries, keys[start:end], t, counts, buffer), lambda p: p @ v, summed=True)


def unique_patches(keys: torch.Tensor):
    """Merge identical keys (MNIST's blank background makes many): (unique keys, log counts), exact,
    since identical patches have identical centre pixels."""
    unique, counts = torch.unique(keys, dim=0, return_counts=True)
    return unique, counts.to(keys.dtype).log()


def attend_patches(state: OnlineSoftmax, queries, keys: torch.Tensor, t, chunk=None, deduplicate=False) -> None:
    """Feed P x P patches `keys` [M, P*P] to `state`, each valued by its centre pixel; with `deduplicate`,
    identical patches are merged first (`unique_patches`), which leaves the softmax average unchanged."""
    log_counts = None
    if deduplicate:
        keys, log_counts = unique_patches(keys)
    centre = keys.shape[1] // 2
    attend(state, queries, keys, keys[:, centre:centre + 1].contiguous(), t, log_counts, chunk)


def _groups(train: torch.Tensor, group: int) -> Iterator[torch.Tensor]:
    for start in range(0, train.shape[0], group):
        yield train[start:start + group]


def ideal_denoiser(x_t: torch.Tensor, t: float, train: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """IS: x0_hat = sum_n softmax_n(-|| x_t - (1 - t) x0_n ||^2 / (2 t^2)) x0_n."""
    t, train = _check(x_t, t, train)
    chunk = _optional_count(chunk, "chunk")
    # Exercise 5.1 hint: weigh every training image by the softmax over images of its Gaussian log-likelihood given x_t (signal scale 1 - t, noise std t), and average them.
    ### BEGIN SOLUTION
    b = x_t.shape[0]
    keys = train.reshape(train.shape[0], -1)
    state = OnlineSoftmax((b, 1), (keys.shape[1],), x_t)
    attend(state, x_t.reshape(b, 1, -1), keys, keys, t, chunk=chunk)
    x0_hat = state.result().reshape(x_t.shape)
    ### END SOLUTION
    return all_finite(x0_hat, "the IS denoiser's x0_hat")


def nearest_training_images(images: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """For each image, the training image closest in Euclidean distance (what IS memorises)."""
    train = _training_set(images, train)
    distances = torch.cdist(images.flatten(1), train.flatten(1))
    return train[distances.argmin(1)]


def local_denoiser(x_t: torch.Tensor, t: float, train: torch.Tensor, patch_size: PatchSize,
                   group: int = 256) -> torch.Tensor:
    """LS: at pixel u, logits_n(u) = -sum_{|d| <= P//2} (x_t(u + d) - (1 - t) x0_n(u + d))^2 / (2 t^2)
    (zero padding), x0_hat(u) = sum_n softmax_n(logits(u)) x0_n(u). Any odd P, even larger than the image."""
    t, train = _check(x_t, t, train)
    group = count(group, "group")
    p, a, scale = _resolve(patch_size, t), 1.0 - t, 1.0 / (2.0 * t ** 2)
    b, c, h, w = x_t.shape
    state = OnlineSoftmax((b, h * w), (c,), x_t)
    for images in _groups(train, group):
        n = images.shape[0]
        sq = (x_t.unsqueeze(1) - a * images.unsqueeze(0)).pow(2).sum(2, keepdim=True)  # [B, n, 1, H, W]
        box = F.avg_pool2d(sq.flatten(0, 1), p, stride=1, padding=p // 2, count_include_pad=True) * p * p
        logits = (-scale * box).view(b, n, h * w).transpose(1, 2)                      # [B, HW, n]
        pixels = images.flatten(2).permute(2, 0, 1)                                     # [HW, n, C]
        state.update(logits, lambda weights: (weights.unsqueeze(-1) * pixels).sum(-2))
    return all_finite(state.result().transpose(1, 2).reshape(x_t.shape), "the LS denoiser's x0_hat")


def _patches(images: torch.Tensor, p: int) -> torch.Tensor:
    """All P x P patches lying inside `images` [N, C, H, W], flattened: [N * (H-P+1) * (W-P+1), C * P * P]."""
    return F.unfold(images, p).transpose(1, 2).reshape(-1, images.shape[1] * p * p)


def els_denoiser(x_t: torch.Tensor, t: float, train: torch.Tensor, patch_size: PatchSize,
                 chunk: int | None = None, group: int = 64, deduplicate: bool = False) -> torch.Tensor:
    """ELS: every query patch (circular padding) against every P x P patch inside every training image;
    x0_hat(u) = sum_k softmax_k(-|| q_u - (1 - t) phi_k ||^2 / (2 t^2)) centre(phi_k).

    `deduplicate` merges identical patches of each group of images (weight = log count), exact and faster
    on MNIST, whose blank background repeats the same patch thousands of times. P must not exceed the
    image's height or width (no patch would lie inside a training image)."""
    t, train = _check(x_t, t, train, single_channel=True)
    chunk, group = _optional_count(chunk, "chunk"), count(group, "group")
    p = _resolve(patch_size, t)
    b, _, h, w = x_t.shape
    if p > min(h, w):
        raise ValueError(f"ELS needs P x P patches inside {h} x {w} training images, but P = {p} at t = {t:g}: "
                         f"use P <= {min(h, w)}, or bbELS, whose large-P limit is LS.")
    # Exercise 5.2 hint: each pixel's P x P patch of x_t (circular padding) against every P x P patch inside a training image; average the patches' centre pixels, softmax-weighted as in IS.
    ### BEGIN SOLUTION
    queries = F.unfold(F.pad(x_t, [p // 2] * 4, mode="circular"), p).transpose(1, 2)   # [B, H*W, P*P]
    state = OnlineSoftmax((b, h * w), (1,), x_t)
    for images in _groups(train, group):
        attend_patches(state, queries, _patches(images, p), t, chunk, deduplicate)
    x0_hat = state.result().view(b, 1, h, w)
    ### END SOLUTION
    return all_finite(x0_hat, "the ELS denoiser's x0_hat")


def _boundary_classes(size: int, r: int) -> list[slice]:
    """Positions grouped by boundary class: each border offset alone, the interior together."""
    border = [slice(i, i + 1) for i in range(min(r, size))]
    border += [slice(i, i + 1) for i in range(max(size - r, r), size)]
    return border + ([slice(r, size - r)] if size > 2 * r else [])


def bbels_denoiser(x_t: torch.Tensor, t: float, train: torch.Tensor, patch_size: PatchSize,
                   chunk: int | None = None, group: int = 64, deduplicate: bool = False) -> torch.Tensor:
    """bbELS: zero padding; a pixel matches the patches (centred anywhere in a training image) whose
    centre lies in the same row class and the same column class, where a row within P // 2 of the top or
    bottom border is a class of its own and all interior rows form one class (columns likewise). Any odd P:
    with P >= the image size every pixel is a class of its own, which is LS. `deduplicate` merges identical
    patches of each class and group of images, exactly as in `els_denoiser`."""
    t, train = _check(x_t, t, train, single_channel=True)
    chunk, group = _optional_count(chunk, "chunk"), count(group, "group")
    p = _resolve(patch_size, t)
    r, (b, _, h, w) = p // 2, x_t.shape
    query_patches = F.unfold(F.pad(x_t, [r] * 4), p).transpose(1, 2).view(b, h, w, p * p)
    classes = [(rows, cols) for rows in _boundary_classes(h, r) for cols in _boundary_classes(w, r)]
    queries = {(rows.start, cols.start): query_patches[:, rows, cols].reshape(b, -1, p * p) for rows, cols in classes}
    states = {key: OnlineSoftmax(q.shape[:2], (1,), x_t) for key, q in queries.items()}
    for images in _groups(train, group):
        train_patches = F.unfold(F.pad(images, [r] * 4), p).transpose(1, 2).view(images.shape[0], h, w, p * p)
        for rows, cols in classes:
            attend_patches(states[rows.start, cols.start], queries[rows.start, cols.start],
                           train_patches[:, rows, cols].reshape(-1, p * p), t, chunk, deduplicate)
    out = torch.empty(b, h, w, dtype=x_t.dtype, device=x_t.device)
    for rows, cols in classes:
        out[:, rows, cols] = states[rows.start, cols.start].result().view(b, rows.stop - rows.start,
                                                                         cols.stop - cols.start)
    return all_finite(out.unsqueeze(1), "the bbELS denoiser's x0_hat")


def velocity(denoiser: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """The machine's velocity v = (x_t - x0_hat) / t from its denoiser."""
    def machine_velocity(x_t, t, train, *args, **kwargs):
        return (x_t - denoiser(x_t, t, train, *args, **kwargs)) / float(t)  # the denoiser checked t in (0, 1]
    machine_velocity.__doc__ = f"Velocity (x_t - x0_hat) / t of: {denoiser.__doc__}"
    return machine_velocity


ideal_velocity = velocity(ideal_denoiser)
els_velocity = velocity(els_denoiser)


@torch.no_grad()
def sample(denoiser: Callable[[torch.Tensor, float], torch.Tensor], x1: torch.Tensor, steps: int = 20,
           return_trajectory: bool = False):
    """Euler from t = 1 to 0 with a machine: x <- x - h (x - x0_hat(x, t)) / t, h = 1 / steps.

    On the straight path this is deterministic DDIM; the last step (t = h) returns x0_hat exactly.
    `denoiser(x_t, t)` is any of the denoisers above with its training set (and patch size) bound.
    The result (and the trajectory, whose last entry it is) is checked finite.
    """
    steps = count(steps, "steps")
    x, h = all_finite(x1, "the starting noise x1"), 1.0 / steps
    trajectory = [x] if return_trajectory else None
    for i in range(steps):
        t = 1.0 - i * h
        x = x - h * (x - denoiser(x, t)) / t
        if return_trajectory:
            trajectory.append(x)
    all_finite(x, "the machine's sample")
    return (x, torch.stack(trajectory)) if return_trajectory else x
