"""``bitspike manifest inspect|validate FILE``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from .cli import add_common

    p = sub.add_parser("manifest", help="inspect or validate a manifest (.bsm)", description="Inspect or validate a manifest file.")
    msub = p.add_subparsers(dest="manifest_command", metavar="ACTION", required=True)
    pi = msub.add_parser("inspect", help="per-layer table, register widths and network totals")
    pi.add_argument("file", help="manifest file (.bsm)")
    pi.add_argument("--ranges", action="store_true", help="also print every register's analysed range")
    add_common(pi)
    pi.set_defaults(func=run_inspect)
    pv = msub.add_parser("validate", help="check a manifest; exit 0 if valid, 1 with the reason if not")
    pv.add_argument("file", help="manifest file (.bsm)")
    add_common(pv)
    pv.set_defaults(func=run_validate)


def format_table(headers: list[str], rows: list[list[object]], align: str | None = None) -> str:
    """A plain text table; ``align`` is a string of 'l'/'r' per column (default: numbers right)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    if align is None:
        align = "".join("r" if cells and all(_is_num(r[i]) for r in cells) else "l" for i in range(len(headers)))

    def fmt(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align)).rstrip()

    lines = [fmt(headers), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells]
    return "\n".join(lines)


def _is_num(s: str) -> bool:
    try:
        float(s.replace(",", ""))
        return True
    except ValueError:
        return s in ("-", "")


def summary(manifest) -> dict:
    from .analysis import analyse, network_stats

    stats = network_stats(manifest)
    ranges = analyse(manifest)
    out = stats.to_json()
    out.update(
        name=manifest.name,
        version=manifest.version,
        digest=manifest.digest(),
        input=manifest.input.to_json(),
        num_classes=manifest.num_classes,
        ranges={name: r.to_json() for name, r in ranges.items()},
    )
    return out


def run_inspect(args) -> int:
    from .analysis import analyse, network_stats
    from .io import write_json
    from .manifest import load

    m = load(args.file)
    stats = network_stats(m)
    ranges = analyse(m)
    rows = []
    for s in stats.layers:
        r = ranges[s.name]
        syn = s.w_bits is not None
        rows.append([
            s.name + (" *" if s.fixed else ""), s.op, "×".join(map(str, s.in_shape)) + "→" + "×".join(map(str, s.out_shape)),
            f"{s.w_bits}/{s.s_bits}/{s.timesteps}" if syn else "-",
            f"{s.params:,}" if syn else "-", f"{s.weight_memory_bits:,}" if syn else "-",
            f"{s.macs:,}" if syn else "-", f"{s.s_ace:,}" if syn else "-",
            f"{r.x.width}/{r.v.width if r.v else '-'}/{r.acc.width if r.acc else '-'}/{r.out.width}",
        ])
    print(f"manifest {m.name!r} (format v{m.version}, sha256 {m.digest()[:16]}…)")
    print(f"input {list(m.input.shape)} × {m.input.bits}-bit, scale {m.input.scale:.6g}; {m.num_classes} classes")
    print(format_table(["layer", "op", "shape", "B_w/B_s/T", "params", "weight bits", "MACs", "S-ACE", "x/v/acc/out bits"], rows))
    print("* first layer: fixed 8-bit input, left out of the averages and S-ACE (as the paper)")
    print(
        f"average bits W {stats.avg_w_bits:.3f}  S {stats.avg_s_bits:.3f}  T {stats.avg_timesteps:.3f}   "
        f"bit budget {stats.bit_budget:.3f}"
    )
    print(f"S-ACE {stats.s_ace:,} (all layers {stats.s_ace_all:,})   weight memory {stats.weight_memory_bits:,} bits   "
          f"params {stats.params:,}   MACs {stats.macs:,}")
    if args.ranges:
        print()
        rrows = []
        for name, r in ranges.items():
            for reg in ("x", "x_b", "v", "s", "count", "acc", "product", "out"):
                val = getattr(r, reg)
                if val is not None:
                    rrows.append([name, reg, val.lo, val.hi, ("s" if val.signed else "u") + str(val.width)])
        print(format_table(["layer", "register", "min", "max", "width"], rrows))
    write_json(args.json, summary(m))
    return 0


def run_validate(args) -> int:
    from .io import write_json
    from .host.golden import GoldenModel
    from .manifest import load

    m = load(args.file)
    GoldenModel(m)  # the analysis runs too: an overflowing requantizer is an error here
    print(f"{args.file}: valid bitspike manifest v{m.version}, {len(m.layers)} layers, sha256 {m.digest()}")
    write_json(args.json, {"file": str(args.file), "valid": True, "digest": m.digest(), "layers": len(m.layers)})
    return 0
