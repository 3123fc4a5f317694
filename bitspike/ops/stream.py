"""Stream order: the order in which a tensor's elements cross the hardware's streams.

A leaf below the op modules (it imports only :mod:`bitspike.ops.base` and
:mod:`bitspike.errors`): an op's plan rule needs its input's stream order
(a linear layer after a flatten permutes its weight columns to match), and the
host-side interface helpers (:mod:`bitspike.gen.interface`, which re-exports
these names) need it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from bitspike.errors import HardwareError

from .base import OPS

if TYPE_CHECKING:  # pragma: no cover
    from bitspike.manifest import Manifest

__all__ = ["hwc_order", "input_order", "stream_order"]


def hwc_order(shape: tuple[int, ...]) -> np.ndarray:
    """Flat (C-major) indices of a ``[C, H, W]`` (or flat) tensor in stream order (HWC, channel fastest)."""
    if len(shape) == 1:
        return np.arange(shape[0], dtype=np.int64)
    if len(shape) != 3:
        raise HardwareError(f"stream order is defined for [F] or [C, H, W] shapes, not {list(shape)}")
    c, h, w = shape
    return np.arange(c * h * w, dtype=np.int64).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def input_order(manifest: Manifest) -> np.ndarray:
    """Permutation ``p`` such that beat ``n`` of an inference carries ``image.reshape(-1)[p[n]]``."""
    return hwc_order(tuple(manifest.input.shape))


def stream_order(manifest: Manifest, source: str) -> np.ndarray:
    """Stream order of the tensor that ``source`` (a layer name or ``"input"``) produces.

    Feature maps stream HWC; a flatten keeps its input's order (the generator
    permutes the next linear layer's weight columns instead of the data).
    """
    if source == "input":
        return input_order(manifest)
    layer = manifest.layer(source)
    if OPS[layer.op].passthrough_stream:
        return stream_order(manifest, layer.inputs[0])
    return hwc_order(tuple(layer.out_shape))
