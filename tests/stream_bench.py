"""Drive one stream block in amaranth.sim under random valid/ready stalls and collect what it emits."""

from __future__ import annotations

import random

from amaranth.sim import Simulator


def run_stalled(dut, beats, put, p_valid, p_ready, *, inp=None, out=None, stop_after: int | None = None) -> list:
    """Offer ``beats`` on ``dut.i`` (``put(ctx, beat)`` sets the payload) while ``p_valid[cycle]`` allows,
    accept on ``dut.o`` while ``p_ready[cycle]`` allows, for ``len(p_valid)`` cycles; returns the payloads out.

    ``inp``/``out``: the streams to drive and collect instead of ``dut.i``/``dut.o``; ``stop_after``: end
    as soon as that many payloads came out (the rest of the cycles would add nothing but time)."""
    inp = dut.i if inp is None else inp
    out = dut.o if out is None else out
    got = []

    async def bench(ctx):
        i = 0
        for cycle in range(len(p_valid)):
            offer = i < len(beats) and bool(p_valid[cycle])
            if offer:
                put(ctx, beats[i])
            ctx.set(inp.valid, offer)
            ctx.set(out.ready, bool(p_ready[cycle]))
            await ctx.delay(1e-7)
            if ctx.get(inp.valid) and ctx.get(inp.ready):
                i += 1
            if ctx.get(out.valid) and ctx.get(out.ready):
                got.append(ctx.get(out.payload))
            await ctx.tick()
            if stop_after is not None and len(got) >= stop_after:
                break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


def run_drain_stalled(dut, groups, groups_n: int, rng, want_len: int) -> list:
    """Feed a :class:`~bitspike.rtl_templates.drain.Drain` its PE groups (``groups[i][p]`` partial sums, every
    ``groups_n``-th the last of an output pixel) under random valid/ready stalls, never more than
    ``HOLD_SLOTS`` un-freed, until ``want_len`` values came out; returns them."""
    from bitspike.rtl_templates.drain import HOLD_SLOTS

    pes = len(groups[0])
    got = []

    async def bench(ctx):
        sent, slots = 0, 0
        for _ in range(40 * len(groups) * pes):
            offer = sent < len(groups) and slots < HOLD_SLOTS and rng.random() < 0.6
            ctx.set(dut.i.valid, offer)
            if offer:
                for p in range(pes):
                    ctx.set(dut.i.payload.psum[p], groups[sent][p])
                ctx.set(dut.i.payload.last_group, int(sent % groups_n == groups_n - 1))
            ctx.set(dut.y.ready, rng.random() < 0.5)
            await ctx.delay(1e-7)
            if ctx.get(dut.y.valid) and ctx.get(dut.y.ready):
                got.append(ctx.get(dut.y.payload))
            slots += int(offer) - ctx.get(dut.freed)
            sent += int(offer)
            await ctx.tick()
            if len(got) == want_len:
                break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


def output_clocks(eng, frame, max_clocks: int) -> list[int]:
    """One frame into ``eng`` (``x`` in, ``y`` out) from reset, an input offered every clock, outputs always
    taken, for ``max_clocks`` clocks: the clocks its outputs leave."""
    when = []

    async def bench(ctx):
        ctx.set(eng.y.ready, 1)
        i = 0
        for c in range(max_clocks):
            ctx.set(eng.x.valid, i < len(frame))
            if i < len(frame):
                ctx.set(eng.x.payload, int(frame[i]))
            await ctx.delay(1e-7)
            if i < len(frame) and ctx.get(eng.x.ready):
                i += 1
            if ctx.get(eng.y.valid):
                when.append(c)
            await ctx.tick()

    sim = Simulator(eng)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return when


def run_frames_bursty(dut, xs, seed: int, cycles: int, want_len: int) -> list:
    """Frames ``xs`` ``[frames, C, H, W]`` into a conv engine's scalar ``x`` (HWC, channel fastest) under bursts
    of idle input and of back-pressure (phases of 97 clocks: input mostly offered, output mostly refused,
    both mostly on), so a writer both runs ahead and falls behind; the first ``want_len`` outputs of ``y``."""
    beats = [int(v) for v in xs.transpose(0, 2, 3, 1).reshape(-1)]
    srng = random.Random(seed)
    phases = [(c // 97) % 3 for c in range(cycles)]
    p_valid = [srng.random() < (0.95 if ph == 0 else 0.5) for ph in phases]
    p_ready = [srng.random() < (0.2 if ph == 1 else 0.9) for ph in phases]
    return run_stalled(dut, beats, lambda ctx, b: ctx.set(dut.x.payload, b), p_valid, p_ready, inp=dut.x, out=dut.y,
                       stop_after=want_len)
