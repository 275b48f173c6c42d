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
function of t (the calibrated locality schedule, `helpers.measure.locality`). Nothing is evaluated at t = 0, where
the velocity is undefined.

Patch sizes larger than the image: LS and bbELS pad with zeros, so any P is defined (bbELS with P >= the
image size puts every pixel in a boundary class of its own, which is LS). ELS's candidates are the patches
lying fully inside a training image, and none do when P exceeds the image's height or width: refused.

Inputs are checked once, at each public function: a non-empty training set of x_t's shape (converted to
x_t's dtype), t in (0, 1], whole odd positive P and counts; every denoiser's result is checked finite.

Memory: the training set is read in groups of `group` images and the candidates of a group in chunks of
`chunk` keys (`helpers.foundation.patch_attention`: by default a chunk holds LOGITS_PER_CHUNK logits); an online softmax (running maximum
and sum, log-sum-exp) accumulates over them, so the working memory does not grow with N.
"""
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from helpers.foundation.patch_attention import OnlineSoftmax, attend, attend_patches
from helpers.foundation.validate import all_finite, count, finite_number

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


def _class_positions(h: int, w: int, r: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """bbELS's classes (a row class x a column class) as (rows, cols) index tensors [C, m], the classes with the
    same number m of positions stacked together: the corners (m = 1), the border strips, the interior."""
    by_size: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for rows in _boundary_classes(h, r):
        for cols in _boundary_classes(w, r):
            grid = torch.meshgrid(torch.arange(rows.start, rows.stop), torch.arange(cols.start, cols.stop), indexing="ij")
            by_size.setdefault(grid[0].numel(), []).append(tuple(g.flatten() for g in grid))
    return [tuple(torch.stack(axis).to(device) for axis in zip(*group)) for group in by_size.values()]


def _centred_patches(images: torch.Tensor, p: int) -> torch.Tensor:
    """The zero-padded P x P patch centred at every pixel of images [B, 1, H, W], as a strided view
    [H, W, B, P, P] of the padded images (nothing copied until a class gathers its positions)."""
    return F.pad(images, [p // 2] * 4)[:, 0].unfold(1, p, 1).unfold(2, p, 1).permute(1, 2, 0, 3, 4)


def _by_class(patches: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """A view from `_centred_patches` at each class's positions (rows, cols [C, m]): [C, m * B, P*P],
    position-major, gathered in one copy."""
    return patches[rows, cols].reshape(rows.shape[0], -1, patches.shape[-1] ** 2)


def bbels_denoiser(x_t: torch.Tensor, t: float, train: torch.Tensor, patch_size: PatchSize,
                   chunk: int | None = None, group: int = 64, deduplicate: bool = False) -> torch.Tensor:
    """bbELS: zero padding; a pixel matches the patches (centred anywhere in a training image) whose
    centre lies in the same row class and the same column class, where a row within P // 2 of the top or
    bottom border is a class of its own and all interior rows form one class (columns likewise). Any odd P:
    with P >= the image size every pixel is a class of its own, which is LS.

    Classes with as many positions (the corners, the border strips) share one batched matrix product, each
    with its own keys; `deduplicate` merges identical patches of a class batched alone (the interior, where
    MNIST's blank background repeats), exactly as in `els_denoiser`."""
    t, train = _check(x_t, t, train, single_channel=True)
    chunk, group = _optional_count(chunk, "chunk"), count(group, "group")
    p = _resolve(patch_size, t)
    r, (b, _, h, w) = p // 2, x_t.shape
    classes = _class_positions(h, w, r, x_t.device)
    query_patches = _centred_patches(x_t, p)
    queries = [_by_class(query_patches, rows, cols) for rows, cols in classes]
    states = [OnlineSoftmax(q.shape[:2], (1,), x_t) for q in queries]
    for images in _groups(train, group):
        train_patches = _centred_patches(images, p)
        for (rows, cols), q, state in zip(classes, queries, states):
            keys = _by_class(train_patches, rows, cols)                                  # [C, m * n, P*P]
            alone = len(rows) == 1
            attend_patches(state, q, keys[0] if alone else keys, t, chunk, deduplicate and alone)
    out = torch.empty(b, h, w, dtype=x_t.dtype, device=x_t.device)
    for (rows, cols), state in zip(classes, states):
        out[:, rows, cols] = state.result().view(*rows.shape, b).permute(2, 0, 1)
    return all_finite(out.view(b, 1, h, w), "the bbELS denoiser's x0_hat")


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
