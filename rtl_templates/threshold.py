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
comparisons, then their count plus the base). Its stages are
:func:`threshold_words` (the per-channel ROM word) and :func:`threshold_stage`
(the registered comparisons), which the synaptic engine's drain
(:class:`~.drain.Drain`) uses in place of its requantizer when the planner
fuses a layer boundary (:mod:`bitspike.gen.fuse`).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitspike.ranges import Range
from bitspike.ops.base import rounding_term

__all__ = ["FusedThresholds", "fused_thresholds", "next_neuron_counts", "fusion_saves_luts", "ThresholdUnit",
           "threshold_reference", "threshold_words", "threshold_stage", "fusion_lut_saving"]


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


#: the widest current range [lo, hi] whose counts :func:`fused_thresholds` enumerates; a wider one is
#: not fused (the check would take longer than generating the design)
ENUMERATION_LIMIT = 1 << 16


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def fused_thresholds(mult, bias, shift: int, lo: int, hi: int, acc_range: Range, k: int, s_bits: int,
                     timesteps: int) -> FusedThresholds | None:
    """Thresholds equal to requantize-then-fire for every accumulator in ``acc_range``, or ``None``.

    ``mult``, ``bias``, ``shift``, ``lo``, ``hi`` are the producing layer's requantizer;
    ``k``, ``s_bits``, ``timesteps`` the next layer's neuron. ``None`` when the next neuron's count is
    not monotone in its current over [lo, hi] (then thresholds cannot be exact), or when [lo, hi]
    holds more than :data:`ENUMERATION_LIMIT` currents (too many to check).
    """
    if hi - lo + 1 > ENUMERATION_LIMIT:
        return None
    f = next_neuron_counts(lo, hi, k, s_bits, timesteps)
    if any(b < a for a, b in zip(f, f[1:])):
        return None
    least = []  # least[j]: the least current whose count is at least j (f is non-decreasing)
    for i, c in enumerate(f):
        least += [lo + i] * (c + 1 - len(least))
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
            x_j = least[j]  # least current with count ≥ j
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


def fusion_lut_saving(fused: FusedThresholds, *, acc_width: int, mult_width: int, bias_width: int,
                      out_width: int, requant_in_dsp: bool, neuron_luts: int) -> int:
    """LUT4s the thresholds save against the multiplier path (requantizer + next neuron); negative: they cost more.

    Thresholds: one comparator (a carry chain of the accumulator's width) per level, the count's
    adder, and their per-channel ROM words (``1 + base + levels × threshold`` bits, 16 bits a LUT4;
    none when every channel has the same word). The multiplier path: the multiply in logic unless
    it has DSP blocks (about ``acc × mult / 2`` LUT4s of shift-add), the two-level tree adding its
    pieces and ``B + rnd``, the clamp, the ROMs of ``M`` and ``B + rnd``, and the next neuron.
    """
    channels = len(fused.base)
    words, bw, tw = threshold_words(fused)
    rom_bits = 0 if len(set(words)) == 1 else channels * (1 + bw + fused.levels * tw)
    thresholds = fused.levels * (acc_width + 1) + 2 * fused.levels + -(-rom_bits // 16)
    multiply = 0 if requant_in_dsp else (acc_width * mult_width) // 2
    multiplier_path = (multiply + 2 * (acc_width + mult_width) + 2 * out_width
                       + -(-channels * (mult_width + bias_width) // 16) + neuron_luts)
    return multiplier_path - thresholds


def fusion_saves_luts(fused: FusedThresholds | None, channels: int, mult_width: int, requant_in_dsp: bool) -> bool:
    """Whether thresholds are cheaper than the multiplier path, coarsely (:func:`fusion_lut_saving` is finer).

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


def threshold_words(fused) -> tuple[list[int], int, int]:
    """Per channel one ROM word ``neg | base << 1 | t'_0 << (1 + bw) | …``; returns ``(words, bw, tw)``.

    ``t'_j`` is the threshold on acc itself: ``t_j`` for a rising channel (count when acc ≥ t_j),
    ``−t_j`` for a falling one (count when acc ≤ −t_j), so the hardware never negates acc.
    """
    signed_t = [[s * t for t in row] for s, row in zip(fused.sign, fused.thresholds)]
    flat = [t for row in signed_t for t in row]
    tw = Range(min(flat + [-1]), max(flat + [0])).width
    count_max = max(b + fused.levels for b in fused.base)
    bw = max(1, count_max.bit_length())
    words = []
    for o, row in enumerate(signed_t):
        word = (1 if fused.sign[o] < 0 else 0) | (fused.base[o] << 1)
        for j, t in enumerate(row):
            word |= (t & ((1 << tw) - 1)) << (1 + bw + j * tw)
        words.append(word)
    return words, bw, tw


def threshold_stage(m: Module, valid, acc, word, *, levels: int, bw: int, tw: int, enable, name: str = "thr"):
    """The fused comparisons after the drain's input register; returns ``(valid, count)`` for the output register.

    ``acc`` and ``word`` (the channel's :func:`threshold_words` entry) are input-register outputs.
    One registered stage holds the ``levels`` comparisons (each one carry chain and a mux on the
    channel's direction) and the base; the caller registers base + #passed (the thresholds ascend, so
    the passed ones are a thermometer code and their number is the count above the base).
    """
    total = 1 + bw + levels * tw
    width = len(word)
    if width < total:  # a ROM sized to its largest word drops the top threshold's leading zeros (its sign bit)
        word = Cat(word, Const(0, total - width))
    neg, base = word[0], word[1:1 + bw]
    passed = Signal(max(1, levels), name=f"{name}_passed")
    base_r = Signal(bw, name=f"{name}_base")
    v1 = Signal(name=f"{name}_v1")
    with m.If(enable):
        m.d.sync += [v1.eq(valid), base_r.eq(base)]
        if levels:
            bits = []
            for j in range(levels):
                t = word[1 + bw + j * tw:1 + bw + (j + 1) * tw].as_signed()
                bits.append(Mux(neg, acc <= t, acc >= t))
            m.d.sync += passed.eq(Cat(*bits))
    count = Signal(range(2**bw + levels), name=f"{name}_count")
    m.d.comb += count.eq(base_r + sum(passed[j] for j in range(levels)) if levels else base_r)
    return v1, count



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
        C = self.channels
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]
        idx = Signal(range(C))
        idx_next = Signal(range(C))
        accept = self.i.valid & self.i.ready
        m.d.comb += idx_next.eq(Mux(accept, Mux(idx == C - 1, 0, idx + 1), idx))
        m.d.sync += idx.eq(idx_next)
        # one ROM word per channel (direction, base, thresholds on acc), read one clock ahead
        words, bw, tw = threshold_words(f)
        rom = memory.Memory(shape=max(1, max(words).bit_length()), depth=C, init=words, attrs={"ram_style": "logic"})
        m.submodules.rom = rom
        port = rom.read_port()
        m.d.comb += port.addr.eq(idx_next)
        v, count = threshold_stage(m, accept, self.i.payload, port.data, levels=f.levels, bw=bw, tw=tw, enable=adv)
        with m.If(adv):
            m.d.sync += [self.o.valid.eq(v), self.o.payload.eq(count)]
        return m
