"""Test fixtures for bitspike and for code built on it (as ``numpy.testing`` is for numpy).

Random networks (:mod:`bitspike.testing.nets`)
    :func:`random_mlp`, :func:`random_cnn`: a valid random manifest from a seed;
    :class:`NetBuilder`: one put together layer by layer; :func:`random_weights`
    and :func:`requant_for` for layers built by hand.
A stand-in accelerator (:mod:`bitspike.testing.standin`)
    :func:`standin_verilog`: a tiny design with the generated top's ports
    (docs/HARDWARE_INTERFACE.md), which builds in seconds, for tests of the
    co-simulation harness, the build flow and the diagnosis without the
    generator; :func:`standin_reference` (its logits), :func:`standin_cosim`
    and :class:`StandinGoldenTaps`.

Everything here is deterministic: the same arguments give the same manifest or
design, byte for byte.
"""

from .nets import NetBuilder, fashion_cnn_shaped, random_cnn, random_mlp, random_weights, requant_for
from .standin import StandinGoldenTaps, standin_cosim, standin_reference, standin_verilog

__all__ = [
    "NetBuilder",
    "random_mlp",
    "random_cnn",
    "fashion_cnn_shaped",
    "random_weights",
    "requant_for",
    "standin_verilog",
    "standin_reference",
    "standin_cosim",
    "StandinGoldenTaps",
]
