"""The zero-skip pass: which squeezed linear and conv engines walk only their nonzero frame words.

A squeezed linear engine may skip the frame words whose spike counts are all 0
(:mod:`bitspike.rtl_templates.zeroskip`): each output group then issues max(nonzero words, 1) words
instead of all of them, once the whole frame is in. A squeezed conv engine of two or more output groups
may too (:mod:`bitspike.rtl_templates.convskip`): its first output group walks the window and notes the
nonzero words, the others issue only those and the window's last (1 + nonzero words among the first
T − 1, for T words a window), through the line buffer or the whole frame. What it saves depends on the data, so the plan
counts with an expected nonzero-word rate per layer (the node's ``nonzero_rate``, 1.0 unless told:
the dense worst case, so a plan never promises what the data may not give); ``bitspike sim --trace``
reports the measured rate and busy cycles next to that prediction.

Modes (``PlanOptions.zero_skip``, ``bitspike gen --zero-skip``):

* ``"off"`` (the default): every engine walks densely (the hardware of a generator without skipping,
  byte for byte);
* ``"auto"``: every squeezed engine that can skip (:meth:`~bitspike.ops.linear.LinearOp.
  zero_skip_refused`: two or more frame words; :meth:`~bitspike.ops.conv2d.Conv2dOp.zero_skip_refused`:
  two or more output groups, a window of two or more words, no convolution groups), whose neuron can emit
  a count of 0 (the analysed count range starts at 0) and whose skipping logic costs at most
  :data:`AUTO_MAX_SHARE` of the engine's LUT estimate (the ops' ``zero_skip_luts``). Deterministic: it
  reads the plan only;
* ``"on"``: every squeezed engine that can skip; the others stay dense.

The pools and the adds always walk densely (they have no window of weights to skip). The plan's nodes
say what was decided (a ``zero_skip`` entry in the report's layer, only where an engine skips); the pass
logs the others with the reason.

Off is the default because a rate of 1 predicts no gain (only the latency of waiting for a whole frame),
so a plan cannot show a benefit without a measured rate.
"""

from __future__ import annotations

import logging

from bitspike.errors import HardwareError
from bitspike.ops.base import OPS

from .ir import Plan, register_pass

__all__ = ["ZERO_SKIP_MODES", "DEFAULT_ZERO_SKIP", "AUTO_MAX_SHARE", "zero_skip_pass", "zero_skip_decisions"]

log = logging.getLogger(__name__)

ZERO_SKIP_MODES = ("auto", "off", "on")
#: the default of ``generate`` and ``bitspike gen``
DEFAULT_ZERO_SKIP = "off"
#: ``"auto"`` skips where the skipping logic is at most this share of the engine's LUT estimate
AUTO_MAX_SHARE = 0.10


def zero_skip_decisions(plan: Plan, mode: str) -> dict[str, tuple[bool, str]]:
    """Per layer: ``(skips, why not)`` under ``mode`` (the reason is ``""`` where it skips)."""
    if mode not in ZERO_SKIP_MODES:
        raise HardwareError(f"zero_skip must be one of {list(ZERO_SKIP_MODES)}, not {mode!r}")
    out: dict[str, tuple[bool, str]] = {}
    for node in plan.layers:
        op = OPS[node.op]
        refused = getattr(op, "zero_skip_refused", None)
        if refused is None:
            out[node.name] = (False, f"op '{node.op}' walks its window densely")
            continue
        if mode == "off":
            out[node.name] = (False, "zero skipping is off")
            continue
        why = refused(node, plan.ranges[node.name])
        if why is None and mode == "auto":
            r = plan.ranges[node.name]
            if r.count.lo > 0:
                why = f"its neuron never emits a count of 0 (counts {r.count.lo} … {r.count.hi})"
            else:
                extra = op.zero_skip_luts(node)
                base = op.estimate_luts(node)
                if extra > AUTO_MAX_SHARE * base:
                    why = (f"the skipping logic (~{extra} LUTs) is more than {AUTO_MAX_SHARE:.0%} of the engine's "
                           f"{base}")
        out[node.name] = (why is None, why or "")
    return out


@register_pass("zero_skip")
def zero_skip_pass(plan: Plan) -> Plan:
    """The plan with ``zero_skip`` set on the engines that skip (``plan.options.zero_skip``)."""
    from dataclasses import replace

    mode = getattr(plan.options, "zero_skip", DEFAULT_ZERO_SKIP)
    decisions = zero_skip_decisions(plan, mode)
    if mode == "off":
        return plan
    nodes = []
    for node in plan.layers:
        skips, why = decisions[node.name]
        if skips:
            node = OPS[node.op].with_zero_skip(node, True)
        elif OPS[node.op].synaptic:
            log.info("zero-skip %s: %s: dense walk", node.name, why)
        nodes.append(node)
    return replace(plan, layers=tuple(nodes))
