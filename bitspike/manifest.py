"""The manifest: the integer contract between a trained network and its hardware.

A manifest is a safetensors file. Its integer tensors are the weights, biases
and requantization constants; its metadata entry ``"bitspike"`` is a JSON
document that describes the network layer by layer. Nothing is pickled.

Format (version 2; version 1 is version 2 without ``neuron`` objects)
----------------------------------------------------------------------
Metadata ``bitspike`` (JSON object)::

    {
      "format": "bitspike-manifest",
      "version": 1,                            # 2 when a layer has a "neuron" object
      "name": "digits-mlp",
      "input": {"shape": [64], "bits": 8, "scale": 0.00392156862745098},
      "classes": ["0", "1", ...],              # optional labels, one per logit
      "info": {...},                           # free-form provenance (training run, accuracies)
      "layers": [ {layer}, ... ]               # in topological order; the last one gives the logits
    }

Every layer has ``name`` (unique; 1 to 64 ASCII letters, digits or ``_``,
not starting with a digit), ``op``, ``inputs`` (required: names of earlier
layers, or ``"input"`` for the network input), ``in_shape`` and
``out_shape`` (without the batch dimension). The ops and their extra fields:

``linear`` / ``conv2d`` (synaptic layers; docs/SEMANTICS.md §4)
    ``w_bits`` (B_w), ``s_bits`` (B_s of the neuron at the layer's input),
    ``timesteps`` (T), ``k`` (threshold θ = 2**k in current units),
    ``requant`` (``{"shift": SH, "lo": lo, "hi": hi}``, or ``null`` for the
    last layer, whose accumulators are the logits). Version 2: instead of
    ``k``, an optional ``neuron`` object ``{"mode", "fire", "reset",
    "leak": [b, p], "threshold"}``, the time-stepped IF/LIF neuron
    (docs/SEMANTICS.md §4.6). ``conv2d`` adds
    ``kernel``, ``stride``, ``padding`` (each ``[h, w]``).
    Tensors ``NAME.weight`` (``[out, in]`` or ``[out, in, kh, kw]``),
    ``NAME.bias`` (``[out]``, accumulator units), and, when ``requant`` is not
    null, ``NAME.rq_mult`` and ``NAME.rq_bias`` (``[out]``).
``maxpool`` / ``avgpool``
    ``kernel``, ``stride``, optional ``padding`` (``[h, w]``, smaller than the
    kernel; padding adds 0 to a sum and never wins a max). ``avgpool`` outputs the
    *window sum*: the 1/n is folded into the consumer's unit, so the hardware
    never divides.
``flatten``
    ``[C, H, W]`` → ``[C*H*W]`` in C-major order (as ``torch.flatten``).
``add``
    Residual add of two currents with per-channel multipliers:
    ``y = clamp((a*Ma + b*Mb + rnd) >> SH, lo, hi)``, ``rnd = 2**(SH-1)`` (0 when SH = 0).
    Fields ``shift``, ``lo``, ``hi``; tensors ``NAME.mult_a`` and ``NAME.mult_b`` (``[C]``).

Each op's fields, tensors and rules live in its module of :mod:`bitspike.ops`
(this module re-exports the layer classes). Loading validates everything and raises :class:`~bitspike.errors.ManifestError`
naming the layer and field: types and ranges, unknown fields, duplicate JSON
keys, tensor dtypes (signed integers, or unsigned ones narrower than 64 bits),
the graph rules, the size limits and the register widths. docs/SEMANTICS.md §5
to §7 list every rule.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .analysis import check_registers
from .errors import ManifestError
from .io import atomic_write_bytes
from .ops import load_builtin
from .ops.add import AddLayer
from .ops.base import (
    ACCEPTED_DTYPES,
    BIAS_LIMIT,
    CURRENT_LIMIT,
    INPUT_BITS_RANGE,
    K_RANGE,
    LAYER_KINDS,
    MAX_DIM,
    MAX_MAP_ELEMENTS,
    MULT_LIMIT,
    S_BITS_RANGE,
    SHIFT_RANGE,
    TIMESTEPS_RANGE,
    W_BITS_RANGE,
    Ctx,
    Layer,
    rounding_term,
    spike_max,
    weight_limit,
)
from .ops.conv2d import Conv2dLayer
from .ops.flatten import FlattenLayer
from .ops.linear import LinearLayer
from .ops.neuron import Requant, SynapticLayer
from .ops.pooling import AvgPoolLayer, MaxPoolLayer, PoolLayer

load_builtin()

__all__ = [
    "Manifest", "InputSpec", "Layer", "SynapticLayer", "LinearLayer", "Conv2dLayer", "PoolLayer", "MaxPoolLayer",
    "AvgPoolLayer", "FlattenLayer", "AddLayer", "Requant", "load", "loads", "from_parts", "weight_limit",
    "spike_max", "rounding_term", "LAYER_KINDS", "ACCEPTED_DTYPES", "BIAS_LIMIT", "CURRENT_LIMIT",
    "INPUT_BITS_RANGE", "K_RANGE", "MAX_DIM", "MAX_MAP_ELEMENTS", "MULT_LIMIT", "S_BITS_RANGE", "SHIFT_RANGE",
    "TIMESTEPS_RANGE", "W_BITS_RANGE",
]

#: the validation context (kept under its old name for callers of this module)
_Ctx = Ctx

FORMAT = "bitspike-manifest"
#: the newest version this bitspike reads and writes; a manifest is written with the oldest version that holds it
#: (version 1 unless a layer has a ``neuron`` object), so networks without the new fields keep their bytes
VERSION = 2
VERSIONS = (1, 2)
METADATA_KEY = "bitspike"

#: Size limits (docs/SEMANTICS.md §7). The generator holds a feature map's rows in line
#: buffers and writes every weight into the Verilog source, so its time and memory grow with
#: these; beyond them generation takes too long to be useful or does not fit a machine's memory.
MAX_TOTAL_ELEMENTS = 2**23  # elements of every feature map together
MAX_WEIGHT_BITS = 2**23  # Σ numel(W) · B_w over the network (8 Mbit: generation then takes minutes)

#: Layer names become file names and Verilog identifiers: ASCII letters, digits and '_', not
#: starting with a digit, at most 64 characters, unique ignoring case (case-insensitive file systems).
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
NAME_MAX = 64
#: a network name goes into reports only, but must still be printable on one line
NETWORK_NAME_MAX = 256

# ----------------------------------------------------------------------------------------------
# network input


@dataclass(frozen=True)
class InputSpec:
    """The network input: unsigned integers of ``bits`` bits, real value = int · ``scale``."""

    shape: tuple[int, ...]
    bits: int = 8
    scale: float = 1.0 / 255.0

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "bits": self.bits, "scale": self.scale}

    @classmethod
    def from_json(cls, meta: Any) -> "InputSpec":
        ctx = Ctx("input")
        if not isinstance(meta, Mapping):
            raise ctx.fail(None, f"expected an object, got {meta!r}")
        ctx.keys(meta, ("shape", "bits", "scale"), "the input")
        shape = ctx.shape(meta, "shape")
        if len(shape) not in (1, 3):
            raise ctx.fail("shape", f"expected [features] or [C, H, W], got {list(shape)}")
        bits = ctx.int_in(meta, "bits", *INPUT_BITS_RANGE)
        scale = ctx.get(meta, "scale")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (scale > 0 and math.isfinite(scale)):
            raise ctx.fail("scale", f"expected a positive finite number, got {scale!r}")
        return cls(shape=shape, bits=bits, scale=float(scale))


# ----------------------------------------------------------------------------------------------
# layers


# ----------------------------------------------------------------------------------------------
# the network


@dataclass(frozen=True, eq=False)
class Manifest:
    """One trained network as integers. Build with :func:`Manifest.build`, or load with :func:`load`."""

    name: str
    input: InputSpec
    layers: tuple[Layer, ...]
    classes: tuple[str, ...] | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> int:
        """The format version the manifest is written with: the oldest that holds every layer."""
        return max(l.min_version for l in self.layers) if self.layers else 1

    # ---- construction and checks

    @classmethod
    def build(
        cls,
        name: str,
        input: InputSpec,
        layers: Iterable[Layer],
        classes: Iterable[str] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> "Manifest":
        """Build and validate a manifest from layer objects (round-trips through the JSON form)."""
        m = cls(name=name, input=input, layers=tuple(layers), classes=None if classes is None else tuple(classes), info=dict(info or {}))
        return from_parts(m.metadata(), m.tensors())

    @property
    def output_layer(self) -> SynapticLayer:
        return self.layers[-1]  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return int(self.output_layer.out_shape[0])

    @property
    def synaptic_layers(self) -> list[SynapticLayer]:
        return [l for l in self.layers if l.is_synaptic]  # type: ignore[misc]

    def layer(self, name: str) -> Layer:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "format": FORMAT,
            "version": self.version,
            "name": self.name,
            "input": self.input.to_json(),
            "layers": [l.to_json() for l in self.layers],
            "info": dict(self.info),
        }
        if self.classes is not None:
            meta["classes"] = list(self.classes)
        return meta

    def tensors(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for l in self.layers:
            for key, arr in l.tensors().items():
                out[key] = np.ascontiguousarray(arr, dtype=np.int64)
        return out

    def to_bytes(self) -> bytes:
        """The canonical file contents: the same manifest always gives the same bytes."""
        from safetensors.numpy import save

        meta = json.dumps(self.metadata(), sort_keys=True, separators=(",", ":"))
        return save(self.tensors(), metadata={METADATA_KEY: meta})

    def digest(self) -> str:
        """SHA-256 of the canonical bytes: identifies the network (the board's hello frame returns it)."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temporary file, then rename): an interrupted save never leaves half a file."""
        return atomic_write_bytes(path, self.to_bytes())

    def replace_layer(self, name: str, **changes: Any) -> "Manifest":
        """A copy with one layer's fields changed (validated again)."""
        layers = [replace(l, **changes) if l.name == name else l for l in self.layers]
        return Manifest.build(self.name, self.input, layers, self.classes, self.info)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Manifest) and self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        ops = ", ".join(f"{l.name}:{l.op}" for l in self.layers)
        return f"<Manifest {self.name!r} v{self.version} input={list(self.input.shape)} layers=[{ops}]>"


