"""Grouped and depthwise conv2d (``groups``): validation, golden model, plan, co-simulation, training and export.

The whole capability lives in :mod:`bitspike.ops.conv2d`; these tests follow it through every stage:
the manifest refuses groups that do not fit, the golden model equals a plain-integer reference, the
generated hardware equals the golden model bit for bit under stalls (Verilator) and its measured
cycles equal the planner's prediction, and a trained model with a depthwise conv exports its groups.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from int_reference import run_reference
from torch import nn

from bitspike.errors import HardwareError, ManifestError
from bitspike.host.golden import GoldenModel
from bitspike.manifest import InputSpec, Manifest, from_parts, loads
from bitspike.testing import NetBuilder


def depthwise_net(seed: int = 0) -> Manifest:
    """conv 2→4 → depthwise 3×3 (groups 4, padding 1) → grouped 1×1 (groups 2, 4→4) → flatten → linear."""
    b = NetBuilder(np.random.default_rng(seed), InputSpec(shape=(2, 5, 5), bits=8, scale=1 / 255))
    b.synaptic("conv2d", 4, 8, 8, 1, 0, 2, 2, kernel=3, stride=1, padding=1)
    b.synaptic("conv2d", 4, 3, 2, 2, 2, 2, 3, kernel=3, stride=1, padding=1, groups=4)
    b.synaptic("conv2d", 4, 2, 3, 1, 2, 2, 2, kernel=1, stride=1, padding=0, groups=2)
    b.flatten()
    b.synaptic("linear", 3, 3, 2, 2, 3, None, None)
    return b.manifest("depthwise")


def groups2_net(seed: int = 1) -> Manifest:
    """conv 3→4 → grouped 3×3/2 (groups 2, 4→6: 2 inputs and 3 outputs a group, padding 1) → flatten → linear."""
    b = NetBuilder(np.random.default_rng(seed), InputSpec(shape=(3, 6, 5), bits=8, scale=1 / 255))
    b.synaptic("conv2d", 4, 8, 8, 1, 0, 2, 2, kernel=3, stride=1, padding=0)
    b.synaptic("conv2d", 6, 2, 2, 2, 2, 2, 2, kernel=3, stride=2, padding=1, groups=2)
    b.flatten()
    b.synaptic("linear", 4, 3, 2, 1, 3, None, None)
    return b.manifest("groups2")


def mixed_net(seed: int = 2) -> Manifest:
    """conv 3→6 → depthwise 3×3 (groups 6, padding 1) → grouped 3×3/2 (groups 2, 3 channels a group) → linear.

    Folded as ``MIXED_FOLD``: the grouped layer's 3 PEs are one group's outputs and its 2 lanes take a
    group's 3 channels in two words (the second word's second lane is padding).
    """
    b = NetBuilder(np.random.default_rng(seed), InputSpec(shape=(3, 6, 5), bits=8, scale=1 / 255))
    b.synaptic("conv2d", 6, 8, 8, 1, 0, 2, 2, kernel=3, stride=1, padding=0)
    b.synaptic("conv2d", 6, 3, 2, 2, 2, 2, 3, kernel=3, stride=1, padding=1, groups=6)
    b.synaptic("conv2d", 6, 2, 3, 2, 2, 2, 2, kernel=3, stride=2, padding=1, groups=2)
    b.flatten()
    b.synaptic("linear", 4, 3, 2, 1, 3, None, None)
    return b.manifest("mixed-groups")


MIXED_FOLD = "conv0=2x1,conv2=3x2"


# ---- manifest


def test_groups_round_trips_and_is_left_out_when_one():
    m = depthwise_net()
    metas = [l for l in m.metadata()["layers"] if l["op"] == "conv2d"]
    assert "groups" not in metas[0] and metas[1]["groups"] == 4 and metas[2]["groups"] == 2
    assert m.layers[1].weight.shape == (4, 1, 3, 3) and m.layers[2].weight.shape == (4, 2, 1, 1)
    assert loads(m.to_bytes()) == m
    assert loads(m.to_bytes()).to_bytes() == m.to_bytes()


def _refused(mutate) -> ManifestError:
    m = depthwise_net()
    meta, tensors = m.metadata(), dict(m.tensors())
    mutate(meta["layers"][2], tensors)
    with pytest.raises(ManifestError) as exc:
        from_parts(meta, tensors)
    assert "'conv2'" in exc.value.layer
    return exc.value


def test_groups_that_do_not_fit_are_refused_with_layer_and_field():
    def set_groups(value):
        return lambda meta, tensors: meta.__setitem__("groups", value)

    # 3 groups divide neither the 4 inputs nor the 4 outputs
    e = _refused(set_groups(3))
    assert e.field == "groups" and "does not divide" in str(e)
    for bad in (0, True, "2", 2.0):
        assert _refused(set_groups(bad)).field == "groups"
    # the weight's second axis must be in / groups: [4, 2, 1, 1] read as 4 groups of 1 channel
    e = _refused(set_groups(4))
    assert e.field == "conv2.weight" and "per group" in str(e)

    # a weight of 4 input channels read as 2 groups (2 a group)
    def wide_weight(meta, tensors):
        tensors["conv2.weight"] = np.zeros((4, 4, 1, 1), np.int64)

    assert _refused(wide_weight).field == "conv2.weight"


# ---- golden model


def test_golden_equals_plain_integer_reference():
    for m in (depthwise_net(), groups2_net()):
        x = np.random.default_rng(5).integers(0, 256, size=(3, *m.input.shape))
        x[0] = 255
        res = GoldenModel(m).run(x, trace=True)
        for i in range(len(x)):
            ref = run_reference(m, x[i])
            for layer in m.layers:
                np.testing.assert_array_equal(res.trace[layer.name].out[i].numpy(), np.array(ref[layer.name]["out"]),
                                              err_msg=f"{m.name} sample {i} layer {layer.name}")
                if layer.is_synaptic:
                    np.testing.assert_array_equal(res.trace[layer.name].acc[i].numpy(),
                                                  np.array(ref[layer.name]["acc"]))


def test_golden_grouped_sum_equals_torch_conv2d_groups():
    """Small integers are exact in float64: the grouped sum is torch's conv2d with groups."""
    from bitspike.ops.conv2d import conv2d_int

    rng = np.random.default_rng(0)
    s = torch.from_numpy(rng.integers(0, 16, size=(2, 6, 5, 4)))
    w = torch.from_numpy(rng.integers(-7, 8, size=(9, 2, 3, 2)))
    got = conv2d_int(s, w, (2, 1), (1, 1), groups=3)
    want = torch.nn.functional.conv2d(s.double(), w.double(), stride=(2, 1), padding=(1, 1), groups=3)
    assert torch.equal(got, want.to(torch.int64))


