"""First-divergence diagnosis: where exactly the hardware and the golden model part ways.

When a sample's logits differ, the sample is run again through the RTL with
every debug tap recorded (alone, from reset, so cycles are easy to read; and
if the difference only shows in the original stream, the whole prefix of the
stream up to that sample). Each tap's values are compared, in stream order,
with the golden model's trace re-ordered the same way. Layers are checked in
network order, and inside a layer its input current, spikes, accumulators and
output in that order, so the first difference found is the *cause*, not one of
its downstream consequences. The report names the layer, the kind of value,
the neuron (channel, row, column or index), the timestep for spikes, the
clock cycle, and the expected and actual integers; a VCD of a window of
cycles around it is written on request.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from bitspike.errors import HardwareError
from bitspike.gen.report import TapView

from .cosim import CoSim, CoSimResult

__all__ = [
    "Divergence",
    "GoldenTaps",
    "ManifestGoldenTaps",
    "compare_sample",
    "compare_all",
    "list_mismatches",
    "split_samples",
    "int_array",
    "diagnose",
    "KIND_ORDER",
]

#: the order in which values flow through one layer
KIND_ORDER = {"x": 0, "spk": 1, "acc": 2, "out": 3, "cnt": 3}  # cnt: a fused layer's out (the next layer's counts)


@dataclass
class Divergence:
    """The first place where hardware and golden model disagree.

    Attributes
    ----------
    sample
        Index of the sample in the run's data.
    layer, layer_index
        The manifest layer (name, position) whose tap differs first;
        ``"results"`` / −1 when every tap agreed but the result beats did not.
    kind
        ``x`` (input current), ``spk`` (spikes), ``acc`` (accumulator), ``out``
        (output current), or ``logit`` / ``class``.
    neuron
        The element: ``(channel, row, column)`` for feature maps, ``(index,)`` for vectors.
    timestep
        For spikes, the timestep t (0 first); else ``None``.
    position
        Index of the value in the tap's stream for this sample.
    expected, got
        The golden and the hardware integer (``None`` when a value is missing or extra).
    cycle
        The clock cycle the hardware produced it, counted from the end of reset
        in the re-run described by ``rerun``.
    cycle_in_inference
        The same cycle counted from the sample's first accepted pixel.
    rerun
        ``"alone"`` (the sample by itself, sequential) or ``"prefix"`` (samples 0 … sample, as in the run);
        ``"none"`` when found in the original traced run.
    port
        The debug tap's port name.
    vcd
        The VCD file written around the cycle, if any.
    vcd_window
        The first and last cycle in the VCD.
    spike_expected, spike_got
        For packed spike beats, the spike of ``timestep`` alone (``expected``/``got`` hold the whole beat).
    """

    sample: int
    layer: str
    layer_index: int
    kind: str
    neuron: tuple[int, ...]
    timestep: int | None
    position: int
    expected: int | None
    got: int | None
    cycle: int | None
    cycle_in_inference: int | None = None
    rerun: str = "alone"
    port: str = ""
    vcd: str | None = None
    vcd_window: tuple[int, int] | None = None
    spike_expected: int | None = None
    spike_got: int | None = None

    def describe(self) -> str:
        """One human sentence."""
        what = {"x": "input current", "spk": "spike", "acc": "accumulator", "out": "output current",
                "logit": "logit", "class": "class"}.get(self.kind, self.kind)
        where = f"neuron {_fmt_neuron(self.neuron)}"
        if self.timestep is not None:
            where += f", timestep {self.timestep}"
        exp = "nothing" if self.expected is None else str(self.expected)
        got = "nothing" if self.got is None else str(self.got)
        if self.spike_expected is not None and self.spike_got is not None:
            exp, got = str(self.spike_expected), f"{self.spike_got} (packed beat {self.got}, expected {self.expected})"
        cyc = "" if self.cycle is None else (
            f" at cycle {self.cycle}" + (f" ({self.cycle_in_inference} into the inference)"
                                         if self.cycle_in_inference is not None else "")
        )
        text = (f"sample {self.sample}: first divergence in layer {self.layer_index} '{self.layer}', "
                f"{what} of {where}: expected {exp}, hardware gave {got}{cyc}")
        if self.port:
            text += f" [tap {self.port}, value #{self.position}, re-run {self.rerun}]"
        if self.vcd:
            text += f"; waveform of cycles {self.vcd_window[0]}…{self.vcd_window[1]} in {self.vcd}"
        return text

    def to_json(self) -> dict:
        d = asdict(self)
        d["neuron"] = list(self.neuron)
        d["vcd_window"] = list(self.vcd_window) if self.vcd_window else None
        return d


def _fmt_neuron(n: tuple[int, ...]) -> str:
    if len(n) == 3:
        return f"(channel {n[0]}, row {n[1]}, column {n[2]})"
    return str(n[0]) if len(n) == 1 else str(tuple(n))


class GoldenTaps(Protocol):
    """What the diagnosis needs from a reference model."""

    def sequences(self, images: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Per image, per tap port, the values the tap must show, in stream order."""

    def locate(self, tap: TapView, position: int, count: int, expected: int | None,
               got: int | None) -> tuple[tuple[int, ...], int | None]:
        """The neuron and timestep of value ``position`` (of ``count`` per image) of ``tap``."""


