"""The pooling ops: ``maxpool`` (window max) and ``avgpool`` (window *sum*), any stride, optional padding.

Manifest: ``kernel``, ``stride`` and ``padding`` (each ``[h, w]``; padding
smaller than the kernel, so that every window holds at least one element of
the map; ``padding`` may be left out when it is ``[0, 0]``). Windows start at
``oy·stride − padding`` and the output has ``(H + 2·padding − kernel) //
stride + 1`` rows (floor mode, as torch: rows and columns past the last full
window are dropped).

The integer contract of the padding:

* ``avgpool`` outputs the window sum, and a padding position adds 0. The
  1/n of average pooling lives in the consumer's unit with n = kh·kw, the
  *full* window (torch's ``count_include_pad=True``): a border window sums
  fewer elements but is divided by the same n. So the hardware never
  divides and every output is an exact integer.
* ``maxpool`` leaves padding positions out: the output is the max of the
  window's elements inside the map (as torch, which pads with −∞). Every
  window holds one, because padding < kernel.

Range rule: max keeps the input range; a sum of m elements lies in
[m·lo, m·hi], taken over the element counts m the windows actually have
(all windows have kh·kw without padding).

Hardware: without padding and with stride = kernel, the streaming
:class:`~bitspike.rtl_templates.pool.PoolEngine` (one row of running
results). Otherwise :class:`~bitspike.rtl_templates.pool.WindowPoolEngine`:
the map goes into a two-bank frame memory and a reader walks every window
tap, one per clock, as soon as its element has arrived.

Vector streams (:mod:`bitspike.gen.folding`): a pool between two engines
that take vectors passes them through, a pixel's ``vec`` consecutive channels
per beat in and out (``vec_in`` = ``vec_out``, dividing the channels;
:attr:`PoolOp.vector_through`). Both engines then step channel groups: the
streaming one takes a beat per clock, the frame-buffer one reads a beat per
tap, so the busy cycles and the timing model count beats where they counted
elements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bitspike.gen.ir import PlanNode

from .base import Layer, Op, register_op

__all__ = ["PoolLayer", "MaxPoolLayer", "AvgPoolLayer", "PoolNode", "PoolOp", "pool", "window_counts"]


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


@dataclass(frozen=True, eq=False)
class PoolLayer(Layer):
    json_fields: ClassVar[tuple[str, ...]] = ("kernel", "stride", "padding")
    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)

    @property
    def window(self) -> int:
        return self.kernel[0] * self.kernel[1]

    def extra_json(self):
        out = {"kernel": list(self.kernel), "stride": list(self.stride)}
        if tuple(self.padding) != (0, 0):  # left out when zero: older manifests keep their bytes and digest
            out["padding"] = list(self.padding)
        return out

    def infer_out_shape(self, in_shapes, ctx):
        (shape,) = in_shapes
        if len(shape) != 3:
            raise ctx.fail("in_shape", f"{self.op} needs a [C, H, W] input, got {list(shape)}")
        c, h, w = shape
        ho = _out_size(h, self.kernel[0], self.stride[0], self.padding[0])
        wo = _out_size(w, self.kernel[1], self.stride[1], self.padding[1])
        if ho < 1 or wo < 1:
            raise ctx.fail("kernel", f"pool window {list(self.kernel)} does not fit input {h}×{w} "
                                     f"with padding {list(self.padding)}")
        return (c, ho, wo)

    @classmethod
    def parse(cls, meta, tensors, ctx, base):
        kernel = ctx.pair(meta, "kernel", 1, 64)
        stride = ctx.pair(meta, "stride", 1, 64)
        padding = ctx.pair(meta, "padding", 0, 64) if "padding" in meta else (0, 0)
        if padding[0] >= kernel[0] or padding[1] >= kernel[1]:
            raise ctx.fail("padding", f"padding {list(padding)} must be smaller than the kernel {list(kernel)} "
                                      "(every window must hold an element of the map)")
        return cls(**base, kernel=kernel, stride=stride, padding=padding)


@dataclass(frozen=True, eq=False)
class MaxPoolLayer(PoolLayer):
    """Window max; padding positions never win."""

    op: ClassVar[str] = "maxpool"


@dataclass(frozen=True, eq=False)
class AvgPoolLayer(PoolLayer):
    """Sum pooling: outputs the window sum (padding adds 0); the 1/n lives in the consumer's unit."""

    op: ClassVar[str] = "avgpool"


