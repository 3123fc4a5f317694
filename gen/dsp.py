"""DSP blocks allotted per product, within the device's count.

A synaptic engine has two kinds of multiplies: the PE products (weight ×
spike count, ``pes × lanes`` of them) and the pieces of its requantizer's
multiply (:func:`bitspike.rtl_templates.requant.requant_pieces`). Narrow
products (sign and ternary weights, small widths) are always logic
(:func:`bitspike.rtl_templates.pe.is_narrow`); every other product is a
*candidate* for a DSP block and has a cost: the LUTs it takes when built as
shift-add logic instead.

:func:`allocate_dsps` gives the device's blocks to the candidates that save
the most LUTs, across all engines (ties: requantizer pieces, then earlier
layers), and writes each engine's share into its plan (``dsp_blocks``). The
engine builds its first ``dsp_blocks`` candidates with ``*`` (Yosys maps them
to MULT18X18D or SB_MAC16) and the rest in LUTs, so the design never holds
more multiplies than the device has blocks, and a shortage moves only the
cheapest products into logic, not all of them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

from bitspike.analysis import LayerRanges
from bitspike.errors import HardwareError
from bitspike.manifest import Manifest
from bitspike.ops.base import OPS

from .ir import Plan, PlanNode, register_pass

__all__ = ["allocate_dsps", "engine_candidates", "logic_product_luts", "dsp_pass", "RESERVED_PER_ENGINE"]

#: blocks kept back for engines whose multiplies the allocator does not place (the residual add's two
#: products; a pool's address arithmetic), so Yosys never finds the device short; each op says its own
RESERVED_PER_ENGINE = {name: op.reserved_dsps for name, op in OPS.items() if op.reserved_dsps}


def engine_candidates(layer, r: LayerRanges, lp: PlanNode) -> list[tuple[int, str]]:
    """The engine's DSP candidates, best first, exactly as the engine orders them."""
    return OPS[layer.op].dsp_candidates(layer, r, lp)


def allocate_dsps(manifest: Manifest, ranges: Mapping[str, LayerRanges], layers: tuple[PlanNode, ...],
                  dsp_blocks: int | None) -> tuple[PlanNode, ...]:
    """Set every layer's ``dsp_blocks`` (those with candidates) so that together they use at most ``dsp_blocks``.

    ``None`` leaves every layer unconstrained (each candidate product becomes a DSP multiply).

    Raises
    ------
    HardwareError
        For a negative or non-integer budget.
    """
    if dsp_blocks is None:
        return layers
    if isinstance(dsp_blocks, bool) or not isinstance(dsp_blocks, int) or dsp_blocks < 0:
        raise HardwareError(f"the DSP budget must be a non-negative integer, not {dsp_blocks!r}")
    pool, budget = _pool(manifest, ranges, layers, dsp_blocks)
    share = {i: 0 for i in range(len(layers))}
    for _, _, i, _ in pool[:budget]:
        share[i] += 1
    return tuple(OPS[lp.op].with_dsp_blocks(lp, share[i]) for i, lp in enumerate(layers))


def _pool(manifest: Manifest, ranges: Mapping[str, LayerRanges], layers: tuple[PlanNode, ...], dsp_blocks: int):
    """Every engine's candidates, in the order the allocator hands out blocks, and the blocks it hands out."""
    by_name = {l.name: l for l in manifest.layers}
    budget = max(0, dsp_blocks - sum(OPS[lp.op].reserved_dsps for lp in layers))
    pool = []
    for i, lp in enumerate(layers):
        for rank, (cost, kind) in enumerate(engine_candidates(by_name[lp.name], ranges[lp.name], lp)):
            pool.append((-cost, kind != "requant", i, rank))
    pool.sort()
    return pool, budget


def logic_product_luts(manifest: Manifest, ranges: Mapping[str, LayerRanges], layers: tuple[PlanNode, ...],
                       dsp_blocks: int | None) -> int:
    """LUTs of the candidate products that :func:`allocate_dsps` leaves in logic (the part has too few blocks).

    The folding pass adds them to the LUT estimate, whose per-engine models count every candidate
    as a DSP multiply. 0 without a limit.
    """
    if dsp_blocks is None:
        return 0
    pool, budget = _pool(manifest, ranges, layers, dsp_blocks)
    return sum(-c[0] for c in pool[budget:])


@register_pass("dsp")
def dsp_pass(plan: Plan) -> Plan:
    """Share the device's DSP blocks (``plan.options.dsp_blocks``) out per product."""
    return replace(plan, layers=allocate_dsps(plan.manifest, plan.ranges, plan.layers, plan.options.dsp_blocks))
