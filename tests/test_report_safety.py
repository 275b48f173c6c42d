"""No submission's markup runs in a page the report writes, and written answers show in their rows.

A notebook carries script payloads in every place a submission can put markup: a markdown cell, a
text/html output (also an "isolated" one), a text/markdown output, an SVG output, a markdown attachment,
widget state and a widget view, an application/javascript output, a raw HTML cell, cell tags, printed text
and a written answer. Every page the report writes is opened in headless Chromium and must not have run any
of them, with both walls (nh3 and the Content-Security-Policy) and with each alone; the files themselves
must hold no script but the report's own. A control shows that the payloads do run when neither wall is
there, so the browser check can fail.
"""
import base64
import copy
import io
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output, new_raw_cell
from PIL import Image
from test_report import _chromium

from instructor import report

NAME = "01_payloads.ipynb"
MARKER = "pwned-marker"          # made only by script: the markup spells it 'pwned-'+'marker'


def payload(where: str) -> str:
    """JavaScript that leaves three traces if it runs: window.__pwned, the title, and an element."""
    return (f"window.__pwned=(window.__pwned||[]).concat(['{where}']);document.title='PWNED {where}';"
            f"document.documentElement.appendChild(Object.assign(document.createElement('b'),{{id:'pwned-'+'marker'}}))")


def markup(where: str) -> str:
    """HTML that runs `payload(where)` in as many ways as a browser allows when it is not sanitised."""
    js = payload(where)
    quoted = js.replace('"', "&quot;")
    page = base64.b64encode(f"<script>{js}</script>".encode()).decode()
    return (f'<script>{js}</script><img src="x-missing.png" onerror="{quoted}">'
            f'<svg onload="{quoted}"><circle r="1"/></svg><details open ontoggle="{quoted}"><summary>s</summary></details>'
            f'<iframe srcdoc="<script>{quoted}</script>"></iframe><object data="data:text/html;base64,{page}"></object>'
            f'<embed src="data:text/html;base64,{page}"><a href="javascript:{quoted}">js link</a>'
            f'<a href="data:text/html;base64,{page}">data link</a><form action="javascript:{quoted}"><input autofocus '
            f'onfocus="{quoted}"></form><base href="javascript:{quoted}//"><meta http-equiv="refresh" '
            f'content="0;url=javascript:{quoted}"><math><mtext><table><mglyph><style><img src=x onerror="{quoted}">'
            f'</style></mglyph></table></mtext></math><noscript><p title="</noscript><img src=x onerror=\'{js}\'>"></noscript>'
            f'<style>body {{ background: url("javascript:{quoted}") }}</style>')


def png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def svg(where: str) -> str:
    js = payload(where).replace('"', "&quot;")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20" onload="{js}">'
            f'<script>{payload(where)}</script><rect width="20" height="20" fill="blue"/></svg>')


def hostile_notebook(answer: str = "The average is **blurry**: <img src=x onerror=\"" + payload("answer") + "\">"):
    notebook = new_notebook()
    state = {"state": {"m1": {"model_name": "HTMLModel", "model_module": "@jupyter-widgets/controls",
                              "model_module_version": "2.0.0",
                              "state": {"value": f"</script><script>{payload('widget-state')}</script>"}}},
             "version_major": 2, "version_minor": 0}
    notebook.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": state}
    attachments = {"evil.svg": {"image/svg+xml": base64.b64encode(svg("attachment-svg").encode()).decode()},
                   "evil.html": {"text/html": base64.b64encode(f"<script>{payload('attachment-html')}</script>".encode()).decode()},
                   "fine.png": {"image/png": png()}}
    cells = [
        new_markdown_cell("# Payloads\n\n" + markup("markdown"), id="md-payload"),
        new_markdown_cell("![svg](attachment:evil.svg) [page](attachment:evil.html) ![png](attachment:fine.png)\n\n"
                          '<img src="attachment:evil.svg" onerror="' + payload("attachment-tag").replace('"', "&quot;")
                          + '">', id="md-attach", attachments=attachments),
        new_code_cell("print('backend: none, images')", id="backend", outputs=[
            new_output("stream", name="stdout", text=f"profile: cpu\nbackend: x, images <script>{payload('printed')}</script>\n")]),
        new_code_cell("figure()", id="fig", outputs=[new_output("display_data", data={"image/png": png(), "text/plain": "<Figure>"})]),
        new_code_cell("html()", id="html-out", outputs=[
            new_output("display_data", data={"text/html": markup("text-html"), "text/plain": "h"}),
            new_output("display_data", data={"text/html": f"<script>{payload('isolated')}</script><b>isolated</b>"},
                       metadata={"text/html": {"isolated": True}})]),
        new_code_cell("md()", id="md-out", outputs=[
            new_output("execute_result", data={"text/markdown": markup("text-markdown"), "text/plain": "m"}, execution_count=1)]),
        new_code_cell("svg()", id="svg-out", outputs=[new_output("display_data", data={"image/svg+xml": svg("svg-output")})]),
        new_code_cell("js()", id="js-out", outputs=[
            new_output("display_data", data={"application/javascript": payload("javascript"), "text/plain": "j"})]),
        new_code_cell("widget()", id="widget", outputs=[new_output("execute_result", execution_count=2, data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "m1", "version_major": 2, "version_minor": 0},
            "text/plain": "HTML(value='...')"})]),
        new_code_cell("raise", id="error", outputs=[new_output(
            "error", ename="E", evalue=f"<script>{payload('error')}</script>", traceback=[f"<img src=x onerror=\"{payload('tb')}\">"])]),
        new_raw_cell(f"<script>{payload('raw')}</script>", id="raw", metadata={"raw_mimetype": "text/html"}),
        new_markdown_cell("tagged", id="tagged", metadata={"tags": [     # a tag may hold no comma
            '"><img src=x onerror="window.__pwned=[1];document.title=\'PWNED tag\'">']}),
        new_markdown_cell("### BEGIN SOLUTION\nThe reference: the mean of many digits is a **blur**.\n### END SOLUTION",
                          id="ref-01-1"),
    ]
    if answer is not None:
        cells.append(new_markdown_cell(answer, id="answer-01-1"))
    notebook.cells = cells
    return notebook


