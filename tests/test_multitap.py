"""The window-parallel ("multi-tap") conv engine (bitspike.rtl_templates.multitap): the engine bit-exact against
numpy under stalls (kernels, strides, padding, channel words, vector streams, a window row or the whole window a
clock), its refusals, the planner's fold syntax and cycle model against the engine's clocks, and whole networks
through Verilator at every tap, alone and stalled, at the planner's exact cycles."""

from __future__ import annotations

import random

import numpy as np
import pytest
from stream_bench import output_clocks, run_frames_bursty, run_stalled
from test_rtl_engine_blocks import _engine_ranges, _grouped_reference

from bitspike.analysis import Range
from bitspike.manifest import Requant
from bitspike.rtl_templates.multitap import MultiTapEngine, MultiTapLayout, pack_multitap_weights


def _engine(case, rng, **extra):
    c_in, c_out, hw, ks, stride, pad, pes, lanes, taps, w_bits, requantized = case
    s_bits, t, k = 2, 2, 1
    kh, kw = (ks, ks) if isinstance(ks, int) else ks
    lim = 1 if w_bits == 1 else (1 << (w_bits - 1)) - 1
    weight = rng.integers(-lim, lim + 1, size=(c_out, c_in, kh, kw))
    if w_bits == 1:
        weight = np.where(weight == 0, 1, weight)
    bias = rng.integers(-6, 7, size=c_out)
    rq = None
    if requantized:
        rq = Requant(multiplier=rng.integers(1, 40, size=c_out), bias=rng.integers(-30, 30, size=c_out), shift=4,
                     lo=-3, hi=12)
    x = Range(-6, 9)
    ranges = _engine_ranges(x, weight, bias, s_bits, t, k, rq)
    dut = MultiTapEngine(weight=weight, bias=bias, in_hw=hw, stride=(stride, stride), padding=(pad, pad),
                         w_bits=w_bits, s_bits=s_bits, timesteps=t, k=k, requant=rq, ranges=ranges, pes=pes,
                         lanes=lanes, taps=taps, **extra)
    return dut, weight, bias, rq, x


def _reference(xs, weight, bias, stride, pad, rq):
    return _grouped_reference(xs, weight, bias, 1, stride, pad, 2, 2, 1, rq)