TOP_FIELDS = ("format", "version", "name", "input", "layers", "info", "classes")
LAYER_FIELDS = ("name", "op", "inputs", "in_shape", "out_shape")


def from_parts(meta: Any, tensors: Mapping[str, np.ndarray]) -> Manifest:
    """Validate the JSON metadata and the tensors, and build a :class:`Manifest`.

    Checks, in this order: the top-level fields, the input, every layer (its
    fields, its inputs, shapes and tensors), the graph (every layer but the
    last feeds a later one), the size limits, and finally the register widths
    (:func:`bitspike.analysis.check_registers`). docs/SEMANTICS.md lists every
    rule.

    Raises
    ------
    ManifestError
        Naming the layer (index and name) and the field, and what was expected.
    """
    top = Ctx(None)
    if not isinstance(meta, Mapping):
        raise top.fail(None, f"metadata must be a JSON object, got {type(meta).__name__}")
    fmt = meta.get("format")
    if fmt != FORMAT:
        raise top.fail("format", f"expected {FORMAT!r}, got {fmt!r}: this is not a bitspike manifest")
    version = top.get(meta, "version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in VERSIONS:
        raise top.fail("version", f"unknown manifest version {version!r}; this bitspike reads versions "
                                  f"{', '.join(map(str, VERSIONS))} (an integer)")
    top.keys(meta, TOP_FIELDS, "the manifest")
    name = top.get(meta, "name")
    if not isinstance(name, str) or not name.isprintable() or len(name) > NETWORK_NAME_MAX:
        raise top.fail("name", f"expected a printable string of at most {NETWORK_NAME_MAX} characters, got {name!r:.80}")
    inp = InputSpec.from_json(top.get(meta, "input"))
    layers_meta = top.get(meta, "layers")
    if not isinstance(layers_meta, list) or not layers_meta:
        raise top.fail("layers", "expected a non-empty list of layers")

    shapes: dict[str, tuple[int, ...]] = {"input": inp.shape}
    steps: dict[str, int | None] = {"input": None}  # per-step currents (stepped layers), None: constant
    folded: dict[str, str] = {}  # lower-case name → name, to refuse names that differ only in case
    consumers: dict[str, list[str]] = {"input": []}
    layers: list[Layer] = []
    used_tensors: set[str] = set()
    total_elements = inp.size
    weight_bits = 0
    for index, lm in enumerate(layers_meta):
        ctx = Ctx(f"layer {index}")
        if not isinstance(lm, Mapping):
            raise ctx.fail(None, f"expected an object, got {lm!r:.80}")
        lname = lm.get("name")
        if not isinstance(lname, str) or NAME_RE.fullmatch(lname) is None or lname == "input":
            raise ctx.fail(
                "name",
                f"expected a name of 1 to {NAME_MAX} ASCII letters, digits or '_', not starting with a digit "
                f"and not 'input' (layer names become file names and Verilog identifiers), got {lname!r:.80}",
            )
        ctx = Ctx(f"layer {index} '{lname}'")
        if lname in shapes:
            raise ctx.fail("name", f"name {lname!r} is used twice")
        if lname.lower() in folded:
            raise ctx.fail("name", f"name {lname!r} differs from {folded[lname.lower()]!r} only in case (file names would clash)")
        op = ctx.get(lm, "op")
        if op not in LAYER_KINDS:
            raise ctx.fail("op", f"unknown operation {op!r}; expected one of {sorted(LAYER_KINDS)}")
        kind = LAYER_KINDS[op]
        ctx.keys(lm, LAYER_FIELDS + kind.json_fields, f"a {op} layer")
        inputs = ctx.get(lm, "inputs")
        if not isinstance(inputs, list) or len(inputs) != kind.n_inputs or not all(isinstance(i, str) for i in inputs):
            raise ctx.fail("inputs", f"{op} takes a list of {kind.n_inputs} input name(s), got {inputs!r:.80}")
        for i in inputs:
            if i not in shapes:
                raise ctx.fail("inputs", f"{i!r} is not the network input or an earlier layer (layers are in topological order)")
        in_shapes = [shapes[i] for i in inputs]
        declared_in = ctx.shape(lm, "in_shape")
        if declared_in != in_shapes[0]:
            raise ctx.fail("in_shape", f"declared {list(declared_in)} but its input {inputs[0]!r} gives {list(in_shapes[0])}")
        declared_out = ctx.shape(lm, "out_shape")
        base = dict(name=lname, inputs=tuple(inputs), in_shape=declared_in, out_shape=declared_out)
        layer = kind.parse(lm, tensors, ctx, base)
        actual_out = tuple(int(v) for v in layer.infer_out_shape(in_shapes, ctx))
        if actual_out != declared_out:
            raise ctx.fail("out_shape", f"declared {list(declared_out)} but the layer computes {list(actual_out)}")
        if layer.min_version > version:
            raise ctx.fail("neuron", f"needs manifest version {layer.min_version}, but the file says version {version}")
        steps[lname] = layer.steps_out([steps[i] for i in inputs], ctx)
        total_elements += math.prod(actual_out)
        if total_elements > MAX_TOTAL_ELEMENTS:
            raise ctx.fail(
                "out_shape", f"the feature maps up to this layer hold {total_elements:,} elements; at most {MAX_TOTAL_ELEMENTS:,} in all"
            )
        if layer.weight_bits:
            weight_bits += layer.weight_bits
            if weight_bits > MAX_WEIGHT_BITS:
                raise ctx.fail(
                    f"{lname}.weight", f"the weights up to this layer take {weight_bits:,} bits; at most {MAX_WEIGHT_BITS:,} in all"
                )
        used_tensors.update(layer.tensors())
        for i in inputs:
            consumers[i].append(lname)
        shapes[lname] = actual_out
        folded[lname.lower()] = lname
        consumers[lname] = []
        layers.append(layer)

    last = layers[-1]
    if not last.gives_logits or len(last.out_shape) != 1:
        raise ManifestError(
            "the last layer must be a linear (or 1×1-output) synaptic layer with requant = null: its accumulators are the logits",
            layer=f"layer {len(layers) - 1} '{last.name}'",
            field="requant",
        )
    for index, layer in enumerate(layers[:-1]):
        if not consumers[layer.name]:
            raise ManifestError(
                "no later layer takes this layer's output: every layer but the last must feed a later one",
                layer=f"layer {index} '{layer.name}'",
                field="inputs",
            )
        if layer.gives_logits:
            raise ManifestError(
                "only the last layer may have requant = null (its accumulators are the logits)",
                layer=f"layer {index} '{layer.name}'",
                field="requant",
            )
    extra = sorted(set(tensors) - used_tensors)
    if extra:
        raise top.fail("tensors", f"tensors that no layer uses: {extra[:5]}")
    classes = meta.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise top.fail("classes", "expected a list of strings")
        if len(classes) != int(last.out_shape[0]):
            raise top.fail("classes", f"{len(classes)} labels for {last.out_shape[0]} logits")
    info = meta.get("info", {})
    if not isinstance(info, Mapping):
        raise top.fail("info", "expected an object")
    manifest = Manifest(
        name=name, input=inp, layers=tuple(layers), classes=None if classes is None else tuple(classes), info=dict(info)
    )
    check_registers(manifest)
    return manifest


def _refuse_duplicate_keys(where: str):
    """A ``json.loads`` hook: an object with a key given twice is an error (json keeps the last silently)."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                owner = out.get("name")
                inside = f" in the object named {owner!r}" if isinstance(owner, str) else ""
                raise ManifestError(f"{where}: key {key!r} appears twice{inside}; every key must be given once", field=key)
            out[key] = value
        return out

    return hook


def load(path: str | os.PathLike) -> Manifest:
    """Load and validate a manifest file.

    Raises
    ------
    ManifestError
        For anything wrong with the file, naming the layer and field.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"no such file: {path}")
    data = path.read_bytes()
    return loads(data, source=str(path))