MAPPING_TOML = f'''
[notebooks]
"01" = "{NAME}"
[backend]
notebook = "01"
cell = "backend"
[[deliverable]]
id = "X 1"
title = "payloads everywhere"
notebook = "01"
figures = ["fig"]
measured = ["md-payload", "md-attach", "backend"]
[[deliverable]]
id = "X 2"
title = "outputs"
notebook = "01"
measured = ["html-out", "md-out", "svg-out", "js-out", "widget", "error", "raw", "tagged"]
'''
ANSWER_TOML = '''
[[answer]]
row = "X 1"
notebook = "01"
reference = "ref-01-1"
cell = "answer-01-1"
points = 1
prompt = "What do you notice comparing the average image and the pure-noise outputs?"
'''


def mapping(tmp_path: Path, answers: bool = True) -> report.Mapping:
    path = tmp_path / "deliverables.toml"
    path.write_text(MAPPING_TOML + (ANSWER_TOML if answers else ""))
    return report.load_mapping(path)


def open_page(browser, path: Path) -> dict:
    """Load a page, let its images fail or load and its events fire; return what a payload would change."""
    browser.get(path.as_uri())
    browser.execute_async_script(
        "const done = arguments[0];"
        "Promise.all(Array.from(document.images, i => i.complete ? 0 : new Promise(r => i.onload = i.onerror = r)))"
        ".then(() => setTimeout(done, 300));")
    return browser.execute_script(
        f"return {{pwned: window.__pwned || null, title: document.title, url: location.href,"
        f" marker: document.querySelectorAll('#{MARKER}').length}}")


@pytest.fixture(scope="module")
def browser():
    with _chromium() as chromium:
        chromium.set_script_timeout(20)
        yield chromium


def build(tmp_path: Path, monkeypatch=None, walls: str = "both") -> tuple[Path, list[str]]:
    """The report of the hostile notebook; `walls` takes one wall (or both) away to show the other holds alone."""
    if walls in ("policy only", "neither"):
        monkeypatch.setattr(report, "clean_html", lambda fragment: str(fragment))
        monkeypatch.setattr(report, "static_copy", copy.deepcopy)
    if walls in ("sanitiser only", "neither"):
        monkeypatch.setattr(report, "CSP", "default-src * 'unsafe-inline' data:")
    out = tmp_path / "out"
    found = report.build({"01": hostile_notebook()}, out, "Class report <script>" + payload("title") + "</script>",
                         mapping(tmp_path))
    return out, found


@pytest.fixture
def built(tmp_path):
    return build(tmp_path)


def pages(out: Path) -> list[Path]:
    written = sorted(p for p in out.rglob("*") if p.is_file())
    assert {p.suffix for p in written} == {".html", ".css", ".png"}          # no .svg or .js file to open
    found = [p for p in written if p.suffix == ".html"]
    assert {p.name for p in found} == {"index.html", "01_payloads.html"}
    return found


