"""The typed hardware plan: per layer folding, widths, memory bits, and predicted cycles.

:func:`make_plan` is the front end of the compiler: manifest → analysis →
per-layer :class:`LayerPlan` (one handler per op, registered in
:data:`PLANNERS`) → folding pass (:mod:`bitspike.gen.folding`) → timing model
(:mod:`bitspike.gen.timing`). Everything downstream (the Amaranth top, the
report) reads only the plan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from bitspike.analysis import LayerRanges, analyse
from bitspike.errors import HardwareError
from bitspike.manifest import AvgPoolLayer, Conv2dLayer, Layer, LinearLayer, Manifest, MaxPoolLayer

__all__ = ["LayerPlan", "Plan", "make_plan", "parse_fold", "PLANNERS", "safe_name", "self_add_in_step", "stream_source"]


def safe_name(name: str) -> str:
    """A Verilog-safe identifier fragment for a layer name."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s if s and not s[0].isdigit() else f"l_{s}"


@dataclass(frozen=True)
class LayerPlan:
    """One manifest layer's hardware: which engine, how folded, how wide."""

    index: int
    name: str
    op: str
    engine: str  # Verilog module suffix / submodule name
    w_bits: int | None = None
    s_bits: int | None = None
    timesteps: int | None = None
    k: int | None = None
    pes: int = 1
    lanes: int = 1
    in_features: int = 0
    out_features: int = 0
    params: int = 0
    macs: int = 0
    memory_bits: int = 0
    widths: Mapping[str, int] = field(default_factory=dict)
    cycles: int = 0  # busy cycles per inference (the engine's own initiation interval)
    # streaming order permutation of the weight columns (None: identity)
    column_order: tuple[int, ...] | None = None
    # geometry: input map (h, w), kernel, stride, padding (1×1 maps for flat layers)
    in_hw: tuple[int, int] = (1, 1)
    out_hw: tuple[int, int] = (1, 1)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    # products that may be DSP multiplies (bitspike.gen.dsp); None: every product that is not narrow
    dsp_blocks: int | None = None

    @property
    def in_elements(self) -> int:
        """Input beats per inference."""
        return self.in_hw[0] * self.in_hw[1] * self.in_features

    @property
    def out_elements(self) -> int:
        """Output beats per inference."""
        return self.out_hw[0] * self.out_hw[1] * self.out_features

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index, "name": self.name, "op": self.op, "engine": self.engine,
            "w_bits": self.w_bits, "s_bits": self.s_bits, "timesteps": self.timesteps, "k": self.k,
            "pes": self.pes, "lanes": self.lanes, "in_features": self.in_features,
            "out_features": self.out_features, "params": self.params, "macs": self.macs,
            "memory_bits": self.memory_bits, "memory_bits_bound": self.params * (self.w_bits or 0),
            "widths": dict(sorted(self.widths.items())), "cycles": self.cycles,
            "in_hw": list(self.in_hw), "out_hw": list(self.out_hw), "kernel": list(self.kernel),
            "stride": list(self.stride), "padding": list(self.padding), "dsp_blocks": self.dsp_blocks,
        }


@dataclass(frozen=True)
class Plan:
    """The whole accelerator."""

    manifest: Manifest
    ranges: Mapping[str, LayerRanges]
    layers: tuple[LayerPlan, ...]
    fold: str
    max_luts: int | None
    cycles_per_inference: int = 0
    initiation_interval: int = 0
    estimated_luts: int = 0

    @property
    def logit_width(self) -> int:
        return self.ranges[self.manifest.layers[-1].name].out.width

    @property
    def result_width(self) -> int:
        # every reader sign-extends the logit beats (cosim, UART protocol): an unsigned logit range needs one more bit
        logits = self.ranges[self.manifest.layers[-1].name].out
        signed_width = logits.width if logits.signed else logits.width + 1
        return max(signed_width, max(1, (self.manifest.num_classes - 1).bit_length()))

    @property
    def weight_memory_bits(self) -> int:
        return sum(l.memory_bits for l in self.layers)

    @property
    def weight_memory_bits_bound(self) -> int:
        return sum(l.params * (l.w_bits or 0) for l in self.layers)

    def layer(self, name: str) -> LayerPlan:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)


# ----------------------------------------------------------------------------------------------
# per-op handlers: manifest layer → initial LayerPlan (folding 1×1)

PlanHandler = Callable[[int, Layer, LayerRanges, Manifest], LayerPlan]
PLANNERS: dict[str, PlanHandler] = {}


