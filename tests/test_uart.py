"""UART receiver/transmitter against a plain bit-level reference model (amaranth.sim)."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
from amaranth import Module
from amaranth.sim import Simulator

from bitspike.rtl_templates.uart import (UartRx, UartTx, clocks_per_bit_for, format_bit_period,
                                        parse_bit_period)


def serial_bits(byte: int, cpb: int) -> list[int]:
    """Reference model: the line levels, one per clock, of one 8N1 byte."""
    bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
    return [b for b in bits for _ in range(cpb)]


@pytest.mark.parametrize("cpb", [4, 7, 16])
def test_rx_receives_reference_bytes(cpb):
    rng = random.Random(cpb)
    data = [rng.randrange(256) for _ in range(12)] + [0x00, 0xFF, 0xA5]
    dut = UartRx(cpb)
    got = []

    async def bench(ctx):
        ctx.set(dut.bytes.ready, 1)
        for byte in data:
            for level in serial_bits(byte, cpb) + [1] * rng.randrange(0, 3 * cpb):
                ctx.set(dut.rx, level)
                await ctx.tick()
                if ctx.get(dut.bytes.valid):
                    got.append(ctx.get(dut.bytes.payload))
        for _ in range(4 * cpb):
            await ctx.tick()
            if ctx.get(dut.bytes.valid):
                got.append(ctx.get(dut.bytes.payload))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == data


def test_rx_drops_byte_with_bad_stop_bit():
    cpb = 8
    dut = UartRx(cpb)
    got, errors = [], []

    async def bench(ctx):
        ctx.set(dut.bytes.ready, 1)
        bad = serial_bits(0x55, cpb)[: 9 * cpb] + [0] * cpb + [1] * 2 * cpb  # stop bit low
        for level in bad + serial_bits(0x3C, cpb) + [1] * 3 * cpb:
            ctx.set(dut.rx, level)
            await ctx.tick()
            if ctx.get(dut.bytes.valid):
                got.append(ctx.get(dut.bytes.payload))
            errors.append(ctx.get(dut.framing_error))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == [0x3C]
    assert sum(errors) == 1


def tx_loopback(period, data: list[int]) -> tuple[list[int], list[int]]:
    """Send ``data`` back to back through a transmitter looped into a receiver of the same bit period:
    (the line level at each clock, the bytes received)."""
    m = Module()
    m.submodules.tx = tx = UartTx(period)
    m.submodules.rx = rx = UartRx(period)
    m.d.comb += rx.rx.eq(tx.tx)
    line, got = [], []

    async def bench(ctx):
        ctx.set(rx.bytes.ready, 1)
        for byte in data:
            ctx.set(tx.bytes.payload, byte)
            ctx.set(tx.bytes.valid, 1)
            while True:
                ready = ctx.get(tx.bytes.ready)
                await ctx.tick()
                line.append(ctx.get(tx.tx))
                if ctx.get(rx.bytes.valid):
                    got.append(ctx.get(rx.bytes.payload))
                if ready:
                    break
            ctx.set(tx.bytes.valid, 0)
        for _ in range(int(12 * period)):
            await ctx.tick()
            line.append(ctx.get(tx.tx))
            if ctx.get(rx.bytes.valid):
                got.append(ctx.get(rx.bytes.payload))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return line, got


@pytest.mark.parametrize("cpb", [4, 9])
def test_tx_matches_reference_and_loops_back(cpb):
    data = [0xA5, 0x00, 0xFF, 0x12, 0x80]
    line, got = tx_loopback(cpb, data)
    assert got == data
    # back-to-back bytes: exactly the reference waveform, no gaps
    expected = [b for byte in data for b in serial_bits(byte, cpb)]
    start = line.index(0)
    assert line[start : start + len(expected)] == expected


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="clocks_per_bit"):
        UartRx(2)
    with pytest.raises(ValueError, match="clocks_per_bit"):
        UartTx(3.5)
    assert clocks_per_bit_for(12_000_000, 115200) == 104
    with pytest.raises(ValueError, match="off"):
        clocks_per_bit_for(12_000_000, 2_500_000)


def ideal_levels(data: list[int], period: Fraction, phase: float, gap_bits: int = 0) -> list[int]:
    """Reference model for a fractional bit period: the line level at each clock of a transmitter whose bit
    edges fall exactly k·period (+ ``phase``) clocks apart, back to back with ``gap_bits`` idle bits between
    bytes (the host's clock is not ours: ``phase`` in [0, 1) is where its edges fall between our clocks)."""
    bits = []
    for byte in data:
        bits += [0] + [(byte >> i) & 1 for i in range(8)] + [1] + [1] * gap_bits
    clocks = int((len(bits) + 2) * period) + 1
    return [1 if (k := int((c + phase) / period)) >= len(bits) else bits[k] for c in range(clocks)]


@pytest.mark.parametrize("period", [Fraction(25, 3), Fraction(13, 2), Fraction(100, 7)])
@pytest.mark.parametrize("phase", [0.0, 0.37, 0.93])
def test_fractional_rx_receives_ideal_line(period, phase):
    """A fractional period (the ULX3S: 25 MHz / 3 Mbaud = 25/3 clocks) receives a host that sends at the exact
    rate, back to back, whatever the phase of its edges against our clock."""
    rng = random.Random(f"{period}{phase}")
    data = [rng.randrange(256) for _ in range(20)] + [0x00, 0xFF, 0x55, 0xAA]
    dut = UartRx(period)
    got, errors = [], []

    async def bench(ctx):
        ctx.set(dut.bytes.ready, 1)
        for level in ideal_levels(data, period, phase) + [1] * 40:
            ctx.set(dut.rx, level)
            await ctx.tick()
            if ctx.get(dut.bytes.valid):
                got.append(ctx.get(dut.bytes.payload))
            errors.append(ctx.get(dut.framing_error))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == data
    assert not any(errors)


@pytest.mark.parametrize("period", [Fraction(25, 3), Fraction(13, 2)])
def test_fractional_tx_edges_stay_within_a_clock_and_loop_back(period):
    """Back-to-back bytes at a fractional period: every bit edge within one clock of the ideal k·period after the
    first start bit (so the average rate is exact), and a receiver of the same period gets every byte."""
    data = [0xA5, 0x00, 0xFF, 0x12, 0x80, 0x5A, 0x01, 0xFE]
    line, got = tx_loopback(period, data)
    assert got == data
    start = line.index(0)
    bits = [b for byte in data for b in [0] + [(byte >> i) & 1 for i in range(8)] + [1]]
    sent = line[start : start + int(len(bits) * period)]
    # each clock's level is the ideal bit at that time, or the next one within a clock before its edge:
    # every edge lies in (ideal − 1 clock, ideal], so they never drift
    for c, level in enumerate(sent):
        k_now, k_next = int(c / period), min(int((c + 1) / period), len(bits) - 1)
        assert level in (bits[k_now], bits[k_next]), f"clock {c}: {level}, ideal bit {k_now}"
    # and bit k starts on the last clock at or before k·period (the accumulator's floor), exactly
    edges = [c for c in range(1, len(sent)) if sent[c] != sent[c - 1]]
    ideal = [int(k * period) for k in range(1, len(bits)) if bits[k] != bits[k - 1]]
    assert edges == ideal


def test_fractional_periods_are_chosen_and_formatted():
    assert clocks_per_bit_for(25_000_000, 3_000_000) == Fraction(25, 3)
    assert clocks_per_bit_for(25_000_000, 1_000_000) == 25  # the integer where it is within 2 %
    assert clocks_per_bit_for(12_000_000, 3_000_000) == 4
    assert clocks_per_bit_for(25_000_000, 4_000_000) == Fraction(25, 4)
    with pytest.raises(ValueError, match="too short a fractional period"):
        clocks_per_bit_for(25_000_000, 4_500_000)  # 50/9 clocks: 7.4 % off at 6, and under 6 as a fraction
    assert format_bit_period(Fraction(25, 3)) == "25/3" and format_bit_period(16) == 16
    assert parse_bit_period("25/3") == Fraction(25, 3) and parse_bit_period(16) == 16
    assert parse_bit_period(Fraction(32, 2)) == 16 and isinstance(parse_bit_period(Fraction(32, 2)), int)
    with pytest.raises(ValueError, match="clocks_per_bit"):
        parse_bit_period("fast")
    with pytest.raises(ValueError, match="fractional clocks_per_bit"):
        UartTx(Fraction(11, 2))
