"""How good are a trained run's samples? One call, kept beside the checkpoint it measures.

    quality.of_run(runs.FLOW_TIME_COURSE, epoch=5, samples=250, seed=2, steps=50)
    quality.of_run(runs.FLOW_TIME_COURSE, epoch=10, guide_epoch=1, w=2, samples=250, seed=2, steps=50)
    quality.of_run(runs.FLOW_CLASS_DECAY, gamma=5, per_class=20, seed=2, steps=10, method="heun")

`of_run` loads the run's weights after `epoch` (its last by default), draws the starting noises
x1 ~ N(0, I) with `seed` (`samples` of them; for a class-conditioned run `per_class` for each digit, labelled
0, 0, ..., 1, 1, ...), integrates them from t = 1 to t = 0 (`helpers.samplers.integrate`, `steps` Euler or Heun
steps) with the velocity the settings ask for:

- the model alone;
- autoguided by the same run's weights after `guide_epoch`, with weight `w` (`helpers.guidance.autoguided`);
- for a class-conditioned run, classifier-free guided with scale `gamma` (`helpers.guidance.classifier_free`);

and measures the samples with the project's digit classifier of the same profile against the MNIST test set
(`helpers.measure.metrics.sample_quality`): the accuracy (class-conditioned runs), the fraction classified with
confidence above 0.9, and the Fréchet distance of the classifier's features.

Measuring takes seconds to minutes, so the result is kept in the run's ``measurements.json``
(`helpers.measure.cache`) under a label spelled from the settings, e.g. "epoch 10, autoguided by epoch 1,
w = 2, euler, 50 steps, 250 samples, seed 2". It is read back while its inputs are the same ones, by identity:
the checkpoint files of the model and its guide, the classifier's checkpoint file, the MNIST test images file,
the seed, the counts, steps, sampler and guidance, and the sampling and measuring code (`cache.CODE`). A rerun
therefore prints the stored figure in milliseconds, on this machine or any other with the same files, while a
retrained checkpoint (``WORKBOOK_RETRAIN=1``), another seed or an edited sampler measures again. The stored
figure was computed on some CPU; another CPU may round the last of its 16 digits differently, never a printed one.
"""
from pathlib import Path

import torch

from helpers import guidance, samplers
from helpers.foundation import checkpoint_files, data, validate
from helpers.measure import cache, metrics
from helpers.training import profile as profiles
from helpers.training import runs

DIGITS = 10  # the classifier reads MNIST digits: a class-conditioned run must draw them, labels 0 to 9
REFERENCE_IMAGES = "t10k-images-idx3-ubyte"  # the MNIST test images, under data.RAW_DIR

_classifiers: dict[tuple, torch.nn.Module] = {}
_references: dict[tuple, torch.Tensor] = {}


def _checkpoint(folder: Path, epoch: int | None) -> tuple[Path, int]:
    """(the file holding the run's weights after `epoch`, that epoch): a kept snapshot, else ``last.pt``."""
    if epoch is not None:
        epoch = validate.count(epoch, "epoch")
        snapshot = runs.snapshot_path(folder, epoch)
        if snapshot.exists():
            return snapshot, epoch
    last = folder / "last.pt"
    return last, checkpoint_files.load(last)["epoch"] if epoch is None else epoch


def _classifier_file(profile: str, device) -> Path:
    """The classifier's finished checkpoint, trained (or finished) first by `metrics.trained_classifier` if it
    is missing or unfinished."""
    file = runs.folder(runs.CLASSIFIER, profile) / "last.pt"
    state = checkpoint_files.load(file) if file.exists() else None
    if state is None or state["epoch"] < state["config"]["train"]["epochs"]:
        _loaded_classifier(profile, device)
    return file


def _loaded_classifier(profile: str, device) -> torch.nn.Module:
    """The profile's classifier on `device` (loaded once per checkpoint file)."""
    file = runs.folder(runs.CLASSIFIER, profile) / "last.pt"
    memo = (profile, str(device), cache.file_digest(file)) if file.exists() else None
    if memo not in _classifiers:
        classifier = metrics.trained_classifier(device, profile)
        memo = (profile, str(device), cache.file_digest(file))
        _classifiers[memo] = classifier
    return _classifiers[memo]


def _reference_file() -> Path:
    file = data.RAW_DIR / REFERENCE_IMAGES
    if not file.exists():
        data.ensure_mnist()
    return file


