"""An independent plain-integer reference of the contract (docs/SEMANTICS.md), for the fuzz tests.

Written from the contract's text, not from the golden model: Python integers
(unbounded, so nothing can wrap), explicit loops, one sample at a time, and
none of :mod:`bitspike.host.golden` or :mod:`bitspike.analysis`. It reads only
the manifest's fields and tensors. It is slow, for clarity; the fuzz tests keep
their networks small.

Values are nested Python lists: a flat tensor is ``[F]``, a feature map is
``[C][H][W]``.
"""

from __future__ import annotations

from typing import Any

from bitspike.manifest import Manifest


def _ints(array) -> Any:
    """A numpy integer array as nested lists of Python ints."""
    return [int(v) for v in array] if array.ndim == 1 else [_ints(a) for a in array]


def _map(fn, value):
    """Apply ``fn`` to every integer of a nested list."""
    return [_map(fn, v) for v in value] if isinstance(value, list) else fn(value)


def _flat(value) -> list[int]:
    """C-major flattening (the last index varies fastest)."""
    if not isinstance(value, list):
        return [value]
    out: list[int] = []
    for v in value:
        out.extend(_flat(v))
    return out


def neuron(x: int, k: int, s_bits: int, timesteps: int) -> tuple[list[int], list[int]]:
    """Membranes v_0 … v_T and spikes s_0 … s_(T−1) of one neuron with constant current ``x``.

    s_t = clip(floor((2·v_t + θ) / (2·θ)), 0, 2**B_s − 1); v_(t+1) = v_t − s_t·θ + x; v_0 = x.
    """
    theta = 2**k
    q = 2**s_bits - 1
    v = x
    vs, ss = [v], []
    for _ in range(timesteps):
        s = (2 * v + theta) // (2 * theta)  # Python // is floor division, as the contract says
        s = max(0, min(q, s))
        v = v - s * theta + x
        vs.append(v)
        ss.append(s)
    return vs, ss


def rescale(value: int, shift: int, lo: int, hi: int) -> int:
    """clamp(floor((value + rnd) / 2**shift), lo, hi) with rnd = 2**(shift − 1), or 0 when shift = 0."""
    rnd = 2 ** (shift - 1) if shift > 0 else 0
    return max(lo, min(hi, (value + rnd) // 2**shift))


def _spikes(x, layer) -> tuple[Any, Any]:
    """Run the neuron on every element: returns (v per element, s per element) as nested lists of lists."""
    both = _map(lambda xi: neuron(xi, layer.k, layer.s_bits, layer.timesteps), x)
    return _map_pairs(lambda p: p[0], both), _map_pairs(lambda p: p[1], both)


def _map_pairs(fn, value):
    """Like :func:`_map` with (v, s) tuples as the leaves."""
    return [_map_pairs(fn, v) for v in value] if isinstance(value, list) else fn(value)


def _linear(layer, spikes: list[list[int]]) -> list[int]:
    w, b = _ints(layer.weight), _ints(layer.bias)
    acc = []
    for o in range(len(w)):
        total = b[o]
        for t in range(layer.timesteps):  # Σ_t Σ_i W[o,i]·s_t[i], literally (not via spike counts)
            for i in range(len(spikes)):
                total += w[o][i] * spikes[i][t]
        acc.append(total)
    return acc


def _conv(layer, spikes) -> list[list[list[int]]]:
    w, b = _ints(layer.weight), _ints(layer.bias)
    c_in, h, wd = len(spikes), len(spikes[0]), len(spikes[0][0])
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    groups = getattr(layer, "groups", 1)
    c_g = c_in // groups  # grouped: output o reads input channels q·c_g … of its group q = o // (out / groups)
    out = []
    for o in range(len(w)):
        q = o // (len(w) // groups)
        plane = []
        for y in range(ho):
            row = []
            for xx in range(wo):
                total = b[o]
                for cl in range(c_g):
                    c = q * c_g + cl
                    for i in range(kh):
                        for j in range(kw):
                            yy, xj = y * sh + i - ph, xx * sw + j - pw
                            if 0 <= yy < h and 0 <= xj < wd:  # outside: a zero spike (zero padding)
                                for t in range(layer.timesteps):
                                    total += w[o][cl][i][j] * spikes[c][yy][xj][t]
                row.append(total)
            plane.append(row)
        out.append(plane)
    return out


def _pool(layer, x, combine) -> list[list[list[int]]]:
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    out = []
    for plane in x:
        h, wd = len(plane), len(plane[0])
        ho, wo = (h - kh) // sh + 1, (wd - kw) // sw + 1  # partial windows at the edge are dropped
        out.append([[combine([plane[y * sh + i][xx * sw + j] for i in range(kh) for j in range(kw)])
                     for xx in range(wo)] for y in range(ho)])
    return out


def run_reference(manifest: Manifest, image) -> dict[str, dict[str, Any]]:
    """Every layer's registers for one input ``image`` (nested lists or a numpy array of the input shape).

    Returns ``{layer name: {"x", "out", and for synaptic layers "v", "s", "acc"}}``;
    ``v``/``s`` hold, per element in C-major order, the list over time.
    """
    import numpy as np

    values: dict[str, Any] = {"input": _ints(np.asarray(image))}  # the first current *is* the input integer
    result: dict[str, dict[str, Any]] = {}
    for layer in manifest.layers:
        x = values[layer.inputs[0]]
        rec: dict[str, Any] = {"x": x}
        if layer.op in ("linear", "conv2d"):
            vs, ss = _spikes(x, layer)
            rec["v"], rec["s"] = vs, ss
            acc = _linear(layer, ss) if layer.op == "linear" else _conv(layer, ss)
            rec["acc"] = acc
            rq = layer.requant
            if rq is None:
                out = acc
            else:
                m, bias = _ints(rq.multiplier), _ints(rq.bias)
                if layer.op == "linear":
                    out = [rescale(a * m[o] + bias[o], rq.shift, rq.lo, rq.hi) for o, a in enumerate(acc)]
                else:
                    out = [_map(lambda a, o=o: rescale(a * m[o] + bias[o], rq.shift, rq.lo, rq.hi), acc[o])
                           for o in range(len(acc))]
        elif layer.op == "maxpool":
            out = _pool(layer, x, max)
        elif layer.op == "avgpool":
            out = _pool(layer, x, sum)  # the window sum: the 1/n lives in the consumer's unit
        elif layer.op == "flatten":
            out = _flat(x)
        elif layer.op == "add":
            y = values[layer.inputs[1]]
            ma, mb = _ints(layer.mult_a), _ints(layer.mult_b)
            out = []
            for c in range(len(x)):  # per channel; on a flat vector each feature is a channel
                out.append(_map(lambda pair, c=c: rescale(pair[0] * ma[c] + pair[1] * mb[c], layer.shift, layer.lo, layer.hi),
                                _zip(x[c], y[c])))
        else:
            raise TypeError(f"no reference for op {layer.op!r}")
        rec["out"] = out
        values[layer.name] = out
        result[layer.name] = rec
    return result


def _zip(a, b):
    """Pair up two nested lists of the same shape, element by element (leaves become (a, b) tuples)."""
    if isinstance(a, list):
        return [_zip(u, v) for u, v in zip(a, b)]
    return (a, b)


def argmax_lowest(logits: list[int]) -> int:
    """The class: the index of the largest logit, the lowest such index on a tie."""
    best = max(logits)
    return logits.index(best)
