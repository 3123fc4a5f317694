"""The board table (introspected from amaranth-boards), `bitspike boards`, refusals, and vendor build-plan archives.

The archive test writes the arty_a7_35 build plan for the co-simulation
stand-in accelerator behind the UART bridge and checks that the plan's own
Verilog passes Yosys ``synth_xilinx`` (the estimate in its report).
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import zipfile

import pytest

from bitspike.cli import main
from bitspike.errors import BoardError, HardwareError
from bitspike.gen.boards import (FIXED_LUT4, HEADROOM, LUT4_PER_ESTIMATE, MIN_LUT_BUDGET, OPEN_FAMILIES, PARTS, all_boards, board_table,
                                 get_board, lut_budget, part_key)
from bitspike.gen.build import build_bitstream, overflow_error, parse_nextpnr

# utilization excerpt of nextpnr-himbaechel's --report on a GW1NR-9 (TBUF: none listed, one placed)
GOWIN_REPORT = {
    "utilization": {"LUT4": {"available": 8640, "used": 1199}, "DFF": {"available": 6480, "used": 384},
                    "BSRAM": {"available": 26, "used": 3}, "MULT18X18": {"available": 20, "used": 0},
                    "TBUF": {"available": 0, "used": 1}},
    "fmax": {"clk": {"achieved": 88.16, "constraint": 27.0}},
}


def _platform_classes():
    import amaranth_boards
    from amaranth.build import Platform

    found = set()
    for info in pkgutil.iter_modules(amaranth_boards.__path__):
        if info.ispkg:
            continue
        mod = importlib.import_module(f"amaranth_boards.{info.name}")
        for name, cls in vars(mod).items():
            if inspect.isclass(cls) and issubclass(cls, Platform) and cls.__module__ == mod.__name__ \
                    and not inspect.isabstract(cls):
                found.add(f"amaranth_boards.{info.name}:{name}")
    return found


def test_every_amaranth_boards_platform_is_in_the_table():
    boards = all_boards()
    assert {s.platform for s in boards.values()} == _platform_classes()
    assert len(boards) == len({s.platform for s in boards.values()})  # one name per platform


def test_table_entries_come_from_the_platforms():
    b = get_board("tang_nano_9k")
    assert (b.family, b.device, b.clock, b.clock_hz, b.toolchain) == ("gowin", "GW1NR-LV9QN88PC6/I5", "clk27", 27_000_000,
                                                                     "Apicula")
    assert b.uart == {"tx": "17", "rx": "18"} and b.flow == "open" and b.bitstream_suffix == ".fs"
    assert b.capacity == PARTS["GW1N-9"] and (b.capacity.lut, b.capacity.bram) == (8640, 26)
    a = get_board("arty_a7_35")
    assert (a.family, a.device, a.clock_hz, a.flow) == ("xilinx", "xc7a35ti", 100_000_000, "vendor")
    assert a.capacity.lut == 20800 and a.capacity.dsp == 90
    s = get_board("icestick")
    assert (s.device, s.capacity.lut, s.capacity.bram, s.clock_hz) == ("iCE40HX1K", 1280, 16, 12_000_000)
    u = get_board("ulx3s_85f")
    assert (u.family, u.capacity.lut, u.capacity.dsp, u.capacity.bram) == ("ecp5", 84000, 156, 208)
    assert get_board("ecpix5_85").capacity == u.capacity  # LFE5UM5G-85F: the same fabric
    assert get_board("upduino_v3").clock_is_oscillator and get_board("upduino_v3").clock == "SB_HFOSC"


def test_names_and_aliases():
    assert get_board("ULX3S-85F").name == "ulx3s_85f"
    assert get_board("ulx3s").name == "ulx3s_85f"
    assert get_board("ecp5-25f").name == "ulx3s_25f"
    assert get_board("ice40-hx8k").name == "ice40_hx8k_b_evn"
    with pytest.raises(BoardError, match=r"unknown board 'tang_nano_99k'; did you mean .*tang_nano"):
        get_board("tang_nano_99k")


def test_every_buildable_board_has_a_known_part():
    for spec in all_boards().values():
        if spec.flow == "open":
            assert spec.capacity is not None, spec.name
            assert spec.family in OPEN_FAMILIES and spec.uart and spec.clock_hz > 0
            assert spec.resources and spec.bitstream_suffix
        if spec.capacity is not None:
            c = spec.capacity
            assert c.lut > 0 and c.ff > 0 and c.dsp >= 0 and c.bram >= 0, spec.name
    families = {s.family for s in all_boards().values() if s.flow == "open"}
    assert families == set(OPEN_FAMILIES)
    assert sum(s.flow == "open" for s in all_boards().values()) >= 20


def test_part_keys():
    assert part_key("ecp5", "LFE5UM5G-45F") == part_key("ecp5", "LFE5U-45F") == "LFE5-45F"
    assert part_key("gowin", "GW1NR-9C") == "GW1N-9" and part_key("gowin", "GW2A-18C") == "GW2A-18"
    assert part_key("xilinx", "xc7a35ti") == "xc7a35t" and part_key("intel", "10M50DA") == "10M50"
    assert part_key("machxo2", "LCMXO3LF-6900C") == "LCMXO3-6900"


def test_lut_budget_follows_the_capacity():
    small, mid, big = (lut_budget(get_board(n)) for n in ("icestick", "icebreaker", "ulx3s_85f"))
    assert MIN_LUT_BUDGET == small < mid < big
    # the LUT share of the part, less the bridge's LUTs, in the planner's units; no cap (device_budget)
    assert mid == int((HEADROOM["lut"] * 5280 - FIXED_LUT4) / LUT4_PER_ESTIMATE) == 870
    assert big == int((HEADROOM["lut"] * 84000 - FIXED_LUT4) / LUT4_PER_ESTIMATE) == 20550
    # six-input LUTs count double
    from dataclasses import replace

    small_x7 = replace(get_board("cmod_a7_15"), capacity=replace(PARTS["xc7a15t"], lut=2000))
    small_ice = replace(get_board("icestick"), capacity=replace(PARTS["iCE40HX1K"], lut=2000))
    assert lut_budget(small_x7) == 550 and lut_budget(small_ice) == MIN_LUT_BUDGET


def test_boards_without_a_serial_path_are_refused(tmp_path):
    crab = get_board("orangecrab_r0_2")
    assert crab.flow == "refused" and "USB" in crab.serial_problem
    with pytest.raises(HardwareError, match=r"cannot build for orangecrab_r0_2.*USB.*no UART resource"):
        build_bitstream(None, "orangecrab_r0_2", tmp_path / "out")
    with pytest.raises(HardwareError, match="no default clock"):
        build_bitstream(None, "microzed_z010", tmp_path / "out")
    with pytest.raises(HardwareError, match=r"arty_a7_35 is a xilinx board.*Vivado.*--archive"):
        build_bitstream(None, "arty_a7_35", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_boards_cli_lists_and_writes_json(tmp_path, capsys):
    path = tmp_path / "boards.json"
    assert main(["boards", "--json", str(path)]) == 0
    text = capsys.readouterr().out
    rows = json.loads(path.read_text())
    assert rows == board_table()
    assert {r["name"] for r in rows} == set(all_boards())
    line = next(l for l in text.splitlines() if l.startswith("tang_nano_9k "))
    assert "GW1NR-LV9QN88PC6/I5" in line and "27 MHz" in line and "8,640" in line and "open" in line
    assert "arty_a7_35" in text and "vendor (Vivado; --archive)" in text
    assert "orangecrab_r0_2: the board's USB port is wired straight to the FPGA" in text
    assert main(["boards", "--family", "gowin", "--flow", "open", "--json", str(path)]) == 0
    assert {r["name"] for r in json.loads(path.read_text())} == {"tang_nano", "tang_nano_9k", "tang_primer_20k",
                                                                 "tang_primer_20k_dock", "tang_primer_20k_lite"}
    capsys.readouterr()
    assert main(["boards", "--family", "virtex"]) == 1
    assert "--family 'virtex': expected one of" in capsys.readouterr().err


def test_gen_takes_the_fold_budget_from_the_board(tmp_path):
    from bitspike.testing import random_mlp

    model = tmp_path / "mlp.bsm"
    random_mlp(0, sizes=(64, 32, 10), w_bits=[2], s_bits=[2], timesteps=[1]).save(model)
    assert main(["gen", str(model), "-o", str(tmp_path / "small"), "--board", "icestick", "--quiet"]) == 0
    assert main(["gen", str(model), "-o", str(tmp_path / "big"), "--board", "ulx3s_85f", "--quiet"]) == 0
    small = json.loads((tmp_path / "small" / "report.json").read_text())
    big = json.loads((tmp_path / "big" / "report.json").read_text())
    assert small["max_luts"] == lut_budget(get_board("icestick"))
    assert big["max_luts"] == lut_budget(get_board("ulx3s_85f"))
    assert small["estimated_luts"] <= max(small["max_luts"], big["estimated_luts"])
    assert small["initiation_interval"] >= big["initiation_interval"]


def test_gowin_report_parsing_and_overflow():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.json"
        path.write_text(json.dumps(GOWIN_REPORT))
        parsed = parse_nextpnr(path, "")
    board = get_board("tang_nano_9k")
    assert parsed["cells"]["BSRAM"] == {"used": 3, "available": 26}
    assert parsed["fmax_mhz"] == {"clk": (88.16, 27.0)}
    assert overflow_error(board, parsed["cells"], "") is None  # the TBUF is no overflow
    cells = dict(parsed["cells"], BSRAM={"used": 30, "available": 26})
    assert "BRAM (BSRAM): needs 30, the device has 26 (4 too many, 115%)" in str(overflow_error(board, cells, ""))


@pytest.mark.slow  # a full synth_xilinx of the archive; the per-engine synth_xilinx run of test_gen_lint_synth stays in the default run
def test_vendor_archive_for_arty_passes_synth_xilinx(tmp_path, standin_design):
    gen = standin_design(tmp_path / "gen", "test_boards stand-in")
    report = build_bitstream(None, "arty_a7_35", tmp_path / "out", gen_dir=gen, archive=True)
    out = tmp_path / "out"
    archive = out / "bitspike_arty_a7_35_plan.zip"
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        script = z.read("build_top.sh").decode()
        xdc = z.read("top.xdc").decode()
    assert {"build_top.sh", "top.tcl", "top.xdc", "top.v", "bitspike_top.v"} <= names
    assert "vivado" in script.lower()
    assert "D10" in xdc and "A9" in xdc and "E3" in xdc  # UART tx/rx and the 100 MHz clock pins
    assert report["flow"] == "archive" and "vendor tool is needed to finish" in report["next_step"]
    assert "AMD Vivado" in report["next_step"]
    est = report["yosys_estimate"]
    assert est["command"].startswith("synth_xilinx -family xc7 -top top")
    assert est["total"]["lut"] > 100 and est["total"]["ff"] > 100
    u = report["utilization_estimate"]
    assert u["LUT"]["available"] == 20800 and u["BRAM"]["available"] == 100  # 50 × 36 Kb as 18 Kb halves
    assert report["clocks_per_bit"] == 100 and report["baud"] == 1_000_000  # 100 MHz / 1 Mbaud, the default rate
    md = (out / "report.md").read_text()
    assert "No bitstream was built" in md and "synth_xilinx" in md
    assert not list(out.glob("*.bit"))
    # same inputs, same archive
    first = archive.read_bytes()
    build_bitstream(None, "arty_a7_35", tmp_path / "again", gen_dir=gen, archive=True, estimate=False)
    assert (tmp_path / "again" / "bitspike_arty_a7_35_plan.zip").read_bytes() == first


def test_build_cli_archive_says_the_vendor_tool_is_needed(tmp_path, capsys):
    from bitspike.testing import random_mlp

    model = tmp_path / "mlp.bsm"
    random_mlp(1, sizes=(16, 8, 4), w_bits=[2], s_bits=[2], timesteps=[1]).save(model)
    assert main(["build", str(model), "--board", "arty_a7_35", "-o", str(tmp_path / "x"), "--quiet"]) == 1
    assert "pass --archive" in capsys.readouterr().err.lower()
    assert main(["build", str(model), "--board", "orangecrab_r0_2", "-o", str(tmp_path / "y")]) == 1
    assert "no UART resource" in capsys.readouterr().err


def test_gowin_build_script_calls_himbaechel_with_its_options():
    from bitspike.gen.build import _gowin_himbaechel

    script = ('"$YOSYS" -q -l top.rpt top.ys\n'
              '"$NEXTPNR_GOWIN" --quiet --device GW1NR-LV9QN88PC6/I5 --family GW1N-9C --json top.syn.json --cst top.cst '
              '--write top.pnr.json\n"$GOWIN_PACK" -d GW1N-9C -o top.fs top.pnr.json\n')
    lines = _gowin_himbaechel(script).splitlines()
    assert lines[1] == ('"$NEXTPNR_GOWIN" --quiet --device GW1NR-LV9QN88PC6/I5 --vopt family=GW1N-9C --json top.syn.json '
                        '--vopt cst=top.cst --write top.pnr.json')
    assert lines[0] == script.splitlines()[0] and lines[2] == script.splitlines()[2]  # only nextpnr's call changes


def test_uart_pins_give_a_usb_only_board_a_serial_path(tmp_path, standin_design):
    gen = standin_design(tmp_path / "gen", "test_boards stand-in")
    report = build_bitstream(None, "orangecrab_r0_2", tmp_path / "out", gen_dir=gen, archive=True, estimate=False,
                             uart_pins=("io_0:0", "io_0:1"))
    with zipfile.ZipFile(tmp_path / "out" / report["archive"]) as z:
        lpf = z.read("top.lpf").decode()
    # the feather header's pins 0 and 1 of connector io 0 are N17 and M18 on the OrangeCrab r0.2
    tx = next(l for l in lpf.splitlines() if "bitspike_uart_0__tx" in l and "LOCATE" in l)
    rx = next(l for l in lpf.splitlines() if "bitspike_uart_0__rx" in l and "LOCATE" in l)
    assert '"N17"' in tx and '"M18"' in rx and "LVCMOS33" in lpf
    assert report["clocks_per_bit"] == 48 and report["baud"] == 1_000_000  # 48 MHz / 1 Mbaud, the default rate
    with pytest.raises(BoardError, match="has no connector pmod_0"):
        get_board("orangecrab_r0_2").with_uart("pmod_0:1", "pmod_0:2")
    with pytest.raises(BoardError, match="not a pin name"):
        get_board("orangecrab_r0_2").with_uart("N17;", "M18")


@pytest.mark.slow  # a full synth_ecp5 of the archived build plan
def test_archive_of_an_open_flow_board_reads_its_rtlil_top(tmp_path, standin_design):
    """An ECP5 build plan's top is RTLIL (top.il) around the accelerator's Verilog: the estimate reads both."""
    gen = standin_design(tmp_path / "gen", "test_boards stand-in")
    report = build_bitstream(None, "ulx3s_85f", tmp_path / "out", gen_dir=gen, archive=True)
    est = report["yosys_estimate"]
    assert est["command"].startswith("synth_ecp5") and "-top top" in est["command"]
    assert est["total"]["lut"] > 100 and est["total"]["ff"] > 100
    script = (tmp_path / "out" / "synth_ecp5" / "synth.ys").read_text()
    assert script.index("read_verilog -sv bitspike_top.v") < script.index("read_rtlil top.il")
