"""Bad inputs at the public entry points of images, diffusion, ideal, locality, profile and plotting: each is
refused with one sentence naming the problem (or, where the input has a sensible meaning, accepted), and
every sampler's result is checked finite before it is returned."""
import math

import pytest
import torch
from PIL import Image, ImageDraw

from helpers import diffusion, ideal
from helpers.display import plotting
from helpers.foundation.images import ImageError, load_image
from helpers.measure.locality import LocalitySchedule
from helpers.training import profile

# A cosine-like schedule is not needed here: any decreasing abar in (0, 1) exercises the code paths.
AC = torch.linspace(0.9999, 0.01, 1000, dtype=torch.float64)
SHORT = diffusion.strided_timesteps(990, 330)          # 990, 660, 330, 0


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _shrink(x, t):
    """A stand-in noise estimate (no learned variance)."""
    return 0.5 * x, None


def _nan_estimate(x, t):
    return torch.full_like(x, float("nan")), None


@pytest.fixture
def grey():
    return torch.rand(1, 1, 8, 8, generator=_gen(), dtype=torch.float64) * 2 - 1


# --- 5. images -----------------------------------------------------------------------------------------------

def _strokes(mode, background, ink):
    image = Image.new(mode, (32, 32), background)
    ImageDraw.Draw(image).line([(4, 4), (27, 27)], fill=ink, width=3)
    return image


def test_transparent_drawing_keeps_its_strokes_with_invert(tmp_path):
    _strokes("RGBA", (0, 0, 0, 0), (0, 0, 0, 255)).save(tmp_path / "drawing.png")   # the usual export
    _strokes("L", 255, 0).save(tmp_path / "paper.png")                                # the same on white paper
    x = load_image(tmp_path / "drawing.png", 32, 1, invert=True)
    assert x.min() == -1 and x.max() == 1 and 0.02 < (x > 0).float().mean() < 0.3
    assert torch.equal(x, load_image(tmp_path / "paper.png", 32, 1, invert=True))
    assert torch.equal(load_image(tmp_path / "drawing.png", 32, 3, invert=True), x.expand(1, 3, 32, 32))


def test_transparent_light_strokes_without_invert_land_on_black(tmp_path):
    _strokes("LA", (255, 0), (255, 255)).save(tmp_path / "light.png")   # white strokes, transparent white paper
    x = load_image(tmp_path / "light.png", 32, 1)
    assert x.min() == -1 and x.max() == 1 and 0.02 < (x > 0).float().mean() < 0.3


def test_unreachable_url_is_reported_as_unreachable():
    with pytest.raises(ImageError, match="could not be reached .*download the image"):
        load_image("http://127.0.0.1:1/drawing.png", 32, 1)


@pytest.mark.parametrize("size, error, message", [(0, ValueError, "size must be at least 1"),
                                                  (31.5, TypeError, "size must be a whole number")])
def test_image_size_is_checked(tmp_path, size, error, message):
    _strokes("L", 0, 255).save(tmp_path / "digit.png")
    with pytest.raises(error, match=message):
        load_image(tmp_path / "digit.png", size, 1)


# --- 7. inpainting masks -------------------------------------------------------------------------------------

def _inpaint(image, mask, seed=0):
    return diffusion.inpaint(_shrink, image, mask, SHORT, AC, _gen(seed))


def test_bool_and_integer_masks_paint_like_the_float_mask(grey):
    half = torch.zeros(1, 8, 8, dtype=torch.float64)
    half[..., 4:] = 1
    expected = _inpaint(grey, half)
    assert torch.isfinite(expected).all()
    assert torch.equal(_inpaint(grey, half.bool()), expected)
    assert torch.equal(_inpaint(grey, half.long()), expected)
    # kept pixels end at the original forward-noised to t = 0, where sqrt(1 - abar_0) = 0.01
    assert torch.allclose(expected[..., :4], grey[..., :4], atol=0.05)
    assert not torch.allclose(expected[..., 4:], grey[..., 4:], atol=0.05)


def test_a_0_255_mask_is_refused(grey):
    mask = torch.zeros(8, 8)
    mask[:, 4:] = 255
    with pytest.raises(ValueError, match=r"mask must hold only 0 \(keep\) and 1 \(paint\).*mask > 0"):
        _inpaint(grey, mask)


def test_a_three_channel_mask_on_a_grey_image_names_the_mask(grey):
    with pytest.raises(ValueError, match=r"the mask's shape \[3, 8, 8\] does not fit the image's \[1, 1, 8, 8\]"):
        _inpaint(grey, torch.ones(3, 8, 8))
    with pytest.raises(ValueError, match="the mask's shape"):
        _inpaint(grey, torch.ones(1, 6, 6))


