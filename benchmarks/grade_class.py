"""Benchmark of the class grader: N synthetic hand-ins graded with ``--jobs 2``; rate, time per hand-in, verdicts.

    python benchmarks/grade_class.py --n 24            # a quarter each: reference, half-done, blank, hostile

The hand-ins come from one student edition (instructor/grade/synthetic.py): reference-filled (with the
repository's executed notebooks, so their report is complete), half-done (the exercises of synthetic.HALF_DONE
left as stubs), blank, and hostile (each one behaviour of synthetic.HOSTILE, or the import-time patching of the
checks, in one exercise of an otherwise reference-filled hand-in, cycling through them). They are graded by
`instructor.grade.cli.grade_class` as `python -m instructor grade` does, with an exercise cap of
--exercise-seconds (an endless loop costs exactly that).

Printed: hand-ins per minute and the wall time per hand-in, the CPU seconds per hand-in (the grader, its workers and
every sandbox, from getrusage) and where a hand-in's time goes (unpack, sandbox start, tasks in the sandbox, the
verdicts outside, the report), the extrapolation to 300 hand-ins (from the wall rate, and from the CPU time on
two free cores), the load average (the machine may be shared), and the verdicts: full marks for every reference,
zero for every blank, points exactly where the half-done hand-ins are finished, and every hostile behaviour
contained (its exercise alone short of full marks, every other one full, no process left, nothing written outside
the scratch).
"""
import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.exercises import EXERCISES
from instructor.grade import cli, synthetic
from instructor.grade.sandbox import Caps

KEYS = [e.key for e in EXERCISES]
HOSTILE_KINDS = [*synthetic.HOSTILE, "1.1"]       # "1.1": the import-time patching of the checks (and a wrong answer)
STAGES = ("unpack_s", "sandbox_start_s", "sandbox_s", "verdicts_s", "report_s")
CPU_STAGES = ("sandbox_start_cpu_s", "sandbox_cpu_s", "verdicts_cpu_s", "report_cpu_s", "grader_cpu_s")


