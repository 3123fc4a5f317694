"""Benchmark: train and export the runs of issue 3, and write bench/results/train.json and train.md.

Each run trains with :func:`bitspike.host.train.train`, exports with
:func:`bitspike.host.export.export_run` (golden-model deploy accuracy on the
whole test set), and records accuracy, learned bits, bit budget, S-ACE,
weight memory, epochs and wall time. Results are merged into the JSON file
run by run (under a file lock), so runs can be done in several processes::

    python bench/train.py                      # everything, one after another
    python bench/train.py --only digits-mlp-2/2/1 fmnist-cnn-adaptive-2/2/1
    python bench/train.py --list
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
DEFAULTS = dict(optimizer="adam", lr=0.002, batch_size=128, seed=0)


def run_one(name: str, threads: int, out_root: Path) -> dict:
    import torch

    from bitspike.host.export import export_run
    from bitspike.host.train import TrainConfig, budget_limit, train

    kw, what = RUNS[name]
    cfg = TrainConfig(**{**DEFAULTS, **kw, "out": str(out_root / name.replace("/", "_")), "threads": threads,
                         "progress": False})
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    result = train(cfg)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    _, summary = export_run(result.run_dir, Path(result.run_dir) / "model.bsm")
    export_s = time.perf_counter() - t1
    history = result.history
    return {
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


def _merge(entry: dict | None = None, gpu_check: dict | None = None) -> dict:
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
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        write_markdown(data)
    return data


def write_markdown(data: dict) -> None:
    lines = [
        "# Training benchmark (issue 3)",
        "",
        "Generated by `bench/train.py`; numbers measured on this machine's CPUs (2 cores, shared with other jobs, "
        "so wall times are upper bounds). Accuracy on the whole test set: *float* = fake-quantized PyTorch model, "
        "*deploy* = integer golden model of the exported manifest. Bits are averages over the learnable layers "
        "(the 8-bit first layer is left out, as in the paper); BB = B̄_w·B̄_s·T̄.",
        "",
        "| run | mode | target | epochs (frozen) | float acc | deploy acc | B̄_w / B̄_s / T̄ | BB | S-ACE | weight memory (bits) | train time |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in data["runs"].items():
        b = r["avg_bits"]
        mode = r["mode"] + ("" if r["mode"] == "uniform" else f" (renewal {r['renewal']})")
        lines.append(
            f"| {name} | {mode} | {'/'.join(map(str, r['target']))} | {r['epochs']} ({r.get('freeze_epochs', 0)}) "
            f"| {100 * r['float_accuracy']:.2f}% "
            f"| {100 * r['deploy_accuracy']:.2f}% | {b['w']:.2f} / {b['s']:.2f} / {b['t']:.2f} | {r['bit_budget']:.2f} "
            f"| {r['s_ace']:,} | {r['weight_memory_bits']:,} | {r['train_wall_s']:.0f} s |"
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
        if r["mode"] != "adaptive" or r["dataset"] != "fashion-mnist":
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
    lines += ["", "Per-layer bits (name: B_w/B_s/T):", ""]
    for name, r in data["runs"].items():
        per = ", ".join(f"{l['name']}: {l['w_bits']}/{l['s_bits']}/{l['timesteps']}" for l in r["layers"])
        lines.append(f"- {name}: {per}")
    (RESULTS / "train.md").write_text("\n".join(lines) + "\n")


def comparison(runs: dict) -> list[str]:
    """Adaptive against uniform at the same target, per architecture, with the seed spread; and the ablation."""
    out: list[str] = []
    groups: dict[tuple, dict[str, list]] = {}
    for name, r in runs.items():
        if r["dataset"] != "fashion-mnist" or name.startswith("ablation") or "start-at-target" in name:
            continue
        groups.setdefault((r["arch"], tuple(r["target"]), r["epochs"]), {}).setdefault(r["mode"], []).append(r)
    for (arch, target, epochs), modes in sorted(groups.items()):
        if "adaptive" not in modes or "uniform" not in modes:
            continue

        def fmt(rs):
            accs = [100 * r["deploy_accuracy"] for r in rs]
            mean = sum(accs) / len(accs)
            seeds = ", ".join(f"{a:.2f}%" for a in accs)
            return mean, (max(accs) - min(accs)), f"{seeds} (mean {mean:.2f}%, BB {max(r['bit_budget'] for r in rs):.2f})"

        am, aspread, atext = fmt(modes["adaptive"])
        um, uspread, utext = fmt(modes["uniform"])
        spread = max(aspread, uspread)
        if len(modes["adaptive"]) < 2 and len(modes["uniform"]) < 2:
            verdict = "one seed each, so the seed spread is not measured"
        else:
            verdict = ("adaptive ahead by more than the seed spread" if am - um > spread else
                       "uniform ahead by more than the seed spread" if um - am > spread else "within the seed spread")
        by_seed = [{r.get("seed", 0): 100 * r["deploy_accuracy"] for r in modes[m]} for m in ("adaptive", "uniform")]
        paired = [f"seed {k}: {by_seed[0][k] - by_seed[1][k]:+.2f}" for k in sorted(set(by_seed[0]) & set(by_seed[1]))]
        out.append(f"- {arch}, {'/'.join(map(str, target))}, {epochs} epochs: adaptive {atext}; uniform {utext}; "
                   f"difference {am - um:+.2f} points ({', '.join(paired)}), seed spread {spread:.2f}: {verdict}.")
    abl = {n: r for n, r in runs.items() if n.startswith("ablation")}
    for arch in sorted({r["arch"] for r in abl.values()}):
        order = {"uniform": 0, "none": 1, "spikes": 2, "all": 3}
        rows = sorted(((n, r) for n, r in abl.items() if r["arch"] == arch),
                      key=lambda nr: order.get(nr[1]["renewal"] or nr[1]["mode"], 9))
        if len(rows) < 2:
            continue
        parts = [f"{r['what'].removeprefix('ablation: ')} {100 * r['deploy_accuracy']:.2f}% (BB {r['bit_budget']:.2f})"
                 for _, r in rows]
        out.append(f"- ablation at 1/1/1, {arch}: " + "; ".join(parts) + ".")
    return (["Adaptive against uniform (deploy accuracy on the whole test set):", "", *out]) if out else []


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
    args = parser.parse_args(argv)
    if args.gpu_check:
        _merge(gpu_check=_read_gpu_check(Path(args.gpu_check)))
        return 0
    if args.list:
        for name, (_, what) in RUNS.items():
            print(f"{name:36s} {what}")
        return 0
    names = args.only or list(RUNS)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown runs {unknown}; see --list")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in names:
        print(f"== {name}", flush=True)
        entry = run_one(name, args.threads, Path(args.out))
        _merge(entry)
        print(f"== {name}: deploy {100 * entry['deploy_accuracy']:.2f}% float {100 * entry['float_accuracy']:.2f}% "
              f"bits {entry['avg_bits']} BB {entry['bit_budget']:.2f} in {entry['train_wall_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
