"""Device-aware folding: the planner's resource estimates, filling a part, --target-fps, and the fit check.

The estimates of DSP blocks and block RAMs are compared with what Yosys instantiates for the
generated engines (exact); the fill and --target-fps are planner properties; the fit check's
message is made from a real Yosys log. The end-to-end refusal of a build before place and route
is slow (one Yosys run of a whole board design).
"""

from __future__ import annotations

import json

import pytest

from bitspike.cli import main
from bitspike.gen import generate
from bitspike.gen.boards import HEADROOM, PARTS, device_budget, find_part, get_board, lut_budget
from bitspike.gen.build import overflow_error, synthesis_fit, yosys_cells
from bitspike.gen.folding import bram_blocks, estimate_resources, memory_blocks
from bitspike.gen.plan import make_plan
from bitspike.testing import random_mlp


def _mlp(sizes=(64, 32, 10)):
    # the first layer 8/8/1: its products are DSP candidates; the second narrow (2-bit)
    return random_mlp(0, sizes=sizes, w_bits=[2], s_bits=[2], timesteps=[1])


def test_bram_blocks_take_the_best_shape():
    # ECP5 DP16KD: 512 × 36 is the widest shape; iCE40 SB_RAM40_4K: 256 × 16
    assert bram_blocks(512, 128, "ecp5") == 4  # 4 × (512 × 36)
    assert bram_blocks(320, 8, "ecp5") == 1  # 2048 × 9
    assert bram_blocks(64, 1024, "ecp5") == 29
    assert bram_blocks(1024, 64, "ice40") == 16
    assert bram_blocks(4096, 1, "ice40") == 2
    # RAMs go where Yosys' mapping costs put them: LUT RAM for a 16 × 64 frame buffer on ECP5, a block on
    # iCE40 (no LUT RAM) from 16 × 16 on, logic below; a memory read without a clock never in block RAM
    assert (memory_blocks(16, 64, "ram", "ecp5"), memory_blocks(16, 16, "ram", "ice40")) == (0, 1)
    assert memory_blocks(16, 2, "ram", "ice40") == 0 and memory_blocks(2049, 32, "ram", "ecp5") == 5
    assert memory_blocks(4096, 8, "async", "ecp5") == 0 and memory_blocks(16, 64, "block", "ecp5") == 2


def test_estimates_match_what_yosys_instantiates(tmp_path):
    """DSP blocks and block RAMs per engine exactly as synth_ecp5 maps the generated Verilog; the fit
    check reads the same counts back from the Yosys log and names what overflows a smaller part."""
    m = _mlp((16, 8, 4))
    a, b = (l.name for l in m.layers)
    report = generate(m, tmp_path, fold={a: (4, 2), b: (1, 1)}, synth="ecp5", fuse="off")  # keeps the requantizer
    synth = report.data["synthesis"]
    est = estimate_resources(report.plan, "ecp5")
    for node in report.plan.layers:
        got = synth["modules"][node.engine]
        assert (est["layers"][node.name]["dsp"], est["layers"][node.name]["bram"]) == (got["dsp"], got["bram"])
    assert (est["dsp"], est["bram"]) == (10, 2)  # 4 × 2 products + 2 requantizer pieces; 16 × 64 bits of weights

    # the cells of the whole design (every module is instantiated once), as the build's flat synthesis counts them
    cells: dict[str, int] = {}
    for mod in json.loads((tmp_path / "synth_ecp5" / "stat.json").read_text())["modules"].values():
        for cell, n in mod.get("num_cells_by_type", {}).items():
            cells[cell] = cells.get(cell, 0) + int(n)
    fit = synthesis_fit(get_board("ulx3s_85f"), cells)
    assert {c: v["used"] for c, v in fit.items()} == {
        "TRELLIS_COMB": synth["total"]["lut"], "TRELLIS_FF": synth["total"]["ff"],
        "MULT18X18D": synth["total"]["dsp"], "DP16KD": synth["total"]["bram"]}
    assert overflow_error(get_board("ulx3s_85f"), fit, "") is None
    small = get_board("icebreaker")  # 8 DSP blocks
    err = overflow_error(small, synthesis_fit(small, cells), "", stage=" (Yosys' counts)")
    assert err is not None
    assert "does not fit on icebreaker" in str(err) and "(Yosys' counts)" in str(err)
    assert "DSP (ICESTORM_DSP): needs 10, the device has 8 (2 too many, 125%)" in str(err)


