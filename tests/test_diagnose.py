"""First-divergence diagnosis (bitspike.sim.diagnose) on the stand-in with a planted fault."""

from __future__ import annotations

import numpy as np
import pytest

from bitspike.testing import StandinGoldenTaps, standin_cosim
from bitspike.sim.diagnose import compare_all, diagnose


@pytest.fixture(scope="module")
def faulty(hw_cache):
    # the stand-in adds one to logit 2 just before answering
    return standin_cosim(hw_cache, fault=2)


def test_standin_fault_is_named_with_cycle_and_vcd(faulty, tmp_path):
    x = np.random.default_rng(5).integers(0, 256, size=(30, 16)).astype(np.uint8)
    ref = StandinGoldenTaps(4)
    res = faulty.run(x, trace=True, processes=1)
    exact, first = compare_all(res, ref.sequences(x), faulty.design.taps, ref)
    assert exact == 0
    assert (first.sample, first.layer, first.kind, first.neuron) == (0, "standin", "acc", (2,))
    assert first.got == first.expected + 1
    vcd = tmp_path / "div.vcd"
    d = diagnose(faulty, x, 7, ref, vcd=vcd, before=20, after=5)
    assert (d.sample, d.layer, d.layer_index, d.kind, d.neuron, d.timestep) == (7, "standin", 0, "acc", (2,), None)
    assert d.got == d.expected + 1 and d.rerun == "alone"
    # input pixels all arrived intact: the x tap agreed, so the accumulator is the first difference
    assert d.cycle is not None and d.cycle > 16
    text = vcd.read_text()
    assert "dbg0_acc__payload" in text.replace("___05F", "__") or "dbg0_acc" in text
    assert d.vcd_window == (d.cycle - 20, d.cycle + 5)
    # only the window is dumped: the last time stamp is at most 2 * (cycle + 5) + 1
    stamps = [int(line[1:]) for line in text.splitlines() if line.startswith("#")]
    assert min(stamps) >= 2 * (d.cycle - 20) and max(stamps) <= 2 * (d.cycle + 5) + 1
    assert "layer 0 'standin', accumulator of neuron 2" in d.describe()


def test_clean_design_has_no_divergence(hw_cache):
    clean = standin_cosim(hw_cache)
    x = np.random.default_rng(6).integers(0, 256, size=(10, 16)).astype(np.uint8)
    ref = StandinGoldenTaps(4)
    assert diagnose(clean, x, 4, ref) is None
    res = clean.run(x, trace=True, processes=1)
    assert compare_all(res, ref.sequences(x), clean.design.taps, ref) == (10, None)


# ---- a fault in a generated network: one weight bit flipped


def _flip_one_weight_bit(m, layer_name: str, x: np.ndarray):
    """The manifest with the lowest bit of one weight flipped, where it changes sample 0; and (row, col)."""
    from bitspike.host.golden import GoldenModel
    from bitspike.manifest import weight_limit

    layer = m.layer(layer_name)
    counts = GoldenModel(m).run(x[:1], trace=True).trace[layer_name].s.sum(dim=0)[0].numpy()
    lim = weight_limit(layer.w_bits)
    w = layer.weight.copy()
    for o in range(w.shape[0] - 1, -1, -1):
        for i in np.nonzero(counts)[0]:
            flipped = -w[o, i] if layer.w_bits == 1 else (w[o, i] ^ 1)
            if -lim <= flipped <= lim and flipped != w[o, i]:
                w[o, i] = flipped
                return m.replace_layer(layer_name, weight=w), o, int(i)
    raise AssertionError("no weight to flip")


