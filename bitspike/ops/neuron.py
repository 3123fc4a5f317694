"""The neuron and what the two synaptic ops (linear, conv2d) share.

A synaptic layer is a multi-bit neuron (B_s-bit spikes, T timesteps,
threshold θ = 2**k) at its input, feeding a synapse of B_w-bit weights, a
bias and a requantizer (docs/SEMANTICS.md §4). Everything here is common to
:mod:`bitspike.ops.linear` and :mod:`bitspike.ops.conv2d`; each of those
adds only its synapse: its weight shape, its integer sum, its plan geometry
and its engine class.

* schema: :class:`SynapticLayer` (fields ``w_bits``, ``s_bits``,
  ``timesteps``, ``k``, ``requant``, and since manifest version 2 an optional
  ``neuron`` object, :class:`SteppedNeuron`: the time-stepped IF/LIF neuron of
  docs/SEMANTICS.md §4.6) and :class:`Requant`;
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

from bitspike.errors import BitspikeError
from bitspike.ranges import LayerRanges, Range, neuron_ranges, stepped_neuron_ranges
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

__all__ = ["Requant", "SynapticLayer", "SynapticNode", "SynapticOp", "SteppedNeuron", "SteppedNode", "NEURON_MODES", "FIRE_RULES",
           "RESET_RULES", "NEURON_FIELDS", "THRESHOLD_LIMIT", "LEAK_SHIFT_RANGE"]

NEURON_MODES = ("squeezed", "stepped")
FIRE_RULES = ("round", "gt")
RESET_RULES = ("subtract", "zero")
#: the fields of a layer's ``neuron`` object
NEURON_FIELDS = ("mode", "fire", "reset", "leak", "threshold")
#: θ < THRESHOLD_LIMIT: with every register inside 62 bits, 2·v + θ stays inside int64
THRESHOLD_LIMIT = 2**40
LEAK_SHIFT_RANGE = (0, 32)


@dataclass(frozen=True)
class SteppedNeuron:
    """The integer neuron of one synaptic layer (docs/SEMANTICS.md §4.6; the update is in :mod:`bitspike.host.stepped`).

    Parameters
    ----------
    threshold
        θ, a positive integer (below :data:`THRESHOLD_LIMIT`).
    mode
        ``"stepped"`` (a new current every step, the synapse runs every step) or ``"squeezed"`` (one current
        for all steps, the synapse multiplies the spike count).
    fire
        ``"gt"`` (binary spike when v > θ; snnTorch, NIR) or ``"round"`` (the paper's multi-bit spike).
    reset
        ``"subtract"`` (v − s·θ, snnTorch's default) or ``"zero"`` (NIR's ``v_reset = 0``).
    leak_mul, leak_shift
        b and p: β = b / 2^p, with 0 ≤ b ≤ 2^p (snnTorch clamps β to [0, 1]). IF is b = 2^p (``1, 0``).
    spike_bits
        B_s; ``fire="gt"`` emits binary spikes, so it needs B_s = 1.

    Raises
    ------
    BitspikeError
        A field out of range; the message names the field and the value.
    """

    threshold: int
    mode: str = "stepped"
    fire: str = "gt"
    reset: str = "subtract"
    leak_mul: int = 1
    leak_shift: int = 0
    spike_bits: int = 1

    def __post_init__(self):
        problem = self.first_problem(**{f: getattr(self, f) for f in self.__dataclass_fields__})
        if problem is not None:
            name, expected = problem
            raise BitspikeError(f"neuron field '{name}': expected {expected}, not {getattr(self, name)!r}")

    @staticmethod
    def first_problem(threshold, mode, fire, reset, leak_mul, leak_shift, spike_bits) -> tuple[str, str] | None:
        """``(field, what was expected)`` for the first rule these values break, or ``None``."""
        is_int = lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool)  # noqa: E731
        p_ok = is_int(leak_shift) and LEAK_SHIFT_RANGE[0] <= leak_shift <= LEAK_SHIFT_RANGE[1]
        rules = [
            ("mode", lambda: mode in NEURON_MODES, f"one of {list(NEURON_MODES)}"),
            ("fire", lambda: fire in FIRE_RULES, f"one of {list(FIRE_RULES)}"),
            ("reset", lambda: reset in RESET_RULES, f"one of {list(RESET_RULES)}"),
            ("threshold", lambda: is_int(threshold) and 0 < threshold < THRESHOLD_LIMIT, "an integer 1 … 2**40 − 1"),
            ("leak_shift", lambda: p_ok, f"an integer {LEAK_SHIFT_RANGE[0]} … {LEAK_SHIFT_RANGE[1]}"),
            ("leak_mul", lambda: is_int(leak_mul) and 0 <= leak_mul <= (1 << leak_shift),
             "an integer 0 … 2**leak_shift (beta = b / 2**p in [0, 1])"),
            ("spike_bits", lambda: is_int(spike_bits) and spike_bits >= 1, "a positive integer"),
            ("spike_bits", lambda: fire != "gt" or spike_bits == 1, "1 with fire 'gt' (binary spikes)"),
        ]
        for name, ok, expected in rules:
            if not ok():
                return name, expected
        return None

    @property
    def beta(self) -> float:
        """The leak factor b / 2^p (1.0 for IF)."""
        return self.leak_mul / (1 << self.leak_shift)

    @property
    def is_if(self) -> bool:
        """True when the neuron does not leak (b = 2^p)."""
        return self.leak_mul == 1 << self.leak_shift

    @property
    def max_spike(self) -> int:
        return (1 << self.spike_bits) - 1

    @property
    def is_paper(self) -> bool:
        """The paper's neuron of §4.1 (squeezed, round, subtract, no leak, θ a power of two)."""
        return (self.mode, self.fire, self.reset) == ("squeezed", "round", "subtract") and self.is_if and (
            self.threshold & (self.threshold - 1) == 0)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "fire": self.fire, "reset": self.reset, "leak": [self.leak_mul, self.leak_shift],
                "threshold": self.threshold}


