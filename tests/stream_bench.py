"""Drive one stream block in amaranth.sim under random valid/ready stalls and collect what it emits."""

from __future__ import annotations

from amaranth.sim import Simulator


def run_stalled(dut, beats, put, p_valid, p_ready) -> list:
    """Offer ``beats`` on ``dut.i`` (``put(ctx, beat)`` sets the payload) while ``p_valid[cycle]`` allows,
    accept on ``dut.o`` while ``p_ready[cycle]`` allows, for ``len(p_valid)`` cycles; returns the payloads out."""
    got = []

    async def bench(ctx):
        i = 0
        for cycle in range(len(p_valid)):
            offer = i < len(beats) and bool(p_valid[cycle])
            if offer:
                put(ctx, beats[i])
            ctx.set(dut.i.valid, offer)
            ctx.set(dut.o.ready, bool(p_ready[cycle]))
            await ctx.delay(1e-7)
            if ctx.get(dut.i.valid) and ctx.get(dut.i.ready):
                i += 1
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                got.append(ctx.get(dut.o.payload))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got
