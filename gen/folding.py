"""The width, folding and LUT passes: register widths, how many PEs and lanes each engine gets, and LUTs.

``fold="auto"`` balances the layer pipeline. With only a LUT budget it starts
from one PE and one lane everywhere and repeatedly widens the slowest foldable
engine (to the next of the PE and lane counts its op offers,
:meth:`bitspike.ops.base.Op.fold_choices`; the synaptic ops offer divisors of
the outputs and of the inputs an output reads, so that weight memories stay
unpadded) while the LUT estimate stays within the budget, until the slowest
engine is no slower than what the streams allow. For a device (``gen --board``,
``--device``, ``bitspike build``) it fills the part instead: the smallest
interval whose per-engine cheapest folds fit the part's LUTs, flip-flops, DSP
blocks and block RAMs (:func:`estimate_resources`), or with a target interval
the fewest LUTs that reach it (:func:`folding_pass`).

Vector streams: a stream from one synaptic engine to the one synaptic engine
that reads it, directly or through pools, may carry several elements per beat
(:func:`vector_edges`; ``vec_out`` of the producer, ``vec_in`` of the
consumer; a pool passes the beats through, one width on both its sides:
:func:`vector_chains`), so no engine is held to one element per clock there. The device filler gives such an edge
the smallest width that brings its beats down to the floor the other streams
set (:func:`auto_vectors`) and keeps it only when the plan's interval gets
shorter; a manual fold names it as a third number (``fc1=16x8x2``: fc1's
output carries 2 per beat). The LUT model is a coarse
per-engine estimate, each op's own (:meth:`bitspike.ops.base.Op.estimate_luts`;
calibrated on Yosys ``synth_xilinx``; products wider than ~30 bits of LUT
logic are assumed to go to DSP blocks); the DSP and weight-memory block-RAM
counts are exact.
"""

from __future__ import annotations

from dataclasses import replace
from math import gcd

from bitspike.ops.base import OPS, divisors
from bitspike.rtl_templates.synapse import DP16KD_SHAPES

from .ir import Plan, PlanNode, register_pass, stream_source

__all__ = ["estimate_luts", "estimate_brams", "estimate_resources", "skew_fifo_brams", "bram_blocks", "memory_blocks",
           "BRAM_SHAPES",
           "DEFAULT_MAX_LUTS", "widths_pass", "folding_pass", "luts_pass", "vector_edges", "vector_chains", "auto_vectors"]

#: LUT budget of ``fold="auto"`` when none is given
DEFAULT_MAX_LUTS = 3000


def estimate_luts(node: PlanNode) -> int:
    """Coarse LUT estimate of one engine (its op's model)."""
    return OPS[node.op].estimate_luts(node)


@register_pass("widths")
def widths_pass(plan: Plan) -> Plan:
    """Set every node's register widths (from the analysed ranges)."""
    by_name = {l.name: l for l in plan.manifest.layers}
    nodes = tuple(replace(n, widths=OPS[n.op].widths(n, by_name[n.name], plan.ranges[n.name])) for n in plan.layers)
    return replace(plan, layers=nodes)


def _with_fold(node: PlanNode, layer, plan: Plan, pes: int, lanes: int, taps: int = 1) -> PlanNode:
    op = OPS[node.op]
    # taps only where asked for or where the node has them (the other ops' folds take pes and lanes)
    extra = {"taps": taps} if taps != 1 or getattr(node, "taps", 1) != 1 else {}
    node = op.fold(node, layer, plan.ranges[node.name], pes, lanes, **extra)
    return replace(node, cycles=op.busy_cycles(node))


