"""The multi-bit neuron block against the golden neuron, in amaranth.sim, Verilator and Icarus.

One bank of NeuronArray instances covers ≥ 20 parameter combinations
(B_s 1…8, T 1…8, k 0…12, negative and saturating currents) in a single
Verilog build per simulator; every offered spike beat's spikes and
membranes are compared with ``neuron_steps``.
"""

from __future__ import annotations

import random

import pytest
import torch
from amaranth import Module
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In
from amaranth.sim import Simulator

from bitspike.analysis import Range
from bitspike.host.golden import neuron_steps
from bitspike.rtl_templates.neuron import NeuronArray
from bitspike.sim.cocotb_util import run_cocotb


def neuron_combos(n: int = 24, seed: int = 7) -> list[dict]:
    """Parameter combinations: fixed corners plus seeded random ones."""
    rng = random.Random(seed)
    corners = [(1, 1, 0), (1, 8, 12), (8, 1, 0), (8, 8, 12), (2, 2, 1), (4, 3, 6), (3, 5, 0), (1, 4, 1)]
    combos = list(corners)
    while len(combos) < n:
        combos.append((rng.randint(1, 8), rng.randint(1, 8), rng.randint(0, 12)))
    out = []
    for i, (s_bits, t, k) in enumerate(combos):
        cw = s_bits + k + 2  # wide enough to saturate and to go negative
        lanes = 1 + (i % 3 == 2) + (i % 5 == 4)
        out.append(dict(prefix=f"n{i}_", lanes=lanes, s_bits=s_bits, timesteps=t, k=k, cw=cw,
                        lo=-(1 << (cw - 1)), hi=(1 << (cw - 1)) - 1))
    return out


class NeuronBank(wiring.Component):
    """Many independent NeuronArray instances with prefixed ports (one build for a sweep)."""

    def __init__(self, combos):
        self.blocks = [NeuronArray(c["lanes"], Range(c["lo"], c["hi"]), c["s_bits"], c["timesteps"], c["k"]) for c in combos]
        members = {}
        for c, blk in zip(combos, self.blocks):
            c["vw"] = blk.membrane_shape.width
            for name, member in blk.signature.members.items():
                members[f"{c['prefix']}{name}"] = member
        self.combos = combos
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for c, blk in zip(self.combos, self.blocks):
            m.submodules[c["prefix"] + "nrn"] = blk
            for name in blk.signature.members:
                mine, theirs = getattr(self, c["prefix"] + name), getattr(blk, name)
                if blk.signature.members[name].flow == In:
                    wiring.connect(m, wiring.flipped(mine), theirs) if name == "current" else None
                else:
                    if name == "spikes":
                        wiring.connect(m, theirs, wiring.flipped(mine))
                    else:
                        m.d.comb += mine.eq(theirs)
        return m


def test_neuron_rejects_bad_parameters():
    with pytest.raises(ValueError, match="s_bits"):
        NeuronArray(1, Range(-4, 3), 0, 1, 0)
    with pytest.raises(ValueError, match="timesteps"):
        NeuronArray(1, Range(-4, 3), 2, 65, 0)
    with pytest.raises(ValueError, match="lanes"):
        NeuronArray(0, Range(-4, 3), 2, 1, 0)


def test_neuron_amaranth_sim_every_cycle():
    combos = neuron_combos()
    assert len(combos) >= 20
    checked = 0
    for c in combos:
        dut = NeuronArray(c["lanes"], Range(c["lo"], c["hi"]), c["s_bits"], c["timesteps"], c["k"])
        rng = random.Random(c["k"] * 100 + c["s_bits"] * 10 + c["timesteps"])
        results = {"beats": 0}

        async def bench(ctx, dut=dut, c=c, rng=rng, results=results):
            expected = []
            pending = None
            for _ in range(60 + 6 * c["timesteps"]):
                if pending is None and rng.random() < 0.7:
                    pending = [rng.choice([c["lo"], c["hi"], rng.randint(c["lo"], c["hi"])]) for _ in range(c["lanes"])]
                ctx.set(dut.current.valid, pending is not None)
                if pending is not None:
                    ctx.set(dut.current.payload, pending)
                ready = rng.random() < 0.7
                ctx.set(dut.spikes.ready, ready)
                if ctx.get(dut.spikes.valid):
                    v_exp, s_exp, t_exp = expected[0]
                    assert ctx.get(dut.step) == t_exp
                    assert [int(ctx.get(dut.membrane[l])) for l in range(c["lanes"])] == v_exp
                    assert [int(ctx.get(dut.spikes.payload[l])) for l in range(c["lanes"])] == s_exp
                    if ready:
                        expected.pop(0)
                        results["beats"] += 1
                if pending is not None and ctx.get(dut.current.ready):
                    v, s = neuron_steps(torch.tensor(pending), c["k"], c["s_bits"], c["timesteps"])
                    expected += [(v[t].tolist(), s[t].tolist(), t) for t in range(c["timesteps"])]
                    pending = None
                await ctx.tick()

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(bench)
        sim.run()
        assert results["beats"] >= 10
        checked += results["beats"]
    assert checked > 500


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_neuron_cocotb_every_cycle(simulator, tmp_path):
    combos = neuron_combos()
    bank = NeuronBank(combos)
    src = tmp_path / "neuron_bank.v"
    src.write_text(verilog.convert(bank, name="neuron_bank", emit_src=False))
    config = {"seed": 11, "cycles": 400, "min_checked": 20, "instances": combos}
    run_cocotb(simulator, [src], "neuron_bank", "bitspike.sim.cocotb_tests.neuron_tb", tmp_path, config)
