"""UART receiver/transmitter against a plain bit-level reference model (amaranth.sim)."""

from __future__ import annotations

import random

import pytest
from amaranth import Module
from amaranth.sim import Simulator

from bitspike.rtl_templates.uart import UartRx, UartTx, clocks_per_bit_for


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


@pytest.mark.parametrize("cpb", [4, 9])
def test_tx_matches_reference_and_loops_back(cpb):
    data = [0xA5, 0x00, 0xFF, 0x12, 0x80]
    m = Module()
    m.submodules.tx = tx = UartTx(cpb)
    m.submodules.rx = rx = UartRx(cpb)
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
        for _ in range(12 * cpb):
            await ctx.tick()
            line.append(ctx.get(tx.tx))
            if ctx.get(rx.bytes.valid):
                got.append(ctx.get(rx.bytes.payload))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
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
