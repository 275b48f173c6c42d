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
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from helpers.training.profile import current_profile
from instructor import report

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def execute(path: Path, timeout: int) -> tuple[nbformat.NotebookNode, float]:
    """Run a notebook top to bottom in its own folder; return it with outputs and the wall time."""
    notebook = report.read_notebook(path)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return notebook, time.perf_counter() - start


def write_atomic(notebook: nbformat.NotebookNode, path: Path) -> None:
    """Write a notebook through a temporary file, so an interrupted write never leaves half a notebook."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".ipynb.tmp", delete=False) as tmp:
        nbformat.write(notebook, tmp)
    os.replace(tmp.name, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m instructor render", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks to execute (default: all of the folder)")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS,
                        help="the folder of NN_name.ipynb notebooks to report on (default: notebooks/)")
    parser.add_argument("--report-only", action="store_true", help="execute nothing; report the stored outputs")
    parser.add_argument("--inplace", action="store_true", help="also write the outputs back into the notebooks")
    parser.add_argument("--out", type=Path, help="report folder (default: rendered/<profile>/)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
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
    out_dir.mkdir(parents=True, exist_ok=True)
    timings_file = out_dir / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    names = {name: key for key, name in mapping.notebooks.items()}
    for path in to_run:
        print(f"[{profile}] executing {path.name} ...", flush=True)
        try:
            notebook, seconds = execute(path, args.timeout)
        except CellExecutionError as err:
            sys.exit(f"error: {path.name} failed ({err.ename}: {err.evalue}); nothing was written for it.")
        timings[path.name] = seconds
        print(f"[{profile}] {path.name}: {seconds:.1f} s", flush=True)
        write_atomic(notebook, out_dir / path.name)
        if args.inplace:
            write_atomic(notebook, path)
        timings_file.write_text(json.dumps(timings, indent=1))
        if path.name in names:
            notebooks[names[path.name]] = notebook
    found = report.build(notebooks, out_dir, f"Diffusion workbook: deliverables of {args.notebooks.resolve().name}/ "
                                             f"(profile {profile})", mapping)
    print(f"report: {out_dir / 'index.html'} ({len(mapping.deliverables)} deliverables)")
    if found:
        sys.exit("error: " + "; ".join(found))

