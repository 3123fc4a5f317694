"""The front end of the compiler: manifest → typed plan (:mod:`bitspike.gen.ir`) → passes.

:func:`make_plan` analyses the manifest, asks each layer's op
(:mod:`bitspike.ops`) for its plan node, and runs the registered passes of
:data:`bitspike.gen.ir.FLOW` over the plan: register widths and folding
(:mod:`bitspike.gen.folding`), fused requantize-and-fire (:mod:`bitspike.gen.fuse`), the DSP
allotment (:mod:`bitspike.gen.dsp`),
the cycle model (:mod:`bitspike.gen.timing`) and the LUT estimate.
Everything downstream (the Amaranth top, the report) reads only the plan.
"""

from __future__ import annotations

from typing import Any, Mapping

from bitspike.analysis import analyse
from bitspike.errors import HardwareError
from bitspike.manifest import Manifest
from bitspike.ops.base import OPS

# the pass modules register their passes when imported
from . import dsp as _dsp  # noqa: F401
from . import folding as _folding  # noqa: F401
from .fuse import DEFAULT_FUSE
from . import timing as _timing  # noqa: F401
from . import zeroskip as _zeroskip  # noqa: F401
from .ir import Plan, PlanNode, PlanOptions, run_flow, safe_name, self_add_in_step, stream_source

__all__ = ["LayerPlan", "Plan", "PlanNode", "make_plan", "parse_fold", "safe_name", "self_add_in_step",
           "stream_source"]

#: the plan node base under its former name
LayerPlan = PlanNode


def parse_fold(fold: str | Mapping[str, Any] | None) -> dict[str, tuple[int, ...]] | None:
    """``"auto"``/None → None; ``"fc0=4x2,fc1=2"`` or ``{"fc0": (4, 2)}`` → {name: (pes, lanes)}.

    A third number is the elements per beat of the layer's output stream (a vector stream,
    :mod:`bitspike.gen.folding`): ``"fc0=16x8x2"`` → ``{"fc0": (16, 8, 2)}``. A conv's lanes may name the
    kernel taps it reads per clock (the multi-tap engine, :mod:`bitspike.rtl_templates.multitap`):
    ``"conv0=16x1t9"`` (the whole 3×3 window a clock) → ``{"conv0": (16, 1, 1, 9)}`` (pes, lanes, vec, taps).
    """
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
    out: dict[str, tuple[int, ...]] = {}
    for name, spec in items.items():
        try:
            taps = 1
            if isinstance(spec, str):
                parts = spec.lower().split("x")
                if len(parts) >= 2 and "t" in parts[1]:  # LANEStTAPS: kernel taps per clock
                    parts[1], t = parts[1].split("t", 1)
                    taps = int(t)
                nums = [int(v) for v in parts]
            elif isinstance(spec, int):
                nums = [spec]
            else:
                nums = [int(v) for v in spec]
                if len(nums) == 4:
                    nums, taps = nums[:3], nums[3]
            if len(nums) == 1:
                nums.append(1)
            if len(nums) not in (2, 3) or min(nums) < 1 or taps < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise HardwareError(f"fold for layer {name!r}: expected PESxLANES with positive integers, got {spec!r} "
                                "(or PESxLANESxVEC: VEC outputs per stream beat; a conv's LANEStTAPS: TAPS kernel "
                                "taps per clock, e.g. 16x1t9)") from None
        if taps != 1:
            out[name] = (nums[0], nums[1], nums[2] if len(nums) == 3 else 1, taps)
        else:
            out[name] = tuple(nums) if len(nums) == 3 and nums[2] != 1 else (nums[0], nums[1])
    return out


def _check_graph(manifest: Manifest) -> None:
    """Refuse a layer whose output nothing reads: its stream would fill and stall the whole pipeline."""
    read = {src for layer in manifest.layers for src in layer.inputs}
    for i, layer in enumerate(manifest.layers[:-1]):
        if layer.name not in read:
            raise HardwareError(f"layer {i} '{layer.name}': no later layer reads its output (only the last layer, "
                                f"'{manifest.layers[-1].name}', may be unconsumed); the generated pipeline would "
                                "stall on it")


