"""Tests of bitspike.host.data: shapes, the fixed digits split, clear errors for missing data."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from bitspike.errors import DatasetError
from bitspike.host.data import FASHION_MNIST_DIR, images_for_manifest, load_dataset
from bitspike.testing import random_mlp


def test_digits_split_is_fixed_and_stratified():
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert len(train) == 1437 and len(test) == 360
    assert train.images.dtype == np.uint8 and train.images.shape == (1437, 1, 8, 8)
    assert test.labels.dtype == np.int64
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    # stratified: every class has 36 or 37 test images
    counts = np.bincount(test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    # the same every time (and pixels follow round(v*255/16))
    again = load_dataset("digits", "test")
    assert np.array_equal(again.images, test.images) and np.array_equal(again.labels, test.labels)
    from sklearn.datasets import load_digits

    allowed = set(np.round(np.arange(17) * 255 / 16).astype(int).tolist())
    assert set(np.unique(test.images).tolist()) <= allowed
    assert len(load_digits().target) == len(train) + len(test)


def test_unknown_name_and_split():
    with pytest.raises(DatasetError, match="unknown data set 'mnist3'"):
        load_dataset("mnist3")
    with pytest.raises(DatasetError, match="unknown split"):
        load_dataset("digits", "validation")


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError, match="--data PATH"):
        load_dataset("fashion-mnist", "test", path=tmp_path)


def test_cifar10_needs_a_path(tmp_path):
    with pytest.raises(DatasetError, match="cifar-10-python"):
        load_dataset("cifar10")
    with pytest.raises(DatasetError, match="data_batch_1"):
        load_dataset("cifar10", "train", path=tmp_path)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_a_folder_and_truncated_file(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 28, 28))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(5))
    ds = load_dataset("fashion-mnist", "test", path=tmp_path)
    assert ds.images.shape == (5, 1, 28, 28) and np.array_equal(ds.images[:, 0], imgs)
    assert ds.labels.tolist() == [0, 1, 2, 3, 4] and len(ds.classes) == 10
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(bytes([0, 0, 8, 3]) + (9).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 10)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(9))
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset("fashion-mnist", "train", path=tmp_path)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_debian_package():
    ds = load_dataset("fashion-mnist", "test")
    assert ds.images.shape == (10000, 1, 28, 28) and np.bincount(ds.labels).tolist() == [1000] * 10


def test_images_for_manifest_flattens_c_major():
    m = random_mlp(0, [64, 16, 10])
    test = load_dataset("digits", "test")
    flat = images_for_manifest(test.images[:3], m)
    assert flat.shape == (3, 64)
    assert np.array_equal(flat[1], test.images[1].reshape(-1))
    with pytest.raises(DatasetError, match="do not fit"):
        images_for_manifest(np.zeros((2, 1, 28, 28), np.uint8), m)


def test_cifar10_python_batches(tmp_path):
    import pickle

    rng = np.random.default_rng(1)
    for name, n in [(f"data_batch_{i}", 3) for i in range(1, 6)] + [("test_batch", 4)]:
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"labels": list(range(n))}
        with open(tmp_path / name, "wb") as fh:
            pickle.dump(batch, fh)
    train = load_dataset("cifar10", "train", path=tmp_path)
    test = load_dataset("cifar10", "test", path=tmp_path)
    assert train.images.shape == (15, 3, 32, 32) and test.labels.tolist() == [0, 1, 2, 3]
    assert train.classes[0] == "airplane"
    (tmp_path / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="not a CIFAR-10 python batch"):
        load_dataset("cifar10", "test", path=tmp_path)


class _Evil:
    """A pickle that would run a command when plainly unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_cifar10_loader_refuses_arbitrary_pickles(tmp_path):
    import pickle

    marker = tmp_path / "pwned"
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": [0]}))
    with pytest.raises(DatasetError, match="os.system|posix.system|refused"):
        load_dataset("cifar10", "test", path=tmp_path)
    assert not marker.exists()
    # well-formed pickles with the wrong contents are refused with what was expected
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.int64), b"labels": [0, 1]}))
    with pytest.raises(DatasetError, match="uint8 array"):
        load_dataset("cifar10", "test", path=tmp_path)
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 11]}))
    with pytest.raises(DatasetError, match="integers 0"):
        load_dataset("cifar10", "test", path=tmp_path)
