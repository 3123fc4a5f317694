"""Zero-word skipping for squeezed linear layers: a window generator that walks only the nonzero frame words.

A squeezed layer's neuron emits one spike count per input, and the synaptic engine
(:class:`~.synapse.SynapticEngine`) packs ``lanes`` of them into a frame word. Counts of ReLU-like
neurons are often 0 (and so are the background pixels of an image), and a word whose counts are all
0 adds nothing to any accumulator. :class:`ZeroSkipGenerator` replaces the engine's window/address
generator (the ``address_generator`` argument) for a linear layer (a 1×1 map, :attr:`~.window.
WindowGeometry.is_pointwise`):

* **Writer side.** The engine shows the generator every frame word it writes (``wr_en``, its word
  index ``wr_word``, its bank ``wr_bank`` and whether any of its counts is nonzero, ``wr_nonzero``). The
  generator appends the index of each nonzero word to a per-bank list (a small memory of 2 × J entries,
  J frame words per bank) and counts them; the list is double-buffered like the frame, so the next
  inference fills one bank's list while this one's is walked.
* **Reader side.** For each output group the walk issues the listed words only, in index order: the
  frame word and, at the matching address, its weight word. A group costs max(nonzero words, 1) clocks
  (a frame with no nonzero word still issues one word, which reads zeros, so that every group reaches the
  drain). The result is bit-exact by construction: the words left out add 0.

The walk starts on a bank once the whole frame is in (``whole_frame``; a dense walk may follow the
writer word by word, but which words are nonzero is only known at the end). The list is read one clock
ahead (its read port is addressed with the next clock's entry; it is not transparent, so that it maps to
block RAM on every family, and ``hold`` stops the walk for the one clock in which an entry written as it
was read still shows its old value), so every output is a memory or register output:
the engine's pipeline (no memory read, multiply and adder in one clock) is unchanged behind it. Squeezed
conv layers skip differently (their window reads each frame word at several taps): :mod:`.convskip`.

:func:`zero_skip_reference` is the plain-Python model: the words one frame issues.
"""

from __future__ import annotations

import numpy as np
from amaranth import Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .window import WindowGeometry

__all__ = ["ZeroSkipGenerator", "zero_skip_generator", "zero_skip_reference", "nonzero_words", "list_bits",
           "list_in_block_ram", "MIN_FRAME_WORDS", "LIST_BLOCK_MIN_BITS"]

#: a frame of one word has nothing to skip (a group issues at least one word): skipping needs two or more
MIN_FRAME_WORDS = 2
#: nonzero lists of at least this many bits are marked ``ram_style = "block"``: a part without LUT RAM
#: (iCE40) would otherwise build them from flip-flops and a read multiplexer (Yosys ``synth_ice40``: 768
#: bits took 768 flip-flops and ~870 LUT4s)
LIST_BLOCK_MIN_BITS = 256


def list_bits(frame_words: int) -> int:
    """Bits of the nonzero list of an engine with ``frame_words`` words a bank (two banks of word indices)."""
    return 2 * frame_words * max(1, (frame_words - 1).bit_length())


def list_in_block_ram(frame_words: int) -> bool:
    """Whether the nonzero list is marked for block RAM (:data:`LIST_BLOCK_MIN_BITS`)."""
    return list_bits(frame_words) >= LIST_BLOCK_MIN_BITS


