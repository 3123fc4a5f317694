"""Clocking: PLL settings for iCE40 and ECP5, and the PLL instances a board top uses.

The accelerator runs in its own clock domain (``acc``) from the board's PLL,
the UART bridge in the oscillator's domain (``sync``); the two meet in the
bridge's clock-domain crossing (:class:`~bitspike.rtl_templates.bridge.Bridge`
with ``accel_domain``: a dual-clock pixel buffer started by a pulse
synchronizer, and an asynchronous FIFO with Gray-coded pointers for the
results).

The divider searches below implement the data sheets' PLL equations and
ranges (iCE40: Lattice TN1251 "iCE40 sysCLOCK PLL Design and Usage Guide";
ECP5: Lattice TN1263 "ECP5 and ECP5-5G sysCLOCK PLL/DLL Design and Usage
Guide"). They choose the highest output frequency not above the one asked
for, so a design never runs faster than the timing result allows.

A PLL cannot be simulated here (its primitives are vendor cells); the
simulated board drives the two domains with two unrelated clocks instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Instance, Signal

__all__ = ["PllSetting", "ice40_pll", "ecp5_pll", "pll_setting", "PLL_FAMILIES", "pll_instance"]

#: families whose board top gets a PLL for the accelerator
PLL_FAMILIES = ("ice40", "ecp5")


@dataclass(frozen=True)
class PllSetting:
    """One PLL configuration: the frequencies it gives and the primitive's divider parameters."""

    family: str
    f_in_hz: int
    f_out_hz: float
    f_vco_hz: float
    params: dict

    @property
    def f_out_mhz(self) -> float:
        return self.f_out_hz / 1e6

    def to_json(self) -> dict:
        return {"family": self.family, "f_in_hz": self.f_in_hz, "f_out_hz": round(self.f_out_hz, 3),
                "f_vco_hz": round(self.f_vco_hz, 3), "params": dict(self.params)}


