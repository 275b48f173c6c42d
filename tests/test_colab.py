"""The student release on a simulated Colab: notebooks 01 and 02 (and notebook 04's first cells) in smoke.

What is simulated, and how (honestly):

- **Colab's packages**: a separate virtual environment whose site-packages holds *links* to the files of exactly
  the distributions Colab preinstalls among the project's needs (torch, torchvision, numpy, scipy, matplotlib, tqdm,
  ipywidgets, pip) plus ipykernel to run a kernel, and everything they require, from this project's .venv (the same
  builds, not Colab's versions; namespace folders such as ``nvidia/`` are linked whole). nbgrader, nbval, jupyterlab,
  diffusers, transformers and this checkout's editable ``helpers`` are simply not there: `importlib.util.find_spec`
  returns None for them, as on Colab. Installing a second torch would cost minutes and gigabytes;
- **``google.colab``**: a stub package in that environment, imported at start-up as on Colab. ``drive.mount(path)``
  links `path` to a folder shared between the simulated VMs (``$COLAB_SIM_DRIVE``, with ``MyDrive/``), and
  ``files.download(path)`` copies the file to a "browser downloads" folder (``$COLAB_SIM_DOWNLOADS``);
- **a Colab VM**: each kernel runs in bubblewrap with a fresh, empty root: the system (``/usr``, ``/etc``) and the
  Python install read-only, its own ``/content`` (a host folder per VM; the kernel starts there, outside any
  repository), the Drive and downloads folders, and the released repository read-only (the git remote, cloned over
  ``file://``). This checkout is not visible, except the .venv the links point into. A VM ends with its kernel;
  two VMs share only the Drive folder;
- **what a browser would do**: the test fills exercises by writing the reference regions into the clone's files
  (`instructor.edition.fill`, as a student's editor would), puts MNIST's IDX files into the clone's ``data/`` in place
  of torchvision's download (no internet here), and saves the executed notebook into the clone before its hand-in
  cell runs (on real Colab the running notebook is not a file of the clone: see docs/teaching.md);
- **runs.py's WORKBOOK_CHECKPOINTS**: the Drive switch sets it; where the release's `helpers.training.runs` does not
  read it yet, the clone's copy gets the one-line override (reported to the maintainers), and the test says so.

The test builds the release (`instructor.release`), runs notebook 01 on VM 1 until its denoiser's first epoch is
checkpointed on Drive and the VM "goes away", then on VM 2 (same Drive) notebook 01 resumes and finishes and hands
in, notebook 02 runs up to its course UNet's training and the Euler step's check, and notebook 04 runs up to its
backend without diffusers (in the cpu profile, where the course's stand-in ships trained and must load into the
student's own UNet class). Printed: seconds, and the
code cells executed out of each notebook's total.
"""
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch
from jupyter_client import KernelManager
from nbclient import NotebookClient
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers.exercises import BY_KEY
from helpers.foundation import data
from helpers.handin import archive
from helpers.training import runs
from instructor import edition, release

ROOT = Path(__file__).resolve().parent.parent
COLAB_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "matplotlib", "tqdm", "ipywidgets", "pip")
KERNEL_PACKAGES = ("ipykernel",)
ABSENT = ("nbgrader", "nbval", "jupyterlab", "diffusers", "transformers", "helpers", "instructor")
NAME = "diffusion-workbook-student"
RUNS_OVERRIDE = 'ROOT = Path(os.environ.get("WORKBOOK_CHECKPOINTS") or Path(__file__).resolve().parents[2] / "checkpoints")'
STUB = {
    "google/__init__.py": "",
    "google/colab/__init__.py": '"""Stub of Colab\'s google.colab (tests/test_colab.py)."""\nfrom google.colab import drive, files  # noqa\n',
    "google/colab/drive.py": '''import os


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    """Link `mountpoint` to the simulated Drive shared by every simulated VM."""
    drive = os.environ["COLAB_SIM_DRIVE"]
    os.makedirs(os.path.join(drive, "MyDrive"), exist_ok=True)
    if not os.path.islink(mountpoint):
        os.symlink(drive, mountpoint)
    print(f"Mounted at {mountpoint}")
''',
    "google/colab/files.py": '''import os
import shutil


def download(filename):
    """Copy `filename` to the simulated browser's downloads folder."""
    shutil.copy(filename, os.environ["COLAB_SIM_DOWNLOADS"])
''',
    "colab_sim.pth": "import google.colab\n",
}



