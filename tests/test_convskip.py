"""Zero-word skipping in squeezed conv engines (rtl_templates/convskip.py, gen --zero-skip).

- the generator refuses what it cannot skip (one output group, a one-word window, convolution groups);
- the engine in Amaranth simulation equals the numpy reference, value for value, with skipping on, through
  the line buffer and the whole frame, with padding and stride 2, under random valid/ready stalls;
- each frame alone leaves its outputs at exactly the clocks the planner's model gives with the frame's own
  replayed words (:func:`conv_zero_skip_words`, the reference walk), and a sparse frame takes fewer clocks
  than the dense engine;
- the plan: the pass's reasons for conv engines, ``auto`` deterministic, the report;
- the generated Verilog co-simulated in Verilator with a max pool, an average pool and a residual add after
  skipping convs, under stalls, and the measured rates of ``sim --trace``; with vector streams and fused
  boundaries (slow).

Designs without skipping keep their Verilog byte for byte (tests/test_hw_digests.py).
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from bitspike.ops.conv2d import CONV2D, Conv2dNode
from bitspike.ranges import Range
from bitspike.rtl_templates.convskip import (ConvZeroSkipGenerator, conv_nonzero_words, conv_skip_refused,
                                             conv_zero_skip_generator, conv_zero_skip_words)
from bitspike.rtl_templates.neuron import neuron_reference
from bitspike.rtl_templates.synapse import SynapticEngine
from bitspike.rtl_templates.window import WindowGeometry
from bitspike.testing import random_cnn

from stream_bench import output_clocks, run_frames_bursty
from test_rtl_engine_blocks import _engine_ranges, _grouped_reference

S_BITS, T, K = 2, 2, 1
X = Range(-6, 9)


def _conv(c_in, c_out, hw, ks, stride, pad, pes, lanes, line_buffer, skip, seed=0):
    """A conv engine with random 3-bit weights, and its weights and bias."""
    rng = np.random.default_rng(seed)
    weight = rng.integers(-3, 4, size=(c_out, c_in, ks, ks))
    bias = rng.integers(-6, 7, size=c_out)
    ranges = _engine_ranges(X, weight, bias, S_BITS, T, K, None)
    eng = SynapticEngine(weight=weight, bias=bias, in_hw=hw, stride=(stride, stride), padding=(pad, pad), w_bits=3,
                         s_bits=S_BITS, timesteps=T, k=K, requant=None, ranges=ranges, pes=pes, lanes=lanes,
                         line_buffer=line_buffer,
                         address_generator=conv_zero_skip_generator(line_buffer=line_buffer) if skip else None)
    return eng, weight, bias


def _frames(c_in, hw, frames, seed):
    """Sparse frames (60% of the inputs give a count of 0), an all-zero one and a dense random one."""
    rng = np.random.default_rng(seed)
    xs = rng.integers(X.lo, X.hi + 1, size=(frames, c_in, *hw))
    xs[rng.random(xs.shape) < 0.6] = -3
    xs[1] = -5  # every count 0: each replayed group issues the window's last word only
    return xs


def test_refusals():
    geo = WindowGeometry(in_hw=(5, 5), kernel=(3, 3), padding=(1, 1), channel_words=2, out_groups=3)
    assert conv_skip_refused(geo) is None
    assert "one output group" in conv_skip_refused(WindowGeometry(in_hw=(5, 5), kernel=(3, 3), out_groups=1))
    assert "one word" in conv_skip_refused(WindowGeometry(in_hw=(5, 5), kernel=(1, 1), out_groups=2))
    assert "grouped" in conv_skip_refused(WindowGeometry(in_hw=(5, 5), kernel=(3, 3), channel_words=2, out_groups=2,
                                                         conv_groups=2))
    with pytest.raises(ValueError, match="one output group"):
        ConvZeroSkipGenerator(WindowGeometry(in_hw=(5, 5), kernel=(3, 3)), line_buffer=True)


def test_reference_walk_counts_the_window_words_before_the_last():
    geo = WindowGeometry(in_hw=(3, 3), kernel=(2, 2), out_groups=2)
    nz = np.zeros(9, dtype=bool)
    nz[[0, 4]] = True  # pixel (0, 0) and (1, 1)
    # windows (0,0): words 0,1,3 | 4 → 2 (word 0) + last; (0,1): 1,2,4 | 5 → word 4; (1,0): 3,4,6 | 7; (1,1): 4,5,7 | 8
    assert conv_zero_skip_words(geo, nz) == [2, 2, 2, 2]
    nz[:] = False
    assert conv_zero_skip_words(geo, nz) == [1, 1, 1, 1]
    counts = np.array([[0, 1, 0, 0, 0, 0]])  # a 1x3 map of 2 channels, HWC: pixel 0's channel 1 fired
    assert conv_nonzero_words(counts, (1, 3), 1).tolist() == [[False, True, False, False, False, False]]
    assert conv_nonzero_words(counts, (1, 3), 2).tolist() == [[True, False, False]]


CASES = [
    # (in, out, (h, w), kernel, stride, pad, pes, lanes, line buffer)
    (2, 4, (5, 5), 3, 1, 1, 1, 1, True),  # padded, through the line buffer, four output groups
    (2, 4, (6, 6), 3, 2, 1, 2, 1, True),  # stride 2 + padding
    pytest.param((3, 4, (6, 5), 3, 1, 0, 1, 2, False), marks=pytest.mark.slow),  # the whole frame, two lanes
    pytest.param((2, 6, (7, 6), 3, 2, 1, 2, 2, False), marks=pytest.mark.slow),  # whole frame, stride 2 + padding
]


@pytest.mark.parametrize("case", CASES, ids=["line-pad", "line-stride2", "frame-lanes2", "frame-stride2"])
def test_engine_is_exact_under_stalls(case):
    c_in, c_out, hw, ks, stride, pad, pes, lanes, lb = case
    eng, weight, bias = _conv(*case, skip=True)
    xs = _frames(c_in, hw, 3, sum(hw))
    want = _grouped_reference(xs, weight, bias, 1, stride, pad, S_BITS, T, K, None)
    assert run_frames_bursty(eng, xs, sum(hw), 30000, len(want)) == want


def _alone(eng, frame) -> list[int]:
    """One frame from reset, inputs one a clock, outputs always taken: the clocks its outputs leave."""
    return output_clocks(eng, frame, 80 * len(frame))


@pytest.mark.parametrize("lb", [True, False], ids=["line", "frame"])
def test_each_frame_takes_the_clocks_of_its_reference_walk(lb):
    """The planner's model with the frame's own replayed words gives every output's clock exactly."""
    c_in, c_out, hw, ks, stride, pad, pes, lanes = 2, 4, (5, 5), 3, 1, 1, 1, 1
    node = Conv2dNode(index=0, name="c", op="conv2d", engine="e", in_features=c_in, out_features=c_out, pes=pes,
                      lanes=lanes, widths={"count": 2}, in_hw=hw, out_hw=hw, kernel=(ks, ks), stride=(stride, stride),
                      padding=(pad, pad), line_buffer=lb)
    layer = SimpleNamespace(requant=None)
    skipping = CONV2D.with_zero_skip(node, True)
    xs = _frames(c_in, hw, 2, 7)
    for x in xs:
        beats = [int(v) for v in x.transpose(1, 2, 0).reshape(-1)]
        counts = np.array([neuron_reference(b, K, S_BITS, T)[1] for b in beats])
        eng, _, _ = _conv(c_in, c_out, hw, ks, stride, pad, pes, lanes, lb, skip=True)
        replay = conv_zero_skip_words(eng.geometry(), conv_nonzero_words(counts[None], hw, lanes)[0])
        got = _alone(eng, beats)
        want = CONV2D.arrival_times(skipping, layer, None, [list(range(len(beats)))],
                                    replay=[replay] if lb else replay)
        assert got == want
        dense, _, _ = _conv(c_in, c_out, hw, ks, stride, pad, pes, lanes, lb, skip=False)
        dense_t = _alone(dense, beats)
        assert dense_t == CONV2D.arrival_times(node, layer, None, [list(range(len(beats)))])
        assert got[-1] < dense_t[-1]  # 4 output groups of 18 words against 18 + 3 · (1 + nonzero words)


