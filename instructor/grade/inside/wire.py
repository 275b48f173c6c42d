"""The wire format between the sandbox and the grader: plain JSON frames carrying arrays as .npy bytes.

A frame is ``MAGIC``, a 12-digit length and that many bytes of JSON (no NaN literals). Values travel as JSON
trees: numbers, strings, None and booleans as themselves, and tagged objects for the rest:

    {"T": npy-base64, "dt": torch dtype, "rg": requires_grad}     a tensor (numpy's .npy, never a pickle)
    {"L": [...]} / {"U": [...]} / {"D": [[key, value], ...]}       a list / tuple / dict
    {"F": "nan" | "inf" | "-inf"}                                 a non-finite float
    {"G": sha256 of the state}                                    a torch.Generator (identified by its state)
    {"C": ref} / {"S": ref} / {"M": ref, ...}                     a check-side callable / a student callable /
                                                                  a student nn.Module (see inside.record)
    {"V": name, "p": {...}}                                       a vocabulary callable (inside.vocab)
    {"O": type name, "r": repr}                                   anything else (compared by its repr)

`key` hashes a value with every tensor replaced by the SHA-256 of its dtype, shape and bytes: the recorder
and the replayer compute it on the same inputs and must agree. Reading is strict: `FrameReader` refuses a
wrong magic, an oversized frame or bad JSON, and `decode` refuses unknown tags, pickled or object arrays and
dtypes outside `DTYPES`, each with one sentence (`WireError`).
"""
import base64
import hashlib
import io
import json
import math

import numpy as np
import torch

MAGIC = b"GRADE1"
HEADER = len(MAGIC) + 12
DTYPES = {"float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool"}
MAX_REPR = 200


class WireError(ValueError):
    """Data from the sandbox that does not follow the format: one sentence."""


def frame(message: dict) -> bytes:
    data = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    return MAGIC + b"%012d" % len(data) + data


class FrameReader:
    """Split a byte stream into frames; at most `limit` bytes in all."""

    def __init__(self, limit: int):
        self.buffer, self.limit, self.total = b"", limit, 0

    def feed(self, data: bytes) -> list[dict]:
        self.total += len(data)
        if self.total > self.limit:
            raise WireError(f"the result channel carried more than {self.limit // 2**20} MiB")
        self.buffer += data
        frames = []
        while len(self.buffer) >= HEADER:
            if self.buffer[:len(MAGIC)] != MAGIC or not self.buffer[len(MAGIC):HEADER].isdigit():
                raise WireError("the result channel holds bytes that are not a frame of the grader's format")
            size = int(self.buffer[len(MAGIC):HEADER])
            if len(self.buffer) < HEADER + size:
                break
            body, self.buffer = self.buffer[HEADER:HEADER + size], self.buffer[HEADER + size:]
            try:
                message = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise WireError("a frame on the result channel is not JSON") from None
            if not isinstance(message, dict):
                raise WireError("a frame on the result channel is not a JSON object")
            frames.append(message)
        return frames