def test_accumulator_range_counts_only_a_groups_inputs():
    from bitspike.analysis import analyse

    m = depthwise_net()
    layer = m.layers[1]
    r = analyse(m)[layer.name]
    w = layer.weight.reshape(4, -1)
    hi = (np.where(w > 0, w, 0).sum(axis=1) * r.count.hi + layer.bias).max()
    assert r.acc.hi == int(hi)  # 9 taps of one channel, not 4·9


# ---- plan


def test_plan_folds_respect_the_groups():
    from bitspike.gen.plan import make_plan

    m = groups2_net()
    # 2 groups of 3 outputs and 2 inputs: pes must divide 3, lanes at most 2
    with pytest.raises(HardwareError, match="pes 2 must divide the 3"):
        make_plan(m, fold="conv1=2x1")
    with pytest.raises(HardwareError, match="lanes 3"):
        make_plan(m, fold="conv1=1x3")
    node = make_plan(m, fold="conv1=3x2").layer("conv1")
    assert (node.groups, node.pes, node.lanes, node.in_features) == (2, 3, 2, 4)
    # 2 PE groups × 9 taps × 1 word, each 3·2·2 bits wide
    assert node.memory_bits == 2 * 9 * 3 * 2 * 2 == node.memory_bits_bound
    auto = make_plan(m).layer("conv1")  # the auto folds pick only legal ones: the next PE count after 1 is 3, not 2
    assert (auto.pes, auto.lanes) == (3, 2)