def _sandbox_works() -> bool:
    return shutil.which("git") is not None and shutil.which("bwrap") is not None and subprocess.run(
        ["bwrap", "--ro-bind", "/", "/", "true"], capture_output=True).returncode == 0


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not _sandbox_works(), reason="the Colab simulation needs git and a working bubblewrap "
                                                              "(apt-get install bubblewrap; user namespaces, or root)")]


def allowed_distributions() -> set[str]:
    """COLAB_PACKAGES and KERNEL_PACKAGES with everything they require (markers evaluated, no extras)."""
    dists = {canonicalize_name(d.metadata["Name"]): d for d in importlib.metadata.distributions()}
    allowed, todo = set(), [canonicalize_name(name) for name in COLAB_PACKAGES + KERNEL_PACKAGES]
    while todo:
        name = todo.pop()
        if name in allowed or name not in dists:
            continue
        allowed.add(name)
        for text in dists[name].requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return allowed


def colab_environment(folder: Path) -> Path:
    """A virtual environment in `folder` whose site-packages links the allowed distributions' files; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = next(folder.glob("lib/python3*/site-packages"))
    dists = {canonicalize_name(d.metadata["Name"]): d for d in importlib.metadata.distributions()}
    for name in allowed_distributions():
        for file in dists[name].files or []:
            top = file.parts[0]
            source = Path(dists[name].locate_file(top))
            if top.startswith("..") or top == "__pycache__" or not source.exists() or (site / top).exists():
                continue
            (site / top).symlink_to(source)
    for relative, text in STUB.items():
        (site / relative).parent.mkdir(parents=True, exist_ok=True)
        (site / relative).write_text(text)
    return folder / "bin" / "python"


class Colab:
    """The simulated Colab: its environment, the shared Drive, the downloads folder and the VMs' kernel specs."""

    def __init__(self, base: Path, remote: Path):
        self.base, self.remote = base, remote
        self.python = colab_environment(base / "colab-venv")
        self.drive, self.downloads, self.runtime = base / "drive", base / "downloads", base / "runtime"
        self.matplotlib = base / "matplotlib"
        for folder in (self.drive, self.downloads, self.runtime, self.matplotlib):
            folder.mkdir()

    def vm(self, name: str) -> Path:
        """A new VM: its /content folder and a kernel spec `name` that starts kernels inside it."""
        content = self.base / name
        content.mkdir()
        binds = [arg for path in (Path(sys.base_prefix), Path(sys.prefix), self.python.parent.parent, self.remote)
                 for arg in ("--ro-bind", str(path), str(path))]
        binds += [arg for path in (self.drive, self.downloads, self.runtime, self.matplotlib)
                  for arg in ("--bind", str(path), str(path))]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "WORKBOOK_PROFILE": "smoke",
               "COLAB_SIM_DRIVE": str(self.drive), "COLAB_SIM_DOWNLOADS": str(self.downloads),
               "MPLCONFIGDIR": str(self.matplotlib)}   # the image's font cache, built once (Colab's image has one)
        argv = ["bwrap", "--die-with-parent", "--unshare-pid", "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin",
                "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
                "--ro-bind", "/etc", "/etc", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/root",
                *binds, "--bind", str(content), "/content", "--chdir", "/content", "--clearenv",
                *[arg for key, value in env.items() for arg in ("--setenv", key, value)],
                str(self.python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        spec = self.base / "jupyter" / "kernels" / name
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": f"Colab {name} (simulated)",
                                                      "language": "python", "interrupt_mode": "message"}))
        return content


