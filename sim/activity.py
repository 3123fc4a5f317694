"""Activity of data-dependent engines in a traced co-simulation run: spike rates, nonzero words, busy cycles.

A stepped layer's engine (:mod:`bitspike.rtl_templates.stepped`) does work in proportion to its spikes, so its
cycles are a property of the data. Its debug taps show every neuron's spike at every step (``spk``, one value a
beat, step-major) and every accumulator (``acc``); from a traced run (:meth:`bitspike.sim.cosim.CoSim.run` with
``trace=True``) this module counts, per stepped layer, the inputs that spiked and the clocks from its first
neuron update to its last accumulator of each image (its busy window), and puts the plan's cycle model next to
them at the measured rate (:func:`bitspike.rtl_templates.stepped.stepped_step_cycles`).

A squeezed linear engine that skips zero words (:mod:`bitspike.rtl_templates.zeroskip`, ``bitspike gen
--zero-skip``) issues per output group only the frame words holding a nonzero spike count.
:class:`ZeroSkipActivity` counts those words on the layer's spike taps (a count is nonzero when any of its
spikes is; a fused consumer, which has no neuron, on its producer's ``cnt`` tap) and the clocks from the
layer's first accumulator of an image to its last (its accumulator window: the walk of every output group
but the first), and puts the plan's models next to them at the measured rate
(:meth:`bitspike.ops.linear.LinearOp.accumulator_window` and ``busy_cycles``). A squeezed conv engine that
skips (:mod:`bitspike.rtl_templates.convskip`) replays in its output groups 1 … G − 1 the nonzero words of each
window: for it the summary adds the nonzero-word rate inside its windows (what those groups issue) and the busy
cycles of its model at that rate, next to the dense engine's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SteppedActivity", "ZeroSkipActivity"]


@dataclass
class SteppedActivity:
    """Running totals over traced runs of one design (add each run with :meth:`add`, then :meth:`summary`).

    Parameters
    ----------
    design
        The design (:class:`bitspike.sim.design.DesignInfo`); its report's layer entries say which engines are
        stepped (a ``stepped`` object) and their geometry.
    """

    design: object
    spikes: dict[str, int] = field(default_factory=dict)
    values: dict[str, int] = field(default_factory=dict)
    windows: dict[str, list[int]] = field(default_factory=dict)
    images: int = 0

    @property
    def layers(self) -> dict[str, dict]:
        """The report entries of the stepped engines that have spike and accumulator taps."""
        kinds = {(t.layer, t.kind) for t in self.design.taps}
        return {l["name"]: l for l in self.design.layers
                if l.get("stepped") and (l["name"], "spk") in kinds and (l["name"], "acc") in kinds}

    def add(self, result) -> None:
        """Count one traced run (:class:`~bitspike.sim.cosim.CoSimResult`; every image in it)."""
        n = result.samples
        if not n:
            return
        ports = {(t.layer, t.kind): t.port for t in self.design.taps}
        for name in self.layers:
            spk_v, spk_c = result.taps[ports[(name, "spk")]]
            _, acc_c = result.taps[ports[(name, "acc")]]
            per_s, per_a = len(spk_v) // n, len(acc_c) // n
            self.spikes[name] = self.spikes.get(name, 0) + int(np.count_nonzero(spk_v))
            self.values[name] = self.values.get(name, 0) + len(spk_v)
            self.windows.setdefault(name, []).extend(
                int(acc_c[(i + 1) * per_a - 1] - spk_c[i * per_s]) + 1 for i in range(n) if per_s and per_a)
        self.images += n

    def summary(self) -> dict[str, dict]:
        """Per stepped layer: spike rate, events per inference, busy cycles (mean, max) and the plan's walk and
        neuron cycles per step at the measured rate."""
        from bitspike.rtl_templates.stepped import stepped_step_cycles

        out = {}
        for name, entry in self.layers.items():
            if not self.values.get(name):
                continue
            rate = self.spikes[name] / self.values[name]
            T = int(entry["timesteps"])
            events = self.spikes[name] / max(1, self.images)
            _, walk_c = stepped_step_cycles(round(events / T), int(entry["in_features"]),
                                            int(entry["out_features"]), int(entry["pes"]))
            neuron_c = int(entry["stepped"]["neuron_cycles_per_step"])  # the neuron's clocks do not follow the spikes
            w = self.windows.get(name) or [0]
            out[name] = {"spike_rate": rate, "events_per_inference": events,
                         "busy_cycles_mean": float(np.mean(w)), "busy_cycles_max": int(np.max(w)),
                         "model_walk_cycles_per_step": walk_c, "model_neuron_cycles_per_step": neuron_c,
                         "walk": entry["stepped"].get("walk", "events")}
        return out

    @staticmethod
    def text(summary: dict[str, dict]) -> list[str]:
        """One line per stepped layer, for ``bitspike sim``'s summary."""
        return [f"  stepped {name:<10} spike rate {100 * s['spike_rate']:.1f} %, {s['events_per_inference']:.1f} "
                f"events/inference, busy {s['busy_cycles_mean']:.0f} cycles/inference (max {s['busy_cycles_max']}); "
                f"model per step: walk {s['model_walk_cycles_per_step']}, neuron {s['model_neuron_cycles_per_step']}"
                for name, s in summary.items()]


