"""Observation ports shared by the engines (debug taps)."""

from __future__ import annotations

from amaranth import signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

__all__ = ["TapSignature"]


def TapSignature(width: int, signed_: bool = False) -> wiring.Signature:
    """An observation-only port: payload and valid, never back-pressured."""
    return wiring.Signature({
        "payload": Out(signed(width) if signed_ else unsigned(width)),
        "valid": Out(1),
    })
