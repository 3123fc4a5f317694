"""Cycle model of the generated pipeline: latency per inference and initiation interval.

The model replays, clock by clock in closed form, the handshakes of one
inference through the engines (pixels offered one per clock, results always
accepted). The constants mirror the RTL in :mod:`bitspike.rtl_templates`:

* linear engine: a word of inputs can be issued the clock after its last
  element arrived; the PE array takes one word per clock; the last word of a
  group waits until the holding register of the previous group has drained
  (≥ 2 + pes clocks after that group's last word); output p of group g leaves
  ``3 + p`` clocks after the group's last word issued.
* output stage: each logit is forwarded one clock after it arrives; ``done``
  comes 2 clocks after the last logit.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover
    from .plan import LayerPlan, Plan

__all__ = ["engine_busy", "predict", "TIMERS"]


def _linear_groups(lp: "LayerPlan") -> tuple[int, int, int]:
    groups = -(-lp.out_features // lp.pes)
    words = -(-lp.in_features // lp.lanes)
    last_n = lp.out_features - (groups - 1) * lp.pes
    return groups, words, last_n


def engine_busy(lp: "LayerPlan") -> int:
    """Clocks per inference that the engine itself needs in steady state (its initiation interval)."""
    if lp.op in ("linear",):
        groups, words, last_n = _linear_groups(lp)
        per_group = max(words, lp.pes + 2)
        busy = (groups - 1) * per_group + max(words, last_n + 2)
        return max(busy, lp.in_features, lp.out_features)
    raise KeyError(lp.op)


def _linear_times(lp: "LayerPlan", arrivals: list[int]) -> list[int]:
    groups, words, last_n = _linear_groups(lp)
    n_in = lp.in_features
    word_ready = [arrivals[min(n_in - 1, (j + 1) * lp.lanes - 1)] + 1 for j in range(words)]
    out: list[int] = []
    t = -1
    prev_last = None
    prev_n = 0
    for g in range(groups):
        for j in range(words):
            t = max(t + 1, word_ready[j]) if g == 0 else t + 1
            if j == words - 1 and prev_last is not None:
                t = max(t, prev_last + 2 + prev_n)
        n = lp.pes if g < groups - 1 else last_n
        # outputs leave one per clock; a new group's outputs queue behind the previous ones
        start = t + 3
        if out:
            start = max(start, out[-1] + 1)
        out.extend(start + p for p in range(n))
        prev_last, prev_n = t, n
    return out


TIMERS: dict[str, Callable[["LayerPlan", list[int]], list[int]]] = {"linear": _linear_times}


def predict(plan: "Plan") -> "Plan":
    """The plan with ``cycles_per_inference`` and ``initiation_interval`` filled in."""
    m = plan.manifest
    times: dict[str, list[int]] = {"input": list(range(m.input.size))}
    for lp, layer in zip(plan.layers, m.layers):
        timer = TIMERS[lp.op]
        times[lp.name] = timer(lp, times[layer.inputs[0]])
    logits = times[m.layers[-1].name]
    done = logits[-1] + 2
    latency = done - times["input"][0]
    interval = max([m.input.size, m.num_classes + 1] + [lp.cycles for lp in plan.layers])
    return replace(plan, cycles_per_inference=latency, initiation_interval=interval)
