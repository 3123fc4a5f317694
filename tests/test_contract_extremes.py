"""The integer contract at the manifest's limits: golden model, independent reference and the real RTL agree.

Products of the requantizer and the residual add reach about 80 bits when the
multipliers, biases and clamp bounds sit at their limits. The golden model
computes them exactly (Python integers where int64 may not hold); the
Verilated RTL must give the same integers at every tapped register.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from int_reference import run_reference

from bitspike import manifest as M
from bitspike.analysis import REGISTER_HI, Range, analyse, check_registers, needs_wide_product, neuron_ranges
from bitspike.errors import ManifestError
from bitspike.host.golden import GoldenModel, neuron_steps

BIAS_MAX, MULT_MAX, CUR = M.BIAS_LIMIT - 1, M.MULT_LIMIT - 1, M.CURRENT_LIMIT


def _rq(n: int, mult: int, bias: int, shift: int, lo: int, hi: int) -> M.Requant:
    return M.Requant(multiplier=np.full(n, mult, np.int64), bias=np.full(n, bias, np.int64), shift=shift, lo=lo, hi=hi)


def issue_example_requant() -> M.Manifest:
    """Issue 11's first example: a last-but-one linear layer with bias 2**47−1, multiplier 2**31−1, shift 62."""
    fc0 = M.LinearLayer(name="fc0", inputs=("input",), in_shape=(4,), out_shape=(3,), w_bits=8, s_bits=8, timesteps=1, k=0,
                        weight=np.arange(-6, 6, dtype=np.int64).reshape(3, 4), bias=np.full(3, BIAS_MAX, np.int64),
                        requant=_rq(3, MULT_MAX, BIAS_MAX, 62, 0, CUR))
    fc1 = M.LinearLayer(name="fc1", inputs=("fc0",), in_shape=(3,), out_shape=(2,), w_bits=2, s_bits=2, timesteps=2, k=15,
                        weight=np.array([[1, -1, 1], [0, 1, 1]], np.int64), bias=np.zeros(2, np.int64))
    return M.Manifest.build("issue11-requant", M.InputSpec(shape=(4,), bits=8), [fc0, fc1])


def extreme_net() -> M.Manifest:
    """Both of issue 11's examples in one network, plus a neuron with θ = 2**30 and T = 15 on a 2**40 current.

    fc0: the wide requantizer (all-zero input → 65536). fc1: a signed current clamped at ±2**40. add2: a ≈ ±2**40
    times Ma = 2**31−1 (an ~71-bit product). fc3: a 15-step neuron with θ = 2**30 whose current saturates its
    spikes (T·B_s = 60, so its spike tap fits one 64-bit word). Its weights and biases are non-negative, so the
    logits' range is unsigned, 48 bits wide with the top bit used: the result beats must still read back right.
    """
    rng = np.random.default_rng(11)
    fc0 = M.LinearLayer(name="fc0", inputs=("input",), in_shape=(4,), out_shape=(3,), w_bits=8, s_bits=8, timesteps=1, k=0,
                        weight=rng.integers(-127, 128, size=(3, 4)), bias=np.full(3, BIAS_MAX, np.int64),
                        requant=_rq(3, MULT_MAX, BIAS_MAX, 62, 0, CUR))
    fc1 = M.LinearLayer(name="fc1", inputs=("fc0",), in_shape=(3,), out_shape=(3,), w_bits=8, s_bits=16, timesteps=1, k=0,
                        weight=np.array([[127, 127, 127], [-127, -127, -127], [5, -3, 1]], np.int64),
                        bias=np.array([0, 0, -BIAS_MAX], np.int64),
                        requant=_rq(3, MULT_MAX, -BIAS_MAX, 15, -CUR, CUR))
    add2 = M.AddLayer(name="add2", inputs=("fc1", "fc0"), in_shape=(3,), out_shape=(3,),
                      mult_a=np.array([MULT_MAX, MULT_MAX, -MULT_MAX], np.int64),
                      mult_b=np.array([-MULT_MAX, 1, MULT_MAX], np.int64), shift=30, lo=-CUR, hi=CUR)
    fc3 = M.LinearLayer(name="fc3", inputs=("add2",), in_shape=(3,), out_shape=(4,), w_bits=4, s_bits=4, timesteps=15, k=30,
                        weight=rng.integers(0, 8, size=(4, 3)), bias=np.array([BIAS_MAX, 2**46, 0, 1], np.int64))
    return M.Manifest.build("issue11-extremes", M.InputSpec(shape=(4,), bits=8), [fc0, fc1, add2, fc3])


