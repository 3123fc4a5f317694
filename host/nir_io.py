"""NIR graphs in and out: a typed float description of a time-stepped SNN, its interpreter and a writer.

NIR (the ``nir`` package) is the exchange format of snnTorch, Norse,
SpikingJelly, Sinabs, Lava-DL and several neuromorphic chips. bitspike reads
a NIR graph into a :class:`FloatNetwork` (a chain of typed nodes with float32
parameters), runs it with a float interpreter, and writes it back. Turning the
description into integers (the stepped neuron of ``host/stepped.py``) is the
importer's next step.

Supported nodes
---------------
``Affine`` / ``Linear``, ``Conv2d`` (no dilation, one group), ``SumPool2d`` /
``AvgPool2d`` (no padding), ``Flatten`` (to a vector, C-major), ``IF`` and
``LIF``. Everything else (``CubaLIF``, recurrent subgraphs, ``Scale``,
``Delay``, branches) is refused with a :class:`NirError` naming the node and
the field.

How a NIR neuron becomes a discrete-time neuron
-----------------------------------------------
NIR's LIF is continuous: ``τ·dv/dt = (v_leak − v) + r·I``; a forward-Euler
step of length ``dt`` gives ``v ← β·v + g·I`` with ``β = 1 − dt/τ`` and input
gain ``g = dt·r/τ`` (and ``v_leak`` must be 0). snnTorch exports its
``Leaky(beta)`` with ``dt = 1e-4``, ``τ = dt/(1 − β)`` and ``r = τ/dt``, so
``g = 1``; ``β = 1`` exports as ``τ = r = ∞`` (with a divide-by-zero
warning), which this reader recognises as IF (β = 1, g = 1). NIR's ``IF``
(``dv/dt = r·I``) is read as ``v ← v + r·I``, one step per time unit, as
snnTorch's importer reads it.

NIR does not say how a neuron resets: its LIF and IF jump to ``v_reset``
after a spike (reset to zero), while snnTorch's ``Leaky`` subtracts the
threshold by default, and its export does not record which. The reader
takes ``reset="subtract" | "zero"`` or a ``source="snntorch"`` preset
(subtract, ``dt = 1e-4``) and records what it assumed in
:attr:`FloatNetwork.assumptions`. Without either it uses a bitspike-written
``"bitspike.reset"`` node metadata entry if there is one, else NIR's own rule
(zero).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import nir
import numpy as np
import torch
import torch.nn.functional as F

from bitspike.errors import BitspikeError
from bitspike.host.stepped import RESET_RULES

__all__ = [
    "NirError",
    "SOURCES",
    "SNNTORCH_DT",
    "Affine",
    "Conv2d",
    "Pool2d",
    "Flatten",
    "Neuron",
    "FloatNetwork",
    "read_nir",
    "to_nir",
    "write_nir",
]

#: snnTorch's export time step (``snntorch.export_nir``)
SNNTORCH_DT = 1e-4

#: presets of ``read_nir(source=...)``: what each framework's export leaves out of the graph
SOURCES = {"snntorch": {"reset": "subtract", "dt": SNNTORCH_DT}}

#: node metadata key in which :func:`to_nir` records a reset rule NIR cannot express
RESET_METADATA = "bitspike.reset"

# β = 1 written for snnTorch's importer: τ = dt·2^60 makes its 1 − dt/τ exactly 1.0 in float64
_SNNTORCH_IF_TAU_STEPS = 2.0**60


class NirError(BitspikeError):
    """A NIR graph that bitspike cannot read or write; the message names the node and the field.

    Parameters
    ----------
    message
        What is wrong and what was expected.
    node
        The node's name and NIR type (``"node '1' (LIF)"``), or ``None`` for the whole graph.
    field
        The node's field that is wrong (``"v_leak"``), or ``None``.
    """

    def __init__(self, message: str, *, node: str | None = None, field: str | None = None):
        self.node = node
        self.field = field
        where = [w for w in (node, None if field is None else f"field '{field}'") if w is not None]
        super().__init__((", ".join(where) + ": " if where else "") + message)


# --------------------------------------------------------------------------------------------------------------
# the description


@dataclass(frozen=True, eq=False)
class Affine:
    """``y = W·x + b`` on a vector; ``has_bias=False`` for NIR's ``Linear`` (``bias`` is then zeros)."""

    name: str
    weight: np.ndarray  # float32 [out, in]
    bias: np.ndarray  # float32 [out]
    has_bias: bool = True

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(self.weight.shape[0]),)


