"""Autograde one unpacked hand-in: run its exercise files in the sandbox, decide every score outside.

`autograde` writes the tasks (every exercise's visible check, then its hidden cases, `instructor.grade.hidden`)
into the hand-in's scratch folder as spec.json (plain data, arrays as .npy in JSON, a fresh nonce), starts the
sandbox (`instructor.grade.sandbox`) on the runner (`instructor.grade.inside.runner`) with the released helpers
(the base) and the student's exercise files over them, and follows the runner's frames:

- the startup (Python, torch, the released checks) has `startup_s`; each exercise (its file's import, then its
  tasks) has `exercise_s`; the hand-in has `handin_s` in all, restarts included;
- when a cap is passed, the output runs past its cap, the channel breaks, or the process ends without saying
  "end" (os._exit, a signal, a crash), the sandbox is killed; the task that was running fails with that reason
  (with the rest of its exercise, or the whole file when it happened while importing it), and a fresh sandbox
  goes on with the tasks left; so one exercise's endless loop or fork bomb costs that exercise only;
- frames without the nonce, results for a task that was not running, and the runner's report of patched checks,
  CheckFailed or sys.exit become tampering notes; a forged result gains nothing, since each verdict comes from
  replaying the grader's own check on the record (`instructor.grade.replay`) or from the hidden case's judge.
"""
import functools
import importlib
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from helpers.exercises import BY_KEY, EXERCISES
from helpers.foundation.atomic import write_atomic
from instructor.grade import hidden, replay, scoring
from instructor.grade.inside import wire
from instructor.grade.sandbox import GRADE_HOME, Caps, Layout, Sandbox

INSIDE = Path(__file__).resolve().parent / "inside"
CHECK = re.compile(r"checks\.(\w+)\((\w+)(?:\.(\w+))?\)")


def _check_target(key: str) -> tuple[str, str, str | None]:
    """(check name, helpers module, attribute or None) of an exercise's visible check."""
    match = CHECK.fullmatch(BY_KEY[key].check)
    return match[1], f"helpers.{match[2]}", match[3]


def files() -> list[tuple[str, str]]:
    """The exercise files in course order, with their module names."""
    seen = []
    for exercise in EXERCISES:
        if exercise.file not in [f for f, _ in seen]:
            seen.append((exercise.file, exercise.file.removesuffix(".py").replace("/", ".")))
    return seen


@functools.cache
def tasks() -> tuple[list[dict], dict]:
    """Every task of a hand-in (plain data for the runner) and, by task id, how it is judged outside."""
    found, judges = [], {}
    for exercise in EXERCISES:
        check, module, attr = _check_target(exercise.key)
        task_id = f"{exercise.key}/visible"
        found.append({"id": task_id, "exercise": exercise.key, "file": exercise.file, "kind": "visible",
                      "check": check, "module": module, "attr": attr})
        judges[task_id] = ("visible", check, module, attr)
        for case in hidden.CASES.get(exercise.key, ()):
            plan, judge = case()
            task_id = f"{exercise.key}/{case.__name__}"
            found.append({"id": task_id, "exercise": exercise.key, "file": exercise.file, **plan})
            judges[task_id] = ("hidden", judge)
    return found, judges


@dataclass
class Run:
    """What happened to one hand-in's tasks: results by task id, failures (task id -> sentence), notes."""
    results: dict = field(default_factory=dict)
    failures: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    sandboxes: int = 0
    startup_s: float = 0.0
    sandbox_s: float = 0.0
    startup_cpu_s: float = 0.0      # as the runner reported it (a killed sandbox reports nothing)
    sandbox_cpu_s: float = 0.0

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def _layout(scratch: Path, handin: Path, base: Path, hide: list[Path]) -> Layout:
    binds = [(INSIDE, f"{GRADE_HOME}/inside"), (scratch / "in", f"{GRADE_HOME}/in"),
             (base / "helpers", f"{GRADE_HOME}/pkg/helpers")]
    for name, _ in files():
        path = handin / name
        if path.is_file() and not path.is_symlink():
            binds.append((path, f"{GRADE_HOME}/pkg/{name}"))
    return Layout(binds=binds, hide=hide, argv=[_python(), "-s", "-m", "inside.runner"],
                  env={"PYTHONPATH": f"{GRADE_HOME}/pkg:{GRADE_HOME}"})


