"""NIR out: a manifest of binary time-stepped IF/LIF layers written as a NIR graph (``bitspike export --nir``).

The manifest becomes a :class:`~bitspike.host.nir_io.FloatNetwork` whose float32 parameters are the
manifest's integers, so that a float run of the graph computes the integer network's values:

- a synaptic layer is its neuron (``IF`` when it does not leak, else ``LIF`` with β = b / 2^p and the
  threshold θ), then its synapse (``Affine`` or ``Conv2d``) with the requantizer folded in:
  ``x = M·(W·s + b) + B`` is the affine map with weights ``M·W`` and bias ``M·b + B``;
- the first layer's neuron may be the pixel pass-through (the paper's neuron with θ = 1, T = 1 and
  B_s ≥ ``input.bits``, as ``bitspike import`` writes it): it has no node, the graph reads the pixels;
- ``flatten`` is ``Flatten``, ``avgpool`` (the window sum) is ``SumPool2d``;
- a last layer with identity weights and no bias after a stepped neuron (the import's readout) is left out:
  the graph then ends in that neuron, whose spike counts are the logits.

The graph reads the manifest's integer input (pixels 0 … 255, not pixels / 255). It is refused, with the
layer and the reason, when NIR cannot express it: multi-bit or squeezed neurons (NIR's neurons are binary
and see a new current every step), a requantizer that shifts (it rounds) or whose clamp can bind, values
float32 cannot hold exactly (|·| ≥ 2^24), max pooling, residual adds, grouped convolutions, padded pooling,
and neurons that reset differently in one network. NIR's neurons reset to zero; a subtract-reset network is
written only when asked (``allow_subtract``), marked for :func:`bitspike.host.nir_io.read_nir`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from bitspike.analysis import analyse
from bitspike.host.nir_io import SNNTORCH_DT, Affine, Conv2d, Flatten, FloatNetwork, Neuron, NirError, Pool2d, to_nir
from bitspike.manifest import Manifest

__all__ = ["FLOAT32_EXACT", "to_float_network", "export_nir"]

#: every integer of magnitude below this is a float32 exactly
FLOAT32_EXACT = 2**24


def _refuse(index: int, layer, why: str) -> NirError:
    return NirError(f"NIR cannot express this layer: {why}", node=f"layer {index} '{layer.name}' ({layer.op})")


def _is_passthrough(layer, manifest: Manifest) -> bool:
    return (layer.stepped is None and layer.k == 0 and layer.timesteps == 1 and layer.s_bits >= manifest.input.bits
            and layer.inputs == ("input",))  # fmt: skip


def _float32(index: int, layer, what: str, values: np.ndarray) -> np.ndarray:
    if values.size and int(np.abs(values).max()) >= FLOAT32_EXACT:
        raise _refuse(index, layer, f"its {what} reach {int(np.abs(values).max())}; float32 holds integers exactly "
                                    "only below 2**24")
    return values.astype(np.float32)


class _State:
    """What the writers gather while walking the chain."""

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.ranges = analyse(manifest)
        self.resets: set[str] = set()
        self.steps: set[int] = set()


def _write_flatten(index: int, layer, st: _State) -> list:
    return [Flatten(layer.name)]


def _write_avgpool(index: int, layer, st: _State) -> list:
    if tuple(layer.padding) != (0, 0):
        raise _refuse(index, layer, "padded pooling has no NIR form bitspike reads")
    return [Pool2d(layer.name, "sum", tuple(layer.kernel), tuple(layer.stride))]  # bitspike's avgpool is the sum


def _neuron_node(index: int, layer, st: _State) -> list:
    if index == 0 and _is_passthrough(layer, st.manifest):
        return []  # the graph reads the pixels
    n = layer.neuron
    if n.mode != "stepped" or n.fire != "gt":
        raise _refuse(index, layer, f"its neuron is mode '{n.mode}', fire '{n.fire}' with {layer.s_bits}-bit spikes; "
                                    "NIR's IF and LIF are stepped neurons with binary spikes (mode 'stepped', fire 'gt')")
    st.resets.add(n.reset)
    st.steps.add(layer.timesteps)
    shape = tuple(layer.in_shape)
    return [Neuron(f"{layer.name}_neuron", "IF" if n.is_if else "LIF", np.full(shape, n.beta, np.float32),
                   np.full(shape, float(n.threshold), np.float32))]


def _affine_params(index: int, layer, st: _State) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of the synapse with the requantizer folded in, as exact float32."""
    w = layer.weight.astype(np.int64)
    b = layer.bias.astype(np.int64)
    rq = layer.requant
    if rq is not None:
        if rq.shift != 0:
            raise _refuse(index, layer, f"its requantizer shifts right by {rq.shift} (rounding), which no NIR node "
                                        "expresses exactly; only shift 0 (an affine map) is written")
        r = st.ranges[layer.name]
        if r.product is not None and not (rq.lo <= r.product.lo and r.product.hi <= rq.hi):
            raise _refuse(index, layer, f"its requantizer's clamp [{rq.lo}, {rq.hi}] can bind (its values reach "
                                        f"{r.product}); NIR has no clamp")
        m = rq.multiplier.astype(np.int64)
        w = w * m.reshape((-1,) + (1,) * (w.ndim - 1))
        b = b * m + rq.bias.astype(np.int64)
    return (_float32(index, layer, "weights (with the requantizer's multiplier)", w),
            _float32(index, layer, "biases (with the requantizer's)", b))


