"""The simulated board: the Verilated bridge + accelerator behind a pseudo-terminal.

:class:`SimBoard` builds the same design a real board gets (the UART bridge
of :mod:`bitspike.rtl_templates.bridge` around the generated accelerator),
only with a short bit period, runs it under a C++ harness
(``sim/harness/board_main.cpp``) that drives its serial lines, and connects
that to the master side of a ``pty.openpty()`` pair. The driver then opens
the slave path with pyserial, exactly as it opens ``/dev/ttyUSB0``: tests
exercise the real serial code path, framing, CRC and timeouts included.

The forwarding thread between the pty and the harness is where line faults
are injected (:class:`FaultInjector`): garbage bytes, a flipped bit, a
truncated or dropped frame, a board that stops answering.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pty
import select
import subprocess
import threading
import tty
from collections import deque
from pathlib import Path
from fractions import Fraction
from typing import Sequence

from bitspike import protocol as P
from bitspike.errors import HardwareError
from bitspike.host.board import SerialBoard

log = logging.getLogger(__name__)

__all__ = ["SimBoard", "SimulatedLine", "FaultInjector", "build_board_sim"]

HARNESS = Path(__file__).resolve().parent / "harness" / "board_main.cpp"
DIRECTIONS = ("to_board", "to_host")
#: simulated serial bit period (cycles); a build parameter of the bridge
DEFAULT_CLOCKS_PER_BIT = 8
#: the bridge drops a frame after this many byte times of silence mid-frame
TIMEOUT_BYTE_TIMES = 64
#: wall time (ms) of silence mid-frame after which the simulated bridge times out
SIM_TIMEOUT_MS = 40
#: periods (same unit) of the link clock and of the accelerator's own clock in the simulated board:
#: two unrelated clocks, the accelerator's faster, as a PLL makes it on a board (``None``: one clock)
DEFAULT_PERIODS = (1000, 373)
#: the clock domain the accelerator gets when it has its own clock
ACC_DOMAIN = "acc"
#: the rate the driver opens the pty at when no board's rate is simulated (a pty ignores it)
DEFAULT_PTY_BAUD = 3_000_000


class _FrameRules:
    """Applies one-shot rules to the next frames of one direction of a clean byte stream."""

    def __init__(self):
        self.rules: deque[tuple] = deque()
        self.silent = False
        self._pos = -1  # position inside the current frame, -1 outside
        self._total = None
        self._header = bytearray()
        self._rule = None

    def process(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            if self._pos < 0:
                if b != P.SOF:
                    if not self.silent:
                        out.append(b)  # not a frame (should not happen on a clean line)
                    continue
                self._pos, self._total, self._header = 0, None, bytearray()
                self._rule = self.rules.popleft() if self.rules else None
            pos = self._pos
            if pos < P.HEADER_SIZE:
                self._header.append(b)
            if pos == P.HEADER_SIZE - 1:
                self._total = P.HEADER_SIZE + (self._header[4] | (self._header[5] << 8)) + P.TRAILER_SIZE
                if self._rule and self._rule[0] == "flip" and self._rule[1] < 0:  # offset from the end
                    self._rule = ("flip", self._total + self._rule[1], self._rule[2])
            self._pos += 1
            if self._total is not None and self._pos >= self._total:
                self._pos = -1
            if self.silent:
                continue
            rule = self._rule
            if rule is None:
                out.append(b)
            elif rule[0] == "flip":
                out.append(b ^ rule[2] if pos == rule[1] else b)
            elif rule[0] == "truncate":
                if pos < rule[1]:
                    out.append(b)
            elif rule[0] == "pass":
                out.append(b)
            # "drop": nothing
        return bytes(out)


class FaultInjector:
    """Line faults for the simulated board, applied in the forwarding thread.

    ``direction`` is ``"to_board"`` (host requests) or ``"to_host"`` (board
    replies). Rules apply to the next whole frame in that direction, in the
    order they were added.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._rules = {d: _FrameRules() for d in DIRECTIONS}
        self._raw: deque[tuple[str, bytes]] = deque()

    @staticmethod
    def _check(direction: str) -> str:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
        return direction

    def inject(self, direction: str, data: bytes) -> None:
        """Put raw bytes (garbage) on the line now, between frames."""
        with self._lock:
            self._raw.append((self._check(direction), bytes(data)))

    def flip_next(self, direction: str, offset: int, xor: int = 0x40) -> None:
        """Flip bits (``xor``) of the byte at ``offset`` of the next frame (negative: from the end)."""
        if not 1 <= xor <= 0xFF:
            raise ValueError(f"xor must be 1 … 255, not {xor}")
        with self._lock:
            self._rules[self._check(direction)].rules.append(("flip", int(offset), xor))

    def truncate_next(self, direction: str, keep: int) -> None:
        """Deliver only the first ``keep`` bytes of the next frame."""
        with self._lock:
            self._rules[self._check(direction)].rules.append(("truncate", int(keep)))

    def pass_next(self, direction: str, frames: int = 1) -> None:
        """Let the next ``frames`` frames through untouched (so a later rule hits a frame mid-window)."""
        with self._lock:
            self._rules[self._check(direction)].rules.extend([("pass",)] * int(frames))

    def drop_next(self, direction: str) -> None:
        """Lose the next frame entirely."""
        with self._lock:
            self._rules[self._check(direction)].rules.append(("drop",))

    def silence(self, direction: str = "to_host", on: bool = True) -> None:
        """Drop everything in ``direction`` until called again with ``on=False`` (a board that stops answering)."""
        with self._lock:
            self._rules[self._check(direction)].silent = on

    def clear(self) -> None:
        """Remove every pending rule and silence."""
        with self._lock:
            for r in self._rules.values():
                r.rules.clear()
                r.silent = False
            self._raw.clear()

    # ---- used by the forwarding thread

    def _take_raw(self) -> list[tuple[str, bytes]]:
        with self._lock:
            out = list(self._raw)
            self._raw.clear()
            return out

    def _process(self, direction: str, data: bytes) -> bytes:
        with self._lock:
            rules = self._rules[direction]
            return rules.process(data)


