"""Line-buffer convolution (bitspike.rtl_templates.linebuf): sizes, the address generator against its
reference, the engine bit-exact against numpy through the smallest buffer under stalls, and the planner's
memory and cycle model of it against Verilator."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.sim import Simulator
from stream_bench import run_frames_bursty
from test_rtl_engine_blocks import GEOMETRIES, _engine_ranges, _grouped_reference

from bitspike.analysis import Range
from bitspike.manifest import Requant
from bitspike.rtl_templates.linebuf import (LineBufferAddressGenerator, line_buffer_reference, line_buffer_size,
                                            window_bounds)
from bitspike.rtl_templates.synapse import SynapticEngine
from bitspike.rtl_templates.window import WindowGeometry

#: the engine tests' sliding windows whose padding is smaller than the kernel (as a manifest's must be)
WINDOWS = [g for g in GEOMETRIES if not g.is_pointwise and all(p < k for p, k in zip(g.padding, g.kernel))]


def _sim(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_sizes_are_the_window_spans():
    # 28×28, one word a pixel, 3×3 without padding: a window spans 2 rows and 3 pixels
    geo = WindowGeometry(in_hw=(28, 28), kernel=(3, 3))
    size = line_buffer_size(geo)
    assert size.min_words == 2 * 28 + 3 and size.frame_words == 784
    # look-ahead across the frame: the next frame's first window (2 rows + 3 pixels) while the boundary is
    # the last window's corner (row 25, column 25); and K_h = 3 rows of margin
    assert size.words == 784 + 2 * 28 + 3 - (25 * 28 + 25) + 3 * 28
    # padding: the first windows' boundary stays at 0 until the corner leaves the top padding
    pad = WindowGeometry(in_hw=(6, 6), kernel=(3, 3), padding=(1, 1), channel_words=2)
    b = window_bounds(pad)
    assert b[0] == (0, (1 * 6 + 1 + 1) * 2) and b[6] == (0, (2 * 6 + 1 + 1) * 2) and b[7] == (0, (2 * 6 + 2 + 1) * 2)
    # output row 2: corner (1, −1), the padding column left of row 1 clips to its start; then (1, 0)
    assert b[12] == (1 * 6 * 2, (3 * 6 + 1 + 1) * 2) and b[13] == (1 * 6 * 2, (3 * 6 + 2 + 1) * 2)
    # a map smaller than the look-ahead keeps one frame
    tiny = WindowGeometry(in_hw=(3, 3), kernel=(3, 3), padding=(1, 1))
    assert line_buffer_size(tiny).words == 9


def test_bounds_only_grow_and_cover_each_window():
    for geo in WINDOWS:
        b = window_bounds(geo)
        assert all(b[i][0] <= b[i + 1][0] for i in range(len(b) - 1)), geo
        size = line_buffer_size(geo)
        assert size.min_words <= size.words <= size.frame_words
        per = geo.weight_words
        for i, e in enumerate(line_buffer_reference(geo, size.words, frames=1)):
            bnd, end = b[i // per]
            if not e["pad"]:  # every read word lies in [boundary, end): the buffer holds it
                assert bnd <= e["local"] < end, (geo, i, e)


@pytest.mark.parametrize("gi", range(len(WINDOWS)))
def test_line_buffer_generator_follows_its_reference(gi):
    geo = WINDOWS[gi]
    size = line_buffer_size(geo)
    words = size.min_words if gi % 2 else size.words
    dut = LineBufferAddressGenerator(geo, words=words)
    want = line_buffer_reference(geo, words, frames=3)
    rng = random.Random(gi)
    got = []
    n, f = words, geo.frame_words

    async def bench(ctx):
        while len(got) < len(want):
            issue = rng.random() < 0.7
            ctx.set(dut.issue, issue)
            if issue:
                got.append({"local": ctx.get(dut.local), "pad": ctx.get(dut.pad), "phys": ctx.get(dut.phys),
                            "lim": (ctx.get(dut.lim_same), ctx.get(dut.lim_next))})
            await ctx.tick()

    _sim(dut, bench)
    for i, (g, w) in enumerate(zip(got, want)):
        expect = {"local": w["local"], "pad": w["pad"], "lim": (w["bound"] + n, w["bound"] + n - f)}
        assert {k: g[k] for k in expect} == expect, (i, g, w)
        if not w["pad"]:
            assert g["phys"] == w["phys"], (i, g, w)


def test_line_buffer_generator_refuses_bad_sizes():
    geo = WINDOWS[0]
    size = line_buffer_size(geo)
    with pytest.raises(ValueError, match="line buffer words"):
        LineBufferAddressGenerator(geo, words=size.min_words - 1)
    with pytest.raises(ValueError, match="sliding window"):
        LineBufferAddressGenerator(WindowGeometry(in_hw=(1, 1), kernel=(1, 1)))
    with pytest.raises(ValueError, match="padding smaller"):
        LineBufferAddressGenerator(WindowGeometry(in_hw=(2, 2), kernel=(1, 1), padding=(1, 1)))


@pytest.mark.parametrize("case", [
    # (groups, in, out, (h, w), kernel, stride, pad, pes, lanes, w_bits, requantized, smallest buffer)
    # the default run keeps two (the whole networks of tests/test_gen_cnn.py read line buffers too)
    pytest.param((1, 3, 2, (7, 6), 3, 1, 1, 2, 2, 2, True, True), marks=pytest.mark.slow),  # dense, padded
    pytest.param((1, 2, 3, (9, 8), 3, 2, 1, 3, 1, 3, False, True), marks=pytest.mark.slow),  # stride 2 + padding
    (1, 2, 2, (7, 7), 3, 3, 0, 1, 2, 2, False, True),  # stride 3 leaves the last row unread
    pytest.param((4, 4, 4, (6, 5), 3, 1, 1, 1, 1, 3, False, False), marks=pytest.mark.slow),  # depthwise, default size
    (2, 6, 4, (6, 6), 2, 2, 0, 2, 2, 1, True, True),  # two groups, a word's second lane pads a group
    # fast_paths (the skid buffer at x, the accumulators cleared after a group's last word, registered flags)
    (1, 3, 2, (7, 6), 3, 1, 1, 2, 2, 2, True, True, True),
], ids=["dense", "stride2", "stride3", "depthwise", "groups2", "dense-fast"])
def test_engine_through_the_line_buffer_matches_numpy_under_stalls(case):
    groups, c_in, c_out, hw, ks, stride, pad, pes, lanes, w_bits, requantized, smallest, *fast = case
    rng = np.random.default_rng(sum(hw) * 7 + groups)
    s_bits, t, k = 2, 2, 1
    lim = 1 if w_bits == 1 else (1 << (w_bits - 1)) - 1
    weight = rng.integers(-lim, lim + 1, size=(c_out, c_in // groups, ks, ks))
    if w_bits == 1:
        weight = np.where(weight == 0, 1, weight)
    bias = rng.integers(-6, 7, size=c_out)
    rq = None
    if requantized:
        rq = Requant(multiplier=rng.integers(1, 40, size=c_out), bias=rng.integers(-30, 30, size=c_out), shift=4,
                     lo=-3, hi=12)
    x = Range(-6, 9)
    ranges = _engine_ranges(x, weight, bias, s_bits, t, k, rq)
    factory = None
    if smallest:
        def factory(geo):
            return LineBufferAddressGenerator(geo, words=line_buffer_size(geo).min_words)
    dut = SynapticEngine(weight=weight, bias=bias, in_hw=hw, stride=(stride, stride), padding=(pad, pad),
                         w_bits=w_bits, s_bits=s_bits, timesteps=t, k=k, requant=rq, ranges=ranges, pes=pes,
                         lanes=lanes, groups=groups, address_generator=factory, fast_paths=bool(fast))
    assert dut.line_buffer
    frames = 3
    xs = rng.integers(x.lo, x.hi + 1, size=(frames, c_in, *hw))
    want = _grouped_reference(xs, weight, bias, groups, stride, pad, s_bits, t, k, rq)
    assert run_frames_bursty(dut, xs, sum(hw), 40000, len(want)) == want


def test_frame_buffer_engine_is_still_built_on_request():
    w = np.ones((2, 1, 3, 3), dtype=np.int64)
    r = _engine_ranges(Range(0, 3), w, np.zeros(2, dtype=np.int64), 2, 1, 0, None)
    kw = dict(weight=w, bias=np.zeros(2), in_hw=(5, 5), w_bits=2, s_bits=2, timesteps=1, k=0, requant=None, ranges=r)
    assert SynapticEngine(**kw).frame_memory_words == line_buffer_size(WindowGeometry(in_hw=(5, 5), kernel=(3, 3))).words
    assert SynapticEngine(**kw, line_buffer=False).frame_memory_words == 2 * 25


# ---- whole networks through Verilator (the fast C++ harness): every tap bit-exact, the planner's cycles

def _cosim_check(manifest, out, samples=4, **opts):
    """Generate with taps, co-simulate alone and back to back under stalls; every tap must agree and the
    measured latency and interval lie within 5% of the planner's."""
    from bitspike.gen import generate
    from bitspike.sim.cosim import CoSim
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    report = generate(manifest, out / "gen", debug_taps=True, **opts)
    x = np.random.default_rng(1).integers(0, 2**manifest.input.bits, size=(samples, *manifest.input.shape))
    sim = CoSim(out / "gen", cache_dir=out / "cache")
    ref = ManifestGoldenTaps(manifest, sim.design.taps)
    seqs = ref.sequences(x)
    alone = sim.run(x, trace=True, sequential=True)
    exact, first = compare_all(alone, seqs, sim.design.taps, ref)
    assert exact == samples, first.describe()
    stalled = sim.run(x, trace=True, stall_in=0.3, stall_out=0.3)
    exact, first = compare_all(stalled, seqs, sim.design.taps, ref)
    assert exact == samples, first.describe()
    free = sim.run(x, processes=1)
    want_lat, want_ii = report["cycles_per_inference"], report["initiation_interval"]
    assert abs(int(alone.cycles.max()) - want_lat) <= 0.05 * want_lat, (alone.cycles, want_lat)
    assert abs(free.initiation_interval - want_ii) <= 0.05 * want_ii, (free.initiation_interval, want_ii)
    return report


