"""Bitstream builds: board registry, toolchain output parsing, and real builds through yosys + nextpnr.

The default run builds the co-simulation stand-in accelerator (bitspike/testing/standin.py)
behind the UART bridge for one iCE40 target. The slow tests build the stand-in
for ECP5 and Gowin, and real generated networks for one board of each open
family (icebreaker, ulx3s_85f, tang_nano_9k).
"""

from __future__ import annotations

import json

import pytest

from bitspike.errors import BoardError, HardwareError
from bitspike.gen.boards import board_names, get_board
from bitspike.gen.build import build_bitstream, overflow_error, parse_nextpnr, report_markdown, yosys_flip_flops

NEXTPNR_FAILED_LOG = """\
Info: Device utilisation:
Info: \t         ICESTORM_LC:    4597/   5280    87%
Info: \t        ICESTORM_RAM:      39/     30   130%
Info: \t               SB_IO:       3/     39     7%
Info: \t        ICESTORM_DSP:      66/      8   825%
ERROR: Unable to place cell 'design.x_SB_MAC16_O_DSP', no BELs remaining to implement cell type 'ICESTORM_DSP'
"""

YOSYS_STATS = """\
3.59. Printing statistics.

=== top ===
       10   SB_DFF
       70   SB_DFFE

=== design hierarchy ===
       10   SB_DFF
       70   SB_DFFE
      324   SB_DFFESR
       24   SB_DFFSR
      219   SB_CARRY
"""


def test_board_registry():
    assert {"icebreaker", "ulx3s_85f", "ulx3s_25f", "ice40_hx8k_b_evn", "tang_nano_9k", "arty_a7_35"} <= set(board_names())
    assert get_board("ULX3S").name == "ulx3s_85f"
    with pytest.raises(BoardError, match="unknown board 'de10'.*bitspike boards"):
        get_board("de10")
    for name in board_names():
        spec = get_board(name)
        if spec.flow == "open":
            platform = spec.make_platform()
            assert platform.default_clk_frequency == spec.clock_hz > 0


def test_parse_nextpnr_log_and_overflow_message():
    parsed = parse_nextpnr(None, NEXTPNR_FAILED_LOG)
    assert parsed["cells"]["ICESTORM_RAM"] == {"used": 39, "available": 30}
    err = overflow_error(get_board("icebreaker"), parsed["cells"], NEXTPNR_FAILED_LOG)
    assert isinstance(err, HardwareError)
    text = str(err)
    assert "BRAM (ICESTORM_RAM): needs 39, the device has 30 (9 too many" in text
    assert "DSP (ICESTORM_DSP): needs 66" in text
    assert "smaller fold" in text and "fewer bits" in text
    assert overflow_error(get_board("icebreaker"), {"ICESTORM_LC": {"used": 1, "available": 2}}, "") is None


def test_parse_nextpnr_report_json(tmp_path):
    report = tmp_path / "r.json"
    report.write_text(json.dumps({
        "utilization": {"TRELLIS_COMB": {"used": 900, "available": 83640}},
        "fmax": {"clk": {"achieved": 61.5, "constraint": 25.0}},
        "critical_paths": [
            {"from": "posedge clk", "to": "posedge clk", "path": [
                {"type": "clk-to-q", "delay": 0.52, "from": {"cell": "design.e0.rd_word_TRELLIS_FF_Q_3"}},
                {"type": "routing", "delay": 1.25},
                {"type": "logic", "delay": 0.4},
                {"type": "routing", "delay": 0.83, "to": {"cell": "design.e0.acc_TRELLIS_FF_Q_7"}}]},
            {"from": "posedge clk", "to": "posedge acc_clk", "path": [{"type": "routing", "delay": 3.0}]},
            {"from": "<async>", "to": "<async>", "path": [{"type": "routing", "delay": 1.0}]}],
    }))
    parsed = parse_nextpnr(report, "")
    assert parsed["cells"]["TRELLIS_COMB"] == {"used": 900, "available": 83640}
    assert parsed["fmax_mhz"] == {"clk": (61.5, 25.0)}
    # a clock's own worst path, named by the design's registers; cross-domain and pin paths are left out
    assert parsed["critical_paths"] == [{"clock": "posedge clk", "from": "design.e0.rd_word", "to": "design.e0.acc",
                                         "steps": 4, "delay_ns": 3.0, "logic_ns": 0.92, "routing_ns": 2.08}]
    assert parse_nextpnr(None, "")["critical_paths"] == []