@dataclass(frozen=True, eq=False)
class Conv2d:
    """Cross-correlation with zero padding, as ``torch.nn.functional.conv2d`` (dilation 1, one group)."""

    name: str
    weight: np.ndarray  # float32 [out, in, kh, kw]
    bias: np.ndarray  # float32 [out]
    stride: tuple[int, int]
    padding: tuple[int, int]

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        _, h, w = shape
        kh, kw = self.weight.shape[2:]
        return (
            int(self.weight.shape[0]),
            (h + 2 * self.padding[0] - kh) // self.stride[0] + 1,
            (w + 2 * self.padding[1] - kw) // self.stride[1] + 1,
        )


@dataclass(frozen=True, eq=False)
class Pool2d:
    """Sum or average over windows, no padding; windows past the edge are dropped."""

    name: str
    kind: str  # "sum" | "avg"
    kernel: tuple[int, int]
    stride: tuple[int, int]

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = shape
        return (c, (h - self.kernel[0]) // self.stride[0] + 1, (w - self.kernel[1]) // self.stride[1] + 1)


@dataclass(frozen=True, eq=False)
class Flatten:
    """All feature axes into one vector, C-major."""

    name: str

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (int(np.prod(shape)),)


@dataclass(frozen=True, eq=False)
class Neuron:
    """A layer of binary spiking neurons: ``v ← β·v + g·I`` (reset by the network's rule), spike when ``v > θ``.

    Attributes
    ----------
    name
        The NIR node's name.
    kind
        ``"IF"`` (β = 1 everywhere) or ``"LIF"``.
    beta, threshold
        float32 arrays of the layer's shape.
    gain
        float32 input gain g per neuron, or ``None`` when it is exactly 1 (snnTorch's export).
    """

    name: str
    kind: str
    beta: np.ndarray
    threshold: np.ndarray
    gain: np.ndarray | None = None

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape


Node = Affine | Conv2d | Pool2d | Flatten | Neuron


@dataclass(frozen=True, eq=False)
class FloatNetwork:
    """A chain of nodes read from a NIR graph, and how it was read.

    Attributes
    ----------
    input_shape
        One sample's shape, without batch or time axes (``(C, H, W)`` or ``(features,)``).
    nodes
        The nodes in order.
    reset
        ``"subtract"`` or ``"zero"``: the reset rule of every neuron.
    dt
        The time step used to discretise LIF nodes.
    source
        The preset the graph was read with, or ``None``.
    assumptions
        What the reader assumed that the graph does not say (one sentence each).
    """

    input_shape: tuple[int, ...]
    nodes: tuple[Node, ...]
    reset: str
    dt: float = SNNTORCH_DT
    source: str | None = None
    assumptions: tuple[str, ...] = field(default=())

    def __repr__(self) -> str:
        parts = []
        for node, shape in zip(self.nodes, self.shapes):
            kind = node.kind if isinstance(node, (Neuron, Pool2d)) else type(node).__name__
            parts.append(f"{node.name}:{kind}->{list(shape)}")
        return (f"FloatNetwork(input_shape={self.input_shape}, nodes=[{', '.join(parts)}], reset={self.reset!r}, "
                f"dt={self.dt}, source={self.source!r})")  # fmt: skip

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The output shape of every node, in order."""
        out, shape = [], self.input_shape
        for node in self.nodes:
            shape = node.out_shape(shape)
            out.append(shape)
        return out

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[-1] if self.nodes else self.input_shape

    def run(self, x: torch.Tensor | np.ndarray, timesteps: int | None = None) -> torch.Tensor:
        """Run the network in float32, one step at a time.

        The operations and their order are snnTorch's (``F.linear``, ``F.conv2d``, ``F.avg_pool2d``; per
        neuron ``reset = [v − θ > 0]`` from the previous step, then ``β·v + I − reset·θ`` or
        ``β·((1 − reset)·v) + I``, then ``spike = [v − θ > 0]``), so for a network exported from snnTorch, on
        the same batch and the same machine, every float32 value is the one snnTorch computes.

        Parameters
        ----------
        x
            ``[N, *input_shape]`` fed at every step (``timesteps`` gives T), or ``[T, N, *input_shape]``.
        timesteps
            T for a constant input; ``None`` when ``x`` has a time axis.

        Returns
        -------
        torch.Tensor
            The last node's output at every step, float32 ``[T, N, *output_shape]`` (spikes when the last node
            is a neuron layer).
        """
        x = torch.as_tensor(x, dtype=torch.float32)
        if timesteps is None:
            steps = list(x)
            sample = tuple(x.shape[2:])
        else:
            steps = [x] * timesteps
            sample = tuple(x.shape[1:])
        if sample != tuple(self.input_shape):
            raise BitspikeError(f"input samples have shape {list(sample)}; the network expects {list(self.input_shape)}")
        params = [_torch_params(n) for n in self.nodes]
        mem: list[torch.Tensor | None] = [None] * len(self.nodes)
        outs = []
        with torch.no_grad():
            for x_t in steps:
                h = x_t
                for i, (node, p) in enumerate(zip(self.nodes, params)):
                    if isinstance(node, Neuron):
                        h, mem[i] = _neuron_step(h, mem[i], p, self.reset)
                    else:
                        h = _apply(node, p, h)
                outs.append(h)
        return torch.stack(outs)

    def counts(self, x: torch.Tensor | np.ndarray, timesteps: int | None = None) -> torch.Tensor:
        """The last node's outputs summed over the steps (spike counts for a neuron layer), ``[N, *output_shape]``."""
        return self.run(x, timesteps).sum(dim=0)


