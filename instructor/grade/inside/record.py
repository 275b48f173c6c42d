"""The recorder: what a student's code was given and what it gave back, as the checks drive it in the sandbox.

A visible check runs inside the sandbox exactly as the student ran it, but its argument (the student's function,
class or module) is wrapped by `Recorder.student`. Every call the check makes to the student's code becomes an
event: the digest of its inputs, every call the student's code made back into the check's own callables (models,
noise estimates, views' callbacks) with their inputs, what it returned or raised, the tensors it changed in place,
and the random-number states after it. A returned function is wrapped the same way; a returned nn.Module (a
student's block or UNet) travels with its parameters, and every submodule's forward (and the root's encode and
decode) is recorded with the digest of the module's state before the call and the state it changed.

Outside, `instructor.grade.replay` runs the same check again on these events, so the verdict and its sentence
come from the grader's own copy of the check, and nothing computed in here is trusted beyond "your code returned
this". Calls nested inside a recorded call (the student's code calling itself) are not recorded; a forked child
that returns into the recorder exits at once, so it cannot write to the result channel as the runner.
"""
import builtins
import os

import torch
from torch import nn

from . import wire

STUDENT = "_grade_student"
METHODS = ("encode", "decode")


def describe(error: BaseException) -> dict:
    """An exception as plain data: its type, its nearest builtin base, its message (and an exercise stub's key)."""
    base = next((c.__name__ for c in type(error).__mro__ if getattr(builtins, c.__name__, None) is c), "Exception")
    info = {"type": type(error).__name__[:80], "base": base, "msg": str(error)[:1000]}
    exercise = getattr(error, "exercise", None)
    if type(error).__name__ == "ExerciseMissing" and hasattr(exercise, "key"):
        info.update(exercise=str(exercise.key), hint=str(getattr(error, "hint", ""))[:500])
    return info


def leaves(args, kwargs) -> list:
    """The tensors and generators among a call's inputs, in a fixed order (lists, tuples and dicts opened)."""
    found = []

    def walk(value):
        if isinstance(value, (torch.Tensor, torch.Generator)):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
    walk(list(args))
    walk([kwargs[k] for k in sorted(kwargs)])
    return found


def is_callable_object(value) -> bool:
    """A function, method or callable object of the check (not a class, tensor or generator)."""
    return callable(value) and not isinstance(value, (type, torch.Tensor, torch.Generator))


def state_key(module: nn.Module) -> str:
    """The digest of a module's parameters and buffers and of every submodule's train/eval flag."""
    parts = [[name, wire.array_digest(*wire.tensor_array(value))] for name, value in module.state_dict().items()]
    parts += [[path, sub.training] for path, sub in module.named_modules()]
    return wire.value_key(parts)


