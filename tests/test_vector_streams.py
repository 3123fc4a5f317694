"""Vector streams: several elements per beat between synaptic engines (issue 13, deliverable 3).

The blocks first (the drain's lanes, the neuron stage's vector input) in amaranth.sim under random
stalls against their plain-integer models; then the planner (manual ``PESxLANESxVEC`` folds, the
device filler's choice, refusals); then whole networks co-simulated with Verilator, bit-exact at every
tap under stalls and to the cycle the planner predicts. The digits-sized runs over the 360 test images
are ``slow``.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from bitspike.errors import HardwareError


def _flat(payloads, vec: int) -> list[int]:
    """The elements of vector beats (element 0 first), or the scalar beats themselves."""
    return [int(p) for p in payloads] if vec == 1 else [int(p[j]) for p in payloads for j in range(vec)]


# ---- blocks


@pytest.mark.parametrize("pes,out_c,vec,requantized,seed,flags", [
    (4, 8, 2, True, 0, False), (6, 12, 3, False, 1, False), (6, 6, 3, True, 2, False), (4, 4, 4, True, 3, False),
    # registered_flags (--fast-paths): the queue's empty / last-beat state in registers, the same outputs
    (4, 8, 2, True, 0, True), (6, 12, 3, False, 1, True), (4, 4, 4, True, 3, True), (5, 11, 1, True, 4, True)])
def test_drain_lanes_emit_every_channel_in_order_under_stalls(pes, out_c, vec, requantized, seed, flags):
    from amaranth import signed

    from bitspike.ops.base import Requant
    from bitspike.rtl_templates.drain import Drain, drain_reference
    from stream_bench import run_drain_stalled

    rng = random.Random(seed)
    bias = [rng.choice([0, 3, rng.randint(-300, 300)]) for _ in range(out_c)]
    rq = None
    if requantized:
        rq = Requant(multiplier=np.array([rng.choice([-7, 0, 1, 5, 300, rng.randint(-2000, 2000)]) for _ in range(out_c)]),
                     bias=np.array([rng.randint(-5000, 5000) for _ in range(out_c)]), shift=rng.randint(0, 9),
                     lo=-rng.randint(0, 20), hi=rng.randint(1, 40))
    dut = Drain(pes=pes, bias=bias, psum_shape=signed(12), acc_shape=signed(13),
                out_shape=signed(8) if requantized else signed(14), requant=rq,
                product_shape=signed(40) if requantized else None, dsp_pieces=1 if requantized else None, vec=vec,
                registered_flags=flags)
    groups_n = -(-out_c // pes)
    groups = [[rng.choice([-2048, 2047, rng.randint(-2048, 2047)]) for _ in range(pes)] for _ in range(4 * groups_n)]
    want = drain_reference(groups, bias, rq, pes)
    got = run_drain_stalled(dut, groups, groups_n, rng, len(want) // vec)
    assert _flat(got, vec) == want


def test_drain_lanes_with_fused_thresholds_emit_the_counts():
    from amaranth import signed, unsigned

    from bitspike.ranges import Range
    from bitspike.rtl_templates.drain import Drain, drain_reference
    from bitspike.rtl_templates.threshold import fused_thresholds
    from stream_bench import run_drain_stalled

    rng = random.Random(5)
    out_c, pes, vec = 9, 9, 3
    bias = [rng.randint(-300, 300) for _ in range(out_c)]
    mult = [rng.choice([-7, 0, 5, 300, rng.randint(-2000, 2000)]) for _ in range(out_c)]
    rq_bias = [rng.randint(-5000, 5000) for _ in range(out_c)]
    fused = fused_thresholds(mult, rq_bias, rng.randint(0, 9), -rng.randint(0, 20), rng.randint(1, 40),
                             Range(-4096, 4095), 1, 2, 2)
    dut = Drain(pes=pes, bias=bias, psum_shape=signed(12), acc_shape=signed(13), out_shape=unsigned(3), fused=fused,
                vec=vec)
    groups = [[rng.choice([-2048, 2047, rng.randint(-2048, 2047)]) for _ in range(pes)] for _ in range(5)]
    want = drain_reference(groups, bias, None, pes, fused=fused)
    assert _flat(run_drain_stalled(dut, groups, 1, rng, len(want) // vec), vec) == want


def test_drain_refuses_a_vector_that_does_not_divide_its_groups():
    from amaranth import signed

    from bitspike.rtl_templates.drain import Drain

    with pytest.raises(ValueError, match="vec must be a positive integer dividing pes 4"):
        Drain(pes=4, bias=[0] * 8, psum_shape=signed(4), acc_shape=signed(5), out_shape=signed(5), vec=3)


@pytest.mark.parametrize("vec,counts_in", [(2, False), (3, False), (3, True)])
def test_neuron_stage_takes_a_vector_per_beat_under_stalls(vec, counts_in):
    from amaranth import unsigned

    from bitspike.ranges import Range
    from bitspike.rtl_templates.neuron import CountStage, NeuronStage, neuron_reference
    from stream_bench import run_stalled

    rng = np.random.default_rng(vec)
    if counts_in:
        dut = CountStage(unsigned(3), vec=vec)
        elems = [int(v) for v in rng.integers(0, 8, size=vec * 30)]
        want = elems
    else:
        dut = NeuronStage(Range(-40, 90), 2, 3, 2, vec=vec)
        elems = [int(v) for v in rng.integers(-40, 91, size=vec * 30)]
        elems[:2] = [-40, 90]
        want = [neuron_reference(x, 2, 2, 3)[1] for x in elems]
    beats = [elems[i:i + vec] for i in range(0, len(elems), vec)]

    def put(ctx, beat):
        for j, v in enumerate(beat):
            ctx.set(dut.i.payload[j], v)

    p_valid, p_ready = rng.random(200) < 0.6, rng.random(200) < 0.5
    assert _flat(run_stalled(dut, beats, put, p_valid, p_ready), vec) == want


# ---- the planner


def _digits_shaped(seed=0):
    from hw_digests import _digits_shaped as make

    return make(seed)


def test_manual_vector_fold_sets_both_ends_and_the_model_counts_beats():
    from bitspike.gen.plan import make_plan

    m = _digits_shaped()
    scalar = make_plan(m, fold="line0=16x8,line1=10x2")
    vector = make_plan(m, fold="line0=16x8x2,line1=10x2")
    a, b = vector.layers
    assert (a.vec_in, a.vec_out, b.vec_in, b.vec_out) == (1, 2, 2, 1)
    # one output per clock held fc1 at its 128 outputs; two per beat leave it at its 64 issue clocks
    assert [n.cycles for n in scalar.layers] == [128, 128] and [n.cycles for n in vector.layers] == [64, 64]
    assert vector.initiation_interval == 64
    assert a.to_json()["vec_out"] == 2 and "vec_out" not in scalar.layers[0].to_json()
    assert make_plan(m, fold="line0=16x8x1,line1=10x2").layers == scalar.layers  # VEC 1: the scalar plan


@pytest.mark.parametrize("fold,message", [
    ("line0=16x8x3,line1=10x2", "3 elements per beat must divide 128"),
    ("line0=16x8x2,line1=10x1", "does not take its vector streams"),
    ("line0=5x8x2,line1=10x2", "must be a multiple"),
    ("line0=16x8,line1=10x2x2", "cannot carry 2 elements per beat"),
])
def test_bad_vector_folds_are_refused_with_the_reason(fold, message):
    from bitspike.gen.plan import make_plan

    with pytest.raises(HardwareError, match=message):
        make_plan(_digits_shaped(), fold=fold)


def test_device_fold_gives_the_digits_mlp_a_vector_stream_and_interval_64():
    """ECP5-85F: fc1 needs 128 MACs a clock and two outputs a clock to keep up with the 64 pixels."""
    from bitspike.gen.boards import device_budget, get_board
    from bitspike.gen.folding import estimate_resources
    from bitspike.gen.plan import make_plan

    dev = device_budget(get_board("ulx3s_85f"))
    p = make_plan(_digits_shaped(), max_luts=dev.lut, dsp_blocks=dev.dsp, device=dev)
    a, b = p.layers
    assert a.vec_out == b.vec_in == 2 and a.pes * a.lanes >= 128
    assert p.initiation_interval == 64
    est = estimate_resources(p, dev.family)
    assert est["dsp"] <= dev.dsp and est["lut"] <= dev.lut and est["bram"] <= dev.bram
    # without a device (the LUT-budget folder) streams stay scalar
    assert all((n.vec_in, n.vec_out) == (1, 1) for n in make_plan(_digits_shaped()).layers)


# ---- whole networks, co-simulated


def _small():
    """16 → 12 → 12 → 10 with both vector widths: 2 per beat into line1, 3 per beat into line2."""
    from bitspike.testing import random_mlp

    return random_mlp(11, sizes=(16, 12, 12, 10))


SMALL_FOLD = "line0=6x4x2,line1=6x6x3,line2=2x3"


@pytest.mark.parametrize("fuse", ["off", pytest.param("on", marks=pytest.mark.slow)])
def test_vector_streams_are_bit_exact_at_every_tap_and_on_time(check_cosim, fuse):
    """Icarus (no Verilator build in the default run); ``on``: both boundaries fused, so the vectors carry
    spike counts from threshold lanes into count stages."""
    check_cosim(_small(), seed=4, samples=6, fold=SMALL_FOLD, simulator="icarus", fuse=fuse)


def test_fast_paths_with_products_in_logic_are_bit_exact_and_on_time(check_cosim):
    """``fast_paths`` (accumulators cleared after a last word, the drains' flags in registers) with every
    product in logic (``dsp_blocks=0``): the same values at every tap, at the same clocks."""
    check_cosim(_small(), seed=5, samples=6, fold=SMALL_FOLD, simulator="icarus", dsp_blocks=0, fast_paths=True)


def _digits_split_check(cosim_of, manifest, fold, **options):
    """The 360 digits test images, streamed under stalls with every tap, then alone: bit-exact and on time."""
    from bitspike.host.data import images_for_manifest, load_dataset
    from bitspike.host.golden import GoldenModel
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    sim = cosim_of(manifest, fold=fold, **options)
    x = images_for_manifest(load_dataset("digits", "test").images, manifest)
    assert len(x) == 360
    golden = GoldenModel(manifest).run(x)
    res = sim.run(x, trace=True, processes=1, stall_in=0.2, stall_out=0.3, seed=7)
    np.testing.assert_array_equal(res.logits, golden.logits.numpy())
    ref = ManifestGoldenTaps(manifest, sim.design.taps)
    assert compare_all(res, ref.sequences(x), sim.design.taps, ref) == (360, None)
    alone = sim.run(x, trace=True, processes=1, sequential=True)
    assert compare_all(alone, ref.sequences(x), sim.design.taps, ref) == (360, None)
    assert set(alone.cycles.tolist()) == {sim.design.cycles_per_inference}
    back_to_back = sim.run(x, processes=1)
    assert back_to_back.initiation_interval == sim.design.initiation_interval


@pytest.mark.slow
def test_digits_mlp_two_per_beat_on_the_whole_test_split(cosim_of):
    _digits_split_check(cosim_of, _digits_shaped(0), "line0=16x8x2,line1=5x4")


@pytest.mark.slow
def test_digits_mlp_two_per_beat_fast_build_on_the_whole_test_split(cosim_of):
    """The ECP5-85F build at 100 MHz (bench/hw.py's i64 row): fc1's products in logic (only the requantizer's
    4 pieces in DSP blocks) and the accumulators cleared after a group's last word."""
    _digits_split_check(cosim_of, _digits_shaped(0), "line0=16x8x2,line1=5x4", dsp_blocks=4, fast_paths=True)


@pytest.mark.slow
def test_digits_mlp_three_per_beat_on_the_whole_test_split(cosim_of):
    """A non-power-of-two width: 64 → 96 → 10, fc1's 96 outputs three per beat."""
    from bitspike.manifest import InputSpec
    from bitspike.testing import NetBuilder

    b = NetBuilder(np.random.default_rng(3), InputSpec(shape=(64,), bits=8, scale=1 / 255))
    b.synaptic("linear", 96, 8, 8, 1, 0, 3, 2)
    b.synaptic("linear", 10, 2, 2, 1, 3, None, None)
    _digits_split_check(cosim_of, b.manifest("digits-96"), "line0=12x8x3,line1=5x6")


@pytest.mark.slow
@pytest.mark.parametrize("fuse", ["off", "on"])
def test_conv_to_conv_and_flatten_vectors_are_bit_exact(check_cosim, fuse):
    """A pixel's channels per beat: conv0 → grouped conv1 (3 per beat, one group's channels) → flatten →
    linear (3 per beat)."""
    from bitspike.manifest import InputSpec
    from bitspike.testing import NetBuilder

    b = NetBuilder(np.random.default_rng(5), InputSpec(shape=(2, 6, 6), bits=8, scale=1 / 255))
    b.synaptic("conv2d", 6, 8, 8, 1, 0, 2, 2)
    b.synaptic("conv2d", 6, 3, 2, 2, 2, 1, 3, groups=2)
    b.flatten()
    b.synaptic("linear", 10, 2, 3, 2, 1, None, None)
    check_cosim(b.manifest("conv-vectors"), seed=6, samples=4, fold="conv0=6x2x3,conv1=3x3x3,line2=2x6",
                simulator="icarus", fuse=fuse)
