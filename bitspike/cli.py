"""The ``bitspike`` command line.

Each subcommand ``bitspike NAME`` lives in its own module ``NAME_cli.py``, next
to the library code it drives (``bitspike/manifest_cli.py``, ``gen/gen_cli.py``,
``host/train_cli.py``, …) and listed in :data:`COMMAND_MODULES`. A command
module only parses options, calls the library and prints; library code never
imports it (``tests/test_imports.py`` checks both). It exposes
``register(subparsers)`` (adding its parser, light imports only) and sets
``func`` to a function ``run(args) -> int``. Heavy imports (torch, amaranth)
happen inside ``run`` so that ``bitspike --help`` is instant.

Exit codes: 0 success; 1 a user error (bad file, bad option, missing data);
2 bad command-line usage; 3 a verification failure (hardware and golden model
disagree, accuracy below a requested bound); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import BitspikeError
from .io import write_json  # noqa: F401  (its home is bitspike.io; kept here for command modules that import it from the CLI)

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_VERIFY_FAILED = 3
EXIT_INTERRUPTED = 130

#: subcommand modules, in the order ``--help`` lists them
COMMAND_MODULES = [
    "bitspike.manifest_cli",
    "bitspike.host.train_cli",
    "bitspike.host.export_cli",
    "bitspike.host.import_cli",
    "bitspike.gen.gen_cli",
    "bitspike.sim.sim_cli",
    "bitspike.gen.build_cli",
    "bitspike.gen.boards_cli",
    "bitspike.host.infer_cli",
    "bitspike.demo_cli",
]


class VerificationFailed(BitspikeError):
    """Raised by a command when hardware and software disagree; exit code 3."""


def add_common(parser: argparse.ArgumentParser, json_summary: bool = True) -> None:
    """Options every subcommand shares."""
    if json_summary:
        parser.add_argument("--json", metavar="PATH", help="also write the summary as JSON to PATH")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors and the final summary")
    parser.add_argument("-v", "--verbose", action="store_true", help="more detail; tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitspike",
        description="Adaptive-bit multi-bit spiking neural networks: train, export, generate RTL, co-simulate, build, infer.",
    )
    parser.add_argument("--version", action="version", version=f"bitspike {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that stage is not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    verbose = getattr(args, "verbose", False)
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(
        level=logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO),
        format="%(message)s",
    )
    try:
        code = args.func(args)
        return EXIT_OK if code is None else int(code)
    except KeyboardInterrupt:
        print("bitspike: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except VerificationFailed as exc:
        if verbose:
            raise
        print(f"bitspike {args.command}: verification failed: {exc}", file=sys.stderr)
        return EXIT_VERIFY_FAILED
    except BitspikeError as exc:
        if verbose:
            raise
        print(f"bitspike {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
