"""The synaptic engine: neuron → PE array (pes × lanes) → requantizer, streams in and out.

One engine serves both synaptic ops: a linear layer is a convolution of a
1×1 map with ``in`` channels and a 1×1 kernel (:mod:`.linear`, :mod:`.conv`).

Dataflow (one inference; feature maps stream HWC, channel fastest). The
engine is pipelined so that no clock holds a memory read, a multiply and an
adder together:

1. **Neuron and frame buffer.** Each input current arrives on ``x``. An
   unrolled neuron turns it into its T spikes and their count Σ_t s_t; the
   count is registered, then packed ``lanes`` channels to a word into a
   double-buffered frame memory (one bank fills while the other is read), so
   the next inference streams in while this one computes.
2. **Address counters.** For every output pixel, output group g (``pes``
   channels) and window word (kernel tap × channel word) one word is issued;
   its frame and weight addresses are stepped by counters (no products of
   indices). Taps in the zero padding read a word that is never written (0).
3. **PE array, pipelined.** The memory outputs are registered (the block
   RAM's output register), then the products (:mod:`.pe`: sign and ternary
   weights as muxes, narrow products as shift-add logic, wide ones as DSP
   multiplies, as many as ``dsp_blocks`` allows), then a balanced adder tree
   over the lanes with a register per level (:mod:`.adder_tree`), then the
   accumulator: :func:`pe_latency` clocks from issue to accumulate.
4. **Drain.** A finished group goes to a two-slot holding queue (the PE
   array never waits for a drain unless two groups are waiting); outputs
   leave one per beat through the bias add and the staged requantizer
   (:func:`.requant.requant_pipeline`); per-channel constants are read from
   ROMs one clock ahead. The drain pipeline stalls as one while a registered
   skid slot behind ``y`` is full, so ``y.ready`` drives only ``y`` and the
   slot, never the pipeline's enables.

The sliding window is read out of the buffered frame (a frame buffer, not a
line buffer: memory H·W·C·count bits per bank, simple and stall-proof).

Every width comes from :mod:`bitspike.analysis` (``LayerRanges``); the
partial-sum register is sized from the actual weights: for output o the
partial sums lie in [Σ neg(W[o])·c_max, Σ pos(W[o])·c_max].
"""

from __future__ import annotations

import numpy as np
from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitspike.analysis import LayerRanges, Range
from bitspike.manifest import Requant, rounding_term
from .adder_tree import delay, pipelined_sum, tree_depth
from .neuron import check_neuron_params, shape_of, unrolled_neuron
from .pe import is_narrow, lut_cost, weight_product
from .requant import REQUANT_LATENCY, piece_costs, requant_pipeline
from .weight_mem import WeightLayout, pack_weights

__all__ = ["SynapticEngine", "TapSignature", "partial_sum_range", "BLOCK_RAM_MIN_BITS", "pe_latency",
           "drain_latency", "dsp_candidates", "HOLD_SLOTS", "INPUT_LATENCY"]

#: weight memories of at least this many bits are marked ``ram_style = "block"``
BLOCK_RAM_MIN_BITS = 1024


def TapSignature(width: int, signed_: bool = False) -> wiring.Signature:
    """An observation-only port: payload and valid, never back-pressured."""
    return wiring.Signature({
        "payload": Out(signed(width) if signed_ else unsigned(width)),
        "valid": Out(1),
    })


#: groups the holding queue takes (one draining, one waiting)
HOLD_SLOTS = 2
#: clocks from an input beat's acceptance to the first clock its frame word can be issued
#: (neuron register, then the write)
INPUT_LATENCY = 2


def pe_latency(lanes: int) -> int:
    """Clocks from a word's issue to the clock in which its lane sum enters the accumulator.

    Issue → memory output (1) → registered memory output (2) → registered products (3) →
    ``tree_depth(lanes)`` registered tree levels. A group's last word loads the holding
    queue at the end of that clock.
    """
    return 3 + tree_depth(lanes)


def drain_latency(requantized: bool) -> int:
    """Clocks from an output's pop off the holding queue to its ``y.valid``."""
    return REQUANT_LATENCY if requantized else 1


