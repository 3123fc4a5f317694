"""The folding pass: how many PEs and lanes each engine gets.

``fold="auto"`` balances the layer pipeline: starting from one PE and one lane
everywhere, it repeatedly widens the slowest engine (the next divisor of its
output or input count, so that weight memories stay unpadded) while the LUT
estimate stays within the budget, until the slowest engine is no slower than
what the streams allow. The LUT model is a coarse per-engine estimate
(calibrated on Yosys ``synth_xilinx``; products wider than ~30 bits of
LUT logic are assumed to go to DSP blocks).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping


from bitspike.analysis import LayerRanges
from bitspike.errors import HardwareError
from bitspike.manifest import Layer, Manifest, SynapticLayer
from bitspike.rtl_templates.synapse import partial_sum_range
from bitspike.rtl_templates.weight_mem import WeightLayout

from .plan import LayerPlan
from .timing import engine_busy

__all__ = ["apply_folding", "estimate_luts", "DEFAULT_MAX_LUTS"]

#: LUT budget of ``fold="auto"`` when none is given
DEFAULT_MAX_LUTS = 3000


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _synaptic_widths(layer: SynapticLayer, r: LayerRanges) -> dict[str, int]:
    psum = partial_sum_range(layer.weight.reshape(layer.weight.shape[0], -1), r.count.hi)
    out = {"x": r.x.width, "v": r.v.width, "count": r.count.width, "psum": psum.width, "acc": r.acc.width,
           "out": r.out.width}
    if r.product is not None:
        out["product"] = r.product.width
    return out


def estimate_luts(lp: LayerPlan) -> int:
    """Coarse LUT estimate of one engine (see module docstring)."""
    if lp.op == "flatten":
        return 0
    if lp.w_bits is None:
        return 40 + 3 * lp.widths.get("out", 8)
    w = lp.widths
    cw, psum = w["count"], w["psum"]
    mult = cw if lp.w_bits == 1 else (lp.w_bits * cw if lp.w_bits * cw < 30 else 0)
    per_pe = lp.lanes * (mult + psum) + 2 * psum
    neuron = 2 * (lp.timesteps or 1) * w["v"] if cw > 1 or (lp.timesteps or 1) > 1 else w["x"]
    requant = 3 * w["acc"] + w["out"]
    return 60 + lp.pes * per_pe + neuron + requant + lp.lanes * cw


def _with_fold(lp: LayerPlan, layer: Layer, r: LayerRanges, pes: int, lanes: int) -> LayerPlan:
    if not isinstance(layer, SynapticLayer):
        return replace(lp, cycles=engine_busy(lp))
    layout = WeightLayout(lp.out_features, lp.in_features, pes, lanes, lp.w_bits or 1, taps=lp.kernel[0] * lp.kernel[1])
    widths = dict(lp.widths) or _synaptic_widths(layer, r)
    lp = replace(lp, pes=pes, lanes=lanes, memory_bits=layout.memory_bits, widths=widths)
    return replace(lp, cycles=engine_busy(lp))


def apply_folding(manifest: Manifest, ranges: Mapping[str, LayerRanges], layers: tuple[LayerPlan, ...],
                  folds: Mapping[str, tuple[int, int]] | None, max_luts: int | None) -> tuple[LayerPlan, ...]:
    """Set ``pes``, ``lanes``, widths, memory bits and busy cycles of every layer."""
    by_name = {l.name: l for l in manifest.layers}
    out = []
    for lp in layers:
        layer = by_name[lp.name]
        pes, lanes = (folds or {}).get(lp.name, (1, 1))
        if isinstance(layer, SynapticLayer):
            if not 1 <= pes <= lp.out_features:
                raise HardwareError(f"fold for '{lp.name}': pes {pes} must be in 1 … {lp.out_features} (its outputs)")
            if not 1 <= lanes <= lp.in_features:
                raise HardwareError(f"fold for '{lp.name}': lanes {lanes} must be in 1 … {lp.in_features} (its inputs)")
        elif (pes, lanes) != (1, 1):
            raise HardwareError(f"fold for '{lp.name}': a {lp.op} layer has no PEs to fold")
        out.append(_with_fold(lp, layer, ranges[lp.name], pes, lanes))
    if folds is not None:
        return tuple(out)
    budget = DEFAULT_MAX_LUTS if max_luts is None else max_luts
    floor = manifest.input.size  # no engine needs to be faster than the pixel stream
    while True:
        syn = [i for i, lp in enumerate(out) if lp.w_bits is not None]
        slowest = max(syn, key=lambda i: (out[i].cycles, -i))
        lp = out[slowest]
        if lp.cycles <= max(floor, lp.in_elements, lp.out_elements):
            break
        total = sum(estimate_luts(l) for l in out)
        layer = by_name[lp.name]
        candidates = []
        for pes in [d for d in _divisors(lp.out_features) if d > lp.pes][:1] + [lp.pes]:
            for lanes in [d for d in _divisors(lp.in_features) if d > lp.lanes][:1] + [lp.lanes]:
                if (pes, lanes) == (lp.pes, lp.lanes):
                    continue
                cand = _with_fold(lp, layer, ranges[lp.name], pes, lanes)
                cost = total - estimate_luts(lp) + estimate_luts(cand)
                if cand.cycles < lp.cycles and cost <= budget:
                    candidates.append((cand.cycles * estimate_luts(cand), cand.cycles, cand.pes, cand.lanes, cand))
        if not candidates:
            break
        out[slowest] = min(candidates, key=lambda c: c[:4])[4]
    return tuple(out)
