"""The requantizer: x = clamp((acc·M + B + 2**(SH−1)) >> SH, lo, hi) (docs/SEMANTICS.md §4.3).

Two forms:

* :func:`requantize` — combinational (the residual add's requantizer,
  :class:`~.residual.AddEngine`, with acc = a, M = Ma[c] and B = b·Mb[c]);
* :func:`requant_pipeline` / :class:`PipelinedRequantizer` — in stages, so
  that no clock holds a multiply and a wide add together: (1) the partial
  products acc_i·M, where acc is cut into pieces that each fit a DSP block's
  signed input (18 bits on ECP5, 16 on iCE40; a piece built in logic is cut
  further, into 4-bit chunks of its narrower operand, :func:`logic_chunks`,
  so that no clock holds more than a 4-row shift-add), (2)–(3) a registered
  two-level tree adds the pieces and the per-channel constant B + rnd
  (groups of about √n terms a level when there are more than four),
  (4) the shift (wiring) and the clamp (:func:`shift_clamp`, shared by both
  forms). The latency is
  :data:`REQUANT_LATENCY` whatever the widths, so the planner's cycle model
  needs no widths.
"""

from __future__ import annotations

import math

from amaranth import Const, Module, Mux, Shape, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitspike.ops.base import rounding_term
from .adder_tree import balanced_sum
from .pe import is_narrow, lut_cost, shift_add_product

__all__ = ["requantize", "requant_reference", "requant_pipeline", "shift_clamp", "requant_pieces", "PipelinedRequantizer",
           "REQUANT_LATENCY", "DSP_INPUT_BITS", "MAX_PIECES"]

#: clocks from the pipeline's input register to its output register, inclusive of both
#: (input · partial products · tree level · tree level · clamp-and-output)
REQUANT_LATENCY = 5
#: signed operand width the pieces are cut for: iCE40's SB_MAC16 takes 16 × 16, ECP5's MULT18X18D
#: 18 × 18, so 16-bit pieces fit one block on both families
DSP_INPUT_BITS = 16
#: partial products a two-level tree can add beside the constant
MAX_PIECES = 3
#: a product built in logic is cut into chunks of this many bits of its narrower operand
#: (:func:`logic_chunks`): a chunk's shift-add is at most two adder levels in its clock
LOGIC_CHUNK_BITS = 4


def requant_reference(acc: int, mult: int, bias: int, shift: int, lo: int, hi: int) -> int:
    """Plain-integer reference model of one requantization."""
    return max(lo, min(hi, (acc * mult + bias + rounding_term(shift)) >> shift))


def requantize(m, acc, mult, bias, shift: int, lo: int, hi: int, out_shape: Shape, product_shape: Shape, name: str = "rq"):
    """Combinational requantizer; returns a signal of ``out_shape``.

    ``product_shape`` is the analysed width of acc·M + B + rnd; the sum is
    computed at Amaranth's natural (wider) width and then truncated to it,
    which is exact because the analysis proves the value fits.
    """
    prod = Signal(product_shape, name=f"{name}_product")
    m.d.comb += prod.eq(acc * mult + bias + rounding_term(shift))
    return shift_clamp(m, prod, shift, lo, hi, out_shape, name)


def shift_clamp(m: Module, prod, shift: int, lo: int, hi: int, out_shape: Shape, name: str = "rq"):
    """The requantizer's last step, shared by every form: ``clamp(prod >> shift, lo, hi)`` (combinational).

    ``prod`` already holds acc·M + B + rnd at its analysed width.
    """
    shifted = Signal(signed(max(2, Shape.cast(prod.shape()).width - shift + 1)), name=f"{name}_shifted")
    m.d.comb += shifted.eq(prod >> shift)
    out = Signal(out_shape, name=f"{name}_out")
    m.d.comb += out.eq(Mux(shifted < lo, lo, Mux(shifted > hi, hi, shifted)))
    return out


def _cut(acc_shape: Shape, mult_shape: Shape, dsp_bits: int) -> list[tuple[int, int, bool]] | None:
    """The DSP-sized pieces of the accumulator, or ``None`` when the operands are too wide for them."""
    if mult_shape.width + (0 if mult_shape.signed else 1) > dsp_bits:
        return None
    width = acc_shape.width
    if width + (0 if acc_shape.signed else 1) <= dsp_bits:
        return [(0, width, acc_shape.signed)]
    low = dsp_bits - 1
    pieces, offset = [], 0
    while width - offset + (0 if acc_shape.signed else 1) > dsp_bits:
        pieces.append((offset, low, False))
        offset += low
    pieces.append((offset, width - offset, acc_shape.signed))
    return pieces if len(pieces) <= MAX_PIECES else None