class ManifestGoldenTaps:
    """Golden tap sequences from :class:`bitspike.host.golden.GoldenModel` for a manifest's design.

    The values and their order come from the generator's own
    :func:`bitspike.gen.interface.golden_tap_sequence`, so the comparison
    follows whatever stream order and spike packing the design uses.

    Parameters
    ----------
    manifest
        The network the design was generated from (the *intended* network,
        when checking a design that may be faulty).
    taps
        The design's taps (``DesignInfo.taps``).
    """

    def __init__(self, manifest, taps: Sequence[TapView]):
        from bitspike.host.golden import GoldenModel

        self.manifest = manifest
        self.taps = tuple(taps)
        self.model = GoldenModel(manifest, check_ranges=False)
        for tap in self.taps:
            self._layer(tap)

    def __repr__(self) -> str:
        return f"ManifestGoldenTaps({self.manifest!r}, taps=<{len(self.taps)}>)"

    def _layer(self, tap: TapView):
        try:
            layer = self.manifest.layers[tap.index]
        except IndexError:
            raise HardwareError(f"tap {tap.port} names layer index {tap.index}, but the manifest has "
                                f"{len(self.manifest.layers)} layers: is this the design of that manifest?") from None
        if layer.name != tap.layer:
            raise HardwareError(f"tap {tap.port} is for layer '{tap.layer}', but manifest layer {tap.index} is "
                                f"'{layer.name}': the design was generated from another manifest")
        if tap.kind not in KIND_ORDER:
            raise HardwareError(f"tap {tap.port} has unknown kind {tap.kind!r}; expected one of {sorted(KIND_ORDER)}")
        return layer

    def sequences(self, images: np.ndarray) -> list[dict[str, np.ndarray]]:
        from bitspike.gen.interface import golden_tap_sequence

        trace = self.model.run(images, trace=True).trace
        return [
            {tap.port: int_array(golden_tap_sequence(self.manifest, trace, i, layer=tap.layer, kind=tap.kind))
             for tap in self.taps}
            for i in range(len(images))
        ]

    def unpack(self, tap: TapView, beat: int, timestep: int, count: int) -> int:
        """The spike of ``timestep`` in a spike beat (``count`` beats per image tell whether beats are packed)."""
        from bitspike.gen.interface import stream_order

        layer = self._layer(tap)
        if count != len(stream_order(self.manifest, layer.inputs[0])):
            return beat  # one spike per beat
        bits = int(layer.s_bits)
        return (beat >> (timestep * bits)) & ((1 << bits) - 1)

    def locate(self, tap: TapView, position: int, count: int, expected: int | None = None,
               got: int | None = None) -> tuple[tuple[int, ...], int | None]:
        from bitspike.gen.interface import stream_order

        layer = self._layer(tap)
        if tap.kind in ("x", "spk"):
            order, shape = stream_order(self.manifest, layer.inputs[0]), tuple(layer.in_shape)
        else:
            order, shape = stream_order(self.manifest, layer.name), tuple(layer.out_shape)
        timestep = None
        element = position
        stepped = getattr(layer, "stepped", None)
        if stepped is not None and stepped.mode == "stepped" and count > len(order):
            # a stepped engine's per-step values come step-major (rtl_templates/stepped.py)
            timestep, element = divmod(position, len(order))
        elif tap.kind == "spk":
            steps = int(getattr(layer, "timesteps", 1))
            if count == len(order):
                # one beat per element, its T spikes packed (t = 0 in the lowest s_bits bits)
                if expected is not None and got is not None:
                    bits = int(layer.s_bits)
                    mask = (1 << bits) - 1
                    timestep = next((t for t in range(steps)
                                     if ((expected >> (t * bits)) ^ (got >> (t * bits))) & mask), None)
            else:
                element, timestep = divmod(position, steps)
        if element >= len(order):
            return (element,), timestep
        return tuple(int(v) for v in np.unravel_index(int(order[element]), shape)), timestep


