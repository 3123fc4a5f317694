"""``bitspike sim`` on a user's own samples: --inputs (.npy/.npz), --random, --json mismatches, --shard/--merge.

The end-to-end runs use a 12-bit, 3-channel, non-square conv network (tests/test_gen_edges.py)
through real Verilator; the input checks need no simulator.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bitspike.cli import main
from bitspike.errors import HardwareError
from bitspike.sim.inputs import check_inputs, load_inputs, random_inputs

from test_gen_edges import pool31_net


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    m = pool31_net()
    path = m.save(tmp_path_factory.mktemp("net") / "pool31.bsm")
    return m, path


@pytest.fixture(scope="module")
def sim_cmd(hw_cache):
    """``sim_cmd(*args)``: the exit code of ``bitspike sim *args`` with the shared cache."""
    return lambda *args: main(["sim", *map(str, args), "--cache-dir", str(hw_cache), "--quiet"])


# ---- input checks (no simulator)


def test_inputs_must_fit_shape_and_bits(net):
    m, _ = net  # input [3, 7, 5], 12 bits
    ok = np.zeros((2, 3, 7, 5), dtype=np.uint16)
    ok[1, 2, 6, 4] = 4095
    assert check_inputs(ok, m).dtype == np.int64
    assert check_inputs(ok[0], m).shape == (1, 3, 7, 5)  # one sample without the batch axis
    assert check_inputs(ok.astype(np.float32), m).tolist() == ok.tolist()  # integral floats are integers
    with pytest.raises(HardwareError, match=r"shape \[2, 3, 5, 7\] .* expected \[N, 3, 7, 5\]"):
        check_inputs(ok.transpose(0, 1, 3, 2), m)
    with pytest.raises(HardwareError, match=r"shape \[2, 105\] .* expected \[N, 3, 7, 5\]"):
        check_inputs(ok.reshape(2, -1), m)
    bad = ok.astype(np.int64)
    bad[1, 0, 3, 2] = 4096
    with pytest.raises(HardwareError, match=r"x\[1, 0, 3, 2\] = 4096 is outside 0 … 4095 .*12-bit"):
        check_inputs(bad, m, "x")
    bad[1, 0, 3, 2] = -1
    with pytest.raises(HardwareError, match=r"\[1, 0, 3, 2\] = -1 is outside 0 … 4095"):
        check_inputs(bad, m)
    frac = ok.astype(np.float64)
    frac[0, 1, 1, 1] = 0.5
    with pytest.raises(HardwareError, match=r"\[0, 1, 1, 1\] = .*0.5 is not an integer"):
        check_inputs(frac, m)
    with pytest.raises(HardwareError, match="not an integer type"):
        check_inputs(np.array([["a"] * 5] * 7 * 3).reshape(1, 3, 7, 5), m)


def test_load_inputs_npy_npz_and_labels(net, tmp_path):
    m, _ = net
    x = random_inputs(m, 5, seed=3)
    assert x.shape == (5, 3, 7, 5) and x.max() == 4095 and x[1].max() == 0 and x.dtype == np.int64
    np.testing.assert_array_equal(random_inputs(m, 5, seed=3), x)  # seeded
    np.save(tmp_path / "x.npy", x.astype(np.uint16))
    got, labels = load_inputs(tmp_path / "x.npy", m)
    np.testing.assert_array_equal(got, x)
    assert labels is None
    np.savez(tmp_path / "xl.npz", inputs=x, labels=np.array([0, 1, 2, 3, 0]))
    got, labels = load_inputs(tmp_path / "xl.npz", m)
    assert labels.tolist() == [0, 1, 2, 3, 0]
    np.savez(tmp_path / "one.npz", samples=x)  # any name when it is the only array
    assert load_inputs(tmp_path / "one.npz", m)[0].shape == (5, 3, 7, 5)
    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(HardwareError, match=r"holds arrays \['a', 'b'\]; expected the inputs under one of"):
        load_inputs(tmp_path / "two.npz", m)
    np.savez(tmp_path / "badlab.npz", inputs=x, labels=np.array([0, 1, 2, 3, 4]))
    with pytest.raises(HardwareError, match=r"\['labels'\]\[4\] = 4 is not a class index 0 … 3"):
        load_inputs(tmp_path / "badlab.npz", m)
    np.savez(tmp_path / "shortlab.npz", inputs=x, labels=np.array([0, 1]))
    with pytest.raises(HardwareError, match=r"shape \[2\], expected \[5\]"):
        load_inputs(tmp_path / "shortlab.npz", m)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(HardwareError, match="without pickles"):
        load_inputs(tmp_path / "obj.npy", m)
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(HardwareError, match=r"expected an \.npy or \.npz"):
        load_inputs(tmp_path / "x.txt", m)


def test_bad_inputs_are_a_clear_error_from_the_command(net, tmp_path, capsys, sim_cmd):
    m, path = net
    x = random_inputs(m, 3, seed=1)
    x[2, 1, 4, 0] = 5000
    np.save(tmp_path / "big.npy", x)
    assert sim_cmd(path, "--inputs", tmp_path / "big.npy") == 1
    err = capsys.readouterr().err
    assert "big.npy[2, 1, 4, 0] = 5000 is outside 0 … 4095" in err and "Traceback" not in err
    assert sim_cmd(path, "--inputs", tmp_path / "big.npy", "--random", "3") == 1
    assert "give one of --dataset, --inputs, --random" in capsys.readouterr().err
    assert sim_cmd(path, "--random", "4", "--shard", "3/2") == 1
    assert "1 ≤ K ≤ N" in capsys.readouterr().err


# ---- through the hardware


def test_inputs_file_with_labels_gives_accuracy_and_bit_exact(net, tmp_path, sim_cmd):
    from bitspike.host.golden import GoldenModel

    m, path = net
    x = random_inputs(m, 12, seed=5)
    g = GoldenModel(m).run(x).classes.numpy()
    labels = g.copy()
    labels[:3] = (labels[:3] + 1) % 4  # three wrong labels: 9/12 for hardware and golden alike
    np.savez(tmp_path / "mine.npz", inputs=x.astype(np.uint16), labels=labels)
    out = tmp_path / "s.json"
    assert sim_cmd(path, "--inputs", tmp_path / "mine.npz", "--trace", "--json", out) == 0
    p = json.loads(out.read_text())
    assert (p["samples"], p["bit_exact"], p["layer_exact"], p["mismatch_count"]) == (12, 12, 12, 0)
    assert p["hw_accuracy"] == p["golden_accuracy"] == 9 / 12
    assert p["input"] == {"shape": [3, 7, 5], "bits": 12} and p["mismatches"] == []
    assert p["cycles_per_inference"]["alone"] == p["cycles_per_inference"]["predicted"]


def test_shards_merge_to_the_whole_run(net, tmp_path, capsys, sim_cmd):
    m, path = net
    parts = []
    for k in (1, 2, 3):
        part = tmp_path / f"part{k}.json"
        assert sim_cmd(path, "--random", "20", "--seed", "7", "--shard", f"{k}/3", "--json", part) == 0
        parts.append(part)
    docs = [json.loads(p.read_text()) for p in parts]
    assert [(d["part"]["first"], d["part"]["stop"]) for d in docs] == [(0, 6), (6, 13), (13, 20)]
    assert all(d["kind"] == "bitspike-sim-part" and d["hw_accuracy"] is None for d in docs)
    total = tmp_path / "total.json"
    assert main(["sim", "--merge", *map(str, reversed(parts)), "--json", str(total), "--quiet"]) == 0
    t = json.loads(total.read_text())
    assert (t["samples"], t["bit_exact"], t["mismatch_count"]) == (20, 20, 0)
    assert [p["first"] for p in t["parts"]] == [0, 6, 13]
    assert "20/20 samples" in capsys.readouterr().out
    # the whole run in one go gives the same verdict and the same per-sample cycles
    whole = tmp_path / "whole.json"
    assert sim_cmd(path, "--random", "20", "--seed", "7", "--shard", "1/1", "--json", whole) == 0
    w = json.loads(whole.read_text())
    assert w["inputs_digest"] == t["inputs_digest"] and w["bit_exact"] == 20
    # refused: a part twice, a part missing, parts of different inputs, not a part
    assert main(["sim", "--merge", str(parts[0]), str(parts[0]), str(parts[1]), str(parts[2])]) == 1
    assert "sample 0 is in both" in capsys.readouterr().err
    assert main(["sim", "--merge", str(parts[0]), str(parts[2])]) == 1
    assert "7 of 20 samples are in no part (first: sample 6)" in capsys.readouterr().err
    other = tmp_path / "other.json"
    assert sim_cmd(path, "--random", "20", "--seed", "8", "--shard", "2/3", "--json", other) == 0
    assert main(["sim", "--merge", str(parts[0]), str(other), str(parts[2])]) == 1
    assert "differ in inputs_digest" in capsys.readouterr().err
    assert main(["sim", "--merge", str(total)]) == 1
    assert "not a partial result" in capsys.readouterr().err


def test_json_lists_every_mismatch_of_a_faulty_design(tmp_path, sim_cmd, hw_cache):
    """The RTL of a manifest with one weight bit flipped, checked against the intended manifest."""
    from bitspike.host.golden import GoldenModel
    from bitspike.testing import random_mlp
    from bitspike.sim.cosim import rtl_for_manifest

    from test_diagnose import _flip_one_weight_bit

    m = random_mlp(3, sizes=(64, 24, 16, 10))  # the design test_diagnose builds: cached
    x = np.random.default_rng(9).integers(0, 256, size=(20, 64)).astype(np.uint8)
    bad_m, neuron, _ = _flip_one_weight_bit(m, m.synaptic_layers[1].name, x)
    rtl = rtl_for_manifest(bad_m, debug_taps=True, cache_dir=hw_cache / "rtl")
    path = m.save(tmp_path / "m.bsm")
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "s.json"
    assert sim_cmd(path, "--rtl", rtl, "--inputs", tmp_path / "x.npy", "--trace", "--json", out) == 3
    p = json.loads(out.read_text())
    good, bad = GoldenModel(m).run(x), GoldenModel(bad_m).run(x)
    logit_diff = int((good.logits != bad.logits).sum())
    listed = [e for e in p["mismatches"] if e["kind"] == "logit"]
    assert len(listed) == logit_diff  # every differing logit, one entry each
    for e in listed:
        s, c = e["sample"], e["neuron"][0]
        assert (e["golden"], e["hardware"]) == (int(good.logits[s, c]), int(bad.logits[s, c]))
        assert e["cycle"] is not None and e["layer"] == m.layers[-1].name
    middle = m.synaptic_layers[1].name
    accs = [e for e in p["mismatches"] if e["layer"] == middle and e["kind"] == "acc"]
    assert accs and all(e["neuron"] == [neuron] and e["cycle_in_inference"] > 0 for e in accs)
    assert p["mismatch_count"] == len(p["mismatches"]) and not p["mismatches_truncated"]
    assert p["layer_exact"] == 20 - len({e["sample"] for e in accs})
