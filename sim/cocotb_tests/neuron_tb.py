"""cocotb bench: a bank of NeuronArray instances against the golden neuron, every cycle.

The configuration (``read_config()``) lists one entry per instance: port
prefix, lanes, current range, s_bits, timesteps, k. Every instance gets
random currents (negative and saturating included) with random valid and
ready stalls; every offered beat's spikes and membranes are compared with
:func:`bitspike.host.golden.neuron_steps`.
"""

from __future__ import annotations

import random

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

from bitspike.host.golden import neuron_steps
from bitspike.sim.cocotb_util import read_config


def _pack(values, width):
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & ((1 << width) - 1)) << (i * width)
    return word


def _unpack(word, width, n, signed):
    out = []
    for i in range(n):
        v = (word >> (i * width)) & ((1 << width) - 1)
        if signed and v >> (width - 1):
            v -= 1 << width
        out.append(v)
    return out


class NeuronDriver:
    """Drives one instance and checks it against the golden model."""

    def __init__(self, dut, cfg, rng):
        self.cfg = cfg
        self.rng = rng
        p = cfg["prefix"]
        self.cur_valid = getattr(dut, f"{p}current__valid")
        self.cur_ready = getattr(dut, f"{p}current__ready")
        self.cur_payload = getattr(dut, f"{p}current__payload")
        self.sp_valid = getattr(dut, f"{p}spikes__valid")
        self.sp_ready = getattr(dut, f"{p}spikes__ready")
        self.sp_payload = getattr(dut, f"{p}spikes__payload")
        self.membrane = getattr(dut, f"{p}membrane")
        self.step = getattr(dut, f"{p}step")
        self.pending = None  # current offered but not yet accepted
        self.expected = []  # queue of (v, s) per step, each a list over lanes
        self.checked = 0
        self.cur_valid.value = 0
        self.sp_ready.value = 0

    def _random_current(self):
        lo, hi = self.cfg["lo"], self.cfg["hi"]
        pick = self.rng.random()
        if pick < 0.15:
            return lo
        if pick < 0.3:
            return hi
        return self.rng.randint(lo, hi)

    def drive(self):
        if self.pending is None and self.rng.random() < 0.7:
            self.pending = [self._random_current() for _ in range(self.cfg["lanes"])]
        if self.pending is not None:
            self.cur_payload.value = _pack(self.pending, self.cfg["cw"])
            self.cur_valid.value = 1
        else:
            self.cur_valid.value = 0
        self.sp_ready.value = 1 if self.rng.random() < 0.7 else 0

    def sample(self):
        c = self.cfg
        if int(self.sp_valid.value):
            assert self.expected, f"{c['prefix']}: spike beat offered with no current pending"
            v_exp, s_exp, t_exp = self.expected[0]
            got_s = _unpack(int(self.sp_payload.value), c["s_bits"], c["lanes"], False)
            got_v = _unpack(int(self.membrane.value), c["vw"], c["lanes"], True)
            assert int(self.step.value) == t_exp, f"{c['prefix']}: step {int(self.step.value)} != {t_exp}"
            assert got_v == v_exp, f"{c['prefix']} t={t_exp}: membrane {got_v} != golden {v_exp}"
            assert got_s == s_exp, f"{c['prefix']} t={t_exp}: spikes {got_s} != golden {s_exp}"
            if int(self.sp_ready.value):
                self.expected.pop(0)
                self.checked += 1
        if self.pending is not None and int(self.cur_ready.value):
            x = torch.tensor(self.pending, dtype=torch.int64)
            v, s = neuron_steps(x, c["k"], c["s_bits"], c["timesteps"])
            for t in range(c["timesteps"]):
                self.expected.append((v[t].tolist(), s[t].tolist(), t))
            self.pending = None


@cocotb.test()
async def neuron_bank_matches_golden(dut):
    cfg = read_config()
    rng = random.Random(cfg["seed"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    drivers = [NeuronDriver(dut, c, rng) for c in cfg["instances"]]
    dut.rst.value = 1
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    for _ in range(cfg["cycles"]):
        await FallingEdge(dut.clk)
        for d in drivers:
            d.drive()
        await ReadOnly()
        for d in drivers:
            d.sample()
    for d in drivers:
        assert d.checked >= cfg["min_checked"], f"{d.cfg['prefix']}: only {d.checked} beats checked"
    dut._log.info("checked %d spike beats over %d instances", sum(d.checked for d in drivers), len(drivers))
