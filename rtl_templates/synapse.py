"""The linear engine: neuron → PE array (pes × lanes) → requantizer, streams in and out.

Dataflow (one inference):

1. **Neuron and input buffer.** Each input current arrives on ``x`` (one per
   beat, in the order of the weight columns). An unrolled neuron turns it into
   its T spikes and their count Σ_t s_t in the same clock; counts are packed
   ``lanes`` to a word into a double-buffered input memory (one bank fills
   while the other is read), so the next inference can stream in while this one
   computes.
2. **PE array.** For every output group g (``pes`` outputs) and input word j,
   one clock reads a weight word (``pes × lanes`` weights at B_w bits) and an
   input word, and each PE adds Σ_l W·count to its accumulator. B_w = 1 is an
   add/subtract; wider products are plain multiplies (DSP-mappable). The first
   group starts on the first word, overlapping the input stream.
3. **Drain.** The finished group is copied to a holding register; the
   requantizer (bias, multiplier, rounding shift, clamp) emits one output per
   beat on ``y`` while the PE array works on the next group.

Every width comes from :mod:`bitspike.analysis` (``LayerRanges``); the
partial-sum register is sized from the actual weights: for output o the
partial sums lie in [Σ neg(W[o])·c_max, Σ pos(W[o])·c_max].
"""

from __future__ import annotations

import numpy as np
from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitspike.analysis import LayerRanges, Range, bits_for
from bitspike.manifest import Requant
from .neuron import check_neuron_params, shape_of, unrolled_neuron
from .requant import requantize
from .weight_mem import WeightLayout, pack_weights

__all__ = ["LinearEngine", "TapSignature", "partial_sum_range"]


def TapSignature(width: int, signed_: bool = False) -> wiring.Signature:
    """An observation-only port: payload and valid, never back-pressured."""
    return wiring.Signature({
        "payload": Out(signed(width) if signed_ else unsigned(width)),
        "valid": Out(1),
    })


def partial_sum_range(weight: np.ndarray, count_hi: int) -> Range:
    """Range of every partial sum Σ_{i∈S} W[o,i]·c_i over all outputs, subsets S and counts 0…count_hi."""
    w = np.asarray(weight, dtype=object).reshape(weight.shape[0], -1)
    pos = np.where(w > 0, w, 0).sum(axis=1) * count_hi
    neg = np.where(w < 0, w, 0).sum(axis=1) * count_hi
    return Range(int(min(0, neg.min())), int(max(0, pos.max())))


