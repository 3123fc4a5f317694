"""Spike activity of stepped engines in a traced co-simulation run: spike rates, events and busy cycles.

A stepped layer's engine (:mod:`bitspike.rtl_templates.stepped`) does work in proportion to its spikes, so its
cycles are a property of the data. Its debug taps show every neuron's spike at every step (``spk``, one value a
beat, step-major) and every accumulator (``acc``); from a traced run (:meth:`bitspike.sim.cosim.CoSim.run` with
``trace=True``) this module counts, per stepped layer, the inputs that spiked and the clocks from its first
neuron update to its last accumulator of each image (its busy window), and puts the plan's cycle model next to
them at the measured rate (:func:`bitspike.rtl_templates.stepped.stepped_step_cycles`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SteppedActivity"]


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
