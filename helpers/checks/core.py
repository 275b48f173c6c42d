"""What every check shares: the verdict (`CheckFailed`, one sentence), a fixed seed that leaves the caller's
random state alone, and the translation of a stub's `ExerciseMissing` into the exercise's hint."""
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
    return str(error).splitlines()[0]


def close(a, b, tol: float = 1e-5) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=tol, rtol=tol)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def grades(key: str):
    """Decorator: the check of exercise `key`. Runs under seed 0 (the caller's RNG state restored), prints one
    line when everything holds, and turns a stub's ExerciseMissing into a one-sentence CheckFailed."""
    exercise = BY_KEY[key]

    def wrap(body):
        @functools.wraps(body)
        def check(*args, **kwargs):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                try:
                    body(*args, **kwargs)
                except ExerciseMissing as missing:
                    if missing.exercise.key == key:
                        raise CheckFailed(str(missing)) from None
                    raise CheckFailed(f"the check of exercise {key} needs exercise {missing.exercise.key} "
                                      f"({missing.exercise.where}) first") from None
            print(f"✓ exercise {key} ({exercise.title}): every check passes")
        check.exercise = key
        return check
    return wrap
