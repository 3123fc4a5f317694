"""Residual add of two current streams: y = clamp((a·Ma[c] + b·Mb[c] + rnd) >> SH, lo, hi), per channel.

Both inputs stream HWC in lockstep; the generator puts a :class:`~.fifo.StreamFifo`
on the skip branch deep enough that the branch through the convolution never waits for it.

The engine is a pipeline of :data:`ADD_LATENCY` registered stages that moves as one (every stage holds while
``y`` holds a beat nobody takes), so no clock holds a memory read, a multiply and an adder together: the operands
and their channel's multipliers; the two products; their sum with the rounding term; the shift and clamp. A
multiplier that is the same for every channel (what the exporter writes) is a constant, and its product a
shift-add of the constant's signed digits in logic; per-channel multipliers come from a ROM and multiply with
``*``.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitspike.ranges import Range
from bitspike.ops.base import rounding_term

from .adder_tree import balanced_sum
from .neuron import shape_of
from .requant import shift_clamp
from .taps import TapSignature

__all__ = ["AddEngine", "add_reference", "ADD_LATENCY", "signed_digits"]

#: clocks from a pair of beats taken at ``a`` and ``b`` to their sum at ``y`` (a stage each: operands,
#: products, sum, shift-and-clamp-into-``y``)
ADD_LATENCY = 4


def signed_digits(c: int) -> list[tuple[int, int]]:
    """``c`` in canonical signed digits: ``[(shift, ±1), …]`` with ``sum(d << k) == c``, no two digits adjacent
    (at most ``(bits + 1) / 2`` of them)."""
    out, k = [], 0
    while c:
        if c & 1:
            d = 2 - (c & 3)  # +1 when c ≡ 1 (mod 4), −1 when c ≡ 3
            out.append((k, d))
            c -= d
        c >>= 1
        k += 1
    return out


def _const_product(x, c: int):
    """``x · c`` for a constant ``c`` as the sum of ``±(x << k)`` over its :func:`signed_digits`."""
    terms = [(x << k) if d > 0 else -(x << k) for k, d in signed_digits(c)]
    return balanced_sum(terms) if terms else Const(0, 1)


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
        # the pipeline moves as one: it advances unless y holds a beat that is not taken
        adv, go = Signal(), Signal()
        m.d.comb += [
            adv.eq(~self.y.valid | self.y.ready),
            go.eq(self.a.valid & self.b.valid & adv),
            self.a.ready.eq(go), self.b.ready.eq(go),
        ]
        v1, v2, v3 = Signal(), Signal(), Signal()
        a1, b1 = Signal.like(self.a.payload, name="a1"), Signal.like(self.b.payload, name="b1")
        products = []
        for name, values, x1 in (("ma", self.mult_a, a1), ("mb", self.mult_b, b1)):
            if len(set(values)) == 1:  # one multiplier for every channel: a constant, its product a shift-add
                value = _const_product(x1, values[0])
            else:
                shape = shape_of(Range(min(0, min(values)), max(0, max(values))))
                rom = memory.Memory(shape=shape, depth=C, init=values)
                m.submodules[name] = rom
                port = rom.read_port(domain="comb")
                m1 = Signal(shape, name=f"{name}1")
                m.d.comb += port.addr.eq(ch)
                with m.If(adv):
                    m.d.sync += m1.eq(port.data)
                value = x1 * m1
            prod = Signal(value.shape(), name=f"{name}_prod")
            products.append((prod, value))
        # a·Ma + b·Mb + rnd at its analysed width (exact: the analysis proves it fits)
        total = Signal(shape_of(self.product_range), name="rq_product")
        new = shift_clamp(m, total, self.shift, self.lo, self.hi, shape_of(self.out_range), name="rq")
        with m.If(adv):
            m.d.sync += [a1.eq(self.a.payload), b1.eq(self.b.payload), v1.eq(go),
                         v2.eq(v1), v3.eq(v2), self.y.valid.eq(v3), self.y.payload.eq(new)]
            m.d.sync += [prod.eq(value) for prod, value in products]
            m.d.sync += total.eq(products[0][0] + products[1][0] + rounding_term(self.shift))
        with m.If(go):
            m.d.sync += ch.eq(Mux(ch == C - 1, 0, ch + 1))
        if self.debug_taps:
            m.d.comb += [self.tap_x.payload.eq(self.a.payload), self.tap_x.valid.eq(go),
                         self.tap_out.payload.eq(new), self.tap_out.valid.eq(adv & v3)]
        return m
