"""``bitspike infer MODEL --board sim|PORT --dataset NAME --samples N``: classify on a board, check against the golden model.

The images go through the real serial protocol: to a board on a serial port,
or to the simulated board (``--board sim``: the Verilated bridge and
accelerator behind a pseudo-terminal). Every answer (logits and class) is
compared with the integer golden model; a disagreement exits with code 3.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from bitspike.cli import add_common

    p = sub.add_parser(
        "infer", help="classify images on a board (or the simulated board) and compare with the golden model",
        description="Send images to a board over the serial protocol, read logits and classes, and compare every "
                    "answer with the integer golden model. Exit 3 when they disagree.",
    )
    p.add_argument("model", help="manifest file (.bsm) the board was built from")
    p.add_argument("--board", required=True, metavar="sim|PORT",
                   help="'sim' for the simulated board, else a serial port such as /dev/ttyUSB0")
    p.add_argument("--dataset", required=True, help="data set name (digits, fashion-mnist, cifar10)")
    p.add_argument("--data", "--data-path", dest="data_path", metavar="DIR", default=None, help="folder of the data set files, where the data set needs one")
    p.add_argument("--split", default="test", choices=["train", "test"], help="which split (default test)")
    p.add_argument("--samples", type=int, default=100, help="number of images, from the start of the split (default 100)")
    p.add_argument("--baud", type=int, default=None,
                   help="serial rate of the bitstream (default: --link BOARD's build default, 3000000 for the "
                        "iCEBreaker, else 1000000, as `bitspike build` chooses)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each reply (default 2)")
    p.add_argument("--retries", type=int, default=2, help="resends after a recoverable line fault (default 2)")
    p.add_argument("--work-dir", default=None, help="--board sim: folder for the generated design (default build/infer-sim/DIGEST)")
    p.add_argument("--fold", default="auto", help="--board sim: folding passed to the generator (default auto)")
    p.add_argument("--link", default=None, metavar="BOARD",
                   help="--board sim: simulate the bridge as BOARD's bitstream has it: its clock and --baud give the "
                        "bit period (clocks per bit), and its part the folding budget (`bitspike boards`); with a "
                        "serial port: the board whose default rate to use when --baud is not given")
    add_common(p)
    p.set_defaults(func=run)


def _open_board(args, manifest):
    from pathlib import Path

    if args.board == "sim":
        from bitspike.sim.board import SimBoard

        work = Path(args.work_dir) if args.work_dir else Path("build") / "infer-sim" / manifest.digest()[:16]
        extra = {}
        if args.link is not None:
            link = board_link(args.link, args.baud)
            log.info("simulating %s's link: %d Hz clock, %d baud, %s clocks per bit", args.link, link["clock_hz"],
                     link["baud"], link["clocks_per_bit"])
            extra = {"clocks_per_bit": link["clocks_per_bit"], "clock_hz": link["clock_hz"], "baud": link["baud"],
                     "dsp_blocks": link["dsp_blocks"]}
            if args.fold == "auto":  # the bitstream's fold: the part's LUTs, flip-flops, DSPs and block RAMs
                extra.update(max_luts=link["max_luts"], device=link["device"])
        log.info("building the simulated board in %s", work)
        return SimBoard.from_manifest(manifest, work, fold=args.fold, timeout=args.timeout, retries=args.retries, **extra)
    from bitspike.gen.boards import DEFAULT_BAUD
    from bitspike.host.board import SerialBoard

    baud = args.baud if args.baud is not None else (board_link(args.link, None)["baud"] if args.link else DEFAULT_BAUD)
    return SerialBoard(args.board, baudrate=baud, timeout=args.timeout, retries=args.retries)


def board_link(name: str, baud: int | None) -> dict:
    """The link settings of ``name``'s bitstream at ``baud``: clock, clocks per bit and what its fold fills.

    ``device`` is the part's :func:`~bitspike.gen.boards.device_budget` and ``dsp_blocks`` its DSP count,
    the two things ``bitspike build --board name`` folds and shares products with, so a simulated board
    runs the bitstream's fold.

    ``baud=None`` takes the rate ``bitspike build`` gives the board by default.

    Raises
    ------
    BitspikeError
        An unknown board, one without a serial path, or a baud rate its clock or USB-serial
        converter cannot make.
    """
    from bitspike.errors import BitspikeError
    from bitspike.gen.boards import check_baud, default_baud, device_budget, get_board

    spec = get_board(name)
    if spec.serial_problem:
        raise BitspikeError(f"--link {name}: {spec.serial_problem}")
    if baud is None:
        baud = default_baud(spec)
    try:
        cpb = check_baud(spec, baud)
    except BitspikeError as exc:
        raise BitspikeError(f"--link {name}: {exc}") from None
    device = device_budget(spec)
    return {"board": spec.name, "clock_hz": spec.clock_hz, "baud": baud, "clocks_per_bit": cpb,
            "max_luts": None if device is None else device.lut, "device": device,
            "dsp_blocks": None if spec.capacity is None else spec.capacity.dsp}


def infer_dataset(board, manifest, images, labels) -> dict:
    """Run ``images`` (``[N, *input.shape]`` integers) on ``board`` and compare with the golden model.

    Returns the summary (see ``bitspike infer --json``); does not raise on disagreement.
    """
    import time

    import numpy as np

    from bitspike.gen.interface import input_order
    from bitspike.host.golden import GoldenModel

    n = len(images)
    golden = GoldenModel(manifest).run(images)
    g_logits = golden.logits.numpy()
    g_classes = golden.classes.numpy()
    order = input_order(manifest)
    flat = np.asarray(images, dtype=np.int64).reshape(n, -1)[:, order]
    info = board.connect(manifest.digest())
    latencies, classes, agree, agree_class, mismatches = [], [], 0, 0, []
    start = time.perf_counter()
    # batched and overlapped: the board's images per frame, its window of frames in flight
    answers = board.infer_many([row.tolist() for row in flat])
    elapsed = time.perf_counter() - start
    for i, r in enumerate(answers):
        latencies.append(r.latency_s)
        classes.append(r.cls)
        same_logits = list(r.logits) == [int(v) for v in g_logits[i]]
        same_class = r.cls == int(g_classes[i])
        agree += same_logits and same_class
        agree_class += same_class
        if not (same_logits and same_class) and len(mismatches) < 10:
            mismatches.append({"index": i, "board_class": r.cls, "golden_class": int(g_classes[i]),
                               "board_logits": list(r.logits), "golden_logits": [int(v) for v in g_logits[i]]})
    labels = np.asarray(labels)[:n]
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    stats = getattr(board, "stats", None)
    return {
        "samples": n,
        "agree": int(agree),
        "agree_class": int(agree_class),
        "accuracy": float(np.mean(np.asarray(classes) == labels)) if n else 0.0,
        "golden_accuracy": float(np.mean(g_classes == labels)) if n else 0.0,
        "latency_s": float(lat.mean()),
        "latency_max_s": float(lat.max()),
        "images_per_second": n / elapsed if elapsed > 0 else 0.0,
        "seconds": elapsed,
        "board": {"digest": info.digest, "protocol_version": info.version, "input_size": info.input_size,
                  "input_bits": info.input_bits, "num_classes": info.num_classes, "clock_hz": info.clock_hz,
                  "baud": info.baud, "cycles_per_inference": info.cycles_per_inference,
                  "initiation_interval": info.initiation_interval, "images_per_frame": info.images_per_frame,
                  "window": info.window},
        "link": None if stats is None else {"frames_sent": stats.frames_sent, "retries": stats.retries,
                                            "line_faults": dict(stats.line_faults), "board_errors": dict(stats.board_errors)},
        "mismatches": mismatches,
    }


def run(args) -> int:
    from bitspike.cli import VerificationFailed, write_json
    from bitspike.errors import BitspikeError
    from bitspike.host.data import images_for_manifest, load_dataset
    from bitspike.manifest import load

    if args.samples < 1:
        raise BitspikeError(f"--samples must be at least 1, not {args.samples}")
    manifest = load(args.model)
    ds = load_dataset(args.dataset, args.split, args.data_path)
    n = min(args.samples, len(ds))
    images = images_for_manifest(ds.images[:n], manifest)
    board = _open_board(args, manifest)
    try:
        summary = infer_dataset(board, manifest, images, ds.labels[:n])
    finally:
        board.close()
    summary.update(model=str(args.model), dataset=args.dataset, split=args.split, port=args.board)
    if args.board == "sim":
        from bitspike.rtl_templates.uart import format_bit_period

        cfg = board.bridge_config
        cycles = board.link_cycles()
        summary["sim_link"] = {"board": args.link, "clocks_per_bit": format_bit_period(cfg.clocks_per_bit), "baud": cfg.baud,
                               "clock_periods": board.periods, "link_cycles": cycles}
        if cfg.clock_hz and cycles:
            # simulated time on the board's link clock: what the line carried, HELLO and the last answer included
            summary["sim_link"]["images_per_second"] = round(n * cfg.clock_hz / cycles, 1)
            summary["sim_link"]["link_bound_images_per_second"] = round(cfg.link_images_per_second(), 1)
    write_json(args.json, summary)
    print(
        f"{args.board}: {summary['samples']} images, agreement with the golden model {summary['agree']}/{summary['samples']}, "
        f"accuracy {100 * summary['accuracy']:.2f}% (golden {100 * summary['golden_accuracy']:.2f}%), "
        f"latency {summary['latency_s'] * 1e3:.2f} ms, {summary['images_per_second']:.1f} images/s"
        + (f" (simulated board time: {summary['sim_link']['images_per_second']:,.0f} images/s on the link, "
           f"{summary['sim_link']['link_bound_images_per_second']:,.0f} the line's bound)"
           if summary.get("sim_link", {}).get("images_per_second") else "")
    )
    if summary["agree"] != summary["samples"]:
        first = summary["mismatches"][0] if summary["mismatches"] else {}
        raise VerificationFailed(
            f"board and golden model disagree on {summary['samples'] - summary['agree']} of {summary['samples']} images "
            f"(first: image {first.get('index')}, board class {first.get('board_class')} logits {first.get('board_logits')}, "
            f"golden class {first.get('golden_class')} logits {first.get('golden_logits')})"
        )
    return 0
