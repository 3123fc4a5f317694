"""The pipelined engine's sub-blocks against plain reference models (amaranth.sim), and the DSP allotment.

* adder tree: sums and latency ``tree_depth(n)`` for any n;
* products: every code × count of the narrow widths, sign and ternary weights as muxes (no ``$mul``
  cell in the netlist), shift-add and DSP forms equal to the plain product;
* staged requantizer: one, two and three DSP pieces, in DSP or logic, under random valid/ready stalls,
  equal to :func:`requant_reference`, with the fixed latency the cycle model uses;
* an engine with fewer DSP blocks than products: exactly that many ``$mul`` cells, same outputs;
* :func:`bitspike.gen.dsp.allocate_dsps`: within the budget, the costliest products first.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from amaranth import signed, unsigned
from amaranth.back import rtlil
from amaranth.sim import Simulator

from stream_bench import run_stalled

from bitspike.analysis import analyse
from bitspike.gen.dsp import allocate_dsps, engine_candidates
from bitspike.gen.boards import get_board
from bitspike.gen.plan import make_plan
from bitspike.host.golden import GoldenModel
from bitspike.manifest import InputSpec
from bitspike.testing import NetBuilder
from bitspike.rtl_templates.adder_tree import AdderTree, tree_depth
from bitspike.rtl_templates.linear import LinearEngine
from bitspike.rtl_templates.pe import ProductUnit, product_reference
from bitspike.rtl_templates.requant import (REQUANT_LATENCY, PipelinedRequantizer, dsp_piece_order, piece_costs,
                                            requant_pieces, requant_reference)


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6, if_exists=True)  # a one-term tree has no registers, hence no clock domain
    sim.add_testbench(bench)
    sim.run()


# ---------------------------------------------------------------------------------------------
# adder tree


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_adder_tree_sums_with_its_latency(n):
    shape = signed(7)
    dut = AdderTree(n, shape)
    assert dut.latency == tree_depth(n) == (0 if n == 1 else int(np.ceil(np.log2(n))))
    rng = np.random.default_rng(n)
    vectors = [[int(v) for v in rng.integers(-64, 64, size=n)] for _ in range(30)]
    vectors[0] = [-64] * n  # extremes: the root must be wide enough
    vectors[1] = [63] * n
    valid = [bool(v) for v in rng.integers(0, 2, size=len(vectors))]
    seen = []

    async def bench(ctx):
        for cyc in range(len(vectors) + dut.latency + 2):
            if cyc < len(vectors):
                for i in range(n):
                    ctx.set(dut.terms[i], vectors[cyc][i])
                ctx.set(dut.valid, valid[cyc])
            else:
                ctx.set(dut.valid, 0)
            await ctx.delay(1e-7)  # let the combinational root settle (latency 0)
            if ctx.get(dut.total_valid):
                seen.append((cyc, ctx.get(dut.total)))
            await (ctx.tick() if dut.latency else ctx.delay(9e-7))

    _run(dut, bench)
    expected = [(c + dut.latency, sum(vectors[c])) for c in range(len(vectors)) if valid[c]]
    assert seen == expected


def test_adder_tree_rejects_bad_size():
    with pytest.raises(ValueError, match="positive integer"):
        tree_depth(0)


# ---------------------------------------------------------------------------------------------
# products


def _valid_codes(w_bits):
    if w_bits == 1:
        return [0, 1]
    lim = 1 if w_bits == 2 else (1 << (w_bits - 1)) - 1
    return [v & ((1 << w_bits) - 1) for v in range(-lim, lim + 1)]


@pytest.mark.parametrize("w_bits,count_bits,use_dsp", [(1, 3, False), (2, 3, False), (2, 1, False), (3, 4, False),
                                                       (4, 3, False), (4, 4, True), (8, 5, False), (8, 5, True)])
def test_product_unit_every_code_and_count(w_bits, count_bits, use_dsp):
    dut = ProductUnit(w_bits, count_bits, use_dsp)
    pairs = [(c, n) for c in _valid_codes(w_bits) for n in range(1 << count_bits)]
    got = []

    async def bench(ctx):
        for code, count in pairs:
            ctx.set(dut.code, code)
            ctx.set(dut.count, count)
            await ctx.tick()
            got.append(ctx.get(dut.product))

    _run(dut, bench)
    assert got == [product_reference(c, n, w_bits) for c, n in pairs]


@pytest.mark.parametrize("w_bits,use_dsp,muls", [(1, True, 0), (2, True, 0), (5, False, 0), (5, True, 1)])
def test_only_dsp_products_emit_a_multiply(w_bits, use_dsp, muls):
    text = rtlil.convert(ProductUnit(w_bits, 8, use_dsp))
    assert text.count("cell $mul ") == muls


# ---------------------------------------------------------------------------------------------
# staged requantizer


def _requant_cases():
    # (acc shape, mult shape): one piece, two pieces, three pieces (16-bit DSP inputs), and the legal
    # extremes that fit no DSP piece (31-bit multiplier, 48-bit accumulator): one piece in logic
    return [(signed(12), unsigned(9)), (signed(19), unsigned(14)), (signed(34), signed(10)),
            (signed(48), unsigned(31)), (signed(62), unsigned(8))]


@pytest.mark.parametrize("acc_shape,mult_shape", _requant_cases())
@pytest.mark.parametrize("dsp_pieces", [None, 0, 1])
def test_staged_requantizer_under_stalls(acc_shape, mult_shape, dsp_pieces):
    rng = np.random.default_rng(acc_shape.width * 7 + (dsp_pieces or 5))
    a_lo, a_hi = -(1 << (acc_shape.width - 1)), (1 << (acc_shape.width - 1)) - 1
    m_lo = -(1 << (mult_shape.width - 1)) if mult_shape.signed else 0
    m_hi = (1 << (mult_shape.width - (1 if mult_shape.signed else 0))) - 1
    shift, lo, hi = 11, -100, 127
    bias_shape = signed(10)
    n = 60
    beats = [(int(rng.integers(a_lo, a_hi + 1)), int(rng.integers(m_lo, m_hi + 1)), int(rng.integers(-512, 512)))
             for _ in range(n)]
    beats[:4] = [(a_lo, m_hi, -512), (a_hi, m_hi, 511), (a_lo, m_lo, 0), (0, 0, 0)]
    prod_hi = max(abs(a_lo * m_lo), abs(a_lo * m_hi), abs(a_hi * m_hi)) + 512 + (1 << shift)
    product_shape = signed(prod_hi.bit_length() + 1)
    dut = PipelinedRequantizer(acc_shape=acc_shape, mult_shape=mult_shape, bias_shape=bias_shape, shift=shift,
                               lo=lo, hi=hi, out_shape=signed(8), product_shape=product_shape, dsp_pieces=dsp_pieces)
    assert len(requant_pieces(acc_shape, mult_shape)) == {12: 1, 19: 2, 34: 3, 48: 1, 62: 1}[acc_shape.width]
    expected = [requant_reference(a, mlt, b, shift, lo, hi) for a, mlt, b in beats]
    p_valid, p_ready = rng.random(4 * n + 200) < 0.6, rng.random(4 * n + 200) < 0.6

    def put(ctx, beat):
        a, mlt, b = beat
        ctx.set(dut.i.payload.acc, a)
        ctx.set(dut.i.payload.mult, mlt)
        ctx.set(dut.i.payload.bias, b)

    assert run_stalled(dut, beats, put, p_valid, p_ready) == expected


@pytest.mark.parametrize("dsp_pieces", [None, 0])  # 0: the products in logic, cut in 4-bit chunks of the multiplier
def test_staged_requantizer_latency_without_stalls(dsp_pieces):
    dut = PipelinedRequantizer(acc_shape=signed(19), mult_shape=unsigned(14), bias_shape=signed(8), shift=9,
                               lo=0, hi=255, out_shape=unsigned(8), product_shape=signed(34), dsp_pieces=dsp_pieces)
    times = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for cyc in range(12):
            ctx.set(dut.i.valid, cyc == 2)
            ctx.set(dut.i.payload.acc, 1000)
            ctx.set(dut.i.payload.mult, 300)
            await ctx.delay(1e-7)
            if ctx.get(dut.o.valid):
                times.append((cyc, ctx.get(dut.o.payload)))
            await ctx.tick()

    _run(dut, bench)
    assert times == [(2 + REQUANT_LATENCY, requant_reference(1000, 300, 0, 9, 0, 255))]


def test_requantizer_builds_in_logic_what_no_dsp_piece_fits():
    """A multiplier wider than a DSP input, or an accumulator needing more than three pieces: one logic product."""
    for acc_shape, mult_shape in [(signed(19), unsigned(20)), (signed(70), unsigned(8)), (signed(48), unsigned(31))]:
        assert requant_pieces(acc_shape, mult_shape) == [(0, acc_shape.width, True)]
        assert dsp_piece_order(acc_shape, mult_shape) == [] and piece_costs(acc_shape, mult_shape) == []


# ---------------------------------------------------------------------------------------------
# an engine with fewer DSP blocks than products


def _small_mlp(seed=4):
    rng = np.random.default_rng(seed)
    b = NetBuilder(rng, InputSpec(shape=(8,), bits=8, scale=1 / 255))
    b.synaptic("linear", 6, 8, 8, 1, 0, 2, 6, signed_out=True)
    b.synaptic("linear", 4, 6, 6, 1, 2, None, None)
    return b.manifest(f"dsp-{seed}")


def _engine(m, index, dsp_blocks, pes=2, lanes=4):
    layer = m.layers[index]
    return LinearEngine(weight=layer.weight, bias=layer.bias, w_bits=layer.w_bits, s_bits=layer.s_bits,
                        timesteps=layer.timesteps, k=layer.k, requant=layer.requant,
                        ranges=analyse(m)[layer.name], pes=pes, lanes=lanes, dsp_blocks=dsp_blocks)


@pytest.mark.parametrize("dsp_blocks", [0, 3])
def test_engine_uses_exactly_its_dsp_share_and_stays_exact(dsp_blocks):
    m = _small_mlp()
    layer = m.layers[0]
    ranges = analyse(m)[layer.name]
    n_all = rtlil.convert(_engine(m, 0, None)).count("cell $mul ")
    eng = _engine(m, 0, dsp_blocks)
    assert rtlil.convert(eng).count("cell $mul ") == dsp_blocks < n_all
    # the same outputs as the golden model, through the logic products
    golden = GoldenModel(m)
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.integers(ranges.x.lo, ranges.x.hi + 1, size=(3, 8)))
    out, _ = golden._synaptic(layer, x, False)
    expected = [int(v) for v in out.reshape(-1)]
    got = []

    async def bench(ctx):
        ctx.set(eng.y.ready, 1)
        feed = [int(v) for v in x.reshape(-1)]
        i = 0
        for _ in range(400):
            if i < len(feed):
                ctx.set(eng.x.payload, feed[i])
                ctx.set(eng.x.valid, 1)
            else:
                ctx.set(eng.x.valid, 0)
            await ctx.delay(1e-7)
            if i < len(feed) and ctx.get(eng.x.ready):
                i += 1
            if ctx.get(eng.y.valid):
                got.append(ctx.get(eng.y.payload))
            await ctx.tick()

    _run(eng, bench)
    assert got == expected


# ---------------------------------------------------------------------------------------------
# the DSP allotment


def test_allocation_stays_within_the_budget_and_prefers_costly_products():
    m = _small_mlp()
    plan = make_plan(m, fold={m.layers[0].name: (2, 4), m.layers[1].name: (2, 2)})
    ranges = analyse(m)
    by_name = {l.name: l for l in m.layers}
    cands = {lp.name: engine_candidates(by_name[lp.name], ranges[lp.name], lp) for lp in plan.layers}
    total = sum(len(c) for c in cands.values())
    assert total > 3
    for budget in range(total + 3):
        layers = allocate_dsps(m, ranges, plan.layers, budget)
        shares = {lp.name: lp.dsp_blocks for lp in layers}
        assert sum(shares.values()) == min(budget, total)
        # nothing left out costs more than anything taken
        taken = [c for name, c_list in cands.items() for c, _ in c_list[:shares[name]]]
        left = [c for name, c_list in cands.items() for c, _ in c_list[shares[name]:]]
        if taken and left:
            assert min(taken) >= max(left)
    assert allocate_dsps(m, ranges, plan.layers, None) == plan.layers


def test_device_dsp_counts_of_the_boards():
    """The DSP budget the build hands the allocator is the board table's (MULT18X18D / SB_MAC16 blocks)."""
    counts = {name: get_board(name).capacity.dsp for name in ("icebreaker", "ice40-hx8k", "ulx3s-85f", "ecp5-25f")}
    assert counts == {"icebreaker": 8, "ice40-hx8k": 0, "ulx3s-85f": 156, "ecp5-25f": 28}