def nonzero_words(counts: np.ndarray, lanes: int) -> np.ndarray:
    """Which frame words hold a nonzero count: ``counts`` ``[N, in]`` (stream order) → bool ``[N, ⌈in / lanes⌉]``."""
    c = np.asarray(counts).reshape(len(counts), -1)
    n, m = c.shape
    words = -(-m // lanes)
    padded = np.zeros((n, words * lanes), dtype=bool)
    padded[:, :m] = c != 0
    return padded.reshape(n, words, lanes).any(axis=2)


def zero_skip_reference(geo: WindowGeometry, nonzero) -> list[dict[str, int]]:
    """The words of one frame in issue order, given which of its frame words are nonzero (``nonzero[j]``).

    Entries as :func:`~.window.address_reference`'s (``pad`` is always 0). With no nonzero word each group
    issues one word; its frame word (any one of the bank's: all are zero) is reported as ``local = -1``.
    """
    listed = [j for j in range(geo.frame_words) if nonzero[j]]
    walk = listed or [-1]
    out = []
    for g in range(geo.out_groups):
        for i, j in enumerate(walk):
            last = i == len(walk) - 1
            out.append({"local": j, "pad": 0, "waddr": g * geo.frame_words + j if j >= 0 else -1,
                        "first": int(i == 0), "word_last": int(last), "last_group": int(g == geo.out_groups - 1),
                        "frame_last": int(last and g == geo.out_groups - 1)})
    return out


class ZeroSkipGenerator(wiring.Component):
    """A linear layer's window generator that issues only the nonzero frame words (see the module docstring).

    Parameters
    ----------
    geometry
        The engine's window: a pointwise geometry (:attr:`~.window.WindowGeometry.is_pointwise`) with at
        least :data:`MIN_FRAME_WORDS` frame words.

    Ports
    -----
    issue, local, waddr, first, word_last, last_group, frame_last
        As :class:`~.window.AddressGenerator`'s.
    wr_en, wr_word, wr_bank, wr_nonzero : In
        The engine's frame writer: a word is written this clock, its index within its bank, the bank, and
        whether any of its counts is nonzero.
    hold : Out(1)
        The list entry shown is stale this clock (it was written as it was read): issue nothing.

    The engine waits for a complete bank before it issues from it (``whole_frame``).
    """

    #: the engine may issue from a bank only once the whole frame is in
    whole_frame = True

    def __init__(self, geometry: WindowGeometry):
        if not isinstance(geometry, WindowGeometry) or not geometry.is_pointwise:
            raise ValueError(f"ZeroSkipGenerator needs a pointwise (linear) geometry, not {geometry!r}: squeezed "
                             "conv layers skip with rtl_templates.convskip")
        if geometry.frame_words < MIN_FRAME_WORDS:
            raise ValueError(f"ZeroSkipGenerator needs at least {MIN_FRAME_WORDS} frame words, not "
                             f"{geometry.frame_words} (with one word there is nothing to skip)")
        self.geometry = geometry
        J = geometry.frame_words
        super().__init__({
            "issue": In(1),
            "local": Out(range(J)),
            "waddr": Out(range(geometry.weight_words)),
            "first": Out(1), "word_last": Out(1), "last_group": Out(1), "frame_last": Out(1),
            "wr_en": In(1), "wr_word": In(range(J + 1)), "wr_bank": In(1), "wr_nonzero": In(1),
            "hold": Out(1),
        })

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self, 'geometry', '?')!r})"

    def elaborate(self, platform):
        m = Module()
        J, G = self.geometry.frame_words, self.geometry.out_groups

        # the nonzero list: bank b's entries at b·J …; nz[b] counts them
        attrs = {"ram_style": "block"} if list_in_block_ram(J) else {}
        m.submodules.nz_list = lst = memory.Memory(shape=range(J), depth=2 * J, init=[], attrs=attrs)
        lw = lst.write_port()
        lr = lst.read_port()  # not transparent: block RAM on every family (iCE40's cannot bypass)
        nz = [Signal(range(J + 1), name=f"nz{b}") for b in range(2)]

        # ---- writer side: a bank's first word restarts its list
        at = Signal(range(J + 1))  # the written word's list position
        m.d.comb += [
            at.eq(Mux(self.wr_word == 0, 0, Mux(self.wr_bank, nz[1], nz[0]))),
            lw.addr.eq(Mux(self.wr_bank, at + J, at)),
            lw.data.eq(self.wr_word),
            lw.en.eq(self.wr_en & self.wr_nonzero),
        ]
        with m.If(self.wr_en):
            for b in range(2):
                with m.If(self.wr_bank == b):
                    m.d.sync += nz[b].eq(at + self.wr_nonzero)

        # ---- reader side: entry idx of bank `bank`'s list, for output group g
        bank = Signal()
        idx = Signal(range(J))
        count = Signal(range(J + 1))
        last_idx = Signal(range(J))
        m.d.comb += [
            count.eq(Mux(bank, nz[1], nz[0])),
            last_idx.eq(Mux(count == 0, 0, count - 1)),  # an all-zero frame: one word per group
            self.word_last.eq(idx == last_idx),
            self.first.eq(idx == 0),
            self.frame_last.eq(self.word_last & self.last_group),
            self.local.eq(lr.data),
        ]
        if G > 1:
            g = Signal(range(G))
            gbase = Signal(range(G * J))  # g·J, stepped (no product of indices)
            m.d.comb += [self.last_group.eq(g == G - 1), self.waddr.eq(gbase + lr.data)]
            with m.If(self.issue & self.word_last):
                m.d.sync += [g.eq(Mux(self.last_group, 0, g + 1)), gbase.eq(Mux(self.last_group, 0, gbase + J))]
        else:
            m.d.comb += [self.last_group.eq(1), self.waddr.eq(lr.data)]
        # the list is read one clock ahead: address it with the entry the next clock shows
        nxt_idx = Signal(range(J))
        nxt_bank = Signal()
        m.d.comb += [
            nxt_idx.eq(Mux(self.issue, Mux(self.word_last, 0, idx + 1), idx)),
            nxt_bank.eq(bank ^ (self.issue & self.frame_last)),
            lr.addr.eq(Mux(nxt_bank, nxt_idx + J, nxt_idx)),
        ]
        m.d.sync += [idx.eq(nxt_idx), bank.eq(nxt_bank)]
        # an entry written in the clock it was read shows its old value the next clock: hold the walk for
        # that clock (it happens only as a bank completes with its first nonzero word last)
        m.d.sync += self.hold.eq(lw.en & (lw.addr == lr.addr))
        return m


def zero_skip_generator(geometry: WindowGeometry) -> ZeroSkipGenerator:
    """The engine's ``address_generator`` factory for zero-word skipping (:class:`ZeroSkipGenerator`)."""
    return ZeroSkipGenerator(geometry)
