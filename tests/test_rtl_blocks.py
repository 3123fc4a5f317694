"""Every stream block against its reference model under cocotb + Verilator, with random valid/ready stalls.

One Verilog build holds a sweep: synaptic engines (linear and conv) over B_w
and B_s 1…8, T 1…4, odd sizes and folds that do not divide, with negative
and saturating currents; max and sum pools; the residual add; the stream
FIFO and fork. Engine references are the golden model's layer functions;
the others (the engines' neuron stage among them) are the plain reference
functions next to each block.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from amaranth import signed
from amaranth.back import verilog

from bitspike.analysis import Range, analyse
from bitspike.gen.interface import hwc_order
from bitspike.host.golden import GoldenModel
from bitspike.manifest import InputSpec
from bitspike.testing import NetBuilder, random_cnn
from bitspike.rtl_templates.conv import ConvEngine
from bitspike.rtl_templates.fifo import SkidBuffer, StreamFifo, StreamFork
from bitspike.rtl_templates.linear import LinearEngine
from bitspike.rtl_templates.neuron import NeuronStage, neuron_reference
from bitspike.rtl_templates.pool import PoolEngine, pool_reference
from bitspike.rtl_templates.residual import AddEngine, add_reference
from bitspike.rtl_templates.weight_mem import WeightLayout, pack_weights, unpack_word
from bitspike.sim.cocotb_util import component_bank, run_cocotb

#: (B_w, B_s, T) of the engines under test: corners of 1…8 × 1…8 × 1…4 and some in between
ENGINE_BITS = [(1, 1, 1), (1, 8, 4), (8, 1, 2), (8, 8, 3), (2, 3, 4), (5, 2, 1), (3, 7, 2), (6, 4, 3)]


def _mlp_under_test(seed: int, bits, sizes):
    """8/8/1 (signed output) → layer under test (requantized) → output layer (B_w/B_s of the next bits)."""
    rng = np.random.default_rng(seed)
    b = NetBuilder(rng, InputSpec(shape=(sizes[0],), bits=8, scale=1 / 255))
    w, s, t = bits
    k = int(rng.integers(0, 5))
    b.synaptic("linear", sizes[1], 8, 8, 1, 0, k, s, signed_out=True)
    b.synaptic("linear", sizes[2], w, s, t, k, 2, 3)
    b.synaptic("linear", sizes[3], 3, 3, 2, 2, None, None)
    return b.manifest(f"blocks-{seed}")


def _x_values(rng, r, n):
    vals = rng.integers(r.lo, r.hi + 1, size=n)
    vals[: min(n, 3)] = [r.lo, r.hi, 0][: min(n, 3)]
    return vals


def _engine_case(prefix, m, layer_index, pes, lanes, samples, rng):
    layer = m.layers[layer_index]
    ranges = analyse(m)[layer.name]
    golden = GoldenModel(m)
    shape = tuple(layer.in_shape)
    x = torch.tensor(_x_values(rng, ranges.x, samples * int(np.prod(shape))).reshape(samples, *shape))
    out, _ = golden._synaptic(layer, x, False)
    if layer.op == "linear":
        eng = LinearEngine(weight=layer.weight, bias=layer.bias, w_bits=layer.w_bits, s_bits=layer.s_bits,
                           timesteps=layer.timesteps, k=layer.k, requant=layer.requant, ranges=ranges, pes=pes, lanes=lanes)
    else:
        eng = ConvEngine(weight=layer.weight, bias=layer.bias, in_hw=shape[1:], stride=layer.stride,
                         padding=layer.padding, w_bits=layer.w_bits, s_bits=layer.s_bits, timesteps=layer.timesteps,
                         k=layer.k, requant=layer.requant, ranges=ranges, pes=pes, lanes=lanes)
    in_order, out_order = hwc_order(shape), hwc_order(tuple(layer.out_shape))
    xin = [int(v) for n in range(samples) for v in x[n].reshape(-1)[in_order]]
    exp = [int(v) for n in range(samples) for v in out[n].reshape(-1)[out_order]]
    case = {"inputs": {f"{prefix}x": {"values": xin, "width": ranges.x.width, "signed": ranges.x.signed}},
            "outputs": {f"{prefix}y": {"expected": exp, "width": ranges.out.width, "signed": ranges.out.signed}}}
    return eng, case


def build_cases(seed: int = 0, full: bool = True):
    """Blocks and their reference streams; ``full=False`` keeps the corner bit widths only (default test run)."""
    rng = np.random.default_rng(seed)
    blocks, cases = [], []
    for i, bits in enumerate(ENGINE_BITS if full else ENGINE_BITS[:4]):
        sizes = (int(rng.integers(3, 9)), int(rng.integers(5, 14)), int(rng.integers(3, 12)), int(rng.integers(2, 6)))
        m = _mlp_under_test(100 + i, bits, sizes)
        for j in (1, 2):
            layer = m.layers[j]
            o, n = layer.weight.shape
            pes, lanes = int(rng.integers(1, o + 1)), int(rng.integers(1, min(n, 5) + 1))
            eng, case = _engine_case(f"lin{i}_{j}_", m, j, pes, lanes, 3, rng)
            blocks.append((f"lin{i}_{j}_", eng))
            cases.append(case)
    # conv engines (stride 1 and 2, padding 0/1, odd maps) and pools from random CNNs
    convs = [((2, 7, 5), 1, 1), ((3, 6, 7), 2, 1), ((1, 5, 6), 1, 0)]
    for i, (image, stride, pad) in enumerate(convs if full else convs[1:2]):
        b = NetBuilder(np.random.default_rng(200 + i), InputSpec(shape=image, bits=8, scale=1 / 255))
        b.synaptic("conv2d", 3, 8, 8, 1, 0, 2, 3, kernel=3, stride=stride, padding=pad, signed_out=True)
        b.synaptic("conv2d", 4, 1 + 3 * i, 2 + 2 * i, 1 + i, 2, 1, 2, kernel=3 - i % 2, stride=1, padding=pad)
        b.flatten()
        b.synaptic("linear", 3, 2, 2, 1, 1, None, None)
        m = b.manifest(f"convs-{i}")
        for j in (0, 1):
            c_out, c_in = m.layers[j].weight.shape[:2]
            eng, case = _engine_case(f"conv{i}_{j}_", m, j, int(rng.integers(1, c_out + 1)),
                                     int(rng.integers(1, c_in + 1)), 2, rng)
            blocks.append((f"conv{i}_{j}_", eng))
            cases.append(case)
    for i, kind in enumerate(["maxpool", "avgpool", "maxpool"] if full else ["maxpool", "avgpool"]):
        m = random_cnn(300 + i, image=(2, 7 - i, 6), channels=(3,), pool=kind)
        pool = m.layers[1]
        r = analyse(m)[pool.name]
        c, h, w = pool.in_shape
        xs = [int(v) for v in _x_values(rng, r.x, 3 * c * h * w)]
        exp = []
        for n in range(3):
            exp += pool_reference(xs[n * c * h * w:(n + 1) * c * h * w], (c, h, w), pool.kernel, pool.stride, kind)
        p = f"pool{i}_"
        blocks.append((p, PoolEngine(kind=kind, shape=(c, h, w), kernel=pool.kernel, stride=pool.stride, x_range=r.x,
                                     out_range=r.out)))
        cases.append({"inputs": {f"{p}x": {"values": xs, "width": r.x.width, "signed": r.x.signed}},
                      "outputs": {f"{p}y": {"expected": exp, "width": r.out.width, "signed": r.out.signed}}})
    m = random_cnn(7, image=(1, 5, 5), channels=(3,), residual=True)
    add = next(l for l in m.layers if l.op == "add")
    r = analyse(m)[add.name]
    c = add.in_shape[0]
    n_el = 2 * int(np.prod(add.in_shape))
    a, bb = _x_values(rng, r.x, n_el), _x_values(rng, r.x_b, n_el)
    exp = [add_reference(int(a[e]), int(bb[e]), int(add.mult_a[e % c]), int(add.mult_b[e % c]), add.shift, add.lo, add.hi)
           for e in range(n_el)]
    blocks.append(("add_", AddEngine(mult_a=add.mult_a, mult_b=add.mult_b, shift=add.shift, lo=add.lo, hi=add.hi,
                                     a_range=r.x, b_range=r.x_b, product_range=r.product, out_range=r.out)))
    cases.append({"inputs": {"add_a": {"values": [int(v) for v in a], "width": r.x.width, "signed": r.x.signed},
                             "add_b": {"values": [int(v) for v in bb], "width": r.x_b.width, "signed": r.x_b.signed}},
                  "outputs": {"add_y": {"expected": exp, "width": r.out.width, "signed": r.out.signed}}})
    # the engines' neuron stage on its own: currents in, spike counts out (B_s, T, k corners)
    for i, (s_bits, t, k) in enumerate([(1, 1, 0), (8, 4, 3), (3, 8, 12)] if full else [(3, 8, 12)]):
        cr = Range(-(1 << (s_bits + k + 1)), (1 << (s_bits + k + 1)) - 1)
        nrn = NeuronStage(cr, s_bits, t, k)
        xs = [cr.lo, cr.hi, 0] + [int(v) for v in rng.integers(cr.lo, cr.hi + 1, size=40)]
        p = f"nrn{i}_"
        blocks.append((p, nrn))
        cases.append({"inputs": {f"{p}i": {"values": xs, "width": cr.width, "signed": True}},
                      "outputs": {f"{p}o": {"expected": [neuron_reference(x, k, s_bits, t)[1] for x in xs],
                                            "width": nrn.count_shape.width, "signed": False}}})
    vals = [int(v) for v in rng.integers(-40, 40, size=60)]
    seven = signed(7)
    blocks.append(("fifo_", StreamFifo(seven, 5)))
    cases.append({"inputs": {"fifo_x": {"values": vals, "width": 7, "signed": True}},
                  "outputs": {"fifo_y": {"expected": vals, "width": 7, "signed": True}}})
    blocks.append(("fork_", StreamFork(seven, 3)))
    cases.append({"inputs": {"fork_x": {"values": vals, "width": 7, "signed": True}},
                  "outputs": {f"fork_y{i}": {"expected": vals, "width": 7, "signed": True} for i in range(3)}})
    return blocks, cases


def test_skid_buffer_passes_every_beat_in_order_with_a_registered_ready():
    """:class:`SkidBuffer` under random valid and ready: every beat once, in order; a beat per clock
    while ``y`` is always ready (no added latency); and ``x.ready`` never follows ``y.ready`` within a clock."""
    from amaranth.sim import Simulator
    from stream_bench import run_stalled

    rng = np.random.default_rng(7)
    vals = [int(v) for v in rng.integers(-40, 40, size=200)]
    dut = SkidBuffer(signed(7))
    got = run_stalled(dut, vals, lambda ctx, v: ctx.set(dut.x.payload, v), rng.random(2000) < 0.7,
                      rng.random(2000) < 0.5, inp=dut.x, out=dut.y, stop_after=len(vals))
    assert got == vals
    dut = SkidBuffer(signed(7))
    seen = []

    async def bench(ctx):
        i = 0
        for cycle in range(40):
            ctx.set(dut.x.payload, i)
            ctx.set(dut.x.valid, 1)
            ready = cycle < 10 or cycle >= 14  # four clocks of back-pressure
            ctx.set(dut.y.ready, 0)
            await ctx.delay(1e-8)
            before = ctx.get(dut.x.ready)
            ctx.set(dut.y.ready, ready)
            await ctx.delay(1e-8)
            assert ctx.get(dut.x.ready) == before  # a register: y.ready does not reach it
            if ctx.get(dut.y.valid) and ready:
                seen.append((cycle, ctx.get(dut.y.payload)))
            i += ctx.get(dut.x.ready)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # straight through before the stall, the held beat 10 first after it, then 11 … on consecutive clocks
    assert seen[:10] == [(c, c) for c in range(10)]
    assert [v for _, v in seen] == list(range(len(seen)))
    assert [c for c, _ in seen[10:]] == list(range(14, 14 + len(seen) - 10))


def test_weight_packing_round_trips():
    rng = np.random.default_rng(3)
    for w_bits in range(1, 9):
        lim = 1 if w_bits == 1 else 2 ** (w_bits - 1) - 1
        w = rng.integers(-lim, lim + 1, size=(7, 5, 3, 2))
        if w_bits == 1:
            w = np.where(w == 0, 1, w)
        lay = WeightLayout(7, 5, 3, 2, w_bits, taps=6)
        words = pack_weights(w, lay)
        assert len(words) == lay.depth and max(words) < 2**lay.word_bits
        assert lay.memory_bits == lay.depth * 3 * 2 * w_bits  # packed at B_w bits, no byte rounding
        for g in range(lay.groups):
            for t in range(6):
                for j in range(lay.channel_words):
                    grid = unpack_word(words[(g * 6 + t) * lay.channel_words + j], lay)
                    for p in range(3):
                        for l in range(2):
                            o, i = g * 3 + p, j * 2 + l
                            if o < 7 and i < 5:
                                assert grid[p][l] == w[o, i, t // 2, t % 2]
    with pytest.raises(ValueError, match="does not fit"):
        pack_weights(np.array([[8]]), WeightLayout(1, 1, 1, 1, 4))


# every block is also simulated under Verilator inside whole networks by the default run (test_cosim, test_gen_*);
# this bank of isolated blocks under random stalls takes minutes, so it runs with -m slow
@pytest.mark.slow
@pytest.mark.parametrize("full", [False, True])
def test_blocks_against_reference_verilator(tmp_path, full):
    blocks, cases = build_cases(full=full)
    bank = component_bank(blocks)
    src = tmp_path / "blocks.v"
    src.write_text(verilog.convert(bank, name="blocks", emit_src=False))
    config = {"seed": 5, "p_valid": 0.6, "p_ready": 0.6, "max_cycles": 60000, "instances": cases}
    run_cocotb("verilator", [src], "blocks", "bitspike.sim.cocotb_tests.stream_tb", tmp_path, config)
