"""The manifest: the integer contract between a trained network and its hardware.

A manifest is a safetensors file. Its integer tensors are the weights, biases
and requantization constants; its metadata entry ``"bitspike"`` is a JSON
document that describes the network layer by layer. Nothing is pickled.

Format (version 1)
------------------
Metadata ``bitspike`` (JSON object)::

    {
      "format": "bitspike-manifest",
      "version": 1,
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
    last layer, whose accumulators are the logits). ``conv2d`` adds
    ``kernel``, ``stride``, ``padding`` (each ``[h, w]``).
    Tensors ``NAME.weight`` (``[out, in]`` or ``[out, in, kh, kw]``),
    ``NAME.bias`` (``[out]``, accumulator units), and, when ``requant`` is not
    null, ``NAME.rq_mult`` and ``NAME.rq_bias`` (``[out]``).
``maxpool`` / ``avgpool``
    ``kernel``, ``stride`` (``[h, w]``), no padding. ``avgpool`` outputs the
    *window sum*: the 1/n is folded into the consumer's unit, so the hardware
    never divides.
``flatten``
    ``[C, H, W]`` → ``[C*H*W]`` in C-major order (as ``torch.flatten``).
``add``
    Residual add of two currents with per-channel multipliers:
    ``y = clamp((a*Ma + b*Mb + rnd) >> SH, lo, hi)``, ``rnd = 2**(SH-1)`` (0 when SH = 0).
    Fields ``shift``, ``lo``, ``hi``; tensors ``NAME.mult_a`` and ``NAME.mult_b`` (``[C]``).

Loading validates everything and raises :class:`~bitspike.errors.ManifestError`
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
from typing import Any, ClassVar, Iterable, Mapping

import numpy as np

from .errors import ManifestError
from .io import atomic_write_bytes

FORMAT = "bitspike-manifest"
VERSION = 1
METADATA_KEY = "bitspike"

#: Legal ranges, inclusive. Wider bit widths than the paper uses are allowed so
#: that 8-bit first layers and experiments fit; the generator sizes for them.
W_BITS_RANGE = (1, 16)
S_BITS_RANGE = (1, 16)
TIMESTEPS_RANGE = (1, 64)
K_RANGE = (0, 30)
SHIFT_RANGE = (0, 62)
INPUT_BITS_RANGE = (1, 16)
MULT_LIMIT = 2**31  # |multiplier| < MULT_LIMIT
BIAS_LIMIT = 2**47  # |bias| < BIAS_LIMIT
CURRENT_LIMIT = 2**40  # |lo|, |hi| of clamp bounds

#: Size limits (docs/SEMANTICS.md §7). The generator holds a feature map's rows in line
#: buffers and writes every weight into the Verilog source, so its time and memory grow with
#: these; beyond them generation takes too long to be useful or does not fit a machine's memory.
MAX_MAP_ELEMENTS = 2**20  # elements of one feature map (the input or one layer's output)
MAX_TOTAL_ELEMENTS = 2**23  # elements of every feature map together
MAX_WEIGHT_BITS = 2**23  # Σ numel(W) · B_w over the network (8 Mbit: generation then takes minutes)
MAX_DIM = 2**16  # one entry of a shape

#: Layer names become file names and Verilog identifiers: ASCII letters, digits and '_', not
#: starting with a digit, at most 64 characters, unique ignoring case (case-insensitive file systems).
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
NAME_MAX = 64
#: a network name goes into reports only, but must still be printable on one line
NETWORK_NAME_MAX = 256

#: Tensor dtypes accepted: every value of these converts to int64 exactly. uint64 is refused
#: (values of 2**63 and above would wrap to negatives), as are bool and floating point.
ACCEPTED_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32")


def weight_limit(w_bits: int) -> int:
    """Largest |W_int| that ``w_bits`` can hold (symmetric; ±1 for one bit)."""
    return 1 if w_bits == 1 else 2 ** (w_bits - 1) - 1


def spike_max(s_bits: int) -> int:
    """Largest spike value q = 2**B_s - 1."""
    return 2**s_bits - 1


# ----------------------------------------------------------------------------------------------
# validation helpers: each names the layer and the field


class _Ctx:
    """Where we are while validating: used to build precise error messages."""

    def __init__(self, where: str | None):
        self.where = where

    def fail(self, field_name: str | None, message: str) -> ManifestError:
        return ManifestError(message, layer=self.where, field=field_name)

    def get(self, meta: Mapping[str, Any], key: str) -> Any:
        if key not in meta:
            raise self.fail(key, "missing")
        return meta[key]

    def int_in(self, meta: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
        value = self.get(meta, key)
        return self.check_int(key, value, lo, hi)

    def check_int(self, key: str, value: Any, lo: int | None, hi: int | None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            lo_s = "-inf" if lo is None else str(lo)
            hi_s = "inf" if hi is None else str(hi)
            raise self.fail(key, f"{value} is out of range, expected {lo_s} … {hi_s}")
        return value

    def pair(self, meta: Mapping[str, Any], key: str, lo: int, hi: int) -> tuple[int, int]:
        value = self.get(meta, key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise self.fail(key, f"expected [h, w], got {value!r}")
        return (self.check_int(key, value[0], lo, hi), self.check_int(key, value[1], lo, hi))

    def shape(self, meta: Mapping[str, Any], key: str) -> tuple[int, ...]:
        value = self.get(meta, key)
        if not isinstance(value, (list, tuple)) or not value or len(value) > 3:
            raise self.fail(key, f"expected a list of 1 to 3 positive integers, got {value!r:.80}")
        shape = tuple(self.check_int(key, v, 1, MAX_DIM) for v in value)
        if math.prod(shape) > MAX_MAP_ELEMENTS:
            raise self.fail(
                key, f"shape {list(shape)} has {math.prod(shape):,} elements; at most {MAX_MAP_ELEMENTS:,} per feature map"
            )
        return shape

    def keys(self, meta: Mapping[str, Any], allowed: Iterable[str], what: str) -> None:
        """Refuse keys the format does not define (a misspelt field would otherwise be silently ignored)."""
        unknown = sorted(set(meta) - set(allowed))
        if unknown:
            raise self.fail(unknown[0], f"unknown field for {what}; expected only {sorted(allowed)}")

    def tensor(
        self,
        tensors: Mapping[str, np.ndarray],
        key: str,
        shape: tuple[int, ...],
        lo: int | None = None,
        hi: int | None = None,
        what: str = "",
    ) -> np.ndarray:
        if key not in tensors:
            raise self.fail(key, f"tensor missing from the file (expected shape {list(shape)})")
        array = tensors[key]
        if not np.issubdtype(array.dtype, np.integer):
            raise self.fail(key, f"expected an integer tensor, got dtype {array.dtype}")
        if array.dtype.name not in ACCEPTED_DTYPES:
            raise self.fail(
                key, f"dtype {array.dtype} can hold values that do not fit int64; expected one of {', '.join(ACCEPTED_DTYPES)}"
            )
        if tuple(array.shape) != tuple(shape):
            raise self.fail(key, f"wrong shape {list(array.shape)}, expected {list(shape)}")
        array = array.astype(np.int64)
        if array.size and lo is not None and int(array.min()) < lo:
            idx = np.unravel_index(int(array.argmin()), array.shape)
            raise self.fail(key, f"value {int(array.min())} at {list(map(int, idx))} is below {lo}{what}")
        if array.size and hi is not None and int(array.max()) > hi:
            idx = np.unravel_index(int(array.argmax()), array.shape)
            raise self.fail(key, f"value {int(array.max())} at {list(map(int, idx))} is above {hi}{what}")
        return array


def _arr_eq(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.array_equal(a, b))


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
        ctx = _Ctx("input")
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


@dataclass(frozen=True, eq=False)
class Requant:
    """x_next[o] = clamp((acc[o]·multiplier[o] + bias[o] + rnd) >> shift, lo, hi)."""

    multiplier: np.ndarray
    bias: np.ndarray
    shift: int
    lo: int
    hi: int

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Requant)
            and (self.shift, self.lo, self.hi) == (other.shift, other.lo, other.hi)
            and _arr_eq(self.multiplier, other.multiplier)
            and _arr_eq(self.bias, other.bias)
        )


def rounding_term(shift: int) -> int:
    """The round-half-up constant added before an arithmetic right shift."""
    return (1 << shift) >> 1


@dataclass(frozen=True, eq=False)
class Layer:
    """Base of all layer kinds. ``inputs`` names earlier layers or ``"input"``."""

    name: str
    inputs: tuple[str, ...]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    op: ClassVar[str] = ""
    n_inputs: ClassVar[int] = 1
    tensor_fields: ClassVar[tuple[str, ...]] = ()
    #: JSON fields of this kind beyond the common ``name``, ``op``, ``inputs``, ``in_shape``, ``out_shape``
    json_fields: ClassVar[tuple[str, ...]] = ()

    @property
    def is_synaptic(self) -> bool:
        return False

    def infer_out_shape(self, in_shapes: list[tuple[int, ...]], ctx: _Ctx) -> tuple[int, ...]:
        raise NotImplementedError

    def extra_json(self) -> dict[str, Any]:
        return {}

    def tensors(self) -> dict[str, np.ndarray]:
        return {}

    def to_json(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "op": self.op,
            "inputs": list(self.inputs),
            "in_shape": list(self.in_shape),
            "out_shape": list(self.out_shape),
        }
        out.update(self.extra_json())
        return out

    @classmethod
    def parse(cls, meta: Mapping[str, Any], tensors: Mapping[str, np.ndarray], ctx: _Ctx, base: dict) -> "Layer":
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return False
        if self.to_json() != other.to_json():  # type: ignore[union-attr]
            return False
        mine, theirs = self.tensors(), other.tensors()  # type: ignore[union-attr]
        return mine.keys() == theirs.keys() and all(_arr_eq(mine[k], theirs[k]) for k in mine)

    __hash__ = None  # type: ignore[assignment]


LAYER_KINDS: dict[str, type[Layer]] = {}


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Register a layer kind under its ``op`` name (one handler per op, no if-ladder)."""
    LAYER_KINDS[cls.op] = cls
    return cls


