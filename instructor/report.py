"""The instructor's report: one row per course deliverable, built from notebooks' stored outputs.

The rows come from `notebooks/deliverables.toml` (the course numbering, the notebook and the cell ids that
show each deliverable, and the `[[answer]]` tables of written answers). `build` writes into one folder:

    index.html      a table: id and title, the figures (each links to the notebook page at its cell), the
                    measured figures the notebook printed, the written answers to grade, the profile it ran in,
                    and where it is shown (DeepFloyd IF or the offline stand-in for notebook 04, MNIST for the
                    others)
    NN_name.html    each notebook as HTML, its images in figures/ (not inlined, so each is stored once)
    figures/        the PNG outputs, named <notebook>-<cell id>-<k>.png
    style.css

The files are written beside their targets and swapped in together when all are written
(`helpers.foundation.atomic.Batch`), so a full disk or an error leaves the previous report whole. `build` deletes
nothing: removing the files of an earlier report that this one no longer writes is the command's job, from the
manifest of what it wrote (`instructor.output_folder`); a figure of the user's in ``figures/`` is never touched.

Nothing is executed: the notebooks must already hold their outputs. Missing outputs (and written answers
still holding nbgrader's stub "YOUR ANSWER HERE") are shown in red in the table and returned by `build` as
problems, so a student's submission is graded the same way.

Written answers: each `[[answer]]` table (row, notebook, reference, cell, points, prompt) puts a "written
answer (to grade)" block in its row. It shows the notebook's cell `cell` when there is one (a student's
notebooks, made from the student edition), else the instructor's `reference` cell (the course's own notebooks).

No submission's markup runs in a page the report writes. Two walls:

1. Sanitising with nh3 (Rust's ammonia: an html5ever parser and an allowlist of tags, attributes, URL schemes
   and style properties). Every page's whole body goes through `clean_html` as the last step before it is
   written, so no route into a page (a markdown cell, a text/html or text/markdown output, a raw cell, an
   attachment, a cell tag or id, a written answer, a title) can skip it. Each submitted fragment is also
   cleaned on its own first (nbconvert's `sanitize_html` switch with its `clean_html` filter replaced by
   ours, and the index's markdown), so an unclosed tag cannot break the table around it. `data:` URLs are
   kept only in `<img src>` and only for images, where even an SVG cannot run script. Before nbconvert sees
   a notebook, its outputs are reduced to static types (text/html, text/markdown, text/latex, SVG, PNG,
   JPEG, text): application/javascript is dropped, a widget view becomes a one-line note and the widget
   state in the notebook's metadata is dropped, so no widget code from a submission is ever loaded; an
   "isolated" text/html output is shown inline (sanitised) instead of in an iframe.
   Why not nbconvert's own sanitising alone: its `sanitize_html` uses bleach (deprecated upstream) and leaves
   application/javascript outputs and widget views as <script> elements, and its markdown renderer keeps
   javascript: links; the SanitizeHTML preprocessor cleans markdown *source* before it is converted, so what
   the converter then produces (attachment data: URLs, links) is not what was checked; it also drops SVG
   outputs, keeps the widget state, and escapes `<` in math such as $a<b$. Cleaning the final
   HTML is the one place where what is checked is what the browser gets.
2. A Content-Security-Policy meta tag on every page (`CSP`): scripts only from the hash of the page's own
   inline MathJax configuration and from MathJax's folder on its CDN. MathJax typesets the math (the report's
   look) and loads its own extensions from that folder at run time, so a list of hashes alone cannot name
   them; 'strict-dynamic' could, but would trust whatever MathJax is led to load, where the folder keeps
   every load inside MathJax's files. TeX's \\require is switched off, so a submission's math loads nothing
   that MathJax would not load for the course's own. No inline script, no event handler, no javascript: URL,
   no plugin, frame, form or <base>; images only from the report's folder, data: and the Colab badge; styles
   only from style.css and inline (MathJax writes its own).
Tests: tests/test_report_safety.py opens every page in headless Chromium with payloads in each route, with both
walls and with each one alone.
"""
import base64
import copy
import hashlib
import html
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
import nh3
import tomllib
from nbconvert import HTMLExporter
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
from pygments.formatters import HtmlFormatter

from helpers.foundation.atomic import Batch

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
class Answer:
    """A written answer to grade: an `[[answer]]` table of the deliverables file."""
    row: str            # the deliverable id whose row shows it
    notebook: str       # the notebook's key ("01")
    reference: str      # id of the instructor's markdown cell with the reference answer
    cell: str           # id of the student's answer cell in the student edition
    points: float
    prompt: str


