"""First-divergence diagnosis (bitspike.sim.diagnose) on the stand-in with a planted fault."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bitspike.sim._standin import StandinGoldenTaps, standin_cosim
from bitspike.sim.diagnose import compare_all, diagnose

CACHE = Path(__file__).resolve().parent.parent / "build" / "test-cache"


@pytest.fixture(scope="module")
def faulty():
    # the stand-in adds one to logit 2 just before answering
    return standin_cosim(CACHE, fault=2)


def test_standin_fault_is_named_with_cycle_and_vcd(faulty, tmp_path):
    x = np.random.default_rng(5).integers(0, 256, size=(30, 16)).astype(np.uint8)
    ref = StandinGoldenTaps(4)
    res = faulty.run(x, trace=True, processes=1)
    exact, first = compare_all(res, ref.sequences(x), faulty.design.taps, ref)
    assert exact == 0
    assert (first.sample, first.layer, first.kind, first.neuron) == (0, "standin", "acc", (2,))
    assert first.got == first.expected + 1
    vcd = tmp_path / "div.vcd"
    d = diagnose(faulty, x, 7, ref, vcd=vcd, before=20, after=5)
    assert (d.sample, d.layer, d.layer_index, d.kind, d.neuron, d.timestep) == (7, "standin", 0, "acc", (2,), None)
    assert d.got == d.expected + 1 and d.rerun == "alone"
    # input pixels all arrived intact: the x tap agreed, so the accumulator is the first difference
    assert d.cycle is not None and d.cycle > 16
    text = vcd.read_text()
    assert "dbg0_acc__payload" in text.replace("___05F", "__") or "dbg0_acc" in text
    assert d.vcd_window == (d.cycle - 20, d.cycle + 5)
    # only the window is dumped: the last time stamp is at most 2 * (cycle + 5) + 1
    stamps = [int(line[1:]) for line in text.splitlines() if line.startswith("#")]
    assert min(stamps) >= 2 * (d.cycle - 20) and max(stamps) <= 2 * (d.cycle + 5) + 1
    assert "layer 0 'standin', accumulator of neuron 2" in d.describe()


def test_clean_design_has_no_divergence():
    clean = standin_cosim(CACHE)
    x = np.random.default_rng(6).integers(0, 256, size=(10, 16)).astype(np.uint8)
    ref = StandinGoldenTaps(4)
    assert diagnose(clean, x, 4, ref) is None
    res = clean.run(x, trace=True, processes=1)
    assert compare_all(res, ref.sequences(x), clean.design.taps, ref) == (10, None)
