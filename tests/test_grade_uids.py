"""instructor.grade.uids: each grading process of a machine gets a sandbox uid no other running one holds."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from instructor.grade import uids
from instructor.grade.sandbox import SandboxMissing

CLAIM = textwrap.dedent("""
    import sys
    from pathlib import Path
    from instructor.grade import uids
    uids._folder = lambda: Path(sys.argv[1])
    print(uids.claim(), flush=True)
    sys.stdin.read()   # hold the claim until told to end
""")


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="only a grader run as root claims sandbox uids")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setattr(uids, "_folder", lambda: tmp_path)
    monkeypatch.setattr(uids, "_held", {})
    return tmp_path


def _claimer(folder):
    process = subprocess.Popen([sys.executable, "-c", CLAIM, str(folder)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    return process, int(process.stdout.readline())


@needs_root
def test_running_graders_get_different_uids_and_a_killed_ones_is_free_again(folder):
    first, first_uid = _claimer(folder)
    second, second_uid = _claimer(folder)
    assert (first_uid, second_uid) == (uids.FIRST, uids.FIRST + 1)
    first.send_signal(signal.SIGKILL)        # a crashed grader: the kernel drops its lock
    first.wait()
    assert uids.claim() == uids.FIRST
    assert uids.claim() == uids.FIRST        # one process keeps its uid for all its sandboxes
    second.stdin.close()
    second.wait()


@needs_root
def test_every_uid_claimed_is_one_sentence(folder, monkeypatch):
    monkeypatch.setattr(uids, "SPAN", 2)
    holders = [_claimer(folder)[0] for _ in range(2)]
    try:
        with pytest.raises(SandboxMissing, match=r"^all 2 sandbox uids 60000 to 60001 are claimed by running "
                                                 r"graders .*: wait for some to end, or grade with fewer --jobs\.$"):
            uids.claim()
    finally:
        for holder in holders:
            holder.stdin.close()
            holder.wait()


def test_a_grader_run_as_another_user_claims_nothing(folder, monkeypatch):
    """Its sandboxes run as that user, in a user namespace: the uid is the user's own and no lock is taken."""
    monkeypatch.setattr(uids.os, "geteuid", lambda: 1000)
    assert uids.claim() == 1000 and list(folder.iterdir()) == [] and uids._held == {}


@needs_root
@pytest.mark.parametrize("made_by", ["the grader", "another user, writable by all", "a link"])
def test_the_lock_folder_is_trusted_only_when_it_is_roots_alone(tmp_path, monkeypatch, made_by):
    folder = tmp_path / "workbook-grade-uids"
    monkeypatch.setattr(uids, "FOLDER", folder)
    if made_by == "another user, writable by all":
        folder.mkdir()
        folder.chmod(0o1777)
    elif made_by == "a link":
        (tmp_path / "elsewhere").mkdir()
        folder.symlink_to(tmp_path / "elsewhere")
    if made_by == "the grader":
        assert uids._folder() == folder and folder.is_dir() and not folder.stat().st_mode & 0o022
    else:
        with pytest.raises(SandboxMissing, match=r"is not a folder of root's that only root can write, so its uid "
                                                 r"locks cannot be trusted: remove it \(the grader makes it again\)\.$"):
            uids._folder()
