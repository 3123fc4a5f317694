"""The multi-bit spiking neuron (docs/SEMANTICS.md §4.1) as hardware.

One implementation, used by every engine and by its tests:
:func:`unrolled_neuron` runs all T timesteps of one element in one clock (a
chain of T shift-compare stages built from :func:`neuron_step`), so that a
layer takes one input element per clock whatever its T; :class:`NeuronStage`
is that chain with its result register, the first block of a synaptic
engine (``vec`` chains side by side on a vector stream, which carries
``vec`` elements per beat). :func:`neuron_reference` is its plain-integer model.

The threshold is θ = 2**k, so a step is an add, an arithmetic shift and a
clamp: s = clip((v + 2**(k-1)) >> k, 0, q) (k = 0: clip(v, 0, q)), then
v ← v − s·2**k + x. Register widths come from
:func:`bitspike.ranges.neuron_membrane_bounds`, never guessed.
"""

from __future__ import annotations

from amaranth import Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitspike.ranges import Range, neuron_membrane_bounds

__all__ = ["NeuronStage", "CountStage", "neuron_step", "neuron_reference", "unrolled_neuron", "membrane_range",
           "check_neuron_params", "shape_of", "vector_shape", "check_vec"]


def check_neuron_params(s_bits: int, timesteps: int, k: int) -> None:
    """Raise ``ValueError`` naming the argument when a neuron parameter is out of range."""
    for name, value, lo, hi in (("s_bits", s_bits, 1, 16), ("timesteps", timesteps, 1, 64), ("k", k, 0, 30)):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"neuron {name} must be an integer in {lo} … {hi}, not {value!r}")


def membrane_range(current: Range, k: int, s_bits: int, timesteps: int) -> Range:
    """Union of the analysed membrane ranges v_0 … v_T for currents in ``current``."""
    out = current
    for r in neuron_membrane_bounds(current, k, s_bits, timesteps):
        out = out.union(r)
    return out


def shape_of(r: Range) -> Shape:
    """The Amaranth shape that holds an analysed range."""
    return signed(r.width) if r.signed else unsigned(r.width)


def neuron_step(v, k: int, s_bits: int):
    """One timestep's spike and the membrane after the soft reset (before adding x).

    Returns ``(s, r)`` with ``s = clip(round(v / 2**k), 0, q)`` and ``r = v − s·2**k``
    as Amaranth values (natural widths; the caller truncates to analysed widths).
    """
    q = (1 << s_bits) - 1
    t = (v + (1 << (k - 1))) >> k if k > 0 else v
    s = Mux(t < 0, 0, Mux(t > q, q, t))[:s_bits]
    return s, v - (s << k)


def unrolled_neuron(m: Module, x, k: int, s_bits: int, timesteps: int, v_shape: Shape, name: str = "nrn"):
    """All T timesteps of the neuron for current ``x`` in combinational logic.

    Returns ``(spikes, count)``: the list of T spike signals (t = 0 first) and
    their sum Σ_t s_t (T·q bounded, unsigned).
    """
    spikes = []
    v = Signal(v_shape, name=f"{name}_v0")
    m.d.comb += v.eq(x)
    for t in range(timesteps):
        s, r = neuron_step(v, k, s_bits)
        st = Signal(unsigned(s_bits), name=f"{name}_s{t}")
        m.d.comb += st.eq(s)
        spikes.append(st)
        if t + 1 < timesteps:
            nv = Signal(v_shape, name=f"{name}_v{t + 1}")
            m.d.comb += nv.eq(r + x)
            v = nv
    count = Signal(range(timesteps * ((1 << s_bits) - 1) + 1), name=f"{name}_count")
    m.d.comb += count.eq(sum(spikes) if timesteps > 1 else spikes[0])
    return spikes, count


def check_vec(vec, who: str) -> None:
    """Refuse a vector width (elements per stream beat) that is not a positive integer."""
    if isinstance(vec, bool) or not isinstance(vec, int) or vec < 1:
        raise ValueError(f"{who} vec must be a positive integer (elements per beat), not {vec!r}")


def vector_shape(shape, vec: int):
    """A stream payload of ``vec`` elements of ``shape``: ``shape`` itself for 1, else an array (element 0 lowest)."""
    return shape if vec == 1 else data.ArrayLayout(shape, vec)


def neuron_reference(x: int, k: int, s_bits: int, timesteps: int) -> tuple[list[int], int]:
    """Plain-integer model of one element: its T spikes (t = 0 first) and their count Σ_t s_t."""
    q = (1 << s_bits) - 1
    v, spikes = x, []
    for _ in range(timesteps):
        s = max(0, min(q, (v + (1 << (k - 1))) >> k if k > 0 else v))
        spikes.append(s)
        v = v - (s << k) + x
    return spikes, sum(spikes)


