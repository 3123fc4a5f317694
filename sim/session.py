"""A co-simulation session: samples through the cycle-accurate RTL, bit-exact against the golden model.

:func:`simulate` is what ``bitspike sim`` runs (the command,
the ``sim`` command module, only parses options and prints), callable from Python
(benchmarks, tests, notebooks) with the same options; :func:`merge_parts`
combines the partial results of ``--shard K/N`` runs. Both return a
:class:`SimSummary`: the JSON summary, its text, and whether every sample agreed.
"""

from __future__ import annotations

import logging

__all__ = ["SimSummary", "simulate", "merge_parts", "resolve_samples", "shard_bounds", "MISMATCH_LIMIT"]

log = logging.getLogger("bitspike.sim")


def shard_bounds(total: int, k: int, n: int) -> tuple[int, int]:
    """Samples ``[first, stop)`` of part ``k`` of ``n``: contiguous, sizes differing by at most one."""
    return (k - 1) * total // n, k * total // n


#: most mismatches a result lists one by one (``mismatch_count`` counts them all)
MISMATCH_LIMIT = 10_000
PART_KIND = "bitspike-sim-part"
MERGED_KIND = "bitspike-sim-merged"


class SimSummary:
    """The outcome of :func:`simulate` or :func:`merge_parts`: ``payload`` (the JSON summary), ``text()`` and ``ok``."""

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
        elif p.get("mismatches"):
            text += "; first: " + _describe_entry(p["mismatches"][0])
        return text

    def text(self) -> str:
        p = self.payload
        c = p["cycles_per_inference"]
        pred = f"; alone {c['alone']}" + (f", predicted {c['predicted']}" if c.get("predicted") is not None else "")
        what = p["dataset"]
        if p.get("part"):
            part = p["part"]
            what += f", part {part['shard'][0]}/{part['shard'][1]}: samples {part['first']} … {part['stop'] - 1}"
        if p.get("kind") == MERGED_KIND:
            what += f", merged from {len(p['parts'])} parts"
        lines = [
            f"bitspike sim: {p['model']} on {what} ({p['samples']} samples, {p['simulator']}, "
            f"{p['processes']} process{'es' if p['processes'] != 1 else ''})",
            f"  bit-exact          {p['bit_exact']}/{p['samples']} samples (logits and class)",
        ]
        if p.get("layer_exact") is not None:
            lines.append(f"  every layer        {p['layer_exact']}/{p['samples']} samples at every debug tap "
                         f"({p['tap_values']} values compared)")
        if p.get("stepped_layers"):
            from .activity import SteppedActivity

            lines += SteppedActivity.text(p["stepped_layers"])
        if p.get("zero_skip_layers"):
            from .activity import ZeroSkipActivity

            lines += ZeroSkipActivity.text(p["zero_skip_layers"])
        if p.get("hw_accuracy") is None:
            lines.append("  accuracy           no labels: bit-exact comparison only")
        else:
            lines += [f"  hardware accuracy  {100 * p['hw_accuracy']:.2f} %",
                      f"  golden accuracy    {100 * p['golden_accuracy']:.2f} %"]
        lines.append(f"  cycles/inference   min {c['min']}  median {c['median']:g}  max {c['max']} in the stream{pred}")
        if p.get("kind") != MERGED_KIND:
            lines += [
                f"  stream             interval {p['initiation_interval']['measured']:g} cycles "
                f"(predicted {p['initiation_interval']['predicted']}), {p['cycles_per_image']:.1f} cycles/image → "
                f"{p['simulated_images_per_second']:,.0f} images/s at {p['clock_mhz']:g} MHz",
                f"  wall clock         {p['images_per_second']:,.1f} images/s, "
                f"{_rate(p['sim_cycles_per_second'])} per process "
                f"(build {p['build_seconds']:.1f} s{', cached' if p['build_cached'] else ''})",
            ]
        if p.get("mismatch_count"):
            lines.append(f"  mismatches         {p['mismatch_count']} values differ"
                         + (f" (the first {len(p['mismatches'])} listed in the JSON)" if p.get("mismatches_truncated")
                            else " (all listed in the JSON)"))
        if self.divergence is not None:
            lines.append("  FIRST DIVERGENCE   " + self.divergence.describe())
        elif p.get("first_divergence"):
            lines.append("  FIRST DIVERGENCE   " + _describe_entry(p["first_divergence"]))
        elif p.get("vcd"):
            lines.append(f"  waveform           {p['vcd']}")
        return "\n".join(lines)


