"""The instructor's report: the deliverables mapping against the committed notebooks, the report's
build and command line, the committed report/cpu/, and a headless-Chromium check that its images load."""
import contextlib
import copy
import os
import re
import shutil
import tempfile
from pathlib import Path

import nbformat
import pytest

from instructor import badges, execute, report

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "report" / "cpu"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def mapping():
    return report.load_mapping()


@pytest.fixture(scope="module")
def notebooks(mapping):
    return report.read_folder(execute.NOTEBOOKS, mapping)


def test_every_course_deliverable_is_mapped_in_its_numbering(mapping):
    ids = [row.id for row in mapping.deliverables]
    part_a = ["A 0"] + [f"A 1.{i}" for i in range(1, 8)] + ["A 1.7.1", "A 1.7.2", "A 1.7.3", "A 1.8", "A 1.9",
                                                            "A 2.1", "A 2.2"]
    part_b = ["B 1.1", "B 1.2", "B 1.2.1", "B 1.2.2", "B 1.2.3"] + [f"B 2.{i}" for i in range(1, 7)] + ["B 2.6.1", "B 3"]
    homework = [f"HW 1.1 {c}" for c in "abcdef"] + ["HW 1.2 a", "HW 1.2 b", "HW 1.3 a", "HW 1.3 b", "HW 2"]
    assert ids == part_a + part_b + homework


def test_committed_notebooks_have_every_deliverable_and_no_unmapped_figure(mapping, notebooks):
    assert report.problems(mapping, notebooks) == []


def test_problems_name_a_missing_output_and_an_unmapped_figure(mapping, notebooks):
    changed = copy.deepcopy(notebooks)
    cells = {cell.id: cell for cell in changed["01"].cells}
    cells["7a3f6ed8"].outputs = []                        # B 1.2's noise grid lost its figure
    cells["ef0757d3"].outputs = []                        # B 1.2.1's measured MSE printed nothing
    cells["4a67da35"].outputs.append(cells["b6430a07"].outputs[0])   # a figure no row names
    changed["05"] = None
    found = report.problems(mapping, changed)
    assert "B 1.2: cell 7a3f6ed8 of 01_one_step_denoising.ipynb has no figure" in found
    assert "B 1.2.1: cell ef0757d3 of 01_one_step_denoising.ipynb printed nothing" in found
    assert any(p.startswith("cell 4a67da35 of 01_one_step_denoising.ipynb draws a figure") for p in found)
    assert "notebook 05_ideal_flow_machines.ipynb is missing" in found


def test_mapping_errors_are_one_sentence(tmp_path):
    bad = tmp_path / "deliverables.toml"
    bad.write_text('[notebooks]\n"01" = "a.ipynb"\n[backend]\nnotebook = "01"\ncell = "x"\n'
                   '[[deliverable]]\nid = "A 0"\ntitle = "t"\nnotebook = "07"\n')
    with pytest.raises(report.NotebookError, match="names notebook '07'"):
        report.load_mapping(bad)
    bad.write_text("[notebooks\n")
    with pytest.raises(report.NotebookError, match="is not a valid deliverables file"):
        report.load_mapping(bad)


@pytest.mark.slow
def test_report_from_stored_outputs_links_every_figure_to_its_cell(mapping, notebooks, tmp_path):
    assert report.build(notebooks, tmp_path, "test", mapping) == []
    index = (tmp_path / "index.html").read_text()
    assert index.count("<tr id=") == len(mapping.deliverables)
    for page, cell_id in re.findall(r'<a href="(\w+\.html)#cell-id=(\w+)"><img', index):
        assert f'id="cell-id={cell_id}"' in (tmp_path / page).read_text()
    sources = re.findall(r'<img src="([^"]+)"', index)
    assert len(sources) >= 40 and all((tmp_path / s).stat().st_size > 1000 for s in sources)
    assert "offline stand-in: project flow model" in index and "<td>cpu</td>" in index
    assert "data:image/png" not in (tmp_path / "02_time_conditioned_flow_matching.html").read_text()


@pytest.mark.slow
def test_a_students_folder_with_a_missing_figure_gets_its_report_and_a_nonzero_exit(mapping, tmp_path, capsys):
    student = tmp_path / "student"
    shutil.copytree(execute.NOTEBOOKS, student, ignore=shutil.ignore_patterns("04_*", "05_*"))
    notebook = nbformat.read(student / mapping.notebooks["03"], as_version=4)
    next(c for c in notebook.cells if c.get("id") == "a4340175").outputs = []
    nbformat.write(notebook, student / mapping.notebooks["03"])
    with pytest.raises(SystemExit, match="B 2.6: cell a4340175 of 03_class_conditioned_flow_matching.ipynb has no figure"):
        execute.main(["--notebooks", str(student), "--report-only", "--out", str(tmp_path / "out")])
    index = (tmp_path / "out" / "index.html").read_text()
    assert "no figure in cell a4340175" in index and "04_diffusion_sampling_tricks.ipynb is missing" in index


