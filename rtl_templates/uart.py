"""8N1 UART receiver and transmitter with a parameterized bit period.

The bit period (``clocks_per_bit``) is a number of clock cycles: an integer
where ``round(clock / baud)`` is within 2 % of the rate (the simulated board
uses a small one, 8–16, so that simulation stays fast), otherwise the exact
ratio ``clock / baud`` as a :class:`fractions.Fraction` of at least
:data:`MIN_FRACTIONAL_CLOCKS_PER_BIT` clocks. A fractional period is kept by a
phase accumulator: each bit lasts ⌊N/D⌋ or ⌈N/D⌉ clocks so that the edges
never drift from the ideal ones by a clock or more, and the average rate is
the baud rate exactly (the ULX3S's 25 MHz makes 3 Mbaud in 25/3 clocks per
bit, where 8 clocks would be 4.2 % fast). Bytes go in and out as
``amaranth.lib.stream`` streams of 8 bits.
"""

from fractions import Fraction
from math import ceil

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

MIN_CLOCKS_PER_BIT = 4
#: the shortest fractional bit period: its edges jitter by up to one clock, at most 1/6 of a bit here, which
#: with the receiver's own clock of uncertainty keeps every sample within a third of a bit of the middle
MIN_FRACTIONAL_CLOCKS_PER_BIT = 6
#: the largest numerator a fractional period may have (the accumulator is a counter of this range)
MAX_PERIOD_NUMERATOR = 1 << 20

BitPeriod = int | Fraction


def check_clocks_per_bit(clocks_per_bit: BitPeriod) -> BitPeriod:
    """Validate a bit period: an integer ≥ :data:`MIN_CLOCKS_PER_BIT` (the receiver samples mid-bit), or a
    :class:`~fractions.Fraction` ≥ :data:`MIN_FRACTIONAL_CLOCKS_PER_BIT` (one whose denominator is 1 comes
    back as the integer)."""
    if isinstance(clocks_per_bit, Fraction):
        if clocks_per_bit.denominator == 1:
            return check_clocks_per_bit(int(clocks_per_bit))
        if clocks_per_bit < MIN_FRACTIONAL_CLOCKS_PER_BIT or clocks_per_bit.numerator > MAX_PERIOD_NUMERATOR:
            raise ValueError(f"a fractional clocks_per_bit must be ≥ {MIN_FRACTIONAL_CLOCKS_PER_BIT} with a numerator "
                             f"≤ {MAX_PERIOD_NUMERATOR}, not {clocks_per_bit}")
        return clocks_per_bit
    if isinstance(clocks_per_bit, bool) or not isinstance(clocks_per_bit, int) or clocks_per_bit < MIN_CLOCKS_PER_BIT:
        raise ValueError(f"clocks_per_bit must be an integer ≥ {MIN_CLOCKS_PER_BIT} or a Fraction ≥ "
                         f"{MIN_FRACTIONAL_CLOCKS_PER_BIT}, not {clocks_per_bit!r}")
    return clocks_per_bit


def clocks_per_bit_for(clock_hz: int, baud: int) -> BitPeriod:
    """The bit period for a clock and a baud rate.

    The integer ``round(clock / baud)`` where it is within 2 % of the rate (8N1 tolerates ~4 % in all);
    otherwise the exact ratio as a fraction, where it is at least :data:`MIN_FRACTIONAL_CLOCKS_PER_BIT`
    clocks; otherwise refused.
    """
    if baud <= 0 or clock_hz <= 0:
        raise ValueError(f"clock and baud must be positive, got clock {clock_hz} Hz, baud {baud}")
    cpb = round(clock_hz / baud)
    if cpb < MIN_CLOCKS_PER_BIT:
        raise ValueError(f"baud {baud} is too fast for a {clock_hz} Hz clock (needs ≥ {MIN_CLOCKS_PER_BIT} clocks per bit)")
    error = abs(clock_hz / cpb - baud) / baud
    if error <= 0.02:
        return cpb
    exact = Fraction(clock_hz, baud)
    if exact >= MIN_FRACTIONAL_CLOCKS_PER_BIT and exact.numerator <= MAX_PERIOD_NUMERATOR:
        return exact
    raise ValueError(f"baud {baud} is {error:.1%} off at {clock_hz} Hz with {cpb} clocks per bit (at most 2 % works "
                     f"reliably), and {exact} clocks is too short a fractional period (at least "
                     f"{MIN_FRACTIONAL_CLOCKS_PER_BIT} clocks)")


def format_bit_period(clocks_per_bit: BitPeriod) -> int | str:
    """A bit period for a JSON report: the integer, or ``"N/D"`` for a fractional one."""
    if isinstance(clocks_per_bit, Fraction) and clocks_per_bit.denominator != 1:
        return f"{clocks_per_bit.numerator}/{clocks_per_bit.denominator}"
    return int(clocks_per_bit)


def parse_bit_period(value) -> BitPeriod:
    """The inverse of :func:`format_bit_period` (an integer, a Fraction or ``"N/D"``), validated."""
    if isinstance(value, str):
        try:
            value = Fraction(value)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"clocks_per_bit must be an integer or 'N/D', not {value!r}") from None
    return check_clocks_per_bit(value)


