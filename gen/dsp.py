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
from bitspike.manifest import Manifest, SynapticLayer
from bitspike.rtl_templates.synapse import dsp_candidates

from .plan import LayerPlan

__all__ = ["allocate_dsps", "engine_candidates", "RESERVED_PER_ENGINE"]

#: blocks kept back for engines whose multiplies the allocator does not place (the residual add's two
#: products; a pool's address arithmetic), so Yosys never finds the device short
RESERVED_PER_ENGINE = {"add": 2, "maxpool": 2, "avgpool": 2}


def engine_candidates(layer: SynapticLayer, r: LayerRanges, lp: LayerPlan) -> list[tuple[int, str]]:
    """The engine's DSP candidates, best first, exactly as the engine orders them."""
    requant = layer.requant
    return dsp_candidates(w_bits=layer.w_bits, count_width=r.count.width, pes=lp.pes, lanes=lp.lanes,
                          acc_range=r.acc if requant is not None else None,
                          multipliers=requant.multiplier if requant is not None else None)


def allocate_dsps(manifest: Manifest, ranges: Mapping[str, LayerRanges], layers: tuple[LayerPlan, ...],
                  dsp_blocks: int | None) -> tuple[LayerPlan, ...]:
    """Set every synaptic layer's ``dsp_blocks`` so that together they use at most ``dsp_blocks``.

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
    by_name = {l.name: l for l in manifest.layers}
    budget = max(0, dsp_blocks - sum(RESERVED_PER_ENGINE.get(lp.op, 0) for lp in layers))
    pool = []
    for i, lp in enumerate(layers):
        layer = by_name[lp.name]
        if isinstance(layer, SynapticLayer):
            for rank, (cost, kind) in enumerate(engine_candidates(layer, ranges[lp.name], lp)):
                pool.append((-cost, kind != "requant", i, rank))
    pool.sort()
    share = {i: 0 for i, lp in enumerate(layers) if isinstance(by_name[lp.name], SynapticLayer)}
    for _, _, i, _ in pool[:budget]:
        share[i] += 1
    return tuple(replace(lp, dsp_blocks=share[i]) if i in share else lp for i, lp in enumerate(layers))