def test_flip_flops_from_the_hierarchy_totals():
    assert yosys_flip_flops(YOSYS_STATS, "ice40") == 428
    assert yosys_flip_flops("no stats here", "ice40") is None


def test_unusable_baud_is_refused(tmp_path, standin_design):
    gen = standin_design(tmp_path / "gen", "test_build stand-in")
    with pytest.raises(HardwareError, match="--baud 2500000"):
        build_bitstream(None, "icebreaker", tmp_path / "out", gen_dir=gen, baud=2_500_000)
    # 25 MHz / 8 = 3.125 Mbaud would make the clock, but the ULX3S's FT231X stops at 3 Mbaud
    with pytest.raises(HardwareError, match=r"--baud 3125000: ulx3s_85f's USB-serial converter \(FTDI FT231XS\) takes at most 3000000"):
        build_bitstream(None, "ulx3s_85f", tmp_path / "out", gen_dir=gen, baud=3_125_000)
    with pytest.raises(HardwareError, match="--clock 50: .*only on iCE40 and ECP5"):
        build_bitstream(None, "tang_nano_9k", tmp_path / "out", gen_dir=gen, clock_mhz=50)


def test_default_link_rates_per_board():
    from bitspike.gen.boards import USB_SERIAL, default_baud

    # 12 MHz makes 3 Mbaud in exactly 4 clocks; 25 MHz makes it in 25/3 (8 would be 4 % fast): a fractional period
    assert default_baud("icebreaker") == 3_000_000 and default_baud("ulx3s_85f") == 3_000_000
    assert default_baud("tang_nano_9k") == 1_000_000  # no converter on record: the conservative rate
    assert USB_SERIAL["ulx3s_85f"].max_baud == 3_000_000 and "FT231X" in USB_SERIAL["ulx3s_85f"].source
    assert get_board("icebreaker").to_json()["default_baud"] == 3_000_000


def test_pll_settings_follow_the_data_sheet_equations():
    from bitspike.rtl_templates.clocking import ecp5_pll, ice40_pll

    s = ice40_pll(12_000_000, 40e6)  # the iCEBreaker's 40 MHz: 12 · 53 / 16
    assert s.params == {"DIVR": 0, "DIVF": 52, "DIVQ": 4, "FILTER_RANGE": 1} and s.f_out_hz == 39_750_000
    for f_max in (18e6, 23.4e6, 37.17e6, 80e6, 275e6):
        s = ice40_pll(12_000_000, f_max)
        p = s.params
        assert s.f_out_hz * (p["DIVR"] + 1) * 2 ** p["DIVQ"] == 12_000_000 * (p["DIVF"] + 1) and s.f_out_hz <= f_max
        assert 533e6 <= s.f_vco_hz <= 1066e6
    with pytest.raises(ValueError, match="no iCE40 PLL setting"):
        ice40_pll(12_000_000, 16.1e6)  # 16 … 16.1 MHz: no multiple of 12 MHz / 2^DIVQ lands there
    e = ecp5_pll(25_000_000, 104.11e6)
    p = e.params
    assert e.f_out_hz * p["CLKI_DIV"] == 25_000_000 * p["CLKFB_DIV"] and e.f_out_hz <= 104.11e6
    assert 400e6 <= e.f_out_hz * p["CLKOP_DIV"] <= 800e6 and p["CLKOP_CPHASE"] == p["CLKOP_DIV"] - 1
    assert (p["CLKI_DIV"], p["CLKFB_DIV"]) == (7, 29)  # 103.571 MHz: nothing in 103.58 … 104.11 is reachable


