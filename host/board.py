"""The board driver: one :class:`Board` interface, and :class:`SerialBoard` on pyserial.

A board runs one network. The host first asks who it is (HELLO) and refuses
to go on when the board's manifest digest is not the one it expects, or when
the board speaks another protocol version (a bitstream built by an older
bitspike); then it sends images, several per INFER frame, and reads back
logits and classes (one RESULT frame per INFER). It keeps up to the board's
``window`` INFER frames outstanding, so the line towards the board never
idles while the board computes. The frame format is :mod:`bitspike.protocol`
(docs/PROTOCOL.md).

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
from collections import deque
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
        Host-measured round trip of its frame: INFER sent to RESULT decoded.
    attempts
        How many times its frame was sent (1 without faults).
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
            raise BoardMismatch(_version_text(info.version))
        if expected_digest is not None and info.digest != expected_digest.lower():
            raise BoardMismatch(
                f"the board runs another network: its manifest digest is {info.digest[:16]}…, "
                f"the manifest given is {expected_digest[:16]}…; build and load the bitstream for this manifest "
                f"(bitspike build) or pass the manifest the board was built from"
            )
        return info

    def infer_many(self, images: Iterable[Sequence[int]]) -> list[InferResult]:
        """Classify images (in order); a board driver may send them batched and overlapped."""
        return [self.infer(px) for px in images]

    def __enter__(self) -> "Board":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _version_text(version: int) -> str:
    return (f"the board speaks protocol version {version}, this host speaks version {P.VERSION}: rebuild and load "
            f"the bitstream with this bitspike (bitspike build), or use the bitspike the bitstream was built with")


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
        # 1 … 255: the board puts SEQ 0 on an ERROR for a frame that broke off before its SEQ
        self._seq = self._seq % 255 + 1
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

    def _board_error(self, item: P.Frame) -> str:
        """What an ERROR frame says (a reason to retry), or raise for one that no retry can help."""
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

    def _await_reply(self, seq: int, reply_type: P.FrameType, reply_len: int) -> P.Frame | str:
        """Read until the reply to ``seq`` arrives (returned) or a reason to retry (a string)."""
        deadline = time.monotonic() + self.timeout
        started = time.monotonic()
        faults_before = sum(self.stats.line_faults.values())
        while time.monotonic() < deadline:
            chunk = self._read_some(deadline)
            if not chunk:
                continue
            for item in self._frames(chunk):
                if item.seq != seq:
                    # a late reply to an earlier request, or noise that happened to pass the CRC
                    self.stats.stale_frames += 1
                    continue
                if item.type == P.FrameType.ERROR:
                    return self._board_error(item)
                if item.type != reply_type or len(item.payload) != reply_len:
                    return (f"reply of type {item.type_name()} with {len(item.payload)} payload bytes, "
                            f"expected {reply_type.name} with {reply_len}")
                return item
        faults = sum(self.stats.line_faults.values()) - faults_before
        return self._silence(faults, self._decoder.pending, time.monotonic() - started)

    def _frames(self, chunk: bytes):
        """The whole frames in ``chunk`` (line faults counted and skipped); a frame of another protocol
        version raises :class:`BoardMismatch`: a board built by another bitspike rejects our frames."""
        for item in self._decoder.feed(chunk):
            if isinstance(item, P.LineFault):
                self.stats.count_fault(item.kind)
                log.debug("board %s: line fault %s", self.port, item)
                continue
            self.stats.frames_received += 1
            if item.version != P.VERSION:
                raise BoardMismatch(f"board on {self.port!r}: {_version_text(item.version)}")
            yield item

    def _silence(self, faults: int, partial: int, waited: float) -> str:
        """Why no answer came in the timeout: ``faults`` frames dropped meanwhile, ``partial`` bytes pending."""
        dropped = f" ({faults} damaged or garbage frame(s) dropped)" if faults else ""
        if partial:
            # a damaged frame's own bytes can hold a false start byte: then both are worth saying
            return f"truncated reply: {partial} byte(s) of a frame, then nothing for {self.timeout:.2f} s{dropped}"
        if faults:
            return f"no valid answer within {self.timeout:.2f} s{dropped}"
        return f"no answer within {waited:.2f} s"

    # ---- public

    def hello(self) -> P.HelloInfo:
        """Ask the board what it runs (and learn the frame sizes for :meth:`infer`)."""
        frame, _ = self._exchange(P.FrameType.HELLO, b"", P.FrameType.HELLO_REPLY, P.HelloInfo.size())
        try:
            info = P.HelloInfo.unpack(frame.payload)
        except P.ProtocolError as exc:
            raise BoardError(f"board on {self.port!r} sent a malformed HELLO_REPLY: {exc}") from exc
        self.info = info
        self._decoder.max_payload = max(P.HelloInfo.size(), info.result_payload_size(info.images_per_frame))
        return info

    def _packed(self, info: P.HelloInfo, pixels: Sequence[int]) -> bytes:
        values = list(pixels)
        if len(values) != info.input_size:
            raise BoardError(f"image has {len(values)} pixels, the board's network takes {info.input_size}")
        try:
            return P.pack_image(values, info.input_bits)
        except P.ProtocolError as exc:
            raise BoardError(str(exc)) from exc

    def infer(self, pixels: Sequence[int]) -> InferResult:
        """Send one image (pixels in stream order, ``info.input_size`` of them) and read its logits and class.

        Raises
        ------
        BoardError
            No valid reply after the retries, or a reply that contradicts itself.
        """
        return self.infer_many([pixels])[0]

    def infer_many(self, images: Iterable[Sequence[int]], *, images_per_frame: int | None = None,
                   window: int | None = None) -> list[InferResult]:
        """Classify ``images`` (each in stream order), batched into frames and overlapped on the line.

        Images go ``images_per_frame`` to an INFER frame (default and maximum: the board's), and up
        to ``window`` frames (default and maximum: the board's) are outstanding at once: the next
        frame is sent as soon as one is answered, so while the board computes one frame the next is
        already on the wire. Answers are matched to frames by sequence number. A frame whose answer
        is lost, damaged or refused as recoverable (BAD_CRC, TIMEOUT, BUSY) is sent again with a
        fresh sequence number, at most ``retries`` times; its images' :attr:`InferResult.attempts`
        say how many sends it took.

        Raises
        ------
        BoardError
            An image that does not fit, a frame with no valid answer after the retries, or an
            answer that contradicts itself (:class:`BoardTimeout` when every attempt of the failed
            frame went unanswered; :class:`BoardMismatch` when the board was built for another
            network or protocol).
        """
        info = self.info or self.hello()
        images = list(images)
        packed = [self._packed(info, px) for px in images]  # every image is checked before anything is sent
        per_frame = info.images_per_frame if images_per_frame is None else images_per_frame
        win = info.window if window is None else window
        if not 1 <= per_frame <= info.images_per_frame:
            raise BoardError(f"images_per_frame must be 1 … {info.images_per_frame} (the board's), not {per_frame}")
        if not 1 <= win <= info.window:
            raise BoardError(f"window must be 1 … {info.window} frame(s) (the board's), not {win}")
        if self._serial is None:
            raise BoardError(f"board on {self.port!r} is closed")
        frames = [list(range(i, min(i + per_frame, len(images)))) for i in range(0, len(images), per_frame)]
        results: list[InferResult | None] = [None] * len(images)
        todo = deque(range(len(frames)))
        attempts = [0] * len(frames)
        problems: list[list[str]] = [[] for _ in frames]
        outstanding: dict[int, tuple[int, float, float, int]] = {}  # seq -> (frame, sent at, deadline, faults then)

        def fail(f: int, problem: str) -> None:
            problems[f].append(problem)
            log.info("board %s: frame %d attempt %d: %s", self.port, f, attempts[f], problem)
            if attempts[f] > self.retries:
                detail = "; ".join(f"attempt {i + 1}: {p}" for i, p in enumerate(problems[f]))
                timeouts = all(p.startswith(("no answer", "no valid answer", "truncated")) for p in problems[f])
                raise (BoardTimeout if timeouts else BoardError)(
                    f"board on {self.port!r} gave no valid RESULT reply to INFER (images {frames[f][0]} … "
                    f"{frames[f][-1]}) after {attempts[f]} attempt(s): {detail}")
            self.stats.retries += 1
            todo.appendleft(f)

        while todo or outstanding:
            while todo and len(outstanding) < win:
                f = todo.popleft()
                seq = self._next_seq()
                while seq in outstanding:
                    seq = self._next_seq()
                attempts[f] += 1
                sent = time.perf_counter()
                self._write(P.encode_frame(P.FrameType.INFER, seq, b"".join(packed[i] for i in frames[f])))
                outstanding[seq] = (f, sent, time.monotonic() + self.timeout, sum(self.stats.line_faults.values()))
            deadline = min(v[2] for v in outstanding.values())
            chunk = self._read_some(deadline)
            for item in self._frames(chunk):
                if item.seq not in outstanding:
                    self.stats.stale_frames += 1  # a late answer to a frame already sent again, or noise
                    continue
                f, sent, _, _ = outstanding.pop(item.seq)
                if item.type == P.FrameType.ERROR:
                    fail(f, self._board_error(item))
                    continue
                n = len(frames[f])
                if item.type != P.FrameType.RESULT or len(item.payload) != info.result_payload_size(n):
                    fail(f, f"reply of type {item.type_name()} with {len(item.payload)} payload bytes, "
                            f"expected RESULT with {info.result_payload_size(n)}")
                    continue
                latency = time.perf_counter() - sent
                for i, (logits, cls) in zip(frames[f], P.unpack_results(item.payload, n, info.num_classes,
                                                                         info.logit_bytes)):
                    if cls >= info.num_classes or cls != logits.index(max(logits)):
                        raise BoardError(f"board on {self.port!r} answered class {cls} for image {i}, but its own "
                                         f"logits {logits} give class {logits.index(max(logits))}")
                    results[i] = InferResult(tuple(logits), cls, latency, attempts[f])
            now = time.monotonic()
            for seq in [s for s, v in outstanding.items() if v[2] <= now]:
                f, _, _, faults_before = outstanding.pop(seq)
                faults = sum(self.stats.line_faults.values()) - faults_before
                partial = self._decoder.pending
                if not outstanding:
                    self._decoder.reset()  # nothing else is on its way: a partial frame is all that is left of it
                fail(f, self._silence(faults, partial, self.timeout))
        return results  # type: ignore[return-value]
