"""The student edition: ``python -m instructor student [--out student/] [--repository URL]`` (or ``make student``).

How a student meets an exercise. Every kernel exists once, in `helpers`; an exercise is a region of a
helpers file between nbgrader's solution markers (see `helpers.exercises`), with a hint line
``# Exercise K hint: ...`` right above it (`helpers.exercises` lists them). The student edition is the
repository's notebooks and helpers in which

- every marked region is replaced by a stub that raises `ExerciseMissing` (a NotImplementedError) with
  the exercise's key, file and hint line. The replacement is nbgrader's own: its `ClearSolutions`
  preprocessor, run over every notebook (regions in notebook cells) and over each helpers file's text
  as one code cell, so notebooks and .py files follow one convention and one implementation;
- each notebook gets, before the first cell that needs an exercise, a markdown cell saying which
  function to fill in and where, and a check cell (``checks.add_noise(denoise.add_noise)``) that the
  student re-runs until it passes. The notebooks themselves are not edited: the table
  `helpers.exercises.EXERCISES` names each exercise's notebook and the id of the cell it precedes;
- every written answer the course asks for (the ``[[answer]]`` tables of notebooks/deliverables.toml) gets,
  in place of the markdown cell holding the reference answer (removed), the question and an nbgrader
  manually graded answer cell (markdown, metadata ``nbgrader: {grade, solution, points, grade_id}``);
- the set-up cell is rebuilt from `instructor.badges.setup_cell` for the edition's repository (the release's
  URL; without one its Colab branch clones nothing), the Colab badge points at that repository (GitHub URLs
  only; otherwise it is removed), and the set-up cell also turns on autoreload and
  `helpers.exercises.explain_missing` (one line per unfinished exercise, a syntax error in a helpers file
  as one sentence naming the file and line);
- the last cell of every notebook hands in (`helpers.handin.hand_in`).

An exercise is active once its file carries its markers: the others stay as reference code, without a
check cell. `fill(student_dir)` puts the reference regions back into a built edition, by the markers
(the tests use it). Besides notebooks and helpers, the edition holds the data files this repository
tracks in git (``data/x_1.pt``, ``data/drawn/``; MNIST and Fashion-MNIST are downloaded by
`helpers.foundation.data` where they are missing), the course-provided checkpoints (`COURSE_PROVIDED`; see
`instructor.release` for what ships pre-trained and why), ``environment.yml`` (its packages and pins, without its
comments), ``pyproject.toml`` without the instructor's package, ``LICENSE`` and a README (exercises, Colab, hand-in). Nothing in it links or points into
this checkout.
"""
import argparse
import ast
import hashlib
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import tomllib
from nbformat import NotebookNode
from nbgrader.preprocessors import ClearSolutions

from helpers.exercises import BY_KEY, EXERCISES
from helpers.foundation import atomic
from instructor import badges
from instructor.output_folder import FolderError, OutputFolder, folder_lock, refuse_source_tree

ROOT = Path(__file__).resolve().parent.parent
COMMAND = "python -m instructor student"
GROUP = "edition"   # the manifest's group of the edition's files
DELIVERABLES = ROOT / "notebooks" / "deliverables.toml"
# nbgrader's markers, spelled in two pieces: ClearSolutions treats any line containing them as a marker.
BEGIN, END = "### BEGIN " + "SOLUTION", "### END " + "SOLUTION"
HINT = re.compile(r"^\s*# Exercise (\S+) hint: (.+)$")
STUB_MARK = "@@EXERCISE_STUB@@"
STUB_IMPORT = "from helpers.exercises import ExerciseMissing"
SETUP = ("%load_ext autoreload\n%autoreload 2\n"
         "from helpers.exercises import explain_missing\nexplain_missing()  # one line per unfinished exercise")
