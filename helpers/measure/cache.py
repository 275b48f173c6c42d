"""Measured figures kept next to the checkpoint they measure, recomputed whenever anything they depend on changes.

A measurement (a dict of numbers, e.g. `helpers.measure.metrics.sample_quality`) is stored in
``<run folder>/measurements.json`` under a label, with a fingerprint: the SHA-256 of

- every input it depends on: a network's weights (its ``state_dict``, names and bytes), a tensor's dtype,
  shape and bytes (the starting noise, the labels, the reference features), or any JSON value (the number of
  steps, the method, the guidance scale);
- the code that makes it: the syntax tree of the sampling and measuring modules (`CODE`), so an edit to the
  sampler recomputes while a changed comment or docstring does not.

`cached` returns the stored value when the fingerprint matches and otherwise computes it, checks that every
number is finite, and rewrites the file atomically (a temporary file, then a rename), so a figure read from
the cache is the figure the current checkpoint and code would print.
"""
import ast
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch

from helpers import samplers
from helpers.foundation import checkpoint_files
from helpers.measure import metrics

FILE_NAME = "measurements.json"
HELPERS = Path(__file__).resolve().parents[1]
CODE = ("samplers.py", "guidance.py", "measure/metrics.py", "foundation/classifier.py", "course_unet.py",
        "attention_unet.py")


def _without_docstrings(tree: ast.AST) -> ast.AST:
    """The tree without docstrings and import statements, so neither a comment nor a module's move (which
    changes only where its names are imported from) counts as a change of the measuring code."""
    tree.body = [node for node in tree.body if not isinstance(node, (ast.Import, ast.ImportFrom))] or [ast.Pass()]
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def code_version(files=CODE, folder: Path | None = None) -> str:
    """SHA-256 of the syntax trees (docstrings, comments and imports left out) of `files` in `folder` (default:
    helpers), each named by its file name alone, so that moving a module between folders keeps the key."""
    digest, folder = hashlib.sha256(), Path(folder or HELPERS)
    for name in files:
        digest.update(Path(name).name.encode())
        digest.update(ast.dump(_without_docstrings(ast.parse((folder / name).read_text()))).encode())
    return digest.hexdigest()


def _feed(digest, part) -> None:
    if isinstance(part, torch.nn.Module):
        for name, tensor in part.state_dict().items():
            digest.update(name.encode())
            _feed(digest, tensor)
    elif isinstance(part, torch.Tensor):
        tensor = part.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{list(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    else:
        try:
            digest.update(json.dumps(part, sort_keys=True).encode())
        except TypeError:
            raise TypeError(f"a measurement's inputs must be networks, tensors or JSON values, not "
                            f"{type(part).__name__}: pass the setting itself (a number or a string).") from None


def fingerprint(*inputs, code: str | None = None) -> str:
    """SHA-256 of `inputs` (networks, tensors, JSON values) and of the measuring code (default `code_version()`)."""
    digest = hashlib.sha256((code or code_version()).encode())
    for part in inputs:
        _feed(digest, part)
    return digest.hexdigest()


def weights_digest(network: torch.nn.Module) -> str:
    """SHA-256 of a network's weights alone (not the code): for results that outlive code edits, such as
    notebook 05's locality calibration (`helpers.measure.locality`)."""
    return fingerprint(network, code="network weights")


def _read(path: Path) -> dict:
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}  # unreadable: every entry is measured again and the file rewritten whole
    return stored if isinstance(stored, dict) else {}


def _finite(value: dict, label: str) -> dict:
    if not isinstance(value, dict) or not value:
        raise TypeError(f"the measurement {label!r} must return a non-empty dict of numbers, not {value!r}.")
    numbers = {key: float(number) for key, number in value.items()}
    bad = [key for key, number in numbers.items() if not math.isfinite(number)]
    if bad:
        raise ValueError(f"the measurement {label!r} gave non-finite {', '.join(bad)}; nothing was stored.")
    return numbers


def cached(folder, label: str, compute: Callable[[], dict], *inputs) -> dict:
    """The measurement `label` of the run in `folder`: stored if its fingerprint over `inputs` and the code
    matches, else ``compute()`` (checked finite, then stored in ``folder/measurements.json``)."""
    if not isinstance(label, str) or not label:
        raise ValueError("a measurement needs a non-empty label (a string naming what was measured).")
    folder = Path(folder)
    if not folder.is_dir():
        raise checkpoint_files.CheckpointError(f"no trained model at {folder}: train or load the run first; its measurements "
                                         "are stored beside its checkpoint.")
    key = fingerprint(*inputs)
    path = folder / FILE_NAME
    entry = _read(path).get(label)
    if isinstance(entry, dict) and entry.get("fingerprint") == key and isinstance(entry.get("value"), dict):
        return dict(entry["value"])
    value = _finite(compute(), label)
    stored = _read(path)  # again: another measurement may have been stored meanwhile
    stored[label] = {"fingerprint": key, "value": value}
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".measurements-", suffix=".json")
    with os.fdopen(handle, "w") as f:
        json.dump(dict(sorted(stored.items())), f, indent=1)
        f.write("\n")
    os.replace(temporary, path)
    return value


def sample_quality(folder, label: str, velocity, networks, noise: torch.Tensor, steps: int, classifier,
                   reference_features: torch.Tensor, labels: torch.Tensor | None = None, method: str = "euler",
                   settings=(), device="cpu") -> dict:
    """`metrics.sample_quality` of ``samplers.integrate(velocity, noise, steps, labels, method)``, cached under
    `label` in ``folder/measurements.json`` and keyed by the `networks` behind the velocity, the classifier,
    the noise, the labels, the reference features, steps, method, `settings` (e.g. a guidance scale) and the
    sampling code."""
    def measure():
        moved = None if labels is None else labels.to(device)
        samples = samplers.integrate(velocity, noise.to(device), steps, moved, method).cpu()
        return metrics.sample_quality(classifier, samples, reference_features, labels)
    return cached(folder, label, measure, *networks, classifier, noise, labels, reference_features, steps, method,
                  list(settings))
