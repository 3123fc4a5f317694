"""8N1 UART receiver and transmitter with a parameterized bit period.

The bit period is an integer number of clock cycles (``clocks_per_bit``): a
board build uses ``round(clock / baud)``, the simulated board a small number
(8–16) so that simulation stays fast. Bytes go in and out as
``amaranth.lib.stream`` streams of 8 bits.
"""


from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

MIN_CLOCKS_PER_BIT = 4


def check_clocks_per_bit(clocks_per_bit: int) -> int:
    """Validate a bit period: an integer ≥ :data:`MIN_CLOCKS_PER_BIT` (the receiver samples mid-bit)."""
    if isinstance(clocks_per_bit, bool) or not isinstance(clocks_per_bit, int) or clocks_per_bit < MIN_CLOCKS_PER_BIT:
        raise ValueError(f"clocks_per_bit must be an integer ≥ {MIN_CLOCKS_PER_BIT}, not {clocks_per_bit!r}")
    return clocks_per_bit


def clocks_per_bit_for(clock_hz: int, baud: int) -> int:
    """The bit period for a clock and a baud rate; refuses rates off by more than 2 % (8N1 tolerates ~4 % in all)."""
    if baud <= 0 or clock_hz <= 0:
        raise ValueError(f"clock and baud must be positive, got clock {clock_hz} Hz, baud {baud}")
    cpb = round(clock_hz / baud)
    if cpb < MIN_CLOCKS_PER_BIT:
        raise ValueError(f"baud {baud} is too fast for a {clock_hz} Hz clock (needs ≥ {MIN_CLOCKS_PER_BIT} clocks per bit)")
    error = abs(clock_hz / cpb - baud) / baud
    if error > 0.02:
        raise ValueError(f"baud {baud} is {error:.1%} off at {clock_hz} Hz with {cpb} clocks per bit (at most 2 % works reliably)")
    return cpb


class UartRx(wiring.Component):
    """8N1 receiver.

    Parameters
    ----------
    clocks_per_bit
        Clock cycles per bit (≥ 4).

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

    def __init__(self, clocks_per_bit: int):
        self._MustUse__silence = True  # a rejected constructor must not also warn "never elaborated"
        self.clocks_per_bit = check_clocks_per_bit(clocks_per_bit)
        self._MustUse__silence = False
        super().__init__()

    def __repr__(self) -> str:
        return f"UartRx(clocks_per_bit={self.clocks_per_bit})"

    def elaborate(self, platform):
        m = Module()
        cpb = self.clocks_per_bit
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(cpb + cpb // 2 + 1))
        bit = Signal(range(9))
        shreg = Signal(8)

        m.d.sync += [self.overrun.eq(0), self.framing_error.eq(0)]
        with m.If(self.bytes.ready):
            m.d.sync += self.bytes.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    # sample the first data bit in its middle: 1.5 bit periods after the falling edge
                    m.d.sync += [timer.eq(cpb + cpb // 2 - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), bit.eq(bit + 1), timer.eq(cpb - 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(rx):
                        m.d.sync += [self.bytes.payload.eq(shreg), self.bytes.valid.eq(1)]
                        with m.If(self.bytes.valid & ~self.bytes.ready):
                            m.d.sync += self.overrun.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.framing_error.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
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
        Clock cycles per bit (≥ 4).

    Ports
    -----
    bytes : In(stream.Signature(8))
        Bytes to send; ``ready`` is high while the transmitter is idle.
    tx : Out(1)
        The serial line (idle high).
    """

    bytes: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, clocks_per_bit: int):
        self._MustUse__silence = True  # a rejected constructor must not also warn "never elaborated"
        self.clocks_per_bit = check_clocks_per_bit(clocks_per_bit)
        self._MustUse__silence = False
        super().__init__()

    def __repr__(self) -> str:
        return f"UartTx(clocks_per_bit={self.clocks_per_bit})"

    def elaborate(self, platform):
        m = Module()
        cpb = self.clocks_per_bit
        timer = Signal(range(cpb))
        shreg = Signal(10, init=0x3FF)  # stop bit, 8 data bits (LSB first), start bit
        left = Signal(range(11))

        # ready in the last cycle of the stop bit too, so back-to-back bytes leave no gap
        m.d.comb += [self.tx.eq(shreg[0]), self.bytes.ready.eq((left == 0) | ((left == 1) & (timer == 0)))]
        with m.If(self.bytes.valid & self.bytes.ready):
            m.d.sync += [shreg.eq((1 << 9) | (self.bytes.payload << 1)), left.eq(10), timer.eq(cpb - 1)]
        with m.Elif(left != 0):
            with m.If(timer == 0):
                m.d.sync += [shreg.eq((shreg >> 1) | (1 << 9)), left.eq(left - 1), timer.eq(cpb - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m