def requant_pieces(acc_shape: Shape, mult_shape: Shape, dsp_bits: int = DSP_INPUT_BITS) -> list[tuple[int, int, bool]]:
    """How the accumulator is cut: ``[(offset, width, signed)]``, low pieces first.

    Each piece times the multiplier fits one ``dsp_bits`` × ``dsp_bits`` signed DSP product.
    Low pieces are unsigned (``dsp_bits − 1`` bits), the top piece carries the sign. When the
    multiplier does not fit a DSP input, or more than :data:`MAX_PIECES` pieces would be needed
    (legal manifests allow 31-bit multipliers and accumulators of about 60 bits; exported networks
    use 14-bit multipliers), the whole accumulator is one piece, built in logic (see
    :func:`dsp_piece_order`): exact at every legal width, slower and larger.
    """
    acc_shape, mult_shape = Shape.cast(acc_shape), Shape.cast(mult_shape)
    pieces = _cut(acc_shape, mult_shape, dsp_bits)
    return [(0, acc_shape.width, acc_shape.signed)] if pieces is None else pieces


def dsp_piece_order(acc_shape: Shape, mult_shape: Shape) -> list[int]:
    """Indices of the pieces that may use a DSP block, best first (widest; narrow pieces stay in logic)."""
    acc_shape, mult_shape = Shape.cast(acc_shape), Shape.cast(mult_shape)
    if _cut(acc_shape, mult_shape, DSP_INPUT_BITS) is None:
        return []  # too wide for the DSP pieces: the product is shift-add logic
    pieces = requant_pieces(acc_shape, mult_shape)
    order = sorted(range(len(pieces)), key=lambda i: (-pieces[i][1], i))
    return [i for i in order if not is_narrow(pieces[i][1], mult_shape.width)]


def piece_costs(acc_shape: Shape, mult_shape: Shape) -> list[int]:
    """LUT cost of each DSP-candidate piece's product if built in logic, in :func:`dsp_piece_order`."""
    mult_shape = Shape.cast(mult_shape)
    pieces = requant_pieces(acc_shape, mult_shape)
    return [lut_cost(pieces[i][1], mult_shape.width) for i in dsp_piece_order(acc_shape, mult_shape)]


def requant_pipeline(m: Module, valid, acc, mult, bias_rnd, *, shift: int, lo: int, hi: int, out_shape: Shape,
                     product_shape: Shape, enable, dsp_pieces: int | None = None, name: str = "rq"):
    """The staged requantizer after its input register; returns ``(valid, value)`` for the output register.

    ``valid``, ``acc``, ``mult`` and ``bias_rnd`` (B + rnd, precomputed per channel) are the
    input register's outputs; ``enable`` advances every stage (the pipeline stalls as one).
    The returned value is combinational (the clamp); the caller registers it, which makes
    :data:`REQUANT_LATENCY` clocks from the input register to the output register.
    ``dsp_pieces`` pieces (:func:`dsp_piece_order`; ``None``: every candidate) are built with ``*``,
    the others with shift-add.
    """
    acc_shape, mult_shape = acc.shape(), mult.shape()
    pieces = requant_pieces(acc_shape, mult_shape)
    order = dsp_piece_order(acc_shape, mult_shape)
    in_dsp = set(order if dsp_pieces is None else order[:dsp_pieces])
    terms = []
    for i, (offset, width, is_signed) in enumerate(pieces):
        part = acc[offset:offset + width]
        part = part.as_signed() if is_signed else part
        if len(pieces) == 1:
            part = acc
        chunks = [(part * mult, 0)] if i in in_dsp else logic_chunks(part, mult)
        for k, (value, at) in enumerate(chunks):
            reg = Signal(value.shape(), name=f"{name}_pp{i}" + (f"_{k}" if len(chunks) > 1 else ""))
            with m.If(enable):
                m.d.sync += reg.eq(value)
            terms.append(reg << (offset + at) if offset + at else reg)
    brnd = Signal(bias_rnd.shape(), name=f"{name}_brnd")
    v1 = Signal(name=f"{name}_v1")
    with m.If(enable):
        m.d.sync += [brnd.eq(bias_rnd), v1.eq(valid)]
    terms.append(brnd)
    while len(terms) < 4:  # a fixed two-level tree keeps the latency independent of the widths
        terms.append(Const(0, 1))
    total = two_level_sum(m, terms, name=f"{name}_sum", enable=enable)
    v2, v3 = Signal(name=f"{name}_v2"), Signal(name=f"{name}_v3")
    with m.If(enable):
        m.d.sync += [v2.eq(v1), v3.eq(v2)]
    prod = Signal(product_shape, name=f"{name}_product")
    m.d.comb += prod.eq(total)
    return v3, shift_clamp(m, prod, shift, lo, hi, out_shape, name)


