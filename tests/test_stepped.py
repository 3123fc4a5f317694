"""The time-stepped integer neuron (host/stepped.py): against a plain loop, the paper's neuron and snnTorch itself."""

from __future__ import annotations

import numpy as np
import pytest
import snntorch as snn
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bitspike.errors import BitspikeError
from bitspike.host.golden import neuron_steps
from bitspike.host.stepped import DenseStep, SteppedNeuron, dense_stack_run, leak, neuron_run


def loop_reference(xs: list[int], *, mode, fire, reset, b, p, theta, s_bits, T):
    """One neuron, Python integers, written straight from the contract's pseudo-code."""
    q = 2**s_bits - 1
    v, s_prev, out = 0, 0, []
    for t in range(T):
        x_t = xs[t] if mode == "stepped" else xs[0]
        held = v if (reset == "subtract" or s_prev == 0) else 0
        leaked = (held * b + (2 ** (p - 1) if p >= 1 else 0)) // 2**p
        v = leaked + x_t - (s_prev * theta if reset == "subtract" else 0)
        s = (1 if v > theta else 0) if fire == "gt" else min(max((2 * v + theta) // (2 * theta), 0), q)
        out.append(s)
        s_prev = s
    return out


@st.composite
def neuron_cases(draw):
    p = draw(st.integers(0, 12))
    b = draw(st.one_of(st.integers(0, 2**p), st.just(2**p)))
    fire = draw(st.sampled_from(["gt", "round"]))
    neuron = SteppedNeuron(
        threshold=draw(st.one_of(st.integers(1, 40), st.integers(1, 2**20))),
        mode=draw(st.sampled_from(["stepped", "squeezed"])),
        fire=fire,
        reset=draw(st.sampled_from(["subtract", "zero"])),
        leak_mul=b,
        leak_shift=p,
        spike_bits=1 if fire == "gt" else draw(st.integers(1, 8)),
    )
    T = draw(st.integers(1, 10))
    n = draw(st.integers(1, 6))
    lim = draw(st.sampled_from([50, 2**24]))
    rows = T if neuron.mode == "stepped" else 1
    xs = draw(st.lists(st.lists(st.integers(-lim, lim), min_size=n, max_size=n), min_size=rows, max_size=rows))
    return neuron, T, np.array(xs, dtype=np.int64)


@settings(max_examples=150, deadline=None)
@given(neuron_cases())
def test_vectorised_neuron_equals_the_plain_loop(case):
    neuron, T, xs = case
    x = torch.from_numpy(xs) if neuron.mode == "stepped" else torch.from_numpy(xs[0])
    got = neuron_run(x, neuron, T)
    assert got.dtype == torch.int64 and tuple(got.shape) == (T, xs.shape[1])
    for i in range(xs.shape[1]):
        want = loop_reference(
            [int(r[i]) for r in xs], mode=neuron.mode, fire=neuron.fire, reset=neuron.reset,
            b=neuron.leak_mul, p=neuron.leak_shift, theta=neuron.threshold, s_bits=neuron.spike_bits, T=T,
        )  # fmt: skip
        assert got[:, i].tolist() == want, f"neuron {i}"


def test_leak_rounds_to_nearest_ties_up_and_is_exact_for_if():
    half = SteppedNeuron(threshold=1, leak_mul=1, leak_shift=1)
    v = torch.tensor([-4, -3, -2, -1, 0, 1, 2, 3, 4])
    # v / 2 = -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2 -> ties go towards +inf
    assert leak(v, half).tolist() == [-2, -1, -1, 0, 0, 1, 1, 2, 2]
    nine_tenths = SteppedNeuron(threshold=1, leak_mul=922, leak_shift=10)  # 0.900390625
    assert leak(torch.tensor([100, -100, 5]), nine_tenths).tolist() == [90, -90, 5]  # 90.04, -90.04, 4.502
    if_ = SteppedNeuron(threshold=1, leak_mul=256, leak_shift=8)
    big = torch.tensor([2**40 + 1, -(2**40) - 1])
    assert torch.equal(leak(big, if_), big)


@pytest.mark.parametrize("k,s_bits,T", [(0, 1, 1), (3, 2, 5), (5, 4, 8), (7, 8, 16)])
def test_squeezed_if_subtract_round_is_the_papers_neuron(k, s_bits, T):
    g = torch.Generator().manual_seed(k * 100 + T)
    x = torch.randint(-(2 ** (k + s_bits + 1)), 2 ** (k + s_bits + 1), (500,), generator=g)
    neuron = SteppedNeuron(threshold=2**k, mode="squeezed", fire="round", reset="subtract", spike_bits=s_bits)
    _, want = neuron_steps(x, k, s_bits, T)
    assert torch.equal(neuron_run(x, neuron, T), want)


def _snntorch_leaky(theta: float, reset: str, n: int, *, output: bool = False) -> snn.Leaky:
    # snnTorch's exporter wants per-neuron beta and threshold tensors
    return snn.Leaky(
        beta=torch.ones(n), threshold=torch.full((n,), float(theta)), reset_mechanism=reset,
        init_hidden=True, output=output,
    )  # fmt: skip


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_one_layer_equals_snntorch_leaky_with_beta_one(reset):
    """Integer currents straight into snnTorch's Leaky: same spikes, same membrane, at every step."""
    torch.manual_seed(1)
    T, N, theta = 12, 4000, 7
    x = torch.randint(-9, 16, (T, N))
    lif = _snntorch_leaky(theta, reset, N)
    spk_ref, mem_ref = [], []
    with torch.no_grad():
        for t in range(T):
            spk_ref.append(lif(x[t].float()))
            mem_ref.append(lif.mem.clone())
    spikes, v = neuron_run(x, SteppedNeuron(threshold=theta, reset=reset), membrane=True)
    assert torch.equal(spikes, torch.stack(spk_ref).to(torch.int64))
    assert torch.equal(v, torch.stack(mem_ref).to(torch.int64))
    assert 0 < int(spikes.sum()) < spikes.numel()  # both firing and silent steps occur


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_integer_mlp_equals_snntorch_with_beta_one_on_every_sample(reset):
    """A two-layer Leaky MLP with integer weights, biases and thresholds: identical output counts on every sample.

    Bound for the float side: |inputs| ≤ 1 (spikes), |weights| ≤ 7, fan-in ≤ 64, |bias| ≤ 7, so every current
    is below 64·7 + 7 < 2^9 and every membrane below T·(2^9 + θ) < 2^14: all float32 sums are exact.
    """
    torch.manual_seed(2)
    T, N, n_in, n_hid, n_out = 10, 500, 64, 48, 10
    w1, b1 = torch.randint(-7, 8, (n_hid, n_in)), torch.randint(-7, 8, (n_hid,))
    w2, b2 = torch.randint(-7, 8, (n_out, n_hid)), torch.randint(-7, 8, (n_out,))
    x = (torch.rand(T, N, n_in) < 0.3).to(torch.int64)
    th1, th2 = 9, 5

    fc1, fc2 = torch.nn.Linear(n_in, n_hid), torch.nn.Linear(n_hid, n_out)
    with torch.no_grad():
        fc1.weight.copy_(w1.float()), fc1.bias.copy_(b1.float())
        fc2.weight.copy_(w2.float()), fc2.bias.copy_(b2.float())
    net = torch.nn.Sequential(fc1, _snntorch_leaky(th1, reset, n_hid), fc2, _snntorch_leaky(th2, reset, n_out, output=True))
    counts_ref = torch.zeros(N, n_out)
    with torch.no_grad():
        for t in range(T):
            spk, _ = net(x[t].float())
            counts_ref += spk

    layers = [
        DenseStep(w1, b1, SteppedNeuron(threshold=th1, reset=reset)),
        DenseStep(w2, b2, SteppedNeuron(threshold=th2, reset=reset)),
    ]
    counts = dense_stack_run(layers, x)
    assert torch.equal(counts, counts_ref.to(torch.int64))
    assert len(torch.unique(counts)) > 3  # the outputs really vary from sample to sample


def test_readout_layer_sums_currents():
    w, b = torch.tensor([[1, -2], [3, 0]]), torch.tensor([1, -1])
    x = torch.tensor([[[1, 1]], [[0, 1]], [[1, 0]]])  # T=3, N=1
    assert dense_stack_run([DenseStep(w, b, None)], x).tolist() == [[(1 - 2 + 1) + (-2 + 1) + (1 + 1), 2 + -1 + 2]]


@pytest.mark.parametrize(
    "fields,field",
    [
        (dict(threshold=0), "threshold"),
        (dict(threshold=1.5), "threshold"),
        (dict(threshold=3, mode="dense"), "mode"),
        (dict(threshold=3, fire="ge"), "fire"),
        (dict(threshold=3, reset="none"), "reset"),
        (dict(threshold=3, leak_mul=5, leak_shift=2), "leak_mul"),
        (dict(threshold=3, leak_shift=-1), "leak_shift"),
        (dict(threshold=3, fire="gt", spike_bits=2), "spike_bits"),
    ],
)
def test_bad_neuron_fields_name_the_field(fields, field):
    with pytest.raises(BitspikeError, match=f"'{field}'"):
        SteppedNeuron(**fields)


def test_float_currents_are_refused():
    with pytest.raises(BitspikeError, match="integers"):
        neuron_run(torch.zeros(3, 2), SteppedNeuron(threshold=1))
