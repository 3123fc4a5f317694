"""Training with adaptive bit allocation (docs/SEMANTICS.md §2).

Call :func:`train` with a :class:`TrainConfig`; the command line is
``bitspike train`` (:mod:`bitspike.host.train_cli`).

What a run does, per epoch: one pass over the shuffled training set (the
order depends only on the seed and the epoch, so a resumed run sees the same
batches as an uninterrupted one), evaluation on the test set, an atomically
written checkpoint ``DIR/checkpoint.ckpt``, ``DIR/metrics.json`` and the plots.

Hitting the target: the loss is CE + Σ λ_k·|B̄_k − B*_k| (k = w, s, t). While
bits may move, each λ doubles (up to 1) every epoch during which its average
misses its target by more than 5%, and every ``project_every`` steps (50) the
rounded bits are projected into the window the issue asks for: every average
within 10% of its target and the bit budget not above ``max_budget`` (by
default the target's W·S·T), at the allocation nearest to the learned
real-valued bits. The network so trains at allocations it can keep. When the
freeze phase starts (the last ``freeze_epochs``, half by default) the bits are
projected once more and frozen: the network trained in the last epochs is the
one exported. Two other variants were tried and left out: a hinge on the
budget in the loss, and a dead zone (no pull within 5% of the target). With
Adam on the bit widths both still drive one large layer's bits across a
rounding boundary and back, and neither improved accuracy (cnn-fc on 20,000
Fashion-MNIST images, 4 epochs: 87.30% with the hinge, 87.60% with the dead
zone, against 88.21% for uniform 2/2/1).

Step-size renewal (``renewal``) is gated per kind and epoch, as in the paper: during an epoch the
weight steps (thresholds) are refitted whenever a rounded B_w (B_s) changes, by learning or by a
projection, only if at the epoch's start B̄_w (B̄_s) was still more than 24% of its initial gap away
from the target. metrics.json counts every change and renewal by kind and cause (docs/TRAINING.md).

Multi-GPU / multi-process: run under ``torchrun``; each rank takes its share
of every epoch's batches and DDP averages the gradients (gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from bitspike.errors import BitspikeError, CheckpointError

from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .data import load_dataset
from .models import ARCHS, BitNet, BitPlan, build_model, layer_names
from .cost import current_bits_of, differentiable_cost, project_model, refresh_from_model
from .quant import QuantLayer, bound_bits, quant_layers, renewal_counts, set_grad_rules, set_renewal

__all__ = ["TrainConfig", "TrainResult", "train", "parse_bits", "model_from_checkpoint", "bit_summary", "evaluate"]

log = logging.getLogger("bitspike.train")

METRICS_NAME = "metrics.json"
TOLERANCE = 0.10  # the learned averages must land within 10% of the target
RENEWAL_GATE = 0.24  # renew steps only while the gap exceeds 24% of the initial gap
PROJECT_ROUNDS = 6  # projections of a hardware cost: project, refit the steps, project again
LAMBDA_MAX = 1.0  # a larger pull makes bit widths oscillate step to step, which costs accuracy


def _num(v: float) -> int | float:
    """An integral value as an int (so that targets print as 2/2/1), any other as a float."""
    v = float(v)
    return int(v) if v.is_integer() else v


def parse_bits(text: str, what: str = "--target", integers: bool = True) -> tuple:
    """Parse ``"W/S/T"`` (e.g. ``"2/2/1"``) into three numbers 1 … 16.

    ``integers=False`` accepts averages such as ``2/2/1.5`` (a target; a uniform allocation is integers).
    """
    parts = str(text).split("/")
    try:
        values = tuple(int(p) if integers else _num(float(p)) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(1 <= v <= 16 for v in values):
        kind = "integers" if integers else "numbers"
        raise BitspikeError(f"{what} must be W/S/T with {kind} 1 … 16 (e.g. 2/2/1), got {text!r}")
    return values  # type: ignore[return-value]


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in the checkpoint and metrics.json).

    Attributes
    ----------
    dataset, arch
        Data set name (:mod:`bitspike.host.data`) and architecture (:data:`~bitspike.host.models.ARCHS`).
    target
        Target average bits ``(B_w*, B_s*, T*)`` of the learnable layers (need not be integers: 2/2/1.5).
    uniform
        If set, every learnable layer is frozen at these bits (the baseline); ``target`` is then ignored.
    epochs, batch_size, lr
        Training length and SGD settings (lr of weights, steps and thresholds).
    freeze_epochs
        Final epochs with frozen bits (``None``: half the epochs, at least 1: the network then trains as long at its final bits as it did while they moved).
    renewal
        Step-size renewal: ``"all"`` (weights and thresholds), ``"spikes"`` (thresholds only) or ``"none"``.
    init_extra
        Learnable bit widths start this many bits above the target (the run learns its way down).
    max_budget
        Largest bit budget B̄_w·B̄_s·T̄ of the frozen bits (``None``: the target's W·S·T).
    project_every
        While bits learn, project them into the target window every this many optimizer steps
        (projected gradient; 0: only when they freeze). Without it, the bits of small layers climb
        (their task gradient outweighs their tiny share of the averages), a large layer's bits swing
        across a rounding boundary to pay for them, and the network trains for epochs at allocations
        the final projection takes away: on cnn-fc, Fashion-MNIST, 2/2/1, 6 epochs, 89.86% deployed
        without against 91.31% with projection every 50 steps (uniform 2/2/1: 91.11%).
    first_layer
        ``"fixed"``: the first layer keeps 8-bit weights and T = 1 (the paper); ``"learn"``: its B_w and T
        learn like every other layer's, while its input stays 8-bit pixels (its B_s is fixed at 8).
    cost, budget, cost_fold
        What the bits are budgeted in (:data:`~bitspike.host.cost.COST_UNITS`): ``"bb"`` (the paper's bit
        budget; ``budget`` is then ``max_budget``), ``"sace"``, ``"memory"`` or ``"luts"`` (the target loss
        pulls the network's cost to ``budget`` and the projection keeps it at or below it; the per-kind
        target window is not used), or ``"cycles"`` (bits as for ``"bb"``; the interval at ``cost_fold``
        does not depend on them and must be within ``budget``). ``cost_fold``: per-layer folds the
        hardware cost is taken at (``"conv2=4x4,fc1=2x1"``; 1×1 where not named).
    vth_grad, detach_history
        The threshold's LSQ gradient scale (``"batch"``: 1/sqrt(batch·N·q), the authors'; ``"sample"``:
        1/sqrt(N·q)) and whether the membrane carried between timesteps is left out of the backward pass
        (the authors': yes). docs/TRAINING.md has the measurement behind the defaults.
    """

    dataset: str = "digits"
    arch: str = "mlp"
    target: tuple[int, int, int] = (2, 2, 1)
    uniform: tuple[int, int, int] | None = None
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    optimizer: str = "sgd"
    bit_lr: float = 0.003
    t_lr: float = 0.003
    weight_decay: float = 1e-4
    freeze_epochs: int | None = None
    renewal: str = "all"
    max_budget: float | None = None
    project_every: int = 50
    init_extra: int = 1
    lambdas: tuple[float, float, float] | None = None
    device: str = "auto"
    seed: int = 0
    out: str = "runs/train"
    data: str | None = None
    hidden: tuple[int, ...] = (128,)
    width: int | None = None
    train_limit: int | None = None
    threads: int | None = None
    progress: bool = True
    resume: bool = False
    first_layer: str = "fixed"
    vth_grad: str = "batch"
    detach_history: bool = True
    cost: str = "bb"
    budget: float | None = None
    cost_fold: str | None = None

    def __post_init__(self):
        self.target = tuple(_num(v) for v in self.target)  # type: ignore[assignment]
        if self.uniform is not None:
            self.uniform = tuple(int(v) for v in self.uniform)  # type: ignore[assignment]
        self.hidden = tuple(int(v) for v in self.hidden)
        if self.lambdas is not None:
            self.lambdas = tuple(float(v) for v in self.lambdas)  # type: ignore[assignment]
        if self.arch not in ARCHS:
            raise BitspikeError(f"unknown architecture {self.arch!r}; expected one of {list(ARCHS)}")
        if self.optimizer not in ("sgd", "adam"):
            raise BitspikeError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.first_layer not in ("fixed", "learn"):
            raise BitspikeError(f"first_layer must be 'fixed' or 'learn', got {self.first_layer!r}")
        if self.vth_grad not in ("batch", "sample"):
            raise BitspikeError(f"vth_grad must be 'batch' or 'sample', got {self.vth_grad!r}")
        if not all(1 <= v <= 16 for v in self.target) or len(self.target) != 3:
            raise BitspikeError(f"target must be three numbers 1 … 16, got {self.target}")
        if self.renewal not in ("all", "spikes", "none"):
            raise BitspikeError(f"renewal must be 'all', 'spikes' or 'none', got {self.renewal!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise BitspikeError(f"epochs and batch size must be ≥ 1 and lr > 0, got {self.epochs}, {self.batch_size}, {self.lr}")
        if self.project_every < 0:
            raise BitspikeError(f"project_every must be ≥ 0 (0: only when the bits freeze), got {self.project_every}")
        if self.max_budget is not None and not self.max_budget > 0:
            raise BitspikeError(f"max_budget must be > 0, got {self.max_budget}")
        from .cost import COST_UNITS, UNIT_NAMES

        if self.cost not in COST_UNITS:
            raise BitspikeError(f"--cost must be one of {', '.join(COST_UNITS)}, got {self.cost!r}")
        if self.budget is not None:
            try:
                self.budget = float(self.budget)
            except (TypeError, ValueError):
                raise BitspikeError(f"--budget must be a number, got {self.budget!r}") from None
            if not (self.budget > 0 and math.isfinite(self.budget)):
                raise BitspikeError(f"--budget must be a positive number of {UNIT_NAMES[self.cost]}, got {self.budget:g}")
        if self.cost == "bb" and self.budget is not None:
            if self.max_budget is not None and self.max_budget != self.budget:
                raise BitspikeError(f"--budget {self.budget:g} and --max-budget {self.max_budget:g} disagree; with "
                                    "--cost bb they are the same thing, give one")
            self.max_budget = self.budget
        if self.cost != "bb" and self.budget is None:
            raise BitspikeError(f"--cost {self.cost} needs --budget (in {UNIT_NAMES[self.cost]})")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise BitspikeError(f"device must be auto, cpu or cuda, got {self.device!r}")

    @property
    def freeze(self) -> int:
        if self.uniform is not None:
            return 0
        if self.freeze_epochs is not None:
            return min(self.freeze_epochs, self.epochs)
        return max(1, self.epochs // 2)

    @property
    def cost_targeted(self) -> bool:
        """The bits are budgeted in a hardware unit (the target loss and the projection use it)."""
        return self.cost in ("sace", "memory", "luts") and self.uniform is None

    @property
    def goal(self) -> tuple[int, int, int]:
        return self.uniform if self.uniform is not None else self.target

    def plan(self, input_scale: float = 1.0 / 255.0) -> BitPlan:
        first = self.first_layer == "learn"
        if self.uniform is not None:
            w, s, t = self.uniform
            return BitPlan(w, s, t, learnable=False, input_scale=input_scale, first_learn=first)
        w, s, t = (math.ceil(v) for v in self.target)
        return BitPlan(w + self.init_extra, s + self.init_extra, t, learnable=True, input_scale=input_scale,
                       first_learn=first)

    def default_lambdas(self) -> tuple[float, float, float]:
        if self.lambdas is not None:
            return self.lambdas
        return (0.04, 0.04, 0.01) if max(self.target[:2]) < 3 else (0.01, 0.02, 0.01)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("target", "uniform", "hidden", "lambdas"):
            if out[k] is not None:
                out[k] = list(out[k])
        return out

    @classmethod
    def from_json(cls, meta: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in meta.items() if k in known})


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    test_accuracy: float
    avg_bits: dict[str, float]
    epochs: int
    wall_s: float
    history: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# bits: averages, loss, projection


def input_sizes(model: BitNet, device: torch.device) -> dict[QuantLayer, int]:
    """Per-sample input size (numel) of every synaptic layer, from one dummy forward pass."""
    sizes: dict[QuantLayer, int] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args: sizes.__setitem__(mod, int(args[0][0].numel())))
             for m in quant_layers(model)]
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros((1, *model.in_shape), device=device))
    model.train(was)
    for h in hooks:
        h.remove()
    return sizes


