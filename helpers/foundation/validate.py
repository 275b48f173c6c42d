"""Checks that public entry points run on their inputs once, at the boundary, so a bad value gets one sentence
that says what was wrong and how to fix it instead of a trace from deep inside torch.

Every function returns the checked (possibly normalised) value, so a caller writes ``steps = count(steps, "steps")``.
"""
import math
import numbers

import torch


def count(value, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer in [minimum, maximum]; bools and floats such as 2.5 are refused (2.0 is accepted as 2)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
            not isinstance(value, numbers.Integral) and not float(value).is_integer()):
        raise TypeError(f"{name} must be a whole number, not {value!r}.")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, not {value}.")
    return value


def finite_number(value, name: str, minimum: float | None = None, maximum: float | None = None) -> float:
    """A finite real number, optionally within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, not {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum:g}, not {value:g}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum:g}, not {value:g}.")
    return value


def all_finite(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """`tensor` itself, after checking it holds no NaN or infinity (call it before writing or returning a result)."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise FloatingPointError(f"{what} has {bad} non-finite values (NaN or infinity), so nothing was written: "
                                 "check the inputs and the model's weights.")
    return tensor


def network_inputs(network: str, x, t, labels, channels: int, size: int, num_classes: int):
    """``(x, t, labels)`` for a velocity network, checked and normalised: x float [B, C, H, W] (float64 becomes
    float32), t a number or a tensor of 1 or B times in [0, 1] (returned as [B] in x's dtype), labels None for a
    time-only network, else whole numbers in [0, num_classes] (num_classes is the null class), as [B] longs."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{network} takes images as a torch tensor, not {type(x).__name__}: use torch.as_tensor(x).")
    if not x.is_floating_point():
        raise TypeError(f"{network} takes float images in [-1, 1], got dtype {x.dtype}: convert uint8 pixels with "
                        "x.float() / 127.5 - 1.")
    if x.dtype == torch.float64:
        x = x.float()
    if x.dim() != 4 or tuple(x.shape[1:]) != (channels, size, size):
        raise ValueError(f"{network} expects images of shape [B, {channels}, {size}, {size}], got {list(x.shape)}. "
                         f"Add a batch dimension with x[None] or resize to {size} x {size}.")
    batch = x.shape[0]
    if isinstance(t, torch.Tensor):
        if t.numel() not in (1, batch):
            raise ValueError(f"{network} got {t.numel()} times for {batch} images: give one time per image, or one "
                             "for all.")
        t = t.reshape(-1).to(device=x.device, dtype=x.dtype).expand(batch)
    else:
        t = torch.full((batch,), finite_number(t, "the time t", 0.0, 1.0), device=x.device, dtype=x.dtype)
    if not num_classes:
        if labels is not None:
            raise ValueError(f"{network} is time-only: it takes no labels (drop them, or load a class-conditioned "
                             "run).")
        return x, t, None
    if labels is None:
        raise ValueError(f"{network} is class-conditioned: pass labels (use {num_classes} for 'no class').")
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"{network} takes class labels as whole numbers (a long tensor), got dtype {labels.dtype}.")
    if labels.numel() not in (1, batch):
        raise ValueError(f"{network} got {labels.numel()} labels for {batch} images: give one label per image.")
    labels = labels.reshape(-1).to(device=x.device, dtype=torch.long).expand(batch)
    if bool((labels < 0).any()) or bool((labels > num_classes).any()):
        raise ValueError(f"{network} takes labels 0 to {num_classes - 1} ({num_classes} is the null class), got "
                         f"{sorted(set(labels.tolist()))}.")
    return x, t, labels
