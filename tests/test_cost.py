"""The hardware cost model of ``bitspike train --cost`` (bitspike.host.cost): exact at integer bits, the
surrogate's gradients, the knapsack projection, and the command line's errors."""

from __future__ import annotations

import functools
import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch

from bitspike.errors import BitspikeError
from bitspike.gen.folding import estimate_luts
from bitspike.gen.plan import make_plan
from bitspike.host.cost import (
    PROJECTION_GRID,
    CostModel,
    current_bits_of,
    model_cost,
    project_model,
    specs_from_manifest,
)
from bitspike.host.export import export_model
from bitspike.host.models import BitPlan, build_model
from bitspike.host.quant import quant_layers

CLI = [sys.executable, "-m", "bitspike.cli"]
#: a small vgg-deep (width 4) on 28×28: six learnable layers, two max-pools, a flatten
SHAPE = (1, 28, 28)
FOLD = {"conv2": (2, 2), "conv3": (4, 2), "conv5": (2, 4), "fc1": (2, 1)}


def _images(n: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *SHAPE), dtype=np.uint8)


def _model(bits, learnable: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    w, s, t = bits
    model = build_model("vgg-deep", SHAPE, 10, BitPlan(w, s, t, learnable=learnable), width=4)
    model.train()
    with torch.no_grad():  # calibration: steps and thresholds from one batch
        model(torch.as_tensor(_images(), dtype=torch.float32) / 255.0)
    return model


@functools.lru_cache(maxsize=None)
def _manifest(bits, seed: int = 0):
    return export_model(_model(bits, seed=seed), _images(), name="cost-test")


def _exact_model(m, folds):
    syn = [l for l in m.layers if l.is_synaptic]
    bits = [(l.w_bits, l.s_bits, l.timesteps) for l in syn]
    ranges = [((b[0], b[0]), (b[1], b[1]), (b[2], b[2])) for b in bits]
    return CostModel("luts", specs_from_manifest(m, folds), ranges, m.input.size, m.num_classes), bits


@pytest.mark.parametrize("bits", [(1, 1, 1), (2, 2, 1), (3, 2, 2), (4, 3, 1)])
def test_lut_model_equals_the_generators_estimate_at_integer_bits(bits):
    m = _manifest(bits)
    for folds in ({}, FOLD):
        cm, at = _exact_model(m, folds)
        # the cost model prices the unfused engines (requantizer + next neuron), so compare with --fuse off
        plan = make_plan(m, fold={**{l.name: (1, 1) for l in m.layers if l.is_synaptic}, **folds}, fuse="off")
        assert cm.total(at) == sum(estimate_luts(lp) for lp in plan.layers)
        # the surrogate at integer bits is the same number
        vals = [tuple(torch.tensor(float(v), dtype=torch.float64) for v in b) for b in at]
        assert float(cm.differentiable(vals)) == cm.total(at)
        # cycles: the generator's interval, whatever the bits
        cc = CostModel("cycles", cm.specs, cm.ranges, m.input.size, m.num_classes)
        assert cc.total(at) == plan.initiation_interval


def test_cycles_do_not_depend_on_bits_only_on_the_fold():
    intervals = set()
    for bits in ((1, 1, 1), (4, 3, 1)):
        m = _manifest(bits)
        cm, _ = _exact_model(m, FOLD)
        intervals.add(CostModel("cycles", cm.specs, cm.ranges, m.input.size, m.num_classes).interval())
    assert len(intervals) == 1
    cm, _ = _exact_model(m, {})
    assert CostModel("cycles", cm.specs, cm.ranges, m.input.size, m.num_classes).interval() > intervals.pop()


def test_sace_and_memory_are_the_analysis_counts():
    from bitspike.analysis import network_stats

    m = _manifest((3, 2, 2))
    cm, bits = _exact_model(m, {})
    stats = network_stats(m)
    assert CostModel("sace", cm.specs, cm.ranges).total(bits) == stats.s_ace_all
    assert CostModel("memory", cm.specs, cm.ranges).total(bits) == stats.weight_memory_bits


def test_gradients_have_the_sign_of_the_cost_of_one_more_bit():
    model = _model((2, 2, 1), learnable=True)
    cm = model_cost("luts", model, _images(), FOLD)
    layer = 3  # conv4: a learnable layer with B_w, B_s and T ranges
    for unit, expect in (("luts", (1, 1, 1)), ("sace", (1, 1, 1)), ("memory", (1, 0, 0))):
        c = CostModel(unit, cm.specs, cm.ranges)
        vals = [tuple(torch.tensor(float(v), dtype=torch.float64, requires_grad=True) for v in b)
                for b in current_bits_of(model)]
        c.differentiable(vals).backward()
        grads = [float(v.grad) for v in vals[layer]]
        assert [int(np.sign(g)) for g in grads] == list(expect), (unit, grads)
        # the gradient is the cost of one more bit (the grid cell above the integer point)
        w, s, t = current_bits_of(model)[layer]
        assert grads[0] == c.layer_value(layer, w + 1, s, t) - c.layer_value(layer, w, s, t)
        assert grads[2] == c.layer_value(layer, w, s, t + 1) - c.layer_value(layer, w, s, t)


def test_projection_meets_a_lut_budget_nearest_to_the_learned_bits():
    model = _model((3, 3, 1), learnable=True)
    cm = model_cost("luts", model, _images(), FOLD)
    start = cm.total(current_bits_of(model))
    budget = start - 150
    moves = project_model(cm, model, budget)
    assert moves and cm.total(current_bits_of(model)) <= budget
    assert project_model(cm, model, budget) == []  # already within: nothing moves
    # the fixed first layer keeps 8/8/1
    assert current_bits_of(model)[0] == (8, 8, 1)
    with pytest.raises(BitspikeError, match="no allocation .* meets the LUTs"):
        project_model(cm, model, 10)


def test_knapsack_matches_brute_force_on_three_layers():
    model = _model((2, 2, 1), learnable=True)
    cm = model_cost("luts", model, _images(), {})
    sub = CostModel("luts", cm.specs[-3:], [((1, 3), (1, 3), (1, 2))] * 3)
    values = [(2.4, 2.6, 1.2), (2.9, 1.1, 1.6), (1.4, 2.5, 1.0)]
    tables = [{b: sub.layer_value(i, *b) for b in itertools.product(range(1, 4), range(1, 4), range(1, 3))}
              for i in range(3)]
    budget = sum(min(t.values()) for t in tables) + 25
    got = sub.project(values, budget)

    def move(alloc):
        return sum((v - b) ** 2 for vs, bs in zip(values, alloc) for v, b in zip(vs, bs))

    assert sum(tables[i][b] for i, b in enumerate(got)) <= budget
    slack = 3 * budget / PROJECTION_GRID  # each layer's cost rounds up to the grid
    best = min(move(a) for a in itertools.product(*[list(t) for t in tables])
               if sum(tables[i][b] for i, b in enumerate(a)) <= budget - slack)
    assert move(got) <= best + 1e-12


def test_bad_cost_options_are_clear_errors(tmp_path, capsys):
    from bitspike.cli import main

    for args, msg in ((["--cost", "luts", "--budget", "0"], "--budget must be a positive number of LUTs"),
                      (["--cost", "luts", "--budget", "-5"], "--budget must be a positive number"),
                      (["--cost", "sace", "--budget", "many"], "--budget must be a number"),
                      (["--cost", "memory"], "--cost memory needs --budget"),
                      (["--cost", "bb", "--budget", "4", "--max-budget", "3"], "disagree")):
        assert main(["train", *args, "--out", str(tmp_path / "x")]) == 1, args
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, (args, err)
    # the real process: exit status 1, one line, no traceback
    proc = subprocess.run(CLI + ["train", "--cost", "area", "--budget", "3", "--out", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "--cost must be one of bb, sace, memory, luts, cycles, got 'area'" in proc.stderr


def test_layers_of_the_first_layer_do_not_move_and_bits_stay_in_range():
    model = _model((2, 2, 1), learnable=True)
    cm = model_cost("memory", model, _images(), {})
    for l in quant_layers(model)[1:]:
        l.wq.bits.set(4)
    project_model(cm, model, cm.total(current_bits_of(model)) * 0.7)
    for l, b in zip(quant_layers(model), current_bits_of(model)):
        for p, v in zip((l.wq.bits, l.neuron.s_bits, l.neuron.timesteps), b):
            assert p.lo <= v <= p.hi
    assert current_bits_of(model)[0] == (8, 8, 1)


def test_training_with_a_memory_budget_ends_within_it(tmp_path):
    import json

    from bitspike.host.train import TrainConfig, train

    # weight memory does not depend on the weights' values, so the frozen bits meet the budget exactly
    fc1 = 64 * 16 * 8
    budget = fc1 + 16 * 10 * 2 + 100  # fc2 at 3 bits (its start) would be 480; ≤ 2 bits fits
    r = train(TrainConfig(dataset="digits", arch="mlp", hidden=(16,), epochs=2, lr=0.1, cost="memory",
                          budget=budget, out=str(tmp_path / "m"), progress=False, threads=1))
    metrics = json.loads((r.run_dir / "metrics.json").read_text())
    last = metrics["epochs"][-1]
    memory = sum(l["params"] * l["w_bits"] for l in last["layers"])
    assert last["cost"]["unit"] == "memory" and last["cost"]["value"] == memory <= budget
    assert metrics["final"]["within_target"] is True and metrics["config"]["cost"] == "memory"
    assert metrics["epochs"][0]["cost"]["value"] > budget  # it started above and was projected down
