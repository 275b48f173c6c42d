"""The visible checks' verdicts, decided outside the sandbox by replaying the record of the student's code.

`verdict(exercise, events)` runs the grader's own copy of the exercise's check (`helpers.checks`, imported
normally: the reference) on a stand-in built from the sandbox's record (`instructor.grade.inside.record`): each
call the check makes is matched, in order, with the recorded event of the same callee and the same input digest;
the check's own callables are called again with the inputs the student's code gave them inside (so a model that
records its inputs sees the same ones), the tensors the student changed in place are changed again, the random
states are restored, and the recorded result is returned (or the recorded error raised). A returned student
block or UNet becomes the course's own module with the student's parameters loaded (names and shapes must be the
course's), whose forward, encode and decode answer from the record.

So the check's sentence is the feedback, and nothing the submission did to the checks, CheckFailed, sys.exit or
the runner inside the sandbox can change it: a record that does not fit the check's calls fails the exercise
with a sentence saying so.
"""
import builtins
import contextlib
import io

import torch
from torch import nn

from helpers.exercises import BY_KEY, CheckFailed, ExerciseMissing
from instructor.grade.inside import record, wire

SAFE = ("ValueError", "TypeError", "RuntimeError", "IndexError", "KeyError", "AttributeError", "AssertionError",
        "ZeroDivisionError", "NotImplementedError", "MemoryError", "OSError", "ArithmeticError", "LookupError",
        "OverflowError", "RecursionError", "FloatingPointError", "UnicodeError", "ImportError", "NameError")


class ReplayError(Exception):
    """The record does not fit the check's calls (tampering, or code that answers differently each time)."""


class StructureMismatch(Exception):
    """A student's block or UNet whose parameters are not named and shaped as the course's."""


def rebuild(info) -> BaseException:
    """The exception a recorded error stands for, as one of Python's own classes (never the student's)."""
    if not isinstance(info, dict):
        return ReplayError("the record holds an error that is not of the grader's format")
    message = str(info.get("msg", ""))[:1000]
    key = info.get("exercise")
    if key in BY_KEY:
        return ExerciseMissing(key, str(info.get("hint", ""))[:500])
    base = info.get("base")
    kind = getattr(builtins, base) if base in SAFE else RuntimeError
    name = str(info.get("type", "Exception"))[:80]
    if base in ("SystemExit", "KeyboardInterrupt", "GeneratorExit", "BaseException"):
        message = f"{name} ({message or 'no message'}): the code tried to end the grading"
    error = kind(message)
    error.grade_type = name if base not in ("SystemExit", "KeyboardInterrupt", "GeneratorExit", "BaseException") \
        else kind.__name__
    return error


def said(error: BaseException) -> str:
    """'TypeName: first line' of an error, with the student's own type name for a rebuilt one."""
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{getattr(error, 'grade_type', type(error).__name__)}{': ' + first if first else ''}"


def _tensors(args, kwargs) -> list:
    return record.leaves(args, kwargs)