def test_a_mask_that_is_not_a_tensor_is_refused(grey):
    with pytest.raises(TypeError, match="mask must be a tensor of 0s and 1s"):
        _inpaint(grey, [[1, 0]])


# --- 8. SDEdit's i_start, forward's t, counts and timesteps ----------------------------------------------------

@pytest.mark.parametrize("i_start, error, message", [
    (4, ValueError, r"i_start \(an index into the 4 timesteps\) must be at most 3, not 4"),
    (-1, ValueError, r"i_start .* must be at least 0, not -1"),
    (1.5, TypeError, r"i_start .* must be a whole number, not 1.5"),
])
def test_sdedit_i_start_is_checked(grey, i_start, error, message):
    with pytest.raises(error, match=message):
        diffusion.sdedit(_shrink, grey, i_start, SHORT, AC, _gen())
    with pytest.raises(error, match=message):
        diffusion.iterative_denoise(_shrink, grey, i_start, SHORT, AC, _gen())


def test_sdedit_accepts_every_valid_start(grey):
    for i_start in (0, 1.0, 3):
        assert torch.isfinite(diffusion.sdedit(_shrink, grey, i_start, SHORT, AC, _gen())).all()


@pytest.mark.parametrize("t, message", [(-1, "must be at least 0, not -1"), (1000, "must be at most 999, not 1000"),
                                        (500.5, "must be a whole number")])
def test_forward_refuses_timesteps_outside_the_schedule(grey, t, message):
    with pytest.raises((ValueError, TypeError), match=rf"t \(a timestep of this 1000-step schedule\) {message}"):
        diffusion.forward(grey, t, AC)


@pytest.mark.parametrize("timesteps, message", [
    ([0, 330, 660], "strictly decreasing"), ([], "non-empty"), ([1200, 0], "must be at most 999"),
])
def test_samplers_refuse_bad_timesteps(grey, timesteps, message):
    with pytest.raises(ValueError, match=message):
        diffusion.sample(_shrink, 1, (1, 8, 8), timesteps, AC)
    with pytest.raises(ValueError, match=message):
        diffusion.inpaint(_shrink, grey, torch.ones(8, 8), timesteps, AC)


@pytest.mark.parametrize("n, error", [(0, ValueError), (2.5, TypeError), (True, TypeError)])
def test_sample_count_is_checked(n, error):
    with pytest.raises(error, match=r"n \(the number of samples\) must be"):
        diffusion.sample(_shrink, n, (1, 8, 8), SHORT, AC)


def test_strided_timesteps_and_blur_settings_are_checked():
    with pytest.raises(ValueError, match="stride must be at least 1, not 0"):
        diffusion.strided_timesteps(990, 0)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        diffusion.hybrid(_shrink, _shrink, kernel_size=4)
    with pytest.raises(ValueError, match="sigma must be at least"):
        diffusion.hybrid(_shrink, _shrink, sigma=0.0)
    with pytest.raises(ValueError, match="gamma .* must be a finite number"):
        diffusion.guided(None, None, None, gamma=math.nan)
    with pytest.raises(ValueError, match="one view per prompt"):
        diffusion.anagram([], [])


# --- diffusion samplers: every result checked finite ---------------------------------------------------------

def test_sample_refuses_to_return_a_non_finite_result():
    with pytest.raises(FloatingPointError, match="the denoised image has 16 non-finite values"):
        diffusion.sample(_nan_estimate, 1, (1, 4, 4), SHORT, AC, generator=_gen())


def test_sdedit_and_iterative_denoise_refuse_to_return_a_non_finite_result(grey):
    with pytest.raises(FloatingPointError, match="the denoised image has 64 non-finite values"):
        diffusion.sdedit(_nan_estimate, grey, 1, SHORT, AC, _gen())
    with pytest.raises(FloatingPointError, match="the denoised image"):
        diffusion.iterative_denoise(_nan_estimate, grey, 0, SHORT, AC, _gen())


def test_inpaint_refuses_to_return_a_non_finite_result(grey):
    with pytest.raises(FloatingPointError, match="the denoised image"):
        diffusion.inpaint(_nan_estimate, grey, torch.ones(8, 8), SHORT, AC, _gen())


