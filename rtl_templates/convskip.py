"""Zero-word skipping for squeezed conv layers: the first output group reads the window, the others replay its nonzero words.

A conv engine folded to ``pes`` < out channels computes each output pixel in G output groups, and every
group walks the whole window: kernel taps × channel words, T words. Which of those words hold a nonzero
spike count is the same for every group (the window is), so :class:`ConvZeroSkipGenerator` learns it
once per pixel and the other groups skip the zeros:

* **Scan.** Output group 0 walks the window densely, as the dense generator does (it is one: a
  :class:`~.window.ConvAddressGenerator`, or the line buffer's :class:`~.linebuf.
  LineBufferAddressGenerator`, of the same window with a single output group). The clock after each of
  its words issued, the engine shows the generator the frame memory's output (``rd_nonzero``: any of the
  word's counts is nonzero); the read address of every nonzero word among the window's first T − 1 is
  appended to a small list with its tap (T − 1 entries: one window), and the address of the last word is
  kept apart.
  The list is read one clock ahead (a block RAM from :data:`~.zeroskip.LIST_BLOCK_MIN_BITS` bits on, whose
  read port cannot bypass: an entry written in the clock it is read is forwarded from a register).
* **Replay.** Output groups 1 … G − 1 each issue the listed words and then the window's last word:
  ``n + 1`` words for n nonzero words among the first T − 1 (the last is always issued, so that every
  group issues at least one word and its ``word_last`` is known without looking ahead). The replayed
  words were read already, so they are available; the generator holds the line buffer's write limits at
  the window's own boundary until the replay ends, so the writer cannot overwrite them.

A pixel then costs ``T + (G − 1)·(n + 1)`` issue clocks instead of ``G·T``; the result is bit-exact by
construction (a left-out word adds 0 to every accumulator). One output group has nothing to replay
(refused), and neither has a window of one word; a grouped convolution's output groups read different
words (refused too). Padding taps read the zero word: never listed.

:func:`conv_zero_skip_words` is the plain-Python model: the words each replayed group issues, per window.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from amaranth import Module, Mux, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from .linebuf import LineBufferAddressGenerator, line_buffer_size
from .window import ConvAddressGenerator, WindowGeometry
from .zeroskip import LIST_BLOCK_MIN_BITS

__all__ = ["ConvZeroSkipGenerator", "conv_zero_skip_generator", "conv_zero_skip_words", "conv_skip_refused",
           "conv_list_bits", "list_in_block_ram", "conv_nonzero_words", "input_memory_words"]


def conv_skip_refused(geo: WindowGeometry) -> str | None:
    """Why a conv engine of window ``geo`` cannot replay its nonzero words (``None``: it can)."""
    taps = geo.kernel[0] * geo.kernel[1] * geo.group_words
    if geo.is_pointwise:
        return "a pointwise geometry is a linear layer's (rtl_templates.zeroskip)"
    if geo.conv_groups > 1:
        return f"a grouped convolution ({geo.conv_groups} groups): its output groups read different words"
    if geo.out_groups < 2:
        return "one output group (pes = out channels): the window's only walk is the scan, nothing is replayed"
    if taps < 2:
        return "a window of one word: nothing to skip"
    return None


def input_memory_words(geo: WindowGeometry, line_buffer: bool) -> int:
    """Words of the engine's input memory (its read address's range): the line buffer's ``N`` or the two frame
    banks, plus the zero word of a padded window."""
    body = line_buffer_size(geo).words if line_buffer else 2 * geo.frame_words
    return body + geo.has_pad


def conv_list_bits(geo: WindowGeometry, line_buffer: bool) -> int:
    """Bits of the nonzero list: T − 1 entries of a read address of the input memory and a tap index."""
    taps = geo.kernel[0] * geo.kernel[1] * geo.group_words
    return (taps - 1) * (max(1, (input_memory_words(geo, line_buffer) - 1).bit_length()) + (taps - 1).bit_length())


def list_in_block_ram(geo: WindowGeometry, line_buffer: bool) -> bool:
    """Whether the nonzero list is marked for block RAM (from :data:`~.zeroskip.LIST_BLOCK_MIN_BITS` bits on,
    as the linear engine's list: iCE40 has no LUT RAM, and builds a smaller list from flip-flops)."""
    return conv_list_bits(geo, line_buffer) >= LIST_BLOCK_MIN_BITS


def conv_nonzero_words(counts: np.ndarray, in_hw: tuple[int, int], lanes: int) -> np.ndarray:
    """Which frame words hold a nonzero count: ``counts`` ``[N, H·W·C]`` (HWC stream order) → bool
    ``[N, H·W·⌈C / lanes⌉]`` (each pixel's channels start a new word)."""
    c = np.asarray(counts)
    n = len(c)
    pix = in_hw[0] * in_hw[1]
    ch = c.reshape(n, pix, -1)
    words = -(-ch.shape[2] // lanes)
    padded = np.zeros((n, pix, words * lanes), dtype=bool)
    padded[:, :, :ch.shape[2]] = ch != 0
    return padded.reshape(n, pix, words, lanes).any(axis=3).reshape(n, pix * words)


def conv_zero_skip_words(geo: WindowGeometry, nonzero) -> list[int]:
    """Per window (output row, then column): the words each of output groups 1 … G − 1 issues, given which
    frame words are nonzero (``nonzero[j]``, in-frame word j): 1 + the nonzero words among the window's
    first T − 1 (taps in the padding are zero). Group 0 issues all T."""
    (h, w), (kh, kw), (sh, sw), (ph, pw) = geo.in_hw, geo.kernel, geo.stride, geo.padding
    jn = geo.channel_words
    nz = np.asarray(nonzero, dtype=bool)
    out = []
    for oh in range(geo.out_hw[0]):
        for ow in range(geo.out_hw[1]):
            flags = []
            for ky in range(kh):
                for kx in range(kw):
                    ih, iw = oh * sh - ph + ky, ow * sw - pw + kx
                    inside = 0 <= ih < h and 0 <= iw < w
                    flags += [bool(inside and nz[(ih * w + iw) * jn + j]) for j in range(jn)]
            out.append(1 + sum(flags[:-1]))
    return out


class ConvZeroSkipGenerator(wiring.Component):
    """A conv window generator that scans the window in output group 0 and replays its nonzero words in the
    others (see the module docstring).

    Parameters
    ----------
    geometry
        The engine's window (:func:`conv_skip_refused` says which it takes).
    line_buffer
        Wrap the line buffer's generator (the engine reads a line buffer) instead of the whole-frame one.

    Ports
    -----
    issue, local, pad, waddr, first, word_last, last_group, frame_last
        As :class:`~.window.AddressGenerator`'s (during a replay ``local`` and ``pad`` are the scan's next
        window's: the engine reads ``replay_addr`` instead).
    phys, lim_same, lim_next
        The line buffer's (with ``line_buffer``), the limits held at the window's boundary during a replay.
    rd_addr : In
        The engine's frame read address this clock (the scan's word).
    rd_nonzero : In(1)
        The frame memory's output (the word read the clock before) holds a nonzero count.
    replay : Out(1)
        The current word is a replayed one: it is available, and the engine reads ``replay_addr``.
    replay_addr : Out
        Its read address.
    """

    def __init__(self, geometry: WindowGeometry, *, line_buffer: bool):
        why = conv_skip_refused(geometry) if isinstance(geometry, WindowGeometry) else "not a WindowGeometry"
        if why is not None:
            raise ValueError(f"ConvZeroSkipGenerator cannot skip for {geometry!r}: {why}")
        self.geometry, self.line_buffer = geometry, bool(line_buffer)
        self.scan_geometry = replace(geometry, out_groups=1)
        self.taps = geometry.kernel[0] * geometry.kernel[1] * geometry.group_words
        if self.line_buffer:
            self.words = line_buffer_size(geometry).words
            self.scanner = LineBufferAddressGenerator(self.scan_geometry, self.words)
        else:
            self.scanner = ConvAddressGenerator(self.scan_geometry)
        self.addr_words = addr_words = input_memory_words(geometry, self.line_buffer)
        members = {
            "issue": In(1),
            "waddr": Out(range(geometry.weight_words)),
            "first": Out(1), "word_last": Out(1), "last_group": Out(1), "frame_last": Out(1),
            "rd_addr": In(range(addr_words)), "rd_nonzero": In(1),
            "replay": Out(1), "replay_addr": Out(range(addr_words)),
        }
        for name in ("local", "pad", "phys", "lim_same", "lim_next"):
            if name in self.scanner.signature.members:
                members[name] = self.scanner.signature.members[name]
        super().__init__(members)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self, 'geometry', '?')!r}, line_buffer={getattr(self, 'line_buffer', '?')})"

    def elaborate(self, platform):
        m = Module()
        T, G = self.taps, self.geometry.out_groups
        m.submodules.scan = sc = self.scanner
        replay = Signal()  # output groups 1 … G − 1 of the window the scan has just read
        m.d.comb += self.replay.eq(replay)

        # ---- the list: the read addresses of the nonzero words among the window's first T − 1
        entry = data.StructLayout({"addr": range(self.addr_words), "tap": range(T)})
        attrs = {"ram_style": "block"} if list_in_block_ram(self.geometry, self.line_buffer) else {}
        m.submodules.nz_list = lst = memory.Memory(shape=entry, depth=T - 1, init=[], attrs=attrs)
        lw = lst.write_port()
        lr = lst.read_port()  # not transparent (iCE40 block RAM cannot bypass): `fwd` below does it
        n = Signal(range(T))  # entries listed
        # the last clock issued a scan word before the window's last: its read address and tap
        rec, rec_addr, rec_tap = Signal(), Signal.like(self.rd_addr), Signal(range(T))
        last_addr = Signal.like(self.rd_addr)  # the window's last word
        m.d.sync += [rec.eq(self.issue & ~replay & ~sc.word_last), rec_addr.eq(self.rd_addr), rec_tap.eq(sc.waddr)]
        m.d.comb += [lw.addr.eq(n), lw.data.addr.eq(rec_addr), lw.data.tap.eq(rec_tap),
                     lw.en.eq(rec & self.rd_nonzero)]
        with m.If(lw.en):
            m.d.sync += n.eq(n + 1)

        # ---- replay: entry idx of group rg (weight words from gbase = rg·T)
        idx = Signal(range(T))
        rg = Signal(range(G))
        gbase = Signal(range(G * T))
        frame_end = Signal()  # the replayed window is the frame's last
        at_last = Signal()
        # the list is read one clock ahead: addressed with the entry the next clock shows (entry 0 all through
        # the scan); an entry written in the clock it is read is forwarded from a register
        nxt_idx = Signal(range(T))
        fwd, fwd_data = Signal(), Signal(entry)
        shown = Signal(entry)
        m.d.comb += [nxt_idx.eq(Mux(self.issue & replay, Mux(at_last, 0, idx + 1), idx)), lr.addr.eq(nxt_idx),
                     shown.eq(Mux(fwd, fwd_data, lr.data))]
        m.d.sync += [fwd.eq(lw.en & (lw.addr == lr.addr)), fwd_data.eq(lw.data)]
        m.d.comb += [at_last.eq(idx == n), self.replay_addr.eq(Mux(at_last, last_addr, shown.addr))]

        # ---- the scan's ports, or the replay's
        m.d.comb += sc.issue.eq(self.issue & ~replay)
        for name in ("local", "pad", "phys"):
            if name in self.signature.members:
                m.d.comb += getattr(self, name).eq(getattr(sc, name))
        if self.line_buffer:
            # the writer may not pass the replayed window's boundary: hold the limits until the replay ends
            held = [Signal.like(sc.lim_same), Signal.like(sc.lim_next)]
            with m.If(~replay):
                m.d.sync += [held[0].eq(sc.lim_same), held[1].eq(sc.lim_next)]
            m.d.comb += [self.lim_same.eq(Mux(replay, held[0], sc.lim_same)),
                         self.lim_next.eq(Mux(replay, held[1], sc.lim_next))]
        with m.If(replay):
            m.d.comb += [
                self.waddr.eq(gbase + Mux(at_last, T - 1, shown.tap)),
                self.first.eq(idx == 0), self.word_last.eq(at_last),
                self.last_group.eq(rg == G - 1), self.frame_last.eq(at_last & (rg == G - 1) & frame_end),
            ]
        with m.Else():
            m.d.comb += [self.waddr.eq(sc.waddr), self.first.eq(sc.first), self.word_last.eq(sc.word_last)]

        with m.If(self.issue):
            with m.If(~replay):
                with m.If(sc.word_last):  # the scan's last word: the replay follows
                    m.d.sync += [replay.eq(1), rg.eq(1), gbase.eq(T), idx.eq(0), last_addr.eq(self.rd_addr),
                                 frame_end.eq(sc.frame_last)]
            with m.Elif(at_last):
                m.d.sync += idx.eq(0)
                with m.If(rg == G - 1):  # the window's last group: the scan of the next window
                    m.d.sync += [replay.eq(0), n.eq(0)]
                with m.Else():
                    m.d.sync += [rg.eq(rg + 1), gbase.eq(gbase + T)]
            with m.Else():
                m.d.sync += idx.eq(idx + 1)
        return m


def conv_zero_skip_generator(*, line_buffer: bool):
    """The engine's ``address_generator`` factory for conv zero skipping (:class:`ConvZeroSkipGenerator`)."""

    def build(geometry: WindowGeometry) -> ConvZeroSkipGenerator:
        return ConvZeroSkipGenerator(geometry, line_buffer=line_buffer)

    return build
