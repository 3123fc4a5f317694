"""A tiny stand-in for a generated accelerator, obeying docs/HARDWARE_INTERFACE.md.

It lets the co-simulation harness, the build cache, the Icarus path and the
diagnosis plumbing be tested without the network generator: a design that
builds in a second or two, with the same ports as ``bitspike_top``.

What it computes (:func:`standin_reference`): pixel ``p`` (stream order)
adds ``pixel · (p mod 3 + 1)`` to logit ``p mod num_classes``; logit ``c``
then has ``bias − 7·c`` added (negative values test sign extension). It
throttles its input (``pixels.ready`` low one cycle in four) and waits a few
cycles before answering, so back-pressure and latency are exercised. One
debug tap ``dbg0_x`` shows every accepted pixel; a second ``dbg0_acc`` shows
the logits. ``fault`` adds one to the logit of class ``fault`` (a planted bug
for the diagnosis tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["standin_verilog", "standin_reference", "standin_cosim", "StandinGoldenTaps"]


def standin_reference(pixels: np.ndarray, num_classes: int, bias: int = 5) -> np.ndarray:
    """Logits of the stand-in for a batch ``[N, input_size]`` of stream-ordered pixels."""
    pixels = np.asarray(pixels, dtype=np.int64)
    n, size = pixels.shape
    idx = np.arange(size)
    weight = idx % 3 + 1
    logits = np.zeros((n, num_classes), dtype=np.int64)
    for c in range(num_classes):
        sel = idx % num_classes == c
        logits[:, c] = (pixels[:, sel] * weight[sel]).sum(axis=1) + bias - 7 * c
    return logits


def standin_verilog(out_dir: str | Path, input_size: int = 16, num_classes: int = 4, bias: int = 5,
                    fault: int | None = None, result_width: int = 24) -> dict:
    """Write ``bitspike_top.v`` and ``report.json`` for the stand-in into ``out_dir``; return the report."""
    from amaranth import Module, Mux, Signal, signed, unsigned
    from amaranth.back import verilog
    from amaranth.lib import stream, wiring
    from amaranth.lib.wiring import In, Out

    acc_width = result_width

    def tap(shape):  # observation only: payload and valid, never back-pressured
        return wiring.Signature({"payload": Out(shape), "valid": Out(1)})

    class StandIn(wiring.Component):
        def __init__(self):
            super().__init__({
                "pixels": In(stream.Signature(unsigned(8))),
                "results": Out(stream.Signature(unsigned(result_width))),
                "done": Out(1),
                "busy": Out(1),
                "dbg0_x": Out(tap(unsigned(8))),
                "dbg0_acc": Out(tap(signed(acc_width))),
            })

        def elaborate(self, platform):
            m = Module()
            accs = [Signal(signed(acc_width), name=f"acc{c}", init=bias - 7 * c) for c in range(num_classes)]
            count = Signal(range(input_size + 1))
            lane = Signal(range(num_classes))
            mult = Signal(range(3))
            throttle = Signal(2)
            wait = Signal(3)
            beat = Signal(range(num_classes + 1))
            best = Signal(range(num_classes))
            m.d.sync += throttle.eq(throttle + 1)
            with m.FSM():
                with m.State("IN"):
                    m.d.comb += self.pixels.ready.eq(throttle != 3)
                    m.d.comb += self.busy.eq(count != 0)
                    with m.If(self.pixels.valid & self.pixels.ready):
                        m.d.comb += [self.dbg0_x.valid.eq(1), self.dbg0_x.payload.eq(self.pixels.payload)]
                        for c in range(num_classes):
                            with m.If(lane == c):
                                m.d.sync += accs[c].eq(accs[c] + self.pixels.payload * (mult + 1))
                        m.d.sync += [
                            lane.eq(Mux(lane == num_classes - 1, 0, lane + 1)),
                            mult.eq(Mux(mult == 2, 0, mult + 1)),
                            count.eq(count + 1),
                        ]
                        with m.If(count == input_size - 1):
                            m.d.sync += wait.eq(5)
                            m.next = "WAIT"
                with m.State("WAIT"):
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += wait.eq(wait - 1)
                    if fault is not None:
                        with m.If(wait == 5):
                            m.d.sync += accs[fault].eq(accs[fault] + 1)
                    # argmax, ties to the lowest index: scan from the top with >=
                    with m.If(wait == 1):
                        best_val = accs[0]
                        best_idx = 0
                        for c in range(1, num_classes):
                            better = accs[c] > best_val
                            best_idx = Mux(better, c, best_idx)
                            best_val = Mux(better, accs[c], best_val)
                        m.d.sync += best.eq(best_idx)
                    with m.If(wait == 0):
                        m.d.sync += beat.eq(0)
                        m.next = "OUT"
                with m.State("OUT"):
                    m.d.comb += [self.busy.eq(1), self.results.valid.eq(1)]
                    for c in range(num_classes):
                        with m.If(beat == c):
                            m.d.comb += self.results.payload.eq(accs[c])
                    with m.If(beat == num_classes):
                        m.d.comb += self.results.payload.eq(best)
                    with m.If(self.results.ready):
                        m.d.comb += [self.dbg0_acc.valid.eq(beat < num_classes),
                                     self.dbg0_acc.payload.eq(self.results.payload)]
                        m.d.sync += beat.eq(beat + 1)
                        with m.If(beat == num_classes):
                            m.d.comb += self.done.eq(1)
                            m.d.sync += [count.eq(0), lane.eq(0), mult.eq(0)]
                            m.d.sync += [accs[c].eq(bias - 7 * c) for c in range(num_classes)]
                            m.next = "IN"
            return m

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = verilog.convert(StandIn(), name="bitspike_top", emit_src=False)
    (out / "bitspike_top.v").write_text(text)
    report = {
        "top": "bitspike_top",
        "verilog_files": ["bitspike_top.v"],
        "input_bits": 8,
        "input_size": input_size,
        "input_order": "flat",
        "num_classes": num_classes,
        "result_width": result_width,
        "logit_width": acc_width,
        "cycles_per_inference": input_size * 4 // 3 + 8 + num_classes + 1,
        "initiation_interval": input_size * 4 // 3 + 8 + num_classes + 1,
        "layers": [],
        "taps": [
            {"layer": "standin", "index": 0, "kind": "x", "port": "dbg0_x", "width": 8, "signed": False,
             "order": "flat"},
            {"layer": "standin", "index": 0, "kind": "acc", "port": "dbg0_acc", "width": acc_width,
             "signed": True, "order": "flat"},
        ],
        "manifest_digest": "standin",
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


class StandinGoldenTaps:
    """Golden tap sequences of the stand-in (``dbg0_x``: the pixels, ``dbg0_acc``: the logits)."""

    def __init__(self, num_classes: int, bias: int = 5):
        self.num_classes = num_classes
        self.bias = bias

    def sequences(self, images: np.ndarray) -> list[dict[str, np.ndarray]]:
        x = np.asarray(images, dtype=np.int64).reshape(len(images), -1)
        logits = standin_reference(x, self.num_classes, self.bias)
        return [{"dbg0_x": x[i], "dbg0_acc": logits[i]} for i in range(len(x))]

    def locate(self, tap, position: int, count: int, expected=None, got=None):
        return (position,), None


def standin_cosim(cache_root: str | Path, input_size: int = 16, num_classes: int = 4, fault: int | None = None,
                  simulator: str = "verilator"):
    """A :class:`~bitspike.sim.cosim.CoSim` of the stand-in, its Verilog and build kept under ``cache_root``."""
    from bitspike.sim.cosim import CoSim

    root = Path(cache_root)
    rtl = root / f"standin-{input_size}-{num_classes}-{fault}"
    if not (rtl / "report.json").exists():
        from bitspike.io import atomic_dir

        with atomic_dir(rtl) as work:  # parallel test workers may write the same stand-in: the first one's stays
            standin_verilog(work, input_size, num_classes, fault=fault)
    return CoSim(rtl, simulator, cache_dir=root / "verilator")
