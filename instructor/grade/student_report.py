"""A student's report, from the notebooks' stored outputs (nothing executed), and their written answers.

`build` reads each course notebook of the unpacked hand-in (a missing, malformed or wrong-format notebook
becomes one sentence and counts as missing), writes GRADES/reports/<name>/ with `instructor.report.build` (the
same report the instructor's own render writes), and returns the missing deliverables it found. `written`
collects the written answers of the mapping's ``[[answer]]`` tables: their text, "to grade", or "missing".
"""
import contextlib
import filecmp
import os
from pathlib import Path

from instructor import report

WRITTEN_TEXT = 2000


def read(folder: Path, mapping) -> tuple[dict, list[str]]:
    """(notebook key -> NotebookNode or None, sentences about notebooks that could not be read)."""
    notebooks, problems = {}, []
    for key, name in mapping.notebooks.items():
        path = folder / name
        if not path.exists():
            notebooks[key] = None
            continue
        try:
            notebooks[key] = report.read_notebook(path)
        except report.NotebookError as error:
            reason = str(error).split("(", 1)[-1].split(")", 1)[0] if "(" in str(error) else "unreadable"
            problems.append(f"notebooks/{name} is not a Jupyter notebook ({reason}): save it again from Jupyter and "
                            "hand in again")
            notebooks[key] = None
    return notebooks, problems


def written(mapping, notebooks: dict) -> list[dict]:
    """One entry per answer cell of the mapping's ``[[answer]]`` tables (two rows may share one question): the
    rows it serves as its id, the question, the student's text (the reference cell's in notebooks that have no
    answer cell, as the instructor's own), and "to grade", or "missing" when the cell is absent, empty or still
    holds nbgrader's stub."""
    answers: dict[tuple[str, str], dict] = {}
    for answer in mapping.answers:
        entry = answers.get((answer.notebook, answer.cell))
        if entry is not None:
            entry["id"] += f" / {answer.row}"
            continue
        cells = {c.get("id"): c for c in notebooks[answer.notebook].cells} if notebooks.get(answer.notebook) else {}
        cell = cells.get(answer.cell, cells.get(answer.reference))   # the instructor's own notebooks: the reference
        text = str(cell.source).strip()[:WRITTEN_TEXT] if cell is not None else ""
        status = "to grade" if text and report.STUB not in text else "missing"
        answers[answer.notebook, answer.cell] = {"id": answer.row, "title": answer.prompt, "points": answer.points,
                                                 "status": status, "text": text if status == "to grade" else ""}
    return list(answers.values())


def build(handin: Path, out_dir: Path, name: str) -> tuple[list[str], list[dict]]:
    """Write the report of the hand-in unpacked at `handin` into out_dir; return (missing deliverables, written
    answers)."""
    mapping = report.load_mapping()
    notebooks, problems = read(handin / "notebooks", mapping)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        found = report.build(notebooks, out_dir, f"Diffusion workbook: deliverables of {name}", mapping)
    except Exception as error:   # a notebook the report cannot render: the grades stand, the report says why
        found = [f"the report could not be built ({type(error).__name__}: {str(error)[:200]})"]
    share_mathjax(out_dir, out_dir.parent / ".shared")
    return problems + found, written(mapping, notebooks)


def share_mathjax(out_dir: Path, shared: Path) -> None:
    """Hard-link the report's copy of MathJax (about 1.9 MB) to one copy in `shared`, so that a class of reports
    stores it once while each report folder stays whole (it can be sent to its student as it is)."""
    folder = out_dir / "mathjax"
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        twin = shared / path.relative_to(out_dir)
        twin.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.link(path, twin)                   # the first report of the class gives the shared copy
        if os.path.samefile(path, twin) or not filecmp.cmp(path, twin, shallow=False):
            continue
        linked = path.with_name(f".{path.name}.link")
        with contextlib.suppress(FileNotFoundError):
            linked.unlink()
        os.link(twin, linked)
        os.replace(linked, path)
