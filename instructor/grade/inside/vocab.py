"""The small callables a hidden case may hand to a student's function, named in the case's plan.

A plan travels as data ({"V": name, "p": parameters}); the runner builds the callable here. They are generic
test doubles (a velocity field, a class-conditioned model, the exact noise estimate of a one-point data set, an
estimate that applies a fixed function): what they are is no secret, the hidden cases' inputs, expected values
and verdicts stay outside the sandbox.
"""
import importlib

import torch
from torch import nn


def _column(t, x: torch.Tensor) -> torch.Tensor:
    """t (a number, a 0-d tensor or one per sample) as a [B, 1, 1, 1] column in x's dtype."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1)
    return t.expand(x.shape[0]).reshape(-1, *[1] * (x.dim() - 1)) if t.numel() == 1 else \
        t.reshape(-1, *[1] * (x.dim() - 1))


def affine_velocity(a: float, b: float):
    """v(x, t, labels=None) = a x + b t (+ labels / 10 when labels are given)."""
    def velocity(x, t, labels=None):
        out = a * x + b * _column(t, x)
        if labels is not None:
            out = out + torch.as_tensor(labels, dtype=x.dtype).reshape(-1, *[1] * (x.dim() - 1)) / 10
        return out
    return velocity


class LabelModel(nn.Module):
    """A class-conditioned 'velocity' model: v = x (label + 1) / K + t, and x / 2 + t without labels."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.config = {"name": "LabelModel", "num_classes": num_classes}
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, labels=None):
        base = _column(t, x) + self.weight
        if labels is None:
            return x / 2 + base
        scale = (torch.as_tensor(labels, dtype=x.dtype).reshape(-1, *[1] * (x.dim() - 1)) + 1) / self.config["num_classes"]
        return x * scale + base


def oracle(c: torch.Tensor, alphas_cumprod: torch.Tensor, predicted: torch.Tensor | None = None):
    """The exact noise estimate when every image is c: ((x - sqrt(abar_t) c) / sqrt(1 - abar_t), predicted)."""
    def estimate(x, t):
        a = alphas_cumprod[t].to(x.dtype)
        return (x - a.sqrt() * c) / (1 - a).sqrt(), predicted
    return estimate


def keep(y, t):
    """An after_step that keeps every result as it is."""
    return y


OPERATIONS = {"scale2": lambda x: 2 * x, "cumsum": lambda x: x.cumsum(-1), "square": lambda x: x ** 2,
              "sin": torch.sin, "shift": lambda x: x.roll(1, -2) - 0.5 * x}


def mapped(operation: str, variance: float | None = None):
    """estimate(x, t) = (operation(x), variance * x.abs() or None)."""
    function = OPERATIONS[operation]

    def estimate(x, t):
        return function(x), (None if variance is None else variance * x.abs())
    return estimate


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def view(name: str):
    """One of the student's own views (IDENTITY, FLIP, NEGATIVE, SKEW of helpers.diffusion), as the visible check
    uses them."""
    if name not in ("IDENTITY", "FLIP", "NEGATIVE", "SKEW"):
        raise ValueError(f"unknown view {name!r}")
    return getattr(importlib.import_module("helpers.diffusion"), name)


NAMES = {"affine_velocity": affine_velocity, "label_model": LabelModel, "oracle": oracle, "keep": lambda: keep,
         "mapped": mapped, "generator": generator, "view": view}


def build(name: str, parameters: dict):
    if name not in NAMES:
        raise ValueError(f"unknown vocabulary callable {name!r}")
    return NAMES[name](**parameters)
