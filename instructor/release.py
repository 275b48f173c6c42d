"""The student release: ``python -m instructor release --repository URL --out DIR [--branch main] [--message TEXT]``.

Writes the student edition (`instructor.edition.build`) for URL into DIR as a self-contained git work tree and
commits it, ready to push to URL:

- every Colab badge opens the notebook from URL (``colab.research.google.com/github/OWNER/NAME/blob/BRANCH/...``;
  a URL that is not a GitHub repository gets no badge, since Colab opens notebooks from GitHub only), and every
  set-up cell clones URL into ``/content/<NAME>``;
- nothing links or points into this checkout: no symbolic link, no path of it, not the instructor repository's URL,
  no mention of the instructor's package (``instructor/``, ``python -m instructor``); data comes through the usual
  loaders (`helpers.foundation.data` downloads MNIST and Fashion-MNIST where they are missing);
- no solution text: no line of any exercise's reference region, no hidden test (nothing of ``instructor/`` or
  ``tests/`` is copied). `leaks` checks all of this on the built tree before anything is written to DIR, and the
  release is refused, in one sentence naming the first leak, when it finds one;
- ``release.json`` records the course, the release's version (1, 2, ...), the repository and branch, the
  instructor commit it was built from (and whether that checkout had uncommitted changes), and the files the
  release wrote.

Releasing again into the same DIR is an erratum: the files are rewritten, files that an earlier release wrote and
this one does not are deleted, and a new commit records the difference. Files the release did not write (listed
in no ``release.json``) are never touched, deleted or committed. An unchanged edition makes no commit. DIR must be
new, empty, or an earlier release (it has its ``release.json`` and ``.git``); any other folder is refused.

What ships pre-trained (decided here; `instructor.edition.COURSE_PROVIDED` lists the runs):

- shipped, from ``checkpoints/cpu/``: the models the course provides as instruments or stand-ins, which no exercise
  asks the student to build or train: the digit classifier that measures samples in notebooks 02, 03 and 05
  (``classifier``), notebook 04's stand-in for DeepFloyd IF (``flow_class_digits_fashion``, as the course
  provides IF's weights) and its 20-class classifier that measures the tricks (``classifier_digits_fashion``).
  The stand-in is a `ConditionalCourseUNet`: it loads into the student's own class once exercises 1.2, 1.3, 2.1
  and 3.1 are done with the course figure's layers. Other profiles ship nothing; those models train on first use;
- not shipped: every model an exercise leads to, which the student trains with their own code: notebook 01's
  denoisers (course and homework UNets), the flow-matching UNets of notebooks 02 and 03 (course and attention UNets,
  the longer-trained one, the scheduler study's), their ``measurements.json`` (measures of the reference models)
  and notebook 05's locality calibration (calibrated against the student's UNet; it is keyed by a digest of that
  UNet's weights, so the reference calibration would not even match);
- data: the files this repository tracks in ``data/`` (the homework's starting noise ``x_1.pt``, the drawings
  of ``data/drawn/``); MNIST and Fashion-MNIST are downloaded on first use.
"""
import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from helpers.foundation.atomic import write_bytes, write_text
from instructor import badges, edition
from instructor.output_folder import MANIFEST

ROOT = edition.ROOT
COURSE = "diffusion-workbook"
RECORD = "release.json"
TEXT_SUFFIXES = {".py", ".ipynb", ".md", ".toml", ".yml", ".yaml", ".json", ".txt", ".cfg", ""}
INSTRUCTOR_REFERENCE = re.compile(r"python -m instructor\b|\bimport instructor\b|\bfrom instructor\b|"
                                  r"\binstructor/|\binstructor\.[a-z_]")
MIN_SOLUTION_LINE = 16   # shorter lines of a reference region (``return x``) give nothing away


class ReleaseError(ValueError):
    """A release that cannot be made: one sentence saying what is wrong and how to fix it."""