class Recorder:
    def __init__(self):
        self.events: list[dict] = []
        self.depth = 0
        self.current: dict | None = None
        self.in_callback = False
        self.refs: dict[int, int] = {}
        self.kept: list = []           # the check's objects, kept alive so that their ids stay unique
        self.handed_out = 0
        self.pid = os.getpid()

    # ---- what the check passes in
    def _ref(self, value) -> int:
        if id(value) not in self.refs:
            self.refs[id(value)] = len(self.refs)
            self.kept.append(value)
        return self.refs[id(value)]

    def hook(self, value):
        sid = getattr(value, STUDENT, None) if not isinstance(value, torch.Tensor) else None
        if isinstance(sid, int):
            return {"S": sid}
        if isinstance(value, nn.Module) or is_callable_object(value):
            return {"C": self._ref(value)}
        return None

    def _wrap_check(self, value):
        """The check's callables in `value`, wrapped so that the student's calls to them are recorded."""
        if isinstance(value, torch.Tensor) or isinstance(getattr(value, STUDENT, None), int):
            return value
        if isinstance(value, nn.Module):
            if not value.__dict__.get("_grade_wrapped"):
                value.forward = self._callback(self._ref(value), value.forward)
                value._grade_wrapped = True
            return value
        if is_callable_object(value):
            return self._callback(self._ref(value), value)
        if isinstance(value, list):
            return [self._wrap_check(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._wrap_check(v) for v in value)
        if isinstance(value, dict):
            return {k: self._wrap_check(v) for k, v in value.items()}
        return value

    def _callback(self, ref: int, function):
        def callback(*args, **kwargs):
            event = self.current
            if event is None or self.in_callback or os.getpid() != self.pid:
                return function(*args, **kwargs)
            entry = {"ref": ref, "rng": wire.state_b64(torch.get_rng_state()),
                     "args": wire.encode([list(args), kwargs], self.hook)}
            event["cb"].append(entry)
            self.in_callback = True
            try:
                out = function(*args, **kwargs)
            except BaseException as error:
                entry["raise"] = describe(error)
                raise
            finally:
                self.in_callback = False
            entry["out"] = wire.value_key(out, self.hook)
            return out
        return callback

    # ---- what the student's code gives back
    def _give(self, value, depth: int = 0):
        """(wire tree, value to hand to the check): student callables and modules wrapped and numbered."""
        if depth > 32:
            raise wire.WireError("a returned value is nested too deeply")
        if isinstance(value, torch.Tensor) or value is None or isinstance(value, (bool, int, float, str)):
            return wire.encode(value), value
        claimed = getattr(value, STUDENT, None)
        if isinstance(claimed, int):
            return {"S": claimed}, value
        if id(value) in self.refs:
            return {"C": self.refs[id(value)]}, value
        if isinstance(value, nn.Module):
            sid = self._next()
            tree = {"M": sid, "cls": type(value).__name__[:80],
                    "state": wire.encode(dict(value.state_dict()))}
            self._instrument(value, sid)
            return tree, value
        if is_callable_object(value):
            sid = self._next()
            wrapped = self.student(value, f"S{sid}")
            setattr(wrapped, STUDENT, sid)
            return {"S": sid}, wrapped
        if isinstance(value, (list, tuple)):
            pairs = [self._give(v, depth + 1) for v in value]
            trees, values = [p[0] for p in pairs], [p[1] for p in pairs]
            if isinstance(value, list):
                return {"L": trees}, values
            return {"U": trees}, tuple(values)
        if isinstance(value, dict):
            pairs = {k: self._give(v, depth + 1) for k, v in value.items()}
            return ({"D": [[wire.encode(k), p[0]] for k, p in pairs.items()]}, {k: p[1] for k, p in pairs.items()})
        return wire.encode(value), value

    def _next(self) -> int:
        self.handed_out += 1
        return self.handed_out - 1

    def _instrument(self, module: nn.Module, sid: int) -> None:
        object.__setattr__(module, STUDENT, sid)
        for path, sub in module.named_modules():
            sub.forward = self._call(sub.forward, f"M{sid}:{path}:forward", sub)
        for name in METHODS:
            method = getattr(module, name, None)
            if callable(method) and not isinstance(method, nn.Module):
                module.__dict__[name] = self._call(method, f"M{sid}::{name}", module)

    # ---- the student's callables
    def student(self, function, callee: str):
        """`function` wrapped so that each call the check makes to it is an event named `callee`."""
        return self._call(function, callee, None)

    def _call(self, function, callee: str, module: nn.Module | None):
        def call(*args, **kwargs):
            if self.depth or self.in_callback or os.getpid() != self.pid:
                return function(*args, **kwargs)
            event = {"callee": callee, "key": wire.key(args, kwargs, self.hook), "cb": []}
            if module is not None:
                event["state"] = state_key(module)
                before_state = {k: wire.array_digest(*wire.tensor_array(v)) for k, v in module.state_dict().items()}
            found = leaves(args, kwargs)
            before = [wire.array_digest(*wire.tensor_array(t)) if isinstance(t, torch.Tensor) else None for t in found]
            wrapped_args = self._wrap_check(list(args))
            wrapped_kwargs = {k: self._wrap_check(v) for k, v in kwargs.items()}
            self.events.append(event)
            self.depth, self.current = 1, event
            try:
                result = function(*wrapped_args, **wrapped_kwargs)
            except BaseException as error:
                if os.getpid() != self.pid:
                    os._exit(0)
                event["raise"] = describe(error)
                self._after(event, found, before, module, before_state if module is not None else None)
                raise
            finally:
                if os.getpid() != self.pid:
                    os._exit(0)
                self.depth, self.current = 0, None
            self._after(event, found, before, module, before_state if module is not None else None)
            event["ret"], result = self._give(result)
            return result
        return call

    def _after(self, event, found, before, module, before_state) -> None:
        event["rng"] = wire.state_b64(torch.get_rng_state())
        event["gen"] = [wire.state_b64(g.get_state()) for g in found if isinstance(g, torch.Generator)]
        event["mut"] = [[i, wire.encode(t)] for i, (t, digest) in enumerate(zip(found, before))
                        if isinstance(t, torch.Tensor) and wire.array_digest(*wire.tensor_array(t)) != digest]
        if module is not None:
            now = module.state_dict()
            event["after"] = wire.encode({k: v for k, v in now.items()
                                          if before_state.get(k) != wire.array_digest(*wire.tensor_array(v))})
