"""Softmax attention streamed over millions of keys: the engine of the ideal flow machines (`helpers.ideal`).

A machine's denoised pixel is a softmax average over candidate patches k of their values (centre pixels),

    x0_hat = sum_k softmax_k(logit_k) value_k,   logit_k = -|| q - (1 - t) k ||^2 / (2 t^2) (+ log count_k),

which is attention with the squared distance folded into one matrix product (`patch_logits`). There are too many
keys to hold all logits, so `attend` feeds them in chunks to an `OnlineSoftmax` (running maximum and sum, as in
flash attention); `unique_patches` merges identical patches first, exactly (weight: log count).
"""
from typing import Callable

import torch


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
    scaled by 1 / (2 t^2): attention with the squared distance folded into a matrix product. Keys [C, M, D]
    give each of C query sets [C, Q, D] its own keys, in one batched product. `out`, a buffer of at least
    Q' x M elements (Q' all queries), is written instead of new memory.
    """
    a, scale = 1.0 - float(t), 1.0 / (2.0 * float(t) ** 2)
    bias = -(a * a * scale) * (keys * keys).sum(-1)
    if log_counts is not None:
        bias = bias + log_counts
    if keys.dim() == 3:
        if out is not None:
            out = out[:queries.shape[0] * queries.shape[1] * keys.shape[1]].view(*queries.shape[:2], keys.shape[1])
        return torch.baddbmm(bias.unsqueeze(1), queries, keys.transpose(1, 2), alpha=2 * a * scale, out=out)
    flat_queries = queries.reshape(-1, queries.shape[-1])
    if out is not None:
        out = out[:flat_queries.shape[0] * keys.shape[0]].view(flat_queries.shape[0], keys.shape[0])
    flat = torch.addmm(bias, flat_queries, keys.T, alpha=2 * a * scale, out=out)  # one pass
    return flat.view(*queries.shape[:-1], keys.shape[0])


LOGITS_PER_CHUNK = 2 ** 24  # 64 MB of fp32 logits per chunk: 3x faster than 16 MB with 21 noises (small chunks are overhead)


def attend(state: OnlineSoftmax, queries, keys, values, t, log_counts=None, chunk: int | None = None) -> None:
    """Feed keys [M, D] with values [M, V] (and optional log counts) to `state` in chunks of `chunk` keys
    (by default as many as keep the chunk's logits under LOGITS_PER_CHUNK). Keys [C, M, D] with values
    [C, M, V] serve C query sets [C, Q, D] at once, each its own keys (`patch_logits`)."""
    chunk = chunk or max(16, LOGITS_PER_CHUNK // max(1, queries[..., 0].numel()))
    queries = queries.contiguous()
    values = torch.cat([values, torch.ones_like(values[..., :1])], -1)  # the last column sums the weights
    size = keys.shape[-2]
    buffer = queries.new_empty(queries[..., 0].numel() * min(chunk, size))  # every chunk's logits
    for start in range(0, size, chunk):
        end = start + chunk
        counts = None if log_counts is None else log_counts[start:end]
        v = values[..., start:end, :]
        state.update(patch_logits(queries, keys[..., start:end, :], t, counts, buffer), lambda p: p @ v, summed=True)


def unique_patches(keys: torch.Tensor):
    """Merge identical keys (MNIST's blank background makes many): (unique keys, log counts), exact,
    since identical patches have identical centre pixels."""
    unique, counts = torch.unique(keys, dim=0, return_counts=True)
    return unique, counts.to(keys.dtype).log()


def attend_patches(state: OnlineSoftmax, queries, keys: torch.Tensor, t, chunk=None, deduplicate=False) -> None:
    """Feed P x P patches `keys` [M, P*P] (or [C, M, P*P], one set per query set, as in `attend`) to `state`,
    each valued by its centre pixel; with `deduplicate` (one key set only), identical patches are merged first
    (`unique_patches`), which leaves the softmax average unchanged."""
    log_counts = None
    if deduplicate:
        if keys.dim() != 2:
            raise ValueError("deduplicate merges the patches of one key set [M, P*P]; batched key sets have none.")
        keys, log_counts = unique_patches(keys)
    centre = keys.shape[-1] // 2
    attend(state, queries, keys, keys[..., centre:centre + 1].contiguous(), t, log_counts, chunk)
