"""The instructor's report: one row per course deliverable, built from notebooks' stored outputs.

The rows come from `notebooks/deliverables.toml` (the course numbering, the notebook and the cell ids that
show each deliverable, and the `[[answer]]` tables of written answers). `build` writes into one folder:

    index.html      a table: id and title (with the notebook and what it is shown on), the figures and, below
                    them, the measured figures the notebook printed and the written answers to grade, and the
                    profile it ran in; a figure opens at full size when clicked (a plain link to its PNG) and
                    names the notebook cell it comes from; the red list of problems links each to its row
    NN_name.html    each notebook as HTML, its images in figures/ (not inlined, so each is stored once)
    figures/        the PNG outputs, named <notebook>-<cell id>-<k>.png
    style.css       printed text and code wrap instead of scrolling, and figures fit the page, so no page
                    scrolls sideways at 1400 px (tests/test_report_layout.py checks this in Chromium)
    mathjax/, mathjax-config.js
                    only when a page holds math: MathJax 2.7 from the jupyter-server-mathjax package (its
                    files for TeX input and HTML-CSS output with the STIX-Web fonts, `MATHJAX_FILES`) and the
                    report's configuration of it, so math is typeset offline; a report without math has
                    no script at all

The files are written beside their targets and swapped in together when all are written
(`helpers.foundation.atomic.Batch`), so a full disk or an error leaves the previous report whole. `build` deletes
nothing: removing the files of an earlier report that this one no longer writes is the command's job, from the
manifest of what it wrote (`instructor.output_folder`); a figure of the user's in ``figures/`` is never touched.

Nothing is executed: the notebooks must already hold their outputs. Missing outputs (and written answers
still holding nbgrader's stub "YOUR ANSWER HERE") are shown in red in the table and returned by `build` as
problems, so a student's submission is graded the same way. A cell that a row names both for its figure and
for its printed text shows its text once.

An interactive widget (the notebooks' slider explorers) is shown as the notebook saved it: the widget state in
the notebook's metadata holds each slider's setting, each label's text and each picture's PNG, and the page
shows those as text and a figure (`widget_outputs`); no widget code runs.

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
   JPEG, text): application/javascript is dropped, a widget view becomes its static picture and text (or a
   one-line note) and the widget state in the notebook's metadata is dropped, so no widget code from a
   submission is ever loaded; an "isolated" text/html output is shown inline (sanitised) instead of in an
   iframe. An image from the web (the Colab badge) is shown as its alt text: the report loads nothing from
   outside its folder.
   Why not nbconvert's own sanitising alone: its `sanitize_html` uses bleach (deprecated upstream) and leaves
   application/javascript outputs and widget views as <script> elements, and its markdown renderer keeps
   javascript: links; the SanitizeHTML preprocessor cleans markdown *source* before it is converted, so what
   the converter then produces (attachment data: URLs, links) is not what was checked; it also drops SVG
   outputs, keeps the widget state, and escapes `<` in math such as $a<b$. Cleaning the final
   HTML is the one place where what is checked is what the browser gets.
2. A Content-Security-Policy meta tag on every page (`CSP`): scripts only from files of the report's own folder
   ('self': MathJax and its configuration, which MathJax extends at run time by loading its own files from
   there; no inline script at all), fonts from there too, images only from there and data:. No inline
   script, no event handler, no javascript: URL, no plugin, frame, form or <base>; styles only from style.css
   and inline (MathJax writes its own). MathJax runs with its Safe extension (TeX's \\href, \\style,
   \\class and \\require limited to http(s) links, harmless styles and the safe extensions), so a submission's
   math loads and runs nothing that MathJax would not for the course's own.
Tests: tests/test_report_safety.py opens every page in headless Chromium with payloads in each route, with both
walls and with each one alone; tests/test_report_layout.py checks the layout, the math and the widgets there.
"""
import base64
import copy
import html
import importlib.util
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


REMOTE_IMAGE = re.compile(r'<img\b[^>]*\bsrc="(?:https?:)?//[^>]*>', re.IGNORECASE)
ALT = re.compile(r'\balt="([^"]*)"')


