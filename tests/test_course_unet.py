import pytest
import torch

from helpers.course_unet import CourseUNet


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
