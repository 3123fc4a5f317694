"""The serial wire protocol between the host and a board (documented in docs/PROTOCOL.md).

One module is the single source of truth for the frame format: the host driver
(:mod:`bitspike.host.board`) encodes and decodes with it, and the UART bridge
generator (:mod:`bitspike.rtl_templates.bridge`) takes its constants from it.
No torch, no amaranth: it imports in milliseconds.

Frame (all multi-byte fields little-endian)::

    SOF(0xA5) | VER | TYPE | SEQ | LEN_LO | LEN_HI | PAYLOAD[LEN] | CRC_LO | CRC_HI

``CRC`` is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no
reflection, no final xor) over ``VER … PAYLOAD`` (everything but the start
byte and the CRC itself).

Version 2 keeps this frame layout and changes the payloads: an INFER frame
carries up to ``images_per_frame`` images, each bit-packed at the manifest's
input width; a RESULT frame answers all of them; and the host may keep
``window`` INFER frames outstanding (the board double-buffers them).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Iterator

SOF = 0xA5
VERSION = 2
#: versions whose frame layout (header, CRC) this decoder reads, so that a board speaking another
#: version can be recognised and named, never mistaken for line noise
FRAMING_VERSIONS = (1, 2)
HEADER_SIZE = 6  # SOF, VER, TYPE, SEQ, LEN_LO, LEN_HI
TRAILER_SIZE = 2  # CRC_LO, CRC_HI
OVERHEAD = HEADER_SIZE + TRAILER_SIZE
MAX_PAYLOAD = 0xFFFF
CRC_INIT = 0xFFFF
CRC_POLY = 0x1021
CLASS_BYTES = 2  # the class index in a RESULT frame


class FrameType(IntEnum):
    """Frame types. Requests have the top bit clear, their replies set it."""

    HELLO = 0x01  #: host → board, empty payload
    INFER = 0x02  #: host → board, one or more images, bit-packed
    HELLO_REPLY = 0x81  #: board → host, :class:`HelloInfo`
    RESULT = 0x82  #: board → host, per image: logits then class
    ERROR = 0x7F  #: board → host, ``[code]`` (an :class:`ErrorCode`)


class ErrorCode(IntEnum):
    """Why the board dropped a frame (payload of an ERROR frame)."""

    BAD_CRC = 1  #: the frame's CRC did not match
    BAD_LENGTH = 2  #: LEN is not the length this frame type must have
    BAD_TYPE = 3  #: unknown frame type
    BAD_VERSION = 4  #: the frame's protocol version is not the board's
    TIMEOUT = 5  #: the frame stopped arriving before it was complete (truncated)
    BUSY = 6  #: both input buffers were full (the host sent more than ``window`` frames ahead)


ERROR_TEXT = {
    ErrorCode.BAD_CRC: "the board received a frame with a bad CRC",
    ErrorCode.BAD_LENGTH: "the board received a frame with a length its type does not allow",
    ErrorCode.BAD_TYPE: "the board received a frame of unknown type",
    ErrorCode.BAD_VERSION: "the board speaks another protocol version",
    ErrorCode.TIMEOUT: "the board received a truncated frame (bytes stopped arriving mid-frame)",
    ErrorCode.BUSY: "the board had no free input buffer for a frame (more frames were in flight than its window)",
}


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16_update(crc: int, byte: int) -> int:
    """One byte of CRC-16/CCITT-FALSE (the bridge computes the same, byte by byte)."""
    return ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]


def crc16(data: bytes, crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (``crc16(b"123456789") == 0x29B1``)."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


class ProtocolError(ValueError):
    """Raised for values that cannot be put into a frame (a programming error, not a line fault)."""


@dataclass(frozen=True)
class Frame:
    """A decoded frame."""

    type: int
    seq: int
    payload: bytes
    version: int = VERSION

    def encode(self) -> bytes:
        """The frame's bytes on the wire."""
        return encode_frame(self.type, self.seq, self.payload, version=self.version)

    def type_name(self) -> str:
        try:
            return FrameType(self.type).name
        except ValueError:
            return f"0x{self.type:02X}"


