"""The PyTorch golden model: runs a manifest with integer arithmetic only (docs/SEMANTICS.md §4).

No floating point touches a value. Every register the model exposes (input
current, membrane, spikes, accumulator, output current) is a ``torch.int64``
tensor: validation (:func:`bitspike.analysis.check_registers`) refuses a
manifest in which the interval analysis cannot prove that each of them fits in
:data:`~bitspike.analysis.REGISTER_BITS` bits, so int64 arithmetic on them is
exact. The two product registers, the requantizer's ``acc·M + B + rnd`` and the
residual add's ``a·Ma + b·Mb + rnd``, can legally reach about 95 bits; for a
layer where the analysis says one of them (or one of its partial terms) might
leave int64, the model computes it exactly with Python integers (numpy object
arrays) and only the clamped result, which always fits, goes back to int64.
Every other layer keeps the fast int64 path.

Every register value is checked against the interval analysis
(:mod:`bitspike.analysis`), so a run is also a test of the analysis the
hardware is sized by.

The reference neuron :func:`neuron_steps` is the one every hardware test
compares against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from bitspike.analysis import LayerRanges, Range, analyse, needs_wide_product
from bitspike.errors import RangeError
from bitspike.manifest import (
    AddLayer,
    AvgPoolLayer,
    FlattenLayer,
    Layer,
    LinearLayer,
    Manifest,
    MaxPoolLayer,
    SynapticLayer,
    rounding_term,
)

__all__ = ["neuron_steps", "GoldenModel", "GoldenResult", "LayerTrace", "to_input_ints"]


def neuron_steps(x: torch.Tensor, k: int, s_bits: int, timesteps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The multi-bit neuron, integer form.

    Parameters
    ----------
    x
        Input current (any shape, integer), constant over the timesteps.
    k
        Threshold exponent: θ = 2**k.
    s_bits
        Spike bit width B_s; spikes are 0 … 2**B_s − 1.
    timesteps
        T.

    Returns
    -------
    v, s
        ``v[t]`` the membrane before step t (t = 0 … T, v[T] after the last
        update) and ``s[t]`` the spike of step t (t = 0 … T−1); shapes
        ``(T+1, *x.shape)`` and ``(T, *x.shape)``.
    """
    x = x.to(torch.int64)
    theta = 1 << k
    q = (1 << s_bits) - 1
    v = x.clone()
    vs, ss = [v], []
    for _ in range(timesteps):
        s = torch.clamp(torch.div(2 * v + theta, 2 * theta, rounding_mode="floor"), 0, q)
        v = v - s * theta + x
        ss.append(s)
        vs.append(v)
    return torch.stack(vs), torch.stack(ss)


def shift_round(value: torch.Tensor, shift: int) -> torch.Tensor:
    """(value + 2**(shift−1)) >> shift, arithmetic (floor) shift; no rounding term when shift = 0."""
    return torch.bitwise_right_shift(value + rounding_term(shift), shift)


def pool(layer: MaxPoolLayer | AvgPoolLayer, x: torch.Tensor) -> torch.Tensor:
    """Max-pool (window max) or avgpool (window sum) of integer currents ``[N, C, H, W]``; partial windows dropped.

    The max is taken on the integers themselves: torch's max_pool2d has no int64 kernel, and float64
    would round above 2**53.
    """
    windows = x.unfold(2, layer.kernel[0], layer.stride[0]).unfold(3, layer.kernel[1], layer.stride[1])
    if isinstance(layer, MaxPoolLayer):
        return windows.amax(dim=(-1, -2))
    return windows.sum(dim=(-1, -2))


