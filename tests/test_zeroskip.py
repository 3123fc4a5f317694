"""Zero-word skipping in squeezed linear engines (rtl_templates/zeroskip.py, gen --zero-skip).

- the generator alone issues exactly the words of :func:`zero_skip_reference` (all-zero frame, a frame
  without a zero word, mixed frames in both banks);
- the whole engine in Amaranth simulation equals the golden model, value for value, under random
  valid/ready stalls, with frames of every kind back to back; each frame alone leaves its outputs at the
  clocks the planner's model gives at that frame's nonzero-word rate, and a sparse frame walks in fewer
  clocks than the dense engine needs;
- the plan: the pass's modes and its reasons, the report, and designs without skipping unchanged (their
  digests are tests/test_hw_digests.py's);
- the generated Verilog co-simulated in Verilator (slow).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from bitspike.analysis import analyse
from bitspike.host.golden import GoldenModel
from bitspike.manifest import InputSpec
from bitspike.ops.linear import LINEAR
from bitspike.rtl_templates.linear import LinearEngine
from bitspike.rtl_templates.window import WindowGeometry
from bitspike.rtl_templates.zeroskip import (ZeroSkipGenerator, nonzero_words, zero_skip_generator,
                                             zero_skip_reference)
from bitspike.testing import NetBuilder, random_cnn, random_mlp

from stream_bench import output_clocks, run_stalled


def _sim(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


# ---------------------------------------------------------------------------------------------
# the generator alone


def _generator_words(geo: WindowGeometry, frames: list[list[int]]) -> list[list[dict]]:
    """Write each frame's words (nonzero flags) into alternate banks, then issue the frame's walk; the words."""
    gen = ZeroSkipGenerator(geo)
    ports = ("local", "waddr", "first", "word_last", "last_group", "frame_last")
    out: list[list[dict]] = []

    async def bench(ctx):
        for f, flags in enumerate(frames):
            for j, nz in enumerate(flags):
                ctx.set(gen.wr_en, 1)
                ctx.set(gen.wr_word, j)
                ctx.set(gen.wr_bank, f % 2)
                ctx.set(gen.wr_nonzero, nz)
                await ctx.tick()
            ctx.set(gen.wr_en, 0)
            words = []
            while True:
                ctx.set(gen.issue, 0)
                await ctx.delay(1e-7)
                if ctx.get(gen.hold):  # an entry written as it was read: not settled yet
                    await ctx.tick()
                    continue
                ctx.set(gen.issue, 1)
                await ctx.delay(1e-7)
                w = {p: ctx.get(getattr(gen, p)) for p in ports}
                words.append(w)
                await ctx.tick()
                if w["frame_last"]:
                    break
            ctx.set(gen.issue, 0)
            out.append(words)

    _sim(gen, bench)
    return out


def test_generator_issues_the_nonzero_words_of_each_frame():
    geo = WindowGeometry(in_hw=(1, 1), kernel=(1, 1), channel_words=5, out_groups=3)
    frames = [[0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1]]
    got = _generator_words(geo, frames)
    for flags, words in zip(frames, got):
        want = zero_skip_reference(geo, flags)
        assert len(words) == len(want) == geo.out_groups * max(1, sum(flags))
        for w, r in zip(words, want):
            if r["local"] < 0:  # an all-zero frame: any word of the bank (all read 0), weight word unused
                r = dict(r, local=w["local"], waddr=w["waddr"])
            assert {k: w[k] for k in r if k != "pad"} == {k: v for k, v in r.items() if k != "pad"}


def test_generator_refuses_a_window_and_a_single_word():
    with pytest.raises(ValueError, match="pointwise"):
        ZeroSkipGenerator(WindowGeometry(in_hw=(4, 4), kernel=(3, 3), channel_words=2))
    with pytest.raises(ValueError, match="at least 2 frame words"):
        ZeroSkipGenerator(WindowGeometry(in_hw=(1, 1), kernel=(1, 1), channel_words=1))


def test_nonzero_words_pads_the_last_word():
    c = np.array([[0, 0, 3, 0, 0], [0, 0, 0, 0, 1]])
    assert nonzero_words(c, 2).tolist() == [[False, True, False], [False, False, True]]


# ---------------------------------------------------------------------------------------------
# the engine in Amaranth simulation


def _net(seed=4, inputs=12):
    b = NetBuilder(np.random.default_rng(seed), InputSpec(shape=(inputs,), bits=8, scale=1 / 255))
    b.synaptic("linear", 6, 8, 8, 1, 0, 2, 6, signed_out=True)
    b.synaptic("linear", 4, 6, 6, 1, 2, None, None)
    return b.manifest(f"zeroskip-{seed}")


def _engine(m, pes, lanes, skip):
    layer = m.layers[0]
    return LinearEngine(weight=layer.weight, bias=layer.bias, w_bits=layer.w_bits, s_bits=layer.s_bits,
                        timesteps=layer.timesteps, k=layer.k, requant=layer.requant, ranges=analyse(m)[layer.name],
                        pes=pes, lanes=lanes, address_generator=zero_skip_generator if skip else None)


def _frames(m, rng):
    """Frames of every kind: all zero, no zero word (every input at its largest), a sparse one, random."""
    r = analyse(m)[m.layers[0].name]
    x = rng.integers(r.x.lo, r.x.hi + 1, size=(6, m.input.size))
    x[0] = 0
    x[1] = r.x.hi
    x[2, :] = 0
    x[2, 7] = r.x.hi
    x[3, ::3] = 0
    return x


def _golden(m, x):
    out, _ = GoldenModel(m)._synaptic(m.layers[0], torch.tensor(x), False)
    return [int(v) for v in out.reshape(-1)]


@pytest.mark.parametrize("pes, lanes", [(2, 3), (3, 1)])
def test_engine_is_exact_under_stalls(pes, lanes):
    m = _net()
    rng = np.random.default_rng(pes * 10 + lanes)
    x = _frames(m, rng)
    last_only = np.zeros((1, m.input.size), dtype=x.dtype)
    last_only[0, -1] = x.max()  # the only nonzero word is the last: its list entry is written as it is read
    x = np.concatenate([x, last_only, x[:1]])
    eng = _engine(m, pes, lanes, skip=True)
    beats = [int(v) for v in x.reshape(-1)]
    cycles = 40 * len(beats)
    got = run_stalled(eng, beats, lambda ctx, b: ctx.set(eng.x.payload, b), rng.random(cycles) < 0.6,
                      rng.random(cycles) < 0.5, inp=eng.x, out=eng.y)
    assert got == _golden(m, x)


def _alone(eng, frame) -> list[int]:
    """One frame from reset, inputs one a clock, outputs always taken: the clocks its outputs leave."""
    return output_clocks(eng, frame, 60 * len(frame))


def test_each_frame_takes_the_clocks_the_plan_gives_at_its_rate():
    """The walk of a layer whose words are the bottleneck (1 PE, 1 lane: 12 words a group, 6 groups)."""
    m = _net(5)
    x = _frames(m, np.random.default_rng(3))
    layer = m.layers[0]
    r = analyse(m)[layer.name]
    base = LINEAR.node(0, layer, m)
    base = LINEAR.fold(base, layer, r, 1, 1)
    counts = GoldenModel(m).run(x, trace=True).trace[layer.name].s.sum(dim=0).numpy()
    dense_t = _alone(_engine(m, 1, 1, skip=False), x[3])
    for frame, c in zip(x, counts):
        nz = int(nonzero_words(c[None], 1).sum())
        node = LINEAR.with_zero_skip(base, True, nz / base.frame_words)
        assert [node.group_words(g) for g in range(6)] == [max(nz, 1)] * 6
        want = LINEAR.arrival_times(node, layer, None, [list(range(len(frame)))])
        got = _alone(_engine(m, 1, 1, skip=True), frame)
        # the model's clock 0 is the first input's; the bench counts from reset, when it is offered
        assert got == want, (nz, got, want)
    nz3 = int(nonzero_words(counts[3][None], 1).sum())
    assert nz3 < base.frame_words
    skip_t = _alone(_engine(m, 1, 1, skip=True), x[3])
    assert skip_t[-1] - skip_t[0] < dense_t[-1] - dense_t[0]


def test_dense_engine_walks_as_before():
    """Without the generator the engine reads every word while the frame streams in (its model, unchanged)."""
    m = _net(5)
    layer = m.layers[0]
    x = _frames(m, np.random.default_rng(3))
    node = LINEAR.fold(LINEAR.node(0, layer, m), layer, analyse(m)[layer.name], 1, 1)
    assert _alone(_engine(m, 1, 1, skip=False), x[2]) == LINEAR.arrival_times(node, layer, None,
                                                                               [list(range(m.input.size))])


# ---------------------------------------------------------------------------------------------
# the plan


def test_pass_modes_and_reasons():
    from bitspike.gen.plan import make_plan

    m = random_mlp(3, sizes=(16, 12, 10))
    off = make_plan(m, fold="line0=2x4,line1=2x2", fuse="off")
    on = make_plan(m, fold="line0=2x4,line1=2x2", fuse="off", zero_skip="on")
    assert not any(getattr(n, "zero_skip", False) for n in off.layers)
    assert all(n.zero_skip and n.nonzero_rate == 1.0 for n in on.layers)
    # at rate 1 a skipping engine issues as many words as a dense one: the same busy cycles
    assert [n.cycles for n in on.layers] == [n.cycles for n in off.layers]
    assert on.layers[0].to_json()["zero_skip"] == {"walk": "nonzero words", "nonzero_rate": 1.0, "frame_words": 4,
                                                   "expected_words_per_group": 4, "groups": 6}
    assert "zero_skip" not in off.layers[0].to_json()
    # one frame word: nothing to skip, dense even with "on"
    one = make_plan(m, fold="line0=2x16,line1=2x2", fuse="off", zero_skip="on")
    assert not one.layers[0].zero_skip and one.layers[1].zero_skip
    # a sparser expected rate: fewer busy cycles for a walk-bound layer
    n = LINEAR.with_zero_skip(LINEAR.fold(off.layers[0], m.layers[0], off.ranges["line0"], 1, 1), True, 0.25)
    dense = LINEAR.fold(off.layers[0], m.layers[0], off.ranges["line0"], 1, 1)
    assert n.expected_words() == 4 and LINEAR.busy_cycles(n) < LINEAR.busy_cycles(dense)
    # a rate between whole words: the groups share them out (2.5 words a group: 2, 3, 2, 3, ...)
    half = LINEAR.with_zero_skip(dense, True, 2.5 / 16)
    assert [half.group_words(g) for g in range(4)] == [2, 3, 2, 3]


def test_auto_is_deterministic_and_leaves_pools_dense():
    from bitspike.gen.plan import make_plan
    from bitspike.gen.zeroskip import zero_skip_decisions

    m = random_cnn(1, image=(1, 8, 8), channels=(3, 4))
    a = make_plan(m, fuse="off", zero_skip="auto")
    b = make_plan(m, fuse="off", zero_skip="auto")
    assert [n.to_json() for n in a.layers] == [n.to_json() for n in b.layers]
    decided = zero_skip_decisions(a, "on")
    for node in a.layers:
        if node.op == "maxpool":
            assert not decided[node.name][0] and "densely" in decided[node.name][1]
    # (conv engines skip too: tests/test_convskip.py)
    with pytest.raises(Exception, match="zero_skip must be one of"):
        zero_skip_decisions(a, "sometimes")


def test_gen_cli_flag_and_report(tmp_path):
    from bitspike.cli import main

    bsm = tmp_path / "m.bsm"
    random_mlp(3, sizes=(16, 12, 10)).save(bsm)
    assert main(["gen", str(bsm), "-o", str(tmp_path / "on"), "--zero-skip", "on", "--fuse", "off", "-q"]) == 0
    md = (tmp_path / "on" / "report.md").read_text()
    assert "## Zero-word skipping (--zero-skip on)" in md and "walk of nonzero words" in md
    verilog = "".join(p.read_text() for p in sorted((tmp_path / "on").glob("*.v")))
    assert "nz_list" in verilog  # the nonzero list is in the engines


# ---------------------------------------------------------------------------------------------
# the generated Verilog


@pytest.mark.slow
def test_verilator_design_with_skipping_is_exact(cosim_of):
    from bitspike.sim.activity import ZeroSkipActivity
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    m = random_mlp(3, sizes=(16, 12, 10))
    sim = cosim_of(m, fold="line0=2x2,line1=2x2", fuse="off", zero_skip="on")
    x = np.random.default_rng(0).integers(0, 256, size=(24, 16))
    x[0] = 0
    x[1] = 255
    x[2::3, ::2] = 0
    golden = GoldenModel(m).run(x)
    ref = ManifestGoldenTaps(m, sim.design.taps)
    res = sim.run(x, trace=True, processes=1, stall_in=0.2, stall_out=0.3, seed=2)
    np.testing.assert_array_equal(res.logits, golden.logits.numpy())
    assert compare_all(res, ref.sequences(x), sim.design.taps, ref) == (len(x), None)
    act = ZeroSkipActivity(sim.design)
    act.add(sim.run(x, trace=True, processes=1, sequential=True))
    s = act.summary()
    assert set(s) == {"line0", "line1"}
    tr = GoldenModel(m).run(x, trace=True).trace
    for name in s:
        nz = nonzero_words(tr[name].s.sum(dim=0).numpy().reshape(len(x), -1), 2)
        assert s[name]["nonzero_rate"] == nz.mean()
