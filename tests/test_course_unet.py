import pytest
import torch

from helpers.course_unet import ConditionalCourseUNet, CourseUNet
from helpers.foundation.checkpoint_files import CheckpointError
from helpers.training import runs


@pytest.mark.parametrize("size", [28, 32])
def test_shapes(size):
    model = CourseUNet(hidden=8, image_size=size)
    assert model(torch.randn(3, 1, size, size)).shape == (3, 1, size, size)


def test_wrong_shape_gives_clear_error():
    model = CourseUNet(hidden=8, image_size=28)
    with pytest.raises(ValueError, match=r"expects images of shape \[B, 1, 28, 28\], got \[1, 28, 28\]"):
        model(torch.randn(1, 28, 28))
    with pytest.raises(ValueError, match="resize to 28 x 28"):
        model(torch.randn(2, 1, 32, 32))


def test_image_size_must_allow_two_downsamplings():
    with pytest.raises(ValueError, match="divisible by 4"):
        CourseUNet(image_size=30)


def _forward_by_hand(model, x, t, form):
    """The decoder modulated as the course documents write it (Part B 2.1 and 2.4), from the model's own parts."""
    skips, unflatten = model.encode(x)
    t = t.view(-1, 1)
    t1, t2 = model.fc1_t(t)[:, :, None, None], model.fc2_t(t)[:, :, None, None]
    if form == "multiply":
        return model.decode(skips, unflatten * t1, modulate_up1=lambda up1: up1 * t2)
    return model.decode(skips, unflatten + t1, modulate_up1=lambda up1: up1 + t2)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["multiply", "add"])
def test_time_only_modulation_follows_its_formula(form):
    torch.manual_seed(0)
    model = ConditionalCourseUNet(hidden=8, image_size=12, time_modulation=form).eval()
    x, t = torch.randn(3, 1, 12, 12), torch.tensor([0.1, 0.5, 0.9])
    with torch.no_grad():
        for fc in (model.fc1_t, model.fc2_t):  # embeddings far from 0 and 1, so the two forms differ clearly
            fc[2].bias.fill_(3.0)
        assert torch.allclose(model(x, t), _forward_by_hand(model, x, t, form), atol=1e-6)
        other = "add" if form == "multiply" else "multiply"
        assert not torch.allclose(model(x, t), _forward_by_hand(model, x, t, other), atol=1e-3)
    assert model.config["time_modulation"] == form


def test_course_documents_forms_are_the_defaults():
    assert ConditionalCourseUNet(hidden=4, image_size=8).config["time_modulation"] == "multiply"
    conditional = ConditionalCourseUNet(hidden=4, image_size=8, num_classes=10)
    assert "time_modulation" not in conditional.config  # one form only: c1 * unflatten + t1
    with pytest.raises(ValueError, match="class-conditioned UNet adds t1 to c1 \\* unflatten"):
        ConditionalCourseUNet(hidden=4, image_size=8, num_classes=10, time_modulation="multiply")
    with pytest.raises(ValueError, match="must be one of"):
        ConditionalCourseUNet(hidden=4, image_size=8, time_modulation="scale")


def test_time_only_config_without_its_modulation_is_refused():
    config = dict(ConditionalCourseUNet(hidden=4, image_size=8).config)
    del config["time_modulation"]
    with pytest.raises(CheckpointError, match="saved before its config recorded the time modulation"):
        runs.build(config)
    assert runs.build(dict(config, time_modulation="add")).time_modulation == "add"