def _python() -> str:
    import sys
    return sys.executable


def _seconds(value) -> float:
    return float(value) if isinstance(value, (int, float)) and 0 <= value < 1e6 else 0.0


def _reason(exit_, caps: Caps, what: str) -> str:
    if exit_.reason == "timeout":
        return f"{what} {exit_.detail}"
    if exit_.reason == "output":
        return f"{what} {exit_.detail} (the output cap), so it was stopped"
    if exit_.reason == "channel":
        return f"{what} broke the grader's result channel ({exit_.detail}), so it was stopped"
    code = exit_.returncode
    how = (f"killed by signal {-code}" if code is not None and code < 0 else
           f"killed by signal {code - 128}" if code is not None and code > 128 else f"exit status {code}")
    return (f"{what} ended the grading process ({how}: os._exit, a signal or a crash; the memory cap is "
            f"{caps.memory_mib} MiB, the process cap {caps.processes})")


def run_tasks(handin: Path, base: Path, scratch: Path, caps: Caps, uid: int, hide: list[Path]) -> Run:
    """Run every task of the hand-in unpacked at `handin` in as many sandboxes as it takes (see the module doc)."""
    all_tasks, _ = tasks()
    by_id = {t["id"]: t for t in all_tasks}
    remaining = [t["id"] for t in all_tasks]
    nonce = secrets.token_hex(16)
    (scratch / "in").mkdir(parents=True, exist_ok=True, mode=0o755)
    (scratch / "in").chmod(0o755)
    with write_atomic(scratch / "in" / "spec.json") as handle:
        json.dump({"nonce": nonce, "files": files(), "tasks": all_tasks}, handle)
    (scratch / "in" / "spec.json").chmod(0o644)
    run = Run()
    handin_deadline = time.monotonic() + caps.handin_s
    output_left = int(caps.output_mib * 2**20)
    layout = _layout(scratch, handin, base, hide)
    while remaining:
        if time.monotonic() >= handin_deadline:
            for task_id in remaining:
                run.failures[task_id] = f"not run: the hand-in's {caps.handin_s:g} s of grading ran out"
            break
        with write_atomic(scratch / "in" / "todo.json") as handle:
            json.dump(remaining, handle)
        (scratch / "in" / "todo.json").chmod(0o644)
        state = {"phase": "startup", "since": time.monotonic(), "file": None, "task": None, "exercise": None}
        started = time.monotonic()

        def on_frame(message: dict):
            if message.get("nonce") != nonce:
                run.note("frames without the grader's nonce came on the result channel (forged; ignored)")
                return None
            kind, now = message.get("type"), time.monotonic()
            if kind == "ready":
                state.update(phase="running", since=now)
                run.startup_s += now - started
                run.startup_cpu_s += _seconds(message.get("cpu"))
            elif kind == "import" and message.get("file") in dict(files()):
                state.update(file=message["file"], task=None, exercise=None, since=now)
            elif kind == "imported" and isinstance(message.get("error"), dict):
                error = replay.rebuild(message["error"])
                run.note(f"importing {state['file']} raised {replay.said(error)[:200]}")
            elif kind == "begin" and message.get("task") in remaining:
                exercise = by_id[message["task"]]["exercise"]
                if exercise != state["exercise"]:
                    state.update(exercise=exercise, since=now)
                state["task"] = message["task"]
            elif kind == "result":
                task_id = message.get("task")
                if task_id != state["task"] or task_id not in remaining:
                    run.note(f"a result for {str(task_id)[:40]!r}, which was not running, came on the result channel "
                             "(forged; ignored)")
                    return None
                run.results[task_id] = message
                remaining.remove(task_id)
                state["task"] = None
            elif kind == "tamper":
                what = [str(w)[:80] for w in message.get("what", [])][:10]
                run.note(f"while {str(message.get('during'))[:60]} was graded, the submission replaced "
                         f"{', '.join(what)} (tampering; verdicts are decided outside the sandbox)")
            elif kind == "end":
                run.sandbox_cpu_s += _seconds(message.get("cpu"))
                return "end"
            return None

        def deadline():
            cap = caps.startup_s if state["phase"] == "startup" else caps.exercise_s
            what = ("the sandbox's start" if state["phase"] == "startup" else
                    f"exercise {state['exercise']}" if state["exercise"] else f"importing {state['file']}")
            limit, detail = state["since"] + cap, f"ran past the {cap:g} s {what} may take"
            if handin_deadline < limit:
                limit, detail = handin_deadline, f"ran past the hand-in's {caps.handin_s:g} s"
            return limit, detail

        sandbox = Sandbox(layout, caps, uid, output_left)
        exit_ = sandbox.run(on_frame, deadline, wire.FrameReader(int(caps.channel_mib * 2**20)))
        run.sandboxes += 1
        run.sandbox_s += time.monotonic() - started
        output_left -= exit_.output_bytes
        if exit_.reason == "end":
            for task_id in list(remaining):
                run.failures[task_id] = "not run: the runner ended without it (tampering with the runner?)"
                remaining.remove(task_id)
            break
        if state["phase"] == "startup":
            reason = _reason(exit_, caps, "the sandbox's Python")
            tail = exit_.stderr_tail.strip().splitlines()[-1:] if exit_.stderr_tail.strip() else []
            for task_id in remaining:
                run.failures[task_id] = f"not run: {reason}" + (f" ({tail[0][:200]})" if tail else "")
            run.note(f"the sandbox did not start: {reason}")
            break
        if state["task"] is not None:
            task = by_id[state["task"]]
            reason = _reason(exit_, caps, f"exercise {task['exercise']}")
            doomed = [t for t in remaining if by_id[t]["exercise"] == task["exercise"]]
        elif state["file"] is not None:
            reason = _reason(exit_, caps, f"importing {state['file']}")
            doomed = [t for t in remaining if by_id[t]["file"] == state["file"]]
        else:
            reason = _reason(exit_, caps, "the hand-in")
            doomed = list(remaining)
        for task_id in doomed:
            run.failures[task_id] = reason
            remaining.remove(task_id)
        if exit_.reason == "channel":
            run.note(f"the result channel was broken: {exit_.detail}")
    return run


