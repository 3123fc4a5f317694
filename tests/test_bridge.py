"""The UART bridge in amaranth.sim: exact reply bytes, CRC logic, and what reaches the accelerator.

A bit-level serial driver and monitor talk to the bridge's rx/tx pins; a
plain Python model of an accelerator sits on its streams (with stalls on
both). The reference for every reply is :func:`bitspike.protocol.encode_frame`.
The configuration exercises 10-bit pixels bit-packed across byte
boundaries (3 pixels in 4 bytes), two images per frame, and 12-bit logits
that must be sign-extended to 2 bytes. Whole-design tests through Verilator and
the pty are in test_board.py.
"""

from __future__ import annotations

import random

import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from bitspike import protocol as P
from bitspike.rtl_templates.bridge import Bridge, BridgeConfig, crc16_next

CPB = 4
CFG = BridgeConfig(digest="5a" * 32, input_size=3, input_bits=10, num_classes=3, result_width=12,
                   clocks_per_bit=CPB, clock_hz=1_000_000, baud=250_000, cycles_per_inference=42, timeout_cycles=200,
                   images_per_frame=2)


def model_logits(px):
    """The stand-in accelerator of this test."""
    logits = [sum(px) - 2000, px[0] - px[1], -px[2]]
    return logits, logits.index(max(logits))


def expected_result(seq, *images):
    payload = b""
    for px in images:
        logits, cls = model_logits(px)
        payload += b"".join(v.to_bytes(2, "little", signed=True) for v in logits) + cls.to_bytes(2, "little")
    return P.encode_frame(P.FrameType.RESULT, seq, payload)


