"""The report as a reader sees it: built from the committed notebooks' stored outputs and opened in headless
Chromium at 1400 px, every text block fits its box, every image loads, no page scrolls sideways, math is typeset
offline by the report's own MathJax, widget cells show their saved picture, and nothing is printed twice.

The browser tests keep a screenshot of the index (rendered/report-layout-screenshot.png) and print the figures
they measured (blocks that overflow, images loaded, math typeset) per page; `pytest -s` shows them.
"""
import base64
import io
import re
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from PIL import Image
from test_report import _chromium

from instructor import execute, report

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "rendered" / "report-layout-screenshot.png"
WIDTH = 1400

# Blocks whose text must fit their box: printed text and code, paragraphs, list items, table cells, answers,
# the notebook pages' input and output areas, captions and headings.
BLOCKS = ("pre, p, li, td, th, .answer, .input_area, .output_subarea, .text_cell_render, figcaption, "
          "h1, h2, h3, h4")
MEASURE = """
const blocks = arguments[0], done = arguments[arguments.length - 1];
const images = () => Promise.all(Array.from(document.images,
    i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })));
const math = () => new Promise(r => window.MathJax && MathJax.Hub ? MathJax.Hub.Queue(() => r(true)) : r(false));
images().then(math).then(typeset => {
  const root = document.documentElement;
  const overflow = Array.from(document.querySelectorAll(blocks))
    .filter(e => e.clientWidth > 0 && e.scrollWidth > e.clientWidth)
    .map(e => [e.tagName, (e.closest('tr[id]') || e.closest('[id^="cell-id"]') || {id: ''}).id,
               e.scrollWidth, e.clientWidth, e.textContent.trim().slice(0, 60)]);
  const raw = [];                            // text outside code that still reads like TeX: not typeset
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode());) {
    if (!node.parentElement.closest('pre, code, script, style, .MathJax, .MJX_Assistive_MathML')
        && /\\$[^$]*\\\\[A-Za-z]|\\$\\$/.test(node.textContent)) raw.push(node.textContent.trim().slice(0, 80));
  }
  done({typeset, overflow, raw,
        images: Array.from(document.images, i => [i.getAttribute('src'), i.naturalWidth, i.width, i.height]),
        math: document.querySelectorAll('.MathJax').length,
        errors: document.querySelectorAll('.MathJax .merror, .MathJax_Error').length,
        scroll: [root.scrollWidth, root.clientWidth],
        resources: performance.getEntriesByType('resource').map(e => e.name)});
}).catch(error => done({error: String(error)}));
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The report of the committed notebooks, as `render --report-only` writes it, and its problems."""
    out = tmp_path_factory.mktemp("report") / "out"
    try:
        execute.main(["--notebooks", str(execute.NOTEBOOKS), "--report-only", "--out", str(out)])
        found = ""
    except SystemExit as stop:            # the notebooks' problems: the report is written all the same
        found = str(stop.code)
    assert (out / "index.html").is_file(), found
    return out, found


@pytest.fixture(scope="module")
def browser():
    with _chromium() as chromium:
        chromium.set_window_size(WIDTH, 2000)
        chromium.set_script_timeout(60)
        yield chromium


def measure(browser, page: Path) -> dict:
    browser.get(page.as_uri())
    result = browser.execute_async_script(MEASURE, BLOCKS)
    assert "error" not in result, result
    result["console"] = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    return result


def pages(out: Path) -> list[Path]:
    return [out / "index.html"] + sorted(p for p in out.glob("[0-9][0-9]_*.html"))