def int_array(values) -> np.ndarray:
    """Integers as an int64 array, or an object array of Python ints when one does not fit int64
    (packed spikes of T·B_s ≥ 64 bits, wide accumulators): compared exactly either way."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values.astype(np.int64)
    vals = [int(v) for v in values]
    if all(-(2**63) <= v < 2**63 for v in vals):
        return np.asarray(vals, dtype=np.int64)
    out = np.empty(len(vals), dtype=object)
    out[:] = vals
    return out


def _ordered(taps: Sequence[TapView]) -> list[tuple[int, TapView]]:
    return sorted(enumerate(taps), key=lambda it: (it[1].index, KIND_ORDER.get(it[1].kind, 9), it[0]))


def compare_sample(sample: int, hw: dict[str, tuple[np.ndarray, np.ndarray]], golden: dict[str, np.ndarray],
                   taps: Sequence[TapView], ref: GoldenTaps, start_cycle: int | None = None,
                   rerun: str = "alone") -> Divergence | None:
    """The first divergence of one sample's taps (``hw``: port → (values, cycles)), or ``None`` if all agree."""
    for _, tap in _ordered(taps):
        vals, cycles = hw[tap.port]
        exp = int_array(golden[tap.port])
        n = min(len(vals), len(exp))
        diff = np.nonzero(vals[:n] != exp[:n])[0]
        if len(diff):
            pos = int(diff[0])
        elif len(vals) != len(exp):
            pos = n  # a value missing or one too many
        else:
            continue
        e = int(exp[pos]) if pos < len(exp) else None
        g = int(vals[pos]) if pos < len(vals) else None
        neuron, t = ref.locate(tap, min(pos, max(len(exp) - 1, 0)), len(exp), e, g)
        cyc = int(cycles[pos]) if pos < len(cycles) else (int(cycles[-1]) if len(cycles) else None)
        spikes = (None, None)
        unpack = getattr(ref, "unpack", None)  # optional: references whose spike beats are packed
        if tap.kind == "spk" and t is not None and e is not None and g is not None and unpack is not None:
            spikes = (unpack(tap, e, t, len(exp)), unpack(tap, g, t, len(exp)))
        return Divergence(
            sample=sample, layer=tap.layer, layer_index=tap.index, kind=tap.kind, neuron=neuron, timestep=t,
            position=pos, expected=e, got=g, cycle=cyc,
            cycle_in_inference=(cyc - start_cycle) if (cyc is not None and start_cycle is not None) else None,
            rerun=rerun, port=tap.port, spike_expected=spikes[0], spike_got=spikes[1],
        )
    return None


