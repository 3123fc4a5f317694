"""Fuzzing the contract: random legal manifests through the golden model and an independent reference.

Every draw of :func:`strategies.manifests` (every op; bits, timesteps and
thresholds from 1 to the limits; odd shapes, kernels, strides, padding;
residual adds; multipliers, biases, clamp bounds and shifts at the limits) runs
through :class:`bitspike.host.golden.GoldenModel` with its range checks on,
and through :mod:`int_reference` (plain Python integers written from
docs/SEMANTICS.md). Every register of every layer — input current, membrane at
every timestep, spike at every timestep, accumulator, output current — and the
logits and classes must be equal, integer for integer.

The default run is derandomized (the same examples on every machine, every
time); the large run is ``@pytest.mark.slow``. Run with ``-s`` to see the counts.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from int_reference import argmax_lowest, run_reference
from strategies import inputs_for, manifests

from bitspike.analysis import analyse, needs_wide_product
from bitspike.host.golden import GoldenModel

COUNTS = {"manifests": 0, "inputs": 0, "integers": 0, "wide_layers": 0}


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print(f"\nfuzz: {COUNTS['manifests']} manifests, {COUNTS['inputs']} inputs, {COUNTS['integers']} integers compared, "
          f"{COUNTS['wide_layers']} layers on the wide-product path")


def _same(got: np.ndarray, want, what: str) -> int:
    """Assert equality of a golden register (numpy int64) and the reference (nested Python ints); count the integers."""
    assert got.tolist() == want, f"{what}: golden {got.tolist()} != reference {want}"
    return int(got.size)


def check_against_reference(m, x: np.ndarray) -> None:
    res = GoldenModel(m).run(x, trace=True)
    ranges = analyse(m)
    COUNTS["manifests"] += 1
    COUNTS["wide_layers"] += sum(needs_wide_product(layer, ranges[layer.name]) for layer in m.layers)
    for i in range(len(x)):
        ref = run_reference(m, x[i])
        n = 0
        for layer in m.layers:
            lt, rr = res.trace[layer.name], ref[layer.name]
            where = f"sample {i}, layer '{layer.name}' ({layer.op})"
            n += _same(lt.x[i].numpy(), rr["x"], where + " x")
            n += _same(lt.out[i].numpy(), rr["out"], where + " out")
            if layer.is_synaptic:
                # golden: (T, N, *shape); reference: per element (C-major nesting), the list over time
                n += _same(np.moveaxis(lt.s[:, i].numpy(), 0, -1), rr["s"], where + " s")
                n += _same(np.moveaxis(lt.v[:, i].numpy(), 0, -1), rr["v"], where + " v")
                n += _same(lt.acc[i].numpy(), rr["acc"], where + " acc")
        logits = ref[m.layers[-1].name]["out"]
        n += _same(res.logits[i].numpy(), logits, f"sample {i} logits")
        assert int(res.classes[i]) == argmax_lowest(logits), f"sample {i}: class"
        COUNTS["inputs"] += 1
        COUNTS["integers"] += n + 1


FUZZ = dict(derandomize=True, database=None, deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


@settings(max_examples=120, **FUZZ)
@given(m=manifests(), data=st.data())
def test_golden_equals_plain_integer_reference(m, data):
    check_against_reference(m, inputs_for(m, data.draw, 3))


@pytest.mark.slow
@settings(max_examples=1500, **FUZZ)
@given(m=manifests(max_blocks=4), data=st.data())
def test_golden_equals_plain_integer_reference_large(m, data):
    check_against_reference(m, inputs_for(m, data.draw, 5))


VERILATOR_COUNTS = {"manifests": 0, "inputs": 0, "integers": 0}


@pytest.mark.slow
@settings(max_examples=12, **FUZZ)
@given(m=manifests(max_blocks=2, generator=True), data=st.data())
def test_fuzzed_manifests_are_bit_exact_in_verilator(m, data):
    """A smaller set through ``gen`` and Verilator: logits and classes equal the golden model's."""
    from pathlib import Path

    from bitspike.sim.cosim import CoSim, rtl_for_manifest

    cache = Path(__file__).resolve().parent.parent / "build" / "test-cache"
    x = inputs_for(m, data.draw, 16)
    sim = CoSim(rtl_for_manifest(m, debug_taps=False, cache_dir=cache / "rtl"), cache_dir=cache / "verilator")
    sim.build()
    res = sim.run(x, processes=1)
    g = GoldenModel(m).run(x)
    np.testing.assert_array_equal(res.logits, g.logits.numpy())
    np.testing.assert_array_equal(res.classes, g.classes.numpy())
    VERILATOR_COUNTS["manifests"] += 1
    VERILATOR_COUNTS["inputs"] += len(x)
    VERILATOR_COUNTS["integers"] += int(res.logits.size + res.classes.size)
    print(f"\nverilator fuzz so far: {VERILATOR_COUNTS}")
