"""Grading a class as a Slurm job array (instructor/grade/slurm.py) on a real single-node cluster.

The cluster (tests/slurm_cluster.py) is started as root with Debian's slurm-wlm and munge, as .ci/run installs
them; elsewhere the cluster tests skip with the reason. 5 hand-ins (reference-filled, blank, half-done) are
built once, graded locally with `python -m instructor grade --jobs 2` and as an array, and the two gradebooks
must be equal. The script's text and the one-sentence errors are checked without a cluster."""
import argparse
import csv
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from slurm_cluster import single_node_cluster, unavailable

from helpers.exercises import EXERCISES
from helpers.handin.archive import pack
from instructor import edition
from instructor.grade import grader_version, merge, one, slurm
from instructor.grade.cli import Item
from instructor.grade.sandbox import DEFAULT_CAPS, Caps

ROOT = Path(__file__).resolve().parent.parent
KEYS = [e.key for e in EXERCISES]
CLASS = 5   # two filled, two blank, one half-done: every kind of row, in about a minute of grading


@pytest.fixture(scope="session")
def cluster():
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with single_node_cluster() as conf, pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", conf)
        yield conf


def _students() -> dict[str, tuple[str, ...]]:
    """Hand-in name -> the exercises left as stubs: a third reference-filled, a third blank, the rest half-done
    (each missing a different run of exercises), so every student's row can differ."""
    students = {}
    for i in range(CLASS):
        if i % 3 == 0:
            keep = ()
        elif i % 3 == 1:
            keep = tuple(KEYS)
        else:
            start = (i * 5) % len(KEYS)
            keep = tuple(KEYS[(start + j) % len(KEYS)] for j in range(len(KEYS) // 2))
        students[f"student{i:02d}"] = keep
    return students


@pytest.fixture(scope="session")
def handins(tmp_path_factory):
    """The class's archives, packed from one student edition filled three ways."""
    base = tmp_path_factory.mktemp("class")
    folder = base / "handins"
    folder.mkdir()
    blank = base / "blank"
    edition.build(blank)
    built: dict[tuple[str, ...], Path] = {}
    for name, keep in _students().items():
        if keep not in built:
            repo = base / f"repo{len(built)}"       # what pack reads: the notebooks and the helpers
            for sub in ("notebooks", "helpers"):
                shutil.copytree(blank / sub, repo / sub)
            if keep != tuple(KEYS):
                edition.fill(repo, keep=keep)
            built[keep] = repo
        pack(built[keep], folder / f"{name}.handin.zip", release="test", profile="cpu", device="cpu")
    return folder


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_script_grades_line_i_plus_one_with_the_sandbox_caps(tmp_path):
    caps = Caps(handin_s=900.0, memory_mib=1536, processes=64)
    text = slurm.script(20, tmp_path / "slurm" / "handins.txt", tmp_path, slurm.request(caps), max_running=4,
                        caps=caps, python="/opt/py/bin/python", workdir=Path("/srv/course"))
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in ("--array=0-19%4", "--cpus-per-task=1", "--mem=2560M", "--time=20", "--chdir=/srv/course",
                      f"--output={tmp_path}/slurm/logs/%A_%a.out"):
        assert f"#SBATCH {directive}" in lines
    command = lines[-1]
    assert command.startswith(f'exec /opt/py/bin/python -m instructor grade-one "$archive" --out {tmp_path} ')
    assert "--handin-seconds 900 " in command and "--memory-mib 1536 " in command and "--processes 64 " in command
    # no throttle when K covers the class
    assert "#SBATCH --array=0-19" in slurm.script(20, tmp_path / "l", tmp_path, slurm.request(caps), 20).splitlines()


def test_request_leaves_room_for_the_sandbox_caps():
    need = slurm.request(DEFAULT_CAPS)
    assert need.cpus == 1
    assert need.mem_mib == DEFAULT_CAPS.memory_mib + slurm.GRADER_MIB
    assert need.minutes * 60 >= DEFAULT_CAPS.handin_s + slurm.MARGIN_S
    assert slurm.request(Caps(handin_s=30.0)).minutes == 6


def test_caps_written_for_grade_one_parse_back_to_the_same_caps():
    parser = argparse.ArgumentParser()
    one.caps_arguments(parser)
    options = {o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help")}
    assert set(slurm.CAP_OPTIONS.values()) == options      # every cap grade-one takes, and only those
    assert set(slurm.CAP_OPTIONS) <= {f.name for f in dataclasses.fields(Caps)}
    caps = Caps(exercise_s=12.5, handin_s=100.0, startup_s=30.0, memory_mib=999, processes=7, open_files=33,
                output_mib=0.25, scratch_mib=64)
    assert one.caps_from(parser.parse_args(slurm.caps_argv(caps))) == caps


def test_script_picks_archive_i_per_task_and_leaves_the_uid_to_grade_one(tmp_path):
    """The script's own shell lines, run with each task id; grade-one claims the task's uid (instructor.grade.uids)."""
    archives = [tmp_path / f"s{i}.handin.zip" for i in range(3)]
    listing = tmp_path / "handins.txt"
    listing.write_text("".join(f"{a}\n" for a in archives))
    lines = slurm.script(3, listing, tmp_path, slurm.Request(1, 1024, 5), 2).splitlines()
    select = "; ".join(line for line in lines if line.startswith("archive="))
    for i, archive in enumerate(archives):
        said = subprocess.run(["bash", "-c", f'{select}; echo "$archive"'], capture_output=True, text=True,
                              env=dict(os.environ, SLURM_ARRAY_TASK_ID=str(i)), check=True)
        assert said.stdout.split() == [str(archive)]
    assert "--uid" not in lines[-1] and lines[-1].startswith("exec ")


def test_a_path_an_sbatch_line_cannot_carry_is_one_sentence(tmp_path):
    with pytest.raises(slurm.SlurmError, match="an #SBATCH line cannot carry"):
        slurm.script(1, tmp_path / "l", tmp_path / "my grades", slurm.Request(1, 1024, 5), 1)


@pytest.mark.slow
def test_emit_only_writes_list_and_script_and_submits_nothing(handins, tmp_path):
    grades = tmp_path / "grades"
    done = subprocess.run([sys.executable, "-m", "instructor.grade.slurm", str(handins), "--out", str(grades),
                           "--emit-only", "--max-running", "3"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PATH="/nonexistent"))
    assert done.returncode == 0, done.stderr
    listed = (grades / "slurm" / "handins.txt").read_text().splitlines()
    assert listed == [str(p) for p in sorted(handins.glob("*.handin.zip"))]
    text = (grades / "slurm" / "grade.sbatch").read_text()
    assert f"#SBATCH --array=0-{CLASS - 1}%3" in text
    assert sorted(p.name for p in grades.iterdir()) == ["slurm"]


@pytest.mark.slow
def test_missing_sbatch_is_one_sentence(handins, tmp_path):
    done = subprocess.run([sys.executable, "-m", "instructor.grade.slurm", str(handins), "--out",
                           str(tmp_path / "g")], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PATH="/nonexistent"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "grade-slurm: sbatch is not on PATH: install Slurm's client commands (Debian: slurm-client) or write the "
        "script with --emit-only and submit it from the cluster's login node."]
    assert not (tmp_path / "g").exists()


@pytest.mark.slow
def test_merge_only_writes_the_gradebook_of_the_results_there(tmp_path):
    grades = tmp_path / "grades"
    command = [sys.executable, "-m", "instructor.grade.slurm", "--out", str(grades), "--merge-only"]
    empty = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert empty.returncode == 1
    assert empty.stderr.strip().splitlines() == [
        f"grade-slurm: {grades / 'results'} holds no results to merge: wait until the array has ended (squeue --me), "
        f"or check the tasks' logs in {grades / 'slurm' / 'logs'}."]
    one._write(grades / "results" / "ann.json", {"student": "ann", "sha256": "a" * 64, "grader": grader_version(),
                                                  "refused": "a test refusal", "exercises": one._refused("x"),
                                                  "missing": [], "written": [], "tampering": []})
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    row, = _rows(grades / "grades.csv")
    assert row["student"] == "ann" and row["status"] == "refused: a test refusal"


def test_no_handins_is_one_sentence(tmp_path):
    with pytest.raises(slurm.SlurmError, match=r"holds no \*\.handin\.zip hand-ins: collect them there first"):
        slurm.todo(tmp_path, tmp_path / "grades")


def test_a_task_without_a_result_becomes_its_students_zero_row(tmp_path):
    """What happens after Slurm ends a task (time limit, memory): the row a local grader failure gets."""
    grades = tmp_path / "grades"
    items = [Item(name, tmp_path / f"{name}.handin.zip", sha) for name, sha in (("ann", "a" * 64), ("bob", "b" * 64))]
    one._write(grades / "results" / "ann.json", {"student": "ann", "sha256": "a" * 64, "grader": grader_version(),
                                                  "refused": None, "exercises": {}, "missing": [], "written": [],
                                                  "tampering": []})
    before = slurm.signatures(items, grades)           # ann's old result is not a task's result
    assert slurm.record_failures(items, grades, "7", {}, before).keys() == {"ann", "bob"}
    one._write(grades / "results" / "ann.json", {"student": "ann", "sha256": "a" * 64, "grader": "another version",
                                                  "refused": None, "exercises": {}, "missing": [], "written": [],
                                                  "tampering": []})
    log = grades / "slurm" / "logs" / "7_1.out"
    log.parent.mkdir(parents=True)
    log.write_text("starting\nslurmstepd: error: *** JOB 8 ON localhost CANCELLED DUE TO TIME LIMIT ***\n")
    failed = slurm.record_failures(items, grades, "7", {0: "COMPLETED, exit 0:0", 1: "TIMEOUT, exit 0:15"}, before)
    assert list(failed) == ["bob"]
    assert "TIMEOUT, exit 0:15" in failed["bob"] and "CANCELLED DUE TO TIME LIMIT" in failed["bob"]
    merge(grades)
    bob = next(r for r in _rows(grades / "grades.csv") if r["student"] == "bob")
    assert bob["total [80]"] == "0"
    assert bob["status"].startswith("refused: its Slurm array task ended without a result (TIMEOUT")


@pytest.mark.slow
def test_refused_job_quotes_the_cluster(cluster, handins, tmp_path):
    with pytest.raises(slurm.SlurmError) as refused:
        slurm.run(handins, tmp_path / "g", options=("--partition=no_such_partition",))
    message = str(refused.value)
    assert message.startswith("the Slurm cluster refused to queue ")
    assert "invalid partition" in message.lower()
    assert "\n" not in message


def _cancel_first_running_task(stop: threading.Event) -> None:
    while not stop.is_set():
        running = subprocess.run(["squeue", "-h", "-r", "--me", "-n", "grade-class", "-t", "RUNNING", "-o", "%i"],
                                 capture_output=True, text=True).stdout.split()
        if running:
            subprocess.run(["scancel", running[0]], check=True)
            return
        time.sleep(0.2)


@pytest.mark.slow
def test_a_task_slurm_ends_is_a_zero_row_naming_its_state_and_log(cluster, handins, tmp_path):
    """A task cancelled while grading (as a time limit, a memory kill or a node failure would end it)."""
    grades = tmp_path / "g"
    stop = threading.Event()
    canceller = threading.Thread(target=_cancel_first_running_task, args=(stop,))
    canceller.start()
    try:
        outcome = slurm.run(handins, grades, only="student00", poll=0.5)
    finally:
        stop.set()
        canceller.join()
    assert list(outcome.failed) == ["student00"]
    why = outcome.failed["student00"]
    assert why.startswith("its Slurm array task ended without a result (CANCELLED")
    assert f"{grades.resolve()}/slurm/logs/{outcome.job}_0.out: " in why and "CANCELLED AT" in why
    row, = _rows(grades / "grades.csv")
    assert row["status"] == f"refused: {why}" and row["total [80]"] == "0"


@pytest.mark.slow
def test_array_gradebook_equals_the_local_one(cluster, handins, tmp_path):
    local = tmp_path / "local"
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "instructor", "grade", str(handins), "--out", str(local),
                           "--jobs", "2"], capture_output=True, text=True, cwd=ROOT)
    local_seconds = time.monotonic() - start
    assert done.returncode == 0, done.stderr[-2000:]
    array = tmp_path / "array"
    outcome = slurm.run(handins, array, max_running=2, poll=1.0)
    graded = {run: sum(json.loads(p.read_text())["seconds"] for p in (run / "results").glob("*.json"))
              for run in (local, array)}
    print(f"\nclass of {CLASS}: local --jobs 2 {local_seconds:.1f} s ({graded[local]:.1f} s in grade_one), "
          f"Slurm array {outcome.seconds:.1f} s ({graded[array]:.1f} s in grade_one; job {outcome.job})")
    assert outcome.failed == {}
    assert len(list((array / "results").glob("*.json"))) == CLASS
    assert (array / "grades.csv").read_bytes() == (local / "grades.csv").read_bytes()
    assert (array / "index.html").read_bytes() == (local / "index.html").read_bytes()
    rows = _rows(array / "grades.csv")
    total = next(column for column in rows[0] if column.startswith("total ["))
    most = int(total[len("total ["):-1])
    for row, (name, keep) in zip(rows, _students().items()):
        points = int(row[total])
        assert row["student"] == name and row["status"] == "graded"
        if not keep:                                # reference-filled: full marks
            assert points == most, (name, points)
        elif len(keep) == len(KEYS):                # blank: zero
            assert points == 0, (name, points)
        else:                                       # half-done: partial
            assert 0 < points < most, (name, points)
