"""The runner: started in the sandbox as ``python -m inside.runner``, it drives one hand-in's code.

It reads /grade/in/spec.json (the tasks, the inputs, a nonce) and /grade/in/todo.json (the task ids still to
run), imports the released checks before any of the student's files, then for each exercise file imports the
student's version and runs that file's tasks in order:

- a visible task runs the released check on the student's function, class or module, wrapped by the recorder
  (`inside.record`): the events are the result, the check's own verdict in here is only informative;
- a call task calls the student's function on the plan's inputs (hidden cases: other shapes, seeds and
  operating points), with the plan's vocabulary callables (`inside.vocab`), recording the same way;
- a module task builds the student's block or UNet with the plan's arguments, loads the state the grader
  gives (the course's names and shapes, or one sentence), and runs the named methods on the plan's inputs.

Every message goes to the result channel (file descriptor GRADE_FD) as a frame of `inside.wire`, with the
nonce: ready, import (before each file), begin (before each task), result, tamper (what the student's code
replaced: the checks, CheckFailed, sys.exit, ...), end. After each import and each task every other process in
the sandbox is killed and reaped (`sweep`), so leftovers of one exercise never weigh on the next. The grader outside watches the time between frames,
kills the whole sandbox when a cap is passed and decides every score itself.
"""
import contextlib
import importlib
import json
import os
import resource
import sys
import time

import torch

from . import record, vocab, wire

HOME = os.environ.get("GRADE_HOME", "/run/grade")
IN = f"{HOME}/in"


_kill, _waitpid = os.kill, os.waitpid   # taken before any student code can replace them


def sweep() -> None:
    """End every other process in the sandbox (a task's background or forked leftovers) and reap the runner's
    children, so that zombies do not count against the process cap of the next task."""
    try:
        _kill(-1, 9)
    except OSError:
        pass
    while True:
        try:
            pid, _ = _waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Channel:
    def __init__(self, fd: int, nonce: str):
        self.fd, self.nonce, self.pid, self.write = fd, nonce, os.getpid(), os.write

    def send(self, message: dict) -> None:
        if os.getpid() != self.pid:
            os._exit(0)
        data = wire.frame({**message, "nonce": self.nonce})
        while data:
            data = data[self.write(self.fd, data):]


def watched():
    """(name -> object) of what a submission might patch to fake a verdict: the checks, their verdict and stub
    classes, the process's exits, a few comparisons, the runner itself."""
    found = {}
    for name, module in list(sys.modules.items()):
        if name.startswith(("helpers.checks", "inside")) or name == "helpers.exercises":
            for attr, value in list(vars(module).items()):
                if not attr.startswith("__") and (callable(value) or isinstance(value, type)):
                    found[f"{name}.{attr}"] = value
    for module, attrs in ((sys, ("exit",)), (os, ("_exit", "kill", "write")), (torch, ("allclose", "equal", "isclose"))):
        for attr in attrs:
            found[f"{module.__name__}.{attr}"] = getattr(module, attr)
    for attr in ("print", "open", "isinstance", "__import__"):
        found[f"builtins.{attr}"] = getattr(__import__("builtins"), attr)
    return found


def changed(before: dict) -> list[str]:
    now = watched()
    return sorted(name for name, value in before.items() if now.get(name) is not value)


def cpu_seconds() -> float:
    """CPU seconds of the runner and the children it reaped (informative: the grader's timing, never a verdict)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Namespace:
    """A student's module as a check sees it, each function wrapped by the recorder on first use."""

    def __init__(self, module, recorder):
        self._module, self._recorder, self._cache = module, recorder, {}

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._cache:
            value = getattr(self._module, name)
            self._cache[name] = self._recorder.student(value, f"N:{name}") if callable(value) else value
        return self._cache[name]


def resolve(module: str, attr: str | None):
    target = importlib.import_module(module)
    return target if attr is None else getattr(target, attr)


def visible(task, checks, check_failed) -> dict:
    recorder = record.Recorder()
    target = resolve(task["module"], task.get("attr"))
    if task.get("attr") is None:
        wrapped = Namespace(target, recorder)
    else:
        wrapped = recorder.student(target, "K" if isinstance(target, type) else "F")
    try:
        checks[task["check"]](wrapped)
        inside = "pass"
    except check_failed as verdict:
        inside = f"fail: {verdict}"
    except BaseException as error:   # noqa: B036 - a student's SystemExit is a verdict too
        inside = f"error: {record.describe(error)}"
    return {"events": recorder.events, "inside": inside[:2000]}


