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
from .ops.base import Layer, op_of, rounding_term

if TYPE_CHECKING:  # pragma: no cover
    from .manifest import Manifest


@dataclass(frozen=True)
class Range:
    """An inclusive integer interval with the register width that holds it."""

    lo: int
    hi: int

    def __post_init__(self):
        if self.lo > self.hi:
            raise ValueError(f"empty range [{self.lo}, {self.hi}]")

    @property
    def signed(self) -> bool:
        return self.lo < 0

    @property
    def width(self) -> int:
        """Bits of a two's-complement (if signed) or unsigned register that holds the range."""
        return bits_for(self.lo, self.hi)

    def union(self, other: "Range") -> "Range":
        return Range(min(self.lo, other.lo), max(self.hi, other.hi))

    def contains(self, lo: int, hi: int) -> bool:
        return self.lo <= lo and hi <= self.hi

    def to_json(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi, "width": self.width, "signed": self.signed}

    def __str__(self) -> str:
        return f"[{self.lo}, {self.hi}] ({'s' if self.signed else 'u'}{self.width})"


def bits_for(lo: int, hi: int) -> int:
    """Smallest register width holding every integer in [lo, hi] (two's complement when lo < 0)."""
    if lo >= 0:
        return max(1, int(hi).bit_length())
    # signed: need -2**(w-1) <= lo and hi <= 2**(w-1) - 1
    return max(int(-lo - 1).bit_length(), int(hi).bit_length()) + 1


#: Every register but the two product registers must fit in this many bits (two's complement):
#: [−2**61, 2**61 − 1]. Then the golden model's int64 arithmetic on them is exact, including the
#: neuron's 2·v + θ and the sum of two such values, and every debug tap fits a 64-bit word.
REGISTER_BITS = 62
REGISTER_LO, REGISTER_HI = -(2 ** (REGISTER_BITS - 1)), 2 ** (REGISTER_BITS - 1) - 1
#: the registers :data:`REGISTER_BITS` applies to, with the words an error message uses for them
BOUNDED_REGISTERS = {
    "x": "input current",
    "x_b": "second input current",
    "v": "membrane",
    "s": "spike",
    "count": "spike count",
    "acc": "accumulator",
    "out": "output current",
}
INT64_LO, INT64_HI = -(2**63), 2**63 - 1


def _shift_round(value: int, shift: int) -> int:
    return (value + rounding_term(shift)) >> shift


#: currents ranges up to this many values are analysed by evaluating the neuron on every one of them
EXACT_NEURON_LIMIT = 1 << 22


def neuron_membrane_bounds(x: Range, k: int, s_bits: int, timesteps: int) -> list[Range]:
    """Sound bounds of v_t for t = 0 … T (v_T is computed by the last update, though unused).

    With r_t = v_t − s_t·θ the residue after the soft reset, v_(t+1) = r_t + x.
    For v ≤ U, r ≤ min(U, max(⌈θ/2⌉ − 1, U − qθ)); for v ≥ L, r ≥ L when
    2L + θ < 0 (no spike, r = v), else r ≥ min(−⌊θ/2⌋, L − qθ) (the rounding
    window, or saturation when L is past it). This forgets that r and x are
    correlated, so it can be loose by about θ/2; :func:`neuron_ranges` is exact.
    """
    theta = 1 << k
    q = 2**s_bits - 1
    half_up = (theta + 1) // 2 - 1  # largest r in the rounding window: r < θ/2
    half_down = -(theta // 2)  # smallest r in the rounding window: r >= -θ/2
    lo, hi = x.lo, x.hi
    out = [Range(lo, hi)]
    for _ in range(timesteps):
        r_hi = min(hi, max(half_up, hi - q * theta))
        if 2 * lo + theta < 0:
            r_lo = lo
        elif (2 * lo + theta) // (2 * theta) <= q:
            r_lo = half_down
        else:
            r_lo = lo - q * theta
        lo, hi = r_lo + x.lo, r_hi + x.hi
        out.append(Range(lo, hi))
    return out


def neuron_ranges(x: Range, k: int, s_bits: int, timesteps: int) -> tuple[list[Range], Range, Range]:
    """Ranges of the membrane per timestep, of one spike and of the spike count.

    Exact when the current range holds at most :data:`EXACT_NEURON_LIMIT`
    values (the neuron is evaluated on every one of them, which is cheap);
    otherwise the sound interval bound of :func:`neuron_membrane_bounds`.
    """
    theta = 1 << k
    q = 2**s_bits - 1
    if x.hi - x.lo + 1 <= EXACT_NEURON_LIMIT and max(abs(x.lo), abs(x.hi)) * (timesteps + 2) < 2**62:
        xs = np.arange(x.lo, x.hi + 1, dtype=np.int64)
        v = xs.copy()
        per_t = [Range(int(v.min()), int(v.max()))]
        count = np.zeros_like(xs)
        s_hi = 0
        for _ in range(timesteps):
            s = np.clip(np.floor_divide(2 * v + theta, 2 * theta), 0, q)
            v = v - s * theta + xs
            count += s
            s_hi = max(s_hi, int(s.max()))
            per_t.append(Range(int(v.min()), int(v.max())))
        return per_t, Range(0, s_hi), Range(0, int(count.max()))
    per_t = neuron_membrane_bounds(x, k, s_bits, timesteps)
    v_hi = max(r.hi for r in per_t)
    s_hi = max(0, min(q, (2 * v_hi + theta) // (2 * theta)))
    return per_t, Range(0, s_hi), Range(0, timesteps * s_hi)


@dataclass(frozen=True)
class LayerRanges:
    """Every register of one layer. Fields a layer kind lacks are ``None``."""

    name: str
    op: str
    x: Range  # input current (first input for add)
    out: Range  # output current (or logits)
    v: Range | None = None  # membrane, all timesteps
    v_per_t: tuple[Range, ...] | None = None
    s: Range | None = None  # spike value per timestep
    count: Range | None = None  # spike count Σ_t s_t
    acc: Range | None = None  # accumulator
    acc_per_channel: tuple[tuple[int, int], ...] | None = None
    product: Range | None = None  # acc·M + B (+ rnd) before the shift; add: a·Ma + b·Mb + rnd
    x_b: Range | None = None  # second input of an add

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "op": self.op}
        for key in ("x", "x_b", "v", "s", "count", "acc", "product", "out"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.to_json()
        return out


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
