"""The fuse pass: fused requantize-and-fire at the layer boundaries where it is exact and cheaper.

In bitspike a synaptic layer is neuron → synapse → requantizer, so between
two synaptic layers L → L+1 sit L's requantizer and L+1's neuron. With the
paper's (squeezed) neuron, L+1's spike count is a function of its constant
current alone, and where that function is monotone the pair is a step
function of L's accumulator: per-channel threshold comparisons
(:func:`bitspike.rtl_templates.threshold.fused_thresholds`, exact by
construction from the integer contract). A fused boundary has L's drain
compare instead of requantize, its stream carry L+1's spike counts, and
L+1's engine skip its neuron.

A boundary is a candidate when L's stream goes to exactly one engine, L+1,
with nothing between them but re-indexings (flatten): a fork, a residual
add or a pool reads currents. Each op says whether it can give thresholds
(:meth:`bitspike.ops.base.Op.fused_output`) and take counts
(:meth:`~bitspike.ops.base.Op.counts_refused`); this pass never tells op
kinds apart.

Modes (``PlanOptions.fuse``, ``bitspike gen --fuse``):

* ``"off"``: nothing is fused (the hardware of a generator without fusion);
* ``"auto"``: every exact candidate where the thresholds cost fewer LUTs than
  the multiplier path they replace (the op's model,
  :meth:`bitspike.ops.base.Op.fusion_saving`: comparators and their ROM
  against the requantizer's multiply, adds, clamp, ROMs and the next neuron;
  calibrated in bench/results/fuse.md);
* ``"on"``: every boundary out of a synaptic layer, whatever the estimate; an error naming the
  first layer whose boundary cannot be fused exactly (its output goes to a pool, an add or a
  fork, or the thresholds would not be exact).

The plan's ``fusion`` lists, per boundary, whether it was fused and why not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bitspike.errors import HardwareError
from bitspike.ops.base import OPS

from .ir import Plan, register_pass, stream_source

__all__ = ["FUSE_MODES", "DEFAULT_FUSE", "Boundary", "fuse_pass", "fused_reader"]

FUSE_MODES = ("auto", "off", "on")
#: the default of ``generate`` and ``bitspike gen`` (chosen from bench/results/fuse.md)
DEFAULT_FUSE = "auto"


@dataclass(frozen=True)
class Boundary:
    """One producer → consumer boundary and the fuse decision on it (the report's ``fusion`` entries)."""

    producer: str
    consumer: str
    fused: bool
    reason: str  # why not fused ("" when fused)
    levels: int = 0  # comparisons per channel when exact
    luts_saved: int = 0  # the estimate's saving (negative: fusion would cost LUTs)

    def to_json(self) -> dict:
        return {"producer": self.producer, "consumer": self.consumer, "fused": self.fused, "reason": self.reason,
                "levels": self.levels, "luts_saved": self.luts_saved}


def _readers(manifest, name: str) -> list[tuple[object, int]]:
    """The engines (layers with hardware) reading ``name``'s stream, with the input position."""
    out = []
    for layer in manifest.layers:
        if OPS[layer.op].passthrough_stream:
            continue
        for pos, src in enumerate(layer.inputs):
            if stream_source(manifest, src) == name:
                out.append((layer, pos))
    return out


def fused_reader(manifest, name: str):
    """The one engine reading ``name``'s stream (the consumer of a fused boundary)."""
    readers = _readers(manifest, name)
    if len(readers) != 1:
        raise HardwareError(f"layer '{name}' feeds {len(readers)} engines: its stream cannot carry fused counts")
    return readers[0][0]


@register_pass("fuse")
def fuse_pass(plan: Plan) -> Plan:
    """Mark the fused boundaries on the producer (thresholds) and consumer (counts in) nodes."""
    mode = plan.options.fuse
    if mode not in FUSE_MODES:
        raise HardwareError(f"fuse must be one of {list(FUSE_MODES)}, not {mode!r}")
    if mode == "off":
        return plan
    m = plan.manifest
    index = {l.name: i for i, l in enumerate(m.layers)}
    nodes = list(plan.layers)
    decided: list[Boundary] = []
    for i, layer in enumerate(m.layers):
        op = OPS[layer.op]
        readers = _readers(m, layer.name)
        if not op.synaptic or not readers:
            continue  # only a synaptic layer feeding another engine has a requantizer and a next neuron
        consumer = readers[0][0]
        if len(readers) != 1:
            names = ", ".join(r.name for r, _ in readers)
            decided.append(Boundary(layer.name, names, False, f"its output goes to {len(readers)} engines ({names})"))
            continue
        why = OPS[consumer.op].counts_refused(consumer)
        fused = None
        if why is None:
            got = op.fused_output(layer, plan.ranges[layer.name], consumer)
            if isinstance(got, str):
                why = got
            else:
                fused = got
        if fused is None:
            decided.append(Boundary(layer.name, consumer.name, False, why))
            continue
        j = index[consumer.name]
        cw = plan.ranges[consumer.name].count.width
        prod = OPS[layer.op].with_fusion(nodes[i], fused=fused, fused_width=cw)
        cons = OPS[consumer.op].with_fusion(nodes[j], counts_in=True)
        saved = op.fusion_saving(layer, plan.ranges[layer.name], nodes[i], nodes[j], fused, plan.options.dsp_blocks)
        if mode == "auto" and saved <= 0:
            decided.append(Boundary(layer.name, consumer.name, False,
                                    f"exact with {fused.levels} thresholds a channel, but the estimate says they "
                                    f"cost {-saved} LUTs more than the requantizer and neuron", fused.levels, saved))
            continue
        nodes[i], nodes[j] = prod, cons
        decided.append(Boundary(layer.name, consumer.name, True, "", fused.levels, saved))
    if mode == "on":
        refused = [b for b in decided if not b.fused]
        if refused:
            b = refused[0]
            raise HardwareError(f"--fuse on: layer '{b.producer}' cannot be fused with '{b.consumer}': {b.reason} "
                                "(use --fuse auto to fuse only where it is exact)")
    return replace(plan, layers=tuple(nodes), fusion=tuple(decided))
