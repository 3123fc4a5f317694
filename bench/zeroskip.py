"""Benchmark: zero-word skipping in squeezed linear and conv engines (``bitspike gen --zero-skip``), in co-simulation.

The digits MLP of ``bitspike demo`` (64-64-32-10, every layer's bits learned, target 2/2/1.5; trained here
with ``bitspike train``, or ``--digits`` names a manifest) is generated twice at the same fold: dense
(``--zero-skip off``) and skipping (``--zero-skip on``), both with debug taps, and co-simulated in Verilator on
the whole digits test split (360 images):

- bit-exact: logits and every debug tap of every layer against the golden model, each image alone and
  streamed back to back under 10% random stalls on both ends, for both designs;
- per linear layer: the measured nonzero-word rate (words of ``lanes`` spike counts with a nonzero count,
  counted on the hardware's spike taps), and its accumulator window (the clocks from the layer's first
  accumulator of an image to its last: the walk of every output group but the first; each image alone),
  skipping vs dense;
- the planner's model at the measured rate (:meth:`bitspike.ops.linear.LinearOp.accumulator_window`,
  ``busy_cycles``) against the measured window;
- area: Yosys (``synth_ice40``, what ``bitspike build --board icebreaker`` runs) LUTs and BRAMs per engine,
  with and without skipping.

Two folds: the one ``--fold auto`` picks, and one with fewer lanes (more words per frame, so more to skip).

Conv engines (``--conv``; ``--conv-only`` keeps the MLP figures of an earlier run and redoes these): the
Fashion ``cnn`` shape (:func:`bitspike.testing.fashion_cnn_shaped`, seed 0: random weights of the trained
network's shape) on the first ``--conv-samples`` Fashion-MNIST test images, dense and skipping at two folds
(the one the 3,000-LUT budget of tests/hw_digests.py picks, where conv0 has one output group and stays dense,
and a small one, every conv at four or more output groups). Co-simulated as above (bit-exact at every tap,
each image alone and streamed under stalls); per conv engine the measured nonzero-word rate of its frames and
of its windows (what its replayed output groups issue: 1 + rate · (T − 1) words), its accumulator window,
skipping vs dense, and the planner's busy cycles at the measured window rate; the latency and the streamed
interval, measured and planned; Yosys ``synth_ice40`` LUTs and BRAMs per engine. Writes
``bench/results/zeroskip.json`` and ``.md``::

    nice python bench/zeroskip.py --conv
    python bench/zeroskip.py --digits model.bsm --no-synth
    nice python bench/zeroskip.py --conv-only --conv-samples 200
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from bitspike.host.data import images_for_manifest, load_dataset
from bitspike.host.golden import GoldenModel
from bitspike.io import atomic_write_text, write_json
from bitspike.manifest import load
from bitspike.sim.activity import ZeroSkipActivity
from bitspike.sim.cosim import CoSim
from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

RESULTS = Path(__file__).resolve().parent / "results"


def train_digits(work: Path, seed: int) -> Path:
    """The demo's digits MLP (``bitspike train`` and ``bitspike export``, the commands' own code)."""
    from bitspike.cli import EXIT_OK, main
    from bitspike.demo_cli import HIDDEN, TARGET

    run = work / "train"
    argv = ["train", "--dataset", "digits", "--arch", "mlp", "--hidden", HIDDEN, "--first-layer", "learn",
            "--target", TARGET, "--seed", str(seed), "--out", str(run), "-q"]
    if main(argv) != EXIT_OK or main(["export", str(run), "-o", str(work / "digits.bsm"), "-q"]) != EXIT_OK:
        raise SystemExit("training or exporting the digits MLP failed (its output says why)")
    return work / "digits.bsm"


def acc_windows(result, design, name: str) -> list[int]:
    """Per image of ``result``: the clocks from layer ``name``'s first accumulator to its last."""
    port = {(t.layer, t.kind): t.port for t in design.taps}[(name, "acc")]
    _, cyc = result.taps[port]
    per = len(cyc) // result.samples
    return [int(cyc[(i + 1) * per - 1] - cyc[i * per]) + 1 for i in range(result.samples)]


