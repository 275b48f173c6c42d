"""The student edition: ``python -m instructor student [--out student/]`` (or ``make student``).

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
- the set-up cell also turns on autoreload (an edited helpers file is picked up without a restart) and
  `helpers.exercises.explain_missing`, which prints one line for an unfinished exercise's check cell
  (its hint) and for every later cell that waits for it.

An exercise is active once its file carries its markers: the others stay as reference code, without a
check cell. `fill(student_dir)` puts the reference regions back into a built edition, by the markers
(the round-trip test uses it). The edition also carries `data/` (MNIST linked where it is present
here), `environment.yml`, `pyproject.toml` and a README listing the exercises.
"""
import argparse
import re
import shutil
import time
from pathlib import Path

import nbformat
from nbformat import NotebookNode
from nbgrader.preprocessors import ClearSolutions

from helpers.exercises import BY_KEY, EXERCISES

ROOT = Path(__file__).resolve().parent.parent
# nbgrader's markers, spelled in two pieces: ClearSolutions treats any line containing them as a marker.
BEGIN, END = "### BEGIN " + "SOLUTION", "### END " + "SOLUTION"
HINT = re.compile(r"^\s*# Exercise (\S+) hint: (.+)$")
STUB_MARK = "@@EXERCISE_STUB@@"
STUB_IMPORT = "from helpers.exercises import ExerciseMissing"
SETUP = ("%load_ext autoreload\n%autoreload 2\n"
         "from helpers.exercises import explain_missing\nexplain_missing()  # one line per unfinished exercise")


class CourseError(ValueError):
    """A marked region the builder cannot turn into a stub (no hint line, unknown exercise, unclosed)."""


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


def sources(root: Path = ROOT) -> list[Path]:
    """The helpers package's Python files, subpackages included."""
    return sorted(path for path in (root / "helpers").rglob("*.py") if "__pycache__" not in path.parts)


def active_exercises(root: Path = ROOT) -> list[str]:
    """Keys of the exercises whose regions are marked in `root`'s helpers, in table order."""
    keys = set()
    for path in sources(root):
        keys.update(key for key, _ in hints(path.read_text(), str(path.relative_to(root))))
    return [exercise.key for exercise in EXERCISES if exercise.key in keys]


def exercise_cells(key: str) -> list[NotebookNode]:
    exercise = BY_KEY[key]
    text = (f"**Exercise {key}: {exercise.title}.** Fill in {exercise.where} (the `# Exercise {key} hint` line "
            f"there says how to start), then run the check below until it passes.")
    name = "exercise-" + key.replace(".", "-")
    return [nbformat.v4.new_markdown_cell(text, id=f"{name}-text"),
            nbformat.v4.new_code_cell(f"{exercise.imports}\n{exercise.check}", id=f"{name}-check")]


def student_notebook(nb: NotebookNode, name: str, active: list[str]) -> NotebookNode:
    """The student copy of a notebook: nbgrader's ClearSolutions over its cells, the set-up cell
    extended, an exercise and check cell before the first cell needing each active exercise; no outputs."""
    found = [h for index, cell in enumerate(nb.cells) if cell.cell_type == "code"
             for h in hints(cell.source, f"{name}, cell {index}")]
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
        cells.append(cell)
    setup = next(c for c in cells if c.cell_type == "code")
    setup.source = setup.source + "\n" + SETUP
    missing = [key for key in active if BY_KEY[key].notebook == name
               and not any(c.get("id") == BY_KEY[key].before for c in nb.cells)]
    if missing:
        raise CourseError(f"{name} has no cell with the id named for exercise(s) {missing} in helpers.exercises")
    nb.cells = cells
    nb.metadata.pop("widgets", None)
    nbformat.validate(nb)
    return nb


def readme(active: list[str]) -> str:
    rows = "\n".join(f"| {k} | {BY_KEY[k].title} | `{BY_KEY[k].file}`: {BY_KEY[k].names} | `{BY_KEY[k].check}` | "
                     f"`notebooks/{BY_KEY[k].notebook}` |" for k in active)
    return ("# Diffusion and flow matching: student edition\n\nOpen the notebooks in order. Each exercise is a stub "
            "in a `helpers` file that raises `ExerciseMissing` with a hint; fill it in and run the check cell the "
            "notebook puts after it. Cells that need an unfinished exercise say which one they wait for.\n\n"
            "| exercise | what | where | check | notebook |\n|---|---|---|---|---|\n" + rows + "\n")


def build(out: Path, root: Path = ROOT) -> list[str]:
    """Write the student edition to `out` (replacing a previous build there); returns the active exercises."""
    out = Path(out)
    if out.resolve() == root.resolve():
        raise CourseError(f"--out {out} would overwrite the reference sources: choose a separate folder")
    active = active_exercises(root)
    for sub in ("helpers", "notebooks"):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / "helpers").mkdir(parents=True)
    (out / "notebooks").mkdir()
    for path in sources(root):
        text, _ = strip_source(path.read_text(), str(path.relative_to(root)))
        target = out / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        nb = student_notebook(nbformat.read(path, as_version=4), path.name, active)
        nbformat.write(nb, out / "notebooks" / path.name)
    _copy_data(root / "data", out / "data")
    for name in ("environment.yml", "pyproject.toml"):
        shutil.copy2(root / name, out / name)
    (out / "README.md").write_text(readme(active))
    return active


def _copy_data(source: Path, target: Path) -> None:
    """data/ without MNIST and downloads; MNIST is linked where this checkout has it (it downloads otherwise)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("MNIST", "downloads"))
    if (source / "MNIST").exists():
        (target / "MNIST").symlink_to((source / "MNIST").resolve(), target_is_directory=True)


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
        target.write_text(stub.sub(restore, target.read_text()))
    return len(filled)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m instructor student", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "student", help="output folder (default: student/)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    active = build(args.out)
    print(f"student edition in {args.out}: {len(active)} exercises ({', '.join(active)}), "
          f"{time.perf_counter() - start:.1f} s")