LOCAL_HINT = "Locally, from this repository's notebooks/ folder: nothing to do."
ANSWER_STUB = "YOUR ANSWER HERE"   # nbgrader's text stub of a cleared markdown answer
HAND_IN = "from helpers.handin import hand_in\n\nhand_in()"
# Runs the course provides trained (checkpoints/<profile>/<run>/): instruments and stand-ins, never a model an
# exercise asks the student to train. The names are those of helpers.training.runs (CLASSIFIER, STANDIN,
# STANDIN_CLASSIFIER); tests/test_release.py holds them to it.
COURSE_PROVIDED = ("classifier", "flow_class_digits_fashion", "classifier_digits_fashion")
# Third-party modules the notebooks and helpers import, and what the README's Colab section says of each.
COLAB_PREINSTALLED = {"torch": "", "torchvision": "", "numpy": "", "scipy": "", "matplotlib": "", "tqdm": "",
                      "ipywidgets": "", "IPython": "the notebook kernel", "PIL": "pillow, which torchvision requires",
                      "filelock": "which torch requires"}
COLAB_OPTIONAL = {
    "diffusers": "notebook 04: the checks of exercises 4.1-4.8 compare with its DDPMScheduler, and DeepFloyd IF "
                 "runs through it",
    "transformers": "notebook 04 on DeepFloyd IF only (its T5 text encoder)",
    "skimage": "notebook 04 on DeepFloyd IF only (its test image); the package is scikit-image",
    "google": "provided by Colab itself (`google.colab`: Drive and file downloads)",
}


class CourseError(ValueError):
    """A marked region the builder cannot turn into a stub (no hint line, unknown exercise, unclosed), or a
    written-answer table that does not match the notebooks."""


@dataclass(frozen=True)
class Answer:
    """One written answer the course asks for (a ``[[answer]]`` table of notebooks/deliverables.toml)."""
    row: str        # the deliverable row it belongs to
    notebook: str   # the notebook's two-digit key
    reference: str  # id of the instructor notebook's markdown cell holding the reference answer
    cell: str       # id of the answer cell the edition puts in its place
    points: int
    prompt: str     # the course's question, one sentence


def hints(text: str, where: str) -> list[tuple[str, str]]:
    """(exercise key, hint) of every marked region of `text`, in order, from the line above its BEGIN marker."""
    lines, found = text.split("\n"), []
    for number, line in enumerate(lines):
        if BEGIN in line:
            match = HINT.match(lines[number - 1]) if number else None
            if match is None:
                raise CourseError(f"{where}, line {number + 1}: a solution region needs a '# Exercise K hint: ...' "
                                  f"line right above {BEGIN!r}")
            if match[1] not in BY_KEY:
                raise CourseError(f"{where}, line {number}: exercise {match[1]} is not in helpers.exercises.EXERCISES")
            found.append((match[1], match[2].strip()))
    return found


def _clear_solutions() -> ClearSolutions:
    return ClearSolutions(code_stub={"python": STUB_MARK}, enforce_metadata=False)


def _stub(key: str, hint: str) -> str:
    return f"{STUB_IMPORT}\nraise ExerciseMissing({key!r}, {hint!r})"


def _fill_stubs(text: str, found: list[tuple[str, str]]) -> str:
    """Replace the n-th STUB_MARK (indented by ClearSolutions) by the n-th region's stub."""
    pieces = text.split(STUB_MARK)
    out = [pieces[0]]
    for (key, hint), piece in zip(found, pieces[1:]):
        indent = out[-1][out[-1].rfind("\n") + 1:]
        out.append(_stub(key, hint).replace("\n", "\n" + indent) + piece)
    return "".join(out)


def strip_source(text: str, where: str) -> tuple[str, list[str]]:
    """`text` with every marked region replaced by its stub (nbgrader's ClearSolutions on one code cell),
    and the keys of the exercises it holds."""
    found = hints(text, where)
    if not found:
        return text, []
    cell = nbformat.v4.new_code_cell(text)
    _clear_solutions()._replace_solution_region(cell, "python")
    return _fill_stubs(cell.source, found), [key for key, _ in found]


def notebook_files(root: Path = ROOT) -> list[Path]:
    """The course's notebooks in `root`/notebooks, without the executed copies that ``render --inplace`` keeps
    beside a notebook edited while it ran (``<name>.executed-<time>.ipynb``, for the instructor to merge)."""
    return sorted(path for path in (root / "notebooks").glob("*.ipynb")
                  if not re.fullmatch(r".+\.executed-\d{8}-\d{6}\.ipynb", path.name))


