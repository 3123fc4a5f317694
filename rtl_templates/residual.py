"""Residual add of two current streams: y = clamp((a·Ma[c] + b·Mb[c] + rnd) >> SH, lo, hi), per channel.

The arithmetic is the shared requantizer (:func:`.requant.requantize`) with
acc = a, M = Ma[c] and B = b·Mb[c]. Both inputs stream HWC in lockstep; the generator puts a :class:`~.fifo.StreamFifo`
on the skip branch deep enough (two feature maps) that the branch through the
convolution never waits for it.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitspike.ranges import Range
from bitspike.ops.base import rounding_term

from .neuron import shape_of
from .requant import requantize
from .taps import TapSignature

__all__ = ["AddEngine", "add_reference"]


def add_reference(a: int, b: int, ma: int, mb: int, shift: int, lo: int, hi: int) -> int:
    """Plain-integer reference of one residual add."""
    return max(lo, min(hi, (a * ma + b * mb + rounding_term(shift)) >> shift))


class AddEngine(wiring.Component):
    """Streaming residual add (see module docstring).

    Parameters
    ----------
    mult_a, mult_b
        Per-channel integer multipliers.
    shift, lo, hi
        Rounding shift and clamp bounds.
    a_range, b_range, product_range, out_range
        Analysed ranges.
    """

    def __init__(self, *, mult_a, mult_b, shift: int, lo: int, hi: int, a_range: Range, b_range: Range,
                 product_range: Range, out_range: Range, debug_taps: bool = False):
        self.mult_a, self.mult_b = [int(v) for v in mult_a], [int(v) for v in mult_b]
        if len(self.mult_a) != len(self.mult_b) or not self.mult_a:
            raise ValueError("AddEngine mult_a and mult_b must be non-empty and of equal length (one per channel)")
        self.shift, self.lo, self.hi = shift, lo, hi
        self.a_range, self.b_range, self.product_range, self.out_range = a_range, b_range, product_range, out_range
        self.debug_taps = debug_taps
        members = {"a": In(stream.Signature(shape_of(a_range))), "b": In(stream.Signature(shape_of(b_range))),
                   "y": Out(stream.Signature(shape_of(out_range)))}
        if debug_taps:
            members["tap_x"] = Out(TapSignature(a_range.width, a_range.signed))
            members["tap_out"] = Out(TapSignature(out_range.width, out_range.signed))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        C = len(self.mult_a)
        ch = Signal(range(max(2, C)))
        roms = []
        for name, values in (("ma", self.mult_a), ("mb", self.mult_b)):
            rom = memory.Memory(shape=shape_of(Range(min(0, min(values)), max(0, max(values)))), depth=C, init=values)
            m.submodules[name] = rom
            port = rom.read_port(domain="comb")
            m.d.comb += port.addr.eq(ch)
            roms.append(port.data)
        # the shared requantizer with acc = a, M = Ma[c] and B = b·Mb[c]: (a·Ma + b·Mb + rnd) >> SH, clamped
        new = requantize(m, self.a.payload, roms[0], self.b.payload * roms[1], self.shift, self.lo, self.hi,
                         shape_of(self.out_range), shape_of(self.product_range), name="rq")
        go = Signal()
        m.d.comb += [
            go.eq(self.a.valid & self.b.valid & (~self.y.valid | self.y.ready)),
            self.a.ready.eq(go), self.b.ready.eq(go),
        ]
        with m.If(self.y.valid & self.y.ready):
            m.d.sync += self.y.valid.eq(0)
        with m.If(go):
            m.d.sync += [self.y.payload.eq(new), self.y.valid.eq(1), ch.eq(Mux(ch == C - 1, 0, ch + 1))]
        if self.debug_taps:
            m.d.comb += [self.tap_x.payload.eq(self.a.payload), self.tap_x.valid.eq(go),
                         self.tap_out.payload.eq(new), self.tap_out.valid.eq(go)]
        return m