# ------------------------------------------------------------------------------------- in Chromium, 1400 px
@pytest.mark.slow
def test_every_page_fits_1400_px_loads_every_image_and_typesets_its_math_offline(built, browser):
    out, _ = built
    folder = out.resolve().as_uri() + "/"
    failures, totals = [], {"blocks over": 0, "images": 0, "images loaded": 0, "math": 0}
    for page in pages(out):
        result = measure(browser, page)
        broken = [src for src, natural, *_ in result["images"] if natural == 0]
        outside = [url for url in result["resources"] if not url.startswith(folder)]
        has_math = report.uses_math(page.read_text())
        print(f"{page.name}: {len(result['overflow'])} blocks overflow, {len(result['images']) - len(broken)} of "
              f"{len(result['images'])} images loaded, {result['math']} formulas typeset, page "
              f"{result['scroll'][0]} px wide in {result['scroll'][1]}")
        totals["blocks over"] += len(result["overflow"])
        totals["images"] += len(result["images"])
        totals["images loaded"] += len(result["images"]) - len(broken)
        totals["math"] += result["math"]
        checks = {"overflowing blocks": result["overflow"], "images not loaded": broken,
                  "loads from outside the report": outside, "console errors": result["console"],
                  "TeX left untypeset": result["raw"], "MathJax errors": result["errors"],
                  "sideways scroll": result["scroll"][0] > result["scroll"][1],
                  "math not typeset": has_math and not (result["typeset"] and result["math"] > 0)}
        failures += [(page.name, what, found) for what, found in checks.items() if found]
        if page.name == "index.html":
            SCREENSHOT.parent.mkdir(exist_ok=True)
            browser.execute_script("window.scrollTo(0, 0)")
            browser.save_screenshot(str(SCREENSHOT))
    print(f"all pages: {totals}; screenshot: {SCREENSHOT}")
    assert failures == []
    assert totals["images"] >= 80 and totals["math"] >= 100          # the notebooks' figures and formulas
    assert SCREENSHOT.stat().st_size > 50_000


@pytest.mark.slow
def test_index_figures_are_legible_and_open_at_full_size(built, browser):
    """Each figure is drawn wide (at least 700 px or its own width, unless a tall one reaches 600 px in height) and
    links to its own PNG; the thin wide figures that were 280 x 50 px (A 1.4, A 1.7, A 2.2, B 3) among them."""
    out, _ = built
    browser.get((out / "index.html").as_uri())
    browser.execute_async_script(MEASURE, BLOCKS)
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('figure.figure'), f => {const i = f.querySelector('img');"
        " return [f.closest('tr').id, i.getAttribute('src'), f.querySelector('a').getAttribute('href'),"
        " i.naturalWidth, i.naturalHeight, i.width, i.height]})")
    assert len(shown) >= 40
    small = [row for row in shown if not (row[5] >= min(row[3], 700) or row[6] >= 600)]
    assert small == []
    assert [row for row in shown if row[1] != row[2]] == []                    # a click opens the PNG itself
    for row_id in ("A-1.4", "A-1.7", "A-2.2", "B-3"):
        widths = [width / natural for rid, _, _, natural, _, width, _ in shown if rid == row_id]
        assert widths and min(widths) >= 0.6, (row_id, widths)


@pytest.mark.slow
def test_widget_cells_show_their_saved_picture(built, browser):
    out, _ = built
    for name in report.load_mapping().notebooks.values():
        notebook = report.read_notebook(execute.NOTEBOOKS / name)
        widget_cells = [cell.id for cell in notebook.cells if any(
            report.WIDGET_VIEW in output.get("data", {}) for output in cell.get("outputs", ()))]
        page = out / f"{Path(name).stem}.html"
        browser.get(page.as_uri())
        browser.execute_async_script(MEASURE, BLOCKS)
        for cell_id in widget_cells:
            cell = browser.execute_script(
                "const c = document.getElementById(arguments[0]); return [c.innerText,"
                " Array.from(c.querySelectorAll('.output_area img'), i => i.naturalWidth)]", f"cell-id={cell_id}")
            assert report.WIDGET_SAVED in cell[0] and "a slider" in cell[0], (name, cell_id, cell[0][-300:])
            assert cell[1] and min(cell[1]) > 0, (name, cell_id)


