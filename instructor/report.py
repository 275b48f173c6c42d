"""The instructor's report: one row per course deliverable, built from notebooks' stored outputs.

The rows come from `notebooks/deliverables.toml` (the course numbering, the notebook and the cell ids that
show each deliverable). `build` writes into one folder:

    index.html      a table: id and title, the figures (each links to the notebook page at its cell), the
                    measured figures the notebook printed, the profile it ran in, and where it is shown
                    (DeepFloyd IF or the offline stand-in for notebook 04, MNIST for the others)
    NN_name.html    each notebook as HTML, its images in figures/ (not inlined, so each is stored once)
    figures/        the PNG outputs, named <notebook>-<cell id>-<k>.png
    style.css

Nothing is executed: the notebooks must already hold their outputs. Missing outputs are shown in red in
the table and returned by `build` as problems, so a student's submission is graded the same way.
"""
import base64
import copy
import html
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat
import tomllib
from nbconvert import HTMLExporter
from nbconvert.filters.markdown import markdown2html
from pygments.formatters import HtmlFormatter

ROOT = Path(__file__).resolve().parent.parent
MAPPING = ROOT / "notebooks" / "deliverables.toml"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class NotebookError(ValueError):
    """A path that is not a readable notebook, or a mapping file that does not fit the notebooks."""


@dataclass(frozen=True)
class Deliverable:
    id: str
    title: str
    notebook: str
    figures: tuple[str, ...]
    measured: tuple[str, ...]
    note: str


@dataclass(frozen=True)
class Mapping:
    notebooks: dict[str, str]          # key ("04") -> file name
    backend: tuple[str, str]           # (notebook key, cell id) whose output names notebook 04's backend
    deliverables: tuple[Deliverable, ...]
    extra_figures: dict[tuple[str, str], str]   # (notebook key, cell id) -> why it is not a deliverable


def load_mapping(path: Path = MAPPING) -> Mapping:
    """Read the deliverables file; a missing field or unknown notebook key is one NotebookError."""
    try:
        raw = tomllib.loads(Path(path).read_text())
        notebooks = dict(raw["notebooks"])
        rows = tuple(Deliverable(r["id"], r["title"], r["notebook"], tuple(r.get("figures", ())),
                                 tuple(r.get("measured", ())), r.get("note", "")) for r in raw["deliverable"])
        extra = {(e["notebook"], e["cell"]): e["reason"] for e in raw.get("extra_figure", ())}
        backend = (raw["backend"]["notebook"], raw["backend"]["cell"])
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as err:
        raise NotebookError(f"{path} is not a valid deliverables file ({type(err).__name__}: {err}).") from None
    for key in [r.notebook for r in rows] + [k for k, _ in extra] + [backend[0]]:
        if key not in notebooks:
            raise NotebookError(f"{path} names notebook {key!r}, which is not in its [notebooks] table.")
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        raise NotebookError(f"{path} lists a deliverable id twice: {sorted({i for i in ids if ids.count(i) > 1})}.")
    return Mapping(notebooks, backend, rows, extra)


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read a notebook; a missing file or one that is not a notebook is one NotebookError sentence."""
    path = Path(path)
    if not path.is_file():
        raise NotebookError(f"{path} does not exist (or is not a file): give the path of an .ipynb notebook.")
    try:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
    except Exception as err:  # nbformat raises JSON, validation, unicode and version errors alike
        raise NotebookError(f"{path} is not a Jupyter notebook ({type(err).__name__}); "
                            "give an .ipynb file saved by Jupyter.") from None
    return notebook


def _cells(notebook) -> dict:
    return {cell.get("id"): cell for cell in notebook.cells}


def images(cell) -> list[str]:
    """The base64 PNGs a cell's outputs hold, in order."""
    return [o["data"]["image/png"] for o in cell.get("outputs", ()) if "image/png" in o.get("data", {})]


def printed_text(cell) -> str:
    """What a code cell printed (stdout, and a result's text unless it came with an image); '' if nothing."""
    parts = []
    for output in cell.get("outputs", ()):
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            parts.append(output["text"])
        elif output.get("output_type") == "execute_result" and "image/png" not in output["data"]:
            text = output["data"].get("text/plain", "")
            if not text.startswith("<Figure"):
                parts.append(text + "\n")
    return ANSI.sub("", "".join(parts)).rstrip()