class LinearEngine(wiring.Component):
    """One synaptic layer (neuron + fully connected synapse + requantizer) as a streaming engine.

    Parameters
    ----------
    weight
        ``[out, in]`` integer weights, columns in the order the inputs arrive.
    bias
        ``[out]`` accumulator bias.
    w_bits, s_bits, timesteps, k
        The layer's B_w, B_s, T and threshold exponent.
    requant
        The requantization constants, or ``None`` for the output layer (``y`` carries the accumulators).
    ranges
        The layer's analysed ranges (:func:`bitspike.analysis.analyse`).
    pes, lanes
        Folding: outputs computed in parallel, inputs consumed per clock.
    debug_taps
        Add the observation ports ``tap_x``, ``tap_spk``, ``tap_acc`` and ``tap_out``.
    """

    def __init__(self, *, weight, bias, w_bits: int, s_bits: int, timesteps: int, k: int,
                 requant: Requant | None, ranges: LayerRanges, pes: int = 1, lanes: int = 1,
                 debug_taps: bool = False):
        check_neuron_params(s_bits, timesteps, k)
        weight = np.asarray(weight, dtype=np.int64)
        if weight.ndim != 2:
            raise ValueError(f"LinearEngine weight must be [out, in], got shape {list(weight.shape)}")
        out_f, in_f = weight.shape
        for name, value, hi in (("pes", pes, out_f), ("lanes", lanes, in_f)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
                raise ValueError(f"LinearEngine {name} must be an integer in 1 … {hi}, not {value!r}")
        self.weight, self.bias = weight, np.asarray(bias, dtype=np.int64)
        self.w_bits, self.s_bits, self.timesteps, self.k = w_bits, s_bits, timesteps, k
        self.requant, self.ranges = requant, ranges
        self.pes, self.lanes, self.debug_taps = pes, lanes, debug_taps
        self.layout = WeightLayout(out_f, in_f, pes, lanes, w_bits)
        self.count_range = ranges.count
        self.psum_range = partial_sum_range(weight, ranges.count.hi)
        # the partial sum plus the bias must stay inside the analysed accumulator range
        lo_c = np.minimum(0, np.where(weight < 0, weight, 0).sum(axis=1) * ranges.count.hi) + self.bias
        hi_c = np.maximum(0, np.where(weight > 0, weight, 0).sum(axis=1) * ranges.count.hi) + self.bias
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

    @property
    def widths(self) -> dict[str, int]:
        """Register widths, for the report."""
        r = self.ranges
        out = {"x": r.x.width, "v": r.v.width, "count": r.count.width, "psum": self.psum_range.width,
               "acc": r.acc.width, "out": r.out.width}
        if r.product is not None:
            out["product"] = r.product.width
        return out

    def __repr__(self) -> str:
        o, i = self.weight.shape
        return (f"LinearEngine(out={o}, in={i}, w_bits={self.w_bits}, s_bits={self.s_bits}, "
                f"timesteps={self.timesteps}, k={self.k}, pes={self.pes}, lanes={self.lanes})")

    def elaborate(self, platform):
        m = Module()
        P, L, lay = self.pes, self.lanes, self.layout
        J, G = lay.words_per_group, lay.groups
        out_f, in_f = self.weight.shape
        cw = self.count_range.width
        r = self.ranges

        # ---- stage W: neuron + pack counts into words + double-buffered input memory
        spikes, count_raw = unrolled_neuron(m, self.x.payload, self.k, self.s_bits, self.timesteps,
                                            shape_of(r.v), name="nrn")
        count = Signal(unsigned(cw))
        m.d.comb += count.eq(count_raw)
        inbuf = memory.Memory(shape=unsigned(L * cw), depth=2 * J, init=[])
        m.submodules.inbuf = inbuf
        wr = inbuf.write_port()
        rd = inbuf.read_port()
        full = Signal(2)
        wr_bank = Signal()
        wr_word = Signal(range(J + 1))
        wr_lane = Signal(range(L))
        wr_last_elem = Signal()
        pack = [Signal(unsigned(cw), name=f"pack{l}") for l in range(L)]
        m.d.comb += [
            self.x.ready.eq(~full.bit_select(wr_bank, 1)),
            wr_last_elem.eq((wr_word == J - 1) & (wr_lane == (in_f - 1) % L)),
            wr.addr.eq(wr_bank * J + wr_word),
            wr.data.eq(Cat(*[Mux(wr_lane == l, count, pack[l]) for l in range(L)])),
        ]
        accept = self.x.valid & self.x.ready
        with m.If(accept):
            with m.If((wr_lane == L - 1) | wr_last_elem):
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

        # ---- stage 0: issue reads of (group g, word j)
        wmem = memory.Memory(shape=unsigned(lay.word_bits), depth=lay.depth, init=pack_weights(self.weight, lay))
        m.submodules.wmem = wmem
        wrd = wmem.read_port()
        g = Signal(range(G))
        j = Signal(range(J))
        rd_bank = Signal()
        buf_count = Signal(range(P + 1))
        s1_valid, s1_first, s1_last, s1_lastgroup = Signal(), Signal(), Signal(), Signal()
        available = Signal()
        issue = Signal()
        m.d.comb += [
            available.eq(full.bit_select(rd_bank, 1) | ((wr_bank == rd_bank) & (j < wr_word))),
            # the last word of a group loads the holding register one clock later: it must be empty
            issue.eq(available & ((j != J - 1) | ((buf_count == 0) & ~(s1_valid & s1_last)))),
            rd.addr.eq(rd_bank * J + j),
            wrd.addr.eq(g * J + j),
        ]
        m.d.sync += [s1_valid.eq(issue), s1_first.eq(j == 0), s1_last.eq(j == J - 1), s1_lastgroup.eq(g == G - 1)]
        with m.If(issue):
            m.d.sync += j.eq(j + 1)
            with m.If(j == J - 1):
                m.d.sync += [j.eq(0), g.eq(g + 1)]
                with m.If(g == G - 1):
                    m.d.sync += [g.eq(0), rd_bank.eq(~rd_bank)]
                    with m.If(rd_bank):
                        m.d.sync += full[1].eq(0)
                    with m.Else():
                        m.d.sync += full[0].eq(0)
        # the writer's "bank complete" comes after the reader's release so that it wins;
        # they never name the same bank in one clock (the reader only frees a bank it read completely)
        with m.If(accept & wr_last_elem):
            with m.If(wr_bank):
                m.d.sync += full[1].eq(1)
            with m.Else():
                m.d.sync += full[0].eq(1)

        # ---- stage 1: PE array
        psum_shape = shape_of(self.psum_range)
        acc = [Signal(psum_shape, name=f"psum{p}") for p in range(P)]
        acc_next = [Signal(psum_shape, name=f"psum_next{p}") for p in range(P)]
        counts = [rd.data[l * cw:(l + 1) * cw] for l in range(L)]
        wb = self.w_bits
        for p in range(P):
            terms = []
            for l in range(L):
                code = wrd.data[(p * L + l) * wb:(p * L + l + 1) * wb]
                c = counts[l]
                if wb == 1:
                    terms.append(Mux(code[0], c, -c))
                else:
                    terms.append(code.as_signed() * c)
            lane_sum = terms[0]
            for t in terms[1:]:
                lane_sum = lane_sum + t
            m.d.comb += acc_next[p].eq(Mux(s1_first, 0, acc[p]) + lane_sum)
            with m.If(s1_valid):
                m.d.sync += acc[p].eq(acc_next[p])

        # ---- stage 2: holding register, drained through the requantizer one output per beat
        hold = [Signal(psum_shape, name=f"hold{p}") for p in range(P)]
        out_idx = Signal(range(out_f))
        last_n = out_f - (G - 1) * P
        pop = Signal()
        with m.If(s1_valid & s1_last):
            m.d.sync += [hold[p].eq(acc_next[p]) for p in range(P)]
            m.d.sync += buf_count.eq(Mux(s1_lastgroup, last_n, P))
        bias_rom = memory.Memory(shape=shape_of(Range(int(min(0, self.bias.min())), int(max(0, self.bias.max())))),
                                 depth=out_f, init=[int(b) for b in self.bias])
        m.submodules.bias_rom = bias_rom
        brd = bias_rom.read_port(domain="comb")
        m.d.comb += brd.addr.eq(out_idx)
        acc_val = Signal(shape_of(r.acc))
        m.d.comb += acc_val.eq(hold[0] + brd.data)
        if self.requant is None:
            y_val = Signal(self.out_shape)
            m.d.comb += y_val.eq(acc_val)
        else:
            rq = self.requant
            mult = [int(v) for v in rq.multiplier]
            rbias = [int(v) for v in rq.bias]
            mrom = memory.Memory(shape=shape_of(Range(min(0, min(mult)), max(0, max(mult)))), depth=out_f, init=mult)
            brom = memory.Memory(shape=shape_of(Range(min(0, min(rbias)), max(0, max(rbias)))), depth=out_f, init=rbias)
            m.submodules.mult_rom, m.submodules.rqbias_rom = mrom, brom
            mrd, bbrd = mrom.read_port(domain="comb"), brom.read_port(domain="comb")
            m.d.comb += [mrd.addr.eq(out_idx), bbrd.addr.eq(out_idx)]
            y_val = requantize(m, acc_val, mrd.data, bbrd.data, rq.shift, rq.lo, rq.hi, self.out_shape,
                               shape_of(r.product), name="rq")
        m.d.comb += pop.eq((buf_count != 0) & (~self.y.valid | self.y.ready))
        with m.If(self.y.valid & self.y.ready):
            m.d.sync += self.y.valid.eq(0)
        with m.If(pop):
            m.d.sync += [self.y.payload.eq(y_val), self.y.valid.eq(1), buf_count.eq(buf_count - 1),
                         out_idx.eq(Mux(out_idx == out_f - 1, 0, out_idx + 1))]
            m.d.sync += [hold[p].eq(hold[p + 1]) for p in range(P - 1)]

        if self.debug_taps:
            m.d.comb += [
                self.tap_x.payload.eq(self.x.payload), self.tap_x.valid.eq(accept),
                self.tap_spk.payload.eq(Cat(*spikes)), self.tap_spk.valid.eq(accept),
                self.tap_acc.payload.eq(acc_val), self.tap_acc.valid.eq(pop),
                self.tap_out.payload.eq(y_val), self.tap_out.valid.eq(pop),
            ]
        return m