class Session:
    """One notebook on one VM, run cell by cell with nbclient; `run` returns a cell's outputs as text."""

    def __init__(self, notebook: nbformat.NotebookNode, kernel: str, content: Path, runtime: Path):
        self.nb, self.content = notebook, content
        # the connection file where the sandbox sees it (jupyter_client would put it in the host's /tmp)
        self.km = KernelManager(kernel_name=kernel, connection_file=str(runtime / f"{kernel}-{id(self)}.json"))
        self.client = NotebookClient(notebook, km=self.km, timeout=300, allow_errors=True,
                                     resources={"metadata": {"path": str(content)}})
        self.executed: set[int] = set()

    def __enter__(self):
        self.started = time.perf_counter()
        self._log = open(self.content.parent / "kernels.log", "a")   # the kernels' own start-up chatter
        self._context = self.client.setup_kernel(stdout=self._log, stderr=self._log)
        self._context.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            return self._context.__exit__(*exc)
        finally:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=True)
            self._log.close()

    def index(self, cell_id: str) -> int:
        return next(i for i, cell in enumerate(self.nb.cells) if cell.get("id") == cell_id)

    def run(self, cell_id: str) -> dict:
        """Execute the notebook's cell `cell_id`; its stdout/stderr text and its error lines."""
        index = self.index(cell_id)
        cell = self.nb.cells[index]
        cell.outputs = []
        self.client.execute_cell(cell, index)
        self.executed.add(index)
        return outputs(cell)

    def run_code(self, code: str) -> dict:
        """Execute code that is not part of the notebook (a probe, or what the student would do by hand)."""
        cell = nbformat.v4.new_code_cell(code)
        self.nb.cells.append(cell)
        try:
            self.client.execute_cell(cell, len(self.nb.cells) - 1)
        finally:
            self.nb.cells.pop()
        return outputs(cell)

    def run_until(self, stop: str | None = None, start: str | None = None, hooks=None) -> dict[str, dict]:
        """Execute the code cells from `start` (or the first) up to, not including, `stop` (or to the end)."""
        results, started = {}, start is None
        for cell in self.nb.cells:
            started = started or cell.get("id") == start
            if cell.get("id") == stop:
                break
            if started and cell.cell_type == "code":
                if hooks and cell.get("id") in hooks:
                    hooks[cell.get("id")]()
                results[cell.get("id")] = self.run(cell.get("id"))
        return results

    def code_cells(self) -> str:
        total = sum(cell.cell_type == "code" for cell in self.nb.cells)
        return (f"{len(self.executed)} of {total} code cells ({len(self.nb.cells)} cells in all), "
                f"{time.perf_counter() - self.started:.0f} s with the kernel's start")


def outputs(cell) -> dict:
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    text += "".join(o.get("data", {}).get("text/plain", "") for o in cell.outputs if o.output_type == "execute_result")
    errors = [o for o in cell.outputs if o.output_type == "error"]
    return {"text": text, "errors": [line for o in errors for line in o.traceback], "error_names": [o.ename for o in errors]}


def student_notebook(remote: Path, name: str, drive: bool) -> nbformat.NotebookNode:
    nb = nbformat.read(remote / "notebooks" / name, as_version=4)
    if drive:
        setup = next(cell for cell in nb.cells if cell.cell_type == "code")
        assert "KEEP_CHECKPOINTS_ON_DRIVE = False" in setup.source
        setup.source = setup.source.replace("KEEP_CHECKPOINTS_ON_DRIVE = False", "KEEP_CHECKPOINTS_ON_DRIVE = True")
    return nb