@pytest.mark.slow
def test_a_submissions_math_loads_and_runs_nothing(tmp_path, browser):
    """TeX's \\href, \\style, \\class, \\require and \\unicode with script or outside URLs: MathJax's Safe
    extension and the page's policy keep every one from running or loading anything."""
    payload = "window.__pwned=1;document.title='PWNED'"
    notebook = new_notebook()
    notebook.cells = [
        new_markdown_cell(f"$\\href{{javascript:{payload}}}{{a}}$ and $\\style{{background:url(javascript:{payload})}}"
                          f"{{b}}$ and $\\class{{x}}{{c}}$ and $\\require{{https://example.invalid/x.js}}$ and "
                          f"$\\require{{[Contrib]/x.js}}$ and $\\unicode[myfont,https://example.invalid/f.woff]"
                          "{x41}$ and $\\cssId{header}{d}$ and $$\\frac{1}{2}$$", id="math"),
        new_code_cell("print('profile: cpu')", id="backend",
                      outputs=[new_output("stream", name="stdout", text="profile: cpu\nbackend: x, images\n")])]
    path = tmp_path / "deliverables.toml"
    path.write_text('[notebooks]\n"01" = "01_math.ipynb"\n[backend]\nnotebook = "01"\ncell = "backend"\n'
                    '[[deliverable]]\nid = "M 1"\ntitle = "math"\nnotebook = "01"\nmeasured = ["math"]\n')
    out = tmp_path / "out"
    report.build({"01": notebook}, out, "math", report.load_mapping(path))
    folder = out.resolve().as_uri() + "/"
    for page in (out / "index.html", out / "01_math.html"):
        result = measure(browser, page)
        state = browser.execute_script("return [window.__pwned || null, document.title]")
        links = browser.execute_script("return Array.from(document.querySelectorAll('.MathJax a'), a => a.href)")
        assert state == [None, "math" if page.name == "index.html" else "01_math"], page.name
        assert result["math"] >= 8 and [u for u in result["resources"] if not u.startswith(folder)] == []
        assert not [href for href in links if href.startswith("javascript:")], links


