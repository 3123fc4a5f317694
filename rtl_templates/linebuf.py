"""Line-buffer convolution: the conv engine keeps only the input words its pending windows still need.

The whole-frame alternative (a double-buffered bank of H·W·C counts per
frame) lets a conv read its window only out of a memory as large as two
input maps. Here the engine's input memory is a circular buffer of ``N``
frame words, a few input rows: global word ``k`` of the input stream (frames
back to back, HWC order, :attr:`~.window.WindowGeometry.channel_words` words
a pixel) lives at physical word ``k mod N``.

Which words may be overwritten
    Windows are read in order (output row, output column). While the reader
    is at window (oh, ow) with corner (ih0, iw0) = (oh·sh − ph, ow·sw − pw),
    no current or later window reads a word below its *boundary*
    ``bnd = (ih0·W + max(0, iw0))·Jn`` (``0`` while ``ih0 < 0``): rows above
    ih0 are done and so are row ih0's pixels left of iw0 (later output rows
    start at least one row lower). The boundary only grows, and at a frame's
    end it jumps to the next frame's start. The writer may write global word
    ``k`` once ``k − N`` lies below the boundary; otherwise it holds its
    ``ready`` low (only on the beat that completes a word).

How large
    :func:`line_buffer_size` gives the smallest ``N`` that cannot deadlock
    (every window's last word fits above its own boundary: about
    (K_h − 1) rows plus K_w pixels), and the size the engine uses: one window
    of look-ahead, so that while the reader works on a window the writer can
    already store the whole next one, across output rows and frames too
    (about twice that), plus K_h rows, so that the producer can run into the
    next frame while this engine reads its last output rows (else a pipeline
    of convs refills at every frame: measured on the Fashion CNN, interval
    17,568 against 14,112). Either is capped at one frame (``H·W·Jn``), which
    is still half the double-buffered frame.

Reads
    A tap is readable once its word was written (the writer is in a later
    frame, or in the same frame past the word); taps in the zero padding read
    a word after the buffer that no writer touches. The reader's physical
    addresses are stepped modulo ``N`` by constants
    (:class:`LineBufferAddressGenerator`), beside the in-frame addresses of
    :class:`~.window.ConvAddressGenerator` that the availability test uses.

:func:`window_bounds` and :func:`line_buffer_reference` are the plain-Python
model of the boundary and the physical addresses.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Module, Mux, Signal
from amaranth.lib.wiring import Out

from .window import ConvAddressGenerator, WindowGeometry, address_reference

__all__ = ["LineBufferSize", "line_buffer_size", "window_bounds", "line_buffer_reference",
           "LineBufferAddressGenerator"]


@dataclass(frozen=True)
class LineBufferSize:
    """The circular buffer of one conv engine, in frame words.

    Attributes
    ----------
    words
        ``N``: what the engine builds (one window of look-ahead, at most a frame).
    min_words
        The smallest ``N`` that cannot deadlock (the largest span from a window's boundary to its last word).
    frame_words
        ``H·W·Jn``: one frame (a whole-frame design holds two).
    """

    words: int
    min_words: int
    frame_words: int


def window_bounds(geo: WindowGeometry) -> list[tuple[int, int]]:
    """Per window (output row, then column): ``(boundary, end)`` in in-frame words.

    ``boundary``: no current or later window reads a word below it; ``end``: one past the window's
    last word inside the map (the last word of its bottom-right pixel inside the map).
    """
    (h, w), (kh, kw), (sh, sw), (ph, pw) = geo.in_hw, geo.kernel, geo.stride, geo.padding
    ho, wo = geo.out_hw
    jn = geo.channel_words
    out = []
    for oh in range(ho):
        ih0 = oh * sh - ph
        for ow in range(wo):
            iw0 = ow * sw - pw
            bnd = 0 if ih0 < 0 else (ih0 * w + max(0, iw0)) * jn
            end = (min(h - 1, ih0 + kh - 1) * w + min(w - 1, iw0 + kw - 1) + 1) * jn
            out.append((bnd, end))
    return out


def line_buffer_size(geo: WindowGeometry) -> LineBufferSize:
    """The circular buffer's size for ``geo`` (see the module docstring)."""
    frame = geo.frame_words
    bounds = window_bounds(geo)
    need = max(end - bnd for bnd, end in bounds)
    # one window ahead: window i+1's words (the next frame's first window after the last) fit while
    # the boundary is still window i's
    ahead = [bounds[i + 1][1] - bounds[i][0] for i in range(len(bounds) - 1)]
    ahead.append(frame + bounds[0][1] - bounds[-1][0])
    # and K_h rows more: a producer fills the next frame's first rows while this engine still reads its
    # last output rows (with one window of look-ahead only, a pipeline of convs refills at every frame)
    margin = geo.kernel[0] * geo.in_hw[1] * geo.channel_words
    return LineBufferSize(words=min(frame, max(need, max(ahead)) + margin), min_words=min(frame, need),
                          frame_words=frame)


def line_buffer_reference(geo: WindowGeometry, words: int, frames: int = 2) -> list[dict[str, int]]:
    """The issued words of ``frames`` frames with their physical word and boundary (the generator's model).

    Each entry is :func:`~.window.address_reference`'s, plus ``phys`` ((frame·F + local) mod ``words``,
    for every tap; a padded tap's value is the same formula, though the engine reads the zero word
    instead) and ``bound`` (the boundary of the entry's window, in-frame words).
    """
    frame = geo.frame_words
    per_pixel = geo.weight_words
    bounds = window_bounds(geo)
    out = []
    for f in range(frames):
        for i, e in enumerate(address_reference(geo)):
            out.append({**e, "phys": (f * frame + e["local"]) % words, "bound": bounds[i // per_pixel][0]})
    return out


def _mod_add(x, c: int, n: int):
    """``(x + c) mod n`` for ``0 ≤ x < n`` and a constant ``c`` (reduced here): one add, one compare."""
    c %= n
    if c == 0:
        return x
    s = x + c
    return Mux(s >= n, s - n, s)


class LineBufferAddressGenerator(ConvAddressGenerator):
    """:class:`~.window.ConvAddressGenerator` plus the line buffer's physical address and write limits.

    Parameters
    ----------
    geometry
        The window (:class:`~.window.WindowGeometry`; not a pointwise one).
    words
        ``N``, the circular buffer's frame words; ``None``: :func:`line_buffer_size`'s.

    Ports (beyond the conv generator's)
    -----------------------------------
    phys : Out(range(N))
        The current tap's word in the circular buffer.
    lim_same : Out
        ``boundary + N``: the writer, in the reader's frame, may write in-frame words below it.
    lim_next : Out, signed
        ``boundary + N − F``: the same for a writer one frame ahead.

    Every output is a register (``phys`` plus a modular add of the output group's offset when grouped).
    """

    def __init__(self, geometry: WindowGeometry, words: int | None = None):
        if geometry.is_pointwise:
            raise ValueError(f"LineBufferAddressGenerator needs a sliding window, not the pointwise {geometry!r}")
        if not all(p < k for p, k in zip(geometry.padding, geometry.kernel)):
            # a window then may lie wholly in the padding, and its corner beyond the map's edge
            raise ValueError(f"LineBufferAddressGenerator needs padding smaller than the kernel, not {geometry!r}")
        size = line_buffer_size(geometry)
        if words is None:
            words = size.words
        if isinstance(words, bool) or not isinstance(words, int) or not size.min_words <= words <= size.frame_words:
            raise ValueError(f"line buffer words must be an integer in {size.min_words} … {size.frame_words} "
                             f"for {geometry!r}, not {words!r}")
        self.words = words
        super().__init__(geometry)

    def extra_members(self) -> dict:
        n, f = self.words, self.geometry.frame_words
        return {"phys": Out(range(n)), "lim_same": Out(range(n, f + n + 1)), "lim_next": Out(range(n - f, n + 1))}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self, 'geometry', '?')!r}, words={getattr(self, 'words', '?')})"

    def frame_address(self, m: Module, step, jc) -> None:
        super().frame_address(m, step, jc)
        geo = self.geometry
        n, f = self.words, geo.frame_words
        (_h, w), (sh, sw), (ph, pw) = geo.in_hw, geo.stride, geo.padding
        ho, wo = geo.out_hw
        jn = geo.channel_words
        ih0, iw0 = self._corner
        # ---- physical addresses: the conv generator's registers, modulo N, plus a frame's offset
        a_lo = (-ph * w - pw) * jn
        p_line, p_pix, p_row, p_tap, p_local = (Signal(range(n), init=a_lo % n, name=f"p_{s}")
                                                for s in ("line", "pix", "row", "tap", "local"))
        if self._gofs is None:
            m.d.comb += self.phys.eq(p_local)
        else:
            s = Signal(range(2 * n))
            m.d.comb += [s.eq(p_local + self._gofs), self.phys.eq(Mux(s >= n, s - n, s))]
        with m.If(self.issue):
            with m.If(step[0]):
                m.d.sync += p_local.eq(_mod_add(p_local, 1, n))
            with m.Elif(step[1]):
                m.d.sync += [p.eq(_mod_add(p_tap, jn, n)) for p in (p_tap, p_local)]
            with m.Elif(step[2]):
                m.d.sync += [p.eq(_mod_add(p_row, w * jn, n)) for p in (p_row, p_tap, p_local)]
            with m.Elif(step[3]):
                m.d.sync += [p.eq(p_pix) for p in (p_row, p_tap, p_local)]
            with m.Elif(step[4]):
                m.d.sync += [p.eq(_mod_add(p_pix, sw * jn, n)) for p in (p_pix, p_row, p_tap, p_local)]
            with m.Elif(step[5]):
                m.d.sync += [p.eq(_mod_add(p_line, sh * w * jn, n)) for p in (p_line, p_pix, p_row, p_tap, p_local)]
            with m.Else():  # the next frame's first window: F words on from this frame's
                m.d.sync += [p.eq(_mod_add(p_line, f - (ho - 1) * sh * w * jn, n))
                             for p in (p_line, p_pix, p_row, p_tap, p_local)]
        # ---- the boundary (module docstring), stepped with the window's corner; bnd_row: its row part
        bnd, bnd_row = Signal(range(f + 1)), Signal(range(f + 1))
        lim_same, lim_next = Signal.like(self.lim_same, init=n), Signal.like(self.lim_next, init=n - f)
        m.d.comb += [self.lim_same.eq(lim_same), self.lim_next.eq(lim_next)]
        # the first positive corner column / row (the one step that leaves the left / top padding)
        c0 = (pw // sw + 1) * sw - pw
        r0 = (ph // sh + 1) * sh - ph
        nxt = Signal.like(bnd)
        with m.If(self.issue & (step[4] | step[5] | step[6])):
            m.d.sync += [bnd.eq(nxt), lim_same.eq(nxt + n), lim_next.eq(nxt + (n - f))]
        with m.If(step[4]):
            with m.If(ih0 < 0):
                m.d.comb += nxt.eq(0)
            with m.Elif(iw0 + sw <= 0):
                m.d.comb += nxt.eq(bnd_row)
            with m.Elif(iw0 <= 0):
                m.d.comb += nxt.eq(bnd_row + c0 * jn)
            with m.Else():
                m.d.comb += nxt.eq(bnd + sw * jn)
        with m.Elif(step[5]):
            row_next = Signal.like(bnd_row)
            with m.If(ih0 + sh <= 0):
                m.d.comb += row_next.eq(0)
            with m.Elif(ih0 <= 0):
                m.d.comb += row_next.eq(r0 * w * jn)
            with m.Else():
                m.d.comb += row_next.eq(bnd_row + sh * w * jn)
            m.d.comb += nxt.eq(row_next)
            with m.If(self.issue):
                m.d.sync += bnd_row.eq(row_next)
        with m.Elif(step[6]):
            m.d.comb += nxt.eq(0)
            with m.If(self.issue):
                m.d.sync += bnd_row.eq(0)