def test_anagram_and_hybrid_refuse_a_non_finite_estimate(grey):
    anagram = diffusion.anagram([_shrink, _nan_estimate], [diffusion.IDENTITY, diffusion.FLIP])
    with pytest.raises(FloatingPointError, match="the anagram's noise estimate"):
        diffusion.sample(anagram, 1, (1, 8, 8), SHORT, AC, generator=_gen())
    hybrid = diffusion.hybrid(_shrink, _nan_estimate, kernel_size=3)
    with pytest.raises(FloatingPointError, match="the hybrid noise estimate"):
        diffusion.sample(hybrid, 1, (1, 8, 8), SHORT, AC, generator=_gen())


def test_inputs_with_nan_are_refused_before_sampling(grey):
    bad = grey.clone()
    bad[0, 0, 0, 0] = math.nan
    with pytest.raises(FloatingPointError, match="the image to edit has 1 non-finite"):
        diffusion.sdedit(_shrink, bad, 1, SHORT, AC, _gen())
    with pytest.raises(FloatingPointError, match="the image to inpaint has 1 non-finite"):
        diffusion.inpaint(_shrink, bad, torch.ones(8, 8), SHORT, AC, _gen())


# --- 10. profiles ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["bogus", "CPU", " cpu", ""])
def test_an_explicit_profile_must_be_one_of_the_profiles(name):
    with pytest.raises(ValueError, match=r"profile .* is not one of smoke, cpu, full, smoke-deepfloyd: .*lower case"):
        profile.settings("ideal", name)
    with pytest.raises(ValueError, match="is not one of"):
        profile.tag(name)


def test_every_profile_name_is_accepted():
    assert [profile.settings("ideal", name).profile for name in profile.PROFILES] == list(profile.PROFILES)


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("Yes", True), (" on ", True),
                                             ("0", False), ("false", False), ("NO", False), ("off", False),
                                             ("", False), (None, False)])
