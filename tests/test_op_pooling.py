"""The pooling op with any stride and with padding (issue 12's proof op), at every stage.

* validation: padding must be smaller than the kernel; padding [0, 0] is left out of the JSON,
  so manifests without padding keep their bytes;
* golden model: the window max with padding excluded is torch's ``max_pool2d`` (which pads with
  −∞); the window sum with padding adding 0 is torch's ``avg_pool2d(count_include_pad=True)``
  times kh·kw; the analysed output range is reached;
* the engine alone (:class:`~bitspike.rtl_templates.pool.WindowPoolEngine`) in amaranth.sim
  under random stalls, several frames back to back, against its reference model;
* whole networks (conv → overlapping/padded pools → linear) co-simulated in Verilator, bit-exact
  at every tap and to the cycle the planner predicts; a random sweep is marked slow.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bitspike.analysis import Range, analyse
from bitspike.errors import ManifestError
from bitspike.host.golden import GoldenModel, pool
from bitspike.manifest import AvgPoolLayer, InputSpec, Manifest, MaxPoolLayer, loads
from bitspike.testing import NetBuilder as _Builder
from bitspike.rtl_templates.pool import WindowPoolEngine, pool_reference


def _pool_layer(b: _Builder, kind: str, kernel, stride, padding) -> str:
    c, h, w = b.shapes[b.last]
    ho = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    wo = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    cls = MaxPoolLayer if kind == "maxpool" else AvgPoolLayer
    return b.append(cls(name=f"{kind[:3]}pool{len(b.layers)}", inputs=(b.last,), in_shape=(c, h, w),
                      out_shape=(c, ho, wo), kernel=tuple(kernel), stride=tuple(stride), padding=tuple(padding)))


def two_pool_net(seed: int = 0) -> Manifest:
    """conv (signed out) → maxpool 3×3/2 pad 1 → conv → avgpool 2×3/1 pad (1, 2) → flatten → linear.

    The first conv's outputs go negative, so a max that let its padding win as 0 would show.
    """
    b = _Builder(np.random.default_rng(seed), InputSpec(shape=(2, 7, 6), bits=8, scale=1 / 255))
    b.synaptic("conv2d", 3, 8, 8, 1, 0, 2, 3, kernel=3, stride=1, padding=1, signed_out=True)
    _pool_layer(b, "maxpool", (3, 3), (2, 2), (1, 1))
    b.synaptic("conv2d", 2, 3, 3, 2, 2, 2, 2, kernel=1, stride=1, padding=0)
    _pool_layer(b, "avgpool", (2, 3), (1, 1), (1, 2))
    b.flatten()
    b.synaptic("linear", 4, 3, 2, 2, 4, None, None)
    return b.manifest("two-pools")


def random_pool_net(seed: int) -> Manifest:
    """A conv → random pool (stride ≠ kernel or padding) → conv → random pool → linear network."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng, InputSpec(shape=(int(rng.integers(1, 3)), int(rng.integers(5, 9)), int(rng.integers(5, 9))),
                                bits=8, scale=1 / 255))
    for stage in range(2):
        b.synaptic("conv2d", int(rng.integers(2, 4)), 8 if stage == 0 else 3, 8 if stage == 0 else 3,
                   int(rng.integers(1, 3)), 0 if stage == 0 else 2, 2, 3, kernel=3, stride=1, padding=1,
                   signed_out=bool(rng.integers(0, 2)))
        c, h, w = b.shapes[b.last]
        while True:
            kernel = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
            stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
            padding = (int(rng.integers(0, kernel[0])), int(rng.integers(0, kernel[1])))
            fits = h + 2 * padding[0] >= kernel[0] and w + 2 * padding[1] >= kernel[1]
            if fits and (kernel != stride or padding != (0, 0)):
                break
        _pool_layer(b, ("maxpool", "avgpool")[int(rng.integers(0, 2))], kernel, stride, padding)
    b.flatten()
    b.synaptic("linear", 3, 3, 2, 2, 2, None, None)
    return b.manifest(f"random-pools-{seed}")


# ---- validation


def test_padding_must_be_smaller_than_the_kernel():
    m = two_pool_net()
    meta = m.metadata()
    pool_meta = next(l for l in meta["layers"] if l["op"] == "maxpool")
    assert pool_meta["padding"] == [1, 1]
    pool_meta["padding"] = [3, 1]
    from bitspike.manifest import from_parts

    with pytest.raises(ManifestError, match="padding") as exc:
        from_parts(meta, m.tensors())
    assert exc.value.field == "padding"


def test_zero_padding_is_left_out_and_round_trips():
    b = _Builder(np.random.default_rng(0), InputSpec(shape=(1, 6, 6), bits=8, scale=1 / 255))
    b.synaptic("conv2d", 2, 8, 8, 1, 0, 2, 2)
    b.pool("maxpool")
    b.flatten()
    b.synaptic("linear", 3, 2, 2, 1, 2, None, None)
    m = b.manifest("no-padding")
    assert "padding" not in next(l for l in m.metadata()["layers"] if l["op"] == "maxpool")
    padded = two_pool_net()
    assert loads(padded.to_bytes()) == padded


# ---- golden model and ranges


