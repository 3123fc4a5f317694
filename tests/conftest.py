"""Fixtures shared by the test files.

Networks and the stand-in accelerator come from :mod:`bitspike.testing`; this
file adds what is about the test run itself: where the hardware tests keep the
generated RTL and the simulator builds, and the two ways they set up a design.

- ``hw_cache``: the shared cache folder (``build/test-cache``). Its entries are
  keyed by content hashes and published atomically, so it is kept between runs
  and shared by parallel workers.
- ``cosim_of(manifest, simulator="verilator", fold=..., max_luts=...)``: a
  :class:`~bitspike.sim.cosim.CoSim` of the manifest's generated RTL, with debug
  taps, from the shared cache.
- ``check_cosim(manifest, seed, samples=4, fold=...)``: the whole-network check
  the op tests share: co-simulated under random stalls, bit-exact at every tap,
  and to the cycle the planner predicts.
- ``network_bench(simulator, manifest, report, images, build_dir, **kw)``: the
  cocotb network bench (:func:`~bitspike.sim.cocotb_tests.network_check.run_network_bench`)
  with its simulator build kept in the shared cache (``cocotb/``), so a design
  benched twice (stalled, then timed), or again in a later run, is built once.
- ``standin_design(folder, label, ...)``: the stand-in accelerator written into
  ``folder`` as ``bitspike gen`` would, for build and board tests.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def hw_cache() -> Path:
    """``build/test-cache``: generated RTL under ``rtl/``, Verilator builds under ``verilator/``, cocotb
    simulator builds under ``cocotb/``."""
    return ROOT / "build" / "test-cache"


@pytest.fixture(scope="session")
def cosim_of(hw_cache):
    """``cosim_of(manifest, simulator="verilator", **options)``: the manifest's RTL (debug taps; ``options`` of
    :func:`~bitspike.sim.cosim.rtl_for_manifest` such as ``fold``) under a ready simulator."""
    from bitspike.sim.cosim import CoSim, rtl_for_manifest

    def make(manifest, simulator: str = "verilator", **options) -> CoSim:
        rtl = rtl_for_manifest(manifest, debug_taps=True, cache_dir=hw_cache / "rtl", **options)
        sim = CoSim(rtl, simulator, cache_dir=hw_cache / "verilator")
        if simulator == "verilator":
            sim.build()  # cached by content: only the first test of a design pays for it
        return sim

    return make


@pytest.fixture(scope="session")
def network_bench(hw_cache):
    """``network_bench(simulator, manifest, report, images, build_dir, **kw)``: the cocotb network bench, its
    simulator build from (or into) the shared cache; the bench itself, its stalls and its checks run every time."""
    from bitspike.sim.cocotb_tests.network_check import run_network_bench

    # -O0: the model's C++ builds in half the time and the bench, driven from Python, runs about as fast
    return functools.partial(run_network_bench, cache_dir=hw_cache / "cocotb", cxx_opt="-O0")


@pytest.fixture(scope="session")
def check_cosim(cosim_of):
    """``check_cosim(manifest, seed, samples=4, **options)``: a whole network's generated hardware is the golden model.

    ``samples`` random images (the first all 255) run back to back through the Verilator build under random
    stalls on both streams (``seed`` draws the images and the stalls): the logits and every debug tap equal
    the golden model's, value for value. Then two of them run each alone from reset and take exactly the
    planner's ``cycles_per_inference``. ``options`` go to the generator (``fold``, ``max_luts``).
    """
    from bitspike.host.golden import GoldenModel
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    def check(manifest, seed: int, samples: int = 4, **options) -> None:
        sim = cosim_of(manifest, **options)
        x = np.random.default_rng(seed).integers(0, 256, size=(samples, *manifest.input.shape))
        x[0] = 255
        golden = GoldenModel(manifest).run(x)
        res = sim.run(x, trace=True, processes=1, stall_in=0.2, stall_out=0.3, seed=seed)
        np.testing.assert_array_equal(res.logits, golden.logits.numpy())
        ref = ManifestGoldenTaps(manifest, sim.design.taps)
        assert compare_all(res, ref.sequences(x), sim.design.taps, ref) == (samples, None)
        for i in range(2):  # each inference alone, from reset: what the planner predicts, to the cycle
            assert int(sim.run(x[i:i + 1], processes=1).cycles[0]) == sim.design.cycles_per_inference

    return check


@pytest.fixture(scope="session")
def standin_design():
    """``standin_design(folder, label, input_size=16, num_classes=4)``: the stand-in's Verilog and report.json.

    ``label`` seeds the ``manifest_digest`` the report carries (what a bitstream's hello frame returns), so
    each test file's designs have a digest of their own.
    """
    from bitspike.testing import standin_verilog

    def make(folder: Path, label: str, input_size: int = 16, num_classes: int = 4) -> Path:
        report = standin_verilog(folder, input_size=input_size, num_classes=num_classes)
        report["manifest_digest"] = hashlib.sha256(label.encode()).hexdigest()
        (folder / "report.json").write_text(json.dumps(report))
        return folder

    return make