@dataclass(frozen=True, eq=False)
class SynapticLayer(Layer):
    """A neuron (B_s, T, θ = 2**k) feeding a linear or conv2d synapse of B_w-bit weights."""

    json_fields: ClassVar[tuple[str, ...]] = ("w_bits", "s_bits", "timesteps", "k", "requant")

    w_bits: int = 8
    s_bits: int = 8
    timesteps: int = 1
    k: int = 0
    weight: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    bias: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    requant: Requant | None = None

    @property
    def is_synaptic(self) -> bool:
        return True

    @property
    def is_output(self) -> bool:
        return self.requant is None

    @property
    def threshold(self) -> int:
        return 1 << self.k

    @property
    def spike_max(self) -> int:
        return spike_max(self.s_bits)

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def fan_in(self) -> int:
        return int(np.prod(self.weight.shape[1:]))

    @property
    def params(self) -> int:
        return int(self.weight.size)

    @property
    def macs(self) -> int:
        raise NotImplementedError

    def extra_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "w_bits": self.w_bits,
            "s_bits": self.s_bits,
            "timesteps": self.timesteps,
            "k": self.k,
            "requant": None
            if self.requant is None
            else {"shift": self.requant.shift, "lo": self.requant.lo, "hi": self.requant.hi},
        }
        return out

    def tensors(self) -> dict[str, np.ndarray]:
        out = {f"{self.name}.weight": self.weight, f"{self.name}.bias": self.bias}
        if self.requant is not None:
            out[f"{self.name}.rq_mult"] = self.requant.multiplier
            out[f"{self.name}.rq_bias"] = self.requant.bias
        return out

    @classmethod
    def _parse_neuron_and_synapse(
        cls, meta: Mapping[str, Any], tensors: Mapping[str, np.ndarray], ctx: _Ctx, weight_shape: tuple[int, ...], name: str
    ) -> dict[str, Any]:
        w_bits = ctx.int_in(meta, "w_bits", *W_BITS_RANGE)
        s_bits = ctx.int_in(meta, "s_bits", *S_BITS_RANGE)
        timesteps = ctx.int_in(meta, "timesteps", *TIMESTEPS_RANGE)
        k = ctx.int_in(meta, "k", *K_RANGE)
        lim = weight_limit(w_bits)
        weight = ctx.tensor(
            tensors, f"{name}.weight", weight_shape, -lim, lim, what=f" (B_w = {w_bits} allows −{lim} … {lim})"
        )
        if w_bits == 1 and weight.size and bool((weight == 0).any()):
            idx = np.argwhere(weight == 0)[0]
            raise ctx.fail(f"{name}.weight", f"value 0 at {idx.tolist()}: B_w = 1 weights must be −1 or +1")
        out = weight_shape[0]
        bias = ctx.tensor(tensors, f"{name}.bias", (out,), -BIAS_LIMIT + 1, BIAS_LIMIT - 1)
        rq_meta = ctx.get(meta, "requant")
        requant = None
        if rq_meta is not None:
            if not isinstance(rq_meta, Mapping):
                raise ctx.fail("requant", f"expected an object or null, got {rq_meta!r}")
            ctx.keys(rq_meta, ("shift", "lo", "hi"), "requant")
            shift = ctx.int_in(rq_meta, "shift", *SHIFT_RANGE)
            lo = ctx.int_in(rq_meta, "lo", -CURRENT_LIMIT, CURRENT_LIMIT)
            hi = ctx.int_in(rq_meta, "hi", -CURRENT_LIMIT, CURRENT_LIMIT)
            if lo > hi:
                raise ctx.fail("requant", f"clamp bounds lo = {lo} > hi = {hi}")
            mult = ctx.tensor(tensors, f"{name}.rq_mult", (out,), -MULT_LIMIT + 1, MULT_LIMIT - 1)
            rq_bias = ctx.tensor(tensors, f"{name}.rq_bias", (out,), -BIAS_LIMIT + 1, BIAS_LIMIT - 1)
            requant = Requant(multiplier=mult, bias=rq_bias, shift=shift, lo=lo, hi=hi)
        return dict(w_bits=w_bits, s_bits=s_bits, timesteps=timesteps, k=k, weight=weight, bias=bias, requant=requant)