def _npy(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode()


def tensor_array(value: torch.Tensor) -> tuple[np.ndarray, str]:
    """A tensor's values as a numpy array (bfloat16 widened to float32) and its torch dtype's name."""
    dtype = str(value.dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise WireError(f"a tensor of dtype {dtype} cannot be graded: return float or integer tensors")
    data = value.detach().cpu()
    if dtype == "bfloat16":
        data = data.float()
    return data.contiguous().numpy(), dtype


def array_digest(array: np.ndarray, dtype: str) -> str:
    digest = hashlib.sha256(f"{dtype}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def generator_digest(generator: torch.Generator) -> str:
    return hashlib.sha256(generator.get_state().numpy().tobytes()).hexdigest()


def state_b64(state: torch.Tensor) -> str:
    return base64.b64encode(state.numpy().tobytes()).decode()


def state_from_b64(text: str) -> torch.Tensor:
    if not isinstance(text, str) or len(text) > 100_000:
        raise WireError("a random-number state in the record is not valid")
    try:
        return torch.frombuffer(bytearray(base64.b64decode(text, validate=True)), dtype=torch.uint8).clone()
    except (ValueError, TypeError):
        raise WireError("a random-number state in the record is not base64") from None


def encode(value, hook=None, digest: bool = False):
    """`value` as a JSON tree; `hook(value)` may claim callables and modules first (returns None to pass).
    With digest=True tensors are replaced by their digest (for `key`)."""
    if hook is not None:
        claimed = hook(value)
        if claimed is not None:
            return claimed
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"F": repr(value)}
    if isinstance(value, torch.Tensor):
        array, dtype = tensor_array(value)
        if digest:
            return {"TD": array_digest(array, dtype)}
        return {"T": _npy(array), "dt": dtype, "rg": bool(value.requires_grad)}
    if isinstance(value, np.ndarray):
        return encode(torch.from_numpy(np.ascontiguousarray(value)), hook, digest) if value.dtype.kind in "biuf" \
            else {"O": "ndarray", "r": str(value.dtype)}
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return encode(value.item(), hook, digest)
    if isinstance(value, torch.Generator):
        return {"G": generator_digest(value)}
    if isinstance(value, (torch.dtype, torch.device)):
        return {"O": type(value).__name__, "r": str(value)}
    if isinstance(value, torch.Size):
        return {"U": list(value)}
    if isinstance(value, list):
        return {"L": [encode(v, hook, digest) for v in value]}
    if isinstance(value, tuple):
        return {"U": [encode(v, hook, digest) for v in value]}
    if isinstance(value, dict):
        return {"D": [[encode(k, hook, digest), encode(v, hook, digest)] for k, v in value.items()]}
    return {"O": type(value).__name__, "r": repr(value)[:MAX_REPR]}


def key(args, kwargs, hook=None) -> str:
    """The digest of a call's inputs (tensors by content), as both sides compute it."""
    tree = encode([list(args), dict(sorted(kwargs.items()))], hook, digest=True)
    return hashlib.sha256(json.dumps(tree, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def value_key(value, hook=None) -> str:
    return hashlib.sha256(json.dumps(encode(value, hook, digest=True), sort_keys=True).encode()).hexdigest()


def _array(text: str, max_elements: int) -> np.ndarray:
    if not isinstance(text, str):
        raise WireError("an array in the record is not base64 text")
    try:
        array = np.load(io.BytesIO(base64.b64decode(text, validate=True)), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise WireError("an array in the record is not a plain .npy array (pickled or corrupt)") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise WireError("an array in the record is not numeric")
    if array.size > max_elements:
        raise WireError(f"an array in the record has {array.size} elements, over the {max_elements} allowed")
    return array


def decode(tree, hook=None, max_elements: int = 2**24, depth: int = 0):
    """The value a JSON tree of `encode` stands for; `hook(tree)` resolves callable and module tags.
    Anything not of the format raises WireError."""
    if depth > 64:
        raise WireError("a value in the record is nested too deeply")
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    if isinstance(tree, list):
        raise WireError("a bare list in the record (lists travel tagged)")
    if not isinstance(tree, dict) or len(tree) == 0:
        raise WireError("a value in the record is not of the grader's format")
    if "T" in tree:
        dtype = tree.get("dt")
        if dtype not in DTYPES:
            raise WireError(f"a tensor in the record has the unknown dtype {dtype!r}")
        array = _array(tree["T"], max_elements)
        tensor = torch.from_numpy(array.copy()).to(getattr(torch, dtype))
        if tree.get("rg") is True and tensor.is_floating_point():
            tensor.requires_grad_(True)
        return tensor
    if "F" in tree:
        if tree["F"] not in ("nan", "inf", "-inf"):
            raise WireError("a float in the record is not nan or inf")
        return float(tree["F"])
    sub = lambda t: decode(t, hook, max_elements, depth + 1)     # noqa: E731
    if "L" in tree and isinstance(tree["L"], list):
        return [sub(v) for v in tree["L"]]
    if "U" in tree and isinstance(tree["U"], list):
        return tuple(sub(v) for v in tree["U"])
    if "D" in tree and isinstance(tree["D"], list):
        if not all(isinstance(p, list) and len(p) == 2 for p in tree["D"]):
            raise WireError("a dict in the record is not a list of pairs")
        return {sub(k): sub(v) for k, v in tree["D"]}
    if hook is not None:
        found = hook(tree)
        if found is not None:
            return found
    if "O" in tree:
        return Opaque(str(tree.get("O")), str(tree.get("r", "")))
    raise WireError(f"a value in the record has unknown tags {sorted(tree)[:3]}")


class Opaque:
    """Something that crossed the wire only by its type and repr (a View, a dtype)."""

    def __init__(self, kind: str, text: str):
        self.kind, self.text = kind[:80], text[:MAX_REPR]

    def __repr__(self):
        return self.text