def _with_fast_paths(node: PlanNode, on: bool) -> PlanNode:
    """``node`` with ``fast_paths`` set when ``on`` and it is a dense synaptic engine (a stepped
    engine has neither the PE array nor the drain it changes) or a streaming pool (its row memory)."""
    from dataclasses import replace

    from bitspike.ops.neuron import SteppedNode, SynapticNode
    from bitspike.ops.pooling import PoolNode

    if on and ((isinstance(node, SynapticNode) and not isinstance(node, SteppedNode))
               or (isinstance(node, PoolNode) and node.streaming)):
        return replace(node, fast_paths=True)
    return node


def _with_row_block(node: PlanNode, family: str | None) -> PlanNode:
    """``node`` with ``row_block`` set when it is a streaming pool and ``family`` has no LUT RAM (iCE40): its
    row memory then goes to a block RAM instead of flip-flops."""
    from dataclasses import replace

    from bitspike.ops.pooling import PoolNode

    from .folding import LUTRAM_COST

    if family is not None and family in LUTRAM_COST and LUTRAM_COST[family] is None \
            and isinstance(node, PoolNode) and node.streaming:
        return replace(node, row_block=True)
    return node


def make_plan(manifest: Manifest, fold: str | Mapping[str, Any] | None = "auto", max_luts: int | None = None,
              dsp_blocks: int | None = None, device=None, target_interval: int | None = None,
              fuse: str = DEFAULT_FUSE, zero_skip: str = "off", fast_paths: bool = False,
              multi_tap: bool = False, family: str | None = None) -> Plan:
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
    device, target_interval
        The :class:`~bitspike.gen.boards.DeviceBudget` that ``fold="auto"`` fills, and the interval it must
        reach with the fewest LUTs instead (:func:`bitspike.gen.folding.folding_pass`).
    fuse
        Fused requantize-and-fire (:mod:`bitspike.gen.fuse`): ``"auto"``, ``"off"`` or ``"on"``.
    zero_skip
        Zero-word skipping in squeezed linear engines (:mod:`bitspike.gen.zeroskip`): ``"auto"``, ``"off"``
        or ``"on"``.
    fast_paths
        Every dense synaptic engine gets shorter register-to-register paths at the same cycles and
        sums (:class:`bitspike.rtl_templates.synapse.SynapticEngine`'s ``fast_paths``: accumulators
        cleared after a group's last word, the drain's queue state in registered flags, a skid buffer
        between the neuron and the writer); every streaming pool reads its row memory a
        beat ahead (:class:`bitspike.rtl_templates.pool.PoolEngine`'s ``fast_paths``).
    multi_tap
        ``fold="auto"`` may also choose how many kernel taps a conv engine reads per clock (a window row or
        the whole window: :mod:`bitspike.rtl_templates.multitap`) where that shortens the interval. Off: one
        tap a clock, as before (a manual fold's ``tTAPS`` is taken either way).
    family
        The FPGA family the design is for (``"ice40"``, ``"ecp5"``, …; ``device``'s when not given): on a
        family without LUT RAM (iCE40) the streaming pools keep their row memories in block RAM
        (:class:`bitspike.rtl_templates.pool.PoolEngine`'s ``row_block``). ``None``: no family assumed.
    """
    if max_luts is not None and (isinstance(max_luts, bool) or not isinstance(max_luts, int) or max_luts < 1):
        raise HardwareError(f"max_luts must be a positive integer, not {max_luts!r}")
    _check_graph(manifest)
    ranges = analyse(manifest)
    nodes = []
    for i, layer in enumerate(manifest.layers):
        op = OPS.get(layer.op)
        if op is None:
            raise HardwareError(f"layer {i} '{layer.name}': the generator has no engine for op {layer.op!r} "
                                f"(supported: {', '.join(sorted(OPS))})")
        node = _with_fast_paths(op.plan(i, layer, ranges[layer.name], manifest), fast_paths)
        nodes.append(_with_row_block(node, family if family is not None else getattr(device, "family", None)))
    folds = parse_fold(fold)
    if folds is not None:
        unknown = sorted(set(folds) - {l.name for l in manifest.layers})
        if unknown:
            raise HardwareError(f"--fold names unknown layer(s) {unknown}; layers are {[l.name for l in manifest.layers]}")
    plan = Plan(manifest=manifest, ranges=ranges, layers=tuple(nodes), fold="auto" if folds is None else "manual",
                max_luts=max_luts, options=PlanOptions(folds=folds, max_luts=max_luts, dsp_blocks=dsp_blocks, device=device,
                                        target_interval=target_interval, fuse=fuse, zero_skip=zero_skip,
                                        multi_tap=bool(multi_tap)))
    return run_flow(plan)
