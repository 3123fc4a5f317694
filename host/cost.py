"""Hardware cost of a bit allocation: the units ``bitspike train --cost`` budgets (docs/TRAINING.md).

Units (every one a sum over the network's synaptic layers, the fixed first layer included):

``bb``
    The paper's bit budget B̄_w·B̄_s·T̄ (the trainer's own averages; not computed here).
``sace``
    Synaptic accumulate operations, bit-weighted: Σ_l MACs_l · B_w,l · B_s,l · T_l, where MACs_l is
    the layer's multiply-accumulates per inference (weights × output positions for a convolution);
    the same count as :func:`bitspike.analysis.network_stats`'s ``s_ace_all``.
``memory``
    Weight memory in bits: Σ_l params_l · B_w,l.
``luts``
    The generator's LUT estimate (:func:`bitspike.gen.folding.estimate_luts`) of every engine at the
    layers' folds, with the register widths the generator would size from these bits.
``cycles``
    The pipeline's initiation interval at the layers' folds (:func:`bitspike.gen.timing.engine_busy`).
    It does not depend on B_w, B_s or T: each engine's neuron is unrolled (all T timesteps of an input
    in one clock) and its PEs multiply a weight by the spike *count* Σ_t s_t in one product, so bits and
    timesteps change widths (LUTs), never clocks. Only the fold moves it.

For ``luts`` the widths follow the generator's rules exactly, from a layer's structure and its weight
sums (:class:`LayerCostSpec`): the input current x of layer l is clamped by the export to
[0 or −q·2^k, q·2^k] with q = 2^B_s − 1 (its own neuron's saturation), the membrane and spike-count
ranges come from :func:`bitspike.analysis.neuron_ranges`, the partial sums and accumulator from the
per-channel sums of positive and negative integer weights times the largest count. At another B_w the
weight sums are scaled by q_w(B_w)/q_w(B_w,0) (q_w = 2^(B_w−1) − 1, 1 for sign weights): renewal
refits the step so that the integers span the same share of the range. Each requantizer's output
width, and the pool engines in front of a layer, are charged to the layer that reads them (the total
is the same), so the cost is a sum of per-layer functions of that layer's own (B_w, B_s, T), which
the projection's dynamic programme needs.

The surrogate: each layer's cost is tabulated on the integer grid of its bit ranges and
interpolated trilinearly (:meth:`CostModel.differentiable`). At integer bits it equals the
generator's model; between them it is linear in each of B_w, B_s and T, so the gradient of the
rounded (straight-through) bits is the cost of one more bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from bitspike.analysis import Range, neuron_ranges
from bitspike.errors import BitspikeError

__all__ = ["COST_UNITS", "UNIT_NAMES", "LayerCostSpec", "CostModel", "generator_estimate", "parse_cost_fold"]

COST_UNITS = ("bb", "sace", "memory", "luts", "cycles")
UNIT_NAMES = {"bb": "bit budget", "sace": "S-ACE", "memory": "weight bits", "luts": "LUTs (generator estimate)",
              "cycles": "cycles per inference (interval)"}
#: the knapsack of :meth:`CostModel.project` resolves the budget into this many steps
PROJECTION_GRID = 4096


# ----------------------------------------------------------------------------------------------
# the one place this module calls the generator (its planning code is being reorganised; re-point here)


def generator_estimate(op: str, *, w_bits: int | None, timesteps: int | None, pes: int, lanes: int,
                       widths: Mapping[str, int], in_features: int, out_features: int,
                       in_hw: tuple[int, int] = (1, 1), out_hw: tuple[int, int] = (1, 1),
                       kernel: tuple[int, int] = (1, 1), stride: tuple[int, int] = (1, 1),
                       padding: tuple[int, int] = (0, 0), groups: int = 1, luts: bool = True,
                       cycles: bool = False) -> tuple[int | None, int | None]:
    """(LUT estimate, busy clocks) of one engine, from the generator's own model (``None`` where not asked).

    Builds the generator's plan node (:mod:`bitspike.gen.ir`; a conv's stride, padding and groups set its
    line buffer's schedule) and calls :func:`bitspike.gen.folding.estimate_luts`
    (``luts=True``) and :func:`bitspike.gen.timing.engine_busy` (``cycles=True``) on it.
    """
    from bitspike.gen.folding import estimate_luts
    from bitspike.gen.timing import engine_busy
    from bitspike.ops.conv2d import Conv2dNode
    from bitspike.ops.linear import LinearNode
    from bitspike.ops.pooling import PoolNode

    common = dict(index=0, name="cost", op=op, engine="cost", pes=pes, lanes=lanes, in_features=in_features,
                  out_features=out_features, widths=dict(widths), in_hw=tuple(in_hw), out_hw=tuple(out_hw),
                  kernel=tuple(kernel))
    if op in ("linear", "conv2d"):
        cls = LinearNode if op == "linear" else Conv2dNode
        extra = dict(stride=tuple(stride), padding=tuple(padding), groups=int(groups)) if op == "conv2d" else {}
        node = cls(w_bits=int(w_bits or 1), timesteps=int(timesteps or 1), **common, **extra)
    else:
        node = PoolNode(stride=tuple(kernel), **common)
    return (estimate_luts(node) if luts else None), (engine_busy(node) if cycles else None)


def parse_cost_fold(spec: str | Mapping[str, Any] | None) -> dict[str, tuple[int, int]]:
    """Per-layer folds ``"conv2=4x4,fc1=2x1"`` (the generator's ``--fold`` syntax; layers not named: 1×1)."""
    if spec is None or spec == "":
        return {}
    from bitspike.gen.plan import parse_fold

    try:
        out = parse_fold(spec)
    except BitspikeError as exc:
        raise BitspikeError(f"--cost-fold: {exc}") from None
    if out is None:
        raise BitspikeError("--cost-fold must name each layer's fold (NAME=PESxLANES,...); 'auto' depends on the "
                            "bits being chosen")
    for name, fold in out.items():
        if len(fold) > 3:
            raise BitspikeError(f"--cost-fold for '{name}': the cost model has no multi-tap engines (tTAPS); "
                                "name PESxLANES")
    return out


# ----------------------------------------------------------------------------------------------
# per-layer structure


def q_weight(b: int) -> int:
    """Largest weight code of ``b`` bits (sign weights: 1)."""
    return 1 if b == 1 else 2 ** (b - 1) - 1


@dataclass(frozen=True)
class LayerCostSpec:
    """What the cost of one synaptic layer depends on besides its bits.

    Attributes
    ----------
    name, op
        Manifest layer name and ``"linear"`` / ``"conv2d"``.
    in_features, out_features, in_hw, out_hw, kernel, stride, padding, groups
        Shape (channels and maps; 1×1 for a linear layer) and a conv's window.
    params, macs
        Weights and multiply-accumulates per inference.
    k
        Threshold exponent θ = 2^k of its neuron (currents resolve V_th / 2^k).
    x_signed
        The current into it is clamped symmetrically (its producer has no ReLU).
    first
        The first layer: its input is the pixel stream (``input_bits`` bits), not a clamped current.
    is_last
        The output layer (no requantizer: its output is the accumulator).
    pools
        Pool engines between its producer and it (their widths are its input's).
    pes, lanes
        Fold.
    pos, neg, bias
        Per output channel: sums of the positive and of the negative integer weights at ``w_ref`` bits,
        and the integer accumulator bias at (``w_ref``, ``count_ref``).
    s_ref, x_ref
        The analysed input-current range at ``s_ref`` spike bits (a manifest's own: the requantizer may not
        reach its clamp); ``None``: the clamp at every B_s.
    """

    name: str
    op: str
    in_features: int
    out_features: int
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    kernel: tuple[int, int]
    params: int
    macs: int
    k: int
    x_signed: bool
    first: bool
    is_last: bool
    pools: int
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    pes: int = 1
    lanes: int = 1
    input_bits: int = 8
    w_ref: int = 2
    count_ref: int = 1
    pos: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    neg: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    s_ref: int | None = None
    x_ref: tuple[int, int] | None = None

    def x_range(self, s_bits: int) -> Range:
        """Range of the input current at ``s_bits`` (the export's clamp: the neuron's saturation)."""
        if self.x_ref is not None and s_bits == self.s_ref:
            return Range(*self.x_ref)
        if self.first:
            return Range(0, 2**self.input_bits - 1)
        hi = (2**s_bits - 1) << self.k
        return Range(-hi if self.x_signed else 0, hi)


@lru_cache(maxsize=4096)
def _neuron(x_lo: int, x_hi: int, k: int, s_bits: int, timesteps: int) -> tuple[int, int]:
    """(membrane width, largest spike count) of a neuron: :func:`bitspike.analysis.neuron_ranges`."""
    per_t, _, count = neuron_ranges(Range(x_lo, x_hi), k, s_bits, timesteps)
    v = per_t[0]
    for r in per_t[1:]:
        v = v.union(r)
    return v.width, count.hi


def layer_widths(spec: LayerCostSpec, w_bits: int, s_bits: int, timesteps: int) -> dict[str, int]:
    """The register widths the generator sizes for this layer at these bits (``out`` of the output layer only)."""
    x = spec.x_range(s_bits)
    v_width, c_hi = _neuron(x.lo, x.hi, spec.k, s_bits, timesteps)
    ratio = q_weight(w_bits) / q_weight(spec.w_ref)
    if w_bits == spec.w_ref:
        pos, neg = spec.pos.astype(object), spec.neg.astype(object)
    else:
        pos = np.rint(spec.pos * ratio).astype(np.int64).astype(object)
        neg = np.rint(spec.neg * ratio).astype(np.int64).astype(object)
    if w_bits == spec.w_ref and c_hi == spec.count_ref:
        bias = spec.bias.astype(object)
    else:  # the bias is in accumulator units: weight step × spike-count step
        bias = np.rint(spec.bias * ratio * c_hi / max(1, spec.count_ref)).astype(np.int64).astype(object)
    psum = Range(int(min(0, (neg * c_hi).min())), int(max(0, (pos * c_hi).max())))
    acc = Range(int((neg * c_hi + bias).min()), int((pos * c_hi + bias).max()))
    widths = {"x": x.width, "v": v_width, "count": max(1, int(c_hi).bit_length()), "psum": psum.width,
              "acc": acc.width, "out": acc.width if spec.is_last else 0}
    return widths


def layer_luts(spec: LayerCostSpec, w_bits: int, s_bits: int, timesteps: int) -> int:
    """The layer's share of the generator's LUT estimate (its engine without its requantizer's output
    width, plus the output width of the requantizer and the pool engines that feed it)."""
    widths = layer_widths(spec, w_bits, s_bits, timesteps)
    luts, _ = generator_estimate(spec.op, w_bits=w_bits, timesteps=timesteps, pes=spec.pes, lanes=spec.lanes,
                                 widths=widths, in_features=spec.in_features, out_features=spec.out_features,
                                 in_hw=spec.in_hw, out_hw=spec.out_hw, kernel=spec.kernel, stride=spec.stride,
                                 padding=spec.padding, groups=spec.groups)
    if not spec.first:
        xw = widths["x"]
        pool, _ = generator_estimate("maxpool", w_bits=None, timesteps=None, pes=1, lanes=1,
                                     widths={"x": xw, "out": xw}, in_features=spec.in_features,
                                     out_features=spec.in_features)
        luts = int(luts or 0) + xw + spec.pools * int(pool or 0)
    return int(luts or 0)


def layer_cost(unit: str, spec: LayerCostSpec, w_bits: int, s_bits: int, timesteps: int) -> float:
    """One layer's cost in ``unit`` (``sace``, ``memory`` or ``luts``) at integer bits."""
    if unit == "sace":
        return float(spec.macs * w_bits * s_bits * timesteps)
    if unit == "memory":
        return float(spec.params * w_bits)
    if unit == "luts":
        return float(layer_luts(spec, w_bits, s_bits, timesteps))
    raise BitspikeError(f"no per-layer cost for unit {unit!r}")


# ----------------------------------------------------------------------------------------------
# the network


def specs_from_manifest(manifest, folds: Mapping[str, tuple[int, int]] | None = None) -> list[LayerCostSpec]:
    """One :class:`LayerCostSpec` per synaptic layer of a manifest (a sequential network: no residual adds)."""
    from bitspike.analysis import analyse

    folds = dict(folds or {})
    ranges = analyse(manifest)
    specs: list[LayerCostSpec] = []
    by_name = {l.name: l for l in manifest.layers}
    readers: dict[str, list] = {}
    for l in manifest.layers:
        for i in l.inputs:
            readers.setdefault(i, []).append(l)
    other = sorted({l.op for l in manifest.layers if not l.is_synaptic} - {"maxpool", "flatten"})
    if other:
        raise BitspikeError(f"the hardware cost model covers sequential networks with max-pools; {manifest.name!r} "
                            f"has {', '.join(other)} layers")
    syn = [l for l in manifest.layers if l.is_synaptic]
    for idx, layer in enumerate(syn):
        pools, src = 0, layer.inputs[0]
        signed = False
        while src != "input":
            p = by_name[src]
            if p.is_synaptic:
                signed = p.requant is not None and p.requant.lo < 0
                break
            if p.op == "maxpool":
                pools += 1
            src = p.inputs[0]
        w = layer.weight.reshape(layer.weight.shape[0], -1).astype(np.int64)
        pes, lanes = folds.pop(layer.name, (1, 1))
        if not (1 <= pes <= w.shape[0]) or not (1 <= lanes <= layer.weight.shape[1]):
            raise BitspikeError(f"--cost-fold for '{layer.name}': {pes}x{lanes} does not fit its "
                                f"{w.shape[0]} outputs × {layer.weight.shape[1]} inputs")
        conv = layer.op == "conv2d"
        x0 = (ranges[layer.name].x.lo, ranges[layer.name].x.hi)
        _, c_hi = _neuron(*x0, layer.k, layer.s_bits, layer.timesteps)
        specs.append(LayerCostSpec(
            name=layer.name, op=layer.op, in_features=int(layer.weight.shape[1]), out_features=int(w.shape[0]),
            in_hw=tuple(layer.in_shape[1:]) if conv else (1, 1), out_hw=tuple(layer.out_shape[1:]) if conv else (1, 1),
            kernel=tuple(layer.kernel) if conv else (1, 1), params=layer.params, macs=layer.macs, k=layer.k,
            x_signed=signed, first=idx == 0, is_last=layer.requant is None, pools=pools, pes=pes, lanes=lanes,
            stride=tuple(layer.stride) if conv else (1, 1), padding=tuple(layer.padding) if conv else (0, 0),
            groups=int(getattr(layer, "groups", 1) or 1) if conv else 1,
            input_bits=manifest.input.bits, w_ref=layer.w_bits, count_ref=c_hi,
            pos=np.where(w > 0, w, 0).sum(axis=1), neg=np.where(w < 0, w, 0).sum(axis=1),
            bias=np.asarray(layer.bias, np.int64), s_ref=layer.s_bits, x_ref=x0))
    if folds:
        raise BitspikeError(f"--cost-fold names layers the network does not have: {sorted(folds)}")
    return specs


@dataclass
class CostModel:
    """A network's cost in one unit, per layer, as a function of every layer's (B_w, B_s, T).

    Attributes
    ----------
    unit
        ``"sace"``, ``"memory"``, ``"luts"`` or ``"cycles"``.
    specs
        One :class:`LayerCostSpec` per synaptic layer, in order.
    ranges
        Per layer, the integer range of each of B_w, B_s, T: ``((lo, hi), (lo, hi), (lo, hi))``.
    input_size, num_classes
        For the cycle model (the pixel stream and the output stage bound the interval too).
    """

    unit: str
    specs: list[LayerCostSpec]
    ranges: list[tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]
    input_size: int = 0
    num_classes: int = 0
    _grids: list[np.ndarray] = field(default_factory=list, repr=False)

    def __post_init__(self):
        if self.unit not in COST_UNITS or self.unit == "bb":
            raise BitspikeError(f"cost unit must be one of {list(COST_UNITS[1:])} here, got {self.unit!r}")
        self.refresh_grids()

    # ---- integer points

    def layer_value(self, i: int, w_bits: int, s_bits: int, timesteps: int) -> float:
        """Layer i's cost at integer bits (0 for ``cycles``: see :meth:`interval`)."""
        if self.unit == "cycles":
            return 0.0
        return layer_cost(self.unit, self.specs[i], w_bits, s_bits, timesteps)

    def total(self, bits: Sequence[tuple[int, int, int]]) -> float:
        """The network's cost at integer bits (one (B_w, B_s, T) per layer)."""
        if self.unit == "cycles":
            return float(self.interval())
        return float(sum(self.layer_value(i, *b) for i, b in enumerate(bits)))

    def interval(self) -> int:
        """The pipeline's initiation interval at the folds (independent of every bit width and T)."""
        busy = [self.input_size, self.num_classes + 1]
        for s in self.specs:
            _, b = generator_estimate(s.op, w_bits=s.w_ref, timesteps=1, pes=s.pes, lanes=s.lanes, widths={},
                                      in_features=s.in_features, out_features=s.out_features, in_hw=s.in_hw,
                                      out_hw=s.out_hw, kernel=s.kernel, stride=s.stride, padding=s.padding,
                                      groups=s.groups, luts=False, cycles=True)
            busy.append(int(b or 0))
        # a max-pool engine is busy one clock per input beat: never longer than the engine that feeds it
        # (whose busy clocks are at least its output beats)
        return max(busy)

    # ---- the surrogate

    def refresh_grids(self) -> None:
        """Tabulate every layer's cost on the integer grid of its ranges (after its weight sums changed)."""
        grids = []
        for i, (rw, rs, rt) in enumerate(self.ranges):
            g = np.zeros((rw[1] - rw[0] + 1, rs[1] - rs[0] + 1, rt[1] - rt[0] + 1))
            for a, w in enumerate(range(rw[0], rw[1] + 1)):
                for b, s in enumerate(range(rs[0], rs[1] + 1)):
                    for c, t in enumerate(range(rt[0], rt[1] + 1)):
                        g[a, b, c] = self.layer_value(i, w, s, t)
            grids.append(g)
        self._grids = grids

    def update_spec(self, i: int, **changes: Any) -> None:
        self.specs[i] = replace(self.specs[i], **changes)

    def differentiable(self, bits: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The cost as a differentiable function of real-valued bits: trilinear in each layer's grid cell.

        Equals :meth:`total` at integer bits; the gradient of a layer's B_w (B_s, T) is the cost
        difference to the next integer up (the last cell of a range: to the one below).
        """
        total = None
        for i, vals in enumerate(bits):
            device = next((v.device for v in vals if isinstance(v, torch.Tensor)), None)
            g = torch.as_tensor(self._grids[i], dtype=torch.float64, device=device)
            corners: list[list[tuple[int, torch.Tensor]]] = []
            for d, v in enumerate(vals):
                v = torch.as_tensor(v, dtype=torch.float64, device=device)
                lo, n = self.ranges[i][d][0], g.shape[d]
                if n == 1:
                    corners.append([(0, torch.ones((), dtype=torch.float64, device=device))])
                    continue
                i0 = min(max(int(math.floor(float(v.detach()))) - lo, 0), n - 2)
                f = v - (lo + i0)
                corners.append([(i0, 1 - f), (i0 + 1, f)])
            acc = None
            for a, wa in corners[0]:
                for b, wb in corners[1]:
                    for c, wc in corners[2]:
                        term = g[a, b, c] * wa * wb * wc
                        acc = term if acc is None else acc + term
            total = acc if total is None else total + acc
        if total is None:
            return torch.zeros((), dtype=torch.float64)
        return total

    # ---- projection

    def project(self, values: Sequence[tuple[float, float, float]], budget: float,
                fixed: Sequence[tuple[bool, bool, bool]] | None = None) -> list[tuple[int, int, int]]:
        """The integer allocation with cost ≤ ``budget`` nearest to the learned values.

        Nearest: least Σ (value − bits)² over layers and kinds (as the bit-budget projection). A
        knapsack over the layers: the budget is cut into :data:`PROJECTION_GRID` steps and every
        layer's cost rounded *up* to whole steps, so the allocation found always meets the budget
        exactly (it may miss one that fits within the last steps). ``fixed`` marks values that may
        not move (they keep their rounded value).

        Raises
        ------
        BitspikeError
            When no allocation within the layers' ranges meets the budget.
        """
        G = PROJECTION_GRID
        step = budget / G
        inf = float("inf")
        dp = np.full(G + 1, inf)
        dp[0] = 0.0
        choices: list[tuple[list[tuple[int, int, int]], np.ndarray, list[int]]] = []
        smallest = 0.0
        for i, vals in enumerate(values):
            opts = []
            for d in range(3):
                lo, hi = self.ranges[i][d]
                v = min(max(vals[d], lo), hi)
                if fixed is not None and fixed[i][d]:
                    r = int(math.floor(v + 0.5))
                    opts.append([r])
                else:
                    opts.append(list(range(lo, hi + 1)))
            combos = [(w, s, t) for w in opts[0] for s in opts[1] for t in opts[2]]
            costs = [self.layer_value(i, *c) for c in combos]
            smallest += min(costs)
            moves = [sum((min(max(vals[d], self.ranges[i][d][0]), self.ranges[i][d][1]) - c[d]) ** 2 for d in range(3))
                     for c in combos]
            new = np.full(G + 1, inf)
            arg = np.full(G + 1, -1, dtype=np.int64)
            for k, (c, m) in enumerate(zip(costs, moves)):
                q = int(math.ceil(c / step - 1e-9)) if c > 0 else 0
                if q > G:
                    continue
                cand = dp[: G + 1 - q] + m
                better = cand < new[q:] - 1e-12
                new[q:][better] = cand[better]
                arg[q:][better] = k
            dp = new
            choices.append((combos, arg, [int(math.ceil(c / step - 1e-9)) if c > 0 else 0 for c in costs]))
        if not np.isfinite(dp).any():
            raise BitspikeError(f"no allocation within the layers' bit ranges meets the {UNIT_NAMES[self.unit]} "
                                f"budget {budget:g} (the smallest is {smallest:g})")
        j = int(np.argmin(dp))
        out: list[tuple[int, int, int]] = []
        for combos, arg, qs in reversed(choices):
            k = int(arg[j])
            out.append(combos[k])
            j -= qs[k]
        out.reverse()
        return out


# ----------------------------------------------------------------------------------------------
# from a network being trained


def model_cost(unit: str, model, calib_images: np.ndarray, folds: Mapping[str, tuple[int, int]] | None = None,
               current_bits: int | None = None) -> CostModel:
    """The cost model of a :class:`~bitspike.host.models.BitNet` being trained.

    The structure (thresholds' k, which currents are signed, pools, shapes) is read from an export of a
    copy of the model (:func:`bitspike.host.export.export_model`); the weight sums are then renewed from
    the live model by :func:`refresh_from_model`. Ranges: each layer's B_w, B_s and T parameter ranges.
    """
    import copy

    from .convert import DEFAULT_CURRENT_BITS, export_model
    from .quant import quant_layers

    manifest = export_model(copy.deepcopy(model), calib_images,
                            current_bits=DEFAULT_CURRENT_BITS if current_bits is None else current_bits)
    specs = specs_from_manifest(manifest, folds)
    layers = quant_layers(model)
    seen: set[int] = set()
    for l in layers:
        for p in (l.wq.bits, l.neuron.s_bits, l.neuron.timesteps):
            if id(p) in seen:
                raise BitspikeError(f"--cost {unit}: layers of this network share a neuron; the cost model needs "
                                    "one (B_w, B_s, T) per layer")
            seen.add(id(p))
    ranges = [((l.wq.bits.lo, l.wq.bits.hi), (l.neuron.s_bits.lo, l.neuron.s_bits.hi),
               (l.neuron.timesteps.lo, l.neuron.timesteps.hi)) for l in layers]
    cm = CostModel(unit, specs, ranges, manifest.input.size, manifest.num_classes)
    refresh_from_model(cm, model)
    return cm


@torch.no_grad()
def refresh_from_model(cm: CostModel, model) -> None:
    """Renew every layer's weight sums from the model's current integer weights and re-tabulate.

    The accumulator bias is left out (taken as 0): the trained model's bias in accumulator units is
    only known after export; it moves the accumulator's range by a few units at most.
    """
    from .quant import quant_layers

    if cm.unit not in ("luts",):
        return
    for i, l in enumerate(quant_layers(model)):
        w = l.wq.integers(l.weight.detach()).reshape(l.weight.shape[0], -1).cpu().numpy().astype(np.int64)
        cm.update_spec(i, w_ref=l.wq.bits.current(), pos=np.where(w > 0, w, 0).sum(axis=1),
                       neg=np.where(w < 0, w, 0).sum(axis=1), bias=np.zeros(w.shape[0], np.int64), count_ref=1,
                       **({} if cm.specs[i].first else {"s_ref": None, "x_ref": None}))
    cm.refresh_grids()


def current_bits_of(model) -> list[tuple[int, int, int]]:
    """Every synaptic layer's rounded (B_w, B_s, T)."""
    from .quant import quant_layers

    return [(l.wq.bits.current(), l.neuron.s_bits.current(), l.neuron.timesteps.current()) for l in quant_layers(model)]


def differentiable_cost(cm: CostModel, model) -> torch.Tensor:
    """The model's cost with straight-through gradients to every layer's B_w, B_s and T."""
    from .quant import quant_layers

    return cm.differentiable([(l.wq.bits(), l.neuron.s_bits(), l.neuron.timesteps()) for l in quant_layers(model)])


def project_model(cm: CostModel, model, budget: float) -> list[str]:
    """Set the model's rounded bits to the allocation with cost ≤ ``budget`` nearest to the learned values.

    Returns a description of each change (nothing when the current bits already meet the budget).
    """
    from .models import layer_names
    from .quant import quant_layers

    layers = quant_layers(model)
    if cm.total(current_bits_of(model)) <= budget + 1e-9:
        return []
    params = [(l.wq.bits, l.neuron.s_bits, l.neuron.timesteps) for l in layers]
    values = [tuple(float(p.value.detach()) for p in ps) for ps in params]
    fixed = [tuple(not p.value.requires_grad or p.hi == p.lo for p in ps) for ps in params]
    best = cm.project(values, budget, fixed)
    names = layer_names(model)
    moves = []
    for l, ps, q in zip(layers, params, best):
        for kind, p, b in zip("wst", ps, q):
            old = p.current()
            if old != b:
                p.set(b)
                moves.append(f"{names[l]} {kind}: {old} → {b}")
    return moves
