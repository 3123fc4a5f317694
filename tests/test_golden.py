"""The integer golden model against plain references, and the interval analysis against brute force."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitspike.analysis import Range, analyse, bits_for, network_stats, neuron_membrane_bounds, neuron_ranges
from bitspike.errors import RangeError
from bitspike.host.golden import GoldenModel, argmax_lowest, neuron_steps
from bitspike.manifest import Manifest
from bitspike.testing import random_cnn, random_mlp


def reference_neuron(x: int, theta: int, s_bits: int, timesteps: int) -> tuple[list[int], list[int]]:
    """docs/SEMANTICS.md §2 in exact rational arithmetic: s = clip(floor(v/θ + 1/2), 0, q), soft reset."""
    q = 2**s_bits - 1
    v = Fraction(x)
    vs, ss = [int(v)], []
    for _ in range(timesteps):
        s = min(max(int((v / theta + Fraction(1, 2)).__floor__()), 0), q)
        v = v - s * theta + x
        ss.append(s)
        vs.append(int(v))
    return vs, ss


@pytest.mark.parametrize("k,s_bits,T", [(0, 8, 1), (1, 1, 4), (3, 2, 3), (5, 4, 8), (12, 8, 2), (2, 1, 1)])
def test_neuron_matches_rational_reference(k, s_bits, T):
    theta = 1 << k
    xs = list(range(-3 * theta - 5, (2**s_bits + 2) * theta + 7, max(1, theta // 4)))
    v, s = neuron_steps(torch.tensor(xs), k, s_bits, T)
    for j, x in enumerate(xs):
        ref_v, ref_s = reference_neuron(x, theta, s_bits, T)
        assert v[:, j].tolist() == ref_v
        assert s[:, j].tolist() == ref_s


def test_one_bit_neuron_fires_at_half_threshold():
    # b = 1 uses the same rounding rule: s = [v/θ >= 1/2], so v = θ/2 fires
    v, s = neuron_steps(torch.tensor([7, 8, 9]), 4, 1, 1)
    assert s[0].tolist() == [0, 1, 1]


def test_spike_rate_approximates_current():
    # temporal squeezing: θ·mean(s) ≈ x for currents inside the range
    k, T = 4, 8
    x = torch.arange(0, 15 * 16)
    _, s = neuron_steps(x, k, 4, T)
    est = s.sum(0).double() * 16 / T
    assert torch.all((est - x.double()).abs() <= 16 / T / 2 + 8 / T + 1e-9)


@settings(max_examples=60, deadline=None)
@given(lo=st.integers(-300, 300), span=st.integers(0, 400), k=st.integers(0, 6), s_bits=st.integers(1, 4), T=st.integers(1, 6))
def test_membrane_bounds_are_sound_by_brute_force(lo, span, k, s_bits, T):
    hi = lo + span
    bounds = neuron_membrane_bounds(Range(lo, hi), k, s_bits, T)
    v, _ = neuron_steps(torch.arange(lo, hi + 1), k, s_bits, T)
    for t in range(T + 1):
        assert bounds[t].lo <= int(v[t].min()) and int(v[t].max()) <= bounds[t].hi


@settings(max_examples=40, deadline=None)
@given(lo=st.integers(-500, 500), span=st.integers(0, 3000), k=st.integers(0, 8), s_bits=st.integers(1, 8), T=st.integers(1, 8))
def test_neuron_ranges_are_exact(lo, span, k, s_bits, T):
    per_t, s_range, count_range = neuron_ranges(Range(lo, lo + span), k, s_bits, T)
    v, s = neuron_steps(torch.arange(lo, lo + span + 1), k, s_bits, T)
    assert [(r.lo, r.hi) for r in per_t] == [(int(v[t].min()), int(v[t].max())) for t in range(T + 1)]
    assert (s_range.lo, s_range.hi) == (0, int(s.max()))
    assert count_range.hi == int(s.sum(0).max())


@pytest.mark.parametrize("lo,hi,width", [(0, 0, 1), (0, 1, 1), (0, 255, 8), (0, 256, 9), (-1, 0, 1), (-128, 127, 8), (-129, 127, 9), (-5, 300, 10)])
def test_bits_for(lo, hi, width):
    assert bits_for(lo, hi) == width


def float_reference(m: Manifest, x: np.ndarray) -> torch.Tensor:
    """The same network computed in float64 with torch's own layers (exact for these magnitudes)."""
    vals = {"input": torch.as_tensor(x, dtype=torch.float64)}
    for layer in m.layers:
        a = vals[layer.inputs[0]]
        if layer.op in ("linear", "conv2d"):
            _, s = neuron_steps(a.to(torch.int64), layer.k, layer.s_bits, layer.timesteps)
            c = s.sum(0).double()
            w = torch.from_numpy(layer.weight).double()
            b = torch.from_numpy(layer.bias).double()
            if layer.op == "linear":
                acc = torch.nn.functional.linear(c, w, b)
            else:
                acc = torch.nn.functional.conv2d(c, w, b, stride=layer.stride, padding=layer.padding)
            if layer.requant is None:
                out = acc
            else:
                rq = layer.requant
                shape = (1, -1) + (1,) * (acc.dim() - 2)
                p = acc * torch.from_numpy(rq.multiplier).double().view(shape) + torch.from_numpy(rq.bias).double().view(shape)
                out = torch.floor((p + (2**rq.shift // 2)) / 2**rq.shift).clamp(rq.lo, rq.hi)
        elif layer.op == "maxpool":
            out = torch.nn.functional.max_pool2d(a, layer.kernel, layer.stride)
        elif layer.op == "avgpool":
            out = torch.nn.functional.avg_pool2d(a, layer.kernel, layer.stride) * layer.window
        elif layer.op == "flatten":
            out = a.flatten(1)
        elif layer.op == "add":
            b2 = vals[layer.inputs[1]]
            shape = (1, -1, 1, 1)
            p = a * torch.from_numpy(layer.mult_a).double().view(shape) + b2 * torch.from_numpy(layer.mult_b).double().view(shape)
            out = torch.floor((p + (2**layer.shift // 2)) / 2**layer.shift).clamp(layer.lo, layer.hi)
        vals[layer.name] = out
    return vals[m.layers[-1].name]


@pytest.mark.parametrize(
    "make",
    [
        lambda: random_mlp(3, sizes=(20, 16, 6)),
        lambda: random_cnn(4, image=(2, 7, 7), channels=(3, 5), classes=6),
        lambda: random_cnn(5, image=(1, 8, 8), channels=(4,), classes=3, pool="avgpool", residual=True),
    ],
)
def test_golden_equals_float_reference(make):
    m = make()
    x = np.random.default_rng(1).integers(0, 256, size=(16,) + m.input.shape)
    res = GoldenModel(m).run(x, trace=True)
    ref = float_reference(m, x)
    assert torch.equal(res.logits, ref.to(torch.int64))
    assert res.logits.dtype == torch.int64
    assert set(res.trace) == {l.name for l in m.layers}
    first = m.synaptic_layers[0]
    tr = res.trace[first.name]
    assert tr.v.shape[0] == first.timesteps + 1 and tr.s.shape[0] == first.timesteps


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["mlp", "cnn", "res"]),
       tt=st.lists(st.integers(1, 8), min_size=1, max_size=2))
def test_golden_never_leaves_analysed_ranges(seed, kind, tt):
    if kind == "mlp":
        m = random_mlp(seed, sizes=(10, 8, 5), timesteps=tt)
    else:
        m = random_cnn(seed, image=(1, 6, 6), channels=(3, 3), classes=4, timesteps=tt, residual=kind == "res",
                       pool="maxpool" if seed % 2 else "avgpool")
    rng = np.random.default_rng(seed)
    extremes = np.stack([np.zeros(m.input.shape), np.full(m.input.shape, 255)]).astype(np.int64)
    x = np.concatenate([extremes, rng.integers(0, 256, size=(30,) + m.input.shape)])
    GoldenModel(m).run(x)  # raises RangeError if any register leaves its analysed range


def test_range_violation_is_reported_with_layer_and_register():
    m = random_mlp(9, sizes=(8, 6, 3))
    g = GoldenModel(m)
    r = g.ranges[m.layers[1].name]
    # shrink the proved accumulator range to provoke a violation
    g.ranges[m.layers[1].name] = type(r)(**{**r.__dict__, "acc": Range(0, 0)})
    with pytest.raises(RangeError, match=r"layer 'line1' \(linear\): register acc took value"):
        g.run(np.full((4, 8), 200))


def test_argmax_ties_go_to_lowest_index():
    logits = torch.tensor([[1, 5, 5, 2], [7, 7, 7, 7], [-3, -1, -2, -1]])
    assert argmax_lowest(logits).tolist() == [1, 0, 1]


def test_input_checks():
    m = random_mlp(2, sizes=(8, 4, 3))
    g = GoldenModel(m)
    with pytest.raises(ValueError, match=r"expected \[N, 8\]"):
        g.run(np.zeros((2, 9), np.int64))
    with pytest.raises(ValueError, match="0 … 255"):
        g.run(np.full((2, 8), 256))
    with pytest.raises(TypeError, match="integers"):
        g.run(np.zeros((2, 8), np.float32))


def test_network_stats_follow_the_paper():
    m = random_mlp(5, sizes=(10, 8, 6, 4), w_bits=[2], s_bits=[3], timesteps=[2])
    st_ = network_stats(m)
    assert (st_.avg_w_bits, st_.avg_s_bits, st_.avg_timesteps) == (2.0, 3.0, 2.0)
    assert st_.bit_budget == 12.0
    # the fixed first layer is left out of S-ACE, included in s_ace_all
    assert st_.s_ace == 8 * 6 * 2 * 3 * 2 + 6 * 4 * 2 * 3 * 2
    assert st_.s_ace_all == st_.s_ace + 10 * 8 * 8 * 8 * 1
    assert st_.weight_memory_bits == 80 * 8 + 48 * 2 + 24 * 2


def test_analysis_covers_every_layer():
    m = random_cnn(8, residual=True)
    ranges = analyse(m)
    assert list(ranges) == [l.name for l in m.layers]
    for l in m.synaptic_layers:
        r = ranges[l.name]
        assert r.s.hi <= 2**l.s_bits - 1 and r.count.hi <= l.timesteps * (2**l.s_bits - 1)


@pytest.mark.parametrize("make", [lambda: random_mlp(3, sizes=(20, 16, 6)), lambda: random_cnn(8, residual=True),
                                  lambda: random_cnn(5, pool="avgpool", residual=True)])
def test_typical_networks_keep_the_int64_fast_path(make):
    # wide (Python-integer) products only where the analysis says int64 might not hold; trained-size networks never need them
    m = make()
    assert GoldenModel(m)._wide == set()
    assert all(r.product is None or r.product.width <= 64 for r in analyse(m).values())