def test_retrain_words(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("WORKBOOK_RETRAIN", raising=False)
    else:
        monkeypatch.setenv("WORKBOOK_RETRAIN", value)
    assert profile.retrain_requested() is expected


@pytest.mark.parametrize("value", ["2", "enable", "y"])
def test_other_retrain_values_are_refused(monkeypatch, value):
    monkeypatch.setenv("WORKBOOK_RETRAIN", value)
    with pytest.raises(ValueError, match=rf"WORKBOOK_RETRAIN='{value}' is neither true nor false"):
        profile.retrain_requested()


# --- 12. ideal machines ----------------------------------------------------------------------------------------

MACHINES = {"IS": lambda x, t, train, p: ideal.ideal_denoiser(x, t, train),
            "LS": ideal.local_denoiser, "ELS": ideal.els_denoiser, "bbELS": ideal.bbels_denoiser}


@pytest.fixture
def digits():
    g = _gen(1)
    return torch.rand(2, 1, 6, 6, generator=g) * 2 - 1, torch.rand(5, 1, 6, 6, generator=g) * 2 - 1


def test_els_refuses_a_patch_larger_than_the_image(digits):
    x_t, train = digits
    with pytest.raises(ValueError, match=r"ELS needs P x P patches inside 6 x 6 training images, but P = 7"):
        ideal.els_denoiser(x_t, 0.5, train, 7)
    with pytest.raises(ValueError, match="but P = 9 at t = 0.5"):
        ideal.els_denoiser(x_t, 0.5, train, lambda t: 9)


def test_bbels_and_ls_define_patches_larger_than_the_image(digits):
    x_t, train = digits
    bbels = ideal.bbels_denoiser(x_t, 0.5, train, 15)
    assert torch.isfinite(bbels).all()
    assert torch.allclose(bbels, ideal.local_denoiser(x_t, 0.5, train, 15), atol=1e-5)


@pytest.mark.parametrize("machine", MACHINES)
def test_an_empty_training_set_is_refused(digits, machine):
    x_t, train = digits
    with pytest.raises(ValueError, match="the training set is empty"):
        MACHINES[machine](x_t, 0.5, train[:0], 3)


def test_nearest_training_images_refuses_an_empty_training_set(digits):
    x_t, train = digits
    with pytest.raises(ValueError, match="the training set is empty"):
        ideal.nearest_training_images(x_t, train[:0])


@pytest.mark.parametrize("p, error, message", [(3.7, TypeError, "the patch size P must be a whole number, not 3.7"),
                                               (4, ValueError, "the patch size P must be odd"),
                                               (0, ValueError, "the patch size P must be at least 1")])
@pytest.mark.parametrize("machine", ["LS", "ELS", "bbELS"])
def test_patch_sizes_must_be_whole_odd_and_positive(digits, machine, p, error, message):
    x_t, train = digits
    with pytest.raises(error, match=message):
        MACHINES[machine](x_t, 0.5, train, p)


def test_a_whole_float_patch_size_is_the_integer(digits):
    x_t, train = digits
    assert torch.equal(ideal.els_denoiser(x_t, 0.5, train, 3.0), ideal.els_denoiser(x_t, 0.5, train, 3))


@pytest.mark.parametrize("machine", MACHINES)
def test_a_float64_training_set_is_converted_to_the_query_dtype(digits, machine):
    x_t, train = digits
    out = MACHINES[machine](x_t, 0.5, train.double(), 3)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.equal(out, MACHINES[machine](x_t, 0.5, train, 3))


@pytest.mark.parametrize("t", [1.2, 0.0, -0.5])
def test_t_outside_the_unit_interval_is_refused_with_the_right_reason(digits, t):
    x_t, train = digits
    with pytest.raises(ValueError, match=rf"t must be in \(0, 1\], not {t:g}") as error:
        ideal.els_velocity(x_t, t, train, 3)
    assert ("t = 0" in str(error.value)) == (t <= 0)


def test_a_query_that_is_not_a_float_image_batch_is_refused(digits):
    x_t, train = digits
    with pytest.raises(TypeError, match=r"x_t must be a floating-point tensor \[B, C, H, W\], not a torch.int64"):
        ideal.local_denoiser(x_t.long(), 0.5, train, 3)
    with pytest.raises(ValueError, match="train is on meta and x_t on cpu"):
        ideal.ideal_denoiser(x_t, 0.5, train.to("meta"))


def test_t_nan_is_refused(digits):
    x_t, train = digits
    with pytest.raises(ValueError, match="t must be a finite number"):
        ideal.ideal_velocity(x_t, math.nan, train)


@pytest.mark.parametrize("times, sizes, message", [
    ([], [], "at least one of each"), ([0.5, 0.2], [3], "one size per time"),
    ([0.5], [4], "must be odd"), ([0.5], [0], "must be at least 1"), ([math.inf], [3], "must be a finite number"),
])
def test_locality_schedule_is_checked_on_construction(times, sizes, message):
    with pytest.raises(ValueError, match=message):
        LocalitySchedule(times, sizes)


def test_locality_schedule_picks_the_nearest_step():
    schedule = LocalitySchedule([0.9, 0.5, 0.1], [7, 5.0, 3])
    assert [schedule(t) for t in (1.0, 0.6, 0.05)] == [7, 5, 3] and schedule.sizes == [7, 5, 3]


@pytest.mark.parametrize("steps, error, message", [(0, ValueError, "steps must be at least 1, not 0"),
                                                   (-3, ValueError, "steps must be at least 1, not -3"),
                                                   (2.5, TypeError, "steps must be a whole number, not 2.5")])
def test_machine_sample_steps_are_checked(digits, steps, error, message):
    x_t, train = digits
    with pytest.raises(error, match=message):
        ideal.sample(lambda x, t: ideal.ideal_denoiser(x, t, train), x_t, steps)


def test_machine_sample_returns_finite_results(digits):
    x_t, train = digits
    x, trajectory = ideal.sample(lambda x, t: ideal.local_denoiser(x, t, train, 3), x_t, 3, return_trajectory=True)
    assert torch.isfinite(x).all() and trajectory.shape == (4, *x_t.shape)
    with pytest.raises(FloatingPointError, match="the machine's sample has 72 non-finite values"):
        ideal.sample(lambda x, t: torch.full_like(x, math.inf), x_t, 2)


def test_denoisers_refuse_to_return_non_finite_results(digits):
    x_t, train = digits
    bad = x_t.clone()
    bad[0, 0, 0, 0] = math.nan
    with pytest.raises(FloatingPointError, match="the LS denoiser's x0_hat has .* non-finite"):
        ideal.local_denoiser(bad, 0.5, train, 3)
    with pytest.raises(FloatingPointError, match="the ELS denoiser's x0_hat has .* non-finite"):
        ideal.els_denoiser(bad, 0.5, train, 3)


# --- plotting ------------------------------------------------------------------------------------------------

def test_plots_refuse_empty_inputs_and_bad_ranges():
    with pytest.raises(ValueError, match="show_grids needs at least one panel"):
        plotting.show_grids({}, "nothing")
    with pytest.raises(ValueError, match="show_table needs at least one row"):
        plotting.show_table([], "nothing")
    with pytest.raises(ValueError, match="plot_losses needs at least one curve"):
        plotting.plot_losses({}, "nothing")
    with pytest.raises(ValueError, match=r"value_range must be \(low, high\) with low < high"):
        plotting.show_table([torch.zeros(1, 1, 4, 4)], "flat", value_range=(1.0, 1.0))
