"""The ``conv2d`` op: a 2-D convolution synapse after the neuron (shared rules: :mod:`bitspike.ops.neuron`).

Manifest: ``kernel``, ``stride``, ``padding`` (each ``[h, w]``, padding
smaller than the kernel) and ``groups`` (optional, default 1 and then left
out of the JSON, so older manifests keep their bytes); ``NAME.weight`` is
``[out, in / groups, kh, kw]``. Grouped convolution as torch's: output
channel o reads only the input channels of its group ``o // (out / groups)``
(depthwise: ``groups`` = in channels). Golden sum: cross-correlation as
torch, with zero padding, by im2col and an int64 matmul per group. Hardware:
a :class:`~bitspike.rtl_templates.conv.ConvEngine` (window read out of a
buffered frame; padding taps read zero; each group's channels start a new
frame word, and a PE group never spans two convolution groups, so a fold
needs ``pes`` dividing out / groups and ``lanes`` at most in / groups).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import MAX_DIM, register_op
from .neuron import SynapticLayer, SynapticNode, SynapticOp

__all__ = ["Conv2dLayer", "Conv2dNode", "Conv2dOp", "conv2d_int"]


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
    """

    groups: int = 1


class Conv2dOp(SynapticOp):
    name = "conv2d"
    layer_cls = Conv2dLayer

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
                          groups=layer.groups)

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

    def build_engine(self, plan, node, layer, debug):
        from bitspike.rtl_templates.conv import ConvEngine

        return ConvEngine(weight=layer.weight, in_hw=node.in_hw, stride=node.stride, padding=node.padding,
                          groups=node.groups, **self.engine_kwargs(plan, node, layer, debug))

    def export_fields(self, node):
        m = node.module
        return dict(kernel=(m.kernel, m.kernel), stride=(m.stride, m.stride), padding=(m.padding, m.padding),
                    groups=m.groups)


CONV2D = register_op(Conv2dOp())