@pytest.mark.parametrize("content", [None, "not a notebook\n", '{"cells": 3}'])
def test_render_refuses_a_missing_file_or_a_non_notebook_in_one_sentence(tmp_path, content):
    path = tmp_path / "broken.ipynb"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as stop:
        execute.main([str(path), "--out", str(tmp_path / "out")])
    message = str(stop.value.code)
    assert message.startswith(f"error: {path}") and message.count("\n") == 0
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_inplace_never_overwrites_a_notebook_that_failed(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("print('ran')"), nbformat.v4.new_code_cell("raise ValueError('boom')")]
    path = tmp_path / "failing.ipynb"
    nbformat.write(notebook, path)
    before = path.read_bytes()
    with pytest.raises(SystemExit, match=r"failing.ipynb failed \(ValueError: boom\); nothing was written"):
        execute.main([str(path), "--inplace", "--out", str(tmp_path / "out")])
    assert path.read_bytes() == before and not (tmp_path / "out" / "failing.ipynb").exists()


def test_committed_report_has_every_row_and_every_file_it_references(mapping):
    index = (COMMITTED / "index.html").read_text()
    for row in mapping.deliverables:
        assert f'<tr id="{report.anchor(row.id)}">' in index
    for target in set(re.findall(r'(?:src|href)="([^"#:]+)[#"]', index)):
        assert (COMMITTED / target).is_file(), target
    assert "Every deliverable has its output." in index
    size = sum(f.stat().st_size for f in COMMITTED.rglob("*") if f.is_file())
    assert size < 6_500_000


def test_every_markdown_cell_closes_its_inline_math(notebooks):
    """An odd number of $ in a cell is math that a shell or an edit ate (e.g. "$P$" expanded to a path)."""
    unclosed = [(name, i) for name in (p.name for p in sorted(execute.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
                for i, cell in enumerate(report.read_notebook(execute.NOTEBOOKS / name).cells)
                if cell.cell_type == "markdown" and cell.source.replace("\\$", "").count("$") % 2]
    assert unclosed == []


def test_every_notebook_carries_the_colab_badge_of_the_one_repository_setting(notebooks):
    assert badges.stale() == []
    for name in (p.name for p in sorted(execute.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))):
        notebook = report.read_notebook(execute.NOTEBOOKS / name)
        assert badges.colab_url(name) in badges.first_markdown(notebook).source
        setup = next(c for c in notebook.cells if c.cell_type == "code").source
        assert f'"{badges.REPOSITORY_URL}.git"' in setup    # the set-up cell clones the same repository
    assert badges.with_badge(badges.with_badge("# T\n\ntext", "x.ipynb"), "x.ipynb") == \
        f"# T\n\n{badges.badge('x.ipynb')}\n\ntext"


@contextlib.contextmanager
def _chromium():
    """A headless Chromium driven by Debian's chromedriver, with the flags of an isolated, offline browser.

    Its profile lives in a temporary folder that is removed when the browser quits."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's chromium and chromium-driver: .ci/run installs them (as root)")
        pytest.skip("no /usr/bin/chromium: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,2000",
                     f"--user-data-dir={profile}"):
            options.add_argument(flag)
        browser = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        try:
            yield browser
        finally:
            browser.quit()


@pytest.mark.slow
def test_committed_report_opens_in_chromium_with_every_thumbnail_loaded(mapping):
    with _chromium() as browser:
        browser.get((COMMITTED / "index.html").as_uri())
        browser.set_script_timeout(30)
        sizes = browser.execute_async_script(
            "const done = arguments[0];"
            "Promise.all(Array.from(document.images, i => i.complete ? 0 : new Promise(r => i.onload = i.onerror = r)))"
            ".then(() => done(Array.from(document.images, i => [i.getAttribute('src'), i.naturalWidth])));")
        rows = len(browser.find_elements("css selector", "tr[id]"))
        shot = ROOT / "rendered" / "report-cpu-screenshot.png"
        shot.parent.mkdir(exist_ok=True)
        browser.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
    assert rows == len(mapping.deliverables)
    assert len(sizes) >= 40 and [src for src, width in sizes if width == 0] == []
    assert shot.stat().st_size > 50_000
