"""Weight and constant memories packed at their bit width (memory bits ≈ params · B_w).

One word of a weight memory holds the ``pes × lanes`` weights that the PE
array uses in one clock, each ``w_bits`` wide: no rounding up to bytes.
B_w = 1 weights (±1) are stored as one bit: 1 → +1, 0 → −1.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pack_weights", "unpack_word", "encode_weight", "WeightLayout"]


def encode_weight(value: int, w_bits: int) -> int:
    """The ``w_bits``-bit code of one weight (two's complement; one bit: +1 → 1, −1 → 0)."""
    if w_bits == 1:
        if value not in (-1, 1):
            raise ValueError(f"a 1-bit weight must be -1 or +1, not {value}")
        return 1 if value > 0 else 0
    lim = (1 << (w_bits - 1)) - 1
    if not -lim <= value <= lim:
        raise ValueError(f"weight {value} does not fit {w_bits} bits (−{lim} … {lim})")
    return value & ((1 << w_bits) - 1)


class WeightLayout:
    """How a ``[out, in, kh, kw]`` (or ``[out, in]``) weight tensor folds onto ``pes × lanes`` PEs.

    Lanes run over input channels. Word ``(g·taps + t)·channel_words + j``
    (``t = ky·kw + kx``) holds, at bit offset ``(p·lanes + l)·w_bits``, the
    weight of output ``g·pes + p``, input channel ``j·lanes + l`` and kernel tap
    ``t`` (0 past the edges; for one-bit weights the padding code is 0 and the
    engine feeds those lanes a zero spike count).
    """

    def __init__(self, out_features: int, in_features: int, pes: int, lanes: int, w_bits: int, taps: int = 1):
        for name, value in (("out_features", out_features), ("in_features", in_features), ("pes", pes),
                            ("lanes", lanes), ("w_bits", w_bits), ("taps", taps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"WeightLayout {name} must be a positive integer, not {value!r}")
        self.out_features, self.in_features = out_features, in_features
        self.pes, self.lanes, self.w_bits, self.taps = pes, lanes, w_bits, taps
        self.groups = -(-out_features // pes)
        self.channel_words = -(-in_features // lanes)
        self.words_per_group = self.taps * self.channel_words
        self.depth = self.groups * self.words_per_group
        self.word_bits = pes * lanes * w_bits

    @property
    def memory_bits(self) -> int:
        return self.depth * self.word_bits

    def __repr__(self) -> str:
        return (f"WeightLayout({self.out_features}, {self.in_features}, pes={self.pes}, lanes={self.lanes}, "
                f"w_bits={self.w_bits}, taps={self.taps})")


def pack_weights(weight: np.ndarray, layout: WeightLayout) -> list[int]:
    """The memory words (Python ints) of a ``[out, in]`` or ``[out, in, kh, kw]`` integer weight tensor."""
    weight = np.asarray(weight, dtype=np.int64)
    if weight.ndim == 2:
        weight = weight[:, :, None, None]
    o_n, c_n, kh, kw = weight.shape
    if (o_n, c_n, kh * kw) != (layout.out_features, layout.in_features, layout.taps):
        raise ValueError(f"weight shape {list(weight.shape)} does not match {layout!r}")
    wb = layout.w_bits
    codes = np.vectorize(lambda v: encode_weight(int(v), wb), otypes=[object])(weight).reshape(o_n, c_n, kh * kw)
    words = []
    for g in range(layout.groups):
        for t in range(layout.taps):
            for j in range(layout.channel_words):
                word = 0
                for p in range(layout.pes):
                    o = g * layout.pes + p
                    if o >= layout.out_features:
                        continue
                    for l in range(layout.lanes):
                        i = j * layout.lanes + l
                        if i < layout.in_features:
                            word |= int(codes[o, i, t]) << ((p * layout.lanes + l) * wb)
                words.append(word)
    return words


def unpack_word(word: int, layout: WeightLayout) -> list[list[int]]:
    """Inverse of the packing for one word: ``[p][l]`` weights (the reference model's view)."""
    wb = layout.w_bits
    out = []
    for p in range(layout.pes):
        row = []
        for l in range(layout.lanes):
            code = (word >> ((p * layout.lanes + l) * wb)) & ((1 << wb) - 1)
            if wb == 1:
                row.append(1 if code else -1)
            else:
                row.append(code - (1 << wb) if code >> (wb - 1) else code)
        out.append(row)
    return out