@dataclass(frozen=True)
class Mapping:
    notebooks: dict[str, str]          # key ("04") -> file name
    backend: tuple[str, str]           # (notebook key, cell id) whose output names notebook 04's backend
    deliverables: tuple[Deliverable, ...]
    extra_figures: dict[tuple[str, str], str]   # (notebook key, cell id) -> why it is not a deliverable
    answers: tuple[Answer, ...] = ()


def load_mapping(path: Path = MAPPING) -> Mapping:
    """Read the deliverables file; a missing field or unknown notebook key or row is one NotebookError."""
    try:
        raw = tomllib.loads(Path(path).read_text())
        notebooks = dict(raw["notebooks"])
        rows = tuple(Deliverable(r["id"], r["title"], r["notebook"], tuple(r.get("figures", ())),
                                 tuple(r.get("measured", ())), r.get("note", "")) for r in raw["deliverable"])
        extra = {(e["notebook"], e["cell"]): e["reason"] for e in raw.get("extra_figure", ())}
        backend = (raw["backend"]["notebook"], raw["backend"]["cell"])
        answers = tuple(Answer(str(a["row"]), str(a["notebook"]), str(a["reference"]), str(a["cell"]),
                               a["points"], str(a["prompt"])) for a in raw.get("answer", ()))
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as err:
        raise NotebookError(f"{path} is not a valid deliverables file ({type(err).__name__}: {err}).") from None
    for key in [r.notebook for r in rows] + [k for k, _ in extra] + [backend[0]] + [a.notebook for a in answers]:
        if key not in notebooks:
            raise NotebookError(f"{path} names notebook {key!r}, which is not in its [notebooks] table.")
    ids = [r.id for r in rows]
    if len(set(ids)) != len(ids):
        raise NotebookError(f"{path} lists a deliverable id twice: {sorted({i for i in ids if ids.count(i) > 1})}.")
    for answer in answers:
        if answer.row not in ids:
            raise NotebookError(f"{path} has an [[answer]] for row {answer.row!r}, which is no deliverable id: "
                                "give the id of a [[deliverable]] table.")
        if isinstance(answer.points, bool) or not isinstance(answer.points, int | float) or answer.points <= 0:
            raise NotebookError(f"{path} gives the [[answer]] of row {answer.row!r} points = {answer.points!r}: "
                                "give a positive number.")
    return Mapping(notebooks, backend, rows, extra, answers)


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
        replaced = replaced_references(mapping, row.notebook, notebook)
        for cell_id in row.measured:
            cell = cells.get(cell_id)
            if cell is None and cell_id in replaced:
                continue            # the student edition put an answer cell in its place: see the answers below
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
    for answer in mapping.answers:
        if notebooks.get(answer.notebook) is not None:
            written = written_answer(answer, notebooks[answer.notebook], mapping.notebooks[answer.notebook])
            if written.missing:
                found.append(f"{answer.row}: written answer missing: {written.missing}")
    return found


def replaced_references(mapping: Mapping, key: str, notebook) -> set[str]:
    """Reference-answer cells of notebook `key` that the student edition replaced by their answer cells
    (the answer cell is there and the reference is not): a row shows the answer in their place."""
    cells = _cells(notebook)
    return {a.reference for a in mapping.answers
            if a.notebook == key and a.cell in cells and a.reference not in cells}


STUB = "YOUR ANSWER HERE"      # nbgrader's text_stub: what ClearSolutions leaves in a markdown answer cell
SOLUTION_MARKERS = {"### BEGIN SOLUTION", "### END SOLUTION"}


@dataclass(frozen=True)
class WrittenAnswer:
    """What a report shows for one [[answer]]: the markdown text and where it came from, or why it is missing."""
    text: str           # the answer's markdown ('' when missing)
    cell: str           # the id of the cell it came from
    student: bool       # True: the student's answer cell; False: the instructor's reference cell
    missing: str        # '' or one sentence: why there is no answer to grade