class SimulatedLine:
    """A running board simulation whose serial port is the slave side of a pty.

    Parameters
    ----------
    executable
        The Verilated board harness (:func:`build_board_sim`).
    clocks_per_bit
        The bit period the bridge was built with (an integer, or a Fraction: the harness takes ``N/D``).
    fast_forward
        Cycles the harness advances per millisecond of silence in the middle of a frame.
    periods
        ``(link, accelerator)`` clock periods for a design with two clocks, else ``None``.
    """

    def __init__(self, executable: str | os.PathLike, clocks_per_bit: int | Fraction, fast_forward: int,
                 periods: tuple[int, int] | None = None):
        self.faults = FaultInjector()
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        try:
            self._proc = subprocess.Popen(
                [str(executable), str(clocks_per_bit), str(fast_forward), *map(str, periods or ())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
            )
        except OSError as exc:
            os.close(self._master)
            os.close(self._slave)
            raise HardwareError(f"cannot start the simulated board {executable}: {exc}") from exc
        self._stop = threading.Event()
        self.harness_stderr = b""
        self._thread = threading.Thread(target=self._pump, name=f"simboard-{self.port}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"SimulatedLine(port={self.port!r})"

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None and self._thread.is_alive()

    def _pump(self) -> None:
        to_board = self._proc.stdin.fileno()
        from_board = self._proc.stdout.fileno()
        try:
            while not self._stop.is_set():
                for direction, data in self.faults._take_raw():
                    os.write(to_board if direction == "to_board" else self._master, data)
                ready, _, _ = select.select([self._master, from_board], [], [], 0.01)
                if self._master in ready:
                    try:
                        data = os.read(self._master, 4096)
                    except OSError:  # no reader on the slave side for a moment
                        data = b""
                    if data:
                        os.write(to_board, self.faults._process("to_board", data))
                if from_board in ready:
                    data = os.read(from_board, 4096)
                    if not data:
                        log.warning("simulated board exited")
                        return
                    out = self.faults._process("to_host", data)
                    if out:
                        os.write(self._master, out)
        except OSError as exc:  # the harness died: the driver will see silence and time out
            log.warning("simulated board line closed: %s", exc)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the forwarding, end the harness (EOF, then kill), release the pty."""
        self._stop.set()
        self._thread.join(timeout)
        try:  # communicate() closes stdin: the harness sees EOF and exits when idle
            _, err = self._proc.communicate(timeout=timeout)
            self.harness_stderr = err or b""
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.communicate()
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


def _bridge_source(config, out_dir: Path, accel_domain: str = "sync") -> Path:
    """Write the bridge's Verilog (cached by its configuration) and return the file."""
    from bitspike.io import atomic_write_text
    from bitspike.rtl_templates.bridge import bridge_verilog

    from bitspike.rtl_templates import bridge, uart

    # the file name changes with the configuration and with the bridge's source, so a stale file is never reused
    sources = Path(bridge.__file__).read_bytes() + Path(uart.__file__).read_bytes() + Path(P.__file__).read_bytes()
    key = hashlib.sha256(repr((config, accel_domain)).encode() + sources).hexdigest()[:16]
    bridge_file = out_dir / f"bitspike_board_{key}.v"
    if not bridge_file.exists():
        atomic_write_text(bridge_file, bridge_verilog(config, accel_domain=accel_domain))
    return bridge_file


def build_board_sim(accelerator_files: Sequence[str | os.PathLike], report: dict, work_dir: str | os.PathLike, *,
                    clocks_per_bit: int | Fraction = DEFAULT_CLOCKS_PER_BIT, clock_hz: int = 0, baud: int = 0,
                    two_clocks: bool = True):
    """Build (or reuse from the Verilator cache) the simulated board for a generated accelerator.

    Parameters
    ----------
    accelerator_files
        The accelerator's Verilog files (report.json ``verilog_files``, as paths).
    report
        The accelerator's report.json contents.
    work_dir
        Where the bridge's Verilog is written.
    clocks_per_bit
        Simulated bit period.
    clock_hz, baud
        What the bridge's HELLO reply says about the link (a board's, to answer as its bitstream
        does; 0 when simulating no particular board).
    two_clocks
        Give the accelerator its own clock (domain ``acc``) behind the bridge's clock-domain
        crossing, as on a board with a PLL; else one clock drives both.

    Returns
    -------
    (VerilatorBuild, BridgeConfig)
    """
    from bitspike.rtl_templates.bridge import bridge_config_from_report
    from bitspike.sim.verilator import build_executable

    from bitspike.rtl_templates.uart import check_clocks_per_bit, period_cycles

    clocks_per_bit = check_clocks_per_bit(clocks_per_bit)
    timeout_cycles = period_cycles(clocks_per_bit, TIMEOUT_BYTE_TIMES * 10)
    config = bridge_config_from_report(report, clocks_per_bit=clocks_per_bit, clock_hz=clock_hz, baud=baud,
                                       timeout_cycles=timeout_cycles)
    bridge_file = _bridge_source(config, Path(work_dir), ACC_DOMAIN if two_clocks else "sync")
    build = build_executable([*map(str, accelerator_files), str(bridge_file)], "bitspike_board", [HARNESS],
                             cflags=["-DBITSPIKE_ACC_CLOCK"] if two_clocks else [], name="board_sim")
    return build, config


class SimBoard(SerialBoard):
    """A :class:`~bitspike.host.board.SerialBoard` talking, through a pty, to the simulated board.

    Parameters
    ----------
    accelerator_files
        The generated accelerator's Verilog files.
    report
        Its report.json (a dict).
    work_dir
        Folder for the bridge's Verilog.
    clocks_per_bit
        Simulated UART bit period (cycles).
    clock_hz, baud
        The link the HELLO reply reports (:func:`build_board_sim`); ``baud`` is also the rate the
        driver opens the pty at (a pty has no line rate: the bit period is ``clocks_per_bit``).
    periods
        ``(link, accelerator)`` clock periods (:data:`DEFAULT_PERIODS`: two unrelated clocks and
        the bridge's clock-domain crossing), or ``None`` for one clock.
    timeout, retries
        As for :class:`SerialBoard`.

    Attributes
    ----------
    faults
        The :class:`FaultInjector` of the line.
    line
        The :class:`SimulatedLine`.
    """

    def __init__(self, accelerator_files: Sequence[str | os.PathLike], report: dict, work_dir: str | os.PathLike, *,
                 clocks_per_bit: int | Fraction = DEFAULT_CLOCKS_PER_BIT, clock_hz: int = 0, baud: int = 0, timeout: float = 2.0,
                 retries: int = 2, periods: tuple[int, int] | None = DEFAULT_PERIODS):
        if periods is not None and (len(periods) != 2 or min(periods) < 1):
            raise ValueError(f"periods must be two positive integers (link, accelerator), not {periods!r}")
        build, config = build_board_sim(accelerator_files, report, work_dir, clocks_per_bit=clocks_per_bit,
                                        clock_hz=clock_hz, baud=baud, two_clocks=periods is not None)
        self.build = build
        self.bridge_config = config
        self.periods = periods
        fast_forward = max(1, config.timeout_cycles // SIM_TIMEOUT_MS)
        self.line = SimulatedLine(build.executable, config.clocks_per_bit, fast_forward, periods)
        self.faults = self.line.faults
        try:
            super().__init__(self.line.port, baudrate=baud or DEFAULT_PTY_BAUD, timeout=timeout, retries=retries)
        except Exception:
            self.line.close()
            raise

    @classmethod
    def from_generated(cls, gen_dir: str | os.PathLike, **kwargs) -> "SimBoard":
        """A simulated board for an accelerator already generated into ``gen_dir`` (holding report.json)."""
        gen_dir = Path(gen_dir)
        from bitspike.gen.report import read_report

        view = read_report(gen_dir)  # names the file and what is wrong with it (missing keys or Verilog files)
        if not view.verilog_files:
            raise HardwareError(f"{view.path} lists no verilog_files")
        return cls(list(view.verilog_paths), dict(view.data), gen_dir, **kwargs)

    @classmethod
    def from_manifest(cls, manifest, work_dir: str | os.PathLike, *, fold="auto", max_luts: int | None = None,
                      device=None, dsp_blocks: int | None = None, **kwargs) -> "SimBoard":
        """Generate the accelerator for ``manifest`` into ``work_dir/gen`` and simulate it as a board.

        ``max_luts``, ``device`` (a :class:`~bitspike.gen.boards.DeviceBudget`) and ``dsp_blocks`` are
        what :func:`bitspike.gen.generate` folds with: a board's, to simulate its bitstream's fold.
        ``kwargs`` go to the constructor (``clocks_per_bit``: a board's bit period, ``timeout``,
        ``retries``).
        """
        try:
            from bitspike.gen import generate
        except ImportError as exc:
            raise HardwareError(f"the network generator (bitspike.gen.generate) is not available: {exc}") from exc
        gen_dir = Path(work_dir) / "gen"
        generate(manifest, gen_dir, fold=fold, max_luts=max_luts, device=device, dsp_blocks=dsp_blocks)
        return cls.from_generated(gen_dir, **kwargs)

    def __repr__(self) -> str:
        return (f"SimBoard(port={self.port!r}, clocks_per_bit={self.bridge_config.clocks_per_bit}, "
                f"periods={self.periods!r})")

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.line.close()

    def link_cycles(self) -> int | None:
        """Link-clock cycles the harness simulated, once :meth:`close` has ended it (else ``None``).

        The harness only advances the clocks while something is on the line or in the design (or a
        frame is half received), so with the host's frames queued ahead this is the simulated time
        the whole session (HELLO included) took on the board's clock.
        """
        for line in self.line.harness_stderr.decode(errors="replace").splitlines():
            if line.startswith("cycles "):
                return int(line.split()[1])
        return None
