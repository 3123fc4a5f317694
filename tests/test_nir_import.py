"""``bitspike import``: real snnTorch networks, written with ``snntorch.export_to_nir``, become manifests.

The key check of issue #15: with β = 1 (IF) and weights, biases and thresholds that are integers already
(and the integer pixels as input), the float snnTorch network and the imported integer model give the same
output spike counts on every test sample (the update-order proof is in ``bitspike.host.stepped``).
"""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import torch

from bitspike.cli import main
from bitspike.errors import BitspikeError
from bitspike.host import snntorch_nets as sn
from bitspike.host.data import images_for_manifest, load_dataset
from bitspike.host.golden import GoldenModel
from bitspike.host.nir_import import import_network, parse_bits
from bitspike.host.nir_io import NirError, read_nir
from bitspike.manifest import load


def _golden_counts(manifest, images) -> torch.Tensor:
    return GoldenModel(manifest).run(images_for_manifest(images, manifest)).logits


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_integer_if_network_agrees_exactly_with_snntorch_on_every_sample(reset):
    net = sn.integer_if_mlp(reset)
    graph = sn.export(net, (1, 8, 8))
    fnet = read_nir(graph, source="snntorch", reset=reset)
    manifest, report = import_network(fnet, timesteps=8, input_scale=1.0)
    assert manifest.version == 2 and all(r.exact_weights and r.current_shift == 0 for r in report)
    assert [r.threshold for r in report[:2]] == [300, 4]
    test = load_dataset("digits", "test")
    want = sn.snntorch_counts(net, test.images, 8, pixel_scale=1.0)
    got = _golden_counts(manifest, test.images)
    assert len(got) == 360 and want.sum() > 0  # neurons do fire
    assert torch.equal(got, want.to(torch.int64))  # every count of every one of the 360 samples


def test_integer_conv_network_with_avgpool_agrees_exactly():
    # conv → IF → avgpool(2) → flatten → linear → IF; linear weights multiples of 4, so the pool's 1/4
    # folded into them keeps them integers and the whole network is exact
    net = sn.fashion_cnn(channels=4, beta=1.0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        net[0].weight.copy_(torch.randint(-2, 3, net[0].weight.shape, generator=g).float())
        net[0].bias.copy_(torch.randint(-50, 51, net[0].bias.shape, generator=g).float())
        net[4].weight.copy_(4 * torch.randint(-3, 4, net[4].weight.shape, generator=g).float())
        net[4].bias.copy_(torch.randint(-2, 3, net[4].bias.shape, generator=g).float())
        net[1].threshold.fill_(400.0)
        net[5].threshold.fill_(6.0)
    fnet = read_nir(sn.export(net, (1, 28, 28)), source="snntorch")
    manifest, report = import_network(fnet, timesteps=6, input_scale=1.0)
    assert [l.op for l in manifest.layers] == ["conv2d", "flatten", "linear", "linear"]
    assert all(r.exact_weights for r in report)
    images = load_dataset("fashion-mnist", "test").images[:48]
    want = sn.snntorch_counts(net, images, 6, pixel_scale=1.0)
    assert want.sum() > 0
    assert torch.equal(_golden_counts(manifest, images), want.to(torch.int64))


def test_cli_writes_the_manifest_and_reports_the_agreement(tmp_path, capsys):
    path = tmp_path / "if.nir"
    nir.write(path, sn.export(sn.integer_if_mlp("subtract"), (1, 8, 8)))
    out, js = tmp_path / "if.bsm", tmp_path / "s.json"
    code = main(["import", str(path), "-o", str(out), "--source", "snntorch", "--calib", "digits",
                 "--input-scale", "1", "--json", str(js)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "reset 'subtract'" in text and "agree on 360/360" in text and "outputs equal on 360" in text
    summary = json.loads(js.read_text())
    c = summary["comparison"]
    assert c["classes_agree"] == 360 and c["outputs_equal_samples"] == 360
    assert c["float_accuracy"] == c["int_accuracy"]
    m = load(out)
    assert m.digest() == summary["digest"] and m.layers[1].stepped.threshold == 300
    # the same command again gives the same bytes
    again = tmp_path / "again.bsm"
    assert main(["import", str(path), "-o", str(again), "--source", "snntorch", "--calib", "digits",
                 "--input-scale", "1", "-q", "--samples", "10"]) == 0  # fmt: skip
    assert again.read_bytes() == out.read_bytes()


def _graph_with(node_name: str, node) -> nir.NIRGraph:
    w = np.ones((3, 4), np.float32)
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}), "fc": nir.Affine(weight=w, bias=np.zeros(3, np.float32)),
             node_name: node, "output": nir.Output(output_type={"output": np.array([3])})}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", node_name), (node_name, "output")])


