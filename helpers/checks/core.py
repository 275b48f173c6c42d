"""What every check shares: the verdict (`CheckFailed`, one sentence), a fixed seed that leaves the caller's
random state alone, one CPU thread while it runs (the checks' tensors are small: threads only cost), the
translation of a stub's `ExerciseMissing` into the exercise's hint, and the words that say WHERE an output
differs (`where`) when a check cannot name the mistake.

A check must drive the student's code only through calls (the class grader replays its calls from a record):
no forward hooks on a student's modules and no look at their types; reading a
module's `state_dict()` is fine."""
import functools

import torch

from helpers.exercises import BY_KEY, CheckFailed, ExerciseMissing


def fail(sentence: str):
    raise CheckFailed(sentence)


def first_line(error: Exception) -> str:
    """The first line of an error from the student's code; a stub's ExerciseMissing (a RuntimeError too, as a
    NotImplementedError) is raised on, so that the check reports the exercise instead."""
    if isinstance(error, ExerciseMissing):
        raise error
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def close(a, b, tol: float = 1e-5) -> bool:
    """Same shape and equal within `tol` (absolute plus relative); False for anything that is not a tensor."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
        return False
    return bool(torch.allclose(a.double(), b.double(), atol=tol, rtol=tol))


def is_tensor_like(value, like: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and value.shape == like.shape


def shape_of(value) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"


def name_the_mistake(got, named, what: str, tol: float = 1e-5) -> None:
    """Fail with "<what>, <sentence>" for the first (expected, sentence) of `named` that `got` equals within `tol`:
    each pair is a plausible wrong answer and the sentence that names it."""
    for expected, sentence in named:
        if close(got, expected, tol):
            fail(f"{what}, {sentence}")


def where(got: torch.Tensor, want: torch.Tensor) -> str:
    """'at [1, 0, 3, 4] yours is 0.123, expected 0.456' for the largest difference (same shapes)."""
    difference = (got.double() - want.double()).abs()
    flat = int(difference.argmax()) if difference.numel() else 0
    index = [int(i) for i in torch.unravel_index(torch.tensor(flat), got.shape)] if got.dim() else []
    return (f"at {index} yours is {float(got.reshape(-1)[flat]):.4g}, expected {float(want.reshape(-1)[flat]):.4g} "
            f"(largest difference {float(difference.max()):.3g})")


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def grades(key: str):
    """Decorator: the check of exercise `key`. Runs under seed 0 (the caller's RNG state restored) on one CPU
    thread (the caller's count restored), prints one line when everything holds, and turns a stub's
    ExerciseMissing into a one-sentence CheckFailed."""
    exercise = BY_KEY[key]

    def wrap(body):
        @functools.wraps(body)
        def check(*args, **kwargs):
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    body(*args, **kwargs)
            except ExerciseMissing as missing:
                if missing.exercise.key == key:
                    raise CheckFailed(str(missing)) from None
                raise CheckFailed(f"the check of exercise {key} needs exercise {missing.exercise.key} "
                                  f"({missing.exercise.where}) first") from None
            finally:
                torch.set_num_threads(threads)
            print(f"✓ exercise {key} ({exercise.title}): every check passes")
        check.exercise = key
        return check
    return wrap