@pytest.mark.slow
def test_fashion_cnn_through_line_buffers_bit_exact_and_timed(tmp_path):
    from bitspike.testing import fashion_cnn_shaped

    m = fashion_cnn_shaped(0)
    report = _cosim_check(m, tmp_path, max_luts=3000, fuse="off")
    conv = [l for l in report["layers"] if l["op"] == "conv2d"]
    assert [l["activation_memory"]["kind"] for l in conv] == ["line", "line"]
    # O(K·W·C): at most 3·K_h rows of frame words (look-ahead and margin) plus the zero word, against two frames
    for l in conv:
        row_words = l["in_hw"][1] * -(-l["in_features"] // l["lanes"])
        assert l["activation_memory"]["words"] <= 3 * l["kernel"][0] * row_words + 1 < l["activation_memory"]["frame_words"]


@pytest.mark.slow
def test_depthwise_and_strided_convs_through_line_buffers(tmp_path):
    from bitspike.manifest import InputSpec
    from bitspike.testing import NetBuilder

    b = NetBuilder(np.random.default_rng(4), InputSpec(shape=(2, 9, 8), bits=8, scale=1 / 255))
    b.synaptic("conv2d", 4, 8, 8, 1, 0, 2, 3, kernel=3, stride=2, padding=1)
    b.synaptic("conv2d", 4, 3, 3, 1, 2, 2, 2, kernel=3, padding=1, groups=4)
    b.flatten()
    b.synaptic("linear", 5, 2, 2, 1, 2, None, None)
    _cosim_check(b.manifest("dw-strided"), tmp_path)
