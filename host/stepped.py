"""Time-stepped integer neurons (IF / LIF): the reference for networks imported from NIR and snnTorch.

The paper's neuron (docs/SEMANTICS.md §4) sees one constant current for its T
steps. Networks trained in snnTorch and exchanged as NIR graphs are
*time-stepped*: the current changes every step, the membrane is carried
from one step to the next, and it may leak. This module is the standalone,
vectorised integer reference of that neuron; nothing here depends on a
manifest.

The neuron, per layer
---------------------
Fields (:class:`SteppedNeuron`, defined with the manifest schema in
:mod:`bitspike.ops.neuron`): ``mode`` (``squeezed`` | ``stepped``),
``fire`` (``round`` | ``gt``), ``reset`` (``subtract`` | ``zero``), leak
multiplier ``b`` and shift ``p`` (β = b / 2^p; IF is b = 2^p), threshold θ (a
positive integer) and spike width B_s. With ``x_t`` the integer input current
of step t::

    v = 0, s_prev = 0
    for t in 0 … T−1:
        subtract:  v = leak(v) + x_t − s_prev·θ
        zero:      v = leak(v if s_prev == 0 else 0) + x_t
        round:     s_t = clip(floor((2v + θ) / (2θ)), 0, 2^B_s − 1)
        gt:        s_t = 1 if v > θ else 0
        s_prev = s_t

    leak(v) = floor((v·b + r_p) / 2^p),  r_p = 2^(p−1) if p ≥ 1 else 0

``leak`` rounds to the nearest integer, ties towards +∞, for negative ``v``
as well (it is an arithmetic right shift of ``v·b + r_p``: ``leak(−3)`` with
β = 1/2 is ``floor(−2/2) = −1``, the tie −1.5 going up). When b = 2^p it is
exactly ``v`` (``v·2^p + 2^(p−1)`` shifted right by p floors back to v), so
an IF neuron does no rounding at all. In ``squeezed`` mode the current is the
same every step, ``x_t = x``.

Update order, and why it is snnTorch's ``Leaky``
------------------------------------------------
snnTorch 1.0.0's ``Leaky`` (default ``reset_delay=True``) computes, per step,
``reset = H(U[t−1] − θ)`` from the membrane the previous step left, then

- subtract: ``U[t] = β·U[t−1] + I[t] − reset·θ``
- zero:     ``U[t] = β·((1 − reset)·U[t−1]) + I[t]``

and fires ``S[t] = H(U[t] − θ)`` with ``H(z) = [z > 0]``, starting from
``U[−1] = 0``. Claim: with β = 1 (or any β whose products are exact), integer
currents ``I[t] = x_t`` and integer θ, ``U[t] = v_t`` and ``S[t] = s_t``
(``fire = gt``, B_s = 1) for every t.

*Proof.* By induction on t. Base: ``U[−1] = 0 = v_{−1}``, and the reset
before step 0 is ``H(0 − θ) = 0`` (θ > 0) ``= s_{−1}``. Step: assume
``U[t−1] = v_{t−1}`` and ``S[t−1] = s_{t−1}``. snnTorch's reset at step t
is ``H(U[t−1] − θ) = S[t−1] = s_{t−1}``: the reset is the previous step's
spike, subtracted (or applied) *unleaked*, since β multiplies only the
membrane. With β = 1, ``leak(v) = v``, so the subtract update reads
``U[t] = v_{t−1} + x_t − s_{t−1}·θ = v_t`` and the zero update
``U[t] = (1 − s_{t−1})·v_{t−1} + x_t = v_t`` (``(1 − s)·v`` is ``v`` or
``0`` as ``s`` is 0 or 1). Then ``S[t] = H(U[t] − θ) = [v_t > θ] = s_t``.
Floating point: every quantity is an integer; if all of them (``|v|``,
``|x_t|``, θ, ``|v| + |x_t| + θ``) stay below 2^24, every float32 sum and
difference snnTorch forms is exact, and ``U − θ > 0`` is decided exactly, so
the float network's spikes equal these integers. ∎

The order is therefore *leak, integrate, reset (the previous step's, not
leaked), fire with a strict* ``>``: leaking the reset too, resetting
after firing within the same step, or firing on ``≥`` would each break the
induction on some input. For β < 1 snnTorch's float product ``β·U`` is
rounded in float32 while ``leak`` rounds the integer product; the two then
agree only up to quantization, which an importer measures and reports.

In squeezed mode with (b = 2^p, subtract, round) the update is the paper's
neuron of §4, which starts at ``v = x``: step 0 gives ``v = x`` here too, and
each later step ``v − s_{t−1}θ + x`` is the same expression in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bitspike.errors import BitspikeError
from bitspike.ops.kernels import shift_round
# the neuron's fields and their rules are the manifest's (one definition, checked at load)
from bitspike.ops.neuron import FIRE_RULES, NEURON_MODES, RESET_RULES, SteppedNeuron

__all__ = [
    "NEURON_MODES",
    "FIRE_RULES",
    "RESET_RULES",
    "SteppedNeuron",
    "leak",
    "neuron_run",
    "DenseStep",
    "dense_stack_run",
]

def leak(v: torch.Tensor, neuron: SteppedNeuron) -> torch.Tensor:
    """``floor((v·b + r_p) / 2^p)``: round to nearest, ties towards +∞; exactly ``v`` for IF."""
    if neuron.is_if:
        return v
    return shift_round(v * neuron.leak_mul, neuron.leak_shift)


def _fire(v: torch.Tensor, neuron: SteppedNeuron) -> torch.Tensor:
    theta = neuron.threshold
    if neuron.fire == "gt":
        return (v > theta).to(torch.int64)
    return torch.clamp(torch.div(2 * v + theta, 2 * theta, rounding_mode="floor"), 0, neuron.max_spike)


def neuron_run(
    x: torch.Tensor | np.ndarray,
    neuron: SteppedNeuron,
    timesteps: int | None = None,
    *,
    membrane: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Run one layer of neurons over all timesteps, vectorised over every other axis.

    Parameters
    ----------
    x
        Integer currents: ``[T, ...]`` in stepped mode (one current per step), ``[...]`` in squeezed mode
        (the same current every step; ``timesteps`` gives T).
    neuron
        The layer's neuron.
    timesteps
        T; required in squeezed mode, and checked against ``x.shape[0]`` in stepped mode when given.
    membrane
        Also return the membrane after each step's update and fire, before its reset takes effect
        (snnTorch's ``mem`` with ``reset_delay=True``).

    Returns
    -------
    spikes, or (spikes, v)
        ``int64`` tensors ``[T, ...]``.
    """
    x = torch.as_tensor(x)
    if x.dtype.is_floating_point or x.dtype == torch.bool:
        raise BitspikeError(f"neuron currents must be integers, not {x.dtype}")
    x = x.to(torch.int64)
    if neuron.mode == "stepped":
        if x.dim() == 0:
            raise BitspikeError("stepped neuron: currents need a leading time axis [T, ...]")
        if timesteps is not None and timesteps != x.shape[0]:
            raise BitspikeError(f"stepped neuron: {x.shape[0]} current steps for timesteps = {timesteps}")
        steps = [x[t] for t in range(x.shape[0])]
    else:
        if timesteps is None or timesteps < 1:
            raise BitspikeError(f"squeezed neuron: timesteps must be a positive integer, not {timesteps!r}")
        steps = [x] * timesteps
    theta = neuron.threshold
    v = torch.zeros_like(steps[0]) if steps else torch.zeros(0, dtype=torch.int64)
    s_prev = torch.zeros_like(v)
    spikes, vs = [], []
    for x_t in steps:
        if neuron.reset == "subtract":
            v = leak(v, neuron) + x_t - s_prev * theta
        else:
            v = leak(torch.where(s_prev == 0, v, torch.zeros_like(v)), neuron) + x_t
        s_prev = _fire(v, neuron)
        spikes.append(s_prev)
        vs.append(v)
    shape = (0, *x.shape[1:]) if neuron.mode == "stepped" else (0, *x.shape)
    out_s = torch.stack(spikes) if spikes else torch.zeros(shape, dtype=torch.int64)
    if not membrane:
        return out_s
    return out_s, (torch.stack(vs) if vs else torch.zeros(shape, dtype=torch.int64))


