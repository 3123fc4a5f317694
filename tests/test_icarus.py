"""The Icarus path (bitspike.sim.icarus): a second simulator agrees with Verilator cycle for cycle."""

from __future__ import annotations

import numpy as np
import pytest

from bitspike.errors import HardwareError
from bitspike.testing import standin_cosim, standin_reference
from bitspike.sim.icarus import _parse, make_testbench


@pytest.fixture(scope="module")
def pair(hw_cache):
    return standin_cosim(hw_cache), standin_cosim(hw_cache, simulator="icarus")


@pytest.mark.parametrize("options", [
    dict(),
    dict(stall_in=0.3, stall_out=0.4, seed=5),
    dict(sequential=True, stall_out=0.2, seed=9),
])
def test_icarus_matches_verilator_cycle_for_cycle(pair, options):
    veri, ica = pair
    x = np.random.default_rng(3).integers(0, 256, size=(24, 16)).astype(np.uint8)
    a = veri.run(x, trace=True, processes=1, **options)
    b = ica.run(x, trace=True, processes=1, **options)
    assert b.simulator == "icarus"
    np.testing.assert_array_equal(b.logits, standin_reference(x, 4))
    np.testing.assert_array_equal(a.logits, b.logits)
    np.testing.assert_array_equal(a.classes, b.classes)
    # same protocol, same stall generator: every handshake on the same cycle
    np.testing.assert_array_equal(a.start, b.start)
    np.testing.assert_array_equal(a.end, b.end)
    assert a.total_cycles == b.total_cycles
    for port in a.taps:
        np.testing.assert_array_equal(a.taps[port][0], b.taps[port][0])
        np.testing.assert_array_equal(a.taps[port][1], b.taps[port][1])


def test_icarus_shards_and_hangs(pair):
    _, ica = pair
    x = np.random.default_rng(4).integers(0, 256, size=(40, 16)).astype(np.uint8)
    res = ica.run(x, processes=2)
    assert res.shard_starts == (0, 20)
    np.testing.assert_array_equal(res.logits, standin_reference(x, 4))
    with pytest.raises(HardwareError, match="hung under Icarus"):
        ica.run(x[:1], processes=1, stall_out=1.0, max_idle=100)
    with pytest.raises(HardwareError, match="VCD"):
        ica.run(x[:1], processes=1, vcd="x.vcd")


def test_testbench_text_and_undefined_values(pair):
    veri, _ = pair
    tb = make_testbench(veri.design, 1024)
    assert "bitspike_top dut" in tb and "dbg0_acc__payload" in tb and "$readmemh" in tb
    with pytest.raises(HardwareError, match="undefined"):
        _parse("R 0 0 xxxx\n", 1, 5, 0.0)


def test_generated_mlp_under_icarus_agrees_with_verilator_and_golden(cosim_of):
    from bitspike.host.golden import GoldenModel
    from bitspike.testing import random_mlp
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    m = random_mlp(3, sizes=(64, 24, 16, 10))
    veri, ica = cosim_of(m), cosim_of(m, "icarus")
    x = np.random.default_rng(10).integers(0, 256, size=(12, 64)).astype(np.uint8)
    g = GoldenModel(m).run(x)
    a = veri.run(x, trace=True, processes=1, stall_in=0.1, stall_out=0.2, seed=4)
    b = ica.run(x, trace=True, processes=1, stall_in=0.1, stall_out=0.2, seed=4)
    np.testing.assert_array_equal(b.logits, g.logits.numpy())
    np.testing.assert_array_equal(b.classes, g.classes.numpy())
    np.testing.assert_array_equal(a.end, b.end)
    ref = ManifestGoldenTaps(m, ica.design.taps)
    assert compare_all(b, ref.sequences(x), ica.design.taps, ref) == (12, None)
