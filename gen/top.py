"""The Amaranth top ``bitspike_top``: engines chained by streams, the output stage, done/busy and taps.

One builder per op (:data:`ENGINE_BUILDERS`) turns a :class:`LayerPlan` into
its engine; the top connects them in manifest order (every layer here has one
input: the previous layer).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from amaranth import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bitspike.errors import HardwareError
from bitspike.manifest import AddLayer, Conv2dLayer, Layer, LinearLayer
from bitspike.rtl_templates.conv import ConvEngine
from bitspike.rtl_templates.linear import LinearEngine, TapSignature
from bitspike.rtl_templates.output import ArgmaxOutput
from bitspike.rtl_templates.fifo import StreamFifo, StreamFork
from bitspike.rtl_templates.pool import PoolEngine
from bitspike.rtl_templates.residual import AddEngine

from .plan import LayerPlan, Plan, self_add_in_step, stream_source

__all__ = ["BitspikeTop", "ENGINE_BUILDERS", "TAP_KINDS"]

#: tap kinds per op, in the order the report lists them
TAP_KINDS = {"linear": ("x", "spk", "acc", "out"), "conv2d": ("x", "spk", "acc", "out"),
             "maxpool": ("x", "out"), "avgpool": ("x", "out"), "add": ("x", "out"), "flatten": ()}

#: input ports of each engine kind, by position in the layer's ``inputs``
INPUT_PORTS = {"add": ("a", "b")}

EngineBuilder = Callable[[Plan, LayerPlan, Layer, bool], wiring.Component]
ENGINE_BUILDERS: dict[str, EngineBuilder] = {}


def engine_builder(op: str):
    def deco(fn: EngineBuilder) -> EngineBuilder:
        ENGINE_BUILDERS[op] = fn
        return fn
    return deco


@engine_builder("linear")
def _build_linear(plan: Plan, lp: LayerPlan, layer: Layer, debug: bool) -> wiring.Component:
    assert isinstance(layer, LinearLayer)
    weight = layer.weight if lp.column_order is None else layer.weight[:, list(lp.column_order)]
    return LinearEngine(weight=weight, bias=layer.bias, w_bits=layer.w_bits, s_bits=layer.s_bits,
                        timesteps=layer.timesteps, k=layer.k, requant=layer.requant, ranges=plan.ranges[layer.name],
                        pes=lp.pes, lanes=lp.lanes, debug_taps=debug, dsp_blocks=lp.dsp_blocks)


@engine_builder("conv2d")
def _build_conv(plan: Plan, lp: LayerPlan, layer: Layer, debug: bool) -> wiring.Component:
    assert isinstance(layer, Conv2dLayer)
    return ConvEngine(weight=layer.weight, bias=layer.bias, in_hw=lp.in_hw, stride=lp.stride, padding=lp.padding,
                      w_bits=layer.w_bits, s_bits=layer.s_bits, timesteps=layer.timesteps, k=layer.k,
                      requant=layer.requant, ranges=plan.ranges[layer.name], pes=lp.pes, lanes=lp.lanes,
                      debug_taps=debug, dsp_blocks=lp.dsp_blocks)


def _build_pool(plan: Plan, lp: LayerPlan, layer: Layer, debug: bool) -> wiring.Component:
    r = plan.ranges[layer.name]
    return PoolEngine(kind=layer.op, shape=layer.in_shape, kernel=lp.kernel, stride=lp.stride, x_range=r.x,
                      out_range=r.out, debug_taps=debug)


ENGINE_BUILDERS["maxpool"] = _build_pool
ENGINE_BUILDERS["avgpool"] = _build_pool
@engine_builder("add")
def _build_add(plan: Plan, lp: LayerPlan, layer: Layer, debug: bool) -> wiring.Component:
    assert isinstance(layer, AddLayer)
    r = plan.ranges[layer.name]
    return AddEngine(mult_a=layer.mult_a, mult_b=layer.mult_b, shift=layer.shift, lo=layer.lo, hi=layer.hi,
                     a_range=r.x, b_range=r.x_b, product_range=r.product, out_range=r.out, debug_taps=debug)


ENGINE_BUILDERS["flatten"] = lambda plan, lp, layer, debug: None  # a re-indexing folded into the next layer


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
        self.engines: list[tuple[LayerPlan, wiring.Component]] = []
        for lp, layer in zip(plan.layers, m.layers):
            builder = ENGINE_BUILDERS.get(lp.op)
            if builder is None:
                raise HardwareError(f"layer {lp.index} '{lp.name}': no engine builder for op {lp.op!r}")
            engine = builder(plan, lp, layer, debug_taps)
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
                for kind in TAP_KINDS.get(lp.op, ("out",)):
                    member = getattr(eng, f"tap_{kind}", None)
                    if member is None:
                        continue
                    shape = member.payload.shape()
                    port = f"dbg{lp.index}_{kind}"
                    members[port] = Out(TapSignature(shape.width, shape.signed))
                    layer = m.layers[lp.index]
                    shape_of_kind = layer.in_shape if kind in ("x", "spk") else layer.out_shape
                    # count: values the tap shows per inference (one per element; spikes come packed,
                    # T per beat), so a traced run can clock on until every tap has shown them all
                    self.taps.append({"layer": lp.name, "index": lp.index, "kind": kind, "port": port,
                                      "width": shape.width, "signed": shape.signed,
                                      "order": "flat" if len(shape_of_kind) == 1 else "hwc",
                                      "count": int(np.prod(shape_of_kind))})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        man = self.plan.manifest
        for lp, eng in self.engines:
            m.submodules[lp.engine] = eng
        out_stage = ArgmaxOutput(man.num_classes, self.engines[-1][1].y.payload.shape(), self.plan.result_width)
        m.submodules.output = out_stage
        # wire the layer graph: every producer's stream goes to its consumers; a producer with
        # several consumers gets an eager fork, and a fork branch into a residual add a FIFO of
        # two feature maps (the add waits for the other branch, which runs through a conv)
        engines = {lp.name: eng for lp, eng in self.engines}
        consumers: dict[str, list[tuple[Layer, int]]] = {}
        for layer in man.layers:
            if layer.name in engines:
                for pos, src in enumerate(layer.inputs):
                    consumers.setdefault(stream_source(man, src), []).append((layer, pos))
        streams = {"input": wiring.flipped(self.pixels)}
        streams.update({name: eng.y for name, eng in engines.items()})
        fifo_names: set[str] = set()
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
                port = getattr(engines[layer.name], INPUT_PORTS.get(layer.op, ("x",))[pos])
                if len(users) > 1 and layer.op == "add" and not self_add_only:
                    elems = int(np.prod(layer.in_shape))
                    fifo = StreamFifo(out.payload.shape(), 2 * elems + 16)
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