def test_accelerator_and_link_fmax_are_told_apart():
    from bitspike.gen.build import domain_fmax
    from bitspike.rtl_templates.clocking import ice40_pll

    parsed = {"fmax_mhz": {"acc_clk": (41.5, 39.75), "clk": (60.2, 12.0)}}
    assert domain_fmax(parsed, 12e6, ice40_pll(12_000_000, 40e6)) == (41.5, 60.2)
    assert domain_fmax({"fmax_mhz": {"clk": (37.17, 12.0)}}, 12e6, None) == (37.17, 37.17)


def _check_report(out, board, family, suffix):
    report = json.loads((out / "report.json").read_text())
    assert report["board"] == board and report["family"] == family
    bitstream = out / report["bitstream"]
    assert bitstream.suffix == suffix and bitstream.stat().st_size > 1000
    for res in ("LUT", "FF", "BRAM", "DSP"):
        v = report["utilization"][res]
        assert 0 <= v["used"] <= v["available"], (res, v)
        assert v["percent"] == round(100 * v["used"] / v["available"], 1)
    assert report["utilization"]["LUT"]["used"] > 100 and report["utilization"]["FF"]["used"] > 100
    assert report["fmax_mhz"] > 1.0
    assert report["timing_met"] == (report["fmax_mhz"] >= report["clock_mhz"])
    assert report["cycles_per_inference"] > 0
    assert report["compute"]["at_clock"]["latency_s"] == pytest.approx(report["cycles_per_inference"] / report["accel_clock_hz"])
    bpi = report["link"]["bytes_per_image"]  # protocol v2: the busier direction sets the rate
    assert report["link"]["images_per_second"] == pytest.approx(report["baud"] / 10 / max(bpi["to_board"], bpi["to_host"]))
    md = (out / "report.md").read_text()
    assert md == report_markdown(report) and "Fmax" in md and "LUT" in md
    assert json.loads((out / "build_stats.json").read_text())["total_seconds"] > 0
    return report


def test_build_standin_for_icebreaker(tmp_path, standin_design):
    # the accelerator on the PLL (SB_PLL40_2_PAD) at 16.5 MHz and the bridge on the 12 MHz oscillator at the
    # board's default 3 Mbaud; nextpnr times each domain, and a missed clock is built once more below its Fmax
    gen = standin_design(tmp_path / "gen", "test_build stand-in")
    result = build_bitstream(None, "icebreaker", tmp_path / "out", gen_dir=gen, clock_mhz=16.5)
    report = _check_report(tmp_path / "out", "icebreaker", "ice40", ".bin")
    assert report["clock_hz"] == 12_000_000 and report["baud"] == 3_000_000 and report["clocks_per_bit"] == 4
    first, *again = report["clock_passes"]
    assert first["accelerator_clock_mhz"] == 16.5
    assert first["pll"]["params"] == {"DIVR": 0, "DIVF": 87, "DIVQ": 6, "FILTER_RANGE": 1}  # 12 MHz · 88 / 64
    if first["accelerator_fmax_mhz"] >= 16.5:
        assert again == [] and report["accel_clock_hz"] == 16_500_000 and report["timing_met"]
    else:  # at most one more pass, at a PLL clock not above the Fmax reached
        assert len(again) <= 1
        assert all(p["accelerator_clock_mhz"] <= first["accelerator_fmax_mhz"] for p in again)
    assert report["clock_mhz"] == report["clock_passes"][-1]["accelerator_clock_mhz"]
    for i, p in enumerate(report["clock_passes"]):  # each pass keeps its own worst path per clock, in the report too
        assert {cp["clock"] for cp in p["critical_paths"]} >= {"posedge acc_clk"}, p
        for cp in p["critical_paths"]:
            assert cp["delay_ns"] > 0 and cp["delay_ns"] == pytest.approx(cp["logic_ns"] + cp["routing_ns"], abs=0.011)
        assert f"Critical paths, pass {i + 1} of {len(report['clock_passes'])}" in (tmp_path / "out" / "report.md").read_text()
    assert report["fmax_mhz"] > 1.0 and report["link_fmax_mhz"] >= 12.0
    assert report["usb_serial"]["max_baud"] == 12_000_000
    assert result["build_seconds"]["toolchain"] > 0