def sources(root: Path = ROOT) -> list[Path]:
    """The helpers package's Python files, subpackages included."""
    return sorted(path for path in (root / "helpers").rglob("*.py") if "__pycache__" not in path.parts)


def active_exercises(root: Path = ROOT) -> list[str]:
    """Keys of the exercises whose regions are marked in `root`'s helpers, in table order."""
    keys = set()
    for path in sources(root):
        keys.update(key for key, _ in hints(path.read_text(), str(path.relative_to(root))))
    return [exercise.key for exercise in EXERCISES if exercise.key in keys]


def answers(path: Path = DELIVERABLES) -> list[Answer]:
    """The ``[[answer]]`` tables of notebooks/deliverables.toml, checked against its rows and notebooks."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise CourseError(f"{path} cannot be read ({error}): fix it before building the edition") from None
    rows = {row.get("id") for row in raw.get("deliverable", ())}
    found, cells = [], {}
    for number, table in enumerate(raw.get("answer", ()), 1):
        where = f"{Path(path).name}, [[answer]] number {number}"
        try:
            answer = Answer(**{name: table[name] for name in Answer.__dataclass_fields__})
        except KeyError as missing:
            raise CourseError(f"{where} has no {missing.args[0]!r}: give row, notebook, reference, cell, points "
                              "and prompt") from None
        if answer.row not in rows:
            raise CourseError(f"{where}: row {answer.row!r} is not a deliverable id of that file")
        if answer.notebook not in raw.get("notebooks", {}):
            raise CourseError(f"{where}: notebook {answer.notebook!r} is not a key of its [notebooks] table")
        if not re.fullmatch(r"answer-[0-9]{2}-[0-9]+", answer.cell):
            raise CourseError(f"{where}: cell {answer.cell!r} must be an id of the form answer-NN-K")
        if not isinstance(answer.points, int) or answer.points < 1 or not str(answer.prompt).strip():
            raise CourseError(f"{where}: points must be a positive whole number and prompt a sentence")
        first = cells.setdefault(answer.cell, answer)
        if (first.notebook, first.reference, first.points, first.prompt) != \
                (answer.notebook, answer.reference, answer.points, answer.prompt):
            raise CourseError(f"{where}: cell {answer.cell!r} is already another answer's; rows that share an answer "
                              "cell give it the same notebook, reference, points and prompt")
        found.append(answer)
    return found


def exercise_cells(key: str) -> list[NotebookNode]:
    exercise = BY_KEY[key]
    text = (f"**Exercise {key}: {exercise.title}.** Fill in {exercise.where} (the `# Exercise {key} hint` line "
            f"there says how to start), then run the check below until it passes.")
    name = "exercise-" + key.replace(".", "-")
    return [nbformat.v4.new_markdown_cell(text, id=f"{name}-text"),
            nbformat.v4.new_code_cell(f"{exercise.imports}\n{exercise.check}", id=f"{name}-check")]


def answer_cells(answer: Answer, rows: list[str]) -> list[NotebookNode]:
    """The question, then nbgrader's manually graded answer cell (markdown, its stub text to replace)."""
    question = nbformat.v4.new_markdown_cell(
        f"**Written answer ({', '.join(rows)}; {answer.points} point{'s' * (answer.points != 1)}).** {answer.prompt} "
        "Write your answer in the cell below, in place of its text.", id=f"{answer.cell}-question")
    cell = nbformat.v4.new_markdown_cell(ANSWER_STUB, id=answer.cell)
    cell.metadata["nbgrader"] = {"grade": True, "solution": True, "locked": False, "points": answer.points,
                                 "grade_id": answer.cell, "schema_version": 3}
    return [question, cell]


def hand_in_cells() -> list[NotebookNode]:
    text = ("## Hand in\nSave this notebook, then run the cell below. It packs your work into `handin.handin.zip` at "
            "the repository's root: every notebook with its outputs, your exercise files in `helpers/` and a "
            "manifest. It says which notebooks have no outputs yet and which exercises are still stubs, then packs "
            "anyway; on Colab it also downloads the file. Hand in that file (from a terminal: "
            "`python -m helpers.handin --name YOUR_ID`).")
    return [nbformat.v4.new_markdown_cell(text, id="hand-in-text"), nbformat.v4.new_code_cell(HAND_IN, id="hand-in")]