def test_fill_uses_the_part_and_stops_at_the_stream_floor():
    """On a big part the fold reaches the floor the streams set; a small part gets a slower fold within
    its budget; the plan's DSPs never exceed the part's (the rest are logic, paid for in LUTs)."""
    m = _mlp()
    big, small = device_budget(get_board("ulx3s_85f")), device_budget(get_board("icebreaker"))
    p_big = make_plan(m, device=big, dsp_blocks=big.dsp)
    p_small = make_plan(m, device=small, dsp_blocks=small.dsp)
    floor = max(max(n.in_elements, n.out_elements) for n in p_big.layers)
    assert p_big.initiation_interval == floor == 64
    assert p_small.initiation_interval > p_big.initiation_interval
    for plan, dev in ((p_big, big), (p_small, small)):
        est = estimate_resources(plan, dev.family)
        assert est["lut"] <= dev.lut and est["ff"] <= dev.ff and est["bram"] <= dev.bram and est["dsp"] <= dev.dsp
        assert est["dsp"] == sum(n.dsp_blocks or 0 for n in plan.layers)
    # the LUT-only default (3,000 estimated LUTs) on the same network is what the old --board gave at most
    assert big.lut > 3000 and lut_budget(get_board("ulx3s_85f")) == big.lut


def test_device_budget_is_the_stated_share_of_the_part():
    d = device_budget("part:LFE5U-85F")
    cap = PARTS["LFE5-85F"]
    assert (d.part, d.family) == ("LFE5-85F", "ecp5") and find_part("lfe5um5g-85f") == "LFE5-85F"
    assert (d.ff, d.dsp, d.bram) == (int(HEADROOM["ff"] * cap.ff), cap.dsp, int(HEADROOM["bram"] * cap.bram))
    half = d.scaled(0.5)
    assert (half.lut, half.ff, half.bram, half.dsp) == (d.lut // 2, d.ff // 2, d.bram // 2, d.dsp)


def test_target_fps_takes_fewer_luts_than_the_fill():
    m = _mlp()
    dev = device_budget(get_board("ulx3s_85f"))
    fill = make_plan(m, device=dev, dsp_blocks=dev.dsp)
    target = 4 * fill.initiation_interval
    slow = make_plan(m, device=dev, dsp_blocks=dev.dsp, target_interval=target)
    assert fill.initiation_interval < slow.initiation_interval <= target
    assert estimate_resources(slow, "ecp5")["lut"] < estimate_resources(fill, "ecp5")["lut"]
    # one step less parallel misses the target: the fold is the cheapest of the greedy path that meets it
    assert make_plan(m, device=dev, dsp_blocks=dev.dsp, target_interval=slow.initiation_interval).layers == slow.layers


def test_gen_cli_board_target_fps_and_report(tmp_path, capsys):
    model = tmp_path / "mlp.bsm"
    _mlp((16, 8, 4)).save(model)
    assert main(["gen", str(model), "-o", str(tmp_path / "fill"), "--board", "ulx3s_85f", "--quiet"]) == 0
    assert main(["gen", str(model), "-o", str(tmp_path / "fps"), "--device", "LFE5U-85F", "--target-fps", "2000000",
                 "--clock", "100", "--quiet"]) == 0
    fill = json.loads((tmp_path / "fill" / "report.json").read_text())
    fps = json.loads((tmp_path / "fps" / "report.json").read_text())
    assert fill["device_budget"]["part"] == fps["device_budget"]["part"] == "LFE5-85F"
    assert fill["initiation_interval"] < fps["initiation_interval"] <= 100e6 // 2000000
    assert fps["estimated_resources"]["lut"] < fill["estimated_resources"]["lut"]
    assert "estimate for LFE5-85F" in capsys.readouterr().out


def test_gen_cli_dsp_blocks_caps_the_products_in_dsp_blocks(tmp_path):
    """--dsp-blocks gives the products fewer blocks than the part has (the rest in logic), the fold
    planner counting with the same cap; the count and the Verilog's multiplies follow it exactly."""
    model = tmp_path / "mlp.bsm"
    m = _mlp((16, 8, 4))
    m.save(model)
    fold = f"{m.layers[0].name}=4x4"
    for n in (0, 3):
        out = tmp_path / f"dsp{n}"
        assert main(["gen", str(model), "-o", str(out), "--board", "ulx3s_85f", "--fold", fold, "--dsp-blocks",
                     str(n), "--quiet"]) == 0
        report = json.loads((out / "report.json").read_text())
        assert sum(l.get("dsp_blocks") or 0 for l in report["layers"]) == n
        assert report["device_budget"]["dsp"] == n
        assert sum((out / f).read_text().count(" * ") for f in report["verilog_files"]) == n
    # without --dsp-blocks the part's count (the default build: unchanged)
    assert main(["gen", str(model), "-o", str(tmp_path / "all"), "--board", "ulx3s_85f", "--fold", fold,
                 "--quiet"]) == 0
    assert json.loads((tmp_path / "all" / "report.json").read_text())["device_budget"]["dsp"] == 156


@pytest.mark.parametrize("args, message", [
    (["--board", "ulx3s_85f", "--dsp-blocks", "157"], "--dsp-blocks 157: the part has 156 DSP blocks"),
    (["--board", "ulx3s_85f", "--dsp-blocks", "-1"], "--dsp-blocks must be a non-negative number of DSP blocks"),
    (["--board", "ulx3s_85f", "--device", "LFE5-85F"], "give --board or --device, not both"),
    (["--device", "LFE9-1000F"], "--device 'LFE9-1000F': unknown part"),
    (["--device", "LFE5-85F", "--target-fps", "1000"], "--target-fps needs the clock it counts with"),
    (["--board", "ulx3s_85f", "--target-fps", "0"], "--target-fps 0: must be a positive number"),
    (["--board", "ulx3s_85f", "--target-fps", "10", "--clock", "-5"], "--clock -5: the frequency must be positive"),
    (["--board", "ulx3s_85f", "--target-fps", "10", "--fold", "line0=2x2"], "it needs --fold auto"),
    (["--board", "ulx3s_85f", "--target-fps", "1e7", "--clock", "100"],
     "needs an interval of at most 10 cycles, but the streams set a floor of 16 cycles"),
    (["--board", "icestick", "--target-fps", "1e6", "--clock", "100"],
     "within iCE40HX1K's budget"),
])
def test_gen_cli_refuses_bad_device_options(tmp_path, capsys, args, message):
    model = tmp_path / "mlp.bsm"
    _mlp((16, 8, 4)).save(model)
    assert main(["gen", str(model), "-o", str(tmp_path / "out"), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_build_cli_refuses_more_dsp_blocks_than_the_part_has(tmp_path, capsys):
    model = tmp_path / "mlp.bsm"
    _mlp((16, 8, 4)).save(model)
    assert main(["build", str(model), "--board", "ulx3s_85f", "-o", str(tmp_path / "out"), "--dsp-blocks", "200",
                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "--dsp-blocks 200: the part has 156 DSP blocks" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "gen").exists()  # refused before generating


@pytest.mark.slow
def test_build_stops_before_place_and_route_when_yosys_counts_overflow(tmp_path, capsys):
    """A weight memory larger than the HX1K's block RAMs (128 × 64 8-bit weights: 16 blocks of 4 Kb, all the
    part has, before the frame buffers): `bitspike build` exits 1 after synthesis, naming the resource and the
    excess; nextpnr never runs."""
    model = tmp_path / "mlp.bsm"
    m = _mlp((128, 64, 10))
    m.save(model)
    out = tmp_path / "out"
    code = main(["build", str(model), "--board", "icestick", "-o", str(out), "--fold", f"{m.layers[0].name}=1x1",
                 "--clock", "12", "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "does not fit on icestick" in err and "Yosys' counts before place and route" in err
    assert "BRAM (ICESTORM_RAM): needs" in err and "too many" in err and "Traceback" not in err
    assert not (out / "build" / "top.asc").exists() and not (out / "build" / "top.tim").exists()
    # the check read the flat synthesis log: its counts are the ones in the message
    cells = synthesis_fit(get_board("icestick"), yosys_cells((out / "build" / "top.rpt").read_text()))
    used = cells["ICESTORM_RAM"]["used"]
    assert used > 16 and f"BRAM (ICESTORM_RAM): needs {used}, the device has 16 ({used - 16} too many" in err
