"""Fused requantize-and-fire in the generated hardware (bitspike.gen.fuse).

* the planner's per-channel threshold tables equal the integer contract (requantize, then the next
  neuron's Σ_t s_t) for every accumulator of each channel's analysed range, by enumeration;
* fused designs co-simulate bit-exact under stalls: logits, every tap, and the fused streams' counts
  against the golden model's counts of the next layer; a wrong count is named by layer, neuron and cycle;
* ``--fuse off`` changes nothing (tests/test_hw_digests.py holds the byte-for-byte proof), ``on``
  names the layer it cannot fuse, ``auto`` fuses only where exact and cheaper, and the report says which.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bitspike.errors import HardwareError
from bitspike.gen.plan import make_plan
from bitspike.host.golden import neuron_steps
from bitspike.manifest import InputSpec, rounding_term
from bitspike.testing import NetBuilder, random_cnn, random_mlp


def _chain(seed: int, layers, image=(12,), bits=8):
    """A net of ``layers`` = [(kind, out, w_bits, s_bits, T, k) | "flatten"]; each requantizer sized for the next."""
    b = NetBuilder(np.random.default_rng(seed), InputSpec(shape=image, bits=bits, scale=1 / (2**bits - 1)))
    syn = [l for l in layers if l != "flatten"]
    for spec in layers:
        if spec == "flatten":
            b.flatten()
            continue
        kind, out, w, s, t, k = spec
        nxt = syn[syn.index(spec) + 1] if spec is not syn[-1] else None
        extra = dict(kernel=3, stride=1, padding=1) if kind == "conv2d" else {}
        b.synaptic(kind, out, w, s, t, k, nxt[5] if nxt else None, nxt[3] if nxt else None, **extra)
    return b.manifest(f"fuse-{seed}")


def _mlp():
    return _chain(1, [("linear", 9, 3, 2, 2, 1), ("linear", 7, 2, 2, 1, 0), ("linear", 5, 2, 1, 1, 0)])


def _conv_flatten():
    return _chain(2, [("conv2d", 3, 2, 2, 1, 0), "flatten", ("linear", 6, 2, 2, 2, 1), ("linear", 4, 2, 1, 1, 0)],
                  image=(1, 4, 4))


def _shared():
    """The MLP test_cosim, test_diagnose and test_icarus co-simulate: the default (auto) fuses line0 → line1
    (binary spikes, one threshold a channel), and its Verilator build is cached for all of them."""
    return random_mlp(3, sizes=(64, 24, 16, 10))


def _contract(acc: np.ndarray, m: int, b: int, shift: int, lo: int, hi: int, k: int, s_bits: int, t: int):
    exact_in_int64 = int(np.abs(acc).max()) * abs(m) + abs(b) + rounding_term(shift) < 2**62
    a = acc.astype(np.int64 if exact_in_int64 else object)
    x = np.clip((a * m + b + rounding_term(shift)) >> shift, lo, hi).astype(np.int64)
    _, s = neuron_steps(torch.from_numpy(x), k, s_bits, t)
    return s.sum(dim=0).numpy()


@pytest.mark.parametrize("make", [_mlp, _conv_flatten, lambda: random_mlp(9, sizes=(16, 12, 10), w_bits=[1], s_bits=[1])])
def test_plan_thresholds_equal_the_contract_for_every_accumulator(make):
    m = make()
    plan = make_plan(m, fuse="on")
    fused = [(n, l) for n, l in zip(plan.layers, m.layers) if getattr(n, "fused", None) is not None]
    assert fused and all(b.fused for b in plan.fusion)
    for node, layer in fused:
        consumer = m.layer(next(b.consumer for b in plan.fusion if b.producer == layer.name))
        assert plan.layer(consumer.name).counts_in
        rq, r = layer.requant, plan.ranges[layer.name]
        for o, (lo_o, hi_o) in enumerate(r.acc_per_channel):
            acc = np.arange(lo_o, hi_o + 1)
            want = _contract(acc, int(rq.multiplier[o]), int(rq.bias[o]), rq.shift, rq.lo, rq.hi, consumer.k,
                             consumer.s_bits, consumer.timesteps)
            f = node.fused  # FusedThresholds.count for the whole range at once
            got = f.base[o] + (f.sign[o] * acc[:, None] >= np.array(f.thresholds[o], dtype=np.int64)[None, :]).sum(axis=1)
            spot = acc[:: max(1, len(acc) // 50)]
            assert [f.count(o, int(a)) for a in spot] == [int(v) for v in got[:: max(1, len(acc) // 50)]]
            assert (got == want).all(), (layer.name, o, int(acc[np.argmax(got != want)]))
        # the consumer's stream is as wide as its count, and the engine has no neuron
        assert node.fused_width == plan.ranges[consumer.name].count.width
        assert "x" not in plan.layer(consumer.name).widths and "product" not in node.widths


@pytest.mark.parametrize("make,fuse", [(_shared, None), pytest.param(_mlp, "on", marks=pytest.mark.slow),
                                       pytest.param(_conv_flatten, "on", marks=pytest.mark.slow)])
def test_fused_designs_cosimulate_bit_exact(make, fuse, check_cosim):
    m = make()
    plan = make_plan(m) if fuse is None else make_plan(m, fuse=fuse)
    assert any(b.fused for b in plan.fusion) and (fuse is None or all(b.fused for b in plan.fusion))
    check_cosim(m, seed=3, samples=4, **({} if fuse is None else {"fuse": fuse}))


def test_a_wrong_fused_count_is_named_by_layer_neuron_and_cycle(cosim_of):
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    m = _shared()
    sim = cosim_of(m)  # the default fuses line0 → line1
    cnt = [t for t in sim.design.taps if t.kind == "cnt"]
    assert [t.layer for t in cnt] == ["line0"]
    assert not any(t.kind in ("x", "spk") and t.layer == "line1" for t in sim.design.taps)  # fused consumer: no neuron
    x = np.random.default_rng(0).integers(0, 256, size=(2, *m.input.shape))
    res = sim.run(x, trace=True, processes=1)
    ref = ManifestGoldenTaps(m, sim.design.taps)
    golden = ref.sequences(x)
    assert compare_all(res, golden, sim.design.taps, ref) == (2, None)
    port = cnt[0].port
    vals, cycles = res.taps[port]
    bad = vals.copy()
    bad[3] += 1
    res.taps[port] = (bad, cycles)
    n_ok, div = compare_all(res, golden, sim.design.taps, ref)
    assert n_ok == 1 and div is not None  # sample 1 is still exact
    assert (div.layer, div.kind, div.sample, div.neuron, div.cycle) == ("line0", "cnt", 0, (3,), int(cycles[3]))
    assert div.expected == int(golden[0][port][3]) and div.got == div.expected + 1


def test_fuse_off_is_the_plan_without_fusion_and_on_names_the_layer():
    m = _mlp()
    off, on = make_plan(m, fuse="off"), make_plan(m, fuse="on")
    assert off.fusion == () and not any(getattr(n, "fused", None) for n in off.layers)
    assert [(b.producer, b.consumer) for b in on.fusion] == [("line0", "line1"), ("line1", "line2")]
    # fused: the producer's drain is two clocks shorter than the requantizer (3 clocks against 5)
    assert on.cycles_per_inference < off.cycles_per_inference
    cnn = random_cnn(1, image=(1, 8, 8), channels=(3, 4))
    with pytest.raises(HardwareError, match="layer 'conv0' cannot be fused with 'maxpool1'"):
        make_plan(cnn, fuse="on")
    assert not any(b.fused for b in make_plan(cnn, fuse="auto").fusion)
    with pytest.raises(HardwareError, match="fuse must be one of"):
        make_plan(m, fuse="sometimes")


def test_auto_fuses_where_the_model_says_it_saves_luts():
    m = random_mlp(7, sizes=(20, 16, 12, 8, 10))  # wide spikes: hundreds of thresholds a channel
    auto = make_plan(m, fuse="auto")
    for b in auto.fusion:
        assert b.fused == (b.luts_saved > 0), b
        assert b.fused or "thresholds a channel" in b.reason
    assert any(not b.fused for b in auto.fusion)
    one_bit = make_plan(random_mlp(9, sizes=(16, 12, 10), w_bits=[1], s_bits=[1]), fuse="auto")
    assert [b.fused for b in one_bit.fusion] == [True]


def test_gen_cli_fuse_option_and_report(tmp_path, capsys):
    from bitspike.cli import main

    path = tmp_path / "m.bsm"
    _mlp().save(path)
    assert main(["gen", str(path), "-o", str(tmp_path / "on"), "--fuse", "on", "-q"]) == 0
    rep = json.loads((tmp_path / "on" / "report.json").read_text())
    assert rep["fuse"] == "on" and [b["fused"] for b in rep["fusion"]] == [True, True]
    assert "line0 → line1" in (tmp_path / "on" / "report.md").read_text()
    assert main(["gen", str(path), "-o", str(tmp_path / "off"), "--fuse", "off", "-q"]) == 0
    assert "fusion" not in json.loads((tmp_path / "off" / "report.json").read_text())
    cnn = tmp_path / "cnn.bsm"
    random_cnn(1, image=(1, 8, 8), channels=(3, 4)).save(cnn)
    capsys.readouterr()
    assert main(["gen", str(cnn), "-o", str(tmp_path / "cnn"), "--fuse", "on", "-q"]) == 1
    err = capsys.readouterr().err
    assert "conv0" in err and "Traceback" not in err



def test_build_fuse_option_reaches_the_generator(tmp_path):
    """`bitspike build --fuse off|on` generates the accelerator it builds as `gen --fuse` would (an archive
    build without the Yosys estimate: no synthesis, no place and route)."""
    from bitspike.gen.build import build_bitstream

    for fuse in ("on", "off"):
        out = tmp_path / fuse
        build_bitstream(_mlp(), "arty_a7_35", out, archive=True, estimate=False, fuse=fuse)
        rep = json.loads((out / "gen" / "report.json").read_text())
        if fuse == "on":
            assert rep["fuse"] == "on" and [b["fused"] for b in rep["fusion"]] == [True, True]
        else:
            assert "fuse" not in rep and "fusion" not in rep
