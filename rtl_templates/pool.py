"""Max-pool and sum-pool (``avgpool``: the window sum, docs/SEMANTICS.md) on an HWC stream.

Two engines:

* :class:`PoolEngine`, for non-overlapping windows without padding (stride =
  kernel, the usual 2×2/2), one beat per clock: a row of ``Wo·C`` running
  results is all the buffering needed (a line buffer of one output row).
  Each element updates the running max/sum of its window; the element that
  completes a window emits the result, so outputs leave in HWC order one
  clock after their last input.
* :class:`WindowPoolEngine`, for any stride and padding: the map is written
  into a two-bank frame memory (one bank fills while the other is read), and
  a reader walks every tap of every window in HWC output order, one tap per
  clock, as soon as the tap's element has been written. Padding taps read
  nothing: they add 0 to a sum and never win a max.

Rows and columns past the last full window are dropped (floor mode, as torch).

Vector streams (``vec`` > 1, :mod:`bitspike.gen.folding`): a beat carries
``vec`` consecutive channels of one pixel, in and out alike (``vec`` divides
the channels), so the engines step channel groups where they stepped
channels: the row or frame memory holds one beat per word, and ``vec``
reductions work side by side. A pool on a vector stream thus takes a beat per
clock, not an element, and passes the producer's beats on to the consumer
unchanged in shape.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitspike.ranges import Range

from .neuron import check_vec, shape_of, vector_shape
from .synapse import TapSignature

__all__ = ["PoolEngine", "WindowPoolEngine", "pool_reference"]


def pool_reference(values, shape, kernel, stride, kind: str, padding=(0, 0)) -> list[int]:
    """Reference model: HWC stream in (``shape`` = [C, H, W]) → HWC stream out.

    Padding positions are left out of the window: they add 0 to a sum and never win a max.
    """
    c, h, w = shape
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    grid = [[[values[(y * w + x) * c + ch] for ch in range(c)] for x in range(w)] for y in range(h)]
    out = []
    for oy in range(ho):
        for ox in range(wo):
            for ch in range(c):
                win = [grid[y][x][ch] for dy in range(kh) for dx in range(kw)
                       if 0 <= (y := oy * sh - ph + dy) < h and 0 <= (x := ox * sw - pw + dx) < w]
                out.append(max(win) if kind == "maxpool" else sum(win))
    return out



def _pool_members(x_range, out_range, debug_taps: bool, vec: int = 1) -> dict:
    """The ports both pool engines have: the input and output streams (``vec`` elements per beat), and the
    debug taps when asked (a beat's elements together)."""
    members = {"x": In(stream.Signature(vector_shape(shape_of(x_range), vec))),
               "y": Out(stream.Signature(vector_shape(shape_of(out_range), vec)))}
    if debug_taps:
        members["tap_x"] = Out(TapSignature(x_range.width, x_range.signed, lanes=vec))
        members["tap_out"] = Out(TapSignature(out_range.width, out_range.signed, lanes=vec))
    return members


def _check_pool_vec(vec, channels: int, who: str) -> None:
    """Refuse a beat width that is not a positive divisor of the channels (a beat never spans two pixels)."""
    check_vec(vec, who)
    if channels % vec:
        raise ValueError(f"{who} vec {vec} must divide the {channels} channels (a beat holds channels of one pixel)")


def _lanes(value, vec: int) -> list:
    """The elements of a beat-wide value: the value itself on a scalar stream, else its ``vec`` array elements."""
    return [value] if vec == 1 else [value[j] for j in range(vec)]

class PoolEngine(wiring.Component):
    """Streaming max/sum pool.

    Parameters
    ----------
    kind
        ``"maxpool"`` or ``"avgpool"`` (window sum).
    shape
        Input ``(C, H, W)``.
    kernel, stride
        ``(h, w)``; stride must equal kernel.
    x_range, out_range
        Analysed ranges of input and output currents.
    vec
        Elements per beat of ``x`` and ``y`` (a vector stream: consecutive channels of one pixel;
        it divides the channels). 1: one value per beat.
    fast_paths
        Read the row memory a beat ahead into a register instead of combinationally at the beat:
        the row word of the beat after the accepted one is read (or, when it is the word being written,
        the value written) while the accepted one is taken, and
        the row addresses are registers stepped by constants (the address of the next beat, and of
        the current one for the write). The same results at the same clocks; off by default (the
        Verilog is then as without it).
    row_block
        Keep the row memory in block RAM: the word is read a beat ahead as with ``fast_paths``, through a
        synchronous port (transparent to the write) whose output register is the word register, so Yosys
        can map it to a block RAM. For families without LUT RAM (iCE40), where an asynchronous read makes
        the row a memory of flip-flops (about 2,200 LUTs and flip-flops for a 224 × 8-bit row). The same
        results at the same clocks.
    """

    def __init__(self, *, kind: str, shape, kernel, stride, x_range: Range, out_range: Range, debug_taps: bool = False,
                 vec: int = 1, fast_paths: bool = False, row_block: bool = False):
        if kind not in ("maxpool", "avgpool"):
            raise ValueError(f"PoolEngine kind must be 'maxpool' or 'avgpool', not {kind!r}")
        if tuple(kernel) != tuple(stride):
            raise ValueError(f"PoolEngine supports non-overlapping windows only (stride = kernel), "
                             f"got kernel {list(kernel)} and stride {list(stride)}")
        self.kind, self.shape, self.kernel, self.stride = kind, tuple(shape), tuple(kernel), tuple(stride)
        c, h, w = self.shape
        self.out_hw = ((h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1)
        if min(self.out_hw) < 1:
            raise ValueError(f"pool window {list(kernel)} does not fit a {h}x{w} map")
        _check_pool_vec(vec, c, "PoolEngine")
        self.x_range, self.out_range, self.debug_taps, self.vec = x_range, out_range, debug_taps, vec
        self.fast_paths = bool(fast_paths)
        self.row_block = bool(row_block)
        super().__init__(_pool_members(x_range, out_range, debug_taps, vec))

    def row_addresses(self) -> list[int]:
        """The row word each beat of an input row reads and writes (``col·C + ch``, beats of a pixel
        ``C``): the same for every row, so the beats' addresses repeat with a period of one input row."""
        c, _h, w = self.shape
        c //= self.vec
        kw = self.kernel[1]
        return [(x // kw) * c + ch for x in range(w) for ch in range(c)]

    def __repr__(self) -> str:
        vec = f", vec={self.vec}" if getattr(self, "vec", 1) != 1 else ""
        return f"PoolEngine(kind={self.kind!r}, shape={self.shape}, kernel={self.kernel}, stride={self.stride}{vec})"

    def elaborate(self, platform):
        m = Module()
        C, H, W = self.shape
        V = self.vec
        C = C // V  # beats per pixel: the odometer steps channel groups
        KH, KW = self.kernel
        HO, WO = self.out_hw
        ch = Signal(range(C))
        wk, col = Signal(range(KW)), Signal(range(WO + 1))
        hk, band = Signal(range(KH)), Signal(range(HO + 1))
        wpos, hpos = Signal(range(W)), Signal(range(H))
        # fast_paths: distributed RAM (Yosys would otherwise fold the word register into a block RAM's
        # synchronous read, whose output has no register: 5.8 ns clock to out on ECP5)
        row = memory.Memory(shape=vector_shape(shape_of(self.out_range), V), depth=WO * C, init=[],
                            **({"attrs": {"ram_style": "distributed"}} if self.fast_paths and not self.row_block
                               else {}))
        m.submodules.row = row
        # (the plain engine's ports, statements and their order as before fast_paths: its Verilog is unchanged)
        rrd = None if self.fast_paths or self.row_block else row.read_port(domain="comb")
        rwr = row.write_port()
        in_window = Signal()
        first, final = Signal(), Signal()
        new = Signal(vector_shape(shape_of(self.out_range), V))
        m.d.comb += [
            in_window.eq((col < WO) & (band < HO)),
            first.eq((hk == 0) & (wk == 0)),
            final.eq((hk == KH - 1) & (wk == KW - 1)),
            *([] if rrd is None else [rrd.addr.eq(col * C + ch), rwr.addr.eq(col * C + ch)]),
            rwr.data.eq(new),
            self.x.ready.eq(~self.y.valid | self.y.ready),
        ]
        row_word = self._row_ahead(m, row, rwr, self.x.valid & self.x.ready) if rrd is None else rrd.data
        x = self.x.payload
        for n, xe, r in zip(_lanes(new, V), _lanes(x, V), _lanes(row_word, V)):
            if self.kind == "maxpool":
                m.d.comb += n.eq(Mux(first | (xe > r), xe, r))
            else:
                m.d.comb += n.eq(Mux(first, xe, r + xe))
        accept = self.x.valid & self.x.ready
        emit = Signal()
        m.d.comb += emit.eq(accept & in_window & final)
        with m.If(self.y.valid & self.y.ready):
            m.d.sync += self.y.valid.eq(0)
        with m.If(emit):
            m.d.sync += [self.y.payload.eq(new), self.y.valid.eq(1)]
        with m.If(accept & in_window & ~final):
            m.d.comb += rwr.en.eq(1)
        with m.If(accept):
            # odometer over (h, w, c) with the window position (band/hk, col/wk) alongside
            m.d.sync += ch.eq(Mux(ch == C - 1, 0, ch + 1))
            with m.If(ch == C - 1):
                m.d.sync += [wpos.eq(Mux(wpos == W - 1, 0, wpos + 1)), wk.eq(Mux(wk == KW - 1, 0, wk + 1))]
                with m.If(wk == KW - 1):
                    m.d.sync += col.eq(col + 1)
                with m.If(wpos == W - 1):
                    m.d.sync += [wk.eq(0), col.eq(0), hpos.eq(Mux(hpos == H - 1, 0, hpos + 1)),
                                 hk.eq(Mux(hk == KH - 1, 0, hk + 1))]
                    with m.If(hk == KH - 1):
                        m.d.sync += band.eq(band + 1)
                    with m.If(hpos == H - 1):
                        m.d.sync += [hk.eq(0), band.eq(0)]
        if self.debug_taps:
            m.d.comb += [self.tap_x.payload.eq(x), self.tap_x.valid.eq(accept),
                         self.tap_out.payload.eq(new), self.tap_out.valid.eq(emit)]
        return m

    def _row_ahead(self, m: Module, row, rwr, accept):
        """``fast_paths``: the row word of the current beat, from a register read the beat before.

        ``here``/``ahead`` are the row addresses of the current beat and the next one (of one input row's
        period, :meth:`row_addresses`); ``step`` is where ``ahead`` stands in that period. On each accepted
        beat the register takes the word at ``ahead`` (or this clock's write to it: the next beat may
        read the word this one writes; no other write comes before the next beat is taken), and
        ``here`` takes ``ahead``'s value. The first beat of a window ignores the word (``first``), so
        the port's contents before the first beat do not matter."""
        seq = self.row_addresses()
        period = len(seq)
        hi = max(seq)  # a row's pixels past the last window (col = WO) have addresses past the memory: unused
        here = Signal(range(hi + 1), name="row_here")
        ahead = Signal(range(hi + 1), init=seq[1 % period], name="row_ahead")
        step = Signal(range(period), init=1 % period, name="row_step")  # the position of `ahead` in the period
        if self.row_block:
            # a synchronous port, enabled by the accepted beat: its output register is the word register
            rrd = row.read_port(transparent_for=(rwr,))
            m.d.comb += [rrd.en.eq(accept), rrd.addr.eq(ahead), rwr.addr.eq(here)]
            word = rrd.data
        else:
            # an asynchronous read (distributed RAM, as the plain engine's) into a register of our own
            rrd = row.read_port(domain="comb")
            word = Signal.like(rrd.data, name="row_word")
            m.d.comb += [rrd.addr.eq(ahead), rwr.addr.eq(here)]
            with m.If(accept):
                m.d.sync += word.eq(Mux(rwr.en & (ahead == here), rwr.data, rrd.data))
        with m.If(accept):
            m.d.sync += [here.eq(ahead), step.eq(Mux(step == period - 1, 0, step + 1))]
            self._step_ahead(m, ahead, step)
        return word

    def _step_ahead(self, m: Module, ahead, step):
        """``ahead += deltas[step]``: +1 within a pixel and into the next window; back to the window's
        first beat at a pixel's end inside a window; to 0 at the row's end (flags from ``step``'s
        position within the pixel and the row, compared with constants)."""
        c, _h, w = self.shape
        c //= self.vec
        kw = self.kernel[1]
        period = w * c
        ch_end = Signal(name="row_ch_end")  # ahead is a pixel's last beat
        wk_end = Signal(name="row_wk_end")  # ... of a window's last column
        row_end = Signal(name="row_end")  # ... of the row's last pixel
        ch_a = Signal(range(c), init=1 % c, name="row_ch")
        wk_a = Signal(range(kw), init=(1 // c) % kw, name="row_wk")
        m.d.comb += [ch_end.eq(ch_a == c - 1), wk_end.eq(wk_a == kw - 1), row_end.eq(step == period - 1)]
        m.d.sync += ch_a.eq(Mux(ch_end, 0, ch_a + 1))
        with m.If(ch_end):
            m.d.sync += wk_a.eq(Mux(wk_end | row_end, 0, wk_a + 1))
        with m.If(row_end):
            m.d.sync += ahead.eq(0)
        with m.Elif(ch_end & ~wk_end):
            m.d.sync += ahead.eq(ahead - (c - 1))
        with m.Else():
            m.d.sync += ahead.eq(ahead + 1)


class WindowPoolEngine(wiring.Component):
    """Max/sum pool of any stride and padding, from a two-bank frame memory.

    Parameters
    ----------
    kind
        ``"maxpool"`` or ``"avgpool"`` (window sum).
    shape
        Input ``(C, H, W)``.
    kernel, stride, padding
        ``(h, w)`` each; padding smaller than the kernel (every window holds an element of the map).
    x_range, out_range
        Analysed ranges of input and output currents.
    vec
        Elements per beat of ``x`` and ``y`` (consecutive channels of one pixel; it divides the
        channels): the memory holds a beat per word and the reader a channel group per tap.

    The writer stores element n of a frame at ``bank·N + n`` (N = C·H·W) and
    takes a new element unless both banks hold frames not yet read. The
    reader issues one window tap per clock, in HWC output order with the
    kernel taps innermost, once the tap's element is in (padding taps at
    once; the frame's last tap only once the whole frame is in, so that the
    reader never runs ahead into a frame not yet begun). The memory answers
    the clock after; the running max/sum is updated then, and a window's
    last tap puts the result on ``y``. The reader stalls while a result
    waits on ``y``.
    """

    def __init__(self, *, kind: str, shape, kernel, stride, padding=(0, 0), x_range: Range, out_range: Range,
                 debug_taps: bool = False, vec: int = 1):
        if kind not in ("maxpool", "avgpool"):
            raise ValueError(f"WindowPoolEngine kind must be 'maxpool' or 'avgpool', not {kind!r}")
        self.kind, self.shape = kind, tuple(shape)
        self.kernel, self.stride, self.padding = tuple(kernel), tuple(stride), tuple(padding)
        c, h, w = self.shape
        if min(self.kernel) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"WindowPoolEngine kernel and stride must be positive and padding non-negative, got "
                             f"kernel {list(kernel)}, stride {list(stride)}, padding {list(padding)}")
        if self.padding[0] >= self.kernel[0] or self.padding[1] >= self.kernel[1]:
            raise ValueError(f"WindowPoolEngine padding {list(padding)} must be smaller than the kernel {list(kernel)}")
        self.out_hw = ((h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1,
                       (w + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1)
        if min(self.out_hw) < 1:
            raise ValueError(f"pool window {list(kernel)} with padding {list(padding)} does not fit a {h}x{w} map")
        _check_pool_vec(vec, c, "WindowPoolEngine")
        self.x_range, self.out_range, self.debug_taps, self.vec = x_range, out_range, debug_taps, vec
        super().__init__(_pool_members(x_range, out_range, debug_taps, vec))

    def __repr__(self) -> str:
        vec = f", vec={self.vec}" if getattr(self, "vec", 1) != 1 else ""
        return (f"WindowPoolEngine(kind={self.kind!r}, shape={self.shape}, kernel={self.kernel}, "
                f"stride={self.stride}, padding={self.padding}{vec})")

    def elaborate(self, platform):
        m = Module()
        C, H, W = self.shape
        V = self.vec
        C = C // V  # beats per pixel: element n below is beat n, a channel group
        KH, KW = self.kernel
        SH, SW = self.stride
        PH, PW = self.padding
        HO, WO = self.out_hw
        N = C * H * W
        frame = memory.Memory(shape=vector_shape(shape_of(self.x_range), V), depth=2 * N, init=[])
        m.submodules.frame = frame
        wr = frame.write_port()
        rd = frame.read_port(transparent_for=())

        # ---- writer: element wcount of the frame in bank wbank
        wcount = Signal(range(N + 1))
        wbank = Signal()
        ahead = Signal(range(3))  # frames written completely but not yet read out (0, 1 or 2)
        x = self.x.payload
        accept = self.x.valid & self.x.ready
        w_done = Signal()
        m.d.comb += [
            self.x.ready.eq(ahead < 2),
            wr.addr.eq(Mux(wbank, N, 0) + wcount),
            wr.data.eq(x),
            wr.en.eq(accept),
            w_done.eq(accept & (wcount == N - 1)),
        ]
        with m.If(accept):
            m.d.sync += wcount.eq(Mux(wcount == N - 1, 0, wcount + 1))
            with m.If(wcount == N - 1):
                m.d.sync += wbank.eq(~wbank)

        # ---- reader: odometer over (oy, ox, c, dy, dx)
        oy, ox = Signal(range(HO)), Signal(range(WO))
        ch, dy, dx = Signal(range(C)), Signal(range(KH)), Signal(range(KW))
        rbank = Signal()
        iy = Signal(signed(max(H, HO * SH + KH).bit_length() + 2))
        ix = Signal(signed(max(W, WO * SW + KW).bit_length() + 2))
        inside = Signal()
        index = Signal(range(N))
        m.d.comb += [
            iy.eq(oy * SH + dy - PH),
            ix.eq(ox * SW + dx - PW),
            inside.eq((iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)),
            index.eq(Mux(inside, (iy * W + ix) * C + ch, 0)),
        ]
        first_tap = (dy == 0) & (dx == 0)
        last_tap = (dy == KH - 1) & (dx == KW - 1)
        frame_end = Signal()
        m.d.comb += frame_end.eq(last_tap & (ch == C - 1) & (ox == WO - 1) & (oy == HO - 1))
        # the tap's element is in: its frame is complete, or it is already written in the frame being filled
        available = Signal()
        m.d.comb += available.eq(Mux(frame_end, ahead != 0, (ahead != 0) | ~inside | (index < wcount)))

        # stage 1: the tap issued last clock, its memory word now on rd.data
        s1_valid, s1_inside, s1_first, s1_last = Signal(), Signal(), Signal(), Signal()
        advance = Signal()
        m.d.comb += advance.eq(~(s1_valid & s1_last & self.y.valid & ~self.y.ready))
        issue = Signal()
        m.d.comb += [
            issue.eq(advance & available),
            rd.addr.eq(Mux(rbank, N, 0) + index),
            rd.en.eq(advance),
        ]
        r_done = Signal()
        m.d.comb += r_done.eq(issue & frame_end)
        with m.If(advance):
            m.d.sync += [s1_valid.eq(issue), s1_inside.eq(inside), s1_first.eq(first_tap), s1_last.eq(last_tap)]
        with m.If(issue):
            m.d.sync += dx.eq(Mux(dx == KW - 1, 0, dx + 1))
            with m.If(dx == KW - 1):
                m.d.sync += dy.eq(Mux(dy == KH - 1, 0, dy + 1))
                with m.If(dy == KH - 1):
                    m.d.sync += ch.eq(Mux(ch == C - 1, 0, ch + 1))
                    with m.If(ch == C - 1):
                        m.d.sync += ox.eq(Mux(ox == WO - 1, 0, ox + 1))
                        with m.If(ox == WO - 1):
                            m.d.sync += oy.eq(Mux(oy == HO - 1, 0, oy + 1))
                            with m.If(oy == HO - 1):
                                m.d.sync += rbank.eq(~rbank)
        with m.If(w_done & ~r_done):
            m.d.sync += ahead.eq(ahead + 1)
        with m.Elif(~w_done & r_done):
            m.d.sync += ahead.eq(ahead - 1)

        # the running result of the window; `have` says it holds an element (a max ignores padding)
        acc = Signal(vector_shape(shape_of(self.out_range), V))
        have = Signal()
        new = Signal(vector_shape(shape_of(self.out_range), V))
        value = rd.data
        had = Signal()
        m.d.comb += had.eq(have & ~s1_first)
        for n, ve, a in zip(_lanes(new, V), _lanes(value, V), _lanes(acc, V)):
            if self.kind == "maxpool":
                m.d.comb += n.eq(Mux(s1_inside & (~had | (ve > a)), ve, a))
            else:
                m.d.comb += n.eq(Mux(s1_first, 0, a) + Mux(s1_inside, ve, 0))
        consume = Signal()
        emit = Signal()
        m.d.comb += [consume.eq(s1_valid & advance), emit.eq(consume & s1_last)]
        with m.If(consume):
            m.d.sync += [acc.eq(new), have.eq(had | s1_inside)]
        with m.If(self.y.valid & self.y.ready):
            m.d.sync += self.y.valid.eq(0)
        with m.If(emit):
            m.d.sync += [self.y.payload.eq(new), self.y.valid.eq(1)]
        if self.debug_taps:
            m.d.comb += [self.tap_x.payload.eq(x), self.tap_x.valid.eq(accept),
                         self.tap_out.payload.eq(new), self.tap_out.valid.eq(emit)]
        return m
