"""Fake-quantized layers with learnable bit widths (docs/SEMANTICS.md §2).

Three building blocks:

:class:`WeightQuantizer`
    Symmetric per-layer weight quantizer: learnable bit width B_w and LSQ step S_w.
:class:`MultiBitNeuron`
    The refined multi-bit neuron: learnable spike bit width B_s, threshold
    V_th and timesteps T; round-to-nearest spikes, soft reset, temporal squeezing.
:class:`QuantLayer` (:class:`QLinear`, :class:`QConv2d`)
    Neuron → synapse (quantized weights) → optional BatchNorm → optional ReLU.
    Every synaptic layer of a bitspike network is one of these, which is what
    the export relies on.

Straight-through gradients follow docs/SEMANTICS.md exactly: rounding is STE;
bit widths get their gradient through q(b) (∂q/∂b = (q+1)·ln 2, only where
values are clipped at ±q: the clip is decided on the unrounded value, before
rounding); T gets its gradient only through the 1/T of temporal squeezing;
steps and thresholds get LSQ gradients.

Bit widths and T are clipped to their range in the forward pass with a
straight-through backward pass, so a parameter that has left its range still
gets the task's and the target's gradient and can come back;
:func:`bound_bits` keeps the stored value within half a step of the range.

Two choices the method leaves open are switches of :class:`MultiBitNeuron`
(see docs/TRAINING.md for what was measured): ``vth_grad`` ("batch": the
authors' LSQ scale 1/sqrt(batch·N·q), "sample": 1/sqrt(N·q)) and
``detach_history`` (the membrane carried from one timestep to the next is
left out of the backward graph, as in the authors' code).

Step-size renewal: when the rounded bit width of a quantizer changes during
training and renewal is enabled (:func:`set_renewal`), its step (or threshold)
is refitted on the current batch by searching 50 clipping ranges for the one
that minimises mean |Q(x) − x|^2.4. Every change is counted by cause
(``learning``: an optimizer step moved the rounded value; ``projection``: the
trainer set it), whether or not a renewal fired (:func:`renewal_counts`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "BitSpec",
    "WeightQuantizer",
    "MultiBitNeuron",
    "QuantLayer",
    "QLinear",
    "QConv2d",
    "round_ste",
    "quant_layers",
    "set_renewal",
    "set_grad_rules",
    "bound_bits",
    "renewal_counts",
    "RENEWAL_CANDIDATES",
    "RENEWAL_POWER",
]

RENEWAL_CANDIDATES = 50
RENEWAL_POWER = 2.4
LN2 = math.log(2.0)


class _RoundHalfAway(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _FloorHalfUp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.floor(x + 0.5)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _ClampSTE(torch.autograd.Function):
    """clamp(x, lo, hi) forward, identity backward: a clipped bit width still learns."""

    @staticmethod
    def forward(ctx, x, lo, hi):
        return torch.clamp(x, lo, hi)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


class _GradScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class _SignSTE(torch.autograd.Function):
    """sign(x) with 0 → +1; gradient passes where |x| ≤ 1 (the clipped identity)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half away from zero in the forward pass, identity in the backward pass.

    Written as an autograd function (not ``x + (r − x).detach()``) so that the
    forward value is exactly the rounded number: training and the integer model must agree bit for bit.
    """
    return _RoundHalfAway.apply(x)


def floor_half_up_ste(x: torch.Tensor) -> torch.Tensor:
    """floor(x + 1/2) (the neuron's rounding rule) forward, identity backward."""
    return _FloorHalfUp.apply(x)


def _grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Value of x unchanged, gradient scaled by ``scale`` (LSQ's step-gradient scaling)."""
    return _GradScale.apply(x, scale)


def _dist_mean_(t: torch.Tensor) -> torch.Tensor:
    """Average a tensor in place over DDP ranks, so that data-dependent updates stay identical."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


@dataclass(frozen=True)
class BitSpec:
    """How one learnable integer (a bit width or T) is set up: initial value, range, learnable or fixed."""

    init: int
    lo: int
    hi: int
    learnable: bool = True

    def __post_init__(self):
        if not (self.lo <= self.init <= self.hi):
            raise ValueError(f"initial value {self.init} outside its range {self.lo} … {self.hi}")


class _RoundedParam(nn.Module):
    """A real parameter that is clipped to [lo, hi] and rounded in the forward pass.

    Both the clip and the rounding are straight-through in the backward pass: with a plain
    ``torch.clamp`` a value that steps past its bound (T pulled below 1 by the target loss)
    would get zero gradient from then on and never learn again.
    """

    def __init__(self, spec: BitSpec):
        super().__init__()
        self.lo, self.hi = spec.lo, spec.hi
        self.value = nn.Parameter(torch.tensor(float(spec.init)), requires_grad=spec.learnable)
        self.projected = False  # set when the trainer (not an optimizer step) changed the rounded value

    def forward(self) -> torch.Tensor:
        return floor_half_up_ste(_ClampSTE.apply(self.value, self.lo, self.hi))

    @torch.no_grad()
    def bound_(self) -> None:
        """Keep the stored value within half a step of its range, so that it can come back in a few steps."""
        self.value.clamp_(self.lo - 0.5, self.hi + 0.5)

    def current(self) -> int:
        """The rounded value as a Python int (what the hardware gets)."""
        return int(math.floor(min(max(float(self.value.detach()), self.lo), self.hi) + 0.5))

    def set(self, value: int) -> None:
        """Set the value by hand (projection): the next bit change seen is counted as a projection's."""
        with torch.no_grad():
            self.value.fill_(float(value))
        self.projected = True


def _new_counts() -> dict[str, int]:
    return {"changes_learning": 0, "changes_projection": 0, "renewals_learning": 0, "renewals_projection": 0}


def _bit_change(owner: nn.Module, param: _RoundedParam, renew) -> None:
    """Called by a quantizer in training mode: notice a change of its rounded bit width, count it, renew."""
    b_now = param.current()
    if b_now == int(owner.last_bits):
        param.projected = False
        return
    cause = "projection" if param.projected else "learning"
    owner.counts["changes_" + cause] += 1
    if owner.renewal:
        renew()
        owner.counts["renewals_" + cause] += 1
    owner.last_bits.fill_(b_now)
    param.projected = False


class WeightQuantizer(nn.Module):
    """Symmetric weight quantizer with learnable bit width and LSQ step.

    b ≥ 2: q = 2^(b−1) − 1, w_int = clip(round(w / S_w), −q, q); b = 1: w_int = sign(w) (0 → +1).

    Parameters
    ----------
    bits
        The bit width's initial value and range.
    """

    def __init__(self, bits: BitSpec):
        super().__init__()
        self.bits = _RoundedParam(bits)
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialised", torch.tensor(False))
        self.register_buffer("last_bits", torch.tensor(bits.init))
        self.renewal = False
        self.counts = _new_counts()

    @staticmethod
    def q_of(b: int) -> int:
        return 1 if b == 1 else 2 ** (b - 1) - 1

    @torch.no_grad()
    def init_step(self, w: torch.Tensor) -> None:
        q = self.q_of(self.bits.current())
        self.step.fill_(float(2 * w.abs().mean() / math.sqrt(q)) + 1e-8)
        self.initialised.fill_(True)

    @torch.no_grad()
    def refit(self, w: torch.Tensor) -> None:
        """Step-size renewal: best of 50 clipping ranges for mean |Q(w) − w|^2.4."""
        b = self.bits.current()
        q = self.q_of(b)
        top = float(w.abs().max()) + 1e-12
        best, best_err = None, None
        for i in range(1, RENEWAL_CANDIDATES + 1):
            rng = top * i / RENEWAL_CANDIDATES
            step = rng / q if b > 1 else rng  # range / (q_max − q_min) with q_min = −q
            wq = self._int(w, step, b) * step
            err = float((wq - w).abs().pow(RENEWAL_POWER).mean())
            if best_err is None or err < best_err:
                best, best_err = step, err
        self.step.fill_(best)
        _dist_mean_(self.step.data)

    @staticmethod
    def _int(w: torch.Tensor, step: float, b: int) -> torch.Tensor:
        if b == 1:
            return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
        q = 2 ** (b - 1) - 1
        v = torch.clamp(w / step, -q, q)
        return torch.sign(v) * torch.floor(v.abs() + 0.5)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialised):
            self.init_step(w.detach())
        if self.training:
            _bit_change(self, self.bits, lambda: self.refit(w.detach()))
        b_now = self.bits.current()
        b = self.bits()  # rounded, gradient through STE
        q = 2 ** (b - 1) - 1  # value q(b); ∂q/∂b = (q+1)·ln 2
        step = _grad_scale(self.step, 1.0 / math.sqrt(w.numel() * max(1, self.q_of(b_now))))
        v = w / step
        if b_now == 1:
            # sign(w)·S; the bit width's gradient, through q + 1 = 2^(b−1) (value 1), only from the
            # weights the sign clips (|w| > S), as for b ≥ 2: the ones inside get it through the STE
            scale = torch.where(v.abs() > 1, q + 1, (q + 1).detach())
            return _SignSTE.apply(v) * step * scale
        # the clip is decided on the unrounded value; only clipped weights pass their gradient to q (so b)
        v = torch.where(v > q, q, torch.where(v < -q, -q, v))
        return round_ste(v) * step

    @torch.no_grad()
    def integers(self, w: torch.Tensor) -> torch.Tensor:
        """The integer weights W_int the hardware stores."""
        return self._int(w, float(self.step), self.bits.current()).to(torch.int64)


class MultiBitNeuron(nn.Module):
    """The refined multi-bit neuron (one threshold per layer, shared over time).

    v_0 = x; s_t = clip(floor(v_t / V_th + 1/2), 0, q); v_(t+1) = v_t − s_t·V_th + x;
    y = V_th · (1/T) · Σ s_t, q = 2^B_s − 1.

    Parameters
    ----------
    s_bits, timesteps
        Initial values and ranges of B_s and T.
    threshold
        A fixed threshold (the first layer: 1/255 in pixel units); ``None``
        makes V_th learnable, initialised to 2·mean|x|/sqrt(q) on the first batch.
    """

    def __init__(self, s_bits: BitSpec, timesteps: BitSpec, threshold: float | None = None):
        super().__init__()
        self.s_bits = _RoundedParam(s_bits)
        self.timesteps = _RoundedParam(timesteps)
        self.fixed_threshold = threshold is not None
        self.vth = nn.Parameter(torch.tensor(1.0 if threshold is None else float(threshold)), requires_grad=threshold is None)
        self.register_buffer("initialised", torch.tensor(threshold is not None))
        self.register_buffer("last_bits", torch.tensor(s_bits.init))
        self.renewal = False
        self.counts = _new_counts()
        self.vth_grad = "batch"
        self.detach_history = True

    @torch.no_grad()
    def init_threshold(self, x: torch.Tensor) -> None:
        q = 2 ** self.s_bits.current() - 1
        self.vth.fill_(float(2 * x.abs().mean() / math.sqrt(q)) + 1e-6)
        _dist_mean_(self.vth.data)
        self.initialised.fill_(True)

    @staticmethod
    def spikes(xn: torch.Tensor, q: int, steps: int) -> torch.Tensor:
        """Spike count Σ_t s_t for currents in threshold units (no gradient)."""
        v = xn.clone()
        count = torch.zeros_like(xn)
        for _ in range(steps):
            s = torch.clamp(torch.floor(v + 0.5), 0, q)
            v = v - s + xn
            count += s
        return count

    @torch.no_grad()
    def refit(self, x: torch.Tensor) -> None:
        """Threshold renewal: best of 50 clipping ranges q·V_th for mean |Q(x) − x|^2.4."""
        b, steps = self.s_bits.current(), self.timesteps.current()
        q = 2**b - 1
        flat = x.reshape(-1)
        if flat.numel() > 8192:  # a fixed subsample keeps this cheap and deterministic
            flat = flat[:: flat.numel() // 8192 + 1]
        top = float(flat.clamp(min=0).max()) + 1e-12
        best, best_err = None, None
        for i in range(1, RENEWAL_CANDIDATES + 1):
            vth = top * i / RENEWAL_CANDIDATES / q  # range / (q_max − q_min), q_min = 0
            y = self.spikes(flat / vth, q, steps) * vth / steps
            err = float((y - flat.clamp(min=0)).abs().pow(RENEWAL_POWER).mean())
            if best_err is None or err < best_err:
                best, best_err = vth, err
        self.vth.fill_(best)
        _dist_mean_(self.vth.data)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialised):
            self.init_threshold(x.detach())
        if self.training and not self.fixed_threshold:
            _bit_change(self, self.s_bits, lambda: self.refit(x.detach()))
        b_now = self.s_bits.current()
        steps = self.timesteps.current()
        b = self.s_bits()
        q = 2**b - 1  # value 2^b − 1, ∂q/∂b = (q+1)·ln 2
        t = self.timesteps()  # value T; gradient only through the 1/T below
        vth = self.vth
        if not self.fixed_threshold:
            n = x.numel() if self.vth_grad == "batch" else x[0].numel()
            vth = _grad_scale(vth, 1.0 / math.sqrt(n * (2**b_now - 1)))
        xn = x / vth
        v = xn
        zero = torch.zeros_like(xn)
        total = zero
        for _ in range(steps):
            # clip to [0, q] before rounding (the same integers as rounding first): v in [q − ½, q]
            # is the input's (STE), only v > q is the bit width's
            s = floor_half_up_ste(torch.where(v > q, q, torch.where(v < 0, zero, v)))
            v = v - s
            v = (v.detach() if self.detach_history else v) + xn
            total = total + s
        return vth * total / t


class QuantLayer(nn.Module):
    """Neuron → quantized synapse (+ bias) → optional BatchNorm → optional ReLU.

    The last layer of a network has ``bn=False, relu=False`` and its bias is
    quantized to the accumulator unit S_w·V_th/T, so its outputs are exactly
    ``scale · acc`` (the logits the hardware outputs).
    """

    kind = ""

    def __init__(self, neuron: MultiBitNeuron, wq: WeightQuantizer, bn: nn.Module | None, relu: bool, is_last: bool):
        super().__init__()
        self.neuron = neuron
        self.wq = wq
        self.bn = bn
        self.relu = relu
        self.is_last = is_last

    def synapse(self, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def acc_scale(self) -> torch.Tensor:
        """Real value of one accumulator unit: S_w · V_th / T."""
        return self.wq.step * self.neuron.vth / self.neuron.timesteps.current()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.neuron(x)
        w = self.wq(self.weight)
        bias = self.bias
        if bias is not None and self.is_last:
            scale = self.acc_scale().detach()
            bias = round_ste(bias / scale) * scale
        z = self.synapse(y, w, bias)
        if self.bn is not None:
            z = self.bn(z)
        if self.relu:
            z = F.relu(z)
        return z

    # ---- bit bookkeeping (for the loss and the metrics)

    @property
    def w_bits(self) -> int:
        return self.wq.bits.current()

    @property
    def s_bits(self) -> int:
        return self.neuron.s_bits.current()

    @property
    def timesteps(self) -> int:
        return self.neuron.timesteps.current()

    @property
    def learnable(self) -> bool:
        """Whether any of the layer's bits (B_w, B_s, T) learns (the fixed 8/8 first layer: no)."""
        return any(p.value.requires_grad for p in (self.wq.bits, self.neuron.s_bits, self.neuron.timesteps))

    def macs(self, in_shape: tuple[int, ...]) -> int:
        raise NotImplementedError


class QLinear(QuantLayer):
    """A quantized linear layer with its neuron at the input."""

    kind = "linear"

    def __init__(self, in_features: int, out_features: int, neuron: MultiBitNeuron, wq: WeightQuantizer,
                 bias: bool = True, bn: bool = False, relu: bool = True, is_last: bool = False):
        super().__init__(neuron, wq, nn.BatchNorm1d(out_features) if bn else None, relu, is_last)
        lin = nn.Linear(in_features, out_features, bias=bias)
        self.weight = lin.weight
        self.bias = lin.bias
        self.in_features, self.out_features = in_features, out_features

    def synapse(self, y, w, b):
        return F.linear(y, w, b)


class QConv2d(QuantLayer):
    """A quantized 2-D convolution with its neuron at the input."""

    kind = "conv2d"

    def __init__(self, in_ch: int, out_ch: int, kernel: int, neuron: MultiBitNeuron, wq: WeightQuantizer,
                 stride: int = 1, padding: int = 0, bias: bool = False, bn: bool = True, relu: bool = True,
                 groups: int = 1):
        super().__init__(neuron, wq, nn.BatchNorm2d(out_ch) if bn else None, relu, False)
        # groups as torch's: weight [out, in / groups, k, k] (depthwise: groups = in_ch)
        conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=bias, groups=groups)
        self.weight = conv.weight
        self.bias = conv.bias
        self.kernel, self.stride, self.padding, self.groups = kernel, stride, padding, groups

    def synapse(self, y, w, b):
        return F.conv2d(y, w, b, stride=self.stride, padding=self.padding, groups=self.groups)


def quant_layers(model: nn.Module) -> list[QuantLayer]:
    """Every synaptic layer of a model, in registration (= forward) order."""
    return [m for m in model.modules() if isinstance(m, QuantLayer)]


def set_renewal(model: nn.Module, weights: bool, spikes: bool | None = None) -> None:
    """Switch step-size renewal on or off for the weight quantizers and the neurons of learnable layers.

    ``spikes=None`` uses ``weights`` for both kinds.
    """
    spikes = weights if spikes is None else spikes
    for layer in quant_layers(model):
        if layer.learnable:
            layer.wq.renewal = weights and layer.wq.bits.value.requires_grad
            layer.neuron.renewal = spikes and not layer.neuron.fixed_threshold


def set_grad_rules(model: nn.Module, vth_grad: str = "batch", detach_history: bool = True) -> None:
    """Set the threshold's LSQ gradient scale ("batch" or "sample") and the history detach of every neuron."""
    if vth_grad not in ("batch", "sample"):
        raise ValueError(f"vth_grad must be 'batch' or 'sample', got {vth_grad!r}")
    for m in model.modules():
        if isinstance(m, MultiBitNeuron):
            m.vth_grad = vth_grad
            m.detach_history = bool(detach_history)


def bound_bits(model: nn.Module) -> None:
    """After an optimizer step: keep every learnable bit width and T within half a step of its range."""
    for m in model.modules():
        if isinstance(m, _RoundedParam) and m.value.requires_grad:
            m.bound_()


def renewal_counts(model: nn.Module, reset: bool = True) -> dict[str, dict[str, int]]:
    """Bit changes and renewals since the last reset, by kind (``weights``, ``spikes``) and cause.

    Keys per kind: ``changes_learning``, ``changes_projection`` (rounded bit widths that changed, by
    an optimizer step or by the trainer's projection) and ``renewals_learning``,
    ``renewals_projection`` (those of them that refitted a step or threshold).
    """
    out = {"weights": _new_counts(), "spikes": _new_counts()}
    seen: set[int] = set()
    for m in model.modules():
        kind = "weights" if isinstance(m, WeightQuantizer) else "spikes" if isinstance(m, MultiBitNeuron) else None
        if kind is None or id(m) in seen:
            continue
        seen.add(id(m))
        for k, v in m.counts.items():
            out[kind][k] += v
        if reset:
            m.counts = _new_counts()
    return out
