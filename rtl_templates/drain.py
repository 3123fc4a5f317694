"""The synaptic engine's drain: finished groups → bias → requantizer → ``vec`` outputs per beat on ``y``.

A finished group (``pes`` partial sums, from :class:`~.pe.PEArray`) goes to a
two-slot holding queue: slot A drains, slot B waits, so the PE array never
waits for the drain unless two groups are waiting (the engine reserves a
slot before it issues a group's last word, :data:`HOLD_SLOTS`). Outputs leave
one per beat, channel by channel: the per-channel bias is added, then the
staged requantizer (:func:`.requant.requant_pipeline`) runs; per-channel
constants are prefetched from ROMs (:func:`channel_rom`). With ``vec`` > 1
(a vector stream) a pop takes ``vec`` consecutive channels at once and
``vec`` drain lanes (bias, requantizer or fused thresholds, each with its
own ROMs over the channels ``lane, lane + vec, …``) run side by side; ``y``
then carries an array of ``vec`` outputs, lowest channel in element 0. The drain pipeline stalls as
one while a registered skid slot behind ``y`` is full, so ``y.ready`` drives
only ``y`` and the slot, never the pipeline's enables.

:func:`drain_reference` is the plain-Python model.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Shape, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitspike.ranges import Range
from bitspike.ops.base import Requant, rounding_term
from .neuron import shape_of
from .pe import GroupSignature
from .requant import REQUANT_LATENCY, requant_pipeline, requant_reference
from .taps import TapSignature
from .threshold import threshold_stage, threshold_words

__all__ = ["Drain", "drain_reference", "drain_latency", "channel_rom", "const_range", "HOLD_SLOTS", "FUSED_LATENCY",
           "threshold_stage", "threshold_words"]

#: groups the holding queue takes (one draining, one waiting)
HOLD_SLOTS = 2
#: clocks from a pop to ``y`` with fused thresholds (input register · comparisons · count-and-output)
FUSED_LATENCY = 3


def drain_latency(requantized: bool, fused: bool = False) -> int:
    """Clocks from an output's pop off the holding queue to its ``y.valid``."""
    if fused:
        return FUSED_LATENCY
    return REQUANT_LATENCY if requantized else 1


def const_range(values) -> Range:
    """The range of a list of constants, widened to hold 0."""
    return Range(int(min(0, min(values))), int(max(0, max(values))))


def _const_init(value) -> int:
    """The reset value of a register loaded from ``value``: the constant itself when it is one, else 0."""
    return value.value if isinstance(value, Const) else 0


def channel_rom(m: Module, values: list[int], step, name: str):
    """The per-output-channel constant of the channel at the head of the queue.

    The channel index starts at 0 and moves to the next channel (cyclically) on every clock
    with ``step``. The returned register holds ``values[channel]``; a second register holds the
    next channel's value, and the ROM is read at a registered index two channels ahead, so the
    clock with ``step`` only moves registers (no ROM lookup after the step decision). A constant
    when all values agree.
    """
    shape = shape_of(const_range(values))
    if len(set(values)) == 1:
        return Const(values[0], shape)
    n = len(values)
    cur = Signal(shape, init=values[0], name=f"{name}_cur")
    nxt = Signal(shape, init=values[1 % n], name=f"{name}_next")
    ahead = Signal(range(n), init=2 % n, name=f"{name}_ahead")
    rom = memory.Memory(shape=shape, depth=n, init=values, attrs={"ram_style": "logic"})
    m.submodules[name] = rom
    port = rom.read_port(domain="comb")
    m.d.comb += port.addr.eq(ahead)
    with m.If(step):
        m.d.sync += [cur.eq(nxt), nxt.eq(port.data), ahead.eq(Mux(ahead == n - 1, 0, ahead + 1))]
    return cur