def _kind_params(layer: QuantLayer) -> tuple:
    """The layer's B_w, B_s and T parameters, in that order."""
    return layer.wq.bits, layer.neuron.s_bits, layer.neuron.timesteps


def kind_layers(model: nn.Module, kind: int) -> list[QuantLayer]:
    """The layers whose bits of one kind (0: B_w, 1: B_s, 2: T) are allocated: their range is not one value.

    The fixed first layer (8-bit weights and input, T = 1) is in none of them; with ``--first-layer learn`` it
    is in the B_w and T averages but not in B_s (its input is always 8-bit pixels). In a uniform run the
    layers are frozen but their ranges are those of an adaptive run, so the averages cover the same layers.
    """
    layers = [l for l in quant_layers(model) if _kind_params(l)[kind].hi > _kind_params(l)[kind].lo]
    return layers or quant_layers(model)


def learnable_layers(model: nn.Module) -> list[QuantLayer]:
    """Layers with at least one allocated kind of bits (see :func:`kind_layers`)."""
    keep = {id(l) for k in range(3) for l in kind_layers(model, k)}
    return [l for l in quant_layers(model) if id(l) in keep]


def _kind_count(layer: QuantLayer, kind: int, sizes: dict[QuantLayer, int]) -> float:
    """A layer's weight in an average: its weight count for B_w, its input size for B_s and T."""
    return float(layer.weight.numel()) if kind == 0 else float(sizes[layer])


