"""The hand-in archive: one zip a student hands in, and the one reader the grader trusts.

Layout of ``<name>.handin.zip`` (nothing else is accepted):

    manifest.json                    plain JSON, see `Manifest`
    notebooks/NN_<name>.ipynb        the student's executed notebooks (the course's file names)
    helpers/<file>.py                the student's exercise files (`EXERCISE_FILES`), at their course paths

The manifest names the format and its version, the release the student worked from, the profile and device
the notebooks ran in, and the SHA-256 of every other member; `unexecuted` and `stubs` say what was still
missing when the student packed. `unpack` is the only way the grader opens an archive: it refuses, in one
sentence, a name outside that layout (which covers path traversal and absolute paths), a link, a device
file or any member that is not a plain file, a duplicate, more than `MAX_MEMBERS` members, a member past
`MAX_MEMBER_BYTES` or a total past `MAX_UNPACKED_BYTES` (counted while reading, so a zip bomb's forged sizes do
not help), and a member whose hash differs from the manifest.
"""
import hashlib
import json
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from helpers.exercises import EXERCISES

FORMAT, VERSION = "diffusion-workbook-handin", 1
SUFFIX = ".handin.zip"
EXERCISE_FILES = tuple(sorted({exercise.file for exercise in EXERCISES}))   # "helpers/denoise.py", ...
NOTEBOOK_NAME = re.compile(r"notebooks/\d\d_[a-z0-9_]+\.ipynb")
MAX_ARCHIVE_BYTES = 64 * 2**20    # a complete cpu-profile hand-in is about 5 MiB
MAX_MEMBER_BYTES = 32 * 2**20
MAX_UNPACKED_BYTES = 128 * 2**20
MAX_MEMBERS = 32
STUB = "raise ExerciseMissing("     # what the student edition's stub of an unfinished exercise raises


class HandInError(ValueError):
    """A hand-in that cannot be packed or read: one sentence saying what is wrong and how to fix it."""