def after_setup(clone: Path, record: dict) -> None:
    """What happens on the VM beside the notebook after its set-up cell: MNIST 'downloaded', runs.py's override."""
    raw = clone / "data" / "MNIST" / "raw"
    if not raw.exists():
        shutil.copytree(data.RAW_DIR, raw)
    runs = clone / "helpers" / "training" / "runs.py"
    text = runs.read_text()
    if "WORKBOOK_CHECKPOINTS" not in text:
        record["runs_patched"] = True
        runs.write_text("import os\n" + re.sub(r"^ROOT = .*$", RUNS_OVERRIDE, text, count=1, flags=re.M))


def fill(clone: Path, keys) -> None:
    """Write the reference regions of exercises `keys` into the clone's helpers (a student's editor, in effect)."""
    edition.fill(clone, keep=tuple(k for k in edition.active_exercises() if k not in keys))


@pytest.fixture(scope="module")
def colab_run(tmp_path_factory):
    """Everything the tests below assert on, from one pass through the simulation."""
    data.ensure_mnist()   # this checkout's copy, which stands in for torchvision's download on the VMs
    base = tmp_path_factory.mktemp("colab")
    remote = base / NAME
    saved = {key: os.environ.get(key) for key in ("JUPYTER_PATH", "JUPYTER_RUNTIME_DIR")}
    start = time.perf_counter()
    record = release.release(f"file://{remote}", remote)
    record.update(release_seconds=time.perf_counter() - start, runs_patched=False, cells={})
    colab = Colab(base, remote)
    os.environ["JUPYTER_PATH"], os.environ["JUPYTER_RUNTIME_DIR"] = str(base / "jupyter"), str(colab.runtime)
    active = edition.active_exercises()
    try:
        # ---- VM 1: notebook 01 with the Drive switch on, until its denoiser's first epoch is saved
        vm1 = colab.vm("vm1")
        clone1 = vm1 / NAME
        nb = student_notebook(remote, "01_one_step_denoising.ipynb", drive=True)
        setup_id = next(cell.get("id") for cell in nb.cells if cell.cell_type == "code")
        with Session(nb, "vm1", vm1, colab.runtime) as s:
            record["before_setup"] = s.run_code(
                "import importlib.util, os, sys\n"
                f"print(os.getcwd(), [n for n in {ABSENT!r} if importlib.util.find_spec(n) is not None],"
                " 'google.colab' in sys.modules)")
            record["setup"] = s.run(setup_id)
            record["origin"] = subprocess.run(["git", "-C", str(clone1), "remote", "get-url", "origin"],
                                              capture_output=True, text=True).stdout.strip()
            record["clone_release"] = json.loads((clone1 / "release.json").read_text())
            after_setup(clone1, record)
            record["probe"] = s.run_code("import helpers, torch\nprint(helpers.__file__, torch.__version__)")
            s.run_until(stop="exercise-1-1-check", start=s.nb.cells[s.index(setup_id) + 1].get("id"))
            record["1.1 unfinished"] = s.run("exercise-1-1-check")
            fill(clone1, ["1.1"])
            record["1.1 filled"] = s.run("exercise-1-1-check")
            s.run_until(stop="exercise-1-2-check", start="7a3f6ed8")
            record["1.2 unfinished"] = s.run("exercise-1-2-check")
            unet = clone1 / "helpers" / "course_unet.py"
            stub = next(line for line in unet.read_text().splitlines() if "raise ExerciseMissing('1.2'" in line)
            unet.write_text(unet.read_text().replace(stub, "    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1,", 1))
            record["syntax line"] = 1 + unet.read_text().splitlines().index("    return nn.Sequential(nn.Conv2d(c_in, "
                                                                          "c_out, 3, 1, 1,")
            record["1.2 syntax error"] = s.run("exercise-1-2-check")
            unet.write_text(unet.read_text().replace("    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1,", stub, 1))
            fill(clone1, ["1.1", "1.2", "1.3"])
            record["1.2 filled"] = s.run("exercise-1-2-check")
            s.run("exercise-1-3-check")
            s.run_code("from helpers.foundation import checkpoint_files as _files\n_save = _files.save_atomic\n"
                       "def _save_then_vm_lost(state, path):\n    _save(state, path)\n"
                       "    if path.name == 'last.pt' and state['epoch'] == 1:\n"
                       "        raise KeyboardInterrupt('the Colab VM went away')\n"
                       "_files.save_atomic = _save_then_vm_lost")
            record["vm1 training"] = s.run("923202b0")
            record["cells"]["01 (VM 1)"] = s.code_cells()
        shutil.rmtree(vm1)   # the VM is discarded, /content with it
        last = colab.drive / "MyDrive" / NAME / "checkpoints" / "smoke" / "denoiser_sigma0.5" / "last.pt"
        record["drive epoch after vm1"] = torch.load(last, weights_only=False)["epoch"] if last.exists() else None

        # ---- VM 2: notebook 01 resumes on Drive and hands in, notebook 02 whole, notebook 04 to its backend
        vm2 = colab.vm("vm2")
        clone2 = vm2 / NAME
        nb = student_notebook(remote, "01_one_step_denoising.ipynb", drive=True)
        with Session(nb, "vm2", vm2, colab.runtime) as s:
            s.run(setup_id)
            after_setup(clone2, record)
            fill(clone2, ["1.1", "1.2", "1.3"])
            results = s.run_until(stop="hand-in", start=s.nb.cells[s.index(setup_id) + 1].get("id"))
            record["01 errors"] = {cid: r["errors"] for cid, r in results.items() if r["errors"]}
            record["vm2 training"] = results["923202b0"]
            executed = s.nb
            nbformat.write(executed, clone2 / "notebooks" / "01_one_step_denoising.ipynb")   # the student saves
            record["hand-in"] = s.run("hand-in")
            record["cells"]["01 (VM 2)"] = s.code_cells()
        record["answer cell"] = [c.metadata.get("nbgrader") for c in executed.cells if c.get("id") == "answer-01-1"]

        nb = student_notebook(remote, "02_time_conditioned_flow_matching.ipynb", drive=False)
        with Session(nb, "vm2", vm2, colab.runtime) as s:
            results = s.run_until(stop="exercise-2-1-text")
            record["2.1 unfinished"] = s.run("exercise-2-1-check")
            fill(clone2, [k for k in active if k.startswith(("1.", "2."))])
            record["2.1 filled"] = s.run("exercise-2-1-check")
            # up to the course UNet's training and the Euler step's check; the attention UNet, the measures and the
            # bells and whistles (three quarters of the notebook's smoke time) are left out
            results.update(s.run_until(stop="4ff78281", start="exercise-2-2-check"))
            results["exercise-2-3-check"] = s.run("exercise-2-3-check")
            record["02 errors"] = {cid: r["errors"] for cid, r in results.items() if r["errors"]}
            record["cells"]["02"] = s.code_cells()

        fill(clone2, [k for k in active if k[0] in "1234"])
        nb = student_notebook(remote, "04_diffusion_sampling_tricks.ipynb", drive=False)
        with Session(nb, "vm2", vm2, colab.runtime) as s:
            s.run_code("%env WORKBOOK_PROFILE=cpu")   # where the course's stand-in ships trained
            results = s.run_until(stop="d7e35195")
            shipped = Path("checkpoints/cpu") / runs.STANDIN / "last.pt"
            record["04 stand-in unchanged"] = (clone2 / shipped).read_bytes() == (remote / shipped).read_bytes()
            record["04 import diffusers"] = s.run_code("import diffusers")
            record["04 errors"] = {cid: r["errors"] for cid, r in results.items() if r["errors"]}
            record["04 backend"] = results["834c7aa3"]
            record["cells"]["04"] = s.code_cells()
        record["downloads"] = sorted(p.name for p in colab.downloads.iterdir())
        if record["downloads"]:
            record["manifest"] = archive.unpack(colab.downloads / record["downloads"][0], base / "unpacked")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    record["seconds"] = time.perf_counter() - start
    print(f"\nsimulated Colab: {record['seconds']:.0f} s in all (release {record['release_seconds']:.1f} s); "
          + "; ".join(f"notebook {k}: {v}" for k, v in record["cells"].items())
          + ("; runs.py patched with the WORKBOOK_CHECKPOINTS override" if record["runs_patched"] else ""))
    return record