def average_bits(model: nn.Module, sizes: dict[QuantLayer, int], differentiable: bool = False):
    """(B̄_w, B̄_s, T̄) over the allocated layers: weights weighted by count, spikes and T by input size."""
    out = []
    for kind in range(3):
        layers = kind_layers(model, kind)
        n = [_kind_count(l, kind, sizes) for l in layers]
        if differentiable:
            vals = [_kind_params(l)[kind]() for l in layers]
        else:
            vals = [_kind_params(l)[kind].current() for l in layers]
        out.append(sum(c * v for c, v in zip(n, vals)) / sum(n))
    return tuple(out)


def budget_limit(target: tuple, max_budget: float | None = None) -> float:
    """The largest bit budget allowed: ``max_budget``, or the target's W·S·T when it is ``None``."""
    return float(math.prod(target)) if max_budget is None else float(max_budget)


def _within(avg: tuple[float, float, float], target: tuple[int, int, int], max_budget: float | None = None) -> bool:
    """Each average within 10% of its target and the bit budget not above :func:`budget_limit`."""
    ok = all(abs(a - t) <= TOLERANCE * t + 1e-9 for a, t in zip(avg, target))
    return ok and avg[0] * avg[1] * avg[2] <= budget_limit(target, max_budget) + 1e-9


