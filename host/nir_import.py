"""NIR in: a float time-stepped SNN (a :class:`~bitspike.host.nir_io.FloatNetwork`) becomes a manifest.

Post-training quantization onto the time-stepped neuron of docs/SEMANTICS.md §4.6 (the importer behind
``bitspike import``), and the comparison of the integer network with the float one.

How the chain maps onto manifest layers
---------------------------------------
A manifest's synaptic layer is a neuron *followed* by a synapse; a NIR chain is synapses followed by
neurons. So each NIR synapse (``Affine``/``Linear``, ``Conv2d``) becomes one manifest layer whose neuron is
the NIR neuron *before* it:

- the first synapse reads the pixels. Its neuron is the paper's neuron with θ = 1, T = 1 and
  B_s = ``input.bits``, which passes every pixel on unchanged (s_0 = x), so its accumulator is W·x + b,
  the current the float network computes at every step;
- every later synapse gets the NIR neuron before it, mode ``stepped``, fire ``gt`` (binary spikes), the
  network's reset rule, leak β = b / 2^16 (IF: no leak) and an integer threshold;
- a network that ends in a neuron layer (snnTorch's ``Leaky`` output) gets one more layer whose weights
  are the identity and whose neuron is that output layer: its logits are the output spike counts.

Between a synapse and its neuron, ``SumPool2d``/``AvgPool2d`` and ``Flatten`` act on currents and become
the manifest's ``avgpool`` (window sum; 1/n goes into the threshold's unit) and ``flatten``. Between a neuron
and the next ``Affine`` they act on spikes; both are linear maps, so they are folded into that ``Affine``'s
weights (a ``Flatten`` moves before the neuron, with which it commutes). Pooling spikes before a ``Conv2d``
is refused.

Quantization
------------
Weights: ``S_w = 1`` when they are integers that fit ``B_w`` already (nothing is rounded); else one scale per
output channel, ``S_w[o] = max_i |W[o, i]| / (2^(B_w−1) − 1)`` (at least 1/256 of the largest, so a channel of
near-zero weights keeps a coarse scale), and one scale for all channels of the last synapse, whose
accumulators are the logits. ``W_int = round(W / S_w)``; channel o's accumulator has the unit
``S_w[o]·S_in`` (``S_in``: the input scale for pixels, 1 for binary spikes).

Currents: the requantizer has a clamp that cannot bind: it multiplies channel o's accumulator by
``M[o] = round(2^j · S_w[o] / max S_w)``, adds the bias and shifts right by r (rounding), bringing every
channel to one unit, and the next neuron's threshold is ``θ_int = round(θ / unit)``. j is the smallest that
resolves θ to at least 2^12 units and every ``M[o]`` to at least 2^8 (so both round by at most 1/8192 and
1/512); j − r is the smallest that resolves θ alone, so the currents and membranes carry no bits only the
multipliers needed; j = r = 0 when the scales are all 1, θ and the bias are integer multiples of the unit and
the neuron does not leak (the exact case). With
β = 1, integer weights, biases, thresholds and inputs, nothing rounds, and the integer network computes
exactly what snnTorch computes (the proof is in :mod:`bitspike.host.stepped`). No calibration data is
needed for any of this; the data given to :func:`compare` measures the result.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from bitspike.errors import BitspikeError
from bitspike.host.nir_io import Affine, Conv2d, Flatten, FloatNetwork, Neuron, NirError, Pool2d
from bitspike.manifest import (
    CURRENT_LIMIT,
    MULT_LIMIT,
    AvgPoolLayer,
    Conv2dLayer,
    FlattenLayer,
    InputSpec,
    LinearLayer,
    Manifest,
    Requant,
    weight_limit,
)
from bitspike.ops.neuron import THRESHOLD_LIMIT, SteppedNeuron

__all__ = ["LEAK_SHIFT", "THRESHOLD_UNITS", "parse_bits", "import_network", "import_file", "compare", "ImportedLayer"]

#: p of the leak multiplier b / 2^p of an imported LIF neuron
LEAK_SHIFT = 16
#: an inexact threshold is resolved to at least this many units of its current
THRESHOLD_UNITS = 2**12
#: the readout layer's weights are 0 or 1: two bits (one-bit weights are ±1)
READOUT_W_BITS = 2
#: per-channel weight scales span at most this factor (a channel of near-zero weights keeps a coarse scale)
CHANNEL_RANGE = 256
#: per-channel scales: every requantizer multiplier resolves its channel's scale to at least this many units
MULT_UNITS = 2**8


@dataclass(frozen=True)
class ImportedLayer:
    """What the importer did with one NIR synapse (reported by ``bitspike import``)."""

    name: str
    node: str
    w_bits: int
    weight_scale: float  # the largest channel's S_w
    exact_weights: bool
    per_channel: bool = False  # channels have their own S_w (the requantizer's multipliers differ)
    neuron_node: str | None = None  # the NIR neuron the synapse feeds (None: the last layer)
    threshold: int | None = None  # its θ_int
    leak: tuple[int, int] | None = None
    current_shift: int = 0  # j: the requantizer multiplies by 2^j

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "node": self.node, "w_bits": self.w_bits, "weight_scale": self.weight_scale,
                "per_channel": self.per_channel, "exact_weights": self.exact_weights, "neuron_node": self.neuron_node, "threshold": self.threshold,
                "leak": None if self.leak is None else list(self.leak), "current_shift": self.current_shift}


def parse_bits(text: str | None, synapses: list[str], default: int = 8) -> dict[str, int]:
    """Weight bits per synapse node from ``"W"``, ``"W/S"``, or ``"NODE=W[/S],…"`` (a global entry may lead).

    Spikes between imported layers are binary, so S can only be 1 (the first layer reads the pixels at the
    input's width). Raises :class:`BitspikeError` naming the entry.
    """
    out = {name: default for name in synapses}
    if text is None:
        return out
    named: dict[str, int] = {}
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        node, _, spec = item.rpartition("=")
        w_s = spec.split("/")
        if len(w_s) > 2 or not all(re.fullmatch(r"[0-9]+", v) for v in w_s):
            raise BitspikeError(f"--bits entry {item!r}: expected W, W/S or NODE=W[/S] with integers (e.g. 8, 4/1, 1=4)")
        w = int(w_s[0])
        if not 2 <= w <= 16:
            raise BitspikeError(f"--bits entry {item!r}: weight bits must be 2 … 16 (one-bit weights are ±1, which a "
                                "float network's weights do not round to)")
        if len(w_s) == 2 and int(w_s[1]) != 1:
            raise BitspikeError(f"--bits entry {item!r}: spikes of NIR's IF/LIF neurons are binary, so S must be 1")
        if not node:
            out = {name: w for name in synapses}
        elif node not in out:
            raise BitspikeError(f"--bits entry {item!r}: no synapse node {node!r}; the graph's synapses are {synapses}")
        else:
            named[node] = w
    return out | named


def _layer_name(node: str, used: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", node)[:60] or "n"
    if not re.match(r"[A-Za-z_]", name) or name.lower() == "input":
        name = f"n{name}"
    base, i = name, 1
    while name.lower() in used:
        i += 1
        name = f"{base}_{i}"
    used.add(name.lower())
    return name


def _uniform(node: Neuron, values: np.ndarray, fld: str) -> float:
    flat = np.asarray(values, np.float64).reshape(-1)
    if flat.size and not (flat == flat[0]).all():
        raise NirError(f"bitspike's neurons share one value per layer, but this layer's {fld} ranges over "
                       f"{flat.min()} … {flat.max()}", node=f"node {node.name!r} ({node.kind})", field=fld)
    return float(flat[0])


def _leak(node: Neuron) -> tuple[int, int]:
    beta = _uniform(node, node.beta, "tau (beta)")
    if beta == 1.0:
        return 1, 0
    b = int(round(beta * (1 << LEAK_SHIFT)))
    return b, LEAK_SHIFT


def _is_int(a: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(a)) and np.all(a == np.round(a)))


def _spike_fold(ops: list, shape: tuple[int, ...]) -> np.ndarray | None:
    """The matrix [numel(shape), F] of the pools and flattens applied to spikes before an Affine (None: identity)."""
    if not any(isinstance(op, Pool2d) for op in ops):
        return None
    n = math.prod(shape)
    h = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
    for op in ops:
        if isinstance(op, Pool2d):
            h = torch.nn.functional.avg_pool2d(h, op.kernel, op.stride, 0, False, True,
                                               1 if op.kind == "sum" else None)  # fmt: skip
    return h.reshape(n, -1).numpy()


def import_network(
    net: FloatNetwork,
    *,
    timesteps: int = 8,
    bits: Mapping[str, int] | None = None,
    input_scale: float = 1.0 / 255.0,
    input_bits: int = 8,
    name: str = "nir-import",
    classes: list[str] | None = None,
) -> tuple[Manifest, list[ImportedLayer]]:
    """Quantize a float time-stepped network into a manifest (see the module docstring for the mapping).

    Parameters
    ----------
    net
        The network, from :func:`bitspike.host.nir_io.read_nir` (which settled the reset rule).
    timesteps
        T: the float network is run for T steps with the image at every step.
    bits
        Weight bits per synapse node name (:func:`parse_bits`); missing nodes get 8.
    input_scale
        The real value of one input unit: the float network sees ``pixel · input_scale`` (1/255 for snnTorch
        networks trained on pixels / 255; 1 for networks fed the integers themselves).
    input_bits
        Bits of the integer input (8 for images).

    Raises
    ------
    NirError
        A node or parameter the mapping cannot express, naming the node and the field.
    """
    if not (isinstance(timesteps, int) and 1 <= timesteps <= 64):
        raise BitspikeError(f"timesteps must be 1 … 64, not {timesteps!r}")
    if not (math.isfinite(input_scale) and input_scale > 0):
        raise BitspikeError(f"the input scale must be a positive number, not {input_scale!r}")
    bits = dict(bits or {})
    nodes = list(net.nodes)
    shape = tuple(net.input_shape)
    # a Flatten of the input itself: the manifest's input is the flat vector
    while nodes and isinstance(nodes[0], Flatten):
        shape = (math.prod(shape),)
        nodes.pop(0)
    if not nodes or not isinstance(nodes[0], (Affine, Conv2d)):
        what = "nothing" if not nodes else f"node {nodes[0].name!r} ({type(nodes[0]).__name__})"
        raise NirError(f"the graph must start with a synapse (Affine, Linear or Conv2d) after an optional Flatten, "
                       f"not {what}")

    used: set[str] = {"input"}
    layers: list = []
    report: list[ImportedLayer] = []
    prev = "input"  # the manifest layer whose output the next layer reads
    cur_shape = shape  # shape of the current (manifest values) flowing at `prev`
    neuron: Neuron | None = None  # the NIR neuron in front of the next synapse (None: the pixel pass-through)
    s_unit = input_scale  # real value of one unit of what the next synapse multiplies
    spike_ops: list = []  # pools/flattens on spikes since the last neuron
    spike_shape = cur_shape
    thresholds: dict[str, int] = {}  # θ_int of each NIR neuron, by node name
    i = 0
    while i < len(nodes):
        syn = nodes[i]
        where = f"node {syn.name!r} ({type(syn).__name__})"
        if not isinstance(syn, (Affine, Conv2d)):
            raise NirError("expected a synapse (Affine, Linear or Conv2d) here", node=where)
        # everything up to the next neuron: current ops
        j = i + 1
        cur_ops = []
        while j < len(nodes) and isinstance(nodes[j], (Pool2d, Flatten)):
            cur_ops.append(nodes[j])
            j += 1
        nxt = nodes[j] if j < len(nodes) else None
        if nxt is not None and not isinstance(nxt, Neuron):
            raise NirError(f"follows synapse {syn.name!r} without a neuron in between; bitspike needs a neuron "
                           "(IF or LIF) between two synapses", node=f"node {nxt.name!r} ({type(nxt).__name__})")
        last = nxt is None
        if last and cur_ops:
            raise NirError("the network must end in a synapse or a neuron layer, not in pooling or flatten",
                           node=f"node {cur_ops[-1].name!r} ({type(cur_ops[-1]).__name__})")

        # the synapse's float weights over what reaches it (spike-side pools folded in)
        w = syn.weight.astype(np.float64)
        b = syn.bias.astype(np.float64)
        if isinstance(syn, Affine):
            fold = _spike_fold(spike_ops, spike_shape)
            if fold is not None:
                w = w @ fold.T
            if len(cur_shape) != 1:  # a flatten on spikes, moved in front of the neuron (they commute)
                fl = _layer_name(f"{syn.name}_flatten", used)
                layers.append(FlattenLayer(name=fl, inputs=(prev,), in_shape=cur_shape, out_shape=(math.prod(cur_shape),)))
                prev, cur_shape = fl, (math.prod(cur_shape),)
            if w.shape[1] != cur_shape[0]:
                raise NirError(f"takes {w.shape[1]} inputs but receives {cur_shape[0]}", node=where, field="weight")
        else:
            if any(isinstance(op, Pool2d) for op in spike_ops):
                raise NirError("pooling of spikes before a Conv2d is not supported (pool before the neuron instead)",
                               node=where)
            if len(cur_shape) != 3:
                raise NirError(f"a Conv2d needs a [C, H, W] input, receives {list(cur_shape)}", node=where)
        w_bits = bits.get(syn.name, 8)
        lim = weight_limit(w_bits)
        rows = np.abs(w).reshape(w.shape[0], -1).max(axis=1) if w.size else np.zeros(w.shape[0])
        wmax = float(rows.max(initial=0.0))
        exact_w = _is_int(w) and wmax <= lim
        if exact_w or wmax == 0.0:
            s_w = np.ones(w.shape[0])
        elif last:  # the logits are the accumulators themselves: one scale for all of them
            s_w = np.full(w.shape[0], wmax / lim)
        else:  # per output channel; the requantizer's multipliers bring the channels to one unit
            s_w = np.maximum(rows, wmax / CHANNEL_RANGE) / lim
        w_int = np.rint(w / s_w.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.int64)
        s_ref = float(s_w.max())
        acc_unit = s_ref * s_unit  # the unit of channel o's accumulator is s_w[o]·s_unit
        lname = _layer_name(syn.name, used)

        # the neuron in front of this synapse
        if neuron is None:
            fields: dict[str, Any] = dict(s_bits=input_bits, timesteps=1, k=0)  # the pixel pass-through
            s_max = 2**input_bits - 1
        else:
            fields = dict(s_bits=1, timesteps=timesteps, stepped=_stepped(neuron, thresholds[neuron.name], net))
            s_max = 1
        common = dict(name=lname, inputs=(prev,), in_shape=cur_shape, w_bits=w_bits, weight=w_int, **fields)
        if isinstance(syn, Conv2d):
            common.update(kernel=tuple(int(v) for v in w.shape[2:]), stride=syn.stride, padding=syn.padding)
            cls = Conv2dLayer
            out_shape = syn.out_shape(cur_shape)
        else:
            cls = LinearLayer
            out_shape = (int(w.shape[0]),)
        info = dict(name=lname, node=syn.name, w_bits=w_bits, weight_scale=s_ref, exact_weights=exact_w,
                    per_channel=bool((s_w != s_ref).any()))
        if last:
            bias_int = np.rint(b / acc_unit).astype(np.int64)
            layers.append(cls(**common, out_shape=out_shape, bias=bias_int, requant=None))
            report.append(ImportedLayer(**info))
            prev = lname
            break

        # the requantizer: acc·2^j + bias, then the current ops, then neuron `nxt` with an integer threshold
        n_pool = 1
        for op in cur_ops:
            if isinstance(op, Pool2d) and op.kind == "avg":
                n_pool *= op.kernel[0] * op.kernel[1]
        gain = 1.0 if nxt.gain is None else _uniform(nxt, nxt.gain, "r (input gain)")
        theta = _uniform(nxt, nxt.threshold, "v_threshold") / gain
        leak = _leak(nxt)
        unit0 = acc_unit / n_pool  # real current per integer unit at the neuron, before the 2^j
        ratio = s_w / s_ref  # channel o's accumulator is multiplied by 2^j·ratio[o]
        uniform = bool((ratio == 1.0).all())
        exact = uniform and leak == (1, 0) and float(theta / unit0).is_integer() and _is_int(b / acc_unit)
        shift = 0
        if not exact:
            while shift < 40 and (theta / unit0 * 2**shift < THRESHOLD_UNITS
                                  or (not uniform and 2**shift * float(ratio.min()) < MULT_UNITS)):
                shift += 1
        acc_rows = np.abs(w_int).reshape(w_int.shape[0], -1).sum(axis=1) * s_max

        def constants(j: int) -> tuple[np.ndarray, np.ndarray, int]:
            mult = np.rint(ratio * 2**j).astype(np.int64)
            rq_b = np.rint(b / acc_unit * 2**j).astype(np.int64)
            return mult, rq_b, int((acc_rows.astype(object) * mult.astype(object)).max()) + int(np.abs(rq_b).max(initial=0))

        mult, rq_bias, bound = constants(shift)
        while shift > 0 and bound > CURRENT_LIMIT // 2**10:
            shift -= 1  # keep every current, pooled sums included, far inside the clamp limit
            mult, rq_bias, bound = constants(shift)
        if bound > CURRENT_LIMIT or int(mult.max()) >= MULT_LIMIT:
            raise NirError(f"its currents could reach {bound}, beyond bitspike's 2**40", node=where, field="weight")
        # the multipliers may need more resolution (MULT_UNITS) than the threshold does (THRESHOLD_UNITS): the
        # requantizer's right shift drops the bits only the multipliers needed, so the currents and the
        # membranes are no wider than the threshold's resolution asks (e.g. 22 bits, not 32, for a conv
        # layer's per-channel scales)
        theta_shift = 0
        while theta_shift < shift and theta / unit0 * 2**theta_shift < THRESHOLD_UNITS:
            theta_shift += 1
        down = shift - theta_shift
        theta_int = int(round(theta / unit0 * 2**theta_shift))
        if not 1 <= theta_int < THRESHOLD_LIMIT:
            raise NirError(f"threshold {theta} is {theta_int} current units; expected 1 … 2**40 − 1 "
                           "(a threshold far below the weights' resolution?)", node=f"node {nxt.name!r} ({nxt.kind})",
                           field="v_threshold")  # fmt: skip
        n_out = out_shape[0]
        layers.append(cls(**common, out_shape=out_shape, bias=np.zeros(n_out, np.int64),
                          requant=Requant(mult, rq_bias, down, -(bound >> down) - 1, (bound >> down) + 1)))
        report.append(ImportedLayer(**info, neuron_node=nxt.name, threshold=theta_int, leak=leak,
                                    current_shift=theta_shift))
        prev, cur_shape = lname, out_shape
        for op in cur_ops:
            oname = _layer_name(op.name, used)
            if isinstance(op, Pool2d):
                out = op.out_shape(cur_shape)
                layers.append(AvgPoolLayer(name=oname, inputs=(prev,), in_shape=cur_shape, out_shape=out,
                                           kernel=op.kernel, stride=op.stride))
            else:
                out = (math.prod(cur_shape),)
                layers.append(FlattenLayer(name=oname, inputs=(prev,), in_shape=cur_shape, out_shape=out))
            prev, cur_shape = oname, out
        thresholds[nxt.name] = theta_int
        neuron, s_unit = nxt, 1.0
        # the spike-side ops up to the next synapse
        i = j + 1
        spike_ops, spike_shape = [], cur_shape
        while i < len(nodes) and isinstance(nodes[i], (Pool2d, Flatten)):
            spike_ops.append(nodes[i])
            i += 1
        if i == len(nodes):  # ends in a neuron layer: the readout counts its spikes
            if spike_ops:
                raise NirError("the network must end in a synapse or a neuron layer, not in pooling or flatten",
                               node=f"node {spike_ops[-1].name!r} ({type(spike_ops[-1]).__name__})")
            if len(cur_shape) != 1:
                fl = _layer_name(f"{nxt.name}_flatten", used)
                layers.append(FlattenLayer(name=fl, inputs=(prev,), in_shape=cur_shape, out_shape=(math.prod(cur_shape),)))
                prev, cur_shape = fl, (math.prod(cur_shape),)
            n = cur_shape[0]
            rname = _layer_name("readout", used)
            layers.append(LinearLayer(name=rname, inputs=(prev,), in_shape=cur_shape, out_shape=cur_shape,
                                      w_bits=READOUT_W_BITS, s_bits=1, timesteps=timesteps,
                                      stepped=_stepped(nxt, theta_int, net), weight=np.eye(n, dtype=np.int64),
                                      bias=np.zeros(n, np.int64), requant=None))
            report.append(ImportedLayer(name=rname, node=nxt.name, w_bits=READOUT_W_BITS, weight_scale=1.0,
                                        exact_weights=True))  # fmt: skip
            break
    info = {"source": "nir", "reset": net.reset, "timesteps": timesteps, "input_scale": input_scale,
            "assumptions": list(net.assumptions), "layers": [r.to_json() for r in report]}
    manifest = Manifest.build(name, InputSpec(shape, input_bits, float(input_scale)), layers, classes, info)
    return manifest, report


def _stepped(node: Neuron, theta_int: int, net: FloatNetwork) -> SteppedNeuron:
    b, p = _leak(node)
    return SteppedNeuron(threshold=theta_int, mode="stepped", fire="gt", reset=net.reset, leak_mul=b, leak_shift=p)


def compare(
    net: FloatNetwork,
    manifest: Manifest,
    images: np.ndarray,
    labels: np.ndarray | None,
    *,
    timesteps: int,
    input_scale: float,
    batch: int = 512,
) -> dict[str, Any]:
    """Run the float network and the integer golden model on the same images and compare their outputs.

    The float network sees ``images · input_scale`` at every one of ``timesteps`` steps; its scores are its
    last node's outputs summed over the steps (output spike counts when it ends in a neuron layer). Both
    classes are the argmax with ties to the lowest index.

    Returns
    -------
    dict
        ``samples``, ``class_agreement`` (fraction of samples whose classes agree), ``outputs_equal`` (fraction
        whose integer logits equal the float scores exactly; meaningful for spike counts), and with labels
        ``float_accuracy`` and ``int_accuracy``.
    """
    from bitspike.host.data import images_for_manifest
    from bitspike.host.golden import GoldenModel, argmax_lowest

    images = np.asarray(images)
    if images.ndim < 2 or math.prod(images.shape[1:]) != math.prod(net.input_shape):
        raise BitspikeError(f"images of shape {list(images.shape[1:])} do not fit the network's input "
                            f"{list(net.input_shape)}")
    golden = GoldenModel(manifest)
    ints = images_for_manifest(images, manifest)
    f_scores, i_logits = [], []
    for start in range(0, len(images), batch):
        part = images[start : start + batch].reshape(-1, *net.input_shape)
        x = torch.as_tensor(part.astype(np.float32)) * np.float32(input_scale)
        f_scores.append(net.counts(x, timesteps))
        i_logits.append(golden.run(ints[start : start + batch]).logits)
    fs = torch.cat(f_scores).reshape(len(images), -1)
    il = torch.cat(i_logits)
    fc, ic = argmax_lowest(fs), argmax_lowest(il)
    out: dict[str, Any] = {
        "samples": int(len(images)),
        "class_agreement": float((fc == ic).double().mean()),
        "outputs_equal": float((fs.to(torch.float64) == il.to(torch.float64)).all(dim=1).double().mean()),
        "classes_agree": int((fc == ic).sum()),
        "outputs_equal_samples": int((fs.to(torch.float64) == il.to(torch.float64)).all(dim=1).sum()),
    }
    if labels is not None:
        y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        out["float_accuracy"] = float((fc == y).double().mean())
        out["int_accuracy"] = float((ic == y).double().mean())
    return out


def _load_inputs(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise BitspikeError(f"--inputs {p}: no such file")
    try:
        data = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BitspikeError(f"--inputs {p}: not a .npy or .npz file ({e})") from None
    if isinstance(data, np.ndarray):
        images, labels = data, None
    else:
        if "images" not in data.files:
            raise BitspikeError(f"--inputs {p}: an .npz needs an array 'images' (and optionally 'labels'); "
                                f"it has {data.files}")
        images = data["images"]
        labels = data["labels"] if "labels" in data.files else None
    if not np.issubdtype(images.dtype, np.integer) or images.ndim < 2:
        raise BitspikeError(f"--inputs {p}: 'images' must be integer pixels [N, ...], not {images.dtype} "
                            f"{list(images.shape)}")
    if labels is not None and (labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer)):
        raise BitspikeError(f"--inputs {p}: 'labels' must be {len(images)} integers, not {labels.dtype} "
                            f"{list(labels.shape)}")
    return images, labels


def import_file(
    model: str,
    output: str,
    *,
    source: str | None = None,
    reset: str | None = None,
    bits: str | None = None,
    timesteps: int = 8,
    input_scale: float = 1.0 / 255.0,
    calib: str | None = None,
    inputs: str | None = None,
    samples: int | None = None,
    name: str = "nir-import",
) -> dict[str, Any]:
    """``bitspike import``: read ``model`` (NIR), write the manifest to ``output``, compare on data if given.

    Returns the summary the command prints (and writes with ``--json``).
    """
    from bitspike.host.data import load_dataset
    from bitspike.host.nir_io import read_nir

    net = read_nir(model, reset=reset, source=source)
    synapses = [n.name for n in net.nodes if isinstance(n, (Affine, Conv2d))]
    data = None
    if calib is not None:
        ds = load_dataset(calib, "test")
        data = (ds.images, ds.labels, f"{calib} (test split)", ds.classes)
    elif inputs is not None:
        images, labels = _load_inputs(inputs)
        data = (images, labels, str(inputs), None)
    input_bits = 8
    if data is not None:
        if data[0].ndim < 2 or math.prod(data[0].shape[1:]) != math.prod(net.input_shape):
            raise BitspikeError(f"{data[2]}: images of shape {list(data[0].shape[1:])} do not fit the network's "
                                f"input {list(net.input_shape)}")
        top = int(data[0].max(initial=0))
        if int(data[0].min(initial=0)) < 0 or top > 2**16 - 1:
            raise BitspikeError(f"the images hold values {int(data[0].min())} … {top}; expected pixels 0 … 65535")
        input_bits = max(8, top.bit_length())
    manifest, report = import_network(net, timesteps=timesteps, bits=parse_bits(bits, synapses),
                                      input_scale=input_scale, input_bits=input_bits, name=name,
                                      classes=None if data is None else data[3])
    path = manifest.save(output)
    summary: dict[str, Any] = {
        "output": str(path), "digest": manifest.digest(), "manifest_layers": len(manifest.layers),
        "timesteps": timesteps, "reset": net.reset, "input_scale": input_scale, "assumptions": list(net.assumptions),
        "layers": [r.to_json() for r in report],
    }
    if data is not None:
        images, labels, what, _ = data
        if samples is not None:
            images, labels = images[:samples], None if labels is None else labels[:samples]
        c = compare(net, manifest, images, labels, timesteps=timesteps, input_scale=input_scale)
        summary["comparison"] = {"data": what, **c}
    return summary
