"""Fault tests of the files the commands write (issue 28): nothing a command writes destroys a user's file.

Families: file modes; atomic writes and batches; output folders (`render --out`: the manifest, a user's files,
timings.json, a destination checked before executing); a real full disk and a real read-only file system (a
small tmpfs that the test mounts when it runs as root, else skipped with the reason); real concurrency (two
processes training one run, two processes saving one checkpoint, two renders into one folder); real SIGKILLs at many
points of training, of `render --inplace` and of `instructor student --out DIR`, each followed by checks that the
previous output is whole; the measurement cache's warnings. `instructor student`'s other faults are in
tests/test_faults_edition.py.

The processes that get killed are forked by a helper process (this file run as a script, below), which imports
torch and the instructor's tools once, so each kill point costs a fork and not an interpreter start. A kill point
is the N-th file operation (open for writing, link, rename, remove, mkdir) the process makes in its sandbox: an
audit hook (`sys.addaudithook`) sends SIGKILL to its own process just before that operation runs.
"""
import errno
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_NOTEBOOK = "01_one_step_denoising.ipynb"      # a name the course mapping knows, so the report exports it
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
FILE_EVENTS = ("open", "os.rename", "os.link", "os.remove", "os.mkdir", "os.rmdir", "os.truncate",
               "instructor.output_folder.exchange")


# ------------------------------------------------------------------------------------------------ helpers
def tiny_notebook(folder: Path, word: str, extra: str = "") -> Path:
    """A two-cell notebook that prints `word` and shows a 1x1 PNG (so the report writes a figure)."""
    import nbformat
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(f"print('profile: cpu')\nprint('{word}')\n{extra}"),
                      nbformat.v4.new_code_cell("from IPython.display import Image, display\nimport base64\n"
                                                f"display(Image(data=base64.b64decode('{PNG}')))")]
    for index, cell in enumerate(notebook.cells):
        cell.id = f"cell{index}"
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, folder / TINY_NOTEBOOK)
    return folder / TINY_NOTEBOOK


def with_stored_outputs(path: Path, word: str) -> Path:
    """Give a tiny notebook the outputs an execution would have stored (without running a kernel)."""
    import nbformat
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"profile: cpu\n{word}\n")]
    notebook.cells[1].outputs = [nbformat.v4.new_output("display_data", data={"image/png": PNG})]
    nbformat.write(notebook, path)
    return path


def printed(path: Path) -> str:
    """What a tiny notebook's first cell printed ('' if it holds no outputs)."""
    import nbformat
    cell = nbformat.read(path, as_version=4).cells[0]
    return "".join(o.get("text", "") for o in cell.get("outputs", ()))


def temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp"))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def render(*argv) -> tuple[int, str]:
    """`python -m instructor render` in this process; (exit status, its one-line message or '')."""
    from instructor import execute
    try:
        execute.main([str(a) for a in argv])
    except SystemExit as stop:
        return (0 if stop.code is None else 1 if isinstance(stop.code, str) else stop.code,
                stop.code if isinstance(stop.code, str) else "")
    return 0, ""


@pytest.fixture(scope="module", autouse=True)
def helper_process(request, tmp_path_factory):
    """Start the fork-server helper (this file run as a script: all its jobs) as soon as the module's first test
    runs, when any selected test needs it, so that it works while the in-process tests run."""
    if not any("helper" in item.fixturenames for item in request.session.items if item.module is request.module):
        yield None
        return
    root = tmp_path_factory.mktemp("helper")
    process = subprocess.Popen([sys.executable, __file__, str(root)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def helper(helper_process) -> dict:
    """The helper's results (its last line of output is JSON)."""
    out, err = helper_process.communicate(timeout=600)
    assert helper_process.returncode == 0, err[-3000:]
    found = json.loads(out.strip().splitlines()[-1])
    print("helper jobs (s):", {name: job["seconds"] for name, job in found.items()})
    return found


@pytest.fixture
def small_disk(tmp_path):
    """Mount a tmpfs of the given size (KiB) at a folder in tmp_path; yields a function making one. Skipped with the
    reason when the test is not root or the mount is refused (a container without CAP_SYS_ADMIN)."""
    mounted = []

    def make(kib: int, name: str = "disk") -> Path:
        if os.geteuid() != 0:
            pytest.skip("a real full disk needs a tmpfs mounted by the test, which needs root")
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k,mode=0755", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"mounting a tmpfs was refused ({done.stderr.strip()})")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill the file system of `disk` with a ballast file until `leave` bytes (about) are free."""
    with open(disk / "ballast", "wb") as ballast:
        while shutil.disk_usage(disk).free > leave:
            try:
                ballast.write(b"\0" * max(1024, min(1 << 20, shutil.disk_usage(disk).free - leave)))
                ballast.flush()
            except OSError as error:
                assert error.errno == errno.ENOSPC
                break


def remount_read_only(disk: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)


def one_sentence(message: str) -> str:
    assert "Traceback" not in message and message.count("\n") == 0 and message.strip().endswith("."), message
    return message


# ------------------------------------------------------------------------------------------ file modes
@pytest.mark.slow
@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o002, 0o664)])
def test_every_file_written_gets_the_users_normal_mode(tmp_path, umask, expected):
    """Checkpoints, samples, atomic text, batches, executed-notebook writes, the report and its manifest: 0666 less
    the umask (0644 under umask 022), never mkstemp's 0600."""
    import torch

    from helpers.foundation import atomic
    from helpers.foundation import checkpoint_files as ckpt
    from helpers.measure import cache
    from instructor import execute, report
    from instructor.output_folder import OutputFolder
    old = os.umask(umask)
    try:
        ckpt.save_atomic({"w": torch.zeros(2)}, tmp_path / "last.pt")
        cache.cached(tmp_path, "m", lambda: {"x": 1.0}, {"i": 1})             # measurements.json
        atomic.write_text(tmp_path / "a.txt", "a")
        with atomic.Batch() as batch:
            batch.write_bytes(tmp_path / "b" / "b.bin", b"b")
        notebook = report.read_notebook(with_stored_outputs(tiny_notebook(tmp_path / "nb", "v1"), "v1"))
        execute.write_atomic(notebook, tmp_path / "n.ipynb")
        folder = OutputFolder(tmp_path / "out", "test")
        with atomic.Batch() as batch:
            report.build({"01": notebook}, folder.path, "t", batch=batch)
            folder.commit(batch, "report")
        atomic._NAMED_ONLY.add(tmp_path.stat().st_dev)     # the named-temporary path, as on NFS
        try:
            atomic.write_text(tmp_path / "named.txt", "n")
        finally:
            atomic._NAMED_ONLY.discard(tmp_path.stat().st_dev)
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and "nb" not in p.parts]
    assert len(files) >= 10 and {p.name: mode_of(p) for p in files} == {p.name: expected for p in files}
    assert (tmp_path / "out" / ".manifest.json").is_file() and mode_of(tmp_path / "out" / "figures") == expected | 0o111