@dataclass(frozen=True, eq=False)
class DenseStep:
    """One stepped fully connected layer: ``x_t = W·s_t + bias`` feeding ``neuron`` (no requantization).

    Attributes
    ----------
    weight
        Integer ``[out, in]``.
    bias
        Integer ``[out]``.
    neuron
        The neurons of this layer's outputs, or ``None`` for a readout layer (its currents are summed over t).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    neuron: SteppedNeuron | None


def dense_stack_run(layers: list[DenseStep], x: torch.Tensor) -> torch.Tensor:
    """A chain of stepped dense layers on integer inputs, the layer-by-layer order of §5.

    Layer l's spikes at step t drive layer l+1 at step t. Integers throughout (int64), so the result is
    exact as long as nothing exceeds 2^63 (the caller's inputs are small).

    Parameters
    ----------
    layers
        The layers in order.
    x
        Integer input ``[T, N, in]`` (spikes or currents; the first layer multiplies them by its weights).

    Returns
    -------
    torch.Tensor
        ``int64 [N, out]``: the last layer's spike counts Σ_t s_t, or Σ_t x_t for a readout layer.
    """
    h = torch.as_tensor(x).to(torch.int64)
    for layer in layers:
        w = torch.as_tensor(layer.weight).to(torch.int64)
        b = torch.as_tensor(layer.bias).to(torch.int64)
        # int64 matmul is exact (no BLAS, no float); broadcasting keeps [T, N, out]
        cur = torch.einsum("tni,oi->tno", h, w) + b
        h = cur if layer.neuron is None else neuron_run(cur, layer.neuron)
    return h.sum(dim=0)