@dataclass(frozen=True, eq=False)
class SynapticLayer(Layer):
    """A neuron (B_s, T, θ = 2**k) feeding a linear or conv2d synapse of B_w-bit weights.

    ``stepped`` is ``None`` for the paper's neuron (θ = 2**k, the JSON has ``k``), else the layer's
    :class:`SteppedNeuron` (the JSON has a ``neuron`` object instead of ``k``, and ``k`` is 0 and unused).
    """

    json_fields: ClassVar[tuple[str, ...]] = ("w_bits", "s_bits", "timesteps", "k", "requant", "neuron")

    w_bits: int = 8
    s_bits: int = 8
    timesteps: int = 1
    k: int = 0
    weight: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    bias: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    requant: Requant | None = None
    stepped: SteppedNeuron | None = None

    @property
    def is_synaptic(self) -> bool:
        return True

    @property
    def neuron(self) -> SteppedNeuron:
        """The layer's neuron in the fields of §4.6 (the paper's neuron too: squeezed, round, subtract, IF)."""
        if self.stepped is not None:
            return self.stepped
        return SteppedNeuron(threshold=1 << self.k, mode="squeezed", fire="round", spike_bits=self.s_bits)

    @property
    def min_version(self) -> int:
        """The manifest version that can hold the layer (2: a ``neuron`` object)."""
        return 1 if self.stepped is None else 2

    def steps_out(self, in_steps: list[int | None], ctx: Ctx) -> int | None:
        """How many per-step currents the layer emits (``None``: one current for all steps).

        A stepped layer takes a constant current (the network input, a squeezed layer's output) or the
        per-step currents of stepped layers with the same T; its output is per step, except for the last
        layer, whose logits are summed over the steps. A squeezed layer needs a constant current.
        """
        (steps,) = in_steps
        mode = self.neuron.mode
        if mode == "squeezed" and steps is not None:
            raise ctx.fail("neuron", f"a squeezed neuron needs one current for all steps, but its input "
                                     f"'{self.inputs[0]}' changes at each of {steps} steps; make it mode 'stepped'")
        if mode == "stepped" and steps is not None and steps != self.timesteps:
            raise ctx.fail("timesteps", f"{self.timesteps} steps, but its input '{self.inputs[0]}' gives {steps} "
                                        "per-step currents (stepped layers in a chain share T)")
        return self.timesteps if mode == "stepped" and self.requant is not None else None

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
        """θ: 2**k for the paper's neuron, else the ``neuron`` object's."""
        return 1 << self.k if self.stepped is None else self.stepped.threshold

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
            "requant": None
            if self.requant is None
            else {"shift": self.requant.shift, "lo": self.requant.lo, "hi": self.requant.hi},
        }
        if self.stepped is None:
            out["k"] = self.k
        else:
            out["neuron"] = self.stepped.to_json()
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
        stepped = None
        if "neuron" in meta:
            if "k" in meta:
                raise ctx.fail("k", "give either k (θ = 2**k, the paper's neuron) or a neuron object with its "
                                    "threshold, not both")
            k, stepped = 0, cls._parse_neuron(ctx.get(meta, "neuron"), s_bits, ctx)
            if stepped.is_paper:  # one network, one file: the paper's neuron is always written as k
                k, stepped = stepped.threshold.bit_length() - 1, None
        else:
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
        return dict(w_bits=w_bits, s_bits=s_bits, timesteps=timesteps, k=k, weight=weight, bias=bias, requant=requant,
                    stepped=stepped)

    @staticmethod
    def _parse_neuron(meta: Any, s_bits: int, ctx: Ctx) -> SteppedNeuron:
        if not isinstance(meta, Mapping):
            raise ctx.fail("neuron", f"expected an object with fields {list(NEURON_FIELDS)}, got {meta!r:.80}")
        ctx.keys(meta, NEURON_FIELDS, "neuron")
        values = {name: ctx.get(meta, name) for name in NEURON_FIELDS}
        leak = values.pop("leak")
        if (not isinstance(leak, list) or len(leak) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in leak)):
            raise ctx.fail("neuron.leak", f"expected [b, p], two integers (beta = b / 2**p), got {leak!r:.80}")
        for name in ("mode", "fire", "reset"):
            if not isinstance(values[name], str):
                raise ctx.fail(f"neuron.{name}", f"expected a string, got {values[name]!r:.80}")
        fields = dict(values, leak_mul=leak[0], leak_shift=leak[1], spike_bits=s_bits)
        problem = SteppedNeuron.first_problem(**fields)
        if problem is not None:
            name, expected = problem
            where = "s_bits" if name == "spike_bits" else ("neuron.leak" if name.startswith("leak") else f"neuron.{name}")
            raise ctx.fail(where, f"expected {expected}, got {fields[name]!r:.80}")
        if fields["leak_mul"] == 1 << fields["leak_shift"]:  # every b = 2**p is the same neuron: store it one way
            fields.update(leak_mul=1, leak_shift=0)
        return SteppedNeuron(**fields)




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
    # fused requantize-and-fire (bitspike.gen.fuse): the drain's thresholds (y carries the next
    # layer's counts, fused_width bits), and whether x carries counts (the neuron is left out)
    fused: Any = None
    fused_width: int = 0
    counts_in: bool = False
    # shorter register-to-register paths, the same cycles (--fast-paths): the PE array's accumulators
    # clear after a group's last word, the drain's queue state is in registered flags
    # (bitspike.rtl_templates.synapse.SynapticEngine's fast_paths)
    fast_paths: bool = False
    # a shallow, wide weight memory may be a LUT ROM (bitspike.rtl_templates.synapse.weight_memory_style):
    # set by the device filler (bitspike.gen.folding), whose budget weighs block RAMs against LUTs
    weight_rom: bool = False

    @property
    def pe_lanes(self) -> int:
        """Products a PE sums per clock (the lanes; a multi-tap conv's are ``taps × lanes``)."""
        return self.lanes

    #: groups a queue in front of the drain holds (reservations beyond the holding queue's) and its latency
    #: (a multi-tap conv's, :mod:`bitspike.rtl_templates.multitap`)
    queue_groups: ClassVar[int] = 0
    queue_latency: ClassVar[int] = 0
    #: clocks a register between the input memory and the PE array adds (a multi-tap conv's bank outputs)
    bank_latency: ClassVar[int] = 0