@pytest.mark.slow
def test_build_standin_for_ecp5_25f(tmp_path, standin_design):
    gen = standin_design(tmp_path / "gen", "test_build stand-in")
    build_bitstream(None, "ecp5-25f", tmp_path / "out", gen_dir=gen, baud=1_000_000, clock_mhz=40)
    report = _check_report(tmp_path / "out", "ulx3s_25f", "ecp5", ".bit")
    assert report["clock_hz"] == 25_000_000 and report["clocks_per_bit"] == 25
    assert report["clock_passes"][0]["pll"]["family"] == "ecp5"
    # the accelerator's reset reaches its flip-flops on a global network (a DCCA), not through fabric routing
    log = (tmp_path / "out" / "build" / "top.tim").read_text()
    assert "routing clock net acc_rst using global" in log, log


@pytest.mark.slow  # a Yosys run of a 40000-pixel design; the overflow message itself is checked in test_parse_nextpnr_log_and_overflow_message
def test_design_too_big_fails_clearly(tmp_path, standin_design):
    # a 40000-pixel image: the bridge's frame buffer alone needs ~80 of the HX8K's 32 block RAMs
    gen = standin_design(tmp_path / "gen", "test_build stand-in", input_size=40000, num_classes=4)
    with pytest.raises(HardwareError, match=r"does not fit on ice40_hx8k_b_evn.*BRAM \(ICESTORM_RAM\): needs \d+, the device has 32 \(\d+ too many"):
        build_bitstream(None, "ice40-hx8k", tmp_path / "out", gen_dir=gen)  # the old name still works


@pytest.mark.slow
def test_build_standin_for_tang_nano_9k(tmp_path, standin_design):
    gen = standin_design(tmp_path / "gen", "test_build stand-in")
    build_bitstream(None, "tang_nano_9k", tmp_path / "out", gen_dir=gen)
    report = _check_report(tmp_path / "out", "tang_nano_9k", "gowin", ".fs")
    assert report["clock_hz"] == 27_000_000 and report["clocks_per_bit"] == 234
    assert report["utilization"]["LUT"]["available"] == 8640 and report["utilization"]["BRAM"]["available"] == 26
    assert "nextpnr-himbaechel" in report["toolchain"] and "gowin_pack" in report["toolchain"]


@pytest.mark.slow
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s_85f", "tang_nano_9k"])
def test_build_generated_mlp(tmp_path, board):
    """One real bitstream of a generated network per open family, folded by the board's budget."""
    from bitspike.gen.boards import lut_budget
    from bitspike.testing import random_mlp

    manifest = random_mlp(0, sizes=(64, 32, 10), w_bits=[2], s_bits=[2], timesteps=[1])
    build_bitstream(manifest, board, tmp_path / "out")
    report = _check_report(tmp_path / "out", board, get_board(board).family, get_board(board).bitstream_suffix)
    assert report["manifest_digest"] == manifest.digest()
    assert report["lut_budget"] == lut_budget(get_board(board)) and report["overflowed_attempts"] == []


def _yosys_stats(ram_blocks: int, luts: int) -> str:
    """A Yosys statistics block (the last one in ``top.rpt``) with these cell counts."""
    return (f"3.59. Printing statistics.\n\n=== design hierarchy ===\n       {luts}   SB_LUT4\n       900   SB_DFFE\n"
            f"       {ram_blocks}   SB_RAM40_4K\n       2   SB_MAC16\n")


