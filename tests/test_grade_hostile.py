"""Hostile hand-ins against the class grader (instructor/grade): each case is recorded as its exercise's failure
(or the hand-in's refusal) with its reason, nothing outside the sandbox's scratch changes, and grading goes on.

One hand-in carries one hostile behaviour per exercise (instructor/grade/synthetic.py HOSTILE: each in a function
no other exercise calls), graded once with small caps (4 s an exercise, 1 GiB, 64 processes, 2 MiB of output);
each test reads its own exercise's verdict. The archive-level cases (zip bomb, traversal, link) are hand-crafted
zips. The hand-ins folder is fingerprinted before and after; the repository and the gradebook are checked for
what the hostile code tried to write."""
import hashlib
import json
import os
import socket
import stat
import zipfile
from pathlib import Path

import pytest

from helpers import checks
from helpers.exercises import CheckFailed
from helpers.handin.archive import EXERCISE_FILES
from instructor.grade import student_report, synthetic
from instructor.grade.one import grade_one
from instructor.grade.sandbox import Caps, unavailable

ROOT = Path(__file__).resolve().parent.parent
MARKER = f"hostile-{os.getpid()}"
CAPS = Caps(exercise_s=4, handin_s=240, startup_s=90, memory_mib=1024, processes=64, output_mib=2, scratch_mib=64)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]


