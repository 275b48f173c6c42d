"""Grade one hand-in: ``python -m instructor grade-one ARCHIVE --out GRADES/ [--base BASE]``.

Writes GRADES/results/<name>.json (plain JSON: the student's name, the archive's SHA-256, the grader version,
per exercise its points, maximum, pass, one feedback sentence and every visible and hidden verdict, the written
answers "to grade", the missing deliverables, the tampering notes, the seconds and where they went) and the
student's report folder GRADES/reports/<name>/ from the notebooks' stored outputs. A refused archive (traversal,
a link, a zip bomb, a wrong manifest...) is a result too: zero points and the refusal's sentence. The hand-in is
unpacked into GRADES/.scratch/<name>.<random>/, which is removed afterwards. Without bubblewrap nothing runs:
the command says so in one sentence.
"""
import argparse
import json
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from helpers.exercises import EXERCISES
from helpers.foundation.atomic import WriteError, write_atomic
from helpers.handin.archive import HandInError
from instructor.grade import ROOT, grader_version, intake, uids
from instructor.grade.sandbox import DEFAULT_CAPS, Caps, SandboxMissing, unavailable


def _refused(sentence: str) -> dict:
    """Every exercise at zero of its usual maximum, with the refusal as feedback."""
    from instructor.grade import hidden, scoring
    return {e.key: {"title": e.title, "points": 0, "max": scoring.VISIBLE + scoring.HIDDEN * len(hidden.CASES[e.key]),
                    "passed": False, "feedback": f"the hand-in was refused: {sentence}", "visible": None, "hidden": []}
            for e in EXERCISES}


def _write(path: Path, data: dict) -> None:
    with write_atomic(path) as handle:
        json.dump(data, handle, indent=1, sort_keys=True, ensure_ascii=False)
        handle.write("\n")


def grade_one(archive: Path, out: Path, base: Path | None = None, caps: Caps = DEFAULT_CAPS, uid: int | None = None,
              sha: str | None = None, hide: tuple[Path, ...] = ()) -> dict:
    """Grade `archive` into `out` (results/<name>.json, reports/<name>/); return the result written.

    `sha` stands for the archive's hash when it was packed from a folder (whose zip bytes change each packing)."""
    reason = unavailable()
    if reason:
        raise SandboxMissing(reason)
    import torch
    torch.set_num_threads(1)
    from instructor.grade import autograde, student_report
    from instructor.grade import base as base_module
    from instructor.grade.autograde import verdicts
    start, cpu = time.perf_counter(), time.process_time()
    archive, out = Path(archive), Path(out)
    name = intake.name_of(archive)
    result = {"student": name, "archive": archive.name, "sha256": sha or intake.sha256_file(archive),
              "grader": grader_version(), "graded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "caps": caps.describe(), "refused": None, "missing": [], "written": [], "tampering": [],
              "manifest": None, "timing": {}}
    timing = result["timing"]
    scratch = None
    try:
        try:
            scratch, manifest = intake.unpack(archive, out / ".scratch")
        except HandInError as refused:
            result.update(refused=str(refused), exercises=_refused(str(refused)))
        else:
            result["manifest"] = {"release": manifest.release, "profile": manifest.profile, "device": manifest.device,
                                  "unexecuted": manifest.unexecuted, "stubs": manifest.stubs}
            timing["unpack_s"] = round(time.perf_counter() - start, 3)
            if base is None or not (Path(base) / "helpers").is_dir():   # a base given ready is used as it is
                base = base_module.ensure(Path(base) if base is not None else out / ".base")
            hidden_paths = [ROOT, out.resolve(), archive.resolve().parent, base.resolve(), *hide]
            run = autograde.run_tasks(scratch / "handin", base, scratch, caps,
                                      uid if uid is not None else uids.claim(), hidden_paths)
            timing.update(sandbox_s=round(run.sandbox_s, 3), sandbox_start_s=round(run.startup_s, 3),
                          sandboxes=run.sandboxes, sandbox_cpu_s=round(run.sandbox_cpu_s, 3),
                          sandbox_start_cpu_s=round(run.startup_cpu_s, 3))
            began, began_cpu = time.perf_counter(), time.process_time()
            result["exercises"] = verdicts(run)
            timing["verdicts_s"] = round(time.perf_counter() - began, 3)
            timing["verdicts_cpu_s"] = round(time.process_time() - began_cpu, 3)
            result["tampering"] = run.notes
            began, began_cpu = time.perf_counter(), time.process_time()
            missing, result["written"] = student_report.build(scratch / "handin", out / "reports" / name, name)
            result["missing"] = [f"{f} is missing from the hand-in" for f in _missing_files(scratch / "handin")] + missing
            timing["report_s"] = round(time.perf_counter() - began, 3)
            timing["report_cpu_s"] = round(time.process_time() - began_cpu, 3)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
            try:
                (out / ".scratch").rmdir()      # when no other worker is using it
            except OSError:
                pass
    result["points"] = sum(e["points"] for e in result["exercises"].values())
    result["max"] = sum(e["max"] for e in result["exercises"].values())
    result["seconds"] = round(time.perf_counter() - start, 3)
    timing["grader_cpu_s"] = round(time.process_time() - cpu, 3)
    _write(out / "results" / f"{name}.json", result)
    return result


