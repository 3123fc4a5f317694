"""cocotb bench for a generated ``bitspike_top``: results and debug taps against the golden model.

Configuration (``read_config()``): ``samples`` (pixel lists in stream order),
``logits`` / ``classes`` (golden), ``taps`` (port → expected value list over
all samples, in order), ``result_width``, ``logit_signed``, stall
probabilities, and ``timing`` (measure latency and interval without stalls).
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

from bitspike.sim.cocotb_util import read_config


def _signed(v: int, width: int) -> int:
    return v - (1 << width) if v >> (width - 1) else v


class TopBench:
    def __init__(self, dut, cfg):
        self.dut, self.cfg = dut, cfg
        self.rng = random.Random(cfg.get("seed", 1))
        self.cycle = 0
        self.results: list[int] = []
        self.done_cycles: list[int] = []
        self.first_pixel_cycles: list[int] = []
        self.taps = {port: [] for port in cfg.get("taps", {})}
        self.tap_widths = cfg.get("tap_widths", {})

    async def reset(self):
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.rst.value = 1
        dut.pixels__valid.value = 0
        dut.results__ready.value = 0
        for _ in range(3):
            await FallingEdge(dut.clk)
        dut.rst.value = 0

    async def run(self, samples, p_valid: float, p_ready: float, max_cycles: int):
        dut = self.dut
        beats = [v for s in samples for v in s]
        size = len(samples[0]) if samples else 0
        n_expected = len(self.results) + len(samples) * (self.cfg["num_classes"] + 1)
        i = 0
        offering = False
        while len(self.results) < n_expected:
            assert self.cycle < max_cycles, f"timeout after {self.cycle} cycles: {len(self.results)} of {n_expected} result beats"
            await FallingEdge(dut.clk)
            if not offering and i < len(beats) and self.rng.random() < p_valid:
                offering = True
            dut.pixels__valid.value = 1 if offering else 0
            if offering:
                dut.pixels__payload.value = beats[i]
            ready = self.rng.random() < p_ready
            dut.results__ready.value = 1 if ready else 0
            await ReadOnly()
            if offering and int(dut.pixels__ready.value):
                if i % size == 0:
                    self.first_pixel_cycles.append(self.cycle)
                i += 1
                offering = False
            if ready and int(dut.results__valid.value):
                self.results.append(int(dut.results__payload.value))
            if int(dut.done.value):
                self.done_cycles.append(self.cycle)
            for port in self.taps:
                if int(getattr(dut, f"{port}__valid").value):
                    w, sg = self.tap_widths[port]
                    v = int(getattr(dut, f"{port}__payload").value)
                    self.taps[port].append(_signed(v, w) if sg else v)
            self.cycle += 1

    async def drain_taps(self, max_cycles: int = 20000, min_cycles: int = 0):
        """Keep clocking (no pixels) and sampling taps: layers whose tail a floor-mode pool drops finish later."""
        dut = self.dut
        want = {p: len(v) for p, v in self.cfg.get("taps", {}).items()}
        for k in range(max_cycles):
            if k >= min_cycles and all(len(self.taps[p]) >= n for p, n in want.items()):
                return
            await FallingEdge(dut.clk)
            dut.pixels__valid.value = 0
            await ReadOnly()
            for port in self.taps:
                if int(getattr(dut, f"{port}__valid").value):
                    w, sg = self.tap_widths[port]
                    v = int(getattr(dut, f"{port}__payload").value)
                    self.taps[port].append(_signed(v, w) if sg else v)
            self.cycle += 1

    def check(self, samples):
        cfg = self.cfg
        C, rw = cfg["num_classes"], cfg["result_width"]
        for n in range(len(samples)):
            beats = self.results[n * (C + 1):(n + 1) * (C + 1)]
            logits = [_signed(b, rw) if cfg["logit_signed"] else b for b in beats[:C]]
            assert logits == cfg["logits"][n], f"sample {n}: logits {logits} != golden {cfg['logits'][n]}"
            assert beats[C] == cfg["classes"][n], f"sample {n}: class {beats[C]} != golden {cfg['classes'][n]}"
        assert len(self.done_cycles) == len(samples), f"{len(self.done_cycles)} done pulses for {len(samples)} samples"
        for port, values in self.taps.items():
            exp = cfg["taps"][port]
            for k, (a, b) in enumerate(zip(values, exp)):
                assert a == b, f"tap {port}: value {k} is {a}, golden {b} (got {values[max(0, k - 4):k + 4]}, golden {exp[max(0, k - 4):k + 4]})"
            assert len(values) == len(exp), f"tap {port}: {len(values)} values, expected {len(exp)}"


@cocotb.test()
async def network_matches_golden(dut):
    cfg = read_config()
    tb = TopBench(dut, cfg)
    await tb.reset()
    samples = cfg["samples"]
    measured = {}
    if cfg.get("timing"):
        # one inference alone, no stalls: latency from first pixel to done
        await tb.run(samples[:1], 1.0, 1.0, 200000)
        measured["latency"] = tb.done_cycles[0] - tb.first_pixel_cycles[0]
        await tb.drain_taps(max_cycles=5, min_cycles=5)
        assert int(dut.busy.value) == 0, "busy still high after the only inference finished"
        # back to back, no stalls: the steady-state interval between done pulses
        start = len(tb.done_cycles)
        await tb.run(samples[1:], 1.0, 1.0, 400000)
        gaps = [b - a for a, b in zip(tb.done_cycles[start:], tb.done_cycles[start + 1:])]
        measured["interval"] = gaps[-1] if gaps else None
        measured["gaps"] = gaps
        await tb.drain_taps()
    else:
        await tb.run(samples, cfg["p_valid"], cfg["p_ready"], 400000)
        await tb.drain_taps()
    tb.check(samples)
    out = os.environ.get("BITSPIKE_TB_MEASURED")
    if out:
        with open(out, "w") as fh:
            json.dump(measured, fh)
    dut._log.info("all %d samples bit-exact; measured %s", len(samples), measured)
