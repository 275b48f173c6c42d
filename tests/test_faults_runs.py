"""Fault probe of runs, training, sampling and the networks' inputs: each bad input gets one sentence that says
what was wrong and how to fix it, a nonzero exit from the CLI, and no file lost, corrupted or half-written."""
import math

import pytest
import torch

from helpers import flow_matching, guidance, samplers
from helpers.attention_unet import AttentionUNet
from helpers.course_unet import ConditionalCourseUNet, CourseUNet
from helpers.foundation import checkpoint_files as ckpt
from helpers.training import runs
from helpers.training.loop import TrainConfig, train
from instructor import sample


def tiny_run(folder, num_classes=0, epochs=2, keep_epochs=(1,)):
    torch.manual_seed(0)
    model = ConditionalCourseUNet(hidden=4, image_size=32, num_classes=num_classes)
    batch = (torch.rand(8, 1, 32, 32) * 2 - 1, torch.randint(0, 10, (8,)))[: 2 if num_classes else 1]
    train(model, flow_matching.training_loss(), batch, TrainConfig(epochs=epochs, batch_size=4, lr=1e-3), folder,
          progress=False, keep_epochs=keep_epochs)
    return folder


@pytest.fixture(scope="module")
def time_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs") / "time")


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("runs") / "class", num_classes=10)


def cli_error(capsys, argv) -> str:
    """Run the sampling CLI, expect a nonzero exit, return its one-line message."""
    with pytest.raises(SystemExit) as exit_info:
        sample.main([str(a) for a in argv])
    assert exit_info.value.code != 0
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Traceback" not in message
    return message


# --- the sampling CLI -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_out_is_checked_before_sampling_and_no_temporary_file_is_left(time_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(samplers, "generate", lambda *a, **k: pytest.fail("sampled before checking --out"))
    assert "is a folder" in cli_error(capsys, [time_run, "--n", 2, "--out", tmp_path])
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file, not a folder" in cli_error(capsys, [time_run, "--n", 2, "--out", a_file / "s.pt"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_failed_write_removes_its_temporary_file(tmp_path, monkeypatch):
    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        ckpt.save_atomic({"epoch": 2}, tmp_path / "samples.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--n", 2, "--guidance", 3], "has no classifier-free guidance"),
    (["--per-class", 2], "time-only: give --n N"),
    (["--n", -5], "--n must be at least 1"),
    (["--n", 0], "--n must be at least 1"),
    (["--n", 1_000_000_000], "over half of this machine's"),
    (["--n", 2, "--steps", 0], "--steps must be at least 1"),
    (["--n", 2, "--steps", -3], "--steps must be at least 1"),
    (["--n", 2, "--guide-epoch", 1, "--guidance", "nan"], "--guidance must be a finite number"),
    (["--n", 2, "--guide-epoch", 1, "--guidance", "inf"], "--guidance must be a finite number"),
    (["--n", 2, "--guide-epoch", 7, "--guidance", 2], "kept no weights after epoch 7: it kept those after epochs [1]"),
])
@pytest.mark.slow
def test_time_only_run_refuses_bad_arguments(time_run, tmp_path, capsys, argv, message):
    assert message in cli_error(capsys, [time_run, *argv, "--out", tmp_path / "s.pt"])
    assert not (tmp_path / "s.pt").exists()


@pytest.mark.parametrize("argv, message", [
    (["--per-class", -1], "--per-class must be at least 1"),
    (["--n", 3], "class-conditioned: give --per-class N"),
    (["--per-class", 1, "--guidance", "nan"], "--guidance must be a finite number"),
])
@pytest.mark.slow
def test_class_run_refuses_bad_arguments(class_run, tmp_path, capsys, argv, message):
    assert message in cli_error(capsys, [class_run, *argv, "--out", tmp_path / "s.pt"])
    assert not (tmp_path / "s.pt").exists()


def test_a_run_that_is_no_flow_model_is_named(tmp_path, capsys):
    denoiser = CourseUNet(hidden=4, image_size=32)
    train(denoiser, lambda model, batch: model(batch[0]).pow(2).mean(), (torch.rand(4, 1, 32, 32),),
          TrainConfig(epochs=1, batch_size=4, lr=1e-3), tmp_path / "denoiser", progress=False)
    message = cli_error(capsys, [tmp_path / "denoiser", "--n", 2, "--out", tmp_path / "s.pt"])
    assert "holds a CourseUNet, not a flow-matching model" in message


@pytest.mark.slow
def test_sampling_a_snapshot_file_samples_that_epoch(time_run, tmp_path):
    sample.main([str(time_run / "epoch_001.pt"), "--n", "2", "--steps", "2", "--out", str(tmp_path / "e1.pt")])
    images = torch.load(tmp_path / "e1.pt", weights_only=True)["images"]
    expected = samplers.generate(runs.load(time_run, epoch=1), 2, (1, 32, 32), 2, seed=0)
    assert torch.equal(images, expected) and bool(torch.isfinite(images).all())


@pytest.mark.slow
def test_non_finite_samples_are_never_written(time_run, tmp_path, capsys, monkeypatch):
    model = runs.load(time_run)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    monkeypatch.setattr(runs, "load", lambda *a, **k: model)
    with pytest.raises(SystemExit) as exit_info:
        sample.main([str(time_run), "--n", "2", "--steps", "2", "--out", str(tmp_path / "s.pt")])
    assert exit_info.value.code == 1 and "non-finite values" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- loading runs -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_misleading_advice_is_gone(time_run, tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda' is not available on this machine"):
            runs.load(time_run, device="cuda")
    junk = tmp_path / "last.pt"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ckpt.CheckpointError) as error:
        runs.load(junk)
    assert "weights_only=False" not in str(error.value) and "issue" not in str(error.value)
    with pytest.raises(ckpt.CheckpointError, match="holds no 'ema' weights"):
        runs.load(time_run, "ema", epoch=1)
    with pytest.raises(ValueError, match="weights must be 'model' or 'ema'"):
        runs.load(time_run, "best")