def test_plan_modes_and_reasons():
    from bitspike.gen.plan import make_plan
    from bitspike.gen.zeroskip import zero_skip_decisions

    m = random_cnn(1, image=(1, 8, 8), channels=(3, 4))
    off = make_plan(m, fuse="off", fold="conv0=3x1,conv1=2x3")
    on = make_plan(m, fuse="off", fold="conv0=3x1,conv1=2x3", zero_skip="on")
    decided = zero_skip_decisions(on, "on")
    assert decided["conv0"] == (False, "one output group (pes = out channels): the window's only walk is the scan, "
                                       "nothing is replayed")
    assert decided["conv1"] == (True, "")
    conv1 = next(n for n in on.layers if n.name == "conv1")
    assert conv1.zero_skip and conv1.nonzero_rate == 1.0
    # at rate 1 a replayed group issues every word: the dense busy cycles
    assert [n.cycles for n in on.layers] == [n.cycles for n in off.layers]
    assert conv1.to_json()["zero_skip"] == {"walk": "scan, then nonzero words", "nonzero_rate": 1.0,
                                            "window_words": 9, "frame_words": 16, "expected_words_per_group": 9,
                                            "groups": 2}
    assert all("zero_skip" not in n.to_json() for n in off.layers)
    # a sparser expected rate: fewer busy cycles, through the line buffer and the whole frame
    for lb in (True, False):
        dense = CONV2D.fold(CONV2D.node(0, m.layers[0], m), m.layers[0], off.ranges["conv0"], 1, 1)
        dense = replace(dense, line_buffer=lb)
        sparse = CONV2D.with_zero_skip(dense, True, 0.25)
        assert sparse.expected_words() == 3.0 and CONV2D.busy_cycles(sparse) < CONV2D.busy_cycles(dense)
    a = make_plan(m, fuse="off", zero_skip="auto")
    b = make_plan(m, fuse="off", zero_skip="auto")
    assert [n.to_json() for n in a.layers] == [n.to_json() for n in b.layers]
    # auto: where "on" skips, exactly the conv engines whose skipping logic is at most 10% of the engine's
    from bitspike.gen.zeroskip import AUTO_MAX_SHARE

    auto = zero_skip_decisions(off, "auto")  # decided on the dense plan, as the pass does
    for n in off.layers:
        if n.op == "conv2d" and decided[n.name][0]:
            cheap = CONV2D.zero_skip_luts(n) <= AUTO_MAX_SHARE * CONV2D.estimate_luts(n)
            assert auto[n.name][0] == cheap


