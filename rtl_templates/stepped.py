"""The stepped synaptic engine: a time-stepped IF/LIF neuron per input, an event-driven synapse, a requantizer.

A *stepped* linear layer (docs/SEMANTICS.md §5) keeps each input neuron's
membrane from one timestep to the next and runs its synapse at every step on
that step's spikes. This engine does it with work proportional to the spikes:

1. **Neuron** (registered stages, one input per clock). For step t it takes
   the ``in`` input currents: from the ``x`` stream (per-step currents of a
   stepped predecessor, step-major) or, for a constant input, from a
   two-bank current memory (the stream fills one bank while the steps of the
   previous inference replay the other; step 0 reads a current the clock after
   it arrives). Each neuron's membrane and last spike live in a memory of
   ``in`` words: read, operand register (the leak's operand u and the rest
   d = x − s·θ), the leak ``floor((u·b + 2**(p−1)) / 2**p)`` as a registered
   tree of u's copies shifted by the set bits of the constant b (no
   multiplier), the new membrane registered, then fire (``v > θ``, or the
   rounded multi-bit spike), write-back and event push in the next clock
   (:func:`neuron_latency` clocks after issue). A step waits only while a
   membrane it would read is still in flight (layers of fewer inputs than the
   latency). Every input that spiked is pushed into the step's **event
   queue** as its address and its spike value; zeros are skipped
   (``dense=True`` pushes every input: the same result, the cycles of a
   dense walk, for comparison).
2. **Event walk**. The event queue is double-buffered (one bank fills while
   the other is walked), so the neuron of step t+1 runs while the synapse of
   step t walks. For every output group (``pes`` outputs) the walk reads the
   queued events one per clock, each event the weight word of its input
   (the ``pes`` weights of the group, :class:`~.weight_mem.WeightLayout`
   with one lane), and adds weight × spike to the group's accumulators (a
   binary spike adds the weight). A step costs about
   ``max(events, 1) · ⌈out / pes⌉`` clocks, plus a few at its end.
3. **Drain** (:class:`~.drain.Drain`): bias, requantizer, output stream. The
   outputs of step t leave as ``out`` beats, steps in order: the per-step
   currents of the next stepped layer. A last layer (no requantizer) keeps
   its group sums across the steps in a small carry memory and drains once,
   after step T−1, with bias T·b: its logits are Σ_t (W·s_t + b).

The next inference's currents stream in while the previous one's last steps
are walked. Every register width comes from the interval analysis
(:mod:`bitspike.ranges`); the plan's cycle model is
:func:`stepped_step_cycles`. The neuron's reference is the golden model's one implementation,
:func:`bitspike.host.stepped.neuron_run`.
"""

from __future__ import annotations

import numpy as np
from amaranth import Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitspike.ops.base import Requant
from bitspike.ranges import LayerRanges
from bitspike.ranges import Range
from .adder_tree import delay, pipelined_sum, tree_depth
from .drain import HOLD_SLOTS, Drain
from .neuron import shape_of
from .pe import weight_product
from .synapse import BLOCK_RAM_MIN_BITS, partial_sum_range
from .taps import TapSignature
from .weight_mem import WeightLayout, pack_weights

__all__ = ["SteppedLinearEngine", "stepped_step_cycles", "neuron_latency", "ROUND_SPIKE_LIMIT",
           "WALK_LATENCY", "STEP_GAP", "NEURON_BASE_LATENCY"]

#: a ``round`` neuron's spike is found by comparing 2v with (2j − 1)·θ for every j ≤ q: at most this many
ROUND_SPIKE_LIMIT = 15
#: clocks from a walk slot's issue to its accumulate (event read, weight read, accumulate)
WALK_LATENCY = 3
#: idle clocks of the walk between two steps (the carry memory's write lands before the next read)
STEP_GAP = WALK_LATENCY


#: clocks from a neuron's issue to its write-back without a leak: membrane read, operand register, new-membrane
#: register (the write-back, the spike and the event are in the clock after)
NEURON_BASE_LATENCY = 3


def neuron_latency(leak_mul: int, leak_shift: int) -> int:
    """Clocks from a neuron's issue (its membrane's read address) to its write-back (spike and event).

    :data:`NEURON_BASE_LATENCY`, plus, for a leaky neuron, the levels of the registered tree that adds
    the copies of the membrane shifted by the set bits of ``leak_mul`` and the rounding term.
    """
    if leak_mul == 1 << leak_shift:
        return NEURON_BASE_LATENCY
    return NEURON_BASE_LATENCY + tree_depth(bin(leak_mul).count("1") + 1)