@pytest.mark.slow
def test_a_run_folder_with_a_dot_in_its_name_loads(tmp_path):
    folder = tiny_run(tmp_path / "denoiser_sigma0.5", epochs=1, keep_epochs=())
    assert runs.load(folder).config["name"] == "ConditionalCourseUNet"


def test_a_missing_run_names_the_notebook_that_trains_it(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="run notebook 03 first"):
        runs.load(tmp_path / "cpu" / runs.FLOW_CLASS_DECAY)


# --- the networks' inputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda c: ConditionalCourseUNet(hidden=4, image_size=8, num_classes=c),
                                  lambda c: AttentionUNet(hidden=8, image_size=8, num_classes=c)])
@pytest.mark.slow
def test_network_inputs(make):
    time_only, labelled = make(0).eval(), make(10).eval()
    x = torch.randn(2, 1, 8, 8)
    out = time_only(x, 0.5)  # t as a Python float
    assert torch.allclose(time_only(x.double(), torch.tensor(0.5)), out, atol=1e-6)  # float64 as numpy makes it
    for bad, message in [
        ((x.to(torch.uint8), 0.5), "float images in \\[-1, 1\\], got dtype torch.uint8"),
        ((x, 1.5), "the time t must be at most 1"),
        ((x, float("nan")), "the time t must be a finite number"),
        ((x, torch.rand(3)), "got 3 times for 2 images"),
        ((x, 0.5, torch.tensor([1, 2])), "is time-only: it takes no labels"),
    ]:
        with pytest.raises((ValueError, TypeError), match=message):
            time_only(*bad)
    for labels, message in [(torch.tensor([11, 1]), "takes labels 0 to 9"), (torch.tensor([-1, 1]), "takes labels 0 to 9"),
                            (torch.tensor([1.0, 2.0]), "whole numbers"), (torch.tensor([1, 2, 3]), "got 3 labels for 2"),
                            (None, "is class-conditioned: pass labels")]:
        with pytest.raises((ValueError, TypeError), match=message):
            labelled(x, 0.5, labels)
    assert labelled(x, 0.5, 3).shape == x.shape  # one label for the whole batch


def test_guidance_refuses_non_finite_scales():
    model = ConditionalCourseUNet(hidden=4, image_size=8, num_classes=10)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="must be a finite number"):
            guidance.classifier_free(model, bad)
        with pytest.raises(ValueError, match="must be a finite number"):
            guidance.autoguided(model, model, bad)


@pytest.mark.parametrize("steps, error, message", [(0, ValueError, "steps must be at least 1"),
                                                    (-3, ValueError, "steps must be at least 1"),
                                                    (2.5, TypeError, "steps must be a whole number")])
def test_integrate_refuses_bad_step_counts(steps, error, message):
    with pytest.raises(error, match=message):
        samplers.integrate(lambda x, t, labels=None: x, torch.zeros(1, 1, 2, 2), steps)


def test_integrate_checks_its_result_is_finite():
    with pytest.raises(FloatingPointError, match="non-finite values"):
        samplers.integrate(lambda x, t, labels=None: x / (t - 0.5), torch.ones(1, 1, 2, 2), 2)


# --- training ---------------------------------------------------------------------------------------------

def test_a_nan_image_stops_training_before_anything_is_written(tmp_path):
    images = torch.rand(8, 1, 32, 32)
    images[3, 0, 4, 4] = math.nan
    with pytest.raises(FloatingPointError, match="the training data has 1 non-finite values"):
        train(ConditionalCourseUNet(hidden=4, image_size=32), flow_matching.training_loss(), (images,),
              TrainConfig(epochs=1, batch_size=4, lr=1e-3), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_diverging_run_keeps_its_last_good_checkpoint(tmp_path):
    model = ConditionalCourseUNet(hidden=4, image_size=32)
    data = (torch.rand(8, 1, 32, 32) * 2 - 1,)
    config = TrainConfig(epochs=3, batch_size=4, lr=1e-3)
    calls = {"n": 0}

    def loss_fn(model, batch):  # finite for epoch 1 (2 steps), then NaN
        calls["n"] += 1
        loss = flow_matching.loss(model, *batch)
        return loss if calls["n"] <= 2 else loss * math.nan

    with pytest.raises(FloatingPointError, match="diverged in epoch 2.*keeps epoch 1"):
        train(model, loss_fn, data, config, tmp_path, progress=False)
    state = ckpt.load(tmp_path / "last.pt")
    assert state["epoch"] == 1
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("make, message", [
    (lambda: TrainConfig(epochs=0, batch_size=4, lr=1e-3), "epochs must be at least 1"),
    (lambda: TrainConfig(epochs=1, batch_size=0, lr=1e-3), "batch_size must be at least 1"),
    (lambda: TrainConfig(epochs=1, batch_size=4, lr=float("nan")), "lr must be a finite number"),
    (lambda: TrainConfig(epochs=1, batch_size=4, lr=1e-3, lr_decay_over_run=2.0), "at most 1"),
])
def test_bad_training_configs(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_training_on_no_images_is_refused(tmp_path):
    with pytest.raises(ValueError, match="got no training examples"):
        train(ConditionalCourseUNet(hidden=4, image_size=32), flow_matching.training_loss(),
              (torch.zeros(0, 1, 32, 32),), TrainConfig(epochs=1, batch_size=4, lr=1e-3), tmp_path, progress=False)
