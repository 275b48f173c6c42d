import pytest
import torch

from helpers import denoise
from helpers.training import profile


def test_profile_switch(monkeypatch):
    monkeypatch.setenv("WORKBOOK_PROFILE", "smoke")
    assert profile.current_profile() == "smoke" and profile.tag() == "[profile: smoke]"
    monkeypatch.setenv("WORKBOOK_PROFILE", "gpu")
    with pytest.raises(ValueError, match="use one of smoke, cpu, full"):
        profile.current_profile()
    monkeypatch.delenv("WORKBOOK_PROFILE")
    assert profile.current_profile() == ("full" if torch.cuda.is_available() else "cpu")


def test_settings_fall_back_to_full_values():
    full = profile.settings("one_step_denoiser", "full")
    assert (full.hidden, full.batch_size, full.lr, full.epochs, full.sigma) == (128, 256, 1e-4, 5, 0.5)
    smoke = profile.settings("one_step_denoiser", "smoke")
    assert smoke.profile == "smoke" and smoke.sigma == 0.5 and smoke.hidden < full.hidden


def test_add_noise_matches_formula():
    x = torch.rand(4, 1, 8, 8)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.allclose(denoise.add_noise(x, 0.4, g1), x + 0.4 * torch.randn(x.shape, generator=g2))
    assert torch.equal(denoise.add_noise(x, 0.0), x)


def test_identity_denoiser_mse_equals_noise_variance():
    identity = torch.nn.Conv2d(1, 1, 1, bias=False)
    torch.nn.init.ones_(identity.weight)
    mse = denoise.test_mse(identity, torch.zeros(200, 1, 16, 16), sigma=0.5)
    assert abs(mse - 0.25) < 0.01
