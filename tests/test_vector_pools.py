"""Vector streams through the pooling engines (issue 13, deliverable 3): conv → pool → conv → pool → fc.

The engines first (:class:`~bitspike.rtl_templates.pool.PoolEngine` and
:class:`~bitspike.rtl_templates.pool.WindowPoolEngine` taking ``vec`` channels per beat) in amaranth.sim
under random stalls against :func:`~bitspike.rtl_templates.pool.pool_reference`; then the planner (a
width named on a conv runs through its pool, conflicting or impossible widths are refused, the
Fashion CNN's device fold leaves the 12,544-element floor); then whole networks co-simulated in
Verilator, bit-exact at every tap under stalls and to the cycle the planner predicts. The sweep over
widths and pool geometries is ``slow``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bitspike.errors import HardwareError
from bitspike.manifest import AvgPoolLayer, InputSpec, MaxPoolLayer
from bitspike.ranges import Range
from bitspike.testing import NetBuilder

# ---- the engines alone


def _engine(kind: str, shape, kernel, stride, padding, vec: int, x_range: Range, fast: bool = False):
    from bitspike.rtl_templates.pool import PoolEngine, WindowPoolEngine

    n = kernel[0] * kernel[1]
    out_range = x_range if kind == "maxpool" else Range(n * min(0, x_range.lo), n * x_range.hi)
    if tuple(kernel) == tuple(stride) and tuple(padding) == (0, 0):
        return PoolEngine(kind=kind, shape=shape, kernel=kernel, stride=stride, x_range=x_range, out_range=out_range,
                          vec=vec, fast_paths=fast is True, row_block=fast == "block")
    return WindowPoolEngine(kind=kind, shape=shape, kernel=kernel, stride=stride, padding=padding, x_range=x_range,
                            out_range=out_range, vec=vec)


@pytest.mark.parametrize("kind,shape,kernel,stride,padding,vec,fast", [
    ("maxpool", (6, 4, 6), (2, 2), (2, 2), (0, 0), 3, False),
    ("avgpool", (4, 5, 4), (2, 2), (2, 2), (0, 0), 2, False),
    ("maxpool", (4, 5, 4), (3, 2), (2, 1), (1, 1), 4, False),
    ("avgpool", (6, 4, 5), (3, 3), (2, 2), (1, 0), 3, False),
    # fast_paths (the row memory read a beat ahead): several beats a pixel; one beat a pixel (the next beat
    # reads the word just written); odd widths and heights (pixels and rows past the last window)
    ("maxpool", (6, 4, 6), (2, 2), (2, 2), (0, 0), 3, True),
    ("avgpool", (4, 5, 5), (2, 2), (2, 2), (0, 0), 4, True),
    ("maxpool", (2, 7, 7), (3, 3), (3, 3), (0, 0), 2, True),
    ("avgpool", (3, 4, 5), (1, 2), (1, 2), (0, 0), 3, True),
    # row_block (the row in block RAM, read a beat ahead through a synchronous port): the same cases
    ("maxpool", (6, 4, 6), (2, 2), (2, 2), (0, 0), 3, "block"),
    ("avgpool", (4, 5, 5), (2, 2), (2, 2), (0, 0), 4, "block"),
    ("maxpool", (2, 7, 7), (3, 3), (3, 3), (0, 0), 2, "block"),
    ("avgpool", (3, 4, 5), (1, 2), (1, 2), (0, 0), 3, "block"),
])
def test_pool_engines_take_vector_beats_under_stalls(kind, shape, kernel, stride, padding, vec, fast):
    """Three frames back to back, ``vec`` channels per beat in and out, random valid and ready."""
    from bitspike.rtl_templates.pool import pool_reference
    from stream_bench import run_stalled

    x_range = Range(-9, 12)
    dut = _engine(kind, shape, kernel, stride, padding, vec, x_range, fast)
    rng = np.random.default_rng(vec + len(kind))
    frames = [[int(v) for v in rng.integers(x_range.lo, x_range.hi + 1, size=math.prod(shape))] for _ in range(3)]
    frames[0][:2] = [x_range.lo, x_range.hi]
    want = [v for f in frames for v in pool_reference(f, shape, kernel, stride, kind, padding)]
    elems = [v for f in frames for v in f]
    beats = [elems[i:i + vec] for i in range(0, len(elems), vec)]

    def put(ctx, beat):
        for j, v in enumerate(beat):
            ctx.set(dut.x.payload[j], v)

    cycles = 12 * len(beats) + 40 * len(want) // vec
    p_valid, p_ready = rng.random(cycles) < 0.7, rng.random(cycles) < 0.5
    got = run_stalled(dut, beats, put, p_valid, p_ready, inp=dut.x, out=dut.y, stop_after=len(want) // vec)
    assert [int(p[j]) for p in got for j in range(vec)] == want


def test_pool_engine_refuses_a_beat_that_splits_a_pixel():
    with pytest.raises(ValueError, match="vec 4 must divide the 6 channels"):
        _engine("maxpool", (6, 4, 4), (2, 2), (2, 2), (0, 0), 4, Range(0, 3))
    with pytest.raises(ValueError, match="vec 4 must divide the 6 channels"):
        _engine("avgpool", (6, 4, 4), (3, 3), (1, 1), (1, 1), 4, Range(0, 3))


# ---- the planner


def _pool(b: NetBuilder, kind: str, kernel, stride, padding) -> str:
    c, h, w = b.shapes[b.last]
    ho = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    wo = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    cls = MaxPoolLayer if kind == "maxpool" else AvgPoolLayer
    return b.append(cls(name=f"{kind[:3]}pool{len(b.layers)}", inputs=(b.last,), in_shape=(c, h, w),
                        out_shape=(c, ho, wo), kernel=tuple(kernel), stride=tuple(stride), padding=tuple(padding)))


def conv_pool_net(seed: int, channels=(6, 4), pools=(("maxpool", (2, 2), (2, 2), (0, 0)),) * 2, image=(1, 6, 6)):
    """conv (3×3, pad 1) → pool → conv (3×3, pad 1) → pool → flatten → linear, random weights; the first
    conv's outputs signed, so a max that let padding win as 0 would show."""
    b = NetBuilder(np.random.default_rng(seed), InputSpec(shape=image, bits=8, scale=1 / 255))
    b.synaptic("conv2d", channels[0], 8, 8, 1, 0, 2, 3, kernel=3, stride=1, padding=1, signed_out=True)
    _pool(b, *pools[0])
    b.synaptic("conv2d", channels[1], 3, 3, 1, 2, 2, 2, kernel=3, stride=1, padding=1)
    _pool(b, *pools[1])
    b.flatten()
    b.synaptic("linear", 4, 3, 2, 1, 2, None, None)
    return b.manifest(f"conv-pool-vectors-{seed}")