# --------------------------------------------------------------------------------------------- the HTML itself
def png(color=(200, 30, 30), size=(12, 8)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.slow
def test_no_row_prints_a_text_twice(built):
    out, _ = built
    soup = BeautifulSoup((out / "index.html").read_text(), "html.parser")
    for row in soup.select("tr[id]"):
        texts = [pre.get_text() for pre in row.find_all("pre")]
        assert len(texts) == len(set(texts)), row["id"]
    for row_id in ("HW-1.3-b", "B-3"):          # each names a cell both for its figure and for its printed text
        assert soup.find("tr", id=row_id).find_all("pre")


@pytest.mark.slow
def test_the_problem_list_links_each_problem_to_its_row(tmp_path):
    mapping = report.load_mapping()
    notebooks = report.read_folder(execute.NOTEBOOKS, mapping)
    for cell in notebooks["03"].cells:
        if cell.get("id") == "a4340175":
            cell.outputs = []                    # B 2.6 and HW 1.3 b lose a figure
    notebooks["05"] = None
    found = report.build(notebooks, tmp_path, "student", mapping)
    soup = BeautifulSoup((tmp_path / "index.html").read_text(), "html.parser")
    items = soup.find("ul", class_="missing").find_all("li")
    assert [li.get_text() for li in items] == found
    linked = {li.get_text(): li.a["href"] for li in items if li.a}
    assert linked["B 2.6: cell a4340175 of 03_class_conditioned_flow_matching.ipynb has no figure"] == "#B-2.6"
    for text, href in linked.items():
        assert soup.find("tr", id=href.removeprefix("#")) is not None, text
    assert "notebook 05_ideal_flow_machines.ipynb is missing" not in linked      # about no row: plain text


def widget_state(models: dict) -> dict:
    return {"widgets": {report.WIDGET_STATE: {"state": models, "version_major": 2, "version_minor": 0}}}


def model(name: str, state: dict, buffer: str | None = None) -> dict:
    found = {"model_name": name, "model_module": "@jupyter-widgets/controls", "state": state}
    if buffer is not None:
        found["buffers"] = [{"path": ["value"], "encoding": "base64", "data": buffer}]
    return found


def test_a_widget_view_becomes_its_saved_settings_caption_and_picture():
    picture = png()
    models = {"box": model("VBoxModel", {"children": ["IPY_MODEL_slider", "IPY_MODEL_label", "IPY_MODEL_html",
                                                      "IPY_MODEL_image", "IPY_MODEL_box"]}),   # a cycle, too
              "slider": model("SelectionSliderModel", {"description": "γ", "_options_labels": ["1", "5"], "index": 1}),
              "label": model("LabelModel", {"value": "γ = 5 <b>caption</b>"}),
              "html": model("HTMLModel", {"value": "<script>alert(1)</script>"}),
              "image": model("ImageModel", {"format": "png"}, picture)}
    outputs = report.widget_outputs({"model_id": "box"}, models)
    assert [list(o.data) for o in outputs] == [["text/plain"], ["image/png"], ["text/plain"]]
    assert outputs[0].data["text/plain"] == "γ = 5 (a slider over 1, 5)\nγ = 5 <b>caption</b>"
    assert outputs[1].data["image/png"] == picture and outputs[2].data["text/plain"] == report.WIDGET_SAVED
    # an image buffer that is not a PNG (an SVG, HTML, bad base64) is not shown; nothing known: no outputs
    for fake in (base64.b64encode(b"<svg onload=alert(1)>").decode(), "not base64!"):
        models["image"] = model("ImageModel", {"format": "png"}, fake)
        assert [list(o.data) for o in report.widget_outputs({"model_id": "box"}, models)] == [["text/plain"]]
    assert report.widget_outputs({"model_id": "html"}, models) == []
    assert report.widget_outputs({"model_id": "gone"}, models) == [] and report.widget_outputs("x", models) == []


def test_a_notebook_page_shows_a_widget_as_a_figure_and_text(tmp_path):
    notebook = new_notebook(metadata=widget_state({
        "w": model("VBoxModel", {"children": ["IPY_MODEL_s", "IPY_MODEL_i"]}),
        "s": model("FloatSliderModel", {"description": "t", "value": 0.5, "min": 0.0, "max": 1.0, "step": 0.1}),
        "i": model("ImageModel", {"format": "png"}, png(size=(40, 20)))}))
    notebook.cells = [new_code_cell("explore()", id="widget", outputs=[new_output("execute_result", execution_count=1, data={
        report.WIDGET_VIEW: {"model_id": "w", "version_major": 2, "version_minor": 0}, "text/plain": "Explorer(...)"})])]
    with report.Batch() as batch:
        figures, _ = report._export("01_x", notebook, tmp_path, batch)
    assert figures == {"widget": [report.Figure("figures/01_x-widget-0.png", 40, 20)]}
    page = (tmp_path / "01_x.html").read_text()
    assert "t = 0.5 (a slider from 0.0 to 1.0, step 0.1)" in page and 'src="figures/01_x-widget-0.png"' in page
    assert Image.open(tmp_path / "figures" / "01_x-widget-0.png").size == (40, 20)


@pytest.mark.slow
def test_math_brings_the_local_mathjax_and_a_page_without_math_no_script(tmp_path):
    plain = new_notebook()
    plain.cells = [new_markdown_cell("no formula here", id="m"), new_code_cell("1", id="backend", outputs=[
        new_output("stream", name="stdout", text="profile: cpu\nbackend: x, images\n")])]
    path = tmp_path / "deliverables.toml"
    path.write_text('[notebooks]\n"01" = "01_x.ipynb"\n[backend]\nnotebook = "01"\ncell = "backend"\n'
                    '[[deliverable]]\nid = "M 1"\ntitle = "t"\nnotebook = "01"\nmeasured = ["m"]\n')
    report.build({"01": plain}, tmp_path / "plain", "t", report.load_mapping(path))
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["01_x.html", "index.html", "style.css"]
    assert "<script" not in (tmp_path / "plain" / "index.html").read_text()
    plain.cells[0].source = "the path $x_t = (1 - t)\\,x_0 + t\\,x_1$"
    report.build({"01": plain}, tmp_path / "math", "t", report.load_mapping(path))
    copied = {p.relative_to(tmp_path / "math" / "mathjax").as_posix() for p in (tmp_path / "math" / "mathjax").rglob("*")
              if p.is_file()}
    assert {name for name, _ in report.mathjax_files()} == copied
    assert {"MathJax.js", "config/TeX-AMS-MML_HTMLorMML-full.js", "config/Safe.js", "extensions/Safe.js",
            "fonts/HTML-CSS/STIX-Web/woff/STIXMathJax_Main-Regular.woff",
            "jax/output/HTML-CSS/fonts/STIX-Web/fontdata.js"} <= copied
    size = sum(p.stat().st_size for p in (tmp_path / "math" / "mathjax").rglob("*") if p.is_file())
    assert size < 2_600_000                                   # TeX to HTML-CSS with STIX-Web, not all of MathJax
    for page in ("index.html", "01_x.html"):
        assert report.MATHJAX in (tmp_path / "math" / page).read_text()
    assert (tmp_path / "math" / "mathjax-config.js").read_text() == report.MATHJAX_CONFIG


def test_without_the_mathjax_package_the_report_says_what_to_install(monkeypatch):
    monkeypatch.setattr(report.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(report.MathJaxMissing) as missing:
        report.mathjax_files()
    assert str(missing.value).count("\n") == 0 and "pip install jupyter-server-mathjax" in str(missing.value)


def test_an_image_from_the_web_is_shown_as_its_alt_text():
    page = report.page("t", '<p><a href="https://colab.research.google.com/x"><img alt="Open In Colab" '
                            'src="https://colab.research.google.com/assets/colab-badge.svg"></a> '
                            '<img src="//example.invalid/a.png" alt="<b>x</b>"> <img src="figures/f.png" alt="f"></p>')
    soup = BeautifulSoup(page, "html.parser")
    assert [img["src"] for img in soup.find_all("img")] == ["figures/f.png"]
    assert [s.get_text() for s in soup.find_all("span", class_="remote-image")] == ["Open In Colab", "<b>x</b>"]
    assert soup.find("a")["href"] == "https://colab.research.google.com/x" and not soup.find("b")


def test_the_style_wraps_printed_text_and_lets_no_figure_overflow():
    rules = dict(re.findall(r"^([^{/\n][^{]*?)\s*\{([^}]*)\}", report.STYLE, re.MULTILINE))
    assert "pre-wrap" in rules["pre"] and "overflow-wrap: anywhere" in rules["pre"]
    assert "max-width: 100%" in rules["img"] and "min-width: 0" in rules[".inner_cell, .output_subarea"]
    assert "max-width" not in rules["pre"]                          # a block is as wide as its column, no narrower


def test_the_committed_notebooks_store_a_static_picture_for_every_widget():
    """What the report shows for a widget comes from the notebook's saved widget state: every widget view of the
    committed notebooks has one there (so its page shows a figure, not an empty Out[N])."""
    for path in sorted(execute.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        models = report.widget_models(notebook)
        for cell in notebook.cells:
            for output in cell.get("outputs", ()):
                if report.WIDGET_VIEW in output.get("data", {}):
                    shown = report.widget_outputs(output["data"][report.WIDGET_VIEW], models)
                    assert any("image/png" in o.data for o in shown), (path.name, cell.id)
