"""The base every sandbox starts from: the released helpers (every exercise stubbed), built once per run.

`ensure(folder)` builds the student edition there with `instructor.edition.build` (the same stubs the students
got, so no reference solution is ever inside a sandbox: the student's exercise files are bound over these) and
byte-compiles it, unless a build of the same grader version is already there. A file lock beside the folder makes
concurrent workers and Slurm array tasks build it once. Only base/helpers is ever mounted in a sandbox.
"""
import compileall
import json
from pathlib import Path

from filelock import FileLock

from helpers.foundation.atomic import write_atomic
from instructor import edition
from instructor.grade import grader_version

STAMP = "grade-base.json"


def ensure(folder: Path) -> Path:
    """The base folder, built if it is missing or from another grader version."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{folder.name}.lock")):
        stamp = folder / STAMP
        try:
            current = json.loads(stamp.read_text()).get("grader") == grader_version()
        except (OSError, ValueError, AttributeError):
            current = False
        if current and (folder / "helpers").is_dir():
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        edition.build(folder)
        compileall.compile_dir(str(folder / "helpers"), quiet=1)
        for item in [folder, *(folder / "helpers").rglob("*")]:
            item.chmod(0o755 if item.is_dir() else 0o644)
        with write_atomic(stamp) as handle:
            json.dump({"grader": grader_version()}, handle)
    return folder
