"""A balanced adder tree with a register after every level, and the delay line that keeps flags beside it.

The tree adds ``n`` terms in ``tree_depth(n) = ⌈log2 n⌉`` levels; each
level adds pairs (an odd term passes through) and is registered, so no
clock holds more than one adder. Every node is as wide as the sum of its
children needs (Amaranth's natural width of ``a + b``), so the tree is exact
for any inputs; the caller truncates the root to an analysed range.
"""

from __future__ import annotations

from amaranth import Module, Shape, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AdderTree", "tree_depth", "pipelined_sum", "balanced_sum", "delay"]


def tree_depth(n: int) -> int:
    """Registered levels of a balanced tree over ``n`` terms (0 for one term)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"an adder tree needs a positive integer number of terms, not {n!r}")
    return (n - 1).bit_length()


def balanced_sum(values):
    """The sum of ``values`` as one combinational balanced tree (pairs, then pairs of pairs, …)."""
    level = list(values)
    while len(level) > 1:
        level = [level[i] + level[i + 1] if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
    return level[0]


def pipelined_sum(m: Module, terms, name: str = "tree", enable=None):
    """Sum ``terms`` through :func:`tree_depth` registered levels; returns the root signal.

    ``enable`` (optional) is a clock enable for every level (a stalled pipeline holds its values).
    The root appears ``tree_depth(len(terms))`` clocks after the terms.
    """
    level = list(terms)
    depth = 0
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            pair = level[i:i + 2]
            value = pair[0] + pair[1] if len(pair) == 2 else pair[0]
            reg = Signal(value.shape(), name=f"{name}_l{depth}_{i // 2}")
            if enable is None:
                m.d.sync += reg.eq(value)
            else:
                with m.If(enable):
                    m.d.sync += reg.eq(value)
            nxt.append(reg)
        level = nxt
        depth += 1
    return level[0]


def delay(m: Module, signal, clocks: int, name: str, enable=None) -> list:
    """``[signal, signal delayed 1 clock, …, delayed clocks]`` through a register chain."""
    out = [signal]
    for i in range(clocks):
        reg = Signal.like(signal, name=f"{name}_d{i + 1}")
        if enable is None:
            m.d.sync += reg.eq(out[-1])
        else:
            with m.If(enable):
                m.d.sync += reg.eq(out[-1])
        out.append(reg)
    return out


class AdderTree(wiring.Component):
    """``n`` terms in, their sum out :func:`tree_depth` clocks later (a block around :func:`pipelined_sum`).

    Parameters
    ----------
    n
        Number of terms.
    shape
        Shape of every term.

    Ports
    -----
    terms : In
        The ``n`` terms, with ``valid``.
    total, total_valid : Out
        The sum and its valid flag, ``latency`` clocks later.
    """

    def __init__(self, n: int, shape):
        self.latency = tree_depth(n)
        self.n, self.term_shape = n, Shape.cast(shape)
        lo = -(1 << (self.term_shape.width - 1)) if self.term_shape.signed else 0
        hi = (1 << (self.term_shape.width - 1)) - 1 if self.term_shape.signed else (1 << self.term_shape.width) - 1
        self.total_shape = Shape.cast(range(n * lo, n * hi + 1))
        super().__init__({
            "terms": In(data.ArrayLayout(self.term_shape, n)),
            "valid": In(1),
            "total": Out(self.total_shape),
            "total_valid": Out(1),
        })

    def __repr__(self) -> str:
        return f"AdderTree(n={getattr(self, 'n', '?')}, shape={getattr(self, 'term_shape', '?')!r})"

    def elaborate(self, platform):
        m = Module()
        root = pipelined_sum(m, [self.terms[i] for i in range(self.n)], name="tree")
        m.d.comb += self.total.eq(root)
        m.d.comb += self.total_valid.eq(delay(m, self.valid, self.latency, "valid")[-1])
        return m
