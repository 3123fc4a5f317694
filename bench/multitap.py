"""Window-parallel ("multi-tap") conv engines on the Fashion CNN shape: bench/results/multitap.json and .md.

The design is :func:`bitspike.testing.fashion_cnn_shaped` (seed 0: conv 1→16 3×3 on 28×28 → maxpool → conv
16→32 → maxpool → fc 1568→10), as in bench/vecpool.py, whose best interval was 7,056 cycles (conv0: 784
pixels × 9 taps, one frame word a clock). Here the convs read several kernel taps per clock
(:mod:`bitspike.rtl_templates.multitap`, ``--fold NAME=PESxLANEStTAPS``):

- ``window``: both convs read their whole 3×3 window a clock (``conv0=16x1t9x16,conv1=32x16t9x16``): conv0
  one output pixel a clock for its 16 channels (784 clocks a frame), conv1 392;
- ``row``: conv1 reads a window row a clock (``conv1=32x16t3x16``: 588 clocks);
- ``lean``: the fewest products found at the input's floor (``conv0=16x1t9x16,conv1=8x16t9x8``);
- ``auto``: ``--fold auto --board ulx3s-85f --multi-tap`` (the device filler, allowed to pick taps).

Every fold is planned for the LFE5U-85F's 156 DSP blocks (``dsp_blocks``; the products past them are built in
logic). Per fold (as bench/vecpool.py, whose helpers it uses): the planner's latency and interval, Verilator
co-simulation on the first ``--samples`` Fashion-MNIST test images (latency one image at a time from reset,
interval back to back, bit-exact at every debug tap alone and under 30% random stalls); ``--synth``: Yosys
``synth_ecp5`` (abc9 asserts on these designs: the ``abc -lut 4:7`` fallback); ``--pnr``: nextpnr-ecp5 of the
accelerator alone.

Run under ``nice``::

    python bench/multitap.py                      # the folds, co-simulated
    python bench/multitap.py --folds window --synth --pnr
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vecpool  # noqa: E402

RESULTS = vecpool.RESULTS
FOLDS = {
    "window": "conv0=16x1t9x16,conv1=32x16t9x16,line2=10x16",
    "row": "conv0=16x1t9x16,conv1=32x16t3x16,line2=10x16",
    "lean": "conv0=16x1t9x16,conv1=8x16t9x8,line2=10x16",
    "auto": "auto",
}

NOTES = [
    "Before (bench/results/vecpool.md): the best interval was 7,056 cycles, conv0's 784 pixels × 9 taps at one "
    "frame word a clock. A multi-tap conv reads kh·kw (or kw) taps a clock out of kh·kw interleaved banks (pixel "
    "(ih, iw) in bank (ih mod kh, iw mod kw) of the padded map), so conv0's 16 PEs of 9 lanes compute one output "
    "pixel a clock: 784 clocks a frame, the input's own floor (784 pixels, one a clock).",
    "A group of one word can finish every clock; the drain's two-slot holding queue alone would allow only two "
    "groups per pe_latency + 3 clocks, so the multi-tap engine puts a FIFO of pe_latency + 2 groups in front of "
    "the drain (2 clocks of latency).",
    "Memory: each bank is double-buffered by frame (O(frame), about twice the padded map in all), which the "
    "planner's block-RAM estimate counts bank by bank. On `lean` Yosys put conv0's nine 200 x 8 banks in nine "
    "DP16KD where the estimate expected LUT RAM (28 BRAM against 19 estimated): the estimate is low there.",
    "A multi-tap weight word is wide (pes x taps x lanes weights) and its memory shallow (conv0: one word), so it "
    "is marked for block RAM only from 32 words deep; shallower ones are left to Yosys (constants, or a ROM in "
    "logic). Every fold is planned for the part's 156 DSP blocks.",
    "The device filler (`auto`, --multi-tap) stops at 1,176 cycles: its LUT/FF estimate of the folds that reach "
    "784 (lean: 26,226 / 42,568) is above the ULX3S-85F budget it fills (20,550 / 42,000, half the part); the "
    "lean fold's real synth_ecp5 counts (28,275 LUT4, 30,769 FF of 84k / 84k) fit the part.",
]


def main(argv=None) -> int:
    from bitspike.testing import fashion_cnn_shaped

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folds", nargs="*", default=list(FOLDS), choices=list(FOLDS))
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--synth", action="store_true", help="also synthesize the accelerator with Yosys (long)")
    p.add_argument("--pnr", action="store_true", help="with --synth: also nextpnr-ecp5 of the accelerator (long)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--clock", type=float, default=100.0)
    args = p.parse_args(argv)
    vecpool.WORK = vecpool.ROOT.parent / "build" / "bench_multitap"
    plain_options = vecpool.generate_options
    dsp = vecpool.generate_options("auto")["dsp_blocks"]  # the LFE5U-85F's 156 DSP blocks

    def options(fold: str) -> dict:
        # the device filler may choose taps (generate's multi_tap, --multi-tap); a manual fold names them and
        # gets the part's DSP blocks (the products past them are built in logic: the same sums and cycles)
        return {**plain_options(fold), **({"multi_tap": True} if fold == "auto" else {"dsp_blocks": dsp})}

    vecpool.generate_options = options
    manifest = fashion_cnn_shaped(0)
    old = RESULTS / "multitap.json"
    prev = {r["name"]: r for r in json.loads(old.read_text())["rows"]} if old.exists() else {}
    rows = []
    for name in args.folds:
        print(f"{name}: co-simulation", flush=True)
        rows.append({"name": name, **vecpool.cosim_row(manifest, name, FOLDS[name], args.samples)})
    for row in rows if args.synth else []:
        print(f"{row['name']}: Yosys", flush=True)
        row["synth"] = vecpool.synth_row(manifest, row["name"], FOLDS[row["name"]])
        if args.pnr and row["synth"].get("command", "").endswith("for abc9"):
            print(f"{row['name']}: nextpnr", flush=True)
            row["pnr"] = vecpool.pnr_row(row["name"], args.seed, args.clock)
    for row in rows:  # a run without --synth keeps an earlier run's synthesis of the same fold
        before = prev.get(row["name"], {})
        if before.get("fold") == row["fold"]:
            row.update({k: before[k] for k in ("synth", "pnr") if k in before and k not in row})
    keep = [r for n, r in prev.items() if n not in args.folds and n in FOLDS]
    doc = {"command": "python bench/multitap.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
           "date": time.strftime("%Y-%m-%d"), "samples": args.samples, "manifest_digest": manifest.digest(),
           "rows": sorted(keep + rows, key=lambda r: list(FOLDS).index(r["name"])), "notes": NOTES}
    RESULTS.mkdir(exist_ok=True)
    old.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    md = vecpool.markdown(doc).replace("# Vector streams through the pools: the Fashion CNN shape",
                                       "# Multi-tap conv engines: the Fashion CNN shape")
    (RESULTS / "multitap.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
