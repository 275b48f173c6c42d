"""The course's exercises: where each one lives, which check grades it, and what a missing one says.

An exercise is a region of a `helpers` file between nbgrader's solution markers (a line ``### BEGIN`` and a
line ``### END``, each followed by `` SOLUTION``; spelled apart here so that this file holds no region), with a
hint line right above the first: ``# Exercise 1.1 hint: <one line that points the way, not the code>``.

The student edition replaces each region by a stub that raises `ExerciseMissing`. In the student's notebooks,
`explain_missing()` (run by the set-up cell, after ``%autoreload 2``) turns what goes wrong while exercises are
unfinished into one line each, in place of a traceback:

- the check cell of an unfinished exercise shows its hint (``✗ exercise 1.1 (...) is not written yet; hint: ...``);
- a later cell that needs it says which exercise it waits for (``⏸ this cell waits for exercise 1.2 (...)``). A
  cell that fails on a name (NameError) waits for what the cell *defining* that name waited for: the names each
  failed cell assigns are remembered with its reason, so a cell using the denoiser of a cell that waited for 1.2
  says 1.2, not the exercise of whichever cell failed last;
- a helpers file that does not compile (a syntax error while the student edits it) is one sentence naming the file
  and line, ``✗ helpers/denoise.py, line 17: invalid syntax (...); fix that line, then run this cell again``: on
  its first import, and, once its module is loaded, in place of every cell run while the file is broken (the cell
  does not run on the module's stale version; cells that start with a magic, ``%%writefile`` say, still run).
  Autoreload's own reload tracebacks are silenced for the file until it changes again;
- autoreload's source-diffing mode (IPython 9's "deduperreload") is turned off, so that tracebacks through an
  edited file point at the student's lines, not at lines shifted by the edit (the module docstring, often).
"""
import ast
import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Exercise:
    key: str        # "1.1": notebook number, then the exercise's number in it
    title: str      # what the student writes, in a few words
    file: str       # the helpers file that holds its marked region(s)
    names: str      # the function(s) or lines to fill in, as the student sees them
    check: str      # the call the check cell runs (the exercise's own check in `helpers.checks`)
    imports: str    # what the check cell imports
    notebook: str   # the notebook whose cell `before` the exercise and its check are inserted
    before: str     # id of the first cell of that notebook that needs the exercise

    @property
    def where(self) -> str:
        return f"{self.names} in {self.file}"


