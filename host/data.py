"""Data sets: read from disk, never downloaded at run time.

Every data set comes back as a :class:`Dataset` of ``uint8`` images
``[N, C, H, W]`` and ``int64`` labels, the same for training, export,
co-simulation and the board. The manifest's input is unsigned 8-bit pixels
with ``scale = 1/255``, so training feeds the networks ``images / 255``.

Names
-----
``digits``
    scikit-learn's 8×8 digits (ships inside the wheel). Pixels 0 … 16 become
    ``round(v * 255 / 16)``. A fixed stratified 80/20 split (seed 0): 1437
    training and 360 test images, the same everywhere in bitspike.
``fashion-mnist``
    The IDX ``.gz`` files of the Debian package ``dataset-fashion-mnist``
    (``/usr/share/datasets/fashion-mnist``) or of the folder ``path``.
``cifar10``
    The standard CIFAR-10 "python version" batches (``data_batch_1`` …
    ``data_batch_5``, ``test_batch``) in the folder ``path``.
"""

from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from bitspike.errors import DatasetError

__all__ = ["Dataset", "DATASETS", "load_dataset", "images_for_manifest", "FASHION_MNIST_DIR"]

#: where the Debian package ``dataset-fashion-mnist`` puts its files
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: the names :func:`load_dataset` knows
DATASETS = ("digits", "fashion-mnist", "cifar10")

SPLITS = ("train", "test")

