"""`bitspike demo --quick`: every stage runs, the hardware is bit-exact, and the allocation is a real one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_quick_demo_is_bit_exact_with_an_allocation_that_differs_per_layer(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "bitspike.cli", "demo", "--quick", "--board", "none", "--out", str(out),
                           "--infer-samples", "4", "-q"], capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "demo.json").read_text())
    sim = summary["stages"]["sim"]["summary"]
    assert sim["bit_exact"] == sim["samples"] > 0
    layers = summary["stages"]["export"]["summary"]["layers"]
    assert len(layers) == 3
    # the target's 1.5 timesteps lie strictly between two integers: the projection makes the layers' T differ
    assert len({l["timesteps"] for l in layers}) > 1
    assert (out / "figures" / "bits_per_layer.png").stat().st_size > 5000