# ------------------------------------------------------------------------------------ atomic writes, batches
def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    from helpers.foundation import atomic
    atomic.write_text(tmp_path / "x.txt", "old")
    with pytest.raises(atomic.WriteError) as failed, atomic.write_atomic(tmp_path / "x.txt") as file:
        file.write("new, half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(failed.value) == f"no space left on device while writing {tmp_path / 'x.txt'}; the previous x.txt is intact."
    assert (tmp_path / "x.txt").read_text() == "old" and os.listdir(tmp_path) == ["x.txt"]


def test_while_a_file_is_written_no_name_appears_and_a_closed_handle_keeps_its_content(tmp_path):
    """The temporary is unnamed until the swap (a kill leaves nothing); closing the handle (as `with` or a library
    does) does not lose what was written."""
    from helpers.foundation import atomic
    with atomic.Batch() as batch:
        with batch.open(tmp_path / "a.txt") as file:
            file.write("a")
        batch.write_text(tmp_path / "sub" / "b.txt", "b")
        assert sorted(p.name for p in tmp_path.rglob("*")) == ["sub"]
    assert (tmp_path / "a.txt").read_text() == "a" and (tmp_path / "sub" / "b.txt").read_text() == "b"


def test_a_batch_that_fails_leaves_every_previous_file_and_removes_the_folders_it_made(tmp_path):
    from helpers.foundation import atomic
    atomic.write_text(tmp_path / "a.txt", "old a")
    with pytest.raises(ValueError), atomic.Batch() as batch:
        batch.write_text(tmp_path / "a.txt", "new a")
        batch.write_text(tmp_path / "new" / "deeper" / "b.txt", "b")
        raise ValueError("the report failed half-way")
    assert (tmp_path / "a.txt").read_text() == "old a" and sorted(os.listdir(tmp_path)) == ["a.txt"]


def test_a_batch_of_more_files_than_it_keeps_open_swaps_them_all(tmp_path, monkeypatch):
    from helpers.foundation import atomic
    monkeypatch.setattr(atomic, "_KEEP_OPEN", 8)
    opened = len(os.listdir(f"/proc/{os.getpid()}/fd"))
    with atomic.Batch() as batch:
        for i in range(30):
            batch.write_text(tmp_path / f"{i}.txt", str(i))
        assert len(os.listdir(f"/proc/{os.getpid()}/fd")) <= opened + 2 * 8      # a file and our duplicate each
        assert len(temporaries(tmp_path)) == 30 - 8          # the oldest were named to close them; none swapped yet
    assert len(os.listdir(tmp_path)) == 30 and (tmp_path / "7.txt").read_text() == "7"
    assert not temporaries(tmp_path)


@pytest.mark.parametrize("target, message", [
    ("folder", "is a folder, so no file can be written in its place; it was left as it was."),
    ("file/below", "is a file, not a folder."),
])
def test_a_destination_that_is_no_file_is_one_sentence(tmp_path, target, message):
    from helpers.foundation import atomic
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("keep")
    with pytest.raises(atomic.WriteError, match=re.escape(message)):
        atomic.write_text(tmp_path / target, "x")
    assert (tmp_path / "file").read_text() == "keep" and not temporaries(tmp_path)


def test_permission_denied_as_another_user_is_one_sentence():
    """A real EACCES: a forked process that became nobody writes into root's folder (root itself may write all)."""
    import tempfile

    from helpers.foundation import atomic
    if os.geteuid() != 0:
        pytest.skip("becoming another user to meet a real permission error needs root")
    folder = Path(tempfile.mkdtemp())            # under /tmp, which nobody may enter (pytest's tmp_path is 0700)
    try:
        os.chmod(folder, 0o755)
        (folder / "x.txt").write_text("old")
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            message = "no error"
            try:
                os.setgid(65534)
                os.setuid(65534)
                atomic.write_text(folder / "x.txt", "new")
            except atomic.WriteError as error:
                message = str(error)
            finally:
                os.write(write, message.encode())
                os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        with os.fdopen(read) as pipe:
            message = pipe.read()
        assert message == f"permission denied while writing {folder / 'x.txt'}; the previous x.txt is intact."
        assert (folder / "x.txt").read_text() == "old" and os.listdir(folder) == ["x.txt"]
    finally:
        shutil.rmtree(folder)


def test_a_pipe_at_the_target_is_refused_and_a_link_there_is_replaced_not_followed(tmp_path):
    """A write never goes through a device, pipe or link: a link planted in a scratch folder cannot redirect it
    (before, `sample --out /dev/full` as root renamed a regular file over the device)."""
    from helpers.foundation import atomic
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(atomic.WriteError, match=r"pipe is a device, a pipe or a socket, not a file, so it is not "):
        atomic.write_text(tmp_path / "pipe", "x")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode)
    (tmp_path / "elsewhere.txt").write_text("keep")
    os.symlink(tmp_path / "elsewhere.txt", tmp_path / "link")
    atomic.write_text(tmp_path / "link", "new")
    assert (tmp_path / "elsewhere.txt").read_text() == "keep" and (tmp_path / "link").read_text() == "new"
    assert not (tmp_path / "link").is_symlink() and not temporaries(tmp_path)


def test_a_file_name_of_250_bytes_is_written_and_its_leftover_found(tmp_path):
    """The temporary's name is 14 bytes longer than the file's: cut, so it stays under the usual 255."""
    from helpers.foundation import atomic
    name = "é" * 125                                   # 250 bytes of UTF-8
    atomic.write_text(tmp_path / name, "x")
    assert (tmp_path / name).read_text() == "x" and os.listdir(tmp_path) == [name]
    leftover = atomic.temporary_name(tmp_path / name)
    leftover.write_text("left by a kill")
    assert atomic.remove_leftovers(tmp_path, [name]) == [leftover] and os.listdir(tmp_path) == [name]


def test_git_ignores_the_temporaries_a_kill_can_leave():
    names = ["checkpoints/cpu/x/.last.pt.0a1b2c3d.tmp", "rendered/cpu/..manifest.json.0a1b2c3d.tmp",
             "report/cpu/figures/.01_one_step_denoising-cell1-0.png.0a1b2c3d.tmp", "notebooks/.01_x.ipynb.0a1b2c3d.tmp"]
    done = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.split() == names


# ------------------------------------------------------------------------------------ output folders (render --out)
@pytest.fixture
def rendered(tmp_path):
    """A tiny notebook's stored outputs, rendered once with --report-only into out/, with a user's files there."""
    notebooks = tmp_path / "notebooks"
    with_stored_outputs(tiny_notebook(notebooks, "v1"), "v1")
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "mine.png").write_bytes(b"a user's figure")
    (out / "notes.txt").write_text("a user's notes")
    assert render("--notebooks", notebooks, "--report-only", "--out", out)[0] == 1   # 02..05 are missing
    return notebooks, out


def test_report_only_keeps_a_users_figures_and_removes_only_what_it_wrote(rendered):
    import nbformat
    notebooks, out = rendered
    manifest = json.loads((out / ".manifest.json").read_text())["files"]["report"]
    assert "figures/01_one_step_denoising-cell1-0.png" in manifest and "figures/mine.png" not in manifest
    notebook = nbformat.read(notebooks / TINY_NOTEBOOK, as_version=4)
    notebook.cells[1].id = "renamed"                      # its figure gets another name: the old one is stale
    nbformat.write(notebook, notebooks / TINY_NOTEBOOK)
    assert render("--notebooks", notebooks, "--report-only", "--out", out)[0] == 1
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["01_one_step_denoising-renamed-0.png", "mine.png"]
    assert (out / "figures" / "mine.png").read_bytes() == b"a user's figure"
    assert (out / "notes.txt").read_text() == "a user's notes" and not temporaries(out)


