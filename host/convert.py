"""Export a trained run to a manifest (the integer contract of docs/SEMANTICS.md §4).

Units. Every current (a value flowing between layers) becomes an integer in a
*unit* chosen by the layer that reads it: a neuron with threshold V_th and
exponent k reads currents in units V_th / 2**k, so its integer threshold is
θ = 2**k (a shift in hardware). A sum-pool's input unit is n times its output
unit (the 1/n of average pooling lives in the unit); max-pool and flatten keep
units; a residual add rescales both inputs into its output's unit.

Requantization. A synaptic layer's accumulator unit is a = S_w·V_th/T. With
BatchNorm folded (g = γ/√(σ²+ε), c = β − g·μ) its output current in unit U is
x = (g·a·acc + g·bias + c) / U, computed as (acc·M + B + 2**(SH−1)) >> SH with
M = round(g·a/U · 2**SH) and B = round((g·bias + c)/U · 2**SH), clamped to
[0, q·2**k] of the consumer (lossless: a neuron cannot tell larger currents
apart). The last layer's bias is its accumulator-unit bias and its
accumulators are the logits.

Entry point: :func:`export_model` (a model and calibration images to a
manifest). Exporting a whole training run, with its evaluation and the
agreement audit, is :func:`bitspike.host.export.export_run` (the command line
is ``bitspike export``); it sits above the training code, while this module
sits below it (the cost model exports a copy of the model being trained).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from bitspike.errors import BitspikeError
from bitspike.manifest import InputSpec, Layer, Manifest
from bitspike.ops.base import OPS

from .models import BasicBlock, BitNet, SumPool2d, layer_names
from .quant import QLinear, QuantLayer

__all__ = ["export_model", "ExportContext", "DEFAULT_CURRENT_BITS", "MULT_BITS", "HEADROOM"]

log = logging.getLogger("bitspike.export")

#: k of every learnable neuron: the current's resolution is V_th / 2**k
DEFAULT_CURRENT_BITS = 8
#: requantization multipliers get this many significant bits
MULT_BITS = 14
#: headroom over the largest current seen in calibration, for currents no neuron clamps
HEADROOM = 2.0


@dataclass
class _Node:
    name: str
    kind: str  # the manifest op it becomes: "linear", "conv2d", "maxpool", "avgpool", "flatten", "add"
    inputs: list[str]
    module: nn.Module | None = None
    kernel: int = 0
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()
    consumers: list[str] = field(default_factory=list)


def _synaptic_op(module: QuantLayer) -> str:
    return "linear" if isinstance(module, QLinear) else "conv2d"


def _graph(model: BitNet) -> list[_Node]:
    """The model as a list of nodes in topological order, names as in the manifest."""
    names = layer_names(model)
    nodes: list[_Node] = []
    counters = {"pool": 0, "flatten": 0, "add": 0}
    last = "input"

    def add(node: _Node) -> str:
        nodes.append(node)
        return node.name

    def fresh(prefix: str) -> str:
        counters[prefix] += 1
        return f"{prefix}{counters[prefix]}"

    for position, m in enumerate(model.body):
        if position == 0 and isinstance(m, nn.Flatten):
            continue  # a flat network input: the manifest's input is already [features]
        if isinstance(m, QuantLayer):
            last = add(_Node(names[m], _synaptic_op(m), [last], m))
        elif isinstance(m, nn.MaxPool2d):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            if (m.stride or k) != k or m.padding not in (0, (0, 0)):
                raise BitspikeError("export supports max-pooling with stride = kernel and no padding")
            last = add(_Node(fresh("pool"), "maxpool", [last], m, kernel=k))
        elif isinstance(m, SumPool2d):
            last = add(_Node(fresh("pool"), "avgpool", [last], m, kernel=m.kernel))
        elif isinstance(m, nn.Flatten):
            last = add(_Node(fresh("flatten"), "flatten", [last], m))
        elif isinstance(m, BasicBlock):
            block_in = last
            h = add(_Node(names[m.conv1], _synaptic_op(m.conv1), [block_in], m.conv1))
            h = add(_Node(names[m.conv2], _synaptic_op(m.conv2), [h], m.conv2))
            short = block_in if m.shortcut is None else add(_Node(names[m.shortcut], _synaptic_op(m.shortcut),
                                                                  [block_in], m.shortcut))
            last = add(_Node(fresh("add"), "add", [h, short], m))
        else:
            raise BitspikeError(f"export has no rule for the module {type(m).__name__}")
    by_name = {n.name: n for n in nodes}
    for n in nodes:
        for i in n.inputs:
            if i in by_name:
                by_name[i].consumers.append(n.name)
    return nodes


def _trace_shapes_and_peaks(model: BitNet, nodes: list[_Node], calib: torch.Tensor) -> dict[str, float]:
    """Record every node's shapes, and the largest |value| of each node's output on calibration images."""
    peaks: dict[str, float] = {}
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    module_node: dict[int, _Node] = {}
    # a node that joins branches (the residual add) is hooked on its whole block: the hook sees the block's input
    for n in nodes:
        if n.module is not None and not OPS[n.kind].joins_branches:
            module_node[id(n.module)] = n
    add_nodes = {id(n.module): n for n in nodes if OPS[n.kind].joins_branches}
    hooks = []

    def hook_for(node: _Node):
        def hook(mod, args, out):
            shapes[node.name] = (tuple(args[0].shape[1:]), tuple(out.shape[1:]))
            peaks[node.name] = max(peaks.get(node.name, 0.0), float(out.detach().abs().max()))
        return hook

    for m in model.modules():
        node = module_node.get(id(m)) or add_nodes.get(id(m))
        if node is not None:
            hooks.append(m.register_forward_hook(hook_for(node)))
    model.eval()
    with torch.no_grad():
        for i in range(0, len(calib), 500):
            model(calib[i : i + 500])
    for h in hooks:
        h.remove()
    for n in nodes:
        n.in_shape, n.out_shape = shapes[n.name]
        if OPS[n.kind].joins_branches:  # the hook saw the block's input; the add itself adds two outputs of its shape
            n.in_shape = n.out_shape
    return peaks


def _unit_of_neuron(layer: QuantLayer, k: int) -> float:
    return float(layer.neuron.vth.detach().double()) / 2.0**k


def _choose_k(nodes: list[_Node], first: str, current_bits: int) -> dict[str, int]:
    """k of each synaptic layer: 0 for the first (pixels), otherwise ``current_bits`` plus the bits the ops
    between it and the previous neuron ask for (a sum-pool removes log2 of its window)."""
    ks: dict[str, int] = {}
    by_name = {n.name: n for n in nodes}
    for n in nodes:
        if not OPS[n.kind].synaptic:
            continue
        if n.name == first:
            ks[n.name] = 0
            continue
        extra = 0
        src = by_name.get(n.inputs[0])
        while src is not None and (bits := OPS[src.kind].export_transparent(src)) is not None:
            extra += bits
            src = by_name.get(src.inputs[0])
        ks[n.name] = current_bits + extra
    return ks


def _units(nodes: list[_Node], ks: dict[str, int]) -> dict[str, float]:
    """Unit of every node's output (and of "input"), fixed by its consumers (reverse topological order).

    Each reader's op says which unit it needs its input in (:meth:`bitspike.ops.base.Op.export_unit`).
    """
    units: dict[str, float] = {}
    ctx = ExportContext(nodes={n.name: n for n in nodes}, ks=ks, units=units)
    producers = ["input"] + [n.name for n in nodes]
    consumers_of: dict[str, list[_Node]] = {p: [] for p in producers}
    for n in nodes:
        for i in n.inputs:
            consumers_of[i].append(n)
    for p in reversed(producers):
        if not consumers_of[p]:
            continue  # the logits
        wanted = [u for c in consumers_of[p] if (u := OPS[c.kind].export_unit(c, p, ctx)) is not None]
        if not wanted:  # read only where the reader has no preference (a residual shortcut): the reader's unit
            joins = [c for c in consumers_of[p] if OPS[c.kind].joins_branches]
            if not joins:
                raise BitspikeError(f"export: the output of {p!r} is never read")
            wanted = [units[joins[0].name]]
        ref = wanted[0]
        for u in wanted[1:]:
            if not math.isclose(u, ref, rel_tol=1e-9):
                raise BitspikeError(f"export: the readers of {p!r} need different units ({ref} and {u})")
        units[p] = ref
    return units


def _shift_for(max_abs: float) -> int:
    """Shift that gives a multiplier of ``max_abs`` about MULT_BITS significant bits."""
    if max_abs <= 0:
        return 0
    return int(min(40, max(0, MULT_BITS - math.ceil(math.log2(max_abs)))))


def _round(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (as the weight quantizer does)."""
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int64)