def encode_frame(frame_type: int, seq: int, payload: bytes = b"", *, version: int = VERSION) -> bytes:
    """Encode one frame.

    Parameters
    ----------
    frame_type
        A :class:`FrameType` (any byte is accepted, so tests can send unknown types).
    seq
        Sequence number 0 … 255; the board echoes it in its reply.
    payload
        At most :data:`MAX_PAYLOAD` bytes.
    version
        Protocol version byte (tests send other versions).
    """
    for name, value in (("frame type", frame_type), ("sequence number", seq), ("version", version)):
        if not 0 <= int(value) <= 0xFF:
            raise ProtocolError(f"{name} must be a byte (0 … 255), not {value}")
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload is {len(payload)} bytes, at most {MAX_PAYLOAD} fit in a frame")
    body = bytes([version, frame_type, seq]) + struct.pack("<H", len(payload)) + payload
    return bytes([SOF]) + body + struct.pack("<H", crc16(body))


@dataclass(frozen=True)
class LineFault:
    """Something the decoder threw away while resynchronising (for logs and tests)."""

    kind: str  # "garbage" (bytes before a start byte), "bad_crc", "bad_version", "too_long"
    data: bytes

    def __str__(self) -> str:
        return f"{self.kind}: {len(self.data)} byte(s) dropped ({self.data[:16].hex()}{'…' if len(self.data) > 16 else ''})"


class FrameDecoder:
    """Incremental decoder with resynchronisation.

    Feed it bytes as they arrive; it yields :class:`Frame` objects and
    :class:`LineFault` notes. Bytes before a start byte are garbage. A
    candidate frame with an unknown version, an impossible length or a bad CRC is
    not trusted: the decoder drops only its start byte and searches again from
    the next byte, so a real frame hidden behind garbage (even garbage that
    contains 0xA5) is still found. Frames of every version in
    :data:`FRAMING_VERSIONS` are returned with their ``version``: the caller
    decides what a frame of an older version means (a board built with an
    older bitspike).

    Parameters
    ----------
    max_payload
        Longest payload to wait for; a header announcing more is a false
        start (so a corrupted LEN cannot make the host wait for bytes that
        never come).
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        if not 0 <= max_payload <= MAX_PAYLOAD:
            raise ProtocolError(f"max_payload must be in 0 … {MAX_PAYLOAD}, not {max_payload}")
        self.max_payload = max_payload
        self._buf = bytearray()

    def __repr__(self) -> str:
        return f"FrameDecoder(max_payload={self.max_payload})"

    @property
    def pending(self) -> int:
        """Bytes held back while waiting for the rest of a frame."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget any partial frame."""
        self._buf.clear()

    def feed(self, data: bytes) -> Iterator[Frame | LineFault]:
        """Add bytes; yield every complete frame and every fault found so far."""
        self._buf += data
        buf = self._buf
        while buf:
            start = buf.find(SOF)
            if start != 0:
                junk = bytes(buf if start < 0 else buf[:start])
                del buf[: len(junk)]
                yield LineFault("garbage", junk)
                continue
            if len(buf) < HEADER_SIZE:
                return
            version, length = buf[1], buf[4] | (buf[5] << 8)
            if version not in FRAMING_VERSIONS:
                yield LineFault("bad_version", bytes(buf[:1]))
                del buf[:1]
                continue
            if length > self.max_payload:
                yield LineFault("too_long", bytes(buf[:1]))
                del buf[:1]
                continue
            total = HEADER_SIZE + length + TRAILER_SIZE
            if len(buf) < total:
                return
            body = bytes(buf[1 : HEADER_SIZE + length])
            crc = buf[total - 2] | (buf[total - 1] << 8)
            if crc16(body) != crc:
                yield LineFault("bad_crc", bytes(buf[:1]))
                del buf[:1]
                continue
            del buf[:total]
            yield Frame(type=body[1], seq=body[2], payload=body[5:], version=version)