def _reference_features(classifier: torch.nn.Module, classifier_file: Path) -> torch.Tensor:
    """The classifier's features of the MNIST test images (computed once per classifier and device)."""
    memo = (cache.file_digest(classifier_file), cache.file_digest(_reference_file()),
            str(next(classifier.parameters()).device))
    if memo not in _references:
        images, _ = data.load_mnist("test")
        _references[memo], _ = metrics.classify(classifier, images)
    return _references[memo]


def of_run(run: str, *, steps: int, seed: int, epoch: int | None = None, samples: int | None = None,
           per_class: int | None = None, method: str = "euler", gamma: float | None = None,
           guide_epoch: int | None = None, w: float | None = None, profile: str | None = None,
           device="cpu") -> dict:
    """The quality of run `run`'s samples (see the module's docstring), measured once and then read back.

    A time-only run takes `samples` and, for autoguidance, both `guide_epoch` and `w`; a class-conditioned
    run takes `per_class` and `gamma`. `profile` defaults to the active one (``WORKBOOK_PROFILE``). Returns
    ``{"accuracy": ..., "confident > 0.9": ..., "Frechet distance": ...}`` (accuracy for class-conditioned
    runs only).
    """
    profile = profiles.check_profile(profile)
    folder = runs.folder(run, profile)
    steps = validate.count(steps, "steps")
    seed = validate.count(seed, "seed", minimum=0)
    if method not in samplers.METHODS:
        raise ValueError(f"method must be one of {', '.join(samplers.METHODS)}, not {method!r}.")
    model = runs.load(folder, epoch=epoch, device=device)
    model_file, epoch = _checkpoint(folder, epoch)
    classes = model.config.get("num_classes", 0)
    how, guide_file = [f"epoch {epoch}"], None
    if classes:
        if classes != DIGITS:
            raise ValueError(f"{run} draws {classes} classes, but the project's classifier reads the {DIGITS} "
                             "MNIST digits: measure a digit run.")
        if samples is not None or guide_epoch is not None or w is not None or per_class is None or gamma is None:
            raise ValueError(f"{run} is class-conditioned: give per_class (samples of each digit) and gamma (the "
                             "classifier-free guidance scale), and no samples, guide_epoch or w.")
        per_class = validate.count(per_class, "per_class")
        gamma = validate.finite_number(gamma, "gamma")
        count, labels = DIGITS * per_class, torch.arange(DIGITS).repeat_interleave(per_class)
        velocity = guidance.classifier_free(model, gamma)
        how.append(f"γ = {gamma:g}")
        amount = f"{per_class} per class"
    else:
        if samples is None or per_class is not None or gamma is not None or (guide_epoch is None) != (w is None):
            raise ValueError(f"{run} is time-only: give samples (how many to draw), and for autoguidance both "
                             "guide_epoch and w; per_class and gamma are for class-conditioned runs.")
        count, labels = validate.count(samples, "samples"), None
        velocity = model
        if guide_epoch is not None:
            w = validate.finite_number(w, "w")
            guide_file, guide_epoch = _checkpoint(folder, guide_epoch)
            guide = runs.load(folder, epoch=guide_epoch, device=device)
            velocity = guidance.autoguided(model, guide, w)
            how.append(f"autoguided by epoch {guide_epoch}, w = {w:g}")
        amount = f"{count} samples"
    shape = runs.image_shape(model)
    label = ", ".join([*how, method, f"{steps} steps", amount, f"seed {seed}"])
    classifier_file = _classifier_file(profile, device)
    inputs = {"model": model_file, "guide": guide_file, "classifier": classifier_file,
              "reference images": _reference_file(),
              "noise": {"seed": seed, "count": count, "shape": " x ".join(map(str, shape))},
              "labels": None if labels is None else {"per_class": per_class},
              "steps": steps, "method": method, "gamma": gamma, "w": w}

    def measure() -> dict:
        classifier = _loaded_classifier(profile, device)
        noise = torch.randn(count, *shape, generator=torch.Generator().manual_seed(seed))
        moved = None if labels is None else labels.to(device)
        images = samplers.integrate(velocity, noise.to(device), steps, moved, method).cpu()
        return metrics.sample_quality(classifier, images, _reference_features(classifier, classifier_file), labels)

    return cache.cached(folder, label, measure, inputs)