def test_a_width_named_on_a_conv_runs_through_its_pool():
    from bitspike.gen.plan import make_plan

    m = conv_pool_net(0)
    p = make_plan(m, fold="conv0=6x1x3,conv1=4x3x2,line2=4x2")
    conv0, pool1, conv1, pool3, _, fc = p.layers
    assert (conv0.vec_out, pool1.vec_in, pool1.vec_out, conv1.vec_in) == (3, 3, 3, 3)
    assert (conv1.vec_out, pool3.vec_in, pool3.vec_out, fc.vec_in) == (2, 2, 2, 2)
    # the streaming pool takes a beat a clock: its busy cycles are its input beats
    assert pool1.cycles == 6 * 6 * 6 // 3 and pool3.cycles == 3 * 3 * 4 // 2
    named = make_plan(m, fold="conv0=6x1x3,maxpool1=1x1x3,conv1=4x3x2,line2=4x2")
    assert named.layers == p.layers  # naming the pool's own width (the same) changes nothing
    assert pool1.to_json()["vec_in"] == 3
    scalar = make_plan(m, fold="conv0=6x1,conv1=4x3,line2=4x2")
    assert all((n.vec_in, n.vec_out) == (1, 1) for n in scalar.layers)


@pytest.mark.parametrize("fold,message", [
    ("conv0=6x1x3,maxpool1=1x1x2,conv1=4x3", "'conv0' gives the same stream 3"),
    ("conv0=6x1x4,conv1=4x3", "4 elements per beat must divide 6"),
    ("conv0=6x1x3,conv1=4x1", "does not take its vector streams"),
])
def test_bad_vector_folds_through_pools_are_refused_with_the_reason(fold, message):
    from bitspike.gen.plan import make_plan

    with pytest.raises(HardwareError, match=message):
        make_plan(conv_pool_net(0), fold=fold)


