"""The board driver: one :class:`Board` interface, and :class:`SerialBoard` on pyserial.

A board runs one network. The host first asks who it is (HELLO) and refuses
to go on when the board's manifest digest is not the one it expects; then it
sends images (INFER) and reads back logits and class (RESULT). The frame
format is :mod:`bitspike.protocol` (docs/PROTOCOL.md).

Every read has a deadline, so nothing here can hang. Replies are matched by
sequence number and CRC, so a late, stale or damaged reply is never taken
for the answer to the current request. Faults the protocol can recover from
(a reply lost or damaged on the line, a request the board reports as
damaged or truncated) are retried up to ``retries`` times with a fresh
sequence number; anything else, or running out of retries, raises
:class:`~bitspike.errors.BoardError` saying what happened.

The simulated board (:class:`bitspike.sim.board.SimBoard`) is a
:class:`SerialBoard` on a pseudo-terminal, so tests use this exact code.
"""

from __future__ import annotations

import abc
import logging
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from bitspike import protocol as P
from bitspike.errors import BoardError

log = logging.getLogger(__name__)

__all__ = ["Board", "SerialBoard", "InferResult", "BoardMismatch", "BoardTimeout", "LinkStats"]


class BoardTimeout(BoardError):
    """The board did not answer (completely) before the deadline."""


class BoardMismatch(BoardError):
    """The board runs another network, or speaks another protocol version."""


@dataclass(frozen=True)
class InferResult:
    """One image's answer from the board.

    Attributes
    ----------
    logits
        The last layer's accumulators, in class order.
    cls
        The class index the board computed (argmax, ties to the lowest index).
    latency_s
        Host-measured round trip: request sent to reply decoded.
    attempts
        How many requests it took (1 without faults).
    """

    logits: tuple[int, ...]
    cls: int
    latency_s: float
    attempts: int = 1


@dataclass
class LinkStats:
    """What happened on the line so far (for reports and tests)."""

    frames_sent: int = 0
    frames_received: int = 0
    retries: int = 0
    stale_frames: int = 0
    line_faults: dict[str, int] = field(default_factory=dict)
    board_errors: dict[str, int] = field(default_factory=dict)

    def count_fault(self, kind: str) -> None:
        self.line_faults[kind] = self.line_faults.get(kind, 0) + 1


