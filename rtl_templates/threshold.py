"""Fused requantize-and-fire: the requantizer and the next layer's neuron as per-channel thresholds.

With a constant current the next neuron's spike count over its T steps is a
function of the current alone, ``count = f(x)``, and the requantizer makes
``x`` a monotone function of the accumulator (non-decreasing for M > 0,
non-increasing for M < 0). When ``f`` is non-decreasing on [lo, hi] (checked
by enumeration, never assumed), the pair is a step function of the
accumulator::

    count(acc) = base[o] + #{ j : s[o]·acc ≥ θ[o][j] }      (s = +1 for M ≥ 0, −1 for M < 0)

with thresholds computed exactly from the integer contract (docs/SEMANTICS.md §4):
``x(acc) ≥ x_j  ⇔  acc·M + B + rnd ≥ x_j·2**SH``, solved for ``acc`` by an
exact integer ceiling or floor division. :func:`fused_thresholds` returns
``None`` where the fusion is not exact (``f`` not monotone), and
:func:`fusion_saves_luts` says whether it is cheaper than the multiplier
path, which is kept otherwise.

:class:`ThresholdUnit` is the hardware: a stream of accumulators (channels
in order, cycling) in, spike counts out, in two registered stages (the
comparisons, then their count plus the base).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitspike.ranges import Range, bits_for
from bitspike.ops.base import rounding_term

__all__ = ["FusedThresholds", "fused_thresholds", "next_neuron_counts", "fusion_saves_luts", "ThresholdUnit",
           "threshold_reference"]


def next_neuron_counts(lo: int, hi: int, k: int, s_bits: int, timesteps: int) -> list[int]:
    """Σ_t s_t of the neuron for every constant current lo … hi (the golden model's neuron)."""
    import torch

    from bitspike.ops.kernels import neuron_steps

    _, s = neuron_steps(torch.arange(lo, hi + 1, dtype=torch.int64), k, s_bits, timesteps)
    return [int(v) for v in s.sum(dim=0)]


@dataclass(frozen=True)
class FusedThresholds:
    """Per-channel thresholds of a fused requantize-and-fire.

    Attributes
    ----------
    base
        ``[out]`` count at the lowest accumulator end (no threshold passed).
    sign
        ``[out]`` +1 (count rises with acc) or −1 (it falls: compare −acc).
    thresholds
        ``[out][q]`` thresholds on ``sign·acc``, ascending; unused ones lie above every ``sign·acc``.
    acc_range
        The accumulator range they were computed for.
    """

    base: tuple[int, ...]
    sign: tuple[int, ...]
    thresholds: tuple[tuple[int, ...], ...]
    acc_range: Range

    @property
    def levels(self) -> int:
        """Comparisons per channel (the widest count step)."""
        return len(self.thresholds[0]) if self.thresholds else 0

    def count(self, channel: int, acc: int) -> int:
        """The fused count of one accumulator (plain Python; the hardware's model)."""
        a = self.sign[channel] * acc
        return self.base[channel] + sum(1 for t in self.thresholds[channel] if a >= t)


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def fused_thresholds(mult, bias, shift: int, lo: int, hi: int, acc_range: Range, k: int, s_bits: int,
                     timesteps: int) -> FusedThresholds | None:
    """Thresholds equal to requantize-then-fire for every accumulator in ``acc_range``, or ``None``.

    ``mult``, ``bias``, ``shift``, ``lo``, ``hi`` are the producing layer's requantizer;
    ``k``, ``s_bits``, ``timesteps`` the next layer's neuron. ``None`` when the next neuron's count is
    not monotone in its current over [lo, hi] (then thresholds cannot be exact).
    """
    f = next_neuron_counts(lo, hi, k, s_bits, timesteps)
    if any(b < a for a, b in zip(f, f[1:])):
        return None
    rnd = rounding_term(shift)
    never = max(abs(acc_range.lo), abs(acc_range.hi)) + 1  # above every ±acc
    floor_ = -never + 1  # at or below every ±acc: always passed
    bases, signs, rows = [], [], []
    for m_o, b_o in zip((int(v) for v in mult), (int(v) for v in bias)):
        if m_o == 0:
            x = max(lo, min(hi, (b_o + rnd) >> shift))
            bases.append(f[x - lo])
            signs.append(1)
            rows.append([])
            continue
        sign = 1 if m_o > 0 else -1
        # the count at the low end of sign·acc: the current there, clamped
        a_low = acc_range.lo if sign > 0 else acc_range.hi
        base = f[max(lo, min(hi, (a_low * m_o + b_o + rnd) >> shift)) - lo]
        row = []
        for j in range(base + 1, f[-1] + 1):
            x_j = lo + next(i for i, c in enumerate(f) if c >= j)  # least current with count ≥ j
            c = x_j * (1 << shift) - b_o - rnd  # x(acc) ≥ x_j ⇔ acc·M ≥ c
            t = _ceil_div(c, m_o) if m_o > 0 else -(c // m_o)  # M < 0: acc ≤ ⌊c/M⌋ ⇔ −acc ≥ −⌊c/M⌋
            row.append(min(never, max(floor_, t)))
        bases.append(base)
        signs.append(sign)
        rows.append(row)
    q = max((len(r) for r in rows), default=0)
    rows = [r + [never] * (q - len(r)) for r in rows]
    return FusedThresholds(tuple(bases), tuple(signs), tuple(tuple(r) for r in rows), acc_range)


def threshold_reference(acc: int, mult: int, bias: int, shift: int, lo: int, hi: int, k: int, s_bits: int,
                        timesteps: int) -> int:
    """The integer contract itself: requantize, then the neuron's Σ_t s_t for that constant current."""
    x = max(lo, min(hi, (acc * mult + bias + rounding_term(shift)) >> shift))
    return next_neuron_counts(x, x, k, s_bits, timesteps)[0]


def fusion_saves_luts(fused: FusedThresholds | None, channels: int, mult_width: int, requant_in_dsp: bool) -> bool:
    """Whether thresholds are cheaper than the multiplier path (requantizer + next neuron), coarsely.

    Thresholds cost one comparator per level plus their ROM (``channels × levels`` words, in LUTs);
    the multiplier path costs its multiply (nothing in LUTs when it has DSP blocks), the wide add,
    the clamp and the next neuron.
    """
    if fused is None:
        return False
    aw = fused.acc_range.width + 1
    thresholds = fused.levels * aw + (channels * fused.levels * aw) // 16  # LUT4 ROM: 16 bits a LUT
    multiplier = (0 if requant_in_dsp else aw * mult_width) + 3 * (aw + mult_width)
    return thresholds < multiplier


class ThresholdUnit(wiring.Component):
    """Accumulators in (channels in order, cycling), fused spike counts out, two clocks later.

    Parameters
    ----------
    fused
        The thresholds (:func:`fused_thresholds`).

    Ports
    -----
    i : In(stream)
        Accumulator, one per beat, channel 0, 1, … ``channels − 1``, 0, …
    o : Out(stream)
        The count (unsigned).
    """

    def __init__(self, fused: FusedThresholds):
        if not isinstance(fused, FusedThresholds):
            raise TypeError(f"ThresholdUnit needs FusedThresholds, not {type(fused).__name__}")
        self.fused = fused
        self.channels = len(fused.base)
        self.count_max = max(b + fused.levels for b in fused.base)
        r = fused.acc_range
        super().__init__({
            "i": In(stream.Signature(signed(r.width) if r.signed else r.width)),
            "o": Out(stream.Signature(range(self.count_max + 1))),
        })

    def __repr__(self) -> str:
        return f"ThresholdUnit(channels={getattr(self, 'channels', '?')}, levels={self.fused.levels if hasattr(self, 'fused') else '?'})"

    def elaborate(self, platform):
        m = Module()
        f = self.fused
        C, Q = self.channels, f.levels
        flat = [t for row in f.thresholds for t in row]
        tw = bits_for(min(flat + [-1]), max(flat + [0]))  # signed: thresholds compare with ±acc
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]
        idx = Signal(range(C))
        idx_next = Signal(range(C))
        accept = self.i.valid & self.i.ready
        m.d.comb += idx_next.eq(Mux(accept, Mux(idx == C - 1, 0, idx + 1), idx))
        m.d.sync += idx.eq(idx_next)
        # one ROM word per channel: sign, base and the thresholds, read one clock ahead
        bw = max(1, self.count_max.bit_length())
        words = []
        for o in range(C):
            word = (1 if f.sign[o] < 0 else 0) | (f.base[o] << 1)
            for j in range(Q):
                word |= (f.thresholds[o][j] & ((1 << tw) - 1)) << (1 + bw + j * tw)
            words.append(word)
        rom = memory.Memory(shape=1 + bw + Q * tw, depth=C, init=words, attrs={"ram_style": "logic"})
        m.submodules.rom = rom
        port = rom.read_port()
        m.d.comb += port.addr.eq(idx_next)
        neg, base = port.data[0], port.data[1:1 + bw]
        a = Signal(signed(self.i.payload.shape().width + 1))
        m.d.comb += a.eq(Mux(neg, -self.i.payload, self.i.payload))
        passed = Signal(max(1, Q))
        base_r = Signal(bw)
        v1 = Signal()
        with m.If(adv):
            m.d.sync += [v1.eq(accept), base_r.eq(base)]
            m.d.sync += passed.eq(Cat(*[a >= port.data[1 + bw + j * tw:1 + bw + (j + 1) * tw].as_signed()
                                        for j in range(Q)]) if Q else Const(0, 1))
            m.d.sync += [self.o.valid.eq(v1), self.o.payload.eq(base_r + sum(passed[j] for j in range(Q)) if Q else base_r)]
        return m
