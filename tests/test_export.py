"""Tests of bitspike.host.export: exactness against the golden model, and a real exported run."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from bitspike.host.agreement import audit
from bitspike.host.checkpoint import load_checkpoint
from bitspike.host.data import images_for_manifest, load_dataset
from bitspike.host.export import export_model, export_run
from bitspike.host.golden import GoldenModel
from bitspike.host.models import BitPlan, build_model
from bitspike.host.quant import quant_layers
from bitspike.host.train import TrainConfig, model_from_checkpoint, train
from bitspike.manifest import load


def _set_layer(layer, step_exp: int, vth_exp: int | None, w_bits: int, s_bits: int, t: int, gen, bias_unit: float):
    """Give a layer exactly representable scales: step 2**step_exp, V_th 2**vth_exp, integer weights."""
    q = 1 if w_bits == 1 else 2 ** (w_bits - 1) - 1
    with torch.no_grad():
        layer.wq.bits.set(w_bits)
        layer.wq.step.fill_(2.0**step_exp)
        layer.wq.initialised.fill_(True)
        w_int = torch.randint(-q, q + 1, layer.weight.shape, generator=gen).double()
        layer.weight.copy_(w_int * 2.0**step_exp)
        layer.bias.copy_(torch.randint(-40, 41, layer.bias.shape, generator=gen).double() * bias_unit)
        if vth_exp is not None:
            layer.neuron.s_bits.set(s_bits)
            layer.neuron.timesteps.set(t)
            layer.neuron.vth.fill_(2.0**vth_exp)
        layer.neuron.initialised.fill_(True)


def test_fake_quant_logits_equal_golden_integers_exactly():
    """Powers-of-two scales, no BatchNorm: training's model and the integer contract are the same network."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    plan = BitPlan(3, 2, 1, learnable=True, input_scale=1 / 256)
    model = build_model("mlp", (1, 8, 8), 10, plan, hidden=(32, 16)).double().eval()
    fc1, fc2, fc3 = quant_layers(model)
    k = 8
    # a = S_w·V_th/T; next unit U = V_th_next/2**k; a/U must be a power of two ≥ 1 for exactness
    _set_layer(fc1, -6, None, 8, 8, 1, gen, bias_unit=2.0**-8 / 2**k)       # a1 = 2**-14, U2 = 2**-16
    _set_layer(fc2, -2, -8, 3, 2, 2, gen, bias_unit=2.0**-6 / 2**k)         # a2 = 2**-11, U3 = 2**-14
    _set_layer(fc3, -3, -6, 2, 3, 2, gen, bias_unit=2.0**-3 * 2.0**-6 / 2)  # a3 = 2**-10 (logit unit)
    test = load_dataset("digits", "test")
    rng = np.random.default_rng(2)
    images = np.concatenate([test.images, rng.integers(0, 256, size=(200, 1, 8, 8), dtype=np.uint8)])
    m = export_model(model, images[:64], current_bits=k)
    assert m.input.scale == 1 / 256 and [l.k for l in m.synaptic_layers] == [0, 8, 8]
    assert [(l.w_bits, l.s_bits, l.timesteps) for l in m.synaptic_layers] == [(8, 8, 1), (3, 2, 2), (2, 3, 2)]
    with torch.no_grad():
        logits = model(torch.as_tensor(images).double() / 256)
    scale = 2.0**-3 * 2.0**-6 / 2
    golden = GoldenModel(m).run(images_for_manifest(images, m), trace=True)
    ints = logits / scale
    assert torch.equal(ints, ints.round())
    assert torch.equal(ints.to(torch.int64), golden.logits)
    # and the currents are not trivial: the hidden neurons do spike, some saturate
    s2 = golden.trace["fc2"].s
    assert int((s2 > 0).sum()) > 0.1 * s2.numel() and int((s2 == 3).sum()) > 0
    # the agreement audit finds no violation; the samples it cannot certify sit at a count boundary
    report = audit(model, m, images)
    assert report.violations == [] and report.disagreements == 0
    # a corrupted export (one requantizer bias off by a large amount) is caught as a violation
    fc2 = m.layer("fc2")
    bad_bias = fc2.requant.bias.copy()
    bad_bias[:4] -= 64 << fc2.requant.shift
    bad = m.replace_layer(fc2.name, requant=dataclasses.replace(fc2.requant, bias=bad_bias))
    assert audit(model, bad, images).violations


def _check_audit(model, manifest, images, labels=None):
    """The guaranteed relation between the float model and its export (see bitspike.host.agreement)."""
    report = audit(model, manifest, images)
    assert report.violations == []
    assert report.disagreements <= report.uncertain
    if labels is not None:
        gap = abs(float((report.float_classes == labels).mean()) - float((report.int_classes == labels).mean()))
        assert gap <= report.accuracy_gap_bound() + 1e-12
    return report


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    torch.set_num_threads(2)
    result = train(TrainConfig(dataset="digits", arch="mlp", epochs=8, lr=0.1, out=str(out), progress=False))
    return result


