"""A student's report, from the notebooks' stored outputs (nothing executed), and their written answers.

`build` reads each course notebook of the unpacked hand-in (a missing, malformed or wrong-format notebook
becomes one sentence and counts as missing), writes GRADES/reports/<name>/ with `instructor.report.build` (the
same report the instructor's own render writes), and returns the missing deliverables it found. `written`
collects the written answers (deliverables whose title says "written"): their text, "to grade", or "missing".
"""
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
    answers = []
    for row in mapping.deliverables:
        if "written" not in row.title.lower():
            continue
        notebook = notebooks.get(row.notebook)
        cells = {cell.get("id"): cell for cell in notebook.cells} if notebook is not None else {}
        texts = []
        for cell_id in row.measured:
            cell = cells.get(cell_id)
            if cell is not None:
                text = cell.source if cell.cell_type == "markdown" else report.printed_text(cell)
                texts.append(str(text).strip())
        text = "\n\n".join(t for t in texts if t)[:WRITTEN_TEXT]
        answers.append({"id": row.id, "title": row.title, "status": "to grade" if text else "missing", "text": text})
    return answers


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
    return problems + found, written(mapping, notebooks)