# ----------------------------------------------------------------------------------------------
# payloads


@dataclass(frozen=True)
class HelloInfo:
    """What a board says about itself in its HELLO_REPLY (layout fixed by ``_FORMAT``).

    Attributes
    ----------
    version
        Protocol version the board speaks.
    digest
        SHA-256 (hex) of the manifest the bitstream was built from.
    input_size
        Pixels per image (beats of the accelerator's pixel stream).
    input_bits
        Bits per pixel; an image is :attr:`image_bytes` bytes on the wire (bit-packed).
    num_classes
        Logits per result.
    logit_bytes
        Bytes per logit (signed, little-endian) in a RESULT frame.
    clock_hz, baud
        The bridge's clock and serial rate.
    cycles_per_inference
        The generator's predicted latency of one image in accelerator clock cycles.
    images_per_frame
        Most images one INFER frame may carry.
    window
        Most INFER frames the host may have outstanding (sent, not yet answered).
    initiation_interval
        The generator's predicted accelerator cycles between images streamed back to back.
    """

    version: int
    digest: str
    input_size: int
    input_bits: int
    num_classes: int
    logit_bytes: int
    clock_hz: int
    baud: int
    cycles_per_inference: int
    images_per_frame: int = 1
    window: int = 1
    initiation_interval: int = 0

    _FORMAT = "<B32sIBHBIIIHBBI"

    @property
    def image_bytes(self) -> int:
        return image_bytes(self.input_size, self.input_bits)

    @property
    def result_bytes(self) -> int:
        """Bytes of one image's answer in a RESULT payload."""
        return self.num_classes * self.logit_bytes + CLASS_BYTES

    def infer_payload_size(self, images: int = 1) -> int:
        return images * self.image_bytes

    def result_payload_size(self, images: int = 1) -> int:
        return images * self.result_bytes

    def pack(self) -> bytes:
        digest = bytes.fromhex(self.digest)
        if len(digest) != 32:
            raise ProtocolError(f"digest must be 32 bytes (64 hex digits), got {len(digest)} bytes")
        return struct.pack(
            self._FORMAT, self.version, digest, self.input_size, self.input_bits, self.num_classes,
            self.logit_bytes, self.clock_hz, self.baud, self.cycles_per_inference, self.image_bytes,
            self.images_per_frame, self.window, self.initiation_interval,
        )

    @classmethod
    def size(cls) -> int:
        return struct.calcsize(cls._FORMAT)

    @classmethod
    def unpack(cls, payload: bytes) -> "HelloInfo":
        if len(payload) != cls.size():
            raise ProtocolError(f"HELLO_REPLY payload is {len(payload)} bytes, expected {cls.size()}")
        (v, digest, size, bits, classes, lbytes, clk, baud, cycles, ibytes, per_frame, window,
         interval) = struct.unpack(cls._FORMAT, payload)
        info = cls(v, digest.hex(), size, bits, classes, lbytes, clk, baud, cycles, per_frame, window, interval)
        if not 1 <= bits <= 16:
            raise ProtocolError(f"HELLO_REPLY says {bits}-bit pixels, expected 1 … 16")
        if ibytes != info.image_bytes:
            raise ProtocolError(f"HELLO_REPLY says {ibytes} bytes per image for {size} {bits}-bit pixels, "
                                f"expected {info.image_bytes}")
        if per_frame < 1 or window < 1:
            raise ProtocolError(f"HELLO_REPLY says {per_frame} image(s) per frame and a window of {window} "
                                f"frame(s); both must be at least 1")
        return info


