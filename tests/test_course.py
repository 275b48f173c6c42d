"""The student edition (instructor.edition): markers, stubs, check cells, and the round trip
stubs -> every check fails with its sentence -> reference filled back by the markers -> every check passes
and the student notebooks run."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from helpers.exercises import BY_KEY
from instructor import edition
from instructor.output_folder import FolderError

ROOT = Path(__file__).resolve().parent.parent
ACTIVE = edition.active_exercises()
RUN_CHECKS = """
import json, sys
import helpers
from helpers.exercises import BY_KEY, CheckFailed
assert helpers.__file__.startswith(sys.argv[1]), helpers.__file__
verdicts = {}
for key in sys.argv[2:]:
    cell = {}
    exec(BY_KEY[key].imports, cell)          # the check cell's own code
    try:
        eval(BY_KEY[key].check, cell)
        verdicts[key] = "pass"
    except CheckFailed as failure:
        verdicts[key] = str(failure)
print(json.dumps(verdicts))
"""


def run_checks(edition: Path, keys) -> dict:
    """Run the check cells of `keys` in a fresh interpreter that imports the edition's helpers."""
    env = {**os.environ, "PYTHONPATH": str(edition)}
    done = subprocess.run([sys.executable, "-c", RUN_CHECKS, str(edition), *keys], cwd=edition, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    edition.build(out)
    return out


def test_the_marked_exercises_are_active():
    assert {"1.1", "1.2", "1.3", "2.1", "3.1"} <= set(ACTIVE)


def test_a_region_needs_its_hint_line_and_a_known_exercise():
    begin, end = edition.BEGIN, edition.END
    with pytest.raises(edition.CourseError, match="needs a '# Exercise K hint: ...' line"):
        edition.strip_source(f"def f():\n    {begin}\n    return 1\n    {end}\n", "f.py")
    with pytest.raises(edition.CourseError, match="exercise 9.9 is not in"):
        edition.strip_source(f"def f():\n    # Exercise 9.9 hint: x\n    {begin}\n    return 1\n    {end}\n", "f.py")


def test_stub_raises_the_exercise_with_its_hint():
    text = f"def f(x):\n    # Exercise 1.1 hint: think.\n    {edition.BEGIN}\n    return x + 1\n    {edition.END}\n"
    stubbed, keys = edition.strip_source(text, "f.py")
    assert keys == ["1.1"] and "return x + 1" not in stubbed
    namespace = {}
    exec(stubbed, namespace)
    with pytest.raises(NotImplementedError, match=r"exercise 1.1 \(add_noise in helpers/denoise.py\) is not "
                                                  r"written yet; hint: think\."):
        namespace["f"](1)


def solution_lines():
    """Every non-trivial line of every marked region of the reference helpers that appears nowhere outside the
    regions (a line such as ``if labels is None:`` that the reference also writes elsewhere gives nothing away)."""
    pattern = rf"{edition.BEGIN}\n(.*?)\n[ \t]*{edition.END}"
    lines, elsewhere = set(), set()
    for path in edition.sources():
        text = path.read_text()
        for region in re.findall(pattern, text, flags=re.S):
            lines.update(line.strip() for line in region.splitlines() if len(line.strip()) > 16)
        elsewhere.update(line.strip() for line in re.sub(pattern, "", text, flags=re.S).splitlines())
    return lines - elsewhere


@pytest.mark.slow
def test_the_student_edition_holds_no_solution_line(stubs):
    lines = solution_lines()
    assert len(lines) >= 10
    for path in stubs.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".ipynb", ".md") and "MNIST" not in path.parts:
            text = path.read_text()
            leaked = [line for line in lines if line in text]
            assert not leaked, f"{path.relative_to(stubs)} contains solution lines: {leaked[:2]}"


@pytest.mark.slow
def test_every_check_fails_on_the_stubs_with_one_sentence(stubs):
    verdicts = run_checks(stubs, ACTIVE)
    for key, verdict in verdicts.items():
        assert verdict != "pass", key
        assert re.fullmatch(r"(exercise \S+ \(.+\) is not written yet; hint: .+|the check of exercise \S+ needs "
                            r"exercise \S+ \(.+\) first)", verdict), verdict


@pytest.mark.slow
@pytest.mark.parametrize("key", ACTIVE)
def test_each_check_alone_names_its_exercise_and_hint(tmp_path, key):
    """Everything filled in but exercise `key`: its check fails with its own hint, and names no other."""
    edition.build(tmp_path)
    edition.fill(tmp_path, keep=(key,))
    verdict = run_checks(tmp_path, [key])[key]
    assert verdict.startswith(f"exercise {key} ({BY_KEY[key].where}) is not written yet; hint: "), verdict


@pytest.mark.slow
def test_reference_filled_back_passes_every_check_and_restores_the_sources(tmp_path):
    edition.build(tmp_path)
    assert edition.fill(tmp_path) >= len(ACTIVE)
    for path in edition.sources():
        assert (tmp_path / path.relative_to(ROOT)).read_text() == path.read_text(), path
    assert run_checks(tmp_path, ACTIVE) == {key: "pass" for key in ACTIVE}