def test_a_folder_holding_files_render_did_not_write_is_refused_before_executing(rendered, tmp_path):
    notebooks, _ = rendered
    other = tmp_path / "other"
    (other / "figures").mkdir(parents=True)
    (other / "index.html").write_text("the user's own page")
    started = time.perf_counter()
    code, message = render(notebooks / TINY_NOTEBOOK, "--notebooks", notebooks, "--out", other)
    assert code == 1 and time.perf_counter() - started < 5                       # no kernel was started
    assert one_sentence(message).startswith(f"error: --out {other} holds 1 file that python -m instructor render "
                                            "would overwrite but did not write (index.html;")
    assert "add --replace" in message and sorted(os.listdir(other)) == ["figures", "index.html"]
    # --replace: the files under the report's names count as its own, so an old report's stale figure goes too
    (other / "figures" / "01_one_step_denoising-gone-0.png").write_bytes(b"an old report's figure")
    (other / "figures" / "mine.png").write_bytes(b"a user's figure")
    assert render("--notebooks", notebooks, "--report-only", "--out", other, "--replace")[0] == 1
    assert "index.html" in json.loads((other / ".manifest.json").read_text())["files"]["report"]
    assert sorted(os.listdir(other / "figures")) == ["01_one_step_denoising-cell1-0.png", "mine.png"]


@pytest.mark.parametrize("content, report_only", [("not json {", False), ('["a list"]', False),
                                                   ('{"01.ipynb": "fast"}', False), ("not json {", True)])
def test_a_timings_file_that_is_not_renders_is_one_sentence_before_executing(rendered, content, report_only):
    notebooks, out = rendered
    (out / "timings.json").write_text(content)
    argv = ["--report-only"] if report_only else [notebooks / TINY_NOTEBOOK]
    code, message = render(*argv, "--notebooks", notebooks, "--out", out, "--replace")
    if report_only:   # --report-only executes nothing and never reads the timings
        assert "timings" not in message
    else:
        assert code == 1 and one_sentence(message).startswith(f"error: {out / 'timings.json'} is ")
        assert "delete it or move it away" in message
    assert (out / "timings.json").read_text() == content


@pytest.mark.parametrize("where", ["a file", "below a file", "the notebooks folder"])
def test_an_unusable_out_is_refused_before_executing(rendered, tmp_path, where):
    notebooks, _ = rendered
    (tmp_path / "a_file").write_text("keep")
    out = {"a file": tmp_path / "a_file", "below a file": tmp_path / "a_file" / "out",
           "the notebooks folder": notebooks}[where]
    before = (notebooks / TINY_NOTEBOOK).read_bytes()
    code, message = render(notebooks / TINY_NOTEBOOK, "--notebooks", notebooks, "--out", out)
    assert code == 1 and one_sentence(message).startswith("error: --out")
    assert (tmp_path / "a_file").read_text() == "keep" and (notebooks / TINY_NOTEBOOK).read_bytes() == before


@pytest.mark.parametrize("manifest", ["{not json", '{"files": {"report": ["../../victim.txt", "/etc/x", 3]}}'])
def test_a_damaged_or_hostile_manifest_never_deletes_outside_what_render_wrote(rendered, tmp_path, manifest):
    notebooks, out = rendered
    (tmp_path / "victim.txt").write_text("keep")
    (out / ".manifest.json").write_text(manifest)
    code, message = render("--notebooks", notebooks, "--report-only", "--out", out, "--replace")
    if manifest.startswith("{not"):
        assert one_sentence(message).startswith(f"error: {out / '.manifest.json'}, the record of the files")
    assert (tmp_path / "victim.txt").read_text() == "keep" and (out / "notes.txt").exists()


def _fake_execution(edit: bool):
    """An executor for `instructor.execute.execute` that runs no kernel: it stores v1's outputs and, with `edit`,
    edits the source notebook meanwhile (as a user saving it in Jupyter would)."""
    import nbformat

    def fake(notebook, path, timeout):
        notebook.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="profile: cpu\nv1\n")]
        notebook.cells[1].outputs = [nbformat.v4.new_output("display_data", data={"image/png": PNG})]
        if edit:
            tiny_notebook(path.parent, "v1, edited while it ran")
        return 0.25
    return fake


@pytest.mark.parametrize("edit", [True, False])
def test_inplace_never_writes_over_a_notebook_edited_while_it_executed(rendered, monkeypatch, edit):
    from instructor import execute
    notebooks, out = rendered
    source = notebooks / TINY_NOTEBOOK
    tiny_notebook(notebooks, "v1")                                     # no outputs yet
    monkeypatch.setattr(execute, "execute", _fake_execution(edit))
    code, message = render(source, "--notebooks", notebooks, "--inplace", "--out", out)
    aside = sorted(notebooks.glob("01_one_step_denoising.executed-*.ipynb"))
    assert printed(out / TINY_NOTEBOOK) == "profile: cpu\nv1\n" and (out / "index.html").is_file()
    if edit:
        assert code == 1 and len(aside) == 1 and printed(aside[0]) == "profile: cpu\nv1\n"
        assert re.fullmatch(r"01_one_step_denoising\.executed-\d{8}-\d{6}\.ipynb", aside[0].name)
        sentence = (f"{source} was edited while it executed, so it was left as it is: the executed notebook is "
                    f"beside it, in {aside[0].name}.")
        assert message.startswith(f"error: {sentence} notebook 02_time_conditioned_flow_matching.ipynb is missing; ")
        assert printed(source) == "" and "edited while it ran" in source.read_text()     # the user's edit, whole
    else:
        assert "edited" not in message and not aside and printed(source) == "profile: cpu\nv1\n"
    assert not temporaries(notebooks.parent) and not (out / ".render.lock").exists()


def test_a_render_into_a_folder_another_render_writes_is_refused_naming_it_or_waits(rendered, capsys):
    """Another process holds the output folder's lock (as a render does while it runs): a render into that folder is
    refused in one sentence naming it; with --wait, it says whom it waits for, waits, then renders."""
    import threading
    notebooks, out = rendered

    def files():
        return {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".render.lock"}

    before = files()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom instructor.output_folder import folder_lock\n"
         f"with folder_lock({str(out / '.render.lock')!r}, 'the report'):\n    print('held', flush=True)\n"
         "    sys.stdin.readline()"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        code, message = render("--notebooks", notebooks, "--report-only", "--out", out)
        assert code == 1 and one_sentence(message).startswith(f"error: --out {out} is being written by process "
                                                              f"{holder.pid} on ")
        assert message.endswith("let it finish (or stop it), add --wait to wait for it, or give another folder.")
        assert "-c" in message and files() == before
        capsys.readouterr()
        waited = []
        waiter = threading.Thread(target=lambda: waited.append(
            render("--notebooks", notebooks, "--report-only", "--out", out, "--wait")))
        waiter.start()
        err, deadline = "", time.time() + 60
        while "waiting for" not in err and time.time() < deadline:
            time.sleep(0.05)
            err += capsys.readouterr().err
        assert err.startswith(f"waiting for process {holder.pid} on ") and not waited, err
        holder.stdin.write("done\n")
        holder.stdin.close()
        waiter.join(60)
        assert waited and waited[0][1].startswith("error: notebook 02_time_conditioned_flow_matching.ipynb is missing")
        assert f"report: {out / 'index.html'}" in capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait()
    assert not (out / ".render.lock").exists() and (out / "notes.txt").read_text() == "a user's notes"


@pytest.mark.parametrize("where", ["the repository", "a folder above it", "inside notebooks/", "inside helpers/",
                                   "inside --notebooks", "a link into --notebooks"])
