"""The one runtime switch: `WORKBOOK_PROFILE` picks the budgets of every notebook.

- ``smoke``: just enough to execute every cell quickly (nbval on a 2-core CPU); figures are not meaningful.
- ``cpu``:   real, recognisable results on a 2-core laptop in minutes.
- ``full``:  the assignment's hyperparameters, meant for a GPU.
- ``smoke-deepfloyd``: smoke, with notebook 04 on a tiny random DeepFloyd IF (its DeepFloyd branch under test).

Unset, the profile is ``full`` when CUDA is available and ``cpu`` otherwise. This module is the only
place that reads the variable; every notebook asks it for its settings and names the profile in
every figure title. `WORKBOOK_RETRAIN=1` asks every notebook to train again instead of loading
a finished checkpoint.

A profile passed explicitly (``settings("ideal", "cpu")``, a benchmark's ``--profile``) must be spelled
exactly as in PROFILES: it names the folder ``checkpoints/<profile>/``, so ``CPU`` is refused rather than
trained into a second folder.
"""
import os
from types import SimpleNamespace

import torch

from helpers.guidance import CFG_SCALE

PROFILES = ("smoke", "cpu", "full", "smoke-deepfloyd")
# A derived profile is its base's settings with its own few on top: ``smoke-deepfloyd`` is smoke with
# notebook 04 on the tiny random DeepFloyd IF of helpers/backends/tiny_deepfloyd.py, the test of its DeepFloyd branch.
BASES = {"smoke-deepfloyd": "smoke"}

# Per-notebook budgets. A key missing from a profile falls back to the ``full`` value. `figure_epochs` are the
# epochs whose weights figures show, as fractions of the run (0 = the first epoch); `settings` turns them into
# `snapshot_epochs` for the profile's number of epochs. Likewise `compare_length`, the length of notebook 02's
# longer-training comparison run as a multiple of the run, becomes `compare_epochs`.
SETTINGS = {
    "one_step_denoiser": {
        "full": dict(hidden=128, batch_size=256, lr=1e-4, epochs=5, train_images=60_000, sigma=0.5,
                     figure_epochs=(0, 1), attention_hidden=64),
        # cpu: the homework's attention UNet at D = 16 keeps its two runs' shipped checkpoints near 1 MB each
        "cpu": dict(hidden=32, lr=1e-3, epochs=5, train_images=12_000, attention_hidden=16),
        "smoke": dict(hidden=8, lr=1e-3, epochs=2, train_images=512, attention_hidden=8),
    },
    # Flow matching (notebooks 02 and 03). `train_images` is the subset one epoch goes through: the cpu
    # profile keeps the assignment's epoch numbers (1, 5, 10) by using 10,000-image epochs (6,000 for the
    # attention UNet), so each notebook trains in under 30 minutes on 2 cores. `full` is the
    # assignment's: D = 64, batch 64, Adam 1e-2 decayed ten-fold over the run, 10 epochs.
    "flow_time": {
        "full": dict(hidden=64, batch_size=64, lr=1e-2, lr_decay_over_run=0.1, epochs=10, train_images=60_000,
                     attention_hidden=64, attention_lr=2e-3, attention_train_images=60_000,
                     figure_epochs=(0, 0.5, 1), compare_length=2, steps=50, metric_samples=1000),
        # cpu: the comparison run is half as long (5 vs 10 epochs), as twice as long would not fit in 30 minutes
        "cpu": dict(hidden=32, batch_size=64, lr=2e-3, train_images=10_000, compare_length=0.5,
                    attention_hidden=32, attention_lr=2e-3, attention_train_images=6_000, metric_samples=250),
        "smoke": dict(hidden=8, batch_size=64, lr=2e-3, epochs=2, train_images=256, compare_length=0.5,
                      attention_hidden=8, attention_train_images=256, steps=5, metric_samples=50),
    },
    "flow_class": {
        "full": dict(hidden=64, batch_size=64, lr=1e-2, lr_decay_over_run=0.1, epochs=10, train_images=60_000,
                     clip_lr=1e-3, grad_clip=1.0, p_uncond=0.1, guidance=CFG_SCALE, figure_epochs=(0, 0.5, 1), steps=50,
                     metric_samples_per_class=100, guidance_sweep=(1.0, 3.0, 5.0, 7.0), step_sweep=(5, 10, 20, 50),
                     attention_hidden=64, attention_lr=2e-3, attention_train_images=60_000),
        "cpu": dict(hidden=32, batch_size=64, lr=2e-3, clip_lr=1e-3, train_images=10_000,
                    metric_samples_per_class=20, attention_hidden=32, attention_train_images=6_000),
        "smoke": dict(hidden=8, batch_size=64, lr=2e-3, clip_lr=1e-3, epochs=2, train_images=256, steps=5,
                      attention_hidden=8, attention_train_images=256,
                      metric_samples_per_class=2, guidance_sweep=(1.0, 5.0), step_sweep=(2, 5)),
    },
    # Notebook 04's offline stand-in (helpers/backends/standin.py): notebook 03's model and loss on MNIST digits plus
    # Fashion-MNIST items, 20 classes; `train_images` alternate digit, item, digit, ...
    "standin": {
        "full": dict(hidden=64, batch_size=64, lr=1e-2, lr_decay_over_run=0.1, epochs=10, train_images=120_000,
                     p_uncond=0.1),
        "cpu": dict(hidden=32, lr=2e-3, train_images=16_000),
        "smoke": dict(hidden=8, lr=2e-3, epochs=2, train_images=512),
    },
    # Ideal flow machines (notebook 05): the machines read `machine_train_images` of the UNets' training
    # images; the ELS cost grows with noises x images (benchmarks/els_cost.py).
    "ideal": {
        "full": dict(machine_train_images=10_000, noises=100, shown=6, steps=20, calibration_noises=9,
                     candidates=tuple(range(3, 32, 2))),
        "cpu": dict(machine_train_images=2_000, noises=11, calibration_noises=5,
                    candidates=(3, 5, 7, 9, 11, 13, 15, 19, 23, 27, 31)),
        "smoke": dict(machine_train_images=16, noises=6, steps=4, calibration_noises=2, candidates=(3, 7, 11)),
    },
    # Diffusion sampling tricks (notebook 04): every run uses the strided timesteps 990, 960, ..., 0; the
    # profiles differ in how many samples the measured figures use (`per_class` per prompt for guidance,
    # `seeds` for the anagram, inpainting and hybrid readings).
    "tricks": {
        "full": dict(shown=5, per_class=100, seeds=20, guidance=7.0, backend="deepfloyd", part0_steps=(5, 20)),
        "cpu": dict(per_class=50),
        "smoke": dict(shown=2, per_class=2, seeds=2, part0_steps=(1, 2)),
        "smoke-deepfloyd": dict(backend="tiny-deepfloyd"),
    },
    "classifier": {
        "full": dict(width=32, batch_size=128, lr=2e-3, epochs=3, train_images=60_000),
        "smoke": dict(width=8, epochs=1, train_images=512),
    },
}


