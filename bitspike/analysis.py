"""Interval analysis: the range of every register of every layer, over all legal inputs.

The generator sizes hardware with these numbers and the golden model checks
every value it computes against them, so the analysis is tested on every run.

The bounds are *sound* (no legal input gives a value outside them). Neuron
registers are *exact*: the neuron is evaluated on every value of its current
range (up to 4M values; beyond that a sound interval recurrence is used).
Accumulator ranges are exact per output channel for a linear layer over the
legal spike counts (each weight's extreme taken independently), and currents
follow the requantizer's clamp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ManifestError
from .ops.base import Layer, op_of
from .ranges import (  # noqa: F401  (the interval types live in the leaf module; re-exported under their old names)
    BOUNDED_REGISTERS,
    EXACT_NEURON_LIMIT,
    INT64_HI,
    INT64_LO,
    REGISTER_BITS,
    REGISTER_HI,
    REGISTER_LO,
    LayerRanges,
    Range,
    bits_for,
    neuron_membrane_bounds,
    neuron_ranges,
)

if TYPE_CHECKING:  # pragma: no cover
    from .manifest import Manifest


def analyse_layer(layer: Layer, inputs: list[Range]) -> LayerRanges:
    """Ranges of one layer's registers given its input ranges (the op's range rule, :meth:`bitspike.ops.base.Op.ranges`)."""
    return op_of(layer).ranges(layer, inputs)


def analyse(manifest: Manifest) -> dict[str, LayerRanges]:
    """Ranges of every register of every layer, in layer order (keyed by layer name)."""
    current: dict[str, Range] = {"input": Range(0, 2**manifest.input.bits - 1)}
    out: dict[str, LayerRanges] = {}
    for layer in manifest.layers:
        ranges = analyse_layer(layer, [current[i] for i in layer.inputs])
        out[layer.name] = ranges
        current[layer.name] = ranges.out
    return out


def check_registers(manifest: Manifest, ranges: dict[str, LayerRanges] | None = None) -> dict[str, LayerRanges]:
    """Refuse a manifest with a register that might not fit :data:`REGISTER_BITS` bits.

    Called by validation (:func:`bitspike.manifest.from_parts`), so that every
    manifest that loads runs exactly in the golden model. The product
    registers are not limited: the golden model computes them exactly at any
    width (:func:`needs_wide_product`).

    Returns
    -------
    dict
        The ranges (as :func:`analyse`), so a caller need not analyse twice.

    Raises
    ------
    ManifestError
        Naming the layer and the register, with its proved range.
    """
    ranges = analyse(manifest) if ranges is None else ranges
    for index, layer in enumerate(manifest.layers):
        r = ranges[layer.name]
        for reg, words in BOUNDED_REGISTERS.items():
            value = getattr(r, reg)
            if value is not None and not (REGISTER_LO <= value.lo and value.hi <= REGISTER_HI):
                raise ManifestError(
                    f"register '{reg}' ({words}) can reach {value}, wider than the {REGISTER_BITS}-bit limit "
                    f"[{REGISTER_LO}, {REGISTER_HI}] (docs/SEMANTICS.md §6); "
                    "use smaller biases, clamp bounds or fan-in, or fewer sum-pooling stages",
                    layer=f"layer {index} '{layer.name}'",
                )
    return ranges


def needs_wide_product(layer: Layer, r: LayerRanges) -> bool:
    """Whether an int64 evaluation of the layer's product register could overflow.

    True when the requantizer's ``acc·M``, ``acc·M + B`` or ``acc·M + B + rnd``
    (the residual add's ``a·Ma``, ``b·Mb``, their sum, or the sum plus rnd)
    may leave int64 for some legal input: the golden model then computes that
    layer's product with Python integers. Layers without a product: False.
    Each op says for itself (:meth:`bitspike.ops.base.Op.wide_product`).
    """
    return op_of(layer).wide_product(layer, r)


# ----------------------------------------------------------------------------------------------
# network metrics (docs/SEMANTICS.md §3)


@dataclass(frozen=True)
class LayerStats:
    name: str
    op: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    w_bits: int | None = None
    s_bits: int | None = None
    timesteps: int | None = None
    params: int = 0
    weight_memory_bits: int = 0
    macs: int = 0
    s_ace: int = 0
    fixed: bool = False  # the first synaptic layer (8-bit input), left out of the averages

    @property
    def has_weights(self) -> bool:
        """A layer with weights (a synaptic layer): the ones the averages and S-ACE count."""
        return self.weight_memory_bits > 0

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class NetworkStats:
    layers: tuple[LayerStats, ...]
    avg_w_bits: float
    avg_s_bits: float
    avg_timesteps: float
    bit_budget: float
    s_ace: int
    s_ace_all: int
    weight_memory_bits: int
    params: int
    macs: int

    def to_json(self) -> dict[str, Any]:
        return {
            "layers": [l.to_json() for l in self.layers],
            "avg_bits": {"w": self.avg_w_bits, "s": self.avg_s_bits, "t": self.avg_timesteps},
            "bit_budget": self.bit_budget,
            "s_ace": self.s_ace,
            "s_ace_all_layers": self.s_ace_all,
            "weight_memory_bits": self.weight_memory_bits,
            "params": self.params,
            "macs": self.macs,
        }


def network_stats(manifest: Manifest) -> NetworkStats:
    """Per-layer and network metrics: average bits, bit budget, S-ACE, weight memory.

    Averages follow the paper: B̄_w weighted by each layer's weight count, B̄_s
    and T̄ by each layer's input feature-map size, over the learnable layers
    (every synaptic layer but the first, which is fixed at 8-bit input and
    weights). S-ACE leaves the first layer out as the paper does; ``s_ace_all``
    includes it.
    """
    stats: list[LayerStats] = []
    first = True
    for layer in manifest.layers:
        fields = op_of(layer).stats(layer)
        if fields:  # a layer with weights: the first one is the fixed one
            stats.append(LayerStats(layer.name, layer.op, layer.in_shape, layer.out_shape, **fields, fixed=first))
            first = False
        else:
            stats.append(LayerStats(layer.name, layer.op, layer.in_shape, layer.out_shape))
    learn = [s for s in stats if s.has_weights and not s.fixed]
    if not learn:  # a one-layer network: average over what there is
        learn = [s for s in stats if s.has_weights]
    wsum = sum(s.params for s in learn)
    fsum = sum(int(np.prod(s.in_shape)) for s in learn)
    avg_w = sum(s.params * s.w_bits for s in learn) / wsum
    avg_s = sum(int(np.prod(s.in_shape)) * s.s_bits for s in learn) / fsum
    avg_t = sum(int(np.prod(s.in_shape)) * s.timesteps for s in learn) / fsum
    syn = [s for s in stats if s.has_weights]
    return NetworkStats(
        layers=tuple(stats),
        avg_w_bits=avg_w,
        avg_s_bits=avg_s,
        avg_timesteps=avg_t,
        bit_budget=avg_w * avg_s * avg_t,
        s_ace=sum(s.s_ace for s in syn if not s.fixed),
        s_ace_all=sum(s.s_ace for s in syn),
        weight_memory_bits=sum(s.weight_memory_bits for s in syn),
        params=sum(s.params for s in syn),
        macs=sum(s.macs for s in syn),
    )
