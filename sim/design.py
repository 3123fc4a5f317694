"""A generated design as the simulators see it: its report.json, Verilog files and debug taps.

:class:`DesignInfo` is the design's :class:`~bitspike.gen.report.ReportView`
(the one typed reader of ``report.json``) with what simulating it adds: the
RTL digest, the harness's tap record size and the decoding of result beats.
Both simulators (the Verilator harness in :mod:`bitspike.sim.cosim` and
Icarus in :mod:`bitspike.sim.icarus`) and the diagnosis take it from here, so
neither simulator module imports the other. A tap is a
:class:`~bitspike.gen.report.TapView`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from bitspike.gen.report import ReportView, TapView

__all__ = ["DesignInfo", "tap_record", "words_for"]


def tap_record(words: int = 1) -> np.dtype:
    """The record layout of tap values in the harness's output file: tap, cycle and ``words`` 64-bit words
    of the value (least significant first; as many as the design's widest tap needs)."""
    return np.dtype([("tap", "<u4"), ("pad", "<u4"), ("cycle", "<u8"), ("value", "<u8", (int(words),))])


def words_for(width: int) -> int:
    """64-bit words that hold a ``width``-bit value."""
    return max(1, -(-int(width) // 64))


class DesignInfo(ReportView):
    """A generated design folder as the simulators see it: its ``report.json`` and what they derive from it.

    Read one with ``DesignInfo.read(folder)`` (:meth:`ReportView.read`: a missing file or key is a
    :class:`~bitspike.errors.HardwareError` naming it).
    """

    @property
    def rtl_dir(self) -> Path:
        """The generated folder."""
        return self.folder

    def digest(self) -> str:
        """SHA-256 of the design's Verilog files (names and contents, in order) and its top: the same RTL
        gives the same digest wherever it lies."""
        h = hashlib.sha256(self.top.encode())
        for f in self.verilog_paths:
            h.update(f.name.encode() + b"\0")
            h.update(f.read_bytes())
        return h.hexdigest()

    @property
    def tap_words(self) -> int:
        """64-bit words per recorded tap value (the widest tap decides)."""
        return max([words_for(t.port_width) for t in self.taps] or [1])

    def logits_from_raw(self, raw: np.ndarray) -> np.ndarray:
        """Result beats (``result_width`` bits) → logits: sign-extended when the last layer's output range is
        signed, else zero-extended (an unsigned logit may use the top bit: 277 in 9 bits is not −235)."""
        raw = np.asarray(raw, dtype=np.uint64)
        tap = TapView("", 0, "out", "results", min(self.result_width, 64), self.logit_signed, "flat")
        return tap.to_int(raw.reshape(-1)).reshape(raw.shape)
