"""The ``linear`` op: a fully connected synapse after the neuron (shared rules: :mod:`bitspike.ops.neuron`).

Manifest: ``NAME.weight`` is ``[out, in]``; the input is flat. Golden sum:
``acc = count @ W.T + bias``. Hardware: a :class:`~bitspike.rtl_templates.linear.LinearEngine`
(the synaptic engine on a 1×1 map); its weight columns are permuted into the
order the inputs stream in (HWC after a flatten of a feature map).

Zero-word skipping (``bitspike gen --zero-skip``, :mod:`bitspike.gen.zeroskip`): a squeezed linear
engine may walk only the frame words that hold a nonzero count
(:mod:`bitspike.rtl_templates.zeroskip`). Its node then says so (``zero_skip``) and carries the
expected fraction of nonzero words (``nonzero_rate``, 1.0 unless told: the dense worst case); the busy
and arrival models below count ``max(rate · words, 1)`` words per output group on average (whole words,
spread over the groups: :meth:`LinearNode.group_words`), issued once the whole frame is in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

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
    """A linear engine: ``in_features`` inputs, ``out_features`` outputs on a 1×1 map.

    ``zero_skip``: the engine walks only the nonzero frame words; ``nonzero_rate`` is the fraction of its
    frame words the planner expects to be nonzero (1.0: every word, the worst case, unless told otherwise).
    """

    zero_skip: bool = False
    nonzero_rate: float = 1.0

    @property
    def frame_words(self) -> int:
        """Frame words per inference (⌈in_features / lanes⌉)."""
        return -(-self.in_features // self.lanes)

    def expected_words(self) -> float:
        """Words an output group issues at :attr:`nonzero_rate`: ``max(rate · words, 1)`` (all when dense)."""
        J = self.frame_words
        if not self.zero_skip:
            return float(J)
        return min(float(J), max(1.0, self.nonzero_rate * J))

    def group_words(self, group: int) -> int:
        """Words the cycle model gives output group ``group``: :meth:`expected_words` on average, as whole words
        (the first ``g`` groups together get ⌊g · expected⌋), so the model follows the mean of a rate that is
        not a whole number of words instead of rounding it up in every group."""
        w = self.expected_words()
        return math.floor((group + 1) * w + 1e-9) - math.floor(group * w + 1e-9)  # the margin: n / J · J is n

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if self.zero_skip:  # only then: the report of a dense engine stays as it was
            out["zero_skip"] = {"walk": "nonzero words", "nonzero_rate": self.nonzero_rate,
                                "frame_words": self.frame_words, "expected_words_per_group": round(self.expected_words(), 3),
                                "groups": -(-self.out_features // self.pes)}
        return out


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

    # ---- zero-word skipping (bitspike.gen.zeroskip asks these; bitspike.rtl_templates.zeroskip builds it)

    def zero_skip_refused(self, node, r) -> str | None:
        """Why this engine cannot skip zero words (``None``: it can)."""
        from bitspike.rtl_templates.zeroskip import MIN_FRAME_WORDS

        if isinstance(node, SteppedNode):
            return "a stepped engine: its walk is event-driven already"
        if node.frame_words < MIN_FRAME_WORDS:
            return f"one frame word ({node.lanes} lanes for {node.in_features} inputs): nothing to skip"
        return None

    def zero_skip_luts(self, node) -> int:
        """The estimate's extra LUTs for skipping: the list's write and read counters, the group's weight base,
        the nonzero test of a word and, below :data:`~bitspike.rtl_templates.zeroskip.LIST_BLOCK_MIN_BITS`, the
        list itself in logic (a list from that size on is one block RAM, :meth:`memories`)."""
        from bitspike.rtl_templates.zeroskip import list_bits, list_in_block_ram

        J = node.frame_words
        a, g = J.bit_length(), (J * -(-node.out_features // node.pes)).bit_length()
        # a list below LIST_BLOCK_MIN_BITS is logic: flip-flops and a read multiplexer where there is no LUT RAM
        in_logic = 0 if list_in_block_ram(J) else list_bits(J)
        return 4 * a + 2 * g + -(-node.lanes * node.widths["count"] // 4) + in_logic + 8

    def with_zero_skip(self, node, on: bool, nonzero_rate: float | None = None):
        """The node with zero-word skipping on or off (and its expected nonzero-word rate), its cycles redone."""
        rate = node.nonzero_rate if nonzero_rate is None else float(nonzero_rate)
        if not 0.0 <= rate <= 1.0:
            from bitspike.errors import HardwareError

            raise HardwareError(f"layer '{node.name}': nonzero_rate must be in 0 … 1, not {rate!r}")
        node = replace(node, zero_skip=bool(on), nonzero_rate=rate)
        return replace(node, cycles=self.busy_cycles(node))

    def words_read(self, node, round_):
        if getattr(node, "zero_skip", False):
            return range(node.group_words(round_))  # as many words as expected nonzero (which ones: the data's)
        return super().words_read(node, round_)

    def arrival_times(self, node, layer, plan, inputs):
        if not getattr(node, "zero_skip", False):
            return super().arrival_times(node, layer, plan, inputs)
        from bitspike.rtl_templates.synapse import INPUT_LATENCY, drain_latency

        (arrivals,) = inputs
        reads, last_n = self._rounds(node)
        finish = self._drain_model(node)
        out_delay = drain_latency(layer.requant is not None, node.fused is not None)
        ready = max(arrivals) + INPUT_LATENCY  # the walk starts once the whole frame (its nonzero list) is in
        out: list[int] = []
        t = -1
        lastpops: list[int] = []
        for g, words in enumerate(reads):
            for _ in words:
                t = max(t + 1, ready)
            pops, t = finish(t, node.pes if g < len(reads) - 1 else last_n, lastpops)
            out.extend(p + out_delay for p in pops)
        return out

    def accumulator_window(self, node) -> int:
        """Clocks from a frame's first accumulator to its last (the walk of all groups but the first, and the
        last group's pops), by the engine's model with the whole frame in: what ``bitspike sim --trace``
        measures on the ``acc`` taps (:class:`bitspike.sim.activity.ZeroSkipActivity`)."""
        reads, last_n = self._rounds(node)
        finish = self._drain_model(node)
        t, lastpops, pops_all = -1, [], []
        for g, words in enumerate(reads):
            pops, t = finish(t + len(words), node.pes if g < len(reads) - 1 else last_n, lastpops)
            pops_all += pops
        return pops_all[-1] - pops_all[0] + 1

    @staticmethod
    def node_from_report(entry: dict, nonzero_rate: float | None = None) -> LinearNode:
        """A linear node with the geometry and folding of a report's layer entry (for the cycle models)."""
        z = entry.get("zero_skip") or {}
        rate = z.get("nonzero_rate", 1.0) if nonzero_rate is None else nonzero_rate
        return LinearNode(index=int(entry["index"]), name=entry["name"], op="linear", engine=entry["engine"],
                          in_features=int(entry["in_features"]), out_features=int(entry["out_features"]),
                          pes=int(entry["pes"]), lanes=int(entry["lanes"]), widths=dict(entry["widths"]),
                          zero_skip="zero_skip" in entry, nonzero_rate=float(rate))

    def estimate_luts(self, node):
        base = super().estimate_luts(node)
        return base + self.zero_skip_luts(node) if getattr(node, "zero_skip", False) else base

    def memories(self, node):
        out = super().memories(node)
        if getattr(node, "zero_skip", False):  # the nonzero list: 2 banks of word indices
            from bitspike.rtl_templates.zeroskip import list_in_block_ram

            J = node.frame_words
            out.append((2 * J, max(1, (J - 1).bit_length()), "block" if list_in_block_ram(J) else "ram"))
        return out

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
        kwargs = self.engine_kwargs(plan, node, layer, debug)
        if getattr(node, "zero_skip", False):
            from bitspike.rtl_templates.zeroskip import zero_skip_generator

            kwargs["address_generator"] = zero_skip_generator
        return LinearEngine(weight=weight, **kwargs)


LINEAR = register_op(LinearOp())
