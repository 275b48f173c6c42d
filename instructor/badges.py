"""The "Open in Colab" badge at the top of every notebook, built from one repository setting.

    python -m instructor badges           # write (or rewrite) the badge line of every notebooks/NN_*.ipynb
    python -m instructor badges --check   # exit 1 when a badge does not match REPOSITORY_URL / BRANCH

A fork changes REPOSITORY_URL (and the clone URL default of the notebooks' set-up cells, which a test
compares with it) and runs the first command. Only the first markdown cell of a notebook is touched.
"""
import argparse
import re
import sys
from pathlib import Path

import nbformat

from instructor.execute import NOTEBOOKS, write_atomic
from instructor.report import read_notebook

REPOSITORY_URL = "https://github.com/diffusion-workbook/diffusion-workbook"
BRANCH = "main"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_LINE = re.compile(r"^\[!\[Open In Colab\]\(.*\)\]\(.*\)$", re.MULTILINE)


def colab_url(notebook_name: str) -> str:
    """https://colab.research.google.com/github/OWNER/REPO/blob/BRANCH/notebooks/NAME for REPOSITORY_URL."""
    owner_repo = REPOSITORY_URL.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{BRANCH}/notebooks/{notebook_name}"


def badge(notebook_name: str) -> str:
    """The markdown line of the badge."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(notebook_name)})"


def with_badge(source: str, notebook_name: str) -> str:
    """`source` (a first markdown cell) with its badge line replaced, or inserted after its title line."""
    if BADGE_LINE.search(source):
        return BADGE_LINE.sub(badge(notebook_name).replace("\\", "\\\\"), source, count=1)
    title, _, rest = source.partition("\n")
    return f"{title}\n\n{badge(notebook_name)}\n{rest}"


def first_markdown(notebook) -> nbformat.NotebookNode:
    return next(cell for cell in notebook.cells if cell.cell_type == "markdown")


def stale(folder: Path = NOTEBOOKS) -> list[str]:
    """The notebooks whose first markdown cell lacks the badge this module builds."""
    return [path.name for path in sorted(folder.glob("[0-9][0-9]_*.ipynb"))
            if badge(path.name) not in first_markdown(read_notebook(path)).source]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m instructor badges", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when a badge is missing or stale")
    args = parser.parse_args(argv)
    names = stale()
    if args.check:
        if names:
            sys.exit(f"error: the Colab badge of {', '.join(names)} does not match {REPOSITORY_URL} "
                     f"(branch {BRANCH}): run `python -m instructor badges`.")
        return
    for name in names:
        notebook = read_notebook(NOTEBOOKS / name)
        cell = first_markdown(notebook)
        cell.source = with_badge(cell.source, name)
        write_atomic(notebook, NOTEBOOKS / name)
        print(f"badge written: {name}")

