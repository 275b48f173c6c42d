"""The "Open in Colab" badge and the set-up cell of every notebook, built from one repository setting.

    python -m instructor badges           # write (or rewrite) the badge line and set-up cell of every notebooks/NN_*.ipynb
    python -m instructor badges --check   # exit 1 when a badge or set-up cell does not match REPOSITORY_URL / BRANCH

A fork changes REPOSITORY_URL and runs the first command. Only the first markdown cell (its badge line) and the
first code cell (the set-up cell, rewritten whole from `setup_cell`) of a notebook are touched. The student
release (`instructor.release`) builds the same badge and set-up cell for its own repository URL.

The set-up cell, on Colab: clones the repository into ``/content/<name>`` (once per VM), moves into its
``notebooks/`` folder and, with ``KEEP_CHECKPOINTS_ON_DRIVE = True`` (off by default), mounts Google Drive and
points ``WORKBOOK_CHECKPOINTS`` (read by `helpers.training.runs`) at ``MyDrive/<name>/checkpoints``, copying the
repository's shipped checkpoints there once, so that training started on one VM resumes on the next. Everywhere:
puts the repository root first on ``sys.path``, where `helpers` lives.
"""
import argparse
import re
import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
REPOSITORY_URL = "https://github.com/diffusion-workbook/diffusion-workbook"
BRANCH = "main"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_LINE = re.compile(r"^\[!\[Open In Colab\]\(.*\)\]\(.*\)$", re.MULTILINE)
GITHUB = re.compile(r"^https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?$")
LOCAL_HINT = "Locally, after `make setup`: nothing to do."

SETUP = '''# Set-up. On Colab: fetch the workbook (torch & co. are preinstalled there). {local_hint}
# On Colab, True keeps trained models on your Google Drive, so that training resumes on a new Colab VM.
KEEP_CHECKPOINTS_ON_DRIVE = False
import os
import sys

if "google.colab" in sys.modules:
{clone}    %cd /content/{folder}/notebooks
    if KEEP_CHECKPOINTS_ON_DRIVE:
        import shutil

        from google.colab import drive

        drive.mount("/content/drive")
        os.environ["WORKBOOK_CHECKPOINTS"] = "/content/drive/MyDrive/{folder}/checkpoints"
        shutil.copytree("../checkpoints", os.environ["WORKBOOK_CHECKPOINTS"], dirs_exist_ok=True,  # shipped models, once
                        copy_function=lambda source, target: os.path.exists(target) or shutil.copy2(source, target))
sys.path.insert(0, os.path.abspath(".."))  # the repository root, where `helpers` lives'''

CLONE = '''    if not os.path.isdir("/content/{folder}"):
        !git clone --depth 1 {{os.environ.get("WORKBOOK_REPO", "{clone_url}")}} /content/{folder}
'''


def github_parts(repository: str) -> tuple[str, str] | None:
    """(owner, name) of a GitHub repository URL, or None for any other URL."""
    match = GITHUB.match(repository)
    return (match[1], match[2]) if match else None


def folder_name(repository: str) -> str:
    """The folder a clone of `repository` gets: its last path component without ``.git``."""
    name = repository.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
        raise ValueError(f"cannot name a clone folder after {repository!r}: end the URL with the repository's name")
    return name


def colab_url(notebook_name: str, repository: str = REPOSITORY_URL, branch: str = BRANCH) -> str:
    """https://colab.research.google.com/github/OWNER/REPO/blob/BRANCH/notebooks/NAME for a GitHub `repository`."""
    parts = github_parts(repository)
    if parts is None:
        raise ValueError(f"{repository} is not a GitHub repository URL (https://github.com/OWNER/NAME): Colab "
                         "opens notebooks from GitHub only")
    return f"https://colab.research.google.com/github/{parts[0]}/{parts[1]}/blob/{branch}/notebooks/{notebook_name}"


