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

P (odd) may be a number or a function of t (the calibrated locality schedule). Nothing is evaluated at
t = 0, where the velocity is undefined. The softmax streams over chunks of candidates with a running
maximum and sum (log-sum-exp), so memory does not grow with the number of training patches.
"""
from typing import Callable

import torch
import torch.nn.functional as F

PatchSize = int | Callable[[float], int]


def _check(x_t: torch.Tensor, t: float, train: torch.Tensor) -> None:
    if x_t.dim() != 4 or train.dim() != 4 or x_t.shape[1:] != train.shape[1:]:
        raise ValueError(f"x_t [B, C, H, W] and train [N, C, H, W] must share C, H, W; got {list(x_t.shape)} "
                         f"and {list(train.shape)}")
    if not 0.0 < float(t) <= 1.0:
        raise ValueError(f"t must be in (0, 1]; the velocity is undefined at t = 0 (got {t})")


def _resolve(patch_size: PatchSize, t: float) -> int:
    p = int(patch_size(t) if callable(patch_size) else patch_size)
    if p < 1 or p % 2 == 0:
        raise ValueError(f"patch size must be odd and positive, got {p}")
    return p


def streaming_patch_softmax(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, t: float,
                            log_counts: torch.Tensor | None = None, chunk: int = 8192) -> torch.Tensor:
    """sum_k softmax_k(-|| q - (1 - t) k ||^2 / (2 t^2) + log_count_k) * value_k for every query.

    queries [..., Q, D], keys [M, D], values [M], optional log_counts [M] (duplicate keys merged);
    returns [..., Q]. The squared distance is expanded as ||q||^2 - 2 a q.k + a^2 ||k||^2 with a = 1 - t,
    and the ||q||^2 term, constant per query, is dropped. The softmax is accumulated over chunks of keys.
    """
    a, scale = 1.0 - float(t), 1.0 / (2.0 * float(t) ** 2)
    running_max = torch.full(queries.shape[:-1], float("-inf"), dtype=queries.dtype, device=queries.device)
    running_sum = torch.zeros_like(running_max)
    weighted = torch.zeros_like(running_max)
    for start in range(0, keys.shape[0], chunk):
        k, v = keys[start:start + chunk], values[start:start + chunk]
        logits = (2 * a * scale) * (queries @ k.T) - (a * a * scale) * (k * k).sum(-1)
        if log_counts is not None:
            logits = logits + log_counts[start:start + chunk]
        new_max = torch.maximum(running_max, logits.amax(-1))
        correction = torch.exp(running_max - new_max)
        p = torch.exp(logits - new_max.unsqueeze(-1))
        running_sum = running_sum * correction + p.sum(-1)
        weighted = weighted * correction + p @ v
        running_max = new_max
    return weighted / running_sum


def _velocity(x_t: torch.Tensor, x0_hat: torch.Tensor, t: float) -> torch.Tensor:
    return (x_t - x0_hat) / float(t)


def ideal_denoiser(x_t: torch.Tensor, t: float, train: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """IS: x0_hat = sum_n softmax_n(-|| x_t - (1 - t) x0_n ||^2 / (2 t^2)) x0_n, image by image."""
    _check(x_t, t, train)
    b, n = x_t.shape[0], train.shape[0]
    queries, keys = x_t.reshape(b, 1, -1), train.reshape(n, -1)
    out = torch.stack([streaming_patch_softmax(queries, keys, keys[:, i], t, chunk=chunk)[:, 0]
                       for i in range(keys.shape[1])], dim=-1)
    return out.reshape(x_t.shape)


def ideal_velocity(x_t, t, train, chunk: int = 8192):
    """IS machine velocity (x_t - x0_hat) / t."""
    return _velocity(x_t, ideal_denoiser(x_t, t, train, chunk), t)


def local_denoiser(x_t: torch.Tensor, t: float, train: torch.Tensor, patch_size: PatchSize,
                   chunk: int = 512) -> torch.Tensor:
    """LS: at pixel u, logits_n(u) = -sum_{|d| <= P//2} (x_t(u + d) - (1 - t) x0_n(u + d))^2 / (2 t^2)
    (zero padding), x0_hat(u) = sum_n softmax_n(logits(u)) x0_n(u). Streams over chunks of training images."""
    _check(x_t, t, train)
    p, a, scale = _resolve(patch_size, t), 1.0 - float(t), 1.0 / (2.0 * float(t) ** 2)
    b, _, h, w = x_t.shape
    running_max = torch.full((b, 1, h, w), float("-inf"), dtype=x_t.dtype, device=x_t.device)
    running_sum, weighted = torch.zeros_like(running_max), torch.zeros_like(x_t)
    for start in range(0, train.shape[0], chunk):
        images = train[start:start + chunk]                                    # [n, C, H, W]
        sq = (x_t.unsqueeze(1) - a * images.unsqueeze(0)).pow(2).sum(2, keepdim=True)  # [B, n, 1, H, W]
        box = F.avg_pool2d(sq.flatten(0, 1), p, stride=1, padding=p // 2, count_include_pad=True) * p * p
        logits = (-scale * box).view(b, images.shape[0], 1, h, w)
        new_max = torch.maximum(running_max, logits.amax(1))
        correction = torch.exp(running_max - new_max)
        weights = torch.exp(logits - new_max.unsqueeze(1))                    # [B, n, 1, H, W]
        running_sum = running_sum * correction + weights.sum(1)
        weighted = weighted * correction + (weights * images.unsqueeze(0)).sum(1)
        running_max = new_max
    return weighted / running_sum


def local_velocity(x_t, t, train, patch_size: PatchSize, chunk: int = 512):
    """LS machine velocity."""
    return _velocity(x_t, local_denoiser(x_t, t, train, patch_size, chunk), t)


def _patches(images: torch.Tensor, p: int) -> torch.Tensor:
    """All P x P patches lying inside `images` [N, C, H, W], flattened: [N * (H-P+1) * (W-P+1), C * P * P]."""
    return F.unfold(images, p).transpose(1, 2).reshape(-1, images.shape[1] * p * p)


def unique_patches(keys: torch.Tensor, values: torch.Tensor):
    """Merge identical keys (MNIST's blank background makes many): (keys, values, log counts), exact."""
    unique, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    merged = torch.zeros(unique.shape[0], dtype=values.dtype, device=values.device).index_add_(0, inverse, values)
    return unique, merged / counts, counts.to(keys.dtype).log()


def els_denoiser(x_t: torch.Tensor, t: float, train: torch.Tensor, patch_size: PatchSize,
                 chunk: int = 8192, deduplicate: bool = False) -> torch.Tensor:
    """ELS: every query patch (circular padding) against every P x P patch inside every training image;
    x0_hat(u) = sum_k softmax_k(-|| q_u - (1 - t) phi_k ||^2 / (2 t^2)) centre(phi_k). Single channel."""
    _check(x_t, t, train)
    if x_t.shape[1] != 1:
        raise ValueError("els_denoiser works on single-channel images")
    p = _resolve(patch_size, t)
    b, _, h, w = x_t.shape
    padded = F.pad(x_t, [p // 2] * 4, mode="circular")
    queries = F.unfold(padded, p).transpose(1, 2)                                # [B, H*W, P*P]
    keys = _patches(train, p)
    values, log_counts = keys[:, (p * p) // 2].clone(), None
    if deduplicate:
        keys, values, log_counts = unique_patches(keys, values)
    return streaming_patch_softmax(queries, keys, values, t, log_counts, chunk).view(b, 1, h, w)


def els_velocity(x_t, t, train, patch_size: PatchSize, chunk: int = 8192, deduplicate: bool = False):
    """ELS machine velocity."""
    return _velocity(x_t, els_denoiser(x_t, t, train, patch_size, chunk, deduplicate), t)


def _boundary_classes(size: int, r: int) -> list[list[int]]:
    """Positions grouped by boundary class: each border offset alone, the interior together."""
    border = [[i] for i in range(min(r, size))] + [[i] for i in range(max(size - r, r), size)]
    interior = list(range(r, size - r))
    return border + ([interior] if interior else [])


def bbels_denoiser(x_t: torch.Tensor, t: float, train: torch.Tensor, patch_size: PatchSize,
                   chunk: int = 8192) -> torch.Tensor:
    """bbELS: zero padding; a pixel matches the patches (centred anywhere in a training image) whose
    centre lies in the same row class and the same column class, where a row within P // 2 of the top or
    bottom border is a class of its own and all interior rows form one class (columns likewise)."""
    _check(x_t, t, train)
    if x_t.shape[1] != 1:
        raise ValueError("bbels_denoiser works on single-channel images")
    p = _resolve(patch_size, t)
    r, (b, _, h, w) = p // 2, x_t.shape
    query_patches = F.unfold(F.pad(x_t, [r] * 4), p).transpose(1, 2).view(b, h, w, p * p)
    train_patches = F.unfold(F.pad(train, [r] * 4), p).transpose(1, 2).view(train.shape[0], h, w, p * p)
    out = torch.empty(b, h, w, dtype=x_t.dtype, device=x_t.device)
    for rows in _boundary_classes(h, r):
        for cols in _boundary_classes(w, r):
            keys = train_patches[:, rows][:, :, cols].reshape(-1, p * p)
            queries = query_patches[:, rows][:, :, cols].reshape(b, -1, p * p)
            result = streaming_patch_softmax(queries, keys, keys[:, (p * p) // 2], t, chunk=chunk)
            out[:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = result.view(b, len(rows), len(cols))
    return out.unsqueeze(1)


def bbels_velocity(x_t, t, train, patch_size: PatchSize, chunk: int = 8192):
    """bbELS machine velocity."""
    return _velocity(x_t, bbels_denoiser(x_t, t, train, patch_size, chunk), t)