def test_flipped_weight_bit_is_found_and_named(tmp_path, cosim_of, hw_cache):
    import json

    from bitspike.cli import main
    from bitspike.testing import random_mlp
    from bitspike.sim.diagnose import ManifestGoldenTaps

    m = random_mlp(3, sizes=(64, 24, 16, 10))
    x = np.random.default_rng(9).integers(0, 256, size=(20, 64)).astype(np.uint8)
    middle = m.synaptic_layers[1].name
    bad_m, neuron, _ = _flip_one_weight_bit(m, middle, x)
    sim = cosim_of(bad_m)
    rtl = sim.design.rtl_dir
    d = diagnose(sim, x, 0, ManifestGoldenTaps(m, sim.design.taps))
    index = [l.name for l in m.layers].index(middle)
    assert (d.layer, d.layer_index, d.kind, d.neuron) == (middle, index, "acc", (neuron,)), d.describe()
    assert d.got != d.expected and d.cycle is not None and d.cycle_in_inference > 0
    # the command names it too, and fails with exit code 3 (the RTL is given, the manifest is the intended one)
    path = m.save(tmp_path / "m.bsm")
    out = tmp_path / "s.json"
    code = main(["sim", str(path), "--rtl", str(rtl), "--dataset", "digits", "--samples", "40", "--trace",
                 "--json", str(out), "--cache-dir", str(hw_cache), "--quiet"])
    assert code == 3
    p = json.loads(out.read_text())
    assert p["layer_exact"] < 40
    first = p["first_divergence"]
    assert (first["layer"], first["kind"], first["neuron"]) == (middle, "acc", [neuron])


@pytest.mark.slow
def test_flipped_conv_weight_bit_names_the_channel(cosim_of):
    from bitspike.manifest import weight_limit
    from bitspike.testing import random_cnn
    from bitspike.sim.diagnose import ManifestGoldenTaps

    m = random_cnn(11, image=(1, 6, 6), channels=(3,), classes=5)
    conv = m.synaptic_layers[0]
    w = conv.weight.copy()
    lim = weight_limit(conv.w_bits)
    o = next(o for o in range(w.shape[0]) if -lim <= (w[o, 0, 1, 1] ^ 1) <= lim)
    w[o, 0, 1, 1] ^= 1
    sim = cosim_of(m.replace_layer(conv.name, weight=w))
    x = np.random.default_rng(13).integers(1, 256, size=(4, 1, 6, 6)).astype(np.uint8)
    d = diagnose(sim, x, 0, ManifestGoldenTaps(m, sim.design.taps))
    assert (d.layer, d.layer_index, d.kind) == (conv.name, 0, "acc"), d.describe()
    assert d.neuron[0] == o and len(d.neuron) == 3  # (channel, row, column)
    assert "channel" in d.describe()


def test_a_wrong_spike_is_named_with_its_timestep(hw_cache):
    """Packed spike beats: the report names the element, the timestep and both spike values."""
    from bitspike.testing import random_mlp
    from bitspike.sim.cosim import DesignInfo, rtl_for_manifest
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_sample

    m = random_mlp(3, sizes=(64, 24, 16, 10))
    taps = DesignInfo.read(rtl_for_manifest(m, debug_taps=True, cache_dir=hw_cache / "rtl")).taps
    ref = ManifestGoldenTaps(m, taps)
    x = np.random.default_rng(14).integers(0, 256, size=(1, 64)).astype(np.uint8)
    golden = ref.sequences(x)[0]
    spiking = {t.layer for t in taps if t.kind == "spk"}  # a layer fed by a fused boundary has no spike tap
    layer = max((l for l in m.synaptic_layers[1:] if l.name in spiking), key=lambda l: l.timesteps)
    tap = next(t for t in taps if t.layer == layer.name and t.kind == "spk")
    t = layer.timesteps - 1
    hw = {p: (v.copy(), np.arange(len(v)) + 100) for p, v in golden.items()}
    hw[tap.port][0][5] ^= 1 << (t * layer.s_bits)  # one spike of element 5, last timestep, off by one
    d = compare_sample(0, hw, golden, taps, ref, start_cycle=100)
    assert (d.layer, d.kind, d.neuron, d.timestep, d.cycle_in_inference) == (layer.name, "spk", (5,), t, 5)
    assert abs(d.spike_got - d.spike_expected) == 1
    assert f"spike of neuron 5, timestep {t}" in d.describe()
    assert compare_sample(0, {p: (v.copy(), np.arange(len(v))) for p, v in golden.items()}, golden, taps, ref) is None
