"""Dispatch for ``uvq-int8`` and ``uvq``; turns known errors into one-line messages."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from typing import Callable, Sequence

from uvq_int8 import __version__
from uvq_int8.errors import UserError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

# subcommand -> module in this package defining add_arguments(parser) and run(args) -> int
SUBCOMMANDS = {
    "build": "Convert UVQ 1.5 PyTorch checkpoints into TFLite model sets, one per backend.",
    "verify": "Measure size, speed and accuracy of each backend against float32 and PyTorch.",
    "backends": "List installed backends and which of their model files exist.",
    "config": "Print every effective setting and where it came from.",
    "demo": "Build every backend from seeded proxy weights and score a synthetic clip.",
    "batch": "Score many videos into result rows, with worker processes or on a Ray cluster.",
    "patch": "Apply, check or revert the patches that let upstream UVQ ask the backend registry.",
}


def _module(name: str):
    return importlib.import_module(f"uvq_int8.cli.{name}_cmd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uvq-int8",
        description="Build, check and choose quantized TFLite backends for UVQ 1.5.",
        epilog="Run 'uvq-int8 SUBCOMMAND --help' for the options of each subcommand.")
    parser.add_argument("--version", action="version", version=f"uvq-int8 {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for name, help_text in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks and debug logging")
        try:
            module = _module(name)
        except ModuleNotFoundError as exc:
            if exc.name != f"uvq_int8.cli.{name}_cmd":
                raise
            continue  # a subcommand not shipped in this build
        module.add_arguments(p)
    return parser


def run_guarded(func: Callable[[], int], debug: bool, prog: str) -> int:
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format=f"{prog}: %(levelname)s: %(message)s")
    try:
        return func()
    except UserError as exc:
        if debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in DISK_FULL or debug:
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"{prog}: error: no space left on the device{where}; free some space, or write "
              f"elsewhere (--out/--workdir DIR; TMPDIR for temporary files). Files already in "
              f"place were not changed.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = _module(args.command)
    return run_guarded(lambda: module.run(args), getattr(args, "debug", False), "uvq-int8")


def uvq_main(argv: Sequence[str] | None = None) -> int:
    """``uvq``: one video (``score_cmd``), or a list, directory or stdin (``batch_cmd``)."""
    from uvq_int8 import batch
    from uvq_int8.cli import common, score_cmd

    parser = score_cmd.build_parser()
    args = parser.parse_args(argv)

    def run() -> int:
        cfg = common.resolve(args)
        if batch.wants_batch(args.input, args.format, args.jobs):
            from uvq_int8.cli import batch_cmd

            return batch_cmd.run_uvq(args, cfg)
        return score_cmd.run_single(args, cfg)

    return run_guarded(run, args.debug, "uvq")
