"""The course's exercises: where each one lives, which check grades it, and what a missing one says.

An exercise is a region of a `helpers` file between nbgrader's solution markers (a line ``### BEGIN`` and a
line ``### END``, each followed by `` SOLUTION``; spelled apart here so that this file holds no region), with a
hint line right above the first: ``# Exercise 1.1 hint: <one line that points the way, not the code>``.

`python -m instructor student` replaces each region by a stub that raises `ExerciseMissing` (see
`instructor.edition`). In the student's notebooks, `explain_missing()` (run by the set-up cell) turns the
errors an unfinished exercise causes into one line each: the check cell of the exercise shows its hint,
and any later cell that needs it says which exercise it waits for instead of printing a traceback.
"""
from dataclasses import dataclass


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


# Why this kernel's cells could not run so far (exercises, or models an earlier notebook trains), latest last.
_waiting: list[str] = []


def _one_line(shell, etype, value, tb, tb_offset=None):
    """IPython handler: one line, in place of the traceback, for an unfinished exercise's check and for the
    cells that wait for it; any other error is shown as usual."""
    if issubclass(etype, CheckFailed):
        line = f"✗ {value}"
    elif issubclass(etype, ExerciseMissing):
        _waiting.append(f"exercise {value.exercise.key} ({value.exercise.where})")
        line = f"⏸ this cell waits for {_waiting[-1]}"
    elif _waiting and issubclass(etype, NameError):
        line = f"⏸ this cell waits for {_waiting[-1]}: {value.name!r} comes from a cell that could not run yet"
    elif etype.__name__ == "CheckpointError":
        _waiting.append(f"an earlier notebook's model ({value})")
        line = f"⏸ {value}"
    else:
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return None
    shell._showtraceback(etype, value, [line])
    return [line]


def explain_missing() -> None:
    """Register `_one_line` with the running IPython kernel (a no-op outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        from helpers.foundation.checkpoint_files import CheckpointError
        shell.set_custom_exc((CheckFailed, ExerciseMissing, NameError, CheckpointError), _one_line)
