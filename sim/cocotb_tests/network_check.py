"""Run a generated network under cocotb and compare it with the golden model (used by tests and bench)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from bitspike.manifest import Manifest

__all__ = ["network_bench_config", "run_network_bench"]


def network_bench_config(manifest: Manifest, report: dict[str, Any], images: np.ndarray, *,
                         timing: bool = False, p_valid: float = 0.8, p_ready: float = 0.8, seed: int = 1) -> dict[str, Any]:
    """The bench configuration: stream-ordered pixels, golden logits/classes and expected tap sequences."""
    from bitspike.gen.interface import golden_tap_sequence, input_order
    from bitspike.host.golden import GoldenModel

    images = np.asarray(images, dtype=np.int64)
    golden = GoldenModel(manifest).run(images, trace=bool(report["taps"]))
    order = input_order(manifest)
    samples = [[int(v) for v in img.reshape(-1)[order]] for img in images]
    taps: dict[str, list[int]] = {}
    widths: dict[str, list] = {}
    for tap in report["taps"]:
        seq: list[int] = []
        for n in range(len(images)):
            seq += golden_tap_sequence(manifest, golden.trace, n, tap)
        taps[tap["port"]] = seq
        widths[tap["port"]] = [tap["width"], tap["signed"]]
    return {
        "samples": samples, "logits": golden.logits.tolist(), "classes": golden.classes.tolist(),
        "num_classes": report["num_classes"], "result_width": report["result_width"],
        "logit_signed": report["logit_signed"], "taps": taps, "tap_widths": widths,
        "timing": timing, "p_valid": p_valid, "p_ready": p_ready, "seed": seed,
    }


def run_network_bench(simulator: str, manifest: Manifest, report, images: np.ndarray, build_dir, *,
                      cache_dir=None, cxx_opt: str | None = None, **kw) -> dict[str, Any]:
    """Build the generated Verilog and run the network bench; returns the measured timing (if ``timing``).

    ``cache_dir``: where the simulator build is kept and found again (:func:`~bitspike.sim.cocotb_util.run_cocotb`),
    so a second bench of the same design (say, a timing run after the stalled one) does not build it again;
    ``cxx_opt``: the Verilated model's C++ optimisation (``-O0`` builds in half the time)."""
    from bitspike.sim.cocotb_util import run_cocotb

    data = report.to_json() if hasattr(report, "to_json") else report
    cfg = network_bench_config(manifest, data, images, **kw)
    build_dir = Path(build_dir)
    measured = (build_dir / simulator / "measured.json").resolve()
    measured.parent.mkdir(parents=True, exist_ok=True)
    os.environ["BITSPIKE_TB_MEASURED"] = str(measured)
    run_cocotb(simulator, report.verilog_paths, "bitspike_top", "bitspike.sim.cocotb_tests.network_tb", build_dir, cfg,
               cache_dir=cache_dir, cxx_opt=cxx_opt)
    return json.loads(measured.read_text()) if measured.exists() else {}