def _frontier(values: list[float], counts: list[float], lo: list[int], hi: list[int],
              window: tuple[float, float]) -> list[tuple[float, float, tuple[int, ...]]]:
    """Every useful integer allocation of one kind of bits whose weighted average lies in ``window``.

    ``values`` are the learned real-valued parameters, ``counts`` the layers' weights in the average.
    The cost of an allocation is Σ (value − bits)² (how far it moves what was learned; squared, so
    two one-bit moves are preferred to one two-bit move). A dynamic
    programme over the layers keeps, for each average (on a 1/4096-bit grid), the cheapest
    allocation; the result is its Pareto front: (average, cost, bits), average ascending, each
    entry cheaper than every entry with a smaller average.
    """
    total = float(sum(counts))
    grid = 4096.0
    states: dict[int, tuple[float, float, tuple[int, ...]]] = {0: (0.0, 0.0, ())}  # key → (exact sum, cost, bits)
    for v, n, a, b in zip(values, counts, lo, hi):
        nxt: dict[int, tuple[float, float, tuple[int, ...]]] = {}
        options = range(a, b + 1)
        for exact, cost, bits in states.values():
            for q in options:
                e = exact + n * q
                c = cost + (v - q) ** 2
                key = int(round(e / total * grid))
                old = nxt.get(key)
                if old is None or c < old[1] - 1e-12:
                    nxt[key] = (e, c, bits + (q,))
        states = nxt
    inside = sorted((e / total, c, bits) for e, c, bits in states.values() if window[0] - 1e-9 <= e / total <= window[1] + 1e-9)
    front: list[tuple[float, float, tuple[int, ...]]] = []
    for avg, cost, bits in inside:
        if not front or cost < front[-1][1] - 1e-12:
            front.append((avg, cost, bits))
    return front


def project_bits(model: nn.Module, sizes: dict[QuantLayer, int], target: tuple[int, int, int],
                 max_budget: float | None = None) -> list[str]:
    """Set the rounded bits to the allocation inside the target window nearest to what was learned.

    The window: each average (B̄_w, B̄_s, T̄) within 10% of its target and the bit budget
    B̄_w·B̄_s·T̄ not above ``max_budget`` (default: the target's W·S·T). Among the allocations in it, the one chosen moves the
    learned real-valued bit parameters least (Σ (value − bits)² over layers and kinds); with no
    move needed, nothing changes. Returns a description of each layer's change.

    Raises
    ------
    BitspikeError
        When no allocation within the layers' bit ranges reaches the window.
    """
    if _within(average_bits(model, sizes), target, max_budget):
        return []
    names = layer_names(model)
    fronts = []
    groups = []  # per kind: unique parameters (a shared neuron counts once, with its layers' sizes summed)
    for kind in range(3):
        uniq: dict[int, list] = {}
        for l in kind_layers(model, kind):
            n = _kind_count(l, kind, sizes)
            p = _kind_params(l)[kind]
            entry = uniq.setdefault(id(p), [p, 0.0, []])
            entry[1] += n
            entry[2].append(names[l])
        groups.append(list(uniq.values()))
        params = [g[0] for g in groups[kind]]
        t = target[kind]
        front = _frontier([min(max(float(p.value.detach()), p.lo), p.hi) for p in params], [g[1] for g in groups[kind]],
                          [p.lo for p in params], [p.hi for p in params], ((1 - TOLERANCE) * t, (1 + TOLERANCE) * t))
        if not front:
            raise BitspikeError(
                f"no allocation of {'wst'[kind]} bits within the layers' ranges reaches {t} ± {TOLERANCE:.0%}; "
                "widen the ranges or change the target"
            )
        fronts.append(front)
    budget = budget_limit(target, max_budget) + 1e-9
    best = None
    for w in fronts[0]:
        for s_ in fronts[1]:
            if w[0] * s_[0] * fronts[2][0][0] > budget:
                break  # averages ascend: larger spike averages only get worse
            for t_ in fronts[2]:
                if w[0] * s_[0] * t_[0] > budget:
                    break
                cost = w[1] + s_[1] + t_[1]
                if best is None or cost < best[0] - 1e-12:
                    best = (cost, (w[2], s_[2], t_[2]))
    if best is None:
        raise BitspikeError(f"no allocation within the layers' ranges meets the bit budget {budget - 1e-9:g}")
    moves: list[str] = []
    for kind in range(3):
        for (p, _, who), q in zip(groups[kind], best[1][kind]):
            old = p.current()
            if old != q:
                p.set(q)
                moves.append(f"{'+'.join(who)} {'wst'[kind]}: {old} → {q}")
    return moves


