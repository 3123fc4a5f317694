"""The stepped engine (rtl_templates/stepped.py) co-simulated against the golden model, bit-exact.

One small network covers the neuron's rules: three stepped layers, LIF with subtract reset and the multi-bit
``round`` spike (its current, the pixels, is one for all steps and replayed), IF with zero reset and ``gt``, and
a LIF ``gt`` readout whose logits are Σ_t acc_t. Two of them are folded onto several PEs (with short last
groups) and have fewer inputs than their neuron's latency (a step waits for the membranes' write-backs). The design runs under random stalls on both streams and every debug tap (input currents,
the spikes of every neuron at every step, the accumulators, the outputs) must equal the golden model's. The
default test runs it in Icarus Verilog; the slow ones build it (and an imported snnTorch MLP) with Verilator.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bitspike.errors import HardwareError
from bitspike.host.golden import GoldenModel
from bitspike.manifest import Conv2dLayer, FlattenLayer, InputSpec, LinearLayer, Manifest, Requant
from bitspike.ops.neuron import SteppedNeuron, SteppedNode

T = 6
FOLD = "fc2=4,out=3"


def _requant(n: int, shift: int, hi: int) -> Requant:
    return Requant(np.ones(n, np.int64), np.zeros(n, np.int64), shift, -hi, hi)


def _net(n2=SteppedNeuron(9, fire="round", spike_bits=2, leak_mul=13, leak_shift=4),
         n3=SteppedNeuron(4, reset="zero"), n4=SteppedNeuron(3, leak_mul=3, leak_shift=2)) -> Manifest:
    # small on purpose (one Verilator build in the default run): fc2 (5 inputs) and out (4 inputs) have fewer
    # inputs than their neuron's latency, so their steps wait for the write-backs; fc3 (7) does not
    rng = np.random.default_rng(5)
    w2, b2 = rng.integers(-7, 8, (7, 5)), rng.integers(-3, 4, 7)
    w3, b3 = rng.integers(-7, 8, (4, 7)), rng.integers(-2, 3, 4)
    w4, b4 = rng.integers(-7, 8, (4, 4)), rng.integers(-2, 3, 4)
    layers = [
        LinearLayer(name="fc2", inputs=("input",), in_shape=(5,), out_shape=(7,), w_bits=4, s_bits=n2.spike_bits,
                    timesteps=T, weight=w2, bias=b2, requant=_requant(7, 1, 40), stepped=n2),
        LinearLayer(name="fc3", inputs=("fc2",), in_shape=(7,), out_shape=(4,), w_bits=4, s_bits=1, timesteps=T,
                    weight=w3, bias=b3, requant=_requant(4, 0, 30), stepped=n3),
        LinearLayer(name="out", inputs=("fc3",), in_shape=(4,), out_shape=(4,), w_bits=4, s_bits=1, timesteps=T,
                    weight=w4, bias=b4, requant=None, stepped=n4),
    ]  # fmt: skip
    return Manifest.build("stepped-rtl", InputSpec((5,), 4, 1.0), layers)


def _inputs(m: Manifest, n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).integers(0, 16, size=(n, *m.input.shape))
    x[0] = 15
    return x


def _check_bit_exact(sim, m: Manifest, x: np.ndarray, seed: int):
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    golden = GoldenModel(m).run(x, trace=True)
    res = sim.run(x, trace=True, processes=1, stall_in=0.2, stall_out=0.3, seed=seed)
    np.testing.assert_array_equal(res.logits, golden.logits.numpy())
    ref = ManifestGoldenTaps(m, sim.design.taps)
    assert compare_all(res, ref.sequences(x), sim.design.taps, ref) == (len(x), None)
    return golden, res


def test_stepped_if_and_lif_layers_are_bit_exact_at_every_tap(cosim_of):
    # Icarus Verilog: no C++ build (a Verilator build costs ~40 s cold); the slow tests below run Verilator
    m = _net()
    sim = cosim_of(m, "icarus", fold=FOLD)
    x = _inputs(m, 6, seed=3)
    golden, res = _check_bit_exact(sim, m, x, seed=3)
    # the net is not trivial: every stepped layer spikes, and not at every input and step
    for name in ("fc2", "fc3", "out"):
        s = golden.trace[name].s
        assert 0 < int((s != 0).sum()) < s.numel(), name
    # a wrong reference (fc3's threshold one higher) is caught at fc3's spikes, with layer, neuron, step and cycle
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    layers = list(m.layers)
    layers[1] = replace(layers[1], stepped=replace(layers[1].stepped, threshold=5))
    wrong = Manifest.build(m.name, m.input, layers)
    ref = ManifestGoldenTaps(wrong, sim.design.taps)
    exact, first = compare_all(res, ref.sequences(x), sim.design.taps, ref)
    assert exact < len(x) and first is not None
    assert (first.layer, first.kind) == ("fc3", "spk") and first.timestep is not None and first.cycle is not None
    assert 0 <= first.neuron[0] < 7 and f"timestep {first.timestep}" in first.describe()


def test_the_plan_predicts_cycles_from_the_spike_rate():
    """Unless told a rate, the plan assumes every input spikes (the dense worst case); fewer spikes, fewer cycles."""
    from bitspike.gen.plan import make_plan
    from bitspike.ops.base import OPS
    from bitspike.rtl_templates.stepped import NEURON_BASE_LATENCY, neuron_latency, stepped_step_cycles

    plan = make_plan(_net(), fold=FOLD)
    node = plan.layer("fc3")
    assert isinstance(node, SteppedNode) and node.per_step_input and node.spike_rate == 1.0
    entry = node.to_json()["stepped"]
    assert entry["expected_events_per_step"] == 7 and entry["walk"] == "events"
    assert node.neuron_latency() == NEURON_BASE_LATENCY  # IF: no leak tree
    assert (entry["neuron_cycles_per_step"], entry["walk_cycles_per_step"]) == stepped_step_cycles(7, 7, 4, 1) == (7, 4 * 7 + 3)
    # fc2's leak 13/16 is a tree of three shifted copies and the rounding term (two levels): 5 inputs wait a clock per step
    fc2 = plan.layer("fc2")
    assert fc2.neuron_latency() == neuron_latency(13, 4) == NEURON_BASE_LATENCY + 2
    assert fc2.to_json()["stepped"]["neuron_cycles_per_step"] == NEURON_BASE_LATENCY + 3
    op = OPS[node.op]
    sparse = replace(node, spike_rate=0.2)
    assert sparse.expected_events() == 2
    assert op.busy_cycles(sparse) < op.busy_cycles(node) == T * max(stepped_step_cycles(7, 7, 4, 1))
    assert plan.layer("fc2").per_step_input is False  # the pixels are one current for all steps: replayed T times
    assert not plan.layer("out").requantized and plan.cycles_per_inference > 0


def test_what_has_no_stepped_engine_is_refused_by_name():
    from bitspike.gen.plan import make_plan

    with pytest.raises(HardwareError, match="layer 0 'fc2': field s_bits"):
        make_plan(_net(n2=SteppedNeuron(9, fire="round", spike_bits=5)))
    rng = np.random.default_rng(0)
    n = SteppedNeuron(4)
    conv = [
        Conv2dLayer(name="c1", inputs=("input",), in_shape=(2, 4, 4), out_shape=(3, 4, 4), w_bits=4, s_bits=1,
                    timesteps=4, weight=rng.integers(-3, 4, (3, 2, 3, 3)), bias=np.zeros(3, np.int64),
                    requant=_requant(3, 0, 20), kernel=(3, 3), padding=(1, 1), stepped=n),
        FlattenLayer(name="fl", inputs=("c1",), in_shape=(3, 4, 4), out_shape=(48,)),
        LinearLayer(name="out", inputs=("fl",), in_shape=(48,), out_shape=(4,), w_bits=4, s_bits=1, timesteps=4,
                    weight=rng.integers(-3, 4, (4, 48)), bias=np.zeros(4, np.int64), requant=None, stepped=n),
    ]  # fmt: skip
    with pytest.raises(HardwareError, match="layer 0 'c1': the generator has no stepped engine for op 'conv2d'"):
        make_plan(Manifest.build("conv", InputSpec((2, 4, 4), 3, 1.0), conv))


@pytest.mark.slow
def test_a_dense_walk_gives_the_same_integers_in_more_cycles(tmp_path, hw_cache):
    """Queueing every input (spike or not) changes only the cycles: the events are what saves them."""
    from bitspike.gen.emit import emit_verilog
    from bitspike.gen.plan import make_plan
    from bitspike.gen.report import build_report
    from bitspike.sim.cosim import CoSim

    m = _net()
    x = _inputs(m, 4, seed=9)
    cycles = {}
    for dense in (False, True):
        plan = make_plan(m, fold=FOLD)
        plan = replace(plan, layers=tuple(replace(n, dense=dense) if isinstance(n, SteppedNode) else n
                                          for n in plan.layers))
        out = tmp_path / ("dense" if dense else "events")
        top, files = emit_verilog(plan, out, debug_taps=True)
        build_report(plan, files, top.taps, True).write(out)
        sim = CoSim(out, cache_dir=hw_cache / "verilator")
        _check_bit_exact(sim, m, x, seed=9)
        cycles[dense] = [int(sim.run(x[i:i + 1], processes=1).cycles[0]) for i in range(len(x))]
    assert all(e < d for e, d in zip(cycles[False], cycles[True]))


@pytest.mark.slow
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_an_imported_snntorch_if_mlp_runs_bit_exact_in_hardware(cosim_of, reset):
    """snnTorch IF MLP (integer weights) → NIR → import → gen → Verilator: every tap equals the golden model."""
    from bitspike.host import snntorch_nets as S
    from bitspike.host.data import images_for_manifest, load_dataset
    from bitspike.host.nir_import import import_network
    from bitspike.host.nir_io import read_nir

    net = S.integer_if_mlp(reset, seed=0)
    manifest, _ = import_network(read_nir(S.export(net, (1, 8, 8)), source="snntorch", reset=reset), timesteps=8,
                                 input_scale=1.0)
    assert any(getattr(l, "stepped", None) is not None for l in manifest.layers)
    x = images_for_manifest(load_dataset("digits", "test").images[:12], manifest)
    _check_bit_exact(cosim_of(manifest), manifest, x, seed=2)
