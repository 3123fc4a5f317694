"""Generated MLP accelerators against the golden model under cocotb (Verilator, Icarus).

Every sample's logits and class, and every debug tap's value sequence, must
equal the golden model's; measured latency and interval must be within 5% of
the plan's prediction.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bitspike.errors import HardwareError
from bitspike.gen import generate
from bitspike.gen.interface import golden_tap_sequence, input_order
from bitspike.host.golden import GoldenModel
from bitspike.testing import random_mlp


def _images(m, n, seed=0):
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 2**m.input.bits, size=(n, *m.input.shape))
    imgs[0] = 0  # an all-dark image: currents at their low end
    if n > 1:
        imgs[1] = 2**m.input.bits - 1  # saturating
    return imgs


def test_generate_is_deterministic_and_reports_required_keys(tmp_path):
    m = random_mlp(3, sizes=(20, 9, 4), timesteps=range(1, 9))
    a = generate(m, tmp_path / "a", fold="line0=3x2,line1=2x3", debug_taps=True)
    generate(m, tmp_path / "b", fold="line0=3x2,line1=2x3", debug_taps=True)
    for name in a["verilog_files"] + ["report.json", "report.md"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    d = json.loads((tmp_path / "a" / "report.json").read_text())
    for key in ("layers", "cycles_per_inference", "initiation_interval", "weight_memory_bits",
                "weight_memory_bits_bound", "top", "verilog_files", "taps", "result_width", "manifest_digest"):
        assert key in d, key
    assert d["verilog_files"][-1] == "bitspike_top.v" and len(d["verilog_files"]) == 3
    assert d["manifest_digest"] == m.digest()
    # dbg0_cnt where the first boundary is fused (bitspike.gen.fuse): its stream carries line1's counts
    assert [t["port"] for t in d["taps"]][:4] in (["dbg0_x", "dbg0_spk", "dbg0_acc", "dbg0_out"],
                                                 ["dbg0_x", "dbg0_spk", "dbg0_acc", "dbg0_cnt"])
    bound = sum(l.weight.size * l.w_bits for l in m.layers)
    assert d["weight_memory_bits_bound"] == bound
    assert bound <= d["weight_memory_bits"] <= 1.5 * bound  # padded folds (3 over 9 outputs is exact, 2 over 4 too)


def test_bad_fold_is_a_clear_error(tmp_path):
    m = random_mlp(3, sizes=(20, 9, 4))
    with pytest.raises(HardwareError, match="unknown layer"):
        generate(m, tmp_path, fold="fc9=2x2")
    with pytest.raises(HardwareError, match="pes 10 must be in 1 … 9"):
        generate(m, tmp_path, fold="line0=10x1")
    with pytest.raises(HardwareError, match="PESxLANES"):
        generate(m, tmp_path, fold="line0=abc")


def test_golden_tap_sequence_matches_trace():
    m = random_mlp(5, sizes=(6, 5, 3), timesteps=[3])
    imgs = _images(m, 2)
    g = GoldenModel(m).run(imgs, trace=True)
    spk = golden_tap_sequence(m, g.trace, 1, layer="line1", kind="spk")
    s = g.trace["line1"].s[:, 1]
    b = m.layers[1].s_bits
    assert spk == [sum(int(s[t, i]) << (t * b) for t in range(3)) for i in range(5)]
    assert list(input_order(m)) == list(range(6))


@pytest.mark.parametrize("seed,sizes,fold", [
    (11, (23, 13, 7), "line0=3x4,line1=7x2"),  # folds that do not divide: padded groups and words
    pytest.param(12, (16, 12, 9, 5), "auto", marks=pytest.mark.slow),
])
def test_mlp_bit_exact_with_taps_and_stalls_verilator(tmp_path, seed, sizes, fold, network_bench):
    m = random_mlp(seed, sizes=sizes, timesteps=range(1, 9))
    report = generate(m, tmp_path / "gen", fold=fold, debug_taps=True)
    network_bench("verilator", m, report, _images(m, 6, seed), tmp_path / "sim", p_valid=0.6, p_ready=0.5)


def test_mlp_bit_exact_icarus(tmp_path, network_bench):
    m = random_mlp(21, sizes=(12, 8, 4), w_bits=[1, 3], s_bits=[1, 5], timesteps=range(1, 9))
    report = generate(m, tmp_path / "gen", fold="line0=2x3,line1=4x2", debug_taps=True)
    network_bench("icarus", m, report, _images(m, 3, 21), tmp_path / "sim", p_valid=0.7, p_ready=0.6)


@pytest.mark.slow  # the digits shape is timed by every `bitspike sim` run of the demo and bench/hw.py; the default run times smaller nets
def test_digits_shape_cycles_within_5_percent(tmp_path, network_bench):
    m = random_mlp(1, sizes=(64, 128, 10), w_bits=[2], s_bits=[2], timesteps=[1])
    report = generate(m, tmp_path / "gen")
    assert report["cycles_per_inference"] <= 500
    measured = network_bench("verilator", m, report, _images(m, 4, 1), tmp_path / "sim", timing=True)
    assert abs(measured["latency"] - report["cycles_per_inference"]) <= 0.05 * report["cycles_per_inference"]
    assert abs(measured["interval"] - report["initiation_interval"]) <= 0.05 * report["initiation_interval"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(30, 38))
def test_mlp_sweep_verilator(tmp_path, seed, network_bench):
    rng = np.random.default_rng(seed)
    sizes = tuple(int(v) for v in rng.integers(3, 40, size=int(rng.integers(3, 5))))
    m = random_mlp(seed, sizes=sizes, timesteps=range(1, 9))
    folds = ",".join(f"{l.name}={int(rng.integers(1, l.weight.shape[0] + 1))}x{int(rng.integers(1, l.weight.shape[1] + 1))}"
                     for l in m.layers)
    report = generate(m, tmp_path / "gen", fold=folds, debug_taps=True)
    network_bench("verilator", m, report, _images(m, 8, seed), tmp_path / "sim", p_valid=0.7, p_ready=0.6)
    measured = network_bench("verilator", m, report, _images(m, 3, seed), tmp_path / "timing", timing=True)
    assert abs(measured["latency"] - report["cycles_per_inference"]) <= 0.05 * report["cycles_per_inference"]
