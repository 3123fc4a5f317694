"""The conv2d engine: a :class:`~.synapse.SynapticEngine` sliding a kh×kw window (stride, zero padding)."""

from __future__ import annotations

import numpy as np

from .synapse import SynapticEngine

__all__ = ["ConvEngine"]


class ConvEngine(SynapticEngine):
    """Neuron + 2-D convolution + requantizer on an HWC stream (see :class:`~.synapse.SynapticEngine`).

    ``weight`` is ``[out, in / groups, kh, kw]`` (torch layout); ``in_hw`` the input map size;
    ``groups`` (keyword, default 1) makes it a grouped or, with ``groups`` = in channels, a depthwise
    convolution.
    """

    def __init__(self, *, weight, in_hw, **kwargs):
        weight = np.asarray(weight, dtype=np.int64)
        if weight.ndim != 4:
            raise ValueError(f"ConvEngine weight must be [out, in / groups, kh, kw], got shape {list(weight.shape)}")
        super().__init__(weight=weight, in_hw=in_hw, **kwargs)
