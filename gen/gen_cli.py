"""``bitspike gen``: manifest → Verilog (one file per engine and a top) + report.json / report.md."""

from __future__ import annotations

import argparse
import logging

from bitspike.cli import add_common
from bitspike.io import write_json

log = logging.getLogger(__name__)

SYNTH_TARGETS = ("ecp5", "ice40", "xilinx")


def register(subparsers) -> None:
    p = subparsers.add_parser("gen", help="generate the Verilog accelerator for a manifest",
                              description="Generate a layer-pipelined Verilog accelerator (docs/HARDWARE_INTERFACE.md).")
    p.add_argument("manifest", help="the network manifest (.bsm)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder for the Verilog and report")
    p.add_argument("--fold", default="auto", metavar="SPEC",
                   help="'auto' (balance the pipeline within --max-luts) or per-layer folds NAME=PESxLANES,...")
    p.add_argument("--max-luts", type=int, default=None, metavar="N", help="LUT budget for --fold auto")
    p.add_argument("--board", default=None, metavar="NAME",
                   help="take the --fold auto LUT budget from this board's part (`bitspike boards`), unless --max-luts")
    p.add_argument("--fuse", choices=("auto", "off", "on"), default=None,
                   help="fused requantize-and-fire: thresholds where exact and cheaper (auto, the default), nowhere "
                        "(off), or at every synaptic boundary (on; an error names a layer where it is not exact)")
    p.add_argument("--debug-taps", action="store_true", help="add observation ports dbgJ_KIND (co-simulation)")
    p.add_argument("--synth", choices=SYNTH_TARGETS, default=None, help="run Yosys and add LUT/FF/BRAM/DSP per engine")
    p.add_argument("--lint", action="store_true", help="also run verilator --lint-only -Wall on the output")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from . import generate

    max_luts = args.max_luts
    if args.board is not None and max_luts is None:
        from .boards import get_board, lut_budget

        max_luts = lut_budget(get_board(args.board))
    report = generate(args.manifest, args.out, fold=args.fold, max_luts=max_luts,
                      debug_taps=args.debug_taps, synth=args.synth, fuse=args.fuse)
    if args.lint:
        from .lint import lint_verilog

        lint_verilog(report.verilog_paths)
    d = report.to_json()
    summary = {k: d[k] for k in ("cycles_per_inference", "initiation_interval", "weight_memory_bits",
                                 "weight_memory_bits_bound", "verilog_files")}
    summary["out_dir"] = str(args.out)
    if "synthesis" in d:
        summary["synthesis_total"] = d["synthesis"]["total"]
    if "fusion" in d:
        summary["fused"] = [f"{b['producer']}->{b['consumer']}" for b in d["fusion"] if b["fused"]]
    if not args.quiet:
        for lp in d["layers"]:
            log.info("%-12s %-8s B_w=%-2s B_s=%-2s T=%-2s %3d PEs x %2d lanes  %6d mem bits  %5d cycles", lp["name"],
                     lp["op"], lp["w_bits"] or "-", lp["s_bits"] or "-", lp["timesteps"] or "-", lp["pes"], lp["lanes"],
                     lp["memory_bits"], lp["cycles"])
    print(f"bitspike gen: {len(d['verilog_files'])} Verilog files in {args.out}; "
          f"{d['cycles_per_inference']} cycles per inference, interval {d['initiation_interval']}, "
          f"weight memory {d['weight_memory_bits']} bits (bound {d['weight_memory_bits_bound']})")
    write_json(args.json, summary)
    return 0
