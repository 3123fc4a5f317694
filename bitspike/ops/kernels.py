"""The integer kernels the op modules share with the golden model and the agreement audit.

A leaf below the op modules (it imports only :mod:`bitspike.ops.base`): the
reference neuron, the rounding shift, the per-layer trace record and the
spike count the agreement audit compares. :mod:`bitspike.host.golden` and
:mod:`bitspike.host.agreement` re-export these names, so an op module reaches
them without importing the whole-network code that iterates the registry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import rounding_term

__all__ = ["neuron_steps", "shift_round", "LayerTrace", "spike_count"]


def neuron_steps(x: torch.Tensor, k: int, s_bits: int, timesteps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The multi-bit neuron, integer form.

    Parameters
    ----------
    x
        Input current (any shape, integer), constant over the timesteps.
    k
        Threshold exponent: θ = 2**k.
    s_bits
        Spike bit width B_s; spikes are 0 … 2**B_s − 1.
    timesteps
        T.

    Returns
    -------
    v, s
        ``v[t]`` the membrane before step t (t = 0 … T, v[T] after the last
        update) and ``s[t]`` the spike of step t (t = 0 … T−1); shapes
        ``(T+1, *x.shape)`` and ``(T, *x.shape)``.
    """
    x = x.to(torch.int64)
    theta = 1 << k
    q = (1 << s_bits) - 1
    v = x.clone()
    vs, ss = [v], []
    for _ in range(timesteps):
        s = torch.clamp(torch.div(2 * v + theta, 2 * theta, rounding_mode="floor"), 0, q)
        v = v - s * theta + x
        ss.append(s)
        vs.append(v)
    return torch.stack(vs), torch.stack(ss)


def shift_round(value: torch.Tensor, shift: int) -> torch.Tensor:
    """(value + 2**(shift−1)) >> shift, arithmetic (floor) shift; no rounding term when shift = 0."""
    return torch.bitwise_right_shift(value + rounding_term(shift), shift)


@dataclass
class LayerTrace:
    """What one layer computed for a batch (batch dimension first after the time axis)."""

    name: str
    op: str
    x: torch.Tensor  # input current
    out: torch.Tensor  # output current (or logits)
    v: torch.Tensor | None = None  # (T+1, N, ...) membrane
    s: torch.Tensor | None = None  # (T, N, ...) spikes
    acc: torch.Tensor | None = None  # accumulators (before requantization)


def spike_count(x: torch.Tensor, k: int, s_bits: int, timesteps: int) -> torch.Tensor:
    """Σ_t s_t of the constant-current neuron on integer currents ``x`` (θ = 2**k)."""
    return neuron_steps(x, k, s_bits, timesteps)[1].sum(dim=0)
