"""The samples ``bitspike sim`` drives through the hardware: a data set, a user's array file, or random inputs.

Every source ends in the same checked array ``[N, *manifest.input.shape]`` of
integers in ``0 … 2**input.bits − 1`` (docs/HARDWARE_INTERFACE.md: the pixel
stream carries them unsigned, ``input.bits`` wide). A file that does not fit
gets an error naming what was expected, and for an out-of-range value its
index, the value and the range.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from bitspike.errors import HardwareError

__all__ = ["check_inputs", "load_inputs", "random_inputs", "inputs_digest", "INPUT_KEYS", "LABEL_KEY"]

#: array names an .npz may use for the inputs (else its only array other than the labels)
INPUT_KEYS = ("inputs", "images", "x")
#: array name of the optional labels in an .npz
LABEL_KEY = "labels"


def check_inputs(x, manifest, source: str = "inputs") -> np.ndarray:
    """``x`` as an int64 array ``[N, *manifest.input.shape]``, or a :class:`HardwareError` saying what is wrong.

    Parameters
    ----------
    x
        Array-like of integers (a float array is accepted when every value is an integer).
    manifest
        The network; its ``input.shape`` and ``input.bits`` define what fits.
    source
        How to name the data in messages (a file name).
    """
    shape = tuple(int(v) for v in manifest.input.shape)
    bits = int(manifest.input.bits)
    arr = np.asarray(x)
    expected = f"[N, {', '.join(map(str, shape))}] (N samples of the manifest's input {list(shape)})"
    if arr.ndim == len(shape) and tuple(arr.shape) == shape:
        arr = arr[None]  # one sample without the batch axis
    if arr.ndim != len(shape) + 1 or tuple(arr.shape[1:]) != shape:
        raise HardwareError(f"{source}: shape {list(arr.shape)} does not fit manifest '{manifest.name}': "
                            f"expected {expected}")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            idx = tuple(int(v) for v in np.argwhere(bad)[0])
            raise HardwareError(f"{source}{list(idx)} = {float(arr[idx])} is not an integer: inputs are unsigned "
                                f"{bits}-bit integers 0 … {2**bits - 1}")
        big = np.abs(arr) >= 2.0**62
        if big.any():
            idx = tuple(int(v) for v in np.argwhere(big)[0])
            raise HardwareError(f"{source}{list(idx)} = {float(arr[idx])} is outside 0 … {2**bits - 1} "
                                f"(the manifest's input is {bits}-bit unsigned)")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "ui":
        raise HardwareError(f"{source}: dtype {arr.dtype} is not an integer type: inputs are unsigned {bits}-bit "
                            f"integers 0 … {2**bits - 1}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) >= 2**63:
        idx = tuple(int(v) for v in np.unravel_index(int(arr.argmax()), arr.shape))
        raise HardwareError(f"{source}{list(idx)} = {int(arr[idx])} is outside 0 … {2**bits - 1} "
                            f"(the manifest's input is {bits}-bit unsigned)")
    arr = arr.astype(np.int64)
    top = (1 << bits) - 1
    bad = (arr < 0) | (arr > top)
    if bad.any():
        idx = tuple(int(v) for v in np.argwhere(bad)[0])
        raise HardwareError(f"{source}{list(idx)} = {int(arr[idx])} is outside 0 … {top} "
                            f"(the manifest's input is {bits}-bit unsigned; {int(bad.sum())} value(s) outside)")
    return np.ascontiguousarray(arr)


def _check_labels(labels, n: int, classes: int, source: str) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) != n:
        raise HardwareError(f"{source}['{LABEL_KEY}']: shape {list(lab.shape)}, expected [{n}] (one label per sample)")
    if lab.dtype.kind not in "ui" and not (lab.dtype.kind == "f" and np.all(lab == np.round(lab))):
        raise HardwareError(f"{source}['{LABEL_KEY}']: dtype {lab.dtype}, expected integer class indices")
    lab = lab.astype(np.int64)
    bad = (lab < 0) | (lab >= classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise HardwareError(f"{source}['{LABEL_KEY}'][{i}] = {int(lab[i])} is not a class index 0 … {classes - 1}")
    return lab


def load_inputs(path: str | os.PathLike, manifest) -> tuple[np.ndarray, np.ndarray | None]:
    """Read samples (and optional labels) from an ``.npy`` or ``.npz`` file.

    An ``.npy`` holds the inputs ``[N, *input.shape]``. An ``.npz`` holds them
    under ``inputs`` (or ``images``, ``x``, or as its only array) and may hold
    ``labels`` ``[N]``. Nothing is unpickled (``allow_pickle=False``).

    Returns
    -------
    inputs, labels
        Checked int64 inputs (:func:`check_inputs`) and int64 labels or ``None``.
    """
    p = Path(path)
    name = p.name
    if not p.is_file():
        raise HardwareError(f"--inputs {p}: no such file")
    try:
        if p.suffix == ".npy":
            return check_inputs(np.load(p, allow_pickle=False), manifest, name), None
        if p.suffix != ".npz":
            raise HardwareError(f"--inputs {p}: expected an .npy or .npz file (numpy.save / numpy.savez)")
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.files)
            key = next((k for k in INPUT_KEYS if k in keys), None)
            others = [k for k in keys if k != LABEL_KEY]
            if key is None and len(others) == 1:
                key = others[0]
            if key is None:
                raise HardwareError(f"--inputs {p}: holds arrays {keys}; expected the inputs under one of "
                                    f"{list(INPUT_KEYS)} (and optionally '{LABEL_KEY}')")
            x = check_inputs(z[key], manifest, f"{name}['{key}']")
            labels = _check_labels(z[LABEL_KEY], len(x), manifest.num_classes, name) if LABEL_KEY in keys else None
            return x, labels
    except HardwareError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        # object arrays (pickles) and damaged files end here
        raise HardwareError(f"--inputs {p}: cannot read it as a numpy array file without pickles ({exc})") from None


def random_inputs(manifest, n: int, seed: int) -> np.ndarray:
    """``n`` random samples, uniform over every legal input integer (seeded, reproducible).

    Sample 0 is all ``2**bits − 1`` and sample 1 all zeros (when ``n`` allows): the
    extremes of the input range are always among the cases.
    """
    if n < 1:
        raise HardwareError(f"--random must be a positive number of samples, not {n}")
    bits = int(manifest.input.bits)
    x = np.random.default_rng(seed).integers(0, 1 << bits, size=(n, *manifest.input.shape), dtype=np.int64)
    x[0] = (1 << bits) - 1
    if n > 1:
        x[1] = 0
    return x


def inputs_digest(x: np.ndarray, labels: np.ndarray | None) -> str:
    """SHA-256 of the inputs (shape and values) and labels: shards of one run must agree on it."""
    h = hashlib.sha256()
    x = np.ascontiguousarray(x, dtype="<i8")
    h.update(repr(tuple(x.shape)).encode())
    h.update(x.tobytes())
    if labels is not None:
        h.update(b"labels")
        h.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    return h.hexdigest()
