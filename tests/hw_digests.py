"""Digests of the generated hardware for a fixed set of manifests: the "same hardware" check.

A refactor of the generator (op registry, plan IR, block split) must leave the
Verilog and ``report.json`` byte for byte as they were, or change them on
purpose. This module builds a fixed set of manifests from seeds (random nets
of every op kind, plus random-weight nets in the shapes of the benchmark
designs), generates each under several option sets, and hashes every output
file. ``tests/data/hw_digests.json`` holds the digests recorded before the
refactor; ``tests/test_hw_digests.py`` compares.

Re-record (only for a deliberate change, explained in the commit message)::

    python tests/hw_digests.py --record            # every case
    python tests/hw_digests.py --record digits     # only the named cases; the others keep theirs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

DIGESTS = Path(__file__).parent / "data" / "hw_digests.json"


def _digits_shaped(seed: int):
    """The digits MLP of the benchmark (64-128-10, fc0 8/8/1, fc1 2/2/1), random weights."""
    from bitspike.manifest import InputSpec
    from bitspike.testing import NetBuilder

    b = NetBuilder(np.random.default_rng(seed), InputSpec(shape=(64,), bits=8, scale=1 / 255))
    b.synaptic("linear", 128, 8, 8, 1, 0, 3, 2)
    b.synaptic("linear", 10, 2, 2, 1, 3, None, None)
    return b.manifest(f"digits-shaped-{seed}")




def cases() -> list[tuple[str, Callable[[], Any], dict[str, Any]]]:
    """(case name, manifest factory, ``generate`` keyword arguments).

    The recorded designs are generated with ``fuse="off"``: the hardware of the generator before fused
    requantize-and-fire, byte for byte. The ``+fuse`` cases are the default (``fuse`` not given,
    :data:`bitspike.gen.fuse.DEFAULT_FUSE`) for the designs where it fuses a boundary.
    """
    from bitspike.testing import fashion_cnn_shaped, random_cnn, random_mlp

    out: list[tuple[str, Callable[[], Any], dict[str, Any]]] = []
    for s in range(4):
        out.append((f"mlp{s}", lambda s=s: random_mlp(s, sizes=(16, 12, 10)), {}))
    out.append(("mlp-deep", lambda: random_mlp(7, sizes=(20, 16, 12, 8, 10)), {"debug_taps": True}))
    out.append(("mlp-1bit", lambda: random_mlp(9, sizes=(16, 12, 10), w_bits=[1], s_bits=[1]), {"debug_taps": True}))
    out.append(("cnn-max", lambda: random_cnn(1, image=(1, 8, 8), channels=(3, 4)), {"debug_taps": True}))
    out.append(("cnn-avg", lambda: random_cnn(2, image=(2, 8, 8), channels=(3,), pool="avgpool"), {}))
    out.append(("cnn-res", lambda: random_cnn(3, image=(1, 8, 8), channels=(3, 4), residual=True),
                {"debug_taps": True}))
    out.append(("cnn-res-fold", lambda: random_cnn(3, image=(1, 8, 8), channels=(3, 4), residual=True),
                {"max_luts": 20000, "dsp_blocks": 8}))
    out.append(("digits", lambda: _digits_shaped(0), {"fold": "line0=8x8,line1=2x2"}))
    out.append(("digits-taps", lambda: _digits_shaped(0), {"fold": "line0=8x8,line1=2x2", "debug_taps": True}))
    out.append(("digits-up5k", lambda: _digits_shaped(0), {"max_luts": 1000, "dsp_blocks": 8}))
    out.append(("digits-ecp5", lambda: _digits_shaped(0), {"max_luts": 1000, "dsp_blocks": 156}))
    out.append(("fashion-cnn", lambda: fashion_cnn_shaped(0), {"max_luts": 3000}))
    out.append(("fashion-multitap", lambda: fashion_cnn_shaped(0),  # the benchmark's 100 MHz ECP5 fold
                {"fold": "conv0=16x1t9x16,conv1=8x16t9x8,line2=10x8", "fast_paths": True, "dsp_blocks": 0}))
    out = [(name, factory, {**kwargs, "fuse": "off"}) for name, factory, kwargs in out]
    out += [(f"{name}+fuse", factory, {k: v for k, v in kwargs.items() if k != "fuse"}) for name, factory, kwargs in out
            if name in FUSED_CASES]
    return out


#: digest designs the default (``fuse="auto"``) fuses; the others differ from ``fuse="off"`` only by the
#: report's ``fuse``/``fusion`` entries, which tests/test_fuse.py checks
FUSED_CASES = ("mlp-1bit", "mlp3")


def digest_dir(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` (relative name → hex digest)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def compute(names: list[str] | None = None) -> dict[str, dict[str, str]]:
    """Generate every case (or the named ones) into a temporary folder and return their digests."""
    from bitspike.gen import generate

    result: dict[str, dict[str, str]] = {}
    for name, factory, kwargs in cases():
        if names is not None and name not in names:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            generate(factory(), Path(tmp) / "gen", **kwargs)
            result[name] = digest_dir(Path(tmp) / "gen")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--record", action="store_true", help=f"write {DIGESTS}")
    p.add_argument("names", nargs="*", help="only these cases")
    args = p.parse_args(argv)
    unknown = sorted(set(args.names) - {name for name, _, _ in cases()})
    if unknown:
        p.error(f"no such case: {', '.join(unknown)} (cases: {', '.join(name for name, _, _ in cases())})")
    got = compute(args.names or None)
    if args.record:
        # naming cases re-records only those: the other cases keep their recorded digests
        kept = json.loads(DIGESTS.read_text()) if args.names and DIGESTS.exists() else {}
        known = {name for name, _, _ in cases()}
        merged = {n: d for n, d in {**kept, **got}.items() if n in known}
        DIGESTS.parent.mkdir(parents=True, exist_ok=True)
        DIGESTS.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(got)} cases in {DIGESTS} ({len(merged)} in all)")
        return 0
    want = json.loads(DIGESTS.read_text())
    bad = [n for n in got if got[n] != want.get(n)]
    for n in bad:
        print(f"{n}: differs", sorted(set(got[n].items()) ^ set(want.get(n, {}).items())))
    print(f"{len(got) - len(bad)} of {len(got)} cases identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