def problems(mapping: Mapping, notebooks: dict) -> list[str]:
    """Every way the notebooks fail the mapping: a mapped cell missing or without its output, a figure unmapped.

    `notebooks` maps each key of `mapping.notebooks` to a NotebookNode, or to None when the file is missing.
    """
    found = []
    for key, name in mapping.notebooks.items():
        if notebooks.get(key) is None:
            found.append(f"notebook {name} is missing")
    for row in mapping.deliverables:
        notebook = notebooks.get(row.notebook)
        if notebook is None:
            continue
        cells = _cells(notebook)
        if not row.figures and not row.measured:
            found.append(f"{row.id}: the mapping names no cell")
        for cell_id in row.figures:
            if cell_id not in cells:
                found.append(f"{row.id}: cell {cell_id} is not in {mapping.notebooks[row.notebook]}")
            elif not images(cells[cell_id]):
                found.append(f"{row.id}: cell {cell_id} of {mapping.notebooks[row.notebook]} has no figure")
        for cell_id in row.measured:
            cell = cells.get(cell_id)
            if cell is None:
                found.append(f"{row.id}: cell {cell_id} is not in {mapping.notebooks[row.notebook]}")
            elif not (cell.source.strip() if cell.cell_type == "markdown" else printed_text(cell)):
                found.append(f"{row.id}: cell {cell_id} of {mapping.notebooks[row.notebook]} printed nothing")
    mapped = {(r.notebook, c) for r in mapping.deliverables for c in r.figures + r.measured} | set(mapping.extra_figures)
    for key, notebook in notebooks.items():
        for cell in (notebook.cells if notebook is not None else ()):
            if images(cell) and (key, cell.get("id")) not in mapped:
                found.append(f"cell {cell.get('id')} of {mapping.notebooks[key]} draws a figure that no deliverable "
                             f"(and no extra_figure) in {MAPPING.name} names")
    for (key, cell_id) in mapping.extra_figures:
        if notebooks.get(key) is not None and cell_id not in _cells(notebooks[key]):
            found.append(f"extra_figure {cell_id} is not in {mapping.notebooks[key]}")
    return found


def recorded_profile(notebook) -> str:
    """The profile a notebook ran in, from its printed 'profile: NAME' line; 'not run' if none."""
    for cell in notebook.cells:
        match = re.search(r"profile: (\w+)", printed_text(cell)) if cell.cell_type == "code" else None
        if match:
            return match.group(1)
    return "not run"


def shown_on(mapping: Mapping, notebooks: dict, key: str) -> str:
    """'DeepFloyd IF' or 'offline stand-in (...)' for the backend notebook, from its printed backend name."""
    if key != mapping.backend[0]:
        return "MNIST (as the course asks)"
    cell = _cells(notebooks[key]).get(mapping.backend[1]) if notebooks.get(key) is not None else None
    match = re.search(r"backend: (.+?), images", printed_text(cell)) if cell is not None else None
    if match is None:
        return "unknown (the backend cell printed no backend)"
    return "DeepFloyd IF" if "DeepFloyd" in match.group(1) else f"offline stand-in: {match.group(1)}"


def _export(stem: str, notebook, out_dir: Path) -> dict[str, list[str]]:
    """Write stem.html with its PNGs as files under figures/; return cell id -> the figure paths."""
    notebook = copy.deepcopy(notebook)
    paths = {}
    for cell in notebook.cells:
        for k, output in enumerate(o for o in cell.get("outputs", ()) if "image/png" in o.get("data", {})):
            name = f"figures/{stem}-{cell.get('id')}-{k}.png"
            (out_dir / name).write_bytes(base64.b64decode(output["data"]["image/png"]))
            output.setdefault("metadata", {})["filenames"] = {"image/png": name}
            paths.setdefault(cell.get("id"), []).append(name)
    body, _ = HTMLExporter(template_name="basic").from_notebook_node(notebook)
    (out_dir / f"{stem}.html").write_text(
        f"<!doctype html><meta charset=utf-8><title>{html.escape(stem)}</title>"
        f'<link rel=stylesheet href="style.css">{MATHJAX}<p><a href="index.html">&larr; all deliverables</a></p>{body}\n')
    return paths


MATHJAX = ("<script>window.MathJax = {tex: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']]}};</script>"
           '<script async src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>')
STYLE = """body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em; max-width: 1400px; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .4em; vertical-align: top; }
th { background: #f3f3f3; } td.id { white-space: nowrap; font-weight: bold; } td.shown { min-width: 10em; }
a:has(> pre) { text-decoration: none; color: inherit; }
td.figures img { max-width: 280px; max-height: 260px; margin: 2px; border: 1px solid #ddd; }
pre { white-space: pre; overflow-x: auto; font-size: 12px; margin: 0; max-width: 470px; }
td.measured { min-width: 24em; }
.missing { color: #b00; font-weight: bold; } .note { color: #666; font-size: 13px; }
.jp-Cell { margin: 1em 0; } .jp-InputArea pre { background: #f7f7f7; padding: .5em; max-width: none; }
.jp-OutputArea img { max-width: 100%; } .jp-InputPrompt, .jp-OutputPrompt { display: none; }
"""


