"""What device-aware folding plans on a part: bench/results/fit.json and fit.md.

Per design and board, ``fold="auto"`` fills the part (``bitspike gen --board B``:
:func:`bitspike.gen.boards.device_budget`, a stated share of its LUTs, flip-flops,
DSP blocks and block RAMs) and the table gives the fold, cycles of one
inference, the initiation interval, images/s at a stated clock, and the
planner's resource estimate against the budget and the part. Where a build of
the same design and board is in ``bench/results/hw.json`` (``bench/hw.py``), its
nextpnr counts stand next to the estimate: that is what the headroom shares are
judged by. With ``--synth`` the accelerator is also synthesized (Yosys
``synth_ecp5``, every engine) and its counts, with the bridge's LUTs
(:data:`~bitspike.gen.boards.FIXED_LUT4`), are checked against the part as
``bitspike build`` does before place and route. With ``--pnr`` (digits only) the
same plan is built into a bitstream and co-simulated on the digits test split
(:func:`bench.hw.run_one`: ``bitspike build --board``, one place and route at
``--clock``, then ``bitspike sim``): the row gets nextpnr's counts and Fmax and
the measured cycles alone and interval next to the predicted ones.

Designs:

- ``digits``: a trained digits MLP (``--digits MANIFEST``; bench/hw.py's docstring says how to make one);
- ``resnet20``: ResNet20 with CIFAR-10 shapes (3 × 32 × 32 input, width 16, 2/2/2 bits), random
  weights with BatchNorm statistics from 64 random images (seed 0): its shapes and bits set the
  hardware, not its accuracy.

Run under ``nice``::

    python bench/fit.py --digits digits.bsm                 # both designs on ulx3s-85f
    python bench/fit.py --designs resnet20 --synth          # with the Yosys fit check (long)
    python bench/fit.py --designs digits --digits digits.bsm --pnr --clock 100   # + bitstream, Fmax, co-simulation
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
WORK = ROOT.parent / "build" / "bench_fit"
#: the clock images/s are stated at (the digits MLP's measured ECP5-85F build runs its PLL at 100 MHz)
CLOCK_MHZ = 100.0


def resnet20_manifest(path: Path, bits: tuple[int, int, int] = (2, 2, 2)):
    """ResNet20, CIFAR-10 shapes, random weights (seed 0), exported at ``bits`` (B_w, B_s, T; default 2/2/2);
    cached at ``path``."""
    from bitspike.manifest import load

    if path.exists():
        return load(path)
    import numpy as np
    import torch

    from bitspike.host.export import export_model
    from bitspike.host.models import BitPlan, build_model

    torch.manual_seed(0)
    model = build_model("resnet20", (3, 32, 32), 10, BitPlan(*bits), width=16)
    images = np.random.default_rng(0).integers(0, 256, size=(64, 3, 32, 32), dtype=np.uint8)
    model.train()
    with torch.no_grad():  # BatchNorm statistics, so that the export's ranges are those of real activations
        for _ in range(2):
            model(torch.as_tensor(images).float() / 255)
    model.eval()
    m = export_model(model, images, current_bits=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    m.save(path)
    return m


def plan_row(design: str, manifest, board: str, synth: bool) -> dict:
    from bitspike.gen import generate
    from bitspike.gen.boards import FIXED_LUT4, device_budget, get_board
    from bitspike.gen.build import overflow_error, synthesis_fit
    from bitspike.gen.folding import estimate_resources
    from bitspike.gen.plan import make_plan

    spec = get_board(board)
    dev = device_budget(spec)
    t0 = time.monotonic()
    plan = make_plan(manifest, max_luts=dev.lut, dsp_blocks=dev.dsp, device=dev)
    plan_s = time.monotonic() - t0
    est = estimate_resources(plan, dev.family)
    cap = dev.capacity
    row = {
        "design": design, "board": board, "part": dev.part, "manifest_digest": manifest.digest(),
        # a list, in layer order (the JSON is written with sorted keys)
        # PESxLANES, and xVEC where the layer's output stream carries VEC elements per beat (a vector stream)
        "fold": [[n.name, f"{n.pes}x{n.lanes}" + (f"x{n.vec_out}" if n.vec_out != 1 else "")]
                 for n in plan.layers if getattr(n, "w_bits", None)],
        "cycles_per_inference": plan.cycles_per_inference, "initiation_interval": plan.initiation_interval,
        "clock_mhz": CLOCK_MHZ, "images_per_second": round(CLOCK_MHZ * 1e6 / plan.initiation_interval, 1),
        "estimate": {k: est[k] for k in ("lut", "ff", "dsp", "bram")},
        "budget": dev.to_json(), "part_capacity": cap.to_json(), "plan_seconds": round(plan_s, 1),
    }
    if synth:
        out = WORK / f"{design}-{board}"
        t0 = time.monotonic()
        report = generate(manifest, out, max_luts=dev.lut, dsp_blocks=dev.dsp, device=dev, synth=dev.family)
        total = report.data["synthesis"]["total"]
        # the board design is the accelerator plus the bridge: its LUTs (FIXED_LUT4) join the check
        cells = {"LUT4": total["lut"] + FIXED_LUT4, "TRELLIS_FF": total["ff"], "MULT18X18D": total["dsp"],
                 "DP16KD": total["bram"]}
        fit = synthesis_fit(spec, cells)
        err = overflow_error(spec, fit, "", stage=" (Yosys' counts of the accelerator plus the bridge's LUTs)")
        row["yosys"] = {"accelerator": total, "seconds": round(time.monotonic() - t0, 1),
                        "fits": err is None, "message": None if err is None else str(err)}
    return row


def pnr_row(design: str, manifest_path: Path, board: str, seed: int, clock: str) -> dict:
    """nextpnr and co-simulation figures of the board build of the same plan (bench/hw.py's ``run_one``)."""
    sys.path.insert(0, str(ROOT))
    from hw import run_one

    r = run_one(design, manifest_path.resolve(), board.replace("_", "-"), seed, clock)
    keep = ("seed", "fold", "utilization", "available", "fmax_mhz", "critical_path", "cycles_alone", "interval",
            "images_per_second_at_fmax", "bit_exact", "clock", "build_seconds")
    return {k: r.get(k) for k in keep}


def _measured(design: str, board: str) -> dict | None:
    path = RESULTS / "hw.json"
    if not path.exists():
        return None
    for r in json.loads(path.read_text())["rows"]:
        if (r["design"], r["board"].replace("-", "_")) == (design, board.replace("-", "_")):
            return r
    return None


def markdown(doc: dict) -> str:
    lines = ["# Device-aware folding: what `fold=\"auto\"` plans on a part", "",
             "`python bench/fit.py` — see its docstring. The fold fills the part's budget "
             "(`bitspike.gen.boards.device_budget`: LUT 50 %, FF 50 %, DSP 100 %, BRAM 85 % of the data sheet's "
             "counts; LUTs in the planner's units, 2 LUT4 per unit less 900 LUT4 for the bridge) and stops at the "
             "floor the streams set. Estimates are the planner's (`bitspike.gen.folding.estimate_resources`): "
             "DSP blocks and the weight memories' block RAMs are exact, the other RAMs follow Yosys' mapping "
             "costs; the bridge and the top's skew FIFOs are not in them. Images/s at the stated clock = "
             "clock / interval; the tightest resource is the one closest to its budget.",
             ""]
    for r in doc["rows"]:
        b, cap, e = r["budget"], r["part_capacity"], r["estimate"]
        lines += [f"## {r['design']} on {r['board']} ({r['part']})", "",
                  f"fold {', '.join(f'{k} {v}' for k, v in r['fold'])}", "",
                  f"cycles per inference {r['cycles_per_inference']:,}; interval {r['initiation_interval']:,} "
                  f"cycles; **{r['images_per_second']:,.0f} images/s at {r['clock_mhz']:g} MHz**; planned in "
                  f"{r['plan_seconds']} s", ""]
        m = r.get("pnr") or _measured(r["design"], r["board"])
        measured = m if m and m.get("fold") == dict(r["fold"]) else None
        head = "| | estimate | budget | part |" + (" nextpnr (bench/hw.py) |" if measured else "")
        if measured:
            c, i = measured["cycles_alone"], measured["interval"]
            lines[-2:] = [f"cycles per inference {r['cycles_per_inference']:,}; interval {r['initiation_interval']:,} "
                          f"cycles (predicted); measured in Verilator co-simulation on the test split: cycles alone "
                          f"{c['measured']:,}, interval {i['measured']:,}; bit-exact {measured['bit_exact']}; "
                          f"nextpnr Fmax **{measured['fmax_mhz']} MHz** (seed "
                          f"{measured['seed']}, accelerator clock {measured['clock']['accelerator_mhz']} MHz, timing "
                          f"{'met' if measured['clock']['timing_met'] else 'not met'}): "
                          f"**{measured['images_per_second_at_fmax']:,} images/s at Fmax**; planned in "
                          f"{r['plan_seconds']} s", ""]
        lines += [head, "|---|---:|---:|---:|" + ("---:|" if measured else "")]
        names = {"lut": "LUT", "ff": "FF", "dsp": "DSP", "bram": "BRAM"}
        for k, name in names.items():
            # LUTs: the planner's units, and the LUT4s they stand for on the board (device_budget's conversion)
            est = (f"{e[k]:,} units ≈ {round(b['lut4_per_estimate'] * e[k] + b['fixed_lut4']):,} LUT4" if k == "lut"
                   else f"{e[k]:,}")
            part = cap[k]
            cell = f"| {name} | {est} | {b[k]:,}{' units' if k == 'lut' else ''} | {part:,} |"
            if measured:
                cell += f" {measured['utilization'].get(name, 0):,} |"
            lines.append(cell)
        tight = max(("lut", "ff", "dsp", "bram"), key=lambda k: e[k] / b[k] if b[k] else 0)
        lines += ["", f"Tightest resource: {names[tight]} ({100 * e[tight] / b[tight]:.0f} % of its budget)."]
        y = r.get("yosys")
        if y:
            verdict = "fits" if y["fits"] else f"does not fit: {y['message']}"
            lines += ["", f"Yosys `synth_ecp5` of the accelerator ({y['seconds']} s): LUT {y['accelerator']['lut']:,}, "
                          f"FF {y['accelerator']['ff']:,}, DSP {y['accelerator']['dsp']}, BRAM {y['accelerator']['bram']}"
                          f"; with the bridge's LUTs the fit check {verdict}."]
        if r.get("note"):
            lines += ["", r["note"]]
        lines.append("")
    lines += [f"Machine: {doc['machine']}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--digits", help="trained digits MLP manifest")
    p.add_argument("--designs", nargs="+", default=["digits", "resnet20"], choices=["digits", "resnet20"])
    p.add_argument("--boards", nargs="+", default=["ulx3s_85f"])
    p.add_argument("--synth", action="store_true", help="also run Yosys on the accelerator and check the fit")
    p.add_argument("--markdown-only", action="store_true", help="rewrite fit.md from fit.json and stop")
    p.add_argument("--pnr", action="store_true",
                   help="digits: also build the bitstream (nextpnr Fmax, counts) and co-simulate the test split")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (with --pnr)")
    p.add_argument("--clock", default="auto",
                   help="accelerator clock in MHz for the --pnr build (bitspike build --clock; auto: two passes)")
    args = p.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "fit.json"
    if args.markdown_only:
        (RESULTS / "fit.md").write_text(markdown(json.loads(path.read_text())))
        return 0
    from bitspike.manifest import load

    rows = []
    for design in args.designs:
        if design == "digits":
            if not args.digits:
                print("digits: no --digits manifest given; skipped", file=sys.stderr)
                continue
            manifest = load(args.digits)
        else:
            manifest = resnet20_manifest(WORK / "resnet20.bsm")
        for board in args.boards:
            print(f"{design} on {board}", flush=True)
            rows.append(plan_row(design, manifest, board, args.synth))
            if args.pnr and design == "digits":
                rows[-1]["pnr"] = pnr_row(design, Path(args.digits), board, args.seed, args.clock)
    old = json.loads(path.read_text()) if path.exists() else {"rows": []}
    for r in rows:  # a note on a run (what did not finish) stays until a run with the Yosys check replaces it
        prev = next((o for o in old["rows"] if (o["design"], o["board"]) == (r["design"], r["board"])), None)
        if prev and prev.get("note") and "yosys" not in r and prev.get("manifest_digest") == r["manifest_digest"]:
            r["note"] = prev["note"]
    mine = {(r["design"], r["board"]) for r in rows}
    rows = sorted([r for r in old["rows"] if (r["design"], r["board"]) not in mine] + rows,
                  key=lambda r: (r["design"], r["board"]))
    doc = {"machine": f"{platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} CPUs", "rows": rows}
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    (RESULTS / "fit.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