@pytest.mark.parametrize("node, words", [
    (nir.CubaLIF(tau_syn=np.full(3, 2e-3), tau_mem=np.full(3, 2e-3), r=np.ones(3), v_leak=np.zeros(3),
                 v_threshold=np.ones(3)), ["node 'lif' (CubaLIF)", "synaptic current"]),
    (nir.IF(r=np.ones(3), v_threshold=np.array([1.0, 2.0, 1.0])), ["node 'lif' (IF)", "field 'v_threshold'", "one value per layer"]),
    (nir.LIF(tau=np.full(3, 1e-3), r=np.full(3, 10.0), v_leak=np.full(3, 0.5), v_threshold=np.ones(3)),
     ["node 'lif' (LIF)", "field 'v_leak'"]),
    (nir.Scale(scale=np.ones(3)), ["node 'lif' (Scale)", "not supported"]),
])  # fmt: skip
def test_cli_refuses_unsupported_nodes_naming_node_and_field(tmp_path, capsys, node, words):
    path = tmp_path / "bad.nir"
    nir.write(path, _graph_with("lif", node))
    code = main(["import", str(path), "-o", str(tmp_path / "x.bsm"), "--reset", "zero"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "x.bsm").exists()


def test_bits_option():
    assert parse_bits("4", ["1", "3"]) == {"1": 4, "3": 4}
    assert parse_bits("6/1,3=4", ["1", "3"]) == {"1": 6, "3": 4}
    assert parse_bits(None, ["1"]) == {"1": 8}
    for bad, words in [("4/2", "S must be 1"), ("1", "2 … 16"), ("9=4", "no synapse node '9'"), ("x", "expected W")]:
        with pytest.raises(BitspikeError, match=words):
            parse_bits(bad, ["1", "3"])


def test_two_synapses_without_a_neuron_between_are_refused():
    w = np.ones((4, 4), np.float32)
    nodes = {"input": nir.Input(input_type={"input": np.array([4])}), "a": nir.Linear(weight=w),
             "b": nir.Linear(weight=w), "output": nir.Output(output_type={"output": np.array([4])})}
    g = nir.NIRGraph(nodes=nodes, edges=[("input", "a"), ("a", "b"), ("b", "output")])
    with pytest.raises(NirError, match="node 'b' .*without a neuron in between"):
        import_network(read_nir(g, reset="zero"))


# ---------------------------------------------------------------------------------------------------------------
# NIR out: bitspike export --nir


def test_export_nir_round_trip_loads_in_snntorch_with_the_integer_models_counts(tmp_path, capsys):
    from snntorch.import_nir import import_from_nir

    fnet = read_nir(sn.export(sn.integer_if_mlp("zero", seed=2), (1, 8, 8)), reset="zero")
    manifest, _ = import_network(fnet, timesteps=8, input_scale=1.0)
    bsm, out = tmp_path / "m.bsm", tmp_path / "m.nir"
    manifest.save(bsm)
    assert main(["export", str(bsm), "--nir", "--target", "snntorch", "-o", str(out)]) == 0
    assert "run it for T = 8 steps" in capsys.readouterr().out
    back = import_from_nir(nir.read(out))
    test = load_dataset("digits", "test")
    counts = sn.snntorch_counts(back, test.images.reshape(len(test), -1), 8, pixel_scale=1.0)  # input: flat
    want = _golden_counts(manifest, test.images)
    assert want.sum() > 0 and torch.equal(counts.to(torch.int64), want)


def test_export_nir_of_a_subtract_network_needs_the_flag_and_reads_back_exactly(tmp_path, capsys):
    fnet = read_nir(sn.export(sn.integer_if_mlp("subtract", seed=4), (1, 8, 8)), source="snntorch")
    manifest, _ = import_network(fnet, timesteps=8, input_scale=1.0)
    bsm, out = tmp_path / "m.bsm", tmp_path / "m.nir"
    manifest.save(bsm)
    assert main(["export", str(bsm), "--nir", "-o", str(out)]) == 1
    assert "--allow-subtract" in capsys.readouterr().err and not out.exists()
    assert main(["export", str(bsm), "--nir", "--allow-subtract", "-o", str(out)]) == 0
    again = read_nir(out)
    assert again.reset == "subtract" and [n.kind for n in again.nodes if hasattr(n, "kind")] == ["IF", "IF"]
    test = load_dataset("digits", "test")
    x = torch.as_tensor(test.images.reshape(len(test), -1), dtype=torch.float32)
    assert torch.equal(again.counts(x, 8).to(torch.int64), _golden_counts(manifest, test.images))


def _squeezed_middle():
    from dataclasses import replace

    fnet = read_nir(sn.export(sn.integer_if_mlp("zero"), (1, 8, 8)), reset="zero")
    manifest, _ = import_network(fnet, timesteps=8, input_scale=1.0)
    mid = manifest.layers[1]
    return manifest.replace_layer(mid.name, stepped=replace(mid.stepped, mode="squeezed"))


@pytest.mark.parametrize("make, words", [
    (lambda: __import__("bitspike.testing", fromlist=["random_mlp"]).random_mlp(seed=0),
     ["layer 0 'line0' (linear)", "requantizer shifts right"]),
    (_squeezed_middle, ["layer 1 'n3' (linear)", "mode 'squeezed'", "binary spikes"]),
])  # fmt: skip
def test_export_nir_refuses_what_nir_cannot_express(tmp_path, capsys, make, words):
    bsm = tmp_path / "m.bsm"
    make().save(bsm)
    assert main(["export", str(bsm), "--nir", "-o", str(tmp_path / "x.nir")]) == 1
    err = capsys.readouterr().err
    assert "NIR cannot express this layer" in err and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "x.nir").exists()


