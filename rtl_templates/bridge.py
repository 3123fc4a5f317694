"""UART ↔ accelerator bridge: the board side of the wire protocol (docs/PROTOCOL.md, version 2).

The bridge receives frames (:mod:`bitspike.protocol`), checks them, and

- answers HELLO with a HELLO_REPLY whose payload (manifest digest, sizes,
  clock, baud, images per frame, window) is a constant baked in at build time;
- unpacks an INFER frame's bit-packed images into one of two pixel banks (a
  block RAM) as its bytes arrive and, only once its CRC is known good, has
  the feeder stream that bank into the accelerator, one pixel per
  accelerator clock, while the next frame arrives in the other bank; the
  accelerator's logits and classes go back as one RESULT frame per INFER;
- drops any frame with a bad version, type, length or CRC, one that stops
  arriving mid-way (a timeout), or one that finds both banks full (BUSY),
  reports it with an ERROR frame carrying the frame's sequence number when it
  has one, and hunts for the next start byte (resynchronisation).

Because pixels are buffered per bank, a corrupted or truncated frame never
reaches the accelerator, so it can never be left with half an image. The
receiver never stops listening (feeding runs beside it), so a host can keep
two frames outstanding and the line towards the board never idles while the
accelerator computes. The result FIFO holds a whole frame's answers, so a
pass over a bank always finishes whatever the transmitter is doing, and the
accelerator never waits for the UART longer than one frame. The accelerator
may have its own clock (``accel_domain``, a PLL's on a board): the banks are
then a dual-clock block RAM whose passes are started and acknowledged by pulse
synchronizers (the bank's base address and pixel count are held still for the
whole pass), and the result FIFO is asynchronous (Gray-coded pointers).
Receiving decides each header field and CRC byte as it arrives, and replies
are queued from registers, so no clock cycle holds a frame check and a FIFO
write together.
"""

from dataclasses import dataclass, field

from amaranth import Cat, ClockSignal, Const, DomainRenamer, Elaboratable, Instance, Module, Mux, ResetSignal, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import PulseSynchronizer
from amaranth.lib.fifo import AsyncFIFOBuffered, SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .. import protocol as P
from .uart import BitPeriod, UartRx, UartTx, check_clocks_per_bit, period_cycles

# reply kinds queued for the transmitter
_KIND_HELLO, _KIND_RESULT, _KIND_ERROR = 0, 1, 2

#: pixels per bank the default ``images_per_frame`` aims at (a 512-pixel bank is one small block RAM
#: for digits-sized images; large images get one image per frame, where framing costs little)
BANK_PIXELS = 512
#: most images per INFER frame by default
MAX_IMAGES_PER_FRAME = 8
#: input banks: one being fed while the next frame arrives
BANKS = 2


