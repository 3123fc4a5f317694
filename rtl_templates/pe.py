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

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["weight_product", "shift_add_product", "is_narrow", "lut_cost", "ProductUnit", "NARROW_MAX_AREA",
           "product_reference"]

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
    while len(rows) > 1:  # balanced, combinational (one pipeline stage holds the whole product)
        rows = [rows[i] + rows[i + 1] if i + 1 < len(rows) else rows[i] for i in range(0, len(rows), 2)]
    return rows[0]


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
