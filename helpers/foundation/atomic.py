"""Writing files so that an interruption or a full disk never leaves one half-written, and nothing behind.

`write_atomic(path)` hands the caller a file object to write `path`'s new content into, then swaps it in with
one rename. Until then the new content lives in a temporary file in the target's folder:

- on Linux, an unnamed one (``O_TMPFILE``): a kill while writing leaves nothing at all, not even a name. It is
  linked as ``.<name>.<random>.tmp`` only for the instant between linking and renaming it over `path`;
- where the file system has no unnamed files (NFS, some FUSE mounts, macOS), a named ``.<name>.<random>.tmp``
  from the start.

Either way the name is unique (two writers of one file never share a temporary), ignored by git (``.*.tmp``),
and removed on any error. A symbolic link at `path` is replaced, never followed (a link planted in a folder
cannot redirect a write elsewhere); a device, pipe or socket there is refused. The file gets the user's normal mode, 0666 less the umask (0644 under umask 022),
not mkstemp's 0600. `path` keeps its previous content until the rename.

`Batch` writes several files the same way and swaps them in together: every file is written first, and only
when all of them are written are they renamed into place, in the order they were opened. So a full disk (or
any error) while writing leaves every previous file as it was; a kill during the renames (milliseconds) leaves
each file whole, some new and some old.

Every OSError while writing becomes a `WriteError` whose message is one sentence naming the file, e.g.
"no space left on device while writing checkpoints/cpu/x/last.pt; the previous last.pt is intact."
`check_folder` says the same before expensive work starts, when a folder cannot be created or written, or has
less free space than the work needs.
"""
import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
from pathlib import Path

_REASONS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted", errno.EMFILE: "too many open files",
            errno.ENAMETOOLONG: "the file name is too long"}
_UNNAMED_UNSUPPORTED = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT, errno.ENOSYS}
_KEEP_OPEN = 200  # unnamed temporaries of one Batch kept open; beyond that each is named when finished


class WriteError(OSError):
    """A file could not be written; its message is one sentence that says which and why (`filename` names the
    file, where the error came from writing one)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _existing_ancestor(path: Path) -> Path:
    for folder in [path, *path.parents]:
        if os.path.lexists(folder):
            return folder
    return Path("/")


def reason(error: OSError) -> str:
    """What went wrong, in words: "no space left on device", "the file system is read-only", ..."""
    return _REASONS.get(error.errno, error.strerror or type(error).__name__)


def describe(error: OSError, path: Path) -> str:
    """One sentence for an OSError raised while writing `path`."""
    path = Path(path)
    if error.errno == errno.EISDIR or path.is_dir():
        return f"{path} is a folder, so no file can be written in its place; it was left as it was."
    ancestor = _existing_ancestor(path.parent)
    if error.errno == errno.ENOTDIR or not ancestor.is_dir():
        return f"cannot write {path}: {ancestor} is a file, not a folder."
    state = f"the previous {path.name} is intact" if path.exists() else f"nothing was written to {path.name}"
    return f"{reason(error)} while writing {path}; {state}."


def _error(error: BaseException, path: Path) -> BaseException:
    """`error` as a WriteError naming `path` when it is a plain OSError; any other exception as it is."""
    if isinstance(error, OSError) and not isinstance(error, WriteError):
        return WriteError(error.errno, describe(error, path), str(path))
    return error


def _short(name: str, limit: int = 200) -> str:
    """`name` cut to `limit` bytes of UTF-8, so its temporary's name (14 bytes longer) stays under the usual 255."""
    return name.encode()[:limit].decode(errors="ignore")


def temporary_name(path) -> Path:
    """A unique name beside `path` for something written in its place: ``.<name>.<8 hex digits>.tmp``, which git
    ignores (``.*.tmp``) and `LEFTOVER` recognises (the name cut so that it stays under 255 bytes)."""
    path = Path(path)
    return path.with_name(f".{_short(path.name)}.{secrets.token_hex(4)}.tmp")


LEFTOVER = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{8}\.tmp")


def is_leftover_of(entry: str, name: str) -> bool:
    """Whether the file name `entry` is a temporary (`temporary_name`) for the file name `name`."""
    match = LEFTOVER.fullmatch(entry)
    return match is not None and match["name"] == _short(name)