class Replayer:
    def __init__(self, events: list, references: dict):
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise ReplayError("the record of this check is not a list of events")
        self.events, self.position, self.references = events, 0, references
        self.refs: dict[int, int] = {}
        self.objects: list = []
        self.students: dict[int, object] = {}

    # the same numbering of the check's objects as the recorder's
    def hook(self, value):
        sid = getattr(value, record.STUDENT, None) if not isinstance(value, torch.Tensor) else None
        if isinstance(sid, int):
            return {"S": sid}
        if isinstance(value, nn.Module) or record.is_callable_object(value):
            if id(value) not in self.refs:
                self.refs[id(value)] = len(self.objects)
                self.objects.append(value)
            return {"C": self.refs[id(value)]}
        return None

    def resolve(self, tree):
        if "C" in tree:
            ref = tree["C"]
            if not isinstance(ref, int) or not 0 <= ref < len(self.objects):
                raise ReplayError("the record names one of the check's objects that the check never passed")
            return self.objects[ref]
        if "S" in tree:
            sid = tree["S"]
            if sid not in self.students:
                raise ReplayError("the record names a function of the student's code that was never returned")
            return self.students[sid]
        return None

    def _next(self, callee: str, args, kwargs, module: nn.Module | None) -> dict:
        digest = wire.key(args, kwargs, self.hook)
        if self.position >= len(self.events):
            raise ReplayError("the check called your code more often than the record shows (the grading process "
                              "ended early, or its record was cut or forged)")
        event = self.events[self.position]
        if event.get("callee") != callee or event.get("key") != digest:
            raise ReplayError("the check's calls do not match the record (the code answered differently when the "
                              "same inputs came again, or the record was tampered with)")
        if module is not None and event.get("state") != record.state_key(module):
            raise ReplayError("a module's parameters at a call do not match the record (the code changed them in a "
                              "way the grader cannot reproduce)")
        self.position += 1
        return event

    def _callbacks(self, event) -> None:
        for entry in event.get("cb", []):
            if not isinstance(entry, dict):
                raise ReplayError("a callback in the record is not of the grader's format")
            target = self.resolve({"C": entry.get("ref")})
            torch.set_rng_state(wire.state_from_b64(entry.get("rng")))
            args, kwargs = wire.decode(entry.get("args"), self.resolve)
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise ReplayError("a callback's inputs in the record are not of the grader's format")
            try:
                out = target(*args, **kwargs)
            except Exception as error:
                if "raise" in entry:
                    continue
                raise ReplayError(f"one of the check's own functions failed on inputs your code gave it at replay "
                                  f"({type(error).__name__})") from None
            if wire.value_key(out, self.hook) != entry.get("out"):
                raise ReplayError("one of the check's own functions answered differently at replay than in the "
                                  "sandbox (the record does not fit)")

    def _finish(self, event, args, kwargs, callee: str):
        found = _tensors(args, kwargs)
        for item in event.get("mut", []):
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int)
                    and 0 <= item[0] < len(found) and isinstance(found[item[0]], torch.Tensor)):
                raise ReplayError("the record says an input changed that the call did not have")
            new = wire.decode(item[1])
            if not isinstance(new, torch.Tensor) or new.shape != found[item[0]].shape:
                raise ReplayError("the record says an input changed its shape in place")
            with torch.no_grad():
                found[item[0]].copy_(new)
        generators = [g for g in found if isinstance(g, torch.Generator)]
        states = event.get("gen", [])
        if len(states) != len(generators):
            raise ReplayError("the record's random generators do not fit the call")
        for generator, state in zip(generators, states):
            generator.set_state(wire.state_from_b64(state))
        torch.set_rng_state(wire.state_from_b64(event.get("rng")))
        if "raise" in event:
            raise rebuild(event["raise"])
        if "ret" not in event:
            raise ReplayError("the record has no result for a call")
        return self._take(event["ret"], callee, args, kwargs)

    def _take(self, tree, callee: str, args, kwargs):
        """The value a call returned, with student functions and modules as replaying stand-ins."""
        if isinstance(tree, dict) and "S" in tree and isinstance(tree["S"], int) and tree["S"] not in self.students:
            function = self.function(f"S{tree['S']}")
            setattr(function, record.STUDENT, tree["S"])
            self.students[tree["S"]] = function
            return function
        if isinstance(tree, dict) and "M" in tree:
            return self._module(tree, callee, args, kwargs)
        if isinstance(tree, dict) and ("L" in tree or "U" in tree) and isinstance(tree.get("L", tree.get("U")), list):
            items = [self._take(t, callee, args, kwargs) for t in tree.get("L", tree.get("U"))]
            return items if "L" in tree else tuple(items)
        return wire.decode(tree, self.resolve)

    def _module(self, tree, callee: str, args, kwargs) -> nn.Module:
        sid, factory = tree.get("M"), self.references.get(callee)
        if not isinstance(sid, int) or factory is None:
            raise ReplayError("the record holds a module from a call that cannot return one")
        state = wire.decode(tree.get("state"))
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ReplayError("a module's parameters in the record are not of the grader's format")
        with torch.random.fork_rng(devices=[]):
            replica = factory(*args, **kwargs)
        mismatch(replica.state_dict(), state, describe_call(callee, args, kwargs))
        replica.load_state_dict(state)
        object.__setattr__(replica, record.STUDENT, sid)
        self.students[sid] = replica
        for path, sub in replica.named_modules():
            sub.forward = self.method(f"M{sid}:{path}:forward", sub)
        for name in record.METHODS:
            if callable(getattr(replica, name, None)) and not isinstance(getattr(replica, name), nn.Module):
                replica.__dict__[name] = self.method(f"M{sid}::{name}", replica)
        return replica

    def function(self, callee: str):
        def replay(*args, **kwargs):
            event = self._next(callee, args, kwargs, None)
            self._callbacks(event)
            return self._finish(event, args, kwargs, callee)
        return replay

    def method(self, callee: str, module: nn.Module):
        def replay(*args, **kwargs):
            event = self._next(callee, args, kwargs, module)
            self._callbacks(event)
            after = wire.decode(event.get("after", {"D": []}))
            if not isinstance(after, dict) or not set(after) <= set(module.state_dict()):
                raise ReplayError("the record changes parameters the module does not have")
            if after:
                module.load_state_dict(after, strict=False)
            return self._finish(event, args, kwargs, callee)
        return replay


