"""Cycle model of the generated pipeline: latency per inference and initiation interval.

The model replays, clock by clock in closed form, the handshakes of one
inference through the engines (pixels offered one per clock, results always
accepted). The constants mirror the RTL in :mod:`bitspike.rtl_templates`:

* synaptic engine (:mod:`bitspike.rtl_templates.synapse`): a word of inputs
  can be issued ``INPUT_LATENCY`` clocks after its last element arrived
  (neuron register, then the write); the PE array takes one word per clock;
  a group's sum enters the two-slot holding queue ``pe_latency(lanes)``
  clocks after its last word issued; the last word of a group waits for a
  free slot (the group two before it has drained); outputs are popped one
  per clock in order and leave ``drain_latency`` clocks after their pop.
* output stage: each logit is forwarded one clock after it arrives; ``done``
  comes 2 clocks after the last logit.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from bitspike.rtl_templates.synapse import HOLD_SLOTS, INPUT_LATENCY, drain_latency, pe_latency

if TYPE_CHECKING:  # pragma: no cover
    from .plan import LayerPlan, Plan

__all__ = ["engine_busy", "predict", "TIMERS"]


def _synaptic_groups(lp: "LayerPlan") -> tuple[int, int, int]:
    groups = -(-lp.out_features // lp.pes)
    words = lp.kernel[0] * lp.kernel[1] * -(-lp.in_features // lp.lanes)
    last_n = lp.out_features - (groups - 1) * lp.pes
    return groups, words, last_n


def _drain_model(lp: "LayerPlan"):
    """The PE-to-output part of the synaptic engine's timing, shared by the busy and the latency models.

    Returns ``finish(t_last, n, state) -> (pops, t_last)``: given the clock the group's last word
    would issue (inputs permitting), the group's outputs ``n`` and the running ``state`` (last-pop
    clocks so far), the clocks of its pops and the clock its last word really issues.
    """
    E = pe_latency(lp.lanes)

    def finish(t_last: int, n: int, lastpops: list[int]) -> tuple[list[int], int]:
        if len(lastpops) >= HOLD_SLOTS:  # a slot of the holding queue frees the clock after its last pop
            t_last = max(t_last, lastpops[-HOLD_SLOTS] + 1)
        first = t_last + E + 1
        if lastpops:
            first = max(first, lastpops[-1] + 1)
        lastpops.append(first + n - 1)
        return [first + p for p in range(n)], t_last

    return finish


def engine_busy(lp: "LayerPlan") -> int:
    """Clocks per inference that the engine itself needs in steady state (its initiation interval)."""
    if lp.op in ("linear", "conv2d"):
        groups, words, last_n = _synaptic_groups(lp)
        finish = _drain_model(lp)
        lastpops: list[int] = []
        t = -1
        frame_ends = []
        for _ in range(3):  # frames back to back, inputs always there: the third frame is in steady state
            for _pix in range(lp.out_hw[0] * lp.out_hw[1]):
                for g in range(groups):
                    _, t = finish(t + words, lp.pes if g < groups - 1 else last_n, lastpops)
            frame_ends.append(lastpops[-1])
        busy = frame_ends[2] - frame_ends[1]
        return max(busy, lp.in_elements, lp.out_elements)
    if lp.op in ("maxpool", "avgpool", "add"):
        return lp.in_elements
    if lp.op == "flatten":
        return 0
    raise KeyError(lp.op)


def _synaptic_times(lp: "LayerPlan", arrivals: list[int]) -> list[int]:
    groups, words, last_n = _synaptic_groups(lp)
    C, L = lp.in_features, lp.lanes
    jc_n = -(-C // L)
    H, W = lp.in_hw
    KH, KW = lp.kernel
    never = -(10**9)
    finish = _drain_model(lp)
    out_delay = drain_latency("product" in lp.widths)
    # ready[(ih*W + iw)*jc_n + jc]: the clock from which that frame word can be read
    ready = [arrivals[pix * C + min(C - 1, (jc + 1) * L - 1)] + INPUT_LATENCY
             for pix in range(H * W) for jc in range(jc_n)]
    out: list[int] = []
    t = -1
    lastpops: list[int] = []
    for oh in range(lp.out_hw[0]):
        for ow in range(lp.out_hw[1]):
            for g in range(groups):
                for ky in range(KH):
                    ih = oh * lp.stride[0] + ky - lp.padding[0]
                    for kx in range(KW):
                        iw = ow * lp.stride[1] + kx - lp.padding[1]
                        inside = 0 <= ih < H and 0 <= iw < W
                        for jc in range(jc_n):
                            r = ready[(ih * W + iw) * jc_n + jc] if inside else never
                            t = max(t + 1, r)
                pops, t = finish(t, lp.pes if g < groups - 1 else last_n, lastpops)
                out.extend(p + out_delay for p in pops)
    return out


def _pool_times(lp: "LayerPlan", arrivals: list[int]) -> list[int]:
    C = lp.in_features
    W = lp.in_hw[1]
    KH, KW = lp.kernel
    out = []
    for oh in range(lp.out_hw[0]):
        for ow in range(lp.out_hw[1]):
            for c in range(C):
                last = ((oh * KH + KH - 1) * W + ow * KW + KW - 1) * C + c
                out.append(arrivals[last] + 1)
    return out


#: clocks from a skip-branch beat entering the residual FIFO to its being offered at the other end
FIFO_LATENCY = 2


def _add_times(lp: "LayerPlan", a: list[int], b: list[int], skew_fifo: bool = True) -> list[int]:
    # b is the skip branch, through the FIFO (none for a self-add in step: both operands share one fork)
    latency = FIFO_LATENCY if skew_fifo else 0
    out: list[int] = []
    t = -(10**9)
    for ta, tb in zip(a, b):
        t = max(t + 1, ta, tb + latency)
        out.append(t + 1)
    return out


TIMERS: dict[str, Callable[..., list[int]]] = {
    "linear": _synaptic_times, "conv2d": _synaptic_times, "maxpool": _pool_times, "avgpool": _pool_times,
    "flatten": lambda lp, arrivals: list(arrivals), "add": _add_times,
}


def predict(plan: "Plan") -> "Plan":
    """The plan with ``cycles_per_inference`` and ``initiation_interval`` filled in."""
    from .plan import self_add_in_step

    m = plan.manifest
    times: dict[str, list[int]] = {"input": list(range(m.input.size))}
    for lp, layer in zip(plan.layers, m.layers):
        timer = TIMERS[lp.op]
        extra = {"skew_fifo": False} if self_add_in_step(m, layer) else {}
        times[lp.name] = timer(lp, *[times[i] for i in layer.inputs], **extra)
    logits = times[m.layers[-1].name]
    done = logits[-1] + 2
    latency = done - times["input"][0]
    interval = max([m.input.size, m.num_classes + 1] + [lp.cycles for lp in plan.layers])
    return replace(plan, cycles_per_inference=latency, initiation_interval=interval)