class Board(abc.ABC):
    """A board (or simulated board) running one bitspike network.

    Subclasses implement :meth:`hello` and :meth:`infer`; everything else
    (checking the network, batches) is shared.
    """

    info: P.HelloInfo | None = None

    @abc.abstractmethod
    def hello(self) -> P.HelloInfo:
        """Ask the board what it runs."""

    @abc.abstractmethod
    def infer(self, pixels: Sequence[int]) -> InferResult:
        """Classify one image, given as its pixels in the accelerator's stream order."""

    def close(self) -> None:
        """Release the line."""

    def connect(self, expected_digest: str | None = None) -> P.HelloInfo:
        """Say hello and check that the board runs the network with ``expected_digest``.

        Raises
        ------
        BoardMismatch
            When the board's manifest digest (or protocol version) differs.
        """
        info = self.hello()
        if info.version != P.VERSION:
            raise BoardMismatch(f"the board speaks protocol version {info.version}, this host speaks {P.VERSION}")
        if expected_digest is not None and info.digest != expected_digest.lower():
            raise BoardMismatch(
                f"the board runs another network: its manifest digest is {info.digest[:16]}…, "
                f"the manifest given is {expected_digest[:16]}…; build and load the bitstream for this manifest "
                f"(bitspike build) or pass the manifest the board was built from"
            )
        return info

    def infer_many(self, images: Iterable[Sequence[int]]) -> list[InferResult]:
        """Classify images one after the other."""
        return [self.infer(px) for px in images]

    def __enter__(self) -> "Board":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SerialBoard(Board):
    """A board on a serial port (pyserial), or anything pyserial can open (a pty).

    Parameters
    ----------
    port
        Device path (``/dev/ttyUSB0``) or a pyserial URL.
    baudrate
        Line rate; must match the bitstream's (``bitspike build --baud``).
    timeout
        Seconds to wait for one complete reply before retrying or giving up.
    retries
        How many times a request is sent again after a recoverable fault.
    serial
        An already open pyserial-like object (tests); ``port`` is then only used in messages.
    """

    #: how long one read call may block; the reply deadline is checked between reads
    READ_SLICE_S = 0.02

    def __init__(self, port: str, *, baudrate: int = 115200, timeout: float = 1.0, retries: int = 2, serial=None):
        if timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, not {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be ≥ 0, not {retries}")
        self.port = port
        self.baudrate = baudrate
        self.timeout = timeout
        self.retries = retries
        self.stats = LinkStats()
        self._seq = 0
        self._decoder = P.FrameDecoder(max_payload=max(P.HelloInfo.size(), 1))
        if serial is None:
            import serial as pyserial

            try:
                serial = pyserial.Serial(port, baudrate=baudrate, timeout=self.READ_SLICE_S, write_timeout=timeout)
            except (pyserial.SerialException, OSError, ValueError) as exc:
                raise BoardError(f"cannot open serial port {port!r}: {exc}") from exc
        self._serial = serial
        try:  # bytes left over from before we opened the port are no answer to anything
            serial.reset_input_buffer()
        except Exception:  # noqa: BLE001 - a transport without an input buffer: stale frames are rejected by seq anyway
            pass

    def __repr__(self) -> str:
        return f"SerialBoard({self.port!r}, baudrate={self.baudrate}, timeout={self.timeout}, retries={self.retries})"

    def close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            finally:
                self._serial = None

    # ---- the request/reply loop

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _write(self, frame: bytes) -> None:
        import serial as pyserial

        try:
            self._serial.write(frame)
            self._serial.flush()
        except (pyserial.SerialException, OSError) as exc:
            raise BoardError(f"cannot write to {self.port!r}: {exc}") from exc
        self.stats.frames_sent += 1

    def _read_some(self, deadline: float) -> bytes:
        import serial as pyserial

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b""
        self._serial.timeout = min(self.READ_SLICE_S, remaining)
        try:
            waiting = self._serial.in_waiting
            return self._serial.read(max(1, waiting))
        except (pyserial.SerialException, OSError) as exc:
            raise BoardError(f"cannot read from {self.port!r}: {exc}") from exc

    def _exchange(self, ftype: P.FrameType, payload: bytes, reply_type: P.FrameType, reply_len: int) -> tuple[P.Frame, int]:
        """Send one request and return (its reply, attempts), retrying recoverable faults."""
        if self._serial is None:
            raise BoardError(f"board on {self.port!r} is closed")
        problems: list[str] = []
        for attempt in range(1, self.retries + 2):
            if attempt > 1:
                self.stats.retries += 1
                self._decoder.reset()
                try:
                    self._serial.reset_input_buffer()
                except Exception:  # noqa: BLE001 - not every transport has one; stale frames are rejected by seq anyway
                    pass
            seq = self._next_seq()
            self._write(P.encode_frame(ftype, seq, payload))
            problem = self._await_reply(seq, reply_type, reply_len)
            if isinstance(problem, P.Frame):
                return problem, attempt
            problems.append(problem)
            log.info("board %s: attempt %d: %s", self.port, attempt, problem)
        detail = "; ".join(f"attempt {i + 1}: {p}" for i, p in enumerate(problems))
        cls = BoardTimeout if all(p.startswith(("no answer", "no valid answer", "truncated")) for p in problems) else BoardError
        raise cls(f"board on {self.port!r} gave no valid {reply_type.name} reply to {ftype.name} after {len(problems)} attempt(s): {detail}")

    def _await_reply(self, seq: int, reply_type: P.FrameType, reply_len: int) -> P.Frame | str:
        """Read until the reply to ``seq`` arrives (returned) or a reason to retry (a string)."""
        deadline = time.monotonic() + self.timeout
        started = time.monotonic()
        faults_before = sum(self.stats.line_faults.values())
        while time.monotonic() < deadline:
            chunk = self._read_some(deadline)
            if not chunk:
                continue
            for item in self._decoder.feed(chunk):
                if isinstance(item, P.LineFault):
                    self.stats.count_fault(item.kind)
                    log.debug("board %s: line fault %s", self.port, item)
                    continue
                self.stats.frames_received += 1
                if item.seq != seq:
                    # a late reply to an earlier request, or noise that happened to pass the CRC
                    self.stats.stale_frames += 1
                    continue
                if item.type == P.FrameType.ERROR:
                    code = item.payload[0] if item.payload else 0
                    try:
                        name = P.ErrorCode(code).name
                        text = P.ERROR_TEXT[P.ErrorCode(code)]
                    except ValueError:
                        name, text = f"code {code}", f"the board reported unknown error code {code}"
                    self.stats.board_errors[name] = self.stats.board_errors.get(name, 0) + 1
                    if code == P.ErrorCode.BAD_VERSION:
                        raise BoardMismatch(f"board on {self.port!r}: {text} (this host speaks version {P.VERSION})")
                    if code in (P.ErrorCode.BAD_LENGTH, P.ErrorCode.BAD_TYPE):
                        raise BoardMismatch(f"board on {self.port!r}: {text}: it was built for another network or protocol")
                    return f"{text} ({name})"
                if item.type != reply_type or len(item.payload) != reply_len:
                    return (f"reply of type {item.type_name()} with {len(item.payload)} payload bytes, "
                            f"expected {reply_type.name} with {reply_len}")
                return item
        faults = sum(self.stats.line_faults.values()) - faults_before
        partial = self._decoder.pending
        dropped = f" ({faults} damaged or garbage frame(s) dropped)" if faults else ""
        if partial:
            # a damaged frame's own bytes can hold a false start byte: then both are worth saying
            return f"truncated reply: {partial} byte(s) of a frame, then nothing for {self.timeout:.2f} s{dropped}"
        if faults:
            return f"no valid answer within {self.timeout:.2f} s{dropped}"
        return f"no answer within {time.monotonic() - started:.2f} s"

    # ---- public

    def hello(self) -> P.HelloInfo:
        """Ask the board what it runs (and learn the frame sizes for :meth:`infer`)."""
        frame, _ = self._exchange(P.FrameType.HELLO, b"", P.FrameType.HELLO_REPLY, P.HelloInfo.size())
        try:
            info = P.HelloInfo.unpack(frame.payload)
        except P.ProtocolError as exc:
            raise BoardError(f"board on {self.port!r} sent a malformed HELLO_REPLY: {exc}") from exc
        self.info = info
        self._decoder.max_payload = max(P.HelloInfo.size(), info.result_payload_size)
        return info

    def infer(self, pixels: Sequence[int]) -> InferResult:
        """Send one image (pixels in stream order, ``info.input_size`` of them) and read its logits and class.

        Raises
        ------
        BoardError
            No valid reply after the retries, or a reply that contradicts itself.
        """
        info = self.info or self.hello()
        values = list(pixels)
        if len(values) != info.input_size:
            raise BoardError(f"image has {len(values)} pixels, the board's network takes {info.input_size}")
        try:
            payload = P.pack_pixels(values, info.input_bits)
        except P.ProtocolError as exc:
            raise BoardError(str(exc)) from exc
        start = time.perf_counter()
        frame, attempts = self._exchange(P.FrameType.INFER, payload, P.FrameType.RESULT, info.result_payload_size)
        latency = time.perf_counter() - start
        logits, cls = P.unpack_result(frame.payload, info.num_classes, info.logit_bytes)
        best = max(logits)
        if cls >= info.num_classes or cls != logits.index(best):
            raise BoardError(f"board on {self.port!r} answered class {cls}, but its own logits {logits} give class {logits.index(best)}")
        return InferResult(tuple(logits), cls, latency, attempts)
