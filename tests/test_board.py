"""The board driver through the simulated board's pty: answers, and every line fault of issue 6.

The simulated board runs the real bridge (Verilated) around the co-simulation
engineer's stand-in accelerator (bitspike/testing/standin.py: builds in seconds, known
reference logits, some negative). Every fault is injected in the pty
forwarding thread, so the driver sees exactly what a real serial line would
give it. Each test has hard time bounds: the driver's own timeouts, checked.
"""

from __future__ import annotations

import hashlib
import json
import time
from fractions import Fraction

import numpy as np
import pytest

from bitspike import protocol as P
from bitspike.errors import BoardError
from bitspike.host.board import BoardMismatch, BoardTimeout
from bitspike.testing import standin_reference, standin_verilog
from bitspike.sim.board import DEFAULT_PERIODS, SimBoard

INPUT_SIZE, CLASSES = 16, 4
DIGEST = hashlib.sha256(b"test_board stand-in network").hexdigest()
TIMEOUT = 0.4


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    gen = tmp_path_factory.mktemp("board_standin")
    report = standin_verilog(gen, input_size=INPUT_SIZE, num_classes=CLASSES)
    report["manifest_digest"] = DIGEST
    (gen / "report.json").write_text(json.dumps(report))
    b = SimBoard.from_generated(gen, timeout=TIMEOUT, retries=2)
    b.connect(DIGEST)
    yield b
    b.close()


@pytest.fixture(autouse=True)
def clean_line(request):
    """Each test starts and ends on a quiet, resynchronised line with its own retry budget."""
    yield
    if "board" in request.fixturenames:
        b = request.getfixturevalue("board")
        b.faults.clear()
        time.sleep(0.1)  # let the bridge finish dropping anything half-received (its timeout is ~40 ms)
        b.retries = 2
        b.hello()


def images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, INPUT_SIZE))


def check_answer(result, pixels):
    ref = standin_reference(np.asarray([pixels]), CLASSES)[0]
    assert list(result.logits) == list(ref)
    assert result.cls == int(np.argmax(ref))  # numpy argmax: first maximum, as the hardware


def test_hello_reports_the_network(board):
    info = board.hello()
    assert info.digest == DIGEST
    assert (info.input_size, info.input_bits, info.num_classes, info.logit_bytes) == (INPUT_SIZE, 8, CLASSES, 3)
    assert (info.images_per_frame, info.window) == (8, 2)
    assert info.version == P.VERSION


def test_answers_match_the_reference(board):
    px = images(30, seed=1)
    px[0] = 0  # all-zero image: every logit but the first is negative (sign extension on the wire)
    px[1] = 255
    for row in px:
        result = board.infer(row)
        check_answer(result, row)
        assert result.attempts == 1
    assert standin_reference(px[:1], CLASSES).min() < 0


def test_batched_and_overlapped_answers_match_the_reference(board):
    # 37 images: four full frames of 8 and one of 5, two frames in flight at a time
    px = images(37, seed=20)
    sent = board.stats.frames_sent
    results = board.infer_many(px)
    assert len(results) == 37
    for result, row in zip(results, px):
        check_answer(result, row)
        assert result.attempts == 1
    assert board.stats.frames_sent - sent == 5


def test_crc_error_mid_window_is_retried_and_the_rest_is_answered(board):
    px = images(24, seed=21)
    board.faults.pass_next("to_board")  # the first frame goes through; the second's pixel byte is damaged
    board.faults.flip_next("to_board", offset=P.HEADER_SIZE + 3)
    results = board.infer_many(px)
    for result, row in zip(results, px):
        check_answer(result, row)
    assert [r.attempts for r in results] == [1] * 8 + [2] * 8 + [1] * 8
    assert board.stats.board_errors.get("BAD_CRC", 0) >= 1


def test_damaged_answer_mid_window_is_retried(board):
    px = images(24, seed=22)
    board.faults.pass_next("to_host")
    board.faults.flip_next("to_host", offset=P.HEADER_SIZE + 5)  # the second RESULT: only its CRC can tell
    results = board.infer_many(px)
    for result, row in zip(results, px):
        check_answer(result, row)
    assert [r.attempts for r in results] == [1] * 8 + [2] * 8 + [1] * 8


