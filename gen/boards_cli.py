"""``bitspike boards``: every amaranth-boards platform with its part's capacity and how bitspike builds for it."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from bitspike.cli import add_common

    p = subparsers.add_parser(
        "boards", help="list the boards (amaranth-boards platforms) with capacity and build flow",
        description="List every amaranth-boards platform: family, part, default clock, LUT/FF/DSP/BRAM capacity "
                    "(data sheets), the UART pins the host talks through, and whether the open flow builds the "
                    "bitstream here ('open'), a vendor build plan is written ('vendor': bitspike build --archive), "
                    "or the board cannot reach the host ('refused', with the reason).",
    )
    p.add_argument("--family", default=None, help="only this family (ice40, ecp5, gowin, xilinx, intel, machxo2, quicklogic)")
    p.add_argument("--flow", choices=["open", "vendor", "refused"], default=None, help="only boards with this flow")
    add_common(p)
    p.set_defaults(func=run)


def _num(v) -> str:
    return "?" if v is None else f"{v:,}"


def format_table(rows: list[dict]) -> str:
    """The plain-text table ``bitspike boards`` prints."""
    head = ("board", "family", "part", "clock", "LUT", "FF", "DSP", "BRAM", "link", "flow")
    body = []
    for r in rows:
        c = r["capacity"] or {}
        clock = f"{r['clock_hz'] / 1e6:g} MHz" if r["clock_hz"] else "-"
        if r["uart"]:
            link = f"UART tx {r['uart']['tx']} rx {r['uart']['rx']}"
        else:
            link = "USB to FPGA only" if r["usb"] else "none"
        flow = {"open": "open (bitstream here)", "vendor": f"vendor ({r['toolchain']}; --archive)",
                "refused": "refused"}[r["flow"]]
        lut = _num(c.get("lut")) + (f" {c['lut_kind']}" if c.get("lut_kind") and c["lut_kind"] != "LUT4" else "")
        body.append((r["name"], r["family"], r["device"], clock, lut, _num(c.get("ff")), _num(c.get("dsp")),
                     _num(c.get("bram")) + (f" × {c['bram_kind']}" if c.get("bram_kind") else ""), link, flow))
    widths = [max(len(str(x[i])) for x in [head] + body) for i in range(len(head))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in [head] + body]
    refused = [r for r in rows if r["flow"] == "refused"]
    if refused:
        lines += ["", "refused:"] + [f"  {r['name']}: {r['serial_problem']}" for r in refused]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from bitspike.io import write_json
    from bitspike.errors import BitspikeError

    from .boards import board_table

    rows = board_table()
    families = sorted({r["family"] for r in rows})
    if args.family is not None:
        if args.family not in families:
            raise BitspikeError(f"--family {args.family!r}: expected one of {', '.join(families)}")
        rows = [r for r in rows if r["family"] == args.family]
    if args.flow is not None:
        rows = [r for r in rows if r["flow"] == args.flow]
    write_json(args.json, rows)
    print(format_table(rows))
    if not args.quiet:
        counts = {f: sum(r["flow"] == f for r in rows) for f in ("open", "vendor", "refused")}
        print(f"\n{len(rows)} boards: {counts['open']} built here with the open tools, {counts['vendor']} as vendor "
              f"build plans (bitspike build --archive), {counts['refused']} refused (reasons above)")
    return 0
