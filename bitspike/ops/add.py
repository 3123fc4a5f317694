"""The ``add`` op: residual add of two currents with per-channel multipliers.

``y = clamp((a·Ma + b·Mb + rnd) >> SH, lo, hi)``, ``rnd = 2**(SH-1)`` (0 when
SH = 0). Manifest fields ``shift``, ``lo``, ``hi``; tensors ``NAME.mult_a``,
``NAME.mult_b`` (``[C]``). Hardware: :class:`~bitspike.rtl_templates.residual.AddEngine`;
a fork branch into it runs through a skew FIFO (the other branch is slower),
except for a self-add whose source nothing else reads (both operands in step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from bitspike.gen.ir import PlanNode

from .base import CURRENT_LIMIT, MULT_LIMIT, SHIFT_RANGE, Layer, Op, register_op, rounding_term

__all__ = ["AddLayer", "AddNode", "AddOp", "FIFO_LATENCY"]

#: clocks from a skip-branch beat entering the residual FIFO to its being offered at the other end
FIFO_LATENCY = 2


def _fits_int64(lo_c, hi_c) -> bool:
    return -(2**63) <= int(np.min(lo_c)) and int(np.max(hi_c)) <= 2**63 - 1


@dataclass(frozen=True, eq=False)
class AddLayer(Layer):
    """Residual add: y = clamp((a·Ma + b·Mb + rnd) >> shift, lo, hi), per channel."""

    op: ClassVar[str] = "add"
    n_inputs: ClassVar[int] = 2
    json_fields: ClassVar[tuple[str, ...]] = ("shift", "lo", "hi")
    mult_a: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    mult_b: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    shift: int = 0
    lo: int = 0
    hi: int = 0

    @property
    def channels(self) -> int:
        return int(self.in_shape[0])

    def extra_json(self):
        return {"shift": self.shift, "lo": self.lo, "hi": self.hi}

    def tensors(self):
        return {f"{self.name}.mult_a": self.mult_a, f"{self.name}.mult_b": self.mult_b}

    def infer_out_shape(self, in_shapes, ctx):
        a, b = in_shapes
        if a != b:
            raise ctx.fail("inputs", f"residual add needs equal shapes, got {list(a)} and {list(b)}")
        return a

    @classmethod
    def parse(cls, meta, tensors, ctx, base):
        name = base["name"]
        channels = base["in_shape"][0]
        shift = ctx.int_in(meta, "shift", *SHIFT_RANGE)
        lo = ctx.int_in(meta, "lo", -CURRENT_LIMIT, CURRENT_LIMIT)
        hi = ctx.int_in(meta, "hi", -CURRENT_LIMIT, CURRENT_LIMIT)
        if lo > hi:
            raise ctx.fail("lo", f"clamp bounds lo = {lo} > hi = {hi}")
        mult_a = ctx.tensor(tensors, f"{name}.mult_a", (channels,), -MULT_LIMIT + 1, MULT_LIMIT - 1)
        mult_b = ctx.tensor(tensors, f"{name}.mult_b", (channels,), -MULT_LIMIT + 1, MULT_LIMIT - 1)
        return cls(**base, mult_a=mult_a, mult_b=mult_b, shift=shift, lo=lo, hi=hi)



@dataclass(frozen=True)
class AddNode(PlanNode):
    """A residual add engine over an ``in_hw`` map of ``in_features`` channels."""


class AddOp(Op):
    name = "add"
    layer_cls = AddLayer
    input_ports = ("a", "b")
    joins_branches = True
    reserved_dsps = 2  # the two products, which the allocator does not place

    def ranges(self, layer, inputs):
        from bitspike.ranges import LayerRanges, Range

        x, b = inputs
        rnd = rounding_term(layer.shift)
        ma, mb = layer.mult_a.astype(object), layer.mult_b.astype(object)
        lo_c = np.minimum(ma * x.lo, ma * x.hi) + np.minimum(mb * b.lo, mb * b.hi) + rnd
        hi_c = np.maximum(ma * x.lo, ma * x.hi) + np.maximum(mb * b.lo, mb * b.hi) + rnd
        product = Range(int(lo_c.min()), int(hi_c.max()))
        out_lo = max(layer.lo, min(layer.hi, product.lo >> layer.shift))
        out_hi = min(layer.hi, max(layer.lo, product.hi >> layer.shift))
        return LayerRanges(layer.name, layer.op, x, Range(out_lo, out_hi), product=product, x_b=b)

    def wide_product(self, layer, r):
        assert r.x_b is not None
        ma, mb = layer.mult_a.astype(object), layer.mult_b.astype(object)
        a_lo, a_hi = np.minimum(ma * r.x.lo, ma * r.x.hi), np.maximum(ma * r.x.lo, ma * r.x.hi)
        b_lo, b_hi = np.minimum(mb * r.x_b.lo, mb * r.x_b.hi), np.maximum(mb * r.x_b.lo, mb * r.x_b.hi)
        rnd = rounding_term(layer.shift)
        return not (_fits_int64(a_lo, a_hi) and _fits_int64(b_lo, b_hi) and _fits_int64(a_lo + b_lo, a_hi + b_hi)
                    and _fits_int64(a_lo + b_lo + rnd, a_hi + b_hi + rnd))

    def forward(self, model, layer, xs, trace):
        import torch

        from bitspike.ops.kernels import LayerTrace, shift_round

        x, b = xs
        r = model.ranges[layer.name]
        model.check(layer, "x", x, r.x)
        model.check(layer, "x_b", b, r.x_b)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if model.is_wide(layer):
            out = model.scale_wide(layer, "product", [(x, layer.mult_a), (b, layer.mult_b)], None, layer.shift,
                                   layer.lo, layer.hi, r)
        else:
            prod = x * torch.from_numpy(layer.mult_a).view(shape) + b * torch.from_numpy(layer.mult_b).view(shape)
            model.check(layer, "product", prod + rounding_term(layer.shift), r.product)
            out = torch.clamp(shift_round(prod, layer.shift), layer.lo, layer.hi)
        model.check(layer, "out", out, r.out)
        return out, (LayerTrace(layer.name, layer.op, x, out) if trace else None)

    def plan(self, index, layer, r, manifest):
        from bitspike.gen.ir import safe_name

        shape = tuple(layer.in_shape)
        hw = tuple(shape[1:]) if len(shape) == 3 else (1, 1)
        return AddNode(index=index, name=layer.name, op=layer.op, engine=f"e{index}_{safe_name(layer.name)}",
                       in_features=shape[0], out_features=shape[0], in_hw=hw, out_hw=hw)

    def widths(self, node, layer, r):
        return {"x": r.x.width, "x_b": r.x_b.width, "product": r.product.width, "out": r.out.width}

    def arrival_times(self, node, layer, plan, inputs):
        from bitspike.gen.ir import self_add_in_step
        from bitspike.rtl_templates.residual import ADD_LATENCY

        a, b = inputs
        # b is the skip branch, through the FIFO (none for a self-add in step: both operands share one fork)
        latency = 0 if self_add_in_step(plan.manifest, layer) else FIFO_LATENCY
        out: list[int] = []
        t = -(10**9)
        for ta, tb in zip(a, b):
            t = max(t + 1, ta, tb + latency)
            out.append(t + ADD_LATENCY)
        return out

    def build_engine(self, plan, node, layer, debug):
        from bitspike.rtl_templates.residual import AddEngine

        r = plan.ranges[layer.name]
        return AddEngine(mult_a=layer.mult_a, mult_b=layer.mult_b, shift=layer.shift, lo=layer.lo, hi=layer.hi,
                         a_range=r.x, b_range=r.x_b, product_range=r.product, out_range=r.out, debug_taps=debug)

    def export_layer(self, node, ctx):
        u_out = ctx.units[node.name]
        ra, rb = ctx.units[node.inputs[0]] / u_out, ctx.units[node.inputs[1]] / u_out
        shift = ctx.shift_for(max(ra, rb))
        ch = node.out_shape[0]
        hi = ctx.clamp_hi(node.name)
        return AddLayer(name=node.name, inputs=tuple(node.inputs), in_shape=node.in_shape, out_shape=node.out_shape,
                        mult_a=np.full(ch, int(ctx.round(np.array(ra * 2.0**shift))), np.int64),
                        mult_b=np.full(ch, int(ctx.round(np.array(rb * 2.0**shift))), np.int64),
                        shift=shift, lo=0, hi=hi)

    def export_unit(self, node, producer, ctx):
        # the main branch takes the add's unit; the shortcut, if nothing else reads it, gets it too
        return ctx.units[node.name] if node.inputs[0] == producer else None

    def audit_hooks(self, node, outputs, counts):
        return []  # bounded by interval arithmetic on its integer formula

    def audit_step(self, layer, state):
        import torch

        a, b = state.iv[layer.inputs[0]], state.iv[layer.inputs[1]]
        shape = (1, -1) + (1,) * (a[0].dim() - 2)
        ma = torch.from_numpy(layer.mult_a).view(shape)
        mb = torch.from_numpy(layer.mult_b).view(shape)
        rnd = rounding_term(layer.shift)

        def ends(m, iv):  # interval of m·x for x in iv, m of either sign
            return torch.minimum(m * iv[0], m * iv[1]), torch.maximum(m * iv[0], m * iv[1])

        (alo, ahi), (blo, bhi) = ends(ma, a), ends(mb, b)
        lo = torch.bitwise_right_shift(alo + blo + rnd, layer.shift).clamp(layer.lo, layer.hi)
        hi = torch.bitwise_right_shift(ahi + bhi + rnd, layer.shift).clamp(layer.lo, layer.hi)
        state.iv[layer.name] = (lo, hi)


ADD = register_op(AddOp())
