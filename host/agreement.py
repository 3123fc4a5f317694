"""Where the trained (fake-quantized) network and its integer manifest may disagree, proven per sample.

Export replaces real numbers by integers: every requantizer rounds, and its
multiplier and bias are themselves rounded. The two networks therefore
compute slightly different currents, and a neuron's spike count can differ
where a current sits next to a count boundary. Accuracy alone cannot tell a
rounding effect from an export bug, and a margin on it ("within half a point")
is crossed by training noise. This module decides it sample by sample.

For every sample it propagates, layer by layer, an integer interval that
provably contains the integer current, built from the *float* model's
values and the export's rounding bounds:

* a synaptic layer's output: ``x = clamp(floor((acc·M + B + 2**(SH-1)) / 2**SH), lo, hi)``
  with ``M = round(m·2**SH)``, ``B = round(b·2**SH)`` (the exporter rounds to
  nearest), so ``|x_raw - (acc·m + b)| <= 1/2 + (|acc|/2 + 1/2) / 2**SH``; the
  float model's output current is ``acc·m + b`` (up to float64 rounding,
  covered by a small relative margin);
* max-pool, sum-pool and flatten are monotone, so they map interval ends;
* a residual add is integer interval arithmetic on its own formula.

A neuron is *certain* when its spike count is the same at both ends of the
interval and equal to the float model's count: the spike count of the
constant-current neuron is non-decreasing in the current (see
docs/SEMANTICS.md), so every integer current in the interval gives that
count. A sample is certain when every neuron of every layer is; then the
integer network's spike counts equal the float network's everywhere (by
induction over the layers) and its logits are the float logits in
accumulator units, so both predict the same class unless the float logits
tie. :func:`audit` reports the certain samples and checks that promise on
them; the other samples are the ones that sit within the proven rounding
distance of a count boundary. The accuracy gap between the two networks is at
most the fraction of uncertain samples.

Supported graphs: what :mod:`bitspike.host.export` writes (synaptic layers,
max-pool, sum-pool, flatten, residual add).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bitspike.manifest import AddLayer, AvgPoolLayer, FlattenLayer, Manifest, MaxPoolLayer, SynapticLayer

from .export import _graph, _units
from .golden import GoldenModel, neuron_steps, pool
from .models import BitNet

__all__ = ["AgreementReport", "audit", "spike_count"]

#: relative margin for float64 rounding in the float model's currents
FLOAT_MARGIN = 1e-9


def spike_count(x: torch.Tensor, k: int, s_bits: int, timesteps: int) -> torch.Tensor:
    """Σ_t s_t of the constant-current neuron on integer currents ``x`` (θ = 2**k)."""
    return neuron_steps(x, k, s_bits, timesteps)[1].sum(dim=0)


@dataclass
class AgreementReport:
    """Per-sample comparison of the float (fake-quantized) model and the integer manifest.

    Attributes
    ----------
    float_classes, int_classes
        Predicted classes of the float64 model and of the golden model.
    certain
        Samples whose every neuron is certain (see the module docstring).
    first_uncertain
        For each uncertain sample, the first layer holding an uncertain neuron.
    violations
        Certain samples where the two networks still differ (spike counts or
        class): an export or golden-model bug. Always empty for a correct export.
    """

    float_classes: np.ndarray
    int_classes: np.ndarray
    certain: np.ndarray
    first_uncertain: dict[int, str] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return len(self.certain)

    @property
    def uncertain(self) -> int:
        return int((~self.certain).sum())

    @property
    def disagreements(self) -> int:
        return int((self.float_classes != self.int_classes).sum())

    def accuracy_gap_bound(self) -> float:
        """Largest possible |float accuracy − integer accuracy| (a fraction): the uncertain samples."""
        return self.uncertain / max(1, self.samples)

    def to_json(self) -> dict[str, Any]:
        layers: dict[str, int] = {}
        for name in self.first_uncertain.values():
            layers[name] = layers.get(name, 0) + 1
        return {"samples": self.samples, "certain": int(self.certain.sum()), "uncertain": self.uncertain,
                "class_disagreements": self.disagreements, "uncertain_by_first_layer": layers,
                "violations": list(self.violations)}


def _hooks(model: BitNet, nodes) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list]:
    """Forward hooks recording each node's float output and each synaptic layer's float spike count."""
    outputs: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    handles = []
    for node in nodes:
        if node.kind == "add" or node.module is None:
            continue  # adds are bounded by interval arithmetic on their integer formula

        def out_hook(mod, args, out, name=node.name):
            outputs[name] = out.detach()

        handles.append(node.module.register_forward_hook(out_hook))
        if node.kind == "syn":
            handles.append(_NeuronTap(node.name, node.module, counts))
    return outputs, counts, handles


class _NeuronTap:
    """Records the spike count of ``layer``'s neuron while ``layer`` runs.

    A ResNet block's projection shortcut shares conv1's neuron module, so the
    neuron's own hook cannot tell the two layers apart; this tap listens only
    while its layer is running.
    """

    def __init__(self, name: str, layer, counts: dict[str, torch.Tensor]):
        self.active = False

        def on_spikes(mod, args, out):
            if self.active:  # y = V_th · count / T
                counts[name] = torch.round(out.detach() * layer.timesteps / layer.neuron.vth.detach()).to(torch.int64)

        self.handles = (
            layer.register_forward_pre_hook(lambda *a: setattr(self, "active", True)),
            layer.register_forward_hook(lambda *a: setattr(self, "active", False)),
            layer.neuron.register_forward_hook(on_spikes),
        )

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _interval_of_synaptic(layer: SynapticLayer, z_float: torch.Tensor, acc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer interval holding the requantized current, from the float current and the rounding bound."""
    rq = layer.requant
    err = 0.5 + (acc.abs().to(torch.float64) * 0.5 + 0.5) / 2.0**rq.shift
    err = err + FLOAT_MARGIN * (1.0 + z_float.abs())
    lo = torch.ceil(z_float - err).to(torch.int64)
    hi = torch.floor(z_float + err).to(torch.int64)
    return lo.clamp(rq.lo, rq.hi), hi.clamp(rq.lo, rq.hi)


