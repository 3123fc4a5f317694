"""Max-pool and sum-pool (``avgpool``: the window sum, docs/SEMANTICS.md) on an HWC stream, one element per clock.

Windows must not overlap (stride = kernel, the usual 2×2/2): then a row of
``Wo·C`` running results is all the buffering needed (a line buffer of one
output row). Each element updates the running max/sum of its window; the
element that completes a window emits the result, so outputs leave in HWC
order one clock after their last input. Rows and columns past the last full
window are dropped (floor mode, as torch).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from bitspike.analysis import Range

from .neuron import shape_of
from .synapse import TapSignature

__all__ = ["PoolEngine", "pool_reference"]


def pool_reference(values, shape, kernel, stride, kind: str) -> list[int]:
    """Reference model: HWC stream in (``shape`` = [C, H, W]) → HWC stream out."""
    c, h, w = shape
    kh, kw = kernel
    sh, sw = stride
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    grid = [[[values[(y * w + x) * c + ch] for ch in range(c)] for x in range(w)] for y in range(h)]
    out = []
    for oy in range(ho):
        for ox in range(wo):
            for ch in range(c):
                win = [grid[oy * sh + dy][ox * sw + dx][ch] for dy in range(kh) for dx in range(kw)]
                out.append(max(win) if kind == "maxpool" else sum(win))
    return out


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
    """

    def __init__(self, *, kind: str, shape, kernel, stride, x_range: Range, out_range: Range, debug_taps: bool = False):
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
        self.x_range, self.out_range, self.debug_taps = x_range, out_range, debug_taps
        members = {"x": In(stream.Signature(shape_of(x_range))), "y": Out(stream.Signature(shape_of(out_range)))}
        if debug_taps:
            members["tap_x"] = Out(TapSignature(x_range.width, x_range.signed))
            members["tap_out"] = Out(TapSignature(out_range.width, out_range.signed))
        super().__init__(members)

    def __repr__(self) -> str:
        return f"PoolEngine(kind={self.kind!r}, shape={self.shape}, kernel={self.kernel}, stride={self.stride})"

    def elaborate(self, platform):
        m = Module()
        C, H, W = self.shape
        KH, KW = self.kernel
        HO, WO = self.out_hw
        ch = Signal(range(C))
        wk, col = Signal(range(KW)), Signal(range(WO + 1))
        hk, band = Signal(range(KH)), Signal(range(HO + 1))
        wpos, hpos = Signal(range(W)), Signal(range(H))
        row = memory.Memory(shape=shape_of(self.out_range), depth=WO * C, init=[])
        m.submodules.row = row
        rrd = row.read_port(domain="comb")
        rwr = row.write_port()
        in_window = Signal()
        first, final = Signal(), Signal()
        new = Signal(shape_of(self.out_range))
        m.d.comb += [
            in_window.eq((col < WO) & (band < HO)),
            first.eq((hk == 0) & (wk == 0)),
            final.eq((hk == KH - 1) & (wk == KW - 1)),
            rrd.addr.eq(col * C + ch),
            rwr.addr.eq(col * C + ch),
            rwr.data.eq(new),
            self.x.ready.eq(~self.y.valid | self.y.ready),
        ]
        x = self.x.payload
        if self.kind == "maxpool":
            m.d.comb += new.eq(Mux(first | (x > rrd.data), x, rrd.data))
        else:
            m.d.comb += new.eq(Mux(first, x, rrd.data + x))
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