def calls(task) -> dict:
    recorder = record.Recorder()
    function = recorder.student(resolve(task["module"], task["attr"]), "F")
    hook = lambda tree: vocab.build(tree["V"], wire.decode(tree.get("p", {"D": []}))) if "V" in tree else None  # noqa: E731
    for call in task["calls"]:
        args, kwargs = wire.decode(call["args"], hook), wire.decode(call["kwargs"], hook)
        try:
            out = function(*args, **kwargs)
            for then in call.get("then", []):
                out_args, out_kwargs = wire.decode(then["args"], hook), wire.decode(then["kwargs"], hook)
                try:
                    out(*out_args, **out_kwargs)
                except BaseException:   # noqa: B036 - recorded in the event
                    pass
        except BaseException:   # noqa: B036 - recorded in the event; the next call still runs
            pass
    return {"events": recorder.events}


def module_task(task) -> dict:
    factory = resolve(task["module"], task["attr"])
    args, kwargs = wire.decode(task["args"]), wire.decode(task["kwargs"])
    built = factory(*args, **kwargs)
    if not isinstance(built, torch.nn.Module):
        return {"structure": f"{task['attr']}(...) returned a {type(built).__name__}, not an nn.Module"}
    state = wire.decode(task["state"])
    have = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in state.items()}
    if have != want:
        extra, missing = sorted(set(have) - set(want)), sorted(set(want) - set(have))
        shapes = sorted(k for k in set(have) & set(want) if have[k] != want[k])
        return {"structure": {"extra": extra[:5], "missing": missing[:5],
                              "shapes": [[k, list(have[k]), list(want[k])] for k in shapes[:5]]}}
    built.load_state_dict(state)
    built.train(bool(task["train"]))
    outputs = []
    for call in task["calls"]:
        method = getattr(built, call["method"]) if call["method"] else built
        try:
            with torch.no_grad():
                outputs.append({"ret": wire.encode(method(*wire.decode(call["args"])))})
        except Exception as error:
            outputs.append({"raise": record.describe(error)})
    return {"outputs": outputs}


def main() -> None:
    with open(f"{IN}/spec.json") as handle:
        spec = json.load(handle)
    with open(f"{IN}/todo.json") as handle:
        todo = set(json.load(handle))
    channel = Channel(int(os.environ["GRADE_FD"]), spec["nonce"])
    torch.set_num_threads(1)
    start = time.perf_counter()
    import helpers.checks
    import helpers.exercises
    checks = {name: getattr(helpers.checks, name) for name in helpers.checks.__all__}
    check_failed = helpers.exercises.CheckFailed
    if any(t["exercise"].startswith("4.") and t["id"] in todo for t in spec["tasks"]):
        with contextlib.suppress(ImportError):
            import diffusers  # noqa: F401  (the checks of notebook 04 compare with its DDPMScheduler)
    before = watched()
    channel.send({"type": "ready", "seconds": time.perf_counter() - start, "cpu": cpu_seconds()})
    runners = {"visible": lambda t: visible(t, checks, check_failed), "calls": calls, "module": module_task}
    reported: set[str] = set()
    for file, module in spec["files"]:
        tasks = [t for t in spec["tasks"] if t["file"] == file and t["id"] in todo]
        if not tasks:
            continue
        channel.send({"type": "import", "file": file})
        try:
            importlib.import_module(module)
            channel.send({"type": "imported", "file": file})
        except BaseException as error:   # noqa: B036 - the tasks then say the import failed
            channel.send({"type": "imported", "file": file, "error": record.describe(error)})
        sweep()
        for task in tasks:
            names = [n for n in changed(before) if n not in reported]
            if names:
                reported.update(names)
                channel.send({"type": "tamper", "what": names[:20], "during": file})
            channel.send({"type": "begin", "task": task["id"]})
            began = time.perf_counter()
            try:
                result = runners[task["kind"]](task)
            except BaseException as error:   # noqa: B036
                result = {"error": record.describe(error)}
            sweep()
            try:
                channel.send({"type": "result", "task": task["id"], "seconds": time.perf_counter() - began,
                              **result})
            except (wire.WireError, TypeError, ValueError) as error:
                channel.send({"type": "result", "task": task["id"], "error": record.describe(error)})
    names = [n for n in changed(before) if n not in reported]
    if names:
        channel.send({"type": "tamper", "what": names[:20], "during": "the end"})
    channel.send({"type": "end", "cpu": cpu_seconds()})


if __name__ == "__main__":
    main()