def test_a_pool_that_feeds_the_output_passes_no_vectors():
    """A pool whose output goes where no vector can (here: a fork into two readers) takes none either."""
    from bitspike.gen.folding import vector_edges
    from bitspike.gen.plan import make_plan

    b = NetBuilder(np.random.default_rng(2), InputSpec(shape=(1, 6, 6), bits=8, scale=1 / 255))
    b.synaptic("conv2d", 4, 8, 8, 1, 0, 2, 3, kernel=3, stride=1, padding=1)
    pooled = b.pool("maxpool")
    b.synaptic("conv2d", 4, 3, 3, 1, 2, 2, 2, kernel=3, stride=1, padding=1)
    b.add(pooled, b.last, 7)
    b.flatten()
    b.synaptic("linear", 4, 3, 2, 1, 2, None, None)
    p = make_plan(b.manifest("pool-fork"))
    assert all(p.layers[c].op != "maxpool" and p.layers[q].op != "maxpool" for q, c in vector_edges(p))
    with pytest.raises(HardwareError, match="cannot carry 2 elements per beat"):
        make_plan(b.manifest("pool-fork"), fold="conv0=4x1x2")


def test_fashion_cnn_device_fold_streams_vectors_through_its_pools():
    """ECP5-85F: conv0's 16 channels per beat through maxpool1 leave 784 beats where 12,544 elements
    were; the interval is then conv0's own 784 pixels × 9 taps."""
    from bitspike.gen.boards import device_budget, get_board
    from bitspike.gen.folding import estimate_resources
    from bitspike.gen.plan import make_plan
    from bitspike.testing import fashion_cnn_shaped

    dev = device_budget(get_board("ulx3s_85f"))
    p = make_plan(fashion_cnn_shaped(0), max_luts=dev.lut, dsp_blocks=dev.dsp, device=dev)
    conv0, pool1 = p.layers[:2]
    assert conv0.vec_out == pool1.vec_in == pool1.vec_out == p.layers[2].vec_in > 1
    assert p.initiation_interval == 784 * 9 == conv0.cycles
    est = estimate_resources(p, dev.family)
    assert est["dsp"] <= dev.dsp and est["lut"] <= dev.lut and est["bram"] <= dev.bram


def test_a_device_the_vectors_do_not_fit_keeps_the_scalar_plan():
    """iCEBreaker: the Fashion CNN's narrowest folds already overflow its 30 block RAMs; the device filler
    then hands back scalar streams (as before vector pools), not a wider plan that fits no better."""
    from bitspike.gen.boards import device_budget, get_board
    from bitspike.gen.plan import make_plan
    from bitspike.testing import fashion_cnn_shaped

    dev = device_budget(get_board("icebreaker"))
    p = make_plan(fashion_cnn_shaped(0), max_luts=dev.lut, dsp_blocks=dev.dsp, device=dev)
    assert all((n.vec_in, n.vec_out) == (1, 1) for n in p.layers)


# ---- whole networks, co-simulated in Verilator


def test_conv_pool_conv_pool_fc_vectors_are_bit_exact_and_on_time(check_cosim):
    """Three channels per beat into maxpool1, two into maxpool3 and the linear layer."""
    check_cosim(conv_pool_net(0), seed=3, samples=4, fold="conv0=6x1x3,conv1=4x3x2,line2=4x2")


def test_fast_paths_reach_the_streaming_pools_and_keep_the_plan():
    """``fast_paths`` marks the synaptic engines and the streaming pools (not a frame-buffer pool, which has
    no row memory), and changes no cycle count of the plan."""
    from bitspike.gen.plan import make_plan

    fold = "conv0=6x1x3,conv1=4x3x2,line2=4x2"
    m = conv_pool_net(0, pools=(("maxpool", (2, 2), (2, 2), (0, 0)), ("avgpool", (3, 3), (2, 2), (1, 1))))
    plain, fast = make_plan(m, fold=fold), make_plan(m, fold=fold, fast_paths=True)
    assert [n.fast_paths for n in fast.layers if n.op != "flatten"] == [True, True, True, False, True]
    assert not any(getattr(n, "fast_paths", False) for n in plain.layers)
    assert (fast.cycles_per_inference, fast.initiation_interval) == (plain.cycles_per_inference,
                                                                    plain.initiation_interval)
    assert [n.cycles for n in fast.layers] == [n.cycles for n in plain.layers]