def test_grouped_word_structure_hooks():
    """conv2d's synaptic hooks (what the shared weight layout, busy and arrival models read) split by group."""
    from dataclasses import replace

    from bitspike.gen.plan import make_plan
    from bitspike.ops.base import OPS
    from bitspike.ops.neuron import SynapticOp

    conv = OPS["conv2d"]
    m = groups2_net()
    plan = make_plan(m, fold="conv1=3x2")
    node = plan.layer("conv1")  # 2 groups of 2 inputs and 3 outputs
    assert conv.tap_inputs(node) == 2
    # one word per group (its 2 channels): words end at channels 1 and 3; round r (outputs 3r…) reads its group's
    assert conv.frame_words(node) == [1, 3]
    assert [conv.words_read(node, r) for r in range(2)] == [range(0, 1), range(1, 2)]
    one = replace(node, pes=1, lanes=1)
    assert conv.frame_words(one) == [0, 1, 2, 3]
    assert [conv.words_read(one, r) for r in range(6)] == [range(0, 2)] * 3 + [range(2, 4)] * 3
    # a group's 3 channels in words of 2 lanes: the second word of each group is half padding
    mixed = make_plan(mixed_net(), fold=MIXED_FOLD).layer("conv2")
    assert conv.frame_words(mixed) == [1, 2, 4, 5]
    # the auto folder's choices: PE counts dividing 3, lane counts dividing 2; every pair is a fold conv2d takes
    pes, lanes = conv.fold_choices(node)
    assert (pes, lanes) == ([1, 3], [1, 2])
    for p in pes:
        for l in lanes:
            assert conv.fold(node, m.layer("conv1"), plan.ranges["conv1"], p, l).pes == p
    # one group: exactly the dense (shared) structure, for every fold
    dense = replace(node, groups=1)
    for p in range(1, 7):
        for l in range(1, 5):
            n = replace(dense, pes=p, lanes=l)
            rounds = -(-n.out_features // p)
            assert conv.frame_words(n) == SynapticOp.frame_words(conv, n)
            assert [conv.words_read(n, r) for r in range(rounds)] == [SynapticOp.words_read(conv, n, r)
                                                                      for r in range(rounds)]
    assert conv.tap_inputs(dense) == 4 and conv.fold_choices(dense) == SynapticOp.fold_choices(conv, dense)


# ---- generated hardware in Verilator


def test_depthwise_and_grouped_net_folded_cosim_bit_exact_and_timed(check_cosim):
    check_cosim(mixed_net(), seed=3, fold=MIXED_FOLD)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [21, 22])
def test_grouped_nets_cosim_bit_exact_and_timed(seed, check_cosim):
    check_cosim(depthwise_net(seed), seed=seed)  # auto folds
    check_cosim(groups2_net(seed), seed=seed, fold="conv1=3x2")
    check_cosim(groups2_net(seed), seed=seed)  # auto: conv0 4x3, conv1 steps from 1 to 3 PEs (2 does not divide 3)
    check_cosim(mixed_net(seed), seed=seed, fold="conv0=3x3,conv2=1x3")


# ---- training layer and export


