"""The Amaranth top ``bitspike_top``: engines chained by streams, the output stage, done/busy and taps.

Each layer's op builds its engine from its plan node (:meth:`bitspike.ops.base.Op.build_engine`)
and names the debug taps it offers (``Op.taps``) and its input ports (``Op.input_ports``);
the top connects the engines along the layer graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from amaranth import Module, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitspike.errors import HardwareError
from bitspike.manifest import Layer
from bitspike.ops.base import OPS
from bitspike.rtl_templates.fifo import StreamFifo, StreamFork
from bitspike.rtl_templates.linear import TapSignature
from bitspike.rtl_templates.output import ArgmaxOutput

from .ir import Plan, PlanNode, self_add_in_step, stream_source
from .timing import needs_skew_fifo, skew_fifo_depth, stream_times

__all__ = ["BitspikeTop", "TAP_KINDS"]

#: tap kinds per op, in the order the report lists them
TAP_KINDS = {name: op.taps for name, op in OPS.items()}


class BitspikeTop(wiring.Component):
    """The generated accelerator (ports: docs/HARDWARE_INTERFACE.md).

    Parameters
    ----------
    plan
        The hardware plan (:func:`bitspike.gen.plan.make_plan`).
    debug_taps
        Add the observation ports ``dbgJ_KIND``.
    """

    def __init__(self, plan: Plan, debug_taps: bool = False):
        self.plan = plan
        self.debug_taps = debug_taps
        m = plan.manifest
        self.engines: list[tuple[PlanNode, wiring.Component]] = []
        for lp, layer in zip(plan.layers, m.layers):
            op = OPS.get(lp.op)
            if op is None:
                raise HardwareError(f"layer {lp.index} '{lp.name}': no engine builder for op {lp.op!r}")
            engine = op.build_engine(plan, lp, layer, debug_taps)
            if engine is not None:
                self.engines.append((lp, engine))
        self.taps: list[dict[str, Any]] = []
        members: dict[str, Any] = {
            "pixels": In(stream.Signature(unsigned(m.input.bits))),
            "results": Out(stream.Signature(unsigned(plan.result_width))),
            "done": Out(1),
            "busy": Out(1),
        }
        if debug_taps:
            for lp, eng in self.engines:
                for kind in OPS[lp.op].taps:
                    member = getattr(eng, f"tap_{kind}", None)
                    if member is None:
                        continue
                    shape = member.payload.shape()
                    lanes = 1
                    if isinstance(shape, data.ArrayLayout):  # a vector stream's tap: a beat's elements together
                        shape, lanes = Shape.cast(shape.elem_shape), shape.length
                    port = f"dbg{lp.index}_{kind}"
                    members[port] = Out(TapSignature(shape.width, shape.signed, lanes))
                    layer = m.layers[lp.index]
                    shape_of_kind = layer.in_shape if kind in ("x", "spk") else layer.out_shape
                    # count: values the tap shows per inference (one per element; spikes come packed,
                    # T per beat; an engine whose taps show per-step values says how many in its
                    # tap_counts), so a traced run can clock on until every tap has shown them all
                    self.taps.append({"layer": lp.name, "index": lp.index, "kind": kind, "port": port,
                                      "width": shape.width, "signed": shape.signed,
                                      "order": "flat" if len(shape_of_kind) == 1 else "hwc",
                                      "count": int(getattr(eng, "tap_counts", {}).get(kind, np.prod(shape_of_kind)))})
                    if lanes > 1:  # values per record (width is each value's); scalar taps report as before
                        self.taps[-1]["lanes"] = lanes
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        man = self.plan.manifest
        for lp, eng in self.engines:
            m.submodules[lp.engine] = eng
        out_stage = ArgmaxOutput(man.num_classes, self.engines[-1][1].y.payload.shape(), self.plan.result_width)
        m.submodules.output = out_stage
        # wire the layer graph: every producer's stream goes to its consumers; a producer with
        # several consumers gets an eager fork, and a fork branch into a residual add, and the add's
        # second operand always, a FIFO as deep as the cycle model needs (the add waits for the other
        # branch, which runs through a conv: bitspike.gen.timing.needs_skew_fifo, skew_fifo_depth)
        engines = {lp.name: eng for lp, eng in self.engines}
        consumers: dict[str, list[tuple[Layer, int]]] = {}
        for layer in man.layers:
            if layer.name in engines:
                for pos, src in enumerate(layer.inputs):
                    consumers.setdefault(stream_source(man, src), []).append((layer, pos))
        streams = {"input": wiring.flipped(self.pixels)}
        streams.update({name: eng.y for name, eng in engines.items()})
        fifo_names: set[str] = set()
        times = None  # the cycle model's stream clocks, which size the skew FIFOs
        for src, users in consumers.items():
            outs = [streams[src]]
            if len(users) > 1:
                fork = StreamFork(streams[src].payload.shape(), len(users))
                m.submodules[f"fork_{src}"] = fork
                wiring.connect(m, streams[src], fork.x)
                outs = [getattr(fork, f"y{i}") for i in range(len(users))]
            # a residual add of a layer to itself takes both operands from one fork, in step: its
            # branches need no skew FIFO when nothing else reads the source
            self_add_only = self_add_in_step(man, users[0][0])
            for (layer, pos), out in zip(users, outs):
                port = getattr(engines[layer.name], OPS[layer.op].input_ports[pos])
                if needs_skew_fifo(man, layer, pos, len(users)) and not self_add_only:
                    if times is None:
                        times = stream_times(self.plan)
                    fifo = StreamFifo(out.payload.shape(), skew_fifo_depth(self.plan, src, layer.name, times))
                    name = f"fifo_{src}_{layer.name}"
                    if name in fifo_names:  # the second operand of a self-add that also has other readers
                        name += "_b"
                    fifo_names.add(name)
                    m.submodules[name] = fifo
                    wiring.connect(m, out, fifo.x)
                    out = fifo.y
                wiring.connect(m, out, port)
        wiring.connect(m, engines[man.layers[-1].name].y, out_stage.logits)
        wiring.connect(m, out_stage.results, wiring.flipped(self.results))
        m.d.comb += self.done.eq(out_stage.done)
        # busy: inferences inside = first pixels accepted − class beats accepted
        size = man.input.size
        pix = Signal(range(max(2, size)))
        inflight = Signal(8)
        first = Signal()
        m.d.comb += first.eq(self.pixels.valid & self.pixels.ready & (pix == 0))
        with m.If(self.pixels.valid & self.pixels.ready):
            m.d.sync += pix.eq(0 if size == 1 else (pix + 1))
            with m.If(pix == size - 1):
                m.d.sync += pix.eq(0)
        with m.If(first & ~self.done):
            m.d.sync += inflight.eq(inflight + 1)
        with m.Elif(~first & self.done):
            m.d.sync += inflight.eq(inflight - 1)
        m.d.comb += self.busy.eq(inflight != 0)
        if self.debug_taps:
            for tap in self.taps:
                eng = dict((lp.index, e) for lp, e in self.engines)[tap["index"]]
                src = getattr(eng, f"tap_{tap['kind']}")
                dst = getattr(self, tap["port"])
                m.d.comb += [dst.payload.eq(src.payload), dst.valid.eq(src.valid)]
        return m
