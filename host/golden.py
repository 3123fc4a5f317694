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
compares against. Layers with a time-stepped neuron (a ``neuron`` object,
docs/SEMANTICS.md §4.6) run :func:`bitspike.host.stepped.neuron_run`, the
one implementation of that neuron: the op's forward rule asks this model for
it (:meth:`GoldenModel.stepped_neuron`). A stepped layer's output changes at
every step: the model keeps it as ``[T, N, ...]`` and runs a layer without a
neuron (pooling, flatten, add) on each step alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from bitspike.analysis import LayerRanges, Range, analyse, needs_wide_product
from bitspike.errors import RangeError
from bitspike.manifest import Layer, Manifest, rounding_term
from bitspike.ops.base import Ctx, op_of
from bitspike.ops.kernels import LayerTrace, neuron_steps, shift_round
from bitspike.ops.conv2d import conv2d_int as _conv2d_int  # noqa: F401  (kept for callers of this module)
from bitspike.ops.pooling import pool
from bitspike.host.stepped import neuron_run

__all__ = ["neuron_steps", "GoldenModel", "GoldenResult", "LayerTrace", "to_input_ints", "pool", "shift_round"]


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
        self._cache: dict[str, torch.Tensor] = {}
        # per-step values (T) or constant ones (None), as validation derived them
        self.steps: dict[str, int | None] = {"input": None}
        for layer in manifest.layers:
            self.steps[layer.name] = layer.steps_out([self.steps[i] for i in layer.inputs], Ctx(layer.name))

    def __repr__(self) -> str:
        return f"GoldenModel({self.manifest!r}, check_ranges={self.check_ranges})"

    # ---- services for the ops' forward rules (bitspike.ops.base.Op.forward)

    def cached(self, key: str, make) -> torch.Tensor:
        """A tensor built once per model (an op's weights as int64), by ``make()`` on first use."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def is_wide(self, layer: Layer) -> bool:
        """Whether the layer's product register must be computed in Python integers (see the module docstring)."""
        return layer.name in self._wide

    def check(self, layer: Layer, register: str, value: torch.Tensor | np.ndarray, bound: Range | None) -> None:
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

    def scale_wide(self, layer: Layer, register: str, terms: list[tuple[torch.Tensor, np.ndarray]],
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
        self.check(layer, register, total, r.product)
        shifted = total >> shift  # Python's >> on int is an arithmetic (floor) shift, as the contract says
        return torch.from_numpy(np.minimum(np.maximum(shifted, lo), hi).astype(np.int64))

    def stepped_neuron(self, layer: Layer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The membrane and spikes ``[T, N, ...]`` of a layer's time-stepped neuron (§4.6).

        ``x`` is ``[T, N, ...]`` when the layer's input changes per step, else ``[N, ...]``: the same current
        at every step (a stepped layer after the network input or a squeezed layer, or a squeezed layer).
        The membrane returned is each step's, after its update (what the neuron compares with θ).
        """
        neuron, T = layer.neuron, layer.timesteps
        if neuron.mode == "stepped" and self.steps[layer.inputs[0]] is None:
            x = x.unsqueeze(0).expand(T, *x.shape)
        s, v = neuron_run(x, neuron, T, membrane=True)
        return v, s

    def run_layer(self, layer: Layer, xs: list[torch.Tensor], trace: bool = False) -> tuple[torch.Tensor, LayerTrace | None]:
        """Run one layer on its input currents ``xs`` (int64, batch first): its op's forward rule.

        Inputs that change per step are ``[T, N, ...]``; a layer without a neuron runs on each step alike.
        Returns the output current (or logits) and, with ``trace``, the layer's registers.
        """
        steps = [self.steps.get(i) for i in layer.inputs]
        if layer.is_synaptic or steps[0] is None:
            return op_of(layer).forward(self, layer, xs, trace)
        out, lt = op_of(layer).forward(self, layer, [x.flatten(0, 1) for x in xs], trace)
        return out.unflatten(0, (steps[0], -1)), lt

    def _synaptic(self, layer: Layer, x: torch.Tensor, trace: bool) -> tuple[torch.Tensor, LayerTrace | None]:
        # the one-input form some block tests call; prefer run_layer
        return self.run_layer(layer, [x], trace)

    # ---- public

    @torch.no_grad()
    def run(self, images: np.ndarray | torch.Tensor, trace: bool = False) -> GoldenResult:
        """Run a batch of integer inputs ``[N, *input.shape]``; ``trace`` keeps every layer's registers."""
        x = to_input_ints(images, self.manifest)
        values: dict[str, torch.Tensor] = {"input": x}
        traces: dict[str, LayerTrace] = {}
        for layer in self.manifest.layers:
            out, lt = self.run_layer(layer, [values[i] for i in layer.inputs], trace)
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
