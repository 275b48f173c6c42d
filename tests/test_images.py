"""Loading a user's image: exact shapes, explicit conversions, clear errors."""
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers.foundation.images import ImageError, load_image

DRAWN = Path(__file__).resolve().parent.parent / "data" / "drawn"


def test_shipped_drawings_load_as_digits():
    x = load_image(DRAWN / "two.png", 32, 1)
    assert x.shape == (1, 1, 32, 32) and x.min() == -1 and x.max() > 0.9


def test_rgb_image_is_converted_and_resized_only_when_asked(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (80, 60), (255, 0, 0)).save(path)
    with pytest.raises(ImageError, match="80 x 60 pixels; this backend needs 64 x 64"):
        load_image(path, 64, 3)
    x = load_image(path, 64, 3, resize=True)
    assert x.shape == (1, 3, 64, 64)
    assert torch.allclose(x[0, :, 32, 32], torch.tensor([1.0, -1.0, -1.0]))
    grey = load_image(path, 64, 1, resize=True)
    assert grey.shape == (1, 1, 64, 64)


def test_unreadable_and_missing_images(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="could not be read as an image"):
        load_image(bad, 32, 1)
    with pytest.raises(ImageError, match="no image at"):
        load_image(tmp_path / "missing.png", 32, 1)
    with pytest.raises(ImageError, match="channels must be"):
        load_image(DRAWN / "two.png", 32, 2)
