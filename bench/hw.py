"""Benchmark of the hardware on real devices: bench/results/hw.json and hw.md.

Per design and board it builds the bitstream (``bitspike build``: Yosys,
nextpnr place and route with a stated seed) and co-simulates the same
generated accelerator (``bitspike sim``, Verilator) on the data set, and
records LUT/FF/BRAM/DSP, Fmax from nextpnr after routing, the critical path
nextpnr reports, cycles of one inference alone and the initiation interval
(predicted by the planner and measured in co-simulation), the images/s the
accelerator computes at Fmax and how many results were bit-exact. A "before"
column keeps the figures measured on main before the engines were pipelined
(the same commands, nextpnr 0.11 / yowasp Yosys 0.70, seed 1).

The link columns: ``bitspike build`` picks the board's default rate (3 Mbaud
on the iCEBreaker's FT2232H at 4 clocks per bit of its 12 MHz oscillator,
and on the ULX3S's FT231X at 25/3 clocks per bit of its 25 MHz: a fractional
bit period) and runs the accelerator from the PLL at the highest frequency
not above the Fmax of a first place and route at the oscillator
(``--clock auto``). Link-bound images/s is what the wire carries
under protocol v2 (docs/PROTOCOL.md): full frames of bit-packed images, the
host keeping the board's window of frames in flight, so the busier
direction of the full-duplex line sets the rate: baud / 10 / max(bytes per
image to the board, bytes per image back), 8N1 being ten bit times a byte;
compute-bound images/s is the PLL clock over the measured interval; their
ratio says how far the link still is the bottleneck. The "before" link is
115,200 baud with the accelerator on the oscillator.

Builds are CPU-heavy: they run one at a time, under ``nice``::

    python bench/hw.py --digits digits.bsm                      # ECP5-85F and UP5K
    python bench/hw.py --digits digits.bsm --boards icebreaker  # one board (rows merge into hw.json)
    python bench/hw.py --digits digits.bsm --clock icebreaker=37.17 ulx3s-85f=104.11  # one pass each
    python bench/hw.py --fashion fashion.bsm --clock ulx3s-85f=100  # the trained Fashion-MNIST CNN
    python bench/hw.py --markdown-only

A variant of a board's build is a row of its own: ``--variant NAME`` with its ``bitspike build``
options, e.g. the interval-64 digits MLP on the ECP5-85F with its PE products in pipelined logic and
its accumulators cleared after a group's last word::

    python bench/hw.py --digits digits.bsm --boards ulx3s-85f --variant i64 --fold fc1=16x8x2,fc2=5x4 \
        --dsp-blocks 4 --fast-paths --clock ulx3s-85f=100
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
WORK = ROOT.parent / "build" / "bench_hw"

#: measured on main before this work (issue 13: nextpnr 0.11 post-route, yowasp Yosys 0.70, seed 1)
BEFORE = {
    ("digits", "ulx3s-85f"): {"fmax_mhz": 40.1, "LUT": 4167, "FF": 850, "BRAM": 16, "DSP": 73,
                              "cycles_alone": 359, "interval": 160},
    ("digits", "icebreaker"): {"fmax_mhz": 19.4, "cycles_alone": 1339, "interval": 1024, "DSP": 0},
    ("fashion", "ulx3s-85f"): {"fmax_mhz": 34.0, "DSP": 92, "cycles_alone": 18864, "interval": 14112},
}
#: the link before this work: 115,200 baud (the frames, so the bytes per image, are the same), the
#: accelerator on the oscillator
BEFORE_LINK = {"icebreaker": {"clock_mhz": 12.0}, "ulx3s-85f": {"clock_mhz": 25.0}}
DATASETS = {"digits": "digits", "fashion": "fashion-mnist"}
#: the Fmax each design should reach on each board (issue 13)
TARGET_MHZ = {("digits", "ulx3s-85f"): 100.0, ("digits", "icebreaker"): 40.0, ("fashion", "ulx3s-85f"): 100.0}


def _bitspike(*args: str) -> list[str]:
    exe = Path(sys.executable).parent / "bitspike"
    return ["nice", str(exe) if exe.exists() else "bitspike", *args]


def _critical_path(build_dir: Path) -> list[dict]:
    """nextpnr's worst register-to-register path of each clock (:func:`bitspike.gen.build.critical_paths`)."""
    from bitspike.gen.build import critical_paths

    path = build_dir / "top.report.json"
    return critical_paths(json.loads(path.read_text())) if path.exists() else []