def git(*args: str, cwd: Path, check: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise ReleaseError(f"`git {' '.join(args[:2])}` failed in {cwd}: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def source_commit(root: Path = ROOT) -> tuple[str, bool]:
    """(commit, dirty) of the instructor checkout the release is built from ("unknown" outside git)."""
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if done.returncode != 0:
        return "unknown", True
    status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "helpers", "notebooks", "data",
                             "checkpoints", "environment.yml", "pyproject.toml", "LICENSE"],
                            capture_output=True, text=True)
    return done.stdout.strip(), bool(status.stdout.strip())


def solution_lines(root: Path = ROOT) -> set[str]:
    """Every line of every reference region (helpers files and notebook cells) longer than MIN_SOLUTION_LINE
    characters that appears nowhere outside the regions: text whose presence in a release is a leak."""
    pattern = rf"{edition.BEGIN}\n(.*?)\n[ \t]*{edition.END}"
    texts = [path.read_text() for path in edition.sources(root)]
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        texts += [cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    lines, elsewhere = set(), set()
    for text in texts:
        for region in re.findall(pattern, text, flags=re.S):
            lines.update(line.strip() for line in region.splitlines() if len(line.strip()) > MIN_SOLUTION_LINE)
        elsewhere.update(line.strip() for line in re.sub(pattern, "", text, flags=re.S).splitlines())
    return lines - elsewhere


def text_leaks(name: str, text: str, lines: set[str], root: Path = ROOT) -> list[str]:
    """What in one text (a file of the release, or its git history) gives away the solutions or points into the
    instructor's checkout, as ``"<name>, line N: <what>"``. A solution line is found as it is or JSON-escaped
    (inside a notebook)."""
    found = []

    def at(index: int) -> int:
        return text.count("\n", 0, index) + 1

    for line in sorted(lines):
        for form in dict.fromkeys((line, json.dumps(line)[1:-1])):
            if (index := text.find(form)) >= 0:
                found.append(f"{name}, line {at(index)}: a line of a reference solution ({line[:60]!r})")
                break
    forbidden_url = re.compile(re.escape(badges.REPOSITORY_URL) + r"(?![A-Za-z0-9_.-])")
    for what, pattern in (("a mention of the instructor's package, which the release does not ship",
                           INSTRUCTOR_REFERENCE),
                          (f"the instructor repository's URL {badges.REPOSITORY_URL}", forbidden_url),
                          (f"a path into the instructor's checkout {root}", re.compile(re.escape(str(root))))):
        if (match := pattern.search(text)) is not None:
            found.append(f"{name}, line {at(match.start())}: {what} ({match[0]!r})")
    return found


def leaks(tree: Path, root: Path = ROOT) -> list[str]:
    """Every leak in the folder `tree` (a built edition or a release work tree, .git excluded): links, solution
    lines, mentions of the instructor's package or repository, paths into `root`."""
    lines, found = solution_lines(root), []
    for path in sorted(Path(tree).rglob("*")):
        relative = path.relative_to(tree)
        if relative.parts[0] == ".git":
            continue
        if path.is_symlink():
            found.append(f"{relative}: a symbolic link (to {path.readlink()})")
        elif path.is_file() and path.suffix in TEXT_SUFFIXES:
            found += text_leaks(str(relative), path.read_text(errors="replace"), lines, root)
    return found


def previous_release(out: Path) -> dict | None:
    """The record of the release already in `out`; None when `out` is new or empty. Anything else is refused."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    if not out.is_dir():
        raise ReleaseError(f"--out {out} is a file: choose a new folder, or the folder of an earlier release")
    try:
        record = json.loads((out / RECORD).read_text())
        assert record["course"] == COURSE and isinstance(record["version"], int) and (out / ".git").is_dir()
        assert all(isinstance(f, str) and f and not f.startswith("/") and ".." not in Path(f).parts and
                   not f.startswith(".git") for f in record["files"])
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise ReleaseError(f"--out {out} is a non-empty folder that is not an earlier release of this course (no "
                           f"valid {RECORD} and .git there): choose a new or empty folder") from None
    return record


def _same(out: Path, staging: Path, files: list[str], previous: dict | None) -> bool:
    return previous is not None and sorted(previous["files"]) == files and all(
        (out / name).is_file() and (out / name).read_bytes() == (staging / name).read_bytes() for name in files)


def release(repository: str, out: Path, root: Path = ROOT, branch: str = badges.BRANCH,
            message: str | None = None) -> dict:
    """Build, check, write and commit the release of `root` for `repository` in `out`; returns its record
    (with ``"committed": False`` when the edition is unchanged since the last release in `out`)."""
    out = Path(out).absolute()
    if out == root.resolve() or root.resolve() in out.resolve().parents:
        raise ReleaseError(f"--out {out} is inside the instructor's checkout {root}: choose a folder outside it")
    if not repository or any(c.isspace() for c in repository):
        raise ReleaseError(f"--repository {repository!r} is not a URL: give the student repository's URL, e.g. "
                           "https://github.com/OWNER/NAME")
    badges.folder_name(repository)
    previous = previous_release(out)
    with tempfile.TemporaryDirectory(prefix="release-") as temporary:
        staging = Path(temporary) / "edition"
        edition.build(staging, root, repository, branch)
        (staging / MANIFEST).unlink()   # the edition's own record of its folder: release.json is the release's
        found = leaks(staging, root)
        if found:
            raise ReleaseError(f"the release would leak {len(found)} thing(s), first {found[0]}: fix the source "
                               "and release again")
        files = sorted(path.relative_to(staging).as_posix() for path in staging.rglob("*") if path.is_file())
        if _same(out, staging, files, previous):
            return {**previous, "committed": False}
        commit, dirty = source_commit(root)
        record = {"course": COURSE, "version": previous["version"] + 1 if previous else 1, "repository": repository,
                  "branch": branch, "source_commit": commit, "source_dirty": dirty, "files": files}
        if previous is None:
            out.mkdir(parents=True, exist_ok=True)
            git("init", "--quiet", "--initial-branch", branch, cwd=out)
        for name in files:
            if not (out / name).is_file() or (out / name).read_bytes() != (staging / name).read_bytes():
                write_bytes(out / name, (staging / name).read_bytes())
    removed = sorted(set(previous["files"]) - set(files)) if previous else []
    for name in removed:
        (out / name).unlink(missing_ok=True)
        for folder in (out / name).parents:
            if folder == out or any(folder.iterdir()):
                break
            folder.rmdir()
    write_text(out / RECORD, json.dumps(record, indent=1) + "\n")
    paths = "\n".join([*files, *removed, RECORD]) + "\n"
    subprocess.run(["git", "add", "--all", "--pathspec-from-file=-"], cwd=out, input=paths, text=True, check=True,
                   capture_output=True)
    identity = [] if git("config", "user.email", cwd=out, check=False).strip() else \
        ["-c", "user.name=Course release", "-c", "user.email=release@localhost"]
    kind = "release" if record["version"] == 1 else "errata"
    git(*identity, "commit", "--quiet", "-m", message or f"{COURSE} {kind} {record['version']}", cwd=out)
    return {**record, "committed": True, "removed": removed}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m instructor release", description=__doc__.split("\n")[0])
    parser.add_argument("--repository", required=True,
                        help="the student repository's URL, which badges open and set-up cells clone")
    parser.add_argument("--out", type=Path, required=True, help="the release's work tree (new, empty, or an "
                                                                "earlier release: errata)")
    parser.add_argument("--branch", default=badges.BRANCH, help=f"the branch badges open (default {badges.BRANCH})")
    parser.add_argument("--message", help="the commit message (default: '<course> release N' / 'errata N')")
    args = parser.parse_args(argv)
    if shutil.which("git") is None:
        sys.exit("error: git is not installed: install it (apt-get install git) and release again")
    start = time.perf_counter()
    try:
        record = release(args.repository, args.out, branch=args.branch, message=args.message)
    except (ReleaseError, edition.CourseError, OSError) as error:
        sys.exit(f"error: {error}")
    seconds = time.perf_counter() - start
    if not record["committed"]:
        print(f"release {record['version']} in {args.out} is current: the edition has not changed, nothing committed "
              f"({seconds:.1f} s)")
        return
    removed = f", {len(record['removed'])} removed" if record["removed"] else ""
    print(f"release {record['version']} of {args.repository} in {args.out}: {len(record['files'])} files{removed}, "
          f"committed ({seconds:.1f} s); push it with `git -C {args.out} push {args.repository} {args.branch}`")
