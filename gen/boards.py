"""The boards ``bitspike build`` knows: every amaranth-boards platform, introspected, with its part's capacity.

The board table is not a hand list: :func:`all_boards` imports every module
of the installed ``amaranth_boards`` package, instantiates each concrete
platform class and reads from it the device and package, the default clock
and its frequency, the ``uart`` resource's pins (or that the board only has
USB wired straight to the FPGA), and the toolchain Amaranth would run. The
FPGA family follows from the platform's vendor class and selects the flow:

- ``ice40``, ``ecp5``, ``gowin``: the open flow (pip-installed yowasp Yosys
  and nextpnr, icepack / ecppack, apycula's gowin_pack) builds a bitstream here;
- ``xilinx``, ``intel``, ``machxo2``, ``quicklogic``: Amaranth writes the
  vendor tool's build plan (scripts, Verilog, constraints) into an archive
  and Yosys gives a resource estimate; the vendor tool finishes the build.

A board without a ``uart`` resource can be given one on two free pins
(:meth:`BoardSpec.with_uart`, ``bitspike build --uart-pins TX,RX``).

What the platforms do not say is the capacity of the part: :data:`PARTS`
holds LUT, flip-flop, DSP, block-RAM and PLL counts from the vendors' data
sheets (the family tables of the iCE40 UltraPlus / LP/HX, ECP5/ECP5-5G,
MachXO2/3, GW1N/GW2A, 7-series / Spartan-6 / UltraScale, Cyclone III/IV/V and
MAX 10 data sheets). Those figures size the folding (:func:`device_budget`) and
the ``bitspike boards`` listing; a build reports what nextpnr counts on the
exact device.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass, field
from functools import lru_cache

from bitspike.errors import BoardError

__all__ = ["Part", "BoardSpec", "PARTS", "all_boards", "get_board", "board_names", "part_capacity", "lut_budget",
           "DeviceBudget", "device_budget", "check_dsp_blocks", "find_part", "part_family", "HEADROOM",
           "OPEN_FAMILIES", "board_table", "UsbSerial", "USB_SERIAL", "DEFAULT_BAUD", "LINK_RATES", "default_baud",
           "check_baud"]

#: families whose bitstreams the pip-installed open tools build here
OPEN_FAMILIES = ("ice40", "ecp5", "gowin")


@dataclass(frozen=True)
class Part:
    """The capacity of one FPGA part, from its data sheet.

    Attributes
    ----------
    lut, ff, dsp, bram, pll
        Counts of logic LUTs (of the kind ``lut_kind``), flip-flops, DSP multipliers (``dsp_kind``),
        block RAMs (``bram_kind``) and PLLs.
    lut_kind, bram_kind, dsp_kind
        What one unit is: ``LUT4``, ``LUT6``, ``ALM`` (Cyclone V: an 8-input adaptive LUT with two
        flip-flops), ``LE`` (a 4-input LUT and a flip-flop); ``4 Kb`` … ``36 Kb`` block RAMs;
        ``18x18`` multipliers, ``DSP48E1`` …
    """

    lut: int
    ff: int
    dsp: int
    bram: int
    pll: int
    lut_kind: str
    bram_kind: str
    dsp_kind: str

    def to_json(self) -> dict:
        return {"lut": self.lut, "ff": self.ff, "dsp": self.dsp, "bram": self.bram, "pll": self.pll,
                "lut_kind": self.lut_kind, "bram_kind": self.bram_kind, "dsp_kind": self.dsp_kind}


def _p(lut, ff, dsp, bram, pll, lut_kind, bram_kind, dsp_kind):
    return Part(lut, ff, dsp, bram, pll, lut_kind, bram_kind, dsp_kind)


_ICE = ("LUT4", "4 Kb EBR", "SB_MAC16")
_ECP5 = ("LUT4", "18 Kb EBR", "18x18")
_XO2 = ("LUT4", "9 Kb EBR", "none")
_GW = ("LUT4", "18 Kb BSRAM", "18x18")
_X7 = ("LUT6", "36 Kb", "DSP48E1")
_S6 = ("LUT6", "18 Kb", "DSP48A1")
_XU = ("LUT6", "36 Kb", "DSP48E2")
_CV = ("ALM", "M10K", "18x18 pairs (DSP block)")
_C4 = ("LE", "M9K", "18x18")

#: data-sheet capacities, by the key :func:`part_key` makes of a platform's device
PARTS: dict[str, Part] = {
    # Lattice iCE40 (a logic cell is one LUT4 and one flip-flop)
    "iCE40LP384": _p(384, 384, 0, 0, 0, *_ICE),
    "iCE40LP1K": _p(1280, 1280, 0, 16, 1, *_ICE),
    "iCE40HX1K": _p(1280, 1280, 0, 16, 1, *_ICE),
    "iCE40LP4K": _p(3520, 3520, 0, 20, 2, *_ICE),
    "iCE40HX4K": _p(3520, 3520, 0, 20, 2, *_ICE),
    "iCE40LP8K": _p(7680, 7680, 0, 32, 2, *_ICE),
    "iCE40HX8K": _p(7680, 7680, 0, 32, 2, *_ICE),
    "iCE40UP3K": _p(2800, 2800, 4, 20, 1, *_ICE),
    "iCE40UP5K": _p(5280, 5280, 8, 30, 1, *_ICE),
    # Lattice ECP5 / ECP5-5G (LFE5U, LFE5UM, LFE5UM5G share the fabric; a slice has 2 LUT4 + 2 FF)
    "LFE5-12F": _p(12000, 12000, 28, 32, 2, *_ECP5),
    "LFE5-25F": _p(24000, 24000, 28, 56, 2, *_ECP5),
    "LFE5-45F": _p(44000, 44000, 72, 108, 4, *_ECP5),
    "LFE5-85F": _p(84000, 84000, 156, 208, 4, *_ECP5),
    # Lattice MachXO2 / MachXO3 (no multipliers)
    "LCMXO2-256": _p(256, 256, 0, 0, 0, *_XO2),
    "LCMXO2-1200": _p(1280, 1280, 0, 7, 1, *_XO2),
    "LCMXO2-4000": _p(4320, 4320, 0, 10, 2, *_XO2),
    "LCMXO2-7000": _p(6864, 6864, 0, 26, 2, *_XO2),
    "LCMXO3-6900": _p(6864, 6864, 0, 26, 2, *_XO2),
    # Gowin LittleBee / Arora
    "GW1N-1": _p(1152, 864, 0, 4, 1, *_GW),
    "GW1N-4": _p(4608, 3456, 16, 10, 2, *_GW),
    "GW1N-9": _p(8640, 6480, 20, 26, 2, *_GW),
    "GW2A-18": _p(20736, 15552, 48, 46, 4, *_GW),
    "GW5AST-138": _p(138240, 138240, 298, 340, 12, "LUT4", "18 Kb BSRAM", "27x18"),
    # AMD/Xilinx 7-series (block RAMs counted as 36 Kb blocks; PLL column: clock management tiles)
    "xc7a15t": _p(10400, 20800, 45, 25, 5, *_X7),
    "xc7a35t": _p(20800, 41600, 90, 50, 5, *_X7),
    "xc7a50t": _p(32600, 65200, 120, 75, 5, *_X7),
    "xc7a100t": _p(63400, 126800, 240, 135, 6, *_X7),
    "xc7a200t": _p(134600, 269200, 740, 365, 10, *_X7),
    "xc7s25": _p(14600, 29200, 80, 45, 3, *_X7),
    "xc7s50": _p(32600, 65200, 120, 75, 5, *_X7),
    "xc7z007s": _p(14400, 28800, 66, 50, 2, *_X7),
    "xc7z010": _p(17600, 35200, 80, 60, 2, *_X7),
    "xc7z020": _p(53200, 106400, 220, 140, 4, *_X7),
    "xc7k325t": _p(203800, 407600, 840, 445, 10, *_X7),
    "xc6slx9": _p(5720, 11440, 16, 32, 2, *_S6),
    "xc6slx45": _p(27288, 54576, 58, 116, 4, *_S6),
    "xc3s200a": _p(3584, 3584, 16, 16, 4, "LUT4", "18 Kb", "18x18"),
    "xcku040": _p(242400, 484800, 1920, 600, 10, *_XU),
    "xczu48dr": _p(425280, 850560, 4272, 1080, 8, *_XU),
    # Intel/Altera
    "5CEBA4": _p(18480, 73920, 66, 308, 4, *_CV),
    "5CSEMA5": _p(32070, 128300, 87, 397, 6, *_CV),
    "5CSEBA6": _p(41910, 166036, 112, 553, 6, *_CV),
    "EP3C16": _p(15408, 15408, 56, 56, 4, *_C4),
    "EP3C25": _p(24624, 24624, 66, 66, 4, *_C4),
    "EP4CE6": _p(6272, 6272, 15, 30, 2, *_C4),
    "EP4CE22": _p(22320, 22320, 66, 66, 4, *_C4),
    "10M50": _p(49760, 49760, 144, 182, 4, *_C4),
}

@dataclass(frozen=True)
class UsbSerial:
    """The USB-serial bridge between a board's UART pins and the host, and the fastest rate it takes.

    Attributes
    ----------
    chip
        The converter on the board.
    max_baud
        The chip's highest UART rate, from its data sheet.
    source
        Where both facts come from.
    """

    chip: str
    max_baud: int
    source: str

    def to_json(self) -> dict:
        return {"chip": self.chip, "max_baud": self.max_baud, "source": self.source}


#: the USB-serial converter of boards whose UART goes through one, by board name. Boards not listed
#: get :data:`DEFAULT_BAUD`, a rate the common converters (FTDI, CP210x, CH340) all take
USB_SERIAL: dict[str, UsbSerial] = {
    "icebreaker": UsbSerial("FTDI FT2232HQ", 12_000_000,
                            "1BitSquared iCEBreaker v1.0 schematic (FT2232HQ, channel B to the FPGA's UART pins); "
                            "FTDI DS_FT2232H: UART interface up to 12 Mbaud"),
    "icestick": UsbSerial("FTDI FT2232HL", 12_000_000,
                          "Lattice iCEstick Evaluation Kit user guide (FT2232H, channel B as the UART); "
                          "FTDI DS_FT2232H: UART interface up to 12 Mbaud"),
    "ulx3s_12f": UsbSerial("FTDI FT231XS", 3_000_000, "Radiona ULX3S v3.0 schematic (FT231XS on US1); "
                                                      "FTDI DS_FT231X: data rates up to 3 Mbaud"),
}
for _size in ("25f", "45f", "85f"):
    USB_SERIAL[f"ulx3s_{_size}"] = USB_SERIAL["ulx3s_12f"]

#: the link rate where nothing faster is known to work (every listed converter, and CP210x / CH340, take it)
DEFAULT_BAUD = 1_000_000
#: the rates a build picks from, fastest first: the standard ones of FTDI's baud generator
#: (3 MHz / n for n = 1, 1.5, 2, 3)
LINK_RATES = (3_000_000, 2_000_000, 1_500_000, 1_000_000)


#: the vendor class an amaranth platform derives from → bitspike family (refined by the platform's ``family``)
_VENDOR_FAMILY = {"SiliconBluePlatform": "ice40", "GowinPlatform": "gowin", "XilinxPlatform": "xilinx",
                  "AlteraPlatform": "intel", "QuicklogicPlatform": "quicklogic"}
#: nextpnr cell type of each reported resource, per open family; ``FF: None`` where nextpnr does not count
#: flip-flops separately (iCE40: a logic cell holds a LUT and a flip-flop; the count comes from Yosys)
_CELLS = {
    "ice40": {"LUT": "ICESTORM_LC", "FF": None, "BRAM": "ICESTORM_RAM", "DSP": "ICESTORM_DSP"},
    "ecp5": {"LUT": "TRELLIS_COMB", "FF": "TRELLIS_FF", "BRAM": "DP16KD", "DSP": "MULT18X18D"},
    "gowin": {"LUT": "LUT4", "FF": "DFF", "BRAM": "BSRAM", "DSP": "MULT18X18"},
}
#: names users typed before the table came from amaranth-boards, and short ones
ALIASES = {"ulx3s": "ulx3s_85f", "ecp5_25f": "ulx3s_25f", "ice40_hx8k": "ice40_hx8k_b_evn", "hx8k": "ice40_hx8k_b_evn",
           "up5k": "icebreaker", "ice40_hx1k": "icestick", "arty": "arty_a7_35", "de10nano": "de10_nano"}
#: share of each of the part's resources that ``fold="auto"`` may plan for (:func:`device_budget`).
#: LUT: half the logic. The planner's LUT model is off by up to 61 % (mean 42.5 %) against Yosys
#: (bench/results/cost.md), so a plan at 50 % lands at most near 80 %; nextpnr's placement and
#: routing time grows steeply past ~70 % of the logic. FF: half (the flip-flop model counts the
#: engine's registers; the digits MLP's fc1 is within 1 % of Yosys). DSP: all of them: the
#: allocator (:mod:`bitspike.gen.dsp`) never instantiates more multipliers than the part has and
#: moves the rest into logic, which the LUT estimate then pays for. BRAM: 85 %: the weight
#: memories' block count is exact (:func:`~bitspike.gen.folding.bram_blocks`); the other RAMs follow
#: Yosys' mapping costs (:func:`~bitspike.gen.folding.memory_blocks`); the bridge's input buffer and
#: the top's skew FIFOs are not in the estimate
HEADROOM = {"lut": 0.50, "ff": 0.50, "dsp": 1.00, "bram": 0.85}
#: LUT4s the board design spends per unit of the planner's LUT estimate (which is calibrated on
#: ``synth_xilinx``): Yosys ``synth_ecp5`` of the digits MLP's engines at 4×4 / 2×2 gives 1,615 LUT4
#: for an estimate of 827 (1.95×); six-input LUTs and ALMs count as one unit each
LUT4_PER_ESTIMATE = 2.0
#: LUT4s of what every build adds around the accelerator (UART bridge, clocking, the top's glue): the
#: ECP5-85F digits build placed 2,545 LUT4 where Yosys gave the engines and the top 1,615
FIXED_LUT4 = 900
#: the smallest LUT budget :func:`lut_budget` gives: below it the generator keeps one PE and one lane everywhere
MIN_LUT_BUDGET = 100


@dataclass(frozen=True)
class DeviceBudget:
    """What ``fold="auto"`` may plan for on one part: its resources times :data:`HEADROOM`.

    Attributes
    ----------
    lut
        In units of the planner's LUT estimate (:meth:`bitspike.ops.base.Op.estimate_luts`).
    ff, dsp, bram
        Flip-flops, DSP blocks and block RAMs of the part's kinds.
    family
        The FPGA family (selects the block-RAM shapes, :func:`bitspike.gen.folding.bram_blocks`).
    part
        The :data:`PARTS` key.
    capacity
        The part's full :class:`Part`.
    """

    lut: int
    ff: int
    dsp: int
    bram: int
    family: str
    part: str
    capacity: Part

    def scaled(self, factor: float) -> "DeviceBudget":
        """The budget with LUTs, flip-flops and block RAMs times ``factor`` (a re-plan after an overflow).
        DSP blocks stay: the allocator keeps them within the part whatever the fold."""
        from dataclasses import replace

        return replace(self, lut=max(1, int(self.lut * factor)), ff=max(1, int(self.ff * factor)),
                       bram=int(self.bram * factor))

    def to_json(self) -> dict:
        return {"part": self.part, "family": self.family, "lut": self.lut, "ff": self.ff, "dsp": self.dsp,
                "bram": self.bram, "headroom": dict(HEADROOM), "lut4_per_estimate": LUT4_PER_ESTIMATE,
                "fixed_lut4": FIXED_LUT4}


#: family of each :data:`PARTS` key, for ``--device PART`` (from the key's prefix)
_PART_FAMILY = (("iCE40", "ice40"), ("LFE5", "ecp5"), ("LCMXO", "machxo2"), ("GW", "gowin"), ("xc", "xilinx"),
                ("5C", "intel"), ("EP", "intel"), ("10M", "intel"))


def part_family(part: str) -> str:
    """The family of a :data:`PARTS` key (``LFE5-85F`` → ``ecp5``)."""
    return next(f for prefix, f in _PART_FAMILY if part.startswith(prefix))


def find_part(name: str) -> str:
    """The :data:`PARTS` key for ``name``: a key (case does not matter) or a full device name
    (``LFE5U-85F``, ``LFE5UM5G-85F``, ``iCE40UP5K``, ``xc7a35ti``).

    Raises
    ------
    BoardError
        For a part the table does not know; the message lists the keys.
    """
    keys = {k.lower(): k for k in PARTS}
    if name.lower() in keys:
        return keys[name.lower()]
    for family in ("ecp5", "machxo2", "gowin", "xilinx", "intel"):
        for spelling in (name, name.upper()):
            key = part_key(family, spelling)
            if key in PARTS:
                return key
    raise BoardError(f"--device {name!r}: unknown part; known parts: {', '.join(PARTS)}")


def device_budget(target: "BoardSpec | str") -> DeviceBudget | None:
    """The resources ``fold="auto"`` may fill on a board (a :class:`BoardSpec` or board name) or a part
    (``"part:KEY"`` or a :class:`Part` key via :func:`find_part`): the part's counts times :data:`HEADROOM`,
    LUTs converted to the planner's estimate units (:data:`LUT4_PER_ESTIMATE`, :data:`FIXED_LUT4`).

    Six-input LUTs and ALMs count double (as LUT4s). Returns ``None`` for a board whose part
    :data:`PARTS` does not know.
    """
    if isinstance(target, str) and target.startswith("part:"):
        key = find_part(target[5:])
        cap, family = PARTS[key], part_family(key)
    else:
        spec = get_board(target) if isinstance(target, str) else target
        cap, family = spec.capacity, spec.family
        if cap is None:
            return None
        key = part_key(family, spec.device)
    lut4 = cap.lut * (2 if cap.lut_kind in ("LUT6", "ALM") else 1)
    luts = max(MIN_LUT_BUDGET, int((HEADROOM["lut"] * lut4 - FIXED_LUT4) / LUT4_PER_ESTIMATE))
    return DeviceBudget(lut=luts, ff=int(HEADROOM["ff"] * cap.ff), dsp=int(HEADROOM["dsp"] * cap.dsp),
                        bram=int(HEADROOM["bram"] * cap.bram), family=family, part=key, capacity=cap)


def check_dsp_blocks(dsp_blocks, capacity: Part | None) -> int:
    """``dsp_blocks`` (``--dsp-blocks``) checked against the part's DSP count (``capacity``, when known).

    A build may give its products fewer DSP blocks than the part has: the allocator
    (:mod:`bitspike.gen.dsp`) keeps the widest products in blocks and builds the rest as pipelined
    logic, so fewer multipliers are spread over the die.

    Raises
    ------
    BoardError
        For a negative or non-integer count, or one above the part's.
    """
    if isinstance(dsp_blocks, bool) or not isinstance(dsp_blocks, int) or dsp_blocks < 0:
        raise BoardError(f"--dsp-blocks must be a non-negative number of DSP blocks, not {dsp_blocks!r}")
    if capacity is not None and dsp_blocks > capacity.dsp:
        raise BoardError(f"--dsp-blocks {dsp_blocks}: the part has {capacity.dsp} DSP blocks")
    return dsp_blocks


@dataclass(frozen=True)
class BoardSpec:
    """One amaranth-boards platform as a build target.

    Attributes
    ----------
    name
        What the user types (``--board NAME``): the amaranth-boards module name, plus the variant
        where a module has several platforms (``arty_a7_35``, ``ulx3s_85f``).
    platform
        ``"module:Class"`` of the amaranth-boards platform.
    family
        ``ice40``, ``ecp5``, ``gowin`` (open flow), ``xilinx``, ``intel``, ``machxo2``, ``quicklogic``.
    device, package
        As the platform names them (Gowin: ``device`` is the full part number).
    clock, clock_hz
        The platform's default clock resource (or on-chip oscillator) and its frequency.
    clock_is_oscillator
        The default clock is an on-chip oscillator (no pin): the platform's own clock domain is used.
    uart
        ``{"tx": pin, "rx": pin}`` of the ``uart`` resource, or ``None``.
    usb
        The board has a ``usb`` resource (USB wired to the FPGA, which needs a USB core of its own).
    toolchain
        Amaranth's toolchain for the platform (``IceStorm``, ``Trellis``, ``Apicula``, ``Vivado``, …).
    capacity
        The part's :class:`Part`, or ``None`` when :data:`PARTS` does not know it.
    error
        Why the platform cannot be used at all (it fails to instantiate), else ``None``.
    """

    name: str
    platform: str
    family: str
    device: str
    package: str
    clock: str | None
    clock_hz: int | None
    clock_is_oscillator: bool
    uart: dict | None
    usb: bool
    toolchain: str
    capacity: Part | None
    error: str | None = None
    synth_opts: str = field(default="")
    #: ``(tx, rx)`` pins given by the user (:meth:`with_uart`); the bridge then uses them, not a ``uart`` resource
    uart_pins: tuple[str, str] | None = None

    def with_uart(self, tx: str, rx: str) -> "BoardSpec":
        """This board with the bridge's UART on the pins ``tx`` and ``rx`` (a USB-serial adapter's wires).

        A pin is a package pin (``N17``) or a connector pin ``CONNECTOR_NUMBER:PIN`` (``io_0:0``,
        ``pmod_0:1``; the board's connectors are listed in amaranth-boards). The pins are driven at
        3.3 V LVCMOS, so they must be in a 3.3 V bank.

        Raises
        ------
        BoardError
            A malformed pin, or a connector the board does not have.
        """
        for pin in (tx, rx):
            if not re.fullmatch(r"[A-Za-z0-9_]+(:[A-Za-z0-9_]+)?", pin):
                raise BoardError(f"--uart-pins: {pin!r} is not a pin name (N17) or a connector pin (io_0:0)")
            if ":" in pin:
                conn, number = _connector(pin)
                connectors = {key for key in self.make_platform(plain=True).connectors}
                if (conn, number) not in connectors:
                    known = ", ".join(f"{c}_{n}" for c, n in sorted(connectors)) or "none"
                    raise BoardError(f"--uart-pins: {self.name} has no connector {conn}_{number} (it has {known})")
        from dataclasses import replace

        return replace(self, uart={"tx": tx, "rx": rx}, uart_pins=(tx, rx))

    @property
    def uart_resource(self) -> str:
        """The resource name the bridge requests: the board's ``uart``, or the one :meth:`with_uart` adds."""
        return "bitspike_uart" if self.uart_pins else "uart"

    # ---- derived

    @property
    def open_flow(self) -> bool:
        """Whether the pip-installed open tools build its bitstream here."""
        return self.family in OPEN_FAMILIES

    @property
    def resources(self) -> dict:
        """nextpnr cell type per reported resource (``LUT``, ``FF``, ``BRAM``, ``DSP``); empty for vendor families."""
        return _CELLS.get(self.family, {})

    @property
    def description(self) -> str:
        clock = f"{self.clock_hz / 1e6:g} MHz" if self.clock_hz else "no default clock"
        name = self.platform.split(':')[1].removesuffix('Platform').rstrip('_')  # ULX3S_85F_Platform → ULX3S_85F
        return f"{name} ({self.device}-{self.package}, {clock})"

    @property
    def serial_problem(self) -> str | None:
        """Why the host cannot reach the bitstream's UART bridge on this board, or ``None`` when it can."""
        if self.error:
            return f"amaranth-boards' platform cannot be instantiated: {self.error}"
        if self.clock_hz is None:
            return "the platform defines no default clock"
        if self.uart is None:
            if self.usb:
                return ("the board's USB port is wired straight to the FPGA and it has no UART resource: the host "
                        "link would need a USB (CDC-ACM) core, which bitspike does not have")
            return "the platform has no UART resource (no serial path from the FPGA to the host)"
        return None

    @property
    def usb_serial(self) -> UsbSerial | None:
        """The board's USB-serial converter (:data:`USB_SERIAL`), or ``None`` when bitspike does not know it.

        User pins (:meth:`with_uart`) go to an adapter bitspike knows nothing about.
        """
        return None if self.uart_pins else USB_SERIAL.get(self.name)

    @property
    def flow(self) -> str:
        """``"open"`` (bitstream built here), ``"vendor"`` (build plan archived) or ``"refused"`` (with the reason)."""
        if self.serial_problem:
            return "refused"
        return "open" if self.open_flow else "vendor"

    @property
    def bitstream_suffix(self) -> str:
        return {"ice40": ".bin", "ecp5": ".bit", "gowin": ".fs"}.get(self.family, "")

    def platform_class(self):
        module, cls = self.platform.split(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as exc:
            raise BoardError(f"board {self.name!r} needs {self.platform} from amaranth-boards (pip install amaranth-boards==0.0.21): {exc}") from exc

    def make_platform(self, plain: bool = False):
        """A fresh platform instance (Gowin platforms with the open Apicula toolchain), with the
        user's UART pins added as a resource unless ``plain``."""
        from amaranth.build import Attrs, Pins, Resource, Subsignal

        cls = self.platform_class()
        platform = cls(toolchain="Apicula") if self.family == "gowin" else cls()
        if self.uart_pins and not plain:
            def pins(pin, direction):
                if ":" in pin:
                    conn, number = _connector(pin)
                    return Pins(pin.split(":")[1], dir=direction, conn=(conn, number))
                return Pins(pin, dir=direction)

            tx, rx = self.uart_pins
            platform.add_resources([Resource("bitspike_uart", 0, Subsignal("tx", pins(tx, "o")),
                                             Subsignal("rx", pins(rx, "i")), Attrs(**_IO_3V3.get(self.family, {})))])
        return platform

    def to_json(self) -> dict:
        return {"name": self.name, "platform": self.platform, "family": self.family, "device": self.device,
                "package": self.package, "clock": self.clock, "clock_hz": self.clock_hz,
                "clock_is_oscillator": self.clock_is_oscillator, "uart": self.uart, "usb": self.usb,
                "toolchain": self.toolchain, "capacity": self.capacity.to_json() if self.capacity else None,
                "flow": self.flow, "serial_problem": self.serial_problem, "lut_budget": lut_budget(self),
                "usb_serial": self.usb_serial.to_json() if self.usb_serial else None,
                "default_baud": default_baud(self) if self.clock_hz else None, "error": self.error}


# ----------------------------------------------------------------------------------------------
# introspection


#: 3.3 V LVCMOS in each family's attribute names (the user's UART pins)
_IO_3V3 = {"ice40": {"IO_STANDARD": "SB_LVCMOS"}, "ecp5": {"IO_TYPE": "LVCMOS33"}, "gowin": {"IO_TYPE": "LVCMOS33"},
           "xilinx": {"IOSTANDARD": "LVCMOS33"}, "intel": {"io_standard": "3.3-V LVCMOS"},
           "machxo2": {"IO_TYPE": "LVCMOS33"}}


def _connector(pin: str) -> tuple[str, int]:
    conn = pin.split(":")[0]
    name, _, number = conn.rpartition("_")
    if not name or not number.isdigit():
        raise BoardError(f"--uart-pins: connector {conn!r} must be NAME_NUMBER (io_0, pmod_1)")
    return name, int(number)


def part_key(family: str, device: str) -> str:
    """The :data:`PARTS` key of a platform's device (speed grade, package and variant letters dropped)."""
    if family == "ecp5":  # LFE5U-25F, LFE5UM-45F, LFE5UM5G-85F: one fabric per size
        m = re.match(r"LFE5U(?:M5G|M)?-(\d+F)", device)
        return f"LFE5-{m.group(1)}" if m else device
    if family == "machxo2":  # LCMXO2-1200HC, LCMXO3LF-6900C
        m = re.match(r"(LCMXO[23])\w*?-(\d+)", device)
        return f"{m.group(1)}-{m.group(2)}" if m else device
    if family == "gowin":  # the family name: GW1NR-9C → GW1N-9 (the R parts add PSRAM, the C variant a core)
        m = re.match(r"(GW\d[A-Z]+?)R?(?:S|SE|Z|F)?-(\d+)", device)
        if m:
            series = m.group(1).replace("GW1NZ", "GW1N").replace("GW1NS", "GW1N")
            return f"{series}-{m.group(2)}"
        return device
    if family == "xilinx":  # xc7a35ti (industrial) → xc7a35t
        d = device.lower()
        return d[:-1] if re.fullmatch(r"xc7[aksz]\d+ti", d) else d
    if family == "intel":  # 10M50DA → 10M50
        m = re.match(r"(10M\d+)", device)
        return m.group(1) if m else device
    return device


def part_capacity(spec_or_family, device: str | None = None) -> Part | None:
    """The data-sheet :class:`Part` of a board (a :class:`BoardSpec`) or of ``(family, device)``."""
    if isinstance(spec_or_family, BoardSpec):
        return spec_or_family.capacity
    return PARTS.get(part_key(spec_or_family, device or ""))


def lut_budget(board: "BoardSpec | str") -> int | None:
    """The LUT part of :func:`device_budget` (in the planner's estimate units), or ``None`` for an unknown part.

    There is no cap any more: the old one (1,000) kept place-and-route time down when the fold
    could only grow with the budget; ``fold="auto"`` now stops at the floor the streams set (the
    digits MLP reaches it at a few thousand estimated LUTs), and a network that fills the part
    takes longer to place and route (bench/results/hw.md states the build times).
    """
    budget = device_budget(board)
    return None if budget is None else budget.lut


def check_baud(board: "BoardSpec", baud: int):
    """The UART bit period (clocks per bit of the board's clock) for ``baud``, checked against the board:
    an integer where one is within 2 % of the rate, else the exact ratio as a :class:`~fractions.Fraction`
    (:func:`~bitspike.rtl_templates.uart.clocks_per_bit_for`).

    Raises
    ------
    BoardError
        A rate above what the board's USB-serial converter takes, or one its clock cannot make:
        no integer period within 2 % and the exact one under
        :data:`~bitspike.rtl_templates.uart.MIN_FRACTIONAL_CLOCKS_PER_BIT` clocks.
    """
    from bitspike.rtl_templates.uart import clocks_per_bit_for

    if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
        raise BoardError(f"--baud must be a positive integer, not {baud!r}")
    usb = board.usb_serial
    if usb is not None and baud > usb.max_baud:
        raise BoardError(f"--baud {baud}: {board.name}'s USB-serial converter ({usb.chip}) takes at most "
                         f"{usb.max_baud} baud ({usb.source})")
    if not board.clock_hz:
        raise BoardError(f"--baud {baud}: {board.name} has no default clock to make it from")
    try:
        return clocks_per_bit_for(int(board.clock_hz), baud)
    except ValueError as exc:
        raise BoardError(f"--baud {baud} does not work on {board.name}: {exc}") from None


def default_baud(board: "BoardSpec | str") -> int:
    """The link rate a build uses when none is given.

    On a board whose USB-serial converter bitspike knows (:data:`USB_SERIAL`): the fastest of
    :data:`LINK_RATES` it takes and the board's clock makes within 1 %, by an integer bit period or
    an exact fractional one (the iCEBreaker's 12 MHz makes 3 Mbaud in 4 clocks; the ULX3S's 25 MHz
    makes it in 25/3, where 8 clocks would be 4 % fast). Elsewhere :data:`DEFAULT_BAUD` when the
    clock makes it, else the fastest of the classic rates down to 115200 that it does.
    """
    spec = get_board(board) if isinstance(board, str) else board
    candidates = LINK_RATES if spec.usb_serial is not None else (DEFAULT_BAUD,)
    candidates = tuple(candidates) + (921_600, 460_800, 230_400, 115_200)
    for baud in candidates:
        try:
            cpb = check_baud(spec, baud)
        except BoardError:
            continue
        # a 2 % error on top of the converter's own is too much where a cleaner rate is slower
        # but close: keep to rates within 1 % unless nothing else works
        if abs(spec.clock_hz / cpb - baud) / baud <= 0.01:
            return baud
    return 115_200


def _family_of(cls, platform) -> str | None:
    for base in cls.__mro__:
        if base.__name__ in _VENDOR_FAMILY and base.__module__.startswith("amaranth.vendor"):
            return _VENDOR_FAMILY[base.__name__]
        if base.__name__ == "LatticePlatform" and base.__module__.startswith("amaranth.vendor"):
            return {"ecp5": "ecp5", "machxo2": "machxo2", "machxo3l": "machxo2"}.get(getattr(platform, "family", ""),
                                                                                     getattr(platform, "family", None))
    return None


def _board_name(module: str, cls_name: str, n_in_module: int) -> str:
    stem = cls_name.removesuffix("Platform").rstrip("_").lower()
    if n_in_module == 1:
        return module.lower()
    flat_module, flat_cls = module.lower().replace("_", ""), stem.replace("_", "")
    if flat_cls.startswith(flat_module):
        suffix = flat_cls[len(flat_module):]
        return module.lower() + (f"_{suffix}" if suffix else "")
    # a class named after its own board in a module shared with others (nitefury: LitefuryPlatform)
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls_name.removesuffix("Platform")).strip("_").lower()


def _pins(resource, subsignal: str) -> str | None:
    for sub in resource.ios:
        if getattr(sub, "name", None) == subsignal:
            names = [n for io in sub.ios for n in getattr(io, "names", [])]
            return " ".join(names) if names else None
    return None


def _spec(module: str, cls_name: str, cls, n_in_module: int) -> BoardSpec | None:
    name = _board_name(module, cls_name, n_in_module)
    platform_ref = f"amaranth_boards.{module}:{cls_name}"
    try:
        platform = cls()
    except Exception as exc:  # noqa: BLE001 - amaranth-boards ships a few platforms amaranth itself rejects
        family = _VENDOR_FAMILY.get(next((b.__name__ for b in cls.__mro__ if b.__name__ in _VENDOR_FAMILY), ""), "?")
        device = str(getattr(cls, "part", None) or getattr(cls, "device", "?"))
        capacity = PARTS.get(part_key(family, str(getattr(cls, "family", None) or device)))
        return BoardSpec(name, platform_ref, family, device, "?", None, None, False, None, False,
                         "?", capacity, error=f"{type(exc).__name__}: {exc}")
    family = _family_of(cls, platform)
    if family is None:
        return None
    device = str(getattr(platform, "part", None) if family == "gowin" else getattr(platform, "device", "?"))
    package = str(getattr(platform, "package", "?"))
    resource_names = {key[0] for key in platform.resources}
    clock = platform.default_clk
    try:
        clock_hz = int(platform.default_clk_frequency)
    except (AttributeError, TypeError, ValueError):  # no default clock
        clock_hz = None
    uart = None
    if ("uart", 0) in platform.resources:
        res = platform.resources[("uart", 0)]
        tx, rx = _pins(res, "tx"), _pins(res, "rx")
        if tx and rx:
            uart = {"tx": tx, "rx": rx}
    # Gowin platforms name the die in ``family`` (GW1NR-9C); the others' ``device`` is the part
    capacity = PARTS.get(part_key(family, str(platform.family) if family == "gowin" else device))
    synth_opts = "-dsp" if family == "ice40" and capacity is not None and capacity.dsp else ""
    return BoardSpec(name, platform_ref, family, device, package, clock, clock_hz,
                     clock is not None and clock not in resource_names, uart, "usb" in resource_names,
                     str(getattr(platform, "toolchain", "?")), capacity, synth_opts=synth_opts)


@lru_cache(maxsize=1)
def all_boards() -> dict[str, BoardSpec]:
    """Every platform of the installed amaranth-boards, by board name (cached; imports each module once)."""
    try:
        import amaranth_boards
        from amaranth.build import Platform
    except ImportError as exc:
        raise BoardError(f"amaranth-boards is not installed (pip install amaranth-boards==0.0.21): {exc}") from exc
    out: dict[str, BoardSpec] = {}
    for info in sorted(pkgutil.iter_modules(amaranth_boards.__path__), key=lambda i: i.name):
        if info.ispkg or info.name.startswith("_"):
            continue
        try:
            mod = importlib.import_module(f"amaranth_boards.{info.name}")
        except Exception:  # noqa: BLE001 - a board module that fails to import is simply not offered
            continue
        classes = [(n, c) for n, c in sorted(vars(mod).items())
                   if inspect.isclass(c) and issubclass(c, Platform) and c.__module__ == mod.__name__
                   and not inspect.isabstract(c)]
        for cls_name, cls in classes:
            spec = _spec(info.name, cls_name, cls, len(classes))
            if spec is not None:
                out[spec.name] = spec
    return dict(sorted(out.items()))


def board_names() -> list[str]:
    return list(all_boards())


def get_board(name: str) -> BoardSpec:
    """The :class:`BoardSpec` for ``name`` (case and ``-``/``_`` do not matter; aliases accepted).

    Raises
    ------
    BoardError
        For an unknown name; the message lists the known ones.
    """
    boards = all_boards()
    key = name.lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in boards:
        close = [n for n in boards if key and (key in n or n in key)]
        hint = f"; did you mean {', '.join(close[:5])}?" if close else ""
        examples = ", ".join(["icebreaker", "ulx3s_85f", "tang_nano_9k", "arty_a7_35"])
        raise BoardError(f"unknown board {name!r}{hint} (`bitspike boards` lists all {len(boards)}, e.g. {examples})")
    return boards[key]


def board_table() -> list[dict]:
    """The rows ``bitspike boards`` prints (and writes with ``--json``), sorted by family then name."""
    order = {f: i for i, f in enumerate(OPEN_FAMILIES + ("xilinx", "intel", "machxo2", "quicklogic"))}
    specs = sorted(all_boards().values(), key=lambda s: (order.get(s.family, 99), s.name))
    return [s.to_json() for s in specs]
