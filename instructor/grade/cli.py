"""Grade a class: ``python -m instructor grade HANDINS/ --out GRADES/ --jobs N [--only NAME]``.

Every ``*.handin.zip`` in HANDINS (and every sub-folder holding notebooks/ and helpers/, packed first with
helpers.handin.archive.pack into GRADES/.scratch/packed/, links refused) is graded by `instructor.grade.one`'s
`grade_one` in N worker processes (run as root, each with a sandbox uid of its own, `instructor.grade.uids`),
under a progress bar with an ETA (tqdm). A hand-in whose archive hash and grader version match its
GRADES/results/<name>.json is skipped; ``--only NAME`` re-grades that student alone. One student's failure (even
the grader's own) is written as that student's row and the run goes on. At the end the results are merged into
GRADES/grades.csv and GRADES/index.html (`instructor.grade.merge`).
"""
import argparse
import json
import multiprocessing
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from helpers.foundation.atomic import WriteError
from helpers.handin.archive import SUFFIX, HandInError
from instructor.grade import grader_version, intake, merge
from instructor.grade.one import caps_arguments, caps_from, summary
from instructor.grade.sandbox import DEFAULT_CAPS, Caps, SandboxMissing, unavailable


@dataclass
class Item:
    name: str
    path: Path              # the archive, or the folder to pack
    sha: str
    folder: bool = False


def discover(handins: Path) -> tuple[list[Item], list[str]]:
    """The hand-ins in `handins` (archives and folder hand-ins), and one sentence per one that cannot be graded."""
    items, problems, seen = [], [], set()
    for path in sorted(handins.iterdir()):
        folder = intake.is_folder_handin(path) and not path.is_symlink()
        if not (folder or path.name.endswith(SUFFIX)):
            continue
        try:
            if path.is_symlink():
                raise HandInError(f"{path.name} is a link: collect the hand-in itself, not a link to it.")
            name = intake.name_of(path)
            if name in seen:
                raise HandInError(f"{path.name}: a hand-in named {name!r} is already in {handins}: keep one.")
            sha = intake.folder_sha(path) if folder else intake.sha256_file(path)
        except (HandInError, OSError) as error:
            problems.append(str(error))
            continue
        seen.add(name)
        items.append(Item(name, path, sha, folder))
    return items, problems


def unchanged(item: Item, grades: Path) -> bool:
    try:
        result = json.loads((grades / "results" / f"{item.name}.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(result, dict) and result.get("sha256") == item.sha and result.get("grader") == grader_version()


def _init() -> None:
    import torch
    torch.set_num_threads(1)
    from instructor.grade import autograde
    autograde.tasks()    # build the hidden cases once per worker


def _grade(item: Item, grades: Path, base: Path, caps: Caps, hide: tuple[Path, ...]) -> tuple[str, str, float]:
    """Grade one hand-in in a worker; any failure becomes the student's row, never the run's end."""
    from instructor.grade.one import _refused, _write, grade_one
    start = time.perf_counter()
    try:
        archive = item.path
        if item.folder:
            archive = intake.pack_folder(item.path, grades / ".scratch" / "packed")
        result = grade_one(archive, grades, base, caps, sha=item.sha, hide=hide)
        line = summary(result)
    except (HandInError, WriteError) as error:
        line = f"{item.name}: refused: {error}"
        _write(grades / "results" / f"{item.name}.json",
               {"student": item.name, "sha256": item.sha, "grader": grader_version(), "refused": str(error),
                "exercises": _refused(str(error)), "missing": [], "written": [], "tampering": []})
    except Exception as error:   # the grader's own failure on this hand-in: recorded, the class goes on
        message = f"the grader failed on this hand-in ({type(error).__name__}: {str(error)[:300]})"
        line = f"{item.name}: {message}"
        _write(grades / "results" / f"{item.name}.json",
               {"student": item.name, "sha256": None, "grader": grader_version(), "refused": message,
                "exercises": _refused(message), "missing": [], "written": [], "tampering": []})
    finally:
        if item.folder:
            (grades / ".scratch" / "packed" / f"{item.name}{SUFFIX}").unlink(missing_ok=True)
    return item.name, line, time.perf_counter() - start


def grade_class(handins: Path, grades: Path, jobs: int = 1, only: str | None = None, caps: Caps = DEFAULT_CAPS,
                out=sys.stderr) -> dict:
    """Grade every changed hand-in of `handins` into `grades`, then merge; returns counts and lines."""
    reason = unavailable()
    if reason:
        raise SandboxMissing(reason)
    if not handins.is_dir():
        raise HandInError(f"{handins} is not a folder: give the folder holding the *{SUFFIX} hand-ins.")
    items, problems = discover(handins)
    if only is not None:
        items = [i for i in items if i.name == only]
        if not items:
            raise HandInError(f"no hand-in named {only!r} in {handins} (its file is {only}{SUFFIX}).")
    elif not items and not problems:
        raise HandInError(f"{handins} holds no *{SUFFIX} hand-in and no folder with notebooks/ and helpers/.")
    todo = [i for i in items if only is not None or not unchanged(i, grades)]
    from instructor.grade import base as base_module
    base = base_module.ensure(grades / ".base")
    hide = (handins.resolve(),)
    lines, seconds = list(problems), []
    context = multiprocessing.get_context("spawn")
    pending, tries = list(todo), {}
    with tqdm(total=len(todo), desc="grading", unit="hand-in", file=out, dynamic_ncols=True) as bar:
        while pending:
            broken = False
            with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=context, initializer=_init) as pool:
                futures = {pool.submit(_grade, item, grades, base, caps, hide): item for item in pending}
                for future in as_completed(futures):
                    item = futures[future]
                    try:
                        name, line, spent = future.result()
                    except BrokenProcessPool:
                        broken = True
                        continue
                    pending.remove(item)
                    lines.append(line)
                    seconds.append(spent)
                    bar.update(1)
            if broken:
                for item in list(pending):
                    tries[item.name] = tries.get(item.name, 0) + 1
                    if tries[item.name] > 1:
                        pending.remove(item)
                        lines.append(f"{item.name}: a grading worker died twice on it; not graded")
                        bar.update(1)
    shutil.rmtree(grades / ".scratch" / "packed", ignore_errors=True)
    merge(grades)
    return {"graded": len(todo), "skipped": len(items) - len(todo), "problems": problems, "lines": lines,
            "seconds": seconds}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m instructor grade", description=__doc__.split("\n")[0])
    parser.add_argument("handins", type=Path, help=f"the folder of *{SUFFIX} hand-ins (or folder hand-ins)")
    parser.add_argument("--out", type=Path, required=True, help="the gradebook folder (GRADES/)")
    parser.add_argument("--jobs", type=int, default=1, help="hand-ins graded at once (worker processes)")
    parser.add_argument("--only", metavar="NAME", help="re-grade this student only")
    caps_arguments(parser)
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    start = time.perf_counter()
    try:
        done = grade_class(args.handins, args.out, args.jobs, args.only, caps_from(args))
    except (SandboxMissing, HandInError, WriteError) as error:
        sys.exit(f"grade: {error}")
    for line in done["lines"]:
        print(line)
    print(f"graded {done['graded']}, skipped {done['skipped']} unchanged, {len(done['problems'])} not gradable, "
          f"in {time.perf_counter() - start:.1f} s; gradebook: {args.out / 'grades.csv'} and {args.out / 'index.html'}")

