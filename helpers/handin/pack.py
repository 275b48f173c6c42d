"""Pack this repository's work into ``<name>.handin.zip`` and say in one sentence what is still missing.

    python -m helpers.handin [--name NAME] [--root REPOSITORY] [--out FOLDER]

On Colab a notebook opened from its badge runs from the browser, not from the clone's file: `hand_in` first writes
the running notebook (asked of Colab's front end) over its course file in the clone, then packs, and offers the
archive for download (``google.colab.files.download``).
"""
import argparse
import json
import re
import sys
from pathlib import Path

import torch

from helpers.foundation.atomic import write_text
from helpers.handin.archive import SUFFIX, HandInError, Manifest, pack
from helpers.training.profile import current_profile

ROOT = Path(__file__).resolve().parents[2]


def release_of(root: Path) -> str:
    """The release the repository came from (its ``release.json``, written by the instructor's release)."""
    try:
        data = json.loads((root / "release.json").read_text())
        return f"{data['course']} release {data['version']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "unreleased"


def device_name() -> str:
    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"


def summary(manifest: Manifest) -> str:
    """One sentence on what the hand-in still lacks (or that it is complete)."""
    parts = []
    if manifest.unexecuted:
        parts.append("no outputs in " + ", ".join(Path(n).name for n in manifest.unexecuted))
    if manifest.stubs:
        parts.append("exercises still stubs: " + ", ".join(manifest.stubs))
    return ("packed anyway, but " + "; ".join(parts) + ".") if parts else "every notebook has outputs and every exercise is written."


def save_running_notebook(root: Path) -> str:
    """On Colab: write the notebook running in the browser over ``notebooks/NN_*.ipynb`` of the clone (NN from its
    title cell, "# NN · ..."), so that its outputs are packed; returns a line saying what was done."""
    try:
        from google.colab import _message
        notebook = _message.blocking_request("get_ipynb", timeout_sec=60)["ipynb"]
    except Exception as error:   # the front end's channel: any failure is one line, and the clone's file is packed
        return f"the running notebook could not be read from Colab ({type(error).__name__}); packing the saved files."
    title = next(("".join(cell.get("source", "")) for cell in notebook.get("cells", [])
                  if cell.get("cell_type") == "markdown"), "")
    number = re.match(r"\s*#\s*(\d\d)\b", title)
    targets = sorted((root / "notebooks").glob(f"{number[1]}_*.ipynb")) if number else []
    if len(targets) != 1:
        return "the running notebook has no course title (# NN · ...); packing the saved files."
    write_text(targets[0], json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    return f"saved the running notebook over {targets[0].relative_to(root)}."


def hand_in(name: str = "handin", root=None, out=None, download: bool = True) -> Path:
    """Write ``<out>/<name>.handin.zip`` from the repository `root`; print where and what is missing."""
    root = Path(root) if root else ROOT
    if "google.colab" in sys.modules:
        print(save_running_notebook(root))
    path = Path(out or root) / f"{name}{SUFFIX}"
    manifest = pack(root, path, release_of(root), current_profile(), device_name())
    print(f"hand-in: {path} ({path.stat().st_size / 2**20:.1f} MiB); {summary(manifest)}")
    if download and "google.colab" in sys.modules:
        from google.colab import files
        files.download(str(path))
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m helpers.handin", description=__doc__.split("\n")[0])
    parser.add_argument("--name", default="handin", help="the archive's name, e.g. your student id (default: handin)")
    parser.add_argument("--root", type=Path, help="the repository you worked in (default: this one)")
    parser.add_argument("--out", type=Path, help="folder to write the archive to (default: the repository)")
    args = parser.parse_args(argv)
    try:
        hand_in(args.name, args.root, args.out)
    except (HandInError, OSError) as error:
        sys.exit(f"error: {error}")
