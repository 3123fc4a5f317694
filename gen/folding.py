"""The width, folding and LUT passes: register widths, how many PEs and lanes each engine gets, and LUTs.

``fold="auto"`` balances the layer pipeline: starting from one PE and one lane
everywhere, it repeatedly widens the slowest foldable engine (to the next of
the PE and lane counts its op offers, :meth:`bitspike.ops.base.Op.fold_choices`;
the synaptic ops offer divisors of the outputs and of the inputs an output
reads, so that weight memories stay unpadded) while the LUT estimate stays
within the budget, until the slowest engine is no slower than what the
streams allow. The LUT model is a coarse
per-engine estimate, each op's own (:meth:`bitspike.ops.base.Op.estimate_luts`;
calibrated on Yosys ``synth_xilinx``; products wider than ~30 bits of LUT
logic are assumed to go to DSP blocks).
"""

from __future__ import annotations

from dataclasses import replace

from bitspike.ops.base import OPS

from .ir import Plan, PlanNode, register_pass

__all__ = ["estimate_luts", "DEFAULT_MAX_LUTS", "widths_pass", "folding_pass", "luts_pass"]

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


@register_pass("folding")
def folding_pass(plan: Plan) -> Plan:
    """Set ``pes``, ``lanes``, memory bits and busy cycles of every node (the user's folds, or auto)."""
    manifest = plan.manifest
    folds = plan.options.folds
    by_name = {l.name: l for l in manifest.layers}
    out = [_with_fold(n, by_name[n.name], plan, *(folds or {}).get(n.name, (1, 1))) for n in plan.layers]
    if folds is not None:
        return replace(plan, layers=tuple(out))
    budget = DEFAULT_MAX_LUTS if plan.options.max_luts is None else plan.options.max_luts
    floor = manifest.input.size  # no engine needs to be faster than the pixel stream
    while True:
        foldable = [i for i, n in enumerate(out) if OPS[n.op].foldable]
        if not foldable:
            break
        slowest = max(foldable, key=lambda i: (out[i].cycles, -i))
        node = out[slowest]
        if node.cycles <= max(floor, node.in_elements, node.out_elements):
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
    return replace(plan, layers=tuple(out))


@register_pass("luts")
def luts_pass(plan: Plan) -> Plan:
    """Set every node's LUT estimate and the plan's total."""
    nodes = tuple(replace(n, luts=estimate_luts(n)) for n in plan.layers)
    return replace(plan, layers=nodes, estimated_luts=sum(n.luts for n in nodes))
