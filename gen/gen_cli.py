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
                   help="'auto' (balance the pipeline within --max-luts) or per-layer folds NAME=PESxLANES,... "
                        "(NAME=PESxLANESxVEC: the layer's output stream carries VEC values per beat; a conv's "
                        "NAME=PESxLANEStTAPS[xVEC]: TAPS kernel taps per clock, kw (a window row) or kh*kw (the "
                        "whole window), e.g. conv0=16x1t9x16)")
    p.add_argument("--max-luts", type=int, default=None, metavar="N", help="LUT budget for --fold auto")
    p.add_argument("--board", default=None, metavar="NAME",
                   help="plan for this board's part (`bitspike boards`): --fold auto fills its LUTs, FFs, DSPs and "
                        "block RAMs (a stated share of each) for the best interval")
    p.add_argument("--device", default=None, metavar="PART",
                   help="as --board, for a part of the table (LFE5-85F, iCE40UP5K, xc7a35t, ...)")
    p.add_argument("--target-fps", type=float, default=None, metavar="N",
                   help="--fold auto: the fewest LUTs that reach N images/s at --clock, instead of the best interval")
    p.add_argument("--clock", type=float, default=None, metavar="MHZ",
                   help="the accelerator clock --target-fps counts with (default: the board's clock)")
    p.add_argument("--dsp-blocks", type=int, default=None, metavar="N",
                   help="DSP blocks the products may use, the widest first (bitspike.gen.dsp); the others are built as "
                        "pipelined logic (default: the part's count with --board/--device, else every wide product)")
    p.add_argument("--fast-paths", action="store_true",
                   help="shorter register-to-register paths for a high clock, the same sums and cycles: the PE arrays "
                        "clear their accumulators after a group's last word instead of a mux at its first, the "
                        "drains keep their queue state in registered flags")
    p.add_argument("--multi-tap", action="store_true",
                   help="--fold auto may give conv engines a window row or the whole kernel window per clock "
                        "(multi-tap engines: interleaved, double-buffered input banks) where it shortens the interval")
    p.add_argument("--fuse", choices=("auto", "off", "on"), default=None,
                   help="fused requantize-and-fire: thresholds where exact and cheaper (auto, the default), nowhere "
                        "(off), or at every synaptic boundary (on; an error names a layer where it is not exact)")
    p.add_argument("--zero-skip", choices=("auto", "off", "on"), default=None,
                   help="squeezed engines walk only the frame words with a nonzero spike count (linear: a list "
                        "of them; conv of two or more output groups: group 0 reads the window, the others replay "
                        "its nonzero words): nowhere (off, the default), where the neuron can emit 0 and the logic "
                        "costs at most 10%% of the engine's LUTs (auto), or in every engine that can (on: linear "
                        "with two or more frame words, conv without convolution groups). Cycles are planned at a "
                        "nonzero-word rate of 1 (the worst case); `bitspike sim --trace` measures the rate")
    p.add_argument("--debug-taps", action="store_true", help="add observation ports dbgJ_KIND (co-simulation)")
    p.add_argument("--synth", choices=SYNTH_TARGETS, default=None, help="run Yosys and add LUT/FF/BRAM/DSP per engine")
    p.add_argument("--lint", action="store_true", help="also run verilator --lint-only -Wall on the output")
    add_common(p)
    p.set_defaults(func=run)


def plan_options(board: str | None, device: str | None, max_luts: int | None, target_fps: float | None,
                 clock_mhz: float | None, fold, dsp_blocks: int | None = None) -> dict:
    """The generator's ``max_luts``, ``dsp_blocks``, ``device`` and ``target_interval`` for the CLI's options.

    ``dsp_blocks`` (``--dsp-blocks``) caps the DSP blocks below the part's (a faster build: fewer
    multipliers spread over the die); ``None`` keeps the part's count.

    Raises
    ------
    BitspikeError
        ``--board`` with ``--device``, an unknown board or part, a bad ``--target-fps`` / ``--clock``,
        ``--target-fps`` without a clock to count with or with a manual fold, a bad ``--dsp-blocks``.
    """
    from bitspike.errors import BitspikeError

    from .boards import device_budget, get_board

    if board is not None and device is not None:
        raise BitspikeError("give --board or --device, not both")
    if max_luts is not None and max_luts < 1:
        raise BitspikeError(f"--max-luts must be a positive number of LUTs, not {max_luts}")
    out: dict = {"max_luts": max_luts}
    spec = get_board(board) if board is not None else None
    budget = device_budget(spec if spec is not None else f"part:{device}") if board or device else None
    if budget is not None:
        out.update(device=budget, dsp_blocks=budget.dsp, max_luts=budget.lut if max_luts is None else max_luts)
    if dsp_blocks is not None:
        from dataclasses import replace

        from .boards import check_dsp_blocks

        out["dsp_blocks"] = check_dsp_blocks(dsp_blocks, budget.capacity if budget is not None else None)
        if budget is not None:
            out["device"] = replace(budget, dsp=dsp_blocks)
    if clock_mhz is not None and not clock_mhz > 0:
        raise BitspikeError(f"--clock {clock_mhz:g}: the frequency must be positive (MHz)")
    if target_fps is not None:
        if not target_fps > 0:
            raise BitspikeError(f"--target-fps {target_fps:g}: must be a positive number of images per second")
        if fold != "auto":
            raise BitspikeError("--target-fps chooses the fold: it needs --fold auto")
        if clock_mhz is None:
            if spec is None or not spec.clock_hz:
                raise BitspikeError("--target-fps needs the clock it counts with: give --clock MHZ (or a --board "
                                    "with a default clock)")
            clock_mhz = spec.clock_hz / 1e6
        interval = int(clock_mhz * 1e6 // target_fps)
        if interval < 1:
            raise BitspikeError(f"--target-fps {target_fps:g} at {clock_mhz:g} MHz is less than a clock per image")
        out["target_interval"] = interval
        log.info("--target-fps %g at %g MHz: an interval of at most %d cycles", target_fps, clock_mhz, interval)
    return out


def run(args: argparse.Namespace) -> int:
    from . import generate

    report = generate(args.manifest, args.out, fold=args.fold, debug_taps=args.debug_taps, synth=args.synth,
                      **plan_options(args.board, args.device, args.max_luts, args.target_fps, args.clock, args.fold,
                                     args.dsp_blocks),
                      fuse=args.fuse, zero_skip=args.zero_skip, fast_paths=args.fast_paths,
                      multi_tap=args.multi_tap)
    if args.lint:
        from .lint import lint_verilog

        lint_verilog(report.verilog_paths)
    d = report.to_json()
    summary = {k: d[k] for k in ("cycles_per_inference", "initiation_interval", "weight_memory_bits",
                                 "weight_memory_bits_bound", "verilog_files")}
    if "estimated_resources" in d:
        summary["estimated_resources"] = {k: v for k, v in d["estimated_resources"].items() if k != "layers"}
    summary["out_dir"] = str(args.out)
    if "synthesis" in d:
        summary["synthesis_total"] = d["synthesis"]["total"]
    if "zero_skip" in d:
        summary["zero_skip"] = d["zero_skip"]["layers"]
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
    if "estimated_resources" in d:
        est, b = d["estimated_resources"], d["device_budget"]
        print(f"estimate for {b['part']}: " + ", ".join(
            f"{k.upper()} {est[k]}/{b[k]}" for k in ("lut", "ff", "dsp", "bram")) + " (LUTs in the planner's units)")
    write_json(args.json, summary)
    return 0