def test_block_ram_overflow_at_the_smallest_fold_stops_the_retries(tmp_path, monkeypatch):
    """Yosys' counts of a design over the UP5K's 30 block RAMs, fed to the retry loop: it halves the LUT budget
    only while the fold still shrinks, then raises the fit error naming the resource, the excess and the layer
    with the most block RAM; a LUT overflow at the same fold is left to the loop."""
    from bitspike.gen import build as B
    from bitspike.testing import random_mlp

    spec = get_board("icebreaker")
    manifest = random_mlp(0, sizes=(16, 4), w_bits=[2], s_bits=[2], timesteps=[1])
    rpt = tmp_path / "rpt"
    rpt.mkdir()
    tried = []  # (report, device budget) of each design the loop hands to the toolchain

    def synthesized(spec, report, gen_dir, config, tools, out, seed, timeout, pll=None, router="auto", placer="auto"):
        tried.append(report)
        B._check_fit(spec, rpt)  # the fit check that runs before place and route, on these counts

    monkeypatch.setattr(B, "_run_with_dsp_fallback", synthesized)
    (rpt / f"{B.NAME}.rpt").write_text(_yosys_stats(46, 3000))
    with pytest.raises(HardwareError) as info:
        build_bitstream(manifest, "icebreaker", tmp_path / "out")
    text = str(info.value)
    assert "BRAM (ICESTORM_RAM): needs 46, the device has 30 (16 too many, 153%)" in text
    assert "The fold is already the smallest (line0=1x1)" in text and "Try a smaller fold" not in text
    assert "block RAMs per layer" in text and "; the most in line0." in text
    folds = [B._fold_of(r) for r in tried]
    assert len(folds) >= 2 and len(set(folds)) == len(folds)  # each Yosys run a new fold, none repeated

    # the smallest design overflowing in LUTs only: a smaller budget may still move logic, so no final error
    (rpt / f"{B.NAME}.rpt").write_text(_yosys_stats(10, 6000))
    with pytest.raises(B._Overflow) as over:
        B._check_fit(spec, rpt)
    assert B._unfoldable_overflow(spec, manifest, tried[-1], over.value, None) is None


AMARANTH_ECP5_YS = """\
# Automatically generated by Amaranth 0.5.10. Do not edit.
read_verilog  e0_conv0.v
read_rtlil top.il
# (script_after_read placeholder)
    synth_ecp5  -top top
# (script_after_synth placeholder)
write_json top.json"""


def test_abc_fallback_script_splits_synth_ecp5_around_the_lut_mapping():
    from bitspike.gen.build import abc_fallback_script

    assert abc_fallback_script(AMARANTH_ECP5_YS) == "\n".join([
        "# Automatically generated by Amaranth 0.5.10. Do not edit.", "read_verilog  e0_conv0.v", "read_rtlil top.il",
        "# (script_after_read placeholder)",
        "    synth_ecp5  -top top -run :map_luts", "    techmap -map +/lattice/latches_map.v",
        "    abc -lut 4:7 -dress", "    clean", "    synth_ecp5  -top top -run map_cells:",
        "# (script_after_synth placeholder)", "write_json top.json"]) + "\n"
    assert abc_fallback_script("read_verilog a.v\nsynth_ice40 -top top\n") is None


def test_abc_fallback_script_synthesizes_with_yosys(tmp_path):
    """The rewritten script is one Yosys runs: LUT4 and PFU-mux cells from ``abc``, no abc9 pass."""
    import subprocess

    from bitspike.gen.build import abc_fallback_script
    from bitspike.gen.synth import yosys_command

    (tmp_path / "top.v").write_text(
        "module top(input clk, input [7:0] a, input [7:0] b, input [2:0] s, output reg [7:0] y);\n"
        "  always @(posedge clk) y <= s[0] ? a + b : (s[1] ? a ^ b : {a[3:0], b[7:4]} >> s[2]);\nendmodule\n")
    script = abc_fallback_script("read_verilog top.v\nsynth_ecp5 -top top\nstat\nwrite_json top.json\n")
    (tmp_path / "top.ys").write_text(script)
    subprocess.run(yosys_command() + ["-q", "-l", "top.rpt", "top.ys"], cwd=tmp_path, check=True)
    log = (tmp_path / "top.rpt").read_text()
    assert "abc9" not in log.replace("abc9_", "") and "LUT4" in log and (tmp_path / "top.json").exists()


