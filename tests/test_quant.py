"""Tests of bitspike.host.quant: forward values against the integer neuron, and the straight-through gradients of docs/SEMANTICS.md §2."""

from __future__ import annotations

import math

import pytest
import torch

from bitspike.host.golden import neuron_steps
from bitspike.host.quant import BitSpec, MultiBitNeuron, WeightQuantizer, renewal_counts



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


def _fixed_neuron(s_bits: int, t: BitSpec) -> MultiBitNeuron:
    """A neuron with threshold 1 (fixed), so that currents are in threshold units."""
    return MultiBitNeuron(BitSpec(s_bits, s_bits, s_bits, False), t, threshold=1.0).double()


@pytest.mark.parametrize("start", [1.0, 0.974, 0.5])
def test_t_gradient_is_not_zero_at_or_below_its_lower_bound(start):
    """The clip of T is straight-through: at its bound, or past it, T still gets −y/T from the task."""
    n = _fixed_neuron(2, BitSpec(1, 1, 3))
    with torch.no_grad():
        n.timesteps.value.fill_(start)
    x = torch.tensor([0.4, 1.2, 2.6])
    y = n(x)
    assert n.timesteps.current() == 1
    y.sum().backward()
    assert float(n.timesteps.value.grad) == pytest.approx(-float(y.detach().sum()))  # −Σ y / T at T = 1
    assert n.timesteps.value.grad != 0


@pytest.mark.parametrize("start", [1.0, 0.974])
def test_t_leaves_its_lower_bound_when_more_steps_help(start):
    """A current of 0.6 thresholds through a 1-bit neuron, regressed onto 0.6.

    T = 1 gives y = 1 (error 0.4), T = 2 gives y = (1 + 0)/2 = 0.5 (error 0.1). The loss's
    gradient on T at T = 1 is 2·(1 − 0.6)·(−1/1) = −0.8 whatever the start (the clip is
    straight-through), so plain gradient descent with step 0.5 reaches 1.8 (rounded: 2) in at
    most three steps, and at T = 2 the gradient is only +0.05, too small to take it back below 1.5.
    """
    n = _fixed_neuron(1, BitSpec(1, 1, 3))
    with torch.no_grad():
        n.timesteps.value.fill_(start)
    x, want = torch.tensor([0.6]), 0.6
    grads, ts = [], []
    for _ in range(5):
        n.timesteps.value.grad = None
        loss = ((n(x) - want) ** 2).sum()
        loss.backward()
        grads.append(float(n.timesteps.value.grad))
        ts.append(n.timesteps.current())
        with torch.no_grad():
            n.timesteps.value -= 0.5 * n.timesteps.value.grad
        n.timesteps.bound_()
    assert grads[0] == pytest.approx(-0.8) and ts[0] == 1
    assert ts[-1] == 2 and n.timesteps.current() == 2
    assert all(g == pytest.approx(0.05) for g, t in zip(grads, ts) if t == 2)


def test_bound_keeps_a_bit_width_within_half_a_step_of_its_range():
    n = _fixed_neuron(1, BitSpec(1, 1, 3))
    for value, kept in ((-4.0, 0.5), (9.0, 3.5), (2.2, 2.2)):
        with torch.no_grad():
            n.timesteps.value.fill_(value)
        n.timesteps.bound_()
        assert float(n.timesteps.value.detach()) == pytest.approx(kept)


def test_one_bit_weight_gradient_comes_from_clipped_weights_only():
    """B_w = 1: ∂w_q/∂b = sign(w)·S·ln 2 for |w| > S (the sign clips them), 0 inside."""
    wq = WeightQuantizer(BitSpec(1, 1, 3)).double()
    with torch.no_grad():
        wq.step.fill_(0.5)
    wq.initialised.fill_(True)
    w = torch.tensor([-0.8, -0.3, 0.0, 0.2, 0.7, 1.2], requires_grad=True)  # |w/S| = 1.6 .6 0 .4 1.4 2.4
    g = torch.tensor([1.0, 2, 3, 4, 5, 6])
    out = wq(w)
    assert out.tolist() == [-0.5, -0.5, 0.5, 0.5, 0.5, 0.5]
    (out * g).sum().backward()
    # clipped: −0.8, 0.7, 1.2 → (1·(−1) + 5 + 6) · 0.5 · ln 2 (all six would give 7.5 · ln 2)
    assert float(wq.bits.value.grad) == pytest.approx(5 * math.log(2))
    assert w.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 0.0, 0.0]  # inside: STE; clipped: none


