"""ECP5 flip-flop resets: a logic tile's 8 flip-flops share one LSR net, so thousands of local synchronous resets
(Yosys makes one of every ``x <= c ? const : y``) leave nextpnr no tiles to legalise into. bitspike then
synthesizes again with those resets in logic and the global one (the DCCA's) on LSR.

Real Yosys runs: the rewrite is proven equivalent (``equiv_induct``), and the build step counts the reset nets
before and after on a netlist it synthesized.
"""

from __future__ import annotations

import json
import os
import subprocess


from bitspike.gen.synth import (LOCAL_RESETS_IN_LOGIC, abc_fallback_script, local_resets_in_logic, reset_tiles,
                                yosys_command)

#: 8 two-bit registers ``q`` reset by the global net (a DCCA's output) and cleared by their own ``clr[i]``:
#: bit 1 clears to its reset value, so Yosys merges the two into one local reset (``grst | clr[i]``), while
#: bit 0 clears to 1 and keeps the global reset; and 8 two-bit registers ``p`` cleared by ``clr[i]`` alone
RESETS_V = """\
module t(input clk, input grst_in, input [7:0] clr, input [7:0] en, input [15:0] d,
         output reg [15:0] q, output reg [15:0] p);
  wire grst;
  DCCA g(.CLKI(grst_in), .CE(1'b1), .CLKO(grst));
  integer i;
  always @(posedge clk)
    for (i = 0; i < 8; i = i + 1) begin
      if (grst) q[2*i +: 2] <= 0; else if (clr[i]) q[2*i +: 2] <= 2'b01; else if (en[i]) q[2*i +: 2] <= d[2*i +: 2];
      if (clr[i]) p[2*i +: 2] <= 0; else p[2*i +: 2] <= d[2*i +: 2] ^ p[2*i +: 2];
    end
endmodule
"""

PLAIN_YS = "read_verilog -lib +/ecp5/cells_bb.v\nread_verilog t.v\n    synth_ecp5  -top t\nwrite_json top.json\n"


def test_the_script_is_split_before_the_flip_flops_are_mapped():
    split = local_resets_in_logic(PLAIN_YS)
    assert split == "\n".join(["read_verilog -lib +/ecp5/cells_bb.v", "read_verilog t.v",
                               "    synth_ecp5  -top t -run :map_ffs", *("    " + c for c in LOCAL_RESETS_IN_LOGIC),
                               "    synth_ecp5  -top t -run map_ffs:", "write_json top.json"]) + "\n"
    assert local_resets_in_logic(split) is None  # once
    assert local_resets_in_logic("read_verilog a.v\nsynth_ice40 -top top\n") is None
    # with the abc mapper in abc9's place, in either order: the same script
    both = abc_fallback_script(split)
    assert both == local_resets_in_logic(abc_fallback_script(PLAIN_YS))
    assert [l.strip() for l in both.splitlines()][2:9] == [
        "synth_ecp5  -top t -run :map_ffs", *LOCAL_RESETS_IN_LOGIC, "synth_ecp5  -top t -run map_ffs:map_luts",
        "techmap -map +/lattice/latches_map.v", "abc -lut 4:7 -dress"]