def run_one(design: str, manifest: Path, board: str, seed: int, clock: str = "auto", reuse: bool = False,
            skip_sim: bool = False, variant: str | None = None, fold: str = "auto",
            dsp_blocks: int | None = None, fast_paths: bool = False, router: str = "auto") -> dict:
    """Build and co-simulate one design on one board; ``variant`` names a build with its own ``fold``,
    ``dsp_blocks`` and ``fast_paths`` (``bitspike build --fold``, ``--dsp-blocks``, ``--fast-paths``),
    kept in a work folder and a row of its own."""
    out = WORK / (f"{design}-{board}-s{seed}" + (f"-{variant}" if variant else ""))
    options = [] if fold == "auto" else ["--fold", fold]
    options += [] if dsp_blocks is None else ["--dsp-blocks", str(dsp_blocks)]
    options += ["--fast-paths"] if fast_paths else []
    options += [] if router == "auto" else ["--router", router]
    build_json = out / "build_summary.json"
    sim_json = out / "sim.json"
    # --reuse: a finished build and co-simulation of the same manifest in the work folder are read, not redone
    done = reuse and build_json.exists() and sim_json.exists() and \
        json.loads((out / "report.json").read_text()).get("manifest_digest") == _digest(manifest)
    if not done:
        subprocess.run(_bitspike("build", str(manifest), "--board", board, "-o", str(out), "--seed", str(seed),
                                 "--clock", clock, "--json", str(build_json), "-q", *options), check=True)
    report = json.loads((out / "report.json").read_text())
    gen = json.loads((out / "gen" / "report.json").read_text())
    if not done and not (skip_sim and build_json.exists()):
        subprocess.run(_bitspike("sim", str(manifest), "--rtl", str(out / "gen"), "--dataset", DATASETS[design],
                                 "--processes", "1", "--json", str(sim_json), "-q"), check=True)
    if sim_json.exists():
        sim = json.loads(sim_json.read_text())
    else:  # --skip-sim: the planner's figures only; nothing measured, nothing claimed bit-exact
        sim = {"cycles_per_inference": {"predicted": gen["cycles_per_inference"], "alone": None},
               "initiation_interval": {"predicted": gen.get("initiation_interval"), "measured": None},
               "bit_exact": None, "samples": None}
    util = {k: v["used"] for k, v in report["utilization"].items()}
    fmax = report["fmax_mhz"]
    interval = sim["initiation_interval"]["measured"] or sim["initiation_interval"]["predicted"]
    clock_hz = report.get("accel_clock_hz") or report["clock_hz"]
    link_ips = report["link"]["images_per_second"]
    compute_ips = clock_hz / interval if interval else None
    return {
        "design": design, "board": board, "device": report["device"], "seed": seed, "variant": variant,
        "build_options": options,
        # PESxLANES, and xVEC where the layer's output stream carries VEC elements per beat (a vector stream)
        "fold": {l["name"]: f"{l['pes']}x{l['lanes']}" + (f"x{l['vec_out']}" if l.get("vec_out", 1) != 1 else "")
                 for l in gen["layers"] if l.get("w_bits")},
        "dsp_allotted": {l["name"]: l.get("dsp_blocks") for l in gen["layers"] if l.get("w_bits")},
        "utilization": util, "available": {k: v["available"] for k, v in report["utilization"].items()},
        "fmax_mhz": round(fmax, 2) if fmax else None,
        "critical_path": _critical_path(out / "build"),
        "cycles_alone": {"predicted": sim["cycles_per_inference"]["predicted"],
                         "measured": sim["cycles_per_inference"]["alone"]},
        "interval": {"predicted": sim["initiation_interval"]["predicted"], "measured": interval},
        "images_per_second_at_fmax": round(fmax * 1e6 / interval) if fmax and interval else None,
        "clock": {"oscillator_mhz": report["clock_hz"] / 1e6, "accelerator_mhz": round(clock_hz / 1e6, 4),
                  "pll": report.get("pll"), "passes": report.get("clock_passes"),
                  "link_domain_fmax_mhz": report.get("link_fmax_mhz"), "timing_met": report["timing_met"]},
        "link": {"baud": report["baud"], "clocks_per_bit": report["clocks_per_bit"],
                 "usb_serial": (report.get("usb_serial") or {}).get("chip"),
                 "protocol_version": report["link"].get("protocol_version", 1),
                 "images_per_frame": report["link"].get("images_per_frame", 1),
                 "window": report["link"].get("window", 1),
                 "bytes_per_image": report["link"]["bytes_per_image"],
                 "v1_bytes_per_image": _v1_bytes_per_image(report["accelerator"]),
                 "link_bound_images_per_second": round(link_ips, 1),
                 "compute_bound_images_per_second": round(compute_ips) if compute_ips else None,
                 "compute_to_link": round(compute_ips / link_ips, 2) if compute_ips else None},
        "bit_exact": f"{sim['bit_exact']}/{sim['samples']}" if isinstance(sim["samples"], int) else "not run",
        "toolchain": report.get("toolchain"),
        "before": BEFORE.get((design, board)),
        "build_seconds": _build_seconds(out),
    }


