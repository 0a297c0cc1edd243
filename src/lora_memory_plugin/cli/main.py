"""``lora-memory``: init, add, search, ask, consolidate, calibrate, modules, status, serve,
keys, mcp, models pull.

Exit codes (for cron): 0 done (or nothing to do), 1 failed, 2 bad usage, 3 a lock is held.
``--json`` prints one machine-readable object on stdout; human output and progress go to stderr
and a TTY.

Each subcommand lives in ``commands/<name>.py`` (its options next to its code); what they share
is in ``_common.py``. This module only builds the parser and runs the chosen command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .._version import __version__
from ..errors import LockHeldError, LoraMemoryError
from ._common import EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_USAGE, fail, shared_parents
from .commands import REGISTER
from .commands.bench import parse_set

__all__ = [
    "EXIT_FAILED",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "parse_set",
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lora-memory",
        description="Parametric memory for LLM agents: a Chroma buffer plus LoRA modules.",
        epilog="Exit codes: 0 done, 1 failed, 2 bad usage, 3 another process holds the lock.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = shared_parents()
    for register in REGISTER:
        register(sub, parents)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        return int(args.func(args))
    except LockHeldError as e:
        fail(args, e, EXIT_LOCKED)
        return EXIT_LOCKED
    except LoraMemoryError as e:
        fail(args, e, EXIT_FAILED)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