CASES = [
    # (in, out, (h, w), kernel, stride, pad, pes, lanes, taps, w_bits, requantized)
    (1, 4, (7, 6), 3, 1, 1, 4, 1, 9, 2, True),  # the whole 3x3 window of one channel a clock, padded
    (3, 2, (8, 7), 3, 2, 1, 2, 2, 9, 3, False),  # stride 2 + padding, two channel words (3 channels, 2 lanes)
    (2, 3, (7, 7), 3, 3, 0, 3, 2, 3, 2, True),  # a window row a clock; stride 3 leaves the last row unread
    (2, 2, (6, 5), (2, 3), 1, 1, 1, 1, 6, 1, False),  # a 2x3 kernel, one-bit weights, one lane of two channels
    (4, 4, (5, 6), 3, 2, 0, 2, 4, 3, 2, False),  # a window row, stride 2, four lanes
]
IDS = ["win9-pad", "win9-stride2-words", "row3-stride3", "win6-2x3", "row3-stride2-lanes4"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_multitap_engine_matches_numpy_under_stalls(case):
    rng = np.random.default_rng(sum(case[2]) * 7 + case[8])
    dut, weight, bias, rq, x = _engine(case, rng)
    c_in, hw, stride, pad = case[0], case[2], case[4], case[5]
    frames = 3
    xs = rng.integers(x.lo, x.hi + 1, size=(frames, c_in, *hw))
    want = _reference(xs, weight, bias, stride, pad, rq)
    assert run_frames_bursty(dut, xs, sum(hw), 20000, len(want)) == want


def test_multitap_engine_with_fast_paths():
    """``fast_paths`` (accumulators cleared after a group's last word, the drain's registered flags): the same
    outputs under stalls."""
    case = CASES[1]
    rng = np.random.default_rng(11)
    dut, weight, bias, rq, x = _engine(case, rng, fast_paths=True)
    xs = rng.integers(x.lo, x.hi + 1, size=(2, case[0], *case[2]))
    want = _reference(xs, weight, bias, case[4], case[5], rq)
    beats = [int(v) for v in xs.transpose(0, 2, 3, 1).reshape(-1)]
    srng = random.Random(5)
    p_valid = [srng.random() < 0.7 for _ in range(8000)]
    p_ready = [srng.random() < 0.6 for _ in range(8000)]
    got = run_stalled(dut, beats, lambda ctx, b: ctx.set(dut.x.payload, b), p_valid, p_ready, inp=dut.x, out=dut.y,
                      stop_after=len(want))
    assert got == want


def test_multitap_engine_with_vector_streams():
    rng = np.random.default_rng(5)
    case = (4, 4, (6, 6), 3, 1, 1, 4, 4, 9, 2, True)
    dut, weight, bias, rq, x = _engine(case, rng, vec_in=2, vec_out=2)
    frames = 2
    xs = rng.integers(x.lo, x.hi + 1, size=(frames, 4, 6, 6))
    want = _reference(xs, weight, bias, 1, 1, rq)
    flat = xs.transpose(0, 2, 3, 1).reshape(-1, 2)  # two channels a beat
    beats = [tuple(int(v) for v in b) for b in flat]

    def put(ctx, b):
        for i, v in enumerate(b):
            ctx.set(dut.x.payload[i], v)

    srng = random.Random(3)
    p_valid = [srng.random() < 0.7 for _ in range(8000)]
    p_ready = [srng.random() < 0.7 for _ in range(8000)]
    got = run_stalled(dut, beats, put, p_valid, p_ready, inp=dut.x, out=dut.y, stop_after=len(want) // 2)
    assert [v for beat in got for v in beat] == want


def test_weight_layout_and_refusals():
    w = np.arange(2 * 3 * 3 * 3).reshape(2, 3, 3, 3) % 3 - 1
    lay = MultiTapLayout(2, 3, pes=1, lanes=3, w_bits=2, kernel=(3, 3), taps=9)
    assert (lay.depth, lay.word_bits) == (2, 1 * 9 * 3 * 2) and lay.memory_bits == 2 * 3 * 9 * 2
    words = pack_multitap_weights(w, lay)
    # word 1 (output 1), tap t = ty·3 + tx, lane l at bit (t·3 + l)·2
    code = (words[1] >> ((4 * 3 + 2) * 2)) & 3
    assert code == (w[1, 2, 1, 1] & 3)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"taps per clock must be one of \[1, 3, 9\]"):
        _engine((1, 2, (5, 5), 3, 1, 0, 1, 1, 4, 2, False), rng)
    with pytest.raises(ValueError, match="plain SynapticEngine"):
        _engine((1, 2, (5, 5), 3, 1, 0, 1, 1, 1, 2, False), rng)


def _node(case, vec_in=1, vec_out=1):
    from bitspike.ops.conv2d import Conv2dNode

    c_in, c_out, hw, ks, stride, pad, pes, lanes, taps = case[:9]
    kh, kw = (ks, ks) if isinstance(ks, int) else ks
    ho, wo = (hw[0] + 2 * pad - kh) // stride + 1, (hw[1] + 2 * pad - kw) // stride + 1
    return Conv2dNode(index=0, name="c", op="conv2d", engine="e", in_features=c_in, out_features=c_out, pes=pes,
                      lanes=lanes, widths={"count": 2}, in_hw=hw, out_hw=(ho, wo), kernel=(kh, kw),
                      stride=(stride, stride), padding=(pad, pad), taps=taps, vec_in=vec_in, vec_out=vec_out)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_planner_gives_every_output_clock(case):
    """One frame from reset, inputs one a clock, outputs always taken: every
    output leaves at the clock the planner's model says."""
    from types import SimpleNamespace

    from bitspike.ops.conv2d import CONV2D

    rng = np.random.default_rng(3)
    dut, weight, bias, rq, x = _engine(case, rng)
    node = _node(case)
    layer = SimpleNamespace(requant=rq)
    frame = [int(v) for v in rng.integers(x.lo, x.hi + 1, size=node.in_elements)]
    got = output_clocks(dut, frame, 20 * len(frame) + 200)
    assert got == CONV2D.arrival_times(node, layer, None, [list(range(len(frame)))])


def test_planner_busy_cycles_are_the_engines_frame_interval():
    """Frames back to back, inputs always offered: the clocks between the second and third frames' last
    outputs are the model's busy cycles (the interval the planner takes)."""
    from amaranth.sim import Simulator

    from bitspike.ops.conv2d import CONV2D

    for case in (CASES[0], CASES[2], CASES[4]):
        rng = np.random.default_rng(4)
        dut, weight, bias, rq, x = _engine(case, rng)
        node = _node(case)
        per = node.out_elements
        beats = [int(v) for v in rng.integers(x.lo, x.hi + 1, size=4 * node.in_elements)]
        ends = []

        async def bench(ctx, beats=beats, dut=dut, per=per, ends=ends):
            ctx.set(dut.y.ready, 1)
            i = n = 0
            for c in range(60 * len(beats)):
                ctx.set(dut.x.valid, i < len(beats))
                if i < len(beats):
                    ctx.set(dut.x.payload, beats[i])
                await ctx.delay(1e-7)
                if i < len(beats) and ctx.get(dut.x.ready):
                    i += 1
                if ctx.get(dut.y.valid):
                    n += 1
                    if n % per == 0:
                        ends.append(c)
                        if len(ends) == 3:
                            return
                await ctx.tick()

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(bench)
        sim.run()
        assert ends[2] - ends[1] == CONV2D.busy_cycles(node), case


# ---- whole networks through Verilator: every tap bit-exact alone and stalled, the planner's cycles

def _cosim(manifest, out, fold, samples=3, **opts):
    from bitspike.gen import generate
    from bitspike.sim.cosim import CoSim
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    report = generate(manifest, out / "gen", debug_taps=True, fold=fold, **opts)
    x = np.random.default_rng(1).integers(0, 2**manifest.input.bits, size=(samples, *manifest.input.shape))
    sim = CoSim(out / "gen", cache_dir=out / "cache")
    ref = ManifestGoldenTaps(manifest, sim.design.taps)
    seqs = ref.sequences(x)
    alone = sim.run(x, trace=True, sequential=True)
    exact, first = compare_all(alone, seqs, sim.design.taps, ref)
    assert exact == samples, first.describe()
    stalled = sim.run(x, trace=True, stall_in=0.3, stall_out=0.3, seed=2)
    exact, first = compare_all(stalled, seqs, sim.design.taps, ref)
    assert exact == samples, first.describe()
    free = sim.run(x, processes=1)
    return report, alone, free


def _small_cnn(seed):
    from bitspike.manifest import InputSpec
    from bitspike.testing import NetBuilder

    b = NetBuilder(np.random.default_rng(seed), InputSpec(shape=(2, 9, 8), bits=8, scale=1 / 255))
    b.synaptic("conv2d", 4, 2, 2, 2, 0, 2, 2, kernel=3, stride=2, padding=1)  # 2-bit spikes, T = 2
    b.synaptic("conv2d", 6, 2, 2, 1, 2, 2, 2, kernel=3, padding=1)
    b.pool("maxpool")
    b.flatten()
    b.synaptic("linear", 5, 2, 2, 1, 2, None, None)
    return b.manifest(f"mtap{seed}")


@pytest.mark.slow  # two Verilator builds: minutes
@pytest.mark.parametrize("fold,fuse,fast", [
    ("conv0=2x2t9,conv1=6x4t3x2,line2=5x2", "off", False),  # two output groups; a window row; a vector stream, a pool
    ("conv0=4x1t9x2,conv1=3x2t9,line2=1x6", "off", False),  # vec_out into a multi-tap conv; output groups, words
    ("conv0=2x2t9,conv1=6x4t3x2,line2=5x2", "auto", False),  # conv0 → conv1 fused: thresholds out, counts in
    ("conv0=4x1t9x2,conv1=3x2t9,line2=1x6", "off", True),  # fast paths: the skid buffers in and out of the neurons
], ids=["groups-row-vec", "vecin-words", "fused", "vecin-words-fast"])
def test_small_cnn_bit_exact_at_the_planners_cycles(tmp_path, fold, fuse, fast):
    report, alone, free = _cosim(_small_cnn(4), tmp_path, fold, fuse=fuse, fast_paths=fast)
    if fuse == "auto":
        assert [b["fused"] for b in report["fusion"]][:1] == [True]
    assert [l.get("taps", 1) for l in report["layers"] if l["op"] == "conv2d"] == [9, 3 if "t3" in fold else 9]
    assert int(alone.cycles.max()) == report["cycles_per_inference"]
    assert abs(free.initiation_interval - report["initiation_interval"]) <= 0.05 * report["initiation_interval"]


def test_fold_syntax_and_refusals():
    from bitspike.errors import HardwareError
    from bitspike.gen.plan import make_plan, parse_fold
    from bitspike.testing import random_cnn

    assert parse_fold("conv0=16x1t9,conv1=32x16t3x8,fc=4x2") == {"conv0": (16, 1, 1, 9), "conv1": (32, 16, 8, 3),
                                                                  "fc": (4, 2)}
    assert parse_fold({"conv0": (2, 1, 1, 9)}) == {"conv0": (2, 1, 1, 9)}
    with pytest.raises(HardwareError, match=r"LANEStTAPS"):
        parse_fold("conv0=16x1t")
    m = random_cnn(1, image=(1, 8, 8), channels=(3, 4))
    names = [l.name for l in m.layers]
    lin = next(n for n in names if n.startswith("line"))
    plan = make_plan(m, fuse="off", fold="conv0=3x1t9,conv1=2x3t3")
    conv = [n for n in plan.layers if n.op == "conv2d"]
    # one 8x8 output pixel a clock, its 3 outputs leaving one a clock
    assert [n.taps for n in conv] == [9, 3] and conv[0].cycles == 3 * 64
    assert conv[0].to_json()["taps"] == 9 and conv[0].to_json()["activation_memory"]["kind"] == "banks"
    with pytest.raises(HardwareError, match=r"fold for 'conv0': taps per clock must be one of \[1, 3, 9\]"):
        make_plan(m, fuse="off", fold="conv0=3x1t4")
    with pytest.raises(HardwareError, match=f"fold for '{lin}': a linear layer reads no kernel taps"):
        make_plan(m, fuse="off", fold=f"{lin}=1x1t9")
    # zero skipping walks one tap a clock: a multi-tap engine stays dense (the pass says why)
    from bitspike.gen.zeroskip import zero_skip_decisions

    assert zero_skip_decisions(plan, "on")["conv1"] == (False, "its multi-tap engine reads 3 taps a clock "
                                                                "(skipping walks one)")


def test_grouped_conv_refuses_taps():
    from bitspike.errors import HardwareError
    from bitspike.gen.plan import make_plan
    from bitspike.manifest import InputSpec
    from bitspike.testing import NetBuilder

    b = NetBuilder(np.random.default_rng(4), InputSpec(shape=(4, 6, 6), bits=8, scale=1 / 255))
    b.synaptic("conv2d", 4, 2, 2, 1, 2, 2, 2, kernel=3, padding=1, groups=4)
    b.flatten()
    b.synaptic("linear", 3, 2, 2, 1, 2, None, None)
    m = b.manifest("dw")
    with pytest.raises(HardwareError, match="fold for 'conv0': a multi-tap engine reads dense windows only"):
        make_plan(m, fuse="off", fold="conv0=1x1t9")
    assert all(getattr(n, "taps", 1) == 1 for n in make_plan(m, fuse="off", multi_tap=True).layers)


def test_auto_folder_picks_taps_only_when_asked():
    from bitspike.gen.boards import device_budget, get_board
    from bitspike.gen.plan import make_plan
    from bitspike.testing import fashion_cnn_shaped

    m = fashion_cnn_shaped(0)
    dev = device_budget(get_board("ulx3s-85f"))
    opts = dict(fold="auto", fuse="off", max_luts=dev.lut, dsp_blocks=dev.dsp, device=dev)
    plain = make_plan(m, **opts)
    assert all(getattr(n, "taps", 1) == 1 for n in plain.layers)
    taps = make_plan(m, **opts, multi_tap=True)
    assert taps.initiation_interval < plain.initiation_interval
    assert any(getattr(n, "taps", 1) > 1 for n in taps.layers)


def _random_case(seed):
    r = random.Random(seed)
    kh, kw = r.choice([1, 2, 3, 5]), r.choice([2, 3, 5])
    ph, pw = r.randrange(kh), r.randrange(kw)
    stride = r.choice([1, 1, 2, 3])
    h, w = r.randint(max(1, kh - 2 * ph), 8), r.randint(max(1, kw - 2 * pw), 8)
    c_in, c_out = r.randint(1, 4), r.randint(1, 5)
    pes = r.choice([d for d in range(1, c_out + 1) if c_out % d == 0])
    lanes = r.randint(1, c_in)
    taps = r.choice(sorted({kw, kh * kw} - {1}) or [kh * kw])
    return (c_in, c_out, (h, w), (kh, kw), stride, (ph, pw), pes, lanes, taps, r.choice([1, 2, 3]), r.random() < 0.5)


@pytest.mark.parametrize("seed", range(12))
def test_random_geometries_match_numpy_and_the_planner(seed):
    """Random kernels (1…5 × 2…5), paddings, strides, channels, folds and taps: the engine against numpy under
    stalls, and every output clock of a frame alone against the planner."""
    from types import SimpleNamespace

    from bitspike.ops.conv2d import CONV2D, Conv2dNode

    c_in, c_out, hw, (kh, kw), stride, (ph, pw), pes, lanes, taps, w_bits, rq_on = _random_case(seed)
    rng = np.random.default_rng(seed)
    lim = 1 if w_bits == 1 else (1 << (w_bits - 1)) - 1
    weight = rng.integers(-lim, lim + 1, size=(c_out, c_in, kh, kw))
    if w_bits == 1:
        weight = np.where(weight == 0, 1, weight)
    bias = rng.integers(-6, 7, size=c_out)
    rq = (Requant(multiplier=rng.integers(1, 40, size=c_out), bias=rng.integers(-30, 30, size=c_out), shift=4,
                  lo=-3, hi=12) if rq_on else None)
    x = Range(-6, 9)
    ranges = _engine_ranges(x, weight, bias, 2, 2, 1, rq)

    def engine():
        return MultiTapEngine(weight=weight, bias=bias, in_hw=hw, stride=(stride, stride), padding=(ph, pw),
                              w_bits=w_bits, s_bits=2, timesteps=2, k=1, requant=rq, ranges=ranges, pes=pes,
                              lanes=lanes, taps=taps)

    xs = rng.integers(x.lo, x.hi + 1, size=(2, c_in, *hw))
    want = _reference_hw(xs, weight, bias, stride, (ph, pw), rq)
    beats = [int(v) for v in xs.transpose(0, 2, 3, 1).reshape(-1)]
    srng = random.Random(seed)
    p_valid = [srng.random() < 0.7 for _ in range(20000)]
    p_ready = [srng.random() < 0.6 for _ in range(20000)]
    dut = engine()
    got = run_stalled(dut, beats, lambda ctx, b: ctx.set(dut.x.payload, b), p_valid, p_ready, inp=dut.x, out=dut.y,
                      stop_after=len(want))
    assert got == want
    ho, wo = (hw[0] + 2 * ph - kh) // stride + 1, (hw[1] + 2 * pw - kw) // stride + 1
    node = Conv2dNode(index=0, name="c", op="conv2d", engine="e", in_features=c_in, out_features=c_out, pes=pes,
                      lanes=lanes, widths={"count": 2}, in_hw=hw, out_hw=(ho, wo), kernel=(kh, kw),
                      stride=(stride, stride), padding=(ph, pw), taps=taps)
    frame = beats[:c_in * hw[0] * hw[1]]
    assert output_clocks(engine(), frame, 40 * len(frame) + 300) == CONV2D.arrival_times(
        node, SimpleNamespace(requant=rq), None, [list(range(len(frame)))])


def _reference_hw(xs, weight, bias, stride, pad, rq):
    """HWC output stream of a conv with a (ph, pw) zero padding on the neuron counts of ``xs``."""
    from bitspike.rtl_templates.neuron import neuron_reference

    ph, pw = pad
    counts = np.vectorize(lambda v: neuron_reference(int(v), 1, 2, 2)[1])(xs)
    counts = np.pad(counts, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    o_n, _, kh, kw = weight.shape
    ho, wo = (counts.shape[2] - kh) // stride + 1, (counts.shape[3] - kw) // stride + 1
    out = []
    for n in range(xs.shape[0]):
        for oh in range(ho):
            for ow in range(wo):
                win = counts[n, :, oh * stride:oh * stride + kh, ow * stride:ow * stride + kw]
                for o in range(o_n):
                    acc = int((weight[o] * win).sum()) + int(bias[o])
                    if rq is not None:
                        acc = max(rq.lo, min(rq.hi, (acc * int(rq.multiplier[o]) + int(rq.bias[o])
                                                     + ((1 << rq.shift) >> 1)) >> rq.shift))
                    out.append(acc)
    return out