def remove_leftovers(folder, names) -> list[Path]:
    """Remove the temporaries that a kill left in `folder` for the files `names` (it can leave one only between
    naming it and renaming it over its target); returns them. Call it only where no other process is writing
    those files (under a lock, or in a folder that one command owns)."""
    folder, names = Path(folder), {_short(name) for name in names}
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = LEFTOVER.fullmatch(entry.name)
            if match and match["name"] in names and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _can_link_descriptors() -> bool:
    return hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")


_NAMED_ONLY: set[int] = set()   # devices where an unnamed file could not be linked: named temporaries there


def _link_descriptor(descriptor: int, target: Path) -> None:
    """Give the unnamed file open as `descriptor` the name `target` (linkat through /proc, following the link;
    a folder descriptor makes Python call linkat, not link)."""
    folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"/proc/self/fd/{descriptor}", target.name, dst_dir_fd=folder, follow_symlinks=True)
    finally:
        os.close(folder)


class _Pending:
    """One file being written beside its target: unnamed where the file system allows it, else named. The
    caller gets a file object; a duplicate descriptor is kept here, so the caller (or a library) closing its file
    cannot lose the content before it is swapped in."""

    def __init__(self, path: Path, mode: str, open_kwargs: dict):
        self.path, self.named, self.fd, self.file = path, None, None, None
        path.parent.mkdir(parents=True, exist_ok=True)
        kind = os.lstat(path).st_mode if os.path.lexists(path) else stat.S_IFREG
        if not (stat.S_ISREG(kind) or stat.S_ISDIR(kind) or stat.S_ISLNK(kind)):
            # a link is replaced, never followed: a planted link cannot redirect a write elsewhere
            raise WriteError(errno.EEXIST, f"{path} is a device, a pipe or a socket, not a file, so it is not "
                                           "replaced: give the path of a file.")
        descriptor = None
        if _can_link_descriptors() and path.parent.stat().st_dev not in _NAMED_ONLY:
            try:
                descriptor = os.open(path.parent, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o666)
            except OSError as error:
                if error.errno not in _UNNAMED_UNSUPPORTED:
                    raise
                _NAMED_ONLY.add(path.parent.stat().st_dev)
        if descriptor is None:
            self.named = temporary_name(path)
            descriptor = os.open(self.named, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            if self.named is not None:
                os.fchmod(descriptor, 0o666 & ~_umask())   # the umask, whatever a default ACL would have added
            self.fd = os.dup(descriptor)
            self.file = os.fdopen(descriptor, mode, **open_kwargs)
        except BaseException:
            os.close(descriptor)
            self.discard()
            raise

    def finish(self, name_it: bool = False) -> None:
        """Flush the content to disk; with `name_it`, also give an unnamed file its temporary name and close it."""
        if self.fd is None:
            return
        if not self.file.closed:
            self.file.flush()
        os.fsync(self.fd)
        if name_it:
            self._name()
            self._close()

    def _name(self) -> None:
        if self.named is not None:
            return
        named = temporary_name(self.path)
        try:
            _link_descriptor(self.fd, named)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise
            # this file system cannot link an unnamed file: copy it to a named temporary (and use those here on)
            _NAMED_ONLY.add(os.fstat(self.fd).st_dev)
            copy = os.open(named, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            try:
                os.fchmod(copy, os.fstat(self.fd).st_mode & 0o777)
                size, offset = os.fstat(self.fd).st_size, 0
                while offset < size:
                    offset += os.sendfile(copy, self.fd, offset, size - offset)
                os.fsync(copy)
            except BaseException:
                os.close(copy)
                os.unlink(named)
                raise
            os.close(copy)
        self.named = named

    def _close(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError, ValueError):
                self.file.close()
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    @property
    def open_descriptor(self) -> bool:
        return self.fd is not None

    def commit(self) -> None:
        self.finish()
        self._name()
        os.replace(self.named, self.path)
        self.named = None
        self._close()

    def discard(self) -> None:
        self._close()
        if self.named is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.named)
            self.named = None


class Batch:
    """Files written beside their targets and swapped in together, when all are written:

        with Batch() as batch:
            batch.write_text(folder / "index.html", page)
            with batch.open(folder / "data.bin", "wb") as file:
                file.write(data)

    On leaving the block without an error every file is renamed over its target, in the order opened; on an
    error every temporary is removed and every target keeps its previous content. `written` lists the targets.
    """

    def __init__(self):
        self._pending: dict[Path, _Pending] = {}
        self._last: Path | None = None
        self._created: list[Path] = []   # folders this batch made, removed again if it is discarded

    @property
    def written(self) -> list[Path]:
        return list(self._pending)

    def open(self, path, mode: str = "w", **open_kwargs):
        """A file object for `path`'s new content (text unless `mode` has 'b'); opening the same path again
        replaces what this batch held for it. Closing it is allowed: the content is kept until the swap."""
        path = Path(path)
        if path in self._pending:
            self._pending.pop(path).discard()
        self._last = path
        missing = [folder for folder in [path.parent, *path.parent.parents] if not os.path.lexists(folder)]
        try:
            self._limit_descriptors()
            pending = _Pending(path, mode, open_kwargs)
        except OSError as error:
            raise _error(error, path) from None
        finally:
            self._created += [folder for folder in missing if folder.is_dir()]
        self._pending[path] = pending
        return pending.file

    def _limit_descriptors(self) -> None:
        """Keep at most _KEEP_OPEN files open: name (and close) the oldest ones, which are finished."""
        still_open = [pending for pending in self._pending.values() if pending.open_descriptor]
        for pending in still_open[:max(0, len(still_open) - _KEEP_OPEN + 1)]:
            pending.finish(name_it=True)

    def write_bytes(self, path, data: bytes) -> None:
        with self.open(path, "wb") as file:
            file.write(data)

    def write_text(self, path, text: str) -> None:
        with self.open(path, "w", encoding="utf-8") as file:
            file.write(text)

    def commit(self) -> None:
        """Write every file to disk, then rename each over its target; a failure is a WriteError naming the file."""
        try:
            for path, pending in self._pending.items():
                self._last = path
                pending.finish()
            while self._pending:
                path, pending = next(iter(self._pending.items()))
                self._last = path
                pending.commit()
                del self._pending[path]
            self._created.clear()
        except OSError as error:
            raise _error(error, self._last) from None

    def discard(self) -> None:
        """Remove every temporary, and the folders made for them if they are empty; no target is touched."""
        for pending in self._pending.values():
            pending.discard()
        self._pending.clear()
        for folder in sorted(set(self._created), key=lambda f: len(f.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()   # only when empty: what else is there now is not this batch's
        self._created.clear()

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        if error is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
            return False
        self.discard()
        if isinstance(error, OSError) and not isinstance(error, WriteError) and self._last is not None:
            raise _error(error, self._last) from None
        return False


@contextlib.contextmanager
def write_atomic(path, mode: str = "w", **open_kwargs):
    """Context manager: a file object to write `path`'s new content into; renamed over `path` on success."""
    path = Path(path)
    batch = Batch()
    try:
        yield batch.open(path, mode, **open_kwargs)
        batch.commit()
    except BaseException as error:
        batch.discard()
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise _error(error, path) from None
        raise


def write_text(path, text: str) -> None:
    with write_atomic(path, "w", encoding="utf-8") as file:
        file.write(text)


def write_bytes(path, data: bytes) -> None:
    with write_atomic(path, "wb") as file:
        file.write(data)


def check_folder(folder, need_bytes: int = 0) -> None:
    """Raise a one-sentence `WriteError` now, before expensive work, if files cannot be written into `folder`
    (created if missing, as the writes would): a parent that is a file, a read-only file system, no permission,
    or less than `need_bytes` free. Nothing is left behind: the probe is an unnamed file, or a named one removed."""
    folder = Path(folder)
    ancestor = _existing_ancestor(folder)
    if not ancestor.is_dir():
        raise WriteError(errno.ENOTDIR, f"cannot write into {folder}: {ancestor} is a file, not a folder.")
    try:
        if _can_link_descriptors():
            try:
                os.close(os.open(ancestor, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600))
                probed = True
            except OSError as error:
                if error.errno not in _UNNAMED_UNSUPPORTED:
                    raise
                probed = False
        else:
            probed = False
        if not probed:
            probe = temporary_name(ancestor / "probe")
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            os.unlink(probe)
    except OSError as error:
        raise WriteError(error.errno, f"cannot write into {folder}: {reason(error)} (at {ancestor}).") from None
    free = shutil.disk_usage(ancestor).free
    if free < need_bytes:
        raise WriteError(errno.ENOSPC, f"not enough space for {folder}: about {need_bytes / 2**20:,.1f} MiB are "
                                       f"needed and its file system has {free / 2**20:,.1f} MiB free.")
