"""The wire protocol: frame encoding, CRC, payloads, and the decoder's resynchronisation."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitspike import protocol as P


def frames_only(items):
    return [i for i in items if isinstance(i, P.Frame)]


def test_crc_is_ccitt_false():
    assert P.crc16(b"123456789") == 0x29B1  # the standard check value
    assert P.crc16(b"") == 0xFFFF
    crc = P.CRC_INIT
    for b in b"bitspike":
        crc = P.crc16_update(crc, b)
    assert crc == P.crc16(b"bitspike")


def test_frame_layout_is_the_documented_one():
    f = P.encode_frame(P.FrameType.INFER, 7, b"\x01\x02\x03")
    assert f[0] == P.SOF and f[1] == P.VERSION and f[2] == 0x02 and f[3] == 7
    assert f[4:6] == b"\x03\x00" and f[6:9] == b"\x01\x02\x03"
    assert int.from_bytes(f[9:11], "little") == P.crc16(f[1:9])
    assert len(f) == P.OVERHEAD + 3


@pytest.mark.parametrize("kwargs, match", [
    ({"frame_type": 256, "seq": 0}, "frame type"),
    ({"frame_type": 1, "seq": -1}, "sequence number"),
    ({"frame_type": 1, "seq": 0, "payload": bytes(P.MAX_PAYLOAD + 1)}, "at most"),
])
def test_unencodable_frames_are_refused(kwargs, match):
    with pytest.raises(P.ProtocolError, match=match):
        P.encode_frame(**kwargs)


def test_round_trip_any_chunking():
    rng = random.Random(1)
    sent = [P.Frame(rng.choice(list(P.FrameType)), rng.randrange(256), bytes(rng.randrange(256) for _ in range(n)))
            for n in (0, 1, 5, 300, 2)]
    stream = b"".join(f.encode() for f in sent)
    for chunk in (1, 2, 7, len(stream)):
        d = P.FrameDecoder()
        got = []
        for i in range(0, len(stream), chunk):
            got += frames_only(d.feed(stream[i : i + chunk]))
        assert got == sent
        assert d.pending == 0


def test_garbage_is_skipped_and_reported():
    good = P.encode_frame(P.FrameType.HELLO, 1)
    d = P.FrameDecoder()
    items = list(d.feed(b"\x00\x11junk" + good))
    assert frames_only(items) == [P.Frame(P.FrameType.HELLO, 1, b"")]
    assert any(isinstance(i, P.LineFault) and i.kind == "garbage" for i in items)


def test_false_start_bytes_in_garbage_do_not_hide_a_frame():
    good = P.encode_frame(P.FrameType.RESULT, 9, b"\x05\x00\x00")
    # garbage ending in a start byte and a plausible header: the decoder must back off byte by byte
    garbage = bytes([P.SOF, P.VERSION, 0x82, 0x09, 0x03, 0x00, P.SOF])
    assert frames_only(P.FrameDecoder().feed(garbage + good)) == [P.Frame(P.FrameType.RESULT, 9, b"\x05\x00\x00")]


def test_bad_crc_frame_is_dropped_and_the_next_one_found():
    bad = bytearray(P.encode_frame(P.FrameType.INFER, 3, b"abcd"))
    bad[7] ^= 0x10
    good = P.encode_frame(P.FrameType.INFER, 4, b"abcd")
    items = list(P.FrameDecoder().feed(bytes(bad) + good))
    assert frames_only(items) == [P.Frame(P.FrameType.INFER, 4, b"abcd")]
    assert any(i.kind == "bad_crc" for i in items if isinstance(i, P.LineFault))


def test_truncated_frame_followed_by_a_good_one():
    first = P.encode_frame(P.FrameType.RESULT, 1, bytes(10))
    good = P.encode_frame(P.FrameType.RESULT, 2, bytes(range(10)))
    assert frames_only(P.FrameDecoder().feed(first[:9] + good)) == [P.Frame(P.FrameType.RESULT, 2, bytes(range(10)))]


def test_impossible_length_does_not_make_the_decoder_wait():
    d = P.FrameDecoder(max_payload=16)
    fake_header = bytes([P.SOF, P.VERSION, 0x82, 0, 0xFF, 0xFF])  # announces 65535 bytes
    good = P.encode_frame(P.FrameType.ERROR, 5, b"\x01")
    items = list(d.feed(fake_header + good))
    assert frames_only(items) == [P.Frame(P.FrameType.ERROR, 5, b"\x01")]
    assert any(i.kind == "too_long" for i in items if isinstance(i, P.LineFault))


def test_other_version_is_not_decoded():
    other = P.encode_frame(P.FrameType.HELLO, 1, version=2)
    items = list(P.FrameDecoder().feed(other))
    assert frames_only(items) == []
    assert any(i.kind == "bad_version" for i in items if isinstance(i, P.LineFault))


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=40), min_size=1, max_size=5),
    garbage=st.lists(st.binary(max_size=12).map(lambda b: bytes(x for x in b if x != P.SOF)), min_size=6, max_size=6),
    cut=st.integers(1, 9),
)
def test_decoder_finds_exactly_the_frames_sent_through_sof_free_garbage(payloads, garbage, cut):
    sent = [P.Frame(P.FrameType.RESULT, i, p) for i, p in enumerate(payloads)]
    stream = garbage[0] + b"".join(f.encode() + garbage[i + 1] for i, f in enumerate(sent))
    d = P.FrameDecoder()
    got = []
    for i in range(0, len(stream), cut):
        got += frames_only(d.feed(stream[i : i + cut]))
    assert got == sent


@settings(max_examples=60, deadline=None)
@given(payload=st.binary(min_size=1, max_size=30), position=st.integers(0, 1000), bit=st.integers(0, 7))
def test_a_single_bit_error_is_never_decoded_as_a_frame(payload, position, bit):
    frame = bytearray(P.encode_frame(P.FrameType.RESULT, 1, payload))
    frame[position % len(frame)] ^= 1 << bit
    got = frames_only(P.FrameDecoder().feed(bytes(frame)))
    assert got == []  # CRC-16 detects every single-bit error


def test_hello_info_round_trip_and_checks():
    info = P.HelloInfo(P.VERSION, "ab" * 32, 784, 8, 10, 3, 12_000_000, 115200, 1234)
    data = info.pack()
    assert len(data) == P.HelloInfo.size()
    assert P.HelloInfo.unpack(data) == info
    assert info.infer_payload_size == 784 and info.result_payload_size == 32
    with pytest.raises(P.ProtocolError, match="expected"):
        P.HelloInfo.unpack(data[:-1])
    with pytest.raises(P.ProtocolError, match="32 bytes"):
        P.HelloInfo(P.VERSION, "ab" * 31, 1, 8, 2, 1, 0, 0, 0).pack()


def test_payload_helpers():
    assert P.pack_pixels([0, 255, 7], 8) == b"\x00\xff\x07"
    assert P.pack_pixels([1023, 1], 10) == b"\xff\x03\x01\x00"
    with pytest.raises(P.ProtocolError, match="does not fit in 8"):
        P.pack_pixels([256], 8)
    assert P.logit_bytes(1) == 1 and P.logit_bytes(16) == 2 and P.logit_bytes(17) == 3
    payload = (-5).to_bytes(3, "little", signed=True) + (7).to_bytes(3, "little", signed=True) + b"\x01\x00"
    assert P.unpack_result(payload, 2, 3) == ([-5, 7], 1)
    with pytest.raises(P.ProtocolError, match="expected 8"):
        P.unpack_result(payload[:-1], 2, 3)
