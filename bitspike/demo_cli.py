"""``bitspike demo``: one command from data to verified hardware, on the built-in digits data.

The demo runs the same subcommands a user would type (each stage's command
line is printed first, so the README's walkthrough is exactly this), collects
their ``--json`` summaries, draws the figures, and ends with one table.

Stages: train (digits MLP 64-64-32-10 whose every layer allocates its bits,
the first one too, target 2/2/1.5) → export → gen →
sim (the whole 360-image test set through the RTL) → build (a bitstream for
one board) → infer (a few images through the simulated board's serial line).

``--source snntorch`` brings a network from elsewhere instead: train an
snnTorch ``Leaky`` digits MLP (β = 0.9, T = 8) and write it with
``snntorch.export_to_nir`` → ``bitspike import`` (``--source snntorch``,
8-bit weights) → gen (event-driven stepped engines, debug taps) → sim
(``--trace``: every layer bit-exact, the stepped layers' spike rates and
cycles) → build.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the demo's network and target: three layers whose bits are all allocated (the first one's input stays
#: 8-bit pixels), and an average of 1.5 timesteps, which no uniform allocation meets: the layers must differ
HIDDEN = "64,32"
TARGET = "2/2/1.5"
TITLE = f"digits MLP 64-{HIDDEN.replace(',', '-')}-10, every layer's bits allocated, target {TARGET}"


def register(sub: argparse._SubParsersAction) -> None:
    from .cli import add_common

    p = sub.add_parser(
        "demo",
        help="train → export → gen → co-simulate → build → infer, on the digits data",
        description="The whole of bitspike on the built-in digits data, ending with one summary table.",
    )
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="where every artifact goes (default: runs/demo)")
    p.add_argument("--board", default="icebreaker", help="board to build a bitstream for (default: icebreaker; 'none' skips the build)")
    p.add_argument("--quick", action="store_true", help="fewer epochs and samples: a smoke run of every stage")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the trainer's digits default; --quick: 4)")
    p.add_argument("--infer-samples", type=int, default=20, help="images sent through the simulated board (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source", choices=("bitspike", "snntorch"), default="bitspike",
                   help="'bitspike' (default): train with bitspike; 'snntorch': train an snnTorch Leaky MLP, "
                        "export it to NIR and import it (bitspike import --source snntorch)")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True, help="write the figures (default on)")
    add_common(p)
    p.set_defaults(func=run)


@dataclass
class Stage:
    name: str
    argv: list[str]
    json_path: Path
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class DemoFailed(Exception):
    pass


def _run_stage(stage: Stage, index: int, total: int, quiet: bool) -> None:
    from .cli import EXIT_OK, main

    banner = f"[{index}/{total}] {stage.name}: bitspike {' '.join(shlex.quote(a) for a in stage.argv)}"
    print("\n" + banner, flush=True)
    print("-" * min(len(banner), 100), flush=True)
    t0 = time.perf_counter()
    code = main(stage.argv + (["-q"] if quiet else []))
    stage.seconds = time.perf_counter() - t0
    if code != EXIT_OK:
        raise DemoFailed(f"stage '{stage.name}' failed with exit code {code} (command above); its output says why")
    if stage.json_path.exists():
        stage.summary = json.loads(stage.json_path.read_text())
    print(f"[{index}/{total}] {stage.name} done in {stage.seconds:.1f} s", flush=True)


def _get(d: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def _pct(value: Any) -> str:
    if value is None:
        return "-"
    value = float(value)
    return f"{100 * value:.2f}%" if value <= 1.0 else f"{value:.2f}%"


def run(args) -> int:
    from .io import write_json
    from .errors import BitspikeError
    from .manifest_cli import format_table

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.source == "snntorch":
        return _run_snntorch(args, out)
    run_dir = out / "train"
    model = out / "digits.bsm"
    rtl = out / "rtl"
    epochs = args.epochs if args.epochs is not None else (4 if args.quick else None)
    train_argv = ["train", "--dataset", "digits", "--arch", "mlp", "--hidden", HIDDEN, "--first-layer", "learn",
                  "--target", TARGET, "--seed", str(args.seed), "--out", str(run_dir), "--json", str(out / "train.json")]
    if epochs is not None:
        train_argv += ["--epochs", str(epochs)]
    if (run_dir / "checkpoint.ckpt").exists():
        train_argv.append("--resume")  # a finished run resumes as a no-op; an interrupted one carries on
    sim_samples = 64 if args.quick else 360
    stages = [
        Stage("train", train_argv, out / "train.json"),
        Stage("export", ["export", str(run_dir), "-o", str(model), "--json", str(out / "export.json")], out / "export.json"),
        Stage("gen", ["gen", str(model), "-o", str(rtl), "--json", str(out / "gen.json")], out / "gen.json"),
        Stage("sim", ["sim", str(model), "--rtl", str(rtl), "--dataset", "digits", "--samples", str(sim_samples),
                      "--json", str(out / "sim.json")], out / "sim.json"),
    ]
    if args.board != "none":
        stages.append(Stage("build", ["build", str(model), "--board", args.board, "-o", str(out / "build"),
                                      "--json", str(out / "build.json")], out / "build.json"))
    stages.append(Stage("infer", ["infer", str(model), "--board", "sim", "--dataset", "digits",
                                  "--samples", str(args.infer_samples), "--json", str(out / "infer.json")], out / "infer.json"))
    t0 = time.perf_counter()
    try:
        for i, stage in enumerate(stages, 1):
            _run_stage(stage, i, len(stages), args.quiet)
    except DemoFailed as exc:
        raise BitspikeError(str(exc)) from None
    by = {s.name: s.summary for s in stages}
    figures = _figures(out, model, by) if args.plots else {}
    summary = _summary(by, stages, out, figures, time.perf_counter() - t0)
    rows = [[k, v] for k, v in summary["table"]]
    print("\n" + "=" * 72)
    print(f"bitspike demo: {TITLE}")
    print("=" * 72)
    print(format_table(["", "value"], rows, align="ll"))
    write_json(args.json or out / "demo.json", summary)
    sim = by.get("sim", {})
    exact, n = sim.get("bit_exact"), sim.get("samples")
    if exact is not None and exact != n:
        from .cli import VerificationFailed

        raise VerificationFailed(f"hardware and golden model disagree on {n - exact} of {n} test images")
    return 0


def _figures(out: Path, model_path: Path, by: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Spikes per layer/timestep (golden trace on the test set) and resources per engine."""
    import numpy as np

    from .figures import bits_over_epochs, resources_per_engine, spikes_per_layer
    from .host.data import images_for_manifest, load_dataset
    from .host.golden import GoldenModel
    from .manifest import load

    figs: dict[str, str] = {}
    m = load(model_path)
    test = load_dataset("digits", "test")
    trace = GoldenModel(m).run(images_for_manifest(test.images, m).astype(np.int64), trace=True).trace
    figs["spikes"] = str(spikes_per_layer(trace, out / "figures" / "spikes_per_layer.png", m))
    from .gen.report import read_report

    rtl_report = out / "rtl" / "report.json"  # the generator's own report: Yosys figures when it synthesized
    synth = (read_report(rtl_report, check_files=False).synthesis if rtl_report.exists() else None) or {}
    modules = synth.get("modules") or {}
    if modules:
        rows = [{"name": name, "resources": counts} for name, counts in modules.items()]
        title = f"Resources per engine (Yosys, {synth.get('target')})"
        figs["resources"] = str(resources_per_engine(rows, out / "figures" / "resources_per_engine.png", title=title))
    metrics = out / "train" / "metrics.json"
    if metrics.exists():
        history = json.loads(metrics.read_text())["epochs"]
        figs["bits_per_layer"] = str(bits_over_epochs(history, out / "figures" / "bits_per_layer.png",
                                                      title=f"Learned bits per layer ({TITLE})"))
    for png in sorted((out / "train").glob("*.png")):
        figs[png.stem] = str(png)
    return figs


