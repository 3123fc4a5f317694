"""The multi-bit spiking neuron (docs/SEMANTICS.md §4.1) as hardware.

Two forms share one step function, :func:`neuron_step`:

* :class:`NeuronArray` — ``lanes`` neurons that take a held current and emit
  one B_s-bit spike per lane per accepted beat for T beats (the sequential
  form; one timestep per clock, membrane observable every cycle).
* :func:`unrolled_neuron` — all T timesteps of one element in one clock
  (a chain of T shift-compare stages), used inside the synaptic engines so
  that a layer takes one input element per clock whatever its T.

The threshold is θ = 2**k, so a step is an add, an arithmetic shift and a
clamp: s = clip((v + 2**(k-1)) >> k, 0, q) (k = 0: clip(v, 0, q)), then
v ← v − s·2**k + x. Register widths come from
:func:`bitspike.analysis.neuron_membrane_bounds`, never guessed.
"""

from __future__ import annotations

from amaranth import Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bitspike.analysis import Range, neuron_membrane_bounds

__all__ = ["NeuronArray", "neuron_step", "unrolled_neuron", "membrane_range", "check_neuron_params"]


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


class NeuronArray(wiring.Component):
    """``lanes`` multi-bit neurons that spike for T steps from a held current.

    Parameters
    ----------
    lanes
        Number of neurons side by side (one current and one spike per lane per beat).
    current
        Analysed range of the input current (a :class:`bitspike.analysis.Range`),
        or an Amaranth shape (its full range is assumed).
    s_bits, timesteps, k
        B_s, T and the threshold exponent (θ = 2**k).

    Ports
    -----
    current : In(stream)
        ``lanes`` signed currents; accepted when the array is idle or finishing its last step.
    spikes : Out(stream)
        ``lanes`` spikes of step ``step``; one beat per timestep, T beats per current.
    membrane : Out
        Each lane's membrane v_t before the step being offered (for checks and debug).
    step : Out
        The timestep t of the beat being offered.
    """

    def __init__(self, lanes: int, current, s_bits: int, timesteps: int, k: int):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"NeuronArray lanes must be a positive integer, not {lanes!r}")
        check_neuron_params(s_bits, timesteps, k)
        if not isinstance(current, Range):
            shape = Shape.cast(current)
            lo = -(1 << (shape.width - 1)) if shape.signed else 0
            hi = (1 << (shape.width - 1)) - 1 if shape.signed else (1 << shape.width) - 1
            current = Range(lo, hi)
        self.lanes, self.s_bits, self.timesteps, self.k = lanes, s_bits, timesteps, k
        self.current_range = current
        self.membrane_range = membrane_range(current, k, s_bits, timesteps)
        self.current_shape = shape_of(current)
        self.membrane_shape = shape_of(self.membrane_range)
        super().__init__({
            "current": In(stream.Signature(data.ArrayLayout(self.current_shape, lanes))),
            "spikes": Out(stream.Signature(data.ArrayLayout(unsigned(s_bits), lanes))),
            "membrane": Out(data.ArrayLayout(self.membrane_shape, lanes)),
            "step": Out(range(max(2, timesteps))),
        })

    def __repr__(self) -> str:
        # getattr: amaranth may repr a half-built component (constructor raised) when warning about it
        fields = ("lanes", "current_range", "s_bits", "timesteps", "k")
        args = ", ".join(f"{f.replace('current_range', 'current')}={getattr(self, f, '?')!r}" for f in fields)
        return f"NeuronArray({args})"

    def elaborate(self, platform):
        m = Module()
        busy = Signal()
        last = Signal()
        x = Signal(data.ArrayLayout(self.current_shape, self.lanes))
        v = Signal(data.ArrayLayout(self.membrane_shape, self.lanes))
        m.d.comb += [
            last.eq(self.step == self.timesteps - 1),
            self.membrane.eq(v),
            self.spikes.valid.eq(busy),
            self.current.ready.eq(~busy | (self.spikes.ready & last)),
        ]
        residues = []
        for lane in range(self.lanes):
            s, r = neuron_step(v[lane], self.k, self.s_bits)
            m.d.comb += self.spikes.payload[lane].eq(s)
            residues.append(r)
        with m.If(self.spikes.valid & self.spikes.ready):
            m.d.sync += self.step.eq(self.step + 1)
            for lane in range(self.lanes):
                m.d.sync += v[lane].eq(residues[lane] + x[lane])
            with m.If(last):
                m.d.sync += [busy.eq(0), self.step.eq(0)]
        with m.If(self.current.valid & self.current.ready):
            m.d.sync += [busy.eq(1), self.step.eq(0), x.eq(self.current.payload)]
            for lane in range(self.lanes):
                m.d.sync += v[lane].eq(self.current.payload[lane])
        return m
