"""Load a user's image (a path or an http(s) URL) as a [1, C, H, W] tensor in [-1, 1], or say what is wrong.

The backends need an exact shape ([1, 1, 32, 32] for the project's digits, [1, 3, 64, 64] for DeepFloyd IF
stage 1). A mismatch is never silently fixed: pass ``resize=True`` to centre-crop to a square and resize
(torchvision, antialiased), and the channels are converted explicitly (RGB -> grey by luminance, grey ->
RGB by repetition). Digits are white on black, as in MNIST: ``invert=True`` turns a dark drawing on
white paper into that.

A transparent image (RGBA, LA, or a palette with a transparent colour: the usual export of a drawing
program) is composited over the paper its strokes were drawn on before the channels are converted:
white paper with ``invert=True`` (a dark drawing), black otherwise (light strokes, as MNIST's), so
the drawing survives where a plain conversion would drop the alpha channel and keep only the ink.
"""
import io
import urllib.error
import urllib.request
from pathlib import Path

import torch
import torchvision.transforms.functional as TF
from PIL import Image, UnidentifiedImageError

from helpers.foundation.validate import count


class ImageError(ValueError):
    """An image that cannot be used as given; the message says how to fix it."""


def _read_url(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise ImageError(f"{url} could not be reached ({reason}): check the address and the network, or download "
                         "the image and pass its path") from None


def _open(source) -> Image.Image:
    text = str(source)
    is_url = text.startswith(("http://", "https://"))
    if not is_url and not Path(text).exists():
        raise ImageError(f"no image at {text}: check the path (relative paths start from the notebook's folder)")
    try:
        image = Image.open(io.BytesIO(_read_url(text)) if is_url else text)
        image.load()
        return image
    except (UnidentifiedImageError, OSError) as error:
        raise ImageError(f"{text} could not be read as an image ({type(error).__name__}): use a PNG or JPEG file "
                         "or URL") from None


def _flatten_transparency(image: Image.Image, paper: tuple[int, int, int]) -> Image.Image:
    """An opaque RGB image: `image` composited (alpha over) onto a sheet of colour `paper`, if it has alpha."""
    if "A" not in image.getbands() and "transparency" not in image.info:
        return image
    sheet = Image.new("RGBA", image.size, (*paper, 255))
    return Image.alpha_composite(sheet, image.convert("RGBA")).convert("RGB")


def load_image(source, size: int, channels: int, resize: bool = False, invert: bool = False) -> torch.Tensor:
    """[1, channels, size, size] in [-1, 1] from a path or URL."""
    if channels not in (1, 3):
        raise ImageError(f"channels must be 1 (grey) or 3 (RGB), not {channels}")
    size = count(size, "size")
    image = _flatten_transparency(_open(source), (255, 255, 255) if invert else (0, 0, 0))
    image = image.convert("L" if channels == 1 else "RGB")
    x = TF.pil_to_tensor(image).float() / 255
    if tuple(x.shape[-2:]) != (size, size):
        if not resize:
            raise ImageError(f"{source} is {x.shape[-1]} x {x.shape[-2]} pixels; this backend needs {size} x {size}. "
                             "Pass resize=True to centre-crop and resize it, or resize it yourself.")
        x = TF.resize(TF.center_crop(x, min(x.shape[-2:])), [size, size], antialias=True)
    if invert:
        x = 1 - x
    return (x * 2 - 1).unsqueeze(0).clamp(-1, 1)