def _describe_entry(e: dict) -> str:
    """One line for a mismatch entry (or a stored first divergence)."""
    if "describe" in e:
        return e["describe"]
    where = f"neuron {tuple(e['neuron']) if len(e['neuron']) != 1 else e['neuron'][0]}"
    if e.get("timestep") is not None:
        where += f", timestep {e['timestep']}"
    cyc = f" at cycle {e['cycle']}" if e.get("cycle") is not None else ""
    return (f"sample {e['sample']}: layer {e['layer_index']} '{e['layer']}', {e['kind']} of {where}: "
            f"golden {e.get('golden', e.get('expected'))}, hardware {e.get('hardware', e.get('got'))}{cyc}")


def _rate(cycles_per_second: float) -> str:
    if cycles_per_second >= 1e5:
        return f"{cycles_per_second / 1e6:.2f} M cycles/s"
    return f"{cycles_per_second:,.0f} cycles/s"


def _result_mismatches(manifest, sample0: int, res, g_logits, g_classes) -> list[dict]:
    """Every differing logit and class of a run: the result beats are the last layer's accumulators."""
    import numpy as np

    last = manifest.layers[-1]
    out = []
    for i in np.nonzero(((res.logits != g_logits).any(axis=1)) | (res.classes != g_classes))[0].tolist():
        cyc = int(res.end[i])
        base = {"sample": sample0 + i, "layer": last.name, "layer_index": len(manifest.layers) - 1, "timestep": None,
                "cycle": cyc, "cycle_in_inference": cyc - int(res.start[i]), "port": "results"}
        for c in np.nonzero(res.logits[i] != g_logits[i])[0].tolist():
            out.append(dict(base, kind="logit", neuron=[c], position=c, golden=int(g_logits[i, c]),
                            hardware=int(res.logits[i, c])))
        if int(res.classes[i]) != int(g_classes[i]):
            out.append(dict(base, kind="class", neuron=[0], position=int(g_logits.shape[1]),
                            golden=int(g_classes[i]), hardware=int(res.classes[i])))
    return out


def resolve_samples(manifest, *, dataset=None, split="test", data_path=None, inputs=None, random=None,
                    images=None, labels=None, seed=1, samples=None):
    """The checked samples ``[N, *input.shape]`` (int64), their labels or ``None``, and a description.

    Exactly one source: ``images`` (an array, from Python), ``inputs`` (an .npy/.npz
    path), ``random`` (a count, seeded by ``seed``) or ``dataset`` (default digits).
    """
    import numpy as np

    from bitspike.errors import HardwareError

    from .inputs import check_inputs, load_inputs, random_inputs

    given = [k for k, v in (("images", images), ("inputs", inputs), ("random", random), ("dataset", dataset))
             if v is not None]
    if len(given) > 1:
        raise HardwareError(f"give one source of samples, not {' and '.join(given)}")
    if images is not None:
        x, source = check_inputs(images, manifest, "images"), {"kind": "array"}
        lab = None if labels is None else np.asarray(labels, dtype=np.int64)
        name = "an array"
    elif inputs is not None:
        from pathlib import Path

        x, lab = load_inputs(inputs, manifest)
        source, name = {"kind": "file", "path": str(inputs)}, Path(inputs).name
    elif random is not None:
        x, lab = random_inputs(manifest, int(random), int(seed)), None
        source, name = {"kind": "random", "count": int(random), "seed": int(seed)}, f"random inputs (seed {seed})"
    else:
        from bitspike.host.data import images_for_manifest, load_dataset

        dataset = dataset or "digits"
        ds = load_dataset(dataset, split, data_path)
        x = check_inputs(images_for_manifest(ds.images, manifest), manifest, f"{dataset} {split}")
        lab = np.asarray(ds.labels, dtype=np.int64)
        source, name = {"kind": "dataset", "name": dataset, "split": split}, dataset
    if samples is not None:
        x = x[:samples]
        lab = None if lab is None else lab[:samples]
    return x, lab, source, name


