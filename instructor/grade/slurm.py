"""Grade a class as a Slurm job array: one array task per hand-in, the same gradebook as a local run.

    python -m instructor grade-slurm HANDINS/ --out GRADES/ [--max-running K] [--only NAME] [caps as for grade]
    python -m instructor grade-slurm HANDINS/ --out GRADES/ --emit-only      # write the script, submit nothing
    python -m instructor grade-slurm --out GRADES/ --merge-only             # the gradebook, after the array

Which hand-ins: every ``*.handin.zip`` in HANDINS/ whose GRADES/results/<name>.json is missing or from another
archive or grader version (``--only NAME``: that one, always), found and compared exactly as ``grade`` does
(`instructor.grade.cli.discover`, `unchanged`). Folder hand-ins are left out with one line each: the array
grades archives, so that grade-one hides the whole HANDINS/ folder from every sandbox; pack them with
``python -m helpers.handin`` or grade the class locally.

What it writes, under GRADES/slurm/:

- ``handins.txt``: the absolute path of each archive to grade, one a line, sorted by name;
- ``grade.sbatch``: an array script, ``#SBATCH --array=0-(N-1)%K``. Task i reads line i + 1 of the list and
  runs ``python -m instructor grade-one ARCHIVE --out GRADES <caps>`` with this interpreter in this
  checkout, so each hand-in is unpacked, sandboxed and capped exactly as in a local run: grade-one does the
  sandboxing, and the caps (``--handin-seconds``, ``--memory-mib``, ... as given here, the defaults otherwise)
  are written out on its command line. grade-one claims a sandbox uid no other grader on its node holds
  (`instructor.grade.uids`: the process cap counts per uid), whichever tasks and jobs share the node. Each task
  asks Slurm for what that sandbox may use (`request`): ``--cpus-per-task`` (1: the sandbox runs one thread),
  ``--mem`` (the per-process memory cap plus 1 GiB for grade-one itself, which holds torch, about 1 GiB
  resident) and ``--time`` (the hand-in's wall cap plus 5 minutes for unpacking, the hidden checks and the
  report), so Slurm never ends a task the sandbox would have let finish. Output: GRADES/slurm/logs/<job>_<i>.out.

With ``--emit-only`` nothing more: on a cluster that shares this file system (same paths), run
``sbatch GRADES/slurm/grade.sbatch`` from a login node; when the array has ended,
``python -m instructor grade-slurm --out GRADES/ --merge-only`` writes the gradebook.

Otherwise it builds the sandboxes' base (GRADES/.base, the released helpers) once, submits the script
(``sbatch --parsable``; ``--sbatch-option`` adds an option such as ``--partition=short``), follows the array
with ``squeue`` (a line each time the count of finished tasks changes) and reads each task's final state with
``scontrol`` as it ends. A hand-in whose task wrote no new result for its archive (Slurm ended it for time,
memory or a node failure, or grade-one itself failed) gets the row a local run gives a grader failure: zero
points, and as its reason the task's state and the last line of its log. Then the grader's own `merge` writes
GRADES/grades.csv and GRADES/index.html, the function the local ``grade`` ends with, so both runs give the same
bytes. Ctrl-C cancels the array (``scancel``). ``sbatch`` missing, a cluster that refuses the job (its message
quoted) and a folder with nothing to grade are each one sentence, exit status 1; so is a run in which no task
left a result.

Kubernetes equivalent, an Indexed Job. The same list and the same command fit a ``batch/v1`` Job with
``completionMode: Indexed``, ``completions: N`` and ``parallelism: K`` (the ``%K`` above). Kubernetes gives each
pod its index in the environment variable ``JOB_COMPLETION_INDEX`` (0 to N - 1), the counterpart of
``SLURM_ARRAY_TASK_ID``, so the container runs the script's three last lines with that variable in its place:
``archive="$(sed -n "$((JOB_COMPLETION_INDEX + 1))p" /grades/slurm/handins.txt)"``, then ``python -m instructor
grade-one "$archive" --out /grades`` with the same caps options. The image holds this checkout, its Python
environment and bubblewrap; one ReadWriteMany volume, mounted at /grades in every pod, holds the list, the
archives it names (write the list where the volume has the same path, or with the pods' paths) and the results.
The pod template's ``resources.requests`` and ``resources.limits`` take ``cpu: 1`` and the ``--mem`` figure, its
``activeDeadlineSeconds`` the ``--time`` figure, ``restartPolicy: Never`` with ``backoffLimitPerIndex: 0`` (or a
small ``backoffLimit``) keeps a hostile hand-in from being retried, and bubblewrap needs unprivileged user
namespaces allowed in the pod (grade-one, run as a non-root user, uses them in place of a sandbox uid). When the Job
has completed, merge on any machine that mounts the volume: ``python -m instructor grade-slurm --out /grades
--merge-only``.
"""
import argparse
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers.foundation.atomic import WriteError, write_atomic
from helpers.handin.archive import SUFFIX, HandInError
from instructor.grade import ROOT, grader_version, merge
from instructor.grade.sandbox import DEFAULT_CAPS, Caps

