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

__all__ = ["Range", "LayerRanges", "bits_for", "neuron_membrane_bounds", "neuron_ranges", "stepped_neuron_ranges",
           "REGISTER_BITS",
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
    "leak": "leak product v·b + 2**(p−1)",
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


#: a round-fire neuron whose membrane range spans more spike values than this is bounded per step without
#: splitting the range at every spike value (sound, looser)
_SEGMENT_LIMIT = 64


def _leak(v: int, b: int, p: int) -> int:
    # floor((v·b + 2**(p−1)) / 2**p) in Python integers; b = 2**p gives v
    return (v * b + ((1 << p) >> 1)) >> p


def stepped_neuron_ranges(
    x: Range, *, threshold: int, fire: str, reset: str, leak_mul: int, leak_shift: int, s_bits: int, timesteps: int
) -> tuple[list[Range], list[Range], Range | None]:
    """Sound ranges of the time-stepped neuron (docs/SEMANTICS.md §4.6) when every x_t may be anywhere in ``x``.

    With v_(t−1) in [lo, hi], the next membrane is g(v_(t−1)) + x_t, where g(v) = leak(v) − s(v)·θ
    (subtract) or leak(v) if s(v) = 0 else 0 (zero); leak and the spike s(v) never decrease as v grows. So on
    each stretch of [lo, hi] where s(v) is one value, g is monotone and its image is the interval between its
    ends; the union of those images, plus [x.lo, x.hi], bounds the next membrane. Binary (``gt``) neurons have
    two stretches; a ``round`` neuron whose range spans more than a few dozen spike values is bounded by
    [leak(lo) − s(hi)·θ, leak(hi) − s(lo)·θ] instead (also sound). The inputs of different steps are taken as
    independent, which also covers a current that is the same at every step (squeezed mode).

    Returns
    -------
    v_per_t, s_per_t, leak
        The membrane after each step's update (t = 0 … T−1; v_0 = x_0, the membrane starts at 0), the spike
        of each step, and the range of the leak's product v·b + 2**(p−1) over every membrane the leak sees
        (``None`` for IF, which computes no product).
    """
    theta, q = threshold, (1 << s_bits) - 1
    b, p = leak_mul, leak_shift
    is_if = b == 1 << p

    def spike(v: int) -> int:
        if fire == "gt":
            return int(v > theta)
        return max(0, min(q, (2 * v + theta) // (2 * theta)))

    def first_v(j: int) -> int:
        """The smallest v whose spike is j (j ≥ 1)."""
        if fire == "gt":
            return theta + 1
        return -((theta - 2 * j * theta) // 2)  # ceil((2jθ − θ) / 2)

    def g(v: int, s: int) -> int:
        if reset == "subtract":
            return _leak(v, b, p) - s * theta
        return _leak(v, b, p) if s == 0 else 0

    v = Range(x.lo, x.hi)  # step 0: leak(0) + x_0 with no reset pending
    v_per_t, s_per_t = [v], [Range(spike(v.lo), spike(v.hi))]
    seen = v
    for _ in range(timesteps - 1):
        s_lo, s_hi = spike(v.lo), spike(v.hi)
        if s_hi - s_lo > _SEGMENT_LIMIT:
            lo = _leak(v.lo, b, p) - s_hi * theta if reset == "subtract" else min(_leak(v.lo, b, p), 0)
            hi = _leak(v.hi, b, p) - s_lo * theta if reset == "subtract" else max(_leak(v.hi, b, p), 0)
        else:
            lo, hi = None, None
            for j in range(s_lo, s_hi + 1):
                a = v.lo if j == s_lo else first_v(j)
                e = v.hi if j == s_hi else first_v(j + 1) - 1
                lo = g(a, j) if lo is None else min(lo, g(a, j))
                hi = g(e, j) if hi is None else max(hi, g(e, j))
        v = Range(lo + x.lo, hi + x.hi)
        v_per_t.append(v)
        s_per_t.append(Range(spike(v.lo), spike(v.hi)))
        seen = seen.union(v)
    leak = None if is_if else Range(seen.lo * b + ((1 << p) >> 1), seen.hi * b + ((1 << p) >> 1))
    return v_per_t, s_per_t, leak


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
    leak: Range | None = None  # a leaky stepped neuron's v·b + 2**(p−1)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "op": self.op}
        for key in ("x", "x_b", "v", "s", "count", "leak", "acc", "product", "out"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.to_json()
        return out