@dataclass
class ExportContext:
    """What an op's export rule (:meth:`bitspike.ops.base.Op.export_layer`) may ask of the whole export.

    ``nodes`` by name, ``ks`` (k of every synaptic layer), ``units`` (of every node's output and of
    ``"input"``) and ``peaks`` (largest |value| of each node's output on the calibration images).
    """

    nodes: dict[str, _Node]
    ks: dict[str, int]
    units: dict[str, float]
    peaks: dict[str, float] = field(default_factory=dict)

    round = staticmethod(_round)
    shift_for = staticmethod(_shift_for)

    def neuron_unit(self, node: _Node) -> float:
        """The current unit a synaptic node's neuron reads: V_th / 2**k."""
        return _unit_of_neuron(node.module, self.ks[node.name])  # type: ignore[arg-type]

    def clamp_hi(self, name: str) -> int:
        """Upper clamp of node ``name``'s output current: q·2**k of the neurons that read it when only
        neurons do, through ops that pass values on monotonically (lossless); else calibrated with headroom."""
        readers = list(self.nodes[name].consumers)
        neuron_his = []
        while readers:
            r = self.nodes[readers.pop()]
            op = OPS[r.kind]
            if op.synaptic:
                neuron_his.append(op.export_neuron_hi(r, self))
            elif op.export_transparent(r) is not None:
                readers.extend(r.consumers)
            else:
                peak_int = self.peaks.get(name, 0.0) / self.units[name]
                return max(1, int(math.ceil(peak_int * HEADROOM)))
        return max(neuron_his)


