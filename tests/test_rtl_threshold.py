"""Fused requantize-and-fire thresholds against the integer contract, by enumeration, and their hardware.

Every accumulator of the range, every channel: the threshold count equals
requantize (clamp((acc·M + B + rnd) >> SH)) then the next neuron's Σ_t s_t
(the golden model's neuron), for positive, negative and zero multipliers,
shifts 0 … 12 and neurons over B_s 1 … 4, T 1 … 4, k 0 … 3. The hardware
unit is checked against the same counts under random valid/ready stalls.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream_bench import run_drain_stalled, run_stalled

from bitspike.analysis import Range, analyse
from bitspike.host.golden import neuron_steps
from bitspike.manifest import InputSpec, rounding_term
from bitspike.testing import NetBuilder
from bitspike.rtl_templates.threshold import ThresholdUnit, fused_thresholds, fusion_saves_luts


def _contract(acc: np.ndarray, m: int, b: int, shift: int, lo: int, hi: int, k: int, s_bits: int, t: int):
    x = np.clip((acc.astype(object) * m + b + rounding_term(shift)) >> shift, lo, hi).astype(np.int64)
    _, s = neuron_steps(torch.from_numpy(x), k, s_bits, t)
    return s.sum(dim=0).numpy()


CASES = [  # (shift, lo, hi, k, s_bits, timesteps)
    (0, -8, 7, 0, 1, 1), (4, 0, 15, 1, 2, 1), (7, -32, 31, 2, 3, 2), (9, -16, 63, 3, 4, 4), (12, -100, 100, 0, 2, 3),
    (5, 0, 255, 3, 4, 2),
]


@pytest.mark.parametrize("shift,lo,hi,k,s_bits,t", CASES)
def test_thresholds_equal_the_contract_for_every_accumulator(shift, lo, hi, k, s_bits, t):
    rng = np.random.default_rng(shift * 31 + hi)
    acc_range = Range(-700, 900)
    mult = [int(v) for v in rng.integers(-300, 300, size=6)] + [0, 1, -1, 1 << shift]
    bias = [int(v) for v in rng.integers(-5000, 5000, size=len(mult))]
    fused = fused_thresholds(mult, bias, shift, lo, hi, acc_range, k, s_bits, t)
    assert fused is not None  # the multi-bit neuron's count is monotone in a constant current
    acc = np.arange(acc_range.lo, acc_range.hi + 1)
    for o, (m_o, b_o) in enumerate(zip(mult, bias)):
        want = _contract(acc, m_o, b_o, shift, lo, hi, k, s_bits, t)
        got = np.array([fused.count(o, int(a)) for a in acc])
        assert (got == want).all(), (o, m_o, b_o, int(acc[np.argmax(got != want)]))


def _fused_from_network(seed: int):
    rng = np.random.default_rng(seed)
    b = NetBuilder(rng, InputSpec(shape=(5,), bits=4, scale=1 / 15))
    b.synaptic("linear", 7, 3, 3, 1, 0, 1, 2, signed_out=True)
    b.synaptic("linear", 3, 2, 2, 2, 1, None, None)
    m = b.manifest(f"fuse-{seed}")
    first, nxt = m.layers[0], m.layers[1]
    rq = first.requant
    r = analyse(m)[first.name]
    fused = fused_thresholds(rq.multiplier, rq.bias, rq.shift, rq.lo, rq.hi, r.acc, nxt.k, nxt.s_bits, nxt.timesteps)
    return m, fused, r


def test_thresholds_of_a_network_layer_pair_over_its_analysed_range():
    m, fused, r = _fused_from_network(3)
    first, nxt = m.layers[0], m.layers[1]
    rq = first.requant
    acc = np.arange(r.acc.lo, r.acc.hi + 1)
    for o in range(first.weight.shape[0]):
        want = _contract(acc, int(rq.multiplier[o]), int(rq.bias[o]), rq.shift, rq.lo, rq.hi, nxt.k, nxt.s_bits,
                         nxt.timesteps)
        assert [fused.count(o, int(a)) for a in acc] == [int(v) for v in want]
    assert isinstance(fusion_saves_luts(fused, first.weight.shape[0], 8, requant_in_dsp=False), bool)
    assert fusion_saves_luts(None, 7, 8, requant_in_dsp=False) is False


def test_threshold_unit_under_stalls():
    m, fused, r = _fused_from_network(5)
    dut = ThresholdUnit(fused)
    C = dut.channels
    rng = np.random.default_rng(2)
    n = 5 * C
    accs = [int(v) for v in rng.integers(r.acc.lo, r.acc.hi + 1, size=n)]
    accs[:2] = [r.acc.lo, r.acc.hi]
    expected = [fused.count(i % C, a) for i, a in enumerate(accs)]
    p_valid, p_ready = rng.random(6 * n) < 0.6, rng.random(6 * n) < 0.6
    assert run_stalled(dut, accs, lambda ctx, a: ctx.set(dut.i.payload, a), p_valid, p_ready) == expected


@pytest.mark.parametrize("pes,out_c,seed", [(1, 1, 0), (3, 7, 1), (2, 5, 2)])
def test_drain_with_fused_thresholds_emits_the_counts_under_stalls(pes, out_c, seed):
    """The synaptic engine's drain with thresholds in place of its requantizer: counts, channels in order."""
    import random

    from amaranth import signed, unsigned

    from bitspike.rtl_templates.drain import Drain, drain_reference
    from bitspike.rtl_templates.threshold import threshold_reference

    rng = random.Random(seed)
    bias = [rng.randint(-300, 300) for _ in range(out_c)]
    mult = [rng.choice([-7, 0, 5, 300, rng.randint(-2000, 2000)]) for _ in range(out_c)]
    rq_bias = [rng.randint(-5000, 5000) for _ in range(out_c)]
    shift, lo, hi = rng.randint(0, 9), -rng.randint(0, 20), rng.randint(1, 40)
    fused = fused_thresholds(mult, rq_bias, shift, lo, hi, Range(-4096, 4095), 1, 2, 2)
    dut = Drain(pes=pes, bias=bias, psum_shape=signed(12), acc_shape=signed(13), out_shape=unsigned(3),  # 0 … T·q = 6
                fused=fused)
    groups_n = -(-out_c // pes)
    groups = [[rng.choice([-2048, 2047, rng.randint(-2048, 2047)]) for _ in range(pes)] for _ in range(4 * groups_n)]
    want = drain_reference(groups, bias, None, pes, fused=fused)
    # the fused counts are the contract's: requantize, then the next neuron
    flat = [(i % groups_n) * pes + p for i in range(len(groups)) for p in range(min(pes, out_c - (i % groups_n) * pes))]
    accs = [groups[i][p] + bias[(i % groups_n) * pes + p] for i in range(len(groups))
            for p in range(min(pes, out_c - (i % groups_n) * pes))]
    assert want == [threshold_reference(a, mult[o], rq_bias[o], shift, lo, hi, 1, 2, 2) for a, o in zip(accs, flat)]
    assert run_drain_stalled(dut, groups, groups_n, rng, len(want)) == want
