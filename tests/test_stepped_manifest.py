"""Time-stepped neurons in the manifest (docs/SEMANTICS.md §4.6): schema, validation, ranges, golden model.

The golden model's stepped layers are checked against ``bitspike.host.stepped.dense_stack_run`` (the
reference proven against snnTorch in tests/test_stepped.py) on random integer networks, with every register
checked against the interval analysis on the way (so the analysis is sound on these inputs).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from bitspike.errors import HardwareError, ManifestError
from bitspike.host.golden import GoldenModel
from bitspike.host.stepped import DenseStep, dense_stack_run
from bitspike.manifest import InputSpec, LinearLayer, Manifest, Requant, from_parts, loads
from bitspike.ops.neuron import SteppedNeuron


def _identity_requant(n: int, bound: int = 10_000) -> Requant:
    return Requant(np.ones(n, np.int64), np.zeros(n, np.int64), 0, -bound, bound)


def _net(seed: int, n1: SteppedNeuron, n2: SteppedNeuron, T: int, *, readout_neuron: bool = True):
    """input 12 → fc1 (paper's neuron, θ = 1, T = 1: passes the pixels) → fc2 (n1) → out (n2, identity weights)."""
    rng = np.random.default_rng(seed)
    w1, b1 = rng.integers(-7, 8, (16, 12)), rng.integers(-5, 6, 16)
    w2, b2 = rng.integers(-7, 8, (10, 16)), rng.integers(-5, 6, 10)
    layers = [
        LinearLayer(name="fc1", inputs=("input",), in_shape=(12,), out_shape=(16,), w_bits=4, s_bits=4, timesteps=1,
                    k=0, weight=w1, bias=b1, requant=_identity_requant(16)),
        LinearLayer(name="fc2", inputs=("fc1",), in_shape=(16,), out_shape=(10,), w_bits=4, s_bits=n1.spike_bits,
                    timesteps=T, weight=w2, bias=b2, requant=_identity_requant(10) if readout_neuron else None,
                    stepped=n1),
    ]
    if readout_neuron:
        layers.append(LinearLayer(name="out", inputs=("fc2",), in_shape=(10,), out_shape=(10,), w_bits=2,
                                  s_bits=n2.spike_bits, timesteps=T, weight=np.eye(10, dtype=np.int64),
                                  bias=np.zeros(10, np.int64), requant=None, stepped=n2))
    m = Manifest.build("stepped-test", InputSpec((12,), 4, 1.0), layers)
    return m, (w1, b1, w2, b2)


NEURONS = [
    (SteppedNeuron(7), SteppedNeuron(5)),  # IF, subtract, gt (snnTorch's Leaky with beta = 1)
    (SteppedNeuron(7, leak_mul=3, leak_shift=2), SteppedNeuron(5, reset="zero", leak_mul=7, leak_shift=3)),
    (SteppedNeuron(3, reset="zero"), SteppedNeuron(9, leak_mul=1, leak_shift=1)),
    (SteppedNeuron(6, fire="round", spike_bits=2, leak_mul=5, leak_shift=3), SteppedNeuron(4, leak_mul=0, leak_shift=0)),
]


@pytest.mark.parametrize("case", range(len(NEURONS)))
def test_golden_model_runs_stepped_layers_as_the_reference(case):
    n1, n2 = NEURONS[case]
    T = 6
    m, (w1, b1, w2, b2) = _net(case, n1, n2, T)
    assert m.version == 2
    x = torch.as_tensor(np.random.default_rng(100 + case).integers(0, 16, (64, 12)))
    got = GoldenModel(m).run(x, trace=True)  # every register checked against the analysis
    cur1 = x @ torch.as_tensor(w1).T + torch.as_tensor(b1)  # fc1 passes the pixels: its currents, every step
    eye = lambda n: DenseStep(torch.eye(n, dtype=torch.int64), torch.zeros(n, dtype=torch.int64), None)  # noqa: E731
    ref = dense_stack_run(
        [DenseStep(torch.eye(16, dtype=torch.int64), torch.zeros(16, dtype=torch.int64), n1),
         DenseStep(torch.as_tensor(w2), torch.as_tensor(b2), n2), eye(10)],
        cur1[None].expand(T, *cur1.shape))  # fmt: skip
    assert torch.equal(got.logits, ref)
    assert got.trace["fc2"].s.shape == (T, 64, 16) and got.trace["out"].acc.shape == (64, 10)


def test_stepped_last_layer_sums_its_accumulators():
    n1 = SteppedNeuron(7)
    T = 5
    m, (w1, b1, w2, b2) = _net(7, n1, n1, T, readout_neuron=False)
    x = torch.as_tensor(np.random.default_rng(7).integers(0, 16, (32, 12)))
    cur1 = x @ torch.as_tensor(w1).T + torch.as_tensor(b1)
    ref = dense_stack_run([DenseStep(torch.eye(16, dtype=torch.int64), torch.zeros(16, dtype=torch.int64), n1),
                           DenseStep(torch.as_tensor(w2), torch.as_tensor(b2), None)], cur1[None].expand(T, *cur1.shape))
    assert torch.equal(GoldenModel(m).run(x).logits, ref)


def test_round_trip_bytes_and_versions():
    m, _ = _net(1, *NEURONS[1], 4)
    again = loads(m.to_bytes())
    assert again == m and again.to_bytes() == m.to_bytes()
    meta = m.metadata()
    assert meta["version"] == 2 and "k" not in meta["layers"][1] and meta["layers"][1]["neuron"] == {
        "mode": "stepped", "fire": "gt", "reset": "subtract", "leak": [3, 2], "threshold": 7}
    assert meta["layers"][0]["k"] == 0 and "neuron" not in meta["layers"][0]
    # a network without neuron objects is still written as version 1 (its bytes, and digest, unchanged)
    v1 = Manifest.build("v1", m.input, [m.layers[0], replace(m.layers[1], stepped=None, requant=None, k=2)])
    assert v1.version == 1 and v1.metadata()["version"] == 1


def test_the_papers_neuron_written_as_a_neuron_object_is_stored_as_k():
    m, _ = _net(2, *NEURONS[0], 4)
    meta = m.metadata()
    meta["layers"][0].pop("k")
    meta["layers"][0]["neuron"] = {"mode": "squeezed", "fire": "round", "reset": "subtract", "leak": [4, 2],
                                   "threshold": 1}
    again = from_parts(meta, m.tensors())
    assert again == m and again.layers[0].stepped is None and again.layers[0].k == 0


def _broken(change) -> str:
    m, _ = _net(3, *NEURONS[1], 4)
    meta, tensors = json.loads(json.dumps(m.metadata())), m.tensors()
    change(meta, tensors)
    with pytest.raises(ManifestError) as err:
        from_parts(meta, tensors)
    return str(err.value)


def _set(layer: int, key: str, value):
    def change(meta, tensors):
        target = meta["layers"][layer]
        for part in key.split(".")[:-1]:
            target = target[part]
        target[key.split(".")[-1]] = value

    return change


@pytest.mark.parametrize("change, words", [
    (_set(1, "neuron.fire", "ge"), ["layer 1 'fc2'", "'neuron.fire'", "one of ['round', 'gt']"]),
    (_set(1, "neuron.mode", "async"), ["'neuron.mode'", "['squeezed', 'stepped']"]),
    (_set(1, "neuron.reset", 0), ["'neuron.reset'", "expected a string"]),
    (_set(1, "neuron.threshold", 0), ["'neuron.threshold'", "1 … 2**40 − 1"]),
    (_set(1, "neuron.leak", [5, 2]), ["'neuron.leak'", "0 … 2**leak_shift"]),
    (_set(1, "neuron.leak", [1, 40]), ["'neuron.leak'", "0 … 32"]),
    (_set(1, "neuron.leak", 0.9), ["'neuron.leak'", "[b, p]"]),
    (_set(1, "neuron.extra", 1), ["'extra'", "unknown field for neuron"]),
    (_set(1, "k", 3), ["layer 1 'fc2'", "'k'", "not both"]),
    (_set(1, "s_bits", 2), ["'s_bits'", "1 with fire 'gt'"]),
    (_set(2, "timesteps", 5), ["layer 2 'out'", "'timesteps'", "gives 4 per-step currents"]),
    (_set(2, "neuron.mode", "squeezed"), ["layer 2 'out'", "'neuron'", "a squeezed neuron needs one current"]),
    (lambda meta, t: meta.__setitem__("version", 1), ["layer 1 'fc2'", "needs manifest version 2"]),
])  # fmt: skip
def test_validation_names_the_layer_and_field(change, words):
    message = _broken(change)
    for w in words:
        assert w in message, message


def test_a_leak_product_that_could_leave_int64_is_refused():
    # currents near 2**40 over 64 steps with b close to 2**32: v·b would need more than 62 bits
    def change(meta, tensors):
        meta["layers"][1]["neuron"]["leak"] = [2**32 - 1, 32]
        meta["layers"][0]["requant"].update(lo=-(2**40), hi=2**40)
        tensors["fc1.rq_mult"] = np.full(16, 2**30, np.int64)
    message = _broken(change)
    assert "layer 1 'fc2'" in message and "'leak'" in message and "62-bit" in message


def test_the_generator_refuses_what_it_has_no_stepped_engine_for():
    """Stepped linear layers get an engine (tests/test_rtl_stepped.py); a squeezed neuron that is not the paper's
    has none, and the refusal names the layer and the field."""
    from bitspike.gen.plan import make_plan

    m, _ = _net(4, *NEURONS[1], 4)
    make_plan(m)  # stepped linear layers: planned
    odd = SteppedNeuron(3, mode="squeezed", fire="round", spike_bits=2)
    layers = list(m.layers)
    layers[1] = replace(layers[1], stepped=odd, s_bits=2)
    bad = Manifest.build("odd-squeezed", m.input, layers[:2] + [replace(layers[2], stepped=SteppedNeuron(5))])
    with pytest.raises(HardwareError, match="layer 1 'fc2': field neuron.mode"):
        make_plan(bad)


def test_neuron_fields_are_checked_when_built_in_python():
    with pytest.raises(Exception, match="neuron field 'spike_bits'"):
        SteppedNeuron(3, spike_bits=2)
    assert SteppedNeuron(4, mode="squeezed", fire="round", spike_bits=3).is_paper
    assert not SteppedNeuron(3, mode="squeezed", fire="round", spike_bits=3).is_paper


def test_stepped_conv_layer_runs_every_step():
    """input [2, 5, 5] → conv 1×1 (pass-through) → stepped conv 3×3 → flatten → stepped readout, against torch."""
    from bitspike.host.stepped import neuron_run
    from bitspike.manifest import Conv2dLayer, FlattenLayer

    rng = np.random.default_rng(11)
    T, n1, n2 = 5, SteppedNeuron(6, leak_mul=13, leak_shift=4), SteppedNeuron(3, reset="zero")
    w0, b0 = rng.integers(-3, 4, (3, 2, 1, 1)), rng.integers(-4, 5, 3)
    w1, b1 = rng.integers(-3, 4, (4, 3, 3, 3)), rng.integers(-2, 3, 4)
    layers = [
        Conv2dLayer(name="c0", inputs=("input",), in_shape=(2, 5, 5), out_shape=(3, 5, 5), w_bits=4, s_bits=3,
                    timesteps=1, k=0, weight=w0, bias=b0, requant=_identity_requant(3), kernel=(1, 1)),
        Conv2dLayer(name="c1", inputs=("c0",), in_shape=(3, 5, 5), out_shape=(4, 2, 2), w_bits=4, s_bits=1,
                    timesteps=T, weight=w1, bias=b1, requant=_identity_requant(4), kernel=(3, 3), stride=(2, 2),
                    stepped=n1),
        FlattenLayer(name="fl", inputs=("c1",), in_shape=(4, 2, 2), out_shape=(16,)),
        LinearLayer(name="out", inputs=("fl",), in_shape=(16,), out_shape=(16,), w_bits=2, s_bits=1, timesteps=T,
                    weight=np.eye(16, dtype=np.int64), bias=np.zeros(16, np.int64), requant=None, stepped=n2),
    ]  # fmt: skip
    m = Manifest.build("conv-stepped", InputSpec((2, 5, 5), 3, 1.0), layers)
    x = torch.as_tensor(rng.integers(0, 8, (20, 2, 5, 5)))
    got = GoldenModel(m).run(x).logits

    def conv(h, w, b, stride):  # float64 holds these small integer sums exactly
        out = torch.nn.functional.conv2d(h.double(), torch.as_tensor(w).double(), torch.as_tensor(b).double(), stride)
        return out.round().to(torch.int64)

    cur = conv(x, w0, b0, 1)
    s1 = neuron_run(cur[None].expand(T, *cur.shape), n1)
    acc = torch.stack([conv(s1[t], w1, b1, 2) for t in range(T)])
    want = neuron_run(acc.flatten(2), n2).sum(0)
    assert want.sum() > 0 and torch.equal(got, want)


@pytest.mark.parametrize("seed", range(6))
def test_stepped_ranges_hold_for_currents_that_change_every_step(seed):
    """Random neurons, currents drawn per step (extremes of the range often): every value inside the analysis."""
    from bitspike.host.stepped import neuron_run
    from bitspike.ranges import Range, stepped_neuron_ranges

    rng = np.random.default_rng(seed)
    p = int(rng.integers(0, 9))
    fire = ["gt", "round"][seed % 2]
    n = SteppedNeuron(int(rng.integers(1, 40)), fire=fire, reset=["subtract", "zero"][seed // 2 % 2],
                      leak_mul=int(rng.integers(0, 2**p + 1)), leak_shift=p, spike_bits=1 if fire == "gt" else 3)
    lo, hi = sorted(int(v) for v in rng.integers(-200, 300, 2))
    T = int(rng.integers(1, 12))
    v_t, s_t, leak = stepped_neuron_ranges(Range(lo, hi), threshold=n.threshold, fire=n.fire, reset=n.reset,
                                           leak_mul=n.leak_mul, leak_shift=n.leak_shift, s_bits=n.spike_bits,
                                           timesteps=T)  # fmt: skip
    x = torch.as_tensor(rng.integers(lo, hi + 1, (T, 4000)))
    ends = torch.as_tensor(rng.integers(0, 2, (T, 4000)))
    x = torch.where(torch.as_tensor(rng.random((T, 4000)) < 0.5), torch.where(ends == 1, hi, lo), x)
    s, v = neuron_run(x, n, membrane=True)
    for t in range(T):
        assert v_t[t].lo <= int(v[t].min()) and int(v[t].max()) <= v_t[t].hi, (t, v_t[t])
        assert s_t[t].lo <= int(s[t].min()) and int(s[t].max()) <= s_t[t].hi
    if leak is not None:
        r = (1 << n.leak_shift) >> 1
        assert leak.lo <= int(v.min()) * n.leak_mul + r and int(v.max()) * n.leak_mul + r <= leak.hi