def _summary(by: dict[str, dict[str, Any]], stages: list[Stage], out: Path, figures: dict[str, str], wall: float) -> dict[str, Any]:
    exp, gen, sim, build, infer = (by.get(k, {}) for k in ("export", "gen", "sim", "build", "infer"))
    layers = exp.get("layers") or []
    bits = ", ".join(f"{l['name']} {l['w_bits']}/{l['s_bits']}/{l['timesteps']}" for l in layers)
    util = _get(build, "utilization") or {}

    def used(kind: str) -> str:
        u = util.get(kind) or {}
        if not u:
            return "-"
        return f"{u.get('used')} / {u.get('available')} ({u.get('percent')}%)"

    cyc = sim.get("cycles_per_inference") or {}
    table = [
        ("float accuracy (fake-quant PyTorch)", _pct(exp.get("float_accuracy"))),
        ("deploy accuracy (integer golden model)", _pct(exp.get("deploy_accuracy"))),
        ("hardware accuracy (RTL, Verilator)", _pct(sim.get("hw_accuracy"))),
        ("bit-exact (RTL vs golden)", f"{sim.get('bit_exact')}/{sim.get('samples')}"),
        ("learned bits per layer (W/S/T)", bits or "-"),
        ("average bits W / S / T (allocated layers)",
         "/".join(f"{(exp.get('avg_bits') or {}).get(k, float('nan')):.2f}" for k in "wst")),
        ("bit budget", f"{exp.get('bit_budget', 0):.2f}"),
        ("S-ACE per inference", f"{exp.get('s_ace', 0):,}"),
        ("weight memory (bits)", f"{exp.get('weight_memory_bits', 0):,}"),
        ("cycles per inference (predicted)", str(gen.get("cycles_per_inference", "-"))),
        ("cycles per inference (RTL min/median/max)",
         f"{cyc.get('min')}/{cyc.get('median')}/{cyc.get('max')}" if isinstance(cyc, dict) else str(cyc)),
    ]
    if build:
        at_clock = _get(build, "compute", "at_clock") or {}
        fmax = build.get("fmax_mhz")
        table += [
            (f"{build.get('device', build.get('board'))}: LUT", used("LUT")),
            ("FF", used("FF")),
            ("BRAM", used("BRAM")),
            ("DSP", used("DSP")),
            ("Fmax (nextpnr) / board clock",
             f"{fmax:.1f} / {build.get('clock_mhz')} MHz" + (" (met)" if build.get("timing_met") else " (NOT met)")
             if fmax is not None else "-"),
            ("cycles per inference on the board's fold", str(build.get("cycles_per_inference", "-"))),
            ("latency per inference at the board clock",
             f"{1e6 * at_clock['latency_s']:.1f} µs, {at_clock['images_per_second']:,.0f} images/s" if at_clock else "-"),
            ("bitstream", str(Path(out) / "build" / str(build.get("bitstream", "-")))),
        ]
    table += [
        ("simulated board over the serial line", f"{infer.get('agree')}/{infer.get('samples')} agree with golden"),
        ("stage times", ", ".join(f"{s.name} {s.seconds:.0f}s" for s in stages)),
        ("total wall time", f"{wall:.0f} s"),
        ("artifacts", str(out)),
    ]
    table += [(f"figure: {k}", v) for k, v in figures.items()]
    return {"table": table, "stages": {s.name: {"argv": s.argv, "seconds": s.seconds, "summary": s.summary} for s in stages},
            "figures": figures, "wall_s": wall}


