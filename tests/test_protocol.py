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


def test_unknown_version_is_not_decoded():
    other = P.encode_frame(P.FrameType.HELLO, 1, version=3)
    items = list(P.FrameDecoder().feed(other))
    assert frames_only(items) == []
    assert any(i.kind == "bad_version" for i in items if isinstance(i, P.LineFault))


def test_a_version_1_frame_is_decoded_with_its_version():
    # so the host can say "the board speaks version 1" instead of timing out on what looks like noise
    assert P.VERSION == 2 and 1 in P.FRAMING_VERSIONS
    old = P.encode_frame(P.FrameType.ERROR, 7, bytes([P.ErrorCode.BAD_VERSION]), version=1)
    assert frames_only(P.FrameDecoder().feed(old)) == [P.Frame(P.FrameType.ERROR, 7, b"\x04", version=1)]


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
    info = P.HelloInfo(P.VERSION, "ab" * 32, 784, 8, 10, 3, 12_000_000, 115200, 1234, 1, 2, 1024)
    data = info.pack()
    assert len(data) == P.HelloInfo.size() == 61
    assert P.HelloInfo.unpack(data) == info
    assert info.image_bytes == 784 and info.result_bytes == 32
    assert info.infer_payload_size(3) == 3 * 784 and info.result_payload_size(3) == 96
    with pytest.raises(P.ProtocolError, match="expected"):
        P.HelloInfo.unpack(data[:-1])
    with pytest.raises(P.ProtocolError, match="32 bytes"):
        P.HelloInfo(P.VERSION, "ab" * 31, 1, 8, 2, 1, 0, 0, 0).pack()
    with pytest.raises(P.ProtocolError, match="at least 1"):
        P.HelloInfo.unpack(P.HelloInfo(P.VERSION, "ab" * 32, 4, 8, 2, 1, 0, 0, 0, 0, 2).pack())


def test_images_are_bit_packed_losslessly():
    assert P.pack_image([0, 255, 7], 8) == b"\x00\xff\x07"
    assert P.pack_image([1023, 1], 10) == b"\xff\x07\x00"  # 20 bits: pixel 1 starts at bit 10
    assert P.pack_image([1, 2, 3], 4) == b"\x21\x03"  # two 4-bit pixels per byte, low nibble first
    assert len(P.pack_image([16] * 64, 5)) == P.image_bytes(64, 5) == 40
    with pytest.raises(P.ProtocolError, match="does not fit in 8"):
        P.pack_image([256], 8)
    with pytest.raises(P.ProtocolError, match="does not fit in 5"):
        P.pack_image([32], 5)


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 16), data=st.data())
def test_pack_and_unpack_are_inverse(bits, data):
    pixels = data.draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=1, max_size=40))
    packed = P.pack_image(pixels, bits)
    assert len(packed) == P.image_bytes(len(pixels), bits)
    assert P.unpack_image(packed, len(pixels), bits) == pixels


def test_result_helpers():
    assert P.logit_bytes(1) == 1 and P.logit_bytes(16) == 2 and P.logit_bytes(17) == 3
    payload = (-5).to_bytes(3, "little", signed=True) + (7).to_bytes(3, "little", signed=True) + b"\x01\x00"
    assert P.unpack_result(payload, 2, 3) == ([-5, 7], 1)
    with pytest.raises(P.ProtocolError, match="expected 8"):
        P.unpack_result(payload[:-1], 2, 3)
    second = (9).to_bytes(3, "little", signed=True) + (-1).to_bytes(3, "little", signed=True) + b"\x00\x00"
    assert P.unpack_results(payload + second, 2, 2, 3) == [([-5, 7], 1), ([9, -1], 0)]
    with pytest.raises(P.ProtocolError, match="2 × 8"):
        P.unpack_results(payload, 2, 2, 3)


def test_link_rate_is_set_by_the_busier_direction():
    # 64 five-bit pixels (40 bytes), 10 one-byte logits and a class (12 bytes), 8 images per frame at
    # 3 Mbaud: 41 bytes per image towards the board, 13 back
    ips = P.link_images_per_second(3_000_000, 40, 12, 8)
    assert ips == pytest.approx(300_000 / 41)
    assert P.link_images_per_second(3_000_000, 12, 40, 8) == ips  # whichever direction is busier
    assert P.link_images_per_second(115_200, 64, 12, 1) == pytest.approx(11_520 / 72)