def _row_key(row: dict) -> tuple[str, str, str]:
    """What names a row of hw.json: design, board and variant (``""``: the default build)."""
    return row["design"], row["board"], row.get("variant") or ""


def _v1_bytes_per_image(acc: dict) -> int:
    """Bytes per image under protocol v1 (INFER of one image, a byte per pixel up to 8 bits, then its RESULT)."""
    from bitspike import protocol as P

    pixel = 1 if int(acc["input_bits"]) <= 8 else 2
    result = int(acc["num_classes"]) * P.logit_bytes(int(acc["result_width"])) + P.CLASS_BYTES
    return int(acc["input_size"]) * pixel + result + 2 * P.OVERHEAD


def _build_seconds(out: Path) -> dict | None:
    """The build's times (``build_stats.json``: generate, toolchain), kept apart from the reports."""
    path = out / "build_stats.json"
    return json.loads(path.read_text()).get("seconds") if path.exists() else None


def _digest(manifest: Path) -> str:
    from bitspike.manifest import load

    return load(manifest).digest()


def _cell(v) -> str:
    if v is None:
        return "—"
    return f"{v:,}" if isinstance(v, int) else (f"{v:,g}" if isinstance(v, float) else str(v))


def markdown(doc: dict) -> str:
    lines = ["# Hardware on devices (nextpnr post-route, co-simulated)", "",
             "`python bench/hw.py` — see its docstring. Fmax is nextpnr's after routing at the stated seed; "
             "cycles are predicted by the planner (`gen/timing.py`) and measured in Verilator co-simulation "
             "on the whole test split (alone: one image in an idle pipeline; interval: images streamed back to back). "
             "\"before\" is main before the engines were pipelined.", ""]
    for r in doc["rows"]:
        b = r.get("before") or {}
        title = f"{r['design']} ({r['variant']}: `bitspike build {' '.join(r['build_options'])}`)" \
            if r.get("variant") else r["design"]
        lines += [f"## {title} on {r['board']} ({r['device']}), seed {r['seed']}", "",
                  f"fold {', '.join(f'{k} {v}' for k, v in r['fold'].items())}; DSP blocks allotted per layer "
                  f"{r['dsp_allotted']}; bit-exact {r['bit_exact']}", "",
                  "| | before | after |", "|---|---:|---:|"]
        for res in ("LUT", "FF", "BRAM", "DSP"):
            avail = r["available"].get(res)
            lines.append(f"| {res} | {_cell(b.get(res))} | {_cell(r['utilization'].get(res))}"
                         f"{f' / {avail:,}' if avail else ''} |")
        lines.append(f"| Fmax (MHz) | {_cell(b.get('fmax_mhz'))} | **{_cell(r['fmax_mhz'])}** |")
        target = TARGET_MHZ.get((r["design"], r["board"]))
        ca, iv = r["cycles_alone"], r["interval"]
        lines.append(f"| cycles alone (predicted / measured) | {_cell(b.get('cycles_alone'))} | "
                     f"{_cell(ca['predicted'])} / {_cell(ca['measured'])} |")
        lines.append(f"| interval (predicted / measured) | {_cell(b.get('interval'))} | {_cell(iv['predicted'])} / "
                     f"{_cell(iv['measured'])} |")
        before_ips = round(b["fmax_mhz"] * 1e6 / b["interval"]) if b.get("fmax_mhz") and b.get("interval") else None
        lines.append(f"| images/s at Fmax | {_cell(before_ips)} | {_cell(r['images_per_second_at_fmax'])} |")
        lk, ck = r.get("link"), r.get("clock")
        if lk and ck:
            bb = BEFORE_LINK.get(r["board"], {})
            v1_bytes = lk.get("v1_bytes_per_image") or lk["bytes_per_image"]  # rows measured under v1 have the sum
            before_link = 115200 / 10 / v1_bytes if bb else None
            before_compute = bb["clock_mhz"] * 1e6 / b["interval"] if bb and b.get("interval") else None
            lines.append(f"| accelerator clock (MHz) | {_cell(bb.get('clock_mhz'))} | {ck['accelerator_mhz']:g}"
                         f"{' (PLL)' if ck.get('pll') else ''} |")
            lines.append(f"| link (baud, clocks per bit) | 115,200 | {lk['baud']:,}, {lk['clocks_per_bit']} |")
            lines.append(f"| link-bound images/s | {_cell(round(before_link) if before_link else None)} | "
                         f"{_cell(round(lk['link_bound_images_per_second']))} |")
            lines.append(f"| compute-bound images/s (clock / interval) | "
                         f"{_cell(round(before_compute) if before_compute else None)} | "
                         f"{_cell(lk['compute_bound_images_per_second'])} |")
            ratio_before = f"{before_compute / before_link:.1f}×" if before_link and before_compute else "—"
            lines.append(f"| compute / link | {ratio_before} | **{lk['compute_to_link']:g}×** |")
        if target and r["fmax_mhz"]:
            lines += ["", f"Fmax target {target:g} MHz: {'met' if r['fmax_mhz'] >= target else 'not met'}."]
        if ck and ck.get("passes"):
            steps = "; ".join(f"{p['accelerator_clock_mhz']:g} MHz → Fmax {_cell(p['accelerator_fmax_mhz'])}"
                              + (f" (link domain {p['link_fmax_mhz']:g})" if p.get("pll") and p.get("link_fmax_mhz") else "")
                              for p in ck["passes"])
            lines += ["", f"Clock passes (accelerator clock → its post-route Fmax): {steps}; timing "
                          f"{'met' if ck['timing_met'] else 'NOT met'} in both domains."]
        if lk and isinstance(lk["bytes_per_image"], dict):
            bpi = lk["bytes_per_image"]
            v1_ips = lk["baud"] / 10 / lk["v1_bytes_per_image"]
            lines += ["", f"Link: {lk['usb_serial'] or 'USB-serial converter'} at {lk['baud']:,} baud, protocol "
                          f"v{lk['protocol_version']}: {lk['images_per_frame']} bit-packed images per INFER frame, "
                          f"{lk['window']} frames in flight; {bpi['to_board']:g} bytes per image to the board, "
                          f"{bpi['to_host']:g} back. Link-bound images/s = baud / 10 / max(to board, back) (8N1, "
                          f"full duplex: the busier direction sets the rate). Protocol v1 (one image per frame, a "
                          f"byte per pixel, stop-and-wait, {lk['v1_bytes_per_image']} bytes per image both ways "
                          f"together) carries {v1_ips:,.0f} images/s at this rate: compute / link "
                          f"{lk['compute_bound_images_per_second'] / v1_ips:.2f}×."]
        elif lk:
            lines += ["", f"Link: {lk['usb_serial'] or 'USB-serial converter'} at {lk['baud']:,} baud, protocol v1: "
                          f"{lk['bytes_per_image']} bytes per image (INFER + RESULT frames, stop-and-wait)."]
        bs = r.get("build_seconds")
        if bs:
            lines += ["", f"Build time: generate {bs.get('generate', 0):,.0f} s, Yosys + nextpnr "
                          f"{bs.get('toolchain', 0):,.0f} s (2 CPUs shared with other jobs)."]
        for cp in r["critical_path"]:
            lines += ["", f"Critical path ({cp.get('clock')}): `{cp['from']}` → `{cp['to']}`, {cp['steps']} steps, "
                          f"{cp['logic_ns']} ns logic + {cp['routing_ns']} ns routing."]
        lines.append("")
    lines += [f"Machine: {doc['machine']}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    from bitspike.gen.build import ROUTERS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--digits", help="trained digits MLP manifest (bitspike train --dataset digits --arch mlp "
                                    "--target 2/2/1, then bitspike export)")
    p.add_argument("--fashion", help="trained Fashion-MNIST CNN manifest (bitspike train --dataset fashion-mnist "
                                     "--arch cnn --target 2/2/1 --epochs 4 --freeze-epochs 2, then bitspike export)")
    p.add_argument("--boards", nargs="+", default=["ulx3s-85f", "icebreaker"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--clock", nargs="+", default=[], metavar="BOARD=MHZ",
                   help="the accelerator's clock per board (bitspike build --clock; default auto: a first place and "
                        "route at the oscillator picks it), e.g. icebreaker=37.17 to skip that first pass when its "
                        "Fmax is known")
    p.add_argument("--markdown-only", action="store_true", help="rewrite hw.md from hw.json and stop")
    p.add_argument("--reuse", action="store_true",
                   help="take a board's build and co-simulation from the work folder when they are there for this "
                        "manifest (a run stopped after some boards)")
    p.add_argument("--skip-sim", action="store_true",
                   help="with --reuse: a board whose build is there but whose co-simulation is not gets the planner's "
                        "cycles only (marked not measured, bit-exactness not run)")
    p.add_argument("--variant", default=None, metavar="NAME",
                   help="name this build (a row and work folder of its own beside the default build's)")
    p.add_argument("--fold", default="auto", metavar="SPEC", help="bitspike build --fold (default auto)")
    p.add_argument("--dsp-blocks", type=int, default=None, metavar="N", help="bitspike build --dsp-blocks")
    p.add_argument("--fast-paths", action="store_true", help="bitspike build --fast-paths")
    p.add_argument("--router", default="auto", choices=ROUTERS, help="bitspike build --router")
    args = p.parse_args(argv)
    if (args.fold != "auto" or args.dsp_blocks is not None or args.fast_paths or args.router != "auto") and not args.variant:
        p.error("--fold, --dsp-blocks, --fast-paths and --router build a variant: name it with --variant NAME")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.markdown_only:
        doc = json.loads((RESULTS / "hw.json").read_text())
        for r in doc["rows"]:  # the critical paths again, where the build folders are still there
            build = WORK / (f"{r['design']}-{r['board']}-s{r['seed']}"
                            + (f"-{r['variant']}" if r.get("variant") else "")) / "build"
            if (build / "top.report.json").exists():
                r["critical_path"] = _critical_path(build)
            if r.get("build_seconds") is None and _build_seconds(build.parent) is not None:
                r["build_seconds"] = _build_seconds(build.parent)
        (RESULTS / "hw.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        (RESULTS / "hw.md").write_text(markdown(doc))
        return 0
    designs = {}
    if args.digits:
        designs["digits"] = Path(args.digits).resolve()
    if args.fashion:
        designs["fashion"] = Path(args.fashion).resolve()
    if not designs:
        p.error("give at least one design (--digits MANIFEST, --fashion MANIFEST)")
    clocks = dict(c.split("=", 1) for c in args.clock)
    failed = []
    doc = None
    for design, manifest in designs.items():
        for board in args.boards:
            print(f"{design} on {board} (seed {args.seed})", flush=True)
            try:
                row = run_one(design, manifest, board, args.seed, clocks.get(board, "auto"), args.reuse,
                              args.skip_sim, args.variant, args.fold, args.dsp_blocks, args.fast_paths,
                              args.router)
            except subprocess.CalledProcessError as e:  # bitspike said why; the other boards still run
                failed.append(f"{design} on {board}: bitspike {e.cmd[2]} failed (exit {e.returncode})")
                continue
            doc = _merge_rows([row])  # each row as soon as it is measured: a later failure loses nothing
    if doc is not None:
        print(markdown(doc))
    for f in failed:
        print(f, file=sys.stderr)
    return 1 if failed else 0


def _merge_rows(rows: list[dict]) -> dict:
    """Merge ``rows`` into hw.json by (design, board, variant) and rewrite hw.md; the merged document."""
    with open(RESULTS / ".hw.lock", "w") as lock:  # runs may be split over processes
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = RESULTS / "hw.json"
        old = json.loads(path.read_text()) if path.exists() else {"rows": []}
        mine = {_row_key(r) for r in rows}
        rows = sorted([r for r in old["rows"] if _row_key(r) not in mine] + rows, key=_row_key)
        doc = {"machine": f"{platform.machine()}, Python {platform.python_version()}, {os.cpu_count()} CPUs",
               "rows": rows}
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        (RESULTS / "hw.md").write_text(markdown(doc))
    return doc


if __name__ == "__main__":
    sys.exit(main())
