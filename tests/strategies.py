"""Hypothesis strategies: random legal manifests with every op, odd shapes and limit values.

:func:`manifests` draws a network as a chain of blocks (conv2d with any kernel,
stride and padding, max/sum pooling, residual adds, flatten, linear) ending in
a linear output layer. Bit widths, timesteps, thresholds and the requantizer
constants are drawn either from the typical ranges a trained network has or at
the limits the manifest accepts (multipliers near 2**31, biases near 2**47,
clamp bounds near 2**40, shifts up to 62), so that the wide-arithmetic paths
of the golden model are exercised as well as the int64 ones.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from bitspike import manifest as M
from bitspike.errors import ManifestError

BIAS_MAX = M.BIAS_LIMIT - 1
MULT_MAX = M.MULT_LIMIT - 1
CURRENT_MAX = M.CURRENT_LIMIT

#: bit widths and timesteps: the fuzzed range, plus the manifest's limits now and then
BITS = st.one_of(st.integers(1, 8), st.sampled_from([M.W_BITS_RANGE[1], 12]))
S_BITS = st.one_of(st.integers(1, 8), st.sampled_from([M.S_BITS_RANGE[1], 12]))
TIMESTEPS = st.one_of(st.integers(1, 8), st.sampled_from([M.TIMESTEPS_RANGE[1]]))
K = st.one_of(st.integers(0, 8), st.sampled_from([M.K_RANGE[1], 20]))


def _ints(rng: np.random.Generator, mode: str, lo: int, hi: int, shape) -> np.ndarray:
    """An int64 array in [lo, hi]: random, all at one limit, alternating limits, or small values."""
    if mode == "max":
        return np.full(shape, hi, np.int64)
    if mode == "min":
        return np.full(shape, lo, np.int64)
    if mode == "edges":
        return rng.choice(np.array([lo, hi, 0], np.int64), size=shape)
    if mode == "small":
        return rng.integers(max(lo, -8), min(hi, 8) + 1, size=shape, dtype=np.int64)
    return rng.integers(lo, hi, size=shape, dtype=np.int64, endpoint=True)


MODES = st.sampled_from(["random", "random", "random", "small", "max", "min", "edges"])


class _Net:
    """Layers built so far, with their output shapes."""

    def __init__(self, draw, rng: np.random.Generator, input_spec: M.InputSpec):
        self.draw, self.rng = draw, rng
        self.input = input_spec
        self.layers: list[M.Layer] = []
        self.shapes: dict[str, tuple[int, ...]] = {"input": input_spec.shape}
        self.last = "input"

    def name(self, prefix: str) -> str:
        return f"{prefix}{len(self.layers)}"

    def push(self, layer: M.Layer) -> str:
        self.layers.append(layer)
        self.shapes[layer.name] = layer.out_shape
        self.last = layer.name
        return layer.name

    # ---- constants

    def clamp(self) -> tuple[int, int]:
        draw = self.draw
        kind = draw(st.sampled_from(["relu", "signed", "limit"]))
        if kind == "relu":
            return 0, draw(st.integers(0, 2**12))
        if kind == "signed":
            hi = draw(st.integers(0, 2**12))
            return -draw(st.integers(0, 2**12)), hi
        lo = draw(st.sampled_from([-CURRENT_MAX, 0, -1]))
        return lo, draw(st.sampled_from([CURRENT_MAX, CURRENT_MAX - 1, max(lo, 1)]))

    def requant(self, out: int, acc_scale: int, extreme: bool) -> M.Requant:
        """Either typical constants (the product lands around the clamp range) or limit values."""
        draw, rng = self.draw, self.rng
        lo, hi = self.clamp()
        if extreme:
            mult = _ints(rng, draw(MODES), -MULT_MAX, MULT_MAX, (out,))
            bias = _ints(rng, draw(MODES), -BIAS_MAX, BIAS_MAX, (out,))
            shift = draw(st.one_of(st.integers(0, 62), st.sampled_from([0, 62])))
        else:
            mult = rng.integers(-(2**8), 2**8, size=out, dtype=np.int64, endpoint=True)
            span = max(1, hi - lo, abs(lo), abs(hi))
            shift = max(0, min(62, (acc_scale * 2**8 // span).bit_length() + draw(st.integers(-2, 2))))
            b = max(1, span << shift >> 3)
            bias = rng.integers(-b, b, size=out, dtype=np.int64, endpoint=True)
        return M.Requant(multiplier=mult, bias=bias, shift=shift, lo=lo, hi=hi)

    # ---- layers

    def synaptic(self, op: str, src: str, out: int, last: bool = False, **conv) -> str:
        draw, rng = self.draw, self.rng
        w_bits, s_bits, timesteps, k = draw(BITS), draw(S_BITS), draw(TIMESTEPS), draw(K)
        lim = M.weight_limit(w_bits)
        in_shape = self.shapes[src]
        wshape = (out, in_shape[0]) if op == "linear" else (out, in_shape[0], *conv["kernel"])
        if w_bits == 1:
            weight = rng.choice(np.array([-1, 1], np.int64), size=wshape)
        else:
            weight = _ints(rng, draw(MODES), -lim, lim, wshape)
        # extreme layers: biases and requantizer constants at the limits (products up to ~95 bits)
        extreme = draw(st.booleans())
        if extreme:
            bias = _ints(rng, draw(st.sampled_from(["random", "max", "min", "edges", "small"])), -BIAS_MAX, BIAS_MAX, (out,))
        else:
            bias = rng.integers(-(2**10), 2**10, size=out, dtype=np.int64, endpoint=True)
        fan_in = math.prod(wshape[1:])
        acc_scale = max(1, fan_in * lim * timesteps * (2**s_bits - 1) // 4)
        requant = None if last else self.requant(out, acc_scale, extreme)
        name = self.name("fc" if op == "linear" else "conv")
        common = dict(name=name, inputs=(src,), in_shape=in_shape, w_bits=w_bits, s_bits=s_bits, timesteps=timesteps,
                      k=k, weight=weight, bias=bias, requant=requant)
        if op == "linear":
            return self.push(M.LinearLayer(out_shape=(out,), **common))
        c, h, w = in_shape
        (kh, kw), (sh, sw), (ph, pw) = conv["kernel"], conv["stride"], conv["padding"]
        out_shape = (out, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
        return self.push(M.Conv2dLayer(out_shape=out_shape, kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw), **common))

    def conv(self, src: str | None = None, same: bool = False, out: int | None = None) -> str | None:
        draw = self.draw
        src = src or self.last
        c, h, w = self.shapes[src]
        if same:  # shape-preserving: odd kernel, stride 1, padding k // 2
            kh, kw = draw(st.sampled_from([1, 3])), draw(st.sampled_from([1, 3]))
            kernel, stride, padding = (kh, kw), (1, 1), (kh // 2, kw // 2)
            out = c
        else:
            kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
            padding = (draw(st.integers(0, kernel[0] - 1)), draw(st.integers(0, kernel[1] - 1)))
            stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
            if h + 2 * padding[0] < kernel[0] or w + 2 * padding[1] < kernel[1]:
                return None
            out = out or draw(st.integers(1, 4))
        return self.synaptic("conv2d", src, out, kernel=kernel, stride=stride, padding=padding)

    def pool(self, overlapping: bool = True) -> str | None:
        draw = self.draw
        c, h, w = self.shapes[self.last]
        kernel = (draw(st.integers(1, min(3, h))), draw(st.integers(1, min(3, w))))
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if overlapping else kernel
        cls = draw(st.sampled_from([M.MaxPoolLayer, M.AvgPoolLayer]))
        out_shape = (c, (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1)
        return self.push(cls(name=self.name("pool"), inputs=(self.last,), in_shape=(c, h, w), out_shape=out_shape,
                             kernel=kernel, stride=stride))

    def add(self, a: str, b: str) -> str:
        draw, rng = self.draw, self.rng
        shape = self.shapes[a]
        c = shape[0]
        lo, hi = self.clamp()
        if draw(st.booleans()):
            ma = _ints(rng, draw(MODES), -MULT_MAX, MULT_MAX, (c,))
            mb = _ints(rng, draw(MODES), -MULT_MAX, MULT_MAX, (c,))
            shift = draw(st.one_of(st.integers(0, 62), st.sampled_from([0, 62])))
        else:
            ma = rng.integers(1, 2**6, size=c, dtype=np.int64)
            mb = rng.integers(1, 2**6, size=c, dtype=np.int64)
            shift = draw(st.integers(0, 8))
        return self.push(M.AddLayer(name=self.name("add"), inputs=(a, b), in_shape=shape, out_shape=shape,
                                    mult_a=ma, mult_b=mb, shift=shift, lo=lo, hi=hi))

    def flatten(self) -> str:
        shape = self.shapes[self.last]
        return self.push(M.FlattenLayer(name=self.name("flat"), inputs=(self.last,), in_shape=shape,
                                        out_shape=(math.prod(shape),)))


@st.composite
def manifests(draw, max_blocks: int = 3, generator: bool = False) -> M.Manifest:
    """A random legal manifest (see the module docstring). Rejects the rare draw that validation refuses.

    ``generator``: only what ``bitspike gen`` builds today (pooling windows do not overlap: stride = kernel).
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bits = draw(st.one_of(st.integers(1, 8), st.sampled_from([12, M.INPUT_BITS_RANGE[1]])))
    if draw(st.booleans()):
        shape: tuple[int, ...] = (draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    else:
        shape = (draw(st.integers(1, 12)),)
    net = _Net(draw, rng, M.InputSpec(shape=shape, bits=bits, scale=1.0 / (2**bits - 1 or 1)))
    if len(shape) == 3:
        net.conv()  # a first synaptic layer always (as the generator's networks have)
        for _ in range(draw(st.integers(0, max_blocks))):
            if len(net.shapes[net.last]) != 3:
                break
            block = draw(st.sampled_from(["conv", "pool", "residual", "branches"]))
            if block == "conv":
                net.conv()
            elif block == "pool":
                net.pool(overlapping=not generator)
            elif block == "residual":  # y = add(conv(x), x)
                skip = net.last
                net.add(net.conv(same=True), skip)
            else:  # two shape-preserving branches from one source, then their sum
                src = net.last
                left = net.conv(src=src, same=True)
                right = net.conv(src=src, same=True)
                net.add(left, right)
        net.flatten()
    else:
        net.synaptic("linear", "input", draw(st.integers(1, 6)))
        if draw(st.booleans()):  # a residual add on a flat vector: each feature is a channel
            skip = net.last
            net.add(net.synaptic("linear", skip, net.shapes[skip][0]), skip)
    if draw(st.booleans()):
        net.synaptic("linear", net.last, draw(st.integers(1, 6)))
    net.synaptic("linear", net.last, draw(st.integers(1, 5)), last=True)
    try:
        return M.Manifest.build("fuzz", net.input, net.layers, info={"generator": "tests/strategies.py"})
    except ManifestError as exc:
        # only the register-width rule may refuse what this strategy builds (chained sum pools)
        assert "register" in str(exc), exc
        assume(False)
        raise


def inputs_for(manifest: M.Manifest, draw, n: int) -> np.ndarray:
    """``n`` input batches for ``manifest``: all zeros, all at the top, then random pixels."""
    top = 2**manifest.input.bits - 1
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (n,) + tuple(manifest.input.shape)
    x = rng.integers(0, top, size=shape, dtype=np.int64, endpoint=True)
    x[0] = 0
    if n > 1:
        x[1] = top
    return x
