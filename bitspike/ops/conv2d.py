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

Zero-word skipping (``bitspike gen --zero-skip``, :mod:`bitspike.gen.zeroskip`): a squeezed conv engine
of two or more output groups may replay, in groups 1 … G − 1, only the words of the window that group 0
found nonzero (:mod:`bitspike.rtl_templates.convskip`). Its node says so (``zero_skip``) and carries the
expected fraction of nonzero words (``nonzero_rate``, 1.0 unless told); the busy and arrival models give a
replayed group ``1 + rate · (T − 1)`` words on average (:meth:`Conv2dNode.replay_words`), or the exact
words of a frame's data (:func:`~bitspike.rtl_templates.convskip.conv_zero_skip_words`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

from .base import MAX_DIM, register_op
from .neuron import SynapticLayer, SynapticNode, SynapticOp

__all__ = ["Conv2dLayer", "Conv2dNode", "Conv2dOp", "conv2d_int", "line_buffer_schedule", "multitap_schedule"]


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
    ``taps``: kernel taps read per clock (1; kw, a window row; kh·kw, the whole window): above 1 the engine is a
    :class:`~bitspike.rtl_templates.multitap.MultiTapEngine` (interleaved, double-buffered banks; no line buffer).
    """

    groups: int = 1
    line_buffer: bool = True
    zero_skip: bool = False
    nonzero_rate: float = 1.0
    taps: int = 1

    @property
    def pe_lanes(self) -> int:
        """Products a PE sums per clock: ``taps × lanes``."""
        return self.taps * self.lanes

    @property
    def queue_groups(self) -> int:
        from bitspike.rtl_templates.multitap import group_queue_depth

        return group_queue_depth(self.pe_lanes) if self.taps > 1 else 0

    @property
    def bank_latency(self) -> int:
        from bitspike.rtl_templates.multitap import BANK_LATENCY

        return BANK_LATENCY if self.taps > 1 else 0

    @property
    def queue_latency(self) -> int:
        from bitspike.rtl_templates.multitap import QUEUE_LATENCY

        return QUEUE_LATENCY if self.taps > 1 else 0

    @property
    def tap_steps(self) -> int:
        """Clocks a window's taps take per channel word: kh·kw / taps."""
        return self.kernel[0] * self.kernel[1] // self.taps

    def banks(self) -> dict:
        """A multi-tap engine's banks (:func:`~bitspike.rtl_templates.multitap.bank_geometry`)."""
        from bitspike.rtl_templates.multitap import bank_geometry

        return bank_geometry(self.in_hw, self.kernel, self.padding, self.taps,
                             -(-(self.in_features // self.groups) // self.lanes))

    @property
    def window_words(self) -> int:
        """Words one output group walks per pixel densely (kernel taps × the group's channel words): T."""
        return self.kernel[0] * self.kernel[1] * -(-(self.in_features // self.groups) // self.lanes)

    def expected_words(self) -> float:
        """Words a replayed output group issues at :attr:`nonzero_rate`: ``1 + rate · (T − 1)`` (the last word
        always; all T when dense)."""
        T = self.window_words
        if not self.zero_skip:
            return float(T)
        return 1.0 + self.nonzero_rate * (T - 1)

    def replay_words(self, window: int, round_: int) -> int:
        """Words the cycle model gives output group ``round_`` (≥ 1) of window ``window`` (within a frame):
        :meth:`expected_words` on average, as whole words spread over the frame's replayed groups (as
        :meth:`~bitspike.ops.linear.LinearNode.group_words` does)."""
        e = self.expected_words()
        k = window * (-(-self.out_features // self.pes) - 1) + round_ - 1
        return math.floor((k + 1) * e + 1e-9) - math.floor(k * e + 1e-9)

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
        if self.taps > 1:  # kh×kw (or kw) interleaved banks, each double-buffered, over the padded map
            b = self.banks()
            n = b["rows"] * b["cols"]
            return {"kind": "banks", "words": n * 2 * b["bank_words"], "bits": n * 2 * b["bank_words"] * width,
                    "banks": n, "bank_words": 2 * b["bank_words"]}
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
        if self.taps > 1:  # only then: a one-tap engine's report stays as it was
            out["taps"] = self.taps
        if self.zero_skip:  # only then: the report of a dense engine stays as it was
            geo = self.geometry()
            out["zero_skip"] = {"walk": "scan, then nonzero words", "nonzero_rate": self.nonzero_rate,
                                "window_words": self.window_words, "frame_words": geo.frame_words,
                                "expected_words_per_group": round(self.expected_words(), 3),
                                "groups": geo.out_groups}
        return out


def line_buffer_schedule(op: "Conv2dOp", node: Conv2dNode, out_delay: int, arrivals: list[int] | None,
                         frames: int, replay: list[list[int]] | None = None) -> tuple[list[int], list[int]]:
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
    the others go word by word. With zero skipping (``node.zero_skip``) rounds 1 on replay words read
    already: round g of window i issues ``replay[f][i]`` words (frame f's data; ``None``: the node's
    expected :meth:`Conv2dNode.replay_words`) back to back.
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
            if g and node.zero_skip:
                t += replay[f][li] if replay is not None else node.replay_words(li, g)
            elif fast:
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


def line_buffer_size_words(geo) -> int:
    """The line buffer's ``N`` for ``geo`` (:func:`~bitspike.rtl_templates.linebuf.line_buffer_size`)."""
    from bitspike.rtl_templates.linebuf import line_buffer_size

    return line_buffer_size(geo).words


def frame_skip_schedule(op: "Conv2dOp", node: Conv2dNode, out_delay: int, arrivals: list[int] | None,
                        frames: int, replay: list[int] | None = None) -> tuple[list[int], list[int]]:
    """The whole-frame engine's clocks with zero skipping, ``frames`` frames back to back: ``(output beats of
    the first frame, frame ends)``.

    As the dense whole-frame model (:meth:`SynapticOp.arrival_times`): round 0 reads each word once it is
    written (``arrivals``: the clock each input beat is offered; ``None``: every word ready), the later rounds
    issue their replayed words back to back (``replay``: per window, of the frame's data; ``None``: the
    node's expected ones). The banks alternate, so a frame's words are ready once they arrived.
    """
    from bitspike.rtl_templates.synapse import INPUT_LATENCY

    reads, last_n = op._rounds(node)
    ends = op.frame_words(node)
    C, jn = node.in_features, len(ends)
    H, W = node.in_hw
    KH, KW = node.kernel
    never = -(10**9)
    finish = op._drain_model(node)
    ready = ([never] * (H * W * jn) if arrivals is None else
             [arrivals[pix * C + e] + INPUT_LATENCY for pix in range(H * W) for e in ends])
    out: list[int] = []
    frame_ends: list[int] = []
    t = -1
    lastpops: list[int] = []
    for f in range(frames):
        for i in range(node.out_hw[0] * node.out_hw[1]):
            oh, ow = divmod(i, node.out_hw[1])
            for g, words in enumerate(reads):
                if g:
                    t += replay[i] if replay is not None else node.replay_words(i, g)
                else:
                    for ky in range(KH):
                        ih = oh * node.stride[0] + ky - node.padding[0]
                        for kx in range(KW):
                            iw = ow * node.stride[1] + kx - node.padding[1]
                            inside = 0 <= ih < H and 0 <= iw < W
                            for j in words:
                                r = ready[(ih * W + iw) * jn + j] if inside and f == 0 else never
                                t = max(t + 1, r)
                pops, t = finish(t, node.pes if g < len(reads) - 1 else last_n, lastpops)
                if f == 0:
                    out.extend(p + out_delay for p in pops)
        frame_ends.append(lastpops[-1])
    return out, frame_ends


def multitap_schedule(op: "Conv2dOp", node: Conv2dNode, out_delay: int, arrivals: list[int] | None,
                      frames: int) -> tuple[list[int], list[int]]:
    """The multi-tap engine's clocks (:mod:`bitspike.rtl_templates.multitap`), ``frames`` frames back to back:
    ``(output beats of the first frame, frame ends)``.

    As the whole-frame model (:meth:`SynapticOp.arrival_times`, whose double-buffered banks it shares), with a
    window's words (``tap_steps`` × the round's channel words, one a clock) all waiting for the window's last
    pixel (bottom-right, clipped to the map): readable ``INPUT_LATENCY`` clocks after that pixel's last element
    arrived (``arrivals``: the clock each input element is offered; ``None``: every pixel ready). The later
    frames' pixels are ready (the writer fills the other bank meanwhile).
    """
    from bitspike.rtl_templates.synapse import INPUT_LATENCY

    reads, last_n = op._rounds(node)
    C = node.in_features
    H, W = node.in_hw
    KH, KW = node.kernel
    (SH, SW), (PH, PW) = node.stride, node.padding
    steps = node.tap_steps
    never = -(10**9)
    finish = op._drain_model(node)
    ready = None
    if arrivals is not None:  # the writer takes pixels in order: a pixel is in once all before it are
        ready, hi = [], never
        for pix in range(H * W):
            hi = max(hi, arrivals[pix * C + C - 1] + INPUT_LATENCY)
            ready.append(hi)
    out: list[int] = []
    frame_ends: list[int] = []
    t = -1
    lastpops: list[int] = []
    for f in range(frames):
        for i in range(node.out_hw[0] * node.out_hw[1]):
            oh, ow = divmod(i, node.out_hw[1])
            r = never
            if ready is not None and f == 0:
                last = min(oh * SH - PH + KH - 1, H - 1) * W + min(ow * SW - PW + KW - 1, W - 1)
                r = ready[last]
            for g, words in enumerate(reads):
                n = steps * len(words)
                t = max(t + 1, r) + n - 1
                pops, t = finish(t, node.pes if g < len(reads) - 1 else last_n, lastpops)
                if f == 0:
                    out.extend(p + out_delay for p in pops)
        frame_ends.append(lastpops[-1])
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

    def tap_choices(self, node):
        """Kernel taps per clock the auto folder may give the engine: 1, a window row (kw) and the whole window
        (kh·kw), where a multi-tap engine can be built (:func:`~bitspike.rtl_templates.multitap.multitap_refused`)."""
        from bitspike.rtl_templates.multitap import multitap_refused

        kh, kw = node.kernel
        return sorted(t for t in {1, kw, kh * kw} if t == 1 or self.multitap_refused(node, t) is None
                      and multitap_refused(node.kernel, t, node.groups) is None)

    @staticmethod
    def multitap_refused(node, taps: int) -> str | None:
        """Why the node's engine cannot read ``taps`` taps a clock for plan reasons (``None``: it can)."""
        if taps > 1 and node.zero_skip:
            return "zero-word skipping walks one tap a clock"
        return None

    def fold(self, node, layer, r, pes, lanes, taps: int = 1):
        from bitspike.errors import HardwareError

        if taps != 1 or node.taps != 1:
            from bitspike.rtl_templates.multitap import MultiTapLayout, multitap_refused

            why = multitap_refused(node.kernel, taps, node.groups) or self.multitap_refused(node, taps)
            if why is not None:
                raise HardwareError(f"fold for '{node.name}': {why}")
            node = replace(super().fold(replace(node, taps=1), layer, r, pes, lanes), taps=taps)
            if taps > 1:
                lay = MultiTapLayout(node.out_features, node.in_features, pes, lanes, node.w_bits, node.kernel, taps)
                node = replace(node, memory_bits=lay.memory_bits)
            return node
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
        the double-buffered frame), and a skipping engine's nonzero list; a multi-tap engine's weight memory
        (``taps × lanes × pes`` weights a word) and its banks, one memory each."""
        if node.taps > 1:
            from bitspike.rtl_templates.multitap import MultiTapLayout, weights_in_block_ram

            lay = MultiTapLayout(node.out_features, node.in_features, node.pes, node.lanes, node.w_bits, node.kernel,
                                 node.taps)
            mem = node.activation_memory()
            return ([(lay.depth, lay.word_bits, "block" if weights_in_block_ram(lay) else "rom")]
                    + [(mem["bank_words"], node.lanes * node.widths["count"], "ram")] * mem["banks"])
        out = (super().memories(node) if not node.line_buffer else
               [super().memories(node)[0], (node.activation_memory()["words"], node.lanes * node.widths["count"], "ram")])
        if node.zero_skip:  # the nonzero list of the window: T − 1 entries
            from bitspike.rtl_templates.convskip import conv_list_bits, list_in_block_ram

            geo = node.geometry()
            T = node.window_words
            out.append((T - 1, conv_list_bits(geo, node.line_buffer) // (T - 1),
                        "block" if list_in_block_ram(geo, node.line_buffer) else "ram"))
        return out

    def busy_cycles(self, node):
        """The whole-frame model (the reader's own clocks), or for a line buffer three frames of
        :func:`line_buffer_schedule` with inputs always offered: the clocks between the ends of the second
        and the third; a multi-tap engine: its own model (:func:`multitap_schedule`) alike."""
        if node.taps > 1:
            _, ends = multitap_schedule(self, node, 0, None, 3)
            return max(ends[2] - ends[1], node.in_beats, node.out_beats)
        if not node.line_buffer:
            if node.zero_skip:
                _, ends = frame_skip_schedule(self, node, 0, None, 3)
                return max(ends[2] - ends[1], node.in_beats, node.out_beats)
            return super().busy_cycles(node)
        # the folding search asks again and again for the same few folds: the replay depends only on these
        # (the beat widths too: a vector beat enters in one clock, and vec_out outputs share a pop)
        key = (node.in_hw, node.in_features, node.out_features, node.kernel, node.stride, node.padding, node.groups,
               node.pes, node.lanes, node.vec_in, node.vec_out) + ((node.nonzero_rate,) if node.zero_skip else ())
        if key not in self._busy_cache:
            _, ends = line_buffer_schedule(self, node, 0, None, 3)
            self._busy_cache[key] = max(ends[2] - ends[1], node.in_beats, node.out_beats)
        return self._busy_cache[key]

    def arrival_times(self, node, layer, plan, inputs, replay: list[list[int]] | None = None):
        """The clocks the outputs leave, given the clocks the inputs are offered; ``replay``: with zero skipping,
        the words of each replayed round per window (one list, :func:`~bitspike.rtl_templates.convskip.
        conv_zero_skip_words` of the frame's data) instead of the node's expected ones."""
        from bitspike.rtl_templates.synapse import drain_latency

        delay = drain_latency(layer.requant is not None, node.fused is not None)
        if node.taps > 1:
            return multitap_schedule(self, node, delay, inputs[0], 1)[0]
        if not node.line_buffer:
            if node.zero_skip:
                return frame_skip_schedule(self, node, delay, inputs[0], 1, replay)[0]
            return super().arrival_times(node, layer, plan, inputs)
        out, _ = line_buffer_schedule(self, node, delay, inputs[0], 1, replay)
        return out

    # ---- zero-word skipping (bitspike.gen.zeroskip asks these; bitspike.rtl_templates.convskip builds it)

    def zero_skip_refused(self, node, r) -> str | None:
        """Why this engine cannot skip zero words (``None``: it can)."""
        from bitspike.rtl_templates.convskip import conv_skip_refused

        if node.taps > 1:
            return f"its multi-tap engine reads {node.taps} taps a clock (skipping walks one)"
        return conv_skip_refused(node.geometry())

    def zero_skip_luts(self, node) -> int:
        """The estimate's extra LUTs for skipping: the list's counters (entries, replay index, group, weight base),
        the read-address, weight-address and forwarding multiplexers, the nonzero test of a word and, with a line
        buffer, the held write limits; 4/3 of the count of their bits, calibrated on Yosys ``synth_ice40``
        (bench/results/zeroskip.md: 77 … 146 LUTs more in the seven skipping conv engines measured, 1.05 … 1.57
        times that count). The list
        itself is a memory with a synchronous read (:meth:`memories`), which Yosys put in one block RAM in
        each of those engines, however small."""
        from bitspike.rtl_templates.convskip import input_memory_words

        geo = node.geometry()
        T, G = node.window_words, geo.out_groups
        a = (input_memory_words(geo, node.line_buffer) - 1).bit_length()
        t, g = T.bit_length(), (G * T).bit_length()
        held = 2 * (geo.frame_words + line_buffer_size_words(geo)).bit_length() if node.line_buffer else 0
        bits = 3 * a + 4 * t + 2 * g + G.bit_length() + -(-node.lanes * node.widths["count"] // 4) + held + 8
        return -(-4 * bits // 3)

    def with_zero_skip(self, node, on: bool, nonzero_rate: float | None = None):
        """The node with zero-word skipping on or off (and its expected nonzero-word rate), its cycles redone."""
        rate = node.nonzero_rate if nonzero_rate is None else float(nonzero_rate)
        if not 0.0 <= rate <= 1.0:
            from bitspike.errors import HardwareError

            raise HardwareError(f"layer '{node.name}': nonzero_rate must be in 0 … 1, not {rate!r}")
        node = replace(node, zero_skip=bool(on), nonzero_rate=rate)
        return replace(node, cycles=self.busy_cycles(node))

    def estimate_luts(self, node):
        base = super().estimate_luts(node)
        if node.taps > 1:  # the rotation muxes (by rows, then by columns) and a bank address adder each
            b = node.banks()
            n = b["rows"] * b["cols"]
            mux = node.pe_lanes * node.widths["count"] * ((b["rows"] > 1) + (b["cols"] > 1))
            base += mux + 2 * n * (2 * b["bank_words"]).bit_length()
        return base + self.zero_skip_luts(node) if getattr(node, "zero_skip", False) else base

    @staticmethod
    def node_from_report(entry: dict, nonzero_rate: float | None = None) -> Conv2dNode:
        """A conv node with the geometry and folding of a report's layer entry (for the cycle models)."""
        z = entry.get("zero_skip") or {}
        rate = z.get("nonzero_rate", 1.0) if nonzero_rate is None else nonzero_rate
        pair = lambda key: tuple(int(v) for v in entry[key])  # noqa: E731
        return Conv2dNode(index=int(entry["index"]), name=entry["name"], op="conv2d", engine=entry["engine"],
                          in_features=int(entry["in_features"]), out_features=int(entry["out_features"]),
                          pes=int(entry["pes"]), lanes=int(entry["lanes"]), widths=dict(entry["widths"]),
                          in_hw=pair("in_hw"), out_hw=pair("out_hw"), kernel=pair("kernel"), stride=pair("stride"),
                          padding=pair("padding"), vec_in=int(entry.get("vec_in", 1)),
                          vec_out=int(entry.get("vec_out", 1)),
                          line_buffer=entry.get("activation_memory", {}).get("kind", "line") == "line",
                          zero_skip="zero_skip" in entry, nonzero_rate=float(rate), taps=int(entry.get("taps", 1)))

    def build_engine(self, plan, node, layer, debug):
        from bitspike.rtl_templates.conv import ConvEngine

        kwargs = self.engine_kwargs(plan, node, layer, debug)
        if node.taps > 1:
            from bitspike.rtl_templates.multitap import MultiTapEngine

            return MultiTapEngine(weight=layer.weight, in_hw=node.in_hw, stride=node.stride, padding=node.padding,
                                  taps=node.taps, **kwargs)
        if node.zero_skip:
            from bitspike.rtl_templates.convskip import conv_zero_skip_generator

            kwargs["address_generator"] = conv_zero_skip_generator(line_buffer=node.line_buffer)
        return ConvEngine(weight=layer.weight, in_hw=node.in_hw, stride=node.stride, padding=node.padding,
                          groups=node.groups, line_buffer=node.line_buffer, **kwargs)

    def export_fields(self, node):
        m = node.module
        return dict(kernel=(m.kernel, m.kernel), stride=(m.stride, m.stride), padding=(m.padding, m.padding),
                    groups=m.groups)


CONV2D = register_op(Conv2dOp())
