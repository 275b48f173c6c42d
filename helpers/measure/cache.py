"""Measured figures kept next to the checkpoint they measure, and reused while their inputs are the same.

A measurement (a dict of numbers, e.g. `helpers.measure.quality.of_run`'s) is stored in
``<run folder>/measurements.json`` under a label, with a key: the SHA-256 of

- the IDENTITY of every input it depends on, given as a dict (`cached`'s `inputs`): a `pathlib.Path` stands
  for its file and counts by the SHA-256 of its bytes (a checkpoint, the data file); anything else is a JSON
  value (a seed, a sample count, the number of steps, the sampler, the guidance scale);
- the code that makes it: the syntax trees of the sampling and measuring modules (`CODE`, docstrings,
  comments and imports left out), so an edit to the sampler measures again while a reworded docstring or a
  module's move does not.

A key never holds a number computed at run time. The classifier's reference features and a drawn noise
tensor differ in their last bits from one CPU to another (AVX2 against AVX-512, for instance), and a key made
of their bytes would miss every committed entry on another machine. So a tensor among the inputs is refused:
name the file it comes from or the seed that draws it instead.

`cached` returns the stored value when its key matches and the entry passes its check, and otherwise measures.
Each entry holds ``key``, ``inputs`` (the identities, readable), ``value`` and ``check``, the SHA-256 of all
the rest; an entry whose check fails, or whose value is not a dict of finite numbers, is measured again with
a one-line warning and never served. A new value is checked finite, then written under a lock
(``.measurements.json.lock``, `filelock`) that serialises concurrent writers: the file is read again, the entry
added, and the whole written atomically (`helpers.foundation.atomic.write_atomic`), so no writer loses
another's entry. A value that cannot be stored (a read-only file, a full disk) is still returned, with a
one-line warning.

Entries of the file's earlier format (a ``fingerprint`` in place of ``key`` and ``check``) are dropped when
the file is next written.
"""
import ast
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Callable

import filelock
import torch

from helpers.foundation import atomic, checkpoint_files

FILE_NAME = "measurements.json"
LOCK_NAME = ".measurements.json.lock"
LOCK_TIMEOUT_S = 120
HELPERS = Path(__file__).resolve().parents[1]
CODE = ("samplers.py", "guidance.py", "measure/quality.py", "measure/metrics.py", "foundation/classifier.py",
        "course_unet.py", "attention_unet.py")


def warn(message: str) -> None:
    """One line on standard error: how the cache tells that it measured again or could not store."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


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


_code_versions: dict[tuple, str] = {}


def code_version(files=CODE, folder: Path | None = None) -> str:
    """SHA-256 of the syntax trees (docstrings, comments and imports left out) of `files` in `folder` (default:
    helpers), each named by its file name alone, so that moving a module between folders keeps the key.
    Remembered while the files' sizes and modification times stay the same."""
    folder = Path(folder or HELPERS)
    memo = (str(folder), *((name, (folder / name).stat().st_mtime_ns, (folder / name).stat().st_size)
                           for name in files))
    if memo not in _code_versions:
        digest = hashlib.sha256()
        for name in files:
            digest.update(Path(name).name.encode())
            digest.update(ast.dump(_without_docstrings(ast.parse((folder / name).read_text()))).encode())
        _code_versions[memo] = digest.hexdigest()
    return _code_versions[memo]


_file_digests: dict[tuple, str] = {}


def file_digest(path) -> str:
    """SHA-256 of a file's bytes (remembered while its size and modification time stay the same)."""
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise checkpoint_files.CheckpointError(f"no file at {path}: a measurement's input must exist.") from None
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if memo not in _file_digests:
        with open(path, "rb") as file:
            _file_digests[memo] = hashlib.file_digest(file, "sha256").hexdigest()
    return _file_digests[memo]


def identity(part):
    """`part` as it enters a key: a `Path` becomes ``{"file": its name, "sha256": its bytes' digest}``, dicts and
    lists are resolved item by item, JSON values stay; tensors, networks and other objects are refused."""
    if isinstance(part, Path):
        return {"file": part.name, "sha256": file_digest(part)}
    if isinstance(part, dict):
        return {str(name): identity(value) for name, value in part.items()}
    if isinstance(part, (list, tuple)):
        return [identity(value) for value in part]
    if isinstance(part, float) and not math.isfinite(part):
        raise ValueError(f"a measurement's input {part} is not a finite number: pass the setting itself.")
    if part is None or isinstance(part, (bool, int, float, str)):
        return part
    if isinstance(part, (torch.Tensor, torch.nn.Module)):
        raise TypeError(f"a measurement's inputs name their identity, not a {type(part).__name__}: pass the file "
                        "it was loaded from (a pathlib.Path) or the seed that drew it, since numbers computed on "
                        "this machine round differently on another one and would never match there.")
    raise TypeError(f"a measurement's inputs must be files (pathlib.Path) or JSON values, not "
                    f"{type(part).__name__}: pass the setting itself (a number or a string).")


def _canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=True, allow_nan=False).encode()


def key_of(inputs: dict, code: str | None = None) -> str:
    """SHA-256 of the inputs' identities (`identity`) and of the measuring code (default `code_version()`)."""
    return hashlib.sha256(_canonical({"code": code or code_version(), "inputs": identity(inputs)})).hexdigest()