def test_render_out_in_the_source_tree_is_refused_before_any_work(rendered, tmp_path, where):
    notebooks, _ = rendered
    out = {"the repository": ROOT, "a folder above it": ROOT.parent, "inside notebooks/": ROOT / "notebooks" / "r",
           "inside helpers/": ROOT / "helpers" / "report", "inside --notebooks": notebooks / "report",
           "a link into --notebooks": tmp_path / "link"}[where]
    if where.startswith("a link"):
        os.symlink(notebooks, out)
    listing = sorted(os.listdir(notebooks))
    code, message = render("--notebooks", notebooks, "--report-only", "--out", out, "--replace")
    assert code == 1 and one_sentence(message).startswith(f"error: --out {out} ")
    assert {"the repository": "is the repository,", "a folder above it": f"holds the repository {ROOT},"}.get(
        where, "is inside ") in message
    assert sorted(os.listdir(notebooks)) == listing and not os.path.lexists(ROOT / "notebooks" / "r")
    assert not os.path.lexists(ROOT / "helpers" / "report") and not os.path.lexists(ROOT / "index.html")


def test_render_out_through_a_link_writes_the_folder_it_points_at_and_keeps_the_link(rendered, tmp_path):
    notebooks, out = rendered
    os.symlink(out, tmp_path / "link")
    assert render("--notebooks", notebooks, "--report-only", "--out", tmp_path / "link")[0] == 1
    assert (tmp_path / "link").is_symlink() and (out / "notes.txt").read_text() == "a user's notes"
    assert "index.html" in json.loads((out / ".manifest.json").read_text())["files"]["report"]
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    code, message = render("--notebooks", notebooks, "--report-only", "--out", tmp_path / "dangling")
    assert code == 1 and one_sentence(message) == (f"error: --out {tmp_path / 'dangling'} is a link to "
                                                   f"{tmp_path / 'nowhere'}, which does not exist: create that folder, "
                                                   "or give another one.")
    assert not (tmp_path / "nowhere").exists()


# ------------------------------------------------------------------------------------------ full disk, read-only
@pytest.mark.slow
def test_a_checkpoint_on_a_full_disk_is_one_sentence_and_the_previous_is_intact(small_disk):
    import torch

    from helpers.foundation import atomic
    from helpers.foundation import checkpoint_files as ckpt
    disk = small_disk(512)
    ckpt.save_atomic({"epoch": 1, "w": torch.ones(1000)}, disk / "run" / "last.pt")
    fill(disk, leave=8192)
    with pytest.raises(atomic.WriteError) as failed:
        ckpt.save_atomic({"epoch": 2, "w": torch.ones(100_000)}, disk / "run" / "last.pt")
    assert str(failed.value) == (f"no space left on device while writing {disk / 'run' / 'last.pt'}; "
                                 "the previous last.pt is intact.")
    assert ckpt.load(disk / "run" / "last.pt")["epoch"] == 1 and os.listdir(disk / "run") == ["last.pt"]


def _tiny_training(folder, epochs=3, loss=None, keep=(1,), wait=False, retrain=False):
    import torch

    from helpers import flow_matching
    from helpers.course_unet import ConditionalCourseUNet
    from helpers.training.loop import TrainConfig, train
    threads = torch.get_num_threads()
    torch.set_num_threads(1)      # a tiny network: one thread is faster, and far faster on a busy machine
    try:
        torch.manual_seed(0)
        model = ConditionalCourseUNet(hidden=4, image_size=32, num_classes=0)
        data = (torch.linspace(-1, 1, 16 * 32 * 32).reshape(16, 1, 32, 32),)
        result = train(model, loss or flow_matching.training_loss(), data,
                       TrainConfig(epochs=epochs, batch_size=8, lr=1e-3, seed=3), folder, progress=False,
                       keep_epochs=keep, wait=wait, retrain=retrain)
    finally:
        torch.set_num_threads(threads)
    return model, result


@pytest.mark.slow
def test_training_on_a_full_disk_stops_in_one_sentence_with_the_last_epoch_intact(small_disk):
    from helpers import flow_matching
    from helpers.foundation import atomic
    from helpers.foundation import checkpoint_files as ckpt
    disk = small_disk(1024)
    loss, calls = flow_matching.training_loss(), [0]

    def filling_loss(model, batch):           # epoch 2 fills the disk: its checkpoint cannot be written
        calls[0] += 1
        if calls[0] == 3:
            fill(disk)
        return loss(model, batch)

    with pytest.raises(atomic.WriteError) as failed:
        _tiny_training(disk / "run", loss=filling_loss, keep=())
    assert str(failed.value) == (f"no space left on device while writing {disk / 'run' / 'last.pt'}; "
                                 "the previous last.pt is intact.")
    assert ckpt.load(disk / "run" / "last.pt")["epoch"] == 1 and os.listdir(disk / "run") == ["last.pt"]


@pytest.mark.slow
def test_sample_out_on_a_full_disk_is_one_sentence_before_and_after_sampling(small_disk, tmp_path, capsys,
                                                                              monkeypatch):
    import torch

    from helpers import samplers
    from instructor import sample
    _tiny_training(tmp_path / "run", epochs=1, keep=())
    disk = small_disk(256)
    sample.main([str(tmp_path / "run"), "--n", "2", "--steps", "1", "--out", str(disk / "s.pt")])
    before = (disk / "s.pt").read_bytes()
    fill(disk, leave=4096)                    # too little for 40 samples: refused before sampling
    monkeypatch.setattr(samplers, "generate", lambda *a, **k: pytest.fail("sampled before checking --out"))
    with pytest.raises(SystemExit):
        sample.main([str(tmp_path / "run"), "--n", "40", "--out", str(disk / "s.pt")])
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"--out {disk / 's.pt'}: not enough space for {disk}: about " in message and "MiB free." in message
    monkeypatch.undo()
    real = samplers.generate

    def filling_generate(*args, **kwargs):    # the disk fills while sampling: the write itself fails
        fill(disk)
        return real(*args, **kwargs)

    monkeypatch.setattr(samplers, "generate", filling_generate)
    (disk / "ballast").unlink()
    with pytest.raises(SystemExit) as stop:
        sample.main([str(tmp_path / "run"), "--n", "2", "--steps", "1", "--out", str(disk / "s.pt")])
    assert stop.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message == (f"python -m instructor sample: error: no space left on device while writing {disk / 's.pt'}; "
                       "the previous s.pt is intact.")
    assert (disk / "s.pt").read_bytes() == before and torch.load(disk / "s.pt")["images"].shape[0] == 2
    assert sorted(os.listdir(disk)) == ["ballast", "s.pt"]