def run_bridge(requests, *, idle_cycles=0, max_cycles=60_000, accel_domain="sync", acc_period=None, ready_p=0.6,
               seed=0, stall_until=0):
    """Send ``requests`` (bytes, with ``None`` meaning "pause idle_cycles"), return (reply bytes, pixels seen, cycles).

    ``cycles`` holds the accelerator-clock cycle of every pixel taken. With ``accel_domain`` other
    than ``sync`` the stand-in accelerator runs on its own clock of period ``acc_period`` (µs).
    The accelerator takes no pixel before its cycle ``stall_until`` (a busy accelerator).
    """
    dut = Bridge(CFG, accel_domain=accel_domain)
    rng = random.Random(seed)
    replies = bytearray()
    pixels_seen, pixel_cycles = [], []
    done = []

    async def host(ctx):
        ctx.set(dut.rx, 1)
        for _ in range(10):
            await ctx.tick()
        for req in requests:
            if req is None:
                for _ in range(idle_cycles):
                    await ctx.tick()
                continue
            for byte in req:
                for level in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                    ctx.set(dut.rx, level)
                    for _ in range(CPB):
                        await ctx.tick()
        # wait for the bridge to go idle (all replies out)
        for _ in range(max_cycles):
            await ctx.tick()
            if ctx.get(dut.idle):
                break
        for _ in range(20 * CPB):
            await ctx.tick()
        done.append(True)

    async def line_monitor(ctx):
        # 8N1 receiver on tx: the reference decoding of what the bridge sends
        while True:
            await ctx.tick()
            if ctx.get(dut.tx) == 0:
                for _ in range(CPB // 2):
                    await ctx.tick()
                byte = 0
                for i in range(8):
                    for _ in range(CPB):
                        await ctx.tick()
                    byte |= ctx.get(dut.tx) << i
                for _ in range(CPB):
                    await ctx.tick()
                assert ctx.get(dut.tx) == 1, "stop bit"
                replies.append(byte)

    async def accelerator(ctx):
        pending = []
        cycle = 0
        while True:
            ready = rng.random() < ready_p and cycle >= stall_until  # stalls on the pixel stream
            ctx.set(dut.pixels.ready, ready)
            # a beat moves on the clock edge where valid and ready are both high
            take = ready and ctx.get(dut.pixels.valid)
            payload = ctx.get(dut.pixels.payload)
            await ctx.tick(accel_domain)
            cycle += 1
            if take:
                pending.append(payload)
                pixels_seen.append(payload)
                pixel_cycles.append(cycle)
            if len(pending) == CFG.input_size:
                ctx.set(dut.pixels.ready, 0)
                logits, cls = model_logits(pending)
                pending = []
                for value in logits + [cls]:
                    ctx.set(dut.results.payload, value & 0xFFF)
                    ctx.set(dut.results.valid, 1)
                    while True:
                        taken = ctx.get(dut.results.ready)
                        await ctx.tick(accel_domain)
                        cycle += 1
                        if taken:
                            break
                    ctx.set(dut.results.valid, 0)
                    for _ in range(rng.randrange(3)):
                        await ctx.tick(accel_domain)
                        cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    if accel_domain != "sync":
        sim.add_clock(acc_period * 1e-6, domain=accel_domain)
    sim.add_testbench(host)
    sim.add_testbench(line_monitor, background=True)
    sim.add_testbench(accelerator, background=True)
    sim.run()
    assert done
    return bytes(replies), pixels_seen, pixel_cycles


def infer_frame(seq, *images):
    return P.encode_frame(P.FrameType.INFER, seq, b"".join(P.pack_image(px, CFG.input_bits) for px in images))


def test_crc_logic_matches_protocol():
    crc_in, byte, crc_out = Signal(16), Signal(8), Signal(16)
    m = Module()
    m.d.comb += crc_out.eq(crc16_next(crc_in, byte))
    rng = random.Random(5)
    cases = [(rng.randrange(1 << 16), rng.randrange(256)) for _ in range(200)]

    async def bench(ctx):
        for c, b in cases:
            ctx.set(crc_in, c)
            ctx.set(byte, b)
            assert ctx.get(crc_out) == P.crc16_update(c, b)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()


def test_inference_reply_is_exact():
    # (the HELLO reply's exact bytes are checked through Verilator in test_board.py: it is long to simulate here)
    px = [1000, 3, 1023]
    replies, seen, _ = run_bridge([infer_frame(6, px)])
    assert replies == expected_result(6, px)
    assert seen == px


def test_bad_frames_never_reach_the_accelerator_and_the_bridge_resyncs():
    px, px2 = [1, 2, 3], [700, 800, 5]
    bad_crc = bytearray(infer_frame(7, px))
    bad_crc[8] ^= 0x01  # a pixel bit: only the CRC can tell
    requests = [
        b"\x00\x13" + bytes([P.SOF]),  # garbage ending in a false start byte
        bytes(bad_crc),
        P.encode_frame(0x44, 9, b""),  # unknown type
        P.encode_frame(P.FrameType.INFER, 10, b"\x00\x00"),  # wrong length: not whole images
        P.encode_frame(P.FrameType.INFER, 14, bytes(3 * CFG.image_bytes)),  # more images than a frame holds
        infer_frame(11, px2),
    ]
    replies, seen, _ = run_bridge(requests)
    items = [i for i in P.FrameDecoder().feed(replies) if isinstance(i, P.Frame)]
    errors = [(f.seq, f.payload[0]) for f in items if f.type == P.FrameType.ERROR]
    assert (7, P.ErrorCode.BAD_CRC) in errors
    assert (9, P.ErrorCode.BAD_TYPE) in errors
    assert (10, P.ErrorCode.BAD_LENGTH) in errors
    assert (14, P.ErrorCode.BAD_LENGTH) in errors
    assert items[-1].encode() == expected_result(11, px2)
    assert seen == px2  # only the good frame's pixels were fed


def test_truncated_frame_times_out_and_is_reported():
    px = [9, 8, 7]
    truncated = infer_frame(12, px)[:7]
    replies, seen, _ = run_bridge([truncated, None, infer_frame(13, px)], idle_cycles=CFG.timeout_cycles + 50)
    items = [i for i in P.FrameDecoder().feed(replies) if isinstance(i, P.Frame)]
    assert [(f.type, f.seq) for f in items] == [(P.FrameType.ERROR, 12), (P.FrameType.RESULT, 13)]
    assert items[0].payload == bytes([P.ErrorCode.TIMEOUT])
    assert seen == px


def test_pixels_reach_the_accelerator_one_per_clock():
    # an accelerator that is always ready takes the image's pixels on consecutive clock cycles
    px = [5, 1023, 77]
    replies, seen, cycles = run_bridge([infer_frame(3, px)], ready_p=1.0)
    assert seen == px
    assert [c - cycles[0] for c in cycles] == list(range(CFG.input_size))
    assert replies == expected_result(3, px)


def test_a_frame_of_several_images_gets_one_result_frame():
    images = [[1, 1023, 512], [300, 0, 77]]
    replies, seen, _ = run_bridge([infer_frame(5, *images), infer_frame(6, images[1])])
    assert replies == expected_result(5, *images) + expected_result(6, images[1])
    assert seen == images[0] + images[1] + images[1]


def test_frames_sent_ahead_are_buffered_and_a_third_is_refused_as_busy():
    # the accelerator is busy for a while: the first frame waits in bank 0, the second in bank 1, and a
    # third finds no free bank (ERROR BUSY); the first two are answered, in order, once it runs
    images = [[i, 2 * i, 1023 - i] for i in range(1, 4)]
    requests = [infer_frame(30 + i, px) for i, px in enumerate(images)]
    replies, seen, _ = run_bridge(requests, stall_until=4_000, ready_p=1.0)
    items = [i for i in P.FrameDecoder().feed(replies) if isinstance(i, P.Frame)]
    assert [(f.type, f.seq) for f in items] == [(P.FrameType.ERROR, 32), (P.FrameType.RESULT, 30),
                                                (P.FrameType.RESULT, 31)]
    assert items[0].payload == bytes([P.ErrorCode.BUSY])
    assert replies.endswith(expected_result(30, images[0]) + expected_result(31, images[1]))
    assert seen == images[0] + images[1]


# two unrelated clocks: the accelerator's period is not a rational multiple with a small denominator
@pytest.mark.parametrize("acc_period, ready_p", [(0.37, 1.0), (0.37, 0.5), (2.71, 0.7)])
def test_clock_domain_crossing_is_bit_exact_and_loses_nothing(acc_period, ready_p):
    # the accelerator on its own clock, faster (0.37 µs) or slower (2.71 µs) than the UART's 1 µs:
    # every pixel crosses once, in order, and every result beat comes back into the reply exactly
    rng = random.Random(int(acc_period * 100))
    images = [[rng.randrange(1024) for _ in range(CFG.input_size)] for _ in range(3)]
    requests = [infer_frame(20 + i, px) for i, px in enumerate(images)]
    replies, seen, cycles = run_bridge(requests, accel_domain="acc", acc_period=acc_period, ready_p=ready_p, seed=3)
    assert seen == [p for px in images for p in px]
    assert replies == b"".join(expected_result(20 + i, px) for i, px in enumerate(images))
    if ready_p == 1.0:  # one pixel per clock of the accelerator's own domain
        for i in range(len(images)):
            c = cycles[i * CFG.input_size:(i + 1) * CFG.input_size]
            assert [x - c[0] for x in c] == list(range(CFG.input_size))


@pytest.mark.parametrize("change, match", [
    ({"digest": "xyz"}, "digest"),
    ({"num_classes": 1}, "num_classes"),
    ({"result_width": 1, "num_classes": 3}, "class index"),
    ({"clocks_per_bit": 2}, "clocks_per_bit"),
    ({"timeout_cycles": 10}, "timeout"),
    ({"images_per_frame": 256}, "images_per_frame"),
    ({"input_bits": 17}, "input_bits"),
])
def test_bad_configuration_is_named(change, match):
    args = dict(digest="00" * 32, input_size=4, input_bits=8, num_classes=3, result_width=8, clocks_per_bit=8)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        BridgeConfig(**args)
