"""Tests of bitspike.host.quant: forward values against the integer neuron, and the straight-through gradients of SEMANTICS.md §2."""

from __future__ import annotations

import math

import pytest
import torch

from bitspike.host.golden import neuron_steps
from bitspike.host.quant import BitSpec, MultiBitNeuron, WeightQuantizer



@pytest.fixture(autouse=True)
def _float64():
    """Exact comparisons run in float64; restore the default so other test modules are unaffected."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _neuron(s_bits: int, t: int, vth: float) -> MultiBitNeuron:
    n = MultiBitNeuron(BitSpec(s_bits, 1, 8), BitSpec(t, 1, 6))
    with torch.no_grad():
        n.vth.fill_(vth)
    n.initialised.fill_(True)
    return n.double()


@pytest.mark.parametrize("s_bits,t,k", [(1, 1, 3), (2, 2, 4), (3, 3, 2), (4, 4, 5), (2, 5, 0)])
def test_neuron_equals_integer_neuron(s_bits, t, k):
    """On the integer grid (x = x_int·V_th/2**k) the float neuron spikes exactly as the integer one."""
    gen = torch.Generator().manual_seed(s_bits * 10 + t)
    theta = 2**k
    x_int = torch.randint(-3 * theta, (2**s_bits + 2) * theta, (4000,), generator=gen)
    x_int[:10] = torch.arange(10) * max(1, theta // 2)  # boundary values: exact half-thresholds
    vth = 0.375
    n = _neuron(s_bits, t, vth)
    y = n(x_int.double() * vth / theta)
    _, s = neuron_steps(x_int, k, s_bits, t)
    assert torch.equal(y * t / vth, s.sum(0).double())


def test_neuron_gradients_for_t_bits_and_threshold():
    n = _neuron(2, 2, 0.5)
    q = 3
    x = torch.tensor([0.1, 0.6, 0.9, 5.0, -1.0], requires_grad=True)
    y = n(x)
    y.sum().backward()
    # T only through 1/T: dy/dT = −y/T
    assert n.timesteps.value.grad == pytest.approx(float(-(y.detach() / 2).sum()))
    # bit width: only the saturated input (5.0 / 0.5 = 10 > q) gets (q+1)·ln 2 per step, · V_th/T · T
    assert n.s_bits.value.grad == pytest.approx(0.5 * (q + 1) * math.log(2))
    # STE through the rounding: the clipped input (5.0) and the negative one get no input gradient
    assert x.grad[3] == 0 and x.grad[4] == 0 and x.grad[1] > 0
    assert n.vth.grad is not None and torch.isfinite(n.vth.grad)


def test_weight_quantizer_values_and_bit_gradient():
    wq = WeightQuantizer(BitSpec(3, 1, 5)).double()
    w = torch.tensor([-2.0, -0.26, 0.0, 0.1, 0.24, 0.26, 1.5], requires_grad=True)
    with torch.no_grad():
        wq.step.fill_(0.25)
    wq.initialised.fill_(True)
    wq_out = wq(w)
    q = 3  # 2**(3-1) - 1
    assert wq_out.tolist() == [-0.75, -0.25, 0.0, 0.0, 0.25, 0.25, 0.75]
    assert wq.integers(w.detach()).tolist() == [-3, -1, 0, 0, 1, 1, 3]
    wq_out.sum().backward()
    # ∂w_q/∂b = sign(w)·S·(q+1)·ln 2 for the two clipped weights (−2.0 and 1.5): they cancel; weight the sum instead
    wq.bits.value.grad = None
    w.grad = None
    out = wq(w)
    (out * torch.tensor([1.0, 1, 1, 1, 1, 1, 2.0])).sum().backward()
    expect = (-1 * 1.0 + 1 * 2.0) * 0.25 * (q + 1) * math.log(2)
    assert wq.bits.value.grad == pytest.approx(expect)
    assert w.grad[0] == 0 and w.grad[6] == 0 and w.grad[1] == 1  # clipped weights get no gradient


def test_one_bit_weights_are_signs():
    wq = WeightQuantizer(BitSpec(1, 1, 3)).double()
    w = torch.tensor([-0.3, 0.0, 0.2])
    with torch.no_grad():
        wq.step.fill_(0.5)
    wq.initialised.fill_(True)
    assert wq(w).tolist() == [-0.5, 0.5, 0.5]
    assert wq.integers(w).tolist() == [-1, 1, 1]


def test_step_renewal_when_bits_change():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(2000, generator=gen)
    for renewal in (False, True):
        wq = WeightQuantizer(BitSpec(4, 1, 6)).double()
        wq.train()
        wq(w)  # initialises the step LSQ-style
        before = float(wq.step.detach())
        wq.renewal = renewal
        wq.bits.set(2)
        wq(w)
        after = float(wq.step.detach())
        if renewal:
            assert after != before
            # the renewed step is the best of the 50 candidates for mean |Q(w) − w|^2.4
            def err(step):
                return float((wq._int(w, step, 2) * step - w).abs().pow(2.4).mean())
            assert err(after) <= err(before)
        else:
            assert after == before
    n = _neuron(3, 2, 1.0)
    n.train()
    n.renewal = True
    x = torch.rand(5000, generator=gen) * 4
    n.s_bits.set(1)
    n(x)
    assert float(n.vth.detach()) != 1.0 and int(n.last_bits) == 1