def _offline_images(fragment: str) -> str:
    """`fragment` (cleaned HTML) with each image from the web replaced by its alt text: the report is read
    offline and loads nothing from outside its folder (the notebooks' Colab badge becomes "Open In Colab")."""
    def text(match) -> str:
        alt = ALT.search(match.group(0))
        return f"<span class=remote-image>{html.escape(html.unescape(alt.group(1)) if alt else 'image')}</span>"
    return REMOTE_IMAGE.sub(text, fragment)


# ------------------------------------------------------------------ math: a local MathJax, only where needed
MATHJAX_PACKAGE = "jupyter_server_mathjax"   # the Jupyter project's MathJax 2.7 files (nbclassic's, nbdime's)
MATHJAX_FILES = (                            # what TeX input with HTML-CSS output and STIX-Web fonts can load
    "LICENSE", "MathJax.js", "config/TeX-AMS-MML_HTMLorMML-full.js", "config/Safe.js",
    "extensions/*.js", "extensions/TeX/**/*.js", "extensions/HTML-CSS/*.js", "extensions/a11y/accessibility-menu.js",
    "jax/element/mml/optable/*.js", "jax/output/HTML-CSS/autoload/*.js", "jax/output/HTML-CSS/fonts/STIX-Web/**/*.js",
    "fonts/HTML-CSS/STIX-Web/woff/*.woff")
MATHJAX_CONFIG = """window.MathJax = {
  config: ["TeX-AMS-MML_HTMLorMML-full.js", "Safe.js"],
  tex2jax: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], processEscapes: true},
  MMLorHTML: {prefer: "HTML"},
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null,
               linebreaks: {automatic: true, width: "container"},
               // its blank font is url('about:blank'), which the page's policy refuses: a local() name loads nothing
               styles: {"@font-face": {"font-family": "MathJax_Blank", src: "local('MathJax_Blank')"}}},
  Safe: {safeProtocols: {http: true, https: true, file: false, javascript: false}},
  showMathMenu: false, showMathMenuMSIE: false, messageStyle: "none", menuSettings: {zoom: "None"}
};
"""
MATHJAX = '<script src="mathjax-config.js"></script><script src="mathjax/MathJax.js"></script>'
MATH = re.compile(r"\$|\\\(|\\\[|\\begin\{")     # what MathJax's tex2jax looks for (and a lone $, to be safe)


class MathJaxMissing(NotebookError):
    """The package that ships MathJax is not installed."""


def mathjax_folder() -> Path:
    """Where the installed jupyter-server-mathjax keeps MathJax (found without importing the server extension)."""
    spec = importlib.util.find_spec(MATHJAX_PACKAGE)
    folder = Path(spec.submodule_search_locations[0]) / "static" if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / "MathJax.js").is_file():
        raise MathJaxMissing(f"the report typesets math with MathJax from the {MATHJAX_PACKAGE.replace('_', '-')} "
                             "package, which is not installed: run `make setup` (environment.yml lists it) or "
                             f"`pip install {MATHJAX_PACKAGE.replace('_', '-')}`.")
    return folder


def mathjax_files() -> list[tuple[str, Path]]:
    """(path inside the report's mathjax/ folder, installed file) for every file of `MATHJAX_FILES`."""
    folder = mathjax_folder()
    found = {path.relative_to(folder).as_posix(): path for pattern in MATHJAX_FILES for path in folder.glob(pattern)
             if path.is_file()}
    return sorted(found.items())


def _copy_mathjax(out_dir: Path, batch: Batch) -> None:
    batch.write_text(out_dir / "mathjax-config.js", MATHJAX_CONFIG)
    for name, source in mathjax_files():
        batch.write_bytes(out_dir / "mathjax" / name, source.read_bytes())


CSP = ("default-src 'none'; script-src 'self'; font-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; base-uri 'none'; form-action 'none'")


def page(title: str, body: str) -> str:
    """A whole page of the report: the security policy first, then title and style, MathJax's two script
    files when the page holds math, then `body` sanitised as a whole (the last wall: whatever reached `body`,
    nothing in it runs) with its images from the web shown as their alt text."""
    body = clean_html(_offline_images(clean_html(body)))
    return (f'<!doctype html><meta charset=utf-8><meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name=viewport content="width=device-width, initial-scale=1">'
            f'<title>{html.escape(title)}</title><link rel=stylesheet href="style.css">'
            f'{MATHJAX if MATH.search(body) else ""}{body}\n')