def _check(label: str, entry: dict) -> str:
    """SHA-256 over an entry's label, key, inputs and value: what `check` holds."""
    return hashlib.sha256(_canonical({"label": label, **{k: entry.get(k) for k in ("key", "inputs", "value")}})
                          ).hexdigest()


def _numbers(value, label: str) -> dict:
    """`value` as a dict of finite floats; raises ValueError naming what is wrong with it."""
    if not isinstance(value, dict) or not value:
        raise TypeError(f"the measurement {label!r} must be a non-empty dict of numbers, not {value!r}.")
    wrong = [name for name, number in value.items()
             if not isinstance(name, str) or isinstance(number, bool) or not isinstance(number, (int, float))]
    if wrong:
        raise TypeError(f"the measurement {label!r} holds something other than numbers under {wrong}.")
    numbers = {name: float(number) for name, number in value.items()}
    bad = [name for name, number in numbers.items() if not math.isfinite(number)]
    if bad:
        raise ValueError(f"the measurement {label!r} gave non-finite {', '.join(bad)}; nothing was stored.")
    return numbers


def _read(path: Path, quiet: bool = False) -> dict:
    """The stored entries by label; {} for a missing file, and (with a warning unless `quiet`) for an
    unreadable one."""
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        if not quiet:
            warn(f"{path} cannot be read ({type(error).__name__}); its measurements are measured again.")
        return {}
    return stored if isinstance(stored, dict) else {}


def _served(path: Path, label: str, key: str) -> dict | None:
    """The stored value of `label` if its key is `key` and the entry passes its check, else None (a failed
    check is warned about)."""
    entry = _read(path).get(label)
    if not isinstance(entry, dict) or entry.get("key") != key:
        return None
    try:
        value = _numbers(entry.get("value"), label)
        if entry.get("check") != _check(label, entry):
            raise ValueError("its check digest does not match its content")
    except (TypeError, ValueError) as error:
        warn(f"the stored measurement {label!r} in {path} fails its check ({error}); measuring it again.")
        return None
    return value


def _store(folder: Path, label: str, entry: dict) -> None:
    """Add `entry` under `label` to the folder's measurements.json, under the lock, atomically."""
    path = folder / FILE_NAME
    with filelock.FileLock(folder / LOCK_NAME, timeout=LOCK_TIMEOUT_S):
        stored = {name: old for name, old in _read(path, quiet=True).items()
                  if isinstance(old, dict) and "key" in old and name != label}  # earlier formats are dropped
        stored[label] = entry
        with atomic.write_atomic(path, "w", encoding="utf-8") as file:
            json.dump(dict(sorted(stored.items())), file, indent=1, ensure_ascii=False)
            file.write("\n")


def cached(folder, label: str, compute: Callable[[], dict], inputs: dict) -> dict:
    """The measurement `label` of the run in `folder`: the stored value if its key over `inputs` (a dict of
    files and JSON values, see `identity`) and the code matches and the entry passes its check, else
    ``compute()``, checked finite and stored in ``folder/measurements.json``."""
    if not isinstance(label, str) or not label:
        raise ValueError("a measurement needs a non-empty label (a string naming what was measured).")
    if not isinstance(inputs, dict):
        raise TypeError(f"a measurement's inputs are a dict naming each input, not a {type(inputs).__name__}.")
    folder = Path(folder)
    if not folder.is_dir():
        raise checkpoint_files.CheckpointError(f"no trained model at {folder}: train or load the run first; its "
                                               "measurements are stored beside its checkpoint.")
    resolved = identity(inputs)
    key = key_of(resolved)
    path = folder / FILE_NAME
    value = _served(path, label, key)
    if value is not None:
        return value
    value = _numbers(compute(), label)
    entry = {"key": key, "inputs": resolved, "value": value}
    entry["check"] = _check(label, entry)
    try:
        _store(folder, label, entry)
    except (OSError, filelock.Timeout) as error:
        warn(f"the measurement {label!r} was computed but not stored: {_unstored(error, path)}")
    return value


def _unstored(error: BaseException, path: Path) -> str:
    """Why a value could not be stored in `path`, as the end of one sentence (with its full stop): the write's
    own sentence, the lock file's failure (a read-only file system, no permission) in the same words, or the
    lock's holder not letting go."""
    if isinstance(error, filelock.Timeout):
        return (f"another process held its lock ({path.parent / LOCK_NAME}) for {LOCK_TIMEOUT_S} s; the previous "
                f"{path.name} is as it was.")
    if isinstance(error, atomic.WriteError):
        return str(error)
    return atomic.describe(error, path)


def _feed(digest, state: dict) -> None:
    for name, tensor in state.items():
        digest.update(name.encode())
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{list(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def weights_digest(network: torch.nn.Module) -> str:
    """SHA-256 of a network's weights (names, dtypes, shapes and bytes of its ``state_dict``), for results that
    outlive code edits, such as notebook 05's locality calibration (`helpers.measure.locality`). The weights are
    read from a checkpoint file, not computed, so their bytes are the same on every machine."""
    digest = hashlib.sha256(b"network weights")
    _feed(digest, network.state_dict())
    return digest.hexdigest()