def default_images_per_frame(input_size: int) -> int:
    """Images per INFER frame by default: as many as fill :data:`BANK_PIXELS`, 1 … :data:`MAX_IMAGES_PER_FRAME`."""
    return max(1, min(MAX_IMAGES_PER_FRAME, BANK_PIXELS // max(1, input_size)))


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
        UART bit period in clock cycles (small in simulation, ``clock/baud`` on a board): an integer, or a
        :class:`~fractions.Fraction` where no integer is within 2 % of the rate
        (:func:`~bitspike.rtl_templates.uart.clocks_per_bit_for`).
    clock_hz, baud
        Reported in HELLO (informational; the bit period is what counts).
    cycles_per_inference, initiation_interval
        The generator's predicted latency and interval, reported in HELLO.
    timeout_cycles
        A frame whose next byte does not come within this many cycles is dropped
        (default: 64 byte times).
    images_per_frame
        Most images one INFER frame may carry (0: :func:`default_images_per_frame`).
    """

    digest: str
    input_size: int
    input_bits: int
    num_classes: int
    result_width: int
    clocks_per_bit: BitPeriod = 16
    clock_hz: int = 0
    baud: int = 0
    cycles_per_inference: int = 0
    timeout_cycles: int = field(default=0)
    images_per_frame: int = 0
    initiation_interval: int = 0

    def __post_init__(self):
        def need(cond, what):
            if not cond:
                raise ValueError(f"BridgeConfig: {what}")

        need(isinstance(self.digest, str) and len(self.digest) == 64 and all(c in "0123456789abcdef" for c in self.digest),
             f"digest must be 64 lowercase hex digits (sha256), not {self.digest!r}")
        need(1 <= self.input_bits <= 16, f"input_bits must be 1 … 16, not {self.input_bits}")
        need(1 <= self.input_size and P.image_bytes(self.input_size, self.input_bits) <= P.MAX_PAYLOAD,
             f"input_size {self.input_size} × {self.input_bits} bits must pack into 1 … {P.MAX_PAYLOAD} bytes")
        need(2 <= self.num_classes <= 0xFFFF, f"num_classes must be 2 … 65535, not {self.num_classes}")
        need(1 <= self.result_width <= 64, f"result_width must be 1 … 64 bits, not {self.result_width}")
        need(self.num_classes - 1 < 2**self.result_width, f"result_width {self.result_width} cannot hold class index {self.num_classes - 1}")
        object.__setattr__(self, "clocks_per_bit", check_clocks_per_bit(self.clocks_per_bit))
        if self.timeout_cycles == 0:
            object.__setattr__(self, "timeout_cycles", period_cycles(self.clocks_per_bit, 64 * 10))
        need(self.timeout_cycles >= period_cycles(self.clocks_per_bit, 20), f"timeout_cycles must cover at least 2 byte times, not {self.timeout_cycles}")
        if self.images_per_frame == 0:
            object.__setattr__(self, "images_per_frame", default_images_per_frame(self.input_size))
        need(1 <= self.images_per_frame <= 255, f"images_per_frame must be 1 … 255, not {self.images_per_frame}")
        k = self.images_per_frame
        need(k * self.image_bytes <= P.MAX_PAYLOAD and k * self.result_bytes <= P.MAX_PAYLOAD,
             f"{k} images per frame do not fit in a {P.MAX_PAYLOAD}-byte payload")

    @property
    def logit_bytes(self) -> int:
        return P.logit_bytes(self.result_width)

    @property
    def image_bytes(self) -> int:
        return P.image_bytes(self.input_size, self.input_bits)

    @property
    def result_bytes(self) -> int:
        """One image's answer in a RESULT payload."""
        return self.num_classes * self.logit_bytes + P.CLASS_BYTES

    @property
    def window(self) -> int:
        """INFER frames a host may have outstanding (one per input bank)."""
        return BANKS

    def link_images_per_second(self) -> float:
        """What the line carries at :attr:`baud` (:func:`bitspike.protocol.link_images_per_second`)."""
        return P.link_images_per_second(self.baud, self.image_bytes, self.result_bytes, self.images_per_frame)

    def hello_info(self) -> P.HelloInfo:
        """The HELLO_REPLY payload this bridge sends."""
        return P.HelloInfo(P.VERSION, self.digest, self.input_size, self.input_bits, self.num_classes,
                           self.logit_bytes, self.clock_hz, self.baud, self.cycles_per_inference,
                           self.images_per_frame, self.window, self.initiation_interval)


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
    """Streams one bank of the pixel buffer into the accelerator, one pixel per clock of its own domain.

    ``start`` (a one-cycle pulse) begins a pass over addresses ``base … base + count - 1`` of the
    buffer's read port ``rd``; ``base`` and ``count`` are held still by the caller for the whole
    pass (they may come from another clock domain). ``done`` pulses once the last pixel has been
    taken. The read port's data is registered (a block RAM read), so a small FIFO after it absorbs
    the accelerator's stalls without putting ``pixels.ready`` on the path into the memory's enable.
    """

    #: the FIFO after the memory read (three entries keep the rate at one pixel per clock)
    DEPTH = 4

    def __init__(self, rd, depth: int, max_count: int, width: int):
        self.rd, self.width = rd, width
        self.start = Signal()
        self.done = Signal()
        self.busy = Signal()
        self.base = Signal(range(depth))
        self.count = Signal(range(max_count + 1))
        self.pixels_payload = Signal(width)
        self.pixels_valid = Signal()
        self.pixels_ready = Signal()
        self._max = max_count

    def elaborate(self, platform):
        m = Module()
        rd = self.rd
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=self.width, depth=self.DEPTH)
        issued = Signal(range(self._max + 1))
        left = Signal(range(self._max + 1))  # pixels not yet taken by the accelerator
        addr = Signal.like(self.base)
        n = Signal.like(self.count)  # the pass's length, latched at start
        inflight = Signal()  # a read issued last cycle: its data is on rd.data now
        # a read may be issued while the FIFO has room for it and for the one in flight
        issue = Signal()
        m.d.comb += issue.eq(self.busy & (issued != n) & (fifo.level + inflight < self.DEPTH - 1))
        m.d.comb += [rd.addr.eq(addr), rd.en.eq(issue)]
        m.d.sync += inflight.eq(issue)
        m.d.comb += [fifo.w_data.eq(rd.data), fifo.w_en.eq(inflight)]
        m.d.comb += [self.pixels_payload.eq(fifo.r_data), self.pixels_valid.eq(fifo.r_rdy),
                     fifo.r_en.eq(self.pixels_ready)]
        m.d.sync += self.done.eq(0)
        with m.If(issue):
            m.d.sync += [issued.eq(issued + 1), addr.eq(addr + 1)]
        with m.If(self.pixels_valid & self.pixels_ready):
            m.d.sync += left.eq(left - 1)
            with m.If(left == 1):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), issued.eq(0), addr.eq(self.base), n.eq(self.count), left.eq(self.count)]
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

        # HELLO and ERROR requests: kind (2 bits), seq (8), error code (8); dropped when full (noise only)
        m.submodules.replies = replies = SyncFIFOBuffered(width=18, depth=4)
        # RESULT requests: seq (8) and images; one per bank fed, never dropped (at most BANKS + 1 queued:
        # a bank is fed again only once the result FIFO has room, so after its previous RESULT began)
        count_bits = Signal(range(cfg.images_per_frame + 1)).shape().width
        m.submodules.answers = answers = SyncFIFOBuffered(width=8 + count_bits, depth=BANKS + 2)

        # the accelerator's answers: a whole frame's, so a bank's pass never waits for the UART
        depth = cfg.images_per_frame * (cfg.num_classes + 1)
        if self.crosses:
            results = AsyncFIFOBuffered(width=cfg.result_width, depth=depth, w_domain=self.accel_domain, r_domain="sync")
        else:
            results = SyncFIFOBuffered(width=cfg.result_width, depth=depth)
        m.submodules.results = results
        m.d.comb += [results.w_data.eq(self.results.payload), results.w_en.eq(self.results.valid),
                     self.results.ready.eq(results.w_rdy)]

        self._receiver(m, urx, replies, answers, count_bits)
        tx_idle = self._transmitter(m, utx, replies, answers, results, count_bits)
        # level, not r_rdy: a reply just queued is not readable for a cycle or two, but it is pending
        nothing_queued = (replies.level == 0) & (answers.level == 0) & ~self._posting & ~self._busy_banks
        m.d.comb += self.idle.eq(self._rx_hunting & nothing_queued & tx_idle)
        m.d.comb += self.waiting.eq(self._rx_receiving & nothing_queued & tx_idle)
        return m

    # ------------------------------------------------------------------ receive side

    def _receiver(self, m, urx, replies, answers, count_bits):
        cfg = self.config
        n_px, bits, k_max = cfg.input_size, cfg.input_bits, cfg.images_per_frame
        bank_px = n_px * k_max
        byte = urx.bytes.payload
        got = urx.bytes.valid

        m.submodules.buffer = buffer = Memory(shape=bits, depth=BANKS * bank_px, init=[])
        wr = buffer.write_port()
        rd = buffer.read_port(domain=self.accel_domain)
        feeder = _Feeder(rd, BANKS * bank_px, bank_px, bits)
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

        # ---- the banks: filled alternately by the receiver, fed alternately by the feeder
        full = [Signal(name=f"bank{b}_full") for b in range(BANKS)]
        bank_seq = [Signal(8, name=f"bank{b}_seq") for b in range(BANKS)]
        bank_count = [Signal(count_bits, name=f"bank{b}_count") for b in range(BANKS)]
        wbank = Signal(range(BANKS))  # the bank the next INFER fills
        fbank = Signal(range(BANKS))  # the bank fed next
        feeding = Signal()
        # the feeder's pass: base address and pixel count, held for the whole pass (they cross to acc_clk)
        feed_base = Signal(range(BANKS * bank_px))
        feed_pixels = Signal(range(bank_px + 1))
        # the pass starts the cycle after its base and count are registered (the feeder latches them)
        start_next = Signal()
        m.d.sync += start_next.eq(0)
        m.d.comb += start.eq(start_next)
        m.d.comb += [feeder.base.eq(feed_base), feeder.count.eq(feed_pixels)]
        pixels_of = _rom(m, "pixels_of", [k * n_px for k in range(k_max + 1)],
                         Mux(fbank == 0, bank_count[0], bank_count[1]), width=feed_pixels.shape().width)
        self._busy_banks = Signal()
        m.d.comb += self._busy_banks.eq(feeding | start_next | full[0] | full[1])

        # a finished pass queues its RESULT request (never dropped: the queue is sized for it)
        m.d.comb += answers.w_data.eq(Mux(fbank == 0, Cat(bank_seq[0], bank_count[0]), Cat(bank_seq[1], bank_count[1])))
        with m.If(feeding):
            with m.If(done):
                m.d.comb += answers.w_en.eq(1)
                m.d.sync += [feeding.eq(0), fbank.eq(fbank + 1)]
                with m.Switch(fbank):
                    for b in range(BANKS):
                        with m.Case(b):
                            m.d.sync += full[b].eq(0)
        with m.Else():
            with m.Switch(fbank):
                for b in range(BANKS):
                    with m.Case(b):
                        with m.If(full[b]):
                            m.d.sync += [feeding.eq(1), start_next.eq(1), feed_base.eq(b * bank_px),
                                         feed_pixels.eq(pixels_of)]

        crc = Signal(16, init=P.CRC_INIT)
        hcount = Signal(range(P.HEADER_SIZE))
        count = Signal(range(max(k_max * cfg.image_bytes, 2) + 1))
        last = Signal()  # the next payload byte is the last one
        length = Signal(16)
        length_m2 = Signal(16)  # LEN − 2, registered: the byte count it is compared with runs every byte
        silence = Signal(range(cfg.timeout_cycles + 1))
        timed_out = Signal()
        seq = Signal(8)
        nimg = Signal(count_bits)  # images in the INFER frame being received
        # the header's checks, decided as its bytes arrive (one byte compared per cycle), so that the
        # cycle that queues a reply only reads flip-flops
        ver_ok, is_hello, is_infer = Signal(), Signal(), Signal()
        len_zero, len_ok, bank_free = Signal(), Signal(), Signal()
        crc_lo_ok, crc_ok = Signal(), Signal()

        # ---- the unpacker: payload bytes in, pixels of `bits` bits out, one per cycle, into the bank.
        # A byte comes at most every 10 bit times (≥ 40 cycles) and holds at most 8 pixels, so the bit
        # register is always drained before the next byte; each image starts on a byte boundary, so
        # the bits after an image's last pixel are padding and are dropped.
        acc = Signal(bits + 8)
        acc_n = Signal(range(bits + 9))
        take = Signal()  # a payload byte goes into the bit register this cycle
        px = Signal(range(n_px))
        waddr = Signal(range(BANKS * bank_px))
        m.d.comb += [wr.addr.eq(waddr), wr.data.eq(acc[:bits])]
        with m.If(take):
            m.d.sync += [acc.eq(acc | (byte << acc_n)), acc_n.eq(acc_n + 8)]
        with m.Elif(acc_n >= bits):
            m.d.comb += wr.en.eq(1)
            m.d.sync += [waddr.eq(waddr + 1), px.eq(px + 1), acc.eq(acc >> bits), acc_n.eq(acc_n - bits)]
            with m.If(px == n_px - 1):
                m.d.sync += [px.eq(0), acc.eq(0), acc_n.eq(0)]

        # replies are queued one cycle after the decision, from registers
        post_en = Signal()
        post_data = Signal(18)
        self._posting = post_en
        m.d.sync += post_en.eq(0)
        m.d.comb += [replies.w_data.eq(post_data), replies.w_en.eq(post_en)]

        def post(kind, code=0):
            # dropped when the queue is full (only possible with noise or a misbehaving host)
            m.d.sync += [post_en.eq(1), post_data.eq(Cat(Const(kind, 2), seq, Const(code, 8)))]

        # the silence counter runs in every receiving state; its comparison is registered
        m.d.sync += [silence.eq(Mux(got, 0, silence + 1)), timed_out.eq(~got & (silence == cfg.timeout_cycles - 1))]

        self._rx_hunting = Signal()
        self._rx_receiving = Signal()
        valid_lengths = [k * cfg.image_bytes for k in range(1, k_max + 1)]

        with m.FSM(name="rx_fsm"):
            with m.State("HUNT"):
                m.d.comb += self._rx_hunting.eq(1)
                m.d.sync += [hcount.eq(0), crc.eq(P.CRC_INIT), seq.eq(0)]
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
                            m.d.sync += length[:8].eq(byte)
                        with m.Case(4):
                            m.d.sync += length[8:].eq(byte)
                    with m.If((hcount == 0) & (byte == P.SOF)):
                        # a start byte where the version belongs: the previous 0xA5 was noise; restart here
                        m.d.sync += [hcount.eq(0), crc.eq(P.CRC_INIT)]
                    with m.Elif(hcount == P.HEADER_SIZE - 2):
                        m.next = "CHECK_LENGTH"
                with m.Elif(timed_out):
                    m.next = "TIMEOUT"

            with m.State("CHECK_LENGTH"):
                # LEN against the lengths an INFER may have (k whole images, 1 ≤ k ≤ images_per_frame)
                m.d.comb += self._rx_receiving.eq(1)
                m.d.sync += [len_zero.eq(length == 0), len_ok.eq(0), nimg.eq(0), length_m2.eq(length - 2),
                             bank_free.eq(~Mux(wbank == 0, full[0], full[1]))]
                for k, n in enumerate(valid_lengths, start=1):
                    with m.If(length == n):
                        m.d.sync += [len_ok.eq(1), nimg.eq(k)]
                m.next = "CHECK_HEADER"

            with m.State("CHECK_HEADER"):
                m.d.comb += self._rx_receiving.eq(1)
                m.d.sync += [count.eq(0), last.eq(length == 1), px.eq(0), acc_n.eq(0), acc.eq(0),
                             waddr.eq(Mux(wbank == 0, 0, bank_px))]
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
                    with m.Elif(~bank_free):
                        post(_KIND_ERROR, int(P.ErrorCode.BUSY))
                        m.next = "HUNT"
                    with m.Else():
                        m.next = "PAYLOAD"
                with m.Else():
                    post(_KIND_ERROR, int(P.ErrorCode.BAD_TYPE))
                    m.next = "HUNT"

            with m.State("PAYLOAD"):
                m.d.comb += self._rx_receiving.eq(1)
                with m.If(got):
                    m.d.comb += take.eq(1)
                    m.d.sync += [count.eq(count + 1), last.eq(count == length_m2), crc.eq(crc16_next(crc, byte))]
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
                with m.Elif(is_hello):
                    post(_KIND_HELLO)
                with m.Else():
                    # the bank is good (its last pixels were unpacked during the CRC bytes): hand it to the feeder
                    with m.Switch(wbank):
                        for b in range(BANKS):
                            with m.Case(b):
                                m.d.sync += [full[b].eq(1), bank_seq[b].eq(seq), bank_count[b].eq(nimg)]
                    m.d.sync += wbank.eq(wbank + 1)
                m.next = "HUNT"

            with m.State("TIMEOUT"):
                post(_KIND_ERROR, int(P.ErrorCode.TIMEOUT))
                m.next = "HUNT"

    # ------------------------------------------------------------------ transmit side

    def _transmitter(self, m, utx, replies, answers, results, count_bits):
        cfg = self.config
        hello = cfg.hello_info().pack()
        lb = cfg.logit_bytes
        k_max = cfg.images_per_frame
        beat_bytes = max(lb, P.CLASS_BYTES)

        kind = Signal(2)
        seq = Signal(8)
        code = Signal(8)
        images = Signal(count_bits)
        crc = Signal(16)
        index = Signal(range(max(len(hello), P.HEADER_SIZE) + 1))
        beat = Signal(8 * beat_bytes)
        beat_left = Signal(range(beat_bytes + 1))
        beat_index = Signal(range(cfg.num_classes + 2))  # beats taken of the current image
        image = Signal(count_bits)  # images whose class beat has been taken
        tx_idle = Signal()

        hello_byte = _rom(m, "hello_byte", hello, index)
        result_len = _rom(m, "result_len", [k * cfg.result_bytes for k in range(k_max + 1)], images, width=16)
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
                m.d.sync += [index.eq(0), crc.eq(P.CRC_INIT), beat_index.eq(0), beat_left.eq(0), image.eq(0)]
                with m.If(replies.r_rdy):
                    m.d.comb += replies.r_en.eq(1)
                    m.d.sync += [kind.eq(replies.r_data[:2]), seq.eq(replies.r_data[2:10]), code.eq(replies.r_data[10:])]
                    m.next = "HEADER"
                with m.Elif(answers.r_rdy):
                    m.d.comb += answers.r_en.eq(1)
                    m.d.sync += [kind.eq(_KIND_RESULT), seq.eq(answers.r_data[:8]), images.eq(answers.r_data[8:])]
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
                            beat_index.eq(Mux(is_class, 0, beat_index + 1)),
                        ]
                        with m.If(is_class):
                            m.d.sync += image.eq(image + 1)
                with m.Else():
                    m.d.comb += [send.eq(1), add_crc.eq(1), out.eq(beat[:8])]
                    with m.If(utx.bytes.ready):
                        m.d.sync += [beat.eq(beat >> 8), beat_left.eq(beat_left - 1)]
                        with m.If((beat_left == 1) & (beat_index == 0) & (image == images)):
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


def bridge_config_from_report(report: dict, *, clocks_per_bit: BitPeriod, clock_hz: int = 0, baud: int = 0,
                              timeout_cycles: int = 0) -> BridgeConfig:
    """Build the :class:`BridgeConfig` for a generated accelerator from its report.json (docs/HARDWARE_INTERFACE.md)."""
    try:
        return BridgeConfig(
            digest=report["manifest_digest"], input_size=int(report["input_size"]), input_bits=int(report["input_bits"]),
            num_classes=int(report["num_classes"]), result_width=int(report["result_width"]),
            clocks_per_bit=clocks_per_bit, clock_hz=clock_hz, baud=baud,
            cycles_per_inference=int(report.get("cycles_per_inference", 0)), timeout_cycles=timeout_cycles,
            initiation_interval=int(report.get("initiation_interval", 0) or 0),
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


__all__ = ["BANKS", "BridgeConfig", "default_images_per_frame", "Bridge", "BridgedAccelerator", "bridge_config_from_report", "bridge_verilog", "crc16_next"]