def anchor(deliverable_id: str) -> str:
    """The row's HTML id: the deliverable's id with '-' for spaces ("B 1.2.3" -> "B-1.2.3")."""
    return html.escape(deliverable_id.replace(" ", "-"))


def _row(row: Deliverable, mapping: Mapping, notebooks: dict, figure_paths: dict) -> str:
    notebook = notebooks.get(row.notebook)
    stem = Path(mapping.notebooks[row.notebook]).stem
    if notebook is None:
        body = f'<td colspan=4 class=missing>{html.escape(mapping.notebooks[row.notebook])} is missing</td>'
        return f'<tr id="{anchor(row.id)}"><td class=id>{html.escape(row.id)}</td><td>{html.escape(row.title)}</td>{body}</tr>'
    cells = _cells(notebook)
    figures = []
    for cell_id in row.figures:
        links = [f'<a href="{stem}.html#cell-id={cell_id}"><img src="{p}" alt="{html.escape(row.id)}"></a>'
                 for p in figure_paths.get(row.notebook, {}).get(cell_id, [])]
        figures += links or [f'<span class=missing>no figure in cell {cell_id}</span>']
    measured = []
    for cell_id in row.figures + row.measured:
        cell = cells.get(cell_id)
        if cell is None:
            if cell_id in row.measured:
                measured.append(f'<span class=missing>cell {cell_id} is missing</span>')
        elif cell.cell_type == "markdown":
            measured.append(markdown2html(cell.source))
        elif text := printed_text(cell):
            measured.append(f'<a href="{stem}.html#cell-id={cell_id}"><pre>{html.escape(text)}</pre></a>')
        elif cell_id in row.measured:
            measured.append(f'<span class=missing>cell {cell_id} printed nothing</span>')
    note = f'<div class=note>{html.escape(row.note)}</div>' if row.note else ""
    return (f'<tr id="{anchor(row.id)}"><td class=id>{html.escape(row.id)}</td>'
            f'<td>{html.escape(row.title)}{note}<div class=note>notebook '
            f'<a href="{stem}.html">{html.escape(stem)}</a></div></td>'
            f'<td class=figures>{"".join(figures)}</td><td class=measured>{"".join(measured)}</td>'
            f'<td>{html.escape(recorded_profile(notebook))}</td>'
            f'<td class=shown>{html.escape(shown_on(mapping, notebooks, row.notebook))}</td></tr>')


def build(notebooks: dict, out_dir: Path, title: str, mapping: Mapping | None = None) -> list[str]:
    """Write the report for `notebooks` (key -> NotebookNode or None) into out_dir; return its problems."""
    mapping = mapping or load_mapping()
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir / "figures", ignore_errors=True)
    (out_dir / "figures").mkdir(parents=True)
    figure_paths = {key: _export(Path(mapping.notebooks[key]).stem, nb, out_dir)
                    for key, nb in notebooks.items() if nb is not None}
    (out_dir / "style.css").write_text(STYLE + HtmlFormatter().get_style_defs(".highlight"))
    found = problems(mapping, notebooks)
    issues = "".join(f"<li>{html.escape(p)}</li>" for p in found)
    rows = "\n".join(_row(row, mapping, notebooks, figure_paths) for row in mapping.deliverables)
    (out_dir / "index.html").write_text(
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
        f'<link rel=stylesheet href="style.css">{MATHJAX}<h1>{html.escape(title)}</h1>'
        f"<p>{len(mapping.deliverables)} deliverables of the course documents, in their numbering "
        f"(Part A / Part B: Fun With Diffusion Models; HW: the flow-matching homework). A figure links to its "
        f"cell in the notebook's page.</p>"
        + (f'<p class=missing>{len(found)} problems:</p><ul class=missing>{issues}</ul>' if found
           else "<p>Every deliverable has its output.</p>")
        + "<table><tr><th>id</th><th>deliverable</th><th>figures</th><th>measured</th><th>profile</th>"
          f"<th>shown on</th></tr>\n{rows}\n</table>\n")
    return found


def read_folder(folder: Path, mapping: Mapping | None = None) -> dict:
    """The mapping's notebooks found in `folder` (key -> NotebookNode, None for a missing file)."""
    mapping = mapping or load_mapping()
    folder = Path(folder)
    if not folder.is_dir():
        raise NotebookError(f"{folder} is not a folder: give the folder that holds the NN_name.ipynb notebooks.")
    return {key: read_notebook(folder / name) if (folder / name).exists() else None
            for key, name in mapping.notebooks.items()}