# ---- --source snntorch: a network trained elsewhere, through NIR

#: the snnTorch network's timesteps and weight bits
SNN_T = 8
SNN_BITS = "8"


def _train_snntorch(out: Path, epochs: int, seed: int) -> dict[str, Any]:
    """Train the snnTorch digits MLP and write it with ``export_to_nir`` (the user's side of the hand-over)."""
    import nir

    from .host import snntorch_nets as S
    from .host.data import load_dataset

    train = load_dataset("digits", "train")
    net = S.digits_mlp(seed=seed)
    fit = S.train_snntorch(net, train.images, train.labels, timesteps=SNN_T, epochs=epochs, seed=seed,
                           threads=1)  # one thread: the same network whatever the core count
    nir.write(out / "digits.nir", S.export(net, (1, 8, 8)))
    return {"epochs": fit.epochs, "seconds": fit.seconds, "loss": fit.loss, "nir": str(out / "digits.nir")}


def _run_snntorch(args, out: Path) -> int:
    from .errors import BitspikeError
    from .io import write_json
    from .manifest_cli import format_table

    epochs = args.epochs if args.epochs is not None else (3 if args.quick else 15)
    nir_path, model, rtl = out / "digits.nir", out / "digits.bsm", out / "rtl"
    sim_samples = 64 if args.quick else 360
    stages = [
        Stage("import", ["import", str(nir_path), "-o", str(model), "--source", "snntorch", "--bits", SNN_BITS,
                         "--timesteps", str(SNN_T), "--calib", "digits", "--json", str(out / "import.json")],
              out / "import.json"),
        Stage("gen", ["gen", str(model), "-o", str(rtl), "--debug-taps", "--json", str(out / "gen.json")],
              out / "gen.json"),
        Stage("sim", ["sim", str(model), "--rtl", str(rtl), "--dataset", "digits", "--samples", str(sim_samples),
                      "--trace", "--json", str(out / "sim.json")], out / "sim.json"),
    ]
    if args.board != "none":
        stages.append(Stage("build", ["build", str(model), "--board", args.board, "-o", str(out / "build"),
                                      "--json", str(out / "build.json")], out / "build.json"))
    total = len(stages) + 1
    t0 = time.perf_counter()
    print(f"\n[1/{total}] train snnTorch: Leaky digits MLP (β = 0.9, T = {SNN_T}, {epochs} epochs) → "
          f"export_to_nir → {nir_path}", flush=True)
    train = _train_snntorch(out, epochs, args.seed)
    print(f"[1/{total}] train snnTorch done in {train['seconds']:.1f} s", flush=True)
    try:
        for i, stage in enumerate(stages, 2):
            _run_stage(stage, i, total, args.quiet)
    except DemoFailed as exc:
        raise BitspikeError(str(exc)) from None
    by = {s.name: s.summary for s in stages}
    imp, sim, build = (by.get(k, {}) for k in ("import", "sim", "build"))
    cmp_ = imp.get("comparison") or {}
    cyc = sim.get("cycles_per_inference") or {}
    table = [
        ("snnTorch float accuracy", _pct(cmp_.get("float_accuracy"))),
        (f"integer accuracy ({SNN_BITS}-bit weights, golden model)", _pct(cmp_.get("int_accuracy"))),
        ("same class as snnTorch", f"{cmp_.get('classes_agree')}/{cmp_.get('samples')}"),
        ("hardware accuracy (RTL, Verilator)", _pct(sim.get("hw_accuracy"))),
        ("bit-exact (RTL vs golden: logits / every tap)",
         f"{sim.get('bit_exact')}/{sim.get('samples')} / {sim.get('layer_exact')}/{sim.get('samples')}"),
        ("cycles per inference (RTL min/median/max)",
         f"{cyc.get('min')}/{cyc.get('median')}/{cyc.get('max')}" if isinstance(cyc, dict) else str(cyc)),
    ]
    for name, st in (sim.get("stepped_layers") or {}).items():
        table.append((f"stepped layer {name}: spike rate, busy cycles",
                      f"{100 * st['spike_rate']:.1f}%, {st['busy_cycles_mean']:.0f}"))
    if build:
        util = _get(build, "utilization", "LUT") or {}
        fmax = build.get("fmax_mhz")
        table += [(f"{build.get('device', build.get('board'))}: LUT",
                   f"{util.get('used')} / {util.get('available')}" if util else "-"),
                  ("Fmax (nextpnr)", f"{fmax:.1f} MHz" if fmax is not None else "-")]
    wall = time.perf_counter() - t0
    table += [("stage times", ", ".join([f"train {train['seconds']:.0f}s"] + [f"{s.name} {s.seconds:.0f}s"
                                                                           for s in stages])),
              ("total wall time", f"{wall:.0f} s"), ("artifacts", str(out))]
    print("\n" + "=" * 72)
    print("bitspike demo: snnTorch digits MLP → NIR → bitspike → RTL")
    print("=" * 72)
    print(format_table(["", "value"], [[k, v] for k, v in table], align="ll"))
    write_json(args.json or out / "demo.json", {"table": table, "train": train, "wall_s": wall,
                           "stages": {s.name: {"argv": s.argv, "seconds": s.seconds, "summary": s.summary}
                                      for s in stages}})
    ok = sim.get("bit_exact") == sim.get("samples") and sim.get("layer_exact") == sim.get("samples")
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    from .cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