def stepped_step_cycles(events: int, in_features: int, out_features: int, pes: int,
                        latency: int = NEURON_BASE_LATENCY) -> tuple[int, int]:
    """``(neuron clocks, walk clocks)`` of one step with ``events`` queued events.

    The neuron takes one input per clock; an input is read again at the next step only after its
    write-back (``latency`` clocks, :func:`neuron_latency`), so a layer of fewer than ``latency + 1``
    inputs waits between steps. The walk takes one slot per event and output group (a group without
    events takes one slot), then :data:`STEP_GAP` clocks.
    """
    groups = -(-out_features // pes)
    return max(in_features, latency + 1), groups * max(events, 1) + STEP_GAP


class SteppedLinearEngine(wiring.Component):
    """One stepped linear layer (neuron → event-driven synapse → requantizer) as a streaming engine.

    Parameters
    ----------
    weight
        ``[out, in]`` integer weights, columns in the order the inputs stream in.
    bias
        ``[out]`` accumulator bias (added at every step).
    neuron
        The layer's :class:`~bitspike.ops.neuron.SteppedNeuron` (mode ``stepped``).
    timesteps
        T.
    w_bits
        B_w.
    requant
        The requantizer, or ``None`` for the last layer (its logits are summed over the steps).
    ranges
        The layer's analysed ranges.
    per_step_input
        The input currents change every step (``T·in`` beats per inference, step-major); else one
        current per input for all steps (``in`` beats).
    pes
        Output channels accumulated in parallel.
    dense
        Queue every input, spike or not (a dense walk: the same results, for measuring what the
        events save).
    debug_taps
        Add ``tap_x`` (each input current taken), ``tap_spk`` (each neuron's spike per step, step-major),
        ``tap_acc`` and ``tap_out``.
    """

    def __init__(self, *, weight, bias, neuron, timesteps: int, w_bits: int, requant: Requant | None,
                 ranges: LayerRanges, per_step_input: bool, pes: int = 1, dense: bool = False,
                 debug_taps: bool = False, dsp_blocks: int | None = None):
        weight = np.asarray(weight, dtype=np.int64)
        if weight.ndim != 2:
            raise ValueError(f"SteppedLinearEngine weight must be [out, in], got shape {list(weight.shape)}")
        out_c, in_c = weight.shape
        if isinstance(pes, bool) or not isinstance(pes, int) or not 1 <= pes <= out_c:
            raise ValueError(f"engine pes must be an integer in 1 … {out_c}, not {pes!r}")
        if neuron.mode != "stepped":
            raise ValueError(f"SteppedLinearEngine needs a neuron of mode 'stepped', not {neuron.mode!r}")
        if neuron.fire == "round" and neuron.max_spike > ROUND_SPIKE_LIMIT:
            raise ValueError(f"a 'round' neuron with {neuron.spike_bits}-bit spikes needs {neuron.max_spike} "
                             f"comparators; the engine builds at most {ROUND_SPIKE_LIMIT} (s_bits ≤ 4)")
        self.weight, self.bias = weight, np.asarray(bias, dtype=np.int64)
        self.neuron, self.timesteps, self.w_bits = neuron, timesteps, w_bits
        self.requant, self.ranges = requant, ranges
        self.per_step_input, self.pes, self.dense = bool(per_step_input), pes, bool(dense)
        self.debug_taps, self.dsp_blocks = debug_taps, dsp_blocks
        self.layout = WeightLayout(out_c, in_c, pes, 1, w_bits)
        T = timesteps
        # the walk's accumulators: a step's partial sums, or (last layer) the partial sums of all steps so far
        self.psum_range = partial_sum_range(weight, ranges.s.hi if requant is not None else ranges.count.hi)
        self.x_shape = shape_of(ranges.x)
        self.out_shape = shape_of(ranges.out)
        #: values each debug tap shows per inference (the top's tap table)
        self.tap_counts = {"x": in_c * (T if self.per_step_input else 1), "spk": in_c * T,
                           "acc": out_c * (T if requant is not None else 1),
                           "out": out_c * (T if requant is not None else 1)}
        members = {"x": In(stream.Signature(self.x_shape)), "y": Out(stream.Signature(self.out_shape))}
        if debug_taps:
            members["tap_x"] = Out(TapSignature(ranges.x.width, ranges.x.signed))
            members["tap_spk"] = Out(TapSignature(neuron.spike_bits))
            members["tap_acc"] = Out(TapSignature(ranges.acc.width, ranges.acc.signed))
            members["tap_out"] = Out(TapSignature(ranges.out.width, ranges.out.signed))
        super().__init__(members)

    def __repr__(self) -> str:
        try:
            o, i = self.weight.shape
            return (f"SteppedLinearEngine(out={o}, in={i}, neuron={self.neuron!r}, timesteps={self.timesteps}, "
                    f"pes={self.pes}, per_step_input={self.per_step_input}, dense={self.dense})")
        except AttributeError:  # a constructor that refused its parameters leaves a half-built engine
            return "SteppedLinearEngine(refused)"

    @property
    def weight_memory_bits(self) -> int:
        return self.layout.memory_bits

    # ---- the neuron's update, in logic

    def _leak(self, v):
        n = self.neuron
        if n.is_if:
            return v
        return (v * Const(n.leak_mul, unsigned(max(1, n.leak_mul.bit_length()))) + ((1 << n.leak_shift) >> 1)) \
            >> n.leak_shift

    def _fire(self, v):
        n = self.neuron
        theta = n.threshold
        if n.fire == "gt":
            return v > theta
        # s = clip(floor((2v + θ) / (2θ)), 0, q) = #{j ∈ 1 … q : 2v ≥ (2j − 1)·θ}: q comparisons, no divider
        hits = [(v << 1) >= (2 * j - 1) * theta for j in range(1, n.max_spike + 1)]
        return sum(h.as_unsigned() for h in hits) if len(hits) > 1 else hits[0]

    def elaborate(self, platform):
        m = Module()
        n, r, T = self.neuron, self.ranges, self.timesteps
        out_c, in_c = self.weight.shape
        P, lay = self.pes, self.layout
        G = lay.groups
        sb = n.spike_bits
        v_shape = shape_of(r.v)
        last_layer = self.requant is None

        # ================= neuron: issue → read → leak tree → add → fire and write =================
        K = neuron_latency(n.leak_mul, n.leak_shift)
        wait_after_step = max(0, K + 1 - in_c)  # a membrane is written back before the next step reads it
        mem = memory.Memory(shape=data.StructLayout({"v": v_shape, "s": unsigned(sb)}), depth=in_c, init=[])
        m.submodules.membrane = mem
        mrd, mwr = mem.read_port(), mem.write_port()
        # event queue: two banks of in_c events (address, spike)
        ev_layout = data.StructLayout({"i": unsigned(max(1, (in_c - 1).bit_length())), "s": unsigned(sb)})
        evq = memory.Memory(shape=ev_layout, depth=2 * in_c, init=[])
        m.submodules.events = evq
        ewr, erd = evq.write_port(), evq.read_port()

        full = Signal(2)  # event bank b holds a complete step, not yet walked
        # per bank, registered when the step is queued: no events, and the last event's index (the walk's
        # last-slot test is then one equality, not a subtraction on its critical path)
        empty = [Signal(name=f"empty{b}") for b in range(2)]
        cnt_last = [Signal(range(in_c), name=f"last_event{b}") for b in range(2)]
        bank_t = [Signal(range(T), name=f"bank_step{b}") for b in range(2)]

        n_idx = Signal(range(in_c))
        n_step = Signal(range(T))
        i_bank = Signal()  # the event bank the step being issued will fill
        n_wait = Signal(range(wait_after_step + 1))
        issue = Signal()
        src_ok = Signal()
        tap_x_valid = Signal()
        if self.per_step_input:
            m.d.comb += src_ok.eq(self.x.valid)
        else:
            # the constant currents in a two-bank memory: the next inference's stream in while this one's
            # steps replay the current bank (the producer does not wait through steps 1 … T−1)
            xmem = memory.Memory(shape=self.x_shape, depth=2 * in_c, init=[])
            m.submodules.currents = xmem
            xrd, xwr = xmem.read_port(), xmem.write_port()
            xcount = [Signal(range(in_c + 1), name=f"currents{b}") for b in range(2)]
            x_wb, x_idx, x_rb = Signal(), Signal(range(in_c)), Signal()
            x_take = Signal()
            m.d.comb += [self.x.ready.eq(Mux(x_wb, xcount[1], xcount[0]) != in_c),
                         x_take.eq(self.x.valid & self.x.ready), tap_x_valid.eq(x_take),
                         xwr.addr.eq(Mux(x_wb, x_idx + in_c, x_idx)), xwr.data.eq(self.x.payload),
                         xwr.en.eq(x_take)]
            with m.If(x_take):
                m.d.sync += x_idx.eq(Mux(x_idx == in_c - 1, 0, x_idx + 1))
                with m.If(x_idx == in_c - 1):
                    m.d.sync += x_wb.eq(~x_wb)
            # step 0 reads a current the clock after it is written; later steps find the bank complete
            m.d.comb += [src_ok.eq((n_step != 0) | (n_idx < Mux(x_rb, xcount[1], xcount[0]))),
                         xrd.addr.eq(Mux(x_rb, n_idx + in_c, n_idx))]
            inference_issued = issue & (n_idx == in_c - 1) & (n_step == T - 1)
            # the replayed bank is freed the clock after its last read (a register between the issue test and
            # the bank counters; the writer cannot be on that bank before: it is full until freed)
            freeing, freeing_bank = Signal(), Signal()
            m.d.sync += [freeing.eq(inference_issued), freeing_bank.eq(x_rb)]
            for b in range(2):
                with m.If(freeing & (freeing_bank == b)):
                    m.d.sync += xcount[b].eq(0)
                with m.Elif(x_take & (x_wb == b)):
                    m.d.sync += xcount[b].eq(xcount[b] + 1)
            with m.If(inference_issued):
                m.d.sync += x_rb.eq(~x_rb)
        can = (n_wait == 0) & ~full.bit_select(i_bank, 1)
        m.d.comb += issue.eq(can & src_ok)
        if self.per_step_input:
            m.d.comb += self.x.ready.eq(can)
        m.d.comb += mrd.addr.eq(n_idx)
        with m.If(n_wait != 0):
            m.d.sync += n_wait.eq(n_wait - 1)
        with m.If(issue):
            with m.If(n_idx == in_c - 1):
                m.d.sync += [n_idx.eq(0), n_step.eq(Mux(n_step == T - 1, 0, n_step + 1)), i_bank.eq(~i_bank),
                             n_wait.eq(wait_after_step)]
            with m.Else():
                m.d.sync += n_idx.eq(n_idx + 1)

        # the slot's bookkeeping travels beside the values: issued at c, written back at c + K
        meta_layout = data.StructLayout({"valid": 1, "i": range(in_c), "t": range(T), "last": 1})
        meta0 = Signal(meta_layout)
        m.d.comb += [meta0.valid.eq(issue), meta0.i.eq(n_idx), meta0.t.eq(n_step), meta0.last.eq(n_idx == in_c - 1)]
        meta = delay(m, meta0, K, "nrn_meta")
        x1 = Signal(self.x_shape)  # stage 1: the membrane and the current are out of their memories
        if self.per_step_input:
            m.d.sync += x1.eq(self.x.payload)
            m.d.comb += tap_x_valid.eq(meta[1].valid)
        x_cur = Signal(self.x_shape)
        m.d.comb += x_cur.eq(x1 if self.per_step_input else xrd.data)
        first = meta[1].t == 0  # step 0: v = 0, no spike pending
        v_old, s_old = Mux(first, 0, mrd.data.v), Mux(first, 0, mrd.data.s)
        # stage 2 (registered): the leak's operand u and the rest of the update d
        u2 = Signal(v_shape)
        theta_out = n.threshold * n.max_spike if n.reset == "subtract" else 0
        d_shape = shape_of(Range(r.x.lo - theta_out, r.x.hi))
        d2 = Signal(d_shape)
        if n.reset == "subtract":
            m.d.sync += [u2.eq(v_old), d2.eq(x_cur - s_old * n.threshold)]
        else:
            m.d.sync += [u2.eq(Mux(s_old == 0, v_old, 0)), d2.eq(x_cur)]
        # the leak floor((u·b + 2**(p−1)) / 2**p) as a registered tree of u's shifted copies (b is a constant:
        # one term per set bit, no multiplier, nothing for Yosys to put in a DSP block the allotment does not count)
        if n.is_if:
            leaked = u2
        else:
            terms = [u2 << j if j else u2 for j in range(n.leak_mul.bit_length()) if n.leak_mul >> j & 1]
            terms.append(Const((1 << n.leak_shift) >> 1))
            root = pipelined_sum(m, terms, name="leak")
            product = Signal(shape_of(r.leak))
            m.d.comb += product.eq(root)
            leaked = product >> n.leak_shift
        d_at = delay(m, d2, K - NEURON_BASE_LATENCY, "nrn_d")[-1]
        # stage K−1 (registered): the new membrane; stage K: fire, write back, queue the event
        v_new = Signal(v_shape)
        m.d.sync += v_new.eq(leaked + d_at)
        vK = meta[K]
        s_new = Signal(unsigned(sb))
        m.d.comb += s_new.eq(self._fire(v_new))
        push = Signal()
        m.d.comb += push.eq(vK.valid & ((s_new != 0) | Const(int(self.dense))))
        n_bank = Signal()  # the event bank the written-back step fills
        ev_cnt = Signal(range(in_c + 1))
        m.d.comb += [mwr.addr.eq(vK.i), mwr.data.v.eq(v_new), mwr.data.s.eq(s_new), mwr.en.eq(vK.valid),
                     ewr.addr.eq(Mux(n_bank, ev_cnt + in_c, ev_cnt)), ewr.data.i.eq(vK.i),
                     ewr.data.s.eq(s_new), ewr.en.eq(push)]
        step_done = Signal()
        m.d.comb += step_done.eq(vK.valid & vK.last)
        with m.If(push):
            m.d.sync += ev_cnt.eq(ev_cnt + 1)
        with m.If(step_done):
            m.d.sync += [ev_cnt.eq(0), n_bank.eq(~n_bank)]
            for b in range(2):
                with m.If(n_bank == b):
                    m.d.sync += [empty[b].eq((ev_cnt == 0) & ~push), cnt_last[b].eq(Mux(push, ev_cnt, ev_cnt - 1)),
                                 bank_t[b].eq(vK.t)]

        # ================= event walk: issue (A) → event read (B) → weight read (C) → accumulate =================
        rb = Signal()
        g = Signal(range(G))
        e = Signal(range(in_c))
        wbase = Signal(range(lay.depth + 1))  # g · in_c: the group's first weight word
        gap = Signal(range(STEP_GAP + 1))
        slots = Signal(range(HOLD_SLOTS + 2))
        freed = Signal()
        a_empty = Signal()
        a_end = Signal(range(in_c))
        a_t = Signal(range(T))
        m.d.comb += [a_empty.eq(Mux(rb, empty[1], empty[0])), a_end.eq(Mux(rb, cnt_last[1], cnt_last[0])),
                     a_t.eq(Mux(rb, bank_t[1], bank_t[0]))]
        a_last = Signal()  # the group's last slot
        a_drains = Signal()  # this step's group sums go to the drain
        m.d.comb += [a_last.eq(a_empty | (e == a_end)),
                     a_drains.eq(Const(1) if not last_layer else (a_t == T - 1))]
        walk = Signal()
        m.d.comb += walk.eq(full.bit_select(rb, 1) & (gap == 0) & (~(a_last & a_drains) | (slots < HOLD_SLOTS)))
        m.d.comb += erd.addr.eq(Mux(rb, e + in_c, e))
        with m.If(gap != 0):
            m.d.sync += gap.eq(gap - 1)
        step_walked = Signal()
        m.d.comb += step_walked.eq(walk & a_last & (g == G - 1))
        with m.If(walk):
            with m.If(a_last):
                m.d.sync += e.eq(0)
                with m.If(g == G - 1):
                    m.d.sync += [g.eq(0), wbase.eq(0), rb.eq(~rb), gap.eq(STEP_GAP)]
                with m.Else():
                    m.d.sync += [g.eq(g + 1), wbase.eq(wbase + in_c)]
            with m.Else():
                m.d.sync += e.eq(e + 1)
        # the bank flags: the neuron fills one bank while the walk frees the other
        for b in range(2):
            with m.If(step_done & (n_bank == b)):
                m.d.sync += full[b].eq(1)
            with m.Elif(step_walked & (rb == b)):
                m.d.sync += full[b].eq(0)
        m.d.sync += slots.eq(slots + (walk & a_last & a_drains) - freed)

        tag = data.StructLayout({"valid": 1, "first": 1, "last": 1, "empty": 1, "drains": 1, "carry": 1,
                                 "last_group": 1})
        tb = Signal(tag)
        gb = Signal(range(G))
        wbb = Signal(range(lay.depth + 1))
        m.d.sync += [tb.valid.eq(walk), tb.first.eq(e == 0), tb.last.eq(a_last), tb.empty.eq(a_empty),
                     tb.drains.eq(a_drains), tb.carry.eq(Const(int(last_layer)) & (a_t != 0)),
                     tb.last_group.eq(g == G - 1), gb.eq(g), wbb.eq(wbase)]
        # stage B: the event is out of its memory; read its weight word (and, last layer, the group's carry)
        attrs = {"ram_style": "block"} if lay.memory_bits >= BLOCK_RAM_MIN_BITS else {}
        wmem = memory.Memory(shape=unsigned(lay.word_bits), depth=lay.depth, init=pack_weights(self.weight, lay),
                             attrs=attrs)
        m.submodules.wmem = wmem
        wrd = wmem.read_port()
        m.d.comb += wrd.addr.eq(wbb + erd.data.i)
        tc = Signal(tag)
        gc = Signal(range(G))
        sc = Signal(unsigned(sb))
        m.d.sync += [tc.eq(tb), gc.eq(gb), sc.eq(erd.data.s)]
        psum_shape = shape_of(self.psum_range)
        if last_layer:
            carry = memory.Memory(shape=data.ArrayLayout(psum_shape, P), depth=G, init=[])
            m.submodules.carry = carry
            crd, cwr = carry.read_port(), carry.write_port()
            m.d.comb += crd.addr.eq(gb)
        # stage C: the weights are out; accumulate
        acc = [Signal(psum_shape, name=f"acc{p}") for p in range(P)]
        acc_new = [Signal(psum_shape, name=f"acc_next{p}") for p in range(P)]
        for p in range(P):
            code = wrd.data[p * self.w_bits:(p + 1) * self.w_bits]
            if sb == 1:  # a binary spike adds the weight (dense walks also queue zero spikes)
                w_val = weight_product(code, Const(1, unsigned(1)), self.w_bits, False)
                prod = Mux(sc[0], w_val, 0)
            else:
                prod = weight_product(code, sc, self.w_bits, False)
            base = (Mux(tc.carry, crd.data[p], 0) if last_layer else 0)
            m.d.comb += acc_new[p].eq(Mux(tc.first, base, acc[p]) + Mux(tc.empty, 0, prod))
            with m.If(tc.valid):
                m.d.sync += acc[p].eq(acc_new[p])
        if last_layer:
            m.d.comb += [cwr.addr.eq(gc), cwr.en.eq(tc.valid & tc.last & ~tc.drains)]
            m.d.comb += [cwr.data[p].eq(acc_new[p]) for p in range(P)]

        # ================= drain =================
        bias = self.bias * (T if last_layer else 1)
        rq = self.requant
        m.submodules.drain = drain = Drain(
            pes=P, bias=bias, psum_shape=psum_shape, acc_shape=shape_of(r.acc), out_shape=self.out_shape,
            requant=rq, product_shape=shape_of(r.product) if rq is not None else None, dsp_pieces=self.dsp_blocks)
        gvalid = Signal()
        gpsum = [Signal(psum_shape, name=f"group{p}") for p in range(P)]
        glast = Signal()
        m.d.sync += gvalid.eq(tc.valid & tc.last & tc.drains)
        with m.If(tc.valid & tc.last & tc.drains):
            m.d.sync += [gpsum[p].eq(acc_new[p]) for p in range(P)]
            m.d.sync += glast.eq(tc.last_group)
        m.d.comb += [drain.i.valid.eq(gvalid), drain.i.payload.last_group.eq(glast), freed.eq(drain.freed)]
        m.d.comb += [drain.i.payload.psum[p].eq(gpsum[p]) for p in range(P)]
        wiring.connect(m, drain.y, wiring.flipped(self.y))

        if self.debug_taps:
            m.d.comb += [
                self.tap_x.payload.eq(x1 if self.per_step_input else self.x.payload),
                self.tap_x.valid.eq(tap_x_valid),
                self.tap_spk.payload.eq(s_new), self.tap_spk.valid.eq(meta[K].valid),
                self.tap_acc.payload.eq(drain.tap_acc.payload), self.tap_acc.valid.eq(drain.tap_acc.valid),
                self.tap_out.payload.eq(self.y.payload), self.tap_out.valid.eq(self.y.valid & self.y.ready),
            ]
        return m
