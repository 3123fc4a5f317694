"""The engines' neuron stage against its reference model and the golden neuron (amaranth.sim).

:class:`NeuronStage` is the one neuron the generated designs use (every
synaptic engine starts with one). Its plain model :func:`neuron_reference`
is checked against the golden model's ``neuron_steps`` for every current of
≥ 20 parameter combinations (B_s 1…8, T 1…8, k 0…12, negative and
saturating currents); the block against the model under random stalls. The
same block runs under Verilator in ``test_rtl_blocks.py`` and inside every
engine of the co-simulation tests.
"""

from __future__ import annotations

import random

import pytest
import torch
from amaranth import signed
from amaranth.sim import Simulator

from bitspike.analysis import Range
from bitspike.host.golden import neuron_steps
from bitspike.rtl_templates.neuron import NeuronStage, neuron_reference

from stream_bench import run_stalled


def _sim(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def _neuron_combos(n: int = 22, seed: int = 7):
    rng = random.Random(seed)
    combos = [(1, 1, 0), (1, 8, 12), (8, 1, 0), (8, 8, 12), (2, 2, 1), (4, 3, 6), (3, 5, 0), (1, 4, 1)]
    while len(combos) < n:
        combos.append((rng.randint(1, 8), rng.randint(1, 8), rng.randint(0, 12)))
    return combos


def _currents(cw: int, k: int, exhaustive: bool, seed: int) -> list[int]:
    """Every ``cw``-bit current, or (for wide ones) the ends, both sides of every multiple of 2^(k-1)
    (where rounding and firing change) and random ones."""
    lo, hi = -(1 << (cw - 1)), (1 << (cw - 1)) - 1
    if exhaustive or cw <= 12:
        return list(range(lo, hi + 1))
    step = 1 << max(0, k - 1)
    xs = {lo, hi, 0, -1, 1}
    for m in range(lo // step, hi // step + 1):
        if len(xs) > 6000:
            break
        xs.update(v for v in (m * step - 1, m * step, m * step + 1) if lo <= v <= hi)
    rng = random.Random(seed)
    xs.update(rng.randint(lo, hi) for _ in range(2000))
    return sorted(xs)


@pytest.mark.parametrize("exhaustive", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_neuron_reference_is_the_golden_neuron(exhaustive):
    for s_bits, t, k in _neuron_combos():
        cw = s_bits + k + 2
        xs = _currents(cw, k, exhaustive, seed=s_bits * 100 + t * 10 + k)
        _, s = neuron_steps(torch.tensor(xs), k, s_bits, t)
        for i, x in enumerate(xs):
            spikes, count = neuron_reference(x, k, s_bits, t)
            assert spikes == s[:, i].tolist() and count == sum(spikes), (s_bits, t, k, x)


@pytest.mark.parametrize("combo", _neuron_combos()[:10], ids=lambda c: f"s{c[0]}t{c[1]}k{c[2]}")
def test_neuron_stage_counts_and_spikes_under_stalls(combo):
    s_bits, t, k = combo
    cw = s_bits + k + 2  # wide enough to saturate and to go negative
    lo, hi = -(1 << (cw - 1)), (1 << (cw - 1)) - 1
    dut = NeuronStage(Range(lo, hi), s_bits, t, k)
    rng = random.Random(hash(combo) & 0xFFFF)
    xs = [lo, hi, 0, -1, 1] + [rng.randint(lo, hi) for _ in range(40)]
    spikes_seen = []

    def put(ctx, x):
        ctx.set(dut.i.payload, x)
        spikes_seen.append((x, [ctx.get(dut.spikes[j]) for j in range(t)]))

    p_valid = [rng.random() < 0.7 for _ in range(200)]
    p_ready = [rng.random() < 0.6 for _ in range(200)]
    got = run_stalled(dut, xs, put, p_valid, p_ready)
    assert got == [neuron_reference(x, k, s_bits, t)[1] for x in xs]
    # the combinational spikes (the debug tap) of every offered current
    assert spikes_seen and all(s == neuron_reference(x, k, s_bits, t)[0] for x, s in spikes_seen)


def test_neuron_stage_spikes_tap_every_value():
    dut = NeuronStage(Range(-40, 40), 3, 4, 2)
    checked = []

    async def bench(ctx):
        for x in range(-40, 41):
            ctx.set(dut.i.payload, x)
            await ctx.delay(1e-7)
            checked.append(([ctx.get(dut.spikes[j]) for j in range(4)], neuron_reference(x, 2, 3, 4)[0]))
            await ctx.tick()

    _sim(dut, bench)
    assert len(checked) == 81 and all(a == b for a, b in checked)


def test_neuron_stage_rejects_bad_parameters():
    with pytest.raises(ValueError, match="s_bits"):
        NeuronStage(Range(-4, 3), 0, 1, 0)
    with pytest.raises(ValueError, match="timesteps"):
        NeuronStage(Range(-4, 3), 2, 65, 0)
    with pytest.raises(TypeError, match="Range"):
        NeuronStage(signed(4), 2, 1, 0)
