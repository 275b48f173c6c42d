"""helpers.measure.cache and helpers.measure.quality: a stored measurement is reused while the identity of its
inputs (files, seeds, settings, code) is unchanged, on any machine; anything else, and any entry that fails its
check, measures again; concurrent writers lose nothing; a value that cannot be stored is still returned."""
import json
import multiprocessing
import shutil
from pathlib import Path

import pytest
import torch

from helpers.course_unet import ConditionalCourseUNet
from helpers.foundation.checkpoint_files import CheckpointError
from helpers.measure import cache, metrics, quality
from helpers.training import runs
from helpers.training.loop import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


class Counter:
    """A measurement that counts its calls and returns a value depending on the call number."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return {"Frechet distance": 10.0 * self.calls, "confident > 0.9": 0.5}


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A copy of helpers (the code the key reads), a run folder, and a checkpoint file in it."""
    code = tmp_path / "code"
    shutil.copytree(cache.HELPERS, code, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "HELPERS", code)
    run = tmp_path / "run"
    run.mkdir()
    checkpoint = run / "last.pt"
    torch.save({"w": torch.arange(4.0)}, checkpoint)
    return run, code, checkpoint


def stored(run: Path) -> dict:
    return json.loads((run / cache.FILE_NAME).read_text())


def test_second_call_reads_the_file(setup):
    run, _, checkpoint = setup
    measure = Counter()
    inputs = {"model": checkpoint, "seed": 2, "steps": 50, "method": "euler"}
    first = cache.cached(run, "epoch 10", measure, inputs)
    again = cache.cached(run, "epoch 10", measure, dict(inputs))
    assert measure.calls == 1 and first == again == {"Frechet distance": 10.0, "confident > 0.9": 0.5}
    entry = stored(run)["epoch 10"]
    assert entry["value"] == first and entry["inputs"]["model"] == {"file": "last.pt",
                                                                    "sha256": cache.file_digest(checkpoint)}


def test_changed_checkpoint_file_setting_seed_or_sampler_source_recompute(setup):
    run, code, checkpoint = setup
    measure = Counter()
    inputs = {"model": checkpoint, "seed": 2, "steps": 50}
    cache.cached(run, "m", measure, inputs)
    torch.save({"w": torch.arange(4.0) + 1e-6}, checkpoint)       # a retrained checkpoint
    cache.cached(run, "m", measure, inputs)
    assert measure.calls == 2
    cache.cached(run, "m", measure, {**inputs, "steps": 20})       # changed steps
    assert measure.calls == 3
    cache.cached(run, "m", measure, {**inputs, "steps": 20, "seed": 3})  # other noise
    assert measure.calls == 4
    sampler = code / "samplers.py"
    sampler.write_text(sampler.read_text().replace("return x - h * velocity(x, t, labels)",
                                                   "return x - 0.5 * h * velocity(x, t, labels)"))
    value = cache.cached(run, "m", measure, {**inputs, "steps": 20, "seed": 3})
    assert measure.calls == 5 and value["Frechet distance"] == 50.0


def test_docstring_and_comment_edits_and_a_moved_checkpoint_keep_the_cache(setup, tmp_path):
    run, code, checkpoint = setup
    measure = Counter()
    cache.cached(run, "m", measure, {"model": checkpoint, "steps": 50})
    guidance = code / "guidance.py"
    guidance.write_text('"""Another docstring."""\n# a comment\n' + guidance.read_text().split('"""', 2)[2])
    elsewhere = tmp_path / "clone" / "last.pt"  # the same file in another clone: only its name and bytes count
    elsewhere.parent.mkdir()
    shutil.copy(checkpoint, elsewhere)
    cache.cached(run, "m", measure, {"model": elsewhere, "steps": 50})
    assert measure.calls == 1


def test_labels_are_separate_and_an_unreadable_file_is_measured_again(setup, capsys):
    run, _, _ = setup
    measure = Counter()
    cache.cached(run, "a", measure, {"x": 1})
    cache.cached(run, "b", measure, {"x": 2})
    assert set(stored(run)) == {"a", "b"}
    (run / cache.FILE_NAME).write_text("{not json")
    cache.cached(run, "a", measure, {"x": 1})
    assert measure.calls == 3 and set(stored(run)) == {"a"}
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("damage", ["nan", "edited", "text", "no check"])
def test_a_damaged_entry_is_measured_again_with_one_warning_and_never_served(setup, capsys, damage):
    run, _, checkpoint = setup
    measure = Counter()
    inputs = {"model": checkpoint}
    cache.cached(run, "m", measure, inputs)
    content = stored(run)
    entry = content["m"]
    if damage == "nan":
        entry["value"]["Frechet distance"] = float("nan")
    elif damage == "edited":  # edited by hand while its key stays valid
        entry["value"]["Frechet distance"] = 1.0
    elif damage == "text":
        entry["value"]["Frechet distance"] = "10.0"
    else:
        del entry["check"]
    (run / cache.FILE_NAME).write_text(json.dumps(content))
    value = cache.cached(run, "m", measure, inputs)
    assert measure.calls == 2 and value["Frechet distance"] == 20.0
    warning = capsys.readouterr().err
    assert warning.startswith("warning: the stored measurement 'm'") and warning.count("\n") == 1
    assert stored(run)["m"]["value"] == value  # the recomputed value replaced the damaged one
    assert cache.cached(run, "m", measure, inputs) == value and measure.calls == 2


