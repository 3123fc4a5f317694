"""Fixtures shared by the test files.

Networks and the stand-in accelerator come from :mod:`bitspike.testing`; this
file adds what is about the test run itself: where the hardware tests keep the
generated RTL and the simulator builds, and the two ways they set up a design.

- ``hw_cache``: the shared cache folder (``build/test-cache``). Its entries are
  keyed by content hashes and published atomically, so it is kept between runs
  and shared by parallel workers.
- ``cosim_of(manifest, simulator="verilator")``: a :class:`~bitspike.sim.cosim.CoSim`
  of the manifest's generated RTL, with debug taps, from the shared cache.
- ``standin_design(folder, label, ...)``: the stand-in accelerator written into
  ``folder`` as ``bitspike gen`` would, for build and board tests.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def hw_cache() -> Path:
    """``build/test-cache``: generated RTL under ``rtl/``, Verilator builds under ``verilator/``."""
    return ROOT / "build" / "test-cache"


@pytest.fixture(scope="session")
def cosim_of(hw_cache):
    """``cosim_of(manifest, simulator="verilator")``: the manifest's RTL (debug taps) under a ready simulator."""
    from bitspike.sim.cosim import CoSim, rtl_for_manifest

    def make(manifest, simulator: str = "verilator") -> CoSim:
        rtl = rtl_for_manifest(manifest, debug_taps=True, cache_dir=hw_cache / "rtl")
        sim = CoSim(rtl, simulator, cache_dir=hw_cache / "verilator")
        if simulator == "verilator":
            sim.build()  # cached by content: only the first test of a design pays for it
        return sim

    return make


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