def verdicts(run: Run) -> dict[str, dict]:
    """Per exercise: the scored result, every verdict decided here from the run's plain data."""
    all_tasks, judges = tasks()
    out = {}
    for exercise in EXERCISES:
        visible, cases = None, []
        for task in [t for t in all_tasks if t["exercise"] == exercise.key]:
            task_id = task["id"]
            if task_id in run.failures:
                outcome = (False, run.failures[task_id])
            elif "error" in run.results.get(task_id, {}):
                error = replay.rebuild(run.results[task_id]["error"])
                outcome = (False, f"the code could not be set up: {replay.said(error)[:300]}")
            elif judges[task_id][0] == "visible":
                _, check, module, attr = judges[task_id]
                reference = importlib.import_module(module)
                reference = reference if attr is None else getattr(reference, attr)
                outcome = replay.verdict(getattr(importlib.import_module("helpers.checks"), check), reference,
                                         run.results[task_id].get("events"))
                inside = str(run.results[task_id].get("inside", ""))
                if inside.startswith("pass") and not outcome[0]:
                    run.note(f"exercise {exercise.key}'s check passed inside the sandbox but not on replay outside "
                             "(patched checks, or code that answers differently each time)")
            else:
                outcome = hidden.judge(judges[task_id][1], run.results[task_id])
            if judges[task_id][0] == "visible":
                visible = outcome
            else:
                cases.append((task_id.split("/", 1)[1], *outcome))
        out[exercise.key] = scoring.exercise(exercise.key, visible, cases)
    return out
