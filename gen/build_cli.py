"""``bitspike build MODEL --board NAME -o DIR``: a bitstream with the UART bridge, and its report."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    from bitspike.cli import add_common

    from .boards import board_names

    p = subparsers.add_parser(
        "build", help="build a bitstream (accelerator + UART bridge) and report utilization, Fmax and speed",
        description="Generate the accelerator for a manifest, wrap it with the UART bridge (docs/PROTOCOL.md) and run "
                    "yosys + nextpnr + icepack/ecppack. Writes the bitstream, report.json and report.md into DIR.",
    )
    p.add_argument("model", help="the network manifest (.bsm)")
    p.add_argument("--board", required=True, metavar="NAME", help=f"target board: {', '.join(board_names())}")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--baud", type=int, default=115200, help="serial rate of the bridge (default 115200)")
    p.add_argument("--fold", default="auto", metavar="SPEC", help="folding for the generator ('auto' or NAME=PESxLANES,...)")
    p.add_argument("--max-luts", type=int, default=None, metavar="N", help="LUT budget for --fold auto")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds before the toolchain is stopped (default 3600)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bitspike.cli import write_json
    from bitspike.manifest import load

    from .build import build_bitstream

    manifest = load(args.model)
    report = build_bitstream(manifest, args.board, args.out, baud=args.baud, fold=args.fold, max_luts=args.max_luts,
                             seed=args.seed, timeout=args.timeout)
    write_json(args.json, report)
    util = ", ".join(f"{k} {v['used']}/{v['available']} ({v['percent']}%)" for k, v in report["utilization"].items())
    fmax = report["fmax_mhz"]
    print(f"{report['board']}: {util}")
    print(f"Fmax {fmax:.2f} MHz against {report['clock_mhz']:.2f} MHz ({'met' if report['timing_met'] else 'NOT MET'}); "
          f"{report['cycles_per_inference']} cycles per inference; {report['images_per_second']:.1f} images/s over UART "
          f"at {report['baud']} baud; bitstream {args.out}/{report['bitstream']}")
    if not args.quiet:
        print(f"built in {sum(report['build_seconds'].values()):.1f} s; report: {args.out}/report.md")
    return 0