def describe_call(callee: str, args, kwargs) -> str:
    name = callee.split(":")[-1] if callee.startswith("N:") else "the model"
    shown = ", ".join([repr(a) for a in args if isinstance(a, (int, float, str))]
                      + [f"{k}={v!r}" for k, v in kwargs.items() if isinstance(v, (int, float, str))])
    return f"{name}({shown})"


def mismatch(course: dict, student: dict, what: str) -> None:
    """Raise StructureMismatch, one sentence, when `student`'s parameter names or shapes differ from `course`'s."""
    extra, missing = sorted(set(student) - set(course)), sorted(set(course) - set(student))
    shapes = [k for k in course if k in student and tuple(course[k].shape) != tuple(student[k].shape)]
    if extra or missing or shapes:
        parts = []
        if missing:
            parts.append(f"lacks {', '.join(missing[:3])}")
        if extra:
            parts.append(f"has {', '.join(extra[:3])} that the course's has not")
        if shapes:
            k = shapes[0]
            parts.append(f"shapes {k} as {list(student[k].shape)}, not {list(course[k].shape)}")
        raise StructureMismatch(f"{what} {' and '.join(parts)}: build it from the course's layers, in the course's "
                                "order (the hint says which), so that its parameters are named as the course's")


def stand_in(reference, callee_kind: str, replayer: Replayer):
    """What the check is given outside: a replaying function, class or module namespace."""
    if callee_kind == "N":
        class Namespace:
            def __getattr__(self, name):
                if name.startswith("_"):
                    raise AttributeError(name)
                value = getattr(reference, name)
                if callable(value):
                    replayer.references[f"N:{name}"] = value
                    return replayer.function(f"N:{name}")
                return value
        return Namespace()
    replayer.references[callee_kind] = reference
    return replayer.function(callee_kind)


def verdict(check, reference, events: list) -> tuple[bool, str]:
    """(passed, sentence) of `check` (the grader's copy) replayed on `events` for the reference object
    (a function, a class or a module) the student's version stood for."""
    kind = "N" if isinstance(reference, type(torch)) else ("K" if isinstance(reference, type) else "F")
    replayer = Replayer(events, {})
    target = stand_in(reference, kind, replayer)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            check(target)
    except CheckFailed as failed:
        return False, str(failed)
    except (ReplayError, StructureMismatch, wire.WireError) as error:
        return False, str(error)
    except Exception as error:   # the student's own error, rebuilt as one of Python's classes
        return False, f"your code raised {said(error)}"
    if replayer.position != len(replayer.events):
        return False, ("the record holds more calls than the check made (the code called itself in a way the "
                       "grader cannot follow, or the record was tampered with)")
    return True, printed.getvalue().strip().splitlines()[-1] if printed.getvalue().strip() else "every check passes"