@pytest.mark.slow
def test_render_on_a_full_disk_keeps_the_previous_report_and_saves_the_executed_notebook(small_disk, tmp_path,
                                                                                           rendered):
    notebooks, _ = rendered
    disk = small_disk(512)
    out = disk / "out"
    assert render("--notebooks", notebooks, "--report-only", "--out", out)[0] == 1
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    fill(disk, leave=4096)
    code, message = render("--notebooks", notebooks, "--report-only", "--out", out)
    assert code == 1 and one_sentence(message).startswith("error: no space left on device while writing ")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before and not temporaries(disk)
    # executing: the notebook itself fills the disk, so its output cannot be written after the hour of work
    (disk / "ballast").unlink()
    tiny_notebook(notebooks, "v2", extra=f"import os\nfd = os.open({str(disk / 'ballast')!r}, os.O_WRONLY | os.O_CREAT)\n"
                                         "try:\n    while True:\n        os.write(fd, bytes(65536))\n"
                                         "except OSError:\n    os.close(fd)")
    code, message = render(notebooks / TINY_NOTEBOOK, "--notebooks", notebooks, "--out", out)
    assert code == 1 and one_sentence(message).startswith(f"error: no space left on device while writing {out}")
    saved = Path(re.search(r"saved to (\S+\.ipynb) instead", message).group(1))
    assert "v2" in printed(saved) and {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not temporaries(disk) and not [p for p in out.rglob("*") if p.is_file() and p.stat().st_size == 0]
    shutil.rmtree(saved.parent)


@pytest.mark.slow
def test_a_read_only_file_system_is_refused_before_any_work(small_disk, tmp_path, rendered, capsys, monkeypatch):
    from helpers import samplers
    from helpers.foundation import atomic
    from helpers.measure import cache
    from instructor import sample
    notebooks, _ = rendered
    _tiny_training(tmp_path / "run", epochs=1, keep=())
    disk = small_disk(1024)
    shutil.copytree(tmp_path / "run", disk / "finished")
    remount_read_only(disk)
    started = time.perf_counter()
    code, message = render(notebooks / TINY_NOTEBOOK, "--notebooks", notebooks, "--out", disk / "out")
    assert code == 1 and time.perf_counter() - started < 5
    assert one_sentence(message) == (f"error: --out {disk / 'out'}: cannot write into {disk / 'out'}: the file system "
                                     f"is read-only (at {disk}).")
    monkeypatch.setattr(samplers, "generate", lambda *a, **k: pytest.fail("sampled before checking --out"))
    with pytest.raises(SystemExit):
        sample.main([str(tmp_path / "run"), "--n", "2", "--out", str(disk / "s.pt")])
    assert "the file system is read-only" in capsys.readouterr().err
    model, result = _tiny_training(disk / "finished", epochs=1, keep=())     # a finished run still loads
    assert result.epochs_done == 1 and result.resumed_from == 1
    with pytest.raises(atomic.WriteError, match=r"cannot be written \(read-only, or not yours\), so this run cannot "
                                                r"be trained there"):
        _tiny_training(disk / "finished", epochs=1, keep=(), retrain=True)
    with pytest.raises(atomic.WriteError, match=f"cannot train into {disk / 'new'}: the file system is read-only."):
        _tiny_training(disk / "new", epochs=1, keep=())
    capsys.readouterr()
    assert cache.cached(disk / "finished", "m", lambda: {"x": 1.0}, {"i": 1}) == {"x": 1.0}   # kept, one warning
    # the lock file is the first thing it cannot write: the same sentence as a write's, not a raw OSError
    assert capsys.readouterr().err == ("warning: the measurement 'm' was computed but not stored: the file system is "
                                       f"read-only while writing {disk / 'finished' / cache.FILE_NAME}; nothing was "
                                       f"written to {cache.FILE_NAME}.\n")


@pytest.mark.slow
def test_an_immutable_checkpoint_or_cache_file_is_one_sentence_and_a_computed_value_is_kept(tmp_path, capsys):
    """chattr +i: even root cannot replace the file. The checkpoint save says so in one sentence; the measurement
    cache (helpers/measure/cache.py, whose own tests cover its other faults) returns the value with one warning."""
    import torch

    from helpers.foundation import atomic
    from helpers.foundation import checkpoint_files as ckpt
    from helpers.measure import cache
    ckpt.save_atomic({"epoch": 1}, tmp_path / "last.pt")
    cache.cached(tmp_path, "a", lambda: {"x": 1.0}, {"i": 1})
    stored = (tmp_path / cache.FILE_NAME).read_bytes()
    if os.geteuid() != 0 or subprocess.run(["chattr", "+i", str(tmp_path / "last.pt"),
                                            str(tmp_path / cache.FILE_NAME)], capture_output=True).returncode:
        pytest.skip("making a file immutable needs root and a file system with chattr +i (ext4, xfs, btrfs)")
    try:
        with pytest.raises(atomic.WriteError) as failed:
            ckpt.save_atomic({"epoch": 2, "w": torch.ones(3)}, tmp_path / "last.pt")
        assert str(failed.value) == (f"operation not permitted while writing {tmp_path / 'last.pt'}; the previous "
                                     "last.pt is intact.")
        assert cache.cached(tmp_path, "b", lambda: {"x": 2.0}, {"i": 2}) == {"x": 2.0}
        warning = capsys.readouterr().err
        assert warning == ("warning: the measurement 'b' was computed but not stored: operation not permitted while "
                           f"writing {tmp_path / cache.FILE_NAME}; the previous {cache.FILE_NAME} is intact.\n")
        assert (tmp_path / cache.FILE_NAME).read_bytes() == stored
        assert ckpt.load(tmp_path / "last.pt")["epoch"] == 1 and not temporaries(tmp_path)
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "last.pt"), str(tmp_path / cache.FILE_NAME)])


def test_a_cache_lock_held_too_long_is_one_sentence_and_the_value_is_kept(tmp_path, capsys, monkeypatch):
    """Another process holding measurements.json's lock past the timeout (here a second lock on the file, which
    flock refuses even within one process): the value is returned, and the warning is one sentence."""
    import filelock

    from helpers.measure import cache
    monkeypatch.setattr(cache, "LOCK_TIMEOUT_S", 0.05)
    with filelock.FileLock(tmp_path / cache.LOCK_NAME):
        assert cache.cached(tmp_path, "m", lambda: {"x": 1.0}, {"i": 1}) == {"x": 1.0}
    assert capsys.readouterr().err == ("warning: the measurement 'm' was computed but not stored: another process "
                                       f"held its lock ({tmp_path / cache.LOCK_NAME}) for 0.05 s; the previous "
                                       f"{cache.FILE_NAME} is as it was.\n")
    assert not (tmp_path / cache.FILE_NAME).exists()


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_a_run_folder_that_is_a_file_is_one_sentence_before_training(tmp_path, where):
    from helpers.foundation import atomic
    (tmp_path / "file").write_text("keep")
    run = tmp_path / "file" if where == "a file" else tmp_path / "file" / "run"
    message = {"a file": f"{run} is a file, not a run folder: give a folder (a new one, or one that holds last.pt).",
               "below a file": f"cannot write {run / 'last.pt'}: {tmp_path / 'file'} is a file, not a folder."}[where]
    with pytest.raises(atomic.WriteError, match=re.escape(message)):
        _tiny_training(run, epochs=1, keep=(), loss=lambda *a: pytest.fail("trained"))
    assert (tmp_path / "file").read_text() == "keep"