def test_depthwise_model_trains_and_exports_its_groups():
    """A model with a depthwise and a grouped conv trains two steps, exports, and golden = fake-quant."""
    from bitspike.host.data import images_for_manifest, load_dataset
    from bitspike.host.export import export_model
    from bitspike.host.models import BitNet, BitPlan
    from bitspike.host.quant import QConv2d, QLinear, quant_layers

    torch.manual_seed(0)
    plan = BitPlan(3, 2, 2)
    body = [
        QConv2d(1, 4, 3, plan.first_neuron(), plan.first_wq(), padding=1),
        QConv2d(4, 4, 3, plan.neuron(), plan.wq(), padding=1, groups=4),  # depthwise
        nn.MaxPool2d(2),
        QConv2d(4, 4, 1, plan.neuron(), plan.wq(), groups=2),
        nn.MaxPool2d(2),
        nn.Flatten(),
        QLinear(16, 10, plan.neuron(), plan.wq(), relu=False, is_last=True),
    ]
    model = BitNet("cnn", (1, 8, 8), 10, body, plan)
    train_ds = load_dataset("digits", "train")
    x = torch.as_tensor(train_ds.images[:256]).float() / 255
    y = torch.as_tensor(train_ds.labels[:256]).long()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        model(x)  # settle BatchNorm statistics with the trained weights
    model.eval()
    assert quant_layers(model)[1].weight.shape == (4, 1, 3, 3)
    m = export_model(model, train_ds.images[:256])
    assert [getattr(l, "groups", None) for l in m.layers if l.op == "conv2d"] == [1, 4, 2]
    assert loads(m.to_bytes()) == m
    test = load_dataset("digits", "test")
    images = test.images[:64]
    golden = GoldenModel(m).run(images_for_manifest(images, m))
    from bitspike.host.agreement import audit

    report = audit(model, m, images)
    assert report.violations == []
    assert report.disagreements <= report.uncertain
    assert torch.equal(golden.classes, torch.as_tensor(report.int_classes))


def test_depthwise_fake_quant_logits_equal_golden_integers_exactly():
    """Powers-of-two scales, no BatchNorm (as tests/test_export.py's MLP): the trained model with a depthwise
    conv and the exported integer network are the same function, logit for logit."""
    from test_export import _set_layer

    from bitspike.host.data import images_for_manifest, load_dataset
    from bitspike.host.export import export_model
    from bitspike.host.models import BitNet, BitPlan
    from bitspike.host.quant import QConv2d, QLinear

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    plan = BitPlan(3, 2, 1, learnable=True, input_scale=1 / 256)
    conv1 = QConv2d(1, 4, 3, plan.first_neuron(), plan.first_wq(), padding=1, bias=True, bn=False)
    conv2 = QConv2d(4, 4, 3, plan.neuron(), plan.wq(), padding=1, bias=True, bn=False, groups=4)
    fc = QLinear(4 * 4 * 4, 10, plan.neuron(), plan.wq(), relu=False, is_last=True)
    model = BitNet("cnn", (1, 8, 8), 10, [conv1, conv2, nn.MaxPool2d(2), nn.Flatten(), fc], plan).double().eval()
    k = 8
    _set_layer(conv1, -6, None, 8, 8, 1, gen, bias_unit=2.0**-8 / 2**k)
    _set_layer(conv2, -2, -8, 3, 2, 2, gen, bias_unit=2.0**-6 / 2**k)
    _set_layer(fc, -3, -6, 2, 3, 2, gen, bias_unit=2.0**-3 * 2.0**-6 / 2)
    test = load_dataset("digits", "test")
    images = test.images[:64]
    m = export_model(model, images, current_bits=k)
    assert m.layer("conv2").groups == 4 and m.layer("conv2").weight.shape == (4, 1, 3, 3)
    with torch.no_grad():
        logits = model(torch.as_tensor(images).double() / 256)
    ints = logits / (2.0**-3 * 2.0**-6 / 2)
    assert torch.equal(ints, ints.round())
    golden = GoldenModel(m).run(images_for_manifest(images, m), trace=True)
    assert torch.equal(ints.to(torch.int64), golden.logits)
    s2 = golden.trace["conv2"].s  # not trivial: the depthwise layer's neurons spike
    assert int((s2 > 0).sum()) > 0.05 * s2.numel()
