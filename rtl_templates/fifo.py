"""Stream plumbing: a FIFO with stream ports and an eager fork (one input, several outputs)."""

from __future__ import annotations

from amaranth import Module, Mux, Shape, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamFifo", "StreamFork", "SkidBuffer"]


class StreamFifo(wiring.Component):
    """A synchronous FIFO of ``depth`` beats between two streams of ``shape`` (Amaranth ``SyncFIFOBuffered``)."""

    def __init__(self, shape, depth: int):
        shape = Shape.cast(shape)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"FIFO depth must be a positive integer, not {depth!r}")
        self.shape, self.depth = shape, depth
        super().__init__({"x": In(stream.Signature(shape)), "y": Out(stream.Signature(shape))})

    def __repr__(self) -> str:
        return f"StreamFifo({self.shape!r}, depth={self.depth})"

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = f = fifo.SyncFIFOBuffered(width=self.shape.width, depth=self.depth)
        m.d.comb += [
            f.w_data.eq(self.x.payload), f.w_en.eq(self.x.valid), self.x.ready.eq(f.w_rdy),
            self.y.payload.eq(f.r_data), self.y.valid.eq(f.r_rdy), f.r_en.eq(self.y.ready),
        ]
        return m


class StreamFork(wiring.Component):
    """Broadcast one stream to ``n`` consumers; each output takes the beat when it can (eager fork).

    An input beat completes once every output has taken it; outputs that took it
    early wait (their valid drops) so no beat is duplicated or lost, and no valid
    depends on a ready.
    """

    def __init__(self, shape, n: int):
        shape = Shape.cast(shape)
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"StreamFork needs at least 2 outputs, not {n!r}")
        self.shape, self.n = shape, n
        members = {"x": In(stream.Signature(shape))}
        members.update({f"y{i}": Out(stream.Signature(shape)) for i in range(n)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        outs = [getattr(self, f"y{i}") for i in range(self.n)]
        sent = [Signal(name=f"sent{i}") for i in range(self.n)]
        done_each = [o.ready | s for o, s in zip(outs, sent)]
        all_done = Signal()
        m.d.comb += all_done.eq(done_each[0] if self.n == 1 else _and(done_each))
        m.d.comb += self.x.ready.eq(all_done)
        for o, s in zip(outs, sent):
            m.d.comb += [o.payload.eq(self.x.payload), o.valid.eq(self.x.valid & ~s)]
            with m.If(self.x.valid & all_done):
                m.d.sync += s.eq(0)
            with m.Elif(o.valid & o.ready):
                m.d.sync += s.eq(1)
        return m


def _and(values):
    out = values[0]
    for v in values[1:]:
        out = out & v
    return out


class SkidBuffer(wiring.Component):
    """A stream stage whose ``x.ready`` is a register: one beat of storage, passed through when empty.

    While the slot is empty a beat goes straight from ``x`` to ``y`` (no added latency); a beat
    that ``y`` does not take is kept in the slot, and ``x.ready`` is low while the slot is full.
    So ``x.ready`` is a flip-flop (``y.ready`` never reaches the producer in the same clock), and
    the stream keeps a beat per clock: the slot is emptied on the first clock ``y`` is ready again.
    """

    def __init__(self, shape):
        self.shape = shape
        super().__init__({"x": In(stream.Signature(shape)), "y": Out(stream.Signature(shape))})

    def __repr__(self) -> str:
        return f"SkidBuffer({self.shape!r})"

    def elaborate(self, platform):
        m = Module()
        full = Signal()
        slot = Signal(self.shape)
        m.d.comb += [
            self.x.ready.eq(~full),
            self.y.valid.eq(full | self.x.valid),
            self.y.payload.eq(Mux(full, slot, self.x.payload)),
        ]
        # the slot takes every beat offered while it is empty (whether y takes it too does not matter: the
        # flag says whether the slot holds one), so only the flag's input depends on y.ready
        with m.If(~full):
            m.d.sync += slot.eq(self.x.payload)
        with m.If(full):
            with m.If(self.y.ready):
                m.d.sync += full.eq(0)
        with m.Elif(self.x.valid & ~self.y.ready):
            m.d.sync += full.eq(1)
        return m