@pytest.mark.slow
def test_a_file_system_without_locks_trains_with_one_warning(tmp_path, monkeypatch, capsys):
    """Simulated (no such mount here): flock failing with ENOSYS, as on some network and FUSE mounts."""
    import fcntl

    def no_flock(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    _, result = _tiny_training(tmp_path / "run", epochs=1, keep=())
    assert result.epochs_done == 1
    warning = capsys.readouterr().err
    assert warning == (f"warning: {tmp_path / 'run'} cannot be locked on its file system (Function not implemented): "
                       "nothing stops a second process from training it at the same time.\n")
    assert sorted(os.listdir(tmp_path / "run")) == ["last.pt"]


# ------------------------------------------------------------------------------------------------ concurrency
@pytest.mark.slow
def test_two_processes_training_one_run(helper):
    """A second trainer is refused in one sentence naming the first (pid, host, command); a third waits for it
    and then loads the finished run instead of training it again; while the run is retrained, a fourth that only
    loads the finished run is not refused."""
    found = helper["trainers"]
    root = Path(found["root"])
    first = found["first"]
    assert found["exit codes"] == [0, 0, 0, 0, 0]
    assert found["refused"] == (f"{root / 'run'} is being trained by process {first['pid']} on {first['host']} "
                                f"(`{first['command']}`, since {first['since']}): let it finish (or stop it), pass "
                                "train(..., wait=True) to wait for it here, or train into another run folder.")
    assert found["waited"]["resumed_from"] == 3 == found["waited"]["epochs_done"]
    assert found["waiting line"].startswith(f"waiting for process {first['pid']} on {first['host']}")
    assert found["loaded while retrained"] == {"resumed_from": 3}     # a finished run loads without waiting
    assert sorted(os.listdir(root / "run")) == ["epoch_001.pt", "last.pt"]   # no lock file, no temporary


@pytest.mark.slow
def test_two_processes_saving_one_checkpoint_never_collide(helper):
    """The old fixed temporary name made one of two writers die with FileNotFoundError (7 of 7 trials)."""
    found = helper["savers"]
    assert found["exit codes"] == [0, 0, 0] and found["saves"] >= 2 * 150
    assert found["reads"] >= 100 and found["bad reads"] == 0
    assert sorted(os.listdir(found["root"])) == ["last.pt"]


# ------------------------------------------------------------------------------------------------ SIGKILL sweeps
@pytest.mark.slow
def test_sigkill_at_every_kind_of_point_of_training_leaves_a_whole_checkpoint(helper, tmp_path):
    import torch

    from helpers.foundation import checkpoint_files as ckpt
    found = helper["sweep-train"]
    points = found["points"]
    assert len(points) >= 10 and all(p["signal"] == signal.SIGKILL for p in points), points
    reference, _ = _tiny_training(tmp_path / "reference", epochs=4, keep=(1, 2, 3))
    left = 0
    for point in points:
        run = Path(point["folder"])
        state = ckpt.load(run / "last.pt")                      # whole: the previous epoch's or the next one's
        assert state["epoch"] in (2, 3, 4) and len(state["history"]) == 2 * state["epoch"], point
        left += len(temporaries(run))
        resumed, result = _tiny_training(run, epochs=4, keep=(1, 2, 3))
        assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), reference.state_dict().values()))
        assert sorted(os.listdir(run)) == ["epoch_001.pt", "epoch_002.pt", "epoch_003.pt", "last.pt"], point
    print(f"training: {len(points)} SIGKILL points of {found['events']} file operations, {len(points)} whole, "
          f"{left} temporaries left by the kills, 0 after the next run")


@pytest.mark.slow
def test_sigkill_at_every_kind_of_point_of_render_inplace_leaves_the_previous_output_whole(helper):
    import nbformat
    found = helper["sweep-render"]
    points = found["points"]
    assert len(points) >= 10 and all(p["signal"] == signal.SIGKILL for p in points), points
    left, locks = [], 0
    for point in points:
        sandbox = Path(point["folder"])
        source, out = sandbox / "notebooks" / TINY_NOTEBOOK, sandbox / "out"
        assert nbformat.read(source, as_version=4).cells[0].source.startswith("print('profile: cpu')\nprint('v2')")
        assert printed(source) in ("", "profile: cpu\nv2\n"), point                     # as it was, or executed
        assert printed(out / TINY_NOTEBOOK) in ("profile: cpu\nv1\n", "profile: cpu\nv2\n"), point
        assert isinstance(json.loads((out / "timings.json").read_text()), dict)
        listed = set().union(*json.loads((out / ".manifest.json").read_text())["files"].values())
        index = (out / "index.html").read_text()
        assert index.rstrip().endswith("</table>") and all((out / target).is_file() for target in
                                                    re.findall(r'(?:src|href)="([^"#:]+)[#"]', index)), point
        assert (out / "figures" / "mine.png").read_bytes() == b"a user's figure"
        assert (out / "notes.txt").read_text() == "a user's notes"
        files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.endswith(".tmp")}
        # a kill while render holds the folder's lock leaves the lock file (git ignores it; the next render removes it)
        assert files - listed - {".render.lock"} == {".manifest.json", "figures/mine.png", "notes.txt"}, point
        locks += (out / ".render.lock").exists()
        left += [(point["event"], t) for t in temporaries(sandbox)]
    # a kill can leave a temporary only between its link and its rename: the next render removes it
    assert all(event.startswith("os.rename") for event, _ in left), left
    sandbox = Path(points[-1]["folder"])
    assert (sandbox / "out" / ".render.lock").exists()
    assert render(sandbox / "notebooks" / TINY_NOTEBOOK, "--notebooks", sandbox / "notebooks", "--inplace",
                  "--out", sandbox / "out")[0] == 1
    assert not temporaries(sandbox) and printed(sandbox / "notebooks" / TINY_NOTEBOOK) == "profile: cpu\nv2\n"
    assert not (sandbox / "out" / ".render.lock").exists()
    print(f"render --inplace: {len(points)} SIGKILL points of "
          f"{found['events']} file operations, {len(points)} whole, {len(left)} temporaries left by the kills "
          f"(each between a link and its rename) and {locks} lock files (git-ignored), 0 after the next run")


@pytest.mark.slow
def test_sigkill_at_every_kind_of_point_of_student_leaves_the_previous_edition_whole(helper):
    """`python -m instructor student --out DIR` over an edition a student worked in, killed just before file
    operation number k: DIR holds the previous edition exactly (or, killed after the swap, the new one exactly),
    never a mix; DIR holds no temporary, and beside it only git-ignored ones; the next build makes the new edition,
    with the student's changed file kept in .backup/, and leaves nothing beside it."""
    found = helper["sweep-student"]
    points, previous, rebuilt = found["points"], found["previous"], found["rebuilt"]
    assert len(points) >= 10 and all(p["signal"] == signal.SIGKILL for p in points), points
    kinds = {"open", "os.link", "os.rename", "os.mkdir", "os.remove", "os.rmdir", "instructor.output_folder.exchange"}
    assert kinds <= set(found["kinds"]) and kinds <= {p["operation"] for p in points}, found["kinds"]
    assert previous != rebuilt and ["notes.txt", previous[[n for n, _ in previous].index("notes.txt")][1]] in rebuilt
    backups = [name for name, _ in rebuilt if name.startswith(".backup")]
    assert backups == [".backup", ".backup/*", ".backup/*/helpers", ".backup/*/helpers/denoise.py"], backups
    outcome = {"previous": 0, "new": 0}
    for point in points:
        assert point["tree"] in (previous, rebuilt), (point["at"], point["operation"])
        outcome["previous" if point["tree"] == previous else "new"] += 1
        assert not point["temporaries inside"], point
        left = [name for name in point["beside"] if name != "student"]
        assert all(re.fullmatch(r"\.student\.([0-9a-f]{8}\.tmp|edition\.lock)", name) for name in left), left
        assert point["again"] == 0 and point["tree_after"] == rebuilt and point["beside_after"] == ["student"], point
    assert outcome["previous"] >= 5 and outcome["new"] >= 2, outcome
    leftovers = sorted({name for point in points for name in point["beside"] if name != "student"})
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *leftovers], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    assert ignored == leftovers
    print(f"student: {len(points)} SIGKILL points of {found['events']} file operations "
          f"({', '.join(f'{k} {v}' for k, v in sorted(found['kinds'].items()))}); the previous edition whole after "
          f"{outcome['previous']}, the new one after {outcome['new']}, never a mix; 0 temporaries in DIR, "
          f"{len(leftovers)} git-ignored beside it, 0 after the next build")