def test_spike_clip_is_decided_before_rounding():
    """Currents in [q − ½, q] round to q and are the input's; only those above q are the bit width's."""
    n = _fixed_neuron(2, BitSpec(1, 1, 1, False))
    n.s_bits = type(n.s_bits)(BitSpec(2, 1, 4)).double()  # learnable B_s, q = 3
    x = torch.tensor([2.5, 2.75, 3.0, 3.25, 3.5, 3.75], requires_grad=True)
    y = n(x)
    assert y.tolist() == [3.0] * 6
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert float(n.s_bits.value.grad) == pytest.approx(3 * 4 * math.log(2))  # three clipped, (q + 1)·ln 2 each


def test_weight_clip_is_decided_before_rounding():
    wq = WeightQuantizer(BitSpec(3, 1, 5)).double()  # q = 3
    with torch.no_grad():
        wq.step.fill_(1.0)
    wq.initialised.fill_(True)
    w = torch.tensor([2.5, 2.75, 3.0, 3.25, 3.5, -3.25], requires_grad=True)
    out = wq(w)
    assert out.tolist() == [3.0, 3.0, 3.0, 3.0, 3.0, -3.0]
    assert wq.integers(w.detach()).tolist() == [3, 3, 3, 3, 3, -3]
    out.sum().backward()
    assert w.grad.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert float(wq.bits.value.grad) == pytest.approx((1 + 1 - 1) * 4 * math.log(2))


def test_threshold_gradient_scale_and_history_detach():
    """vth_grad "batch" divides the threshold's gradient by sqrt(batch) more than "sample";
    the history detach changes gradients only where an earlier step clipped."""
    x = torch.rand(16, 5, generator=torch.Generator().manual_seed(1)) * 3
    grads = {}
    for rule in ("batch", "sample"):
        n = _neuron(2, 2, 0.5)
        n.vth_grad = rule
        n(x).sum().backward()
        grads[rule] = float(n.vth.grad)
    assert grads["batch"] * 4 == pytest.approx(grads["sample"])  # sqrt(16)
    # with T ≤ 2 the detach cannot matter: a clipped step is followed by clipped steps only
    xs = torch.linspace(-1, 5, 49)
    for t in (1, 2):
        g = []
        for detach in (True, False):
            n = _fixed_neuron(2, BitSpec(t, t, t, False))
            n.detach_history = detach
            x = xs.clone().requires_grad_(True)
            n(x).sum().backward()
            g.append(x.grad)
        assert torch.equal(g[0], g[1])
    # x = 1/4 threshold, T = 6: v = 1/4, 1/2, −1/4 (clipped at 0), 0, 1/4, 1/2; spikes 0 1 0 0 0 1.
    # Detached, each unclipped step passes 1/6: dy/dx = 5/6; kept, the clipped step's x reaches the
    # next step's membrane too: 6/6
    for detach, want in ((True, 5 / 6), (False, 1.0)):
        n = _fixed_neuron(2, BitSpec(6, 6, 6, False))
        n.detach_history = detach
        x = torch.tensor([0.25], requires_grad=True)
        y = n(x)
        y.backward()
        assert float(y.detach()) == pytest.approx(2 / 6) and float(x.grad) == pytest.approx(want)


def test_bit_changes_are_counted_by_cause_and_renewal_gate():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(500, generator=gen)
    wq = WeightQuantizer(BitSpec(4, 1, 6)).double()
    wq.train()
    wq(w)
    wq.renewal = False
    with torch.no_grad():
        wq.bits.value.fill_(2.6)  # as an optimizer step would: learning
    wq(w)
    wq.bits.set(5)  # as the projection does
    wq(w)
    wq(w)  # no change
    wq.renewal = True
    before = float(wq.step.detach())
    wq.bits.set(3)
    wq(w)
    assert float(wq.step.detach()) != before
    counts = renewal_counts(wq)
    assert counts["weights"] == {"changes_learning": 1, "changes_projection": 2, "renewals_learning": 0,
                                 "renewals_projection": 1}
    assert renewal_counts(wq)["weights"]["changes_projection"] == 0  # reset
