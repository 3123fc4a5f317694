"""The synaptic engine: neuron → PE array (pes × lanes) → requantizer, streams in and out.

One engine serves both synaptic ops: a linear layer is a convolution of a
1×1 map with ``in`` channels and a 1×1 kernel (:mod:`.linear`, :mod:`.conv`).

Dataflow (one inference; feature maps stream HWC, channel fastest). The
engine is pipelined so that no clock holds a memory read, a multiply and an
adder together:

Four named sub-blocks, each with its own reference model and block test,
and the frame buffer that joins them:

1. **Neuron stage** (:class:`.neuron.NeuronStage`). Each input current
   arrives on ``x``. An unrolled neuron turns it into its T spikes and their
   count Σ_t s_t (``vec_in`` currents per beat on a vector stream, one
   neuron each); the count is registered, then packed ``lanes`` channels to
   a word into a double-buffered frame memory (one bank fills while the
   other is read), so the next inference streams in while this one computes.
2. **Window/address generator** (:mod:`.window`, pluggable: the
   ``address_generator`` argument). For every output pixel, output group g
   (``pes`` channels) and window word (kernel tap × channel word) one word
   is issued; its frame and weight addresses are stepped by counters (no
   products of indices). Taps in the zero padding read a word that is never
   written (0).
3. **PE array** (:class:`.pe.PEArray`), pipelined. The memory outputs are registered (the block
   RAM's output register), then the products in two registered stages
   (:func:`.pe.staged_product`: sign and ternary weights as muxes, narrow
   products as shift-add logic, wide ones as DSP multiplies, as many as
   ``dsp_blocks`` allows, the other wide ones as two half products summed
   in the second stage), then a balanced adder tree
   over the lanes with a register per level (:mod:`.adder_tree`), then the
   accumulator: :func:`pe_latency` clocks from issue to accumulate.
4. **Drain** (:class:`.drain.Drain`). A finished group goes to a two-slot holding queue (the PE
   array never waits for a drain unless two groups are waiting); outputs
   leave ``vec_out`` per beat (drain lanes side by side; one on a scalar
   stream) through the bias add and the staged requantizer
   (:func:`.requant.requant_pipeline`); per-channel constants are prefetched from
   ROMs (:func:`.drain.channel_rom`). The drain pipeline stalls as one while a registered
   skid slot behind ``y`` is full, so ``y.ready`` drives only ``y`` and the
   slot, never the pipeline's enables.

A convolution reads its windows out of a **line buffer** (:mod:`.linebuf`):
a circular buffer of a few input rows of frame words, which the writer fills
as far as the pending windows allow (it holds ``x.ready`` low on a word that
would overwrite one still needed), so a window starts as soon as its last
input arrived and the memory is O(K·W·C). A linear layer (and a conv built
with ``line_buffer=False``) keeps the double-buffered whole frame (H·W·C
counts per bank).

Every width comes from :mod:`bitspike.analysis` (``LayerRanges``); the
partial-sum register is sized from the actual weights: for output o the
partial sums lie in [Σ neg(W[o])·c_max, Σ pos(W[o])·c_max].
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from amaranth import Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitspike.ranges import LayerRanges, Range
from bitspike.ops.base import Requant
from .adder_tree import tree_depth
from .fifo import SkidBuffer
from .drain import HOLD_SLOTS, Drain, const_range, drain_latency
from .neuron import CountStage, NeuronStage, check_neuron_params, shape_of, vector_shape
from .pe import PRODUCT_STAGES, PEArray, is_narrow, lut_cost, word_tag_layout
from .requant import piece_costs
from .taps import TapSignature
from .weight_mem import WeightLayout, pack_weights
from .linebuf import LineBufferAddressGenerator, line_buffer_size
from .window import AddressGenerator, WindowGeometry, default_address_generator

__all__ = ["SynapticEngine", "TapSignature", "partial_sum_range", "BLOCK_RAM_MIN_BITS", "pe_latency",
           "weight_memory_style", "weight_rom_luts", "WEIGHT_ROM_MAX_DEPTH",
           "drain_latency", "dsp_candidates", "HOLD_SLOTS", "INPUT_LATENCY"]

#: weight memories of at least this many bits are marked ``ram_style = "block"`` (unless
#: :func:`weight_memory_style` builds them from LUTs)
BLOCK_RAM_MIN_BITS = 1024
#: the deepest weight memory that may be built as a LUT ROM (four LUT4s and the slice's wide
#: multiplexers per bit on ECP5: no multiplexer tree through the routing)
WEIGHT_ROM_MAX_DEPTH = 64
#: Yosys ``memory_libmap``'s cost of one block RAM (ECP5 DP16KD, Gowin BSRAM), against one LUT4 of a ROM
_BRAM_COST = 128


def weight_rom_luts(depth: int, width: int) -> int:
    """LUT4s of a ``depth × width`` constant table built from logic: one LUT4 per 16 words of each bit."""
    return width * -(-depth // 16)


def weight_memory_style(depth: int, width: int, rom: bool = False) -> str:
    """Where a ``depth × width`` weight memory goes: ``"block"`` (marked ``ram_style = "block"``), ``"logic"``
    (marked ``ram_style = "logic"``: a LUT ROM) or ``"rom"`` (small, unmarked: Yosys builds it from logic).

    From :data:`BLOCK_RAM_MIN_BITS` bits on a weight memory is block RAM, unless ``rom`` (the
    engine's ``weight_rom``: the device filler's plans) and it is shallow and wide, the shape a wide
    fold gives (16 PEs × 16 lanes of 2-bit weights: 512-bit words, 9 deep for a 3 × 3 conv of 16
    channels, which would take 15 DP16KD holding 2,304 bits between them): at most
    :data:`WEIGHT_ROM_MAX_DEPTH` words deep, and fewer LUT4s (:func:`weight_rom_luts`) than Yosys
    ``memory_libmap`` costs its block RAMs (128 each, the 18 Kb shapes of
    :data:`bitspike.gen.folding.BRAM_SHAPES`), it is a LUT ROM.
    """
    if depth * width < BLOCK_RAM_MIN_BITS:
        return "rom"
    blocks = min(-(-depth // d) * -(-width // w) for d, w in DP16KD_SHAPES)
    if rom and depth <= WEIGHT_ROM_MAX_DEPTH and weight_rom_luts(depth, width) < _BRAM_COST * blocks:
        return "logic"
    return "block"


#: the depth × width shapes of an 18 Kb block RAM (ECP5 DP16KD, Gowin's alike): what a weight memory is
#: cut into (:data:`bitspike.gen.folding.BRAM_SHAPES` takes them from here: templates import no planner)
DP16KD_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))

#: clocks from an input beat's acceptance to the first clock its frame word can be issued
#: (neuron register, then the write)
INPUT_LATENCY = 2


def pe_latency(lanes: int) -> int:
    """Clocks from a word's issue to the clock in which its lane sum enters the accumulator.

    Issue → memory output (1) → registered memory output (2) → ``PRODUCT_STAGES`` product
    registers (:func:`~.pe.staged_product`: 3, 4) → ``tree_depth(lanes)`` registered tree
    levels. A group's last word loads the holding queue at the end of that clock.
    """
    return 2 + PRODUCT_STAGES + tree_depth(lanes)


def dsp_candidates(*, w_bits: int, count_width: int, pes: int, lanes: int, acc_range: Range | None,
                   multipliers=None, drain_lanes: int = 1) -> list[tuple[int, str]]:
    """The engine's products that may use a DSP block, best first: ``[(LUT cost saved, kind)]``.

    ``kind`` is ``"requant"`` (a piece of the requantizer's multiply, one set per drain lane) or
    ``"pe"``. Narrow PE products (:func:`~.pe.is_narrow`) are never candidates. The engine gives its
    first ``dsp_blocks`` candidates a DSP block, in this order (ties: requantizer first).
    """
    out = []
    if acc_range is not None and multipliers is not None:
        out += [(c, "requant") for c in piece_costs(shape_of(acc_range), shape_of(const_range(multipliers)))
                for _ in range(drain_lanes)]
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
        ``[out, in / groups, kh, kw]`` integer weights (input channels in stream order; torch layout).
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
    groups
        Grouped convolution: output channel o reads only the input channels of its group
        ``o // (out / groups)`` (depthwise: ``groups`` = in channels). ``out / groups`` must be a
        multiple of ``pes`` (a PE group never spans two convolution groups) and ``lanes`` at most
        ``in / groups``. 1 (the default): dense.
    address_generator
        Builds the window/address generator from the engine's :class:`~.window.WindowGeometry`
        (default :func:`~.window.default_address_generator`: linear or sliding window).
        A generator with writer ports (``wr_en`` …) is shown every frame word written; one with
        ``whole_frame`` is issued from only once its bank is complete, and its ``hold`` stops issue
        (:mod:`.zeroskip`: the walk of the nonzero words).
    fused, fused_width
        Fused requantize-and-fire at the output (:class:`~.threshold.FusedThresholds` of this
        layer's requantizer and the next layer's neuron): the drain compares with thresholds instead
        of requantizing, and ``y`` carries the next layer's spike counts, ``fused_width`` bits
        (unsigned; the next engine's count width).
    counts_in
        The input stream carries spike counts (the previous engine is fused): the neuron is left out
        (:class:`~.neuron.CountStage`) and ``x`` is the count width wide.
    vec_in, vec_out
        Elements per beat of ``x`` and of ``y`` (vector streams; 1: one value per beat). ``vec_in``
        neurons take a beat and write its counts into consecutive lanes of one frame word, so it must
        divide ``lanes`` and the input channels of a group; ``vec_out`` drain lanes
        (:class:`~.drain.Drain`) emit consecutive channels, so it must divide ``pes`` and the outputs.
    fast_paths
        Shorter register-to-register paths at the same cycles and sums, for a high clock: the PE array
        clears its accumulators after a group's last word instead of a mux at its first
        (:class:`~.pe.PEArray`'s ``clear_on_last``), the drain keeps its queue's state in registered
        flags (:class:`~.drain.Drain`'s ``registered_flags``), and the neuron's counts reach the writer
        through a :class:`~.fifo.SkidBuffer` (the writer's ready, the line buffer's limit compare, ends at
        its flag instead of running on through the neuron's ready into the producer, a pool's counters
        say). Off by default (the Verilog is then as without it).
    weight_rom
        A shallow, wide weight memory may be a LUT ROM instead of block RAM (:func:`weight_memory_style`).
        Off by default (the Verilog is then as without it); the device filler's plans turn it on.
    line_buffer
        A sliding window reads a line buffer (:mod:`.linebuf`, the default) instead of a double-buffered
        frame; ignored for a pointwise geometry (a linear layer), which always keeps the frame. With a
        custom ``address_generator`` the generator must have the ports of
        :class:`~.linebuf.LineBufferAddressGenerator`.
    """

    def __init__(self, *, weight, bias, in_hw=(1, 1), stride=(1, 1), padding=(0, 0), w_bits: int, s_bits: int,
                 timesteps: int, k: int, requant: Requant | None, ranges: LayerRanges, pes: int = 1, lanes: int = 1,
                 debug_taps: bool = False, dsp_blocks: int | None = None,
                 groups: int = 1, address_generator: Callable[[WindowGeometry], AddressGenerator] | None = None,
                 fused=None, fused_width: int = 0, counts_in: bool = False, vec_in: int = 1, vec_out: int = 1,
                 line_buffer: bool = True, fast_paths: bool = False, weight_rom: bool = False):
        check_neuron_params(s_bits, timesteps, k)
        if fused is not None and requant is None:
            raise ValueError("engine fused thresholds replace a requantizer: the output layer has none")
        if fused is not None and (isinstance(fused_width, bool) or not isinstance(fused_width, int) or fused_width < 1):
            raise ValueError(f"engine fused_width must be a positive integer with fused thresholds, not {fused_width!r}")
        self.fused, self.fused_width, self.counts_in = fused, fused_width, bool(counts_in)
        weight = np.asarray(weight, dtype=np.int64)
        if weight.ndim != 4:
            raise ValueError(f"SynapticEngine weight must be [out, in, kh, kw], got shape {list(weight.shape)}")
        out_c, group_c, kh, kw = weight.shape
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or out_c % groups:
            raise ValueError(f"engine groups must be a positive integer that divides the {out_c} output channels, "
                             f"not {groups!r}")
        for name, value, hi in (("pes", pes, out_c), ("lanes", lanes, group_c)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
                raise ValueError(f"engine {name} must be an integer in 1 … {hi}, not {value!r}")
        if groups > 1 and (out_c // groups) % pes:
            raise ValueError(f"engine pes {pes} must divide the {out_c // groups} output channels of a group")
        for name, value, within in (("vec_in", vec_in, (("lanes", lanes), ("input channels of a group", group_c))),
                                    ("vec_out", vec_out, (("pes", pes), ("output channels", out_c)))):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1 or any(n % value for _, n in within):
                raise ValueError(f"engine {name} must be a positive integer dividing "
                                 + " and ".join(f"{what} ({n})" for what, n in within) + f", not {value!r}")
        self.vec_in, self.vec_out = vec_in, vec_out
        self.fast_paths = bool(fast_paths)
        self.weight_rom = bool(weight_rom)
        self.groups = groups
        self.in_channels = group_c * groups
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
        # grouped: every word holds input channels of one group (the weights' second axis)
        self.layout = WeightLayout(out_c, group_c, pes, lanes, w_bits, taps=kh * kw)
        geo = self.geometry()
        # (a padding as wide as the kernel, which no manifest has, keeps the frame too)
        self.line_buffer = (bool(line_buffer) and not geo.is_pointwise
                            and all(p < k for p, k in zip(geo.padding, geo.kernel)))
        self.address_generator = address_generator or (LineBufferAddressGenerator if self.line_buffer
                                                       else default_address_generator)
        self.count_range = ranges.count
        self.psum_range = partial_sum_range(weight, ranges.count.hi)
        # the partial sum plus the bias must stay inside the analysed accumulator range
        w2 = weight.reshape(out_c, -1)
        lo_c = np.minimum(0, np.where(w2 < 0, w2, 0).sum(axis=1) * ranges.count.hi) + self.bias
        hi_c = np.maximum(0, np.where(w2 > 0, w2, 0).sum(axis=1) * ranges.count.hi) + self.bias
        assert ranges.acc.contains(int(lo_c.min()), int(hi_c.max())), "analysed accumulator range too narrow"
        self.x_shape = unsigned(ranges.count.width) if self.counts_in else shape_of(ranges.x)
        self.out_shape = unsigned(fused_width) if fused is not None else shape_of(ranges.out)
        members = {
            "x": In(stream.Signature(vector_shape(self.x_shape, vec_in))),
            "y": Out(stream.Signature(vector_shape(self.out_shape, vec_out))),
        }
        if debug_taps:
            # fused boundaries: the producer's y carries the next layer's counts (tap "cnt"); the
            # consumer has no neuron, so neither currents nor spikes to show. A vector stream's taps
            # show a beat's elements together (TapSignature lanes)
            if not self.counts_in:
                members["tap_x"] = Out(TapSignature(ranges.x.width, ranges.x.signed, lanes=vec_in))
                members["tap_spk"] = Out(TapSignature(s_bits * timesteps, lanes=vec_in))
            members["tap_acc"] = Out(TapSignature(ranges.acc.width, ranges.acc.signed, lanes=vec_out))
            if fused is None:
                members["tap_out"] = Out(TapSignature(ranges.out.width, ranges.out.signed, lanes=vec_out))
            else:
                members["tap_cnt"] = Out(TapSignature(fused_width, lanes=vec_out))
        super().__init__(members)

    @property
    def weight_memory_bits(self) -> int:
        return self.layout.memory_bits

    @property
    def frame_memory_words(self) -> int:
        """Words of the input memory: the line buffer's ``N``, or the two frame banks (plus the zero word
        of a padded window either way)."""
        geo = self.geometry()
        body = line_buffer_size(geo).words if self.line_buffer else 2 * geo.frame_words
        return body + geo.has_pad

    def __repr__(self) -> str:
        try:
            o, c, kh, kw = self.weight.shape
            return (f"{type(self).__name__}(out={o}, in={c}, kernel=({kh}, {kw}), in_hw={self.in_hw}, "
                    f"stride={self.stride}, padding={self.padding}, w_bits={self.w_bits}, s_bits={self.s_bits}, "
                    f"timesteps={self.timesteps}, k={self.k}, pes={self.pes}, lanes={self.lanes}, "
                    f"dsp_blocks={self.dsp_blocks}, groups={self.groups}, fused={self.fused is not None}, "
                    f"counts_in={self.counts_in}, vec_in={self.vec_in}, vec_out={self.vec_out})")
        except AttributeError:  # a constructor that refused its parameters leaves a half-built engine
            return f"{type(self).__name__}(refused)"

    def dsp_plan(self) -> tuple[int, int | None]:
        """``(PE products with a DSP block, requantizer pieces with one (None: no requantizer))``."""
        multiplied = self.requant is not None and self.fused is None  # fused thresholds have no multiply
        cands = dsp_candidates(w_bits=self.w_bits, count_width=self.count_range.width, pes=self.pes,
                               lanes=self.lanes, acc_range=self.ranges.acc if multiplied else None,
                               multipliers=self.requant.multiplier if multiplied else None,
                               drain_lanes=self.vec_out)
        chosen = cands if self.dsp_blocks is None else cands[:self.dsp_blocks]
        pe = sum(1 for _, kind in chosen if kind == "pe")
        rq = sum(1 for _, kind in chosen if kind == "requant") if multiplied else None
        return pe, rq


    def geometry(self) -> WindowGeometry:
        """The engine's window (what its address generator steps through)."""
        kh, kw = self.weight.shape[2:]
        return WindowGeometry(in_hw=self.in_hw, kernel=(kh, kw), stride=self.stride, padding=self.padding,
                              channel_words=self.groups * self.layout.channel_words, out_groups=self.layout.groups,
                              conv_groups=self.groups)

    def elaborate(self, platform):
        m = Module()
        P, L, lay = self.pes, self.lanes, self.layout
        group_c = self.weight.shape[1]  # input channels a frame word's lanes come from (all, when dense)
        geo = self.geometry()
        frame = geo.frame_words  # words per bank
        cw = self.count_range.width
        r = self.ranges
        pe_dsp, rq_dsp = self.dsp_plan()
        # a word no writer touches: padded taps read it and see counts of zero
        has_pad = geo.has_pad
        lb = self.line_buffer
        # the line buffer's generator says how many words it addresses (its N); added as a submodule below
        gen = self.address_generator(geo)
        if lb and "phys" not in gen.signature.members:
            raise ValueError(f"a line-buffered engine needs an address generator with the ports of "
                             f"LineBufferAddressGenerator, not {gen!r}")
        body = gen.words if lb else 2 * frame
        zero_word = body

        # ---- neuron stage: current in, registered spike count out
        V = self.vec_in
        if self.counts_in:
            m.submodules.neuron = nrn = CountStage(unsigned(cw), vec=V)
        else:
            m.submodules.neuron = nrn = NeuronStage(r.x, self.s_bits, self.timesteps, self.k, membrane=r.v,
                                                    count_shape=unsigned(cw), vec=V)
        wiring.connect(m, wiring.flipped(self.x), nrn.i)
        counts = nrn.o
        if self.fast_paths:
            # the counts reach the writer through a skid buffer: its ready (the line buffer's limit compare)
            # ends at the skid's flag instead of running on through the neuron's ready into the producer
            m.submodules.skid = skid = SkidBuffer(nrn.o.payload.shape())
            wiring.connect(m, nrn.o, skid.x)
            counts = skid.y

        # ---- writer: pack channel counts into words of the line buffer or a double-buffered frame memory (a
        # beat's V counts go to V consecutive lanes of one word: V divides the lanes and a group's channels)
        inbuf = memory.Memory(shape=data.ArrayLayout(unsigned(cw), L), depth=body + has_pad, init=[])
        m.submodules.inbuf = inbuf
        wr = inbuf.write_port()
        rd = inbuf.read_port()
        full = Signal(2)
        wr_bank = Signal()
        wr_word = Signal(range(frame + 1))
        wr_chan = Signal(range(group_c))  # the channel within its group; a group starts a new word
        wr_lane = Signal(range(L // V))  # the beat's lane slot (lanes wr_lane·V …)
        wr_last_elem = Signal()
        pack = [Signal(unsigned(cw), name=f"pack{l}") for l in range(L)]
        count = counts.payload
        elem = (lambda l: count) if V == 1 else (lambda l: count[l % V])  # the count lane l would take
        w_ready = Signal()
        # this beat completes its word (the frame path keeps the expression: its Verilog stays as it was)
        write_beat = (wr_lane == L // V - 1) | (wr_chan == group_c - V)
        last_elem = (wr_word == frame - 1) & (wr_chan == group_c - V)
        if lb:
            # frames written and read, modulo 4: the writer is at most one frame ahead of the reader,
            # or one behind (a stride that leaves the map's last words unread lets the reader finish first)
            wr_frame, rd_frame, ahead = Signal(2), Signal(2), Signal(2)
            wr_phys = Signal(range(body))
            space = Signal()
            beat = Signal(name="write_beat")  # a named wire for the ready path
            m.d.comb += [beat.eq(write_beat), counts.ready.eq(w_ready), wr_last_elem.eq(last_elem)]
            write_beat = beat
            m.d.comb += [
                ahead.eq(wr_frame - rd_frame),
                # the word would overwrite word k − N: only once it lies below the reader's boundary
                space.eq(Mux(ahead == 0, wr_word < gen.lim_same, Mux(ahead == 1, wr_word < gen.lim_next, 1))),
                w_ready.eq(~write_beat | space),
                wr.addr.eq(wr_phys),
            ]
        else:
            m.d.comb += [
                w_ready.eq(~full.bit_select(wr_bank, 1)),
                counts.ready.eq(w_ready),
                wr_last_elem.eq(last_elem),
                wr.addr.eq(Mux(wr_bank, wr_word + frame, wr_word)),
            ]
        m.d.comb += [wr.data[l].eq(Mux(wr_lane == l // V, elem(l), pack[l])) for l in range(L)]
        accept = counts.valid & w_ready
        with m.If(accept):
            m.d.sync += wr_chan.eq(Mux(wr_chan == group_c - V, 0, wr_chan + V))
            with m.If(write_beat):
                m.d.comb += wr.en.eq(1)
                m.d.sync += [p.eq(0) for p in pack]
                m.d.sync += [wr_lane.eq(0), wr_word.eq(wr_word + 1)]
                if lb:
                    m.d.sync += wr_phys.eq(Mux(wr_phys == body - 1, 0, wr_phys + 1))
                with m.If(wr_last_elem):
                    m.d.sync += [wr_word.eq(0), wr_bank.eq(~wr_bank)]
                    if lb:
                        m.d.sync += wr_frame.eq(wr_frame + 1)
            with m.Else():
                m.d.sync += wr_lane.eq(wr_lane + 1)
                for l in range(L):
                    with m.If(wr_lane == l // V):
                        m.d.sync += pack[l].eq(elem(l))

        # ---- window/address generator (made above): which frame word and weight word each issued clock reads
        m.submodules.window = gen
        # large weight memories go to block RAM (Yosys otherwise may build shallow, wide ROMs from LUTs),
        # except the shallow and wide ones that cost fewer LUTs than the block RAMs they would spread over
        style = weight_memory_style(lay.depth, lay.word_bits, self.weight_rom)
        attrs = {"ram_style": style} if style != "rom" else {}
        wmem = memory.Memory(shape=unsigned(lay.word_bits), depth=lay.depth, init=pack_weights(self.weight, lay),
                             attrs=attrs)
        m.submodules.wmem = wmem
        wrd = wmem.read_port()
        rd_bank = Signal()
        slots = Signal(range(HOLD_SLOTS + 1))  # groups whose last word issued and that have not fully drained
        available = Signal()
        issue = Signal()
        local = gen.local
        pad = gen.pad if "pad" in gen.signature.members else Const(0)
        if "wr_en" in gen.signature.members:  # a generator that watches the writer (.zeroskip)
            m.d.comb += [gen.wr_en.eq(wr.en), gen.wr_word.eq(wr_word), gen.wr_bank.eq(wr_bank),
                         gen.wr_nonzero.eq(wr.data.as_value().any())]
        replays = "replay" in gen.signature.members  # a conv generator replaying nonzero words (.convskip)
        if lb:
            # a tap is readable once written: the writer is a frame ahead, or in this frame past the word
            readable = pad | (ahead == 1) | ((ahead == 0) & (local < wr_word))
            rd_addr = Mux(pad, zero_word, gen.phys) if has_pad else gen.phys
            if replays:
                rd_addr = self._replay_read(m, gen, rd, rd_addr)
                readable = readable | gen.replay  # a replayed word was read already
            m.d.comb += [
                gen.issue.eq(issue),
                available.eq(readable),
                # the last word of a group reserves a slot of the holding queue
                issue.eq(available & (~gen.word_last | (slots < HOLD_SLOTS))),
                rd.addr.eq(rd_addr),
                wrd.addr.eq(gen.waddr),
            ]
            with m.If(issue & gen.frame_last):
                m.d.sync += rd_frame.eq(rd_frame + 1)
        else:
            # a generator with whole_frame issues from a bank only once the whole frame is in
            streaming = Const(0) if getattr(gen, "whole_frame", False) else (wr_bank == rd_bank) & (local < wr_word)
            ready = pad | full.bit_select(rd_bank, 1) | streaming
            if "hold" in gen.signature.members:  # the generator's next word is not settled yet
                ready = ready & ~gen.hold
            rd_addr = (Mux(pad, zero_word, Mux(rd_bank, local + frame, local)) if has_pad
                       else Mux(rd_bank, local + frame, local))
            if replays:
                rd_addr = self._replay_read(m, gen, rd, rd_addr)
                ready = ready | gen.replay  # a replayed word was read already
            m.d.comb += [
                gen.issue.eq(issue),
                available.eq(ready),
                # the last word of a group reserves a slot of the holding queue
                issue.eq(available & (~gen.word_last | (slots < HOLD_SLOTS))),
                rd.addr.eq(rd_addr),
                wrd.addr.eq(gen.waddr),
            ]
            with m.If(issue & gen.frame_last):
                m.d.sync += rd_bank.eq(~rd_bank)
            self._bank_handshake(m, geo, full, accept & wr_last_elem, wr_bank, issue & gen.frame_last, rd_bank)

        # ---- PE array: the memory words and their tag (registered like the memory read) in, groups out
        m.submodules.pe_array = pes = PEArray(pes=P, lanes=L, w_bits=self.w_bits, count_bits=cw,
                                              psum_shape=shape_of(self.psum_range), dsp_products=pe_dsp,
                                              clear_on_last=self.fast_paths)
        tag = Signal(word_tag_layout())
        m.d.sync += [tag.valid.eq(issue), tag.first.eq(gen.first), tag.last.eq(gen.word_last),
                     tag.last_group.eq(gen.last_group)]
        m.d.comb += [pes.word.weights.eq(wrd.data), pes.word.counts.eq(rd.data), pes.tag.eq(tag)]

        # ---- drain: holding queue, bias, requantizer, output skid
        m.submodules.drain = drain = Drain(
            pes=P, bias=self.bias, psum_shape=shape_of(self.psum_range), acc_shape=shape_of(r.acc),
            out_shape=self.out_shape, requant=self.requant, product_shape=shape_of(r.product) if self.requant is not None else None,
            dsp_pieces=rq_dsp, fused=self.fused, vec=self.vec_out,
            **({"registered_flags": True} if self.fast_paths else {}))
        wiring.connect(m, pes.o, drain.i)
        wiring.connect(m, drain.y, wiring.flipped(self.y))
        m.d.sync += slots.eq(slots + (issue & gen.word_last) - drain.freed)

        self._wire_debug_taps(m, nrn, drain)
        return m

    def _wire_debug_taps(self, m: Module, nrn, drain) -> None:
        """With ``debug_taps``: the input and spike taps at the accepted input beat (an engine fed counts has
        neither), the drain's accumulator tap, and the output (or, fused, the counts) at the taken beat."""
        if not self.debug_taps:
            return
        x_accept = self.x.valid & self.x.ready
        if not self.counts_in:
            m.d.comb += [
                self.tap_x.payload.eq(self.x.payload), self.tap_x.valid.eq(x_accept),
                self.tap_spk.payload.eq(nrn.spikes), self.tap_spk.valid.eq(x_accept),
            ]
        tap_y = self.tap_out if self.fused is None else self.tap_cnt
        m.d.comb += [
            self.tap_acc.payload.eq(drain.tap_acc.payload), self.tap_acc.valid.eq(drain.tap_acc.valid),
            tap_y.payload.eq(self.y.payload), tap_y.valid.eq(self.y.valid & self.y.ready),
        ]

    @staticmethod
    def _replay_read(m: Module, gen, rd, scan_addr):
        """Wire a replaying generator (:mod:`.convskip`): it sees the scan's read address and whether the word read
        the clock before was nonzero; the read address is the replayed word's during a replay."""
        m.d.comb += [gen.rd_addr.eq(scan_addr), gen.rd_nonzero.eq(rd.data.as_value().any())]
        return Mux(gen.replay, gen.replay_addr, scan_addr)

    @staticmethod
    def _bank_handshake(m: Module, geo: WindowGeometry, full, complete, wr_bank, release, rd_bank) -> None:
        """The frame banks' ``full`` flags: the writer's ``complete`` fills a bank, the reader's ``release`` frees it."""
        if geo.reads_last:
            # the writer's "bank complete" comes after the reader's release; they never name the
            # same bank in one clock (the reader only frees a bank it has read completely)
            with m.If(release):
                with m.If(rd_bank):
                    m.d.sync += full[1].eq(0)
                with m.Else():
                    m.d.sync += full[0].eq(0)
            with m.If(complete):
                with m.If(wr_bank):
                    m.d.sync += full[1].eq(1)
                with m.Else():
                    m.d.sync += full[0].eq(1)
            return
        # No window reads the map's last element (a stride leaves rows or columns over), so the
        # reader can finish a bank before the writer has. It then marks the bank "released early",
        # and the writer's completion frees the bank instead of filling it.
        early = Signal(2)
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