def _missing_files(handin: Path) -> list[str]:
    from helpers.handin.archive import EXERCISE_FILES
    return [name for name in EXERCISE_FILES if not (handin / name).is_file()]


def caps_arguments(parser: argparse.ArgumentParser) -> None:
    """The sandbox caps as options (shared with `grade`)."""
    default = DEFAULT_CAPS
    group = parser.add_argument_group("sandbox caps")
    group.add_argument("--exercise-seconds", type=float, default=default.exercise_s, help="wall time per exercise")
    group.add_argument("--handin-seconds", type=float, default=default.handin_s, help="wall time per hand-in")
    group.add_argument("--startup-seconds", type=float, default=default.startup_s,
                       help="wall time for the sandbox's Python to start")
    group.add_argument("--memory-mib", type=int, default=default.memory_mib, help="memory per process")
    group.add_argument("--processes", type=int, default=default.processes, help="processes per sandbox")
    group.add_argument("--open-files", type=int, default=default.open_files, help="open files per process")
    group.add_argument("--output-mib", type=float, default=default.output_mib, help="printed output per hand-in")
    group.add_argument("--scratch-mib", type=int, default=default.scratch_mib, help="writable scratch per sandbox")


def caps_from(args) -> Caps:
    return Caps(exercise_s=args.exercise_seconds, handin_s=args.handin_seconds, startup_s=args.startup_seconds,
                memory_mib=args.memory_mib, processes=args.processes, open_files=args.open_files,
                output_mib=args.output_mib, scratch_mib=args.scratch_mib)


def summary(result: dict) -> str:
    if result.get("refused"):
        return f"{result['student']}: refused: {result['refused']}"
    return (f"{result['student']}: {result['points']} / {result['max']} points, {len(result['missing'])} missing "
            f"deliverables, {len(result['tampering'])} tampering notes, {result['seconds']:.1f} s")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m instructor grade-one", description=__doc__.split("\n")[0])
    parser.add_argument("archive", type=Path, help="the student's <name>.handin.zip")
    parser.add_argument("--out", type=Path, required=True, help="the gradebook folder (GRADES/)")
    parser.add_argument("--base", type=Path, help="a student edition to grade on (instructor.edition.build); used as "
                                                  "it is when it holds helpers/, else built there (default: "
                                                  "GRADES/.base, built once)")
    parser.add_argument("--uid", type=int,
                        help="the unprivileged uid the sandbox runs as, as root (default: one no other "
                             "running grader of this machine holds, instructor/grade/uids.py; a uid given here is "
                             "not checked against theirs)")
    caps_arguments(parser)
    args = parser.parse_args(argv)
    if not args.archive.exists():
        sys.exit(f"grade-one: {args.archive} does not exist: give the path of a student's .handin.zip.")
    try:
        result = grade_one(args.archive, args.out, args.base, caps_from(args), args.uid)
    except (SandboxMissing, HandInError, WriteError) as error:
        sys.exit(f"grade-one: {error}")
    print(summary(result))
