"""The student release (instructor.release) and what the edition gives a student (instructor.edition,
helpers.exercises): a git work tree for one URL, nothing of the solutions or the instructor's checkout in its files
or its history, course-provided checkpoints only, errata as new commits, written-answer and hand-in cells, and the
one-line messages of an unfinished or broken exercise."""
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
import tomllib
from nbclient import NotebookClient

from helpers.exercises import BY_KEY
from helpers.training import runs
from instructor import badges, edition, release

ROOT = Path(__file__).resolve().parent.parent
URL = "https://github.com/course-owner/dw-student"


def git(tree: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release") / "dw-student"
    start = time.perf_counter()
    release.release(URL, out)
    print(f"release built and committed in {time.perf_counter() - start:.1f} s")
    return out


def test_the_course_provided_runs_are_helpers_runs():
    assert edition.COURSE_PROVIDED == (runs.CLASSIFIER, runs.STANDIN, runs.STANDIN_CLASSIFIER)


@pytest.mark.slow
def test_the_release_is_a_git_work_tree_with_a_commit_and_its_record(released):
    assert git(released, "log", "--format=%s").splitlines() == ["diffusion-workbook release 1"]
    assert git(released, "status", "--porcelain") == ""
    record = json.loads((released / "release.json").read_text())
    files = sorted(p.relative_to(released).as_posix() for p in released.rglob("*")
                   if p.is_file() and ".git" not in p.relative_to(released).parts and p.name != "release.json")
    assert record["files"] == files and record["course"] == "diffusion-workbook" and record["version"] == 1
    assert record["source_commit"] == git(ROOT, "rev-parse", "HEAD").strip() and record["repository"] == URL


def test_every_badge_and_setup_cell_points_at_the_release(released):
    for path in sorted((released / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        title = badges.first_markdown(nb).source
        assert f"(https://colab.research.google.com/github/course-owner/dw-student/blob/main/notebooks/{path.name})" in title
        setup = badges.first_code(nb).source
        assert f'"{URL}")}} /content/dw-student' in setup and "%cd /content/dw-student/notebooks" in setup, setup
        assert setup.count("KEEP_CHECKPOINTS_ON_DRIVE = False") == 1 and "explain_missing()" in setup


def test_nothing_of_the_solutions_or_the_instructors_checkout_is_in_the_tree_or_its_history(released):
    assert len(release.solution_lines()) >= 40
    assert release.leaks(released) == []
    history = git(released, "log", "-p", "--all", "--binary")
    assert release.text_leaks("git log -p --all", history, release.solution_lines()) == []
    assert not (released / "instructor").exists() and not (released / "tests").exists()
    assert not any(p.is_symlink() for p in released.rglob("*"))
    assert not re.search(r"python -m instructor|import instructor|from instructor|instructor/", history)


def test_the_leak_check_finds_what_it_looks_for():
    lines = release.solution_lines()
    line = sorted(lines)[0]
    text = f'x = 1\n{{"source": [{json.dumps("    " + line + chr(10))}]}}\nsee `python -m instructor student`\n' \
           f"{badges.REPOSITORY_URL}/blob/main\n{ROOT}/data\n"
    found = release.text_leaks("t.ipynb", text, lines)
    assert [f.split(": ", 1)[0] for f in found] == ["t.ipynb, line 2", "t.ipynb, line 3", "t.ipynb, line 4",
                                                   "t.ipynb, line 5"], found
    assert release.text_leaks("t", f"{badges.REPOSITORY_URL}-student and the instructor's grader", lines) == []


def test_no_model_the_student_trains_ships(released):
    shipped = {path.parts[-2] for path in (released / "checkpoints").rglob("*.pt")}
    assert shipped == set(edition.COURSE_PROVIDED)
    student_trained = set(runs.MADE_BY) - set(edition.COURSE_PROVIDED)
    assert {runs.DENOISER, runs.FLOW_TIME_COURSE, runs.FLOW_CLASS_DECAY, runs.LOCALITY} <= student_trained
    assert not [p for p in (released / "checkpoints").rglob("*") if p.parts[-2 if p.is_file() else -1] in student_trained]
    assert not list((released / "checkpoints").rglob("measurements.json"))


def test_data_comes_through_the_loaders(released):
    tracked = sorted(git(ROOT, "ls-files", "data").split())
    assert sorted(p.relative_to(released).as_posix() for p in (released / "data").rglob("*") if p.is_file()) == tracked
    assert not (released / "data" / "MNIST").exists() and not (released / "data" / "FashionMNIST").exists()


def test_the_release_pyproject_environment_and_readme(released):
    assert "instructor" not in (released / "pyproject.toml").read_text()
    packages = [re.sub(r"\s+#.*", "", line).strip() for line in (ROOT / "environment.yml").read_text().splitlines()
                if line.strip().startswith("- ")]
    assert [line.strip() for line in (released / "environment.yml").read_text().splitlines()
            if line.strip().startswith("- ")] == packages
    readme = (released / "README.md").read_text()
    assert "python -m helpers.handin --name YOUR_ID" in readme and "KEEP_CHECKPOINTS_ON_DRIVE = True" in readme
    for module in edition.imported_modules():
        assert f"`{module}`" in readme, module


def test_written_answers_replace_their_references_with_nbgrader_answer_cells(released):
    table = tomllib.loads((ROOT / "notebooks" / "deliverables.toml").read_text())
    written = edition.answers()
    assert len(written) == 4 and len({a.cell for a in written}) == 3
    for answer in written:
        name = table["notebooks"][answer.notebook]
        instructor = {c.get("id"): c for c in nbformat.read(ROOT / "notebooks" / name, as_version=4).cells}
        cells = nbformat.read(released / "notebooks" / name, as_version=4).cells
        ids = [c.get("id") for c in cells]
        assert answer.reference not in ids and instructor[answer.reference].source[:80] not in json.dumps(
            [c.source for c in cells], ensure_ascii=False)
        cell = cells[ids.index(answer.cell)]
        assert cell.cell_type == "markdown" and cell.source == edition.ANSWER_STUB
        assert cell.metadata.nbgrader == {"grade": True, "solution": True, "locked": False, "points": answer.points,
                                          "grade_id": answer.cell, "schema_version": 3}
        assert answer.prompt in cells[ids.index(answer.cell) - 1].source and answer.row in cells[ids.index(answer.cell) - 1].source


def test_each_notebook_ends_with_the_hand_in_cell(released):
    for path in sorted((released / "notebooks").glob("*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        assert cells[-1].cell_type == "code" and cells[-1].source == edition.HAND_IN, path.name


def test_an_answer_table_that_does_not_match_is_refused_in_one_sentence(tmp_path):
    bad = tmp_path / "deliverables.toml"
    text = (ROOT / "notebooks" / "deliverables.toml").read_text()
    bad.write_text(text + '\n[[answer]]\nrow = "Z 9"\nnotebook = "01"\nreference = "x"\ncell = "answer-01-9"\n'
                          'points = 1\nprompt = "Why?"\n')
    with pytest.raises(edition.CourseError, match=r"row 'Z 9' is not a deliverable id"):
        edition.answers(bad)
    bad.write_text(text.replace('cell = "answer-03-1"', 'cell = "answer-01-1"'))
    with pytest.raises(edition.CourseError, match="is already another answer's"):
        edition.answers(bad)


def fake_checkout(tmp_path: Path) -> Path:
    """A small instructor checkout for the errata test: the files a release reads, committed in its own git."""
    root = tmp_path / "checkout"
    for name in git(ROOT, "ls-files", "helpers", "notebooks", "data", "environment.yml", "pyproject.toml",
                    "LICENSE").split() + [f"checkpoints/cpu/{run}/last.pt" for run in edition.COURSE_PROVIDED]:
        if (ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, root / name)
    init = root / "helpers" / "__init__.py"   # its instructor-facing sentence, as the instructor would word it
    init.write_text(re.sub(r"^.*`instructor/`.*$", "The instructor's tools are not part of this package.",
                           init.read_text(), flags=re.M))
    git(root, "init", "--quiet")
    git(root, "add", "--all")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "source")
    return root


@pytest.mark.slow
def test_errata_add_a_commit_and_never_touch_files_the_release_did_not_write(tmp_path):
    root, out = fake_checkout(tmp_path), tmp_path / "dw-student"
    assert release.release(URL, out, root)["version"] == 1
    (out / "NOTES.md").write_text("the instructor's own notes\n")
    assert release.release(URL, out, root)["committed"] is False      # unchanged: no commit
    hardware = root / "helpers" / "foundation" / "hardware.py"
    hardware.write_text(hardware.read_text() + "\n# erratum\n")
    git(root, "rm", "--quiet", "data/drawn/zero.png")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-am", "erratum")
    record = release.release(URL, out, root)
    assert record["version"] == 2 and record["removed"] == ["data/drawn/zero.png"]
    assert git(out, "log", "--format=%s").splitlines() == ["diffusion-workbook errata 2", "diffusion-workbook release 1"]
    assert sorted(git(out, "show", "--name-only", "--format=", "HEAD").split()) == \
        ["data/drawn/zero.png", "helpers/foundation/hardware.py", "release.json"]
    assert (out / "NOTES.md").read_text() == "the instructor's own notes\n" and not (out / "data/drawn/zero.png").exists()
    assert git(out, "status", "--porcelain") == "?? NOTES.md\n"


def test_a_release_folder_must_be_new_empty_or_an_earlier_release(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(release.ReleaseError, match="is a non-empty folder that is not an earlier release"):
        release.release(URL, tmp_path / "other")
    with pytest.raises(release.ReleaseError, match="is inside the instructor's checkout"):
        release.release(URL, ROOT / "student-release")
    with pytest.raises(release.ReleaseError, match="is not a URL"):
        release.release("not a url", tmp_path / "new")


def test_badges_rewrite_a_copy_of_the_notebooks(tmp_path):
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copy2(path, tmp_path / path.name)
    badges.rewrite(tmp_path)
    assert badges.stale(tmp_path) == []
    for path in sorted(tmp_path.glob("*.ipynb")):
        before, after = (nbformat.read(p, as_version=4) for p in (ROOT / "notebooks" / path.name, path))
        assert badges.first_code(after).source == badges.instructor_setup()
        assert [c.get("id") for c in before.cells] == [c.get("id") for c in after.cells]
        assert [c.get("outputs") for c in before.cells] == [c.get("outputs") for c in after.cells]
    assert f'"{badges.REPOSITORY_URL}.git"' in badges.instructor_setup()


def test_without_diffusers_the_project_backend_computes_ifs_schedule():
    diffusers = pytest.importorskip("diffusers")
    from helpers.backends import flow_backend
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    assert flow_backend.deepfloyd_alphas_cumprod().equal(scheduler.alphas_cumprod.double())
    assert "import diffusers" not in Path(flow_backend.__file__).read_text().replace("find_spec(\"diffusers\")", "")


# ---------------------------------------------------------------- what a student sees in a kernel


@pytest.mark.slow
def test_messages_while_exercises_are_unfinished_or_broken(tmp_path):
    """In one kernel, from the edition's own set-up cell: a NameError names the exercise the cell defining the name
    waited for; a syntax error in an exercise file is one sentence naming file and line; after an autoreload, a
    traceback points at the student's line."""
    edition.build(tmp_path)
    setup = badges.first_code(nbformat.read(tmp_path / "notebooks" / "01_one_step_denoising.ipynb", as_version=4))
    denoise = tmp_path / "helpers" / "denoise.py"
    cells = {
        "setup": setup.source,
        "noisy": "import torch\nfrom helpers import denoise\nnoisy = denoise.add_noise(torch.zeros(2, 1, 28, 28), 0.5)",
        "model": "from helpers.course_unet import CourseUNet\nmodel = CourseUNet(hidden=8)",
        "uses noisy": "noisy + 1",
        "uses model": "model",
        "check": "from helpers import checks\nchecks.add_noise(denoise.add_noise)",
    }
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code) for code in cells.values()])
    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path / "notebooks")}})
    seen = {}

    def run(name):
        index = list(cells).index(name)
        nb.cells[index].outputs = []
        client.execute_cell(nb.cells[index], index)
        errors = [line for o in nb.cells[index].outputs if o.output_type == "error" for line in o.traceback]
        text = "".join(o.get("text", "") for o in nb.cells[index].outputs if o.output_type == "stream")
        return errors, text

    with client.setup_kernel():
        for name in ("setup", "noisy", "model", "uses noisy", "uses model"):
            seen[name] = run(name)
        stub = next(line for line in denoise.read_text().splitlines() if "raise ExerciseMissing('1.1'" in line)
        denoise.write_text(denoise.read_text().replace(stub, "    eps = torch.randn((x.shape", 1))
        broken_line = 1 + denoise.read_text().splitlines().index("    eps = torch.randn((x.shape")
        seen["syntax"] = run("check")
        seen["syntax, another cell"] = run("uses noisy")
        denoise.write_text(denoise.read_text().replace(
            "    eps = torch.randn((x.shape", "    eps = torch.randn(x.shape, generator=generator)\n"
            "    scale = sigma\n    return x + scale * eps[0, 99]", 1))
        bug_line = 1 + denoise.read_text().splitlines().index("    return x + scale * eps[0, 99]")
        seen["bug"] = run("check")
    assert seen["setup"] == ([], ""), seen["setup"]
    assert seen["noisy"][0] == [f"⏸ this cell waits for exercise 1.1 ({BY_KEY['1.1'].where})"]
    assert seen["model"][0] == [f"⏸ this cell waits for exercise 1.2 ({BY_KEY['1.2'].where})"]
    assert seen["uses noisy"][0] == [f"⏸ this cell waits for exercise 1.1 ({BY_KEY['1.1'].where}): 'noisy' comes "
                                     "from a cell that could not run yet"]
    assert seen["uses model"][0] == [f"⏸ this cell waits for exercise 1.2 ({BY_KEY['1.2'].where}): 'model' comes "
                                     "from a cell that could not run yet"]
    sentence = f"✗ helpers/denoise.py, line {broken_line}: '(' was never closed"
    for name in ("syntax", "syntax, another cell"):
        errors, text = seen[name]
        assert len(errors) == 1 and errors[0].startswith(sentence) and "autoreload" not in text, seen[name]
    trace = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(seen["bug"][0]))
    assert f"denoise.py:{bug_line}, in add_noise" in trace and f"{bug_line} return x + scale * eps[0, 99]" in trace, trace