def fingerprint(*folders: Path) -> dict:
    found = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")) if folder.exists() else ():
            if path.is_file() and "__pycache__" not in path.parts and ".scratch" not in path.parts:
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def processes_with(marker: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if marker.encode() in (proc / "cmdline").read_bytes():
                found.append(proc.name)
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def blank(tmp_path_factory):
    return synthetic.student_edition(tmp_path_factory.mktemp("edition"))


@pytest.fixture(scope="module")
def graded(tmp_path_factory, blank):
    """The hostile hand-in, graded once; with what the listener got, the hand-ins' fingerprints and the folders.
    (The repository itself is checked by content: other work may edit its files while this runs.)"""
    tmp = tmp_path_factory.mktemp("hostile")
    handins, grades = tmp / "handins", tmp / "grades"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    replace, prepend = synthetic.hostile_code(repo=str(ROOT), grades=str(grades), handins=str(handins),
                                              port=listener.getsockname()[1], marker=MARKER)
    repo = synthetic.repository(blank, tmp / "repo", replace=replace, prepend=prepend)
    (repo / "notebooks" / "03_class_conditioned_flow_matching.ipynb").write_text('{"nbformat": 3}')
    archive = synthetic.hand_in(repo, handins / "mallory.handin.zip")
    (grades / "results").mkdir(parents=True)
    before = fingerprint(handins)
    result = grade_one(archive, grades, blank, CAPS)
    try:
        connection, _ = listener.accept()
        connected = True
        connection.close()
    except BlockingIOError:
        connected = False
    listener.close()
    after = fingerprint(handins)
    return {"result": result, "exercises": result["exercises"], "before": before, "after": after, "tmp": tmp,
            "grades": grades, "handins": handins, "connected": connected, "notes": " ".join(result["tampering"])}


def failed(graded, key: str) -> str:
    exercise = graded["exercises"][key]
    assert exercise["points"] == 0, (key, exercise["feedback"])
    return exercise["feedback"]


def test_fork_bomb_hits_the_process_cap_and_costs_its_exercise_only(graded):
    assert "Resource temporarily unavailable" in failed(graded, "3.2")


def test_endless_loop_is_killed_at_the_exercise_cap(graded):
    assert failed(graded, "3.1") == "exercise 3.1 ran past the 4 s exercise 3.1 may take"


def test_ten_gib_allocation_fails_at_the_memory_cap(graded):
    assert "can't allocate memory" in failed(graded, "2.2")


def test_writes_outside_scratch_change_nothing(graded):
    feedback = failed(graded, "4.5")
    assert feedback.count("wrote ") == 1 and f"wrote /tmp/evil-{MARKER}.txt" in feedback   # only the sandbox's /tmp
    assert "Read-only file system" in feedback or "No such file" in feedback
    assert graded["after"] == graded["before"]                                  # the hand-ins folder
    assert "written by a submission" not in (ROOT / "helpers" / "diffusion.py").read_text()
    assert not (ROOT / "evil.txt").exists() and not Path(f"/tmp/evil-{MARKER}.txt").exists()
    assert not list(graded["tmp"].rglob("evil*"))
    assert sorted(p.name for p in graded["grades"].iterdir()) == ["reports", "results"]   # scratch removed


def test_reference_and_hidden_checks_cannot_be_read(graded):
    feedback = failed(graded, "4.6")
    assert feedback.count("No such file or directory") == 4
    assert "SOLUTION" not in feedback and "read /" not in feedback


def test_sockets_reach_nothing(graded):
    feedback = failed(graded, "4.7")
    assert "Connection refused" in feedback and "Network is unreachable" in feedback
    assert not graded["connected"]


def test_background_process_is_gone_after_grading(graded):
    assert "started a background process" in failed(graded, "4.8")
    assert processes_with(MARKER) == []


def test_printing_100_mb_stops_at_the_output_cap(graded):
    assert failed(graded, "5.1") == "exercise 5.1 printed more than 2 MiB (the output cap), so it was stopped"


def test_forged_result_channel_gains_nothing_and_is_recorded(graded):
    failed(graded, "5.2")
    assert "without the grader's nonce" in graded["notes"] and "which was not running" in graded["notes"]


def test_killing_its_own_process_costs_its_exercise_only(graded):
    assert "ended the grading process (killed by signal 9" in failed(graded, "2.3")


def test_patching_checks_at_import_gains_nothing_and_is_recorded(graded):
    exercise = graded["exercises"]["1.1"]
    assert not exercise["visible"]["passed"]
    with pytest.raises(CheckFailed) as real:       # what the real check says of this add_noise (returns x itself)
        checks.add_noise(lambda x, sigma, generator=None: x.clone())
    assert exercise["feedback"] == str(real.value)
    for name in ("helpers.checks.add_noise", "helpers.checks.core.close", "helpers.exercises.CheckFailed", "sys.exit"):
        assert name in graded["notes"]


def test_untouched_exercises_still_get_full_marks(graded):
    for key in ("1.2", "1.3", "2.1", "4.1", "4.2", "4.3", "4.4"):
        exercise = graded["exercises"][key]
        assert exercise["points"] == exercise["max"] > 0, (key, exercise["feedback"])


def test_wrong_format_notebook_is_one_sentence(graded):
    sentence = [m for m in graded["result"]["missing"] if m.startswith("notebooks/03_")]
    assert sentence and "is not a Jupyter notebook" in sentence[0] and "\n" not in sentence[0]


def test_not_json_notebook_is_one_sentence(tmp_path):
    from instructor import report
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (folder / "01_one_step_denoising.ipynb").write_text("this is not JSON {")
    notebooks, problems = student_report.read(folder, report.load_mapping())
    assert notebooks["01"] is None
    assert problems == ["notebooks/01_one_step_denoising.ipynb is not a Jupyter notebook (NotJSONError): save it "
                        "again from Jupyter and hand in again"]


def _zip(path: Path, members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for info, data in members:
            archive.writestr(info, data)
    return path


def _refused(tmp_path, members) -> dict:
    archive = _zip(tmp_path / "handins" / "eve.handin.zip", members)
    grades = tmp_path / "grades"
    result = grade_one(archive, grades, tmp_path / "base-unused", CAPS)
    assert result["points"] == 0 and result["refused"]
    assert json.loads((grades / "results" / "eve.json").read_text())["refused"] == result["refused"]
    assert not (grades / ".scratch").exists() or not any((grades / ".scratch").iterdir())
    return result


def test_zip_bomb_is_refused(tmp_path):
    bomb = [("manifest.json", b"{}"), ("notebooks/01_one_step_denoising.ipynb", bytes(40 * 2**20))]
    assert "past the size cap" in _refused(tmp_path, bomb)["refused"]


def test_path_traversal_is_refused(tmp_path):
    result = _refused(tmp_path, [("manifest.json", b"{}"), ("../../evil.py", b"print('escaped')")])
    assert "'../../evil.py'" in result["refused"]
    assert not (tmp_path / "evil.py").exists() and not (tmp_path.parent / "evil.py").exists()


def test_link_in_the_archive_is_refused(tmp_path):
    link = zipfile.ZipInfo(EXERCISE_FILES[0])
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    result = _refused(tmp_path, [("manifest.json", b"{}"), (link, str(ROOT / EXERCISE_FILES[0]).encode())])
    assert "as a link, not a plain file" in result["refused"]
