"""cocotb bench: stream blocks against their reference models, with random valid/ready stalls.

Configuration: ``instances``, each ``{"inputs": {port: {"values", "width", "signed"}},
"outputs": {port: {"expected", "width", "signed"}}}`` where ports are the
top-level prefixed names. Every input stream offers its values in order with
random idles (payload held while valid); every output is randomly
back-pressured; the received sequence must equal ``expected`` exactly.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

from bitspike.sim.cocotb_util import read_config


def _signed(v: int, width: int) -> int:
    return v - (1 << width) if v >> (width - 1) else v


@cocotb.test()
async def stream_blocks_match_reference(dut):
    cfg = read_config()
    rng = random.Random(cfg["seed"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    drivers, monitors = [], []
    for inst in cfg["instances"]:
        for port, spec in inst["inputs"].items():
            drivers.append({"port": port, "values": spec["values"], "width": spec["width"], "i": 0, "offering": False,
                            "valid": getattr(dut, f"{port}__valid"), "ready": getattr(dut, f"{port}__ready"),
                            "payload": getattr(dut, f"{port}__payload")})
        for port, spec in inst["outputs"].items():
            monitors.append({"port": port, "expected": spec["expected"], "width": spec["width"], "signed": spec["signed"],
                             "got": [], "valid": getattr(dut, f"{port}__valid"), "ready": getattr(dut, f"{port}__ready"),
                             "payload": getattr(dut, f"{port}__payload"), "r": False})
    for d in drivers:
        d["valid"].value = 0
    for mo in monitors:
        mo["ready"].value = 0
    dut.rst.value = 1
    for _ in range(3):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    p_valid, p_ready = cfg["p_valid"], cfg["p_ready"]
    for _ in range(cfg["max_cycles"]):
        if all(len(mo["got"]) >= len(mo["expected"]) for mo in monitors):
            break
        await FallingEdge(dut.clk)
        for d in drivers:
            if not d["offering"] and d["i"] < len(d["values"]) and rng.random() < p_valid:
                d["offering"] = True
            d["valid"].value = 1 if d["offering"] else 0
            if d["offering"]:
                d["payload"].value = d["values"][d["i"]] & ((1 << d["width"]) - 1)
        for mo in monitors:
            mo["r"] = rng.random() < p_ready
            mo["ready"].value = 1 if mo["r"] else 0
        await ReadOnly()
        for d in drivers:
            if d["offering"] and int(d["ready"].value):
                d["i"] += 1
                d["offering"] = False
        for mo in monitors:
            if mo["r"] and int(mo["valid"].value):
                v = int(mo["payload"].value)
                mo["got"].append(_signed(v, mo["width"]) if mo["signed"] else v)
    for mo in monitors:
        exp, got = mo["expected"], mo["got"]
        for k, (a, b) in enumerate(zip(got, exp)):
            assert a == b, f"{mo['port']}: beat {k} is {a}, reference {b}"
        assert len(got) == len(exp), f"{mo['port']}: {len(got)} beats, expected {len(exp)} (timeout?)"
    dut._log.info("%d output streams match their reference models", len(monitors))