def student_notebook(nb: NotebookNode, name: str, active: list[str], repository: str | None = None,
                     written: list[Answer] = (), branch: str = badges.BRANCH) -> NotebookNode:
    """The student copy of a notebook: nbgrader's ClearSolutions over its cells; the set-up cell and badge for
    `repository`; an exercise and check cell before the first cell needing each active exercise; each written
    answer's question and answer cell in place of its reference; the hand-in cell last; no outputs."""
    found = [h for index, cell in enumerate(nb.cells) if cell.cell_type == "code"
             for h in hints(cell.source, f"{name}, cell {index}")]
    ids = [cell.get("id") for cell in nb.cells]
    missing = [key for key in active if BY_KEY[key].notebook == name and BY_KEY[key].before not in ids]
    if missing:
        raise CourseError(f"{name} has no cell with the id named for exercise(s) {missing} in helpers.exercises")
    by_reference: dict[str, dict[str, list[Answer]]] = {}   # reference cell -> answer cell -> its answers (rows)
    for answer in written:
        by_reference.setdefault(answer.reference, {}).setdefault(answer.cell, []).append(answer)
    for answer in written:
        at = ids.index(answer.reference) if answer.reference in ids else None
        if at is None or nb.cells[at].cell_type != "markdown":
            raise CourseError(f"{name} has no markdown cell {answer.reference!r}, the reference answer that "
                              f"notebooks/deliverables.toml names for {answer.cell}")
    nb, _ = _clear_solutions().preprocess(nb, {})
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            count = cell.source.count(STUB_MARK)
            cell.source = _fill_stubs(cell.source, found[:count])
            found = found[count:]
            cell.outputs, cell.execution_count = [], None
        for key in active:
            if BY_KEY[key].notebook == name and BY_KEY[key].before == cell.get("id"):
                cells += exercise_cells(key)
        if cell.get("id") in by_reference:
            for shared in by_reference[cell.get("id")].values():
                cells += answer_cells(shared[0], [answer.row for answer in shared])
            continue
        cells.append(cell)
    setup = next(c for c in cells if c.cell_type == "code")
    setup.source = badges.setup_cell(repository, local_hint=LOCAL_HINT) + "\n" + SETUP
    title = next(c for c in cells if c.cell_type == "markdown")
    if repository is not None and badges.github_parts(repository):
        title.source = badges.with_badge(title.source, name, repository, branch)
    else:
        title.source = badges.without_badge(title.source)
    nb.cells = cells + hand_in_cells()
    nb.metadata.pop("widgets", None)
    nbformat.validate(nb)
    return nb