def _torch_params(node: Node) -> dict[str, torch.Tensor | None]:
    if isinstance(node, (Affine, Conv2d)):
        return {"w": torch.from_numpy(node.weight), "b": torch.from_numpy(node.bias) if _has_bias(node) else None}
    if isinstance(node, Neuron):
        return {
            "beta": torch.from_numpy(node.beta),
            "theta": torch.from_numpy(node.threshold),
            "gain": None if node.gain is None else torch.from_numpy(node.gain),
        }
    return {}


def _has_bias(node: Affine | Conv2d) -> bool:
    return not isinstance(node, Affine) or node.has_bias


def _apply(node: Node, p: dict, h: torch.Tensor) -> torch.Tensor:
    if isinstance(node, Affine):
        return F.linear(h, p["w"], p["b"])
    if isinstance(node, Conv2d):
        return F.conv2d(h, p["w"], p["b"], stride=node.stride, padding=node.padding)
    if isinstance(node, Pool2d):
        # nn.AvgPool2d's call (padding 0, floor mode); divisor 1 makes it the window sum
        return F.avg_pool2d(h, node.kernel, node.stride, 0, False, True, 1 if node.kind == "sum" else None)
    if isinstance(node, Flatten):
        return h.flatten(1)
    raise AssertionError(f"no interpreter for {type(node).__name__}")


def _neuron_step(cur: torch.Tensor, mem: torch.Tensor | None, p: dict, reset: str):
    """One step of snnTorch's ``Leaky`` (``reset_delay=True``), written with the same float32 operations."""
    if p["gain"] is not None:
        cur = p["gain"] * cur
    if mem is None:
        mem = torch.zeros_like(cur)
    theta = p["theta"]
    fired = (mem - theta > 0).to(cur.dtype)  # the previous step's spike
    if reset == "subtract":
        mem = p["beta"] * mem + cur - fired * theta
    else:
        mem = p["beta"] * ((1 - fired) * mem) + cur
    return (mem - theta > 0).to(cur.dtype), mem


# --------------------------------------------------------------------------------------------------------------
# reading


