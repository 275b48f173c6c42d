"""The shared training loop: atomic checkpoints, exact resume, config and architecture checks."""
import pytest
import torch

from helpers.course_unet import CourseUNet
from helpers.denoise import denoising_loss
from helpers.foundation import checkpoint_files as ckpt
from helpers.training import runs
from helpers.training.loop import TrainConfig, _ema_decay, train

pytestmark = pytest.mark.slow  # trains real (tiny) networks

CONFIG = TrainConfig(epochs=3, batch_size=16, lr=1e-3, seed=7, lr_decay_over_run=0.9 ** 3)
KEEP = (1, 3)


def tiny_data():
    return (torch.rand(48, 1, 28, 28),)


def loss(model, batch):
    return denoising_loss(model, batch, sigma=0.5)


def fresh_model():
    torch.manual_seed(0)
    return CourseUNet(hidden=4, image_size=28)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    data = tiny_data()
    reference = fresh_model()
    fresh = train(reference, loss, data, CONFIG, tmp_path / "reference", progress=False, keep_epochs=KEEP)
    assert not fresh.loaded and fresh.describe() == "3 epochs, 9 iterations (trained now)"

    calls = {"n": 0}

    def interrupted_loss(model, batch):  # dies in the middle of epoch 2, after epoch 1's checkpoint
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return loss(model, batch)

    model = fresh_model()
    with pytest.raises(KeyboardInterrupt):
        train(model, interrupted_loss, data, CONFIG, tmp_path / "run", progress=False, keep_epochs=KEEP)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 1

    resumed = fresh_model()
    result = train(resumed, loss, data, CONFIG, tmp_path / "run", progress=False, keep_epochs=KEEP)
    assert result.resumed_from == 1 and result.epochs_done == 3
    assert result.describe() == "3 epochs, 9 iterations (resumed from epoch 1)"
    loaded = train(fresh_model(), loss, data, CONFIG, tmp_path / "run", progress=False)
    assert loaded.loaded and loaded.describe() == "3 epochs, 9 iterations (loaded, the run was finished)"
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert len(result.history) == 3 * 3
    reference_ema = torch.load(tmp_path / "reference" / "last.pt", weights_only=True)["ema"]
    resumed_ema = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["ema"]
    assert all(torch.equal(reference_ema[k], resumed_ema[k]) for k in reference_ema)


def test_ema_weights_follow_the_recursion(tmp_path):
    seen = []  # the weights before each optimizer step; the final ones are read after training

    def recording_loss(model, batch):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return loss(model, batch)

    model = fresh_model()
    train(model, recording_loss, tiny_data(), CONFIG, tmp_path, progress=False, keep_epochs=KEEP)
    after_each_step = seen[1:] + [model.state_dict()]
    expected = {k: v.clone() for k, v in seen[0].items() if v.is_floating_point()}
    for n, weights in enumerate(after_each_step):
        d = _ema_decay(n)
        expected = {k: d * expected[k] + (1 - d) * weights[k] for k in expected}
    ema = runs.load(tmp_path, weights="ema").state_dict()
    for k, v in ema.items():  # averaged floats (stored in fp16); counters such as num_batches_tracked copied
        want = expected[k].half().float() if k in expected else model.state_dict()[k]
        torch.testing.assert_close(v, want, rtol=1e-3, atol=1e-5)
    assert not torch.equal(ema["head.weight"], model.state_dict()["head.weight"])


def test_finished_checkpoint_is_loaded_not_retrained(tmp_path):
    model = fresh_model()
    first = train(model, loss, tiny_data(), CONFIG, tmp_path, progress=False, keep_epochs=KEEP)
    again = fresh_model()
    second = train(again, lambda *_: pytest.fail("must not train again"), tiny_data(), CONFIG, tmp_path,
                   progress=False, keep_epochs=KEEP)
    assert second.history == first.history
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_snapshots_hold_the_weights_of_their_epoch(tmp_path):
    model = fresh_model()
    train(model, loss, tiny_data(), CONFIG, tmp_path, progress=False, keep_epochs=KEEP)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_001.pt", "last.pt"]
    final = runs.load(tmp_path, epoch=3)  # the last epoch is last.pt itself
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), final.state_dict().values()))
    first = torch.load(tmp_path / "epoch_001.pt", weights_only=True)
    assert first["epoch"] == 1 and first["model"]["head.weight"].dtype == torch.float16
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert "optimizer" not in last  # finished: weights only, in fp16
    assert last["model"]["head.weight"].dtype == last["ema"]["head.weight"].dtype == torch.float16
    assert not torch.equal(runs.load(tmp_path, epoch=1).state_dict()["head.weight"], final.state_dict()["head.weight"])


def test_a_finished_run_asked_for_a_snapshot_it_never_kept_says_to_retrain(tmp_path, monkeypatch):
    """A run trained without a snapshot now asked for (by an older notebook, or another caller of the folder)
    cannot give it: train says so at once, instead of a later load saying that keep_epochs (which the notebook does
    pass) kept nothing."""
    train(fresh_model(), loss, tiny_data(), CONFIG, tmp_path, progress=False)
    with pytest.raises(ckpt.CheckpointError, match=r"went past epochs \[1, 2\] without keeping their weights, which "
                                                   r"keep_epochs asks for .*it kept none\): .*WORKBOOK_RETRAIN=1"):
        train(fresh_model(), loss, tiny_data(), CONFIG, tmp_path, progress=False, keep_epochs=(1, 2, 3))
    assert train(fresh_model(), loss, tiny_data(), CONFIG, tmp_path, progress=False, keep_epochs=(3,)).loaded
    monkeypatch.setenv("WORKBOOK_RETRAIN", "1")
    train(fresh_model(), loss, tiny_data(), CONFIG, tmp_path, progress=False, keep_epochs=(1, 2, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_001.pt", "epoch_002.pt", "last.pt"]


def test_other_config_is_refused_with_the_difference(tmp_path):
    train(fresh_model(), loss, tiny_data(), CONFIG, tmp_path, progress=False, keep_epochs=KEEP)
    other = TrainConfig(epochs=3, batch_size=16, lr=1e-2, seed=7, lr_decay_over_run=0.9 ** 3)
    with pytest.raises(ckpt.CheckpointError, match=r"train.lr: checkpoint has 0.001, this run asks for 0.01"):
        train(fresh_model(), loss, tiny_data(), other, tmp_path, progress=False, keep_epochs=KEEP)
    with pytest.raises(ckpt.CheckpointError, match="model.hidden"):
        train(CourseUNet(hidden=6, image_size=28), loss, tiny_data(), CONFIG, tmp_path, progress=False,
              keep_epochs=KEEP)
    with pytest.raises(ckpt.CheckpointError, match=r"data.examples: checkpoint has 48, this run asks for 32"):
        train(fresh_model(), loss, (tiny_data()[0][:32],), CONFIG, tmp_path, progress=False, keep_epochs=KEEP)


def test_architecture_mismatch_is_explained(tmp_path):
    path = tmp_path / "w.pt"
    ckpt.save_atomic({"model": CourseUNet(hidden=4).state_dict()}, path)
    with pytest.raises(ckpt.CheckpointError, match="does not fit this CourseUNet"):
        ckpt.load_weights(CourseUNet(hidden=8), ckpt.load(path)["model"], path)


def test_missing_and_damaged_checkpoints(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint at"):
        ckpt.load(tmp_path / "absent.pt")
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="refused for safety"):
        ckpt.load(damaged)


def test_atomic_save_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_atomic({"epoch": 1}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        ckpt.save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert ckpt.load(path)["epoch"] == 1
