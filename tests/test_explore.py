"""The notebooks' slider explorers (helpers.display.explore): each callback driven from Python, with tiny models."""
import pytest
import torch

from helpers import diffusion, guidance, ideal, samplers
from helpers.course_unet import ConditionalCourseUNet
from helpers.display import explore

AC = torch.linspace(0.9999, 0.01, 1000)  # a stand-in schedule of abar_t, decreasing
T = diffusion.strided_timesteps()


@pytest.fixture(scope="module")
def time_model():
    torch.manual_seed(0)
    return ConditionalCourseUNet(hidden=8, image_size=32).eval()


@pytest.fixture(scope="module")
def class_model():
    torch.manual_seed(0)
    model = ConditionalCourseUNet(hidden=8, image_size=32, num_classes=10).eval()
    with torch.no_grad():  # random weights large enough that the class changes the velocity
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    return model


@pytest.fixture
def digit():
    return torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(3))


def halve(z):  # a "denoiser" whose output is easy to predict
    return z / 2


def test_sigma_zero_shows_the_clean_digit_and_sigma_scales_one_fixed_noise(digit):
    explorer = explore.sigma_slider(halve, digit)
    clean, z0, d0 = explorer.view(0.0)
    assert torch.equal(z0, clean) and torch.equal(clean, digit[0]) and torch.equal(d0, digit[0] / 2)
    noise_half = explorer.view(0.5)[1] - digit[0]
    noise_one = explorer.view(1.0)[1] - digit[0]
    assert noise_half.abs().mean() > 0.3 and torch.allclose(noise_one, 2 * noise_half, atol=1e-6)
    assert torch.equal(explorer.view(1.0)[2], explorer.view(1.0)[1] / 2)


def test_moving_the_slider_changes_the_picture_and_caption(digit):
    explorer = explore.sigma_slider(halve, digit)
    shown = bytes(explorer.picture.value)
    assert shown.startswith(b"\x89PNG") and "σ = 0.50" in explorer.caption.value
    explorer.slider.value = 0.0
    assert bytes(explorer.picture.value) != shown and "σ = 0.00" in explorer.caption.value
    explorer.slider.value = 0.5
    assert bytes(explorer.picture.value) == shown


def test_a_value_is_computed_once_and_recalled(digit):
    calls = []
    explorer = explore.sigma_slider(lambda z: calls.append(1) or z, digit)
    for value in (0.2, 0.5, 0.2, 0.5):
        explorer.slider.value = value
    assert len(calls) == 2


@pytest.mark.slow
def test_trajectory_runs_from_the_noise_at_t1_to_the_sample_at_t0(time_model):
    noise = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    explorer = explore.trajectory_slider(time_model, noise, 5)
    assert torch.equal(explorer.view(1.0), noise)
    assert torch.allclose(explorer.view(0.0), samplers.integrate(time_model, noise, 5), atol=1e-6)
    middle = explorer.view(0.6)  # two Euler steps in
    assert not torch.equal(middle, noise) and not torch.equal(middle, explorer.view(0.0))
    assert explorer.slider.step == pytest.approx(0.2)


@pytest.mark.slow
def test_guidance_view_is_the_guided_sample_and_gamma_changes_it(class_model):
    noise = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([3, 7])
    explorer = explore.guidance_slider(class_model, noise, labels, 3, gammas=(0, 1, 5))
    assert explorer.slider.value == 5 and "asked for: 3 7" in explorer.caption.value
    expected = samplers.integrate(guidance.classifier_free(class_model, 1.0), noise, 3, labels)
    assert torch.allclose(explorer.view(1.0), expected, atol=1e-6)
    assert (explorer.view(0.0) - explorer.view(5.0)).abs().max() > 1e-3
    assert explorer.view.cache_info().misses == 3  # every gamma sampled at build: a slider move only recalls
    explorer.slider.value = 0
    assert explorer.view.cache_info().misses == 3 and "γ = 0," in explorer.caption.value


def test_sdedit_shows_the_start_it_denoised_and_keeps_more_of_the_image_the_later_it_starts():
    image = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1

    def zero_noise(x, t):
        return torch.zeros_like(x), None

    explorer = explore.sdedit_slider(zero_noise, image, T, AC, seed=4)
    original, start, edit = explorer.view(10)
    assert torch.equal(original, image[0])
    noised = diffusion.forward(image, T[10], AC, generator=torch.Generator().manual_seed(4))
    assert torch.equal(start, noised[0].clamp(-1, 1))
    assert torch.equal(edit, diffusion.sdedit(zero_noise, image, 10, T, AC, torch.Generator().manual_seed(4))[0]
                       .clamp(-1, 1))
    late = (explorer.view(len(T) - 2)[2] - image[0]).abs().mean()
    early = (explorer.view(1)[2] - image[0]).abs().mean()
    assert late < early
    assert explorer.slider.max == len(T) - 2


@pytest.mark.slow
def test_els_view_is_the_els_estimate_at_the_middle_step(time_model):
    train = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    noise = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(6))
    explorer = explore.els_patch_slider(time_model, noise, 4, train, (3, 7))
    x_t, network_x0, els3 = explorer.view(3)
    x_half = samplers.integrate(time_model, noise, 4, return_trajectory=True)[1][2]
    assert torch.equal(x_t, x_half[0])
    assert torch.allclose(network_x0, (x_half - 0.5 * time_model(x_half, 0.5))[0], atol=1e-6)
    assert torch.allclose(els3, ideal.els_denoiser(x_half, 0.5, train, 3)[0], atol=1e-5)
    assert (explorer.view(7)[2] - els3).abs().max() > 1e-3
    assert "t = 0.50" in explorer.caption.value and "MSE" in explorer.caption.value


@pytest.mark.parametrize("build, message", [
    (lambda: explore.sigma_slider(halve, torch.rand(2, 1, 28, 28)), "must be one image"),
    (lambda: explore.sigma_slider(halve, [[0.0]]), "must be one image"),
    (lambda: explore.guidance_slider(None, torch.zeros(1, 1, 32, 32), torch.zeros(1), 2, gammas=()),
     "at least one value"),
    (lambda: explore.els_patch_slider(halve, torch.zeros(1, 1, 32, 32), 4, torch.zeros(2, 1, 32, 32), (4,)),
     "odd whole numbers"),
    (lambda: explore.els_patch_slider(halve, torch.zeros(1, 1, 32, 32), 4, torch.zeros(2, 1, 32, 32), (33,)),
     "odd whole numbers"),
    (lambda: explore.sdedit_slider(None, torch.zeros(1, 1, 32, 32), T, AC, start=-1), "start"),
])
def test_bad_input_is_refused_in_one_sentence(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_a_view_outside_the_slider_range_is_refused(digit):
    explorer = explore.sdedit_slider(lambda x, t: (torch.zeros_like(x), None), torch.zeros(1, 1, 32, 32), T, AC)
    with pytest.raises(ValueError, match="i_start"):
        explorer.view(len(T) - 1)
    with pytest.raises(ValueError, match="sigma"):
        explore.sigma_slider(halve, digit).view(-0.1)