def written_answer(answer: Answer, notebook, name: str) -> WrittenAnswer:
    """The answer in `notebook` (file `name`): its `cell` when present, else the `reference` cell.

    A student's answer cell that still holds nbgrader's stub text, or nothing, is missing; the reference
    cell is shown without nbgrader's BEGIN / END SOLUTION lines.
    """
    cells = _cells(notebook)
    if answer.cell in cells:
        text = cells[answer.cell].source
        if STUB in text:
            return WrittenAnswer("", answer.cell, True,
                                 f'cell {answer.cell} of {name} still holds nbgrader\'s stub text "{STUB}"')
        if not text.strip():
            return WrittenAnswer("", answer.cell, True, f"cell {answer.cell} of {name} is empty")
        return WrittenAnswer(text, answer.cell, True, "")
    if answer.reference in cells:
        text = "\n".join(line for line in cells[answer.reference].source.splitlines()
                         if line.strip() not in SOLUTION_MARKERS).strip()
        missing = "" if text else f"the reference cell {answer.reference} of {name} is empty"
        return WrittenAnswer(text, answer.reference, False, missing)
    return WrittenAnswer("", answer.cell, True, f"{name} has neither the answer cell {answer.cell} "
                                               f"nor the reference cell {answer.reference}")


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


# ------------------------------------------------------------ sanitising, and the pages' security policy
TAGS = nh3.ALLOWED_TAGS | {"tfoot"}
ATTRIBUTES = {tag: set(names) for tag, names in nh3.ALLOWED_ATTRIBUTES.items()} | {
    "*": {"class", "id", "title", "lang", "dir", "style"}}
STYLE_PROPERTIES = {               # what inline styles may set (ansi2html's colours, a student's emphasis)
    "color", "background-color", "font-weight", "font-style", "font-size", "font-family", "text-align",
    "text-decoration", "vertical-align", "white-space", "width", "height", "max-width", "max-height",
    "margin", "margin-top", "margin-bottom", "margin-left", "margin-right", "padding", "padding-top",
    "padding-bottom", "padding-left", "padding-right", "border", "border-collapse", "border-spacing"}
URL_ATTRIBUTES = {"href", "src", "cite", "longdesc"}
DATA_IMAGE = re.compile(r"data:image/(?:png|jpeg|gif|webp|svg\+xml);base64,[A-Za-z0-9+/=\s]*", re.IGNORECASE)
SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def _attribute(tag: str, name: str, value: str) -> str | None:
    """nh3's attribute filter: a data: URL stays only as an image's src, and only for image types."""
    if name not in URL_ATTRIBUTES:
        return value
    url = re.sub(r"[\t\n\r]", "", value).lstrip("".join(map(chr, range(33))))   # as a browser reads it
    scheme = SCHEME.match(url)
    if scheme is None or scheme.group(1).lower() != "data":
        return value
    return url if tag == "img" and name == "src" and DATA_IMAGE.fullmatch(url) else None


CLEANER = nh3.Cleaner(tags=TAGS, attributes=ATTRIBUTES, attribute_filter=_attribute, link_rel=None,
                      url_schemes={"http", "https", "mailto", "data"}, filter_style_properties=STYLE_PROPERTIES,
                      strip_comments=True)


def clean_html(fragment) -> str:
    """`fragment` (HTML from a notebook or a submission) with everything that could run removed (nh3)."""
    return CLEANER.clean(fragment.decode() if isinstance(fragment, bytes) else str(fragment))


def markdown_html(source: str, attachments=None) -> str:
    """A markdown text as sanitised HTML: math left for MathJax, `attachment:` images as data: URLs."""
    renderer = IPythonRenderer(escape=False, attachments=dict(attachments or {}))
    return clean_html(MarkdownWithMath(renderer=renderer).render(source))