def uses_math(page_html: str) -> bool:
    """Whether a page written by `page` loads MathJax (so the report must hold its files)."""
    return MATHJAX in page_html


# ------------------------------------------------------------------------------------------- notebook pages
STATIC_TYPES = ("text/html", "text/markdown", "text/latex", "image/svg+xml", "image/png", "image/jpeg",
                "text/plain")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = "(an interactive widget: the report shows none; run the notebook to use it)"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_SAVED = "(an interactive widget, shown as the notebook saved it: run the notebook to move it)"
BOXES = {"VBoxModel", "HBoxModel", "BoxModel", "GridBoxModel"}
SLIDERS = {"IntSliderModel", "FloatSliderModel", "FloatLogSliderModel", "SelectionSliderModel",
           "IntRangeSliderModel", "FloatRangeSliderModel", "SelectionRangeSliderModel"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WIDGET_PNG_BYTES = 20_000_000      # a larger "picture" in a widget state is not shown


def widget_models(notebook) -> dict:
    """The saved widget models of `notebook` (model id -> model), {} when it saved none."""
    saved = notebook.metadata.get("widgets", {})
    state = saved.get(WIDGET_STATE) if isinstance(saved, dict) else None
    models = state.get("state") if isinstance(state, dict) else None
    return models if isinstance(models, dict) else {}


def _slider_text(name: str, state: dict) -> str:
    description = str(state.get("description") or "value")
    if name.startswith("Selection"):
        labels = [str(label) for label in state.get("_options_labels") or ()]
        index = state.get("index")
        indices = index if isinstance(index, list) else [index]
        shown = ", ".join(labels[i] for i in indices if isinstance(i, int) and 0 <= i < len(labels)) or "?"
        return f"{description} = {shown} (a slider over {', '.join(labels)})"
    value = state.get("value")
    shown = " to ".join(map(str, value)) if isinstance(value, list) else str(value)
    step = f", step {state['step']}" if state.get("step") is not None else ""
    return f"{description} = {shown} (a slider from {state.get('min')} to {state.get('max')}{step})"


def _widget_png(model: dict) -> str | None:
    """The base64 PNG an ImageModel saved as its `value` buffer, if it is one (checked by its signature)."""
    for buffer in model.get("buffers") or ():
        if isinstance(buffer, dict) and buffer.get("path") == ["value"] and isinstance(buffer.get("data"), str) \
                and buffer.get("encoding", "base64") == "base64" and len(buffer["data"]) < WIDGET_PNG_BYTES * 4 // 3:
            try:
                data = base64.b64decode(buffer["data"], validate=True)
            except ValueError:
                return None
            return buffer["data"] if data.startswith(PNG_SIGNATURE) else None
    return None


def widget_outputs(view: dict, models: dict) -> list:
    """A widget view as static outputs, from the notebook's saved widget state (`widget_models`): its sliders'
    settings and labels' text as plain text, each picture (an ImageModel's PNG) as an image, in the widget's
    order, with a last line saying it is the saved view; [] when the state holds none of these. Only data is
    read (text, and PNG bytes checked by their signature); other widgets, HTML and code are left out."""
    outputs, lines, seen = [], [], set()

    def flush():
        if lines:
            outputs.append(nbformat.v4.new_output("display_data", data={"text/plain": "\n".join(lines)}))
            lines.clear()

    def visit(model_id, depth: int) -> None:
        model = models.get(model_id) if isinstance(model_id, str) and model_id not in seen and depth < 20 else None
        if not isinstance(model, dict) or not isinstance(model.get("state"), dict):
            return
        seen.add(model_id)
        name, state = model.get("model_name"), model["state"]
        if name in BOXES:
            for child in state.get("children") or ():
                visit(child.removeprefix("IPY_MODEL_") if isinstance(child, str) else None, depth + 1)
        elif name in SLIDERS:
            lines.append(_slider_text(name, state))
        elif name == "LabelModel" and str(state.get("value") or "").strip():
            lines.append(str(state["value"]))
        elif name == "ImageModel" and state.get("format", "png") == "png" and (png := _widget_png(model)):
            flush()
            outputs.append(nbformat.v4.new_output("display_data", data={"image/png": png}))

    visit(view.get("model_id") if isinstance(view, dict) else None, 0)
    if not outputs and not lines:
        return []
    lines.append(WIDGET_SAVED)
    flush()
    return outputs


def static_copy(notebook) -> nbformat.NotebookNode:
    """A copy of `notebook` whose outputs hold only static types (STATIC_TYPES): a widget view becomes its saved
    picture and text (`widget_outputs`) or, when the state holds none, WIDGET_NOTE; application/javascript and
    other types a one-line note; the widget state is dropped."""
    notebook = copy.deepcopy(notebook)
    models = widget_models(notebook)
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        outputs = []
        for output in cell.get("outputs", ()):
            data = output.get("data")
            if not data:
                outputs.append(output)
                continue
            kept = {kind: value for kind, value in data.items() if kind in STATIC_TYPES}
            if WIDGET_VIEW in data:
                shown = widget_outputs(data[WIDGET_VIEW], models)
                if shown:
                    outputs += shown
                    continue
                kept = {"text/plain": WIDGET_NOTE}
            elif not kept:
                kept = {"text/plain": f"(an output of type {', '.join(sorted(data))}: the report shows none)"}
            output["data"] = nbformat.from_dict(kept)
            html_metadata = output.get("metadata", {}).get("text/html")
            if isinstance(html_metadata, dict):
                html_metadata.pop("isolated", None)    # shown inline, sanitised, rather than in an iframe
            outputs.append(output)
        if "outputs" in cell:
            cell.outputs = outputs
    return notebook


def _exporter() -> HTMLExporter:
    """nbconvert's basic HTML with its sanitising switch on and its bleach filter replaced by nh3."""
    return HTMLExporter(template_name="basic", sanitize_html=True, skip_svg_encoding=False,
                        embed_images=False, filters={"clean_html": clean_html})


def _figure_name(stem: str, cell, index: int, k: int) -> str:
    cell_id = cell.get("id")
    safe = cell_id if isinstance(cell_id, str) and re.fullmatch(r"[A-Za-z0-9_-]+", cell_id) else f"cell{index}"
    return f"figures/{stem}-{safe}-{k}.png"


@dataclass(frozen=True)
class Figure:
    """A PNG the report wrote: its path in the report folder and its size in pixels."""
    path: str
    width: int
    height: int


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG from its header; (0, 0) for bytes that are not a PNG."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        return 0, 0
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _export(stem: str, notebook, out_dir: Path, batch: Batch) -> tuple[dict[str, list[Figure]], bool]:
    """Write stem.html with its PNGs as files under figures/ (into `batch`); return cell id -> its figures, and
    whether the page holds math."""
    notebook = static_copy(notebook)
    figures = {}
    for index, cell in enumerate(notebook.cells):
        for k, output in enumerate(o for o in cell.get("outputs", ()) if "image/png" in o.get("data", {})):
            name = _figure_name(stem, cell, index, k)
            data = base64.b64decode(output["data"]["image/png"])
            batch.write_bytes(out_dir / name, data)
            output.setdefault("metadata", {})["filenames"] = {"image/png": name}
            figures.setdefault(cell.get("id"), []).append(Figure(name, *png_size(data)))
    body, _ = _exporter().from_notebook_node(notebook)
    text = page(stem, f'<p><a href="index.html">&larr; all deliverables</a></p>{body}')
    batch.write_text(out_dir / f"{stem}.html", text)
    return figures, uses_math(text)


STYLE = """/* The report's pages at any width from about 900 px: text wraps, figures fit, nothing scrolls sideways. */
body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5em; max-width: 1400px; color: #222; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 12.5px; line-height: 1.35; margin: 0; }
img { max-width: 100%; height: auto; }
a:has(> pre) { text-decoration: none; color: inherit; }
.missing { color: #b00; font-weight: bold; } .missing a { color: inherit; }
.note { color: #666; font-size: 13px; }
.remote-image { font-size: 13px; border: 1px solid #bbb; border-radius: 3px; padding: 0 .3em; }
.answer { margin: .5em 0; padding: .2em .5em; border-left: 3px solid #c90; background: #fffaf0; }
.MJX_Assistive_MathML * { font-family: inherit !important; }   /* MathJax's hidden MathML needs no TeX fonts */

/* index.html: one row per deliverable; the output column takes the width the figures need */
table.deliverables { border-collapse: collapse; table-layout: fixed; width: 100%; }
td, th { border: 1px solid #ccc; padding: .4em; vertical-align: top; text-align: left; overflow-wrap: anywhere; }
th { background: #f3f3f3; position: sticky; top: 0; z-index: 1; }
th.id { width: 5.5em; } th.what { width: 15em; } th.profile { width: 4.5em; }
td.id { font-weight: bold; }
tr:target td { background: #fff8e0; }
td.shown > * + * { margin-top: .5em; }
figure.figure { margin: 0; }
figure.figure img { display: block; max-height: 640px; width: auto; border: 1px solid #ddd; }
figure.figure figcaption { color: #666; font-size: 12px; }
td.shown pre { background: #fafafa; border: 1px solid #eee; padding: .3em .4em; }

/* notebook pages (nbconvert's basic template) */
.cell { margin: .6em 0; }
.input, .output_area { display: flex; gap: .5em; }
.prompt { flex: 0 0 5.5em; text-align: right; color: #888; font: 12px/1.35 monospace; padding-top: .45em; }
.inner_cell, .output_subarea { flex: 1 1 auto; min-width: 0; }
.input_area { background: #f7f7f7; border: 1px solid #e3e3e3; border-radius: 3px; padding: .4em .5em; }
.output_subarea { padding: .3em 0; }
.output_stderr { background: #fdd; }
.rendered_html table { border-collapse: collapse; }
a.anchor-link { color: #bbb; text-decoration: none; font-size: .6em; margin-left: .3em; }
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


def _figure(figure: Figure, row: Deliverable, stem: str, cell_id: str) -> str:
    """A figure of the index: the image, which opens the PNG at full size when clicked, and its cell."""
    size = f" ({figure.width} &times; {figure.height} px)" if figure.width else ""
    return (f'<figure class=figure><a href="{figure.path}" title="open at full size"><img src="{figure.path}" '
            f'alt="{html.escape(row.id)}, cell {html.escape(cell_id)}"'
            + (f' width="{figure.width}" height="{figure.height}"' if figure.width else "")
            + f'></a><figcaption>cell <a href="{stem}.html#cell-id={cell_id}">{html.escape(cell_id)}</a> of '
              f'{html.escape(stem)}; click the figure for full size{size}</figcaption></figure>')


def _row(row: Deliverable, mapping: Mapping, notebooks: dict, figures_of: dict) -> str:
    notebook = notebooks.get(row.notebook)
    stem = Path(mapping.notebooks[row.notebook]).stem
    if notebook is None:
        body = f'<td colspan=2 class=missing>{html.escape(mapping.notebooks[row.notebook])} is missing</td>'
        return f'<tr id="{anchor(row.id)}"><td class=id>{html.escape(row.id)}</td><td>{html.escape(row.title)}</td>{body}</tr>'
    cells = _cells(notebook)
    figures = []
    for cell_id in row.figures:
        shown = [_figure(figure, row, stem, cell_id) for figure in figures_of.get(row.notebook, {}).get(cell_id, [])]
        figures += shown or [f'<div class=missing>no figure in cell {html.escape(cell_id)}</div>']
    measured = []
    replaced = replaced_references(mapping, row.notebook, notebook)
    for cell_id in dict.fromkeys(row.figures + row.measured):     # a cell named twice shows its text once
        cell = cells.get(cell_id)
        if cell is None:
            if cell_id in row.measured and cell_id not in replaced:
                measured.append(f'<div class=missing>cell {html.escape(cell_id)} is missing</div>')
        elif cell.cell_type == "markdown":
            measured.append(f"<div class=markdown>{markdown_html(cell.source, cell.get('attachments'))}</div>")
        elif text := printed_text(cell):
            measured.append(f'<a href="{stem}.html#cell-id={cell_id}"><pre>{html.escape(text)}</pre></a>')
        elif cell_id in row.measured:
            measured.append(f'<div class=missing>cell {html.escape(cell_id)} printed nothing</div>')
    measured += [_answer_block(answer, mapping, notebooks, row.measured if answer.notebook == row.notebook else ())
                 for answer in mapping.answers if answer.row == row.id]
    note = f'<div class=note>{html.escape(row.note)}</div>' if row.note else ""
    return (f'<tr id="{anchor(row.id)}"><td class=id>{html.escape(row.id)}</td>'
            f'<td>{html.escape(row.title)}{note}<div class=note>notebook '
            f'<a href="{stem}.html">{html.escape(stem)}</a>; shown on '
            f'{html.escape(shown_on(mapping, notebooks, row.notebook))}</div></td>'
            f'<td class=shown>{"".join(figures + measured)}</td>'
            f'<td>{html.escape(recorded_profile(notebook))}</td></tr>')


def _problem(problem: str, mapping: Mapping) -> str:
    """A problem of the red list as a link to what it is about: its row, or the notebook cell that draws an
    unmapped figure; a problem about no row or cell (a missing notebook) is plain text."""
    rows = [row.id for row in mapping.deliverables if problem.startswith(f"{row.id}:")]
    if rows:
        return f'<li><a href="#{anchor(max(rows, key=len))}">{html.escape(problem)}</a></li>'
    cell = re.match(r"cell (\S+) of (\S+)\.ipynb draws a figure", problem)
    if cell and re.fullmatch(r"[A-Za-z0-9_-]+", cell.group(1)) and f"{cell.group(2)}.ipynb" in mapping.notebooks.values():
        return f'<li><a href="{cell.group(2)}.html#cell-id={cell.group(1)}">{html.escape(problem)}</a></li>'
    return f"<li>{html.escape(problem)}</li>"


def build(notebooks: dict, out_dir: Path, title: str, mapping: Mapping | None = None,
          batch: Batch | None = None) -> list[str]:
    """Write the report for `notebooks` (key -> NotebookNode or None) into out_dir; return its problems.

    The files go into `batch` when one is given (the caller swaps them in, e.g. with its manifest), else into a
    batch of their own, swapped in when all are written, index.html last. MathJax's files are written only when
    a page holds math (MathJaxMissing when its package is not installed). Nothing is deleted."""
    if batch is None:
        with Batch() as batch:
            return build(notebooks, out_dir, title, mapping, batch)
    mapping = mapping or load_mapping()
    out_dir = Path(out_dir)
    exported = {key: _export(Path(mapping.notebooks[key]).stem, nb, out_dir, batch)
                for key, nb in notebooks.items() if nb is not None}
    figures_of = {key: figures for key, (figures, _) in exported.items()}
    batch.write_text(out_dir / "style.css", STYLE + HtmlFormatter().get_style_defs(".highlight"))
    found = problems(mapping, notebooks)
    issues = "".join(_problem(p, mapping) for p in found)
    rows = "\n".join(_row(row, mapping, notebooks, figures_of) for row in mapping.deliverables)
    answers = (f" {len(mapping.answers)} written answers to grade are shown in their rows."
               if mapping.answers else "")
    index = page(title,
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{len(mapping.deliverables)} deliverables of the course documents, in their numbering "
        f"(Part A / Part B: Fun With Diffusion Models; HW: the flow-matching homework). A figure opens at full "
        f"size when clicked; its caption and the printed text link to the cell in the notebook's page.{answers}</p>"
        + (f'<p class=missing>{len(found)} problems (each links to its row):</p><ul class=missing>{issues}</ul>'
           if found else "<p>Every deliverable has its output.</p>")
        + "<table class=deliverables><thead><tr><th class=id>id</th><th class=what>deliverable</th>"
          "<th>figures, and what the notebook measured</th><th class=profile>profile</th></tr></thead>\n"
          f"<tbody>{rows}</tbody>\n</table>\n")
    if uses_math(index) or any(math for _, math in exported.values()):
        _copy_mathjax(out_dir, batch)
    batch.write_text(out_dir / "index.html", index)
    return found


def read_folder(folder: Path, mapping: Mapping | None = None) -> dict:
    """The mapping's notebooks found in `folder` (key -> NotebookNode, None for a missing file)."""
    mapping = mapping or load_mapping()
    folder = Path(folder)
    if not folder.is_dir():
        raise NotebookError(f"{folder} is not a folder: give the folder that holds the NN_name.ipynb notebooks.")
    return {key: read_notebook(folder / name) if (folder / name).exists() else None
            for key, name in mapping.notebooks.items()}
