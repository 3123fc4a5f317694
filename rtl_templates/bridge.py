"""UART ↔ accelerator bridge: the board side of the wire protocol (docs/PROTOCOL.md).

The bridge receives frames (:mod:`bitspike.protocol`), checks them, and

- answers HELLO with a HELLO_REPLY whose payload (manifest digest, sizes,
  clock, baud) is a constant baked in at build time;
- buffers an INFER frame's pixels in a block RAM and, only once its CRC is
  known good, streams them into the accelerator; then sends the
  accelerator's logits and class back as a RESULT frame;
- drops any frame with a bad version, type, length or CRC, or one that stops
  arriving mid-way (a timeout), reports it with an ERROR frame carrying the
  frame's sequence number when it has one, and hunts for the next start
  byte (resynchronisation).

Because pixels are buffered, a corrupted or truncated frame never reaches
the accelerator, so it can never be left with half an image. The buffer is
read into the accelerator at one pixel per clock (a registered block-RAM read
and a small FIFO that absorbs stalls), and the accelerator's answer goes into
a FIFO that holds all of it, so the accelerator never waits for the UART.
The accelerator may have its own clock (``accel_domain``, a PLL's on a
board): the pixel buffer is then a dual-clock block RAM whose pass is
started and acknowledged by pulse synchronizers, and the result FIFO is
asynchronous (Gray-coded pointers). Receiving decides each header field and
CRC byte as it arrives, and replies are queued from registers, so no clock
cycle holds a frame check and a FIFO write together. Replies are
queued (a small FIFO of reply requests, so an ERROR for a damaged frame is
not lost while a RESULT is being sent); the host is stop-and-wait, since
bytes arriving while an image is fed to the accelerator are dropped.
"""

from dataclasses import dataclass, field

from amaranth import Cat, ClockSignal, Const, DomainRenamer, Elaboratable, Instance, Module, Mux, ResetSignal, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import PulseSynchronizer
from amaranth.lib.fifo import AsyncFIFOBuffered, SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .. import protocol as P
from .uart import UartRx, UartTx, check_clocks_per_bit

# reply kinds queued for the transmitter
_KIND_HELLO, _KIND_RESULT, _KIND_ERROR = 0, 1, 2


@dataclass(frozen=True)
class BridgeConfig:
    """Everything the bridge is built for.

    Parameters
    ----------
    digest
        The manifest's SHA-256, hex (returned by HELLO).
    input_size, input_bits
        Pixels per image and bits per pixel (the accelerator's ``pixels`` stream).
    num_classes, result_width
        Logits per image and the width of the accelerator's ``results`` stream.
    clocks_per_bit
        UART bit period in clock cycles (small in simulation, ``clock/baud`` on a board).
    clock_hz, baud
        Reported in HELLO (informational; the bit period is what counts).
    cycles_per_inference
        The generator's predicted latency, reported in HELLO.
    timeout_cycles
        A frame whose next byte does not come within this many cycles is dropped
        (default: 64 byte times).
    """

    digest: str
    input_size: int
    input_bits: int
    num_classes: int
    result_width: int
    clocks_per_bit: int = 16
    clock_hz: int = 0
    baud: int = 0
    cycles_per_inference: int = 0
    timeout_cycles: int = field(default=0)

    def __post_init__(self):
        def need(cond, what):
            if not cond:
                raise ValueError(f"BridgeConfig: {what}")

        need(isinstance(self.digest, str) and len(self.digest) == 64 and all(c in "0123456789abcdef" for c in self.digest),
             f"digest must be 64 lowercase hex digits (sha256), not {self.digest!r}")
        need(1 <= self.input_size and self.input_size * P.pixel_bytes(self.input_bits) <= P.MAX_PAYLOAD,
             f"input_size {self.input_size} × {P.pixel_bytes(self.input_bits)} byte(s) must be 1 … {P.MAX_PAYLOAD} bytes")
        need(2 <= self.num_classes <= 0xFFFF, f"num_classes must be 2 … 65535, not {self.num_classes}")
        need(1 <= self.result_width <= 64, f"result_width must be 1 … 64 bits, not {self.result_width}")
        need(self.num_classes - 1 < 2**self.result_width, f"result_width {self.result_width} cannot hold class index {self.num_classes - 1}")
        check_clocks_per_bit(self.clocks_per_bit)
        if self.timeout_cycles == 0:
            object.__setattr__(self, "timeout_cycles", 64 * 10 * self.clocks_per_bit)
        need(self.timeout_cycles >= 20 * self.clocks_per_bit, f"timeout_cycles must cover at least 2 byte times, not {self.timeout_cycles}")

    @property
    def logit_bytes(self) -> int:
        return P.logit_bytes(self.result_width)

    @property
    def pixel_bytes(self) -> int:
        return P.pixel_bytes(self.input_bits)

    def hello_info(self) -> P.HelloInfo:
        """The HELLO_REPLY payload this bridge sends."""
        return P.HelloInfo(P.VERSION, self.digest, self.input_size, self.input_bits, self.num_classes,
                           self.logit_bytes, self.clock_hz, self.baud, self.cycles_per_inference)


