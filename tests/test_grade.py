"""The class grader (instructor/grade): a class graded end to end by ``python -m instructor grade``, one hand-in by
``grade-one``, the sandbox's own properties, the gradebook's merge, and the refusal without bubblewrap.

Hand-ins are packed with helpers.handin.archive.pack from one student edition (instructor.edition.build), filled
with the reference (instructor.edition.fill) except the exercises a student left (instructor/grade/synthetic.py).
The hostile ones are in tests/test_grade_hostile.py."""
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from torch import nn

from helpers import checks, course_unet
from helpers.exercises import EXERCISES, CheckFailed
from instructor.grade import gradebook, hidden, merge, scoring, synthetic
from instructor.grade.sandbox import GRADE_HOME, Caps, Layout, Sandbox, unavailable

ROOT = Path(__file__).resolve().parent.parent
KEYS = [e.key for e in EXERCISES]
MAX = {k: scoring.VISIBLE + scoring.HIDDEN * len(hidden.CASES[k]) for k in KEYS}
FAST = ["--exercise-seconds", "20", "--startup-seconds", "120", "--memory-mib", "1536"]
sandboxed = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


@pytest.fixture(scope="module")
def blank(tmp_path_factory):
    return synthetic.student_edition(tmp_path_factory.mktemp("edition"))


def rows(path: Path) -> dict[str, dict]:
    return {row["student"]: row for row in csv.DictReader(io.StringIO(path.read_text()))}


def column(key: str) -> str:
    return f"exercise {key} [{MAX[key]}]"


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory, blank):
    """A class of six: reference, blank, half-done, a folder hand-in, a refused archive, a folder with a link."""
    tmp = tmp_path_factory.mktemp("class")
    handins, grades = tmp / "handins", tmp / "grades"
    synthetic.hand_in(synthetic.repository(blank, tmp / "ada", executed=True), handins / "ada.handin.zip")
    synthetic.hand_in(synthetic.repository(blank, tmp / "bob", keep=tuple(KEYS)), handins / "bob.handin.zip")
    synthetic.hand_in(synthetic.repository(blank, tmp / "cy", keep=synthetic.HALF_DONE), handins / "cy.handin.zip")
    synthetic.repository(blank, handins / "dee")                                        # a folder hand-in
    linked = synthetic.repository(blank, handins / "lin")
    (linked / "helpers" / "denoise.py").unlink()
    (linked / "helpers" / "denoise.py").symlink_to(ROOT / "helpers" / "denoise.py")
    import zipfile
    with zipfile.ZipFile(handins / "eve.handin.zip", "w") as bad:
        bad.writestr("manifest.json", "{}")
        bad.writestr("../escape.py", "print('out')")
    command = [sys.executable, "-m", "instructor", "grade", str(handins), "--out", str(grades), "--jobs", "2", *FAST]
    first = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    return {"grades": grades, "handins": handins, "first": first, "command": command}