EXERCISES = (
    Exercise("1.1", "noising z = x + sigma eps", "helpers/denoise.py", "add_noise",
             "checks.add_noise(denoise.add_noise)", "from helpers import checks, denoise",
             "01_one_step_denoising.ipynb", "7a3f6ed8"),
    Exercise("1.2", "the UNet operations Conv, DownConv, UpConv", "helpers/course_unet.py",
             "conv, down_conv, up_conv", "checks.unet_operations(course_unet)",
             "from helpers import checks, course_unet", "01_one_step_denoising.ipynb", "923202b0"),
    Exercise("1.3", "Flatten, Unflatten and Concat in the course UNet", "helpers/course_unet.py",
             "CourseUNet.__init__ (flatten, unflatten) and CourseUNet.decode (concat)",
             "checks.course_unet(course_unet.CourseUNet)", "from helpers import checks, course_unet",
             "01_one_step_denoising.ipynb", "923202b0"),
    Exercise("2.1", "time conditioning by FCBlocks", "helpers/course_unet.py",
             "ConditionalCourseUNet.forward (t1, t2)", "checks.time_conditioning(course_unet.ConditionalCourseUNet)",
             "from helpers import checks, course_unet", "02_time_conditioned_flow_matching.ipynb", "c0471b9b"),
    Exercise("2.2", "the flow-matching loss", "helpers/flow_matching.py", "loss",
             "checks.flow_matching_loss(flow_matching.loss)", "from helpers import checks, flow_matching",
             "02_time_conditioned_flow_matching.ipynb", "c0471b9b"),
    Exercise("2.3", "the Euler step", "helpers/samplers.py", "euler_step",
             "checks.euler_step(samplers.euler_step)", "from helpers import checks, samplers",
             "02_time_conditioned_flow_matching.ipynb", "919a7084"),
    Exercise("3.1", "class conditioning by FCBlocks", "helpers/course_unet.py",
             "ConditionalCourseUNet.forward (c1, c2)", "checks.class_conditioning(course_unet.ConditionalCourseUNet)",
             "from helpers import checks, course_unet", "03_class_conditioned_flow_matching.ipynb", "c5971d7c"),
    Exercise("3.2", "classifier-free guidance", "helpers/guidance.py", "classifier_free",
             "checks.classifier_free_guidance(guidance.classifier_free)", "from helpers import checks, guidance",
             "03_class_conditioned_flow_matching.ipynb", "a4340175"),
    Exercise("4.1", "the DDPM forward process", "helpers/diffusion.py", "forward",
             "checks.forward_process(diffusion.forward)", "from helpers import checks, diffusion",
             "04_diffusion_sampling_tricks.ipynb", "eef02506"),
    Exercise("4.2", "the one-step estimate of x0", "helpers/diffusion.py", "estimate_x0",
             "checks.one_step_estimate(diffusion.estimate_x0)", "from helpers import checks, diffusion",
             "04_diffusion_sampling_tricks.ipynb", "da9ff2a7"),
    Exercise("4.3", "the DDPM posterior step", "helpers/diffusion.py", "ddpm_step",
             "checks.ddpm_step(diffusion.ddpm_step)", "from helpers import checks, diffusion",
             "04_diffusion_sampling_tricks.ipynb", "b456f6b4"),
    Exercise("4.4", "iterative denoising", "helpers/diffusion.py", "iterative_denoise",
             "checks.iterative_denoise(diffusion.iterative_denoise)", "from helpers import checks, diffusion",
             "04_diffusion_sampling_tricks.ipynb", "b456f6b4"),
    Exercise("4.5", "SDEdit", "helpers/diffusion.py", "sdedit",
             "checks.sdedit(diffusion.sdedit)", "from helpers import checks, diffusion",
             "04_diffusion_sampling_tricks.ipynb", "1180b23a"),
    Exercise("4.6", "inpainting", "helpers/diffusion.py", "inpaint",
             "checks.inpaint(diffusion.inpaint)", "from helpers import checks, diffusion",
             "04_diffusion_sampling_tricks.ipynb", "f19eb325"),
    Exercise("4.7", "visual anagrams", "helpers/diffusion.py", "anagram",
             "checks.anagram(diffusion.anagram)", "from helpers import checks, diffusion",
             "04_diffusion_sampling_tricks.ipynb", "cd482127"),
    Exercise("4.8", "hybrid images", "helpers/diffusion.py", "hybrid",
             "checks.hybrid(diffusion.hybrid)", "from helpers import checks, diffusion",
             "04_diffusion_sampling_tricks.ipynb", "1f9d25cb"),
    Exercise("5.1", "the IS machine", "helpers/ideal.py", "ideal_denoiser",
             "checks.ideal_denoiser(ideal.ideal_denoiser)", "from helpers import checks, ideal",
             "05_ideal_flow_machines.ipynb", "90ee4bf3"),
    Exercise("5.2", "the ELS machine", "helpers/ideal.py", "els_denoiser",
             "checks.els_denoiser(ideal.els_denoiser)", "from helpers import checks, ideal",
             "05_ideal_flow_machines.ipynb", "90ee4bf3"),
)
BY_KEY = {exercise.key: exercise for exercise in EXERCISES}


class ExerciseMissing(NotImplementedError):
    """Raised by a stub of the student edition: names the exercise, where it lives, and its hint."""

    def __init__(self, key: str, hint: str):
        self.exercise, self.hint = BY_KEY[key], hint
        super().__init__(f"exercise {key} ({self.exercise.where}) is not written yet; hint: {hint}")


