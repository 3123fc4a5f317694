"""Integer intervals: the :class:`Range` of a register and the neuron's interval arithmetic.

A leaf of the package (it imports nothing of bitspike), so the op modules and the hardware templates can size
registers without importing the whole-network analysis
(:mod:`bitspike.analysis`, which iterates the op registry and re-exports
everything here under its old names).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Range", "LayerRanges", "bits_for", "neuron_membrane_bounds", "neuron_ranges", "REGISTER_BITS",
           "REGISTER_LO", "REGISTER_HI", "BOUNDED_REGISTERS", "INT64_LO", "INT64_HI", "EXACT_NEURON_LIMIT"]


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
