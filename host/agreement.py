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

from bitspike.manifest import Manifest
from bitspike.ops.base import OPS
from bitspike.ops.hooks import FLOAT_MARGIN, NeuronTap, output_hook  # noqa: F401  (re-exported)
from bitspike.ops.kernels import spike_count  # noqa: F401  (re-exported)

from .convert import _graph, _units
from .golden import GoldenModel
from .models import BitNet

__all__ = ["AgreementReport", "AuditState", "audit", "spike_count", "output_hook", "NeuronTap"]


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
    """Forward hooks recording each node's float output and each synaptic layer's float spike count
    (each op's own choice: :meth:`bitspike.ops.base.Op.audit_hooks`)."""
    outputs: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    handles = []
    for node in nodes:
        handles.extend(OPS[node.kind].audit_hooks(node, outputs, counts))
    return outputs, counts, handles


@dataclass
class AuditState:
    """The audit of one batch while it walks the layers; each op's :meth:`~bitspike.ops.base.Op.audit_step` updates it.

    ``iv`` maps a layer name (or ``"input"``) to the integer interval ``(lo, hi)`` holding its
    current; ``certain`` and ``first`` are per sample; ``outputs``/``counts`` are the float model's
    recorded values, ``units`` the export's units, ``trace`` the golden model's.
    """

    start: int
    n: int
    iv: dict[str, tuple[torch.Tensor, torch.Tensor]]
    certain: torch.Tensor
    first: list[str]
    violations: list[str]
    outputs: dict[str, torch.Tensor]
    counts: dict[str, torch.Tensor]
    units: dict[str, float]
    trace: dict[str, Any]


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
            state = AuditState(start=start, n=n, iv={"input": (pixels, pixels)},
                               certain=torch.ones(n, dtype=torch.bool), first=[""] * n, violations=violations,
                               outputs=outputs, counts=counts, units=units, trace=result.trace)
            for layer in manifest.layers:
                OPS[layer.op].audit_step(layer, state)
            certain, first = state.certain, state.first
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