# ------------------------------------------------------------------------- the helper process (fork server)
def _subreaper() -> None:
    """Become the reaper of orphaned descendants (a killed render's kernel), so they can be ended here."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)    # PR_SET_CHILD_SUBREAPER


def _end_descendants() -> None:
    """SIGKILL and reap every child process left (this process started them all)."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                try:
                    os.kill(int(entry), signal.SIGKILL)
                    os.waitpid(int(entry), 0)
                except (ProcessLookupError, ChildProcessError):
                    pass


def _kill_hook(sandbox: str, kill_at: int | None, log: int):
    """An audit hook counting the file operations made in `sandbox` (and on descriptors), each written to the
    descriptor `log` as it happens, SIGKILLing this process just before operation number `kill_at`."""
    count = [0]

    def hook(event, args):
        if event not in FILE_EVENTS:
            return
        if event == "open":
            path, mode, flags = args
            if not ((mode is not None and any(c in mode for c in "wax+"))
                    or (mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))):
                return
        else:
            path = args[1] if event in ("os.rename", "os.link") else args[0]
        if not (isinstance(path, int) or str(path).startswith(sandbox) or event == "os.link"):
            return
        count[0] += 1
        os.write(log, f"{event} {path}\n".encode())
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return hook


def _fork(work, sandbox: Path, kill_at: int | None = None, log: bool = False) -> dict:
    """Run `work()` in a forked child with the kill hook; return how it ended and its last file operation (with
    `log`, every one)."""
    log_file = sandbox.parent / f".{sandbox.name}.events"
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
            sys.addaudithook(_kill_hook(str(sandbox), kill_at, log))
            try:
                work()
            except SystemExit as stop:
                code = 0 if stop.code in (None, 0) else 1
        except BaseException:
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    _end_descendants()
    events = log_file.read_text().splitlines() if log_file.exists() else []
    log_file.unlink(missing_ok=True)
    return {"folder": str(sandbox), "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None, "events": len(events),
            "event": events[-1] if events else "", **({"log": events} if log else {})}


def _points(total: int, count: int) -> list[int]:
    """`count` kill points spread over operations 1..total, first and last included."""
    return sorted({round(1 + i * (total - 1) / (count - 1)) for i in range(count)})


def _sweep_train(root: Path) -> dict:
    template = root / "template"

    def interrupted():                        # the previous output: a run stopped in epoch 3 of 4
        from helpers import flow_matching
        loss, calls = flow_matching.training_loss(), [0]

        def stopping(model, batch):
            calls[0] += 1
            if calls[0] == 5:
                raise KeyboardInterrupt
            return loss(model, batch)
        try:
            _tiny_training(template, epochs=4, loss=stopping, keep=(1, 2, 3))
        except KeyboardInterrupt:
            pass

    _fork(interrupted, template)
    shutil.copytree(template, root / "count")
    events = _fork(lambda: _tiny_training(root / "count", epochs=4, keep=(1, 2, 3)), root / "count")["events"]
    points = []
    for n, kill_at in enumerate(_points(events, 12)):
        sandbox = root / f"point{n:02d}"
        shutil.copytree(template, sandbox)
        points.append(_fork(lambda s=sandbox: _tiny_training(s, epochs=4, keep=(1, 2, 3)), sandbox, kill_at=kill_at))
    return {"events": events, "points": points}


def _sweep_render(root: Path) -> dict:
    from instructor import execute
    template = root / "template"
    notebooks, out = template / "notebooks", template / "out"
    tiny_notebook(notebooks, "v1")
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "mine.png").write_bytes(b"a user's figure")
    (out / "notes.txt").write_text("a user's notes")

    def run(sandbox: Path):
        return lambda: execute.main([str(sandbox / "notebooks" / TINY_NOTEBOOK), "--notebooks",
                                     str(sandbox / "notebooks"), "--inplace", "--out", str(sandbox / "out")])

    _fork(run(template), template)                       # the previous output: v1 executed and reported
    tiny_notebook(notebooks, "v2")                       # then the notebook is edited
    shutil.copytree(template, root / "count")
    events = _fork(run(root / "count"), root / "count")["events"]
    points = []
    for n, kill_at in enumerate(_points(events, 10)):
        sandbox = root / f"point{n:02d}"
        shutil.copytree(template, sandbox)
        points.append(_fork(run(sandbox), sandbox, kill_at=kill_at))
    return {"events": events, "points": points}


def _tree(folder: Path) -> list[list[str]]:
    """Every entry under `folder`: [relative name, what it is] (a file's SHA-256, a link's target, 'folder'), sorted;
    the time-stamped name of a backup folder reads ``.backup/*``."""
    import hashlib
    entries = []
    for path in folder.rglob("*"):
        name = re.sub(r"^\.backup/[^/]+", ".backup/*", path.relative_to(folder).as_posix())
        what = ("link " + os.readlink(path) if path.is_symlink() else "folder" if path.is_dir()
                else hashlib.sha256(path.read_bytes()).hexdigest())
        entries.append([name, what])
    return sorted(entries)


def _sweep_student(root: Path) -> dict:
    """`python -m instructor student --out DIR` killed at sampled file operations of a rebuild over an edition that
    a student worked in. The edition's content is computed once here (the kill points are in DIR, and reading the
    sources makes no file operation there): the previous edition A, and B, which changes the README and a notebook,
    drops a data file and adds a helpers module."""
    from instructor import edition
    first = edition.edition_files(ROOT, edition.active_exercises(ROOT), None, "main")
    second = {name: data for name, data in first.items() if name != "data/drawn/house.png"}
    second["README.md"] = first["README.md"] + b"\nErrata: one more line.\n"
    notebook = sorted(name for name in first if name.startswith("notebooks/"))[0]
    second[notebook] = first[notebook].replace(b'"cells": [', b'"cells": [ ', 1)
    second["helpers/errata.py"] = b'"""An errata module."""\n'
    content = [first]
    edition.edition_files = lambda *args, **kwargs: content[0]
    edition.active_exercises = lambda *args, **kwargs: ["1.1"]

    def run(sandbox: Path):
        return lambda: edition.main(["--out", str(sandbox / "student")])

    fsync, os.fsync = os.fsync, lambda descriptor: None   # a kill loses no written data; only a power cut would
    try:
        return _student_points(root, run, switch=lambda: content.__setitem__(0, second))
    finally:
        os.fsync = fsync


