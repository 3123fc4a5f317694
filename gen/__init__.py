"""The network compiler: manifest → plan → Amaranth top → Verilog and reports.

Public API
----------
:func:`generate`
    Write the Verilog (one file per engine and a top) and ``report.json`` /
    ``report.md`` for a manifest; returns the :class:`~bitspike.gen.report.Report`.
:func:`bitspike.gen.report.read_report`
    The typed view of a generated folder's ``report.json``.
:mod:`bitspike.gen.interface`
    ``input_order(manifest)`` and ``golden_tap_sequence(...)`` for drivers and co-simulation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

__all__ = ["generate"]


def generate(manifest, out_dir: str | os.PathLike, *, fold: str | Mapping[str, Any] = "auto",
             max_luts: int | None = None, debug_taps: bool = False, synth: str | None = None,
             dsp_blocks: int | None = None, device=None, target_interval: int | None = None,
             fuse: str | None = None, zero_skip: str | None = None, fast_paths: bool = False,
             multi_tap: bool = False, family: str | None = None):
    """Generate the accelerator for ``manifest`` into ``out_dir``.

    Parameters
    ----------
    manifest
        A :class:`bitspike.manifest.Manifest` or a path to a manifest file.
    out_dir
        Folder for the Verilog files, ``report.json`` and ``report.md`` (created).
    fold
        ``"auto"`` or per-layer folds (``"fc0=8x2,fc1=2x1"`` or ``{"fc0": (8, 2)}``).
    max_luts
        LUT budget for ``fold="auto"``.
    debug_taps
        Add the observation ports ``dbgJ_KIND`` (listed in the report's ``taps``).
    synth
        ``"ecp5"``, ``"ice40"`` or ``"xilinx"``: run Yosys and add LUT/FF/BRAM/DSP per engine to the report.
    dsp_blocks
        The target device's DSP blocks (:mod:`bitspike.gen.dsp` shares them out per product);
        ``None``: every product that is not narrow is a DSP multiply.
    device
        A :class:`~bitspike.gen.boards.DeviceBudget` (:func:`~bitspike.gen.boards.device_budget`):
        ``fold="auto"`` fills its LUTs, flip-flops and block RAMs for the best interval, and the report
        gets the plan's resource estimate (``estimated_resources``).
    target_interval
        With ``fold="auto"``: stop at the first fold whose interval is at most this many cycles (the
        fewest LUTs that reach it; ``--target-fps``).
    fuse
        Fused requantize-and-fire (:mod:`bitspike.gen.fuse`): ``"auto"`` (where exact and cheaper),
        ``"off"`` or ``"on"`` (everywhere exact, else an error); ``None``: the default
        (:data:`bitspike.gen.fuse.DEFAULT_FUSE`).
    zero_skip
        Zero-word skipping in squeezed linear engines (:mod:`bitspike.gen.zeroskip`): ``"auto"``, ``"off"``
        or ``"on"``; ``None``: the default (:data:`bitspike.gen.zeroskip.DEFAULT_ZERO_SKIP`, off).
    fast_paths
        Shorter register-to-register paths in every dense synaptic engine, at the same cycles and sums
        (``--fast-paths``: the PE arrays clear their accumulators after a group's last word, the drains
        keep their queue state in registered flags). Off: the Verilog is as without the option.
    multi_tap
        ``fold="auto"`` may give conv engines several kernel taps per clock (``--multi-tap``,
        :mod:`bitspike.rtl_templates.multitap`); a manual fold names them as ``PESxLANEStTAPS``.
    family
        The FPGA family the design is for (``device``'s when not given; ``bitspike build`` gives the board's):
        on iCE40, which has no LUT RAM, the streaming pools' row memories go to block RAM.

    Returns
    -------
    Report
        The report (``.to_json()`` gives the ``report.json`` document).
    """
    from bitspike.manifest import Manifest, load

    from .emit import emit_verilog
    from .fuse import DEFAULT_FUSE
    from .zeroskip import DEFAULT_ZERO_SKIP
    from .plan import make_plan
    from .report import build_report

    if not isinstance(manifest, Manifest):
        manifest = load(manifest)
    out_dir = Path(out_dir)
    plan = make_plan(manifest, fold=fold, max_luts=max_luts, dsp_blocks=dsp_blocks, device=device,
                     target_interval=target_interval, fuse=DEFAULT_FUSE if fuse is None else fuse,
                     zero_skip=DEFAULT_ZERO_SKIP if zero_skip is None else zero_skip,
                     fast_paths=fast_paths, multi_tap=multi_tap, family=family)
    top, files = emit_verilog(plan, out_dir, debug_taps=debug_taps)
    report = build_report(plan, files, top.taps, debug_taps)
    if device is not None:
        from .folding import estimate_resources

        report.data["device_budget"] = device.to_json()
        report.data["estimated_resources"] = estimate_resources(plan, device.family)
    report.out_dir = out_dir
    if synth is not None:
        from .synth import synthesize

        report.data["synthesis"] = synthesize(report.verilog_paths, synth, out_dir, [lp.engine for lp in plan.layers])
    report.write(out_dir)
    return report
