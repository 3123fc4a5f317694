"""Network definitions built from the quantized layers of :mod:`bitspike.host.quant`.

Architectures (``ARCHS``):

``mlp``
    Flatten → linear layers (default hidden 128: the 64-128-10 network the hardware benchmark uses on digits).
``cnn``
    The small CNN: conv–pool–conv–pool–linear (3×3 convs, BatchNorm, 2×2 max-pool).
``cnn-fc``
    The small CNN with a hidden linear layer: conv–pool–conv–pool–linear–linear (hidden size from ``hidden``,
    default 128). Three learnable layers of very different sizes, so a bit allocation has room to differ
    from the uniform one inside the target window.
``vgg-small``
    CIFAR-style VGG-small: 6 convs (widths ×1, ×1, ×2, ×2, ×4, ×4 of ``width``) in three pooled stages, then a linear layer.
``vgg-deep``
    A VGG-style network for 28×28 images with six learnable layers of similar size: a stride-2 first
    conv (to 14×14), convs of widths ×1, ×2 (14×14), pool, ×2, ×2, ×2 (7×7), pool, linear.
    Allocation can matter here: no single layer holds most of the weights or of the spikes.
``resnet20``
    CIFAR ResNet20: 3 stages × 3 basic blocks (16/32/64 channels), residual adds, global sum-pool, linear.

Every synaptic layer is a :class:`~bitspike.host.quant.QuantLayer` with its
neuron at its input. The first one has 8-bit input and threshold = the input
scale (1/255), so its neuron passes pixels through exactly (at any T: the
pixel is an integer number of thresholds); by default (the paper) it is also
fixed at 8-bit weights and T = 1, with ``BitPlan(first_learn=True)`` its B_w
and T are allocated like every other layer's. The last one outputs the
logits (no BatchNorm, no ReLU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from bitspike.errors import BitspikeError

from .quant import BitSpec, MultiBitNeuron, QConv2d, QLinear, QuantLayer, WeightQuantizer

__all__ = ["ARCHS", "BitPlan", "SumPool2d", "BasicBlock", "build_model"]

ARCHS = ("mlp", "cnn", "cnn-fc", "vgg-small", "vgg-deep", "resnet20")


@dataclass(frozen=True)
class BitPlan:
    """Initial bits of every learnable layer, their ranges, and whether they learn.

    Ranges follow the authors' code: B_max = initial + 2, T_max = initial + 1.
    ``first_learn``: the first layer's B_w and T take these specs too (its B_s stays 8: pixels).
    """

    w_init: int
    s_init: int
    t_init: int
    learnable: bool = True
    input_scale: float = 1.0 / 255.0
    first_learn: bool = False

    def weight(self) -> BitSpec:
        return BitSpec(self.w_init, 1, self.w_init + 2, self.learnable)

    def spike(self) -> BitSpec:
        return BitSpec(self.s_init, 1, self.s_init + 2, self.learnable)

    def steps(self) -> BitSpec:
        return BitSpec(self.t_init, 1, self.t_init + 1, self.learnable)

    def neuron(self) -> MultiBitNeuron:
        return MultiBitNeuron(self.spike(), self.steps())

    def first_neuron(self) -> MultiBitNeuron:
        steps = self.steps() if self.first_learn else BitSpec(1, 1, 1, False)
        return MultiBitNeuron(BitSpec(8, 8, 8, False), steps, threshold=self.input_scale)

    def first_wq(self) -> WeightQuantizer:
        return WeightQuantizer(self.weight() if self.first_learn else BitSpec(8, 8, 8, False))

    def wq(self) -> WeightQuantizer:
        return WeightQuantizer(self.weight())


class SumPool2d(nn.Module):
    """Average pooling written as a window sum times 1/n, matching the manifest's sum-pool ``avgpool``."""

    def __init__(self, kernel: int):
        super().__init__()
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, self.kernel)


