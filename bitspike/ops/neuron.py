"""The neuron and what the two synaptic ops (linear, conv2d) share.

A synaptic layer is a multi-bit neuron (B_s-bit spikes, T timesteps,
threshold θ = 2**k) at its input, feeding a synapse of B_w-bit weights, a
bias and a requantizer (docs/SEMANTICS.md §4). Everything here is common to
:mod:`bitspike.ops.linear` and :mod:`bitspike.ops.conv2d`; each of those
adds only its synapse: its weight shape, its integer sum, its plan geometry
and its engine class.

* schema: :class:`SynapticLayer` (fields ``w_bits``, ``s_bits``,
  ``timesteps``, ``k``, ``requant``) and :class:`Requant`;
* range rule: the neuron's exact ranges (:func:`bitspike.ranges.neuron_ranges`),
  then the accumulator per output channel from the weights' signs, then the
  requantizer's product and clamp;
* golden forward: :func:`bitspike.ops.kernels.neuron_steps`, the op's sum,
  the requantizer (exact in Python integers when the product may leave int64);
* plan: :class:`SynapticNode`, its widths, folding into ``pes × lanes``,
  LUT estimate, DSP candidates, busy cycles and the arrival-time model of the
  pipelined engine (:mod:`bitspike.rtl_templates.synapse`);
* export and audit: the requantizer constants from the trained layer
  (BatchNorm folded), and the rounding interval the audit propagates.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Mapping

import numpy as np

from bitspike.ranges import LayerRanges, Range, neuron_ranges
from bitspike.gen.ir import PlanNode

from .base import (
    BIAS_LIMIT,
    CURRENT_LIMIT,
    K_RANGE,
    MULT_LIMIT,
    S_BITS_RANGE,
    SHIFT_RANGE,
    TIMESTEPS_RANGE,
    W_BITS_RANGE,
    Ctx,
    Layer,
    Op,
    Requant,
    divisors,
    rounding_term,
    spike_max,
    weight_limit,
)

__all__ = ["Requant", "SynapticLayer", "SynapticNode", "SynapticOp"]


@dataclass(frozen=True, eq=False)
class SynapticLayer(Layer):
    """A neuron (B_s, T, θ = 2**k) feeding a linear or conv2d synapse of B_w-bit weights."""

    json_fields: ClassVar[tuple[str, ...]] = ("w_bits", "s_bits", "timesteps", "k", "requant")

    w_bits: int = 8
    s_bits: int = 8
    timesteps: int = 1
    k: int = 0
    weight: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    bias: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    requant: Requant | None = None

    @property
    def is_synaptic(self) -> bool:
        return True

    @property
    def is_output(self) -> bool:
        return self.requant is None

    @property
    def gives_logits(self) -> bool:
        return self.requant is None

    @property
    def weight_bits(self) -> int:
        return self.params * self.w_bits

    @property
    def threshold(self) -> int:
        return 1 << self.k

    @property
    def spike_max(self) -> int:
        return spike_max(self.s_bits)

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def fan_in(self) -> int:
        return int(np.prod(self.weight.shape[1:]))

    @property
    def params(self) -> int:
        return int(self.weight.size)

    @property
    def macs(self) -> int:
        raise NotImplementedError

    def extra_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "w_bits": self.w_bits,
            "s_bits": self.s_bits,
            "timesteps": self.timesteps,
            "k": self.k,
            "requant": None
            if self.requant is None
            else {"shift": self.requant.shift, "lo": self.requant.lo, "hi": self.requant.hi},
        }
        return out

    def tensors(self) -> dict[str, np.ndarray]:
        out = {f"{self.name}.weight": self.weight, f"{self.name}.bias": self.bias}
        if self.requant is not None:
            out[f"{self.name}.rq_mult"] = self.requant.multiplier
            out[f"{self.name}.rq_bias"] = self.requant.bias
        return out

    @classmethod
    def _parse_neuron_and_synapse(
        cls, meta: Mapping[str, Any], tensors: Mapping[str, np.ndarray], ctx: Ctx, weight_shape: tuple[int, ...], name: str
    ) -> dict[str, Any]:
        w_bits = ctx.int_in(meta, "w_bits", *W_BITS_RANGE)
        s_bits = ctx.int_in(meta, "s_bits", *S_BITS_RANGE)
        timesteps = ctx.int_in(meta, "timesteps", *TIMESTEPS_RANGE)
        k = ctx.int_in(meta, "k", *K_RANGE)
        lim = weight_limit(w_bits)
        weight = ctx.tensor(
            tensors, f"{name}.weight", weight_shape, -lim, lim, what=f" (B_w = {w_bits} allows −{lim} … {lim})"
        )
        if w_bits == 1 and weight.size and bool((weight == 0).any()):
            idx = np.argwhere(weight == 0)[0]
            raise ctx.fail(f"{name}.weight", f"value 0 at {idx.tolist()}: B_w = 1 weights must be −1 or +1")
        out = weight_shape[0]
        bias = ctx.tensor(tensors, f"{name}.bias", (out,), -BIAS_LIMIT + 1, BIAS_LIMIT - 1)
        rq_meta = ctx.get(meta, "requant")
        requant = None
        if rq_meta is not None:
            if not isinstance(rq_meta, Mapping):
                raise ctx.fail("requant", f"expected an object or null, got {rq_meta!r}")
            ctx.keys(rq_meta, ("shift", "lo", "hi"), "requant")
            shift = ctx.int_in(rq_meta, "shift", *SHIFT_RANGE)
            lo = ctx.int_in(rq_meta, "lo", -CURRENT_LIMIT, CURRENT_LIMIT)
            hi = ctx.int_in(rq_meta, "hi", -CURRENT_LIMIT, CURRENT_LIMIT)
            if lo > hi:
                raise ctx.fail("requant", f"clamp bounds lo = {lo} > hi = {hi}")
            mult = ctx.tensor(tensors, f"{name}.rq_mult", (out,), -MULT_LIMIT + 1, MULT_LIMIT - 1)
            rq_bias = ctx.tensor(tensors, f"{name}.rq_bias", (out,), -BIAS_LIMIT + 1, BIAS_LIMIT - 1)
            requant = Requant(multiplier=mult, bias=rq_bias, shift=shift, lo=lo, hi=hi)
        return dict(w_bits=w_bits, s_bits=s_bits, timesteps=timesteps, k=k, weight=weight, bias=bias, requant=requant)




def _fits_int64(lo_c: np.ndarray, hi_c: np.ndarray) -> bool:
    return -(2**63) <= int(np.min(lo_c)) and int(np.max(hi_c)) <= 2**63 - 1


@dataclass(frozen=True)
class SynapticNode(PlanNode):
    """A synaptic engine: neuron, ``pes × lanes`` PE array over a ``kernel`` window, requantizer."""

    w_bits: int = 1
    s_bits: int = 1
    timesteps: int = 1
    k: int = 0
    params: int = 0
    macs: int = 0
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    # products that may be DSP multiplies (bitspike.gen.dsp); None: every product that is not narrow
    dsp_blocks: int | None = None
    # streaming order permutation of the weight columns (None: identity)
    column_order: tuple[int, ...] | None = None


class SynapticOp(Op):
    """The shared rules of the synaptic ops; subclasses give the synapse (:meth:`synapse`, :meth:`node`)."""

    taps: ClassVar[tuple[str, ...]] = ("x", "spk", "acc", "out")
    foldable: ClassVar[bool] = True
    synaptic: ClassVar[bool] = True

    # ---- the synapse: what linear and conv2d each define

    def synapse(self, count, weight, layer: SynapticLayer):
        """The accumulator before the bias: spike counts ``[N, *in_shape]`` (int64) → ``[N, *out_shape]``."""
        raise NotImplementedError

    def node(self, index: int, layer: SynapticLayer, manifest) -> SynapticNode:
        """The initial plan node (geometry of the op)."""
        raise NotImplementedError

    # ---- analysis

    def ranges(self, layer: SynapticLayer, inputs: list[Range]) -> LayerRanges:
        x = inputs[0]
        v_t, s, count = neuron_ranges(x, layer.k, layer.s_bits, layer.timesteps)
        v = v_t[0]
        for r in v_t[1:]:
            v = v.union(r)
        # Python integers (object arrays): the analysis itself must never overflow
        w = layer.weight.reshape(layer.weight.shape[0], -1).astype(object)
        pos = np.where(w > 0, w, 0).sum(axis=1)
        neg = np.where(w < 0, w, 0).sum(axis=1)
        bias = layer.bias.astype(object)
        acc_hi_c = pos * count.hi + neg * count.lo + bias
        acc_lo_c = neg * count.hi + pos * count.lo + bias
        acc = Range(int(acc_lo_c.min()), int(acc_hi_c.max()))
        per_channel = tuple((int(a), int(b)) for a, b in zip(acc_lo_c, acc_hi_c))
        if layer.requant is None:
            return LayerRanges(layer.name, layer.op, x, acc, v, tuple(v_t), s, count, acc, per_channel)
        rq = layer.requant
        m = rq.multiplier.astype(object)
        p1, p2 = acc_lo_c * m, acc_hi_c * m
        rq_bias = rq.bias.astype(object)
        prod_lo_c = np.minimum(p1, p2) + rq_bias + rounding_term(rq.shift)
        prod_hi_c = np.maximum(p1, p2) + rq_bias + rounding_term(rq.shift)
        product = Range(int(prod_lo_c.min()), int(prod_hi_c.max()))
        out_lo = max(rq.lo, min(rq.hi, int(prod_lo_c.min()) >> rq.shift))
        out_hi = min(rq.hi, max(rq.lo, int(prod_hi_c.max()) >> rq.shift))
        out = Range(out_lo, out_hi)
        return LayerRanges(layer.name, layer.op, x, out, v, tuple(v_t), s, count, acc, per_channel, product)

    def wide_product(self, layer: SynapticLayer, r: LayerRanges) -> bool:
        if layer.requant is None or r.acc_per_channel is None:
            return False
        rq = layer.requant
        acc = np.array(r.acc_per_channel, dtype=object).reshape(-1, 2)
        m = rq.multiplier.astype(object)
        p1, p2 = acc[:, 0] * m, acc[:, 1] * m
        lo1, hi1 = np.minimum(p1, p2), np.maximum(p1, p2)
        b = rq.bias.astype(object)
        rnd = rounding_term(rq.shift)
        return not (_fits_int64(lo1, hi1) and _fits_int64(lo1 + b, hi1 + b) and _fits_int64(lo1 + b + rnd, hi1 + b + rnd))

    def stats(self, layer: SynapticLayer) -> dict[str, Any]:
        macs = layer.macs
        return dict(w_bits=layer.w_bits, s_bits=layer.s_bits, timesteps=layer.timesteps, params=layer.params,
                    weight_memory_bits=layer.params * layer.w_bits, macs=macs,
                    s_ace=macs * layer.w_bits * layer.s_bits * layer.timesteps)

    # ---- golden model

    def forward(self, model, layer: SynapticLayer, xs: list, trace: bool):
        import torch

        from bitspike.ops.kernels import LayerTrace, neuron_steps, shift_round

        x = xs[0]
        r = model.ranges[layer.name]
        model.check(layer, "x", x, r.x)
        v, s = neuron_steps(x, layer.k, layer.s_bits, layer.timesteps)
        model.check(layer, "v", v, r.v)
        model.check(layer, "s", s, r.s)
        count = s.sum(dim=0)
        model.check(layer, "count", count, r.count)
        weight = model.cached(f"{layer.name}.weight", lambda: torch.from_numpy(layer.weight.astype(np.int64)))
        bias = torch.from_numpy(layer.bias)
        shape = (1, -1) + (1,) * (count.dim() - 2)
        acc = self.synapse(count, weight, layer) + bias.view(shape)
        model.check(layer, "acc", acc, r.acc)
        if layer.requant is None:
            out = acc
        else:
            rq = layer.requant
            if model.is_wide(layer):
                out = model.scale_wide(layer, "product", [(acc, rq.multiplier)], rq.bias, rq.shift, rq.lo, rq.hi, r)
            else:
                prod = acc * torch.from_numpy(rq.multiplier).view(shape) + torch.from_numpy(rq.bias).view(shape)
                model.check(layer, "product", prod + rounding_term(rq.shift), r.product)
                out = torch.clamp(shift_round(prod, rq.shift), rq.lo, rq.hi)
        model.check(layer, "out", out, r.out)
        return out, (LayerTrace(layer.name, layer.op, x, out, v, s, acc) if trace else None)

    # ---- plan

    def plan(self, index: int, layer: SynapticLayer, r: LayerRanges, manifest) -> SynapticNode:
        return self.node(index, layer, manifest)

    def widths(self, node: PlanNode, layer: SynapticLayer, r: LayerRanges) -> dict[str, int]:
        from bitspike.rtl_templates.synapse import partial_sum_range

        psum = partial_sum_range(layer.weight.reshape(layer.weight.shape[0], -1), r.count.hi)
        out = {"x": r.x.width, "v": r.v.width, "count": r.count.width, "psum": psum.width, "acc": r.acc.width,
               "out": r.out.width}
        if r.product is not None:
            out["product"] = r.product.width
        return out

    def fold(self, node: SynapticNode, layer: SynapticLayer, r: LayerRanges, pes: int, lanes: int) -> SynapticNode:
        from bitspike.errors import HardwareError
        from bitspike.rtl_templates.weight_mem import WeightLayout

        inputs = self.tap_inputs(node)
        if not 1 <= pes <= node.out_features:
            raise HardwareError(f"fold for '{node.name}': pes {pes} must be in 1 … {node.out_features} (its outputs)")
        if not 1 <= lanes <= inputs:
            raise HardwareError(f"fold for '{node.name}': lanes {lanes} must be in 1 … {inputs} (its inputs)")
        layout = WeightLayout(node.out_features, inputs, pes, lanes, node.w_bits, taps=node.kernel[0] * node.kernel[1])
        return replace(node, pes=pes, lanes=lanes, memory_bits=layout.memory_bits)

    def fold_choices(self, node: SynapticNode) -> tuple[list[int], list[int]]:
        """Divisors of the outputs and of :meth:`tap_inputs`: weight memories without padding."""
        return divisors(node.out_features), divisors(self.tap_inputs(node))

    def estimate_luts(self, node: SynapticNode) -> int:
        w = node.widths
        cw, psum = w["count"], w["psum"]
        mult = cw if node.w_bits == 1 else (node.w_bits * cw if node.w_bits * cw < 30 else 0)
        per_pe = node.lanes * (mult + psum) + 2 * psum
        neuron = 2 * node.timesteps * w["v"] if cw > 1 or node.timesteps > 1 else w["x"]
        requant = 3 * w["acc"] + w["out"]
        return 60 + node.pes * per_pe + neuron + requant + node.lanes * cw

    def dsp_candidates(self, layer: SynapticLayer, r: LayerRanges, node: SynapticNode) -> list[tuple[int, str]]:
        from bitspike.rtl_templates.synapse import dsp_candidates

        requant = layer.requant
        return dsp_candidates(w_bits=layer.w_bits, count_width=r.count.width, pes=node.pes, lanes=node.lanes,
                              acc_range=r.acc if requant is not None else None,
                              multipliers=requant.multiplier if requant is not None else None)

    def with_dsp_blocks(self, node: SynapticNode, blocks: int) -> SynapticNode:
        return replace(node, dsp_blocks=blocks)

    # ---- the engine's word structure: what the fold, memory and timing models read
    #
    # The engine computes the outputs of a pixel in rounds of ``pes`` (what the RTL calls an output
    # group). A round issues, for each kernel tap, the frame words it reads, one a clock, each
    # ``lanes`` inputs wide; its weights are stored in the same order. These three hooks describe that
    # structure. The defaults are the dense synapse (linear, a plain conv); an op whose outputs each
    # read only part of the inputs overrides them (:mod:`bitspike.ops.conv2d`), and the fold, memory,
    # busy and arrival models here follow without change.

    def tap_inputs(self, node: SynapticNode) -> int:
        """Inputs one output reads at one kernel tap (the weight's second axis); a weight word's
        ``lanes`` come from these. Dense: all ``in_features``."""
        return node.in_features

    def frame_words(self, node: SynapticNode) -> list[int]:
        """The frame words of one input pixel, in the order the engine stores them: for each, the last
        input of the pixel it holds (the word can be read once that input has arrived).
        Dense: ⌈in_features / lanes⌉ words of ``lanes`` consecutive inputs."""
        C, L = node.in_features, node.lanes
        return [min(C - 1, (j + 1) * L - 1) for j in range(-(-C // L))]

    def words_read(self, node: SynapticNode, round_: int) -> range:
        """The frame words of a pixel (indices into :meth:`frame_words`) that round ``round_`` (outputs
        ``round_ · pes`` on) reads at each kernel tap, in issue order. Dense: all of them."""
        return range(len(self.frame_words(node)))

    # timing: see bitspike.gen.timing for the clock-by-clock model these follow

    def _rounds(self, node: SynapticNode) -> tuple[list[range], int]:
        """Per round of a pixel, the frame words it reads per tap; and the outputs of the last round."""
        rounds = -(-node.out_features // node.pes)
        return [self.words_read(node, g) for g in range(rounds)], node.out_features - (rounds - 1) * node.pes

    @staticmethod
    def _drain_model(node: SynapticNode):
        """The PE-to-output part of the engine's timing, shared by the busy and the latency models.

        Returns ``finish(t_last, n, state) -> (pops, t_last)``: given the clock the round's last word
        would issue (inputs permitting), the round's outputs ``n`` and the running ``state`` (last-pop
        clocks so far), the clocks of its pops and the clock its last word really issues.
        """
        from bitspike.rtl_templates.synapse import HOLD_SLOTS, pe_latency

        E = pe_latency(node.lanes)

        def finish(t_last: int, n: int, lastpops: list[int]) -> tuple[list[int], int]:
            if len(lastpops) >= HOLD_SLOTS:  # a slot of the holding queue frees the clock after its last pop
                t_last = max(t_last, lastpops[-HOLD_SLOTS] + 1)
            first = t_last + E + 1
            if lastpops:
                first = max(first, lastpops[-1] + 1)
            lastpops.append(first + n - 1)
            return [first + p for p in range(n)], t_last

        return finish

    def busy_cycles(self, node: SynapticNode) -> int:
        reads, last_n = self._rounds(node)
        taps = node.kernel[0] * node.kernel[1]
        finish = self._drain_model(node)
        lastpops: list[int] = []
        t = -1
        frame_ends = []
        for _ in range(3):  # frames back to back, inputs always there: the third frame is in steady state
            for _pix in range(node.out_hw[0] * node.out_hw[1]):
                for g, words in enumerate(reads):
                    _, t = finish(t + taps * len(words), node.pes if g < len(reads) - 1 else last_n, lastpops)
            frame_ends.append(lastpops[-1])
        busy = frame_ends[2] - frame_ends[1]
        return max(busy, node.in_elements, node.out_elements)

    def arrival_times(self, node: SynapticNode, layer: SynapticLayer, plan, inputs: list[list[int]]) -> list[int]:
        from bitspike.rtl_templates.synapse import INPUT_LATENCY, drain_latency

        (arrivals,) = inputs
        reads, last_n = self._rounds(node)
        ends = self.frame_words(node)
        C, jn = node.in_features, len(ends)
        H, W = node.in_hw
        KH, KW = node.kernel
        never = -(10**9)
        finish = self._drain_model(node)
        out_delay = drain_latency("product" in node.widths)
        # ready[(ih*W + iw)*jn + j]: the clock from which that frame word can be read
        ready = [arrivals[pix * C + e] + INPUT_LATENCY for pix in range(H * W) for e in ends]
        out: list[int] = []
        t = -1
        lastpops: list[int] = []
        for oh in range(node.out_hw[0]):
            for ow in range(node.out_hw[1]):
                for g, words in enumerate(reads):
                    for ky in range(KH):
                        ih = oh * node.stride[0] + ky - node.padding[0]
                        for kx in range(KW):
                            iw = ow * node.stride[1] + kx - node.padding[1]
                            inside = 0 <= ih < H and 0 <= iw < W
                            for j in words:
                                r = ready[(ih * W + iw) * jn + j] if inside else never
                                t = max(t + 1, r)
                    pops, t = finish(t, node.pes if g < len(reads) - 1 else last_n, lastpops)
                    out.extend(p + out_delay for p in pops)
        return out

    def engine_kwargs(self, plan, node: SynapticNode, layer: SynapticLayer, debug: bool) -> dict[str, Any]:
        """The keyword arguments both engine classes take."""
        return dict(bias=layer.bias, w_bits=layer.w_bits, s_bits=layer.s_bits, timesteps=layer.timesteps, k=layer.k,
                    requant=layer.requant, ranges=plan.ranges[layer.name], pes=node.pes, lanes=node.lanes,
                    debug_taps=debug, dsp_blocks=node.dsp_blocks)

    # ---- export and audit

    def export_unit(self, node, producer: str, ctx) -> float:
        return ctx.neuron_unit(node)

    def export_neuron_hi(self, node, ctx) -> int:
        """The largest current the layer's neuron tells apart: q·2**k (larger ones give the same spikes)."""
        return (2**node.module.s_bits - 1) << ctx.ks[node.name]

    def export_fields(self, node) -> dict[str, Any]:
        """Fields of the op's layer beyond the shared ones (conv2d: its geometry)."""
        return {}

    def export_layer(self, node, ctx) -> SynapticLayer:
        layer = node.module
        w_int = layer.wq.integers(layer.weight.detach()).numpy()
        if layer.wq.bits.current() == 1:
            w_int = np.where(w_int == 0, 1, w_int)
        acc_unit = float(layer.wq.step.detach().double()) * float(layer.neuron.vth.detach().double()) / layer.timesteps
        bias = np.zeros(w_int.shape[0]) if layer.bias is None else layer.bias.detach().double().numpy()
        common = dict(name=node.name, inputs=(node.inputs[0],), in_shape=node.in_shape, out_shape=node.out_shape,
                      w_bits=layer.w_bits, s_bits=layer.s_bits, timesteps=layer.timesteps, k=ctx.ks[node.name],
                      weight=w_int, **self.export_fields(node))
        cls = self.layer_cls
        if layer.is_last:
            return cls(**common, bias=ctx.round(bias / acc_unit), requant=None)
        if layer.bn is not None:
            bn = layer.bn
            g = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
            c = bn.bias.detach().double().numpy() - g * bn.running_mean.detach().double().numpy()
        else:
            g, c = np.ones_like(bias), np.zeros_like(bias)
        unit = ctx.units[node.name]
        m_real = g * acc_unit / unit
        b_real = (g * bias + c) / unit
        shift = ctx.shift_for(float(np.abs(m_real).max()))
        mult = ctx.round(m_real * 2.0**shift)
        rq_bias = ctx.round(b_real * 2.0**shift)
        hi = ctx.clamp_hi(node.name)
        lo = 0 if layer.relu else -hi
        return cls(**common, bias=np.zeros(w_int.shape[0], np.int64),
                   requant=Requant(multiplier=mult, bias=rq_bias, shift=shift, lo=lo, hi=hi))

    def audit_hooks(self, node, outputs: dict, counts: dict) -> list:
        from bitspike.ops.hooks import NeuronTap, output_hook

        return [output_hook(node, outputs), NeuronTap(node.name, node.module, counts)]

    def audit_step(self, layer: SynapticLayer, state) -> None:
        """Certain neurons: the same spike count at both ends of the input interval as the float model."""
        import torch

        from bitspike.ops.hooks import FLOAT_MARGIN
        from bitspike.ops.kernels import spike_count

        n = state.n
        tr = state.trace[layer.name]
        lo, hi = state.iv[layer.inputs[0]]
        c_lo = spike_count(lo, layer.k, layer.s_bits, layer.timesteps)
        c_hi = spike_count(hi, layer.k, layer.s_bits, layer.timesteps)
        c_f = state.counts[layer.name]
        sure = ((c_lo == c_f) & (c_hi == c_f)).reshape(n, -1).all(dim=1)
        c_int = tr.s.sum(dim=0)
        broken = sure & state.certain & ~(c_int == c_f).reshape(n, -1).all(dim=1)
        for i in torch.nonzero(broken).flatten().tolist():
            state.violations.append(f"sample {state.start + i}: layer {layer.name!r} is certain but its spike counts differ")
        for i in torch.nonzero(state.certain & ~sure).flatten().tolist():
            state.first[i] = layer.name
        state.certain &= sure
        if layer.requant is not None:
            # integer interval holding the requantized current, from the float current and the rounding bound
            z_f = state.outputs[layer.name] / state.units[layer.name]
            rq = layer.requant
            err = 0.5 + (tr.acc.abs().to(torch.float64) * 0.5 + 0.5) / 2.0**rq.shift
            err = err + FLOAT_MARGIN * (1.0 + z_f.abs())
            lo = torch.ceil(z_f - err).to(torch.int64)
            hi = torch.floor(z_f + err).to(torch.int64)
            state.iv[layer.name] = (lo.clamp(rq.lo, rq.hi), hi.clamp(rq.lo, rq.hi))