def export_model(model: BitNet, calib_images: np.ndarray, name: str = "bitspike", classes: list[str] | None = None,
                 info: dict[str, Any] | None = None, current_bits: int = DEFAULT_CURRENT_BITS) -> Manifest:
    """Turn a trained model into a manifest.

    Parameters
    ----------
    model
        A trained :class:`~bitspike.host.models.BitNet` (CPU).
    calib_images
        ``uint8`` images ``[N, C, H, W]`` (a few hundred training images): shapes, and the clamp
        bounds of currents that no neuron clamps (residual paths).
    current_bits
        k of the learnable neurons: currents resolve V_th / 2**k.
    """
    model = model.cpu().eval()
    nodes = _graph(model)
    dtype = next(model.parameters()).dtype
    calib = torch.as_tensor(np.asarray(calib_images)).to(dtype) * float(model.input_scale)
    peaks = _trace_shapes_and_peaks(model, nodes, calib)
    syn = [n for n in nodes if OPS[n.kind].synaptic]
    if not syn or not syn[-1].module.is_last:  # type: ignore[union-attr]
        raise BitspikeError("export: the model must end in its output layer")
    ks = _choose_k(nodes, syn[0].name, current_bits)
    units = _units(nodes, ks)
    first_unit, input_scale = units["input"], float(model.input_scale)
    if not math.isclose(first_unit, input_scale, rel_tol=1e-6):
        raise BitspikeError(f"export: the first layer's threshold {first_unit} is not the input scale {input_scale}")
    ctx = ExportContext(nodes={n.name: n for n in nodes}, ks=ks, units=units, peaks=peaks)
    layers: list[Layer] = [OPS[n.kind].export_layer(n, ctx) for n in nodes]
    in_shape = tuple(int(v) for v in model.in_shape)
    flat_input = isinstance(model.body[0], nn.Flatten)
    spec = InputSpec(shape=(int(np.prod(in_shape)),) if flat_input else in_shape, bits=8, scale=input_scale)
    return Manifest.build(name, spec, layers, classes, info or {})