def build(n: int, folder: Path, marker: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Write n hand-ins to folder/handins; return name -> (kind, exercises expected at zero)."""
    blank = synthetic.student_edition(folder / "edition")
    handins = folder / "handins"
    grades = folder / "grades"
    replace, prepend = synthetic.hostile_code(repo=str(synthetic.ROOT), grades=str(grades), handins=str(handins),
                                              port=9, marker=marker)
    plan, repos = {}, {}
    for i in range(n):
        kind = ("reference", "half", "blank", "hostile")[i % 4]
        if kind == "hostile":
            key = HOSTILE_KINDS[(i // 4) % len(HOSTILE_KINDS)]
            options = {"replace": {key: replace[key]}} if key != "1.1" else \
                {"replace": {"1.1": replace["1.1"]}, "prepend": prepend}
            zero, label = (key,), f"hostile {key}"
        else:
            options = {"reference": {"executed": True}, "half": {"keep": synthetic.HALF_DONE},
                       "blank": {"keep": tuple(KEYS)}}[kind]
            zero = {"reference": (), "half": synthetic.HALF_DONE, "blank": tuple(KEYS)}[kind]
            label = kind
        if label not in repos:
            repos[label] = synthetic.repository(blank, folder / "repos" / label.replace(" ", "-"), **options)
        name = f"s{i:03d}-{label.replace(' ', '-').replace('.', '_')}"
        synthetic.hand_in(repos[label], handins / f"{name}.handin.zip")
        plan[name] = (label, zero)
    return plan


def leftovers(marker: str) -> int:
    count = 0
    for proc in Path("/proc").iterdir():
        try:
            count += marker.encode() in (proc / "cmdline").read_bytes()
        except OSError:
            pass
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=24, help="hand-ins in the class (default 24)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--exercise-seconds", type=float, default=10.0, help="the exercise cap (default 10 s)")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/grade-class-benchmark"))
    args = parser.parse_args()
    marker = f"bench-{os.getpid()}"
    shutil.rmtree(args.folder, ignore_errors=True)
    start = time.perf_counter()
    plan = build(args.n, args.folder, marker)
    print(f"built {args.n} hand-ins in {time.perf_counter() - start:.1f} s; load average {os.getloadavg()[0]:.1f}")
    grades = args.folder / "grades"
    caps = Caps(exercise_s=args.exercise_seconds)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    own_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    done = cli.grade_class(args.folder / "handins", grades, args.jobs, None, caps)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
           + own_after.ru_utime + own_after.ru_stime - own_before.ru_utime - own_before.ru_stime)
    results = {name: json.loads((grades / "results" / f"{name}.json").read_text()) for name in plan}
    n = len(results)
    print(f"\ngraded {n} hand-ins with --jobs {args.jobs} in {wall:.1f} s: {60 * n / wall:.1f} hand-ins per minute, "
          f"{wall / n:.2f} s of wall time per hand-in; load average now {os.getloadavg()[0]:.1f}")
    print(f"CPU reaped by the benchmark: {cpu:.1f} s ({cpu / n:.2f} s a hand-in; sandboxes killed at their end are "
          "not reaped into it, see below)")
    print("where a hand-in's time goes (mean wall seconds inside its worker):")
    for stage in STAGES:
        values = [r["timing"].get(stage, 0.0) for r in results.values() if r.get("timing")]
        print(f"  {stage:16s} {sum(values) / max(1, len(values)):6.2f}")
    print("and its CPU seconds (the sandbox's as its runner reports them, the start included; grader_cpu_s: the "
          "worker's whole share outside the sandbox):")
    for stage in CPU_STAGES:
        values = [r["timing"].get(stage, 0.0) for r in results.values() if r.get("timing")]
        print(f"  {stage:20s} {sum(values) / max(1, len(values)):6.2f}")
    per = sum(r["timing"].get("sandbox_cpu_s", 0.0) + r["timing"].get("grader_cpu_s", 0.0)
              for r in results.values() if r.get("timing")) / n
    sandboxes = [r["timing"].get("sandboxes", 0) for r in results.values() if r.get("timing")]
    print(f"  sandboxes per hand-in: {sum(sandboxes) / max(1, len(sandboxes)):.2f}")
    print(f"300 hand-ins: {300 * wall / n / 60:.1f} min at this run's rate; {300 * per / args.jobs / 60:.1f} min from "
          f"{per:.2f} CPU seconds a hand-in (sandbox + worker) on {args.jobs} free cores, plus the workers' start")
    wrong, contained, tried = [], 0, 0
    for name, (label, zero) in plan.items():
        exercises = results[name]["exercises"]
        for key in KEYS:
            expected = 0 if key in zero else exercises[key]["max"]
            hostile_fail = label.startswith("hostile") and key in zero
            if (exercises[key]["points"] >= exercises[key]["max"]) if hostile_fail else exercises[key]["points"] != expected:
                wrong.append(f"{name} {key}: {exercises[key]['points']} / {exercises[key]['max']}, expected {expected} "
                             f"({exercises[key]['feedback'][:100]})")
        if label.startswith("hostile"):
            tried += 1
            contained += all((exercises[k]["points"] < exercises[k]["max"]) if k in zero
                             else exercises[k]["points"] == exercises[k]["max"] for k in KEYS)
    left = leftovers(marker)
    repo_clean = "written by a submission" not in (synthetic.ROOT / "helpers" / "diffusion.py").read_text()
    outside = list(args.folder.rglob("evil*")) + list(Path("/tmp").glob(f"evil-{marker}*"))
    kinds = sorted({label for label, _ in plan.values()})
    print(f"verdicts: {n - len({w.split()[0] for w in wrong})} of {n} hand-ins exactly as expected "
          f"({', '.join(kinds)})")
    for line in wrong:
        print("  unexpected:", line)
    print(f"hostile: {contained} contained / {tried} tried; background processes left: {left}; repository "
          f"{'untouched' if repo_clean else 'WRITTEN TO'}; files written outside scratch: {len(outside)}")
    print(f"{done['graded']} graded, {len(done['problems'])} not gradable")


if __name__ == "__main__":
    main()