def _write_linear(index: int, layer, st: _State) -> list:
    nodes = _neuron_node(index, layer, st)
    w = layer.weight
    if (nodes and layer.requant is None and index == len(st.manifest.layers) - 1 and w.shape[0] == w.shape[1]
            and np.array_equal(w, np.eye(w.shape[0], dtype=w.dtype)) and not layer.bias.any()):
        return nodes  # the readout of the output neuron's spike counts: the graph ends in that neuron
    w32, b32 = _affine_params(index, layer, st)
    return nodes + [Affine(layer.name, w32, b32, True)]


def _write_conv2d(index: int, layer, st: _State) -> list:
    if layer.groups != 1:
        raise _refuse(index, layer, "grouped convolution is not written (bitspike's NIR reader takes one group)")
    nodes = _neuron_node(index, layer, st)
    w32, b32 = _affine_params(index, layer, st)
    return nodes + [Conv2d(layer.name, w32, b32, tuple(layer.stride), tuple(layer.padding))]


#: op → its NIR writer (one handler per op; the ops not listed have no NIR form)
_WRITERS = {"flatten": _write_flatten, "avgpool": _write_avgpool, "linear": _write_linear, "conv2d": _write_conv2d}


def to_float_network(manifest: Manifest) -> tuple[FloatNetwork, int]:
    """The manifest as a float network whose float32 values are the integer network's (see the module docstring).

    Returns
    -------
    net, timesteps
        The network and the T it is to be run for (NIR graphs do not record T).

    Raises
    ------
    NirError
        Naming the layer and why NIR cannot express it.
    """
    st = _State(manifest)
    nodes: list = []
    prev = "input"
    for index, layer in enumerate(manifest.layers):
        if layer.inputs != (prev,):
            raise _refuse(index, layer, f"it reads {list(layer.inputs)}; NIR graphs bitspike writes are chains "
                                        "(each layer reads the one before)")
        writer = _WRITERS.get(layer.op)
        if writer is None:
            raise _refuse(index, layer, f"NIR has no node for bitspike's '{layer.op}' "
                                        f"(written: {', '.join(sorted(_WRITERS))})")
        nodes += writer(index, layer, st)
        prev = layer.name
    if len(st.resets) > 1:
        raise NirError(f"the network's neurons reset in different ways ({sorted(st.resets)}); a NIR graph bitspike "
                       "writes has one reset rule")
    if len(st.steps) > 1:
        raise NirError(f"the network's neurons run for different numbers of steps ({sorted(st.steps)})")
    timesteps = st.steps.pop() if st.steps else 1
    net = FloatNetwork(input_shape=tuple(manifest.input.shape), nodes=tuple(nodes),
                       reset=st.resets.pop() if st.resets else "zero", dt=SNNTORCH_DT)
    return net, timesteps


def export_nir(manifest: Manifest, path: str | os.PathLike, *, target: str = "nir",
               allow_subtract: bool = False) -> dict[str, Any]:  # fmt: skip
    """Write the manifest as a NIR graph at ``path`` (:func:`to_float_network`, then ``nir_io.to_nir``).

    Returns a summary: the path, the T to run the graph for, its reset rule and its node types.
    """
    import nir

    net, timesteps = to_float_network(manifest)
    if net.reset == "subtract" and not allow_subtract:
        raise NirError("the network resets by subtraction, which NIR cannot express (NIR's IF and LIF reset to "
                       "v_reset, and snnTorch's NIR importer resets to zero); write it anyway with --allow-subtract "
                       "(allow_subtract=True): its neurons are then marked for bitspike's reader")
    graph = to_nir(net, target=target, allow_subtract=allow_subtract)
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise NirError(f"{path}: the folder {path.parent} does not exist")
    nir.write(path, graph)
    return {"output": str(path), "timesteps": timesteps, "reset": net.reset, "target": target,
            "nodes": [f"{k}:{type(v).__name__}" for k, v in graph.nodes.items()]}