@pytest.mark.slow
@pytest.mark.parametrize("walls", ["both", "sanitiser only", "policy only"])
def test_no_payload_runs_in_any_page_the_report_writes(tmp_path, monkeypatch, browser, walls):
    out, _ = build(tmp_path, monkeypatch, walls)
    for page in pages(out):
        state = open_page(browser, page)
        assert state["pwned"] is None and state["marker"] == 0, (walls, page.name, state)
        assert not state["title"].startswith("PWNED") and state["url"] == page.as_uri(), (walls, state)


@pytest.mark.slow
def test_control_without_either_wall_the_payloads_run(tmp_path, monkeypatch, browser):
    """The browser check can fail: with neither wall, the payloads of every markup route run."""
    out, _ = build(tmp_path, monkeypatch, "neither")
    ran = set()
    for page in pages(out):
        ran |= set(open_page(browser, page)["pwned"] or ())
    assert {"markdown", "text-html", "text-markdown", "raw", "answer", "attachment-tag"} <= ran, ran


def test_no_script_handler_or_script_url_from_a_submission_survives_in_the_files(built):
    out, _ = built
    for page in out.glob("*.html"):
        soup = BeautifulSoup(page.read_text(), "html.parser")
        scripts = [str(s) for s in soup.find_all("script")]
        own = ['<script src="mathjax-config.js"></script>', '<script src="mathjax/MathJax.js"></script>']
        assert scripts in ([], own), page.name            # none, or the report's own two files (a page with math)
        assert page.read_text().lower().count("<script") == len(scripts), page.name
        assert soup.find_all(["iframe", "object", "embed", "form", "base", "style", "svg", "math", "noscript"]) == []
        assert [m["http-equiv"] for m in soup.find_all("meta", attrs={"http-equiv": True})] == ["Content-Security-Policy"]
        for tag in soup.find_all(True):
            assert not [a for a in tag.attrs if a.lower().startswith("on")], (page.name, str(tag)[:200])
            for attribute in ("href", "src", "action", "srcdoc", "data"):
                value = "".join(tag.get(attribute, "")).strip().lower()
                assert not value.startswith(("javascript:", "vbscript:")), (page.name, str(tag)[:200])
                if value.startswith("data:"):
                    assert tag.name == "img" and attribute == "src" and value.startswith("data:image/"), str(tag)[:200]
        assert "widget-state" not in page.read_text()                  # the widget state is not carried over


@pytest.mark.slow
def test_svg_outputs_and_attachments_are_shown_as_images_that_cannot_run_script(built, browser):
    out, _ = built
    notebook_page = out / "01_payloads.html"
    soup = BeautifulSoup(notebook_page.read_text(), "html.parser")
    sources = [img["src"] for img in soup.find_all("img") if img.get("src", "").startswith("data:")]
    assert sum(s.startswith("data:image/svg+xml;base64,") for s in sources) == 2     # the SVG output and attachment
    assert sum(s.startswith("data:image/png;base64,") for s in sources) == 1         # the harmless attachment
    assert report.WIDGET_NOTE in notebook_page.read_text()                          # the widget, shown statically
    open_page(browser, notebook_page)
    widths = browser.execute_script(
        "return Array.from(document.images).filter(i => i.src.startsWith('data:image/svg')).map(i => i.naturalWidth)")
    assert widths == [20, 20]                  # drawn (as images), while their script did not run (test above)


def test_every_page_carries_the_content_security_policy(built):
    out, _ = built
    for page in out.glob("*.html"):
        head = page.read_text()[:1000]
        assert head.startswith(f'<!doctype html><meta charset=utf-8><meta http-equiv="Content-Security-Policy" '
                               f'content="{report.CSP}">')
    assert report.CSP.split("script-src")[1].split(";")[0].split() == ["'self'"]     # the report's own files only
    assert "http" not in report.CSP and "data:" not in report.CSP.split("img-src")[0]  # nothing from the web


def test_the_students_written_answer_shows_in_its_row_sanitised(built):
    out, found = built
    soup = BeautifulSoup((out / "index.html").read_text(), "html.parser")
    answer = soup.find("tr", id="X-1").find("div", class_="answer")
    assert "written answer (to grade, 1 point): What do you notice" in answer.get_text()
    assert answer.find("strong").get_text() == "blurry"
    assert answer.find("a")["href"] == "01_payloads.html#cell-id=answer-01-1"
    assert "the student's answer" in answer.get_text() and "reference" not in answer.get_text()
    assert not [p for p in found if "written answer" in p]


