"""Taking hand-ins in: their names, their hashes, unpacking them into a scratch folder, packing folder hand-ins.

The archive format is `helpers.handin.archive` (defined once): `unpack` is its reader, which refuses in one
sentence traversal, absolute paths, links, device files, duplicates, and archives past the size or member caps
(a zip bomb's forged sizes do not help: it counts while reading). A folder hand-in (a sub-folder of HANDINS
holding notebooks/ and helpers/, as the issue allows until every student uses the archive) is packed with
`archive.pack` into the scratch area first; a link anywhere on the way is refused.
"""
import hashlib
import re
import shutil
import tempfile
from pathlib import Path

from helpers.handin import archive
from helpers.handin.archive import EXERCISE_FILES, SUFFIX, HandInError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def name_of(path: Path) -> str:
    """The student's name: the archive's file name without .handin.zip (or the folder's name), checked."""
    name = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
    if not NAME.fullmatch(name):
        raise HandInError(f"the hand-in name {name[:60]!r} has characters other than letters, digits, '.', '_' and "
                          "'-' (or is empty or too long): rename the file to <student>.handin.zip.")
    return name


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def is_folder_handin(path: Path) -> bool:
    return path.is_dir() and (path / "notebooks").exists() and (path / "helpers").exists()


def _refuse_links(root: Path) -> None:
    for path in [root, root / "notebooks", root / "helpers",
                 *sorted((root / "notebooks").glob("*")), *(root / name for name in EXERCISE_FILES)]:
        if path.is_symlink():
            raise HandInError(f"{path.relative_to(root.parent)} is a link: a hand-in holds plain files only.")


def folder_sha(root: Path) -> str:
    """A digest of what a folder hand-in would pack (its notebooks and exercise files), links refused."""
    _refuse_links(root)
    digest = hashlib.sha256()
    for path in [*sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")), *(root / n for n in EXERCISE_FILES)]:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    return digest.hexdigest()


def pack_folder(root: Path, out_dir: Path) -> Path:
    """Pack the folder hand-in `root` into out_dir/<name>.handin.zip (links refused, as the grader would)."""
    _refuse_links(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name_of(root)}{SUFFIX}"
    archive.pack(root, target, release="folder hand-in", profile="unknown", device="unknown")
    return target


def unpack(path: Path, scratch_root: Path) -> tuple[Path, archive.Manifest]:
    """Unpack the archive into a new folder under scratch_root (readable by the sandbox's uid); return it and the
    manifest. On a refusal the folder is removed and HandInError (one sentence) raised."""
    scratch_root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{name_of(path)}.", dir=scratch_root))
    folder.chmod(0o755)
    try:
        manifest = archive.unpack(path, folder / "handin")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    for item in (folder / "handin").rglob("*"):
        item.chmod(0o755 if item.is_dir() else 0o644)
    (folder / "handin").chmod(0o755)
    return folder, manifest