def _inputs(n: int = 24) -> np.ndarray:
    x = np.random.default_rng(5).integers(0, 256, size=(n, 4), dtype=np.int64)
    x[0], x[1] = 0, 255
    return x


def test_issue_example_requant_is_exact():
    m = issue_example_requant()
    g = GoldenModel(m)
    assert g._wide == {"fc0"}  # the product can reach ~2**78: computed with Python integers
    res = g.run(np.zeros((1, 4), np.int64), trace=True)
    want = ((BIAS_MAX * MULT_MAX + BIAS_MAX + 2**61) >> 62)
    assert want == 65536
    assert res.trace["fc0"].out.tolist() == [[65536] * 3]
    # and with the range checks off the same integers come out (nothing relied on the check)
    assert torch.equal(GoldenModel(m, check_ranges=False).run(_inputs()).logits, g.run(_inputs()).logits)


def test_extreme_net_equals_reference_at_every_register():
    m = extreme_net()
    ranges = analyse(m)
    assert {name for name, r in ranges.items() if needs_wide_product(m.layer(name), r)} == {"fc0", "fc1", "add2"}
    assert ranges["add2"].product.width > 70 and ranges["fc0"].product.width > 78
    x = _inputs()
    res = GoldenModel(m).run(x, trace=True)
    fc1_out = res.trace["fc1"].out
    assert int(fc1_out.abs().max()) == CUR  # a ≈ 2**40 reaches the add
    saturated = res.trace["fc3"].s == 15
    assert bool(saturated.any()) and not bool(saturated.all())
    for i in range(len(x)):
        ref = run_reference(m, x[i])
        for layer in m.layers:
            assert res.trace[layer.name].out[i].tolist() == ref[layer.name]["out"], (i, layer.name)
        assert res.trace["fc3"].v[:, i].T.tolist() == ref["fc3"]["v"]