@dataclass
class ZeroSkipActivity:
    """Running totals over traced runs of one design for its zero-skipping engines (:meth:`add`, :meth:`summary`).

    Parameters
    ----------
    design
        The design (:class:`bitspike.sim.design.DesignInfo`); its report's layer entries say which engines skip
        (a ``zero_skip`` object) and their folding.
    """

    design: object
    nonzero: dict[str, int] = field(default_factory=dict)
    words: dict[str, int] = field(default_factory=dict)
    windows: dict[str, list[int]] = field(default_factory=dict)
    window_nz: dict[str, int] = field(default_factory=dict)
    window_words: dict[str, int] = field(default_factory=dict)
    images: int = 0

    def _count_tap(self, index: int, name: str, kinds) -> tuple[str, str] | None:
        """The tap that shows layer ``name``'s input counts: its own spikes, else its fused producer's counts."""
        if (name, "spk") in kinds:
            return name, "spk"
        earlier = [l["name"] for l in self.design.layers if l["index"] < index]
        for prev in reversed(earlier):
            if (prev, "cnt") in kinds:
                return prev, "cnt"
            if (prev, "out") in kinds:  # a producer without fusion: its currents, not counts
                return None
        return None

    @property
    def layers(self) -> dict[str, tuple[dict, tuple[str, str]]]:
        """The zero-skipping engines with accumulator taps and a tap of their counts: ``{name: (entry, tap)}``."""
        kinds = {(t.layer, t.kind) for t in self.design.taps}
        out = {}
        for l in self.design.layers:
            if not l.get("zero_skip") or (l["name"], "acc") not in kinds:
                continue
            src = self._count_tap(int(l["index"]), l["name"], kinds)
            if src is not None:
                out[l["name"]] = (l, src)
        return out

    def add(self, result) -> None:
        """Count one traced run (:class:`~bitspike.sim.cosim.CoSimResult`; every image in it)."""
        from bitspike.rtl_templates.zeroskip import nonzero_words

        n = result.samples
        if not n:
            return
        ports = {(t.layer, t.kind): t.port for t in self.design.taps}
        for name, (entry, src) in self.layers.items():
            vals, _ = result.taps[ports[src]]
            _, acc_c = result.taps[ports[(name, "acc")]]
            per_a = len(acc_c) // n
            if entry["op"] == "conv2d":
                nz = self._conv_words(name, entry, np.asarray(vals).reshape(n, -1))
            else:
                nz = nonzero_words(np.asarray(vals).reshape(n, -1), int(entry["lanes"]))
            self.nonzero[name] = self.nonzero.get(name, 0) + int(nz.sum())
            self.words[name] = self.words.get(name, 0) + int(nz.size)
            self.windows.setdefault(name, []).extend(
                int(acc_c[(i + 1) * per_a - 1] - acc_c[i * per_a]) + 1 for i in range(n) if per_a)
        self.images += n

    def _conv_words(self, name: str, entry: dict, counts: np.ndarray) -> np.ndarray:
        """A conv engine's nonzero frame words (each pixel's channels start a word), and, into ``window_nz`` and
        ``window_words``, the nonzero words among its windows' first T − 1 (what its replayed groups issue)."""
        from bitspike.ops.conv2d import CONV2D
        from bitspike.rtl_templates.convskip import conv_nonzero_words, conv_zero_skip_words

        node = CONV2D.node_from_report(entry)
        nz = conv_nonzero_words(counts, node.in_hw, node.lanes)
        geo = node.geometry()
        per = [sum(conv_zero_skip_words(geo, f)) - geo.out_hw[0] * geo.out_hw[1] for f in nz]
        self.window_nz[name] = self.window_nz.get(name, 0) + int(sum(per))
        self.window_words[name] = (self.window_words.get(name, 0)
                                   + len(nz) * geo.out_hw[0] * geo.out_hw[1] * (node.window_words - 1))
        return nz

    def _conv_summary(self, name: str, entry: dict) -> dict:
        """A conv engine's entries beyond the shared ones: the windows' nonzero-word rate (what its replayed
        groups issue: 1 + rate · (T − 1) words) and the busy cycles of the model at that rate."""
        from bitspike.ops.conv2d import CONV2D

        rate = self.window_nz[name] / max(1, self.window_words[name])
        at = CONV2D.node_from_report(entry, rate)
        return {"window_nonzero_rate": rate, "window_words": at.window_words, "groups": at.geometry().out_groups,
                "replayed_words_per_group": at.expected_words(), "model_window_cycles": None,
                "model_busy_cycles": CONV2D.busy_cycles(at),
                "dense_busy_cycles": CONV2D.busy_cycles(CONV2D.node_from_report({k: v for k, v in entry.items() if k != "zero_skip"}))}

    def summary(self) -> dict[str, dict]:
        """Per zero-skipping layer: the measured nonzero-word rate, accumulator window (mean, max) and the plan's
        window and busy cycles at the measured rate, and the rate the plan assumed."""
        from bitspike.ops.linear import LINEAR

        out = {}
        for name, (entry, _) in self.layers.items():
            if not self.words.get(name):
                continue
            rate = self.nonzero[name] / self.words[name]
            w = self.windows.get(name) or [0]
            out[name] = {"walk": entry["zero_skip"]["walk"], "nonzero_rate": rate,
                         "planned_rate": entry["zero_skip"]["nonzero_rate"],
                         "frame_words": int(entry["zero_skip"]["frame_words"]),
                         "nonzero_words_per_inference": self.nonzero[name] / max(1, self.images),
                         "window_cycles_mean": float(np.mean(w)), "window_cycles_max": int(np.max(w)),
                         "planned_busy_cycles": int(entry["cycles"])}
            if entry["op"] == "conv2d":
                out[name].update(self._conv_summary(name, entry))
            else:
                at = LINEAR.node_from_report(entry, rate)
                out[name].update(model_window_cycles=LINEAR.accumulator_window(at),
                                 model_busy_cycles=LINEAR.busy_cycles(at))
        return out

    @staticmethod
    def text(summary: dict[str, dict]) -> list[str]:
        """One line per zero-skipping layer, for ``bitspike sim``'s summary."""
        lines = []
        for name, s in summary.items():
            line = (f"  zero-skip {name:<8} nonzero words {100 * s['nonzero_rate']:.1f} % "
                    f"({s['nonzero_words_per_inference']:.1f} of {s['frame_words']}/inference; planned at "
                    f"{100 * s['planned_rate']:.0f} %)")
            if "window_nonzero_rate" in s:  # a conv engine: the replayed groups' words and the busy cycles
                line += (f", in its windows {100 * s['window_nonzero_rate']:.1f} % ({s['replayed_words_per_group']:.2f} "
                         f"of {s['window_words']} words a replayed group), accumulator window "
                         f"{s['window_cycles_mean']:.1f} cycles (max {s['window_cycles_max']}); model at the measured "
                         f"rate: busy {s['model_busy_cycles']} (dense {s['dense_busy_cycles']}, planned "
                         f"{s['planned_busy_cycles']})")
            else:
                line += (f", accumulator window {s['window_cycles_mean']:.1f} cycles (max {s['window_cycles_max']}); "
                         f"model at the measured rate: window {s['model_window_cycles']}, busy {s['model_busy_cycles']} "
                         f"(planned {s['planned_busy_cycles']})")
            lines.append(line)
        return lines
