"""An output folder that records what its command wrote, so a rebuild replaces only that.

A command that writes into a folder (`python -m instructor render --out DIR`) keeps a manifest there,
``DIR/.manifest.json``: the files it wrote, relative to DIR, in named groups (the report's files, the executed
notebooks, the timings). A rebuild

- replaces the files it writes again, and removes the files of a group it rewrote that it no longer writes
  (a figure of a cell that is gone), and nothing else: every file the manifest does not list is left alone;
- refuses to overwrite a file it would write that the manifest does not list (a user's own ``index.html``) unless
  asked to (``--replace``), or unless the folder is the command's own default folder (``rendered/<profile>/``);
- checks all of this, and that the folder can be written, before any expensive work.

The manifest is written before the files it lists are swapped in, listing the old files and the new ones, and
written again without the removed ones afterwards; so whenever a command is killed, every file it has placed is
listed, and the next run can replace or remove it.
"""
import json
import os
from pathlib import Path, PurePosixPath

from helpers.foundation import atomic

MANIFEST = ".manifest.json"


class FolderError(ValueError):
    """An output folder that cannot be used as it is; the message is one sentence saying how to proceed."""


def _relative(entry) -> str | None:
    """A manifest entry as a clean relative path inside the folder, or None for anything else."""
    if not isinstance(entry, str) or not entry or "\\" in entry:
        return None
    path = PurePosixPath(entry)
    if path.is_absolute() or any(part in ("..", ".", "") for part in path.parts) or entry == MANIFEST:
        return None
    return str(path)


class OutputFolder:
    """The folder `path` that `command` writes into, with the manifest of what it wrote there before."""

    def __init__(self, path, command: str, own_default: bool = False):
        self.path, self.command, self.own_default = Path(path), command, own_default
        self.groups: dict[str, set[str]] = self._read()

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    def _read(self) -> dict[str, set[str]]:
        if not self.manifest.exists():
            return {}
        try:
            stored = json.loads(self.manifest.read_text(encoding="utf-8"))
            groups = stored["files"]
            if not isinstance(groups, dict) or not all(isinstance(v, list) for v in groups.values()):
                raise TypeError("its 'files' is not a table of lists")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
            raise FolderError(f"{self.manifest}, the record of the files {self.command} wrote there, is damaged "
                              f"({type(error).__name__}): delete it, and {self.command} will treat {self.path} as a "
                              "folder it did not write (it then refuses to overwrite files there without --replace)."
                              ) from None
        # an entry that is no clean relative path (a hand edit, '../x') is ignored: it is never removed or replaced
        return {str(name): {clean for entry in entries if (clean := _relative(entry))}
                for name, entries in groups.items()}

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
        if self.path.exists() and not self.path.is_dir():
            raise FolderError(f"{option} {self.path} is a file, not a folder: give a folder.")
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

    def _write_manifest(self, groups: dict[str, set[str]]) -> None:
        atomic.write_text(self.manifest, json.dumps({
            "written by": self.command,
            "about": "the files this command wrote in this folder; a rebuild replaces or removes only these",
            "files": {name: sorted(entries) for name, entries in sorted(groups.items()) if entries}},
            indent=1) + "\n")

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