def period_cycles(clocks_per_bit: BitPeriod, bits: int) -> int:
    """Whole clock cycles that cover ``bits`` bit periods (for timeouts)."""
    return ceil(clocks_per_bit * bits)


def _fraction_parts(clocks_per_bit: BitPeriod) -> tuple[int, int]:
    f = Fraction(clocks_per_bit)
    return f.numerator, f.denominator


class UartRx(wiring.Component):
    """8N1 receiver.

    Parameters
    ----------
    clocks_per_bit
        Clock cycles per bit: an integer ≥ 4, or a Fraction ≥ 6 (:func:`check_clocks_per_bit`).

    Ports
    -----
    rx : In(1)
        The serial line (idle high); synchronised inside.
    bytes : Out(stream.Signature(8))
        Received bytes. A byte that is not taken before the next one is complete is overwritten
        (``overrun`` pulses); a byte with a bad stop bit is dropped (``framing_error`` pulses).
    """

    rx: In(1, init=1)
    bytes: Out(stream.Signature(8))
    overrun: Out(1)
    framing_error: Out(1)

    def __init__(self, clocks_per_bit: BitPeriod):
        self._MustUse__silence = True  # a rejected constructor must not also warn "never elaborated"
        self.clocks_per_bit = check_clocks_per_bit(clocks_per_bit)
        self._MustUse__silence = False
        super().__init__()

    def __repr__(self) -> str:
        return f"UartRx(clocks_per_bit={self.clocks_per_bit})"

    def elaborate(self, platform):
        """The receiver for a period of N/D clocks (D = 1: an integer period): ``rem`` is the time to the next
        sample in D-ths of a clock; a clock whose ``rem`` is under D samples and adds N − D, any other takes
        D off (with D = 1, a timer counting down to 0)."""
        m = Module()
        n, d = _fraction_parts(self.clocks_per_bit)
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)

        rem = Signal(range(3 * n))
        due = Signal()
        bit = Signal(range(9))
        shreg = Signal(8)
        m.d.comb += due.eq(rem < d)

        m.d.sync += [self.overrun.eq(0), self.framing_error.eq(0)]
        with m.If(self.bytes.ready):
            m.d.sync += self.bytes.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    # the first data bit's middle: 1.5 bit periods after the falling edge
                    m.d.sync += [rem.eq((3 * n) // 2 - d), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(due):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), bit.eq(bit + 1), rem.eq(rem + (n - d))]
                    with m.If(bit == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += rem.eq(rem - d)
            with m.State("STOP"):
                with m.If(due):
                    with m.If(rx):
                        m.d.sync += [self.bytes.payload.eq(shreg), self.bytes.valid.eq(1)]
                        with m.If(self.bytes.valid & ~self.bytes.ready):
                            m.d.sync += self.overrun.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.framing_error.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += rem.eq(rem - d)
            with m.State("BREAK"):
                # a line held low (break, or a lost bit): wait for idle before looking for a start bit
                with m.If(rx):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """8N1 transmitter.

    Parameters
    ----------
    clocks_per_bit
        Clock cycles per bit: an integer ≥ 4, or a Fraction ≥ 6 (:func:`check_clocks_per_bit`).

    Ports
    -----
    bytes : In(stream.Signature(8))
        Bytes to send; ``ready`` is high while the transmitter is idle.
    tx : Out(1)
        The serial line (idle high).
    """

    bytes: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, clocks_per_bit: BitPeriod):
        self._MustUse__silence = True  # a rejected constructor must not also warn "never elaborated"
        self.clocks_per_bit = check_clocks_per_bit(clocks_per_bit)
        self._MustUse__silence = False
        super().__init__()

    def __repr__(self) -> str:
        return f"UartTx(clocks_per_bit={self.clocks_per_bit})"

    def elaborate(self, platform):
        """The transmitter for a period of N/D clocks (``rem`` as in the receiver): bit k starts on the last
        clock at or before k·N/D clocks from the start bit's, so no edge is a clock or more from the ideal one."""
        m = Module()
        n, d = _fraction_parts(self.clocks_per_bit)
        rem = Signal(range(2 * n))
        due = Signal()
        shreg = Signal(10, init=0x3FF)  # stop bit, 8 data bits (LSB first), start bit
        left = Signal(range(11))

        # ready in the last cycle of the stop bit too, so back-to-back bytes leave no gap
        m.d.comb += [due.eq(rem < d), self.tx.eq(shreg[0]),
                     self.bytes.ready.eq((left == 0) | ((left == 1) & due))]
        with m.If(self.bytes.valid & self.bytes.ready):
            # a byte taken on the stop bit's last clock carries that bit's phase over, so the rate stays exact
            # (with D = 1 that phase is always 0)
            carry = Mux(left == 1, rem, 0) if d > 1 else 0
            m.d.sync += [shreg.eq((1 << 9) | (self.bytes.payload << 1)), left.eq(10), rem.eq(carry + (n - d))]
        with m.Elif(left != 0):
            with m.If(due):
                m.d.sync += [shreg.eq((shreg >> 1) | (1 << 9)), left.eq(left - 1), rem.eq(rem + (n - d))]
            with m.Else():
                m.d.sync += rem.eq(rem - d)
        return m