def test_crc_error_mid_window_without_retries_fails_clearly(board):
    board.retries = 0
    board.faults.pass_next("to_board")
    board.faults.flip_next("to_board", offset=-1)
    with pytest.raises(BoardError, match=r"images 8 … 15\).*bad CRC"):
        board.infer_many(images(24, seed=23))


def test_board_with_another_network_is_refused(board):
    other = hashlib.sha256(b"another network").hexdigest()
    with pytest.raises(BoardMismatch, match="another network"):
        board.connect(other)


def test_wrong_image_size_is_refused_before_sending(board):
    sent = board.stats.frames_sent
    with pytest.raises(BoardError, match="17 pixels.*takes 16"):
        board.infer(list(range(17)))
    with pytest.raises(BoardError, match="does not fit in 8"):
        board.infer([256] + [0] * 15)
    assert board.stats.frames_sent == sent


def test_garbage_towards_the_board_is_skipped(board):
    row = images(1, seed=2)[0]
    board.faults.inject("to_board", bytes(range(0x10, 0x60)))  # no start byte: the bridge just hunts past it
    result = board.infer(row)
    check_answer(result, row)
    assert result.attempts == 1


def test_garbage_with_start_bytes_towards_the_board_resyncs(board):
    row = images(1, seed=3)[0]
    rng = np.random.default_rng(3)
    garbage = bytes(rng.integers(0, 256, 40).astype(np.uint8)) + bytes([P.SOF, 0x01, 0x02, P.SOF])
    board.faults.inject("to_board", garbage)
    result = board.infer(row)  # may take a retry if the garbage swallowed the request's start
    check_answer(result, row)


def test_garbage_towards_the_host_is_skipped(board):
    row = images(1, seed=4)[0]
    before = board.stats.line_faults.get("garbage", 0)
    # noise with start bytes and a fake header: the decoder must drop it and still find the real reply
    board.faults.inject("to_host", b"\x00\xff" + bytes([P.SOF, P.VERSION, 0x82, 0x00, 0x02, 0x00]) + b"zz")
    result = board.infer(row)
    check_answer(result, row)
    assert result.attempts == 1
    assert sum(board.stats.line_faults.values()) > 0 and board.stats.line_faults.get("garbage", 0) >= before


def test_crc_error_towards_the_board_is_reported(board):
    row = images(1, seed=5)[0]
    board.retries = 0
    board.faults.flip_next("to_board", offset=P.HEADER_SIZE + 3)  # a pixel byte: only the CRC can tell
    with pytest.raises(BoardError, match="bad CRC"):
        board.infer(row)
    assert board.stats.board_errors.get("BAD_CRC", 0) >= 1


def test_crc_error_towards_the_board_is_retried(board):
    row = images(1, seed=6)[0]
    board.faults.flip_next("to_board", offset=-1)  # the CRC itself
    result = board.infer(row)
    check_answer(result, row)
    assert result.attempts == 2


def test_crc_error_towards_the_host_is_never_taken_as_an_answer(board):
    row = images(1, seed=7)[0]
    board.retries = 0
    board.faults.flip_next("to_host", offset=P.HEADER_SIZE)  # first logit byte
    start = time.monotonic()
    with pytest.raises(BoardTimeout, match="damaged"):
        board.infer(row)
    assert time.monotonic() - start < TIMEOUT + 0.5
    board.retries = 1
    board.faults.flip_next("to_host", offset=P.HEADER_SIZE + 1)
    result = board.infer(row)
    check_answer(result, row)
    assert result.attempts == 2


def test_truncated_request_is_reported_by_the_board(board):
    row = images(1, seed=8)[0]
    board.retries = 0
    # the board's answer comes after its own frame timeout in simulated clocks, which a loaded machine
    # simulates slowly: give the driver room to hear it (this test is about who reports, not how fast)
    board.timeout = 4.0
    try:
        board.faults.truncate_next("to_board", keep=P.HEADER_SIZE + 5)
        start = time.monotonic()
        with pytest.raises(BoardError, match="truncated"):
            board.infer(row)
        assert time.monotonic() - start < board.timeout + 0.5
    finally:
        board.timeout = TIMEOUT


