"""Benchmark: train and export the runs of issues 3 and 14, and write bench/results/train.json and train.md.

Each run trains with :func:`bitspike.host.train.train`, exports with
:func:`bitspike.host.export.export_run` (golden-model deploy accuracy on the
whole test set), and records accuracy, learned bits, bit budget, S-ACE,
weight memory, epochs and wall time. Results are merged into the JSON file
run by run (under a file lock), so runs can be done in several processes::

    python bench/train.py                      # everything, one after another
    python bench/train.py --only digits-mlp-2/2/1 fmnist-cnn-adaptive-2/2/1
    python bench/train.py --list
    python bench/train.py --only deep            # a group: every run whose name starts with "deep-"

Rows keep the method version that produced them (``method``): runs from before issue 14's
gradient fixes (straight-through bit clip, B_w = 1 gradient, clip before rounding, renewal
gated per kind) are marked ``pre-14`` in the table until they are rerun.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
FMNIST_EPOCHS = 4
ABLATION_EPOCHS = 3
CNNFC_EPOCHS = 6
METHOD = "issue-14"  # recorded with every run this version of the trainer produces
#: the deep Fashion-MNIST network (issue 14): 6 learnable layers; 15,000 training images, 4 epochs
#: (2 frozen), so that one run takes a few minutes on one shared core. Only seed 0 is exported
#: (the golden model on 10,000 test images takes minutes): the comparison uses the fake-quantized
#: accuracy of every run, and the exported rows show that deploy accuracy matches it.
DEEP = dict(dataset="fashion-mnist", arch="vgg-deep", epochs=4, freeze_epochs=2, train_limit=15000)

#: name → (TrainConfig keyword arguments, what it shows)
RUNS: dict[str, tuple[dict, str]] = {
    "digits-mlp-2/2/1": (dict(dataset="digits", arch="mlp", target=(2, 2, 1), epochs=40, lr=0.1, optimizer="sgd",
                              batch_size=64), "make demo's network: ≥ 95% deploy accuracy in < 3 min"),
    "fmnist-cnn-adaptive-2/2/1": (dict(dataset="fashion-mnist", arch="cnn", target=(2, 2, 1), epochs=FMNIST_EPOCHS),
                                  "adaptive bits, target 2/2/1"),
    "fmnist-cnn-adaptive-2/2/1-start-at-target": (
        dict(dataset="fashion-mnist", arch="cnn", target=(2, 2, 1), epochs=FMNIST_EPOCHS, init_extra=0, freeze_epochs=2),
        "adaptive bits starting at the target (not one bit above), last 2 epochs frozen"),
    "fmnist-cnn-uniform-2/2/1": (dict(dataset="fashion-mnist", arch="cnn", uniform=(2, 2, 1), epochs=FMNIST_EPOCHS),
                                 "baseline: every layer 2/2/1"),
    "fmnist-cnn-uniform-4/4/2": (dict(dataset="fashion-mnist", arch="cnn", uniform=(4, 4, 2), epochs=FMNIST_EPOCHS),
                                 "baseline: every layer 4/4/2"),
    "ablation-1/1/1-uniform": (dict(dataset="fashion-mnist", arch="cnn", uniform=(1, 1, 1), epochs=ABLATION_EPOCHS),
                               "ablation: uniform 1/1/1"),
    "ablation-1/1/1-learnable": (dict(dataset="fashion-mnist", arch="cnn", target=(1, 1, 1), renewal="none",
                                      epochs=ABLATION_EPOCHS), "ablation: learnable bits, no renewal"),
    "ablation-1/1/1-learnable+renewal": (dict(dataset="fashion-mnist", arch="cnn", target=(1, 1, 1), renewal="all",
                                              epochs=ABLATION_EPOCHS), "ablation: learnable bits with renewal"),
    # cnn-fc (conv–pool–conv–pool–linear–linear, hidden 128): three learnable layers of very different sizes
    "fmnist-cnnfc-adaptive-2/2/1": (dict(dataset="fashion-mnist", arch="cnn-fc", target=(2, 2, 1), epochs=CNNFC_EPOCHS),
                                    "adaptive bits, target 2/2/1, bit budget ≤ 4"),
    "fmnist-cnnfc-adaptive-2/2/1-seed1": (
        dict(dataset="fashion-mnist", arch="cnn-fc", target=(2, 2, 1), epochs=CNNFC_EPOCHS, seed=1),
        "the same, seed 1 (seed noise)"),
    "fmnist-cnnfc-adaptive-2/2/1-start-at-target": (
        dict(dataset="fashion-mnist", arch="cnn-fc", target=(2, 2, 1), epochs=CNNFC_EPOCHS, init_extra=0),
        "adaptive bits starting at the target"),
    "fmnist-cnnfc-uniform-2/2/1": (dict(dataset="fashion-mnist", arch="cnn-fc", uniform=(2, 2, 1), epochs=CNNFC_EPOCHS),
                                   "baseline: every layer 2/2/1"),
    "fmnist-cnnfc-uniform-2/2/1-seed1": (
        dict(dataset="fashion-mnist", arch="cnn-fc", uniform=(2, 2, 1), epochs=CNNFC_EPOCHS, seed=1),
        "the same, seed 1 (seed noise)"),
    "fmnist-cnnfc-uniform-4/4/2": (dict(dataset="fashion-mnist", arch="cnn-fc", uniform=(4, 4, 2), epochs=CNNFC_EPOCHS),
                                   "baseline: every layer 4/4/2"),
    "ablation-cnnfc-1/1/1-uniform": (dict(dataset="fashion-mnist", arch="cnn-fc", uniform=(1, 1, 1), epochs=CNNFC_EPOCHS),
                                     "ablation: uniform 1/1/1"),
    "ablation-cnnfc-1/1/1-learnable": (
        dict(dataset="fashion-mnist", arch="cnn-fc", target=(1, 1, 1), renewal="none", max_budget=1.1,
             epochs=CNNFC_EPOCHS), "ablation: learnable bits, no renewal, bit budget ≤ 1.1"),
    "ablation-cnnfc-1/1/1-learnable+renewal": (
        dict(dataset="fashion-mnist", arch="cnn-fc", target=(1, 1, 1), renewal="all", max_budget=1.1,
             epochs=CNNFC_EPOCHS), "ablation: learnable bits with renewal, bit budget ≤ 1.1"),
}
for _seed in range(3):
    RUNS[f"deep-adaptive-2/2/1-seed{_seed}"] = (
        dict(DEEP, target=(2, 2, 1), seed=_seed, export=_seed == 0), "vgg-deep, adaptive bits, target 2/2/1, BB ≤ 4")
    RUNS[f"deep-uniform-2/2/1-seed{_seed}"] = (
        dict(DEEP, uniform=(2, 2, 1), seed=_seed, export=_seed == 0), "vgg-deep, baseline: every layer 2/2/1")
for _seed in range(3):
    # the bits learn freely for the two learning epochs (no projection until they freeze) and faster,
    # so that the allocation frozen is the one learned, not the one the first projection (step 50) chose
    RUNS[f"deep-adaptive-free-2/2/1-seed{_seed}"] = (
        dict(DEEP, target=(2, 2, 1), seed=_seed, project_every=0, bit_lr=0.01, t_lr=0.01, export=False),
        "vgg-deep, adaptive bits, projected only when frozen, bit lr 0.01")
#: the fold the deep network's hardware cost is taken at and its designs generated at (bench/cost.py):
#: what ``--fold auto`` gives the uniform 2/2/1 network within the default 3,000-LUT budget
FOLD_DEEP = "conv1=2x1,conv2=4x4,conv3=4x8,conv4=4x4,conv5=4x4,conv6=4x4,fc1=1x1"
#: LUT budgets of the LUT-targeted runs: the BB-targeted seed-0 run's modelled LUTs at FOLD_DEEP, and lower
LUT_BUDGETS = (2856, 2600)
for _seed in range(3):
    RUNS[f"deep-luts-{LUT_BUDGETS[0]}-seed{_seed}"] = (
        dict(DEEP, target=(2, 2, 1), cost="luts", budget=float(LUT_BUDGETS[0]), cost_fold=FOLD_DEEP, seed=_seed,
             export=False), f"vgg-deep, bits chosen by LUTs (--cost luts): ≤ {LUT_BUDGETS[0]:,} modelled LUTs")
RUNS[f"deep-luts-{LUT_BUDGETS[1]}-seed0"] = (
    dict(DEEP, target=(2, 2, 1), cost="luts", budget=float(LUT_BUDGETS[1]), cost_fold=FOLD_DEEP, export=False),
    f"vgg-deep, bits chosen by LUTs: ≤ {LUT_BUDGETS[1]:,} modelled LUTs")
RUNS["deep-ablation-1/1/1-uniform"] = (dict(DEEP, uniform=(1, 1, 1)), "ablation: uniform 1/1/1")
RUNS["deep-ablation-1/1/1-learnable"] = (dict(DEEP, target=(1, 1, 1), renewal="none", max_budget=1.1),
                                         "ablation: learnable bits, no renewal, bit budget ≤ 1.1")
RUNS["deep-ablation-1/1/1-learnable+renewal"] = (dict(DEEP, target=(1, 1, 1), renewal="all", max_budget=1.1),
                                                 "ablation: learnable bits with renewal, bit budget ≤ 1.1")
DEFAULTS = dict(optimizer="adam", lr=0.002, batch_size=128, seed=0)


def run_one(name: str, threads: int, out_root: Path, reuse: bool = False) -> dict:
    """Train (or, with ``reuse``, read back a finished run of the same settings from ``out_root``) and export."""
    import torch

    from bitspike.host.checkpoint import CHECKPOINT_NAME

    from bitspike.host.export import export_run
    from bitspike.host.train import TrainConfig, budget_limit, train

    kw, what = RUNS[name]
    kw = dict(kw)
    do_export = kw.pop("export", True)
    out = out_root / name.replace("/", "_")
    reused = reuse and (out / CHECKPOINT_NAME).exists()
    cfg = TrainConfig(**{**DEFAULTS, **kw, "out": str(out), "threads": threads, "progress": False, "resume": reused})
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    result = train(cfg)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    history = result.history
    if reused:  # the run's own training time (a checkpoint that stopped early is trained to the end)
        train_s = float(history[-1]["wall_s"])
    if do_export:
        _, summary = export_run(result.run_dir, Path(result.run_dir) / "model.bsm")
    else:  # the same figures from the trained model, without the golden model's pass over the test set
        summary = _fake_quant_summary(result)
    export_s = time.perf_counter() - t1
    metrics = json.loads((Path(result.run_dir) / "metrics.json").read_text())
    return {
        "method": METHOD,
        "variant": ", ".join(f"{k}={kw[k]}" for k in ("project_every", "bit_lr", "t_lr", "cost", "budget") if k in kw),
        "cost": metrics["final"].get("cost"),
        "train_limit": cfg.train_limit,
        "renewal_counts": metrics["final"].get("renewal"),
        "t_per_layer_per_epoch": [[l["timesteps"] for l in h["layers"]] for h in history],
        "w_per_layer_per_epoch": [[l["w_bits"] for l in h["layers"]] for h in history],
        "s_per_layer_per_epoch": [[l["s_bits"] for l in h["layers"]] for h in history],
        "name": name,
        "what": what,
        "dataset": cfg.dataset,
        "arch": cfg.arch,
        "mode": "uniform" if cfg.uniform else "adaptive",
        "target": list(cfg.goal),
        "renewal": cfg.renewal if cfg.uniform is None else None,
        "seed": cfg.seed,
        "max_budget": None if cfg.uniform is not None else budget_limit(cfg.target, cfg.max_budget),
        "epochs": cfg.epochs,
        "freeze_epochs": cfg.freeze,
        "float_accuracy": summary["float_accuracy"],
        "deploy_accuracy": summary["deploy_accuracy"],
        "accuracy_gap_points": summary["accuracy_gap_points"],
        "avg_bits": summary["avg_bits"],
        "bit_budget": summary["bit_budget"],
        "s_ace": summary["s_ace"],
        "weight_memory_bits": summary["weight_memory_bits"],
        "layers": summary["layers"],
        "train_wall_s": train_s,
        "export_s": export_s,
        "epoch_s": [h["epoch_s"] for h in history],
        "test_accuracy_per_epoch": [h["test_accuracy"] for h in history],
        "bits_per_epoch": [h["avg_bits"] for h in history],
        "threads": threads,
    }


def _fake_quant_summary(result) -> dict:
    """Accuracy and bit figures of a trained run without exporting it (``deploy_accuracy`` is ``None``).

    The bit figures are those the export would give: averages over the allocated layers, weight memory over
    every layer (as bitspike.analysis counts it); S-ACE is left out.
    """
    last = result.history[-1]
    layers = last["layers"]
    return {
        "float_accuracy": last["test_accuracy"],
        "deploy_accuracy": None,
        "accuracy_gap_points": None,
        "avg_bits": last["avg_bits"],
        "bit_budget": last["bit_budget"],
        "s_ace": None,
        "weight_memory_bits": sum(l["params"] * l["w_bits"] for l in layers),
        "layers": [{"name": l["name"], "w_bits": l["w_bits"], "s_bits": l["s_bits"], "timesteps": l["timesteps"]}
                   for l in layers],
    }


def _merge(entry: dict | None = None, gpu_check: dict | None = None) -> dict:
    from bitspike.io import write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "train.json"
    with open(Path(tempfile.gettempdir()) / "bitspike-bench-train.lock", "w") as lock:  # outside the tree
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() else {"runs": {}}
        if entry is not None:
            data["runs"][entry["name"]] = entry
        if gpu_check is not None:
            data["gpu_check"] = gpu_check
        data["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
        data["runs"] = {k: data["runs"][k] for k in RUNS if k in data["runs"]}
        write_json(path, data)
        write_markdown(data)
    return data


def write_markdown(data: dict) -> None:
    lines = [
        "# Training benchmark (issues 3 and 14)",
        "",
        "`deep-*` rows: `vgg-deep` on Fashion-MNIST (stride-2 first conv to 14×14, then six learnable layers of "
        "similar size: convs 16→16, 16→32 at 14×14, three 32→32 at 7×7, linear 288→10), trained on the first "
        f"{DEEP['train_limit']:,} training images for {DEEP['epochs']} epochs (the last {DEEP['freeze_epochs']} "
        "with frozen bits), evaluated on all 10,000 test images; three seeds each.",
        "",
        "Generated by `bench/train.py`; numbers measured on this machine's CPUs (2 cores, shared with other jobs, "
        "so wall times are upper bounds). Accuracy on the whole test set: *float* = fake-quantized PyTorch model, "
        "*deploy* = integer golden model of the exported manifest. Bits are averages over the learnable layers "
        "(the 8-bit first layer is left out, as in the paper); BB = B̄_w·B̄_s·T̄.",
        "",
        "Column *method*: `issue-14` rows were trained with the current trainer (straight-through clip of bits and T, "
        "B_w = 1 gradient from clipped weights only, clip before rounding, renewal gated per kind and epoch); "
        "`pre-14` rows are kept from the earlier trainer and not rerun. *deploy* is `-` where a run was not "
        "exported (see `DEEP` in bench/train.py). *renewals* = step renewals fired, learning / projection "
        "(weights + spikes).",
        "",
        "| run | method | mode | target | epochs (frozen) | train images | float acc | deploy acc | B̄_w / B̄_s / T̄ | BB "
        "| S-ACE | weight memory (bits) | renewals | train time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in data["runs"].items():
        b = r["avg_bits"]
        mode = r["mode"] + ("" if r["mode"] == "uniform" else f" (renewal {r['renewal']})")
        if r.get("cost"):
            mode += f", {r['cost']['unit']} ≤ {r['cost']['budget']:,.0f} ({r['cost']['value']:,.0f})"
        rc = r.get("renewal_counts") or {}
        fired = "-" if not rc else "{} / {}".format(
            sum(rc.get(k, {}).get("renewals_learning", 0) for k in ("weights", "spikes")),
            sum(rc.get(k, {}).get("renewals_projection", 0) for k in ("weights", "spikes")))
        lines.append(
            f"| {name} | {r.get('method', 'pre-14')} | {mode} | {'/'.join(map(str, r['target']))} "
            f"| {r['epochs']} ({r.get('freeze_epochs', 0)}) | {r.get('train_limit') or 'all'} "
            f"| {_pc(r['float_accuracy'])} | {_pc(r['deploy_accuracy'])} | {b['w']:.2f} / {b['s']:.2f} / {b['t']:.2f} "
            f"| {r['bit_budget']:.2f} | {_n(r['s_ace'])} | {_n(r['weight_memory_bits'])} | {fired} "
            f"| {r['train_wall_s']:.0f} s |"
        )
    gpu = data.get("gpu_check")
    if gpu:
        lines += [
            "",
            f"GPU check ({gpu['device']}): `bitspike train --device cuda` on fashion-mnist/cnn, {gpu['epochs']} epochs: "
            f"test accuracy {100 * gpu['cuda_test_accuracy']:.2f}%, exported deploy accuracy {100 * gpu['cuda_deploy_accuracy']:.2f}%; "
            f"two runs with the same seed gave identical weights: {gpu['cuda_deterministic']}. Epoch time: "
            f"{gpu['cuda_epoch_s']:.1f} s on the GPU against {gpu['cpu2_epoch_s']:.1f} s on 2 threads of the same "
            f"machine's CPU (ratio CPU/GPU {gpu['cpu_gpu_ratio']:.1f}); on this shared 2-core machine an epoch took "
            f"{gpu['local_cpu_epoch_s']}.",
        ]
    lines += ["", "How much room the target window leaves (every integer allocation of the learnable layers, "
              "within their bit ranges, whose averages are within 10% of the target and whose BB is at most the "
              "run's budget; counted exhaustively):", ""]
    from bitspike.host.train import budget_limit

    seen = set()
    for r in data["runs"].values():
        if r["mode"] != "adaptive" or r["dataset"] != "fashion-mnist" or r.get("cost"):
            continue
        budget = budget_limit(tuple(r["target"]), r.get("max_budget"))
        key = (r["arch"], tuple(r["target"]), budget)
        if key in seen:
            continue
        seen.add(key)
        count = allocations(r["arch"], tuple(r["target"]), budget)
        lines.append(f"- {r['arch']} at {'/'.join(map(str, r['target']))}, BB ≤ {budget:g}: {count} allocation"
                     f"{'s' if count != 1 else ''}{'' if count > 1 else ' (only the uniform one)'}")
    lines += ["", *comparison(data["runs"])]
    notes = allocation_notes(data["runs"])
    if notes:
        lines += ["", "What the adaptive runs allocated (per-layer bits of the learnable layers; changes of a rounded bit "
                  "width by learning or by projection, summed over the run and its seeds):", "", *notes]
    fig = bits_figure(data["runs"])
    if fig:
        lines += ["", f"Per-layer bits over the epochs of {fig[0]}: `bench/results/{fig[1]}` (drawn by "
                  "`python bench/train.py --markdown`; a generated file, not committed)."]
    lines += ["", "Per-layer bits (name: B_w/B_s/T):", ""]
    for name, r in data["runs"].items():
        per = ", ".join(f"{l['name']}: {l['w_bits']}/{l['s_bits']}/{l['timesteps']}" for l in r["layers"])
        lines.append(f"- {name}: {per}")
    (RESULTS / "train.md").write_text("\n".join(lines) + "\n")


def allocation_notes(runs: dict) -> list[str]:
    """Per group of adaptive issue-14 runs: how many seeds ended at a non-uniform allocation, and what moved the bits."""
    groups: dict[tuple, list] = {}
    for name, r in runs.items():
        if r.get("method") != METHOD or r["mode"] != "adaptive" or "ablation" in name:
            continue
        groups.setdefault((r["arch"], tuple(r["target"]), r.get("variant") or ""), []).append((name, r))
    out = []
    for (arch, target, variant), rows in sorted(groups.items()):
        mixed = 0
        learn = proj = 0
        allocs = []
        for _name, r in rows:
            per = [(l["w_bits"], l["s_bits"], l["timesteps"]) for l in r["layers"]][1:]  # the first is fixed
            mixed += len(set(per)) > 1
            allocs.append(" ".join("/".join(map(str, b)) for b in per))
            rc = r.get("renewal_counts") or {}
            learn += sum(rc.get(k, {}).get("changes_learning", 0) for k in ("weights", "spikes"))
            proj += sum(rc.get(k, {}).get("changes_projection", 0) for k in ("weights", "spikes"))
        out.append(f"- {arch}, {'/'.join(map(str, target))}{f' ({variant})' if variant else ''}: {mixed} of {len(rows)} "
                   f"seeds end at a non-uniform allocation ({'; '.join(allocs)}); B_w/B_s changes by learning {learn}, "
                   f"by projection {proj}.")
    return out


def _pc(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _n(v) -> str:
    return "-" if v is None else f"{v:,}"


def _acc(r: dict) -> float:
    """Deploy accuracy where the run was exported, else the fake-quantized one (percent)."""
    return 100 * (r["deploy_accuracy"] if r.get("deploy_accuracy") is not None else r["float_accuracy"])


def bits_figure(runs: dict, name: str = "deep-adaptive-2/2/1-seed1") -> tuple[str, str] | None:
    """Draw B_w, B_s, T per layer over the epochs of one run into results/train_bits.png."""
    r = runs.get(name)
    if not r or "w_per_layer_per_epoch" not in r:
        return None
    from bitspike.figures import bits_over_epochs

    names = [l["name"] for l in r["layers"]]
    history = []
    for e, (w, s_, t) in enumerate(zip(r["w_per_layer_per_epoch"], r["s_per_layer_per_epoch"],
                                       r["t_per_layer_per_epoch"]), 1):
        layers = [{"name": n, "w_bits": a, "s_bits": b, "timesteps": c, "fixed": i == 0 and a == 8 and b == 8}
                  for i, (n, a, b, c) in enumerate(zip(names, w, s_, t))]
        history.append({"epoch": e, "layers": layers, "frozen": e > r["epochs"] - r.get("freeze_epochs", 0)})
    bits_over_epochs(history, RESULTS / "train_bits.png", title=f"{name}: bits per layer")
    return name, "train_bits.png"


def comparison(runs: dict) -> list[str]:
    """Adaptive against uniform at the same target, per architecture, with the seed spread; and the ablation."""
    out: list[str] = []
    groups: dict[tuple, dict[str, list]] = {}
    for name, r in runs.items():
        if r["dataset"] != "fashion-mnist" or "ablation" in name or "start-at-target" in name:
            continue
        # a variant of the adaptive run (other projection or bit lr) is its own group, compared with the
        # same uniform runs
        key = (r["arch"], tuple(r["target"]), r["epochs"], r.get("variant") or "")
        groups.setdefault(key, {}).setdefault(r["mode"], []).append(r)
    for key, modes in groups.items():
        if key[3] and "uniform" not in modes:
            modes["uniform"] = groups.get(key[:3] + ("",), {}).get("uniform", [])
    for (arch, target, epochs, variant), modes in sorted(groups.items()):
        if not modes.get("adaptive") or not modes.get("uniform"):
            continue

        use_float = any(r.get("deploy_accuracy") is None for m in modes.values() for r in m)
        which = "fake-quantized" if use_float else "deploy"

        def fmt(rs):
            accs = [100 * r["float_accuracy"] if use_float else 100 * r["deploy_accuracy"] for r in rs]
            mean = sum(accs) / len(accs)
            std = (sum((a - mean) ** 2 for a in accs) / max(1, len(accs) - 1)) ** 0.5
            seeds = ", ".join(f"{a:.2f}%" for a in accs)
            return mean, (max(accs) - min(accs)), (f"{seeds} (mean {mean:.2f}% ± {std:.2f}, "
                                                   f"BB {max(r['bit_budget'] for r in rs):.2f})")

        am, aspread, atext = fmt(modes["adaptive"])
        um, uspread, utext = fmt(modes["uniform"])
        spread = max(aspread, uspread)
        if len(modes["adaptive"]) < 2 and len(modes["uniform"]) < 2:
            verdict = "one seed each, so the seed spread is not measured"
        else:
            verdict = ("adaptive ahead by more than the seed spread" if am - um > spread else
                       "uniform ahead by more than the seed spread" if um - am > spread else "within the seed spread")
        by_seed = [{r.get("seed", 0): (100 * r["float_accuracy"] if use_float else 100 * r["deploy_accuracy"])
                    for r in modes[m]} for m in ("adaptive", "uniform")]
        paired = [f"seed {k}: {by_seed[0][k] - by_seed[1][k]:+.2f}" for k in sorted(set(by_seed[0]) & set(by_seed[1]))]
        out.append(f"- {arch}, {'/'.join(map(str, target))}, {epochs} epochs ({which} accuracy): adaptive"
                   f"{f' ({variant})' if variant else ''} {atext}; "
                   f"uniform {utext}; "
                   f"difference {am - um:+.2f} points ({', '.join(paired)}), seed spread {spread:.2f}: {verdict}.")
    abl = {n: r for n, r in runs.items() if "ablation" in n}
    for arch in sorted({r["arch"] for r in abl.values()}):
        order = {"uniform": 0, "none": 1, "spikes": 2, "all": 3}
        rows = sorted(((n, r) for n, r in abl.items() if r["arch"] == arch),
                      key=lambda nr: order.get(nr[1]["renewal"] or nr[1]["mode"], 9))
        if len(rows) < 2:
            continue
        parts = [f"{r['what'].removeprefix('ablation: ')} {_acc(r):.2f}%"
                 f"{'' if r.get('deploy_accuracy') is not None else ' (fake-quantized)'} (BB {r['bit_budget']:.2f})"
                 for _, r in rows]
        out.append(f"- ablation at 1/1/1, {arch}: " + "; ".join(parts) + ".")
    return (["Adaptive against uniform (accuracy on the whole test set; ± is the sample standard deviation over "
             "seeds):", "", *out]) if out else []


def allocations(arch: str, target: tuple[int, int, int], budget: float) -> int:
    """Count the integer bit allocations of ``arch``'s learnable layers (Fashion-MNIST shapes) in the target window.

    Ranges are those of an adaptive run (start one bit above the target: B up to target + 3, T up to target + 1).
    """
    import itertools

    import torch

    from bitspike.host.models import BitPlan, build_model
    from bitspike.host.train import TOLERANCE, input_sizes, learnable_layers

    model = build_model(arch, (1, 28, 28), 10, BitPlan(target[0] + 1, target[1] + 1, target[2]))
    sizes = input_sizes(model, torch.device("cpu"))
    layers = learnable_layers(model)
    wn = [l.weight.numel() for l in layers]
    fn = [sizes[l] for l in layers]

    def options(counts, lo, hi, t):
        out = []
        for combo in itertools.product(range(lo, hi + 1), repeat=len(counts)):
            avg = sum(n * b for n, b in zip(counts, combo)) / sum(counts)
            if abs(avg - t) <= TOLERANCE * t + 1e-9:
                out.append((avg, combo))
        return out

    ws = options(wn, 1, target[0] + 3, target[0])
    ss = options(fn, 1, target[1] + 3, target[1])
    ts = options(fn, 1, target[2] + 1, target[2])
    return sum(1 for w in ws for s_ in ss for t in ts if w[0] * s_[0] * t[0] <= budget + 1e-9)


def _read_gpu_check(folder: Path) -> dict:
    """Summarise the JSON files the one device check wrote (see the report of issue 3)."""
    cuda = json.loads((folder / "cuda1_metrics.json").read_text())
    cpu = json.loads((folder / "cpu2_metrics.json").read_text())
    det = json.loads((folder / "cuda_det.json").read_text())
    exp = json.loads((folder / "export_cuda1.json").read_text())
    cuda_epoch = cuda["epochs"][-1]["epoch_s"]  # the second epoch: CUDA start-up is in the first
    cpu_epoch = cpu["epochs"][-1]["epoch_s"]
    local = [r["epoch_s"] for r in json.loads((RESULTS / "train.json").read_text())["runs"].values()
             if r["dataset"] == "fashion-mnist"] if (RESULTS / "train.json").exists() else []
    flat = [e for run in local for e in run]
    return {
        "device": "NVIDIA H200 (16 CPU cores), torch 2.11.0+cu130",
        "epochs": len(cuda["epochs"]),
        "cuda_test_accuracy": cuda["epochs"][-1]["test_accuracy"],
        "cuda_deploy_accuracy": exp["deploy_accuracy"],
        "cuda_float_accuracy": exp["float_accuracy"],
        "cuda_deterministic": bool(det["identical"]),
        "cuda_epoch_s": cuda_epoch,
        "cpu2_epoch_s": cpu_epoch,
        "cpu_gpu_ratio": cpu_epoch / cuda_epoch,
        "local_cpu_epoch_s": f"{min(flat):.0f}–{max(flat):.0f} s (1 thread, shared)" if flat else "n/a",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these (see --list)")
    parser.add_argument("--list", action="store_true", help="list the runs and exit")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (default 1)")
    parser.add_argument("--out", default="runs/bench", help="folder for the run folders (default runs/bench)")
    parser.add_argument("--gpu-check", metavar="DIR", help="record the results of runs/_dev/gpu_check.sh found in DIR, and exit")
    parser.add_argument("--reuse", action="store_true",
                        help="read back runs already finished in --out (same settings) instead of training them again")
    parser.add_argument("--markdown", action="store_true", help="rewrite train.md (and its figure) from train.json, and exit")
    args = parser.parse_args(argv)
    if args.markdown:
        _merge()
        return 0
    if args.gpu_check:
        _merge(gpu_check=_read_gpu_check(Path(args.gpu_check)))
        return 0
    if args.list:
        for name, (_, what) in RUNS.items():
            print(f"{name:36s} {what}")
        return 0
    names = []
    for n in args.only or list(RUNS):
        group = [k for k in RUNS if k.startswith(n + "-")] if n not in RUNS else [n]
        names += group or [n]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown runs {unknown}; see --list")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in names:
        print(f"== {name}", flush=True)
        entry = run_one(name, args.threads, Path(args.out), args.reuse)
        _merge(entry)
        print(f"== {name}: deploy {_pc(entry['deploy_accuracy'])} float {_pc(entry['float_accuracy'])} "
              f"bits {entry['avg_bits']} BB {entry['bit_budget']:.2f} in {entry['train_wall_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