def imported_modules(root: Path = ROOT) -> dict[str, list[str]]:
    """Third-party top-level modules imported by `root`'s helpers and notebooks -> the files importing them."""
    from IPython.core.inputtransformer2 import TransformerManager
    texts = [(path, path.read_text()) for path in sources(root)]
    for path in notebook_files(root):
        texts += [(path, TransformerManager().transform_cell(cell.source))
                  for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    found: dict[str, set] = {}
    for path, text in texts:
        for node in ast.walk(ast.parse(text)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for top in {name.split(".")[0] for name in names} - set(sys.stdlib_module_names) - {"helpers"}:
                found.setdefault(top, set()).add(path.relative_to(root).as_posix())
    return {name: sorted(files) for name, files in sorted(found.items())}


def colab_section(root: Path = ROOT) -> str:
    """The README's Colab paragraph: every third-party module the notebooks and helpers import, classified."""
    modules = imported_modules(root)
    unknown = sorted(set(modules) - set(COLAB_PREINSTALLED) - set(COLAB_OPTIONAL))
    if unknown:
        raise CourseError(f"{', '.join(unknown)} (imported by {modules[unknown[0]][0]}) is neither in "
                          "COLAB_PREINSTALLED nor in COLAB_OPTIONAL of instructor/edition.py: say there how Colab "
                          "gets it, so that the README lists every package the notebooks import")
    preinstalled = ", ".join(f"`{name}`" + (f" ({COLAB_PREINSTALLED[name]})" if COLAB_PREINSTALLED[name] else "")
                             for name in modules if name in COLAB_PREINSTALLED)
    optional = "".join(f"\n- `{name}`: {COLAB_OPTIONAL[name]}" for name in modules if name in COLAB_OPTIONAL)
    return (f"The notebooks and `helpers` import {preinstalled}, which Colab preinstalls (so does a local "
            f"environment made from `environment.yml`). Only where noted they also import:{optional}\n\n"
            "On Colab, before notebook 04: "
            "`%pip install diffusers` (and, for DeepFloyd IF on a GPU, `transformers sentencepiece accelerate`, "
            "a Hugging Face token and the model's licence accepted). Without them notebook 04 says so in one "
            "sentence and continues on the course's stand-in model.")


def readme(active: list[str], root: Path = ROOT, repository: str | None = None, branch: str = badges.BRANCH) -> str:
    rows = "\n".join(f"| {k} | {BY_KEY[k].title} | `{BY_KEY[k].file}`: {BY_KEY[k].names} | `{BY_KEY[k].check}` | "
                     f"`notebooks/{BY_KEY[k].notebook}` |" for k in active)
    notebooks = [path.name for path in notebook_files(root) if re.match(r"[0-9]{2}_", path.name)]
    if repository and badges.github_parts(repository):
        opening = "Open each notebook on Colab from its badge:\n\n" + "\n".join(
            f"- [{name}]({badges.colab_url(name, repository, branch)})" for name in notebooks)
    else:
        opening = "Open the notebooks in `notebooks/`, in order: " + ", ".join(notebooks) + "."
    return f"""# Diffusion and flow matching: student edition

Each exercise is a stub in a `helpers` file that raises `ExerciseMissing` with a hint; fill it in and run the
check cell the notebook puts after it. Cells that need an unfinished exercise say which one they wait for.
Written answers go in the answer cells the notebooks mark ("YOUR ANSWER HERE").

| exercise | what | where | check | notebook |
|---|---|---|---|---|
{rows}

## Where to work

{opening}

**On Colab**, the first cell of every notebook clones this repository into `/content` (once per Colab VM) and works
there. Colab discards a VM when it is idle, and `/content` with it: set `KEEP_CHECKPOINTS_ON_DRIVE = True` in that
cell to keep your trained models on Google Drive, so that training resumes on the next VM. Your edits to the
`helpers` files live in `/content` too: download them (or hand in) before you leave.

{colab_section(root)}

**Locally**: `conda env create -f environment.yml`, or a virtual environment with the packages it lists
(`pip install -e .` installs `helpers`); then `jupyter lab` and open the notebooks in `notebooks/`.

`WORKBOOK_PROFILE` picks the budget: `smoke` (seconds, figures meaningless), `cpu` (a laptop, minutes) or `full`
(the assignment's settings, for a GPU; the default where CUDA is available).

## What is trained for you

The course provides trained the models that are instruments or stand-ins, not exercises: the digit classifier that
measures samples, and notebook 04's stand-in for DeepFloyd IF (a class-conditioned flow model of MNIST digits and
Fashion-MNIST items) with its classifier, in `checkpoints/cpu/` (other profiles train them on first use). Every
model an exercise asks for (notebook 01's denoisers, the flow-matching UNets of notebooks 02 and 03, notebook 05's
locality calibration) you train yourself. The stand-in is built from your `ConditionalCourseUNet`: it loads once
exercises 1.2, 1.3, 2.1 and 3.1 are done as the course figure draws them.

## Handing in

Run the last cell of any notebook (`hand_in()`), or from a terminal in this repository
`python -m helpers.handin --name YOUR_ID`. Save your notebooks first: the archive takes them from disk. It writes
`YOUR_ID.handin.zip` (default `handin.handin.zip`) at the repository's root with every notebook and its outputs,
your exercise files in `helpers/` and a manifest (this release's version, the profile and device you ran in, a
hash of every file). It says which notebooks have no outputs and which exercises are still stubs, then packs
anyway; on Colab it also downloads the archive. Hand in that one file.
"""


def _tracked(root: Path, folder: str) -> list[Path]:
    """The files of `folder` that `root`'s git repository tracks (a checkout without git: every file there)."""
    done = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--", folder], capture_output=True)
    if done.returncode != 0:
        return sorted(p.relative_to(root) for p in (root / folder).rglob("*") if p.is_file())
    return sorted(Path(name) for name in done.stdout.decode().split("\0") if name and (root / name).is_file())


def shipped_files(root: Path = ROOT) -> list[Path]:
    """The data and checkpoint files the edition copies: tracked in git, no link, checkpoints of COURSE_PROVIDED
    runs only (relative paths)."""
    files = [path for path in _tracked(root, "data")] + [
        path for path in _tracked(root, "checkpoints") if len(path.parts) == 4 and path.parts[2] in COURSE_PROVIDED]
    return [path for path in files if not (root / path).is_symlink()]


def _environment(text: str) -> str:
    """The instructor's environment.yml for students: the same packages and pins, without its comments (which
    speak of the instructor's tools) and with a header of its own."""
    lines = [re.sub(r"\s+#.*$", "", line) for line in text.splitlines() if not line.lstrip().startswith("#")]
    return ("# The packages of the student edition: conda env create -f environment.yml, or pip install each one\n"
            "# listed under pip (the last, `-e .`, installs this repository's `helpers`).\n"
            + "\n".join(line for line in lines if line.strip()) + "\n")


def _pyproject(text: str) -> str:
    """The instructor's pyproject.toml without its `instructor` package (the edition has none)."""
    return re.sub(r',\s*"instructor\*?"', "", text)


def edition_files(root: Path, active: list[str], repository: str | None, branch: str) -> dict[str, bytes]:
    """Every file of the student edition, by its path relative to the edition's folder."""
    written = answers(root / "notebooks" / "deliverables.toml")
    notebook_keys = tomllib.loads((root / "notebooks" / "deliverables.toml").read_text()).get("notebooks", {})
    files: dict[str, bytes] = {}
    for path in notebook_files(root):
        mine = [answer for answer in written if notebook_keys.get(answer.notebook) == path.name]
        text = nbformat.writes(student_notebook(nbformat.read(path, as_version=4), path.name, active, repository,
                                                mine, branch))
        files[f"notebooks/{path.name}"] = (text if text.endswith("\n") else text + "\n").encode()
    for path in sources(root):
        text, _ = strip_source(path.read_text(), str(path.relative_to(root)))
        files[path.relative_to(root).as_posix()] = text.encode()
    for relative in shipped_files(root):
        files[Path(relative).as_posix()] = (root / relative).read_bytes()
    files["pyproject.toml"] = _pyproject((root / "pyproject.toml").read_text()).encode()
    files["environment.yml"] = _environment((root / "environment.yml").read_text()).encode()
    if (root / "LICENSE").is_file():
        files["LICENSE"] = (root / "LICENSE").read_bytes()
    files["README.md"] = readme(active, root, repository, branch).encode()
    return files


def _changed_by_user(folder: OutputFolder, files: dict[str, bytes]) -> list[str]:
    """The files of an earlier edition a rebuild would replace or remove whose content is not what the edition
    wrote there (by the manifest's digest; without one, any content other than the new): a student's work."""
    changed = []
    for name in sorted(set(files) | folder.groups.get(GROUP, set())):
        path = folder.path / name
        if path.is_symlink() or not path.is_file():
            continue
        content = path.read_bytes()
        if content == files.get(name) or hashlib.sha256(content).hexdigest() == folder.digests.get(name):
            continue
        changed.append(name)
    return changed


def _lock_file(real: Path) -> Path:
    """The edition's lock: beside the folder (which the build swaps), unless only the folder itself is writable."""
    real.parent.mkdir(parents=True, exist_ok=True)
    if os.access(real.parent, os.W_OK | os.X_OK):
        return real.parent / f".{real.name}.edition.lock"
    real.mkdir(exist_ok=True)
    return real / ".edition.lock"


def build(out: Path, root: Path = ROOT, repository: str | None = None, branch: str = badges.BRANCH,
          replace: bool = False, wait: bool = False) -> list[str]:
    """Write the student edition to `out`; returns the active exercises. `repository` is the URL the set-up cells
    clone and the badges open.

    The folder keeps a manifest of the files the edition wrote, with their digests (`instructor.output_folder`): a
    rebuild replaces those and removes those it no longer writes, and leaves every other file alone; a file it
    would overwrite that it did not write is refused in one sentence (unless `replace`). A file the student changed
    since the edition wrote it (a solution in ``helpers/``, an edited notebook) is first kept in
    ``.backup/<time>/`` and the message names it. One build at a time: a second is refused in one sentence naming
    the first (or waits for it, with `wait`). The new edition is built beside `out` and swapped in as one
    (`OutputFolder.swap_tree`), so a kill at any point or a full disk leaves the previous edition whole, or the new
    one; a tree a kill left beside `out` is emptied by the next build, which moves back anything that was not its
    own. An --out that holds the repository or lies in one of its source folders is refused."""
    out = Path(out)
    refuse_source_tree(out, root, default="student/")
    OutputFolder(out, COMMAND).check([])   # a file, an unwritable place or a damaged manifest: said before any work
    active = active_exercises(root)
    files = edition_files(root, active, repository, branch)
    real = out.resolve()
    try:
        lock_file = _lock_file(real)
    except OSError as error:
        raise atomic.WriteError(error.errno, atomic.describe(error, real)) from None
    with folder_lock(lock_file, f"--out {out}", wait):
        folder = OutputFolder(out, COMMAND)          # read again under the lock
        folder.check(list(files), replace=replace, need_bytes=2 * sum(map(len, files.values())))
        rescued = folder.settle_leftovers()
        done = folder.swap_tree(files, GROUP, keep=_changed_by_user(folder, files))
    rescued += done.rescued
    if done.kept_in:
        count = sum(1 for path in (real / done.kept_in).rglob("*") if path.is_file())
        print(f"{count} file{'s' if count > 1 else ''} of the earlier edition had changed since it was written (your "
              f"work?): kept in {out / done.kept_in} before {'they were' if count > 1 else 'it was'} replaced.")
    if rescued:
        shown = ", ".join(rescued[:3]) + (f" and {len(rescued) - 3} more" if len(rescued) > 3 else "")
        print(f"{len(rescued)} file{'s' if len(rescued) > 1 else ''} saved into {out} while an edition was being "
              f"built, or left by one that was stopped, {'were' if len(rescued) > 1 else 'was'} kept: {shown}.")
    return active


def fill(student: Path, root: Path = ROOT, keep: tuple[str, ...] = ()) -> int:
    """Put the reference regions of `root`'s helpers back into the stubs of a built edition, by the markers:
    each stub becomes the marked region it replaced, except the stubs of the exercises in `keep`.
    Returns the number of regions filled."""
    stub = re.compile(rf"^[ \t]*{re.escape(STUB_IMPORT)}\n[ \t]*raise ExerciseMissing\('([^']+)'.*\n", flags=re.M)
    filled = []
    for path in sources(root):
        reference = path.read_text()
        regions = re.findall(rf"^[ \t]*{BEGIN}\n.*?^[ \t]*{END}\n", reference, flags=re.M | re.S)
        by_key: dict[str, list[str]] = {}
        for (key, _), region in zip(hints(reference, str(path)), regions):
            by_key.setdefault(key, []).append(region)
        if not regions:
            continue
        target = Path(student) / path.relative_to(root)

        def restore(match):
            if match[1] in keep:
                return match[0]
            if not by_key.get(match[1]):
                raise CourseError(f"{target} has more stubs of exercise {match[1]} than {path} has regions")
            filled.append(match[1])
            return by_key[match[1]].pop(0)
        atomic.write_text(target, stub.sub(restore, target.read_text()))
    return len(filled)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m instructor student", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "student", help="output folder (default: student/)")
    parser.add_argument("--replace", action="store_true",
                        help="replace files in --out that an earlier edition did not write (others are left alone)")
    parser.add_argument("--repository", help="the URL the set-up cells clone and the badges open (default: none; "
                                             "`python -m instructor release` sets it)")
    parser.add_argument("--wait", action="store_true",
                        help="if another build is writing --out, wait for it to finish (default: refuse)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        active = build(args.out, repository=args.repository, replace=args.replace, wait=args.wait)
    except (CourseError, FolderError, ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    print(f"student edition in {args.out}: {len(active)} exercises ({', '.join(active)}), "
          f"{time.perf_counter() - start:.1f} s")
