"""The op registry: one module per layer type, and what every op module provides.

A layer type ("op") is one module of :mod:`bitspike.ops`. It holds, in one
place, everything the tool chain knows about that op:

* its manifest schema and validation (a :class:`Layer` subclass with
  ``parse`` and ``infer_out_shape``),
* its range rule (:meth:`Op.ranges`, used by :mod:`bitspike.analysis`),
* its integer forward (:meth:`Op.forward`, used by :mod:`bitspike.host.golden`),
* its plan node and costs: LUTs, DSP candidates, memory and cycles
  (:meth:`Op.plan`, :meth:`Op.widths`, :meth:`Op.fold`, :meth:`Op.estimate_luts` and the other
  resource estimates (:meth:`Op.estimate_ffs`, :meth:`Op.estimate_dsps`, :meth:`Op.memories`),
  :meth:`Op.busy_cycles`, :meth:`Op.arrival_times`, used by :mod:`bitspike.gen`),
* its engine builder with the debug taps it offers (:meth:`Op.build_engine`),
* its export and audit rules (:meth:`Op.export_layer`, :meth:`Op.audit_step`,
  used by :mod:`bitspike.host.convert` and :mod:`bitspike.host.agreement`).

Core code iterates :data:`OPS` and calls these methods; it never tests a
layer's kind. This module imports nothing else of bitspike, so any module can
import it; op modules import the generator, the hardware templates and torch
only inside the methods that need them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping

import numpy as np

from bitspike.errors import ManifestError

if TYPE_CHECKING:  # pragma: no cover
    from bitspike.ranges import LayerRanges, Range
    from bitspike.gen.ir import Plan, PlanNode

__all__ = [
    "Ctx", "Layer", "Op", "OPS", "LAYER_KINDS", "register_op", "op_of", "weight_limit", "spike_max", "rounding_term",
    "arrays_equal", "divisors",
]

#: Legal ranges, inclusive. Wider bit widths than the paper uses are allowed so
#: that 8-bit first layers and experiments fit; the generator sizes for them.
W_BITS_RANGE = (1, 16)
S_BITS_RANGE = (1, 16)
TIMESTEPS_RANGE = (1, 64)
K_RANGE = (0, 30)
SHIFT_RANGE = (0, 62)
INPUT_BITS_RANGE = (1, 16)
MULT_LIMIT = 2**31  # |multiplier| < MULT_LIMIT
BIAS_LIMIT = 2**47  # |bias| < BIAS_LIMIT
CURRENT_LIMIT = 2**40  # |lo|, |hi| of clamp bounds

#: Size limits (docs/SEMANTICS.md §7). The generator holds a feature map's rows in line
#: buffers and writes every weight into the Verilog source, so its time and memory grow with
#: these; beyond them generation takes too long to be useful or does not fit a machine's memory.
MAX_MAP_ELEMENTS = 2**20  # elements of one feature map (the input or one layer's output)
MAX_DIM = 2**16  # one entry of a shape

#: Tensor dtypes accepted: every value of these converts to int64 exactly. uint64 is refused
#: (values of 2**63 and above would wrap to negatives), as are bool and floating point.
ACCEPTED_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32")


def weight_limit(w_bits: int) -> int:
    """Largest |W_int| that ``w_bits`` can hold (symmetric; ±1 for one bit)."""
    return 1 if w_bits == 1 else 2 ** (w_bits - 1) - 1


def spike_max(s_bits: int) -> int:
    """Largest spike value q = 2**B_s - 1."""
    return 2**s_bits - 1


# ----------------------------------------------------------------------------------------------
# validation helpers: each names the layer and the field


class Ctx:
    """Where we are while validating: used to build precise error messages."""

    def __init__(self, where: str | None):
        self.where = where

    def fail(self, field_name: str | None, message: str) -> ManifestError:
        return ManifestError(message, layer=self.where, field=field_name)

    def get(self, meta: Mapping[str, Any], key: str) -> Any:
        if key not in meta:
            raise self.fail(key, "missing")
        return meta[key]

    def int_in(self, meta: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
        value = self.get(meta, key)
        return self.check_int(key, value, lo, hi)

    def check_int(self, key: str, value: Any, lo: int | None, hi: int | None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"expected an integer, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            lo_s = "-inf" if lo is None else str(lo)
            hi_s = "inf" if hi is None else str(hi)
            raise self.fail(key, f"{value} is out of range, expected {lo_s} … {hi_s}")
        return value

    def pair(self, meta: Mapping[str, Any], key: str, lo: int, hi: int) -> tuple[int, int]:
        value = self.get(meta, key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise self.fail(key, f"expected [h, w], got {value!r}")
        return (self.check_int(key, value[0], lo, hi), self.check_int(key, value[1], lo, hi))

    def shape(self, meta: Mapping[str, Any], key: str) -> tuple[int, ...]:
        value = self.get(meta, key)
        if not isinstance(value, (list, tuple)) or not value or len(value) > 3:
            raise self.fail(key, f"expected a list of 1 to 3 positive integers, got {value!r:.80}")
        shape = tuple(self.check_int(key, v, 1, MAX_DIM) for v in value)
        if math.prod(shape) > MAX_MAP_ELEMENTS:
            raise self.fail(
                key, f"shape {list(shape)} has {math.prod(shape):,} elements; at most {MAX_MAP_ELEMENTS:,} per feature map"
            )
        return shape

    def keys(self, meta: Mapping[str, Any], allowed: Iterable[str], what: str) -> None:
        """Refuse keys the format does not define (a misspelt field would otherwise be silently ignored)."""
        unknown = sorted(set(meta) - set(allowed))
        if unknown:
            raise self.fail(unknown[0], f"unknown field for {what}; expected only {sorted(allowed)}")

    def tensor(
        self,
        tensors: Mapping[str, np.ndarray],
        key: str,
        shape: tuple[int, ...],
        lo: int | None = None,
        hi: int | None = None,
        what: str = "",
    ) -> np.ndarray:
        if key not in tensors:
            raise self.fail(key, f"tensor missing from the file (expected shape {list(shape)})")
        array = tensors[key]
        if not np.issubdtype(array.dtype, np.integer):
            raise self.fail(key, f"expected an integer tensor, got dtype {array.dtype}")
        if array.dtype.name not in ACCEPTED_DTYPES:
            raise self.fail(
                key, f"dtype {array.dtype} can hold values that do not fit int64; expected one of {', '.join(ACCEPTED_DTYPES)}"
            )
        if tuple(array.shape) != tuple(shape):
            raise self.fail(key, f"wrong shape {list(array.shape)}, expected {list(shape)}")
        array = array.astype(np.int64)
        if array.size and lo is not None and int(array.min()) < lo:
            idx = np.unravel_index(int(array.argmin()), array.shape)
            raise self.fail(key, f"value {int(array.min())} at {list(map(int, idx))} is below {lo}{what}")
        if array.size and hi is not None and int(array.max()) > hi:
            idx = np.unravel_index(int(array.argmax()), array.shape)
            raise self.fail(key, f"value {int(array.max())} at {list(map(int, idx))} is above {hi}{what}")
        return array


def arrays_equal(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.array_equal(a, b))



def divisors(n: int) -> list[int]:
    """The divisors of ``n`` ≥ 1, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def rounding_term(shift: int) -> int:
    """The round-half-up constant added before an arithmetic right shift."""
    return (1 << shift) >> 1