def window_counts(size: int, kernel: int, stride: int, padding: int) -> list[int]:
    """Elements of the map inside each window along one axis."""
    n = _out_size(size, kernel, stride, padding)
    return [min(size, o * stride - padding + kernel) - max(0, o * stride - padding) for o in range(n)]


def pool(layer: PoolLayer, x):
    """Max-pool (window max) or avgpool (window sum) of integer currents ``[N, C, H, W]`` (int64).

    Padding adds 0 to a sum and never wins a max (it is filled with the smallest int64, and every
    window holds an element of the map). The max is taken on the integers themselves: torch's
    max_pool2d has no int64 kernel, and float64 would round above 2**53.
    """
    import torch

    ph, pw = layer.padding
    is_max = layer.op == "maxpool"
    if (ph, pw) != (0, 0):
        n, c, h, w = x.shape
        fill = torch.iinfo(torch.int64).min if is_max else 0
        padded = torch.full((n, c, h + 2 * ph, w + 2 * pw), fill, dtype=x.dtype)
        padded[:, :, ph:ph + h, pw:pw + w] = x
        x = padded
    windows = x.unfold(2, layer.kernel[0], layer.stride[0]).unfold(3, layer.kernel[1], layer.stride[1])
    return windows.amax(dim=(-1, -2)) if is_max else windows.sum(dim=(-1, -2))


