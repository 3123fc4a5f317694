"""``bitspike build MODEL --board NAME -o DIR``: a bitstream with the UART bridge, and its report.

Open-flow boards (iCE40, ECP5, Gowin) get a bitstream; with ``--archive`` (the only choice for
Xilinx, Intel, MachXO and QuickLogic boards) Amaranth's build plan is written as one .zip for the
vendor tool, with a Yosys resource estimate.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    from bitspike.cli import add_common

    p = subparsers.add_parser(
        "build", help="build a bitstream (accelerator + UART bridge) and report utilization, Fmax and speed",
        description="Generate the accelerator for a manifest, wrap it with the UART bridge (docs/PROTOCOL.md) and run "
                    "yosys + nextpnr + icepack/ecppack. Writes the bitstream, report.json and report.md into DIR.",
    )
    p.add_argument("model", help="the network manifest (.bsm)")
    p.add_argument("--board", required=True, metavar="NAME",
                   help="target board (`bitspike boards` lists them), e.g. icebreaker, ulx3s_85f, tang_nano_9k, arty_a7_35")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--baud", type=int, default=None,
                   help="serial rate of the bridge (default: the fastest the board's USB-serial converter and clock "
                        "allow, 3000000 on the iCEBreaker, else 1000000; `bitspike boards --json` lists it)")
    p.add_argument("--clock", default="auto", metavar="MHZ|auto",
                   help="the accelerator's clock on iCE40/ECP5 boards, from the PLL (the UART stays on the board's "
                        "oscillator): 'auto' (default) places and routes once at the oscillator and then runs the "
                        "accelerator at the highest PLL frequency not above the Fmax it reached; a number: the highest "
                        "PLL frequency not above it (lower, once, if place and route misses it)")
    p.add_argument("--fold", default="auto", metavar="SPEC",
                   help="folding for the generator: 'auto' (fill a share of the board's LUTs, FFs, DSPs and block "
                        "RAMs for the best interval; halved and built again on overflow) or NAME=PESxLANES,...")
    p.add_argument("--max-luts", type=int, default=None, metavar="N",
                   help="LUT budget for --fold auto instead of the board's part")
    p.add_argument("--dsp-blocks", type=int, default=None, metavar="N",
                   help="DSP blocks the products may use, at most the part's (default: all of them); the others are "
                        "built as pipelined logic, so fewer multipliers are spread over the die")
    p.add_argument("--fast-paths", action="store_true",
                   help="as `bitspike gen --fast-paths`: shorter paths from the PE arrays into and through the drains")
    p.add_argument("--multi-tap", action="store_true",
                   help="as `bitspike gen --multi-tap`: --fold auto may give conv engines a window row or the whole "
                        "window per clock (or name it: NAME=PESxLANEStTAPS)")
    p.add_argument("--fuse", choices=("auto", "off", "on"), default=None,
                   help="fused requantize-and-fire, as `bitspike gen --fuse` (default auto)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    p.add_argument("--router", choices=("auto", "router1", "router2"), default="auto",
                   help="nextpnr's router on iCE40 and ECP5: auto (default) or router1 is nextpnr's default "
                        "(the higher Fmax); router2 builds a large design faster at a lower Fmax")
    p.add_argument("--placer", choices=("auto", "heap", "static", "sa"), default="auto",
                   help="nextpnr's placer on iCE40 and ECP5: auto (default) is nextpnr's default, heap; static "
                        "(nextpnr's electrostatic placer) places a design that fills most of the part")
    p.add_argument("--archive", action="store_true",
                   help="write the build plan (scripts, Verilog, constraints) as one .zip with a Yosys estimate instead of "
                        "running place and route; needed for boards whose bitstream takes a vendor tool")
    p.add_argument("--uart-pins", default=None, metavar="TX,RX",
                   help="put the bridge's UART on these pins (package pins like N17,M18 or connector pins like "
                        "io_0:0,io_0:1; 3.3 V), for a USB-serial adapter on a board without a UART")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds before the toolchain is stopped (default 3600)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bitspike.cli import write_json
    from bitspike.manifest import load

    from .build import build_bitstream

    from bitspike.errors import BitspikeError

    uart_pins = None
    if args.uart_pins is not None:
        uart_pins = tuple(p.strip() for p in args.uart_pins.split(","))
        if len(uart_pins) != 2 or not all(uart_pins):
            raise BitspikeError(f"--uart-pins {args.uart_pins!r}: expected two pins, TX,RX (e.g. N17,M18)")
    clock_mhz = None
    if args.clock != "auto":
        try:
            clock_mhz = float(args.clock)
        except ValueError:
            raise BitspikeError(f"--clock {args.clock!r}: expected a frequency in MHz (e.g. 40) or 'auto'") from None
        if not clock_mhz > 0:
            raise BitspikeError(f"--clock {args.clock!r}: the frequency must be positive")
    manifest = load(args.model)
    report = build_bitstream(manifest, args.board, args.out, baud=args.baud, clock_mhz=clock_mhz, fold=args.fold,
                             max_luts=args.max_luts, fuse=args.fuse, dsp_blocks=args.dsp_blocks,
                             fast_paths=args.fast_paths, multi_tap=args.multi_tap,
                             seed=args.seed, router=args.router, placer=args.placer, timeout=args.timeout, archive=args.archive, uart_pins=uart_pins)
    write_json(args.json, report)
    if report.get("flow") == "archive":
        est = report.get("utilization_estimate") or {}
        util = ", ".join(f"{k} {v['used']}" + (f"/{v['available']}" if v["available"] else "") for k, v in est.items())
        print(f"{report['board']}: build plan written to {args.out}/{report['archive']}"
              + (f"; Yosys estimate ({report['yosys_estimate']['command'].split()[0]}): {util}" if util else ""))
        print(f"no bitstream: {report['next_step']}")
        return 0
    util = ", ".join(f"{k} {v['used']}/{v['available']} ({v['percent']}%)" for k, v in report["utilization"].items())
    fmax = report["fmax_mhz"]
    print(f"{report['board']}: {util}")
    clock = f"{report['clock_mhz']:.3f} MHz (PLL)" if report.get("pll") else f"{report['clock_mhz']:.2f} MHz"
    print((f"Fmax {fmax:.2f} MHz" if fmax else "Fmax not reported") + f" against {clock} "
          f"({'met' if report['timing_met'] else 'NOT MET'}); {report['cycles_per_inference']} cycles per inference; "
          f"{report['compute']['at_clock']['images_per_second'] or 0:.0f} images/s computed, "
          f"{report['link']['images_per_second']:.1f} images/s over UART at {report['baud']} baud; "
          f"bitstream {args.out}/{report['bitstream']}")
    if not args.quiet:
        print(f"built in {sum(report['build_seconds'].values()):.1f} s; report: {args.out}/report.md")
    return 0