def image_bytes(input_size: int, input_bits: int) -> int:
    """Bytes of one image on the wire: its pixels bit-packed, padded to a whole byte."""
    if not 1 <= input_bits <= 16:
        raise ProtocolError(f"input bits must be 1 … 16, not {input_bits}")
    return (input_size * input_bits + 7) // 8


def logit_bytes(result_width: int) -> int:
    """Bytes per logit on the wire for the accelerator's ``result_width``."""
    if not 1 <= result_width <= 64:
        raise ProtocolError(f"result width must be 1 … 64 bits, not {result_width}")
    return (result_width + 7) // 8


def pack_image(values, input_bits: int) -> bytes:
    """One image on the wire: the pixels (already in the accelerator's stream order) bit-packed.

    Pixel ``i`` occupies bits ``i·B … i·B + B − 1`` of the image's bit string (``B`` = ``input_bits``),
    bit 0 being the least significant bit of the first byte; the last byte is padded with zeros.
    Lossless: every value ``0 … 2^B − 1`` is kept exactly.
    """
    if not 1 <= input_bits <= 16:
        raise ProtocolError(f"input bits must be 1 … 16, not {input_bits}")
    top = (1 << input_bits) - 1
    acc = 0
    n = 0
    for v in values:
        v = int(v)
        if not 0 <= v <= top:
            raise ProtocolError(f"pixel value {v} does not fit in {input_bits} unsigned bits (0 … {top})")
        acc |= v << (n * input_bits)
        n += 1
    return acc.to_bytes((n * input_bits + 7) // 8, "little")


def unpack_image(data: bytes, input_size: int, input_bits: int) -> list[int]:
    """The pixels of one packed image (the inverse of :func:`pack_image`)."""
    if len(data) != image_bytes(input_size, input_bits):
        raise ProtocolError(f"a packed image of {input_size} {input_bits}-bit pixels is "
                            f"{image_bytes(input_size, input_bits)} bytes, not {len(data)}")
    acc = int.from_bytes(data, "little")
    top = (1 << input_bits) - 1
    return [(acc >> (i * input_bits)) & top for i in range(input_size)]


def unpack_result(payload: bytes, num_classes: int, logit_nbytes: int) -> tuple[list[int], int]:
    """Split one image's answer into (logits, class)."""
    expected = num_classes * logit_nbytes + CLASS_BYTES
    if len(payload) != expected:
        raise ProtocolError(f"RESULT payload is {len(payload)} bytes, expected {expected}")
    logits = [
        int.from_bytes(payload[i * logit_nbytes : (i + 1) * logit_nbytes], "little", signed=True)
        for i in range(num_classes)
    ]
    cls = int.from_bytes(payload[num_classes * logit_nbytes :], "little")
    return logits, cls


def unpack_results(payload: bytes, images: int, num_classes: int, logit_nbytes: int) -> list[tuple[list[int], int]]:
    """Split a RESULT payload answering ``images`` images into one (logits, class) per image, in order."""
    one = num_classes * logit_nbytes + CLASS_BYTES
    if len(payload) != images * one:
        raise ProtocolError(f"RESULT payload is {len(payload)} bytes, expected {images} × {one}")
    return [unpack_result(payload[i * one : (i + 1) * one], num_classes, logit_nbytes) for i in range(images)]


def link_images_per_second(baud: int, image_nbytes: int, result_nbytes: int, images_per_frame: int) -> float:
    """Images per second the serial line carries with full frames and a window that keeps both directions busy.

    The UART is full duplex, so the busier direction sets the rate: with ``k`` images per frame an image
    costs ``(OVERHEAD + k·image_bytes) / k`` bytes towards the board and ``(OVERHEAD + k·result_bytes) / k``
    back, each byte ten bit times (8N1)::

        images/s = baud / 10 / max(image_bytes + OVERHEAD/k, result_bytes + OVERHEAD/k)
    """
    k = images_per_frame
    per_image = max(image_nbytes, result_nbytes) + OVERHEAD / k
    return baud / 10 / per_image