def simulate(model, *, rtl=None, dataset=None, split="test", data_path=None, samples=None, inputs=None,
             random=None, images=None, labels=None, shard=None, simulator="verilator", trace=False, vcd=None,
             processes=None, clock_mhz=100.0, stall_in=0.0, stall_out=0.0, seed=1, sequential=False,
             cache_dir=None, progress=None) -> SimSummary:
    """Run samples through the RTL of ``model`` and compare with the golden model (what ``bitspike sim`` does).

    Parameters are the command's options; ``model`` is a manifest path or a
    :class:`~bitspike.manifest.Manifest`; ``images``/``labels`` pass samples as
    arrays; ``shard`` is ``(K, N)``. Returns a :class:`SimSummary`; it does
    not raise on a mismatch (check ``.ok``).
    """
    import time
    from pathlib import Path

    import numpy as np

    from bitspike.host.golden import GoldenModel
    from bitspike.manifest import Manifest, load

    from .cosim import CoSim, rtl_for_manifest
    from .diagnose import ManifestGoldenTaps, compare_all, compare_sample, diagnose, list_mismatches, split_samples
    from .inputs import inputs_digest

    say = progress or (lambda *_: None)
    manifest = model if isinstance(model, Manifest) else load(model)
    all_images, all_labels, source, source_name = resolve_samples(
        manifest, dataset=dataset, split=split, data_path=data_path, inputs=inputs, random=random, images=images,
        labels=labels, seed=seed, samples=samples)
    total = len(all_images)
    first_index, stop = 0, total
    if shard is not None:
        first_index, stop = shard_bounds(total, *shard)
    images = all_images[first_index:stop]
    labels = None if all_labels is None else all_labels[first_index:stop]
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
    digest = cosim.design.get("manifest_digest")
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
    # latency of an inference on its own: each from reset, as the planner predicts it (in a stream, or
    # one after another, an image may also wait for rows the previous one left to finish)
    alone = [int(cosim.run(images[i:i + 1], processes=1).cycles[0])
             for i in range(min(n, 8 if simulator == "verilator" else 1))]
    exact_mask = (res.logits == g_logits).all(axis=1) & (res.classes == g_classes)
    bit_exact = int(exact_mask.sum())
    mismatches = _result_mismatches(manifest, first_index, res, g_logits, g_classes)
    mismatch_count = len(mismatches)
    payload = {
        "model": manifest.name,
        "manifest_digest": manifest.digest(),
        "rtl_digest": cosim.design.digest(),
        "dataset": source_name,
        "source": source,
        "split": split if source["kind"] == "dataset" else None,
        "inputs_digest": inputs_digest(all_images, all_labels),
        "input": {"shape": list(manifest.input.shape), "bits": int(manifest.input.bits)},
        "samples": n,
        "simulator": simulator,
        "processes": len(res.shard_starts),
        "bit_exact": bit_exact,
        "labels": labels is not None,
        "hw_accuracy": (float((res.classes == labels).mean()) if n else 0.0) if labels is not None else None,
        "golden_accuracy": (float((g_classes == labels).mean()) if n else 0.0) if labels is not None else None,
        "cycles_per_inference": {
            "min": int(res.cycles.min()) if n else 0,
            "median": float(np.median(res.cycles)) if n else 0.0,
            "max": int(res.cycles.max()) if n else 0,
            "predicted": cosim.design.cycles_per_inference,
            "alone": int(np.median(alone)) if n else 0,
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
        "trace": bool(trace),
        "layer_exact": None,
        "first_divergence": None,
        "vcd": None,
    }
    first = None
    taps = cosim.design.taps
    ref = ManifestGoldenTaps(manifest, taps) if taps else None
    layer_ok = np.ones(n, dtype=bool)
    if trace:
        if ref is None:
            from bitspike.errors import HardwareError

            raise HardwareError(f"--trace needs debug taps, and {rtl_dir} has none: regenerate it with "
                                "'bitspike gen --debug-taps' or leave out --rtl")
        say("comparing every layer through the debug taps …")
        from .activity import SteppedActivity, ZeroSkipActivity

        activity = SteppedActivity(cosim.design)
        skipping = ZeroSkipActivity(cosim.design)
        values = 0
        chunk = 256
        for lo in range(0, n, chunk):
            part = images[lo:lo + chunk]
            traced = cosim.run(part, trace=True, processes=processes, **opts)
            activity.add(traced)
            skipping.add(traced)
            seqs = ref.sequences(part)
            values += sum(len(v) for s in seqs for v in s.values())
            per_sample = split_samples(traced, seqs, taps)
            if per_sample is None:
                # a tap showed the wrong number of values: per-sample cuts are unknown
                _, d = compare_all(traced, seqs, taps, ref, first_sample=first_index + lo)
                layer_ok[lo:lo + len(part)] = False
                first = first or d
                if d is not None:
                    mismatches.append(dict(d.to_json(), golden=d.expected, hardware=d.got))
                    mismatch_count += 1
                continue
            for i, hw in enumerate(per_sample):
                d = compare_sample(first_index + lo + i, hw, seqs[i], taps, ref, int(traced.start[i]), rerun="none")
                if d is None:
                    continue
                layer_ok[lo + i] = False
                first = first or d
                entries, count = list_mismatches(first_index + lo + i, hw, seqs[i], taps, ref, int(traced.start[i]),
                                                 limit=max(0, MISMATCH_LIMIT - len(mismatches)))
                mismatches += entries
                mismatch_count += count
        payload["layer_exact"] = int(layer_ok.sum())
        payload["tap_values"] = values
        if activity.layers:  # stepped engines: their cycles follow their spikes
            payload["stepped_layers"] = activity.summary()
        if skipping.layers:  # zero-skipping engines: their cycles follow their nonzero words
            payload["zero_skip_layers"] = skipping.summary()
    bad = np.nonzero(~exact_mask)[0]
    if (len(bad) or first is not None) and ref is not None:
        local = int(bad[0]) if len(bad) else first.sample - first_index
        say(f"sample {first_index + local} differs: locating the first divergence …")
        diag_sim = cosim if simulator == "verilator" else CoSim(rtl_dir, "verilator", cache_dir=cosim.cache_dir)
        found = diagnose(diag_sim, images, local, ref, expected_logits=g_logits[local], vcd=vcd, run_options=opts)
        if found is not None:
            found.sample = first_index + local
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
        payload["first_divergence"] = dict(first.to_json(), describe=first.describe())
        payload["vcd"] = first.vcd
    mismatches.sort(key=lambda e: (e["sample"], e["layer_index"] if e["layer_index"] >= 0 else 10**9))
    payload["mismatches"] = mismatches[:MISMATCH_LIMIT]
    payload["mismatch_count"] = mismatch_count
    payload["mismatches_truncated"] = mismatch_count > len(payload["mismatches"])
    if shard is not None:
        payload["kind"] = PART_KIND
        payload["part"] = {"shard": [int(shard[0]), int(shard[1])], "first": first_index, "stop": stop,
                           "total_samples": total}
        payload["outcomes"] = {
            "exact": exact_mask.tolist(),
            "layer_exact": layer_ok.tolist() if trace else None,
            "class": res.classes.astype(int).tolist(),
            "golden_class": g_classes.astype(int).tolist(),
            "label": labels.astype(int).tolist() if labels is not None else None,
            "cycles": res.cycles.astype(int).tolist(),
        }
    return SimSummary(payload, first)


def merge_parts(paths) -> SimSummary:
    """Combine the partial results of ``bitspike sim --shard K/N --json PART`` runs into one summary.

    The parts must come from the same manifest, RTL, samples, simulator and
    trace setting, and together cover every sample exactly once; otherwise a
    :class:`HardwareError` names the part and what differs.
    """
    import json
    from pathlib import Path

    import numpy as np

    from bitspike.errors import HardwareError

    parts = []
    for p in paths:
        path = Path(p)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise HardwareError(f"--merge {path}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HardwareError(f"--merge {path}: not a JSON file ({exc})") from None
        if not isinstance(doc, dict) or doc.get("kind") != PART_KIND:
            raise HardwareError(f"--merge {path}: not a partial result (write parts with "
                                "'bitspike sim MODEL --shard K/N --json PART')")
        parts.append((path, doc))
    ref_path, ref = parts[0]
    same = ("manifest_digest", "rtl_digest", "inputs_digest", "simulator", "trace")
    for path, doc in parts[1:]:
        for key in same:
            if doc.get(key) != ref.get(key):
                raise HardwareError(f"--merge: {path} and {ref_path} differ in {key} ({doc.get(key)!r} vs "
                                    f"{ref.get(key)!r}): parts of one run share the manifest, RTL, inputs, "
                                    "simulator and --trace")
        for key in ("total_samples",):
            if doc["part"][key] != ref["part"][key]:
                raise HardwareError(f"--merge: {path} has {doc['part'][key]} samples in all, {ref_path} "
                                    f"{ref['part'][key]}: not parts of one run")
    total = int(ref["part"]["total_samples"])
    owner = np.full(total, -1, dtype=np.int64)
    for j, (path, doc) in enumerate(parts):
        lo, hi = int(doc["part"]["first"]), int(doc["part"]["stop"])
        if not 0 <= lo <= hi <= total or len(doc["outcomes"]["exact"]) != hi - lo:
            raise HardwareError(f"--merge {path}: its samples {lo} … {hi - 1} do not fit {total} samples")
        twice = np.nonzero(owner[lo:hi] >= 0)[0]
        if len(twice):
            other = parts[int(owner[lo + twice[0]])][0]
            raise HardwareError(f"--merge: sample {lo + int(twice[0])} is in both {other} and {path}: "
                                "each sample must be in exactly one part")
        owner[lo:hi] = j
    missing = np.nonzero(owner < 0)[0]
    if len(missing):
        raise HardwareError(f"--merge: {len(missing)} of {total} samples are in no part (first: sample "
                            f"{int(missing[0])}); add the missing --shard parts")
    parts.sort(key=lambda it: int(it[1]["part"]["first"]))

    def cat(key):
        vals = [d["outcomes"][key] for _, d in parts]
        return None if any(v is None for v in vals) else np.array([x for v in vals for x in v])

    exact, cls, gcls, label, cycles = cat("exact"), cat("class"), cat("golden_class"), cat("label"), cat("cycles")
    layer = cat("layer_exact") if ref.get("trace") else None
    mism = [e for _, d in parts for e in d.get("mismatches", [])]
    count = sum(int(d.get("mismatch_count", len(d.get("mismatches", [])))) for _, d in parts)
    firsts = [d["first_divergence"] for _, d in parts if d.get("first_divergence")]
    n = total
    payload = {
        "kind": MERGED_KIND,
        "model": ref["model"],
        "manifest_digest": ref["manifest_digest"],
        "rtl_digest": ref["rtl_digest"],
        "inputs_digest": ref["inputs_digest"],
        "dataset": ref["dataset"],
        "source": ref["source"],
        "split": ref.get("split"),
        "input": ref.get("input"),
        "samples": n,
        "simulator": ref["simulator"],
        "processes": sum(int(d["processes"]) for _, d in parts),
        "parts": [{"file": str(p), "shard": d["part"]["shard"], "first": d["part"]["first"],
                   "stop": d["part"]["stop"], "bit_exact": d["bit_exact"]} for p, d in parts],
        "bit_exact": int(exact.sum()) if n else 0,
        "trace": ref["trace"],
        "layer_exact": int(layer.sum()) if layer is not None else None,
        "tap_values": sum(int(d.get("tap_values", 0)) for _, d in parts) if ref.get("trace") else None,
        "labels": label is not None,
        "hw_accuracy": float((cls == label).mean()) if label is not None and n else None,
        "golden_accuracy": float((gcls == label).mean()) if label is not None and n else None,
        "cycles_per_inference": {
            "min": int(cycles.min()) if n else 0, "median": float(np.median(cycles)) if n else 0.0,
            "max": int(cycles.max()) if n else 0, "predicted": ref["cycles_per_inference"]["predicted"],
            "alone": ref["cycles_per_inference"]["alone"],
        },
        "mismatches": mism[:MISMATCH_LIMIT],
        "mismatch_count": count,
        "mismatches_truncated": count > len(mism[:MISMATCH_LIMIT]),
        "first_divergence": firsts[0] if firsts else None,
    }
    if payload["labels"] is False:
        payload["hw_accuracy"] = payload["golden_accuracy"] = None
    return SimSummary(payload)