def test_a_value_that_cannot_be_stored_is_returned_with_one_warning(setup, capsys):
    run, _, _ = setup
    (run / cache.FILE_NAME).mkdir()  # something that is no file stands where the cache should be written
    value = cache.cached(run, "m", Counter(), {"x": 1})
    assert value == {"Frechet distance": 10.0, "confident > 0.9": 0.5}
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("warning: the measurement 'm' was computed but not stored")
    assert len(lines) == 2 and not list(run.glob(".*.tmp"))  # unreadable, then unstorable; no temporary left


def test_bad_measurements_and_inputs_are_refused_and_nothing_is_written(setup):
    run, _, _ = setup
    with pytest.raises(ValueError, match="non-finite Frechet distance"):
        cache.cached(run, "m", lambda: {"Frechet distance": float("nan")}, {})
    assert not (run / cache.FILE_NAME).exists()
    with pytest.raises(TypeError, match="name their identity, not a Tensor"):
        cache.cached(run, "m", lambda: {"x": 1.0}, {"features": torch.zeros(3)})
    with pytest.raises(TypeError, match="name their identity, not a Linear"):
        cache.cached(run, "m", lambda: {"x": 1.0}, {"network": torch.nn.Linear(2, 2)})
    with pytest.raises(TypeError, match="files .pathlib.Path. or JSON values"):
        cache.cached(run, "m", lambda: {"x": 1.0}, {"what": object()})
    with pytest.raises(CheckpointError, match="no trained model at"):
        cache.cached(run / "missing", "m", lambda: {"x": 1.0}, {})
    with pytest.raises(ValueError, match="non-empty label"):
        cache.cached(run, "", lambda: {"x": 1.0}, {})
    with pytest.raises(CheckpointError, match="no file at"):
        cache.cached(run, "m", lambda: {"x": 1.0}, {"model": run / "absent.pt"})


def _write_many(folder: str, prefix: str, count: int) -> None:
    for i in range(count):
        cache.cached(folder, f"{prefix} {i}", lambda: {"x": float(i)}, {"i": i})


@pytest.mark.slow
def test_two_processes_writing_the_same_file_lose_no_entry(tmp_path):
    """400 writes from two processes at once: every entry is found afterwards."""
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_many, args=(str(tmp_path), prefix, 200)) for prefix in ("a", "b")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert [writer.exitcode for writer in writers] == [0, 0]
    found = stored(tmp_path)
    assert len(found) == 400 and all(found[f"{p} {i}"]["value"] == {"x": float(i)} for p in "ab" for i in range(200))


def test_weights_digest_still_matches_the_shipped_locality_calibration():
    """Notebook 05's shipped calibration was stored with the weights digest of the course UNet: unchanged."""
    calibration = ROOT / "checkpoints" / "cpu" / runs.LOCALITY / "calibration.pt"
    network = runs.load(runs.folder(runs.FLOW_TIME_COURSE, "cpu"))
    assert torch.load(calibration, weights_only=True)["config"]["weights"] == cache.weights_digest(network)


# ----------------------------------------------------------------------------- quality.of_run, on tiny runs

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """checkpoints/smoke/ with the smoke classifier, a tiny time-only run (snapshot after epoch 1) and a tiny
    class-conditioned run."""
    root = tmp_path_factory.mktemp("checkpoints")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runs, "ROOT", root)
        metrics.trained_classifier("cpu", "smoke")
        images, labels = torch.rand(32, 1, 32, 32) * 2 - 1, torch.arange(32) % 10
        config = TrainConfig(epochs=2, batch_size=16, lr=1e-3, seed=0)
        train(ConditionalCourseUNet(hidden=4, image_size=32), lambda m, b: m(b[0], torch.rand(len(b[0])))
              .pow(2).mean(), (images,), config, runs.folder("time", "smoke"), keep_epochs=(1,), progress=False)
        train(ConditionalCourseUNet(hidden=4, image_size=32, num_classes=10),
              lambda m, b: m(b[0], torch.rand(len(b[0])), b[1]).pow(2).mean(), (images, labels), config,
              runs.folder("class", "smoke"), progress=False)
    return root