def test_export_run_summary_and_manifest(digits_run, tmp_path):
    m, summary = export_run(digits_run.run_dir, tmp_path / "model.bsm")
    for key in ("float_accuracy", "deploy_accuracy", "avg_bits", "bit_budget", "s_ace", "weight_memory_bits"):
        assert key in summary
    assert set(summary["avg_bits"]) == {"w", "s", "t"}
    assert summary["float_accuracy"] > 0.8
    # float and deploy accuracy differ only through samples within rounding distance of a count boundary
    test = load_dataset("digits", "test")
    model, _ = model_from_checkpoint(load_checkpoint(digits_run.run_dir))
    report = _check_audit(model, m, test.images, test.labels)
    assert summary["deploy_accuracy"] == float((report.int_classes == test.labels).mean())
    assert summary["audit"] == report.to_json()
    assert load(tmp_path / "model.bsm") == m
    assert m.input.shape == (64,) and m.layers[0].k == 0 and m.layers[0].w_bits == 8 and m.layers[-1].requant is None
    assert summary["bit_budget"] == pytest.approx(
        summary["avg_bits"]["w"] * summary["avg_bits"]["s"] * summary["avg_bits"]["t"])
    # export is deterministic: the same run gives the same bytes
    m2, _ = export_run(digits_run.run_dir, None)
    assert m2.digest() == m.digest()


def test_export_cli_json(digits_run, tmp_path, capsys):
    out = tmp_path / "m.bsm"
    js = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, "-m", "bitspike.cli", "export", str(digits_run.run_dir), "-o", str(out),
                           "--json", str(js)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(js.read_text())
    assert out.is_file() and summary["deploy_accuracy"] > 0.8 and "weight_memory_bits" in summary
    from bitspike.cli import main  # the refusal through the same entry point, without a second interpreter

    assert main(["export", str(tmp_path / "nothing")]) == 1 and "no checkpoint" in capsys.readouterr().err


def test_cnn_export_matches_golden_closely(tmp_path):
    """A CNN with BatchNorm and max-pooling: exported, the golden model agrees with the fake-quant model."""
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, BitPlan(2, 2, 2), width=4)
    train_ds = load_dataset("digits", "train")
    model.train()
    x = torch.as_tensor(train_ds.images[:512]).float() / 255
    with torch.no_grad():
        for _ in range(3):  # settle BatchNorm statistics and thresholds
            model(x)
    model.eval()
    m = export_model(model, train_ds.images[:256])
    assert [l.op for l in m.layers] == ["conv2d", "maxpool", "conv2d", "maxpool", "flatten", "linear"]
    test = load_dataset("digits", "test")
    golden = GoldenModel(m).run(images_for_manifest(test.images, m))
    assert torch.equal(golden.classes, torch.as_tensor(_check_audit(model, m, test.images).int_classes))


def test_cnn_fc_export_matches_golden_closely():
    """conv–pool–conv–pool–linear–linear with mixed per-layer bits: exported, golden and fake-quant agree."""
    torch.manual_seed(1)
    model = build_model("cnn-fc", (1, 8, 8), 10, BitPlan(2, 2, 2), hidden=(24,), width=4)
    fc1 = [l for l in quant_layers(model)][2]
    fc1.wq.bits.set(3)
    fc1.neuron.s_bits.set(1)
    fc1.neuron.timesteps.set(3)
    train_ds = load_dataset("digits", "train")
    model.train()
    x = torch.as_tensor(train_ds.images[:512]).float() / 255
    with torch.no_grad():
        for _ in range(3):
            model(x)
    model.eval()
    m = export_model(model, train_ds.images[:256])
    assert [l.op for l in m.layers] == ["conv2d", "maxpool", "conv2d", "maxpool", "flatten", "linear", "linear"]
    fc1_layer = m.layers[5]
    assert (fc1_layer.w_bits, fc1_layer.s_bits, fc1_layer.timesteps) == (3, 1, 3)
    test = load_dataset("digits", "test")
    golden = GoldenModel(m).run(images_for_manifest(test.images, m))
    assert torch.equal(golden.classes, torch.as_tensor(_check_audit(model, m, test.images).int_classes))


def test_resnet_export_has_residual_adds_and_sum_pool():
    """ResNet20: residual adds and the global sum-pool become manifest layers; the golden model runs them in range."""
    torch.manual_seed(0)
    model = build_model("resnet20", (1, 8, 8), 10, BitPlan(2, 2, 2), width=4)
    train_ds = load_dataset("digits", "train")
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.as_tensor(train_ds.images[:256]).float() / 255)
    model.eval()
    m = export_model(model, train_ds.images[:256], current_bits=12)
    ops = [l.op for l in m.layers]
    assert ops.count("add") == 9 and ops.count("conv2d") == 21 and ops[-3:] == ["avgpool", "flatten", "linear"]
    pool = m.layers[-3]
    assert m.layer(pool.inputs[0]).op == "add" and m.layers[-1].k == 12 + 2  # 2×2 sum: two more bits of resolution
    shortcut_adds = [l for l in m.layers if l.op == "add" and getattr(m.layer(l.inputs[1]), "kernel", None) == (1, 1)]
    assert len(shortcut_adds) == 2  # the two down-sampling blocks use a 1×1 projection
    test = load_dataset("digits", "test")
    images = test.images[:90]  # a quarter of the test split keeps the run short; the range check is per image
    GoldenModel(m).run(images_for_manifest(images, m))  # raises RangeError on any overflow
    _check_audit(model, m, images)  # residual adds and the sum-pool bounded by interval arithmetic


@pytest.mark.slow
def test_digits_mlp_reaches_95_percent_deployed(tmp_path):
    """The network `make demo` runs: target 2/2/1, ≥ 95% deploy accuracy, within the bit window."""
    torch.set_num_threads(2)
    result = train(TrainConfig(dataset="digits", arch="mlp", epochs=40, lr=0.1, out=str(tmp_path), progress=False))
    _, summary = export_run(result.run_dir, tmp_path / "m.bsm")
    assert summary["deploy_accuracy"] >= 0.95
    assert summary["audit"]["violations"] == []
    assert summary["avg_bits"] == {"w": 2.0, "s": 2.0, "t": 1.0}
