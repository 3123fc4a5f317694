"""The typed plan IR: one node per layer, a plan for the whole accelerator, and the pass flow.

The compiler is front end → typed plan → passes → emit:

* the front end (:func:`bitspike.gen.plan.make_plan`) asks each layer's op
  (:mod:`bitspike.ops`) for its initial node: a :class:`PlanNode` subclass
  of that op's own (``SynapticNode`` for linear and conv2d, ``PoolNode``, …);
* the passes, registered by name in :data:`PASSES` and run in the order of
  :data:`FLOW`, fill in what the nodes and the plan still lack: register
  widths, folding and memory bits, the DSP allotment, the cycle model, the
  LUT estimate. A pass takes a :class:`Plan` and returns a new one; nodes
  and plans are frozen.
* emission (:mod:`bitspike.gen.top`, :mod:`bitspike.gen.emit`,
  :mod:`bitspike.gen.report`) reads only the plan.

This module imports only :mod:`bitspike.ops.base` of bitspike, so op
modules can subclass :class:`PlanNode` at import time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from bitspike.ops.base import OPS

if TYPE_CHECKING:  # pragma: no cover
    from bitspike.ranges import LayerRanges
    from bitspike.manifest import Manifest

__all__ = ["safe_name", "stream_source", "self_add_in_step", "PlanNode", "REPORT_DEFAULTS", "Plan", "PlanOptions", "Pass", "PASSES", "FLOW", "register_pass", "run_flow"]


@dataclass(frozen=True)
class PlanNode:
    """One manifest layer's hardware. Op modules subclass it with the fields their engine has.

    The fields here are what every engine has: where it sits, its stream geometry (elements per
    beat position: ``in_features`` values per pixel of an ``in_hw`` map), its register widths and
    its busy cycles. ``luts`` is the LUT estimate (:mod:`bitspike.gen.folding`); it stays out of
    :meth:`to_json`, whose keys are the report's layer entries (docs/HARDWARE_INTERFACE.md).
    """

    index: int
    name: str
    op: str
    engine: str  # Verilog module suffix / submodule name ("" for an op without hardware)
    in_features: int = 0
    out_features: int = 0
    in_hw: tuple[int, int] = (1, 1)
    out_hw: tuple[int, int] = (1, 1)
    widths: Mapping[str, int] = field(default_factory=dict)
    cycles: int = 0  # busy cycles per inference (the engine's own initiation interval)
    luts: int = 0
    pes: int = 1  # parallel output units (1 for engines that take no folding)
    lanes: int = 1  # inputs taken per clock per unit
    memory_bits: int = 0  # weight memory as laid out
    # elements per beat of the input and output streams (vector streams, bitspike.gen.folding)
    vec_in: int = 1
    vec_out: int = 1

    @property
    def in_elements(self) -> int:
        """Input elements per inference."""
        return self.in_hw[0] * self.in_hw[1] * self.in_features

    @property
    def out_elements(self) -> int:
        """Output elements per inference."""
        return self.out_hw[0] * self.out_hw[1] * self.out_features

    @property
    def in_beats(self) -> int:
        """Input beats per inference (``vec_in`` elements each)."""
        return -(-self.in_elements // self.vec_in)

    @property
    def out_beats(self) -> int:
        """Output beats per inference (``vec_out`` elements each)."""
        return -(-self.out_elements // self.vec_out)

    @property
    def memory_bits_bound(self) -> int:
        """Σ params·B_w: the weight memory without padding (0 for an engine without weights)."""
        return getattr(self, "params", 0) * (getattr(self, "w_bits", None) or 0)

    def to_json(self) -> dict[str, Any]:
        """The report's layer entry; fields a node kind lacks take the values of :data:`REPORT_DEFAULTS`."""
        extra = {key: getattr(self, key, default) for key, default in REPORT_DEFAULTS.items()}
        out = {
            "index": self.index, "name": self.name, "op": self.op, "engine": self.engine,
            "pes": self.pes, "lanes": self.lanes, "in_features": self.in_features,
            "out_features": self.out_features, "memory_bits": self.memory_bits,
            "memory_bits_bound": self.memory_bits_bound, "widths": dict(sorted(self.widths.items())),
            "cycles": self.cycles, "in_hw": list(self.in_hw), "out_hw": list(self.out_hw),
        }
        out.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in extra.items()})
        # vector streams only where there are some: a design of scalar streams reports as before
        out.update({k: getattr(self, k) for k in ("vec_in", "vec_out") if getattr(self, k) != 1})
        if getattr(self, "weight_rom", False):  # a device plan's engine (its weights may be a LUT ROM)
            out["weight_rom"] = True
        return out