def bit_summary(model: nn.Module, sizes: dict[QuantLayer, int]) -> dict[str, Any]:
    """Per-layer bits and the averages, for metrics.json."""
    names = layer_names(model)
    layers = []
    for l in quant_layers(model):
        layers.append({"name": names[l], "w_bits": l.w_bits, "s_bits": l.s_bits, "timesteps": l.timesteps,
                       "fixed": not l.learnable, "params": int(l.weight.numel()), "in_size": sizes[l]})
    w, s, t = average_bits(model, sizes)
    return {"layers": layers, "avg_bits": {"w": w, "s": s, "t": t}, "bit_budget": w * s * t}


# ----------------------------------------------------------------------------------------------
# data and devices


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BitspikeError("--device cuda asked for, but no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def _to_float(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(images).to(device)
    return x.to(torch.float32) / 255.0


@torch.no_grad()
def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, device: torch.device, batch: int = 1000) -> float:
    """Accuracy (fraction) of the fake-quantized model on uint8 images."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch):
        logits = model(_to_float(images[i : i + batch], device))
        correct += int((logits.argmax(dim=1).cpu() == torch.as_tensor(labels[i : i + batch])).sum())
    model.train(was)
    return correct / max(1, len(labels))


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_from_checkpoint(state: dict[str, Any]) -> tuple[BitNet, TrainConfig]:
    """Rebuild a trained model (on the CPU, eval mode) from a loaded checkpoint."""
    try:
        config = TrainConfig.from_json(dict(state["config"]))
        model = build_model(config.arch, tuple(state["in_shape"]), int(state["num_classes"]),
                            config.plan(float(state.get("input_scale", 1 / 255))), config.hidden, config.width)
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint does not fit the model it describes ({type(exc).__name__}: {exc})") from None
    model.eval()
    return model, config


# ----------------------------------------------------------------------------------------------
# the loop


class _Optimizers:
    """Weights, steps and thresholds: SGD with momentum (or Adam); bit widths and T: Adam.

    Bit widths get their gradient summed over every clipped weight or neuron, so its size grows
    with the layer; Adam's per-parameter normalisation makes a bit width move at about
    ``bit_lr`` per step whatever the layer's size.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig):
        self.model = model
        weights, quant, bits, steps_t = [], [], [], []
        seen: set[int] = set()
        for name, p in model.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            if name.endswith("timesteps.value"):
                steps_t.append(p)
            elif name.endswith("bits.value"):
                bits.append(p)
            elif name.endswith((".step", ".vth")) or ".bn." in name or name.endswith("bias"):
                quant.append(p)
            else:
                weights.append(p)
        groups = [{"params": weights, "weight_decay": cfg.weight_decay}, {"params": quant, "weight_decay": 0.0}]
        if cfg.optimizer == "adam":
            self.main = torch.optim.Adam(groups, lr=cfg.lr)
        else:
            self.main = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9)
        self.bits = torch.optim.Adam([{"params": bits, "lr": cfg.bit_lr}, {"params": steps_t, "lr": cfg.t_lr}])
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.main, T_max=cfg.epochs)

    def zero_grad(self) -> None:
        self.main.zero_grad(set_to_none=True)
        self.bits.zero_grad(set_to_none=True)

    def step(self, bits: bool = True) -> None:
        """One step; ``bits=False`` leaves bit widths and T alone (the freeze phase; their gradients are
        still computed, so DDP sees the same parameters used in every iteration)."""
        self.main.step()
        if bits:
            self.bits.step()
            bound_bits(self.model)

    def state_dict(self) -> dict[str, Any]:
        return {"main": self.main.state_dict(), "bits": self.bits.state_dict(), "sched": self.sched.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.main.load_state_dict(state["main"])
        self.bits.load_state_dict(state["bits"])
        self.sched.load_state_dict(state["sched"])


class _Run:
    """The state of one training run (rank-local)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = _device(cfg.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.out = Path(cfg.out)
        self.main = self.rank == 0

    def log(self, msg: str) -> None:
        if self.main:
            log.info(msg)


def train(config: TrainConfig) -> TrainResult:
    """Train a network with adaptive (or uniform) bit allocation.

    Parameters
    ----------
    config
        The run's settings; ``config.out`` is the run folder (checkpoint,
        metrics.json, plots). With ``config.resume`` an existing checkpoint in
        it is continued.

    Returns
    -------
    TrainResult
        With ``run_dir`` (pass it to :func:`bitspike.host.export.export_run`).

    Raises
    ------
    BitspikeError
        Bad settings, a missing data set, or (``CheckpointError``) a checkpoint that cannot be resumed.
    """
    cfg = config
    run = _Run(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train_ds = load_dataset(cfg.dataset, "train", cfg.data)
    test_ds = load_dataset(cfg.dataset, "test", cfg.data)
    images, labels = train_ds.images, train_ds.labels
    if cfg.train_limit:
        images, labels = images[: cfg.train_limit], labels[: cfg.train_limit]
    device = run.device
    if device.type == "cuda":  # same seed, same device, same result: deterministic kernels
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    # the whole training set lives on the device as uint8; batches are gathered there
    images_dev = torch.as_tensor(np.ascontiguousarray(images)).to(device)
    labels_dev = torch.as_tensor(np.ascontiguousarray(labels)).to(device)

    ckpt_path = run.out / CHECKPOINT_NAME
    state = None
    if cfg.resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        old = TrainConfig.from_json(dict(state["config"]))
        for key in ("dataset", "arch", "target", "uniform", "hidden", "width", "seed", "renewal", "init_extra", "batch_size",
                    "max_budget", "project_every", "first_layer", "vth_grad", "detach_history", "cost", "budget",
                    "cost_fold"):
            if getattr(old, key) != getattr(cfg, key):
                raise CheckpointError(
                    f"{ckpt_path}: the checkpoint was trained with {key} = {getattr(old, key)!r}, this run asks for "
                    f"{getattr(cfg, key)!r}; use another --out folder or the same settings"
                )
    elif not cfg.resume and ckpt_path.exists() and run.main:
        log.info("%s exists and --resume was not given: starting over", ckpt_path)

    _seed_all(cfg.seed)
    model = build_model(cfg.arch, train_ds.shape, train_ds.num_classes, cfg.plan(), cfg.hidden, cfg.width).to(device)
    set_grad_rules(model, cfg.vth_grad, cfg.detach_history)
    opt = _Optimizers(model, cfg)
    lambdas = list(cfg.default_lambdas())
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        lambdas = list(state["lambdas"])
        history = list(state["history"])
        start_epoch = int(state["epoch"])
        run.log(f"resuming {ckpt_path} after epoch {start_epoch}")
    else:
        # calibration: thresholds and steps from one fixed batch, identical on every rank
        model.train()
        with torch.no_grad():
            model(_to_float(images[: min(len(labels), 256)], device))
    sizes = input_sizes(model, device)
    cost_model = None
    if cfg.cost != "bb":
        from .cost import model_cost, parse_cost_fold

        cost_model = model_cost(cfg.cost, model, np.ascontiguousarray(images[: min(len(labels), 512)]),
                                parse_cost_fold(cfg.cost_fold))
        model.to(device)
        if cfg.cost == "cycles" and cost_model.interval() > cfg.budget:
            raise BitspikeError(
                f"--budget {cfg.budget:g} cycles: the pipeline's interval at these folds is {cost_model.interval()} "
                "cycles whatever the bits (each engine's neuron is unrolled over T and its PEs multiply by the spike "
                "count); widen --cost-fold or raise the budget")
    init_avg = [float(state["init_avg"][i]) for i in range(3)] if state is not None else list(average_bits(model, sizes))
    goal = cfg.goal
    init_gap = [abs(a - t) for a, t in zip(init_avg, goal)]
    lam_cost = float(state.get("lambda_cost", cfg.default_lambdas()[0])) if state is not None else cfg.default_lambdas()[0]
    if cfg.cost_targeted:
        init_cost = float(state["init_cost"]) if state is not None and "init_cost" in state else \
            cost_model.total(current_bits_of(model))
        cost_gap = abs(init_cost - cfg.budget)

    refit_batch = _to_float(images[: min(len(labels), 256)], device)

    def project() -> list[str]:
        if not cfg.cost_targeted:
            return project_bits(model, sizes, cfg.target, cfg.max_budget)
        # the LUT cost depends on the integer weights, which a renewal refits when the bits change:
        # refit at once (one forward pass, no gradient) and project again until the refitted cost fits
        moves: list[str] = []
        for _ in range(PROJECT_ROUNDS):
            refresh_from_model(cost_model, model)
            step = project_model(cost_model, model, cfg.budget)
            if not step:
                break
            moves += step
            with torch.no_grad():
                model(refit_batch)
        return moves

    net: nn.Module = model
    if run.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    freeze_from = cfg.epochs - cfg.freeze
    wall0 = time.perf_counter()
    prior_wall = float(history[-1]["wall_s"]) if history else 0.0
    for epoch in range(start_epoch, cfg.epochs):
        frozen = epoch >= freeze_from
        if frozen:
            if epoch == freeze_from and cfg.uniform is None:
                moves = project()
                if moves:
                    run.log("bits projected into the target window: " + "; ".join(moves))
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
        order = torch.randperm(len(labels), generator=gen).numpy()
        per_rank = len(order) // run.world
        order = order[run.rank * per_rank : (run.rank + 1) * per_rank] if run.world > 1 else order
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        net.train()
        total_loss, correct, seen = 0.0, 0, 0
        bar = None
        if cfg.progress and run.main:
            from tqdm import tqdm

            bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True)
        # renewal gate, per kind and epoch (the paper's): a kind's steps are renewed this epoch, whenever
        # one of its rounded bit widths changes (by learning or by projection), only while its average
        # is still more than 24% of its initial gap away from the target
        avg_start = average_bits(model, sizes)
        gate = [cfg.uniform is None and g > 0 and abs(a - t) > RENEWAL_GATE * g
                for a, t, g in zip(avg_start, goal, init_gap)]
        if cfg.cost_targeted:  # one budget for both kinds: renew while the cost is far from it
            c_now = cost_model.total(current_bits_of(model))
            gate = [cost_gap > 0 and abs(c_now - cfg.budget) > RENEWAL_GATE * cost_gap] * 3
        gate_w = gate[0] and cfg.renewal == "all"
        gate_s = gate[1] and cfg.renewal in ("all", "spikes")
        set_renewal(model, gate_w, gate_s)
        renewal_counts(model)  # start the epoch's counts from zero
        for step_in_epoch, idx in enumerate(batches, 1):
            idx_dev = torch.as_tensor(idx, device=device)
            x = images_dev[idx_dev].to(torch.float32) / 255.0
            y = labels_dev[idx_dev]
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            if cfg.cost_targeted and not frozen:
                # the target loss in the chosen unit: λ·|C/C* − 1|, λ doubling each epoch it misses by > 5%
                c = differentiable_cost(cost_model, model)
                loss = loss + lam_cost * (c / cfg.budget - 1).abs().to(loss.dtype)
                if abs(float(c.detach()) / cfg.budget - 1) > 0.05:
                    lam_cost = min(lam_cost * 2.0 ** (1.0 / len(batches)), LAMBDA_MAX)
            elif cfg.uniform is None and not frozen:
                bw, bs, bt = average_bits(model, sizes, differentiable=True)
                loss = loss + lambdas[0] * (bw - goal[0]).abs() + lambdas[1] * (bs - goal[1]).abs() + lambdas[2] * (bt - goal[2]).abs()
                # dual ascent on λ: an average that keeps missing its target gets pushed harder
                # (λ doubles every epoch while it misses by more than 5%)
                grow = 2.0 ** (1.0 / len(batches))
                for i, a in enumerate((float(bw.detach()), float(bs.detach()), float(bt.detach()))):
                    if abs(a - goal[i]) > 0.05 * goal[i]:
                        lambdas[i] = min(lambdas[i] * grow, LAMBDA_MAX)
            opt.zero_grad()
            loss.backward()
            opt.step(bits=not frozen)
            if cfg.project_every and cfg.uniform is None and not frozen and step_in_epoch % cfg.project_every == 0:
                # projected gradient: the bits never stay outside the window for long, so the network
                # trains at allocations it may keep (changed quantizers count it, and renew if gated in)
                project()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += len(idx)
            if bar is not None:
                bar.update(1)
                if bar.n % 10 == 0:
                    w, s, t = average_bits(model, sizes)
                    bar.set_postfix_str(f"loss {total_loss / seen:.3f} bits {w:.2f}/{s:.2f}/{t:.2f}")
        if bar is not None:
            bar.close()
        set_renewal(model, False)
        counts = renewal_counts(model)
        opt.sched.step()
        avg = average_bits(model, sizes)
        epoch_s = time.perf_counter() - t0
        test_acc = evaluate(model, test_ds.images, test_ds.labels, device)
        record = {
            "epoch": epoch + 1,
            "train_loss": total_loss / max(1, seen),
            "train_accuracy": correct / max(1, seen),
            "test_accuracy": test_acc,
            "epoch_s": epoch_s,
            "wall_s": prior_wall + time.perf_counter() - wall0,
            "frozen": frozen,
            "lambdas": list(lambdas),
            "renewal": {"gate": {"weights": gate_w, "spikes": gate_s}, **counts},
            **bit_summary(model, sizes),
        }
        if cost_model is not None:
            if cfg.cost_targeted:
                refresh_from_model(cost_model, model)
            record["cost"] = _cost_record(cost_model, model, cfg.budget, lam_cost)
        history.append(record)
        run.log(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {record['train_loss']:.4f} train {record['train_accuracy']:.4f} "
            f"test {test_acc:.4f} bits {avg[0]:.2f}/{avg[1]:.2f}/{avg[2]:.2f}{' (frozen)' if frozen else ''} {epoch_s:.1f}s"
        )
        if run.main:
            ckpt = {
                "config": cfg.to_json(),
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "lambdas": list(lambdas),
                "history": history,
                "init_avg": list(init_avg),
                "lambda_cost": lam_cost,
                **({"init_cost": init_cost} if cfg.cost_targeted else {}),
                "in_shape": list(train_ds.shape),
                "num_classes": train_ds.num_classes,
                "classes": list(train_ds.classes),
                "input_scale": model.input_scale,
            }
            save_checkpoint(ckpt_path, ckpt)
            _write_metrics(run.out, cfg, history, device)
        if run.world > 1:
            dist.barrier()
    if run.main:
        _write_metrics(run.out, cfg, history, device)
        try:
            from .plots import plot_run

            plot_run(run.out, history)
        except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
            log.warning("plots skipped: %s", exc)
    last = history[-1] if history else {"test_accuracy": float("nan"), "avg_bits": {}, "wall_s": 0.0}
    return TrainResult(run.out, last["test_accuracy"], last["avg_bits"], len(history), last["wall_s"], history)


def _cost_record(cost_model, model: nn.Module, budget: float | None, lam: float) -> dict[str, Any]:
    """The network's cost in the run's unit (total, per layer, budget) for metrics.json."""
    from .cost import UNIT_NAMES

    bits = current_bits_of(model)
    names = list(layer_names(model).values())
    return {"unit": cost_model.unit, "unit_name": UNIT_NAMES[cost_model.unit], "value": cost_model.total(bits),
            "budget": budget, "lambda": lam,
            "layers": {n: cost_model.layer_value(i, *b) for i, (n, b) in enumerate(zip(names, bits))}}


def _renewal_totals(history: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Bit changes and renewals summed over the epochs, per kind and cause (see :func:`~.quant.renewal_counts`)."""
    total: dict[str, dict[str, int]] = {}
    for record in history:
        for kind in ("weights", "spikes"):
            for key, n in (record.get("renewal", {}).get(kind) or {}).items():
                total.setdefault(kind, {}).setdefault(key, 0)
                total[kind][key] += int(n)
    return total


def _write_metrics(out: Path, cfg: TrainConfig, history: list[dict[str, Any]], device: torch.device) -> None:
    from bitspike.io import write_json

    last = history[-1] if history else {}
    payload = {
        "config": cfg.to_json(),
        "device": str(device),
        "epochs": history,
        "final": {
            "test_accuracy": last.get("test_accuracy"),
            "avg_bits": last.get("avg_bits"),
            "bit_budget": last.get("bit_budget"),
            "layers": last.get("layers"),
            "wall_s": last.get("wall_s"),
            "within_target": None if not last else (
                last["cost"]["value"] <= cfg.budget + 1e-9 if cfg.cost_targeted else _within(
                    (last["avg_bits"]["w"], last["avg_bits"]["s"], last["avg_bits"]["t"]), cfg.goal,
                    None if cfg.uniform is not None else cfg.max_budget)),
            "cost": last.get("cost"),
            "renewal": _renewal_totals(history),
        },
    }
    write_json(out / METRICS_NAME, payload)