def _const_shape(values) -> Range:
    return Range(int(min(0, min(values))), int(max(0, max(values))))


def dsp_candidates(*, w_bits: int, count_width: int, pes: int, lanes: int, acc_range: Range | None,
                   multipliers=None) -> list[tuple[int, str]]:
    """The engine's products that may use a DSP block, best first: ``[(LUT cost saved, kind)]``.

    ``kind`` is ``"requant"`` (a piece of the requantizer's multiply) or ``"pe"``. Narrow PE
    products (:func:`~.pe.is_narrow`) are never candidates. The engine gives its first
    ``dsp_blocks`` candidates a DSP block, in this order (ties: requantizer first).
    """
    out = []
    if acc_range is not None and multipliers is not None:
        out += [(c, "requant") for c in piece_costs(shape_of(acc_range), shape_of(_const_shape(multipliers)))]
    if not is_narrow(w_bits, count_width):
        out += [(lut_cost(w_bits, count_width + 1), "pe")] * (pes * lanes)
    return sorted(out, key=lambda c: (-c[0], c[1] != "requant"))


def partial_sum_range(weight: np.ndarray, count_hi: int) -> Range:
    """Range of every partial sum Σ_{i∈S} W[o,i]·c_i over all outputs, subsets S and counts 0…count_hi."""
    w = np.asarray(weight, dtype=object).reshape(weight.shape[0], -1)
    pos = np.where(w > 0, w, 0).sum(axis=1) * count_hi
    neg = np.where(w < 0, w, 0).sum(axis=1) * count_hi
    return Range(int(min(0, neg.min())), int(max(0, pos.max())))


