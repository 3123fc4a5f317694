"""Cycle model of the generated pipeline: latency per inference and initiation interval.

The model replays, clock by clock in closed form, the handshakes of one
inference through the engines (pixels offered one per clock, results always
accepted). Each op gives its own engine's model
(:meth:`bitspike.ops.base.Op.arrival_times` and ``busy_cycles``; the
synaptic one is in :mod:`bitspike.ops.neuron`, the pools' in
:mod:`bitspike.ops.pooling`); their constants mirror the RTL in
:mod:`bitspike.rtl_templates`:

* synaptic engine (:mod:`bitspike.rtl_templates.synapse`): a word of inputs
  can be issued ``INPUT_LATENCY`` clocks after its last element arrived
  (neuron register, then the write); the PE array takes one word per clock;
  the sums of a round (``pes`` outputs, the RTL's output group) enter the
  two-slot holding queue ``pe_latency(lanes)`` clocks after its last word
  issued; the last word of a round waits for a free slot (the round two
  before it has drained); outputs are popped in order, ``vec_out`` per
  clock (a vector stream's beat; one on a scalar stream), and leave
  ``drain_latency`` clocks after their pop. A vector input's elements arrive
  together, one beat per clock. Which words a round reads
  comes from the op's hooks (``tap_inputs``, ``frame_words``, ``words_read``).
* pools (:mod:`bitspike.rtl_templates.pool`): the streaming pool emits a
  window's result the clock after its last element arrived; the frame-buffer
  pool reads one window tap a clock, a beat's channels per tap on a vector
  stream, and emits two clocks after the window's last tap.
* output stage: each logit is forwarded one clock after it arrives; ``done``
  comes 2 clocks after the last logit.
"""

from __future__ import annotations

from dataclasses import replace

from bitspike.ops.base import OPS

from .ir import Plan, PlanNode, register_pass

__all__ = ["engine_busy", "predict", "timing_pass"]


def engine_busy(lp: PlanNode) -> int:
    """Clocks per inference that the engine itself needs in steady state (its initiation interval)."""
    return OPS[lp.op].busy_cycles(lp)


@register_pass("timing")
def predict(plan: Plan) -> Plan:
    """The plan with ``cycles_per_inference`` and ``initiation_interval`` filled in.

    Each op gives the clock at which each of its output beats leaves, from the clocks at which its
    input beats arrived (:meth:`bitspike.ops.base.Op.arrival_times`); the pixels arrive one per clock.
    """
    m = plan.manifest
    times: dict[str, list[int]] = {"input": list(range(m.input.size))}
    for lp, layer in zip(plan.layers, m.layers):
        times[lp.name] = OPS[lp.op].arrival_times(lp, layer, plan, [times[i] for i in layer.inputs])
    logits = times[m.layers[-1].name]
    done = logits[-1] + 2
    latency = done - times["input"][0]
    interval = max([m.input.size, m.num_classes + 1] + [lp.cycles for lp in plan.layers])
    return replace(plan, cycles_per_inference=latency, initiation_interval=interval)


timing_pass = predict
