"""Execute every notebook in the active profile and write the rendered deliverables.

    python -m helpers.render                 # all notebooks -> rendered/<profile>/NN_name.{ipynb,html} + index.html
    python -m helpers.render --inplace       # also store the outputs in notebooks/ (to commit them)
    python -m helpers.render notebooks/01_one_step_denoising.ipynb   # just one

Each notebook's execution time is printed and saved in rendered/<profile>/timings.json.
"""
import argparse
import html
import json
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

from .profile import current_profile

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def execute(path: Path, timeout: int) -> tuple[nbformat.NotebookNode, float]:
    """Run a notebook top to bottom in its own folder; return it with outputs and the wall time."""
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return notebook, time.perf_counter() - start


def write_index(out_dir: Path, timings: dict, profile: str) -> None:
    items = "\n".join(
        f'<li><a href="{html.escape(Path(name).stem)}.html">{html.escape(Path(name).stem)}</a>'
        f" &mdash; executed in {seconds / 60:.1f} min</li>" for name, seconds in sorted(timings.items()))
    (out_dir / "index.html").write_text(
        f"<!doctype html><meta charset=utf-8><title>Diffusion workbook ({profile})</title>"
        f"<h1>Diffusion and flow matching workbook</h1><p>Rendered with profile <b>{profile}</b>.</p>"
        f"<ul>{items}</ul>\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/NN_*.ipynb")
    parser.add_argument("--inplace", action="store_true", help="also write the outputs back into notebooks/")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    args = parser.parse_args(argv)

    profile = current_profile()
    out_dir = ROOT / "rendered" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    timings_file = out_dir / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    for path in args.notebooks or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        path = path.resolve()
        print(f"[{profile}] executing {path.name} ...", flush=True)
        notebook, seconds = execute(path, args.timeout)
        timings[path.name] = seconds
        print(f"[{profile}] {path.name}: {seconds:.1f} s", flush=True)
        nbformat.write(notebook, out_dir / path.name)
        body, _ = HTMLExporter().from_notebook_node(notebook)
        (out_dir / f"{path.stem}.html").write_text(body)
        if args.inplace:
            nbformat.write(notebook, path)
        timings_file.write_text(json.dumps(timings, indent=1))
    write_index(out_dir, timings, profile)
    print(f"rendered deliverables: {out_dir / 'index.html'}")


if __name__ == "__main__":
    main()