class SynapticEngine(wiring.Component):
    """One synaptic layer (neuron + convolution/linear synapse + requantizer) as a streaming engine.

    Parameters
    ----------
    weight
        ``[out, in, kh, kw]`` integer weights (input channels in stream order).
    bias
        ``[out]`` accumulator bias.
    in_hw
        Input map height and width (``(1, 1)`` for a linear layer).
    stride, padding
        ``(h, w)`` pairs.
    w_bits, s_bits, timesteps, k
        The layer's B_w, B_s, T and threshold exponent.
    requant
        The requantization constants, or ``None`` for the output layer (``y`` carries the accumulators).
    ranges
        The layer's analysed ranges (:func:`bitspike.analysis.analyse`).
    pes, lanes
        Folding: output channels computed in parallel, input channels consumed per clock.
    debug_taps
        Add the observation ports ``tap_x``, ``tap_spk``, ``tap_acc`` and ``tap_out``.
    dsp_blocks
        How many products may be DSP multiplies (:func:`dsp_candidates` says which);
        ``None``: every product that is not narrow. The others are built in logic.
    """

    def __init__(self, *, weight, bias, in_hw=(1, 1), stride=(1, 1), padding=(0, 0), w_bits: int, s_bits: int,
                 timesteps: int, k: int, requant: Requant | None, ranges: LayerRanges, pes: int = 1, lanes: int = 1,
                 debug_taps: bool = False, dsp_blocks: int | None = None):
        check_neuron_params(s_bits, timesteps, k)
        weight = np.asarray(weight, dtype=np.int64)
        if weight.ndim != 4:
            raise ValueError(f"SynapticEngine weight must be [out, in, kh, kw], got shape {list(weight.shape)}")
        out_c, in_c, kh, kw = weight.shape
        for name, value, hi in (("pes", pes, out_c), ("lanes", lanes, in_c)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
                raise ValueError(f"engine {name} must be an integer in 1 … {hi}, not {value!r}")
        self.weight, self.bias = weight, np.asarray(bias, dtype=np.int64)
        self.in_hw, self.stride, self.padding = tuple(in_hw), tuple(stride), tuple(padding)
        h, w = self.in_hw
        self.out_hw = ((h + 2 * padding[0] - kh) // stride[0] + 1, (w + 2 * padding[1] - kw) // stride[1] + 1)
        if min(self.out_hw) < 1:
            raise ValueError(f"kernel {kh}x{kw} does not fit a {h}x{w} map with padding {list(padding)}")
        self.w_bits, self.s_bits, self.timesteps, self.k = w_bits, s_bits, timesteps, k
        self.requant, self.ranges = requant, ranges
        self.pes, self.lanes, self.debug_taps = pes, lanes, debug_taps
        if dsp_blocks is not None and (isinstance(dsp_blocks, bool) or not isinstance(dsp_blocks, int) or dsp_blocks < 0):
            raise ValueError(f"engine dsp_blocks must be a non-negative integer or None, not {dsp_blocks!r}")
        self.dsp_blocks = dsp_blocks
        self.layout = WeightLayout(out_c, in_c, pes, lanes, w_bits, taps=kh * kw)
        self.count_range = ranges.count
        self.psum_range = partial_sum_range(weight, ranges.count.hi)
        # the partial sum plus the bias must stay inside the analysed accumulator range
        w2 = weight.reshape(out_c, -1)
        lo_c = np.minimum(0, np.where(w2 < 0, w2, 0).sum(axis=1) * ranges.count.hi) + self.bias
        hi_c = np.maximum(0, np.where(w2 > 0, w2, 0).sum(axis=1) * ranges.count.hi) + self.bias
        assert ranges.acc.contains(int(lo_c.min()), int(hi_c.max())), "analysed accumulator range too narrow"
        self.x_shape = shape_of(ranges.x)
        self.out_shape = shape_of(ranges.out)
        members = {
            "x": In(stream.Signature(self.x_shape)),
            "y": Out(stream.Signature(self.out_shape)),
        }
        if debug_taps:
            members["tap_x"] = Out(TapSignature(ranges.x.width, ranges.x.signed))
            members["tap_spk"] = Out(TapSignature(s_bits * timesteps))
            members["tap_acc"] = Out(TapSignature(ranges.acc.width, ranges.acc.signed))
            members["tap_out"] = Out(TapSignature(ranges.out.width, ranges.out.signed))
        super().__init__(members)

    @property
    def weight_memory_bits(self) -> int:
        return self.layout.memory_bits

    def __repr__(self) -> str:
        o, c, kh, kw = self.weight.shape
        return (f"{type(self).__name__}(out={o}, in={c}, kernel=({kh}, {kw}), in_hw={self.in_hw}, stride={self.stride}, "
                f"padding={self.padding}, w_bits={self.w_bits}, s_bits={self.s_bits}, timesteps={self.timesteps}, "
                f"k={self.k}, pes={self.pes}, lanes={self.lanes}, dsp_blocks={self.dsp_blocks})")

    def dsp_plan(self) -> tuple[int, int | None]:
        """``(PE products with a DSP block, requantizer pieces with one (None: no requantizer))``."""
        cands = dsp_candidates(w_bits=self.w_bits, count_width=self.count_range.width, pes=self.pes,
                               lanes=self.lanes, acc_range=self.ranges.acc if self.requant is not None else None,
                               multipliers=self.requant.multiplier if self.requant is not None else None)
        chosen = cands if self.dsp_blocks is None else cands[:self.dsp_blocks]
        pe = sum(1 for _, kind in chosen if kind == "pe")
        rq = sum(1 for _, kind in chosen if kind == "requant") if self.requant is not None else None
        return pe, rq


    def elaborate(self, platform):
        m = Module()
        P, L, lay = self.pes, self.lanes, self.layout
        Jc, G = lay.channel_words, lay.groups
        out_c, in_c, KH, KW = self.weight.shape
        H, W = self.in_hw
        HO, WO = self.out_hw
        SH, SW = self.stride
        PH, PW = self.padding
        frame = H * W * Jc  # words per bank
        # does some window read the map's last row and last column (so the frame's last word)?
        reads_last = (any(o * SH - PH <= H - 1 <= o * SH - PH + KH - 1 for o in range(HO))
                      and any(o * SW - PW <= W - 1 <= o * SW - PW + KW - 1 for o in range(WO)))
        cw = self.count_range.width
        r = self.ranges
        pe_dsp, rq_dsp = self.dsp_plan()
        # a word no writer touches: padded taps read it and see counts of zero
        has_pad = PH > 0 or PW > 0
        zero_word = 2 * frame

        # ---- writer: neuron (registered) + pack channel counts into words + double-buffered frame memory
        spikes, count_raw = unrolled_neuron(m, self.x.payload, self.k, self.s_bits, self.timesteps,
                                            shape_of(r.v), name="nrn")
        inbuf = memory.Memory(shape=unsigned(L * cw), depth=2 * frame + has_pad, init=[])
        m.submodules.inbuf = inbuf
        wr = inbuf.write_port()
        rd = inbuf.read_port()
        full = Signal(2)
        wr_bank = Signal()
        wr_word = Signal(range(frame + 1))
        wr_chan = Signal(range(in_c))
        wr_lane = Signal(range(L))
        wr_last_elem = Signal()
        pack = [Signal(unsigned(cw), name=f"pack{l}") for l in range(L)]
        count = Signal(unsigned(cw))  # the neuron register
        count_valid = Signal()
        w_ready = Signal()
        m.d.comb += [
            w_ready.eq(~full.bit_select(wr_bank, 1)),
            self.x.ready.eq(~count_valid | w_ready),
            wr_last_elem.eq((wr_word == frame - 1) & (wr_chan == in_c - 1)),
            wr.addr.eq(Mux(wr_bank, wr_word + frame, wr_word)),
            wr.data.eq(Cat(*[Mux(wr_lane == l, count, pack[l]) for l in range(L)])),
        ]
        x_accept = self.x.valid & self.x.ready
        with m.If(x_accept):
            m.d.sync += [count.eq(count_raw), count_valid.eq(1)]
        with m.Elif(w_ready):
            m.d.sync += count_valid.eq(0)
        accept = count_valid & w_ready
        with m.If(accept):
            m.d.sync += wr_chan.eq(Mux(wr_chan == in_c - 1, 0, wr_chan + 1))
            with m.If((wr_lane == L - 1) | (wr_chan == in_c - 1)):
                m.d.comb += wr.en.eq(1)
                m.d.sync += [p.eq(0) for p in pack]
                m.d.sync += [wr_lane.eq(0), wr_word.eq(wr_word + 1)]
                with m.If(wr_last_elem):
                    m.d.sync += [wr_word.eq(0), wr_bank.eq(~wr_bank)]
            with m.Else():
                m.d.sync += wr_lane.eq(wr_lane + 1)
                for l in range(L):
                    with m.If(wr_lane == l):
                        m.d.sync += pack[l].eq(count)

        # ---- issue: counters over (oh, ow, g, ky, kx, jc), innermost last, and the addresses they step
        # large weight memories go to block RAM (Yosys otherwise may build shallow, wide ROMs from LUTs)
        attrs = {"ram_style": "block"} if lay.memory_bits >= BLOCK_RAM_MIN_BITS else {}
        wmem = memory.Memory(shape=unsigned(lay.word_bits), depth=lay.depth, init=pack_weights(self.weight, lay),
                             attrs=attrs)
        m.submodules.wmem = wmem
        wrd = wmem.read_port()
        oh, ow = Signal(range(HO)), Signal(range(WO))
        g, ky, kx, jc = Signal(range(G)), Signal(range(KH)), Signal(range(KW)), Signal(range(Jc))
        rd_bank = Signal()
        slots = Signal(range(HOLD_SLOTS + 1))  # groups whose last word issued and that have not fully drained
        waddr = Signal(range(lay.depth))
        word_last = Signal()
        frame_last = Signal()
        available = Signal()
        issue = Signal()
        counters = ((jc, Jc), (kx, KW), (ky, KH), (g, G), (ow, WO), (oh, HO))
        wraps = []
        for ctr, size in counters:
            wrap = Signal(name=f"{ctr.name}_wrap")
            m.d.comb += wrap.eq(ctr == size - 1)
            wraps.append(wrap)
        # step[i]: counter i increments (all inner ones wrap); step[6]: the whole frame wraps
        step = []
        for i in range(len(counters) + 1):
            inner = Const(1)
            for w_ in wraps[:i]:
                inner = inner & w_
            s_ = Signal(name=f"step{i}")
            m.d.comb += s_.eq(inner & (~wraps[i] if i < len(counters) else Const(1)))
            step.append(s_)
        group_wrap = Signal()
        m.d.comb += [
            word_last.eq(wraps[0] & wraps[1] & wraps[2]),
            group_wrap.eq(word_last & wraps[3]),
            frame_last.eq(group_wrap & wraps[4] & wraps[5]),
        ]
        if (H, W, KH, KW) == (1, 1, 1, 1) and not has_pad:
            local, pad = jc, Const(0)
        else:
            local, pad = self._window_address(m, issue, step, Jc)
        m.d.comb += [
            available.eq(pad | full.bit_select(rd_bank, 1) | ((wr_bank == rd_bank) & (local < wr_word))),
            # the last word of a group reserves a slot of the holding queue
            issue.eq(available & (~word_last | (slots < HOLD_SLOTS))),
            rd.addr.eq(Mux(pad, zero_word, Mux(rd_bank, local + frame, local)) if has_pad
                       else Mux(rd_bank, local + frame, local)),
            wrd.addr.eq(waddr),
        ]
        with m.If(issue):
            m.d.sync += waddr.eq(Mux(group_wrap, 0, waddr + 1))
            for (ctr, _size), w_, i in zip(counters, wraps, range(len(counters))):
                inner = Const(1)
                for w2 in wraps[:i]:
                    inner = inner & w2
                with m.If(inner):
                    m.d.sync += ctr.eq(Mux(w_, 0, ctr + 1))
            with m.If(frame_last):
                m.d.sync += rd_bank.eq(~rd_bank)
                if reads_last:
                    with m.If(rd_bank):
                        m.d.sync += full[1].eq(0)
                    with m.Else():
                        m.d.sync += full[0].eq(0)
        if reads_last:
            # the writer's "bank complete" comes after the reader's release; they never name the
            # same bank in one clock (the reader only frees a bank it has read completely)
            with m.If(accept & wr_last_elem):
                with m.If(wr_bank):
                    m.d.sync += full[1].eq(1)
                with m.Else():
                    m.d.sync += full[0].eq(1)
        else:
            # No window reads the map's last element (a stride leaves rows or columns over), so
            # the reader can finish a bank before the writer has. It then marks the bank
            # "released early", and the writer's completion frees the bank instead of filling it.
            early = Signal(2)
            release = issue & frame_last
            complete = accept & wr_last_elem
            for b in range(2):
                rel = release & (rd_bank == b)
                cmp = complete & (wr_bank == b)
                with m.If(rel & cmp):
                    m.d.sync += [full[b].eq(0), early[b].eq(0)]
                with m.Elif(rel):
                    with m.If(full[b]):
                        m.d.sync += full[b].eq(0)
                    with m.Else():
                        m.d.sync += early[b].eq(1)
                with m.Elif(cmp):
                    with m.If(early[b]):
                        m.d.sync += early[b].eq(0)
                    with m.Else():
                        m.d.sync += full[b].eq(1)

        # ---- PE array: memory outputs registered, products registered, registered adder tree, accumulator
        E = pe_latency(L)
        flags = Signal(4)  # valid, first word of the group, last word, last group
        m.d.comb += flags.eq(Cat(issue, (ky == 0) & (kx == 0) & (jc == 0), word_last, wraps[3]))
        acc_flags = delay(m, flags, E, "pe_flags")[-1]
        wq = Signal(lay.word_bits)
        cq = Signal(L * cw)
        m.d.sync += [wq.eq(wrd.data), cq.eq(rd.data)]
        wb = self.w_bits
        psum_shape = shape_of(self.psum_range)
        acc = [Signal(psum_shape, name=f"psum{p}") for p in range(P)]
        acc_next = [Signal(psum_shape, name=f"psum_next{p}") for p in range(P)]
        n_dsp = 0
        for p in range(P):
            terms = []
            for l in range(L):
                code = wq[(p * L + l) * wb:(p * L + l + 1) * wb]
                use_dsp = not is_narrow(wb, cw) and n_dsp < pe_dsp
                n_dsp += use_dsp
                value = weight_product(code, cq[l * cw:(l + 1) * cw], wb, use_dsp)
                prod = Signal(value.shape(), name=f"prod{p}_{l}")
                m.d.sync += prod.eq(value)
                terms.append(prod)
            lane_sum = pipelined_sum(m, terms, name=f"lanes{p}")
            m.d.comb += acc_next[p].eq(Mux(acc_flags[1], 0, acc[p]) + lane_sum)
            with m.If(acc_flags[0]):
                m.d.sync += acc[p].eq(acc_next[p])

        # ---- holding queue (slot A drains, slot B waits), drained one output per beat
        a = [Signal(psum_shape, name=f"hold{p}") for p in range(P)]
        b = [Signal(psum_shape, name=f"wait{p}") for p in range(P)]
        last_n = out_c - (G - 1) * P
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
            load.eq(acc_flags[0] & acc_flags[2]),
            load_n.eq(Mux(acc_flags[3], last_n, P)),
            # a registered skid slot behind y: y.ready never reaches the drain pipeline's enables
            adv.eq(~skid_valid),
            pop.eq((a_count != 0) & adv),
            a_free.eq((a_count == 0) | (pop & (a_count == 1))),
        ]
        with m.If(pop):
            m.d.sync += [a[p].eq(a[p + 1]) for p in range(P - 1)]
            m.d.sync += a_count.eq(a_count - 1)
        with m.If(a_free):
            with m.If(b_full):
                m.d.sync += [a[p].eq(b[p]) for p in range(P)]
                m.d.sync += [a_count.eq(b_n), b_full.eq(load)]
                with m.If(load):
                    m.d.sync += [b[p].eq(acc_next[p]) for p in range(P)]
                    m.d.sync += b_n.eq(load_n)
            with m.Elif(load):
                m.d.sync += [a[p].eq(acc_next[p]) for p in range(P)]
                m.d.sync += a_count.eq(load_n)
        with m.Elif(load):
            m.d.sync += [b[p].eq(acc_next[p]) for p in range(P)]
            m.d.sync += [b_n.eq(load_n), b_full.eq(1)]
        m.d.sync += slots.eq(slots + (issue & word_last) - (pop & (a_count == 1)))

        # per-channel constants, read one clock ahead of the pop that uses them
        out_idx = Signal(range(out_c))
        idx_next = Signal(range(out_c))
        m.d.comb += idx_next.eq(Mux(pop, Mux(out_idx == out_c - 1, 0, out_idx + 1), out_idx))
        m.d.sync += out_idx.eq(idx_next)
        bias_q = self._channel_rom(m, [int(v) for v in self.bias], idx_next, "bias_rom")
        acc_val = Signal(shape_of(r.acc))
        m.d.comb += acc_val.eq(a[0] + bias_q)
        if self.requant is None:
            y_val, y_stage_valid = acc_val, pop
            tap_acc, tap_acc_valid = acc_val, pop
        else:
            rq = self.requant
            mult_q = self._channel_rom(m, [int(v) for v in rq.multiplier], idx_next, "mult_rom")
            brnd_q = self._channel_rom(m, [int(v) + rounding_term(rq.shift) for v in rq.bias], idx_next, "rqbias_rom")
            acc_r = Signal(shape_of(r.acc))
            mult_r = Signal(mult_q.shape())
            brnd_r = Signal(brnd_q.shape())
            v0 = Signal()
            with m.If(adv):
                m.d.sync += [acc_r.eq(acc_val), mult_r.eq(mult_q), brnd_r.eq(brnd_q), v0.eq(pop)]
            y_stage_valid, y_val = requant_pipeline(m, v0, acc_r, mult_r, brnd_r, shift=rq.shift, lo=rq.lo, hi=rq.hi,
                                                    out_shape=self.out_shape, product_shape=shape_of(r.product),
                                                    enable=adv, dsp_pieces=rq_dsp, name="rq")
            tap_acc, tap_acc_valid = acc_r, v0 & adv
        skid = Signal(self.out_shape)
        with m.If(self.y.valid & ~self.y.ready):  # y is held: a value arriving now waits in the skid slot
            with m.If(adv & y_stage_valid):
                m.d.sync += [skid.eq(y_val), skid_valid.eq(1)]
        with m.Elif(skid_valid):
            m.d.sync += [self.y.payload.eq(skid), self.y.valid.eq(1), skid_valid.eq(0)]
        with m.Else():
            m.d.sync += [self.y.payload.eq(y_val), self.y.valid.eq(adv & y_stage_valid)]

        if self.debug_taps:
            m.d.comb += [
                self.tap_x.payload.eq(self.x.payload), self.tap_x.valid.eq(x_accept),
                self.tap_spk.payload.eq(Cat(*spikes)), self.tap_spk.valid.eq(x_accept),
                self.tap_acc.payload.eq(tap_acc), self.tap_acc.valid.eq(tap_acc_valid),
                self.tap_out.payload.eq(self.y.payload), self.tap_out.valid.eq(self.y.valid & self.y.ready),
            ]
        return m

    def _channel_rom(self, m: Module, values: list[int], addr_next, name: str):
        """Per-output-channel constants: a ROM read one clock ahead (``addr_next``), or a constant when all agree."""
        shape = shape_of(_const_shape(values))
        if len(set(values)) == 1:
            return Const(values[0], shape)
        rom = memory.Memory(shape=shape, depth=len(values), init=values, attrs={"ram_style": "logic"})
        m.submodules[name] = rom
        port = rom.read_port()
        m.d.comb += port.addr.eq(addr_next)
        return port.data

    def _window_address(self, m: Module, issue, step, Jc: int):
        """Frame-word address and padding flag of the current tap, stepped by counters.

        Every register is "the value at the current counters"; on each issue one of them moves by a
        constant, chosen by the outermost counter that steps (``step[i]``).
        """
        H, W = self.in_hw
        HO, WO = self.out_hw
        SH, SW = self.stride
        PH, PW = self.padding
        out_c, in_c, KH, KW = self.weight.shape
        ih_hi = (HO - 1) * SH + KH - PH
        iw_hi = (WO - 1) * SW + KW - PW
        a_lo = (-PH * W - PW) * Jc
        a_hi = (ih_hi * W + iw_hi + 1) * Jc + W * Jc
        ih, ih0 = Signal(range(-PH, ih_hi + 1), init=-PH), Signal(range(-PH, ih_hi + 1), init=-PH)
        iw, iw0 = Signal(range(-PW, iw_hi + 1), init=-PW), Signal(range(-PW, iw_hi + 1), init=-PW)
        addr = [Signal(range(min(a_lo, 0), a_hi + 1), init=a_lo, name=n) for n in ("a_line", "a_pix", "a_row", "a_tap", "local")]
        a_line, a_pix, a_row, a_tap, local = addr
        pad = Signal()
        m.d.comb += pad.eq((ih < 0) | (ih >= H) | (iw < 0) | (iw >= W))
        with m.If(issue):
            with m.If(step[0]):  # next channel word
                m.d.sync += local.eq(local + 1)
            with m.Elif(step[1]):  # next kernel column
                m.d.sync += [iw.eq(iw + 1), a_tap.eq(a_tap + Jc), local.eq(a_tap + Jc)]
            with m.Elif(step[2]):  # next kernel row
                m.d.sync += [iw.eq(iw0), ih.eq(ih + 1), a_row.eq(a_row + W * Jc), a_tap.eq(a_row + W * Jc),
                             local.eq(a_row + W * Jc)]
            with m.Elif(step[3]):  # next output group: the same window again
                m.d.sync += [ih.eq(ih0), iw.eq(iw0), a_row.eq(a_pix), a_tap.eq(a_pix), local.eq(a_pix)]
            with m.Elif(step[4]):  # next output column
                m.d.sync += [iw0.eq(iw0 + SW), iw.eq(iw0 + SW), ih.eq(ih0)]
                m.d.sync += [s.eq(a_pix + SW * Jc) for s in (a_pix, a_row, a_tap, local)]
            with m.Elif(step[5]):  # next output row
                m.d.sync += [ih0.eq(ih0 + SH), ih.eq(ih0 + SH), iw0.eq(-PW), iw.eq(-PW)]
                m.d.sync += [s.eq(a_line + SH * W * Jc) for s in (a_line, a_pix, a_row, a_tap, local)]
            with m.Else():  # next frame
                m.d.sync += [ih0.eq(-PH), ih.eq(-PH), iw0.eq(-PW), iw.eq(-PW)]
                m.d.sync += [s.eq(a_lo) for s in addr]
        return local, pad