GRADER_MIB = 1024          # grade-one's own process: torch and the hidden checks, about 1 GiB resident
MARGIN_S = 300             # unpacking, the base, the hidden checks and the report, outside the hand-in's wall cap
CAP_OPTIONS = {            # Caps field -> grade-one's option (instructor.grade.one.caps_arguments)
    "exercise_s": "--exercise-seconds", "handin_s": "--handin-seconds", "startup_s": "--startup-seconds",
    "memory_mib": "--memory-mib", "processes": "--processes", "open_files": "--open-files",
    "output_mib": "--output-mib", "scratch_mib": "--scratch-mib"}
LIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}
UNSAFE_IN_DIRECTIVE = re.compile(r"[\s%\"'\\]")   # an #SBATCH line is not shell: no quoting, and % is a pattern


class SlurmError(ValueError):
    """The class could not be graded on Slurm: one sentence saying what is wrong and how to fix it."""


@dataclass(frozen=True)
class Request:
    """What one array task asks Slurm for."""
    cpus: int
    mem_mib: int
    minutes: int


@dataclass
class Outcome:
    job: str | None                # the array's job id (None when nothing needed grading)
    seconds: float                 # submission to the last task's end, as followed here
    graded: int
    skipped: int
    failed: dict = field(default_factory=dict)   # hand-in name -> why its task left no result
    lines: list = field(default_factory=list)    # one line per hand-in, as `grade` prints


def request(caps: Caps, cpus: int = 1) -> Request:
    """Slurm resources for one task whose sandbox has `caps` (see the module docstring)."""
    return Request(cpus=cpus, mem_mib=caps.memory_mib + GRADER_MIB,
                   minutes=math.ceil((caps.handin_s + MARGIN_S) / 60))


def caps_argv(caps: Caps) -> list[str]:
    """grade-one's options that set exactly `caps`."""
    argv = []
    for name, option in CAP_OPTIONS.items():
        value = getattr(caps, name)
        argv += [option, f"{value:g}" if isinstance(value, float) else str(value)]
    return argv


def todo(handins: Path, grades: Path, only: str | None = None) -> tuple[list, int, list[str]]:
    """The archives to grade (cli.Item, by name), how many are current and skipped, and one line per hand-in
    left out (unreadable names, links, folder hand-ins)."""
    from instructor.grade.cli import discover, unchanged
    handins = Path(handins)
    if not handins.is_dir():
        raise SlurmError(f"{handins} is not a folder: give the folder that holds the *{SUFFIX} hand-ins.")
    items, problems = discover(handins)
    for item in [i for i in items if i.folder]:
        problems.append(f"{item.name}: a folder hand-in, left out: the array grades archives; pack it with "
                        "`python -m helpers.handin` or grade the class with `python -m instructor grade`.")
    items = [i for i in items if not i.folder]
    if only is not None:
        items = [i for i in items if i.name == only]
        if not items:
            raise SlurmError(f"no hand-in archive named {only!r} in {handins} (its file is {only}{SUFFIX}).")
        return items, 0, problems
    if not items and not problems:
        raise SlurmError(f"{handins} holds no *{SUFFIX} hand-ins: collect them there first.")
    changed = [i for i in items if not unchanged(i, grades)]
    return changed, len(items) - len(changed), problems


