"""Writing a file so that an interruption or a full disk never leaves it half-written.

`write_atomic(path)` opens a temporary file with a unique name in the target's folder (``.<name>.<random>.tmp``,
ignored by git), hands it to the caller, then renames it over `path` with the user's normal file mode
(0666 less the umask, not mkstemp's 0600). On any error the temporary is removed and `path` keeps its previous
content; a full disk, a read-only file system or a refused permission becomes a `WriteError` with one sentence
naming the file, e.g. "no space left on device while writing checkpoints/cpu/x/last.pt; the previous last.pt
is intact".
"""
import contextlib
import errno
import os
import tempfile
from pathlib import Path

_REASONS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted"}


class WriteError(OSError):
    """A file could not be written; its message is one sentence that says which and why."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def describe(error: OSError, path: Path) -> str:
    """One sentence for an OSError raised while writing `path`."""
    reason = _REASONS.get(error.errno, error.strerror or type(error).__name__)
    state = f"the previous {path.name} is intact" if path.exists() else f"nothing was written to {path.name}"
    return f"{reason} while writing {path}; {state}."


@contextlib.contextmanager
def write_atomic(path, mode: str = "w", **open_kwargs):
    """Context manager: a file object to write `path`'s new content into; renamed over `path` on success."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise WriteError(error.errno, describe(error, path)) from None
    try:
        with os.fdopen(handle, mode, **open_kwargs) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise WriteError(error.errno, describe(error, path)) from None
        raise


def write_text(path, text: str) -> None:
    with write_atomic(path, "w", encoding="utf-8") as file:
        file.write(text)


def write_bytes(path, data: bytes) -> None:
    with write_atomic(path, "wb") as file:
        file.write(data)