def test_fast_paths_through_vector_pools_are_bit_exact_and_on_time(check_cosim, cosim_of):
    """``fast_paths`` on the CNN (a skid buffer at every synaptic engine's input, so a pool's ``x.ready``
    no longer waits for the conv's line-buffer compare): every tap under stalls, the planner's latency
    alone and its interval back to back, to the cycle."""
    m, fold = conv_pool_net(0), "conv0=6x1x3,conv1=4x3x2,line2=4x2"
    check_cosim(m, seed=3, samples=4, fold=fold, fast_paths=True)
    sim = cosim_of(m, fold=fold, fast_paths=True)
    x = np.random.default_rng(3).integers(0, 256, size=(4, *m.input.shape))
    assert sim.run(x, processes=1).initiation_interval == sim.design.initiation_interval


def test_ice40_pools_keep_their_rows_in_block_ram_bit_exact_and_on_time(check_cosim):
    """For iCE40 (no LUT RAM) the streaming pools read their rows through synchronous ports (block RAM, not
    flip-flops): the planner says so, the estimate counts the block RAMs, and the network is the golden
    model at every tap under stalls, at the planner's cycles."""
    from bitspike.gen.folding import estimate_brams
    from bitspike.gen.plan import make_plan
    from bitspike.ops.base import OPS
    from bitspike.testing.nets import fashion_cnn_shaped

    m, fold = conv_pool_net(0), "conv0=6x1x3,conv1=4x3x2,line2=4x2"
    pools = [n for n in make_plan(m, fold=fold, family="ice40").layers if n.op == "maxpool"]
    assert pools and all(n.row_block and OPS[n.op].memories(n)[0][2] == "ram" for n in pools)
    assert not any(n.row_block for n in make_plan(m, fold=fold, family="ecp5").layers if n.op == "maxpool")
    # the Fashion CNN's rows (14 x 16 and 7 x 32 words) are a block RAM each in the estimate
    fashion = [n for n in make_plan(fashion_cnn_shaped(0), fold="conv0=1x1", family="ice40").layers
               if n.op == "maxpool"]
    assert [estimate_brams(n, "ice40") for n in fashion] == [1, 1]
    check_cosim(m, seed=5, samples=4, fold=fold, family="ice40")


@pytest.mark.slow
def test_vector_pool_into_a_zero_skipping_linear_layer_is_bit_exact(check_cosim):
    """maxpool3's two channels per beat into the linear layer's zero-skip watcher (``--zero-skip on``)."""
    check_cosim(conv_pool_net(0), seed=5, samples=4, fold="conv0=6x1x3,conv1=4x3x2,line2=4x2", zero_skip="on")


@pytest.mark.slow
@pytest.mark.parametrize("seed,channels,pools,fold", [
    (1, (4, 6), (("avgpool", (2, 2), (2, 2), (0, 0)), ("maxpool", (2, 2), (2, 2), (0, 0))),
     "conv0=4x1x4,conv1=6x4x6,line2=2x6"),
    (2, (6, 4), (("maxpool", (3, 3), (2, 2), (1, 1)), ("avgpool", (2, 3), (1, 1), (1, 2))),
     "conv0=6x1x2,conv1=4x6x4,line2=4x4"),
    (3, (6, 6), (("avgpool", (3, 2), (2, 1), (1, 0)), ("maxpool", (2, 2), (1, 2), (0, 1))),
     "conv0=6x1x6,conv1=3x6x3,line2=2x3"),
    (4, (4, 4), (("maxpool", (2, 2), (2, 2), (0, 0)), ("avgpool", (3, 3), (3, 3), (1, 1))),
     "conv0=4x1x2,conv1=2x2x2,line2=4x2"),
])
def test_vector_pools_sweep_bit_exact_and_on_time(check_cosim, seed, channels, pools, fold):
    """Every width the channels allow up to a whole pixel per beat; streaming and frame-buffer pools, max and
    sum, strides and paddings."""
    check_cosim(conv_pool_net(seed, channels, pools, image=(2, 7, 6)), seed=seed, samples=4, fold=fold)
