"""`python -m instructor sample`: file format, reproducibility, and clear errors."""
import pytest
import torch

from helpers import flow_matching
from helpers.course_unet import ConditionalCourseUNet
from helpers.training.loop import TrainConfig, train
from instructor import sample


def tiny_run(tmp_path, num_classes, epochs=1, keep_epochs=()):
    torch.manual_seed(0)
    model = ConditionalCourseUNet(hidden=4, image_size=32, num_classes=num_classes)
    batch = (torch.rand(8, 1, 32, 32) * 2 - 1, torch.randint(0, 10, (8,)))[: 2 if num_classes else 1]
    run_dir = tmp_path / f"run{num_classes}"
    train(model, flow_matching.training_loss(), batch, TrainConfig(epochs=epochs, batch_size=4, lr=1e-3), run_dir,
          progress=False, keep_epochs=keep_epochs)
    return run_dir


@pytest.mark.slow
def test_class_conditioned_file_is_reproducible(tmp_path):
    run = tiny_run(tmp_path, 10)
    args = [str(run), "--per-class", "2", "--guidance", "5", "--steps", "3", "--seed", "4"]
    sample.main(args + ["--out", str(tmp_path / "a.pt")])
    sample.main(args + ["--out", str(tmp_path / "b.pt")])
    a, b = (torch.load(tmp_path / f, weights_only=True) for f in ("a.pt", "b.pt"))
    assert a["images"].shape == (20, 1, 32, 32) and a["images"].dtype == torch.float32
    assert a["images"].min() >= -1 and a["images"].max() <= 1
    assert a["labels"].tolist() == [d for d in range(10) for _ in range(2)]
    assert torch.equal(a["images"], b["images"])


@pytest.mark.slow
def test_time_only_checkpoint_takes_n(tmp_path, capsys):
    run = tiny_run(tmp_path, 0)
    sample.main([str(run / "last.pt"), "--n", "3", "--steps", "2", "--out", str(tmp_path / "t.pt")])
    result = torch.load(tmp_path / "t.pt", weights_only=True)
    assert result["images"].shape == (3, 1, 32, 32) and "labels" not in result
    with pytest.raises(SystemExit):
        sample.main([str(run), "--per-class", "3", "--out", str(tmp_path / "x.pt")])
    assert "time-only: give --n N" in capsys.readouterr().err


@pytest.mark.slow
def test_missing_or_unfinished_checkpoint_is_explained(tmp_path, capsys):
    with pytest.raises(SystemExit):
        sample.main([str(tmp_path / "nothing"), "--n", "1", "--out", str(tmp_path / "x.pt")])
    assert "no trained model at" in capsys.readouterr().err
    run = tiny_run(tmp_path, 10, epochs=2)
    state = torch.load(run / "last.pt", weights_only=True)
    state["epoch"] = 1
    torch.save(state, run / "last.pt")
    with pytest.raises(SystemExit):
        sample.main([str(run), "--per-class", "1", "--out", str(tmp_path / "x.pt")])
    assert "unfinished (epoch 1 of 2)" in capsys.readouterr().err


@pytest.mark.slow
def test_autoguidance_by_an_earlier_snapshot(tmp_path, capsys):
    run = tiny_run(tmp_path, 0, epochs=2, keep_epochs=(1,))
    args = [str(run), "--n", "3", "--steps", "2", "--guide-epoch", "1"]
    with pytest.raises(SystemExit):
        sample.main(args + ["--out", str(tmp_path / "x.pt")])
    assert "--guide-epoch needs --guidance W" in capsys.readouterr().err
    sample.main(args + ["--guidance", "1", "--out", str(tmp_path / "w1.pt")])
    sample.main(args + ["--guidance", "3", "--out", str(tmp_path / "w3.pt")])
    sample.main([str(run), "--n", "3", "--steps", "2", "--out", str(tmp_path / "plain.pt")])
    w1, w3, plain = (torch.load(tmp_path / f, weights_only=True)["images"] for f in ("w1.pt", "w3.pt", "plain.pt"))
    assert torch.equal(w1, plain) and not torch.equal(w3, plain)
    with pytest.raises(SystemExit):
        sample.main([str(run), "--n", "3", "--guide-epoch", "7", "--guidance", "2", "--out", str(tmp_path / "x.pt")])
    assert "kept no weights after epoch 7: it kept those after epochs [1]" in capsys.readouterr().err
