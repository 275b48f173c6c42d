"""Execute notebooks in the active profile and write the instructor's report of their deliverables.

    python -m instructor render                 # execute every notebook -> rendered/<profile>/ (report: index.html)
    python -m instructor render --inplace       # also store the outputs in notebooks/ (to commit them)
    python -m instructor render notebooks/01_one_step_denoising.ipynb   # execute just one (others: stored outputs)
    python -m instructor render --report-only   # execute nothing: the report from the stored outputs, in seconds
    python -m instructor render --notebooks DIR [--report-only]         # a student's folder, graded the same way

The report (instructor/report.py) has one row per deliverable of notebooks/deliverables.toml. Each executed
notebook's time is printed and saved in timings.json beside it. A notebook that fails is written nowhere
(with --inplace its file is left as it was); the command then stops with status 1, as it does when a
deliverable has no output.

The output folder: render records the files it writes there in ``.manifest.json`` (`instructor.output_folder`).
A rebuild replaces those, removes the report files it no longer writes, and leaves every other file alone (a
user's figures/mine.png stays). It refuses, before executing anything, a folder that holds a file of a name it
would write but did not write itself, unless given --replace, which also counts the report pages and figures
already there under the report's names as its own (the default folder rendered/<profile>/ is its own); likewise a folder it cannot write, one without room for the notebooks, and a timings.json that is not its
own JSON; and an --out that holds the repository or lies in its source folders or in --notebooks. Every file is
written atomically with the user's normal mode (a temporary beside it, then a rename; the report's files are
swapped in together once all are written), so an interruption or a full disk leaves the previous version whole;
if an executed notebook cannot be written, it is saved under the system's temporary folder instead, and the
message says where.

One render at a time per output folder: while it runs it holds ``.render.lock`` there (`filelock`; git ignores
it, and it is removed at the end), and a second render into that folder is refused in one sentence naming the
first (process, host, command, since), or waits for it with --wait. With --inplace, each notebook is written back
only if its file still holds the bytes that were executed (checked just before the swap): a notebook someone
edited while it executed is left as it is, the executed one is written beside it as
``<name>.executed-<time>.ipynb``, and the command says so in one sentence and ends with status 1.
"""
import argparse
import hashlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from helpers.foundation import atomic
from helpers.training.profile import current_profile
from instructor import report
from instructor.output_folder import MANIFEST, FolderError, OutputFolder, folder_lock, refuse_source_tree

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
COMMAND = "python -m instructor render"
TIMINGS = "timings.json"
LOCK_NAME = ".render.lock"    # in the output folder while a render writes it (git ignores .*.lock)


def read_source(path: Path) -> tuple[nbformat.NotebookNode, str]:
    """The notebook at `path` and the SHA-256 of the bytes it was read from (to tell, before the executed notebook
    is written back, whether someone edited the file meanwhile); a one-sentence `report.NotebookError` when it is
    missing or no notebook."""
    try:
        data = path.read_bytes()
        notebook = nbformat.reads(data.decode("utf-8"), as_version=4)
        nbformat.validate(notebook)
    except Exception:  # nbformat raises JSON, validation, unicode and version errors alike
        report.read_notebook(path)        # raises its one sentence naming what is wrong
        raise report.NotebookError(f"{path} changed while it was read: render it again.") from None
    return notebook, hashlib.sha256(data).hexdigest()


def execute(notebook: nbformat.NotebookNode, path: Path, timeout: int) -> float:
    """Run `notebook` (read from `path`) top to bottom in its folder, storing the outputs in it; the wall time."""
    start = time.perf_counter()
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return time.perf_counter() - start


def write_back(notebook: nbformat.NotebookNode, path: Path, digest: str) -> Path | None:
    """--inplace: write the executed `notebook` over its source `path` if the file still holds the bytes it was
    read from (SHA-256 `digest`), checked just before the swap; if it was edited (or removed) meanwhile, leave it
    and write the executed notebook beside it as ``<name>.executed-<time>.ipynb``, which is returned."""
    try:
        current = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        current = None
    if current == digest:
        write_atomic(notebook, path)
        return None
    aside = path.with_name(f"{path.stem}.executed-{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}")
    write_atomic(notebook, aside)
    return aside


def write_atomic(notebook: nbformat.NotebookNode, path: Path, batch: atomic.Batch | None = None) -> None:
    """Write a notebook atomically (`helpers.foundation.atomic`), into `batch` when given; a failure to write is
    an `atomic.WriteError` with one sentence."""
    if batch is not None:
        nbformat.write(notebook, batch.open(path, "w", encoding="utf-8"))
        return
    with atomic.write_atomic(path, "w", encoding="utf-8") as file:
        nbformat.write(notebook, file)