def _csp_hash(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


MATHJAX_PATH = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/"
MATHJAX_CONFIG = ("window.MathJax = {tex: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']], "
                  "packages: {'[-]': ['require']}}};")
MATHJAX = f'<script>{MATHJAX_CONFIG}</script><script async src="{MATHJAX_PATH}tex-chtml.js"></script>'
CSP = (f"default-src 'none'; script-src {_csp_hash(MATHJAX_CONFIG)} {MATHJAX_PATH}; font-src {MATHJAX_PATH}; "
       "style-src 'self' 'unsafe-inline'; img-src 'self' data: https://colab.research.google.com/assets/; "
       "base-uri 'none'; form-action 'none'")


def page(title: str, body: str) -> str:
    """A whole page of the report: the security policy first, then title, style and MathJax, then `body`
    sanitised as a whole (the last wall: whatever reached `body`, nothing in it runs)."""
    return (f'<!doctype html><meta charset=utf-8><meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<title>{html.escape(title)}</title><link rel=stylesheet href="style.css">{MATHJAX}'
            f"{clean_html(body)}\n")


# ------------------------------------------------------------------------------------------- notebook pages
STATIC_TYPES = ("text/html", "text/markdown", "text/latex", "image/svg+xml", "image/png", "image/jpeg",
                "text/plain")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = "(an interactive widget: the report shows none; run the notebook to use it)"


def static_copy(notebook) -> nbformat.NotebookNode:
    """A copy of `notebook` whose outputs hold only static types (STATIC_TYPES): a widget view becomes
    WIDGET_NOTE, application/javascript and other types a one-line note; the widget state is dropped."""
    notebook = copy.deepcopy(notebook)
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        for output in cell.get("outputs", ()):
            data = output.get("data")
            if not data:
                continue
            kept = {kind: value for kind, value in data.items() if kind in STATIC_TYPES}
            if WIDGET_VIEW in data:
                kept = {"text/plain": WIDGET_NOTE}
            elif not kept:
                kept = {"text/plain": f"(an output of type {', '.join(sorted(data))}: the report shows none)"}
            output["data"] = nbformat.from_dict(kept)
            html_metadata = output.get("metadata", {}).get("text/html")
            if isinstance(html_metadata, dict):
                html_metadata.pop("isolated", None)    # shown inline, sanitised, rather than in an iframe
    return notebook


def _exporter() -> HTMLExporter:
    """nbconvert's basic HTML with its sanitising switch on and its bleach filter replaced by nh3."""
    return HTMLExporter(template_name="basic", sanitize_html=True, skip_svg_encoding=False,
                        embed_images=False, filters={"clean_html": clean_html})


def _figure_name(stem: str, cell, index: int, k: int) -> str:
    cell_id = cell.get("id")
    safe = cell_id if isinstance(cell_id, str) and re.fullmatch(r"[A-Za-z0-9_-]+", cell_id) else f"cell{index}"
    return f"figures/{stem}-{safe}-{k}.png"


def _export(stem: str, notebook, out_dir: Path, batch: Batch) -> dict[str, list[str]]:
    """Write stem.html with its PNGs as files under figures/ (into `batch`); return cell id -> the figure paths."""
    notebook = static_copy(notebook)
    paths = {}
    for index, cell in enumerate(notebook.cells):
        for k, output in enumerate(o for o in cell.get("outputs", ()) if "image/png" in o.get("data", {})):
            name = _figure_name(stem, cell, index, k)
            batch.write_bytes(out_dir / name, base64.b64decode(output["data"]["image/png"]))
            output.setdefault("metadata", {})["filenames"] = {"image/png": name}
            paths.setdefault(cell.get("id"), []).append(name)
    body, _ = _exporter().from_notebook_node(notebook)
    batch.write_text(out_dir / f"{stem}.html",
                     page(stem, f'<p><a href="index.html">&larr; all deliverables</a></p>{body}'))
    return paths


STYLE = """body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em; max-width: 1400px; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .4em; vertical-align: top; }
th { background: #f3f3f3; } td.id { white-space: nowrap; font-weight: bold; } td.shown { min-width: 10em; }
a:has(> pre) { text-decoration: none; color: inherit; }
td.figures img { max-width: 280px; max-height: 260px; margin: 2px; border: 1px solid #ddd; }
pre { white-space: pre; overflow-x: auto; font-size: 12px; margin: 0; max-width: 470px; }
td.measured { min-width: 24em; }
.missing { color: #b00; font-weight: bold; } .note { color: #666; font-size: 13px; }
.answer { margin: .4em 0; padding: .2em .5em; border-left: 3px solid #c90; background: #fffaf0; }
.jp-Cell { margin: 1em 0; } .jp-InputArea pre { background: #f7f7f7; padding: .5em; max-width: none; }
.jp-OutputArea img { max-width: 100%; } .jp-InputPrompt, .jp-OutputPrompt { display: none; }
"""


def anchor(deliverable_id: str) -> str:
    """The row's HTML id: the deliverable's id with '-' for spaces ("B 1.2.3" -> "B-1.2.3")."""
    return html.escape(deliverable_id.replace(" ", "-"))


def _answer_block(answer: Answer, mapping: Mapping, notebooks: dict, shown: tuple[str, ...] = ()) -> str:
    """The row's "written answer (to grade)" block: the answer's text, sanitised, or why it is missing.

    A reference cell that the row already shows as measured (its cell ids `shown`) is linked, not repeated.
    """
    points = f"{answer.points:g} point{'' if answer.points == 1 else 's'}"
    head = f"<div class=note>written answer (to grade, {points}): {html.escape(answer.prompt)}</div>"
    name = mapping.notebooks[answer.notebook]
    notebook = notebooks.get(answer.notebook)
    written = (written_answer(answer, notebook, name) if notebook is not None
               else WrittenAnswer("", answer.cell, True, f"{name} is missing"))
    if written.missing:
        return f"<div class=answer>{head}<span class=missing>missing: {html.escape(written.missing)}</span></div>"
    whose = "the student's answer" if written.student else "the reference answer"
    repeated = not written.student and written.cell in shown
    link = (f'<div class=note><a href="{Path(name).stem}.html#cell-id={html.escape(written.cell)}">{whose}, '
            f"cell {html.escape(written.cell)}</a>{' (its text is shown above)' if repeated else ''}</div>")
    attachments = _cells(notebook)[written.cell].get("attachments")
    text = "" if repeated else markdown_html(written.text, attachments)
    return f"<div class=answer>{head}{link}{text}</div>"


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
    replaced = replaced_references(mapping, row.notebook, notebook)
    for cell_id in row.figures + row.measured:
        cell = cells.get(cell_id)
        if cell is None:
            if cell_id in row.measured and cell_id not in replaced:
                measured.append(f'<span class=missing>cell {cell_id} is missing</span>')
        elif cell.cell_type == "markdown":
            measured.append(markdown_html(cell.source, cell.get("attachments")))
        elif text := printed_text(cell):
            measured.append(f'<a href="{stem}.html#cell-id={cell_id}"><pre>{html.escape(text)}</pre></a>')
        elif cell_id in row.measured:
            measured.append(f'<span class=missing>cell {cell_id} printed nothing</span>')
    measured += [_answer_block(answer, mapping, notebooks, row.measured if answer.notebook == row.notebook else ())
                 for answer in mapping.answers if answer.row == row.id]
    note = f'<div class=note>{html.escape(row.note)}</div>' if row.note else ""
    return (f'<tr id="{anchor(row.id)}"><td class=id>{html.escape(row.id)}</td>'
            f'<td>{html.escape(row.title)}{note}<div class=note>notebook '
            f'<a href="{stem}.html">{html.escape(stem)}</a></div></td>'
            f'<td class=figures>{"".join(figures)}</td><td class=measured>{"".join(measured)}</td>'
            f'<td>{html.escape(recorded_profile(notebook))}</td>'
            f'<td class=shown>{html.escape(shown_on(mapping, notebooks, row.notebook))}</td></tr>')


def build(notebooks: dict, out_dir: Path, title: str, mapping: Mapping | None = None,
          batch: Batch | None = None) -> list[str]:
    """Write the report for `notebooks` (key -> NotebookNode or None) into out_dir; return its problems.

    The files go into `batch` when one is given (the caller swaps them in, e.g. with its manifest), else into a
    batch of their own, swapped in when all are written, index.html last. Nothing is deleted."""
    if batch is None:
        with Batch() as batch:
            return build(notebooks, out_dir, title, mapping, batch)
    mapping = mapping or load_mapping()
    out_dir = Path(out_dir)
    figure_paths = {key: _export(Path(mapping.notebooks[key]).stem, nb, out_dir, batch)
                    for key, nb in notebooks.items() if nb is not None}
    batch.write_text(out_dir / "style.css", STYLE + HtmlFormatter().get_style_defs(".highlight"))
    found = problems(mapping, notebooks)
    issues = "".join(f"<li>{html.escape(p)}</li>" for p in found)
    rows = "\n".join(_row(row, mapping, notebooks, figure_paths) for row in mapping.deliverables)
    answers = (f" {len(mapping.answers)} written answers to grade are shown in their rows."
               if mapping.answers else "")
    batch.write_text(out_dir / "index.html", page(title,
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{len(mapping.deliverables)} deliverables of the course documents, in their numbering "
        f"(Part A / Part B: Fun With Diffusion Models; HW: the flow-matching homework). A figure links to its "
        f"cell in the notebook's page.{answers}</p>"
        + (f'<p class=missing>{len(found)} problems:</p><ul class=missing>{issues}</ul>' if found
           else "<p>Every deliverable has its output.</p>")
        + "<table><tr><th>id</th><th>deliverable</th><th>figures</th><th>measured</th><th>profile</th>"
          f"<th>shown on</th></tr>\n{rows}\n</table>\n"))
    return found


def read_folder(folder: Path, mapping: Mapping | None = None) -> dict:
    """The mapping's notebooks found in `folder` (key -> NotebookNode, None for a missing file)."""
    mapping = mapping or load_mapping()
    folder = Path(folder)
    if not folder.is_dir():
        raise NotebookError(f"{folder} is not a folder: give the folder that holds the NN_name.ipynb notebooks.")
    return {key: read_notebook(folder / name) if (folder / name).exists() else None
            for key, name in mapping.notebooks.items()}
