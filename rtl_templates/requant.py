"""The requantizer: x = clamp((acc·M + B + 2**(SH−1)) >> SH, lo, hi) (SEMANTICS.md §4, step 3)."""

from __future__ import annotations

from amaranth import Mux, Shape, Signal, signed

from bitspike.manifest import rounding_term

__all__ = ["requantize", "requant_reference"]


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
    shifted = Signal(signed(max(2, product_shape.width - shift + 1)), name=f"{name}_shifted")
    m.d.comb += shifted.eq(prod >> shift)
    out = Signal(out_shape, name=f"{name}_out")
    m.d.comb += out.eq(Mux(shifted < lo, lo, Mux(shifted > hi, hi, shifted)))
    return out
