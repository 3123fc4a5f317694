"""The co-simulation engine: whole data sets through the cycle-accurate RTL, in batches.

The generated top (``bitspike_top``, docs/HARDWARE_INTERFACE.md) is built once
with Verilator together with the C++ harness ``harness/cosim_main.cpp``
(cached by content hash, :mod:`bitspike.sim.verilator`). Python writes a batch
of images to a file, runs the harness on it, and reads back per image the
result beats and cycle counts and, on request, every debug-tap value with its
cycle. Large sets are cut into shards run by parallel harness processes (one
per core). Python never steps the clock.

Typical use::

    from bitspike.sim.cosim import CoSim, rtl_for_manifest
    rtl = rtl_for_manifest(manifest)              # generated once, cached
    res = CoSim(rtl).run(images)                  # images [N, C, H, W] or [N, F], integers
    res.logits, res.classes, res.cycles

Icarus Verilog runs the same batches through :class:`bitspike.sim.icarus.IcarusSim`
(``CoSim(rtl, simulator="icarus")``).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bitspike.errors import HardwareError

from .verilator import HARNESS_DIR, VerilatorBuild, build_executable, default_cache_dir, verilator_cpp_name

__all__ = [
    "CoSim",
    "CoSimResult",
    "DesignInfo",
    "TapInfo",
    "tap_record",
    "rtl_for_manifest",
    "pixel_stream",
    "SIMULATORS",
]

SIMULATORS = ("verilator", "icarus")


def tap_record(words: int = 1) -> np.dtype:
    """The record layout of tap values in the harness's output file: tap, cycle and ``words`` 64-bit words
    of the value (least significant first; as many as the design's widest tap needs)."""
    return np.dtype([("tap", "<u4"), ("pad", "<u4"), ("cycle", "<u8"), ("value", "<u8", (int(words),))])


def words_for(width: int) -> int:
    """64-bit words that hold a ``width``-bit value."""
    return max(1, -(-int(width) // 64))


@dataclass(frozen=True)
class TapInfo:
    """One debug tap of a generated design (an entry of report.json ``taps``)."""

    layer: str
    index: int
    kind: str
    port: str
    width: int
    signed: bool
    order: str
    count: int = 0  # values per inference (0: not known, e.g. a design from an older generator)

    def to_int(self, raw: np.ndarray) -> np.ndarray:
        """Raw unsigned port values → integers (sign-extended when the tap is signed).

        ``raw`` is ``[n]`` or ``[n, words]`` 64-bit words, least significant first.
        Values that fit int64 come back as an int64 array, wider ones (packed
        spikes of T·B_s ≥ 64 bits, wide accumulators) as an object array of Python ints.
        """
        v = np.asarray(raw, dtype=np.uint64)
        if v.ndim == 1:
            v = v.reshape(-1, 1)
        if self.width < 64 or (self.width == 64 and self.signed):
            out = v[:, 0]
            if self.width < 64:
                out = out & np.uint64((1 << self.width) - 1)
            out = out.astype(np.int64)  # a 64-bit signed value wraps here into its two's complement, as wanted
            if self.signed and self.width < 64:
                out = np.where(out >= (1 << (self.width - 1)), out - (1 << self.width), out)
            return out
        mask = (1 << self.width) - 1
        vals = []
        for row in v:
            x = 0
            for k, w in enumerate(row.tolist()):
                x |= int(w) << (64 * k)
            x &= mask
            if self.signed and x >> (self.width - 1):
                x -= 1 << self.width
            vals.append(x)
        out = np.empty(len(vals), dtype=object)
        out[:] = vals
        return out


@dataclass(frozen=True)
class DesignInfo:
    """What the co-simulation needs from a generated design folder (its report.json)."""

    rtl_dir: Path
    top: str
    verilog_files: tuple[Path, ...]
    input_bits: int
    input_size: int
    input_order: str
    num_classes: int
    result_width: int
    logit_width: int
    cycles_per_inference: int | None
    initiation_interval: int | None
    taps: tuple[TapInfo, ...]
    report: dict = field(repr=False, compare=False)
    logit_signed: bool = True

    @classmethod
    def load(cls, rtl_dir: str | os.PathLike) -> "DesignInfo":
        """Read ``rtl_dir/report.json``; a missing file or key is a :class:`HardwareError` naming it."""
        from bitspike.gen.report import read_report

        rtl_dir = Path(rtl_dir)
        view = read_report(rtl_dir / "report.json")
        taps = tuple(TapInfo(t.layer, t.index, t.kind, t.port, t.width, t.signed, t.order, t.count) for t in view.taps)
        return cls(
            rtl_dir=rtl_dir,
            top=view.top,
            verilog_files=tuple(rtl_dir / f for f in view.verilog_files),
            input_bits=view.input_bits,
            input_size=view.input_size,
            input_order=view.input_order,
            num_classes=view.num_classes,
            result_width=view.result_width,
            logit_width=view.logit_width,
            logit_signed=view.logit_signed,
            cycles_per_inference=view.cycles_per_inference,
            initiation_interval=view.initiation_interval,
            taps=taps,
            report=dict(view.data),
        )

    def digest(self) -> str:
        """SHA-256 of the design's Verilog files (names and contents, in order) and its top: the same RTL
        gives the same digest wherever it lies."""
        h = hashlib.sha256(self.top.encode())
        for f in self.verilog_files:
            h.update(f.name.encode() + b"\0")
            h.update(f.read_bytes())
        return h.hexdigest()

    @property
    def tap_words(self) -> int:
        """64-bit words per recorded tap value (the widest tap decides)."""
        return max([words_for(t.width) for t in self.taps] or [1])

    def logits_from_raw(self, raw: np.ndarray) -> np.ndarray:
        """Result beats (``result_width`` bits) → logits: sign-extended when the last layer's output range is
        signed, else zero-extended (an unsigned logit may use the top bit: 277 in 9 bits is not −235)."""
        raw = np.asarray(raw, dtype=np.uint64)
        tap = TapInfo("", 0, "out", "results", min(self.result_width, 64), self.logit_signed, "flat")
        return tap.to_int(raw.reshape(-1)).reshape(raw.shape)


def pixel_stream(images: np.ndarray, design: DesignInfo) -> np.ndarray:
    """Images as the pixel stream sends them: ``[N, input_size]``.

    ``[N, C, H, W]`` images are put in HWC order (channel fastest) when the
    design says ``input_order == "hwc"``; ``[N, F]`` are taken as they are.
    """
    x = np.asarray(images)
    if x.dtype.kind not in "ui":
        raise HardwareError(f"images must be integers (pixels), got dtype {x.dtype}")
    if x.ndim == 4 and design.input_order == "hwc":
        x = x.transpose(0, 2, 3, 1)
    x = x.reshape(len(x), -1)
    if x.shape[1] != design.input_size:
        raise HardwareError(f"images have {x.shape[1]} values each, the design takes {design.input_size} "
                            f"(report.json input_size)")
    top = (1 << design.input_bits) - 1
    if x.size and (int(x.min()) < 0 or int(x.max()) > top):
        raise HardwareError(f"pixel values must be in 0 … {top} ({design.input_bits}-bit), "
                            f"got {int(x.min())} … {int(x.max())}")
    return x


def design_header(design: DesignInfo) -> str:
    """The ``cosim_design.h`` the harness is compiled with: the top class, sizes and tap ports."""
    top_class = f"V{design.top}"
    lines = [
        "// generated by bitspike.sim.cosim for one design; do not edit",
        "#pragma once",
        f'#define COSIM_TOP_HEADER "{top_class}.h"',
        f"#define COSIM_TOP {top_class}",
        f"#define COSIM_INPUT_SIZE {design.input_size}u",
        f"#define COSIM_NUM_CLASSES {design.num_classes}u",
        f"#define COSIM_PIX_PAYLOAD {verilator_cpp_name('pixels__payload')}",
        f"#define COSIM_PIX_VALID {verilator_cpp_name('pixels__valid')}",
        f"#define COSIM_PIX_READY {verilator_cpp_name('pixels__ready')}",
        f"#define COSIM_RES_PAYLOAD {verilator_cpp_name('results__payload')}",
        f"#define COSIM_RES_VALID {verilator_cpp_name('results__valid')}",
        f"#define COSIM_RES_READY {verilator_cpp_name('results__ready')}",
        f"#define COSIM_NUM_TAPS {len(design.taps)}u",
        f"#define COSIM_TAP_WORDS {design.tap_words}u",
        "#define COSIM_TAPS(X) \\",
    ]
    for i, t in enumerate(design.taps):
        lines.append(f"    X({i}u, {verilator_cpp_name(t.port + '__payload')}, {verilator_cpp_name(t.port + '__valid')}, "
                     f"{t.count}ull) \\")
    lines.append("    /* end */")
    return "\n".join(lines) + "\n"


@dataclass
class CoSimResult:
    """What a co-simulation run returns.

    Attributes
    ----------
    logits
        ``[N, num_classes]`` int64, the result beats sign-extended.
    classes
        ``[N]`` the class beat.
    cycles
        ``[N]`` latency of each image: cycles from the handshake of its first
        pixel to the handshake of its class beat (the generator's
        ``cycles_per_inference`` counts the same way).
    start, end
        ``[N]`` cycle (from the end of reset) of each image's first pixel and class beat.
    total_cycles
        Cycles simulated (all shards added).
    sim_seconds
        CPU time of the simulator's clock loops, all shards added (excludes builds and file I/O;
        CPU rather than wall time, so that other work on a shared machine does not count; for
        Icarus the wall time of ``vvp``).
    wall_seconds
        Wall time of the whole run as the caller saw it (parallel shards overlap).
    taps
        With ``trace=True``: per tap port, ``(values, cycles)`` arrays of every
        recorded value, all images in order; else ``None``.
    shard_starts
        Index of the first image of each shard (cycles restart at 0 in each shard).
    simulator
        ``"verilator"`` or ``"icarus"``.
    """

    logits: np.ndarray
    classes: np.ndarray
    cycles: np.ndarray
    start: np.ndarray
    end: np.ndarray
    total_cycles: int
    sim_seconds: float
    wall_seconds: float
    taps: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    shard_starts: tuple[int, ...] = (0,)
    simulator: str = "verilator"

    @property
    def samples(self) -> int:
        return len(self.classes)

    @property
    def sim_cycles_per_second(self) -> float:
        """Simulated clock cycles per CPU second of the harness loop (the rate of one process on one core)."""
        return self.total_cycles / self.sim_seconds if self.sim_seconds > 0 else float("inf")

    @property
    def images_per_second(self) -> float:
        """Images per second of wall time, all processes together."""
        return self.samples / self.wall_seconds if self.wall_seconds > 0 else float("inf")

    @property
    def initiation_interval(self) -> float:
        """Median cycles between consecutive class beats in the stream (pairs inside one shard); 0 if < 2 images."""
        gaps = [np.diff(self.end[a:b]) for a, b in zip(self.shard_starts, (*self.shard_starts[1:], self.samples))]
        gaps = np.concatenate(gaps) if gaps else np.zeros(0)
        return float(np.median(gaps)) if len(gaps) else 0.0

    def sample_taps(self, i: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Sample ``i``'s share of every tap, ``port → (values, cycles)``.

        Every image makes each tap show the same number of values, so the
        concatenation is cut evenly. Raises :class:`HardwareError` when the run
        was not traced or a tap's count does not divide (a design fault: use
        :func:`bitspike.sim.diagnose.compare_all`, which names it).
        """
        if self.taps is None:
            raise HardwareError("this run recorded no taps: run it with trace=True")
        if not 0 <= i < self.samples:
            raise HardwareError(f"sample index {i} is out of range 0 … {self.samples - 1}")
        out = {}
        for port, (vals, cyc) in self.taps.items():
            if len(vals) % max(1, self.samples):
                raise HardwareError(f"tap {port} recorded {len(vals)} values for {self.samples} images: not the "
                                    "same count per image")
            per = len(vals) // self.samples
            out[port] = (vals[i * per:(i + 1) * per], cyc[i * per:(i + 1) * per])
        return out

    def simulated_images_per_second(self, clock_hz: float) -> float:
        """Throughput the hardware would reach at ``clock_hz``, from the simulated cycles."""
        return self.samples * clock_hz / self.total_cycles if self.total_cycles else float("inf")


class CoSim:
    """Runs batches of images through one generated design.

    Parameters
    ----------
    rtl_dir
        A folder written by ``bitspike gen`` (Verilog files + report.json).
    simulator
        ``"verilator"`` (compiled C++ harness) or ``"icarus"`` (generated
        Verilog testbench, :mod:`bitspike.sim.icarus`; much slower, for cross-checks).
    cache_dir
        Build cache root (default :func:`bitspike.sim.verilator.default_cache_dir`).
    jobs
        Compile jobs for the Verilator build.
    """

    def __init__(self, rtl_dir: str | os.PathLike, simulator: str = "verilator", *,
                 cache_dir: str | os.PathLike | None = None, jobs: int | None = None):
        if simulator not in SIMULATORS:
            raise HardwareError(f"simulator must be one of {list(SIMULATORS)}, not {simulator!r}")
        self.design = DesignInfo.load(rtl_dir)
        self.simulator = simulator
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.jobs = jobs
        self._builds: dict[bool, VerilatorBuild] = {}

    def __repr__(self) -> str:
        return f"CoSim({str(self.design.rtl_dir)!r}, simulator={self.simulator!r})"

    # ---- building

    def build(self, trace: bool = False) -> VerilatorBuild:
        """The Verilator executable for this design (built once, then cached); ``trace`` adds VCD support."""
        if trace not in self._builds:
            d = self.design
            self._builds[trace] = build_executable(
                d.verilog_files, d.top, [HARNESS_DIR / "cosim_main.cpp"],
                generated={"cosim_design.h": design_header(d)},
                trace=trace, cache_dir=self.cache_dir, jobs=self.jobs, name="cosim",
            )
        return self._builds[trace]

    # ---- running

    def run(self, images: np.ndarray, *, trace: bool = False, processes: int | None = None,
            sequential: bool = False, stall_in: float = 0.0, stall_out: float = 0.0, seed: int = 1,
            max_idle: int | None = None, vcd: str | os.PathLike | None = None,
            vcd_window: tuple[int, int] | None = None) -> CoSimResult:
        """Stream ``images`` through the design.

        Parameters
        ----------
        images
            ``[N, C, H, W]`` or ``[N, F]`` integer pixels, in the manifest's layout
            (re-ordered to the stream order here).
        trace
            Record every debug-tap value (the design must have been generated with debug taps).
        processes
            Parallel harness processes (default: CPUs, at most 2; 1 when tracing to VCD or N is small).
        sequential
            Send an image only after the previous one's class came out (pure latency);
            by default images are pipelined back to back.
        stall_in, stall_out
            Probability (0 … 1) of holding back a pixel beat / dropping ``results.ready``
            in a cycle (seeded, reproducible back-pressure).
        seed
            PRNG seed for the stalls (each shard adds its index).
        max_idle
            Cycles without stream progress before the run is declared hung
            (default: 20 × the predicted latency + 10,000).
        vcd, vcd_window
            Write a VCD of cycles ``vcd_window = (first, last)`` (default all) to ``vcd``
            (Verilator: uses a ``--trace`` build; forces one process).

        Raises
        ------
        HardwareError
            When the design hangs, the harness fails, or the input does not fit.
        """
        x = pixel_stream(images, self.design)
        n = len(x)
        if not (0 <= stall_in <= 1 and 0 <= stall_out <= 1):
            raise HardwareError(f"stall probabilities must be in 0 … 1, got stall_in={stall_in}, stall_out={stall_out}")
        if trace and not self.design.taps:
            raise HardwareError(f"{self.design.rtl_dir} has no debug taps: generate it with debug_taps=True "
                                "(bitspike gen --debug-taps) to trace")
        if max_idle is None:
            max_idle = 20 * int(self.design.cycles_per_inference or 1000) + 10_000
        if processes is None:
            processes = max(1, min(2, os.cpu_count() or 1))
        if vcd is not None:
            processes = 1
        processes = max(1, min(processes, n // 16 if n >= 32 else 1))
        options = dict(trace=trace, sequential=sequential, stall_in=int(round(stall_in * 1000)),
                       stall_out=int(round(stall_out * 1000)), max_idle=int(max_idle), vcd=vcd, vcd_window=vcd_window)
        if self.simulator == "icarus":
            from .icarus import IcarusSim

            runner = IcarusSim(self.design, cache_dir=self.cache_dir)
            run_shard = lambda xs, sd: runner.run_shard(xs, sd, **options)  # noqa: E731
        else:
            exe = self.build(trace=vcd is not None).executable
            run_shard = lambda xs, sd: self._run_verilator_shard(exe, xs, sd, **options)  # noqa: E731
        bounds = np.linspace(0, n, processes + 1).astype(int)
        shards = [(x[bounds[i]:bounds[i + 1]], seed + i) for i in range(processes)]
        t0 = time.perf_counter()
        if processes == 1:
            parts = [run_shard(*shards[0])] if n else []
        else:
            # threads are enough: each one waits on its own harness process
            with ThreadPoolExecutor(processes) as pool:
                parts = list(pool.map(lambda a: run_shard(*a), shards))
        wall = time.perf_counter() - t0
        return self._merge(parts, [int(b) for b in bounds[:-1]], wall, trace)

    def layer_trace(self, result: CoSimResult, i: int) -> dict[str, dict[str, np.ndarray]]:
        """Sample ``i`` of a traced run, per layer and kind, in stream order.

        Returns ``{layer: {"x": currents, "spk": spikes [elements, T], "acc": …, "out": …}}``
        (the kinds the design taps); packed spike beats are unpacked with the
        layer's ``s_bits`` and ``timesteps`` from report.json.
        """
        per_layer = {int(l["index"]): l for l in self.design.report.get("layers", []) if "index" in l}
        taps = result.sample_taps(i)
        out: dict[str, dict[str, np.ndarray]] = {}
        for t in self.design.taps:
            vals = taps[t.port][0]
            if t.kind == "spk" and t.index in per_layer:
                bits, steps = int(per_layer[t.index]["s_bits"]), int(per_layer[t.index]["timesteps"])
                if steps > 1 and t.width == bits * steps:
                    vals = np.stack([(vals >> (k * bits)) & ((1 << bits) - 1) for k in range(steps)],
                                    axis=-1).astype(np.int64)  # each spike fits, even when the beat did not
                else:
                    vals = vals.reshape(-1, 1) if steps == 1 else vals.reshape(-1, steps)
            out.setdefault(t.layer, {})[t.kind] = vals
        return out

    def bare_cycles_per_second(self, images: np.ndarray, cycles: int = 2_000_000) -> float:
        """Cycle rate of the bare C++ loop over this design: the same pixels offered back to back and
        results always taken, nothing recorded. The harness's limit (one process)."""
        x = pixel_stream(images, self.design)
        if not len(x):
            raise HardwareError("the bare loop needs at least one image to offer")
        exe = self.build().executable
        with tempfile.TemporaryDirectory(prefix="bitspike-bare-") as tmp:
            inp = Path(tmp) / "batch.bin"
            _write_input(inp, x, self.design.input_bits)
            proc = subprocess.run([str(exe), "--bare", str(int(cycles)), "--input", str(inp)],
                                  capture_output=True, text=True)
        if proc.returncode != 0:
            raise HardwareError(f"bare loop failed: {proc.stderr.strip()}")
        return float(json.loads(proc.stdout)["cycles_per_second"])

    # ---- internals

    def _run_verilator_shard(self, exe: Path, x: np.ndarray, seed: int, *, trace: bool, sequential: bool,
                             stall_in: int, stall_out: int, max_idle: int, vcd, vcd_window) -> dict:
        with tempfile.TemporaryDirectory(prefix="bitspike-cosim-") as tmp:
            inp, outp = Path(tmp) / "batch.bin", Path(tmp) / "result.bin"
            _write_input(inp, x, self.design.input_bits)
            cmd = [str(exe), "--input", str(inp), "--output", str(outp), "--seed", str(seed),
                   "--stall-in", str(stall_in), "--stall-out", str(stall_out), "--max-idle", str(max_idle)]
            if trace:
                cmd.append("--taps")
            if sequential:
                cmd.append("--sequential")
            if vcd is not None:
                cmd += ["--vcd", str(vcd)]
                if vcd_window is not None:
                    cmd += ["--vcd-from", str(max(0, int(vcd_window[0]))), "--vcd-to", str(int(vcd_window[1]))]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode not in (0, 3) or not outp.exists():
                raise HardwareError(f"co-simulation harness failed (exit {proc.returncode}): {proc.stderr.strip()}")
            part = _read_output(outp, self.design.tap_words)
            if proc.returncode == 3 or part["status"] != 0:
                raise HardwareError(
                    f"the design hung: {proc.stderr.strip()} ({part['done']} of {len(x)} images of this shard "
                    f"finished); a stream handshake never completed")
            return part

    def _merge(self, parts: list[dict], starts: list[int], wall: float, trace: bool) -> CoSimResult:
        d = self.design
        k = d.num_classes
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return CoSimResult(np.zeros((0, k), np.int64), empty, empty, empty, empty, 0, 0.0, wall,
                               simulator=self.simulator)
        raw = np.concatenate([p["results"] for p in parts])
        logits = d.logits_from_raw(raw[:, :k]) if len(raw) else np.zeros((0, k), np.int64)
        classes = raw[:, k].astype(np.int64)
        start = np.concatenate([p["start"] for p in parts]).astype(np.int64)
        end = np.concatenate([p["end"] for p in parts]).astype(np.int64)
        taps = None
        if trace:
            taps = {}
            for i, t in enumerate(d.taps):
                vals, cyc = [], []
                for p in parts:
                    rec = p["records"]
                    sel = rec[rec["tap"] == i]
                    vals.append(t.to_int(sel["value"][:, :words_for(t.width)]))
                    cyc.append(sel["cycle"].astype(np.int64))
                taps[t.port] = (np.concatenate(vals), np.concatenate(cyc))
        return CoSimResult(
            logits=logits, classes=classes, cycles=end - start, start=start, end=end,
            total_cycles=int(sum(p["cycles"] for p in parts)), sim_seconds=float(sum(p["seconds"] for p in parts)),
            wall_seconds=wall, taps=taps, shard_starts=tuple(starts[: len(parts)]), simulator=self.simulator,
        )


def _write_input(path: Path, x: np.ndarray, bits: int) -> None:
    """The harness's batch file: "BSI1", u32 images, u32 input_size, u32 bytes per value, values (little endian)."""
    vbytes = 1 if bits <= 8 else 2
    with open(path, "wb") as fh:
        fh.write(b"BSI1" + struct.pack("<III", len(x), x.shape[1], vbytes))
        fh.write(np.ascontiguousarray(x, dtype="<u1" if vbytes == 1 else "<u2").tobytes())


def _read_output(path: Path, words: int = 1) -> dict:
    """Parse the harness's result file (layout in harness/cosim_main.cpp)."""
    blob = path.read_bytes()
    if blob[:4] != b"BSR1":
        raise HardwareError(f"{path} is not a harness result file")
    n, per, ntaps, status, done = struct.unpack_from("<5I", blob, 4)
    cycles, loop_ns, cpu_ns = struct.unpack_from("<QQQ", blob, 24)
    off = 48
    img = np.frombuffer(blob, dtype="<u8", count=n * (2 + per), offset=off).reshape(n, 2 + per)
    off += 8 * n * (2 + per)
    (nrec,) = struct.unpack_from("<Q", blob, off)
    off += 8
    records = np.frombuffer(blob, dtype=tap_record(words), count=nrec, offset=off)
    return dict(results=img[:, 2:].copy(), start=img[:, 0].copy(), end=img[:, 1].copy(), records=records.copy(),
                status=status, done=done, cycles=cycles, seconds=cpu_ns * 1e-9)


# ---- RTL from a manifest, cached


def _generator_fingerprint() -> str:
    """A hash of the generator's and the blocks' source, so cached RTL follows code changes."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for folder in ("gen", "rtl_templates", "bitspike/ops"):
        for p in sorted((root / folder).rglob("*")):
            if p.is_file() and p.suffix in (".py", ".v", ".sv"):
                h.update(str(p.relative_to(root)).encode())
                h.update(p.read_bytes())
    return h.hexdigest()


def rtl_for_manifest(manifest: Any, *, debug_taps: bool = True, fold: str | int = "auto",
                     max_luts: int | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Generate the RTL of ``manifest`` (a :class:`~bitspike.manifest.Manifest` or a path) into a cached folder.

    The folder is keyed by the manifest's digest, the options and a hash of the
    generator's source; a second call returns at once.

    Returns
    -------
    Path
        The folder holding the Verilog files and report.json.
    """
    from bitspike.manifest import Manifest, load

    if not isinstance(manifest, Manifest):
        manifest = load(manifest)
    try:
        from bitspike.gen import generate
    except ImportError as exc:
        raise HardwareError(f"the generator (bitspike.gen.generate) is not available: {exc}") from exc
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir().parent / "rtl"
    key = hashlib.sha256(json.dumps({
        "manifest": manifest.digest(), "debug_taps": bool(debug_taps), "fold": fold, "max_luts": max_luts,
        "generator": _generator_fingerprint(),
    }, sort_keys=True).encode()).hexdigest()[:32]
    out = root / key
    if (out / "report.json").exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{key}.", suffix=".tmp", dir=root))
    try:
        generate(manifest, work, fold=fold, max_luts=max_luts, debug_taps=debug_taps)
        if not (work / "report.json").exists():
            raise HardwareError(f"the generator wrote no report.json into {work}")
        try:
            os.replace(work, out)
        except OSError:  # another process finished the same key first
            pass
    finally:
        if work.exists():
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    return out

