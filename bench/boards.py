"""Benchmark of the open flows on many boards: bench/results/boards.json and boards.md.

The trained digits MLP (64-128-10, ``--target 2/2/1``) is built, behind the
UART bridge, into a bitstream for each board with the pip-installed open tools
(yowasp Yosys, nextpnr-ice40 / -ecp5 / -himbaechel-gowin, icepack / ecppack /
apycula's gowin_pack), one build after the other, with the LUT budget each
board's part gives the folding (``bitspike.gen.boards.lut_budget``, halved
while the design overflows). It records per board the fold, utilization
(LUT/FF/BRAM/DSP as nextpnr counts them on the exact device) and Fmax after
place and route (nextpnr, seed stated), or the resource that overflows when
even the smallest fold does not fit.

The model: ``--model FILE``, else ``build/bench/boards/digits/model.bsm``,
made (once, about 10 s) with the project's own command line::

    bitspike train --dataset digits --arch mlp --target 2/2/1 --out build/bench/boards/digits
    bitspike export build/bench/boards/digits

Run (about an hour on 2 busy cores; results are merged into boards.json after every board, so
several runs may split the boards)::

    nice python bench/boards.py
    python bench/boards.py --boards icebreaker tang_nano_9k
    python bench/boards.py --markdown-only
"""

from __future__ import annotations

import argparse
import fcntl
import json
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
WORK = ROOT.parent / "build" / "bench" / "boards"
#: at least ten boards across the three open families, the smallest of each among them (built in this
#: order: one of each family first, the parts that cannot hold the digits MLP last)
BOARDS = ["icebreaker", "tang_nano_9k", "ulx3s_85f", "ice40_hx8k_b_evn", "tang_primer_20k", "ulx3s_12f",
          "icesugar", "colorlight_5a75b_r7_0", "versa_ecp5", "ecpix5_85", "blackice_ii", "icestick", "tang_nano",
          "icesugar_nano"]
SEED = 1


def digits_model(path: Path | None):
    """The digits manifest: ``path``, or the one trained and exported with the CLI (made when missing)."""
    from bitspike.cli import main as cli
    from bitspike.manifest import load

    if path is not None:
        return load(path), str(path)
    run = WORK / "digits"
    model = run / "model.bsm"
    if not model.exists():
        print("training the digits model (bitspike train --dataset digits --arch mlp --target 2/2/1)", flush=True)
        if cli(["train", "--dataset", "digits", "--arch", "mlp", "--target", "2/2/1", "--out", str(run), "--quiet"]):
            raise SystemExit("training failed")
        if cli(["export", str(run), "--quiet"]):
            raise SystemExit("export failed")
    return load(model), str(model.relative_to(ROOT.parent))


def build_one(manifest, name: str) -> dict:
    """Build ``name``; a row of the table (never raises for a design that does not fit)."""
    from bitspike.errors import BitspikeError
    from bitspike.gen.boards import get_board, lut_budget
    from bitspike.gen.build import build_bitstream

    spec = get_board(name)
    cap = spec.capacity
    row = {"board": name, "family": spec.family, "device": spec.device, "package": spec.package,
           "clock_mhz": spec.clock_hz / 1e6, "capacity": cap.to_json() if cap else None,
           "board_lut_budget": lut_budget(spec), "seed": SEED}
    t0 = time.monotonic()
    try:
        r = build_bitstream(manifest, spec, WORK / name, seed=SEED)
    except BitspikeError as exc:
        text = str(exc)
        m = re.findall(r"(LUT|FF|BRAM|DSP) \((\w+)\): (?:needs (\d+), the device has (\d+)|more than the device has)", text)
        row.update(status="does not fit" if "does not fit" in text else "failed", error=text,
                   overflow=[{"resource": res, "cell": cell, "needs": int(n) if n else None,
                              "available": int(a) if a else None} for res, cell, n, a in m],
                   seconds=round(time.monotonic() - t0, 1))
        gen = WORK / name / "gen" / "report.json"
        if gen.exists():
            g = json.loads(gen.read_text())
            row["fold"] = ",".join(f"{l['name']}={l['pes']}x{l['lanes']}" for l in g["layers"] if l.get("w_bits"))
            row["lut_budget"] = g.get("max_luts")
        return row
    row.update(status="built", bitstream=r["bitstream"], fold=r["fold"], lut_budget=r["lut_budget"],
               utilization={k: {"used": v["used"], "available": v["available"], "percent": v["percent"], "cell": v["cell"]}
                            for k, v in r["utilization"].items()},
               fmax_mhz=round(r["fmax_mhz"], 2) if r["fmax_mhz"] else None, timing_met=r["timing_met"],
               cycles_per_inference=r["cycles_per_inference"], initiation_interval=r["initiation_interval"],
               latency_us_at_clock=r["performance"]["latency_us_at_clock"],
               overflowed_attempts=len(r["overflowed_attempts"]), synth_opts=r["synth_opts"], toolchain=r["toolchain"],
               seconds=round(time.monotonic() - t0, 1))
    return row