class CheckFailed(AssertionError):
    """A check's verdict: one sentence naming what is wrong (never the solution)."""


class BrokenHelpersFile(RuntimeError):
    """Raised in place of a cell while a loaded helpers file does not compile: one sentence naming file and line."""


HELPERS = Path(__file__).resolve().parent   # the helpers package, whose files a student edits

# Why this kernel's cells could not run so far (exercises, or models an earlier notebook trains), latest last.
_waiting: list[str] = []
_reason_of: dict[str, str] = {}              # a name a failed cell would have defined -> why that cell failed
_cell = {"names": set(), "said_broken": False}   # the running cell: the names it assigns; sentence shown yet?
_compiled: dict[str, tuple[float, SyntaxError | None]] = {}   # helpers file -> (mtime, its syntax error or None)


def assigned_names(code: str) -> set[str]:
    """The names a cell's code binds at its top level (assignments, loops, with, imports, def, class), not those
    bound inside its functions, classes, lambdas or comprehensions."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return set()
    names, todo = set(), list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            todo += node.decorator_list
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        if not isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            todo += ast.iter_child_nodes(node)
    return names


def _relative(filename) -> str | None:
    """``helpers/<file>`` for a file of this helpers package, else None."""
    try:
        path = Path(filename).resolve()
    except (TypeError, ValueError, OSError):
        return None
    return path.relative_to(HELPERS.parent).as_posix() if path.is_relative_to(HELPERS) else None


def _sentence(where: str, error: SyntaxError) -> str:
    text = (error.text or "").strip()
    shown = f" (`{text}`)" if text and len(text) <= 80 else ""
    return f"✗ {where}, line {error.lineno}: {error.msg}{shown}; fix that line, then run this cell again"


def broken_files(shell=None) -> dict[str, SyntaxError]:
    """The loaded helpers modules whose file no longer compiles (``helpers/<file>`` -> the SyntaxError). For each,
    IPython's autoreload (when `shell` has it) is told the file already failed, so it does not print its own
    reload tracebacks; it tries again once the file changes."""
    reloader = _autoreloader(shell)
    broken = {}
    for name, module in list(sys.modules.items()):
        filename = getattr(module, "__file__", None)
        if not (name == "helpers" or name.startswith("helpers.")) or not filename or not filename.endswith(".py"):
            continue
        try:
            mtime = os.stat(filename).st_mtime
        except OSError:
            continue
        if _compiled.get(filename, (None,))[0] != mtime:
            try:
                with open(filename, "rb") as handle:
                    compile(handle.read(), filename, "exec", dont_inherit=True)
                _compiled[filename] = (mtime, None)
            except SyntaxError as error:
                _compiled[filename] = (mtime, error)
            except (OSError, ValueError):
                continue
        error = _compiled[filename][1]
        if error is not None:
            broken[_relative(filename) or filename] = error
            if reloader is not None:
                reloader.failed[filename] = mtime
    return broken


def _autoreloader(shell):
    magics = shell.magics_manager.registry.get("AutoreloadMagics") if shell is not None else None
    return getattr(magics, "_reloader", None)


def _wait(reason: str) -> str:
    """Remember why the running cell failed, for it and for the names it would have defined."""
    _waiting.append(reason)
    _reason_of.update(dict.fromkeys(_cell["names"], reason))
    return reason


def _one_line(shell, etype, value, tb, tb_offset=None):
    """IPython handler: one line, in place of the traceback, for an unfinished exercise's check, for the cells that
    wait for it, and for a helpers file that does not compile; any other error is shown as usual."""
    broken = broken_files(shell)
    if issubclass(etype, BrokenHelpersFile):
        line = str(value)
    elif issubclass(etype, SyntaxError) and _relative(getattr(value, "filename", None)):
        line = _sentence(_relative(value.filename), value)
        _cell["said_broken"] = True
    elif broken and issubclass(etype, (CheckFailed, ExerciseMissing, NameError)):
        line = _sentence(*next(iter(broken.items())))
        _cell["said_broken"] = True
    elif issubclass(etype, CheckFailed):
        line = f"✗ {value}"
    elif issubclass(etype, ExerciseMissing):
        line = f"⏸ this cell waits for {_wait(f'exercise {value.exercise.key} ({value.exercise.where})')}"
    elif issubclass(etype, NameError) and (_reason_of.get(getattr(value, "name", None)) or _waiting):
        reason = _wait(_reason_of.get(value.name) or _waiting[-1])
        line = f"⏸ this cell waits for {reason}: {value.name!r} comes from a cell that could not run yet"
    elif etype.__name__ == "CheckpointError":
        _wait(f"an earlier notebook's model ({value})")
        line = f"⏸ {value}"
    else:
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return None
    shell._showtraceback(etype, value, [line])
    return [line]


def _stop() -> None:
    """What a cell runs instead of its code while a loaded helpers file does not compile (see `_block_if_broken`)."""
    broken = broken_files(_shell())
    if broken:
        _cell["said_broken"] = True
        raise BrokenHelpersFile(_sentence(*next(iter(broken.items()))))


def _block_if_broken(lines: list[str]) -> list[str]:
    """IPython input transformer (cleanup stage, before autoreload's check): a cell becomes `_stop()` while a loaded
    helpers file does not compile, unless it starts with a magic or a shell command."""
    first = next((line.lstrip() for line in lines if line.strip()), "")
    if not first or first.startswith(("%", "!")) or not broken_files(_shell()):
        return lines
    return ["__import__('helpers.exercises', fromlist=['_stop'])._stop()\n"]


def _shell():
    from IPython import get_ipython
    return get_ipython()


def _before_cell(info=None):
    """pre_run_cell, ahead of autoreload's: the names the cell assigns; a broken helpers file silenced there."""
    shell = _shell()
    _cell["said_broken"] = False
    try:
        _cell["names"] = assigned_names(shell.transform_cell(getattr(info, "raw_cell", "") or ""))
    except Exception:  # never let the bookkeeping stop a cell
        _cell["names"] = set()
    broken_files(shell)


def _after_cell(result=None):
    """post_run_cell: a cell that ran clears the names it defined; while a helpers file is broken, a cell that did
    not already say so gets the sentence."""
    if getattr(result, "success", False):
        for name in _cell["names"]:
            _reason_of.pop(name, None)
    broken = broken_files(_shell())
    if broken and not _cell["said_broken"]:
        print(_sentence(*next(iter(broken.items()))), file=sys.stderr)


_before_cell.explain_missing = _after_cell.explain_missing = _block_if_broken.explain_missing = True


def explain_missing() -> None:
    """Register `_one_line` and the cell hooks with the running IPython kernel (a no-op outside IPython), and turn
    off autoreload's source-diffing reload where this IPython has one."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    from helpers.foundation.checkpoint_files import CheckpointError
    shell.set_custom_exc((CheckFailed, ExerciseMissing, NameError, CheckpointError, SyntaxError, BrokenHelpersFile),
                         _one_line)
    deduper = getattr(_autoreloader(shell), "deduper_reloader", None)
    if deduper is not None:
        deduper.enabled = False
    for event, hook, first in (("pre_run_cell", _before_cell, True), ("post_run_cell", _after_cell, False)):
        callbacks = shell.events.callbacks[event]
        callbacks[:] = [c for c in callbacks if not getattr(c, "explain_missing", False)]
        if first:
            callbacks.insert(0, hook)
        else:
            callbacks.append(hook)
    cleanup = shell.input_transformers_cleanup
    cleanup[:] = [t for t in cleanup if not getattr(t, "explain_missing", False)] + [_block_if_broken]