def read_nir(
    graph,
    *,
    reset: str | None = None,
    source: str | None = None,
    dt: float | None = None,
) -> FloatNetwork:
    """Read a NIR graph (a file or a ``nir.NIRGraph``) into a :class:`FloatNetwork`.

    Parameters
    ----------
    graph
        Path of a ``.nir`` file (HDF5, ``nir.write``) or a ``nir.NIRGraph``.
    reset
        ``"subtract"`` or ``"zero"``: the reset rule the network was trained with (NIR does not store it).
    source
        A preset from :data:`SOURCES` (``"snntorch"``: subtract reset, dt = 1e-4, snnTorch's float32 β
        recovered exactly from τ). An explicit ``reset`` or ``dt`` overrides the preset's.
    dt
        The time step for LIF nodes (default: the preset's, else snnTorch's 1e-4).

    Raises
    ------
    NirError
        The file is not NIR, the graph is not a chain from one input to one output, a node type is not
        supported, or a field has a value bitspike cannot express; the message names the node and the field.
    """
    if isinstance(graph, (str, os.PathLike)):
        path = Path(graph)
        if not path.is_file():
            raise NirError(f"{path}: no such file")
        try:
            graph = nir.read(path)
        except Exception as e:  # h5py and nir raise many types for a file that is not NIR
            raise NirError(f"{path}: not a NIR graph ({type(e).__name__}: {e})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise NirError(f"expected a nir.NIRGraph or a path, not {type(graph).__name__}")
    if source is not None and source not in SOURCES:
        raise NirError(f"unknown source {source!r}; expected one of {sorted(SOURCES)}")
    preset = SOURCES.get(source, {})
    notes: list[str] = []
    dt = float(dt if dt is not None else preset.get("dt", SNNTORCH_DT))
    if not (np.isfinite(dt) and dt > 0):
        raise NirError(f"dt must be a positive number, not {dt!r}")

    order, input_shape = _chain(graph)
    reset = _resolve_reset(graph, order, reset, source, preset, notes)
    ctx = _Context(dt=dt, reset=reset, snntorch=source == "snntorch", notes=notes)
    nodes: list[Node] = []
    shape = input_shape
    for name in order:
        node = graph.nodes[name]
        reader = _READERS.get(type(node))
        if reader is None:
            raise NirError(_unsupported(node), node=_where(name, node))
        converted = reader(name, node, shape, ctx)
        if converted is None:
            continue
        nodes.append(converted)
        shape = converted.out_shape(shape)
    out = FloatNetwork(
        input_shape=input_shape, nodes=tuple(nodes), reset=reset, dt=dt, source=source, assumptions=tuple(notes)
    )
    _check_output(graph, out)
    return out


@dataclass
class _Context:
    dt: float
    reset: str
    snntorch: bool
    notes: list[str]


def _where(name: str, node) -> str:
    return f"node {name!r} ({type(node).__name__})"


def _unsupported(node) -> str:
    if isinstance(node, nir.NIRGraph):
        return "nested graphs (recurrent layers such as snnTorch's RLeaky) are not supported"
    if isinstance(node, nir.CubaLIF):
        return (
            "CubaLIF (current-based LIF, snnTorch's Synaptic) has a synaptic current state besides the membrane, "
            "and bitspike's neuron has only the membrane; export a Leaky (LIF) network instead"
        )
    names = sorted(t.__name__ for t in _READERS)
    return f"NIR node type {type(node).__name__} is not supported; supported: {', '.join(names)}"


def _chain(graph) -> tuple[list[str], tuple[int, ...]]:
    """The node names from the input to the output (both excluded), and the input shape."""
    inputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in graph.nodes.items() if isinstance(n, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NirError(f"the graph must have one Input and one Output node, not {len(inputs)} and {len(outputs)}")
    succ: dict[str, list[str]] = {k: [] for k in graph.nodes}
    pred: dict[str, list[str]] = {k: [] for k in graph.nodes}
    for edge in graph.edges:
        src, dst = (str(e).split(".")[0] for e in edge)
        if src not in graph.nodes or dst not in graph.nodes:
            raise NirError(f"edge {tuple(edge)} names a node that is not in the graph")
        succ[src].append(dst)
        pred[dst].append(src)
    order, name, seen = [], inputs[0], set()
    while True:
        nxt = succ[name]
        if len(nxt) != 1:
            raise NirError(
                f"has {len(nxt)} outgoing edges; bitspike reads chains (one edge from each node to the next)",
                node=_where(name, graph.nodes[name]),
            )
        name = nxt[0]
        if name in seen or len(pred[name]) != 1:
            raise NirError(
                f"has {len(pred[name])} incoming edges (a branch, a merge or a cycle); bitspike reads chains",
                node=_where(name, graph.nodes[name]),
            )
        seen.add(name)
        if name == outputs[0]:
            break
        order.append(name)
    if len(seen) + 1 != len(graph.nodes):
        stray = sorted(set(graph.nodes) - seen - {inputs[0]})
        raise NirError(f"nodes {stray} are not on the path from the input to the output")
    in_type = graph.nodes[inputs[0]].input_type
    shape = next(iter(in_type.values())) if in_type else None
    if shape is None:
        raise NirError("the Input node has no shape", node=_where(inputs[0], graph.nodes[inputs[0]]))
    return order, tuple(int(v) for v in np.asarray(shape).reshape(-1))


def _resolve_reset(graph, order, reset, source, preset, notes: list[str]) -> str:
    if reset is not None:
        if reset not in RESET_RULES:
            raise NirError(f"unknown reset {reset!r}; expected one of {list(RESET_RULES)}")
        notes.append(f"reset '{reset}' (given by the caller)")
        return reset
    if "reset" in preset:
        notes.append(f"reset '{preset['reset']}' ({source}'s default, which its NIR export does not record)")
        return preset["reset"]
    marked = set()
    for k in order:
        meta = getattr(graph.nodes[k], "metadata", None)
        if isinstance(meta, dict) and RESET_METADATA in meta:
            value = meta[RESET_METADATA]
            marked.add(value.decode() if isinstance(value, bytes) else str(value))  # h5py gives bytes back
    if len(marked) > 1:
        raise NirError(f"neuron nodes disagree on metadata '{RESET_METADATA}': {sorted(marked)}")
    if marked:
        (rule,) = marked
        if rule not in RESET_RULES:
            raise NirError(f"metadata '{RESET_METADATA}' is {rule!r}; expected one of {list(RESET_RULES)}")
        notes.append(f"reset '{rule}' (recorded in the graph by bitspike)")
        return rule
    notes.append("reset 'zero' (NIR's own rule, v = v_reset after a spike; no reset or source given)")
    return "zero"


def _array(name, node, fld: str, value=None, *, dtype=np.float64) -> np.ndarray:
    value = getattr(node, fld) if value is None else value
    if value is None:
        raise NirError("is missing", node=_where(name, node), field=fld)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise NirError(f"is not numeric: {value!r}", node=_where(name, node), field=fld) from None


def _finite(name, node, fld: str, arr: np.ndarray) -> np.ndarray:
    if not np.isfinite(arr).all():
        raise NirError("has non-finite values", node=_where(name, node), field=fld)
    return arr


def _pair(name, node, fld: str, default=None) -> tuple[int, int]:
    value = getattr(node, fld, default)
    if value is None:
        value = default
    arr = _array(name, node, fld, value).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2 or (arr != np.round(arr)).any():
        raise NirError(f"expected one or two integers, not {value!r}", node=_where(name, node), field=fld)
    return int(arr[0]), int(arr[1])


def _read_affine(name, node, shape, ctx) -> Affine:
    where = _where(name, node)
    w = _finite(name, node, "weight", _array(name, node, "weight", dtype=np.float32))
    if w.ndim != 2:
        raise NirError(f"expected a 2-D [out, in] matrix, not shape {list(w.shape)}", node=where, field="weight")
    if len(shape) != 1 or shape[0] != w.shape[1]:
        raise NirError(
            f"takes {w.shape[1]} inputs but receives shape {list(shape)} (put a Flatten before it)",
            node=where,
            field="weight",
        )
    has_bias = isinstance(node, nir.Affine)
    if has_bias:
        b = _finite(name, node, "bias", _array(name, node, "bias", dtype=np.float32)).reshape(-1)
        if b.shape != (w.shape[0],):
            raise NirError(f"expected {w.shape[0]} values, not {b.size}", node=where, field="bias")
    else:
        b = np.zeros(w.shape[0], np.float32)
    return Affine(name, np.ascontiguousarray(w), np.ascontiguousarray(b), has_bias)


def _read_conv(name, node, shape, ctx) -> Conv2d:
    where = _where(name, node)
    w = _finite(name, node, "weight", _array(name, node, "weight", dtype=np.float32))
    if w.ndim != 4:
        raise NirError(f"expected [out, in, kh, kw], not shape {list(w.shape)}", node=where, field="weight")
    if len(shape) != 3 or shape[0] != w.shape[1]:
        raise NirError(f"takes {w.shape[1]} input channels but receives shape {list(shape)}", node=where, field="weight")
    if int(node.groups) != 1:
        raise NirError(f"grouped convolution is not supported (groups = {node.groups})", node=where, field="groups")
    if _pair(name, node, "dilation", 1) != (1, 1):
        raise NirError(f"dilation is not supported ({node.dilation})", node=where, field="dilation")
    stride = _pair(name, node, "stride", 1)
    kh, kw = w.shape[2:]
    if isinstance(node.padding, str):
        if node.padding == "valid":
            padding = (0, 0)
        elif node.padding == "same" and stride == (1, 1) and kh % 2 == 1 and kw % 2 == 1:
            padding = (kh // 2, kw // 2)
        else:
            raise NirError(
                f"padding {node.padding!r} is supported only as 'valid', or 'same' with stride 1 and odd kernels",
                node=where,
                field="padding",
            )
    else:
        padding = _pair(name, node, "padding", 0)
    if min(stride) < 1 or min(padding) < 0:
        raise NirError(f"stride must be ≥ 1 and padding ≥ 0, not {stride} and {padding}", node=where, field="stride")
    b = _finite(name, node, "bias", _array(name, node, "bias", dtype=np.float32)).reshape(-1)
    if b.shape != (w.shape[0],):
        raise NirError(f"expected {w.shape[0]} values, not {b.size}", node=where, field="bias")
    conv = Conv2d(name, np.ascontiguousarray(w), np.ascontiguousarray(b), stride, padding)
    if min(conv.out_shape(shape)[1:]) < 1:
        raise NirError(f"the {kh}×{kw} kernel does not fit the input {list(shape)}", node=where, field="weight")
    return conv


def _read_pool(name, node, shape, ctx) -> Pool2d:
    where = _where(name, node)
    kernel = _pair(name, node, "kernel_size")
    stride = _pair(name, node, "stride", kernel)
    if _pair(name, node, "padding", 0) != (0, 0):
        raise NirError(f"padded pooling is not supported ({node.padding})", node=where, field="padding")
    if len(shape) != 3:
        raise NirError(f"expects a [C, H, W] input, not shape {list(shape)}", node=where)
    if min(kernel) < 1 or min(stride) < 1 or kernel[0] > shape[1] or kernel[1] > shape[2]:
        raise NirError(f"kernel {kernel} / stride {stride} do not fit the input {list(shape)}", node=where,
                       field="kernel_size")  # fmt: skip
    return Pool2d(name, "sum" if isinstance(node, nir.SumPool2d) else "avg", kernel, stride)


def _read_flatten(name, node, shape, ctx) -> Flatten:
    rank = len(shape)
    start, end = int(node.start_dim), int(node.end_dim)
    start, end = start % rank if rank else 0, end % rank if rank else 0
    if (start, end) != (0, max(rank - 1, 0)):
        raise NirError(
            f"flattens axes {node.start_dim} … {node.end_dim} of a sample of shape {list(shape)}; "
            "bitspike flattens whole samples (start_dim 0, end_dim -1, without the batch axis)",
            node=_where(name, node),
            field="start_dim",
        )
    return Flatten(name)


def _neuron_array(name, node, fld: str, shape, *, finite=True) -> np.ndarray:
    arr = _array(name, node, fld)
    try:
        arr = np.broadcast_to(arr, shape).copy()
    except ValueError:
        raise NirError(f"shape {list(arr.shape)} does not match the layer's {list(shape)}", node=_where(name, node),
                       field=fld) from None  # fmt: skip
    return _finite(name, node, fld, arr) if finite else arr


def _threshold_and_reset(name, node, shape, ctx) -> np.ndarray:
    where = _where(name, node)
    theta = _neuron_array(name, node, "v_threshold", shape)
    if (theta <= 0).any():
        raise NirError("must be positive", node=where, field="v_threshold")
    v_reset = getattr(node, "v_reset", None)
    if v_reset is not None:
        v_reset = _neuron_array(name, node, "v_reset", shape)
        if (v_reset != 0).any():
            raise NirError("only reset to 0 is supported", node=where, field="v_reset")
    return theta.astype(np.float32)


def _read_if(name, node, shape, ctx) -> Neuron:
    theta = _threshold_and_reset(name, node, shape, ctx)
    r = _neuron_array(name, node, "r", shape)
    return Neuron(name, "IF", np.ones(shape, np.float32), theta, None if (r == 1).all() else r.astype(np.float32))


def _read_lif(name, node, shape, ctx) -> Neuron:
    where = _where(name, node)
    theta = _threshold_and_reset(name, node, shape, ctx)
    if (_neuron_array(name, node, "v_leak", shape) != 0).any():
        raise NirError("only v_leak = 0 is supported (a leak towards 0)", node=where, field="v_leak")
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = _neuron_array(name, node, "tau", shape, finite=False)
        r = _neuron_array(name, node, "r", shape, finite=False)
    inf_tau, inf_r = np.isposinf(tau), np.isposinf(r)
    if np.isnan(tau).any() or (tau <= 0).any():
        raise NirError("must be positive", node=where, field="tau")
    if (inf_tau != inf_r).any() or np.isnan(r).any():
        raise NirError("must be finite where tau is, and infinite (snnTorch's β = 1) only where tau is", node=where,
                       field="r")  # fmt: skip
    if (~inf_tau & (tau < ctx.dt)).any():
        raise NirError(f"tau < dt = {ctx.dt} gives a negative leak factor 1 − dt/tau", node=where, field="tau")
    fin = ~inf_tau
    beta = np.ones(shape, np.float32)
    gain = np.ones(shape, np.float64)
    if fin.any():
        beta[fin] = _snntorch_beta(tau[fin], ctx.dt) if ctx.snntorch else (1.0 - ctx.dt / tau[fin]).astype(np.float32)
        gain[fin] = ctx.dt * r[fin] / tau[fin]
    if inf_tau.any():
        ctx.notes.append(f"node {name!r}: tau = r = inf (snnTorch's export of beta = 1) read as IF, input gain 1")
    if np.allclose(gain, 1.0, rtol=1e-6, atol=0):
        gain_arr = None
    else:
        gain_arr = gain.astype(np.float32)
    return Neuron(name, "IF" if (beta == 1).all() else "LIF", beta, theta, gain_arr)


def _snntorch_beta(tau: np.ndarray, dt: float) -> np.ndarray:
    """The float32 β whose snnTorch export ``dt / (1 − β)`` (float32 arithmetic) gives ``tau``, where unique.

    ``1 − dt/τ`` alone is off by an ulp for about 0.4 % of the β in [0.5, 1); searching a few ulps around it
    for the β that exports to exactly this τ recovers snnTorch's parameter bit for bit there. Where several
    or none match (β < 0.5, or a τ not written by snnTorch) the float64 estimate is kept.
    """
    tau32 = tau.astype(np.float32)
    guess = (1.0 - dt / tau).astype(np.float32)
    cands = [guess]
    up, down = guess, guess
    for _ in range(3):
        up, down = np.nextafter(up, np.float32(2)), np.nextafter(down, np.float32(-1))
        cands += [up, down]
    cand = np.stack(cands)
    with np.errstate(divide="ignore"):
        hits = (np.float32(dt) / (np.float32(1) - cand)) == tau32[None]
    unique = hits.sum(axis=0) == 1
    out = guess.copy()
    out[unique] = cand[hits.argmax(axis=0), np.arange(guess.size)][unique]
    return out


def _read_passthrough(name, node, shape, ctx):
    return None


def _check_output(graph, net: FloatNetwork) -> None:
    out_name = next(k for k, n in graph.nodes.items() if isinstance(n, nir.Output))
    out_type = graph.nodes[out_name].output_type
    declared = next(iter(out_type.values())) if out_type else None
    if declared is None:
        return
    declared = tuple(int(v) for v in np.asarray(declared).reshape(-1))
    if int(np.prod(declared)) != int(np.prod(net.output_shape)):
        raise NirError(
            f"declares shape {list(declared)} but the chain produces {list(net.output_shape)}",
            node=_where(out_name, graph.nodes[out_name]),
            field="output_type",
        )


def _readers() -> dict:
    return {
        nir.Affine: _read_affine,
        nir.Linear: _read_affine,
        nir.Conv2d: _read_conv,
        nir.SumPool2d: _read_pool,
        nir.AvgPool2d: _read_pool,
        nir.Flatten: _read_flatten,
        nir.IF: _read_if,
        nir.LIF: _read_lif,
    }


_READERS = _readers()


# --------------------------------------------------------------------------------------------------------------
# writing


def to_nir(net: FloatNetwork, *, target: str = "nir", allow_subtract: bool = False):
    """Write a :class:`FloatNetwork` as a ``nir.NIRGraph`` (binary IF/LIF neurons; what NIR can express).

    Parameters
    ----------
    net
        The description.
    target
        ``"nir"``: neurons as NIR defines them (IF as ``nir.IF``, LIF with ``τ = dt/(1 − β)``, ``r = τ/dt``).
        ``"snntorch"``: what ``snntorch.import_nir.import_from_nir`` 1.0.0 reads correctly: LIF only (its IF
        reader builds a β = 0.9 neuron, and it cannot read ``τ = ∞``), β = 1 as ``τ = dt·2^60`` so that its
        ``1 − dt/τ`` is exactly 1.0, input gain 1.
    allow_subtract
        NIR's neurons reset to ``v_reset``; a subtract-reset network written as NIR behaves differently in
        every NIR reader (snnTorch's importer resets to zero). It is refused unless this is set; then each
        neuron node carries ``metadata["bitspike.reset"] = "subtract"``, which :func:`read_nir` honours.

    Raises
    ------
    NirError
        For what NIR or the target cannot express, with the reason.
    """
    if target not in ("nir", "snntorch"):
        raise NirError(f"unknown target {target!r}; expected 'nir' or 'snntorch'")
    if net.reset == "subtract" and not allow_subtract:
        raise NirError(
            "the network resets by subtraction, which NIR cannot express (NIR's IF and LIF reset to v_reset, and "
            "snnTorch's NIR importer resets to zero); pass allow_subtract=True to write it anyway, marked with "
            f"metadata '{RESET_METADATA}'"
        )
    nodes: dict = {"input": nir.Input(input_type={"input": np.array(net.input_shape)})}
    edges, prev = [], "input"
    shape = net.input_shape
    for node in net.nodes:
        if node.name in ("input", "output") or node.name in nodes:
            raise NirError(f"node name {node.name!r} is reserved or repeated")
        nodes[node.name] = _write_node(node, shape, net, target)
        edges.append((prev, node.name))
        prev, shape = node.name, node.out_shape(shape)
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges.append((prev, "output"))
    graph = nir.NIRGraph(nodes=nodes, edges=edges)
    return graph


def _write_node(node: Node, shape, net: FloatNetwork, target: str):
    if isinstance(node, Affine):
        if node.has_bias:
            return nir.Affine(weight=node.weight.copy(), bias=node.bias.copy())
        return nir.Linear(weight=node.weight.copy())
    if isinstance(node, Conv2d):
        return nir.Conv2d(input_shape=tuple(shape[1:]), weight=node.weight.copy(), stride=node.stride,
                          padding=node.padding, dilation=(1, 1), groups=1, bias=node.bias.copy())  # fmt: skip
    if isinstance(node, Pool2d):
        cls = nir.SumPool2d if node.kind == "sum" else nir.AvgPool2d
        return cls(kernel_size=np.array(node.kernel), stride=np.array(node.stride), padding=np.array([0, 0]))
    if isinstance(node, Flatten):
        # axes counted from the end: the same in NIR (no batch axis) and in torch importers that keep one
        return nir.Flatten(input_type={"input": np.array(shape)}, start_dim=-len(shape), end_dim=-1)
    assert isinstance(node, Neuron)
    meta = {RESET_METADATA: net.reset} if net.reset != "zero" else {}
    theta = node.threshold.astype(np.float32)
    zeros = np.zeros_like(theta)
    gain = np.ones_like(theta) if node.gain is None else node.gain.astype(np.float32)
    if target == "nir" and node.kind == "IF":
        return nir.IF(r=gain, v_threshold=theta, v_reset=zeros, metadata=meta)
    if node.gain is not None:
        if target == "snntorch":
            raise NirError("snnTorch's importer needs input gain 1; fold the gain into the weights before",
                           node=f"node {node.name!r} (Neuron)", field="gain")  # fmt: skip
    dt = np.float32(net.dt)
    beta = node.beta.astype(np.float32)
    with np.errstate(divide="ignore"):
        # snnTorch's export formula, float32: a β read with source='snntorch' gives back its τ bit for bit
        tau = dt / (np.float32(1) - beta)
    if target == "snntorch":
        tau = np.where(beta == 1, np.float64(net.dt) * _SNNTORCH_IF_TAU_STEPS, tau.astype(np.float64))
        r = tau / np.float64(net.dt)
    else:
        r = tau / dt
    r = r * gain if node.gain is not None else r
    return nir.LIF(tau=tau, r=r, v_leak=zeros, v_threshold=theta, v_reset=zeros, metadata=meta)


def write_nir(net: FloatNetwork, path: str | os.PathLike, **kwargs) -> Path:
    """:func:`to_nir` and ``nir.write`` to ``path``; returns the path."""
    path = Path(path)
    nir.write(path, to_nir(net, **kwargs))
    return path
