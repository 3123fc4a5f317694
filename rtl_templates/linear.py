"""The linear engine: a :class:`~.synapse.SynapticEngine` on a 1×1 map with ``in`` channels."""

from __future__ import annotations

import numpy as np

from .synapse import SynapticEngine, TapSignature, partial_sum_range

__all__ = ["LinearEngine", "TapSignature", "partial_sum_range"]


class LinearEngine(SynapticEngine):
    """Neuron + fully connected synapse + requantizer (see :class:`~.synapse.SynapticEngine`).

    ``weight`` is ``[out, in]`` with columns in the order the inputs stream in.
    """

    def __init__(self, *, weight, **kwargs):
        weight = np.asarray(weight, dtype=np.int64)
        if weight.ndim != 2:
            raise ValueError(f"LinearEngine weight must be [out, in], got shape {list(weight.shape)}")
        super().__init__(weight=weight[:, :, None, None], **kwargs)
