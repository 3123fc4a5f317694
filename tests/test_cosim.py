"""The co-simulation engine (bitspike.sim.cosim): batches through a Verilated design, bit-exact.

The harness itself (streaming, shards, back-pressure, hang detection, the
bare-loop limit) is checked on a small stand-in top with the generator's port
contract; the generated networks are checked in the second half.
"""

from __future__ import annotations

import numpy as np
import pytest

from bitspike.errors import HardwareError
from bitspike.testing import standin_cosim, standin_reference
from bitspike.sim.cosim import CoSim


@pytest.fixture(scope="session")
def standin(hw_cache):
    sim = standin_cosim(hw_cache, input_size=16, num_classes=4)
    sim.build()
    return sim


def _images(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size)).astype(np.uint8)


def test_standin_stream_is_exact_with_taps_and_shards(standin):
    x = _images(200)
    x[:50] //= 64  # dim images: some logits go negative
    ref = standin_reference(x, 4)
    one = standin.run(x, trace=True, processes=1)
    two = standin.run(x, trace=True, processes=2)
    assert two.shard_starts == (0, 100)
    for res in (one, two):
        np.testing.assert_array_equal(res.logits, ref)
        assert (ref < 0).any()  # negative logits: sign extension is exercised
        np.testing.assert_array_equal(res.classes, ref.argmax(axis=1))
        vals, cycles = res.taps["dbg0_x"]
        np.testing.assert_array_equal(vals, x.reshape(-1))
        np.testing.assert_array_equal(res.taps["dbg0_acc"][0], ref.reshape(-1))
        assert (np.diff(cycles[:16]) > 0).all()
        assert (res.cycles > 16).all() and (res.end >= res.start).all()
    assert one.total_cycles > 200 * 16 and one.sim_cycles_per_second > 1e5


def test_backpressure_and_sequential_keep_every_value(standin):
    x = _images(64, seed=1)
    ref = standin_reference(x, 4)
    free = standin.run(x, processes=1)
    stalled = standin.run(x, processes=1, stall_in=0.3, stall_out=0.6, seed=7)
    seq = standin.run(x, processes=1, sequential=True, stall_out=0.2)
    for res in (free, stalled, seq):
        np.testing.assert_array_equal(res.logits, ref)
    assert stalled.total_cycles > free.total_cycles
    assert (seq.start[1:] > seq.end[:-1]).all()  # sequential: no overlap between images
    again = standin.run(x, processes=1, stall_in=0.3, stall_out=0.6, seed=7)
    np.testing.assert_array_equal(again.end, stalled.end)  # seeded stalls are reproducible


def test_a_hung_design_is_reported(standin):
    with pytest.raises(HardwareError, match="hung.*handshake"):
        standin.run(_images(2), processes=1, stall_out=1.0, max_idle=200)


def test_bad_input_is_named(standin, tmp_path):
    with pytest.raises(HardwareError, match="16"):
        standin.run(_images(3, size=15))
    with pytest.raises(HardwareError, match="integers"):
        standin.run(np.zeros((2, 16), dtype=np.float32))
    with pytest.raises(HardwareError, match="0 … 255"):
        standin.run(np.full((2, 16), 300, dtype=np.int64))
    with pytest.raises(HardwareError, match="report.json"):
        CoSim(tmp_path)
    with pytest.raises(HardwareError, match="simulator"):
        CoSim(standin.design.rtl_dir, simulator="modelsim")


def test_harness_overhead_against_bare_loop(standin):
    # alternately, best of three: other processes share the cores
    x = _images(3000, seed=2)
    harness, bare = 0.0, 0.0
    for _ in range(3):
        res = standin.run(x, processes=1)
        harness = max(harness, res.sim_cycles_per_second)
        bare = max(bare, standin.bare_cycles_per_second(x, res.total_cycles))
    # the stand-in is the worst case (a tiny model, so the harness's share of the work is largest)
    assert bare / harness < 2.0, (bare, harness)


# ---- generated networks


@pytest.fixture(scope="session")
def mlp(cosim_of):
    from bitspike.testing import random_mlp

    m = random_mlp(3, sizes=(64, 24, 16, 10))
    return m, cosim_of(m)


def test_generated_mlp_is_bit_exact_at_every_layer_under_backpressure(mlp):
    from bitspike.host.golden import GoldenModel
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    m, sim = mlp
    x = np.random.default_rng(8).integers(0, 256, size=(120, 64)).astype(np.uint8)
    g = GoldenModel(m).run(x)
    assert len(set(g.classes.tolist())) > 2  # the network is not trivially constant
    res = sim.run(x, trace=True, stall_in=0.2, stall_out=0.3, seed=3)
    np.testing.assert_array_equal(res.logits, g.logits.numpy())
    np.testing.assert_array_equal(res.classes, g.classes.numpy())
    ref = ManifestGoldenTaps(m, sim.design.taps)
    # a fused boundary (bitspike.gen.fuse) streams counts: its producer shows "cnt" instead of "out"
    assert {"x", "spk", "acc"} <= {t.kind for t in sim.design.taps} <= {"x", "spk", "acc", "out", "cnt"}
    assert compare_all(res, ref.sequences(x), sim.design.taps, ref) == (120, None)
    # latency on its own matches the generator's prediction (FINN checks the same way)
    alone = sim.run(x[:4], processes=1, sequential=True)
    assert np.all(np.abs(alone.cycles - sim.design.cycles_per_inference) <= 15), (alone.cycles, sim.design.cycles_per_inference)