@pytest.mark.slow
def test_student_notebooks_have_one_check_cell_per_active_exercise(stubs):
    cells = [cell.source for path in sorted((stubs / "notebooks").glob("*.ipynb"))
             for cell in nbformat.read(path, as_version=4).cells]
    for key in ACTIVE:
        assert sum(BY_KEY[key].check in source for source in cells) == 1, key
    assert sum("explain_missing()" in source for source in cells) == 5


WAIT = re.compile(r"(✗ exercise \S+ \(.+\) is not written yet; hint: .+|✗ the check of exercise \S+ needs exercise .+"
                  r"|⏸ this cell waits for (exercise \S+|an earlier notebook's model) \(.+\).*|⏸ no trained model at .+)")


@pytest.mark.slow
def test_stub_notebooks_run_top_to_bottom_and_say_what_they_wait_for(stubs):
    """Executed in order (smoke): every error is an exercise's hint or a line naming what the cell waits for."""
    os.environ["WORKBOOK_PROFILE"] = "smoke"
    try:
        for path in sorted((stubs / "notebooks").glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                           resources={"metadata": {"path": str(path.parent)}}).execute()
            errors = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs
                      if output.output_type == "error"]
            assert errors, path.name
            for error in errors:
                assert len(error.traceback) == 1 and WAIT.fullmatch(error.traceback[0]), (path.name, error.traceback)
    finally:
        os.environ.pop("WORKBOOK_PROFILE")


@pytest.mark.slow
def test_filled_student_notebooks_pass_nbval_in_smoke(tmp_path):
    """Notebooks 02 to 05 of the filled student edition under nbval (05 needs 02's model); 01, filled, runs whole in
    tests/test_colab.py (test_notebooks_01_and_02_run_without_error_once_their_exercises_are_done)."""
    edition.build(tmp_path)
    edition.fill(tmp_path)
    notebooks = sorted(str(path.relative_to(tmp_path)) for path in (tmp_path / "notebooks").glob("0[2-5]_*.ipynb"))
    assert len(notebooks) == 4, notebooks
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env",
                           "--nbval-cell-timeout=600", "-p", "no:cacheprovider", *notebooks],
                          cwd=tmp_path, env={**os.environ, "WORKBOOK_PROFILE": "smoke"}, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:]
    print(f"student notebooks, filled, under nbval in smoke: {time.perf_counter() - start:.0f} s")


def test_every_exercise_has_a_check_and_a_notebook_cell_to_precede():
    from helpers import checks
    from helpers.exercises import EXERCISES
    for exercise in EXERCISES:
        name = exercise.check.split("(")[0].removeprefix("checks.")
        assert getattr(checks, name).exercise == exercise.key, exercise.key
        nb = nbformat.read(ROOT / "notebooks" / exercise.notebook, as_version=4)
        assert exercise.before in [cell.get("id") for cell in nb.cells], exercise.key


@pytest.mark.slow
def test_the_build_is_deterministic(tmp_path):
    edition.build(tmp_path / "a")
    edition.build(tmp_path / "b")
    for path in (tmp_path / "a").rglob("*"):
        if path.is_file():
            assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes(), path


def test_the_package_docstring_maps_every_exercise_to_its_file():
    """helpers/__init__.py's table names each exercise (alone or in a pair) on the row of its file."""
    import helpers
    from helpers.exercises import EXERCISES
    rows = {key.strip(): line for line in helpers.__doc__.splitlines() if line.startswith("| ")
            for key in line.split("|")[1].split(",")}
    for exercise in EXERCISES:
        assert exercise.key in rows, f"exercise {exercise.key} is not in helpers/__init__.py's table"
        assert exercise.file.removeprefix("helpers/") in rows[exercise.key], (exercise.key, rows[exercise.key])


@pytest.mark.slow
def test_a_rebuild_keeps_the_students_work_and_every_file_it_did_not_write(tmp_path, capsys):
    """Issue 28: `make student` again used to wipe student/helpers/ and overwrite README.md without asking."""
    out = tmp_path / "student"
    edition.build(out)
    solution = out / "helpers" / "denoise.py"
    solution.write_text(solution.read_text() + "\n# my solution\n")
    (out / "notes.txt").write_text("mine")
    edition.build(out)
    backups = list((out / ".backup").glob("*/helpers/denoise.py"))
    assert len(backups) == 1 and backups[0].read_text().endswith("# my solution\n")
    assert "kept in" in capsys.readouterr().out and (out / "notes.txt").read_text() == "mine"
    assert "# my solution" not in solution.read_text()
    other = tmp_path / "other"
    other.mkdir()
    (other / "README.md").write_text("not an edition")
    with pytest.raises(FolderError, match="would overwrite but did not write"):
        edition.build(other)
    assert (other / "README.md").read_text() == "not an edition"