def _student_points(root: Path, run, switch) -> dict:
    """The sweep of `_sweep_student`: `run(sandbox)` builds the edition there, `switch()` turns A into B."""
    from helpers.foundation.atomic import LEFTOVER
    template = root / "template"
    template.mkdir()
    _fork(run(template), template)                          # the previous edition, then a student's work in it
    student = template / "student"
    solution = student / "helpers" / "denoise.py"
    solution.write_bytes(solution.read_bytes() + b"\n# my solution\n")
    (student / "notes.txt").write_text("a student's notes")
    (student / "mine").mkdir()
    (student / "mine" / "scratch.ipynb").write_text("{}")
    os.symlink("notes.txt", student / "mine" / "link-to-notes")
    previous = _tree(student)
    switch()
    shutil.copytree(template, root / "count", symlinks=True)
    counted = _fork(run(root / "count"), root / "count", log=True)
    assert counted["exit"] == 0, counted
    rebuilt = _tree(root / "count" / "student")
    log = counted["log"]
    kinds = {}
    for number, line in enumerate(log, 1):
        kinds.setdefault(line.split(" ", 1)[0], []).append(number)
    # each kind of operation at its first and last occurrence, just after the exchange, and evenly between
    exchange = kinds.get("instructor.output_folder.exchange", [len(log)])[0]
    chosen = {number for numbers in kinds.values() for number in (numbers[0], numbers[-1])}
    chosen = {number for number in chosen | {exchange + 1} | set(_points(len(log), 6)) if number <= len(log)}
    points = []
    for n, kill_at in enumerate(sorted(chosen)):
        sandbox = root / f"point{n:02d}"
        shutil.copytree(template, sandbox, symlinks=True)
        point = _fork(run(sandbox), sandbox, kill_at=kill_at)
        point.update(at=kill_at, operation=log[kill_at - 1].split(" ", 1)[0], tree=_tree(sandbox / "student"),
                     beside=sorted(os.listdir(sandbox)))
        point["temporaries inside"] = [name for name, _ in point["tree"] if LEFTOVER.fullmatch(name.split("/")[-1])]
        again = _fork(run(sandbox), sandbox)               # the next, un-killed build
        point.update(again=again["exit"], tree_after=_tree(sandbox / "student"), beside_after=sorted(os.listdir(sandbox)))
        points.append(point)
    return {"events": len(log), "kinds": {kind: len(numbers) for kind, numbers in kinds.items()},
            "previous": previous, "rebuilt": rebuilt, "points": points}


def _trainers(root: Path) -> dict:
    import time as clock

    from helpers import flow_matching
    from helpers.training.loop import LOCK_NAME, RunBusy
    run, loss = root / "run", flow_matching.training_loss()

    def slow(model, batch, seconds=0.3):
        clock.sleep(seconds)
        return loss(model, batch)

    def slower(model, batch):                   # the retraining's first checkpoint comes after a second
        return slow(model, batch, 0.5)

    first = os.fork()
    if first == 0:
        _tiny_training(run, epochs=3, loss=slow)
        os._exit(0)
    while True:                                 # until the first trainer has written its name into the lock
        try:
            holder = json.loads((run / LOCK_NAME).read_text())
            break
        except (OSError, ValueError):
            clock.sleep(0.02)
    found = {"first": holder}

    def refused():
        try:
            _tiny_training(run, epochs=3)
        except RunBusy as error:
            (root / "refused").write_text(str(error))

    def waited():
        stderr = os.open(root / "stderr", os.O_WRONLY | os.O_CREAT)
        os.dup2(stderr, 2)
        _, result = _tiny_training(run, epochs=3, wait=True)
        (root / "waited").write_text(json.dumps({"resumed_from": result.resumed_from,
                                                 "epochs_done": result.epochs_done}))

    def loading():                              # while the run is retrained, a loader of the finished run
        _, result = _tiny_training(run, epochs=3)
        (root / "loaded").write_text(json.dumps({"resumed_from": result.resumed_from}))

    codes = []
    for work in (refused, waited):
        pid = os.fork()
        if pid == 0:
            try:
                work()
                os._exit(0)
            except BaseException:
                os._exit(3)
        codes.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in [first, *codes]]
    retraining = os.fork()
    if retraining == 0:
        try:
            _tiny_training(run, epochs=3, loss=slower, retrain=True)
        finally:
            os._exit(0)
    while not (run / LOCK_NAME).exists():
        clock.sleep(0.02)
    reader = os.fork()
    if reader == 0:
        try:
            loading()
            os._exit(0)
        except BaseException:
            os._exit(3)
    codes += [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in (reader, retraining)]
    found["loaded while retrained"] = json.loads((root / "loaded").read_text())
    found.update({"exit codes": codes, "refused": (root / "refused").read_text(),
                  "waited": json.loads((root / "waited").read_text()),
                  "waiting line": (root / "stderr").read_text().strip()})
    holder["since"] = holder["since"].replace("T", " ")
    found["root"] = str(root)
    return found


def _savers(root: Path) -> dict:
    import torch

    from helpers.foundation import checkpoint_files as ckpt
    target = root / "last.pt"

    import multiprocessing
    reads_so_far = multiprocessing.RawValue("i", 0)   # shared with the forked children

    def save(writer):
        # at least 150 saves each, and on until the reader has read 100 times while they run (however busy the CPU)
        n, deadline = 0, time.time() + 120
        while n < 150 or (reads_so_far.value < 100 and time.time() < deadline):
            ckpt.save_atomic({"writer": writer, "n": n, "w": torch.full((2000,), float(n))}, target)
            n += 1
        (root / f"saves-{writer}").write_text(str(n))
        os._exit(0)

    def read():
        reads = bad = 0
        deadline = time.time() + 60
        while time.time() < deadline and reads < 2000:
            try:
                state = ckpt.load(target)
                bad += int(not torch.equal(state["w"], torch.full((2000,), float(state["n"]))))
                reads += 1
                reads_so_far.value = reads
            except ckpt.CheckpointError as error:
                if "no checkpoint at" not in str(error):
                    bad += 1
            if (root / "done").exists():
                break
        (root / "reads").write_text(json.dumps([reads, bad]))
        os._exit(0)

    pids = []
    for work in (lambda: save(0), lambda: save(1), read):
        pid = os.fork()
        if pid == 0:
            try:
                work()
            except BaseException:
                os._exit(3)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids[:2]]
    (root / "done").write_text("")
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pids[2], 0)[1]))
    reads, bad = json.loads((root / "reads").read_text())
    (root / "done").unlink()
    (root / "reads").unlink()
    final = ckpt.load(target)
    saves = [int((root / f"saves-{writer}").read_text()) for writer in (0, 1)]
    for writer in (0, 1):
        (root / f"saves-{writer}").unlink()
    last_is_whole = torch.equal(final["w"], torch.full((2000,), float(final["n"])))
    return {"exit codes": codes, "saves": sum(saves) if last_is_whole else -1, "reads": reads, "bad reads": bad,
            "root": str(root)}


def _all(root: Path) -> dict:
    """Every helper job, in one process (one interpreter start, one import of torch and the tools)."""
    found = {}
    for name, job in (("savers", _savers), ("trainers", _trainers), ("sweep-train", _sweep_train),
                      ("sweep-render", _sweep_render), ("sweep-student", _sweep_student)):
        (root / name).mkdir()
        started = time.perf_counter()
        found[name] = job(root / name)
        found[name]["seconds"] = round(time.perf_counter() - started, 1)
    return found


if __name__ == "__main__":   # the helper process: python tests/test_faults_files.py ROOT
    sys.path.insert(0, str(ROOT))
    import torch
    torch.set_num_threads(1)      # no thread pool exists when the children are forked
    import torch._dynamo  # noqa: F401  (an optimizer's first use imports it, for seconds: once, before forking)

    import instructor.execute  # noqa: F401
    _subreaper()
    print(json.dumps(_all(Path(sys.argv[1]))))
