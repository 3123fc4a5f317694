"""Observation ports shared by the engines (debug taps)."""

from __future__ import annotations

from amaranth import signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import Out

__all__ = ["TapSignature"]


def TapSignature(width: int, signed_: bool = False, lanes: int = 1) -> wiring.Signature:
    """An observation-only port: payload and valid, never back-pressured.

    ``lanes`` > 1 (a vector stream's tap): the payload is an array of ``lanes`` values, element 0 in the
    lowest bits, all shown in the clock of ``valid``.
    """
    shape = signed(width) if signed_ else unsigned(width)
    return wiring.Signature({
        "payload": Out(shape if lanes == 1 else data.ArrayLayout(shape, lanes)),
        "valid": Out(1),
    })
