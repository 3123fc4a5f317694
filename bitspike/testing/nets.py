"""Random but well-formed manifests, for tests of the golden model, the generator and the simulators.

:func:`random_mlp` and :func:`random_cnn` draw a whole network from a seed;
:class:`NetBuilder` puts one together layer by layer, for tests that need a
particular shape. The requantization constants are chosen from the interval
analysis so that currents actually use the next neuron's range (neither stuck
at zero nor always saturated), which makes bit-exactness tests meaningful.
The same seed and arguments always give the same manifest, byte for byte.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from bitspike.analysis import Range, analyse_layer
from bitspike.manifest import (
    AddLayer,
    AvgPoolLayer,
    Conv2dLayer,
    FlattenLayer,
    InputSpec,
    Layer,
    LinearLayer,
    Manifest,
    MaxPoolLayer,
    Requant,
    weight_limit,
)

__all__ = ["NetBuilder", "random_mlp", "random_cnn", "random_weights", "requant_for", "fashion_cnn_shaped"]

#: the manifests' ``info["generator"]``: the module's name before it moved here (the manifests' digests, and
#: the hardware digests recorded in tests/data/hw_digests.json, include it)
GENERATOR = "bitspike.random_net"


def random_weights(rng: np.random.Generator, shape: tuple[int, ...], w_bits: int) -> np.ndarray:
    """Integer weights of ``shape``, uniform over the ``w_bits``-bit range (±1 for 1-bit weights)."""
    lim = weight_limit(w_bits)
    if w_bits == 1:
        return rng.choice(np.array([-1, 1], dtype=np.int64), size=shape)
    return rng.integers(-lim, lim + 1, size=shape, dtype=np.int64)


def requant_for(
    rng: np.random.Generator, acc: Range, out_channels: int, target_hi: int, signed_out: bool = False
) -> Requant:
    """Requantization constants mapping a typical spread of accumulator range ``acc`` onto [0, target_hi]
    (or ±target_hi with ``signed_out``), with random per-channel multipliers and biases."""
    spread = max(1, max(abs(acc.lo), abs(acc.hi)) // 6)
    mult = rng.integers(2**7, 2**9, size=out_channels, dtype=np.int64)
    shift = max(0, int(round(math.log2(spread * 2**8 / max(1, target_hi)))))
    bias_scale = (target_hi << shift) // 8
    bias = rng.integers(-bias_scale, bias_scale + 1, size=out_channels, dtype=np.int64)
    lo = -target_hi if signed_out else 0
    return Requant(multiplier=mult, bias=bias, shift=shift, lo=lo, hi=target_hi)


class NetBuilder:
    """Build a valid manifest layer by layer; each method appends a layer after ``last`` and returns its name.

    Parameters
    ----------
    rng
        Draws weights, biases and requantization constants.
    input_spec
        The network's input.

    Attributes
    ----------
    layers
        The layers so far, in order.
    shapes, ranges
        Output shape and analysed output :class:`~bitspike.analysis.Range` of every layer (and ``"input"``).
    last
        The name of the layer the next one reads by default.

    Examples
    --------
    >>> b = NetBuilder(np.random.default_rng(0), InputSpec(shape=(16,), bits=8, scale=1 / 255))
    >>> b.synaptic("linear", 12, 8, 8, 1, 0, next_k=3, next_s_bits=2)
    'line0'
    >>> b.synaptic("linear", 10, 2, 2, 1, 3, None, None)
    'line1'
    >>> b.manifest("tiny").num_classes
    10
    """

    def __init__(self, rng: np.random.Generator, input_spec: InputSpec):
        self.rng = rng
        self.input = input_spec
        self.layers: list[Layer] = []
        self.shapes: dict[str, tuple[int, ...]] = {"input": input_spec.shape}
        self.ranges: dict[str, Range] = {"input": Range(0, 2**input_spec.bits - 1)}
        self.last = "input"

    def append(self, layer: Layer) -> str:
        """Append a layer built by the caller (any op, e.g. a pool of unusual kernel); returns its name."""
        r = analyse_layer(layer, [self.ranges[i] for i in layer.inputs])
        self.layers.append(layer)
        self.shapes[layer.name] = layer.out_shape
        self.ranges[layer.name] = r.out
        self.last = layer.name
        return layer.name

    def synaptic(
        self,
        kind: str,
        out: int,
        w_bits: int,
        s_bits: int,
        timesteps: int,
        k: int,
        next_k: int | None,
        next_s_bits: int | None,
        src: str | None = None,
        kernel: int = 3,
        stride: int = 1,
        padding: int = 1,
        signed_out: bool = False,
        groups: int = 1,
    ) -> str:
        """A ``kind`` (``"linear"`` or ``"conv2d"``) layer of ``out`` neurons or channels reading ``src``.

        ``w_bits``, ``s_bits``, ``timesteps`` and ``k`` are its own; ``next_k`` and ``next_s_bits``, the
        reading layer's threshold exponent and spike bits, size its requantizer (``None``: the last layer,
        whose accumulators are the logits). ``kernel``, ``stride`` and ``padding`` apply to ``conv2d``;
        ``signed_out`` lets the output go negative (the residual branch before an ``add``); ``groups``
        makes a ``conv2d`` grouped (weight ``[out, in / groups, k, k]``).
        """
        src = src or self.last
        in_shape = self.shapes[src]
        name = f"{kind[:4]}{sum(1 for l in self.layers if l.is_synaptic)}"
        if kind == "linear":
            weight = random_weights(self.rng, (out, in_shape[0]), w_bits)
            extra: dict = {}
            out_shape: tuple[int, ...] = (out,)
        else:
            c, h, w = in_shape
            weight = random_weights(self.rng, (out, c // groups, kernel, kernel), w_bits)
            extra = dict(kernel=(kernel, kernel), stride=(stride, stride), padding=(padding, padding))
            if groups != 1:
                extra["groups"] = groups
            out_shape = (out, (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1)
        bias = self.rng.integers(-(2 ** (w_bits + s_bits)), 2 ** (w_bits + s_bits) + 1, size=out, dtype=np.int64)
        cls = LinearLayer if kind == "linear" else Conv2dLayer
        probe = cls(name=name, inputs=(src,), in_shape=in_shape, out_shape=out_shape, w_bits=w_bits, s_bits=s_bits,
                    timesteps=timesteps, k=k, weight=weight, bias=bias, requant=None, **extra)
        requant = None
        if next_k is not None:
            acc = analyse_layer(probe, [self.ranges[src]]).acc
            assert acc is not None
            target_hi = (2 ** (next_s_bits or 1)) << next_k
            requant = requant_for(self.rng, acc, out, target_hi, signed_out)
        layer = cls(name=name, inputs=(src,), in_shape=in_shape, out_shape=out_shape, w_bits=w_bits, s_bits=s_bits,
                    timesteps=timesteps, k=k, weight=weight, bias=bias, requant=requant, **extra)
        return self.append(layer)

    def pool(self, kind: str, size: int = 2) -> str:
        """A ``"maxpool"`` or ``"avgpool"`` of ``size``×``size`` windows, stride ``size``."""
        c, h, w = self.shapes[self.last]
        cls = MaxPoolLayer if kind == "maxpool" else AvgPoolLayer
        name = f"{kind[:3]}pool{len(self.layers)}"
        return self.append(cls(name=name, inputs=(self.last,), in_shape=(c, h, w), out_shape=(c, (h - size) // size + 1, (w - size) // size + 1),
                             kernel=(size, size), stride=(size, size)))

    def flatten(self) -> str:
        """Flatten ``[C, H, W]`` to ``[C·H·W]``."""
        shape = self.shapes[self.last]
        return self.append(FlattenLayer(name=f"flatten{len(self.layers)}", inputs=(self.last,), in_shape=shape, out_shape=(math.prod(shape),)))

    def add(self, a: str, b: str, hi: int) -> str:
        """The residual sum of layers ``a`` and ``b`` (random multipliers), clamped to [0, ``hi``]."""
        shape = self.shapes[a]
        c = shape[0]
        ma = self.rng.integers(1, 2**6, size=c, dtype=np.int64)
        mb = self.rng.integers(1, 2**6, size=c, dtype=np.int64)
        return self.append(AddLayer(name=f"add{len(self.layers)}", inputs=(a, b), in_shape=shape, out_shape=shape,
                                  mult_a=ma, mult_b=mb, shift=6, lo=0, hi=hi))

    def manifest(self, name: str) -> Manifest:
        """The validated manifest of the layers so far."""
        return Manifest.build(name, self.input, self.layers, info={"generator": GENERATOR})


def _bits(rng: np.random.Generator, choices: Sequence[int]) -> int:
    return int(rng.choice(list(choices)))


def random_mlp(
    seed: int,
    sizes: Sequence[int] = (64, 32, 10),
    w_bits: Sequence[int] = range(1, 9),
    s_bits: Sequence[int] = range(1, 9),
    timesteps: Sequence[int] = range(1, 5),
    first_layer_8bit: bool = True,
) -> Manifest:
    """A random MLP ``sizes[0] → … → sizes[-1]`` with random per-layer bits (first layer 8/8/1 by default)."""
    rng = np.random.default_rng(seed)
    b = NetBuilder(rng, InputSpec(shape=(int(sizes[0]),), bits=8, scale=1 / 255))
    n = len(sizes) - 1
    plan = []
    for i in range(n):
        if i == 0 and first_layer_8bit:
            plan.append((8, 8, 1, 0))
        else:
            plan.append((_bits(rng, w_bits), _bits(rng, s_bits), _bits(rng, timesteps), int(rng.integers(1, 7))))
    for i in range(n):
        wb, sb, t, k = plan[i]
        nxt = plan[i + 1] if i + 1 < n else None
        b.synaptic("linear", int(sizes[i + 1]), wb, sb, t, k, nxt[3] if nxt else None, nxt[1] if nxt else None)
    return b.manifest(f"random-mlp-{seed}")


def random_cnn(
    seed: int,
    image: tuple[int, int, int] = (1, 8, 8),
    channels: Sequence[int] = (4, 6),
    classes: int = 10,
    w_bits: Sequence[int] = range(1, 9),
    s_bits: Sequence[int] = range(1, 9),
    timesteps: Sequence[int] = range(1, 5),
    pool: str = "maxpool",
    residual: bool = False,
) -> Manifest:
    """A random CNN: (conv → pool) per entry of ``channels``, then flatten → linear.

    With ``residual`` a shape-preserving conv and an ``add`` follow the first conv.
    """
    rng = np.random.default_rng(seed)
    b = NetBuilder(rng, InputSpec(shape=tuple(int(v) for v in image), bits=8, scale=1 / 255))
    specs = [(8, 8, 1, 0)] + [
        (_bits(rng, w_bits), _bits(rng, s_bits), _bits(rng, timesteps), int(rng.integers(1, 7)))
        for _ in range(len(channels) + (1 if residual else 0))
    ]
    # layer order of synaptic layers: conv0, [res conv], conv1..., linear
    j = 0
    for i, ch in enumerate(channels):
        wb, sb, t, k = specs[j]
        nb, ns, nt, nk = specs[j + 1]
        b.synaptic("conv2d", int(ch), wb, sb, t, k, nk, ns)
        j += 1
        if residual and i == 0:
            skip = b.last
            wb, sb, t, k = specs[j]
            nb, ns, nt, nk = specs[j + 1]
            hi = (2**ns) << nk
            conv = b.synaptic("conv2d", int(ch), wb, sb, t, k, k, sb, signed_out=True)
            b.add(conv, skip, hi)
            j += 1
        b.pool(pool)
    b.flatten()
    wb, sb, t, k = specs[j]
    b.synaptic("linear", classes, wb, sb, t, k, None, None)
    return b.manifest(f"random-cnn-{seed}")


def fashion_cnn_shaped(seed: int) -> Manifest:
    """The benchmarks' Fashion ``cnn`` shape (conv16-pool-conv32-pool-fc on 1×28×28), random weights:
    8/8/1 in the first layer, 2/2/1 after it."""
    b = NetBuilder(np.random.default_rng(seed), InputSpec(shape=(1, 28, 28), bits=8, scale=1 / 255))
    b.synaptic("conv2d", 16, 8, 8, 1, 0, 2, 2)
    b.pool("maxpool")
    b.synaptic("conv2d", 32, 2, 2, 1, 2, 2, 2)
    b.pool("maxpool")
    b.flatten()
    b.synaptic("linear", 10, 2, 2, 1, 2, None, None)
    return b.manifest(f"fashion-cnn-shaped-{seed}")