def crc16_next(crc, byte):
    """CRC-16/CCITT-FALSE of one more byte, as combinational logic (same as :func:`bitspike.protocol.crc16_update`)."""
    for i in reversed(range(8)):
        feedback = crc[15] ^ byte[i]
        crc = Cat(Const(0, 1), crc[:15]) ^ Mux(feedback, Const(P.CRC_POLY, 16), Const(0, 16))
    return crc


def _rom(m, name, values, index, width=8):
    """A small constant table read combinationally (a mux; it is tiny)."""
    out = Signal(width, name=name)
    with m.Switch(index):
        for i, v in enumerate(values):
            with m.Case(i):
                m.d.comb += out.eq(v)
    return out


class _Feeder(Elaboratable):
    """Streams the pixel buffer into the accelerator, one pixel per clock of its own domain.

    ``start`` (a one-cycle pulse) begins a pass over addresses ``0 … n-1`` of the buffer's read
    port ``rd``; ``done`` pulses once the last pixel has been taken. The read port's data is
    registered (a block RAM read), so a small FIFO after it absorbs the accelerator's stalls
    without putting ``pixels.ready`` on the path into the memory's enable.
    """

    #: the FIFO after the memory read (three entries keep the rate at one pixel per clock)
    DEPTH = 4

    def __init__(self, rd, n: int, width: int):
        self.rd, self.n, self.width = rd, n, width
        self.start = Signal()
        self.done = Signal()
        self.busy = Signal()
        self.pixels_payload = Signal(width)
        self.pixels_valid = Signal()
        self.pixels_ready = Signal()

    def elaborate(self, platform):
        m = Module()
        n, rd = self.n, self.rd
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.width, depth=self.DEPTH)
        issued = Signal(range(n + 1))
        taken = Signal(range(n + 1))
        inflight = Signal()  # a read issued last cycle: its data is on rd.data now
        # a read may be issued while the FIFO has room for it and for the one in flight
        issue = Signal()
        m.d.comb += issue.eq(self.busy & (issued != n) & (fifo.level + inflight < self.DEPTH - 1))
        m.d.comb += [rd.addr.eq(issued), rd.en.eq(issue)]
        m.d.sync += inflight.eq(issue)
        m.d.comb += [fifo.w_data.eq(rd.data), fifo.w_en.eq(inflight)]
        m.d.comb += [self.pixels_payload.eq(fifo.r_data), self.pixels_valid.eq(fifo.r_rdy),
                     fifo.r_en.eq(self.pixels_ready)]
        m.d.sync += self.done.eq(0)
        with m.If(issue):
            m.d.sync += issued.eq(issued + 1)
        with m.If(self.pixels_valid & self.pixels_ready):
            m.d.sync += taken.eq(taken + 1)
            with m.If(taken == n - 1):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), issued.eq(0), taken.eq(0)]
        return m