def list_mismatches(sample: int, hw: dict[str, tuple[np.ndarray, np.ndarray]], golden: dict[str, np.ndarray],
                    taps: Sequence[TapView], ref: GoldenTaps, start_cycle: int | None = None,
                    limit: int = 1000) -> tuple[list[dict], int]:
    """Every value where one sample's taps differ from the golden model (not only the first).

    Returns
    -------
    entries, total
        Up to ``limit`` dicts (sample, layer, layer_index, kind, port, neuron, timestep, position, cycle,
        cycle_in_inference, golden, hardware; ``None`` for a missing or extra value), in
        network order, and how many differences there are in all.
    """
    out: list[dict] = []
    total = 0
    for _, tap in _ordered(taps):
        vals, cycles = hw[tap.port]
        exp = int_array(golden[tap.port])
        n = min(len(vals), len(exp))
        diff = np.nonzero(vals[:n] != exp[:n])[0].tolist() + list(range(n, max(len(vals), len(exp))))
        total += len(diff)
        for pos in diff:
            if len(out) >= limit:
                break
            e = int(exp[pos]) if pos < len(exp) else None
            g = int(vals[pos]) if pos < len(vals) else None
            neuron, t = ref.locate(tap, min(pos, max(len(exp) - 1, 0)), len(exp), e, g)
            cyc = int(cycles[pos]) if pos < len(cycles) else None
            out.append({"sample": sample, "layer": tap.layer, "layer_index": tap.index, "kind": tap.kind,
                        "port": tap.port, "neuron": list(neuron), "timestep": t, "position": pos, "cycle": cyc,
                        "cycle_in_inference": (cyc - start_cycle) if cyc is not None and start_cycle is not None
                        else None, "golden": e, "hardware": g})
    return out, total


def split_samples(result: CoSimResult, golden: list[dict[str, np.ndarray]],
                  taps: Sequence[TapView]) -> list[dict[str, tuple[np.ndarray, np.ndarray]]] | None:
    """Cut a traced run's tap records per sample by the golden counts; ``None`` when a tap's total is off."""
    split: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for tap in taps:
        vals, cyc = result.taps[tap.port]
        counts = [len(g[tap.port]) for g in golden]
        if sum(counts) != len(vals):
            return None
        edges = np.cumsum([0, *counts])
        split[tap.port] = [(vals[edges[i]:edges[i + 1]], cyc[edges[i]:edges[i + 1]]) for i in range(len(golden))]
    return [{p: split[p][i] for p in split} for i in range(len(golden))]


def compare_all(result: CoSimResult, golden: list[dict[str, np.ndarray]], taps: Sequence[TapView],
                ref: GoldenTaps, first_sample: int = 0) -> tuple[int, Divergence | None]:
    """Compare a traced run of many samples with their golden sequences.

    Returns
    -------
    exact, first
        How many samples agree at every tap, and the first divergence (``None`` if all agree).
    """
    n = len(golden)
    split: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for tap in taps:
        vals, cyc = result.taps[tap.port]
        counts = [len(g[tap.port]) for g in golden]
        if sum(counts) != len(vals):
            # the tap produced the wrong number of values: per-sample cuts are unknown, so compare
            # the concatenation; the divergence names where the streams part
            exp = np.concatenate([g[tap.port] for g in golden]) if golden else np.zeros(0, np.int64)
            m = min(len(exp), len(vals))
            d = np.nonzero(vals[:m] != exp[:m])[0]
            pos = int(d[0]) if len(d) else m
            edges = np.cumsum(counts)
            s = int(np.searchsorted(edges, pos, side="right"))
            within = pos - (int(edges[s - 1]) if s > 0 else 0)
            neuron, t = ref.locate(tap, within, counts[s], None, None) if s < n else ((within,), None)
            return 0, Divergence(first_sample + s, tap.layer, tap.index, tap.kind, neuron, t, within,
                                 int(exp[pos]) if pos < len(exp) else None, int(vals[pos]) if pos < len(vals) else None,
                                 int(cyc[pos]) if pos < len(cyc) else None, rerun="none", port=tap.port)
        edges = np.cumsum([0, *counts])
        split[tap.port] = [(vals[edges[i]:edges[i + 1]], cyc[edges[i]:edges[i + 1]]) for i in range(n)]
    exact, first = 0, None
    for i in range(n):
        hw = {p: split[p][i] for p in split}
        d = compare_sample(first_sample + i, hw, golden[i], taps, ref, int(result.start[i]), rerun="none")
        if d is None:
            exact += 1
        elif first is None:
            first = d
    return exact, first