@pytest.fixture
def checkpoints(world, tmp_path, monkeypatch):
    """A fresh copy of the world (the same files, so the same keys), as runs.ROOT."""
    root = tmp_path / "checkpoints"
    shutil.copytree(world, root)
    monkeypatch.setattr(runs, "ROOT", root)
    return root


def counting(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


TIME = dict(samples=8, seed=2, steps=3, profile="smoke")


@pytest.mark.slow
def test_of_run_measures_once_then_reads_back(checkpoints, monkeypatch):
    sampled = counting(monkeypatch, quality.samplers, "integrate")
    first = quality.of_run("time", epoch=2, **TIME)
    assert set(first) == {"confident > 0.9", "Frechet distance"} and len(sampled) == 1
    assert quality.of_run("time", **TIME) == first and len(sampled) == 1  # epoch None is the last, epoch 2
    entry = stored(checkpoints / "smoke" / "time")["epoch 2, euler, 3 steps, 8 samples, seed 2"]
    assert entry["inputs"]["noise"] == {"seed": 2, "count": 8, "shape": "1 x 32 x 32"}
    assert entry["inputs"]["reference images"]["file"] == quality.REFERENCE_IMAGES


@pytest.mark.slow
def test_a_cache_made_on_one_machine_hits_where_features_round_differently(checkpoints, monkeypatch):
    """The committed figure must be served where the classifier's features differ in their last bit."""
    first = quality.of_run("time", epoch=2, **TIME)
    quality._references.clear()  # a new session on another machine
    original = metrics.classify
    classified = []

    def other_machine(classifier, images, batch_size=1000):
        classified.append(1)
        features, probabilities = original(classifier, images, batch_size)
        return torch.nextafter(features, torch.full_like(features, float("inf"))), probabilities

    monkeypatch.setattr(metrics, "classify", other_machine)
    sampled = counting(monkeypatch, quality.samplers, "integrate")
    assert quality.of_run("time", epoch=2, **TIME) == first
    assert classified == [] and sampled == []  # served: nothing was measured again
    again = quality.of_run("time", epoch=2, **{**TIME, "seed": 3})  # a real miss measures on this machine
    assert classified and sampled and again != first


@pytest.mark.slow
def test_another_epoch_seed_guide_or_retrained_checkpoint_measures_again(checkpoints, monkeypatch):
    sampled = counting(monkeypatch, quality.samplers, "integrate")
    quality.of_run("time", epoch=2, **TIME)
    quality.of_run("time", epoch=1, **TIME)
    quality.of_run("time", epoch=2, **{**TIME, "seed": 5})
    guided = quality.of_run("time", epoch=2, guide_epoch=1, w=2, **TIME)
    assert len(sampled) == 4 and set(guided) == {"confident > 0.9", "Frechet distance"}
    labels = set(stored(checkpoints / "smoke" / "time"))
    assert "epoch 2, autoguided by epoch 1, w = 2, euler, 3 steps, 8 samples, seed 2" in labels
    last = checkpoints / "smoke" / "time" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["model"] = {k: v + 1e-3 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, last)  # retrained
    quality.of_run("time", epoch=2, **TIME)
    assert len(sampled) == 5


@pytest.mark.slow
def test_class_conditioned_runs_are_measured_per_class_with_gamma(checkpoints):
    q = quality.of_run("class", gamma=3, per_class=2, seed=2, steps=2, method="heun", profile="smoke")
    assert set(q) == {"accuracy", "confident > 0.9", "Frechet distance"} and 0 <= q["accuracy"] <= 1
    assert "epoch 2, γ = 3, heun, 2 steps, 2 per class, seed 2" in stored(checkpoints / "smoke" / "class")


@pytest.mark.parametrize("run, settings, message", [
    ("time", dict(gamma=2, samples=8), "is time-only: give samples"),
    ("time", dict(samples=8, guide_epoch=1), "for autoguidance both guide_epoch and w"),
    ("class", dict(per_class=2), "is class-conditioned: give per_class"),
    ("class", dict(samples=8, gamma=2), "is class-conditioned"),
    ("time", dict(samples=8, method="rk4"), "method must be one of euler, heun"),
    ("time", dict(samples=8, epoch=7), "kept no weights after epoch 7"),
    ("missing", dict(samples=8), "no trained model at"),
])
@pytest.mark.slow
def test_wrong_settings_get_one_sentence(checkpoints, run, settings, message):
    with pytest.raises((ValueError, CheckpointError), match=message) as error:
        quality.of_run(run, **{"seed": 2, "steps": 2, "profile": "smoke", **settings})
    assert "\n" not in str(error.value)