class NeuronStage(wiring.Component):
    """The engines' neuron: a current in, its spike count out one clock later (a registered stream stage).

    All T timesteps of one element run in one clock (:func:`unrolled_neuron`), so an engine takes one
    input element per clock whatever its T. The stage holds one result: ``i`` is ready while the
    result register is empty or being taken.

    Parameters
    ----------
    current
        Analysed range of the input current (:class:`bitspike.ranges.Range`).
    s_bits, timesteps, k
        B_s, T and the threshold exponent (θ = 2**k).
    membrane
        Analysed membrane range (default: :func:`membrane_range` of ``current``).
    count_shape
        Shape of the count register (default: ``range(T·q + 1)``); an analysed count range may be
        narrower, and the count is then truncated to it (exact: the analysis proves it fits).
    vec
        Currents per beat (a vector stream): ``vec`` unrolled neurons side by side. 1: the payloads
        are single values; else arrays of ``vec`` (element 0 the first in stream order).

    Ports
    -----
    i : In(stream)
        The current (``vec`` of them).
    o : Out(stream)
        Σ_t s_t of the current(s) accepted the clock before.
    spikes : Out
        The T spikes of ``i.payload`` (t = 0 in the lowest bits), combinational, for the debug tap
        (with ``vec`` > 1: an array of ``vec`` such spike words).
    """

    def __init__(self, current: Range, s_bits: int, timesteps: int, k: int, *, membrane: Range | None = None,
                 count_shape=None, vec: int = 1):
        check_neuron_params(s_bits, timesteps, k)
        if not isinstance(current, Range):
            raise TypeError(f"NeuronStage current must be a Range, not {type(current).__name__}")
        check_vec(vec, "NeuronStage")
        self.s_bits, self.timesteps, self.k, self.vec = s_bits, timesteps, k, vec
        self.current_range = current
        self.membrane_range = membrane if membrane is not None else membrane_range(current, k, s_bits, timesteps)
        self.count_shape = Shape.cast(count_shape if count_shape is not None
                                      else range(timesteps * ((1 << s_bits) - 1) + 1))
        spikes = data.ArrayLayout(unsigned(s_bits), timesteps)
        super().__init__({
            "i": In(stream.Signature(vector_shape(shape_of(current), vec))),
            "o": Out(stream.Signature(vector_shape(self.count_shape, vec))),
            "spikes": Out(vector_shape(spikes, vec)),
        })

    def __repr__(self) -> str:
        fields = ("current_range", "s_bits", "timesteps", "k")
        args = ", ".join(f"{f.replace('current_range', 'current')}={getattr(self, f, '?')!r}" for f in fields)
        return f"NeuronStage({args})"

    def elaborate(self, platform):
        m = Module()
        if self.vec == 1:
            spikes, count = unrolled_neuron(m, self.i.payload, self.k, self.s_bits, self.timesteps,
                                            shape_of(self.membrane_range), name="nrn")
            m.d.comb += [self.spikes[t].eq(s) for t, s in enumerate(spikes)]
            counts = [(self.o.payload, count)]
        else:
            counts = []
            for j in range(self.vec):
                spikes, count = unrolled_neuron(m, self.i.payload[j], self.k, self.s_bits, self.timesteps,
                                                shape_of(self.membrane_range), name=f"nrn{j}")
                m.d.comb += [self.spikes[j][t].eq(s) for t, s in enumerate(spikes)]
                counts.append((self.o.payload[j], count))
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [dst.eq(c) for dst, c in counts]
            m.d.sync += self.o.valid.eq(1)
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


class CountStage(wiring.Component):
    """The neuron stage of an engine whose input already carries spike counts (a fused boundary).

    The producing engine's drain compares its accumulators with thresholds
    (:mod:`.threshold`) and sends the counts Σ_t s_t this engine's neuron would have made, so the
    neuron is left out: the stage only registers the count, with :class:`NeuronStage`'s handshake
    and latency (one clock), so the engine's timing does not change.

    Parameters
    ----------
    count_shape
        Shape of the count (the stream's payload and the register).
    vec
        Counts per beat (a vector stream; payloads are arrays of ``vec`` when it is above 1).
    """

    def __init__(self, count_shape, vec: int = 1):
        self.count_shape = Shape.cast(count_shape)
        check_vec(vec, "CountStage")
        self.vec = vec
        super().__init__({
            "i": In(stream.Signature(vector_shape(self.count_shape, vec))),
            "o": Out(stream.Signature(vector_shape(self.count_shape, vec))),
        })

    def __repr__(self) -> str:
        return f"CountStage({getattr(self, 'count_shape', '?')!r})"

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(1)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
