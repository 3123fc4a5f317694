"""The window-parallel ("multi-tap") conv engine: several kernel taps per clock out of interleaved banks.

:class:`~.synapse.SynapticEngine` reads one frame word (``lanes`` channels of one pixel at one kernel tap)
per clock, so an output pixel costs kh·kw·(channel words) clocks per output group whatever the PEs.
:class:`MultiTapEngine` reads ``taps`` kernel taps per clock, a whole kh×kw window (``taps = kh·kw``) or
one window row (``taps = kw``), so a PE's lanes span ``taps × lanes`` (tap-major: lane ``t·lanes + l`` is
tap t = ty·kw + tx of the clock's window rows, channel l of the channel word) and a pixel costs
(kh / rows per clock)·(channel words) clocks per output group.

**Memory.** The input map is kept in ``rows × kw`` banks (``rows`` = kh for the whole window, 1 for a
row), interleaved by the pixel's padded coordinates: pixel (ih, iw) goes to bank
((ih + ph) mod rows, (iw + pw) mod kw), word ((ih + ph) div rows · BW + (iw + pw) div kw)·Jc + jc
(BW = ⌈(W + 2·pw) / kw⌉ bank columns, Jc channel words a pixel). Any window row of kw consecutive columns
(and any kh consecutive rows of a whole window), at any stride, touches each bank exactly once, so all its
taps are read in one clock, one address per bank. The padding's pixels have addresses too and are never
written, so padded taps read zero with neither a mux nor a zero word. Each bank is double-buffered by frame
(like the whole-frame :class:`~.synapse.SynapticEngine`: one frame fills while the other is read, the same
bank handshake), so the memory is O(frame): 2·⌈(H+2ph)/rows⌉·⌈(W+2pw)/kw⌉·Jc words per bank, about twice
the padded map in all. A line buffer of rows would be smaller; the frame is simpler and what the planner
counts (:meth:`MultiTapEngine.frame_memory_words`).

**Addresses.** The reader steps (oh, ow, output group g, window-row step ky, channel word jc), innermost
last. The window's corner in bank coordinates, (corner row div rows, corner column div kw) and the
remainders (mr, mc), are registers stepped by constants with a carry (never a divider or a multiplier per
clock); bank (r, c) reads ``base + [r < mr]·BW·Jc + [c < mc]·Jc`` (the window's row r lies one bank row
down when r is above the corner's remainder; with the frame half, one constant of eight by a case, then one
adder). Its output holds tap ((r − mr) mod rows, (c − mc) mod kw). The bank outputs are registered
(:data:`BANK_LATENCY`: a block RAM's unregistered output is slow, about 6 ns on ECP5, and the rotation's
muxes must not follow it in the same clock); then the remainders, delayed like the read, rotate them back to
tap order (a mux per tap, by rows then by columns) in front of the PE array's input register. The weight
memory's address is delayed the same clock, so the pipeline is the one-tap engine's,
:func:`~.synapse.pe_latency` of the ``taps × lanes`` lanes, plus :data:`BANK_LATENCY`.

**Group queue.** A group may be one word (a whole window of one channel word), so groups can finish one a
clock, faster than the drain's two-slot holding queue turns over (a slot is reserved from a group's last
word to the clock after its last pop, :func:`~.synapse.pe_latency` + :data:`BANK_LATENCY` + 3 clocks). A FIFO of
:func:`group_queue_depth` groups in front of the drain gives the engine as many more reservations, so the
drain pops every clock its outputs allow; it costs :data:`QUEUE_LATENCY` clocks of latency.

**Streaming.** A window is issued once its last pixel (bottom-right, clipped to the map) is written, or its
frame is complete (the writer's pixel row and column compared with the window's, registers both): every
word of the window waits for that pixel (the planner's model, :func:`bitspike.ops.conv2d.multitap_schedule`, does the same).

Composes with what the one-tap engine's neuron stage and drain give: stride, zero padding, output groups,
channel words, T > 1 timesteps and multi-bit spikes, vector streams in and out, fused boundaries (thresholds
out, counts in), ``fast_paths``. Not composed: grouped/depthwise convolution, zero-word skipping and a custom
address generator (refused by the constructor; the planner keeps zero skipping off on a multi-tap engine,
:meth:`bitspike.ops.conv2d.Conv2dOp.zero_skip_refused`).

Why frames rather than a ring of rows: the banks' addresses would wrap modulo a row count that is not a
multiple of ``rows`` in general, and the writer's overwrite limit would have to be kept per bank; with frames
the one-tap engine's bank handshake holds as it is, and the model (:func:`bitspike.ops.conv2d.multitap_schedule`) stays the
whole-frame one with one readiness per window.
"""