def diagnose(cosim: CoSim, images: np.ndarray, sample: int, ref: GoldenTaps, *,
             expected_logits: np.ndarray | None = None, vcd: str | os.PathLike | None = None,
             before: int = 200, after: int = 50, run_options: dict | None = None) -> Divergence | None:
    """Find where sample ``sample`` of ``images`` first diverges, and optionally write a VCD around it.

    Parameters
    ----------
    cosim
        The engine of the design (generated with debug taps).
    images
        The run's images (the manifest's layout); ``images[sample]`` is the diverging one.
    sample
        Its index.
    ref
        The golden tap sequences (e.g. :class:`ManifestGoldenTaps` of the intended manifest).
    expected_logits
        ``[num_classes]`` golden logits of the sample, to name a divergence that
        only shows in the result beats.
    vcd
        Where to write the waveform (a ``--trace`` build is made once, cached).
    before, after
        Cycles of waveform before and after the divergence.
    run_options
        The options of the original run (stalls, seed, sequential) for the prefix re-run.

    Returns
    -------
    Divergence or None
        ``None`` when the sample agrees everywhere, alone and in its stream.
    """
    taps = cosim.design.taps
    if not taps:
        raise HardwareError(f"{cosim.design.rtl_dir} has no debug taps: regenerate it with debug_taps=True "
                            "(bitspike gen --debug-taps) for a diagnosis")
    one = images[sample:sample + 1]
    golden = ref.sequences(one)[0]
    res = cosim.run(one, trace=True, sequential=True, processes=1)
    found = compare_sample(sample, res.taps, golden, taps, ref, int(res.start[0]), rerun="alone")
    rerun_images, rerun_opts = one, dict(sequential=True)
    if found is None and expected_logits is not None:
        found = _result_divergence(sample, res, expected_logits, "alone")
    if found is None and sample > 0:
        # only the stream shows it (state carried between images): replay the prefix as it ran
        opts = dict(run_options or {})
        prefix = images[:sample + 1]
        res = cosim.run(prefix, trace=True, processes=1, **opts)
        exact, found = compare_all(res, ref.sequences(prefix), taps, ref)
        if found is not None:
            found.rerun = "prefix"
        elif expected_logits is not None:
            found = _result_divergence(sample, res, expected_logits, "prefix", index=sample)
        rerun_images, rerun_opts = prefix, opts
    if found is not None and vcd is not None and found.cycle is not None:
        lo, hi = max(0, found.cycle - before), found.cycle + after
        Path(vcd).parent.mkdir(parents=True, exist_ok=True)
        cosim.run(rerun_images, processes=1, vcd=vcd, vcd_window=(lo, hi), **rerun_opts)
        found.vcd, found.vcd_window = str(vcd), (lo, hi)
    return found


def _result_divergence(sample: int, res: CoSimResult, expected: np.ndarray, rerun: str, index: int = 0) -> Divergence | None:
    got = res.logits[index]
    diff = np.nonzero(got != np.asarray(expected))[0]
    cyc = int(res.end[index])
    if len(diff):
        c = int(diff[0])
        return Divergence(sample, "results", -1, "logit", (c,), None, c, int(expected[c]), int(got[c]), cyc,
                          cyc - int(res.start[index]), rerun)
    best = int(np.argmax(expected))  # numpy's argmax takes the lowest index on ties, as the hardware must
    if int(res.classes[index]) != best:
        return Divergence(sample, "results", -1, "class", (0,), None, len(got), best, int(res.classes[index]), cyc,
                          cyc - int(res.start[index]), rerun)
    return None
