"""A generated design as the simulators see it: its report.json, Verilog files and debug taps.

:class:`DesignInfo` reads a folder written by ``bitspike gen``; both simulators
(the Verilator harness in :mod:`bitspike.sim.cosim` and Icarus in
:mod:`bitspike.sim.icarus`) and the diagnosis take it from here, so neither
simulator module imports the other.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


__all__ = ["DesignInfo", "TapInfo", "tap_record", "words_for"]

def tap_record(words: int = 1) -> np.dtype:
    """The record layout of tap values in the harness's output file: tap, cycle and ``words`` 64-bit words
    of the value (least significant first; as many as the design's widest tap needs)."""
    return np.dtype([("tap", "<u4"), ("pad", "<u4"), ("cycle", "<u8"), ("value", "<u8", (int(words),))])


def words_for(width: int) -> int:
    """64-bit words that hold a ``width``-bit value."""
    return max(1, -(-int(width) // 64))


@dataclass(frozen=True)
class TapInfo:
    """One debug tap of a generated design (an entry of report.json ``taps``)."""

    layer: str
    index: int
    kind: str
    port: str
    width: int
    signed: bool
    order: str
    count: int = 0  # values per inference (0: not known, e.g. a design from an older generator)

    def to_int(self, raw: np.ndarray) -> np.ndarray:
        """Raw unsigned port values → integers (sign-extended when the tap is signed).

        ``raw`` is ``[n]`` or ``[n, words]`` 64-bit words, least significant first.
        Values that fit int64 come back as an int64 array, wider ones (packed
        spikes of T·B_s ≥ 64 bits, wide accumulators) as an object array of Python ints.
        """
        v = np.asarray(raw, dtype=np.uint64)
        if v.ndim == 1:
            v = v.reshape(-1, 1)
        if self.width < 64 or (self.width == 64 and self.signed):
            out = v[:, 0]
            if self.width < 64:
                out = out & np.uint64((1 << self.width) - 1)
            out = out.astype(np.int64)  # a 64-bit signed value wraps here into its two's complement, as wanted
            if self.signed and self.width < 64:
                out = np.where(out >= (1 << (self.width - 1)), out - (1 << self.width), out)
            return out
        mask = (1 << self.width) - 1
        vals = []
        for row in v:
            x = 0
            for k, w in enumerate(row.tolist()):
                x |= int(w) << (64 * k)
            x &= mask
            if self.signed and x >> (self.width - 1):
                x -= 1 << self.width
            vals.append(x)
        out = np.empty(len(vals), dtype=object)
        out[:] = vals
        return out


@dataclass(frozen=True)
class DesignInfo:
    """What the co-simulation needs from a generated design folder (its report.json)."""

    rtl_dir: Path
    top: str
    verilog_files: tuple[Path, ...]
    input_bits: int
    input_size: int
    input_order: str
    num_classes: int
    result_width: int
    logit_width: int
    cycles_per_inference: int | None
    initiation_interval: int | None
    taps: tuple[TapInfo, ...]
    report: dict = field(repr=False, compare=False)
    logit_signed: bool = True

    @classmethod
    def load(cls, rtl_dir: str | os.PathLike) -> "DesignInfo":
        """Read ``rtl_dir/report.json``; a missing file or key is a :class:`HardwareError` naming it."""
        from bitspike.gen.report import read_report

        rtl_dir = Path(rtl_dir)
        view = read_report(rtl_dir / "report.json")
        taps = tuple(TapInfo(t.layer, t.index, t.kind, t.port, t.width, t.signed, t.order, t.count) for t in view.taps)
        return cls(
            rtl_dir=rtl_dir,
            top=view.top,
            verilog_files=tuple(rtl_dir / f for f in view.verilog_files),
            input_bits=view.input_bits,
            input_size=view.input_size,
            input_order=view.input_order,
            num_classes=view.num_classes,
            result_width=view.result_width,
            logit_width=view.logit_width,
            logit_signed=view.logit_signed,
            cycles_per_inference=view.cycles_per_inference,
            initiation_interval=view.initiation_interval,
            taps=taps,
            report=dict(view.data),
        )

    def digest(self) -> str:
        """SHA-256 of the design's Verilog files (names and contents, in order) and its top: the same RTL
        gives the same digest wherever it lies."""
        h = hashlib.sha256(self.top.encode())
        for f in self.verilog_files:
            h.update(f.name.encode() + b"\0")
            h.update(f.read_bytes())
        return h.hexdigest()

    @property
    def tap_words(self) -> int:
        """64-bit words per recorded tap value (the widest tap decides)."""
        return max([words_for(t.width) for t in self.taps] or [1])

    def logits_from_raw(self, raw: np.ndarray) -> np.ndarray:
        """Result beats (``result_width`` bits) → logits: sign-extended when the last layer's output range is
        signed, else zero-extended (an unsigned logit may use the top bit: 277 in 9 bits is not −235)."""
        raw = np.asarray(raw, dtype=np.uint64)
        tap = TapInfo("", 0, "out", "results", min(self.result_width, 64), self.logit_signed, "flat")
        return tap.to_int(raw.reshape(-1)).reshape(raw.shape)