@pytest.mark.parametrize("board,choice,want", [("ulx3s_85f", "auto", None), ("ulx3s_85f", "router1", "router1"),
                                                ("ulx3s_85f", "router2", "router2"), ("icebreaker", "router2", "router2"),
                                                ("icebreaker", "auto", None)])
def test_the_router_can_be_named(tmp_path, board, choice, want):
    """``auto`` leaves nextpnr's default (router1, the higher Fmax measured) whatever the design's size; ``--router
    router2`` writes router2 into the script; router1 is the default, so its script is unchanged."""
    from bitspike.gen.build import _choose_router

    tool = "NEXTPNR_ECP5" if board == "ulx3s_85f" else "NEXTPNR_ICE40"
    script = tmp_path / "build_pnr.sh"
    script.write_text(f'"${tool}" --quiet --seed 1 --json top.json\n')
    assert _choose_router(get_board(board), script, choice) == want
    assert ("--router router2" in script.read_text()) == (want == "router2")


@pytest.mark.parametrize("board,choice", [("ulx3s_85f", "auto"), ("ulx3s_85f", "static"), ("ulx3s_85f", "heap"),
                                          ("icebreaker", "sa"), ("icebreaker", "auto")])
def test_the_placer_can_be_named(tmp_path, board, choice):
    """``auto`` leaves nextpnr's default placer; a named one is written into the place-and-route script once,
    and the CLI offers the same choices as :data:`PLACERS`."""
    from bitspike.gen.build import PLACERS, _choose_placer
    from bitspike.cli import build_parser

    tool = "NEXTPNR_ECP5" if board == "ulx3s_85f" else "NEXTPNR_ICE40"
    script = tmp_path / "build_pnr.sh"
    script.write_text(f'"${tool}" --quiet --seed 1 --json top.json\n')
    assert _choose_placer(get_board(board), script, choice) == (None if choice == "auto" else choice)
    text = script.read_text()
    assert text.count("--placer") == (choice != "auto")
    if choice != "auto":
        assert text.startswith(f'"${tool}" --placer {choice} --quiet')
    args = build_parser().parse_args(["build", "m.bsm", "--board", board, "-o", "out", "--placer", choice])
    assert args.placer == choice and choice in PLACERS


def test_a_placer_is_refused_where_bitspike_does_not_choose_it(tmp_path, standin_design):
    gen = standin_design(tmp_path / "gen", "test_build stand-in")
    with pytest.raises(HardwareError, match="--placer 'anneal': expected one of auto, heap, static, sa"):
        build_bitstream(None, "icebreaker", tmp_path / "out", gen_dir=gen, placer="anneal")
    with pytest.raises(HardwareError, match="--placer static: .*only on iCE40 and ECP5 boards; tang_nano_9k is gowin"):
        build_bitstream(None, "tang_nano_9k", tmp_path / "out", gen_dir=gen, placer="static")


def test_a_router_is_refused_where_bitspike_does_not_choose_it(tmp_path, standin_design):
    gen = standin_design(tmp_path / "gen", "test_build stand-in")
    with pytest.raises(HardwareError, match="--router 'router3': expected one of auto, router1, router2"):
        build_bitstream(None, "icebreaker", tmp_path / "out", gen_dir=gen, router="router3")
    with pytest.raises(HardwareError, match="--router router2: .*only on iCE40 and ECP5 boards; tang_nano_9k is gowin"):
        build_bitstream(None, "tang_nano_9k", tmp_path / "out", gen_dir=gen, router="router2")


