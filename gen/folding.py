"""The width, folding and LUT passes: register widths, how many PEs and lanes each engine gets, and LUTs.

``fold="auto"`` balances the layer pipeline. With only a LUT budget it starts
from one PE and one lane everywhere and repeatedly widens the slowest foldable
engine (to the next of the PE and lane counts its op offers,
:meth:`bitspike.ops.base.Op.fold_choices`; the synaptic ops offer divisors of
the outputs and of the inputs an output reads, so that weight memories stay
unpadded) while the LUT estimate stays within the budget, until the slowest
engine is no slower than what the streams allow. For a device (``gen --board``,
``--device``, ``bitspike build``) it fills the part instead: the smallest
interval whose per-engine cheapest folds fit the part's LUTs, flip-flops, DSP
blocks and block RAMs (:func:`estimate_resources`), or with a target interval
the fewest LUTs that reach it (:func:`folding_pass`). The LUT model is a coarse
per-engine estimate, each op's own (:meth:`bitspike.ops.base.Op.estimate_luts`;
calibrated on Yosys ``synth_xilinx``; products wider than ~30 bits of LUT
logic are assumed to go to DSP blocks); the DSP and weight-memory block-RAM
counts are exact.
"""

from __future__ import annotations

from dataclasses import replace

from bitspike.ops.base import OPS

from .ir import Plan, PlanNode, register_pass

__all__ = ["estimate_luts", "estimate_brams", "estimate_resources", "bram_blocks", "memory_blocks", "BRAM_SHAPES",
           "DEFAULT_MAX_LUTS", "widths_pass", "folding_pass", "luts_pass"]

#: LUT budget of ``fold="auto"`` when none is given
DEFAULT_MAX_LUTS = 3000


def estimate_luts(node: PlanNode) -> int:
    """Coarse LUT estimate of one engine (its op's model)."""
    return OPS[node.op].estimate_luts(node)


@register_pass("widths")
def widths_pass(plan: Plan) -> Plan:
    """Set every node's register widths (from the analysed ranges)."""
    by_name = {l.name: l for l in plan.manifest.layers}
    nodes = tuple(replace(n, widths=OPS[n.op].widths(n, by_name[n.name], plan.ranges[n.name])) for n in plan.layers)
    return replace(plan, layers=nodes)


def _with_fold(node: PlanNode, layer, plan: Plan, pes: int, lanes: int) -> PlanNode:
    op = OPS[node.op]
    node = op.fold(node, layer, plan.ranges[node.name], pes, lanes)
    return replace(node, cycles=op.busy_cycles(node))


#: block-RAM shapes ``(depth, width)`` a memory can be cut into, per family (ECP5 DP16KD and Gowin BSRAM:
#: 18 Kb, up to 36 bits wide as a one-read-port memory; iCE40 SB_RAM40_4K: 4 Kb, up to 16 bits)
BRAM_SHAPES = {
    "ecp5": ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36)),
    "gowin": ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36)),
    "ice40": ((2048, 2), (1024, 4), (512, 8), (256, 16)),
}
#: Yosys ``memory_libmap``'s costs (its techlibs' ``cost`` lines): one block RAM, one 16 × 4 LUT RAM
#: (ECP5 ``TRELLIS_DPR16X4``; Gowin's 16 × 4 shadow RAM alike); ``None``: the family has no LUT RAM
BRAM_COST = {"ecp5": 128, "gowin": 128, "ice40": 64}
LUTRAM_COST = {"ecp5": 4, "gowin": 4, "ice40": None}
#: what a RAM bit costs built from flip-flops and LUTs (Yosys' default ``-logic-cost-ram``)
LOGIC_COST_PER_RAM_BIT = 1.0