def _interval_of_add(layer: AddLayer, a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]):
    shape = (1, -1) + (1,) * (a[0].dim() - 2)
    ma = torch.from_numpy(layer.mult_a).view(shape)
    mb = torch.from_numpy(layer.mult_b).view(shape)
    rnd = 0 if layer.shift == 0 else 1 << (layer.shift - 1)

    def ends(m, iv):  # interval of m·x for x in iv, m of either sign
        return torch.minimum(m * iv[0], m * iv[1]), torch.maximum(m * iv[0], m * iv[1])

    (alo, ahi), (blo, bhi) = ends(ma, a), ends(mb, b)
    lo = torch.bitwise_right_shift(alo + blo + rnd, layer.shift).clamp(layer.lo, layer.hi)
    hi = torch.bitwise_right_shift(ahi + bhi + rnd, layer.shift).clamp(layer.lo, layer.hi)
    return lo, hi


@torch.no_grad()
def audit(model: BitNet, manifest: Manifest, images: np.ndarray, batch_size: int = 500) -> AgreementReport:
    """Compare ``model`` (run in float64) with its exported ``manifest`` on ``uint8`` images ``[N, C, H, W]``.

    Returns an :class:`AgreementReport`; ``report.violations`` lists any certain sample on which the
    two networks differ, which a correct export never has.
    """
    from .data import images_for_manifest

    model = copy.deepcopy(model).cpu().double().eval()  # the caller's model is left as it was
    nodes = _graph(model)
    ks = {l.name: l.k for l in manifest.synaptic_layers}
    units = _units(nodes, ks)
    golden = GoldenModel(manifest)
    outputs, counts, handles = _hooks(model, nodes)
    f_cls, i_cls, certain_all = [], [], []
    first_uncertain: dict[int, str] = {}
    violations: list[str] = []
    try:
        for start in range(0, len(images), batch_size):
            batch = np.asarray(images[start:start + batch_size])
            outputs.clear()
            counts.clear()
            pixels = torch.as_tensor(images_for_manifest(batch, manifest)).to(torch.int64)
            logits_f = model(torch.as_tensor(batch).double() * float(model.input_scale))
            result = golden.run(pixels, trace=True)
            n = len(batch)
            certain = torch.ones(n, dtype=torch.bool)
            first = [""] * n
            iv: dict[str, tuple[torch.Tensor, torch.Tensor]] = {"input": (pixels, pixels)}
            for layer in manifest.layers:
                tr = result.trace[layer.name]
                if isinstance(layer, SynapticLayer):
                    lo, hi = iv[layer.inputs[0]]
                    c_lo = spike_count(lo, layer.k, layer.s_bits, layer.timesteps)
                    c_hi = spike_count(hi, layer.k, layer.s_bits, layer.timesteps)
                    c_f = counts[layer.name]
                    sure = ((c_lo == c_f) & (c_hi == c_f)).reshape(n, -1).all(dim=1)
                    c_int = tr.s.sum(dim=0)
                    broken = sure & certain & ~(c_int == c_f).reshape(n, -1).all(dim=1)
                    for i in torch.nonzero(broken).flatten().tolist():
                        violations.append(f"sample {start + i}: layer {layer.name!r} is certain but its spike counts differ")
                    for i in torch.nonzero(certain & ~sure).flatten().tolist():
                        first[i] = layer.name
                    certain &= sure
                    if layer.requant is not None:
                        z_f = outputs[layer.name] / units[layer.name]
                        iv[layer.name] = _interval_of_synaptic(layer, z_f, tr.acc)
                elif isinstance(layer, (MaxPoolLayer, AvgPoolLayer)):
                    # both pools are monotone in every input: they map the interval's ends
                    lo, hi = iv[layer.inputs[0]]
                    iv[layer.name] = (pool(layer, lo), pool(layer, hi))
                elif isinstance(layer, FlattenLayer):
                    lo, hi = iv[layer.inputs[0]]
                    iv[layer.name] = (lo.reshape(n, -1), hi.reshape(n, -1))
                elif isinstance(layer, AddLayer):
                    iv[layer.name] = _interval_of_add(layer, iv[layer.inputs[0]], iv[layer.inputs[1]])
                else:
                    raise TypeError(f"agreement audit has no rule for {layer.op!r}")
            # logits: the float model's are the integer ones times the last layer's accumulator unit
            top2 = logits_f.topk(min(2, logits_f.shape[1]), dim=1).values
            tied = (top2[:, 0] - top2[:, -1]).abs() <= FLOAT_MARGIN * (1.0 + top2[:, 0].abs()) if logits_f.shape[1] > 1 \
                else torch.zeros(n, dtype=torch.bool)
            fc = logits_f.argmax(dim=1)
            ic = result.classes
            for i in torch.nonzero(tied & certain).flatten().tolist():
                first[i] = "logits"
            certain &= ~tied
            for i in torch.nonzero(certain & (fc != ic)).flatten().tolist():
                violations.append(f"sample {start + i}: certain but the classes differ (float {int(fc[i])}, integer {int(ic[i])})")
            for i in torch.nonzero(~certain).flatten().tolist():
                first_uncertain[start + i] = first[i]
            f_cls.append(fc.numpy())
            i_cls.append(ic.numpy())
            certain_all.append(certain.numpy())
    finally:
        for h in handles:
            h.remove()
    def cat(parts, dtype):
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    return AgreementReport(cat(f_cls, np.int64), cat(i_cls, np.int64), cat(certain_all, bool), first_uncertain, violations)