DIGITS_SPLIT_SEED = 0

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split of a data set.

    Attributes
    ----------
    name
        The data set's name (``"digits"``, ...).
    images
        ``uint8`` array ``[N, C, H, W]``: pixels 0 … 255 (real value = pixel / 255).
    labels
        ``int64`` array ``[N]``.
    classes
        Label names, one per class.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of one image, ``(C, H, W)``."""
        return tuple(int(v) for v in self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return f"Dataset(name={self.name!r}, images=<uint8 {list(self.images.shape)}>, labels=<{len(self)}>, classes={len(self.classes)})"


def load_dataset(name: str, split: str = "test", path: str | os.PathLike | None = None) -> Dataset:
    """Load one split of a data set.

    Parameters
    ----------
    name
        One of :data:`DATASETS`.
    split
        ``"train"`` or ``"test"``.
    path
        Folder holding the files (fashion-mnist: optional, default the Debian
        package's folder; cifar10: required).

    Raises
    ------
    DatasetError
        For an unknown name or split, or missing or malformed files; the message says how to get them.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    if name == "digits":
        return _digits(split)
    if name in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        return _fashion_mnist(split, None if path is None else str(path))
    if name in ("cifar10", "cifar-10"):
        return _cifar10(split, None if path is None else str(path))
    raise DatasetError(f"unknown data set {name!r}; expected one of {list(DATASETS)}")


def images_for_manifest(images: np.ndarray, manifest) -> np.ndarray:
    """Reshape ``[N, C, H, W]`` images to ``[N, *manifest.input.shape]``.

    A flat input (MLP) takes the C-major flatten of each image, as ``torch.flatten``.

    Raises
    ------
    DatasetError
        When the image size does not match the manifest's input.
    """
    images = np.asarray(images)
    shape = tuple(manifest.input.shape)
    if images.ndim < 2:
        raise DatasetError(f"expected a batch of images [N, C, H, W], got shape {list(images.shape)}")
    per_image = int(np.prod(images.shape[1:]))
    if per_image != int(np.prod(shape)):
        raise DatasetError(
            f"images of shape {list(images.shape[1:])} ({per_image} values) do not fit the manifest's input "
            f"{list(shape)} ({int(np.prod(shape))} values): wrong data set for this network?"
        )
    if len(shape) == 3 and tuple(images.shape[1:]) != shape:
        raise DatasetError(f"images of shape {list(images.shape[1:])} do not match the manifest's input {list(shape)}")
    return np.ascontiguousarray(images.reshape((images.shape[0],) + shape))


# ----------------------------------------------------------------------------------------------
# digits


@lru_cache(maxsize=None)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:  # pragma: no cover - sklearn is a dependency
        raise DatasetError("the digits data set needs scikit-learn: pip install scikit-learn") from None
    raw = load_digits()
    pixels = np.round(raw.data.astype(np.float64) * 255.0 / 16.0).astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = raw.target.astype(np.int64)
    index = np.arange(len(labels))
    train_idx, test_idx = train_test_split(
        index, test_size=0.2, stratify=labels, random_state=DIGITS_SPLIT_SEED, shuffle=True
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return pixels[train_idx], labels[train_idx], pixels[test_idx], labels[test_idx]


def _digits(split: str) -> Dataset:
    xtr, ytr, xte, yte = _digits_arrays()
    x, y = (xtr, ytr) if split == "train" else (xte, yte)
    x.setflags(write=False)
    y.setflags(write=False)
    return Dataset("digits", x.copy(), y.copy(), [str(i) for i in range(10)])


# ----------------------------------------------------------------------------------------------
# fashion-mnist (IDX files)


def _read_idx(path: Path, what: str) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read {what} ({exc}); the file is truncated or not an IDX file") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    count = int(np.prod(dims))
    if len(data) != header + count:
        raise DatasetError(f"{path}: expected {count} values for shape {dims}, found {len(data) - header}; truncated?")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=4)
def _fashion_mnist_cached(split: str, folder: str) -> tuple[np.ndarray, np.ndarray]:
    root = Path(folder)
    prefix = "train" if split == "train" else "t10k"
    img_path = _find(root, f"{prefix}-images-idx3-ubyte")
    lbl_path = _find(root, f"{prefix}-labels-idx1-ubyte")
    if img_path is None or lbl_path is None:
        hint = (
            "install the Debian package (apt-get install dataset-fashion-mnist) "
            if root == FASHION_MNIST_DIR
            else ""
        )
        raise DatasetError(
            f"fashion-mnist {split} files ({prefix}-images-idx3-ubyte[.gz], {prefix}-labels-idx1-ubyte[.gz]) "
            f"not found in {root}: {hint}or pass --data PATH to a folder holding the IDX files"
        )
    images = _read_idx(img_path, "images")
    labels = _read_idx(lbl_path, "labels").astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{root}: images {list(images.shape)} and labels {list(labels.shape)} do not match")
    return images.reshape(-1, 1, images.shape[1], images.shape[2]), labels


def _fashion_mnist(split: str, path: str | None) -> Dataset:
    folder = str(FASHION_MNIST_DIR if path is None else Path(path))
    images, labels = _fashion_mnist_cached(split, folder)
    return Dataset("fashion-mnist", images.copy(), labels.copy(), list(FASHION_CLASSES))


# ----------------------------------------------------------------------------------------------
# cifar10 (python batches)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 python batch and nothing else.

    The official batches are pickles of a dict of bytes keys, lists of ints and
    one uint8 numpy array. A pickle can name any importable callable, so
    loading a file from a user's path with plain :func:`pickle.load` could run
    arbitrary code; this unpickler resolves only numpy's array reconstruction
    (the Python docs' "restricting globals") and the arrays are checked after.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def __init__(self, fh):
        super().__init__(fh, encoding="bytes")

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise DatasetError(f"the pickle names {module}.{name}, which a CIFAR-10 batch never holds (refused)")
        return super().find_class(module, name)


def _cifar_arrays(batch) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 3, 32, 32]`` uint8 and labels ``[N]`` of an unpickled batch, checked."""
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError("expected a dict with the keys b'data' and b'labels'")
    data, lab = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError("b'data' must be a uint8 array [N, 3072]")
    if not isinstance(lab, list) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10 for v in lab):
        raise DatasetError("b'labels' must be a list of integers 0 … 9")
    if len(lab) != len(data):
        raise DatasetError(f"{len(data)} images but {len(lab)} labels")
    return data.reshape(-1, 3, 32, 32).copy(), np.asarray(lab, dtype=np.int64)


def _cifar10(split: str, path: str | None) -> Dataset:
    how = (
        "download 'CIFAR-10 python version' (cifar-10-python.tar.gz) from https://www.cs.toronto.edu/~kriz/cifar.html, "
        "unpack it, and pass --data PATH to the folder holding data_batch_1 … data_batch_5 and test_batch"
    )
    if path is None:
        raise DatasetError(f"cifar10 is not bundled: {how}")
    root = Path(path)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for n in names:
        f = root / n
        if not f.is_file():
            raise DatasetError(f"cifar10 file {f} not found: {how}")
        try:
            with open(f, "rb") as fh:
                batch = _CifarUnpickler(fh).load()  # the official format is a pickle: read it restricted
            data, lab = _cifar_arrays(batch)
        except DatasetError as exc:
            raise DatasetError(f"{f}: not a CIFAR-10 python batch ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - any unpickling problem means a bad file
            raise DatasetError(f"{f}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
        images.append(data)
        labels.append(lab)
    return Dataset("cifar10", np.concatenate(images), np.concatenate(labels), list(CIFAR10_CLASSES))