class SynapticOp(Op):
    """The shared rules of the synaptic ops; subclasses give the synapse (:meth:`synapse`, :meth:`node`)."""

    taps: ClassVar[tuple[str, ...]] = ("x", "spk", "acc", "out", "cnt")
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
        leak = None
        bias_times = 1  # how many times the bias enters the accumulator
        if layer.stepped is None:
            v_t, s, count = neuron_ranges(x, layer.k, layer.s_bits, layer.timesteps)
            syn_count = count  # the synapse multiplies the spike count
        else:
            n = layer.stepped
            v_t, s_t, leak = stepped_neuron_ranges(x, threshold=n.threshold, fire=n.fire, reset=n.reset,
                                                   leak_mul=n.leak_mul, leak_shift=n.leak_shift, s_bits=layer.s_bits,
                                                   timesteps=layer.timesteps)
            s = s_t[0]
            for r in s_t[1:]:
                s = s.union(r)
            count = Range(sum(r.lo for r in s_t), sum(r.hi for r in s_t))
            syn_count = count
            if n.mode == "stepped" and layer.requant is not None:
                syn_count = s  # the synapse runs every step on that step's spikes
            elif n.mode == "stepped":
                bias_times = layer.timesteps  # the logits are Σ_t (W·s_t + b)
        v = v_t[0]
        for r in v_t[1:]:
            v = v.union(r)
        # Python integers (object arrays): the analysis itself must never overflow
        w = layer.weight.reshape(layer.weight.shape[0], -1).astype(object)
        pos = np.where(w > 0, w, 0).sum(axis=1)
        neg = np.where(w < 0, w, 0).sum(axis=1)
        bias = layer.bias.astype(object) * bias_times
        acc_hi_c = pos * syn_count.hi + neg * syn_count.lo + bias
        acc_lo_c = neg * syn_count.hi + pos * syn_count.lo + bias
        acc = Range(int(acc_lo_c.min()), int(acc_hi_c.max()))
        per_channel = tuple((int(a), int(b)) for a, b in zip(acc_lo_c, acc_hi_c))
        if layer.requant is None:
            return LayerRanges(layer.name, layer.op, x, acc, v, tuple(v_t), s, count, acc, per_channel, leak=leak)
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
        return LayerRanges(layer.name, layer.op, x, out, v, tuple(v_t), s, count, acc, per_channel, product, leak=leak)

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
        weight = model.cached(f"{layer.name}.weight", lambda: torch.from_numpy(layer.weight.astype(np.int64)))
        bias = torch.from_numpy(layer.bias)
        if layer.stepped is None:
            v, s = neuron_steps(x, layer.k, layer.s_bits, layer.timesteps)
        else:
            # the time-stepped neuron of §4.6, run by the golden model's one implementation (bitspike.host.stepped);
            # x is [T, N, ...] when the input changes per step, else [N, ...]
            v, s = model.stepped_neuron(layer, x)
        model.check(layer, "v", v, r.v)
        model.check(layer, "s", s, r.s)
        count = s.sum(dim=0)
        model.check(layer, "count", count, r.count)
        shape = (1, -1) + (1,) * (count.dim() - 2)
        per_step = layer.stepped is not None and layer.stepped.mode == "stepped"
        if per_step:
            # the synapse runs at every step on that step's spikes: the steps are folded into the batch axis
            acc = self.synapse(s.flatten(0, 1), weight, layer) + bias.view(shape)
            if layer.requant is None:
                acc = acc.unflatten(0, s.shape[:2]).sum(dim=0)  # the logits: Σ_t acc_t
        else:
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
        if per_step and layer.requant is not None:  # every step requantized alike; the steps unfolded again
            out = out.unflatten(0, s.shape[:2])
            acc = acc.unflatten(0, s.shape[:2])
        model.check(layer, "out", out, r.out)
        return out, (LayerTrace(layer.name, layer.op, x, out, v, s, acc) if trace else None)

    # ---- plan

    def plan(self, index: int, layer: SynapticLayer, r: LayerRanges, manifest) -> SynapticNode:
        if layer.stepped is not None:  # a time-stepped neuron: the engine of the op's stepped_node (or a refusal)
            return self.stepped_node(index, layer, r, manifest)
        return self.node(index, layer, manifest)

    def stepped_node(self, index: int, layer: SynapticLayer, r: LayerRanges, manifest) -> SynapticNode:
        """The plan node of a layer with a ``neuron`` object; an op without a stepped engine refuses it."""
        from bitspike.errors import HardwareError

        raise HardwareError(_stepped_refusal(index, layer, f"the generator has no stepped engine for op '{layer.op}' "
                                                           "(stepped layers are built for op 'linear' only)"))

    def widths(self, node: PlanNode, layer: SynapticLayer, r: LayerRanges) -> dict[str, int]:
        if isinstance(node, SteppedNode):
            return stepped_widths(node, layer, r)
        from bitspike.rtl_templates.synapse import partial_sum_range

        psum = partial_sum_range(layer.weight.reshape(layer.weight.shape[0], -1), r.count.hi)
        out = {"x": r.x.width, "v": r.v.width, "count": r.count.width, "psum": psum.width, "acc": r.acc.width,
               "out": r.out.width}
        if r.product is not None:
            out["product"] = r.product.width
        return out

    # ---- fused requantize-and-fire

    def fused_output(self, layer: SynapticLayer, r: LayerRanges, consumer):
        from bitspike.rtl_templates.threshold import ENUMERATION_LIMIT, fused_thresholds

        if layer.requant is None:
            return "the output layer has no requantizer"
        if layer.stepped is not None:
            return "its neuron is time-stepped"
        rq = layer.requant
        if rq.hi - rq.lo + 1 > ENUMERATION_LIMIT:
            return (f"its current range {rq.lo} … {rq.hi} holds more than {ENUMERATION_LIMIT} values, too many to "
                    "check the thresholds by enumeration")
        fused = fused_thresholds(rq.multiplier, rq.bias, rq.shift, rq.lo, rq.hi, r.acc, consumer.k, consumer.s_bits,
                                 consumer.timesteps)
        if fused is None:
            return (f"the spike count of '{consumer.name}' is not monotone in its current over {rq.lo} … {rq.hi}, "
                    "so no thresholds are exact")
        return fused

    def counts_refused(self, layer: SynapticLayer) -> str | None:
        if layer.stepped is not None:
            return f"'{layer.name}' has a time-stepped neuron (only the paper's squeezed neuron fires from a count)"
        return None

    def fusion_saving(self, layer: SynapticLayer, r: LayerRanges, node: SynapticNode, consumer: SynapticNode, fused,
                      dsp_blocks: int | None) -> int:
        """:func:`bitspike.rtl_templates.threshold.fusion_lut_saving` for this requantizer and the consumer's neuron.

        The requantizer's multiply is taken to have DSP blocks unless the device has none
        (``dsp_blocks == 0``); the consumer's neuron is :meth:`neuron_luts`.
        """
        from bitspike.rtl_templates.drain import const_range
        from bitspike.rtl_templates.threshold import fusion_lut_saving

        rq = layer.requant
        brnd = [int(v) + rounding_term(rq.shift) for v in rq.bias]
        return fusion_lut_saving(fused, acc_width=r.acc.width, mult_width=const_range(rq.multiplier).width,
                                 bias_width=const_range(brnd).width, out_width=r.out.width,
                                 requant_in_dsp=dsp_blocks != 0, neuron_luts=self.neuron_luts(consumer))

    def with_fusion(self, node: SynapticNode, fused=None, fused_width: int = 0, counts_in: bool = False) -> SynapticNode:
        widths = dict(node.widths)
        if fused is not None:
            from bitspike.rtl_templates.threshold import threshold_words

            widths.pop("product", None)  # no multiply: the thresholds' width instead
            widths["threshold"] = threshold_words(fused)[2]
            widths["out"] = fused_width
        if counts_in:
            widths.pop("x", None)  # no neuron: the counts arrive
            widths.pop("v", None)
        return replace(node, widths=widths, fused=fused if fused is not None else node.fused,
                       fused_width=fused_width if fused is not None else node.fused_width,
                       counts_in=counts_in or node.counts_in)

    def fold(self, node: SynapticNode, layer: SynapticLayer, r: LayerRanges, pes: int, lanes: int) -> SynapticNode:
        if isinstance(node, SteppedNode):
            return stepped_fold(node, layer, pes, lanes)
        from bitspike.errors import HardwareError
        from bitspike.rtl_templates.weight_mem import WeightLayout

        inputs = self.tap_inputs(node)
        if not 1 <= pes <= node.out_features:
            raise HardwareError(f"fold for '{node.name}': pes {pes} must be in 1 … {node.out_features} (its outputs)")
        if not 1 <= lanes <= inputs:
            raise HardwareError(f"fold for '{node.name}': lanes {lanes} must be in 1 … {inputs} (its inputs)")
        layout = WeightLayout(node.out_features, inputs, pes, lanes, node.w_bits, taps=node.kernel[0] * node.kernel[1])
        return replace(node, pes=pes, lanes=lanes, memory_bits=layout.memory_bits)

    def vector_unit(self, node: SynapticNode, side: str) -> int:
        """A beat's counts fill consecutive lanes of one frame word of one group (``in``: divides a group's
        inputs); a beat's outputs come from consecutive drain lanes of one PE group (``out``: divides
        the outputs). The stepped engine streams scalars."""
        if isinstance(node, SteppedNode):
            return 1
        return self.tap_inputs(node) if side == "in" else node.out_features

    def vector_fits(self, node: SynapticNode) -> bool:
        """``vec_in`` divides the lanes (a beat never spans two words) and ``vec_out`` the PEs (nor two groups)."""
        return (not isinstance(node, SteppedNode) and node.lanes % node.vec_in == 0 and node.pes % node.vec_out == 0
                and self.tap_inputs(node) % node.vec_in == 0 and node.out_features % node.vec_out == 0)

    def fold_choices(self, node: SynapticNode) -> tuple[list[int], list[int]]:
        """Divisors of the outputs and of :meth:`tap_inputs`: weight memories without padding."""
        if isinstance(node, SteppedNode):
            return divisors(node.out_features), [1]
        return divisors(node.out_features), divisors(self.tap_inputs(node))

    def estimate_luts(self, node: SynapticNode) -> int:
        if isinstance(node, SteppedNode):
            return stepped_luts(node)
        w = node.widths
        cw, psum = w["count"], w["psum"]
        mult = cw if node.w_bits == 1 else (node.w_bits * cw if node.w_bits * cw < 30 else 0)
        per_pe = node.pe_lanes * (mult + psum) + 2 * psum
        # a vector stream: vec_in neurons, vec_out drain lanes
        return (60 + node.pes * per_pe + node.vec_in * self.neuron_luts(node) + node.vec_out * self.output_luts(node)
                + node.lanes * cw + self.weight_rom_luts(node))

    def weight_layout(self, node: SynapticNode):
        """The :class:`~bitspike.rtl_templates.weight_mem.WeightLayout` of the node's fold."""
        from bitspike.rtl_templates.weight_mem import WeightLayout

        return WeightLayout(node.out_features, self.tap_inputs(node), node.pes, node.lanes, node.w_bits,
                            taps=node.kernel[0] * node.kernel[1])

    def weight_rom_luts(self, node: SynapticNode) -> int:
        """The estimate's share for a weight memory built as a LUT ROM (:func:`~bitspike.rtl_templates.synapse.
        weight_memory_style` ``"logic"``), in the model's units (two LUT4s each); 0 for the others (block RAM,
        and the small tables below :data:`~bitspike.rtl_templates.synapse.BLOCK_RAM_MIN_BITS`, which the
        model leaves out as before)."""
        from bitspike.rtl_templates.synapse import weight_memory_style, weight_rom_luts

        lay = self.weight_layout(node)
        if weight_memory_style(lay.depth, lay.word_bits, node.weight_rom) != "logic":
            return 0
        return -(-weight_rom_luts(lay.depth, lay.word_bits) // 2)

    @staticmethod
    def neuron_luts(node: SynapticNode) -> int:
        """The estimate's share for the neuron (none when the input carries counts)."""
        w = node.widths
        if node.counts_in:
            return 0
        return 2 * node.timesteps * w["v"] if w["count"] > 1 or node.timesteps > 1 else w["x"]

    @staticmethod
    def output_luts(node: SynapticNode) -> int:
        """The estimate's share for the requantizer, or for the fused thresholds that replace it.

        On the folder's basis, which leaves out the per-channel constant ROMs of both: the
        requantizer's staged adds and clamp (the multiply goes to DSP blocks), or one comparator (a
        carry chain as wide as the accumulator) per threshold level and the count's adder. (Whether
        to fuse is decided by :meth:`fusion_saving`, a finer model with the ROMs and the multiply.)
        """
        w = node.widths
        if node.fused is not None:
            return node.fused.levels * (w["acc"] + 3)
        return 3 * w["acc"] + w["out"]

    def estimate_ffs(self, node: SynapticNode) -> int:
        """Flip-flops of the engine's registers, counted from its structure (Yosys ``synth_ecp5`` of the digits
        MLP's fc1 at 4×4: 1,501; this model: 1,491).

        Per clock's word: the memory output and its register (``2·pes·lanes·B_w``), the frame read and its
        register (``2·lanes·count``), the product stages (:data:`~bitspike.rtl_templates.pe.PRODUCT_STAGES`
        registers of weight and count bits per product), the registered adder tree (``lanes − 1`` partial
        sums per PE), the accumulators and the holding queue, the requantizer's stages and the neuron.
        """
        if isinstance(node, SteppedNode):
            return stepped_ffs(node)
        from bitspike.rtl_templates.drain import HOLD_SLOTS
        from bitspike.rtl_templates.pe import PRODUCT_STAGES

        w = node.widths
        cw, psum, acc = w["count"], w["psum"], w["acc"]
        products = node.pes * node.pe_lanes
        word = 2 * products * node.w_bits + 2 * node.pe_lanes * cw
        stages = PRODUCT_STAGES * products * (node.w_bits + cw)
        tree = node.pes * max(0, node.pe_lanes - 1) * psum
        accumulate = (1 + HOLD_SLOTS) * node.pes * acc
        requant = node.vec_out * (3 * w.get("product", acc) + 2 * w["out"])  # per drain lane
        neuron = node.vec_in * (2 * w.get("v", 0) + cw)  # no v: a fused consumer
        return 60 + word + stages + tree + accumulate + requant + neuron

    def estimate_dsps(self, node: SynapticNode, layer: SynapticLayer, r: LayerRanges) -> int:
        n = len(self.dsp_candidates(layer, r, node))
        return self.reserved_dsps + (n if node.dsp_blocks is None else min(n, node.dsp_blocks))

    def memories(self, node: SynapticNode) -> list[tuple[int, int, str]]:
        """The weight memory (block RAM from :data:`~bitspike.rtl_templates.synapse.BLOCK_RAM_MIN_BITS` bits
        on, unless :func:`~bitspike.rtl_templates.synapse.weight_memory_style` makes it a LUT ROM) and the
        double-buffered frame memory of spike counts (``2·H·W`` pixels of frame words, a zero word after
        them when the window pads)."""
        if isinstance(node, SteppedNode):
            return stepped_memories(node)
        from bitspike.rtl_templates.synapse import weight_memory_style

        lay = self.weight_layout(node)
        frame = node.in_hw[0] * node.in_hw[1] * len(self.frame_words(node))
        has_pad = tuple(node.padding) != (0, 0)
        style = weight_memory_style(lay.depth, lay.word_bits, node.weight_rom)
        return [(lay.depth, lay.word_bits, "block" if style == "block" else "rom"),
                (2 * frame + has_pad, node.lanes * node.widths["count"], "ram")]

    def dsp_candidates(self, layer: SynapticLayer, r: LayerRanges, node: SynapticNode) -> list[tuple[int, str]]:
        if isinstance(node, SteppedNode):
            return stepped_dsp_candidates(node, layer, r)
        from bitspike.rtl_templates.synapse import dsp_candidates

        requant = layer.requant if node.fused is None else None  # fused thresholds have no multiply
        return dsp_candidates(w_bits=layer.w_bits, count_width=r.count.width, pes=node.pes, lanes=node.pe_lanes,
                              acc_range=r.acc if requant is not None else None,
                              multipliers=requant.multiplier if requant is not None else None,
                              drain_lanes=node.vec_out)

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
        clocks so far), the clocks of its outputs' pops (``vec_out`` outputs share a pop) and the clock
        its last word really issues.
        """
        from bitspike.rtl_templates.synapse import HOLD_SLOTS, pe_latency

        E, V = pe_latency(node.pe_lanes) + node.bank_latency + node.queue_latency, node.vec_out
        slots = HOLD_SLOTS + node.queue_groups

        def finish(t_last: int, n: int, lastpops: list[int]) -> tuple[list[int], int]:
            if len(lastpops) >= slots:  # a slot of the holding queue frees the clock after its last pop
                t_last = max(t_last, lastpops[-slots] + 1)
            first = t_last + E + 1
            if lastpops:
                first = max(first, lastpops[-1] + 1)
            lastpops.append(first + -(-n // V) - 1)
            return [first + p // V for p in range(n)], t_last

        return finish

    def busy_cycles(self, node: SynapticNode) -> int:
        if isinstance(node, SteppedNode):
            return stepped_busy_cycles(node)
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
        return max(busy, node.in_beats, node.out_beats)

    def arrival_times(self, node: SynapticNode, layer: SynapticLayer, plan, inputs: list[list[int]]) -> list[int]:
        if isinstance(node, SteppedNode):
            return stepped_arrival_times(node, inputs[0])
        from bitspike.rtl_templates.synapse import INPUT_LATENCY, drain_latency

        (arrivals,) = inputs
        reads, last_n = self._rounds(node)
        ends = self.frame_words(node)
        C, jn = node.in_features, len(ends)
        H, W = node.in_hw
        KH, KW = node.kernel
        never = -(10**9)
        finish = self._drain_model(node)
        out_delay = drain_latency(layer.requant is not None, node.fused is not None)
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
                    debug_taps=debug, dsp_blocks=node.dsp_blocks, fused=node.fused, fused_width=node.fused_width,
                    counts_in=node.counts_in, vec_in=node.vec_in, vec_out=node.vec_out,
                    # only when on: the stepped engine takes these keywords too and has no such stage
                    **({"fast_paths": True} if node.fast_paths else {}),
                    **({"weight_rom": True} if getattr(node, "weight_rom", False) else {}))

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


# ----------------------------------------------------------------------------------------------
# Stepped layers in hardware (docs/SEMANTICS.md §5): the plan, widths and timing of the event-driven
# engine (bitspike.rtl_templates.stepped). Kept apart from the squeezed engine's rules above: the
# SynapticOp hooks hand a SteppedNode to these functions.


@dataclass(frozen=True)
class SteppedNode(SynapticNode):
    """A stepped linear engine: per-input membranes, an event queue walked per output group, a drain.

    ``spike_rate`` is the fraction of the inputs the planner expects to spike per step (1.0: every input,
    the dense worst case, which the generator assumes unless told otherwise); ``dense`` makes the engine
    queue every input (a dense walk, for measuring what the events save).
    """

    per_step_input: bool = False
    requantized: bool = True  # False for the last layer: its logits are summed over the steps and drained once
    dense: bool = False
    spike_rate: float = 1.0
    neuron_fields: tuple[tuple[str, Any], ...] = ()

    def expected_events(self) -> int:
        """Events per step at :attr:`spike_rate` (every input for a dense walk)."""
        import math

        return self.in_features if self.dense else min(self.in_features, math.ceil(self.spike_rate * self.in_features))

    def neuron_latency(self) -> int:
        """Clocks from a neuron's issue to its write-back (:func:`~bitspike.rtl_templates.stepped.neuron_latency`)."""
        from bitspike.rtl_templates.stepped import NEURON_BASE_LATENCY, neuron_latency

        leak = dict(self.neuron_fields).get("leak")
        return NEURON_BASE_LATENCY if leak is None else neuron_latency(int(leak[0]), int(leak[1]))

    def to_json(self) -> dict[str, Any]:
        from bitspike.rtl_templates.stepped import stepped_step_cycles

        out = super().to_json()
        ev = self.expected_events()
        lat = self.neuron_latency()
        neuron_c, walk_c = stepped_step_cycles(ev, self.in_features, self.out_features, self.pes, lat)
        dense_n, dense_w = stepped_step_cycles(self.in_features, self.in_features, self.out_features, self.pes, lat)
        groups = -(-self.out_features // self.pes)
        out["stepped"] = {
            **dict(self.neuron_fields), "per_step_input": self.per_step_input, "walk": "dense" if self.dense else "events",
            "spike_rate": self.spike_rate, "expected_events_per_step": ev,
            # the walk's clocks per step: groups · max(events, 1) + gap; the neuron's: max(inputs, latency + 1)
            "walk_cycles_per_step": walk_c, "neuron_cycles_per_step": neuron_c,
            "dense_walk_cycles_per_step": dense_w, "cycles_per_event": groups,
        }
        return out


def _stepped_refusal(index: int, layer: SynapticLayer, why: str) -> str:
    n = layer.neuron
    return (f"layer {index} '{layer.name}': {why}. Its neuron: mode '{n.mode}', fire '{n.fire}', reset '{n.reset}', "
            f"leak {n.leak_mul}/2**{n.leak_shift}, threshold {n.threshold}, s_bits {layer.s_bits}. The golden model "
            "runs it (bitspike.host.golden.GoldenModel)")


def _layer_steps(manifest) -> dict[str, int | None]:
    """Per layer (and ``"input"``): T for per-step values, ``None`` for one value over all steps."""
    from .base import Ctx

    steps: dict[str, int | None] = {"input": None}
    for layer in manifest.layers:
        steps[layer.name] = layer.steps_out([steps[i] for i in layer.inputs], Ctx(layer.name))
    return steps


def stepped_linear_node(index: int, layer: SynapticLayer, manifest, column_order) -> SteppedNode:
    """The plan node of a stepped linear layer, or a :class:`HardwareError` naming what has no engine."""
    from bitspike.errors import HardwareError
    from bitspike.gen.ir import safe_name, stream_source
    from bitspike.rtl_templates.stepped import ROUND_SPIKE_LIMIT

    from .base import OPS

    n = layer.neuron
    if n.mode != "stepped":
        raise HardwareError(_stepped_refusal(index, layer, "field neuron.mode: the generator builds a squeezed "
                                                           "neuron only as the paper's (fire 'round', reset 'subtract', "
                                                           "no leak, threshold 2**k); make it mode 'stepped'"))
    if n.fire == "round" and n.max_spike > ROUND_SPIKE_LIMIT:
        raise HardwareError(_stepped_refusal(index, layer, f"field s_bits: a stepped 'round' neuron is built for at "
                                                           f"most {ROUND_SPIKE_LIMIT.bit_length()}-bit spikes"))
    for other in manifest.layers:  # per-step outputs go only to stepped engines
        if OPS[other.op].passthrough_stream or not any(stream_source(manifest, i) == layer.name for i in other.inputs):
            continue
        ok = other.op == "linear" and other.stepped is not None and other.stepped.mode == "stepped"
        if not ok:
            raise HardwareError(_stepped_refusal(index, layer, f"its per-step outputs feed layer '{other.name}' (op "
                                                               f"'{other.op}'), and the generator streams per-step "
                                                               "currents only into stepped linear layers"))
    per_step = _layer_steps(manifest)[layer.inputs[0]] is not None
    out_f, in_f = layer.weight.shape
    fields = (("mode", n.mode), ("fire", n.fire), ("reset", n.reset), ("leak", [n.leak_mul, n.leak_shift]),
              ("threshold", n.threshold))
    return SteppedNode(index=index, name=layer.name, op=layer.op, engine=f"e{index}_{safe_name(layer.name)}",
                       w_bits=layer.w_bits, s_bits=layer.s_bits, timesteps=layer.timesteps, k=layer.k,
                       in_features=in_f, out_features=out_f, params=layer.params, macs=layer.macs,
                       column_order=column_order, per_step_input=per_step, requantized=layer.requant is not None,
                       neuron_fields=fields)


def stepped_widths(node: SteppedNode, layer: SynapticLayer, r: LayerRanges) -> dict[str, int]:
    from bitspike.rtl_templates.synapse import partial_sum_range

    psum = partial_sum_range(layer.weight, r.s.hi if layer.requant is not None else r.count.hi)
    out = {"x": r.x.width, "v": r.v.width, "s": r.s.width, "psum": psum.width, "acc": r.acc.width, "out": r.out.width}
    if r.product is not None:
        out["product"] = r.product.width
    if r.leak is not None:
        out["leak"] = r.leak.width
    return out


def stepped_fold(node: SteppedNode, layer: SynapticLayer, pes: int, lanes: int) -> SteppedNode:
    from bitspike.errors import HardwareError
    from bitspike.rtl_templates.weight_mem import WeightLayout

    if not 1 <= pes <= node.out_features:
        raise HardwareError(f"fold for '{node.name}': pes {pes} must be in 1 … {node.out_features} (its outputs)")
    if lanes != 1:
        raise HardwareError(f"fold for '{node.name}': a stepped layer walks one event per clock; lanes must be 1, "
                            f"not {lanes}")
    layout = WeightLayout(node.out_features, node.in_features, pes, 1, node.w_bits)
    return replace(node, pes=pes, lanes=1, memory_bits=layout.memory_bits)


#: the stepped engine's LUT model: LUTs per unit of each of its terms (:func:`stepped_luts`), fitted to Yosys
#: ``synth_ice40`` of the engines alone (bench/stepped_hw.py --lut-model; bench/results/stepped_hw.md)
STEPPED_LUT_COEF = {"base": 165.0, "walk": 2.25, "neuron": 0.3, "leak": 0.33, "requant": 1.85, "cascade": 3.0}
#: the deepest block RAM mode the cascade term counts in (iCE40's SB_RAM40_4K as 512 × 8)
CASCADE_DEPTH = 512


def stepped_luts(node: SteppedNode) -> int:
    """LUTs of one stepped engine, from its structure and widths (:data:`STEPPED_LUT_COEF` per unit).

    - walk: per PE an accumulator and its drain registers (``2·psum``) and the weight × spike mux (``B_w``;
      ``B_w·B_s`` for a multi-bit spike);
    - neuron: the operand, membrane, compare and write-back path (``4·v + x``) and the counters of the
      neuron and the event queue (``10`` per index bit);
    - leak: the registered tree of the membrane's shifted copies, one adder as wide as the leak's product
      per set bit of b (none for IF);
    - requant: the requantizer's adds and clamp (``3·acc + out``; none for the last layer);
    - cascade: the read multiplexers and write decoders of the read-write memories (membranes, event
      queue, currents) deeper than one block RAM (each word bit, per block beyond the first in depth,
      :data:`CASCADE_DEPTH`); the weight memory's, a ROM, cost little more with depth;
    - base: the control (bank flags, step and group counters, the drain's handshakes).

    Fitted on the digits MLP (LIF and IF), and the Fashion conv network's 1,152-input layer at 4- and 8-bit
    weights, at 1–10 PEs: within ±11% of Yosys there (bench/results/stepped_hw.md).
    """
    import math

    w = node.widths
    c = STEPPED_LUT_COEF
    idx = max(1, (node.in_features - 1).bit_length())
    walk = node.pes * (2 * w["psum"] + (node.w_bits if node.s_bits == 1 else node.w_bits * node.s_bits))
    neuron = 4 * w["v"] + w["x"] + 10 * idx
    leak_mul, leak_shift = dict(node.neuron_fields).get("leak", (1, 0))
    leak = 0 if leak_mul == 1 << leak_shift else bin(leak_mul).count("1") * w.get("leak", 0)
    requant = 3 * w["acc"] + w["out"] if node.requantized else 0
    cascade = sum(width * max(0, math.ceil(depth / CASCADE_DEPTH) - 1)
                  for depth, width, kind in stepped_memories(node) if kind == "ram")
    return round(c["base"] + c["walk"] * walk + c["neuron"] * neuron + c["leak"] * leak + c["requant"] * requant
                 + c["cascade"] * cascade)


def stepped_memories(node: SteppedNode) -> list[tuple[int, int, str]]:
    """The memories of :class:`~bitspike.rtl_templates.stepped.SteppedLinearEngine`: the weights (block RAM
    from :data:`~bitspike.rtl_templates.synapse.BLOCK_RAM_MIN_BITS` bits on), the membranes and last spikes
    (one word per input), the two-bank event queue (address and spike), the two-bank current memory of a
    constant input, and the last layer's carry of group sums."""
    from bitspike.rtl_templates.synapse import BLOCK_RAM_MIN_BITS
    from bitspike.rtl_templates.weight_mem import WeightLayout

    w, C = node.widths, node.in_features
    sb = max(1, node.s_bits)
    lay = WeightLayout(node.out_features, C, node.pes, 1, node.w_bits)
    out = [(lay.depth, lay.word_bits, "block" if lay.memory_bits >= BLOCK_RAM_MIN_BITS else "rom"),
           (C, w["v"] + sb, "ram"), (2 * C, max(1, (C - 1).bit_length()) + sb, "ram")]
    if not node.per_step_input:
        out.append((2 * C, w["x"], "ram"))
    if not node.requantized:
        out.append((-(-node.out_features // node.pes), node.pes * w["psum"], "ram"))
    return out


def stepped_ffs(node: SteppedNode) -> int:
    """Flip-flops of the stepped engine's registers, counted from its structure: the neuron's stages (the
    current and membrane words through :meth:`SteppedNode.neuron_latency` stages, the leak tree's partial
    sums: half of one leak-product word per set bit of b, Yosys trims their constant low bits), the walk's
    stage registers (event, weight word), the accumulators and the drain's holding queue, the
    requantizer's stages, and the control (bank flags, counters, handshakes). Against Yosys ``synth_ice40`` of
    the engines the LUT model was fitted on: within ±11%."""
    from bitspike.rtl_templates.drain import HOLD_SLOTS

    w = node.widths
    v, x, psum, acc = w["v"], w["x"], w["psum"], w["acc"]
    idx = max(1, (node.in_features - 1).bit_length())
    leak_mul, leak_shift = dict(node.neuron_fields).get("leak", (1, 0))
    tree = 0 if leak_mul == 1 << leak_shift else bin(leak_mul).count("1") * w.get("leak", 0) // 2
    neuron = node.neuron_latency() * (v + idx + 4) + x + 2 * w.get("leak", 0) + tree
    walk = 3 * (idx + node.s_bits) + 2 * node.pes * node.w_bits
    accumulate = (1 + HOLD_SLOTS) * node.pes * psum
    requant = (3 * w.get("product", acc) + 2 * w["out"]) if node.requantized else 0
    return 160 + neuron + walk + accumulate + requant


def stepped_dsp_candidates(node: SteppedNode, layer: SynapticLayer, r: LayerRanges) -> list[tuple[int, str]]:
    from bitspike.rtl_templates.synapse import dsp_candidates

    requant = layer.requant
    # the walk's products are weight × spike (B_s ≤ 4 bits): narrow, never DSP candidates
    return dsp_candidates(w_bits=layer.w_bits, count_width=1, pes=node.pes, lanes=1,
                          acc_range=r.acc if requant is not None else None,
                          multipliers=requant.multiplier if requant is not None else None)


def stepped_busy_cycles(node: SteppedNode) -> int:
    """Clocks per inference in steady state at the expected spike rate: T steps of the slower of the
    neuron and the walk (they overlap: the event queue has two banks)."""
    from bitspike.rtl_templates.stepped import stepped_step_cycles

    neuron_c, walk_c = stepped_step_cycles(node.expected_events(), node.in_features, node.out_features, node.pes,
                                           node.neuron_latency())
    return node.timesteps * max(neuron_c, walk_c)


def stepped_arrival_times(node: SteppedNode, arrivals: list[int]) -> list[int]:
    """Output beat clocks at the expected spike rate (a prediction: the real walk follows the spikes).

    The neuron issues input (t, i) at the earliest clock after the previous input, not before it arrives
    (a per-step current is taken as it arrives; a constant current is written into the current memory on
    arrival and read at step 0 one clock later), not before the event bank of step t is free, and, at a
    step's start, not before the previous step's write-backs are due
    (:func:`~bitspike.rtl_templates.stepped.neuron_latency` clocks after issue). The walk of step t starts
    the clock after the step's last write-back and once the previous walk is done; a group's sums reach the drain
    :data:`~bitspike.rtl_templates.stepped.WALK_LATENCY` clocks after its last slot, and leave one per
    clock, :func:`~bitspike.rtl_templates.drain.drain_latency` later.
    """
    from bitspike.rtl_templates.drain import drain_latency
    from bitspike.rtl_templates.stepped import STEP_GAP, WALK_LATENCY

    T, C, O, P = node.timesteps, node.in_features, node.out_features, node.pes
    G = -(-O // P)
    K = node.neuron_latency()
    wait = max(0, K + 1 - C)
    per_group = max(node.expected_events(), 1)
    out_delay = drain_latency(node.requantized)
    drains_each_step = node.requantized
    t_issue = -1
    walk_free = -1
    bank_free = [-1, -1]
    out: list[int] = []
    last_pop = -1
    for t in range(T):
        first = max(t_issue + 1 + wait, bank_free[t % 2])
        for i in range(C):
            a = arrivals[t * C + i] if node.per_step_input else (arrivals[i] + 1 if t == 0 else -1)
            t_issue = max(first if i == 0 else t_issue + 1, a)
        queued = t_issue + K + 1  # the step's last write-back is done, its event bank is full
        start = max(queued, walk_free)
        ends = [start + (g + 1) * per_group - 1 for g in range(G)]
        walk_free = ends[-1] + 1 + STEP_GAP
        bank_free[t % 2] = ends[-1] + 1
        if drains_each_step or t == T - 1:
            for g, end in enumerate(ends):
                for _p in range(min(P, O - g * P)):
                    last_pop = max(end + WALK_LATENCY + 1, last_pop + 1)
                    out.append(last_pop + out_delay)
    return out
