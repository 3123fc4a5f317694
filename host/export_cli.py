"""``bitspike export``: turn a training run into a manifest and check it with the golden model.

``bitspike export MODEL.bsm --nir -o MODEL.nir`` writes a manifest of binary time-stepped IF/LIF layers as a
NIR graph instead (:mod:`bitspike.host.export_nir`).
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from bitspike.cli import add_common

    p = subparsers.add_parser(
        "export",
        help="export a training run to a manifest (.bsm)",
        description=(
            "Fold BatchNorm and scales into integer requantization constants, pick power-of-two thresholds, "
            "write the manifest, and evaluate the test set with the fake-quantized model and the integer golden model."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR|MODEL.bsm",
                   help="the training run's folder (holds checkpoint.ckpt); with --nir, the manifest to write as NIR")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="manifest to write (default: RUN_DIR/model.bsm); with --nir the NIR file (default: MODEL.nir)")
    p.add_argument("--nir", action="store_true",
                   help="write the manifest MODEL.bsm as a NIR graph (binary stepped IF/LIF networks; others are "
                        "refused with the reason)")
    p.add_argument("--target", choices=["nir", "snntorch"], default="nir",
                   help="--nir: plain NIR, or what snnTorch's import_from_nir reads correctly (default nir)")
    p.add_argument("--allow-subtract", action="store_true",
                   help="--nir: write a subtract-reset network (NIR's neurons reset to zero), marked for bitspike")
    p.add_argument("--current-bits", type=int, default=None, metavar="K",
                   help="threshold exponent k of the learnable neurons: currents resolve V_th/2**k (default: 8)")
    p.add_argument("--data", metavar="PATH", help="folder of the data set's files (default: the run's setting)")
    p.add_argument("--max-gap", type=float, default=None, metavar="POINTS",
                   help="fail (exit 3) if float and deploy accuracy differ by more than this many points")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bitspike.cli import VerificationFailed
    from bitspike.io import write_json
    from bitspike.errors import BitspikeError
    from bitspike.host.export import DEFAULT_CURRENT_BITS, export_run

    if args.nir:
        return _run_nir(args)
    k = DEFAULT_CURRENT_BITS if args.current_bits is None else args.current_bits
    if not 1 <= k <= 20:
        raise BitspikeError(f"--current-bits must be 1 … 20, got {k}")
    out = Path(args.output) if args.output else Path(args.run_dir) / "model.bsm"
    _, summary = export_run(args.run_dir, out, current_bits=k, data=args.data)
    b = summary["avg_bits"]
    print(
        f"wrote {out}: float accuracy {100 * summary['float_accuracy']:.2f}%, deploy accuracy "
        f"{100 * summary['deploy_accuracy']:.2f}% (golden model, {summary['test_images']} test images), "
        f"bits {b['w']:.2f}/{b['s']:.2f}/{b['t']:.2f}, BB {summary['bit_budget']:.2f}, "
        f"S-ACE {summary['s_ace']}, weight memory {summary['weight_memory_bits']} bits"
    )
    a = summary["audit"]
    print(f"  {a['certain']} of {a['samples']} test images provably agree with the trained model; the other "
          f"{a['uncertain']} lie within rounding distance of a spike-count boundary "
          f"({a['class_disagreements']} of them change class)")
    write_json(args.json, summary)
    if args.max_gap is not None and summary["accuracy_gap_points"] > args.max_gap:
        raise VerificationFailed(
            f"float and deploy accuracy differ by {summary['accuracy_gap_points']:.2f} points (> {args.max_gap})"
        )
    return 0


def _run_nir(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bitspike.host.export_nir import export_nir
    from bitspike.io import write_json
    from bitspike.manifest import load

    manifest = load(args.run_dir)
    out = Path(args.output) if args.output else Path(args.run_dir).with_suffix(".nir")
    summary = export_nir(manifest, out, target=args.target, allow_subtract=args.allow_subtract)
    print(f"wrote {out}: {len(summary['nodes']) - 2} NIR nodes ({', '.join(summary['nodes'][1:-1])}), reset "
          f"{summary['reset']}; run it for T = {summary['timesteps']} steps on the integer input (pixels 0 … "
          f"{2**manifest.input.bits - 1}, not scaled)")
    write_json(args.json, summary)
    return 0
