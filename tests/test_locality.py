"""Locality calibration recovers the patch size of a network that is itself a patch machine."""
import pytest
import torch

from helpers import ideal
from helpers.course_unet import ConditionalCourseUNet
from helpers.foundation import checkpoint_files
from helpers.measure import locality


class MachineAsNetwork(torch.nn.Module):
    """A 'network' whose velocity is the ELS machine with a fixed patch size."""

    def __init__(self, train, patch_size):
        super().__init__()
        self.train_images, self.patch_size = train, patch_size

    def forward(self, x, t, labels=None):
        return ideal.els_velocity(x, float(t), self.train_images, self.patch_size)


@pytest.fixture(scope="module")
def setting():
    g = torch.Generator().manual_seed(0)
    train = torch.rand(4, 1, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    return MachineAsNetwork(train, 5), train, noise


def test_calibration_finds_the_patch_size_of_the_network(setting):
    fm, train, noise = setting
    record = locality.calibrate(fm, ideal.els_denoiser, train, noise, steps=4, candidates=[3, 5, 7])
    assert record["sizes"] == [5, 5, 5, 5]
    assert record["times"] == [1.0, 0.75, 0.5, 0.25]
    assert record["mse"].shape == (4, 3, 3) and record["mse"][:, 1].abs().max() < 1e-20


def test_schedule_uses_the_nearest_calibrated_time():
    schedule = locality.LocalitySchedule([1.0, 0.5, 0.1], [9, 5, 3])
    assert [schedule(t) for t in (1.0, 0.8, 0.7, 0.5, 0.35, 0.2, 0.05)] == [9, 9, 5, 5, 5, 3, 3]


def test_stored_calibration_is_reused_and_checked(setting, tmp_path):
    fm, train, noise = setting
    config = {"network": "machine", "steps": 2}
    first, _ = locality.calibrated_schedule(fm, ideal.els_denoiser, train, noise, 2, [3, 5], tmp_path, config)

    def must_not_run(*args):
        raise AssertionError("the stored calibration should have been used")

    again, _ = locality.calibrated_schedule(fm, must_not_run, train, noise, 2, [3, 5], tmp_path, config)
    assert again == first
    with pytest.raises(checkpoint_files.CheckpointError, match="steps: checkpoint has 2, this run asks for 3"):
        locality.calibrated_schedule(fm, must_not_run, train, noise, 3, [3, 5], tmp_path, {**config, "steps": 3})


@pytest.mark.slow
def test_a_retrained_network_is_not_matched_with_its_old_calibration(tmp_path):
    torch.manual_seed(0)
    network = ConditionalCourseUNet(hidden=4, image_size=8).eval()
    train, noise = torch.rand(6, 1, 8, 8) * 2 - 1, torch.randn(2, 1, 8, 8)
    config = {"network": "the same run name", "steps": 2}
    locality.calibrated_schedule(network, ideal.els_denoiser, train, noise, 2, [3, 5], tmp_path, config)
    with torch.no_grad():
        network.head.bias.add_(0.1)  # retrained: other weights under the same name
    with pytest.raises(checkpoint_files.CheckpointError, match="weights: checkpoint has"):
        locality.calibrated_schedule(network, ideal.els_denoiser, train, noise, 2, [3, 5], tmp_path, config)