#: block-RAM shapes ``(depth, width)`` a memory can be cut into, per family (ECP5 DP16KD and Gowin BSRAM:
#: 18 Kb, up to 36 bits wide as a one-read-port memory; iCE40 SB_RAM40_4K: 4 Kb, up to 16 bits)
BRAM_SHAPES = {
    "ecp5": DP16KD_SHAPES,
    "gowin": DP16KD_SHAPES,
    "ice40": ((2048, 2), (1024, 4), (512, 8), (256, 16)),
}
#: Yosys ``memory_libmap``'s costs (its techlibs' ``cost`` lines): one block RAM, one 16 × 4 LUT RAM
#: (ECP5 ``TRELLIS_DPR16X4``; Gowin's 16 × 4 shadow RAM alike); ``None``: the family has no LUT RAM
BRAM_COST = {"ecp5": 128, "gowin": 128, "ice40": 64}
LUTRAM_COST = {"ecp5": 4, "gowin": 4, "ice40": None}
#: what a RAM bit costs built from flip-flops and LUTs (Yosys' default ``-logic-cost-ram``)
LOGIC_COST_PER_RAM_BIT = 1.0


def bram_blocks(depth: int, width: int, family: str) -> int:
    """Block RAMs of ``family`` a ``depth × width`` memory takes: the fewest over the shapes it can be cut into.

    Families without a table use the 18 Kb shapes.
    """
    shapes = BRAM_SHAPES.get(family, BRAM_SHAPES["ecp5"])
    return min(-(-depth // d) * -(-width // w) for d, w in shapes)


def memory_blocks(depth: int, width: int, kind: str, family: str) -> int:
    """Block RAMs that Yosys gives one memory of ``kind`` (:meth:`bitspike.ops.base.Op.memories`).

    ``block``: marked ``ram_style = "block"``, always block RAM. ``ram``: a RAM with a registered read,
    which goes where ``memory_libmap`` finds it cheapest: block RAM, LUT RAM (16 × 4 cells) or logic
    (e.g. a 16 × 64 frame buffer: 16 LUT RAM cells, cost 64, against one DP16KD, cost 128, on ECP5; a
    16 × 16 one on iCE40: one block, cost 64, against 256 bits of logic). ``async``: read without a
    clock, never block RAM.
    """
    if kind == "block":
        return bram_blocks(depth, width, family)
    if kind != "ram":
        return 0
    blocks = bram_blocks(depth, width, family)
    lutram = LUTRAM_COST.get(family, 4)
    alternatives = [LOGIC_COST_PER_RAM_BIT * depth * width]
    if lutram is not None:
        alternatives.append(lutram * -(-depth // 16) * -(-width // 4))
    return blocks if BRAM_COST.get(family, 128) * blocks < min(alternatives) else 0


def estimate_brams(node: PlanNode, family: str) -> int:
    """Block RAMs of one engine on ``family``: :func:`memory_blocks` of each of its memories
    (:meth:`bitspike.ops.base.Op.memories`)."""
    return sum(memory_blocks(d, w, kind, family) for d, w, kind in OPS[node.op].memories(node))


def estimate_resources(plan: Plan, family: str, layers: tuple[PlanNode, ...] | None = None,
                       dsp_blocks: int | None = None) -> dict:
    """The planner's resource estimate of the accelerator (``layers``: the plan's unless given).

    Returns ``{"lut", "ff", "dsp", "bram"}`` totals and ``"layers"`` (name → the same per engine).
    ``lut`` is in the LUT model's units (:func:`estimate_luts`) and includes the products that a
    ``dsp_blocks`` limit moves into logic (:func:`bitspike.gen.dsp.logic_product_luts`); ``dsp``
    and ``bram`` count what the generated engines instantiate, and ``bram`` also the top's skew
    FIFOs (:func:`skew_fifo_brams`; also as ``"skew_fifo_bram"``) when ``layers`` is not given and
    the plan has been through the cycle model (its ``initiation_interval`` set).
    """
    from .dsp import allocate_dsps, logic_product_luts

    whole = layers is None
    layers = plan.layers if layers is None else layers
    if dsp_blocks is None:
        dsp_blocks = plan.options.dsp_blocks
    if dsp_blocks is not None and any(getattr(n, "dsp_blocks", None) is None for n in layers if OPS[n.op].foldable):
        layers = allocate_dsps(plan.manifest, plan.ranges, layers, dsp_blocks)
    by_name = {l.name: l for l in plan.manifest.layers}
    per = {}
    for n in layers:
        op = OPS[n.op]
        per[n.name] = {"lut": op.estimate_luts(n), "ff": op.estimate_ffs(n) if n.engine else 0,
                       "dsp": op.estimate_dsps(n, by_name[n.name], plan.ranges[n.name]) if n.engine else 0,
                       "bram": estimate_brams(n, family) if n.engine else 0}
    total = {k: sum(v[k] for v in per.values()) for k in ("lut", "ff", "dsp", "bram")}
    total["lut"] += logic_product_luts(plan.manifest, plan.ranges, layers, dsp_blocks)
    if whole and plan.initiation_interval:
        total["skew_fifo_bram"] = skew_fifo_brams(plan, family)
        total["bram"] += total["skew_fifo_bram"]
    return dict(total, layers=per)


def skew_fifo_brams(plan: Plan, family: str, layers: list[PlanNode] | None = None) -> int:
    """Block RAMs of the top's skew FIFOs (:func:`bitspike.gen.timing.skew_fifos`; each a RAM with a registered
    read, :func:`memory_blocks` ``"ram"``) for ``layers`` (the plan's unless given: then replayed by the
    cycle model first)."""
    from .timing import predict, skew_fifos

    timed = plan if layers is None else predict(replace(plan, layers=tuple(layers)))
    return sum(memory_blocks(d, w, "ram", family) for _, _, d, w in skew_fifos(timed))


def _fits(total: dict, device, max_luts: int | None) -> str | None:
    """The first resource ``total`` exceeds (``lut``, ``ff``, ``bram``), or ``None``."""
    limits = {"lut": device.lut if max_luts is None else max_luts, "ff": device.ff, "bram": device.bram}
    return next((k for k, v in limits.items() if total[k] > v), None)


@register_pass("folding")
def folding_pass(plan: Plan) -> Plan:
    """Set ``pes``, ``lanes``, memory bits and busy cycles of every node (the user's folds, or auto).

    ``fold="auto"`` without a device or a target (:func:`_balance`): widen the slowest foldable
    engine step by step, each step to the candidate with the least cycles × LUTs, while the LUT
    estimate stays within ``max_luts`` (:data:`DEFAULT_MAX_LUTS`), until the slowest is no slower
    than the streams allow (the input pixels, and each engine's own input and output elements).

    With a device (``options.device``, a :class:`~bitspike.gen.boards.DeviceBudget`) or a target
    interval (``options.target_interval``, ``--target-fps``), :func:`_fill`: for an interval ``T``
    every engine takes its cheapest fold (fewest estimated LUTs, then block RAMs) whose busy cycles
    are at most ``T``; the plan is that of the smallest ``T`` whose whole estimate (LUTs with the
    products the part's DSP count moves into logic, flip-flops, block RAMs) fits the device, down
    to the floor the streams set; with a target, ``T`` is the target: the fewest LUTs that reach it.
    The top's skew FIFOs, whose depths follow the whole plan's timing
    (:func:`bitspike.gen.timing.skew_fifo_depth`), are checked on the chosen plan, which moves to the
    next interval while they do not fit. With a device, every dense synaptic engine may build a
    shallow, wide weight memory as a LUT ROM (``weight_rom``:
    :func:`bitspike.rtl_templates.synapse.weight_memory_style`; its LUTs are in the estimate).

    Raises
    ------
    HardwareError
        A target interval that the streams' floor or the budget does not allow.
    """
    manifest = plan.manifest
    folds = plan.options.folds
    by_name = {l.name: l for l in manifest.layers}
    if plan.options.device is not None:  # a budget of LUTs and block RAMs: shallow, wide weights may be LUT ROMs
        plan = replace(plan, layers=tuple(_with_weight_rom(n) for n in plan.layers))
    if folds is not None:
        for n in plan.layers:
            if len(folds.get(n.name, ())) > 3 and not hasattr(OPS[n.op], "multitap_refused"):
                from bitspike.errors import HardwareError

                raise HardwareError(f"fold for '{n.name}': a {n.op} layer reads no kernel taps (tTAPS, taps per "
                                    "clock, is for conv2d layers)")
        nodes = _with_vectors(list(plan.layers), _manual_vectors(plan, folds))
        out = [_with_fold(n, by_name[n.name], plan, *folds.get(n.name, (1, 1))[:2], *folds.get(n.name, ())[3:4])
               for n in nodes]
        for n in out:
            if (n.vec_in, n.vec_out) != (1, 1) and not OPS[n.op].vector_fits(n):
                from bitspike.errors import HardwareError

                raise HardwareError(f"fold for '{n.name}': {n.pes}x{n.lanes} does not take its vector streams "
                                    f"({n.vec_in} in, {n.vec_out} out per beat): the pes must be a multiple of the "
                                    "output's and the lanes of the input's elements per beat")
        return replace(plan, layers=tuple(out))
    out = [_with_fold(n, by_name[n.name], plan, 1, 1) for n in plan.layers]
    if plan.options.device is None and plan.options.target_interval is None:
        return replace(plan, layers=tuple(_balance(plan, out)))
    return replace(plan, layers=tuple(_fill_vectors(plan, out)))


def _with_weight_rom(node: PlanNode) -> PlanNode:
    """A dense synaptic node whose shallow, wide weight memory may be a LUT ROM
    (:func:`bitspike.rtl_templates.synapse.weight_memory_style`); other nodes as they are."""
    from bitspike.ops.neuron import SteppedNode

    if not hasattr(node, "weight_rom") or isinstance(node, SteppedNode):
        return node
    return replace(node, weight_rom=True)


def vector_edges(plan: Plan, nodes: list[PlanNode] | None = None) -> list[tuple[int, int]]:
    """The streams that may carry vectors, as ``(producer, consumer)`` node indices, in network order.

    A producer engine's stream qualifies when exactly one engine reads it (no fork, not the output
    stage) and both ends take vectors on that side (:meth:`bitspike.ops.base.Op.vector_unit` above 1:
    the synaptic engines and the pools; an op without hardware in between, a flatten, only re-indexes
    the stream). A pool passes beats through (:attr:`~bitspike.ops.base.Op.vector_through`), so its
    streams qualify only together: both, or neither.
    """
    nodes = list(plan.layers) if nodes is None else nodes
    man = plan.manifest
    index = {n.name: i for i, n in enumerate(nodes)}
    readers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        if n.engine:
            for src in man.layers[i].inputs:
                readers.setdefault(stream_source(man, src), []).append(i)
    edges = []
    for src, users in readers.items():
        if src == "input" or len(users) != 1 or src not in index:
            continue
        p, c = index[src], users[0]
        if OPS[nodes[p].op].vector_unit(nodes[p], "out") > 1 and OPS[nodes[c].op].vector_unit(nodes[c], "in") > 1:
            edges.append((p, c))
    while True:  # drop a pass-through engine's stream whose partner does not qualify (and so on down the chain)
        outs, ins = {p for p, _ in edges}, {c for _, c in edges}
        kept = [(p, c) for p, c in edges
                if not (OPS[nodes[p].op].vector_through and p not in ins)
                and not (OPS[nodes[c].op].vector_through and c not in outs)]
        if kept == edges:
            return sorted(edges)
        edges = kept


def vector_chains(plan: Plan, nodes: list[PlanNode] | None = None) -> list[list[tuple[int, int]]]:
    """The vector edges (:func:`vector_edges`) grouped into the streams that must share one width: an edge
    into a pass-through engine (a pool) and the edge out of it carry the same elements per beat."""
    nodes = list(plan.layers) if nodes is None else nodes
    edges = vector_edges(plan, nodes)
    out_edge = {p: (p, c) for p, c in edges}
    chains = []
    for p, c in edges:
        if OPS[nodes[p].op].vector_through:
            continue  # not a chain's start: the edge into p leads here
        chain = [(p, c)]
        while OPS[nodes[chain[-1][1]].op].vector_through:
            chain.append(out_edge[chain[-1][1]])
        chains.append(chain)
    return chains


def _vector_unit(nodes: list[PlanNode], p: int, c: int) -> int:
    """What every element count per beat of the edge ``p → c`` divides."""
    return gcd(OPS[nodes[p].op].vector_unit(nodes[p], "out"), OPS[nodes[c].op].vector_unit(nodes[c], "in"))


def _chain_unit(nodes: list[PlanNode], chain: list[tuple[int, int]]) -> int:
    """What every element count per beat of a chain of edges divides (each edge's :func:`_vector_unit`)."""
    unit = 0
    for p, c in chain:
        unit = gcd(unit, _vector_unit(nodes, p, c))
    return unit


def _with_vectors(nodes: list[PlanNode], vecs: dict[int, tuple[int, int]]) -> list[PlanNode]:
    """``nodes`` with ``vecs`` (producer index → (consumer index, elements per beat)) set on both ends."""
    out = list(nodes)
    for p, (c, v) in vecs.items():
        out[p] = replace(out[p], vec_out=v)
        out[c] = replace(out[c], vec_in=v)
    return out


def _manual_vectors(plan: Plan, folds) -> dict[int, tuple[int, int]]:
    """The vector widths a manual fold names (``NAME=PESxLANESxVEC``), checked against the stream graph.

    A width named on an engine whose stream runs through pools (``conv0=16x1x16`` before a maxpool)
    applies to the pools' streams too; naming a pool's own (``pool1=1x1x16``) is allowed and must agree.
    """
    from bitspike.errors import HardwareError

    nodes = list(plan.layers)
    edges = dict(vector_edges(plan))
    chains = vector_chains(plan)
    chain_of = {p: k for k, chain in enumerate(chains) for p, _ in chain}
    index = {n.name: i for i, n in enumerate(nodes)}
    named: dict[int, tuple[str, int]] = {}
    for name, spec in folds.items():
        if len(spec) < 3 or spec[2] == 1:
            continue
        p, v = index[name], int(spec[2])
        if p not in edges:
            raise HardwareError(f"fold for '{name}': its output stream cannot carry {v} elements per beat (vector "
                                "streams join a synaptic engine, through pools, to the one synaptic engine that "
                                "reads it)")
        k = chain_of[p]
        chain = chains[k]
        unit = _chain_unit(nodes, chain)
        if unit % v:
            if len(chain) == 1:
                why = f"the outputs of '{name}' and the inputs per group of '{nodes[edges[p]].name}'"
            else:
                why = "what every engine of the stream " + " → ".join(
                    [f"'{nodes[chain[0][0]].name}'"] + [f"'{nodes[c].name}'" for _, c in chain]) + " takes"
            raise HardwareError(f"fold for '{name}': {v} elements per beat must divide {unit} ({why}); "
                                f"choose one of {divisors(unit)}")
        if k in named and named[k][1] != v:
            other, w = named[k]
            raise HardwareError(f"fold for '{name}': {v} elements per beat, but '{other}' gives the same stream "
                                f"{w} (a pool passes its input's beats through); name one width")
        named[k] = (name, v)
    return {p: (c, v) for k, (_, v) in named.items() for p, c in chains[k]}


def _with_beats(node: PlanNode, v: int) -> PlanNode:
    """A pass-through node with ``v`` elements per beat on both sides, its busy cycles counted again."""
    node = replace(node, vec_in=v, vec_out=v)
    return replace(node, cycles=OPS[node.op].busy_cycles(node))


def auto_vectors(plan: Plan, nodes: list[PlanNode], floor: int | None = None) -> dict[int, tuple[int, int]]:
    """The device filler's vector widths: producer index → (consumer index, elements per beat).

    The floor the scalar streams set (the pixels, the non-foldable engines off the vector streams,
    every stream that cannot carry vectors, the class beats) is the target, unless ``floor`` is
    given; each chain of vector edges (:func:`vector_chains`) whose elements, or whose pools' busy
    cycles, exceed it gets the smallest width (a divisor of what every engine on it takes) that
    brings them all down to it, or the widest it can take.
    """
    chains = vector_chains(plan, nodes)
    on_edge_out = {p for chain in chains for p, _ in chain}
    on_edge_in = {c for chain in chains for _, c in chain}
    if floor is None:
        floor = max([plan.manifest.input.size, plan.manifest.num_classes + 1]
                    + [n.cycles for i, n in enumerate(nodes) if not OPS[n.op].foldable and i not in on_edge_in]
                    + [n.out_elements for i, n in enumerate(nodes) if n.engine and i not in on_edge_out
                       and i != len(nodes) - 1]
                    + [n.in_elements for i, n in enumerate(nodes) if n.engine and i not in on_edge_in])
    vecs = {}
    for chain in chains:
        through = [c for _, c in chain if OPS[nodes[c].op].vector_through]

        def reaches(v: int) -> bool:
            return (all(-(-nodes[p].out_elements // v) <= floor for p, _ in chain)
                    and all(_with_beats(nodes[c], v).cycles <= floor for c in through))

        if reaches(1):
            continue
        widths = divisors(_chain_unit(nodes, chain))
        v = next((d for d in widths if reaches(d)), widths[-1])
        if v > 1:
            vecs.update({p: (c, v) for p, c in chain})
    return vecs


def _fill_vectors(plan: Plan, out: list[PlanNode]) -> list[PlanNode]:
    """:func:`_fill` with the vector widths of :func:`auto_vectors`, where they shorten the interval
    (with a target interval: only where scalar streams cannot reach it)."""
    from bitspike.errors import HardwareError

    vecs = auto_vectors(plan, out)
    if not vecs:
        return _fill(plan, out)
    by_name = {l.name: l for l in plan.manifest.layers}

    def vectored(vecs: dict[int, tuple[int, int]]) -> list[PlanNode]:
        # a foldable end starts from the narrowest fold that holds its beats; a pool keeps its 1 × 1
        return [n if (n.vec_in, n.vec_out) == (1, 1)
                else _with_fold(n, by_name[n.name], plan, *((n.vec_out, n.vec_in) if OPS[n.op].foldable else (1, 1)))
                for n in _with_vectors(out, vecs)]

    def interval(layers: list[PlanNode]) -> int:
        return max([n.cycles for n in layers] + [plan.manifest.input.size])

    def valid(layers: list[PlanNode]) -> bool:
        return all(OPS[n.op].vector_fits(n) for n in layers if (n.vec_in, n.vec_out) != (1, 1))

    vout = vectored(vecs)
    if plan.options.target_interval is not None:
        try:
            return _fill(plan, out)
        except HardwareError:
            got = _fill(plan, vout)
            if not valid(got):
                raise
            return got
    def usable(layers: list[PlanNode]) -> bool:  # _fill hands back its input when nothing fits the device
        return valid(layers) and _plan_fits(plan, layers)

    scalar = _fill(plan, out)
    vector = _fill(plan, vout)
    if not (usable(vector) and interval(vector) < interval(scalar)):
        return scalar
    # the engines may settle above the floor the widths aimed at (a conv's taps, the budget): narrower
    # vectors that reach the interval they settled at free their PEs and lanes for the rest
    settled = auto_vectors(plan, out, floor=interval(vector))
    if settled and settled != vecs:
        narrower = _fill(plan, vectored(settled))
        if usable(narrower) and interval(narrower) <= interval(vector):
            return narrower
    return vector


def _tap_choices(plan: Plan, node: PlanNode) -> list[int]:
    """The kernel taps per clock the auto folder may give ``node`` (only 1 unless ``multi_tap`` is on)."""
    return OPS[node.op].tap_choices(node) if getattr(plan.options, "multi_tap", False) else [1]


def _floor_of(plan: Plan, node: PlanNode) -> int:
    # no engine needs to be faster than the pixel stream, nor than its own stream beats
    return max(plan.manifest.input.size, node.in_beats, node.out_beats)


def _balance(plan: Plan, out: list[PlanNode]) -> list[PlanNode]:
    """The LUT-budget folder (no device): widen the slowest engine while the LUT estimate allows."""
    by_name = {l.name: l for l in plan.manifest.layers}
    budget = DEFAULT_MAX_LUTS if plan.options.max_luts is None else plan.options.max_luts
    while True:
        foldable = [i for i, n in enumerate(out) if OPS[n.op].foldable]
        if not foldable:
            break
        slowest = max(foldable, key=lambda i: (out[i].cycles, -i))
        node = out[slowest]
        if node.cycles <= _floor_of(plan, node):
            break
        total = sum(estimate_luts(n) for n in out)
        layer = by_name[node.name]
        candidates = []
        pes_choices, lanes_choices = OPS[node.op].fold_choices(node)  # legal folds only: none is refused
        tap_choices = _tap_choices(plan, node)
        taps_now = getattr(node, "taps", 1)
        for pes in [d for d in pes_choices if d > node.pes][:1] + [node.pes]:
            for lanes in [d for d in lanes_choices if d > node.lanes][:1] + [node.lanes]:
                for taps in [t for t in tap_choices if t > taps_now][:1] + [taps_now]:
                    if (pes, lanes, taps) == (node.pes, node.lanes, taps_now):
                        continue
                    cand = _with_fold(node, layer, plan, pes, lanes, taps)
                    cost = total - estimate_luts(node) + estimate_luts(cand)
                    if cand.cycles < node.cycles and cost <= budget:
                        candidates.append((cand.cycles * estimate_luts(cand), cand.cycles, cand.pes, cand.lanes,
                                           taps, cand))
        if not candidates:
            break
        out[slowest] = min(candidates, key=lambda c: c[:5])[5]
    return out


def _fill(plan: Plan, out: list[PlanNode]) -> list[PlanNode]:
    """The device filler and the target-interval folder (see :func:`folding_pass`)."""
    from bitspike.errors import HardwareError

    device, target = plan.options.device, plan.options.target_interval
    by_name = {l.name: l for l in plan.manifest.layers}
    family = device.family if device is not None else "ecp5"
    budget = DEFAULT_MAX_LUTS if plan.options.max_luts is None else plan.options.max_luts
    # every legal fold of every foldable engine, cheapest first: (luts, brams, pes·lanes, pes) → node
    options: dict[int, list[PlanNode]] = {}
    for i, node in enumerate(out):
        if not OPS[node.op].foldable:
            continue
        pes_choices, lanes_choices = OPS[node.op].fold_choices(node)
        # a vector stream's end takes only folds that hold whole beats
        folds = [_with_fold(node, by_name[node.name], plan, p, l, t) for p in pes_choices if p % node.vec_out == 0
                 for l in lanes_choices if l % node.vec_in == 0 for t in _tap_choices(plan, node)]
        options[i] = sorted(folds, key=lambda n: (estimate_luts(n), estimate_brams(n, family), n.pes * n.lanes,
                                                  n.pes, getattr(n, "taps", 1)))
    fixed = max([n.cycles for i, n in enumerate(out) if i not in options] + [plan.manifest.input.size])
    floor = max([fixed] + [_floor_of(plan, out[i]) for i in options])

    def at(interval: int) -> list[PlanNode] | None:
        layers = list(out)
        for i, folds in options.items():
            best = next((n for n in folds if n.cycles <= interval), None)
            if best is None:
                return None
            layers[i] = best
        return layers

    def fits(layers: list[PlanNode]) -> bool:
        return _plan_fits(plan, layers)

    def interval_of(layers: list[PlanNode]) -> int:
        return max([n.cycles for n in layers] + [plan.manifest.input.size])

    if target is not None:
        if target < floor:
            raise HardwareError(f"--target-fps needs an interval of at most {target} cycles, but the streams set a "
                                f"floor of {floor} cycles (one beat per clock: the input's "
                                f"{plan.manifest.input.size} pixels and each engine's input and output beats); "
                                "lower --target-fps or raise --clock")
        layers = at(target)
        if layers is None or not fits(layers):
            limit = (f"{device.part}'s budget ({_budget_text(device)})" if device is not None
                     else f"a LUT budget of {budget}")
            best = _fill(replace(plan, options=replace(plan.options, target_interval=None)), out) \
                if device is not None else None
            reach = f"; the best fold within it reaches {interval_of(best)} cycles" if best else ""
            raise HardwareError(f"--target-fps needs an interval of at most {target} cycles, which does not fit "
                                f"within {limit}{reach}; lower --target-fps, raise --clock, or pick a larger device")
        return layers
    # the intervals the engines can take, from the floor up; the estimate shrinks as the interval grows,
    # so the smallest that fits is found by bisection
    steps = sorted({n.cycles for folds in options.values() for n in folds if n.cycles >= floor} | {floor})
    lo, hi = 0, len(steps) - 1
    slowest_alone = at(steps[-1])
    if slowest_alone is None or not fits(slowest_alone):
        return out  # not even the narrowest folds fit: 1 × 1 everywhere (the build's fit check says what overflows)
    while lo < hi:
        mid = (lo + hi) // 2
        layers = at(steps[mid])
        if layers is not None and fits(layers):
            hi = mid
        else:
            lo = mid + 1
    # the top's skew FIFOs (their depths follow the whole plan's timing) must fit beside the engines
    for step in steps[lo:]:
        layers = at(step)
        if layers is not None and _plan_fits(plan, layers, skew_fifos=True):
            return layers
    return at(steps[lo])


def _plan_fits(plan: Plan, layers: list[PlanNode], skew_fifos: bool = False) -> bool:
    """Whether ``layers`` fit the device (its LUTs with the products its DSP count moves into logic,
    flip-flops, block RAMs; with ``skew_fifos`` the block RAMs of the top's skew FIFOs too), or
    without a device the LUT budget."""
    device = plan.options.device
    if device is None:
        budget = DEFAULT_MAX_LUTS if plan.options.max_luts is None else plan.options.max_luts
        return sum(estimate_luts(n) for n in layers) <= budget
    total = estimate_resources(plan, device.family, tuple(layers), device.dsp)
    if skew_fifos and any(OPS[n.op].joins_branches for n in layers):
        total["bram"] += skew_fifo_brams(plan, device.family, layers)
    return _fits(total, device, plan.options.max_luts) is None


def _budget_text(device) -> str:
    return f"{device.lut} estimated LUTs, {device.ff} FFs, {device.dsp} DSPs, {device.bram} BRAMs"


@register_pass("luts")
def luts_pass(plan: Plan) -> Plan:
    """Set every node's LUT estimate and the plan's total."""
    nodes = tuple(replace(n, luts=estimate_luts(n)) for n in plan.layers)
    return replace(plan, layers=nodes, estimated_luts=sum(n.luts for n in nodes))