def measure(rtl: Path, manifest, x: np.ndarray, golden, op: str = "linear") -> dict:
    """Bit-exactness (each image alone, and streamed under stalls), latency, interval and the accumulator
    windows of the layers of kind ``op`` (``"linear"``, or ``"conv2d"`` for a CNN)."""
    sim = CoSim(rtl)
    ref = ManifestGoldenTaps(manifest, sim.design.taps)
    seqs = ref.sequences(x)
    t0 = time.perf_counter()
    alone = sim.run(x, trace=True, sequential=True)
    stalled = sim.run(x, trace=True, stall_in=0.1, stall_out=0.1, seed=3)
    free = sim.run(x)
    activity = ZeroSkipActivity(sim.design)
    activity.add(alone)
    layers = [l["name"] for l in sim.design.layers if l["op"] == op]
    return {
        "exact_logits_alone": int((alone.logits == golden).all(axis=1).sum()),
        "exact_all_taps_alone": int(compare_all(alone, seqs, sim.design.taps, ref)[0]),
        "exact_logits_stalled": int((stalled.logits == golden).all(axis=1).sum()),
        "exact_all_taps_stalled": int(compare_all(stalled, seqs, sim.design.taps, ref)[0]),
        "latency_mean": float(alone.cycles.mean()), "latency_predicted": int(sim.design.cycles_per_inference),
        "interval_median": float(free.initiation_interval),
        "interval_predicted": int(sim.design.data["initiation_interval"]),
        "windows": {n: float(np.mean(acc_windows(alone, sim.design, n))) for n in layers},
        "zero_skip": activity.summary(),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def synth_engines(manifest, fold: str, zero_skip: str, work: Path) -> dict:
    """Yosys ``synth_ice40`` LUT and BRAM per engine (``bitspike gen --synth ice40``) and the total."""
    from bitspike.gen import generate

    rep = generate(manifest, work, fold=fold, synth="ice40", zero_skip=zero_skip).to_json()["synthesis"]
    return {"modules": {k: {"lut": v["lut"], "bram": v["bram"]} for k, v in rep["modules"].items()},
            "total": {"lut": rep["total"]["lut"], "bram": rep["total"]["bram"]}}


def run_config(label: str, manifest, fold: str, x, golden, work: Path, synth: bool) -> dict:
    from bitspike.gen import generate

    out: dict = {"fold": fold}
    designs = {}
    for mode in ("off", "on"):
        rep = generate(manifest, work / f"{label}-{mode}", fold=fold, debug_taps=True, zero_skip=mode)
        designs[mode] = rep.to_json()
        out[mode] = measure(work / f"{label}-{mode}", manifest, x, golden)
    out["folds"] = {l["name"]: f"{l['pes']}x{l['lanes']}" for l in designs["on"]["layers"] if l["op"] == "linear"}
    out["planned"] = {mode: {"latency": d["cycles_per_inference"], "interval": d["initiation_interval"],
                             "cycles": {l["name"]: l["cycles"] for l in d["layers"] if l["op"] == "linear"}}
                      for mode, d in designs.items()}
    layers = {}
    for name, s in out["on"]["zero_skip"].items():
        dense_w = out["off"]["windows"][name]
        layers[name] = dict(s, dense_window_cycles_mean=dense_w,
                            window_ratio=s["window_cycles_mean"] / dense_w,
                            model_error=s["model_window_cycles"] / s["window_cycles_mean"] - 1)
    out["layers"] = layers
    if synth:
        out["synth"] = {mode: synth_engines(manifest, fold, mode, work / f"{label}-{mode}-synth")
                        for mode in ("off", "on")}
    return out


CONV_FOLDS = {
    # the fold of tests/hw_digests.py's 3,000-LUT budget: conv0 16x1 is one output group (dense), conv1 8x8 four
    "fold 3000 LUTs": "conv0=16x1,conv1=8x8,line2=2x2",
    "small fold": "conv0=4x1,conv1=4x4,line2=2x2",  # four and eight output groups
}


def run_conv_config(label: str, manifest, fold: str, x, golden, work: Path, synth: bool) -> dict:
    """One fold of the CNN, dense and skipping: :func:`measure` of both, the plans, the area."""
    from bitspike.gen import generate

    out: dict = {"fold": fold}
    designs = {}
    for mode in ("off", "on"):
        rep = generate(manifest, work / f"{label}-{mode}", fold=fold, debug_taps=True, zero_skip=mode, fuse="off")
        designs[mode] = rep.to_json()
        out[mode] = measure(work / f"{label}-{mode}", manifest, x, golden, op="conv2d")
        print(label, mode, json.dumps({k: v for k, v in out[mode].items() if k != "zero_skip"}), flush=True)
    out["skipping"] = designs["on"]["zero_skip"]["layers"]
    out["dense_reasons"] = designs["on"]["zero_skip"]["dense"]
    out["planned"] = {mode: {"latency": d["cycles_per_inference"], "interval": d["initiation_interval"],
                             "cycles": {l["name"]: l["cycles"] for l in d["layers"] if l["op"] == "conv2d"}}
                      for mode, d in designs.items()}
    layers = {}
    for name, s in out["on"]["zero_skip"].items():
        if name not in out["off"]["windows"]:
            continue
        dense_w = out["off"]["windows"][name]
        layers[name] = dict(s, dense_window_cycles_mean=dense_w, window_ratio=s["window_cycles_mean"] / dense_w)
    out["layers"] = layers
    if synth:
        out["synth"] = {mode: synth_engines(manifest, fold, mode, work / f"{label}-{mode}-synth")
                        for mode in ("off", "on")}
    return out


def conv_markdown(conv: dict) -> list[str]:
    """The CNN part of the results file."""
    lines = [
        "# Zero-word skipping in squeezed conv engines",
        "",
        "Models: " + "; ".join(f"{k}: {v['what']} ({v['samples']} images)" for k, v in sorted(conv["models"].items()))
        + ". Verilator co-simulation of `bitspike gen "
        "--zero-skip off` and `--zero-skip on` (`--fuse off`) at the same fold, with debug taps. A skipping conv "
        "engine walks each window in its first output group and replays only the nonzero words (and the window's "
        "last) in the others. Frame rate: the share of the engine's frame words holding a nonzero count; window "
        "rate: the share of nonzero words among the first T − 1 words of its windows (padding counts as zero), "
        "what a replayed group issues (1 + rate · (T − 1) words); both counted on the hardware's spike taps. "
        "Window: per image run alone, the clocks from the engine's first accumulator to its last, mean over the "
        "images. Model: the planner's busy cycles (one frame in steady state) at the measured window rate. Area: "
        "Yosys `synth_ice40` per engine (LUTs; BRAM tiles).",
        "",
    ]
    for label, cfg in sorted(conv["configs"].items()):  # the order of the JSON file (sorted keys) too
        on, off = cfg["on"], cfg["off"]
        n = conv["models"][cfg["model"]]["samples"]
        lines += [
            f"## {label} (`{cfg['fold']}`)",
            "",
            f"- skipping: {', '.join(cfg['skipping']) or 'none'}; dense: "
            + "; ".join(f"{k}: {v}" for k, v in cfg["dense_reasons"].items() if "walks its window densely" not in v),
            f"- bit-exact, skipping: logits {on['exact_logits_alone']}/{n}, every tap {on['exact_all_taps_alone']}/{n} "
            f"(each image alone), {on['exact_logits_stalled']}/{n} and {on['exact_all_taps_stalled']}/{n} streamed "
            f"under 10% stalls; dense: {off['exact_all_taps_alone']}/{n} and {off['exact_all_taps_stalled']}/{n}",
            f"- latency per image alone: skipping {on['latency_mean']:.1f} cycles (planned at rate 1: "
            f"{on['latency_predicted']}), dense {off['latency_mean']:.1f} ({off['latency_predicted']}); interval "
            f"streamed: skipping {on['interval_median']:.0f}, dense {off['interval_median']:.0f} (planned at rate 1: "
            f"{on['interval_predicted']} and {off['interval_predicted']}); skipping / dense: latency "
            f"{on['latency_mean'] / off['latency_mean']:.2f}, interval {on['interval_median'] / off['interval_median']:.2f}",
            "",
            "| layer | window words T | groups | frame rate | window rate | window, skipping | window, dense | "
            "skipping / dense | busy: model at the rate / dense |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in cfg["layers"].items():
            lines.append(f"| {name} | {s['window_words']} | {s['groups']} | {100 * s['nonzero_rate']:.1f}% | "
                         f"{100 * s['window_nonzero_rate']:.1f}% | {s['window_cycles_mean']:.1f} | "
                         f"{s['dense_window_cycles_mean']:.1f} | {s['window_ratio']:.2f} | "
                         f"{s['model_busy_cycles']} / {s['dense_busy_cycles']} |")
        if "synth" in cfg:
            lines += ["", "| module | LUT dense | LUT skipping | BRAM dense | BRAM skipping |", "|---|---|---|---|---|"]
            so, sn = cfg["synth"]["off"]["modules"], cfg["synth"]["on"]["modules"]
            for mod in sorted(set(so) | set(sn)):
                a, b = so.get(mod, {}), sn.get(mod, {})
                lines.append(f"| {mod} | {a.get('lut', '-')} | {b.get('lut', '-')} | {a.get('bram', '-')} | "
                             f"{b.get('bram', '-')} |")
            to, tn = cfg["synth"]["off"]["total"], cfg["synth"]["on"]["total"]
            lines.append(f"| **total** | {to['lut']} | {tn['lut']} | {to['bram']} | {tn['bram']} |")
        lines.append("")
    lines += [
        "Notes: output group 0 always reads the whole window (it finds the nonzero words), so a pixel costs at "
        "least T + G − 1 clocks against the dense G·T: the gain grows with the output groups (a conv folded to "
        "pes = out channels has one and stays dense) and with the sparsity of the words, which are `lanes` "
        "counts wide (a word is zero only when all its counts are). The latency planned at rate 1 is above the "
        "dense one only through the linear engine, which waits for its whole frame when it skips. "
        "`--zero-skip auto` (the 10% LUT rule) picks the digits CNN's conv2 at its default fold (8x8) and none "
        "of the smaller engines here; the figures above are `--zero-skip on`.",
        "",
    ]
    return lines


DIGITS_CNN_FOLDS = {
    "digits CNN, fold 8x1 / 8x8": "conv1=8x1,conv2=8x8,fc1=2x2",  # two and four output groups
    "digits CNN, small fold": "conv1=4x1,conv2=4x4,fc1=2x2",  # four and eight
}


def train_digits_cnn(work: Path, seed: int) -> Path:
    """The digits ``cnn`` (1×8×8 → conv 16 → pool → conv 32 → pool → linear), trained and exported here."""
    from bitspike.cli import EXIT_OK, main

    run = work / "train-cnn"
    argv = ["train", "--dataset", "digits", "--arch", "cnn", "--seed", str(seed), "--threads", "1", "--out", str(run),
            "-q"]
    if main(argv) != EXIT_OK or main(["export", str(run), "-o", str(work / "digits_cnn.bsm"), "-q"]) != EXIT_OK:
        raise SystemExit("training or exporting the digits CNN failed (its output says why)")
    return work / "digits_cnn.bsm"


def run_conv(samples: int, synth: bool, work: Path, digits_cnn: Path | None, seed: int) -> dict:
    """The CNN part: the trained digits CNN at :data:`DIGITS_CNN_FOLDS` on the digits test split, and the
    Fashion CNN shape at :data:`CONV_FOLDS` on the first ``samples`` Fashion-MNIST test images."""
    from bitspike.host.data import load_dataset
    from bitspike.testing import fashion_cnn_shaped

    conv = {"models": {}, "configs": {}}
    work.mkdir(parents=True, exist_ok=True)
    dcnn = load(digits_cnn or train_digits_cnn(work, seed))
    x = images_for_manifest(load_dataset("digits", "test").images, dcnn)
    golden = GoldenModel(dcnn).run(x).logits.numpy()
    conv["models"]["digits CNN"] = {"what": f"digits `cnn` ({'`' + str(digits_cnn) + '`' if digits_cnn else 'trained here with bitspike train, seed ' + str(seed)}), "
                                            f"digits test split", "samples": len(x)}
    for label, fold in DIGITS_CNN_FOLDS.items():
        conv["configs"][label] = dict(run_conv_config(label.replace(" ", "-").replace(",", "").replace("/", ""), dcnn,
                                                      fold, x, golden, work, synth), model="digits CNN")
    manifest = fashion_cnn_shaped(0)
    x = images_for_manifest(load_dataset("fashion-mnist", "test").images[:samples], manifest)
    golden = GoldenModel(manifest).run(x).logits.numpy()
    conv["models"]["Fashion CNN shape"] = {"what": "Fashion `cnn` shape (`bitspike.testing.fashion_cnn_shaped(0)`: "
                                                   f"random weights), the first {len(x)} Fashion-MNIST test images",
                                           "samples": len(x)}
    for label, fold in CONV_FOLDS.items():
        conv["configs"]["Fashion CNN shape, " + label] = dict(
            run_conv_config("fashion-" + label.replace(" ", "-"), manifest, fold, x, golden, work, synth),
            model="Fashion CNN shape")
    return conv


def write_markdown(data: dict) -> None:
    n = data["samples"]
    lines = [
        "# Zero-word skipping in squeezed linear engines",
        "",
        f"Generated by `python bench/zeroskip.py`. {data['model']}; digits test split, {n} images; Verilator "
        "co-simulation of `bitspike gen --zero-skip off` and `--zero-skip on` at the same fold, with debug taps. "
        "Nonzero-word rate: the share of a layer's frame words (its `lanes` spike counts) holding a nonzero "
        "count, counted on the hardware's spike taps. Window: per image run alone, the clocks from the "
        "layer's first accumulator to its last (the walk of every output group but the first), mean over the "
        "images. Model: the planner's window at the measured rate (`max(rate · words, 1)` words a "
        "group on average). Area: Yosys `synth_ice40` per engine (LUTs; BRAM tiles).",
        "",
    ]
    for label, cfg in data["configs"].items():
        on, off = cfg["on"], cfg["off"]
        lines += [
            f"## {label} (folds {', '.join(f'{k} {v}' for k, v in cfg['folds'].items())})",
            "",
            f"- bit-exact, skipping: logits {on['exact_logits_alone']}/{n}, every tap {on['exact_all_taps_alone']}/{n} "
            f"(each image alone), {on['exact_logits_stalled']}/{n} and {on['exact_all_taps_stalled']}/{n} streamed "
            f"under 10% stalls; dense: {off['exact_all_taps_alone']}/{n} and {off['exact_all_taps_stalled']}/{n}",
            f"- latency per image alone: skipping {on['latency_mean']:.1f} cycles (planned at rate 1: "
            f"{on['latency_predicted']}), dense {off['latency_mean']:.1f} ({off['latency_predicted']}); interval "
            f"streamed: skipping {on['interval_median']:.0f}, dense {off['interval_median']:.0f} (planned "
            f"{on['interval_predicted']} and {off['interval_predicted']})",
            "",
            "| layer | frame words | nonzero-word rate | window, skipping | window, dense | skipping / dense | "
            "model at the rate | model error | busy (model at the rate / planned at 1) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, s in cfg["layers"].items():
            lines.append(f"| {name} | {s['frame_words']} | {100 * s['nonzero_rate']:.1f}% | "
                         f"{s['window_cycles_mean']:.1f} | {s['dense_window_cycles_mean']:.1f} | "
                         f"{s['window_ratio']:.2f} | {s['model_window_cycles']} | {100 * s['model_error']:+.1f}% | "
                         f"{s['model_busy_cycles']} / {s['planned_busy_cycles']} |")
        if "synth" in cfg:
            lines += ["", "| module | LUT dense | LUT skipping | BRAM dense | BRAM skipping |", "|---|---|---|---|---|"]
            so, sn = cfg["synth"]["off"]["modules"], cfg["synth"]["on"]["modules"]
            for mod in sorted(set(so) | set(sn)):
                a, b = so.get(mod, {}), sn.get(mod, {})
                lines.append(f"| {mod} | {a.get('lut', '-')} | {b.get('lut', '-')} | {a.get('bram', '-')} | "
                             f"{b.get('bram', '-')} |")
            to, tn = cfg["synth"]["off"]["total"], cfg["synth"]["on"]["total"]
            lines.append(f"| **total** | {to['lut']} | {tn['lut']} | {to['bram']} | {tn['bram']} |")
        lines.append("")
    if "conv" in data:
        lines += conv_markdown(data["conv"])
    else:
        lines += ["Conv engines: run `python bench/zeroskip.py --conv`.", ""]
    lines += [f"Machine: {data['machine']}."]
    atomic_write_text(RESULTS / "zeroskip.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", type=Path, default=None, help="a trained digits manifest (default: train one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--narrow", default=None, metavar="FOLD",
                        help="the second fold (default: each linear layer at its auto PEs and a quarter of its lanes)")
    parser.add_argument("--no-synth", action="store_true", help="skip the Yosys area figures")
    parser.add_argument("--conv", action="store_true", help="also measure the conv engines (the Fashion CNN)")
    parser.add_argument("--conv-only", action="store_true",
                        help="measure only the conv engines; keep the MLP figures of bench/results/zeroskip.json")
    parser.add_argument("--conv-samples", type=int, default=100, help="Fashion-MNIST test images for the CNN")
    parser.add_argument("--digits-cnn", type=Path, default=None, help="a trained digits CNN manifest (default: train one)")
    parser.add_argument("--cnn-seed", type=int, default=1, help="the training seed of the digits CNN")
    args = parser.parse_args(argv)
    from bitspike.gen.plan import make_plan

    # yowasp Yosys cannot read absolute /tmp paths: the conv part builds under build/ in the repository
    conv_work = Path(__file__).resolve().parents[1] / "build" / "bench_zeroskip"
    if args.conv_only:
        data = json.loads((RESULTS / "zeroskip.json").read_text())
        # the JSON file's keys are sorted: the MLP folds back in the order a full run writes them
        data["configs"] = dict(sorted(data["configs"].items(), key=lambda kv: kv[0] != "fold auto"))
        data["conv"] = run_conv(args.conv_samples, not args.no_synth, conv_work, args.digits_cnn, args.cnn_seed)
        data["machine"] = f"{platform.machine()}, Python {platform.python_version()}"
        write_json(RESULTS / "zeroskip.json", data)
        write_markdown(data)
        return 0
    with tempfile.TemporaryDirectory(prefix="bitspike-zeroskip-") as tmp:
        work = Path(tmp)
        bsm = args.digits or train_digits(work, args.seed)
        manifest = load(bsm)
        test = load_dataset("digits", "test")
        x = images_for_manifest(test.images, manifest)
        golden = GoldenModel(manifest).run(x).logits.numpy()
        auto = make_plan(manifest)
        auto_fold = ",".join(f"{n.name}={n.pes}x{n.lanes}" for n in auto.layers if n.op == "linear")
        narrow = args.narrow or ",".join(f"{n.name}={n.pes}x{max(1, n.lanes // 4)}" for n in auto.layers
                                         if n.op == "linear")
        data = {"model": f"digits MLP ({'`' + str(args.digits) + '`' if args.digits else 'trained here, seed ' + str(args.seed)})",
                "samples": len(x), "machine": f"{platform.machine()}, Python {platform.python_version()}",
                "configs": {}}
        for label, fold in (("fold auto", auto_fold), ("fewer lanes", narrow)):
            data["configs"][label] = run_config(label.replace(" ", "-"), manifest, fold, x, golden, work,
                                                not args.no_synth)
            print(json.dumps({label: data["configs"][label]["layers"]}, indent=1))
    if args.conv:
        data["conv"] = run_conv(args.conv_samples, not args.no_synth, conv_work, args.digits_cnn, args.cnn_seed)
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "zeroskip.json", data)
    write_markdown(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