def read_timings(path: Path) -> dict:
    """timings.json as {notebook: seconds}; {} when missing; FolderError (one sentence) when it is anything else."""
    if not path.exists():
        return {}
    try:
        timings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise FolderError(f"{path} is not the JSON render writes ({type(error).__name__}): delete it or move it "
                          "away, and render writes a new one.") from None
    if not isinstance(timings, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for k, v in timings.items()):
        raise FolderError(f"{path} is JSON but not render's table of seconds by notebook: delete it or move it "
                          "away, and render writes a new one.")
    return timings


def salvage(notebook: nbformat.NotebookNode, name: str) -> Path | None:
    """Save an executed notebook that could not be written where asked under the system's temporary folder."""
    try:
        folder = Path(tempfile.mkdtemp(prefix="render-unsaved-"))
        write_atomic(notebook, folder / name)
        return folder / name
    except OSError:
        return None


def report_names(mapping: report.Mapping, folder: Path, notebooks: dict) -> list[str]:
    """The files a report of `notebooks` may write in `folder` that can be named before it is built: its pages,
    and the figures already there under its naming (figures/<notebook>-...)."""
    stems = [Path(name).stem for key, name in mapping.notebooks.items() if notebooks.get(key) is not None]
    names = ["index.html", "style.css", *(f"{stem}.html" for stem in stems)]
    figures = folder / "figures"
    if figures.is_dir():
        names += [f"figures/{p.name}" for p in figures.iterdir() if p.name.startswith(tuple(f"{s}-" for s in stems))]
    return names


def remove_leftovers(folder: OutputFolder, names: list[str], to_run: list[Path], inplace: bool) -> None:
    """Remove the temporaries an earlier, killed render left for the files this one writes (in the output folder,
    its figures/, and with --inplace beside the notebooks); called while this render holds the folder's lock."""
    wanted = set(names) | folder.recorded | {MANIFEST}
    atomic.remove_leftovers(folder.path, {name for name in wanted if "/" not in name})
    figures = folder.path / "figures"
    if figures.is_dir():
        stems = tuple(name.removesuffix(".html") + "-" for name in wanted if name.endswith(".html"))
        atomic.remove_leftovers(figures, {match["name"] for entry in figures.iterdir()
                                          if (match := atomic.LEFTOVER.fullmatch(entry.name))
                                          and match["name"].startswith(stems)})
    for path in to_run if inplace else ():
        atomic.remove_leftovers(path.parent, {path.name})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m instructor render", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks to execute (default: all of the folder)")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS,
                        help="the folder of NN_name.ipynb notebooks to report on (default: notebooks/)")
    parser.add_argument("--report-only", action="store_true", help="execute nothing; report the stored outputs")
    parser.add_argument("--inplace", action="store_true", help="also write the outputs back into the notebooks")
    parser.add_argument("--out", type=Path, help="report folder (default: rendered/<profile>/, render's own)")
    parser.add_argument("--replace", action="store_true",
                        help="replace files in --out that render would write but has no record of writing")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    parser.add_argument("--wait", action="store_true",
                        help="if another render is writing --out, wait for it to finish (default: refuse)")
    args = parser.parse_args(argv)
    if args.report_only and (args.paths or args.inplace):
        parser.error("--report-only executes nothing: drop the notebook paths and --inplace")
    try:
        mapping = report.load_mapping()
        notebooks = report.read_folder(args.notebooks, mapping)
        to_run = [] if args.report_only else [p.resolve() for p in args.paths] or sorted(
            (args.notebooks / name).resolve() for key, name in mapping.notebooks.items() if notebooks[key] is not None)
        for path in to_run:
            report.read_notebook(path)  # every path checked before an hour of execution starts
    except report.NotebookError as err:
        sys.exit(f"error: {err}")

    if args.report_only:
        profiles = {report.recorded_profile(nb) for nb in notebooks.values() if nb is not None}
        profile = profiles.pop() if len(profiles) == 1 else "mixed"
    else:
        profile = current_profile()
    out_dir = args.out or ROOT / "rendered" / profile
    keys = {name: key for key, name in mapping.notebooks.items()}
    # everything that could stop the run is checked before the first notebook executes
    try:
        refuse_source_tree(out_dir, ROOT, default="rendered/<profile>/", also=[args.notebooks])
        folder = OutputFolder(out_dir, COMMAND, own_default=args.out is None)
        size = sum(path.stat().st_size for path in to_run)
        stored = sum((args.notebooks / name).stat().st_size for key, name in mapping.notebooks.items()
                     if notebooks[key] is not None)
        present = {**notebooks, **{keys[path.name]: True for path in to_run if path.name in keys}}
        pages = report_names(mapping, out_dir, present)
        names = [path.name for path in to_run] + ([TIMINGS] if to_run else []) + pages
        # room for the executed notebooks (their size again, at least) and the report (about the notebooks' size)
        folder.check(names, replace=args.replace, need_bytes=2 * size + stored)
        if args.inplace:
            for parent in sorted({path.parent for path in to_run}):
                try:
                    atomic.check_folder(parent, size)
                except atomic.WriteError as error:
                    raise FolderError(f"--inplace: {error}") from None
        if to_run:
            read_timings(out_dir / TIMINGS)
    except FolderError as err:
        sys.exit(f"error: {err}")
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(out_dir / LOCK_NAME, f"--out {out_dir}", args.wait):
            # read and checked again under the lock (a render that held it may have changed the folder); its space
            # was checked just before
            folder = OutputFolder(out_dir, COMMAND, own_default=args.out is None)
            folder.check(names, replace=args.replace)
            timings = read_timings(out_dir / TIMINGS) if to_run else {}
            _render(args, folder, names, pages, to_run, timings, notebooks, mapping, profile)
    except (FolderError, atomic.WriteError) as err:
        sys.exit(f"error: {err}")
    except OSError as err:
        sys.exit(f"error: {atomic.describe(err, out_dir)}")
    finally:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()      # a render that wrote nothing leaves no folder behind