def test_the_instructors_notebook_shows_the_reference_answer(tmp_path):
    notebook = hostile_notebook(answer=None)
    found = report.build({"01": notebook}, tmp_path / "out", "instructor", mapping(tmp_path))
    index = (tmp_path / "out" / "index.html").read_text()
    answer = BeautifulSoup(index, "html.parser").find("tr", id="X-1").find("div", class_="answer")
    assert "The reference: the mean of many digits is a blur." in answer.get_text()
    assert "the reference answer, cell ref-01-1" in answer.get_text() and "SOLUTION" not in answer.get_text()
    assert not [p for p in found if "written answer" in p]
    assert "1 written answers to grade" in index


def test_a_reference_the_row_already_shows_is_linked_not_repeated(tmp_path):
    path = tmp_path / "deliverables.toml"
    path.write_text((MAPPING_TOML + ANSWER_TOML).replace('"md-attach", "backend"]', '"md-attach", "backend", "ref-01-1"]'))
    report.build({"01": hostile_notebook(answer=None)}, tmp_path / "out", "instructor", report.load_mapping(path))
    row = BeautifulSoup((tmp_path / "out" / "index.html").read_text(), "html.parser").find("tr", id="X-1")
    assert row.get_text().count("the mean of many digits") == 1
    assert "the reference answer, cell ref-01-1 (its text is shown above)" in row.find("div", class_="answer").get_text()


def test_a_student_edition_shows_the_answer_where_the_reference_was(tmp_path):
    """The edition removes the reference cell and puts the answer cell in its place: no missing-cell problem."""
    path = tmp_path / "deliverables.toml"
    path.write_text((MAPPING_TOML + ANSWER_TOML).replace('"md-attach", "backend"]', '"md-attach", "backend", "ref-01-1"]'))
    notebook = hostile_notebook()
    notebook.cells = [cell for cell in notebook.cells if cell.id != "ref-01-1"]
    found = report.build({"01": notebook}, tmp_path / "out", "student", report.load_mapping(path))
    assert not [p for p in found if "ref-01-1" in p or "written answer" in p], found
    row = BeautifulSoup((tmp_path / "out" / "index.html").read_text(), "html.parser").find("tr", id="X-1")
    assert "ref-01-1" not in row.get_text() and row.find(class_="answer").find("strong").get_text() == "blurry"


def test_an_answer_still_holding_the_nbgrader_stub_is_listed_missing(tmp_path):
    notebook = hostile_notebook(answer="YOUR ANSWER HERE")
    found = report.build({"01": notebook}, tmp_path / "out", "student", mapping(tmp_path))
    expected = ('X 1: written answer missing: cell answer-01-1 of 01_payloads.ipynb still holds '
                'nbgrader\'s stub text "YOUR ANSWER HERE"')
    assert expected in found
    soup = BeautifulSoup((tmp_path / "out" / "index.html").read_text(), "html.parser")
    assert expected in [li.get_text() for li in soup.find("ul", class_="missing").find_all("li")]
    assert "missing: cell answer-01-1" in soup.find("tr", id="X-1").find("div", class_="answer").get_text()


def test_no_answer_tables_no_answer_blocks(tmp_path):
    found = report.build({"01": hostile_notebook()}, tmp_path / "out", "none", mapping(tmp_path, answers=False))
    index = (tmp_path / "out" / "index.html").read_text()
    assert "class=\"answer\"" not in index and "written answer" not in index
    assert not [p for p in found if "written answer" in p]
    assert isinstance(report.load_mapping().answers, tuple)         # the course's own file loads, with or without


@pytest.mark.parametrize("table, message", [
    ('row = "X 9"\nnotebook = "01"\nreference = "r"\ncell = "c"\npoints = 1\nprompt = "p"', "for row 'X 9', which is no deliverable id"),
    ('row = "X 1"\nnotebook = "07"\nreference = "r"\ncell = "c"\npoints = 1\nprompt = "p"', "names notebook '07'"),
    ('row = "X 1"\nnotebook = "01"\nreference = "r"\ncell = "c"\npoints = "one"\nprompt = "p"', "points = 'one'"),
    ('row = "X 1"\nnotebook = "01"\nreference = "r"\ncell = "c"\nprompt = "p"', "is not a valid deliverables file"),
])
def test_a_bad_answer_table_is_one_sentence(tmp_path, table, message):
    path = tmp_path / "deliverables.toml"
    path.write_text(MAPPING_TOML + "[[answer]]\n" + table + "\n")
    with pytest.raises(report.NotebookError, match=message) as error:
        report.load_mapping(path)
    assert str(error.value).count("\n") == 0
