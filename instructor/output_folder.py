"""An output folder that records what its command wrote, so a rebuild replaces only that; one writer at a time;
and, for a command that writes a whole tree (the student edition), the new tree swapped in as one.

The manifest. A command that writes into a folder (`python -m instructor render --out DIR`, `python -m instructor
student --out DIR`) keeps a manifest there, ``DIR/.manifest.json``: the files it wrote, relative to DIR, in named
groups (the report's files, the executed notebooks, the timings, the edition), and for the files of a tree swap
the SHA-256 of what it wrote (``sha256``), so that a rebuild tells a file the user changed since from one it
merely rewrites. A rebuild

- replaces the files it writes again, and removes the files of a group it rewrote that it no longer writes
  (a figure of a cell that is gone), and nothing else: every file the manifest does not list is left alone;
- refuses to overwrite a file it would write that the manifest does not list (a user's own ``index.html``) unless
  asked to (``--replace``), or unless the folder is the command's own default folder (``rendered/<profile>/``);
- checks all of this, and that the folder can be written, before any expensive work.

The manifest is written before the files it lists are swapped in, listing the old files and the new ones, and
written again without the removed ones afterwards; so whenever a command is killed, every file it has placed is
listed, and the next run can replace or remove it.

One writer at a time: `folder_lock` holds a lock file (`filelock`, as a training run's lock) while a command
writes; a second command is refused in one sentence naming the holder (process, host, command, since), or waits
for it where asked. The lock file is unlinked while still held, so none is left behind (a kill leaves one,
``.*.lock``, which git ignores and the next run reuses).

A whole-tree swap (`OutputFolder.swap_tree`). The new tree is built beside the folder, in
``.<name>.<8 hex digits>.tmp``: first its manifest, then every file of the folder the command does not write is
hard-linked in (the user's files, earlier backups: the same files, nothing copied), each file the user changed is
linked under the backup folder, and the command's files are written (`atomic.Batch`); then one
``renameat2(RENAME_EXCHANGE)`` swaps the two folders. So a kill before the swap leaves the previous folder exactly
as it was, and a kill after it the new one whole: never a mix. The old tree, now under the name beside, is then
emptied: a name that is the same file in the folder goes, as do the command's own old files (unchanged since it
wrote them, by their digest), the old manifest and temporaries; anything else (a file the user saved into the
folder while the new tree was built) is moved back into the folder, or under the backup folder where its name is
taken. A kill leaves the tree beside (git ignores ``.*.tmp``), and the next run empties it the same way. A process
whose working folder is inside the folder (a shell, a kernel) is left in the old one: it should change into the
folder again. Where a swap is impossible (not Linux, a file system without the exchange, such as NFS; a parent
folder that cannot be written; a mount point at or in the folder; files that cannot be hard-linked) the files are
written in place with `atomic.Batch`: each whole and all swapped in together within milliseconds, so that a kill
during those renames can leave some new and some old.
"""
import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import filelock

from helpers.foundation import atomic
from helpers.foundation.lock_holder import holder, record_holder

MANIFEST = ".manifest.json"
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
# errors of a hard link or of the exchange that mean "this folder cannot be swapped whole here": write in place
_NO_SWAP = {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP,
            errno.EBUSY}


class FolderError(ValueError):
    """An output folder that cannot be used as it is; the message is one sentence saying how to proceed."""


# a repository's folders that no command writes its output into: what the tools read (sources, notebooks, data,
# checkpoints), their code and tests, and git's own
SOURCE_FOLDERS = ("helpers", "notebooks", "data", "checkpoints", "instructor", "tests", ".git")


