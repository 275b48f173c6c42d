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
        raise FloatingPointError(f"{what} has {bad} non-finite values (NaN or infinity); nothing was written. "
                                 "Check the inputs and the model's weights.")
    return tensor