@register_layer
@dataclass(frozen=True, eq=False)
class LinearLayer(SynapticLayer):
    op: ClassVar[str] = "linear"

    @property
    def macs(self) -> int:
        return int(self.weight.shape[0] * self.weight.shape[1])

    def infer_out_shape(self, in_shapes, ctx):
        (shape,) = in_shapes
        if len(shape) != 1:
            raise ctx.fail("in_shape", f"linear needs a flat input, got shape {list(shape)} (add a flatten layer)")
        if shape[0] != self.weight.shape[1]:
            raise ctx.fail(
                f"{self.name}.weight",
                f"weight has {self.weight.shape[1]} inputs but the layer's input has {shape[0]} features",
            )
        return (int(self.weight.shape[0]),)

    @classmethod
    def parse(cls, meta, tensors, ctx, base):
        name = base["name"]
        if f"{name}.weight" not in tensors:
            raise ctx.fail(f"{name}.weight", "tensor missing from the file")
        wshape = tuple(tensors[f"{name}.weight"].shape)
        if len(wshape) != 2:
            raise ctx.fail(f"{name}.weight", f"expected a 2-D [out, in] tensor, got shape {list(wshape)}")
        fields = cls._parse_neuron_and_synapse(meta, tensors, ctx, wshape, name)
        return cls(**base, **fields)


