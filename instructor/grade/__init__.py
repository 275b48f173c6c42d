"""Grading a class: each hand-in's own code in a sandbox, the verdicts decided outside, a gradebook in files.

    python -m instructor grade HANDINS/ --out GRADES/ --jobs N [--only NAME]     the class (instructor.grade.cli)
    python -m instructor grade-one ARCHIVE --out GRADES/ [--base BASE]          one hand-in (instructor.grade.one)

Modules, one job each: `intake` (names, hashes, unpacking with helpers.handin.archive.unpack, packing a folder
hand-in), `base` (the released helpers every sandbox starts from), `sandbox` (bubblewrap and the caps),
`inside/` (the only code a sandbox sees: runner, recorder, vocabulary, wire format), `autograde` (tasks,
sandbox runs, restarts), `replay` (visible checks decided outside), `hidden` (the hidden checks), `scoring`,
`student_report` (the per-student report from stored outputs), `one` (grade-one), `gradebook` (`merge`),
`cli` (grade).

Where the data lives: in files (one JSON per hand-in, merged into a CSV and a page), not in nbgrader's
gradebook.db; `instructor.grade.gradebook` says why.
"""
import functools
import hashlib
from pathlib import Path

VERSION = "1"
ROOT = Path(__file__).resolve().parent.parent.parent


@functools.cache
def grader_version() -> str:
    """VERSION plus a digest of everything that decides a grade: this package, the checks, the exercise table and
    the reference exercise files. A hand-in is re-graded when it changes."""
    from helpers.handin.archive import EXERCISE_FILES
    digest = hashlib.sha256()
    paths = sorted((ROOT / "instructor" / "grade").rglob("*.py")) + sorted((ROOT / "helpers" / "checks").glob("*.py"))
    paths += [ROOT / "helpers" / "exercises.py", *(ROOT / name for name in EXERCISE_FILES)]
    for path in paths:
        if "__pycache__" not in path.parts and path.name not in ("slurm.py", "synthetic.py"):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return f"{VERSION}+{digest.hexdigest()[:12]}"


def merge(grades_dir) -> Path:
    """Rebuild GRADES/grades.csv and GRADES/index.html from GRADES/results/*.json (see instructor.grade.gradebook)."""
    from instructor.grade import gradebook
    return gradebook.merge(Path(grades_dir))