def markdown(doc: dict) -> str:
    lines = ["# Open-flow bitstreams on many boards", "",
             f"Model: the trained digits MLP `{doc['model']}` (manifest `{doc['digest'][:16]}…`), behind the UART "
             f"bridge at 115200 baud. Utilization and Fmax from nextpnr after place and route, placement seed "
             f"{doc['seed']}; fold from the board's LUT budget (`lut_budget`, halved while the design overflows). "
             f"Machine: {doc['machine']}. Command: `nice python bench/boards.py`.", "",
             "| board | family | part | clock MHz | fold (budget) | LUT | FF | BRAM | DSP | Fmax MHz | cycles/inference | result |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in doc["rows"]:
        fold = f"{r.get('fold', '?')} ({r.get('lut_budget', '?')})"
        if r["status"] == "built":
            u = r["utilization"]

            def cell(k):
                v = u.get(k)
                return f"{v['used']}/{v['available']}" if v else "-"

            result = "built" + ("" if r["timing_met"] else ", timing NOT met")
            lines.append(f"| {r['board']} | {r['family']} | {r['device']} | {r['clock_mhz']:g} | {fold} | {cell('LUT')} | "
                         f"{cell('FF')} | {cell('BRAM')} | {cell('DSP')} | {r['fmax_mhz']} | {r['cycles_per_inference']} | "
                         f"{result} |")
        else:
            over = "; ".join(f"{o['resource']} needs {o['needs']} of {o['available']}" if o["needs"] is not None
                             else f"{o['resource']}: more than the device has" for o in r.get("overflow", []))
            result = f"**{r['status']}**: {over}" if over else f"**{r['status']}**: {r['error'][:160]}"
            lines.append(f"| {r['board']} | {r['family']} | {r['device']} | {r['clock_mhz']:g} | {fold} | | | | | | | {result} |")
    from bitspike.gen.boards import get_board, lut_budget

    stale = [r["board"] for r in doc["rows"] if r.get("board_lut_budget") != lut_budget(get_board(r["board"]))]
    built = [r for r in doc["rows"] if r["status"] == "built"]
    fams = sorted({r["family"] for r in built})
    lines += ["", f"{len(built)} of {len(doc['rows'])} boards built ({', '.join(fams)}). LUT is nextpnr's logic cells "
              f"(iCE40 ICESTORM_LC), LUT4 cells (ECP5 TRELLIS_COMB, Gowin LUT4); FF on iCE40 from Yosys' flip-flop "
              f"count; BRAM in the family's block (iCE40 4 Kb, ECP5 and Gowin 18 Kb). A board that does not fit names "
              f"the resource nextpnr ran out of at the smallest fold tried."]
    slow = [r["board"] for r in built if not r["timing_met"]]
    if slow:
        lines.append(f"Timing not met on {', '.join(slow)}: the board's oscillator is faster than this design's Fmax; "
                     f"such a bitstream needs the clock divided by a PLL (the parts have them; bitspike's build does not "
                     f"set one up yet) before it can run on the board.")
    if any(r["device"].startswith("iCE40HX4K") for r in doc["rows"]):
        lines.append("Amaranth places the iCE40HX4K as an HX8K (`--hx8k`, the same die): nextpnr offers 7680 cells and "
                     "32 block RAMs, the data sheet (and `bitspike boards`) 3520 and 20.")
    if stale:
        lines.append(f"Built with the budget of an earlier `lut_budget` (before its cap went down to 1,000 LUTs): "
                     f"{', '.join(stale)}.")
    lines.append("")
    return "\n".join(lines)


def _order(row: dict):
    fam = ["ice40", "ecp5", "gowin"].index(row["family"]) if row["family"] in ("ice40", "ecp5", "gowin") else 9
    return fam, row["capacity"]["lut"] if row["capacity"] else 0, row["board"]


def _write(doc: dict, mine: list[dict]) -> dict:
    """Merge this run's rows into boards.json under a lock (several runs may split the boards) and rewrite both files."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / ".boards.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = RESULTS / "boards.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        names = {r["board"] for r in mine}
        rows = [r for r in old.get("rows", []) if r["board"] not in names and old.get("digest") == doc["digest"]]
        doc = dict(doc, rows=sorted(rows + mine, key=_order))
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        (RESULTS / "boards.md").write_text(markdown(doc))
    return doc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="digits manifest (default: train and export it once)")
    p.add_argument("--boards", nargs="+", default=BOARDS, help="board names (`bitspike boards`)")
    p.add_argument("--markdown-only", action="store_true", help="rewrite boards.md from boards.json and stop")
    args = p.parse_args(argv)
    if args.markdown_only:
        (RESULTS / "boards.md").write_text(markdown(json.loads((RESULTS / "boards.json").read_text())))
        return 0
    manifest, source = digits_model(args.model)
    doc = {"model": source, "digest": manifest.digest(), "seed": SEED,
           "machine": f"{platform.machine()}, Python {platform.python_version()}"}
    mine = []
    for name in args.boards:
        print(f"{name} …", flush=True)
        row = build_one(manifest, name)
        print(f"  {row['status']} in {row['seconds']} s" + (f": Fmax {row['fmax_mhz']} MHz" if row.get("fmax_mhz") else ""),
              flush=True)
        mine.append(row)
        doc = _write(doc, mine)
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
