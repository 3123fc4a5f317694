"""The ``conv2d`` op: a 2-D convolution synapse after the neuron (shared rules: :mod:`bitspike.ops.neuron`).

Manifest: ``kernel``, ``stride``, ``padding`` (each ``[h, w]``, padding
smaller than the kernel) and ``groups`` (optional, default 1 and then left
out of the JSON, so older manifests keep their bytes); ``NAME.weight`` is
``[out, in / groups, kh, kw]``. Grouped convolution as torch's: output
channel o reads only the input channels of its group ``o // (out / groups)``
(depthwise: ``groups`` = in channels). Golden sum: cross-correlation as
torch, with zero padding, by im2col and an int64 matmul per group. Hardware:
a :class:`~bitspike.rtl_templates.conv.ConvEngine` (window read out of a
line buffer, :mod:`bitspike.rtl_templates.linebuf`; padding taps read zero;
each group's channels start a new frame word, and a PE group never spans two
convolution groups, so a fold needs ``pes`` dividing out / groups and
``lanes`` at most in / groups).

The line buffer's plan: its size (:meth:`Conv2dOp.memories`, the report's
``line_buffer`` entry) and its timing (:meth:`Conv2dOp.arrival_times`): the
writer stalls while its word would overwrite one a pending window needs, so
the model replays writer and reader together (:func:`line_buffer_schedule`).
``Conv2dOp.line_buffer = False`` plans and builds the double-buffered whole
frame instead (the benchmarks' "before").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import MAX_DIM, register_op
from .neuron import SynapticLayer, SynapticNode, SynapticOp

__all__ = ["Conv2dLayer", "Conv2dNode", "Conv2dOp", "conv2d_int", "line_buffer_schedule"]


@dataclass(frozen=True, eq=False)
class Conv2dLayer(SynapticLayer):
    op: ClassVar[str] = "conv2d"
    json_fields: ClassVar[tuple[str, ...]] = SynapticLayer.json_fields + ("kernel", "stride", "padding", "groups")
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1

    @property
    def macs(self) -> int:
        _, ho, wo = self.out_shape
        return int(ho * wo * self.weight.size)

    def extra_json(self):
        out = super().extra_json()
        out.update(kernel=list(self.kernel), stride=list(self.stride), padding=list(self.padding))
        if self.groups != 1:  # absent means 1: a dense layer's JSON (and its digest) keeps its bytes
            out["groups"] = self.groups
        return out

    def infer_out_shape(self, in_shapes, ctx):
        (shape,) = in_shapes
        if len(shape) != 3:
            raise ctx.fail("in_shape", f"conv2d needs a [C, H, W] input, got {list(shape)}")
        c, h, w = shape
        if c % self.groups:
            raise ctx.fail("groups", f"groups {self.groups} does not divide the input's {c} channels")
        if c // self.groups != self.weight.shape[1]:
            per = "" if self.groups == 1 else f" per group ({self.groups} groups)"
            raise ctx.fail(
                f"{self.name}.weight",
                f"weight has {self.weight.shape[1]} input channels{per} but the input has {c // self.groups}{per}",
            )
        ho = (h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1
        if ho < 1 or wo < 1:
            raise ctx.fail("kernel", f"kernel {list(self.kernel)} does not fit input {h}×{w} with padding {list(self.padding)}")
        return (int(self.weight.shape[0]), ho, wo)

    @classmethod
    def parse(cls, meta, tensors, ctx, base):
        name = base["name"]
        kernel = ctx.pair(meta, "kernel", 1, 64)
        stride = ctx.pair(meta, "stride", 1, 64)
        padding = ctx.pair(meta, "padding", 0, 64)
        if padding[0] >= kernel[0] or padding[1] >= kernel[1]:
            raise ctx.fail("padding", f"padding {list(padding)} must be smaller than the kernel {list(kernel)}")
        groups = ctx.int_in(meta, "groups", 1, MAX_DIM) if "groups" in meta else 1
        if f"{name}.weight" not in tensors:
            raise ctx.fail(f"{name}.weight", "tensor missing from the file")
        wshape = tuple(tensors[f"{name}.weight"].shape)
        per = "in" if groups == 1 else "in / groups"
        if len(wshape) != 4 or tuple(wshape[2:]) != kernel:
            raise ctx.fail(
                f"{name}.weight", f"expected a [out, {per}, {kernel[0]}, {kernel[1]}] tensor, got shape {list(wshape)}"
            )
        if wshape[0] % groups:
            raise ctx.fail("groups", f"groups {groups} does not divide the {wshape[0]} output channels of {name}.weight")
        fields = cls._parse_neuron_and_synapse(meta, tensors, ctx, wshape, name)
        return cls(**base, kernel=kernel, stride=stride, padding=padding, groups=groups, **fields)



def conv2d_int(s, w, stride: tuple[int, int], padding: tuple[int, int], groups: int = 1):
    """Integer 2-D convolution (cross-correlation, as torch) of int64 ``[N, C, H, W]`` by im2col and an int64 matmul.

    ``w`` is ``[O, C / groups, kh, kw]``; with ``groups`` > 1 each group of ``O / groups`` outputs
    sees only its ``C / groups`` input channels (one matmul per group, exact in int64).
    """
    import torch

    if groups > 1:
        sc, so = s.shape[1] // groups, w.shape[0] // groups
        return torch.cat([conv2d_int(s[:, q * sc:(q + 1) * sc], w[q * so:(q + 1) * so], stride, padding)
                          for q in range(groups)], dim=1)
    n, c, h, wd = s.shape
    o, _, kh, kw = w.shape
    if padding != (0, 0):
        s = torch.nn.functional.pad(s, (padding[1], padding[1], padding[0], padding[0]))
    patches = s.unfold(2, kh, stride[0]).unfold(3, kw, stride[1])  # n, c, ho, wo, kh, kw
    ho, wo = patches.shape[2], patches.shape[3]
    cols = patches.permute(0, 2, 3, 1, 4, 5).reshape(n, ho * wo, c * kh * kw)
    out = cols @ w.reshape(o, -1).t()  # n, ho*wo, o
    return out.permute(0, 2, 1).reshape(n, o, ho, wo)


@dataclass(frozen=True)
class Conv2dNode(SynapticNode):
    """A conv engine: ``in_features`` channels of an ``in_hw`` map, ``out_features`` channels of ``out_hw``.

    ``groups``: convolution groups (each of ``in_features / groups`` inputs and ``out_features / groups`` outputs).
    ``line_buffer``: the window is read out of a line buffer (else a double-buffered frame).
    """

    groups: int = 1
    line_buffer: bool = True

    def geometry(self):
        """The engine's :class:`~bitspike.rtl_templates.window.WindowGeometry` (what its generator steps)."""
        from bitspike.rtl_templates.window import WindowGeometry

        per = -(-(self.in_features // self.groups) // self.lanes)
        rounds = -(-self.out_features // self.pes)
        return WindowGeometry(in_hw=self.in_hw, kernel=self.kernel, stride=self.stride, padding=self.padding,
                              channel_words=self.groups * per, out_groups=rounds, conv_groups=self.groups)

    def activation_memory(self) -> dict:
        """The input memory: ``words`` (frame words, plus the zero word of a padded window), ``bits``, and for a
        line buffer its smallest deadlock-free size and the whole-frame design's words."""
        from bitspike.rtl_templates.linebuf import line_buffer_size

        geo = self.geometry()
        width = self.lanes * self.widths.get("count", 0)
        frame_words = 2 * geo.frame_words + geo.has_pad
        if not self.line_buffer:
            return {"kind": "frame", "words": frame_words, "bits": frame_words * width}
        size = line_buffer_size(geo)
        words = size.words + geo.has_pad
        return {"kind": "line", "words": words, "bits": words * width, "min_words": size.min_words + geo.has_pad,
                "frame_words": frame_words, "frame_bits": frame_words * width}

    def to_json(self):
        out = super().to_json()
        out["activation_memory"] = self.activation_memory()
        return out


def line_buffer_schedule(op: "Conv2dOp", node: Conv2dNode, out_delay: int, arrivals: list[int] | None,
                         frames: int) -> tuple[list[int], list[int]]:
    """The line-buffered engine's clocks for ``frames`` frames back to back: ``(output beats, frame ends)``.

    ``arrivals``: the clock each input beat is offered (``None``: always offered). Mirrors the RTL
    (:mod:`bitspike.rtl_templates.synapse`, :mod:`bitspike.rtl_templates.linebuf`):

    * the neuron register takes element e at ``x = max(offered, x_prev + 1, w_prev)`` (it holds one
      element, or one beat of ``vec_in`` elements that share these clocks, until the writer takes it);
      the writer takes it at ``w = x + 1``, and on a beat that completes frame word k not before the
      reader's boundary has passed ``k − N`` (the boundary of window j holds from the clock after window
      j − 1's last word issued); word k is readable from ``w + 1``;
    * the reader issues its words in order, each not before it is readable, and the round's holding-queue
      slot and pops as the whole-frame model (:meth:`SynapticOp._drain_model`).

    A window whose words are all in when it starts takes the closed form of the whole-frame busy model;
    the others go word by word.
    """
    from bitspike.rtl_templates.linebuf import line_buffer_size, window_bounds

    geo = node.geometry()
    n_words = line_buffer_size(geo).words
    F = geo.frame_words
    bounds = window_bounds(geo)
    nw = len(bounds)
    reads, last_n = op._rounds(node)
    ends = op.frame_words(node)
    C, jn = node.in_features, len(ends)
    H, W = node.in_hw
    KH, KW = node.kernel
    (SH, SW), (PH, PW) = node.stride, node.padding
    taps = KH * KW
    finish = op._drain_model(node)
    word_of = {e: j for j, e in enumerate(ends)}  # the element of a pixel that completes word j
    never = -(10**9)
    gbound = [f * F + b for f in range(frames) for b, _ in bounds] + [frames * F]
    wt: list[int] = []  # clock each frame word (global index) was written
    t_last: list[int] = []  # clock each window's last word issued
    state = {"t": -1}
    lastpops: list[int] = []
    out: list[int] = []
    frame_ends: list[int] = []

    def read_window(i: int) -> None:
        f, li = divmod(i, nw)
        oh, ow = divmod(li, node.out_hw[1])
        t = state["t"]
        fast = wt[f * F + bounds[li][1] - 1] + 1 <= t + 1
        for g, words in enumerate(reads):
            if fast:
                t += taps * len(words)
            else:
                for ky in range(KH):
                    ih = oh * SH + ky - PH
                    for kx in range(KW):
                        iw = ow * SW + kx - PW
                        inside = 0 <= ih < H and 0 <= iw < W
                        for j in words:
                            t = max(t + 1, wt[f * F + (ih * W + iw) * jn + j] + 1 if inside else never)
            pops, t = finish(t, node.pes if g < len(reads) - 1 else last_n, lastpops)
            out.extend(p + out_delay for p in pops)
        state["t"] = t
        t_last.append(t)
        if li == nw - 1:
            frame_ends.append(lastpops[-1])

    x_prev, w_prev = never, never
    j_free = 0  # first window whose boundary lies above k − N
    per_frame = H * W * C
    V = node.vec_in  # a beat's elements enter together (V divides a word's lanes: no beat spans two words)
    for e in range(frames * per_frame):
        if e % V == 0:
            x = max(arrivals[e] if arrivals is not None else never, x_prev + 1, w_prev)
        else:
            x = x_prev
        w = x + 1
        le = e % per_frame
        j = word_of.get(le % C)
        if j is not None:
            k = (e // per_frame) * F + (le // C) * jn + j
            while gbound[j_free] <= k - n_words:
                j_free += 1
            if j_free > 0:
                while len(t_last) < j_free:
                    read_window(len(t_last))
                w = max(w, t_last[j_free - 1] + 1)
            wt.append(w)
        x_prev, w_prev = x, w
    while len(t_last) < frames * nw:
        read_window(len(t_last))
    return out, frame_ends


class Conv2dOp(SynapticOp):
    name = "conv2d"
    layer_cls = Conv2dLayer
    #: plan line-buffered engines (False: the double-buffered whole frame, for comparisons)
    line_buffer = True

    def __init__(self):
        super().__init__()
        self._busy_cache: dict[tuple, int] = {}

    def synapse(self, count, weight, layer):
        return conv2d_int(count, weight, layer.stride, layer.padding, layer.groups)

    def node(self, index, layer, manifest):
        from bitspike.gen.ir import safe_name

        out_c, in_c = layer.weight.shape[0], layer.in_shape[0]
        return Conv2dNode(index=index, name=layer.name, op=layer.op, engine=f"e{index}_{safe_name(layer.name)}",
                          w_bits=layer.w_bits, s_bits=layer.s_bits, timesteps=layer.timesteps, k=layer.k,
                          in_features=in_c, out_features=out_c, params=layer.params, macs=layer.macs,
                          in_hw=tuple(layer.in_shape[1:]), out_hw=tuple(layer.out_shape[1:]),
                          kernel=tuple(layer.kernel), stride=tuple(layer.stride), padding=tuple(layer.padding),
                          groups=layer.groups, line_buffer=self.line_buffer)

    # ---- the engine's word structure (the hooks of SynapticOp): groups split the words and the rounds

    def tap_inputs(self, node):
        """A grouped output reads only its group's ``in / groups`` channels at a tap."""
        return node.in_features // node.groups

    def frame_words(self, node):
        """Each group's channels start a new word: ⌈(in / groups) / lanes⌉ words per group, group by group."""
        gc, L = node.in_features // node.groups, node.lanes
        return [q * gc + min(gc - 1, (j + 1) * L - 1) for q in range(node.groups) for j in range(-(-gc // L))]

    def words_read(self, node, round_):
        """A round's outputs lie in one group (``pes`` divides out / groups); it reads that group's words."""
        q = round_ * node.pes // (node.out_features // node.groups)
        per = -(-(node.in_features // node.groups) // node.lanes)
        return range(q * per, (q + 1) * per)

    def fold_choices(self, node):
        """The shared divisors, less the PE counts that would let a round span two groups."""
        pes, lanes = super().fold_choices(node)
        return [p for p in pes if (node.out_features // node.groups) % p == 0], lanes

    def fold(self, node, layer, r, pes, lanes):
        from bitspike.errors import HardwareError

        g = node.groups
        if g > 1:
            per_out, per_in = node.out_features // g, node.in_features // g
            if not (1 <= pes <= per_out and per_out % pes == 0):
                raise HardwareError(f"fold for '{node.name}': pes {pes} must divide the {per_out} output channels "
                                    f"of each of its {g} groups")
            if not 1 <= lanes <= per_in:
                raise HardwareError(f"fold for '{node.name}': lanes {lanes} must be in 1 … {per_in} "
                                    f"(the input channels of each of its {g} groups)")
        return super().fold(node, layer, r, pes, lanes)

    # ---- the line buffer: its memory and its timing (the whole-frame engine keeps the shared models)

    def memories(self, node):
        """The weight memory and the input memory (:meth:`Conv2dNode.activation_memory`: the line buffer, or
        the double-buffered frame)."""
        if not node.line_buffer:
            return super().memories(node)
        weights = super().memories(node)[0]
        return [weights, (node.activation_memory()["words"], node.lanes * node.widths["count"], "ram")]

    def busy_cycles(self, node):
        """The whole-frame model (the reader's own clocks), or for a line buffer three frames of
        :func:`line_buffer_schedule` with inputs always offered: the clocks between the ends of the second
        and the third."""
        if not node.line_buffer:
            return super().busy_cycles(node)
        # the folding search asks again and again for the same few folds: the replay depends only on these
        # (the beat widths too: a vector beat enters in one clock, and vec_out outputs share a pop)
        key = (node.in_hw, node.in_features, node.out_features, node.kernel, node.stride, node.padding, node.groups,
               node.pes, node.lanes, node.vec_in, node.vec_out)
        if key not in self._busy_cache:
            _, ends = line_buffer_schedule(self, node, 0, None, 3)
            self._busy_cache[key] = max(ends[2] - ends[1], node.in_beats, node.out_beats)
        return self._busy_cache[key]

    def arrival_times(self, node, layer, plan, inputs):
        if not node.line_buffer:
            return super().arrival_times(node, layer, plan, inputs)
        from bitspike.rtl_templates.synapse import drain_latency

        out, _ = line_buffer_schedule(self, node, drain_latency(layer.requant is not None, node.fused is not None),
                                      inputs[0], 1)
        return out

    def build_engine(self, plan, node, layer, debug):
        from bitspike.rtl_templates.conv import ConvEngine

        return ConvEngine(weight=layer.weight, in_hw=node.in_hw, stride=node.stride, padding=node.padding,
                          groups=node.groups, line_buffer=node.line_buffer,
                          **self.engine_kwargs(plan, node, layer, debug))

    def export_fields(self, node):
        m = node.module
        return dict(kernel=(m.kernel, m.kernel), stride=(m.stride, m.stride), padding=(m.padding, m.padding),
                    groups=m.groups)


CONV2D = register_op(Conv2dOp())
