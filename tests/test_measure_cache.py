"""helpers.measure.cache: a stored measurement is reused only while its network, inputs, settings and the
sampling code are unchanged; anything else measures again."""
import json
import shutil

import pytest
import torch

from helpers.foundation.checkpoint_files import CheckpointError
from helpers.measure import cache


class Counter:
    """A measurement that counts its calls and returns a value depending on the call number."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return {"Frechet distance": 10.0 * self.calls, "confident > 0.9": 0.5}


@pytest.fixture
def setup(tmp_path, monkeypatch):
    code = tmp_path / "code"
    shutil.copytree(cache.HELPERS, code, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "HELPERS", code)
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    return run, code, torch.nn.Linear(3, 2), torch.randn(4, 1, 8, 8)


def test_second_call_reads_the_file(setup):
    run, _, model, noise = setup
    measure = Counter()
    first = cache.cached(run, "epoch 10", measure, model, noise, 50, "euler")
    again = cache.cached(run, "epoch 10", measure, model, noise, 50, "euler")
    assert measure.calls == 1 and first == again == {"Frechet distance": 10.0, "confident > 0.9": 0.5}
    stored = json.loads((run / "measurements.json").read_text())
    assert stored["epoch 10"]["value"] == first


def test_changed_weights_steps_noise_or_sampler_source_recompute(setup):
    run, code, model, noise = setup
    measure = Counter()
    cache.cached(run, "m", measure, model, noise, 50, "euler")
    with torch.no_grad():
        model.weight[0, 0] += 1e-6                      # a changed checkpoint
    cache.cached(run, "m", measure, model, noise, 50, "euler")
    assert measure.calls == 2
    cache.cached(run, "m", measure, model, noise, 20, "euler")   # changed steps
    assert measure.calls == 3
    cache.cached(run, "m", measure, model, noise + 1, 20, "euler")  # other noise
    assert measure.calls == 4
    sampler = code / "samplers.py"
    sampler.write_text(sampler.read_text().replace("return x - h * velocity(x, t, labels)",
                                                   "return x - 0.5 * h * velocity(x, t, labels)"))
    value = cache.cached(run, "m", measure, model, noise + 1, 20, "euler")
    assert measure.calls == 5 and value["Frechet distance"] == 50.0


def test_docstring_and_comment_edits_keep_the_cache(setup):
    run, code, model, noise = setup
    measure = Counter()
    cache.cached(run, "m", measure, model, noise, 50)
    guidance = code / "guidance.py"
    guidance.write_text('"""Another docstring."""\n# a comment\n' + guidance.read_text().split('"""', 2)[2])
    cache.cached(run, "m", measure, model, noise, 50)
    assert measure.calls == 1


def test_labels_are_separate_and_a_corrupt_file_is_measured_again(setup):
    run, _, model, noise = setup
    measure = Counter()
    cache.cached(run, "a", measure, model, 1)
    cache.cached(run, "b", measure, model, 2)
    assert set(json.loads((run / "measurements.json").read_text())) == {"a", "b"}
    (run / "measurements.json").write_text("{not json")
    cache.cached(run, "a", measure, model, 1)
    assert measure.calls == 3


def test_bad_measurements_and_inputs_are_refused_and_nothing_is_written(setup):
    run, _, model, _ = setup
    with pytest.raises(ValueError, match="non-finite Frechet distance"):
        cache.cached(run, "m", lambda: {"Frechet distance": float("nan")}, model)
    assert not (run / "measurements.json").exists()
    with pytest.raises(TypeError, match="networks, tensors or JSON values"):
        cache.cached(run, "m", lambda: {"x": 1.0}, object())
    with pytest.raises(CheckpointError, match="no trained model at"):
        cache.cached(run / "missing", "m", lambda: {"x": 1.0})
    with pytest.raises(ValueError, match="non-empty label"):
        cache.cached(run, "", lambda: {"x": 1.0})


def test_sample_quality_is_measured_once_per_setting(setup, monkeypatch):
    run, _, _, noise = setup
    calls = []
    monkeypatch.setattr(cache.metrics, "sample_quality",
                        lambda classifier, samples, features, labels=None: calls.append(samples) or {"fd": 1.0})
    velocity = lambda x, t, labels=None: x  # noqa: E731  (a velocity of the sampler's signature)
    network, classifier, features = torch.nn.Linear(2, 2), torch.nn.Linear(2, 3), torch.zeros(5, 3)
    args = (run, "euler 4", velocity, [network], noise, 4, classifier, features)
    assert cache.sample_quality(*args) == {"fd": 1.0}
    cache.sample_quality(*args)
    cache.sample_quality(*args, settings=(2.0,))
    assert len(calls) == 2 and torch.allclose(calls[0], noise * 0.75 ** 4)  # four Euler steps of v = x
