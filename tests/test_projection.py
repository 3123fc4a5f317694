"""Tests of the projection of learned bits into the target window (host/train.py ``project_bits``)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from bitspike.errors import BitspikeError
from bitspike.host.models import BitPlan, build_model
from bitspike.host.train import _within, average_bits, input_sizes, learnable_layers, project_bits


def _net(arch, plan, shape, seed=0, spread=1.0):
    model = build_model(arch, shape, 10, plan, hidden=(128,))
    gen = torch.Generator().manual_seed(seed)
    for layer in learnable_layers(model):
        for p in (layer.wq.bits, layer.neuron.s_bits, layer.neuron.timesteps):
            with torch.no_grad():
                p.value.copy_(p.value + (torch.rand((), generator=gen) * 2 - 1) * spread)
    return model, input_sizes(model, torch.device("cpu"))


def _values(model):
    return [[float(torch.clamp(p.value.detach(), p.lo, p.hi)) for p in (l.wq.bits, l.neuron.s_bits, l.neuron.timesteps)]
            for l in learnable_layers(model)]


def _bits(model):
    return [(l.w_bits, l.s_bits, l.timesteps) for l in learnable_layers(model)]


@pytest.mark.parametrize("seed", range(4))
def test_projection_is_the_nearest_allocation_in_the_window(seed):
    """On cnn-fc (3 learnable layers) compare with a brute-force search over every allocation."""
    model, sizes = _net("cnn-fc", BitPlan(3, 3, 1), (1, 28, 28), seed)
    target = (2, 2, 1)
    values = _values(model)
    layers = learnable_layers(model)
    wn = [l.weight.numel() for l in layers]
    fn = [sizes[l] for l in layers]
    ranges = [[range(p.lo, p.hi + 1) for p in (l.wq.bits, l.neuron.s_bits, l.neuron.timesteps)] for l in layers]
    best = None
    per_kind = []
    for k, n in ((0, wn), (1, fn), (2, fn)):
        options = []
        for combo in itertools.product(*[r[k] for r in ranges]):
            avg = sum(a * b for a, b in zip(n, combo)) / sum(n)
            if abs(avg - target[k]) <= 0.1 * target[k] + 1e-9:
                options.append((avg, sum((v[k] - q) ** 2 for v, q in zip(values, combo)), combo))
        per_kind.append(options)
    for w, s, t in itertools.product(*per_kind):
        if w[0] * s[0] * t[0] <= 4 + 1e-9 and (best is None or w[1] + s[1] + t[1] < best[0] - 1e-12):
            best = (w[1] + s[1] + t[1], list(zip(w[2], s[2], t[2])))
    moves = project_bits(model, sizes, target)
    assert _bits(model) == best[1]
    assert _within(average_bits(model, sizes), target)
    assert all("→" in m for m in moves)


def test_projection_leaves_an_allocation_already_inside_alone():
    model, sizes = _net("cnn-fc", BitPlan(2, 2, 1), (1, 28, 28), spread=0.0)
    before = _bits(model)
    assert project_bits(model, sizes, (2, 2, 1)) == []
    assert _bits(model) == before


def test_max_budget_relaxes_the_budget_but_not_the_window():
    model, sizes = _net("cnn-fc", BitPlan(3, 3, 2), (1, 28, 28), spread=0.0)
    project_bits(model, sizes, (1, 1, 1), max_budget=1.2)
    w, s, t = average_bits(model, sizes)
    assert all(abs(a - 1) <= 0.1 + 1e-9 for a in (w, s, t))
    assert 1 < w * s * t <= 1.2 + 1e-9  # the small layers keep more than one bit
    strict, sizes = _net("cnn-fc", BitPlan(3, 3, 2), (1, 28, 28), spread=0.0)
    project_bits(strict, sizes, (1, 1, 1))
    assert all(b == (1, 1, 1) for b in _bits(strict))


def test_shared_neuron_of_a_resnet_shortcut_gets_one_value():
    model, sizes = _net("resnet20", BitPlan(3, 3, 2), (3, 32, 32), seed=5)
    project_bits(model, sizes, (2, 2, 1))
    assert _within(average_bits(model, sizes), (2, 2, 1))
    for block in model.body:
        if getattr(block, "shortcut", None) is not None:
            assert block.shortcut.neuron is block.conv1.neuron
            assert block.shortcut.s_bits == block.conv1.s_bits


def test_unreachable_window_is_a_clear_error():
    model, sizes = _net("cnn-fc", BitPlan(1, 1, 1), (1, 28, 28), spread=0.0)
    # ranges are 1…3 bits: an average of 8 is out of reach
    with pytest.raises(BitspikeError, match="no allocation of w bits"):
        project_bits(model, sizes, (8, 2, 1))
    assert math.isfinite(average_bits(model, sizes)[0])


def test_max_budget_must_be_positive(tmp_path):
    from bitspike.host.train import TrainConfig

    with pytest.raises(BitspikeError, match="max_budget must be > 0"):
        TrainConfig(out=str(tmp_path / "x"), max_budget=0.0)


def test_project_every_keeps_every_epoch_in_the_window(tmp_path):
    """With projected steps the bits are inside the window after every epoch, not only when frozen."""
    from bitspike.host.train import TrainConfig, train

    cfg = TrainConfig(dataset="digits", arch="cnn-fc", hidden=(16,), width=4, target=(2, 2, 1), epochs=3,
                      freeze_epochs=1, project_every=5, lr=0.1, out=str(tmp_path / "p"), progress=False, threads=1)
    result = train(cfg)
    for record in result.history:
        avg = record["avg_bits"]
        assert _within((avg["w"], avg["s"], avg["t"]), (2, 2, 1)), record["epoch"]
    with pytest.raises(BitspikeError, match="project_every"):
        TrainConfig(out=str(tmp_path / "x"), project_every=-1)