def badge(notebook_name: str, repository: str = REPOSITORY_URL, branch: str = BRANCH) -> str:
    """The markdown line of the badge."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(notebook_name, repository, branch)})"


def with_badge(source: str, notebook_name: str, repository: str = REPOSITORY_URL, branch: str = BRANCH) -> str:
    """`source` (a first markdown cell) with its badge line replaced, or inserted after its title line."""
    line = badge(notebook_name, repository, branch)
    if BADGE_LINE.search(source):
        return BADGE_LINE.sub(line.replace("\\", "\\\\"), source, count=1)
    title, _, rest = source.partition("\n")
    return f"{title}\n\n{line}\n{rest}"


def without_badge(source: str) -> str:
    """`source` with its badge line removed, and the blank line the badge stood in."""
    lines = source.split("\n")
    for number, line in enumerate(lines):
        if BADGE_LINE.fullmatch(line):
            del lines[number]
            if 0 < number < len(lines) and not lines[number].strip() and not lines[number - 1].strip():
                del lines[number]
            break
    return "\n".join(lines)


def setup_cell(repository: str | None = REPOSITORY_URL, clone_url: str | None = None,
               local_hint: str = LOCAL_HINT, folder: str | None = None) -> str:
    """The source of the set-up cell for `repository` (cloned as `clone_url`, by default the URL itself).
    Without a repository the Colab branch has nothing to clone and says so in one sentence."""
    if repository is None:
        folder = folder or "diffusion-workbook"
        clone = ('    if not os.path.isdir("/content/{folder}"):\n        raise SystemExit("this copy of the notebook was '
                 'not released: open it from the course\'s release repository on Colab")\n').format(folder=folder)
    else:
        folder = folder or folder_name(repository)
        clone = CLONE.format(folder=folder, clone_url=clone_url or repository)
    return SETUP.format(local_hint=local_hint, clone=clone, folder=folder)


def first_markdown(notebook) -> nbformat.NotebookNode:
    return next(cell for cell in notebook.cells if cell.cell_type == "markdown")


def first_code(notebook) -> nbformat.NotebookNode:
    return next(cell for cell in notebook.cells if cell.cell_type == "code")


def instructor_setup() -> str:
    """The instructor notebooks' set-up cell: clones REPOSITORY_URL (``.git``) into /content/diffusion-workbook."""
    return setup_cell(REPOSITORY_URL, clone_url=f"{REPOSITORY_URL}.git")


def stale(folder: Path | None = None) -> list[str]:
    """The notebooks of `folder` (default notebooks/) whose badge or set-up cell differs from what this module builds."""
    from instructor.report import read_notebook
    return [path.name for path in sorted((folder or NOTEBOOKS).glob("[0-9][0-9]_*.ipynb"))
            if badge(path.name) not in first_markdown(notebook := read_notebook(path)).source
            or first_code(notebook).source != instructor_setup()]


def rewrite(folder: Path | None = None) -> list[str]:
    """Rewrite the badge line and set-up cell of the stale notebooks of `folder` (default notebooks/); their names."""
    from instructor.execute import write_atomic
    from instructor.report import read_notebook
    folder = folder or NOTEBOOKS
    names = stale(folder)
    for name in names:
        notebook = read_notebook(folder / name)
        cell = first_markdown(notebook)
        cell.source = with_badge(cell.source, name)
        first_code(notebook).source = instructor_setup()
        write_atomic(notebook, folder / name)
    return names


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m instructor badges", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="only check; exit 1 when a badge or set-up cell is missing or stale")
    args = parser.parse_args(argv)
    names = stale()
    if args.check:
        if names:
            sys.exit(f"error: the Colab badge or set-up cell of {', '.join(names)} does not match {REPOSITORY_URL} "
                     f"(branch {BRANCH}): run `python -m instructor badges`.")
        return
    for name in rewrite():
        print(f"badge and set-up cell written: {name}")
