"""The residual add engine as a pipeline: every sum exact under random stalls, a beat per clock when nothing stalls,
:data:`ADD_LATENCY` clocks from the beats taken to the sum out; constant and per-channel multipliers."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from bitspike.ranges import Range
from bitspike.rtl_templates.residual import ADD_LATENCY, AddEngine, add_reference, signed_digits


def test_signed_digits_sum_to_the_constant_and_never_touch():
    for c in list(range(-300, 301)) + [2**17 - 1, -(2**17), 0x2AAAA, 12345]:
        digits = signed_digits(c)
        assert sum(d << k for k, d in digits) == c
        ks = [k for k, _ in digits]
        assert all(b - a >= 2 for a, b in zip(ks, ks[1:]))
        assert len(digits) <= (abs(c).bit_length() + 2) // 2


def _engine(mult_a, mult_b, shift=5):
    a_r, b_r = Range(-40, 90), Range(0, 63)
    lo, hi = 0, 31
    prods = [x * ma + y * mb for ma, mb in zip(mult_a, mult_b) for x in (a_r.lo, a_r.hi) for y in (b_r.lo, b_r.hi)]
    rnd = 1 << (shift - 1)
    prod_r = Range(min(0, min(prods) + rnd), max(prods) + rnd)
    return AddEngine(mult_a=mult_a, mult_b=mult_b, shift=shift, lo=lo, hi=hi, a_range=a_r, b_range=b_r,
                     product_range=prod_r, out_range=Range(lo, hi), debug_taps=True), (a_r, b_r, shift, lo, hi)


def _run(dut, pairs, p_valid, p_ready):
    got, taken, out_at, taps = [], [], [], []

    async def bench(ctx):
        i = 0
        for cycle in range(len(p_valid)):
            offer = i < len(pairs) and bool(p_valid[cycle])
            if offer:
                ctx.set(dut.a.payload, pairs[i][0])
                ctx.set(dut.b.payload, pairs[i][1])
            ctx.set(dut.a.valid, offer)
            ctx.set(dut.b.valid, offer)
            ctx.set(dut.y.ready, bool(p_ready[cycle]))
            await ctx.delay(1e-7)
            if ctx.get(dut.a.valid) and ctx.get(dut.a.ready):
                assert ctx.get(dut.b.ready)
                taken.append(cycle)
                i += 1
            if ctx.get(dut.y.valid) and ctx.get(dut.y.ready):
                got.append(ctx.get(dut.y.payload))
                out_at.append(cycle)
            if ctx.get(dut.tap_out.valid):
                taps.append(ctx.get(dut.tap_out.payload))
            await ctx.tick()
            if len(got) == len(pairs):
                break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got, taken, out_at, taps


@pytest.mark.parametrize("mult_a,mult_b", [([23, 23, 23], [-9, -9, -9]),  # one multiplier a channel: shift-adds
                                           ([23, -5, 0], [7, 1, -12])])   # per channel: a ROM and *
def test_the_add_pipeline_is_exact_under_stalls(mult_a, mult_b):
    dut, (a_r, b_r, shift, lo, hi) = _engine(mult_a, mult_b)
    rng = np.random.default_rng(3)
    n = 150
    pairs = [(int(rng.integers(a_r.lo, a_r.hi + 1)), int(rng.integers(b_r.lo, b_r.hi + 1))) for _ in range(n)]
    pairs[:2] = [(a_r.hi, b_r.hi), (a_r.lo, b_r.lo)]
    C = len(mult_a)
    want = [add_reference(a, b, mult_a[e % C], mult_b[e % C], shift, lo, hi) for e, (a, b) in enumerate(pairs)]

    got, _, _, taps = _run(dut, pairs, rng.random(3000) < 0.7, rng.random(3000) < 0.5)
    assert got == want and taps == want

    # nothing stalls: a beat per clock, each sum ADD_LATENCY clocks after its beats were taken
    dut, _ = _engine(mult_a, mult_b)
    got, taken, out_at, _ = _run(dut, pairs, np.ones(n + 20, bool), np.ones(n + 20, bool))
    assert got == want
    assert taken == list(range(n)) and out_at == [t + ADD_LATENCY for t in taken]
