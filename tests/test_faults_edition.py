"""Fault tests of `python -m instructor student --out DIR` (issue 28) beyond its SIGKILL sweep, which is in
tests/test_faults_files.py: where DIR is (a file, a dangling link, the repository, a source folder, a link to a
folder), a file where the edition needs a folder, two builds at once, files saved into DIR while it is built, a
tree a killed build left beside DIR, a file system where the tree cannot be swapped whole, and a full disk.

The edition's content is computed once for the module (`files`) and handed to `edition.build`, which the tests
exercise for what it does with DIR, not for how it strips exercises (tests/test_course.py does that). The tests
that build an edition (about a second each, most of it fsync) are marked slow; the refusals run in make test-fast.
"""
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from instructor import edition, output_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def content():
    return edition.active_exercises(ROOT), edition.edition_files(ROOT, edition.active_exercises(ROOT), None, "main")


@pytest.fixture
def files(content, monkeypatch):
    """The edition's files (a dict of name -> bytes the test may change), as `edition.build` will get them."""
    active, found = content
    found = dict(found)
    monkeypatch.setattr(edition, "active_exercises", lambda *args, **kwargs: active)
    monkeypatch.setattr(edition, "edition_files", lambda *args, **kwargs: found)
    return found


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` by relative name: its SHA-256 (a link: its target)."""
    return {path.relative_to(folder).as_posix(): ("link " + os.readlink(path)) if path.is_symlink()
            else hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file() or path.is_symlink()}


def beside(out: Path) -> list[str]:
    """What else than `out` its parent folder holds (a tree or a lock a build left)."""
    return sorted(name for name in os.listdir(out.parent) if name != out.name)


def student(*argv) -> tuple[int, str]:
    """`python -m instructor student` in this process: (exit status, its error line or '')."""
    try:
        edition.main([str(a) for a in argv])
    except SystemExit as stop:
        return (1, stop.code) if isinstance(stop.code, str) else (stop.code or 0, "")
    return 0, ""


def one_sentence(message: str) -> str:
    assert "Traceback" not in message and message.count("\n") == 0 and message.strip().endswith("."), message
    return message


# ------------------------------------------------------------------------------------------------ where DIR is
def test_an_out_that_is_a_file_or_a_dangling_link_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setattr(edition, "edition_files", lambda *a, **k: pytest.fail("built before checking --out"))
    (tmp_path / "a_file").write_text("keep")
    code, message = student("--out", tmp_path / "a_file")
    assert code == 1 and one_sentence(message) == f"error: --out {tmp_path / 'a_file'} is a file, not a folder: give a folder."
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    code, message = student("--out", tmp_path / "dangling")
    assert code == 1 and one_sentence(message) == (f"error: --out {tmp_path / 'dangling'} is a link to "
                                                   f"{tmp_path / 'nowhere'}, which does not exist: create that "
                                                   "folder, or give another one.")
    assert (tmp_path / "a_file").read_text() == "keep" and sorted(os.listdir(tmp_path)) == ["a_file", "dangling"]


@pytest.mark.parametrize("where", ["the repository", "the folder above it", "inside notebooks/", "inside helpers/",
                                   "a link to the repository", "a link into data/"])
def test_an_out_in_the_source_tree_is_refused_before_any_work(tmp_path, monkeypatch, where):
    monkeypatch.setattr(edition, "edition_files", lambda *a, **k: pytest.fail("built before checking --out"))
    out = {"the repository": ROOT, "the folder above it": ROOT.parent, "inside notebooks/": ROOT / "notebooks" / "ed",
           "inside helpers/": ROOT / "helpers" / "ed", "a link to the repository": tmp_path / "link",
           "a link into data/": tmp_path / "link"}[where]
    if where.startswith("a link"):
        os.symlink(ROOT if where.endswith("repository") else ROOT / "data", out)
    status = subprocess.run(["git", "status", "--porcelain", "--ignored", "--", "notebooks", "helpers", "data"],
                            cwd=ROOT, capture_output=True, text=True).stdout
    code, message = student("--out", out)
    assert code == 1 and one_sentence(message).startswith(f"error: --out {out} ")
    assert {"the repository": "is the repository,", "the folder above it": f"holds the repository {ROOT},",
            "a link to the repository": "is the repository,"}.get(where, "is inside ") in message
    assert "default: student/" in message
    assert subprocess.run(["git", "status", "--porcelain", "--ignored", "--", "notebooks", "helpers", "data"],
                          cwd=ROOT, capture_output=True, text=True).stdout == status
    assert not [name for name in os.listdir(ROOT.parent) if name.startswith(f".{ROOT.name}.")]


@pytest.mark.slow
def test_an_out_through_a_link_builds_the_folder_it_points_at_and_keeps_the_link(tmp_path, files):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    edition.build(tmp_path / "link")
    (tmp_path / "real" / "notes.txt").write_text("mine")
    files["README.md"] += b"\nErrata.\n"
    edition.build(tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and os.readlink(tmp_path / "link") == str(tmp_path / "real")
    assert (tmp_path / "real" / "README.md").read_bytes().endswith(b"Errata.\n")
    assert (tmp_path / "real" / "notes.txt").read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["link", "real"]


def test_a_file_where_the_edition_writes_a_folder_is_one_sentence(tmp_path, files):
    out = tmp_path / "student"
    out.mkdir()
    (out / "helpers").write_text("a user's file named helpers")
    code, message = student("--out", out)
    assert code == 1 and one_sentence(message) == (f"error: --out {out} holds a file helpers where python -m "
                                                   "instructor student writes a folder: move it away, or give "
                                                   "another folder.")
    assert os.listdir(out) == ["helpers"] and beside(out) == []


# ------------------------------------------------------------------------------------------------ concurrency
@pytest.mark.slow
def test_a_second_build_is_refused_naming_the_first_or_waits_for_it(tmp_path, files, capsys):
    """The lock beside DIR held by another holder (a thread here: flock refuses a second open of the file even
    within one process): refused in one sentence naming it; with --wait, it waits, then builds."""
    out = tmp_path / "student"
    edition.build(out)
    before = tree(out)
    lock_file = tmp_path / ".student.edition.lock"
    held, release = threading.Event(), threading.Event()

    def hold():
        with output_folder.folder_lock(lock_file, "the edition"):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        held.wait(30)
        files["README.md"] += b"\nErrata.\n"
        code, message = student("--out", out)
        assert code == 1 and one_sentence(message).startswith(f"error: --out {out} is being written by process "
                                                              f"{os.getpid()} on ")
        assert message.endswith("let it finish (or stop it), add --wait to wait for it, or give another folder.")
        assert tree(out) == before
        threading.Timer(0.5, release.set).start()
        started = time.perf_counter()
        assert student("--out", out, "--wait") == (0, "")
        assert time.perf_counter() - started >= 0.4
    finally:
        release.set()
        holder.join()
    assert capsys.readouterr().err.startswith(f"waiting for process {os.getpid()} on ")
    assert (out / "README.md").read_bytes().endswith(b"Errata.\n") and beside(out) == []


@pytest.mark.slow
def test_files_saved_into_the_folder_while_it_is_built_are_kept(tmp_path, files, monkeypatch, capsys):
    """Between the new tree's making and its swap a user saves a new file, and saves a file of theirs the way
    editors do (a new file renamed over it): both are in the folder afterwards, nothing is lost."""
    out = tmp_path / "student"
    edition.build(out)
    (out / "notes.txt").write_text("first draft")
    real_exchange = output_folder._exchange

    def saving_meanwhile(a, b):
        (out / "late.txt").write_text("saved during the build")
        (out / ".notes.txt.swp").write_text("second draft")
        os.rename(out / ".notes.txt.swp", out / "notes.txt")
        real_exchange(a, b)

    monkeypatch.setattr(output_folder, "_exchange", saving_meanwhile)
    files["README.md"] += b"\nErrata.\n"
    capsys.readouterr()
    edition.build(out)
    assert (out / "late.txt").read_text() == "saved during the build"
    assert (out / "notes.txt").read_text() == "second draft" and not (out / ".backup").exists()
    assert "2 files saved into" in capsys.readouterr().out and beside(out) == []


@pytest.mark.slow
def test_a_tree_a_killed_build_left_beside_is_emptied_and_what_is_not_its_own_moved_back(tmp_path, files, capsys):
    out = tmp_path / "student"
    edition.build(out)
    (out / "notes.txt").write_text("mine, current")
    left = tmp_path / ".student.0a1b2c3d.tmp"             # the previous folder, swapped out just before a kill
    (left / "helpers").mkdir(parents=True)
    readme = b"an earlier edition's README\n"
    (left / "README.md").write_bytes(readme)              # its own, unchanged: goes
    (left / "helpers" / "denoise.py").write_text("# a student's changed solution\n")   # its own, changed: backup
    (left / ".README.md.0a1b2c3d.tmp").write_text("a temporary")                       # goes
    (left / "mine.txt").write_text("a file saved there")  # not its own, free in the folder: moved back
    (left / "notes.txt").write_text("mine, older")        # not its own, taken: backup
    (left / ".manifest.json").write_text(json.dumps({"files": {"edition": ["README.md", "helpers/denoise.py"]},
                                                     "sha256": {"README.md": hashlib.sha256(readme).hexdigest(),
                                                                "helpers/denoise.py": "0" * 64}}))
    capsys.readouterr()
    edition.build(out)
    assert beside(out) == [] and (out / "mine.txt").read_text() == "a file saved there"
    kept = {path.relative_to(out).as_posix().split("/", 2)[2]: path.read_text()
            for path in (out / ".backup").rglob("*") if path.is_file()}
    assert kept == {"helpers/denoise.py": "# a student's changed solution\n", "notes.txt": "mine, older"}
    assert (out / "notes.txt").read_text() == "mine, current"
    assert "3 files saved into" in capsys.readouterr().out


@pytest.mark.slow
def test_the_rebuilt_folder_keeps_its_mode(tmp_path, files):
    out = tmp_path / "student"
    edition.build(out)
    out.chmod(0o750)
    files["README.md"] += b"\nErrata.\n"
    edition.build(out)
    assert out.stat().st_mode & 0o777 == 0o750


# ------------------------------------------------------------------------------------- no whole swap possible
@pytest.mark.slow
@pytest.mark.parametrize("why", ["no exchange on this file system", "files that cannot be hard-linked"])
def test_where_no_swap_is_possible_the_edition_is_written_in_place(tmp_path, files, monkeypatch, why):
    """NFS has no RENAME_EXCHANGE (EINVAL); protected_hardlinks refuses to link another user's file (EPERM)."""
    out, reference = tmp_path / "student", tmp_path / "elsewhere" / "reference"
    edition.build(out)
    (out / "notes.txt").write_text("mine")
    (out / "helpers" / "denoise.py").write_text("# my solution\n")
    files["README.md"] += b"\nErrata.\n"
    edition.build(reference)
    if why.startswith("no exchange"):
        monkeypatch.setattr(output_folder.ctypes, "get_errno", lambda: errno.EINVAL)
        monkeypatch.setattr(output_folder.ctypes, "CDLL", lambda *a, **k: type("C", (), {
            "renameat2": type("F", (), {"argtypes": None, "__call__": lambda self, *a: -1})()})())
    else:
        real_link = os.link

        def link(source, target, *args, **kwargs):
            if ".student." in str(target):
                raise OSError(errno.EPERM, "Operation not permitted")
            return real_link(source, target, *args, **kwargs)
        monkeypatch.setattr(output_folder.os, "link", link)
    folder = out.stat().st_ino
    edition.build(out)
    assert out.stat().st_ino == folder                      # written in place: the same folder, not a new one
    assert beside(out) == ["elsewhere"] and (out / "notes.txt").read_text() == "mine"
    got, want = tree(out), tree(reference)
    backup = [name for name in got if name.startswith(".backup/")]
    assert len(backup) == 1 and backup[0].endswith("/helpers/denoise.py")
    assert {k: v for k, v in got.items() if k not in backup and k != "notes.txt"} == want


# ------------------------------------------------------------------------------------------------ full disk
@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of `kib` KiB mounted at tmp_path/disk; skipped with the reason where the test may not mount one."""
    point = tmp_path / "disk"

    def make(kib: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("a real full disk needs a tmpfs mounted by the test, which needs root")
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"mounting a tmpfs was refused ({done.stderr.strip()})")
        return point

    yield make
    subprocess.run(["umount", "-l", str(point)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_is_one_sentence_before_or_while_building_and_the_previous_edition_is_whole(small_disk, files,
                                                                                               monkeypatch):
    disk = small_disk(24 * 1024)
    out = disk / "student"
    edition.build(out)
    before = tree(out)
    files["README.md"] += b"\nErrata.\n"
    with open(disk / "ballast", "wb") as ballast:            # too little room: refused before anything is written
        ballast.write(b"\0" * (shutil.disk_usage(disk).free - 4 * 2**20))
    code, message = student("--out", out)
    assert code == 1 and one_sentence(message).startswith(f"error: --out {out}: not enough space for {out}: about ")
    (disk / "ballast").unlink()
    real_stage = output_folder.OutputFolder._stage

    def filling(*args, **kwargs):                            # the disk fills once the checks have passed
        with open(disk / "ballast", "wb") as ballast:
            ballast.write(b"\0" * (shutil.disk_usage(disk).free - 64 * 1024))
        return real_stage(*args, **kwargs)

    monkeypatch.setattr(output_folder.OutputFolder, "_stage", staticmethod(filling))
    code, message = student("--out", out)
    assert code == 1 and re.fullmatch(rf"error: no space left on device while writing {re.escape(str(out))}/\S+; "
                                      r"the previous \S+ is intact\.", one_sentence(message)), message
    assert tree(out) == before and sorted(os.listdir(disk)) == ["ballast", "student"]


@pytest.mark.slow
def test_an_out_that_is_a_mount_point_is_rebuilt_in_place(small_disk, files):
    """A folder that is a mount point cannot be swapped (its parent's entry is the mount): written in place."""
    out = small_disk(24 * 1024)
    edition.build(out)
    (out / "notes.txt").write_text("mine")
    files["README.md"] += b"\nErrata.\n"
    edition.build(out)
    assert os.path.ismount(out) and (out / "README.md").read_bytes().endswith(b"Errata.\n")
    assert (out / "notes.txt").read_text() == "mine" and beside(out) == []
