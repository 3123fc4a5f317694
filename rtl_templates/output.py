"""The output stage: logits pass through (sign-extended), then the class (argmax, ties to the lowest index)."""

from __future__ import annotations

from amaranth import Module, Shape, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ArgmaxOutput", "argmax_reference"]


def argmax_reference(logits: list[int]) -> int:
    """Index of the largest logit; ties go to the lowest index."""
    best = 0
    for i, v in enumerate(logits):
        if v > logits[best]:
            best = i
    return best


class ArgmaxOutput(wiring.Component):
    """Forwards ``classes`` logits per inference, then emits their argmax.

    Parameters
    ----------
    classes
        Logits per inference.
    logit_shape
        Shape of the incoming logits.
    result_width
        Width of the outgoing beats (logits are sign-extended, the class zero-extended).

    Ports
    -----
    logits : In(stream)
    results : Out(stream)
    done : Out(1)
        High in the clock where the class beat is accepted.
    """

    def __init__(self, classes: int, logit_shape, result_width: int):
        logit_shape = Shape.cast(logit_shape)
        if classes < 1:
            raise ValueError(f"ArgmaxOutput classes must be positive, not {classes!r}")
        if result_width < max(logit_shape.width, (classes - 1).bit_length()):
            raise ValueError(f"result_width {result_width} cannot hold {logit_shape} logits and {classes} classes")
        self.classes, self.logit_shape, self.result_width = classes, logit_shape, result_width
        super().__init__({
            "logits": In(stream.Signature(logit_shape)),
            "results": Out(stream.Signature(unsigned(result_width))),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        idx = Signal(range(max(2, self.classes)))
        best = Signal(self.logit_shape)
        best_idx = Signal(range(max(2, self.classes)))
        class_pending = Signal()
        is_class = Signal()
        free = ~self.results.valid | self.results.ready
        m.d.comb += [
            self.logits.ready.eq(free & ~class_pending),
            self.done.eq(self.results.valid & self.results.ready & is_class),
        ]
        with m.If(self.results.valid & self.results.ready):
            m.d.sync += self.results.valid.eq(0)
        with m.If(self.logits.valid & self.logits.ready):
            v = self.logits.payload
            m.d.sync += [self.results.payload.eq(v.as_signed() if self.logit_shape.signed else v),
                         self.results.valid.eq(1), is_class.eq(0)]
            with m.If((idx == 0) | (v > best)):
                m.d.sync += [best.eq(v), best_idx.eq(idx)]
            with m.If(idx == self.classes - 1):
                m.d.sync += [idx.eq(0), class_pending.eq(1)]
            with m.Else():
                m.d.sync += idx.eq(idx + 1)
        with m.Elif(class_pending & free):
            m.d.sync += [self.results.payload.eq(best_idx), self.results.valid.eq(1), is_class.eq(1),
                         class_pending.eq(0)]
        return m
