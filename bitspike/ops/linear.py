"""The ``linear`` op: a fully connected synapse after the neuron (shared rules: :mod:`bitspike.ops.neuron`).

Manifest: ``NAME.weight`` is ``[out, in]``; the input is flat. Golden sum:
``acc = count @ W.T + bias``. Hardware: a :class:`~bitspike.rtl_templates.linear.LinearEngine`
(the synaptic engine on a 1×1 map); its weight columns are permuted into the
order the inputs stream in (HWC after a flatten of a feature map).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import register_op
from .neuron import SteppedNode, SynapticLayer, SynapticNode, SynapticOp, stepped_linear_node

__all__ = ["LinearLayer", "LinearNode", "LinearOp"]


@dataclass(frozen=True, eq=False)
class LinearLayer(SynapticLayer):
    op: ClassVar[str] = "linear"

    @property
    def macs(self) -> int:
        return int(self.weight.shape[0] * self.weight.shape[1])

    def infer_out_shape(self, in_shapes, ctx):
        (shape,) = in_shapes
        if len(shape) != 1:
            raise ctx.fail("in_shape", f"linear needs a flat input, got shape {list(shape)} (add a flatten layer)")
        if shape[0] != self.weight.shape[1]:
            raise ctx.fail(
                f"{self.name}.weight",
                f"weight has {self.weight.shape[1]} inputs but the layer's input has {shape[0]} features",
            )
        return (int(self.weight.shape[0]),)

    @classmethod
    def parse(cls, meta, tensors, ctx, base):
        name = base["name"]
        if f"{name}.weight" not in tensors:
            raise ctx.fail(f"{name}.weight", "tensor missing from the file")
        wshape = tuple(tensors[f"{name}.weight"].shape)
        if len(wshape) != 2:
            raise ctx.fail(f"{name}.weight", f"expected a 2-D [out, in] tensor, got shape {list(wshape)}")
        fields = cls._parse_neuron_and_synapse(meta, tensors, ctx, wshape, name)
        return cls(**base, **fields)



@dataclass(frozen=True)
class LinearNode(SynapticNode):
    """A linear engine: ``in_features`` inputs, ``out_features`` outputs on a 1×1 map."""


class LinearOp(SynapticOp):
    name = "linear"
    layer_cls = LinearLayer

    def synapse(self, count, weight, layer):
        return count @ weight.t()

    @staticmethod
    def _column_order(layer, manifest):
        from bitspike.ops.stream import stream_order

        # inputs arrive in their producer's stream order (HWC after a flatten): permute the weight columns to match
        order = tuple(int(v) for v in stream_order(manifest, layer.inputs[0]))
        return None if order == tuple(range(len(order))) else order

    def stepped_node(self, index, layer, r, manifest):
        """A stepped neuron: the event-driven engine (:mod:`bitspike.rtl_templates.stepped`)."""
        return stepped_linear_node(index, layer, manifest, self._column_order(layer, manifest))

    def node(self, index, layer, manifest):
        from bitspike.gen.ir import safe_name

        out_f, in_f = layer.weight.shape
        order = self._column_order(layer, manifest)
        return LinearNode(index=index, name=layer.name, op=layer.op, engine=f"e{index}_{safe_name(layer.name)}",
                          w_bits=layer.w_bits, s_bits=layer.s_bits, timesteps=layer.timesteps, k=layer.k,
                          in_features=in_f, out_features=out_f, params=layer.params, macs=layer.macs,
                          column_order=order)

    def build_engine(self, plan, node, layer, debug):
        from bitspike.rtl_templates.linear import LinearEngine

        weight = layer.weight if node.column_order is None else layer.weight[:, list(node.column_order)]
        if isinstance(node, SteppedNode):
            from bitspike.rtl_templates.stepped import SteppedLinearEngine

            return SteppedLinearEngine(weight=weight, bias=layer.bias, neuron=layer.neuron, timesteps=layer.timesteps,
                                       w_bits=layer.w_bits, requant=layer.requant, ranges=plan.ranges[layer.name],
                                       per_step_input=node.per_step_input, pes=node.pes, dense=node.dense,
                                       debug_taps=debug, dsp_blocks=node.dsp_blocks)
        return LinearEngine(weight=weight, **self.engine_kwargs(plan, node, layer, debug))


LINEAR = register_op(LinearOp())
