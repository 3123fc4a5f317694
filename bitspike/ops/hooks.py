"""Forward hooks on the trained (float) model that the agreement audit's op rules install.

A leaf (it imports nothing of bitspike): :meth:`bitspike.ops.base.Op.audit_hooks`
and the synaptic ops use these; :mod:`bitspike.host.agreement` re-exports them.
"""

from __future__ import annotations

import torch

__all__ = ["FLOAT_MARGIN", "output_hook", "NeuronTap"]

#: relative margin for float64 rounding in the float model's currents
FLOAT_MARGIN = 1e-9


def output_hook(node, outputs: dict[str, torch.Tensor]):
    """A forward hook on ``node.module`` recording its float output under the node's name."""

    def hook(mod, args, out, name=node.name):
        outputs[name] = out.detach()

    return node.module.register_forward_hook(hook)


class NeuronTap:
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