def planner(op: str):
    def deco(fn: PlanHandler) -> PlanHandler:
        PLANNERS[op] = fn
        return fn
    return deco


@planner("linear")
def _plan_linear(index: int, layer: Layer, r: LayerRanges, manifest: Manifest) -> LayerPlan:
    assert isinstance(layer, LinearLayer)
    out_f, in_f = layer.weight.shape
    return LayerPlan(
        index=index, name=layer.name, op=layer.op, engine=f"e{index}_{safe_name(layer.name)}",
        w_bits=layer.w_bits, s_bits=layer.s_bits, timesteps=layer.timesteps, k=layer.k,
        in_features=in_f, out_features=out_f, params=layer.params, macs=layer.macs,
        column_order=_column_order(layer, manifest),
    )


def _column_order(layer: Layer, manifest: Manifest) -> tuple[int, ...] | None:
    """Inputs arrive in their producer's stream order (HWC after a flatten): permute the weight columns to match."""
    from .interface import stream_order

    order = tuple(int(v) for v in stream_order(manifest, layer.inputs[0]))
    return None if order == tuple(range(len(order))) else order


@planner("conv2d")
def _plan_conv(index: int, layer: Layer, r: LayerRanges, manifest: Manifest) -> LayerPlan:
    assert isinstance(layer, Conv2dLayer)
    out_c, in_c = layer.weight.shape[:2]
    return LayerPlan(
        index=index, name=layer.name, op=layer.op, engine=f"e{index}_{safe_name(layer.name)}",
        w_bits=layer.w_bits, s_bits=layer.s_bits, timesteps=layer.timesteps, k=layer.k,
        in_features=in_c, out_features=out_c, params=layer.params, macs=layer.macs,
        in_hw=tuple(layer.in_shape[1:]), out_hw=tuple(layer.out_shape[1:]), kernel=tuple(layer.kernel),
        stride=tuple(layer.stride), padding=tuple(layer.padding),
    )


def _plan_pool(index: int, layer: Layer, r: LayerRanges, manifest: Manifest) -> LayerPlan:
    assert isinstance(layer, (MaxPoolLayer, AvgPoolLayer))
    if tuple(layer.kernel) != tuple(layer.stride):
        raise HardwareError(f"layer {index} '{layer.name}': pooling with stride {list(layer.stride)} != kernel "
                            f"{list(layer.kernel)} (overlapping windows) has no engine yet")
    c = layer.in_shape[0]
    return LayerPlan(index=index, name=layer.name, op=layer.op, engine=f"e{index}_{safe_name(layer.name)}",
                     in_features=c, out_features=c, in_hw=tuple(layer.in_shape[1:]), out_hw=tuple(layer.out_shape[1:]),
                     kernel=tuple(layer.kernel), stride=tuple(layer.stride),
                     widths={"x": r.x.width, "out": r.out.width})


PLANNERS["maxpool"] = _plan_pool
PLANNERS["avgpool"] = _plan_pool


@planner("flatten")
def _plan_flatten(index: int, layer: Layer, r: LayerRanges, manifest: Manifest) -> LayerPlan:
    # no hardware: the stream already carries the values; the next linear layer's columns are permuted
    return LayerPlan(index=index, name=layer.name, op=layer.op, engine="", in_features=int(np.prod(layer.in_shape)),
                     out_features=int(np.prod(layer.out_shape)), widths={"x": r.x.width, "out": r.out.width})


@planner("add")
def _plan_add(index: int, layer: Layer, r: LayerRanges, manifest: Manifest) -> LayerPlan:
    shape = tuple(layer.in_shape)
    hw = tuple(shape[1:]) if len(shape) == 3 else (1, 1)
    return LayerPlan(index=index, name=layer.name, op=layer.op, engine=f"e{index}_{safe_name(layer.name)}",
                     in_features=shape[0], out_features=shape[0], in_hw=hw, out_hw=hw,
                     widths={"x": r.x.width, "x_b": r.x_b.width, "product": r.product.width, "out": r.out.width})