@pytest.mark.parametrize("kernel,stride,padding", [((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 2), (1, 1)),
                                                    ((3, 1), (1, 1), (2, 0)), ((2, 2), (3, 3), (1, 0)),
                                                    ((3, 2), (2, 1), (2, 1))])
def test_pool_equals_torch_float_pools(kernel, stride, padding):
    rng = np.random.default_rng(sum(kernel) + sum(stride))
    x = torch.from_numpy(rng.integers(-(2**40), 2**40, size=(3, 2, 7, 8), dtype=np.int64))
    c, h, w = x.shape[1:]
    ho = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    wo = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    for cls in (MaxPoolLayer, AvgPoolLayer):
        layer = cls(name="p", inputs=("input",), in_shape=(c, h, w), out_shape=(c, ho, wo), kernel=kernel,
                    stride=stride, padding=padding)
        got = pool(layer, x)
        if all(2 * p <= k for p, k in zip(padding, kernel)):  # what torch's pools accept
            xf = x.double()  # |values| < 2**40 and windows of ≤ 9: every sum is exact in float64
            if cls is MaxPoolLayer:
                want = torch.nn.functional.max_pool2d(xf, kernel, stride, padding)
            else:
                want = torch.nn.functional.avg_pool2d(xf, kernel, stride, padding, count_include_pad=True)
                want = want * math.prod(kernel)
            assert torch.equal(got, torch.round(want).to(torch.int64)), cls.op
        # the engine's reference model, on the HWC stream of the first sample
        flat = [int(v) for v in x[0].permute(1, 2, 0).reshape(-1)]
        ref = pool_reference(flat, (c, h, w), kernel, stride, layer.op, padding)
        assert ref == [int(v) for v in got[0].permute(1, 2, 0).reshape(-1)]


def test_sum_with_padding_range_is_exact():
    layer = AvgPoolLayer(name="p", inputs=("input",), in_shape=(1, 4, 4), out_shape=(1, 3, 3), kernel=(2, 2),
                         stride=(2, 2), padding=(1, 1))
    from bitspike.ops.base import op_of

    r = op_of(layer).ranges(layer, [Range(-5, 7)])
    # windows hold 1 … 4 elements of the 4×4 map (corners hold one, the centre four)
    assert (r.out.lo, r.out.hi) == (-20, 28)
    x = torch.full((1, 1, 4, 4), 7, dtype=torch.int64)
    assert int(pool(layer, x).max()) == 28 and int(pool(layer, -x * 5 // 7).min()) == -20


def test_golden_runs_padded_pools_within_their_ranges():
    m = two_pool_net()
    ranges = analyse(m)
    x = np.random.default_rng(2).integers(0, 256, size=(32, *m.input.shape))
    trace = GoldenModel(m).run(x, trace=True).trace  # checks every register against its range
    first = next(l for l in m.layers if l.op == "maxpool")
    assert ranges[first.name].x.lo < 0 and int(trace[first.name].x.min()) < 0


# ---- the engine alone


@pytest.mark.parametrize("kind", ["maxpool", "avgpool"])
def test_window_engine_under_stalls_matches_reference(kind):
    from amaranth.sim import Simulator

    shape, kernel, stride, padding = (2, 5, 4), (3, 2), (2, 1), (1, 1)
    x_range = Range(-9, 12)
    out_range = Range(-9 * 6, 12 * 6)
    dut = WindowPoolEngine(kind=kind, shape=shape, kernel=kernel, stride=stride, padding=padding, x_range=x_range,
                           out_range=out_range)
    rng = np.random.default_rng(7)
    frames = [[int(v) for v in rng.integers(x_range.lo, x_range.hi + 1, size=math.prod(shape))] for _ in range(4)]
    want = [v for f in frames for v in pool_reference(f, shape, kernel, stride, kind, padding)]
    beats = [v for f in frames for v in f]
    p_valid, p_ready = rng.random(4000) < 0.7, rng.random(4000) < 0.5
    got = []

    async def bench(ctx):
        i = 0
        for cycle in range(len(p_valid)):
            offer = i < len(beats) and bool(p_valid[cycle])
            if offer:
                ctx.set(dut.x.payload, beats[i])
            ctx.set(dut.x.valid, offer)
            ctx.set(dut.y.ready, bool(p_ready[cycle]))
            await ctx.delay(1e-7)
            if ctx.get(dut.x.valid) and ctx.get(dut.x.ready):
                i += 1
            if ctx.get(dut.y.valid) and ctx.get(dut.y.ready):
                got.append(ctx.get(dut.y.payload))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == want


def test_window_engine_refuses_bad_geometry():
    with pytest.raises(ValueError, match="padding"):
        WindowPoolEngine(kind="maxpool", shape=(1, 4, 4), kernel=(2, 2), stride=(1, 1), padding=(2, 0),
                         x_range=Range(0, 3), out_range=Range(0, 3))


# ---- whole networks in Verilator


def test_padded_overlapping_pools_cosim_bit_exact_and_timed(check_cosim):
    check_cosim(two_pool_net(), seed=3, samples=5)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15, 16])
def test_random_pool_nets_cosim_bit_exact(seed, check_cosim):
    check_cosim(random_pool_net(seed), seed=seed, samples=4)