def test_sim_command_writes_the_summary(mlp, tmp_path, capsys, hw_cache):
    import json

    from bitspike.cli import main

    m, sim = mlp
    path = m.save(tmp_path / "mlp.bsm")
    out = tmp_path / "sim.json"
    # the digits images are 8x8 = 64 pixels: they fit this random MLP (accuracy is meaningless, bit-exactness is not)
    code = main(["sim", str(path), "--dataset", "digits", "--samples", "48", "--trace", "--json", str(out),
                 "--cache-dir", str(hw_cache), "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "bit-exact          48/48" in text and "every layer        48/48" in text
    p = json.loads(out.read_text())
    for key in ("samples", "bit_exact", "hw_accuracy", "golden_accuracy", "cycles_per_inference", "sim_cycles_per_second"):
        assert key in p
    assert p["samples"] == p["bit_exact"] == p["layer_exact"] == 48
    assert p["hw_accuracy"] == p["golden_accuracy"]
    assert p["cycles_per_inference"]["min"] <= p["cycles_per_inference"]["median"] <= p["cycles_per_inference"]["max"]
    assert p["sim_cycles_per_second"] > 1e4 and p["first_divergence"] is None
    assert main(["sim", str(path), "--samples", "0"]) == 1  # bad option: a user error


@pytest.mark.slow
def test_trained_digits_model_all_360_test_images(tmp_path):
    """The issue's acceptance run: a trained digits model, every held-out image, bit-exact, build included."""
    import time

    from bitspike.cli import main
    from bitspike.sim.session import simulate

    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--arch", "mlp", "--out", str(run), "--quiet"]) == 0
    assert main(["export", str(run), "-o", str(tmp_path / "m.bsm"), "--quiet"]) == 0
    t0 = time.perf_counter()
    summary = simulate(tmp_path / "m.bsm", dataset="digits", cache_dir=tmp_path / "cache")  # cold cache
    seconds = time.perf_counter() - t0
    p = summary.payload
    assert p["samples"] == 360 and p["bit_exact"] == 360, summary.failure()
    assert p["hw_accuracy"] == p["golden_accuracy"] > 0.85
    assert seconds < 120, f"generate + build + 360 images took {seconds:.0f} s"


def test_per_layer_trace_of_one_sample(mlp):
    from bitspike.host.golden import GoldenModel

    m, sim = mlp
    x = np.random.default_rng(11).integers(0, 256, size=(6, 64)).astype(np.uint8)
    res = sim.run(x, trace=True, processes=1)
    g = GoldenModel(m).run(x, trace=True).trace
    for i in (0, 5):
        layers = sim.layer_trace(res, i)
        for layer in m.synaptic_layers:
            got, lt = layers[layer.name], g[layer.name]
            if "x" in got:  # a layer fed by a fused boundary has no neuron: no x or spk tap
                np.testing.assert_array_equal(got["x"], lt.x[i].numpy())
                np.testing.assert_array_equal(got["spk"], lt.s[:, i].numpy().T)  # [elements, T]
            np.testing.assert_array_equal(got["acc"], lt.acc[i].numpy())
    with pytest.raises(HardwareError, match="no taps"):
        sim.run(x[:1], processes=1).sample_taps(0)


@pytest.fixture(scope="session")
def cnn(cosim_of):
    from bitspike.testing import random_cnn

    m = random_cnn(11, image=(1, 6, 6), channels=(3,), classes=5)
    return m, cosim_of(m)


def test_generated_cnn_is_bit_exact_at_every_layer(cnn):
    from bitspike.host.golden import GoldenModel
    from bitspike.sim.diagnose import ManifestGoldenTaps, compare_all

    m, sim = cnn
    x = np.random.default_rng(12).integers(0, 256, size=(40, 1, 6, 6)).astype(np.uint8)
    g = GoldenModel(m).run(x)
    res = sim.run(x, trace=True, stall_in=0.2, stall_out=0.3, seed=2)
    np.testing.assert_array_equal(res.logits, g.logits.numpy())
    np.testing.assert_array_equal(res.classes, g.classes.numpy())
    assert {t.order for t in sim.design.taps} >= {"hwc"}  # feature maps stream channel-fastest
    ref = ManifestGoldenTaps(m, sim.design.taps)
    assert compare_all(res, ref.sequences(x), sim.design.taps, ref) == (40, None)