def _pll_plan(folder, setting, verilog="module bitspike_top; endmodule\n", extra=""):
    """A stand-in for a build plan with an EHXPLLL at ``setting`` (its RTLIL cell as amaranth writes it)."""
    p = setting.params
    folder.mkdir()
    (folder / "top.il").write_text(
        f'module \\top\n  attribute \\FREQUENCY_PIN_CLKI "25"\n'
        f'  attribute \\FREQUENCY_PIN_CLKOP "{setting.f_out_hz / 1e6:.6f}"\n  cell \\EHXPLLL \\pll\n'
        f'    parameter \\CLKI_DIV {p["CLKI_DIV"]}\n    parameter \\CLKFB_DIV {p["CLKFB_DIV"]}\n'
        f'    parameter \\CLKOP_DIV {p["CLKOP_DIV"]}\n    parameter \\CLKOP_CPHASE {p["CLKOP_CPHASE"]}\n'
        f'    parameter \\FEEDBK_PATH "CLKOP"\n{extra}  end\nend\n')
    (folder / "bitspike_top.v").write_text(verilog)
    (folder / "top.ys").write_text("read_rtlil top.il\nsynth_ecp5 -top top\nwrite_json top.json\n")
    return folder


def test_a_later_clock_pass_keeps_the_netlist_when_only_the_pll_changes(tmp_path):
    """The PLL's dividers and frequency attribute are written into the previous pass's netlist, in Yosys'
    encoding; a plan that differs anywhere else (Verilog, another parameter) gets a fresh synthesis."""
    from bitspike.gen.build import _reuse_netlist
    from bitspike.rtl_templates.clocking import ecp5_pll

    first, second = ecp5_pll(25_000_000, 92.5e6), ecp5_pll(25_000_000, 80e6)
    assert first.params != second.params
    prev = _pll_plan(tmp_path / "prev", first)
    bits = {k: format(v, "032b") for k, v in first.params.items()}
    netlist = {"modules": {"top": {"cells": {
        "pll": {"type": "EHXPLLL", "parameters": dict(bits, FEEDBK_PATH="CLKOP"),
                "attributes": {"FREQUENCY_PIN_CLKI": "25", "FREQUENCY_PIN_CLKOP": f"{first.f_out_hz / 1e6:.6f}",
                               "MFG_ENABLE_FILTEROPAMP": "1 "}},
        "lut": {"type": "LUT4", "parameters": {"INIT": "0000000000000110"}, "attributes": {}}}}}}
    (prev / "top.json").write_text(json.dumps(netlist))
    (prev / "top.rpt").write_text("Yosys log\n")

    now = _pll_plan(tmp_path / "now", second)
    assert _reuse_netlist(prev, now, second) == ""
    got = json.loads((now / "top.json").read_text())["modules"]["top"]["cells"]
    assert got["pll"]["parameters"] == dict({k: format(v, "032b") for k, v in second.params.items()},
                                            FEEDBK_PATH="CLKOP")
    assert got["pll"]["attributes"]["FREQUENCY_PIN_CLKOP"] == f"{second.f_out_hz / 1e6:.6f}"
    assert got["pll"]["attributes"]["MFG_ENABLE_FILTEROPAMP"] == "1 " and got["lut"] == netlist["modules"]["top"]["cells"]["lut"]
    assert (now / "top.rpt").read_text() == "Yosys log\n"

    assert _reuse_netlist(prev, _pll_plan(tmp_path / "verilog", second, verilog="module other; endmodule\n"),
                          second) is None
    assert _reuse_netlist(prev, _pll_plan(tmp_path / "param", second, extra="    parameter \\CLKOP_FPHASE 1\n"),
                          second) is None
    # the abc fallback rewrote the previous pass's script: the plan's own is its .abc9.ys, and the note carries over
    (prev / "top.abc9.ys").write_text((prev / "top.ys").read_text())
    (prev / "top.ys").write_text("abc fallback script\n")
    again = _pll_plan(tmp_path / "again", second)
    assert _reuse_netlist(prev, again, second).startswith("abc -lut 4:7")
    assert (again / "top.ys").read_text() == "abc fallback script\n"