def test_truncated_request_is_retried(board):
    row = images(1, seed=9)[0]
    board.faults.truncate_next("to_board", keep=3)
    result = board.infer(row)
    check_answer(result, row)
    assert result.attempts == 2


def test_truncated_reply_times_out_clearly(board):
    row = images(1, seed=10)[0]
    board.retries = 0
    board.faults.truncate_next("to_host", keep=P.HEADER_SIZE + 4)
    start = time.monotonic()
    with pytest.raises(BoardTimeout, match="truncated reply"):
        board.infer(row)
    assert time.monotonic() - start < TIMEOUT + 0.5
    board.retries = 1
    board.faults.truncate_next("to_host", keep=2)
    check_answer(board.infer(row), row)


def test_lost_request_is_retried(board):
    row = images(1, seed=11)[0]
    board.faults.drop_next("to_board")
    result = board.infer(row)
    check_answer(result, row)
    assert result.attempts == 2


def test_board_that_stops_answering_times_out_then_recovers(board):
    row = images(1, seed=12)[0]
    board.retries = 1
    board.faults.silence("to_host")
    start = time.monotonic()
    with pytest.raises(BoardTimeout, match="no answer"):
        board.infer(row)
    elapsed = time.monotonic() - start
    assert elapsed < 2 * TIMEOUT + 0.5  # two attempts, each bounded
    board.faults.silence("to_host", on=False)
    check_answer(board.infer(row), row)


def test_stale_reply_is_not_taken_for_the_current_one(board):
    row = images(1, seed=13)[0]
    # a well-formed RESULT with a plausible payload but another sequence number (a late reply)
    fake = P.encode_frame(P.FrameType.RESULT, (board._seq + 100) & 0xFF, bytes(CLASSES * 3) + b"\x00\x00")
    board.faults.inject("to_host", fake)
    before = board.stats.stale_frames
    result = board.infer(row)
    check_answer(result, row)
    assert board.stats.stale_frames == before + 1


@pytest.mark.parametrize(
    "frame, code",
    [
        (P.encode_frame(P.FrameType.INFER, 0x33, bytes(INPUT_SIZE), version=1), P.ErrorCode.BAD_VERSION),
        (P.encode_frame(0x09, 0x33, b""), P.ErrorCode.BAD_TYPE),
        (P.encode_frame(P.FrameType.INFER, 0x33, bytes(INPUT_SIZE + 1)), P.ErrorCode.BAD_LENGTH),
        (P.encode_frame(P.FrameType.HELLO, 0x33, b"x"), P.ErrorCode.BAD_LENGTH),
    ],
)
def test_bridge_reports_bad_frames_with_their_sequence_number(board, frame, code):
    ser = board._serial
    ser.reset_input_buffer()
    ser.write(frame)
    decoder = P.FrameDecoder()
    deadline = time.monotonic() + TIMEOUT
    got = []
    while time.monotonic() < deadline and not got:
        got = [f for f in decoder.feed(ser.read(max(1, ser.in_waiting))) if isinstance(f, P.Frame)]
    assert got, "no ERROR frame within the timeout"
    assert got[0].type == P.FrameType.ERROR and got[0].seq == 0x33 and got[0].payload == bytes([code])


def test_driver_raises_clearly_for_bad_length_from_mismatched_host(board):
    with pytest.raises(BoardMismatch, match="another network"):
        board._exchange(P.FrameType.INFER, bytes(INPUT_SIZE - 1), P.FrameType.RESULT, CLASSES * 3 + 2)