def test_cli_compares_on_inputs_from_a_file_and_refuses_bad_ones(tmp_path, capsys):
    path = tmp_path / "if.nir"
    nir.write(path, sn.export(sn.integer_if_mlp("zero", seed=5), (1, 8, 8)))
    test = load_dataset("digits", "test")
    np.savez(tmp_path / "some.npz", images=test.images[:50], labels=test.labels[:50])
    out = tmp_path / "m.bsm"
    args = ["import", str(path), "-o", str(out), "--reset", "zero", "--input-scale", "1", "--inputs"]
    assert main(args + [str(tmp_path / "some.npz")]) == 0
    text = capsys.readouterr().out
    assert "on 50 images of" in text and "agree on 50/50" in text and "accuracy float" in text
    np.save(tmp_path / "float.npy", test.images[:5].astype(np.float32))
    np.save(tmp_path / "fashion.npy", np.zeros((3, 1, 28, 28), np.uint8))
    for name, words in [("float.npy", "must be integer pixels"), ("fashion.npy", "do not fit the network's input"),
                        ("missing.npz", "no such file")]:
        bad = tmp_path / f"{name}.bsm"
        code = main(["import", str(path), "-o", str(bad), "--reset", "zero", "--inputs", str(tmp_path / name)])
        err = capsys.readouterr().err
        assert code == 1 and words in err and "Traceback" not in err, err
        assert not bad.exists()