@dataclass(frozen=True, eq=False)
class Requant:
    """x_next[o] = clamp((acc[o]·multiplier[o] + bias[o] + rnd) >> shift, lo, hi)."""

    multiplier: np.ndarray
    bias: np.ndarray
    shift: int
    lo: int
    hi: int

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Requant)
            and (self.shift, self.lo, self.hi) == (other.shift, other.lo, other.hi)
            and arrays_equal(self.multiplier, other.multiplier)
            and arrays_equal(self.bias, other.bias)
        )


@dataclass(frozen=True, eq=False)
class Layer:
    """Base of all layer kinds. ``inputs`` names earlier layers or ``"input"``."""

    name: str
    inputs: tuple[str, ...]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    op: ClassVar[str] = ""
    n_inputs: ClassVar[int] = 1
    tensor_fields: ClassVar[tuple[str, ...]] = ()
    #: JSON fields of this kind beyond the common ``name``, ``op``, ``inputs``, ``in_shape``, ``out_shape``
    json_fields: ClassVar[tuple[str, ...]] = ()

    @property
    def is_synaptic(self) -> bool:
        return False

    @property
    def gives_logits(self) -> bool:
        """Whether the layer's output may be the network's logits (only the last layer's is)."""
        return False

    @property
    def weight_bits(self) -> int:
        """Bits of weight memory the layer declares (Σ numel(W)·B_w; 0 without weights)."""
        return 0

    @property
    def min_version(self) -> int:
        """The oldest manifest version that can hold the layer."""
        return 1

    def steps_out(self, in_steps: list[int | None], ctx: Ctx) -> int | None:
        """How many per-step currents the layer emits, given its inputs' (``None``: one for all steps).

        A layer without a neuron acts on each step's currents alike: its inputs must agree.
        """
        if len(set(in_steps)) > 1:
            what = ", ".join(f"'{i}': {'constant' if n is None else f'{n} steps'}" for i, n in zip(self.inputs, in_steps))
            raise ctx.fail("inputs", f"its inputs change over time differently ({what}); they must agree")
        return in_steps[0]

    def infer_out_shape(self, in_shapes: list[tuple[int, ...]], ctx: Ctx) -> tuple[int, ...]:
        raise NotImplementedError

    def extra_json(self) -> dict[str, Any]:
        return {}

    def tensors(self) -> dict[str, np.ndarray]:
        return {}

    def to_json(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "op": self.op,
            "inputs": list(self.inputs),
            "in_shape": list(self.in_shape),
            "out_shape": list(self.out_shape),
        }
        out.update(self.extra_json())
        return out

    @classmethod
    def parse(cls, meta: Mapping[str, Any], tensors: Mapping[str, np.ndarray], ctx: Ctx, base: dict) -> "Layer":
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return False
        if self.to_json() != other.to_json():  # type: ignore[union-attr]
            return False
        mine, theirs = self.tensors(), other.tensors()  # type: ignore[union-attr]
        return mine.keys() == theirs.keys() and all(arrays_equal(mine[k], theirs[k]) for k in mine)

    __hash__ = None  # type: ignore[assignment]