#: report keys of a layer entry that only some node kinds have, with the value the others report
REPORT_DEFAULTS: dict[str, Any] = {
    "w_bits": None, "s_bits": None, "timesteps": None, "k": None, "params": 0, "macs": 0,
    "kernel": (1, 1), "stride": (1, 1), "padding": (0, 0), "dsp_blocks": None,
}


@dataclass(frozen=True)
class PlanOptions:
    """What the user asked for: per-layer folds (``None``: auto), the LUT budget, the DSP budget, the device
    whose resources ``fold="auto"`` fills (a :class:`bitspike.gen.boards.DeviceBudget`), the interval it
    must reach instead of the best (``--target-fps``) and fusion."""

    folds: Mapping[str, tuple[int, int]] | None = None
    max_luts: int | None = None
    dsp_blocks: int | None = None
    device: Any = None
    target_interval: int | None = None
    fuse: str = "off"  # fused requantize-and-fire: "auto", "off" or "on" (bitspike.gen.fuse)
    zero_skip: str = "off"  # zero-word skipping: "auto", "off" or "on" (bitspike.gen.zeroskip)
    # fold="auto" may give conv engines several kernel taps per clock (bitspike.rtl_templates.multitap);
    # off: the folder keeps one tap a clock (a manual tTAPS fold works either way)
    multi_tap: bool = False


@dataclass(frozen=True)
class Plan:
    """The whole accelerator: the manifest, its ranges, one node per layer (manifest order)."""

    manifest: "Manifest"
    ranges: "Mapping[str, LayerRanges]"
    layers: tuple[PlanNode, ...]
    fold: str
    max_luts: int | None
    cycles_per_inference: int = 0
    initiation_interval: int = 0
    estimated_luts: int = 0
    options: PlanOptions = field(default_factory=PlanOptions, repr=False, compare=False)
    # the fuse pass's decision per layer boundary (bitspike.gen.fuse.Boundary), in network order
    fusion: tuple = ()

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
        return sum(l.memory_bits_bound for l in self.layers)

    def layer(self, name: str) -> PlanNode:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)


Pass = Callable[[Plan], Plan]
#: pass name → pass; a module that defines passes registers them when imported
PASSES: dict[str, Pass] = {}
#: the passes :func:`bitspike.gen.plan.make_plan` runs, in order
FLOW: tuple[str, ...] = ("widths", "fuse", "folding", "zero_skip", "dsp", "timing", "luts")


def register_pass(name: str) -> Callable[[Pass], Pass]:
    """Register a plan pass under ``name`` (it takes a :class:`Plan` and returns the new one)."""

    def deco(fn: Pass) -> Pass:
        if name in PASSES:
            raise ValueError(f"plan pass {name!r} is registered twice")
        PASSES[name] = fn
        return fn

    return deco


def run_flow(plan: Plan, flow: tuple[str, ...] = FLOW) -> Plan:
    """Run the named passes in order."""
    for name in flow:
        if name not in PASSES:
            raise KeyError(f"no plan pass {name!r} (registered: {', '.join(sorted(PASSES))})")
        plan = PASSES[name](plan)
    return plan


# ----------------------------------------------------------------------------------------------
# graph helpers the passes and the top share


def safe_name(name: str) -> str:
    """A Verilog-safe identifier fragment for a layer name."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s if s and not s[0].isdigit() else f"l_{s}"


def stream_source(manifest: "Manifest", name: str) -> str:
    """The layer (or ``"input"``) whose stream ``name`` carries: an op without hardware (a flatten) is only a
    re-indexing of its input's stream."""
    alias = {l.name: l.inputs[0] for l in manifest.layers if OPS[l.op].passthrough_stream}
    while name in alias:
        name = alias[name]
    return name


def self_add_in_step(manifest: "Manifest", layer) -> bool:
    """True for a layer joining two branches that are one and the same source, which nothing else reads.

    Both operands then come from one fork, beat for beat, so they need no skew FIFO
    (:class:`bitspike.gen.top.BitspikeTop` leaves it out and the timing model knows).
    """
    if not OPS[layer.op].joins_branches or len(set(layer.inputs)) != 1:
        return False
    src = stream_source(manifest, layer.inputs[0])
    readers = [l for l in manifest.layers if not OPS[l.op].passthrough_stream
               and any(stream_source(manifest, i) == src for i in l.inputs)]
    return all(l is layer for l in readers)