def test_neuron_at_the_limits_matches_python_integers():
    # θ = 2**30, 16-bit spikes, 64 steps, currents far past saturation in both directions
    xs = [-(2**52), -(2**40), -1, 0, 2**29, 2**30 - 1, 2**40, 2**52]
    v, s = neuron_steps(torch.tensor(xs), 30, 16, 64)
    theta, q = 2**30, 2**16 - 1
    for j, x in enumerate(xs):
        vv = x
        for t in range(64):
            sp = max(0, min(q, (2 * vv + theta) // (2 * theta)))
            assert int(v[t, j]) == vv and int(s[t, j]) == sp
            vv = vv - sp * theta + x
        assert int(v[64, j]) == vv
    per_t, _, _ = neuron_ranges(Range(-(2**52), 2**52), 30, 16, 64)
    assert all(r.lo <= int(v[t].min()) and int(v[t].max()) <= r.hi for t, r in enumerate(per_t))


def test_registers_past_62_bits_are_refused_with_layer_and_register():
    # overlapping sum pools on a 2**40 current: each 64×64 window multiplies the bound by 2**12, 2**40 · 2**24 > 2**61
    c0 = M.Conv2dLayer(name="conv0", inputs=("input",), in_shape=(1, 200, 200), out_shape=(1, 200, 200), w_bits=2,
                       s_bits=1, timesteps=1, k=0, weight=np.ones((1, 1, 1, 1), np.int64), bias=np.zeros(1, np.int64),
                       kernel=(1, 1), stride=(1, 1), padding=(0, 0), requant=_rq(1, 1, CUR, 0, 0, CUR))
    p1 = M.AvgPoolLayer(name="pool1", inputs=("conv0",), in_shape=(1, 200, 200), out_shape=(1, 137, 137), kernel=(64, 64),
                        stride=(1, 1))
    p2 = M.AvgPoolLayer(name="pool2", inputs=("pool1",), in_shape=(1, 137, 137), out_shape=(1, 74, 74), kernel=(64, 64),
                        stride=(1, 1))
    fl = M.FlattenLayer(name="flat3", inputs=("pool2",), in_shape=(1, 74, 74), out_shape=(74 * 74,))
    fc = M.LinearLayer(name="fc4", inputs=("flat3",), in_shape=(74 * 74,), out_shape=(2,), w_bits=2, s_bits=1, timesteps=1,
                       k=0, weight=np.ones((2, 74 * 74), np.int64), bias=np.zeros(2, np.int64))
    layers = [c0, p1, p2, fl, fc]
    with pytest.raises(ManifestError) as info:
        M.Manifest.build("too-wide", M.InputSpec(shape=(1, 200, 200), bits=1), layers)
    msg = str(info.value)
    assert "layer 2 'pool2'" in msg and "register 'out'" in msg and "62-bit limit" in msg
    assert str(2**64) in msg and 2**64 > REGISTER_HI
    # one such pool stays within the limit: the manifest is legal, that register 53 bits wide
    fl1 = M.FlattenLayer(name="flat3", inputs=("pool1",), in_shape=(1, 137, 137), out_shape=(137 * 137,))
    fc1 = M.LinearLayer(name="fc4", inputs=("flat3",), in_shape=(137 * 137,), out_shape=(2,), w_bits=2, s_bits=1,
                        timesteps=1, k=0, weight=np.ones((2, 137 * 137), np.int64), bias=np.zeros(2, np.int64))
    ok = M.Manifest.build("wide-enough", M.InputSpec(shape=(1, 200, 200), bits=1), [c0, p1, fl1, fc1])
    assert analyse(ok)["pool1"].out.width == 53


def test_the_extreme_network_is_legal():
    # the extreme network is legal: its widest bounded register is below the limit
    m = extreme_net()
    ranges = check_registers(m)
    assert max(r.v.width for r in ranges.values() if r.v is not None) < 62


# ---- the same integers from the real RTL (Verilator)


@pytest.fixture(scope="module")
def extreme_sim(cosim_of):
    m = extreme_net()
    return m, cosim_of(m)


def test_extreme_net_is_bit_exact_in_verilator(extreme_sim):
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    m, sim = extreme_sim
    x = _inputs()
    g = GoldenModel(m).run(x)
    logits = analyse(m)["fc3"].out
    assert not logits.signed and int(g.logits.max()) >= 2 ** (logits.width - 1)
    res = sim.run(x, trace=True, processes=1)
    np.testing.assert_array_equal(res.logits, g.logits.numpy())
    np.testing.assert_array_equal(res.classes, g.classes.numpy())
    ref = ManifestGoldenTaps(m, sim.design.taps)
    assert compare_all(res, ref.sequences(x), sim.design.taps, ref) == (len(x), None)


def test_maxpool_is_exact_beyond_float64():
    # sum pools take currents near 2**40 to about 2**54, where float64 has a spacing of 4: the max must stay exact
    c0 = M.Conv2dLayer(name="conv0", inputs=("input",), in_shape=(1, 256, 256), out_shape=(1, 256, 256), w_bits=8,
                       s_bits=8, timesteps=1, k=0, weight=np.ones((1, 1, 1, 1), np.int64), bias=np.zeros(1, np.int64),
                       kernel=(1, 1), stride=(1, 1), padding=(0, 0), requant=_rq(1, 1, CUR - 2**20, 0, 0, CUR))
    p1 = M.AvgPoolLayer(name="pool1", inputs=("conv0",), in_shape=(1, 256, 256), out_shape=(1, 4, 4), kernel=(64, 64),
                        stride=(64, 64))
    p2 = M.AvgPoolLayer(name="pool2", inputs=("pool1",), in_shape=(1, 4, 4), out_shape=(1, 2, 2), kernel=(2, 2),
                        stride=(2, 2))
    p3 = M.MaxPoolLayer(name="pool3", inputs=("pool2",), in_shape=(1, 2, 2), out_shape=(1, 1, 1), kernel=(2, 2),
                        stride=(2, 2))
    fl = M.FlattenLayer(name="flat4", inputs=("pool3",), in_shape=(1, 1, 1), out_shape=(1,))
    fc = M.LinearLayer(name="fc5", inputs=("flat4",), in_shape=(1,), out_shape=(2,), w_bits=2, s_bits=1, timesteps=1,
                       k=30, weight=np.array([[1], [-1]], np.int64), bias=np.zeros(2, np.int64))
    m = M.Manifest.build("max-beyond-float", M.InputSpec(shape=(1, 256, 256), bits=8), [c0, p1, p2, p3, fl, fc])
    x = np.random.default_rng(3).integers(0, 256, size=(2, 1, 256, 256))
    x[0] = 0
    x[0, 0, 0, 0] = 1  # the top-left window's sum is odd: 2**14·(2**40 − 2**20) + 1
    res = GoldenModel(m).run(x, trace=True)
    for i in range(2):
        ref = run_reference(m, x[i])
        pooled = res.trace["pool2"].out[i].tolist()
        assert pooled == ref["pool2"]["out"] and res.trace["pool3"].out[i].tolist() == ref["pool3"]["out"]
        best = max(v for row in pooled[0] for v in row)
        assert best > 2**53 and res.trace["pool3"].out[i].reshape(-1).tolist() == [best]
    assert int(res.trace["pool3"].out[0]) == 2**14 * (CUR - 2**20) + 1
    assert float(int(res.trace["pool3"].out[0])) != int(res.trace["pool3"].out[0])  # not representable in float64