def logic_chunks(a, b) -> list:
    """``a × b`` in logic as ``[(product, shift)]``: the narrower operand cut into :data:`LOGIC_CHUNK_BITS`-bit
    chunks (low chunks unsigned, the top one keeps the sign), each chunk's product a shift-add of at most
    that many rows (two adder levels), so that one clock holds no more than those; ``Σ product << shift``
    is ``a × b`` exactly. One chunk when the narrower operand is that narrow already."""
    if b.shape().width > a.shape().width:
        a, b = b, a
    wb = b.shape().width
    if wb <= LOGIC_CHUNK_BITS:
        return [(shift_add_product(a, b), 0)]
    out = []
    for lo in range(0, wb, LOGIC_CHUNK_BITS):
        hi = min(wb, lo + LOGIC_CHUNK_BITS)
        chunk = b[lo:hi]
        if b.shape().signed and hi == wb:
            chunk = chunk.as_signed()
        out.append((shift_add_product(a, chunk), lo))
    return out


def two_level_sum(m: Module, terms, name: str, enable):
    """Sum ``terms`` (four or more) through exactly two registered levels: the first adds groups of ⌈√n⌉ terms,
    the second the groups' sums (each a balanced tree inside its clock). Four terms make the two pairs, then
    their sum: :func:`.adder_tree.pipelined_sum` of four, register for register."""
    n = len(terms)
    g = max(2, math.isqrt(n - 1) + 1)
    firsts = []
    for k in range(0, n, g):
        value = balanced_sum(terms[k:k + g])
        reg = Signal(value.shape(), name=f"{name}_l0_{k // g}")
        with m.If(enable):
            m.d.sync += reg.eq(value)
        firsts.append(reg)
    value = balanced_sum(firsts)
    root = Signal(value.shape(), name=f"{name}_l1_0")
    with m.If(enable):
        m.d.sync += root.eq(value)
    return root


class PipelinedRequantizer(wiring.Component):
    """The staged requantizer as a stream block (input register + :func:`requant_pipeline` + output register).

    Parameters
    ----------
    acc_shape, mult_shape, bias_shape
        Shapes of the accumulator, the multiplier and the bias B.
    shift, lo, hi
        SH and the clamp bounds.
    out_shape, product_shape
        The output's shape and the analysed shape of acc·M + B + rnd.
    dsp_pieces
        Pieces built with ``*`` (``None``: all).

    Ports
    -----
    i : In(stream)
        ``acc``, ``mult``, ``bias`` per beat.
    o : Out(stream)
        The requantized value, :data:`REQUANT_LATENCY` clocks after its beat was accepted (no stalls).
    """

    def __init__(self, *, acc_shape, mult_shape, bias_shape, shift: int, lo: int, hi: int, out_shape, product_shape,
                 dsp_pieces: int | None = None):
        if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
            raise ValueError(f"requantizer shift must be a non-negative integer, not {shift!r}")
        if lo > hi:
            raise ValueError(f"requantizer clamp lo {lo} is above hi {hi}")
        self.acc_shape, self.mult_shape = Shape.cast(acc_shape), Shape.cast(mult_shape)
        self.bias_shape = Shape.cast(bias_shape)
        self.shift, self.lo, self.hi = shift, lo, hi
        self.out_shape, self.product_shape = Shape.cast(out_shape), Shape.cast(product_shape)
        self.dsp_pieces = dsp_pieces
        requant_pieces(self.acc_shape, self.mult_shape)  # raises early on widths it cannot cut
        layout = data.StructLayout({"acc": self.acc_shape, "mult": self.mult_shape, "bias": self.bias_shape})
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(self.out_shape))})

    def __repr__(self) -> str:
        fields = ("acc_shape", "mult_shape", "bias_shape", "shift", "lo", "hi", "out_shape", "product_shape", "dsp_pieces")
        return "PipelinedRequantizer(" + ", ".join(f"{f}={getattr(self, f, '?')!r}" for f in fields) + ")"

    def elaborate(self, platform):
        m = Module()
        adv = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv)]
        acc = Signal(self.acc_shape)
        mult = Signal(self.mult_shape)
        brnd = Signal(signed(max(self.bias_shape.width, self.shift + 1) + 2))
        valid = Signal()
        with m.If(adv):
            m.d.sync += [acc.eq(self.i.payload.acc), mult.eq(self.i.payload.mult),
                         brnd.eq(self.i.payload.bias + rounding_term(self.shift)), valid.eq(self.i.valid)]
        v, value = requant_pipeline(m, valid, acc, mult, brnd, shift=self.shift, lo=self.lo, hi=self.hi,
                                    out_shape=self.out_shape, product_shape=self.product_shape, enable=adv,
                                    dsp_pieces=self.dsp_pieces)
        with m.If(adv):
            m.d.sync += [self.o.valid.eq(v), self.o.payload.eq(value)]
        return m