@dataclass
class Manifest:
    release: str                     # the release the student worked from (its release.json), or "unreleased"
    profile: str                     # WORKBOOK_PROFILE the notebooks ran in
    device: str                      # e.g. "cpu", "cuda (Tesla T4)"
    files: dict = field(default_factory=dict)        # member name -> SHA-256 of its bytes
    unexecuted: list = field(default_factory=list)   # notebooks with no stored output
    stubs: list = field(default_factory=list)        # exercise keys still raising ExerciseMissing
    format: str = FORMAT
    version: int = VERSION

    def to_json(self) -> str:
        return json.dumps(vars(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HandInError("its manifest.json is not JSON: pack the hand-in again with `python -m helpers.handin`.") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise HandInError(f"its manifest.json is not a {FORMAT} version {VERSION} manifest: pack the hand-in "
                              "again with `python -m helpers.handin`.")
        fields = {"release": str, "profile": str, "device": str, "files": dict, "unexecuted": list, "stubs": list}
        for name, kind in fields.items():
            if not isinstance(data.get(name), kind):
                raise HandInError(f"its manifest.json has no valid {name!r}: pack the hand-in again.")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in data["files"].items()):
            raise HandInError("its manifest.json lists files with non-text hashes: pack the hand-in again.")
        return cls(**{name: data[name] for name in fields})


def allowed(name: str) -> bool:
    """Whether `name` is a member the layout allows (the manifest, a course notebook, an exercise file)."""
    return name == "manifest.json" or name in EXERCISE_FILES or bool(NOTEBOOK_NAME.fullmatch(name))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stub_keys(text: str, path: str) -> list[str]:
    """Keys of the exercises of `path` whose stub is still in `text`."""
    found = re.findall(r"raise ExerciseMissing\('([^']+)'", text)
    return sorted({key for key in found if any(e.key == key and e.file == path for e in EXERCISES)})


def has_outputs(notebook: dict) -> bool:
    return any(cell.get("cell_type") == "code" and cell.get("outputs") for cell in notebook.get("cells", []))


def pack(root: Path, out: Path, release: str, profile: str, device: str) -> Manifest:
    """Write the hand-in of the student repository `root` (its notebooks and exercise files) to `out`.

    Nothing is refused for being unfinished: the manifest lists the notebooks without outputs and the exercises
    still stubbed. A link or an oversized file is refused, since the grader would refuse it."""
    root, out = Path(root), Path(out)
    members: dict[str, bytes] = {}
    notebooks = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise HandInError(f"{root / 'notebooks'} holds no course notebook (NN_name.ipynb): run this from the "
                          "repository you worked in, or pass it with --root.")
    for path in [*notebooks, *(root / name for name in EXERCISE_FILES)]:
        name = path.relative_to(root).as_posix()
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise HandInError(f"{name} is not a plain file (a link or a folder): replace it by the file itself.")
        if not path.exists():
            raise HandInError(f"{name} is missing: restore it (`git checkout -- {name}`) and pack again.")
        data = path.read_bytes()
        if len(data) > MAX_MEMBER_BYTES:
            raise HandInError(f"{name} is {len(data) / 2**20:.0f} MiB, over the {MAX_MEMBER_BYTES // 2**20} MiB a "
                              "file may take: clear the largest outputs and save it again.")
        members[name] = data
    unexecuted, stubs = [], []
    for name, data in members.items():
        if name.endswith(".ipynb"):
            try:
                notebook = json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise HandInError(f"{name} is not a notebook (not JSON): save it again from Jupyter.") from None
            if not has_outputs(notebook):
                unexecuted.append(name)
        else:
            stubs += stub_keys(data.decode("utf-8", "replace"), name)
    manifest = Manifest(release=release, profile=profile, device=device,
                        files={name: sha256(data) for name, data in members.items()},
                        unexecuted=unexecuted, stubs=sorted(stubs, key=lambda k: [int(p) for p in k.split(".")]))
    from helpers.foundation.atomic import write_atomic
    with write_atomic(out, "wb") as handle:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("manifest.json", manifest.to_json())
            for name, data in members.items():
                archive.writestr(name, data)
    if out.stat().st_size > MAX_ARCHIVE_BYTES:
        out.unlink()
        raise HandInError(f"the hand-in would be over {MAX_ARCHIVE_BYTES // 2**20} MiB: clear the largest outputs "
                          "of your notebooks and pack again.")
    return manifest


def _kind(info: zipfile.ZipInfo) -> str | None:
    """What a member is, when it is not a plain file (from the Unix mode a zip may carry)."""
    kind = stat.S_IFMT(info.external_attr >> 16)     # 0 when the zip carries no Unix file type
    if info.is_dir() or kind == stat.S_IFDIR:
        return "a folder"
    if kind == stat.S_IFLNK:
        return "a link"
    if kind not in (0, stat.S_IFREG):
        return "a device or special file"
    return None


def unpack(archive: Path, dest: Path) -> Manifest:
    """Check the hand-in `archive` member by member and write its files under `dest` (which must be empty).

    Raises `HandInError` with one sentence naming the first thing wrong; `dest` then holds no member."""
    archive, dest = Path(archive), Path(dest)
    if archive.is_symlink() or not archive.is_file():
        raise HandInError(f"{archive.name} is not a plain file.")
    if archive.stat().st_size > MAX_ARCHIVE_BYTES:
        raise HandInError(f"{archive.name} is over the {MAX_ARCHIVE_BYTES // 2**20} MiB a hand-in may take.")
    try:
        opened = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError):
        raise HandInError(f"{archive.name} is not a zip archive: hand in the file `python -m helpers.handin` "
                          "writes.") from None
    contents: dict[str, bytes] = {}
    with opened:
        infos = opened.infolist()
        if len(infos) > MAX_MEMBERS:
            raise HandInError(f"{archive.name} has {len(infos)} members, more than the {MAX_MEMBERS} a hand-in holds.")
        total = 0
        for info in infos:
            name = info.filename
            if not allowed(name):
                raise HandInError(f"{archive.name} holds {name!r}, which is not a notebook, an exercise file or the "
                                  "manifest (no other path, no '..', no absolute path).")
            kind = _kind(info)
            if kind:
                raise HandInError(f"{archive.name} holds {name!r} as {kind}, not a plain file.")
            if name in contents:
                raise HandInError(f"{archive.name} holds {name!r} twice.")
            try:
                with opened.open(info) as member:
                    data = member.read(MAX_MEMBER_BYTES + 1)
            except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as error:
                raise HandInError(f"{archive.name}: {name!r} cannot be read ({error}).") from None
            total += len(data)
            if len(data) > MAX_MEMBER_BYTES or total > MAX_UNPACKED_BYTES:
                raise HandInError(f"{archive.name} unpacks past the size cap ({MAX_MEMBER_BYTES // 2**20} MiB a "
                                  f"file, {MAX_UNPACKED_BYTES // 2**20} MiB in all): a zip bomb or huge outputs.")
            contents[name] = data
    if "manifest.json" not in contents:
        raise HandInError(f"{archive.name} has no manifest.json: pack it with `python -m helpers.handin`.")
    manifest = Manifest.from_json(contents.pop("manifest.json").decode("utf-8", "replace"))
    for name, data in contents.items():
        if manifest.files.get(name) != sha256(data):
            raise HandInError(f"{archive.name}: {name} does not match the hash in its manifest (edited after packing).")
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise HandInError(f"{dest} is not empty: unpack into a folder of its own.")
    for name, data in contents.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return manifest