from __future__ import annotations

import numpy as np
from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.fifo import SyncFIFOBuffered

from .drain import HOLD_SLOTS, Drain
from .fifo import SkidBuffer
from .neuron import CountStage, NeuronStage, shape_of
from .pe import PEArray, group_layout, word_tag_layout
from .synapse import BLOCK_RAM_MIN_BITS, SynapticEngine, dsp_candidates, pe_latency
from .weight_mem import encode_weight

__all__ = ["MultiTapEngine", "MultiTapLayout", "multitap_refused", "pack_multitap_weights", "bank_geometry",
           "BANK_LATENCY", "QUEUE_LATENCY", "group_queue_depth", "WEIGHT_BLOCK_MIN_DEPTH", "weights_in_block_ram"]

#: a weight memory is marked for block RAM (``ram_style = "block"``) only from this depth on: a multi-tap word is
#: wide (``pes × taps × lanes`` weights) and its memory shallow (one word per output group, window step and channel
#: word; one word for the Fashion CNN's conv0), which as block RAM would take one 36-bit-wide block per 36 bits
#: of the word, nearly empty; shallower ones are left to Yosys (a ROM in logic, constants for one word)
WEIGHT_BLOCK_MIN_DEPTH = 32

#: clocks the bank outputs' register adds between the banks' read and the rotation to tap order
BANK_LATENCY = 1

#: clocks a finished group spends in the group queue in front of the drain when it is empty (the queue's
#: write, then its registered output)
QUEUE_LATENCY = 2


def group_queue_depth(pe_lanes: int) -> int:
    """Groups the queue in front of the drain holds: with the drain's ``HOLD_SLOTS`` enough reservations for a
    group every clock (a slot is reserved at a group's last word and freed the clock after its last pop:
    ``pe_latency + BANK_LATENCY + QUEUE_LATENCY + 2`` clocks at the earliest)."""
    return pe_latency(pe_lanes) + BANK_LATENCY + QUEUE_LATENCY


def multitap_refused(kernel, taps: int, groups: int = 1) -> str | None:
    """Why a conv of this ``kernel`` cannot read ``taps`` taps per clock (``None``: it can)."""
    kh, kw = kernel
    allowed = sorted({1, kw, kh * kw})
    if taps not in allowed:
        return f"taps per clock must be one of {allowed} (1, a window row of {kw}, the whole {kh}x{kw} window), not {taps}"
    if taps > 1 and groups != 1:
        return f"a multi-tap engine reads dense windows only (this conv has {groups} groups)"
    return None


