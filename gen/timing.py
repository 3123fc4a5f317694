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


def _synaptic_groups(lp: "LayerPlan") -> tuple[int, int, int]:
    groups = -(-lp.out_features // lp.pes)
    words = lp.kernel[0] * lp.kernel[1] * -(-lp.in_features // lp.lanes)
    last_n = lp.out_features - (groups - 1) * lp.pes
    return groups, words, last_n


def engine_busy(lp: "LayerPlan") -> int:
    """Clocks per inference that the engine itself needs in steady state (its initiation interval)."""
    if lp.op in ("linear", "conv2d"):
        groups, words, last_n = _synaptic_groups(lp)
        per_pixel = (groups - 1) * max(words, lp.pes + 2) + max(words, last_n + 2)
        busy = lp.out_hw[0] * lp.out_hw[1] * per_pixel
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
    # ready[(ih*W + iw)*jc_n + jc]: the clock from which that frame word can be read
    ready = [arrivals[pix * C + min(C - 1, (jc + 1) * L - 1)] + 1 for pix in range(H * W) for jc in range(jc_n)]
    out: list[int] = []
    t = -1
    prev_last = None
    prev_n = 0
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
                if prev_last is not None:
                    t = max(t, prev_last + 2 + prev_n)  # holding register of the previous group drained
                n = lp.pes if g < groups - 1 else last_n
                # outputs leave one per clock; a new group's outputs queue behind the previous ones
                start = t + 3
                if out:
                    start = max(start, out[-1] + 1)
                out.extend(start + p for p in range(n))
                prev_last, prev_n = t, n
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
