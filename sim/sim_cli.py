"""``bitspike sim``: samples through the cycle-accurate RTL, bit-exact against the golden model.

The samples are a data set, the user's own ``.npy``/``.npz`` (``--inputs``) or
random legal inputs (``--random N --seed S``). Prints the bit-exact count,
hardware and golden accuracy (when there are labels), cycles per inference,
simulated throughput at a clock, and the wall-clock rate. On any mismatch it
names the first diverging layer, kind of value, neuron, timestep and cycle,
lists every mismatch in ``--json``, optionally writes a VCD window around the
first, and exits with code 3. ``--shard K/N`` runs one part of the samples and
``--merge`` combines the parts' JSON files.
"""

from __future__ import annotations

import argparse
import logging

from bitspike.cli import add_common

log = logging.getLogger("bitspike.sim")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sim",
        help="co-simulate samples through the generated RTL, bit-exact against the golden model",
        description="Stream samples (a data set, an .npy/.npz file of your own, or random inputs) through the "
                    "generated accelerator (Verilator or Icarus), compare every sample with the integer golden "
                    "model and, on a mismatch, name the first diverging layer, neuron, timestep and cycle. "
                    "Large sets split across machines with --shard K/N; --merge combines the parts.",
    )
    p.add_argument("model", nargs="?", help="the manifest (.bsm) of the network (not with --merge)")
    p.add_argument("--rtl", metavar="DIR", help="a folder written by 'bitspike gen' (default: generate one, with "
                                                "debug taps, into the cache)")
    src = p.add_argument_group("samples (one of)")
    src.add_argument("--dataset", default=None, help="data set name (digits, fashion-mnist, cifar10; default digits)")
    src.add_argument("--inputs", metavar="FILE", help="an .npy [N, *input shape] of integers, or an .npz with "
                                                     "'inputs' and optional 'labels' [N] (accuracy)")
    src.add_argument("--random", type=int, metavar="N", help="N random inputs, uniform over the manifest's input "
                                                            "integers (seeded by --seed)")
    p.add_argument("--split", default="test", choices=("train", "test"), help="data set split (default test)")
    p.add_argument("--data", "--data-path", dest="data_path", metavar="DIR", help="folder of the data set's files, where it needs one")
    p.add_argument("--samples", type=int, metavar="N", help="the first N samples (default: all)")
    p.add_argument("--shard", metavar="K/N", help="run only part K of N (contiguous, K = 1 … N) and write a "
                                                  "partial result (--json) for --merge")
    p.add_argument("--merge", nargs="+", metavar="PART", help="combine partial results (JSON files of --shard "
                                                              "runs) into one; no simulation")
    p.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator")
    p.add_argument("--trace", action="store_true",
                   help="record every debug tap and compare every layer, timestep and neuron, not only the logits")
    p.add_argument("--vcd", metavar="FILE", help="write a VCD around the first divergence (or of sample 0's "
                                                 "inference when all agree)")
    p.add_argument("--processes", type=int, metavar="P", help="parallel simulator processes (default: CPUs, at most 2)")
    p.add_argument("--clock-mhz", type=float, default=100.0, help="clock for the simulated images/s (default 100)")
    p.add_argument("--stall-in", type=float, default=0.0, metavar="P", help="probability of a pixel stall per cycle")
    p.add_argument("--stall-out", type=float, default=0.0, metavar="P", help="probability of a result stall per cycle")
    p.add_argument("--seed", type=int, default=1, help="seed of --random and of the stall generator (default 1)")
    p.add_argument("--sequential", action="store_true", help="one image at a time (default: pipelined stream)")
    p.add_argument("--cache-dir", metavar="DIR", help="build cache root (default ~/.cache/bitspike)")
    add_common(p)
    p.set_defaults(func=run)


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` → (K, N) with 1 ≤ K ≤ N; anything else is a :class:`HardwareError`."""
    from bitspike.errors import HardwareError

    try:
        k_s, n_s = str(text).split("/")
        k, n = int(k_s), int(n_s)
    except ValueError:
        raise HardwareError(f"--shard {text!r}: expected K/N, e.g. 2/8 (part K of N, K = 1 … N)") from None
    if not 1 <= k <= n:
        raise HardwareError(f"--shard {text!r}: expected 1 ≤ K ≤ N (part K of N)")
    return k, n


def run(args: argparse.Namespace) -> int:
    from bitspike.cli import VerificationFailed
    from bitspike.errors import HardwareError
    from bitspike.io import write_json

    from .cosim import SIMULATORS
    from .session import merge_parts, simulate

    if args.merge:
        if args.model is not None:
            raise HardwareError(f"--merge combines partial results only; leave out the manifest ({args.model})")
        summary = merge_parts(args.merge)
        print(summary.text())
        write_json(args.json, summary.payload)
        if not summary.ok:
            raise VerificationFailed(summary.failure())
        return 0
    if args.model is None:
        raise HardwareError("a manifest is needed: bitspike sim MODEL.bsm [--inputs FILE | --random N | --dataset NAME]")
    chosen = [o for o, v in (("--dataset", args.dataset), ("--inputs", args.inputs), ("--random", args.random))
              if v is not None]
    if len(chosen) > 1:
        raise HardwareError(f"{' and '.join(chosen)} both name the samples: give one of --dataset, --inputs, --random")
    if args.samples is not None and args.samples <= 0:
        raise HardwareError(f"--samples must be a positive number of samples, not {args.samples}")
    if args.random is not None and args.random <= 0:
        raise HardwareError(f"--random must be a positive number of samples, not {args.random}")
    if args.processes is not None and args.processes <= 0:
        raise HardwareError(f"--processes must be at least 1, not {args.processes}")
    if args.clock_mhz <= 0:
        raise HardwareError(f"--clock-mhz must be positive, not {args.clock_mhz}")
    shard = parse_shard(args.shard) if args.shard is not None else None
    assert args.simulator in SIMULATORS
    summary = simulate(
        args.model, rtl=args.rtl, dataset=args.dataset, split=args.split, data_path=args.data_path,
        inputs=args.inputs, random=args.random, shard=shard,
        samples=args.samples, simulator=args.simulator, trace=args.trace, vcd=args.vcd,
        processes=args.processes, clock_mhz=args.clock_mhz, stall_in=args.stall_in, stall_out=args.stall_out,
        seed=args.seed, sequential=args.sequential, cache_dir=args.cache_dir, progress=None if args.quiet else log.info,
    )
    print(summary.text())
    write_json(args.json, summary.payload)
    if not summary.ok:
        raise VerificationFailed(summary.failure())
    return 0