def bank_geometry(in_hw, kernel, padding, taps: int, channel_words: int) -> dict:
    """The banks of a multi-tap engine: ``rows`` (window rows a clock), ``cols`` (kw), ``bank_rows``,
    ``bank_cols`` (pixels of the padded map per bank, each way), ``bank_words`` (words per frame per bank)."""
    (h, w), (kh, kw), (ph, pw) = in_hw, kernel, padding
    rows = kh if taps == kh * kw else 1
    br, bc = -(-(h + 2 * ph) // rows), -(-(w + 2 * pw) // kw)
    return {"rows": rows, "cols": kw, "bank_rows": br, "bank_cols": bc, "bank_words": br * bc * channel_words,
            "steps": kh // rows}


def weights_in_block_ram(lay: "MultiTapLayout") -> bool:
    """Whether the engine marks its weight memory for block RAM (:data:`WEIGHT_BLOCK_MIN_DEPTH`)."""
    return lay.memory_bits >= BLOCK_RAM_MIN_BITS and lay.depth >= WEIGHT_BLOCK_MIN_DEPTH


class MultiTapLayout:
    """The weight memory of a multi-tap engine: word ``(g·steps + ky)·Jc + jc`` holds, at bit offset
    ``((p·taps + t)·lanes + l)·w_bits``, the weight of output ``g·pes + p``, input channel ``jc·lanes + l`` and
    kernel tap (ky·rows + t div kw, t mod kw) (0 past the edges)."""

    def __init__(self, out_features: int, in_features: int, pes: int, lanes: int, w_bits: int, kernel, taps: int):
        kh, kw = kernel
        self.out_features, self.in_features, self.pes, self.lanes, self.w_bits = out_features, in_features, pes, lanes, w_bits
        self.kernel, self.taps = (kh, kw), taps
        self.rows = kh if taps == kh * kw else 1
        self.steps = kh // self.rows
        self.groups = -(-out_features // pes)
        self.channel_words = -(-in_features // lanes)
        self.words_per_group = self.steps * self.channel_words
        self.depth = self.groups * self.words_per_group
        self.word_bits = pes * taps * lanes * w_bits

    @property
    def memory_bits(self) -> int:
        return self.depth * self.word_bits


def pack_multitap_weights(weight: np.ndarray, lay: MultiTapLayout) -> list[int]:
    """The memory words (Python ints) of a ``[out, in, kh, kw]`` weight tensor in :class:`MultiTapLayout`."""
    weight = np.asarray(weight, dtype=np.int64)
    o_n, c_n, kh, kw = weight.shape
    wb, L, T = lay.w_bits, lay.lanes, lay.taps
    words = []
    for g in range(lay.groups):
        for ky in range(lay.steps):
            for j in range(lay.channel_words):
                word = 0
                for p in range(lay.pes):
                    o = g * lay.pes + p
                    if o >= o_n:
                        continue
                    for t in range(T):
                        y, x = ky * lay.rows + t // kw, t % kw
                        for l in range(L):
                            i = j * L + l
                            if i < c_n:
                                word |= encode_weight(int(weight[o, i, y, x]), wb) << (((p * T + t) * L + l) * wb)
                words.append(word)
    return words


def _rotate(m: Module, items: list, sel, name: str) -> list:
    """``out[i] = items[(sel + i) mod n]`` (``sel`` a register in 0 … n − 1), one case per value of ``sel``."""
    n = len(items)
    if n == 1:
        return list(items)
    out = [Signal.like(items[0], name=f"{name}{i}") for i in range(n)]
    with m.Switch(sel):
        for s in range(n):
            with m.Case(s):
                m.d.comb += [out[i].eq(items[(s + i) % n]) for i in range(n)]
    return out


class MultiTapEngine(SynapticEngine):
    """A conv engine reading ``taps`` kernel taps per clock (see the module docstring).

    Takes :class:`~.synapse.SynapticEngine`'s parameters (``lanes``: input channels per tap) and ``taps``:
    kw (a window row a clock) or kh·kw (the whole window). Dense convolutions only, without a custom
    address generator (so no zero-word skipping); always the double-buffered frame.
    """

    def __init__(self, *, weight, taps: int, **kwargs):
        weight = np.asarray(weight, dtype=np.int64)
        if weight.ndim != 4:
            raise ValueError(f"MultiTapEngine weight must be [out, in, kh, kw], got shape {list(weight.shape)}")
        kh, kw = weight.shape[2:]
        why = multitap_refused((kh, kw), taps, kwargs.get("groups", 1))
        if why is None and taps == 1:
            why = "a multi-tap engine reads more than one tap a clock (taps 1 is the plain SynapticEngine)"
        if why is None and kwargs.get("address_generator") is not None:
            why = "a multi-tap engine has its own bank addressing, not a custom address_generator (no zero skipping)"
        if why is not None:
            raise ValueError(f"MultiTapEngine: {why}")
        kwargs["line_buffer"] = False
        self.taps = taps
        super().__init__(weight=weight, **kwargs)
        out_c, group_c = weight.shape[:2]
        self.mt_layout = MultiTapLayout(out_c, group_c, self.pes, self.lanes, self.w_bits, (kh, kw), taps)
        self.banks = bank_geometry(self.in_hw, (kh, kw), self.padding, taps, self.mt_layout.channel_words)
        self.queue_depth = group_queue_depth(self.pe_lanes)

    @property
    def pe_lanes(self) -> int:
        """Products a PE sums per clock: ``taps × lanes``."""
        return self.taps * self.lanes

    @property
    def weight_memory_bits(self) -> int:
        return self.mt_layout.memory_bits

    @property
    def frame_memory_words(self) -> int:
        """Words of the input memory, all banks together (each ``2 × bank_words``)."""
        b = self.banks
        return b["rows"] * b["cols"] * 2 * b["bank_words"]

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", taps={getattr(self, 'taps', '?')})"

    def dsp_plan(self) -> tuple[int, int | None]:
        multiplied = self.requant is not None and self.fused is None
        cands = dsp_candidates(w_bits=self.w_bits, count_width=self.count_range.width, pes=self.pes,
                               lanes=self.pe_lanes, acc_range=self.ranges.acc if multiplied else None,
                               multipliers=self.requant.multiplier if multiplied else None,
                               drain_lanes=self.vec_out)
        chosen = cands if self.dsp_blocks is None else cands[:self.dsp_blocks]
        pe = sum(1 for _, kind in chosen if kind == "pe")
        rq = sum(1 for _, kind in chosen if kind == "requant") if multiplied else None
        return pe, rq

    def elaborate(self, platform):
        m = Module()
        P, L, T = self.pes, self.lanes, self.taps
        lay = self.mt_layout
        b = self.banks
        R, K = b["rows"], b["cols"]  # bank rows (window rows a clock) and bank columns (kw)
        BC, FB, S = b["bank_cols"], b["bank_words"], b["steps"]
        geo = self.geometry()
        (H, W), (kh, kw) = self.in_hw, self.weight.shape[2:]
        (sh, sw), (ph, pw) = self.stride, self.padding
        ho, wo = self.out_hw
        Jc, gn = lay.channel_words, lay.groups
        group_c = self.weight.shape[1]
        cw = self.count_range.width
        r = self.ranges
        pe_dsp, rq_dsp = self.dsp_plan()
        V = self.vec_in

        # ---- neuron stage (as the one-tap engine)
        if self.counts_in:
            m.submodules.neuron = nrn = CountStage(unsigned(cw), vec=V)
        else:
            m.submodules.neuron = nrn = NeuronStage(r.x, self.s_bits, self.timesteps, self.k, membrane=r.v,
                                                    count_shape=unsigned(cw), vec=V)
        if self.fast_paths:
            # the producer's ready ends at a skid buffer's flag, and the long wires into this engine start at the
            # skid's registers (the Fashion CNN's pool1 → conv2 handshake: a pool's output register enable, routed
            # across the die, was its worst path); no latency: the skid passes a beat through when empty
            m.submodules.in_skid = in_skid = SkidBuffer(self.x.payload.shape())
            wiring.connect(m, wiring.flipped(self.x), in_skid.x)
            wiring.connect(m, in_skid.y, nrn.i)
        else:
            wiring.connect(m, wiring.flipped(self.x), nrn.i)
        counts_in = nrn.o
        if self.fast_paths:
            # as the one-tap engine: the writer's ready (its bank's full flag) ends at a skid buffer's flag instead
            # of running on through the neuron's ready into the producer (no latency: it passes through when empty)
            m.submodules.skid = skid = SkidBuffer(nrn.o.payload.shape())
            wiring.connect(m, nrn.o, skid.x)
            counts_in = skid.y

        # ---- banks: R × K memories, each two frames of FB words
        word_shape = data.ArrayLayout(unsigned(cw), L)
        banks = [[memory.Memory(shape=word_shape, depth=2 * FB, init=[]) for _ in range(K)] for _ in range(R)]
        wports, rports = [], []
        for y in range(R):
            for x in range(K):
                m.submodules[f"bank{y}_{x}"] = banks[y][x]
                wports.append(banks[y][x].write_port())
                rports.append(banks[y][x].read_port())

        # ---- writer: pack a pixel's channels into words (a beat's V counts into V consecutive lanes), write
        # each word to its pixel's bank; the pixel counters step the bank and its address
        full = Signal(2)
        wr_bank = Signal()
        wr_chan = Signal(range(group_c))
        wr_lane = Signal(range(L // V))
        wr_jc = Signal(range(Jc))
        wr_ih, wr_iw = Signal(range(H + 1)), Signal(range(W))  # the pixel being written (unpadded)
        wr_mr, wr_mc = Signal(range(R), init=ph % R), Signal(range(K), init=pw % K)
        row0, col0 = (ph // R) * BC * Jc, (pw // K) * Jc  # word of the map's first pixel, its row's first
        wr_row = Signal(range(FB + 1), init=row0)  # word 0 of the current pixel row's first pixel
        wr_pix = Signal(range(FB + 1), init=row0 + col0)  # word 0 of the current pixel
        wr_addr = Signal(range(FB + 1), init=row0 + col0)
        pack = [Signal(unsigned(cw), name=f"pack{l}") for l in range(L)]
        count = counts_in.payload
        elem = (lambda l: count) if V == 1 else (lambda l: count[l % V])
        w_ready = Signal()
        write_beat = (wr_lane == L // V - 1) | (wr_chan == group_c - V)
        pix_done = write_beat & (wr_jc == Jc - 1)
        row_done = pix_done & (wr_iw == W - 1)
        last_elem = Signal()
        m.d.comb += [last_elem.eq(row_done & (wr_ih == H - 1)), w_ready.eq(~full.bit_select(wr_bank, 1)),
                     counts_in.ready.eq(w_ready)]
        accept = counts_in.valid & w_ready
        i = 0
        for y in range(R):
            for x in range(K):
                wp = wports[i]
                i += 1
                m.d.comb += [wp.addr.eq(Mux(wr_bank, wr_addr + FB, wr_addr)),
                             wp.en.eq(accept & write_beat & (wr_mr == y) & (wr_mc == x))]
                m.d.comb += [wp.data[l].eq(Mux(wr_lane == l // V, elem(l), pack[l])) for l in range(L)]
        with m.If(accept):
            m.d.sync += wr_chan.eq(Mux(wr_chan == group_c - V, 0, wr_chan + V))
            with m.If(write_beat):
                m.d.sync += [p.eq(0) for p in pack]
                m.d.sync += [wr_lane.eq(0), wr_jc.eq(Mux(wr_jc == Jc - 1, 0, wr_jc + 1)), wr_addr.eq(wr_addr + 1)]
                with m.If(last_elem):
                    m.d.sync += [wr_bank.eq(~wr_bank), wr_ih.eq(0), wr_iw.eq(0), wr_mr.eq(ph % R), wr_mc.eq(pw % K),
                                 wr_row.eq(row0), wr_pix.eq(row0 + col0), wr_addr.eq(row0 + col0)]
                with m.Elif(row_done):  # next pixel row: one bank row down when the row remainder wraps
                    nxt = Mux(wr_mr == R - 1, wr_row + BC * Jc, wr_row)
                    m.d.sync += [wr_ih.eq(wr_ih + 1), wr_iw.eq(0), wr_mr.eq(Mux(wr_mr == R - 1, 0, wr_mr + 1)),
                                 wr_mc.eq(pw % K), wr_row.eq(nxt), wr_pix.eq(nxt + col0), wr_addr.eq(nxt + col0)]
                with m.Elif(pix_done):  # next pixel: one bank column on when the column remainder wraps
                    nxt = Mux(wr_mc == K - 1, wr_pix + Jc, wr_pix)
                    m.d.sync += [wr_iw.eq(wr_iw + 1), wr_mc.eq(Mux(wr_mc == K - 1, 0, wr_mc + 1)),
                                 wr_pix.eq(nxt), wr_addr.eq(nxt)]
            with m.Else():
                m.d.sync += wr_lane.eq(wr_lane + 1)
                for l in range(L):
                    with m.If(wr_lane == l // V):
                        m.d.sync += pack[l].eq(elem(l))

        # ---- reader: counters over (oh, ow, g, ky, jc), innermost last
        oh, ow = Signal(range(ho)), Signal(range(wo))
        g, ky, jc = Signal(range(gn)), Signal(range(S)), Signal(range(Jc))
        wraps = {n: Signal(name=f"{n}_wrap") for n in ("jc", "ky", "g", "ow", "oh")}
        m.d.comb += [wraps["jc"].eq(jc == Jc - 1), wraps["ky"].eq(ky == S - 1), wraps["g"].eq(g == gn - 1),
                     wraps["ow"].eq(ow == wo - 1), wraps["oh"].eq(oh == ho - 1)]
        word_last, group_wrap, frame_last, first = Signal(), Signal(), Signal(), Signal()
        m.d.comb += [word_last.eq(wraps["jc"] & wraps["ky"]), group_wrap.eq(word_last & wraps["g"]),
                     frame_last.eq(group_wrap & wraps["ow"] & wraps["oh"]), first.eq((ky == 0) & (jc == 0))]
        # the corner in bank coordinates: remainders mr, mc and the words of the line, pixel, row and word
        mr, mc = Signal(range(R)), Signal(range(K))
        base = [Signal(range(FB + 1), name=n) for n in ("rd_line", "rd_pix", "rd_row", "rd_word")]
        rd_line, rd_pix, rd_row, rd_word = base
        waddr = Signal(range(lay.depth))
        top, left = Signal(range(ho * sh + 1)), Signal(range(wo * sw + 1))  # the corner, padded coordinates
        # the window's last pixel (unpadded, clipped to the map): readable once the writer is past it. Registers,
        # set with the corner from the corner's next value, so the readiness test is two compares of registers
        need = lambda v, k, p, n: Mux(v + (k - 1 - p) >= n - 1, n - 1, v + (k - 1 - p))  # noqa: E731
        need_r = Signal(range(H), init=min(kh - 1 - ph, H - 1))
        need_c = Signal(range(W), init=min(kw - 1 - pw, W - 1))
        issue = Signal()
        rd_bank = Signal()
        cap = HOLD_SLOTS + self.queue_depth  # groups reserved: in the PE pipeline, the queue or the drain
        slots = Signal(range(cap + 1))

        def advance(rem, d, n, unit):
            """Step a corner remainder ``rem`` (mod n) by the constant d: (new remainder, words the base moves:
            ``unit`` per bank row or column the quotient moves)."""
            q, d = divmod(d, n)
            s = rem + d
            carry = s >= n
            return Mux(carry, s - n, s), Mux(carry, (q + 1) * unit, q * unit)

        with m.If(issue):
            m.d.sync += waddr.eq(Mux(group_wrap, 0, waddr + 1))
            m.d.sync += jc.eq(Mux(wraps["jc"], 0, jc + 1))
            with m.If(wraps["jc"]):
                m.d.sync += ky.eq(Mux(wraps["ky"], 0, ky + 1))
                with m.If(wraps["ky"]):
                    m.d.sync += g.eq(Mux(wraps["g"], 0, g + 1))
                    with m.If(wraps["g"]):
                        m.d.sync += ow.eq(Mux(wraps["ow"], 0, ow + 1))
                        with m.If(wraps["ow"]):
                            m.d.sync += oh.eq(Mux(wraps["oh"], 0, oh + 1))
            with m.If(~wraps["jc"]):  # next channel word
                m.d.sync += rd_word.eq(rd_word + 1)
            with m.Elif(~wraps["ky"]):  # next window row (rows = 1: one bank row down)
                m.d.sync += [rd_row.eq(rd_row + BC * Jc), rd_word.eq(rd_row + BC * Jc)]
            with m.Elif(~wraps["g"]):  # next output group: the same window
                m.d.sync += [rd_row.eq(rd_pix), rd_word.eq(rd_pix)]
            with m.Elif(~wraps["ow"]):  # next output column
                rem, move = advance(mc, sw, K, Jc)
                nxt = rd_pix + move
                m.d.sync += [mc.eq(rem), left.eq(left + sw), need_c.eq(need(left + sw, kw, pw, W))]
                m.d.sync += [s.eq(nxt) for s in (rd_pix, rd_row, rd_word)]
            with m.Elif(~wraps["oh"]):  # next output row
                rem, move = advance(mr, sh, R, BC * Jc)
                nxt = rd_line + move
                m.d.sync += [mr.eq(rem), mc.eq(0), top.eq(top + sh), left.eq(0), need_r.eq(need(top + sh, kh, ph, H)),
                             need_c.eq(need_c.init)]
                m.d.sync += [s.eq(nxt) for s in base]
            with m.Else():  # next frame
                m.d.sync += [mr.eq(0), mc.eq(0), top.eq(0), left.eq(0), need_r.eq(need_r.init), need_c.eq(need_c.init)]
                m.d.sync += [s.eq(0) for s in base]
        i = 0
        for y in range(R):
            for x in range(K):
                rp = rports[i]
                i += 1
                # one adder: the word plus a constant chosen by the frame half, a bank row down, a bank column on
                # (no remainder lies above the last bank row or column)
                down = (mr > y) if y < R - 1 else Const(0)
                right = (mc > x) if x < K - 1 else Const(0)
                ofs = Signal(range(FB + BC * Jc + Jc + 1), name=f"bank{y}_{x}_ofs")
                with m.Switch(Cat(right, down, rd_bank)):
                    for case in range(8):
                        r_, d_, b_ = case & 1, (case >> 1) & 1, case >> 2
                        with m.Case(case):
                            m.d.comb += ofs.eq(b_ * FB + d_ * BC * Jc + r_ * Jc)
                m.d.comb += rp.addr.eq(rd_word + ofs)
        # the bank outputs, registered (BANK_LATENCY); the remainders of the word read, delayed like the read and
        # the register, rotate them to tap order
        mr_d, mc_d, mr_q, mc_q = Signal.like(mr), Signal.like(mc), Signal.like(mr), Signal.like(mc)
        m.d.sync += [mr_d.eq(mr), mc_d.eq(mc), mr_q.eq(mr_d), mc_q.eq(mc_d)]
        outs = [[Signal(L * cw, name=f"bank{y}_{x}_q") for x in range(K)] for y in range(R)]
        m.d.sync += [outs[y][x].eq(rports[y * K + x].data.as_value()) for y in range(R) for x in range(K)]
        wl = L * cw
        rows_in = [Signal(wl * K, name=f"bank_row{y}") for y in range(R)]  # a bank row's K outputs side by side
        m.d.comb += [rows_in[y].eq(Cat(*outs[y])) for y in range(R)]
        by_row = _rotate(m, rows_in, mr_q, "tap_row")
        taps_out = []
        for y in range(R):
            cols = [Signal(wl, name=f"tap_row{y}_bank{x}") for x in range(K)]
            m.d.comb += [cols[x].eq(by_row[y][x * wl:(x + 1) * wl]) for x in range(K)]
            taps_out += _rotate(m, cols, mc_q, f"tap{y}_")
        counts = Signal(wl * T)
        m.d.comb += counts.eq(Cat(*taps_out))

        # readiness: the frame is complete, or being written into this bank past the window's last pixel
        written = (wr_ih > need_r) | ((wr_ih == need_r) & (wr_iw > need_c))
        available = full.bit_select(rd_bank, 1) | ((wr_bank == rd_bank) & written)
        m.d.comb += issue.eq(available & (~word_last | (slots < cap)))
        with m.If(issue & frame_last):
            m.d.sync += rd_bank.eq(~rd_bank)
        self._bank_handshake(m, geo, full, accept & write_beat & last_elem, wr_bank, issue & frame_last, rd_bank)

        # ---- weights
        words = pack_multitap_weights(self.weight, lay)
        const_word = words[0] if lay.depth == 1 else None  # one word (the whole kernel): constants, not a memory
        if const_word is None:
            attrs = {"ram_style": "block"} if weights_in_block_ram(lay) else {}
            wmem = memory.Memory(shape=unsigned(lay.word_bits), depth=lay.depth, init=words, attrs=attrs)
            m.submodules.wmem = wmem
            wrd = wmem.read_port()
            waddr_d = Signal.like(waddr)  # the word's address a clock late, so its weights meet the bank register
            m.d.sync += waddr_d.eq(waddr)
            m.d.comb += wrd.addr.eq(waddr_d)

        # ---- PE array over taps × lanes, the drain: as the one-tap engine
        m.submodules.pe_array = pes = PEArray(pes=P, lanes=T * L, w_bits=self.w_bits, count_bits=cw,
                                              psum_shape=shape_of(self.psum_range), dsp_products=pe_dsp,
                                              clear_on_last=self.fast_paths, const_weights=const_word)
        tag, tag_q = Signal(word_tag_layout()), Signal(word_tag_layout())  # the word's tag, delayed as its data
        m.d.sync += [tag.valid.eq(issue), tag.first.eq(first), tag.last.eq(word_last), tag.last_group.eq(wraps["g"]),
                     tag_q.eq(tag)]
        m.d.comb += [pes.word.counts.eq(counts), pes.tag.eq(tag_q)]
        if const_word is None:
            m.d.comb += pes.word.weights.eq(wrd.data)
        m.submodules.drain = drain = Drain(
            pes=P, bias=self.bias, psum_shape=shape_of(self.psum_range), acc_shape=shape_of(r.acc),
            out_shape=self.out_shape, requant=self.requant,
            product_shape=shape_of(r.product) if self.requant is not None else None,
            dsp_pieces=rq_dsp, fused=self.fused, vec=self.vec_out,
            **({"registered_flags": True} if self.fast_paths else {}))
        # the group queue: the drain is offered the head while it holds fewer than two groups (or one leaves)
        gl = group_layout(P, shape_of(self.psum_range))
        m.submodules.group_queue = gq = SyncFIFOBuffered(width=gl.size, depth=self.queue_depth)
        held = Signal(range(HOLD_SLOTS + 1))
        room = Signal()
        m.d.comb += [gq.w_data.eq(pes.o.payload.as_value()), gq.w_en.eq(pes.o.valid),
                     room.eq((held < HOLD_SLOTS) | drain.freed),
                     drain.i.valid.eq(gq.r_rdy & room), drain.i.payload.eq(gq.r_data), gq.r_en.eq(room)]
        m.d.sync += held.eq(held + (gq.r_rdy & room) - drain.freed)
        wiring.connect(m, drain.y, wiring.flipped(self.y))
        m.d.sync += slots.eq(slots + (issue & word_last) - drain.freed)

        self._wire_debug_taps(m, nrn, drain)
        return m

