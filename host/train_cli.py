"""``bitspike train``: train a multi-bit SNN with adaptive (or uniform) bit allocation."""

from __future__ import annotations

import argparse
import os


def register(subparsers) -> None:
    from bitspike.cli import add_common

    p = subparsers.add_parser(
        "train",
        help="train a network with adaptive bit allocation",
        description=(
            "Train a multi-bit spiking network whose per-layer weight bits, spike bits and timesteps are learned "
            "towards a target average (--target W/S/T), or fixed for every layer (--uniform W/S/T). "
            "Writes DIR/checkpoint.ckpt every epoch, DIR/metrics.json and plots. Under torchrun, trains with DDP."
        ),
    )
    p.add_argument("--dataset", default="digits", help="digits, fashion-mnist or cifar10 (default: digits)")
    p.add_argument("--data", metavar="PATH", help="folder holding the data set's files (fashion-mnist, cifar10)")
    p.add_argument("--arch", default="mlp", help="mlp, cnn, cnn-fc, vgg-small, vgg-deep or resnet20 (default: mlp)")
    p.add_argument("--target", default="2/2/1", metavar="W/S/T",
                   help="target average bits, e.g. 2/2/1 or 2/2/1.5 (default: 2/2/1)")
    p.add_argument("--uniform", metavar="W/S/T", help="freeze every learnable layer at these bits (the baseline)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: 40 for digits, 6 otherwise)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: 64 for digits, 128 otherwise)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate of weights, steps and thresholds, cosine schedule (default: 0.1 for sgd, 0.002 for adam)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), default=None,
                   help="optimizer of weights, steps and thresholds (default: sgd for digits, adam otherwise); bit widths always use Adam")
    p.add_argument("--freeze-epochs", type=int, default=None,
                   help="final epochs with frozen bits (default: half the epochs, at least 1)")
    p.add_argument("--renewal", choices=("all", "spikes", "none"), default="all",
                   help="step-size renewal when a bit width changes (default: all)")
    p.add_argument("--max-budget", type=float, default=None, metavar="BB",
                   help="largest bit budget B̄_w·B̄_s·T̄ the frozen bits may have (default: the target's W·S·T)")
    p.add_argument("--cost", default="bb", metavar="UNIT",
                   help="what the bits are budgeted in: bb (the bit budget B̄_w·B̄_s·T̄, default), sace "
                        "(Σ MACs·B_w·B_s·T), memory (weight bits), luts (the generator's LUT estimate at --cost-fold) "
                        "or cycles (the interval at --cost-fold; it does not depend on the bits)")
    p.add_argument("--budget", default=None, metavar="X",
                   help="the budget in the --cost unit (bb: the same as --max-budget; required for the others)")
    p.add_argument("--cost-fold", default=None, metavar="SPEC",
                   help="per-layer folds the hardware cost is taken at, as bitspike gen --fold (conv2=4x4,fc1=2x1; "
                        "1x1 where not named)")
    p.add_argument("--project-every", type=int, default=None, metavar="STEPS",
                   help="project the bits into the target window every STEPS optimizer steps while they learn "
                        "(projected gradient; default: 50; 0 projects only when the bits freeze)")
    p.add_argument("--first-layer", choices=("fixed", "learn"), default="fixed",
                   help="fixed: the first layer keeps 8-bit weights and T = 1 (the paper); learn: its weight bits and "
                        "T are allocated too, its input stays 8-bit pixels (default: fixed)")
    p.add_argument("--bit-lr", type=float, default=None, help="Adam learning rate of the bit widths (default: 0.003)")
    p.add_argument("--t-lr", type=float, default=None, help="Adam learning rate of the timesteps (default: 0.003)")
    p.add_argument("--vth-grad", choices=("batch", "sample"), default="batch",
                   help="LSQ gradient scale of the thresholds: batch = 1/sqrt(batch·N·q) as the authors' code, "
                        "sample = 1/sqrt(N·q) (default: batch)")
    p.add_argument("--history", choices=("detach", "keep"), default="detach",
                   help="membrane carried between timesteps: left out of the backward pass (detach, the authors') "
                        "or kept in it (default: detach)")
    p.add_argument("--hidden", default="128", help="hidden sizes of mlp and cnn-fc, comma-separated (default: 128)")
    p.add_argument("--width", type=int, default=None, help="base channel count of the CNNs")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, metavar="DIR", help="run folder (default: runs/DATASET-ARCH)")
    p.add_argument("--resume", action="store_true", help="continue the run in DIR from its last checkpoint")
    add_common(p)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """Build a :class:`~bitspike.host.train.TrainConfig` from parsed options."""
    from bitspike.errors import BitspikeError
    from bitspike.host.train import TrainConfig, parse_bits

    target = parse_bits(args.target, "--target", integers=False)
    uniform = parse_bits(args.uniform, "--uniform") if args.uniform else None
    try:
        hidden = tuple(int(v) for v in str(args.hidden).split(",") if v.strip())
    except ValueError:
        raise BitspikeError(f"--hidden must be comma-separated integers, got {args.hidden!r}") from None
    small = args.dataset == "digits"
    optimizer = args.optimizer or ("sgd" if small else "adam")
    lr = args.lr if args.lr is not None else (0.1 if optimizer == "sgd" else 0.002)
    return TrainConfig(
        dataset=args.dataset,
        arch=args.arch,
        target=target,
        uniform=uniform,
        epochs=args.epochs if args.epochs is not None else (40 if small else 6),
        batch_size=args.batch_size if args.batch_size is not None else (64 if small else 128),
        lr=lr,
        optimizer=optimizer,
        freeze_epochs=args.freeze_epochs,
        renewal=args.renewal,
        max_budget=args.max_budget,
        cost=args.cost,
        budget=args.budget,
        cost_fold=args.cost_fold,
        **({} if args.project_every is None else {"project_every": args.project_every}),
        device=args.device,
        seed=args.seed,
        out=args.out or f"runs/{args.dataset}-{args.arch}",
        data=args.data,
        hidden=hidden,
        width=args.width,
        first_layer=args.first_layer,
        vth_grad=args.vth_grad,
        detach_history=args.history == "detach",
        **({} if args.bit_lr is None else {"bit_lr": args.bit_lr}),
        **({} if args.t_lr is None else {"t_lr": args.t_lr}),
        threads=args.threads,
        progress=not args.quiet,
        resume=args.resume,
    )


def run(args: argparse.Namespace) -> int:
    from bitspike.cli import write_json
    from bitspike.host.train import train

    config = config_from_args(args)
    result = train(config)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    bits = result.avg_bits
    print(
        f"trained {config.arch} on {config.dataset}: test accuracy {100 * result.test_accuracy:.2f}% "
        f"bits {bits.get('w', 0):.2f}/{bits.get('s', 0):.2f}/{bits.get('t', 0):.2f} "
        f"in {result.epochs} epochs, {result.wall_s:.1f} s; run folder {result.run_dir}"
    )
    write_json(args.json, {
        "run_dir": str(result.run_dir),
        "test_accuracy": result.test_accuracy,
        "avg_bits": bits,
        "epochs": result.epochs,
        "wall_s": result.wall_s,
        "layers": result.history[-1]["layers"] if result.history else [],
    })
    return 0