def drain_reference(groups: list[list[int]], bias, requant: Requant | None, pes: int, fused=None) -> list[int]:
    """The values ``y`` carries for finished groups ``groups`` (each the ``pes`` partial sums, in order;
    the group index cycles over the output channels), in the order it carries them (with ``fused``:
    the fused spike counts, :meth:`~.threshold.FusedThresholds.count`)."""
    out_c = len(bias)
    n_groups = -(-out_c // pes)
    out = []
    for i, psums in enumerate(groups):
        g = i % n_groups
        for p in range(min(pes, out_c - g * pes)):
            o = g * pes + p
            acc = int(psums[p]) + int(bias[o])
            if fused is not None:
                out.append(fused.count(o, acc))
            elif requant is None:
                out.append(acc)
            else:
                out.append(requant_reference(acc, int(requant.multiplier[o]), int(requant.bias[o]), requant.shift,
                                             requant.lo, requant.hi))
    return out


class Drain(wiring.Component):
    """Holding queue, bias, requantizer and output skid (see the module docstring).

    Parameters
    ----------
    pes
        Partial sums per group.
    bias
        ``[out]`` accumulator bias (one per output channel; groups cycle over them).
    psum_shape, acc_shape, out_shape
        Shapes of the partial sums, of partial sum + bias (the analysed accumulator) and of ``y``.
    requant
        The requantization constants, or ``None``: ``y`` carries the accumulators.
    product_shape
        Analysed shape of acc·M + B + rnd (with ``requant``).
    dsp_pieces
        Requantizer pieces built with ``*`` (:func:`.requant.requant_pipeline`), all drain lanes
        together: each lane gets an equal share, its best pieces first (the first lanes one more).
    fused
        :class:`~.threshold.FusedThresholds` of the requantizer and the next layer's neuron: ``y``
        carries spike counts (``out_shape`` wide) and the requantizer is not built.
    vec
        Outputs per beat of ``y`` (drain lanes); must divide ``pes`` and the channel count. 1: ``y``'s
        payload is one output (``out_shape``), else an array of ``vec`` of them.
    registered_flags
        Keep "the head slot is empty" and "the head slot holds its last beat" in registers beside its
        count, so the queue's load enables (hundreds of flip-flops) come from flags, not from
        comparisons of the count: the same behaviour, a shorter path at a high clock. Off: the
        Verilog is as without it.

    Ports
    -----
    i : In(:class:`~.pe.GroupSignature`)
        A finished group; the sender never offers a third while two are held (``freed`` says when
        one has left).
    y : Out(stream)
        ``vec`` outputs per beat, channels in order.
    freed : Out(1)
        A group's last output leaves the holding queue this clock.
    tap_acc : Out(TapSignature)
        The accumulator entering the requantizer (``y``'s value itself without one); ``vec`` of them
        per beat.
    """

    def __init__(self, *, pes: int, bias, psum_shape, acc_shape, out_shape, requant: Requant | None = None,
                 product_shape=None, dsp_pieces: int | None = None, fused=None, vec: int = 1,
                 registered_flags: bool = False):
        self.pes = pes
        self.registered_flags = bool(registered_flags)
        self.fused = fused
        self.bias = [int(v) for v in bias]
        if not self.bias or not 1 <= pes <= len(self.bias):
            raise ValueError(f"Drain needs 1 … {len(self.bias)} pes for {len(self.bias)} channels, not {pes!r}")
        if fused is not None and len(fused.base) != len(self.bias):
            raise ValueError(f"Drain fused thresholds are for {len(fused.base)} channels, not {len(self.bias)}")
        if fused is not None and Shape.cast(out_shape).signed:
            raise ValueError("Drain with fused thresholds emits counts: out_shape must be unsigned")
        if requant is not None and product_shape is None and fused is None:
            raise ValueError("Drain with a requantizer needs product_shape")
        if isinstance(vec, bool) or not isinstance(vec, int) or vec < 1 or pes % vec or len(self.bias) % vec:
            raise ValueError(f"Drain vec must be a positive integer dividing pes {pes} and the {len(self.bias)} "
                             f"channels, not {vec!r}")
        self.vec = vec
        self.psum_shape, self.acc_shape = Shape.cast(psum_shape), Shape.cast(acc_shape)
        self.out_shape = Shape.cast(out_shape)
        self.requant, self.product_shape, self.dsp_pieces = requant, product_shape, dsp_pieces
        self.groups = -(-len(self.bias) // pes)
        self.latency = drain_latency(requant is not None, fused is not None)
        super().__init__({
            "i": In(GroupSignature(pes, self.psum_shape)),
            "y": Out(stream.Signature(self.out_shape if vec == 1 else data.ArrayLayout(self.out_shape, vec))),
            "freed": Out(1),
            "tap_acc": Out(TapSignature(self.acc_shape.width, self.acc_shape.signed, lanes=vec)),
        })

    def __repr__(self) -> str:
        return (f"Drain(pes={getattr(self, 'pes', '?')}, vec={getattr(self, 'vec', '?')}, "
                f"channels={len(getattr(self, 'bias', []))}, "
                f"requant={getattr(self, 'requant', None) is not None}, fused={getattr(self, 'fused', None) is not None})")

    def elaborate(self, platform):
        m = Module()
        P, V, out_c = self.pes, self.vec, len(self.bias)
        psum = self.i.payload.psum
        a = [Signal(self.psum_shape, name=f"hold{p}") for p in range(P)]
        b = [Signal(self.psum_shape, name=f"wait{p}") for p in range(P)]
        last_n = out_c - (self.groups - 1) * P
        a_count = Signal(range(P + 1))
        b_n = Signal(range(P + 1))
        b_full = Signal()
        load = Signal()
        load_n = Signal(range(P + 1))
        adv = Signal()  # the drain pipeline moves (the skid slot is empty)
        skid_valid = Signal()
        pop = Signal()
        a_free = Signal()
        m.d.comb += [
            load.eq(self.i.valid),
            load_n.eq(Mux(self.i.payload.last_group, last_n, P)),
            # a registered skid slot behind y: y.ready never reaches the drain pipeline's enables
            adv.eq(~skid_valid),
        ]
        if self.registered_flags:
            # a_empty == (a_count == 0) and a_last == (a_count == V) in every clock: each assignment
            # of a_count below sets them from the value it assigns
            a_empty, a_last = Signal(init=1, name="a_empty"), Signal(name="a_last")

            def set_count(value):
                return [a_count.eq(value), a_empty.eq(value == 0), a_last.eq(value == V)]

            m.d.comb += [pop.eq(~a_empty & adv), a_free.eq(a_empty | (pop & a_last)), self.freed.eq(pop & a_last)]
        else:
            def set_count(value):
                return a_count.eq(value)

            m.d.comb += [
                pop.eq((a_count != 0) & adv),
                a_free.eq((a_count == 0) | (pop & (a_count == V))),
                self.freed.eq(pop & (a_count == V)),
            ]
        with m.If(pop):  # a pop takes the V channels at the head (V divides every group's count)
            m.d.sync += [a[p].eq(a[p + V]) for p in range(P - V)]
            m.d.sync += set_count(a_count - V)
        with m.If(a_free):
            with m.If(b_full):
                m.d.sync += [a[p].eq(b[p]) for p in range(P)]
                m.d.sync += [set_count(b_n), b_full.eq(load)]
                with m.If(load):
                    m.d.sync += [b[p].eq(psum[p]) for p in range(P)]
                    m.d.sync += b_n.eq(load_n)
            with m.Elif(load):
                m.d.sync += [a[p].eq(psum[p]) for p in range(P)]
                m.d.sync += set_count(load_n)
        with m.Elif(load):
            m.d.sync += [b[p].eq(psum[p]) for p in range(P)]
            m.d.sync += [b_n.eq(load_n), b_full.eq(1)]

        # one drain lane per element of a beat; lane j serves channels j, j + V, … (its own ROMs)
        y_vals, taps = [], []
        y_stage_valid = tap_acc_valid = None
        for j in range(V):
            sfx = "" if V == 1 else str(j)  # a scalar drain keeps its signal names
            y_stage_valid, y_val, tap_acc, tap_acc_valid = self._lane(m, a[j], pop, adv, self.bias[j::V], sfx, j)
            y_vals.append(y_val)
            taps.append(tap_acc)
        if V == 1:
            m.d.comb += [self.tap_acc.payload.eq(taps[0]), self.tap_acc.valid.eq(tap_acc_valid)]
            y_val = y_vals[0]
        else:
            m.d.comb += [self.tap_acc.payload[j].eq(t) for j, t in enumerate(taps)]
            m.d.comb += self.tap_acc.valid.eq(tap_acc_valid)
            y_val = Signal(data.ArrayLayout(self.out_shape, V))
            m.d.comb += [y_val[j].eq(v) for j, v in enumerate(y_vals)]
        skid = Signal(self.out_shape if V == 1 else data.ArrayLayout(self.out_shape, V))
        with m.If(self.y.valid & ~self.y.ready):  # y is held: a value arriving now waits in the skid slot
            with m.If(adv & y_stage_valid):
                m.d.sync += [skid.eq(y_val), skid_valid.eq(1)]
        with m.Elif(skid_valid):
            m.d.sync += [self.y.payload.eq(skid), self.y.valid.eq(1), skid_valid.eq(0)]
        with m.Else():
            m.d.sync += [self.y.payload.eq(y_val), self.y.valid.eq(adv & y_stage_valid)]
        return m

    def _lane(self, m: Module, head, pop, adv, bias: list[int], sfx: str, lane: int):
        """One drain lane: bias, then the requantizer or the fused thresholds, for the channels ``bias`` lists.

        Returns ``(valid, value)`` for the output register and ``(value, valid)`` of the accumulator tap.
        """
        V = self.vec
        # per-channel constants of the head's channel, prefetched (each pop moves to the lane's next channel)
        bias_q = channel_rom(m, bias, pop, f"bias_rom{sfx}")
        acc_val = Signal(self.acc_shape, name=f"acc_val{sfx}")
        m.d.comb += acc_val.eq(head + bias_q)
        if self.fused is not None:
            words, bw, tw = threshold_words(self.fused)
            word_q = channel_rom(m, words[lane::V], pop, f"thr_rom{sfx}")
            acc_r = Signal(self.acc_shape, name=f"acc_r{sfx}")
            word_r = Signal(Shape.cast(word_q.shape()).width, name=f"word_r{sfx}")
            v0 = Signal(name=f"v0{sfx}")
            with m.If(adv):
                m.d.sync += [acc_r.eq(acc_val), word_r.eq(word_q), v0.eq(pop)]
            y_stage_valid, y_val = threshold_stage(m, v0, acc_r, word_r, levels=self.fused.levels, bw=bw, tw=tw,
                                                   enable=adv, name=f"thr{sfx}")
            return y_stage_valid, y_val, acc_r, v0 & adv
        if self.requant is None:
            return pop, acc_val, acc_val, pop
        rq = self.requant
        mult_q = channel_rom(m, [int(v) for v in rq.multiplier][lane::V], pop, f"mult_rom{sfx}")
        brnd_q = channel_rom(m, [int(v) + rounding_term(rq.shift) for v in rq.bias][lane::V], pop, f"rqbias_rom{sfx}")
        acc_r = Signal(self.acc_shape, name=f"acc_r{sfx}")
        # a lane whose channels share a constant holds it from reset (its register's input is that constant, so
        # synthesis folds it, and with it the multiplier's rows of zero bits)
        mult_r = Signal(mult_q.shape(), name=f"mult_r{sfx}", init=_const_init(mult_q))
        brnd_r = Signal(brnd_q.shape(), name=f"brnd_r{sfx}", init=_const_init(brnd_q))
        v0 = Signal(name=f"v0{sfx}")
        with m.If(adv):
            m.d.sync += [acc_r.eq(acc_val), mult_r.eq(mult_q), brnd_r.eq(brnd_q), v0.eq(pop)]
        # the DSP pieces are shared out over the lanes, the best pieces of every lane first
        pieces = self.dsp_pieces if self.dsp_pieces is None else self.dsp_pieces // V + (lane < self.dsp_pieces % V)
        y_stage_valid, y_val = requant_pipeline(m, v0, acc_r, mult_r, brnd_r, shift=rq.shift, lo=rq.lo, hi=rq.hi,
                                                out_shape=self.out_shape, product_shape=Shape.cast(self.product_shape),
                                                enable=adv, dsp_pieces=pieces, name=f"rq{sfx}")
        return y_stage_valid, y_val, acc_r, v0 & adv