def refuse_source_tree(out, root, default: str, option: str = "--out", also=()) -> None:
    """A FolderError for an output folder `out` (a link counts as the folder it points at) that holds the repository
    `root`, or lies in one of its SOURCE_FOLDERS or in a folder of `also` (paths): a command writing there would
    mix its output into the sources (or, swapping the folder, move the checkout)."""
    real, top = Path(out).resolve(), Path(root).resolve()
    if top.is_relative_to(real):
        where = "is the repository" if top == real else f"holds the repository {top}"
        raise FolderError(f"{option} {out} {where}, whose sources the output would be mixed with: give a separate "
                          f"folder (default: {default}).")
    inside = [Path(folder).resolve() for folder in also] + [top / name for name in SOURCE_FOLDERS]
    for folder in inside:
        if real == folder or real.is_relative_to(folder):
            raise FolderError(f"{option} {out} is inside {folder}, which holds sources the command reads: give a "
                              f"folder outside it (default: {default}).")


def _relative(entry) -> str | None:
    """A manifest entry as a clean relative path inside the folder, or None for anything else."""
    if not isinstance(entry, str) or not entry or "\\" in entry:
        return None
    path = PurePosixPath(entry)
    if path.is_absolute() or any(part in ("..", ".", "") for part in path.parts) or entry == MANIFEST:
        return None
    return str(path)


