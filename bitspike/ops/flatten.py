"""The ``flatten`` op: ``[C, H, W]`` → ``[C*H*W]`` in C-major order (as ``torch.flatten``).

No hardware: the stream already carries the values (in HWC order); the next
linear layer's weight columns are permuted to that order instead
(:class:`bitspike.ops.linear.LinearOp`). Ranges and units pass through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from bitspike.gen.ir import PlanNode

from .base import Layer, Op, register_op

__all__ = ["FlattenLayer", "FlattenNode", "FlattenOp"]


@dataclass(frozen=True, eq=False)
class FlattenLayer(Layer):
    op: ClassVar[str] = "flatten"

    def infer_out_shape(self, in_shapes, ctx):
        (shape,) = in_shapes
        return (math.prod(shape),)

    @classmethod
    def parse(cls, meta, tensors, ctx, base):
        return cls(**base)



@dataclass(frozen=True)
class FlattenNode(PlanNode):
    """No engine: a re-indexing the next layer absorbs."""


class FlattenOp(Op):
    name = "flatten"
    layer_cls = FlattenLayer
    taps = ()
    passthrough_stream = True

    def ranges(self, layer, inputs):
        from bitspike.ranges import LayerRanges

        return LayerRanges(layer.name, layer.op, inputs[0], inputs[0])

    def forward(self, model, layer, xs, trace):
        from bitspike.ops.kernels import LayerTrace

        x = xs[0]
        r = model.ranges[layer.name]
        model.check(layer, "x", x, r.x)
        out = x.reshape(x.shape[0], -1)
        model.check(layer, "out", out, r.out)
        return out, (LayerTrace(layer.name, layer.op, x, out) if trace else None)

    def plan(self, index, layer, r, manifest):
        return FlattenNode(index=index, name=layer.name, op=layer.op, engine="", in_features=math.prod(layer.in_shape),
                           out_features=math.prod(layer.out_shape))

    def estimate_luts(self, node):
        return 0

    def busy_cycles(self, node):
        return 0

    def arrival_times(self, node, layer, plan, inputs):
        return list(inputs[0])

    def build_engine(self, plan, node, layer, debug):
        return None  # a re-indexing folded into the next layer

    def export_layer(self, node, ctx):
        return FlattenLayer(name=node.name, inputs=(node.inputs[0],), in_shape=node.in_shape, out_shape=node.out_shape)

    def export_unit(self, node, producer, ctx):
        return ctx.units[node.name]

    def export_transparent(self, node):
        return 0

    def audit_step(self, layer, state):
        lo, hi = state.iv[layer.inputs[0]]
        state.iv[layer.name] = (lo.reshape(state.n, -1), hi.reshape(state.n, -1))


FLATTEN = register_op(FlattenOp())