def ice40_pll(f_in_hz: int, f_max_hz: float) -> PllSetting:
    """The iCE40 PLL (simple feedback) setting with the highest output ≤ ``f_max_hz``.

    ``f_out = f_in · (DIVF + 1) / ((DIVR + 1) · 2^DIVQ)`` with the phase detector at 10 … 133 MHz,
    the VCO at 533 … 1066 MHz, DIVR 0 … 15, DIVF 0 … 127, DIVQ 1 … 6 and the output at 16 … 275 MHz.

    Raises
    ------
    ValueError
        When no setting gives 16 MHz … ``f_max_hz`` from ``f_in_hz``.
    """
    best = None
    for divr in range(16):
        f_pfd = f_in_hz / (divr + 1)
        if not 10e6 <= f_pfd <= 133e6:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533e6 <= f_vco <= 1066e6:
                continue
            for divq in range(1, 7):
                f_out = f_vco / 2 ** divq
                if not 16e6 <= f_out <= min(275e6, f_max_hz):
                    continue
                if best is None or f_out > best[0] + 1e-6:
                    best = (f_out, f_vco, divr, divf, divq, f_pfd)
    if best is None:
        raise ValueError(f"no iCE40 PLL setting gives 16 MHz … {f_max_hz / 1e6:.2f} MHz from {f_in_hz / 1e6:g} MHz")
    f_out, f_vco, divr, divf, divq, f_pfd = best
    # the loop filter range follows the phase detector frequency (TN1251's table)
    filter_range = next(i for i, top in enumerate((17e6, 26e6, 44e6, 66e6, 101e6, float("inf")), start=1) if f_pfd < top)
    params = {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": filter_range}
    return PllSetting("ice40", f_in_hz, f_out, f_vco, params)


def ecp5_pll(f_in_hz: int, f_max_hz: float) -> PllSetting:
    """The ECP5 EHXPLLL setting (feedback from CLKOP) with the highest output ≤ ``f_max_hz``.

    ``f_out = f_in · CLKFB_DIV / CLKI_DIV`` and ``f_vco = f_out · CLKOP_DIV``, with the phase
    detector at 3.125 … 400 MHz, the VCO at 400 … 800 MHz, the dividers 1 … 128 and the output at
    3.125 … 400 MHz.

    Raises
    ------
    ValueError
        When no setting gives an output ≤ ``f_max_hz``.
    """
    best = None
    for clki in range(1, 129):
        f_pfd = f_in_hz / clki
        if f_pfd < 3.125e6:
            break
        if f_pfd > 400e6:
            continue
        for clkfb in range(1, 81):
            f_out = f_pfd * clkfb
            if not 3.125e6 <= f_out <= min(400e6, f_max_hz):
                continue
            for clkop in range(1, 129):
                f_vco = f_out * clkop
                if 400e6 <= f_vco <= 800e6:
                    if best is None or f_out > best[0] + 1e-6:
                        best = (f_out, f_vco, clki, clkfb, clkop)
                    break
    if best is None:
        raise ValueError(f"no ECP5 PLL setting gives an output ≤ {f_max_hz / 1e6:.2f} MHz from {f_in_hz / 1e6:g} MHz")
    f_out, f_vco, clki, clkfb, clkop = best
    params = {"CLKI_DIV": clki, "CLKFB_DIV": clkfb, "CLKOP_DIV": clkop, "CLKOP_CPHASE": clkop - 1}
    return PllSetting("ecp5", f_in_hz, f_out, f_vco, params)


def pll_setting(family: str, f_in_hz: int, f_max_hz: float) -> PllSetting:
    """:func:`ice40_pll` or :func:`ecp5_pll` for ``family``."""
    if family == "ice40":
        return ice40_pll(f_in_hz, f_max_hz)
    if family == "ecp5":
        return ecp5_pll(f_in_hz, f_max_hz)
    raise ValueError(f"bitspike has no PLL for the {family} family (it has one for {', '.join(PLL_FAMILIES)})")


def pll_instance(setting: PllSetting, *, clk_in=None, pad=None):
    """The PLL primitive for ``setting``: ``(instance, reference_clock, pll_clock, lock)``.

    iCE40 takes the board clock's pad (``pad``, an I/O port requested with ``dir="-"``) into an
    ``SB_PLL40_2_PAD``, whose port A passes the reference clock through (the link's domain) and
    whose port B is the PLL's output; ECP5 takes the buffered clock (``clk_in``) into an
    ``EHXPLLL`` and the reference clock is ``clk_in`` itself.
    """
    out = Signal(name="pll_clk")
    lock = Signal(name="pll_lock")
    p = setting.params
    if setting.family == "ice40":
        if pad is None:
            raise ValueError("an iCE40 PLL needs the clock pad (pad=)")
        ref = Signal(name="ref_clk")
        inst = Instance(
            "SB_PLL40_2_PAD",
            p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT_PORTB="GENCLK",
            p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"], p_FILTER_RANGE=p["FILTER_RANGE"],
            i_PACKAGEPIN=pad, i_RESETB=1, i_BYPASS=0,
            o_PLLOUTGLOBALA=ref, o_PLLOUTGLOBALB=out, o_LOCK=lock,
        )
        return inst, ref, out, lock
    if setting.family == "ecp5":
        if clk_in is None:
            raise ValueError("an ECP5 PLL needs the buffered board clock (clk_in=)")
        inst = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{setting.f_in_hz / 1e6:g}", a_FREQUENCY_PIN_CLKOP=f"{setting.f_out_hz / 1e6:.6f}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"], p_CLKOP_DIV=p["CLKOP_DIV"],
            p_CLKOP_CPHASE=p["CLKOP_CPHASE"], p_CLKOP_FPHASE=0, p_CLKOP_ENABLE="ENABLED", p_FEEDBK_PATH="CLKOP",
            i_CLKI=clk_in, i_CLKFB=out, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=0,
            i_PHASESTEP=0, i_PHASELOADREG=0, i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=out, o_LOCK=lock,
        )
        return inst, clk_in, out, lock
    raise ValueError(f"no PLL primitive for {setting.family}")
