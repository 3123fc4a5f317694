"""Benchmark: the event-driven stepped engine on a trained snnTorch network, in co-simulation and on the iCEBreaker.

The snnTorch digits MLP (``Leaky``, β = 0.9, threshold 1, subtract reset, T = 8; what
``bench/nir_import.py`` trains) is written with ``snntorch.export_to_nir``, imported with
``bitspike import --source snntorch`` at 8-bit weights (the digits test split as ``--calib``), generated
(``bitspike gen``, debug taps) and co-simulated in Verilator on all 360 test images:

- bit-exact: the hardware's logits against the golden model's, and every debug tap of every layer;
- spike rates: per stepped layer, the inputs that spiked per step (counted on the hardware's spike taps);
- cycles: each image alone (sequential), its latency and, per stepped layer, the clocks from its first
  neuron update to its last accumulator (the layer's busy window), for the event-driven design and for the
  same design with dense walks (every input queued, spike or not): the ratio is what the events save;
- the planner's prediction at the dense worst case (rate 1, what ``bitspike gen`` reports) and at the
  rates measured by the golden model on the calibration (training) split.

With ``--build`` it also builds the iCEBreaker bitstream (``bitspike build --board icebreaker``) and
records LUTs and the Fmax nextpnr reached.

With ``--fashion`` it runs the Fashion-MNIST conv network instead (snnTorch ``fashion_cnn``: Conv(1→8, 5, s2)
→ ``Leaky`` → AvgPool 2 → Flatten → Linear(288, 10) → ``Leaky``, what ``bench/snntorch_nir.py`` trains), imported
at 8- and 4-bit weights (the spike-side average pool folds into the stepped layer's weights: 1,152 stepped
inputs), each co-simulated on the first ``--samples`` Fashion test images (events, and the stepped layer
walking densely), and merges its section into the results already written (the digits rows stay). With
``--build`` it builds the 4-bit import for the iCEBreaker; ``--fashion-build-json`` records a build already
made. ``--channels N`` trains ``fashion_cnn(channels=N)`` instead of the 8-channel network (its section is
``fashion_Nch``, beside the 8-channel one; ``--fashion-bits`` the weight bits to import, the 4-bit one is
the one built): 2 channels is the one that fits the iCEBreaker's 30 block RAMs (8 need 46, 4 the planner
puts at 28). Writes ``bench/results/stepped_hw.json`` and ``.md``::

    nice python bench/stepped_hw.py --build
    python bench/stepped_hw.py --manifest model.bsm      # an imported manifest instead of training one
    nice python bench/stepped_hw.py --fashion --samples 1000 --fashion-build-json ice.json
    nice python bench/stepped_hw.py --fashion --channels 2 --fashion-bits 4 --samples 500 --fashion-build-json ice.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bitspike.gen.emit import emit_verilog
from bitspike.gen.plan import make_plan
from bitspike.gen.report import build_report
from bitspike.gen.timing import predict
from bitspike.host.data import images_for_manifest, load_dataset
from bitspike.host.golden import GoldenModel
from bitspike.io import atomic_write_text, write_json
from bitspike.manifest import load
from bitspike.ops.neuron import SteppedNode
from bitspike.sim.activity import SteppedActivity
from bitspike.sim.cosim import CoSim
from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

RESULTS = Path(__file__).resolve().parent / "results"
T = 8


def train_and_import(work: Path, seed: int) -> tuple[Path, dict]:
    import nir

    from bitspike.host import snntorch_nets as S
    from bitspike.host.nir_import import import_file

    train = load_dataset("digits", "train")
    net = S.digits_mlp(seed=seed)
    fit = S.train_snntorch(net, train.images, train.labels, timesteps=T, epochs=15, seed=seed)
    nir.write(work / "mlp.nir", S.export(net, (1, 8, 8)))
    out = work / "mlp.bsm"
    s = import_file(str(work / "mlp.nir"), str(out), source="snntorch", bits="8", timesteps=T, calib="digits")
    return out, {"seed": seed, "train_seconds": round(fit.seconds, 1), "import": s["comparison"]}


def design(manifest, out: Path | None, dense: set[str] | bool = False, rates: dict[str, float] | None = None,
           pes: int | None = None):
    """The auto plan with its stepped nodes walking densely (``dense``: all, or these names), at ``rates``, on
    ``pes`` PEs (``None``: as folded), written as a design folder with debug taps (``out``; ``None``: plan only)."""
    from bitspike.ops.base import OPS

    plan = make_plan(manifest)
    nodes = []
    for n in plan.layers:
        if isinstance(n, SteppedNode):
            layer = manifest.layer(n.name)
            if pes is not None:
                n = OPS[n.op].fold(n, layer, plan.ranges[n.name], min(pes, n.out_features), 1)
            n = replace(n, dense=dense is True or (dense is not False and n.name in dense),
                        spike_rate=(rates or {}).get(n.name, 1.0))
            n = replace(n, cycles=OPS[n.op].busy_cycles(n))
        nodes.append(n)
    plan = predict(replace(plan, layers=tuple(nodes)))
    if out is not None:
        top, files = emit_verilog(plan, out, debug_taps=True)
        build_report(plan, files, top.taps, True).write(out)
    return plan


def golden_rates(manifest, images) -> dict[str, float]:
    """Per stepped layer, the fraction of its inputs that spike per step (golden model, ``images``)."""
    g = GoldenModel(manifest)
    sums: dict[str, list[float]] = {}
    for i in range(0, len(images), 256):
        tr = g.run(images[i:i + 256], trace=True).trace
        for l in manifest.layers:
            if getattr(l, "stepped", None) is not None and l.stepped.mode == "stepped":
                s = tr[l.name].s
                sums.setdefault(l.name, [0.0, 0.0])
                sums[l.name][0] += float((s != 0).sum())
                sums[l.name][1] += float(s.numel())
    return {k: v[0] / v[1] for k, v in sums.items()}


def raised_threshold(manifest, name: str, images) -> tuple[object, float]:
    """The manifest with layer ``name``'s threshold raised by the smallest of a few factors that makes it fire at
    ≤ 20% of its inputs per step on ``images`` (golden model): a sparse layer of the same trained network."""
    neuron = manifest.layer(name).stepped
    for factor in (1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 6.0):
        net = manifest.replace_layer(name, stepped=replace(neuron, threshold=int(neuron.threshold * factor)))
        if golden_rates(net, images)[name] <= 0.2:
            return net, factor
    raise SystemExit(f"no threshold factor up to 6 makes layer {name!r} fire at ≤ 20%")


def measure(sim: CoSim, manifest, x: np.ndarray, pipelined: bool) -> dict:
    """Bit-exact count (logits and every tap), spike rates from the hardware's taps, cycles per image alone
    (sequential); with ``pipelined`` also the back-to-back stream under random stalls on both ends."""
    golden = GoldenModel(manifest).run(x)
    ref = ManifestGoldenTaps(manifest, sim.design.taps)
    sequences = ref.sequences(x)
    t0 = time.perf_counter()
    out: dict = {"samples": len(x)}
    if pipelined:
        res = sim.run(x, trace=True, stall_in=0.1, stall_out=0.1)
        out["pipelined_exact_logits"] = int((res.logits == golden.logits.numpy()).all(axis=1).sum())
        out["pipelined_exact_all_taps"] = int(compare_all(res, sequences, sim.design.taps, ref)[0])
        free = sim.run(x, processes=1)  # back to back without stalls, one stream: the initiation interval
        out["interval_median"] = free.initiation_interval
        out["interval_mean"] = float((free.end[-1] - free.end[0]) / max(1, len(x) - 1))
    seq = sim.run(x, trace=True, sequential=True)
    exact_taps, first = compare_all(seq, sequences, sim.design.taps, ref)
    activity = SteppedActivity(sim.design)
    activity.add(seq)
    layers = activity.summary()
    out.update({"exact_logits": int((seq.logits == golden.logits.numpy()).all(axis=1).sum()),
                "exact_all_taps": int(exact_taps), "first_divergence": None if first is None else first.describe(),
                "latency_mean": float(seq.cycles.mean()), "latency_max": int(seq.cycles.max()), "layers": layers,
                "seconds": round(time.perf_counter() - t0, 1)})
    return out


def build_icebreaker(bsm: Path, work: Path, timeout: int) -> dict:
    """``bitspike build --board icebreaker`` (the command's own code, in this process) and its JSON summary."""
    from bitspike.cli import EXIT_OK, main

    t0 = time.perf_counter()
    code = main(["build", str(bsm), "--board", "icebreaker", "-o", str(work / "ice"), "--json", str(work / "ice.json"),
                 "--timeout", str(timeout)])
    if code != EXIT_OK:
        return {"ok": False, "error": f"bitspike build exited with {code} (its output says why)"}
    return {"ok": True, "seconds": round(time.perf_counter() - t0, 1),
            "summary": json.loads((work / "ice.json").read_text())}


FASHION_BITS = (8, 4)
#: the Fashion import built for the iCEBreaker: 8-bit weights need ~94 kbit, beyond its 30 block RAMs
FASHION_BUILD_BITS = 4


def fashion_train_and_import(work: Path, seed: int, channels: int = 8,
                             bits_list: tuple[int, ...] = FASHION_BITS) -> tuple[dict[int, Path], dict]:  # fmt: skip
    """Train the snnTorch Fashion conv network (``channels`` conv channels) as ``bench/snntorch_nir.py`` does
    (10,000 training images, 2 epochs), export it to NIR and import it at each of ``bits_list`` (the whole
    test split as ``--calib``)."""
    import nir
    import torch

    from bitspike.host import snntorch_nets as S
    from bitspike.host.nir_import import import_file

    torch.set_num_threads(1)  # torch's float sums group by thread: one thread, the same weights on any machine
    train = load_dataset("fashion-mnist", "train")
    net = S.fashion_cnn(channels=channels, seed=seed)
    fit = S.train_snntorch(net, train.images[:10_000], train.labels[:10_000], timesteps=T, epochs=2, seed=seed)
    nir.write(work / "fashion.nir", S.export(net, (1, 28, 28)))
    paths, imports = {}, {}
    for bits in bits_list:
        paths[bits] = work / f"fashion-{bits}.bsm"
        s = import_file(str(work / "fashion.nir"), str(paths[bits]), source="snntorch", bits=str(bits), timesteps=T,
                        calib="fashion-mnist")
        imports[bits] = {"comparison": s["comparison"],
                         "layers": {l["name"]: {k: l[k] for k in ("threshold", "current_shift", "w_bits")}
                                    for l in s["layers"]}}
    return paths, {"seed": seed, "channels": channels, "train_images": 10_000, "epochs": 2, "train_seconds": round(fit.seconds, 1),
                   "imports": imports}


def fashion_run(work: Path, bsm: Path, samples: int, cache: Path) -> dict:
    """One Fashion import: its plan, widths and memories, co-simulated (events, and the stepped layers
    walking densely) on the first ``samples`` test images."""
    from bitspike.gen.folding import memory_blocks
    from bitspike.ops.base import OPS

    m = load(bsm)
    x = images_for_manifest(load_dataset("fashion-mnist", "test").images[:samples], m)
    train_x = images_for_manifest(load_dataset("fashion-mnist", "train").images[:2000], m)
    rates = golden_rates(m, train_x)
    tag = bsm.stem
    plan = design(m, work / f"{tag}-events", False)
    at_rates = design(m, None, False, rates)
    out: dict = {"manifest_digest": m.digest(), "calibration_rates": rates,
                 "engines": {n.name: {"op": n.op, "pes": n.pes, "lanes": n.lanes, "widths": dict(n.widths),
                                      "memory_bits": n.memory_bits,
                                      "ice40_block_rams": sum(memory_blocks(d, w, k, "ice40")
                                                              for d, w, k in OPS[n.op].memories(n))}
                             for n in plan.layers if n.engine},
                 "predicted": {"rate_1": plan.cycles_per_inference, "interval_rate_1": plan.initiation_interval,
                               "calibration_rates": at_rates.cycles_per_inference,
                               "interval_calibration_rates": at_rates.initiation_interval}}
    out["events"] = measure(CoSim(work / f"{tag}-events", cache_dir=cache), m, x, pipelined=True)
    print(tag, "events", json.dumps(out["events"]), flush=True)
    plan_dense = design(m, work / f"{tag}-dense", True)
    out["predicted"]["dense_all"] = {"latency": plan_dense.cycles_per_inference,
                                     "interval": plan_dense.initiation_interval}
    out["dense_all"] = measure(CoSim(work / f"{tag}-dense", cache_dir=cache), m, x, pipelined=False)
    print(tag, "dense", json.dumps(out["dense_all"]), flush=True)
    return out


def board_fold_run(work: Path, bsm: Path, samples: int, cache: Path, fold: str | None) -> dict:
    """The design ``bitspike build --board icebreaker`` builds (its fold, ``fold``, or the planner's first
    board plan; the part's DSP blocks shared out as the build does), with debug taps, co-simulated on the
    first ``samples`` Fashion test images (alone and streamed)."""
    from bitspike.gen import generate
    from bitspike.gen.boards import device_budget, get_board

    m = load(bsm)
    spec = get_board("icebreaker")
    device = device_budget(spec)
    out = work / f"{bsm.stem}-board"
    report = generate(m, out, fold=fold or "auto", max_luts=None if fold else device.lut,
                      dsp_blocks=spec.capacity.dsp, device=None if fold else device, debug_taps=True).to_json()
    x = images_for_manifest(load_dataset("fashion-mnist", "test").images[:samples], m)
    r = measure(CoSim(out, cache_dir=cache), m, x, pipelined=True)
    r["fold"] = ",".join(f"{l['name']}={l['pes']}x{l['lanes']}" for l in report["layers"] if l.get("w_bits"))
    r["predicted"] = {"rate_1": report["cycles_per_inference"], "interval_rate_1": report["initiation_interval"]}
    print(bsm.stem, "board fold", json.dumps(r), flush=True)
    return r


def fashion_markdown(f: dict) -> list[str]:
    tr = f["training"]
    c = tr.get("channels", 8)
    stepped = f"{c * 144:,}"
    lines = [
        "## Fashion-MNIST conv network" + ("" if c == 8 else f", {c} channels"),
        "",
        f"snnTorch `fashion_cnn` (Conv(1→{c}, 5, stride 2) → `Leaky` → AvgPool 2 → Flatten → Linear({c * 36}, 10) → "
        f"`Leaky`; β = 0.9, threshold 1, subtract reset, T = {T}), trained on {tr['train_images']} images, "
        f"{tr['epochs']} epochs ({tr['train_seconds']} s), exported with `export_to_nir`, imported with "
        "`--source snntorch --calib fashion-mnist`: the conv runs once on the pixels (T = 1, a squeezed "
        f"pass-through neuron), its currents feed the stepped layer n4 (the conv's {stepped} `Leaky` neurons; the "
        f"spike-side average pool folded into n4's weights, {stepped} → 10), then the stepped readout (10 → 10). "
        "Co-simulated in Verilator with debug taps on the first Fashion test images (spike rates and busy "
        "cycles as above; \"dense\": every stepped layer queueing every input)."
        + ("" if c != 8 else " The digits rows above were measured on the import before the requantizer's right "
           "shift (docs/NIR.md: the same network now imports with narrower membranes); these rows and the LUT "
           "model's on the current import."),
        "",
        "| weights | float / integer accuracy (10,000 test) | classes agree | thresholds n4, readout | "
        "membrane bits n4, readout | bit-exact alone / streamed (all taps) | dense walk bit-exact | "
        "latency alone: measured / planner (calib. rates, rate 1) | interval: measured / planner (calib., rate 1) "
        "| n4, readout spike rates | n4 busy: events / dense |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for bits, r in f["runs"].items():
        imp = tr["imports"][bits]["comparison"]
        ev, de, pr = r["events"], r["dense_all"], r["predicted"]
        n = ev["samples"]
        th = tr["imports"][bits]["layers"]  # a layer's entry has the threshold of the neuron after it
        lay = ev["layers"]
        lines.append(
            f"| {bits}-bit | {100 * imp['float_accuracy']:.2f}% / {100 * imp['int_accuracy']:.2f}% | "
            f"{imp['classes_agree']}/{imp['samples']} | {th['n0']['threshold']}, {th['n4']['threshold']} | "
            f"{r['engines']['n4']['widths']['v']}, {r['engines']['readout']['widths']['v']} | "
            f"{ev['exact_all_taps']}/{n} / {ev['pipelined_exact_all_taps']}/{n} | {de['exact_all_taps']}/{n} | "
            f"{ev['latency_mean']:.0f} / {pr['calibration_rates']} ({100 * (ev['latency_mean'] / pr['calibration_rates'] - 1):+.1f}%), "
            f"{pr['rate_1']} | {ev['interval_mean']:.0f} / {pr['interval_calibration_rates']} "
            f"({100 * (ev['interval_mean'] / pr['interval_calibration_rates'] - 1):+.1f}%), {pr['interval_rate_1']} | "
            f"{100 * lay['n4']['spike_rate']:.1f}%, {100 * lay['readout']['spike_rate']:.1f}% | "
            f"{lay['n4']['busy_cycles_mean']:.0f} / {de['layers']['n4']['busy_cycles_mean']:.0f} |")
    lines.append("")
    for bits, r in f["runs"].items():
        lines.append(f"- {bits}-bit engines (auto fold): " + "; ".join(
            f"{k} {e['op']} {e['pes']} PEs, {e['memory_bits']} weight bits, {e['ice40_block_rams']} iCE40 block RAMs "
            f"(planner)" for k, e in r["engines"].items()))
    lines.append("")
    bf = f.get("board_fold")
    if bf:
        n = bf["samples"]
        lines += [f"The {FASHION_BUILD_BITS}-bit import at the iCEBreaker build's fold ({bf['fold']}, the part's DSP "
                  f"blocks shared out as the build does), with debug taps: {bf['exact_all_taps']}/{n} bit-exact at "
                  f"every tap alone, {bf['pipelined_exact_all_taps']}/{n} streamed; latency {bf['latency_mean']:.0f} "
                  f"cycles measured ({bf['predicted']['rate_1']} planned at rate 1), interval "
                  f"{bf['interval_mean']:.0f} ({bf['predicted']['interval_rate_1']} at rate 1)" + board_rate(bf, f)
                  + ".", ""]
    ice = f.get("icebreaker")
    if ice:
        lines += [fashion_build_line(ice, f), ""]
    return lines


def board_rate(bf: dict, f: dict) -> str:
    """The images/s the measured interval gives at the clock of the build (when there is one)."""
    ice = f.get("icebreaker") or {}
    hz = (ice.get("summary") or {}).get("accel_clock_hz") if ice.get("ok") else None
    if not hz or not bf.get("interval_mean"):
        return ""
    return f": {hz / bf['interval_mean']:,.0f} images/s computed at the build's {hz / 1e6:g} MHz"


def fashion_keys(data: dict) -> list[str]:
    """The Fashion sections of the results: the 8-channel network's (``fashion``), then the smaller ones."""
    return sorted((k for k in data if k == "fashion" or k.startswith("fashion_")), key=lambda k: (k != "fashion", k))


def fashion_build_line(ice: dict, f: dict) -> str:
    if not ice.get("ok"):
        same = ", the same network" if ice.get("same_network") else ""
        why = ""
        if "engines" in f["runs"].get(str(FASHION_BUILD_BITS), {}):
            why = (" The planner's count at the auto fold: " + ", ".join(
                f"{k} {e['ice40_block_rams']}" for k, e in f["runs"][str(FASHION_BUILD_BITS)]["engines"].items())
                + f" block RAMs; the stepped layer's {f['training'].get('channels', 8) * 144:,} membranes, its two "
                  "event banks and its two current banks need block RAM at any fold, beside its weights.")
        return (f"iCEBreaker (`bitspike build --board icebreaker`, {FASHION_BUILD_BITS}-bit import{same}): "
                f"{ice['error']}{why}")
    b = ice["summary"]
    u = b.get("utilization") or {}

    def cell(kind):
        c = u.get(kind) or {}
        return f"{c.get('used')} / {c.get('available')}"

    fmax = b.get("fmax_mhz")
    ips = ((b.get("compute") or {}).get("at_clock") or {}).get("images_per_second")
    passes = "; ".join(f"{p['accelerator_fmax_mhz']} MHz at {p['accelerator_clock_mhz']} MHz"
                       for p in b.get("clock_passes") or [])
    return (f"iCEBreaker (`bitspike build --board icebreaker`, {FASHION_BUILD_BITS}-bit import, fold "
            f"{b.get('fold', '?')}, {len(b.get('overflowed_attempts') or [])} overflowed attempts): logic cells "
            f"(LUT) {cell('LUT')}, FF {cell('FF')}, BRAM {cell('BRAM')}, DSP {cell('DSP')}; place-and-route passes "
            f"(Fmax at the accelerator clock): {passes}; final "
            f"Fmax {'-' if fmax is None else f'{fmax:.1f}'} MHz (nextpnr, seed {b.get('seed')}), clock "
            f"{b.get('clock_mhz')} MHz{'' if b.get('timing_met', True) else ' (timing NOT met)'}"
            + ("" if ips is None else f"; {ips:,.0f} images/s computed at that clock (the planner's rate-1 "
                                      f"interval, {b.get('initiation_interval')} cycles: the worst case), "
                                      f"{b.get('images_per_second'):,.0f} images/s over the UART at {b.get('baud')} "
                                      "baud") + ".")


#: per manifest, the PEs per stepped layer whose engines the LUT model is compared at
LUT_FOLDS = {"digits": (1, 2, 5, 10), "digits-if": (1, 5), "fashion-4": (1, 10), "fashion-8": (1, 5)}


def if_import(work: Path) -> Path:
    """The integer IF MLP (β = 1: no leak tree) of ``snntorch_nets.integer_if_mlp``, imported: the LUT model's
    engines without a leak."""
    from bitspike.host import snntorch_nets as S
    from bitspike.host.nir_import import import_network
    from bitspike.host.nir_io import read_nir

    net = S.integer_if_mlp("subtract", seed=0)
    m, _ = import_network(read_nir(S.export(net, (1, 8, 8)), source="snntorch"), timesteps=T, input_scale=1.0)
    return m.save(work / "digits-if.bsm")


def lut_model_rows(manifests: dict[str, Path], work: Path, folds: dict[str, tuple[int, ...]] = LUT_FOLDS,
                   measured: list[dict] | None = None) -> list[dict]:
    """The stepped engines' LUT model (:func:`bitspike.ops.neuron.stepped_luts`) against Yosys ``synth_ice40``
    of each engine alone (its Verilog file, the engine as top: no other engine, no bridge), at each fold.

    ``measured``: rows of an earlier run (same manifests, by digest) whose Yosys counts are taken instead of
    synthesizing again (the model is evaluated anew)."""
    known = {(r["digest"], r["layer"], r["pes"]): r for r in measured or []}
    from bitspike.gen.synth import synthesize
    from bitspike.ops.base import OPS
    from bitspike.ops.neuron import stepped_luts

    rows = []
    for label, path in manifests.items():
        m = load(path)
        digest = m.digest()
        for pes in folds[label]:
            plan = design(m, None, False, pes=pes)
            out = work / f"{label}-{pes}"
            if not all((digest, n.name, n.pes) in known for n in plan.layers if isinstance(n, SteppedNode)):
                emit_verilog(plan, out)
            for n in plan.layers:
                if not isinstance(n, SteppedNode):
                    continue
                t0 = time.perf_counter()
                old = known.get((digest, n.name, n.pes))
                if old is not None:
                    yosys, synth_s = old["yosys"], old["synth_s"]
                else:
                    r = synthesize([out / f"{n.engine}.v"], "ice40", out / n.engine, top=f"bitspike_top.{n.engine}")
                    yosys, synth_s = r["total"], round(time.perf_counter() - t0)
                rows.append({"manifest": label, "digest": digest, "layer": n.name, "pes": n.pes,
                             "in": n.in_features, "out": n.out_features, "w_bits": n.w_bits, "widths": dict(n.widths),
                             "leak": dict(n.neuron_fields).get("leak"), "model": stepped_luts(n),
                             "model_ff": OPS[n.op].estimate_ffs(n), "yosys": yosys,
                             "synth_s": synth_s})
                print("lut model", json.dumps(rows[-1]), flush=True)
    return rows


def lut_markdown(rows: list[dict]) -> list[str]:
    lines = ["## The stepped engine's LUT model against Yosys",
             "",
             "`stepped_luts` (bitspike/ops/neuron.py, the planner's estimate of a stepped engine) against Yosys "
             "`synth_ice40 -dsp` of each stepped engine alone (its Verilog file as top: `python bench/stepped_hw.py "
             "--lut-model`). LUTs are SB_LUT4 cells (a carry chain's SB_CARRY shares its LUT's logic cell). The "
             "model before this fit gave 641 and 259 LUTs for the digits design's n3 (10 PEs) and readout "
             "(2 PEs), where Yosys counts 1,171 and 352.",
             "",
             "| network | layer | inputs → outputs | B_w | PEs | v / leak / psum bits | model LUTs | Yosys LUTs | "
             "model / Yosys | model FF | Yosys FF | Yosys BRAM / DSP |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        y, w = r["yosys"], r["widths"]
        lines.append(f"| {r['manifest']} | {r['layer']} | {r['in']} → {r['out']} | {r['w_bits']} | {r['pes']} | "
                     f"{w['v']} / {w.get('leak', '-')} / {w['psum']} | {r['model']} | {y['lut']} | "
                     f"{r['model'] / y['lut']:.2f} | {r['model_ff']} | {y['ff']} | {y['bram']} / {y['dsp']} |")
    errs = [abs(r["model"] / r["yosys"]["lut"] - 1) for r in rows]
    ff = [abs(r["model_ff"] / r["yosys"]["ff"] - 1) for r in rows]
    if errs:
        lines += ["", f"LUTs: largest error {100 * max(errs):.1f}%, mean {100 * sum(errs) / len(errs):.1f}% over "
                      f"{len(rows)} engines; FFs: largest {100 * max(ff):.1f}%, mean {100 * sum(ff) / len(ff):.1f}%."]
    return lines + [""]


def write_markdown(data: dict) -> None:
    lines = [
        "# Stepped layers in hardware: the event-driven engine on a trained snnTorch network",
        "",
        f"Generated by `python bench/stepped_hw.py{' --build' if data.get('icebreaker') else ''}`. The snnTorch digits "
        "MLP (`Leaky`, β = 0.9, threshold 1, subtract reset, T = 8), exported with `export_to_nir`, imported with "
        "`--source snntorch` at 8-bit weights, generated with debug taps and co-simulated in Verilator on the "
        "digits test images. Spike rates: the fraction of a layer's inputs that spike per step, counted on the "
        "hardware's spike taps. Busy cycles: per image run alone, the clocks from the layer's first neuron update "
        "to its last accumulator (mean over the images). \"dense\" is the same design with only that layer "
        "queueing every input, spike or not (same inputs, so the difference is the layer's own walk; a layer whose "
        "window its producer sets, as the readout's is set by the per-step currents of n3, shows little of what its "
        "walk saves). The planner "
        "predicts at rate 1 (every input spikes: the worst case `bitspike gen` reports) or at the rates the golden "
        "model measures on the training split.",
        "",
    ]
    for label, cfg in data["configs"].items():
        ev = cfg["events"]
        n = ev["samples"]
        lines += [
            f"## {label} (PEs: {', '.join(f'{k} {v}' for k, v in cfg['pes_per_layer'].items())})",
            "",
            "- spike rates on the training split (golden model): "
            + ", ".join(f"{k} {100 * v:.1f}%" for k, v in cfg["calibration_rates"].items()),
            f"- bit-exact: logits {ev['exact_logits']}/{n}, every tap of every layer {ev['exact_all_taps']}/{n} "
            f"(each image alone); streamed back to back under 10% stalls: {ev['pipelined_exact_logits']}/{n} and "
            f"{ev['pipelined_exact_all_taps']}/{n}; dense-walk designs: "
            + ", ".join(f"{k} {d['exact_all_taps']}/{n}" for k, d in cfg["dense"].items()),
            f"- latency per image alone: {ev['latency_mean']:.0f} cycles mean ({ev['latency_max']} max); planner: "
            f"{cfg['predicted']['rate_1']} at rate 1, {cfg['predicted']['calibration_rates']} at the calibration rates",
            *([f"- initiation interval, streamed back to back without stalls: {ev['interval_mean']:.0f} cycles mean "
               f"({ev['interval_median']:.0f} median); planner: {cfg['predicted']['interval_rate_1']} at rate 1, "
               f"{cfg['predicted']['interval_calibration_rates']} at the calibration rates"]
              if "interval_mean" in ev else []),
            *([f"- every stepped layer walking densely (every input queued: what rate 1 assumes): latency alone "
               f"{cfg['dense_all']['latency_mean']:.0f} cycles mean, interval {cfg['dense_all']['interval_mean']:.0f} "
               f"mean; planner: {cfg['predicted']['dense_all']['latency']} and "
               f"{cfg['predicted']['dense_all']['interval']}; bit-exact: each alone "
               f"{cfg['dense_all']['exact_all_taps']}/{n}, streamed under stalls {cfg['dense_all']['pipelined_exact_all_taps']}/{n}"]
              if "dense_all" in cfg else []),
            "",
            "| stepped layer | inputs → outputs | spike rate | busy cycles, events | busy cycles, dense | events / dense |",
            "|---|---|---|---|---|---|",
        ]
        for name, e in ev["layers"].items():
            if name not in cfg["dense"]:
                continue
            d = cfg["dense"][name]["layers"][name]
            geo = data["geometry"][name]
            lines.append(f"| {name} | {geo['in']} → {geo['out']} | {100 * e['spike_rate']:.1f}% | "
                         f"{e['busy_cycles_mean']:.0f} | {d['busy_cycles_mean']:.0f} | "
                         f"{100 * e['busy_cycles_mean'] / d['busy_cycles_mean']:.1f}% |")
        lines.append("")
    ice = data.get("icebreaker")
    if ice:
        if ice.get("ok"):
            b = ice["summary"]
            lut = (b.get("utilization") or {}).get("LUT") or {}
            fmax = b.get("fmax_mhz")
            same = "the same manifest" if b.get("manifest_digest") == data["manifest_digest"] else \
                "ANOTHER manifest (digest differs)"
            lines.append(f"iCEBreaker (`bitspike build --board icebreaker`, {same}): {lut.get('used')} / "
                         f"{lut.get('available')} LUTs ({lut.get('percent')}%), Fmax "
                         f"{'-' if fmax is None else f'{fmax:.1f}'} MHz after place and route (nextpnr), accelerator "
                         f"clock {b.get('clock_mhz')} MHz{'' if b.get('timing_met') else ' (timing NOT met)'}.")
        else:
            lines.append(f"iCEBreaker build failed: {ice['error']}")
        lines.append("")
    for key in fashion_keys(data):
        lines += fashion_markdown(data[key])
    if data.get("lut_model"):
        lines += lut_markdown(data["lut_model"]["rows"])
    lines.append(f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}.")
    atomic_write_text(RESULTS / "stepped_hw.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", help="an imported manifest (default: train and import the snnTorch MLP)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--build", action="store_true", help="also build the iCEBreaker bitstream")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds for the bitstream build")
    ap.add_argument("--build-json", metavar="FILE", help="instead of --build, record a build already made of the "
                                                         "same manifest with `bitspike build --board icebreaker "
                                                         "--json FILE`")
    ap.add_argument("--record-build", metavar="FILE", help="only add a build summary (`bitspike build --board "
                                                           "icebreaker --json FILE` of the same manifest) to the "
                                                           "results already written, and rewrite the markdown")
    ap.add_argument("--fashion", action="store_true", help="run the Fashion-MNIST conv network only and merge its "
                                                           "section into the results already written")
    ap.add_argument("--channels", type=int, default=8, help="--fashion: conv channels of the snnTorch network "
                    "(default 8; another count is recorded as its own section, fashion_<N>ch)")
    ap.add_argument("--fashion-bits", default="8,4", help="--fashion: weight bits to import, comma-separated "
                    "(default 8,4; the build is of the 4-bit import)")
    ap.add_argument("--board-fold-samples", type=int, default=0, help="--fashion: also co-simulate the 4-bit "
                    "import at the iCEBreaker build's fold on this many test images (its fold from "
                    "--fashion-build-json, else the planner's board plan)")
    ap.add_argument("--samples", type=int, default=1000, help="--fashion: test images to co-simulate (default 1000)")
    ap.add_argument("--fashion-build-json", metavar="FILE", help="--fashion: record a build already made of the "
                                                                 f"{FASHION_BUILD_BITS}-bit import (`bitspike build "
                                                                 "--board icebreaker --json FILE`)")
    ap.add_argument("--lut-model", action="store_true", help="only compare the stepped engines' LUT model with "
                                                             "Yosys synth_ice40 (digits and Fashion imports, several "
                                                             "folds) and merge it into the results already written")
    ap.add_argument("--lut-rows", metavar="FILE", help="--lut-model: take the Yosys counts of rows already measured "
                                                       "(a JSON list of lut_model_rows, same manifests by digest) "
                                                       "instead of synthesizing again")
    ap.add_argument("--fashion-build-log", metavar="FILE", help="--fashion: record a build of the same import that "
                                                                "did not fit, from its log")
    ap.add_argument("--lut-manifests", metavar="LABEL=FILE,...", help="--lut-model: these manifests (labels of "
                                                                     f"{sorted(LUT_FOLDS)}) instead of training")
    ap.add_argument("--fashion-build-manifest", metavar="FILE", help="--fashion-build-log: the manifest it built")
    args = ap.parse_args(argv)
    if args.lut_model:
        return lut_main(args)
    if args.fashion_build_log and not args.fashion:  # only record the build in the results already written
        data = json.loads((RESULTS / "stepped_hw.json").read_text())
        f = data["fashion"]
        f["icebreaker"] = fashion_build_from_log(args, f["runs"][str(FASHION_BUILD_BITS)]["manifest_digest"])
        write_json(RESULTS / "stepped_hw.json", data)
        write_markdown(data)
        return
    if args.fashion_build_json and not args.fashion:  # only record a finished build in the results already written
        data = json.loads((RESULTS / "stepped_hw.json").read_text())
        f = data["fashion" if args.channels == 8 else f"fashion_{args.channels}ch"]
        f["icebreaker"] = fashion_build_from_json(args.fashion_build_json,
                                                  f["runs"][str(FASHION_BUILD_BITS)]["manifest_digest"])
        write_json(RESULTS / "stepped_hw.json", data)
        write_markdown(data)
        return
    if args.fashion:
        return fashion_main(args)
    if args.record_build:
        data = json.loads((RESULTS / "stepped_hw.json").read_text())
        data["icebreaker"] = {"ok": True, "seconds": None, "summary": json.loads(Path(args.record_build).read_text())}
        write_json(RESULTS / "stepped_hw.json", data)
        write_markdown(data)
        return
    with tempfile.TemporaryDirectory(prefix="bitspike-stepped-") as tmp:
        work = Path(tmp)
        data: dict = {}
        if args.manifest:
            bsm = Path(args.manifest)
        else:
            bsm, data["training"] = train_and_import(work, args.seed)
        m = load(bsm)
        data["manifest_digest"] = m.digest()
        test = load_dataset("digits", "test")
        x = images_for_manifest(test.images, m)
        stepped = [l.name for l in m.layers if getattr(l, "stepped", None) is not None and l.stepped.mode == "stepped"]
        data["geometry"] = {l.name: {"in": int(l.weight.shape[1]), "out": int(l.weight.shape[0])}
                            for l in m.layers if l.name in stepped}
        train_x = images_for_manifest(load_dataset("digits", "train").images, m)
        data["calibration_rates"] = golden_rates(m, train_x)
        sparse, factor = raised_threshold(m, stepped[0], train_x)
        data["raised_threshold"] = {"layer": stepped[0], "factor": factor,
                                    "threshold": sparse.layer(stepped[0]).stepped.threshold}
        cache = work / "verilator"
        data["configs"] = {}
        configs = [("auto fold", m, None, stepped), ("one PE per stepped layer", m, 1, stepped),
                   (f"{stepped[0]} with its threshold × {factor} (firing at ≤ 20%), one PE per stepped layer", sparse,
                    1, stepped[:1])]
        for i, (label, net, pes, densify) in enumerate(configs):
            cfg: dict = {"pes": pes, "calibration_rates": golden_rates(net, train_x)}
            plan = design(net, work / f"{i}-events", False, pes=pes)
            cfg["pes_per_layer"] = {n.name: n.pes for n in plan.layers if isinstance(n, SteppedNode)}
            at_rates = design(net, None, False, cfg["calibration_rates"], pes=pes)
            cfg["predicted"] = {"rate_1": plan.cycles_per_inference, "calibration_rates": at_rates.cycles_per_inference,
                                "interval_rate_1": plan.initiation_interval,
                                "interval_calibration_rates": at_rates.initiation_interval}
            cfg["events"] = measure(CoSim(work / f"{i}-events", cache_dir=cache), net, x, pipelined=True)
            print(label, "events", json.dumps(cfg["events"]), flush=True)
            # every stepped layer walking densely: every input queued, what the rate-1 prediction assumes
            plan_dense = design(net, work / f"{i}-dense-all", True, pes=pes)
            cfg["predicted"]["dense_all"] = {"latency": plan_dense.cycles_per_inference,
                                             "interval": plan_dense.initiation_interval}
            cfg["dense_all"] = measure(CoSim(work / f"{i}-dense-all", cache_dir=cache), net, x, pipelined=True)
            print(label, "dense all", json.dumps(cfg["dense_all"]), flush=True)
            cfg["dense"] = {}
            for name in densify:  # this layer walks densely, the others as before: its own cost, same inputs
                design(net, work / f"{i}-dense-{name}", {name}, pes=pes)
                cfg["dense"][name] = measure(CoSim(work / f"{i}-dense-{name}", cache_dir=cache), net, x,
                                             pipelined=False)
                print(label, "dense", name, json.dumps(cfg["dense"][name]), flush=True)
            data["configs"][label] = cfg
        if args.build or args.build_json:
            if args.build:
                ice = build_icebreaker(bsm, work, args.timeout)
            elif Path(args.build_json).exists():
                ice = {"ok": True, "seconds": None, "summary": json.loads(Path(args.build_json).read_text())}
            else:
                ice = {"ok": False, "error": f"no build summary at {args.build_json}"}
            data["icebreaker"] = ice
            print("icebreaker", json.dumps(ice)[:2000], flush=True)
    data["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    write_json(RESULTS / "stepped_hw.json", data)
    write_markdown(data)


def lut_main(args) -> None:
    from bitspike.ops.neuron import stepped_luts

    path = RESULTS / "stepped_hw.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    measured = json.loads(Path(args.lut_rows).read_text()) if args.lut_rows else None
    with tempfile.TemporaryDirectory(prefix="bitspike-stepped-luts-") as tmp:
        work = Path(tmp)
        if args.lut_manifests:
            manifests = {k: Path(v) for k, v in (e.split("=", 1) for e in args.lut_manifests.split(","))}
        else:
            digits, _ = train_and_import(work, args.seed)
            fashion, _ = fashion_train_and_import(work, args.seed)
            manifests = {"digits": digits, "digits-if": if_import(work), "fashion-4": fashion[4],
                         "fashion-8": fashion[8]}
        rows = lut_model_rows(manifests, work, measured=measured)
    data["lut_model"] = {"rows": rows, "model_source": stepped_luts.__doc__.strip().splitlines()[0]}
    write_json(path, data)
    write_markdown(data)


def fashion_build_from_log(args, digest: str) -> dict:
    """A build that stopped at the fit check (it writes no summary): what its log says did not fit, and whether
    it built the same network as the run whose manifest has ``digest`` (the same layers under another
    manifest name count as the same: ``bitspike import`` names the manifest after its file)."""
    from bitspike.manifest import Manifest

    text = Path(args.fashion_build_log).read_text()
    lines = [ln for ln in text.splitlines() if "does not fit" in ln]
    out = {"ok": False, "error": lines[0].split("; generating again")[0].removeprefix("bitspike build: error: ") if lines else
           f"no fit report in {args.fashion_build_log}"}
    if args.fashion_build_manifest:
        built = load(args.fashion_build_manifest)
        renamed = Manifest.build("nir-import", built.input, list(built.layers), built.classes, built.info)
        out["same_network"] = digest in (built.digest(), renamed.digest())
        if not out["same_network"]:
            out["error"] += f" [built from another manifest, {built.digest()[:12]}…]"
    return out


def fashion_build_from_json(path: str, digest: str) -> dict:
    """A finished build's summary (``bitspike build --json``), if it is of the manifest with ``digest``."""
    b = json.loads(Path(path).read_text())
    if b.get("manifest_digest") != digest:
        return {"ok": False, "error": f"the build in {path} is of another manifest"}
    return {"ok": True, "seconds": None, "summary": b}


def fashion_main(args) -> None:
    path = RESULTS / "stepped_hw.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    with tempfile.TemporaryDirectory(prefix="bitspike-stepped-fashion-") as tmp:
        work = Path(tmp)
        bits_list = tuple(int(b) for b in args.fashion_bits.split(","))
        paths, training = fashion_train_and_import(work, args.seed, args.channels, bits_list)
        f: dict = {"training": training, "samples": args.samples, "runs": {}}
        for bits, bsm in paths.items():
            f["runs"][bits] = fashion_run(work, bsm, args.samples, work / "verilator")
        if args.board_fold_samples:
            fold = json.loads(Path(args.fashion_build_json).read_text()).get("fold") if args.fashion_build_json \
                else None
            f["board_fold"] = board_fold_run(work, paths[FASHION_BUILD_BITS], args.board_fold_samples,
                                             work / "verilator", fold)
        if args.build:
            f["icebreaker"] = build_icebreaker(paths[FASHION_BUILD_BITS], work, args.timeout)
        elif args.fashion_build_log:
            f["icebreaker"] = fashion_build_from_log(args, f["runs"][FASHION_BUILD_BITS]["manifest_digest"])
        elif args.fashion_build_json:
            f["icebreaker"] = fashion_build_from_json(args.fashion_build_json,
                                                      f["runs"][FASHION_BUILD_BITS]["manifest_digest"])
    key = "fashion" if args.channels == 8 else f"fashion_{args.channels}ch"
    data[key] = json.loads(json.dumps(f))  # int keys as the JSON file has them
    write_json(path, data)
    write_markdown(data)


if __name__ == "__main__":
    main()