def _sha256(path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _read_manifest(path: Path) -> tuple[dict[str, set[str]], dict[str, str]]:
    """(groups, digests) of a manifest; ValueError, KeyError, TypeError or OSError when it is damaged. An entry
    that is no clean relative path (a hand edit, '../x') is dropped: it is never removed or replaced."""
    stored = json.loads(path.read_text(encoding="utf-8"))
    groups = stored["files"]
    if not isinstance(groups, dict) or not all(isinstance(v, list) for v in groups.values()):
        raise TypeError("its 'files' is not a table of lists")
    digests = stored.get("sha256", {})
    digests = {clean: value for entry, value in digests.items() if (clean := _relative(entry))
               and isinstance(value, str)} if isinstance(digests, dict) else {}
    return ({str(name): {clean for entry in entries if (clean := _relative(entry))} for name, entries in groups.items()},
            digests)


class OutputFolder:
    """The folder `path` that `command` writes into, with the manifest of what it wrote there before."""

    def __init__(self, path, command: str, own_default: bool = False):
        self.path, self.command, self.own_default = Path(path), command, own_default
        self.groups, self.digests = self._read()

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    def _read(self) -> tuple[dict[str, set[str]], dict[str, str]]:
        if not self.manifest.exists():
            return {}, {}
        try:
            return _read_manifest(self.manifest)
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise FolderError(f"{self.manifest}, the record of the files {self.command} wrote there, is damaged "
                              f"({type(error).__name__}): delete it, and {self.command} will treat {self.path} as a "
                              "folder it did not write (it then refuses to overwrite files there without --replace)."
                              ) from None

    @property
    def recorded(self) -> set[str]:
        return set().union(*self.groups.values()) if self.groups else set()

    def relative(self, path) -> str:
        return Path(path).resolve().relative_to(self.path.resolve()).as_posix()

    def unrecorded(self, names) -> list[str]:
        """Of the relative `names` this run will write, those that exist and the manifest does not list."""
        recorded = self.recorded
        return sorted(name for name in set(names) if name not in recorded and os.path.lexists(self.path / name))

    def adopt(self, group: str, names) -> None:
        """Count the existing files among `names` as written by this command into `group` (with the user's leave:
        --replace, or the command's own default folder), so that a rebuild also removes those it no longer writes."""
        found = {name for name in names if (self.path / name).is_file() and name not in self.recorded}
        if found:
            self.groups.setdefault(group, set()).update(found)

    def check(self, names, replace: bool = False, need_bytes: int = 0, option: str = "--out") -> None:
        """Before any expensive work: the folder can be written with `need_bytes` free, and no file among `names`
        would be overwritten that this command did not write (unless `replace`, or the folder is its own default)."""
        if self.path.is_symlink() and not self.path.exists():
            raise FolderError(f"{option} {self.path} is a link to {os.readlink(self.path)}, which does not exist: "
                              "create that folder, or give another one.")
        if self.path.exists() and not self.path.is_dir():
            raise FolderError(f"{option} {self.path} is a file, not a folder: give a folder.")
        folders = {str(parent) for name in names for parent in PurePosixPath(name).parents if str(parent) != "."}
        for folder in sorted(folders):
            if os.path.lexists(self.path / folder) and not (self.path / folder).is_dir():
                raise FolderError(f"{option} {self.path} holds a file {folder} where {self.command} writes a folder: "
                                  "move it away, or give another folder.")
        for name in names:
            if (self.path / name).is_dir():
                raise FolderError(f"{option} {self.path} holds a folder {name} where {self.command} writes a file: "
                                  "move it away, or give another folder.")
        try:
            atomic.check_folder(self.path, need_bytes)
        except atomic.WriteError as error:
            raise FolderError(f"{option} {self.path}: {error}") from None
        foreign = [] if replace or self.own_default else self.unrecorded(names)
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise FolderError(f"{option} {self.path} holds {len(foreign)} file{'s' if len(foreign) > 1 else ''} that "
                              f"{self.command} would overwrite but did not write ({shown}; {MANIFEST} lists what it "
                              f"wrote): move them away, give another folder, or add --replace to let it replace "
                              "them (it leaves every other file alone).")

    def _manifest_text(self, groups: dict[str, set[str]], digests: dict[str, str]) -> str:
        listed = set().union(*groups.values()) if groups else set()
        record = {"written by": self.command,
                  "about": "the files this command wrote in this folder; a rebuild replaces or removes only these",
                  "files": {name: sorted(entries) for name, entries in sorted(groups.items()) if entries}}
        kept = {name: digest for name, digest in sorted(digests.items()) if name in listed}
        if kept:
            record["sha256"] = kept
        return json.dumps(record, indent=1) + "\n"

    def _write_manifest(self, groups: dict[str, set[str]]) -> None:
        atomic.write_text(self.manifest, self._manifest_text(groups, self.digests))

    def commit(self, batch: atomic.Batch, group: str, replace_group: bool = True) -> list[str]:
        """Swap in `batch` (files inside this folder, recorded under `group`) and record them.

        With `replace_group` the group becomes exactly the batch's files, and the files it listed before that the
        batch no longer writes are removed; otherwise the batch's files are added to the group. Returns the
        removed files' relative names."""
        written = {self.relative(path) for path in batch.written}
        before = set(self.groups.get(group, ()))
        try:
            self._write_manifest({**self.groups, group: before | written})   # first: whatever is placed is listed
            batch.commit()
        except BaseException:
            batch.discard()
            raise
        gone = sorted(before - written) if replace_group else []
        stale = [name for name in gone if os.path.lexists(self.path / name)]
        for name in stale:
            target = self.path / name
            if target.is_file() or target.is_symlink():
                target.unlink()
        for folder in sorted({(self.path / name).parent for name in stale}, key=lambda f: -len(f.parts)):
            if folder != self.path and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        self.groups[group] = written if replace_group else before | written
        if gone:
            self._write_manifest(self.groups)
        return stale

    # ------------------------------------------------------------------------------------------ whole-tree swap
    def swap_tree(self, files: dict[str, bytes], group: str, keep=(), backup: str = ".backup") -> "Swapped":
        """Make `group` exactly `files` (relative name -> content), every other file of the folder left as it is,
        and the existing files `keep` (the user's changes) kept under ``<backup>/<time>/`` first: built beside the
        folder and swapped in as one where the system allows it, else written in place (the module's docstring).
        A file that cannot be written is an `atomic.WriteError` naming it in the folder."""
        real = self.path.resolve()          # a link to a folder: the folder it points at is swapped, the link stays
        kept_in = None
        if keep:
            kept_in = PurePosixPath(backup, time.strftime("%Y%m%d-%H%M%S")).as_posix()
            while os.path.lexists(real / kept_in):
                kept_in += "+"
        digests = {**{name: d for name, d in self.digests.items() if name not in files},
                   **{name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}
        groups = {**self.groups, group: set(files)}
        removed = sorted(name for name in self.groups.get(group, set()) - set(files)
                         if os.path.lexists(self.path / name))
        staging, mirrored = None, {}
        try:
            staging = self._stage(real, files, self._manifest_text(groups, digests), list(keep), kept_in,
                                  skip=set(files) | self.groups.get(group, set()) | {MANIFEST}, mirrored=mirrored)
            if os.path.lexists(real):
                _exchange(staging, real)
            else:
                os.rename(staging, real)
                staging = None
        except _NoSwap:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            return self._write_in_place(files, group, keep, kept_in, digests)
        except BaseException as error:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            if isinstance(error, OSError):
                raise _in_folder(error, real) from None
            raise
        self.groups, self.digests = groups, digests
        rescued = []
        if staging is not None:
            try:
                rescued = settle(staging, real, backup, mirrored)
            except OSError as error:   # the new tree is in place: what is left beside it is emptied by the next run
                print(f"warning: {staging} holds files of the previous {real.name} that could not be sorted "
                      f"({atomic.reason(error)}); the next run sorts them again.", file=sys.stderr, flush=True)
        return Swapped(removed, rescued, True, kept_in)

    @staticmethod
    def _stage(real: Path, files: dict[str, bytes], manifest: str, keep: list[str], kept_in: str | None,
               skip: set[str], mirrored: dict) -> Path:
        """The new tree beside `real` (the module's docstring): the manifest, hard links of every entry of `real`
        but those in `skip` (each recorded in `mirrored`), the links of `keep` under `kept_in`, and `files`.
        _NoSwap where it cannot be swapped."""
        exists = os.path.lexists(real)
        if sys.platform != "linux" or (exists and (not real.is_dir() or os.path.ismount(real))):
            raise _NoSwap
        real.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(real.parent, os.W_OK | os.X_OK):
            raise _NoSwap
        staging = atomic.temporary_name(real)
        os.mkdir(staging)
        try:
            with atomic.Batch() as batch:
                # the manifest is named first: a tree left by a kill always says which of its files are the command's
                batch.write_text(staging / MANIFEST, manifest)
                if exists:
                    _mirror(real, staging, skip, os.lstat(real).st_dev, mirrored)
                    for name in keep:
                        (staging / kept_in / name).parent.mkdir(parents=True, exist_ok=True)
                        _link(real / name, staging / kept_in / name)
                for name, data in files.items():
                    batch.write_bytes(staging / name, data)
            if exists:
                os.chmod(staging, stat.S_IMODE(os.lstat(real).st_mode))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def _write_in_place(self, files: dict[str, bytes], group: str, keep, kept_in: str | None, digests) -> "Swapped":
        """The fallback where no swap is possible: the backups first, then every file in one `atomic.Batch`."""
        if keep:
            with atomic.Batch() as batch:
                for name in keep:
                    batch.write_bytes(self.path / kept_in / name, (self.path / name).read_bytes())
        atomic.remove_leftovers(self.path, {name for name in [*files, MANIFEST] if "/" not in name})
        self.digests = digests
        with atomic.Batch() as batch:
            for name, data in files.items():
                batch.write_bytes(self.path / name, data)
            removed = self.commit(batch, group)
        return Swapped(removed, [], False, kept_in)

    def settle_leftovers(self, backup: str = ".backup") -> list[str]:
        """Empty the trees that killed swaps left beside the folder (`settle`); returns the files moved back into
        it. Call it only under the folder's lock."""
        real = self.path.resolve()
        rescued = []
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for entry in os.scandir(real.parent):
                if atomic.is_leftover_of(entry.name, real.name) and entry.is_dir(follow_symlinks=False):
                    try:
                        rescued += settle(Path(entry.path), real, backup)
                    except OSError as error:
                        print(f"warning: {entry.path}, left by a build that was stopped, could not be sorted "
                              f"({atomic.reason(error)}); it is left as it is.", file=sys.stderr, flush=True)
        return rescued


@dataclass
class Swapped:
    """What `OutputFolder.swap_tree` did: the group's files it removed, the files it moved back from the previous
    tree (saved into the folder while the new one was built), whether it swapped the tree whole, and the folder
    (relative) where it kept the user's changed files, if any."""
    removed: list[str]
    rescued: list[str]
    whole: bool
    kept_in: str | None = None


class _NoSwap(Exception):
    """The folder cannot be swapped whole here: write it in place instead."""


def _in_folder(error: OSError, real: Path) -> OSError:
    """An error met while building the tree beside the folder `real`, as a WriteError naming the file in `real`."""
    where = Path(error.filename) if isinstance(error.filename, str) else None
    if where is not None and where.is_relative_to(real.parent) and where != real.parent and \
            atomic.is_leftover_of(where.relative_to(real.parent).parts[0], real.name):
        target = real.joinpath(*where.relative_to(real.parent).parts[1:])
        return atomic.WriteError(error.errno, atomic.describe(OSError(error.errno, os.strerror(error.errno or 0)),
                                                              target), str(target))
    if isinstance(error, atomic.WriteError):
        return error
    return atomic.WriteError(error.errno, atomic.describe(error, real), str(real))


def _exchange(a: Path, b: Path) -> None:
    """Swap the names `a` and `b` in one step (Linux's renameat2 with RENAME_EXCHANGE); _NoSwap where the system or
    the file system cannot. Raises the audit event ``instructor.output_folder.exchange``, as os.rename raises its."""
    sys.audit("instructor.output_folder.exchange", str(a), str(b))
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is None:
        raise _NoSwap
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        if code in _NO_SWAP:
            raise _NoSwap
        raise OSError(code, os.strerror(code), str(b))


def _link(source: Path, target: Path) -> None:
    """A hard link `target` of `source` (of a link itself, not of what it points at); _NoSwap where none can be
    made (another file system, a file not the user's under protected_hardlinks, too many links)."""
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError as error:
        if error.errno in _NO_SWAP:
            raise _NoSwap from None
        raise


def _mirror(source: Path, target: Path, skip: set[str], device: int, mirrored: dict, prefix: str = "") -> None:
    """Hard-link into `target` every entry of `source` but the relative names in `skip` and temporaries a kill left
    for those, recording each in `mirrored` (relative name -> (device, inode)); folders are made anew with their
    modes. A folder on another device (a mount point) is _NoSwap."""
    here = {name[len(prefix):] for name in skip if name.startswith(prefix) and "/" not in name[len(prefix):]}
    with os.scandir(source) as entries:
        found = list(entries)
    for entry in found:
        status = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(status.st_mode):
            if status.st_dev != device:
                raise _NoSwap
            os.mkdir(target / entry.name)
            os.chmod(target / entry.name, stat.S_IMODE(status.st_mode))
            _mirror(Path(entry.path), target / entry.name, skip, device, mirrored, f"{prefix}{entry.name}/")
        elif entry.name not in here and not any(atomic.is_leftover_of(entry.name, name) for name in here):
            _link(Path(entry.path), target / entry.name)
            mirrored[prefix + entry.name] = (status.st_dev, status.st_ino)


def settle(old: Path, real: Path, backup: str = ".backup", mirrored: dict | None = None) -> list[str]:
    """Empty `old`, a tree beside the folder `real` that a swap left (the previous folder after the exchange, or a
    new tree that a kill stopped before it), losing nothing. Removed: a name that is the same file in `real` (or
    under its backups), the command's own files as it wrote them (by `old`'s manifest: their digest, else the same
    bytes as in `real`), the manifest and temporaries of those. Anything else is moved back into `real`: in place of
    the file `mirrored` says the swap linked there (the user saved a newer one meanwhile), or where the name is
    free, else under ``<backup>/<time>/`` (also a changed file of the command's). Returns the moved files' names
    relative to `real`; `old` is removed when empty (a mount point in it is left alone)."""
    mirrored = mirrored or {}
    try:
        groups, digests = _read_manifest(old / MANIFEST)
        owned = set().union(*groups.values()) if groups else set()
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        owned, digests = set(), {}
    kept = set()    # the files under the backup folder: a user's changed file was linked there
    if (real / backup).is_dir():
        for path in (real / backup).rglob("*"):
            with contextlib.suppress(OSError):
                status = path.lstat()
                if not stat.S_ISDIR(status.st_mode):
                    kept.add((status.st_dev, status.st_ino))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rescued: list[str] = []

    def same_file(identity: tuple[int, int], candidate: Path) -> bool:
        try:
            other = os.lstat(candidate)
        except OSError:
            return False
        return (other.st_dev, other.st_ino) == identity

    def redundant(path: Path, relative: str, status) -> bool:
        parts, identity = PurePosixPath(relative).parts, (status.st_dev, status.st_ino)
        if same_file(identity, real / relative) or identity in kept or relative == MANIFEST:
            return True
        if len(parts) > 2 and parts[0] == backup and same_file(identity, real.joinpath(*parts[2:])):
            return True     # the link of a changed file that a kill stopped before it was swapped in
        folder = relative[:-len(path.name)]
        if any(atomic.is_leftover_of(path.name, name[len(folder):]) for name in [*owned, MANIFEST]
               if name.startswith(folder) and "/" not in name[len(folder):]):
            return True
        if not stat.S_ISREG(status.st_mode):
            return False
        if relative in owned and relative in digests and _sha256(path) == digests[relative]:
            return True     # the command's own file, as it wrote it
        twin = real / relative
        return (twin.is_file() and not twin.is_symlink() and twin.stat().st_size == status.st_size
                and twin.read_bytes() == path.read_bytes())

    def empty(folder: Path, prefix: str, device: int) -> None:
        with os.scandir(folder) as entries:
            found = list(entries)
        for entry in found:
            relative, path = prefix + entry.name, Path(entry.path)
            status = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(status.st_mode):
                if status.st_dev == device:
                    empty(path, relative + "/", device)
                    with contextlib.suppress(OSError):
                        os.rmdir(path)
                continue
            if redundant(path, relative, status):
                os.unlink(path)
                continue
            target = real / relative
            newer = relative in mirrored and same_file(mirrored[relative], target)
            if not newer and (relative in owned or os.path.lexists(target)):
                target = real / backup / stamp / relative
                while os.path.lexists(target):
                    target = target.with_name(target.name + "~")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, target)
            rescued.append(target.relative_to(real).as_posix())

    with contextlib.suppress(FileNotFoundError):
        empty(old, "", os.lstat(old).st_dev)
        with contextlib.suppress(OSError):
            os.rmdir(old)
    return rescued


# ------------------------------------------------------------------------------------------------------ locks
@contextlib.contextmanager
def folder_lock(lock_file, what: str, wait: bool = False, option: str = "--wait"):
    """Hold `lock_file` for the block, so that one command at a time writes `what` (words naming the folder, as
    "--out student"). Another holder: a FolderError naming it, or with `wait` a line on stderr saying whom it
    waits for, then the wait. A file system without locks (some network and FUSE mounts): one warning, no lock."""
    lock_file = Path(lock_file)
    lock = filelock.FileLock(lock_file, on_acquired=record_holder)
    held = False
    try:
        lock.acquire(timeout=0)
        held = True
    except filelock.Timeout:
        who = holder(lock_file)
        if not wait:
            raise FolderError(f"{what} is being written by {who}: let it finish (or stop it), add {option} to wait "
                              "for it, or give another folder.") from None
        print(f"waiting for {who}, which is writing {what} ...", file=sys.stderr, flush=True)
        lock.acquire()
        held = True
    except OSError as error:
        if error.errno not in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK):
            raise FolderError(f"{what} cannot be locked: {atomic.describe(error, lock_file)}") from None
        print(f"warning: {what} cannot be locked on its file system ({atomic.reason(error)}): nothing stops a "
              "second command from writing it at the same time.", file=sys.stderr, flush=True)
        held = None
    try:
        yield
    finally:
        if held is not False:
            # unlinked while still held, so no file is left; filelock's acquire checks that the file it locked
            # still has a name, so a waiter that opened this one opens the path again
            with contextlib.suppress(OSError):
                lock_file.unlink()
        if held:
            lock.release()