#: op name → layer class (the manifest parser's table)
LAYER_KINDS: dict[str, type[Layer]] = {}


class Op:
    """What one layer type does at every stage of the tool chain. One instance per op, in :data:`OPS`.

    Subclasses set :attr:`name` and :attr:`layer_cls` and override what applies; the defaults
    describe an op without weights that the hardware streams one element per clock.
    """

    #: the manifest's ``op`` string
    name: ClassVar[str] = ""
    #: the manifest layer class (schema and validation)
    layer_cls: ClassVar[type[Layer]]
    #: debug taps the engine offers, in the order the report lists them
    taps: ClassVar[tuple[str, ...]] = ("x", "out")
    #: engine input ports, by position in the layer's ``inputs``
    input_ports: ClassVar[tuple[str, ...]] = ("x",)
    #: True for an op that builds no hardware and passes its input stream on unchanged (a re-indexing)
    passthrough_stream: ClassVar[bool] = False
    #: True for an op whose engine takes PE/lane folding (the auto-folding pass widens only these)
    foldable: ClassVar[bool] = False
    #: True when the engine joins two branches of the graph (each fork branch into it needs a skew FIFO)
    joins_branches: ClassVar[bool] = False
    #: DSP blocks kept back for multiplies the allocator does not place (:mod:`bitspike.gen.dsp`)
    reserved_dsps: ClassVar[int] = 0
    #: True for an op with a neuron and weights (linear, conv2d): export gives it a k and a unit
    synaptic: ClassVar[bool] = False
    #: True when the engine passes vector beats through (a pool): on a vector stream its output beats carry as
    #: many elements as its input beats, so both its streams take one width (:mod:`bitspike.gen.folding`)
    vector_through: ClassVar[bool] = False

    def __repr__(self) -> str:
        return f"<op {self.name!r}>"

    # ---- analysis (bitspike.analysis)

    def ranges(self, layer: Layer, inputs: "list[Range]") -> "LayerRanges":
        """The ranges of the layer's registers, given the ranges of its input currents."""
        raise NotImplementedError(f"op {self.name!r} has no range rule")

    def wide_product(self, layer: Layer, r: "LayerRanges") -> bool:
        """Whether an int64 evaluation of the layer's product register could overflow (no product: False)."""
        return False

    def stats(self, layer: Layer) -> dict[str, Any]:
        """Fields of :class:`bitspike.analysis.LayerStats` beyond name/op/shapes (none without weights)."""
        return {}

    # ---- golden model (bitspike.host.golden)

    def forward(self, model, layer: Layer, xs: list, trace: bool):
        """Run the layer on int64 tensors ``xs`` (batch first); returns ``(out, LayerTrace or None)``.

        ``model`` is the :class:`~bitspike.host.golden.GoldenModel`: its ``check`` compares a register
        with the analysed range, ``scale_wide`` evaluates a wide product exactly.
        """
        raise NotImplementedError(f"op {self.name!r} has no golden forward")

    # ---- plan (bitspike.gen)

    def plan(self, index: int, layer: Layer, r: "LayerRanges", manifest) -> "PlanNode":
        """The layer's initial plan node (before the passes: folding 1×1, no widths)."""
        raise NotImplementedError(f"op {self.name!r} has no plan node")

    def widths(self, node: "PlanNode", layer: Layer, r: "LayerRanges") -> dict[str, int]:
        """Register widths the report lists for the engine."""
        return {"x": r.x.width, "out": r.out.width}

    def fold(self, node: "PlanNode", layer: Layer, r: "LayerRanges", pes: int, lanes: int) -> "PlanNode":
        """The node folded to ``pes`` × ``lanes`` (memory bits set); refuses a fold the engine cannot take."""
        from dataclasses import replace

        from bitspike.errors import HardwareError

        if (pes, lanes) != (1, 1):
            raise HardwareError(f"fold for '{node.name}': a {self.name} layer has no PEs to fold")
        return replace(node)

    def vector_unit(self, node: "PlanNode", side: str) -> int:
        """Vector streams: every element count per beat the engine's ``side`` (``"in"`` or ``"out"``)
        stream may carry divides this number, whatever the fold (:mod:`bitspike.gen.folding`); the
        fold then needs to be compatible (:meth:`vector_fits`). Default 1: scalar streams only."""
        return 1

    def vector_fits(self, node: "PlanNode") -> bool:
        """Whether the node's fold takes its ``vec_in`` and ``vec_out`` (only asked when one is above 1)."""
        return False

    def fold_choices(self, node: "PlanNode") -> tuple[list[int], list[int]]:
        """The ``pes`` and the ``lanes`` values (each ascending) the auto folder may give the engine.

        :func:`bitspike.gen.folding.folding_pass` widens a node only to the next value of one list
        or both, so every pair taken from them must be a fold :meth:`fold` accepts; an op with
        constraints on its folds (:mod:`bitspike.ops.conv2d`) leaves the illegal ones out here rather
        than having them refused. They may be a subset of what :meth:`fold` accepts from the user (the
        synaptic ops list divisors, so that weight memories stay unpadded). Default: only 1 × 1.
        """
        return [1], [1]

    def tap_choices(self, node: "PlanNode") -> list[int]:
        """Kernel taps per clock (ascending) the auto folder may give the engine (the third axis of a fold,
        ``PESxLANEStTAPS``); every one must be a fold :meth:`fold` accepts with every pair of
        :meth:`fold_choices`. Default: only 1 (a conv's multi-tap engine: :mod:`bitspike.ops.conv2d`)."""
        return [1]

    def estimate_luts(self, node: "PlanNode") -> int:
        """Coarse LUT estimate of the engine (:mod:`bitspike.gen.folding`)."""
        return 40 + 3 * node.widths.get("out", 8)

    def estimate_ffs(self, node: "PlanNode") -> int:
        """Coarse flip-flop estimate of the engine: its input and output registers and a few counters."""
        return 32 + 2 * (node.widths.get("x", 8) + node.widths.get("out", 8))

    def estimate_dsps(self, node: "PlanNode", layer: Layer, r: "LayerRanges") -> int:
        """DSP blocks the engine instantiates (exact): its allotted candidates plus :attr:`reserved_dsps`.

        A node without an allotment yet (``dsp_blocks`` unset: no device limit) builds every
        candidate as a DSP multiply.
        """
        n = len(self.dsp_candidates(layer, r, node))
        blocks = getattr(node, "dsp_blocks", None)
        return self.reserved_dsps + (n if blocks is None else min(n, blocks))

    def memories(self, node: "PlanNode") -> list[tuple[int, int, str]]:
        """The engine's memories as ``(depth, width, kind)``.

        ``kind``: ``"block"`` (marked ``ram_style = "block"``), ``"ram"`` (written and read with a clock:
        Yosys picks block RAM, LUT RAM or logic by cost), ``"async"`` (read without a clock: never block
        RAM), ``"rom"`` (a small constant table: logic).
        :func:`bitspike.gen.folding.memory_blocks` maps them to the family's block RAMs. Default: none.
        """
        return []

    def dsp_candidates(self, layer: Layer, r: "LayerRanges", node: "PlanNode") -> list[tuple[int, str]]:
        """The engine's products that may become DSP multiplies, best first, as ``(LUT cost, kind)``."""
        return []

    def with_dsp_blocks(self, node: "PlanNode", blocks: int) -> "PlanNode":
        """The node with its share of the DSP budget (ops without candidates keep the node)."""
        return node

    # ---- fused requantize-and-fire (bitspike.gen.fuse)

    def fused_output(self, layer: Layer, r: "LayerRanges", consumer: Layer):
        """Thresholds that turn this layer's output into ``consumer``'s spike counts exactly, or why not.

        Returns a :class:`bitspike.rtl_templates.threshold.FusedThresholds`, or a string saying why
        the boundary cannot be fused (default: the op has no requantizer to fuse).
        """
        return f"a {self.name} layer has no requantizer to fuse with the next neuron"

    def counts_refused(self, layer: Layer) -> str | None:
        """Why this layer's engine cannot take spike counts instead of currents (``None``: it can)."""
        return f"a {self.name} engine takes currents, not spike counts"

    def fusion_saving(self, layer: Layer, r: "LayerRanges", node: "PlanNode", consumer: "PlanNode", fused,
                      dsp_blocks: int | None) -> int:
        """LUTs a fused boundary out of this layer into ``consumer`` saves (negative: it costs more)."""
        raise NotImplementedError(f"op {self.name!r} has no fused output")

    def with_fusion(self, node: "PlanNode", fused=None, fused_width: int = 0, counts_in: bool = False) -> "PlanNode":
        """The node with a fused output (thresholds, count width) and/or a count input."""
        raise NotImplementedError(f"op {self.name!r} takes no fused boundary")

    def busy_cycles(self, node: "PlanNode") -> int:
        """Clocks per inference the engine itself needs in steady state (its initiation interval)."""
        return node.in_elements

    def arrival_times(self, node: "PlanNode", layer: Layer, plan: "Plan", inputs: list[list[int]]) -> list[int]:
        """Clock at which each output beat leaves, given the clocks at which each input beat arrived."""
        raise NotImplementedError(f"op {self.name!r} has no timing model")

    def build_engine(self, plan: "Plan", node: "PlanNode", layer: Layer, debug: bool):
        """The Amaranth engine of the layer, or ``None`` for an op without hardware."""
        raise NotImplementedError(f"op {self.name!r} has no engine")

    # ---- export and audit (bitspike.host.convert, bitspike.host.agreement)

    def export_layer(self, node, ctx) -> Layer:
        """The manifest layer for an export graph node (:class:`bitspike.host.convert.ExportContext`)."""
        raise NotImplementedError(f"export has no rule for op {self.name!r}")

    def export_unit(self, node, producer: str, ctx) -> float | None:
        """The unit this reader needs its input ``producer`` in (``None``: no preference)."""
        raise NotImplementedError(f"export has no unit rule for op {self.name!r}")

    def export_transparent(self, node) -> int | None:
        """For an op that passes values on to the next neuron monotonically without rescaling them
        back (pools, flatten): the extra bits of current resolution it asks for; ``None`` otherwise."""
        return None

    def export_neuron_hi(self, node, ctx) -> int | None:
        """For an op with a neuron: the largest input current it tells apart (its clamp is then lossless)."""
        return None

    def audit_hooks(self, node, outputs: dict, counts: dict) -> list:
        """Forward hooks on the trained model that record what :meth:`audit_step` needs (default: the output)."""
        from bitspike.ops.hooks import output_hook

        return [] if node.module is None else [output_hook(node, outputs)]

    def audit_step(self, layer: Layer, state) -> None:
        """Propagate the agreement audit's integer intervals through the layer (:mod:`bitspike.host.agreement`)."""
        raise NotImplementedError(f"the agreement audit has no rule for op {self.name!r}")


#: op name → op
OPS: dict[str, Op] = {}


def register_op(op: Op) -> Op:
    """Register an op (and its layer class) under its name: one handler per op, no if-ladder."""
    if not op.name or op.name in OPS:
        raise ValueError(f"op name {op.name!r} is empty or registered twice")
    OPS[op.name] = op
    LAYER_KINDS[op.name] = op.layer_cls
    return op


def op_of(layer: Layer) -> Op:
    """The registered op of a manifest layer."""
    return OPS[layer.op]