def parse_fold(fold: str | Mapping[str, Any] | None) -> dict[str, tuple[int, int]] | None:
    """``"auto"``/None → None; ``"fc0=4x2,fc1=2"`` or ``{"fc0": (4, 2)}`` → {name: (pes, lanes)}."""
    if fold is None or fold == "auto":
        return None
    items: dict[str, Any]
    if isinstance(fold, str):
        items = {}
        for part in fold.split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise HardwareError(f"--fold entry {part!r}: expected NAME=PESxLANES (e.g. fc0=8x2) or 'auto'")
            name, spec = part.split("=", 1)
            items[name.strip()] = spec.strip()
    elif isinstance(fold, Mapping):
        items = dict(fold)
    else:
        raise HardwareError(f"fold must be 'auto', a string NAME=PESxLANES,... or a mapping, not {fold!r}")
    out: dict[str, tuple[int, int]] = {}
    for name, spec in items.items():
        try:
            if isinstance(spec, str):
                nums = [int(v) for v in spec.lower().split("x")]
            elif isinstance(spec, int):
                nums = [spec]
            else:
                nums = [int(v) for v in spec]
            if len(nums) == 1:
                nums.append(1)
            if len(nums) != 2 or min(nums) < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise HardwareError(f"fold for layer {name!r}: expected PESxLANES with positive integers, got {spec!r}") from None
        out[name] = (nums[0], nums[1])
    return out


def stream_source(manifest: Manifest, name: str) -> str:
    """The layer (or ``"input"``) whose stream ``name`` carries: a flatten is no hardware, only a re-indexing."""
    alias = {l.name: l.inputs[0] for l in manifest.layers if l.op == "flatten"}
    while name in alias:
        name = alias[name]
    return name


def self_add_in_step(manifest: Manifest, layer: Layer) -> bool:
    """True for a residual add of a layer to itself whose source nothing else reads.

    Both operands then come from one fork, beat for beat, so they need no skew FIFO
    (:class:`bitspike.gen.top.BitspikeTop` leaves it out and the timing model knows).
    """
    if layer.op != "add" or layer.inputs[0] != layer.inputs[1]:
        return False
    src = stream_source(manifest, layer.inputs[0])
    readers = [l for l in manifest.layers if l.op != "flatten"
               and any(stream_source(manifest, i) == src for i in l.inputs)]
    return all(l is layer for l in readers)


def _check_graph(manifest: Manifest) -> None:
    """Refuse a layer whose output nothing reads: its stream would fill and stall the whole pipeline."""
    read = {src for layer in manifest.layers for src in layer.inputs}
    for i, layer in enumerate(manifest.layers[:-1]):
        if layer.name not in read:
            raise HardwareError(f"layer {i} '{layer.name}': no later layer reads its output (only the last layer, "
                                f"'{manifest.layers[-1].name}', may be unconsumed); the generated pipeline would "
                                "stall on it")


def make_plan(manifest: Manifest, fold: str | Mapping[str, Any] | None = "auto", max_luts: int | None = None,
              dsp_blocks: int | None = None) -> Plan:
    """Plan the accelerator for ``manifest``.

    Parameters
    ----------
    fold
        ``"auto"`` (balance the pipeline for throughput within ``max_luts``), or
        per-layer folds ``"NAME=PESxLANES,..."`` / ``{name: (pes, lanes)}``
        (layers not named get 1×1).
    max_luts
        LUT budget for ``fold="auto"`` (estimated; see :mod:`bitspike.gen.folding`).
    dsp_blocks
        The device's DSP blocks, shared out per product (:mod:`bitspike.gen.dsp`); ``None``: no limit.
    """
    from .dsp import allocate_dsps
    from .folding import apply_folding
    from .timing import predict

    if max_luts is not None and (isinstance(max_luts, bool) or not isinstance(max_luts, int) or max_luts < 1):
        raise HardwareError(f"max_luts must be a positive integer, not {max_luts!r}")
    _check_graph(manifest)
    ranges = analyse(manifest)
    plans: dict[str, LayerPlan] = {}
    for i, layer in enumerate(manifest.layers):
        handler = PLANNERS.get(layer.op)
        if handler is None:
            raise HardwareError(f"layer {i} '{layer.name}': the generator has no engine for op {layer.op!r} "
                                f"(supported: {', '.join(sorted(PLANNERS))})")
        plans[layer.name] = handler(i, layer, ranges[layer.name], manifest)
    folds = parse_fold(fold)
    if folds is not None:
        unknown = sorted(set(folds) - {l.name for l in manifest.layers})
        if unknown:
            raise HardwareError(f"--fold names unknown layer(s) {unknown}; layers are {[l.name for l in manifest.layers]}")
    layers = apply_folding(manifest, ranges, tuple(plans.values()), folds, max_luts)
    layers = allocate_dsps(manifest, ranges, layers, dsp_blocks)
    plan = Plan(manifest=manifest, ranges=ranges, layers=layers, fold="auto" if folds is None else "manual",
                max_luts=max_luts)
    return predict(plan)