def _render(args, folder: OutputFolder, names: list[str], pages: list[str], to_run: list[Path], timings: dict,
            notebooks: dict, mapping: report.Mapping, profile: str) -> None:
    """Execute `to_run` and write the report into `folder`, which this process holds locked; exits (SystemExit)
    with one sentence on the first failure, or when a deliverable has no output or a notebook was kept aside."""
    out_dir = folder.path
    keys = {name: key for key, name in mapping.notebooks.items()}
    remove_leftovers(folder, names, to_run, args.inplace)
    if args.replace or folder.own_default:   # the report's files already there count as its own: stale ones go
        folder.adopt("report", pages)
    aside = []
    for path in to_run:
        try:
            notebook, digest = read_source(path)
        except report.NotebookError as err:
            sys.exit(f"error: {err}")
        print(f"[{profile}] executing {path.name} ...", flush=True)
        try:
            seconds = execute(notebook, path, args.timeout)
        except CellExecutionError as err:
            sys.exit(f"error: {path.name} failed ({err.ename}: {err.evalue}); nothing was written for it.")
        timings[path.name] = seconds
        print(f"[{profile}] {path.name}: {seconds:.1f} s", flush=True)
        failures, written = [], False
        try:
            with atomic.Batch() as batch:
                write_atomic(notebook, out_dir / path.name, batch)
                batch.write_text(out_dir / TIMINGS, json.dumps(timings, indent=1) + "\n")
                folder.commit(batch, "executed notebooks", replace_group=False)
            written = True
        except atomic.WriteError as error:
            failures.append(str(error))
        if args.inplace:
            try:
                kept = write_back(notebook, path, digest)
                written = True
                if kept is not None:
                    aside.append(f"{path} was edited while it executed, so it was left as it is: the executed "
                                 f"notebook is beside it, in {kept.name}.")
                    print(aside[-1], flush=True)
            except atomic.WriteError as error:
                failures.append(str(error))
        if failures:
            saved = None if written else salvage(notebook, path.name)
            sys.exit("error: " + " ".join(failures) + (f" The executed notebook was saved to {saved} instead."
                                                        if saved else ""))
        if path.name in keys:
            notebooks[keys[path.name]] = notebook
    title = f"Diffusion workbook: deliverables of {args.notebooks.resolve().name}/ (profile {profile})"
    try:
        with atomic.Batch() as batch:
            found = report.build(notebooks, out_dir, title, mapping, batch)
            unexpected = folder.unrecorded(folder.relative(p) for p in batch.written)
            if unexpected and not (args.replace or folder.own_default):
                folder.check([folder.relative(p) for p in batch.written])   # raises: names them
            folder.commit(batch, "report")
    except (FolderError, atomic.WriteError) as err:
        sys.exit(f"error: {err}")
    print(f"report: {out_dir / 'index.html'} ({len(mapping.deliverables)} deliverables)")
    if aside or found:   # the notebooks kept aside first: the user has a file to look at
        sys.exit("error: " + " ".join([*aside, *(["; ".join(found)] if found else [])]))