def test_a_later_pass_keeps_the_netlist_whose_resets_moved(tmp_path):
    """The plan's own script is top.lsr.ys when only the resets moved: the next pass's plan is compared with it,
    and the rewritten script and the record come along."""
    from bitspike.gen.build import RESETS_RECORD, _reuse_netlist
    from bitspike.gen.synth import local_resets_in_logic
    from bitspike.rtl_templates.clocking import ecp5_pll

    first, second = ecp5_pll(25_000_000, 92.5e6), ecp5_pll(25_000_000, 80e6)
    prev = _pll_plan(tmp_path / "prev", first)
    (prev / "top.json").write_text(json.dumps({"modules": {"top": {"cells": {"pll": {
        "type": "EHXPLLL", "parameters": {}, "attributes": {}}}}}}))
    (prev / "top.rpt").write_text("Yosys log\n")
    (prev / "top.lsr.ys").write_text((prev / "top.ys").read_text())
    (prev / "top.ys").write_text(local_resets_in_logic((prev / "top.ys").read_text()))
    (prev / RESETS_RECORD).write_text('{"before": {}}')
    now = _pll_plan(tmp_path / "now", second)
    assert _reuse_netlist(prev, now, second) == ""
    assert (now / "top.ys").read_text() == (prev / "top.ys").read_text()
    assert (now / RESETS_RECORD).read_text() == '{"before": {}}'


@pytest.mark.slow
def test_a_missed_pll_clock_is_routed_again_from_the_same_netlist(tmp_path, standin_design):
    """At 400 MHz the stand-in misses its clock, so a second pass runs below its Fmax from the first pass's
    netlist with the PLL retuned: that netlist is the one Yosys writes for the second plan."""
    import shutil
    import subprocess

    from bitspike.gen.build import find_toolchain

    gen = standin_design(tmp_path / "gen", "test_build stand-in")
    build_bitstream(None, "ecp5-25f", tmp_path / "out", gen_dir=gen, baud=1_000_000, clock_mhz=400)
    report = _check_report(tmp_path / "out", "ulx3s_25f", "ecp5", ".bit")
    first, second = report["clock_passes"]
    assert first["synthesis"] == "Yosys" and second["synthesis"].startswith("the previous pass's netlist")
    assert second["accelerator_clock_mhz"] <= first["accelerator_fmax_mhz"]
    assert "pass 2 of 2" in (md := (tmp_path / "out" / "report.md").read_text()) and "PLL retuned" in md
    build = tmp_path / "out" / "build"
    fresh = tmp_path / "fresh"
    shutil.copytree(build, fresh)
    (fresh / "top.json").unlink()
    env = {**__import__("os").environ, "YOSYS": find_toolchain("ecp5")["yosys"].path}
    subprocess.run(["sh", "build_synth.sh"], cwd=fresh, env=env, check=True, capture_output=True)
    kept, synthesized = (json.loads((d / "top.json").read_text())["modules"] for d in (build, fresh))

    def unreferenced_pll(name):  # Yosys' leftover blackbox of the PLL, named by a hash of its parameters
        return name.startswith("$paramod$") and name.endswith("\\EHXPLLL")

    assert {k: v for k, v in kept.items() if not unreferenced_pll(k)} == \
        {k: v for k, v in synthesized.items() if not unreferenced_pll(k)}
    assert [v for k, v in kept.items() if unreferenced_pll(k)] == [v for k, v in synthesized.items() if unreferenced_pll(k)]
    assert not any(unreferenced_pll(c["type"]) for m in kept.values() for c in m.get("cells", {}).values())


def test_a_build_stopped_in_the_placer_says_what_to_try():
    from bitspike.gen.build import _stalled_placer_hint

    log = ("Info: \t        TRELLIS_COMB:   68593/  83640    82%\n"
           "Info: Creating initial analytic placement for 61794 cells, random placement wirelen = 7552512.\n"
           "Info: Running main analytical placer, max placement attempts per cell = 135644517.\n")
    hint = _stalled_placer_hint(log, "auto")
    assert "nextpnr was still placing (Running main analytical placer" in hint
    assert "with 82% of the part's logic cells in use: try --placer static" in hint
    assert "another --placer or --seed" in _stalled_placer_hint(log, "static")
    assert _stalled_placer_hint(log + "Info: Routing..\n", "auto") == ""
    assert _stalled_placer_hint("", "auto") == ""