def current_profile() -> str:
    """Return the active profile name, validating `WORKBOOK_PROFILE` when it is set."""
    name = os.environ.get("WORKBOOK_PROFILE", "").strip().lower()
    if not name:
        return "full" if torch.cuda.is_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(
            f"WORKBOOK_PROFILE={name!r} is not a profile; use one of {', '.join(PROFILES)} "
            "(or unset it to choose automatically)."
        )
    return name


def check_profile(profile: str | None) -> str:
    """`profile` itself if it is one of PROFILES, the active profile if it is None; anything else is refused."""
    if profile is None:
        return current_profile()
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r} is not one of {', '.join(PROFILES)}: pass one of those names, "
                         "in lower case (it names the folder checkpoints/<profile>/).")
    return profile


TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def retrain_requested() -> bool:
    """True when `WORKBOOK_RETRAIN` is 1/true/yes/on, False when it is unset, empty or 0/false/no/off (any case):
    notebooks then ignore finished checkpoints."""
    value = os.environ.get("WORKBOOK_RETRAIN", "").strip().lower()
    if value not in TRUE_WORDS + FALSE_WORDS:
        raise ValueError(f"WORKBOOK_RETRAIN={value!r} is neither true nor false: set it to one of "
                         f"{'/'.join(TRUE_WORDS)} to retrain, or {'/'.join(FALSE_WORDS[1:])} (or unset it) not to.")
    return value in TRUE_WORDS


def settings(section: str, profile: str | None = None) -> SimpleNamespace:
    """Budgets of one notebook section for `profile` (default: the active one), with ``.profile`` set."""
    if section not in SETTINGS:
        raise KeyError(f"no settings for {section!r}; known sections: {', '.join(SETTINGS)}")
    profile = check_profile(profile)
    values = dict(SETTINGS[section]["full"])
    values.update(SETTINGS[section].get(BASES.get(profile), {}))
    values.update(SETTINGS[section].get(profile, {}))
    if "figure_epochs" in values:  # the epochs figures show, as fractions of the run: derived, never typed twice
        fractions = values.pop("figure_epochs")
        values["snapshot_epochs"] = tuple(sorted({max(1, round(f * values["epochs"])) for f in fractions}))
    if "compare_length" in values:
        values["compare_epochs"] = max(1, round(values.pop("compare_length") * values["epochs"]))
    return SimpleNamespace(profile=profile, **values)


def tag(profile: str | None = None) -> str:
    """The label every figure carries, e.g. ``[profile: cpu]``."""
    return f"[profile: {check_profile(profile)}]"
