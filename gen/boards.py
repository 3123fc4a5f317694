"""The boards ``bitspike build`` knows: amaranth-boards platforms plus what the build needs about them.

Each :class:`BoardSpec` names an amaranth-boards platform class, the FPGA
family (which selects the toolchain: yosys + nextpnr-ice40 + icepack, or
yosys + nextpnr-ecp5 + ecppack), and how to read utilization from nextpnr's
report. The device totals come from nextpnr itself at build time, so they
are always those of the exact device.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from bitspike.errors import BoardError

__all__ = ["BoardSpec", "BOARDS", "get_board", "board_names"]


@dataclass(frozen=True)
class BoardSpec:
    """One build target.

    Attributes
    ----------
    name
        What the user types (``--board NAME``).
    platform
        ``"module:Class"`` of the amaranth-boards platform.
    family
        ``"ice40"`` or ``"ecp5"``.
    description
        Board and device, for reports.
    resources
        nextpnr cell type for each reported resource (``LUT``, ``FF``, ``BRAM``, ``DSP``);
        ``FF`` may be ``None`` where nextpnr does not count flip-flops separately (iCE40:
        a logic cell holds a LUT and a flip-flop; the count comes from the synthesis log).
    synth_opts
        Extra ``synth_ice40`` / ``synth_ecp5`` options.
    default_max_luts
        The generator's LUT budget (``--max-luts``) when the user gives neither a fold nor a
        budget; ``None`` keeps the generator's default. Measured: on the iCEBreaker the
        generator's default folds the digits MLP 8×8 (66 multipliers, 39 block RAMs: no fit),
        while 600 gives 2×4, which fits (about two thirds of the logic cells with the bridge).
    """

    name: str
    platform: str
    family: str
    description: str
    resources: dict = field(default_factory=dict)
    synth_opts: str = ""
    default_max_luts: int | None = None

    def platform_class(self):
        module, cls = self.platform.split(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as exc:
            raise BoardError(f"board {self.name!r} needs {self.platform} from amaranth-boards (pip install amaranth-boards==0.0.21): {exc}") from exc

    @property
    def bitstream_suffix(self) -> str:
        return ".bin" if self.family == "ice40" else ".bit"


_ICE40 = {"LUT": "ICESTORM_LC", "FF": None, "BRAM": "ICESTORM_RAM", "DSP": "ICESTORM_DSP"}
_ECP5 = {"LUT": "TRELLIS_COMB", "FF": "TRELLIS_FF", "BRAM": "DP16KD", "DSP": "MULT18X18D"}

BOARDS: dict[str, BoardSpec] = {
    spec.name: spec
    for spec in [
        BoardSpec("icebreaker", "amaranth_boards.icebreaker:ICEBreakerPlatform", "ice40",
                  "1BitSquared iCEBreaker, iCE40UP5K-SG48, 12 MHz", _ICE40, synth_opts="-dsp",
                  default_max_luts=600),
        BoardSpec("ice40-hx8k", "amaranth_boards.ice40_hx8k_b_evn:ICE40HX8KBEVNPlatform", "ice40",
                  "Lattice iCE40-HX8K breakout, iCE40HX8K-CT256, 12 MHz", _ICE40,
                  default_max_luts=800),
        BoardSpec("ulx3s-85f", "amaranth_boards.ulx3s:ULX3S_85F_Platform", "ecp5",
                  "Radiona ULX3S, ECP5 LFE5U-85F-6BG381, 25 MHz", _ECP5),
        BoardSpec("ecp5-25f", "amaranth_boards.ulx3s:ULX3S_25F_Platform", "ecp5",
                  "ECP5 LFE5U-25F-6BG381 (ULX3S-25F pinout), 25 MHz", _ECP5),
    ]
}
#: other names users type for the same targets
ALIASES = {"ulx3s": "ulx3s-85f", "ulx3s-25f": "ecp5-25f", "hx8k": "ice40-hx8k", "up5k": "icebreaker"}


def board_names() -> list[str]:
    return sorted(BOARDS)


def get_board(name: str) -> BoardSpec:
    """The :class:`BoardSpec` for ``name`` (or an alias).

    Raises
    ------
    BoardError
        For an unknown name; the message lists the known ones.
    """
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BOARDS:
        raise BoardError(f"unknown board {name!r}; expected one of {', '.join(board_names())}")
    return BOARDS[key]
