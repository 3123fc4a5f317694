"""Verilog emission: one Amaranth conversion, split into one file per engine plus the top.

The whole design is converted once (so the Verilog is exactly what
``amaranth.sim`` would simulate), then the text is split at module
boundaries: every module named ``bitspike_top.<engine>…`` goes to
``<engine>.v``, the rest (top, output stage) to ``bitspike_top.v``, which is
listed last. ``emit_src=False`` keeps paths and line numbers out, so the
same plan always gives byte-identical files.
"""

from __future__ import annotations

import re
from pathlib import Path

from amaranth.back import verilog

from .plan import Plan
from .top import BitspikeTop

__all__ = ["emit_verilog", "split_modules", "TOP_NAME"]

TOP_NAME = "bitspike_top"

_MODULE_RE = re.compile(r"^module\s+\\?([^\s(]+)", re.M)


def split_modules(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``(header, [(module_name, module_text), …])`` of an Amaranth Verilog file."""
    first = text.find("(*")
    m0 = _MODULE_RE.search(text)
    start = min(i for i in (first, m0.start() if m0 else -1) if i >= 0)
    header, body = text[:start], text[start:]
    chunks = []
    for part in re.split(r"(?<=^endmodule\n)", body, flags=re.M):
        if not part.strip():
            continue
        mm = _MODULE_RE.search(part)
        if mm is None:
            raise AssertionError("unexpected text outside a module in Amaranth output")
        chunks.append((mm.group(1), part.strip("\n") + "\n"))
    return header, chunks


def emit_verilog(plan: Plan, out_dir: str | Path, debug_taps: bool = False) -> tuple[BitspikeTop, list[str]]:
    """Write the Verilog files of ``plan`` into ``out_dir``; returns the top and the file names (top last)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    top = BitspikeTop(plan, debug_taps=debug_taps)
    text = verilog.convert(top, name=TOP_NAME, emit_src=False)
    header, modules = split_modules(text)
    files: dict[str, list[str]] = {}
    order: list[str] = []
    engines = [lp.engine for lp in plan.layers]
    for name, mod in modules:
        parts = name.split(".")
        key = parts[1] if len(parts) > 1 and parts[0] == TOP_NAME and parts[1] in engines else TOP_NAME
        if key not in files:
            files[key] = []
            order.append(key)
        files[key].append(mod)
    names = [k for k in engines if k in files] + [TOP_NAME]
    written = []
    for key in names:
        path = out_dir / f"{key}.v"
        path.write_text(header + "\n".join(files[key]))
        written.append(path.name)
    return top, written