class Bridge(wiring.Component):
    """The protocol engine between a UART and the accelerator's streams.

    Parameters
    ----------
    config
        A :class:`BridgeConfig`.
    accel_domain
        The clock domain of the ``pixels`` and ``results`` streams. ``"sync"`` (default): the
        accelerator shares the UART's clock. Another name: the accelerator has its own clock (a
        PLL's) and the bridge crosses to it: the pixel buffer is a dual-clock block RAM read in
        ``accel_domain``, started and finished by pulse synchronizers, and results come back
        through an asynchronous FIFO with Gray-coded pointers. Both ways the accelerator gets
        one pixel per clock of its domain and can hand over a whole answer without waiting for
        the UART.

    Ports
    -----
    rx, tx
        Serial lines (idle high).
    pixels : Out(stream)
        To the accelerator's ``pixels`` input.
    results : In(stream)
        From the accelerator's ``results`` output.
    idle
        Nothing in flight: hunting for a start byte, no reply pending or being sent.
    waiting
        Only waiting for the rest of a frame (a simulator may fast-forward time; the timeout counts).
    """

    def __init__(self, config: BridgeConfig, accel_domain: str = "sync"):
        if not isinstance(config, BridgeConfig):
            self._MustUse__silence = True
            raise TypeError(f"Bridge needs a BridgeConfig, not {type(config).__name__}")
        if not isinstance(accel_domain, str) or not accel_domain:
            self._MustUse__silence = True
            raise TypeError(f"accel_domain must be a clock domain name, not {accel_domain!r}")
        self.config = config
        self.accel_domain = accel_domain
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "pixels": Out(stream.Signature(config.input_bits)),
            "results": In(stream.Signature(config.result_width)),
            "idle": Out(1),
            "waiting": Out(1),
        })

    def __repr__(self) -> str:
        return f"Bridge({self.config!r}, accel_domain={self.accel_domain!r})"

    @property
    def crosses(self) -> bool:
        """Whether the accelerator is in another clock domain."""
        return self.accel_domain != "sync"

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        m.submodules.uart_rx = urx = UartRx(cfg.clocks_per_bit)
        m.submodules.uart_tx = utx = UartTx(cfg.clocks_per_bit)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx), urx.bytes.ready.eq(1)]

        # reply requests: kind (2 bits), seq (8), error code (8)
        m.submodules.replies = replies = SyncFIFOBuffered(width=18, depth=4)

        # the accelerator's answers, buffered whole so it never waits for the UART
        depth = cfg.num_classes + 1
        if self.crosses:
            results = AsyncFIFOBuffered(width=cfg.result_width, depth=depth, w_domain=self.accel_domain, r_domain="sync")
        else:
            results = SyncFIFOBuffered(width=cfg.result_width, depth=depth)
        m.submodules.results = results
        m.d.comb += [results.w_data.eq(self.results.payload), results.w_en.eq(self.results.valid),
                     self.results.ready.eq(results.w_rdy)]

        self._receiver(m, urx, replies)
        tx_idle = self._transmitter(m, utx, replies, results)
        # level, not r_rdy: a reply just queued is not readable for a cycle or two, but it is pending
        nothing_queued = (replies.level == 0) & ~self._posting
        m.d.comb += self.idle.eq(self._rx_hunting & nothing_queued & tx_idle)
        m.d.comb += self.waiting.eq(self._rx_receiving & nothing_queued & tx_idle)
        return m

    # ------------------------------------------------------------------ receive side

    def _receiver(self, m, urx, replies):
        cfg = self.config
        payload_len = cfg.input_size * cfg.pixel_bytes
        byte = urx.bytes.payload
        got = urx.bytes.valid

        m.submodules.buffer = buffer = Memory(shape=cfg.input_bits, depth=cfg.input_size, init=[])
        wr = buffer.write_port()
        rd = buffer.read_port(domain=self.accel_domain)
        feeder = _Feeder(rd, cfg.input_size, cfg.input_bits)
        m.submodules.feeder = DomainRenamer(self.accel_domain)(feeder) if self.crosses else feeder
        m.d.comb += [self.pixels.payload.eq(feeder.pixels_payload), self.pixels.valid.eq(feeder.pixels_valid),
                     feeder.pixels_ready.eq(self.pixels.ready)]
        start, done = Signal(), Signal()
        if self.crosses:
            m.submodules.start_cdc = start_cdc = PulseSynchronizer("sync", self.accel_domain)
            m.submodules.done_cdc = done_cdc = PulseSynchronizer(self.accel_domain, "sync")
            m.d.comb += [start_cdc.i.eq(start), feeder.start.eq(start_cdc.o),
                         done_cdc.i.eq(feeder.done), done.eq(done_cdc.o)]
        else:
            m.d.comb += [feeder.start.eq(start), done.eq(feeder.done)]

        crc = Signal(16, init=P.CRC_INIT)
        hcount = Signal(range(P.HEADER_SIZE))
        count = Signal(range(max(payload_len, 2) + 1))
        last = Signal()  # the next payload byte is the last one
        pixel_lo = Signal(8)
        silence = Signal(range(cfg.timeout_cycles + 1))
        timed_out = Signal()
        seq = Signal(8)
        # the header's checks, decided as its bytes arrive (one byte compared per cycle), so that the
        # cycle that queues a reply only reads flip-flops
        ver_ok, is_hello, is_infer = Signal(), Signal(), Signal()
        len_lo_zero, len_lo_ok, len_zero, len_ok = Signal(), Signal(), Signal(), Signal()
        crc_lo_ok, crc_ok = Signal(), Signal()

        # replies are queued one cycle after the decision, from registers
        post_en = Signal()
        post_data = Signal(18)
        self._posting = post_en
        m.d.sync += post_en.eq(0)
        m.d.comb += [replies.w_data.eq(post_data), replies.w_en.eq(post_en)]

        def post(kind, code=0):
            # a reply is dropped when the queue is full (only possible with a misbehaving host)
            m.d.sync += [post_en.eq(1), post_data.eq(Cat(Const(kind, 2), seq, Const(code, 8)))]

        # the silence counter runs in every receiving state; its comparison is registered
        m.d.sync += [silence.eq(Mux(got, 0, silence + 1)), timed_out.eq(~got & (silence == cfg.timeout_cycles - 1))]

        self._rx_hunting = Signal()
        self._rx_receiving = Signal()
        m.d.comb += wr.data.eq(Cat(pixel_lo, byte) if cfg.pixel_bytes == 2 else byte)

        with m.FSM(name="rx_fsm"):
            with m.State("HUNT"):
                m.d.comb += self._rx_hunting.eq(1)
                m.d.sync += [hcount.eq(0), crc.eq(P.CRC_INIT)]
                with m.If(got & (byte == P.SOF)):
                    m.next = "HEADER"

            with m.State("HEADER"):
                m.d.comb += self._rx_receiving.eq(1)
                with m.If(got):
                    m.d.sync += [hcount.eq(hcount + 1), crc.eq(crc16_next(crc, byte))]
                    with m.Switch(hcount):
                        with m.Case(0):
                            m.d.sync += ver_ok.eq(byte == P.VERSION)
                        with m.Case(1):
                            m.d.sync += [is_hello.eq(byte == int(P.FrameType.HELLO)),
                                         is_infer.eq(byte == int(P.FrameType.INFER))]
                        with m.Case(2):
                            m.d.sync += seq.eq(byte)
                        with m.Case(3):
                            m.d.sync += [len_lo_zero.eq(byte == 0), len_lo_ok.eq(byte == (payload_len & 0xFF))]
                        with m.Case(4):
                            m.d.sync += [len_zero.eq(len_lo_zero & (byte == 0)),
                                         len_ok.eq(len_lo_ok & (byte == (payload_len >> 8)))]
                    with m.If((hcount == 0) & (byte == P.SOF)):
                        # a start byte where the version belongs: the previous 0xA5 was noise; restart here
                        m.d.sync += [hcount.eq(0), crc.eq(P.CRC_INIT)]
                    with m.Elif(hcount == P.HEADER_SIZE - 2):
                        m.next = "CHECK_HEADER"
                with m.Elif(timed_out):
                    m.next = "TIMEOUT"

            with m.State("CHECK_HEADER"):
                m.d.comb += self._rx_receiving.eq(1)
                m.d.sync += [count.eq(0), last.eq(payload_len == 1)]
                with m.If(~ver_ok):
                    post(_KIND_ERROR, int(P.ErrorCode.BAD_VERSION))
                    m.next = "HUNT"
                with m.Elif(is_hello):
                    with m.If(~len_zero):
                        post(_KIND_ERROR, int(P.ErrorCode.BAD_LENGTH))
                        m.next = "HUNT"
                    with m.Else():
                        m.next = "CRC_LO"
                with m.Elif(is_infer):
                    with m.If(~len_ok):
                        post(_KIND_ERROR, int(P.ErrorCode.BAD_LENGTH))
                        m.next = "HUNT"
                    with m.Else():
                        m.next = "PAYLOAD"
                with m.Else():
                    post(_KIND_ERROR, int(P.ErrorCode.BAD_TYPE))
                    m.next = "HUNT"

            with m.State("PAYLOAD"):
                m.d.comb += self._rx_receiving.eq(1)
                with m.If(got):
                    m.d.sync += [count.eq(count + 1), last.eq(count == payload_len - 2),
                                 crc.eq(crc16_next(crc, byte)), pixel_lo.eq(byte)]
                    if cfg.pixel_bytes == 2:
                        m.d.comb += [wr.addr.eq(count >> 1), wr.en.eq(count[0])]
                    else:
                        m.d.comb += [wr.addr.eq(count), wr.en.eq(1)]
                    with m.If(last):
                        m.next = "CRC_LO"
                with m.Elif(timed_out):
                    m.next = "TIMEOUT"

            with m.State("CRC_LO"):
                m.d.comb += self._rx_receiving.eq(1)
                with m.If(got):
                    m.d.sync += crc_lo_ok.eq(byte == crc[:8])
                    m.next = "CRC_HI"
                with m.Elif(timed_out):
                    m.next = "TIMEOUT"

            with m.State("CRC_HI"):
                m.d.comb += self._rx_receiving.eq(1)
                with m.If(got):
                    m.d.sync += crc_ok.eq(crc_lo_ok & (byte == crc[8:]))
                    m.next = "CHECK_CRC"
                with m.Elif(timed_out):
                    m.next = "TIMEOUT"

            with m.State("CHECK_CRC"):
                m.d.comb += self._rx_receiving.eq(1)
                with m.If(~crc_ok):
                    post(_KIND_ERROR, int(P.ErrorCode.BAD_CRC))
                    m.next = "HUNT"
                with m.Elif(is_hello):
                    post(_KIND_HELLO)
                    m.next = "HUNT"
                with m.Else():
                    m.d.comb += start.eq(1)
                    m.next = "FEED"

            with m.State("TIMEOUT"):
                post(_KIND_ERROR, int(P.ErrorCode.TIMEOUT))
                m.next = "HUNT"

            # the frame is good: the feeder streams the buffered pixels into the accelerator
            with m.State("FEED"):
                with m.If(done):
                    m.next = "QUEUE_RESULT"
            with m.State("QUEUE_RESULT"):
                # a RESULT request must never be dropped: its frame carries the accelerator's beats
                with m.If(replies.level + post_en < replies.depth):
                    post(_KIND_RESULT)
                    m.next = "HUNT"

    # ------------------------------------------------------------------ transmit side

    def _transmitter(self, m, utx, replies, results):
        cfg = self.config
        hello = cfg.hello_info().pack()
        lb = cfg.logit_bytes
        result_len = cfg.num_classes * lb + P.CLASS_BYTES
        beat_bytes = max(lb, P.CLASS_BYTES)

        kind = Signal(2)
        seq = Signal(8)
        code = Signal(8)
        crc = Signal(16)
        index = Signal(range(max(len(hello), result_len, P.HEADER_SIZE) + 1))
        beat = Signal(8 * beat_bytes)
        beat_left = Signal(range(beat_bytes + 1))
        beat_index = Signal(range(cfg.num_classes + 2))
        tx_idle = Signal()

        hello_byte = _rom(m, "hello_byte", hello, index)
        out = Signal(8)
        send = Signal()
        add_crc = Signal()
        m.d.comb += [utx.bytes.payload.eq(out), utx.bytes.valid.eq(send)]
        with m.If(send & utx.bytes.ready & add_crc):
            m.d.sync += crc.eq(crc16_next(crc, out))

        length = Signal(16)
        m.d.comb += length.eq(Mux(kind == _KIND_HELLO, len(hello), Mux(kind == _KIND_RESULT, result_len, 1)))
        ftype = Mux(kind == _KIND_HELLO, int(P.FrameType.HELLO_REPLY), Mux(kind == _KIND_RESULT, int(P.FrameType.RESULT), int(P.FrameType.ERROR)))
        header_bytes = [Const(P.SOF, 8), Const(P.VERSION, 8), ftype, seq, length[:8], length[8:]]

        with m.FSM(name="tx_fsm"):
            with m.State("IDLE"):
                m.d.comb += tx_idle.eq(utx.bytes.ready)
                with m.If(replies.r_rdy):
                    m.d.comb += replies.r_en.eq(1)
                    m.d.sync += [kind.eq(replies.r_data[:2]), seq.eq(replies.r_data[2:10]), code.eq(replies.r_data[10:]),
                                 index.eq(0), crc.eq(P.CRC_INIT), beat_index.eq(0), beat_left.eq(0)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += [send.eq(1), add_crc.eq(index != 0)]
                with m.Switch(index):
                    for i, b in enumerate(header_bytes):
                        with m.Case(i):
                            m.d.comb += out.eq(b)
                with m.If(utx.bytes.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == P.HEADER_SIZE - 1):
                        m.d.sync += index.eq(0)
                        with m.If(kind == _KIND_HELLO):
                            m.next = "HELLO"
                        with m.Elif(kind == _KIND_RESULT):
                            m.next = "RESULT"
                        with m.Else():
                            m.next = "ERROR"
            with m.State("HELLO"):
                m.d.comb += [send.eq(1), add_crc.eq(1), out.eq(hello_byte)]
                with m.If(utx.bytes.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == len(hello) - 1):
                        m.next = "CRC_LO"
            with m.State("ERROR"):
                m.d.comb += [send.eq(1), add_crc.eq(1), out.eq(code)]
                with m.If(utx.bytes.ready):
                    m.next = "CRC_LO"
            with m.State("RESULT"):
                with m.If(beat_left == 0):
                    # take the next beat: logits are signed (sign-extend), the class beat is not
                    m.d.comb += results.r_en.eq(1)
                    with m.If(results.r_rdy):
                        is_class = beat_index == cfg.num_classes
                        m.d.sync += [
                            beat.eq(Mux(is_class, results.r_data, results.r_data.as_signed())),
                            beat_left.eq(Mux(is_class, P.CLASS_BYTES, lb)),
                            beat_index.eq(beat_index + 1),
                        ]
                with m.Else():
                    m.d.comb += [send.eq(1), add_crc.eq(1), out.eq(beat[:8])]
                    with m.If(utx.bytes.ready):
                        m.d.sync += [beat.eq(beat >> 8), beat_left.eq(beat_left - 1)]
                        with m.If((beat_left == 1) & (beat_index == cfg.num_classes + 1)):
                            m.next = "CRC_LO"
            with m.State("CRC_LO"):
                m.d.comb += [send.eq(1), out.eq(crc[:8])]
                with m.If(utx.bytes.ready):
                    m.next = "CRC_HI"
            with m.State("CRC_HI"):
                m.d.comb += [send.eq(1), out.eq(crc[8:])]
                with m.If(utx.bytes.ready):
                    m.next = "IDLE"
        return tx_idle


class BridgedAccelerator(wiring.Component):
    """The generated accelerator (Verilog module ``bitspike_top``) behind a :class:`Bridge`.

    This is the whole design of a board (and of the simulated board): a serial
    line in, a serial line out.

    Parameters
    ----------
    config
        The bridge's :class:`BridgeConfig` (must match the accelerator's report.json).
    accelerator
        Name of the accelerator's Verilog module.
    accel_domain
        The accelerator's clock domain (:class:`Bridge`). A domain other than ``sync`` that the
        parent does not define becomes two more ports, ``<domain>_clk`` and ``<domain>_rst``, in
        the Verilog (:func:`bridge_verilog`).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    idle: Out(1)
    waiting: Out(1)

    def __init__(self, config: BridgeConfig, accelerator: str = "bitspike_top", accel_domain: str = "sync"):
        self.config = config
        self.accelerator = accelerator
        self.accel_domain = accel_domain
        super().__init__()

    def __repr__(self) -> str:
        return (f"BridgedAccelerator({self.config!r}, accelerator={self.accelerator!r}, "
                f"accel_domain={self.accel_domain!r})")

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = bridge = Bridge(self.config, self.accel_domain)
        m.d.comb += [bridge.rx.eq(self.rx), self.tx.eq(bridge.tx), self.idle.eq(bridge.idle), self.waiting.eq(bridge.waiting)]
        m.submodules.accelerator = Instance(
            self.accelerator,
            i_clk=ClockSignal(self.accel_domain), i_rst=ResetSignal(self.accel_domain),
            i_pixels__payload=bridge.pixels.payload, i_pixels__valid=bridge.pixels.valid, o_pixels__ready=bridge.pixels.ready,
            o_results__payload=bridge.results.payload, o_results__valid=bridge.results.valid, i_results__ready=bridge.results.ready,
        )
        return m


def bridge_config_from_report(report: dict, *, clocks_per_bit: int, clock_hz: int = 0, baud: int = 0,
                              timeout_cycles: int = 0) -> BridgeConfig:
    """Build the :class:`BridgeConfig` for a generated accelerator from its report.json (docs/HARDWARE_INTERFACE.md)."""
    try:
        return BridgeConfig(
            digest=report["manifest_digest"], input_size=int(report["input_size"]), input_bits=int(report["input_bits"]),
            num_classes=int(report["num_classes"]), result_width=int(report["result_width"]),
            clocks_per_bit=clocks_per_bit, clock_hz=clock_hz, baud=baud,
            cycles_per_inference=int(report.get("cycles_per_inference", 0)), timeout_cycles=timeout_cycles,
        )
    except KeyError as exc:
        raise ValueError(f"accelerator report.json lacks key {exc.args[0]!r} (docs/HARDWARE_INTERFACE.md lists the keys)") from None


def bridge_verilog(config: BridgeConfig, name: str = "bitspike_board", accel_domain: str = "sync") -> str:
    """Verilog of :class:`BridgedAccelerator` (the accelerator stays an external module ``bitspike_top``).

    With ``accel_domain`` other than ``sync`` the module has a second clock and reset,
    ``<accel_domain>_clk`` and ``<accel_domain>_rst``, for the accelerator.
    """
    from amaranth.back import verilog

    return verilog.convert(BridgedAccelerator(config, accel_domain=accel_domain), name=name, emit_src=False)


__all__ = ["BridgeConfig", "Bridge", "BridgedAccelerator", "bridge_config_from_report", "bridge_verilog", "crc16_next"]