@register_layer
@dataclass(frozen=True, eq=False)
class Conv2dLayer(SynapticLayer):
    op: ClassVar[str] = "conv2d"
    json_fields: ClassVar[tuple[str, ...]] = SynapticLayer.json_fields + ("kernel", "stride", "padding")
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @property
    def macs(self) -> int:
        _, ho, wo = self.out_shape
        return int(ho * wo * self.weight.size)

    def extra_json(self):
        out = super().extra_json()
        out.update(kernel=list(self.kernel), stride=list(self.stride), padding=list(self.padding))
        return out

    def infer_out_shape(self, in_shapes, ctx):
        (shape,) = in_shapes
        if len(shape) != 3:
            raise ctx.fail("in_shape", f"conv2d needs a [C, H, W] input, got {list(shape)}")
        c, h, w = shape
        if c != self.weight.shape[1]:
            raise ctx.fail(
                f"{self.name}.weight", f"weight has {self.weight.shape[1]} input channels but the input has {c}"
            )
        ho = (h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1
        if ho < 1 or wo < 1:
            raise ctx.fail("kernel", f"kernel {list(self.kernel)} does not fit input {h}×{w} with padding {list(self.padding)}")
        return (int(self.weight.shape[0]), ho, wo)

    @classmethod
    def parse(cls, meta, tensors, ctx, base):
        name = base["name"]
        kernel = ctx.pair(meta, "kernel", 1, 64)
        stride = ctx.pair(meta, "stride", 1, 64)
        padding = ctx.pair(meta, "padding", 0, 64)
        if padding[0] >= kernel[0] or padding[1] >= kernel[1]:
            raise ctx.fail("padding", f"padding {list(padding)} must be smaller than the kernel {list(kernel)}")
        if f"{name}.weight" not in tensors:
            raise ctx.fail(f"{name}.weight", "tensor missing from the file")
        wshape = tuple(tensors[f"{name}.weight"].shape)
        if len(wshape) != 4 or tuple(wshape[2:]) != kernel:
            raise ctx.fail(
                f"{name}.weight", f"expected a [out, in, {kernel[0]}, {kernel[1]}] tensor, got shape {list(wshape)}"
            )
        fields = cls._parse_neuron_and_synapse(meta, tensors, ctx, wshape, name)
        return cls(**base, kernel=kernel, stride=stride, padding=padding, **fields)


@dataclass(frozen=True, eq=False)
class PoolLayer(Layer):
    json_fields: ClassVar[tuple[str, ...]] = ("kernel", "stride", "padding")  # padding only as 0
    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)

    @property
    def window(self) -> int:
        return self.kernel[0] * self.kernel[1]

    def extra_json(self):
        return {"kernel": list(self.kernel), "stride": list(self.stride)}

    def infer_out_shape(self, in_shapes, ctx):
        (shape,) = in_shapes
        if len(shape) != 3:
            raise ctx.fail("in_shape", f"{self.op} needs a [C, H, W] input, got {list(shape)}")
        c, h, w = shape
        ho = (h - self.kernel[0]) // self.stride[0] + 1
        wo = (w - self.kernel[1]) // self.stride[1] + 1
        if ho < 1 or wo < 1:
            raise ctx.fail("kernel", f"pool window {list(self.kernel)} does not fit input {h}×{w}")
        return (c, ho, wo)

    @classmethod
    def parse(cls, meta, tensors, ctx, base):
        kernel = ctx.pair(meta, "kernel", 1, 64)
        stride = ctx.pair(meta, "stride", 1, 64)
        if "padding" in meta and meta["padding"] not in (0, [0, 0]):
            raise ctx.fail("padding", f"pooling supports no padding, got {meta['padding']!r}")
        return cls(**base, kernel=kernel, stride=stride)


