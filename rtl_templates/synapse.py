"""The synaptic engine: neuron → PE array (pes × lanes) → requantizer, streams in and out.

One engine serves both synaptic ops: a linear layer is a convolution of a
1×1 map with ``in`` channels and a 1×1 kernel (:mod:`.linear`, :mod:`.conv`).

Dataflow (one inference; feature maps stream HWC, channel fastest):

1. **Neuron and frame buffer.** Each input current arrives on ``x``. An
   unrolled neuron turns it into its T spikes and their count Σ_t s_t in the
   same clock; counts are packed ``lanes`` channels to a word into a
   double-buffered frame memory (one bank fills while the other is read), so
   the next inference streams in while this one computes.
2. **PE array.** For every output pixel, output group g (``pes`` channels) and
   window word (kernel tap × channel word), one clock reads a weight word
   (``pes × lanes`` weights at B_w bits) and an input word, and each PE adds
   Σ_l W·count to its accumulator; taps in the zero padding read as count 0.
   A word is read as soon as it has been written, so computing overlaps the
   input stream. B_w = 1 is an add/subtract; wider products are plain
   multiplies (DSP-mappable).
3. **Drain.** The finished group is copied to a holding register; the
   requantizer (bias, multiplier, rounding shift, clamp) emits one output per
   beat on ``y`` while the PE array works on the next group.

The sliding window is read out of the buffered frame (a frame buffer, not a
line buffer: memory H·W·C·count bits per bank, simple and stall-proof).

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

__all__ = ["SynapticEngine", "TapSignature", "partial_sum_range", "BLOCK_RAM_MIN_BITS"]

#: weight memories of at least this many bits are marked ``ram_style = "block"``
BLOCK_RAM_MIN_BITS = 1024


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
    """

    def __init__(self, *, weight, bias, in_hw=(1, 1), stride=(1, 1), padding=(0, 0), w_bits: int, s_bits: int,
                 timesteps: int, k: int, requant: Requant | None, ranges: LayerRanges, pes: int = 1, lanes: int = 1,
                 debug_taps: bool = False):
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
                f"k={self.k}, pes={self.pes}, lanes={self.lanes})")

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

        # ---- writer: neuron + pack channel counts into words + double-buffered frame memory
        spikes, count_raw = unrolled_neuron(m, self.x.payload, self.k, self.s_bits, self.timesteps,
                                            shape_of(r.v), name="nrn")
        count = Signal(unsigned(cw))
        m.d.comb += count.eq(count_raw)
        inbuf = memory.Memory(shape=unsigned(L * cw), depth=2 * frame, init=[])
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
        m.d.comb += [
            self.x.ready.eq(~full.bit_select(wr_bank, 1)),
            wr_last_elem.eq((wr_word == frame - 1) & (wr_chan == in_c - 1)),
            wr.addr.eq(wr_bank * frame + wr_word),
            wr.data.eq(Cat(*[Mux(wr_lane == l, count, pack[l]) for l in range(L)])),
        ]
        accept = self.x.valid & self.x.ready
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

        # ---- stage 0: address generator over (oh, ow, g, ky, kx, jc), innermost last
        # large weight memories go to block RAM (Yosys otherwise may build shallow, wide ROMs from LUTs)
        attrs = {"ram_style": "block"} if lay.memory_bits >= BLOCK_RAM_MIN_BITS else {}
        wmem = memory.Memory(shape=unsigned(lay.word_bits), depth=lay.depth, init=pack_weights(self.weight, lay),
                             attrs=attrs)
        m.submodules.wmem = wmem
        wrd = wmem.read_port()
        oh, ow = Signal(range(HO)), Signal(range(WO))
        g, ky, kx, jc = Signal(range(G)), Signal(range(KH)), Signal(range(KW)), Signal(range(Jc))
        rd_bank = Signal()
        buf_count = Signal(range(P + 1))
        s1_valid, s1_first, s1_last, s1_lastgroup, s1_pad = Signal(), Signal(), Signal(), Signal(), Signal()
        hw_bits = max(H, W, HO * SH + KH).bit_length() + 2
        ih, iw = Signal(signed(hw_bits)), Signal(signed(hw_bits))
        pad = Signal()
        local = Signal(range(frame))
        word_last = Signal()
        frame_last = Signal()
        available = Signal()
        issue = Signal()
        m.d.comb += [
            ih.eq(oh * SH + ky - PH),
            iw.eq(ow * SW + kx - PW),
            pad.eq((ih < 0) | (ih >= H) | (iw < 0) | (iw >= W)),
            local.eq(Mux(pad, 0, (ih * W + iw) * Jc + jc)),
            word_last.eq((ky == KH - 1) & (kx == KW - 1) & (jc == Jc - 1)),
            frame_last.eq(word_last & (g == G - 1) & (ow == WO - 1) & (oh == HO - 1)),
            available.eq(pad | full.bit_select(rd_bank, 1) | ((wr_bank == rd_bank) & (local < wr_word))),
            # the last word of a group loads the holding register one clock later: it must be empty
            issue.eq(available & (~word_last | ((buf_count == 0) & ~(s1_valid & s1_last)))),
            rd.addr.eq(rd_bank * frame + local),
            wrd.addr.eq((g * (KH * KW) + ky * KW + kx) * Jc + jc),
        ]
        m.d.sync += [s1_valid.eq(issue), s1_first.eq((ky == 0) & (kx == 0) & (jc == 0)), s1_last.eq(word_last),
                     s1_lastgroup.eq(g == G - 1), s1_pad.eq(pad)]
        with m.If(issue):
            # odometer: jc → kx → ky → g → ow → oh
            carry = Const(1)
            for ctr, size in ((jc, Jc), (kx, KW), (ky, KH), (g, G), (ow, WO), (oh, HO)):
                wrap = Signal(name=f"{ctr.name}_wrap")
                m.d.comb += wrap.eq(carry & (ctr == size - 1))
                with m.If(carry):
                    m.d.sync += ctr.eq(Mux(ctr == size - 1, 0, ctr + 1))
                carry = wrap
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

        # ---- stage 1: PE array
        psum_shape = shape_of(self.psum_range)
        acc = [Signal(psum_shape, name=f"psum{p}") for p in range(P)]
        acc_next = [Signal(psum_shape, name=f"psum_next{p}") for p in range(P)]
        counts = [Mux(s1_pad, 0, rd.data[l * cw:(l + 1) * cw]) for l in range(L)]
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
        out_idx = Signal(range(out_c))
        last_n = out_c - (G - 1) * P
        pop = Signal()
        with m.If(s1_valid & s1_last):
            m.d.sync += [hold[p].eq(acc_next[p]) for p in range(P)]
            m.d.sync += buf_count.eq(Mux(s1_lastgroup, last_n, P))
        bias_rom = memory.Memory(shape=shape_of(Range(int(min(0, self.bias.min())), int(max(0, self.bias.max())))),
                                 depth=out_c, init=[int(b) for b in self.bias])
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
            mrom = memory.Memory(shape=shape_of(Range(min(0, min(mult)), max(0, max(mult)))), depth=out_c, init=mult)
            brom = memory.Memory(shape=shape_of(Range(min(0, min(rbias)), max(0, max(rbias)))), depth=out_c, init=rbias)
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
                         out_idx.eq(Mux(out_idx == out_c - 1, 0, out_idx + 1))]
            m.d.sync += [hold[p].eq(hold[p + 1]) for p in range(P - 1)]

        if self.debug_taps:
            m.d.comb += [
                self.tap_x.payload.eq(self.x.payload), self.tap_x.valid.eq(accept),
                self.tap_spk.payload.eq(Cat(*spikes)), self.tap_spk.valid.eq(accept),
                self.tap_acc.payload.eq(acc_val), self.tap_acc.valid.eq(pop),
                self.tap_out.payload.eq(y_val), self.tap_out.valid.eq(pop),
            ]
        return m