def loads(data: bytes, source: str = "<bytes>") -> Manifest:
    """Validate and build a manifest from the bytes of a file."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    if len(data) < 8:
        raise ManifestError(f"{source}: file is {len(data)} bytes long, too short to be a manifest (truncated?)")
    header_len = int.from_bytes(data[:8], "little")
    if header_len <= 0 or 8 + header_len > len(data):
        raise ManifestError(
            f"{source}: header says {header_len} bytes but the file has {len(data) - 8} after the length; "
            "the file is truncated or not a safetensors manifest"
        )
    try:
        header = json.loads(data[8 : 8 + header_len], object_pairs_hook=_refuse_duplicate_keys(f"{source}: safetensors header"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ManifestError(f"{source}: header is not valid JSON ({exc}); not a safetensors manifest") from None
    table = header.get("__metadata__") if isinstance(header, dict) else None
    meta_str = table.get(METADATA_KEY) if isinstance(table, dict) else None
    if meta_str is None:
        raise ManifestError(f"{source}: no '{METADATA_KEY}' metadata entry; this is not a bitspike manifest")
    if not isinstance(meta_str, str):
        raise ManifestError(f"{source}: the '{METADATA_KEY}' metadata entry must be a JSON string, got {type(meta_str).__name__}")
    try:
        meta = json.loads(meta_str, object_pairs_hook=_refuse_duplicate_keys(f"{source}: '{METADATA_KEY}' metadata"))
    except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise ManifestError(f"{source}: '{METADATA_KEY}' metadata is not valid JSON ({exc})") from None
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, Exception) as exc:  # safetensors raises several kinds
        raise ManifestError(f"{source}: tensor data unreadable ({exc}); the file is truncated or corrupt") from None
    return from_parts(meta, tensors)