def test_the_kernel_starts_outside_the_repository_with_colabs_packages_only(colab_run):
    assert colab_run["before_setup"]["text"].split() == ["/content", "[]", "True"], colab_run["before_setup"]


def test_the_setup_cell_clones_the_release(colab_run):
    assert not colab_run["setup"]["errors"], colab_run["setup"]
    assert colab_run["origin"] == colab_run["repository"] == colab_run["clone_release"]["repository"]
    assert colab_run["clone_release"]["version"] == colab_run["version"] == 1
    assert colab_run["probe"]["text"].startswith(f"/content/{NAME}/helpers/__init__.py"), colab_run["probe"]


def test_an_unfinished_exercise_fails_with_its_hint_and_a_filled_one_passes(colab_run):
    for key in ("1.1", "1.2", "2.1"):
        unfinished, filled = colab_run[f"{key} unfinished"], colab_run[f"{key} filled"]
        assert len(unfinished["errors"]) == 1, unfinished
        assert re.fullmatch(rf"✗ exercise {re.escape(key)} \({re.escape(BY_KEY[key].where)}\) is not written yet; "
                            r"hint: \S.+", unfinished["errors"][0]), unfinished
        assert not filled["errors"] and f"✓ exercise {key}" in filled["text"], filled


def test_a_syntax_error_in_an_exercise_file_is_one_sentence_naming_file_and_line(colab_run):
    result = colab_run["1.2 syntax error"]
    assert len(result["errors"]) == 1 and "Traceback" not in result["text"], result
    assert result["errors"][0].startswith(f"✗ helpers/course_unet.py, line {colab_run['syntax line']}: "), result