@sandboxed
@pytest.mark.slow
def test_class_gradebook_full_zero_and_partial_exactly(graded_class):
    done, grades = graded_class["first"], graded_class["grades"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "graded 5, skipped 0 unchanged, 1 not gradable" in done.stdout
    assert "lin/helpers/denoise.py is a link" in done.stdout
    table = rows(grades / "grades.csv")
    assert sorted(table) == ["ada", "bob", "cy", "dee", "eve"]
    total = f"total [{sum(MAX.values())}]"
    for key in KEYS:
        assert int(table["ada"][column(key)]) == MAX[key], (key, table["ada"])
        assert int(table["dee"][column(key)]) == MAX[key], key                     # the folder hand-in
        assert int(table["bob"][column(key)]) == 0, key
        assert int(table["cy"][column(key)]) == (0 if key in synthetic.HALF_DONE else MAX[key]), key
        assert int(table["eve"][column(key)]) == 0
    assert int(table["ada"][total]) == sum(MAX.values()) and int(table["bob"][total]) == 0
    assert table["ada"]["written HW 1.1 f / B 1.2.3"] == "to grade"
    assert table["bob"]["written HW 1.1 f / B 1.2.3"] == "missing"
    assert table["ada"]["status"] == "graded"
    assert table["eve"]["status"].startswith("refused: eve.handin.zip holds '../escape.py'")
    assert not (graded_class["handins"].parent / "escape.py").exists()


@sandboxed
@pytest.mark.slow
def test_result_files_follow_the_interface(graded_class):
    grades = graded_class["grades"]
    result = json.loads((grades / "results" / "ada.json").read_text())
    archive = graded_class["handins"] / "ada.handin.zip"
    assert result["student"] == "ada" and result["archive"] == "ada.handin.zip"
    assert result["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert result["grader"].startswith("1+") and result["seconds"] > 0 and result["refused"] is None
    exercise = result["exercises"]["4.3"]
    assert set(exercise) >= {"points", "max", "passed", "feedback", "visible", "hidden"}
    assert exercise["visible"]["passed"] and [h["name"] for h in exercise["hidden"]] == hidden.names("4.3")
    assert result["written"][0]["status"] == "to grade" and "conditional mean" in result["written"][0]["text"]
    assert result["missing"] == [] and result["tampering"] == []
    assert (grades / "reports" / "ada" / "index.html").exists()
    blank_result = json.loads((grades / "results" / "bob.json").read_text())
    assert any("has no figure" in m or "printed nothing" in m for m in blank_result["missing"])
    page = (grades / "index.html").read_text()
    assert "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'self'; script-src 'none'\">" in page
    assert 'href="reports/ada/index.html"' in page and "&#x27;../escape.py&#x27;" in page


@sandboxed
@pytest.mark.slow
def test_regrading_skips_unchanged_and_only_regrades_one(graded_class):
    version = subprocess.run([sys.executable, "-c", "from instructor.grade import grader_version as v; print(v())"],
                             capture_output=True, text=True, cwd=ROOT).stdout.strip()
    again = subprocess.run(graded_class["command"], capture_output=True, text=True, cwd=ROOT)
    graded_with = json.loads((graded_class["grades"] / "results" / "ada.json").read_text())["grader"]
    # the grader version hashes the checks and kernels: if they were edited meanwhile, everyone is re-graded
    expected = "graded 0, skipped 5 unchanged" if version == graded_with else "graded 5, skipped 0 unchanged"
    assert again.returncode == 0 and expected in again.stdout
    before = (graded_class["grades"] / "grades.csv").read_bytes()
    only = subprocess.run([*graded_class["command"], "--only", "bob"], capture_output=True, text=True, cwd=ROOT)
    assert only.returncode == 0 and "graded 1, skipped 0 unchanged" in only.stdout and "bob: 0 / " in only.stdout
    assert (graded_class["grades"] / "grades.csv").read_bytes() == before
    missing = subprocess.run([*graded_class["command"], "--only", "zed"], capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 1 and missing.stderr.strip().count("\n") == 0 and "no hand-in named 'zed'" in missing.stderr


@sandboxed
@pytest.mark.slow
def test_wrong_answers_get_the_checks_sentence_and_hidden_checks_catch_more(tmp_path, blank):
    repo = synthetic.repository(blank, tmp_path / "repo")
    unet = repo / "helpers" / "course_unet.py"
    unet.write_text(unet.read_text().replace("nn.BatchNorm2d(c_out), nn.GELU())", "nn.BatchNorm2d(c_out), nn.ReLU())", 1))
    samplers = repo / "helpers" / "samplers.py"
    samplers.write_text(samplers.read_text().replace("return x - h * velocity(x, t, labels)",
                                                     "return x + h * velocity(x, t, labels)"))
    diffusion = repo / "helpers" / "diffusion.py"      # right on the course's 990 .. 0 schedule only
    diffusion.write_text(diffusion.read_text().replace("    abar = _abar(alphas_cumprod, t, x0)\n",
                                                       "    abar = _abar(alphas_cumprod, min(t, 990), x0)\n", 1))
    guidance = repo / "helpers" / "guidance.py"
    guidance.write_text(guidance.read_text() + "\ndef broken(:\n")
    archive = synthetic.hand_in(repo, tmp_path / "handins" / "wes.handin.zip")
    grades = tmp_path / "grades"
    done = subprocess.run([sys.executable, "-m", "instructor", "grade-one", str(archive), "--out", str(grades),
                           "--base", str(blank), *FAST], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("wes: ") and " points, " in done.stdout
    result = json.loads((grades / "results" / "wes.json").read_text())["exercises"]
    assert result["1.2"]["feedback"] == said_by(checks.unet_operations, SimpleNamespace(
        conv=lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, 1, 1), nn.BatchNorm2d(o), nn.ReLU()),
        down_conv=course_unet.down_conv, up_conv=course_unet.up_conv))
    assert result["2.3"]["feedback"] == said_by(checks.euler_step, lambda v, x, t, h, labels=None: x + h * v(x, t, labels))
    assert result["2.3"]["points"] == sum(h["passed"] for h in result["2.3"]["hidden"]) == 0
    assert result["3.2"]["points"] == 0
    assert result["3.2"]["feedback"].startswith("the code could not be set up: SyntaxError: ")
    forward = result["4.1"]
    assert forward["visible"]["passed"] and forward["points"] == MAX["4.1"] - 1
    assert forward["feedback"].startswith("hidden check forward float64 last: on float64 [-1, 1] images at t = 999")
    merge(grades)
    assert "hidden forward float64 last: on float64 [-1, 1] images at t = 999" in (grades / "index.html").read_text()


@sandboxed
def test_sandbox_is_unprivileged_offline_and_sees_no_reference(tmp_path):
    probe = (f"id -u >&2; grep CapEff /proc/self/status >&2; ls -A {ROOT} >&2; ls /run/grade >&2; "
             "cat /proc/net/dev | tail -n +3 | cut -d: -f1 >&2; touch /tmp/ok && echo scratch-ok >&2; "
             "touch /etc/x 2>&1 | tail -1 >&2; touch /run/grade/in/x 2>&1 | tail -1 >&2")
    (tmp_path / "in").mkdir()
    layout = Layout(binds=[(tmp_path / "in", f"{GRADE_HOME}/in")], hide=[ROOT, tmp_path],
                    argv=["/bin/sh", "-c", probe])
    from instructor.grade.inside.wire import FrameReader
    exit_ = Sandbox(layout, Caps(), 61999, 2**20).run(lambda m: None, lambda: None, FrameReader(2**20))
    lines = exit_.stderr_tail.split("\n")
    assert exit_.reason == "died" and exit_.returncode == 0
    # as root, setpriv drops to the uid given; as another user, the sandbox runs as that user (a user namespace)
    assert lines[0] == ("61999" if os.geteuid() == 0 else str(os.geteuid()))
    assert lines[1].split() == ["CapEff:", "0000000000000000"]
    listed = lines[2:lines.index("scratch-ok")]
    assert ".venv" in listed and "helpers" not in listed and "instructor" not in listed and "in" in listed
    assert [x.strip() for x in listed if x.strip() in ("lo", "eth0")] == ["lo"]
    assert "Read-only file system" in lines[-3] and "Read-only file system" in lines[-2]


@pytest.mark.slow
def test_missing_sandbox_tool_refuses_in_one_sentence(tmp_path):
    archive = tmp_path / "amy.handin.zip"
    archive.write_bytes(b"not graded")
    env = dict(os.environ, PATH=str(tmp_path))
    for verb, target in (("grade-one", archive), ("grade", tmp_path)):
        done = subprocess.run([sys.executable, "-m", "instructor", verb, str(target), "--out", str(tmp_path / "g")],
                              capture_output=True, text=True, cwd=ROOT, env=env)
        assert done.returncode == 1
        assert done.stderr.strip().splitlines() == [
            f"{verb}: bwrap, prlimit, setpriv are not installed, and a submission's code never runs outside its "
            "sandbox: install bubblewrap and util-linux (Debian: apt-get install bubblewrap util-linux) and grade "
            "again."]
    assert not (tmp_path / "g").exists()


def said_by(check, wrong) -> str:
    """The sentence the real check says about `wrong` (run here: it is the test's own code, not a submission)."""
    with pytest.raises(CheckFailed) as failed:
        check(wrong)
    return str(failed.value)


def _result(name: str, points: dict, feedback: str = "✓", **extra) -> dict:
    return {"student": name, "sha256": "x", "grader": "1+x", "refused": None, "missing": [], "tampering": [],
            "written": [{"id": "HW 1.1 f", "status": "to grade", "text": "<b>hi</b>"}],
            "exercises": {k: {"points": points.get(k, 0), "max": MAX[k], "passed": points.get(k, 0) == MAX[k],
                              "feedback": feedback, "visible": {"passed": False, "feedback": feedback}, "hidden": []}
                          for k in KEYS}, **extra}


def test_merge_writes_an_lms_csv_and_an_escaped_page(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    payload = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    (results / "zoe.json").write_text(json.dumps(_result("zoe", {"1.1": 5, "4.3": 3}, payload,
                                                         missing=[payload], tampering=[payload])))
    (results / "al.json").write_text(json.dumps(_result("al", MAX)))
    (results / "broken.json").write_text("{not json")
    merge(tmp_path)
    text = (tmp_path / "grades.csv").read_text()
    table = rows(tmp_path / "grades.csv")
    assert list(table) == ["al", "broken", "zoe"]
    assert int(table["zoe"][column("1.1")]) == 5 and int(table["zoe"][f"total [{sum(MAX.values())}]"]) == 8
    assert int(table["al"][f"total [{sum(MAX.values())}]"]) == sum(MAX.values())
    assert table["broken"]["status"].startswith("refused: its result file cannot be read")
    assert table["zoe"]["written HW 1.1 f"] == "to grade"
    page = (tmp_path / "index.html").read_text()
    assert "<script" not in page and "<img" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert gradebook.CSP in page
    merge(tmp_path)
    assert (tmp_path / "grades.csv").read_text() == text                  # deterministic: no times, no paths


def test_written_answers_come_from_the_answer_cells_once_per_question():
    import nbformat

    from instructor import report
    from instructor.grade import student_report
    mapping = report.load_mapping()
    cells = {a.cell for a in mapping.answers}

    def notebook(text):
        return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text, id=c) for c in cells])
    filled = {a.notebook: notebook("The outputs converge to the data mean.") for a in mapping.answers}
    stubbed = {a.notebook: notebook("YOUR ANSWER HERE") for a in mapping.answers}
    answers = student_report.written(mapping, filled)
    assert len(answers) == len(cells) and all(a["status"] == "to grade" for a in answers)
    assert any(" / " in a["id"] for a in answers) == (len(cells) < len(mapping.answers))
    assert all(a["status"] == "missing" and a["text"] == "" for a in student_report.written(mapping, stubbed))
    assert all(a["status"] == "missing" for a in student_report.written(mapping, {}))


def test_a_class_of_reports_stores_mathjax_once(tmp_path):
    from instructor.grade.student_report import share_mathjax
    for name in ("ada", "bob"):
        (tmp_path / name / "mathjax" / "jax").mkdir(parents=True)
        (tmp_path / name / "mathjax" / "MathJax.js").write_text("mathjax")
        (tmp_path / name / "mathjax" / "jax" / "a.js").write_text("a")
        share_mathjax(tmp_path / name, tmp_path / ".shared")
    for relative in ("mathjax/MathJax.js", "mathjax/jax/a.js"):
        ada, bob = tmp_path / "ada" / relative, tmp_path / "bob" / relative
        assert ada.samefile(bob) and ada.read_text() == bob.read_text()
    (tmp_path / "cy" / "mathjax").mkdir(parents=True)
    (tmp_path / "cy" / "mathjax" / "MathJax.js").write_text("another version")   # differs: kept as it is
    share_mathjax(tmp_path / "cy", tmp_path / ".shared")
    assert (tmp_path / "cy" / "mathjax" / "MathJax.js").read_text() == "another version"
