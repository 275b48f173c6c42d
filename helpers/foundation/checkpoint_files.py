"""Checkpoints: written atomically, loaded with ``weights_only=True``, checked against the run's config.

A checkpoint is a plain dict of tensors and JSON-like values, so ``torch.load(weights_only=True)``
can read it without unpickling arbitrary code. `save_atomic` writes through `helpers.foundation.atomic.write_atomic`
(a temporary with a unique name beside the file, unnamed where the file system allows, then one rename), so an
interrupted save never leaves a half-written checkpoint, two processes saving the same file never collide, and
a full disk, a read-only file system or a refused permission is one sentence (`atomic.WriteError`): "no space
left on device while writing checkpoints/cpu/x/last.pt; the previous last.pt is intact."
"""
import json
import pickle
from pathlib import Path

import torch

from helpers.foundation import atomic


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or belongs to another model or config."""


def normalise(config: dict) -> dict:
    """The JSON form of a config (tuples become lists), so saved and fresh configs compare equal."""
    return json.loads(json.dumps(config))


def save_atomic(obj: dict, path: Path) -> None:
    """``torch.save`` into a temporary file beside `path`, then rename it over `path`; `atomic.WriteError` (one
    sentence naming the file) when it cannot be written. torch writes into the file object, not a file name, so
    that a full disk reaches here as the system's error (torch's own "unexpected pos" RuntimeError, raised while
    it closes the archive after the failed write, is dropped for the OSError it followed)."""
    with atomic.write_atomic(path, "wb") as file:
        try:
            torch.save(obj, file)
        except RuntimeError as error:
            cause = error.__context__
            while cause is not None and not isinstance(cause, OSError):
                cause = cause.__context__
            if cause is None:
                raise
            raise cause from None


def load(path: Path, device="cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``; a clear error when it is missing or damaged."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: train the model first (run the training cell).")
    if not path.is_file():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file: name its last.pt or an epoch_XXX.pt.")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} holds more than tensors and plain values (code, or bytes that are no checkpoint), and is "
            "refused for safety: if it is a committed run, restore it with `git checkout -- <file>`, else delete "
            "it and train again.") from None
    except OSError as error:
        raise CheckpointError(f"{path} cannot be read ({error.strerror or error}).") from None
    except (RuntimeError, EOFError, ValueError):
        raise CheckpointError(
            f"{path} is damaged or not a torch checkpoint: if it is a committed run, restore it with "
            "`git checkout -- <file>`, else delete it and train again.") from None


def config_differences(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    """Human-readable list of the keys where two (nested) configs differ."""
    lines = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key, "<missing>"), wanted.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: checkpoint has {a!r}, this run asks for {b!r}")
    return lines


def check_config(checkpoint: dict, config: dict, path: Path) -> None:
    """Raise `CheckpointError` when a checkpoint was made with another config."""
    differences = config_differences(checkpoint.get("config", {}), normalise(config))
    if differences:
        raise CheckpointError(
            f"{path} was made with a different configuration:\n  " + "\n  ".join(differences)
            + "\nTrain into another run folder, or retrain this one (WORKBOOK_RETRAIN=1, or train(..., retrain=True))."
        )


def load_weights(model: torch.nn.Module, state_dict: dict, path: Path) -> None:
    """``load_state_dict`` that explains an architecture mismatch instead of dumping torch's trace."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        first = str(error).splitlines()[0:3]
        raise CheckpointError(
            f"{path} does not fit this {type(model).__name__}: its weights are for another architecture "
            f"({' '.join(s.strip() for s in first)}). Build the model with the config stored in the checkpoint."
        ) from None
