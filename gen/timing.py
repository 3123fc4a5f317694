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

The same replay sizes the top's skew FIFOs (:func:`skew_fifo_depth`): each
holds the most beats the model ever finds in it over a few back-to-back
inferences, so it never holds its source back in the model's run.
"""

from __future__ import annotations

from dataclasses import replace

from bitspike.ops.base import OPS

from .ir import Plan, PlanNode, register_pass

__all__ = ["engine_busy", "predict", "timing_pass", "stream_times", "skew_fifo_depth", "skew_fifos", "needs_skew_fifo",
           "SKEW_FRAMES", "SKEW_SLACK"]

#: back-to-back inferences the skew FIFO sizing replays (:func:`skew_fifo_depth`)
SKEW_FRAMES = 3
#: beats a skew FIFO holds beyond the most the cycle model ever finds in it
SKEW_SLACK = 16


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
    times = stream_times(plan)
    logits = times[m.layers[-1].name]
    done = logits[-1] + 2
    latency = done - times["input"][0]
    interval = max([m.input.size, m.num_classes + 1] + [lp.cycles for lp in plan.layers])
    return replace(plan, cycles_per_inference=latency, initiation_interval=interval)


timing_pass = predict


def stream_times(plan: Plan) -> dict[str, list[int]]:
    """The clock each beat of every stream leaves its engine in one inference from reset (``"input"``: the
    pixels, one per clock), as :func:`predict` replays them."""
    m = plan.manifest
    times: dict[str, list[int]] = {"input": list(range(m.input.size))}
    for lp, layer in zip(plan.layers, m.layers):
        times[lp.name] = OPS[lp.op].arrival_times(lp, layer, plan, [times[i] for i in layer.inputs])
    return times


def skew_fifo_depth(plan: Plan, source: str, join: str, times: dict[str, list[int]] | None = None) -> int:
    """Beats the skew FIFO from ``source``'s stream into the join ``join`` must hold (:class:`~bitspike.gen.top.
    BitspikeTop`): the most the cycle model ever finds in it, plus :data:`SKEW_SLACK`.

    The model is replayed over :data:`SKEW_FRAMES` back-to-back inferences, one every
    ``plan.initiation_interval`` clocks, with the FIFO never full: beat ``i`` of the source enters at
    its clock, beat ``j`` leaves by the clock the join's output beat ``j`` leaves (the join takes
    one beat of each operand per output beat). So the FIFO never holds the source back in the
    model's run, and the pipeline keeps the predicted interval. Nor can it deadlock under stalls:
    the join's other operand ``j`` needs at most the source beats that had entered by then in that
    run, and the FIFO takes them all.
    """
    from bisect import bisect_right

    times = stream_times(plan) if times is None else times
    src, out = times[source], times[join]
    if len(src) != len(out):  # not one beat per beat: the two feature maps the generator used to keep
        return 2 * len(src) + SKEW_SLACK
    period = plan.initiation_interval or max(1, max(out) - min(src) + 1)
    enter = sorted(t + f * period for f in range(SKEW_FRAMES) for t in src)
    held = 0
    for f in range(SKEW_FRAMES):
        for j, t in enumerate(out):
            held = max(held, bisect_right(enter, t + f * period) - (f * len(out) + j))
    return held + SKEW_SLACK


def needs_skew_fifo(manifest, layer, pos: int, readers: int) -> bool:
    """Whether input ``pos`` of ``layer``, whose stream has ``readers`` readers, runs through a skew FIFO
    (unless ``layer`` is a self-add in step, :func:`~bitspike.gen.ir.self_add_in_step`).

    A layer that joins branches gets one on every fork branch into it, and on its second operand
    always: the cycle model takes that operand through a FIFO (:data:`bitspike.ops.add.FIFO_LATENCY`),
    and a projection (ResNet's 1 × 1 stride-2 conv beside the two 3 × 3 convs) runs ahead of the
    other operand by more beats than its own engine holds, so without one it would stop taking the
    fork's beats before the slow branch had the ones the join waits for.
    """
    return OPS[layer.op].joins_branches and (readers > 1 or pos == 1)


def skew_fifos(plan: Plan, times: dict[str, list[int]] | None = None) -> list[tuple[str, str, int, int]]:
    """The skew FIFOs :class:`~bitspike.gen.top.BitspikeTop` builds, as ``(source, join, depth, width)``
    (:func:`needs_skew_fifo`), ``depth`` from :func:`skew_fifo_depth`, ``width`` the source's output
    width (the plan's ``widths["out"]``)."""
    from .ir import self_add_in_step, stream_source

    m = plan.manifest
    nodes = {n.name: n for n in plan.layers}
    users: dict[str, list] = {}
    for layer in m.layers:
        if nodes[layer.name].engine:
            for pos, src in enumerate(layer.inputs):
                users.setdefault(stream_source(m, src), []).append((layer, pos))
    out = []
    for src, readers in users.items():
        if self_add_in_step(m, readers[0][0]):
            continue
        for layer, pos in readers:
            if needs_skew_fifo(m, layer, pos, len(readers)):
                if times is None:
                    times = stream_times(plan)
                width = nodes[src].widths.get("out", m.input.bits) if src in nodes else m.input.bits
                out.append((src, layer.name, skew_fifo_depth(plan, src, layer.name, times), width))
    return out