def test_a_version_1_board_is_named(tmp_path):
    """A board built before protocol v2 answers our frames with ERROR BAD_VERSION in its own (v1) frames."""
    import os
    import pty
    import threading
    import tty

    from bitspike.host.board import SerialBoard

    master, slave = pty.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def v1_bridge():  # what the v1 bridge sends for any frame of another version: ERROR BAD_VERSION, its SEQ
        decoder = P.FrameDecoder()
        while not stop.is_set():
            ready = select.select([master], [], [], 0.02)[0]
            if not ready:
                continue
            for item in decoder.feed(os.read(master, 4096)):
                if isinstance(item, P.Frame):
                    os.write(master, P.encode_frame(P.FrameType.ERROR, item.seq, bytes([P.ErrorCode.BAD_VERSION]), version=1))

    import select

    thread = threading.Thread(target=v1_bridge, daemon=True)
    thread.start()
    try:
        b = SerialBoard(os.ttyname(slave), baudrate=3_000_000, timeout=TIMEOUT, retries=2)
        start = time.monotonic()
        with pytest.raises(BoardMismatch, match="protocol version 1, this host speaks version 2"):
            b.connect(DIGEST)
        assert time.monotonic() - start < TIMEOUT  # at once, no retries
        b.close()
    finally:
        stop.set()
        thread.join(2)
        os.close(master)
        os.close(slave)


def test_unopenable_port_is_a_board_error():
    from bitspike.host.board import SerialBoard

    with pytest.raises(BoardError, match="cannot open serial port"):
        SerialBoard("/dev/does-not-exist-bitspike")


def test_hello_reply_bytes_are_exactly_the_baked_in_constant(board):
    ser = board._serial
    ser.reset_input_buffer()
    ser.write(P.encode_frame(P.FrameType.HELLO, 0x42))
    expected = P.encode_frame(P.FrameType.HELLO_REPLY, 0x42, board.bridge_config.hello_info().pack())
    got = b""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and len(got) < len(expected):
        got += ser.read(max(1, ser.in_waiting))
    assert got == expected


# ---------------------------------------------------------------- `bitspike infer` on generated networks


def test_infer_cli_on_a_generated_network(tmp_path):
    """The whole path: generator → bridge → Verilator → pty → driver, compared with the golden model."""
    from bitspike.cli import main
    from bitspike.testing import random_mlp

    model = tmp_path / "mlp.bsm"
    random_mlp(3, sizes=(64, 16, 10), w_bits=[2], s_bits=[2], timesteps=[2]).save(model)
    summary_path = tmp_path / "infer.json"
    code = main(["infer", str(model), "--board", "sim", "--dataset", "digits", "--samples", "20",
                 "--work-dir", str(tmp_path / "sim"), "--json", str(summary_path), "--quiet"])
    assert code == 0
    summary = json.loads(summary_path.read_text())
    assert summary["samples"] == 20 and summary["agree"] == 20
    assert 0.0 <= summary["accuracy"] <= 1.0 and summary["accuracy"] == summary["golden_accuracy"]
    assert summary["latency_s"] > 0 and summary["images_per_second"] > 0
    assert summary["link"]["retries"] == 0


# two boards in the default run (each bit period is its own Verilator build): the iCEBreaker's 3 Mbaud, the
# fastest link (4 clocks per bit), and the ULX3S's 3 Mbaud in a fractional period (25/3 clocks); Gowin under slow
@pytest.mark.parametrize("board_name", ["icebreaker", pytest.param("tang_nano_9k", marks=pytest.mark.slow),
                                        "ulx3s_85f"])
