"""The synaptic engine's sub-blocks, each against its own reference model in amaranth.sim.

Window/address generator (linear and sliding window, against the index
arithmetic), PE array (against products of decoded weights, with its
latency) and drain (holding queue, bias, requantizer and skid under output
stalls); the neuron stage is in ``test_rtl_neuron.py``. Every check is an
integer equality; stalls are seeded.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth import signed
from amaranth.sim import Simulator
from stream_bench import run_drain_stalled, run_stalled

from bitspike.analysis import LayerRanges, Range
from bitspike.manifest import Requant
from bitspike.rtl_templates.drain import Drain, drain_reference
from bitspike.rtl_templates.neuron import membrane_range, neuron_reference
from bitspike.rtl_templates.pe import PRODUCT_STAGES, PEArray, pe_array_reference
from bitspike.rtl_templates.synapse import SynapticEngine
from bitspike.rtl_templates.window import (ConvAddressGenerator, LinearAddressGenerator, WindowGeometry,
                                           address_reference, default_address_generator)



def _sim(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


# ---- window/address generator

GEOMETRIES = [
    WindowGeometry(in_hw=(1, 1), kernel=(1, 1), channel_words=1, out_groups=1),
    WindowGeometry(in_hw=(1, 1), kernel=(1, 1), channel_words=5, out_groups=3),
    WindowGeometry(in_hw=(5, 4), kernel=(3, 3), channel_words=2, out_groups=2),
    WindowGeometry(in_hw=(5, 5), kernel=(3, 3), stride=(2, 2), padding=(1, 1), channel_words=1, out_groups=2),
    WindowGeometry(in_hw=(6, 5), kernel=(2, 3), stride=(2, 1), padding=(0, 1), channel_words=3, out_groups=1),
    WindowGeometry(in_hw=(7, 7), kernel=(3, 3), stride=(3, 3), channel_words=1, out_groups=1),  # skips the last row
    WindowGeometry(in_hw=(1, 1), kernel=(1, 1), padding=(1, 1), channel_words=2, out_groups=1),
    # grouped: depthwise (one word per group), and two groups of two words with two output groups each
    WindowGeometry(in_hw=(4, 4), kernel=(3, 3), padding=(1, 1), channel_words=3, out_groups=3, conv_groups=3),
    WindowGeometry(in_hw=(5, 4), kernel=(2, 2), stride=(2, 1), channel_words=4, out_groups=4, conv_groups=2),
]


def test_window_reference_addresses_are_the_index_arithmetic():
    geo = GEOMETRIES[3]
    ref = address_reference(geo)
    assert len(ref) == geo.words_per_frame == 3 * 3 * 2 * 9
    # output pixel (1, 2), group 0, tap (0, 0): ih = 1·2 − 1 = 1, iw = 2·2 − 1 = 3
    e = ref[(1 * 3 + 2) * 2 * 9]
    assert (e["local"], e["pad"], e["first"], e["waddr"]) == (1 * 5 + 3, 0, 1, 0)
    assert ref[0]["pad"] == 1 and ref[-1]["frame_last"] == 1 and sum(r["frame_last"] for r in ref) == 1
    assert not GEOMETRIES[5].reads_last and GEOMETRIES[2].reads_last
    # grouped: output group 3 (the second of group 1) reads group 1's words, 2 … 3 of each pixel's 4
    grp = address_reference(GEOMETRIES[8])
    per_group = 2 * 2 * 2  # taps × group words
    assert [e["local"] % 4 for e in grp[3 * per_group:4 * per_group]] == [2, 3] * 4
    with pytest.raises(ValueError, match="conv_groups"):
        WindowGeometry(in_hw=(2, 2), kernel=(1, 1), channel_words=3, out_groups=2, conv_groups=2)


@pytest.mark.parametrize("gi", range(len(GEOMETRIES)))
def test_address_generator_follows_its_reference(gi):
    geo = GEOMETRIES[gi]
    dut = default_address_generator(geo)
    assert isinstance(dut, LinearAddressGenerator if geo.is_pointwise else ConvAddressGenerator)
    want = address_reference(geo) * 2  # two frames: the counters wrap back to the start
    rng = random.Random(gi)
    got = []
    fields = ("local", "waddr", "first", "word_last", "last_group", "frame_last") + (("pad",) if not geo.is_pointwise else ())

    async def bench(ctx):
        while len(got) < len(want):
            issue = rng.random() < 0.7
            ctx.set(dut.issue, issue)
            if issue:
                got.append({f: ctx.get(getattr(dut, f)) for f in fields})
            await ctx.tick()

    _sim(dut, bench)
    assert got == [{f: w[f] for f in fields} for w in want]


def test_linear_generator_refuses_a_window():
    with pytest.raises(ValueError, match="1x1"):
        LinearAddressGenerator(GEOMETRIES[2])


# ---- PE array

@pytest.mark.parametrize("pes,lanes,w_bits,count_bits,dsp,clear", [
    (1, 1, 1, 1, None, False), (3, 4, 2, 3, None, False), (2, 5, 8, 8, None, False), (2, 3, 8, 8, 2, False),
    (4, 2, 5, 6, 0, False), (1, 7, 3, 9, None, False),
    # wide in logic: the count cut, then the weight
    (2, 2, 8, 8, 0, False), (2, 3, 5, 9, 0, False),
    # clear_on_last: the same sums at the same clocks (the accumulators cleared after a last word)
    (1, 1, 1, 1, None, True), (3, 4, 2, 3, None, True), (2, 3, 8, 8, 2, True), (2, 2, 8, 8, 0, True),
    # const_weights (one weight word, its codes constants): narrow, wide in logic, DSP
    (3, 4, 2, 3, None, "const"), (4, 3, 8, 8, 0, "const"), (2, 3, 8, 8, 2, "const"), (2, 4, 1, 2, None, "const")])
def test_pe_array_sums_groups_with_its_latency(pes, lanes, w_bits, count_bits, dsp, clear):
    rng = random.Random(pes * 100 + lanes * 10 + w_bits)
    lim = (1 << (w_bits - 1)) - 1

    def code():
        if w_bits == 1:
            return rng.randint(0, 1)
        if w_bits == 2:
            return rng.choice([0, 1, 3])  # −1 … 1
        return rng.randint(-lim, lim) & ((1 << w_bits) - 1)

    def codes():
        return [[code() for _ in range(lanes)] for _ in range(pes)]

    const = None
    if clear == "const":  # every word carries the same codes (the extremes among them); the port is not read
        const_codes = codes()
        if w_bits > 2:
            const_codes[0][0], const_codes[-1][-1] = (-lim) & ((1 << w_bits) - 1), lim
        const = sum(c << ((p * lanes + l) * w_bits) for p, row in enumerate(const_codes) for l, c in enumerate(row))

        def codes():
            return [list(row) for row in const_codes]
    dut = PEArray(pes=pes, lanes=lanes, w_bits=w_bits, count_bits=count_bits, psum_shape=signed(32), dsp_products=dsp,
                  clear_on_last=clear is True, const_weights=const)

    words, beats = [], []  # beats: (valid, word) per clock; an invalid beat carries junk the array ignores
    for _ in range(12):
        n = rng.randint(1, 4)
        for j in range(n):
            while rng.random() < 0.3:
                beats.append((0, (codes(),
                                  [rng.randint(0, (1 << count_bits) - 1) for _ in range(lanes)],
                                  rng.randint(0, 1), rng.randint(0, 1), rng.randint(0, 1))))
            w = (codes(),
                 [rng.choice([0, (1 << count_bits) - 1, rng.randint(0, (1 << count_bits) - 1)]) for _ in range(lanes)],
                 int(j == 0), int(j == n - 1), rng.randint(0, 1))
            words.append(w)
            beats.append((1, w))
    want = pe_array_reference(words, w_bits)
    got, last_at, out_at = [], [], []

    async def bench(ctx):
        for cycle in range(len(beats) + dut.latency + 2):
            if cycle < len(beats):
                valid, (codes, counts, first, last, last_group) = beats[cycle]
                for p in range(pes):
                    for l in range(lanes):
                        ctx.set(dut.word.weights[p][l], codes[p][l])
                for l in range(lanes):
                    ctx.set(dut.word.counts[l], counts[l])
                ctx.set(dut.tag, {"valid": valid, "first": first, "last": last, "last_group": last_group})
                if valid and last:
                    last_at.append(cycle)
            else:
                ctx.set(dut.tag.valid, 0)
            await ctx.delay(1e-7)
            if ctx.get(dut.o.valid):
                got.append(([ctx.get(dut.o.payload.psum[p]) for p in range(pes)], ctx.get(dut.o.payload.last_group)))
                out_at.append(cycle)
            await ctx.tick()

    _sim(dut, bench)
    assert got == want and len(want) == 12
    assert out_at == [c + dut.latency for c in last_at]
    assert dut.latency == 1 + PRODUCT_STAGES + (lanes - 1).bit_length()


def test_pe_array_rejects_bad_shape():
    with pytest.raises(ValueError, match="lanes"):
        PEArray(pes=1, lanes=0, w_bits=2, count_bits=2, psum_shape=signed(8))


# ---- drain

def _requant(rng, out_c):
    mult = np.array([rng.choice([-7, 0, 1, 5, 300, rng.randint(-2000, 2000)]) for _ in range(out_c)])
    bias = np.array([rng.randint(-5000, 5000) for _ in range(out_c)])
    return Requant(multiplier=mult, bias=bias, shift=rng.randint(0, 9), lo=-rng.randint(0, 20), hi=rng.randint(1, 40))


@pytest.mark.parametrize("pes,out_c,requantized,seed", [(1, 1, True, 0), (3, 7, True, 1), (4, 4, False, 2), (2, 5, False, 3),
                                                        (5, 11, True, 4)])
def test_drain_emits_every_channel_in_order_under_stalls(pes, out_c, requantized, seed):
    rng = random.Random(seed)
    bias = [rng.choice([0, 3, rng.randint(-300, 300)]) for _ in range(out_c)]
    if seed == 2:
        bias = [17] * out_c  # every channel alike: the bias is a constant, not a ROM
    rq = _requant(rng, out_c) if requantized else None
    out_shape = signed(8) if requantized else signed(14)
    dut = Drain(pes=pes, bias=bias, psum_shape=signed(12), acc_shape=signed(13), out_shape=out_shape, requant=rq,
                product_shape=signed(40) if requantized else None)
    groups_n = -(-out_c // pes)
    groups = [[rng.choice([-2048, 2047, rng.randint(-2048, 2047)]) for _ in range(pes)] for _ in range(4 * groups_n)]
    want = drain_reference(groups, bias, rq, pes)
    assert run_drain_stalled(dut, groups, groups_n, rng, len(want)) == want


def test_drain_refuses_more_pes_than_channels():
    with pytest.raises(ValueError, match="pes"):
        Drain(pes=3, bias=[0, 0], psum_shape=signed(4), acc_shape=signed(5), out_shape=signed(5))


# ---- the whole engine with grouped convolution (the window generator's groups), against numpy

def _grouped_reference(xs, weight, bias, groups, stride, pad, s_bits, t, k, requant):
    """HWC output stream of a grouped conv on the neuron counts of ``xs`` ([n, c, h, w]), plus bias/requant."""
    counts = np.vectorize(lambda v: neuron_reference(int(v), k, s_bits, t)[1])(xs)
    counts = np.pad(counts, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    o_n, cg, kh, kw = weight.shape
    per_q = o_n // groups
    ho = (counts.shape[2] - kh) // stride + 1
    wo = (counts.shape[3] - kw) // stride + 1
    out = []
    for n in range(xs.shape[0]):
        for oh in range(ho):
            for ow in range(wo):
                for o in range(o_n):
                    q = o // per_q
                    win = counts[n, q * cg:(q + 1) * cg, oh * stride:oh * stride + kh, ow * stride:ow * stride + kw]
                    acc = int((weight[o] * win).sum()) + int(bias[o])
                    if requant is not None:
                        acc = max(requant.lo, min(requant.hi, (acc * int(requant.multiplier[o]) + int(requant.bias[o])
                                                               + ((1 << requant.shift) >> 1)) >> requant.shift))
                    out.append(acc)
    return out


def _engine_ranges(x, weight, bias, s_bits, t, k, requant):
    """The ranges the analysis would give the engine (built here: the manifest has no grouped conv yet)."""
    counts = [neuron_reference(v, k, s_bits, t)[1] for v in range(x.lo, x.hi + 1)]
    count = Range(0, max(counts))
    w2 = weight.reshape(weight.shape[0], -1)
    lo = np.minimum(0, np.where(w2 < 0, w2, 0).sum(axis=1) * count.hi) + bias
    hi = np.maximum(0, np.where(w2 > 0, w2, 0).sum(axis=1) * count.hi) + bias
    acc = Range(int(min(0, lo.min())), int(max(0, hi.max())))
    product, out = None, acc
    if requant is not None:
        ends = [a * int(mm) + int(b) + ((1 << requant.shift) >> 1)
                for mm, b in zip(requant.multiplier, requant.bias) for a in (acc.lo, acc.hi)]
        product, out = Range(min(0, min(ends)), max(0, max(ends))), Range(requant.lo, requant.hi)
    return LayerRanges(name="grouped", op="conv2d", x=x, out=out, v=membrane_range(x, k, s_bits, t), count=count,
                       acc=acc, product=product)


@pytest.mark.parametrize("case", [
    # (groups, in, out, hw, kernel, stride, pad, pes, lanes, w_bits, requantized)
    (4, 4, 4, 4, 3, 1, 1, 1, 1, 3, False),  # depthwise
    (2, 6, 4, 5, 2, 2, 0, 2, 2, 1, True),  # two groups of 3 channels: a word's second lane pads a group
    (1, 3, 2, 4, 3, 1, 1, 2, 2, 2, False),  # dense, through the same harness
], ids=["depthwise", "groups2", "dense"])
def test_grouped_conv_engine_matches_numpy(case):
    groups, c_in, c_out, hw, ks, stride, pad, pes, lanes, w_bits, requantized = case
    rng = np.random.default_rng(groups * 10 + c_in)
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
    dut = SynapticEngine(weight=weight, bias=bias, in_hw=(hw, hw), stride=(stride, stride), padding=(pad, pad),
                         w_bits=w_bits, s_bits=s_bits, timesteps=t, k=k, requant=rq, ranges=ranges, pes=pes,
                         lanes=lanes, groups=groups)
    xs = rng.integers(x.lo, x.hi + 1, size=(2, c_in, hw, hw))
    want = _grouped_reference(xs, weight, bias, groups, stride, pad, s_bits, t, k, rq)
    beats = [int(v) for v in xs.transpose(0, 2, 3, 1).reshape(-1)]  # HWC, channel fastest
    srng = random.Random(groups)
    p_valid = [srng.random() < 0.8 for _ in range(20000)]
    p_ready = [srng.random() < 0.7 for _ in range(20000)]
    got = run_stalled(dut, beats, lambda ctx, b: ctx.set(dut.x.payload, b), p_valid, p_ready, inp=dut.x, out=dut.y,
                      stop_after=len(want))
    assert got == want


def test_grouped_engine_refuses_groups_that_do_not_fit():
    w = np.ones((4, 2, 1, 1), dtype=np.int64)
    r = _engine_ranges(Range(0, 3), w, np.zeros(4, dtype=np.int64), 2, 1, 0, None)
    kw = dict(bias=np.zeros(4), w_bits=2, s_bits=2, timesteps=1, k=0, requant=None, ranges=r)
    with pytest.raises(ValueError, match="groups"):
        SynapticEngine(weight=w, groups=3, **kw)
    with pytest.raises(ValueError, match="pes 4 must divide"):
        SynapticEngine(weight=w, groups=2, pes=4, **kw)
    with pytest.raises(ValueError, match="lanes"):
        SynapticEngine(weight=w, groups=2, lanes=3, **kw)