def _directive_path(path: Path, what: str) -> str:
    text = str(path)
    if UNSAFE_IN_DIRECTIVE.search(text):
        raise SlurmError(f"the {what} {text!r} has a space, quote, backslash or % that an #SBATCH line cannot "
                         "carry: use a path without them.")
    return text


def script(count: int, listing: Path, grades: Path, need: Request, max_running: int, caps: Caps = DEFAULT_CAPS,
           python: str = sys.executable, workdir: Path = ROOT) -> str:
    """The array script's text: task i grades line i + 1 of `listing` into `grades`."""
    logs = grades / "slurm" / "logs"
    throttle = f"%{max_running}" if max_running < count else ""
    grade_one = " ".join([shlex.quote(python), "-m", "instructor", "grade-one", '"$archive"', "--out",
                          shlex.quote(str(grades)), *map(shlex.quote, caps_argv(caps))])
    return "\n".join([
        "#!/bin/bash",
        "# One hand-in per array task, graded in its own sandbox by `python -m instructor grade-one`.",
        "# Written by `python -m instructor grade-slurm` (instructor/grade/slurm.py), which merges the results;",
        "# after a submission by hand: python -m instructor grade-slurm --out GRADES --merge-only",
        "#SBATCH --job-name=grade-class",
        f"#SBATCH --array=0-{count - 1}{throttle}",
        "#SBATCH --ntasks=1",
        f"#SBATCH --cpus-per-task={need.cpus}",
        f"#SBATCH --mem={need.mem_mib}M",
        f"#SBATCH --time={need.minutes}",
        f"#SBATCH --chdir={_directive_path(workdir, 'checkout')}",
        f"#SBATCH --output={_directive_path(logs, 'log folder')}/%A_%a.out",
        "set -euo pipefail",
        f"archive=\"$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {shlex.quote(str(listing))})\"",
        f"exec {grade_one}",
        "",
    ])


def emit(items: list, grades: Path, max_running: int, caps: Caps = DEFAULT_CAPS, cpus: int = 1) -> Path:
    """Write GRADES/slurm/handins.txt (the items' archives) and grade.sbatch; return the script's path."""
    grades = Path(grades).resolve()
    here = grades / "slurm"
    try:
        (here / "logs").mkdir(parents=True, exist_ok=True)
        listing = here / "handins.txt"
        with write_atomic(listing) as handle:
            handle.write("".join(f"{Path(item.path).resolve()}\n" for item in items))
        path = here / "grade.sbatch"
        with write_atomic(path) as handle:
            handle.write(script(len(items), listing, grades, request(caps, cpus), max_running, caps))
    except (WriteError, OSError) as error:
        raise SlurmError(f"could not write the array script under {here}: {error}") from None
    return path


def _need(program: str) -> None:
    if shutil.which(program) is None:
        raise SlurmError(f"{program} is not on PATH: install Slurm's client commands (Debian: slurm-client) "
                         "or write the script with --emit-only and submit it from the cluster's login node.")


def _slurm(command: list[str], what: str) -> subprocess.CompletedProcess:
    _need(command[0])
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"the Slurm cluster did not answer {command[0]} within 120 s: check that slurmctld "
                         "runs (scontrol ping).") from None
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split()) or f"exit status {done.returncode}"
        raise SlurmError(f"the Slurm cluster refused to {what} ({said}): check that slurmctld runs and that "
                         "sinfo lists a partition this job fits.")
    return done


def submit(path: Path, options: list[str]) -> str:
    done = _slurm(["sbatch", "--parsable", *options, str(path)], f"queue {path}")
    return done.stdout.strip().split(";")[0]


def pending(job: str) -> dict[str, int]:
    """Count of the array's tasks that squeue still lists, by state (empty once every task has ended)."""
    done = _slurm(["squeue", "-h", "-r", "-j", job, "-o", "%T"], f"list array job {job}")
    counts: dict[str, int] = {}
    for state in done.stdout.split():
        counts[state] = counts.get(state, 0) + 1
    return counts