def test_training_started_on_one_vm_resumes_on_the_next_through_drive(colab_run):
    assert colab_run["vm1 training"]["error_names"] == ["KeyboardInterrupt"], colab_run["vm1 training"]
    assert colab_run["drive epoch after vm1"] == 1
    assert "(resumed from epoch 1)" in colab_run["vm2 training"]["text"], colab_run["vm2 training"]


def test_notebooks_01_and_02_run_without_error_once_their_exercises_are_done(colab_run):
    assert colab_run["01 errors"] == {} and colab_run["02 errors"] == {}, (colab_run["01 errors"], colab_run["02 errors"])


def test_the_hand_in_cell_packs_and_downloads_the_archive(colab_run):
    assert not colab_run["hand-in"]["errors"] and "hand-in: /content/" in colab_run["hand-in"]["text"], colab_run["hand-in"]
    assert colab_run["downloads"] == ["handin.handin.zip"]
    manifest = colab_run["manifest"]
    assert manifest.release == "diffusion-workbook release 1" and manifest.profile == "smoke"
    assert "notebooks/01_one_step_denoising.ipynb" not in manifest.unexecuted
    assert colab_run["answer cell"] == [{"grade": True, "grade_id": "answer-01-1", "locked": False, "points": 1,
                                         "schema_version": 3, "solution": True}]


def test_notebook_04_without_diffusers_says_what_to_install_and_continues_on_the_project_backend(colab_run):
    from helpers.backends.flow_backend import DIFFUSERS_MISSING
    assert colab_run["04 import diffusers"]["error_names"] == ["ModuleNotFoundError"]
    assert colab_run["04 errors"] == {}, colab_run["04 errors"]
    text = colab_run["04 backend"]["text"]
    assert DIFFUSERS_MISSING in text and "continues on the project backend" in text and "backend: project" in text, text
    assert colab_run["04 stand-in unchanged"]   # the shipped stand-in loaded into the student's UNet, not retrained