class BasicBlock(nn.Module):
    """ResNet basic block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).

    The projection shortcut (1×1 conv + BN) shares conv1's neuron: both read the
    same current, so in the manifest both see the same spikes and threshold.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, plan: BitPlan):
        super().__init__()
        neuron = plan.neuron()
        self.conv1 = QConv2d(in_ch, out_ch, 3, neuron, plan.wq(), stride=stride, padding=1)
        self.conv2 = QConv2d(out_ch, out_ch, 3, plan.neuron(), plan.wq(), padding=1, relu=False)
        self.shortcut = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = QConv2d(in_ch, out_ch, 1, neuron, plan.wq(), stride=stride, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        short = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(out + short)


class BitNet(nn.Module):
    """A sequence of modules (QuantLayer, MaxPool2d, SumPool2d, Flatten, BasicBlock); export walks ``body``."""

    def __init__(self, arch: str, in_shape: tuple[int, int, int], num_classes: int, body: list[nn.Module], plan: BitPlan):
        super().__init__()
        self.arch = arch
        self.in_shape = tuple(in_shape)
        self.num_classes = num_classes
        self.input_scale = plan.input_scale
        self.body = nn.Sequential(*body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _mlp(in_shape, num_classes, plan: BitPlan, hidden: tuple[int, ...]) -> list[nn.Module]:
    sizes = [int(torch.tensor(in_shape).prod())] + list(hidden) + [num_classes]
    body: list[nn.Module] = [nn.Flatten()]
    for i in range(len(sizes) - 1):
        first, last = i == 0, i == len(sizes) - 2
        neuron = plan.first_neuron() if first else plan.neuron()
        wq = plan.first_wq() if first else plan.wq()
        body.append(QLinear(sizes[i], sizes[i + 1], neuron, wq, bias=True, relu=not last, is_last=last))
    return body


def _cnn(in_shape, num_classes, plan: BitPlan, width: int, hidden: tuple[int, ...] = ()) -> list[nn.Module]:
    c, h, w = in_shape
    body: list[nn.Module] = [
        QConv2d(c, width, 3, plan.first_neuron(), plan.first_wq(), padding=1),
        nn.MaxPool2d(2),
        QConv2d(width, 2 * width, 3, plan.neuron(), plan.wq(), padding=1),
        nn.MaxPool2d(2),
        nn.Flatten(),
    ]
    sizes = [2 * width * (h // 4) * (w // 4), *hidden, num_classes]
    for i in range(len(sizes) - 1):
        last = i == len(sizes) - 2
        body.append(QLinear(sizes[i], sizes[i + 1], plan.neuron(), plan.wq(), relu=not last, is_last=last))
    return body


def _vgg_small(in_shape, num_classes, plan: BitPlan, width: int) -> list[nn.Module]:
    c, h, w = in_shape
    widths = [width, width, 2 * width, 2 * width, 4 * width, 4 * width]
    body: list[nn.Module] = []
    prev = c
    for i, out in enumerate(widths):
        first = i == 0
        body.append(QConv2d(prev, out, 3, plan.first_neuron() if first else plan.neuron(),
                            plan.first_wq() if first else plan.wq(), padding=1))
        if i % 2 == 1:
            body.append(nn.MaxPool2d(2))
        prev = out
    body += [nn.Flatten(), QLinear(prev * (h // 8) * (w // 8), num_classes, plan.neuron(), plan.wq(), relu=False, is_last=True)]
    return body


def _vgg_deep(in_shape, num_classes, plan: BitPlan, width: int) -> list[nn.Module]:
    c, h, w = in_shape
    body: list[nn.Module] = [QConv2d(c, width, 3, plan.first_neuron(), plan.first_wq(), stride=2, padding=1)]
    h, w = (h + 1) // 2, (w + 1) // 2
    prev = width
    for i, out in enumerate([width, 2 * width, 2 * width, 2 * width, 2 * width]):
        body.append(QConv2d(prev, out, 3, plan.neuron(), plan.wq(), padding=1))
        if i in (1, 4):
            body.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        prev = out
    body += [nn.Flatten(), QLinear(prev * h * w, num_classes, plan.neuron(), plan.wq(), relu=False, is_last=True)]
    return body


def _resnet20(in_shape, num_classes, plan: BitPlan, width: int) -> list[nn.Module]:
    c, h, w = in_shape
    body: list[nn.Module] = [QConv2d(c, width, 3, plan.first_neuron(), plan.first_wq(), padding=1)]
    prev = width
    for stage, ch in enumerate((width, 2 * width, 4 * width)):
        for block in range(3):
            stride = 2 if (stage > 0 and block == 0) else 1
            body.append(BasicBlock(prev, ch, stride, plan))
            prev = ch
    body += [SumPool2d(h // 4), nn.Flatten(), QLinear(prev, num_classes, plan.neuron(), plan.wq(), relu=False, is_last=True)]
    return body


def build_model(arch: str, in_shape: tuple[int, int, int], num_classes: int, plan: BitPlan,
                hidden: tuple[int, ...] = (128,), width: int | None = None) -> BitNet:
    """Build a network.

    Parameters
    ----------
    arch
        One of :data:`ARCHS`.
    in_shape
        ``(C, H, W)`` of the input images.
    num_classes
        Logits of the last layer.
    plan
        Initial bits, ranges and learnability of the learnable layers.
    hidden
        Hidden sizes of the MLP and of ``cnn-fc``'s linear layers.
    width
        Base channel count (cnn, cnn-fc: 16, vgg-small: 32, resnet20: 16 by default).

    Raises
    ------
    BitspikeError
        For an unknown architecture or an input the architecture cannot take.
    """
    in_shape = tuple(int(v) for v in in_shape)
    if arch == "mlp":
        body = _mlp(in_shape, num_classes, plan, tuple(hidden))
    elif arch in ("cnn", "cnn-fc", "vgg-small", "vgg-deep", "resnet20"):
        need = {"cnn": 4, "cnn-fc": 4, "vgg-small": 8, "vgg-deep": 4, "resnet20": 4}[arch]
        if in_shape[1] % need or in_shape[2] % need or in_shape[1] < need:
            raise BitspikeError(f"{arch} needs image sides divisible by {need}, got {in_shape[1]}×{in_shape[2]}")
        if arch == "cnn-fc" and not hidden:
            raise BitspikeError("cnn-fc needs at least one hidden size (--hidden)")
        default_width = {"cnn": 16, "cnn-fc": 16, "vgg-small": 32, "vgg-deep": 16, "resnet20": 16}[arch]
        maker = {"cnn": _cnn, "cnn-fc": lambda *a: _cnn(*a, tuple(hidden)), "vgg-small": _vgg_small,
                 "vgg-deep": _vgg_deep, "resnet20": _resnet20}[arch]
        body = maker(in_shape, num_classes, plan, width or default_width)
    else:
        raise BitspikeError(f"unknown architecture {arch!r}; expected one of {list(ARCHS)}")
    return BitNet(arch, in_shape, num_classes, body, plan)


def layer_names(model: nn.Module) -> dict[QuantLayer, str]:
    """Stable names for the synaptic layers (``fc1``, ``conv2``, ...), as in the manifest."""
    names: dict[QuantLayer, str] = {}
    counts = {"linear": 0, "conv2d": 0}
    for m in model.modules():
        if isinstance(m, QuantLayer) and m not in names:
            counts[m.kind] += 1
            names[m] = ("fc" if m.kind == "linear" else "conv") + str(counts[m.kind])
    return names