@register_layer
@dataclass(frozen=True, eq=False)
class MaxPoolLayer(PoolLayer):
    op: ClassVar[str] = "maxpool"


@register_layer
@dataclass(frozen=True, eq=False)
class AvgPoolLayer(PoolLayer):
    """Sum pooling: outputs the window sum; the 1/n lives in the consumer's unit."""

    op: ClassVar[str] = "avgpool"


@register_layer
@dataclass(frozen=True, eq=False)
class FlattenLayer(Layer):
    op: ClassVar[str] = "flatten"

    def infer_out_shape(self, in_shapes, ctx):
        (shape,) = in_shapes
        return (math.prod(shape),)

    @classmethod
    def parse(cls, meta, tensors, ctx, base):
        return cls(**base)


@register_layer
@dataclass(frozen=True, eq=False)
class AddLayer(Layer):
    """Residual add: y = clamp((a·Ma + b·Mb + rnd) >> shift, lo, hi), per channel."""

    op: ClassVar[str] = "add"
    n_inputs: ClassVar[int] = 2
    json_fields: ClassVar[tuple[str, ...]] = ("shift", "lo", "hi")
    mult_a: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    mult_b: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    shift: int = 0
    lo: int = 0
    hi: int = 0

    @property
    def channels(self) -> int:
        return int(self.in_shape[0])

    def extra_json(self):
        return {"shift": self.shift, "lo": self.lo, "hi": self.hi}

    def tensors(self):
        return {f"{self.name}.mult_a": self.mult_a, f"{self.name}.mult_b": self.mult_b}

    def infer_out_shape(self, in_shapes, ctx):
        a, b = in_shapes
        if a != b:
            raise ctx.fail("inputs", f"residual add needs equal shapes, got {list(a)} and {list(b)}")
        return a

    @classmethod
    def parse(cls, meta, tensors, ctx, base):
        name = base["name"]
        channels = base["in_shape"][0]
        shift = ctx.int_in(meta, "shift", *SHIFT_RANGE)
        lo = ctx.int_in(meta, "lo", -CURRENT_LIMIT, CURRENT_LIMIT)
        hi = ctx.int_in(meta, "hi", -CURRENT_LIMIT, CURRENT_LIMIT)
        if lo > hi:
            raise ctx.fail("lo", f"clamp bounds lo = {lo} > hi = {hi}")
        mult_a = ctx.tensor(tensors, f"{name}.mult_a", (channels,), -MULT_LIMIT + 1, MULT_LIMIT - 1)
        mult_b = ctx.tensor(tensors, f"{name}.mult_b", (channels,), -MULT_LIMIT + 1, MULT_LIMIT - 1)
        return cls(**base, mult_a=mult_a, mult_b=mult_b, shift=shift, lo=lo, hi=hi)


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
    version: int = VERSION

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
        return [l for l in self.layers if isinstance(l, SynapticLayer)]

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
    top = _Ctx(None)
    if not isinstance(meta, Mapping):
        raise top.fail(None, f"metadata must be a JSON object, got {type(meta).__name__}")
    fmt = meta.get("format")
    if fmt != FORMAT:
        raise top.fail("format", f"expected {FORMAT!r}, got {fmt!r}: this is not a bitspike manifest")
    version = top.get(meta, "version")
    if isinstance(version, bool) or not isinstance(version, int) or version != VERSION:
        raise top.fail("version", f"unknown manifest version {version!r}; this bitspike reads version {VERSION} (an integer)")
    top.keys(meta, TOP_FIELDS, "the manifest")
    name = top.get(meta, "name")
    if not isinstance(name, str) or not name.isprintable() or len(name) > NETWORK_NAME_MAX:
        raise top.fail("name", f"expected a printable string of at most {NETWORK_NAME_MAX} characters, got {name!r:.80}")
    inp = InputSpec.from_json(top.get(meta, "input"))
    layers_meta = top.get(meta, "layers")
    if not isinstance(layers_meta, list) or not layers_meta:
        raise top.fail("layers", "expected a non-empty list of layers")

    shapes: dict[str, tuple[int, ...]] = {"input": inp.shape}
    folded: dict[str, str] = {}  # lower-case name → name, to refuse names that differ only in case
    consumers: dict[str, list[str]] = {"input": []}
    layers: list[Layer] = []
    used_tensors: set[str] = set()
    total_elements = inp.size
    weight_bits = 0
    for index, lm in enumerate(layers_meta):
        ctx = _Ctx(f"layer {index}")
        if not isinstance(lm, Mapping):
            raise ctx.fail(None, f"expected an object, got {lm!r:.80}")
        lname = lm.get("name")
        if not isinstance(lname, str) or NAME_RE.fullmatch(lname) is None or lname == "input":
            raise ctx.fail(
                "name",
                f"expected a name of 1 to {NAME_MAX} ASCII letters, digits or '_', not starting with a digit "
                f"and not 'input' (layer names become file names and Verilog identifiers), got {lname!r:.80}",
            )
        ctx = _Ctx(f"layer {index} '{lname}'")
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
        total_elements += math.prod(actual_out)
        if total_elements > MAX_TOTAL_ELEMENTS:
            raise ctx.fail(
                "out_shape", f"the feature maps up to this layer hold {total_elements:,} elements; at most {MAX_TOTAL_ELEMENTS:,} in all"
            )
        if isinstance(layer, SynapticLayer):
            weight_bits += layer.params * layer.w_bits
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
    if not isinstance(last, SynapticLayer) or last.requant is not None or len(last.out_shape) != 1:
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
        if isinstance(layer, SynapticLayer) and layer.requant is None:
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
        name=name, input=inp, layers=tuple(layers), classes=None if classes is None else tuple(classes), info=dict(info), version=version
    )
    from .analysis import check_registers  # the analysis imports this module

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