def test_local_resets_move_into_logic_and_the_design_is_unchanged(tmp_path):
    """After the commands, only the flip-flops whose reset is the DCCA's keep a synchronous reset, and Yosys'
    induction proves the rewritten design equivalent to the original, clock by clock."""
    (tmp_path / "t.v").write_text(RESETS_V)
    (tmp_path / "dcca_wire.v").write_text(  # the DCCA as a wire, for the SAT model only
        '(* techmap_celltype = "DCCA" *)\nmodule _dcca_wire(input CLKI, input CE, output CLKO);\n'
        '  assign CLKO = CLKI;\nendmodule\n')
    (tmp_path / "equiv.ys").write_text("\n".join([
        "read_verilog -lib +/ecp5/cells_bb.v", "read_verilog t.v", "synth_ecp5 -top t -run :map_ffs",
        "select -assert-count 32 t:$_SDFF* t:$_SDFFE* t:$_SDFFCE* %u %u",
        "design -save gold", *LOCAL_RESETS_IN_LOGIC,
        "select -assert-count 8 t:$_SDFF* t:$_SDFFE* t:$_SDFFCE* %u %u",  # q's bit 0: the global reset
        "techmap -map dcca_wire.v", "rename t gate", "design -stash gate",
        "design -copy-from gold -as gold t", "techmap -map dcca_wire.v gold", "design -copy-from gate -as gate gate",
        "equiv_make gold gate equiv", "equiv_simple -seq 2", "equiv_induct -seq 2", "equiv_status -assert", ""]))
    run = subprocess.run(yosys_command() + ["-q", "-l", "equiv.log", "equiv.ys"], cwd=tmp_path,
                         capture_output=True, text=True)
    log = (tmp_path / "equiv.log").read_text()
    assert run.returncode == 0, log[-2000:]
    assert "Found 0 unproven $equiv cells" in log or "proven and 0 are unproven" in log


def _synthesized(folder):
    folder.mkdir()
    (folder / "t.v").write_text(RESETS_V)
    (folder / "top.ys").write_text(PLAIN_YS)
    (folder / "build_synth.sh").write_text('set -e\n"$YOSYS" -q -l top.rpt top.ys\n')
    from bitspike.gen.build import find_toolchain

    env = {**os.environ, "YOSYS": find_toolchain("ecp5")["yosys"].path}
    subprocess.run(["sh", "build_synth.sh"], cwd=folder, env=env, check=True, capture_output=True)
    return env


def test_a_build_synthesizes_again_when_the_reset_nets_need_too_many_tiles(tmp_path):
    """On a 5-tile part the 17 reset nets need 17 tiles: the build synthesizes again with the local resets in
    logic (2 nets: the DCCA's, and none; 4 tiles), keeps the first script as top.lsr.ys and records both. On the
    ECP5-85F the same netlist stays."""
    from bitspike.gen.boards import get_board
    from bitspike.gen.build import RESETS_RECORD, _spread_local_resets, resets_sentence

    spec = get_board("ulx3s_85f")
    build = tmp_path / "build"
    env = _synthesized(build)
    first = json.loads((build / "top.json").read_text())
    assert reset_tiles(first) == (17, 32, 17)

    big = {"TRELLIS_FF": {"used": 32, "available": 83640}}
    with open(tmp_path / "log", "w") as logf:
        assert _spread_local_resets(spec, big, build, env, logf, 600) == (None, None)
    assert (build / "top.ys").read_text() == PLAIN_YS and not (build / "top.lsr.ys").exists()

    small = {"TRELLIS_FF": {"used": 32, "available": 40}}
    with open(tmp_path / "log", "w") as logf:
        code, record = _spread_local_resets(spec, small, build, env, logf, 600)
    assert code == 0
    assert record == {"before": {"reset_nets": 17, "flip_flops": 32, "tiles_needed": 17, "tiles": 5},
                      "after": {"reset_nets": 2, "flip_flops": 32, "tiles_needed": 4, "tiles": 5}}
    assert json.loads((build / RESETS_RECORD).read_text()) == record
    assert (build / "top.lsr.ys").read_text() == PLAIN_YS
    assert (build / "top.ys").read_text() == local_resets_in_logic(PLAIN_YS)
    assert reset_tiles(json.loads((build / "top.json").read_text())) == (4, 32, 2)
    assert "reset nets need at least 17 of 5 logic tiles" in (tmp_path / "log").read_text()
    assert resets_sentence(record) == ("Flip-flop resets: 17 reset nets needed at least 17 of the part's 5 logic "
                                       "tiles (one net a tile), so the local synchronous resets were moved into "
                                       "logic: 2 nets, 4 tiles.")
