"""Fake-quantized layers with learnable bit widths (SEMANTICS.md §2).

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

Straight-through gradients follow SEMANTICS.md exactly: rounding is STE;
bit widths get their gradient through q(b) (∂q/∂b = (q+1)·ln 2, only where
values are clipped at ±q); T gets its gradient only through the 1/T of
temporal squeezing; steps and thresholds get LSQ gradients.

Step-size renewal: when the rounded bit width of a quantizer changes during
training and renewal is enabled (:func:`set_renewal`), its step (or threshold)
is refitted on the current batch by searching 50 clipping ranges for the one
that minimises mean |Q(x) − x|^2.4.
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
    """A real parameter that is clipped to [lo, hi] and rounded in the forward pass (STE backward)."""

    def __init__(self, spec: BitSpec):
        super().__init__()
        self.lo, self.hi = spec.lo, spec.hi
        self.value = nn.Parameter(torch.tensor(float(spec.init)), requires_grad=spec.learnable)

    def forward(self) -> torch.Tensor:
        return floor_half_up_ste(torch.clamp(self.value, self.lo, self.hi))

    def current(self) -> int:
        """The rounded value as a Python int (what the hardware gets)."""
        return int(math.floor(min(max(float(self.value.detach()), self.lo), self.hi) + 0.5))

    def set(self, value: int) -> None:
        with torch.no_grad():
            self.value.fill_(float(value))


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
        b_now = self.bits.current()
        if self.training and b_now != int(self.last_bits):
            if self.renewal:
                self.refit(w.detach())
            self.last_bits.fill_(b_now)
        b = self.bits()  # rounded, gradient through STE
        q = 2 ** (b - 1) - 1  # value q(b); ∂q/∂b = (q+1)·ln 2
        step = _grad_scale(self.step, 1.0 / math.sqrt(w.numel() * max(1, self.q_of(b_now))))
        if b_now == 1:
            return _SignSTE.apply(w / step) * step * (q + 1)  # q + 1 = 1 in value, carries the bit gradient
        v = w / step
        v = torch.maximum(torch.minimum(v, q), -q)  # gradient reaches q (so b) only where clipped
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
        b_now = self.s_bits.current()
        if self.training and b_now != int(self.last_bits):
            if self.renewal and not self.fixed_threshold:
                self.refit(x.detach())
            self.last_bits.fill_(b_now)
        steps = self.timesteps.current()
        b = self.s_bits()
        q = 2**b - 1  # value 2^b − 1, ∂q/∂b = (q+1)·ln 2
        t = self.timesteps()  # value T; gradient only through the 1/T below
        vth = self.vth
        if not self.fixed_threshold:
            vth = _grad_scale(vth, 1.0 / math.sqrt(x[0].numel() * (2**b_now - 1)))
        xn = x / vth
        v = xn
        total = torch.zeros_like(xn)
        for _ in range(steps):
            s = floor_half_up_ste(v)
            s = torch.minimum(torch.clamp(s, min=0), q)
            v = v - s + xn
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
        return not self.neuron.fixed_threshold

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
                 stride: int = 1, padding: int = 0, bias: bool = False, bn: bool = True, relu: bool = True):
        super().__init__(neuron, wq, nn.BatchNorm2d(out_ch) if bn else None, relu, False)
        conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=bias)
        self.weight = conv.weight
        self.bias = conv.bias
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def synapse(self, y, w, b):
        return F.conv2d(y, w, b, stride=self.stride, padding=self.padding)


def quant_layers(model: nn.Module) -> list[QuantLayer]:
    """Every synaptic layer of a model, in registration (= forward) order."""
    return [m for m in model.modules() if isinstance(m, QuantLayer)]


def set_renewal(model: nn.Module, active: bool) -> None:
    """Switch step-size renewal on or off for every quantizer of a learnable layer."""
    for layer in quant_layers(model):
        if layer.learnable:
            layer.wq.renewal = active
            layer.neuron.renewal = active