def _conv2d_int(s: torch.Tensor, w: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """Integer 2-D convolution (cross-correlation, as torch) by im2col and an int64 matmul."""
    n, c, h, wd = s.shape
    o, _, kh, kw = w.shape
    if padding != (0, 0):
        s = torch.nn.functional.pad(s, (padding[1], padding[1], padding[0], padding[0]))
    patches = s.unfold(2, kh, stride[0]).unfold(3, kw, stride[1])  # n, c, ho, wo, kh, kw
    ho, wo = patches.shape[2], patches.shape[3]
    cols = patches.permute(0, 2, 3, 1, 4, 5).reshape(n, ho * wo, c * kh * kw)
    out = cols @ w.reshape(o, -1).t()  # n, ho*wo, o
    return out.permute(0, 2, 1).reshape(n, o, ho, wo)


@dataclass
class LayerTrace:
    """What one layer computed for a batch (batch dimension first after the time axis)."""

    name: str
    op: str
    x: torch.Tensor  # input current
    out: torch.Tensor  # output current (or logits)
    v: torch.Tensor | None = None  # (T+1, N, ...) membrane
    s: torch.Tensor | None = None  # (T, N, ...) spikes
    acc: torch.Tensor | None = None  # accumulators (before requantization)


@dataclass
class GoldenResult:
    logits: torch.Tensor  # (N, classes) int64
    classes: torch.Tensor  # (N,) int64, argmax with ties to the lowest index
    trace: dict[str, LayerTrace] | None = field(default=None)


def argmax_lowest(logits: torch.Tensor) -> torch.Tensor:
    """Argmax along the last axis; ties go to the lowest index (as the hardware does)."""
    best = logits.max(dim=-1, keepdim=True).values
    idx = torch.arange(logits.shape[-1], device=logits.device).expand_as(logits)
    return torch.where(logits == best, idx, logits.shape[-1]).min(dim=-1).values


def to_input_ints(images: np.ndarray | torch.Tensor, manifest: Manifest) -> torch.Tensor:
    """Check an integer input batch against the manifest's input spec and return it as int64."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.dtype.is_floating_point:
        raise TypeError("golden model input must be integers (pixels); quantize with the manifest's input scale first")
    x = x.to(torch.int64)
    shape = tuple(manifest.input.shape)
    if tuple(x.shape[1:]) != shape:
        if tuple(x.shape) == shape:
            x = x.unsqueeze(0)
        else:
            raise ValueError(f"input batch has shape {list(x.shape)}, expected [N, {', '.join(map(str, shape))}]")
    top = 2**manifest.input.bits - 1
    if x.numel() and (int(x.min()) < 0 or int(x.max()) > top):
        raise ValueError(f"input values must be in 0 … {top} ({manifest.input.bits}-bit), got {int(x.min())} … {int(x.max())}")
    return x


class GoldenModel:
    """Runs a manifest on integer input batches, exactly as the hardware must.

    Parameters
    ----------
    manifest
        The network.
    check_ranges
        Check every register value against the interval analysis (default on).
    """

    def __init__(self, manifest: Manifest, check_ranges: bool = True):
        self.manifest = manifest
        self.ranges: dict[str, LayerRanges] = analyse(manifest)
        self.check_ranges = check_ranges
        # layers whose product register (or a partial term of it) may leave int64: computed with Python integers
        self._wide: set[str] = {name for name, r in self.ranges.items() if needs_wide_product(manifest.layer(name), r)}
        self._weights: dict[str, torch.Tensor] = {}
        for layer in manifest.layers:
            if isinstance(layer, SynapticLayer):
                self._weights[layer.name] = torch.from_numpy(layer.weight.astype(np.int64))

    def __repr__(self) -> str:
        return f"GoldenModel({self.manifest!r}, check_ranges={self.check_ranges})"

    # ---- range checks

    def _check(self, layer: Layer, register: str, value: torch.Tensor | np.ndarray, bound: Range | None) -> None:
        """Raise :class:`RangeError` if ``value`` (int64 tensor, or object array of Python ints) leaves ``bound``."""
        if not self.check_ranges or bound is None:
            return
        if (value.numel() if isinstance(value, torch.Tensor) else value.size) == 0:
            return
        lo, hi = int(value.min()), int(value.max())
        if lo < bound.lo or hi > bound.hi:
            arr = value.numpy() if isinstance(value, torch.Tensor) else value
            bad = (arr < bound.lo) | (arr > bound.hi)
            where = [int(i) for i in np.argwhere(bad)[0]]
            raise RangeError(
                f"layer '{layer.name}' ({layer.op}): register {register} took value "
                f"{int(arr[tuple(where)])} at index {where}, outside its analysed range {bound}"
            )

    def _scale_wide(self, layer: Layer, register: str, terms: list[tuple[torch.Tensor, np.ndarray]],
                    bias: np.ndarray | None, shift: int, lo: int, hi: int, r: LayerRanges) -> torch.Tensor:
        """clamp((Σ value·mult[c] + bias[c] + rnd) >> shift, lo, hi) in Python integers (exact at any width).

        The per-channel constants broadcast along axis 1 (channels, or the
        features of a flat vector). The result is clamped to ``[lo, hi]``,
        whose bounds validation keeps far inside int64.
        """
        total: np.ndarray | int = 0
        for value, mult in terms:
            v = value.numpy().astype(object)
            shape = (1, -1) + (1,) * (v.ndim - 2)
            total = total + v * mult.astype(object).reshape(shape)
        assert isinstance(total, np.ndarray)
        if bias is not None:
            total = total + bias.astype(object).reshape((1, -1) + (1,) * (total.ndim - 2))
        total = total + rounding_term(shift)
        self._check(layer, register, total, r.product)
        shifted = total >> shift  # Python's >> on int is an arithmetic (floor) shift, as the contract says
        return torch.from_numpy(np.minimum(np.maximum(shifted, lo), hi).astype(np.int64))

    # ---- layer kinds

    def _synaptic(self, layer: SynapticLayer, x: torch.Tensor, trace: bool) -> tuple[torch.Tensor, LayerTrace | None]:
        r = self.ranges[layer.name]
        self._check(layer, "x", x, r.x)
        v, s = neuron_steps(x, layer.k, layer.s_bits, layer.timesteps)
        self._check(layer, "v", v, r.v)
        self._check(layer, "s", s, r.s)
        count = s.sum(dim=0)
        self._check(layer, "count", count, r.count)
        w = self._weights[layer.name]
        bias = torch.from_numpy(layer.bias)
        if isinstance(layer, LinearLayer):
            acc = count @ w.t() + bias
        else:
            acc = _conv2d_int(count, w, layer.stride, layer.padding) + bias.view(1, -1, 1, 1)
        self._check(layer, "acc", acc, r.acc)
        if layer.requant is None:
            out = acc
        else:
            rq = layer.requant
            shape = (1, -1) + (1,) * (acc.dim() - 2)
            if layer.name in self._wide:
                out = self._scale_wide(layer, "product", [(acc, rq.multiplier)], rq.bias, rq.shift, rq.lo, rq.hi, r)
            else:
                prod = acc * torch.from_numpy(rq.multiplier).view(shape) + torch.from_numpy(rq.bias).view(shape)
                self._check(layer, "product", prod + rounding_term(rq.shift), r.product)
                out = torch.clamp(shift_round(prod, rq.shift), rq.lo, rq.hi)
        self._check(layer, "out", out, r.out)
        lt = LayerTrace(layer.name, layer.op, x, out, v, s, acc) if trace else None
        return out, lt

    def _run_layer(self, layer: Layer, xs: list[torch.Tensor], trace: bool) -> tuple[torch.Tensor, LayerTrace | None]:
        x = xs[0]
        if isinstance(layer, SynapticLayer):
            return self._synaptic(layer, x, trace)
        r = self.ranges[layer.name]
        self._check(layer, "x", x, r.x)
        if isinstance(layer, (MaxPoolLayer, AvgPoolLayer)):
            out = pool(layer, x)
        elif isinstance(layer, FlattenLayer):
            out = x.reshape(x.shape[0], -1)
        elif isinstance(layer, AddLayer):
            b = xs[1]
            self._check(layer, "x_b", b, r.x_b)
            shape = (1, -1) + (1,) * (x.dim() - 2)
            if layer.name in self._wide:
                out = self._scale_wide(layer, "product", [(x, layer.mult_a), (b, layer.mult_b)], None, layer.shift,
                                       layer.lo, layer.hi, r)
            else:
                prod = x * torch.from_numpy(layer.mult_a).view(shape) + b * torch.from_numpy(layer.mult_b).view(shape)
                self._check(layer, "product", prod + rounding_term(layer.shift), r.product)
                out = torch.clamp(shift_round(prod, layer.shift), layer.lo, layer.hi)
        else:
            raise TypeError(f"golden model has no handler for {layer.op!r}")
        self._check(layer, "out", out, r.out)
        return out, (LayerTrace(layer.name, layer.op, x, out) if trace else None)

    # ---- public

    @torch.no_grad()
    def run(self, images: np.ndarray | torch.Tensor, trace: bool = False) -> GoldenResult:
        """Run a batch of integer inputs ``[N, *input.shape]``; ``trace`` keeps every layer's registers."""
        x = to_input_ints(images, self.manifest)
        values: dict[str, torch.Tensor] = {"input": x}
        traces: dict[str, LayerTrace] = {}
        for layer in self.manifest.layers:
            out, lt = self._run_layer(layer, [values[i] for i in layer.inputs], trace)
            values[layer.name] = out
            if lt is not None:
                traces[layer.name] = lt
        logits = values[self.manifest.layers[-1].name]
        return GoldenResult(logits=logits, classes=argmax_lowest(logits), trace=traces if trace else None)

    def run_batches(self, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> GoldenResult:
        """Run a large set in batches (no trace)."""
        parts = [self.run(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        logits = torch.cat([p.logits for p in parts]) if parts else torch.zeros((0, self.manifest.num_classes), dtype=torch.int64)
        return GoldenResult(logits=logits, classes=argmax_lowest(logits) if len(logits) else torch.zeros(0, dtype=torch.int64))