def test_infer_cli_with_a_built_boards_link_settings(tmp_path, board_name):
    """`infer --board sim --link B`: the bridge at B's default rate and bit period (its clock / the baud rate),
    B's fold, and the accelerator on its own clock behind the bridge's clock-domain crossing."""
    from bitspike.cli import main
    from bitspike.gen.boards import get_board, lut_budget
    from bitspike.testing import random_mlp
    from bitspike.rtl_templates.uart import clocks_per_bit_for, format_bit_period

    spec = get_board(board_name)
    model = tmp_path / "mlp.bsm"
    random_mlp(4, sizes=(64, 16, 10), w_bits=[2], s_bits=[2], timesteps=[2]).save(model)
    summary_path = tmp_path / "infer.json"
    code = main(["infer", str(model), "--board", "sim", "--link", board_name, "--dataset", "digits", "--samples", "4",
                 "--work-dir", str(tmp_path / "sim"), "--json", str(summary_path), "--quiet"])
    assert code == 0
    summary = json.loads(summary_path.read_text())
    assert summary["agree"] == summary["samples"] == 4
    baud = {"icebreaker": 3_000_000, "ulx3s_85f": 3_000_000, "tang_nano_9k": 1_000_000}[board_name]
    cpb = clocks_per_bit_for(spec.clock_hz, baud)
    # the ULX3S's 25 MHz makes 3 Mbaud only in a fractional period: 25/3 clocks, the line simulated as the UART runs it
    assert cpb == {"icebreaker": 4, "ulx3s_85f": Fraction(25, 3), "tang_nano_9k": 27}[board_name]
    link = summary["sim_link"]
    assert {k: link[k] for k in ("board", "clocks_per_bit", "baud", "clock_periods")} == {
        "board": board_name, "clocks_per_bit": format_bit_period(cpb), "baud": baud,
        "clock_periods": list(DEFAULT_PERIODS)}
    assert link["link_cycles"] > 0 and link["images_per_second"] > 0  # simulated board time, measured
    assert summary["board"]["protocol_version"] == 2 and summary["board"]["window"] == 2
    assert (summary["board"]["clock_hz"], summary["board"]["baud"]) == (spec.clock_hz, baud)  # HELLO as the bitstream's
    gen = json.loads((tmp_path / "sim" / "gen" / "report.json").read_text())
    assert gen["max_luts"] == lut_budget(spec)
    # the fold and DSP share `bitspike build --board B` generates (the part's device budget and DSP count)
    from bitspike.gen import generate
    from bitspike.gen.boards import device_budget
    from bitspike.gen.build import _fold_of

    generate(model, tmp_path / "ref", device=device_budget(spec), max_luts=lut_budget(spec),
                   dsp_blocks=spec.capacity.dsp)
    built = json.loads((tmp_path / "ref" / "report.json").read_text())
    assert _fold_of(gen) == _fold_of(built) and gen["estimated_resources"] == built["estimated_resources"]


def test_infer_cli_link_refuses_a_board_without_a_uart(tmp_path, capsys):
    from bitspike.cli import main
    from bitspike.testing import random_mlp

    model = tmp_path / "mlp.bsm"
    random_mlp(3, sizes=(64, 16, 10)).save(model)
    code = main(["infer", str(model), "--board", "sim", "--link", "fomu_pvt", "--dataset", "digits", "--samples", "1"])
    assert code == 1
    assert "--link fomu_pvt" in capsys.readouterr().err


def test_infer_cli_refuses_a_board_port_that_does_not_exist(tmp_path, capsys):
    from bitspike.cli import main
    from bitspike.testing import random_mlp

    model = tmp_path / "mlp.bsm"
    random_mlp(3, sizes=(64, 16, 10)).save(model)
    code = main(["infer", str(model), "--board", "/dev/does-not-exist-bitspike", "--dataset", "digits", "--samples", "2"])
    assert code == 1
    assert "cannot open serial port" in capsys.readouterr().err


@pytest.mark.slow
def test_infer_cli_trained_digits_100_of_100(tmp_path):
    """Issue 6's acceptance: the trained digits model, 100 test images through the serial path, 100/100."""
    from bitspike.cli import main
    from bitspike.host.export import export_run

    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--arch", "mlp", "--epochs", "15", "--out", str(run), "--quiet"]) == 0
    model = tmp_path / "digits.bsm"
    export_run(run, model)
    summary_path = tmp_path / "infer.json"
    # at the iCEBreaker's 3 Mbaud (4 clocks per bit), the accelerator on its own clock
    code = main(["infer", str(model), "--board", "sim", "--link", "icebreaker", "--dataset", "digits", "--samples", "100",
                 "--work-dir", str(tmp_path / "sim"), "--json", str(summary_path), "--quiet"])
    summary = json.loads(summary_path.read_text())
    assert code == 0 and summary["agree"] == 100 and summary["samples"] == 100
    assert summary["board"]["baud"] == 3_000_000 and summary["sim_link"]["clocks_per_bit"] == 4
    assert summary["accuracy"] > 0.85
