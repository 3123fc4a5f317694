"""Products sized to their bits: weight × spike count as a mux, an add/subtract tree, or a DSP multiply.

A processing element multiplies a B_w-bit weight code by an unsigned spike
count. How that product is built depends on its widths:

* B_w = 1 (a sign: code 1 → +1, 0 → −1): ``±count``, a mux on a negation.
* B_w = 2 (ternary −1, 0, +1): ``0`` or ``±count``.
* other narrow products (:func:`is_narrow`): shifted copies of the wider
  operand, one per bit of the narrower one, added in LUTs (the sign bit of
  the weight subtracts);
* wide products: Amaranth ``*``, which Yosys maps to a DSP block
  (MULT18X18D, SB_MAC16) — only as many as :mod:`bitspike.gen.dsp` allots;
  the others are built like narrow products.

No ``*`` is ever emitted for a product that should stay in logic, so where
a product goes is decided here, per product, not by the synthesis tool.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .adder_tree import balanced_sum, delay, pipelined_sum, tree_depth

__all__ = ["weight_product", "shift_add_product", "is_narrow", "lut_cost", "ProductUnit", "NARROW_MAX_AREA",
           "product_reference", "PEArray", "pe_array_reference", "pe_array_latency", "pe_word_layout",
           "word_tag_layout", "group_layout", "GroupSignature", "staged_product", "PRODUCT_STAGES"]

#: products whose operand widths multiply to at most this are always built in LUTs (a DSP block would be waste)
NARROW_MAX_AREA = 32


def is_narrow(w_bits: int, count_bits: int) -> bool:
    """True when a ``w_bits`` × ``count_bits`` product is cheaper in logic than in a DSP block."""
    return w_bits <= 2 or count_bits <= 2 or w_bits * count_bits <= NARROW_MAX_AREA


def lut_cost(a_bits: int, b_bits: int) -> int:
    """LUTs of an ``a_bits`` × ``b_bits`` shift-add product (about one per partial-product bit)."""
    return a_bits * b_bits


def product_reference(code: int, count: int, w_bits: int) -> int:
    """Plain reference: the weight a ``w_bits`` code stands for, times ``count``."""
    if w_bits == 1:
        return count if code & 1 else -count
    value = code - (1 << w_bits) if code >> (w_bits - 1) else code
    return value * count


def shift_add_product(a, b):
    """``a × b`` without ``*``: one shifted copy of the wider operand per bit of the narrower one, summed.

    Either operand may be signed (a signed operand's top bit weighs −2**(w−1), so its row is
    subtracted); the result is exact at its natural width.
    """
    if b.shape().width > a.shape().width:
        a, b = b, a
    wb = b.shape().width
    rows = []
    for j in range(wb):
        row = Mux(b[j], a, 0) << j
        rows.append(-row if b.shape().signed and j == wb - 1 else row)
    return balanced_sum(rows)  # combinational: one pipeline stage holds the whole product


def weight_product(code, count, w_bits: int, use_dsp: bool):
    """The product of a ``w_bits`` weight code and an unsigned ``count`` (see the module docstring)."""
    if w_bits == 1:
        return Mux(code[0], count, -count)
    if w_bits == 2:  # codes 01 → +1, 11 → −1, 00 → 0 (10 never occurs: weights are in −1 … 1)
        return Mux(code[0], Mux(code[1], -count, count), 0)
    if use_dsp:
        return code.as_signed() * count
    return shift_add_product(code.as_signed(), count)


class ProductUnit(wiring.Component):
    """One registered product ``w × count`` (the PE's multiply stage on its own, for block tests).

    Parameters
    ----------
    w_bits, count_bits
        Operand widths.
    use_dsp
        Build a wide product with ``*`` (DSP-mappable) instead of shift-add logic.
    """

    def __init__(self, w_bits: int, count_bits: int, use_dsp: bool = False):
        for name, value in (("w_bits", w_bits), ("count_bits", count_bits)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 18:
                raise ValueError(f"ProductUnit {name} must be an integer in 1 … 18, not {value!r}")
        self.w_bits, self.count_bits, self.use_dsp = w_bits, count_bits, use_dsp
        lim = max(1, (1 << (w_bits - 1))) * ((1 << count_bits) - 1)
        super().__init__({
            "code": In(unsigned(w_bits)),
            "count": In(unsigned(count_bits)),
            "product": Out(range(-lim, lim + 1)),
        })

    def __repr__(self) -> str:
        return (f"ProductUnit(w_bits={getattr(self, 'w_bits', '?')}, count_bits={getattr(self, 'count_bits', '?')}, "
                f"use_dsp={getattr(self, 'use_dsp', '?')})")

    def elaborate(self, platform):
        m = Module()
        value = Signal(self.product.shape())
        m.d.comb += value.eq(weight_product(self.code, self.count, self.w_bits, self.use_dsp))
        m.d.sync += self.product.eq(value)
        return m


def word_tag_layout() -> data.StructLayout:
    """What travels beside a word through the PE array: valid and where it sits in its group."""
    return data.StructLayout({"valid": 1, "first": 1, "last": 1, "last_group": 1})


def pe_word_layout(pes: int, lanes: int, w_bits: int, count_bits: int) -> data.StructLayout:
    """One issued word: ``weights[p][l]`` codes (the weight memory word) and ``counts[l]`` (the frame word)."""
    return data.StructLayout({
        "weights": data.ArrayLayout(data.ArrayLayout(unsigned(w_bits), lanes), pes),
        "counts": data.ArrayLayout(unsigned(count_bits), lanes),
    })


def group_layout(pes: int, psum_shape) -> data.StructLayout:
    """A finished output group: the ``pes`` partial sums and whether it is the pixel's last group."""
    return data.StructLayout({"psum": data.ArrayLayout(psum_shape, pes), "last_group": 1})


def GroupSignature(pes: int, psum_shape) -> wiring.Signature:
    """PE array → drain: a finished group with ``valid``; never back-pressured (the engine reserves a slot)."""
    return wiring.Signature({"payload": Out(group_layout(pes, psum_shape)), "valid": Out(1)})


#: registered stages of a product (see :func:`staged_product`)
PRODUCT_STAGES = 2


def pe_array_latency(lanes: int) -> int:
    """Clocks from a word (and its tag) at the PE array's input to the clock its lane sums accumulate.

    The memory-output register, :data:`PRODUCT_STAGES` product registers, ``tree_depth(lanes)``
    tree levels.
    """
    return 1 + PRODUCT_STAGES + tree_depth(lanes)


def _reg(m: Module, value, name: str) -> Signal:
    reg = Signal(value.shape(), name=name)
    m.d.sync += reg.eq(value)
    return reg


def staged_product(m: Module, code, count, w_bits: int, use_dsp: bool, name: str, count_reg=None) -> Signal:
    """``weight_product(code, count)`` through :data:`PRODUCT_STAGES` registers; returns the last one.

    Each kind spends its two clocks where its delay is:

    * narrow: the operands are registered once more, then the product (a mux or a short
      shift-add) is registered. ``count_reg`` may give the count's second register, shared by
      the PEs that read the same lane;
    * DSP: the multiply's output is registered twice (the block's own output and pipeline
      registers can absorb them);
    * wide in logic: the narrower operand is cut in two; each half's product (half the rows of a
      shift-add) is registered, and their shifted sum is registered next. With a signed weight cut,
      the low half is unsigned and the high half keeps the sign, so ``w·c`` is exact.
    """
    cw = count.shape().width
    if is_narrow(w_bits, cw):
        code_r = code if isinstance(code, Const) else _reg(m, code, f"{name}_w")
        count_r = count_reg if count_reg is not None else _reg(m, count, f"{name}_c")
        return _reg(m, weight_product(code_r, count_r, w_bits, False), name)
    if use_dsp:
        return _reg(m, _reg(m, code.as_signed() * count, f"{name}_m"), name)
    w = code.as_signed()
    if cw <= w_bits:  # cut the count (unsigned both halves)
        h = cw // 2
        lo = shift_add_product(w, count[:h])
        hi = shift_add_product(w, count[h:])
    else:  # cut the weight code: low bits unsigned, high bits signed
        h = w_bits // 2
        lo = shift_add_product(code[:h], count)
        hi = shift_add_product(code[h:].as_signed(), count)
    lo_r, hi_r = _reg(m, lo, f"{name}_lo"), _reg(m, hi, f"{name}_hi")
    return _reg(m, lo_r + (hi_r << h), name)


def pe_array_reference(words, w_bits: int) -> list[tuple[list[int], int]]:
    """Plain model of the PE array: ``words`` are ``(codes[p][l], counts[l], first, last, last_group)``;
    returns ``(psums[p], last_group)`` for every word with ``last`` (the accumulators then)."""
    acc: list[int] = []
    out = []
    for codes, counts, first, last, last_group in words:
        sums = [sum(product_reference(c, n, w_bits) for c, n in zip(row, counts)) for row in codes]
        acc = sums if first else [a + s for a, s in zip(acc, sums)]
        if last:
            out.append((list(acc), int(last_group)))
    return out


class PEArray(wiring.Component):
    """``pes × lanes`` processing elements, a registered adder tree per PE and the accumulators.

    One word per clock: every PE p multiplies its ``lanes`` weight codes by the ``lanes`` counts
    (:func:`staged_product`: :data:`PRODUCT_STAGES` registers), adds the products in a registered balanced tree
    (:func:`~.adder_tree.pipelined_sum`) and accumulates, restarting at a word tagged ``first``.
    A word tagged ``last`` emits the group's partial sums on ``o`` in the clock they accumulate,
    :func:`pe_array_latency` clocks after the word was at the input.

    Parameters
    ----------
    pes, lanes, w_bits, count_bits
        Shape of the array and of its operands.
    psum_shape
        Shape of the accumulators (an analysed range: the sums are exact in it).
    dsp_products
        How many of the wide products are DSP multiplies (``*``), in PE-major order; the others and
        every narrow one (:func:`is_narrow`) are built in logic. ``None``: every wide product.
    const_weights
        The weight word as an integer when the memory holds only that one word (every word issued carries
        it): the codes are constants, so a product is only the rows of its weight's one bits and zero
        weights vanish; ``word.weights`` is then not read.
    clear_on_last
        Restart the accumulators by clearing them after a group's last word (their registers' reset)
        instead of a mux at the group's first word: the same sums (every group's first word follows
        the previous group's last, and the accumulators start at 0), and the path from the tag to the
        drain's holding queue loses the tag's fan-out and the mux (a shorter path at a high clock).

    Ports
    -----
    word : In
        :func:`pe_word_layout`: the weight codes and the counts.
    tag : In
        :func:`word_tag_layout`: ``valid``, ``first``, ``last``, ``last_group``.
    o : Out(:func:`GroupSignature`)
        The finished group.
    """

    def __init__(self, *, pes: int, lanes: int, w_bits: int, count_bits: int, psum_shape, dsp_products: int | None = None,
                 clear_on_last: bool = False, const_weights: int | None = None):
        for name, value in (("pes", pes), ("lanes", lanes), ("w_bits", w_bits), ("count_bits", count_bits)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PEArray {name} must be a positive integer, not {value!r}")
        self.pes, self.lanes, self.w_bits, self.count_bits = pes, lanes, w_bits, count_bits
        self.psum_shape = Shape.cast(psum_shape)
        self.dsp_products = dsp_products
        self.clear_on_last = bool(clear_on_last)
        self.const_weights = const_weights
        self.latency = pe_array_latency(lanes)
        super().__init__({
            "word": In(pe_word_layout(pes, lanes, w_bits, count_bits)),
            "tag": In(word_tag_layout()),
            "o": Out(GroupSignature(pes, self.psum_shape)),
        })

    def __repr__(self) -> str:
        fields = ("pes", "lanes", "w_bits", "count_bits", "psum_shape", "dsp_products", "clear_on_last", "const_weights")
        return "PEArray(" + ", ".join(f"{f}={getattr(self, f, '?')!r}" for f in fields) + ")"

    def elaborate(self, platform):
        m = Module()
        P, L, wb, cw = self.pes, self.lanes, self.w_bits, self.count_bits
        # the tag keeps step with the word: memory-output register, product register, tree levels
        tag = data.View(word_tag_layout(), delay(m, self.tag.as_value(), self.latency, "pe_flags")[-1])
        # the memory outputs, registered (the block RAM's output register)
        cq = Signal.like(self.word.counts)
        m.d.sync += cq.eq(self.word.counts)
        if self.const_weights is None:
            wq = Signal.like(self.word.weights)
            m.d.sync += wq.eq(self.word.weights)
            code_of = lambda p, l: wq[p][l]  # noqa: E731
        else:  # one weight word, always the same: its codes are constants (a constant needs no register)
            code_of = lambda p, l: Const((self.const_weights >> ((p * L + l) * wb)) & ((1 << wb) - 1), wb)  # noqa: E731
        # narrow products: the counts' second register, shared by every PE of a lane
        cq2 = [_reg(m, cq[l], f"cq2_{l}") for l in range(L)] if is_narrow(wb, cw) else [None] * L
        n_dsp = 0
        for p in range(P):
            terms = []
            for l in range(L):
                use_dsp = not is_narrow(wb, cw) and (self.dsp_products is None or n_dsp < self.dsp_products)
                n_dsp += use_dsp
                terms.append(staged_product(m, code_of(p, l), cq[l], wb, use_dsp, f"prod{p}_{l}", cq2[l]))
            lane_sum = pipelined_sum(m, terms, name=f"lanes{p}")
            acc = Signal(self.psum_shape, name=f"psum{p}")
            acc_next = Signal(self.psum_shape, name=f"psum_next{p}")
            if self.clear_on_last:  # cleared after the group's last word: acc is 0 at the next one's first
                m.d.comb += [acc_next.eq(acc + lane_sum), self.o.payload.psum[p].eq(acc_next)]
                with m.If(tag.valid):
                    m.d.sync += acc.eq(Mux(tag.last, 0, acc_next))
                continue
            m.d.comb += [acc_next.eq(Mux(tag.first, 0, acc) + lane_sum), self.o.payload.psum[p].eq(acc_next)]
            with m.If(tag.valid):
                m.d.sync += acc.eq(acc_next)
        m.d.comb += [self.o.valid.eq(tag.valid & tag.last), self.o.payload.last_group.eq(tag.last_group)]
        return m