def bram_blocks(depth: int, width: int, family: str) -> int:
    """Block RAMs of ``family`` a ``depth × width`` memory takes: the fewest over the shapes it can be cut into.

    Families without a table use the 18 Kb shapes.
    """
    shapes = BRAM_SHAPES.get(family, BRAM_SHAPES["ecp5"])
    return min(-(-depth // d) * -(-width // w) for d, w in shapes)


def memory_blocks(depth: int, width: int, kind: str, family: str) -> int:
    """Block RAMs that Yosys gives one memory of ``kind`` (:meth:`bitspike.ops.base.Op.memories`).

    ``block``: marked ``ram_style = "block"``, always block RAM. ``ram``: a RAM with a registered read,
    which goes where ``memory_libmap`` finds it cheapest: block RAM, LUT RAM (16 × 4 cells) or logic
    (e.g. a 16 × 64 frame buffer: 16 LUT RAM cells, cost 64, against one DP16KD, cost 128, on ECP5; a
    16 × 16 one on iCE40: one block, cost 64, against 256 bits of logic). ``async``: read without a
    clock, never block RAM.
    """
    if kind == "block":
        return bram_blocks(depth, width, family)
    if kind != "ram":
        return 0
    blocks = bram_blocks(depth, width, family)
    lutram = LUTRAM_COST.get(family, 4)
    alternatives = [LOGIC_COST_PER_RAM_BIT * depth * width]
    if lutram is not None:
        alternatives.append(lutram * -(-depth // 16) * -(-width // 4))
    return blocks if BRAM_COST.get(family, 128) * blocks < min(alternatives) else 0


def estimate_brams(node: PlanNode, family: str) -> int:
    """Block RAMs of one engine on ``family``: :func:`memory_blocks` of each of its memories
    (:meth:`bitspike.ops.base.Op.memories`)."""
    return sum(memory_blocks(d, w, kind, family) for d, w, kind in OPS[node.op].memories(node))


def estimate_resources(plan: Plan, family: str, layers: tuple[PlanNode, ...] | None = None,
                       dsp_blocks: int | None = None) -> dict:
    """The planner's resource estimate of the accelerator (``layers``: the plan's unless given).

    Returns ``{"lut", "ff", "dsp", "bram"}`` totals and ``"layers"`` (name → the same per engine).
    ``lut`` is in the LUT model's units (:func:`estimate_luts`) and includes the products that a
    ``dsp_blocks`` limit moves into logic (:func:`bitspike.gen.dsp.logic_product_luts`); ``dsp``
    and ``bram`` count what the generated engines instantiate.
    """
    from .dsp import allocate_dsps, logic_product_luts

    layers = plan.layers if layers is None else layers
    if dsp_blocks is None:
        dsp_blocks = plan.options.dsp_blocks
    if dsp_blocks is not None and any(getattr(n, "dsp_blocks", None) is None for n in layers if OPS[n.op].foldable):
        layers = allocate_dsps(plan.manifest, plan.ranges, layers, dsp_blocks)
    by_name = {l.name: l for l in plan.manifest.layers}
    per = {}
    for n in layers:
        op = OPS[n.op]
        per[n.name] = {"lut": op.estimate_luts(n), "ff": op.estimate_ffs(n) if n.engine else 0,
                       "dsp": op.estimate_dsps(n, by_name[n.name], plan.ranges[n.name]) if n.engine else 0,
                       "bram": estimate_brams(n, family) if n.engine else 0}
    total = {k: sum(v[k] for v in per.values()) for k in ("lut", "ff", "dsp", "bram")}
    total["lut"] += logic_product_luts(plan.manifest, plan.ranges, layers, dsp_blocks)
    return dict(total, layers=per)


def _fits(total: dict, device, max_luts: int | None) -> str | None:
    """The first resource ``total`` exceeds (``lut``, ``ff``, ``bram``), or ``None``."""
    limits = {"lut": device.lut if max_luts is None else max_luts, "ff": device.ff, "bram": device.bram}
    return next((k for k, v in limits.items() if total[k] > v), None)


@register_pass("folding")
def folding_pass(plan: Plan) -> Plan:
    """Set ``pes``, ``lanes``, memory bits and busy cycles of every node (the user's folds, or auto).

    ``fold="auto"`` without a device or a target (:func:`_balance`): widen the slowest foldable
    engine step by step, each step to the candidate with the least cycles × LUTs, while the LUT
    estimate stays within ``max_luts`` (:data:`DEFAULT_MAX_LUTS`), until the slowest is no slower
    than the streams allow (the input pixels, and each engine's own input and output elements).

    With a device (``options.device``, a :class:`~bitspike.gen.boards.DeviceBudget`) or a target
    interval (``options.target_interval``, ``--target-fps``), :func:`_fill`: for an interval ``T``
    every engine takes its cheapest fold (fewest estimated LUTs, then block RAMs) whose busy cycles
    are at most ``T``; the plan is that of the smallest ``T`` whose whole estimate (LUTs with the
    products the part's DSP count moves into logic, flip-flops, block RAMs) fits the device, down
    to the floor the streams set; with a target, ``T`` is the target: the fewest LUTs that reach it.

    Raises
    ------
    HardwareError
        A target interval that the streams' floor or the budget does not allow.
    """
    manifest = plan.manifest
    folds = plan.options.folds
    by_name = {l.name: l for l in manifest.layers}
    out = [_with_fold(n, by_name[n.name], plan, *(folds or {}).get(n.name, (1, 1))) for n in plan.layers]
    if folds is not None:
        return replace(plan, layers=tuple(out))
    if plan.options.device is None and plan.options.target_interval is None:
        return replace(plan, layers=tuple(_balance(plan, out)))
    return replace(plan, layers=tuple(_fill(plan, out)))


def _floor_of(plan: Plan, node: PlanNode) -> int:
    # no engine needs to be faster than the pixel stream, nor than its own stream elements
    return max(plan.manifest.input.size, node.in_elements, node.out_elements)


def _balance(plan: Plan, out: list[PlanNode]) -> list[PlanNode]:
    """The LUT-budget folder (no device): widen the slowest engine while the LUT estimate allows."""
    by_name = {l.name: l for l in plan.manifest.layers}
    budget = DEFAULT_MAX_LUTS if plan.options.max_luts is None else plan.options.max_luts
    while True:
        foldable = [i for i, n in enumerate(out) if OPS[n.op].foldable]
        if not foldable:
            break
        slowest = max(foldable, key=lambda i: (out[i].cycles, -i))
        node = out[slowest]
        if node.cycles <= _floor_of(plan, node):
            break
        total = sum(estimate_luts(n) for n in out)
        layer = by_name[node.name]
        candidates = []
        pes_choices, lanes_choices = OPS[node.op].fold_choices(node)  # legal folds only: none is refused
        for pes in [d for d in pes_choices if d > node.pes][:1] + [node.pes]:
            for lanes in [d for d in lanes_choices if d > node.lanes][:1] + [node.lanes]:
                if (pes, lanes) == (node.pes, node.lanes):
                    continue
                cand = _with_fold(node, layer, plan, pes, lanes)
                cost = total - estimate_luts(node) + estimate_luts(cand)
                if cand.cycles < node.cycles and cost <= budget:
                    candidates.append((cand.cycles * estimate_luts(cand), cand.cycles, cand.pes, cand.lanes, cand))
        if not candidates:
            break
        out[slowest] = min(candidates, key=lambda c: c[:4])[4]
    return out


def _fill(plan: Plan, out: list[PlanNode]) -> list[PlanNode]:
    """The device filler and the target-interval folder (see :func:`folding_pass`)."""
    from bitspike.errors import HardwareError

    device, target = plan.options.device, plan.options.target_interval
    by_name = {l.name: l for l in plan.manifest.layers}
    family = device.family if device is not None else "ecp5"
    dsp_limit = device.dsp if device is not None else plan.options.dsp_blocks
    budget = DEFAULT_MAX_LUTS if plan.options.max_luts is None else plan.options.max_luts
    # every legal fold of every foldable engine, cheapest first: (luts, brams, pes·lanes, pes) → node
    options: dict[int, list[PlanNode]] = {}
    for i, node in enumerate(out):
        if not OPS[node.op].foldable:
            continue
        pes_choices, lanes_choices = OPS[node.op].fold_choices(node)
        folds = [_with_fold(node, by_name[node.name], plan, p, l) for p in pes_choices for l in lanes_choices]
        options[i] = sorted(folds, key=lambda n: (estimate_luts(n), estimate_brams(n, family), n.pes * n.lanes,
                                                  n.pes))
    fixed = max([n.cycles for i, n in enumerate(out) if i not in options] + [plan.manifest.input.size])
    floor = max([fixed] + [_floor_of(plan, out[i]) for i in options])

    def at(interval: int) -> list[PlanNode] | None:
        layers = list(out)
        for i, folds in options.items():
            best = next((n for n in folds if n.cycles <= interval), None)
            if best is None:
                return None
            layers[i] = best
        return layers

    def fits(layers: list[PlanNode]) -> bool:
        if device is None:
            return sum(estimate_luts(n) for n in layers) <= budget
        return _fits(estimate_resources(plan, family, tuple(layers), dsp_limit), device, plan.options.max_luts) is None

    def interval_of(layers: list[PlanNode]) -> int:
        return max([n.cycles for n in layers] + [plan.manifest.input.size])

    if target is not None:
        if target < floor:
            raise HardwareError(f"--target-fps needs an interval of at most {target} cycles, but the streams set a "
                                f"floor of {floor} cycles (one element per clock: the input's "
                                f"{plan.manifest.input.size} pixels and each engine's input and output elements); "
                                "lower --target-fps or raise --clock")
        layers = at(target)
        if layers is None or not fits(layers):
            limit = (f"{device.part}'s budget ({_budget_text(device)})" if device is not None
                     else f"a LUT budget of {budget}")
            best = _fill(replace(plan, options=replace(plan.options, target_interval=None)), out) \
                if device is not None else None
            reach = f"; the best fold within it reaches {interval_of(best)} cycles" if best else ""
            raise HardwareError(f"--target-fps needs an interval of at most {target} cycles, which does not fit "
                                f"within {limit}{reach}; lower --target-fps, raise --clock, or pick a larger device")
        return layers
    # the intervals the engines can take, from the floor up; the estimate shrinks as the interval grows,
    # so the smallest that fits is found by bisection
    steps = sorted({n.cycles for folds in options.values() for n in folds if n.cycles >= floor} | {floor})
    lo, hi = 0, len(steps) - 1
    slowest_alone = at(steps[-1])
    if slowest_alone is None or not fits(slowest_alone):
        return out  # not even the narrowest folds fit: 1 × 1 everywhere (the build's fit check says what overflows)
    while lo < hi:
        mid = (lo + hi) // 2
        layers = at(steps[mid])
        if layers is not None and fits(layers):
            hi = mid
        else:
            lo = mid + 1
    return at(steps[lo])


def _budget_text(device) -> str:
    return f"{device.lut} estimated LUTs, {device.ff} FFs, {device.dsp} DSPs, {device.bram} BRAMs"


@register_pass("luts")
def luts_pass(plan: Plan) -> Plan:
    """Set every node's LUT estimate and the plan's total."""
    nodes = tuple(replace(n, luts=estimate_luts(n)) for n in plan.layers)
    return replace(plan, layers=nodes, estimated_luts=sum(n.luts for n in nodes))
