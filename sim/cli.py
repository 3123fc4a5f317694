"""``bitspike sim``: a data set through the cycle-accurate RTL, bit-exact against the golden model.

Prints hardware and golden accuracy, the bit-exact count, cycles per
inference, simulated throughput at a clock, and the wall-clock rate. On any
mismatch it names the first diverging layer, kind of value, neuron, timestep
and cycle, optionally writes a VCD window around it, and exits with code 3.
"""

from __future__ import annotations

import argparse
import logging

from bitspike.cli import add_common

log = logging.getLogger("bitspike.sim")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sim",
        help="co-simulate a data set through the generated RTL, bit-exact against the golden model",
        description="Stream a data set through the generated accelerator (Verilator or Icarus), compare every "
                    "sample with the integer golden model and, on a mismatch, name the first diverging layer, "
                    "neuron, timestep and cycle.",
    )
    p.add_argument("model", help="the manifest (.bsm) of the network")
    p.add_argument("--rtl", metavar="DIR", help="a folder written by 'bitspike gen' (default: generate one, with "
                                                "debug taps, into the cache)")
    p.add_argument("--dataset", default="digits", help="data set name (digits, fashion-mnist, cifar10; default digits)")
    p.add_argument("--split", default="test", choices=("train", "test"), help="data set split (default test)")
    p.add_argument("--data", "--data-path", dest="data_path", metavar="DIR", help="folder of the data set's files, where it needs one")
    p.add_argument("--samples", type=int, metavar="N", help="the first N samples (default: all)")
    p.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator")
    p.add_argument("--trace", action="store_true",
                   help="record every debug tap and compare every layer, timestep and neuron, not only the logits")
    p.add_argument("--vcd", metavar="FILE", help="write a VCD around the first divergence (or of sample 0's "
                                                 "inference when all agree)")
    p.add_argument("--processes", type=int, metavar="P", help="parallel simulator processes (default: CPUs, at most 2)")
    p.add_argument("--clock-mhz", type=float, default=100.0, help="clock for the simulated images/s (default 100)")
    p.add_argument("--stall-in", type=float, default=0.0, metavar="P", help="probability of a pixel stall per cycle")
    p.add_argument("--stall-out", type=float, default=0.0, metavar="P", help="probability of a result stall per cycle")
    p.add_argument("--seed", type=int, default=1, help="seed of the stall generator")
    p.add_argument("--sequential", action="store_true", help="one image at a time (default: pipelined stream)")
    p.add_argument("--cache-dir", metavar="DIR", help="build cache root (default ~/.cache/bitspike)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bitspike.cli import VerificationFailed, write_json
    from bitspike.errors import HardwareError

    from .cosim import SIMULATORS

    if args.samples is not None and args.samples <= 0:
        raise HardwareError(f"--samples must be a positive number of samples, not {args.samples}")
    if args.processes is not None and args.processes <= 0:
        raise HardwareError(f"--processes must be at least 1, not {args.processes}")
    if args.clock_mhz <= 0:
        raise HardwareError(f"--clock-mhz must be positive, not {args.clock_mhz}")
    assert args.simulator in SIMULATORS
    summary = simulate(
        args.model, rtl=args.rtl, dataset=args.dataset, split=args.split, data_path=args.data_path,
        samples=args.samples, simulator=args.simulator, trace=args.trace, vcd=args.vcd,
        processes=args.processes, clock_mhz=args.clock_mhz, stall_in=args.stall_in, stall_out=args.stall_out,
        seed=args.seed, sequential=args.sequential, cache_dir=args.cache_dir, progress=None if args.quiet else log.info,
    )
    print(summary.text())
    write_json(args.json, summary.payload)
    if not summary.ok:
        raise VerificationFailed(summary.failure())
    return 0


# ---- the session, callable from Python (bench/sim.py, tests) as well


class SimSummary:
    """The outcome of :func:`simulate`: ``payload`` (the JSON summary), ``text()`` and ``ok``."""

    def __init__(self, payload: dict, divergence=None):
        self.payload = payload
        self.divergence = divergence

    @property
    def ok(self) -> bool:
        p = self.payload
        layers = p.get("layer_exact")
        return p["bit_exact"] == p["samples"] and (layers is None or layers == p["samples"])

    def failure(self) -> str:
        p = self.payload
        text = f"{p['samples'] - p['bit_exact']} of {p['samples']} samples differ from the golden model"
        if p.get("layer_exact") is not None and p["layer_exact"] != p["samples"]:
            text = f"{p['samples'] - p['layer_exact']} of {p['samples']} samples differ inside the network"
        if self.divergence is not None:
            text += "; " + self.divergence.describe()
        return text

    def text(self) -> str:
        p = self.payload
        c = p["cycles_per_inference"]
        pred = f"; alone {c['alone']}" + (f", predicted {c['predicted']}" if c.get("predicted") is not None else "")
        lines = [
            f"bitspike sim: {p['model']} on {p['dataset']} ({p['samples']} samples, {p['simulator']}, "
            f"{p['processes']} process{'es' if p['processes'] != 1 else ''})",
            f"  bit-exact          {p['bit_exact']}/{p['samples']} samples (logits and class)",
        ]
        if p.get("layer_exact") is not None:
            lines.append(f"  every layer        {p['layer_exact']}/{p['samples']} samples at every debug tap "
                         f"({p['tap_values']} values compared)")
        lines += [
            f"  hardware accuracy  {100 * p['hw_accuracy']:.2f} %",
            f"  golden accuracy    {100 * p['golden_accuracy']:.2f} %",
            f"  cycles/inference   min {c['min']}  median {c['median']:g}  max {c['max']} in the stream{pred}",
            f"  stream             interval {p['initiation_interval']['measured']:g} cycles "
            f"(predicted {p['initiation_interval']['predicted']}), {p['cycles_per_image']:.1f} cycles/image → "
            f"{p['simulated_images_per_second']:,.0f} images/s at {p['clock_mhz']:g} MHz",
            f"  wall clock         {p['images_per_second']:,.1f} images/s, "
            f"{_rate(p['sim_cycles_per_second'])} per process "
            f"(build {p['build_seconds']:.1f} s{', cached' if p['build_cached'] else ''})",
        ]
        if self.divergence is not None:
            lines.append("  FIRST DIVERGENCE   " + self.divergence.describe())
        elif p.get("vcd"):
            lines.append(f"  waveform           {p['vcd']}")
        return "\n".join(lines)


def _rate(cycles_per_second: float) -> str:
    if cycles_per_second >= 1e5:
        return f"{cycles_per_second / 1e6:.2f} M cycles/s"
    return f"{cycles_per_second:,.0f} cycles/s"


def simulate(model, *, rtl=None, dataset="digits", split="test", data_path=None, samples=None,
             simulator="verilator", trace=False, vcd=None, processes=None, clock_mhz=100.0, stall_in=0.0,
             stall_out=0.0, seed=1, sequential=False, cache_dir=None, progress=None) -> SimSummary:
    """Run a data set through the RTL of ``model`` and compare with the golden model (what ``bitspike sim`` does).

    Parameters are the command's options; ``model`` is a manifest path or a
    :class:`~bitspike.manifest.Manifest`. Returns a :class:`SimSummary`; it
    does not raise on a mismatch (check ``.ok``).
    """
    import time
    from pathlib import Path

    import numpy as np

    from bitspike.host.data import images_for_manifest, load_dataset
    from bitspike.host.golden import GoldenModel
    from bitspike.manifest import Manifest, load

    from .cosim import CoSim, rtl_for_manifest
    from .diagnose import ManifestGoldenTaps, compare_all, diagnose

    say = progress or (lambda *_: None)
    manifest = model if isinstance(model, Manifest) else load(model)
    ds = load_dataset(dataset, split, data_path)
    images = images_for_manifest(ds.images, manifest)
    labels = np.asarray(ds.labels)
    if samples is not None:
        images, labels = images[:samples], labels[:samples]
    n = len(images)
    cache = Path(cache_dir) if cache_dir else None
    t0 = time.perf_counter()
    if rtl is None:
        say("generating the RTL (with debug taps) …")
        rtl_dir = rtl_for_manifest(manifest, debug_taps=True, cache_dir=None if cache is None else cache / "rtl")
    else:
        rtl_dir = Path(rtl)
    gen_seconds = time.perf_counter() - t0
    cosim = CoSim(rtl_dir, simulator, cache_dir=None if cache is None else cache / "verilator")
    digest = cosim.design.report.get("manifest_digest")
    if digest not in (None, manifest.digest()):
        log.warning("the RTL in %s was generated from another manifest (digest %s…), not %s", rtl_dir,
                    str(digest)[:12], model if not isinstance(model, Manifest) else manifest.name)
    t0 = time.perf_counter()
    build = cosim.build() if simulator == "verilator" else None
    build_seconds = time.perf_counter() - t0
    say(f"running {n} samples through {simulator} …")
    golden = GoldenModel(manifest).run_batches(images)
    g_logits, g_classes = golden.logits.numpy(), golden.classes.numpy()
    opts = dict(stall_in=stall_in, stall_out=stall_out, seed=seed, sequential=sequential)
    res = cosim.run(images, processes=processes, **opts)
    # latency of an inference on its own (in the stream, images also wait for the one before)
    alone = cosim.run(images[:8 if simulator == "verilator" else 1], processes=1, sequential=True)
    exact_mask = (res.logits == g_logits).all(axis=1) & (res.classes == g_classes)
    bit_exact = int(exact_mask.sum())
    payload = {
        "model": manifest.name,
        "manifest_digest": manifest.digest(),
        "dataset": dataset,
        "split": split,
        "samples": n,
        "simulator": simulator,
        "processes": len(res.shard_starts),
        "bit_exact": bit_exact,
        "hw_accuracy": float((res.classes == labels).mean()) if n else 0.0,
        "golden_accuracy": float((g_classes == labels).mean()) if n else 0.0,
        "cycles_per_inference": {
            "min": int(res.cycles.min()) if n else 0,
            "median": float(np.median(res.cycles)) if n else 0.0,
            "max": int(res.cycles.max()) if n else 0,
            "predicted": cosim.design.cycles_per_inference,
            "alone": int(np.median(alone.cycles)) if n else 0,
        },
        "cycles_per_image": res.total_cycles / n if n else 0.0,
        "initiation_interval": {"measured": res.initiation_interval, "predicted": cosim.design.initiation_interval},
        "sim_cycles_per_second": res.sim_cycles_per_second,
        "images_per_second": res.images_per_second,
        "simulated_images_per_second": res.simulated_images_per_second(clock_mhz * 1e6),
        "clock_mhz": clock_mhz,
        "wall_seconds": res.wall_seconds,
        "build_seconds": build_seconds + gen_seconds,
        "build_cached": bool(build.cached) if build is not None else False,
        "stalls": {"in": stall_in, "out": stall_out, "seed": seed, "sequential": sequential},
        "layer_exact": None,
        "first_divergence": None,
        "vcd": None,
    }
    first = None
    taps = cosim.design.taps
    ref = ManifestGoldenTaps(manifest, taps) if taps else None
    if trace:
        if ref is None:
            from bitspike.errors import HardwareError

            raise HardwareError(f"--trace needs debug taps, and {rtl_dir} has none: regenerate it with "
                                "'bitspike gen --debug-taps' or leave out --rtl")
        say("comparing every layer through the debug taps …")
        layer_exact, values = 0, 0
        chunk = 256
        for lo in range(0, n, chunk):
            part = images[lo:lo + chunk]
            traced = cosim.run(part, trace=True, processes=processes, **opts)
            seqs = ref.sequences(part)
            values += sum(len(v) for s in seqs for v in s.values())
            ok, d = compare_all(traced, seqs, taps, ref, first_sample=lo)
            layer_exact += ok
            if first is None and d is not None:
                first = d
        payload["layer_exact"] = layer_exact
        payload["tap_values"] = values
    bad = np.nonzero(~exact_mask)[0]
    if (len(bad) or first is not None) and ref is not None:
        sample = int(bad[0]) if len(bad) else first.sample
        say(f"sample {sample} differs: locating the first divergence …")
        diag_sim = cosim if simulator == "verilator" else CoSim(rtl_dir, "verilator", cache_dir=cosim.cache_dir)
        found = diagnose(diag_sim, images, sample, ref, expected_logits=g_logits[sample], vcd=vcd, run_options=opts)
        first = found or first
    elif len(bad):
        log.warning("%s has no debug taps: regenerate it with 'bitspike gen --debug-taps' to locate the divergence",
                    rtl_dir)
    elif vcd is not None:
        vsim = cosim if simulator == "verilator" else CoSim(rtl_dir, "verilator", cache_dir=cosim.cache_dir)
        r0 = vsim.run(images[:1], processes=1, sequential=True, vcd=vcd)
        payload["vcd"] = str(vcd)
        payload["vcd_window"] = [0, int(r0.end[0]) + 1]
    if first is not None:
        payload["first_divergence"] = first.to_json()
        payload["vcd"] = first.vcd
    return SimSummary(payload, first)