def test_gen_report_names_the_conv_walk(tmp_path):
    from bitspike.gen import generate

    m = random_cnn(1, image=(1, 8, 8), channels=(3, 4))
    generate(m, tmp_path, fold="conv0=3x1,conv1=2x3", fuse="off", zero_skip="on")
    md = (tmp_path / "report.md").read_text()
    assert "- conv1: scan of each window, then its nonzero words" in md
    assert "- dense: conv0: one output group" in md


# ---------------------------------------------------------------------------------------------
# the generated Verilog


@pytest.mark.slow
@pytest.mark.parametrize("pool, residual", [("maxpool", True), ("avgpool", False)])
def test_verilator_design_with_conv_skipping_is_exact(cosim_of, pool, residual):
    from bitspike.host.golden import GoldenModel
    from bitspike.sim.activity import ZeroSkipActivity
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    m = random_cnn(2, image=(2, 8, 8), channels=(4, 4), pool=pool, residual=residual)
    convs = [l.name for l in m.layers if l.op == "conv2d"]
    fold = ",".join(f"{c}=2x1" for c in convs)
    sim = cosim_of(m, fold=fold, fuse="off", zero_skip="on")
    skipping = [l["name"] for l in sim.design.layers if l.get("zero_skip") and l["op"] == "conv2d"]
    assert skipping == convs
    x = np.random.default_rng(0).integers(0, 256, size=(8, *m.input.shape))
    x[0] = 0
    x[1::2, :, ::2] = 0
    golden = GoldenModel(m).run(x)
    ref = ManifestGoldenTaps(m, sim.design.taps)
    res = sim.run(x, trace=True, processes=1, stall_in=0.2, stall_out=0.3, seed=2)
    np.testing.assert_array_equal(res.logits, golden.logits.numpy())
    assert compare_all(res, ref.sequences(x), sim.design.taps, ref) == (len(x), None)
    act = ZeroSkipActivity(sim.design)
    act.add(sim.run(x, trace=True, processes=1, sequential=True))
    s = act.summary()
    tr = GoldenModel(m).run(x, trace=True).trace
    for name in convs:
        entry = next(l for l in sim.design.layers if l["name"] == name)
        counts = tr[name].s.sum(dim=0).numpy()
        counts = counts.transpose(0, 2, 3, 1).reshape(len(x), -1)  # HWC, the stream's order
        nz = conv_nonzero_words(counts, tuple(entry["in_hw"]), int(entry["lanes"]))
        assert s[name]["nonzero_rate"] == nz.mean()
        assert s[name]["model_busy_cycles"] <= s[name]["dense_busy_cycles"]
    assert all("in its windows" in line for line in ZeroSkipActivity.text({n: s[n] for n in convs}))


@pytest.mark.slow
def test_verilator_vector_streams_and_fused_boundaries_with_conv_skipping(cosim_of):
    """Three channels a beat (vec_in = vec_out = 3) and fused requantize-and-fire boundaries between skipping
    convs: bit-exact at every tap, each image alone and under stalls."""
    from bitspike.manifest import InputSpec
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all
    from bitspike.testing import NetBuilder

    b = NetBuilder(np.random.default_rng(5), InputSpec(shape=(2, 6, 6), bits=8, scale=1 / 255))
    b.synaptic("conv2d", 6, 8, 8, 1, 0, 2, 2)
    b.synaptic("conv2d", 6, 3, 2, 2, 2, 1, 3)
    b.flatten()
    b.synaptic("linear", 10, 2, 3, 2, 1, None, None)
    m = b.manifest("conv-vectors-skip")
    sim = cosim_of(m, fold="conv0=3x2x3,conv1=3x3x3,line2=2x6", fuse="on", zero_skip="on")
    layers = {l["name"]: l for l in sim.design.layers}
    assert "zero_skip" in layers["conv0"] and "zero_skip" in layers["conv1"] and layers["conv1"].get("vec_in") == 3
    x = np.random.default_rng(1).integers(0, 256, size=(6, *m.input.shape))
    x[1::2, :, 1::2] = 0
    ref = ManifestGoldenTaps(m, sim.design.taps)
    for kw in ({"sequential": True}, {"stall_in": 0.3, "stall_out": 0.3, "seed": 4}):
        res = sim.run(x, trace=True, processes=1, **kw)
        assert compare_all(res, ref.sequences(x), sim.design.taps, ref) == (len(x), None)