def task_states(job: str, final_only: bool = False) -> dict[int, str]:
    """Each array task's state and exit code, e.g. "TIMEOUT, exit 0:15"; `final_only`: only tasks that ended."""
    done = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, timeout=120)
    states = {}
    for line in done.stdout.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        state = fields.get("JobState", "?")
        if fields.get("ArrayTaskId", "").isdigit() and not (final_only and state in LIVE_STATES):
            states[int(fields["ArrayTaskId"])] = f"{state}, exit {fields.get('ExitCode', '?')}"
    return states


def follow(job: str, total: int, poll: float, out=sys.stderr) -> dict[int, str]:
    """Wait until no task of `job` is queued or running, printing a line when the finished count changes; return
    each task's final state, read with scontrol as tasks end (it forgets them MinJobAge after, 300 s by default)."""
    last, states = None, {}
    while True:
        left = pending(job)
        finished = total - sum(left.values())
        if finished != last:
            print(f"array job {job}: {finished} of {total} hand-ins done, {left.get('RUNNING', 0)} running",
                  file=out, flush=True)
            states.update(task_states(job, final_only=True))
            last = finished
        if not left:
            return states
        time.sleep(poll)


def _last_line(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "an empty log"


def _signature(path: Path) -> tuple[int, int] | None:
    """Which file is at `path` now (a result is written by a rename, so a new one has a new inode)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def signatures(items: list, grades: Path) -> dict[str, tuple[int, int] | None]:
    return {item.name: _signature(grades / "results" / f"{item.name}.json") for item in items}


def _fresh(item, grades: Path, before) -> bool:
    """Whether the task wrote `item`'s result: a new file since `before`, for this archive's bytes. The grader
    version is not compared: the task's is what its checkout said when it ran."""
    path = grades / "results" / f"{item.name}.json"
    if _signature(path) in (None, before):
        return False
    try:
        return json.loads(path.read_text()).get("sha256") == item.sha
    except (OSError, ValueError, AttributeError):
        return False


def record_failures(items: list, grades: Path, job: str, states: dict[int, str], before: dict) -> dict[str, str]:
    """Write the failure row of every item whose task left no new result (`before`: `signatures` taken before
    submitting); return name -> why."""
    from instructor.grade.one import _refused, _write
    failed = {}
    for task, item in enumerate(items):
        if _fresh(item, grades, before.get(item.name)):
            continue
        log = grades.resolve() / "slurm" / "logs" / f"{job}_{task}.out"
        why = (f"its Slurm array task ended without a result ({states.get(task, 'state unknown')}; "
               f"{log}: {_last_line(log)})")
        _write(grades / "results" / f"{item.name}.json",
               {"student": item.name, "sha256": None, "grader": grader_version(), "refused": why,
                "exercises": _refused(why), "missing": [], "written": [], "tampering": []})
        failed[item.name] = why
    return failed


def summaries(items: list, grades: Path) -> list[str]:
    from instructor.grade.one import summary
    lines = []
    for item in items:
        try:
            lines.append(summary(json.loads((grades / "results" / f"{item.name}.json").read_text())))
        except (OSError, ValueError, KeyError) as error:
            lines.append(f"{item.name}: its result cannot be read ({error})")
    return lines


def run(handins: Path, grades: Path, max_running: int = 32, only: str | None = None, caps: Caps = DEFAULT_CAPS,
        options: tuple[str, ...] = (), cpus: int = 1, poll: float = 2.0, out=sys.stderr) -> Outcome:
    """Grade the changed hand-ins of `handins` as one array job into `grades`, then merge (module docstring)."""
    from instructor.grade import base as base_module
    grades = Path(grades)
    items, skipped, problems = todo(handins, grades, only)
    if not items:
        merge(grades)
        return Outcome(job=None, seconds=0.0, graded=0, skipped=skipped, lines=problems)
    for program in ("sbatch", "squeue", "scontrol"):
        _need(program)
    path = emit(items, grades, max_running, caps, cpus)
    base_module.ensure(grades / ".base")          # built once here, not raced for by the first tasks
    before = signatures(items, grades)
    start = time.monotonic()
    job = submit(path, list(options))
    try:
        states = follow(job, len(items), poll, out)
    except KeyboardInterrupt:
        subprocess.run(["scancel", job], capture_output=True, timeout=60)
        raise SlurmError(f"interrupted: array job {job} cancelled; the results so far are in {grades / 'results'}, "
                         "and running grade-slurm again grades the rest.") from None
    seconds = time.monotonic() - start
    states.update(task_states(job))
    failed = record_failures(items, grades, job, states, before)
    merge(grades)
    return Outcome(job=job, seconds=seconds, graded=len(items), skipped=skipped, failed=failed,
                   lines=problems + summaries(items, grades))


def main(argv=None) -> None:
    from instructor.grade.one import caps_arguments, caps_from
    parser = argparse.ArgumentParser(prog="python -m instructor grade-slurm", description=__doc__.split("\n")[0])
    parser.add_argument("handins", type=Path, nargs="?", help=f"the folder of *{SUFFIX} hand-ins")
    parser.add_argument("--out", type=Path, required=True, help="the gradebook folder (GRADES/)")
    parser.add_argument("--only", metavar="NAME", help="re-grade this student only")
    parser.add_argument("--max-running", type=int, default=32, metavar="K",
                        help="at most K hand-ins graded at once (the array's %%K; default 32)")
    parser.add_argument("--cpus-per-task", type=int, default=1, help="CPUs per array task (default 1)")
    parser.add_argument("--sbatch-option", action="append", default=[], metavar="OPTION",
                        help="passed to sbatch as it is, e.g. --sbatch-option=--partition=short (repeatable)")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between squeue checks (default 2)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--emit-only", action="store_true",
                      help="write GRADES/slurm/grade.sbatch and handins.txt, submit nothing")
    mode.add_argument("--merge-only", action="store_true",
                      help="merge GRADES/results/*.json into the gradebook (after submitting the script by hand)")
    caps_arguments(parser)
    args = parser.parse_args(argv)
    if args.max_running < 1 or args.cpus_per_task < 1:
        parser.error("--max-running and --cpus-per-task must be at least 1")
    if args.handins is None and not args.merge_only:
        parser.error("give the folder of hand-ins (HANDINS), or --merge-only to merge the results already there")
    caps = caps_from(args)
    try:
        if args.merge_only:
            if not any((args.out / "results").glob("*.json")):
                raise SlurmError(f"{args.out / 'results'} holds no results to merge: wait until the array has "
                                 "ended (squeue --me), or check the tasks' logs in "
                                 f"{args.out / 'slurm' / 'logs'}.")
            print(f"gradebook: {merge(args.out)} and {args.out / 'index.html'}")
            return
        if args.emit_only:
            items, skipped, problems = todo(args.handins, args.out, args.only)
            for line in problems:
                print(line)
            if not items:
                print(f"nothing to grade: {skipped} hand-ins unchanged since their results.")
                return
            path = emit(items, args.out, args.max_running, caps, args.cpus_per_task)
            print(f"{path}: {len(items)} hand-ins ({skipped} unchanged left out); submit it with `sbatch {path}`, "
                  f"then merge with `python -m instructor grade-slurm --out {args.out} --merge-only`.")
            return
        outcome = run(args.handins, args.out, args.max_running, args.only, caps, tuple(args.sbatch_option),
                      args.cpus_per_task, args.poll)
    except (SlurmError, HandInError, WriteError) as error:
        sys.exit(f"grade-slurm: {error}")
    for line in outcome.lines:
        print(line)
    print(f"graded {outcome.graded} as array job {outcome.job} in {outcome.seconds:.1f} s, skipped {outcome.skipped} "
          f"unchanged, {len(outcome.failed)} left no result; gradebook: {args.out / 'grades.csv'} and "
          f"{args.out / 'index.html'}")
    if outcome.graded and len(outcome.failed) == outcome.graded:
        first = next(iter(outcome.failed.values()))
        sys.exit(f"grade-slurm: no array task left a result, for example: {first}")


if __name__ == "__main__":
    main()