@dataclass(frozen=True)
class PoolNode(PlanNode):
    """A pool engine over an ``in_hw`` map of ``in_features`` channels."""

    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    # --fast-paths: the streaming engine reads its row memory a beat ahead into a register
    # (bitspike.rtl_templates.pool.PoolEngine's fast_paths; the same clocks)
    fast_paths: bool = False
    # the streaming engine's row memory in block RAM, read a beat ahead through a synchronous port (set by the
    # planner for families without LUT RAM, iCE40: there an asynchronous read is a memory of flip-flops)
    row_block: bool = False

    @property
    def streaming(self) -> bool:
        """Non-overlapping windows without padding: the row-buffer engine, one clock per element."""
        return self.kernel == self.stride and self.padding == (0, 0)

    @property
    def taps_per_frame(self) -> int:
        """Window taps the frame-buffer engine reads per inference, one per clock (a tap reads a beat:
        ``vec_in`` channels)."""
        return self.out_hw[0] * self.out_hw[1] * (self.out_features // self.vec_in) * self.kernel[0] * self.kernel[1]


class PoolOp(Op):
    """Shared by both pools; the two instances differ only in ``name`` and the reduction."""

    reserved_dsps = 2  # the engine's address arithmetic
    vector_through = True  # a vector stream's beats pass through: as many channels per beat out as in

    def __init__(self, name: str, layer_cls: type[PoolLayer]):
        self.name = name  # type: ignore[misc]
        self.layer_cls = layer_cls  # type: ignore[misc]

    def ranges(self, layer, inputs):
        from bitspike.ranges import LayerRanges, Range

        x = inputs[0]
        if layer.op == "maxpool":
            return LayerRanges(layer.name, layer.op, x, x)
        c, h, w = layer.in_shape
        rows = window_counts(h, layer.kernel[0], layer.stride[0], layer.padding[0])
        cols = window_counts(w, layer.kernel[1], layer.stride[1], layer.padding[1])
        ms = (min(rows) * min(cols), max(rows) * max(cols))  # fewest and most elements a window sums
        return LayerRanges(layer.name, layer.op, x, Range(min(m * x.lo for m in ms), max(m * x.hi for m in ms)))

    def forward(self, model, layer, xs, trace):
        from bitspike.ops.kernels import LayerTrace

        x = xs[0]
        r = model.ranges[layer.name]
        model.check(layer, "x", x, r.x)
        out = pool(layer, x)
        model.check(layer, "out", out, r.out)
        return out, (LayerTrace(layer.name, layer.op, x, out) if trace else None)

    def plan(self, index, layer, r, manifest):
        from bitspike.gen.ir import safe_name

        c = layer.in_shape[0]
        return PoolNode(index=index, name=layer.name, op=layer.op, engine=f"e{index}_{safe_name(layer.name)}",
                        in_features=c, out_features=c, in_hw=tuple(layer.in_shape[1:]),
                        out_hw=tuple(layer.out_shape[1:]), kernel=tuple(layer.kernel), stride=tuple(layer.stride),
                        padding=tuple(layer.padding))

    def vector_unit(self, node, side):
        """A beat holds channels of one pixel, on either side: its width divides the channels."""
        return node.in_features

    def vector_fits(self, node):
        """The beats pass through: as many channels per beat out as in, dividing the channels."""
        return node.vec_in == node.vec_out and node.in_features % node.vec_in == 0

    def busy_cycles(self, node):
        return node.in_beats if node.streaming else max(node.in_beats, node.taps_per_frame)

    def estimate_luts(self, node):
        """The default's output register and compare/add, once per element of a beat."""
        return 40 + 3 * node.widths.get("out", 8) * node.vec_out

    def estimate_ffs(self, node):
        return 32 + 2 * (node.widths.get("x", 8) + node.widths.get("out", 8)) * node.vec_in

    def arrival_times(self, node, layer, plan, inputs):
        (arrivals,) = inputs
        C = node.in_features
        H, W = node.in_hw
        KH, KW = node.kernel
        out = []
        if node.streaming:
            # a window's result leaves the clock after its last element arrived (a beat's elements
            # arrive together and leave together)
            for oh in range(node.out_hw[0]):
                for ow in range(node.out_hw[1]):
                    for c in range(C):
                        last = ((oh * KH + KH - 1) * W + ow * KW + KW - 1) * C + c
                        out.append(arrivals[last] + 1)
            return out
        # frame-buffer engine: a tap issues one clock after its beat was written (padding taps at once),
        # the frame's last tap once the whole frame is in; the result leaves two clocks after its last tap
        never = -(10**9)
        t = -1
        SH, SW = node.stride
        PH, PW = node.padding
        V = node.vec_in
        for oh in range(node.out_hw[0]):
            for ow in range(node.out_hw[1]):
                for c in range(0, C, V):
                    for dy in range(KH):
                        iy = oh * SH - PH + dy
                        for dx in range(KW):
                            ix = ow * SW - PW + dx
                            inside = 0 <= iy < H and 0 <= ix < W
                            t = max(t + 1, arrivals[(iy * W + ix) * C + c] + 1 if inside else never)
                    out.extend([t + 2] * V)
        t_end = max(t, arrivals[-1] + 1)
        out[-1] = t_end + 2
        return out

    def memories(self, node):
        """The row buffer of the streaming engine (read without a clock; with ``row_block`` through a
        registered port), else the double-buffered frame; a word per beat (``vec_in`` elements)."""
        C, (H, W), V = node.in_features, node.in_hw, node.vec_in
        if node.streaming:
            return [(node.out_hw[1] * C // V, node.widths["out"] * V, "ram" if node.row_block else "async")]
        return [(2 * C * H * W // V, node.widths["x"] * V, "ram")]

    def build_engine(self, plan, node, layer, debug):
        from bitspike.rtl_templates.pool import PoolEngine, WindowPoolEngine

        r = plan.ranges[layer.name]
        vec = {"vec": node.vec_in} if node.vec_in != 1 else {}
        if node.streaming:
            fast = ({"fast_paths": True} if node.fast_paths else {}) | ({"row_block": True} if node.row_block else {})
            return PoolEngine(kind=layer.op, shape=layer.in_shape, kernel=node.kernel, stride=node.stride,
                              x_range=r.x, out_range=r.out, debug_taps=debug, **vec, **fast)
        return WindowPoolEngine(kind=layer.op, shape=layer.in_shape, kernel=node.kernel, stride=node.stride,
                                padding=node.padding, x_range=r.x, out_range=r.out, debug_taps=debug, **vec)

    def export_layer(self, node, ctx):
        k = node.kernel
        return self.layer_cls(name=node.name, inputs=(node.inputs[0],), in_shape=node.in_shape,
                              out_shape=node.out_shape, kernel=(k, k), stride=(k, k))

    def export_unit(self, node, producer, ctx):
        # a sum-pool's input unit is n times its output unit; a max keeps the unit
        n = node.kernel * node.kernel if self.name == "avgpool" else 1
        return ctx.units[node.name] * n

    def export_transparent(self, node):
        import math

        return math.ceil(math.log2(node.kernel * node.kernel)) if self.name == "avgpool" else 0

    def audit_step(self, layer, state):
        # both pools are monotone in every input: they map the interval's ends
        lo, hi = state.iv[layer.inputs[0]]
        state.iv[layer.name] = (pool(layer, lo), pool(layer, hi))


MAXPOOL = register_op(PoolOp("maxpool", MaxPoolLayer))
AVGPOOL = register_op(PoolOp("avgpool", AvgPoolLayer))
